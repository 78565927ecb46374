//! Taking an operation over from another node (several nodes on one store).
//!
//! The node that drove the operation before may still have commands in flight (it was
//! paused, or cut off from the store but not from the servers). Before resuming at the
//! recorded step, the new owner moves the generation of every server the operation
//! commands — the group's and both members', or the one instance's — past everything any
//! of them accepted, records it (compared with its ownership in the same transaction), and
//! admits it into each server's fence: from then on the old owner's commands, which carry
//! the older generation, are refused by the servers.

use crate::{catalog, store_err, Orchestrator};
use fog_model::{Action, ArmError, FailoverGroupRecord, InstanceRecord, OperationRecord};
use fog_store::typed::{put, Versioned};
use fog_store::Precondition;

impl Orchestrator {
    /// Moves the generations of `op`'s servers past the previous owner's (see the module
    /// documentation).
    pub(crate) async fn fence_for_takeover(&self, op: &OperationRecord) -> Result<(), ArmError> {
        let store = self.store.as_ref();
        // The group (by uid) or the instance the operation commands.
        let (group_uid, instance) = match &op.action {
            Action::CreateInstance { instance, .. }
            | Action::UpdateInstance { instance, .. }
            | Action::DeleteInstance { instance }
            | Action::CreateDatabase { instance, .. }
            | Action::UpdateDatabase { instance, .. }
            | Action::DeleteDatabase { instance, .. } => (None, Some(instance)),
            Action::CreateFailoverGroup { .. }
            | Action::UpdateFailoverGroup { .. }
            | Action::DeleteFailoverGroup { .. }
            | Action::FailoverGroup { .. }
            | Action::RejoinGroup { .. } => (op.action.group().map(|(uid, _)| uid), None),
        };
        let mut instances: Vec<Versioned<InstanceRecord>> = Vec::new();
        let mut group_uid = group_uid;
        if let Some(id) = instance {
            if let Some(rec) = catalog::instance(store, id).await.map_err(store_err)? {
                if group_uid.is_none() {
                    group_uid = rec.value.failover_group.clone();
                }
                instances.push(rec);
            }
        }
        let mut group: Option<Versioned<FailoverGroupRecord>> = None;
        if let Some(uid) = &group_uid {
            if let Some(g) = catalog::group(store, uid).await.map_err(store_err)? {
                for member in [&g.value.primary.instance, &g.value.secondary.instance] {
                    if instances.iter().any(|i| &i.value.id == member) {
                        continue;
                    }
                    if let Some(rec) = catalog::instance(store, member).await.map_err(store_err)? {
                        instances.push(rec);
                    }
                }
                group = Some(g);
            }
        }
        if instances.is_empty() {
            return Ok(());
        }
        let gen = instances
            .iter()
            .map(|i| i.value.generation)
            .chain(group.iter().map(|g| g.value.generation))
            .max()
            .unwrap_or(0)
            + 1;
        let mut writes = Vec::new();
        if let Some(g) = &group {
            let mut rec = g.value.clone();
            rec.generation = gen;
            writes.push(put(
                catalog::group_key(&rec.uid),
                &rec,
                Precondition::Revision(g.revision),
            ));
        }
        for i in &instances {
            let mut rec = i.value.clone();
            rec.generation = gen;
            writes.push(put(
                catalog::instance_key(&rec.id),
                &rec,
                Precondition::Revision(i.revision),
            ));
        }
        self.commit(writes).await.map_err(store_err)?;
        for i in &instances {
            let spec = self.server_spec(&i.value).await?;
            match self.agent.fence(&spec, gen).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(uid = %spec.uid, region = %spec.region, error = %e, "fencing a server on takeover failed")
                }
            }
        }
        tracing::warn!(
            operation = %op.id,
            step = %op.step,
            generation = gen,
            servers = instances.len(),
            "took the operation over: generation moved past the previous owner's; its commands are refused from now on"
        );
        Ok(())
    }
}
