//! memgate driven by the official TypeScript MCP SDK (`@modelcontextprotocol/sdk` from npm, run
//! with the machine's Node.js), the SDK cldmemory and most MCP clients are built on: its
//! HTTP+SSE and Streamable HTTP clients against embedded memgate and against memgate in front of
//! the reference cldmemory — the five memory tools, a refused call, an unknown tool, a
//! cancelled call, and a tool memgate forwards.

use memgate_testkit::node::ts_check;
use memgate_testkit::python::step;
use memgate_testkit::{start_proxy, test_config, Legacy, SseRouting, TestStack};
use serde_json::{json, Value};

const CORE_TOOLS: [&str; 5] = [
    "store_memory",
    "search_memories",
    "get_memory",
    "update_memory",
    "delete_memory",
];

/// What every walk must show, whoever answers the memory tools.
fn check_walk(observations: &[Value], server: &str) {
    assert_eq!(step(observations, "initialize")["server"], server);
    let stored = step(observations, "store");
    let id = stored["id"].as_str().expect("id");
    let memory: Value =
        serde_json::from_str(stored["text"].as_str().expect("text")).expect("a memory");
    assert_eq!(memory["context"]["tags"], json!(["orchard"]));
    let got: Value =
        serde_json::from_str(step(observations, "get")["text"].as_str().expect("text"))
            .expect("a memory");
    assert_eq!(got["id"], id);
    let found = step(observations, "search")["text"].as_str().expect("text");
    assert!(
        found.contains(id),
        "the search finds what was just stored: {found}"
    );
    let refused = step(observations, "refused")["text"]
        .as_str()
        .expect("text");
    assert!(
        refused.starts_with("Error: "),
        "cldmemory's words: {refused}"
    );
    assert_eq!(
        step(observations, "unknown")["text"],
        "Error: Unknown tool: no_such_tool",
        "an unknown tool, as cldmemory answers it"
    );
    assert_eq!(
        step(observations, "cancel")["rejected"],
        true,
        "a cancelled call is rejected and the session goes on"
    );
    assert_eq!(
        step(observations, "get_deleted")["text"],
        "Memory not found",
        "deleted"
    );
}

#[tokio::test]
async fn the_typescript_sdk_uses_embedded_memgate() {
    let data = tempfile::tempdir().expect("dir");
    let proxy = start_proxy(test_config(data.path(), None, None, None))
        .await
        .expect("proxy");
    let base = format!("http://{}", proxy.api_addr);
    for transport in ["sse", "streamable"] {
        let observations = ts_check(&[&base, transport]).await;
        check_walk(&observations, "memgate");
        assert_eq!(
            step(&observations, "tools")["names"],
            json!(CORE_TOOLS),
            "{transport}"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_typescript_sdk_uses_memgate_in_front_of_cldmemory() {
    let stack = TestStack::builder()
        .legacy(Legacy::InFront(SseRouting::NewestStream))
        .configure(|config| config.rollout.percent = 100)
        .start()
        .await;
    let base = stack.url("");
    let direct = stack
        .reference()
        .call("delete_all_memories", json!({"confirm": false}))
        .await;
    for transport in ["sse", "streamable"] {
        let observations = ts_check(&[&base, transport, "delete_all_memories"]).await;
        check_walk(&observations, "memory-server");
        let names = step(&observations, "tools")["names"].clone();
        assert!(
            names
                .as_array()
                .expect("names")
                .contains(&json!("connect_memories")),
            "{transport}: the legacy service's tools: {names}"
        );
        assert_eq!(
            step(&observations, "forwarded")["text"].as_str(),
            Some(direct.as_str()),
            "{transport}: forwarded, answered in cldmemory's words"
        );
    }
}
