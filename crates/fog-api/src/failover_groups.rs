//! Instance failover groups (`…/locations/{loc}/instanceFailoverGroups[/{name}]`): list
//! (paged), get, events (a fogd extension), create or update (PUT), planned and forced
//! failover (POST), delete. A group is addressed from either member's (resource group,
//! location) and is shown from that side.

use crate::context::Ctx;
use crate::respond::{json, query_param, store_err};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use fog_model::api_version::ResourceType;
use fog_model::failover_group::{GroupBody, ListenerAddresses, ReplicationState};
use fog_model::{body, ArmError, FailoverGroupRecord, Scope, Side};
use fog_orchestrator::{catalog, GroupAddress};

/// `GET …/instanceFailoverGroups/{name}`.
pub(crate) async fn get(
    ctx: &Ctx<'_>,
    scope: &Scope,
    location: &str,
    name: &str,
) -> Result<Response, ArmError> {
    let (g, side) = ctx.group(scope, location, name).await?;
    Ok(json(StatusCode::OK, ctx.group_view(&g, side).await?))
}

/// `GET …/instanceFailoverGroups/{name}/events`: the group's history.
pub(crate) async fn events(
    ctx: &Ctx<'_>,
    scope: &Scope,
    location: &str,
    name: &str,
) -> Result<Response, ArmError> {
    let (g, _) = ctx.group(scope, location, name).await?;
    let events = catalog::events(ctx.api.orch.store().as_ref(), &g.uid)
        .await
        .map_err(store_err)?;
    let value: Vec<_> = events.iter().map(|e| e.view()).collect();
    Ok(json(StatusCode::OK, serde_json::json!({ "value": value })))
}

/// `PUT …/instanceFailoverGroups/{name}`.
pub(crate) async fn put(
    ctx: &Ctx<'_>,
    addr: GroupAddress,
    name: &str,
    bytes: &[u8],
) -> Result<Response, ArmError> {
    let api = ctx.api;
    let spec = body::parse::<GroupBody>(bytes)
        .map_err(|e| {
            // An unparsable body (empty, malformed or cut short) is the catalogue's "empty
            // or invalid" error.
            if e.target.is_none() {
                ArmError::ifog_invalid_request()
            } else {
                e
            }
        })?
        .into_spec_for(api.orch.config().min_grace_minutes, &ctx.api_version)?;
    let op = api
        .orch
        .put_failover_group(&addr, name, spec, &ctx.api_version)
        .await?;
    Ok(ctx.accepted(&op))
}

/// `POST …/{name}/failover` (`planned`) or `…/{name}/forceFailoverAllowDataLoss`.
pub(crate) async fn failover(
    ctx: &Ctx<'_>,
    addr: GroupAddress,
    name: &str,
    planned: bool,
) -> Result<Response, ArmError> {
    let op = ctx
        .api
        .orch
        .failover_group(&addr, name, planned, &ctx.api_version)
        .await?;
    Ok(ctx.accepted(&op))
}

/// `DELETE …/instanceFailoverGroups/{name}`: 202, or 204 when there is no such group.
pub(crate) async fn delete(
    ctx: &Ctx<'_>,
    addr: GroupAddress,
    name: &str,
) -> Result<Response, ArmError> {
    let op = ctx
        .api
        .orch
        .delete_failover_group(&addr, name, &ctx.api_version)
        .await?;
    Ok(ctx.deleted(op))
}

impl Ctx<'_> {
    /// The group named in a path, and which member the path's address is: the group of
    /// that name with a member at the address (groups of that name elsewhere are others).
    async fn group(
        &self,
        scope: &Scope,
        location: &str,
        name: &str,
    ) -> Result<(FailoverGroupRecord, Side), ArmError> {
        catalog::group_at(
            self.api.orch.store().as_ref(),
            &scope.subscription,
            &scope.resource_group,
            location,
            name,
        )
        .await
        .map_err(store_err)?
        .map(|(g, side)| (g.value, side))
        .ok_or_else(|| {
            ArmError::child_resource_not_found(fog_model::failover_group::RESOURCE_TYPE, name)
        })
    }

    /// The group as seen from `side`. The replication state is the one a running
    /// operation sets while it seeds, otherwise what the health monitor last saw; health and
    /// lag come from the monitor's observation under the group's current generation.
    pub(crate) async fn group_view(
        &self,
        g: &FailoverGroupRecord,
        side: Side,
    ) -> Result<serde_json::Value, ArmError> {
        let observed = catalog::observed(self.api.orch.store().as_ref(), &g.uid)
            .await
            .map_err(store_err)?;
        let state = match (&observed, g.replication_state) {
            (_, s @ (ReplicationState::Pending | ReplicationState::Seeding)) => s,
            (Some(o), _) => o.replication_state,
            (None, s) => s,
        };
        let addresses = ListenerAddresses {
            host: self.api.orch.config().listener_host.clone(),
            dns_suffix: self.api.config.dns_suffix.clone(),
        };
        let mut view = g.view(side, state, &addresses);
        if let Some(o) = observed.filter(|o| o.generation == g.generation) {
            o.view_properties(&mut view["properties"]);
        }
        Ok(self.shaped(ResourceType::InstanceFailoverGroups, view))
    }
}

/// `GET …/instanceFailoverGroups`: the groups with a member at the address, paged by
/// `$skipToken` (an offset).
pub(crate) async fn list(
    ctx: &Ctx<'_>,
    scope: &Scope,
    location: &str,
    uri: &Uri,
) -> Result<Response, ArmError> {
    const PAGE: usize = 100;
    let skip: usize = query_param(uri, "$skipToken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let groups = catalog::groups(ctx.api.orch.store().as_ref())
        .await
        .map_err(store_err)?;
    let mut mine: Vec<_> = groups
        .into_iter()
        .filter_map(|g| {
            let side = g
                .value
                .side(&scope.subscription, &scope.resource_group, location)?;
            Some((g.value, side))
        })
        .collect();
    // By name (the store orders groups by uid), so pages are stable and read naturally.
    mine.sort_by(|(a, _), (b, _)| (a.name.as_str(), &a.uid).cmp(&(b.name.as_str(), &b.uid)));
    let mut value = Vec::new();
    for (g, side) in mine.iter().skip(skip).take(PAGE) {
        value.push(ctx.group_view(g, *side).await?);
    }
    let mut body = serde_json::json!({ "value": value });
    if skip + PAGE < mine.len() {
        body["nextLink"] = format!(
            "{}{}/providers/Microsoft.Sql/locations/{}/instanceFailoverGroups?api-version={}&$skipToken={}",
            ctx.base, scope.path(), location.replace(' ', "%20"), ctx.api_version, skip + PAGE
        ).into();
    }
    Ok(json(StatusCode::OK, body))
}
