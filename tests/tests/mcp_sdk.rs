//! memgate's own MCP memory server, driven by the official Python MCP SDK: `memgate serve`
//! with no legacy service over HTTP+SSE and Streamable HTTP, and `memgate mcp stdio` launched
//! by the SDK as cldmemory's clients launch it (alone, and with the legacy service as its
//! child).

use memgate_testkit::python::{sdk_check, step};
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

        let sessions = sdk_check(&["sessions", &base, transport, "20"]).await;
        assert_eq!(sessions.len(), 20);
        for session in &sessions {
            assert_eq!(session["id"], session["got_id"], "{session}");
            assert_eq!(session["user"], format!("u{}", session["n"]), "{session}");
        }
    }
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
    let reference_tools = [
        "store_memory",
        "search_memories",
        "get_memory",
        "update_memory",
        "delete_memory",
        "connect_memories",
        "remove_association",
        "delete_memories_bulk",
        "delete_all_memories",
    ];
    check_walk(&observations, &reference_tools, "memory-server");
    assert_eq!(
        step(&observations, "delete_all")["text"],
        "{\n  \"message\": \"All memories have been deleted\",\n  \"deleted\": true\n}"
    );
}
