//! # fog-api — the Microsoft.Sql ARM surface
//!
//! An axum [`router`] that speaks ARM: bearer-token authentication, `api-version` checks,
//! case-insensitive paths ([`route`]), the error envelope on every failure, and the
//! long-running-operation protocol real clients poll (202 with absolute
//! `Azure-AsyncOperation` and `Location` URLs and `Retry-After: 1`, a status resource, a
//! result resource). It validates input with `fog-model`, reads resources from the store
//! and hands every change to the orchestrator; it never touches PostgreSQL itself.
//!
//! Tokens are checked by `fog-identity` (the administrator token, or a JWT fogd signed);
//! `cloud` serves what az and MSAL need besides `Microsoft.Sql`: the cloud's metadata,
//! the sign-in endpoints, subscriptions, tenants, resource groups and capabilities.
//!
//! The crate's layout: this file holds the settings and wires the router; each
//! cross-cutting concern is a tower layer in its own module (`request_id`, `limits`,
//! `telemetry`, `auth`); `dispatch` sends an authenticated request to the module of its
//! resource type (`instances`, `databases`, `failover_groups`, `operations`, `cluster`,
//! `cloud`); `respond` and `context` hold what those share.
//!
//! TLS termination lives in the `fogd` binary; this crate only sees plain requests.

mod auth;
mod cloud;
mod cluster;
mod context;
mod databases;
mod dispatch;
mod failover_groups;
mod instances;
mod limits;
mod operations;
mod request_id;
mod respond;
pub mod route;
mod telemetry;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use fog_orchestrator::Orchestrator;
use std::sync::Arc;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The bearer token every request must carry.
    pub admin_token: String,
    /// DNS suffix of fully qualified names (`{name}.{dnsZone}.{suffix}`).
    pub dns_suffix: String,
    /// Base URL (`https://host:port`) of the polling URLs (`Azure-AsyncOperation`,
    /// `Location`, `nextLink`): fogd's configured public URL or its bound address. Never
    /// taken from a request: a forged `Host` would send pollers, and their tokens, elsewhere.
    pub base_url: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest accepted request line plus headers, in bytes; larger requests get 431 with
    /// the error envelope.
    pub max_header_bytes: usize,
    /// How long a request may take, body included, before it is answered 504
    /// `GatewayTimeout` (the handler runs on in its own task); `None`: no limit.
    pub request_timeout: Option<std::time::Duration>,
    /// Renders the Prometheus text exposition served at `/metrics` (no endpoint if `None`).
    pub metrics: Option<MetricsRender>,
    /// fogd as token issuer (`cloud.rs`): signed tokens accepted beside `admin_token`, the
    /// sign-in endpoints, subscriptions, tenants, resource groups. `None`: only
    /// `admin_token`.
    pub identity: Option<fog_identity::Identity>,
    /// The managed identity served at the App Service–style endpoint (`/msi/token`).
    pub managed_identity: Option<ManagedIdentity>,
}

/// fogd's managed identity: the principal `az login --identity` signs in as, and the
/// secret callers show in `X-IDENTITY-HEADER` (`IDENTITY_HEADER`).
#[derive(Clone)]
pub struct ManagedIdentity {
    pub app_id: String,
    pub header_secret: String,
}

impl std::fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentity")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// Renders the process's metrics in Prometheus text format.
#[derive(Clone)]
pub struct MetricsRender(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRender")
    }
}

/// The state every handler sees.
#[derive(Clone)]
struct Api {
    orch: Orchestrator,
    config: Arc<ApiConfig>,
}

/// Builds the ARM router: one fallback handler (`dispatch`; ARM paths match
/// case-insensitively, which axum's path router cannot express) under these layers,
/// outermost first:
///
/// 1. `request_id` — echoes `x-ms-client-request-id` on every answer;
/// 2. `limits::header_limit` — 431 for an oversized request head;
/// 3. `limits::timeout` — 504 after `request_timeout`, the rest running in its own task;
/// 4. `telemetry::record` — `fogd_api_requests_total`,
///    `fogd_api_request_duration_seconds` and the request log line;
/// 5. `limits::whole_body` — reads the body (bounded) before anything is answered;
/// 6. `auth::require_token` — the bearer token, 401 with a challenge; the public sign-in
///    endpoints pass.
pub fn router(orch: Orchestrator, config: ApiConfig) -> Router {
    let config = Arc::new(config);
    let api = Api {
        orch,
        config: config.clone(),
    };
    Router::new()
        .fallback(dispatch::dispatch)
        .with_state(api)
        .layer(
            tower::ServiceBuilder::new()
                .layer(request_id::layer())
                .layer(from_fn_with_state(config.clone(), limits::header_limit))
                .layer(from_fn_with_state(config.clone(), limits::timeout))
                .layer(from_fn(telemetry::record))
                .layer(from_fn_with_state(config.clone(), limits::whole_body))
                .layer(from_fn_with_state(config, auth::require_token)),
        )
}
