//! The vector-store concern: memories as points (id = memory id, payload = the memory's JSON
//! exactly as the layout gives it, and read back exactly as stored), searched by embedding
//! with payload filters.
//!
//! Two implementations, chosen by `vectors.backend`: [`QdrantStore`] (a Qdrant server over gRPC,
//! payload writes over REST to keep their key order) and [`EdgeStore`] (Qdrant Edge in this
//! process). Both index the payload fields the collection's spec names (the layout's), and
//! translate the same [`PayloadFilter`], so filters behave alike.

mod edge;
mod filter;
mod qdrant;
mod qdrant_rest;

pub use edge::EdgeStore;
pub use filter::{Condition, IndexKind, IndexedField, PayloadFilter};

#[cfg(test)]
mod qdrant_cluster_tests;
pub use qdrant::QdrantStore;

use async_trait::async_trait;
use uuid::Uuid;

use crate::backend::{BackendError, Unanswered};
use crate::memory::StoredMemory;

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
    /// The payload fields searches filter on (the layout's), each with its index.
    pub indexes: Vec<IndexedField>,
    /// How a new collection is spread over a Qdrant cluster (`vectors.cluster`).
    pub shards: Option<ShardSpec>,
}

/// A new collection's shards in a Qdrant cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub shard_number: u32,
    pub replication_factor: u32,
    pub write_consistency_factor: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VectorQuery {
    pub vector: Vec<f32>,
    pub filter: PayloadFilter,
    pub limit: u64,
    pub score_threshold: Option<f32>,
    /// `hnsw_ef`: lower is faster, higher is more exact; `None` is the collection's default.
    pub ef: Option<u64>,
    /// Every point compared, no index: the true nearest (for measuring recall).
    pub exact: bool,
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
    /// Up to `limit` memories matching `filter`, in point-id order (Qdrant's scroll).
    async fn scroll(
        &self,
        filter: &PayloadFilter,
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
