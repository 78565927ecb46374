//! Managed instances: create, update, delete.
//!
//! | operation | steps | undo |
//! | --- | --- | --- |
//! | create | `initialize` (initdb) → `start` → `login` (administrator and replication roles) → `finish` | the server and the record are removed |
//! | update | `apply` (a new administrator password) → `finish` | the old record stays, no longer busy |
//! | delete | `destroy` (stop, remove the files) → `finish` | the record stays, `Failed`, no longer busy |

use super::prelude::*;
use fog_model::{InstanceRecord, ManagedInstanceId, ProvisioningState};
use fog_store::typed::Versioned;

step_enum! {
    pub(crate) enum CreateStep in "create_instance" {
        Initialize = "initialize",
        Start = "start",
        Login = "login",
        Finish = "finish",
    }
}

step_enum! {
    pub(crate) enum UpdateStep in "update_instance" {
        Apply = "apply",
        Finish = "finish",
    }
}

step_enum! {
    pub(crate) enum DeleteStep in "delete_instance" {
        Destroy = "destroy",
        Finish = "finish",
    }
}

pub(crate) struct CreateInstance;
pub(crate) struct UpdateInstance;
pub(crate) struct DeleteInstance;

fn instance_id(action: &Action) -> Result<&ManagedInstanceId, StepError> {
    match action {
        Action::CreateInstance { instance, .. }
        | Action::UpdateInstance { instance, .. }
        | Action::DeleteInstance { instance } => Ok(instance),
        other => Err(StepError::Fail(ArmError::internal(format!(
            "not an instance operation: {other:?}"
        )))),
    }
}

/// The instance record the operation works on, with its server's address.
async fn load(
    o: &Orchestrator,
    id: &ManagedInstanceId,
) -> Result<(Versioned<InstanceRecord>, fog_engine::ServerSpec), StepError> {
    let inst = catalog::instance(o.store.as_ref(), id)
        .await
        .map_err(store_err)?
        .ok_or_else(ArmError::operation_interrupted)?;
    let spec = o.server_spec(&inst.value).await?;
    Ok((inst, spec))
}

/// The instance, if this operation still owns it.
async fn owned(
    o: &Orchestrator,
    op: &OperationRecord,
) -> Result<Option<Versioned<InstanceRecord>>, StepError> {
    let id = instance_id(&op.action)?;
    let inst = catalog::instance(o.store.as_ref(), id)
        .await
        .map_err(store_err)?;
    Ok(inst.filter(|i| i.value.active_operation.as_deref() == Some(op.id.as_str())))
}

#[async_trait]
impl OperationType for CreateInstance {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        CreateStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = CreateStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let Action::CreateInstance {
            instance,
            admin_password_verifier,
        } = &op.action
        else {
            return Err(unknown_step(&op.step));
        };
        let (inst, spec) = load(o, instance).await?;
        let gen = inst.value.generation;
        let agent = o.agent.as_ref();
        let name = step.name();
        match step {
            CreateStep::Initialize => agent
                .ensure_initialized(&spec, gen)
                .await
                .map_err(engine_error(name))?,
            CreateStep::Start => agent
                .ensure_running(&spec, gen)
                .await
                .map_err(engine_error(name))?,
            CreateStep::Login => {
                agent
                    .ensure_login(
                        &spec,
                        &inst.value.administrator_login,
                        admin_password_verifier,
                        gen,
                    )
                    .await
                    .map_err(engine_error(name))?;
                let secret = catalog::secret(o.store.as_ref(), &o.secrets, &inst.value.uid)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| ArmError::internal("the instance's credentials are missing"))?;
                let verifier = fog_engine::scram_verifier(&secret.replication_password);
                agent
                    .ensure_replication_role(&spec, &verifier, gen)
                    .await
                    .map_err(engine_error(name))?;
            }
            CreateStep::Finish => {
                let mut rec = inst.value;
                rec.provisioning_state = ProvisioningState::Succeeded;
                rec.active_operation = None;
                return Ok(Outcome::Finished(vec![put(
                    catalog::instance_key(instance),
                    &rec,
                    Precondition::Revision(inst.revision),
                )]));
            }
        }
        Ok(Outcome::Continue)
    }

    /// A failed create leaves nothing behind: the server and the records go. If the server
    /// cannot be removed, deleting the record would leak it (nothing would name it again):
    /// the record stays, `Failed` and not busy, for a DELETE to finish.
    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        let Some(inst) = owned(o, op).await? else {
            return Ok(vec![]);
        };
        let spec = o.server_spec(&inst.value).await?;
        if let Err(e) = o.agent.destroy(&spec, inst.value.generation).await {
            tracing::error!(instance = %inst.value.id, error = %e, "removing a failed instance's server failed");
            return release(o, op, ProvisioningState::Failed).await;
        }
        Ok(vec![
            Write::delete(
                catalog::instance_key(&inst.value.id),
                Precondition::Revision(inst.revision),
            ),
            Write::delete(catalog::secret_key(&inst.value.uid), Precondition::Any),
        ])
    }
}

#[async_trait]
impl OperationType for UpdateInstance {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        UpdateStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = UpdateStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let Action::UpdateInstance {
            instance,
            target,
            admin_password_verifier,
        } = &op.action
        else {
            return Err(unknown_step(&op.step));
        };
        let (inst, spec) = load(o, instance).await?;
        let gen = inst.value.generation;
        let agent = o.agent.as_ref();
        match step {
            UpdateStep::Apply => {
                if let Some(v) = admin_password_verifier {
                    agent
                        .ensure_running(&spec, gen)
                        .await
                        .map_err(engine_error(step.name()))?;
                    agent
                        .ensure_login(&spec, &inst.value.administrator_login, v, gen)
                        .await
                        .map_err(engine_error(step.name()))?;
                }
            }
            UpdateStep::Finish => {
                let mut rec = (**target).clone();
                // Fields others may have changed since the request was accepted stay as they are.
                rec.endpoint = inst.value.endpoint.clone();
                rec.generation = inst.value.generation;
                rec.failover_group = inst.value.failover_group.clone();
                rec.active_operation = None;
                rec.provisioning_state = ProvisioningState::Succeeded;
                return Ok(Outcome::Finished(vec![put(
                    catalog::instance_key(instance),
                    &rec,
                    Precondition::Revision(inst.revision),
                )]));
            }
        }
        Ok(Outcome::Continue)
    }

    /// A failed update leaves the record as it was, no longer busy.
    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        release(o, op, ProvisioningState::Succeeded).await
    }
}

#[async_trait]
impl OperationType for DeleteInstance {
    fn steps(&self, _: &Action) -> &'static [&'static str] {
        DeleteStep::NAMES
    }

    async fn execute(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Outcome, StepError> {
        let step = DeleteStep::parse(&op.step).ok_or_else(|| unknown_step(&op.step))?;
        let instance = instance_id(&op.action)?;
        let (inst, spec) = load(o, instance).await?;
        match step {
            DeleteStep::Destroy => o
                .agent
                .destroy(&spec, inst.value.generation)
                .await
                .map_err(engine_error(step.name()))?,
            DeleteStep::Finish => {
                let mut writes = vec![
                    Write::delete(
                        catalog::instance_key(instance),
                        Precondition::Revision(inst.revision),
                    ),
                    Write::delete(catalog::secret_key(&inst.value.uid), Precondition::Any),
                ];
                for db in catalog::databases(o.store.as_ref(), instance)
                    .await
                    .map_err(store_err)?
                {
                    writes.push(Write::delete(
                        catalog::database_key(instance, &db.value.name),
                        Precondition::Revision(db.revision),
                    ));
                }
                return Ok(Outcome::Finished(writes));
            }
        }
        Ok(Outcome::Continue)
    }

    /// A failed delete leaves the record, `Failed`, no longer busy.
    async fn undo(&self, o: &Orchestrator, op: &OperationRecord) -> Result<Vec<Write>, StepError> {
        release(o, op, ProvisioningState::Failed).await
    }
}

/// The owned record, no longer busy, in `state`.
async fn release(
    o: &Orchestrator,
    op: &OperationRecord,
    state: ProvisioningState,
) -> Result<Vec<Write>, StepError> {
    let Some(inst) = owned(o, op).await? else {
        return Ok(vec![]);
    };
    let mut rec = inst.value;
    rec.active_operation = None;
    rec.provisioning_state = state;
    Ok(vec![put(
        catalog::instance_key(&rec.id),
        &rec,
        Precondition::Revision(inst.revision),
    )])
}
