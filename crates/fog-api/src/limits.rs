//! The request limits, as layers that answer with the error envelope:
//!
//! - [`header_limit`]: a request line plus headers larger than `max_header_bytes` gets 431;
//! - [`timeout`]: a request not answered within `request_timeout` gets 504
//!   `GatewayTimeout`, while its handler finishes unobserved in its own task;
//! - [`whole_body`]: the body is read (at most `max_body_bytes`) before anything is
//!   answered, and handed on as a [`WholeBody`].
//!
//! The first two are refusals of the request as a whole: they are logged and counted
//! here (`fogd_api_requests_total`), as the request log ([`crate::telemetry`]) only sees
//! what passes them.

use crate::respond::error;
use crate::ApiConfig;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use fog_model::ArmError;
use std::sync::Arc;

/// Size of a request's head as sent over HTTP/1.1: request line, headers, line ends.
fn head_bytes(req: &Request) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

/// A refusal of the request as a whole: logged, counted, answered with the envelope.
fn refused(method: &Method, path: &str, e: ArmError) -> Response {
    tracing::warn!(method = %method, path, status = e.status, code = %e.code, "request refused");
    crate::telemetry::count(method, e.status);
    error(e)
}

/// 431 with the envelope for a request head larger than `max_header_bytes`.
pub(crate) async fn header_limit(
    State(config): State<Arc<ApiConfig>>,
    req: Request,
    next: Next,
) -> Response {
    let size = head_bytes(&req);
    if size <= config.max_header_bytes {
        return next.run(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    // Read the body first: over HTTP/2 an answer sent while the client still sends is
    // followed by a reset of the stream, which clients may see instead of it.
    let _ = read_body(req.into_body(), config.max_body_bytes).await;
    refused(
        &method,
        &path,
        ArmError::request_headers_too_large(size, config.max_header_bytes),
    )
}

/// 504 with the envelope for a request not answered within `request_timeout`.
pub(crate) async fn timeout(
    State(config): State<Arc<ApiConfig>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(limit) = config.request_timeout else {
        return next.run(req).await;
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    // In its own task: a handler cut off half-way (say after an operation was accepted but
    // before its runner was started) could leave work behind; this one finishes unobserved.
    let handler = tokio::spawn(next.run(req));
    let e = match tokio::time::timeout(limit, handler).await {
        Ok(Ok(response)) => return response,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "request handler failed");
            ArmError::internal("the request handler failed")
        }
        Err(_) => ArmError::gateway_timeout(),
    };
    refused(&method, &path, e)
}

/// A request's body as [`whole_body`] read it: the bytes, or why they could not be had
/// (too large, unreadable). The error is the handler's to report, after authentication,
/// path and api-version.
#[derive(Clone)]
pub(crate) struct WholeBody(pub(crate) Result<Bytes, ArmError>);

/// Reads the whole body before anything is answered, errors included: over HTTP/2, a
/// response sent while the client is still sending is followed by a reset of the stream
/// (RST_STREAM), and clients such as curl then report the stream as failed instead of the
/// answer. The body goes on as a [`WholeBody`] extension.
pub(crate) async fn whole_body(
    State(config): State<Arc<ApiConfig>>,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let read = read_body(body, config.max_body_bytes).await;
    parts.extensions.insert(WholeBody(read));
    next.run(Request::from_parts(parts, Body::empty())).await
}

/// The body [`whole_body`] read, or (without that layer) read here.
pub(crate) async fn take_body(req: &mut Request, limit: usize) -> Result<Bytes, ArmError> {
    match req.extensions_mut().remove::<WholeBody>() {
        Some(WholeBody(read)) => read,
        None => read_body(std::mem::take(req.body_mut()), limit).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::middleware::from_fn_with_state;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use axum::Router;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    fn config(timeout: Option<Duration>) -> Arc<ApiConfig> {
        Arc::new(ApiConfig {
            admin_token: "t".into(),
            dns_suffix: "fog.test".into(),
            base_url: "https://127.0.0.1:1".into(),
            max_body_bytes: 16,
            max_header_bytes: 256,
            request_timeout: timeout,
            metrics: None,
            identity: None,
            managed_identity: None,
        })
    }

    async fn answer(app: Router, req: Request) -> (StatusCode, serde_json::Value) {
        let response = app.oneshot(req).await.expect("response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn header_limit_refuses_a_large_head_with_the_envelope() {
        let app = Router::new()
            .route("/", get(|| async { StatusCode::NO_CONTENT }))
            .layer(from_fn_with_state(config(None), header_limit));
        let small = Request::get("/").body(Body::empty()).expect("request");
        assert_eq!(answer(app.clone(), small).await.0, StatusCode::NO_CONTENT);
        let large = Request::get("/")
            .header("x-padding", "a".repeat(300))
            .body(Body::empty())
            .expect("request");
        let (status, body) = answer(app, large).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["error"]["code"], "RequestHeaderFieldsTooLarge");
    }

    #[tokio::test]
    async fn timeout_answers_504_with_the_envelope() {
        let app = Router::new()
            .route("/fast", get(|| async { StatusCode::NO_CONTENT }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::NO_CONTENT
                }),
            )
            .layer(from_fn_with_state(
                config(Some(Duration::from_millis(50))),
                timeout,
            ));
        let fast = Request::get("/fast").body(Body::empty()).expect("request");
        assert_eq!(answer(app.clone(), fast).await.0, StatusCode::NO_CONTENT);
        let slow = Request::get("/slow").body(Body::empty()).expect("request");
        let (status, body) = answer(app, slow).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"]["code"], "GatewayTimeout");
    }

    #[tokio::test]
    async fn whole_body_hands_on_the_body_or_why_it_was_refused() {
        let app = Router::new()
            .route(
                "/",
                post(|mut req: Request| async move {
                    match take_body(&mut req, 0).await {
                        Ok(bytes) => (StatusCode::OK, bytes.to_vec()).into_response(),
                        Err(e) => error(e),
                    }
                }),
            )
            .layer(from_fn_with_state(config(None), whole_body));
        let ok = Request::post("/")
            .body(Body::from("{\"a\":1}"))
            .expect("request");
        let response = app.clone().oneshot(ok).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&bytes[..], b"{\"a\":1}");
        let large = Request::post("/")
            .body(Body::from("x".repeat(17)))
            .expect("request");
        let (status, body) = answer(app, large).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "RequestEntityTooLarge");
    }
}
