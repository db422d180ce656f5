//! The fast path: the sidecar answers Memory API calls itself from its caches and the vector
//! store instead of waiting on the legacy service.
//!
//! - `GET /memories/{id}`: L1 → cache store `mem:{id}` → vector store; a miss fills both caches.
//! - `POST /memories/search`: result cache (keyed by the search generation and the normalised
//!   request) → embedding cache → embed → vector search with filters and `hnsw_ef`.
//! - `POST /memories`: validated and stored synchronously (embed, upsert, cache, bump the
//!   search generation).
//!
//! A cache store that fails is skipped (logged and counted); a vector store or embedder that
//! fails is a 503, since nothing else here can answer for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use moka::future::Cache;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::access::AccessRecorder;
use crate::cache::CacheStore;
use crate::embeddings::EmbeddingCache;
use crate::error::ApiError;
use crate::keys::{KeySpace, Scope};
use crate::memory::{CreateMemoryRequest, MemoryStatus, NormalizedSearch, StoredMemory};
use crate::metrics::Metrics;
use crate::vectors::{MemoryFilter, MemoryPoint, VectorQuery, VectorStore};

/// Whether an answer came from a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Not a cacheable operation (writes, forwarded requests).
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// A fast-path answer: the JSON body, its status and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FastAnswer {
    pub status: http::StatusCode,
    pub body: Bytes,
    pub cache: CacheStatus,
}

/// The settings the fast path needs, and nothing else.
#[derive(Debug, Clone)]
pub struct FastPathSettings {
    pub memory_ttl: Duration,
    pub search_ttl: Duration,
    pub l1_entries: u64,
    pub l1_ttl: Duration,
    pub search_ef: u64,
    /// The payload field holding the tenant, when scoping is on.
    pub scope_field: Option<String>,
}

pub struct FastPath {
    cache: Arc<dyn CacheStore>,
    vectors: Arc<dyn VectorStore>,
    embeddings: Arc<EmbeddingCache>,
    keys: KeySpace,
    memories_l1: Cache<String, Bytes>,
    access: AccessRecorder,
    metrics: Metrics,
    settings: FastPathSettings,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Only the ids of a cached search answer, to record accesses on a hit.
#[derive(Deserialize)]
struct CachedIds {
    memories: Vec<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Uuid,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> ApiError {
    tracing::warn!(%error, "{what} failed");
    ApiError::unavailable(
        "dependency_unavailable",
        format!("{what} is unavailable: {error}"),
    )
}

impl FastPath {
    pub fn new(
        cache: Arc<dyn CacheStore>,
        vectors: Arc<dyn VectorStore>,
        embeddings: Arc<EmbeddingCache>,
        keys: KeySpace,
        access: AccessRecorder,
        metrics: Metrics,
        settings: FastPathSettings,
    ) -> Self {
        Self {
            memories_l1: Cache::builder()
                .max_capacity(settings.l1_entries)
                .time_to_live(settings.l1_ttl)
                .build(),
            cache,
            vectors,
            embeddings,
            keys,
            access,
            metrics,
            settings,
        }
    }

    fn cache_name(&self) -> &'static str {
        self.cache.backend_name()
    }

    fn vectors_name(&self) -> &'static str {
        self.vectors.backend_name()
    }

    /// A cache read whose failure is logged and treated as a miss.
    async fn cache_get(&self, key: &str, op: &str) -> Option<Bytes> {
        match self
            .metrics
            .observe(self.cache_name(), op, self.cache.get(key))
            .await
        {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(%error, key, "cache read failed; treating as a miss");
                None
            }
        }
    }

    /// Stores in the background: the answer does not wait for the cache write.
    fn cache_set_later(&self, key: String, value: Bytes, ttl: Duration) {
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let name = cache.backend_name();
            if let Err(error) = metrics
                .observe(name, "set", cache.set(&key, value, ttl))
                .await
            {
                tracing::warn!(%error, key, "cache write failed");
            }
        });
    }

    /// `GET /memories/{id}`.
    pub async fn get(&self, scope: &Scope, id: Uuid) -> Result<FastAnswer, ApiError> {
        let key = self.keys.memory(scope, id);
        if let Some(body) = self.memories_l1.get(&key).await {
            self.access.record(scope, [&id]);
            return Ok(FastAnswer {
                status: http::StatusCode::OK,
                body,
                cache: CacheStatus::Hit,
            });
        }
        if let Some(body) = self.cache_get(&key, "get_memory").await {
            self.memories_l1.insert(key, body.clone()).await;
            self.access.record(scope, [&id]);
            return Ok(FastAnswer {
                status: http::StatusCode::OK,
                body,
                cache: CacheStatus::Hit,
            });
        }
        let memory = self
            .metrics
            .observe(self.vectors_name(), "retrieve", self.vectors.retrieve(id))
            .await
            .map_err(|e| unavailable("the vector store", e))?;
        let memory = memory
            .filter(|memory| self.belongs_to(scope, memory))
            .ok_or_else(|| ApiError::not_found(format!("memory {id} does not exist")))?;
        let body =
            Bytes::from(serde_json::to_vec(&memory).map_err(|e| unavailable("serialization", e))?);
        self.memories_l1.insert(key.clone(), body.clone()).await;
        self.cache_set_later(key, body.clone(), self.settings.memory_ttl);
        self.access.record(scope, [&id]);
        Ok(FastAnswer {
            status: http::StatusCode::OK,
            body,
            cache: CacheStatus::Miss,
        })
    }

    /// Whether a stored memory is visible to this tenant.
    fn belongs_to(&self, scope: &Scope, memory: &StoredMemory) -> bool {
        match (&self.settings.scope_field, scope.value()) {
            (Some(field), Some(tenant)) => {
                memory.get(field).and_then(Value::as_str) == Some(tenant)
            }
            _ => true,
        }
    }

    /// `POST /memories/search`.
    pub async fn search(
        &self,
        scope: &Scope,
        search: NormalizedSearch,
    ) -> Result<FastAnswer, ApiError> {
        let params = serde_json::to_vec(&search).map_err(|e| unavailable("serialization", e))?;
        let generation = match self
            .metrics
            .observe(
                self.cache_name(),
                "search_generation",
                self.cache.counter(&self.keys.search_generation()),
            )
            .await
        {
            Ok(generation) => Some(generation),
            Err(error) => {
                tracing::warn!(%error, "search generation unreadable; not using the result cache");
                None
            }
        };
        let result_key =
            generation.map(|generation| self.keys.search_results(scope, generation, &params));
        if let Some(key) = &result_key {
            if let Some(body) = self.cache_get(key, "get_search").await {
                if let Ok(cached) = serde_json::from_slice::<CachedIds>(&body) {
                    self.access
                        .record(scope, cached.memories.iter().map(|m| &m.id));
                }
                return Ok(FastAnswer {
                    status: http::StatusCode::OK,
                    body,
                    cache: CacheStatus::Hit,
                });
            }
        }

        let (vector, _) = self
            .embeddings
            .embed(&search.query)
            .await
            .map_err(|e| unavailable("the embedding provider", e))?;
        let query = VectorQuery {
            vector: vector.as_ref().clone(),
            filter: MemoryFilter {
                scope: self
                    .settings
                    .scope_field
                    .clone()
                    .zip(scope.value().map(str::to_string)),
                memory_type: search.memory_type,
                min_importance: search.min_importance,
                emotional_range: search.emotional_range,
                date_range: search.date_range,
            },
            limit: u64::from(search.limit),
            score_threshold: search.similarity_threshold,
            ef: self.settings.search_ef,
        };
        let found = self
            .metrics
            .observe(self.vectors_name(), "search", self.vectors.search(query))
            .await
            .map_err(|e| unavailable("the vector store", e))?;

        let ids: Vec<Uuid> = found
            .iter()
            .filter_map(|m| m.memory.get("id").and_then(Value::as_str))
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let memories: Vec<Value> = found
            .into_iter()
            .map(|scored| {
                let mut memory = scored.memory;
                memory.insert("score".into(), Value::from(scored.score));
                Value::Object(memory)
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "memories": memories }))
            .map_err(|e| unavailable("serialization", e))?;
        let body = Bytes::from(body);
        if let Some(key) = result_key {
            self.cache_set_later(key, body.clone(), self.settings.search_ttl);
        }
        self.access.record(scope, ids.iter());
        Ok(FastAnswer {
            status: http::StatusCode::OK,
            body,
            cache: CacheStatus::Miss,
        })
    }

    /// `POST /memories`, stored synchronously: embed, upsert, cache, bump the search generation.
    pub async fn create(
        &self,
        scope: &Scope,
        request: CreateMemoryRequest,
    ) -> Result<FastAnswer, ApiError> {
        request.validate()?;
        let id = Uuid::now_v7();
        let content = request.content.clone();
        let mut memory = request.into_record(id, Utc::now(), MemoryStatus::Ready);
        if let (Some(field), Some(tenant)) = (&self.settings.scope_field, scope.value()) {
            memory.insert(field.clone(), Value::String(tenant.to_string()));
        }
        let mut vectors = self
            .metrics
            .observe(
                "embeddings",
                "embed",
                self.embeddings.embedder().embed(&[content]),
            )
            .await
            .map_err(|e| unavailable("the embedding provider", e))?;
        let vector = vectors
            .pop()
            .ok_or_else(|| unavailable("the embedding provider", "no vector returned"))?;
        self.metrics
            .observe(
                self.vectors_name(),
                "upsert",
                self.vectors.upsert(vec![MemoryPoint {
                    id,
                    vector,
                    memory: memory.clone(),
                }]),
            )
            .await
            .map_err(|e| unavailable("the vector store", e))?;
        let body =
            Bytes::from(serde_json::to_vec(&memory).map_err(|e| unavailable("serialization", e))?);
        let key = self.keys.memory(scope, id);
        self.memories_l1.insert(key.clone(), body.clone()).await;
        if let Err(error) = self
            .cache
            .set(&key, body.clone(), self.settings.memory_ttl)
            .await
        {
            tracing::warn!(%error, "cache write failed after create");
        }
        if let Err(error) = self.cache.increment(&self.keys.search_generation()).await {
            // Cached searches may miss this memory until their TTL ends.
            tracing::warn!(%error, "could not bump the search generation after create");
        }
        Ok(FastAnswer {
            status: http::StatusCode::CREATED,
            body,
            cache: CacheStatus::Bypass,
        })
    }

    /// Answers when the fast path's dependencies do.
    pub async fn check_ready(&self) -> Vec<(&'static str, Result<(), String>)> {
        let cache = self.cache.ping().await.map_err(|e| e.to_string());
        let vectors = self.vectors.health().await.map_err(|e| e.to_string());
        vec![(self.cache_name(), cache), (self.vectors_name(), vectors)]
    }
}
