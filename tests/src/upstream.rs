//! A stand-in for the legacy memory service: answers every request with a JSON echo of what it
//! received and records it, so tests can see what was (and was not) forwarded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::http_server::{json, TestServer};

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path_and_query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

pub struct FakeUpstream {
    server: TestServer,
    received: Arc<Mutex<Vec<RecordedRequest>>>,
    delay_ms: Arc<AtomicU64>,
}

impl FakeUpstream {
    pub async fn start() -> anyhow::Result<Self> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let server = TestServer::start(move |request, _remote| {
            let log = log.clone();
            let delay = Duration::from_millis(delay.load(Ordering::Relaxed));
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let recorded = RecordedRequest {
                    method: request.method().to_string(),
                    path_and_query: request
                        .uri()
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: request.headers().clone(),
                    body: request.body().clone(),
                };
                let body = serde_json::json!({
                    "legacy": true,
                    "method": recorded.method,
                    "path": recorded.path_and_query,
                    "bodyBytes": recorded.body.len(),
                });
                log.lock().expect("lock").push(recorded);
                let mut response = json(200, body);
                response.headers_mut().insert(
                    "x-legacy-service",
                    hyper::header::HeaderValue::from_static("yes"),
                );
                response
            }
        })
        .await?;
        Ok(Self {
            server,
            received,
            delay_ms,
        })
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(millis, Ordering::Relaxed);
    }

    /// Stops listening and closes every connection: the service is down.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.server.restart().await
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn received(&self) -> Vec<RecordedRequest> {
        self.received.lock().expect("lock").clone()
    }
}
