//! Searching: the result cache, else the layout's query text embedded (through the embedding
//! cache) and searched for in the vector store with the tenant's filters, cut by the layout's
//! rules (threshold, limit); a blank query lists by the filters. What the vector store found
//! is shown as readers must see it (writes acknowledged and not yet applied), shaped
//! ([`super::shape`]) and counted ([`super::counts`]).

use serde_json::Value;
use uuid::Uuid;

use super::error::{internal, unavailable};
use super::search_cache::Lookup;
use super::{row_id, Answer, Core, CoreError, Degraded, Reads};
use crate::backend::vectors::VectorQuery;
use crate::backend::BackendError;
use crate::keys::Scope;
use crate::memory::{is_tombstone, NormalizedSearch, StoredMemory};

/// What a search found: each memory with its score (none when listed by filters).
pub(super) type Found = Vec<(StoredMemory, Option<f32>)>;

impl Core {
    /// The memories a search finds, best first, as an answer shows them (with `score`), every
    /// read of them counted.
    pub async fn search(
        &self,
        scope: &Scope,
        search: NormalizedSearch,
    ) -> Result<Answer<Vec<StoredMemory>>, CoreError> {
        self.search_counted_by(scope, search, Reads::Count).await
    }

    /// [`Core::search`], its reads counted by `reads`.
    pub async fn search_counted_by(
        &self,
        scope: &Scope,
        search: NormalizedSearch,
        reads: Reads,
    ) -> Result<Answer<Vec<StoredMemory>>, CoreError> {
        let params = serde_json::to_vec(&search).map_err(internal)?;
        let slot = match self.cached_search(scope, &params).await {
            Lookup::Hit(cached) => {
                let rows = self
                    .counted_rows(scope, cached.memories, Some(&cached.synced))
                    .await;
                self.count_reads(reads, scope, cached.found.iter());
                return Ok(Answer::hit(rows));
            }
            Lookup::Miss(slot) => Some(slot),
            Lookup::Unknown => None,
        };

        let found = self.find(scope, &search).await?;
        let (found, confirmed) = self.with_pending_writes(scope, found).await;
        let found_ids: Vec<Uuid> = found
            .iter()
            .filter_map(|(memory, _)| row_id(memory))
            .collect();
        let rows = self.shape_results(&search, found).await?;
        if let Some(slot) = slot.filter(|_| confirmed) {
            self.fill_search_later(scope, slot, &rows, &found_ids);
        }
        // The cached answer holds the stored counts; this one counts every read so far.
        let rows = self.counted_rows(scope, rows, None).await;
        self.count_reads(reads, scope, found_ids.iter());
        Ok(Answer::miss(
            rows,
            (!confirmed).then_some(Degraded::Unconfirmed),
        ))
    }

    /// The memories a search finds, best first, with their scores: a vector search for the
    /// layout's query text, cut at the threshold and the limit; a blank query lists the
    /// memories matching the filters (none without a filter).
    async fn find(&self, scope: &Scope, search: &NormalizedSearch) -> Result<Found, CoreError> {
        let filter = self.filter_for(scope, search);
        if search.is_blank() {
            if !search.has_filters() {
                return Ok(Vec::new());
            }
            let listed = self
                .vectors
                .scroll(&filter, u64::from(search.limit))
                .await
                .map_err(|e| unavailable("the vector store", e))?;
            return Ok(listed.into_iter().map(|memory| (memory, None)).collect());
        }
        let text = self.layout.query_text(&search.query);
        let (vector, _) = self
            .embeddings
            .embed(&text)
            .await
            .map_err(|e| unavailable("the embedding provider", e))?;
        let threshold = search.similarity_threshold;
        let query = VectorQuery {
            vector: vector.as_ref().clone(),
            filter,
            limit: self.layout.search_fetch_limit(search.limit),
            score_threshold: Some(threshold),
            ef: self.settings.search_ef,
            exact: false,
        };
        let found = self
            .vectors
            .search(query)
            .await
            .map_err(|e| unavailable("the vector store", e))?;
        Ok(found
            .into_iter()
            .filter(|scored| scored.score >= threshold)
            .take(search.limit as usize)
            .map(|scored| (scored.memory, Some(scored.score)))
            .collect())
    }

    /// What the vector store found, as readers must see it: a memory whose delete is
    /// acknowledged is left out, and one with a record shows its record (a write pending, or
    /// applied since the search ran). A cache that cannot answer leaves the results as found,
    /// unconfirmed (`false`).
    async fn with_pending_writes(&self, scope: &Scope, found: Found) -> (Found, bool) {
        if found.is_empty() {
            return (found, true);
        }
        let keys: Vec<String> = found
            .iter()
            .map(|(memory, _)| {
                row_id(memory)
                    .map(|id| self.keys.memory(scope, id))
                    .unwrap_or_default()
            })
            .collect();
        let records = match self.cache.get_many(&keys).await {
            Ok(records) => records,
            Err(error) => {
                if !error.breaker_open() {
                    tracing::warn!(%error, "pending writes unreadable; answering from the vector store");
                }
                return (found, false);
            }
        };
        let found = found
            .into_iter()
            .zip(records)
            .filter_map(|((memory, score), record)| match record {
                Some(record) if is_tombstone(&record) => None,
                // The record is never older than what the search found (a write may have been
                // applied since), and it is what a GET answers.
                Some(record) => match serde_json::from_slice::<StoredMemory>(&record) {
                    Ok(current) => Some((self.with_read_counts(current, &memory), score)),
                    Err(_) => Some((memory, score)),
                },
                None => Some((memory, score)),
            })
            .collect();
        (found, true)
    }

    /// A memory's record with the read counts the vector store holds (they are added there,
    /// not to the record).
    fn with_read_counts(&self, mut record: StoredMemory, stored: &StoredMemory) -> StoredMemory {
        for field in self.layout.access_fields() {
            if let Some(value) = stored.get(*field) {
                record.insert((*field).to_string(), value.clone());
            }
        }
        record
    }
}

/// `memory` with its search `score`, as an answer shows it.
pub(super) fn with_score(mut memory: StoredMemory, score: Option<f32>) -> StoredMemory {
    if let Some(score) = score {
        memory.insert("score".into(), Value::from(score));
    }
    memory
}
