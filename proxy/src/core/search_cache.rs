//! The result cache of searches: a search answer kept under its scope's search generation
//! and the normalised request, with the read counts its rows had, so that a hit can show every
//! read since.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{row_id, Core};
use crate::backend::cache::SearchFill;
use crate::backend::BackendError;
use crate::keys::Scope;
use crate::memory::StoredMemory;

/// A search answer as the result cache keeps it: its rows with the read counts the vector
/// store had, and the reads each memory had had synced to the vector store by then
/// ([`crate::backend::cache::ReadCounts::synced`]). A hit adds the reads synced since, so a read sync
/// leaves cached answers exact and need not retire them. A body without `synced` (written by
/// an older memgate) does not parse, and is searched again.
#[derive(Deserialize, Serialize)]
pub(super) struct CachedSearch {
    pub memories: Vec<StoredMemory>,
    pub synced: HashMap<Uuid, u64>,
    /// The memories the search found, whose reads an answer records (as the legacy service
    /// counts them: not the associations appended to them).
    pub found: Vec<Uuid>,
}

/// [`CachedSearch`] up to the value of `synced`, which the cache store appends in the step
/// that reads the counts it is made of ([`SearchFill`]).
fn cached_search_head(memories: &[StoredMemory], found: &[Uuid]) -> serde_json::Result<Bytes> {
    #[derive(Serialize)]
    struct Head<'a> {
        memories: &'a [StoredMemory],
        found: &'a [Uuid],
    }
    let mut head = serde_json::to_vec(&Head { memories, found })?;
    // `{…}`: the object stays open for its last member.
    head.pop();
    head.extend_from_slice(b",\"synced\":");
    Ok(Bytes::from(head))
}

/// Where a fresh search answer goes in the result cache: its key, and the scope's read syncs
/// before the search.
pub(super) struct ResultSlot {
    pub key: String,
    pub read_syncs: u64,
}

/// What the result cache said about a search.
pub(super) enum Lookup {
    /// A cached answer.
    Hit(CachedSearch),
    /// None: a fresh answer may be kept here.
    Miss(ResultSlot),
    /// The cache could not say: search without it.
    Unknown,
}

impl Core {
    /// The cached answer to this search (its normalised request as `params`), or where to keep
    /// a fresh one.
    pub(super) async fn cached_search(&self, scope: &Scope, params: &[u8]) -> Lookup {
        let results_key = self.keys.search_results_key(scope, params);
        let lookup = self
            .cache
            .get_at_generation(
                &self.keys.search_generations(scope),
                &self.keys.scope_read_syncs(scope),
                &results_key,
            )
            .await;
        match lookup {
            Ok(found) => {
                let cached = found
                    .value
                    .and_then(|body| serde_json::from_slice::<CachedSearch>(&body).ok());
                match cached {
                    Some(cached) => Lookup::Hit(cached),
                    None => Lookup::Miss(ResultSlot {
                        key: results_key.with_generation(found.generation),
                        read_syncs: found.read_syncs,
                    }),
                }
            }
            Err(error) => {
                // Without the generation a result could be stored under a stale key: skip the
                // result cache for this search.
                if !error.breaker_open() {
                    tracing::warn!(%error, "result cache unreadable; searching without it");
                }
                Lookup::Unknown
            }
        }
    }

    /// Keeps a fresh search answer in the result cache, in the background: the cache store
    /// reads its memories' `synced` counts and stores it in one step, unless a read sync of
    /// the scope ended since the search began or one of them is being synced (see
    /// [`crate::backend::cache::CacheStore::fill_search`]). Started before the answer's own counts are
    /// read, so it reaches the cache store ahead of the client's next request.
    pub(super) fn fill_search_later(
        &self,
        scope: &Scope,
        slot: ResultSlot,
        rows: &[StoredMemory],
        found: &[Uuid],
    ) {
        let Ok(body_head) = cached_search_head(rows, found) else {
            return;
        };
        let ids: Vec<Uuid> = rows.iter().filter_map(row_id).collect();
        let access_keys: Vec<String> = ids.iter().map(|id| self.keys.access(*id)).collect();
        let read_syncs_key = self.keys.scope_read_syncs(scope);
        let (cache, ttl) = (self.cache.clone(), self.settings.search_ttl);
        tokio::spawn(async move {
            let fill = SearchFill {
                key: &slot.key,
                body_head,
                ids: &ids,
                access_keys: &access_keys,
                ttl,
                read_syncs_key: &read_syncs_key,
                read_syncs: slot.read_syncs,
            };
            match cache.fill_search(fill).await {
                Err(error) if !error.breaker_open() => {
                    tracing::warn!(%error, key = slot.key, "cache write failed")
                }
                _ => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The head the core writes and the `synced` object the cache store appends make one
    /// [`CachedSearch`].
    #[test]
    fn a_cached_search_is_its_head_and_the_synced_counts() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let rows: Vec<StoredMemory> = [a, b]
            .iter()
            .map(|id| {
                let row = serde_json::json!({"id": id.to_string(), "accessCount": 2});
                row.as_object().cloned().unwrap_or_default()
            })
            .collect();
        let head = cached_search_head(&rows, &[a]).expect("head");
        let fill = SearchFill {
            key: "k",
            body_head: head,
            ids: &[a, b],
            access_keys: &[],
            ttl: Duration::from_secs(1),
            read_syncs_key: "r",
            read_syncs: 0,
        };
        let cached: CachedSearch =
            serde_json::from_slice(&fill.body([7, 0])).expect("a cached search");
        assert_eq!(cached.memories, rows);
        assert_eq!(cached.found, vec![a]);
        assert_eq!(cached.synced, [(a, 7), (b, 0)].into_iter().collect());
        let none = SearchFill {
            ids: &[],
            access_keys: &[],
            body_head: cached_search_head(&[], &[]).expect("head"),
            ..fill
        };
        let empty: CachedSearch = serde_json::from_slice(&none.body([])).expect("empty");
        assert!(empty.memories.is_empty() && empty.synced.is_empty());
    }
}
