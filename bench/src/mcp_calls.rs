//! MCP tool calls as scenario operations, over HTTP+SSE (timed from sending the request to
//! receiving its result on the stream) or Streamable HTTP (to the POST's answer), round-robin
//! over a few sessions. A result text starting `Error:` or saying `Memory not found` is a
//! failure.

use std::sync::Arc;

use memgate_testkit::{McpHttpClient, McpSseClient};
use serde_json::Value;

use crate::driver::{Failure, Op};

/// How a session reaches its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    /// Streamable HTTP.
    Http,
}

/// One initialized session.
pub enum McpClient {
    Sse(McpSseClient),
    Http(McpHttpClient),
}

impl McpClient {
    async fn call_tool(&self, tool: &str, arguments: Value) -> anyhow::Result<String> {
        match self {
            Self::Sse(client) => client.call_tool(tool, arguments).await,
            Self::Http(client) => client.call_tool(tool, arguments).await,
        }
    }
}

/// `count` initialized sessions with the server at `base`; `headers` go with the SSE
/// stream's request (a forced route).
pub async fn sessions(
    base: &str,
    count: usize,
    transport: Transport,
    headers: &[(&str, &str)],
) -> anyhow::Result<Arc<Vec<McpClient>>> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(match transport {
            Transport::Sse => {
                let client = McpSseClient::connect_with(base, headers).await?;
                client.initialize().await?;
                McpClient::Sse(client)
            }
            Transport::Http => McpClient::Http(McpHttpClient::connect(base).await?),
        });
    }
    Ok(Arc::new(clients))
}

/// An operation calling `tool` with `arguments[i % len]`.
pub fn op(
    clients: &Arc<Vec<McpClient>>,
    tool: &'static str,
    arguments: Vec<Value>,
) -> anyhow::Result<Op> {
    anyhow::ensure!(
        !arguments.is_empty() && !clients.is_empty(),
        "a scenario needs calls and sessions"
    );
    let arguments = Arc::new(arguments);
    let clients = clients.clone();
    Ok(Arc::new(move |i| {
        let arguments = arguments.clone();
        let clients = clients.clone();
        Box::pin(async move {
            let client = &clients[i % clients.len()];
            let text = client
                .call_tool(tool, arguments[i % arguments.len()].clone())
                .await
                .map_err(|error| Failure::Error(format!("{tool}: {error}")))?;
            if text.starts_with("Error:") || text == "Memory not found" {
                return Err(Failure::Error(format!(
                    "{tool}: {}",
                    &text[..text.len().min(300)]
                )));
            }
            Ok(())
        })
    }))
}
