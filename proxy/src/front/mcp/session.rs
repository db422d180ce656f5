//! Client sessions: who a client is (its metadata, its tenant, its route), the messages
//! waiting to go out on its event stream, and its requests in flight (for cancellation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::AbortHandle;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::front::routing::RoutePath;
use crate::keys::Scope;
use crate::metrics::Metrics;

/// How a client reaches memgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP+SSE (2024-11-05): answers go on the session's event stream.
    Sse,
    /// Streamable HTTP: answers go in the POST's response.
    Streamable,
    /// This process's stdin and stdout.
    Stdio,
    /// Streamable HTTP without a session (2026-07-28): one request, answered in its response.
    Stateless,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Streamable => "streamable",
            Self::Stdio => "stdio",
            Self::Stateless => "stateless",
        }
    }
}

/// Who opened a session, as the front needs to know it.
#[derive(Debug, Clone)]
pub struct SessionIdentity {
    /// `Memory-Metadata` (or `?memoryMetadata=`): stamped on the memories it stores.
    pub metadata: Option<String>,
    pub scope: Scope,
    /// Fast or legacy, chosen once per session.
    pub route: RoutePath,
    /// Without a session (2026-07-28): who the client is across its requests, for
    /// read-your-writes (`crate::core::Core::note_own_write`); `None` for a session, which
    /// remembers its own writes.
    pub client: Option<String>,
}

pub struct ClientSession {
    pub id: String,
    pub transport: Transport,
    pub identity: SessionIdentity,
    outbound: mpsc::UnboundedSender<Value>,
    stream: Mutex<Option<mpsc::UnboundedReceiver<Value>>>,
    in_flight: Mutex<HashMap<String, AbortHandle>>,
    last_used: Mutex<Instant>,
    /// Memories this session stored that a worker may not have stored yet: its next search
    /// waits for them, as cldmemory's store returns only once the memory is searchable.
    unsearchable: Mutex<Vec<uuid::Uuid>>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("id", &self.id)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientSession {
    /// A session of its own, kept in no table: [`Sessions::open`] keeps the ones clients
    /// name; a stateless request has one for as long as it is answered.
    pub fn new(id: String, transport: Transport, identity: SessionIdentity) -> Self {
        let (outbound, stream) = mpsc::unbounded_channel();
        Self {
            id,
            transport,
            identity,
            outbound,
            stream: Mutex::new(Some(stream)),
            in_flight: Mutex::new(HashMap::new()),
            last_used: Mutex::new(Instant::now()),
            unsearchable: Mutex::new(Vec::new()),
        }
    }

    /// Queues a message for the session's event stream.
    pub fn send(&self, message: Value) {
        let _ = self.outbound.send(message);
    }

    /// The receiving end of the event stream; `None` once a stream took it.
    pub fn take_stream(&self) -> Option<mpsc::UnboundedReceiver<Value>> {
        lock(&self.stream).take()
    }

    /// Returns the event stream's receiving end (its stream was closed).
    pub fn give_back_stream(&self, receiver: mpsc::UnboundedReceiver<Value>) {
        *lock(&self.stream) = Some(receiver);
    }

    /// Remembers a request in flight, to abort it when the client cancels it.
    pub fn track(&self, request_id: &Value, handle: AbortHandle) {
        lock(&self.in_flight).insert(request_id.to_string(), handle);
    }

    pub fn untrack(&self, request_id: &Value) {
        lock(&self.in_flight).remove(&request_id.to_string());
    }

    /// Aborts a request in flight: the client cancelled it.
    pub fn cancel(&self, request_id: &Value) -> bool {
        match lock(&self.in_flight).remove(&request_id.to_string()) {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    /// A memory this session stored, not yet searchable.
    pub fn stored(&self, id: uuid::Uuid) {
        lock(&self.unsearchable).push(id);
    }

    /// The memories this session stored since its last search (now forgotten).
    pub fn take_unsearchable(&self) -> Vec<uuid::Uuid> {
        std::mem::take(&mut *lock(&self.unsearchable))
    }

    pub fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    fn abort_all(&self) {
        for (_, handle) in lock(&self.in_flight).drain() {
            handle.abort();
        }
    }
}

/// Every open session, by id.
pub struct Sessions {
    open: Mutex<HashMap<String, Arc<ClientSession>>>,
    metrics: Metrics,
    max_sessions: usize,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// Too many sessions are open.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many MCP sessions are open ({0})")]
pub struct TooManySessions(pub usize);

impl Sessions {
    pub fn new(metrics: Metrics, max_sessions: usize) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            metrics,
            max_sessions,
        }
    }

    /// Opens a session under `id` (a new UUID).
    pub fn open(
        &self,
        id: String,
        transport: Transport,
        identity: SessionIdentity,
    ) -> Result<Arc<ClientSession>, TooManySessions> {
        let session = Arc::new(ClientSession::new(id, transport, identity));
        let mut open = lock(&self.open);
        if open.len() >= self.max_sessions {
            return Err(TooManySessions(self.max_sessions));
        }
        open.insert(session.id.clone(), session.clone());
        self.metrics
            .front
            .mcp_sessions
            .with_label_values(&[transport.as_str()])
            .inc();
        Ok(session)
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &str) -> Option<Arc<ClientSession>> {
        let session = lock(&self.open).get(id).cloned();
        if let Some(session) = &session {
            session.touch();
        }
        session
    }

    /// Closes a session: its requests in flight are aborted, its stream ends.
    pub fn close(&self, id: &str) -> bool {
        let removed = lock(&self.open).remove(id);
        match removed {
            Some(session) => {
                session.abort_all();
                self.metrics
                    .front
                    .mcp_sessions
                    .with_label_values(&[session.transport.as_str()])
                    .dec();
                true
            }
            None => false,
        }
    }

    /// Closes every session (shutdown).
    pub fn close_all(&self) {
        let ids: Vec<String> = lock(&self.open).keys().cloned().collect();
        for id in ids {
            self.close(&id);
        }
    }

    /// Closes Streamable HTTP sessions unused for `idle` (their clients went away without a
    /// `DELETE`); event-stream sessions end with their stream.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let stale: Vec<String> = lock(&self.open)
            .values()
            .filter(|s| s.transport == Transport::Streamable && s.idle_for() > idle)
            .map(|s| s.id.clone())
            .collect();
        stale.iter().filter(|id| self.close(id)).count()
    }

    /// Sends a message to every open session (a tool list change).
    pub fn broadcast(&self, message: &Value) {
        for session in lock(&self.open).values() {
            session.send(message.clone());
        }
    }
}
