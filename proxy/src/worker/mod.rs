//! The write worker: drains the `writes` queue and does the slow part of every write.
//!
//! For a create it asks the enrichment provider for summary, valence and keywords in parallel
//! (a failure stores the layout's fallback), then embeds the layout's text for the memory
//! (batched across jobs), upserts the layout's payload, and finishes the job: the ready record replaces the provisional one, the search generation
//! moves, the entry is acknowledged. A job that fails is retried with exponential backoff, then
//! moved to `writes:dead` and its memory marked `status: failed` with the reason. Jobs a dead
//! worker left pending are claimed after `worker.claimIdle`. On shutdown it takes no new jobs
//! and finishes the ones in flight.

mod apply;
mod batcher;

pub use batcher::EmbeddingBatcher;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{watch, Semaphore};

use crate::enrichment::Enricher;
use crate::keys::{KeySpace, Scope};
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::queue::{Finish, Job, RecordWrite, WriteOp, WriteQueue};
use crate::vectors::VectorStore;

/// What the worker needs from the config.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub claim_idle: Duration,
    pub drain_timeout: Duration,
    pub memory_ttl: Duration,
    pub access_sync_interval: Duration,
    pub search_ef: Option<u64>,
    /// The tenant's payload field, when scoping is on.
    pub scope_field: Option<String>,
}

pub struct Worker {
    queue: Arc<dyn WriteQueue>,
    vectors: Arc<dyn VectorStore>,
    enricher: Arc<dyn Enricher>,
    embeddings: EmbeddingBatcher,
    cache: Arc<dyn crate::cache::CacheStore>,
    layout: Arc<dyn Layout>,
    keys: KeySpace,
    metrics: Metrics,
    settings: WorkerSettings,
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

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: Arc<dyn WriteQueue>,
        vectors: Arc<dyn VectorStore>,
        enricher: Arc<dyn Enricher>,
        embeddings: EmbeddingBatcher,
        cache: Arc<dyn crate::cache::CacheStore>,
        layout: Arc<dyn Layout>,
        keys: KeySpace,
        metrics: Metrics,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            queue,
            vectors,
            enricher,
            embeddings,
            cache,
            layout,
            keys,
            metrics,
            settings,
        }
    }

    /// Runs until `shutdown` turns true, then finishes in-flight jobs (up to the drain timeout).
    pub async fn run(self: Arc<Self>, consumer: String, mut shutdown: watch::Receiver<bool>) {
        while let Err(error) = self.queue.prepare().await {
            tracing::warn!(%error, "write queue not ready; retrying");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
        tracing::info!(%consumer, concurrency = self.settings.concurrency, "worker started");
        let access_sync = tokio::spawn(self.clone().sync_accesses_forever());
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut last_claim: Option<Instant> = None;
        while !*shutdown.borrow() {
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = slots.clone().acquire_owned() => drop(permit),
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let claim_due =
                last_claim.is_none_or(|at| at.elapsed() >= self.settings.claim_idle / 2);
            let mut jobs = Vec::new();
            if claim_due {
                last_claim = Some(Instant::now());
                match self
                    .queue
                    .claim_stale(&consumer, self.settings.claim_idle, free)
                    .await
                {
                    Ok(claimed) => {
                        if !claimed.is_empty() {
                            tracing::info!(
                                count = claimed.len(),
                                "claimed jobs of a worker that stopped"
                            );
                        }
                        jobs = claimed;
                    }
                    Err(error) => tracing::warn!(%error, "could not claim stale jobs"),
                }
            }
            if jobs.is_empty() {
                // Not raced against shutdown: jobs handed over are always processed.
                match self.queue.take(&consumer, free, TAKE_WAIT).await {
                    Ok(taken) => jobs = taken,
                    Err(error) => {
                        tracing::warn!(%error, "could not read the write queue");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            for job in jobs {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let worker = self.clone();
                tokio::spawn(async move {
                    worker.process(job).await;
                    drop(permit);
                });
            }
            self.export_queue_stats().await;
        }
        access_sync.abort();
        let all = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
        let drained =
            tokio::time::timeout(self.settings.drain_timeout, slots.acquire_many(all)).await;
        match drained {
            Ok(_) => tracing::info!("worker stopped after finishing its jobs"),
            Err(_) => {
                tracing::warn!("worker stopped with jobs in flight; another worker will claim them")
            }
        }
    }

    async fn sync_accesses_forever(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.settings.access_sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            while self.sync_accesses(ACCESS_SYNC_BATCH).await == ACCESS_SYNC_BATCH {}
        }
    }

    /// Adds the reads of up to `max` recently read memories to their vector-store payload
    /// (as the layout counts them: on top of what is stored, never overwriting it); returns
    /// how many it handled. Reads whose write failed are kept for the next round.
    pub async fn sync_accesses(&self, max: usize) -> usize {
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
            let access_key = self.keys.access(*id);
            let (count, last) = match self.cache.take_unsynced(&access_key).await {
                Ok(Some(unsynced)) => unsynced,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, %id, "could not read access counts");
                    failed.push(*id);
                    continue;
                }
            };
            match self.add_accesses(*id, count, last).await {
                Ok(true) => self.metrics.access_synced.inc(),
                // Read while its create was still on its way to the vector store: next round.
                Ok(false) => {
                    if let Err(error) = self.cache.return_unsynced(&access_key, count).await {
                        tracing::warn!(%error, %id, lost = count, "could not keep unsynced reads");
                    }
                    failed.push(*id);
                }
                Err(error) => {
                    tracing::warn!(%error, %id, "could not add read counts to the vector store");
                    if let Err(error) = self.cache.return_unsynced(&access_key, count).await {
                        tracing::warn!(%error, %id, lost = count, "could not keep unsynced reads");
                    }
                    failed.push(*id);
                }
            }
        }
        if let Err(error) = self.cache.mark_dirty(&dirty_key, &failed).await {
            tracing::warn!(%error, lost = failed.len(), "could not requeue access syncs");
        }
        ids.len() - failed.len()
    }

    /// Adds `count` reads (the last at `last`) to one memory's payload; `false` when the
    /// memory is not in the vector store (yet). A deleted memory's reads are dropped with its
    /// access state when the delete is applied.
    async fn add_accesses(
        &self,
        id: uuid::Uuid,
        count: u64,
        last: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, crate::vectors::VectorError> {
        let Some(payload) = self.vectors.retrieve(id).await? else {
            return Ok(false);
        };
        let fields = self.layout.accessed(&payload, count, last);
        self.vectors.set_fields(id, fields).await?;
        Ok(true)
    }

    async fn export_queue_stats(&self) {
        if let Ok(stats) = self.queue.stats().await {
            let stream = [self.queue.stream()];
            self.metrics
                .queue_length
                .with_label_values(&stream)
                .set(stats.length as i64);
            self.metrics
                .queue_pending
                .with_label_values(&stream)
                .set(stats.pending as i64);
            self.metrics
                .dead_letters
                .with_label_values(&stream)
                .set(stats.dead as i64);
        }
    }

    /// Applies one job with retries, then finishes it (ready, or dead-lettered).
    pub async fn process(&self, job: Job) {
        let started = Instant::now();
        let kind = job.op.kind();
        let mut attempt = 1;
        let finish = loop {
            match self.apply(&job.op).await {
                Ok((record, follow_up)) => break self.finish_with(record, None, follow_up),
                Err(error) if attempt < self.settings.max_attempts => {
                    let backoff = self.settings.retry_backoff * 2u32.saturating_pow(attempt - 1);
                    tracing::warn!(%error, entry = %job.entry, attempt, ?backoff, "write job failed; retrying");
                    self.metrics
                        .jobs
                        .with_label_values(&[kind, "retried"])
                        .inc();
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                Err(error) => {
                    tracing::error!(%error, entry = %job.entry, attempt, "write job failed for good; dead-lettered");
                    let failed = self.failed_record(&job, &error.to_string()).await;
                    break self.finish_with(failed, Some(error.to_string()), None);
                }
            }
        };
        let outcome = if finish.dead_letter.is_some() {
            "dead"
        } else {
            "done"
        };
        // The entry stays pending (and is claimed again later) if even this fails.
        for attempt in 1..=3u64 {
            match self.queue.finish(&job, finish.clone()).await {
                Ok(()) => {
                    self.metrics.jobs.with_label_values(&[kind, outcome]).inc();
                    self.metrics
                        .job_duration
                        .with_label_values(&["total"])
                        .observe(started.elapsed().as_secs_f64());
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, entry = %job.entry, attempt, "could not finish a write job");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        self.metrics
            .jobs
            .with_label_values(&[kind, "unfinished"])
            .inc();
    }

    fn finish_with(
        &self,
        record: RecordWrite,
        dead_letter: Option<String>,
        follow_up: Option<WriteOp>,
    ) -> Finish {
        Finish {
            record,
            generation_key: self.keys.search_generation(),
            dead_letter,
            follow_up,
        }
    }

    fn record_key(&self, job_scope: Option<&str>, id: uuid::Uuid) -> String {
        let scope = job_scope.map(Scope::tenant).unwrap_or(Scope::UNSCOPED);
        self.keys.memory(&scope, id)
    }

    /// The record of a job that failed for good: what readers had, `status: failed`, the reason.
    async fn failed_record(&self, job: &Job, error: &str) -> RecordWrite {
        let key = self.record_key(job.op.scope(), job.op.id());
        let mut memory = match &job.op {
            crate::queue::WriteOp::Create { memory, .. } => memory.clone(),
            _ => match self.cache.get(&key).await {
                Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
                _ => Default::default(),
            },
        };
        memory.insert("id".into(), Value::String(job.op.id().to_string()));
        memory.insert("status".into(), Value::String("failed".into()));
        memory.insert("error".into(), Value::String(error.to_string()));
        RecordWrite {
            key,
            value: serde_json::to_vec(&memory).unwrap_or_default().into(),
            ttl: self.settings.memory_ttl,
        }
    }
}

#[async_trait::async_trait]
impl crate::admin::Readiness for Worker {
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
