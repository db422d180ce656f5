//! A cldmemory user switches by changing the URL and nothing else: memgate configured only
//! by cldmemory's own environment (its `.env`), in front of the reference cldmemory configured
//! by the same environment, answers as cldmemory does — same collection, threshold, metadata
//! and project stamp.
//!
//! The one substitution: cldmemory's `QDRANT_URL` names a Qdrant server, and none can run
//! here, so both share one Qdrant Edge shard instead (memgate reading it with payload keys
//! out of order, as over gRPC). Everything else memgate uses comes from the environment, read
//! by the same code path as `memgate serve --upstream <url>`.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cldmemory_reference::mcp::ServerInfo;
use cldmemory_reference::openai::OpenAi;
use cldmemory_reference::qdrant::QdrantService;
use cldmemory_reference::{MemoryService, ServiceSettings, SseRouting};
use memgate::backend::vectors::{CollectionSpec, EdgeStore, VectorStore};
use memgate::cli::{Cli, Command};
use memgate::config::{CacheBackend, DistanceMetric, VectorBackend};
use memgate_testkit::{
    eventually, memgate_binary, FakeOpenAi, McpSseClient, McpStdioClient, ScrambledReads,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// text-embedding-3-small's size, memgate's default and cldmemory's.
const DIMENSIONS: usize = 1536;
const COLLECTION: &str = "team_memories";

/// A cldmemory deployment's environment, as its `.env` would set it.
fn cldmemory_env(openai: &FakeOpenAi) -> Vec<(String, String)> {
    [
        ("QDRANT_URL", "http://127.0.0.1:6333".to_string()),
        ("QDRANT_COLLECTION_NAME", COLLECTION.into()),
        ("OPENAI_API_KEY", "sk-test".into()),
        ("OPENAI_BASE_URL", openai.base_url()),
        ("OPENAI_MODEL", "text-embedding-test".into()),
        ("SIMILARITY_THRESHOLD", "0.2".into()),
        ("MEMORY_METADATA", "team:alpha,env:prod".into()),
        ("MCP_TRANSPORT_MODE", "sse".into()),
        ("MCP_PORT", "3000".into()),
        ("MCP_HOST", "0.0.0.0".into()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}

fn var<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .expect("set")
}

/// The project cldmemory stamps: its host's name and its working directory.
fn cldmemory_project() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let cwd = std::env::current_dir().expect("cwd");
    format!("{}:{}", host.trim(), cwd.display())
}

/// The reference cldmemory on `store`, configured by `env` as cldmemory reads it.
async fn reference_from_env(
    store: Arc<dyn VectorStore>,
    env: &[(String, String)],
) -> (Arc<MemoryService>, cldmemory_reference::RunningReference) {
    store
        .ensure_collection(&CollectionSpec {
            name: var(env, "QDRANT_COLLECTION_NAME").into(),
            dimensions: DIMENSIONS as u64,
            distance: DistanceMetric::Cosine,
            scope_field: None,
            indexes: Vec::new(),
            shards: None,
        })
        .await
        .expect("cldmemory's collection");
    let service = Arc::new(MemoryService::new(
        QdrantService::new(store),
        OpenAi::new(
            var(env, "OPENAI_BASE_URL"),
            var(env, "OPENAI_API_KEY"),
            var(env, "OPENAI_MODEL"),
        ),
        ServiceSettings {
            similarity_threshold: var(env, "SIMILARITY_THRESHOLD").parse().expect("number"),
            memory_metadata: Some(var(env, "MEMORY_METADATA").into()),
            project: cldmemory_project(),
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let server = cldmemory_reference::serve_with(
        listener,
        service.clone(),
        ServerInfo {
            name: "memory-server".into(),
        },
        SseRouting::NewestStream,
    )
    .expect("the reference serves");
    (service, server)
}

async fn reference_call(service: &MemoryService, tool: &str, arguments: Value) -> String {
    let result = cldmemory_reference::tools::call(service, tool, Some(&arguments)).await;
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn without_reads(text: &str) -> Value {
    let mut memory: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("JSON: {text}"));
    if let Some(memory) = memory.as_object_mut() {
        memory.shift_remove("accessCount");
        memory.shift_remove("lastAccessed");
    }
    memory
}

#[tokio::test]
async fn memgate_with_only_cldmemorys_environment_answers_as_cldmemory_does() {
    let openai = FakeOpenAi::start(DIMENSIONS).await.expect("fake OpenAI");
    let env = cldmemory_env(&openai);
    let data = tempfile::tempdir().expect("dir");
    let vectors: Arc<dyn VectorStore> = Arc::new(EdgeStore::open(Some(data.path())).expect("edge"));
    let (reference, server) = reference_from_env(vectors.clone(), &env).await;

    // `memgate serve --upstream <cldmemory>` with the environment above and nothing else.
    let cli = Cli::try_parse_from([
        "memgate",
        "serve",
        "--upstream",
        &server.url(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .expect("parses");
    let Command::Serve(args) = cli.command else {
        panic!("serve")
    };
    let mut sources = args.sources();
    sources.env = env.clone();
    let config = memgate::config::load(&sources).expect("a valid config from cldmemory's .env");
    assert_eq!(config.vectors.backend, VectorBackend::Qdrant);
    assert_eq!(config.vectors.url.as_deref(), Some("http://127.0.0.1:6334"));
    assert_eq!(
        config.vectors.rest_url().as_deref(),
        Some("http://127.0.0.1:6333")
    );
    assert_eq!(config.vectors.collection, COLLECTION);
    assert_eq!(config.openai.base_url, openai.base_url());
    assert_eq!(config.openai.api_key.as_deref(), Some("sk-test"));
    assert_eq!(config.embeddings.model, "text-embedding-test");
    assert_eq!(config.layout.similarity_threshold, 0.2);
    assert_eq!(
        config.layout.memory_metadata.as_deref(),
        Some("team:alpha,env:prod")
    );
    // The speed-up without further settings: every request on the fast path, writes applied
    // by this process, the listeners on loopback only.
    assert_eq!(config.rollout.percent, 100);
    assert!(!config.worker.separate);
    assert_eq!(config.cache.backend, CacheBackend::Memory);

    // No Qdrant server here: the shard the reference uses, read as over gRPC.
    let backends = memgate::app::Backends::with_vectors(
        &config,
        Arc::new(ScrambledReads::new(vectors.clone())),
    )
    .expect("backends");
    let proxy = memgate::app::start_with(config, backends, None)
        .await
        .expect("memgate serves");
    let memgate = McpSseClient::connect(&format!("http://{}", proxy.api_addr), None)
        .await
        .expect("an MCP client of memgate");
    memgate.initialize().await.expect("initialize");

    // Written through memgate: cldmemory reads it as its own.
    let stored = memgate
        .call_tool(
            "store_memory",
            json!({"content": "the release train leaves on thursdays", "type": "procedural", "importance": 0.8}),
        )
        .await
        .expect("store");
    let id = serde_json::from_str::<Value>(&stored).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let applied = eventually(Duration::from_secs(20), || async {
        vectors
            .retrieve(Uuid::parse_str(&id).expect("uuid"))
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    assert!(
        applied,
        "memgate wrote the memory to cldmemory's collection"
    );
    let payload = vectors
        .retrieve(Uuid::parse_str(&id).expect("uuid"))
        .await
        .expect("retrieve")
        .expect("stored");
    assert_eq!(
        payload["metadata"],
        json!({"team": "alpha", "env": "prod"}),
        "MEMORY_METADATA stamped"
    );
    assert_eq!(payload["project"], cldmemory_project().as_str());

    let by_memgate = memgate
        .call_tool("get_memory", json!({"id": id}))
        .await
        .expect("get");
    let by_cldmemory = reference_call(&reference, "get_memory", json!({"id": id})).await;
    assert_eq!(without_reads(&by_memgate), without_reads(&by_cldmemory));

    // Written through cldmemory: memgate finds and shows it as cldmemory does.
    let theirs = reference_call(
        &reference,
        "store_memory",
        json!({"content": "the release notes go out on fridays", "type": "procedural"}),
    )
    .await;
    let theirs = serde_json::from_str::<Value>(&theirs).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let by_memgate = memgate
        .call_tool("get_memory", json!({"id": theirs}))
        .await
        .expect("get");
    let by_cldmemory = reference_call(&reference, "get_memory", json!({"id": theirs})).await;
    assert_eq!(without_reads(&by_memgate), without_reads(&by_cldmemory));

    // The same search, the same rows in the same order, under the environment's threshold.
    let query = json!({"query": "when does the release train leave", "limit": 10});
    let memgate_rows = memgate
        .call_tool("search_memories", query.clone())
        .await
        .expect("search");
    let cldmemory_rows = reference_call(&reference, "search_memories", query).await;
    assert_eq!(memgate_rows, cldmemory_rows);
    assert!(memgate_rows.contains(&id), "{memgate_rows}");

    proxy.shutdown().await;
    server.stop().await;
}

#[test]
fn the_legacy_child_over_stdio_speaks_stdio_whatever_its_env_file_says() {
    // cldmemory's `.env` may say `MCP_TRANSPORT_MODE=sse` (it runs as a server elsewhere);
    // launched by memgate as a child, it must still speak on its stdio.
    let data = tempfile::tempdir().expect("dir");
    let reference = memgate_binary().with_file_name("cldmemory-reference");
    assert!(
        reference.exists(),
        "scripts/test.sh builds cldmemory-reference"
    );
    let port = memgate_testkit::free_port().expect("port");
    let mut command = std::process::Command::new(memgate_binary());
    command
        .args(["mcp", "stdio", "--embedded", "--ephemeral", "--"])
        .arg(&reference)
        .env("MCP_TRANSPORT_MODE", "sse")
        .env("MCP_PORT", port.to_string())
        .env("EDGE_PATH", data.path())
        .env("VECTOR_DIMENSION", "64")
        .env("MEMGATE_LOG", "warn");
    let mut client = McpStdioClient::launch(command).expect("memgate and its child answer");
    let tools = client.request("tools/list", json!({})).expect("tools");
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(names.contains(&"delete_all_memories"), "{names:?}");
    // Answered by the child (cldmemory's own tool, which memgate forwards).
    let deleted = client
        .tool("delete_all_memories", json!({"confirm": true}))
        .expect("forwarded");
    assert!(deleted.contains("deleted"), "{deleted}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the child serves no HTTP"
    );
    assert!(client.close().expect("exits").success());
}
