//! The operation sweep: no operation is left undriven and no resource stays busy for ever.
//!
//! Runners are tasks of this process ([`Orchestrator::spawn`] records which operations
//! have one). Every [`SWEEP_INTERVAL`] the sweep
//! - resumes every unfinished operation that no runner drives (a runner that gave up after
//!   repeated conflicts, or one that stopped on a store error), and
//! - for a resource still marked busy by an operation that *failed* (its undo's writes
//!   conflicted, or the store failed under it), runs that operation's undo again — so a
//!   failover that failed before its point of no return gets its old primary back rather
//!   than staying half-switched — and
//! - clears every busy marker (`active_operation`) that still points at an operation that
//!   has finished or does not exist. A database whose creation never finished is removed
//!   (its server-side database, if any, dropped); other resources are released in the state
//!   their record states.
//!
//! Every write is a compare-and-swap on the revision read, so the sweep never overwrites
//! what a runner just did.

use crate::{catalog, Orchestrator};
use fog_model::{
    DatabaseRecord, DatabaseStatus, FailoverGroupRecord, InstanceRecord, OperationRecord,
    ProvisioningState,
};
use fog_store::typed::{list, put};
use fog_store::{Precondition, StoreError, Write};
use std::collections::HashMap;
use std::time::Duration;

/// How often the sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Unfinished operations a new runner now drives.
    pub resumed: Vec<String>,
    /// Store keys whose stale busy marker was cleared (or whose record was removed).
    pub released: Vec<String>,
    /// Failed operations whose undo ran again because their resource stayed busy.
    pub undone: Vec<String>,
}

impl Orchestrator {
    /// One sweep (see the module documentation).
    pub async fn sweep_operations(&self) -> Result<SweepReport, StoreError> {
        let store = self.store.as_ref();
        let mut report = SweepReport::default();
        let ops: HashMap<String, OperationRecord> = list::<OperationRecord>(store, "operations/")
            .await?
            .into_iter()
            .map(|(_, v)| (v.value.id.clone(), v.value))
            .collect();
        for op in ops.values() {
            if !op.status.is_terminal() && !self.is_driven(&op.id) {
                // On a cluster: only an operation no node owns (its owner's lease ended).
                if self.node.is_some()
                    && store
                        .get(&crate::cluster::operation_owner_key(&op.id))
                        .await?
                        .is_some()
                {
                    continue;
                }
                tracing::warn!(operation = %op.id, step = %op.step, "resuming an operation no runner drives");
                self.resume(op.id.clone());
                report.resumed.push(op.id.clone());
            }
        }
        // Undo and release are cluster-wide duties: one node does them.
        if !self.leads().await {
            return Ok(report);
        }
        // A resource still marked busy by an operation that failed is given that operation's
        // undo once more (undo is idempotent and checks that the operation still owns the
        // resource): a failover that failed before its point of no return gets its old
        // primary back rather than staying half-switched. What that does not settle is
        // released below as the record states it.
        for op in ops.values() {
            if op.status == fog_model::OperationStatus::Failed
                && self.still_marked_busy_by(op).await
            {
                match (self.registry)(&op.action).undo(self, op).await {
                    Ok(writes) if !writes.is_empty() => {
                        if self.release(writes).await {
                            tracing::warn!(operation = %op.id, "undid a failed operation whose resource stayed busy");
                            report.undone.push(op.id.clone());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(operation = %op.id, error = %e, "undo of a failed operation failed again")
                    }
                }
            }
        }
        // A marker is stale when its operation is finished or missing.
        let stale = |active: &Option<String>| match active {
            Some(id) => ops.get(id).is_none_or(|op| op.status.is_terminal()),
            None => false,
        };
        for (key, v) in list::<InstanceRecord>(store, "instances/").await? {
            if !stale(&v.value.active_operation) {
                continue;
            }
            let mut rec = v.value;
            rec.active_operation = None;
            rec.provisioning_state = match rec.provisioning_state {
                ProvisioningState::Updating => ProvisioningState::Succeeded,
                ProvisioningState::Succeeded => ProvisioningState::Succeeded,
                _ => ProvisioningState::Failed,
            };
            if self
                .release(vec![put(
                    key.clone(),
                    &rec,
                    Precondition::Revision(v.revision),
                )])
                .await
            {
                report.released.push(key);
            }
        }
        for (key, v) in list::<DatabaseRecord>(store, "databases/").await? {
            if !stale(&v.value.active_operation) {
                continue;
            }
            let rec = v.value;
            let write = if rec.status == DatabaseStatus::Creating {
                // Never created as far as anyone was told: remove what may exist of it.
                if let Ok(Some(inst)) = catalog::instance(store, &rec.instance).await {
                    if let Ok(spec) = self.server_spec(&inst.value).await {
                        if let Err(e) = self
                            .agent
                            .drop_database(&spec, &rec.name, inst.value.generation)
                            .await
                        {
                            tracing::warn!(database = %rec.name, error = %e, "dropping a database whose creation failed");
                        }
                    }
                }
                Write::delete(key.clone(), Precondition::Revision(v.revision))
            } else {
                let mut rec = rec;
                rec.active_operation = None;
                put(key.clone(), &rec, Precondition::Revision(v.revision))
            };
            if self.release(vec![write]).await {
                report.released.push(key);
            }
        }
        for (key, v) in list::<FailoverGroupRecord>(store, catalog::GROUPS_PREFIX).await? {
            if !stale(&v.value.active_operation) {
                continue;
            }
            let mut rec = v.value;
            rec.active_operation = None;
            if self
                .release(vec![put(
                    key.clone(),
                    &rec,
                    Precondition::Revision(v.revision),
                )])
                .await
            {
                report.released.push(key);
            }
        }
        for key in &report.released {
            tracing::warn!(key, "released a resource left busy by a finished operation");
        }
        Ok(report)
    }

    /// Whether a resource of `op` is still marked busy by it (read now).
    async fn still_marked_busy_by(&self, op: &OperationRecord) -> bool {
        use fog_model::Action;
        let store = self.store.as_ref();
        let marked = |a: Option<String>| a.as_deref() == Some(op.id.as_str());
        match &op.action {
            Action::CreateInstance { instance, .. }
            | Action::UpdateInstance { instance, .. }
            | Action::DeleteInstance { instance } => catalog::instance(store, instance)
                .await
                .ok()
                .flatten()
                .is_some_and(|i| marked(i.value.active_operation)),
            Action::CreateDatabase { instance, database }
            | Action::UpdateDatabase {
                instance, database, ..
            }
            | Action::DeleteDatabase { instance, database } => {
                catalog::database(store, instance, database)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|d| marked(d.value.active_operation))
            }
            Action::CreateFailoverGroup { .. }
            | Action::UpdateFailoverGroup { .. }
            | Action::DeleteFailoverGroup { .. }
            | Action::FailoverGroup { .. }
            | Action::RejoinGroup { .. } => {
                let uid = op.action.group().map(|(uid, _)| uid).unwrap_or_default();
                catalog::group(store, &uid)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|g| marked(g.value.active_operation))
            }
        }
    }

    async fn release(&self, writes: Vec<Write>) -> bool {
        match self.store.commit(writes).await {
            Ok(_) => true,
            // Changed meanwhile: the next sweep looks again.
            Err(StoreError::Conflict { .. }) => false,
            Err(e) => {
                tracing::warn!(error = %e, "sweep write failed");
                false
            }
        }
    }

    /// Runs [`Orchestrator::sweep_operations`] forever.
    pub async fn run_sweeper(self) {
        // On a cluster a dead node's operations are resumed within a second of its lease
        // ending (its ownership key vanishing), not a whole interval later.
        let interval = match &self.node {
            Some(_) => Duration::from_secs(1),
            None => SWEEP_INTERVAL,
        };
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = self.sweep_operations().await {
                tracing::warn!(error = %e, "operation sweep failed");
            }
        }
    }
}
