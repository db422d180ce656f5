//! Applying one queued write to the vector store; the record readers see next is the result.

use std::time::Instant;

use serde_json::Value;
use uuid::Uuid;

use super::Worker;
use crate::keys::Scope;
use crate::memory::{is_tombstone, merge_tags, tombstone, StoredMemory};
use crate::queue::{RecordWrite, WriteOp};
use crate::vectors::{MemoryFilter, MemoryPoint, ScoredMemory, VectorQuery};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Enrichment(#[from] crate::enrichment::EnrichmentError),
    #[error(transparent)]
    Embedding(#[from] crate::embeddings::EmbeddingError),
    #[error(transparent)]
    Vectors(#[from] crate::vectors::VectorError),
    #[error("memory {0} is not in the vector store (yet)")]
    Missing(Uuid),
    #[error("memory {0} has no content")]
    NoContent(Uuid),
}

/// `{"associations": [...]}` with `other` added to `existing` (never `own`, never twice).
fn with_association(existing: Option<&Value>, own: Uuid, other: Uuid) -> StoredMemory {
    let mut ids: Vec<Value> = existing
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let other_value = Value::String(other.to_string());
    if other != own && !ids.contains(&other_value) {
        ids.push(other_value);
    }
    let mut fields = StoredMemory::new();
    fields.insert("associations".into(), Value::Array(ids));
    fields
}

impl Worker {
    /// Applies `op`; returns the record readers see next and, for a stored create or content
    /// change, the association discovery to queue.
    pub(super) async fn apply(
        &self,
        op: &WriteOp,
    ) -> Result<(RecordWrite, Option<WriteOp>), ApplyError> {
        let key = self.record_key(op.scope(), op.id());
        let associate = WriteOp::Associate {
            id: op.id(),
            scope: op.scope().map(str::to_string),
        };
        match op {
            WriteOp::Create {
                id,
                memory,
                summary_given,
                valence_given,
                ..
            } => {
                if self.is_deleted(&key).await {
                    return Ok((self.record(key, tombstone(*id)), None));
                }
                let (memory, vector) = self
                    .enrich(*id, memory.clone(), !summary_given, !valence_given, true)
                    .await?;
                Ok((
                    self.store(key, *id, memory, Some(vector)).await?,
                    Some(associate),
                ))
            }
            WriteOp::Update { id, patch, .. } => {
                let mut memory = self
                    .vectors
                    .retrieve(*id)
                    .await?
                    .ok_or(ApplyError::Missing(*id))?;
                let content_changed = patch
                    .get("content")
                    .is_some_and(|c| Some(c) != memory.get("content"));
                for (field, value) in patch {
                    memory.insert(field.clone(), value.clone());
                }
                if content_changed {
                    let summary = !patch.contains_key("summary");
                    let valence = !patch.contains_key("emotionalValence");
                    let keywords = !patch.contains_key("tags");
                    let (memory, vector) =
                        self.enrich(*id, memory, summary, valence, keywords).await?;
                    Ok((
                        self.store(key, *id, memory, Some(vector)).await?,
                        Some(associate),
                    ))
                } else {
                    Ok((self.store(key, *id, memory, None).await?, None))
                }
            }
            WriteOp::Delete { id, .. } => {
                self.vectors.delete(&[*id]).await?;
                Ok((self.record(key, tombstone(*id)), None))
            }
            WriteOp::Associate { id, scope } => {
                Ok((self.associate(key, *id, scope.as_deref()).await?, None))
            }
        }
    }

    /// Links a memory with its nearest neighbours (same tenant, above the threshold), both
    /// ways. Neighbours' cached records are dropped so they are read fresh.
    async fn associate(
        &self,
        key: String,
        id: Uuid,
        scope: Option<&str>,
    ) -> Result<RecordWrite, ApplyError> {
        let Some(vector) = self.vectors.vector_of(id).await? else {
            return Ok(self.record(key, tombstone(id)));
        };
        let mut memory = self
            .vectors
            .retrieve(id)
            .await?
            .ok_or(ApplyError::Missing(id))?;
        let query = VectorQuery {
            vector,
            filter: MemoryFilter {
                scope: self
                    .settings
                    .scope_field
                    .clone()
                    .zip(scope.map(str::to_string)),
                ..Default::default()
            },
            limit: self.settings.max_associations + 1,
            score_threshold: Some(self.settings.association_threshold),
            ef: self.settings.search_ef,
        };
        let neighbours: Vec<ScoredMemory> = self
            .vectors
            .search(query)
            .await?
            .into_iter()
            .filter(|found| {
                found.memory.get("id").and_then(Value::as_str) != Some(id.to_string().as_str())
            })
            .take(usize::try_from(self.settings.max_associations).unwrap_or(usize::MAX))
            .collect();
        let scope = scope.map(Scope::tenant).unwrap_or(Scope::UNSCOPED);
        let mut linked = Vec::new();
        for neighbour in neighbours {
            let Some(other) = neighbour
                .memory
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
            else {
                continue;
            };
            let theirs = with_association(neighbour.memory.get("associations"), other, id);
            self.vectors.set_fields(other, theirs).await?;
            if let Err(error) = self.cache.delete(&self.keys.memory(&scope, other)).await {
                tracing::warn!(%error, %other, "could not drop a neighbour's cached record");
            }
            linked.push(other);
        }
        let mut ours = memory.get("associations").cloned();
        for other in &linked {
            let fields = with_association(ours.as_ref(), id, *other);
            ours = fields.get("associations").cloned();
        }
        if let Some(associations) = ours {
            let mut fields = StoredMemory::new();
            fields.insert("associations".into(), associations.clone());
            self.vectors.set_fields(id, fields).await?;
            memory.insert("associations".into(), associations);
        }
        let body = serde_json::to_vec(&memory).unwrap_or_default();
        Ok(self.record(key, body.into()))
    }

    fn record(&self, key: String, value: bytes::Bytes) -> RecordWrite {
        RecordWrite {
            key,
            value,
            ttl: self.settings.memory_ttl,
        }
    }

    async fn is_deleted(&self, key: &str) -> bool {
        matches!(self.cache.get(key).await, Ok(Some(record)) if is_tombstone(&record))
    }

    /// Enrichment and embedding in parallel; fills the fields asked for.
    async fn enrich(
        &self,
        id: Uuid,
        mut memory: StoredMemory,
        summary: bool,
        valence: bool,
        keywords: bool,
    ) -> Result<(StoredMemory, Vec<f32>), ApplyError> {
        let content = memory
            .get("content")
            .and_then(Value::as_str)
            .ok_or(ApplyError::NoContent(id))?
            .to_string();
        let started = Instant::now();
        let (new_summary, new_valence, new_keywords, vector) = tokio::try_join!(
            async {
                match summary {
                    true => self
                        .enricher
                        .summarize(&content)
                        .await
                        .map(Some)
                        .map_err(ApplyError::from),
                    false => Ok(None),
                }
            },
            async {
                match valence {
                    true => self
                        .enricher
                        .emotional_valence(&content)
                        .await
                        .map(Some)
                        .map_err(ApplyError::from),
                    false => Ok(None),
                }
            },
            async {
                match keywords {
                    true => self
                        .enricher
                        .keywords(&content)
                        .await
                        .map(Some)
                        .map_err(ApplyError::from),
                    false => Ok(None),
                }
            },
            async {
                self.embeddings
                    .embed(content.clone())
                    .await
                    .map_err(ApplyError::from)
            },
        )?;
        self.metrics
            .job_duration
            .with_label_values(&["enrich"])
            .observe(started.elapsed().as_secs_f64());
        if let Some(summary) = new_summary {
            memory.insert("summary".into(), Value::String(summary));
        }
        if let Some(valence) = new_valence {
            memory.insert("emotionalValence".into(), Value::from(valence));
        }
        if let Some(keywords) = new_keywords {
            let tags = merge_tags(memory.get("tags"), keywords);
            memory.insert("tags".into(), tags);
        }
        Ok((memory, vector))
    }

    /// Upserts the memory with its vector (embedding the content when none is given: a point
    /// cannot be written without one).
    async fn store(
        &self,
        key: String,
        id: Uuid,
        mut memory: StoredMemory,
        vector: Option<Vec<f32>>,
    ) -> Result<RecordWrite, ApplyError> {
        let vector = match vector {
            Some(vector) => vector,
            None => {
                let content = memory
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or(ApplyError::NoContent(id))?;
                self.embeddings.embed(content.to_string()).await?
            }
        };
        memory.insert("id".into(), Value::String(id.to_string()));
        memory.insert("status".into(), Value::String("ready".into()));
        memory.remove("error");
        let started = Instant::now();
        self.vectors
            .upsert(vec![MemoryPoint {
                id,
                vector,
                memory: memory.clone(),
            }])
            .await?;
        self.metrics
            .job_duration
            .with_label_values(&["upsert"])
            .observe(started.elapsed().as_secs_f64());
        let body = serde_json::to_vec(&memory).unwrap_or_default();
        Ok(self.record(key, body.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associations_are_added_once_and_never_to_oneself() {
        let own = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let once = with_association(None, own, other);
        let twice = with_association(once.get("associations"), own, other);
        assert_eq!(
            twice["associations"],
            serde_json::json!([other.to_string()])
        );
        let itself = with_association(None, own, own);
        assert_eq!(itself["associations"], serde_json::json!([]));
    }

    #[test]
    fn tags_keep_the_users_first() {
        let given = serde_json::json!(["travel", "paris"]);
        let merged = merge_tags(Some(&given), vec!["paris".into(), "coffee".into()]);
        assert_eq!(merged, serde_json::json!(["travel", "paris", "coffee"]));
    }
}
