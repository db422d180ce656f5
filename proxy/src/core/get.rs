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
use super::{Answer, Core, CoreError, Degraded, MemoryJson};
use crate::guard::dependency::CallError;
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
    /// One memory, with every read of it so far counted.
    pub async fn get(&self, scope: &Scope, id: Uuid) -> Result<Answer<MemoryJson>, CoreError> {
        let key = self.keys.memory(scope, id);
        self.l1.settled(&key).await;
        let epoch = self.l1.epoch();
        if let Some(record) = self.l1.get(&key).await {
            if let Some(body) = self.counted_l1(scope, id, record) {
                self.access.record(scope, [&id]);
                return Ok(Answer::hit(MemoryJson(body)));
            }
            self.l1.discard(&key).await;
        }
        let access_key = self.keys.access(id);
        let flush_mark = self.access.before_count_read();
        let read = match self
            .guards
            .cache
            .call(
                "get_memory",
                self.cache.get_with_read_counts(&key, &access_key),
            )
            .await
        {
            Ok(read) => Ok(read),
            Err(CallError::Open(_)) => Err(()),
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed");
                Err(())
            }
        };
        // Read before the vector store is: a sync in between can make this one answer count
        // its reads twice; nothing keeps it (L1 is filled from the cache store only).
        let counts = read.as_ref().map(|(_, counts)| *counts).unwrap_or_default();
        if let Ok((Some(body), _)) = read {
            if is_tombstone(&body) {
                return Err(CoreError::NotFound(id));
            }
            // Provisional records stay out of L1, so `ready` shows as soon as it is stored.
            let local = self.access.after_count_read(scope, id, flush_mark);
            if let (false, Some(local)) = (is_processing(&body), local) {
                let record = L1Record {
                    counted: CountedBody::of(&body, self.layout.access_fields()).map(Arc::new),
                    body: body.clone(),
                    counts,
                    local,
                };
                self.l1.fill(key, record, epoch).await;
            }
            let body = self.counted_body(scope, id, body, counts);
            self.access.record(scope, [&id]);
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
        self.access.record(scope, [&id]);
        if !confirmed {
            return Ok(Answer::miss(answer, Some(Degraded::Unconfirmed)));
        }
        // Into the cache store, and from there into L1 at the next read, with its counts.
        self.fill_record_later(key, body, id, counts.syncs);
        Ok(Answer::miss(answer, None))
    }

    /// Stores a record read from the vector store in the background, unless a read sync ended
    /// since its counts were read ([`crate::backend::cache::CacheStore::fill_record`]).
    fn fill_record_later(&self, key: String, record: Bytes, id: Uuid, syncs: u64) {
        let cache = self.cache.clone();
        let guard = self.guards.cache.clone();
        let access_key = self.keys.access(id);
        let ttl = self.settings.memory_ttl;
        tokio::spawn(async move {
            let fill = cache.fill_record(&key, record, ttl, &access_key, syncs);
            match guard.call("set", fill).await {
                Ok(()) | Err(CallError::Open(_)) => {}
                Err(error) => tracing::warn!(%error, key, "cache write failed"),
            }
        });
    }
}
