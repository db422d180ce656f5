//! [`WriteQueue`] in this process, for `--embedded`: the same pipeline as with Redis, on a
//! mutex-guarded queue. Records go to the in-process cache. Nothing survives a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Finish, Job, QueueError, QueueStats, Submission, Submitted, WriteQueue};
use crate::cache::CacheStore;

#[derive(Default)]
struct State {
    next_entry: u64,
    ready: VecDeque<Job>,
    pending: HashMap<String, (Job, String, Instant)>,
    idempotency: HashMap<String, (Uuid, Instant)>,
    dead: Vec<(Job, String)>,
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

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The dead letters so far, with their errors.
    pub fn dead_letters(&self) -> Vec<(Job, String)> {
        self.state().dead.clone()
    }

    fn push(&self, op: super::WriteOp) -> String {
        let entry = {
            let mut state = self.state();
            state.next_entry += 1;
            let entry = format!("{}-0", state.next_entry);
            state.ready.push_back(Job {
                entry: entry.clone(),
                op,
            });
            entry
        };
        self.arrived.notify_one();
        entry
    }

    fn take_ready(&self, consumer: &str, max: usize) -> Vec<Job> {
        let mut state = self.state();
        let count = max.min(state.ready.len());
        let jobs: Vec<Job> = state.ready.drain(..count).collect();
        for job in &jobs {
            state.pending.insert(
                job.entry.clone(),
                (job.clone(), consumer.to_string(), Instant::now()),
            );
        }
        jobs
    }
}

#[async_trait]
impl WriteQueue for InProcessQueue {
    async fn submit(&self, submission: Submission) -> Result<Submitted, QueueError> {
        let now = Instant::now();
        let entry = {
            let mut state = self.state();
            if let Some((key, ttl)) = &submission.idempotency {
                if let Some((id, at)) = state.idempotency.get(key) {
                    if now.duration_since(*at) < *ttl {
                        return Ok(Submitted::Replayed { id: *id });
                    }
                }
                state
                    .idempotency
                    .insert(key.clone(), (submission.op.id(), now));
            }
            state.next_entry += 1;
            let entry = format!("{}-0", state.next_entry);
            state.ready.push_back(Job {
                entry: entry.clone(),
                op: submission.op,
            });
            entry
        };
        // The lock is released before awaiting; the record lands before the answer goes out.
        let record = submission.record;
        self.records
            .set(&record.key, record.value, record.ttl)
            .await?;
        if submission.bump_generation {
            self.records.increment(&submission.generation_key).await?;
        }
        self.arrived.notify_one();
        Ok(Submitted::Queued { entry })
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
        let jobs = self.take_ready(consumer, max);
        if !jobs.is_empty() {
            return Ok(jobs);
        }
        let _ = tokio::time::timeout(wait, self.arrived.notified()).await;
        Ok(self.take_ready(consumer, max))
    }

    async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<Job>, QueueError> {
        let mut state = self.state();
        let now = Instant::now();
        let mut claimed = Vec::new();
        for (job, owner, since) in state.pending.values_mut() {
            if claimed.len() == max {
                break;
            }
            if now.duration_since(*since) >= min_idle {
                *owner = consumer.to_string();
                *since = now;
                claimed.push(job.clone());
            }
        }
        Ok(claimed)
    }

    async fn finish(&self, job: &Job, finish: Finish) -> Result<(), QueueError> {
        let record = finish.record;
        self.records
            .set(&record.key, record.value, record.ttl)
            .await?;
        self.records.increment(&finish.generation_key).await?;
        {
            let mut state = self.state();
            state.pending.remove(&job.entry);
            if let Some(error) = finish.dead_letter {
                state.dead.push((job.clone(), error));
            }
        }
        if let (Some(queue), Some(op)) = (&self.follow_up, finish.follow_up) {
            queue.push(op);
        }
        Ok(())
    }

    fn stream(&self) -> &str {
        self.name
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let state = self.state();
        Ok(QueueStats {
            length: (state.ready.len() + state.pending.len()) as u64,
            pending: state.pending.len() as u64,
            dead: state.dead.len() as u64,
        })
    }
}
