//! The cache concern: bytes under keys with a TTL, counters, and access statistics.
//!
//! Two implementations, chosen by `cache.backend`: [`RedisCache`] (shared by every proxy and
//! worker of a store) and [`InProcessCache`] (for `--embedded` and tests; not shared, not
//! durable). The request path only sees [`CacheStore`].

mod in_process;
mod redis;

pub use self::in_process::InProcessCache;
pub use self::redis::RedisCache;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::{BackendError, Unanswered};
use crate::keys::GenerationalKey;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("cache value under {key} is not {expected}")]
    Corrupt { key: String, expected: &'static str },
    #[error(transparent)]
    Unanswered(#[from] Unanswered),
}

impl BackendError for CacheError {
    fn unanswered(&self) -> Option<&Unanswered> {
        match self {
            Self::Unanswered(unanswered) => Some(unanswered),
            _ => None,
        }
    }
}

/// How long a memory's read counts are kept after its last read (they reach the vector store
/// within `worker.accessSyncInterval`; this only bounds Redis).
pub const ACCESS_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most memories a tenant's `popular` set keeps (the most read).
pub const POPULAR_CAP: usize = 10_000;

/// Reads of one memory since the last flush.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushedReads {
    pub id: Uuid,
    /// `access:{id}`
    pub access_key: String,
    /// The tenant's `popular` sorted set.
    pub popular_key: String,
    pub count: u64,
    pub last: DateTime<Utc>,
    /// The tenant the memory belongs to (`None`: unscoped), kept in `access:{id}` so that the
    /// worker that adds the reads to the payload can retire that tenant's cached answers.
    pub tenant: Option<String>,
}

/// What the cache knows of one memory's reads beyond its payload: what an answer adds to the
/// payload's `accessCount` so that it counts every read so far, exactly, while the payload is
/// updated only every `worker.accessSyncInterval`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Reads not yet added to the payload.
    pub unsynced: u64,
    /// How many times reads were added to the payload: a body read under another value
    /// carries the counts from before (see the core's L1, `core/l1.rs`).
    pub syncs: u64,
    /// Every read ever added to the payload: a cached search answer keeps the value it was
    /// filled under, and adds what was synced since to the counts its rows hold.
    pub synced: u64,
    /// Reads being added to the payload now (still in `unsynced`): whether the payload has
    /// them cannot be said, so no answer is cached with this memory.
    pub syncing: u64,
    /// The last read recorded.
    pub last: Option<DateTime<Utc>>,
}

/// A search answer for the result cache ([`CacheStore::fill_search`]).
#[derive(Debug, Clone)]
pub struct SearchFill<'a> {
    pub key: &'a str,
    /// The body up to the value of its last member, `synced`, which the store appends: a
    /// JSON object of each memory's id (`ids`) and its `synced` count (read from its access
    /// hash, `access_keys`, in the same order), then the closing `}`.
    pub body_head: Bytes,
    pub ids: &'a [Uuid],
    pub access_keys: &'a [String],
    pub ttl: Duration,
    /// The scope's read syncs (`Keys::scope_read_syncs`), and their count before the search.
    pub read_syncs_key: &'a str,
    pub read_syncs: u64,
}

impl SearchFill<'_> {
    /// The whole body, with `synced` of each memory (in the order of `ids`).
    pub fn body(&self, synced: impl IntoIterator<Item = u64>) -> Bytes {
        let members: Vec<String> = self
            .ids
            .iter()
            .zip(synced)
            .map(|(id, synced)| format!("\"{id}\":{synced}"))
            .collect();
        let mut body = self.body_head.to_vec();
        body.extend_from_slice(format!("{{{}}}}}", members.join(",")).as_bytes());
        Bytes::from(body)
    }
}

/// What [`CacheStore::get_at_generation`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationalValue {
    pub generation: u64,
    /// The scope's read syncs so far, for [`CacheStore::fill_search`].
    pub read_syncs: u64,
    pub value: Option<Bytes>,
}

/// Reads to add to a memory's payload ([`CacheStore::unsynced_reads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsyncedReads {
    pub count: u64,
    pub last: DateTime<Utc>,
    pub tenant: Option<String>,
    /// A sync begun and not committed (its worker stopped, or its commit failed): whether
    /// its payload write landed shows in the payload.
    pub unfinished: Option<UnfinishedSync>,
}

/// What [`CacheStore::begin_sync`] recorded: the reads being added, and the payload fields
/// the write sets (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedSync {
    pub count: u64,
    pub fields: Bytes,
}

/// The cache a request path reads and fills.
///
/// **A full backend** (Redis at `maxmemory` with nothing it may evict, answering `OOM`): every
/// value [`set`](CacheStore::set) and [`set_if_absent`](CacheStore::set_if_absent) store is a
/// copy of something kept elsewhere (an embedding, a search answer, a record from the vector
/// store), so a fill a full backend has no room for is skipped and reported as `Ok`: the
/// answer is served without it, and a backend that answered is not counted as failing. Every
/// other write (counters, access statistics) returns the error, and the write queue, which
/// holds what is kept nowhere else, refuses the write so the client gets `503 cache_full`
/// (`QueueError::is_out_of_memory`).
#[async_trait]
pub trait CacheStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Stores a copy; a full backend skips it (see the trait's documentation).
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError>;
    /// Stores `value` only when `key` holds nothing: a fill from a slower source never
    /// overwrites what a write stored meanwhile (a tombstone, a newer record).
    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Duration)
        -> Result<(), CacheError>;
    /// Stores a record read from the vector store, as [`CacheStore::set_if_absent`], and only
    /// if no read sync of the memory ended since its counts were read (`syncs` of
    /// `access_key`): a record read before a sync and stored after it would show the counts
    /// from before the sync beside the `unsynced` from after, for as long as it lives.
    async fn fill_record(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        access_key: &str,
        syncs: u64,
    ) -> Result<(), CacheError>;
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
    /// The integer under `key`; 0 when absent.
    async fn counter(&self, key: &str) -> Result<u64, CacheError>;
    /// The sum of the counters under `counter_keys` (each 0 when absent), the generation, the
    /// counter under `read_syncs_key`, and the value under `key` at that generation, read
    /// together (one round trip on Redis). The second and third counters' expiry is renewed
    /// (see `Keys::scope_search_generation`).
    async fn get_at_generation(
        &self,
        counter_keys: &[String; 2],
        read_syncs_key: &str,
        key: &GenerationalKey,
    ) -> Result<GenerationalValue, CacheError>;
    /// Keeps a search answer in the result cache with its memories' `synced` counts, read in
    /// the same step (one script on Redis): only if no read sync of the scope ended since
    /// `fill.read_syncs` was read and none of the memories is being synced, so that the
    /// answer's stored counts and the `synced` counts kept with it are from one moment.
    /// Whether it was stored; a full backend skips it (`false`).
    async fn fill_search(&self, fill: SearchFill<'_>) -> Result<bool, CacheError>;
    /// Adds one to the integer under `key` and returns the new value.
    async fn increment(&self, key: &str) -> Result<u64, CacheError>;
    /// Adds a batch of reads to `access:{id}` (`count`, `unsynced`, `last`) and the `popular`
    /// sets, and marks the ids in the set `dirty_key` for the workers to copy into the vector store.
    async fn record_reads(
        &self,
        updates: &[FlushedReads],
        dirty_key: &str,
    ) -> Result<(), CacheError>;
    /// Removes and returns up to `max` ids from the set `dirty_key`.
    async fn take_dirty(&self, dirty_key: &str, max: usize) -> Result<Vec<Uuid>, CacheError>;
    /// Puts ids back into the set `dirty_key` (their copy failed).
    async fn mark_dirty(&self, dirty_key: &str, ids: &[Uuid]) -> Result<(), CacheError>;
    /// The reads of one memory not yet added to the vector store; `None` when there are
    /// none. Read under the memory's lease, then [`CacheStore::begin_sync`] before the
    /// payload write and [`CacheStore::commit_synced`] after it.
    async fn unsynced_reads(&self, access_key: &str) -> Result<Option<UnsyncedReads>, CacheError>;
    /// Records that `count` reads are being added to the payload (`syncing`) by a write of
    /// `fields` (JSON), so that answers are not cached with them meanwhile and a sync that
    /// does not reach its commit can be told apart from one that never wrote. Nothing
    /// happens to a hash the memory's delete dropped.
    async fn begin_sync(
        &self,
        access_key: &str,
        count: u64,
        fields: Bytes,
    ) -> Result<(), CacheError>;
    /// `count` reads were added to the payload: they are no longer unsynced nor syncing,
    /// `synced` grows by them, `syncs` moves on, and so does the scope's `read_syncs_key`.
    /// Nothing happens to a hash the memory's delete dropped meanwhile.
    async fn commit_synced(
        &self,
        access_key: &str,
        count: u64,
        read_syncs_key: &str,
    ) -> Result<(), CacheError>;
    /// [`ReadCounts`] of each of `access_keys`, in order (one round trip on Redis).
    async fn read_counts(&self, access_keys: &[String]) -> Result<Vec<ReadCounts>, CacheError>;
    /// The value under `key` and the [`ReadCounts`] under `access_key`, in one round trip.
    async fn get_with_read_counts(
        &self,
        key: &str,
        access_key: &str,
    ) -> Result<(Option<Bytes>, ReadCounts), CacheError>;
    /// Exact access statistics of one memory: `(count, last)`.
    async fn access_stats(&self, key: &str) -> Result<Option<(u64, DateTime<Utc>)>, CacheError>;
    /// The values under `keys`, in order (MGET).
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError>;
    /// Adds `id` to the set `key`, which then expires `ttl` later: the writes of one client
    /// not yet searchable (`Keys::own_writes`).
    async fn note_write(&self, key: &str, id: Uuid, ttl: Duration) -> Result<(), CacheError>;
    /// Removes and returns the set `key` (at most `max` of it).
    async fn take_writes(&self, key: &str, max: usize) -> Result<Vec<Uuid>, CacheError>;
    /// Up to `limit` members of the `popular` set `key`, most read first.
    async fn most_read(&self, key: &str, limit: usize) -> Result<Vec<String>, CacheError>;
    /// Answers when the backend is reachable.
    async fn ping(&self) -> Result<(), CacheError>;
    /// `"redis"` or `"memory"`, for logs and metrics.
    fn backend_name(&self) -> &'static str;
}
