//! Each concern's implementation, as the config chose it: the cache and the queues (Redis,
//! or this process), the vector store (Qdrant Edge, or a Qdrant server) and its collection, the
//! embedding and enrichment providers, the layout.

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::backend::cache::{CacheStore, InProcessCache, RedisCache};
use crate::backend::embeddings::{Embedder, HashingEmbedder, OpenAiEmbedder};
use crate::backend::enrichment::{Enricher, LocalEnricher, OpenAiEnricher};
use crate::backend::queue::{
    InProcessQueue, Journal, RedisQueue, Replication, WriteQueue, ASSOC_STREAM, WRITES_STREAM,
};
use crate::backend::vectors::{
    CollectionSpec, EdgeStore, QdrantStore, ShardSpec, VectorError, VectorStore,
};
use crate::config::{
    CacheBackend, Config, Durability, EmbeddingProvider, EnrichmentProvider, RedisConfig,
    VectorBackend,
};
use crate::layout::Layout;

/// The implementation of each concern, as the config chose them.
#[derive(Clone)]
pub struct Backends {
    pub cache: Arc<dyn CacheStore>,
    /// The `writes` stream.
    pub queue: Arc<dyn WriteQueue>,
    /// The `assoc` stream: association discovery after a create or a content change.
    pub assoc_queue: Arc<dyn WriteQueue>,
    /// The same cache on a connection of its own, for bulk background writes (access
    /// batches), so they never queue ahead of a request's reads.
    pub background_cache: Arc<dyn CacheStore>,
    pub vectors: Arc<dyn VectorStore>,
    pub embedder: Arc<dyn Embedder>,
    pub enricher: Arc<dyn Enricher>,
    /// How the legacy service keeps a memory.
    pub layout: Arc<dyn Layout>,
}

impl Backends {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        Self::with_vectors(config, vector_store(config)?)
    }

    /// The backends `config` names, on a vector store opened already (one a test or the
    /// benchmark shares between parts: Qdrant Edge is opened once per process).
    pub fn with_vectors(config: &Config, vectors: Arc<dyn VectorStore>) -> anyhow::Result<Self> {
        let (cache, (queue, assoc_queue)) = cache_and_queues(config)?;
        let background_cache = match config.cache.backend {
            CacheBackend::Memory => cache.clone(),
            CacheBackend::Redis => redis_cache(config)?,
        };
        let dimensions =
            usize::try_from(config.embeddings.dimensions).context("embeddings.dimensions")?;
        let embedder: Arc<dyn Embedder> = match config.embeddings.provider {
            EmbeddingProvider::Hashing => {
                Arc::new(HashingEmbedder::new(&config.embeddings.model, dimensions))
            }
            EmbeddingProvider::Openai => Arc::new(OpenAiEmbedder::new(
                &config.openai.base_url,
                config.openai.api_key.as_deref(),
                &config.embeddings.model,
                dimensions,
                config.openai.timeout,
            )),
        };
        let layout = crate::layout::from_config(&config.layout);
        let enricher: Arc<dyn Enricher> = match config.enrichment.provider {
            EnrichmentProvider::Local => Arc::new(LocalEnricher::new()),
            EnrichmentProvider::Openai => Arc::new(OpenAiEnricher::new(
                &config.openai.base_url,
                config.openai.api_key.as_deref(),
                &config.enrichment.model,
                config.openai.timeout,
                layout.chat_recipe(),
            )),
        };
        Ok(Self {
            cache,
            queue,
            assoc_queue,
            background_cache,
            vectors,
            embedder,
            enricher,
            layout,
        })
    }
}

/// The vector store `config` names: Qdrant Edge opened at `vectors.path`, or a Qdrant server.
pub fn vector_store(config: &Config) -> anyhow::Result<Arc<dyn VectorStore>> {
    Ok(match config.vectors.backend {
        VectorBackend::Edge => {
            let path = config
                .vectors
                .path
                .clone()
                .or_else(|| config.data_dir.as_deref().map(super::data_dir::vectors_dir));
            Arc::new(EdgeStore::open(path.as_deref()).context("vectors.path")?)
        }
        VectorBackend::Qdrant => {
            let url = config
                .vectors
                .url
                .as_deref()
                .context("vectors.url is required")?;
            let rest_url = config
                .vectors
                .rest_url()
                .context("vectors.restUrl cannot be derived from vectors.url")?;
            Arc::new(
                QdrantStore::connect(
                    url,
                    &rest_url,
                    config.vectors.api_key.as_deref(),
                    &config.vectors.collection,
                    config.vectors.timeout,
                    config.vectors.cluster.as_ref(),
                )
                .context("vectors.url")?,
            )
        }
    })
}

/// The queues' handles: `writes`, then `assoc`.
type Queues = (Arc<dyn WriteQueue>, Arc<dyn WriteQueue>);

/// What a submit waits for, by `redis.durability`.
fn replication(redis: &RedisConfig) -> Option<Replication> {
    match redis.effective_durability() {
        Durability::Local => None,
        Durability::Replicated => Some(Replication {
            replicas: redis.replicas,
            timeout: redis.replication_timeout,
        }),
    }
}

/// `redis.url` and `redis.password`.
fn redis_endpoint(config: &Config) -> anyhow::Result<(&str, Option<&str>)> {
    let url = config
        .redis
        .url
        .as_deref()
        .context("redis.url is required")?;
    Ok((url, config.redis.password.as_deref()))
}

/// A Redis cache on a connection of its own.
fn redis_cache(config: &Config) -> anyhow::Result<Arc<dyn CacheStore>> {
    let (url, password) = redis_endpoint(config)?;
    Ok(Arc::new(
        RedisCache::connect_lazy(url, password, config.redis.timeout).context("redis.url")?,
    ))
}

/// Redis for the cache and both queues, or all three in this process.
fn cache_and_queues(config: &Config) -> anyhow::Result<(Arc<dyn CacheStore>, Queues)> {
    let cache: Arc<dyn CacheStore> = match config.cache.backend {
        CacheBackend::Memory => Arc::new(InProcessCache::new(
            config.cache.l1.max_entries.max(100_000),
        )),
        CacheBackend::Redis => redis_cache(config)?,
    };
    let (writes, assoc): Queues = match config.cache.backend {
        CacheBackend::Memory => {
            let journal = config
                .data_dir
                .as_deref()
                .map(|dir| {
                    let path = super::data_dir::journal_file(dir);
                    Journal::open(&path).with_context(|| format!("dataDir: {}", path.display()))
                })
                .transpose()?;
            let durable = |queue: InProcessQueue| match &journal {
                Some(journal) => queue.durable(journal.clone()),
                None => queue,
            };
            let assoc = Arc::new(durable(InProcessQueue::new(
                ASSOC_STREAM,
                cache.clone(),
                None,
            )));
            let writes = Arc::new(durable(InProcessQueue::new(
                WRITES_STREAM,
                cache.clone(),
                Some(assoc.clone()),
            )));
            (writes, assoc)
        }
        CacheBackend::Redis => {
            let (url, password) = redis_endpoint(config)?;
            let prefix = config.key_prefix();
            let queue = |stream: &str, follow_up: Option<&str>| {
                RedisQueue::connect_lazy(
                    url,
                    password,
                    config.redis.timeout,
                    &prefix,
                    stream,
                    follow_up,
                    replication(&config.redis),
                )
                .context("redis.url")
            };
            (
                Arc::new(queue(WRITES_STREAM, Some(ASSOC_STREAM))?),
                Arc::new(queue(ASSOC_STREAM, None)?),
            )
        }
    };
    Ok((cache, (writes, assoc)))
}

pub fn collection_spec(config: &Config, layout: &dyn Layout) -> CollectionSpec {
    CollectionSpec {
        name: config.vectors.collection.clone(),
        dimensions: config.embeddings.dimensions,
        distance: config.vectors.distance,
        scope_field: config.scope.as_ref().map(|scope| scope.field.clone()),
        indexes: layout.indexed_fields(),
        shards: config.vectors.cluster.as_ref().map(|cluster| ShardSpec {
            shard_number: cluster.shard_number,
            replication_factor: cluster.replication_factor,
            write_consistency_factor: cluster.write_consistency_factor,
        }),
    }
}

/// Prepares the collection. A size mismatch is fatal; an unreachable store is retried in the
/// background (the proxy serves legacy traffic meanwhile, and `/readyz` says not ready).
pub(super) async fn prepare_collection(
    vectors: Arc<dyn VectorStore>,
    spec: CollectionSpec,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    match vectors.ensure_collection(&spec).await {
        Ok(()) => Ok(None),
        Err(error @ VectorError::DimensionMismatch { .. }) => {
            Err(error).context("vectors.collection")
        }
        Err(error) => {
            tracing::warn!(%error, "vector store not ready; retrying in the background");
            Ok(Some(tokio::spawn(async move {
                let waited = ensure_collection_retrying(
                    vectors.as_ref(),
                    &spec,
                    std::time::Duration::from_millis(500),
                    std::time::Duration::from_secs(30),
                )
                .await;
                match waited {
                    Ok(()) => tracing::info!("vector store ready"),
                    Err(error) => {
                        tracing::error!(%error, "the vector store's collection does not fit this config")
                    }
                }
            })))
        }
    }
}

/// Makes sure the collection exists, trying again with capped exponential backoff (from
/// `first` up to `most`) while the vector store cannot; a collection of other dimensions is
/// final.
pub(super) async fn ensure_collection_retrying(
    vectors: &dyn VectorStore,
    spec: &CollectionSpec,
    first: std::time::Duration,
    most: std::time::Duration,
) -> Result<(), VectorError> {
    use backon::Retryable;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(most)
        .without_max_times();
    (|| vectors.ensure_collection(spec))
        .retry(backoff)
        .when(|error| !matches!(error, VectorError::DimensionMismatch { .. }))
        .notify(|error, delay| {
            tracing::warn!(%error, ?delay, "vector store not ready; trying again");
        })
        .await
}

/// Runs the vector store's optimizer every `interval` (Qdrant Edge: indexes what was written
/// since; a no-op for a Qdrant server), in the process that writes.
pub fn spawn_vector_optimizer(
    vectors: Arc<dyn VectorStore>,
    interval: std::time::Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(error) = vectors.optimize().await {
                tracing::warn!(%error, "optimizing the vector store failed; retrying later");
            }
        }
    })
}
