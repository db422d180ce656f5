//! A small MCP client over HTTP+SSE (the 2024-11-05 transport), for tests that talk to a
//! server the way cldmemory's clients do: `GET /sse`, the `endpoint` event, JSON-RPC posted to
//! it and answered on the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::oneshot;

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

pub struct McpSseClient {
    http: reqwest::Client,
    endpoint: String,
    /// The `Mcp-Session-Id` the server named.
    pub session_id: Option<String>,
    next_id: std::sync::atomic::AtomicU64,
    waiting: Waiting,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for McpSseClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One `event:`/`data:` block of a stream.
fn parse_event(block: &str) -> (String, String) {
    let mut event = "message".to_string();
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
        }
    }
    (event, data.join("\n"))
}

impl McpSseClient {
    /// Opens `{base}/sse` (with a `Memory-Metadata` header when given) and waits for the
    /// `endpoint` event.
    pub async fn connect(base: &str, metadata: Option<&str>) -> anyhow::Result<Self> {
        let headers: Vec<(&str, &str)> = metadata
            .map(|metadata| ("memory-metadata", metadata))
            .into_iter()
            .collect();
        Self::connect_with(base, &headers).await
    }

    /// Opens `{base}/sse` with these request headers (metadata, a forced route).
    pub async fn connect_with(base: &str, headers: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::connect_using(reqwest::Client::new(), base, headers).await
    }

    /// Opens `{base}/sse` sending `token` as the bearer token with every request.
    pub async fn connect_with_token(base: &str, token: &str) -> anyhow::Result<Self> {
        Self::connect_using(bearer_client(token)?, base, &[]).await
    }

    async fn connect_using(
        http: reqwest::Client,
        base: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut request = http.get(format!("{base}/sse"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?.error_for_status()?;
        let session_id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (endpoint_tx, endpoint_rx) = oneshot::channel::<String>();
        let waiting: Waiting = Arc::default();
        let pending = waiting.clone();
        let mut stream = response.bytes_stream();
        let reader = tokio::spawn(async move {
            let mut buffer = String::new();
            let mut endpoint_tx = Some(endpoint_tx);
            while let Some(Ok(chunk)) = stream.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(at) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..at + 2).collect();
                    let (event, data) = parse_event(&block);
                    if event == "endpoint" {
                        if let Some(tx) = endpoint_tx.take() {
                            let _ = tx.send(data);
                        }
                    } else if let Ok(message) = serde_json::from_str::<Value>(&data) {
                        let id = message.get("id").and_then(Value::as_u64);
                        let waiter = id.and_then(|id| pending.lock().ok()?.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(message);
                        }
                    }
                }
            }
        });
        let path = tokio::time::timeout(Duration::from_secs(5), endpoint_rx)
            .await
            .context("no endpoint event")??;
        let endpoint = if path.starts_with("http") {
            path
        } else {
            format!("{base}{path}")
        };
        Ok(Self {
            http,
            endpoint,
            session_id,
            next_id: std::sync::atomic::AtomicU64::new(1),
            waiting,
            reader,
        })
    }

    /// Where messages are posted (`…/messages?sessionId=…`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Posts a body as it is; the status and the body of the answer.
    pub async fn post_raw(&self, body: impl Into<String>) -> anyhow::Result<(u16, String)> {
        let response = self
            .http
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// Sends a request without waiting: its id and where its answer will arrive.
    pub async fn send_request(
        &self,
        method: &str,
        params: Value,
    ) -> anyhow::Result<(u64, oneshot::Receiver<Value>)> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(id, tx);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, body) = self.post_raw(message.to_string()).await?;
        if status != 202 {
            bail!("POST answered {status}: {body}");
        }
        Ok((id, rx))
    }

    /// A JSON-RPC request; the whole response message.
    pub async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let (_, rx) = self.send_request(method, params).await?;
        Ok(tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("no answer on the stream")??)
    }

    /// `initialize` then `notifications/initialized`; the server's `initialize` result.
    pub async fn initialize(&self) -> anyhow::Result<Value> {
        let answer = self
            .request(
                "initialize",
                json!({"protocolVersion": "2024-11-05", "capabilities": {},
                       "clientInfo": {"name": "memgate-tests", "version": "0"}}),
            )
            .await?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.http.post(&self.endpoint).json(&note).send().await?;
        Ok(answer["result"].clone())
    }

    /// `tools/call`: the text of the result's first content item.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> anyhow::Result<String> {
        let answer = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await?;
        tool_text(&answer)
    }
}

/// An HTTP client that sends `token` as the bearer token with every request.
pub(crate) fn bearer_client(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// The text of a `tools/call` answer's first content item.
pub(crate) fn tool_text(answer: &Value) -> anyhow::Result<String> {
    answer["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no text in {answer}"))
}
