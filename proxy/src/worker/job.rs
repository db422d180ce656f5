//! One job's life: its turn (every earlier write to the memory applied), the memory's lease,
//! the attempts (counting the times the stream handed it out before), and the finish.

use std::time::Instant;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Semaphore;

use super::apply::ApplyError;
use super::flight::InFlight;
use super::leases::Leases;
use super::Worker;
use crate::backend::queue::{Finish, Finished, Job, RecordWrite, WriteOp};
use crate::keys::Scope;

/// Whether a job's write is to be applied now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Apply,
    /// A later job of the memory was applied already: this one was too (handed out twice).
    AlreadyApplied,
}

impl Worker {
    /// Applies one job in its memory's order, then finishes it (ready, or dead-lettered).
    pub(super) async fn process(
        &self,
        job: Job,
        consumer: &str,
        flight: &InFlight,
        slots: &Semaphore,
    ) {
        let started = Instant::now();
        let leases = Leases {
            worker: self,
            flight,
            entry: &job.entry,
            owner: format!("{consumer}/{}", job.entry),
        };
        match &job.op {
            WriteOp::Associate { .. } => {
                let finish = self.process_association(&job, &leases, slots).await;
                self.close(&job, finish, started).await;
            }
            _ => self.process_write(&job, &leases, slots, started).await,
        }
    }

    /// Applies a write under its memory's lease, held until the finish is stored: the next
    /// write to the memory starts only once this one is recorded as applied.
    async fn process_write(
        &self,
        job: &Job,
        leases: &Leases<'_>,
        slots: &Semaphore,
        started: Instant,
    ) {
        let id = job.op.id();
        tracing::debug!(
            %id,
            entry = %job.entry,
            revision = ?job.revision,
            kind = job.op.kind(),
            deliveries = job.deliveries,
            "write job started"
        );
        let revision_key = self.keys.revision(&Scope::of(job.op.scope()), id);
        if let Some(revision) = job.revision {
            if self.wait_turn(&revision_key, revision).await == Turn::AlreadyApplied {
                tracing::debug!(%id, entry = %job.entry, "write job already applied");
                let finish = self.acknowledge_only(job, revision_key);
                return self.close(job, finish, started).await;
            }
        }
        let lock = self.keys.lock(id);
        leases.acquire(&lock).await;
        // Under the lease nobody else applies this memory's writes: look once more.
        let turn = match job.revision {
            Some(revision) => self.turn_now(&revision_key, revision).await,
            None => Turn::Apply,
        };
        tracing::debug!(
            %id,
            entry = %job.entry,
            apply = (turn == Turn::Apply),
            "write job holds its memory's lease"
        );
        let finish = match turn {
            Turn::AlreadyApplied => self.acknowledge_only(job, revision_key.clone()),
            Turn::Apply => {
                let _slot = slots.acquire().await;
                // Its turn, its memory's lease and a slot: the time it spent waiting for them.
                self.metrics
                    .worker
                    .job_duration
                    .with_label_values(&["wait"])
                    .observe(started.elapsed().as_secs_f64());
                match self.with_retries(job, || self.apply(&job.op)).await {
                    Ok((record, follow_up)) => Finish {
                        record: Some(record),
                        applied: job.revision,
                        follow_up,
                        ..self.acknowledge_only(job, revision_key.clone())
                    },
                    Err(error) => {
                        let failed = self.failed_record(job, &error).await;
                        Finish {
                            record: Some(failed),
                            applied: job.revision,
                            dead_letter: Some(error),
                            ..self.acknowledge_only(job, revision_key.clone())
                        }
                    }
                }
            }
        };
        let finish = Finish {
            lease: Some((lock.clone(), leases.owner.clone(), self.settings.claim_idle)),
            ..finish
        };
        tracing::debug!(
            %id,
            entry = %job.entry,
            dead_lettered = finish.dead_letter.is_some(),
            "write job done"
        );
        self.close(job, finish, started).await;
        leases.release(&lock).await;
        self.turns.finished(&revision_key);
    }

    async fn process_association(
        &self,
        job: &Job,
        leases: &Leases<'_>,
        slots: &Semaphore,
    ) -> Finish {
        let WriteOp::Associate { id, scope } = &job.op else {
            return self.acknowledge_only(job, String::new());
        };
        let revision_key = self.keys.revision(&Scope::of(scope.as_deref()), *id);
        let _slot = slots.acquire().await;
        let linked = self
            .with_retries(job, || self.associate(*id, scope.as_deref(), leases))
            .await;
        match linked {
            Ok(Some((record, revision))) => Finish {
                record: Some(record),
                record_if_revision: Some(revision),
                ..self.acknowledge_only(job, revision_key)
            },
            Ok(None) => self.acknowledge_only(job, revision_key),
            Err(error) => Finish {
                dead_letter: Some(error),
                ..self.acknowledge_only(job, revision_key)
            },
        }
    }

    /// A finish that only acknowledges the entry (and moves its scope's search generation).
    fn acknowledge_only(&self, job: &Job, revision_key: String) -> Finish {
        Finish {
            record: None,
            record_if_revision: None,
            revision_key,
            applied: None,
            generation_key: self
                .keys
                .scope_search_generation(&Scope::of(job.op.scope())),
            dead_letter: None,
            follow_up: None,
            lease: None,
        }
    }

    /// Waits until every write to the memory acknowledged before `revision` is applied, at
    /// most `worker.orderWait` (then it goes ahead, loudly: the earlier write was lost).
    async fn wait_turn(&self, revision_key: &str, revision: u64) -> Turn {
        let woken = self.turns.watch(revision_key);
        let turn = self.wait_turn_woken(revision_key, revision, &woken).await;
        self.turns.unwatch(revision_key, woken);
        turn
    }

    async fn wait_turn_woken(
        &self,
        revision_key: &str,
        revision: u64,
        woken: &tokio::sync::Notify,
    ) -> Turn {
        let mut deadline = tokio::time::Instant::now() + self.settings.order_wait;
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(2))
            .with_max_delay(std::time::Duration::from_millis(50))
            .without_max_times()
            .build();
        let mut waited = false;
        loop {
            let pause = pauses
                .next()
                .unwrap_or(std::time::Duration::from_millis(50));
            // Listening before looking: a finish right after the look still wakes it.
            let finished_here = woken.notified();
            tokio::pin!(finished_here);
            finished_here.as_mut().enable();
            match self.queue.revision(revision_key).await {
                Ok(current) if current.applied >= revision => return Turn::AlreadyApplied,
                Ok(current) if current.applied + 1 >= revision => {
                    if waited {
                        self.metrics
                            .worker
                            .ordered_waits
                            .with_label_values(&["waited"])
                            .inc();
                    }
                    return Turn::Apply;
                }
                Ok(current) if tokio::time::Instant::now() >= deadline => {
                    tracing::error!(
                        revision_key, revision, applied = current.applied,
                        "earlier writes to this memory were not applied within worker.orderWait; applying this one anyway"
                    );
                    self.metrics
                        .worker
                        .ordered_waits
                        .with_label_values(&["gave_up"])
                        .inc();
                    return Turn::Apply;
                }
                Ok(_) => waited = true,
                Err(error) => {
                    // Time without an answer does not count against the earlier writes.
                    deadline += pause;
                    tracing::warn!(%error, "could not read a memory's revisions");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = finished_here => {}
            }
        }
    }

    /// [`Worker::wait_turn`] once the memory's lease is held: whether it was applied meanwhile.
    async fn turn_now(&self, revision_key: &str, revision: u64) -> Turn {
        loop {
            match self.queue.revision(revision_key).await {
                Ok(current) if current.applied >= revision => return Turn::AlreadyApplied,
                Ok(_) => return Turn::Apply,
                Err(error) => {
                    tracing::warn!(%error, "could not read a memory's revisions");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Runs `attempt` until it succeeds or the job's tries are used up, counting the times the
    /// stream handed the job out before (a job that keeps killing its worker is not retried
    /// forever); waits between tries grow, capped and jittered. The error of the last try.
    async fn with_retries<T, F, Fut>(&self, job: &Job, mut attempt: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApplyError>>,
    {
        let kind = job.op.kind();
        let earlier = u32::try_from(job.deliveries.saturating_sub(1)).unwrap_or(u32::MAX);
        let tries = self.settings.max_attempts.saturating_sub(earlier);
        if tries == 0 {
            return Err(format!(
                "handed to a worker {} times without being finished",
                job.deliveries
            ));
        }
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_backoff)
            .with_max_delay(self.settings.max_retry_backoff)
            .with_jitter()
            .with_max_times(tries as usize - 1)
            .build();
        let mut number = 1;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => match delays.next() {
                    Some(delay) => {
                        tracing::warn!(%error, entry = %job.entry, attempt = number, ?delay, "write job failed; retrying");
                        self.metrics
                            .worker
                            .jobs
                            .with_label_values(&[kind, "retried"])
                            .inc();
                        tokio::time::sleep(delay).await;
                        number += 1;
                    }
                    None => {
                        tracing::error!(%error, entry = %job.entry, attempt = number, "write job failed for good; dead-lettered");
                        return Err(error.to_string());
                    }
                },
            }
        }
    }

    /// Stores the finish; the entry stays pending (and is claimed again later) if even this
    /// fails.
    async fn close(&self, job: &Job, finish: Finish, started: Instant) {
        let kind = job.op.kind();
        let outcome = if finish.dead_letter.is_some() {
            "dead"
        } else {
            "done"
        };
        for attempt in 1..=3u64 {
            match self.queue.finish(job, finish.clone()).await {
                Ok(Finished::LeaseLost) => {
                    tracing::warn!(entry = %job.entry, "this job stalled past its lease and another took the memory over; it is left to be applied again");
                    self.metrics
                        .worker
                        .jobs
                        .with_label_values(&[kind, "lease_lost"])
                        .inc();
                    return;
                }
                Ok(Finished::Stored) => {
                    self.metrics
                        .worker
                        .jobs
                        .with_label_values(&[kind, outcome])
                        .inc();
                    self.metrics
                        .worker
                        .job_duration
                        .with_label_values(&["total"])
                        .observe(started.elapsed().as_secs_f64());
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, entry = %job.entry, attempt, "could not finish a write job");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        self.metrics
            .worker
            .jobs
            .with_label_values(&[kind, "unfinished"])
            .inc();
    }

    /// The record of a job that failed for good: what readers had, `status: failed`, the reason.
    async fn failed_record(&self, job: &Job, error: &str) -> RecordWrite {
        let key = self.record_key(job.op.scope(), job.op.id());
        let mut memory = match &job.op {
            WriteOp::Create { memory, .. } => memory.clone(),
            _ => match self.cache.get(&key).await {
                Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
                _ => Default::default(),
            },
        };
        memory.insert(
            "id".into(),
            serde_json::Value::String(job.op.id().to_string()),
        );
        memory.insert("status".into(), serde_json::Value::String("failed".into()));
        memory.insert("error".into(), serde_json::Value::String(error.to_string()));
        RecordWrite {
            key,
            value: serde_json::to_vec(&memory).unwrap_or_default().into(),
            ttl: self.settings.memory_ttl,
        }
    }
}
