//! [`WriteQueue`] in this process, for `--embedded`: the same pipeline and the same guarantees
//! as with Redis (revisions, leases, ordered jobs), on one async mutex. Records go to the
//! in-process cache. Nothing survives a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Mutex, MutexGuard, Notify};
use uuid::Uuid;

use super::{
    Finish, Held, Job, QueueError, QueueStats, Revision, Submission, Submitted, WriteOp,
    WriteQueue, DEAD_LETTER_CAP,
};
use crate::cache::CacheStore;

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
    ready: VecDeque<Job>,
    pending: HashMap<String, Pending>,
    idempotency: HashMap<String, (Uuid, Instant)>,
    revisions: HashMap<String, Revision>,
    leases: HashMap<String, (String, Instant)>,
    consumers: HashMap<String, Instant>,
    dead: VecDeque<(Job, String)>,
    dead_dropped: u64,
}

impl State {
    fn push(&mut self, op: WriteOp, revision: Option<u64>) -> String {
        self.next_entry += 1;
        let entry = format!("{}-0", self.next_entry);
        self.ready.push_back(Job {
            entry: entry.clone(),
            op,
            revision,
            deliveries: 1,
        });
        entry
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
    state: Mutex<State>,
    arrived: Notify,
}

impl std::fmt::Debug for InProcessQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessQueue").finish_non_exhaustive()
    }
}

impl InProcessQueue {
    /// A queue storing records in `records`; finished jobs' follow-ups go to `follow_up`.
    pub fn new(
        name: &'static str,
        records: Arc<dyn CacheStore>,
        follow_up: Option<Arc<InProcessQueue>>,
    ) -> Self {
        Self {
            name,
            records,
            follow_up,
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
        }
    }

    async fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().await
    }

    /// The dead letters so far, with their errors.
    pub async fn dead_letters(&self) -> Vec<(Job, String)> {
        self.state().await.dead.iter().cloned().collect()
    }

    async fn push(&self, op: WriteOp) {
        self.state().await.push(op, None);
        self.arrived.notify_one();
    }
}

#[async_trait]
impl WriteQueue for InProcessQueue {
    async fn submit(&self, submission: Submission) -> Result<Submitted, QueueError> {
        let now = Instant::now();
        // Held while the record is stored: the revision check and the write are one step.
        let mut state = self.state().await;
        if let Some((key, ttl)) = &submission.idempotency {
            if let Some((id, at)) = state.idempotency.get(key) {
                if now.duration_since(*at) < *ttl {
                    return Ok(Submitted::Replayed { id: *id });
                }
            }
        }
        let current = state
            .revisions
            .get(&submission.revision_key)
            .copied()
            .unwrap_or_default();
        if let Some(expected) = submission.expected_revision {
            if current.acknowledged != expected {
                return Ok(Submitted::Conflict {
                    revision: current.acknowledged,
                });
            }
        }
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
        let revision = current.acknowledged + 1;
        state.revisions.insert(
            submission.revision_key,
            Revision {
                acknowledged: revision,
                ..current
            },
        );
        let entry = state.push(submission.op, Some(revision));
        drop(state);
        self.arrived.notify_one();
        Ok(Submitted::Queued { entry, revision })
    }

    async fn prepare(&self) -> Result<(), QueueError> {
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
    ) -> Result<Vec<Job>, QueueError> {
        let mut state = self.state().await;
        let now = Instant::now();
        let mut claimed = Vec::new();
        for pending in state.pending.values_mut() {
            if claimed.len() == max {
                break;
            }
            if now.duration_since(pending.since) >= min_idle {
                pending.owner = consumer.to_string();
                pending.since = now;
                pending.job.deliveries += 1;
                claimed.push(pending.job.clone());
            }
        }
        Ok(claimed)
    }

    async fn finish(&self, job: &Job, finish: Finish) -> Result<(), QueueError> {
        let mut state = self.state().await;
        let mut revision = state
            .revisions
            .get(&finish.revision_key)
            .copied()
            .unwrap_or_default();
        if let Some(applied) = finish.applied {
            revision.applied = revision.applied.max(applied);
            state
                .revisions
                .insert(finish.revision_key.clone(), revision);
        }
        let settled = revision.settled();
        let current = finish
            .record_if_revision
            .is_none_or(|expected| expected == revision.acknowledged);
        if let Some(record) = finish.record.filter(|_| settled && current) {
            self.records
                .set(&record.key, record.value, record.ttl)
                .await?;
        }
        if settled {
            state.revisions.remove(&finish.revision_key);
        }
        self.records.increment(&finish.generation_key).await?;
        state.pending.remove(&job.entry);
        if let Some(error) = finish.dead_letter {
            state.dead.push_back((job.clone(), error));
            if state.dead.len() as u64 > DEAD_LETTER_CAP {
                state.dead.pop_front();
                state.dead_dropped += 1;
            }
        }
        drop(state);
        if let (Some(queue), Some(op)) = (&self.follow_up, finish.follow_up) {
            queue.push(op).await;
        }
        Ok(())
    }

    async fn read_versioned(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<(Option<Bytes>, u64), QueueError> {
        let state = self.state().await;
        let record = self.records.get(record_key).await?;
        let revision = state
            .revisions
            .get(revision_key)
            .map(|revision| revision.acknowledged)
            .unwrap_or(0);
        Ok((record, revision))
    }

    async fn forget_settled(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<bool, QueueError> {
        let state = self.state().await;
        let pending = state
            .revisions
            .get(revision_key)
            .is_some_and(|revision| !revision.settled());
        if pending {
            return Ok(false);
        }
        self.records.delete(record_key).await?;
        Ok(true)
    }

    async fn revision(&self, revision_key: &str) -> Result<Revision, QueueError> {
        Ok(self
            .state()
            .await
            .revisions
            .get(revision_key)
            .copied()
            .unwrap_or_default())
    }

    async fn lock(&self, key: &str, owner: &str, lease: Duration) -> Result<bool, QueueError> {
        let mut state = self.state().await;
        let now = Instant::now();
        let free = match state.leases.get(key) {
            Some((_, until)) => *until <= now,
            None => true,
        };
        if free {
            state
                .leases
                .insert(key.to_string(), (owner.to_string(), now + lease));
        }
        Ok(free)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), QueueError> {
        let mut state = self.state().await;
        if state
            .leases
            .get(key)
            .is_some_and(|(holder, _)| holder == owner)
        {
            state.leases.remove(key);
        }
        Ok(())
    }

    async fn keep_alive(
        &self,
        consumer: &str,
        held: &[Held],
        lease: Duration,
    ) -> Result<(), QueueError> {
        let mut state = self.state().await;
        let now = Instant::now();
        state.consumers.insert(consumer.to_string(), now);
        for entry in held {
            if let Some(pending) = state.pending.get_mut(&entry.entry) {
                if pending.owner == consumer {
                    pending.since = now;
                }
            }
            if let Some((key, owner)) = &entry.lock {
                if let Some((holder, until)) = state.leases.get_mut(key) {
                    if holder == owner {
                        *until = now + lease;
                    }
                }
            }
        }
        state.leases.retain(|_, (_, until)| *until > now);
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
        })
    }
}
