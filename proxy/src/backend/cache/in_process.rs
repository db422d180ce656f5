//! [`CacheStore`] in this process, for `--embedded` and tests: bounded by entry count, each
//! entry expiring after its own TTL. Nothing is shared with other processes or kept on restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use moka::Expiry;

use super::{
    CacheError, CacheStore, FlushedReads, GenerationalValue, ReadCounts, SearchFill,
    UnfinishedSync, UnsyncedReads, POPULAR_CAP,
};

/// Keeps the `cap` most read of a `popular` set.
fn trim_to_most_read(popular: &mut HashMap<String, u64>, cap: usize) {
    if popular.len() <= cap {
        return;
    }
    let mut counts: Vec<u64> = popular.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let floor = counts[cap - 1];
    let above = counts.iter().filter(|count| **count > floor).count();
    let mut ties = cap - above;
    popular.retain(|_, count| match (*count).cmp(&floor) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal if ties > 0 => {
            ties -= 1;
            true
        }
        _ => false,
    });
}

#[cfg(test)]
mod popular_tests {
    use super::*;

    #[test]
    fn the_most_read_are_kept() {
        let mut popular: HashMap<String, u64> = (0..10).map(|n| (format!("m{n}"), n % 4)).collect();
        trim_to_most_read(&mut popular, 4);
        assert_eq!(popular.len(), 4);
        assert!(popular.values().all(|count| *count >= 2), "{popular:?}");
    }
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

#[derive(Default)]
struct Counters {
    integers: HashMap<String, u64>,
    access: HashMap<String, (u64, DateTime<Utc>)>,
    /// Where each access key's reads stand against the vector store.
    syncs: HashMap<String, SyncState>,
    /// The tenant of each access key's memory.
    tenants: HashMap<String, String>,
    popular: HashMap<String, HashMap<String, u64>>,
    dirty: HashMap<String, std::collections::HashSet<uuid::Uuid>>,
    /// Sets that expire: the writes of one client not yet searchable.
    noted: HashMap<String, (std::collections::HashSet<uuid::Uuid>, std::time::Instant)>,
}

/// One memory's reads against its payload, as an access hash on Redis holds them.
#[derive(Debug, Default, Clone)]
struct SyncState {
    /// Reads not yet added to the vector store.
    unsynced: u64,
    /// Times reads were added.
    syncs: u64,
    /// Reads added, in all.
    synced: u64,
    /// Reads being added now, and the fields their write sets.
    syncing: u64,
    syncing_fields: Option<Bytes>,
}

impl Counters {
    fn read_counts(&self, access_keys: &[String]) -> Vec<ReadCounts> {
        access_keys
            .iter()
            .map(|key| {
                let state = self.syncs.get(key).cloned().unwrap_or_default();
                ReadCounts {
                    unsynced: state.unsynced,
                    syncs: state.syncs,
                    synced: state.synced,
                    syncing: state.syncing,
                    last: self.access.get(key).map(|stats| stats.1),
                }
            })
            .collect()
    }
}

pub struct InProcessCache {
    entries: Cache<String, Entry>,
    counters: Mutex<Counters>,
}

impl std::fmt::Debug for InProcessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl InProcessCache {
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntryTtl)
                .build(),
            counters: Mutex::new(Counters::default()),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ids in a `popular` set, most read first.
    pub fn popular(&self, key: &str, limit: usize) -> Vec<(String, u64)> {
        let counters = self.counters();
        let mut ids: Vec<(String, u64)> = counters
            .popular
            .get(key)
            .map(|set| set.iter().map(|(id, n)| (id.clone(), *n)).collect())
            .unwrap_or_default();
        ids.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ids.truncate(limit);
        ids
    }
}

#[async_trait]
impl CacheStore for InProcessCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.entries.get(key).map(|entry| entry.value))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        Ok(keys
            .iter()
            .map(|key| self.entries.get(key).map(|entry| entry.value))
            .collect())
    }

    async fn most_read(&self, key: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        Ok(self
            .popular(key, limit)
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.entries.insert(key.to_string(), Entry { value, ttl });
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.entries
            .entry(key.to_string())
            .or_insert(Entry { value, ttl });
        Ok(())
    }

    async fn fill_record(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        access_key: &str,
        syncs: u64,
    ) -> Result<(), CacheError> {
        let counters = self.counters();
        let syncs_now = counters
            .syncs
            .get(access_key)
            .map_or(0, |state| state.syncs);
        if syncs_now == syncs {
            self.entries
                .entry(key.to_string())
                .or_insert(Entry { value, ttl });
        }
        Ok(())
    }

    /// Deletes whatever is under `key`: bytes, a counter or access statistics (as Redis
    /// `DEL` deletes any type).
    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.entries.invalidate(key);
        let mut counters = self.counters();
        counters.integers.remove(key);
        counters.access.remove(key);
        counters.syncs.remove(key);
        counters.tenants.remove(key);
        Ok(())
    }

    async fn counter(&self, key: &str) -> Result<u64, CacheError> {
        Ok(self.counters().integers.get(key).copied().unwrap_or(0))
    }

    async fn get_at_generation(
        &self,
        counter_keys: &[String; 2],
        read_syncs_key: &str,
        key: &crate::keys::GenerationalKey,
    ) -> Result<GenerationalValue, CacheError> {
        let generation =
            self.counter(&counter_keys[0]).await? + self.counter(&counter_keys[1]).await?;
        Ok(GenerationalValue {
            generation,
            read_syncs: self.counter(read_syncs_key).await?,
            value: self.get(&key.with_generation(generation)).await?,
        })
    }

    async fn increment(&self, key: &str) -> Result<u64, CacheError> {
        let mut counters = self.counters();
        let value = counters.integers.entry(key.to_string()).or_insert(0);
        *value += 1;
        Ok(*value)
    }

    async fn record_reads(
        &self,
        updates: &[FlushedReads],
        dirty_key: &str,
    ) -> Result<(), CacheError> {
        let mut counters = self.counters();
        for update in updates {
            if let Some(tenant) = &update.tenant {
                counters
                    .tenants
                    .insert(update.access_key.clone(), tenant.clone());
            }
            counters
                .dirty
                .entry(dirty_key.to_string())
                .or_default()
                .insert(update.id);
            let stats = counters
                .access
                .entry(update.access_key.clone())
                .or_insert((0, update.last));
            stats.0 += update.count;
            stats.1 = stats.1.max(update.last);
            counters
                .syncs
                .entry(update.access_key.clone())
                .or_default()
                .unsynced += update.count;
            *counters
                .popular
                .entry(update.popular_key.clone())
                .or_default()
                .entry(update.id.to_string())
                .or_insert(0) += update.count;
        }
        for update in updates {
            if let Some(popular) = counters.popular.get_mut(&update.popular_key) {
                trim_to_most_read(popular, POPULAR_CAP);
            }
        }
        Ok(())
    }

    async fn take_dirty(&self, dirty_key: &str, max: usize) -> Result<Vec<uuid::Uuid>, CacheError> {
        let mut counters = self.counters();
        let Some(set) = counters.dirty.get_mut(dirty_key) else {
            return Ok(Vec::new());
        };
        let ids: Vec<uuid::Uuid> = set.iter().take(max).copied().collect();
        for id in &ids {
            set.remove(id);
        }
        Ok(ids)
    }

    async fn note_write(&self, key: &str, id: uuid::Uuid, ttl: Duration) -> Result<(), CacheError> {
        let now = std::time::Instant::now();
        let mut counters = self.counters();
        counters.noted.retain(|_, (_, expires)| *expires > now);
        let (set, expires) = counters
            .noted
            .entry(key.to_string())
            .or_insert_with(|| (Default::default(), now));
        set.insert(id);
        *expires = now + ttl;
        Ok(())
    }

    async fn take_writes(&self, key: &str, max: usize) -> Result<Vec<uuid::Uuid>, CacheError> {
        let mut counters = self.counters();
        let Some((set, expires)) = counters.noted.get_mut(key) else {
            return Ok(Vec::new());
        };
        if *expires <= std::time::Instant::now() {
            counters.noted.remove(key);
            return Ok(Vec::new());
        }
        let ids: Vec<uuid::Uuid> = set.iter().take(max).copied().collect();
        for id in &ids {
            set.remove(id);
        }
        Ok(ids)
    }

    async fn mark_dirty(&self, dirty_key: &str, ids: &[uuid::Uuid]) -> Result<(), CacheError> {
        self.counters()
            .dirty
            .entry(dirty_key.to_string())
            .or_default()
            .extend(ids.iter().copied());
        Ok(())
    }

    async fn unsynced_reads(&self, access_key: &str) -> Result<Option<UnsyncedReads>, CacheError> {
        let counters = self.counters();
        let Some(last) = counters.access.get(access_key).map(|stats| stats.1) else {
            return Ok(None);
        };
        let Some(state) = counters
            .syncs
            .get(access_key)
            .filter(|state| state.unsynced > 0)
        else {
            return Ok(None);
        };
        let unfinished = state
            .syncing_fields
            .clone()
            .filter(|_| state.syncing > 0)
            .map(|fields| UnfinishedSync {
                count: state.syncing,
                fields,
            });
        Ok(Some(UnsyncedReads {
            count: state.unsynced,
            last,
            tenant: counters.tenants.get(access_key).cloned(),
            unfinished,
        }))
    }

    async fn begin_sync(
        &self,
        access_key: &str,
        count: u64,
        fields: Bytes,
    ) -> Result<(), CacheError> {
        let mut counters = self.counters();
        if counters.access.contains_key(access_key) {
            let state = counters.syncs.entry(access_key.to_string()).or_default();
            state.syncing = count;
            state.syncing_fields = Some(fields);
        }
        Ok(())
    }

    async fn commit_synced(
        &self,
        access_key: &str,
        count: u64,
        read_syncs_key: &str,
    ) -> Result<(), CacheError> {
        let mut counters = self.counters();
        *counters
            .integers
            .entry(read_syncs_key.to_string())
            .or_insert(0) += 1;
        // Not if the memory's delete dropped its counts meanwhile.
        if counters.access.contains_key(access_key) {
            let state = counters.syncs.entry(access_key.to_string()).or_default();
            state.unsynced = state.unsynced.saturating_sub(count);
            state.synced += count;
            state.syncing = 0;
            state.syncing_fields = None;
            state.syncs += 1;
        }
        Ok(())
    }

    async fn read_counts(&self, access_keys: &[String]) -> Result<Vec<ReadCounts>, CacheError> {
        Ok(self.counters().read_counts(access_keys))
    }

    async fn fill_search(&self, fill: SearchFill<'_>) -> Result<bool, CacheError> {
        // Under one lock, as a sync's commit moves its counts and the read syncs together.
        let counters = self.counters();
        let counts = counters.read_counts(fill.access_keys);
        let read_syncs = counters
            .integers
            .get(fill.read_syncs_key)
            .copied()
            .unwrap_or(0);
        if read_syncs != fill.read_syncs || counts.iter().any(|counts| counts.syncing > 0) {
            return Ok(false);
        }
        let body = fill.body(counts.iter().map(|counts| counts.synced));
        self.entries.insert(
            fill.key.to_string(),
            Entry {
                value: body,
                ttl: fill.ttl,
            },
        );
        Ok(true)
    }

    async fn get_with_read_counts(
        &self,
        key: &str,
        access_key: &str,
    ) -> Result<(Option<Bytes>, ReadCounts), CacheError> {
        let value = self.get(key).await?;
        let counts = self.read_counts(&[access_key.to_string()]).await?;
        Ok((value, counts.into_iter().next().unwrap_or_default()))
    }

    async fn access_stats(&self, key: &str) -> Result<Option<(u64, DateTime<Utc>)>, CacheError> {
        Ok(self.counters().access.get(key).copied())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let cache = InProcessCache::new(100);
        cache
            .set("short", Bytes::from_static(b"a"), Duration::from_millis(30))
            .await
            .expect("set");
        cache
            .set("long", Bytes::from_static(b"b"), Duration::from_secs(60))
            .await
            .expect("set");
        assert!(cache.get("short").await.expect("get").is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get("short").await.expect("get").is_none());
        assert!(cache.get("long").await.expect("get").is_some());
        cache
            .set_if_absent("long", Bytes::from_static(b"c"), Duration::from_secs(60))
            .await
            .expect("set");
        assert_eq!(
            cache.get("long").await.expect("get"),
            Some(Bytes::from_static(b"b"))
        );
        cache
            .set_if_absent("short", Bytes::from_static(b"d"), Duration::from_secs(60))
            .await
            .expect("set");
        assert_eq!(
            cache.get("short").await.expect("get"),
            Some(Bytes::from_static(b"d"))
        );
    }

    #[tokio::test]
    async fn counters_and_popularity() {
        let cache = InProcessCache::new(100);
        assert_eq!(cache.counter("gen").await.expect("counter"), 0);
        assert_eq!(cache.increment("gen").await.expect("incr"), 1);
        let now = Utc::now();
        let update = |id: u128, count| FlushedReads {
            id: uuid::Uuid::from_u128(id),
            access_key: format!("access:{id}"),
            tenant: None,
            popular_key: "popular".into(),
            count,
            last: now,
        };
        cache
            .record_reads(&[update(1, 2), update(2, 5), update(1, 1)], "dirty")
            .await
            .expect("record");
        assert_eq!(
            cache.access_stats("access:1").await.expect("stats"),
            Some((3, now))
        );
        let top = cache.popular("popular", 1);
        assert_eq!(top, vec![(uuid::Uuid::from_u128(2).to_string(), 5)]);
    }
}
