//! Steps of failover-group operations.
//!
//! Create: `align` (give the secondary the primary's internal credentials, which seeding
//! will copy anyway) → `slot` (a physical slot on the primary, bounded by
//! `max_slot_wal_keep_size`) → `seed` (base backup, swap, start streaming; progress is
//! persisted in the group record) → `finish`.
//! Update: `finish` (policies only; replication is not touched).
//! Delete: `promote` (the secondary becomes a stand-alone read-write instance) → `slot`
//! (drop it on the primary) → `finish` (records go; the former secondary keeps its
//! databases as its own).

use crate::catalog;
use crate::steps::Outcome;
use crate::submit_group::detach_members;
use crate::{store_err, Orchestrator};
use fog_engine::{SeedProgress, ServerSpec, SUPERUSER};
use fog_model::failover_group::{ReplicationState, SeedingProgress};
use fog_model::{Action, ArmError, FailoverGroupRecord, InstanceRecord, OperationRecord};
use fog_store::typed::{put, Versioned};
use fog_store::{Precondition, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn step_names(action: &Action) -> Option<&'static [&'static str]> {
    Some(match action {
        Action::CreateFailoverGroup { .. } => &[
            "create_group.align",
            "create_group.slot",
            // Linking touches only the primary; done before the copy, it costs nothing after.
            "create_group.link",
            "create_group.seed",
            "create_group.finish",
        ],
        Action::UpdateFailoverGroup { .. } => &["update_group.finish"],
        Action::DeleteFailoverGroup { .. } => &[
            "delete_group.promote",
            "delete_group.slot",
            "delete_group.unlink",
            "delete_group.finish",
        ],
        Action::FailoverGroup { planned: true, .. } => &[
            "failover.fence",
            "failover.stop_old",
            "failover.catch_up",
            "failover.promote",
            "failover.route",
            "failover.rejoin",
            "failover.link",
            "failover.finish",
        ],
        Action::FailoverGroup { planned: false, .. } => &[
            "failover.fence",
            "failover.stop_old",
            "failover.promote",
            "failover.route",
            "failover.rejoin",
            "failover.link",
            "failover.finish",
        ],
        Action::RejoinGroup { .. } => &[
            "rejoin.fence",
            "rejoin.rewind",
            "rejoin.link",
            "rejoin.finish",
        ],
        _ => return None,
    })
}

/// Steps before this one can be undone (the old primary resumes); from it on, only forward.
const POINT_OF_NO_RETURN: &str = "failover.promote";

fn engine(step: &str) -> impl FnOnce(fog_engine::EngineError) -> ArmError + '_ {
    move |e| {
        tracing::warn!(step, error = %e, "step failed");
        ArmError::new(500, "OperationFailed", format!("Step '{step}' failed: {e}"))
    }
}

fn group_name(action: &Action) -> &str {
    match action {
        Action::CreateFailoverGroup { name }
        | Action::UpdateFailoverGroup { name, .. }
        | Action::DeleteFailoverGroup { name }
        | Action::FailoverGroup { name, .. }
        | Action::RejoinGroup { name, .. } => name,
        _ => "",
    }
}

pub(crate) struct Members {
    group: Versioned<FailoverGroupRecord>,
    primary: Versioned<InstanceRecord>,
    secondary: Versioned<InstanceRecord>,
}

impl Orchestrator {
    /// Points `sp_wait_for_database_copy_sync` in every user database of `primary`, and
    /// per-transaction synchronous commit, at `secondary`.
    pub(crate) async fn link_group(
        &self,
        primary: &InstanceRecord,
        secondary: &InstanceRecord,
    ) -> Result<(), ArmError> {
        let spec = self.server_spec(primary).await?;
        let app = format!("fogd_{}", secondary.uid);
        let step = "link";
        for db in self
            .agent
            .list_databases(&spec)
            .await
            .map_err(engine(step))?
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
                .map_err(engine(step))?;
        }
        self.agent
            .set_sync_standby(&spec, Some(&app), primary.generation)
            .await
            .map_err(engine(step))
    }

    /// Removes the geo link from every user database of a (writable) instance.
    pub(crate) async fn unlink_instance(&self, inst: &InstanceRecord) -> Result<(), ArmError> {
        let spec = self.server_spec(inst).await?;
        let step = "unlink";
        for db in self
            .agent
            .list_databases(&spec)
            .await
            .map_err(engine(step))?
        {
            self.agent
                .clear_geo_link(&spec, &db, inst.generation)
                .await
                .map_err(engine(step))?;
        }
        self.agent
            .set_sync_standby(&spec, None, inst.generation)
            .await
            .map_err(engine(step))
    }

    async fn members(&self, name: &str) -> Result<Members, ArmError> {
        let store = self.store.as_ref();
        let group = catalog::group(store, name)
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

    /// Persists seeding progress every half second until `done` fires.
    fn progress_writer(
        &self,
        name: String,
        latest: Arc<Mutex<SeedProgress>>,
        mut done: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut last = SeedProgress::default();
            loop {
                let finished = tokio::select! {
                    _ = &mut done => true,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => false,
                };
                let now = latest.lock().map(|p| *p).unwrap_or_default();
                if now != last {
                    if let Ok(Some(g)) = catalog::group(store.as_ref(), &name).await {
                        let mut rec = g.value;
                        rec.seeding = Some(SeedingProgress {
                            bytes_done: now.done,
                            bytes_total: now.total,
                        });
                        rec.replication_state = ReplicationState::Seeding;
                        let w = put(
                            catalog::group_key(&name),
                            &rec,
                            Precondition::Revision(g.revision),
                        );
                        if store.commit(vec![w]).await.is_ok() {
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

pub(crate) async fn execute(o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, ArmError> {
    let store = o.store.as_ref();
    let step = op.step.as_str();
    let name = group_name(&op.action);
    let m = o.members(name).await?;
    let agent = o.agent.as_ref();
    let group = &m.group.value;
    // Creating a group needs its primary up, and the promotion of a delete its secondary:
    // after a restart of fogd the supervisor may still be starting them.
    // (The secondary of a group being created is left alone by the supervisor — seeding
    // replaces it — so its alignment starts it here.)
    let needs_running: Vec<&InstanceRecord> = match (&op.action, step) {
        (Action::CreateFailoverGroup { .. }, "create_group.align") => {
            vec![&m.primary.value, &m.secondary.value]
        }
        (Action::CreateFailoverGroup { .. }, s) if s != "create_group.finish" => {
            vec![&m.primary.value]
        }
        (Action::DeleteFailoverGroup { .. }, "delete_group.promote") => vec![&m.secondary.value],
        _ => vec![],
    };
    for inst in needs_running {
        tracing::debug!(step, instance = %inst.id, "making sure the server runs");
        let spec = o.server_spec(inst).await?;
        agent
            .ensure_running(&spec, inst.generation)
            .await
            .map_err(engine(step))?;
    }
    match (&op.action, step) {
        (Action::CreateFailoverGroup { .. }, "create_group.align") => {
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
                    .map_err(engine(step))?;
            }
        }
        (Action::CreateFailoverGroup { .. }, "create_group.slot") => {
            let spec = o.server_spec(&m.primary.value).await?;
            agent
                .ensure_slot(&spec, &group.slot, m.primary.value.generation)
                .await
                .map_err(engine(step))?;
        }
        (Action::CreateFailoverGroup { .. }, "create_group.seed") => {
            let spec = o.server_spec(&m.secondary.value).await?;
            let source = o
                .replication_source(&m.primary.value, &m.secondary.value.uid, &group.slot)
                .await?;
            let latest = Arc::new(Mutex::new(SeedProgress::default()));
            let (stop, done) = tokio::sync::oneshot::channel();
            let writer = o.progress_writer(name.to_string(), latest.clone(), done);
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
            result.map_err(engine(step))?;
        }
        (Action::CreateFailoverGroup { .. }, "create_group.link") => {
            o.link_group(&m.primary.value, &m.secondary.value).await?;
        }
        (Action::CreateFailoverGroup { .. }, "create_group.finish") => {
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
                    catalog::group_key(name),
                    &g,
                    Precondition::Revision(m.group.revision),
                ),
                catalog::event_write(name, &created),
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
        (Action::UpdateFailoverGroup { policies, .. }, "update_group.finish") => {
            let mut g = group.clone();
            g.policies = policies.clone();
            g.active_operation = None;
            return Ok(Outcome::Finished(vec![put(
                catalog::group_key(name),
                &g,
                Precondition::Revision(m.group.revision),
            )]));
        }
        (Action::DeleteFailoverGroup { .. }, "delete_group.promote") => {
            let spec = o.server_spec(&m.secondary.value).await?;
            agent
                .promote(&spec, m.secondary.value.generation)
                .await
                .map_err(engine(step))?;
        }
        (Action::DeleteFailoverGroup { .. }, "delete_group.slot") => {
            let spec = o.server_spec(&m.primary.value).await?;
            // A primary that is down keeps its slot; that is harmless once no standby uses
            // it, and is logged rather than blocking the delete.
            if let Err(e) = agent
                .drop_slot(&spec, &group.slot, m.primary.value.generation)
                .await
            {
                tracing::warn!(group = name, error = %e, "could not drop the replication slot");
            }
        }
        (Action::DeleteFailoverGroup { .. }, "delete_group.unlink") => {
            // Both are stand-alone and writable now: neither has a geo link any more.
            for inst in [&m.primary.value, &m.secondary.value] {
                if let Err(e) = o.unlink_instance(inst).await {
                    tracing::warn!(instance = %inst.id, error = %e, "removing the geo link failed");
                }
            }
        }
        (Action::DeleteFailoverGroup { .. }, "delete_group.finish") => {
            let mut writes = vec![
                Write::delete(
                    catalog::group_key(name),
                    Precondition::Revision(m.group.revision),
                ),
                Write::delete(catalog::observed_key(name), Precondition::Any),
            ];
            writes.extend(detach_members(&[
                (m.primary.clone(), name),
                (m.secondary.clone(), name),
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
        (Action::FailoverGroup { planned, .. }, step) if step.starts_with("failover.") => {
            return crate::failover::execute(o, op, &m.group, &m.primary, &m.secondary, *planned)
                .await;
        }
        (Action::RejoinGroup { .. }, step) if step.starts_with("rejoin.") => {
            return crate::failover::rejoin(o, op, &m.group, &m.primary, &m.secondary).await;
        }
        (_, step) => return Err(ArmError::internal(format!("unknown step '{step}'"))),
    }
    Ok(Outcome::Continue)
}

/// Leaves a group consistent after a failed operation. A failed create removes the group:
/// the slot is dropped, a secondary that was already seeded is promoted to stand alone,
/// and the secondary's credentials are whatever its server actually accepts.
pub(crate) async fn compensate(o: &Orchestrator, op: &OperationRecord) -> Vec<Write> {
    let name = group_name(&op.action);
    let Ok(m) = o.members(name).await else {
        return vec![];
    };
    if m.group.value.active_operation.as_deref() != Some(op.id.as_str()) {
        return vec![];
    }
    match &op.action {
        Action::CreateFailoverGroup { .. } => {
            let agent = o.agent.as_ref();
            let mut writes = vec![Write::delete(
                catalog::group_key(name),
                Precondition::Revision(m.group.revision),
            )];
            writes.extend(detach_members(&[
                (m.primary.clone(), name),
                (m.secondary.clone(), name),
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
                            // database on it now is a copy of the primary's, which no
                            // record names (and which would keep it from ever joining a
                            // group again).
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
            writes
        }
        Action::FailoverGroup { .. } => {
            crate::failover::compensate(
                o,
                op,
                &m.group,
                &m.primary,
                &m.secondary,
                POINT_OF_NO_RETURN,
            )
            .await
        }
        _ => {
            let mut g = m.group.value.clone();
            g.active_operation = None;
            // A delete that failed after promoting the secondary (its reply lost) leaves
            // it writable: say so, so that it is never read from as a replica and the
            // health monitor re-attaches it.
            if matches!(op.action, Action::DeleteFailoverGroup { .. }) {
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
            }
            vec![put(
                catalog::group_key(name),
                &g,
                Precondition::Revision(m.group.revision),
            )]
        }
    }
}
