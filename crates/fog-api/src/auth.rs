//! The authentication layer: every request but the sign-in surface's public endpoints
//! (`cloud::public_endpoint`) must carry a bearer token `fog-identity` accepts — the
//! administrator token, or (with an identity configured) a token fogd signed. A refused
//! request gets 401 with the error envelope and a `WWW-Authenticate: Bearer` challenge; an
//! accepted one goes on with its [`Caller`] as a request extension.
//!
//! It runs after the body is read (`limits::whole_body`), so a 401 never cuts off a
//! client still sending.

use crate::respond::{error, header_value};
use crate::ApiConfig;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use fog_identity::Caller;
use fog_model::ArmError;
use std::sync::Arc;

/// Lets a request with an accepted token (or to a public endpoint) through, with its
/// [`Caller`]; refuses any other with [`refusal`].
pub(crate) async fn require_token(
    State(config): State<Arc<ApiConfig>>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_public(&config, req.method(), req.uri()) {
        return next.run(req).await;
    }
    match authenticate(&config, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => refusal(e),
    }
}

/// Whether the request is to an endpoint that needs no token (the sign-in surface).
pub(crate) fn is_public(config: &ApiConfig, method: &Method, uri: &Uri) -> bool {
    config
        .identity
        .as_ref()
        .is_some_and(|identity| crate::cloud::public_endpoint(identity, method, uri).is_some())
}

/// An error as answered: the envelope, and on a 401 the `WWW-Authenticate` challenge.
pub(crate) fn refusal(e: ArmError) -> Response {
    let unauthenticated = e.status == 401;
    let challenge = unauthenticated.then(|| challenge(&e));
    let mut r = error(e);
    if let Some(challenge) = challenge {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    r
}

/// Constant-time comparison, so response timing does not reveal the token.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller a request's bearer token stands for: the administrator token, or (with an
/// identity configured) a token fogd signed.
async fn authenticate(config: &ApiConfig, headers: &HeaderMap) -> Result<Caller, ArmError> {
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
    match &config.identity {
        Some(identity) => identity.authenticate(presented).await,
        None if same(presented.as_bytes(), config.admin_token.as_bytes()) => {
            Ok(Caller::Administrator)
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::{Extension, Router};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Router {
        let config = Arc::new(ApiConfig {
            admin_token: "s3cret".into(),
            dns_suffix: "fog.test".into(),
            base_url: "https://127.0.0.1:1".into(),
            max_body_bytes: 1024,
            max_header_bytes: 1024,
            request_timeout: None,
            metrics: None,
            identity: None,
            managed_identity: None,
        });
        Router::new()
            .route(
                "/",
                get(|Extension(caller): Extension<Caller>| async move { format!("{caller:?}") }),
            )
            .layer(axum::middleware::from_fn_with_state(config, require_token))
    }

    async fn send(authorization: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get("/");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let response = app()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        (parts.status, parts.headers, body)
    }

    fn code(body: &[u8]) -> String {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn refuses_a_missing_token_with_the_envelope_and_the_challenge() {
        let (status, headers, body) = send(None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(code(&body), "AuthenticationFailed");
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()),
            Some(
                "Bearer realm=\"fogd\", error=\"invalid_token\", error_description=\"Authentication failed. The 'Authorization' header is missing.\""
            )
        );
    }

    #[tokio::test]
    async fn refuses_a_wrong_token_or_scheme() {
        for presented in ["Bearer nope", "Basic s3cret", "s3cret"] {
            let (status, headers, body) = send(Some(presented)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{presented}");
            assert_eq!(code(&body), "InvalidAuthenticationToken", "{presented}");
            assert!(
                headers.contains_key(header::WWW_AUTHENTICATE),
                "{presented}"
            );
        }
    }

    #[tokio::test]
    async fn passes_the_administrator_on_with_its_caller() {
        let (status, _, body) = send(Some("bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"Administrator");
    }
}
