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
//! [`cloud`] serves what az and MSAL need besides `Microsoft.Sql`: the cloud's metadata,
//! the sign-in endpoints, subscriptions, tenants, resource groups and capabilities.
//!
//! TLS termination lives in the `fogd` binary; this crate only sees plain requests.

mod cloud;
pub mod route;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use fog_model::api_version::{self, ResourceType};
use fog_model::failover_group::{GroupBody, ListenerAddresses, ReplicationState};
use fog_model::{body, ArmError, ManagedInstanceId, OperationRecord, OperationStatus};
use fog_model::{FailoverGroupRecord, Side};
use fog_orchestrator::{catalog, DatabaseCreate, GroupAddress, Orchestrator};
use route::{OperationView, Route};
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

fn fog_orchestrator_store_err(e: fog_store::StoreError) -> ArmError {
    tracing::error!(error = %e, "store failure");
    ArmError::internal("the metadata store failed")
}

/// Renders the process's metrics in Prometheus text format.
#[derive(Clone)]
pub struct MetricsRender(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRender")
    }
}

#[derive(Clone)]
struct Api {
    orch: Orchestrator,
    config: Arc<ApiConfig>,
}

/// Builds the ARM router.
pub fn router(orch: Orchestrator, config: ApiConfig) -> Router {
    let api = Api {
        orch,
        config: Arc::new(config),
    };
    Router::new()
        .fallback(dispatch)
        .with_state(api.clone())
        .layer(axum::middleware::from_fn_with_state(api, guard))
}

/// Size of a request's head as sent over HTTP/1.1: request line, headers, line ends.
fn head_bytes(req: &axum::extract::Request) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

/// Outermost layer: the header size limit and the request timeout, both answered with the
/// error envelope.
async fn guard(
    State(api): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let request_id = req.headers().get("x-ms-client-request-id").cloned();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let e = match guarded(&api, req, next).await {
        Ok(response) => return response,
        Err(e) => e,
    };
    tracing::warn!(method = %method, path, status = e.status, code = %e.code, "request refused");
    metrics::counter!("fogd_api_requests_total", "method" => method.to_string(), "status" => e.status.to_string())
        .increment(1);
    let mut response = error(e);
    if let Some(id) = request_id {
        response.headers_mut().insert("x-ms-client-request-id", id);
    }
    response
}

async fn guarded(
    api: &Api,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ArmError> {
    let size = head_bytes(&req);
    if size > api.config.max_header_bytes {
        // Read the body first: over HTTP/2 an answer sent while the client still sends
        // is followed by a reset of the stream, which clients may see instead of it.
        let _ = read_body(req.into_body(), api.config.max_body_bytes).await;
        return Err(ArmError::request_headers_too_large(
            size,
            api.config.max_header_bytes,
        ));
    }
    let Some(limit) = api.config.request_timeout else {
        return Ok(next.run(req).await);
    };
    // In its own task: a handler cut off half-way (say after an operation was accepted but
    // before its runner was started) could leave work behind; this one finishes unobserved.
    let handler = tokio::spawn(next.run(req));
    match tokio::time::timeout(limit, handler).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "request handler failed");
            Err(ArmError::internal("the request handler failed"))
        }
        Err(_) => Err(ArmError::gateway_timeout()),
    }
}

/// A JSON response with ARM's content type.
fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        value.to_string(),
    )
        .into_response()
}

fn error(e: ArmError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, e.envelope())
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Constant-time comparison, so response timing does not reveal the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller a request's bearer token stands for: the administrator token, or (with an
/// identity configured) a token fogd signed.
async fn authenticate(api: &Api, headers: &HeaderMap) -> Result<fog_identity::Caller, ArmError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(ArmError::authentication_missing)?;
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(ArmError::invalid_token)?;
    match &api.config.identity {
        Some(identity) => identity.authenticate(presented).await,
        None if same(presented.as_bytes(), api.config.admin_token.as_bytes()) => {
            Ok(fog_identity::Caller::Administrator)
        }
        None => Err(ArmError::invalid_token()),
    }
}

/// The `WWW-Authenticate` challenge of a 401, shaped like ARM's (`Bearer
/// authorization_uri=…, error="invalid_token", error_description=…`); fogd has no
/// authorization server to name, so it gives a realm instead.
fn challenge(e: &ArmError) -> HeaderValue {
    let description: String = e
        .message
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => ' ',
        })
        .collect();
    header_value(&format!(
        "Bearer realm=\"fogd\", error=\"invalid_token\", error_description=\"{description}\""
    ))
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k.eq_ignore_ascii_case(name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

async fn dispatch(
    State(api): State<Api>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let mut response = match handle(&api, &method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = error(e.clone());
            if e.status == 401 {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge(&e));
            }
            r
        }
    };
    if let Some(id) = headers.get("x-ms-client-request-id") {
        response
            .headers_mut()
            .insert("x-ms-client-request-id", id.clone());
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    tracing::info!(
        method = %method,
        path = uri.path(),
        status,
        elapsed_ms = elapsed.as_millis() as u64,
        "request"
    );
    metrics::counter!("fogd_api_requests_total", "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("fogd_api_request_duration_seconds", "method" => method.to_string())
        .record(elapsed.as_secs_f64());
    response
}

async fn handle(
    api: &Api,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ArmError> {
    // The whole body is read before anything is answered, errors included: over HTTP/2, a
    // response sent while the client is still sending is followed by a reset of the stream
    // (RST_STREAM), and clients such as curl then report the stream as failed instead of
    // the answer. Errors keep their precedence: the body's own (too large, unreadable)
    // come after authentication, path and api-version.
    let body = read_body(body, api.config.max_body_bytes).await;
    if let Some(answer) = cloud::public(api, method, uri, headers, &body).await {
        return answer;
    }
    let caller = authenticate(api, headers).await?;
    if let Some(answer) = cloud::tenant_level(api, &caller, method, uri, &body).await {
        return answer;
    }
    if uri.path() == "/metrics" && *method == Method::GET {
        if let Some(render) = &api.config.metrics {
            return Ok((
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                (render.0)(),
            )
                .into_response());
        }
    }
    if uri.path() == "/cluster" && *method == Method::GET {
        // fogd's own (not ARM): the nodes sharing the store, what each owns, and the
        // store's members (`fogctl cluster status`).
        let orch = &api.orch;
        let status =
            fog_orchestrator::cluster::status(orch.store().as_ref(), orch.node().map(|n| &**n))
                .await
                .map_err(fog_orchestrator_store_err)?;
        return Ok((StatusCode::OK, axum::Json(status)).into_response());
    }
    let route = route::parse(uri.path())?;
    let api_version = query_param(uri, "api-version");
    // Polling URLs are dereferenced as given; their api-version is not checked (the
    // operation's own version shapes what they return).
    let api_version = match route.resource_type() {
        None => api_version.unwrap_or_else(|| api_version::LATEST_STABLE.into()),
        Some(t) => api_version::check(api_version.as_deref(), t)?.to_string(),
    };
    // Only PUT, PATCH and POST have a body to speak of; another method's is ignored.
    let body = match matches!(*method, Method::PUT | Method::PATCH | Method::POST) {
        true => body?,
        false => Bytes::new(),
    };
    let ctx = Ctx {
        api,
        base: api.config.base_url.trim_end_matches('/').to_string(),
        api_version,
    };
    match (method.clone(), route) {
        (
            Method::GET,
            Route::Instances {
                subscription,
                scope,
            },
        ) => {
            let list = catalog::instances(api.orch.store().as_ref(), scope.as_ref(), &subscription)
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
        (Method::GET, Route::Instance(id)) => {
            let rec = ctx.instance(&id).await?;
            Ok(json(
                StatusCode::OK,
                ctx.shaped(
                    ResourceType::ManagedInstances,
                    rec.view(&api.config.dns_suffix),
                ),
            ))
        }
        (Method::PUT, Route::Instance(id)) => ctx.put_instance(id, &body).await,
        (Method::PATCH, Route::Instance(id)) => {
            let existing = ctx.instance(&id).await?;
            let changes = body::parse_for::<fog_model::instance::InstanceBody>(
                &body,
                ResourceType::ManagedInstances,
                &ctx.api_version,
            )?
            .into_changes(&existing)?;
            let op = api
                .orch
                .update_instance(&id, changes, &ctx.api_version)
                .await?;
            Ok(ctx.accepted(&op))
        }
        (Method::DELETE, Route::Instance(id)) => {
            match api.orch.delete_instance(&id, &ctx.api_version).await? {
                Some(op) => Ok(ctx.accepted(&op)),
                None => Ok(StatusCode::NO_CONTENT.into_response()),
            }
        }
        (Method::GET, Route::Databases(id)) => {
            let inst = ctx.parent(&id).await?;
            let list = catalog::databases_of_group_member(api.orch.store().as_ref(), &inst)
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
        (Method::GET, Route::Database(id, db)) => {
            let inst = ctx.parent(&id).await?;
            let view = ctx.database_seen_from(&inst, &db).await?;
            Ok(json(StatusCode::OK, view))
        }
        (Method::GET, Route::FailoverGroups { scope, location }) => {
            ctx.list_groups(&scope, &location, uri).await
        }
        (
            Method::GET,
            Route::FailoverGroup {
                scope,
                location,
                name,
            },
        ) => {
            let (g, side) = ctx.group(&scope, &location, &name).await?;
            Ok(json(StatusCode::OK, ctx.group_view(&g, side).await?))
        }
        (
            Method::GET,
            Route::FailoverGroupEvents {
                scope,
                location,
                name,
            },
        ) => {
            let (g, _) = ctx.group(&scope, &location, &name).await?;
            let events = catalog::events(api.orch.store().as_ref(), &g.uid)
                .await
                .map_err(store_err)?;
            let value: Vec<_> = events.iter().map(|e| e.view()).collect();
            Ok(json(StatusCode::OK, serde_json::json!({ "value": value })))
        }
        (
            Method::PUT,
            Route::FailoverGroup {
                scope,
                location,
                name,
            },
        ) => {
            let spec = body::parse::<GroupBody>(&body)
                .map_err(|e| {
                    // An unparsable body (empty, malformed or cut short) is the
                    // catalogue's "empty or invalid" error.
                    if e.target.is_none() {
                        ArmError::ifog_invalid_request()
                    } else {
                        e
                    }
                })?
                .into_spec_for(api.orch.config().min_grace_minutes, &ctx.api_version)?;
            let addr = GroupAddress { scope, location };
            let op = api
                .orch
                .put_failover_group(&addr, &name, spec, &ctx.api_version)
                .await?;
            Ok(ctx.accepted(&op))
        }
        (
            Method::POST,
            Route::FailoverGroupFailover {
                scope,
                location,
                name,
                planned,
            },
        ) => {
            let addr = GroupAddress { scope, location };
            let op = api
                .orch
                .failover_group(&addr, &name, planned, &ctx.api_version)
                .await?;
            Ok(ctx.accepted(&op))
        }
        (
            Method::DELETE,
            Route::FailoverGroup {
                scope,
                location,
                name,
            },
        ) => {
            let addr = GroupAddress { scope, location };
            match api
                .orch
                .delete_failover_group(&addr, &name, &ctx.api_version)
                .await?
            {
                Some(op) => Ok(ctx.accepted(&op)),
                None => Ok(StatusCode::NO_CONTENT.into_response()),
            }
        }
        (Method::PUT, Route::Database(id, db)) => {
            fog_model::names::validate_database_name(&db)?;
            let inst = ctx.parent(&id).await?;
            let parsed = body::parse::<fog_model::database::DatabaseBody>(&body)?;
            // PUT on an existing database replaces what may change (its tags).
            if let Some(existing) = catalog::database(api.orch.store().as_ref(), &id, &db)
                .await
                .map_err(store_err)?
            {
                let changes = parsed.into_changes(&existing.value, true)?;
                let op = api
                    .orch
                    .update_database(&id, &db, changes, &ctx.api_version)
                    .await?;
                return Ok(ctx.accepted(&op));
            }
            let spec = parsed.into_create_spec(&inst.location)?;
            match api
                .orch
                .create_database(&id, &db, spec, &ctx.api_version)
                .await?
            {
                DatabaseCreate::Started(op) => Ok(ctx.accepted(&op)),
                DatabaseCreate::Exists(rec) => Ok(json(
                    StatusCode::OK,
                    ctx.shaped(ResourceType::ManagedDatabases, rec.view()),
                )),
            }
        }
        (Method::PATCH, Route::Database(id, db)) => {
            ctx.parent(&id).await?;
            let parsed = body::parse::<fog_model::database::DatabaseBody>(&body)?;
            let changes = match catalog::database(api.orch.store().as_ref(), &id, &db)
                .await
                .map_err(store_err)?
            {
                Some(existing) => parsed.into_changes(&existing.value, false)?,
                // Not this instance's: the orchestrator refuses it through a geo-secondary
                // (the database is its primary's), else reports it missing.
                None => Default::default(),
            };
            let op = api
                .orch
                .update_database(&id, &db, changes, &ctx.api_version)
                .await?;
            Ok(ctx.accepted(&op))
        }
        (Method::DELETE, Route::Database(id, db)) => {
            match api.orch.delete_database(&id, &db, &ctx.api_version).await? {
                Some(op) => Ok(ctx.accepted(&op)),
                None => Ok(StatusCode::NO_CONTENT.into_response()),
            }
        }
        (
            Method::GET,
            Route::Operation {
                subscription,
                kind,
                view,
                id,
            },
        ) => {
            let op = catalog::operation(api.orch.store().as_ref(), &id)
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
        (m, _) => Err(ArmError::method_not_allowed(m)),
    }
}

/// Reads at most `limit` bytes. An oversized body is still drained (up to a hard cap) so
/// that HTTP/1.1 clients, which write the whole body before reading, receive the 413, and
/// HTTP/2 clients get it before the stream ends.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ArmError> {
    use http_body_util::BodyExt;
    let drain_cap = limit.saturating_mul(16).max(16 * 1024 * 1024);
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| ArmError::invalid_request_content("the request body could not be read"))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > drain_cap {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ArmError::request_too_large(limit));
    }
    Ok(Bytes::from(buf))
}

fn store_err(e: fog_store::StoreError) -> ArmError {
    tracing::error!(error = %e, "store failure");
    ArmError::internal("the metadata store failed")
}

/// Per-request context.
struct Ctx<'a> {
    api: &'a Api,
    base: String,
    api_version: String,
}

impl Ctx<'_> {
    /// `value` (one resource of type `t`) as the request's api-version defines it.
    fn shaped(&self, t: ResourceType, mut value: serde_json::Value) -> serde_json::Value {
        api_version::shape(t, &self.api_version, &mut value);
        value
    }

    /// The managed instance a child resource is addressed under: `ParentResourceNotFound`
    /// when it does not exist.
    async fn parent(&self, id: &ManagedInstanceId) -> Result<fog_model::InstanceRecord, ArmError> {
        self.instance(id).await.map_err(|e| match e.status {
            404 => ArmError::parent_resource_not_found(&id.name),
            _ => e,
        })
    }

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

    async fn instance(
        &self,
        id: &ManagedInstanceId,
    ) -> Result<fog_model::InstanceRecord, ArmError> {
        catalog::instance(self.api.orch.store().as_ref(), id)
            .await
            .map_err(store_err)?
            .map(|v| v.value)
            .ok_or_else(|| ArmError::managed_instance_not_found(&id.name, &id.scope.resource_group))
    }

    async fn database(
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

    async fn put_instance(
        &self,
        id: ManagedInstanceId,
        bytes: &[u8],
    ) -> Result<Response, ArmError> {
        let parsed = body::parse_for::<fog_model::instance::InstanceBody>(
            bytes,
            ResourceType::ManagedInstances,
            &self.api_version,
        )?;
        let existing = catalog::instance(self.api.orch.store().as_ref(), &id)
            .await
            .map_err(store_err)?;
        let op = match existing {
            Some(existing) => {
                let changes = parsed.into_changes(&existing.value)?;
                self.api
                    .orch
                    .update_instance(&id, changes, &self.api_version)
                    .await?
            }
            None => {
                fog_model::names::validate_instance_name(&id.name)?;
                let spec = parsed.into_create_spec()?;
                self.api
                    .orch
                    .create_instance(id, spec, &self.api_version)
                    .await?
            }
        };
        Ok(self.accepted(&op))
    }

    /// `…/locations/{loc}/{kind}{suffix}/{id}?api-version=…`, absolute.
    fn operation_url(&self, op: &OperationRecord, suffix: &str) -> String {
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
    fn accepted(&self, op: &OperationRecord) -> Response {
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

    /// The group named in a path, and which member the path's address is: the group of
    /// that name with a member at the address (groups of that name elsewhere are others).
    async fn group(
        &self,
        scope: &fog_model::Scope,
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
    async fn group_view(
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

    /// Groups with a member at the address, paged by `$skipToken` (an offset).
    async fn list_groups(
        &self,
        scope: &fog_model::Scope,
        location: &str,
        uri: &Uri,
    ) -> Result<Response, ArmError> {
        const PAGE: usize = 100;
        let skip: usize = query_param(uri, "$skipToken")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let groups = catalog::groups(self.api.orch.store().as_ref())
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
            value.push(self.group_view(g, *side).await?);
        }
        let mut body = serde_json::json!({ "value": value });
        if skip + PAGE < mine.len() {
            body["nextLink"] = format!(
                "{}{}/providers/Microsoft.Sql/locations/{}/instanceFailoverGroups?api-version={}&$skipToken={}",
                self.base, scope.path(), location.replace(' ', "%20"), self.api_version, skip + PAGE
            ).into();
        }
        Ok(json(StatusCode::OK, body))
    }
}
