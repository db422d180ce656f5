//! Access tracking that never blocks a read: reads add ids to an in-process batch, and a
//! background task flushes the batch to the cache store every `access.flushInterval`
//! (`access:{id}` counts and last-read time, and the tenant's `popular` set). The workers add
//! them to the vector store's payload rarely (`worker.accessSyncInterval`); meanwhile an
//! answer shows every read so far by adding to the payload's counts the reads it does not
//! have yet ([`AccessRecorder::extra_reads`], [`counted`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::cache::{AccessUpdate, CacheStore, ReadCounts};
use crate::keys::{KeySpace, Scope};
use crate::layout::Layout;
use crate::memory::StoredMemory;
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

    /// Reads of `id` recorded here and not yet flushed: what an answer adds to the counts in
    /// the cache, so that this process's own latest reads count too.
    fn pending(&self, scope: &Scope, id: Uuid) -> Option<(u64, DateTime<Utc>)> {
        self.lock().get(&(scope.clone(), id)).copied()
    }

    /// The reads of `id` that a payload read as `counts` says does not have yet: the cache's
    /// unsynced ones and this process's own not yet flushed, `(count, last)`; `None` when
    /// there are none.
    pub fn extra_reads(
        &self,
        scope: &Scope,
        id: Uuid,
        counts: ReadCounts,
    ) -> Option<(u64, DateTime<Utc>)> {
        let pending = self.pending(scope, id);
        let count = counts.unsynced + pending.map_or(0, |(count, _)| count);
        let last = [counts.last, pending.map(|(_, last)| last)]
            .into_iter()
            .flatten()
            .max()?;
        (count > 0).then_some((count, last))
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
                tenant: scope.value().map(str::to_string),
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

/// `memory` with `extra` reads added to the read counts it shows, as the layout counts them;
/// a row without those fields (a compact search row) is left as it is.
pub fn counted(
    layout: &dyn Layout,
    mut memory: StoredMemory,
    extra: Option<(u64, DateTime<Utc>)>,
) -> StoredMemory {
    let Some((count, last)) = extra else {
        return memory;
    };
    for (field, value) in layout.accessed(&memory, count, last) {
        if let Some(shown) = memory.get_mut(&field) {
            *shown = value;
        }
    }
    memory
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

    #[tokio::test]
    async fn an_answer_adds_unsynced_and_unflushed_reads_to_the_payload() {
        let layout = crate::layout::CldMemoryLayout::new(crate::layout::CldMemorySettings {
            similarity_threshold: 0.7,
            memory_metadata: None,
            project: "box:/app".into(),
        });
        let recorder = AccessRecorder::new();
        let scope = Scope::tenant("team-a");
        let id = Uuid::from_u128(9);
        let payload: StoredMemory = serde_json::from_value(serde_json::json!({
            "id": id, "accessCount": 4, "lastAccessed": "2030-01-01T00:00:00.000Z"
        }))
        .expect("payload");
        assert_eq!(
            recorder.extra_reads(&scope, id, ReadCounts::default()),
            None,
            "nothing beyond the payload"
        );
        let cached = ReadCounts {
            unsynced: 2,
            syncs: 1,
            last: Some("2030-01-02T00:00:00Z".parse().expect("time")),
        };
        recorder.record(&scope, [&id]);
        let extra = recorder.extra_reads(&scope, id, cached);
        assert_eq!(
            extra.map(|(count, _)| count),
            Some(3),
            "2 in the cache, 1 here"
        );
        let shown = counted(&layout, payload.clone(), extra);
        assert_eq!(shown["accessCount"], 7);
        assert_ne!(shown["lastAccessed"], payload["lastAccessed"]);

        let compact: StoredMemory =
            serde_json::from_value(serde_json::json!({"id": id, "summary": "s"})).expect("row");
        assert_eq!(counted(&layout, compact.clone(), extra), compact);
    }
}
