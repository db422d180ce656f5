//! The admin server's answers: `/metrics` (Prometheus text), `/healthz` (the process is up),
//! `/readyz` (the fast path's dependencies answer, each within a second) and, on a proxy,
//! `/shadow/mismatches` (the last shadow comparisons that differed).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use serde_json::json;

use async_trait::async_trait;

use crate::front::http::{full, json_response, Response};
use crate::metrics::Metrics;

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/readyz` asks: each dependency's name and whether it answered.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    async fn checks(&self) -> Vec<(&'static str, Result<(), String>)>;
}

pub struct AdminState {
    pub metrics: Metrics,
    pub readiness: Arc<dyn Readiness>,
    /// A proxy's shadow comparisons (none on a worker).
    pub shadow: Option<Arc<crate::front::mcp::shadow::Shadow>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

impl AdminState {
    pub async fn handle<B>(self: Arc<Self>, request: Request<B>) -> Response {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut response = http::Response::new(full(Bytes::from(self.metrics.render())));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            (&Method::GET, "/healthz") => json_response(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}")),
            (&Method::GET, "/readyz") => readiness(self.readiness.as_ref()).await,
            (&Method::GET, "/shadow/mismatches") if self.shadow.is_some() => {
                let mismatches = self
                    .shadow
                    .as_ref()
                    .map(|shadow| shadow.mismatches())
                    .unwrap_or_default();
                let body = serde_json::to_vec(&json!({ "mismatches": mismatches }))
                    .unwrap_or_else(|_| b"{\"mismatches\":[]}".to_vec());
                json_response(StatusCode::OK, Bytes::from(body))
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                Bytes::from_static(b"{\"error\":{\"code\":\"not_found\",\"message\":\"admin endpoints: /metrics, /healthz, /readyz, /shadow/mismatches (proxy)\"}}"),
            ),
        }
    }
}

async fn readiness(readiness: &dyn Readiness) -> Response {
    let checks = match tokio::time::timeout(CHECK_TIMEOUT, readiness.checks()).await {
        Ok(checks) => checks,
        Err(_) => vec![(
            "dependencies",
            Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        )],
    };
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    let details: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, result)| {
            let value = match result {
                Ok(()) => json!("ok"),
                Err(error) => json!(error),
            };
            (name.to_string(), value)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "ready": ready, "checks": details });
    json_response(status, Bytes::from(body.to_string()))
}
