//! [`CacheStore`] on Redis through a [`RedisLink`], which multiplexes one connection to the
//! primary and reconnects in the background after a failure.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use uuid::Uuid;

use crate::backend::redis_link::{self, RedisLink};

use super::{
    CacheError, CacheStore, FlushedReads, GenerationalValue, ReadCounts, SearchFill,
    UnfinishedSync, UnsyncedReads, ACCESS_TTL, POPULAR_CAP,
};

fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Reads the generation (the sum of the global and the scope's counters), the scope's read
/// syncs (`KEYS[3]`) and the value at that generation in one round trip, and renews the scope
/// counters' 30 days. The key is built here from its parts, so the generation is never stale
/// by the time the value is read.
const GET_AT_GENERATION: &str = include_str!("lua/get_at_generation.lua");

/// A search answer stored under `KEYS[1]`: its head (`ARGV[1]`) and `{"<id>":<synced>,…}}`
/// (ids from `ARGV[4..]`, `synced` from their access hashes `KEYS[3..]`), for `ARGV[2]` ms, if
/// the scope's read syncs (`KEYS[2]`) are still `ARGV[3]` and no memory is being synced. A
/// full Redis skips it (`pcall`), as every cache fill. 1 if stored.
const FILL_SEARCH: &str = include_str!("lua/fill_search.lua");

/// Reads being added to the payload, and the fields written: only into a hash that exists
/// (one a delete dropped is not made again, without its expiry).
const BEGIN_SYNC: &str = include_str!("lua/begin_sync.lua");

/// Reads added to the payload: no longer unsynced nor syncing, counted in `synced`, one more
/// sync, if the hash still exists; and one more read sync of the scope (`KEYS[2]`).
const COMMIT_SYNCED: &str = include_str!("lua/commit_synced.lua");

/// A record and its read counts in one step: both from the same moment (for L1). A script,
/// not `MULTI`: Redis refuses `MULTI` once it is out of memory, and reads must go on then.
/// The fields are [`READ_COUNT_FIELDS`], in order.
const GET_WITH_READ_COUNTS: &str = include_str!("lua/get_with_read_counts.lua");

/// A record from the vector store, stored if the key holds nothing and no read sync ended
/// since its counts were read. A full Redis skips it (`pcall`), as every cache fill.
const FILL_RECORD: &str = include_str!("lua/fill_record.lua");

/// The fields of an access hash an answer needs.
const READ_COUNT_FIELDS: [&str; 5] = ["unsynced", "syncs", "last", "synced", "syncing"];

/// [`READ_COUNT_FIELDS`] as `HMGET` answers them.
type ReadCountFields = (
    Option<u64>,
    Option<u64>,
    Option<String>,
    Option<u64>,
    Option<u64>,
);

fn read_counts_of(key: &str, fields: ReadCountFields) -> Result<ReadCounts, CacheError> {
    let (unsynced, syncs, last, synced, syncing) = fields;
    Ok(ReadCounts {
        unsynced: unsynced.unwrap_or(0),
        syncs: syncs.unwrap_or(0),
        synced: synced.unwrap_or(0),
        syncing: syncing.unwrap_or(0),
        last: last.map(|last| parse_last(key, &last)).transpose()?,
    })
}

/// The `last` field of an access hash.
fn parse_last(key: &str, text: &str) -> Result<DateTime<Utc>, CacheError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| CacheError::Corrupt {
            key: key.to_string(),
            expected: "an RFC 3339 `last` field",
        })
}

#[derive(Clone)]
pub struct RedisCache {
    connection: RedisLink,
    get_at_generation: redis::Script,
    get_with_read_counts: redis::Script,
    fill_record: redis::Script,
    begin_sync: redis::Script,
    commit_synced: redis::Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Prepares a connection without dialing: the proxy starts while Redis is still down, and
    /// `/readyz` says so until it answers.
    pub fn connect_lazy(
        url: &str,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, CacheError> {
        let connection = redis_link::connect_lazy(url, password, timeout)?;
        Ok(Self {
            connection,
            get_at_generation: redis::Script::new(GET_AT_GENERATION),
            get_with_read_counts: redis::Script::new(GET_WITH_READ_COUNTS),
            fill_record: redis::Script::new(FILL_RECORD),
            begin_sync: redis::Script::new(BEGIN_SYNC),
            commit_synced: redis::Script::new(COMMIT_SYNCED),
        })
    }

    /// `SET key value PX ttl`, with `NX` when `only_if_absent`.
    async fn set_with_ttl(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        only_if_absent: bool,
    ) -> Result<(), CacheError> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value.as_ref()).arg("PX").arg(millis);
        if only_if_absent {
            command.arg("NX");
        }
        match command.exec_async(&mut self.connection.clone()).await {
            // Every value set here is a copy kept elsewhere too (an embedding, a search
            // answer, a record from the vector store): one a full Redis has no room for is
            // skipped, and Redis, which answered, is not counted as failing.
            Err(error) if error.code() == Some("OOM") => {
                tracing::debug!(key, "Redis is full; a cache fill was skipped");
                Ok(())
            }
            result => Ok(result?),
        }
    }

    /// The underlying connection, for the parts (the write queue) that speak Redis directly.
    pub fn connection(&self) -> RedisLink {
        self.connection.clone()
    }
}

#[async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let value: Option<Vec<u8>> = self.connection.clone().get(key).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.set_with_ttl(key, value, ttl, false).await
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.set_with_ttl(key, value, ttl, true).await
    }

    async fn fill_record(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        access_key: &str,
        syncs: u64,
    ) -> Result<(), CacheError> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: i64 = self
            .fill_record
            .key(key)
            .key(access_key)
            .arg(value.as_ref())
            .arg(millis)
            .arg(syncs)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let _: u64 = self.connection.clone().del(key).await?;
        Ok(())
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    async fn most_read(&self, key: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let last = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        Ok(self.connection.clone().zrevrange(key, 0, last).await?)
    }

    async fn counter(&self, key: &str) -> Result<u64, CacheError> {
        let value: Option<u64> = self.connection.clone().get(key).await?;
        Ok(value.unwrap_or(0))
    }

    async fn get_at_generation(
        &self,
        counter_keys: &[String; 2],
        read_syncs_key: &str,
        key: &crate::keys::GenerationalKey,
    ) -> Result<GenerationalValue, CacheError> {
        let (generation, read_syncs, value): (String, String, Option<Vec<u8>>) = self
            .get_at_generation
            .key(&counter_keys[0])
            .key(&counter_keys[1])
            .key(read_syncs_key)
            .arg(&key.head)
            .arg(&key.tail)
            .invoke_async(&mut self.connection.clone())
            .await?;
        let generation = generation.parse().map_err(|_| CacheError::Corrupt {
            key: counter_keys.join(" + "),
            expected: "an integer",
        })?;
        let read_syncs = read_syncs.parse().map_err(|_| CacheError::Corrupt {
            key: read_syncs_key.to_string(),
            expected: "an integer",
        })?;
        Ok(GenerationalValue {
            generation,
            read_syncs,
            value: value.map(Bytes::from),
        })
    }

    async fn increment(&self, key: &str) -> Result<u64, CacheError> {
        Ok(self.connection.clone().incr(key, 1u64).await?)
    }

    async fn record_reads(
        &self,
        updates: &[FlushedReads],
        dirty_key: &str,
    ) -> Result<(), CacheError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for update in updates {
            let last = update
                .last
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let id = update.id.to_string();
            if let Some(tenant) = &update.tenant {
                pipe.hset(&update.access_key, "tenant", tenant).ignore();
            }
            pipe.hincr(&update.access_key, "count", update.count)
                .ignore()
                .hincr(&update.access_key, "unsynced", update.count)
                .ignore()
                .hset(&update.access_key, "last", last)
                .ignore()
                .zincr(&update.popular_key, &id, update.count)
                .ignore()
                .sadd(dirty_key, &id)
                .ignore()
                .pexpire(&update.access_key, ttl_millis(ACCESS_TTL))
                .ignore();
        }
        // Bounded: the most read memories of each tenant stay, for as long as reads come.
        let popular: std::collections::BTreeSet<&str> = updates
            .iter()
            .map(|update| update.popular_key.as_str())
            .collect();
        for key in popular {
            let keep = isize::try_from(POPULAR_CAP).unwrap_or(isize::MAX);
            pipe.zremrangebyrank(key, 0, -keep - 1)
                .ignore()
                .pexpire(key, ttl_millis(ACCESS_TTL))
                .ignore();
        }
        pipe.exec_async(&mut self.connection.clone()).await?;
        Ok(())
    }

    async fn take_dirty(&self, dirty_key: &str, max: usize) -> Result<Vec<Uuid>, CacheError> {
        let ids: Vec<String> = redis::cmd("SPOP")
            .arg(dirty_key)
            .arg(max.max(1))
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect())
    }

    async fn note_write(&self, key: &str, id: Uuid, ttl: Duration) -> Result<(), CacheError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: () = redis::pipe()
            .atomic()
            .sadd(key, id.to_string())
            .ignore()
            .cmd("PEXPIRE")
            .arg(key)
            .arg(ttl_ms)
            .ignore()
            .query_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    async fn take_writes(&self, key: &str, max: usize) -> Result<Vec<Uuid>, CacheError> {
        self.take_dirty(key, max).await
    }

    async fn mark_dirty(&self, dirty_key: &str, ids: &[Uuid]) -> Result<(), CacheError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let _: u64 = self.connection.clone().sadd(dirty_key, ids).await?;
        Ok(())
    }

    async fn unsynced_reads(&self, access_key: &str) -> Result<Option<UnsyncedReads>, CacheError> {
        type Fields = (
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<Vec<u8>>,
        );
        let (count, last, tenant, syncing, syncing_fields): Fields = redis::cmd("HMGET")
            .arg(access_key)
            .arg(&["unsynced", "last", "tenant", "syncing", "syncing_fields"][..])
            .query_async(&mut self.connection.clone())
            .await?;
        let (Some(count), Some(last)) = (count.filter(|count| *count > 0), last) else {
            return Ok(None);
        };
        let unfinished = syncing
            .zip(syncing_fields)
            .filter(|(count, _)| *count > 0)
            .map(|(count, fields)| UnfinishedSync {
                count,
                fields: Bytes::from(fields),
            });
        Ok(Some(UnsyncedReads {
            count,
            last: parse_last(access_key, &last)?,
            tenant,
            unfinished,
        }))
    }

    async fn begin_sync(
        &self,
        access_key: &str,
        count: u64,
        fields: Bytes,
    ) -> Result<(), CacheError> {
        let _: i64 = self
            .begin_sync
            .key(access_key)
            .arg(count)
            .arg(fields.as_ref())
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    async fn commit_synced(
        &self,
        access_key: &str,
        count: u64,
        read_syncs_key: &str,
    ) -> Result<(), CacheError> {
        let _: i64 = self
            .commit_synced
            .key(access_key)
            .key(read_syncs_key)
            .arg(count)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    async fn read_counts(&self, access_keys: &[String]) -> Result<Vec<ReadCounts>, CacheError> {
        if access_keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in access_keys {
            pipe.cmd("HMGET").arg(key).arg(&READ_COUNT_FIELDS[..]);
        }
        let answers: Vec<ReadCountFields> = pipe.query_async(&mut self.connection.clone()).await?;
        access_keys
            .iter()
            .zip(answers)
            .map(|(key, fields)| read_counts_of(key, fields))
            .collect()
    }

    async fn fill_search(&self, fill: SearchFill<'_>) -> Result<bool, CacheError> {
        let millis = u64::try_from(fill.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // `EVAL`, not `EVALSHA`: one command whatever Redis has loaded, so a fill is never
        // sent again after `NOSCRIPT` behind the reads that follow it on the connection.
        let mut eval = redis::cmd("EVAL");
        eval.arg(FILL_SEARCH)
            .arg(2 + fill.access_keys.len())
            .arg(fill.key)
            .arg(fill.read_syncs_key)
            .arg(fill.access_keys)
            .arg(fill.body_head.as_ref())
            .arg(millis)
            .arg(fill.read_syncs);
        for id in fill.ids {
            eval.arg(id.to_string());
        }
        let stored: i64 = eval.query_async(&mut self.connection.clone()).await?;
        Ok(stored == 1)
    }

    async fn get_with_read_counts(
        &self,
        key: &str,
        access_key: &str,
    ) -> Result<(Option<Bytes>, ReadCounts), CacheError> {
        let (value, fields): (Option<Vec<u8>>, ReadCountFields) = self
            .get_with_read_counts
            .key(key)
            .key(access_key)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok((value.map(Bytes::from), read_counts_of(access_key, fields)?))
    }

    async fn access_stats(&self, key: &str) -> Result<Option<(u64, DateTime<Utc>)>, CacheError> {
        let (count, last): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(key)
            .arg("count")
            .arg("last")
            .query_async(&mut self.connection.clone())
            .await?;
        match (count, last) {
            (Some(count), Some(last)) => Ok(Some((count, parse_last(key, &last)?))),
            _ => Ok(None),
        }
    }

    async fn ping(&self) -> Result<(), CacheError> {
        redis::cmd("PING")
            .exec_async(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "redis"
    }
}
