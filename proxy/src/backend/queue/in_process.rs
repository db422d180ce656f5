//! [`WriteQueue`] in this process, for `--embedded`: the same pipeline and the same guarantees
//! as with Redis (revisions, leases, ordered jobs), on one async mutex. Records go to the
//! in-process cache. With a [`Journal`] (a `dataDir`), every job is on disk before its write
//! is acknowledged and is queued again, with its record, after a restart
//! ([`WriteQueue::prepare`]); without one, nothing survives a restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Mutex, MutexGuard, Notify};
use uuid::Uuid;

use super::journal::{Journal, JournaledJob, JournaledRecord};
use super::{
    Finish, Finished, Job, QueueError, QueueStats, ReadSync, RecordWrite, Revision, Submission,
    Submitted, WriteOp, WriteQueue, DEAD_LETTER_CAP,
};
use crate::backend::cache::CacheStore;

/// How long a pending record is kept: until its job finishes (a write's only copy).
const PENDING_RECORD_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

struct Pending {
    job: Job,
    owner: String,
    since: Instant,
}

#[derive(Default)]
struct State {
    next_entry: u64,
    /// When each unfinished entry was queued, by sequence number (oldest first).
    queued_at: std::collections::BTreeMap<u64, Instant>,
    ready: VecDeque<Job>,
    pending: HashMap<String, Pending>,
    idempotency: HashMap<String, (Uuid, Instant)>,
    consumers: HashMap<String, Instant>,
    dead: VecDeque<(Job, String)>,
    dead_dropped: u64,
}

/// What every queue of the store shares about each memory (as the Redis keys are shared).
#[derive(Default)]
struct Memories {
    /// Each memory's revisions, and when a settled memory's are forgotten (as its record is).
    revisions: HashMap<String, (Revision, Option<Instant>)>,
    finishes: u64,
    leases: HashMap<String, (String, Instant)>,
}

impl Memories {
    /// A memory's revisions; forgotten ones read as none.
    fn revision(&self, key: &str) -> Revision {
        match self.revisions.get(key) {
            Some((revision, expires)) if expires.is_none_or(|at| at > Instant::now()) => *revision,
            _ => Revision::default(),
        }
    }

    /// Drops the revisions of memories settled longer ago than their records live.
    fn forget_expired(&mut self) {
        self.finishes += 1;
        if self.finishes.is_multiple_of(1024) {
            let now = Instant::now();
            self.revisions
                .retain(|_, (_, expires)| expires.is_none_or(|at| at > now));
        }
    }
}

/// The sequence number of an entry id (`"7-0"` → 7), as the journal keys it.
fn entry_seq(entry: &str) -> Option<u64> {
    entry.split_once('-')?.0.parse().ok()
}

impl State {
    /// The sequence number the next [`State::push`] takes.
    fn next_seq(&self) -> u64 {
        self.next_entry + 1
    }

    fn push(&mut self, op: WriteOp, revision: Option<u64>) -> String {
        self.next_entry += 1;
        self.queued_at.insert(self.next_entry, Instant::now());
        let job = Self::job(self.next_entry, op, revision);
        let entry = job.entry.clone();
        self.ready.push_back(job);
        entry
    }

    fn job(seq: u64, op: WriteOp, revision: Option<u64>) -> Job {
        Job {
            entry: format!("{seq}-0"),
            op,
            revision,
            deliveries: 1,
        }
    }

    fn take_ready(&mut self, consumer: &str, max: usize) -> Vec<Job> {
        let count = max.min(self.ready.len());
        let jobs: Vec<Job> = self.ready.drain(..count).collect();
        for job in &jobs {
            self.pending.insert(
                job.entry.clone(),
                Pending {
                    job: job.clone(),
                    owner: consumer.to_string(),
                    since: Instant::now(),
                },
            );
        }
        jobs
    }
}

pub struct InProcessQueue {
    name: &'static str,
    records: Arc<dyn CacheStore>,
    follow_up: Option<Arc<InProcessQueue>>,
    memories: Arc<Mutex<Memories>>,
    state: Mutex<State>,
    arrived: Notify,
    journal: Option<Journal>,
    /// Whether the journal's unfinished jobs were queued again.
    restored: Mutex<bool>,
}

impl std::fmt::Debug for InProcessQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessQueue").finish_non_exhaustive()
    }
}

impl InProcessQueue {
    /// A queue storing records in `records`; finished jobs' follow-ups go to `follow_up`,
    /// which shares this queue's revisions and leases.
    pub fn new(
        name: &'static str,
        records: Arc<dyn CacheStore>,
        follow_up: Option<Arc<InProcessQueue>>,
    ) -> Self {
        let memories = follow_up
            .as_ref()
            .map(|queue| queue.memories.clone())
            .unwrap_or_default();
        Self {
            name,
            records,
            follow_up,
            memories,
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            journal: None,
            restored: Mutex::new(false),
        }
    }

    /// The same queue keeping its jobs in `journal` until they finish.
    pub fn durable(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Writes a job to the journal, when there is one, before it is queued.
    async fn journal(
        &self,
        seq: u64,
        job: impl FnOnce() -> JournaledJob,
    ) -> Result<(), QueueError> {
        match &self.journal {
            Some(journal) => journal.append(self.name, seq, &job()).await,
            None => Ok(()),
        }
    }

    /// Queues the journal's unfinished jobs again, with the records readers saw and the
    /// memories' revisions: a memory's applied revision is the one before its oldest
    /// unfinished job's, so they apply in order, as before the restart.
    async fn restore(&self) -> Result<(), QueueError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let jobs = journal.unfinished(self.name).await?;
        if jobs.is_empty() {
            return Ok(());
        }
        let mut memories = self.memories().await;
        let mut state = self.state().await;
        let mut restored = VecDeque::with_capacity(jobs.len());
        for (seq, job) in &jobs {
            if let Some(record) = &job.record {
                let record = record.to_record().map_err(|reason| QueueError::Corrupt {
                    entry: format!("{}/{seq} in the journal", self.name),
                    reason,
                })?;
                self.records
                    .set(&record.key, record.value, record.ttl)
                    .await?;
            }
            if let (Some(key), Some(revision)) = (&job.revision_key, job.revision) {
                let (current, _) = memories.revisions.entry(key.clone()).or_insert((
                    Revision {
                        acknowledged: revision,
                        applied: revision.saturating_sub(1),
                    },
                    None,
                ));
                current.acknowledged = current.acknowledged.max(revision);
                current.applied = current.applied.min(revision.saturating_sub(1));
            }
            state.next_entry = state.next_entry.max(*seq);
            state.queued_at.insert(*seq, Instant::now());
            restored.push_back(State::job(*seq, job.op.clone(), job.revision));
        }
        // Older than anything queued since this process started.
        restored.append(&mut state.ready);
        state.ready = restored;
        tracing::info!(
            stream = self.name,
            jobs = jobs.len(),
            "queued again the acknowledged writes a restart interrupted"
        );
        drop(state);
        drop(memories);
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().await
    }

    /// Taken before [`InProcessQueue::state`] when both are needed.
    async fn memories(&self) -> MutexGuard<'_, Memories> {
        self.memories.lock().await
    }

    /// The dead letters so far, with their errors.
    pub async fn dead_letters(&self) -> Vec<(Job, String)> {
        self.state().await.dead.iter().cloned().collect()
    }

    /// Queues a follow-up (association discovery after a write).
    async fn push(&self, op: WriteOp) {
        let mut state = self.state().await;
        let journaled = self
            .journal(state.next_seq(), || JournaledJob {
                op: op.clone(),
                revision: None,
                revision_key: None,
                record: None,
            })
            .await;
        if let Err(error) = journaled {
            tracing::warn!(%error, stream = self.name, "a follow-up is queued without its journal entry: a restart before it runs skips it");
        }
        state.push(op, None);
        drop(state);
        self.arrived.notify_one();
    }
}

#[async_trait]
impl WriteQueue for InProcessQueue {
    async fn submit(&self, submission: Submission) -> Result<Submitted, QueueError> {
        let now = Instant::now();
        // Held while the record is stored: the revision check and the write are one step.
        let mut memories = self.memories().await;
        let mut state = self.state().await;
        if let Some((key, ttl)) = &submission.idempotency {
            if let Some((id, at)) = state.idempotency.get(key) {
                if now.duration_since(*at) < *ttl {
                    return Ok(Submitted::Replayed { id: *id });
                }
            }
        }
        let current = memories.revision(&submission.revision_key);
        if let Some(expected) = submission.expected_revision {
            if current.acknowledged != expected {
                return Ok(Submitted::Conflict {
                    revision: current.acknowledged,
                });
            }
        }
        let revision = current.acknowledged + 1;
        self.journal(state.next_seq(), || JournaledJob {
            op: submission.op.clone(),
            revision: Some(revision),
            revision_key: Some(submission.revision_key.clone()),
            record: Some(JournaledRecord::of(&RecordWrite {
                ttl: PENDING_RECORD_TTL,
                ..submission.record.clone()
            })),
        })
        .await?;
        let record = submission.record;
        self.records
            .set(&record.key, record.value, PENDING_RECORD_TTL)
            .await?;
        if submission.bump_generation {
            self.records.increment(&submission.generation_key).await?;
        }
        if let Some((key, _)) = &submission.idempotency {
            state
                .idempotency
                .insert(key.clone(), (submission.op.id(), now));
        }
        memories.revisions.insert(
            submission.revision_key,
            (
                Revision {
                    acknowledged: revision,
                    ..current
                },
                None,
            ),
        );
        let entry = state.push(submission.op, Some(revision));
        drop(state);
        drop(memories);
        self.arrived.notify_one();
        Ok(Submitted::Queued { entry, revision })
    }

    /// Queues again what the journal holds, once per process.
    async fn prepare(&self) -> Result<(), QueueError> {
        let mut restored = self.restored.lock().await;
        if !*restored {
            self.restore().await?;
            *restored = true;
        }
        Ok(())
    }

    async fn take(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Job>, QueueError> {
        let jobs = self.state().await.take_ready(consumer, max);
        if !jobs.is_empty() {
            return Ok(jobs);
        }
        let _ = tokio::time::timeout(wait, self.arrived.notified()).await;
        Ok(self.state().await.take_ready(consumer, max))
    }

    async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
        held: &HashSet<String>,
    ) -> Result<Vec<Job>, QueueError> {
        let mut state = self.state().await;
        let now = Instant::now();
        let State {
            pending, consumers, ..
        } = &mut *state;
        // Workers silent for `min_idle` are dead: forgotten, and their entries anyone's.
        consumers.retain(|_, seen| now.duration_since(*seen) < min_idle);
        let mut claimed = Vec::new();
        for pending in pending.values_mut() {
            if claimed.len() == max {
                break;
            }
            let orphaned = if pending.owner == consumer {
                !held.contains(&pending.job.entry)
            } else {
                !consumers.contains_key(&pending.owner)
            };
            if orphaned && now.duration_since(pending.since) >= min_idle {
                pending.owner = consumer.to_string();
                pending.since = now;
                pending.job.deliveries += 1;
                claimed.push(pending.job.clone());
            }
        }
        Ok(claimed)
    }

    async fn finish(&self, job: &Job, finish: Finish) -> Result<Finished, QueueError> {
        let mut memories = self.memories().await;
        if let Some((key, owner, lease)) = &finish.lease {
            let now = Instant::now();
            match memories.leases.get(key) {
                Some((holder, until)) if *until > now && holder != owner => {
                    return Ok(Finished::LeaseLost)
                }
                Some((holder, until)) if *until > now && holder == owner => {}
                _ => {
                    memories
                        .leases
                        .insert(key.clone(), (owner.clone(), now + *lease));
                }
            }
        }
        let mut revision = memories.revision(&finish.revision_key);
        if let Some(applied) = finish.applied {
            revision.applied = revision.applied.max(applied);
        }
        let settled = revision.settled();
        let current = finish
            .record_if_revision
            .is_none_or(|expected| expected == revision.acknowledged);
        let record_ttl = finish
            .record
            .as_ref()
            .map_or(PENDING_RECORD_TTL, |record| record.ttl);
        if let Some(record) = finish.record.filter(|_| settled && current) {
            self.records
                .set(&record.key, record.value, record.ttl)
                .await?;
        }
        if finish.applied.is_some() || settled {
            let expires = settled.then(|| Instant::now() + record_ttl);
            memories
                .revisions
                .insert(finish.revision_key.clone(), (revision, expires));
        }
        memories.forget_expired();
        self.records.increment(&finish.generation_key).await?;
        let mut state = self.state().await;
        if let Some(seq) = entry_seq(&job.entry) {
            if let Some(journal) = &self.journal {
                journal.remove(self.name, seq).await?;
            }
            state.queued_at.remove(&seq);
        }
        state.pending.remove(&job.entry);
        if let Some(error) = finish.dead_letter {
            state.dead.push_back((job.clone(), error));
            if state.dead.len() as u64 > DEAD_LETTER_CAP {
                state.dead.pop_front();
                state.dead_dropped += 1;
            }
        }
        drop(state);
        drop(memories);
        if let (Some(queue), Some(op)) = (&self.follow_up, finish.follow_up) {
            queue.push(op).await;
        }
        Ok(Finished::Stored)
    }

    async fn read_versioned(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<(Option<Bytes>, u64), QueueError> {
        let memories = self.memories().await;
        let record = self.records.get(record_key).await?;
        let revision = memories.revision(revision_key).acknowledged;
        Ok((record, revision))
    }

    async fn forget_settled(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<bool, QueueError> {
        let memories = self.memories().await;
        let pending = !memories.revision(revision_key).settled();
        if pending {
            return Ok(false);
        }
        self.records.delete(record_key).await?;
        Ok(true)
    }

    /// Under the memories' lock, as every write's step here; a reader of the record and its
    /// counts may see one of them changed and not the other for the moment between.
    async fn commit_read_sync(&self, sync: ReadSync<'_>) -> Result<bool, QueueError> {
        let memories = self.memories().await;
        self.records
            .commit_synced(sync.access_key, sync.count, sync.read_syncs_key)
            .await?;
        if !memories.revision(sync.revision_key).settled() {
            return Ok(false);
        }
        if self.records.get(sync.record_key).await?.is_none() {
            return Ok(false);
        }
        self.records
            .set(sync.record_key, sync.record, sync.ttl)
            .await?;
        Ok(true)
    }

    async fn revision(&self, revision_key: &str) -> Result<Revision, QueueError> {
        Ok(self.memories().await.revision(revision_key))
    }

    async fn lock(&self, key: &str, owner: &str, lease: Duration) -> Result<bool, QueueError> {
        let mut memories = self.memories().await;
        let now = Instant::now();
        let free = match memories.leases.get(key) {
            Some((_, until)) => *until <= now,
            None => true,
        };
        if free {
            memories
                .leases
                .insert(key.to_string(), (owner.to_string(), now + lease));
        }
        Ok(free)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), QueueError> {
        let mut memories = self.memories().await;
        if memories
            .leases
            .get(key)
            .is_some_and(|(holder, _)| holder == owner)
        {
            memories.leases.remove(key);
        }
        Ok(())
    }

    async fn keep_alive(
        &self,
        consumer: &str,
        leases: &[(String, String)],
        lease: Duration,
    ) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut memories = self.memories().await;
        for (key, owner) in leases {
            if let Some((holder, until)) = memories.leases.get_mut(key) {
                if holder == owner {
                    *until = now + lease;
                }
            }
        }
        memories.leases.retain(|_, (_, until)| *until > now);
        self.state()
            .await
            .consumers
            .insert(consumer.to_string(), now);
        Ok(())
    }

    async fn consumers(&self, within: Duration) -> Result<u64, QueueError> {
        let state = self.state().await;
        Ok(state
            .consumers
            .values()
            .filter(|at| at.elapsed() <= within)
            .count() as u64)
    }

    fn stream(&self) -> &str {
        self.name
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let state = self.state().await;
        Ok(QueueStats {
            length: (state.ready.len() + state.pending.len()) as u64,
            pending: state.pending.len() as u64,
            dead: state.dead.len() as u64,
            dead_dropped: state.dead_dropped,
            oldest_age: state
                .queued_at
                .values()
                .next()
                .map(|queued| queued.elapsed()),
        })
    }
}
