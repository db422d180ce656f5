//! JSON-RPC 2.0 as MCP uses it: what a message is, and the answers memgate writes.

use serde_json::{json, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
/// A server error (the JSON-RPC range's first code): a transport refusal, or the legacy
/// service out of reach.
pub const SERVER_ERROR: i64 = -32000;

/// One JSON-RPC message from a peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that wants an answer under its `id`.
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    /// A call that wants no answer.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// An answer (`result` or `error`) to a request the other side was sent.
    Response { id: Value, message: Value },
}

impl Message {
    /// Reads one message; `Err` with the `-32600` answer (id `null` when it has none) for
    /// anything that is not a JSON-RPC 2.0 message.
    pub fn parse(value: Value) -> Result<Self, Value> {
        let Value::Object(map) = &value else {
            return Err(error(Value::Null, INVALID_REQUEST, "Invalid Request"));
        };
        let id = map.get("id").cloned();
        let valid_id = matches!(
            id,
            None | Some(Value::String(_)) | Some(Value::Number(_)) | Some(Value::Null)
        );
        if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !valid_id {
            return Err(error(
                id.filter(|_| valid_id).unwrap_or(Value::Null),
                INVALID_REQUEST,
                "Invalid Request",
            ));
        }
        let params = map.get("params").cloned();
        match (map.get("method"), id) {
            (Some(Value::String(method)), Some(id)) => Ok(Self::Request {
                id,
                method: method.clone(),
                params,
            }),
            (Some(Value::String(method)), None) => Ok(Self::Notification {
                method: method.clone(),
                params,
            }),
            (None, Some(id)) if map.contains_key("result") || map.contains_key("error") => {
                Ok(Self::Response { id, message: value })
            }
            (_, id) => Err(error(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "Invalid Request",
            )),
        }
    }
}

/// A successful answer, keys in the order the MCP TypeScript SDK writes them.
pub fn result(id: Value, result: Value) -> Value {
    json!({"result": result, "jsonrpc": "2.0", "id": id})
}

/// A failed answer.
pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A tool result of one text item, as every cldmemory tool answers.
pub fn text_result(text: String) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

/// A request memgate sends.
pub fn request(id: Value, method: &str, params: Option<Value>) -> Value {
    let mut message = notification(method, params);
    message["id"] = id;
    message
}

/// A notification memgate sends (or relays); `params` only when there are any.
pub fn notification(method: &str, params: Option<Value>) -> Value {
    let mut message = json!({"jsonrpc": "2.0", "method": method});
    if let Some(params) = params {
        message["params"] = params;
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart() {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        assert!(matches!(
            Message::parse(request),
            Ok(Message::Request { .. })
        ));
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(matches!(
            Message::parse(note),
            Ok(Message::Notification { .. })
        ));
        let answer = json!({"jsonrpc": "2.0", "id": "a", "result": {}});
        assert!(matches!(
            Message::parse(answer),
            Ok(Message::Response { .. })
        ));
    }

    #[test]
    fn what_is_not_json_rpc_is_an_invalid_request() {
        for bad in [
            json!([]),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": {}, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 3}),
            json!({"jsonrpc": "2.0", "id": 4, "method": 7}),
        ] {
            let answer = Message::parse(bad).expect_err("refused");
            assert_eq!(answer["error"]["code"], json!(INVALID_REQUEST));
        }
    }
}
