//! What cldmemory's tools do to memories, for a call memgate forwards to it: which memories a
//! call changes (so memgate's caches drop them), what its answer shows was created or read, and
//! the client's metadata a forwarded store carries.

use serde_json::Value;
use uuid::Uuid;

use super::tools::memory_ids_in;

/// The tools that store new memories.
const STORE_TOOLS: [&str; 2] = ["store_memory", "store_memory_chunked"];
/// The tools whose answers are memories read (cldmemory counts an access of each).
const READ_TOOLS: [&str; 2] = ["get_memory", "search_memories"];

/// Gives a forwarded store the client's `Memory-Metadata` as cldmemory's `_clientMetadata`
/// argument, as cldmemory's own HTTP transport does for the session's client.
pub fn add_client_metadata(tool: &str, params: &mut Value, metadata: &str) {
    if !STORE_TOOLS.contains(&tool) {
        return;
    }
    if let Some(Value::Object(arguments)) = params.get_mut("arguments") {
        arguments.insert(
            "_clientMetadata".into(),
            Value::String(metadata.to_string()),
        );
    }
}

/// What a forwarded call's answer says memgate's caches must learn.
#[derive(Debug, Clone, PartialEq)]
pub enum Learned {
    /// New memories (which linked themselves into their neighbours' associations).
    Created(Vec<Uuid>),
    /// Memories read: cldmemory counted one more access of each.
    Read(Vec<Uuid>),
    Nothing,
}

/// What the answer `result` to a forwarded `tool` call says changed.
pub fn learned(tool: &str, result: &Value) -> Learned {
    if STORE_TOOLS.contains(&tool) {
        return Learned::Created(memory_ids_in(result));
    }
    if READ_TOOLS.contains(&tool) {
        let read = memory_ids_in(result);
        if !read.is_empty() {
            return Learned::Read(read);
        }
    }
    Learned::Nothing
}

/// The memories a forwarded tool changes, for the caches.
#[derive(Debug, Clone, PartialEq)]
pub enum Touched {
    None,
    Some(Vec<Uuid>),
    /// Memories memgate cannot name (all of them, merged ones, new neighbours' links).
    All,
}

pub fn touched_memories(tool: &str, arguments: Option<&Value>) -> Touched {
    let id = |key: &str| {
        arguments
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
    };
    match tool {
        "update_memory" | "delete_memory" => Touched::Some(id("id").into_iter().collect()),
        "connect_memories" | "remove_association" => {
            Touched::Some(id("sourceId").into_iter().chain(id("targetId")).collect())
        }
        "delete_memories_bulk" => Touched::Some(
            arguments
                .and_then(|a| a.get("ids"))
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|id| Uuid::parse_str(id).ok())
                        .collect()
                })
                .unwrap_or_default(),
        ),
        // New memories link themselves into their neighbours' associations.
        "store_memory" | "store_memory_chunked" => Touched::Some(Vec::new()),
        "delete_all_memories" | "consolidate_memories" => Touched::All,
        _ => Touched::None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn forwarded_tools_name_what_they_change() {
        let a = "0195b4f0-7a3c-4cc2-8d0e-3f1c2b4a5d6e";
        let b = "0195b4f0-7a3c-4cc2-8d0e-3f1c2b4a5d6f";
        let ids = |list: &[&str]| {
            Touched::Some(
                list.iter()
                    .map(|id| Uuid::parse_str(id).expect("uuid"))
                    .collect(),
            )
        };
        assert_eq!(
            touched_memories("update_memory", Some(&json!({"id": a}))),
            ids(&[a])
        );
        assert_eq!(
            touched_memories(
                "connect_memories",
                Some(&json!({"sourceId": a, "targetId": b}))
            ),
            ids(&[a, b])
        );
        assert_eq!(
            touched_memories("delete_memories_bulk", Some(&json!({"ids": [a, "x", b]}))),
            ids(&[a, b])
        );
        assert_eq!(touched_memories("delete_all_memories", None), Touched::All);
        assert_eq!(touched_memories("analyze_memories", None), Touched::None);
    }

    #[test]
    fn forwarded_stores_carry_the_clients_metadata() {
        let mut params = json!({"name": "store_memory", "arguments": {"content": "x"}});
        add_client_metadata("store_memory", &mut params, "user:ann");
        assert_eq!(params["arguments"]["_clientMetadata"], "user:ann");
        let mut read = json!({"name": "get_memory", "arguments": {"id": "x"}});
        add_client_metadata("get_memory", &mut read, "user:ann");
        assert!(read["arguments"].get("_clientMetadata").is_none());
    }
}
