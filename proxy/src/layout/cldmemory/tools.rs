//! The memory tools memgate answers itself: which calls it can take (the rest go to the legacy
//! service), their arguments as the core's requests, and the result texts the legacy service
//! writes for the same data.
//!
//! cldmemory validates arguments with zod: unknown keys are dropped, every other mistake is
//! its own `Error: …` text. memgate takes only arguments it reads exactly as cldmemory does;
//! anything else is [`Plan::Refused`], and forwarded so the legacy's own answer reaches the
//! client (or, with no legacy service, answered with memgate's message).

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::js;
use crate::memory::{SearchRequest, StoreRequest, StoredMemory, UpdateRequest};

/// The tools a complete memory server answers without a legacy service, in cldmemory's order.
pub const CORE_TOOLS: [&str; 5] = [
    "store_memory",
    "search_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
];

/// Every tool cldmemory serves (the metric label of anything else is `other`).
const KNOWN_TOOLS: [&str; 14] = [
    "store_memory",
    "store_memory_chunked",
    "search_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
    "analyze_memories",
    "connect_memories",
    "find_memory_paths",
    "get_association_graph",
    "consolidate_memories",
    "remove_association",
    "delete_memories_bulk",
    "delete_all_memories",
];

/// cldmemory's tools that only read (their access counts aside): sending one twice changes
/// nothing a client would mind, so one lost with memgate's legacy session is sent again.
const READ_ONLY_TOOLS: [&str; 5] = [
    "search_memories",
    "get_memory",
    "analyze_memories",
    "find_memory_paths",
    "get_association_graph",
];

/// Whether a request to the legacy service may be sent again when the session it went out on
/// is lost before the answer: MCP's own methods (lists, reads, ping) and the tools that only
/// read; never a tool that may change memories (or one memgate does not know).
pub fn may_resend(method: &str, params: Option<&Value>) -> bool {
    if method != "tools/call" {
        return true;
    }
    params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .is_some_and(|name| READ_ONLY_TOOLS.contains(&name))
}

/// Whether a tool may change memories (every tool memgate does not know to be a read).
pub fn is_write(tool: &str) -> bool {
    !READ_ONLY_TOOLS.contains(&tool)
}

/// The memories a legacy tool result names: a memory's `id`, a search's rows, a chunked
/// store's `parentId`, `chunkIds` and `memories`. Empty for a text that is no JSON (`Memory
/// not found`, `Error: …`).
pub fn memory_ids_in(result: &Value) -> Vec<Uuid> {
    let Some(text) = result.pointer("/content/0/text").and_then(Value::as_str) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    let mut add = |value: Option<&Value>| {
        if let Some(id) = value
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
        {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    };
    let rows = match &value {
        Value::Array(rows) => rows.iter().collect(),
        Value::Object(_) => {
            add(value.get("id"));
            add(value.get("parentId"));
            for id in value
                .get("chunkIds")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                add(Some(id));
            }
            value
                .get("memories")
                .and_then(Value::as_array)
                .map(|rows| rows.iter().collect())
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    for row in rows {
        add(row.get("id"));
    }
    ids
}

/// The tool's name as a metric label.
pub fn label(name: &str) -> &'static str {
    KNOWN_TOOLS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("other")
}

/// A call the core answers.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalCall {
    Search(SearchRequest),
    Get(Uuid),
    Store(StoreRequest),
    Update(Uuid, UpdateRequest),
    Delete(Uuid),
}

/// What to do with a `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Local(Box<LocalCall>),
    /// A core tool with arguments memgate does not take; the reason, for when no legacy
    /// service can answer instead.
    Refused(String),
    /// Not a tool memgate answers.
    Forward,
}

const STORE_KEYS: [&str; 5] = ["summary", "content", "type", "context", "importance"];
const CONTEXT_KEYS: [&str; 6] = ["location", "people", "mood", "activity", "tags", "source"];
const SEARCH_KEYS: [&str; 10] = [
    "query",
    "type",
    "minImportance",
    "emotionalRange",
    "dateRange",
    "limit",
    "includeAssociations",
    "detailLevel",
    "similarityThreshold",
    "reconstructChunks",
];
const UPDATE_KEYS: [&str; 4] = ["content", "importance", "context", "metadata"];

/// How a `tools/call` of `name` is answered; `local_updates` says whether `update_memory` is
/// answered here (only without a legacy service: with one, it is forwarded).
pub fn plan(name: &str, arguments: Option<&Value>, local_updates: bool) -> Plan {
    let empty = Map::new();
    let arguments = match arguments {
        Some(Value::Object(map)) => map,
        None => &empty,
        Some(_) => return Plan::Refused("arguments must be an object".into()),
    };
    let planned = match name {
        "search_memories" => search(arguments).map(LocalCall::Search),
        "get_memory" => memory_id(arguments).map(LocalCall::Get),
        "store_memory" => read::<StoreRequest>(known(arguments, &STORE_KEYS)).map(LocalCall::Store),
        "delete_memory" => memory_id(arguments).map(LocalCall::Delete),
        "update_memory" if local_updates => memory_id(arguments).and_then(|id| {
            let update = read::<UpdateRequest>(known(arguments, &UPDATE_KEYS))?;
            Ok(LocalCall::Update(id, update))
        }),
        _ => return Plan::Forward,
    };
    match planned {
        Ok(call) => Plan::Local(Box::new(call)),
        Err(reason) => Plan::Refused(reason),
    }
}

/// The arguments with only `keys` (zod drops the others), `context` cut to its own keys.
fn known(arguments: &Map<String, Value>, keys: &[&str]) -> Value {
    let mut kept: Map<String, Value> = arguments
        .iter()
        .filter(|(key, _)| keys.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Some(Value::Object(context)) = kept.get("context") {
        let context = context
            .iter()
            .filter(|(key, _)| CONTEXT_KEYS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        kept.insert("context".into(), Value::Object(context));
    }
    Value::Object(kept)
}

fn read<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|error| error.to_string())
}

/// `search_memories`: `query` is required; `detailLevel` is `compact` unless given.
fn search(arguments: &Map<String, Value>) -> Result<SearchRequest, String> {
    let mut kept = known(arguments, &SEARCH_KEYS);
    if let Value::Object(map) = &mut kept {
        if !map.contains_key("query") {
            return Err("`query` is required".into());
        }
        map.entry("detailLevel")
            .or_insert_with(|| Value::String("compact".into()));
    }
    read(kept)
}

/// The `id` argument, when it is a UUID written as the vector store writes it (anything else
/// is the legacy service's to answer).
fn memory_id(arguments: &Map<String, Value>) -> Result<Uuid, String> {
    let Some(Value::String(text)) = arguments.get("id") else {
        return Err("`id` must be a string".into());
    };
    match Uuid::parse_str(text) {
        Ok(id) if id.hyphenated().to_string() == *text => Ok(id),
        _ => Err(format!("memory id {text:?} is not a UUID")),
    }
}

/// `get_memory`'s text: the memory, or `Memory not found`.
pub fn memory_text(memory: Option<&StoredMemory>) -> String {
    match memory {
        Some(memory) => js::stringify_pretty(&Value::Object(memory.clone())),
        None => "Memory not found".into(),
    }
}

/// `search_memories`' text: the results as an array.
pub fn results_text(results: &[Value]) -> String {
    js::stringify_pretty(&Value::Array(results.to_vec()))
}

/// `delete_memory`'s text (also when the memory did not exist).
pub fn deleted_text(id: Uuid) -> String {
    format!("Memory {id} deleted successfully")
}

/// A failure as cldmemory words it.
pub fn error_text(message: &str) -> String {
    format!("Error: {message}")
}

/// `tools/list` of memgate's own memory server: the core tools in cldmemory's shape (its
/// schema converter lists fields with defaults as required and keeps no bounds).
pub fn core_tool_list() -> Value {
    let string = json!({"type": "string"});
    let number = json!({"type": "number"});
    let boolean = json!({"type": "boolean"});
    let memory_type = json!({"type": "string", "enum": ["episodic", "semantic", "procedural", "emotional", "sensory", "working"]});
    let context = json!({"type": "object", "properties": {
        "location": string, "people": {"type": "array", "items": string}, "mood": string,
        "activity": string, "tags": {"type": "array", "items": string}, "source": string}});
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required});
    let tools = [
        (
            "store_memory",
            "Store a new memory",
            object(
                json!({"summary": string, "content": string, "type": memory_type, "context": context, "importance": number}),
                &["content", "type"],
            ),
        ),
        (
            "search_memories",
            "Search memories by meaning, with optional filters",
            object(
                json!({"query": string, "type": memory_type, "minImportance": number,
                    "emotionalRange": object(json!({"min": number, "max": number}), &["min", "max"]),
                    "dateRange": object(json!({"start": string, "end": string}), &["start", "end"]),
                    "limit": number, "includeAssociations": boolean,
                    "detailLevel": {"type": "string", "enum": ["compact", "full"]},
                    "similarityThreshold": number, "reconstructChunks": boolean}),
                &[
                    "query",
                    "limit",
                    "includeAssociations",
                    "detailLevel",
                    "reconstructChunks",
                ],
            ),
        ),
        (
            "get_memory",
            "Get a memory by its id",
            object(json!({"id": string}), &["id"]),
        ),
        (
            "update_memory",
            "Update a memory",
            object(
                json!({"id": string, "content": string, "importance": number, "context": context, "metadata": {"type": "object"}}),
                &["id"],
            ),
        ),
        (
            "delete_memory",
            "Delete a memory",
            object(json!({"id": string}), &["id"]),
        ),
    ];
    let tools: Vec<Value> = tools
        .into_iter()
        .map(|(name, description, schema)| {
            json!({"name": name, "description": description, "inputSchema": schema,
                   "annotations": annotations(name)})
        })
        .collect();
    json!({ "tools": tools })
}

/// What a core tool does to the memory store, as MCP's tool annotations say it (sent when
/// memgate lists the tools itself; the legacy service's list is relayed as it is). Reads
/// count as reads (`accessCount`), not as changes; an update or a delete made twice leaves
/// what one leaves; no tool reaches beyond the store.
fn annotations(name: &str) -> Value {
    let (read_only, destructive, idempotent) = match name {
        "search_memories" | "get_memory" => (true, false, true),
        "update_memory" => (false, true, true),
        "delete_memory" => (false, true, true),
        _ => (false, false, false),
    };
    json!({"readOnlyHint": read_only, "destructiveHint": destructive,
           "idempotentHint": idempotent, "openWorldHint": false})
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_memories_a_result_names_are_found() {
        use crate::front::mcp::jsonrpc::text_result;
        let a = "0195b4f0-7a3c-4cc2-8d0e-3f1c2b4a5d6e";
        let b = "0195b4f0-7a3c-4cc2-8d0e-3f1c2b4a5d6f";
        let text = |value: serde_json::Value| text_result(value.to_string());
        let ids = |list: &[&str]| -> Vec<Uuid> {
            list.iter()
                .map(|id| Uuid::parse_str(id).expect("uuid"))
                .collect()
        };
        assert_eq!(memory_ids_in(&text(json!({"id": a}))), ids(&[a]));
        assert_eq!(
            memory_ids_in(&text(json!([{"id": a}, {"id": b}, {"id": a}]))),
            ids(&[a, b])
        );
        assert_eq!(
            memory_ids_in(&text(
                json!({"message": "Created 2 memory chunks", "parentId": a, "chunkIds": [b], "memories": [{"id": a}, {"id": b}]})
            )),
            ids(&[a, b])
        );
        assert!(memory_ids_in(&text_result("Memory not found".into())).is_empty());
        assert!(memory_ids_in(&text(json!({"id": "not-a-uuid"}))).is_empty());
    }

    #[test]
    fn only_reads_are_sent_twice() {
        assert!(may_resend("tools/list", None));
        assert!(may_resend(
            "tools/call",
            Some(&json!({"name": "search_memories"}))
        ));
        assert!(!may_resend(
            "tools/call",
            Some(&json!({"name": "store_memory"}))
        ));
        assert!(!may_resend("tools/call", Some(&json!({"name": "mystery"}))));
        assert!(!may_resend("tools/call", None));
    }

    use super::*;

    #[test]
    fn core_calls_with_good_arguments_are_local() {
        let id = "0195b4f0-7a3c-4cc2-8d0e-3f1c2b4a5d6e";
        let args = json!({"id": id, "extra": 1});
        assert!(matches!(
            plan("get_memory", Some(&args), false),
            Plan::Local(call) if matches!(*call, LocalCall::Get(_))
        ));
        let store = json!({"content": "c", "type": "semantic", "_clientMetadata": "a:b",
            "context": {"tags": ["t"], "unknown": 2}});
        let Plan::Local(call) = plan("store_memory", Some(&store), false) else {
            panic!("store is local")
        };
        let LocalCall::Store(request) = *call else {
            panic!("a store")
        };
        assert_eq!(request.context.and_then(|c| c.tags), Some(vec!["t".into()]));
        let search = json!({"query": "q", "limit": 5});
        let Plan::Local(call) = plan("search_memories", Some(&search), false) else {
            panic!("search is local")
        };
        let LocalCall::Search(request) = *call else {
            panic!("a search")
        };
        assert_eq!(
            request.detail_level,
            Some(crate::memory::DetailLevel::Compact)
        );
    }

    #[test]
    fn what_memgate_does_not_read_as_cldmemory_does_is_refused() {
        for (tool, args) in [
            ("get_memory", json!({"id": "not-a-uuid"})),
            (
                "get_memory",
                json!({"id": "0195B4F0-7A3C-4CC2-8D0E-3F1C2B4A5D6E"}),
            ),
            ("search_memories", json!({"limit": 5})),
            ("search_memories", json!({"query": "q", "limit": 2.5})),
            ("store_memory", json!({"content": "c", "type": "dream"})),
        ] {
            assert!(
                matches!(plan(tool, Some(&args), false), Plan::Refused(_)),
                "{tool} {args}"
            );
        }
    }

    #[test]
    fn updates_are_local_only_without_a_legacy_service() {
        let args = json!({"id": "0195b4f0-7a3c-4cc2-8d0e-3f1c2b4a5d6e", "importance": 0.5});
        assert_eq!(plan("update_memory", Some(&args), false), Plan::Forward);
        assert!(matches!(
            plan("update_memory", Some(&args), true),
            Plan::Local(call) if matches!(*call, LocalCall::Update(..))
        ));
        assert_eq!(plan("connect_memories", Some(&args), true), Plan::Forward);
    }
}
