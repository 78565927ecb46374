//! What Azure's own tools need from a cloud besides `Microsoft.Sql`: the sign-in surface
//! and the tenant-level ARM resources.
//!
//! Without a token ([`public_endpoint`], answered by [`public`]; the auth layer lets these
//! through):
//! - `GET /metadata/endpoints` — the cloud's endpoints, read by `az cloud register
//!   --endpoint-resource-manager`;
//! - the ADFS-shaped authority `{base}/adfs` (MSAL trusts an ADFS authority without asking
//!   Microsoft's instance discovery): `/.well-known/openid-configuration`,
//!   `/discovery/keys` (the JWKS) and `/oauth2/token` (the `client_credentials` grant); the
//!   same under `/{tenant}` (and `/{tenant}/v2.0`, `/oauth2/v2.0/token`) for clients told
//!   to skip instance discovery.
//!
//! With a token ([`tenant_level`]):
//! - `GET /subscriptions`, `GET /subscriptions/{id}`, `GET /tenants`;
//! - resource groups (`/subscriptions/{id}/resourceGroups[/{name}]`, see
//!   `fog_orchestrator::resource_groups`);
//! - `GET /subscriptions/{id}/providers/Microsoft.Sql/locations/{loc}/capabilities`;
//! - `/identity/servicePrincipals[/{id}[/resetCredential]]` (a fogd extension, for the
//!   administrator token only: what `fogctl ad sp` drives).
//!
//! Paths match case-insensitively, like the rest of ARM.

use crate::auth::same;
use crate::respond::{json, query_param, store_err};
use crate::Api;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fog_identity::{principal, Caller, Identity};
use fog_model::{ArmError, Scope};
use fog_orchestrator::resource_groups;
use std::collections::BTreeMap;

/// The lower-cased, percent-decoded segments of a path.
fn segments(uri: &Uri) -> Vec<String> {
    uri.path()
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn lower(segs: &[String]) -> Vec<String> {
    segs.iter().map(|s| s.to_ascii_lowercase()).collect()
}

/// An endpoint that needs no token.
pub(crate) enum Public {
    /// `GET /metadata/endpoints`.
    Metadata,
    /// `GET /msi/token`.
    ManagedIdentityToken,
    /// `GET {authority}[/v2.0]/.well-known/openid-configuration`, with the authority's URL.
    OpenIdConfiguration { authority: String },
    /// `GET {authority}/discovery[/v2.0]/keys`.
    Keys,
    /// `POST {authority}/oauth2[/v2.0]/token`.
    Token,
}

/// Which public endpoint the request is to; `None` for every other request (those need
/// a token).
pub(crate) fn public_endpoint(identity: &Identity, method: &Method, uri: &Uri) -> Option<Public> {
    let segs = segments(uri);
    let l = lower(&segs);
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let settings = identity.settings();
    let base = settings.base_url.as_str();
    // `{authority}/…` where the authority is `adfs` or this fogd's tenant.
    let authority_rest = |l: &[&str]| -> Option<usize> {
        let first = *l.first()?;
        let known = first == "adfs"
            || first == settings.tenant_id.to_ascii_lowercase()
            || first == "organizations"
            || first == "common";
        known.then_some(1)
    };
    match (method.clone(), l.as_slice()) {
        (Method::GET, ["metadata", "endpoints"]) => Some(Public::Metadata),
        (Method::GET, ["msi", "token"]) => Some(Public::ManagedIdentityToken),
        (m, rest) if authority_rest(rest).is_some() => {
            let tail = &rest[1..];
            match (m, tail) {
                (Method::GET, [".well-known", "openid-configuration"])
                | (Method::GET, ["v2.0", ".well-known", "openid-configuration"]) => {
                    Some(Public::OpenIdConfiguration {
                        authority: format!("{base}/{}", segs[0]),
                    })
                }
                (Method::GET, ["discovery", "keys"])
                | (Method::GET, ["discovery", "v2.0", "keys"]) => Some(Public::Keys),
                (Method::POST, ["oauth2", "token"])
                | (Method::POST, ["oauth2", "v2.0", "token"]) => Some(Public::Token),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Answers a request to a public endpoint.
pub(crate) async fn public(
    api: &Api,
    identity: &Identity,
    endpoint: Public,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Result<Bytes, ArmError>,
) -> Result<Response, ArmError> {
    match endpoint {
        Public::Metadata => Ok(json(
            StatusCode::OK,
            metadata(identity, &api.config.dns_suffix),
        )),
        Public::ManagedIdentityToken => managed_identity_token(identity, api, uri, headers).await,
        Public::OpenIdConfiguration { authority } => Ok(json(
            StatusCode::OK,
            openid_configuration(identity, &authority),
        )),
        Public::Keys => Ok(json(StatusCode::OK, identity.key().jwks())),
        Public::Token => Ok(token(identity, body).await),
    }
}

/// `GET /metadata/endpoints`: what `az cloud register` reads.
fn metadata(identity: &Identity, dns_suffix: &str) -> serde_json::Value {
    let s = identity.settings();
    let base = &s.base_url;
    let audiences = s.audiences();
    serde_json::json!({
        "name": "fogd",
        "portal": base,
        "resourceManager": format!("{base}/"),
        "sqlManagement": format!("{base}/"),
        "gallery": format!("{base}/"),
        "graph": format!("{base}/"),
        "graphAudience": format!("{base}/"),
        "microsoftGraphResourceId": format!("{base}/"),
        "authentication": {
            "loginEndpoint": s.authority(),
            "audiences": [audiences[0], audiences[4]],
            "tenant": "adfs",
            "identityProvider": "ADFS",
        },
        "suffixes": {
            "sqlServerHostname": format!(".{}", dns_suffix.trim_start_matches('.')),
            "storage": "storage.fogd.local",
            "keyVaultDns": "vault.fogd.local",
            "acrLoginServer": "acr.fogd.local",
        },
    })
}

/// The OpenID discovery document of an authority (`issuer`, `token_endpoint`, …).
fn openid_configuration(identity: &Identity, authority: &str) -> serde_json::Value {
    let s = identity.settings();
    serde_json::json!({
        "issuer": s.issuer(),
        "authorization_endpoint": format!("{authority}/oauth2/authorize"),
        "token_endpoint": format!("{authority}/oauth2/token"),
        "jwks_uri": format!("{authority}/discovery/keys"),
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid"],
        "tenant_region_scope": null,
        "cloud_instance_name": "fogd",
        "tenant_id": s.tenant_id,
    })
}

#[derive(serde::Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    resource: Option<String>,
}

fn oauth_error(e: &fog_identity::OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    json(status, e.body())
}

/// `POST {authority}/oauth2/token`: the `client_credentials` grant.
async fn token(identity: &Identity, body: &Result<Bytes, ArmError>) -> Response {
    let refuse = |error: &'static str, code: u32, description: &str| {
        oauth_error(&fog_identity::OAuthError {
            status: 400,
            error,
            code,
            description: description.to_string(),
        })
    };
    let Ok(body) = body else {
        return refuse(
            "invalid_request",
            900144,
            "The request body could not be read.",
        );
    };
    let Ok(form) = serde_urlencoded::from_bytes::<TokenForm>(body) else {
        return refuse(
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    };
    match form.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return refuse(
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'; fogd supports client_credentials."),
            )
        }
        None => {
            return refuse(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        }
    }
    let (Some(client_id), Some(secret)) = (form.client_id, form.client_secret) else {
        return refuse(
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    match identity
        .issue_for_client(
            &client_id,
            &secret,
            form.scope.as_deref(),
            form.resource.as_deref(),
        )
        .await
    {
        Ok(t) => {
            tracing::info!(app_id = %client_id, audience = %t.resource, "token issued");
            json(StatusCode::OK, t.body())
        }
        Err(e) => {
            tracing::warn!(app_id = %client_id, error = %e, "token refused");
            oauth_error(&e)
        }
    }
}

/// The App Service–style managed-identity endpoint (`IDENTITY_ENDPOINT`): a token for
/// fogd's managed identity to a caller that presents `X-IDENTITY-HEADER`.
async fn managed_identity_token(
    identity: &Identity,
    api: &Api,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ArmError> {
    let Some(mi) = &api.config.managed_identity else {
        return Err(ArmError::invalid_resource_type(uri.path()));
    };
    let presented = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !same(presented.as_bytes(), mi.header_secret.as_bytes()) {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"statusCode": 401, "message": "The X-IDENTITY-HEADER header is missing or wrong."}),
        ));
    }
    let resource = query_param(uri, "resource").unwrap_or_default();
    let sp = principal::get(identity.store().as_ref(), &mi.app_id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ArmError::internal("fogd's managed identity is missing"))?;
    let audience = identity
        .settings()
        .audiences()
        .into_iter()
        .find(|a| a == &resource || a.trim_end_matches('/') == resource.trim_end_matches('/'));
    let Some(audience) = audience else {
        return Ok(json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"statusCode": 400, "message": format!("Unknown resource '{resource}'.")}),
        ));
    };
    let t = identity.issue(&sp, &audience, fog_identity::now());
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": t.access_token,
            "expires_on": t.expires_on.to_string(),
            "resource": t.resource,
            "token_type": "Bearer",
            "client_id": sp.app_id,
        }),
    ))
}

/// The api-version a tenant-level ARM request must carry (any well-formed one: fogd
/// serves one shape of these resources).
fn require_api_version(uri: &Uri) -> Result<(), ArmError> {
    match query_param(uri, "api-version") {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(ArmError::missing_api_version()),
    }
}

/// Answers the tenant-level requests of an authenticated caller; `None` for the
/// `Microsoft.Sql` ones.
pub(crate) async fn tenant_level(
    api: &Api,
    caller: &Caller,
    method: &Method,
    uri: &Uri,
    body: &Result<Bytes, ArmError>,
) -> Option<Result<Response, ArmError>> {
    let identity = api.config.identity.as_ref()?;
    let segs = segments(uri);
    let l = lower(&segs);
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let result = match l.as_slice() {
        ["subscriptions"] => {
            arm(uri, method, &[Method::GET], || async {
                let value: Vec<_> = identity
                    .settings()
                    .subscriptions
                    .iter()
                    .map(|s| subscription_view(identity, s))
                    .collect();
                Ok(json(StatusCode::OK, serde_json::json!({ "value": value })))
            })
            .await
        }
        ["subscriptions", _] => {
            arm(uri, method, &[Method::GET], || async {
                let id = segs[1].to_ascii_lowercase();
                match identity.settings().subscriptions.iter().find(|s| **s == id) {
                    Some(s) => Ok(json(StatusCode::OK, subscription_view(identity, s))),
                    None => Err(ArmError::new(
                        404,
                        "SubscriptionNotFound",
                        format!("The subscription '{}' could not be found.", segs[1]),
                    )),
                }
            })
            .await
        }
        ["tenants"] => {
            arm(uri, method, &[Method::GET], || async {
                let t = &identity.settings().tenant_id;
                Ok(json(
                    StatusCode::OK,
                    serde_json::json!({ "value": [{
                        "id": format!("/tenants/{t}"),
                        "tenantId": t,
                        "tenantCategory": "Home",
                        "displayName": "fogd",
                        "defaultDomain": "fogd.local",
                        "domains": ["fogd.local"],
                        "tenantType": "AAD",
                    }]}),
                ))
            })
            .await
        }
        ["subscriptions", _, "resourcegroups"] => {
            arm(uri, method, &[Method::GET], || async {
                let sub = fog_model::names::validate_subscription(&segs[1])?;
                let groups = resource_groups::list(api.orch.store().as_ref(), &sub).await?;
                let value: Vec<_> = groups.iter().map(|g| g.view()).collect();
                Ok(json(StatusCode::OK, serde_json::json!({ "value": value })))
            })
            .await
        }
        ["subscriptions", _, "resourcegroups", _] => {
            let allowed = [
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ];
            arm(uri, method, &allowed, || {
                resource_group(api, method, &segs[1], &segs[3], body)
            })
            .await
        }
        ["subscriptions", _, "providers", "microsoft.sql", "locations", _, "capabilities"] => {
            if *method != Method::GET {
                Err(ArmError::method_not_allowed(method))
            } else {
                match fog_model::names::validate_subscription(&segs[1]).and_then(|_| {
                    fog_model::api_version::check(
                        query_param(uri, "api-version").as_deref(),
                        fog_model::api_version::ResourceType::ManagedInstances,
                    )
                    .map(|_| ())
                }) {
                    Ok(()) => Ok(json(StatusCode::OK, capabilities(&segs[5]))),
                    Err(e) => Err(e),
                }
            }
        }
        ["identity", "serviceprincipals", ..] => {
            if !caller.is_administrator() {
                Err(ArmError::new(
                    403,
                    "AuthorizationFailed",
                    "Only fogd's administrator token may manage service principals.",
                ))
            } else {
                service_principals(identity, method, &segs[2..], uri, body).await
            }
        }
        _ => return None,
    };
    Some(result)
}

/// Checks the method and the api-version, then runs `f`.
async fn arm<F, Fut>(
    uri: &Uri,
    method: &Method,
    allowed: &[Method],
    f: F,
) -> Result<Response, ArmError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Response, ArmError>>,
{
    if !allowed.contains(method) {
        return Err(ArmError::method_not_allowed(method));
    }
    require_api_version(uri)?;
    f().await
}

fn subscription_view(identity: &Identity, id: &str) -> serde_json::Value {
    let t = &identity.settings().tenant_id;
    serde_json::json!({
        "id": format!("/subscriptions/{id}"),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": id,
        "tenantId": t,
        "displayName": "fogd",
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "fogd",
            "spendingLimit": "Off",
        },
    })
}

#[derive(serde::Deserialize)]
struct GroupBody {
    location: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

async fn resource_group(
    api: &Api,
    method: &Method,
    subscription: &str,
    name: &str,
    body: &Result<Bytes, ArmError>,
) -> Result<Response, ArmError> {
    let scope = Scope::parse(subscription, name)?;
    let store = api.orch.store().as_ref();
    match *method {
        Method::GET => match resource_groups::get(store, &scope).await? {
            Some(g) => Ok(json(StatusCode::OK, g.view())),
            None => Err(resource_groups::not_found(name)),
        },
        Method::HEAD => match resource_groups::get(store, &scope).await? {
            Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
            None => Ok(StatusCode::NOT_FOUND.into_response()),
        },
        Method::PUT => {
            let body = body.clone()?;
            let parsed: GroupBody = fog_model::body::parse(&body)?;
            let location = parsed
                .location
                .filter(|l| !l.trim().is_empty())
                .ok_or_else(ArmError::location_required)?;
            let (g, created) =
                resource_groups::put(store, &scope, &location, parsed.tags.unwrap_or_default())
                    .await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json(status, g.view()))
        }
        Method::PATCH => {
            let body = body.clone()?;
            let parsed: GroupBody = fog_model::body::parse(&body)?;
            let current = resource_groups::get(store, &scope)
                .await?
                .ok_or_else(|| resource_groups::not_found(name))?;
            let (g, _) = resource_groups::put(
                store,
                &scope,
                &current.record.location,
                parsed.tags.unwrap_or(current.record.tags),
            )
            .await?;
            Ok(json(StatusCode::OK, g.view()))
        }
        Method::DELETE => {
            resource_groups::delete(store, &scope).await?;
            Ok(StatusCode::OK.into_response())
        }
        ref m => Err(ArmError::method_not_allowed(m)),
    }
}

/// The location's capabilities: the managed-instance editions, families, SKUs and vCores
/// fogd accepts (`fog_model::instance::SKU_NAMES`, `V_CORES`), GeneralPurpose/Gen5/8 vCores
/// the defaults.
fn capabilities(location: &str) -> serde_json::Value {
    use fog_model::instance::{SKU_NAMES, V_CORES};
    let available = |default: bool| if default { "Default" } else { "Available" };
    let storage = serde_json::json!([{
        "minValue": { "limit": 32, "unit": "Gigabytes" },
        "maxValue": { "limit": 32768, "unit": "Gigabytes" },
        "scaleSize": { "limit": 32, "unit": "Gigabytes" },
        "status": "Available",
    }]);
    let edition = |tier: &str, prefix: &str, default: bool| {
        let families: Vec<_> = SKU_NAMES
            .iter()
            .filter_map(|sku| sku.strip_prefix(prefix).map(|family| (*sku, family)))
            .map(|(sku, family)| {
                let default_family = default && family == "Gen5";
                let vcores: Vec<_> = V_CORES
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "name": v.to_string(),
                            "value": v,
                            "includedMaxSize": { "limit": 32, "unit": "Gigabytes" },
                            "supportedStorageSizes": storage,
                            "instancePoolSupported": false,
                            "standaloneSupported": true,
                            "status": available(default_family && *v == 8),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "name": family,
                    "sku": sku,
                    "supportedLicenseTypes": [
                        { "name": "LicenseIncluded", "status": "Default" },
                        { "name": "BasePrice", "status": "Available" },
                    ],
                    "supportedVcoresValues": vcores,
                    "includedMaxSize": { "limit": 32, "unit": "Gigabytes" },
                    "supportedStorageSizes": storage,
                    "status": available(default_family || family == "Gen5"),
                })
            })
            .collect();
        serde_json::json!({
            "name": tier,
            "supportedFamilies": families,
            "supportedStorageCapabilities": [],
            "zoneRedundant": false,
            "status": available(default),
        })
    };
    serde_json::json!({
        "name": location,
        "supportedServerVersions": [],
        "supportedManagedInstanceVersions": [{
            "name": "12.0",
            "supportedEditions": [
                edition("GeneralPurpose", "GP_", true),
                edition("BusinessCritical", "BC_", false),
            ],
            "supportedInstancePoolEditions": [],
            "status": "Default",
        }],
        "status": "Default",
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrincipalBody {
    display_name: Option<String>,
    #[serde(default)]
    years: Option<u32>,
    #[serde(default)]
    append: Option<bool>,
}

/// `/identity/servicePrincipals…` for the administrator: list, create (`create-for-rbac`),
/// show, delete, `resetCredential`.
async fn service_principals(
    identity: &Identity,
    method: &Method,
    rest: &[String],
    uri: &Uri,
    body: &Result<Bytes, ArmError>,
) -> Result<Response, ArmError> {
    let store = identity.store().as_ref();
    let now = fog_identity::now();
    let tenant = &identity.settings().tenant_id;
    let parse = |body: &Result<Bytes, ArmError>| -> Result<PrincipalBody, ArmError> {
        let bytes = body.clone()?;
        if bytes.is_empty() {
            return Ok(PrincipalBody {
                display_name: None,
                years: None,
                append: None,
            });
        }
        fog_model::body::parse(&bytes)
    };
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (method.clone(), lower.as_slice()) {
        (Method::GET, []) => {
            let list = principal::list(store).await.map_err(store_err)?;
            let value: Vec<_> = list.iter().map(|p| p.view()).collect();
            Ok(json(StatusCode::OK, serde_json::json!({ "value": value })))
        }
        (Method::POST, []) => {
            let b = parse(body)?;
            let name = b.display_name.unwrap_or_default();
            let made =
                principal::create_for_rbac(store, tenant, &name, b.years.unwrap_or(1), now).await?;
            tracing::info!(app_id = %made.principal.app_id, name = %made.principal.display_name, "service principal created or its secret replaced");
            Ok(json(StatusCode::OK, made.view()))
        }
        (Method::GET, [_]) => {
            let p = principal::find(store, &rest[0])
                .await
                .map_err(store_err)?
                .ok_or_else(|| sp_not_found(&rest[0]))?;
            Ok(json(StatusCode::OK, p.value.view()))
        }
        (Method::DELETE, [_]) => {
            let p = principal::delete(store, &rest[0]).await?;
            tracing::info!(app_id = %p.app_id, "service principal deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::POST, [_, "resetcredential"]) => {
            let b = parse(body)?;
            let made = principal::reset_credential(
                store,
                &rest[0],
                b.append.unwrap_or(false),
                b.years.unwrap_or(1),
                now,
            )
            .await?;
            tracing::info!(app_id = %made.principal.app_id, "service principal credential reset");
            Ok(json(StatusCode::OK, made.view()))
        }
        (m, [] | [_] | [_, "resetcredential"]) => Err(ArmError::method_not_allowed(m)),
        _ => Err(ArmError::invalid_resource_type(uri.path())),
    }
}

fn sp_not_found(id: &str) -> ArmError {
    ArmError::new(
        404,
        "ServicePrincipalNotFound",
        format!("No service principal with the application id, object id or display name '{id}' exists."),
    )
}
