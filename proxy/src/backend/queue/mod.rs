//! The write queue: how a write is acknowledged at once and applied later, in order.
//!
//! [`WriteQueue::submit`] stores the record readers will see (provisional, or a tombstone for a
//! delete), counts the memory's revision up and appends the operation with that revision to
//! the `writes` stream in one atomic step, so a write is acknowledged only once all are stored.
//! A read-modify-write (a PATCH) names the revision it read and is refused if another write
//! came first ([`Submitted::Conflict`]).
//!
//! Workers take jobs with [`WriteQueue::take`] (new ones) and [`WriteQueue::claim_stale`] (ones
//! a dead worker left pending, or its own that it lost track of). One memory's jobs are applied one at a time (a lease,
//! [`WriteQueue::lock`]) and in revision order: a job applies only once the memory's applied
//! revision is the one before its own ([`WriteQueue::revision`]). Each job is closed with
//! [`WriteQueue::finish`], which records the applied revision, stores the final record only if
//! no newer write is pending, bumps the search generation and acknowledges the entry in one
//! atomic step — or moves it to `writes:dead`. Workers say they are alive and renew their
//! leases with [`WriteQueue::keep_alive`]: one presence per worker, not a touch per entry, so
//! the heartbeat costs Redis the same however many jobs a worker holds, and a worker's entries
//! are claimed only once the worker has gone silent.
//!
//! Two implementations: [`RedisQueue`] (streams, consumer group `workers`) and
//! [`InProcessQueue`] (for `--embedded`; durable with a [`Journal`] in its `dataDir`).

mod in_process;
mod journal;
mod redis;

pub use self::in_process::InProcessQueue;
pub use self::journal::Journal;
pub use self::redis::{RedisQueue, Replication};

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backend::cache::CacheError;
use crate::backend::{BackendError, Unanswered};
use crate::memory::{StoredMemory, UpdateRequest};

/// A worker that has not said it is alive for this long is taken for gone: its claimed
/// entries may be taken over, and `/readyz` fails when writes wait with no worker left.
pub const WORKER_SILENCE: Duration = Duration::from_secs(30);

// In the config crate: the operator names them too (KEDA's Redis Streams scaler).
pub use crate::config::{ASSOC_STREAM, CONSUMER_GROUP, WRITES_STREAM};
/// Dead letters kept per stream; older ones are dropped and counted.
pub const DEAD_LETTER_CAP: u64 = 10_000;

/// One write for the worker to apply to the vector store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum WriteOp {
    /// `memory` is the new memory as the layout made it (without memgate's `status`);
    /// enrichment fills what the caller left out.
    #[serde(rename_all = "camelCase")]
    Create {
        id: Uuid,
        scope: Option<String>,
        memory: StoredMemory,
        needs_summary: bool,
        needs_keywords: bool,
    },
    /// The update as the client sent it; applied to the stored memory by the layout.
    #[serde(rename_all = "camelCase")]
    Update {
        id: Uuid,
        scope: Option<String>,
        update: UpdateRequest,
    },
    #[serde(rename_all = "camelCase")]
    Delete { id: Uuid, scope: Option<String> },
    /// Association discovery for a stored memory (the `assoc` stream): its nearest neighbours
    /// above the threshold become associations, both ways.
    #[serde(rename_all = "camelCase")]
    Associate { id: Uuid, scope: Option<String> },
}

impl WriteOp {
    pub fn id(&self) -> Uuid {
        match self {
            Self::Create { id, .. }
            | Self::Update { id, .. }
            | Self::Delete { id, .. }
            | Self::Associate { id, .. } => *id,
        }
    }

    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::Create { scope, .. }
            | Self::Update { scope, .. }
            | Self::Delete { scope, .. }
            | Self::Associate { scope, .. } => scope.as_deref(),
        }
    }

    /// The `kind` label of metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Update { .. } => "update",
            Self::Delete { .. } => "delete",
            Self::Associate { .. } => "associate",
        }
    }
}

/// A cache entry written together with a queue operation.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    pub key: String,
    pub value: Bytes,
    pub ttl: Duration,
}

/// A write to acknowledge.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub op: WriteOp,
    /// What readers see until the worker is done.
    pub record: RecordWrite,
    /// `(key, ttl)`: a second submission with the same key returns the first one's id.
    pub idempotency: Option<(String, Duration)>,
    /// Bump the search generation at once (deletes: cached results must not show it).
    pub bump_generation: bool,
    /// The search-generation key.
    pub generation_key: String,
    /// The memory's revision counters.
    pub revision_key: String,
    /// Stored only if the memory is still at this revision (the one the change was made on).
    pub expected_revision: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Stored and queued under this stream entry id, as the memory's `revision`.
    Queued { entry: String, revision: u64 },
    /// The idempotency key was seen before: nothing new was stored.
    Replayed { id: Uuid },
    /// Another write came after the expected revision: nothing was stored.
    Conflict { revision: u64 },
}

/// Where one memory's writes stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revision {
    /// Writes acknowledged so far (the newest write's revision).
    pub acknowledged: u64,
    /// The newest revision applied to the vector store.
    pub applied: u64,
}

impl Revision {
    /// Whether every acknowledged write is applied.
    pub fn settled(&self) -> bool {
        self.applied >= self.acknowledged
    }
}

/// A queued operation handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The stream entry id.
    pub entry: String,
    pub op: WriteOp,
    /// The memory's revision this write was acknowledged as; `None` for follow-ups
    /// (association discovery), which are not acknowledged writes.
    pub revision: Option<u64>,
    /// How many times the entry was handed to a worker (1 the first time).
    pub deliveries: u64,
}

/// How a job ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    /// The record readers see from now on (ready, failed, or a tombstone), stored only when
    /// no write is pending after this job: a newer write's record is never overwritten.
    pub record: Option<RecordWrite>,
    /// With `applied: None`: the record is stored only if the memory is still at this revision.
    pub record_if_revision: Option<u64>,
    pub revision_key: String,
    /// The revision this job applied (or gave up on: the next write goes on from it).
    pub applied: Option<u64>,
    pub generation_key: String,
    /// `Some(error)` moves the entry to `writes:dead`.
    pub dead_letter: Option<String>,
    /// Queued on the follow-up stream (`assoc`) in the same atomic step.
    pub follow_up: Option<WriteOp>,
    /// `(lock key, owner, lease)`: the memory's lease the job applied under. If another job
    /// holds it now (this one stalled past its lease), nothing is stored and the entry stays
    /// pending, to be applied again; a lease that ran out unclaimed is taken again.
    pub lease: Option<(String, String, Duration)>,
}

/// Whether a finish was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Stored,
    /// The job's lease is another job's now: nothing stored, the entry left pending.
    LeaseLost,
}

/// Queue depth, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries in `writes` (not yet taken, or taken and not finished).
    pub length: u64,
    /// Taken by a worker and not finished.
    pub pending: u64,
    /// Entries in `writes:dead`.
    pub dead: u64,
    /// Dead letters dropped to keep `writes:dead` within [`DEAD_LETTER_CAP`].
    pub dead_dropped: u64,
    /// How long the oldest unfinished entry has been queued (none when the queue is empty):
    /// how far behind the workers are.
    pub oldest_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("cache: {0}")]
    Cache(#[from] CacheError),
    #[error("queue entry {entry} is unreadable: {reason}")]
    Corrupt { entry: String, reason: String },
    /// The in-process queue's journal on disk (`{dataDir}/queue.redb`).
    #[error("queue journal: {0}")]
    Journal(String),
    #[error(transparent)]
    Unanswered(#[from] Unanswered),
    /// The primary took the write, but fewer replicas than `redis.replicas` confirmed it
    /// within `redis.replicationTimeout`: not acknowledged (it may still be applied).
    #[error("{confirmed} of {wanted} Redis replicas confirmed the write within {waited:?}")]
    NotReplicated {
        confirmed: i64,
        wanted: u32,
        waited: Duration,
    },
}

impl BackendError for QueueError {
    fn unanswered(&self) -> Option<&Unanswered> {
        match self {
            Self::Unanswered(unanswered) | Self::Cache(CacheError::Unanswered(unanswered)) => {
                Some(unanswered)
            }
            _ => None,
        }
    }

    /// A full Redis answered: it refuses writes but is up, so its breaker stays closed and
    /// reads go on through it.
    fn is_answer(&self) -> bool {
        self.is_out_of_memory()
    }
}

impl QueueError {
    /// Whether Redis refused the command because it is full (`OOM`: `maxmemory` reached and
    /// nothing it may evict). Redis answered: it is up, and nothing was stored.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            Self::Redis(error) | Self::Cache(CacheError::Redis(error)) => {
                error.code() == Some("OOM")
            }
            Self::NotReplicated { .. }
            | Self::Cache(_)
            | Self::Corrupt { .. }
            | Self::Journal(_)
            | Self::Unanswered(_) => false,
        }
    }

    /// Whether a failed submit may still have been stored: the command may have reached Redis
    /// and only the answer been lost (a timeout, a connection dropped mid-call). A refused
    /// connection or an error answer means nothing was stored.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Redis(error) | Self::Cache(CacheError::Redis(error)) => {
                !error.is_connection_refusal()
                    && (error.is_timeout() || error.is_connection_dropped() || error.is_io_error())
            }
            // On the primary, perhaps lost with it: stored or not is not known.
            Self::NotReplicated { .. } => true,
            Self::Cache(_) | Self::Corrupt { .. } | Self::Journal(_) | Self::Unanswered(_) => false,
        }
    }
}

/// What a read sync's end changes ([`WriteQueue::commit_read_sync`]).
#[derive(Debug, Clone)]
pub struct ReadSync<'a> {
    /// `access:{id}` and the reads added to the payload.
    pub access_key: &'a str,
    pub count: u64,
    /// The scope's read syncs (`Keys::scope_read_syncs`), moved on by the commit.
    pub read_syncs_key: &'a str,
    /// `mem:{id}`, `rev:{id}`, and the record with the new counts.
    pub record_key: &'a str,
    pub revision_key: &'a str,
    pub record: Bytes,
    pub ttl: Duration,
}

#[async_trait]
pub trait WriteQueue: Send + Sync + 'static {
    /// Stores the record and queues the operation atomically.
    async fn submit(&self, submission: Submission) -> Result<Submitted, QueueError>;
    /// Prepares the stream and consumer group (idempotent).
    async fn prepare(&self) -> Result<(), QueueError>;
    /// Up to `max` new jobs for `consumer`, waiting up to `wait` for the first.
    async fn take(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Job>, QueueError>;
    /// Up to `max` jobs handed out at least `min_idle` ago that no live worker is working on,
    /// now `consumer`'s (each counted as one more delivery): those of workers that have not
    /// said they were alive within `min_idle` (dead), and `consumer`'s own that are not in
    /// `held`, the entries it is working on (their hand-over was lost, say to a timeout). A live worker's
    /// entries are never taken from it, however long its jobs run. Dead workers with nothing
    /// pending are forgotten.
    async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
        held: &HashSet<String>,
    ) -> Result<Vec<Job>, QueueError>;
    /// Records the applied revision, stores the final record (when nothing newer is pending),
    /// bumps the search generation and acknowledges, atomically.
    async fn finish(&self, job: &Job, finish: Finish) -> Result<Finished, QueueError>;
    /// The record under `record_key` and the memory's acknowledged revision, read together.
    async fn read_versioned(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<(Option<Bytes>, u64), QueueError>;
    /// Deletes the record under `record_key` unless one of the memory's writes is pending
    /// (readers then read the vector store afresh); whether it was deleted.
    async fn forget_settled(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<bool, QueueError>;
    /// Ends a read sync (its reads were added to the payload) in one step: they are no longer
    /// unsynced in the cache, and the record, if there is one, is replaced by the one with the
    /// new counts unless one of the memory's writes is pending; whether it was replaced.
    async fn commit_read_sync(&self, sync: ReadSync<'_>) -> Result<bool, QueueError>;
    /// Where one memory's writes stand.
    async fn revision(&self, revision_key: &str) -> Result<Revision, QueueError>;
    /// Takes the lease `key` for `owner` unless someone else holds it; whether it was taken.
    async fn lock(&self, key: &str, owner: &str, lease: Duration) -> Result<bool, QueueError>;
    /// Gives the lease back, if `owner` still holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), QueueError>;
    /// Says `consumer` is alive (its entries stay its own, and it counts among the consuming
    /// workers) and renews `leases`, `(lock key, owner)`, those it still holds, by `lease`.
    async fn keep_alive(
        &self,
        consumer: &str,
        leases: &[(String, String)],
        lease: Duration,
    ) -> Result<(), QueueError>;
    /// Workers that said they were alive within `within`.
    async fn consumers(&self, within: Duration) -> Result<u64, QueueError>;
    async fn stats(&self) -> Result<QueueStats, QueueError>;
    /// The stream's name without the store prefix (`writes`, `assoc`), for metrics.
    fn stream(&self) -> &str;
}

/// Parses a stream entry's `op` field.
pub(crate) fn parse_op(entry: &str, raw: &[u8]) -> Result<WriteOp, QueueError> {
    serde_json::from_slice(raw).map_err(|e| QueueError::Corrupt {
        entry: entry.to_string(),
        reason: e.to_string(),
    })
}
