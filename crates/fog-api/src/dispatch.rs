//! The router's one handler: it sends a request that passed the layers to the module
//! that serves it — the public sign-in surface and the tenant-level resources
//! (`cloud`), `/metrics` (`telemetry`), `/cluster` (`cluster`), and the `Microsoft.Sql`
//! resources, after their path ([`crate::route`]), api-version and body are checked:
//! `instances`, `databases`, `failover_groups`, `operations`. Errors keep their
//! precedence: authentication, then path, then api-version, then the body's own (too
//! large, unreadable).

use crate::context::Ctx;
use crate::respond::query_param;
use crate::route::{self, Route};
use crate::{auth, cloud, cluster, databases, failover_groups, instances, limits};
use crate::{operations, telemetry, Api};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use fog_identity::Caller;
use fog_model::api_version;
use fog_model::ArmError;
use fog_orchestrator::GroupAddress;

/// The fallback handler of [`crate::router`]; an error is answered by
/// [`auth::refusal`] (the envelope, and the challenge on a 401).
pub(crate) async fn dispatch(State(api): State<Api>, mut req: Request) -> Response {
    handle(&api, &mut req).await.unwrap_or_else(auth::refusal)
}

async fn handle(api: &Api, req: &mut Request) -> Result<Response, ArmError> {
    let body = limits::take_body(req, api.config.max_body_bytes).await;
    let (method, uri) = (req.method().clone(), req.uri().clone());
    if let Some(identity) = &api.config.identity {
        if let Some(endpoint) = cloud::public_endpoint(identity, &method, &uri) {
            return cloud::public(api, identity, endpoint, &uri, req.headers(), &body).await;
        }
    }
    // Set by the auth layer; without it the request is not authenticated.
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(ArmError::authentication_missing)?;
    if let Some(answer) = cloud::tenant_level(api, &caller, &method, &uri, &body).await {
        return answer;
    }
    if uri.path() == "/metrics" && method == Method::GET {
        if let Some(render) = &api.config.metrics {
            return Ok(telemetry::exposition(render));
        }
    }
    if uri.path() == "/cluster" && method == Method::GET {
        return cluster::status(api).await;
    }
    let route = route::parse(uri.path())?;
    let api_version = query_param(&uri, "api-version");
    // Polling URLs are dereferenced as given; their api-version is not checked (the
    // operation's own version shapes what they return).
    let api_version = match route.resource_type() {
        None => api_version.unwrap_or_else(|| api_version::LATEST_STABLE.into()),
        Some(t) => api_version::check(api_version.as_deref(), t)?.to_string(),
    };
    // Only PUT, PATCH and POST have a body to speak of; another method's is ignored.
    let body = match matches!(method, Method::PUT | Method::PATCH | Method::POST) {
        true => body?,
        false => Bytes::new(),
    };
    let ctx = Ctx {
        api,
        base: api.config.base_url.trim_end_matches('/').to_string(),
        api_version,
    };
    match (method, route) {
        (
            Method::GET,
            Route::Instances {
                subscription,
                scope,
            },
        ) => instances::list(&ctx, &subscription, scope.as_ref()).await,
        (Method::GET, Route::Instance(id)) => instances::get(&ctx, &id).await,
        (Method::PUT, Route::Instance(id)) => instances::put(&ctx, id, &body).await,
        (Method::PATCH, Route::Instance(id)) => instances::patch(&ctx, &id, &body).await,
        (Method::DELETE, Route::Instance(id)) => instances::delete(&ctx, &id).await,
        (Method::GET, Route::Databases(id)) => databases::list(&ctx, &id).await,
        (Method::GET, Route::Database(id, db)) => databases::get(&ctx, &id, &db).await,
        (Method::PUT, Route::Database(id, db)) => databases::put(&ctx, &id, &db, &body).await,
        (Method::PATCH, Route::Database(id, db)) => databases::patch(&ctx, &id, &db, &body).await,
        (Method::DELETE, Route::Database(id, db)) => databases::delete(&ctx, &id, &db).await,
        (Method::GET, Route::FailoverGroups { scope, location }) => {
            failover_groups::list(&ctx, &scope, &location, &uri).await
        }
        (
            Method::GET,
            Route::FailoverGroup {
                scope,
                location,
                name,
            },
        ) => failover_groups::get(&ctx, &scope, &location, &name).await,
        (
            Method::GET,
            Route::FailoverGroupEvents {
                scope,
                location,
                name,
            },
        ) => failover_groups::events(&ctx, &scope, &location, &name).await,
        (
            Method::PUT,
            Route::FailoverGroup {
                scope,
                location,
                name,
            },
        ) => failover_groups::put(&ctx, GroupAddress { scope, location }, &name, &body).await,
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
            failover_groups::failover(&ctx, addr, &name, planned).await
        }
        (
            Method::DELETE,
            Route::FailoverGroup {
                scope,
                location,
                name,
            },
        ) => failover_groups::delete(&ctx, GroupAddress { scope, location }, &name).await,
        (
            Method::GET,
            Route::Operation {
                subscription,
                kind,
                view,
                id,
            },
        ) => operations::get(ctx, &subscription, kind, view, &id).await,
        (m, _) => Err(ArmError::method_not_allowed(m)),
    }
}
