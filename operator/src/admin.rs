//! The operator's admin endpoints: `/metrics` (Prometheus text), `/healthz` and `/readyz`.

use crate::http::{full, Response};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;

use crate::metrics::Metrics;

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(full(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The answer for `path`. Every replica is healthy and ready once it serves: a standby replica
/// waiting for the Lease is ready to take over.
pub fn answer(path: &str, metrics: &Metrics) -> Response {
    match path {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" | "/readyz" => text(StatusCode::OK, "text/plain", "ok\n"),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn metrics_health_and_readiness() {
        let metrics = Metrics::new();
        metrics.reconciles.with_label_values(&["ok"]).inc();
        let response = answer("/metrics", &metrics);
        assert_eq!(response.status(), StatusCode::OK);
        assert!(body(response)
            .await
            .contains("memgate_operator_reconciles_total{result=\"ok\"} 1"));
        assert_eq!(answer("/healthz", &metrics).status(), StatusCode::OK);
        assert_eq!(answer("/readyz", &metrics).status(), StatusCode::OK);
        assert_eq!(answer("/nope", &metrics).status(), StatusCode::NOT_FOUND);
    }
}
