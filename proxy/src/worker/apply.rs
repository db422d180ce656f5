//! Applying one queued write to the vector store; the record readers see next is the result.
//!
//! The layout decides what is stored: the enrichment (or its fallbacks) of a new memory, the
//! text that is embedded, how an update changes a memory, and how memories are associated.

use std::time::Instant;

use serde_json::Value;
use uuid::Uuid;

use super::leases::Leases;
use super::Worker;
use crate::backend::queue::{RecordWrite, WriteOp};
use crate::backend::vectors::{Condition, MemoryPoint, PayloadFilter, VectorQuery};
use crate::keys::Scope;
use crate::layout::{Enrichment, EnrichmentNeeds};
use crate::memory::{is_tombstone, tombstone, StoredMemory, UpdateRequest};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Embedding(#[from] crate::backend::embeddings::EmbeddingError),
    #[error(transparent)]
    Vectors(#[from] crate::backend::vectors::VectorError),
    #[error("memory {0} is not in the vector store (yet)")]
    Missing(Uuid),
    #[error("association discovery of {0} is not a write")]
    NotAWrite(Uuid),
    #[error(transparent)]
    Queue(#[from] crate::backend::queue::QueueError),
}

/// The fields of `after` that differ from `before` (the payload fields an update sets).
fn changed_fields(before: &StoredMemory, after: &StoredMemory) -> StoredMemory {
    after
        .iter()
        .filter(|(field, value)| before.get(field.as_str()) != Some(value))
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect()
}

/// `list` with `id` appended, cut to `cap` (a full list drops the new link, as cldmemory's
/// `[...list, id].slice(0, cap)` does); `None` when nothing changes.
fn with_link(list: Vec<String>, id: &str, cap: usize) -> Option<Vec<String>> {
    if list.iter().any(|existing| existing == id) {
        return None;
    }
    let mut linked = list.clone();
    linked.push(id.to_string());
    linked.truncate(cap);
    (linked != list).then_some(linked)
}

impl Worker {
    /// Applies `op`; returns the record readers see next and, for a stored create, the
    /// association discovery to queue.
    pub(super) async fn apply(
        &self,
        op: &WriteOp,
    ) -> Result<(RecordWrite, Option<WriteOp>), ApplyError> {
        let key = self.record_key(op.scope(), op.id());
        match op {
            WriteOp::Create {
                id,
                memory,
                needs_summary,
                needs_keywords,
                scope,
            } => {
                // A delete acknowledged after it is applied next: nothing to store.
                if self.is_deleted(&key).await {
                    return Ok((self.record(key, tombstone(*id)), None));
                }
                let needs = EnrichmentNeeds {
                    summary: *needs_summary,
                    keywords: *needs_keywords,
                };
                let mut memory = memory.clone();
                let enrichment = self.enrich(&memory, needs).await;
                self.layout.apply_enrichment(&mut memory, enrichment);
                let vector = self.embed(&memory).await?;
                let record = self.store(key.clone(), *id, memory, vector).await?;
                let associate = WriteOp::Associate {
                    id: *id,
                    scope: scope.clone(),
                };
                Ok((record, Some(associate)))
            }
            WriteOp::Update { id, update, .. } => Ok((self.update(key, *id, update).await?, None)),
            WriteOp::Delete { id, .. } => {
                self.vectors.delete(&[*id]).await?;
                // Its unsynced reads have nowhere to go any more.
                if let Err(error) = self.cache.delete(&self.keys.access(*id)).await {
                    tracing::warn!(%error, %id, "could not drop a deleted memory's read counts");
                }
                Ok((self.record(key, tombstone(*id)), None))
            }
            // Association jobs take leases of their own (see `associate`).
            WriteOp::Associate { id, .. } => Err(ApplyError::NotAWrite(*id)),
        }
    }

    /// Changes only what the update changes: the embedding is redone (with the layout's
    /// recipe) only when the embedded text changed; otherwise only the changed payload fields
    /// are set, and concurrent changes to other fields (read counts) survive.
    async fn update(
        &self,
        key: String,
        id: Uuid,
        update: &UpdateRequest,
    ) -> Result<RecordWrite, ApplyError> {
        let Some(stored) = self.vectors.retrieve(id).await? else {
            // Its delete is acknowledged and applied after it: the create may have stored
            // nothing (see `apply`), and there is nothing to change.
            if self.is_deleted(&key).await {
                return Ok(self.record(key, tombstone(id)));
            }
            return Err(ApplyError::Missing(id));
        };
        let mut memory = stored.clone();
        self.layout.apply_update(&mut memory, update);
        self.layout
            .stored_update(&mut memory, update, chrono::Utc::now());
        if self.layout.embedded_text(&memory) != self.layout.embedded_text(&stored) {
            let vector = self.embed(&memory).await?;
            return self.store(key, id, memory, vector).await;
        }
        let changed = changed_fields(&self.layout.payload(&stored), &self.layout.payload(&memory));
        if !changed.is_empty() {
            self.vectors.set_fields(id, changed).await?;
        }
        Ok(self.ready_record(key, memory))
    }

    /// Links a new memory with its nearest neighbours by the layout's rule, both ways: its
    /// own links under its lease, then each neighbour's under the neighbour's lease (one lease
    /// at a time, so two discoveries never wait on each other). Returns the memory's record and
    /// the revision it was made at; `None` when there is none to store (the memory is gone, or
    /// a write of it is pending, whose record will show the links). Neighbours' cached records
    /// are dropped (unless a write of theirs is pending) so they are read fresh.
    pub(super) async fn associate(
        &self,
        id: Uuid,
        scope: Option<&str>,
        leases: &Leases<'_>,
    ) -> Result<Option<(RecordWrite, u64)>, ApplyError> {
        let tenant = Scope::of(scope);
        let lock = self.keys.lock(id);
        leases.acquire(&lock).await;
        let own = self.link_own(id, scope).await;
        leases.release(&lock).await;
        let Some((memory, neighbours, revision)) = own? else {
            return Ok(None);
        };
        let rule = self.layout.association_rule();
        let own_id = id.to_string();
        for other in neighbours {
            let lock = self.keys.lock(other);
            leases.acquire(&lock).await;
            let added = self
                .add_link(&tenant, other, &own_id, rule.neighbour_cap)
                .await;
            leases.release(&lock).await;
            added?;
        }
        let Some(revision) = revision else {
            return Ok(None);
        };
        let key = self.keys.memory(&tenant, id);
        Ok(Some((self.ready_record(key, memory), revision)))
    }

    /// Under the memory's lease: finds its neighbours and stores its links. The memory (links
    /// stored), its neighbours' ids and the revision it is at (`None` while a write of it is
    /// pending); `None` when it is not in the vector store.
    async fn link_own(
        &self,
        id: Uuid,
        scope: Option<&str>,
    ) -> Result<Option<(StoredMemory, Vec<Uuid>, Option<u64>)>, ApplyError> {
        let tenant = Scope::of(scope);
        // Read under the lease, so no write is applied meanwhile; a write still pending makes
        // the record readers see, and it will show these links (it is made from the point).
        let revision = self
            .queue
            .revision(&self.keys.revision(&tenant, id))
            .await?;
        let revision = revision.settled().then_some(revision.applied);
        let Some(vector) = self.vectors.vector_of(id).await? else {
            return Ok(None);
        };
        let Some(mut memory) = self.vectors.retrieve(id).await? else {
            return Ok(None);
        };
        let rule = self.layout.association_rule();
        let threshold = self.layout.default_similarity_threshold();
        let query = VectorQuery {
            vector,
            filter: PayloadFilter::all(
                self.settings
                    .scope_field
                    .clone()
                    .zip(scope.map(str::to_string))
                    .map(|(field, value)| Condition::Equals { field, value })
                    .into_iter()
                    .collect(),
            ),
            limit: self.layout.search_fetch_limit(rule.candidates),
            score_threshold: Some(threshold),
            ef: self.settings.search_ef,
            exact: false,
        };
        let own = id.to_string();
        let neighbours: Vec<Uuid> = self
            .vectors
            .search(query)
            .await?
            .into_iter()
            .filter(|found| found.score >= threshold)
            .take(rule.candidates as usize)
            .filter_map(|found| {
                found
                    .memory
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .filter(|found| *found != own)
            .filter_map(|found| Uuid::parse_str(&found).ok())
            .take(rule.keep)
            .collect();
        if !neighbours.is_empty() {
            let linked = neighbours.iter().map(Uuid::to_string).collect();
            let fields = self
                .layout
                .linked_fields(&memory, linked, chrono::Utc::now());
            self.vectors.set_fields(id, fields.clone()).await?;
            memory.extend(fields);
        }
        Ok(Some((memory, neighbours, revision)))
    }

    /// Under the neighbour's lease: adds the link to `own` to its list (as it is now).
    async fn add_link(
        &self,
        tenant: &Scope,
        other: Uuid,
        own: &str,
        cap: usize,
    ) -> Result<(), ApplyError> {
        let Some(neighbour) = self.vectors.retrieve(other).await? else {
            return Ok(());
        };
        let theirs = self.layout.associations(&neighbour);
        if let Some(list) = with_link(theirs, own, cap) {
            let fields = self
                .layout
                .linked_fields(&neighbour, list, chrono::Utc::now());
            self.vectors.set_fields(other, fields).await?;
            let record = self.keys.memory(tenant, other);
            let revision = self.keys.revision(tenant, other);
            if let Err(error) = self.queue.forget_settled(&record, &revision).await {
                tracing::warn!(%error, %other, "could not drop a neighbour's cached record");
            }
        }
        Ok(())
    }

    fn record(&self, key: String, value: bytes::Bytes) -> RecordWrite {
        RecordWrite {
            key,
            value,
            ttl: self.settings.memory_ttl,
        }
    }

    /// The record of a stored memory: the memory with memgate's `status: ready`.
    pub(super) fn ready_record(&self, key: String, mut memory: StoredMemory) -> RecordWrite {
        memory.insert("status".into(), Value::String("ready".into()));
        memory.shift_remove("error");
        let body = serde_json::to_vec(&memory).unwrap_or_default();
        self.record(key, body.into())
    }

    async fn is_deleted(&self, key: &str) -> bool {
        matches!(self.cache.get(key).await, Ok(Some(record)) if is_tombstone(&record))
    }

    /// Summary, valence and keywords in parallel. A failure is the layout's to fall back on,
    /// never the job's: the legacy service stores its fallbacks too.
    async fn enrich(&self, memory: &StoredMemory, needs: EnrichmentNeeds) -> Enrichment {
        let content = memory
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let started = Instant::now();
        let (summary, valence, keywords) = tokio::join!(
            async {
                match needs.summary {
                    true => Some(self.enricher.summarize(content).await),
                    false => None,
                }
            },
            self.enricher.emotional_valence(content),
            async {
                match needs.keywords {
                    true => Some(self.enricher.keywords(content).await),
                    false => None,
                }
            },
        );
        for error in [
            summary.as_ref().and_then(|s| s.as_ref().err()),
            valence.as_ref().err(),
            keywords.as_ref().and_then(|k| k.as_ref().err()),
        ]
        .into_iter()
        .flatten()
        {
            tracing::warn!(%error, "enrichment failed; storing the fallback");
            self.metrics.worker.enrichment_fallbacks.inc();
        }
        self.metrics
            .worker
            .job_duration
            .with_label_values(&["enrich"])
            .observe(started.elapsed().as_secs_f64());
        Enrichment {
            summary,
            valence,
            keywords,
        }
    }

    /// The embedding of the memory's embedded text (the layout's recipe).
    async fn embed(&self, memory: &StoredMemory) -> Result<Vec<f32>, ApplyError> {
        let text = self.layout.embedded_text(memory);
        Ok(self.embeddings.embed(text).await?)
    }

    /// Upserts the memory's payload with its vector.
    async fn store(
        &self,
        key: String,
        id: Uuid,
        memory: StoredMemory,
        vector: Vec<f32>,
    ) -> Result<RecordWrite, ApplyError> {
        let started = Instant::now();
        self.vectors
            .upsert(vec![MemoryPoint {
                id,
                vector,
                memory: self.layout.payload(&memory),
            }])
            .await?;
        self.metrics
            .worker
            .job_duration
            .with_label_values(&["upsert"])
            .observe(started.elapsed().as_secs_f64());
        Ok(self.ready_record(key, memory))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_are_added_once_and_a_full_list_drops_the_new_one() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(with_link(ids(&["a"]), "b", 5), Some(ids(&["a", "b"])));
        assert_eq!(with_link(ids(&["a", "b"]), "b", 5), None);
        assert_eq!(with_link(ids(&["1", "2", "3", "4", "5"]), "b", 5), None);
    }

    #[test]
    fn only_changed_fields_are_set() {
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => unreachable!("objects"),
        };
        let before = object(json!({"id": "a", "importance": 0.5, "accessCount": 3}));
        let after = object(json!({"id": "a", "importance": 0.9, "accessCount": 3}));
        assert_eq!(
            Value::Object(changed_fields(&before, &after)),
            json!({"importance": 0.9})
        );
    }
}
