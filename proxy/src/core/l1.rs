//! L1: memory records this process read from the cache store, each with the read counts read
//! with it, answered without a round trip; and the fence of records being dropped
//! ([`Forgetting`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use tokio::time::Instant;

use super::counted_body::CountedBody;
use super::forgetting::{Dropping, Forgetting};
use crate::backend::cache::ReadCounts;
use crate::core::reads::LocalBase;

/// A record in L1 and where its read counts stood when it was read: the cache store's
/// (`mem:{id}` and `access:{id}`, read in one atomic step) and this process's
/// ([`LocalBase`]). An answer from it shows those plus this process's reads since, as one
/// that read the counts again would, with no round trip. A read sync since does not make it
/// stale: a sync moves reads from `unsynced` into the record's counts, and this body and these
/// counts are from the same moment. Reads through other processes show once the entry
/// expires (`cache.l1.ttl`), as their writes do.
#[derive(Debug, Clone)]
pub(super) struct L1Record {
    pub body: Bytes,
    /// The body cut at its read counts, when it has them: an answer shows new counts without
    /// parsing it.
    pub counted: Option<Arc<CountedBody>>,
    pub counts: ReadCounts,
    pub local: LocalBase,
    /// When it was read from the cache store.
    filled: Instant,
    /// Whether a refresh of it has begun (shared by the copies L1 hands out).
    refreshing: Arc<AtomicBool>,
}

impl L1Record {
    pub fn new(
        body: Bytes,
        counted: Option<Arc<CountedBody>>,
        counts: ReadCounts,
        local: LocalBase,
    ) -> Self {
        Self {
            body,
            counted,
            counts,
            local,
            filled: Instant::now(),
            refreshing: Arc::default(),
        }
    }

    /// Whether this entry is past half of `ttl` and no refresh of it has begun: the one caller
    /// told yes refreshes it.
    pub fn claim_refresh(&self, ttl: Duration) -> bool {
        self.filled.elapsed() >= ttl / 2 && !self.refreshing.swap(true, Ordering::AcqRel)
    }
}

/// This process's L1 of memory records.
pub(super) struct MemoryL1 {
    records: Cache<String, L1Record>,
    /// Moves on every write this process makes: a read that began before a write never
    /// fills L1 after it (with what it read before the write).
    epoch: AtomicU64,
    /// Cached records being dropped in the background: read only once they are gone.
    forgetting: Arc<Forgetting>,
}

impl MemoryL1 {
    pub fn new(entries: u64, ttl: Duration) -> Self {
        Self {
            records: Cache::builder()
                .max_capacity(entries)
                .time_to_live(ttl)
                .build(),
            epoch: AtomicU64::new(0),
            forgetting: Arc::default(),
        }
    }

    /// Now, for a read that may fill L1 later ([`Self::fill`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Waits until no drop of `key`'s shared-cache record is in progress.
    pub async fn settled(&self, key: &str) {
        self.forgetting.settled(key).await;
    }

    /// Raises the fence on `key` until the returned drop ends.
    pub fn begin_forgetting(&self, key: &str) -> Dropping {
        self.forgetting.begin(key)
    }

    pub async fn get(&self, key: &str) -> Option<L1Record> {
        self.records.get(key).await
    }

    /// Drops an entry that can no longer be answered from (no write involved).
    pub async fn discard(&self, key: &str) {
        self.records.invalidate(key).await;
    }

    /// Puts a record read at `epoch` into L1, unless this process wrote since.
    pub async fn fill(&self, key: String, record: L1Record, epoch: u64) {
        if self.epoch.load(Ordering::SeqCst) == epoch {
            self.records.insert(key.clone(), record).await;
            // A write that came in during the insert must not leave it behind.
            if self.epoch.load(Ordering::SeqCst) != epoch {
                self.records.invalidate(&key).await;
            }
        }
    }

    /// Forgets `key` because it was written: no read begun before fills it after.
    pub async fn forget(&self, key: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.records.invalidate(key).await;
    }

    /// Forgets everything (writes elsewhere that memgate cannot name).
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.records.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> L1Record {
        L1Record::new(
            Bytes::from_static(b"{}"),
            None,
            ReadCounts::default(),
            LocalBase::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn one_hit_past_half_its_life_refreshes_an_entry() {
        let ttl = Duration::from_secs(10);
        let entry = record();
        assert!(!entry.claim_refresh(ttl), "young");
        tokio::time::advance(Duration::from_secs(6)).await;
        let copy = entry.clone();
        assert!(copy.claim_refresh(ttl), "the first hit past half its life");
        assert!(!entry.claim_refresh(ttl), "one refresh per entry");
    }

    #[tokio::test]
    async fn a_read_begun_before_a_write_does_not_fill_after_it() {
        let l1 = MemoryL1::new(10, Duration::from_secs(60));
        let before = l1.epoch();
        l1.forget("other").await;
        l1.fill("k".into(), record(), before).await;
        assert!(l1.get("k").await.is_none(), "stale fill kept");
        l1.fill("k".into(), record(), l1.epoch()).await;
        assert!(l1.get("k").await.is_some());
        l1.forget_all();
        assert!(l1.get("k").await.is_none());
    }
}
