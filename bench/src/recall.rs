//! Search recall: how many of the true nearest memories (an exact search, every point
//! compared) a search with a given `hnsw_ef` finds, over queries the dataset never stored.
//! memgate's default ef must not lose results that cldmemory (the collection's default ef)
//! returns.

use std::collections::HashSet;
use std::sync::Arc;

use memgate::backend::embeddings::HashingEmbedder;
use memgate::backend::vectors::{PayloadFilter, VectorQuery, VectorStore};
use memgate::layout::Layout;
use serde::Serialize;
use serde_json::Value;

use crate::dataset;

/// Results compared per query: a search for 10 asks the store for 30 (cldmemory's rule).
const TOP: usize = 10;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecallResult {
    /// `None`: the collection's default (what cldmemory searches with, and memgate by default).
    pub ef: Option<u64>,
    pub queries: usize,
    /// Share of the exact top 10 found, averaged over the queries.
    pub recall_at_10: f64,
}

fn ids(found: Vec<memgate::backend::vectors::ScoredMemory>) -> Vec<String> {
    found
        .into_iter()
        .take(TOP)
        .filter_map(|hit| {
            hit.memory
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// Recall@10 of each `ef` against exact search, over `queries` queries.
pub async fn measure(
    store: &Arc<dyn VectorStore>,
    layout: &dyn Layout,
    embedder: &HashingEmbedder,
    queries: usize,
    efs: &[Option<u64>],
) -> anyhow::Result<Vec<RecallResult>> {
    let fetch = layout.search_fetch_limit(TOP as u32);
    let mut found = vec![0usize; efs.len()];
    let mut expected = 0usize;
    for i in 0..queries {
        let vector = embedder.embed_one(&layout.query_text(&dataset::query(2_000_000 + i)));
        let query = |ef: Option<u64>, exact: bool| VectorQuery {
            vector: vector.clone(),
            filter: PayloadFilter::default(),
            limit: fetch,
            score_threshold: None,
            ef,
            exact,
        };
        let truth: HashSet<String> = ids(store.search(query(None, true)).await?)
            .into_iter()
            .collect();
        expected += truth.len();
        for (slot, ef) in efs.iter().enumerate() {
            let approximate = ids(store.search(query(*ef, false)).await?);
            found[slot] += approximate.iter().filter(|id| truth.contains(*id)).count();
        }
    }
    Ok(efs
        .iter()
        .zip(found)
        .map(|(ef, hits)| RecallResult {
            ef: *ef,
            queries,
            recall_at_10: hits as f64 / expected.max(1) as f64,
        })
        .collect())
}
