//! cldmemory's layout (the legacy service, `zdenek-stursa/cldmemory`): the payload it writes
//! to Qdrant, the texts it embeds, its enrichment fallbacks, its importance rule, its search
//! limits and its access counting. Its MCP tools are in [`tools`] (what memgate answers
//! itself, with cldmemory's texts) and [`forwarded`] (what a forwarded call changes).

mod filters;
pub mod forwarded;
pub mod prompts;
pub mod tools;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    merge_metadata, parse_metadata, AssociationRule, ChunkRole, Enrichment, EnrichmentNeeds,
    KeywordView, Layout,
};
use crate::backend::enrichment::EnrichmentError;
use crate::backend::vectors::{Condition, IndexedField};
use crate::js;
use crate::memory::{MemoryType, NormalizedSearch, StoreRequest, StoredMemory, UpdateRequest};

/// Characters (UTF-16 units) of content kept as the summary when none can be generated.
const FALLBACK_SUMMARY_UNITS: usize = 150;
/// Characters (UTF-16 units) kept before `...` when the model could not be asked.
const FAILED_SUMMARY_UNITS: usize = 147;
/// Content longer than this (UTF-16 units) is more important.
const LONG_CONTENT_UNITS: usize = 200;
/// memgate's bookkeeping, kept in its own records and never in the payload.
const BOOKKEEPING_FIELDS: [&str; 3] = ["status", "error", "score"];

/// A memory's fields in the order cldmemory builds the object (`createMemory`, then
/// `upsertMemory`'s spread): `JSON.stringify` shows them in this order. A compact search row
/// (`id, summary, type, timestamp, importance, emotionalValence, tags, project`) keeps its
/// order too: its `tags` stand before `project`.
const MEMORY_ORDER: [&str; 15] = [
    "id",
    "summary",
    "content",
    "type",
    "timestamp",
    "importance",
    "emotionalValence",
    "associations",
    "context",
    "metadata",
    "lastAccessed",
    "accessCount",
    "decay",
    "tags",
    "project",
];
/// `context`: `{tags: <keywords>, ...context}`, the given context in its schema's order, then
/// what chunking adds (a parent's `isParentChunk, totalChunks`; a chunk's `chunkIndex,
/// chunkOf, totalChunks, semanticDensity`).
const CONTEXT_ORDER: [&str; 6] = ["tags", "location", "people", "mood", "activity", "source"];
const PARENT_CHUNK_ORDER: [&str; 2] = ["isParentChunk", "totalChunks"];
const CHUNK_ORDER: [&str; 4] = ["chunkIndex", "chunkOf", "totalChunks", "semanticDensity"];

/// The settings a cldmemory deployment has.
#[derive(Debug, Clone, PartialEq)]
pub struct CldMemorySettings {
    /// Its `SIMILARITY_THRESHOLD` (default 0.7).
    pub similarity_threshold: f32,
    /// Its `MEMORY_METADATA` string.
    pub memory_metadata: Option<String>,
    /// The `hostname:cwd` its process stamps on new memories.
    pub project: String,
}

#[derive(Debug, Clone)]
pub struct CldMemoryLayout {
    settings: CldMemorySettings,
    /// `MEMORY_METADATA`, parsed once.
    service_metadata: Map<String, Value>,
}

impl CldMemoryLayout {
    pub fn new(settings: CldMemorySettings) -> Self {
        let service_metadata = settings
            .memory_metadata
            .as_deref()
            .map(parse_metadata)
            .unwrap_or_default();
        Self {
            settings,
            service_metadata,
        }
    }

    pub fn settings(&self) -> &CldMemorySettings {
        &self.settings
    }

    /// The project a process here would stamp: `hostname:cwd`.
    pub fn local_project() -> String {
        let hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        let cwd = std::env::current_dir()
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|_| "/".into());
        format!("{hostname}:{cwd}")
    }
}

/// cldmemory's importance rule for a memory given none.
fn importance_of(content: &str, memory_type: MemoryType) -> f64 {
    let mut importance = 0.5;
    if memory_type == MemoryType::Episodic {
        importance += 0.2;
    }
    if memory_type == MemoryType::Emotional {
        importance += 0.15;
    }
    if js::utf16_len(content) > LONG_CONTENT_UNITS {
        importance += 0.1;
    }
    f64::min(1.0, importance)
}

/// The summary stored when the model could not be asked (cldmemory's `catch`): the content
/// itself up to 150 characters, else its first 147 and `...`.
fn failed_summary(content: &str) -> String {
    if js::utf16_len(content) > FALLBACK_SUMMARY_UNITS {
        format!("{}...", js::utf16_prefix(content, FAILED_SUMMARY_UNITS))
    } else {
        content.to_string()
    }
}

/// The summary stored when the model answered nothing (`content?.trim() || …`): the first 150
/// characters and `...`, even for a short content.
fn empty_answer_summary(content: &str) -> String {
    format!("{}...", js::utf16_prefix(content, FALLBACK_SUMMARY_UNITS))
}

/// The summary for the model's answer, or its fallback.
fn summary_of(answer: Result<String, EnrichmentError>, content: &str) -> String {
    match answer {
        Ok(answer) => {
            let answer = js::trim(&answer);
            if answer.is_empty() {
                empty_answer_summary(content)
            } else {
                answer.to_string()
            }
        }
        // The model answered, with nothing in it.
        Err(EnrichmentError::InvalidAnswer { .. }) => empty_answer_summary(content),
        Err(_) => failed_summary(content),
    }
}

/// `k: v; k2: v2` of an object's truthy entries, arrays joined with `, `.
fn entries_text(object: Option<&Value>) -> String {
    let Some(Value::Object(map)) = object else {
        return String::new();
    };
    map.iter()
        .filter(|(_, value)| js::is_truthy(Some(value)))
        .map(|(key, value)| {
            let text = match value {
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        Value::Null => String::new(),
                        other => js::to_js_string(other),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => js::to_js_string(other),
            };
            format!("{key}: {text}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What cldmemory's `updateMemoryMetadata` adds to every payload write: `lastAccessed: new
/// Date()` and `accessCount: memory.accessCount + 1` (of the payload it read; `NaN`, stored
/// as `null`, when there is none).
fn one_more_access(memory: &StoredMemory, now: DateTime<Utc>) -> StoredMemory {
    let count = memory
        .get("accessCount")
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    let mut fields = StoredMemory::new();
    fields.insert("lastAccessed".into(), Value::String(js::to_iso_string(now)));
    fields.insert("accessCount".into(), js::number(count + 1.0));
    fields
}

/// `object` with the keys `order` names first, in that order, then the others as they are.
fn in_order(object: &Map<String, Value>, order: &[&str]) -> Map<String, Value> {
    let mut ordered: Map<String, Value> = order
        .iter()
        .filter_map(|key| {
            object
                .get(*key)
                .map(|value| (key.to_string(), value.clone()))
        })
        .collect();
    for (key, value) in object {
        if !ordered.contains_key(key) {
            ordered.insert(key.clone(), value.clone());
        }
    }
    ordered
}

fn string_field<'a>(memory: &'a StoredMemory, field: &str) -> Option<&'a str> {
    memory.get(field).and_then(Value::as_str)
}

/// `Map::remove` that keeps the other keys in place.
fn remove_in_place(map: &mut StoredMemory, key: &str) -> Option<Value> {
    map.shift_remove(key)
}

impl CldMemoryLayout {
    /// A memory in the key order cldmemory writes it, whatever order the vector store gave
    /// (Qdrant's gRPC API carries payloads as maps without order): top-level fields and
    /// `context` as cldmemory builds them, `metadata` with `MEMORY_METADATA`'s keys first. What
    /// cannot be told from the fields (the order of several keys of a client's metadata, a
    /// context replaced by `update_memory`) stays as given.
    fn in_cldmemory_order(&self, memory: &StoredMemory) -> StoredMemory {
        let mut ordered = in_order(memory, &MEMORY_ORDER);
        if let Some(Value::Object(context)) = ordered.get_mut("context") {
            let chunking: &[&str] = if context.contains_key("isParentChunk") {
                &PARENT_CHUNK_ORDER
            } else {
                &CHUNK_ORDER
            };
            let order: Vec<&str> = CONTEXT_ORDER.iter().chain(chunking).copied().collect();
            *context = in_order(context, &order);
        }
        if let Some(Value::Object(metadata)) = ordered.get_mut("metadata") {
            let order: Vec<&str> = self.service_metadata.keys().map(String::as_str).collect();
            *metadata = in_order(metadata, &order);
        }
        ordered
    }
}

impl Layout for CldMemoryLayout {
    fn new_memory(
        &self,
        id: Uuid,
        request: &StoreRequest,
        client_metadata: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoredMemory {
        let summary = request
            .summary
            .clone()
            .filter(|summary| !summary.is_empty())
            .unwrap_or_else(|| failed_summary(&request.content));
        let importance = request
            .importance
            .unwrap_or_else(|| importance_of(&request.content, request.memory_type));
        // `{tags: <keywords>, ...context}`: tags first; given tags replace the keywords.
        let mut context = Map::new();
        context.insert("tags".into(), Value::Array(Vec::new()));
        if let Some(given) = &request.context {
            context.extend(given.to_map());
        }
        let client = client_metadata.map(parse_metadata).unwrap_or_default();
        let metadata = merge_metadata(&self.service_metadata, &client);
        let timestamp = js::to_iso_string(now);
        let mut memory = Map::new();
        memory.insert("id".into(), Value::String(id.to_string()));
        memory.insert("summary".into(), Value::String(summary));
        memory.insert("content".into(), Value::String(request.content.clone()));
        memory.insert("type".into(), Value::from(request.memory_type.as_str()));
        memory.insert("timestamp".into(), Value::String(timestamp.clone()));
        memory.insert("importance".into(), js::number(importance));
        memory.insert("emotionalValence".into(), Value::from(0));
        memory.insert("associations".into(), Value::Array(Vec::new()));
        memory.insert("context".into(), Value::Object(context));
        memory.insert("metadata".into(), Value::Object(metadata));
        memory.insert("lastAccessed".into(), Value::String(timestamp));
        memory.insert("accessCount".into(), Value::from(0));
        memory.insert("decay".into(), Value::from(0));
        memory.insert(
            "project".into(),
            Value::String(self.settings.project.clone()),
        );
        memory
    }

    fn enrichment_needs(&self, request: &StoreRequest) -> EnrichmentNeeds {
        EnrichmentNeeds {
            summary: request.summary.as_deref().is_none_or(str::is_empty),
            keywords: request
                .context
                .as_ref()
                .is_none_or(|context| context.tags.is_none()),
        }
    }

    fn apply_enrichment(&self, memory: &mut StoredMemory, enrichment: Enrichment) {
        let content = string_field(memory, "content")
            .unwrap_or_default()
            .to_string();
        if let Some(answer) = enrichment.summary {
            memory.insert(
                "summary".into(),
                Value::String(summary_of(answer, &content)),
            );
        }
        // A number is clamped to -1..1; an answer that is no number is stored as null (NaN).
        let valence = match enrichment.valence {
            Ok(Some(valence)) if valence.is_finite() => js::number(valence.clamp(-1.0, 1.0)),
            Ok(Some(valence)) => js::number(valence.signum()),
            Ok(None) => Value::Null,
            Err(_) => Value::from(0),
        };
        memory.insert("emotionalValence".into(), valence);
        if let Some(keywords) = enrichment.keywords {
            let keywords = keywords.unwrap_or_default();
            if let Some(Value::Object(context)) = memory.get_mut("context") {
                context.insert(
                    "tags".into(),
                    Value::Array(keywords.into_iter().map(Value::String).collect()),
                );
            }
        }
    }

    /// An update with content is upserted whole (`upsertMemory`); one without goes through
    /// `updateMemoryMetadata`, which counts one more access.
    fn stored_update(&self, memory: &mut StoredMemory, update: &UpdateRequest, now: DateTime<Utc>) {
        if update
            .content
            .as_deref()
            .is_some_and(|content| !content.is_empty())
        {
            return;
        }
        let accessed = one_more_access(memory, now);
        memory.extend(accessed);
    }

    fn apply_update(&self, memory: &mut StoredMemory, update: &UpdateRequest) {
        if let Some(content) = &update.content {
            memory.insert("content".into(), Value::String(content.clone()));
        }
        if let Some(importance) = update.importance {
            memory.insert("importance".into(), js::number(importance));
        }
        if let Some(context) = &update.context {
            memory.insert("context".into(), Value::Object(context.to_map()));
        }
        if let Some(metadata) = &update.metadata {
            memory.insert("metadata".into(), Value::Object(metadata.clone()));
        }
    }

    /// The memory without memgate's bookkeeping, its numbers as JavaScript writes them.
    fn payload(&self, memory: &StoredMemory) -> StoredMemory {
        let mut payload = Value::Object(self.in_cldmemory_order(memory));
        js::normalize_numbers(&mut payload);
        let Value::Object(mut payload) = payload else {
            return StoredMemory::new();
        };
        for field in BOOKKEEPING_FIELDS {
            remove_in_place(&mut payload, field);
        }
        payload
    }

    fn embedded_text(&self, memory: &StoredMemory) -> String {
        let content = memory
            .get("content")
            .map(js::to_js_string)
            .unwrap_or_default();
        let memory_type = memory.get("type").map(js::to_js_string).unwrap_or_default();
        let mut text = format!(
            "{content}\n\nType: {memory_type}\nContext: {}",
            entries_text(memory.get("context"))
        );
        let metadata = entries_text(memory.get("metadata"));
        if !metadata.is_empty() {
            text.push_str("\nMetadata: ");
            text.push_str(&metadata);
        }
        if let Some(project) = string_field(memory, "project") {
            text.push_str("\nProject: ");
            text.push_str(project);
        }
        text
    }

    fn query_text(&self, query: &str) -> String {
        let mut text = query.to_string();
        let metadata = entries_text(Some(&Value::Object(self.service_metadata.clone())));
        if !metadata.is_empty() {
            text.push_str("\nMetadata: ");
            text.push_str(&metadata);
        }
        text.push_str("\nProject: ");
        text.push_str(&self.settings.project);
        text
    }

    fn default_similarity_threshold(&self) -> f32 {
        self.settings.similarity_threshold
    }

    fn search_fetch_limit(&self, limit: u32) -> u64 {
        u64::from(limit).saturating_mul(3).min(100)
    }

    fn compact(&self, memory: &StoredMemory) -> StoredMemory {
        let mut row = StoredMemory::new();
        for field in [
            "id",
            "summary",
            "type",
            "timestamp",
            "importance",
            "emotionalValence",
        ] {
            if let Some(value) = memory.get(field) {
                row.insert(field.into(), value.clone());
            }
        }
        if let Some(tags) = memory
            .get("context")
            .and_then(|context| context.get("tags"))
        {
            row.insert("tags".into(), tags.clone());
        }
        if let Some(project) = memory.get("project") {
            row.insert("project".into(), project.clone());
        }
        row
    }

    fn access_fields(&self) -> &'static [&'static str] {
        &["accessCount", "lastAccessed"]
    }

    fn accessed(&self, payload: &StoredMemory, count: u64, last: DateTime<Utc>) -> StoredMemory {
        let stored = payload
            .get("accessCount")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let stored_last = string_field(payload, "lastAccessed")
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|at| at.with_timezone(&Utc));
        let last = stored_last.map_or(last, |stored| stored.max(last));
        let mut fields = StoredMemory::new();
        // Stored as the integer it is, as JavaScript would write it.
        fields.insert("accessCount".into(), js::number(stored + count as f64));
        fields.insert(
            "lastAccessed".into(),
            Value::String(js::to_iso_string(last)),
        );
        fields
    }

    fn association_rule(&self) -> AssociationRule {
        AssociationRule {
            candidates: 5,
            keep: 3,
            neighbour_cap: 5,
        }
    }

    fn associations(&self, memory: &StoredMemory) -> Vec<String> {
        memory
            .get("associations")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `updateMemoryMetadata(id, {associations})`: the new list, and one more access.
    fn linked_fields(
        &self,
        memory: &StoredMemory,
        associations: Vec<String>,
        now: DateTime<Utc>,
    ) -> StoredMemory {
        let mut fields = StoredMemory::new();
        fields.insert(
            "associations".into(),
            Value::Array(associations.into_iter().map(Value::String).collect()),
        );
        fields.extend(one_more_access(memory, now));
        fields
    }

    fn indexed_fields(&self) -> Vec<IndexedField> {
        filters::indexed_fields()
    }

    fn search_conditions(&self, search: &NormalizedSearch) -> Vec<Condition> {
        filters::search_conditions(search)
    }

    fn keyword_conditions(&self, terms: &[String]) -> Vec<Condition> {
        filters::keyword_conditions(terms)
    }

    fn chunks_of(&self, parent_id: &str) -> Condition {
        filters::chunks_of(parent_id)
    }

    fn chat_recipe(&self) -> std::sync::Arc<dyn crate::backend::enrichment::ChatRecipe> {
        std::sync::Arc::new(prompts::CldMemoryChat)
    }

    /// Its `content`, `context.tags` and `importance`.
    fn keyword_view(&self, memory: &StoredMemory) -> KeywordView {
        KeywordView {
            text: string_field(memory, "content")
                .unwrap_or_default()
                .to_string(),
            tags: memory
                .get("context")
                .and_then(|context| context.get("tags"))
                .and_then(Value::as_array)
                .map(|tags| {
                    tags.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            importance: memory
                .get("importance")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        }
    }

    fn chunk_role(&self, memory: &StoredMemory) -> ChunkRole {
        let context = memory.get("context");
        let field = |name: &str| context.and_then(|context| context.get(name));
        if js::is_truthy(field("isParentChunk")) {
            ChunkRole::Parent
        } else if js::is_truthy(field("chunkOf")) {
            ChunkRole::Chunk
        } else {
            ChunkRole::Whole
        }
    }

    /// Chunks in `chunkIndex` order (a missing index counts as 0), contents joined with a
    /// blank line; `metadata` gains `reconstructed: true` and `chunkCount`.
    fn reconstruct(&self, parent: &StoredMemory, mut chunks: Vec<StoredMemory>) -> StoredMemory {
        let index = |chunk: &StoredMemory| {
            chunk
                .get("context")
                .and_then(|context| context.get("chunkIndex"))
                .and_then(Value::as_f64)
                .filter(|index| !index.is_nan())
                .unwrap_or(0.0)
        };
        chunks.sort_by(|a, b| index(a).total_cmp(&index(b)));
        let content = chunks
            .iter()
            .map(|chunk| {
                chunk
                    .get("content")
                    .map(js::to_js_string)
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        let mut memory = parent.clone();
        memory.insert("content".into(), Value::String(content));
        let mut metadata = match parent.get("metadata") {
            Some(Value::Object(metadata)) => metadata.clone(),
            _ => Map::new(),
        };
        metadata.insert("reconstructed".into(), Value::Bool(true));
        metadata.insert("chunkCount".into(), Value::from(chunks.len()));
        memory.insert("metadata".into(), Value::Object(metadata));
        memory
    }
}

#[cfg(test)]
mod tests;
