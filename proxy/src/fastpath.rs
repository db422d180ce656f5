//! The fast path: the sidecar answers Memory API calls itself from its caches and the vector
//! store instead of waiting on the legacy service.
//!
//! - `GET /memories/{id}`: L1 → cache store `mem:{id}` → vector store; a miss fills both caches.
//! - `POST /memories/search`: result cache (keyed by the search generation and the normalised
//!   request) → embedding cache → embed the layout's query text → vector search with filters,
//!   cut by the layout's rules (threshold, limit); a blank query lists by the filters.
//! - `POST /memories`, `PATCH` and `DELETE /memories/{id}`: validated, then the record readers
//!   will see (the memory as the layout shapes it) and the queue entry are stored in one atomic
//!   step and the answer is `202` at once; a worker does the enrichment and the vector store
//!   write.
//!
//! A cache store that fails is skipped (logged and counted); a vector store or embedder that
//! fails is a 503, since nothing else here can answer for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use moka::future::Cache;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::access::{counted, AccessRecorder, LocalBase};
use crate::cache::{CacheStore, ReadCounts, SearchFill};
use crate::dependency::{CallError, Dependency};
use crate::embeddings::EmbeddingCache;
use crate::error::ApiError;
use crate::fallback::DegradedLevel;
use crate::forgetting::Forgetting;
use crate::keys::{KeySpace, Scope};
use crate::layout::{ChunkRole, Layout};
use crate::memory::{
    is_tombstone, tombstone, DetailLevel, MemoryStatus, NormalizedSearch, StoreRequest,
    StoredMemory, UpdateRequest,
};
use crate::metrics::Metrics;
use crate::queue::{QueueError, RecordWrite, Submission, Submitted, WriteOp, WriteQueue};
use crate::vectors::{MemoryFilter, VectorQuery, VectorStore};

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

/// A fast-path answer: the JSON body, its status and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FastAnswer {
    pub status: http::StatusCode,
    pub body: Bytes,
    pub cache: CacheStatus,
    /// Set when the answer could not be checked against writes not yet applied.
    pub degraded: Option<DegradedLevel>,
}

impl FastAnswer {
    /// `200` from a cache.
    fn hit(body: Bytes) -> Self {
        Self {
            status: http::StatusCode::OK,
            body,
            cache: CacheStatus::Hit,
            degraded: None,
        }
    }
}

/// A new memory, acknowledged: stored for readers and queued for the workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: Uuid,
    /// The memory as stored now (without memgate's bookkeeping); `None` when an
    /// `Idempotency-Key` replayed an earlier create.
    pub memory: Option<StoredMemory>,
}

/// The request path's guarded dependencies.
#[derive(Clone, Debug)]
pub struct Guards {
    /// Redis (cache and queue) or the in-process store.
    pub cache: Dependency,
    pub vectors: Dependency,
}

/// The settings the fast path needs, and nothing else.
#[derive(Debug, Clone)]
pub struct FastPathSettings {
    pub memory_ttl: Duration,
    pub search_ttl: Duration,
    pub l1_entries: u64,
    pub l1_ttl: Duration,
    pub search_ef: Option<u64>,
    /// The payload field holding the tenant, when scoping is on.
    pub scope_field: Option<String>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
}

/// A record in L1 and where its read counts stood when it was read: the cache store's
/// (`mem:{id}` and `access:{id}`, read in one atomic step) and this process's
/// ([`LocalBase`]). An answer from it shows those plus this process's reads since, as one
/// that read the counts again would, with no round trip. A read sync since does not make it
/// stale: a sync moves reads from `unsynced` into the record's counts, and this body and these
/// counts are from the same moment. Reads through other processes show once the entry
/// expires (`cache.l1.ttl`), as their writes do.
#[derive(Debug, Clone)]
struct L1Record {
    body: Bytes,
    counts: ReadCounts,
    local: LocalBase,
}

pub struct FastPath {
    cache: Arc<dyn CacheStore>,
    vectors: Arc<dyn VectorStore>,
    embeddings: Arc<EmbeddingCache>,
    queue: Arc<dyn WriteQueue>,
    layout: Arc<dyn Layout>,
    keys: KeySpace,
    /// Records read from the cache store, each with the read counts read with it: answered
    /// without a round trip (see [`L1Record`]).
    memories_l1: Cache<String, L1Record>,
    /// Moves on every write this process makes: a read that began before a write never
    /// fills L1 after it (with what it read before the write).
    l1_epoch: std::sync::atomic::AtomicU64,
    /// Cached records being dropped in the background: read only once they are gone.
    forgetting: Arc<Forgetting>,
    access: AccessRecorder,
    guards: Guards,
    metrics: Metrics,
    settings: FastPathSettings,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Drops the cached record under `key` unless a write of it by memgate is pending; a failure
/// is logged (the record then expires with its TTL).
async fn forget_settled(guard: &Dependency, queue: &dyn WriteQueue, key: &str, revision: &str) {
    if let Err(error) = guard
        .call("forget", queue.forget_settled(key, revision))
        .await
    {
        tracing::warn!(%error, key, "could not drop a cached record");
    }
}

/// A memory with memgate's `status`, as its record in the cache holds it.
fn with_status(mut memory: StoredMemory, status: MemoryStatus) -> StoredMemory {
    let status = serde_json::to_value(status).unwrap_or(Value::Null);
    memory.insert("status".into(), status);
    memory
}

/// Whether a cached record is still provisional.
fn is_processing(record: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: Option<&'a str>,
    }
    serde_json::from_slice::<Status>(record).is_ok_and(|r| r.status == Some("processing"))
}

/// A search answer as clients get it.
#[derive(serde::Serialize)]
struct SearchBody {
    memories: Vec<StoredMemory>,
}

/// A search answer as the result cache keeps it: its rows with the read counts the vector
/// store had, and the reads each memory had had synced to the vector store by then
/// ([`ReadCounts::synced`]). A hit adds the reads synced since, so a read sync leaves cached
/// answers exact and need not retire them. A body without `synced` (written by an older
/// memgate) does not parse, and is searched again.
#[derive(Deserialize, serde::Serialize)]
struct CachedSearch {
    memories: Vec<StoredMemory>,
    synced: std::collections::HashMap<Uuid, u64>,
    /// The memories the search found, whose reads an answer records (as the legacy service
    /// counts them: not the associations appended to them).
    found: Vec<Uuid>,
}

/// [`CachedSearch`] up to the value of `synced`, which the cache store appends in the step
/// that reads the counts it is made of ([`SearchFill`]).
fn cached_search_head(memories: &[StoredMemory], found: &[Uuid]) -> serde_json::Result<Bytes> {
    #[derive(serde::Serialize)]
    struct Head<'a> {
        memories: &'a [StoredMemory],
        found: &'a [Uuid],
    }
    let mut head = serde_json::to_vec(&Head { memories, found })?;
    // `{…}`: the object stays open for its last member.
    head.pop();
    head.extend_from_slice(b",\"synced\":");
    Ok(Bytes::from(head))
}

/// Where a fresh search answer goes in the result cache: its key, and the scope's read syncs
/// before the search.
struct ResultSlot {
    key: String,
    read_syncs: u64,
}

/// The id a row names, if it is one.
fn row_id(memory: &StoredMemory) -> Option<Uuid> {
    memory
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// How often an update is made again because another write to the memory came first.
const MAX_WRITE_CONFLICTS: usize = 32;

/// The error code of a `503` whose dependency failed before doing anything.
pub const DEPENDENCY_UNAVAILABLE: &str = "dependency_unavailable";

/// A `503` for a dependency that failed, with `Retry-After` when its breaker is open.
pub(crate) fn unavailable<E: std::fmt::Display>(what: &str, error: CallError<E>) -> ApiError {
    match &error {
        CallError::Open(_) => tracing::debug!(%error, "{what} skipped"),
        _ => tracing::warn!(%error, "{what} failed"),
    }
    ApiError::unavailable(
        DEPENDENCY_UNAVAILABLE,
        format!("{what} is unavailable: {error}"),
    )
    .retry_after(error.retry_after())
}

/// A `503` for a write Redis refused because it is full (`maxmemory`, and only pending writes
/// and other keys it may not evict left): nothing was stored.
fn cache_full(error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "Redis is full; a write was refused");
    ApiError::unavailable(
        "cache_full",
        "Redis is full (maxmemory reached with nothing it may evict): the write was not stored. \
         Retry later; pending writes free room as workers apply them, or give Redis more memory",
    )
    .retry_after(Some(std::time::Duration::from_secs(1)))
}

/// A `503` for a write whose outcome is unknown: it may or may not have been stored.
fn unconfirmed(error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "write queue did not confirm a write");
    ApiError::unavailable(
        "write_unconfirmed",
        format!(
            "the write queue did not confirm the write ({error}); it may or may not be stored: \
             retry with the same Idempotency-Key"
        ),
    )
}

/// A `500` for what cannot fail in practice (serializing our own JSON).
fn internal(error: serde_json::Error) -> ApiError {
    tracing::error!(%error, "could not serialize an answer");
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        error.to_string(),
    )
}

impl FastPath {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cache: Arc<dyn CacheStore>,
        vectors: Arc<dyn VectorStore>,
        embeddings: Arc<EmbeddingCache>,
        queue: Arc<dyn WriteQueue>,
        layout: Arc<dyn Layout>,
        keys: KeySpace,
        access: AccessRecorder,
        guards: Guards,
        metrics: Metrics,
        settings: FastPathSettings,
    ) -> Self {
        Self {
            l1_epoch: std::sync::atomic::AtomicU64::new(0),
            forgetting: Arc::default(),
            memories_l1: Cache::builder()
                .max_capacity(settings.l1_entries)
                .time_to_live(settings.l1_ttl)
                .build(),
            cache,
            vectors,
            embeddings,
            queue,
            layout,
            keys,
            access,
            guards,
            metrics,
            settings,
        }
    }

    fn cache_name(&self) -> &'static str {
        self.cache.backend_name()
    }

    fn vectors_name(&self) -> &'static str {
        self.vectors.backend_name()
    }

    pub fn guards(&self) -> &Guards {
        &self.guards
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

    /// A cache read that says whether the cache answered.
    async fn cache_read(&self, key: &str, op: &str) -> Result<Option<Bytes>, ()> {
        match self.guards.cache.call(op, self.cache.get(key)).await {
            Ok(value) => Ok(value),
            Err(CallError::Open(_)) => Err(()),
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed");
                Err(())
            }
        }
    }

    /// A cache read whose failure is logged and treated as a miss.
    async fn cache_get(&self, key: &str, op: &str) -> Option<Bytes> {
        self.cache_read(key, op).await.ok().flatten()
    }

    /// Stores a record read from the vector store in the background, unless a read sync ended
    /// since its counts were read ([`CacheStore::fill_record`]).
    fn fill_record_later(&self, key: String, record: Bytes, id: Uuid, syncs: u64) {
        let cache = self.cache.clone();
        let guard = self.guards.cache.clone();
        let access_key = self.keys.access(id);
        let ttl = self.settings.memory_ttl;
        tokio::spawn(async move {
            let fill = cache.fill_record(&key, record, ttl, &access_key, syncs);
            match guard.call("set", fill).await {
                Ok(()) | Err(CallError::Open(_)) => {}
                Err(error) => tracing::warn!(%error, key, "cache write failed"),
            }
        });
    }

    /// Puts a record read at `epoch` into L1, unless this process wrote since.
    async fn fill_l1(&self, key: String, record: L1Record, epoch: u64) {
        use std::sync::atomic::Ordering;
        if self.l1_epoch.load(Ordering::SeqCst) == epoch {
            self.memories_l1.insert(key.clone(), record).await;
            // A write that came in during the insert must not leave it behind.
            if self.l1_epoch.load(Ordering::SeqCst) != epoch {
                self.memories_l1.invalidate(&key).await;
            }
        }
    }

    async fn forget_l1(&self, key: &str) {
        self.l1_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.memories_l1.invalidate(key).await;
    }

    /// The read counts of the memories `ids`, for answers; `None` when the cache cannot say
    /// (the answer then shows the counts its body has).
    async fn read_counts(&self, ids: &[Uuid]) -> Option<Vec<ReadCounts>> {
        if ids.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.access(*id)).collect();
        match self
            .guards
            .cache
            .call("read_counts", self.cache.read_counts(&keys))
            .await
        {
            Ok(counts) => Some(counts),
            Err(CallError::Open(_)) => None,
            Err(error) => {
                tracing::debug!(%error, "read counts unreadable; answering with the stored ones");
                None
            }
        }
    }

    /// A memory's body as an answer shows it: every read so far counted (see
    /// [`crate::access`]). Computed before this read is recorded: like the legacy service, an
    /// answer shows the counts from before its own read.
    fn counted_body(&self, scope: &Scope, id: Uuid, body: Bytes, counts: ReadCounts) -> Bytes {
        let extra = self.access.extra_reads(scope, id, counts);
        self.with_extra_reads(body, extra)
    }

    /// An L1 record as an answer shows it: the counts read with it, and this process's reads
    /// since; `None` when this process no longer knows its reads since (read it again).
    fn counted_l1(&self, scope: &Scope, id: Uuid, record: L1Record) -> Option<Bytes> {
        let (since, last) = self.access.reads_since(scope, id, record.local)?;
        let count = record.counts.unsynced + since;
        let last = record.counts.last.map_or(last, |cached| cached.max(last));
        let extra = (count > 0).then_some((count, last));
        Some(self.with_extra_reads(record.body, extra))
    }

    /// `body` with `extra` reads added to the counts it shows.
    fn with_extra_reads(&self, body: Bytes, extra: Option<(u64, DateTime<Utc>)>) -> Bytes {
        let Some(extra) = extra else {
            return body;
        };
        match serde_json::from_slice::<StoredMemory>(&body) {
            Ok(memory) => serde_json::to_vec(&counted(self.layout.as_ref(), memory, Some(extra)))
                .map(Bytes::from)
                .unwrap_or(body),
            Err(_) => body,
        }
    }

    /// A search answer's body, its rows with every read of their memories counted (one cache
    /// round trip for all of them): the reads the cache has not synced, the reads synced
    /// since the rows' counts were read (`synced_at_fill`, for an answer from the result
    /// cache), and this process's own not yet flushed. Shown as stored when the cache cannot
    /// say. A row without an id (not one memgate or the legacy service wrote) is shown as
    /// stored.
    async fn counted_rows(
        &self,
        scope: &Scope,
        rows: Vec<StoredMemory>,
        synced_at_fill: Option<&std::collections::HashMap<Uuid, u64>>,
    ) -> Result<Bytes, ApiError> {
        let row_ids: Vec<Option<Uuid>> = rows.iter().map(row_id).collect();
        let ids: Vec<Uuid> = row_ids.iter().flatten().copied().collect();
        let counts = self.read_counts(&ids).await;
        let memories = match &counts {
            None => rows,
            Some(counts) => {
                let mut counts = ids.iter().zip(counts);
                rows.into_iter()
                    .zip(&row_ids)
                    .map(|(memory, id)| match (id, counts.next()) {
                        (Some(id), Some((_, counts))) => {
                            let since_fill = synced_at_fill
                                .and_then(|base| base.get(id))
                                .map_or(0, |base| counts.synced.saturating_sub(*base));
                            let counts = ReadCounts {
                                unsynced: counts.unsynced + since_fill,
                                ..*counts
                            };
                            let extra = self.access.extra_reads(scope, *id, counts);
                            counted(self.layout.as_ref(), memory, extra)
                        }
                        _ => memory,
                    })
                    .collect()
            }
        };
        let body = serde_json::to_vec(&SearchBody { memories }).map_err(internal)?;
        Ok(Bytes::from(body))
    }

    /// Keeps a fresh search answer in the result cache, in the background: the cache store
    /// reads its memories' `synced` counts and stores it in one step, unless a read sync of
    /// the scope ended since the search began or one of them is being synced (see
    /// [`CacheStore::fill_search`]). Started before the answer's own counts are
    /// read, so it reaches the cache store ahead of the client's next request.
    fn fill_search_later(
        &self,
        scope: &Scope,
        slot: ResultSlot,
        rows: &[StoredMemory],
        found: &[Uuid],
    ) {
        let Ok(body_head) = cached_search_head(rows, found) else {
            return;
        };
        let ids: Vec<Uuid> = rows.iter().filter_map(row_id).collect();
        let access_keys: Vec<String> = ids.iter().map(|id| self.keys.access(*id)).collect();
        let read_syncs_key = self.keys.scope_read_syncs(scope);
        let (cache, guard, ttl) = (
            self.cache.clone(),
            self.guards.cache.clone(),
            self.settings.search_ttl,
        );
        tokio::spawn(async move {
            let fill = SearchFill {
                key: &slot.key,
                body_head,
                ids: &ids,
                access_keys: &access_keys,
                ttl,
                read_syncs_key: &read_syncs_key,
                read_syncs: slot.read_syncs,
            };
            match guard.call("set", cache.fill_search(fill)).await {
                Ok(_) | Err(CallError::Open(_)) => {}
                Err(error) => tracing::warn!(%error, key = slot.key, "cache write failed"),
            }
        });
    }

    /// `GET /memories/{id}`.
    pub async fn get(&self, scope: &Scope, id: Uuid) -> Result<FastAnswer, ApiError> {
        let key = self.keys.memory(scope, id);
        self.forgetting.settled(&key).await;
        let epoch = self.l1_epoch.load(std::sync::atomic::Ordering::SeqCst);
        if let Some(record) = self.memories_l1.get(&key).await {
            if let Some(body) = self.counted_l1(scope, id, record) {
                self.access.record(scope, [&id]);
                return Ok(FastAnswer::hit(body));
            }
            self.memories_l1.invalidate(&key).await;
        }
        let access_key = self.keys.access(id);
        let flush_mark = self.access.before_count_read();
        let read = match self
            .guards
            .cache
            .call(
                "get_memory",
                self.cache.get_with_read_counts(&key, &access_key),
            )
            .await
        {
            Ok(read) => Ok(read),
            Err(CallError::Open(_)) => Err(()),
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed");
                Err(())
            }
        };
        // Read before the vector store is: a sync in between can make this one answer count
        // its reads twice; nothing keeps it (L1 is filled from the cache store only).
        let counts = read.as_ref().map(|(_, counts)| *counts).unwrap_or_default();
        if let Ok((Some(body), _)) = read {
            if is_tombstone(&body) {
                return Err(ApiError::not_found(format!("memory {id} does not exist")));
            }
            // Provisional records stay out of L1, so `ready` shows as soon as it is stored.
            let local = self.access.after_count_read(scope, id, flush_mark);
            if let (false, Some(local)) = (is_processing(&body), local) {
                let record = L1Record {
                    body: body.clone(),
                    counts,
                    local,
                };
                self.fill_l1(key, record, epoch).await;
            }
            let body = self.counted_body(scope, id, body, counts);
            self.access.record(scope, [&id]);
            return Ok(FastAnswer::hit(body));
        }
        let confirmed = read.is_ok();
        let mut memory = match (self.stored(scope, id).await?, confirmed) {
            (Some(memory), _) => memory,
            (None, true) => return Err(ApiError::not_found(format!("memory {id} does not exist"))),
            // Its create may be acknowledged and not applied yet: only the cache could say.
            (None, false) => {
                return Err(ApiError::unavailable(
                    DEPENDENCY_UNAVAILABLE,
                    format!(
                        "memory {id} is not in the vector store, and the cache that holds \
                         writes not yet applied cannot be read: it may exist"
                    ),
                ))
            }
        };
        if !memory.contains_key("id") {
            // Not written by the legacy service or memgate, which keep it in the payload.
            memory.insert("id".into(), Value::String(id.to_string()));
        }
        memory.insert("status".into(), Value::String("ready".into()));
        let body = Bytes::from(serde_json::to_vec(&memory).map_err(internal)?);
        let answer = self.counted_body(scope, id, body.clone(), counts);
        self.access.record(scope, [&id]);
        if !confirmed {
            return Ok(FastAnswer {
                status: http::StatusCode::OK,
                body: answer,
                cache: CacheStatus::Miss,
                degraded: Some(DegradedLevel::Unconfirmed),
            });
        }
        // Into the cache store, and from there into L1 at the next read, with its counts.
        self.fill_record_later(key, body, id, counts.syncs);
        Ok(FastAnswer {
            status: http::StatusCode::OK,
            body: answer,
            cache: CacheStatus::Miss,
            degraded: None,
        })
    }

    /// The memory in the vector store, if this tenant may see it.
    async fn stored(&self, scope: &Scope, id: Uuid) -> Result<Option<StoredMemory>, ApiError> {
        let memory = self
            .guards
            .vectors
            .call("retrieve", self.vectors.retrieve(id))
            .await
            .map_err(|e| unavailable("the vector store", e))?;
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

    /// The payload conditions of a search by this tenant.
    pub fn filter_for(&self, scope: &Scope, search: &NormalizedSearch) -> MemoryFilter {
        MemoryFilter {
            scope: self
                .settings
                .scope_field
                .clone()
                .zip(scope.value().map(str::to_string)),
            memory_type: search.memory_type,
            min_importance: search.min_importance,
            emotional_range: search.emotional_range,
            date_range: search.date_range,
            chunk_of: None,
        }
    }

    /// `POST /memories/search`.
    pub async fn search(
        &self,
        scope: &Scope,
        search: NormalizedSearch,
    ) -> Result<FastAnswer, ApiError> {
        let params = serde_json::to_vec(&search).map_err(internal)?;
        let results_key = self.keys.search_results_key(scope, &params);
        let lookup = self
            .guards
            .cache
            .call(
                "get_search",
                self.cache.get_at_generation(
                    &self.keys.search_generations(scope),
                    &self.keys.scope_read_syncs(scope),
                    &results_key,
                ),
            )
            .await;
        let result_key = match lookup {
            Ok(found) => {
                let cached = found
                    .value
                    .and_then(|body| serde_json::from_slice::<CachedSearch>(&body).ok());
                if let Some(cached) = cached {
                    let answer = self
                        .counted_rows(scope, cached.memories, Some(&cached.synced))
                        .await?;
                    self.access.record(scope, cached.found.iter());
                    return Ok(FastAnswer::hit(answer));
                }
                Some(ResultSlot {
                    key: results_key.with_generation(found.generation),
                    read_syncs: found.read_syncs,
                })
            }
            Err(error) => {
                // Without the generation a result could be stored under a stale key: skip the
                // result cache for this search.
                if !matches!(error, CallError::Open(_)) {
                    tracing::warn!(%error, "result cache unreadable; searching without it");
                }
                None
            }
        };

        let found = self.find(scope, &search).await?;
        let (found, confirmed) = self.with_pending_writes(scope, found).await;
        let found_ids: Vec<Uuid> = found
            .iter()
            .filter_map(|(memory, _)| row_id(memory))
            .collect();
        let rows = self.shape_results(&search, found).await?;
        if let Some(slot) = result_key.filter(|_| confirmed) {
            self.fill_search_later(scope, slot, &rows, &found_ids);
        }
        // The cached answer holds the stored counts; this one counts every read so far.
        let answer = self.counted_rows(scope, rows, None).await?;
        self.access.record(scope, found_ids.iter());
        Ok(FastAnswer {
            status: http::StatusCode::OK,
            body: answer,
            cache: CacheStatus::Miss,
            degraded: (!confirmed).then_some(DegradedLevel::Unconfirmed),
        })
    }

    /// The memories a search finds, best first, with their scores: a vector search for the
    /// layout's query text, cut at the threshold and the limit; a blank query lists the
    /// memories matching the filters (none without a filter).
    async fn find(
        &self,
        scope: &Scope,
        search: &NormalizedSearch,
    ) -> Result<Vec<(StoredMemory, Option<f32>)>, ApiError> {
        let filter = self.filter_for(scope, search);
        if search.is_blank() {
            if !search.has_filters() {
                return Ok(Vec::new());
            }
            let listed = self
                .guards
                .vectors
                .call(
                    "scroll",
                    self.vectors.scroll(&filter, u64::from(search.limit)),
                )
                .await
                .map_err(|e| unavailable("the vector store", e))?;
            return Ok(listed.into_iter().map(|memory| (memory, None)).collect());
        }
        let text = self.layout.query_text(&search.query);
        let (vector, _) = self
            .embeddings
            .embed(&text)
            .await
            .map_err(|e| unavailable("the embedding provider", e))?;
        let threshold = search.similarity_threshold;
        let query = VectorQuery {
            vector: vector.as_ref().clone(),
            filter,
            limit: self.layout.search_fetch_limit(search.limit),
            score_threshold: Some(threshold),
            ef: self.settings.search_ef,
            exact: false,
        };
        let found = self
            .guards
            .vectors
            .call("search", self.vectors.search(query))
            .await
            .map_err(|e| unavailable("the vector store", e))?;
        Ok(found
            .into_iter()
            .filter(|scored| scored.score >= threshold)
            .take(search.limit as usize)
            .map(|scored| (scored.memory, Some(scored.score)))
            .collect())
    }

    /// What the vector store found, as readers must see it: a memory whose delete is
    /// acknowledged is left out, and one with a record shows its record (a write pending, or
    /// applied since the search ran). A cache that cannot answer leaves the results as found,
    /// unconfirmed (`false`).
    async fn with_pending_writes(
        &self,
        scope: &Scope,
        found: Vec<(StoredMemory, Option<f32>)>,
    ) -> (Vec<(StoredMemory, Option<f32>)>, bool) {
        if found.is_empty() {
            return (found, true);
        }
        let keys: Vec<String> = found
            .iter()
            .map(|(memory, _)| {
                memory
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .map(|id| self.keys.memory(scope, id))
                    .unwrap_or_default()
            })
            .collect();
        let records = match self
            .guards
            .cache
            .call("get_many", self.cache.get_many(&keys))
            .await
        {
            Ok(records) => records,
            Err(error) => {
                if !matches!(error, CallError::Open(_)) {
                    tracing::warn!(%error, "pending writes unreadable; answering from the vector store");
                }
                return (found, false);
            }
        };
        let found = found
            .into_iter()
            .zip(records)
            .filter_map(|((memory, score), record)| match record {
                Some(record) if is_tombstone(&record) => None,
                // The record is never older than what the search found (a write may have been
                // applied since), and it is what a GET answers.
                Some(record) => match serde_json::from_slice::<StoredMemory>(&record) {
                    Ok(current) => Some((self.with_read_counts(current, &memory), score)),
                    Err(_) => Some((memory, score)),
                },
                None => Some((memory, score)),
            })
            .collect();
        (found, true)
    }

    /// A memory's record with the read counts the vector store holds (they are added there,
    /// not to the record).
    fn with_read_counts(&self, mut record: StoredMemory, stored: &StoredMemory) -> StoredMemory {
        for field in self.layout.access_fields() {
            if let Some(value) = stored.get(*field) {
                record.insert((*field).to_string(), value.clone());
            }
        }
        record
    }

    /// The answer's memories: compact rows, or whole memories with the associated ones
    /// appended, or with chunks put back together; `score` on what a vector search found.
    async fn shape_results(
        &self,
        search: &NormalizedSearch,
        found: Vec<(StoredMemory, Option<f32>)>,
    ) -> Result<Vec<StoredMemory>, ApiError> {
        let mut results = found;
        if search.include_associations {
            results = self.with_associations(results).await?;
        } else if search.detail_level == DetailLevel::Compact {
            results = results
                .into_iter()
                .map(|(memory, score)| (self.layout.compact(&memory), score))
                .collect();
        }
        if search.reconstruct_chunks && search.detail_level == DetailLevel::Full {
            results = self.reconstruct_chunks(results).await?;
        }
        let whole = search.include_associations || search.detail_level == DetailLevel::Full;
        Ok(results
            .into_iter()
            .map(|(mut memory, score)| {
                if whole && !memory.contains_key("status") {
                    // In the vector store, so stored: memgate's status of it.
                    memory.insert("status".into(), Value::String("ready".into()));
                }
                if let Some(score) = score {
                    memory.insert("score".into(), Value::from(score));
                }
                memory
            })
            .collect())
    }

    /// The results, then each association not among them (once, in order).
    async fn with_associations(
        &self,
        results: Vec<(StoredMemory, Option<f32>)>,
    ) -> Result<Vec<(StoredMemory, Option<f32>)>, ApiError> {
        let mut seen: std::collections::HashSet<String> = results
            .iter()
            .filter_map(|(memory, _)| memory.get("id").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let mut all = results.clone();
        for (memory, _) in &results {
            for associated in self.layout.associations(memory) {
                if !seen.insert(associated.clone()) {
                    continue;
                }
                let Ok(id) = Uuid::parse_str(&associated) else {
                    continue;
                };
                let found = self
                    .guards
                    .vectors
                    .call("retrieve", self.vectors.retrieve(id))
                    .await
                    .map_err(|e| unavailable("the vector store", e))?;
                if let Some(found) = found {
                    all.push((found, None));
                }
            }
        }
        Ok(all)
    }

    /// Parents of chunks come back whole (their chunks' content joined); chunks themselves
    /// are left out.
    async fn reconstruct_chunks(
        &self,
        results: Vec<(StoredMemory, Option<f32>)>,
    ) -> Result<Vec<(StoredMemory, Option<f32>)>, ApiError> {
        let mut whole = Vec::with_capacity(results.len());
        let mut parents_done = std::collections::HashSet::new();
        for (memory, score) in results {
            match self.layout.chunk_role(&memory) {
                ChunkRole::Chunk => {}
                ChunkRole::Whole => whole.push((memory, score)),
                ChunkRole::Parent => {
                    let id = memory
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if !parents_done.insert(id.clone()) {
                        continue;
                    }
                    let filter = MemoryFilter {
                        chunk_of: Some(id),
                        ..Default::default()
                    };
                    let chunks = self
                        .guards
                        .vectors
                        .call("scroll", self.vectors.scroll(&filter, 100))
                        .await
                        .map_err(|e| unavailable("the vector store", e))?;
                    if chunks.is_empty() {
                        whole.push((memory, score));
                    } else {
                        whole.push((self.layout.reconstruct(&memory, chunks), score));
                    }
                }
            }
        }
        Ok(whole)
    }

    /// Stores the record and the queue entry atomically; `202` once both are stored.
    async fn submit(&self, submission: Submission) -> Result<Submitted, ApiError> {
        let started = std::time::Instant::now();
        // A full Redis answered: it refuses writes but is up, so its breaker stays closed and
        // reads go on through it.
        let answered = |result: &Result<Submitted, QueueError>| match result {
            Ok(_) => true,
            Err(error) => error.is_out_of_memory(),
        };
        let submitted = self
            .guards
            .cache
            .call_judged("submit", self.queue.submit(submission), answered)
            .await
            .map_err(|error| match error {
                CallError::Failed(error) if error.is_out_of_memory() => cache_full(error),
                // The script may have run and only its answer been lost: neither stored nor
                // refused for sure. A retry with the same Idempotency-Key settles it.
                error @ CallError::Timeout { .. } => unconfirmed(error),
                CallError::Failed(error) if error.outcome_unknown() => unconfirmed(error),
                error => unavailable("the write queue", error),
            })?;
        self.metrics
            .write_ack
            .observe(started.elapsed().as_secs_f64());
        Ok(submitted)
    }

    fn accepted(id: Uuid, status: &str) -> FastAnswer {
        let body = serde_json::json!({ "id": id, "status": status }).to_string();
        FastAnswer {
            status: http::StatusCode::ACCEPTED,
            body: Bytes::from(body),
            cache: CacheStatus::Bypass,
            degraded: None,
        }
    }

    /// `POST /memories`: `202 {"id","status":"processing"}` at once; a worker enriches it.
    /// The memory stored at once is what the legacy service would store without its model.
    /// With an `Idempotency-Key`, a retry returns the first answer and stores nothing new.
    pub async fn create(
        &self,
        scope: &Scope,
        request: StoreRequest,
        idempotency_key: Option<&str>,
        client_metadata: Option<&str>,
    ) -> Result<FastAnswer, ApiError> {
        let stored = self
            .store(scope, request, idempotency_key, client_metadata)
            .await?;
        Ok(Self::accepted(stored.id, "processing"))
    }

    /// Stores a new memory and its write job: the memory as the legacy service would store
    /// it without its model, enriched later by a worker. A replay of an `Idempotency-Key`
    /// names the first memory and stores nothing.
    pub async fn store(
        &self,
        scope: &Scope,
        request: StoreRequest,
        idempotency_key: Option<&str>,
        client_metadata: Option<&str>,
    ) -> Result<Stored, ApiError> {
        request.validate()?;
        let id = Uuid::new_v4();
        let needs = self.layout.enrichment_needs(&request);
        let mut memory = self
            .layout
            .new_memory(id, &request, client_metadata, Utc::now());
        if let (Some(field), Some(tenant)) = (&self.settings.scope_field, scope.value()) {
            memory.insert(field.clone(), Value::String(tenant.to_string()));
        }
        let record = Bytes::from(
            serde_json::to_vec(&with_status(memory.clone(), MemoryStatus::Processing))
                .map_err(internal)?,
        );
        let memory_view = memory.clone();
        let submission = Submission {
            op: WriteOp::Create {
                id,
                scope: scope.value().map(str::to_string),
                memory,
                needs_summary: needs.summary,
                needs_keywords: needs.keywords,
            },
            record: RecordWrite {
                key: self.keys.memory(scope, id),
                value: record,
                ttl: self.settings.memory_ttl,
            },
            idempotency: idempotency_key.map(|key| {
                (
                    self.keys.idempotency(scope, key),
                    self.settings.idempotency_ttl,
                )
            }),
            bump_generation: false,
            generation_key: self.keys.scope_search_generation(scope),
            revision_key: self.keys.revision(scope, id),
            expected_revision: None,
        };
        match self.submit(submission).await? {
            Submitted::Queued { .. } | Submitted::Conflict { .. } => Ok(Stored {
                id,
                memory: Some(self.layout.payload(&memory_view)),
            }),
            Submitted::Replayed { id } => Ok(Stored { id, memory: None }),
        }
    }

    /// Forgets what memgate holds of these memories and retires every cached search: another
    /// writer (the legacy service) changed them. Records of memories memgate is still writing
    /// are kept, since they are newer than the vector store.
    pub async fn invalidate(&self, scope: &Scope, ids: &[Uuid]) {
        self.forget_records(scope, ids).await;
        self.retire_searches(self.keys.scope_search_generation(scope))
            .await;
    }

    /// Drops the cached records of `ids` (here and in the shared cache, unless memgate's own
    /// write of one is pending), so their next read is from the vector store; cached searches
    /// stay.
    pub async fn forget_records(&self, scope: &Scope, ids: &[Uuid]) {
        for id in ids {
            let key = self.keys.memory(scope, *id);
            self.forget_l1(&key).await;
            let revision = self.keys.revision(scope, *id);
            forget_settled(&self.guards.cache, self.queue.as_ref(), &key, &revision).await;
        }
    }

    /// [`Self::forget_records`], with the shared cache's part done in the background: the
    /// caller can answer at once, and readers in this process wait for the records to be
    /// gone before they read one ([`Forgetting`]).
    pub async fn forget_records_later(&self, scope: &Scope, ids: &[Uuid]) {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            let key = self.keys.memory(scope, *id);
            let fence = self.forgetting.begin(&key);
            self.forget_l1(&key).await;
            records.push((key, self.keys.revision(scope, *id), fence));
        }
        let guard = self.guards.cache.clone();
        let queue = self.queue.clone();
        tokio::spawn(async move {
            for (key, revision, _fence) in records {
                forget_settled(&guard, queue.as_ref(), &key, &revision).await;
            }
        });
    }

    /// The memories `id` is linked with, as the vector store has it now (none when it cannot
    /// say): the neighbours a memory stored by the legacy service linked itself into.
    pub async fn neighbours(&self, id: Uuid) -> Vec<Uuid> {
        match self
            .guards
            .vectors
            .call("retrieve", self.vectors.retrieve(id))
            .await
        {
            Ok(Some(memory)) => self
                .layout
                .associations(&memory)
                .iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect(),
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, %id, "could not read a new memory's links");
                Vec::new()
            }
        }
    }

    /// Forgets every memory held in this process and retires every cached search of every
    /// tenant (a write elsewhere changed memories memgate cannot name). Records in a shared
    /// cache expire within `cache.memoryTtl`.
    pub async fn invalidate_all(&self) {
        self.l1_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.memories_l1.invalidate_all();
        self.retire_searches(self.keys.search_generation()).await;
    }

    /// Bumps a search generation: `Keys::scope_search_generation` for one tenant's searches,
    /// `Keys::search_generation` for everyone's.
    async fn retire_searches(&self, key: String) {
        match self
            .guards
            .cache
            .call("retire_searches", self.cache.increment(&key))
            .await
        {
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not retire cached searches"),
        }
    }

    /// Waits until memgate's own pending write of this memory is in the vector store, at
    /// most `bound`: whether it is (or was never pending).
    pub async fn wait_stored(&self, scope: &Scope, id: Uuid, bound: Duration) -> bool {
        let key = self.keys.memory(scope, id);
        let deadline = tokio::time::Instant::now() + bound;
        let mut pause = Duration::from_millis(5);
        loop {
            let pending = self
                .cache_get(&key, "get_memory")
                .await
                .is_some_and(|record| is_processing(&record));
            if !pending {
                return true;
            }
            if tokio::time::Instant::now() + pause > deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// `PATCH /memories/{id}`: readers see the change at once (`status: processing`); a worker
    /// stores it (and re-embeds when the embedded text changed).
    pub async fn update(
        &self,
        scope: &Scope,
        id: Uuid,
        request: UpdateRequest,
    ) -> Result<FastAnswer, ApiError> {
        self.change(scope, id, request).await?;
        Ok(Self::accepted(id, "processing"))
    }

    /// Applies an update for readers at once and queues it for the vector store; the memory
    /// as it now reads (without memgate's bookkeeping). The update is made on the memory as
    /// last acknowledged: if another write comes in between, it is made again on that one, so
    /// concurrent updates all apply.
    pub async fn change(
        &self,
        scope: &Scope,
        id: Uuid,
        request: UpdateRequest,
    ) -> Result<StoredMemory, ApiError> {
        request.validate()?;
        let key = self.keys.memory(scope, id);
        let mut pauses = backon::BackoffBuilder::build(
            backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(1))
                .with_max_delay(Duration::from_millis(25))
                .with_jitter()
                .with_max_times(MAX_WRITE_CONFLICTS),
        );
        loop {
            let (mut memory, revision) = self.current_versioned(scope, id).await?;
            self.layout.apply_update(&mut memory, &request);
            let updated = self.layout.payload(&memory);
            let record = Bytes::from(
                serde_json::to_vec(&with_status(memory, MemoryStatus::Processing))
                    .map_err(internal)?,
            );
            let submission = Submission {
                op: WriteOp::Update {
                    id,
                    scope: scope.value().map(str::to_string),
                    update: request.clone(),
                },
                record: RecordWrite {
                    key: key.clone(),
                    value: record,
                    ttl: self.settings.memory_ttl,
                },
                idempotency: None,
                // Cached searches must not show the memory as it was before.
                bump_generation: true,
                generation_key: self.keys.scope_search_generation(scope),
                revision_key: self.keys.revision(scope, id),
                expected_revision: Some(revision),
            };
            match self.submit(submission).await? {
                Submitted::Conflict { .. } => {
                    self.metrics.write_conflicts.inc();
                    // Jittered, so writers that collided do not collide again.
                    match pauses.next() {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => break,
                    }
                }
                Submitted::Queued { .. } | Submitted::Replayed { .. } => {
                    self.forget_l1(&key).await;
                    return Ok(updated);
                }
            }
        }
        Err(ApiError::new(
            http::StatusCode::CONFLICT,
            "write_conflict",
            format!(
                "memory {id} kept changing while this update was made ({MAX_WRITE_CONFLICTS} tries); retry"
            ),
        ))
    }

    /// The memory as last acknowledged, and its revision; 404 when this tenant has no such
    /// memory. A cache that cannot answer is a 503: an update made on a stale copy could undo
    /// a newer write.
    async fn current_versioned(
        &self,
        scope: &Scope,
        id: Uuid,
    ) -> Result<(StoredMemory, u64), ApiError> {
        let key = self.keys.memory(scope, id);
        self.forgetting.settled(&key).await;
        let revision_key = self.keys.revision(scope, id);
        let (record, revision) = self
            .guards
            .cache
            .call("get_memory", self.queue.read_versioned(&key, &revision_key))
            .await
            .map_err(|e| unavailable("the write queue", e))?;
        if let Some(body) = record {
            if is_tombstone(&body) {
                return Err(ApiError::not_found(format!("memory {id} does not exist")));
            }
            if let Ok(memory) = serde_json::from_slice::<StoredMemory>(&body) {
                return Ok((memory, revision));
            }
        }
        let memory = self
            .stored(scope, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("memory {id} does not exist")))?;
        Ok((memory, revision))
    }

    /// `DELETE /memories/{id}`: gone from reads at once (a tombstone record, and cached
    /// searches are retired); a worker removes the point.
    pub async fn delete(&self, scope: &Scope, id: Uuid) -> Result<FastAnswer, ApiError> {
        self.current_versioned(scope, id).await?;
        let key = self.keys.memory(scope, id);
        let submission = Submission {
            op: WriteOp::Delete {
                id,
                scope: scope.value().map(str::to_string),
            },
            record: RecordWrite {
                key: key.clone(),
                value: tombstone(id),
                ttl: self.settings.memory_ttl,
            },
            idempotency: None,
            bump_generation: true,
            generation_key: self.keys.scope_search_generation(scope),
            revision_key: self.keys.revision(scope, id),
            expected_revision: None,
        };
        self.submit(submission).await?;
        self.forget_l1(&key).await;
        Ok(Self::accepted(id, "deleting"))
    }
}

#[async_trait::async_trait]
impl crate::admin::Readiness for FastPath {
    /// Ready when the fast path's dependencies answer.
    async fn checks(&self) -> Vec<(&'static str, Result<(), String>)> {
        let cache = self.cache.ping().await.map_err(|e| e.to_string());
        let vectors = self.vectors.health().await.map_err(|e| e.to_string());
        let workers = self.writes_consumed().await;
        vec![
            (self.cache_name(), cache),
            (self.vectors_name(), vectors),
            ("workers", workers),
        ]
    }
}

/// A worker silent this long is taken for gone.
pub const WORKER_SILENCE: Duration = Duration::from_secs(30);

impl FastPath {
    /// Fails when acknowledged writes wait and no worker has said it is alive for
    /// [`WORKER_SILENCE`]: nothing would ever apply them. Exports the consumers seen.
    async fn writes_consumed(&self) -> Result<(), String> {
        let consumers = self
            .queue
            .consumers(WORKER_SILENCE)
            .await
            .map_err(|e| e.to_string())?;
        self.metrics
            .queue_consumers
            .with_label_values(&[self.queue.stream()])
            .set(i64::try_from(consumers).unwrap_or(i64::MAX));
        if consumers > 0 {
            return Ok(());
        }
        let waiting = self.queue.stats().await.map_err(|e| e.to_string())?.length;
        if waiting == 0 {
            return Ok(());
        }
        Err(format!(
            "{waiting} writes are waiting and no worker has consumed the write queue for {WORKER_SILENCE:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head the fast path writes and the `synced` object the cache store appends make one
    /// [`CachedSearch`].
    #[test]
    fn a_cached_search_is_its_head_and_the_synced_counts() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let rows: Vec<StoredMemory> = [a, b]
            .iter()
            .map(|id| {
                let row = serde_json::json!({"id": id.to_string(), "accessCount": 2});
                row.as_object().cloned().unwrap_or_default()
            })
            .collect();
        let head = cached_search_head(&rows, &[a]).expect("head");
        let fill = SearchFill {
            key: "k",
            body_head: head,
            ids: &[a, b],
            access_keys: &[],
            ttl: Duration::from_secs(1),
            read_syncs_key: "r",
            read_syncs: 0,
        };
        let cached: CachedSearch =
            serde_json::from_slice(&fill.body([7, 0])).expect("a cached search");
        assert_eq!(cached.memories, rows);
        assert_eq!(cached.found, vec![a]);
        assert_eq!(cached.synced, [(a, 7), (b, 0)].into_iter().collect());
        let none = SearchFill {
            ids: &[],
            access_keys: &[],
            body_head: cached_search_head(&[], &[]).expect("head"),
            ..fill
        };
        let empty: CachedSearch = serde_json::from_slice(&none.body([])).expect("empty");
        assert!(empty.memories.is_empty() && empty.synced.is_empty());
    }
}
