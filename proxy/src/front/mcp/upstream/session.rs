//! One upstream session: how its messages go out (per transport), the requests waiting for
//! their answers, and its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::health::{Health, Loss};
use super::{HttpClient, UpstreamError};

/// How messages reach the legacy service in one session.
pub(super) enum Outgoing {
    Sse {
        http: Box<HttpClient>,
        endpoint: Uri,
        authorization: Option<http::HeaderValue>,
    },
    /// Each message is a POST; answers come in its response (JSON or an event stream).
    Streamable {
        http: Box<HttpClient>,
        url: Uri,
        authorization: Option<http::HeaderValue>,
        /// The `Mcp-Session-Id` the server gave at `initialize`.
        session_id: Mutex<Option<String>>,
        /// The revision agreed at `initialize`, sent as `MCP-Protocol-Version`.
        protocol_version: Mutex<Option<String>>,
    },
    Stdio(tokio::sync::Mutex<tokio::process::ChildStdin>),
}

/// One upstream session: its outgoing side, the requests waiting for answers, the channel
/// every incoming message goes through (one task delivers them), its readers.
pub(super) struct Session {
    pub(super) outgoing: Outgoing,
    pub(super) incoming: mpsc::UnboundedSender<String>,
    pub(super) waiting: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    pub(super) next_id: AtomicU64,
    pub(super) closed: AtomicBool,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(super) child: Mutex<Option<tokio::process::Child>>,
    /// When a message last came from the legacy service on this session.
    pub(super) heard: Mutex<Instant>,
    /// Held while a ping asks whether the session still answers, so calls share one.
    pub(super) probe: tokio::sync::Mutex<()>,
    pub(super) health: Arc<Health>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            task.abort();
        }
    }
}

pub(super) fn guard<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    pub(super) fn waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Value>>> {
        guard(&self.waiting)
    }

    /// Keeps `task` until the session ends (then it is aborted); tasks that finished are
    /// dropped meanwhile, so a long session's list does not grow with every answer.
    pub(super) fn add_task(&self, task: JoinHandle<()>) {
        let mut tasks = guard(&self.tasks);
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether anything came from the legacy service on this session since `since`.
    pub(super) fn heard_since(&self, since: Instant) -> bool {
        *guard(&self.heard) >= since
    }

    pub(super) fn heard_now(&self) {
        *guard(&self.heard) = Instant::now();
    }

    /// Ends a session that failed before it was ever used (a handshake that failed).
    pub(super) fn discard(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.shut_down();
        }
    }

    /// Ends the session for `loss`: its streams are closed, its process killed, every
    /// waiting request fails with [`UpstreamError::Closed`]. Reported once.
    pub(super) fn end(&self, loss: Loss) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.health.lost(loss);
        self.shut_down();
    }

    pub(super) fn shut_down(&self) {
        // Closing the old stream before another opens matters to cldmemory: when any of its
        // streams closes, answers stop until the next one opens.
        for task in guard(&self.tasks).drain(..) {
            task.abort();
        }
        if let Some(child) = guard(&self.child).as_mut() {
            let _ = child.start_kill();
        }
        self.waiting().clear();
    }

    pub(super) async fn send(&self, message: &Value) -> Result<(), UpstreamError> {
        match &self.outgoing {
            Outgoing::Sse {
                http,
                endpoint,
                authorization,
            } => {
                let request = post(endpoint, message, &[], authorization.as_ref())?;
                let response = http.request(request).await.map_err(|error| {
                    self.end(Loss::Ended);
                    UpstreamError::Connect(error.to_string())
                })?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND {
                    // The session is gone on the other side (a restart): open another.
                    self.end(Loss::Refused);
                }
                Err(refused(status, response.into_body()).await)
            }
            Outgoing::Streamable {
                http,
                url,
                authorization,
                session_id,
                protocol_version,
            } => {
                let mut headers = vec![(
                    http::header::ACCEPT.as_str(),
                    "application/json, text/event-stream".to_string(),
                )];
                if let Some(id) = guard(session_id).clone() {
                    headers.push(("mcp-session-id", id));
                }
                if let Some(version) = guard(protocol_version).clone() {
                    headers.push(("mcp-protocol-version", version));
                }
                let request = post(url, message, &headers, authorization.as_ref())?;
                let response = http.request(request).await.map_err(|error| {
                    self.end(Loss::Ended);
                    UpstreamError::Connect(error.to_string())
                })?;
                self.streamable_answer(session_id, response).await
            }
            Outgoing::Stdio(stdin) => {
                let mut line = message.to_string();
                line.push('\n');
                let mut stdin = stdin.lock().await;
                let written = async {
                    stdin.write_all(line.as_bytes()).await?;
                    stdin.flush().await
                };
                written.await.map_err(|error| {
                    self.end(Loss::Ended);
                    UpstreamError::Connect(error.to_string())
                })
            }
        }
    }
}

/// A JSON-RPC message as a POST.
pub(super) fn post(
    uri: &Uri,
    message: &Value,
    headers: &[(&str, String)],
    authorization: Option<&http::HeaderValue>,
) -> Result<Request<Full<Bytes>>, UpstreamError> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = authorization {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request
        .body(Full::new(Bytes::from(message.to_string())))
        .map_err(|e| UpstreamError::Refused(e.to_string()))
}

pub(super) async fn refused(status: StatusCode, body: hyper::body::Incoming) -> UpstreamError {
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    UpstreamError::Refused(format!("{status}: {}", String::from_utf8_lossy(&body)))
}
