//! Managed databases (`…/managedInstances/{name}/databases[/{db}]`): list and get as seen
//! from an instance (a failover-group member sees its partner's databases too, with the
//! group's id from its side), create or update (PUT), update (PATCH), delete.

use crate::context::Ctx;
use crate::respond::{json, store_err};
use axum::http::StatusCode;
use axum::response::Response;
use fog_model::api_version::ResourceType;
use fog_model::database::DatabaseBody;
use fog_model::{body, ArmError, ManagedInstanceId};
use fog_orchestrator::{catalog, DatabaseCreate};

/// `GET …/databases`.
pub(crate) async fn list(ctx: &Ctx<'_>, id: &ManagedInstanceId) -> Result<Response, ArmError> {
    let inst = ctx.parent(id).await?;
    let list = catalog::databases_of_group_member(ctx.api.orch.store().as_ref(), &inst)
        .await
        .map_err(store_err)?;
    let fog_id = ctx.group_id_seen_from(&inst).await?;
    let value: Vec<_> = list
        .iter()
        .map(|d| {
            ctx.shaped(
                ResourceType::ManagedDatabases,
                d.value.view_as(&inst.id, &inst.location, fog_id.as_deref()),
            )
        })
        .collect();
    Ok(json(StatusCode::OK, serde_json::json!({ "value": value })))
}

/// `GET …/databases/{db}`.
pub(crate) async fn get(
    ctx: &Ctx<'_>,
    id: &ManagedInstanceId,
    db: &str,
) -> Result<Response, ArmError> {
    let inst = ctx.parent(id).await?;
    let view = ctx.database_seen_from(&inst, db).await?;
    Ok(json(StatusCode::OK, view))
}

/// `PUT …/databases/{db}`: a create, or on an existing database a replacement of what
/// may change (its tags).
pub(crate) async fn put(
    ctx: &Ctx<'_>,
    id: &ManagedInstanceId,
    db: &str,
    bytes: &[u8],
) -> Result<Response, ArmError> {
    let api = ctx.api;
    fog_model::names::validate_database_name(db)?;
    let inst = ctx.parent(id).await?;
    let parsed = body::parse::<DatabaseBody>(bytes)?;
    if let Some(existing) = catalog::database(api.orch.store().as_ref(), id, db)
        .await
        .map_err(store_err)?
    {
        let changes = parsed.into_changes(&existing.value, true)?;
        let op = api
            .orch
            .update_database(id, db, changes, &ctx.api_version)
            .await?;
        return Ok(ctx.accepted(&op));
    }
    let spec = parsed.into_create_spec(&inst.location)?;
    match api
        .orch
        .create_database(id, db, spec, &ctx.api_version)
        .await?
    {
        DatabaseCreate::Started(op) => Ok(ctx.accepted(&op)),
        DatabaseCreate::Exists(rec) => Ok(json(
            StatusCode::OK,
            ctx.shaped(ResourceType::ManagedDatabases, rec.view()),
        )),
    }
}

/// `PATCH …/databases/{db}`.
pub(crate) async fn patch(
    ctx: &Ctx<'_>,
    id: &ManagedInstanceId,
    db: &str,
    bytes: &[u8],
) -> Result<Response, ArmError> {
    let api = ctx.api;
    ctx.parent(id).await?;
    let parsed = body::parse::<DatabaseBody>(bytes)?;
    let changes = match catalog::database(api.orch.store().as_ref(), id, db)
        .await
        .map_err(store_err)?
    {
        Some(existing) => parsed.into_changes(&existing.value, false)?,
        // Not this instance's: the orchestrator refuses it through a geo-secondary (the
        // database is its primary's), else reports it missing.
        None => Default::default(),
    };
    let op = api
        .orch
        .update_database(id, db, changes, &ctx.api_version)
        .await?;
    Ok(ctx.accepted(&op))
}

/// `DELETE …/databases/{db}`: 202, or 204 when there is no such database.
pub(crate) async fn delete(
    ctx: &Ctx<'_>,
    id: &ManagedInstanceId,
    db: &str,
) -> Result<Response, ArmError> {
    let op = ctx
        .api
        .orch
        .delete_database(id, db, &ctx.api_version)
        .await?;
    Ok(ctx.deleted(op))
}

impl Ctx<'_> {
    /// A database as seen through `inst` (a group member sees its partner's too), or 404.
    async fn database_seen_from(
        &self,
        inst: &fog_model::InstanceRecord,
        db: &str,
    ) -> Result<serde_json::Value, ArmError> {
        let list = catalog::databases_of_group_member(self.api.orch.store().as_ref(), inst)
            .await
            .map_err(store_err)?;
        let rec = list
            .into_iter()
            .find(|d| d.value.name.eq_ignore_ascii_case(db))
            .ok_or_else(|| ArmError::managed_database_not_found(db))?;
        let fog_id = self.group_id_seen_from(inst).await?;
        Ok(self.shaped(
            ResourceType::ManagedDatabases,
            rec.value
                .view_as(&inst.id, &inst.location, fog_id.as_deref()),
        ))
    }

    /// `failoverGroupId` for databases seen through `inst`: the group's id from its side.
    async fn group_id_seen_from(
        &self,
        inst: &fog_model::InstanceRecord,
    ) -> Result<Option<String>, ArmError> {
        let Some(uid) = &inst.failover_group else {
            return Ok(None);
        };
        let Some(g) = catalog::group(self.api.orch.store().as_ref(), uid)
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let member = if g.value.primary.instance.key() == inst.id.key() {
            &g.value.primary
        } else {
            &g.value.secondary
        };
        Ok(Some(format!(
            "{}/providers/Microsoft.Sql/locations/{}/instanceFailoverGroups/{}",
            member.instance.scope.path(),
            member.location_label.replace(' ', ""),
            g.value.name
        )))
    }
}
