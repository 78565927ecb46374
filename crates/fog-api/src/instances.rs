//! Managed instances (`…/Microsoft.Sql/managedInstances[/{name}]`): list (by resource
//! group or subscription), get, create or update (PUT), update (PATCH), delete.

use crate::context::Ctx;
use crate::respond::{json, store_err};
use axum::http::StatusCode;
use axum::response::Response;
use fog_model::api_version::ResourceType;
use fog_model::instance::InstanceBody;
use fog_model::{body, ArmError, ManagedInstanceId, Scope};
use fog_orchestrator::catalog;

/// `GET …/managedInstances`: the instances of a resource group, or of the subscription
/// when `scope` is `None`.
pub(crate) async fn list(
    ctx: &Ctx<'_>,
    subscription: &str,
    scope: Option<&Scope>,
) -> Result<Response, ArmError> {
    let api = ctx.api;
    let list = catalog::instances(api.orch.store().as_ref(), scope, subscription)
        .await
        .map_err(store_err)?;
    let value: Vec<_> = list
        .iter()
        .map(|r| {
            ctx.shaped(
                ResourceType::ManagedInstances,
                r.view(&api.config.dns_suffix),
            )
        })
        .collect();
    Ok(json(StatusCode::OK, serde_json::json!({ "value": value })))
}

/// `GET …/managedInstances/{name}`.
pub(crate) async fn get(ctx: &Ctx<'_>, id: &ManagedInstanceId) -> Result<Response, ArmError> {
    let rec = ctx.instance(id).await?;
    Ok(json(
        StatusCode::OK,
        ctx.shaped(
            ResourceType::ManagedInstances,
            rec.view(&ctx.api.config.dns_suffix),
        ),
    ))
}

/// `PUT …/managedInstances/{name}`: an update of an existing instance, else a create.
pub(crate) async fn put(
    ctx: &Ctx<'_>,
    id: ManagedInstanceId,
    bytes: &[u8],
) -> Result<Response, ArmError> {
    let parsed =
        body::parse_for::<InstanceBody>(bytes, ResourceType::ManagedInstances, &ctx.api_version)?;
    let existing = catalog::instance(ctx.api.orch.store().as_ref(), &id)
        .await
        .map_err(store_err)?;
    let op = match existing {
        Some(existing) => {
            let changes = parsed.into_changes(&existing.value)?;
            ctx.api
                .orch
                .update_instance(&id, changes, &ctx.api_version)
                .await?
        }
        None => {
            fog_model::names::validate_instance_name(&id.name)?;
            let spec = parsed.into_create_spec()?;
            ctx.api
                .orch
                .create_instance(id, spec, &ctx.api_version)
                .await?
        }
    };
    Ok(ctx.accepted(&op))
}

/// `PATCH …/managedInstances/{name}`.
pub(crate) async fn patch(
    ctx: &Ctx<'_>,
    id: &ManagedInstanceId,
    bytes: &[u8],
) -> Result<Response, ArmError> {
    let existing = ctx.instance(id).await?;
    let changes =
        body::parse_for::<InstanceBody>(bytes, ResourceType::ManagedInstances, &ctx.api_version)?
            .into_changes(&existing)?;
    let op = ctx
        .api
        .orch
        .update_instance(id, changes, &ctx.api_version)
        .await?;
    Ok(ctx.accepted(&op))
}

/// `DELETE …/managedInstances/{name}`: 202, or 204 when there is no such instance.
pub(crate) async fn delete(ctx: &Ctx<'_>, id: &ManagedInstanceId) -> Result<Response, ArmError> {
    let op = ctx.api.orch.delete_instance(id, &ctx.api_version).await?;
    Ok(ctx.deleted(op))
}
