//! Reads, recorded without blocking a read: tallied in process, and a background task flushes
//! what is new to the cache store every `access.flushInterval` (`access:{id}` counts and
//! last-read time, and the tenant's `popular` set). The workers add them to the vector store's
//! payload rarely (`worker.accessSyncInterval`); meanwhile an answer shows every read so far by
//! adding to the payload's counts the reads it does not have yet
//! ([`ReadRecorder::extra_reads`], [`counted`]), or, from L1, to the counts read with the
//! record the reads here since ([`ReadRecorder::reads_since`]). The protocol end to end, and
//! why answers are exact: `docs/read-counts.md`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::cache::{CacheStore, FlushedReads, ReadCounts};
use crate::keys::{KeySpace, Scope};
use crate::layout::Layout;
use crate::memory::StoredMemory;
use crate::metrics::Metrics;

/// One memory's reads in this process since its tally began: `recorded` only grows, and
/// `flushed` follows it as flushes reach the cache store, so `recorded - flushed` is what the
/// cache does not have yet, and a count taken at one moment stays meaningful after later
/// flushes (see [`LocalBase`]).
#[derive(Debug, Clone, Copy)]
struct Tally {
    recorded: u64,
    flushed: u64,
    last: DateTime<Utc>,
    /// Which tally this is: one forgotten and begun again is a different one.
    born: u64,
}

/// A memory's reads not yet in the cache store: how many, and the last one's time.
type Unflushed = ((Scope, Uuid), u64, DateTime<Utc>);

#[derive(Debug, Default)]
struct Tallies {
    by_memory: HashMap<(Scope, Uuid), Tally>,
    /// The memories read since their last flush: what a flush looks at, rather than every
    /// tally kept.
    unflushed: HashSet<(Scope, Uuid)>,
    /// Memories in the order their reads were flushed, with when: what forgetting looks at.
    flushed_at: VecDeque<(DateTime<Utc>, (Scope, Uuid))>,
    /// Flushes begun.
    flushes: u64,
    /// Flushes being written now.
    writing: u32,
    next_born: u64,
}

impl Tallies {
    /// Forgets the tallies flushed by `before` that have had no read since.
    fn forget_idle(&mut self, before: DateTime<Utc>) {
        while let Some((flushed, key)) = self.flushed_at.front() {
            if *flushed > before {
                break;
            }
            if let Some(tally) = self.by_memory.get(key) {
                if tally.recorded == tally.flushed && tally.last <= before {
                    self.by_memory.remove(key);
                }
            }
            self.flushed_at.pop_front();
        }
    }

    fn tally(&mut self, key: (Scope, Uuid), now: DateTime<Utc>) -> &mut Tally {
        let born = &mut self.next_born;
        self.by_memory.entry(key).or_insert_with(|| {
            *born += 1;
            Tally {
                recorded: 0,
                flushed: 0,
                last: now,
                born: *born,
            }
        })
    }
}

/// Where this process's reads of one memory stood when its counts were read from the cache
/// store: every read since is one the counts read then do not have, whether it has been
/// flushed since or not. Taken with [`ReadRecorder::before_count_read`] and
/// [`ReadRecorder::after_count_read`] around the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(Default))]
pub struct LocalBase {
    born: u64,
    flushed: u64,
}

/// What [`ReadRecorder::before_count_read`] saw: which flush was last, so that one in
/// between shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushMark(u64);

/// Collects reads; cheap to clone.
#[derive(Clone)]
pub struct ReadRecorder {
    tallies: Arc<Mutex<Tallies>>,
    flush_turn: Arc<tokio::sync::Mutex<()>>,
    /// A tally with nothing left to flush and no read for this long is forgotten (an answer
    /// holding its [`LocalBase`] then reads the counts again).
    forget_idle_after: Duration,
}

impl std::fmt::Debug for ReadRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRecorder").finish_non_exhaustive()
    }
}

impl ReadRecorder {
    /// `forget_idle_after`: how long the tally of a memory nobody reads is kept; at least as
    /// long as an answer may keep a [`LocalBase`] (the L1 TTL).
    pub fn new(forget_idle_after: Duration) -> Self {
        Self {
            tallies: Arc::new(Mutex::new(Tallies::default())),
            flush_turn: Arc::new(tokio::sync::Mutex::new(())),
            forget_idle_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tallies> {
        self.tallies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes that `ids` were read now. Takes a lock for a few map updates and returns.
    pub fn record<'a>(&self, scope: &Scope, ids: impl IntoIterator<Item = &'a Uuid>) {
        let now = Utc::now();
        let mut tallies = self.lock();
        for id in ids {
            let key = (scope.clone(), *id);
            let tally = tallies.tally(key.clone(), now);
            tally.recorded += 1;
            tally.last = now;
            tallies.unflushed.insert(key);
        }
    }

    /// Reads of `id` recorded here and not yet flushed: what an answer adds to the counts in
    /// the cache, so that this process's own latest reads count too.
    fn pending(&self, scope: &Scope, id: Uuid) -> Option<(u64, DateTime<Utc>)> {
        let tallies = self.lock();
        let tally = tallies.by_memory.get(&(scope.clone(), id))?;
        let unflushed = tally.recorded - tally.flushed;
        (unflushed > 0).then_some((unflushed, tally.last))
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

    /// Called before reading a memory's counts from the cache store.
    pub fn before_count_read(&self) -> FlushMark {
        FlushMark(self.lock().flushes)
    }

    /// Called after reading them: where this process's reads of `id` stood, if no flush ran
    /// during the read (one could be in the counts read or not: nobody can say, so `None`).
    pub fn after_count_read(&self, scope: &Scope, id: Uuid, mark: FlushMark) -> Option<LocalBase> {
        let mut tallies = self.lock();
        if tallies.writing > 0 || tallies.flushes != mark.0 {
            return None;
        }
        let now = Utc::now();
        let key = (scope.clone(), id);
        if !tallies.by_memory.contains_key(&key) {
            // Begun here, with nothing to flush: forgotten in time like a flushed one.
            tallies.flushed_at.push_back((now, key.clone()));
        }
        let tally = tallies.tally(key, now);
        Some(LocalBase {
            born: tally.born,
            flushed: tally.flushed,
        })
    }

    /// This process's reads of `id` since `base`, with the last one's time; `None` when its
    /// tally was forgotten since (read the counts again).
    pub fn reads_since(
        &self,
        scope: &Scope,
        id: Uuid,
        base: LocalBase,
    ) -> Option<(u64, DateTime<Utc>)> {
        let tallies = self.lock();
        let tally = tallies.by_memory.get(&(scope.clone(), id))?;
        (tally.born == base.born).then_some((tally.recorded - base.flushed, tally.last))
    }

    /// What to flush: every tally's reads not yet in the cache store. Marks a flush begun.
    fn begin_flush(&self) -> Vec<Unflushed> {
        let mut tallies = self.lock();
        tallies.flushes += 1;
        tallies.writing += 1;
        let read = std::mem::take(&mut tallies.unflushed);
        read.into_iter()
            .filter_map(|key| {
                let tally = tallies.by_memory.get(&key)?;
                let unflushed = tally.recorded - tally.flushed;
                (unflushed > 0).then_some((key, unflushed, tally.last))
            })
            .collect()
    }

    /// Ends a flush: what was written counts as flushed, and idle tallies are forgotten. On
    /// failure nothing moves, and the next flush writes the same reads and those since.
    fn end_flush(&self, batch: &[Unflushed], written: bool) {
        let now = Utc::now();
        let forget_before = chrono::Duration::from_std(self.forget_idle_after)
            .ok()
            .and_then(|idle| now.checked_sub_signed(idle))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut tallies = self.lock();
        tallies.writing -= 1;
        for (key, count, _) in batch {
            if !written {
                tallies.unflushed.insert(key.clone());
            } else if let Some(tally) = tallies.by_memory.get_mut(key) {
                tally.flushed += count;
                tallies.flushed_at.push_back((now, key.clone()));
            }
        }
        tallies.forget_idle(forget_before);
    }

    /// Writes everything recorded and not yet flushed. On failure it stays to be written at
    /// the next flush, so counts stay exact across a short cache outage.
    pub async fn flush(&self, store: &dyn CacheStore, keys: &KeySpace, metrics: &Metrics) {
        // Two flushes at once would both write the same reads.
        let _turn = self.flush_turn.lock().await;
        let batch = self.begin_flush();
        if batch.is_empty() {
            self.end_flush(&batch, true);
            return;
        }
        let updates: Vec<FlushedReads> = batch
            .iter()
            .map(|((scope, id), count, last)| FlushedReads {
                id: *id,
                access_key: keys.access(*id),
                popular_key: keys.popular(scope),
                count: *count,
                last: *last,
                tenant: scope.value().map(str::to_string),
            })
            .collect();
        match store.record_reads(&updates, &keys.access_dirty()).await {
            Ok(()) => {
                metrics.core.access_flushed.inc_by(updates.len() as u64);
                self.end_flush(&batch, true);
            }
            Err(error) => {
                tracing::warn!(%error, ids = updates.len(), "access flush failed; will retry");
                metrics.core.access_flush_errors.inc();
                self.end_flush(&batch, false);
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
    use crate::backend::cache::InProcessCache;

    #[tokio::test]
    async fn counts_are_exact_after_a_flush() {
        let recorder = ReadRecorder::new(Duration::from_secs(10));
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

    /// What an L1 answer adds to the counts read with its record: every read here since they
    /// were read, flushed since or not; nothing once a flush ran during the count read (it may
    /// or may not be in it), and nothing once the tally was forgotten and begun again.
    #[tokio::test]
    async fn reads_since_a_count_read_survive_flushes() {
        let recorder = ReadRecorder::new(Duration::from_secs(60));
        let store = InProcessCache::new(100);
        let keys = KeySpace::new("t:");
        let metrics = Metrics::new();
        let scope = Scope::tenant("team-a");
        let id = Uuid::from_u128(11);
        recorder.record(&scope, [&id, &id]);
        let mark = recorder.before_count_read();
        let base = recorder
            .after_count_read(&scope, id, mark)
            .expect("no flush in between");
        assert_eq!(
            recorder
                .reads_since(&scope, id, base)
                .map(|(count, _)| count),
            Some(2),
            "2 not flushed when the counts were read"
        );
        recorder.flush(&store, &keys, &metrics).await;
        recorder.record(&scope, [&id]);
        assert_eq!(
            recorder
                .reads_since(&scope, id, base)
                .map(|(count, _)| count),
            Some(3),
            "flushed since: still not in the counts read before"
        );
        assert_eq!(
            recorder.extra_reads(&scope, id, ReadCounts::default()),
            recorder.pending(&scope, id),
            "a fresh count read adds only the unflushed one"
        );
        assert_eq!(
            recorder.pending(&scope, id).map(|(count, _)| count),
            Some(1)
        );

        let during = recorder.before_count_read();
        recorder.flush(&store, &keys, &metrics).await;
        assert_eq!(recorder.after_count_read(&scope, id, during), None);

        let (count, _) = store
            .access_stats(&keys.access(id))
            .await
            .expect("stats")
            .expect("some");
        assert_eq!(count, 3, "each read flushed once");

        // Idle and fully flushed (forgotten at once here): a new tally, not the one of `base`.
        let forgetful = ReadRecorder::new(Duration::ZERO);
        forgetful.record(&scope, [&id]);
        let mark = forgetful.before_count_read();
        let base = forgetful.after_count_read(&scope, id, mark).expect("base");
        forgetful.flush(&store, &keys, &metrics).await;
        forgetful.record(&scope, [&id]);
        assert_eq!(forgetful.reads_since(&scope, id, base), None);
    }

    /// A flush looks at the memories read since the last one only, and tallies idle for
    /// `forget_idle_after` once flushed are forgotten: the recorder holds what is being read.
    #[tokio::test]
    async fn idle_tallies_are_forgotten() {
        let recorder = ReadRecorder::new(Duration::ZERO);
        let store = InProcessCache::new(1000);
        let keys = KeySpace::new("t:");
        let metrics = Metrics::new();
        let ids: Vec<Uuid> = (0..100).map(Uuid::from_u128).collect();
        recorder.record(&Scope::UNSCOPED, ids.iter());
        assert_eq!(recorder.lock().unflushed.len(), 100);
        recorder.flush(&store, &keys, &metrics).await;
        let tallies = recorder.lock();
        assert!(tallies.unflushed.is_empty());
        assert!(
            tallies.by_memory.is_empty(),
            "{:?}",
            tallies.by_memory.len()
        );
        assert!(tallies.flushed_at.is_empty());
    }

    #[tokio::test]
    async fn an_answer_adds_unsynced_and_unflushed_reads_to_the_payload() {
        let layout = crate::layout::CldMemoryLayout::new(crate::layout::CldMemorySettings {
            similarity_threshold: 0.7,
            memory_metadata: None,
            project: "box:/app".into(),
        });
        let recorder = ReadRecorder::new(Duration::from_secs(10));
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
            ..ReadCounts::default()
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
