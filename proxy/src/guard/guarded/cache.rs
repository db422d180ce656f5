//! The cache store behind its guard.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Guarded;
use crate::backend::cache::{
    CacheError, CacheStore, FlushedReads, GenerationalValue, ReadCounts, SearchFill, UnsyncedReads,
};
use crate::keys::GenerationalKey;

#[async_trait]
impl CacheStore for Guarded<dyn CacheStore> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        self.guard("get", self.inner.get(key)).await
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.guard("set", self.inner.set(key, value, ttl)).await
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.guard("set_if_absent", self.inner.set_if_absent(key, value, ttl))
            .await
    }

    async fn fill_record(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        access_key: &str,
        syncs: u64,
    ) -> Result<(), CacheError> {
        let fill = self.inner.fill_record(key, value, ttl, access_key, syncs);
        self.guard("fill_record", fill).await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.guard("delete", self.inner.delete(key)).await
    }

    async fn counter(&self, key: &str) -> Result<u64, CacheError> {
        self.guard("counter", self.inner.counter(key)).await
    }

    async fn get_at_generation(
        &self,
        counter_keys: &[String; 2],
        read_syncs_key: &str,
        key: &GenerationalKey,
    ) -> Result<GenerationalValue, CacheError> {
        let read = self
            .inner
            .get_at_generation(counter_keys, read_syncs_key, key);
        self.guard("get_at_generation", read).await
    }

    async fn fill_search(&self, fill: SearchFill<'_>) -> Result<bool, CacheError> {
        self.guard("fill_search", self.inner.fill_search(fill))
            .await
    }

    async fn increment(&self, key: &str) -> Result<u64, CacheError> {
        self.guard("increment", self.inner.increment(key)).await
    }

    async fn record_reads(
        &self,
        updates: &[FlushedReads],
        dirty_key: &str,
    ) -> Result<(), CacheError> {
        self.guard("record_reads", self.inner.record_reads(updates, dirty_key))
            .await
    }

    async fn take_dirty(&self, dirty_key: &str, max: usize) -> Result<Vec<Uuid>, CacheError> {
        self.guard("take_dirty", self.inner.take_dirty(dirty_key, max))
            .await
    }

    async fn mark_dirty(&self, dirty_key: &str, ids: &[Uuid]) -> Result<(), CacheError> {
        self.guard("mark_dirty", self.inner.mark_dirty(dirty_key, ids))
            .await
    }

    async fn unsynced_reads(&self, access_key: &str) -> Result<Option<UnsyncedReads>, CacheError> {
        self.guard("unsynced_reads", self.inner.unsynced_reads(access_key))
            .await
    }

    async fn begin_sync(
        &self,
        access_key: &str,
        count: u64,
        fields: Bytes,
    ) -> Result<(), CacheError> {
        self.guard(
            "begin_sync",
            self.inner.begin_sync(access_key, count, fields),
        )
        .await
    }

    async fn commit_synced(
        &self,
        access_key: &str,
        count: u64,
        read_syncs_key: &str,
    ) -> Result<(), CacheError> {
        let commit = self.inner.commit_synced(access_key, count, read_syncs_key);
        self.guard("commit_synced", commit).await
    }

    async fn read_counts(&self, access_keys: &[String]) -> Result<Vec<ReadCounts>, CacheError> {
        self.guard("read_counts", self.inner.read_counts(access_keys))
            .await
    }

    async fn get_with_read_counts(
        &self,
        key: &str,
        access_key: &str,
    ) -> Result<(Option<Bytes>, ReadCounts), CacheError> {
        let read = self.inner.get_with_read_counts(key, access_key);
        self.guard("get_with_read_counts", read).await
    }

    async fn access_stats(&self, key: &str) -> Result<Option<(u64, DateTime<Utc>)>, CacheError> {
        self.guard("access_stats", self.inner.access_stats(key))
            .await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        self.guard("get_many", self.inner.get_many(keys)).await
    }

    async fn note_write(&self, key: &str, id: Uuid, ttl: Duration) -> Result<(), CacheError> {
        self.guard("note_write", self.inner.note_write(key, id, ttl))
            .await
    }

    async fn take_writes(&self, key: &str, max: usize) -> Result<Vec<Uuid>, CacheError> {
        self.guard("take_writes", self.inner.take_writes(key, max))
            .await
    }

    async fn most_read(&self, key: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        self.guard("most_read", self.inner.most_read(key, limit))
            .await
    }

    /// A health probe: straight to the store.
    async fn ping(&self) -> Result<(), CacheError> {
        self.inner.ping().await
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}
