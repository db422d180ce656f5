//! memgate as an MCP client of the legacy service: one upstream session, over HTTP+SSE,
//! Streamable HTTP or a child process's stdio, shared by every client session.
//!
//! Client requests are relayed under ids of this session's own (so any number of clients can
//! share it: cldmemory answers one SSE client at a time), answers are matched back by id, a
//! request whose caller went away is cancelled upstream, and the upstream's `initialize`
//! answer and tool list are kept for the front to serve.
//!
//! The session heals ([`health`]): a ping every `upstream.mcp.pingInterval`, and one at once
//! when a call waits longer than `upstream.mcp.pingTimeout`, must be answered within
//! `pingTimeout`, else the session is lost and another is opened. A call in flight on a lost
//! session is sent again on the next when it only reads ([`Resend::Safe`]); one that may have
//! changed something fails with [`UpstreamError::LostInFlight`]. Calls go through the
//! `upstream` breaker, and while no session can be opened they fail at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use crate::dependency::{CallError, Dependency};
use crate::metrics::Metrics;

mod health;

use health::Health;
pub use health::Loss;

/// How long a lost session's closed stream is given to reach the service before the next
/// opens.
const SETTLE_AFTER_CLOSE: Duration = Duration::from_millis(50);

/// How many sessions a call that only reads is sent on before it fails.
const SESSIONS_PER_READ: usize = 3;

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
    #[error("the legacy MCP session was lost while this call was in flight; it may have been carried out, so it was not sent again: check before retrying")]
    LostInFlight,
    #[error("the legacy MCP service is unreachable ({error}); trying again in {retry_after:?}")]
    Unavailable {
        error: String,
        retry_after: Duration,
    },
}

/// Whether a call may be sent again on a new session when its own was lost before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// It only reads: sending it twice changes nothing.
    Safe,
    /// It may change something: never sent twice.
    Never,
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
    /// How often the session is pinged (and opened, while there is none).
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the session is taken for lost.
    pub ping_timeout: Duration,
    /// memgate's own `Authorization` for the legacy service (`upstream.authorization`).
    pub authorization: Option<http::HeaderValue>,
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
    health: Arc<Health>,
    /// The `upstream` breaker (shared with the legacy HTTP client) and its metrics.
    guard: Dependency,
    metrics: Metrics,
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
struct Session {
    outgoing: Outgoing,
    incoming: mpsc::UnboundedSender<String>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    child: Mutex<Option<tokio::process::Child>>,
    /// When a message last came from the legacy service on this session.
    heard: Mutex<Instant>,
    /// Held while a ping asks whether the session still answers, so calls share one.
    probe: tokio::sync::Mutex<()>,
    health: Arc<Health>,
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

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether anything came from the legacy service on this session since `since`.
    fn heard_since(&self, since: Instant) -> bool {
        *guard(&self.heard) >= since
    }

    fn heard_now(&self) {
        *guard(&self.heard) = Instant::now();
    }

    /// Ends a session that failed before it was ever used (a handshake that failed).
    fn discard(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.shut_down();
        }
    }

    /// Ends the session for `loss`: its streams are closed, its process killed, every
    /// waiting request fails with [`UpstreamError::Closed`]. Reported once.
    fn end(&self, loss: Loss) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.health.lost(loss);
        self.shut_down();
    }

    fn shut_down(&self) {
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

    async fn send(&self, message: &Value) -> Result<(), UpstreamError> {
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
            self.end(Loss::Refused);
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
}

/// A JSON-RPC message as a POST.
fn post(
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
    answer: oneshot::Receiver<Value>,
    sent: Instant,
    done: bool,
}

/// How a wait for an answer ended without one.
enum Unanswered {
    /// The session was lost (or closed) before the answer came.
    Lost,
    /// No answer within the call's time, on a session that answers otherwise.
    TimedOut,
}

impl PendingCall {
    /// The answer, or why none came: while it waits longer than `ping_timeout` on a session
    /// nothing was heard from since it was sent, the session is probed with a ping.
    async fn answer(mut self, upstream: &Upstream, limit: Duration) -> Result<Value, Unanswered> {
        let deadline = self.sent + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Unanswered::TimedOut);
            }
            let wait = left.min(upstream.settings.ping_timeout);
            match tokio::time::timeout(wait, &mut self.answer).await {
                Ok(Ok(message)) => {
                    self.done = true;
                    return Ok(message);
                }
                Ok(Err(_)) => return Err(Unanswered::Lost),
                Err(_) => {
                    if !upstream.answers(&self.session, self.sent).await {
                        // The answer may have come while the probe waited.
                        return match self.answer.try_recv() {
                            Ok(message) => {
                                self.done = true;
                                Ok(message)
                            }
                            Err(_) => Err(Unanswered::Lost),
                        };
                    }
                }
            }
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waited = self.session.waiting().remove(&self.id).is_some();
        if waited && !self.session.is_closed() {
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
    /// `guard` is the `upstream` dependency: its breaker counts calls that got no answer.
    pub fn new(
        target: UpstreamTarget,
        settings: UpstreamSettings,
        guard: Dependency,
        metrics: Metrics,
    ) -> Arc<Self> {
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
            health: Arc::new(Health::new(metrics.clone())),
            guard,
            metrics,
        })
    }

    /// The legacy service's notifications (tool list changes, logs), as they come.
    pub fn notifications(&self) -> broadcast::Receiver<Value> {
        self.notifications.subscribe()
    }

    /// What `/readyz` says of the legacy MCP session.
    pub fn readiness(&self) -> Result<(), String> {
        self.health.readiness()
    }

    /// What the legacy service said when the current (or last) session opened.
    pub fn handshake(&self) -> Option<Handshake> {
        guard(&self.handshake).clone()
    }

    /// The handshake, opening a session first when there is none yet.
    pub async fn ensure_handshake(self: &Arc<Self>) -> Result<Handshake, UpstreamError> {
        if let Some(handshake) = self.handshake() {
            return Ok(handshake);
        }
        self.session().await?;
        self.handshake().ok_or(UpstreamError::Closed)
    }

    /// A request and its answer (the whole JSON-RPC response message), through the
    /// `upstream` breaker. A call that may be sent again ([`Resend::Safe`]) is, on a new
    /// session, when its own is lost before the answer.
    pub async fn call(
        self: &Arc<Self>,
        method: &str,
        params: Option<Value>,
        resend: Resend,
    ) -> Result<Value, UpstreamError> {
        let answered = self
            .guard
            .call("mcp", self.call_on_sessions(method, params, resend))
            .await;
        answered.map_err(|error| match error {
            CallError::Failed(error) => error,
            CallError::Open(open) => UpstreamError::Unavailable {
                error: "the upstream breaker is open after repeated failures".into(),
                retry_after: open.retry_after,
            },
            CallError::Timeout { after, .. } => UpstreamError::Timeout(after),
        })
    }

    async fn call_on_sessions(
        self: &Arc<Self>,
        method: &str,
        params: Option<Value>,
        resend: Resend,
    ) -> Result<Value, UpstreamError> {
        let sessions = match resend {
            Resend::Safe => SESSIONS_PER_READ,
            Resend::Never => 1,
        };
        for attempt in 1..=sessions {
            let session = self.session().await?;
            let pending = self.start_on(&session, method, params.clone()).await?;
            match pending.answer(self, self.settings.timeout).await {
                Ok(message) => return Ok(message),
                Err(Unanswered::TimedOut) => {
                    // The session answers pings, but not this call.
                    tracing::warn!(method, timeout = ?self.settings.timeout, "a call to the legacy MCP service went unanswered within upstream.timeout");
                    return Err(UpstreamError::Timeout(self.settings.timeout));
                }
                Err(Unanswered::Lost) if resend == Resend::Never => {
                    return Err(UpstreamError::LostInFlight)
                }
                Err(Unanswered::Lost) => {
                    if attempt < sessions {
                        tracing::info!(method, "the legacy MCP session was lost before the answer; sending the read again on a new one");
                        self.metrics.upstream_resent.inc();
                    }
                }
            }
        }
        Err(UpstreamError::Closed)
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
            answer: rx,
            sent: Instant::now(),
            done: false,
        };
        session.send(&message).await?;
        Ok(pending)
    }

    /// Whether `session` still answers: something was heard on it since `since`, or it
    /// answers a ping within `ping_timeout`. A session that does not is ended (lost).
    async fn answers(&self, session: &Arc<Session>, since: Instant) -> bool {
        let _probe = session.probe.lock().await;
        if session.is_closed() {
            return false;
        }
        if session.heard_since(since) {
            return true;
        }
        let asked = Instant::now();
        let answered = match self.start_on(session, "ping", None).await {
            Ok(mut ping) => {
                let answer =
                    tokio::time::timeout(self.settings.ping_timeout, &mut ping.answer).await;
                ping.done = true;
                matches!(answer, Ok(Ok(_)))
            }
            Err(_) => false,
        };
        if answered || session.heard_since(asked) {
            return true;
        }
        session.end(Loss::Unanswered);
        false
    }

    /// Keeps the session healthy until the process ends: every `ping_interval` it pings an
    /// open session nothing was heard from meanwhile, or, once a client has needed one, opens
    /// one while there is none (so a lost session is replaced before the next call needs it).
    pub fn spawn_monitor(self: &Arc<Self>) -> JoinHandle<()> {
        let upstream = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(upstream.settings.ping_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                upstream.check().await;
            }
        })
    }

    async fn check(self: &Arc<Self>) {
        let open = self.session.lock().await.clone();
        match open {
            Some(session) if !session.is_closed() => {
                let since = Instant::now()
                    .checked_sub(self.settings.ping_interval)
                    .unwrap_or_else(Instant::now);
                if !self.answers(&session, since).await {
                    let _ = self.session().await;
                }
            }
            // Reopened only once a client needed one: a legacy service that answers only
            // forwarded REST is never asked for MCP.
            _ if self.health.asked() => {
                if let Err(error) = self.session().await {
                    tracing::debug!(%error, "no legacy MCP session yet");
                }
            }
            _ => {}
        }
    }

    /// The open session, or a new one (handshake done). While opening one keeps failing, it
    /// is not tried again before the health says so: the call fails at once.
    async fn session(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref() {
            if !session.is_closed() {
                return Ok(session.clone());
            }
        }
        if let Some((error, retry_after)) = self.health.unreachable() {
            return Err(UpstreamError::Unavailable { error, retry_after });
        }
        if let Some(old) = current.take() {
            // Its streams are closed, and the service given a moment to see it, before
            // another opens: cldmemory stops answering when any stream closes, so a close it
            // sees after the new stream opened would lose the new session at once.
            old.discard();
            tokio::time::sleep(SETTLE_AFTER_CLOSE).await;
        }
        // A handshake lost to a race (the old stream's close reaching the service after the
        // new stream opened) is tried once more.
        let mut outcome = self.open_with_handshake().await;
        if matches!(outcome, Err(UpstreamError::Timeout(_))) {
            outcome = self.open_with_handshake().await;
        }
        match outcome {
            Ok(session) => {
                self.health.opened();
                *current = Some(session.clone());
                Ok(session)
            }
            Err(error) => {
                self.health.open_failed(&error.to_string());
                Err(error)
            }
        }
    }

    async fn open_with_handshake(self: &Arc<Self>) -> Result<Arc<Session>, UpstreamError> {
        let limit = self.settings.connect_timeout * 5;
        let session = tokio::time::timeout(limit, self.open())
            .await
            .map_err(|_| UpstreamError::Timeout(limit))??;
        match self.handshake_on(&session).await {
            Ok(()) => Ok(session),
            Err(error) => {
                session.discard();
                Err(error)
            }
        }
    }

    /// How long the handshake's answers may take: a child process may still be starting.
    fn handshake_limit(&self) -> Duration {
        match self.target {
            UpstreamTarget::Stdio(_) => self.settings.timeout,
            _ => self
                .settings
                .ping_timeout
                .max(self.settings.connect_timeout),
        }
    }

    /// A request on a session being opened, answered within the handshake's limit.
    async fn handshake_request(
        &self,
        session: &Arc<Session>,
        method: &str,
        params: Value,
    ) -> Result<Value, UpstreamError> {
        let limit = self.handshake_limit();
        let mut pending = self.start_on(session, method, Some(params)).await?;
        let answer = tokio::time::timeout(limit, &mut pending.answer).await;
        pending.done = true;
        match answer {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(_)) => Err(UpstreamError::Closed),
            Err(_) => Err(UpstreamError::Timeout(limit)),
        }
    }

    async fn handshake_on(&self, session: &Arc<Session>) -> Result<(), UpstreamError> {
        let params = json!({
            "protocolVersion": ASKED_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "memgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let answer = self
            .handshake_request(session, "initialize", params)
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
                .handshake_request(session, "tools/list", json!({}))
                .await?;
            answer.get("result").cloned()
        } else {
            None
        };
        *guard(&self.handshake) = Some(Handshake { initialize, tools });
        Ok(())
    }

    /// Asks for the tool list again (it changed). Boxed: it opens a session, whose reader
    /// calls it.
    fn refresh_tools(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move { self.refresh_tools_now().await })
    }

    async fn refresh_tools_now(self: Arc<Self>) {
        match self.call("tools/list", Some(json!({})), Resend::Safe).await {
            Ok(answer) => {
                if let Some(tools) = answer.get("result").cloned() {
                    if let Some(handshake) = guard(&self.handshake).as_mut() {
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
                    authorization: self.settings.authorization.clone(),
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
            child: Mutex::new(child),
            heard: Mutex::new(Instant::now()),
            probe: tokio::sync::Mutex::new(()),
            health: self.health.clone(),
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
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(url.clone())
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(authorization) = &self.settings.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let request = request
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
                authorization: self.settings.authorization.clone(),
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
                session.end(Loss::Ended);
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
                session.end(Loss::Ended);
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
        session.heard_now();
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
