//! The reference cldmemory for a test: on the given vector store (the one memgate uses), with
//! the given OpenAI-compatible endpoint and the same deployment settings as memgate's layout.

use std::sync::Arc;

use cldmemory_reference::mcp::ServerInfo;
use cldmemory_reference::openai::OpenAi;
use cldmemory_reference::qdrant::QdrantService;
use cldmemory_reference::{MemoryService, RunningReference, ServiceSettings};
use memgate::config::Config;
use memgate::vectors::VectorStore;

pub struct Reference {
    /// Its tools, for calling them in-process.
    pub service: Arc<MemoryService>,
    /// Its MCP server (HTTP+SSE): clients connect to `{url}/sse`.
    pub server: RunningReference,
}

impl Reference {
    pub fn url(&self) -> String {
        self.server.url()
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

/// Starts the reference on `store`, configured as `config`'s layout says the legacy service is.
pub async fn start_reference(
    store: Arc<dyn VectorStore>,
    openai_base_url: &str,
    config: &Config,
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
    let server = cldmemory_reference::serve(
        listener,
        service.clone(),
        ServerInfo {
            name: "memory-server".into(),
        },
    )?;
    Ok(Reference { service, server })
}
