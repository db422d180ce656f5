//! [`WriteQueue`] on Redis streams. Commands go over a multiplexed connection; the blocking
//! `XREADGROUP` gets a connection of its own so it never holds up the others.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::cache::connection_manager;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, Script, Value};
use uuid::Uuid;

use super::{
    parse_op, Finish, Job, QueueError, QueueStats, Submission, Submitted, WriteQueue,
    CONSUMER_GROUP,
};

/// Stores the record, queues the op, optionally bumps the generation; with an idempotency key,
/// a key seen before returns its id and changes nothing.
const SUBMIT: &str = r#"
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local entry = redis.call('XADD', KEYS[2], '*', 'op', ARGV[3])
if ARGV[6] == '1' then redis.call('INCR', KEYS[4]) end
return {1, entry}
"#;

pub struct RedisQueue {
    commands: ConnectionManager,
    blocking: ConnectionManager,
    name: String,
    writes: String,
    dead: String,
    follow_up: Option<String>,
    submit: Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

/// Longest `XREADGROUP` block; the blocking connection's timeout allows for it.
const MAX_BLOCK: Duration = Duration::from_secs(2);

impl RedisQueue {
    /// The queue on the stream `{prefix}{stream}` (dead letters in `{prefix}{stream}:dead`);
    /// finished jobs' follow-ups go to `{prefix}{follow_up}`.
    pub fn connect_lazy(
        url: &str,
        password: Option<&str>,
        timeout: Duration,
        prefix: &str,
        stream: &str,
        follow_up: Option<&str>,
    ) -> Result<Self, QueueError> {
        Ok(Self {
            commands: connection_manager(url, password, timeout)?,
            blocking: connection_manager(url, password, MAX_BLOCK + timeout)?,
            name: stream.to_string(),
            writes: format!("{prefix}{stream}"),
            dead: format!("{prefix}{stream}:dead"),
            follow_up: follow_up.map(|stream| format!("{prefix}{stream}")),
            submit: Script::new(SUBMIT),
        })
    }

    fn job(&self, entry: StreamId) -> Result<Job, QueueError> {
        let raw = match entry.map.get("op") {
            Some(Value::BulkString(bytes)) => bytes.clone(),
            _ => {
                return Err(QueueError::Corrupt {
                    entry: entry.id.clone(),
                    reason: "no `op` field".into(),
                })
            }
        };
        Ok(Job {
            op: parse_op(&entry.id, &raw)?,
            entry: entry.id,
        })
    }

    /// Parses entries; an unreadable one is moved to the dead letters, never retried forever.
    async fn jobs(&self, entries: Vec<StreamId>) -> Result<Vec<Job>, QueueError> {
        let mut jobs = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = entry.id.clone();
            match self.job(entry) {
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
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait]
impl WriteQueue for RedisQueue {
    async fn submit(&self, submission: Submission) -> Result<Submitted, QueueError> {
        let op = serde_json::to_vec(&submission.op).map_err(|e| QueueError::Corrupt {
            entry: "new".into(),
            reason: e.to_string(),
        })?;
        let (idempotency_key, idempotency_ttl) = submission
            .idempotency
            .map(|(key, ttl)| (key, millis(ttl)))
            .unwrap_or_default();
        let (queued, value): (i64, String) = self
            .submit
            .key(&submission.record.key)
            .key(&self.writes)
            .key(&idempotency_key)
            .key(&submission.generation_key)
            .arg(submission.record.value.as_ref())
            .arg(millis(submission.record.ttl))
            .arg(op)
            .arg(submission.op.id().to_string())
            .arg(idempotency_ttl.max(1))
            .arg(if submission.bump_generation { "1" } else { "0" })
            .invoke_async(&mut self.commands.clone())
            .await?;
        if queued == 1 {
            return Ok(Submitted::Queued { entry: value });
        }
        let id = Uuid::parse_str(&value).map_err(|e| QueueError::Corrupt {
            entry: idempotency_key,
            reason: e.to_string(),
        })?;
        Ok(Submitted::Replayed { id })
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
            .blocking
            .clone()
            .xread_options(&[&self.writes], &[">"], &options)
            .await?;
        let entries = reply
            .map(|reply| reply.keys.into_iter().flat_map(|key| key.ids).collect())
            .unwrap_or_default();
        self.jobs(entries).await
    }

    async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<Job>, QueueError> {
        let reply: StreamAutoClaimReply = self
            .commands
            .clone()
            .xautoclaim_options(
                &self.writes,
                CONSUMER_GROUP,
                consumer,
                millis(min_idle),
                "0-0",
                StreamAutoClaimOptions::default().count(max.max(1)),
            )
            .await?;
        self.jobs(reply.claimed).await
    }

    async fn finish(&self, job: &Job, finish: Finish) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(&finish.record.key)
            .arg(finish.record.value.as_ref())
            .arg("PX")
            .arg(millis(finish.record.ttl))
            .ignore();
        pipe.incr(&finish.generation_key, 1).ignore();
        if let Some(error) = &finish.dead_letter {
            let op = serde_json::to_string(&job.op).unwrap_or_default();
            pipe.xadd(
                &self.dead,
                "*",
                &[
                    ("entry", job.entry.as_str()),
                    ("op", op.as_str()),
                    ("error", error.as_str()),
                ],
            )
            .ignore();
        }
        if let (Some(stream), Some(op)) = (&self.follow_up, &finish.follow_up) {
            let op = serde_json::to_vec(op).map_err(|e| QueueError::Corrupt {
                entry: job.entry.clone(),
                reason: e.to_string(),
            })?;
            pipe.xadd(stream, "*", &[("op", op)]).ignore();
        }
        pipe.xack(&self.writes, CONSUMER_GROUP, &[&job.entry])
            .ignore();
        pipe.xdel(&self.writes, &[&job.entry]).ignore();
        pipe.exec_async(&mut self.commands.clone()).await?;
        Ok(())
    }

    fn stream(&self) -> &str {
        &self.name
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut connection = self.commands.clone();
        let length: u64 = connection.xlen(&self.writes).await?;
        let dead: u64 = connection.xlen(&self.dead).await?;
        let pending: redis::streams::StreamPendingReply = connection
            .xpending(&self.writes, CONSUMER_GROUP)
            .await
            .unwrap_or_default();
        Ok(QueueStats {
            length,
            pending: pending.count() as u64,
            dead,
        })
    }
}
