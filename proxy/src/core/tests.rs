//! The core on in-process backends (the cache and queue of `serve --embedded`, Qdrant's code
//! embedded, the hashing embedder): its operations and errors, with no `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::backend::cache::InProcessCache;
use crate::backend::embeddings::{Embedder, EmbeddingCache, HashingEmbedder};
use crate::backend::queue::InProcessQueue;
use crate::backend::vectors::{CollectionSpec, EdgeStore, MemoryPoint};
use crate::config::DistanceMetric;
use crate::guard::breaker::{BreakerSettings, CircuitBreaker};
use crate::guard::dependency::Dependency;
use crate::guard::guarded::Guarded;
use crate::layout::{CldMemoryLayout, CldMemorySettings};
use crate::memory::{MemoryType, SearchRequest, StoreRequest, UpdateRequest};

const DIMENSIONS: usize = 64;

struct Stack {
    core: Arc<Core>,
    cache: Arc<dyn CacheStore>,
    keys: KeySpace,
    vectors: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    layout: Arc<dyn Layout>,
}

fn guard(name: &'static str, metrics: &Metrics) -> Dependency {
    let breaker = CircuitBreaker::new(
        name,
        BreakerSettings::default(),
        metrics.dependencies.breakers.clone(),
    );
    Dependency::new(breaker, Some(Duration::from_secs(5)), metrics.clone())
}

async fn stack() -> Stack {
    stack_with_l1_ttl(Duration::from_secs(10)).await
}

async fn stack_with_l1_ttl(l1_ttl: Duration) -> Stack {
    let metrics = Metrics::new();
    let cache: Arc<dyn CacheStore> = Arc::new(InProcessCache::new(1_000));
    let queue: Arc<dyn WriteQueue> = Arc::new(InProcessQueue::new("writes", cache.clone(), None));
    let vectors: Arc<dyn VectorStore> = Arc::new(EdgeStore::open(None).expect("an edge store"));
    let layout: Arc<dyn Layout> = Arc::new(CldMemoryLayout::new(CldMemorySettings {
        similarity_threshold: 0.1,
        memory_metadata: None,
        project: "box:/app".into(),
    }));
    vectors
        .ensure_collection(&CollectionSpec {
            name: "memories".into(),
            dimensions: DIMENSIONS as u64,
            distance: DistanceMetric::Cosine,
            scope_field: None,
            indexes: layout.indexed_fields(),
            shards: None,
        })
        .await
        .expect("a collection");
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::new("hashing", DIMENSIONS));
    let keys = KeySpace::new("t:");
    // The backends as `crate::app` gives them to the core: behind their guards.
    let redis = guard("cache", &metrics);
    let guarded_cache: Arc<dyn CacheStore> = Arc::new(Guarded::new(cache.clone(), redis.clone()));
    let guarded_embedder: Arc<dyn Embedder> = Arc::new(Guarded::new(
        embedder.clone(),
        guard("embeddings", &metrics),
    ));
    let embeddings = Arc::new(EmbeddingCache::new(
        guarded_embedder,
        guarded_cache.clone(),
        keys.clone(),
        100,
        Duration::from_secs(10),
        Duration::from_secs(60),
    ));
    let core = Arc::new(Core::new(
        CoreParts {
            cache: guarded_cache,
            vectors: Arc::new(Guarded::new(vectors.clone(), guard("vectors", &metrics))),
            embeddings,
            queue: Arc::new(Guarded::new(queue, redis)),
            layout: layout.clone(),
            keys: keys.clone(),
            access: ReadRecorder::new(Duration::from_secs(10)),
            metrics,
        },
        CoreSettings {
            memory_ttl: Duration::from_secs(3600),
            search_ttl: Duration::from_secs(60),
            l1_entries: 100,
            l1_ttl,
            search_ef: None,
            scope_field: None,
            idempotency_ttl: Duration::from_secs(3600),
            keyword_candidates: 50,
        },
    ));
    Stack {
        core,
        cache,
        keys,
        vectors,
        embedder,
        layout,
    }
}

fn store_request(content: &str) -> StoreRequest {
    StoreRequest {
        content: content.into(),
        memory_type: MemoryType::Semantic,
        summary: None,
        context: None,
        importance: Some(0.5),
    }
}

impl Stack {
    /// A memory as a worker would have stored it: in the vector store, embedded as the layout
    /// embeds it.
    async fn stored(&self, content: &str) -> Uuid {
        let id = Uuid::new_v4();
        let mut memory =
            self.layout
                .new_memory(id, &store_request(content), None, chrono::Utc::now());
        memory.insert("accessCount".into(), json!(2));
        let text = self.layout.embedded_text(&memory);
        let vector = self
            .embedder
            .embed(&[text])
            .await
            .expect("embedded")
            .remove(0);
        self.vectors
            .upsert(vec![MemoryPoint { id, vector, memory }])
            .await
            .expect("upserted");
        id
    }

    async fn get(&self, id: Uuid) -> Result<StoredMemory, CoreError> {
        self.core
            .get(&Scope::UNSCOPED, id)
            .await
            .and_then(|answer| answer.value.memory())
    }
}

fn field<'a>(memory: &'a StoredMemory, name: &str) -> &'a Value {
    memory.get(name).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_stored_memory_reads_back_at_once_as_processing() {
    let stack = stack().await;
    let stored = stack
        .core
        .store(&Scope::UNSCOPED, store_request("tea at noon"), None, None)
        .await
        .expect("stored");
    let memory = stored.memory.expect("the memory as stored");
    assert_eq!(field(&memory, "content"), "tea at noon");
    assert!(
        memory.get("status").is_none(),
        "no bookkeeping in what the client sees"
    );
    let read = stack.get(stored.id).await.expect("read back");
    assert_eq!(field(&read, "status"), "processing");
    assert_eq!(field(&read, "content"), "tea at noon");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_create() {
    let stack = stack().await;
    let scope = Scope::UNSCOPED;
    let first = stack
        .core
        .store(&scope, store_request("once"), Some("key-1"), None)
        .await
        .expect("stored");
    let again = stack
        .core
        .store(&scope, store_request("once"), Some("key-1"), None)
        .await
        .expect("replayed");
    assert_eq!(again.id, first.id);
    assert!(again.memory.is_none(), "a replay stores nothing");
}

#[tokio::test]
async fn updates_and_deletes_are_seen_at_once() {
    let stack = stack().await;
    let scope = Scope::UNSCOPED;
    let id = stack.stored("coffee in Paris").await;
    let update = UpdateRequest {
        importance: Some(0.9),
        ..UpdateRequest::default()
    };
    let changed = stack
        .core
        .change(&scope, id, update)
        .await
        .expect("changed");
    assert_eq!(field(&changed, "importance"), 0.9);
    let read = stack.get(id).await.expect("read");
    assert_eq!(field(&read, "importance"), 0.9);
    assert_eq!(field(&read, "status"), "processing");
    stack.core.delete(&scope, id).await.expect("deleted");
    assert_eq!(stack.get(id).await, Err(CoreError::NotFound(id)));
    assert_eq!(
        stack.core.delete(&scope, id).await,
        Err(CoreError::NotFound(id))
    );
}

#[tokio::test]
async fn unknown_memories_and_invalid_requests_are_errors_of_their_own() {
    let stack = stack().await;
    let scope = Scope::UNSCOPED;
    let unknown = Uuid::new_v4();
    assert_eq!(stack.get(unknown).await, Err(CoreError::NotFound(unknown)));
    let update = UpdateRequest {
        importance: Some(0.2),
        ..UpdateRequest::default()
    };
    assert_eq!(
        stack.core.change(&scope, unknown, update).await,
        Err(CoreError::NotFound(unknown))
    );
    let empty = stack
        .core
        .store(&scope, store_request("   "), None, None)
        .await
        .expect_err("refused");
    assert!(matches!(&empty, CoreError::Invalid(invalid) if invalid.code == "empty_content"));
    assert!(empty.is_refusal());
}

#[tokio::test]
async fn a_memory_read_from_the_vector_store_is_ready_and_counts_each_read() {
    let stack = stack().await;
    let id = stack.stored("the garden has tomatoes").await;
    let first = stack.get(id).await.expect("read");
    assert_eq!(field(&first, "status"), "ready");
    assert_eq!(
        field(&first, "accessCount"),
        2,
        "the stored count, before this read"
    );
    let second = stack.get(id).await.expect("read again");
    assert_eq!(field(&second, "accessCount"), 3, "the first read counted");
    let third = stack.get(id).await.expect("and again");
    assert_eq!(field(&third, "accessCount"), 4);
}

#[tokio::test]
async fn a_search_finds_by_meaning_then_from_its_cache_with_every_read_counted() {
    let stack = stack().await;
    let scope = Scope::UNSCOPED;
    let id = stack.stored("the garden has tomatoes").await;
    let search = || {
        serde_json::from_value::<SearchRequest>(json!({"query": "the garden has tomatoes"}))
            .expect("a search")
            .normalize(stack.core.default_similarity_threshold())
            .expect("valid")
    };
    let fresh = stack.core.search(&scope, search()).await.expect("found");
    assert_eq!(fresh.cache, CacheStatus::Miss);
    assert_eq!(fresh.value.len(), 1);
    assert_eq!(field(&fresh.value[0], "id"), &json!(id.to_string()));
    assert_eq!(field(&fresh.value[0], "accessCount"), 2);
    assert!(fresh.value[0].get("score").is_some());
    // The result cache is filled in the background.
    let mut cached = None;
    for _ in 0..50 {
        let answer = stack.core.search(&scope, search()).await.expect("found");
        if answer.cache == CacheStatus::Hit {
            cached = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cached = cached.expect("a cached answer");
    let count = field(&cached.value[0], "accessCount")
        .as_u64()
        .expect("a count");
    assert!(count >= 3, "the reads before it counted, got {count}");
}

#[tokio::test]
async fn a_blank_search_without_filters_finds_nothing() {
    let stack = stack().await;
    stack.stored("anything").await;
    let search = serde_json::from_value::<SearchRequest>(json!({"query": "  "}))
        .expect("a search")
        .normalize(0.5)
        .expect("valid");
    let answer = stack
        .core
        .search(&Scope::UNSCOPED, search)
        .await
        .expect("answered");
    assert!(answer.value.is_empty());
}

#[tokio::test]
async fn the_lower_rungs_answer_by_keyword() {
    let stack = stack().await;
    let id = stack.stored("the garden has tomatoes").await;
    stack.stored("a note about trains").await;
    let search = serde_json::from_value::<SearchRequest>(json!({"query": "tomatoes please"}))
        .expect("a search")
        .normalize(0.5)
        .expect("valid");
    let answer = stack
        .core
        .lower_rungs(&Scope::UNSCOPED, &search)
        .await
        .expect("a rung answered");
    assert_eq!(answer.degraded, Some(Degraded::Keyword));
    let ids: Vec<&Value> = answer.value.iter().map(|m| field(m, "id")).collect();
    assert_eq!(ids, vec![&json!(id.to_string())]);
}

#[tokio::test]
async fn a_hit_past_half_an_entrys_life_reads_it_again_in_the_background() {
    let stack = stack_with_l1_ttl(Duration::from_secs(2)).await;
    let id = stack.stored("first words").await;
    let key = stack.keys.memory(&Scope::UNSCOPED, id);
    // From the vector store into the cache store, then from there into L1.
    stack.get(id).await.expect("read");
    let mut cached = false;
    for _ in 0..100 {
        if stack.cache.get(&key).await.expect("cache").is_some() {
            cached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(cached, "the record reached the cache store");
    stack.get(id).await.expect("into L1");
    // Changed behind L1's back (as another sidecar's write would be).
    let mut changed = stack.get(id).await.expect("from L1");
    changed.insert("content".into(), json!("second words"));
    let record = bytes::Bytes::from(serde_json::to_vec(&changed).expect("json"));
    stack
        .cache
        .set(&key, record, Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(
        field(&stack.get(id).await.expect("L1"), "content"),
        "first words"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // This hit still answers from L1, and starts the refresh.
    stack.get(id).await.expect("L1, past half its life");
    let mut refreshed = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if field(&stack.get(id).await.expect("read"), "content") == "second words" {
            refreshed = true;
            break;
        }
    }
    assert!(refreshed, "the entry was read again before it expired");
}
