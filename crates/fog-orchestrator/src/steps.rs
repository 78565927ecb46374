//! What each operation does, one idempotent step at a time.
//!
//! A step either moves the operation on, or — for the last step — returns the store writes
//! that publish its result; the runner commits those together with the operation's final
//! status. When a step keeps failing, [`compensate`] returns the writes (after best-effort
//! clean-up) that leave the resource consistent: a failed create leaves nothing behind, a
//! failed update or delete leaves the resource as it was, no longer busy.

use crate::catalog;
use crate::{store_err, Orchestrator};
use fog_model::{Action, ArmError, DatabaseStatus, OperationRecord, ProvisioningState};
use fog_store::typed::put;
use fog_store::{Precondition, Write};

/// Step names per action, in order. Names double as failpoint names.
pub fn step_names(action: &Action) -> &'static [&'static str] {
    if let Some(names) = crate::group_steps::step_names(action) {
        return names;
    }
    match action {
        Action::CreateInstance { .. } => &[
            "create_instance.initialize",
            "create_instance.start",
            "create_instance.login",
            "create_instance.finish",
        ],
        Action::UpdateInstance { .. } => &["update_instance.apply", "update_instance.finish"],
        Action::DeleteInstance { .. } => &["delete_instance.destroy", "delete_instance.finish"],
        Action::CreateDatabase { .. } => &["create_database.create", "create_database.finish"],
        Action::DeleteDatabase { .. } => &["delete_database.drop", "delete_database.finish"],
        Action::CreateFailoverGroup { .. }
        | Action::UpdateFailoverGroup { .. }
        | Action::DeleteFailoverGroup { .. }
        | Action::FailoverGroup { .. }
        | Action::RejoinGroup { .. } => &[],
    }
}

pub fn first_step(action: &Action) -> &'static str {
    step_names(action)[0]
}

/// The step after `step`, or `None` if `step` is the last.
pub fn next_step(action: &Action, step: &str) -> Option<&'static str> {
    let names = step_names(action);
    let i = names.iter().position(|s| *s == step)?;
    names.get(i + 1).copied()
}

/// Progress in percent when `step` is about to run.
pub fn percent(action: &Action, step: &str) -> u8 {
    let names = step_names(action);
    let i = names.iter().position(|s| *s == step).unwrap_or(0);
    (i * 100 / names.len()) as u8
}

pub(crate) enum Outcome {
    /// Run the next step.
    Continue,
    /// Done: commit these writes with the operation's success.
    Finished(Vec<Write>),
}

fn engine(step: &str) -> impl FnOnce(fog_engine::EngineError) -> ArmError + '_ {
    move |e| {
        tracing::warn!(step, error = %e, "step failed");
        ArmError::new(500, "OperationFailed", format!("Step '{step}' failed: {e}"))
    }
}

/// Runs the operation's current step.
pub(crate) async fn execute(o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, ArmError> {
    let store = o.store.as_ref();
    let step = op.step.as_str();
    let instance_id = match &op.action {
        Action::CreateInstance { instance, .. }
        | Action::UpdateInstance { instance, .. }
        | Action::DeleteInstance { instance }
        | Action::CreateDatabase { instance, .. }
        | Action::DeleteDatabase { instance, .. } => instance,
        Action::CreateFailoverGroup { .. }
        | Action::UpdateFailoverGroup { .. }
        | Action::DeleteFailoverGroup { .. }
        | Action::FailoverGroup { .. }
        | Action::RejoinGroup { .. } => return crate::group_steps::execute(o, op).await,
    };
    let inst = catalog::instance(store, instance_id)
        .await
        .map_err(store_err)?
        .ok_or_else(ArmError::operation_interrupted)?;
    let spec = o.server_spec(&inst.value).await?;
    let gen = inst.value.generation;
    let agent = o.agent.as_ref();
    match (&op.action, step) {
        (Action::CreateInstance { .. }, "create_instance.initialize") => agent
            .ensure_initialized(&spec, gen)
            .await
            .map_err(engine(step))?,
        (Action::CreateInstance { .. }, "create_instance.start") => agent
            .ensure_running(&spec, gen)
            .await
            .map_err(engine(step))?,
        (
            Action::CreateInstance {
                admin_password_verifier,
                ..
            },
            "create_instance.login",
        ) => {
            agent
                .ensure_login(
                    &spec,
                    &inst.value.administrator_login,
                    admin_password_verifier,
                    gen,
                )
                .await
                .map_err(engine(step))?;
            let secret = catalog::secret(store, &o.secrets, &inst.value.uid)
                .await
                .map_err(store_err)?
                .ok_or_else(|| ArmError::internal("the instance's credentials are missing"))?;
            let verifier = fog_engine::scram_verifier(&secret.replication_password);
            agent
                .ensure_replication_role(&spec, &verifier, gen)
                .await
                .map_err(engine(step))?;
        }
        (Action::CreateInstance { .. }, "create_instance.finish") => {
            let mut rec = inst.value;
            rec.provisioning_state = ProvisioningState::Succeeded;
            rec.active_operation = None;
            return Ok(Outcome::Finished(vec![put(
                catalog::instance_key(instance_id),
                &rec,
                Precondition::Revision(inst.revision),
            )]));
        }
        (
            Action::UpdateInstance {
                admin_password_verifier,
                ..
            },
            "update_instance.apply",
        ) => {
            if let Some(v) = admin_password_verifier {
                agent
                    .ensure_running(&spec, gen)
                    .await
                    .map_err(engine(step))?;
                agent
                    .ensure_login(&spec, &inst.value.administrator_login, v, gen)
                    .await
                    .map_err(engine(step))?;
            }
        }
        (Action::UpdateInstance { target, .. }, "update_instance.finish") => {
            let mut rec = (**target).clone();
            // Fields others may have changed since the request was accepted stay as they are.
            rec.endpoint = inst.value.endpoint.clone();
            rec.generation = inst.value.generation;
            rec.failover_group = inst.value.failover_group.clone();
            rec.active_operation = None;
            rec.provisioning_state = ProvisioningState::Succeeded;
            return Ok(Outcome::Finished(vec![put(
                catalog::instance_key(instance_id),
                &rec,
                Precondition::Revision(inst.revision),
            )]));
        }
        (Action::DeleteInstance { .. }, "delete_instance.destroy") => {
            agent.destroy(&spec, gen).await.map_err(engine(step))?
        }
        (Action::DeleteInstance { .. }, "delete_instance.finish") => {
            let mut writes = vec![
                Write::delete(
                    catalog::instance_key(instance_id),
                    Precondition::Revision(inst.revision),
                ),
                Write::delete(catalog::secret_key(&inst.value.uid), Precondition::Any),
            ];
            for db in catalog::databases(store, instance_id)
                .await
                .map_err(store_err)?
            {
                writes.push(Write::delete(
                    catalog::database_key(instance_id, &db.value.name),
                    Precondition::Revision(db.revision),
                ));
            }
            return Ok(Outcome::Finished(writes));
        }
        (Action::CreateDatabase { database, .. }, "create_database.create") => {
            // After a restart of fogd the supervisor may still be starting the server.
            agent
                .ensure_running(&spec, gen)
                .await
                .map_err(engine(step))?;
            agent
                .create_database(&spec, database, gen)
                .await
                .map_err(engine(step))?;
            // A new database on a group's primary gets its geo link at once.
            if let Some(name) = &inst.value.failover_group {
                if let Some(g) = catalog::group(store, name).await.map_err(store_err)? {
                    if g.value.primary.instance.key() == instance_id.key() {
                        let secondary = catalog::instance(store, &g.value.secondary.instance)
                            .await
                            .map_err(store_err)?
                            .ok_or_else(ArmError::operation_interrupted)?;
                        let app = format!("fogd_{}", secondary.value.uid);
                        agent
                            .install_geo_link(
                                &spec,
                                database,
                                &secondary.value.id.name,
                                &secondary.value.dns_zone,
                                &app,
                                gen,
                            )
                            .await
                            .map_err(engine(step))?;
                    }
                }
            }
        }
        (Action::CreateDatabase { database, .. }, "create_database.finish") => {
            let db = catalog::database(store, instance_id, database)
                .await
                .map_err(store_err)?
                .ok_or_else(ArmError::operation_interrupted)?;
            let mut rec = db.value;
            rec.status = DatabaseStatus::Online;
            rec.active_operation = None;
            return Ok(Outcome::Finished(vec![put(
                catalog::database_key(instance_id, database),
                &rec,
                Precondition::Revision(db.revision),
            )]));
        }
        (Action::DeleteDatabase { database, .. }, "delete_database.drop") => {
            agent
                .ensure_running(&spec, gen)
                .await
                .map_err(engine(step))?;
            agent
                .drop_database(&spec, database, gen)
                .await
                .map_err(engine(step))?
        }
        (Action::DeleteDatabase { database, .. }, "delete_database.finish") => {
            return Ok(Outcome::Finished(vec![Write::delete(
                catalog::database_key(instance_id, database),
                Precondition::Any,
            )]));
        }
        (action, step) => {
            tracing::error!(?action, step, "unknown step");
            return Err(ArmError::internal(format!("unknown step '{step}'")));
        }
    }
    Ok(Outcome::Continue)
}

/// Clean-up after a step failed for good; returns the writes that make the resource
/// consistent again. Every write is guarded by the operation still owning the resource.
pub(crate) async fn compensate(o: &Orchestrator, op: &OperationRecord) -> Vec<Write> {
    let store = o.store.as_ref();
    let owned = |active: &Option<String>| active.as_deref() == Some(op.id.as_str());
    match &op.action {
        Action::CreateFailoverGroup { .. }
        | Action::UpdateFailoverGroup { .. }
        | Action::DeleteFailoverGroup { .. }
        | Action::FailoverGroup { .. }
        | Action::RejoinGroup { .. } => crate::group_steps::compensate(o, op).await,
        Action::CreateInstance { instance, .. } => {
            let Ok(Some(inst)) = catalog::instance(store, instance).await else {
                return vec![];
            };
            if !owned(&inst.value.active_operation) {
                return vec![];
            }
            if let Ok(spec) = o.server_spec(&inst.value).await {
                if let Err(e) = o.agent.destroy(&spec, inst.value.generation).await {
                    tracing::error!(instance = %instance, error = %e, "removing a failed instance's server failed");
                }
            }
            vec![
                Write::delete(
                    catalog::instance_key(instance),
                    Precondition::Revision(inst.revision),
                ),
                Write::delete(catalog::secret_key(&inst.value.uid), Precondition::Any),
            ]
        }
        Action::UpdateInstance { instance, .. } | Action::DeleteInstance { instance } => {
            let Ok(Some(inst)) = catalog::instance(store, instance).await else {
                return vec![];
            };
            if !owned(&inst.value.active_operation) {
                return vec![];
            }
            let mut rec = inst.value;
            rec.active_operation = None;
            rec.provisioning_state = if matches!(op.action, Action::DeleteInstance { .. }) {
                ProvisioningState::Failed
            } else {
                ProvisioningState::Succeeded
            };
            vec![put(
                catalog::instance_key(instance),
                &rec,
                Precondition::Revision(inst.revision),
            )]
        }
        Action::CreateDatabase { instance, database }
        | Action::DeleteDatabase { instance, database } => {
            let Ok(Some(db)) = catalog::database(store, instance, database).await else {
                return vec![];
            };
            if !owned(&db.value.active_operation) {
                return vec![];
            }
            let key = catalog::database_key(instance, database);
            if matches!(op.action, Action::CreateDatabase { .. }) {
                if let Ok(Some(inst)) = catalog::instance(store, instance).await {
                    if let Ok(spec) = o.server_spec(&inst.value).await {
                        let _ = o
                            .agent
                            .drop_database(&spec, database, inst.value.generation)
                            .await;
                    }
                }
                vec![Write::delete(key, Precondition::Revision(db.revision))]
            } else if database_gone(o, instance, database).await {
                // The drop happened although its step failed (its reply was lost): the
                // record goes too, rather than name a database that no longer exists.
                vec![Write::delete(key, Precondition::Revision(db.revision))]
            } else {
                let mut rec = db.value;
                rec.active_operation = None;
                vec![put(key, &rec, Precondition::Revision(db.revision))]
            }
        }
    }
}

/// Whether the instance's server answers and has no database `name`.
async fn database_gone(
    o: &Orchestrator,
    instance: &fog_model::ManagedInstanceId,
    name: &str,
) -> bool {
    let Ok(Some(inst)) = catalog::instance(o.store.as_ref(), instance).await else {
        return false;
    };
    let Ok(spec) = o.server_spec(&inst.value).await else {
        return false;
    };
    o.agent
        .list_databases(&spec)
        .await
        .is_ok_and(|dbs| !dbs.iter().any(|d| d == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_model::ManagedInstanceId;

    #[test]
    fn steps_advance_in_order_and_report_progress() {
        let id = ManagedInstanceId::parse(
            "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/mi",
        )
        .expect("id");
        let a = Action::CreateInstance {
            instance: id,
            admin_password_verifier: String::new(),
        };
        assert_eq!(first_step(&a), "create_instance.initialize");
        assert_eq!(
            next_step(&a, "create_instance.initialize"),
            Some("create_instance.start")
        );
        assert_eq!(next_step(&a, "create_instance.finish"), None);
        assert_eq!(percent(&a, "create_instance.initialize"), 0);
        assert_eq!(percent(&a, "create_instance.login"), 50);
    }
}
