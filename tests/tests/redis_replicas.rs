//! memgate on Redis with replicas under Sentinel (Debian's `redis-server` and
//! `redis-sentinel`): with `durability: replicated` (the default with a Sentinel URL) a write is
//! acknowledged only once a replica has it too; when none confirms it within
//! `redis.replicationTimeout`, the client gets a clear `503 write_unconfirmed` and no
//! acknowledgement. With `local`, the same write is acknowledged at once.
//! (The failover itself is in `history.rs`.)

use std::time::{Duration, Instant};

use memgate::config::Durability;
use memgate_testkit::{start_proxy, test_config, SentinelGroup};
use serde_json::{json, Value};

async fn create(http: &reqwest::Client, base: &str, content: &str) -> (u16, Value) {
    let response = http
        .post(format!("{base}/memories"))
        .json(&json!({"content": content, "type": "episodic"}))
        .send()
        .await
        .expect("create");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_no_replica_confirms_is_refused_and_with_local_durability_acknowledged() {
    let group = SentinelGroup::start(1, 3)
        .await
        .expect("redis with sentinels");
    // Kept: the proxies' vector store flushes into it when the runtime ends, after this test.
    let data = tempfile::tempdir().expect("dir").keep();
    let mut replicated = test_config(&data, Some(group.url()), None, None);
    replicated.redis.replication_timeout = Duration::from_millis(300);
    assert_eq!(
        replicated.redis.effective_durability(),
        Durability::Replicated,
        "the default with a Sentinel URL"
    );
    let mut local = replicated.clone();
    local.redis.durability = Some(Durability::Local);
    let replicated = start_proxy(replicated).await.expect("proxy");
    let local = start_proxy(local).await.expect("proxy");
    let (replicated_url, local_url) = (
        format!("http://{}", replicated.api_addr),
        format!("http://{}", local.api_addr),
    );
    let http = reqwest::Client::new();

    let (status, _) = create(&http, &replicated_url, "the replica has this one").await;
    assert_eq!(status, 202, "acknowledged once the replica has it");

    group.pause_replicas().await.expect("replica paused");
    let asked = Instant::now();
    let (status, refused) = create(&http, &replicated_url, "no replica took this one").await;
    let waited = asked.elapsed();
    let (local_status, _) = create(&http, &local_url, "local durability takes this one").await;
    group.resume_replicas().await.expect("replica resumed");

    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "write_unconfirmed", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("0 of 1 Redis replicas confirmed the write"),
        "{message}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "refused only after redis.replicationTimeout: {waited:?}"
    );
    assert_eq!(
        local_status, 202,
        "local durability does not wait for replicas"
    );

    let (status, _) = create(&http, &replicated_url, "the replica is back").await;
    assert_eq!(status, 202, "acknowledged again once the replica is back");
    replicated.shutdown().await;
    local.shutdown().await;
}
