//! memgate as an MCP gateway in front of the reference cldmemory: a client configured for
//! cldmemory talks to memgate (URL aside), gets the memory tools from the fast path with
//! cldmemory's texts byte for byte, and every other tool from cldmemory, with memgate's caches
//! kept coherent. memgate (proxy and worker on a real `redis-server`) and the reference share
//! one Qdrant Edge shard and one OpenAI-compatible stand-in.

use std::time::{Duration, Instant};

use memgate::config::Config;
use memgate_testkit::{
    eventually, metric_value, scrape_metrics, Legacy, McpSseClient, SseRouting, TestStack,
};
use serde_json::{json, Value};

memgate_testkit::stack_env!(Env);

/// `text` with the value of every `accessCount` and `lastAccessed` line replaced (the tool
/// texts are `JSON.stringify(…, null, 2)`: one field a line).
fn without_read_counts(text: &str) -> String {
    text.lines()
        .map(|line| {
            let field = line.trim_start();
            let indent = &line[..line.len() - field.len()];
            let comma = if line.ends_with(',') { "," } else { "" };
            if field.starts_with("\"accessCount\": ") {
                format!("{indent}\"accessCount\": N{comma}")
            } else if field.starts_with("\"lastAccessed\": ") {
                format!("{indent}\"lastAccessed\": T{comma}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `accessCount` of a text, in order.
fn read_counts(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix("\"accessCount\": "))
        .filter_map(|value| value.trim_end_matches(',').parse().ok())
        .collect()
}

/// memgate's answer is cldmemory's, byte for byte, but for the read counts: memgate's count
/// every read so far, the ones made through memgate and not yet added to the shared payload
/// too (they are added every `worker.accessSyncInterval`; none are during this test), so they
/// are never below cldmemory's, which reads the payload.
fn assert_read_counts_aside(via_memgate: &str, direct: &str, what: &str) {
    assert_eq!(
        without_read_counts(via_memgate),
        without_read_counts(direct),
        "{what}"
    );
    let (ours, theirs) = (read_counts(via_memgate), read_counts(direct));
    assert!(
        ours.iter()
            .zip(&theirs)
            .all(|(ours, theirs)| ours >= theirs),
        "{what}: memgate counts {ours:?}, cldmemory {theirs:?}"
    );
}

impl Env {
    /// memgate in front of a reference that routes answers as cldmemory does (to the newest
    /// stream).
    async fn start(adjust: impl FnOnce(&mut Config) + 'static) -> Env {
        Self::start_routed(SseRouting::NewestStream, adjust).await
    }

    /// memgate in front of a reference that answers each stream on its own, for tests whose
    /// own clients talk to the reference beside memgate.
    async fn start_shared(adjust: impl FnOnce(&mut Config) + 'static) -> Env {
        Self::start_routed(SseRouting::PerSession, adjust).await
    }

    async fn start_routed(routing: SseRouting, adjust: impl FnOnce(&mut Config) + 'static) -> Env {
        let stack = TestStack::builder()
            .legacy(Legacy::InFront(routing))
            .configure(|config| {
                config.rollout.percent = 100;
                config.layout.similarity_threshold = 0.3;
                config.layout.memory_metadata = Some("team:core".into());
                // memgate's reads reach the vector store only when flushed: none during a
                // test, so both services read the same stored state (memgate's answers count
                // its own reads on top: `assert_read_counts_aside`).
                config.access.flush_interval = Duration::from_secs(3600);
                config.upstream.timeout = Duration::from_secs(3);
            })
            .configure(adjust)
            .start()
            .await;
        Env(stack)
    }

    fn url(&self) -> String {
        format!("http://{}", self.proxy.api_addr)
    }

    /// A client of memgate, as cldmemory's clients connect (HTTP+SSE).
    async fn client(&self, metadata: Option<&str>) -> McpSseClient {
        let client = McpSseClient::connect(&self.url(), metadata)
            .await
            .expect("connects to memgate");
        client.initialize().await.expect("initialize");
        client
    }

    /// A client of memgate whose session is forced to the legacy route: every call is
    /// forwarded to the reference.
    async fn legacy_client(&self) -> McpSseClient {
        let client = McpSseClient::connect_with(&self.url(), &[("x-memgate-route", "legacy")])
            .await
            .expect("connects to memgate");
        client.initialize().await.expect("initialize");
        client
    }

    /// The names of the reference's tools, asked directly.
    async fn reference_tool_names(&self) -> Vec<String> {
        let direct = McpSseClient::connect(&self.reference().url(), None)
            .await
            .expect("connects to the reference");
        direct.initialize().await.expect("initialize");
        let tools = direct
            .request("tools/list", json!({}))
            .await
            .expect("tools");
        tools["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|tool| tool["name"].as_str().expect("name").to_string())
            .collect()
    }

    /// A memory stored by cldmemory itself; its id.
    async fn cldmemory_store(&self, arguments: Value) -> String {
        let text = self.reference().call("store_memory", arguments).await;
        let memory: Value = serde_json::from_str(&text).expect("a memory");
        memory["id"].as_str().expect("id").to_string()
    }
}

fn id_of(text: &str) -> String {
    let memory: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("JSON: {text}"));
    memory["id"].as_str().expect("id").to_string()
}

/// `search_memories` arguments as LLM clients send them (the schema lists the fields with
/// defaults as required), with `extra` on top.
fn search_args(query: &str, extra: Value) -> Value {
    let mut args = json!({"query": query, "limit": 10, "detailLevel": "compact",
        "includeAssociations": false, "reconstructChunks": false});
    if let Value::Object(extra) = extra {
        for (key, value) in extra {
            args[key] = value;
        }
    }
    args
}

#[tokio::test]
async fn memory_tools_answer_with_cldmemorys_texts_byte_for_byte() {
    let env = Env::start(|_| {}).await;
    let client = env.client(Some("user:ann")).await;

    let theirs = env
        .cldmemory_store(
            json!({"content": "A sad goodbye at the train station in Paris",
            "type": "emotional", "context": {"tags": ["farewell"], "location": "Paris"},
            "importance": 0.25}),
        )
        .await;
    let stored = client
        .call_tool(
            "store_memory",
            json!({"content": "We drank strong coffee in Paris with Marie", "type": "episodic",
                   "context": {"location": "Paris", "people": ["Marie"]}, "extra": true}),
        )
        .await
        .expect("store");
    // Acknowledged at once, as cldmemory stores a memory when its LLM is unavailable, in
    // `JSON.stringify(memory, null, 2)`.
    let acknowledged: Value = serde_json::from_str(&stored).expect("JSON");
    assert_eq!(
        stored,
        serde_json::to_string_pretty(&acknowledged).expect("pretty")
    );
    assert_eq!(
        acknowledged["summary"],
        "We drank strong coffee in Paris with Marie"
    );
    assert_eq!(acknowledged["emotionalValence"], 0);
    assert_eq!(
        acknowledged["metadata"],
        json!({"team": "core", "user": "ann"})
    );
    assert!(
        acknowledged.get("status").is_none(),
        "no memgate bookkeeping"
    );
    let ours = id_of(&stored);
    env.wait_for_worker(&ours).await;

    for id in [&theirs, &ours] {
        let via_memgate = client
            .call_tool("get_memory", json!({"id": id}))
            .await
            .expect("get");
        let direct = env.reference().call("get_memory", json!({"id": id})).await;
        assert_read_counts_aside(&via_memgate, &direct, &format!("get_memory {id}"));
    }

    let searches = [
        search_args("coffee in Paris", json!({})),
        search_args("goodbye at the station", json!({"type": "emotional"})),
        search_args("", json!({"type": "episodic"})),
        search_args("", json!({})),
        search_args(
            "Paris",
            json!({"detailLevel": "full", "similarityThreshold": 0.1}),
        ),
        search_args("Paris", json!({"includeAssociations": true, "limit": 1})),
        search_args(
            "Paris",
            json!({"minImportance": 0.5, "emotionalRange": {"min": -1, "max": 1},
                   "dateRange": {"start": "2000-01-01", "end": "2100-01-01"}}),
        ),
    ];
    let found = client
        .call_tool("search_memories", search_args("coffee in Paris", json!({})))
        .await
        .expect("search");
    assert!(found.contains(&ours) && found.contains(&theirs), "{found}");
    for arguments in searches {
        let via_memgate = client
            .call_tool("search_memories", arguments.clone())
            .await
            .expect("search");
        let direct = env
            .reference()
            .call("search_memories", arguments.clone())
            .await;
        assert_read_counts_aside(
            &via_memgate,
            &direct,
            &format!("search_memories {arguments}"),
        );
    }

    // Answers the fast path does not give are cldmemory's own.
    let missing = uuid::Uuid::new_v4().to_string();
    for (tool, arguments) in [
        ("get_memory", json!({"id": missing})),
        ("get_memory", json!({"id": "not-a-uuid"})),
        ("search_memories", json!({"query": "x", "limit": 0})),
        ("search_memories", json!({"limit": 5})),
        (
            "search_memories",
            search_args(
                "x",
                json!({"dateRange": {"start": "yesterday", "end": "today"}}),
            ),
        ),
        ("store_memory", json!({"content": "no type"})),
        ("no_such_tool", json!({})),
    ] {
        let via_memgate = client
            .call_tool(tool, arguments.clone())
            .await
            .expect("call");
        let direct = env.reference().call(tool, arguments.clone()).await;
        assert_read_counts_aside(&via_memgate, &direct, &format!("{tool} {arguments}"));
    }

    let deleted = client
        .call_tool("delete_memory", json!({"id": ours}))
        .await
        .expect("delete");
    assert_eq!(deleted, format!("Memory {ours} deleted successfully"));
    let gone = client
        .call_tool("get_memory", json!({"id": ours}))
        .await
        .expect("get");
    assert_eq!(gone, "Memory not found", "hidden at once");
    let deleted_in_store = eventually(Duration::from_secs(10), || async {
        env.reference()
            .call("get_memory", json!({"id": ours}))
            .await
            == "Memory not found"
    })
    .await;
    assert!(deleted_in_store, "the workers delete it from the store");

    let metrics = scrape_metrics(env.proxy.admin_addr).await;
    assert!(
        metrics.contains(
            "memgate_mcp_tool_calls_total{outcome=\"ok\",path=\"fast\",tool=\"get_memory\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("path=\"legacy\",tool=\"get_memory\""));
}

#[tokio::test]
async fn memgate_introduces_itself_as_cldmemory_and_forwards_the_other_tools() {
    let env = Env::start_shared(|_| {}).await;
    let client = McpSseClient::connect(&env.url(), None)
        .await
        .expect("connects");
    let direct = McpSseClient::connect(&env.reference().url(), None)
        .await
        .expect("connects to the reference");
    assert_eq!(
        client.initialize().await.expect("initialize"),
        direct.initialize().await.expect("initialize"),
        "cldmemory's serverInfo and capabilities"
    );
    let tools = client
        .request("tools/list", json!({}))
        .await
        .expect("tools");
    let direct_tools = direct
        .request("tools/list", json!({}))
        .await
        .expect("tools");
    assert_eq!(tools["result"], direct_tools["result"]);

    let a = env
        .cldmemory_store(json!({"content": "The bees swarmed in May", "type": "episodic"}))
        .await;
    let b = env
        .cldmemory_store(json!({"content": "Quantum tunnelling explained", "type": "semantic"}))
        .await;
    // memgate caches both.
    for id in [&a, &b] {
        client
            .call_tool("get_memory", json!({"id": id}))
            .await
            .expect("get");
    }

    let connected = client
        .call_tool(
            "connect_memories",
            json!({"sourceId": a, "targetId": b, "bidirectional": true}),
        )
        .await
        .expect("connect");
    assert_eq!(connected, format!("Connected memories {a} and {b}"));
    let via_memgate = client
        .call_tool("get_memory", json!({"id": a}))
        .await
        .expect("get");
    assert!(
        via_memgate.contains(&b),
        "no stale read after a forwarded connect"
    );
    assert_read_counts_aside(
        &via_memgate,
        &env.reference().call("get_memory", json!({"id": a})).await,
        "get_memory after a forwarded connect",
    );

    let updated = client
        .call_tool(
            "update_memory",
            json!({"id": a, "content": "The bees swarmed in June", "context": {}}),
        )
        .await
        .expect("update");
    assert!(updated.contains("The bees swarmed in June"), "{updated}");
    let via_memgate = client
        .call_tool("get_memory", json!({"id": a}))
        .await
        .expect("get");
    assert!(
        via_memgate.contains("The bees swarmed in June"),
        "no stale read after a forwarded update: {via_memgate}"
    );

    let bulk = client
        .call_tool("delete_memories_bulk", json!({"ids": [b]}))
        .await
        .expect("bulk delete");
    assert!(bulk.contains("\"deleted\": 1"), "{bulk}");
    let gone = client
        .call_tool("get_memory", json!({"id": b}))
        .await
        .expect("get");
    assert_eq!(
        gone, "Memory not found",
        "no stale read after a forwarded delete"
    );

    let cleared = client
        .call_tool("delete_all_memories", json!({"confirm": true}))
        .await
        .expect("delete all");
    assert!(
        cleared.contains("All memories have been deleted"),
        "{cleared}"
    );
    let searched = client
        .call_tool("search_memories", search_args("bees", json!({})))
        .await
        .expect("search");
    assert_eq!(searched, "[]", "no stale search after deleting everything");
}

#[tokio::test]
async fn a_memory_stored_through_memgate_can_be_named_in_a_forwarded_call_at_once() {
    let env = Env::start(|_| {}).await;
    let client = env.client(None).await;
    let old = env
        .cldmemory_store(json!({"content": "Old note about the harbour", "type": "semantic"}))
        .await;
    env.openai.set_delay(Duration::from_millis(1000));
    let started = Instant::now();
    let stored = client
        .call_tool(
            "store_memory",
            json!({"content": "New note about the lighthouse", "type": "semantic"}),
        )
        .await
        .expect("store");
    let acknowledged_in = started.elapsed();
    let new = id_of(&stored);
    // The next call names it before any worker stored it: memgate waits for the store.
    let connected = client
        .call_tool(
            "connect_memories",
            json!({"sourceId": new, "targetId": old, "bidirectional": true}),
        )
        .await
        .expect("connect");
    assert_eq!(connected, format!("Connected memories {new} and {old}"));
    assert!(
        acknowledged_in < Duration::from_millis(1000),
        "acknowledged before one OpenAI call could answer ({acknowledged_in:?})"
    );
    let got = client
        .call_tool("get_memory", json!({"id": new}))
        .await
        .expect("get");
    assert!(got.contains(&old), "{got}");
}

#[tokio::test]
async fn twenty_sessions_at_once_each_get_their_own_answers() {
    let env = Env::start(|_| {}).await;
    let sessions = futures::future::join_all((0..20).map(|n| {
        let env = &env;
        async move {
            let metadata = format!("user:u{n}");
            let client = env.client(Some(&metadata)).await;
            let stored = client
                .call_tool(
                    "store_memory",
                    json!({"content": format!("Session {n} remembers the number {n}"), "type": "semantic"}),
                )
                .await
                .expect("store");
            let id = id_of(&stored);
            let got = client
                .call_tool("get_memory", json!({"id": id}))
                .await
                .expect("get");
            let forwarded = client
                .call_tool("get_memory", json!({"id": format!("bad-{n}")}))
                .await
                .expect("forwarded");
            (n, id, got, forwarded)
        }
    }))
    .await;
    for (n, id, got, forwarded) in sessions {
        let memory: Value = serde_json::from_str(&got).expect("JSON");
        assert_eq!(memory["id"], id.as_str());
        assert_eq!(memory["metadata"]["user"], format!("u{n}"));
        let direct = env
            .reference()
            .call("get_memory", json!({"id": format!("bad-{n}")}))
            .await;
        assert_eq!(forwarded, direct, "session {n}'s forwarded answer");
    }
}

#[tokio::test]
async fn the_legacy_down_degrades_forwarded_calls_and_the_fast_path_answers_on() {
    let mut env = Env::start(|_| {}).await;
    let client = env.client(None).await;
    let stored = client
        .call_tool(
            "store_memory",
            json!({"content": "Bread rises in a warm kitchen", "type": "procedural"}),
        )
        .await
        .expect("store");
    let id = id_of(&stored);
    env.wait_for_worker(&id).await;

    let addr = env.reference_mut().stop().await;
    let started = Instant::now();
    let answer = client
        .request(
            "tools/call",
            json!({"name": "analyze_memories", "arguments": {}}),
        )
        .await
        .expect("an answer, not a hang");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("legacy MCP")),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "bounded");
    let got = client
        .call_tool("get_memory", json!({"id": id}))
        .await
        .expect("get");
    assert_eq!(
        id_of(&got),
        id,
        "the fast path answers while the legacy is down"
    );
    let searched = client
        .call_tool("search_memories", search_args("bread kitchen", json!({})))
        .await
        .expect("search");
    assert!(searched.contains(&id), "{searched}");
    let listed = client
        .request("tools/list", json!({}))
        .await
        .expect("tools");
    assert!(listed["result"]["tools"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));

    env.reference_mut().restart(addr).await.expect("restart");
    let back = eventually(Duration::from_secs(10), || async {
        client
            .call_tool("get_memory", json!({"id": "not-a-uuid"}))
            .await
            .is_ok_and(|text| text.starts_with("Error: "))
    })
    .await;
    assert!(back, "forwarded calls work again once the legacy is back");
}

#[tokio::test]
async fn bad_mcp_input_gets_cldmemorys_answers_and_writes_nothing() {
    let env = Env::start(|_| {}).await;
    let client = env.client(None).await;
    let http = reqwest::Client::new();
    for (url, expected) in [
        (
            format!("{}/messages", env.url()),
            "Missing sessionId parameter or Mcp-Session-Id header",
        ),
        (
            format!("{}/messages?sessionId=nope", env.url()),
            "Invalid or expired session ID",
        ),
    ] {
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], -32600);
        assert_eq!(body["error"]["message"], expected);
    }
    for body in [
        "{not json",
        "[]",
        "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]",
        "{\"id\":1}",
    ] {
        let (status, _) = client.post_raw(body).await.expect("post");
        assert_eq!(status, 400, "{body}");
    }
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"store_memory","arguments":{{"content":"{}","type":"semantic"}}}}}}"#,
        "x".repeat(11 * 1024 * 1024)
    );
    let (status, _) = client.post_raw(huge).await.expect("post");
    assert_eq!(status, 413, "past cldmemory's 10 MB");
    let listed = env
        .reference()
        .call(
            "search_memories",
            json!({"query": "", "type": "semantic", "limit": 50}),
        )
        .await;
    assert_eq!(listed, "[]", "nothing was written");
    // The session still works.
    let pong = client.request("ping", json!({})).await.expect("ping");
    assert_eq!(pong["result"], json!({}));
}

#[tokio::test]
async fn a_cancelled_call_is_cancelled_upstream_and_answers_nothing() {
    let env = Env::start(|_| {}).await;
    let client = env.client(None).await;
    let a = env
        .cldmemory_store(json!({"content": "Slow update target", "type": "semantic"}))
        .await;
    env.openai.set_delay(Duration::from_millis(1500));
    let (id, answer) = client
        .send_request(
            "tools/call",
            json!({"name": "update_memory", "arguments": {"id": a, "content": "changed", "context": {}}}),
        )
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = client
        .post_raw(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": id, "reason": "user"}})
            .to_string(),
        )
        .await
        .expect("cancel");
    assert_eq!(status, 202);
    let answered = tokio::time::timeout(Duration::from_secs(3), answer).await;
    assert!(
        !matches!(answered, Ok(Ok(_))),
        "a cancelled request gets no answer: {answered:?}"
    );
    env.openai.set_delay(Duration::ZERO);
    let pong = client.request("ping", json!({})).await.expect("ping");
    assert_eq!(pong["result"], json!({}));
}

#[tokio::test]
async fn the_python_sdk_works_through_memgate_as_it_works_with_cldmemory() {
    use memgate_testkit::python::{check_sessions, sdk_check, step};
    // The test asks the reference itself for its tools, beside memgate's session.
    let env = Env::start_shared(|_| {}).await;
    let direct_tools = env.reference_tool_names().await;
    for transport in ["sse", "streamable"] {
        let observations = sdk_check(&["session", &env.url(), transport]).await;
        assert_eq!(step(&observations, "initialize")["server"], "memory-server");
        assert_eq!(step(&observations, "tools")["names"], json!(direct_tools));
        let stored = step(&observations, "store");
        let id = stored["id"].as_str().expect("id");
        let memory: Value =
            serde_json::from_str(stored["text"].as_str().expect("text")).expect("JSON");
        assert_eq!(memory["metadata"], json!({"team": "core", "user": "ann"}));
        let found = step(&observations, "search")["text"]
            .as_str()
            .expect("text");
        assert!(found.contains(id), "{transport}: {found}");
        assert_eq!(
            step(&observations, "get_deleted")["text"],
            "Memory not found"
        );

        check_sessions(
            &sdk_check(&["sessions", &env.url(), transport, "20"]).await,
            20,
        );
    }
}

#[tokio::test]
async fn a_search_neither_path_can_answer_goes_down_the_ladder() {
    let env = Env::start(|_| {}).await;
    let client = env.client(None).await;
    let id = env
        .cldmemory_store(
            json!({"content": "The lighthouse keeper paints the spiral stairs",
            "type": "semantic", "context": {"tags": ["lighthouse"]}}),
        )
        .await;
    // OpenAI is down: memgate cannot embed a new query, nor can cldmemory.
    env.openai.set_failing(true);
    let answer = client
        .call_tool(
            "search_memories",
            search_args("lighthouse stairs", json!({})),
        )
        .await
        .expect("an answer");
    let rows: Value = serde_json::from_str(&answer).expect("compact rows, not an error");
    assert_eq!(rows[0]["id"], id.as_str(), "{answer}");
    assert!(rows[0].get("content").is_none(), "compact rows: {answer}");
    let metrics = scrape_metrics(env.proxy.admin_addr).await;
    assert!(
        metrics.contains("memgate_degraded_responses_total{level=\"keyword\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"degraded\",path=\"fast\",tool=\"search_memories\""));
}

/// The reference's open streams, as its `/health` counts them.
async fn reference_streams(env: &Env) -> u64 {
    let health: Value = reqwest::get(format!("{}/health", env.reference().url()))
        .await
        .expect("health")
        .json()
        .await
        .expect("JSON");
    health["activeSessions"].as_u64().expect("activeSessions")
}

/// A forwarded read (an id memgate does not take is cldmemory's to answer), timed: its text
/// and how long it took.
async fn timed_analyze(client: &McpSseClient) -> (String, Duration) {
    let started = Instant::now();
    let text = client
        .call_tool("get_memory", json!({"id": "not-a-uuid"}))
        .await
        .expect("an answer");
    (text, started.elapsed())
}

#[tokio::test]
async fn a_foreign_client_on_cldmemorys_stream_costs_memgate_at_most_one_slow_call() {
    // The periodic ping is far off: the call itself must notice the lost session.
    let env = Env::start(|config| {
        config.upstream.mcp.ping_interval = Duration::from_secs(3600);
        config.upstream.mcp.ping_timeout = Duration::from_millis(500);
        config.upstream.timeout = Duration::from_secs(20);
    })
    .await;
    let client = env.client(None).await;
    let (before, _) = timed_analyze(&client).await;
    let direct = env
        .reference()
        .call("get_memory", json!({"id": "not-a-uuid"}))
        .await;
    assert_eq!(before, direct, "cldmemory's own answer");

    // Another client opens a stream on the same cldmemory and leaves: cldmemory answers
    // nobody until the next stream opens.
    let foreign = McpSseClient::connect(&env.reference().url(), None)
        .await
        .expect("a foreign client connects");
    drop(foreign);
    let left = eventually(Duration::from_secs(5), || async {
        reference_streams(&env).await == 1
    })
    .await;
    assert!(left, "the foreign stream closed");

    let (healed, took) = timed_analyze(&client).await;
    assert_eq!(healed, before, "the read was sent again on a new session");
    assert!(
        took < Duration::from_secs(5),
        "answered within seconds: {took:?}"
    );
    for _ in 0..5 {
        let (again, took) = timed_analyze(&client).await;
        assert_eq!(again, before);
        assert!(
            took < Duration::from_secs(1),
            "none after it waits: {took:?}"
        );
    }

    // A foreign client that stays: memgate takes the stream back, a change in flight is not
    // sent twice but fails with a clear error, and it was carried out.
    let a = env
        .cldmemory_store(json!({"content": "Owls hunt at night", "type": "semantic"}))
        .await;
    let b = env
        .cldmemory_store(json!({"content": "Mice hide in the hedge", "type": "semantic"}))
        .await;
    let squatter = McpSseClient::connect(&env.reference().url(), None)
        .await
        .expect("a foreign client connects");
    let connect = client
        .request(
            "tools/call",
            json!({"name": "connect_memories",
                   "arguments": {"sourceId": a, "targetId": b, "bidirectional": true}}),
        )
        .await
        .expect("an answer");
    let message = connect["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("may have been carried out"),
        "a change in flight is not sent twice: {connect}"
    );
    let linked = eventually(Duration::from_secs(5), || async {
        let source: Value =
            serde_json::from_str(&env.reference().call("get_memory", json!({"id": a})).await)
                .expect("a memory");
        source["associations"]
            .as_array()
            .is_some_and(|links| links.contains(&json!(b)))
    })
    .await;
    assert!(linked, "cldmemory carried the change out");
    let (after, took) = timed_analyze(&client).await;
    assert_eq!(after, before);
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(squatter);

    let metrics = scrape_metrics(env.proxy.admin_addr).await;
    let lost = metric_value(
        &metrics,
        "memgate_upstream_mcp_sessions_total{event=\"unanswered\"}",
    )
    .unwrap_or_default();
    assert!(lost >= 2.0, "both losses counted: {metrics}");
    let resent = metric_value(&metrics, "memgate_upstream_mcp_resent_total").unwrap_or_default();
    assert!(resent >= 1.0, "{metrics}");
}

#[tokio::test]
async fn a_lost_session_is_replaced_without_a_call_and_readyz_says_so_while_it_is_down() {
    let mut env = Env::start(|config| {
        config.upstream.mcp.ping_interval = Duration::from_millis(300);
        config.upstream.mcp.ping_timeout = Duration::from_millis(300);
    })
    .await;
    let client = env.client(None).await;
    let (before, _) = timed_analyze(&client).await;
    let admin = env.proxy.admin_addr;
    let ready = || async move {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .expect("readyz")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    assert_eq!(ready().await["checks"]["upstream"], "ok");

    drop(
        McpSseClient::connect(&env.reference().url(), None)
            .await
            .expect("a foreign client connects"),
    );
    // The monitor's ping finds the session lost and opens another before the next call.
    let replaced = eventually(Duration::from_secs(10), || async {
        let metrics = scrape_metrics(env.proxy.admin_addr).await;
        metric_value(
            &metrics,
            "memgate_upstream_mcp_sessions_total{event=\"opened\"}",
        )
        .unwrap_or_default()
            >= 2.0
            && metric_value(&metrics, "memgate_upstream_mcp_up") == Some(1.0)
    })
    .await;
    assert!(replaced, "a new session opened without a call");
    let (after, took) = timed_analyze(&client).await;
    assert_eq!(after, before);
    assert!(took < Duration::from_secs(1), "{took:?}");

    // The legacy service down: /readyz says so, and forwarded calls fail at once.
    let addr = env.reference_mut().stop().await;
    let unready = eventually(Duration::from_secs(10), || async {
        ready().await["checks"]["upstream"] != "ok"
    })
    .await;
    assert!(unready, "readyz shows the legacy service down");
    let started = Instant::now();
    let answer = client
        .request(
            "tools/call",
            json!({"name": "get_memory", "arguments": {"id": "not-a-uuid"}}),
        )
        .await
        .expect("an answer");
    assert!(answer["error"]["message"].is_string(), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "fails fast: {:?}",
        started.elapsed()
    );
    env.reference_mut().restart(addr).await.expect("restart");
    let back = eventually(Duration::from_secs(15), || async {
        ready().await["checks"]["upstream"] == "ok"
    })
    .await;
    assert!(back, "readyz recovers once the legacy service is back");
    let (again, _) = timed_analyze(&client).await;
    assert_eq!(again, before);
}

#[tokio::test]
async fn what_cldmemory_changes_for_legacy_routed_calls_shows_through_memgate_at_once() {
    let env = Env::start(|_| {}).await;
    let fast = env.client(None).await;
    let legacy = env.legacy_client().await;
    let older = env
        .cldmemory_store(json!({"content": "Barn owls hunt mice at night", "type": "semantic"}))
        .await;
    let cached = fast
        .call_tool("get_memory", json!({"id": older}))
        .await
        .expect("get");
    assert!(cached.contains("\"associations\": []"), "{cached}");

    // A store cldmemory answers links the new memory into its neighbours' associations.
    let stored = legacy
        .call_tool(
            "store_memory",
            json!({"content": "Barn owls hunt mice at night in the hay", "type": "semantic"}),
        )
        .await
        .expect("store");
    let new = id_of(&stored);
    let theirs: Value = serde_json::from_str(
        &env.reference()
            .call("get_memory", json!({"id": older}))
            .await,
    )
    .expect("a memory");
    assert!(
        theirs["associations"]
            .as_array()
            .is_some_and(|links| links.contains(&json!(new))),
        "cldmemory linked them: {theirs}"
    );
    let seen = fast
        .call_tool("get_memory", json!({"id": older}))
        .await
        .expect("get");
    assert!(
        seen.contains(&new),
        "the neighbour's new link shows at once: {seen}"
    );

    // Reads cldmemory answers count in its payload: memgate's next answer has them.
    for _ in 0..3 {
        legacy
            .call_tool("get_memory", json!({"id": older}))
            .await
            .expect("get");
    }
    let ours = fast
        .call_tool("get_memory", json!({"id": older}))
        .await
        .expect("get");
    let direct = env
        .reference()
        .call("get_memory", json!({"id": older}))
        .await;
    assert_read_counts_aside(&ours, &direct, "after reads cldmemory counted");
}

#[tokio::test]
async fn a_slow_change_in_flight_when_another_client_takes_the_stream_still_gets_its_answer() {
    let env = Env::start(|config| {
        config.upstream.mcp.ping_interval = Duration::from_secs(3600);
        config.upstream.mcp.ping_timeout = Duration::from_millis(300);
        config.upstream.timeout = Duration::from_secs(30);
    })
    .await;
    let legacy = env.legacy_client().await;
    // cldmemory takes its time over a store (its model answers slowly). Its answer goes to
    // the stream that was newest when the call arrived, memgate's, even after another client
    // opened one: memgate, having heard a pong from its session during the call, waits on.
    env.openai.set_delay(Duration::from_millis(1500));
    let store = legacy.request(
        "tools/call",
        json!({"name": "store_memory",
               "arguments": {"content": "The tide turns at noon", "type": "semantic"}}),
    );
    let squat = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        McpSseClient::connect(&env.reference().url(), None)
            .await
            .expect("a foreign client connects")
    };
    let (answer, squatter) = tokio::join!(store, squat);
    let answer = answer.expect("an answer");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let stored: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(stored["content"], "The tide turns at noon");
    env.openai.set_delay(Duration::ZERO);

    // New calls are answered on the foreign stream: the next one finds the session lost,
    // and is answered on a new one.
    let started = Instant::now();
    let (after, _) = timed_analyze(&legacy).await;
    let direct = env
        .reference()
        .call("get_memory", json!({"id": "not-a-uuid"}))
        .await;
    assert_eq!(after, direct);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(squatter);
}
