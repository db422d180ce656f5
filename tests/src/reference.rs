//! The reference cldmemory for a test: on the given vector store (the one memgate uses), with
//! the given OpenAI-compatible endpoint and the same deployment settings as memgate's layout.

use std::sync::Arc;

use cldmemory_reference::mcp::ServerInfo;
use cldmemory_reference::openai::OpenAi;
use cldmemory_reference::qdrant::QdrantService;
use cldmemory_reference::{MemoryService, RunningReference, ServiceSettings, SseRouting};
use memgate::backend::vectors::VectorStore;
use memgate::config::Config;

use crate::ScrambledReads;

pub struct Reference {
    /// Its tools, for calling them in-process.
    pub service: Arc<MemoryService>,
    /// Its MCP server (HTTP+SSE): clients connect to `{url}/sse`.
    pub server: RunningReference,
    /// Which stream its answers go to (cldmemory's: the newest).
    pub routing: SseRouting,
}

impl Reference {
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Stops its MCP server (open streams end), as when the legacy service goes down.
    pub async fn stop(&mut self) -> std::net::SocketAddr {
        let addr = self.server.addr;
        let stopped = std::mem::replace(&mut self.server, serve_nowhere(&self.service).await);
        stopped.stop().await;
        addr
    }

    /// Serves again on `addr` (after [`Reference::stop`]), on the same store.
    pub async fn restart(&mut self, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        let listener = bind_again(addr).await?;
        self.server = cldmemory_reference::serve_with(
            listener,
            self.service.clone(),
            ServerInfo {
                name: "memory-server".into(),
            },
            self.routing,
        )?;
        Ok(())
    }

    /// A tool's result text, called in-process as the MCP server would call it.
    pub async fn call(&self, tool: &str, arguments: serde_json::Value) -> String {
        let result = cldmemory_reference::tools::call(&self.service, tool, Some(&arguments)).await;
        result["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Starts the reference on `store`, configured as `config`'s layout says the legacy service is,
/// answering on the newest stream as cldmemory does.
pub async fn start_reference(
    store: Arc<dyn VectorStore>,
    openai_base_url: &str,
    config: &Config,
) -> anyhow::Result<Reference> {
    start_reference_with(store, openai_base_url, config, SseRouting::NewestStream).await
}

/// [`start_reference`] with the given answer routing: [`SseRouting::PerSession`] for tests in
/// which other clients open streams on the reference beside memgate's on purpose.
pub async fn start_reference_with(
    store: Arc<dyn VectorStore>,
    openai_base_url: &str,
    config: &Config,
    routing: SseRouting,
) -> anyhow::Result<Reference> {
    let settings = ServiceSettings {
        similarity_threshold: config.layout.similarity_threshold,
        memory_metadata: config.layout.memory_metadata.clone(),
        project: config
            .layout
            .project
            .clone()
            .unwrap_or_else(|| "localhost:/".into()),
    };
    let openai = OpenAi::new(openai_base_url, "sk-test", &config.embeddings.model);
    let service = Arc::new(MemoryService::new(
        QdrantService::new(store),
        openai,
        settings,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = cldmemory_reference::serve_with(
        listener,
        service.clone(),
        ServerInfo {
            name: "memory-server".into(),
        },
        routing,
    )?;
    Ok(Reference {
        service,
        server,
        routing,
    })
}

/// memgate (proxy and worker) in front of the reference cldmemory, all three on one vector
/// store: `config.upstream.url` is set to the reference, whose settings follow `config`.
pub async fn start_memgate_in_front_of_reference(
    config: Config,
    openai_base_url: &str,
    routing: SseRouting,
) -> anyhow::Result<(
    memgate::app::RunningProxy,
    memgate::app::RunningWorker,
    Arc<dyn VectorStore>,
    Reference,
)> {
    let mut config = config;
    // memgate reads the store as over Qdrant's gRPC API (payload keys in no order); the
    // reference reads it in order, as cldmemory does over REST.
    let vectors = memgate::app::vector_store(&config)?;
    let scrambled: Arc<dyn VectorStore> = Arc::new(ScrambledReads::new(vectors.clone()));
    let backends = memgate::app::Backends::with_vectors(&config, scrambled)?;
    let reference =
        start_reference_with(vectors.clone(), openai_base_url, &config, routing).await?;
    config.upstream.url = Some(reference.url());
    config.validate()?;
    let proxy = memgate::app::start_with(config.clone(), backends.clone(), None).await?;
    let worker = memgate::app::start_worker_with(config, backends).await?;
    Ok((proxy, worker, vectors, reference))
}

/// A placeholder server on a free port, for the time the real one is down.
async fn serve_nowhere(service: &Arc<MemoryService>) -> RunningReference {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    cldmemory_reference::serve(
        listener,
        service.clone(),
        ServerInfo {
            name: "placeholder".into(),
        },
    )
    .expect("placeholder")
}

/// Binds `addr` again, retrying while the old socket lets go.
async fn bind_again(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!("cannot bind {addr} again: {last:?}"))
}
