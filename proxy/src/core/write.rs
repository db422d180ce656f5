//! Writes, acknowledged at once: the record readers will see (the memory as the layout shapes
//! it, `status: processing`, or a tombstone) and the queue entry are stored in one atomic step
//! ([`WriteQueue::submit`]); a worker does the enrichment and the vector store write.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;
use uuid::Uuid;

use super::error::{cache_full, internal, unavailable, unconfirmed, MAX_WRITE_CONFLICTS};
use super::{Core, CoreError};
use crate::backend::queue::{RecordWrite, Submission, Submitted, WriteOp};
use crate::backend::BackendError;
use crate::keys::Scope;
use crate::memory::{
    is_tombstone, tombstone, MemoryStatus, StoreRequest, StoredMemory, UpdateRequest,
};

/// A new memory, acknowledged: stored for readers and queued for the workers.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub id: Uuid,
    /// The memory as stored now (without memgate's bookkeeping); `None` when an
    /// `Idempotency-Key` replayed an earlier create.
    pub memory: Option<StoredMemory>,
}

/// A memory with memgate's `status`, as its record in the cache holds it.
fn with_status(mut memory: StoredMemory, status: MemoryStatus) -> StoredMemory {
    let status = serde_json::to_value(status).unwrap_or(Value::Null);
    memory.insert("status".into(), status);
    memory
}

/// A record readers see at once, as the cache store keeps it.
fn record_of(memory: StoredMemory) -> Result<Bytes, CoreError> {
    let record = with_status(memory, MemoryStatus::Processing);
    Ok(Bytes::from(serde_json::to_vec(&record).map_err(internal)?))
}

impl Core {
    /// Stores the record and the queue entry atomically.
    async fn submit(&self, submission: Submission) -> Result<Submitted, CoreError> {
        let started = std::time::Instant::now();
        // A full Redis answered (its breaker stays closed: `QueueError::is_answer`).
        let submitted = self
            .queue
            .submit(submission)
            .await
            .map_err(|error| match error {
                error if error.is_out_of_memory() => cache_full(error),
                // The script may have run and only its answer been lost: neither stored nor
                // refused for sure. A retry with the same Idempotency-Key settles it.
                error if error.timed_out() || error.outcome_unknown() => unconfirmed(error),
                error => unavailable("the write queue", error),
            })?;
        self.metrics
            .core
            .write_ack
            .observe(started.elapsed().as_secs_f64());
        Ok(submitted)
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
    ) -> Result<Stored, CoreError> {
        request.validate()?;
        let id = Uuid::new_v4();
        let needs = self.layout.enrichment_needs(&request);
        let mut memory = self
            .layout
            .new_memory(id, &request, client_metadata, Utc::now());
        if let (Some(field), Some(tenant)) = (&self.settings.scope_field, scope.value()) {
            memory.insert(field.clone(), Value::String(tenant.to_string()));
        }
        let record = record_of(memory.clone())?;
        let shown = self.layout.payload(&memory);
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
                memory: Some(shown),
            }),
            Submitted::Replayed { id } => Ok(Stored { id, memory: None }),
        }
    }

    /// Applies an update for readers at once and queues it for the vector store (re-embedded
    /// when the embedded text changed); the memory as it now reads (without memgate's
    /// bookkeeping). The update is made on the memory as last acknowledged: if another write
    /// comes in between, it is made again on that one, so concurrent updates all apply.
    pub async fn change(
        &self,
        scope: &Scope,
        id: Uuid,
        request: UpdateRequest,
    ) -> Result<StoredMemory, CoreError> {
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
            let submission = Submission {
                op: WriteOp::Update {
                    id,
                    scope: scope.value().map(str::to_string),
                    update: request.clone(),
                },
                record: RecordWrite {
                    key: key.clone(),
                    value: record_of(memory)?,
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
                    self.metrics.core.write_conflicts.inc();
                    // Jittered, so writers that collided do not collide again.
                    match pauses.next() {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => return Err(CoreError::Conflict(id)),
                    }
                }
                Submitted::Queued { .. } | Submitted::Replayed { .. } => {
                    self.l1.forget(&key).await;
                    return Ok(updated);
                }
            }
        }
    }

    /// The memory as last acknowledged, and its revision. A cache that cannot answer is
    /// [`CoreError::Unavailable`]: an update made on a stale copy could undo a newer write.
    async fn current_versioned(
        &self,
        scope: &Scope,
        id: Uuid,
    ) -> Result<(StoredMemory, u64), CoreError> {
        let key = self.keys.memory(scope, id);
        self.l1.settled(&key).await;
        let revision_key = self.keys.revision(scope, id);
        let (record, revision) = self
            .queue
            .read_versioned(&key, &revision_key)
            .await
            .map_err(|e| unavailable("the write queue", e))?;
        if let Some(body) = record {
            if is_tombstone(&body) {
                return Err(CoreError::NotFound(id));
            }
            if let Ok(memory) = serde_json::from_slice::<StoredMemory>(&body) {
                return Ok((memory, revision));
            }
        }
        let memory = self
            .stored(scope, id)
            .await?
            .ok_or(CoreError::NotFound(id))?;
        Ok((memory, revision))
    }

    /// A memory as its writes left it (the cache store's record, else the vector store), for
    /// following a write: not a read, so no read is counted.
    pub async fn written(&self, scope: &Scope, id: Uuid) -> Result<StoredMemory, CoreError> {
        self.current_versioned(scope, id)
            .await
            .map(|(memory, _)| memory)
    }

    /// Deletes a memory: gone from reads at once (a tombstone record, and cached searches are
    /// retired); a worker removes the point.
    pub async fn delete(&self, scope: &Scope, id: Uuid) -> Result<(), CoreError> {
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
        self.l1.forget(&key).await;
        Ok(())
    }
}
