//! An MCP task outlives the memgate that created it: two `memgate serve` processes and a
//! `memgate worker` on one `redis-server`; a 2026-07-28 client stores a memory as a task on the
//! first, which is SIGKILLed at once; the second answers `tasks/get` until the write completes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use memgate_testkit::{eventually, free_port, memgate_binary, FakeOpenAi, RedisServer};
use serde_json::{json, Value};

/// A memgate process's config: its own Qdrant Edge directory, the shared Redis and model.
fn config(dir: &Path, redis: &RedisServer, openai: &FakeOpenAi, listen: u16) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("memgate.yaml");
    std::fs::write(
        &path,
        format!(
            "store: {{namespace: test, name: 'tasks-{pid}'}}\nlisten: 127.0.0.1:{listen}\n\
             adminListen: 127.0.0.1:0\nredis: {{url: '{redis}'}}\ncache: {{backend: redis}}\n\
             vectors: {{backend: edge, path: '{edge}'}}\n\
             embeddings: {{provider: openai, model: text-embedding-test, dimensions: 64}}\n\
             enrichment: {{provider: openai, model: gpt-test}}\n\
             openai: {{baseUrl: '{openai}', apiKey: sk-test}}\n\
             worker: {{retryBackoff: 20ms, embeddingBatchWindow: 5ms, separate: true}}\nrollout: {{percent: 100}}\n",
            pid = std::process::id(),
            redis = redis.url(),
            edge = dir.join("edge").display(),
            openai = openai.base_url(),
        ),
    )
    .expect("config");
    path
}

fn spawn(command: &str, config: &Path) -> Child {
    Command::new(memgate_binary())
        .args([command, "--config"])
        .arg(config)
        .env("MEMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memgate starts")
}

/// A 2026-07-28 request from a client that declares tasks, with its mirrored headers.
async fn call(base: &str, method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":
            {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    });
    let name = params["name"]
        .as_str()
        .or(params["taskId"].as_str())
        .map(str::to_string);
    let mut request = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    request
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON")
}

async fn up(base: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        let discovered = reqwest::Client::new()
            .post(format!("{base}/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "server/discover")
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}}}}),
            )
            .send()
            .await;
        discovered.is_ok_and(|response| response.status().is_success())
    })
    .await
}

#[tokio::test]
async fn another_replica_answers_for_the_task_of_one_killed() {
    let redis = RedisServer::start().expect("redis-server");
    let openai = FakeOpenAi::start(64).await.expect("openai");
    openai.set_delay(Duration::from_millis(1500));
    let data = tempfile::tempdir().expect("dir");
    let (first_port, second_port) = (free_port().expect("port"), free_port().expect("port"));
    let mut first = spawn(
        "serve",
        &config(&data.path().join("first"), &redis, &openai, first_port),
    );
    let mut second = spawn(
        "serve",
        &config(&data.path().join("second"), &redis, &openai, second_port),
    );
    let mut worker = spawn(
        "worker",
        &config(&data.path().join("worker"), &redis, &openai, 0),
    );
    let (first_base, second_base) = (
        format!("http://127.0.0.1:{first_port}"),
        format!("http://127.0.0.1:{second_port}"),
    );
    assert!(
        up(&first_base).await && up(&second_base).await,
        "both replicas serve"
    );

    let created = call(
        &first_base,
        "tools/call",
        json!({"name": "store_memory",
               "arguments": {"content": "A task that outlives its replica", "type": "semantic"}}),
    )
    .await;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let task_id = created["result"]["taskId"]
        .as_str()
        .expect("a task id")
        .to_string();
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");

    let started = Instant::now();
    let mut seen = Vec::new();
    let done = loop {
        let task = call(&second_base, "tasks/get", json!({"taskId": task_id})).await;
        let status = task["result"]["status"].as_str().unwrap_or("?").to_string();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status != "working" || started.elapsed() > Duration::from_secs(20) {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    second.kill().expect("kill");
    worker.kill().expect("kill");
    let _ = (second.wait(), worker.wait());
    assert_eq!(seen, ["working", "completed"], "{done}");
    let memory: Value = serde_json::from_str(
        done["result"]["result"]["content"][0]["text"]
            .as_str()
            .expect("the store's text"),
    )
    .expect("a memory");
    assert_eq!(memory["id"], task_id.as_str());
    assert_eq!(memory["content"], "A task that outlives its replica");
}
