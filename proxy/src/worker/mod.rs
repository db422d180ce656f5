//! The write worker: drains the `writes` queue and does the slow part of every write.
//!
//! For a create it asks the enrichment provider for summary, valence and keywords in parallel
//! (a failure stores the layout's fallback), then embeds the layout's text for the memory
//! (batched across jobs), upserts the layout's payload, and finishes the job: the ready record
//! replaces the provisional one (unless a newer write is pending), the search generation moves,
//! the entry is acknowledged.
//!
//! One memory's writes are applied in the order they were acknowledged, one at a time (see
//! [`job`]). A job that fails is retried with capped, jittered exponential backoff, then moved
//! to `writes:dead` and its memory marked `status: failed` with the reason. A heartbeat says
//! the worker is alive and keeps its leases ([`flight`]); jobs a worker left pending are
//! claimed once it has been silent for `worker.claimIdle`. On shutdown it takes no new jobs
//! and finishes the ones in flight.

mod apply;
mod batcher;
mod flight;
mod job;
mod leases;
mod turns;

pub use batcher::EmbeddingBatcher;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use self::flight::InFlight;
use crate::backend::enrichment::Enricher;
use crate::backend::queue::{Job, WriteQueue};
use crate::backend::vectors::VectorStore;
use crate::keys::KeySpace;
use crate::layout::Layout;
use crate::metrics::Metrics;

/// What the worker needs from the config.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// The longest wait between two tries of a job.
    pub max_retry_backoff: Duration,
    /// How long an entry of a live worker may go without a heartbeat; also the memory lease.
    pub claim_idle: Duration,
    /// How long a job waits for earlier writes to its memory before it is applied anyway.
    pub order_wait: Duration,
    pub drain_timeout: Duration,
    pub memory_ttl: Duration,
    pub access_sync_interval: Duration,
    pub search_ef: Option<u64>,
    /// The tenant's payload field, when scoping is on.
    pub scope_field: Option<String>,
}

/// What a worker is built from: its queue, the backends a job writes to, and how memories are
/// laid out.
pub struct WorkerParts {
    pub queue: Arc<dyn WriteQueue>,
    pub vectors: Arc<dyn VectorStore>,
    pub enricher: Arc<dyn Enricher>,
    pub embeddings: EmbeddingBatcher,
    pub cache: Arc<dyn crate::backend::cache::CacheStore>,
    pub layout: Arc<dyn Layout>,
    pub keys: KeySpace,
    pub metrics: Metrics,
}

pub struct Worker {
    queue: Arc<dyn WriteQueue>,
    vectors: Arc<dyn VectorStore>,
    enricher: Arc<dyn Enricher>,
    embeddings: EmbeddingBatcher,
    cache: Arc<dyn crate::backend::cache::CacheStore>,
    layout: Arc<dyn Layout>,
    keys: KeySpace,
    metrics: Metrics,
    settings: WorkerSettings,
    turns: turns::Turns,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Ids copied per round of access sync.
const ACCESS_SYNC_BATCH: usize = 500;

/// How long one `take` waits for new jobs before the loop checks for shutdown again.
const TAKE_WAIT: Duration = Duration::from_millis(500);

/// The most entries one read of the queue hands over. Redis runs one command at a time: a read
/// of 512 entries (their ops, kilobytes each) held every acknowledgement back for 1–2.5 ms in
/// the benchmark; reads of 64 keep that under a few hundred microseconds, and a backlog is
/// read in more, shorter steps.
const TAKE_BATCH: usize = 64;

/// Jobs one worker holds per slot: the others wait for their memory's earlier writes or lease
/// without holding a slot.
const JOBS_HELD_PER_SLOT: usize = 4;

/// Heartbeats per `claimIdle`: a live worker's entries never come near it.
const HEARTBEATS_PER_IDLE: u32 = 5;

/// How often the queue's depth is exported.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Looks for a dead worker's entries this often per `claimIdle`.
const CLAIMS_PER_IDLE: u32 = 2;

impl Worker {
    pub fn new(parts: WorkerParts, settings: WorkerSettings) -> Self {
        Self {
            queue: parts.queue,
            vectors: parts.vectors,
            enricher: parts.enricher,
            embeddings: parts.embeddings,
            cache: parts.cache,
            layout: parts.layout,
            keys: parts.keys,
            metrics: parts.metrics,
            settings,
            turns: turns::Turns::default(),
        }
    }

    /// Runs until `shutdown` turns true, then finishes in-flight jobs (up to the drain timeout).
    /// Dropping the future (aborting its task) stops every job at once, as a crash would.
    pub async fn run(self: Arc<Self>, consumer: String, mut shutdown: watch::Receiver<bool>) {
        while let Err(error) = self.queue.prepare().await {
            tracing::warn!(%error, "write queue not ready; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
        tracing::info!(%consumer, concurrency = self.settings.concurrency, "worker started");
        let flight = InFlight::default();
        let mut helpers = JoinSet::new();
        helpers.spawn(self.clone().sync_reads_forever());
        helpers.spawn(flight.clone().keep_alive_forever(
            self.queue.clone(),
            consumer.clone(),
            self.heartbeat_interval(),
            self.settings.claim_idle,
        ));
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut jobs = JoinSet::new();
        let capacity = self.settings.concurrency * JOBS_HELD_PER_SLOT;
        let mut last_claim: Option<Instant> = None;
        let mut last_stats: Option<Instant> = None;
        while !*shutdown.borrow() {
            while jobs.try_join_next().is_some() {}
            let claim_due = last_claim
                .is_none_or(|at| at.elapsed() >= self.settings.claim_idle / CLAIMS_PER_IDLE);
            if claim_due {
                last_claim = Some(Instant::now());
                // Claims do not wait for room: a dead worker's jobs may be the ones the jobs
                // held here are waiting for.
                for job in self.claim_stale(&consumer, &flight).await {
                    self.spawn_job(&mut jobs, job, &consumer, &flight, &slots);
                }
            }
            let room = capacity.saturating_sub(flight.len());
            if room == 0 {
                tokio::select! {
                    _ = jobs.join_next() => {}
                    _ = tokio::time::sleep(TAKE_WAIT) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            // Not raced against shutdown: jobs handed over are always processed.
            match self
                .queue
                .take(&consumer, room.min(TAKE_BATCH), TAKE_WAIT)
                .await
            {
                Ok(taken) => {
                    for job in taken {
                        self.spawn_job(&mut jobs, job, &consumer, &flight, &slots);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read the write queue");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            // Queue depth is for dashboards: once a second, not once per batch taken.
            if last_stats.is_none_or(|at| at.elapsed() >= STATS_INTERVAL) {
                last_stats = Some(Instant::now());
                self.export_queue_stats().await;
            }
        }
        let drained = tokio::time::timeout(self.settings.drain_timeout, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("worker stopped after finishing its jobs"),
            Err(_) => {
                tracing::warn!("worker stopped with jobs in flight; another worker will claim them")
            }
        }
    }

    fn heartbeat_interval(&self) -> Duration {
        (self.settings.claim_idle / HEARTBEATS_PER_IDLE).max(Duration::from_millis(20))
    }

    /// Jobs a dead worker left pending, and this worker's own it lost track of, now this
    /// worker's; never its own live ones.
    async fn claim_stale(&self, consumer: &str, flight: &InFlight) -> Vec<Job> {
        let held = flight.entries();
        match self
            .queue
            .claim_stale(
                consumer,
                self.settings.claim_idle,
                self.settings.concurrency,
                &held,
            )
            .await
        {
            // The queue leaves out the entries in `held`; one started meanwhile would not
            // start twice either (`spawn_job`).
            Ok(claimed) => {
                if !claimed.is_empty() {
                    tracing::info!(
                        count = claimed.len(),
                        "claimed jobs of a worker that stopped"
                    );
                }
                claimed
            }
            Err(error) => {
                tracing::warn!(%error, "could not claim stale jobs");
                Vec::new()
            }
        }
    }

    fn spawn_job(
        self: &Arc<Self>,
        jobs: &mut JoinSet<()>,
        job: Job,
        consumer: &str,
        flight: &InFlight,
        slots: &Arc<Semaphore>,
    ) {
        if !flight.start(&job.entry) {
            return;
        }
        let (worker, consumer, flight, slots) = (
            self.clone(),
            consumer.to_string(),
            flight.clone(),
            slots.clone(),
        );
        jobs.spawn(async move {
            let entry = job.entry.clone();
            worker.process(job, &consumer, &flight, &slots).await;
            flight.end(&entry);
        });
    }

    async fn sync_reads_forever(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.settings.access_sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            while self.sync_reads(ACCESS_SYNC_BATCH).await == ACCESS_SYNC_BATCH {}
        }
    }

    /// Adds the reads of up to `max` recently read memories to their vector-store payload
    /// (as the layout counts them: on top of what is stored, never overwriting it), as one
    /// increment per memory; returns how many it handled. Reads whose write failed stay for
    /// the next round. Answers count exactly meanwhile: they add the cache's unsynced reads to
    /// the payload (see `core/counts.rs`), so this runs rarely (`worker.accessSyncInterval`, minutes)
    /// and a read never moves a point out of its indexed segment by itself.
    pub async fn sync_reads(&self, max: usize) -> usize {
        let dirty_key = self.keys.access_dirty();
        let ids = match self.cache.take_dirty(&dirty_key, max).await {
            Ok(ids) => ids,
            Err(error) => {
                tracing::warn!(%error, "could not read the ids to sync");
                return 0;
            }
        };
        let mut failed = Vec::new();
        for id in &ids {
            match self.add_reads(*id).await {
                Ok(Synced::Added) => self.metrics.worker.access_synced.inc(),
                Ok(Synced::Nothing) => {}
                // Read while its create was still on its way to the vector store, or its lease
                // was taken by a write: next round.
                Ok(Synced::NotYet) => failed.push(*id),
                Err(error) => {
                    tracing::warn!(%error, %id, "could not add read counts to the vector store");
                    failed.push(*id);
                }
            }
        }
        if let Err(error) = self.cache.mark_dirty(&dirty_key, &failed).await {
            tracing::warn!(%error, lost = failed.len(), "could not requeue access syncs");
        }
        ids.len() - failed.len()
    }

    /// Under the memory's lease: marks its unsynced reads as being synced, adds them to its
    /// payload, then marks them synced and replaces its cached record (which carries the
    /// counts from before). Cached searches stay: they add the reads synced since they were
    /// filled.
    async fn add_reads(&self, id: uuid::Uuid) -> Result<Synced, SyncError> {
        // A write being applied to the memory could overwrite the counts: next round.
        let lock = self.keys.lock(id);
        let owner = format!("access-sync/{}", uuid::Uuid::new_v4().simple());
        match self
            .queue
            .lock(&lock, &owner, self.settings.claim_idle)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(Synced::NotYet),
            Err(error) => {
                tracing::warn!(%error, %id, "could not take a memory's lease to add its reads");
                return Ok(Synced::NotYet);
            }
        }
        let added = self.add_accesses_locked(id).await;
        if let Err(error) = self.queue.unlock(&lock, &owner).await {
            tracing::warn!(%error, %id, "could not give a memory's lease back; it runs out by itself");
        }
        added
    }

    async fn add_accesses_locked(&self, id: uuid::Uuid) -> Result<Synced, SyncError> {
        let access_key = self.keys.access(id);
        let Some(reads) = self.cache.unsynced_reads(&access_key).await? else {
            return Ok(Synced::Nothing);
        };
        let Some(mut payload) = self.vectors.retrieve(id).await? else {
            return Ok(Synced::NotYet);
        };
        let scope = crate::keys::Scope::of(reads.tenant.as_deref());
        let mut count = reads.count;
        if let Some(unfinished) = &reads.unfinished {
            if holds_fields(&payload, &unfinished.fields) {
                // The last sync wrote the payload and did not commit: committed now, once.
                self.commit_sync(&scope, id, &access_key, unfinished.count, payload.clone())
                    .await?;
                count = count.saturating_sub(unfinished.count);
                if count == 0 {
                    return Ok(Synced::Added);
                }
            }
        }
        let fields = self.layout.accessed(&payload, count, reads.last);
        let written = serde_json::to_vec(&fields).map_err(SyncError::Encode)?;
        self.cache
            .begin_sync(&access_key, count, written.into())
            .await?;
        self.vectors.set_fields(id, fields.clone()).await?;
        // From here the payload has them: an answer from the vector store counts them twice
        // until this commit, a few milliseconds.
        payload.extend(fields);
        self.commit_sync(&scope, id, &access_key, count, payload)
            .await?;
        Ok(Synced::Added)
    }

    /// The reads marked synced and the memory's cached record, which holds the read counts
    /// from before, replaced by the ready one with the counts now stored, in one step (an L1
    /// keeps a record with the counts read with it). A record that cannot be replaced (a full
    /// Redis) is dropped.
    async fn commit_sync(
        &self,
        scope: &crate::keys::Scope,
        id: uuid::Uuid,
        access_key: &str,
        count: u64,
        mut memory: crate::memory::StoredMemory,
    ) -> Result<(), SyncError> {
        let record = self.keys.memory(scope, id);
        let revision = self.keys.revision(scope, id);
        let read_syncs = self.keys.scope_read_syncs(scope);
        if !memory.contains_key("id") {
            memory.insert("id".into(), serde_json::Value::String(id.to_string()));
        }
        let ready = self.ready_record(record.clone(), memory);
        let committed = self
            .queue
            .commit_read_sync(crate::backend::queue::ReadSync {
                access_key,
                count,
                read_syncs_key: &read_syncs,
                record_key: &record,
                revision_key: &revision,
                record: ready.value,
                ttl: ready.ttl,
            })
            .await;
        if let Err(error) = committed {
            if let Err(error) = self.queue.forget_settled(&record, &revision).await {
                tracing::warn!(%error, %id, "could not drop a cached record after a read sync");
            }
            return Err(error.into());
        }
        Ok(())
    }

    async fn export_queue_stats(&self) {
        if let Ok(stats) = self.queue.stats().await {
            let stream = [self.queue.stream()];
            self.metrics
                .worker
                .queue_length
                .with_label_values(&stream)
                .set(stats.length as i64);
            self.metrics
                .worker
                .queue_pending
                .with_label_values(&stream)
                .set(stats.pending as i64);
            self.metrics
                .worker
                .dead_letters
                .with_label_values(&stream)
                .set(stats.dead as i64);
            self.metrics
                .worker
                .dead_letters_dropped
                .with_label_values(&stream)
                .set(stats.dead_dropped as i64);
            self.metrics
                .worker
                .queue_oldest_seconds
                .with_label_values(&stream)
                .set(stats.oldest_age.unwrap_or_default().as_secs_f64());
        }
        if let Ok(consumers) = self
            .queue
            .consumers(crate::backend::queue::WORKER_SILENCE)
            .await
        {
            self.metrics
                .worker
                .queue_consumers
                .with_label_values(&[self.queue.stream()])
                .set(i64::try_from(consumers).unwrap_or(i64::MAX));
        }
    }

    fn record_key(&self, job_scope: Option<&str>, id: uuid::Uuid) -> String {
        self.keys.memory(&crate::keys::Scope::of(job_scope), id)
    }
}

/// What a read sync did for one memory.
enum Synced {
    /// Its reads are in its payload now.
    Added,
    /// No reads to add.
    Nothing,
    /// Not now (not in the vector store yet, or a write holds its lease): next round.
    NotYet,
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Cache(#[from] crate::backend::cache::CacheError),
    #[error(transparent)]
    Vectors(#[from] crate::backend::vectors::VectorError),
    #[error(transparent)]
    Queue(#[from] crate::backend::queue::QueueError),
    #[error("could not encode the fields of a read sync: {0}")]
    Encode(serde_json::Error),
}

/// Whether `payload` holds every one of `fields` (JSON), as a sync's write set them.
fn holds_fields(payload: &crate::memory::StoredMemory, fields: &[u8]) -> bool {
    serde_json::from_slice::<crate::memory::StoredMemory>(fields).is_ok_and(|fields| {
        fields
            .iter()
            .all(|(field, value)| payload.get(field) == Some(value))
    })
}

#[async_trait::async_trait]
impl crate::front::admin::Readiness for Worker {
    /// Ready when the queue and the vector store answer.
    async fn checks(&self) -> Vec<(&'static str, Result<(), String>)> {
        let queue = self
            .queue
            .stats()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let vectors = self.vectors.health().await.map_err(|e| e.to_string());
        vec![("queue", queue), (self.vectors.backend_name(), vectors)]
    }
}
