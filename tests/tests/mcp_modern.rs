//! MCP 2026-07-28 on `/mcp`, on the wire: requests without a session, checked against their
//! headers with the specification's errors, answered with `resultType`, `serverInfo` and the
//! caching hints; embedded, and in front of the reference cldmemory (calls memgate does not
//! answer are forwarded over memgate's own 2025-era session).

use memgate_testkit::{start_proxy, test_config, Legacy, SseRouting, TestStack};
use serde_json::{json, Value};

const VERSION: &str = "2026-07-28";

/// Request headers, by name.
type Headers = Vec<(&'static str, &'static str)>;

/// A request as a 2026-07-28 client sends it: `_meta` and the mirrored headers.
fn request(method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "wire-test", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
}

/// POSTs `body` to `/mcp` with these headers; the status, the headers and the JSON answer.
async fn post(
    base: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut builder = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = builder.json(body).send().await.expect("an answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

/// The headers a conforming client sends with `body`.
fn mirrored(body: &Value) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("mcp-protocol-version", VERSION.to_string()),
        (
            "mcp-method",
            body["method"].as_str().expect("method").to_string(),
        ),
    ];
    if let Some(name) = body["params"]["name"]
        .as_str()
        .or(body["params"]["taskId"].as_str())
    {
        headers.push(("mcp-name", name.to_string()));
    }
    headers
}

async fn call(base: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let headers = mirrored(body);
    let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    post(base, &borrowed, body).await
}

fn tool(name: &str, arguments: Value) -> Value {
    request("tools/call", json!({"name": name, "arguments": arguments}))
}

#[tokio::test]
async fn a_2026_client_is_served_without_a_session() {
    let data = tempfile::tempdir().expect("dir");
    let proxy = start_proxy(test_config(data.path(), None, None, None))
        .await
        .expect("proxy");
    let base = format!("http://{}", proxy.api_addr);

    let (status, headers, discovered) = call(&base, &request("server/discover", json!({}))).await;
    assert_eq!(status, 200, "{discovered}");
    assert!(
        headers.get("mcp-session-id").is_none(),
        "no session is minted"
    );
    let result = &discovered["result"];
    assert_eq!(result["supportedVersions"][0], VERSION);
    assert!(result["supportedVersions"]
        .as_array()
        .expect("versions")
        .contains(&json!("2025-11-25")));
    assert_eq!(result["resultType"], "complete");
    assert_eq!(result["capabilities"]["tools"], json!({}));
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "memgate"
    );
    assert_eq!(
        (result["ttlMs"].as_u64(), result["cacheScope"].as_str()),
        (Some(60_000), Some("public"))
    );

    let (_, _, listed) = call(&base, &request("tools/list", json!({}))).await;
    assert_eq!(listed["result"]["tools"].as_array().map(Vec::len), Some(5));
    assert_eq!(listed["result"]["cacheScope"], "public");
    let annotations = |name: &str| {
        listed["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .find(|tool| tool["name"] == name)
            .map(|tool| tool["annotations"].clone())
            .expect("listed")
    };
    assert_eq!(annotations("get_memory")["readOnlyHint"], true);
    assert_eq!(annotations("search_memories")["readOnlyHint"], true);
    assert_eq!(annotations("delete_memory")["destructiveHint"], true);
    assert_eq!(annotations("store_memory")["readOnlyHint"], false);
    assert_eq!(annotations("store_memory")["idempotentHint"], false);

    let (status, _, stored) = call(
        &base,
        &tool(
            "store_memory",
            json!({"content": "Stateless clients remember too", "type": "semantic"}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stored["result"]["resultType"], "complete");
    assert!(
        stored["result"].get("ttlMs").is_none(),
        "a tool call is not cacheable"
    );
    let memory: Value = serde_json::from_str(
        stored["result"]["content"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("the memory");
    let (_, _, got) = call(&base, &tool("get_memory", json!({"id": memory["id"]}))).await;
    let got: Value =
        serde_json::from_str(got["result"]["content"][0]["text"].as_str().expect("text"))
            .expect("the memory");
    assert_eq!(got["content"], "Stateless clients remember too");

    let (status, _, unknown) = call(&base, &request("prompts/get", json!({"name": "x"}))).await;
    assert_eq!(
        (status, unknown["error"]["code"].as_i64()),
        (404, Some(-32601))
    );

    let stream = reqwest::Client::new()
        .get(format!("{base}/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .send()
        .await
        .expect("an answer");
    assert_eq!(stream.status(), 405, "no stream to GET");
    assert_eq!(stream.headers()["allow"], "POST");
    assert_eq!(proxy.state.mcp.front.sessions.len(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn requests_that_break_the_rules_get_the_specifications_errors() {
    let data = tempfile::tempdir().expect("dir");
    let proxy = start_proxy(test_config(data.path(), None, None, None))
        .await
        .expect("proxy");
    let base = format!("http://{}", proxy.api_addr);
    let body = tool("get_memory", json!({"id": "x"}));
    let cases: Vec<(Headers, Value, i64)> = vec![
        // The name header disagrees with the body.
        (
            vec![
                ("mcp-protocol-version", VERSION),
                ("mcp-method", "tools/call"),
                ("mcp-name", "delete_memory"),
            ],
            body.clone(),
            -32020,
        ),
        // The method header is missing.
        (
            vec![
                ("mcp-protocol-version", VERSION),
                ("mcp-name", "get_memory"),
            ],
            body.clone(),
            -32020,
        ),
        // No `_meta` at all.
        (
            vec![
                ("mcp-protocol-version", VERSION),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_memory"),
            ],
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_memory"}}),
            -32602,
        ),
        // A version memgate does not serve.
        (
            vec![
                ("mcp-protocol-version", "1900-01-01"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_memory"),
            ],
            {
                let mut old = body.clone();
                old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] =
                    json!("1900-01-01");
                old
            },
            -32022,
        ),
    ];
    for (headers, body, code) in cases {
        let (status, _, answer) = post(&base, &headers, &body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"].as_i64(), Some(code), "{answer}");
    }
    let mut discover = request("server/discover", json!({}));
    discover["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("1900-01-01");
    let (_, _, unsupported) = post(
        &base,
        &[
            ("mcp-protocol-version", "1900-01-01"),
            ("mcp-method", "server/discover"),
        ],
        &discover,
    )
    .await;
    assert_eq!(unsupported["error"]["data"]["supported"][0], VERSION);

    // A 2025-era client is served as before, with a session.
    let (status, headers, initialized) = post(
        &base,
        &[],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "old", "version": "1"}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(initialized["result"]["protocolVersion"], "2025-11-25");
    assert!(headers.get("mcp-session-id").is_some());
    proxy.shutdown().await;
}

#[tokio::test]
async fn calls_memgate_does_not_answer_reach_the_legacy_service() {
    let stack = TestStack::builder()
        .legacy(Legacy::InFront(SseRouting::NewestStream))
        .configure(|config| config.rollout.percent = 100)
        .start()
        .await;
    let base = stack.url("");
    let (_, _, discovered) = call(&base, &request("server/discover", json!({}))).await;
    assert_eq!(
        discovered["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "memory-server",
        "the legacy service's introduction"
    );
    let (_, _, listed) = call(&base, &request("tools/list", json!({}))).await;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(names.contains(&"connect_memories"), "{names:?}");

    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for content in [
            "The kettle is in the left cupboard",
            "The mugs are above the kettle",
        ] {
            let (_, _, stored) = call(
                &base,
                &tool(
                    "store_memory",
                    json!({"content": content, "type": "semantic"}),
                ),
            )
            .await;
            let text = stored["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_default();
            let memory: Value = serde_json::from_str(text)
                .unwrap_or_else(|error| panic!("a memory ({error}): {stored}"));
            let id = memory["id"].as_str().expect("id").to_string();
            stack.wait_for_worker(&id).await;
            ids.push(id);
        }
        ids
    };
    let (status, _, connected) = call(
        &base,
        &tool(
            "connect_memories",
            json!({"sourceId": ids[0], "targetId": ids[1], "bidirectional": true}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{connected}");
    assert_eq!(connected["result"]["resultType"], "complete");
    let direct = stack
        .reference()
        .call(
            "connect_memories",
            json!({"sourceId": ids[0], "targetId": ids[1], "bidirectional": true}),
        )
        .await;
    assert_eq!(
        connected["result"]["content"][0]["text"].as_str(),
        Some(direct.as_str()),
        "cldmemory's own text"
    );
}

/// A 2026-07-28 client, sent round-robin between two memgate processes that share Redis (and a
/// worker slowed down by its model): each search, on either replica, finds what the client
/// stored just before on the other, as a session's would.
#[tokio::test]
async fn a_client_without_a_session_reads_its_writes_on_any_replica() {
    let redis = memgate_testkit::RedisServer::start().expect("redis-server");
    let openai = memgate_testkit::FakeOpenAi::start(64)
        .await
        .expect("openai");
    openai.set_delay(std::time::Duration::from_millis(300));
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(
        data.path(),
        Some(redis.url()),
        Some(openai.base_url()),
        None,
    );
    config.layout.similarity_threshold = 0.0;
    let (first, backends) = memgate_testkit::start_proxy_with_backends(config.clone())
        .await
        .expect("the first replica");
    let second = memgate::app::start_with(config.clone(), backends.clone(), None)
        .await
        .expect("the second replica");
    let _worker = memgate::app::start_worker_with(config, backends)
        .await
        .expect("a worker");
    let replicas = [
        format!("http://{}", first.api_addr),
        format!("http://{}", second.api_addr),
    ];
    for n in 0..6 {
        let (store_on, search_on) = (&replicas[n % 2], &replicas[(n + 1) % 2]);
        let content = format!("Round robin note number {n} about lanterns");
        let (_, _, stored) = call(
            store_on,
            &tool(
                "store_memory",
                json!({"content": content, "type": "semantic"}),
            ),
        )
        .await;
        let memory: Value = serde_json::from_str(
            stored["result"]["content"][0]["text"]
                .as_str()
                .expect("text"),
        )
        .expect("a memory");
        let (_, _, found) = call(
            search_on,
            &tool(
                "search_memories",
                json!({"query": content, "limit": 50, "includeAssociations": false,
                       "detailLevel": "compact", "reconstructChunks": false}),
            ),
        )
        .await;
        let text = found["result"]["content"][0]["text"]
            .as_str()
            .expect("text");
        assert!(
            text.contains(memory["id"].as_str().expect("id")),
            "search {n} on the other replica finds the memory just stored: {text}"
        );
    }
}

/// A request from a client that declares the tasks extension.
fn with_tasks(mut body: Value) -> Value {
    body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    body
}

/// Polls `tasks/get` until the task leaves `working` (ten seconds at most); the last task.
async fn settled(base: &str, task_id: &str) -> Value {
    let poll = with_tasks(request("tasks/get", json!({"taskId": task_id})));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _, answer) = call(base, &poll).await;
        assert_eq!(status, 200, "{answer}");
        let task = answer["result"].clone();
        if task["status"] != "working" || std::time::Instant::now() > deadline {
            return task;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Tasks: a store acknowledged as a task is followed to completion (the memory after
/// enrichment, as cldmemory answers a store), cancelled before it is applied (nothing stored),
/// or failed when the worker gives it up; unknown tasks are refused.
#[tokio::test]
async fn stores_become_tasks_for_clients_that_declare_them() {
    let redis = memgate_testkit::RedisServer::start().expect("redis-server");
    let openai = memgate_testkit::FakeOpenAi::start(64)
        .await
        .expect("openai");
    openai.set_delay(std::time::Duration::from_millis(200));
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(
        data.path(),
        Some(redis.url()),
        Some(openai.base_url()),
        None,
    );
    config.worker.max_attempts = 2;
    config.worker.retry_backoff = std::time::Duration::from_millis(50);
    let (proxy, _worker) = memgate_testkit::start_proxy_and_worker(config)
        .await
        .expect("proxy and worker");
    let base = format!("http://{}", proxy.api_addr);

    let (_, _, discovered) = call(&base, &request("server/discover", json!({}))).await;
    assert_eq!(
        discovered["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"],
        json!({})
    );
    let store = |content: &str| {
        with_tasks(tool(
            "store_memory",
            json!({"content": content, "type": "semantic"}),
        ))
    };

    // Followed to completion.
    let (status, _, created) = call(&base, &store("Tasks end with the enriched memory")).await;
    assert_eq!(status, 200, "{created}");
    let task = &created["result"];
    assert_eq!(task["resultType"], "task", "{created}");
    assert_eq!(task["status"], "working");
    assert_eq!(task["pollIntervalMs"], 500);
    let task_id = task["taskId"].as_str().expect("a task id").to_string();
    let done = settled(&base, &task_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["resultType"], "complete");
    let memory: Value = serde_json::from_str(
        done["result"]["content"][0]["text"]
            .as_str()
            .expect("the tool's text"),
    )
    .expect("a memory");
    assert_eq!(memory["id"], task_id.as_str());
    assert_eq!(memory["content"], "Tasks end with the enriched memory");
    assert!(
        memory.get("status").is_none(),
        "cldmemory's shape: {memory}"
    );
    assert!(openai.chat_calls() > 0, "enriched by the model");

    // Without the capability, the answer is as before.
    let (_, _, plain) = call(
        &base,
        &tool(
            "store_memory",
            json!({"content": "No task for me", "type": "semantic"}),
        ),
    )
    .await;
    assert_eq!(plain["result"]["resultType"], "complete");

    // Cancelled before it is applied: nothing is stored.
    openai.set_delay(std::time::Duration::from_millis(1500));
    let (_, _, created) = call(&base, &store("Cancel me before I am stored")).await;
    let task_id = created["result"]["taskId"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, _, cancelled) = call(
        &base,
        &with_tasks(request("tasks/cancel", json!({"taskId": task_id}))),
    )
    .await;
    assert_eq!(
        (status, &cancelled["result"]["resultType"]),
        (200, &json!("complete"))
    );
    assert_eq!(settled(&base, &task_id).await["status"], "cancelled");
    openai.set_delay(std::time::Duration::from_millis(0));
    let gone = memgate_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let (_, _, got) = call(&base, &tool("get_memory", json!({"id": task_id}))).await;
        got["result"]["content"][0]["text"] == "Memory not found"
    })
    .await;
    assert!(gone, "a cancelled store leaves nothing");

    // Given up by the worker: failed, with the reason.
    openai.set_failing(true);
    let (_, _, created) = call(&base, &store("The model is down for this one")).await;
    let task_id = created["result"]["taskId"]
        .as_str()
        .expect("id")
        .to_string();
    let failed = settled(&base, &task_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"]["message"].as_str().is_some(), "{failed}");
    openai.set_failing(false);

    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, _, refused) = call(
        &base,
        &with_tasks(request("tasks/get", json!({"taskId": unknown}))),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_i64()),
        (400, Some(-32602))
    );
    proxy.shutdown().await;
}

/// Tool calls of one path a replica has answered, whatever their outcome.
fn calls_on(proxy: &memgate::app::RunningProxy, path: &str) -> u64 {
    ["ok", "error", "cancelled", "degraded"]
        .iter()
        .map(|outcome| {
            proxy
                .state
                .metrics
                .front
                .mcp_tool_calls
                .with_label_values(&["get_memory", path, outcome])
                .get()
        })
        .sum()
}

/// At a 50% rollout, two replicas in front of one legacy service send each stateless client
/// (known by its metadata's user) the same way, every time: the route is chosen from the
/// request, not remembered.
#[tokio::test]
async fn a_client_without_a_session_keeps_its_route_on_every_replica() {
    let redis = memgate_testkit::RedisServer::start().expect("redis-server");
    let openai = memgate_testkit::FakeOpenAi::start(64)
        .await
        .expect("openai");
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(
        data.path(),
        Some(redis.url()),
        Some(openai.base_url()),
        None,
    );
    config.rollout.percent = 50;
    let vectors = memgate::app::vector_store(&config).expect("vectors");
    let backends =
        memgate::app::Backends::with_vectors(&config, vectors.clone()).expect("backends");
    // One cldmemory per memgate, as cldmemory needs (it answers the newest stream only), on
    // the one store.
    let mut references = Vec::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let reference = memgate_testkit::start_reference_with(
            vectors.clone(),
            &openai.base_url(),
            &config,
            SseRouting::NewestStream,
        )
        .await
        .expect("a reference");
        let mut own = config.clone();
        own.upstream.url = Some(reference.url());
        replicas.push(
            memgate::app::start_with(own, backends.clone(), None)
                .await
                .expect("a replica"),
        );
        references.push(reference);
    }
    let mut paths = std::collections::BTreeSet::new();
    for user in 0..20 {
        let mut seen = Vec::new();
        for round in 0..4 {
            let replica = &replicas[round % 2];
            let base = format!("http://{}", replica.api_addr);
            let before = calls_on(replica, "fast");
            let body = tool("get_memory", json!({"id": uuid::Uuid::new_v4()}));
            let headers = mirrored(&body);
            let mut borrowed: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let metadata = format!("user:u{user}");
            borrowed.push(("memory-metadata", &metadata));
            let (status, _, answer) = post(&base, &borrowed, &body).await;
            assert_eq!(status, 200, "{answer}");
            seen.push(if calls_on(replica, "fast") > before {
                "fast"
            } else {
                "legacy"
            });
        }
        assert!(
            seen.iter().all(|path| *path == seen[0]),
            "user u{user}: one route on both replicas: {seen:?}"
        );
        paths.insert(seen[0]);
    }
    assert_eq!(paths.len(), 2, "at 50% both routes are taken: {paths:?}");
    for replica in replicas {
        replica.shutdown().await;
    }
}
