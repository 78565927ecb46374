//! Crash injection at step boundaries, for restart-safety tests.
//!
//! Only with the `failpoints` cargo feature: the environment variable `FOGD_FAILPOINTS`
//! holds `name=action` pairs separated by `,`; `action` is `crash` (abort the process, like
//! SIGKILL: no cleanup runs), `pause` (the step never continues) or `sleep` (the runner
//! waits 2 s, then goes on: time for a test to SIGSTOP the process mid-operation). Names
//! are `{operation step name}` reached after the step before it was persisted, for example
//! `create_instance.start`, and `{step}:after`, reached after the step ran and before its
//! completion is committed. Without the feature, [`hit`] compiles to nothing.
//!
//! In-process tests use a [`StepHook`] instead (see [`crate::Orchestrator::with_step_hook`]).

/// Called at each step boundary with the step about to run.
#[allow(unused_variables)]
pub async fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        let Ok(spec) = std::env::var("FOGD_FAILPOINTS") else {
            return;
        };
        for pair in spec.split(',') {
            match pair.split_once('=') {
                Some((n, "crash")) if n == name => {
                    // The operation waits at its step boundary either way; the pause lets
                    // the API answer the request that started it (a client that never got
                    // its 202 could not poll what it is testing).
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    eprintln!("failpoint {name}: crashing");
                    std::process::abort();
                }
                Some((n, "sleep")) if n == name => {
                    eprintln!("failpoint {name}: sleeping");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    eprintln!("failpoint {name}: woke up");
                }
                Some((n, "pause")) if n == name => {
                    eprintln!("failpoint {name}: pausing");
                    std::future::pending::<()>().await;
                }
                _ => {}
            }
        }
    }
}

/// What a [`StepHook`] tells the runner to do at a step boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// Go on as usual.
    Continue,
    /// Stop this runner here without writing anything, as if the process died: the
    /// operation stays where the store says it is, for another orchestrator to resume.
    Crash,
}

/// An in-process seam for engine tests (a simulated agent and an in-memory store): called
/// by the runner before each step runs and after it ran but before its result is
/// persisted. "Crash after" re-runs the step on resume, which is how tests prove each step
/// idempotent. Production orchestrators have none.
pub trait StepHook: Send + Sync + 'static {
    /// Before the step `op.step` runs.
    fn before(&self, op: &fog_model::OperationRecord) -> HookAction {
        let _ = op;
        HookAction::Continue
    }
    /// After the step `op.step` ran (successfully), before anything is persisted.
    fn after(&self, op: &fog_model::OperationRecord) -> HookAction {
        let _ = op;
        HookAction::Continue
    }
}
