//! A read sync whose payload write fails without the worker knowing whether it landed (a
//! timeout after the vector store applied it, or one before): the next sync tells the two
//! apart from the payload, so the reads reach it exactly once, never twice and never lost.
//! A proxy and its worker on a real `redis-server` and Qdrant Edge; the fault is injected in
//! the vector store the worker writes through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use memgate::app::Backends;
use memgate::backend::vectors::{
    CollectionSpec, MemoryPoint, PayloadFilter, ScoredMemory, VectorError, VectorQuery, VectorStore,
};
use memgate::memory::StoredMemory;
use memgate_testkit::{eventually, test_config, RedisServer};
use redis::AsyncCommands;
use serde_json::{json, Value};
use uuid::Uuid;

/// How the next write of read counts fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Applied, then reported as timed out.
    LandedThenTimedOut,
    /// Timed out before it was applied.
    TimedOut,
}

/// A vector store whose next write of read counts (`accessCount`) fails as armed, once.
struct FlakyCounts {
    inner: Arc<dyn VectorStore>,
    armed: Mutex<Option<Fault>>,
    fired: AtomicBool,
}

impl FlakyCounts {
    fn arm(&self, fault: Fault) {
        *self.armed.lock().expect("lock") = Some(fault);
    }
}

#[async_trait]
impl VectorStore for FlakyCounts {
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        self.inner.ensure_collection(spec).await
    }
    async fn upsert(&self, points: Vec<MemoryPoint>) -> Result<(), VectorError> {
        self.inner.upsert(points).await
    }
    async fn retrieve(&self, id: Uuid) -> Result<Option<StoredMemory>, VectorError> {
        self.inner.retrieve(id).await
    }
    async fn search(&self, query: VectorQuery) -> Result<Vec<ScoredMemory>, VectorError> {
        self.inner.search(query).await
    }
    async fn scroll(
        &self,
        filter: &PayloadFilter,
        limit: u64,
    ) -> Result<Vec<StoredMemory>, VectorError> {
        self.inner.scroll(filter, limit).await
    }
    async fn delete(&self, ids: &[Uuid]) -> Result<(), VectorError> {
        self.inner.delete(ids).await
    }
    async fn vector_of(&self, id: Uuid) -> Result<Option<Vec<f32>>, VectorError> {
        self.inner.vector_of(id).await
    }
    async fn set_fields(&self, id: Uuid, fields: StoredMemory) -> Result<(), VectorError> {
        let fault = if fields.contains_key("accessCount") {
            self.armed.lock().expect("lock").take()
        } else {
            None
        };
        match fault {
            None => self.inner.set_fields(id, fields).await,
            Some(fault) => {
                if fault == Fault::LandedThenTimedOut {
                    self.inner.set_fields(id, fields).await?;
                }
                self.fired.store(true, Ordering::SeqCst);
                Err(VectorError::Timeout(Duration::from_secs(2)))
            }
        }
    }
    async fn health(&self) -> Result<(), VectorError> {
        self.inner.health().await
    }
    async fn optimize(&self) -> Result<bool, VectorError> {
        self.inner.optimize().await
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

async fn reads_reach_the_payload_once(fault: Fault) {
    let redis = RedisServer::start().expect("redis-server");
    let data = tempfile::tempdir().expect("dir");
    let config = test_config(&data.path().join("edge"), Some(redis.url()), None, None);
    let prefix = config.key_prefix();
    let mut backends = Backends::from_config(&config).expect("backends");
    let flaky = Arc::new(FlakyCounts {
        inner: backends.vectors.clone(),
        armed: Mutex::new(None),
        fired: AtomicBool::new(false),
    });
    backends.vectors = flaky.clone();
    let proxy = memgate::app::start_with(config.clone(), backends.clone(), None)
        .await
        .expect("proxy");
    let _worker = memgate::app::start_worker_with(config, backends)
        .await
        .expect("worker");
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", proxy.api_addr);
    let accepted: Value = http
        .post(url("/memories"))
        .json(&json!({"content": "count me once", "type": "episodic"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = accepted["id"].as_str().expect("id").to_string();
    let get = || async {
        let memory: Value = http
            .get(url(&format!("/memories/{id}")))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        memory
    };
    let ready = eventually(Duration::from_secs(10), || async {
        get().await["status"] == "ready"
    })
    .await;
    assert!(ready, "the memory was never stored");

    flaky.arm(fault);
    // An answer shows the reads before it: this one and two more make all of them.
    let shown = get().await["accessCount"].as_u64().expect("accessCount");
    get().await;
    get().await;
    let reads = shown + 3;

    let access = format!("{prefix}access:{id}");
    let mut redis_client = redis.client().await.expect("redis client");
    let settled = eventually(Duration::from_secs(10), || {
        let (flaky, access) = (flaky.clone(), access.clone());
        let mut redis_client = redis_client.clone();
        async move {
            let (unsynced, syncing): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                .arg(&access)
                .arg("unsynced")
                .arg("syncing")
                .query_async(&mut redis_client)
                .await
                .unwrap_or((Some(1), None));
            flaky.fired.load(Ordering::SeqCst) && unsynced == Some(0) && syncing.is_none()
        }
    })
    .await;
    assert!(
        settled,
        "the reads never reached the payload after the fault"
    );
    let payload = flaky
        .inner
        .retrieve(Uuid::parse_str(&id).expect("uuid"))
        .await
        .expect("retrieve")
        .expect("stored");
    assert_eq!(
        payload["accessCount"].as_u64(),
        Some(reads),
        "{fault:?}: every read in the payload, once"
    );
    let synced: u64 = redis_client.hget(&access, "synced").await.expect("synced");
    assert_eq!(synced, reads, "{fault:?}: counted as synced once");
    assert_eq!(
        get().await["accessCount"].as_u64(),
        Some(reads),
        "{fault:?}: an answer counts them once"
    );
}

#[tokio::test]
async fn a_sync_whose_write_landed_unconfirmed_is_not_added_twice() {
    reads_reach_the_payload_once(Fault::LandedThenTimedOut).await;
}

#[tokio::test]
async fn a_sync_whose_write_failed_is_added_at_the_next() {
    reads_reach_the_payload_once(Fault::TimedOut).await;
}
