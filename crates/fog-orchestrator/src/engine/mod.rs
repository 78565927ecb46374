//! The operation engine — the framework every long-running operation runs on.
//!
//! An operation is a type implementing [`OperationType`]: its steps (an enum declared with
//! [`step_enum!`], persisted by name as `{family}.{step}`, so a record written by an older
//! fogd still resumes), what each step does ([`OperationType::execute`]), how a failed
//! operation is undone ([`OperationType::undo`]) and, where undoing stops being possible,
//! its point of no return. The operations themselves live in [`crate::ops`]; this module
//! never names one: the orchestrator is handed a [`Registry`] that maps a persisted
//! [`Action`] to its type.
//!
//! The runner ([`runner`]) drives one operation: it executes the recorded step, persists
//! the next one (compare-and-swap on the operation record, so two runners never drive one
//! operation), retries what [`StepError::Retry`] says is transient, and on a failure for
//! good asks the operation to undo and ends it `Failed` — with the undo's own failure
//! stated in the error, never swallowed. The sweep ([`sweep`]) resumes operations no runner
//! drives and releases resources left busy by finished ones.
//!
//! Errors are typed inside ([`StepError`]: retry, fail, or the world changed — a newer
//! generation fenced the server) and become an [`ArmError`] only where an operation ends.

pub mod runner;
pub mod sweep;
mod takeover;

use crate::Orchestrator;
use async_trait::async_trait;
use fog_model::{Action, ArmError, OperationRecord};
use fog_store::{StoreError, Write};

tokio::task_local! {
    /// The ownership the current runner task holds (several nodes on one store only): every
    /// commit made through [`Orchestrator::commit`] in that task compares its key.
    pub(crate) static OWNED: crate::cluster::Ownership;
}

/// The compare of the ownership the current task holds, if it holds one.
pub(crate) fn ownership_check() -> Option<Write> {
    OWNED.try_with(|o| o.check()).ok()
}

impl Orchestrator {
    /// Commits `writes` and, inside a runner that owns its operation on a cluster, the
    /// compare of that ownership in the same transaction: a node that lost it commits
    /// nothing ([`StoreError::Conflict`] naming the ownership key).
    pub(crate) async fn commit(&self, mut writes: Vec<Write>) -> Result<u64, StoreError> {
        writes.extend(ownership_check());
        self.store.commit(writes).await
    }
}

/// Declares a step enum whose variants persist as `"{family}.{name}"`: `ALL` (declaration
/// order), `NAMES`, `name()` and `parse()`.
macro_rules! step_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident in $family:literal {
        $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$vm])* $v),+ }
        #[allow(dead_code)]
        impl $name {
            /// Every step, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$v),+];
            /// Every step's persisted name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$(concat!($family, ".", $s)),+];
            /// The persisted name.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => concat!($family, ".", $s)),+ }
            }
            /// The step a persisted name stands for.
            pub fn parse(s: &str) -> Option<Self> {
                $(if s == concat!($family, ".", $s) { return Some(Self::$v); })+
                None
            }
        }
    };
}
pub(crate) use step_enum;

/// What a step that completed asks for next.
pub(crate) enum Outcome {
    /// Run the next step.
    Continue,
    /// Done: commit these writes with the operation's success.
    Finished(Vec<Write>),
}

/// Why a step did not complete.
#[derive(Debug, Clone)]
pub enum StepError {
    /// Transient (a server unreachable, a tool that failed): the runner tries again.
    Retry(ArmError),
    /// The operation cannot complete as asked: undo (or roll forward) and end it.
    Fail(ArmError),
    /// The world moved on under the operation (a newer generation fenced the server, the
    /// records changed): retrying cannot help.
    WorldChanged(ArmError),
}

impl StepError {
    pub fn retryable(&self) -> bool {
        matches!(self, StepError::Retry(_))
    }

    pub fn into_arm(self) -> ArmError {
        match self {
            StepError::Retry(e) | StepError::Fail(e) | StepError::WorldChanged(e) => e,
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Retry(e) => write!(f, "{e} (transient)"),
            StepError::Fail(e) => write!(f, "{e}"),
            StepError::WorldChanged(e) => write!(f, "{e} (the world changed)"),
        }
    }
}

/// Catalogue errors raised inside steps: server-side (5xx) ones are worth another try, the
/// others (a timeout that already waited, an interrupted operation) are final.
impl From<ArmError> for StepError {
    fn from(e: ArmError) -> Self {
        if e.status >= 500 {
            StepError::Retry(e)
        } else {
            StepError::Fail(e)
        }
    }
}

/// An agent error in `step`: a refused generation means a newer controller acted (no
/// retry); anything else is transient.
pub(crate) fn engine_error(step: &str) -> impl FnOnce(fog_engine::EngineError) -> StepError + '_ {
    move |e| {
        tracing::warn!(step, error = %e, "step failed");
        let arm = ArmError::new(500, "OperationFailed", format!("Step '{step}' failed: {e}"));
        match e {
            fog_engine::EngineError::StaleGeneration { .. } => StepError::WorldChanged(arm),
            _ => StepError::Retry(arm),
        }
    }
}

/// One kind of long-running operation.
#[async_trait]
pub(crate) trait OperationType: Send + Sync + 'static {
    /// The persisted step names of `action`, in the order they run.
    fn steps(&self, action: &Action) -> &'static [&'static str];
    /// The first step from which the operation only rolls forward (`None`: it can be
    /// undone at any step).
    fn point_of_no_return(&self, _action: &Action) -> Option<&'static str> {
        None
    }
    /// Runs the operation's current step (`op.step`). Every step is idempotent: after a
    /// crash it runs again.
    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError>;
    /// After a step failed for good: the writes (checked against what they read) that
    /// leave the resource consistent and no longer busy. An error here ends the operation
    /// `Failed` with both errors stated; the sweep then releases the resource.
    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError>;
}

/// Maps a persisted action to its operation type.
pub(crate) type Registry = fn(&Action) -> &'static dyn OperationType;

/// The step after `step` in `names`, or `None` if it is the last (or unknown).
pub(crate) fn next_step(names: &'static [&'static str], step: &str) -> Option<&'static str> {
    let i = names.iter().position(|s| *s == step)?;
    names.get(i + 1).copied()
}

/// Progress in percent when `step` is about to run.
pub(crate) fn percent(names: &[&str], step: &str) -> u8 {
    let i = names.iter().position(|s| *s == step).unwrap_or(0);
    (i * 100 / names.len().max(1)) as u8
}

/// Whether `op` has reached `step` (it is at `step` or past it).
pub(crate) fn reached(names: &[&str], op: &OperationRecord, step: &str) -> bool {
    let at = names.iter().position(|n| *n == op.step.as_str());
    let p = names.iter().position(|n| *n == step);
    matches!((at, p), (Some(a), Some(p)) if a >= p)
}

/// A step name that is not one of the operation's: a record from an unknown fogd version.
pub(crate) fn unknown_step(step: &str) -> StepError {
    StepError::Fail(ArmError::internal(format!("unknown step '{step}'")))
}
