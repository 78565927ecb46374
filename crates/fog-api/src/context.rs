//! The per-request context of the `Microsoft.Sql` handlers ([`Ctx`]): the api-version
//! that shapes what they answer, the lookups several resource types share (an instance, a
//! child's parent, a database) and the 202 Accepted of a long-running operation with its
//! polling URLs. Each resource module adds its own methods in its own `impl Ctx` block.

use crate::respond::{header_value, store_err};
use crate::Api;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fog_model::api_version::{self, ResourceType};
use fog_model::{ArmError, ManagedInstanceId, OperationRecord};
use fog_orchestrator::catalog;

/// Per-request context.
pub(crate) struct Ctx<'a> {
    pub(crate) api: &'a Api,
    /// `ApiConfig::base_url` without a trailing `/`.
    pub(crate) base: String,
    pub(crate) api_version: String,
}

impl Ctx<'_> {
    /// `value` (one resource of type `t`) as the request's api-version defines it.
    pub(crate) fn shaped(
        &self,
        t: ResourceType,
        mut value: serde_json::Value,
    ) -> serde_json::Value {
        api_version::shape(t, &self.api_version, &mut value);
        value
    }

    /// The managed instance a child resource is addressed under: `ParentResourceNotFound`
    /// when it does not exist.
    pub(crate) async fn parent(
        &self,
        id: &ManagedInstanceId,
    ) -> Result<fog_model::InstanceRecord, ArmError> {
        self.instance(id).await.map_err(|e| match e.status {
            404 => ArmError::parent_resource_not_found(&id.name),
            _ => e,
        })
    }

    pub(crate) async fn instance(
        &self,
        id: &ManagedInstanceId,
    ) -> Result<fog_model::InstanceRecord, ArmError> {
        catalog::instance(self.api.orch.store().as_ref(), id)
            .await
            .map_err(store_err)?
            .map(|v| v.value)
            .ok_or_else(|| ArmError::managed_instance_not_found(&id.name, &id.scope.resource_group))
    }

    pub(crate) async fn database(
        &self,
        id: &ManagedInstanceId,
        db: &str,
    ) -> Result<fog_model::DatabaseRecord, ArmError> {
        self.instance(id).await?;
        catalog::database(self.api.orch.store().as_ref(), id, db)
            .await
            .map_err(store_err)?
            .map(|v| v.value)
            .ok_or_else(|| ArmError::managed_database_not_found(db))
    }

    /// `…/locations/{loc}/{kind}{suffix}/{id}?api-version=…`, absolute.
    pub(crate) fn operation_url(&self, op: &OperationRecord, suffix: &str) -> String {
        format!(
            "{}{}/providers/Microsoft.Sql/locations/{}/{}{}/{}?api-version={}",
            self.base,
            op.scope.path(),
            op.location,
            op.kind.url_prefix(),
            suffix,
            op.id,
            self.api_version
        )
    }

    /// 202 Accepted with both polling headers and `Retry-After: 1`, empty body.
    pub(crate) fn accepted(&self, op: &OperationRecord) -> Response {
        let mut r = StatusCode::ACCEPTED.into_response();
        let h = r.headers_mut();
        h.insert(
            "Azure-AsyncOperation",
            header_value(&self.operation_url(op, "AzureAsyncOperation")),
        );
        h.insert(
            header::LOCATION,
            header_value(&self.operation_url(op, "OperationResults")),
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    }

    /// 202 for a started deletion, 204 when there was nothing to delete.
    pub(crate) fn deleted(&self, op: Option<OperationRecord>) -> Response {
        match op {
            Some(op) => self.accepted(&op),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    }
}
