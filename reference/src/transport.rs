//! MCP over HTTP+SSE (the 2024-11-05 transport) as cldmemory serves it: `GET /sse` opens a
//! session (an `endpoint` event naming `/messages?sessionId=…`, header `Mcp-Session-Id`),
//! `POST /messages` answers `202 Accepted` and sends the JSON-RPC answer on the session's
//! stream; `GET /health`, `GET /ping`; anything else a JSON-RPC `-32601` with status 404.
//!
//! Answers are routed as cldmemory routes them ([`SseRouting::NewestStream`], the default):
//! it connects one MCP server to every stream, so the answer to a message goes to the stream
//! opened last (at the time the message arrives), and once any stream closes, answers are
//! dropped until the next `GET /sse`. A message is still processed (its writes happen) when its
//! answer goes nowhere. [`SseRouting::PerSession`] is the kind behaviour, for tests in which
//! several clients share one reference on purpose.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::mcp::{self, ServerInfo};
use crate::service::MemoryService;

/// The largest message body (Express's `10mb`).
const MAX_BODY: usize = 10 * 1024 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Which stream a message's answer goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SseRouting {
    /// cldmemory's: the stream opened last, when the message arrived; nowhere once any stream
    /// has closed, until the next one opens.
    #[default]
    NewestStream,
    /// Each session's own stream.
    PerSession,
}

struct Session {
    events: mpsc::UnboundedSender<Bytes>,
    metadata: Option<String>,
}

struct State {
    service: Arc<MemoryService>,
    info: ServerInfo,
    routing: SseRouting,
    sessions: Mutex<HashMap<String, Session>>,
    /// With [`SseRouting::NewestStream`]: the stream answers go to (cldmemory's one server's
    /// transport), `None` after a stream closed.
    connected: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    started: Instant,
}

impl State {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedSender<Bytes>>> {
        self.connected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the answer to a message posted on a session with these `events` goes.
    fn answer_stream(
        &self,
        events: mpsc::UnboundedSender<Bytes>,
    ) -> Option<mpsc::UnboundedSender<Bytes>> {
        match self.routing {
            SseRouting::PerSession => Some(events),
            SseRouting::NewestStream => self.connected().clone(),
        }
    }
}

/// A running reference; stops when dropped.
pub struct RunningReference {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl RunningReference {
    /// `http://addr` — clients connect to `{url}/sse`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningReference {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn json_response(status: StatusCode, value: Value) -> Response<Body> {
    full(status, "application/json; charset=utf-8", value.to_string())
}

fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    json_response(
        status,
        json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": null}),
    )
}

fn query_param(request: &Request<Incoming>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| decode(value))
    })
}

/// Percent-decoding of a query value (`+` is a space).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header_value(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// Removes its session when the stream's body is dropped (the client went away).
struct SessionGuard {
    state: Arc<State>,
    id: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.state.sessions().remove(&self.id);
        // cldmemory's server loses its transport when any of its streams closes.
        *self.state.connected() = None;
    }
}

fn open_stream(state: &Arc<State>, request: &Request<Incoming>) -> Response<Body> {
    let id = uuid::Uuid::new_v4().to_string();
    let metadata =
        header_value(request, "memory-metadata").or_else(|| query_param(request, "memoryMetadata"));
    let (events, receiver) = mpsc::unbounded_channel();
    let endpoint = format!("event: endpoint\ndata: /messages?sessionId={id}\n\n");
    let _ = events.send(Bytes::from(endpoint));
    *state.connected() = Some(events.clone());
    state
        .sessions()
        .insert(id.clone(), Session { events, metadata });
    let guard = SessionGuard {
        state: state.clone(),
        id: id.clone(),
    };
    let stream = futures::stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
        let event = receiver.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(event)), (receiver, guard)))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        headers.insert("mcp-session-id", value);
    }
    response
}

async fn post_message(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let Some(session_id) =
        query_param(&request, "sessionId").or_else(|| header_value(&request, "mcp-session-id"))
    else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Missing sessionId parameter or Mcp-Session-Id header",
        );
    };
    let (events, metadata) = match state.sessions().get(&session_id) {
        Some(session) => (session.events.clone(), session.metadata.clone()),
        None => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Invalid or expired session ID",
            )
        }
    };
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return full(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                error.to_string(),
            )
        }
    };
    let message = match serde_json::from_slice::<Value>(&body) {
        Ok(message @ Value::Object(_)) => message,
        Ok(_) => {
            return full(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "Invalid message: not a JSON-RPC message",
            )
        }
        Err(error) => {
            return full(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("Invalid message: {error}"),
            )
        }
    };
    let answers = state.answer_stream(events);
    tokio::spawn(async move {
        let answer = mcp::handle(&state.service, &state.info, message, metadata.as_deref()).await;
        match (answer, answers) {
            (Some(answer), Some(stream)) => {
                let _ = stream.send(Bytes::from(format!("event: message\ndata: {answer}\n\n")));
            }
            (Some(_), None) => tracing::debug!("an answer dropped: no stream is connected"),
            (None, _) => {}
        }
    });
    full(StatusCode::ACCEPTED, "text/plain", "Accepted")
}

async fn route(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/sse") => open_stream(&state, &request),
        (&Method::POST, "/messages") => post_message(state, request).await,
        (&Method::GET, "/health") => {
            let ids: Vec<String> = state.sessions().keys().cloned().collect();
            json_response(
                StatusCode::OK,
                json!({"status": "ok", "transport": "sse", "activeSessions": ids.len(),
                       "sessionIds": ids, "uptime": state.started.elapsed().as_secs_f64()}),
            )
        }
        (&Method::GET, "/ping") => json_response(
            StatusCode::OK,
            json!({"timestamp": chrono::Utc::now().timestamp_millis()}),
        ),
        _ => rpc_error(StatusCode::NOT_FOUND, -32601, "Method not found"),
    }
}

/// Serves MCP over HTTP+SSE on `listener`, routing answers as cldmemory does, until the
/// returned handle is stopped or dropped.
pub fn serve(
    listener: TcpListener,
    service: Arc<MemoryService>,
    info: ServerInfo,
) -> std::io::Result<RunningReference> {
    serve_with(listener, service, info, SseRouting::default())
}

/// [`serve`] with the given answer routing.
pub fn serve_with(
    listener: TcpListener,
    service: Arc<MemoryService>,
    info: ServerInfo,
    routing: SseRouting,
) -> std::io::Result<RunningReference> {
    let addr = listener.local_addr()?;
    let (shutdown, mut stopped) = watch::channel(false);
    let state = Arc::new(State {
        service,
        info,
        routing,
        sessions: Mutex::new(HashMap::new()),
        connected: Mutex::new(None),
        started: Instant::now(),
    });
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                },
                _ = stopped.changed() => return,
            };
            // Node's HTTP server (cldmemory's Express) turns Nagle's algorithm off too.
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let mut stop = stopped.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(state, request).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = connection => {}
                    _ = stop.changed() => {}
                }
            });
        }
    });
    Ok(RunningReference {
        addr,
        shutdown,
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(decode("user%3Aann%2Cteam%3Ax"), "user:ann,team:x");
        assert_eq!(decode("a+b"), "a b");
        assert_eq!(decode("100%"), "100%");
    }
}
