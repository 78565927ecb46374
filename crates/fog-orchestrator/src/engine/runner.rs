//! Drives an operation through its steps, persisting after each one.

use super::{next_step, percent, Outcome, StepError, OWNED};
use crate::cluster::{self, Ownership};
use crate::{catalog, failpoint, Orchestrator};
use fog_model::{OperationRecord, OperationStatus};
use fog_store::typed::put;
use fog_store::{Precondition, StoreError, Write};
use std::time::Duration;
use time::OffsetDateTime;

impl Orchestrator {
    /// Starts a runner for `op_id` in the background (an operation this process just
    /// accepted). At most one runner per operation in this process; the CAS on the
    /// operation record keeps runners of other processes (or a racing one) from driving it
    /// twice, and on a cluster the runner first claims the operation's ownership key.
    pub(crate) fn spawn(&self, op_id: String) {
        self.spawn_runner(op_id, false);
    }

    /// Starts a runner for an operation that some runner started before (start-up
    /// reconcile, the sweep): on a cluster, this node takes it over — it moves the
    /// generation of the servers it will command past the previous owner's first.
    pub(crate) fn resume(&self, op_id: String) {
        self.spawn_runner(op_id, true);
    }

    fn spawn_runner(&self, op_id: String, takeover: bool) {
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
            let outcome = match o.node.clone() {
                None => o.run(&op_id, None, false).await,
                Some(node) => match node.claim(&cluster::operation_owner_key(&op_id)).await {
                    Ok(Some(owned)) => {
                        tracing::info!(operation = %op_id, node = node.name(), takeover, "this node owns the operation");
                        let result = OWNED
                            .scope(owned.clone(), o.run(&op_id, Some(&owned), takeover))
                            .await;
                        node.release(&owned).await;
                        result
                    }
                    Ok(None) => {
                        tracing::debug!(operation = %op_id, "another node owns the operation");
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = outcome {
                tracing::error!(operation = %op_id, error = %e, "operation runner stopped");
            }
            if let Ok(mut r) = o.runners.lock() {
                r.remove(&op_id);
            }
        });
    }

    /// Whether this node still holds `owned` (always, without a cluster).
    async fn still_owns(&self, owned: Option<&Ownership>) -> bool {
        let (Some(owned), Some(node)) = (owned, &self.node) else {
            return true;
        };
        match node.holds(&owned.key).await {
            Ok(Some(now)) if now.revision == owned.revision => true,
            Ok(_) => false,
            // The store cannot say: act as if lost (the next sweep resumes it if not).
            Err(e) => {
                tracing::warn!(key = %owned.key, error = %e, "cannot confirm ownership");
                false
            }
        }
    }

    fn ownership_lost(&self, op: &OperationRecord, what: &str) {
        tracing::error!(
            operation = %op.id,
            step = %op.step,
            node = self.node.as_ref().map(|n| n.name()).unwrap_or(""),
            "ownership lost: {what}; this node stops driving the operation (its lease expired: another node resumes it)"
        );
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

    async fn run(
        &self,
        op_id: &str,
        owned: Option<&Ownership>,
        takeover: bool,
    ) -> Result<(), StoreError> {
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
                if takeover && owned.is_some() {
                    if let Err(e) = self.fence_for_takeover(&op).await {
                        if !self.still_owns(owned).await {
                            self.ownership_lost(&op, "taking the operation over");
                            return Ok(());
                        }
                        // Left to the next sweep (it claims the operation again).
                        tracing::warn!(operation = op_id, error = %e, "taking the operation over failed");
                        return Ok(());
                    }
                }
            }
            failpoint::hit(&op.step).await;
            if self.hook_says_crash(&op, true) {
                return Ok(());
            }
            // Commands are only sent while this node owns the operation (the store's
            // compare refuses its commits after that either way).
            if !self.still_owns(owned).await {
                self.ownership_lost(&op, "before running the step");
                return Ok(());
            }
            let kind = (self.registry)(&op.action);
            let names = kind.steps(&op.action);
            let result = self.execute_with_retries(&op, owned).await;
            if result.is_ok() {
                failpoint::hit(&format!("{}:after", op.step)).await;
            }
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
                    if let Err(StoreError::Conflict { .. }) = self.commit(vec![w]).await {
                        if !self.still_owns(owned).await {
                            self.ownership_lost(
                                &op,
                                "the store refused this node's late commit of the step",
                            );
                        } else {
                            tracing::warn!(operation = op_id, "another runner owns this operation");
                        }
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
                    match self.commit(writes).await {
                        Ok(_) => {
                            tracing::info!(operation = op_id, "operation succeeded");
                            return Ok(());
                        }
                        Err(StoreError::Conflict { .. }) if !self.still_owns(owned).await => {
                            self.ownership_lost(
                                &op,
                                "the store refused this node's late commit of the operation's end",
                            );
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
                    if !self.still_owns(owned).await {
                        self.ownership_lost(&op, &format!("the step failed ({error})"));
                        return Ok(());
                    }
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
                    if let Err(e) = self.commit(writes).await {
                        // Undo writes may conflict; record the failure at least (the sweep
                        // releases the resource) — still only while this node owns it.
                        tracing::error!(operation = op_id, error = %e, "undo writes failed");
                        let w: Write = put(catalog::operation_key(op_id), &op, Precondition::Any);
                        if let Err(e) = self.commit(vec![w]).await {
                            if !self.still_owns(owned).await {
                                self.ownership_lost(&op, "the store refused recording the failure");
                                return Ok(());
                            }
                            return Err(e);
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    async fn execute_with_retries(
        &self,
        op: &OperationRecord,
        owned: Option<&Ownership>,
    ) -> Result<Outcome, StepError> {
        let kind = (self.registry)(&op.action);
        let mut attempt = 1;
        loop {
            match kind.execute(self, op).await {
                Ok(o) => return Ok(o),
                Err(e) if attempt < self.config.step_attempts && e.retryable() => {
                    tracing::info!(step = %op.step, attempt, error = %e, "retrying step");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                    if !self.still_owns(owned).await {
                        return Err(StepError::WorldChanged(fog_model::ArmError::internal(
                            "this node lost the operation's ownership",
                        )));
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
