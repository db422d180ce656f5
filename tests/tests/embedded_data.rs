//! The embedded mode's data directory, with the real `memgate` binary: memories kept across
//! restarts, acknowledged writes kept across a SIGKILL (the queue's journal), and stdio
//! launches that share one local server, so every client sees the same memories.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use memgate_testkit::{eventually, memgate_binary, FakeOpenAi, McpStdioClient, MemgateProcess};
use serde_json::{json, Value};

/// `memgate serve --embedded` keeping its data under `xdg` (the platform's data directory),
/// embedding with `openai` (to slow the writes down) unless none.
async fn serve_embedded(xdg: &Path, openai: Option<&FakeOpenAi>) -> (Child, String) {
    let mut env = vec![
        ("XDG_DATA_HOME", xdg.display().to_string()),
        ("MEMGATE_LOG", "warn".to_string()),
    ];
    if let Some(openai) = openai {
        env.extend([
            ("MEMGATE_EMBEDDINGS__PROVIDER", "openai".to_string()),
            (
                "MEMGATE_EMBEDDINGS__MODEL",
                "text-embedding-test".to_string(),
            ),
            ("MEMGATE_EMBEDDINGS__DIMENSIONS", "64".to_string()),
            ("MEMGATE_OPENAI__BASE_URL", openai.base_url()),
            ("MEMGATE_OPENAI__API_KEY", "sk-test".to_string()),
            ("MEMGATE_OPENAI__TIMEOUT", "30s".to_string()),
        ]);
    }
    // Beside memgate's own directory (`{XDG_DATA_HOME}/memgate`), not in it.
    let log = xdg.join("serve.log");
    let process = MemgateProcess::spawn(&["serve", "--embedded"], &env, &log)
        .await
        .expect("memgate serve listens");
    let base = process.base.clone();
    (process.into_child(), base)
}

async fn create(http: &reqwest::Client, base: &str, content: &str) -> Option<String> {
    let answer = http
        .post(format!("{base}/memories"))
        .json(&json!({ "content": content, "type": "semantic" }))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    let body: Value = answer.json().await.ok()?;
    body["id"].as_str().map(str::to_string)
}

async fn memory(http: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    let answer = http
        .get(format!("{base}/memories/{id}"))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    answer.json().await.ok()
}

#[tokio::test]
async fn acknowledged_embedded_writes_survive_a_sigkill_and_are_applied_after_the_restart() {
    let xdg = tempfile::tempdir().expect("dir");
    let openai = FakeOpenAi::start(64).await.expect("fake OpenAI");
    // Every embedding takes long: the writes are acknowledged and still queued at the kill.
    openai.set_delay(Duration::from_secs(20));
    let (mut server, base) = serve_embedded(xdg.path(), Some(&openai)).await;
    let http = reqwest::Client::new();

    let mut clients = Vec::new();
    for client in 0..4 {
        let (http, base) = (http.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..10 {
                if let Some(id) = create(&http, &base, &format!("journal {client}-{n}")).await {
                    acknowledged.push((id, format!("journal {client}-{n}")));
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.expect("client"));
    }
    assert_eq!(acknowledged.len(), 40, "every create is acknowledged");
    // Later writes to the same memories, queued behind their creates: after the restart they
    // must apply after them, as acknowledged.
    let (updated, deleted) = (&acknowledged[..5], &acknowledged[5..10]);
    for (id, _) in updated {
        let answer = http
            .patch(format!("{base}/memories/{id}"))
            .json(&json!({ "content": format!("updated {id}") }))
            .send()
            .await
            .expect("update");
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    for (id, _) in deleted {
        let answer = http
            .delete(format!("{base}/memories/{id}"))
            .send()
            .await
            .expect("delete");
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");
    assert!(
        openai.embedding_calls() < 40,
        "the kill came before the writes were applied"
    );

    openai.set_delay(Duration::ZERO);
    let (mut server, base) = serve_embedded(xdg.path(), Some(&openai)).await;
    // Each memory as its last acknowledged write left it: updated, deleted, or as created.
    let expected = |id: &str, content: &str| -> Option<String> {
        if deleted.iter().any(|(gone, _)| gone == id) {
            None
        } else if updated.iter().any(|(changed, _)| changed == id) {
            Some(format!("updated {id}"))
        } else {
            Some(content.to_string())
        }
    };
    let mut lost = Vec::new();
    for (id, content) in &acknowledged {
        let found = memory(&http, &base, id).await;
        let found = found
            .as_ref()
            .map(|found| found["content"].as_str().unwrap_or_default());
        if found != expected(id, content).as_deref() {
            lost.push((id.clone(), found.map(str::to_string)));
        }
    }
    assert!(
        lost.is_empty(),
        "acknowledged writes lost or undone: {lost:?}"
    );
    // And the queued jobs run, in order: every memory reaches the vector store as its last
    // write left it (its status says so).
    let applied = eventually(Duration::from_secs(60), || async {
        for (id, content) in &acknowledged {
            let found = memory(&http, &base, id).await;
            let settled = match (&found, expected(id, content)) {
                (None, None) => true,
                (Some(found), Some(content)) => {
                    found["status"] == "ready" && found["content"] == content.as_str()
                }
                _ => false,
            };
            if !settled {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        applied,
        "every journaled write is applied after the restart, in order"
    );
    server.kill().expect("stop");
    let _ = server.wait();
}

#[tokio::test]
async fn embedded_memories_are_kept_across_restarts_and_ephemeral_keeps_none() {
    let xdg = tempfile::tempdir().expect("dir");
    let http = reqwest::Client::new();
    let (mut server, base) = serve_embedded(xdg.path(), None).await;
    let id = create(&http, &base, "the spare key is under the blue pot")
        .await
        .expect("created");
    assert!(
        eventually(Duration::from_secs(20), || async {
            memory(&http, &base, &id)
                .await
                .is_some_and(|found| found["status"] == "ready")
        })
        .await
    );
    // A clean stop (SIGTERM).
    let pid = server.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    server.wait().expect("exits");
    assert!(xdg.path().join("memgate/vectors").is_dir());

    let (mut server, base) = serve_embedded(xdg.path(), None).await;
    let found = memory(&http, &base, &id).await.expect("kept");
    assert_eq!(found["content"], "the spare key is under the blue pot");
    let searched: Value = http
        .post(format!("{base}/memories/search"))
        .json(&json!({ "query": "where is the spare key" }))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("JSON");
    assert!(
        searched.to_string().contains(&id),
        "found by search: {searched}"
    );
    // A second process on the same directory is refused, and says by whom.
    let refused = Command::new(memgate_binary())
        .args(["serve", "--embedded", "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("XDG_DATA_HOME", xdg.path())
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(&format!("in use by another memgate (pid {})", server.id())),
        "{message}"
    );
    server.kill().expect("stop");
    let _ = server.wait();

    // --ephemeral: nothing written under the data directory, nothing found.
    let other = tempfile::tempdir().expect("dir");
    let ephemeral = MemgateProcess::spawn(
        &["serve", "--embedded", "--ephemeral"],
        &[("XDG_DATA_HOME", other.path().display().to_string())],
        &other.path().join("serve.log"),
    )
    .await
    .expect("starts");
    let base = ephemeral.base.clone();
    assert!(memory(&http, &base, &id).await.is_none());
    assert!(!other.path().join("memgate").exists());
    drop(ephemeral);
}

/// `memgate mcp stdio --embedded` with its data under `xdg`, spoken to line by line.
fn launch(xdg: &Path) -> McpStdioClient {
    let mut command = Command::new(memgate_binary());
    command
        .args(["mcp", "stdio", "--embedded"])
        .env("XDG_DATA_HOME", xdg)
        .env("MEMGATE_IDLE_EXIT", "2s")
        .env("MEMGATE_LOG", "warn");
    McpStdioClient::launch(command).expect("launched and initialized")
}

fn close(client: McpStdioClient) {
    let status = client.close().expect("exits");
    assert!(status.success(), "{status}");
}

/// The pid of the local server, from the data directory's lock.
fn local_server_pid(xdg: &Path) -> Option<u32> {
    std::fs::read_to_string(xdg.join("memgate/lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn two_stdio_launches_at_once_share_their_memories_and_the_server_outlives_neither_for_long()
{
    let xdg = tempfile::tempdir().expect("dir");
    let (xdg_a, xdg_b) = (xdg.path().to_path_buf(), xdg.path().to_path_buf());
    // Started at the same moment: one local server between them.
    let a = std::thread::spawn(move || launch(&xdg_a));
    let b = std::thread::spawn(move || launch(&xdg_b));
    let (mut a, mut b) = (a.join().expect("a"), b.join().expect("b"));
    let stored = a
        .tool(
            "store_memory",
            json!({"content": "the boat is moored at pier seven", "type": "semantic"}),
        )
        .expect("tool");
    let id = serde_json::from_str::<Value>(&stored).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let fetched = b.tool("get_memory", json!({"id": id})).expect("tool");
    assert!(fetched.contains("pier seven"), "{fetched}");
    let server = local_server_pid(xdg.path()).expect("a local server owns the directory");
    assert!(running(server));
    close(a);
    // b is still attached: the server stays, and finds the memory once it is applied.
    let mut searched = String::new();
    for _ in 0..100 {
        searched = b
            .tool(
                "search_memories",
                json!({"query": "where is the boat moored"}),
            )
            .expect("tool");
        if searched.contains(&id) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(searched.contains(&id), "{searched}");
    close(b);

    // Idle for 2 s, it exits; the next launch starts another and finds the memory.
    assert!(
        eventually(Duration::from_secs(20), || async { !running(server) }).await,
        "the idle local server exits"
    );
    let mut c = launch(xdg.path());
    let fetched = c.tool("get_memory", json!({"id": id})).expect("tool");
    assert!(fetched.contains("pier seven"), "{fetched}");
    close(c);
}
