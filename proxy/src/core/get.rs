//! Reading one memory: L1 → the cache store's record (with its read counts, in one step) →
//! the vector store. A record read from the cache store fills L1; one read from the vector
//! store fills the cache store in the background.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::counted_body::CountedBody;
use super::error::internal;
use super::l1::L1Record;
use super::{Answer, Core, CoreError, Degraded, MemoryJson, Reads};
use crate::backend::cache::ReadCounts;
use crate::backend::BackendError;
use crate::core::reads::FlushMark;
use crate::keys::Scope;
use crate::memory::is_tombstone;

/// Whether a cached record is still provisional (its write not yet applied).
pub(super) fn is_processing(record: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: Option<&'a str>,
    }
    serde_json::from_slice::<Status>(record).is_ok_and(|r| r.status == Some("processing"))
}

impl Core {
    /// One memory, with every read of it so far counted. An L1 entry past half its life is
    /// read again in the background by the hit that finds it so, so a memory read often is
    /// never waited for when its entry would expire.
    pub async fn get(
        self: &Arc<Self>,
        scope: &Scope,
        id: Uuid,
    ) -> Result<Answer<MemoryJson>, CoreError> {
        self.get_counted_by(scope, id, Reads::Count).await
    }

    /// [`Core::get`], its read counted by `reads`.
    pub async fn get_counted_by(
        self: &Arc<Self>,
        scope: &Scope,
        id: Uuid,
        reads: Reads,
    ) -> Result<Answer<MemoryJson>, CoreError> {
        let key = self.keys.memory(scope, id);
        self.l1.settled(&key).await;
        let epoch = self.l1.epoch();
        if let Some(record) = self.l1.get(&key).await {
            let refresh = record.claim_refresh(self.settings.l1_ttl);
            if let Some(body) = self.counted_l1(scope, id, record) {
                self.count_reads(reads, scope, [&id]);
                if refresh {
                    self.refresh_later(scope.clone(), id);
                }
                return Ok(Answer::hit(MemoryJson(body)));
            }
            self.l1.discard(&key).await;
        }
        let flush_mark = self.access.before_count_read();
        let read = self.cached_record(&key, id).await;
        // Read before the vector store is: a sync in between can make this one answer count
        // its reads twice; nothing keeps it (L1 is filled from the cache store only).
        let counts = read.as_ref().map(|(_, counts)| *counts).unwrap_or_default();
        if let Ok((Some(body), _)) = read {
            if is_tombstone(&body) {
                return Err(CoreError::NotFound(id));
            }
            self.remember(scope, id, key, &body, counts, flush_mark, epoch)
                .await;
            let body = self.counted_body(scope, id, body, counts);
            self.count_reads(reads, scope, [&id]);
            return Ok(Answer::hit(MemoryJson(body)));
        }
        let confirmed = read.is_ok();
        let mut memory = match (self.stored(scope, id).await?, confirmed) {
            (Some(memory), _) => memory,
            (None, true) => return Err(CoreError::NotFound(id)),
            // Its create may be acknowledged and not applied yet: only the cache could say.
            (None, false) => return Err(CoreError::MaybeExists(id)),
        };
        if !memory.contains_key("id") {
            // Not written by the legacy service or memgate, which keep it in the payload.
            memory.insert("id".into(), Value::String(id.to_string()));
        }
        memory.insert("status".into(), Value::String("ready".into()));
        let body = Bytes::from(serde_json::to_vec(&memory).map_err(internal)?);
        let answer = MemoryJson(self.counted_body(scope, id, body.clone(), counts));
        self.count_reads(reads, scope, [&id]);
        if !confirmed {
            return Ok(Answer::miss(answer, Some(Degraded::Unconfirmed)));
        }
        // Into the cache store, and from there into L1 at the next read, with its counts.
        self.fill_record_later(key, body, id, counts.syncs);
        Ok(Answer::miss(answer, None))
    }

    /// The record under `key` and the memory's read counts, read in one step from the cache
    /// store; `Err` when it cannot say.
    async fn cached_record(&self, key: &str, id: Uuid) -> Result<(Option<Bytes>, ReadCounts), ()> {
        let access_key = self.keys.access(id);
        let read = self.cache.get_with_read_counts(key, &access_key).await;
        match read {
            Ok(read) => Ok(read),
            Err(error) if error.breaker_open() => Err(()),
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed");
                Err(())
            }
        }
    }

    /// Puts a record read from the cache store (with its counts, after `flush_mark`, at
    /// `epoch`) into L1. Provisional records stay out, so `ready` shows as soon as it is
    /// stored.
    #[allow(clippy::too_many_arguments)]
    async fn remember(
        &self,
        scope: &Scope,
        id: Uuid,
        key: String,
        body: &Bytes,
        counts: ReadCounts,
        flush_mark: FlushMark,
        epoch: u64,
    ) {
        let local = self.access.after_count_read(scope, id, flush_mark);
        if let (false, Some(local)) = (is_processing(body), local) {
            let record = L1Record::new(
                body.clone(),
                CountedBody::of(body, self.layout.access_fields()).map(Arc::new),
                counts,
                local,
            );
            self.l1.fill(key, record, epoch).await;
        }
    }

    /// Reads an L1 entry's record again in the background (see [`Core::get`]); a read that
    /// fails leaves the entry to expire.
    fn refresh_later(self: &Arc<Self>, scope: Scope, id: Uuid) {
        let core = self.clone();
        tokio::spawn(async move {
            let key = core.keys.memory(&scope, id);
            // As a read does: never what a drop in progress is removing, never over a write.
            core.l1.settled(&key).await;
            let epoch = core.l1.epoch();
            let flush_mark = core.access.before_count_read();
            if let Ok((Some(body), counts)) = core.cached_record(&key, id).await {
                if !is_tombstone(&body) {
                    core.remember(&scope, id, key, &body, counts, flush_mark, epoch)
                        .await;
                }
            }
        });
    }

    /// Stores a record read from the vector store in the background, unless a read sync ended
    /// since its counts were read ([`crate::backend::cache::CacheStore::fill_record`]).
    fn fill_record_later(&self, key: String, record: Bytes, id: Uuid, syncs: u64) {
        let cache = self.cache.clone();
        let access_key = self.keys.access(id);
        let ttl = self.settings.memory_ttl;
        tokio::spawn(async move {
            let fill = cache.fill_record(&key, record, ttl, &access_key, syncs);
            match fill.await {
                Err(error) if !error.breaker_open() => {
                    tracing::warn!(%error, key, "cache write failed")
                }
                _ => {}
            }
        });
    }
}
