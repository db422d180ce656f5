//! The Memory API's data: a memory as the legacy service stores it in the Qdrant payload, and
//! the store, update and search requests (cldmemory's tool arguments) with their validation.
//!
//! Stored memories are passed through as JSON objects ([`StoredMemory`]) rather than parsed into
//! a struct, so fields the legacy service adds (a user id, say) survive the fast path unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::js;

/// A request memgate refuses as it stands: a stable, machine-readable `code` and a message
/// saying what to change. Each front shows it in its own way (REST: a `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    pub code: &'static str,
    pub message: String,
}

impl InvalidRequest {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Largest accepted memory content, in characters.
pub const MAX_CONTENT_CHARS: usize = 100_000;
/// Largest accepted search query, in characters.
pub const MAX_QUERY_CHARS: usize = 10_000;

/// The kind of a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemoryType {
    Episodic,
    Semantic,
    Procedural,
    Emotional,
    Sensory,
    Working,
}

impl MemoryType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Episodic => "episodic",
            Self::Semantic => "semantic",
            Self::Procedural => "procedural",
            Self::Emotional => "emotional",
            Self::Sensory => "sensory",
            Self::Working => "working",
        }
    }
}

/// Where a memory is in the write pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemoryStatus {
    Processing,
    Ready,
    Failed,
}

/// A memory as the legacy service stores it (cldmemory's Qdrant payload), plus memgate's
/// `status`. Documentation type for the OpenAPI document; at run time memories travel as
/// [`StoredMemory`] so unknown fields survive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub id: Uuid,
    pub summary: String,
    pub content: String,
    #[serde(rename = "type")]
    pub memory_type: MemoryType,
    /// ISO 8601 with milliseconds and `Z`.
    pub timestamp: String,
    /// 0..1
    pub importance: f64,
    /// -1..1, or null when the model's answer was not a number.
    pub emotional_valence: Option<f64>,
    pub associations: Vec<String>,
    /// `tags` (the keywords, or the tags given) first, then the context given.
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    /// The service's metadata merged with the client's (`Memory-Metadata`).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub last_accessed: String,
    pub access_count: u64,
    pub decay: f64,
    /// `hostname:cwd` of the service that stored it.
    pub project: Option<String>,
    /// memgate's own: `processing` until a worker has stored it.
    pub status: Option<MemoryStatus>,
    /// Present on search results: the similarity to the query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// A memory as a JSON object, exactly as stored.
pub type StoredMemory = Map<String, Value>;

/// The context a client may give a memory (cldmemory's `context` argument).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub people: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mood: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    /// Given tags replace the extracted keywords.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl StoreContext {
    /// The context as a JSON object, in cldmemory's key order, without absent keys.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

/// `POST /memories`: cldmemory's `store_memory` arguments.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreRequest {
    /// 1..=100,000 characters, not only whitespace.
    #[schema(min_length = 1, max_length = 100000, pattern = r"\S")]
    pub content: String,
    #[serde(rename = "type")]
    pub memory_type: MemoryType,
    /// Generated when absent or empty.
    pub summary: Option<String>,
    pub context: Option<StoreContext>,
    /// 0..1; by the legacy service's rule when absent.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub importance: Option<f64>,
}

impl StoreRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        check_content(&self.content)?;
        if let Some(importance) = self.importance {
            check_unit("importance", importance)?;
        }
        Ok(())
    }
}

fn check_content(content: &str) -> Result<(), InvalidRequest> {
    if js::trim(content).is_empty() {
        return Err(InvalidRequest::new(
            "empty_content",
            "`content` must not be empty",
        ));
    }
    let chars = content.chars().count();
    if chars > MAX_CONTENT_CHARS {
        return Err(InvalidRequest::new(
            "content_too_long",
            format!("`content` must be at most {MAX_CONTENT_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

/// `PATCH /memories/{id}`: cldmemory's `update_memory` arguments. Given fields replace the
/// stored ones; the embedding is redone only when the embedded text changes.
/// At least one field; `null` is the same as leaving a field out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UpdateRequest {
    /// 1..=100,000 characters, not only whitespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 100000, pattern = r"\S", nullable = false)]
    pub content: Option<String>,
    /// 0..1
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0, nullable = false)]
    pub importance: Option<f64>,
    /// Replaces the whole context.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub context: Option<StoreContext>,
    /// Replaces the whole metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    pub metadata: Option<Map<String, Value>>,
}

impl UpdateRequest {
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if let Some(content) = &self.content {
            check_content(content)?;
        }
        if let Some(importance) = self.importance {
            check_unit("importance", importance)?;
        }
        if self == &Self::default() {
            return Err(InvalidRequest::new(
                "empty_update",
                "the update names no field to change",
            ));
        }
        Ok(())
    }
}

/// How much of each memory a search answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DetailLevel {
    /// `id`, `summary`, `type`, `timestamp`, `importance`, `emotionalValence`, `tags`, `project`.
    Compact,
    /// Whole memories.
    Full,
}

/// `POST /memories/search`: cldmemory's `search_memories` arguments.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchRequest {
    /// May be empty: then the memories matching the filters, in storage order (none without
    /// a filter). At most 10,000 characters.
    #[schema(max_length = 10000)]
    pub query: String,
    #[serde(rename = "type")]
    pub memory_type: Option<MemoryType>,
    /// 1..=50, default 10. A whole number; JSON writes it either way (`20` or `20.0`).
    #[schema(minimum = 1, maximum = 50)]
    #[serde(default, deserialize_with = "whole_number")]
    pub limit: Option<u32>,
    /// 0..1: results scoring below are left out; default `layout.similarityThreshold`.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub similarity_threshold: Option<f64>,
    /// 0..1
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_importance: Option<f64>,
    pub emotional_range: Option<ValenceRange>,
    /// Dates as JavaScript's `Date` reads them (ISO 8601 or `YYYY-MM-DD`).
    pub date_range: Option<DateStrings>,
    /// Also the memories the results are associated with (whole memories).
    pub include_associations: Option<bool>,
    /// `full` by default here (`compact` in cldmemory's tool).
    pub detail_level: Option<DetailLevel>,
    /// With `detailLevel: full`: chunked memories come back whole.
    pub reconstruct_chunks: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValenceRange {
    /// -1..1
    #[schema(minimum = -1.0, maximum = 1.0)]
    pub min: f64,
    /// -1..1
    #[schema(minimum = -1.0, maximum = 1.0)]
    pub max: f64,
}

/// A date range as given: both ends required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateStrings {
    /// A date JavaScript's `Date` reads: ISO 8601 (`2025-01-31T12:00:00Z`) or `YYYY-MM-DD`.
    #[schema(format = DateTime)]
    pub start: String,
    #[schema(format = DateTime)]
    pub end: String,
}

/// A date range as the vector store filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DateRange {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// A validated search with every default applied; its JSON is the search-cache key's input.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedSearch {
    /// As given: the embedded text is built from it.
    pub query: String,
    #[serde(rename = "type")]
    pub memory_type: Option<MemoryType>,
    pub limit: u32,
    pub similarity_threshold: f32,
    pub min_importance: Option<f64>,
    pub emotional_range: Option<ValenceRange>,
    pub date_range: Option<DateRange>,
    pub include_associations: bool,
    pub detail_level: DetailLevel,
    pub reconstruct_chunks: bool,
}

impl NormalizedSearch {
    /// A blank query: the memories matching the filters, without a vector search.
    pub fn is_blank(&self) -> bool {
        js::trim(&self.query).is_empty()
    }

    /// Whether any payload condition is set.
    pub fn has_filters(&self) -> bool {
        self.memory_type.is_some()
            || self.min_importance.is_some()
            || self.emotional_range.is_some()
            || self.date_range.is_some()
    }
}

pub const DEFAULT_SEARCH_LIMIT: u32 = 10;
pub const MAX_SEARCH_LIMIT: u32 = 50;

impl SearchRequest {
    /// Checks every field and applies defaults (`default_threshold` when none is given).
    pub fn normalize(self, default_threshold: f32) -> Result<NormalizedSearch, InvalidRequest> {
        if self.query.chars().count() > MAX_QUERY_CHARS {
            return Err(InvalidRequest::new(
                "query_too_long",
                format!("`query` must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let limit = self.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
        if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
            return Err(InvalidRequest::new(
                "invalid_limit",
                format!("`limit` must be between 1 and {MAX_SEARCH_LIMIT}, got {limit}"),
            ));
        }
        if let Some(threshold) = self.similarity_threshold {
            if !(0.0..=1.0).contains(&threshold) {
                return Err(InvalidRequest::new(
                    "invalid_threshold",
                    format!("`similarityThreshold` must be between 0 and 1, got {threshold}"),
                ));
            }
        }
        if let Some(importance) = self.min_importance {
            check_unit("minImportance", importance)?;
        }
        if let Some(range) = self.emotional_range {
            check_valence("emotionalRange.min", range.min)?;
            check_valence("emotionalRange.max", range.max)?;
        }
        let date_range = self
            .date_range
            .map(|range| -> Result<DateRange, InvalidRequest> {
                let parse = |field: &str, text: &str| {
                    js::parse_date(text).map_err(|error| {
                        InvalidRequest::new(
                            "invalid_date",
                            format!("`dateRange.{field}` {text:?}: {error}"),
                        )
                    })
                };
                Ok(DateRange {
                    start: Some(parse("start", &range.start)?),
                    end: Some(parse("end", &range.end)?),
                })
            })
            .transpose()?;
        Ok(NormalizedSearch {
            query: self.query,
            memory_type: self.memory_type,
            limit,
            similarity_threshold: self
                .similarity_threshold
                .map_or(default_threshold, |t| t as f32),
            min_importance: self.min_importance,
            emotional_range: self.emotional_range,
            date_range,
            include_associations: self.include_associations.unwrap_or(false),
            detail_level: self.detail_level.unwrap_or(DetailLevel::Full),
            reconstruct_chunks: self.reconstruct_chunks.unwrap_or(false),
        })
    }
}

/// A whole number as JSON may write it: `20`, or `20.0` as JavaScript clients do. A fraction
/// or a number out of `u32` is refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(whole) = number.as_u64() {
        return u32::try_from(whole)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{number} is too large")));
    }
    match number.as_f64() {
        Some(float) if float.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&float) => {
            Ok(Some(float as u32))
        }
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a whole number ≥ 0"
        ))),
    }
}

fn check_unit(field: &str, value: f64) -> Result<(), InvalidRequest> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(InvalidRequest::new(
            "out_of_range",
            format!("`{field}` must be between 0 and 1, got {value}"),
        ))
    }
}

fn check_valence(field: &str, value: f64) -> Result<(), InvalidRequest> {
    if (-1.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(InvalidRequest::new(
            "out_of_range",
            format!("`{field}` must be between -1 and 1, got {value}"),
        ))
    }
}

const TOMBSTONE_PREFIX: &[u8] = b"{\"deleted\":true";

/// The cached record of a deleted memory: reads answer 404 at once, before the worker runs.
pub fn tombstone(id: Uuid) -> bytes::Bytes {
    bytes::Bytes::from(format!("{{\"deleted\":true,\"id\":\"{id}\"}}"))
}

pub fn is_tombstone(record: &[u8]) -> bool {
    record.starts_with(TOMBSTONE_PREFIX)
}

/// Parses a memory id from a path segment.
pub fn parse_memory_id(segment: &str) -> Result<Uuid, InvalidRequest> {
    Uuid::parse_str(segment).map_err(|_| {
        InvalidRequest::new("invalid_id", format!("memory id {segment:?} is not a UUID"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(json: &str) -> Result<NormalizedSearch, InvalidRequest> {
        let request: SearchRequest = serde_json::from_str(json).expect("parses");
        request.normalize(0.7)
    }

    #[test]
    fn search_defaults_keep_the_query_as_given() {
        let normalized = search(r#"{"query":"  coffee   in  Paris "}"#).expect("valid");
        assert_eq!(normalized.query, "  coffee   in  Paris ");
        assert_eq!(normalized.limit, DEFAULT_SEARCH_LIMIT);
        assert_eq!(normalized.similarity_threshold, 0.7);
        assert_eq!(normalized.detail_level, DetailLevel::Full);
        let blank = search(r#"{"query":"   ","type":"semantic"}"#).expect("valid");
        assert!(blank.is_blank() && blank.has_filters());
    }

    #[test]
    fn search_refuses_what_cldmemory_refuses() {
        let code = |json: &str| search(json).unwrap_err().code;
        assert_eq!(code(r#"{"query":"x","limit":0}"#), "invalid_limit");
        assert_eq!(code(r#"{"query":"x","limit":51}"#), "invalid_limit");
        assert_eq!(
            code(r#"{"query":"x","similarityThreshold":1.5}"#),
            "invalid_threshold"
        );
        assert_eq!(code(r#"{"query":"x","minImportance":2}"#), "out_of_range");
        assert_eq!(
            code(r#"{"query":"x","emotionalRange":{"min":-2,"max":0}}"#),
            "out_of_range"
        );
        assert_eq!(
            code(r#"{"query":"x","dateRange":{"start":"yesterday","end":"2025-01-01"}}"#),
            "invalid_date"
        );
        // cldmemory lets an inverted range through (it finds nothing).
        assert!(search(r#"{"query":"x","emotionalRange":{"min":0.5,"max":-0.5}}"#).is_ok());
        let range =
            search(r#"{"query":"x","dateRange":{"start":"2025-01-01","end":"2025-02-01"}}"#)
                .expect("valid")
                .date_range
                .expect("range");
        assert_eq!(
            range.start.map(js::to_iso_string).as_deref(),
            Some("2025-01-01T00:00:00.000Z")
        );
    }

    #[test]
    fn search_rejects_unknown_fields() {
        assert!(serde_json::from_str::<SearchRequest>(r#"{"query":"x","limt":5}"#).is_err());
        assert!(serde_json::from_str::<SearchRequest>(r#"{"limit":5}"#).is_err());
    }

    #[test]
    fn store_validation() {
        let parse = |json: &str| serde_json::from_str::<StoreRequest>(json);
        assert!(parse(r#"{"content":"hello"}"#).is_err(), "type is required");
        let valid = parse(r#"{"content":"hello","type":"semantic"}"#).expect("parses");
        assert!(valid.validate().is_ok());
        let blank = parse(r#"{"content":" \n","type":"semantic"}"#).expect("parses");
        assert_eq!(blank.validate().unwrap_err().code, "empty_content");
        let heavy = parse(r#"{"content":"a","type":"semantic","importance":1.2}"#).expect("parses");
        assert_eq!(heavy.validate().unwrap_err().code, "out_of_range");
        assert!(parse(r#"{"content":"a","type":"semantic","context":{"tags":"x"}}"#).is_err());
    }

    #[test]
    fn updates_must_change_something() {
        assert_eq!(
            UpdateRequest::default().validate().unwrap_err().code,
            "empty_update"
        );
        let content = UpdateRequest {
            content: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(content.validate().unwrap_err().code, "empty_content");
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(parse_memory_id("0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e").is_ok());
        assert_eq!(parse_memory_id("42").unwrap_err().code, "invalid_id");
    }

    #[test]
    fn a_limit_may_be_written_as_a_whole_float_but_not_a_fraction() {
        let parse = |limit: &str| {
            serde_json::from_str::<SearchRequest>(&format!(r#"{{"query": "q", "limit": {limit}}}"#))
                .map(|search| search.limit)
        };
        assert_eq!(parse("20").ok(), Some(Some(20)));
        assert_eq!(parse("20.0").ok(), Some(Some(20)));
        assert_eq!(parse("null").ok(), Some(None));
        assert!(parse("2.5").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("1e20").is_err());
    }
}
