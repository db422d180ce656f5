//! The Memory API's data: a memory as the legacy service stores it in the Qdrant payload, the
//! search request, the create request, and their validation.
//!
//! Stored memories are passed through as JSON objects ([`StoredMemory`]) rather than parsed into
//! a struct, so fields the legacy service adds (a user id, say) survive the fast path unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// Largest accepted memory content, in characters.
pub const MAX_CONTENT_CHARS: usize = 100_000;
/// Largest accepted search query, in characters.
pub const MAX_QUERY_CHARS: usize = 10_000;
/// Characters of content kept as the provisional summary.
pub const PROVISIONAL_SUMMARY_CHARS: usize = 200;

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

/// A memory as stored (the Qdrant payload plus `id`). Documentation type for the OpenAPI
/// document; at run time memories travel as [`StoredMemory`] so unknown fields survive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub id: Uuid,
    pub content: String,
    pub summary: String,
    #[serde(rename = "type")]
    pub memory_type: MemoryType,
    /// 0..1
    pub importance: f64,
    /// -1..1
    pub emotional_valence: f64,
    pub tags: Vec<String>,
    pub associations: Vec<Uuid>,
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub timestamp: DateTime<Utc>,
    pub last_accessed: DateTime<Utc>,
    pub access_count: u64,
    pub decay: f64,
    pub status: MemoryStatus,
    /// Present on search results: the similarity to the query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// A memory as a JSON object, exactly as stored.
pub type StoredMemory = Map<String, Value>;

/// `POST /memories/search`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    #[serde(rename = "type")]
    pub memory_type: Option<MemoryType>,
    /// 1..=100, default 10.
    pub limit: Option<u32>,
    /// 0..1: results scoring below are left out.
    pub similarity_threshold: Option<f32>,
    /// 0..1
    pub min_importance: Option<f64>,
    pub emotional_range: Option<ValenceRange>,
    pub date_range: Option<DateRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValenceRange {
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// A validated search with every default applied; its JSON is the search-cache key's input.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedSearch {
    pub query: String,
    #[serde(rename = "type")]
    pub memory_type: Option<MemoryType>,
    pub limit: u32,
    pub similarity_threshold: Option<f32>,
    pub min_importance: Option<f64>,
    pub emotional_range: Option<ValenceRange>,
    pub date_range: Option<DateRange>,
}

pub const DEFAULT_SEARCH_LIMIT: u32 = 10;
pub const MAX_SEARCH_LIMIT: u32 = 100;

impl SearchRequest {
    /// Checks every field and applies defaults; the query's whitespace is collapsed.
    pub fn normalize(self) -> Result<NormalizedSearch, ApiError> {
        let query = self.query.split_whitespace().collect::<Vec<_>>().join(" ");
        if query.is_empty() {
            return Err(ApiError::bad_request(
                "empty_query",
                "`query` must not be empty",
            ));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(ApiError::bad_request(
                "query_too_long",
                format!("`query` must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let limit = self.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
        if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("`limit` must be between 1 and {MAX_SEARCH_LIMIT}, got {limit}"),
            ));
        }
        if let Some(threshold) = self.similarity_threshold {
            if !(0.0..=1.0).contains(&threshold) {
                return Err(ApiError::bad_request(
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
            if range.min > range.max {
                return Err(ApiError::bad_request(
                    "invalid_range",
                    "`emotionalRange.min` must not exceed `emotionalRange.max`",
                ));
            }
        }
        if let Some(DateRange {
            start: Some(start),
            end: Some(end),
        }) = self.date_range
        {
            if start > end {
                return Err(ApiError::bad_request(
                    "invalid_range",
                    "`dateRange.start` must not be after `dateRange.end`",
                ));
            }
        }
        Ok(NormalizedSearch {
            query,
            memory_type: self.memory_type,
            limit,
            similarity_threshold: self.similarity_threshold,
            min_importance: self.min_importance,
            emotional_range: self.emotional_range,
            date_range: self.date_range,
        })
    }
}

/// `POST /memories`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateMemoryRequest {
    /// 1..=100,000 characters.
    pub content: String,
    pub summary: Option<String>,
    #[serde(rename = "type")]
    pub memory_type: Option<MemoryType>,
    /// 0..1, default 0.5.
    pub importance: Option<f64>,
    /// -1..1; computed by enrichment when absent.
    pub emotional_valence: Option<f64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub associations: Vec<Uuid>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Map<String, Value>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl CreateMemoryRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        let chars = self.content.chars().count();
        if self.content.trim().is_empty() {
            return Err(ApiError::bad_request(
                "empty_content",
                "`content` must not be empty",
            ));
        }
        if chars > MAX_CONTENT_CHARS {
            return Err(ApiError::bad_request(
                "content_too_long",
                format!("`content` must be at most {MAX_CONTENT_CHARS} characters, got {chars}"),
            ));
        }
        if let Some(importance) = self.importance {
            check_unit("importance", importance)?;
        }
        if let Some(valence) = self.emotional_valence {
            check_valence("emotionalValence", valence)?;
        }
        Ok(())
    }

    /// The record stored at once: enrichment fields are provisional until the worker runs.
    pub fn into_record(self, id: Uuid, now: DateTime<Utc>, status: MemoryStatus) -> StoredMemory {
        let summary = self.summary.unwrap_or_else(|| {
            self.content
                .chars()
                .take(PROVISIONAL_SUMMARY_CHARS)
                .collect()
        });
        let timestamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let value = serde_json::json!({
            "id": id,
            "content": self.content,
            "summary": summary,
            "type": self.memory_type.unwrap_or(MemoryType::Episodic),
            "importance": self.importance.unwrap_or(0.5),
            "emotionalValence": self.emotional_valence.unwrap_or(0.0),
            "tags": self.tags,
            "associations": self.associations,
            "context": self.context,
            "metadata": self.metadata,
            "timestamp": timestamp,
            "lastAccessed": timestamp,
            "accessCount": 0,
            "decay": 1.0,
            "status": status,
        });
        match value {
            Value::Object(map) => map,
            _ => unreachable!("json! of an object literal is an object"),
        }
    }
}

fn check_unit(field: &str, value: f64) -> Result<(), ApiError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "out_of_range",
            format!("`{field}` must be between 0 and 1, got {value}"),
        ))
    }
}

fn check_valence(field: &str, value: f64) -> Result<(), ApiError> {
    if (-1.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "out_of_range",
            format!("`{field}` must be between -1 and 1, got {value}"),
        ))
    }
}

/// Tags as the user gave them, then the extracted keywords, without repeats.
pub fn merge_tags(given: Option<&Value>, keywords: Vec<String>) -> Value {
    let mut tags: Vec<String> = given
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for keyword in keywords {
        if !tags.contains(&keyword) {
            tags.push(keyword);
        }
    }
    Value::from(tags)
}

/// `PATCH /memories/{id}`: the fields to replace; content changes are re-embedded.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMemoryRequest {
    pub content: Option<String>,
    pub summary: Option<String>,
    #[serde(rename = "type")]
    pub memory_type: Option<MemoryType>,
    pub importance: Option<f64>,
    pub emotional_valence: Option<f64>,
    pub tags: Option<Vec<String>>,
    pub associations: Option<Vec<Uuid>>,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

impl UpdateMemoryRequest {
    /// Checks the fields and returns them as a JSON patch of the stored memory.
    pub fn into_patch(self) -> Result<StoredMemory, ApiError> {
        if let Some(content) = &self.content {
            if content.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "empty_content",
                    "`content` must not be empty",
                ));
            }
            let chars = content.chars().count();
            if chars > MAX_CONTENT_CHARS {
                return Err(ApiError::bad_request(
                    "content_too_long",
                    format!(
                        "`content` must be at most {MAX_CONTENT_CHARS} characters, got {chars}"
                    ),
                ));
            }
        }
        if let Some(importance) = self.importance {
            check_unit("importance", importance)?;
        }
        if let Some(valence) = self.emotional_valence {
            check_valence("emotionalValence", valence)?;
        }
        let value = serde_json::json!({
            "content": self.content,
            "summary": self.summary,
            "type": self.memory_type,
            "importance": self.importance,
            "emotionalValence": self.emotional_valence,
            "tags": self.tags,
            "associations": self.associations,
            "context": self.context,
            "metadata": self.metadata,
        });
        let Value::Object(map) = value else {
            unreachable!("json! of an object literal is an object")
        };
        let patch: StoredMemory = map.into_iter().filter(|(_, v)| !v.is_null()).collect();
        if patch.is_empty() {
            return Err(ApiError::bad_request(
                "empty_update",
                "the update names no field to change",
            ));
        }
        Ok(patch)
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
pub fn parse_memory_id(segment: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(segment).map_err(|_| {
        ApiError::bad_request("invalid_id", format!("memory id {segment:?} is not a UUID"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(json: &str) -> Result<NormalizedSearch, ApiError> {
        let request: SearchRequest = serde_json::from_str(json).expect("parses");
        request.normalize()
    }

    #[test]
    fn search_defaults_and_whitespace() {
        let normalized = search(r#"{"query":"  coffee   in  Paris "}"#).expect("valid");
        assert_eq!(normalized.query, "coffee in Paris");
        assert_eq!(normalized.limit, DEFAULT_SEARCH_LIMIT);
    }

    #[test]
    fn search_rejects_out_of_range_values() {
        let code = |json: &str| search(json).unwrap_err().code;
        assert_eq!(code(r#"{"query":"   "}"#), "empty_query");
        assert_eq!(code(r#"{"query":"x","limit":0}"#), "invalid_limit");
        assert_eq!(code(r#"{"query":"x","limit":101}"#), "invalid_limit");
        assert_eq!(
            code(r#"{"query":"x","similarityThreshold":1.5}"#),
            "invalid_threshold"
        );
        assert_eq!(
            code(r#"{"query":"x","similarityThreshold":-0.1}"#),
            "invalid_threshold"
        );
        assert_eq!(code(r#"{"query":"x","minImportance":2}"#), "out_of_range");
        assert_eq!(
            code(r#"{"query":"x","emotionalRange":{"min":0.5,"max":-0.5}}"#),
            "invalid_range"
        );
        assert_eq!(
            code(
                r#"{"query":"x","dateRange":{"start":"2025-02-01T00:00:00Z","end":"2025-01-01T00:00:00Z"}}"#
            ),
            "invalid_range"
        );
    }

    #[test]
    fn search_rejects_unknown_fields() {
        assert!(serde_json::from_str::<SearchRequest>(r#"{"query":"x","limt":5}"#).is_err());
    }

    #[test]
    fn create_validation() {
        let parse = |json: &str| serde_json::from_str::<CreateMemoryRequest>(json).expect("parses");
        assert!(parse(r#"{"content":"hello"}"#).validate().is_ok());
        assert_eq!(
            parse(r#"{"content":"  "}"#).validate().unwrap_err().code,
            "empty_content"
        );
        assert_eq!(
            parse(r#"{"content":"a","importance":1.2}"#)
                .validate()
                .unwrap_err()
                .code,
            "out_of_range"
        );
        let long = format!(r#"{{"content":"{}"}}"#, "a".repeat(MAX_CONTENT_CHARS + 1));
        assert_eq!(
            parse(&long).validate().unwrap_err().code,
            "content_too_long"
        );
    }

    #[test]
    fn a_record_has_a_provisional_summary() {
        let request: CreateMemoryRequest =
            serde_json::from_str(&format!(r#"{{"content":"{}"}}"#, "é".repeat(500)))
                .expect("parses");
        let record = request.into_record(Uuid::now_v7(), Utc::now(), MemoryStatus::Processing);
        assert_eq!(
            record["summary"].as_str().map(|s| s.chars().count()),
            Some(200)
        );
        assert_eq!(record["status"], "processing");
        assert_eq!(record["type"], "episodic");
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(parse_memory_id("0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e").is_ok());
        assert_eq!(parse_memory_id("42").unwrap_err().code, "invalid_id");
    }
}
