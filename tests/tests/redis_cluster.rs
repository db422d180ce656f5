//! memgate on a real Redis Cluster (three masters, `redis-server` in cluster mode) as its
//! external Redis: a proxy and a worker with `redis.url: redis+cluster://…`. Every operation
//! of the cache, the write queue and the read counts, one test each, through the REST API;
//! and every key, script and stream of one store in one hash slot (the store's hash tag).
//! The cache and read-sync contracts also run on a cluster (`cache_contract.rs`,
//! `read_sync.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use memgate::app::{RunningProxy, RunningWorker};
use memgate::config::Config;
use memgate_testkit::{eventually, start_proxy_with_backends, test_config, RedisCluster};
use serde_json::{json, Value};

struct Env {
    cluster: RedisCluster,
    config: Config,
    proxy: RunningProxy,
    vectors: std::sync::Arc<dyn memgate::backend::vectors::VectorStore>,
    _worker: RunningWorker,
    http: reqwest::Client,
    _data: std::path::PathBuf,
}

impl Env {
    async fn start() -> Env {
        let cluster = RedisCluster::start().await.expect("redis cluster");
        // Kept: the vector store flushes into it when the runtime ends, after the test.
        let data = tempfile::tempdir().expect("dir").keep();
        let config = test_config(&data, Some(cluster.url()), None, None);
        let (proxy, backends) = start_proxy_with_backends(config.clone())
            .await
            .expect("proxy");
        let vectors = backends.vectors.clone();
        let worker = memgate::app::start_worker_with(config.clone(), backends)
            .await
            .expect("worker");
        Env {
            cluster,
            config,
            proxy,
            vectors,
            _worker: worker,
            http: reqwest::Client::new(),
            _data: data,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.api_addr)
    }

    async fn create(&self, content: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.url("/memories"))
            .json(&json!({"content": content, "type": "semantic"}));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("create");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(&format!("/memories/{id}")))
            .send()
            .await
            .expect("get");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Waits until the worker applied the memory's writes (`ready`); the memory then.
    async fn ready(&self, id: &str) -> Value {
        let ready = eventually(Duration::from_secs(15), || async {
            let (status, memory) = self.get(id).await;
            status == 200 && memory["status"] == "ready"
        })
        .await;
        let (_, memory) = self.get(id).await;
        assert!(ready, "{id} applied: {memory}");
        memory
    }

    async fn search(&self, query: &str) -> (Vec<String>, Option<String>) {
        let response = self
            .http
            .post(self.url("/memories/search"))
            .json(&json!({"query": query, "limit": 10}))
            .send()
            .await
            .expect("search");
        let cache = response
            .headers()
            .get("x-memgate-cache")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body: Value = response.json().await.expect("JSON");
        let ids = body["memories"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| row["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (ids, cache)
    }
}

#[tokio::test]
async fn a_create_is_acknowledged_read_at_once_and_applied_by_the_worker() {
    let env = Env::start().await;
    let (status, created) = env.create("the cluster keeps the lantern", None).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, memory) = env.get(id).await;
    assert_eq!(status, 200, "readable at once: {memory}");
    assert_eq!(memory["content"], "the cluster keeps the lantern");
    env.ready(id).await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_create() {
    let env = Env::start().await;
    let (_, first) = env.create("once only", Some("key-1")).await;
    let (status, again) = env.create("once only", Some("key-1")).await;
    assert_eq!(status, 202);
    assert_eq!(first["id"], again["id"], "the same memory");
}

#[tokio::test]
async fn an_update_and_a_delete_are_applied_in_order() {
    let env = Env::start().await;
    let (_, created) = env.create("the first wording", None).await;
    let id = created["id"].as_str().expect("id").to_string();
    env.ready(&id).await;
    let patched = env
        .http
        .patch(env.url(&format!("/memories/{id}")))
        .json(&json!({"content": "the second wording"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), 202);
    assert_eq!(env.get(&id).await.1["content"], "the second wording");
    let memory = env.ready(&id).await;
    assert_eq!(memory["content"], "the second wording");
    let deleted = env
        .http
        .delete(env.url(&format!("/memories/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 202);
    assert_eq!(env.get(&id).await.0, 404, "gone at once");
    let uuid = uuid::Uuid::parse_str(&id).expect("uuid");
    let gone = eventually(Duration::from_secs(15), || async {
        matches!(env.vectors.retrieve(uuid).await, Ok(None))
    })
    .await;
    assert!(gone, "the worker deleted it from the vector store");
}

#[tokio::test]
async fn a_search_is_answered_then_served_from_its_cached_result() {
    let env = Env::start().await;
    let (_, created) = env.create("gulls circle the cluster's harbour", None).await;
    let id = created["id"].as_str().expect("id").to_string();
    env.ready(&id).await;
    let (ids, first) = env.search("gulls over the harbour").await;
    assert!(ids.contains(&id), "{ids:?}");
    assert_eq!(first.as_deref(), Some("miss"));
    let cached = eventually(Duration::from_secs(5), || async {
        env.search("gulls over the harbour").await.1.as_deref() == Some("hit")
    })
    .await;
    assert!(cached, "the second search is served from the result cache");
}

#[tokio::test]
async fn reads_are_counted_and_synced_to_the_vector_store() {
    let env = Env::start().await;
    let (_, created) = env.create("read me three times", None).await;
    let id = created["id"].as_str().expect("id").to_string();
    let before = env.ready(&id).await["accessCount"].as_u64().unwrap_or(0);
    for _ in 0..3 {
        env.get(&id).await;
    }
    // The reads reach the cluster, and the worker's read sync copies them into the payload.
    let synced = eventually(Duration::from_secs(15), || async {
        env.get(&id).await.1["accessCount"].as_u64().unwrap_or(0) >= before + 4
    })
    .await;
    assert!(synced, "every read counted");
}

#[tokio::test]
async fn every_key_of_a_store_is_in_one_hash_slot() {
    let env = Env::start().await;
    for content in ["one", "two", "three"] {
        let (_, created) = env.create(content, Some(content)).await;
        env.ready(created["id"].as_str().expect("id")).await;
    }
    env.search("one two three").await;
    let prefix = env.config.key_prefix();
    assert!(prefix.contains('{'), "the store's hash tag: {prefix}");
    let keys = env.cluster.keys_with_slots(&prefix).await.expect("keys");
    assert!(keys.len() > 5, "memgate's keys: {keys:?}");
    let slots: BTreeSet<u16> = keys.iter().map(|(_, slot)| *slot).collect();
    assert_eq!(slots.len(), 1, "one slot: {keys:?}");
}
