//! The write path end to end: `202` at once, enrichment in the background, nothing lost. Real
//! `redis-server`, a local OpenAI-compatible server that can be slow or fail, and worker
//! processes that are killed for real.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use memgate::config::Config;
use memgate_testkit::{
    eventually, memgate_binary, scrape_metrics, start_proxy, test_config, FakeOpenAi, RedisServer,
    TestStack,
};
use redis::AsyncCommands;
use serde_json::{json, Value};

memgate_testkit::stack_env!(Env);

impl Env {
    async fn start(with_worker: bool, adjust: impl FnOnce(&mut Config) + 'static) -> Env {
        let stack = TestStack::builder()
            .vectors_under("proxy")
            .configure(adjust);
        let stack = if with_worker {
            stack
        } else {
            stack.without_worker()
        };
        Env(stack.start().await)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", self.proxy.api_addr))
            .header("x-user-id", "alice")
    }

    /// `POST /memories`; an `episodic` memory unless the body names its type.
    async fn create(&self, mut body: Value) -> (reqwest::StatusCode, Value) {
        if body.get("type").is_none() && body.get("content").is_some() {
            body["type"] = json!("episodic");
        }
        let response = self
            .request(reqwest::Method::POST, "/memories")
            .json(&body)
            .send()
            .await
            .expect("create");
        let status = response.status();
        (status, response.json().await.expect("json"))
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        let response = self
            .request(reqwest::Method::GET, &format!("/memories/{id}"))
            .send()
            .await
            .expect("get");
        (
            response.status().as_u16(),
            response.json().await.expect("json"),
        )
    }

    async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, memory) = self.get(id).await;
            if memory["status"] == status {
                return memory;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "memory {id} never became {status}: {memory}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis.client().await.expect("redis client")
    }

    async fn stream_len(&self, stream: &str) -> u64 {
        self.redis()
            .await
            .xlen(format!("{}{stream}", self.prefix))
            .await
            .unwrap_or(0)
    }

    async fn pending(&self) -> u64 {
        let reply: redis::streams::StreamPendingReply = self
            .redis()
            .await
            .xpending(format!("{}writes", self.prefix), "workers")
            .await
            .unwrap_or_default();
        reply.count() as u64
    }
}

#[tokio::test]
async fn create_answers_202_at_once_and_becomes_ready_enriched_and_searchable() {
    let env = Env::start(true, |_| {}).await;
    let content = format!(
        "A happy afternoon drinking coffee in Paris with Marie. {}",
        "More words. ".repeat(30)
    );
    let response = env
        .request(reqwest::Method::POST, "/memories")
        .json(&json!({"content": content, "type": "episodic", "context": {"tags": ["travel"], "location": "Paris"}, "importance": 0.7}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let accepted: Value = response.json().await.expect("json");
    let id = accepted["id"].as_str().expect("id").to_string();
    assert_eq!(accepted["status"], "processing");
    assert_eq!(location, format!("/memories/{id}"));
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        4,
        "random ids, as cldmemory's"
    );

    let (status, provisional) = env.get(&id).await;
    assert_eq!(status, 200);
    if provisional["status"] == "processing" {
        assert_eq!(
            provisional["summary"].as_str().map(|s| s.chars().count()),
            Some(150),
            "what cldmemory stores when its model cannot be asked: 147 characters and `...`"
        );
        assert_eq!(provisional["emotionalValence"], 0);
    }

    let ready = env.wait_status(&id, "ready", Duration::from_secs(10)).await;
    assert!(ready["summary"]
        .as_str()
        .expect("summary")
        .starts_with("Summary: A happy afternoon"));
    assert_eq!(ready["emotionalValence"], 0.8);
    assert_eq!(
        ready["context"],
        json!({"tags": ["travel"], "location": "Paris"}),
        "given tags replace the keywords"
    );
    assert_eq!(ready["importance"], 0.7);
    assert_eq!(ready["decay"], 0);
    assert_eq!(ready["project"], memgate_testkit::TEST_PROJECT);
    assert_eq!(
        env.openai.chat_calls(),
        2,
        "summary and valence; no keywords, the tags were given"
    );

    let admin = env.worker.as_ref().expect("worker").admin_addr;
    let metrics = scrape_metrics(admin).await;
    for expected in [
        "memgate_jobs_total{kind=\"create\",outcome=\"done\"} 1",
        "memgate_queue_length{stream=\"writes\"}",
        "memgate_dead_letters{stream=\"writes\"} 0",
        "memgate_job_duration_seconds_count{stage=\"enrich\"} 1",
        "memgate_embedded_texts_total 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }

    let response = env
        .request(reqwest::Method::POST, "/memories/search")
        .json(&json!({"query": "coffee in Paris"}))
        .send()
        .await
        .expect("search");
    let results: Value = response.json().await.expect("json");
    assert_eq!(results["memories"][0]["id"], id.as_str());
    assert_eq!(results["memories"][0]["status"], "ready");
}

#[tokio::test]
async fn embeddings_are_batched_across_jobs() {
    let env = Env::start(true, |c| {
        c.worker.embedding_batch_window = Duration::from_millis(50)
    })
    .await;
    env.openai.set_delay(Duration::from_millis(100));
    let creates = (0..20)
        .map(|i| env.create(json!({"content": format!("memory number {i}"), "summary": "s"})));
    let answers = futures::future::join_all(creates).await;
    let ids: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202);
            body["id"].as_str().expect("id").to_string()
        })
        .collect();
    for id in &ids {
        env.wait_status(id, "ready", Duration::from_secs(10)).await;
    }
    assert_eq!(env.openai.embedded_texts(), 20);
    assert!(
        env.openai.embedding_calls() < 10,
        "20 jobs took {} embedding calls",
        env.openai.embedding_calls()
    );
    assert_eq!(
        env.openai.chat_calls(),
        40,
        "valence and keywords: the summary was given"
    );
}

#[tokio::test]
async fn a_retried_create_with_the_same_idempotency_key_creates_nothing_new() {
    let env = Env::start(true, |c| {
        c.scope = Some(memgate::config::ScopeConfig {
            header: "x-user-id".into(),
            field: "userId".into(),
        });
    })
    .await;
    let send = || {
        env.request(reqwest::Method::POST, "/memories")
            .header("idempotency-key", "create-42")
            .json(&json!({"content": "only once", "type": "semantic"}))
            .send()
    };
    let first: Value = send().await.expect("first").json().await.expect("json");
    let second = send().await.expect("second");
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.expect("json");
    assert_eq!(first["id"], second["id"]);
    env.wait_status(
        first["id"].as_str().expect("id"),
        "ready",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(env.openai.embedded_texts(), 1, "one memory was enriched");

    let other = env
        .http
        .post(format!("http://{}/memories", env.proxy.api_addr))
        .header("x-user-id", "bob")
        .header("idempotency-key", "create-42")
        .json(&json!({"content": "bob's own", "type": "semantic"}))
        .send()
        .await
        .expect("bob");
    let other: Value = other.json().await.expect("json");
    assert_ne!(other["id"], first["id"], "keys are per tenant");
}

#[tokio::test]
async fn delete_hides_at_once_and_update_applies() {
    let env = Env::start(true, |_| {}).await;
    let (_, accepted) = env
        .create(json!({"content": "the old content about gardens"}))
        .await;
    let id = accepted["id"].as_str().expect("id").to_string();
    env.wait_status(&id, "ready", Duration::from_secs(10)).await;

    let response = env
        .request(reqwest::Method::PATCH, &format!("/memories/{id}"))
        .json(&json!({"content": "new content about sailing boats", "importance": 0.9}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 202);
    let (_, seen) = env.get(&id).await;
    assert_eq!(
        seen["content"], "new content about sailing boats",
        "readers see the change at once"
    );
    let updated = env.wait_status(&id, "ready", Duration::from_secs(10)).await;
    assert_eq!(updated["importance"], 0.9);
    let env = &env;
    let search = |query: &'static str| async move {
        let response = env
            .request(reqwest::Method::POST, "/memories/search")
            .json(&json!({"query": query, "similarityThreshold": 0.3}))
            .send()
            .await
            .expect("search");
        let results: Value = response.json().await.expect("json");
        results["memories"].as_array().expect("memories").len()
    };
    assert_eq!(
        search("sailing boats").await,
        1,
        "the new content was embedded"
    );

    let response = env
        .request(reqwest::Method::DELETE, &format!("/memories/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 202);
    let (status, body) = env.get(&id).await;
    assert_eq!(status, 404, "gone at once: {body}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            env.stream_len("writes").await == 0
        })
        .await,
        "the worker applied the delete"
    );
    assert_eq!(search("sailing boats").await, 0);
    let (status, _) = env.get(&id).await;
    assert_eq!(status, 404);

    let response = env
        .request(reqwest::Method::DELETE, &format!("/memories/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 404, "deleting twice finds nothing");
    let response = env
        .request(reqwest::Method::PATCH, &format!("/memories/{id}"))
        .json(&json!({"limit": 1}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 400, "unknown fields are refused");
}

#[tokio::test]
async fn similar_memories_are_associated_both_ways() {
    let env = Env::start(true, |c| c.layout.similarity_threshold = 0.6).await;
    let mut ids = Vec::new();
    for content in [
        "We drank coffee in Paris with Marie",
        "The quarterly tax report is due in April",
        "We drank coffee in Paris with Marie again",
    ] {
        let (_, accepted) = env
            .create(json!({"content": content, "summary": "s", "context": {"tags": []}}))
            .await;
        let id = accepted["id"].as_str().expect("id").to_string();
        env.wait_status(&id, "ready", Duration::from_secs(10)).await;
        ids.push(id);
    }
    let associations = |memory: &Value| -> Vec<String> {
        memory["associations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let linked = eventually(Duration::from_secs(10), || async {
        let (_, first) = env.get(&ids[0]).await;
        let (_, third) = env.get(&ids[2]).await;
        associations(&first) == vec![ids[2].clone()] && associations(&third) == vec![ids[0].clone()]
    })
    .await;
    assert!(linked, "the two Paris memories point at each other");
    let (_, tax) = env.get(&ids[1]).await;
    assert!(associations(&tax).is_empty(), "{tax}");
    assert_eq!(
        env.stream_len("assoc").await,
        0,
        "association jobs are acknowledged"
    );
}

impl Env {
    /// `accessCount` as a GET answers it.
    async fn shown_reads(&self, id: &str) -> u64 {
        let (status, memory) = self.get(id).await;
        assert_eq!(status, 200, "{memory}");
        memory["accessCount"].as_u64().expect("accessCount")
    }

    /// `accessCount` of the first memory a search for `query` answers.
    async fn searched_reads(&self, query: &str, threshold: f64) -> u64 {
        self.searched(query, threshold).await.0
    }

    /// `accessCount` of the first memory a search for `query` answers, and whether the
    /// answer came from the result cache (`x-memgate-cache`).
    async fn searched(&self, query: &str, threshold: f64) -> (u64, String) {
        let response = self
            .request(reqwest::Method::POST, "/memories/search")
            .json(&json!({"query": query, "similarityThreshold": threshold}))
            .send()
            .await
            .expect("search");
        let cache = response
            .headers()
            .get("x-memgate-cache")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let results: Value = response.json().await.expect("json");
        let reads = results["memories"][0]["accessCount"]
            .as_u64()
            .unwrap_or_else(|| panic!("no accessCount in {results}"));
        (reads, cache)
    }

    /// Waits until every read of `id` so far is in its payload and more syncs than `after`
    /// have ended; the syncs then.
    async fn wait_synced(&self, id: &str, after: u64) -> u64 {
        let synced = eventually(Duration::from_secs(5), || async {
            self.access_field(id, "unsynced").await == 0
                && self.access_field(id, "syncs").await > after
        })
        .await;
        assert!(synced, "the reads of {id} reached the payload");
        self.access_field(id, "syncs").await
    }

    /// The fields of `access:{id}`.
    async fn access_field(&self, id: &str, field: &str) -> u64 {
        self.redis()
            .await
            .hget(format!("{}access:{id}", self.prefix), field)
            .await
            .unwrap_or(0)
    }
}

/// The payload's counts are synced every few minutes, and answers count every read all the
/// same: each GET (from L1, from the Redis record) and each search (fresh, and cached) shows
/// one more than the answer before, as the legacy service's answers do, while nothing reaches
/// the payload.
#[tokio::test]
async fn answers_count_every_read_while_the_payload_waits_for_its_sync() {
    let env = Env::start(true, |config| {
        config.worker.access_sync_interval = Duration::from_secs(3600);
    })
    .await;
    let (_, accepted) = env.create(json!({"content": "count me exactly"})).await;
    let id = accepted["id"].as_str().expect("id").to_string();
    env.wait_status(&id, "ready", Duration::from_secs(10)).await;
    let mut expected = env.shown_reads(&id).await + 1;
    for _ in 0..3 {
        assert_eq!(env.shown_reads(&id).await, expected, "a GET");
        expected += 1;
    }
    for (threshold, what) in [
        (0.01, "a fresh search"),
        (0.02, "another fresh search"),
        (0.02, "the same search, cached"),
    ] {
        assert_eq!(
            env.searched_reads("count me exactly", threshold).await,
            expected,
            "{what}"
        );
        expected += 1;
    }
    assert_eq!(env.shown_reads(&id).await, expected, "a GET after searches");
    assert_eq!(env.access_field(&id, "syncs").await, 0, "no sync ran");
}

/// With syncs every 50 ms: the reads reach the payload (nothing unsynced is left, a sync is
/// counted), and the answers after it count each read once, not twice: the L1 entry and the
/// cached record from before the sync are not used.
#[tokio::test]
async fn read_counts_reach_the_vector_store_and_are_counted_once() {
    let env = Env::start(true, |_| {}).await;
    let (_, accepted) = env.create(json!({"content": "read me thrice"})).await;
    let id = accepted["id"].as_str().expect("id").to_string();
    env.wait_status(&id, "ready", Duration::from_secs(10)).await;
    let mut expected = env.shown_reads(&id).await + 1;
    for _ in 0..3 {
        assert_eq!(env.shown_reads(&id).await, expected);
        expected += 1;
    }
    let dirty = format!("{}access:dirty", env.prefix);
    let synced = eventually(Duration::from_secs(5), || async {
        let waiting: u64 = env.redis().await.scard(&dirty).await.unwrap_or(1);
        env.access_field(&id, "unsynced").await == 0
            && env.access_field(&id, "syncs").await > 0
            && waiting == 0
    })
    .await;
    assert!(synced, "the reads reached the payload");
    assert_eq!(
        env.searched_reads("read me thrice", 0.015).await,
        expected,
        "a fresh search reads the payload: the reads are in it, once"
    );
    expected += 1;
    assert_eq!(
        env.shown_reads(&id).await,
        expected,
        "and a GET after the sync"
    );
}

/// A read sync leaves cached searches cached, and their answers exact: a hit adds the reads
/// synced since it was filled to the counts it holds, as it adds the ones not yet synced.
#[tokio::test]
async fn cached_searches_stay_cached_and_exact_across_read_syncs() {
    let env = Env::start(true, |_| {}).await;
    let (_, accepted) = env.create(json!({"content": "keep me cached"})).await;
    let id = accepted["id"].as_str().expect("id").to_string();
    env.wait_status(&id, "ready", Duration::from_secs(10)).await;
    let mut expected = env.shown_reads(&id).await + 1;
    // The fill is skipped while a sync of the memory is under way (one runs every 50 ms,
    // after each read): search until an answer comes from the cache.
    let mut cached = false;
    for _ in 0..50 {
        let (reads, cache) = env.searched("keep me cached", 0.01).await;
        assert_eq!(reads, expected, "a search answered with a cache {cache}");
        expected += 1;
        if cache == "hit" {
            cached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cached, "no search answer was ever cached");
    let mut syncs = 0;
    for round in 0..3 {
        syncs = env.wait_synced(&id, syncs).await;
        let (reads, cache) = env.searched("keep me cached", 0.01).await;
        assert_eq!(
            cache, "hit",
            "round {round}: the sync left the cached answer"
        );
        assert_eq!(
            reads, expected,
            "round {round}: the synced reads counted once"
        );
        expected += 1;
        assert_eq!(env.shown_reads(&id).await, expected, "round {round}: a GET");
        expected += 1;
    }
    assert!(
        env.access_field(&id, "synced").await >= 3,
        "reads were added to the payload"
    );
}

/// A create, a PATCH and a DELETE acknowledged before a worker runs: the create stores nothing
/// (its delete comes next), so the PATCH finds no point, and is done, not retried until it
/// is dead-lettered (it held the memory's later writes up for seconds).
#[tokio::test]
async fn a_patch_between_a_create_and_its_delete_is_not_retried() {
    let mut env = Env::start(false, |config| {
        config.worker.max_attempts = 4;
        config.worker.retry_backoff = Duration::from_millis(200);
    })
    .await;
    let (_, accepted) = env.create(json!({"content": "short-lived"})).await;
    let id = accepted["id"].as_str().expect("id").to_string();
    let path = format!("/memories/{id}");
    let patched = env
        .request(reqwest::Method::PATCH, &path)
        .json(&json!({"content": "changed"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), 202);
    let deleted = env
        .request(reqwest::Method::DELETE, &path)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 202);
    env.start_worker().await;
    let drained = eventually(Duration::from_millis(500), || async {
        env.stream_len("writes").await == 0
    })
    .await;
    assert!(drained, "the three writes were applied at once");
    assert_eq!(
        env.stream_len("writes:dead").await,
        0,
        "nothing dead-lettered"
    );
    assert_eq!(env.get(&id).await.0, 404);
}

#[tokio::test]
async fn a_job_that_keeps_failing_is_retried_then_dead_lettered_and_marked_failed() {
    let env = Env::start(true, |c| c.worker.max_attempts = 3).await;
    env.openai.set_failing(true);
    let (status, accepted) = env.create(json!({"content": "doomed"})).await;
    assert_eq!(status, 202);
    let id = accepted["id"].as_str().expect("id").to_string();
    let failed = env
        .wait_status(&id, "failed", Duration::from_secs(10))
        .await;
    assert!(
        failed["error"].as_str().expect("error").contains("500"),
        "{failed}"
    );
    assert_eq!(failed["content"], "doomed");
    assert_eq!(env.stream_len("writes:dead").await, 1);
    assert_eq!(env.stream_len("writes").await, 0);
    assert_eq!(env.pending().await, 0);
    let dead: redis::streams::StreamRangeReply = env
        .redis()
        .await
        .xrange_all(format!("{}writes:dead", env.prefix))
        .await
        .expect("xrange");
    let entry = &dead.ids[0];
    let op: String = entry.get("op").expect("op");
    assert!(op.contains(&id));
    let error: String = entry.get("error").expect("error");
    assert!(error.contains("500"));
}

#[tokio::test]
async fn bad_writes_are_rejected_and_nothing_is_queued() {
    let env = Env::start(false, |c| c.limits.max_body_bytes = 4096).await;
    for (body, code) in [
        (json!({"content": ""}), "empty_content"),
        (json!({"content": "x", "type": "dream"}), "invalid_field"),
        (json!({"content": "x", "importance": -0.1}), "out_of_range"),
        (
            json!({"content": "x", "emotionalValence": 0.5}),
            "invalid_field",
        ),
        (
            json!({"content": "x", "context": {"people": "Ann"}}),
            "invalid_field",
        ),
        (json!({"summary": "no content"}), "invalid_field"),
        (json!({"content": "x".repeat(5000)}), "body_too_large"),
    ] {
        let (status, error) = env.create(body).await;
        assert!(status.is_client_error());
        assert_eq!(error["error"]["code"], code);
    }
    let response = env
        .request(
            reqwest::Method::PATCH,
            "/memories/0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e",
        )
        .json(&json!({"importance": 0.5}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 404, "no such memory");
    let response = env
        .request(reqwest::Method::DELETE, "/memories/nope")
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 400);
    assert_eq!(env.stream_len("writes").await, 0);
}

#[tokio::test]
async fn when_redis_is_down_a_create_is_refused_not_acknowledged() {
    let mut env = Env::start(false, |_| {}).await;
    env.redis.kill();
    // A call on the dead connection that times out cannot tell whether Redis got the command
    // (`write_unconfirmed`); a refused connection or an open breaker means nothing can have
    // been stored (`dependency_unavailable`). Either way: 503, never 202.
    let mut codes = Vec::new();
    for attempt in 0..6 {
        let (status, error) = env
            .create(json!({"content": format!("nowhere to go {attempt}")}))
            .await;
        assert_eq!(status, 503, "{error}");
        codes.push(
            error["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        codes
            .iter()
            .all(|code| code == "dependency_unavailable" || code == "write_unconfirmed"),
        "{codes:?}"
    );
    assert_eq!(
        codes.last().map(String::as_str),
        Some("dependency_unavailable")
    );
    env.redis.restart().expect("restart");
    assert_eq!(env.stream_len("writes").await, 0, "nothing was stored");
}

#[tokio::test]
async fn embedded_mode_runs_the_same_pipeline_in_process() {
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(data.path(), None, None, None);
    config.rollout.percent = 100;
    let proxy = start_proxy(config).await.expect("start");
    let http = reqwest::Client::new();
    let base = format!("http://{}", proxy.api_addr);
    let accepted: Value = http
        .post(format!("{base}/memories"))
        .json(&json!({"content": "What a wonderful, happy day at the beach!", "type": "episodic"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let id = accepted["id"].as_str().expect("id").to_string();
    assert!(
        eventually(Duration::from_secs(10), || {
            let http = http.clone();
            let url = format!("{base}/memories/{id}");
            async move {
                let memory: Value = http
                    .get(&url)
                    .send()
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                memory["status"] == "ready"
                    && memory["emotionalValence"].as_f64().is_some_and(|v| v > 0.5)
            }
        })
        .await,
        "ready, with a valence from the local enricher"
    );
    proxy.shutdown().await;
}

// ---- worker processes ----

/// A `memgate worker` process with its own Qdrant Edge directory.
fn spawn_worker(env: &Env, name: &str, claim_idle: &str) -> Child {
    let dir = env.data.path().join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("worker.yaml");
    std::fs::write(
        &config,
        format!(
            "store: {{namespace: test, name: 'store-{pid}'}}\nadminListen: 127.0.0.1:0\n\
             redis: {{url: '{redis}'}}\ncache: {{backend: redis}}\n\
             vectors: {{backend: edge, path: '{edge}'}}\n\
             embeddings: {{provider: openai, model: text-embedding-test, dimensions: 64}}\n\
             enrichment: {{provider: openai, model: gpt-test}}\n\
             openai: {{baseUrl: '{openai}', apiKey: sk-test}}\n\
             worker: {{claimIdle: {claim_idle}, retryBackoff: 20ms, embeddingBatchWindow: 5ms, drainTimeout: 20s}}\n\
             upstream: {{url: 'http://127.0.0.1:9'}}\n",
            pid = std::process::id(),
            redis = env.redis.url(),
            edge = dir.join("edge").display(),
            openai = env.openai.base_url(),
        ),
    )
    .expect("config");
    Command::new(memgate_binary())
        .args(["worker", "--config"])
        .arg(&config)
        .env("MEMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memgate worker starts")
}

#[tokio::test]
async fn a_killed_workers_job_is_finished_by_another() {
    let env = Env::start(false, |_| {}).await;
    env.openai.set_delay(Duration::from_millis(1500));
    let mut first = spawn_worker(&env, "first", "1s");
    let (_, accepted) = env
        .create(json!({"content": "survive a crash", "summary": "s"}))
        .await;
    let id = accepted["id"].as_str().expect("id").to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.pending().await == 1
        })
        .await,
        "the first worker took the job"
    );
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    env.openai.set_delay(Duration::ZERO);

    let mut second = spawn_worker(&env, "second", "1s");
    env.wait_status(&id, "ready", Duration::from_secs(15)).await;
    assert_eq!(env.pending().await, 0, "acknowledged");
    assert_eq!(env.stream_len("writes").await, 0);
    assert_eq!(env.stream_len("writes:dead").await, 0);
    second.kill().expect("kill");
    let _ = second.wait();
}

#[tokio::test]
async fn sigterm_lets_a_worker_finish_its_jobs() {
    let env = Env::start(false, |_| {}).await;
    env.openai.set_delay(Duration::from_millis(800));
    let mut worker = spawn_worker(&env, "draining", "60s");
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, accepted) = env
            .create(json!({"content": format!("in flight {i}")}))
            .await;
        ids.push(accepted["id"].as_str().expect("id").to_string());
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.pending().await == 3
        })
        .await,
        "the worker took all three"
    );
    let pid = worker.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "clean exit after draining: {exit:?}");
    for id in &ids {
        let (_, memory) = env.get(id).await;
        assert_eq!(memory["status"], "ready", "{memory}");
    }
    assert_eq!(env.pending().await, 0);
    assert!(env.worker.is_none());
}

/// What a plain HTTP/1.1 client (as Python's `http.client`) does with a body over the limit:
/// sends all of it, then reads the answer. It must read a `413`, not a reset connection.
fn post_whole_body_then_read(
    addr: std::net::SocketAddr,
    body_len: usize,
) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "POST /memories HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {body_len}\r\nx-user-id: alice\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        stream.write_all(&chunk[..n])?;
        sent += n;
    }
    let mut answer = vec![0u8; 512];
    let read = stream.read(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer[..read]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_a_413_the_client_can_read() {
    let env = Env::start(false, |config| config.limits.max_body_bytes = 1024 * 1024).await;
    let addr = env.proxy.api_addr;
    for attempt in 1..=5 {
        let answer = tokio::task::spawn_blocking(move || {
            post_whole_body_then_read(addr, 1024 * 1024 + 512 * 1024)
        })
        .await
        .expect("join");
        match answer {
            Ok(text) => assert!(
                text.starts_with("HTTP/1.1 413"),
                "attempt {attempt}: {text}"
            ),
            Err(error) => panic!("attempt {attempt}: the client could not send its body and read the answer: {error}"),
        }
    }
    assert_eq!(env.stream_len("writes").await, 0, "nothing queued");
}

/// Redis with a small `maxmemory` (`volatile-lru`, as memgate's managed Redis runs), filled by
/// creates while no worker drains them: pending records have no TTL, so nothing can be
/// evicted and Redis refuses writes. The refusals are clear 503s, every create acknowledged
/// before them stays readable, reads and searches keep answering, and once Redis has room
/// again a worker applies every acknowledged write.
#[tokio::test]
async fn a_full_redis_refuses_writes_with_503_and_loses_nothing_acknowledged() {
    let redis = RedisServer::start().expect("redis-server");
    let mut admin = redis.client().await.expect("redis client");
    for (setting, value) in [("maxmemory", "3mb"), ("maxmemory-policy", "volatile-lru")] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(setting)
            .arg(value)
            .query_async::<()>(&mut admin)
            .await
            .expect("CONFIG SET");
    }
    let openai = FakeOpenAi::start(64).await.expect("openai");
    let data = tempfile::tempdir().expect("dir");
    let config = test_config(
        &data.path().join("proxy"),
        Some(redis.url()),
        Some(openai.base_url()),
        None,
    );
    let (proxy, backends) = memgate_testkit::start_proxy_with_backends(config.clone())
        .await
        .expect("start");
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", proxy.api_addr);
    let filler = "the quick brown fox jumps over the lazy dog ".repeat(80);

    let mut acknowledged = Vec::new();
    let mut refusals = Vec::new();
    for i in 0..20_000 {
        let content = format!("memory {i}: {filler}");
        let response = http
            .post(url("/memories"))
            .header("x-user-id", "alice")
            .json(&json!({"content": content, "type": "episodic"}))
            .send()
            .await
            .expect("create");
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.expect("json");
        if status == 202 {
            acknowledged.push((body["id"].as_str().expect("id").to_string(), content));
        } else {
            refusals.push((status, body, retry_after));
            if refusals.len() == 20 {
                break;
            }
        }
    }
    assert!(
        !refusals.is_empty(),
        "Redis never filled: {} creates acknowledged",
        acknowledged.len()
    );
    for (status, body, _) in &refusals {
        assert_eq!(*status, 503, "a full Redis is a 503: {body}");
        assert_eq!(body["error"]["code"], "cache_full", "{body}");
    }
    assert!(
        refusals.iter().all(|(_, _, retry)| retry.is_some()),
        "refusals say when to retry"
    );
    eprintln!(
        "{} creates acknowledged before Redis (maxmemory 3mb) refused; {} refusals",
        acknowledged.len(),
        refusals.len()
    );

    // Searches and reads keep answering (searches first: their cache fills fail for want of
    // room, which must not make the proxy stop reading Redis, where the pending records are).
    for query in ["memory 1", "memory 2", "memory 3", "lazy dog", "quick fox"] {
        let search = http
            .post(url("/memories/search"))
            .header("x-user-id", "alice")
            .json(&json!({"query": query}))
            .send()
            .await
            .expect("search");
        assert_eq!(search.status(), 200, "searches keep answering");
    }
    let step = (acknowledged.len() / 50).max(1);
    for (id, content) in acknowledged.iter().step_by(step) {
        let response = http
            .get(url(&format!("/memories/{id}")))
            .header("x-user-id", "alice")
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "an acknowledged create reads back");
        assert!(
            response.headers().get("x-memgate-degraded").is_none(),
            "read from Redis, not around it"
        );
        let memory: Value = response.json().await.expect("json");
        assert_eq!(memory["content"], content.as_str());
    }

    // Room again: a worker applies every acknowledged create.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async::<()>(&mut admin)
        .await
        .expect("CONFIG SET");
    let worker = memgate::app::start_worker_with(config, backends)
        .await
        .expect("worker");
    let all_ready = eventually(Duration::from_secs(120), || {
        let http = http.clone();
        let ids: Vec<String> = acknowledged.iter().map(|(id, _)| id.clone()).collect();
        let url = url("/memories/");
        async move {
            for id in ids {
                let Ok(response) = http
                    .get(format!("{url}{id}"))
                    .header("x-user-id", "alice")
                    .send()
                    .await
                else {
                    return false;
                };
                let memory: Value = response.json().await.unwrap_or_default();
                if memory["status"] != "ready" {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(all_ready, "every acknowledged create was applied");
    worker.shutdown().await;
    proxy.shutdown().await;
}

/// `memgate serve` with Redis and no separate workers configured applies its writes itself:
/// an acknowledged write does not wait for a worker nobody started.
#[tokio::test]
async fn serve_applies_writes_itself_unless_workers_are_separate() {
    let env = Env::start(false, |config| config.worker.separate = false).await;
    let (status, accepted) = env
        .create(json!({"content": "applied by the proxy itself", "summary": "s"}))
        .await;
    assert_eq!(status, 202);
    let id = accepted["id"].as_str().expect("id").to_string();
    env.wait_status(&id, "ready", Duration::from_secs(10)).await;
}
