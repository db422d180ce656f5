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
//!
//! The parts: [`session`] (one session: how its messages go out, what waits for answers),
//! [`pending`] (a call waiting for its answer), [`handshake`] (`initialize` and the tool list),
//! one file per transport for opening a session and reading its answers ([`sse`],
//! [`streamable`], [`stdio`]), and [`health`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::jsonrpc;
use crate::guard::dependency::{CallError, Dependency};
use crate::metrics::Metrics;

mod handshake;
mod health;
mod pending;
mod session;
mod sse;
mod stdio;
mod streamable;

use health::Health;
pub use health::Loss;
pub use pending::PendingCall;
use pending::Unanswered;
use session::{guard, Outgoing, Session};

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

    /// Whether calls to the legacy service are being refused at once (its breaker is open).
    pub fn breaker_open(&self) -> bool {
        self.guard.breaker().state() == crate::guard::breaker::CircuitState::Open
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
                        self.metrics.front.upstream_resent.inc();
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
