//! The metrics layer: every request that reaches the handler is counted
//! (`fogd_api_requests_total{method,status}`), timed
//! (`fogd_api_request_duration_seconds{method}`, from before its body is read) and logged
//! (`request`, with method, path, status and elapsed milliseconds). [`exposition`] is
//! what `GET /metrics` answers.

use axum::extract::Request;
use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// `GET /metrics`: the Prometheus text exposition.
pub(crate) fn exposition(render: &crate::MetricsRender) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (render.0)(),
    )
        .into_response()
}

/// Counts one answered request.
pub(crate) fn count(method: &Method, status: u16) {
    metrics::counter!("fogd_api_requests_total", "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
}

/// Counts, times and logs the request.
pub(crate) async fn record(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    tracing::info!(
        method = %method,
        path,
        status,
        elapsed_ms = elapsed.as_millis() as u64,
        "request"
    );
    count(&method, status);
    metrics::histogram!("fogd_api_request_duration_seconds", "method" => method.to_string())
        .record(elapsed.as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    #[test]
    fn counts_and_times_each_request_by_method_and_status() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let app = Router::new()
            .route("/", get(|| async { StatusCode::ACCEPTED }))
            .layer(axum::middleware::from_fn(record));
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                for _ in 0..2 {
                    let req = Request::get("/").body(Body::empty()).expect("request");
                    let response = app.clone().oneshot(req).await.expect("response");
                    assert_eq!(response.status(), StatusCode::ACCEPTED);
                }
            });
        });
        let text = handle.render();
        assert!(
            text.contains(r#"fogd_api_requests_total{method="GET",status="202"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"fogd_api_request_duration_seconds_count{method="GET"} 2"#),
            "{text}"
        );
    }
}
