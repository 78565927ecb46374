//! The request-id layer: every answer carries the caller's `x-ms-client-request-id`
//! back, refusals of the outer layers (431, 504) included, as ARM does.

use axum::http::HeaderName;
use tower_http::request_id::PropagateRequestIdLayer;

/// The header a client names its request with.
pub(crate) const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");

/// Copies the request's `x-ms-client-request-id` onto its response.
pub(crate) fn layer() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(CLIENT_REQUEST_ID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/", get(|| async { StatusCode::NO_CONTENT }))
            .layer(layer())
    }

    #[tokio::test]
    async fn echoes_the_client_request_id() {
        let req = Request::get("/")
            .header("x-ms-client-request-id", "abc-123")
            .body(Body::empty())
            .expect("request");
        let response = app().oneshot(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            response.headers().get("x-ms-client-request-id"),
            Some(&axum::http::HeaderValue::from_static("abc-123"))
        );
    }

    #[tokio::test]
    async fn adds_no_id_the_client_did_not_send() {
        let req = Request::get("/").body(Body::empty()).expect("request");
        let response = app().oneshot(req).await.expect("response");
        assert!(response.headers().get("x-ms-client-request-id").is_none());
        assert!(response.headers().get("x-ms-request-id").is_none());
    }
}
