//! cldmemory's memory: the object it builds on create (and stores as the Qdrant payload), its
//! metadata strings, and the texts it embeds.
//!
//! Memories read back are JavaScript objects: key order as stored, fields it does not know
//! kept. They are handled here as ordered JSON maps.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::javascript;

pub const MEMORY_TYPES: [&str; 6] = [
    "episodic",
    "semantic",
    "procedural",
    "emotional",
    "sensory",
    "working",
];

/// A memory as `createMemory` builds it, in its key order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewMemory {
    pub id: String,
    pub summary: String,
    pub content: String,
    #[serde(rename = "type")]
    pub memory_type: String,
    pub timestamp: String,
    pub importance: f64,
    /// `null` when the model's answer was not a number.
    pub emotional_valence: Option<f64>,
    pub associations: Vec<String>,
    pub context: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub last_accessed: String,
    pub access_count: u64,
    pub decay: u64,
    pub project: String,
}

impl NewMemory {
    /// The object as JavaScript holds it (numbers as its JSON writes them).
    pub fn to_object(&self) -> Map<String, Value> {
        match javascript::js_numbers(serde_json::to_value(self).unwrap_or(Value::Null)) {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

/// `calculateImportance`.
pub fn importance_for(content: &str, memory_type: &str) -> f64 {
    let mut importance: f64 = 0.5;
    if memory_type == "episodic" {
        importance += 0.2;
    }
    if memory_type == "emotional" {
        importance += 0.15;
    }
    if javascript::length(content) > 200 {
        importance += 0.1;
    }
    importance.min(1.0)
}

/// `MEMORY_METADATA` / `Memory-Metadata`: `k:v,k2:v2`, a bare value is `user:<value>`.
pub fn parse_metadata(text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for part in text.split(',') {
        let (key, value) = match part.find(':') {
            Some(at) => (part[..at].trim(), part[at + 1..].trim()),
            None => ("user", part.trim()),
        };
        if key.is_empty() || value.is_empty() {
            continue;
        }
        out.insert(key.to_string(), Value::String(value.to_string()));
    }
    out
}

/// `Object.entries(o).filter(([_, v]) => v).map(([k, v]) => `${k}: ${...}`).join('; ')`
fn describe(object: &Map<String, Value>) -> String {
    let mut parts = Vec::new();
    for (key, value) in object {
        if !javascript::truthy(Some(value)) {
            continue;
        }
        let text = match value {
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    if item.is_null() {
                        String::new()
                    } else {
                        javascript::template(item)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            other => javascript::template(other),
        };
        parts.push(format!("{key}: {text}"));
    }
    parts.join("; ")
}

fn object_field<'a>(memory: &'a Map<String, Value>, field: &str) -> Option<&'a Map<String, Value>> {
    memory.get(field).and_then(Value::as_object)
}

/// `prepareMemoryForEmbedding`.
pub fn memory_embedding_text(memory: &Map<String, Value>) -> String {
    let empty = Map::new();
    let content = memory
        .get("content")
        .map(javascript::template)
        .unwrap_or_default();
    let memory_type = memory
        .get("type")
        .map(javascript::template)
        .unwrap_or_default();
    let context = describe(object_field(memory, "context").unwrap_or(&empty));
    let mut lines = vec![
        format!("{content}\n\nType: {memory_type}"),
        format!("Context: {context}"),
    ];
    let metadata = describe(object_field(memory, "metadata").unwrap_or(&empty));
    if !metadata.is_empty() {
        lines.push(format!("Metadata: {metadata}"));
    }
    if let Some(project) = memory.get("project").and_then(Value::as_str) {
        lines.push(format!("Project: {project}"));
    }
    lines.join("\n")
}

/// The text embedded for a search query.
pub fn query_embedding_text(
    query: &str,
    env_metadata: &Map<String, Value>,
    project: &str,
) -> String {
    let mut lines = vec![query.to_string()];
    let metadata = describe(env_metadata);
    if !metadata.is_empty() {
        lines.push(format!("Metadata: {metadata}"));
    }
    lines.push(format!("Project: {project}"));
    lines.join("\n")
}

/// `toCompactMemories`: undefined keys left out.
pub fn compact(memory: &Map<String, Value>) -> Value {
    let mut row = Map::new();
    for key in [
        "id",
        "summary",
        "type",
        "timestamp",
        "importance",
        "emotionalValence",
    ] {
        if let Some(value) = memory.get(key) {
            row.insert(key.into(), value.clone());
        }
    }
    if let Some(tags) = object_field(memory, "context").and_then(|c| c.get("tags")) {
        row.insert("tags".into(), tags.clone());
    }
    if let Some(project) = memory.get("project") {
        row.insert("project".into(), project.clone());
    }
    Value::Object(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedding_text() {
        let memory = json!({"content": "c", "type": "semantic",
            "context": {"tags": ["a", "b"], "mood": ""}, "metadata": {"user": "ann"}, "project": "p:/"});
        assert_eq!(
            memory_embedding_text(memory.as_object().expect("object")),
            "c\n\nType: semantic\nContext: tags: a, b\nMetadata: user: ann\nProject: p:/"
        );
        assert_eq!(
            query_embedding_text("q", &Map::new(), "p:/"),
            "q\nProject: p:/"
        );
    }

    #[test]
    fn metadata() {
        assert_eq!(
            Value::Object(parse_metadata("bob, team : x ,:y")),
            json!({"user": "bob", "team": "x"})
        );
    }
}
