//! memgate's own MCP memory server, driven by the official Python MCP SDK: `memgate serve`
//! with no legacy service over HTTP+SSE and Streamable HTTP, and `memgate mcp stdio` launched
//! by the SDK as cldmemory's clients launch it (alone, and with the legacy service as its
//! child).

use memgate_testkit::python::{check_sessions, sdk_check, step};
use memgate_testkit::{memgate_binary, start_proxy, test_config};
use serde_json::{json, Value};

const CORE_TOOLS: [&str; 5] = [
    "store_memory",
    "search_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
];

/// What every walk through the memory tools must show.
fn check_walk(observations: &[Value], tools: &[&str], server: &str) {
    let init = step(observations, "initialize");
    assert_eq!(
        init["protocolVersion"], "2025-11-25",
        "the SDK's newest handshake revision"
    );
    assert_eq!(init["server"], server);
    assert_eq!(step(observations, "tools")["names"], json!(tools));
    let stored = step(observations, "store");
    let id = stored["id"].as_str().expect("id");
    let memory: Value = serde_json::from_str(stored["text"].as_str().expect("text")).expect("JSON");
    assert_eq!(memory["context"]["tags"], json!(["garden"]));
    assert_eq!(memory["importance"], 0.6);
    let got: Value =
        serde_json::from_str(step(observations, "get")["text"].as_str().expect("text"))
            .expect("JSON");
    assert_eq!(got["id"], id);
    assert_eq!(got["content"], memory["content"]);
    let found = step(observations, "search")["text"].as_str().expect("text");
    assert!(found.contains(id), "the search finds it: {found}");
    assert_eq!(
        step(observations, "delete")["text"],
        format!("Memory {id} deleted successfully")
    );
    assert_eq!(
        step(observations, "get_deleted")["text"],
        "Memory not found"
    );
}

#[tokio::test]
async fn the_python_sdk_uses_memgates_own_memory_server_over_both_transports() {
    let data = tempfile::tempdir().expect("dir");
    let proxy = start_proxy(test_config(data.path(), None, None, None))
        .await
        .expect("proxy");
    let base = format!("http://{}", proxy.api_addr);
    for transport in ["sse", "streamable"] {
        let observations = sdk_check(&["session", &base, transport]).await;
        check_walk(&observations, &CORE_TOOLS, "memgate");
        let memory: Value =
            serde_json::from_str(step(&observations, "store")["text"].as_str().expect("text"))
                .expect("JSON");
        assert_eq!(
            memory["metadata"]["user"], "ann",
            "{transport}: the client's metadata"
        );

        check_sessions(&sdk_check(&["sessions", &base, transport, "20"]).await, 20);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn streamable_http_can_answer_on_an_event_stream() {
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(data.path(), None, None, None);
    config.mcp.streamable_response = memgate::config::StreamableResponse::Sse;
    let proxy = start_proxy(config).await.expect("proxy");
    let base = format!("http://{}", proxy.api_addr);
    let observations = sdk_check(&["session", &base, "streamable"]).await;
    check_walk(&observations, &CORE_TOOLS, "memgate");
    let answer = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}}}))
        .send()
        .await
        .expect("initialize");
    assert_eq!(
        answer.headers()["content-type"],
        "text/event-stream",
        "answered on an event stream"
    );
    let body = answer.text().await.expect("body");
    assert!(body.starts_with("event: message\ndata: {"), "{body}");
    assert!(
        body.contains("\"protocolVersion\":\"2025-03-26\""),
        "{body}"
    );
    proxy.shutdown().await;
}

/// The reference cldmemory's binary, next to memgate's (scripts/test.sh builds both).
fn reference_binary() -> std::path::PathBuf {
    let binary = memgate_binary().with_file_name("cldmemory-reference");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p cldmemory-reference` (scripts/test.sh does)",
        binary.display()
    );
    binary
}

#[tokio::test]
async fn the_python_sdk_launches_memgate_over_stdio_alone_and_with_the_legacy_as_its_child() {
    let data = tempfile::tempdir().expect("dir");
    let memgate = memgate_binary();
    let memgate = memgate.to_str().expect("path");
    let alone = data.path().join("alone");
    let observations = sdk_check(&[
        "stdio",
        memgate,
        "mcp",
        "stdio",
        "--embedded",
        "--data-dir",
        alone.to_str().expect("path"),
    ])
    .await;
    check_walk(&observations, &CORE_TOOLS, "memgate");

    // cldmemory launched by memgate: its tools and its name; the memory tools answered by
    // memgate, the others by the child.
    let reference = reference_binary();
    let fronted = data.path().join("fronted");
    let observations = sdk_check(&[
        "stdio",
        memgate,
        "mcp",
        "stdio",
        "--embedded",
        "--data-dir",
        fronted.to_str().expect("path"),
        "--",
        reference.to_str().expect("path"),
    ])
    .await;
    let reference_tools = cldmemory_reference::tools::TOOL_NAMES;
    check_walk(&observations, &reference_tools, "memory-server");
    assert_eq!(
        step(&observations, "delete_all")["text"],
        "{\n  \"message\": \"All memories have been deleted\",\n  \"deleted\": true\n}"
    );
}

#[tokio::test]
async fn memgate_forwards_to_a_legacy_service_speaking_streamable_http() {
    use memgate::config::UpstreamMcpTransport;
    use memgate_testkit::{McpHttpClient, McpSseClient};
    // The legacy service: a memory server answering MCP on `/mcp` (memgate's own, with no
    // legacy service of its own).
    let legacy_data = tempfile::tempdir().expect("dir");
    let legacy = start_proxy(test_config(legacy_data.path(), None, None, None))
        .await
        .expect("legacy");
    let legacy_url = format!("http://{}", legacy.api_addr);
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(data.path(), None, None, Some(legacy_url.clone()));
    config.upstream.mcp.transport = UpstreamMcpTransport::StreamableHttp;
    let gateway = start_proxy(config).await.expect("gateway");
    let gateway_url = format!("http://{}", gateway.api_addr);

    // A session forced to the legacy route has every call answered by the legacy service.
    let client = McpSseClient::connect_with(&gateway_url, &[("x-memgate-route", "legacy")])
        .await
        .expect("connects");
    let init = client.initialize().await.expect("initialize");
    assert_eq!(init["serverInfo"]["name"], "memgate");
    let tools = client
        .request("tools/list", json!({}))
        .await
        .expect("tools");
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, CORE_TOOLS);
    let stored = client
        .call_tool(
            "store_memory",
            json!({"content": "Stored through the gateway", "type": "semantic"}),
        )
        .await
        .expect("store");
    let id = serde_json::from_str::<Value>(&stored).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let direct = McpHttpClient::connect(&legacy_url).await.expect("legacy");
    let there = direct
        .call_tool("get_memory", json!({"id": id}))
        .await
        .expect("get");
    assert!(there.contains("Stored through the gateway"), "{there}");
    let forwarded = client
        .call_tool("get_memory", json!({"id": id}))
        .await
        .expect("get");
    assert_eq!(
        serde_json::from_str::<Value>(&forwarded).expect("JSON")["id"],
        id.as_str()
    );
    gateway.shutdown().await;
    legacy.shutdown().await;
}

/// The SDK's 2026-07-28 client on `/mcp`: found by its probe (`server/discover`) and pinned,
/// it uses the memory tools with no session and no `initialize`.
#[tokio::test]
async fn a_2026_client_uses_memgate_without_a_session() {
    let data = tempfile::tempdir().expect("dir");
    let proxy = start_proxy(test_config(data.path(), None, None, None))
        .await
        .expect("proxy");
    let base = format!("http://{}", proxy.api_addr);
    for mode in ["auto", "2026-07-28"] {
        let observations = sdk_check(&["modern", &base, mode]).await;
        let connected = step(&observations, "connected");
        assert_eq!(
            connected["protocolVersion"], "2026-07-28",
            "{mode}: no fallback"
        );
        assert_eq!(step(&observations, "tools")["names"], json!(CORE_TOOLS));
        let stored = step(&observations, "store");
        let id = stored["id"].as_str().expect("id");
        let got: Value =
            serde_json::from_str(step(&observations, "get")["text"].as_str().expect("text"))
                .expect("JSON");
        assert_eq!(got["id"], id, "{mode}");
        assert_eq!(
            step(&observations, "get_deleted")["text"],
            "Memory not found",
            "{mode}"
        );
    }
    assert_eq!(
        proxy.state.mcp.front.sessions.len(),
        0,
        "no session was kept for them"
    );
    proxy.shutdown().await;
}
