//! `cldmemory-reference`: the reference cldmemory as a process, configured as cldmemory is
//! (its environment variables), serving MCP over stdio (`MCP_TRANSPORT_MODE=stdio`, the
//! default) or HTTP+SSE (`sse`) on a Qdrant Edge shard of its own.

use std::sync::Arc;

use anyhow::Context;
use cldmemory_reference::mcp::ServerInfo;
use cldmemory_reference::openai::OpenAi;
use cldmemory_reference::qdrant::QdrantService;
use cldmemory_reference::{MemoryService, ServiceSettings};
use memgate::backend::vectors::{CollectionSpec, EdgeStore, VectorStore};
use memgate::config::DistanceMetric;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,qdrant_edge=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let dimensions: u64 = env("VECTOR_DIMENSION")
        .map_or(Ok(1536), |d| d.parse())
        .context("VECTOR_DIMENSION")?;
    let store = Arc::new(EdgeStore::open(
        env("EDGE_PATH").as_deref().map(std::path::Path::new),
    )?);
    store
        .ensure_collection(&CollectionSpec {
            name: env("QDRANT_COLLECTION_NAME").unwrap_or_else(|| "human_memories".into()),
            dimensions,
            distance: DistanceMetric::Cosine,
            scope_field: None,
            // cldmemory creates no payload indexes, and its collection has Qdrant's defaults.
            indexes: Vec::new(),
            shards: None,
        })
        .await?;
    let openai = OpenAi::new(
        &env("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into()),
        &env("OPENAI_API_KEY").unwrap_or_default(),
        &env("OPENAI_MODEL").unwrap_or_else(|| "text-embedding-3-small".into()),
    );
    let project = env("PROJECT").unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "localhost".into());
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        format!("{}:{cwd}", host.trim())
    });
    let settings = ServiceSettings {
        similarity_threshold: env("SIMILARITY_THRESHOLD")
            .map_or(Ok(0.7), |t| t.parse())
            .context("SIMILARITY_THRESHOLD")?,
        memory_metadata: env("MEMORY_METADATA"),
        project,
    };
    let service = Arc::new(MemoryService::new(
        QdrantService::new(store),
        openai,
        settings,
    ));
    let info = ServerInfo {
        name: env("MCP_SERVER_NAME").unwrap_or_else(|| "memory-server".into()),
    };
    if env("MCP_TRANSPORT_MODE").as_deref().unwrap_or("stdio") == "stdio" {
        tracing::info!("cldmemory reference serving MCP over stdio");
        cldmemory_reference::stdio::serve(service, info, tokio::io::stdin(), tokio::io::stdout())
            .await?;
        return Ok(());
    }
    let address = format!(
        "{}:{}",
        env("MCP_HOST").unwrap_or_else(|| "127.0.0.1".into()),
        env("MCP_PORT").unwrap_or_else(|| "3000".into())
    );
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| address.clone())?;
    let running = cldmemory_reference::serve(listener, service, info)?;
    tracing::info!(url = %running.url(), "cldmemory reference serving MCP over HTTP+SSE at /sse");
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(())
}
