//! memgate as an MCP client of the legacy service: one upstream session, over HTTP+SSE,
//! Streamable HTTP or a child process's stdio, shared by every client session.
//!
//! Client requests are relayed under ids of this session's own (so any number of clients can
//! share it: cldmemory answers one SSE client at a time), answers are matched back by id, a
//! request whose caller went away is cancelled upstream, and the upstream's `initialize`
//! answer and tool list are kept for the front to serve. A lost session is opened again on
//! the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, BodyStream, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::jsonrpc;
use super::sse_events::EventReader;

/// The protocol revision memgate asks the legacy service for; it answers with its own.
const ASKED_PROTOCOL_VERSION: &str = "2025-03-26";

/// Where the legacy service's MCP server is.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// HTTP+SSE (2024-11-05): the `GET` stream's URL, e.g. `http://127.0.0.1:3000/sse`.
    Sse(Uri),
    /// Streamable HTTP: the endpoint's URL, e.g. `http://127.0.0.1:3000/mcp`.
    StreamableHttp(Uri),
    /// A child process speaking MCP on its stdin and stdout.
    Stdio(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the legacy MCP service: {0}")]
    Connect(String),
    #[error("the legacy MCP service refused the message: {0}")]
    Refused(String),
    #[error("the legacy MCP session closed before answering")]
    Closed,
    #[error("the legacy MCP service did not answer within {0:?}")]
    Timeout(Duration),
}

/// What the legacy service said when the session opened.
#[derive(Debug, Clone, PartialEq)]
pub struct Handshake {
    /// Its `initialize` result (`serverInfo`, `capabilities`, `instructions`).
    pub initialize: Value,
    /// Its `tools/list` result.
    pub tools: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer.
    pub timeout: Duration,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub struct Upstream {
    target: UpstreamTarget,
    http: HttpClient,
    settings: UpstreamSettings,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    handshake: Mutex<Option<Handshake>>,
    /// Notifications from the legacy service, for the client sessions.
    notifications: broadcast::Sender<Value>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// How messages reach the legacy service in one session.
enum Outgoing {
    Sse {
        http: Box<HttpClient>,
        endpoint: Uri,
    },
    /// Each message is a POST; answers come in its response (JSON or an event stream).
    Streamable {
        http: Box<HttpClient>,
        url: Uri,
        /// The `Mcp-Session-Id` the server gave at `initialize`.
        session_id: Mutex<Option<String>>,
        /// The revision agreed at `initialize`, sent as `MCP-Protocol-Version`.
        protocol_version: Mutex<Option<String>>,
    },
    Stdio(tokio::sync::Mutex<tokio::process::ChildStdin>),
}

/// One upstream session: its outgoing side, the requests waiting for answers, the channel
/// every incoming message goes through (one task delivers them), its readers.
struct Session {
    outgoing: Outgoing,
    incoming: mpsc::UnboundedSender<String>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    _child: Option<tokio::process::Child>,
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

fn guard<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Value>>> {
        guard(&self.waiting)
    }

    fn add_task(&self, task: JoinHandle<()>) {
        guard(&self.tasks).push(task);
    }

    async fn send(&self, message: &Value) -> Result<(), UpstreamError> {
        match &self.outgoing {
            Outgoing::Sse { http, endpoint } => {
                let request = post(endpoint, message, &[])?;
                let response = http.request(request).await.map_err(|error| {
                    self.closed.store(true, Ordering::Release);
                    UpstreamError::Connect(error.to_string())
                })?;
                let status = response.status();
                if status.is_success() {
                    return Ok(());
                }
                if status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND {
                    // The session is gone on the other side (a restart): open another.
                    self.closed.store(true, Ordering::Release);
                }
                Err(refused(status, response.into_body()).await)
            }
            Outgoing::Streamable {
                http,
                url,
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
                let request = post(url, message, &headers)?;
                let response = http.request(request).await.map_err(|error| {
                    self.closed.store(true, Ordering::Release);
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
                    self.closed.store(true, Ordering::Release);
                    UpstreamError::Connect(error.to_string())
                })
            }
        }
    }

    /// A Streamable HTTP POST's answer: `202` for a notification, else the messages in its
    /// JSON body or event stream, into the session's incoming channel.
    async fn streamable_answer(
        &self,
        session_id: &Mutex<Option<String>>,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<(), UpstreamError> {
        let status = response.status();
        if let Some(id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            *guard(session_id) = Some(id.to_string());
        }
        if status == StatusCode::NOT_FOUND && guard(session_id).is_some() {
            self.closed.store(true, Ordering::Release);
        }
        if !status.is_success() {
            return Err(refused(status, response.into_body()).await);
        }
        let event_stream = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if event_stream {
            let incoming = self.incoming.clone();
            self.add_task(tokio::spawn(async move {
                let mut body = BodyStream::new(response.into_body());
                let mut reader = EventReader::default();
                while let Some(Ok(frame)) = body.next().await {
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    for event in reader.push(&chunk) {
                        if event.name == "message" && incoming.send(event.data).is_err() {
                            return;
                        }
                    }
                }
            }));
            return Ok(());
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?
            .to_bytes();
        if body.is_empty() {
            return Ok(());
        }
        let messages = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items,
            Ok(message) => vec![message],
            Err(error) => return Err(UpstreamError::Refused(format!("not JSON: {error}"))),
        };
        for message in messages {
            let _ = self.incoming.send(message.to_string());
        }
        Ok(())
    }

    /// Remembers the revision agreed at `initialize` (Streamable HTTP sends it on).
    fn agreed(&self, initialize: &Value) {
        if let Outgoing::Streamable {
            protocol_version, ..
        } = &self.outgoing
        {
            *guard(protocol_version) = initialize
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }

    /// Ends the session: every waiting request fails with [`UpstreamError::Closed`].
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waiting().clear();
    }
}

/// A JSON-RPC message as a POST.
fn post(
    uri: &Uri,
    message: &Value,
    headers: &[(&str, String)],
) -> Result<Request<Full<Bytes>>, UpstreamError> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request
        .body(Full::new(Bytes::from(message.to_string())))
        .map_err(|e| UpstreamError::Refused(e.to_string()))
}

async fn refused(status: StatusCode, body: hyper::body::Incoming) -> UpstreamError {
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    UpstreamError::Refused(format!("{status}: {}", String::from_utf8_lossy(&body)))
}

/// A request sent upstream and not yet answered; dropping it cancels it upstream.
pub struct PendingCall {
    session: Arc<Session>,
    id: u64,
    answer: Option<oneshot::Receiver<Value>>,
    timeout: Duration,
    done: bool,
}

impl PendingCall {
    /// The upstream's answer: the whole JSON-RPC response message.
    pub async fn answer(mut self) -> Result<Value, UpstreamError> {
        let Some(answer) = self.answer.take() else {
            return Err(UpstreamError::Closed);
        };
        let outcome = match tokio::time::timeout(self.timeout, answer).await {
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
            Ok(Err(_)) => Err(UpstreamError::Closed),
            Ok(Ok(message)) => {
                self.done = true;
                Ok(message)
            }
        };
        outcome
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waited = self.session.waiting().remove(&self.id).is_some();
        if waited && !self.session.closed.load(Ordering::Acquire) {
            let session = self.session.clone();
            let cancel = jsonrpc::notification(
                "notifications/cancelled",
                Some(
                    json!({"requestId": self.id, "reason": "the client went away or the call timed out"}),
                ),
            );
            tokio::spawn(async move {
                let _ = session.send(&cancel).await;
            });
        }
    }
}

impl Upstream {
    pub fn new(target: UpstreamTarget, settings: UpstreamSettings) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let (notifications, _) = broadcast::channel(64);
        Arc::new(Self {
            target,
            http,
            settings,
            session: tokio::sync::Mutex::new(None),
            handshake: Mutex::new(None),
            notifications,
        })
    }

    /// The legacy service's notifications (tool list changes, logs), as they come.
    pub fn notifications(&self) -> broadcast::Receiver<Value> {
        self.notifications.subscribe()
    }

    /// What the legacy service said when the current (or last) session opened.
    pub fn handshake(&self) -> Option<Handshake> {
        self.handshake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The handshake, opening a session first when there is none yet.
    pub async fn ensure_handshake(self: &Arc<Self>) -> Result<Handshake, UpstreamError> {
        if let Some(handshake) = self.handshake() {
            return Ok(handshake);
        }
        self.session().await?;
        self.handshake().ok_or(UpstreamError::Closed)
    }

    /// Sends a request; its answer comes from [`PendingCall::answer`].
    pub async fn start(
        self: &Arc<Self>,
        method: &str,
        params: Option<Value>,
    ) -> Result<PendingCall, UpstreamError> {
        let session = self.session().await?;
        self.start_on(&session, method, params).await
    }

    /// A request and its answer.
    pub async fn call(
        self: &Arc<Self>,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, UpstreamError> {
        self.start(method, params).await?.answer().await
    }

    /// Relays a notification.
    pub async fn notify(
        self: &Arc<Self>,
        method: &str,
        params: Option<Value>,
    ) -> Result<(), UpstreamError> {
        let session = self.session().await?;
        session.send(&jsonrpc::notification(method, params)).await
    }

    async fn start_on(
        &self,
        session: &Arc<Session>,
        method: &str,
        params: Option<Value>,
    ) -> Result<PendingCall, UpstreamError> {
        let id = session.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        session.waiting().insert(id, tx);
        let message = jsonrpc::request(Value::from(id), method, params);
        let pending = PendingCall {
            session: session.clone(),
            id,
            answer: Some(rx),
            timeout: self.settings.timeout,
            done: false,
        };
        session.send(&message).await?;
        Ok(pending)
    }

    /// The open session, or a new one (handshake done).
    async fn session(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref() {
            if !session.closed.load(Ordering::Acquire) {
                return Ok(session.clone());
            }
        }
        *current = None;
        let connect = self.open();
        let session = tokio::time::timeout(self.settings.connect_timeout * 5, connect)
            .await
            .map_err(|_| UpstreamError::Timeout(self.settings.connect_timeout * 5))??;
        self.handshake_on(&session).await?;
        *current = Some(session.clone());
        Ok(session)
    }

    async fn handshake_on(&self, session: &Arc<Session>) -> Result<(), UpstreamError> {
        let params = json!({
            "protocolVersion": ASKED_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "memgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let answer = self
            .start_on(session, "initialize", Some(params))
            .await?
            .answer()
            .await?;
        let Some(initialize) = answer.get("result").cloned() else {
            return Err(UpstreamError::Refused(format!("initialize: {answer}")));
        };
        session.agreed(&initialize);
        session
            .send(&jsonrpc::notification(
                "notifications/initialized",
                Some(json!({})),
            ))
            .await?;
        let lists_tools = initialize
            .get("capabilities")
            .is_some_and(|c| c.get("tools").is_some());
        let tools = if lists_tools {
            let answer = self
                .start_on(session, "tools/list", Some(json!({})))
                .await?
                .answer()
                .await?;
            answer.get("result").cloned()
        } else {
            None
        };
        *self.handshake.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Handshake { initialize, tools });
        Ok(())
    }

    /// Asks for the tool list again (it changed). Boxed: it opens a session, whose reader
    /// calls it.
    fn refresh_tools(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move { self.refresh_tools_now().await })
    }

    async fn refresh_tools_now(self: Arc<Self>) {
        match self.call("tools/list", Some(json!({}))).await {
            Ok(answer) => {
                if let Some(tools) = answer.get("result").cloned() {
                    if let Some(handshake) = self
                        .handshake
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_mut()
                    {
                        handshake.tools = Some(tools);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not refresh the legacy tool list"),
        }
    }

    async fn open(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        match &self.target {
            UpstreamTarget::Sse(url) => self.open_sse(url.clone()).await,
            UpstreamTarget::StreamableHttp(url) => Ok(self.session_on(
                Outgoing::Streamable {
                    http: Box::new(self.http.clone()),
                    url: url.clone(),
                    session_id: Mutex::new(None),
                    protocol_version: Mutex::new(None),
                },
                None,
            )),
            UpstreamTarget::Stdio(command) => self.open_stdio(command),
        }
    }

    /// A session sending through `outgoing`, with the task that delivers what comes in.
    fn session_on(
        self: &Arc<Self>,
        outgoing: Outgoing,
        child: Option<tokio::process::Child>,
    ) -> Arc<Session> {
        let (incoming, mut messages) = mpsc::unbounded_channel::<String>();
        let session = Arc::new(Session {
            outgoing,
            incoming,
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            _child: child,
        });
        let weak = Arc::downgrade(&session);
        let upstream = self.clone();
        session.add_task(tokio::spawn(async move {
            while let Some(data) = messages.recv().await {
                upstream.deliver(&weak, &data).await;
            }
        }));
        session
    }

    async fn open_sse(self: &Arc<Self>, url: Uri) -> Result<Arc<Session>, UpstreamError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(url.clone())
            .header(http::header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(UpstreamError::Connect(format!(
                "GET {url} answered {}",
                response.status()
            )));
        }
        let mut body = BodyStream::new(response.into_body());
        let mut reader = EventReader::default();
        let mut early = Vec::new();
        let endpoint = loop {
            let Some(frame) = body.next().await else {
                return Err(UpstreamError::Connect(
                    "the event stream ended before its endpoint event".into(),
                ));
            };
            let frame = frame.map_err(|e| UpstreamError::Connect(e.to_string()))?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let mut events = reader.push(&chunk).into_iter();
            if let Some(endpoint) = events.find(|event| event.name == "endpoint") {
                early.extend(events);
                break endpoint.data;
            }
        };
        let endpoint = resolve(&url, &endpoint)?;
        let session = self.session_on(
            Outgoing::Sse {
                http: Box::new(self.http.clone()),
                endpoint,
            },
            None,
        );
        let incoming = session.incoming.clone();
        let weak = Arc::downgrade(&session);
        session.add_task(tokio::spawn(async move {
            let mut events = early;
            loop {
                for event in events.drain(..) {
                    if event.name == "message" {
                        let _ = incoming.send(event.data);
                    }
                }
                let Some(Ok(frame)) = body.next().await else {
                    break;
                };
                if let Ok(chunk) = frame.into_data() {
                    events = reader.push(&chunk);
                }
            }
            if let Some(session) = weak.upgrade() {
                tracing::info!("the legacy MCP event stream ended");
                session.close();
            }
        }));
        Ok(session)
    }

    fn open_stdio(self: &Arc<Self>, command: &[String]) -> Result<Arc<Session>, UpstreamError> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| UpstreamError::Connect("no command to run".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| UpstreamError::Connect(format!("{program}: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| UpstreamError::Connect("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| UpstreamError::Connect("no stdout".into()))?;
        let session = self.session_on(Outgoing::Stdio(tokio::sync::Mutex::new(stdin)), Some(child));
        let incoming = session.incoming.clone();
        let weak = Arc::downgrade(&session);
        session.add_task(tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.trim().is_empty() && incoming.send(line).is_err() {
                    return;
                }
            }
            if let Some(session) = weak.upgrade() {
                tracing::warn!("the legacy MCP process closed its output");
                session.close();
            }
        }));
        Ok(session)
    }

    /// One message from the legacy service: an answer to a waiting request, a notification
    /// for the clients, or a request of its own (only `ping` is answered).
    async fn deliver(self: &Arc<Self>, session: &std::sync::Weak<Session>, data: &str) {
        let Some(session) = session.upgrade() else {
            return;
        };
        let message = match serde_json::from_str::<Value>(data) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "the legacy MCP service sent a message that is not JSON");
                return;
            }
        };
        match jsonrpc::Message::parse(message) {
            Ok(jsonrpc::Message::Response { id, message }) => {
                let waiter = id.as_u64().and_then(|id| session.waiting().remove(&id));
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(message);
                    }
                    None => tracing::debug!(%id, "an answer nobody waits for"),
                }
            }
            Ok(jsonrpc::Message::Notification { method, params }) => {
                if method == "notifications/tools/list_changed" {
                    tokio::spawn(self.clone().refresh_tools());
                }
                let _ = self
                    .notifications
                    .send(jsonrpc::notification(&method, params));
            }
            Ok(jsonrpc::Message::Request { id, method, .. }) => {
                let answer = if method == "ping" {
                    jsonrpc::result(id, json!({}))
                } else {
                    jsonrpc::error(id, jsonrpc::METHOD_NOT_FOUND, "Method not found")
                };
                let _ = session.send(&answer).await;
            }
            Err(_) => tracing::warn!("the legacy MCP service sent an invalid message"),
        }
    }
}

/// The endpoint an `endpoint` event names, against the stream's URL.
fn resolve(stream: &Uri, endpoint: &str) -> Result<Uri, UpstreamError> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint
            .parse()
            .map_err(|_| UpstreamError::Connect(format!("bad endpoint {endpoint:?}")));
    }
    let mut parts = stream.clone().into_parts();
    let path = if endpoint.starts_with('/') {
        endpoint.to_string()
    } else {
        let base = stream.path();
        let dir = &base[..base.rfind('/').map_or(0, |at| at + 1)];
        format!("{dir}{endpoint}")
    };
    parts.path_and_query = Some(
        path.parse()
            .map_err(|_| UpstreamError::Connect(format!("bad endpoint {endpoint:?}")))?,
    );
    Uri::from_parts(parts).map_err(|_| UpstreamError::Connect(format!("bad endpoint {endpoint:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_against_the_stream() {
        let stream: Uri = "http://127.0.0.1:3000/sse".parse().expect("uri");
        assert_eq!(
            resolve(&stream, "/messages?sessionId=a")
                .expect("ok")
                .to_string(),
            "http://127.0.0.1:3000/messages?sessionId=a"
        );
        let nested: Uri = "http://h/mem/sse".parse().expect("uri");
        assert_eq!(
            resolve(&nested, "messages?sessionId=b")
                .expect("ok")
                .to_string(),
            "http://h/mem/messages?sessionId=b"
        );
    }
}
