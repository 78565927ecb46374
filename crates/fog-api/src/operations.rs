//! Long-running operations' polling resources: the status resource
//! (`…/{kind}AzureAsyncOperation/{id}`, always 200 while the operation exists) and the
//! result resource (`…/{kind}OperationResults/{id}`: 202 while it runs, then its outcome).
//! What both return is shaped by the api-version that started the operation.

use crate::context::Ctx;
use crate::respond::{header_value, json, store_err};
use crate::route::OperationView;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fog_model::api_version::ResourceType;
use fog_model::{ArmError, OperationKind, OperationRecord, OperationStatus};
use fog_orchestrator::catalog;

/// `GET` on an operation's status or result resource.
pub(crate) async fn get(
    ctx: Ctx<'_>,
    subscription: &str,
    kind: OperationKind,
    view: OperationView,
    id: &str,
) -> Result<Response, ArmError> {
    let op = catalog::operation(ctx.api.orch.store().as_ref(), id)
        .await
        .map_err(store_err)?
        .map(|v| v.value)
        .filter(|op| op.kind == kind && op.scope.subscription == subscription)
        .ok_or_else(ArmError::operation_id_not_found)?;
    // What the operation returns is shaped by the version that started it.
    let ctx = Ctx {
        api_version: op.api_version.clone(),
        ..ctx
    };
    match view {
        OperationView::Status => ctx.operation_status(&op).await,
        OperationView::Result => ctx.operation_result(&op).await,
    }
}

impl Ctx<'_> {
    async fn operation_status(&self, op: &OperationRecord) -> Result<Response, ArmError> {
        let mut view = op.status_view();
        if let (OperationStatus::InProgress, fog_model::Action::CreateFailoverGroup { .. }) =
            (op.status, &op.action)
        {
            // Seeding dominates a create: its byte progress moves the figure from where the
            // step count puts it (the seed step) towards 95 %, so it never goes back.
            let uid = op.action.group().map(|(uid, _)| uid).unwrap_or_default();
            if let Some(g) = catalog::group(self.api.orch.store().as_ref(), &uid)
                .await
                .map_err(store_err)?
            {
                if let Some(p) = g.value.seeding.filter(|p| p.bytes_total > 0) {
                    let base = u64::from(op.percent_complete.unwrap_or(0)).min(95);
                    let pct = base + (95 - base) * p.bytes_done.min(p.bytes_total) / p.bytes_total;
                    view["percentComplete"] = pct.into();
                    view["seedingProgress"] = serde_json::json!({ "bytesDone": p.bytes_done, "bytesTotal": p.bytes_total });
                }
            }
        }
        let mut r = json(StatusCode::OK, view);
        if !op.status.is_terminal() {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Ok(r)
    }

    async fn operation_result(&self, op: &OperationRecord) -> Result<Response, ArmError> {
        match op.status {
            OperationStatus::InProgress => {
                let mut r = StatusCode::ACCEPTED.into_response();
                r.headers_mut().insert(
                    header::LOCATION,
                    header_value(&self.operation_url(op, "OperationResults")),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Ok(r)
            }
            // The operation's error, as a client error: the request was accepted and then
            // could not be carried out in the state it met (the reason is in the body). A
            // 5xx here would tell pollers to retry a result that will never change.
            OperationStatus::Failed | OperationStatus::Canceled => {
                let mut e = op
                    .error
                    .clone()
                    .unwrap_or_else(ArmError::operation_interrupted);
                if e.status >= 500 {
                    e.status = 409;
                }
                Err(e)
            }
            OperationStatus::Succeeded if op.action.is_delete() => {
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            OperationStatus::Succeeded => match &op.action {
                // A `CreateDatabase` record may also be an update accepted by an earlier
                // fogd (recorded that way, already succeeded): the database either way.
                fog_model::Action::CreateDatabase { instance, database }
                | fog_model::Action::UpdateDatabase {
                    instance, database, ..
                } => Ok(json(
                    StatusCode::OK,
                    self.shaped(
                        ResourceType::ManagedDatabases,
                        self.database(instance, database).await?.view(),
                    ),
                )),
                fog_model::Action::CreateInstance { instance, .. }
                | fog_model::Action::UpdateInstance { instance, .. } => Ok(json(
                    StatusCode::OK,
                    self.shaped(
                        ResourceType::ManagedInstances,
                        self.instance(instance)
                            .await?
                            .view(&self.api.config.dns_suffix),
                    ),
                )),
                fog_model::Action::CreateFailoverGroup { .. }
                | fog_model::Action::UpdateFailoverGroup { .. }
                | fog_model::Action::FailoverGroup { .. } => {
                    // The operation's own group (not whatever has its name now), seen from
                    // the address the request named.
                    let (uid, name) = op.action.group().unwrap_or_default();
                    let not_found = || {
                        ArmError::child_resource_not_found(
                            fog_model::failover_group::RESOURCE_TYPE,
                            name,
                        )
                    };
                    let g = catalog::group(self.api.orch.store().as_ref(), &uid)
                        .await
                        .map_err(store_err)?
                        .ok_or_else(not_found)?
                        .value;
                    let side = g
                        .side(
                            &op.scope.subscription,
                            &op.scope.resource_group,
                            &op.location,
                        )
                        .ok_or_else(not_found)?;
                    Ok(json(StatusCode::OK, self.group_view(&g, side).await?))
                }
                _ => Ok(StatusCode::NO_CONTENT.into_response()),
            },
        }
    }
}
