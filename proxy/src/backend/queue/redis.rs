//! [`WriteQueue`] on Redis streams. Commands go over a multiplexed connection; the blocking
//! `XREADGROUP` gets a connection of its own so it never holds up the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::backend::redis_link::{self, RedisLink};
use async_trait::async_trait;
use bytes::Bytes;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script, Value};
use uuid::Uuid;

use super::{
    parse_op, Finish, Finished, Job, QueueError, QueueStats, ReadSync, Revision, Submission,
    Submitted, WriteOp, WriteQueue, CONSUMER_GROUP, DEAD_LETTER_CAP,
};

/// Stores the record (without expiry: it is the only copy of the write until a worker applies
/// it), counts the memory's revision up and queues the op with it; optionally bumps the
/// generation. With an expected revision, a memory at another revision stores nothing; with an
/// idempotency key, a key seen before returns its id and stores nothing.
const SUBMIT: &str = include_str!("lua/submit.lua");

/// Records the applied revision; stores the record only when nothing acknowledged is pending
/// (and, for `record_if`, the memory is still at that revision), with its TTL, and lets the
/// revision counters expire with it; bumps the generation; dead-letters (capped, counting what
/// is dropped) or queues the follow-up; acknowledges and deletes the entry.
const FINISH: &str = include_str!("lua/finish.lua");

/// Redis's clock in milliseconds: every worker's presence is stamped and judged by one clock,
/// so a worker whose own clock is off is not taken for dead.
const NOW_MILLIS: &str = include_str!("lua/now_millis.lua");

/// Says a worker is alive (forgetting workers silent for an hour) and renews the leases it
/// still holds. Its entries are not touched: they are its own for as long as it says this.
const KEEP_ALIVE: &str = include_str!("lua/keep_alive.lua");

/// The entries handed out at least `ARGV[3]` ms ago of workers silent that long (up to
/// `ARGV[4]`), then the oldest `ARGV[5]` of the asking worker (`ARGV[2]`: it decides which of
/// them it lost track of; one lost is older than the ones taken after it, so it shows among the
/// oldest once those before it are done), as `{entry, owner, deliveries, ...}`. Silent workers with
/// nothing pending are removed from the group, so it does not grow with every restart. A
/// missing stream or group answers `NOGROUP`, as the stream commands do.
const FIND_ORPHANS: &str = include_str!("lua/find_orphans.lua");

/// How many workers said they were alive within `ARGV[1]` ms.
const COUNT_ALIVE: &str = include_str!("lua/count_alive.lua");

/// `body` run after [`NOW_MILLIS`], with `now` in scope.
fn timed_script(body: &str) -> Script {
    Script::new(&format!("{NOW_MILLIS}{body}"))
}

/// Deletes a record unless a write of its memory is pending.
const FORGET_SETTLED: &str = include_str!("lua/forget_settled.lua");

/// A read sync's end, in one step: the reads added to the payload are no longer unsynced nor
/// syncing and count in `synced` (if the access hash still exists), the scope's read syncs
/// (`KEYS[4]`) move on, and an existing record is replaced by one with the new counts when
/// none of the memory's writes is pending. Readers see the record and the counts from before
/// the sync or from after it, never one of each.
const COMMIT_READ_SYNC: &str = include_str!("lua/commit_read_sync.lua");

/// Deletes the lease only if `owner` holds it.
const UNLOCK: &str = include_str!("lua/unlock.lua");

/// A write is acknowledged once this many replicas have it too (`redis.durability:
/// replicated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub replicas: u32,
    /// How long `WAIT` waits for them.
    pub timeout: Duration,
}

pub struct RedisQueue {
    commands: RedisLink,
    blocking: RedisLink,
    /// Submits that wait for replicas, and their `WAIT`s (see [`RedisQueue::submit_replicated`]).
    durable: RedisLink,
    replication: Option<Replication>,
    name: String,
    writes: String,
    dead: String,
    dead_dropped: String,
    workers: String,
    follow_up: Option<String>,
    /// The key a script is given for one it does not get (no idempotency key, no record…):
    /// in the store's hash slot like every other (a cluster refuses keys of two slots in one
    /// script), and never written.
    none: String,
    submit: Script,
    finish: Script,
    keep_alive: Script,
    find_orphans: Script,
    count_alive: Script,
    unlock: Script,
    forget_settled: Script,
    commit_read_sync: Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

/// How many of its own oldest pending entries a worker looks at per claim, for ones it lost
/// track of: a few, so a claim stays short in Redis (looking at 2,500 took 4 ms with a backlog).
const OWN_ENTRIES_LOOKED_AT: usize = 64;

/// Longest `XREADGROUP` block; the blocking connection's timeout allows for it.
const MAX_BLOCK: Duration = Duration::from_secs(2);

/// Whether Redis lost the stream or its consumer group (a restart without data, FLUSHALL).
fn is_missing_group(error: &QueueError) -> bool {
    matches!(error, QueueError::Redis(error) if error.code() == Some("NOGROUP"))
}

impl RedisQueue {
    /// The queue on the stream `{prefix}{stream}` (dead letters in `{prefix}{stream}:dead`);
    /// finished jobs' follow-ups go to `{prefix}{follow_up}`; with `replication`, a submit is
    /// acknowledged once that many replicas have it.
    pub fn connect_lazy(
        url: &str,
        password: Option<&str>,
        timeout: Duration,
        prefix: &str,
        stream: &str,
        follow_up: Option<&str>,
        replication: Option<Replication>,
    ) -> Result<Self, QueueError> {
        let waited = replication.map_or(Duration::ZERO, |replication| replication.timeout);
        Ok(Self {
            commands: redis_link::connect_lazy(url, password, timeout)?,
            blocking: redis_link::connect_lazy(url, password, MAX_BLOCK + timeout)?,
            durable: redis_link::connect_lazy(url, password, timeout + waited)?,
            replication,
            name: stream.to_string(),
            writes: format!("{prefix}{stream}"),
            dead: format!("{prefix}{stream}:dead"),
            dead_dropped: format!("{prefix}{stream}:dead:dropped"),
            workers: format!("{prefix}{stream}:consumers"),
            none: format!("{prefix}{stream}:none"),
            follow_up: follow_up.map(|stream| format!("{prefix}{stream}")),
            submit: Script::new(SUBMIT),
            finish: Script::new(FINISH),
            keep_alive: timed_script(KEEP_ALIVE),
            find_orphans: timed_script(FIND_ORPHANS),
            count_alive: timed_script(COUNT_ALIVE),
            unlock: Script::new(UNLOCK),
            forget_settled: Script::new(FORGET_SETTLED),
            commit_read_sync: Script::new(COMMIT_READ_SYNC),
        })
    }

    /// Runs the submit script and `WAIT`s for the replicas in one pipeline on the connection
    /// kept for it: `WAIT` counts the replicas that have every write of its own connection, so
    /// both must go over the same one (a reconnect between them would make a new connection
    /// with nothing to wait for). Writes of other submits on it are waited for too; replicas
    /// confirm at once when asked, so that costs a round trip to them.
    async fn submit_replicated(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        replication: &Replication,
    ) -> Result<Vec<String>, QueueError> {
        let mut connection = self.durable.clone();
        let mut pipeline = redis::pipe();
        pipeline
            .invoke_script(invocation)
            .cmd("WAIT")
            .arg(replication.replicas)
            .arg(millis(replication.timeout).max(1));
        let answer: Result<(Vec<String>, i64), _> = pipeline.query_async(&mut connection).await;
        let (reply, confirmed) = match answer {
            // The script is not loaded on this node (a new primary): nothing ran.
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                invocation.load_async(&mut connection).await?;
                pipeline.query_async(&mut connection).await?
            }
            answer => answer?,
        };
        if confirmed < i64::from(replication.replicas) {
            return Err(QueueError::NotReplicated {
                confirmed,
                wanted: replication.replicas,
                waited: replication.timeout,
            });
        }
        Ok(reply)
    }

    fn job(&self, entry: StreamId, deliveries: u64) -> Result<Job, QueueError> {
        let raw = match entry.map.get("op") {
            Some(Value::BulkString(bytes)) => bytes.clone(),
            _ => {
                return Err(QueueError::Corrupt {
                    entry: entry.id.clone(),
                    reason: "no `op` field".into(),
                })
            }
        };
        let revision = entry.get::<u64>("rev");
        Ok(Job {
            op: parse_op(&entry.id, &raw)?,
            entry: entry.id,
            revision,
            deliveries,
        })
    }

    /// Parses entries; an unreadable one is moved to the dead letters, never retried forever.
    async fn jobs(
        &self,
        entries: Vec<StreamId>,
        deliveries: &HashMap<String, u64>,
    ) -> Result<Vec<Job>, QueueError> {
        let mut jobs = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = entry.id.clone();
            let delivered = deliveries.get(&id).copied().unwrap_or(1);
            match self.job(entry, delivered) {
                Ok(job) => jobs.push(job),
                Err(error) => {
                    tracing::error!(%error, entry = %id, "moving an unreadable queue entry to the dead letters");
                    redis::pipe()
                        .atomic()
                        .xadd(
                            &self.dead,
                            "*",
                            &[("entry", id.as_str()), ("error", &error.to_string())],
                        )
                        .ignore()
                        .xack(&self.writes, CONSUMER_GROUP, &[&id])
                        .ignore()
                        .xdel(&self.writes, &[&id])
                        .ignore()
                        .exec_async(&mut self.commands.clone())
                        .await?;
                }
            }
        }
        Ok(jobs)
    }

    /// Runs `call`; if Redis lost the stream or group, creates them again (no entry that is
    /// still there is skipped: the group starts at the stream's beginning) and runs it once more.
    async fn healing<T, F, Fut>(&self, call: F) -> Result<T, QueueError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        match call().await {
            Err(error) if is_missing_group(&error) => {
                tracing::warn!(stream = %self.writes, "the write queue's consumer group is gone; creating it again");
                self.prepare().await?;
                call().await
            }
            other => other,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn serialized(entry: &str, op: &WriteOp) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(op).map_err(|e| QueueError::Corrupt {
        entry: entry.to_string(),
        reason: e.to_string(),
    })
}

#[async_trait]
impl WriteQueue for RedisQueue {
    async fn submit(&self, submission: Submission) -> Result<Submitted, QueueError> {
        let op = serialized("new", &submission.op)?;
        let (idempotency_key, idempotency_ttl) = submission
            .idempotency
            .map(|(key, ttl)| (key, millis(ttl)))
            .unwrap_or_else(|| (self.none.clone(), 0));
        let expected = submission
            .expected_revision
            .map(|revision| revision.to_string())
            .unwrap_or_default();
        let mut invocation = self.submit.prepare_invoke();
        invocation
            .key(&submission.record.key)
            .key(&self.writes)
            .key(&idempotency_key)
            .key(&submission.generation_key)
            .key(&submission.revision_key)
            .key(&self.none)
            .arg(submission.record.value.as_ref())
            .arg(millis(submission.record.ttl))
            .arg(op)
            .arg(submission.op.id().to_string())
            .arg(idempotency_ttl.max(1))
            .arg(if submission.bump_generation { "1" } else { "0" })
            .arg(expected);
        let reply: Vec<String> = match &self.replication {
            None => invocation.invoke_async(&mut self.commands.clone()).await?,
            Some(replication) => self.submit_replicated(&invocation, replication).await?,
        };
        let corrupt = |reason: &str| QueueError::Corrupt {
            entry: "submit".into(),
            reason: reason.to_string(),
        };
        let number = |text: Option<&String>| -> Result<u64, QueueError> {
            text.and_then(|text| text.parse().ok())
                .ok_or_else(|| corrupt("a revision that is not a number"))
        };
        match reply.first().map(String::as_str) {
            Some("1") => Ok(Submitted::Queued {
                entry: reply.get(1).cloned().unwrap_or_default(),
                revision: number(reply.get(2))?,
            }),
            Some("0") => {
                let id = reply.get(1).map(String::as_str).unwrap_or_default();
                let id = Uuid::parse_str(id).map_err(|e| corrupt(&e.to_string()))?;
                Ok(Submitted::Replayed { id })
            }
            Some("2") => Ok(Submitted::Conflict {
                revision: number(reply.get(1))?,
            }),
            _ => Err(corrupt("an unknown answer")),
        }
    }

    async fn prepare(&self) -> Result<(), QueueError> {
        let created: Result<(), redis::RedisError> = self
            .commands
            .clone()
            .xgroup_create_mkstream(&self.writes, CONSUMER_GROUP, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn take(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Job>, QueueError> {
        let block = usize::try_from(wait.min(MAX_BLOCK).as_millis())
            .unwrap_or(1)
            .max(1);
        let options = StreamReadOptions::default()
            .group(CONSUMER_GROUP, consumer)
            .count(max.max(1))
            .block(block);
        let reply: Option<StreamReadReply> = self
            .healing(|| async {
                Ok(self
                    .blocking
                    .clone()
                    .xread_options(&[&self.writes], &[">"], &options)
                    .await?)
            })
            .await?;
        let entries = reply
            .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
            .unwrap_or_default();
        self.jobs(entries, &HashMap::new()).await
    }

    async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
        held: &HashSet<String>,
    ) -> Result<Vec<Job>, QueueError> {
        let found: Vec<(String, String, u64)> = self
            .healing(|| async {
                Ok(self
                    .find_orphans
                    .key(&self.writes)
                    .key(&self.workers)
                    .arg(CONSUMER_GROUP)
                    .arg(consumer)
                    .arg(millis(min_idle))
                    .arg(max.max(1))
                    .arg(OWN_ENTRIES_LOOKED_AT)
                    .invoke_async(&mut self.commands.clone())
                    .await?)
            })
            .await?;
        let orphans: HashMap<String, u64> = found
            .into_iter()
            .filter(|(entry, owner, _)| owner != consumer || !held.contains(entry))
            .take(max.max(1))
            .map(|(entry, _, deliveries)| (entry, deliveries))
            .collect();
        if orphans.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&String> = orphans.keys().collect();
        ids.sort();
        // `min_idle` again: of two workers claiming the same entries, only the first gets them.
        let claimed: redis::streams::StreamClaimReply = self
            .commands
            .clone()
            .xclaim(
                &self.writes,
                CONSUMER_GROUP,
                consumer,
                millis(min_idle),
                &ids,
            )
            .await?;
        let deliveries: HashMap<String, u64> = orphans
            .into_iter()
            .map(|(entry, delivered)| (entry, delivered + 1))
            .collect();
        self.jobs(claimed.ids, &deliveries).await
    }

    async fn finish(&self, job: &Job, finish: Finish) -> Result<Finished, QueueError> {
        let (record_key, record_value, record_ttl) = match &finish.record {
            Some(record) => (record.key.as_str(), record.value.as_ref(), record.ttl),
            None => (self.none.as_str(), &b""[..], Duration::from_secs(3600)),
        };
        let follow_up = match (&self.follow_up, &finish.follow_up) {
            (Some(stream), Some(op)) => (stream.as_str(), serialized(&job.entry, op)?),
            _ => (self.none.as_str(), Vec::new()),
        };
        let op = serde_json::to_string(&job.op).unwrap_or_default();
        let optional = |number: Option<u64>| number.map(|n| n.to_string()).unwrap_or_default();
        let (lease_key, lease_owner, lease) = match &finish.lease {
            Some((key, owner, lease)) => (key.as_str(), owner.as_str(), *lease),
            None => (self.none.as_str(), "", Duration::from_secs(1)),
        };
        let stored: i64 = self
            .finish
            .key(record_key)
            .key(&finish.revision_key)
            .key(&finish.generation_key)
            .key(&self.writes)
            .key(&self.dead)
            .key(follow_up.0)
            .key(&self.dead_dropped)
            .key(lease_key)
            .key(&self.none)
            .arg(record_value)
            .arg(millis(record_ttl))
            .arg(optional(finish.applied))
            .arg(optional(finish.record_if_revision))
            .arg(&job.entry)
            .arg(finish.dead_letter.as_deref().unwrap_or_default())
            .arg(op)
            .arg(follow_up.1)
            .arg(DEAD_LETTER_CAP)
            .arg(CONSUMER_GROUP)
            .arg(lease_owner)
            .arg(millis(lease))
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(match stored {
            0 => Finished::LeaseLost,
            _ => Finished::Stored,
        })
    }

    async fn read_versioned(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<(Option<Bytes>, u64), QueueError> {
        let (record, revision): (Option<Vec<u8>>, Option<u64>) = redis::pipe()
            .atomic()
            .get(record_key)
            .hget(revision_key, "rev")
            .query_async(&mut self.commands.clone())
            .await?;
        Ok((record.map(Bytes::from), revision.unwrap_or(0)))
    }

    async fn forget_settled(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<bool, QueueError> {
        let deleted: i64 = self
            .forget_settled
            .key(record_key)
            .key(revision_key)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(deleted > 0)
    }

    async fn commit_read_sync(&self, sync: ReadSync<'_>) -> Result<bool, QueueError> {
        let millis = u64::try_from(sync.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let replaced: i64 = self
            .commit_read_sync
            .key(sync.record_key)
            .key(sync.revision_key)
            .key(sync.access_key)
            .key(sync.read_syncs_key)
            .arg(sync.record.as_ref())
            .arg(millis)
            .arg(sync.count)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(replaced > 0)
    }

    async fn revision(&self, revision_key: &str) -> Result<Revision, QueueError> {
        let (acknowledged, applied): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(revision_key)
            .arg("rev")
            .arg("synced")
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(Revision {
            acknowledged: acknowledged.unwrap_or(0),
            applied: applied.unwrap_or(0),
        })
    }

    async fn lock(&self, key: &str, owner: &str, lease: Duration) -> Result<bool, QueueError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .query_async(&mut self.commands.clone())
            .await?;
        Ok(taken.is_some())
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), QueueError> {
        let _: i64 = self
            .unlock
            .key(key)
            .arg(owner)
            .invoke_async(&mut self.commands.clone())
            .await?;
        Ok(())
    }

    async fn keep_alive(
        &self,
        consumer: &str,
        leases: &[(String, String)],
        lease: Duration,
    ) -> Result<(), QueueError> {
        let mut invocation = self.keep_alive.key(&self.workers);
        for (key, _) in leases {
            invocation.key(key);
        }
        invocation.arg(consumer).arg(millis(lease));
        for (_, owner) in leases {
            invocation.arg(owner);
        }
        let _: i64 = invocation.invoke_async(&mut self.commands.clone()).await?;
        Ok(())
    }

    async fn consumers(&self, within: Duration) -> Result<u64, QueueError> {
        Ok(self
            .count_alive
            .key(&self.workers)
            .arg(millis(within))
            .invoke_async(&mut self.commands.clone())
            .await?)
    }

    fn stream(&self) -> &str {
        &self.name
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut connection = self.commands.clone();
        let length: u64 = connection.xlen(&self.writes).await?;
        let dead: u64 = connection.xlen(&self.dead).await?;
        let dead_dropped: Option<u64> = connection.get(&self.dead_dropped).await?;
        let pending: redis::streams::StreamPendingReply = connection
            .xpending(&self.writes, CONSUMER_GROUP)
            .await
            .unwrap_or_default();
        // Finished entries are deleted, so the first is the oldest unfinished; its id starts
        // with the time it was added (ms).
        let first: redis::streams::StreamRangeReply =
            connection.xrange_count(&self.writes, "-", "+", 1).await?;
        let oldest_age = first
            .ids
            .first()
            .and_then(|entry| entry_age(&entry.id, std::time::SystemTime::now()));
        Ok(QueueStats {
            length,
            pending: pending.count() as u64,
            dead,
            dead_dropped: dead_dropped.unwrap_or(0),
            oldest_age,
        })
    }
}

/// How long ago a stream entry id (`<ms>-<seq>`) was added, by `now`.
fn entry_age(id: &str, now: std::time::SystemTime) -> Option<Duration> {
    let added_ms: u64 = id.split_once('-')?.0.parse().ok()?;
    let added = std::time::UNIX_EPOCH + Duration::from_millis(added_ms);
    Some(now.duration_since(added).unwrap_or_default())
}

#[cfg(test)]
mod entry_age_tests {
    use super::*;

    #[test]
    fn an_entry_id_tells_when_it_was_added() {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_005_000);
        assert_eq!(
            entry_age("1700000000000-3", now),
            Some(Duration::from_secs(5))
        );
        // A clock behind Redis's reads as no age, not a panic.
        assert_eq!(entry_age("1700000009000-0", now), Some(Duration::ZERO));
        assert_eq!(entry_age("not-an-id", now), None);
    }
}
