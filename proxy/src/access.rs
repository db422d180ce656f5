//! Access tracking that never blocks a read: reads add ids to an in-process batch, and a
//! background task flushes the batch to the cache store every `access.flushInterval`
//! (`access:{id}` counts and last-read time, and the tenant's `popular` set).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cache::{AccessUpdate, CacheStore};
use crate::keys::{KeySpace, Scope};
use crate::metrics::Metrics;

type Batch = HashMap<(Scope, Uuid), (u64, DateTime<Utc>)>;

/// Collects reads; cheap to clone.
#[derive(Clone)]
pub struct AccessRecorder {
    pending: Arc<Mutex<Batch>>,
}

impl std::fmt::Debug for AccessRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRecorder").finish_non_exhaustive()
    }
}

impl Default for AccessRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessRecorder {
    pub fn new() -> Self {
        Self {
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes that `ids` were read now. Takes a lock for a few map inserts and returns.
    pub fn record<'a>(&self, scope: &Scope, ids: impl IntoIterator<Item = &'a Uuid>) {
        let now = Utc::now();
        let mut pending = self.lock();
        for id in ids {
            let entry = pending.entry((scope.clone(), *id)).or_insert((0, now));
            entry.0 += 1;
            entry.1 = now;
        }
    }

    fn take(&self) -> Batch {
        std::mem::take(&mut *self.lock())
    }

    /// Writes everything recorded so far. On failure the batch is merged back and retried at
    /// the next flush, so counts stay exact across a short cache outage.
    pub async fn flush(&self, store: &dyn CacheStore, keys: &KeySpace, metrics: &Metrics) {
        let batch = self.take();
        if batch.is_empty() {
            return;
        }
        let updates: Vec<AccessUpdate> = batch
            .iter()
            .map(|((scope, id), (count, last))| AccessUpdate {
                id: *id,
                access_key: keys.access(*id),
                popular_key: keys.popular(scope),
                count: *count,
                last: *last,
            })
            .collect();
        match store.record_accesses(&updates, &keys.access_dirty()).await {
            Ok(()) => metrics.access_flushed.inc_by(updates.len() as u64),
            Err(error) => {
                tracing::warn!(%error, ids = updates.len(), "access flush failed; will retry");
                metrics.access_flush_errors.inc();
                let mut pending = self.lock();
                for (key, (count, last)) in batch {
                    let entry = pending.entry(key).or_insert((0, last));
                    entry.0 += count;
                    entry.1 = entry.1.max(last);
                }
            }
        }
    }

    /// Flushes every `interval` until the returned handle is aborted.
    pub fn spawn_flusher(
        &self,
        store: Arc<dyn CacheStore>,
        keys: KeySpace,
        metrics: Metrics,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let recorder = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                recorder.flush(store.as_ref(), &keys, &metrics).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::InProcessCache;

    #[tokio::test]
    async fn counts_are_exact_after_a_flush() {
        let recorder = AccessRecorder::new();
        let store = InProcessCache::new(100);
        let keys = KeySpace::new("t:");
        let metrics = Metrics::new();
        let id = Uuid::from_u128(7);
        for _ in 0..5 {
            recorder.record(&Scope::UNSCOPED, [&id]);
        }
        recorder.flush(&store, &keys, &metrics).await;
        recorder.record(&Scope::UNSCOPED, [&id]);
        recorder.flush(&store, &keys, &metrics).await;
        let (count, _) = store
            .access_stats(&keys.access(id))
            .await
            .expect("stats")
            .expect("some");
        assert_eq!(count, 6);
        assert_eq!(
            store.popular(&keys.popular(&Scope::UNSCOPED), 5),
            vec![(id.to_string(), 6)]
        );
    }
}
