//! A search answer's memories as the request asks for them: compact rows, or whole memories
//! with their associated ones appended, or with chunks put back together; `score` on what a
//! vector search found.

use std::collections::HashSet;

use serde_json::Value;
use uuid::Uuid;

use super::error::unavailable;
use super::search::{with_score, Found};
use super::{Core, CoreError};
use crate::backend::vectors::PayloadFilter;
use crate::layout::ChunkRole;
use crate::memory::{DetailLevel, NormalizedSearch, StoredMemory};

/// The most chunks of one memory put back together.
const MAX_CHUNKS: u64 = 100;

impl Core {
    pub(super) async fn shape_results(
        &self,
        search: &NormalizedSearch,
        found: Found,
    ) -> Result<Vec<StoredMemory>, CoreError> {
        let mut results = found;
        if search.include_associations {
            results = self.with_associations(results).await?;
        } else if search.detail_level == DetailLevel::Compact {
            results = results
                .into_iter()
                .map(|(memory, score)| (self.layout.compact(&memory), score))
                .collect();
        }
        if search.reconstruct_chunks && search.detail_level == DetailLevel::Full {
            results = self.reconstruct_chunks(results).await?;
        }
        let whole = search.include_associations || search.detail_level == DetailLevel::Full;
        Ok(results
            .into_iter()
            .map(|(mut memory, score)| {
                if whole && !memory.contains_key("status") {
                    // In the vector store, so stored: memgate's status of it.
                    memory.insert("status".into(), Value::String("ready".into()));
                }
                with_score(memory, score)
            })
            .collect())
    }

    /// The results, then each association not among them (once, in order).
    async fn with_associations(&self, results: Found) -> Result<Found, CoreError> {
        let mut seen: HashSet<String> = results
            .iter()
            .filter_map(|(memory, _)| memory.get("id").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        let mut all = results.clone();
        for (memory, _) in &results {
            for associated in self.layout.associations(memory) {
                if !seen.insert(associated.clone()) {
                    continue;
                }
                let Ok(id) = Uuid::parse_str(&associated) else {
                    continue;
                };
                let found = self
                    .vectors
                    .retrieve(id)
                    .await
                    .map_err(|e| unavailable("the vector store", e))?;
                if let Some(found) = found {
                    all.push((found, None));
                }
            }
        }
        Ok(all)
    }

    /// Parents of chunks come back whole (their chunks' content joined); chunks themselves
    /// are left out.
    async fn reconstruct_chunks(&self, results: Found) -> Result<Found, CoreError> {
        let mut whole = Vec::with_capacity(results.len());
        let mut parents_done = HashSet::new();
        for (memory, score) in results {
            match self.layout.chunk_role(&memory) {
                ChunkRole::Chunk => {}
                ChunkRole::Whole => whole.push((memory, score)),
                ChunkRole::Parent => {
                    let id = memory
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if !parents_done.insert(id.clone()) {
                        continue;
                    }
                    let filter = PayloadFilter::all(vec![self.layout.chunks_of(&id)]);
                    let chunks = self
                        .vectors
                        .scroll(&filter, MAX_CHUNKS)
                        .await
                        .map_err(|e| unavailable("the vector store", e))?;
                    if chunks.is_empty() {
                        whole.push((memory, score));
                    } else {
                        whole.push((self.layout.reconstruct(&memory, chunks), score));
                    }
                }
            }
        }
        Ok(whole)
    }
}
