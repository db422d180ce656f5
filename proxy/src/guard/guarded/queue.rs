//! The write queue behind its guard (the cache store's: both are the same Redis).

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::Guarded;
use crate::backend::queue::{
    Finish, Finished, Job, QueueError, QueueStats, ReadSync, Revision, Submission, Submitted,
    WriteQueue,
};

#[async_trait]
impl WriteQueue for Guarded<dyn WriteQueue> {
    /// A full Redis refusing the write answered: the breaker stays closed
    /// ([`crate::backend::BackendError::is_answer`]).
    async fn submit(&self, submission: Submission) -> Result<Submitted, QueueError> {
        self.guard("submit", self.inner.submit(submission)).await
    }

    async fn prepare(&self) -> Result<(), QueueError> {
        self.guard("prepare", self.inner.prepare()).await
    }

    async fn take(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Job>, QueueError> {
        self.guard("take", self.inner.take(consumer, max, wait))
            .await
    }

    async fn claim_stale(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
        held: &HashSet<String>,
    ) -> Result<Vec<Job>, QueueError> {
        let claim = self.inner.claim_stale(consumer, min_idle, max, held);
        self.guard("claim_stale", claim).await
    }

    async fn finish(&self, job: &Job, finish: Finish) -> Result<Finished, QueueError> {
        self.guard("finish", self.inner.finish(job, finish)).await
    }

    async fn read_versioned(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<(Option<Bytes>, u64), QueueError> {
        let read = self.inner.read_versioned(record_key, revision_key);
        self.guard("read_versioned", read).await
    }

    async fn forget_settled(
        &self,
        record_key: &str,
        revision_key: &str,
    ) -> Result<bool, QueueError> {
        let forget = self.inner.forget_settled(record_key, revision_key);
        self.guard("forget_settled", forget).await
    }

    async fn commit_read_sync(&self, sync: ReadSync<'_>) -> Result<bool, QueueError> {
        self.guard("commit_read_sync", self.inner.commit_read_sync(sync))
            .await
    }

    async fn revision(&self, revision_key: &str) -> Result<Revision, QueueError> {
        self.guard("revision", self.inner.revision(revision_key))
            .await
    }

    async fn lock(&self, key: &str, owner: &str, lease: Duration) -> Result<bool, QueueError> {
        self.guard("lock", self.inner.lock(key, owner, lease)).await
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), QueueError> {
        self.guard("unlock", self.inner.unlock(key, owner)).await
    }

    async fn keep_alive(
        &self,
        consumer: &str,
        leases: &[(String, String)],
        lease: Duration,
    ) -> Result<(), QueueError> {
        let keep_alive = self.inner.keep_alive(consumer, leases, lease);
        self.guard("keep_alive", keep_alive).await
    }

    /// A health probe: straight to the queue.
    async fn consumers(&self, within: Duration) -> Result<u64, QueueError> {
        self.inner.consumers(within).await
    }

    /// A health probe: straight to the queue.
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.inner.stats().await
    }

    fn stream(&self) -> &str {
        self.inner.stream()
    }
}
