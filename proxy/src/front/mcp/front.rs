//! The MCP front: one JSON-RPC message from a client session, answered.
//!
//! `initialize` is answered as the legacy service answers it (its `serverInfo`,
//! `capabilities`, `instructions`; memgate's own when there is none or it is down), and
//! `tools/list` from the legacy's list. `tools/call` of the memory tools memgate covers
//! ([`tools::plan`]) is answered by the [`Core`] with the legacy's result texts;
//! everything else goes to the legacy service over memgate's own session ([`Upstream`]),
//! keeping memgate's caches coherent with the memories it changes. A session on the legacy
//! route (rollout) has every call forwarded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde_json::{json, Value};
use uuid::Uuid;

use super::jsonrpc::{self, Message};
use super::session::{ClientSession, SessionIdentity, Sessions, TooManySessions, Transport};
use super::shadow::{Outcome as ShadowOutcome, Shadow};
use super::upstream::Upstream;
use crate::config::ShadowConfig;
use crate::core::{row_id, CacheStatus, Core, CoreError, OperationKind, Reads};
use crate::front::error::ApiError;
use crate::front::routing::{RoutePath, Router};
use crate::front::security::WriteLimit;
use crate::keys::Scope;
use crate::layout::cldmemory::tools::{self, LocalCall, Plan};
use crate::layout::parse_metadata;
use crate::memory::SearchRequest;
use crate::metrics::Metrics;

/// Protocol revisions memgate's transports speak, newest first (the initialize-handshake
/// revisions of the current MCP SDKs).
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// What the front needs besides its parts.
#[derive(Debug, Clone)]
pub struct FrontSettings {
    /// How long a forwarded call naming a memory memgate acknowledged waits for it to be
    /// stored before it is sent anyway.
    pub wait_for_stored: Duration,
    /// Forward a store the fast path could not queue to the legacy service.
    pub writes_to_legacy: bool,
    /// The most sessions open at once.
    pub max_sessions: usize,
    /// `limits.writesPerSecondPerTenant`, shared with the REST API.
    pub write_limit: Option<Arc<WriteLimit>>,
    /// `shadow`: which fast-path reads are compared with the legacy service's answers.
    pub shadow: ShadowConfig,
}

pub struct McpFront {
    pub(super) core: Arc<Core>,
    pub(super) upstream: Option<Arc<Upstream>>,
    pub(super) router: Router,
    pub sessions: Sessions,
    pub(super) metrics: Metrics,
    pub(super) settings: FrontSettings,
    /// Fast-path reads compared with the legacy service's answers.
    pub shadow: Arc<Shadow>,
}

impl std::fmt::Debug for McpFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpFront")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// A session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Refused(#[from] ApiError),
    #[error(transparent)]
    Full(#[from] TooManySessions),
}

/// A tool result the core gave, with what a shadow comparison needs of it.
#[derive(Debug, Clone)]
pub(super) struct LocalText {
    pub text: String,
    /// The memories it read.
    pub read: Vec<Uuid>,
    /// Served from memgate's cached search results.
    pub from_cached_results: bool,
}

impl LocalText {
    pub(super) fn answered(text: String, read: Vec<Uuid>, from_cached_results: bool) -> Self {
        Self {
            text,
            read,
            from_cached_results,
        }
    }

    fn written(text: String) -> Self {
        Self::answered(text, Vec::new(), false)
    }
}

/// A tool call's result and how it was reached, for the metrics.
pub(super) struct ToolAnswer {
    /// The JSON-RPC answer: `Ok(result)` or `Err(error message)`.
    pub answer: Result<Value, Value>,
    pub path: RoutePath,
    pub degraded: bool,
}

impl ToolAnswer {
    fn fast(text: String) -> Self {
        Self {
            answer: Ok(jsonrpc::text_result(text)),
            path: RoutePath::Fast,
            degraded: false,
        }
    }

    /// A JSON-RPC error or an `Error: …` text.
    fn failed(&self) -> bool {
        match &self.answer {
            Ok(result) => is_error_text(result),
            Err(_) => true,
        }
    }
}

impl McpFront {
    pub fn new(
        core: Arc<Core>,
        upstream: Option<Arc<Upstream>>,
        router: Router,
        metrics: Metrics,
        settings: FrontSettings,
    ) -> Self {
        Self {
            core,
            upstream,
            router,
            sessions: Sessions::new(metrics.clone(), settings.max_sessions),
            shadow: Arc::new(Shadow::new(settings.shadow.clone(), metrics.clone())),
            metrics,
            settings,
        }
    }

    /// Background work: relaying the legacy service's tool-list changes to every session,
    /// and closing Streamable HTTP sessions left idle.
    pub fn spawn_housekeeping(
        self: &Arc<Self>,
        idle: Duration,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let front = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(idle.min(Duration::from_secs(60)));
            loop {
                ticks.tick().await;
                let closed = front.sessions.close_idle(idle);
                if closed > 0 {
                    tracing::info!(closed, "closed idle MCP sessions");
                }
            }
        }));
        if let Some(upstream) = &self.upstream {
            tasks.push(upstream.spawn_monitor());
            let mut notifications = upstream.notifications();
            let front = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match notifications.recv().await {
                        Ok(message) => {
                            let method = message.get("method").and_then(Value::as_str);
                            if method == Some("notifications/tools/list_changed") {
                                front.sessions.broadcast(&message);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
        }
        tasks
    }

    /// Opens a session for a client whose opening request had these headers; `metadata` is
    /// its `Memory-Metadata` (header or query).
    pub fn open_session(
        &self,
        transport: Transport,
        headers: &HeaderMap,
        metadata: Option<String>,
        scope: Scope,
    ) -> Result<Arc<ClientSession>, OpenError> {
        let id = Uuid::new_v4().to_string();
        let user = metadata.as_deref().map(parse_metadata).and_then(|pairs| {
            pairs
                .get("user")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let route = match &self.upstream {
            None => RoutePath::Fast,
            Some(_) => self
                .router
                .choose_for_session(headers, user.as_deref(), &id)?,
        };
        let identity = SessionIdentity {
            metadata,
            scope,
            route,
            client: None,
        };
        Ok(self.sessions.open(id, transport, identity)?)
    }

    /// The answer to one message, if it wants one. `None` also for a request the client
    /// cancelled meanwhile.
    pub async fn handle(
        self: &Arc<Self>,
        session: &Arc<ClientSession>,
        message: Message,
    ) -> Option<Value> {
        match message {
            Message::Request { id, method, params } => {
                let (answer, abort) = futures::future::abortable(self.clone().answer(
                    session.clone(),
                    method,
                    params,
                ));
                session.track(&id, abort);
                let answer = answer.await;
                session.untrack(&id);
                match answer {
                    Ok(Ok(result)) => Some(jsonrpc::result(id, result)),
                    Ok(Err(mut error)) => {
                        error["id"] = id;
                        Some(error)
                    }
                    Err(_aborted) => None,
                }
            }
            Message::Notification { method, params } => {
                self.notified(session, &method, params).await;
                None
            }
            // memgate sends clients no requests: nothing waits for an answer.
            Message::Response { .. } => None,
        }
    }

    async fn notified(&self, session: &ClientSession, method: &str, params: Option<Value>) {
        match method {
            // The upstream session was initialized by memgate itself.
            "notifications/initialized" => {}
            "notifications/cancelled" => {
                if let Some(request) = params.as_ref().and_then(|p| p.get("requestId")) {
                    // Aborting drops a forwarded call, which cancels it upstream.
                    session.cancel(request);
                }
            }
            _ => {
                if let Some(upstream) = &self.upstream {
                    if let Err(error) = upstream.notify(method, params).await {
                        tracing::debug!(%error, method, "notification not relayed");
                    }
                }
            }
        }
    }

    /// A request's result, or its JSON-RPC error (without the id).
    async fn answer(
        self: Arc<Self>,
        session: Arc<ClientSession>,
        method: String,
        params: Option<Value>,
    ) -> Result<Value, Value> {
        match method.as_str() {
            "initialize" => Ok(self.initialize(params.as_ref()).await),
            "ping" => Ok(json!({})),
            "tools/list" => self.list_tools(params).await,
            "tools/call" => self.call_tool(&session, params).await,
            _ => match &self.upstream {
                Some(_) => self.forward(&method, params).await,
                None => Err(jsonrpc::error(
                    Value::Null,
                    jsonrpc::METHOD_NOT_FOUND,
                    "Method not found",
                )),
            },
        }
    }

    /// The legacy service's `initialize` answer at the revision agreed with this client.
    pub(super) async fn initialize(&self, params: Option<&Value>) -> Value {
        let asked = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str);
        let version = asked
            .filter(|asked| PROTOCOL_VERSIONS.contains(asked))
            .unwrap_or(PROTOCOL_VERSIONS[0]);
        let mut answer = match &self.upstream {
            Some(upstream) => match upstream.ensure_handshake().await {
                Ok(handshake) => handshake.initialize,
                Err(error) => {
                    tracing::warn!(%error, "the legacy service is down: memgate introduces itself");
                    own_introduction()
                }
            },
            None => own_introduction(),
        };
        if let Value::Object(map) = &mut answer {
            map.insert("protocolVersion".into(), Value::String(version.into()));
        }
        answer
    }

    async fn list_tools(&self, params: Option<Value>) -> Result<Value, Value> {
        let Some(upstream) = &self.upstream else {
            return Ok(tools::core_tool_list());
        };
        let paged = params.as_ref().is_some_and(|p| p.get("cursor").is_some());
        if !paged {
            if let Ok(handshake) = upstream.ensure_handshake().await {
                if let Some(tools) = handshake.tools {
                    return Ok(tools);
                }
            }
        }
        match self.forward("tools/list", params).await {
            Ok(tools) => Ok(tools),
            // Down: the core tools memgate answers itself are still there.
            Err(_) if !paged => Ok(tools::core_tool_list()),
            Err(error) => Err(error),
        }
    }

    async fn call_tool(
        self: &Arc<Self>,
        session: &ClientSession,
        params: Option<Value>,
    ) -> Result<Value, Value> {
        let started = Instant::now();
        let name = params
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let tool = tools::label(&name);
        let outcome = self.tool_answer(session, &name, params).await;
        let path = outcome.path.as_str();
        let label = match &outcome.answer {
            _ if outcome.degraded => "degraded",
            Ok(result) if is_error_text(result) => "error",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        self.metrics
            .front
            .mcp_tool_calls
            .with_label_values(&[tool, path, label])
            .inc();
        self.metrics
            .front
            .mcp_tool_duration
            .with_label_values(&[tool, path])
            .observe(started.elapsed().as_secs_f64());
        outcome.answer
    }

    async fn tool_answer(
        self: &Arc<Self>,
        session: &ClientSession,
        name: &str,
        params: Option<Value>,
    ) -> ToolAnswer {
        let identity = &session.identity;
        if let Some(refusal) = self.take_write(&identity.scope, name) {
            return ToolAnswer::fast(tools::error_text(&refusal));
        }
        let arguments = params.as_ref().and_then(|p| p.get("arguments"));
        let plan = if identity.route == RoutePath::Legacy {
            Plan::Forward
        } else {
            tools::plan(name, arguments, self.upstream.is_none())
        };
        let call = match plan {
            Plan::Local(call) => *call,
            Plan::Refused(reason) if self.upstream.is_none() => {
                return ToolAnswer::fast(tools::error_text(&reason));
            }
            Plan::Forward if self.upstream.is_none() => {
                return ToolAnswer::fast(tools::error_text(&format!("Unknown tool: {name}")));
            }
            Plan::Refused(_) | Plan::Forward => {
                return self.forward_tool(session, name, params, false).await;
            }
        };
        let kind = match call {
            LocalCall::Search(_) | LocalCall::Get(_) => OperationKind::Read,
            LocalCall::Store(_) | LocalCall::Update(..) | LocalCall::Delete(_) => {
                OperationKind::Write
            }
        };
        let search = match &call {
            LocalCall::Search(request) => Some(request.clone()),
            _ => None,
        };
        if search.is_some() {
            self.wait_for_own_writes(session).await;
        }
        let shadowed = self.admit_shadow(&call);
        let reads = match shadowed {
            Some(_) => Reads::LeftToLegacy,
            None => Reads::Count,
        };
        let error = match self.local(session, call, reads).await {
            Ok(local) => {
                if let Some((tool, permit)) = shadowed {
                    self.spawn_shadow(&session.identity.scope, tool, params, &local, permit);
                }
                return ToolAnswer::fast(local.text);
            }
            Err(error) => {
                if let Some((tool, _)) = shadowed {
                    // Forwarded below (a read the legacy service counts), or refused.
                    self.shadow.count(tool, ShadowOutcome::FastError);
                }
                error
            }
        };
        let unavailable = error.is_unavailable();
        let mut answer = if self.upstream.is_some() && self.may_forward(kind, &error) {
            self.forward_tool(session, name, params, unavailable).await
        } else {
            ToolAnswer::fast(tools::error_text(&error.to_string()))
        };
        // The fast path and the legacy service both failed a search: down the ladder.
        if let (Some(request), true) = (search, unavailable && answer.failed()) {
            if let Some(text) = self.ladder(&session.identity.scope, request).await {
                answer = ToolAnswer {
                    answer: Ok(jsonrpc::text_result(text)),
                    path: RoutePath::Fast,
                    degraded: true,
                };
            }
        }
        answer
    }

    /// A degraded search: memories with the query's words, else the most read ones; `None`
    /// when neither rung can answer either.
    async fn ladder(&self, scope: &Scope, request: SearchRequest) -> Option<String> {
        let search = request
            .normalize(self.core.default_similarity_threshold())
            .ok()?;
        let answer = self.core.lower_rungs(scope, &search).await?;
        if let Some(level) = answer.degraded {
            self.metrics
                .core
                .degraded
                .with_label_values(&[level.as_str()])
                .inc();
        }
        let listed: Vec<Value> = answer
            .value
            .iter()
            .map(|memory| Value::Object(self.core.listed(memory, search.detail_level)))
            .collect();
        Some(tools::results_text(&listed))
    }

    /// Whether a call the core could not answer may go to the legacy service: one the core
    /// refused (the legacy service's own answer, in its words, reaches the client), else by
    /// the core's rule.
    fn may_forward(&self, kind: OperationKind, error: &CoreError) -> bool {
        error.is_refusal() || error.legacy_may_answer(kind, self.settings.writes_to_legacy)
    }

    /// Waits (bounded) until what this session stored is searchable: cldmemory answers a
    /// store once the memory is in the vector store, so its next search finds it.
    async fn wait_for_own_writes(&self, session: &ClientSession) {
        let scope = &session.identity.scope;
        let own = match &session.identity.client {
            Some(client) => self.core.take_own_writes(scope, client).await,
            None => session.take_unsearchable(),
        };
        for id in own {
            if !self
                .core
                .wait_stored(scope, id, self.settings.wait_for_stored)
                .await
            {
                tracing::warn!(%id, "searching before this session's memory is stored");
            }
        }
    }

    /// A core call's result text, its reads counted by `reads`.
    async fn local(
        &self,
        session: &ClientSession,
        call: LocalCall,
        reads: Reads,
    ) -> Result<LocalText, CoreError> {
        let identity = &session.identity;
        let scope = &identity.scope;
        match call {
            LocalCall::Search(request) => self.search(scope, request, reads).await,
            LocalCall::Get(id) => match self.core.get_counted_by(scope, id, reads).await {
                Ok(answer) => {
                    let memory = self.core.shown(&answer.value.memory()?);
                    Ok(LocalText::answered(
                        tools::memory_text(Some(&memory)),
                        vec![id],
                        false,
                    ))
                }
                Err(CoreError::NotFound(_)) => Ok(LocalText::answered(
                    tools::memory_text(None),
                    Vec::new(),
                    false,
                )),
                Err(error) => Err(error),
            },
            LocalCall::Store(request) => {
                let stored = self
                    .core
                    .store(scope, request, None, identity.metadata.as_deref())
                    .await?;
                match &identity.client {
                    Some(client) => self.core.note_own_write(scope, client, stored.id).await,
                    None => session.stored(stored.id),
                }
                let memory = stored.memory.unwrap_or_default();
                Ok(LocalText::written(tools::memory_text(Some(&memory))))
            }
            LocalCall::Update(id, update) => match self.core.change(scope, id, update).await {
                Ok(memory) => Ok(LocalText::written(tools::memory_text(Some(&memory)))),
                Err(CoreError::NotFound(_)) => Ok(LocalText::written(tools::memory_text(None))),
                Err(error) => Err(error),
            },
            LocalCall::Delete(id) => match self.core.delete(scope, id).await {
                // cldmemory answers the same when there was nothing to delete.
                Ok(()) | Err(CoreError::NotFound(_)) => {
                    Ok(LocalText::written(tools::deleted_text(id)))
                }
                Err(error) => Err(error),
            },
        }
    }

    async fn search(
        &self,
        scope: &Scope,
        request: SearchRequest,
        reads: Reads,
    ) -> Result<LocalText, CoreError> {
        let search = request.normalize(self.core.default_similarity_threshold())?;
        let answer = self.core.search_counted_by(scope, search, reads).await?;
        let read = answer.value.iter().filter_map(row_id).collect();
        let shown: Vec<Value> = answer
            .value
            .iter()
            .map(|memory| Value::Object(self.core.shown(memory)))
            .collect();
        Ok(LocalText::answered(
            tools::results_text(&shown),
            read,
            answer.cache == CacheStatus::Hit,
        ))
    }

    /// One write of the tenant, for a tool that may change memories; past
    /// `limits.writesPerSecondPerTenant`, why not.
    fn take_write(&self, scope: &Scope, tool: &str) -> Option<String> {
        let limit = self.settings.write_limit.as_ref()?;
        if !tools::is_write(tool) {
            return None;
        }
        let wait = limit.take(scope).err()?;
        self.metrics
            .front
            .rejected
            .with_label_values(&["write_limit"])
            .inc();
        Some(format!(
            "Too many writes: this tenant is writing faster than memgate allows \
             (limits.writesPerSecondPerTenant); try again in {:.1} s",
            wait.as_secs_f64().max(0.1)
        ))
    }
}

/// memgate's own `initialize` answer, when no legacy service introduces itself.
pub(super) fn own_introduction() -> Value {
    json!({
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "memgate", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Whether a tool result is one of cldmemory's `Error: …` texts.
pub(super) fn is_error_text(result: &Value) -> bool {
    result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .is_some_and(|text| text.starts_with("Error: "))
        || result.get("isError") == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_recognised() {
        assert!(is_error_text(&jsonrpc::text_result("Error: boom".into())));
        assert!(!is_error_text(&jsonrpc::text_result(
            "Memory not found".into()
        )));
    }
}
