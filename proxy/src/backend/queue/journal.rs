//! The on-disk journal of the in-process queue (`{dataDir}/queue.redb`): every job is written
//! (and synced to disk) before its write is acknowledged and removed when the job finishes,
//! so the jobs of acknowledged writes survive a restart or a crash of an embedded memgate.
//! One table per stream, keyed by the entry's sequence number. The store is `redb` (an
//! embedded, crash-safe key-value store: a commit returns once it is durable).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{QueueError, RecordWrite, WriteOp};

/// A job as the journal keeps it: what it takes to queue it again after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournaledJob {
    pub op: WriteOp,
    /// The memory's revision this job brings it to (none for follow-ups).
    pub revision: Option<u64>,
    /// The memory's revision counters' key (none for follow-ups).
    pub revision_key: Option<String>,
    /// The record readers saw when the write was acknowledged.
    pub record: Option<JournaledRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournaledRecord {
    pub key: String,
    /// The record's bytes, base64.
    pub value: String,
    pub ttl_ms: u64,
}

impl JournaledRecord {
    pub fn of(record: &RecordWrite) -> Self {
        Self {
            key: record.key.clone(),
            value: base64::engine::general_purpose::STANDARD.encode(&record.value),
            ttl_ms: u64::try_from(record.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    pub fn to_record(&self) -> Result<RecordWrite, String> {
        let value = base64::engine::general_purpose::STANDARD
            .decode(&self.value)
            .map_err(|error| format!("record {}: {error}", self.key))?;
        Ok(RecordWrite {
            key: self.key.clone(),
            value: Bytes::from(value),
            ttl: Duration::from_millis(self.ttl_ms),
        })
    }
}

/// The journal file, shared by the queues of one process.
#[derive(Clone)]
pub struct Journal {
    db: Arc<Database>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

fn journal_error(context: &str, error: impl std::fmt::Display) -> QueueError {
    QueueError::Journal(format!("{context}: {error}"))
}

impl Journal {
    /// Opens (or creates) the journal at `path`. One process at a time: a second open fails.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        let db = Database::create(path)
            .map_err(|error| journal_error(&format!("opening {}", path.display()), error))?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Writes `job` under `seq` in `stream`'s table; returns once it is on disk.
    pub async fn append(
        &self,
        stream: &'static str,
        seq: u64,
        job: &JournaledJob,
    ) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec(job).map_err(|error| journal_error("encoding", error))?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(|e| journal_error("append", e))?;
            {
                let mut table = txn
                    .open_table(TableDefinition::<u64, &[u8]>::new(stream))
                    .map_err(|e| journal_error("append", e))?;
                table
                    .insert(seq, bytes.as_slice())
                    .map_err(|e| journal_error("append", e))?;
            }
            txn.commit().map_err(|e| journal_error("append", e))
        })
        .await
    }

    /// Forgets the job `seq` of `stream` (it finished); returns once that is on disk.
    pub async fn remove(&self, stream: &'static str, seq: u64) -> Result<(), QueueError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(|e| journal_error("remove", e))?;
            {
                let mut table = txn
                    .open_table(TableDefinition::<u64, &[u8]>::new(stream))
                    .map_err(|e| journal_error("remove", e))?;
                table.remove(seq).map_err(|e| journal_error("remove", e))?;
            }
            txn.commit().map_err(|e| journal_error("remove", e))
        })
        .await
    }

    /// The jobs of `stream` not finished yet, in the order they were queued.
    pub async fn unfinished(
        &self,
        stream: &'static str,
    ) -> Result<Vec<(u64, JournaledJob)>, QueueError> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_read().map_err(|e| journal_error("read", e))?;
            let table = match txn.open_table(TableDefinition::<u64, &[u8]>::new(stream)) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(error) => return Err(journal_error("read", error)),
            };
            let mut jobs = Vec::new();
            for item in table.iter().map_err(|e| journal_error("read", e))? {
                let (seq, bytes) = item.map_err(|e| journal_error("read", e))?;
                let seq = seq.value();
                let job =
                    serde_json::from_slice(bytes.value()).map_err(|error| QueueError::Corrupt {
                        entry: format!("{stream}/{seq} in the journal"),
                        reason: error.to_string(),
                    })?;
                jobs.push((seq, job));
            }
            Ok(jobs)
        })
        .await
    }
}

/// Runs a journal step on the blocking pool (a commit waits for the disk).
async fn blocking<T: Send + 'static>(
    step: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(step)
        .await
        .map_err(|error| journal_error("journal task", error))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn job(n: u64) -> JournaledJob {
        JournaledJob {
            op: WriteOp::Delete {
                id: Uuid::from_u128(u128::from(n)),
                scope: None,
            },
            revision: Some(n),
            revision_key: Some(format!("rev:{n}")),
            record: Some(JournaledRecord::of(&RecordWrite {
                key: format!("mem:{n}"),
                value: Bytes::from_static(b"\x00tombstone\xff"),
                ttl: Duration::from_secs(60),
            })),
        }
    }

    #[tokio::test]
    async fn unfinished_jobs_survive_reopening_in_order_and_finished_ones_do_not() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("queue.redb");
        {
            let journal = Journal::open(&path).expect("opens");
            for n in [3, 1, 2] {
                journal.append("writes", n, &job(n)).await.expect("append");
            }
            journal.append("assoc", 9, &job(9)).await.expect("append");
            journal.remove("writes", 2).await.expect("remove");
        }
        let journal = Journal::open(&path).expect("reopens");
        let writes = journal.unfinished("writes").await.expect("reads");
        assert_eq!(writes, vec![(1, job(1)), (3, job(3))]);
        assert_eq!(
            writes[0].1.record.as_ref().expect("record").to_record(),
            Ok(RecordWrite {
                key: "mem:1".into(),
                value: Bytes::from_static(b"\x00tombstone\xff"),
                ttl: Duration::from_secs(60),
            })
        );
        assert_eq!(journal.unfinished("assoc").await.expect("reads").len(), 1);
        assert!(journal.unfinished("other").await.expect("reads").is_empty());
    }

    #[test]
    fn a_second_process_cannot_open_the_same_journal() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("queue.redb");
        let _first = Journal::open(&path).expect("opens");
        assert!(Journal::open(&path).is_err());
    }
}
