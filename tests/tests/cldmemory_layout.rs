//! memgate and cldmemory on one store: memories written through either are indistinguishable
//! to both. memgate (proxy and worker on a real `redis-server`) and the reference cldmemory
//! (`reference/`, written from the facts sheet apart from memgate's layout code) share one
//! Qdrant Edge shard and one OpenAI-compatible stand-in, whose embeddings are deterministic:
//! equal vectors prove equal embedded texts.

use std::time::Duration;

use memgate::backend::embeddings::HashingEmbedder;
use memgate::config::Config;
use memgate_testkit::{eventually, Legacy, McpSseClient, TestStack, TEST_PROJECT};
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The embedding size of [`TestStack`]'s OpenAI server.
const DIMENSIONS: usize = 64;

memgate_testkit::stack_env!(Env);

impl Env {
    async fn start(adjust: impl FnOnce(&mut Config) + 'static) -> Env {
        let stack = TestStack::builder()
            .legacy(Legacy::Beside)
            .configure(|config| {
                config.rollout.percent = 100;
                config.layout.similarity_threshold = 0.3;
                config.layout.memory_metadata = Some("team:core,env:test".into());
            })
            .configure(adjust)
            .start()
            .await;
        Env(stack)
    }

    /// `POST /memories` through memgate; waits until the worker stored it and its
    /// associations.
    async fn memgate_store(&self, body: Value, metadata: Option<&str>) -> String {
        let mut request = self.http.post(self.url("/memories")).json(&body);
        if let Some(metadata) = metadata {
            request = request.header("memory-metadata", metadata);
        }
        let response = request.send().await.expect("create");
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.expect("json");
        let id = accepted["id"].as_str().expect("id").to_string();
        self.wait_for_worker(&id).await;
        id
    }

    async fn memgate_get(&self, id: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(&format!("/memories/{id}")))
            .send()
            .await
            .expect("get");
        (
            response.status().as_u16(),
            response.json().await.expect("json"),
        )
    }

    async fn memgate_search(&self, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/memories/search"))
            .json(&body)
            .send()
            .await
            .expect("search");
        (
            response.status().as_u16(),
            response.json().await.expect("json"),
        )
    }

    /// A reference tool's result, parsed when it is JSON.
    async fn reference(&self, tool: &str, arguments: Value) -> Value {
        let text = self.0.reference().call(tool, arguments).await;
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    async fn payload(&self, id: &str) -> Map<String, Value> {
        self.vectors()
            .retrieve(Uuid::parse_str(id).expect("uuid"))
            .await
            .expect("retrieve")
            .expect("stored")
    }

    async fn vector(&self, id: &str) -> Vec<f32> {
        self.vectors()
            .vector_of(Uuid::parse_str(id).expect("uuid"))
            .await
            .expect("vector")
            .expect("stored")
    }
}

/// The embedding the stand-in gives a text.
fn embedding(text: &str) -> Vec<f32> {
    HashingEmbedder::new("fake", DIMENSIONS).embed_one(text)
}

fn without(memory: &Value, fields: &[&str]) -> Value {
    let mut memory = memory.as_object().cloned().unwrap_or_default();
    for field in fields {
        memory.shift_remove(*field);
    }
    Value::Object(memory)
}

fn ids(results: &Value) -> Vec<String> {
    results
        .as_array()
        .expect("an array")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

/// The text the reference embeds for a stored memory, rebuilt from the facts sheet's recipe
/// (its own code, not memgate's layout).
fn reference_text(memory: &Map<String, Value>) -> String {
    cldmemory_reference::model::memory_embedding_text(memory)
}

#[tokio::test]
async fn memories_memgate_writes_read_back_in_cldmemory_unchanged() {
    let env = Env::start(|_| {}).await;
    let id = env
        .memgate_store(
            json!({"content": "We drank strong coffee in Paris with Marie", "type": "episodic",
                   "context": {"location": "Paris", "people": ["Marie"]}}),
            Some("alice,host:laptop"),
        )
        .await;
    let payload = env.payload(&id).await;
    assert_eq!(payload["id"], id.as_str(), "the id is in the payload");
    assert_eq!(
        Value::Object(payload.clone()),
        json!({
            "id": id, "summary": "Summary: We drank strong coffee in Paris with Marie",
            "content": "We drank strong coffee in Paris with Marie", "type": "episodic",
            "timestamp": payload["timestamp"], "importance": 0.7, "emotionalValence": 0.1,
            "associations": [],
            "context": {"tags": ["drank", "strong", "coffee"], "location": "Paris", "people": ["Marie"]},
            "metadata": {"team": "core", "env": "test", "user": "alice", "host": "laptop"},
            "lastAccessed": payload["lastAccessed"], "accessCount": 0, "decay": 0,
            "project": TEST_PROJECT,
        }),
        "cldmemory's payload, with memgate's bookkeeping left in Redis"
    );
    assert_eq!(
        env.vector(&id).await,
        embedding(&reference_text(&payload)),
        "the stored vector embeds cldmemory's text"
    );

    // cldmemory reads it as one of its own.
    let got = env.reference("get_memory", json!({"id": id})).await;
    assert_eq!(got, Value::Object(payload.clone()));
    let found = env
        .reference(
            "search_memories",
            json!({"query": "strong coffee in Paris", "limit": 10, "detailLevel": "full"}),
        )
        .await;
    assert_eq!(ids(&found), vec![id.clone()], "{found}");
    // ... and memgate serves the same fields, plus its status.
    let (status, served) = env.memgate_get(&id).await;
    assert_eq!(status, 200);
    assert_eq!(without(&served, &["status"]), Value::Object(payload));
    assert_eq!(served["status"], "ready");
}

#[tokio::test]
async fn memories_cldmemory_writes_read_back_in_memgate_unchanged() {
    let env = Env::start(|_| {}).await;
    let stored = env
        .reference(
            "store_memory",
            json!({"content": "A sad goodbye at the train station", "type": "emotional",
                   "summary": "Goodbye.", "context": {"mood": "sad", "tags": ["farewell"]},
                   "_clientMetadata": "bob"}),
        )
        .await;
    let id = stored["id"].as_str().expect("id").to_string();
    let (status, served) = env.memgate_get(&id).await;
    assert_eq!(status, 200);
    assert_eq!(without(&served, &["status"]), stored, "field by field");
    let layout = memgate::layout::from_config(&memgate::config::LayoutConfig {
        similarity_threshold: 0.3,
        memory_metadata: Some("team:core,env:test".into()),
        project: Some(TEST_PROJECT.into()),
        ..Default::default()
    });
    let payload = env.payload(&id).await;
    assert_eq!(
        env.vector(&id).await,
        embedding(&layout.embedded_text(&payload)),
        "memgate's layout embeds the text cldmemory embedded"
    );
    let (_, found) = env
        .memgate_search(json!({"query": "goodbye at the train station"}))
        .await;
    assert_eq!(ids(&found["memories"]), vec![id]);
}

#[tokio::test]
async fn the_same_memory_written_by_either_is_stored_alike() {
    let env = Env::start(|_| {}).await;
    let arguments = json!({"content": format!("{} and a happy ending", "A long story ".repeat(20)),
                           "type": "semantic", "context": {"source": "notes", "activity": "reading"}});
    let by_memgate = env.memgate_store(arguments.clone(), None).await;
    let by_reference = env.reference("store_memory", arguments).await;
    let by_reference = by_reference["id"].as_str().expect("id").to_string();
    env.wait_for_worker(&by_memgate).await;
    let ours = env.payload(&by_memgate).await;
    let theirs = env.payload(&by_reference).await;
    let skip = ["id", "timestamp", "lastAccessed", "associations"];
    assert_eq!(
        without(&Value::Object(ours.clone()), &skip),
        without(&Value::Object(theirs.clone()), &skip)
    );
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same keys in the same order"
    );
    assert_eq!(
        env.vector(&by_memgate).await,
        env.vector(&by_reference).await
    );
}

#[tokio::test]
async fn the_same_search_finds_the_same_memories_in_the_same_order() {
    let env = Env::start(|_| {}).await;
    let contents = [
        ("semantic", "Paris is the capital of France"),
        ("episodic", "We drank coffee in Paris last spring"),
        ("episodic", "A sad rainy day in Paris"),
        ("procedural", "How to brew coffee with a French press"),
        ("semantic", "The quarterly tax report is due in April"),
        ("emotional", "A happy reunion with old friends in Berlin"),
    ];
    for (i, (kind, content)) in contents.iter().enumerate() {
        let arguments =
            json!({"content": content, "type": kind, "importance": 0.1 * (i + 3) as f64});
        if i % 2 == 0 {
            env.memgate_store(arguments, None).await;
        } else {
            env.reference("store_memory", arguments).await;
        }
    }
    let searches = [
        json!({"query": "coffee in Paris"}),
        json!({"query": "Paris", "type": "episodic"}),
        json!({"query": "Paris", "minImportance": 0.5}),
        json!({"query": "coffee", "emotionalRange": {"min": 0, "max": 1}}),
        json!({"query": "Paris", "similarityThreshold": 0.1, "limit": 3}),
        json!({"query": "Paris", "dateRange": {"start": "2000-01-01", "end": "2100-01-01"}}),
        json!({"query": "", "type": "semantic"}),
        json!({"query": "   "}),
        json!({"query": "Paris", "emotionalRange": {"min": 0.5, "max": -0.5}}),
        json!({"query": "coffee in Paris", "includeAssociations": true}),
    ];
    let mut found_some = 0;
    for search in searches {
        let theirs = env.reference("search_memories", search.clone()).await;
        found_some += usize::from(!ids(&theirs).is_empty());
        let mut ours_request = search.clone();
        ours_request["detailLevel"] = json!("compact");
        let (status, ours) = env.memgate_search(ours_request).await;
        assert_eq!(status, 200, "{search}: {ours}");
        assert_eq!(ids(&ours["memories"]), ids(&theirs), "{search}");
        let rows: Vec<Value> = ours["memories"]
            .as_array()
            .expect("memories")
            .iter()
            .map(|row| without(row, &["score", "status", "accessCount", "lastAccessed"]))
            .collect();
        let reference_rows: Vec<Value> = theirs
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| without(row, &["accessCount", "lastAccessed"]))
            .collect();
        assert_eq!(rows, reference_rows, "compact rows alike: {search}");
    }
    assert!(found_some >= 6, "only {found_some} searches found anything");
}

#[tokio::test]
async fn chunked_memories_come_back_whole_from_both() {
    let env = Env::start(|_| {}).await;
    let parent = Uuid::new_v4().to_string();
    let memory = |id: &str, content: &str, context: Value| {
        let mut memory = json!({
            "id": id, "summary": content, "content": content, "type": "semantic",
            "timestamp": "2026-01-01T00:00:00.000Z", "importance": 0.8, "emotionalValence": 0,
            "associations": [], "context": context, "metadata": {},
            "lastAccessed": "2026-01-01T00:00:00.000Z", "accessCount": 0, "decay": 0,
            "project": TEST_PROJECT,
        });
        let text = reference_text(memory.as_object().expect("object"));
        memory["embedding"] = json!(embedding(&text));
        memory
    };
    let points = [
        memory(
            &parent,
            "[Chunked Memory - 2 parts] The history of the lighthouse keepers...",
            json!({"tags": ["lighthouse"], "isParentChunk": true, "totalChunks": 2}),
        ),
        memory(
            &Uuid::new_v4().to_string(),
            "Part two: the lighthouse was automated.",
            json!({"tags": ["lighthouse"], "chunkIndex": 1, "chunkOf": parent, "totalChunks": 2}),
        ),
        memory(
            &Uuid::new_v4().to_string(),
            "Part one: keepers lived in the lighthouse.",
            json!({"tags": ["lighthouse"], "chunkIndex": 0, "chunkOf": parent, "totalChunks": 2}),
        ),
    ];
    for mut point in points {
        let vector: Vec<f32> = serde_json::from_value(point["embedding"].take()).expect("vector");
        let mut payload = point.as_object().cloned().expect("object");
        payload.shift_remove("embedding");
        let id = Uuid::parse_str(payload["id"].as_str().expect("id")).expect("uuid");
        env.vectors()
            .upsert(vec![memgate::backend::vectors::MemoryPoint {
                id,
                vector,
                memory: payload,
            }])
            .await
            .expect("upsert");
    }
    let search = json!({"query": "the lighthouse keepers", "detailLevel": "full", "reconstructChunks": true});
    let theirs = env.reference("search_memories", search.clone()).await;
    let (_, ours) = env.memgate_search(search).await;
    assert_eq!(
        ids(&ours["memories"]),
        vec![parent.clone()],
        "chunks are left out"
    );
    assert_eq!(ids(&theirs), vec![parent]);
    let whole = &ours["memories"][0];
    assert_eq!(
        whole["content"],
        "Part one: keepers lived in the lighthouse.\n\nPart two: the lighthouse was automated."
    );
    assert_eq!(
        whole["metadata"],
        json!({"reconstructed": true, "chunkCount": 2})
    );
    assert_eq!(
        without(whole, &["score", "status", "accessCount", "lastAccessed"]),
        without(&theirs[0], &["accessCount", "lastAccessed"])
    );
}

#[tokio::test]
async fn updates_and_deletes_by_either_are_seen_by_the_other() {
    // memgate's caches are filled from Qdrant and expire; a write by cldmemory itself shows
    // once they do (invalidating them on forwarded MCP writes is the MCP front's part).
    let env = Env::start(|c| {
        c.cache.memory_ttl = Duration::from_millis(300);
        c.cache.l1.ttl = Duration::from_millis(100);
        c.cache.search_ttl = Duration::from_millis(300);
    })
    .await;
    let id = env
        .memgate_store(
            json!({"content": "The garden needs water", "type": "procedural"}),
            None,
        )
        .await;
    let response = env
        .http
        .patch(env.url(&format!("/memories/{id}")))
        .json(&json!({"importance": 0.95, "metadata": {"owner": "ann"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 202);
    let vector_before = env.vector(&id).await;
    let seen = eventually(Duration::from_secs(5), || async {
        let got = env.reference("get_memory", json!({"id": id})).await;
        got["importance"] == 0.95 && got["metadata"] == json!({"owner": "ann"})
    })
    .await;
    assert!(seen, "cldmemory sees memgate's update");
    assert_ne!(
        env.vector(&id).await,
        vector_before,
        "metadata is in the embedded text: re-embedded"
    );
    assert_eq!(
        env.vector(&id).await,
        embedding(&reference_text(&env.payload(&id).await))
    );

    let updated = env
        .reference(
            "update_memory",
            json!({"id": id, "content": "The garden needs water every day", "context": {"tags": ["garden"]}}),
        )
        .await;
    assert_eq!(updated["content"], "The garden needs water every day");
    let seen = eventually(Duration::from_secs(5), || async {
        let (_, got) = env.memgate_get(&id).await;
        got["content"] == "The garden needs water every day"
    })
    .await;
    assert!(
        seen,
        "memgate sees cldmemory's update once its caches expire"
    );

    let response = env
        .http
        .delete(env.url(&format!("/memories/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 202);
    let gone = eventually(Duration::from_secs(5), || async {
        env.reference("get_memory", json!({"id": id})).await == "Memory not found"
    })
    .await;
    assert!(gone, "cldmemory no longer finds what memgate deleted");

    let other = env
        .reference(
            "store_memory",
            json!({"content": "Delete me from cldmemory", "type": "working"}),
        )
        .await;
    let other = other["id"].as_str().expect("id").to_string();
    assert_eq!(env.memgate_get(&other).await.0, 200);
    let deleted = env.reference("delete_memory", json!({"id": other})).await;
    assert_eq!(deleted, format!("Memory {other} deleted successfully"));
    let gone = eventually(Duration::from_secs(5), || async {
        env.memgate_get(&other).await.0 == 404
    })
    .await;
    assert!(gone, "memgate no longer serves what cldmemory deleted");
}

#[tokio::test]
async fn reads_through_memgate_add_to_cldmemorys_access_counts() {
    let env = Env::start(|_| {}).await;
    let stored = env
        .reference(
            "store_memory",
            json!({"content": "Counting the reads of a lighthouse keeper", "type": "semantic"}),
        )
        .await;
    let id = stored["id"].as_str().expect("id").to_string();
    for _ in 0..2 {
        env.reference("get_memory", json!({"id": id})).await;
    }
    assert_eq!(env.payload(&id).await["accessCount"], 2);
    let mut reads = 0;
    for _ in 0..3 {
        assert_eq!(env.memgate_get(&id).await.0, 200);
        reads += 1;
    }
    for limit in [5, 6] {
        let (_, found) = env
            .memgate_search(json!({"query": "lighthouse keeper", "limit": limit}))
            .await;
        assert_eq!(ids(&found["memories"]), vec![id.clone()]);
        reads += 1;
    }
    let expected = 2 + reads;
    let synced = eventually(Duration::from_secs(5), || async {
        env.payload(&id).await["accessCount"] == expected
    })
    .await;
    assert!(
        synced,
        "2 reads by cldmemory plus {reads} through memgate: {}",
        env.payload(&id).await["accessCount"]
    );
    // And cldmemory goes on counting from there.
    env.reference("get_memory", json!({"id": id})).await;
    assert_eq!(env.payload(&id).await["accessCount"], expected + 1);
    let last = env.payload(&id).await["lastAccessed"].clone();
    assert!(
        last.as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
        "{last}"
    );
}

#[tokio::test]
async fn search_arguments_cldmemory_refuses_memgate_refuses_too() {
    let env = Env::start(|_| {}).await;
    let refused = [
        json!({"query": "x", "limit": 0}),
        json!({"query": "x", "limit": 51}),
        json!({"query": "x", "limit": 2.5}),
        json!({"query": "x", "similarityThreshold": 1.5}),
        json!({"query": "x", "similarityThreshold": -0.1}),
        json!({"query": "x", "minImportance": 2}),
        json!({"query": "x", "emotionalRange": {"min": -2, "max": 0}}),
        json!({"query": "x", "emotionalRange": {"min": 0}}),
        json!({"query": "x", "dateRange": {"start": "not a date", "end": "2025-01-01"}}),
        json!({"query": "x", "dateRange": {"start": "2025-01-01"}}),
        json!({"query": "x", "type": "dreamy"}),
        json!({"query": "x", "detailLevel": "verbose"}),
        json!({"query": 7}),
        json!({}),
    ];
    for arguments in refused {
        let text = env
            .0
            .reference()
            .call("search_memories", arguments.clone())
            .await;
        assert!(
            text.starts_with("Error: "),
            "cldmemory accepted {arguments}: {text}"
        );
        let (status, error) = env.memgate_search(arguments.clone()).await;
        assert_eq!(status, 400, "memgate accepted {arguments}: {error}");
        assert!(error["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(
        env.0
            .reference()
            .call(
                "search_memories",
                json!({"query": "x", "dateRange": {"start": "soon", "end": "2025-01-01"}})
            )
            .await,
        "Error: Invalid time value"
    );
    let (_, error) = env
        .memgate_search(json!({"query": "x", "dateRange": {"start": "soon", "end": "2025-01-01"}}))
        .await;
    assert!(error["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("Invalid time value")));
    assert_eq!(
        env.openai.embedding_calls(),
        0,
        "nothing refused was embedded"
    );
}

#[tokio::test]
async fn the_reference_speaks_mcp_over_http_and_sse() {
    let env = Env::start(|_| {}).await;
    let client = McpSseClient::connect(&env.0.reference().url(), Some("carol,team:mcp"))
        .await
        .expect("connect");
    assert!(client.session_id.is_some(), "Mcp-Session-Id");
    let info = client.initialize().await.expect("initialize");
    assert_eq!(info["protocolVersion"], "2024-11-05");
    assert_eq!(info["serverInfo"]["version"], "1.0.0");
    let tools = client
        .request("tools/list", json!({}))
        .await
        .expect("tools/list");
    assert!(tools["result"]["tools"]
        .as_array()
        .is_some_and(|t| t.iter().any(|tool| tool["name"] == "search_memories")));
    let text = client
        .call_tool(
            "store_memory",
            json!({"content": "Sent over SSE", "type": "working"}),
        )
        .await
        .expect("store");
    assert!(
        text.starts_with("{\n  \"id\": \""),
        "JSON.stringify(memory, null, 2): {text}"
    );
    let memory: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        memory["metadata"],
        json!({"team": "mcp", "env": "test", "user": "carol"})
    );
    let missing = client
        .call_tool("get_memory", json!({"id": Uuid::new_v4().to_string()}))
        .await
        .expect("get");
    assert_eq!(missing, "Memory not found");
    let unknown = client
        .request("resources/list", json!({}))
        .await
        .expect("answer");
    assert_eq!(unknown["error"]["code"], -32601);

    let http = reqwest::Client::new();
    let no_session = http
        .post(format!("{}/messages", env.0.reference().url()))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .expect("post");
    assert_eq!(no_session.status(), 400);
    let body: Value = no_session.json().await.expect("json");
    assert_eq!(
        body["error"]["message"],
        "Missing sessionId parameter or Mcp-Session-Id header"
    );
    let unknown_session = http
        .post(format!(
            "{}/messages?sessionId=nope",
            env.0.reference().url()
        ))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .expect("post");
    assert_eq!(unknown_session.status(), 400);
    let health: Value = http
        .get(format!("{}/health", env.0.reference().url()))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["activeSessions"], 1);
}
