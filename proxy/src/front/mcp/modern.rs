//! The 2026-07-28 revision's requests ("modern" in the specification's words): no session and
//! no `initialize`; every request carries its protocol version and the client's capabilities
//! in `params._meta`, mirrored on HTTP in the `MCP-Protocol-Version`, `Mcp-Method` and
//! `Mcp-Name` headers, which must agree with the body.
//!
//! This module tells a modern request from a legacy one ([`is_modern`]), checks it as the
//! specification says ([`check`]), and shapes what goes back ([`complete`]). Serving it is
//! `crate::front::mcp::stateless`.

use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};

use super::front::PROTOCOL_VERSIONS;
use super::jsonrpc::{self, Message};

/// The revisions served without a session, newest first.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// Every `_meta` key the protocol reserves for itself (`io.modelcontextprotocol/…`).
const META_PREFIX: &str = "io.modelcontextprotocol/";

/// `-32602`: a required `_meta` field is missing.
pub const INVALID_PARAMS: i64 = -32602;
/// `-32020`: the headers and the body disagree, or a required header is missing.
pub const HEADER_MISMATCH: i64 = -32020;
/// `-32022`: a protocol version memgate does not serve.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Every revision memgate serves, newest first: the modern ones, then those with a session.
pub fn supported_versions() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .chain(PROTOCOL_VERSIONS.iter())
        .copied()
        .collect()
}

/// Whether a POST to `/mcp` is of the modern era: its `MCP-Protocol-Version` is none of the
/// session revisions (a modern or an unknown one, answered as the modern era answers it), or,
/// without the header, its body carries a modern protocol version in `_meta`.
pub fn is_modern(headers: &HeaderMap, body: &Value) -> bool {
    match header(headers, PROTOCOL_VERSION_HEADER) {
        Some(_) => names_modern_version(headers),
        None => meta(body).is_some_and(|meta| meta.contains_key(META_VERSION)),
    }
}

/// Whether `MCP-Protocol-Version` names none of the session revisions (a modern or an
/// unknown one).
pub fn names_modern_version(headers: &HeaderMap) -> bool {
    header(headers, PROTOCOL_VERSION_HEADER).is_some_and(|v| !PROTOCOL_VERSIONS.contains(&v))
}

/// A modern request refused: the HTTP status and the JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub body: Value,
}

impl Refusal {
    fn new(status: StatusCode, id: Value, code: i64, message: &str) -> Self {
        Self {
            status,
            body: jsonrpc::error(id, code, message),
        }
    }

    fn bad_request(id: Value, code: i64, message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, id, code, message)
    }
}

/// A modern message that passed the checks, its `_meta` without the protocol's own keys
/// (the legacy service, spoken to in a session revision, is sent none of them).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub message: Message,
    /// `io.modelcontextprotocol/clientInfo`, when given.
    pub client_info: Option<Value>,
    /// `io.modelcontextprotocol/clientCapabilities`.
    pub client_capabilities: Option<Value>,
}

/// Checks a modern message against its headers, as the specification's "Server Validation"
/// and "Per-request protocol fields" say, in this order: one message, not a batch; the
/// headers present; the protocol version's header and `_meta` equal; the version served; the
/// required `_meta` fields present; `Mcp-Method` and `Mcp-Name` equal to the body's.
pub fn check(headers: &HeaderMap, body: Value) -> Result<Checked, Refusal> {
    if body.is_array() {
        return Err(Refusal::bad_request(
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "Invalid Request: a batch is not a message in protocol version 2026-07-28",
        ));
    }
    let message = Message::parse(body).map_err(|answer| Refusal {
        status: StatusCode::BAD_REQUEST,
        body: answer,
    })?;
    let (id, method, params) = match &message {
        Message::Request { id, method, params } => (id.clone(), method.as_str(), params),
        Message::Notification { method, params } => (Value::Null, method.as_str(), params),
        Message::Response { id, .. } => {
            return Err(Refusal::bad_request(
                id.clone(),
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: memgate sent no request to answer",
            ))
        }
    };
    let mismatch = |message: String| Refusal::bad_request(id.clone(), HEADER_MISMATCH, &message);
    let header_version = header(headers, PROTOCOL_VERSION_HEADER).ok_or_else(|| {
        mismatch("Header mismatch: MCP-Protocol-Version header is required".into())
    })?;
    let meta = params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object);
    let body_version = meta
        .and_then(|m| m.get(META_VERSION))
        .and_then(Value::as_str);
    if let Some(body_version) = body_version {
        if body_version != header_version {
            return Err(mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value '{header_version}' does not \
                 match body value '{body_version}'"
            )));
        }
    }
    if !MODERN_VERSIONS.contains(&header_version) {
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            body: json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": UNSUPPORTED_PROTOCOL_VERSION,
                "message": "Unsupported protocol version",
                "data": {"supported": supported_versions(), "requested": header_version},
            }}),
        });
    }
    for (field, name) in [
        (META_VERSION, "protocolVersion"),
        (META_CAPABILITIES, "clientCapabilities"),
    ] {
        if !meta.is_some_and(|m| m.contains_key(field)) {
            return Err(Refusal::bad_request(
                id.clone(),
                INVALID_PARAMS,
                &format!("Invalid params: _meta[\"{META_PREFIX}{name}\"] is required"),
            ));
        }
    }
    check_mirrored(headers, method, params.as_ref()).map_err(mismatch)?;
    let client_info = meta.and_then(|m| m.get(META_CLIENT_INFO)).cloned();
    let client_capabilities = meta.and_then(|m| m.get(META_CAPABILITIES)).cloned();
    Ok(Checked {
        message: without_protocol_meta(message),
        client_info,
        client_capabilities,
    })
}

/// `Mcp-Method` equal to the method, and `Mcp-Name` to `params.name` (or `params.uri`) where
/// the method has one.
fn check_mirrored(headers: &HeaderMap, method: &str, params: Option<&Value>) -> Result<(), String> {
    let header_method = header(headers, METHOD_HEADER)
        .ok_or_else(|| "Header mismatch: Mcp-Method header is required".to_string())?;
    if header_method != method {
        return Err(format!(
            "Header mismatch: Mcp-Method header value '{header_method}' does not match body value '{method}'"
        ));
    }
    let named = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return Ok(()),
    };
    let body_name = params
        .and_then(|p| p.get(named))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let raw = headers
        .get(NAME_HEADER)
        .ok_or_else(|| "Header mismatch: Mcp-Name header is required".to_string())?;
    let header_name = decode_header_value(raw.as_bytes())
        .ok_or_else(|| "Header mismatch: Mcp-Name header value is malformed".to_string())?;
    if header_name != body_name {
        return Err(format!(
            "Header mismatch: Mcp-Name header value '{header_name}' does not match body value '{body_name}'"
        ));
    }
    Ok(())
}

/// A header value as the client meant it: plain visible ASCII, or `=?base64?…?=` (UTF-8).
fn decode_header_value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    if let Some(encoded) = text
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    text.bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        .then(|| text.to_string())
}

/// The message with the protocol's own `_meta` keys removed (and `_meta` itself when nothing
/// else is left): what the legacy service, spoken to in a session revision, is sent.
fn without_protocol_meta(message: Message) -> Message {
    let strip = |params: Option<Value>| {
        params.map(|mut params| {
            if let Some(Value::Object(meta)) = params.get_mut("_meta") {
                meta.retain(|key, _| !key.starts_with(META_PREFIX));
                if meta.is_empty() {
                    if let Value::Object(map) = &mut params {
                        map.remove("_meta");
                    }
                }
            }
            params
        })
    };
    match message {
        Message::Request { id, method, params } => Message::Request {
            id,
            method,
            params: strip(params),
        },
        Message::Notification { method, params } => Message::Notification {
            method,
            params: strip(params),
        },
        response => response,
    }
}

/// How long a client may keep a list or discovery result (`ttlMs`), and with whom it may
/// share it: memgate's are the same for every user (`public`).
pub const LIST_TTL_MS: u64 = 60_000;

/// A result as a modern client reads it: `resultType: complete`, memgate's `serverInfo` in
/// `_meta`, and, for `cacheable` results, the caching hints.
pub fn complete(mut result: Value, server_info: &Value, cacheable: bool) -> Value {
    let Value::Object(map) = &mut result else {
        return result;
    };
    map.entry("resultType")
        .or_insert_with(|| Value::String("complete".into()));
    let meta = map
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert(META_SERVER_INFO.into(), server_info.clone());
    }
    if cacheable {
        map.entry("ttlMs").or_insert_with(|| json!(LIST_TTL_MS));
        map.entry("cacheScope")
            .or_insert_with(|| Value::String("public".into()));
    }
    result
}

/// The HTTP status of a modern JSON-RPC error answer: `404` for an unknown method, `400` for
/// the protocol's own refusals, `200` otherwise (the error is the answer).
pub fn status_of_error(answer: &Value) -> StatusCode {
    match answer.pointer("/error/code").and_then(Value::as_i64) {
        Some(jsonrpc::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        Some(INVALID_PARAMS | HEADER_MISMATCH | UNSUPPORTED_PROTOCOL_VERSION) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::OK,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn meta(body: &Value) -> Option<&Map<String, Value>> {
    body.get("params")?.get("_meta")?.as_object()
}

#[cfg(test)]
mod tests;
