//! Keeping memgate's caches coherent with what another writer (the legacy service) changed,
//! and waiting for memgate's own writes to reach the vector store before one is sent there.

use std::time::Duration;

use backon::BackoffBuilder;
use uuid::Uuid;

use super::get::is_processing;
use super::Core;
use crate::backend::queue::WriteQueue;
use crate::backend::BackendError;
use crate::keys::Scope;

/// Drops the cached record under `key` unless a write of it by memgate is pending; a failure
/// is logged (the record then expires with its TTL).
async fn forget_settled(queue: &dyn WriteQueue, key: &str, revision: &str) {
    if let Err(error) = queue.forget_settled(key, revision).await {
        tracing::warn!(%error, key, "could not drop a cached record");
    }
}

impl Core {
    /// Forgets what memgate holds of these memories and retires every cached search: another
    /// writer (the legacy service) changed them. Records of memories memgate is still writing
    /// are kept, since they are newer than the vector store.
    pub async fn invalidate(&self, scope: &Scope, ids: &[Uuid]) {
        self.forget_records(scope, ids).await;
        self.retire_searches(self.keys.scope_search_generation(scope))
            .await;
    }

    /// Drops the cached records of `ids` (here and in the shared cache, unless memgate's own
    /// write of one is pending), so their next read is from the vector store; cached searches
    /// stay.
    pub async fn forget_records(&self, scope: &Scope, ids: &[Uuid]) {
        for id in ids {
            let key = self.keys.memory(scope, *id);
            self.l1.forget(&key).await;
            let revision = self.keys.revision(scope, *id);
            forget_settled(self.queue.as_ref(), &key, &revision).await;
        }
    }

    /// [`Self::forget_records`], with the shared cache's part done in the background: the
    /// caller can answer at once, and readers in this process wait for the records to be
    /// gone before they read one ([`super::forgetting`]).
    pub async fn forget_records_later(&self, scope: &Scope, ids: &[Uuid]) {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            let key = self.keys.memory(scope, *id);
            let fence = self.l1.begin_forgetting(&key);
            self.l1.forget(&key).await;
            records.push((key, self.keys.revision(scope, *id), fence));
        }
        let queue = self.queue.clone();
        tokio::spawn(async move {
            for (key, revision, _fence) in records {
                forget_settled(queue.as_ref(), &key, &revision).await;
            }
        });
    }

    /// The memories `id` is linked with, as the vector store has it now (none when it cannot
    /// say): the neighbours a memory stored by the legacy service linked itself into.
    pub async fn neighbours(&self, id: Uuid) -> Vec<Uuid> {
        match self.vectors.retrieve(id).await {
            Ok(Some(memory)) => self
                .layout
                .associations(&memory)
                .iter()
                .filter_map(|id| Uuid::parse_str(id).ok())
                .collect(),
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, %id, "could not read a new memory's links");
                Vec::new()
            }
        }
    }

    /// Forgets every memory held in this process and retires every cached search of every
    /// tenant (a write elsewhere changed memories memgate cannot name). Records in a shared
    /// cache expire within `cache.memoryTtl`.
    pub async fn invalidate_all(&self) {
        self.l1.forget_all();
        self.retire_searches(self.keys.search_generation()).await;
    }

    /// Bumps a search generation: `Keys::scope_search_generation` for one tenant's searches,
    /// `Keys::search_generation` for everyone's.
    async fn retire_searches(&self, key: String) {
        if let Err(error) = self.cache.increment(&key).await {
            tracing::warn!(%error, "could not retire cached searches");
        }
    }

    /// Waits until memgate's own pending write of this memory is in the vector store, pausing
    /// at most `bound` in all: whether it is (or was never pending).
    pub async fn wait_stored(&self, scope: &Scope, id: Uuid, bound: Duration) -> bool {
        let key = self.keys.memory(scope, id);
        let mut pauses = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_millis(100))
            .without_max_times()
            .with_total_delay(Some(bound))
            .build();
        loop {
            if !self.is_pending(&key).await {
                return true;
            }
            match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return false,
            }
        }
    }

    /// Whether the record under `key` is one memgate is still writing (a cache that cannot
    /// say is taken for no).
    async fn is_pending(&self, key: &str) -> bool {
        match self.cache.get(key).await {
            Ok(record) => record.is_some_and(|record| is_processing(&record)),
            Err(error) if error.breaker_open() => false,
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed");
                false
            }
        }
    }
}
