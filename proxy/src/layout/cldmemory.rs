//! cldmemory's layout (`../shared/reference/cldmemory.md`, section 3): the payload it writes to
//! Qdrant, the texts it embeds, its enrichment fallbacks, its importance rule, its search
//! limits and its access counting.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    merge_metadata, parse_metadata, AssociationRule, ChunkRole, Enrichment, EnrichmentNeeds, Layout,
};
use crate::backend::enrichment::EnrichmentError;
use crate::js;
use crate::memory::{MemoryType, StoreRequest, StoredMemory, UpdateRequest};

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
mod tests {
    use super::*;
    use crate::memory::StoreContext;
    use serde_json::json;

    fn layout(metadata: Option<&str>) -> CldMemoryLayout {
        CldMemoryLayout::new(CldMemorySettings {
            similarity_threshold: 0.7,
            memory_metadata: metadata.map(str::to_string),
            project: "box:/app".into(),
        })
    }

    fn object(value: Value) -> StoredMemory {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test values are objects"),
        }
    }

    fn store(content: &str, memory_type: MemoryType) -> StoreRequest {
        StoreRequest {
            content: content.into(),
            memory_type,
            summary: None,
            context: None,
            importance: None,
        }
    }

    #[test]
    fn a_new_memory_is_what_cldmemory_stores_without_its_model() {
        let layout = layout(Some("team:core,user:svc"));
        let now = "2026-03-01T10:00:00.5Z".parse().expect("time");
        let id = Uuid::from_u128(7);
        let mut request = store(&"x".repeat(201), MemoryType::Episodic);
        request.context = Some(StoreContext {
            location: Some("Paris".into()),
            source: Some("chat".into()),
            ..Default::default()
        });
        let memory = layout.new_memory(id, &request, Some("alice"), now);
        // What `generateSummary` falls back to when the model cannot be asked.
        let summary = format!("{}...", "x".repeat(147));
        assert_eq!(
            Value::Object(memory.clone()),
            json!({
                "id": id.to_string(), "summary": summary, "content": "x".repeat(201),
                "type": "episodic", "timestamp": "2026-03-01T10:00:00.500Z",
                "importance": 0.7999999999999999, "emotionalValence": 0, "associations": [],
                "context": {"tags": [], "location": "Paris", "source": "chat"},
                "metadata": {"team": "core", "user": "alice"},
                "lastAccessed": "2026-03-01T10:00:00.500Z", "accessCount": 0, "decay": 0,
                "project": "box:/app",
            })
        );
        let keys: Vec<&str> = memory.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
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
                "project"
            ]
        );
    }

    #[test]
    fn importance_follows_the_rule() {
        let layout = layout(None);
        let importance = |content: &str, memory_type| {
            layout.new_memory(Uuid::nil(), &store(content, memory_type), None, Utc::now())
                ["importance"]
                .clone()
        };
        assert_eq!(importance("short", MemoryType::Semantic), json!(0.5));
        assert_eq!(importance("short", MemoryType::Episodic), json!(0.7));
        assert_eq!(importance("short", MemoryType::Emotional), json!(0.65));
        assert_eq!(
            importance(&"😀".repeat(101), MemoryType::Semantic),
            json!(0.6),
            "length counts UTF-16 units"
        );
    }

    #[test]
    fn the_summary_fallbacks_are_cldmemorys() {
        let long = "a".repeat(160);
        let failed = || Err(EnrichmentError::Provider("down".into()));
        let empty = || {
            Err(EnrichmentError::InvalidAnswer {
                expected: "a non-empty summary",
                answer: String::new(),
            })
        };
        assert_eq!(summary_of(failed(), "short"), "short");
        assert_eq!(
            summary_of(failed(), &long),
            format!("{}...", "a".repeat(147))
        );
        assert_eq!(summary_of(empty(), "short"), "short...", "always `...`");
        assert_eq!(summary_of(Ok("  ".into()), "short"), "short...");
        assert_eq!(
            summary_of(empty(), &long),
            format!("{}...", "a".repeat(150))
        );
        assert_eq!(summary_of(Ok(" Fine. ".into()), &long), "Fine.");
        let acknowledged = layout(None).new_memory(
            Uuid::nil(),
            &store(&long, MemoryType::Semantic),
            None,
            Utc::now(),
        );
        assert_eq!(
            acknowledged["summary"],
            json!(format!("{}...", "a".repeat(147))),
            "what cldmemory stores when its model cannot be asked"
        );
    }

    #[test]
    fn enrichment_and_its_fallbacks() {
        let layout = layout(None);
        let failed = || EnrichmentError::Provider("down".into());
        let mut memory = layout.new_memory(
            Uuid::nil(),
            &store("We drank coffee", MemoryType::Episodic),
            None,
            Utc::now(),
        );
        layout.apply_enrichment(
            &mut memory,
            Enrichment {
                summary: Some(Ok("  Coffee.  ".into())),
                valence: Ok(Some(3.0)),
                keywords: Some(Ok(vec!["coffee".into(), "".into()])),
            },
        );
        assert_eq!(memory["summary"], "Coffee.");
        assert_eq!(memory["emotionalValence"], json!(1));
        assert_eq!(memory["context"]["tags"], json!(["coffee", ""]));
        layout.apply_enrichment(
            &mut memory,
            Enrichment {
                summary: Some(Err(failed())),
                valence: Ok(None),
                keywords: Some(Err(failed())),
            },
        );
        assert_eq!(memory["summary"], "We drank coffee");
        assert_eq!(memory["emotionalValence"], Value::Null);
        assert_eq!(memory["context"]["tags"], json!([]));
        layout.apply_enrichment(
            &mut memory,
            Enrichment {
                summary: None,
                valence: Err(failed()),
                keywords: None,
            },
        );
        assert_eq!(memory["emotionalValence"], json!(0));
    }

    #[test]
    fn given_tags_replace_the_keywords_and_a_given_summary_stays() {
        let layout = layout(None);
        let mut request = store("text", MemoryType::Semantic);
        request.summary = Some("Mine".into());
        request.context = Some(StoreContext {
            tags: Some(vec!["given".into()]),
            ..Default::default()
        });
        assert_eq!(
            layout.enrichment_needs(&request),
            EnrichmentNeeds {
                summary: false,
                keywords: false
            }
        );
        let memory = layout.new_memory(Uuid::nil(), &request, None, Utc::now());
        assert_eq!(memory["summary"], "Mine");
        assert_eq!(memory["context"], json!({"tags": ["given"]}));
        request.summary = Some(String::new());
        assert!(layout.enrichment_needs(&request).summary);
    }

    /// The embedded texts, case by case, as cldmemory builds them.
    #[test]
    fn embedded_texts() {
        let plain = layout(None);
        let cases = [
            (
                json!({"content": "Coffee in Paris", "type": "episodic", "context": {"tags": []},
                       "metadata": {}, "project": "box:/app"}),
                "Coffee in Paris\n\nType: episodic\nContext: tags: \nProject: box:/app",
            ),
            (
                json!({"content": "c", "type": "semantic",
                       "context": {"tags": ["a", "b"], "location": "Paris", "people": ["Ann", "Bo"],
                                   "mood": "", "activity": null, "source": "chat"},
                       "metadata": {"team": "core", "user": "alice"}, "project": "h:/w"}),
                "c\n\nType: semantic\nContext: tags: a, b; location: Paris; people: Ann, Bo; \
                 source: chat\nMetadata: team: core; user: alice\nProject: h:/w",
            ),
            (
                json!({"content": "part", "type": "procedural",
                       "context": {"tags": ["x"], "chunkIndex": 0, "chunkOf": "p", "totalChunks": 3,
                                   "isParentChunk": false, "semanticDensity": 0.85},
                       "metadata": {"reconstructed": true}, "project": "h:/w"}),
                "part\n\nType: procedural\nContext: tags: x; chunkOf: p; totalChunks: 3; \
                 semanticDensity: 0.85\nMetadata: reconstructed: true\nProject: h:/w",
            ),
            (
                json!({"content": "old", "type": "working", "context": {}}),
                "old\n\nType: working\nContext: ",
            ),
        ];
        for (memory, expected) in cases {
            assert_eq!(plain.embedded_text(&object(memory)), expected);
        }
        assert_eq!(plain.query_text("coffee"), "coffee\nProject: box:/app");
        assert_eq!(
            layout(Some("team:core")).query_text(""),
            "\nMetadata: team: core\nProject: box:/app"
        );
    }

    #[test]
    fn payloads_come_out_in_cldmemorys_key_order_whatever_order_they_were_read_in() {
        let layout = layout(Some("team:core,env:test"));
        let written = layout.new_memory(
            Uuid::from_u128(3),
            &StoreRequest {
                context: Some(StoreContext {
                    location: Some("Paris".into()),
                    mood: Some("calm".into()),
                    source: Some("chat".into()),
                    ..Default::default()
                }),
                ..store("We drank coffee", MemoryType::Episodic)
            },
            Some("user:carol,team:mcp"),
            Utc::now(),
        );
        let expected = serde_json::to_string(&layout.payload(&written)).expect("JSON");
        let reversed = |map: &Map<String, Value>| -> Map<String, Value> {
            map.iter()
                .rev()
                .map(|(key, value)| {
                    let value = match value {
                        Value::Object(inner) => Value::Object(
                            inner
                                .iter()
                                .rev()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        ),
                        other => other.clone(),
                    };
                    (key.clone(), value)
                })
                .collect()
        };
        let scrambled = reversed(&written);
        assert_ne!(
            serde_json::to_string(&scrambled).expect("JSON"),
            expected,
            "the test scrambles"
        );
        assert_eq!(
            serde_json::to_string(&layout.payload(&scrambled)).expect("JSON"),
            expected
        );
        let chunk = object(
            json!({"context": {"totalChunks": 2, "chunkOf": "p", "tags": [],
            "semanticDensity": 0.5, "chunkIndex": 1, "location": "x"}}),
        );
        assert_eq!(
            serde_json::to_string(&layout.payload(&chunk)).expect("JSON"),
            r#"{"context":{"tags":[],"location":"x","chunkIndex":1,"chunkOf":"p","totalChunks":2,"semanticDensity":0.5}}"#
        );
        let parent =
            object(json!({"context": {"totalChunks": 2, "isParentChunk": true, "tags": []}}));
        assert_eq!(
            serde_json::to_string(&layout.payload(&parent)).expect("JSON"),
            r#"{"context":{"tags":[],"isParentChunk":true,"totalChunks":2}}"#
        );
    }

    #[test]
    fn payloads_carry_the_id_and_no_bookkeeping() {
        let layout = layout(None);
        let memory = object(json!({"id": "a", "content": "c", "status": "ready", "error": "x"}));
        assert_eq!(
            Value::Object(layout.payload(&memory)),
            json!({"id": "a", "content": "c"})
        );
    }

    #[test]
    fn reads_are_added_to_what_is_stored() {
        let layout = layout(None);
        let payload = object(json!({"accessCount": 4, "lastAccessed": "2030-01-01T00:00:00.000Z"}));
        let fields = layout.accessed(&payload, 3, "2026-01-01T00:00:00Z".parse().expect("time"));
        assert_eq!(
            Value::Object(fields),
            json!({"accessCount": 7, "lastAccessed": "2030-01-01T00:00:00.000Z"})
        );
        let fresh = layout.accessed(
            &StoredMemory::new(),
            1,
            "2026-01-01T00:00:00Z".parse().expect("time"),
        );
        assert_eq!(fresh["accessCount"], json!(1));
    }

    #[test]
    fn chunks_are_put_back_together_in_order() {
        let layout = layout(None);
        let parent = object(
            json!({"id": "p", "content": "[Chunked Memory - 2 parts] ...",
            "context": {"tags": [], "isParentChunk": true, "totalChunks": 2}, "metadata": {"a": "b"}}),
        );
        let chunk = |index: u32, content: &str| {
            object(json!({"id": format!("c{index}"), "content": content,
                "context": {"chunkOf": "p", "chunkIndex": index}}))
        };
        assert_eq!(layout.chunk_role(&parent), ChunkRole::Parent);
        assert_eq!(layout.chunk_role(&chunk(0, "x")), ChunkRole::Chunk);
        assert_eq!(
            layout.chunk_role(&object(json!({"context": {}}))),
            ChunkRole::Whole
        );
        let whole = layout.reconstruct(&parent, vec![chunk(1, "second"), chunk(0, "first")]);
        assert_eq!(whole["content"], "first\n\nsecond");
        assert_eq!(
            whole["metadata"],
            json!({"a": "b", "reconstructed": true, "chunkCount": 2})
        );
    }

    #[test]
    fn compact_rows_omit_what_is_missing() {
        let layout = layout(None);
        let memory = object(json!({
            "id": "a", "summary": "s", "content": "c", "type": "semantic",
            "timestamp": "t", "importance": 0.5, "emotionalValence": null,
            "context": {"tags": ["x"], "location": "p"}, "metadata": {}, "project": "h:/w"
        }));
        let row = r#"{"id":"a","summary":"s","type":"semantic","timestamp":"t","importance":0.5,"emotionalValence":null,"tags":["x"],"project":"h:/w"}"#;
        assert_eq!(
            serde_json::to_string(&layout.compact(&memory)).expect("json"),
            row
        );
        let compact = layout.compact(&memory);
        let reversed: StoredMemory = compact.into_iter().rev().collect();
        assert_eq!(
            serde_json::to_string(&layout.payload(&reversed)).expect("json"),
            row,
            "a row shown keeps the row's order"
        );
        let bare = object(json!({"id": "b", "context": {}}));
        assert_eq!(
            serde_json::to_string(&layout.compact(&bare)).expect("json"),
            r#"{"id":"b"}"#
        );
    }
}
