//! Wires the parts together from a [`Config`]: picks each concern's implementation, prepares
//! the collection, starts the API and admin servers and the background tasks, and stops them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::HeaderName;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::AccessRecorder;
use crate::admin::AdminState;
use crate::breaker::{BreakerSettings, CircuitBreaker};
use crate::cache::{CacheStore, InProcessCache, RedisCache};
use crate::config::{
    watch_rollout, CacheBackend, Config, ConfigSources, EmbeddingProvider, EnrichmentProvider,
    RolloutHandle, StreamableResponse, UpstreamMcpTransport, VectorBackend, WatchGuard,
};
use crate::core::{Core, CoreParts, CoreSettings, Degraded, Guards};
use crate::dependency::Dependency;
use crate::embeddings::{
    Embedder, EmbeddingCache, EmbeddingGuards, HashingEmbedder, OpenAiEmbedder,
};
use crate::enrichment::{Enricher, LocalEnricher, OpenAiEnricher};
use crate::keys::KeySpace;
use crate::layout::Layout;
use crate::legacy::{LegacyClient, LegacySettings};
use crate::mcp::{
    FrontSettings, HttpTransports, McpFront, Upstream, UpstreamSettings, UpstreamTarget,
};
use crate::metrics::Metrics;
use crate::queue::{InProcessQueue, RedisQueue, WriteQueue, ASSOC_STREAM, WRITES_STREAM};
use crate::routing::Router;
use crate::security::{Gate, WriteLimit};
use crate::server::{serve, ConnectionSettings, InFlightLimit};
use crate::service::ApiState;
use crate::vectors::{CollectionSpec, EdgeStore, QdrantStore, VectorError, VectorStore};
use crate::worker::{EmbeddingBatcher, Worker, WorkerSettings};

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
        let enricher: Arc<dyn Enricher> = match config.enrichment.provider {
            EnrichmentProvider::Local => Arc::new(LocalEnricher::new()),
            EnrichmentProvider::Openai => Arc::new(OpenAiEnricher::new(
                &config.openai.base_url,
                config.openai.api_key.as_deref(),
                &config.enrichment.model,
                config.openai.timeout,
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
            layout: crate::layout::from_config(&config.layout),
        })
    }
}

/// The vector store `config` names: Qdrant Edge opened at `vectors.path`, or a Qdrant server.
pub fn vector_store(config: &Config) -> anyhow::Result<Arc<dyn VectorStore>> {
    Ok(match config.vectors.backend {
        VectorBackend::Edge => {
            Arc::new(EdgeStore::open(config.vectors.path.as_deref()).context("vectors.path")?)
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
                )
                .context("vectors.url")?,
            )
        }
    })
}

/// The request path's dependencies, each behind its breaker and timeout.
struct RequestDependencies {
    guards: Guards,
    embeddings: Dependency,
    upstream: Dependency,
}

impl RequestDependencies {
    fn new(config: &Config, backends: &Backends, metrics: &Metrics) -> Self {
        let settings = BreakerSettings {
            failure_threshold: config.circuit_breaker.failure_threshold,
            cool_down: config.circuit_breaker.cool_down,
            max_cool_down: config.circuit_breaker.max_cool_down,
        };
        let dependency = |name: &'static str, timeout| {
            let breaker = CircuitBreaker::new(name, settings, metrics.breakers.clone());
            Dependency::new(breaker, timeout, metrics.clone())
        };
        let embeddings = match config.embeddings.provider {
            EmbeddingProvider::Openai => "openai",
            EmbeddingProvider::Hashing => "hashing",
        };
        Self {
            guards: Guards {
                cache: dependency(backends.cache.backend_name(), Some(config.redis.timeout)),
                vectors: dependency(
                    backends.vectors.backend_name(),
                    Some(config.vectors.timeout),
                ),
            },
            embeddings: dependency(embeddings, Some(config.fallback.embedding_timeout)),
            // The legacy client bounds its own calls (connect and response timeouts).
            upstream: dependency("upstream", None),
        }
    }
}

/// The queues' handles: `writes`, then `assoc`.
type Queues = (Arc<dyn WriteQueue>, Arc<dyn WriteQueue>);

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
            let assoc = Arc::new(InProcessQueue::new(ASSOC_STREAM, cache.clone(), None));
            let writes = Arc::new(InProcessQueue::new(
                WRITES_STREAM,
                cache.clone(),
                Some(assoc.clone()),
            ));
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

pub fn collection_spec(config: &Config) -> CollectionSpec {
    CollectionSpec {
        name: config.vectors.collection.clone(),
        dimensions: config.embeddings.dimensions,
        distance: config.vectors.distance,
        scope_field: config.scope.as_ref().map(|scope| scope.field.clone()),
    }
}

/// Prepares the collection. A size mismatch is fatal; an unreachable store is retried in the
/// background (the proxy serves legacy traffic meanwhile, and `/readyz` says not ready).
async fn prepare_collection(
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
async fn ensure_collection_retrying(
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

/// The workers of this config — one on `writes`, one on `assoc` — and the task batching their
/// embeddings.
pub fn build_workers(
    config: &Config,
    backends: &Backends,
    metrics: &Metrics,
) -> (Arc<Worker>, Arc<Worker>, JoinHandle<()>) {
    let (batcher, batcher_task) = EmbeddingBatcher::spawn(
        backends.embedder.clone(),
        config.worker.embedding_batch_size,
        config.worker.embedding_batch_window,
        metrics.clone(),
    );
    let worker = |queue: Arc<dyn WriteQueue>| {
        Worker::new(
            queue,
            backends.vectors.clone(),
            backends.enricher.clone(),
            batcher.clone(),
            backends.cache.clone(),
            backends.layout.clone(),
            KeySpace::new(config.key_prefix()),
            metrics.clone(),
            WorkerSettings {
                concurrency: config.worker.concurrency,
                max_attempts: config.worker.max_attempts,
                retry_backoff: config.worker.retry_backoff,
                max_retry_backoff: config.worker.max_retry_backoff,
                claim_idle: config.worker.claim_idle,
                order_wait: config.worker.order_wait,
                drain_timeout: config.worker.drain_timeout,
                memory_ttl: config.cache.memory_ttl,
                access_sync_interval: config.worker.access_sync_interval,
                search_ef: config.vectors.search_ef,
                scope_field: config.scope.as_ref().map(|scope| scope.field.clone()),
            },
        )
    };
    let writes = Arc::new(worker(backends.queue.clone()));
    let assoc = Arc::new(worker(backends.assoc_queue.clone()));
    (writes, assoc, batcher_task)
}

/// What the proxy's `/readyz` asks: the fast path's dependencies, and whether memgate's
/// session with the legacy MCP service answers.
struct ProxyReadiness {
    core: Arc<Core>,
    upstream: Option<Arc<Upstream>>,
}

#[async_trait::async_trait]
impl crate::admin::Readiness for ProxyReadiness {
    async fn checks(&self) -> Vec<(&'static str, Result<(), String>)> {
        let mut checks = self.core.health().await;
        if let Some(upstream) = &self.upstream {
            checks.push(("upstream", upstream.readiness()));
        }
        checks
    }
}

/// memgate's session with the legacy service's MCP server, when there is one.
pub fn mcp_upstream(
    config: &Config,
    guard: Dependency,
    metrics: &Metrics,
) -> anyhow::Result<Option<Arc<Upstream>>> {
    let settings = UpstreamSettings {
        connect_timeout: config.upstream.connect_timeout,
        timeout: config.upstream.timeout,
        ping_interval: config.upstream.mcp.ping_interval,
        ping_timeout: config.upstream.mcp.ping_timeout,
        authorization: upstream_authorization(config)?,
    };
    let mcp = &config.upstream.mcp;
    let target = match (mcp.transport, &config.upstream.url) {
        (UpstreamMcpTransport::Stdio, _) => UpstreamTarget::Stdio(mcp.command.clone()),
        (transport, Some(url)) => {
            let url = format!("{}{}", url.trim_end_matches('/'), mcp.path());
            let url = url.parse().context("upstream.url")?;
            match transport {
                UpstreamMcpTransport::StreamableHttp => UpstreamTarget::StreamableHttp(url),
                _ => UpstreamTarget::Sse(url),
            }
        }
        (_, None) => return Ok(None),
    };
    Ok(Some(Upstream::new(
        target,
        settings,
        guard,
        metrics.clone(),
    )))
}

/// A consumer name unique to this process: the pod name in a cluster.
pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// `upstream.authorization` as a header value (sent as it is; marked sensitive).
fn upstream_authorization(config: &Config) -> anyhow::Result<Option<http::HeaderValue>> {
    config
        .upstream
        .authorization
        .as_deref()
        .map(|value| {
            let mut value = http::HeaderValue::from_str(value.trim())
                .context("upstream.authorization: not a valid header value")?;
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()
}

/// Drops the write buckets of tenants that have been quiet for a while, every minute.
fn spawn_forget_idle(limit: Arc<WriteLimit>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            ticks.tick().await;
            limit.forget_idle();
        }
    });
}

fn header_name(field: &str, value: &str) -> anyhow::Result<HeaderName> {
    HeaderName::from_bytes(value.as_bytes())
        .with_context(|| format!("{field}: {value:?} is not a header name"))
}

/// A running proxy: its bound addresses and what it takes to stop it.
pub struct RunningProxy {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<ApiState>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    access: AccessRecorder,
    backends_cache: Arc<dyn CacheStore>,
    keys: KeySpace,
    _watch: Option<WatchGuard>,
}

impl std::fmt::Debug for RunningProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProxy")
            .field("api_addr", &self.api_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl RunningProxy {
    /// Stops accepting, drains in-flight requests (and, embedded, in-flight jobs), flushes
    /// recorded accesses.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Open event streams end with their sessions, so the drain does not wait for them.
        self.state.mcp.front.sessions.close_all();
        for task in self.servers.drain(..).chain(self.workers.drain(..)) {
            let _ = task.await;
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        let metrics = self.state.metrics.clone();
        self.access
            .flush(self.backends_cache.as_ref(), &self.keys, &metrics)
            .await;
    }
}

/// Starts the proxy: binds both ports, then serves until [`RunningProxy::shutdown`].
pub async fn start(config: Config, sources: Option<ConfigSources>) -> anyhow::Result<RunningProxy> {
    let backends = Backends::from_config(&config)?;
    start_with(config, backends, sources).await
}

/// Starts the proxy on backends built elsewhere (a test sharing them with a worker).
pub async fn start_with(
    config: Config,
    backends: Backends,
    sources: Option<ConfigSources>,
) -> anyhow::Result<RunningProxy> {
    let collection_retry =
        prepare_collection(backends.vectors.clone(), collection_spec(&config)).await?;
    let metrics = Metrics::new();
    let keys = KeySpace::new(config.key_prefix());
    let access = AccessRecorder::new(config.cache.l1.ttl);

    let dependencies = RequestDependencies::new(&config, &backends, &metrics);
    let embeddings = Arc::new(EmbeddingCache::new(
        backends.embedder.clone(),
        backends.cache.clone(),
        keys.clone(),
        config.cache.l1.max_entries,
        config.cache.l1.ttl,
        config.cache.embedding_ttl,
        EmbeddingGuards {
            store: dependencies.guards.cache.clone(),
            provider: dependencies.embeddings.clone(),
        },
    ));
    for level in Degraded::ALL {
        // Every level shows, at 0, before its first answer.
        metrics.degraded.with_label_values(&[level.as_str()]);
    }
    let core = Arc::new(Core::new(
        CoreParts {
            cache: backends.cache.clone(),
            vectors: backends.vectors.clone(),
            embeddings,
            queue: backends.queue.clone(),
            layout: backends.layout.clone(),
            keys: keys.clone(),
            access: access.clone(),
            guards: dependencies.guards.clone(),
            metrics: metrics.clone(),
        },
        CoreSettings {
            memory_ttl: config.cache.memory_ttl,
            search_ttl: config.cache.search_ttl,
            l1_entries: config.cache.l1.max_entries,
            l1_ttl: config.cache.l1.ttl,
            search_ef: config.vectors.search_ef,
            scope_field: config.scope.as_ref().map(|scope| scope.field.clone()),
            idempotency_ttl: config.worker.idempotency_ttl,
            keyword_candidates: config.fallback.keyword_candidates,
        },
    ));
    let legacy = match &config.upstream.url {
        None => None,
        Some(url) => Some(LegacyClient::new(
            LegacySettings {
                base_url: url.parse().context("upstream.url")?,
                connect_timeout: config.upstream.connect_timeout,
                timeout: config.upstream.timeout,
                pool_idle_timeout: config.upstream.pool_idle_timeout,
                pool_max_idle_per_host: config.upstream.pool_max_idle_per_host,
                max_body_bytes: config.limits.max_body_bytes,
                authorization: upstream_authorization(&config)?,
            },
            dependencies.upstream.clone(),
        )),
    };
    let rollout = RolloutHandle::new(config.rollout.percent);
    metrics.rollout_percent.set(i64::from(rollout.percent()));
    let sticky_header = config
        .rollout
        .sticky_header
        .as_deref()
        .map(|value| header_name("rollout.stickyHeader", value))
        .transpose()?;
    let scope_header = config
        .scope
        .as_ref()
        .map(|scope| header_name("scope.header", &scope.header))
        .transpose()?;
    let upstream = mcp_upstream(&config, dependencies.upstream.clone(), &metrics)?;
    let gate = Arc::new(Gate::from_config(&config).context("security")?);
    gate.spawn_token_reload();
    let write_limit = config
        .limits
        .writes_per_second_per_tenant
        .and_then(std::num::NonZeroU32::new)
        .map(|rate| Arc::new(WriteLimit::per_second(rate)));
    if let Some(limit) = &write_limit {
        spawn_forget_idle(limit.clone());
    }
    let mcp = Arc::new(McpFront::new(
        core.clone(),
        upstream.clone(),
        Router::new(rollout.clone(), sticky_header.clone()),
        metrics.clone(),
        FrontSettings {
            wait_for_stored: config.mcp.wait_for_stored,
            writes_to_legacy: config.fallback.writes_to_legacy,
            max_sessions: config.mcp.max_sessions,
            write_limit: write_limit.clone(),
        },
    ));
    let openapi =
        Bytes::from(serde_json::to_vec(&crate::openapi::document()).context("OpenAPI document")?);
    let state = Arc::new(ApiState {
        router: Router::new(rollout.clone(), sticky_header),
        core,
        legacy,
        scope_header,
        gate,
        write_limit,
        max_body_bytes: config.limits.max_body_bytes,
        writes_to_legacy: config.fallback.writes_to_legacy,
        metrics: metrics.clone(),
        openapi,
        mcp: HttpTransports {
            front: mcp.clone(),
            max_body_bytes: config.mcp.max_body_bytes,
            sse_answers: config.mcp.streamable_response == StreamableResponse::Sse,
        },
    });

    let api_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("adminListen: cannot bind {}", config.admin_listen))?;
    let api_addr = api_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let settings = ConnectionSettings {
        header_read_timeout: config.limits.header_read_timeout,
        drain_timeout: config.limits.drain_timeout,
        max_in_flight: None,
    };
    let api_state = state.clone();
    let overloaded = metrics.overloaded.clone();
    let api_server = tokio::spawn(serve(
        "api",
        api_listener,
        move |request, remote| api_state.clone().handle(request, remote),
        shutdown_rx.clone(),
        ConnectionSettings {
            max_in_flight: Some(InFlightLimit {
                max: config.limits.max_in_flight,
                refused: overloaded,
            }),
            ..settings.clone()
        },
    ));
    let admin = Arc::new(AdminState {
        metrics: metrics.clone(),
        readiness: Arc::new(ProxyReadiness {
            core: state.core.clone(),
            upstream,
        }),
    });
    let admin_server = tokio::spawn(serve(
        "admin",
        admin_listener,
        move |request, _remote| admin.clone().handle(request),
        shutdown_rx,
        settings,
    ));

    // In-process queue (embedded): this process is its own worker.
    let mut workers = Vec::new();
    let mut background = Vec::new();
    if config.cache.backend == CacheBackend::Memory {
        let (writes, assoc, batcher) = build_workers(&config, &backends, &metrics);
        background.push(batcher);
        background.push(spawn_vector_optimizer(
            backends.vectors.clone(),
            config.vectors.optimize_interval,
        ));
        workers.push(tokio::spawn(
            writes.run("embedded".into(), shutdown.subscribe()),
        ));
        workers.push(tokio::spawn(
            assoc.run("embedded".into(), shutdown.subscribe()),
        ));
    }
    background.push(access.spawn_flusher(
        backends.background_cache.clone(),
        keys.clone(),
        metrics.clone(),
        config.access.flush_interval,
    ));
    background.extend(collection_retry);
    background.extend(mcp.spawn_housekeeping(config.mcp.session_idle_timeout));
    let gauge = metrics.rollout_percent.clone();
    let watch = sources.filter(|s| s.file.is_some()).map(|sources| {
        watch_rollout(sources, config.reload.interval, rollout, move |percent| {
            gauge.set(i64::from(percent))
        })
    });
    tracing::info!(
        %api_addr, %admin_addr,
        cache = backends.cache.backend_name(),
        vectors = backends.vectors.backend_name(),
        embeddings = backends.embedder.model(),
        rollout_percent = config.rollout.percent,
        "memgate proxy serving"
    );
    Ok(RunningProxy {
        api_addr,
        admin_addr,
        state,
        shutdown,
        servers: vec![api_server, admin_server],
        workers,
        background,
        access,
        backends_cache: backends.background_cache,
        keys,
        _watch: watch,
    })
}

/// A running `memgate worker`: the worker and its admin server.
pub struct RunningWorker {
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningWorker {
    /// Stops at once, as a crash would: jobs in flight stay pending, leases are left to run
    /// out. For fault tests.
    pub fn kill(mut self) {
        for task in self.tasks.drain(..).chain(self.background.drain(..)) {
            task.abort();
        }
    }

    /// Takes no new jobs, finishes the ones in flight, stops.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

/// Starts `memgate worker`: waits for the collection, then drains the queue.
pub async fn start_worker(config: Config) -> anyhow::Result<RunningWorker> {
    let backends = Backends::from_config(&config)?;
    start_worker_with(config, backends).await
}

/// Starts a worker on backends built elsewhere.
pub async fn start_worker_with(
    config: Config,
    backends: Backends,
) -> anyhow::Result<RunningWorker> {
    let spec = collection_spec(&config);
    // The worker waits for its vector store before it takes any job.
    ensure_collection_retrying(
        backends.vectors.as_ref(),
        &spec,
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    )
    .await
    .context("vectors.collection")?;
    let metrics = Metrics::new();
    let (worker, assoc, batcher) = build_workers(&config, &backends, &metrics);
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("adminListen: cannot bind {}", config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let admin = Arc::new(AdminState {
        metrics,
        readiness: worker.clone(),
    });
    let admin_server = tokio::spawn(serve(
        "admin",
        admin_listener,
        move |request, _remote| admin.clone().handle(request),
        shutdown_rx.clone(),
        ConnectionSettings::default(),
    ));
    let consumer = consumer_name();
    tracing::info!(%admin_addr, %consumer, "memgate worker running");
    let run_assoc = tokio::spawn(assoc.run(consumer.clone(), shutdown_rx.clone()));
    let run = tokio::spawn(worker.run(consumer, shutdown_rx));
    Ok(RunningWorker {
        admin_addr,
        shutdown,
        tasks: vec![run, run_assoc, admin_server],
        background: vec![
            batcher,
            spawn_vector_optimizer(backends.vectors.clone(), config.vectors.optimize_interval),
        ],
    })
}
