//! Read counts on answers: every read so far counted, exactly, though the vector store's
//! payload is updated only every `worker.accessSyncInterval` (the protocol is explained in
//! `crate::core::reads`). An answer shows the counts from before its own read, as the legacy
//! service's does.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::l1::L1Record;
use super::{row_id, Core};
use crate::backend::cache::ReadCounts;
use crate::backend::BackendError;
use crate::core::reads::counted;
use crate::keys::Scope;
use crate::memory::StoredMemory;

impl Core {
    /// The read counts of the memories `ids`; `None` when the cache cannot say (the answer
    /// then shows the counts its body has).
    async fn read_counts(&self, ids: &[Uuid]) -> Option<Vec<ReadCounts>> {
        if ids.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.access(*id)).collect();
        match self.cache.read_counts(&keys).await {
            Ok(counts) => Some(counts),
            Err(error) if error.breaker_open() => None,
            Err(error) => {
                tracing::debug!(%error, "read counts unreadable; answering with the stored ones");
                None
            }
        }
    }

    /// A memory's body as an answer shows it, from the counts read with it.
    pub(super) fn counted_body(
        &self,
        scope: &Scope,
        id: Uuid,
        body: Bytes,
        counts: ReadCounts,
    ) -> Bytes {
        let extra = self.access.extra_reads(scope, id, counts);
        self.with_extra_reads(body, extra)
    }

    /// An L1 record as an answer shows it: the counts read with it, and this process's reads
    /// since; `None` when this process no longer knows its reads since (read it again).
    pub(super) fn counted_l1(&self, scope: &Scope, id: Uuid, record: L1Record) -> Option<Bytes> {
        let (since, last) = self.access.reads_since(scope, id, record.local)?;
        let count = record.counts.unsynced + since;
        let last = record.counts.last.map_or(last, |cached| cached.max(last));
        if count == 0 {
            return Some(record.body);
        }
        Some(match &record.counted {
            Some(counted) => counted.with_reads(self.layout.as_ref(), count, last),
            None => self.with_extra_reads(record.body, Some((count, last))),
        })
    }

    /// `body` with `extra` reads added to the counts it shows.
    fn with_extra_reads(&self, body: Bytes, extra: Option<(u64, DateTime<Utc>)>) -> Bytes {
        let Some(extra) = extra else {
            return body;
        };
        match serde_json::from_slice::<StoredMemory>(&body) {
            Ok(memory) => serde_json::to_vec(&counted(self.layout.as_ref(), memory, Some(extra)))
                .map(Bytes::from)
                .unwrap_or(body),
            Err(_) => body,
        }
    }

    /// A search answer's rows with every read of their memories counted (one cache round
    /// trip for all of them): the reads the cache has not synced, the reads synced since the
    /// rows' counts were read (`synced_at_fill`, for an answer from the result cache), and this
    /// process's own not yet flushed. Shown as stored when the cache cannot say. A row
    /// without an id (not one memgate or the legacy service wrote) is shown as stored.
    pub(super) async fn counted_rows(
        &self,
        scope: &Scope,
        rows: Vec<StoredMemory>,
        synced_at_fill: Option<&HashMap<Uuid, u64>>,
    ) -> Vec<StoredMemory> {
        let row_ids: Vec<Option<Uuid>> = rows.iter().map(row_id).collect();
        let ids: Vec<Uuid> = row_ids.iter().flatten().copied().collect();
        let Some(counts) = self.read_counts(&ids).await else {
            return rows;
        };
        let mut counts = ids.iter().zip(&counts);
        rows.into_iter()
            .zip(&row_ids)
            .map(|(memory, id)| match (id, counts.next()) {
                (Some(id), Some((_, counts))) => {
                    let since_fill = synced_at_fill
                        .and_then(|base| base.get(id))
                        .map_or(0, |base| counts.synced.saturating_sub(*base));
                    let counts = ReadCounts {
                        unsynced: counts.unsynced + since_fill,
                        ..*counts
                    };
                    let extra = self.access.extra_reads(scope, *id, counts);
                    counted(self.layout.as_ref(), memory, extra)
                }
                _ => memory,
            })
            .collect()
    }
}
