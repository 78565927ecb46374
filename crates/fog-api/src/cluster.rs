//! `GET /cluster`, fogd's own (not ARM): the nodes sharing the store, what each owns, and
//! the store's members (`fogctl cluster status`).

use crate::respond::store_err;
use crate::Api;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fog_model::ArmError;

pub(crate) async fn status(api: &Api) -> Result<Response, ArmError> {
    let orch = &api.orch;
    let status =
        fog_orchestrator::cluster::status(orch.store().as_ref(), orch.node().map(|n| &**n))
            .await
            .map_err(store_err)?;
    Ok((StatusCode::OK, axum::Json(status)).into_response())
}
