//! Failover groups: create, update (policies), delete.
//!
//! Create: `align` (give the secondary the primary's internal credentials, which seeding
//! will copy anyway) → `slot` (a physical slot on the primary, bounded by
//! `max_slot_wal_keep_size`) → `link` (the primary's geo links; before the copy, it costs
//! nothing after) → `seed` (base backup, swap, start streaming; progress is persisted in the
//! group record) → `finish`. Undo removes the group: the slot is dropped, a secondary that
//! was already seeded is promoted to stand alone, and the secondary's credentials are
//! whatever its server actually accepts.
//! Update: `finish` (policies only; replication is not touched).
//! Delete: `promote` (the secondary becomes a stand-alone read-write instance) → `slot`
//! (drop it on the primary) → `unlink` → `finish` (records go; the former secondary keeps
//! its databases as its own). Undo of update and delete: the group as it was, not busy.

use super::prelude::*;
use crate::submit_group::detach_members;
use fog_engine::{SeedProgress, ServerSpec, SUPERUSER};
use fog_model::failover_group::{ReplicationState, SeedingProgress};
use fog_model::{FailoverGroupRecord, InstanceRecord};
use fog_store::typed::Versioned;
use std::sync::{Arc, Mutex};
use std::time::Duration;

step_enum! {
    pub(crate) enum CreateStep in "create_group" {
        Align = "align",
        Slot = "slot",
        Link = "link",
        Seed = "seed",
        Finish = "finish",
    }
}

step_enum! {
    pub(crate) enum UpdateStep in "update_group" {
        Finish = "finish",
    }
}

step_enum! {
    pub(crate) enum DeleteStep in "delete_group" {
        Promote = "promote",
        Slot = "slot",
        Unlink = "unlink",
        Finish = "finish",
    }
}

pub(crate) struct CreateGroup;
pub(crate) struct UpdateGroup;
pub(crate) struct DeleteGroup;

/// The uid of the group a group operation works on (see [`Action::group`]).
pub(crate) fn group_uid(action: &Action) -> String {
    action.group().map(|(uid, _)| uid).unwrap_or_default()
}

/// A group record with both members' instance records, read together.
pub(crate) struct Members {
    pub(crate) group: Versioned<FailoverGroupRecord>,
    pub(crate) primary: Versioned<InstanceRecord>,
    pub(crate) secondary: Versioned<InstanceRecord>,
}

impl Orchestrator {
    /// Points `sp_wait_for_database_copy_sync` in every user database of `primary`, and
    /// per-transaction synchronous commit, at `secondary`.
    pub(crate) async fn link_group(
        &self,
        primary: &InstanceRecord,
        secondary: &InstanceRecord,
    ) -> Result<(), StepError> {
        let spec = self.server_spec(primary).await?;
        let app = format!("fogd_{}", secondary.uid);
        let step = "link";
        for db in self
            .agent
            .list_databases(&spec)
            .await
            .map_err(engine_error(step))?
        {
            self.agent
                .install_geo_link(
                    &spec,
                    &db,
                    &secondary.id.name,
                    &secondary.dns_zone,
                    &app,
                    primary.generation,
                )
                .await
                .map_err(engine_error(step))?;
        }
        self.agent
            .set_sync_standby(&spec, Some(&app), primary.generation)
            .await
            .map_err(engine_error(step))
    }

    /// Removes the geo link from every user database of a (writable) instance.
    pub(crate) async fn unlink_instance(&self, inst: &InstanceRecord) -> Result<(), StepError> {
        let spec = self.server_spec(inst).await?;
        let step = "unlink";
        for db in self
            .agent
            .list_databases(&spec)
            .await
            .map_err(engine_error(step))?
        {
            self.agent
                .clear_geo_link(&spec, &db, inst.generation)
                .await
                .map_err(engine_error(step))?;
        }
        self.agent
            .set_sync_standby(&spec, None, inst.generation)
            .await
            .map_err(engine_error(step))
    }

    /// The group with uid `uid` and both its members.
    pub(crate) async fn members(&self, uid: &str) -> Result<Members, ArmError> {
        let store = self.store.as_ref();
        let group = catalog::group(store, uid)
            .await
            .map_err(store_err)?
            .ok_or_else(ArmError::operation_interrupted)?;
        let get = |id| async move {
            catalog::instance(store, id)
                .await
                .map_err(store_err)?
                .ok_or_else(ArmError::operation_interrupted)
        };
        let primary = get(&group.value.primary.instance).await?;
        let secondary = get(&group.value.secondary.instance).await?;
        Ok(Members {
            group,
            primary,
            secondary,
        })
    }

    /// Persists seeding progress (of the group with uid `uid`) every half second until
    /// `done` fires.
    fn progress_writer(
        &self,
        uid: String,
        latest: Arc<Mutex<SeedProgress>>,
        mut done: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        // A task of its own: it carries the runner's ownership compare along.
        let owned = crate::engine::ownership_check();
        tokio::spawn(async move {
            let mut last = SeedProgress::default();
            loop {
                let finished = tokio::select! {
                    _ = &mut done => true,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => false,
                };
                let now = latest.lock().map(|p| *p).unwrap_or_default();
                if now != last {
                    if let Ok(Some(g)) = catalog::group(store.as_ref(), &uid).await {
                        let mut rec = g.value;
                        rec.seeding = Some(SeedingProgress {
                            bytes_done: now.done,
                            bytes_total: now.total,
                        });
                        rec.replication_state = ReplicationState::Seeding;
                        let w = put(
                            catalog::group_key(&uid),
                            &rec,
                            Precondition::Revision(g.revision),
                        );
                        let writes = std::iter::once(w).chain(owned.clone()).collect();
                        if store.commit(writes).await.is_ok() {
                            last = now;
                        }
                    }
                }
                if finished {
                    return;
                }
            }
        })
    }
}

/// Makes sure the servers a step needs run: after a restart of fogd the supervisor may
/// still be starting them.
async fn ensure_running(
    o: &Orchestrator,
    instances: &[&InstanceRecord],
    step: &str,
) -> Result<(), StepError> {
    for inst in instances {
        tracing::debug!(step, instance = %inst.id, "making sure the server runs");
        let spec = o.server_spec(inst).await?;
        o.agent
            .ensure_running(&spec, inst.generation)
            .await
            .map_err(engine_error(step))?;
    }
    Ok(())
}

/// The group with no operation on it, if this operation still owns it.
async fn release(o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
    let uid = group_uid(&op.action);
    let Some(group) = catalog::group(o.store.as_ref(), &uid)
        .await
        .map_err(store_err)?
        .filter(|g| g.value.active_operation.as_deref() == Some(op.id.as_str()))
    else {
        return Ok(vec![]);
    };
    let mut g = group.value;
    g.active_operation = None;
    Ok(vec![put(
        catalog::group_key(&uid),
        &g,
        Precondition::Revision(group.revision),
    )])
}

#[async_trait]
impl OperationType for CreateGroup {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        CreateStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = CreateStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let store = o.store.as_ref();
        let uid = group_uid(&op.action);
        let m = o.members(&uid).await?;
        let agent = o.agent.as_ref();
        let group = &m.group.value;
        let step_name = step.name();
        // (The secondary of a group being created is left alone by the supervisor —
        // seeding replaces it — so its alignment starts it here.)
        match step {
            CreateStep::Align => {
                ensure_running(o, &[&m.primary.value, &m.secondary.value], step_name).await?
            }
            CreateStep::Finish => {}
            _ => ensure_running(o, &[&m.primary.value], step_name).await?,
        }
        let step = step_name;
        match CreateStep::parse(step).ok_or_else(|| unknown_step(step))? {
            CreateStep::Align => {
                let spec = o.server_spec(&m.secondary.value).await?;
                let secret = catalog::secret(store, &o.secrets, &m.secondary.value.uid)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| ArmError::internal("the instance's credentials are missing"))?;
                let verifier = fog_engine::scram_verifier(&spec.superuser_password);
                // Connect with whichever password the server has now: the old one, unless an
                // earlier run of this step already aligned it.
                let old = ServerSpec {
                    superuser_password: secret
                        .previous_superuser_password
                        .clone()
                        .unwrap_or_default(),
                    ..spec.clone()
                };
                let (first, second) = if secret.previous_superuser_password.is_some() {
                    (&old, &spec)
                } else {
                    (&spec, &old)
                };
                if agent
                    .ensure_login(first, SUPERUSER, &verifier, m.secondary.value.generation)
                    .await
                    .is_err()
                {
                    agent
                        .ensure_login(second, SUPERUSER, &verifier, m.secondary.value.generation)
                        .await
                        .map_err(engine_error(step))?;
                }
            }
            CreateStep::Slot => {
                let spec = o.server_spec(&m.primary.value).await?;
                agent
                    .ensure_slot(&spec, &group.slot, m.primary.value.generation)
                    .await
                    .map_err(engine_error(step))?;
            }
            CreateStep::Seed => {
                let spec = o.server_spec(&m.secondary.value).await?;
                let source = o
                    .replication_source(&m.primary.value, &m.secondary.value.uid, &group.slot)
                    .await?;
                let latest = Arc::new(Mutex::new(SeedProgress::default()));
                let (stop, done) = tokio::sync::oneshot::channel();
                let writer = o.progress_writer(uid.clone(), latest.clone(), done);
                let sink = latest.clone();
                let result = agent
                    .seed_standby(
                        &spec,
                        &source,
                        &move |p| {
                            if let Ok(mut l) = sink.lock() {
                                *l = p;
                            }
                        },
                        m.secondary.value.generation,
                    )
                    .await;
                let _ = stop.send(());
                let _ = writer.await;
                result.map_err(engine_error(step))?;
            }
            CreateStep::Link => {
                o.link_group(&m.primary.value, &m.secondary.value).await?;
            }
            CreateStep::Finish => {
                let mut g = group.clone();
                g.replication_state = ReplicationState::CatchUp;
                g.active_operation = None;
                let created = fog_model::health::GroupEvent::new(
                    fog_model::health::EventKind::GroupCreated,
                    g.generation,
                    format!(
                        "{} (primary, {}) replicates to {} ({}); listeners on ports {} (read-write) and {} (read-only)",
                        g.primary.instance.name,
                        g.primary.location_label,
                        g.secondary.instance.name,
                        g.secondary.location_label,
                        g.listeners.read_write,
                        g.listeners.read_only
                    ),
                );
                let mut writes = vec![
                    put(
                        catalog::group_key(&uid),
                        &g,
                        Precondition::Revision(m.group.revision),
                    ),
                    catalog::event_write(&uid, &created),
                ];
                if let Some(mut secret) = catalog::secret(store, &o.secrets, &m.secondary.value.uid)
                    .await
                    .map_err(store_err)?
                {
                    secret.previous_superuser_password = None;
                    writes.push(catalog::secret_put(
                        &o.secrets,
                        &m.secondary.value.uid,
                        &secret,
                        Precondition::Any,
                    ));
                }
                return Ok(Outcome::Finished(writes));
            }
        }
        Ok(Outcome::Continue)
    }

    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        let uid = group_uid(&op.action);
        let Ok(m) = o.members(&uid).await else {
            return Ok(vec![]);
        };
        if m.group.value.active_operation.as_deref() != Some(op.id.as_str()) {
            return Ok(vec![]);
        }
        let agent = o.agent.as_ref();
        let mut writes = vec![Write::delete(
            catalog::group_key(&uid),
            Precondition::Revision(m.group.revision),
        )];
        writes.extend(catalog::group_index_deletes(&m.group.value));
        writes.extend(detach_members(&[
            (m.primary.clone(), &uid),
            (m.secondary.clone(), &uid),
        ]));
        if let Ok(spec) = o.server_spec(&m.primary.value).await {
            let _ = agent
                .drop_slot(&spec, &m.group.value.slot, m.primary.value.generation)
                .await;
        }
        if let (Ok(spec), Ok(Some(mut secret))) = (
            o.server_spec(&m.secondary.value).await,
            catalog::secret(o.store.as_ref(), &o.secrets, &m.secondary.value.uid).await,
        ) {
            match agent.replication_status(&spec).await {
                Ok(st) if st.in_recovery => {
                    let gen = m.secondary.value.generation;
                    if agent.promote(&spec, gen).await.is_ok() {
                        // The secondary was empty when the group was accepted: every
                        // database on it now is a copy of the primary's, which no record
                        // names (and which would keep it from ever joining a group again).
                        for db in agent.list_databases(&spec).await.unwrap_or_default() {
                            if let Err(e) = agent.drop_database(&spec, &db, gen).await {
                                tracing::warn!(database = %db, error = %e, "dropping a seeded copy failed");
                            }
                        }
                    }
                }
                Ok(_) => {}
                // The alignment never happened: the server still has its own password.
                Err(_) => {
                    if let Some(prev) = secret.previous_superuser_password.take() {
                        secret.superuser_password = prev;
                    }
                }
            }
            secret.previous_superuser_password = None;
            writes.push(catalog::secret_put(
                &o.secrets,
                &m.secondary.value.uid,
                &secret,
                Precondition::Any,
            ));
        }
        Ok(writes)
    }
}

#[async_trait]
impl OperationType for UpdateGroup {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        UpdateStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = UpdateStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let uid = group_uid(&op.action);
        let m = o.members(&uid).await?;
        let group = &m.group.value;
        match (step, &op.action) {
            (UpdateStep::Finish, Action::UpdateFailoverGroup { policies, .. }) => {
                let mut g = group.clone();
                g.policies = policies.clone();
                g.active_operation = None;
                return Ok(Outcome::Finished(vec![put(
                    catalog::group_key(&uid),
                    &g,
                    Precondition::Revision(m.group.revision),
                )]));
            }
            _ => Err(unknown_step(&op.step)),
        }
    }

    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        release(o, op).await
    }
}

/// A delete that failed after promoting the secondary (its reply lost) leaves it
/// writable: the group says so, so that it is never read from as a replica and the health
/// monitor re-attaches it.
async fn release_after_delete(
    o: &Orchestrator,
    op: &OperationRecord,
) -> Result<Vec<Write>, StepError> {
    let uid = group_uid(&op.action);
    let Ok(m) = o.members(&uid).await else {
        return Ok(vec![]);
    };
    if m.group.value.active_operation.as_deref() != Some(op.id.as_str()) {
        return Ok(vec![]);
    }
    let mut g = m.group.value.clone();
    g.active_operation = None;
    if let Ok(spec) = o.server_spec(&m.secondary.value).await {
        if o.agent
            .replication_status(&spec)
            .await
            .is_ok_and(|st| !st.in_recovery)
        {
            g.secondary_needs_rejoin = true;
            g.replication_state = ReplicationState::Suspended;
        }
    }
    Ok(vec![put(
        catalog::group_key(&uid),
        &g,
        Precondition::Revision(m.group.revision),
    )])
}

#[async_trait]
impl OperationType for DeleteGroup {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        DeleteStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = DeleteStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let store = o.store.as_ref();
        let uid = group_uid(&op.action);
        let m = o.members(&uid).await?;
        let agent = o.agent.as_ref();
        let group = &m.group.value;
        let step_name = step.name();
        if step == DeleteStep::Promote {
            ensure_running(o, &[&m.secondary.value], step_name).await?;
        }
        let step = step_name;
        match DeleteStep::parse(step).ok_or_else(|| unknown_step(step))? {
            DeleteStep::Promote => {
                let spec = o.server_spec(&m.secondary.value).await?;
                agent
                    .promote(&spec, m.secondary.value.generation)
                    .await
                    .map_err(engine_error(step))?;
            }
            DeleteStep::Slot => {
                let spec = o.server_spec(&m.primary.value).await?;
                // A primary that is down keeps its slot; that is harmless once no standby uses
                // it, and is logged rather than blocking the delete.
                if let Err(e) = agent
                    .drop_slot(&spec, &group.slot, m.primary.value.generation)
                    .await
                {
                    tracing::warn!(group = %group.name, uid = %uid, error = %e, "could not drop the replication slot");
                }
            }
            DeleteStep::Unlink => {
                // Both are stand-alone and writable now: neither has a geo link any more.
                for inst in [&m.primary.value, &m.secondary.value] {
                    if let Err(e) = o.unlink_instance(inst).await {
                        tracing::warn!(instance = %inst.id, error = %e, "removing the geo link failed");
                    }
                }
            }
            DeleteStep::Finish => {
                // The group's history goes with it (a group created again gets a new uid).
                catalog::delete_events(store, &uid)
                    .await
                    .map_err(store_err)?;
                let mut writes = vec![
                    Write::delete(
                        catalog::group_key(&uid),
                        Precondition::Revision(m.group.revision),
                    ),
                    Write::delete(catalog::observed_key(&uid), Precondition::Any),
                ];
                writes.extend(catalog::group_index_deletes(group));
                writes.extend(detach_members(&[
                    (m.primary.clone(), &uid),
                    (m.secondary.clone(), &uid),
                ]));
                // The former secondary's replicas become its own read-write databases.
                for db in catalog::databases(store, &m.primary.value.id)
                    .await
                    .map_err(store_err)?
                {
                    let mut rec = db.value;
                    rec.instance = m.secondary.value.id.clone();
                    rec.instance_uid = m.secondary.value.uid.clone();
                    rec.location = m.secondary.value.location.clone();
                    writes.push(put(
                        catalog::database_key(&m.secondary.value.id, &rec.name),
                        &rec,
                        Precondition::Any,
                    ));
                }
                return Ok(Outcome::Finished(writes));
            }
        }
        Ok(Outcome::Continue)
    }

    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        release_after_delete(o, op).await
    }
}
