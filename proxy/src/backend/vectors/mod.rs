//! The vector-store concern: memories as points (id = memory id, payload = the memory's JSON
//! exactly as the layout gives it, and read back exactly as stored), searched by embedding
//! with payload filters.
//!
//! Two implementations, chosen by `vectors.backend`: [`QdrantStore`] (a Qdrant server over gRPC,
//! payload writes over REST to keep their key order) and [`EdgeStore`] (Qdrant Edge in this
//! process). Both index the same payload fields, so
//! filters behave alike.

mod edge;
mod qdrant;
mod qdrant_rest;

pub use edge::EdgeStore;
pub use qdrant::QdrantStore;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::backend::{BackendError, Unanswered};
use crate::memory::{DateRange, MemoryType, StoredMemory, ValenceRange};

/// Payload fields with an index, and the kind of index each needs.
pub const INDEXED_FIELDS: &[(&str, IndexKind)] = &[
    ("type", IndexKind::Keyword),
    ("context.tags", IndexKind::Keyword),
    ("context.chunkOf", IndexKind::Keyword),
    ("importance", IndexKind::Float),
    ("emotionalValence", IndexKind::Float),
    ("timestamp", IndexKind::Datetime),
    ("content", IndexKind::Text),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Keyword,
    Float,
    Datetime,
    /// Full text: word tokens, lowercased.
    Text,
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("qdrant: {0}")]
    Qdrant(#[from] Box<qdrant_client::QdrantError>),
    #[error("qdrant edge: {0}")]
    Edge(String),
    #[error(
        "collection {collection:?} has vectors of size {found}, but embeddings.dimensions is {expected}; \
         use another collection or the matching embedding size"
    )]
    DimensionMismatch {
        collection: String,
        expected: u64,
        found: u64,
    },
    #[error("vector store timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("qdrant (REST): {0}")]
    Rest(String),
    #[error("stored point {id} has an invalid payload: {reason}")]
    InvalidPayload { id: String, reason: String },
    #[error(transparent)]
    Unanswered(#[from] Unanswered),
}

impl BackendError for VectorError {
    fn unanswered(&self) -> Option<&Unanswered> {
        match self {
            Self::Unanswered(unanswered) => Some(unanswered),
            _ => None,
        }
    }
}

impl From<qdrant_client::QdrantError> for VectorError {
    fn from(error: qdrant_client::QdrantError) -> Self {
        Self::Qdrant(Box::new(error))
    }
}

/// The collection's shape, fixed at creation.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    pub name: String,
    pub dimensions: u64,
    pub distance: crate::config::DistanceMetric,
    /// The tenant field, indexed as a tenant key when scoping is on.
    pub scope_field: Option<String>,
}

/// Payload conditions of a search; all must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryFilter {
    /// `(field, tenant)`: only this tenant's memories.
    pub scope: Option<(String, String)>,
    pub memory_type: Option<MemoryType>,
    pub min_importance: Option<f64>,
    pub emotional_range: Option<ValenceRange>,
    pub date_range: Option<DateRange>,
    /// Only the chunks of this parent memory (`context.chunkOf`).
    pub chunk_of: Option<String>,
}

impl MemoryFilter {
    /// Whether a memory's JSON meets every condition, as the vector store would judge it (a
    /// missing field fails its condition). For answers that do not come from the store.
    pub fn matches(&self, memory: &StoredMemory) -> bool {
        let number = |field: &str| memory.get(field).and_then(Value::as_f64);
        let scope_ok = self.scope.as_ref().is_none_or(|(field, tenant)| {
            memory.get(field).and_then(Value::as_str) == Some(tenant.as_str())
        });
        let type_ok = self.memory_type.is_none_or(|wanted| {
            memory.get("type").and_then(Value::as_str) == Some(wanted.as_str())
        });
        let importance_ok = self
            .min_importance
            .is_none_or(|min| number("importance").is_some_and(|value| value >= min));
        let valence_ok = self.emotional_range.is_none_or(|range| {
            number("emotionalValence").is_some_and(|value| (range.min..=range.max).contains(&value))
        });
        let date_ok = self.date_range.is_none_or(|range| {
            memory
                .get("timestamp")
                .and_then(Value::as_str)
                .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
                .is_some_and(|at| {
                    range.start.is_none_or(|start| at >= start)
                        && range.end.is_none_or(|end| at <= end)
                })
        });
        let chunk_ok = self.chunk_of.as_ref().is_none_or(|parent| {
            memory
                .get("context")
                .and_then(|context| context.get("chunkOf"))
                .and_then(Value::as_str)
                == Some(parent.as_str())
        });
        scope_ok && type_ok && importance_ok && valence_ok && date_ok && chunk_ok
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VectorQuery {
    pub vector: Vec<f32>,
    pub filter: MemoryFilter,
    pub limit: u64,
    pub score_threshold: Option<f32>,
    /// `hnsw_ef`: lower is faster, higher is more exact; `None` is the collection's default.
    pub ef: Option<u64>,
    /// Every point compared, no index: the true nearest (for measuring recall).
    pub exact: bool,
}

/// A search by words, for when no embedding can be had: memories (matching `filter`) whose
/// content contains any of `terms` or whose tags are one of them. Ranking is the caller's.
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordQuery {
    /// Lowercase words.
    pub terms: Vec<String>,
    pub filter: MemoryFilter,
    /// How many matching memories to return at most.
    pub limit: u64,
}

/// A memory found by a search: the stored JSON with `id`, and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredMemory {
    pub memory: StoredMemory,
    pub score: f32,
}

/// A memory to store with its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPoint {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub memory: StoredMemory,
}

#[async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// Creates the collection and its payload indexes when missing; fails when it exists with
    /// another vector size.
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError>;
    async fn upsert(&self, points: Vec<MemoryPoint>) -> Result<(), VectorError>;
    async fn retrieve(&self, id: Uuid) -> Result<Option<StoredMemory>, VectorError>;
    async fn search(&self, query: VectorQuery) -> Result<Vec<ScoredMemory>, VectorError>;
    /// Memories matching a [`KeywordQuery`], in the store's order.
    async fn keyword_search(&self, query: KeywordQuery) -> Result<Vec<StoredMemory>, VectorError>;
    /// Up to `limit` memories matching `filter`, in point-id order (Qdrant's scroll).
    async fn scroll(
        &self,
        filter: &MemoryFilter,
        limit: u64,
    ) -> Result<Vec<StoredMemory>, VectorError>;
    async fn delete(&self, ids: &[Uuid]) -> Result<(), VectorError>;
    /// The vector of one point, when it exists.
    async fn vector_of(&self, id: Uuid) -> Result<Option<Vec<f32>>, VectorError>;
    /// Sets these payload fields of one point, leaving the others (a point that is gone is
    /// left alone).
    async fn set_fields(&self, id: Uuid, fields: StoredMemory) -> Result<(), VectorError>;
    /// Answers when the store is reachable.
    async fn health(&self) -> Result<(), VectorError>;
    /// Builds the indexes for what was written since the last call, where the backend leaves
    /// that to its user (Qdrant Edge); a Qdrant server optimizes on its own. Whether anything
    /// changed.
    async fn optimize(&self) -> Result<bool, VectorError>;
    /// `"qdrant"` or `"edge"`, for logs and metrics.
    fn backend_name(&self) -> &'static str;
}

#[cfg(test)]
mod contract;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{DateRange, MemoryType, ValenceRange};
    use serde_json::json;

    fn memory(value: Value) -> StoredMemory {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test memories are objects"),
        }
    }

    #[test]
    fn filters_judge_memories_like_the_store() {
        let stored = memory(json!({
            "id": "x", "type": "episodic", "importance": 0.6, "emotionalValence": -0.2,
            "timestamp": "2026-03-01T10:00:00Z", "userId": "alice"
        }));
        assert!(MemoryFilter::default().matches(&stored));
        let all = MemoryFilter {
            scope: Some(("userId".into(), "alice".into())),
            memory_type: Some(MemoryType::Episodic),
            min_importance: Some(0.5),
            emotional_range: Some(ValenceRange {
                min: -0.5,
                max: 0.0,
            }),
            date_range: Some(DateRange {
                start: "2026-01-01T00:00:00Z".parse().ok(),
                end: None,
            }),
            chunk_of: None,
        };
        assert!(all.matches(&stored));
        let other_tenant = MemoryFilter {
            scope: Some(("userId".into(), "bob".into())),
            ..Default::default()
        };
        assert!(!other_tenant.matches(&stored));
        let too_important = MemoryFilter {
            min_importance: Some(0.7),
            ..Default::default()
        };
        assert!(!too_important.matches(&stored));
        let later = MemoryFilter {
            date_range: Some(DateRange {
                start: "2026-06-01T00:00:00Z".parse().ok(),
                end: None,
            }),
            ..Default::default()
        };
        assert!(!later.matches(&stored));
        let missing = MemoryFilter {
            min_importance: Some(0.1),
            ..Default::default()
        };
        assert!(!missing.matches(&memory(json!({ "id": "y" }))));
    }
}
