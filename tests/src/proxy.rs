//! Starting a memgate proxy for a test: free ports, a temporary Qdrant Edge directory, and the
//! given cache, upstream and embedding endpoints.

use std::sync::Arc;

use memgate::app::{Backends, RunningProxy, RunningWorker};
use memgate::backend::vectors::VectorStore;
use memgate::config::{CacheBackend, Config, EmbeddingProvider, EnrichmentProvider, VectorBackend};

/// The `hostname:cwd` the test configs stamp on new memories.
pub const TEST_PROJECT: &str = "test-host:/app";

/// A config on free ports with Qdrant Edge under `data_dir`: the in-process cache unless
/// `redis_url`, the hashing embedder unless `openai_base_url`, and `upstream` for legacy.
pub fn test_config(
    data_dir: &std::path::Path,
    redis_url: Option<String>,
    openai_base_url: Option<String>,
    upstream: Option<String>,
) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    };
    config.worker.admin_listen = config.admin_listen;
    config.store.namespace = "test".into();
    config.store.name = format!("store-{}", std::process::id());
    config.vectors.backend = VectorBackend::Edge;
    config.vectors.path = Some(data_dir.to_path_buf());
    config.embeddings.dimensions = 64;
    config.layout.project = Some(TEST_PROJECT.into());
    // Everything a search finds comes back (the tests choose their own thresholds).
    config.layout.similarity_threshold = 0.0;
    match redis_url {
        Some(url) => {
            config.cache.backend = CacheBackend::Redis;
            config.redis.url = Some(url);
            // The tests start (or leave out) their workers themselves.
            config.worker.separate = true;
        }
        None => config.cache.backend = CacheBackend::Memory,
    }
    match openai_base_url {
        Some(url) => {
            config.embeddings.provider = EmbeddingProvider::Openai;
            config.embeddings.model = "text-embedding-test".into();
            config.openai.base_url = url;
            config.openai.api_key = Some("sk-test".into());
            config.enrichment.provider = EnrichmentProvider::Openai;
            config.enrichment.model = "gpt-test".into();
        }
        None => {
            config.embeddings.provider = EmbeddingProvider::Hashing;
            config.embeddings.model = "hashing".into();
            config.enrichment.provider = EnrichmentProvider::Local;
        }
    }
    config.worker.retry_backoff = std::time::Duration::from_millis(20);
    config.worker.embedding_batch_window = std::time::Duration::from_millis(5);
    config.worker.access_sync_interval = std::time::Duration::from_millis(50);
    // Reads reach Redis soon, as the tests that count them across processes expect.
    config.access.flush_interval = std::time::Duration::from_millis(100);
    config.rollout.percent = if upstream.is_some() { 50 } else { 100 };
    config.rollout.sticky_header = Some("x-user-id".into());
    config.upstream.url = upstream;
    config
}

/// Validates `config` and starts a proxy with it (embedded: with its in-process worker).
pub async fn start_proxy(config: Config) -> anyhow::Result<RunningProxy> {
    config.validate()?;
    memgate::app::start(config, None).await
}

/// A proxy and a worker sharing one set of backends (one Qdrant Edge shard), as a proxy and
/// worker pods share Redis and Qdrant in a cluster.
pub async fn start_proxy_and_worker(
    config: Config,
) -> anyhow::Result<(RunningProxy, RunningWorker)> {
    config.validate()?;
    let backends = Backends::from_config(&config)?;
    let proxy = memgate::app::start_with(config.clone(), backends.clone(), None).await?;
    let worker = memgate::app::start_worker_with(config, backends).await?;
    Ok((proxy, worker))
}

/// A proxy and the backends it runs on, for tests that start and kill workers on them.
pub async fn start_proxy_with_backends(config: Config) -> anyhow::Result<(RunningProxy, Backends)> {
    config.validate()?;
    let backends = Backends::from_config(&config)?;
    let proxy = memgate::app::start_with(config, backends.clone(), None).await?;
    Ok((proxy, backends))
}

/// [`start_proxy_and_worker`], and the vector store they share (for a legacy service that
/// keeps its memories in the same store). memgate reads it as over Qdrant's gRPC API, every
/// payload's keys in another order ([`crate::ScrambledReads`]); the store returned keeps them
/// in order, as Qdrant's REST API does for cldmemory.
pub async fn start_proxy_and_worker_sharing_vectors(
    config: Config,
) -> anyhow::Result<(RunningProxy, RunningWorker, Arc<dyn VectorStore>)> {
    config.validate()?;
    let vectors = memgate::app::vector_store(&config)?;
    let scrambled: Arc<dyn VectorStore> = Arc::new(crate::ScrambledReads::new(vectors.clone()));
    let backends = Backends::with_vectors(&config, scrambled)?;
    let proxy = memgate::app::start_with(config.clone(), backends.clone(), None).await?;
    let worker = memgate::app::start_worker_with(config, backends).await?;
    Ok((proxy, worker, vectors))
}

/// The `memgate` binary next to the test binary (`target/debug/memgate`), for tests that run
/// it as a process.
pub fn memgate_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target dir");
    let binary = dir.join("memgate");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p memgate --bin memgate` (scripts/test.sh does)",
        binary.display()
    );
    binary
}
