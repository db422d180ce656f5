//! A small MCP client over Streamable HTTP: `POST /mcp` with the session's id, JSON answers.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub struct McpHttpClient {
    http: reqwest::Client,
    url: String,
    session_id: String,
    next_id: AtomicU64,
}

impl McpHttpClient {
    /// `initialize` at `{base}/mcp` (and `notifications/initialized`): a session.
    pub async fn connect(base: &str) -> anyhow::Result<Self> {
        Self::connect_using(reqwest::Client::new(), base).await
    }

    /// [`Self::connect`], sending `token` as the bearer token with every request.
    pub async fn connect_with_token(base: &str, token: &str) -> anyhow::Result<Self> {
        Self::connect_using(crate::mcp_sse::bearer_client(token)?, base).await
    }

    async fn connect_using(http: reqwest::Client, base: &str) -> anyhow::Result<Self> {
        let url = format!("{base}/mcp");
        let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "memgate-tests", "version": "0"}}});
        let response = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("initialize answered {}", response.status());
        }
        let session_id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("no Mcp-Session-Id")?
            .to_string();
        let client = Self {
            http,
            url,
            session_id,
            next_id: AtomicU64::new(1),
        };
        client
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(client)
    }

    async fn post(&self, message: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session_id)
            .header("mcp-protocol-version", "2025-06-18")
            .json(message)
            .send()
            .await?)
    }

    /// The session memgate named in its `initialize` answer.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The endpoint, `{base}/mcp`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A JSON-RPC request; the whole response message.
    pub async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self.post(&message).await?;
        if !response.status().is_success() {
            bail!("POST answered {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// `tools/call`: the text of the result's first content item.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> anyhow::Result<String> {
        let answer = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await?;
        crate::mcp_sse::tool_text(&answer)
    }
}
