//! MCP tool calls as scenario operations: the reference cldmemory's tools over HTTP+SSE,
//! timed from sending the request to receiving its result on the stream, round-robin over a
//! few sessions. A result text starting `Error:` or saying `Memory not found` is a failure.

use std::sync::Arc;

use memgate_testkit::McpSseClient;
use serde_json::Value;

use crate::driver::{Failure, Op};

/// `sessions` initialized MCP sessions with the server at `base`.
pub async fn sessions(base: &str, sessions: usize) -> anyhow::Result<Arc<Vec<McpSseClient>>> {
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let client = McpSseClient::connect(base, None).await?;
        client.initialize().await?;
        clients.push(client);
    }
    Ok(Arc::new(clients))
}

/// An operation calling `tool` with `arguments[i % len]`.
pub fn op(
    clients: &Arc<Vec<McpSseClient>>,
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
