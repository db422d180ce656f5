//! The core: the Memory API's operations, answered by memgate itself from its caches and the
//! vector store instead of waiting on the legacy service. Protocol-free: operations take
//! domain values and return them ([`Answer`]) or a [`CoreError`]; the fronts (REST in
//! `crate::front::rest::service`, MCP in `crate::front::mcp`) say them in their protocols.
//!
//! One operation per file:
//! - [`get`]: L1 → cache store `mem:{id}` → vector store; a miss fills both caches.
//! - [`search`]: result cache (keyed by the search generation and the normalised request) →
//!   embedding cache → embed the layout's query text → vector search with filters, cut by the
//!   layout's rules (threshold, limit), shaped in [`shape`]; a blank query lists by the filters.
//! - [`ladder`]: the rungs below the legacy service when a search cannot be answered.
//! - [`write`]: store, change, delete: the record readers will see and the queue entry are
//!   stored in one atomic step and acknowledged at once; a worker does the enrichment and the
//!   vector store write.
//! - [`invalidate`]: keeping the caches coherent with what another writer (the legacy service)
//!   changed.
//! - [`own_writes`]: a sessionless client's writes not yet searchable, for read-your-writes.
//! - Read counts on answers: [`counts`] (see `crate::core::reads` for the protocol); the caches:
//!   [`l1`], [`search_cache`], [`forgetting`].
//!
//! A cache store that fails is skipped (logged and counted); a vector store or embedder that
//! fails is [`CoreError::Unavailable`], since nothing else here can answer for it.

mod counted_body;
mod counts;
mod error;
pub mod forgetting;
mod get;
mod health;
mod invalidate;
mod l1;
mod ladder;
mod own_writes;
pub mod reads;
mod search;
mod search_cache;
mod shape;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use uuid::Uuid;

pub use error::{CoreError, OperationKind, MAX_WRITE_CONFLICTS};
pub use write::Stored;

use crate::backend::cache::CacheStore;
use crate::backend::embeddings::EmbeddingCache;
use crate::backend::queue::WriteQueue;
use crate::backend::vectors::{Condition, PayloadFilter, VectorStore};
use crate::core::reads::ReadRecorder;
use crate::keys::{KeySpace, Scope};
use crate::layout::Layout;
use crate::memory::{DetailLevel, NormalizedSearch, StoredMemory};
use crate::metrics::Metrics;

/// Whether an answer came from a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Not a cacheable operation (writes, forwarded requests).
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// How far an answer is from what memgate normally answers; the value of
/// `x-memgate-degraded` and the `level` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degraded {
    /// The legacy service answered (the core could not).
    Legacy,
    /// The keyword rung of the ladder: no embedding.
    Keyword,
    /// The popular rung: no vector store either.
    Popular,
    /// From the vector store alone while the cache (which holds writes not yet applied) could
    /// not be read: writes acknowledged moments ago may not show.
    Unconfirmed,
}

impl Degraded {
    pub const ALL: [Degraded; 4] = [
        Self::Legacy,
        Self::Keyword,
        Self::Popular,
        Self::Unconfirmed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Keyword => "keyword",
            Self::Popular => "popular",
            Self::Unconfirmed => "unconfirmed",
        }
    }
}

/// Who counts a read in the payload: memgate (its tally, synced later), or the legacy
/// service, which is being asked the same read (a shadow comparison) and counts it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    Count,
    LeftToLegacy,
}

/// A core operation's value, where it came from, and how degraded it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub value: T,
    pub cache: CacheStatus,
    pub degraded: Option<Degraded>,
}

impl<T> Answer<T> {
    fn hit(value: T) -> Self {
        Self {
            value,
            cache: CacheStatus::Hit,
            degraded: None,
        }
    }

    fn miss(value: T, degraded: Option<Degraded>) -> Self {
        Self {
            value,
            cache: CacheStatus::Miss,
            degraded,
        }
    }
}

/// A memory as memgate answers a read of it: a JSON object with memgate's `status`, kept as
/// the bytes the cache holds so a cached answer is passed on without being parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryJson(Bytes);

impl MemoryJson {
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The memory, parsed.
    pub fn memory(&self) -> Result<StoredMemory, CoreError> {
        serde_json::from_slice(&self.0)
            .map_err(|error| CoreError::Internal(format!("unreadable cached memory: {error}")))
    }
}

/// The settings the core needs, and nothing else.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub memory_ttl: Duration,
    pub search_ttl: Duration,
    pub l1_entries: u64,
    pub l1_ttl: Duration,
    pub search_ef: Option<u64>,
    /// The payload field holding the tenant, when scoping is on.
    pub scope_field: Option<String>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// How many matching memories the keyword rung of the ladder ranks.
    pub keyword_candidates: u64,
}

/// What the core is built from: the backends as the request path should see them (behind
/// their guards, `crate::guard::guarded`, when built in `crate::app`).
pub struct CoreParts {
    pub cache: Arc<dyn CacheStore>,
    pub vectors: Arc<dyn VectorStore>,
    pub embeddings: Arc<EmbeddingCache>,
    pub queue: Arc<dyn WriteQueue>,
    pub layout: Arc<dyn Layout>,
    pub keys: KeySpace,
    pub access: ReadRecorder,
    pub metrics: Metrics,
}

pub struct Core {
    cache: Arc<dyn CacheStore>,
    vectors: Arc<dyn VectorStore>,
    embeddings: Arc<EmbeddingCache>,
    queue: Arc<dyn WriteQueue>,
    layout: Arc<dyn Layout>,
    keys: KeySpace,
    /// Records read from the cache store, with their read counts.
    l1: l1::MemoryL1,
    access: ReadRecorder,
    metrics: Metrics,
    settings: CoreSettings,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The id a row names, if it is one.
pub fn row_id(memory: &StoredMemory) -> Option<Uuid> {
    memory
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
}

impl Core {
    pub fn new(parts: CoreParts, settings: CoreSettings) -> Self {
        Self {
            l1: l1::MemoryL1::new(settings.l1_entries, settings.l1_ttl),
            cache: parts.cache,
            vectors: parts.vectors,
            embeddings: parts.embeddings,
            queue: parts.queue,
            layout: parts.layout,
            keys: parts.keys,
            access: parts.access,
            metrics: parts.metrics,
            settings,
        }
    }

    /// Counts reads of `ids` in this process's tally, unless the legacy service counts them.
    fn count_reads<'a>(
        &self,
        reads: Reads,
        scope: &Scope,
        ids: impl IntoIterator<Item = &'a Uuid>,
    ) {
        if reads == Reads::Count {
            self.access.record(scope, ids);
        }
    }

    /// Counts reads left to the legacy service after all (it could not be asked).
    pub fn record_reads<'a>(&self, scope: &Scope, ids: impl IntoIterator<Item = &'a Uuid>) {
        self.access.record(scope, ids);
    }

    /// A memory as the legacy service shows it: without memgate's bookkeeping (`status`,
    /// `error`, `score`), numbers as JavaScript writes them.
    pub fn shown(&self, memory: &StoredMemory) -> StoredMemory {
        self.layout.payload(memory)
    }

    /// A memory as a search of this detail shows it: a compact row, or the whole memory.
    pub fn listed(&self, memory: &StoredMemory, detail: DetailLevel) -> StoredMemory {
        match detail {
            DetailLevel::Compact => self.layout.compact(memory),
            DetailLevel::Full => self.shown(memory),
        }
    }

    /// The threshold of searches that name none (the layout's).
    pub fn default_similarity_threshold(&self) -> f32 {
        self.layout.default_similarity_threshold()
    }

    /// The memory in the vector store, if this tenant may see it.
    async fn stored(&self, scope: &Scope, id: Uuid) -> Result<Option<StoredMemory>, CoreError> {
        let memory = self
            .vectors
            .retrieve(id)
            .await
            .map_err(|e| error::unavailable("the vector store", e))?;
        Ok(memory.filter(|memory| self.belongs_to(scope, memory)))
    }

    /// Whether a stored memory is visible to this tenant.
    fn belongs_to(&self, scope: &Scope, memory: &StoredMemory) -> bool {
        match (&self.settings.scope_field, scope.value()) {
            (Some(field), Some(tenant)) => {
                memory.get(field).and_then(Value::as_str) == Some(tenant)
            }
            _ => true,
        }
    }

    /// The payload conditions of a search by this tenant: its own memories, and the
    /// layout's conditions for the search's filters.
    fn filter_for(&self, scope: &Scope, search: &NormalizedSearch) -> PayloadFilter {
        let tenant = self
            .settings
            .scope_field
            .clone()
            .zip(scope.value().map(str::to_string))
            .map(|(field, value)| Condition::Equals { field, value });
        let mut must: Vec<Condition> = tenant.into_iter().collect();
        must.extend(self.layout.search_conditions(search));
        PayloadFilter::all(must)
    }
}

#[cfg(test)]
mod tests;
