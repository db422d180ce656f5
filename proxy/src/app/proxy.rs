//! `memgate serve`: the core and the fronts built on the backends, the API and admin servers
//! started, and stopped again.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::header::HeaderName;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backends::{collection_spec, prepare_collection, spawn_vector_optimizer, Backends};
use super::data_dir::DataDir;
use super::worker::build_workers;
use crate::backend::cache::CacheStore;
use crate::backend::embeddings::{Embedder, EmbeddingCache};
use crate::backend::queue::WriteQueue;
use crate::backend::vectors::VectorStore;
use crate::config::{
    watch_rollout, CacheBackend, Config, ConfigSources, EmbeddingProvider, RolloutHandle,
    StreamableResponse, UpstreamMcpTransport, WatchGuard,
};
use crate::core::reads::ReadRecorder;
use crate::core::{Core, CoreParts, CoreSettings, Degraded};
use crate::front::admin::AdminState;
use crate::front::mcp::{
    FrontSettings, HttpTransports, McpFront, Upstream, UpstreamSettings, UpstreamTarget,
};
use crate::front::rest::legacy::{LegacyClient, LegacySettings};
use crate::front::rest::service::ApiState;
use crate::front::routing::Router;
use crate::front::security::{Gate, WriteLimit};
use crate::front::server::{serve, ConnectionSettings, InFlightLimit};
use crate::guard::breaker::{BreakerSettings, CircuitBreaker};
use crate::guard::dependency::Dependency;
use crate::guard::guarded::Guarded;
use crate::keys::KeySpace;
use crate::metrics::Metrics;

/// The backends as the request path sees them, each behind its breaker and timeout; the
/// cache store and the queue share one (both are the same Redis).
struct GuardedBackends {
    cache: Arc<dyn CacheStore>,
    queue: Arc<dyn WriteQueue>,
    vectors: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    /// The legacy service's, for its REST client and memgate's MCP session with it.
    upstream: Dependency,
}

impl GuardedBackends {
    fn new(config: &Config, backends: &Backends, metrics: &Metrics) -> Self {
        let settings = BreakerSettings {
            failure_threshold: config.circuit_breaker.failure_threshold,
            cool_down: config.circuit_breaker.cool_down,
            max_cool_down: config.circuit_breaker.max_cool_down,
        };
        let dependency = |name: &'static str, timeout| {
            let breaker =
                CircuitBreaker::new(name, settings, metrics.dependencies.breakers.clone());
            Dependency::new(breaker, timeout, metrics.clone())
        };
        let embeddings = match config.embeddings.provider {
            EmbeddingProvider::Openai => "openai",
            EmbeddingProvider::Hashing => "hashing",
        };
        let cache = dependency(backends.cache.backend_name(), Some(config.redis.timeout));
        let vectors = dependency(
            backends.vectors.backend_name(),
            Some(config.vectors.timeout),
        );
        let embeddings = dependency(embeddings, Some(config.fallback.embedding_timeout));
        Self {
            cache: Arc::new(Guarded::new(backends.cache.clone(), cache.clone())),
            // A replicated write waits for replicas too (`redis.replicationTimeout`).
            queue: Arc::new(Guarded::new(
                backends.queue.clone(),
                cache.with_timeout(Some(config.redis.write_timeout())),
            )),
            vectors: Arc::new(Guarded::new(backends.vectors.clone(), vectors)),
            embedder: Arc::new(Guarded::new(backends.embedder.clone(), embeddings)),
            // The legacy client bounds its own calls (connect and response timeouts).
            upstream: dependency("upstream", None),
        }
    }
}

/// What the proxy's `/readyz` asks: the fast path's dependencies, and whether memgate's
/// session with the legacy MCP service answers.
struct ProxyReadiness {
    core: Arc<Core>,
    upstream: Option<Arc<Upstream>>,
}

#[async_trait::async_trait]
impl crate::front::admin::Readiness for ProxyReadiness {
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
    access: ReadRecorder,
    backends_cache: Arc<dyn CacheStore>,
    keys: KeySpace,
    /// How many clients are attached on the data directory's local socket.
    local_clients: Option<watch::Receiver<usize>>,
    _watch: Option<WatchGuard>,
    /// Released when the proxy is dropped, after its shutdown.
    _data_dir: Option<DataDir>,
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
    /// Clients attached on the data directory's local socket, when it has one.
    pub fn local_clients(&self) -> Option<watch::Receiver<usize>> {
        self.local_clients.clone()
    }

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
    let data_dir = claim_data_dir(&config)?;
    start_in(config, sources, data_dir).await
}

/// Starts the proxy in a data directory this process claimed already.
pub async fn start_in(
    config: Config,
    sources: Option<ConfigSources>,
    data_dir: Option<DataDir>,
) -> anyhow::Result<RunningProxy> {
    let backends = Backends::from_config(&config)?;
    start_owning(config, backends, sources, data_dir).await
}

/// Starts the proxy on backends built elsewhere (a test sharing them with a worker).
pub async fn start_with(
    config: Config,
    backends: Backends,
    sources: Option<ConfigSources>,
) -> anyhow::Result<RunningProxy> {
    let data_dir = claim_data_dir(&config)?;
    start_owning(config, backends, sources, data_dir).await
}

/// The config's `dataDir`, taken for this process (refused when another memgate has it).
fn claim_data_dir(config: &Config) -> anyhow::Result<Option<DataDir>> {
    config
        .data_dir
        .as_deref()
        .map(DataDir::claim_or_explain)
        .transpose()
}

async fn start_owning(
    config: Config,
    backends: Backends,
    sources: Option<ConfigSources>,
    data_dir: Option<DataDir>,
) -> anyhow::Result<RunningProxy> {
    if let Some(dir) = &data_dir {
        tracing::info!(data_dir = %dir.path().display(), "memories are kept in this data directory");
    }
    if config.cache.backend == CacheBackend::Memory && data_dir.is_none() {
        tracing::warn!(
            "the write queue is in this process's memory only: acknowledged writes not yet applied are lost if it dies (set --data-dir to journal them, or use Redis)"
        );
    }
    if config.cache.backend == CacheBackend::Memory {
        // The journal's unfinished jobs are queued again before anything new is.
        backends
            .queue
            .prepare()
            .await
            .context("dataDir: the queue's journal")?;
        backends
            .assoc_queue
            .prepare()
            .await
            .context("dataDir: the queue's journal")?;
    }
    let collection_retry = prepare_collection(
        backends.vectors.clone(),
        collection_spec(&config, backends.layout.as_ref()),
    )
    .await?;
    let metrics = Metrics::new();
    let keys = KeySpace::new(config.key_prefix());
    let access = ReadRecorder::new(config.cache.l1.ttl);

    let guarded = GuardedBackends::new(&config, &backends, &metrics);
    let embeddings = Arc::new(EmbeddingCache::new(
        guarded.embedder.clone(),
        guarded.cache.clone(),
        keys.clone(),
        config.cache.l1.max_entries,
        config.cache.l1.ttl,
        config.cache.embedding_ttl,
    ));
    for level in Degraded::ALL {
        // Every level shows, at 0, before its first answer.
        metrics.core.degraded.with_label_values(&[level.as_str()]);
    }
    let core = Arc::new(Core::new(
        CoreParts {
            cache: guarded.cache.clone(),
            vectors: guarded.vectors.clone(),
            embeddings,
            queue: guarded.queue.clone(),
            layout: backends.layout.clone(),
            keys: keys.clone(),
            access: access.clone(),
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
            guarded.upstream.clone(),
        )),
    };
    let rollout = RolloutHandle::new(config.rollout.percent);
    metrics
        .front
        .rollout_percent
        .set(i64::from(rollout.percent()));
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
    let upstream = mcp_upstream(&config, guarded.upstream.clone(), &metrics)?;
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
            shadow: config.shadow.clone(),
        },
    ));
    let openapi = Bytes::from(
        serde_json::to_vec(&crate::front::rest::openapi::document()).context("OpenAPI document")?,
    );
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
    let overloaded = metrics.front.overloaded.clone();
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
        shadow: Some(mcp.shadow.clone()),
    });
    let admin_server = tokio::spawn(serve(
        "admin",
        admin_listener,
        move |request, _remote| admin.clone().handle(request),
        shutdown_rx,
        settings,
    ));
    let mut servers = vec![api_server, admin_server];

    // This process is its own worker: embedded (its queue is in-process), or when no separate
    // workers apply the shared queue (`worker.separate`).
    let mut workers = Vec::new();
    let mut background = Vec::new();
    if config.cache.backend == CacheBackend::Memory || !config.worker.separate {
        let consumer = match config.cache.backend {
            CacheBackend::Memory => "embedded".to_string(),
            CacheBackend::Redis => super::worker::consumer_name(),
        };
        let (writes, assoc, batcher) = build_workers(&config, &backends, &metrics);
        background.push(batcher);
        background.push(spawn_vector_optimizer(
            backends.vectors.clone(),
            config.vectors.optimize_interval,
        ));
        workers.push(tokio::spawn(
            writes.run(consumer.clone(), shutdown.subscribe()),
        ));
        workers.push(tokio::spawn(assoc.run(consumer, shutdown.subscribe())));
    } else {
        tracing::info!(
            "writes are applied by separate `memgate worker` processes (worker.separate); /readyz says when none consumes them"
        );
    }
    background.push(access.spawn_flusher(
        backends.background_cache.clone(),
        keys.clone(),
        metrics.clone(),
        config.access.flush_interval,
    ));
    background.extend(collection_retry);
    background.extend(mcp.spawn_housekeeping(config.mcp.session_idle_timeout));
    let local_clients = match &data_dir {
        Some(dir) => Some(serve_local_socket(dir, &mcp, &shutdown, &mut servers)?),
        None => None,
    };
    let gauge = metrics.front.rollout_percent.clone();
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
        servers,
        workers,
        background,
        access,
        backends_cache: backends.background_cache,
        keys,
        local_clients,
        _watch: watch,
        _data_dir: data_dir,
    })
}

/// MCP on `{dataDir}/mcp.sock` for other launches on this machine; the count of clients
/// attached.
#[cfg(unix)]
fn serve_local_socket(
    dir: &DataDir,
    mcp: &Arc<McpFront>,
    shutdown: &watch::Sender<bool>,
    servers: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<watch::Receiver<usize>> {
    use crate::front::mcp::local_socket;
    let path = super::data_dir::socket_file(dir.path());
    let listener = local_socket::bind(&path).context("dataDir: the local MCP socket")?;
    let (clients, watching) = watch::channel(0);
    servers.push(tokio::spawn(local_socket::serve(
        listener,
        mcp.clone(),
        clients,
        shutdown.subscribe(),
    )));
    tracing::info!(socket = %path.display(), "other `memgate mcp stdio` launches attach here");
    Ok(watching)
}

#[cfg(not(unix))]
fn serve_local_socket(
    _dir: &DataDir,
    _mcp: &Arc<McpFront>,
    _shutdown: &watch::Sender<bool>,
    _servers: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<watch::Receiver<usize>> {
    Ok(watch::channel(0).1)
}
