//! cldmemory's JSON-RPC: `initialize`, `notifications/initialized`, `ping`, `tools/list`,
//! `tools/call`; anything else `-32601`.

use serde_json::{json, Value};

use crate::service::MemoryService;
use crate::tools;

/// Protocol revisions the server speaks (its SDK's), newest first.
pub const PROTOCOL_VERSIONS: [&str; 3] = ["2025-03-26", "2024-11-05", "2024-10-07"];

/// What `initialize` answers with.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `MCP_SERVER_NAME`.
    pub name: String,
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn result(id: Value, result: Value) -> Value {
    json!({"result": result, "jsonrpc": "2.0", "id": id})
}

/// The answer to one JSON-RPC message, if it wants one. `client_metadata` is the session's
/// `Memory-Metadata`, added to `store_memory` calls as `_clientMetadata`.
pub async fn handle(
    service: &MemoryService,
    info: &ServerInfo,
    message: Value,
    client_metadata: Option<&str>,
) -> Option<Value> {
    let id = message.get("id").cloned();
    let method = message.get("method").and_then(Value::as_str);
    let Some(method) = method else {
        // A response from the client, or nonsense: nothing to answer.
        return id.map(|id| error(id, -32600, "Invalid Request"));
    };
    let id = id?; // notifications get no answer
    let params = message.get("params");
    let answer = match method {
        "initialize" => {
            let asked = params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str);
            let version = asked
                .filter(|v| PROTOCOL_VERSIONS.contains(v))
                .unwrap_or(PROTOCOL_VERSIONS[0]);
            result(
                id,
                json!({"protocolVersion": version, "capabilities": {"tools": {}},
                       "serverInfo": {"name": info.name, "version": "1.0.0"}}),
            )
        }
        "ping" => result(id, json!({})),
        "tools/list" => result(id, json!({"tools": tools::list()})),
        "tools/call" => {
            let name = params
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut arguments = params.and_then(|p| p.get("arguments")).cloned();
            if let (Some(metadata), Some(Value::Object(args))) =
                (client_metadata, arguments.as_mut())
            {
                if name == "store_memory" || name == "store_memory_chunked" {
                    args.insert(
                        "_clientMetadata".into(),
                        Value::String(metadata.to_string()),
                    );
                }
            }
            result(id, tools::call(service, name, arguments.as_ref()).await)
        }
        _ => error(id, -32601, "Method not found"),
    };
    Some(answer)
}
