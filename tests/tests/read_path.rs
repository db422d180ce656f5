//! The read path end to end: a memgate proxy with a real `redis-server`, Qdrant Edge, a local
//! OpenAI-compatible server and a stand-in legacy service.

use std::time::Duration;

use memgate::config::{Config, ScopeConfig};
use memgate_testkit::{eventually, scrape_metrics, FakeUpstream, Legacy, RedisServer, TestStack};
use redis::AsyncCommands;
use serde_json::{json, Value};

memgate_testkit::stack_env!(Env);

impl Env {
    async fn start(adjust: impl FnOnce(&mut Config) + 'static) -> Env {
        Env(TestStack::builder()
            .legacy(Legacy::Fake)
            .configure(adjust)
            .start()
            .await)
    }

    /// A fast-path request (forced), as user `alice`.
    fn fast(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("x-memgate-route", "fast")
            .header("x-user-id", "alice")
    }

    /// Creates a memory and waits until the worker has stored it (watching Redis, so the
    /// wait itself reads nothing through the API).
    async fn create(&self, mut body: Value) -> String {
        if body.get("type").is_none() {
            body["type"] = json!("episodic");
        }
        let response = self
            .fast(reqwest::Method::POST, "/memories")
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.expect("json");
        assert_eq!(accepted["status"], "processing");
        let id = accepted["id"].as_str().expect("id").to_string();
        let redis = self.redis().await;
        let pattern = format!("{}*mem:{id}", self.prefix);
        let ready = eventually(Duration::from_secs(10), || {
            let mut redis = redis.clone();
            let pattern = pattern.clone();
            async move {
                let keys: Vec<String> = redis.keys(&pattern).await.unwrap_or_default();
                let Some(key) = keys.first() else {
                    return false;
                };
                let record: Option<String> = redis.get(key).await.unwrap_or(None);
                record.is_some_and(|r| r.contains("\"status\":\"ready\""))
            }
        })
        .await;
        assert!(ready, "memory {id} became ready");
        // Its association job (queued with the ready record) is done too: no later write moves
        // the search generation under the test.
        let assoc = format!("{}assoc", self.prefix);
        let associated = eventually(Duration::from_secs(10), || {
            let mut redis = redis.clone();
            let assoc = assoc.clone();
            async move { redis.xlen::<_, u64>(&assoc).await.unwrap_or(1) == 0 }
        })
        .await;
        assert!(associated, "memory {id} went through association discovery");
        id
    }

    async fn get(&self, id: &str) -> (u16, String, Value) {
        let response = self
            .fast(reqwest::Method::GET, &format!("/memories/{id}"))
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        let cache = header(&response, "x-memgate-cache");
        (status, cache, response.json().await.expect("json"))
    }

    async fn search(&self, body: Value) -> (u16, String, Value) {
        let response = self
            .fast(reqwest::Method::POST, "/memories/search")
            .json(&body)
            .send()
            .await
            .expect("search");
        let status = response.status().as_u16();
        let cache = header(&response, "x-memgate-cache");
        (status, cache, response.json().await.expect("json"))
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis.client().await.expect("redis client")
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn ids(results: &Value) -> Vec<String> {
    results["memories"]
        .as_array()
        .expect("memories")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn get_goes_l1_then_redis_then_the_vector_store() {
    let env = Env::start(|c| c.cache.l1.ttl = Duration::from_millis(100)).await;
    let id = env
        .create(json!({"content": "We drank coffee in Paris", "importance": 0.8}))
        .await;
    let key = format!("{}mem:{id}", env.prefix);
    let mut redis = env.redis().await;
    let stored: Option<String> = redis.get(&key).await.expect("get");
    assert!(stored.is_some(), "create caches the memory in Redis");

    let (status, cache, memory) = env.get(&id).await;
    assert_eq!((status, cache.as_str()), (200, "hit"));
    assert_eq!(memory["content"], "We drank coffee in Paris");

    // Out of L1 and Redis: the vector store answers, and both caches are filled again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _: () = redis.del(&key).await.expect("del");
    let (status, cache, memory) = env.get(&id).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(memory["importance"], 0.8);
    assert!(
        eventually(Duration::from_secs(2), || {
            let mut redis = redis.clone();
            let key = key.clone();
            async move { redis.exists::<_, bool>(&key).await.unwrap_or(false) }
        })
        .await,
        "a miss fills Redis"
    );
    let ttl: i64 = redis.pttl(&key).await.expect("pttl");
    assert!(
        ttl > 3_500_000 && ttl <= 3_600_000,
        "memoryTtl of 1h, got {ttl} ms"
    );

    // Out of L1 only: Redis answers.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, cache, _) = env.get(&id).await;
    assert_eq!(cache, "hit");

    let (status, _, body) = env.get("0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

/// How many times Redis ran `command` (`INFO commandstats`).
async fn calls(redis: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// An L1 hit asks Redis nothing, not even the read counts, and still shows every read before
/// it: its own reads counted here, whether the flusher (every 100 ms) has written them to
/// Redis since the record was read or not.
#[tokio::test]
async fn an_l1_hit_asks_redis_nothing_and_counts_every_read() {
    // No read syncs: the worker's would read records and counts too.
    let env = Env::start(|c| c.worker.access_sync_interval = Duration::from_secs(3600)).await;
    let id = env.create(json!({"content": "read me from memory"})).await;
    let (_, first, memory) = env.get(&id).await;
    assert_eq!(first, "hit", "from the Redis record, into L1");
    let mut expected = memory["accessCount"].as_u64().expect("accessCount") + 1;
    let mut redis = env.redis().await;
    let reads_before = [
        calls(&mut redis, "get").await,
        calls(&mut redis, "hmget").await,
    ];
    for round in 0..12 {
        let (status, cache, memory) = env.get(&id).await;
        assert_eq!((status, cache.as_str()), (200, "hit"));
        assert_eq!(memory["accessCount"], expected, "read {round}");
        expected += 1;
        if round % 3 == 2 {
            // Past a flush: those reads are in Redis now, and still counted once.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    let reads_after = [
        calls(&mut redis, "get").await,
        calls(&mut redis, "hmget").await,
    ];
    // Redis counts the commands its scripts run too.
    assert_eq!(reads_before, reads_after, "GET, HMGET");
    let flushed = eventually(Duration::from_secs(2), || {
        let mut redis = redis.clone();
        let key = format!("{}access:{id}", env.prefix);
        async move { redis.hget::<_, _, u64>(&key, "count").await.ok() == Some(13) }
    })
    .await;
    assert!(flushed, "13 reads reached Redis");
}

#[tokio::test]
async fn cached_memories_expire_after_memory_ttl() {
    let env = Env::start(|c| {
        c.cache.memory_ttl = Duration::from_millis(300);
        c.cache.l1.ttl = Duration::from_millis(50);
    })
    .await;
    let id = env.create(json!({"content": "short lived"})).await;
    let key = format!("{}mem:{id}", env.prefix);
    let mut redis = env.redis().await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        !redis.exists::<_, bool>(&key).await.expect("exists"),
        "the Redis entry expired"
    );
    let (status, cache, _) = env.get(&id).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
}

#[tokio::test]
async fn search_caches_results_and_embeddings_and_a_write_invalidates() {
    let env = Env::start(|c| c.cache.search_ttl = Duration::from_millis(600)).await;
    let paris = env
        .create(json!({"content": "We drank coffee in Paris last spring"}))
        .await;
    env.create(json!({"content": "The quarterly tax report is due in April"}))
        .await;
    let calls_after_creates = env.openai.embedding_calls();

    let query = json!({"query": "coffee in Paris", "limit": 5});
    let (status, cache, first) = env.search(query.clone()).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    assert_eq!(ids(&first)[0], paris, "the nearest memory comes first");
    assert!(
        first["memories"][0]["score"].as_f64().expect("score")
            > first["memories"][1]["score"].as_f64().expect("score")
    );
    assert_eq!(env.openai.embedding_calls(), calls_after_creates + 1);

    let (_, cache, second) = env.search(query.clone()).await;
    assert_eq!(cache, "hit");
    // The cached answer, with the reads of the first search counted.
    let counts = |answer: &Value| -> Vec<u64> {
        answer["memories"]
            .as_array()
            .expect("memories")
            .iter()
            .map(|memory| memory["accessCount"].as_u64().expect("accessCount"))
            .collect()
    };
    assert_eq!(
        counts(&second),
        counts(&first).iter().map(|n| n + 1).collect::<Vec<_>>()
    );
    let without_reads = |answer: &Value| -> Value {
        let mut answer = answer.clone();
        for memory in answer["memories"].as_array_mut().expect("memories") {
            let memory = memory.as_object_mut().expect("memory");
            memory.remove("accessCount");
            memory.remove("lastAccessed");
        }
        answer
    };
    assert_eq!(without_reads(&first), without_reads(&second));

    // The embedding is in Redis as little-endian f32 bytes.
    let mut redis = env.redis().await;
    let keys: Vec<String> = redis
        .keys(format!("{}emb:text-embedding-test:*", env.prefix))
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1);
    let bytes: Vec<u8> = redis.get(&keys[0]).await.expect("get");
    assert_eq!(bytes.len(), 64 * 4);

    // A write bumps the generation: the next search misses and sees the new memory, while the
    // query's embedding still comes from the cache (no new provider call for it).
    let generation: u64 = redis
        .get(format!("{}search:scopegen", env.prefix))
        .await
        .expect("gen");
    let berlin = env
        .create(json!({"content": "Coffee in Paris again, then Berlin"}))
        .await;
    let generation_after: u64 = redis
        .get(format!("{}search:scopegen", env.prefix))
        .await
        .expect("gen");
    assert!(
        generation_after > generation,
        "the write moved the search generation"
    );
    let calls = env.openai.embedding_calls();
    let (_, cache, third) = env.search(query.clone()).await;
    assert_eq!(cache, "miss");
    assert!(ids(&third).contains(&berlin));
    assert_eq!(
        env.openai.embedding_calls(),
        calls,
        "the query embedding was cached"
    );

    // Results expire after searchTtl.
    let (_, cache, _) = env.search(query.clone()).await;
    assert_eq!(cache, "hit");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, cache, _) = env.search(query).await;
    assert_eq!(cache, "miss");
}

#[tokio::test]
async fn search_filters_and_threshold_apply() {
    let env = Env::start(|_| {}).await;
    let semantic = env
        .create(json!({"content": "Paris is the capital of France", "type": "semantic", "importance": 0.9}))
        .await;
    let sad = env
        .create(
            json!({"content": "A sad rainy day in Paris", "type": "episodic", "importance": 0.3}),
        )
        .await;

    let (_, _, results) = env
        .search(json!({"query": "Paris", "type": "semantic"}))
        .await;
    assert_eq!(ids(&results), vec![semantic.clone()]);
    let (_, _, results) = env
        .search(json!({"query": "Paris", "minImportance": 0.5}))
        .await;
    assert_eq!(ids(&results), vec![semantic.clone()]);
    let (_, _, results) = env
        .search(json!({"query": "Paris", "emotionalRange": {"min": -1, "max": -0.5}}))
        .await;
    assert_eq!(ids(&results), vec![sad.clone()]);
    let (_, _, results) = env
        .search(json!({"query": "Paris", "dateRange": {"start": "1999-01-01", "end": "2000-01-01T00:00:00Z"}}))
        .await;
    assert!(ids(&results).is_empty());
    let (_, _, results) = env
        .search(json!({"query": "Paris", "dateRange": {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01"}}))
        .await;
    assert_eq!(ids(&results).len(), 2);
    let (_, _, results) = env.search(json!({"query": "Paris", "limit": 1})).await;
    assert_eq!(ids(&results).len(), 1);
    let (_, _, results) = env
        .search(json!({"query": "Paris", "similarityThreshold": 0.99}))
        .await;
    assert!(ids(&results).is_empty());
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_nothing_is_written_or_forwarded() {
    let env = Env::start(|c| c.limits.max_body_bytes = 2048).await;
    let mut redis = env.redis().await;
    let writes = format!("{}writes", env.prefix);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut redis = redis.clone();
            let writes = writes.clone();
            async move { redis.exists::<_, bool>(&writes).await.unwrap_or(false) }
        })
        .await,
        "the worker prepared the queue"
    );
    let writes = format!("{}writes", env.prefix);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut redis = redis.clone();
            let writes = writes.clone();
            async move { redis.exists::<_, bool>(&writes).await.unwrap_or(false) }
        })
        .await,
        "the worker prepared the queue"
    );
    // Workers' heartbeats (`{stream}:consumers`) come and go on their own: not request data.
    let data_keys = |mut keys: Vec<String>| {
        keys.retain(|key| !key.ends_with(":consumers"));
        keys.sort();
        keys
    };
    let keys_before = data_keys(redis.keys(format!("{}*", env.prefix)).await.expect("keys"));

    let cases: Vec<(reqwest::Method, &str, String, u16, &str)> = vec![
        (
            reqwest::Method::POST,
            "/memories/search",
            "{not json".into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::POST,
            "/memories",
            "{\"content\": ".into(),
            400,
            "malformed_json",
        ),
        (
            reqwest::Method::POST,
            "/memories/search",
            json!({"query": "x".repeat(4000)}).to_string(),
            413,
            "body_too_large",
        ),
        (
            reqwest::Method::POST,
            "/memories",
            json!({"content": "y".repeat(4000), "type": "semantic"}).to_string(),
            413,
            "body_too_large",
        ),
        (
            reqwest::Method::GET,
            "/memories/not-a-uuid",
            String::new(),
            400,
            "invalid_id",
        ),
        (
            reqwest::Method::POST,
            "/memories/search",
            json!({"query": "x", "limit": 0}).to_string(),
            400,
            "invalid_limit",
        ),
        (
            reqwest::Method::POST,
            "/memories/search",
            json!({"query": "x", "limit": 51}).to_string(),
            400,
            "invalid_limit",
        ),
        (
            reqwest::Method::POST,
            "/memories/search",
            json!({"query": "x", "similarityThreshold": 1.5}).to_string(),
            400,
            "invalid_threshold",
        ),
        (
            reqwest::Method::POST,
            "/memories/search",
            json!({"query": "x", "similarityThreshold": -0.5}).to_string(),
            400,
            "invalid_threshold",
        ),
        (
            reqwest::Method::POST,
            "/memories/search",
            json!({"query": "x", "dateRange": {"start": "yesterday", "end": "2025-01-01"}})
                .to_string(),
            400,
            "invalid_date",
        ),
        (
            reqwest::Method::POST,
            "/memories/search",
            json!({"query": "x", "limitt": 3}).to_string(),
            400,
            "invalid_field",
        ),
        (
            reqwest::Method::POST,
            "/memories",
            json!({"content": "x", "type": "semantic", "importance": 7}).to_string(),
            400,
            "out_of_range",
        ),
        (
            reqwest::Method::POST,
            "/memories",
            json!({"content": "", "type": "semantic"}).to_string(),
            400,
            "empty_content",
        ),
        (
            reqwest::Method::POST,
            "/memories",
            json!({"content": "x", "type": "dreamy"}).to_string(),
            400,
            "invalid_field",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let response = env
            .fast(method.clone(), path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status().as_u16(),
            status,
            "{method} {path} -> {code}"
        );
        assert_eq!(header(&response, "content-type"), "application/json");
        let error: Value = response.json().await.expect("json error");
        assert_eq!(error["error"]["code"], code, "{method} {path}");
        assert!(error["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A chunked body (no Content-Length) over the limit is refused while reading.
    let chunks =
        futures::stream::iter([vec![b'a'; 1500], vec![b'b'; 1500]].map(Ok::<_, std::io::Error>));
    let response = env
        .fast(reqwest::Method::POST, "/memories/search")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 413);
    let response = env
        .http
        .get(env.url("/memories/x"))
        .header("x-memgate-route", "sideways")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);

    assert!(
        env.upstream().received().is_empty(),
        "nothing was forwarded"
    );
    assert_eq!(env.openai.embedding_calls(), 0, "nothing was embedded");
    assert_eq!(env.openai.chat_calls(), 0, "nothing was enriched");
    let queued: u64 = redis.xlen(&writes).await.expect("xlen");
    assert_eq!(queued, 0, "nothing was queued");
    assert_eq!(env.openai.chat_calls(), 0, "nothing was enriched");
    let queued: u64 = redis.xlen(&writes).await.expect("xlen");
    assert_eq!(queued, 0, "nothing was queued");
    let keys_after = data_keys(redis.keys(format!("{}*", env.prefix)).await.expect("keys"));
    assert_eq!(keys_before, keys_after, "nothing was written");
    let metrics = scrape_metrics(env.proxy.admin_addr).await;
    assert!(
        metrics.contains("memgate_rejected_requests_total{code=\"invalid_limit\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn legacy_requests_are_forwarded_unchanged() {
    let env = Env::start(|c| c.rollout.percent = 0).await;
    let response = env
        .http
        .post(env.url("/memories/search?debug=1"))
        .header("x-user-id", "alice")
        .header("x-forwarded-for", "10.0.0.7")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "drop me")
        .header("content-type", "application/json")
        .body("{\"query\": \"anything at all, even invalid: [\"")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-memgate-path"), "legacy");
    assert_eq!(header(&response, "x-legacy-service"), "yes");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["legacy"], true);

    let unknown = env
        .http
        .delete(env.url("/admin/reindex"))
        .send()
        .await
        .expect("request");
    assert_eq!(header(&unknown, "x-memgate-path"), "legacy");

    let received = env.upstream().received();
    assert_eq!(received.len(), 2);
    let search = &received[0];
    assert_eq!(search.method, "POST");
    assert_eq!(search.path_and_query, "/memories/search?debug=1");
    assert_eq!(
        search.body.as_ref(),
        b"{\"query\": \"anything at all, even invalid: [\""
    );
    assert_eq!(search.headers["x-user-id"], "alice");
    assert_eq!(search.headers["x-forwarded-for"], "10.0.0.7, 127.0.0.1");
    assert!(
        !search.headers.contains_key("x-secret-hop"),
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(
        search.headers["host"],
        env.upstream().url().trim_start_matches("http://")
    );
    assert_eq!(received[1].path_and_query, "/admin/reindex");

    // Even on the fast path, routes the sidecar does not serve go to legacy.
    let other = env
        .fast(reqwest::Method::GET, "/stats")
        .send()
        .await
        .expect("request");
    assert_eq!(header(&other, "x-memgate-path"), "legacy");
    assert_eq!(env.upstream().received().len(), 3);
}

#[tokio::test]
async fn routing_is_sticky_per_user_and_can_be_forced() {
    let env = Env::start(|c| c.rollout.percent = 30).await;
    let mut fast = 0;
    for i in 0..300 {
        let user = format!("user-{i}");
        let expected = if memgate::front::routing::bucket(user.as_bytes()) < 30 {
            "fast"
        } else {
            "legacy"
        };
        for _ in 0..2 {
            let response = env
                .http
                .get(env.url("/memories/0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e"))
                .header("x-user-id", &user)
                .send()
                .await
                .expect("request");
            assert_eq!(header(&response, "x-memgate-path"), expected, "{user}");
        }
        fast += usize::from(expected == "fast");
    }
    assert!(
        (60..=120).contains(&fast),
        "about 30% of 300 users on fast, got {fast}"
    );
    let forced = env
        .http
        .get(env.url("/memories/0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e"))
        .header("x-memgate-route", "legacy")
        .send()
        .await
        .expect("request");
    assert_eq!(header(&forced, "x-memgate-path"), "legacy");
    assert_eq!(header(&forced, "x-memgate-cache"), "bypass");
}

#[tokio::test]
async fn the_rollout_changes_when_the_config_file_does() {
    let redis = RedisServer::start().expect("redis");
    let upstream = FakeUpstream::start().await.expect("upstream");
    let data = tempfile::tempdir().expect("dir");
    let file = data.path().join("memgate.yaml");
    let write = |percent: u8| {
        std::fs::write(
            &file,
            format!(
                "listen: 127.0.0.1:0\nadminListen: 127.0.0.1:0\nupstream: {{url: '{}'}}\nredis: {{url: '{}'}}\n\
                 vectors: {{backend: edge, path: '{}'}}\nembeddings: {{provider: hashing, dimensions: 32}}\n\
                 rollout: {{percent: {percent}}}\nreload: {{interval: 50ms}}\n",
                upstream.url(),
                redis.url(),
                data.path().join("edge").display()
            ),
        )
        .expect("write")
    };
    write(0);
    let sources = memgate::config::ConfigSources {
        file: Some(file.clone()),
        ..Default::default()
    };
    let config = memgate::config::load(&sources).expect("valid");
    let proxy = memgate::app::start(config, Some(sources))
        .await
        .expect("start");
    let http = reqwest::Client::new();
    let path_of = || async {
        let response = http
            .get(format!("http://{}/things", proxy.api_addr))
            .send()
            .await
            .expect("request");
        header(&response, "x-memgate-path")
    };
    assert_eq!(path_of().await, "legacy");
    write(100);
    let metrics_url = format!("http://{}/metrics", proxy.admin_addr);
    assert!(
        eventually(Duration::from_secs(3), || async {
            let metrics = http
                .get(&metrics_url)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            metrics.contains("memgate_rollout_percent 100")
        })
        .await
    );
    // /things is not a fast-path route, so it still goes to legacy; a GET of a memory does not.
    let response = http
        .get(format!(
            "http://{}/memories/0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e",
            proxy.api_addr
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(header(&response, "x-memgate-path"), "fast");
    assert_eq!(response.status(), 404);
    proxy.shutdown().await;
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let env = Env::start(|c| {
        c.scope = Some(ScopeConfig {
            header: "x-user-id".into(),
            field: "userId".into(),
        });
    })
    .await;
    let alice = env
        .create(json!({"content": "alice likes green tea"}))
        .await;
    let as_bob = |method: reqwest::Method, path: &str| {
        env.http
            .request(method, env.url(path))
            .header("x-memgate-route", "fast")
            .header("x-user-id", "bob")
    };
    let (status, _, memory) = env.get(&alice).await;
    assert_eq!(status, 200);
    assert_eq!(
        memory["userId"], "alice",
        "the tenant is written into its field"
    );

    let response = as_bob(reqwest::Method::GET, &format!("/memories/{alice}"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    let response = as_bob(reqwest::Method::POST, "/memories/search")
        .json(&json!({"query": "green tea"}))
        .send()
        .await
        .expect("search");
    let results: Value = response.json().await.expect("json");
    assert!(
        ids(&results).is_empty(),
        "bob sees none of alice's memories"
    );
    let (_, _, results) = env.search(json!({"query": "green tea"})).await;
    assert_eq!(ids(&results), vec![alice.clone()]);

    let response = env
        .http
        .get(env.url(&format!("/memories/{alice}")))
        .header("x-memgate-route", "fast")
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["code"], "missing_scope");

    let mut redis = env.redis().await;
    let keys: Vec<String> = redis
        .keys(format!("{}*mem:*", env.prefix))
        .await
        .expect("keys");
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.contains("t=alice:")),
        "memory keys carry the tenant: {keys:?}"
    );
    let keys: Vec<String> = redis
        .keys(format!("{}*search:*", env.prefix))
        .await
        .expect("keys");
    assert!(
        keys.iter().any(|k| k.contains("t=bob:")) && keys.iter().any(|k| k.contains("t=alice:")),
        "{keys:?}"
    );
}

/// The search cache's generation is per tenant: one tenant's writes retire its own cached
/// searches, never another's.
#[tokio::test]
async fn one_tenants_writes_leave_another_tenants_cached_searches() {
    let env = Env::start(|c| {
        c.scope = Some(ScopeConfig {
            header: "x-user-id".into(),
            field: "userId".into(),
        });
    })
    .await;
    env.create(json!({"content": "alice likes green tea"}))
        .await;
    let bob_search = || async {
        let response = env
            .http
            .post(env.url("/memories/search"))
            .header("x-memgate-route", "fast")
            .header("x-user-id", "bob")
            .json(&json!({"query": "green tea"}))
            .send()
            .await
            .expect("search");
        header(&response, "x-memgate-cache")
    };
    assert_eq!(bob_search().await, "miss");
    assert_eq!(bob_search().await, "hit");
    let (_, first, _) = env.search(json!({"query": "green tea"})).await;
    assert_eq!(first, "miss");
    let (_, cached, _) = env.search(json!({"query": "green tea"})).await;
    assert_eq!(cached, "hit");

    env.create(json!({"content": "alice also likes jasmine tea"}))
        .await;
    assert_eq!(
        bob_search().await,
        "hit",
        "alice's write left bob's cached search alone"
    );
    let (_, after, _) = env.search(json!({"query": "green tea"})).await;
    assert_eq!(after, "miss", "alice's write retired her own cached search");
}

#[tokio::test]
async fn reads_are_counted_in_redis_in_batches() {
    let env = Env::start(|_| {}).await;
    let id = env.create(json!({"content": "count my reads"})).await;
    for _ in 0..5 {
        env.get(&id).await;
    }
    env.search(json!({"query": "count my reads"})).await;
    let mut redis = env.redis().await;
    let access_key = format!("{}access:{id}", env.prefix);
    assert!(
        eventually(Duration::from_secs(2), || {
            let mut redis = redis.clone();
            let key = access_key.clone();
            async move {
                redis
                    .hget::<_, _, Option<u64>>(&key, "count")
                    .await
                    .ok()
                    .flatten()
                    == Some(6)
            }
        })
        .await,
        "5 gets and 1 search result are 6 reads"
    );
    let last: String = redis.hget(&access_key, "last").await.expect("last");
    assert!(last.ends_with('Z'));
    let score: f64 = redis
        .zscore(format!("{}popular", env.prefix), &id)
        .await
        .expect("zscore");
    assert_eq!(score, 6.0);
}

#[tokio::test]
async fn admin_endpoints_report_metrics_health_and_readiness() {
    let mut env = Env::start(|_| {}).await;
    let id = env.create(json!({"content": "metrics please"})).await;
    env.get(&id).await;
    let response = env
        .http
        .get(env.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), 200);
    let response = env
        .http
        .get(env.admin_url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), 200);

    let metrics = scrape_metrics(env.proxy.admin_addr).await;
    for expected in [
        "memgate_requests_total{cache=\"hit\",op=\"get\",path=\"fast\",status=\"2xx\"} 1",
        "memgate_request_duration_seconds_bucket{cache=\"hit\",op=\"get\",path=\"fast\"",
        "memgate_dependency_duration_seconds_count{dependency=\"redis\",op=\"submit\"} 1",
        "memgate_write_ack_seconds_count 1",
        "memgate_rollout_percent 50",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }

    let openapi: Value = env
        .http
        .get(env.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert!(openapi["paths"]["/memories/search"]["post"].is_object());

    env.redis.kill();
    let response = env
        .http
        .get(env.admin_url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["ready"], false);
    assert_ne!(body["checks"]["redis"], "ok");
    env.redis.restart().expect("restart");
    let http = env.http.clone();
    let url = env.admin_url("/readyz");
    assert!(
        eventually(Duration::from_secs(5), || {
            let http = http.clone();
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false)
            }
        })
        .await,
        "ready again once Redis is back"
    );
}
