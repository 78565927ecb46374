//! Drives an operation through its steps, persisting after each one.

use super::{next_step, percent, Outcome, StepError};
use crate::{catalog, failpoint, Orchestrator};
use fog_model::{OperationRecord, OperationStatus};
use fog_store::typed::put;
use fog_store::{Precondition, StoreError, Write};
use std::time::Duration;
use time::OffsetDateTime;

impl Orchestrator {
    /// Starts a runner for `op_id` in the background.
    /// At most one runner per operation in this process; the CAS on the operation record
    /// keeps runners of other processes (or a racing one) from driving it twice.
    pub(crate) fn spawn(&self, op_id: String) {
        match self.runners.lock() {
            Ok(mut r) => {
                if !r.insert(op_id.clone()) {
                    return;
                }
            }
            Err(_) => return,
        }
        let o = self.clone();
        tokio::spawn(async move {
            if let Err(e) = o.run(&op_id).await {
                tracing::error!(operation = %op_id, error = %e, "operation runner stopped");
            }
            if let Ok(mut r) = o.runners.lock() {
                r.remove(&op_id);
            }
        });
    }

    /// Asks the step hook (tests only) whether this runner "dies" here.
    fn hook_says_crash(&self, op: &OperationRecord, before: bool) -> bool {
        let Some(hook) = &self.hook else {
            return false;
        };
        let action = if before {
            hook.before(op)
        } else {
            hook.after(op)
        };
        if action == failpoint::HookAction::Crash {
            tracing::warn!(operation = %op.id, step = %op.step, before, "step hook: runner stops here");
            return true;
        }
        false
    }

    /// Whether a runner of this process drives `op_id` now.
    pub(crate) fn is_driven(&self, op_id: &str) -> bool {
        self.runners.lock().is_ok_and(|r| r.contains(op_id))
    }

    async fn run(&self, op_id: &str) -> Result<(), StoreError> {
        let store = self.store.as_ref();
        let mut first = true;
        let mut finish_conflicts = 0u32;
        loop {
            let Some(current) = catalog::operation(store, op_id).await? else {
                return Ok(());
            };
            let mut op = current.value;
            if op.status.is_terminal() {
                return Ok(());
            }
            if first {
                op.attempts += 1;
                first = false;
            }
            failpoint::hit(&op.step).await;
            if self.hook_says_crash(&op, true) {
                return Ok(());
            }
            let kind = (self.registry)(&op.action);
            let names = kind.steps(&op.action);
            let result = self.execute_with_retries(&op).await;
            if result.is_ok() && self.hook_says_crash(&op, false) {
                return Ok(());
            }
            match result {
                Ok(Outcome::Continue) => {
                    let Some(next) = next_step(names, &op.step) else {
                        return Ok(());
                    };
                    op.step = next.to_string();
                    op.percent_complete = Some(percent(names, next));
                    let w = put(
                        catalog::operation_key(op_id),
                        &op,
                        Precondition::Revision(current.revision),
                    );
                    if let Err(StoreError::Conflict { .. }) = store.commit(vec![w]).await {
                        tracing::warn!(operation = op_id, "another runner owns this operation");
                        return Ok(());
                    }
                }
                Ok(Outcome::Finished(mut writes)) => {
                    op.status = OperationStatus::Succeeded;
                    op.percent_complete = Some(100);
                    op.end_time = Some(OffsetDateTime::now_utc());
                    writes.push(put(
                        catalog::operation_key(op_id),
                        &op,
                        Precondition::Revision(current.revision),
                    ));
                    match store.commit(writes).await {
                        Ok(_) => {
                            tracing::info!(operation = op_id, "operation succeeded");
                            return Ok(());
                        }
                        // The resource moved under us (it cannot while we own it, unless a
                        // second runner raced): re-read and try the step again.
                        Err(StoreError::Conflict { key }) if finish_conflicts < 50 => {
                            finish_conflicts += 1;
                            tracing::warn!(operation = op_id, key, "finish conflicted; re-reading");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(StoreError::Conflict { key }) => {
                            // Something keeps changing what this operation must publish;
                            // leave it resumable rather than spin: the sweep starts a new
                            // runner for it later.
                            tracing::error!(
                                operation = op_id,
                                key,
                                "finish keeps conflicting; leaving it to the next sweep"
                            );
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(error) => {
                    tracing::warn!(operation = op_id, step = %op.step, error = %error, "operation failed; undoing");
                    let mut error = error.into_arm();
                    let mut writes = match kind.undo(self, &op).await {
                        Ok(w) => w,
                        Err(undo) => {
                            // Said, not swallowed: the operation ends Failed with both
                            // errors; the sweep releases what stays marked busy.
                            tracing::error!(operation = op_id, error = %undo, "undo failed");
                            error.message = format!(
                                "{} (and undoing it failed: {}; the resource is released as it is)",
                                error.message,
                                undo.into_arm().message
                            );
                            vec![]
                        }
                    };
                    op.status = OperationStatus::Failed;
                    op.end_time = Some(OffsetDateTime::now_utc());
                    op.error = Some(error);
                    writes.push(put(
                        catalog::operation_key(op_id),
                        &op,
                        Precondition::Revision(current.revision),
                    ));
                    if let Err(e) = store.commit(writes).await {
                        // Undo writes may conflict; record the failure at least (the sweep
                        // releases the resource).
                        tracing::error!(operation = op_id, error = %e, "undo writes failed");
                        let w: Write = put(catalog::operation_key(op_id), &op, Precondition::Any);
                        store.commit(vec![w]).await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    async fn execute_with_retries(&self, op: &OperationRecord) -> Result<Outcome, StepError> {
        let kind = (self.registry)(&op.action);
        let mut attempt = 1;
        loop {
            match kind.execute(self, op).await {
                Ok(o) => return Ok(o),
                Err(e) if attempt < self.config.step_attempts && e.retryable() => {
                    tracing::info!(step = %op.step, attempt, error = %e, "retrying step");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
