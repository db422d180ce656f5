//! cldmemory's MCP tools: argument parsing (zod's rules and issue texts), the call, and the
//! result text. A failure is never a JSON-RPC error: the text is `Error: <message>`.

use serde_json::{json, Map, Value};

use crate::javascript;
use crate::json_text::stringify;
use crate::model::MEMORY_TYPES;
use crate::service::{MemoryService, SearchParams, Updates};

/// The tools this reference serves, in cldmemory's order.
pub const TOOL_NAMES: [&str; 9] = [
    "store_memory",
    "search_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
    "connect_memories",
    "remove_association",
    "delete_memories_bulk",
    "delete_all_memories",
];

/// `tools/list`: cldmemory's schema converter keeps types and lists fields with defaults as
/// required; no descriptions or bounds.
pub fn list() -> Value {
    let string = json!({"type": "string"});
    let number = json!({"type": "number"});
    let boolean = json!({"type": "boolean"});
    let kind = json!({"type": "string", "enum": MEMORY_TYPES});
    let context = json!({"type": "object", "properties": {
        "location": string, "people": {"type": "array", "items": string}, "mood": string,
        "activity": string, "tags": {"type": "array", "items": string}, "source": string}});
    let schema = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required});
    let tools = [
        (
            "store_memory",
            schema(
                json!({"summary": string, "content": string, "type": kind, "context": context, "importance": number}),
                &["content", "type"],
            ),
        ),
        (
            "search_memories",
            schema(
                json!({"query": string, "type": kind, "minImportance": number,
            "emotionalRange": {"type": "object", "properties": {"min": number, "max": number}, "required": ["min", "max"]},
            "dateRange": {"type": "object", "properties": {"start": string, "end": string}, "required": ["start", "end"]},
            "limit": number, "includeAssociations": boolean, "detailLevel": {"type": "string", "enum": ["compact", "full"]},
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
        ("get_memory", schema(json!({"id": string}), &["id"])),
        (
            "update_memory",
            schema(
                json!({"id": string, "content": string, "importance": number, "context": context, "metadata": {"type": "object"}}),
                &["id"],
            ),
        ),
        ("delete_memory", schema(json!({"id": string}), &["id"])),
        (
            "connect_memories",
            schema(
                json!({"sourceId": string, "targetId": string, "relationshipType": string, "bidirectional": boolean}),
                &["sourceId", "targetId", "bidirectional"],
            ),
        ),
        (
            "remove_association",
            schema(
                json!({"sourceId": string, "targetId": string, "bidirectional": boolean}),
                &["sourceId", "targetId", "bidirectional"],
            ),
        ),
        (
            "delete_memories_bulk",
            schema(json!({"ids": {"type": "array", "items": string}}), &["ids"]),
        ),
        (
            "delete_all_memories",
            schema(json!({"confirm": boolean}), &["confirm"]),
        ),
    ];
    Value::Array(
        tools
            .into_iter()
            .map(|(name, input)| json!({"name": name, "description": name.replace('_', " "), "inputSchema": input}))
            .collect(),
    )
}

fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None => "undefined",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// zod's checks over one object, collecting its issues.
struct Args<'a> {
    map: &'a Map<String, Value>,
    path: Vec<String>,
    issues: &'a mut Vec<Value>,
}

impl<'a> Args<'a> {
    fn path(&self, key: &str) -> Value {
        let mut path = self.path.clone();
        path.push(key.to_string());
        json!(path)
    }

    fn wrong_type(&mut self, key: &str, expected: &str) {
        let received = type_name(self.map.get(key));
        let message = if received == "undefined" {
            "Required".to_string()
        } else {
            format!("Expected {expected}, received {received}")
        };
        let issue = json!({"code": "invalid_type", "expected": expected, "received": received,
            "path": self.path(key), "message": message});
        self.issues.push(issue);
    }

    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.map.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            None if !required => None,
            _ => {
                self.wrong_type(key, "string");
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, default: bool) -> bool {
        match self.map.get(key) {
            Some(Value::Bool(b)) => *b,
            None => default,
            _ => {
                self.wrong_type(key, "boolean");
                default
            }
        }
    }

    fn number(
        &mut self,
        key: &str,
        min: Option<f64>,
        max: Option<f64>,
        required: bool,
    ) -> Option<f64> {
        let value = match self.map.get(key) {
            Some(Value::Number(n)) => n.as_f64()?,
            None if !required => return None,
            _ => {
                self.wrong_type(key, "number");
                return None;
            }
        };
        if let Some(min) = min.filter(|min| value < *min) {
            let issue = json!({"code": "too_small", "minimum": javascript::json_number(min), "type": "number",
                "inclusive": true, "exact": false,
                "message": format!("Number must be greater than or equal to {}", javascript::number_text(min)),
                "path": self.path(key)});
            self.issues.push(issue);
        }
        if let Some(max) = max.filter(|max| value > *max) {
            let issue = json!({"code": "too_big", "maximum": javascript::json_number(max), "type": "number",
                "inclusive": true, "exact": false,
                "message": format!("Number must be less than or equal to {}", javascript::number_text(max)),
                "path": self.path(key)});
            self.issues.push(issue);
        }
        Some(value)
    }

    fn one_of(&mut self, key: &str, options: &[&str], required: bool) -> Option<String> {
        match self.map.get(key) {
            Some(Value::String(s)) if options.contains(&s.as_str()) => Some(s.clone()),
            None if !required => None,
            Some(Value::String(s)) => {
                let expected = options
                    .iter()
                    .map(|o| format!("'{o}'"))
                    .collect::<Vec<_>>()
                    .join(" | ");
                let issue = json!({"received": s, "code": "invalid_enum_value", "options": options,
                    "path": self.path(key),
                    "message": format!("Invalid enum value. Expected {expected}, received '{s}'")});
                self.issues.push(issue);
                None
            }
            _ => {
                let expected = options
                    .iter()
                    .map(|o| format!("'{o}'"))
                    .collect::<Vec<_>>()
                    .join(" | ");
                self.wrong_type(key, &expected);
                None
            }
        }
    }

    fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.map.get(key) {
            None => None,
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            _ => {
                self.wrong_type(key, "array");
                None
            }
        }
    }

    /// A nested object's checks, under its key.
    fn object<T>(&mut self, key: &str, check: impl FnOnce(&mut Args<'_>) -> T) -> Option<T> {
        match self.map.get(key) {
            None => None,
            Some(Value::Object(inner)) => {
                let mut path = self.path.clone();
                path.push(key.to_string());
                let mut nested = Args {
                    map: inner,
                    path,
                    issues: self.issues,
                };
                Some(check(&mut nested))
            }
            _ => {
                self.wrong_type(key, "object");
                None
            }
        }
    }
}

/// The `context` argument as zod outputs it: known keys only, in the schema's order.
fn context(args: &mut Args<'_>) -> Map<String, Value> {
    let mut out = Map::new();
    let location = args.string("location", false);
    let people = args.strings("people");
    let mood = args.string("mood", false);
    let activity = args.string("activity", false);
    let tags = args.strings("tags");
    let source = args.string("source", false);
    let fields = [
        ("location", location.map(Value::String)),
        ("people", people.map(|p| json!(p))),
        ("mood", mood.map(Value::String)),
        ("activity", activity.map(Value::String)),
        ("tags", tags.map(|t| json!(t))),
        ("source", source.map(Value::String)),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            out.insert(key.into(), value);
        }
    }
    out
}

fn text(text: String) -> Value {
    json!({"content": [{"type": "text", "text": text}]})
}

fn error(message: impl std::fmt::Display) -> Value {
    text(format!("Error: {message}"))
}

/// `tools/call`: the result object.
pub async fn call(service: &MemoryService, name: &str, arguments: Option<&Value>) -> Value {
    let empty = Map::new();
    let map = match arguments {
        Some(Value::Object(map)) => map,
        _ => &empty,
    };
    let mut issues = Vec::new();
    let mut args = Args {
        map,
        path: Vec::new(),
        issues: &mut issues,
    };
    match name {
        "store_memory" => {
            let summary = args.string("summary", false);
            let content = args.string("content", true);
            let memory_type = args.one_of("type", &MEMORY_TYPES, true);
            let context = args.object("context", context);
            let importance = args.number("importance", Some(0.0), Some(1.0), false);
            let client_metadata = map.get("_clientMetadata").and_then(Value::as_str);
            if !issues.is_empty() {
                return error(stringify(&Value::Array(issues)));
            }
            let (Some(content), Some(memory_type)) = (content, memory_type) else {
                return error("invalid arguments");
            };
            match service
                .create_memory(
                    &content,
                    &memory_type,
                    context,
                    importance,
                    summary,
                    client_metadata,
                )
                .await
            {
                Ok(memory) => text(stringify(&Value::Object(memory))),
                Err(e) => error(e),
            }
        }
        "search_memories" => {
            let query = args.string("query", true);
            let memory_type = args.one_of("type", &MEMORY_TYPES, false);
            let min_importance = args.number("minImportance", Some(0.0), Some(1.0), false);
            let emotional_range = args.object("emotionalRange", |range| {
                let min = range.number("min", Some(-1.0), Some(1.0), true);
                let max = range.number("max", Some(-1.0), Some(1.0), true);
                min.zip(max)
            });
            let date_range = args.object("dateRange", |range| {
                let start = range.string("start", true);
                let end = range.string("end", true);
                start.zip(end)
            });
            let limit = args
                .number("limit", Some(1.0), Some(50.0), false)
                .unwrap_or(10.0);
            let include_associations = args.boolean("includeAssociations", false);
            let detail = args.one_of("detailLevel", &["compact", "full"], false);
            let threshold = args.number("similarityThreshold", Some(0.0), Some(1.0), false);
            let reconstruct = args.boolean("reconstructChunks", false);
            if !issues.is_empty() {
                return error(stringify(&Value::Array(issues)));
            }
            let date_range = match date_range.flatten() {
                Some((start, end)) => {
                    match (javascript::parse_date(&start), javascript::parse_date(&end)) {
                        (Some(start), Some(end)) => Some((start, end)),
                        _ => return error("Invalid time value"),
                    }
                }
                None => None,
            };
            let params = SearchParams {
                query: query.unwrap_or_default(),
                memory_type,
                min_importance,
                emotional_range: emotional_range.flatten(),
                date_range,
                limit,
                include_associations,
                compact: detail.as_deref() != Some("full"),
                similarity_threshold: threshold,
                reconstruct_chunks: reconstruct,
            };
            match service.search(&params).await {
                Ok(found) => text(stringify(&Value::Array(found))),
                Err(e) => error(e),
            }
        }
        "get_memory" => {
            let id = args.string("id", true);
            if !issues.is_empty() {
                return error(stringify(&Value::Array(issues)));
            }
            match service.get_memory(&id.unwrap_or_default()).await {
                Ok(Some(memory)) => text(stringify(&Value::Object(memory))),
                Ok(None) => text("Memory not found".into()),
                Err(e) => error(e),
            }
        }
        "update_memory" => {
            let id = args.string("id", true);
            let content = args.string("content", false);
            let importance = args.number("importance", Some(0.0), Some(1.0), false);
            let context = args.object("context", context);
            let metadata = match map.get("metadata") {
                None => None,
                Some(Value::Object(m)) => Some(m.clone()),
                Some(_) => {
                    args.wrong_type("metadata", "object");
                    None
                }
            };
            if !issues.is_empty() {
                return error(stringify(&Value::Array(issues)));
            }
            let updates = Updates {
                content,
                importance,
                context,
                metadata,
            };
            match service
                .update_memory(&id.unwrap_or_default(), updates)
                .await
            {
                Ok(Some(memory)) => text(stringify(&Value::Object(memory))),
                Ok(None) => text("Memory not found".into()),
                Err(e) => error(e),
            }
        }
        "delete_memory" => {
            let id = args.string("id", true);
            if !issues.is_empty() {
                return error(stringify(&Value::Array(issues)));
            }
            let id = id.unwrap_or_default();
            match service.delete_memory(&id).await {
                Ok(()) => text(format!("Memory {id} deleted successfully")),
                Err(e) => error(e),
            }
        }
        "connect_memories" | "remove_association" => {
            let source = args.string("sourceId", true);
            let target = args.string("targetId", true);
            let both = args.boolean("bidirectional", true);
            if !issues.is_empty() {
                return error(stringify(&Value::Array(issues)));
            }
            let (source, target) = (source.unwrap_or_default(), target.unwrap_or_default());
            if name == "connect_memories" {
                match service.connect(&source, &target, both).await {
                    Ok(()) => text(format!("Connected memories {source} and {target}")),
                    Err(e) => error(e),
                }
            } else {
                match service.remove_association(&source, &target, both).await {
                    Ok(()) => text(format!("Removed association between {source} and {target}")),
                    Err(e) => error(e),
                }
            }
        }
        "delete_memories_bulk" => {
            let ids = args.strings("ids");
            if ids.is_none() && map.get("ids").is_none() {
                args.wrong_type("ids", "array");
            }
            if !issues.is_empty() {
                return error(stringify(&Value::Array(issues)));
            }
            let ids = ids.unwrap_or_default();
            match service.delete_many(&ids).await {
                Ok((deleted, failed)) => text(stringify(&json!({
                    "message": format!("Deleted {deleted} memories"),
                    "deleted": deleted, "failed": failed, "totalRequested": ids.len()}))),
                Err(e) => error(e),
            }
        }
        "delete_all_memories" => {
            if map.get("confirm") != Some(&Value::Bool(true)) {
                return error("Confirmation required to delete all memories");
            }
            match service.delete_all().await {
                Ok(()) => text(stringify(
                    &json!({"message": "All memories have been deleted", "deleted": true}),
                )),
                Err(e) => error(format!("Failed to delete all memories: {e}")),
            }
        }
        other => error(format!("Unknown tool: {other}")),
    }
}
