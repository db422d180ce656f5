//! MCP over HTTP, on the API port: HTTP+SSE as cldmemory serves it (`GET /sse`,
//! `POST /messages`), and Streamable HTTP (`/mcp`): with a session for the revisions up to
//! 2025-11-25, without one for 2026-07-28 (`super::stateless`).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::event_stream::{EventStream, OnClose};
use super::front::{McpFront, OpenError};
use super::jsonrpc::{self, Message};
use super::modern;
use super::session::{ClientSession, Transport};
use super::sse_events;
use crate::front::body::read_body;
use crate::front::error::ApiError;
use crate::front::http::{BoxError, Response};
use crate::keys::Scope;

pub const SESSION_HEADER: &str = "mcp-session-id";
const METADATA_HEADER: &str = "memory-metadata";

/// What the HTTP transports need besides the front.
#[derive(Debug, Clone)]
pub struct HttpTransports {
    pub front: Arc<McpFront>,
    pub max_body_bytes: usize,
    /// Streamable HTTP answers requests on an event stream instead of one JSON body.
    pub sse_answers: bool,
}

pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut response = http::Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON-RPC error sent as the HTTP answer (id `null`).
fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = serde_json::json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": null});
    respond(status, "application/json", body.to_string())
}

pub(super) fn json(status: StatusCode, value: &Value) -> Response {
    respond(status, "application/json", value.to_string())
}

fn event_stream_response<S>(events: S) -> Response
where
    S: futures::Stream<Item = Bytes> + Send + 'static,
{
    let frames = events.map(|bytes| Ok::<_, BoxError>(Frame::data(bytes)));
    let mut response = http::Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// A query parameter, percent-decoded (`+` is a space).
fn query_param(parts: &http::request::Parts, name: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The client's metadata string: the `Memory-Metadata` header, else `?memoryMetadata=`.
pub(super) fn client_metadata(parts: &http::request::Parts) -> Option<String> {
    header(parts, METADATA_HEADER)
        .map(str::to_string)
        .or_else(|| query_param(parts, "memoryMetadata"))
}

fn open_failed(error: OpenError) -> Response {
    match error {
        OpenError::Refused(error) => error.into_response(),
        OpenError::Full(error) => {
            ApiError::unavailable("too_many_sessions", error.to_string()).into_response()
        }
    }
}

impl HttpTransports {
    fn open(
        &self,
        transport: Transport,
        parts: &http::request::Parts,
        scope: Result<Scope, ApiError>,
    ) -> Result<Arc<ClientSession>, Box<Response>> {
        let scope = scope.map_err(|error| Box::new(error.into_response()))?;
        self.front
            .open_session(transport, &parts.headers, client_metadata(parts), scope)
            .map_err(|error| Box::new(open_failed(error)))
    }

    /// `GET /sse`: a new session; its first event names where to post messages.
    pub fn open_sse(
        &self,
        parts: &http::request::Parts,
        scope: Result<Scope, ApiError>,
    ) -> Response {
        let session = match self.open(Transport::Sse, parts, scope) {
            Ok(session) => session,
            Err(response) => return *response,
        };
        let Some(receiver) = session.take_stream() else {
            return ApiError::new(
                StatusCode::CONFLICT,
                "stream_taken",
                "the session has a stream",
            )
            .into_response();
        };
        let endpoint =
            sse_events::event("endpoint", &format!("/messages?sessionId={}", session.id));
        let stream = EventStream::new(
            Some(endpoint),
            receiver,
            OnClose::CloseSession(self.front.clone(), session.id.clone()),
        );
        named(event_stream_response(stream), &session)
    }

    /// `POST /messages?sessionId=…`: `202 Accepted` at once, the answer on the session's
    /// stream; refusals as cldmemory words them.
    pub async fn post_sse_message<B>(
        &self,
        parts: http::request::Parts,
        body: B,
        scope: Result<Scope, ApiError>,
    ) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(id) = query_param(&parts, "sessionId")
            .or_else(|| header(&parts, SESSION_HEADER).map(str::to_string))
        else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "Missing sessionId parameter or Mcp-Session-Id header",
            );
        };
        let Some(session) = self
            .front
            .sessions
            .get(&id)
            .filter(|session| belongs_to(session, &scope))
        else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "Invalid or expired session ID",
            );
        };
        // Refused as the MCP SDK's SSE transport (cldmemory's) refuses it: a web page's form
        // or `text/plain` post is no message.
        let content_type = header(&parts, CONTENT_TYPE.as_str()).unwrap_or_default();
        let essence = crate::front::security::media_type(content_type);
        if essence != "application/json" {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("Error: Unsupported content-type: {essence}"),
            );
        }
        let body = match read_body(&parts.headers, body, self.max_body_bytes).await {
            Ok(body) => body,
            Err(error) => return error.into_response(),
        };
        let message = match serde_json::from_slice::<Value>(&body) {
            Ok(value) => match Message::parse(value) {
                Ok(message) => message,
                Err(_) => {
                    return respond(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        "Invalid message: not a JSON-RPC 2.0 message",
                    )
                }
            },
            Err(error) => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("Invalid message: {error}"),
                )
            }
        };
        let front = self.front.clone();
        tokio::spawn(async move {
            if let Some(answer) = front.handle(&session, message).await {
                session.send(answer);
            }
        });
        respond(StatusCode::ACCEPTED, "text/plain", "Accepted")
    }

    /// `/mcp`: Streamable HTTP.
    pub async fn streamable<B>(
        &self,
        parts: http::request::Parts,
        body: B,
        scope: Result<Scope, ApiError>,
    ) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Another revision than those with a session: 2026-07-28 (or one unknown, refused as
        // that revision refuses it), which has no stream to GET and no session to DELETE.
        let modern = modern::names_modern_version(&parts.headers);
        match parts.method {
            Method::POST => self.streamable_post(parts, body, scope).await,
            _ if modern => {
                let mut response = rpc_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    jsonrpc::SERVER_ERROR,
                    "Method not allowed: protocol version 2026-07-28 has no session and no \
                     stream of its own; POST each request",
                );
                response
                    .headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
                response
            }
            Method::GET => self.streamable_get(&parts, &scope),
            Method::DELETE => match self.existing_session(&parts, &scope) {
                Ok(session) => {
                    self.front.sessions.close(&session.id);
                    respond(StatusCode::OK, "text/plain", "")
                }
                Err(response) => *response,
            },
            _ => {
                let mut response = rpc_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    jsonrpc::SERVER_ERROR,
                    "Method not allowed.",
                );
                response.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static("GET, POST, DELETE"),
                );
                response
            }
        }
    }

    /// The session the request names, if it is open and the request's tenant's (a session of
    /// another tenant is not found).
    fn existing_session(
        &self,
        parts: &http::request::Parts,
        scope: &Result<Scope, ApiError>,
    ) -> Result<Arc<ClientSession>, Box<Response>> {
        let Some(id) = header(parts, SESSION_HEADER) else {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::SERVER_ERROR,
                "Bad Request: Mcp-Session-Id header is required",
            )));
        };
        self.front
            .sessions
            .get(id)
            .filter(|session| session.transport == Transport::Streamable)
            .filter(|session| belongs_to(session, scope))
            .ok_or_else(|| {
                Box::new(rpc_error(
                    StatusCode::NOT_FOUND,
                    -32001,
                    "Session not found",
                ))
            })
    }

    /// `GET /mcp`: the session's stream of messages not answering a POST.
    fn streamable_get(
        &self,
        parts: &http::request::Parts,
        scope: &Result<Scope, ApiError>,
    ) -> Response {
        if !header(parts, ACCEPT.as_str())
            .is_some_and(|accept| accepts(accept, "text/event-stream"))
        {
            return rpc_error(
                StatusCode::NOT_ACCEPTABLE,
                jsonrpc::SERVER_ERROR,
                "Not Acceptable: Client must accept text/event-stream",
            );
        }
        let session = match self.existing_session(parts, scope) {
            Ok(session) => session,
            Err(response) => return *response,
        };
        let Some(receiver) = session.take_stream() else {
            return rpc_error(
                StatusCode::CONFLICT,
                jsonrpc::SERVER_ERROR,
                "Conflict: Only one SSE stream is allowed per session",
            );
        };
        let stream = EventStream::new(None, receiver, OnClose::GiveBack(Arc::downgrade(&session)));
        event_stream_response(stream)
    }

    /// `POST /mcp`: one message or a batch; requests answered in the response (JSON),
    /// notifications and responses `202`.
    async fn streamable_post<B>(
        &self,
        parts: http::request::Parts,
        body: B,
        scope: Result<Scope, ApiError>,
    ) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let accept = header(&parts, ACCEPT.as_str()).unwrap_or_default();
        if !(accepts(accept, "application/json") && accepts(accept, "text/event-stream")) {
            return rpc_error(
                StatusCode::NOT_ACCEPTABLE,
                jsonrpc::SERVER_ERROR,
                "Not Acceptable: Client must accept both application/json and text/event-stream",
            );
        }
        if !header(&parts, CONTENT_TYPE.as_str()).is_some_and(|t| t.starts_with("application/json"))
        {
            return rpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                jsonrpc::SERVER_ERROR,
                "Unsupported Media Type: Content-Type must be application/json",
            );
        }
        let body = match read_body(&parts.headers, body, self.max_body_bytes).await {
            Ok(body) => body,
            Err(error) => return error.into_response(),
        };
        let value = match serde_json::from_slice::<Value>(&body) {
            Ok(value) => value,
            Err(error) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    jsonrpc::PARSE_ERROR,
                    &format!("Parse error: {error}"),
                )
            }
        };
        if modern::is_modern(&parts.headers, &value) {
            return self.stateless(&parts, value, scope).await;
        }
        let (messages, batch) = match value {
            Value::Array(items) if !items.is_empty() => (items, true),
            Value::Array(_) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: empty batch",
                )
            }
            value => (vec![value], false),
        };
        let mut parsed = Vec::with_capacity(messages.len());
        for message in messages {
            match Message::parse(message) {
                Ok(message) => parsed.push(message),
                Err(answer) => return json(StatusCode::BAD_REQUEST, &answer),
            }
        }
        let initializing = parsed
            .iter()
            .any(|m| matches!(m, Message::Request { method, .. } if method == "initialize"));
        let session = if initializing {
            if parsed.len() > 1 {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: Only one initialization request is allowed",
                );
            }
            match self.open(Transport::Streamable, &parts, scope) {
                Ok(session) => session,
                Err(response) => return *response,
            }
        } else {
            match self.existing_session(&parts, &scope) {
                Ok(session) => session,
                Err(response) => return *response,
            }
        };
        let has_requests = parsed.iter().any(|m| matches!(m, Message::Request { .. }));
        if has_requests && self.sse_answers {
            return self.streamable_events(session, parsed, initializing);
        }
        let front = &self.front;
        let answers = futures::future::join_all(
            parsed
                .into_iter()
                .map(|message| answer_of(front, &session, message)),
        )
        .await;
        if !has_requests {
            return respond(StatusCode::ACCEPTED, "text/plain", "");
        }
        let mut answers = answers.into_iter().flatten();
        let body = if batch {
            Value::Array(answers.collect())
        } else {
            answers.next().unwrap_or(Value::Null)
        };
        let response = json(StatusCode::OK, &body);
        if initializing {
            named(response, &session)
        } else {
            response
        }
    }
}

impl HttpTransports {
    /// A POST's requests answered on an event stream: each answer an `event: message` as it
    /// is ready; the stream ends after the last.
    fn streamable_events(
        &self,
        session: Arc<ClientSession>,
        messages: Vec<Message>,
        initializing: bool,
    ) -> Response {
        let (answers, receiver) = tokio::sync::mpsc::unbounded_channel::<Value>();
        for message in messages {
            let (front, session, answers) = (self.front.clone(), session.clone(), answers.clone());
            tokio::spawn(async move {
                if let Some(answer) = answer_of(&front, &session, message).await {
                    let _ = answers.send(answer);
                }
            });
        }
        drop(answers);
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            let answer = receiver.recv().await?;
            Some((sse_events::event("message", &answer.to_string()), receiver))
        });
        let response = event_stream_response(stream);
        if initializing {
            named(response, &session)
        } else {
            response
        }
    }
}

/// A Streamable HTTP message's answer: a request's (`-32800` when the client cancelled it
/// meanwhile); nothing for a notification or a response.
async fn answer_of(
    front: &Arc<McpFront>,
    session: &Arc<ClientSession>,
    message: Message,
) -> Option<Value> {
    let id = match &message {
        Message::Request { id, .. } => Some(id.clone()),
        _ => None,
    };
    let answer = front.handle(session, message).await;
    let id = id?;
    Some(answer.unwrap_or_else(|| jsonrpc::error(id, -32800, "Request cancelled")))
}

/// The response, naming the session it opened (`Mcp-Session-Id`).
fn named(mut response: Response, session: &ClientSession) -> Response {
    if let Ok(id) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, id);
    }
    response
}

/// Whether a request of tenant `scope` may use `session`: one of the session's tenant, or one
/// that names none where naming one is not enforced (no token).
fn belongs_to(session: &ClientSession, scope: &Result<Scope, ApiError>) -> bool {
    match scope {
        Ok(scope) => *scope == session.identity.scope,
        Err(_) => true,
    }
}

/// Whether an `Accept` header takes a media type (or everything).
fn accepts(accept: &str, media_type: &str) -> bool {
    accept.split(',').any(|item| {
        let item = item.split(';').next().unwrap_or_default().trim();
        item == media_type || item == "*/*"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_are_read_by_item() {
        assert!(accepts(
            "application/json, text/event-stream",
            "text/event-stream"
        ));
        assert!(accepts("*/*", "application/json"));
        assert!(!accepts("text/html", "application/json"));
        assert!(accepts("application/json;q=0.9", "application/json"));
    }
}
