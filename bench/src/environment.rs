//! Everything a run talks to, started on this machine: a `redis-server` of its own, the
//! OpenAI-compatible stand-in (every call delayed by `--openai-latency-ms`), one Qdrant Edge
//! shard, the reference cldmemory (`reference/`, MCP over HTTP+SSE), and a memgate proxy with
//! its worker. Proxy, worker and reference share the one vector store, the one layout and the
//! one OpenAI endpoint, so the two differ only in design.
//!
//! The proxy runs on a runtime of its own, with Redis and OpenAI clients of its own (as in its
//! own process), so a pinned run can give it and its Redis a core of their own
//! ([`crate::placement`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use memgate::app::{collection_spec, Backends, RunningProxy, RunningWorker};
use memgate::backend::vectors::{EdgeStore, VectorStore};
use memgate::config::{CacheBackend, Config, EmbeddingProvider, EnrichmentProvider, VectorBackend};
use memgate::keys::{KeySpace, Scope};
use memgate_testkit::{start_reference_with, FakeOpenAi, RedisServer, Reference, SseRouting};
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::placement::{self, Placement};

/// The `hostname:cwd` the reference stamps, and memgate's layout with it.
const PROJECT: &str = "bench-host:/app";

/// The knobs of the environment.
#[derive(Debug, Clone)]
pub struct EnvironmentSettings {
    pub dimensions: u64,
    pub openai_latency: Duration,
    /// `vectors.optimizeInterval` of the worker.
    pub optimize_interval: Duration,
    /// `worker.accessSyncInterval`.
    pub access_sync_interval: Duration,
    pub placement: Placement,
}

pub struct Environment {
    pub config: Config,
    pub redis: RedisServer,
    pub openai: FakeOpenAi,
    pub edge: Arc<EdgeStore>,
    /// The layout memgate speaks (cldmemory's), for seeding and queries.
    pub layout: Arc<dyn memgate::layout::Layout>,
    /// The reference cldmemory: the legacy service.
    pub legacy: Reference,
    pub proxy: RunningProxy,
    /// A second proxy on the same store, comparing 10% of its fast-path reads with the
    /// reference's answers (`shadow.sample: 0.1`), for the shadow's cost.
    pub shadow_proxy: RunningProxy,
    pub worker: RunningWorker,
    data: tempfile::TempDir,
}

/// The share of reads the shadowing proxy compares.
pub const SHADOW_SAMPLE: f64 = 0.1;

/// memgate's production defaults, with the endpoints of this environment.
fn proxy_config(
    data: &std::path::Path,
    redis_url: String,
    openai_url: String,
    dimensions: u64,
) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("static address"),
        admin_listen: "127.0.0.1:0".parse().expect("static address"),
        ..Config::default()
    };
    config.worker.admin_listen = config.admin_listen;
    config.store.namespace = "bench".into();
    config.store.name = "memories".into();
    config.cache.backend = CacheBackend::Redis;
    config.redis.url = Some(redis_url);
    config.vectors.backend = VectorBackend::Edge;
    config.vectors.path = Some(data.join("edge"));
    config.embeddings.provider = EmbeddingProvider::Openai;
    config.embeddings.model = "text-embedding-3-small".into();
    config.embeddings.dimensions = dimensions;
    config.enrichment.provider = EnrichmentProvider::Openai;
    config.enrichment.model = "gpt-4o".into();
    config.layout.project = Some(PROJECT.into());
    config.openai.base_url = openai_url;
    config.openai.api_key = Some("sk-bench".into());
    // The stand-in answers slowly on purpose; a create's three calls plus retries must fit.
    config.openai.timeout = Duration::from_secs(30);
    // Enough concurrent jobs for 500 creates/s whose enrichment takes 150 ms a call.
    config.worker.concurrency = 512;
    // The bench runs its worker itself.
    config.worker.separate = true;
    // A fast GET's L1 holds the whole hot set.
    config.cache.l1.max_entries = 100_000;
    config
}

impl Environment {
    /// Starts everything; the collection exists and is empty when this returns. The proxy runs
    /// on `proxy_runtime`, everything else on the caller's runtime.
    pub async fn start(
        settings: &EnvironmentSettings,
        proxy_runtime: &Handle,
    ) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new()
            .prefix("memgate-bench-")
            .tempdir()?;
        let redis = RedisServer::start().context("starting redis-server")?;
        if let (Some(core), Some(pid)) = (settings.placement.system_core(), redis.pid()) {
            placement::pin_process(pid, core)?;
        }
        let dimensions = usize::try_from(settings.dimensions)?;
        let openai = FakeOpenAi::start(dimensions).await?;
        openai.set_delay(settings.openai_latency);
        let mut config = proxy_config(
            data.path(),
            redis.url(),
            openai.base_url(),
            settings.dimensions,
        );

        let edge = Arc::new(EdgeStore::open(config.vectors.path.as_deref())?);
        let layout = memgate::layout::from_config(&config.layout);
        edge.ensure_collection(&collection_spec(&config, layout.as_ref()))
            .await?;
        // The legacy baselines open 16 sessions of their own beside memgate's: each gets its
        // own answers (cldmemory itself answers only the stream opened last).
        let legacy = start_reference_with(
            edge.clone(),
            &openai.base_url(),
            &config,
            SseRouting::PerSession,
        )
        .await?;
        // Every request takes the fast path unless it forces the legacy route; MCP calls the
        // fast path does not answer go to the reference over memgate's upstream session.
        config.rollout.percent = 100;
        config.upstream.url = Some(legacy.url());
        config.vectors.optimize_interval = settings.optimize_interval;
        config.worker.access_sync_interval = settings.access_sync_interval;
        config.validate()?;
        // The proxy and the worker each get their own clients, on the one shard.
        let worker_backends = Backends::with_vectors(&config, edge.clone())?;
        let layout = worker_backends.layout.clone();
        let proxy_backends = Backends::with_vectors(&config, edge.clone())?;
        let proxy_config = config.clone();
        // Its connections start at first use, from its own tasks: on its own runtime.
        let proxy = proxy_runtime
            .spawn(memgate::app::start_with(proxy_config, proxy_backends, None))
            .await
            .context("starting the proxy")??;
        let mut shadow_config = config.clone();
        shadow_config.shadow.sample = SHADOW_SAMPLE;
        let shadow_backends = Backends::with_vectors(&shadow_config, edge.clone())?;
        let shadow_proxy = proxy_runtime
            .spawn(memgate::app::start_with(
                shadow_config,
                shadow_backends,
                None,
            ))
            .await
            .context("starting the shadowing proxy")??;
        let worker = memgate::app::start_worker_with(config.clone(), worker_backends).await?;
        Ok(Self {
            config,
            redis,
            openai,
            edge,
            layout,
            legacy,
            proxy,
            shadow_proxy,
            worker,
            data,
        })
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy.api_addr)
    }

    pub fn shadow_proxy_url(&self) -> String {
        format!("http://{}", self.shadow_proxy.api_addr)
    }

    pub fn vectors(&self) -> Arc<dyn VectorStore> {
        self.edge.clone()
    }

    /// The Redis key of a cached memory.
    pub fn memory_key(&self, id: Uuid) -> String {
        KeySpace::new(self.config.key_prefix()).memory(&Scope::UNSCOPED, id)
    }

    /// The write queue's stream.
    pub fn writes_stream(&self) -> String {
        format!("{}writes", self.config.key_prefix())
    }

    /// Stops the proxy, the worker and the legacy service; returns the data directory, to be
    /// removed once nothing holds the vector store any more.
    pub async fn shutdown(self) -> tempfile::TempDir {
        self.proxy.shutdown().await;
        self.shadow_proxy.shutdown().await;
        self.worker.shutdown().await;
        drop(self.legacy);
        drop(self.edge);
        self.data
    }
}
