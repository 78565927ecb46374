//! Managed databases: create, update and delete.
//!
//! | operation | steps | undo |
//! | --- | --- | --- |
//! | create | `create` (`CREATE DATABASE`; on a group's primary also its geo link) → `finish` | the database is dropped and the record removed |
//! | update | `finish` (the record takes the new tags: metadata only, nothing on the server) | the record stays as it was, no longer busy |
//! | delete | `drop` (`DROP DATABASE … WITH (FORCE)`) → `finish` | the record stays, no longer busy |

use super::prelude::*;
use fog_model::{DatabaseRecord, DatabaseStatus, InstanceRecord, ManagedInstanceId};
use fog_store::typed::Versioned;

step_enum! {
    pub(crate) enum CreateStep in "create_database" {
        Create = "create",
        Finish = "finish",
    }
}

step_enum! {
    pub(crate) enum UpdateStep in "update_database" {
        Finish = "finish",
    }
}

step_enum! {
    pub(crate) enum DeleteStep in "delete_database" {
        Drop = "drop",
        Finish = "finish",
    }
}

pub(crate) struct CreateDatabase;
pub(crate) struct UpdateDatabase;
pub(crate) struct DeleteDatabase;

fn target(action: &Action) -> Result<(&ManagedInstanceId, &str), StepError> {
    match action {
        Action::CreateDatabase { instance, database }
        | Action::UpdateDatabase {
            instance, database, ..
        }
        | Action::DeleteDatabase { instance, database } => Ok((instance, database)),
        other => Err(StepError::Fail(ArmError::internal(format!(
            "not a database operation: {other:?}"
        )))),
    }
}

/// The instance the database lives on, with its server's address, running (after a
/// restart of fogd the supervisor may still be starting it).
async fn running_instance(
    o: &Orchestrator,
    id: &ManagedInstanceId,
    step: &str,
) -> Result<(Versioned<InstanceRecord>, fog_engine::ServerSpec), StepError> {
    let inst = catalog::instance(o.store.as_ref(), id)
        .await
        .map_err(store_err)?
        .ok_or_else(ArmError::operation_interrupted)?;
    let spec = o.server_spec(&inst.value).await?;
    o.agent
        .ensure_running(&spec, inst.value.generation)
        .await
        .map_err(engine_error(step))?;
    Ok((inst, spec))
}

/// The database record, if this operation still owns it.
async fn owned(
    o: &Orchestrator,
    op: &OperationRecord,
) -> Result<Option<Versioned<DatabaseRecord>>, StepError> {
    let (instance, database) = target(&op.action)?;
    let db = catalog::database(o.store.as_ref(), instance, database)
        .await
        .map_err(store_err)?;
    Ok(db.filter(|d| d.value.active_operation.as_deref() == Some(op.id.as_str())))
}

#[async_trait]
impl OperationType for CreateDatabase {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        CreateStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = CreateStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let (instance, database) = target(&op.action)?;
        let store = o.store.as_ref();
        match step {
            CreateStep::Create => {
                let (inst, spec) = running_instance(o, instance, step.name()).await?;
                let gen = inst.value.generation;
                o.agent
                    .create_database(&spec, database, gen)
                    .await
                    .map_err(engine_error(step.name()))?;
                // A new database on a group's primary gets its geo link at once.
                if let Some(uid) = &inst.value.failover_group {
                    if let Some(g) = catalog::group(store, uid).await.map_err(store_err)? {
                        if g.value.primary.instance.key() == instance.key() {
                            let secondary = catalog::instance(store, &g.value.secondary.instance)
                                .await
                                .map_err(store_err)?
                                .ok_or_else(ArmError::operation_interrupted)?;
                            let app = format!("fogd_{}", secondary.value.uid);
                            o.agent
                                .install_geo_link(
                                    &spec,
                                    database,
                                    &secondary.value.id.name,
                                    &secondary.value.dns_zone,
                                    &app,
                                    gen,
                                )
                                .await
                                .map_err(engine_error(step.name()))?;
                        }
                    }
                }
            }
            CreateStep::Finish => {
                let db = catalog::database(store, instance, database)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(ArmError::operation_interrupted)?;
                let mut rec = db.value;
                rec.status = DatabaseStatus::Online;
                rec.active_operation = None;
                return Ok(Outcome::Finished(vec![put(
                    catalog::database_key(instance, database),
                    &rec,
                    Precondition::Revision(db.revision),
                )]));
            }
        }
        Ok(Outcome::Continue)
    }

    /// A failed create leaves no database: dropped on the server (where it may exist),
    /// and the record removed.
    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        let Some(db) = owned(o, op).await? else {
            return Ok(vec![]);
        };
        let (instance, database) = target(&op.action)?;
        if let Some(inst) = catalog::instance(o.store.as_ref(), instance)
            .await
            .map_err(store_err)?
        {
            let spec = o.server_spec(&inst.value).await?;
            // A server that is down has nothing to drop; one that is up must not keep it.
            if let Err(e) = o
                .agent
                .drop_database(&spec, database, inst.value.generation)
                .await
            {
                tracing::warn!(database, error = %e, "dropping a database whose creation failed");
            }
        }
        Ok(vec![Write::delete(
            catalog::database_key(instance, database),
            Precondition::Revision(db.revision),
        )])
    }
}

#[async_trait]
impl OperationType for UpdateDatabase {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        UpdateStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = UpdateStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let Action::UpdateDatabase {
            instance,
            database,
            tags,
        } = &op.action
        else {
            return Err(StepError::Fail(ArmError::internal(format!(
                "not a database update: {:?}",
                op.action
            ))));
        };
        match step {
            UpdateStep::Finish => {
                let db = owned(o, op)
                    .await?
                    .ok_or_else(|| StepError::WorldChanged(ArmError::operation_interrupted()))?;
                let mut rec = db.value;
                rec.tags = tags.clone();
                rec.active_operation = None;
                Ok(Outcome::Finished(vec![put(
                    catalog::database_key(instance, database),
                    &rec,
                    Precondition::Revision(db.revision),
                )]))
            }
        }
    }

    /// A failed update changes nothing: the record keeps its tags, no longer busy.
    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        let Some(db) = owned(o, op).await? else {
            return Ok(vec![]);
        };
        let (instance, database) = target(&op.action)?;
        let mut rec = db.value;
        rec.active_operation = None;
        Ok(vec![put(
            catalog::database_key(instance, database),
            &rec,
            Precondition::Revision(db.revision),
        )])
    }
}

#[async_trait]
impl OperationType for DeleteDatabase {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        DeleteStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = DeleteStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let (instance, database) = target(&op.action)?;
        match step {
            DeleteStep::Drop => {
                let (inst, spec) = running_instance(o, instance, step.name()).await?;
                o.agent
                    .drop_database(&spec, database, inst.value.generation)
                    .await
                    .map_err(engine_error(step.name()))?
            }
            DeleteStep::Finish => {
                return Ok(Outcome::Finished(vec![Write::delete(
                    catalog::database_key(instance, database),
                    Precondition::Any,
                )]));
            }
        }
        Ok(Outcome::Continue)
    }

    /// A failed delete keeps the record, no longer busy — unless the drop happened although
    /// its step failed (its reply was lost): then the record goes too, rather than name a
    /// database that no longer exists.
    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        let Some(db) = owned(o, op).await? else {
            return Ok(vec![]);
        };
        let (instance, database) = target(&op.action)?;
        if database_gone(o, instance, database).await {
            return Ok(vec![Write::delete(
                catalog::database_key(instance, database),
                Precondition::Revision(db.revision),
            )]);
        }
        let mut rec = db.value;
        rec.active_operation = None;
        Ok(vec![put(
            catalog::database_key(instance, database),
            &rec,
            Precondition::Revision(db.revision),
        )])
    }
}

/// Whether the instance's server answers and has no database `name`.
async fn database_gone(o: &Orchestrator, instance: &ManagedInstanceId, name: &str) -> bool {
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
