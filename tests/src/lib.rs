//! The test harness for memgate's end-to-end tests (in `tests/tests/`): real processes and
//! servers on loopback, never mocks of our own code.
//!
//! - [`RedisServer`]: a `redis-server` of its own on a free port, stopped on drop;
//!   [`SentinelGroup`]: a primary, replicas and sentinels watching them; [`RedisCluster`]:
//!   three masters in cluster mode.
//! - [`FakeUpstream`]: a stand-in legacy memory service that records what reached it.
//! - [`FakeOpenAi`]: an OpenAI-compatible `/embeddings` server (deterministic vectors from the
//!   hashing embedder) that counts calls and can be told to be slow or fail.
//! - [`TestStack`]: the usual end-to-end setup (Redis, the OpenAI server, memgate and a worker,
//!   and a legacy service of the test's choosing), built in one expression.
//! - [`start_proxy`]: a memgate proxy on free ports with a config built for the test.
//! - [`start_reference`]: the reference cldmemory (`reference/`) on memgate's own vector
//!   store, and [`McpSseClient`] to talk to it over MCP's HTTP+SSE transport;
//!   [`McpStdioClient`] for a `memgate` launched over stdio.
//! - [`ControlPlane`]: a real Kubernetes control plane (etcd, kube-apiserver, controllers,
//!   scheduler, kwok) for the operator's end-to-end tests.
//! - [`browser`]: Debian's headless Chromium, for what a web page can do to memgate.
//! - [`history`]: a recorded history of operations and a Jepsen-style checker.
//! - [`PrometheusServer`]: Debian's `prometheus`, scraping a test's memgate processes.
//! - [`python`] and [`node`]: the official Python and TypeScript MCP SDKs driving memgate.

pub mod browser;
mod control_plane;
pub mod history;
mod http_server;
pub mod load;
mod mcp_http;
mod mcp_sse;
mod mcp_stdio;
pub mod node;
mod openai;
mod processes;
mod prometheus;
mod proxy;
pub mod python;
mod redis_cluster;
mod redis_sentinel;
mod redis_server;
mod reference;
mod scrambled;
mod stack;
mod upstream;

pub use cldmemory_reference::SseRouting;
pub use control_plane::{control_plane_bin, host_ip, ControlPlane};
pub use http_server::{FullRequest, TestServer};
pub use mcp_http::McpHttpClient;
pub use mcp_sse::McpSseClient;
pub use mcp_stdio::McpStdioClient;
pub use openai::{chat_answer_text, FakeOpenAi};
pub use processes::{MemgateProcess, ReferenceProcess};
pub use prometheus::{PrometheusServer, ScrapeJob};
pub use proxy::{
    memgate_binary, start_proxy, start_proxy_and_worker, start_proxy_and_worker_sharing_vectors,
    start_proxy_with_backends, test_config, TEST_PROJECT,
};
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::{SentinelGroup, MASTER_NAME as SENTINEL_MASTER_NAME};
pub use redis_server::{worker_done, RedisServer};
pub use reference::{
    start_memgate_in_front_of_reference, start_reference, start_reference_with, Reference,
};
pub use scrambled::ScrambledReads;
pub use stack::{Legacy, TestStack, TestStackBuilder};
pub use upstream::{FakeUpstream, RecordedRequest};

/// A free port on loopback (free when asked; a test binds it soon after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The last `lines` lines of a log file, headed by its path, for a failing test's output.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    format!(
        "--- {} (last {lines} lines)\n{}\n",
        path.display(),
        all[all.len().saturating_sub(lines)..].join("\n")
    )
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    condition().await
}

/// The Prometheus text of an admin server's `/metrics`.
pub async fn scrape_metrics(admin: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics text")
}

/// The value of one series (`name{labels}`) in a Prometheus text, if present.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// One field (`content`, `id`, …) of every memory a REST search for `query` (limit 50) finds,
/// as `token`'s tenant when given, in the answer's order.
pub async fn search_field(
    base: &str,
    token: Option<&str>,
    query: &str,
    field: &str,
) -> Vec<String> {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/memories/search"))
        .json(&serde_json::json!({"query": query, "limit": 50}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: serde_json::Value = request
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("JSON");
    body["memories"]
        .as_array()
        .map(|memories| {
            memories
                .iter()
                .filter_map(|m| m[field].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
