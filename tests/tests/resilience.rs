//! Faults for real, under a steady request stream: `redis-server` killed and restarted, the
//! legacy service stopped and started, the OpenAI-compatible server hanging and then answering
//! 500s. For each: answers keep coming within the timeouts, degraded answers say so, the
//! dependency's breaker opens and closes again, no acknowledged write is lost, and the proxy
//! recovers by itself once the dependency is back.
//!
//! Each fault test prints one row of the fault table (run with `--nocapture` to see them).

use std::process::Command;
use std::time::{Duration, Instant};

use memgate::config::Config;
use memgate_testkit::load::{
    between, latency_quantile, recovered_after, status_mix, LoadOp, Sample, SteadyLoad,
};
use memgate_testkit::{
    metric_value, scrape_metrics, start_proxy, test_config, FakeOpenAi, FakeUpstream, Legacy,
    MemgateProcess, RedisServer, TestStack,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one request every 20 ms (50/s).
const INTERVAL: Duration = Duration::from_millis(20);

memgate_testkit::stack_env!(Env);

/// Breakers that open after 3 failures (and probe as by default: after 250 ms, doubling up to
/// 2 s), a search that waits 300 ms for an embedding, and a worker that retries for long enough
/// to outlast the faults.
fn fault_config(data: &std::path::Path, redis: String, openai: String, upstream: String) -> Config {
    let mut config = test_config(data, Some(redis), Some(openai), Some(upstream));
    fault_settings(&mut config);
    config
}

/// [`fault_config`]'s settings.
fn fault_settings(config: &mut Config) {
    config.rollout.percent = 100;
    config.circuit_breaker.failure_threshold = 3;
    config.fallback.embedding_timeout = Duration::from_millis(300);
    config.redis.timeout = Duration::from_millis(300);
    config.openai.timeout = Duration::from_secs(1);
    config.worker.max_attempts = 9;
    config.worker.retry_backoff = Duration::from_millis(100);
}

impl Env {
    async fn start() -> Env {
        Env(TestStack::builder()
            .legacy(Legacy::Fake)
            .configure(fault_settings)
            .start()
            .await)
    }

    fn base(&self) -> String {
        format!("http://{}", self.proxy.api_addr)
    }

    async fn create_ready(&self, content: &str, tags: &[&str]) -> String {
        let accepted: Value = self
            .http
            .post(format!("{}/memories", self.base()))
            .header("x-user-id", "alice")
            .json(&json!({ "content": content, "type": "semantic", "context": {"tags": tags} }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        let id = accepted["id"].as_str().expect("id").to_string();
        assert_eq!(
            self.wait_ready(std::slice::from_ref(&id), Duration::from_secs(10))
                .await,
            0
        );
        id
    }

    async fn status_of(&self, id: &str) -> Option<String> {
        let response = self
            .http
            .get(format!("{}/memories/{id}", self.base()))
            .header("x-memgate-route", "fast")
            .send()
            .await
            .ok()?;
        let memory: Value = response.json().await.ok()?;
        memory["status"].as_str().map(str::to_string)
    }

    /// How many of `ids` are not `ready` within `within`: acknowledged writes lost.
    async fn wait_ready(&self, ids: &[String], within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        let mut waiting: Vec<String> = ids.to_vec();
        while !waiting.is_empty() && tokio::time::Instant::now() < deadline {
            let mut still = Vec::new();
            for id in waiting {
                if self.status_of(&id).await.as_deref() != Some("ready") {
                    still.push(id);
                }
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for id in &waiting {
            eprintln!("not ready: {id} ({:?})", self.status_of(id).await);
        }
        waiting.len()
    }

    async fn metrics(&self) -> String {
        scrape_metrics(self.proxy.admin_addr).await
    }

    /// `memgate_circuit_state{dependency}`: 0 closed, 1 open, 2 half-open.
    async fn circuit(&self, dependency: &str) -> i64 {
        metric_value(
            &self.metrics().await,
            &format!("memgate_circuit_state{{dependency=\"{dependency}\"}}"),
        )
        .unwrap_or(-1.0) as i64
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// One row of the fault table.
fn report(fault: &str, during: &[Sample], recovery: Option<Duration>, acked: usize, lost: usize) {
    eprintln!(
        "| {fault} | {} | {} | {} | {acked} acknowledged, {lost} lost |",
        status_mix(during),
        ms(latency_quantile(during, 0.99)),
        recovery.map_or("not seen".to_string(), ms),
    );
}

fn acknowledged(samples: &[Sample]) -> Vec<String> {
    samples.iter().filter_map(|s| s.created.clone()).collect()
}

/// Every sample was answered (none hung past the client timeout), and every 503 says when to
/// come back.
fn assert_answered(samples: &[Sample], max: Duration) {
    for sample in samples {
        assert_ne!(sample.status, 0, "no answer: {sample:?}");
        assert!(sample.latency < max, "too slow: {sample:?}");
        if sample.status == 503 {
            assert!(
                sample.retry_after.is_some(),
                "503 without Retry-After: {sample:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let mut env = Env::start().await;
    let id = env
        .create_ready("the lake was cold and clear", &["lake"])
        .await;
    let mix = vec![
        LoadOp::Get(id),
        LoadOp::SearchCached("cold lake".into()),
        LoadOp::Create,
    ];
    let load = SteadyLoad::start(env.base(), mix, INTERVAL);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let fault = load.now();
    env.redis.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_ne!(
        env.circuit("redis").await,
        0,
        "the Redis breaker is open (or probing)"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.redis.restart().expect("redis restarts");
    let restored = load.now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let samples = load.stop().await;

    assert_answered(&samples, Duration::from_secs(2));
    let during = between(&samples, fault, restored);
    let creates: Vec<&Sample> = during.iter().filter(|s| s.op == "create").collect();
    assert!(
        creates
            .iter()
            .skip(3)
            .all(|s| s.status == 503 || s.degraded.as_deref() == Some("legacy")),
        "with Redis down a create is forwarded to legacy or refused: {}",
        status_mix(&during)
    );
    assert!(
        creates
            .iter()
            .any(|s| s.degraded.as_deref() == Some("legacy")),
        "creates were forwarded to legacy: {}",
        status_mix(&during)
    );
    let reads_ok = during
        .iter()
        .filter(|s| s.op != "create")
        .all(|s| s.status == 200);
    assert!(reads_ok, "reads kept answering: {}", status_mix(&during));
    let recovery = recovered_after(&samples, restored, |s| s.op == "create" && s.status == 202);
    assert!(recovery.is_some(), "creates are acknowledged again");
    assert_eq!(
        env.circuit("redis").await,
        0,
        "the Redis breaker closed again"
    );

    let acked = acknowledged(&samples);
    let lost = env.wait_ready(&acked, Duration::from_secs(30)).await;
    report(
        "redis-server killed (SIGKILL) for 3 s",
        &during,
        recovery,
        acked.len(),
        lost,
    );
    assert_eq!(lost, 0, "no acknowledged write is lost");
    let forwarded = env
        .upstream()
        .received()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query == "/memories")
        .count();
    assert!(forwarded > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_stopped_and_restarted_under_load() {
    let mut env = Env::start().await;
    let id = env.create_ready("a walk in the forest", &["forest"]).await;
    let mix = vec![
        LoadOp::Legacy,
        LoadOp::Get(id),
        LoadOp::SearchCached("forest walk".into()),
    ];
    let load = SteadyLoad::start(env.base(), mix, INTERVAL);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let fault = load.now();
    env.upstream_mut().stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.circuit("upstream").await,
        1,
        "the upstream breaker is open"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.upstream_mut()
        .restart()
        .await
        .expect("upstream restarts");
    let restored = load.now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = load.stop().await;

    assert_answered(&samples, Duration::from_secs(2));
    let during = between(&samples, fault, restored);
    let legacy: Vec<&Sample> = during.iter().filter(|s| s.op == "legacy").collect();
    assert!(
        legacy.iter().all(|s| s.status == 502 || s.status == 503),
        "legacy requests fail fast: {}",
        status_mix(&during)
    );
    assert!(
        legacy.iter().filter(|s| s.status == 503).count() > legacy.len() / 2,
        "once the breaker is open, refused at once: {}",
        status_mix(&during)
    );
    assert!(
        during
            .iter()
            .filter(|s| s.op != "legacy")
            .all(|s| s.status == 200),
        "the fast path does not notice: {}",
        status_mix(&during)
    );
    let recovery = recovered_after(&samples, restored, |s| s.op == "legacy" && s.status == 200);
    assert!(recovery.is_some(), "legacy answers again");
    assert_eq!(
        env.circuit("upstream").await,
        0,
        "the upstream breaker closed"
    );
    report("legacy upstream stopped for 3 s", &during, recovery, 0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_hangs_then_fails_then_recovers() {
    let env = Env::start().await;
    env.create_ready("we swam in the lake at sunset", &["lake"])
        .await;
    let mix = vec![
        LoadOp::SearchFresh("lake at sunset".into()),
        LoadOp::SearchCached("swimming".into()),
        LoadOp::Create,
    ];
    let load = SteadyLoad::start(env.base(), mix, INTERVAL);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let hang = load.now();
    env.openai.set_delay(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(env.circuit("openai").await, 1, "the OpenAI breaker is open");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failing = load.now();
    env.openai.set_delay(Duration::ZERO);
    env.openai.set_failing(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.openai.set_failing(false);
    let restored = load.now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let samples = load.stop().await;

    assert_answered(&samples, Duration::from_secs(2));
    for (phase, from, to) in [("hang", hang, failing), ("500s", failing, restored)] {
        let during = between(&samples, from, to);
        let fresh: Vec<&Sample> = during.iter().filter(|s| s.op == "search-fresh").collect();
        assert!(
            fresh
                .iter()
                .all(|s| s.status == 200 && s.degraded.as_deref() == Some("legacy")),
            "{phase}: new searches are answered by legacy: {}",
            status_mix(&during)
        );
        assert!(
            during
                .iter()
                .filter(|s| s.op != "search-fresh")
                .all(|s| s.status == 200 || s.status == 202),
            "{phase}: cached searches and creates do not need OpenAI: {}",
            status_mix(&during)
        );
        assert!(
            latency_quantile(&fresh.into_iter().cloned().collect::<Vec<_>>(), 0.99)
                < Duration::from_millis(1000),
            "{phase}: no search waits long for OpenAI"
        );
    }
    let recovery = recovered_after(&samples, restored, |s| {
        s.op == "search-fresh" && s.status == 200 && s.degraded.is_none()
    });
    assert!(recovery.is_some(), "new searches take the fast path again");
    assert_eq!(env.circuit("openai").await, 0);

    let acked = acknowledged(&samples);
    let lost = env.wait_ready(&acked, Duration::from_secs(40)).await;
    report(
        "OpenAI hangs 3 s, then answers 500 for 3 s",
        &between(&samples, hang, restored),
        recovery,
        acked.len(),
        lost,
    );
    assert_eq!(
        lost, 0,
        "every acknowledged create is enriched once OpenAI is back"
    );
    let metrics = env.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "memgate_degraded_responses_total{level=\"legacy\"}"
        )
        .unwrap_or(0.0)
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_falls_down_the_ladder_to_keyword_then_popular() {
    let mut env = Env::start().await;
    let garden = env
        .create_ready("Planted tomatoes in the garden today", &["garden"])
        .await;
    let other = env.create_ready("A quiet evening with a book", &[]).await;
    // Read `other` often, so it is the most popular.
    for _ in 0..5 {
        env.status_of(&other).await;
    }
    env.status_of(&garden).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // access flush
    env.openai.set_failing(true);
    env.upstream_mut().stop();

    let http = env.http.clone();
    let base = env.base();
    let search = |query: &'static str| {
        http.post(format!("{base}/memories/search"))
            .header("x-user-id", "alice")
            .json(&json!({ "query": query, "limit": 5 }))
            .send()
    };
    let response = search("tomatoes growing").await.expect("search");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-memgate-degraded"], "keyword");
    let body: Value = response.json().await.expect("json");
    let ids: Vec<&str> = body["memories"]
        .as_array()
        .expect("memories")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![garden.as_str()],
        "the memory with the word: {body}"
    );
    assert!(body["memories"][0]["score"].as_f64().is_some());

    // Only stop words: nothing to match on, so the most read memories answer.
    let response = search("what is it").await.expect("search");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-memgate-degraded"], "popular");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["memories"][0]["id"], other.as_str(), "{body}");

    // Nothing left that can answer: 503 with Retry-After, at once.
    env.redis.kill();
    let started = std::time::Instant::now();
    let response = search("what is it").await.expect("search");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(2));
    let metrics = env.metrics().await;
    for level in ["keyword", "popular"] {
        let series = format!("memgate_degraded_responses_total{{level=\"{level}\"}}");
        assert_eq!(metric_value(&metrics, &series), Some(1.0), "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_cap_requests_are_refused_at_once() {
    let upstream = FakeUpstream::start().await.expect("upstream");
    upstream.set_delay(Duration::from_millis(1000));
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(data.path(), None, None, Some(upstream.url()));
    config.limits.max_in_flight = 4;
    let proxy = start_proxy(config).await.expect("start");
    let http = reqwest::Client::new();
    let base = format!("http://{}", proxy.api_addr);
    let requests = (0..20).map(|i| {
        let request = http
            .get(format!("{base}/slow/{i}"))
            .header("x-memgate-route", "legacy")
            .send();
        async move {
            let started = std::time::Instant::now();
            let response = request.await.expect("answer");
            let overloaded = response.headers().contains_key("x-memgate-overloaded");
            (response.status().as_u16(), overloaded, started.elapsed())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let served: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 200).collect();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, overloaded, _)| *s == 503 && *overloaded)
        .collect();
    assert_eq!(served.len(), 4, "{answers:?}");
    assert_eq!(refused.len(), 16, "{answers:?}");
    assert!(
        refused
            .iter()
            .all(|(_, _, took)| *took < Duration::from_millis(500)),
        "refused at once, not queued: {answers:?}"
    );
    let metrics = scrape_metrics(proxy.admin_addr).await;
    assert_eq!(
        metric_value(&metrics, "memgate_overloaded_requests_total"),
        Some(16.0)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let data = tempfile::tempdir().expect("dir");
    let mut config = test_config(data.path(), None, None, None);
    config.limits.header_read_timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await.expect("start");
    let mut stream = tokio::net::TcpStream::connect(proxy.api_addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /memories/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the proxy closed the connection");
    assert!(started.elapsed() < Duration::from_secs(2));
    proxy.shutdown().await;
}

/// `memgate serve --embedded` in front of `upstream` as a process on `port`, with `env`.
async fn spawn_serve(
    upstream: &FakeUpstream,
    data: &std::path::Path,
    env: &[(&str, String)],
) -> (std::process::Child, String) {
    let data_dir = data.display().to_string();
    let upstream = upstream.url();
    let mut env = env.to_vec();
    env.push(("MEMGATE_LOG", "warn".to_string()));
    let log = data.join("serve.log");
    let process = MemgateProcess::spawn(
        &[
            "serve",
            "--embedded",
            "--rollout-percent",
            "0",
            "--upstream",
            &upstream,
            "--data-dir",
            &data_dir,
        ],
        &env,
        &log,
    )
    .await
    .expect("memgate serve listens");
    let base = process.base.clone();
    (process.into_child(), base)
}

/// Waits for the process to exit; fails past `within`.
async fn exits(mut child: std::process::Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("still running after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let upstream = FakeUpstream::start().await.expect("upstream");
    upstream.set_delay(Duration::from_millis(1500));
    let data = tempfile::tempdir().expect("dir");
    let (child, base) = spawn_serve(&upstream, data.path(), &[]).await;
    let in_flight = tokio::spawn(reqwest::Client::new().get(format!("{base}/slow")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let response = in_flight.await.expect("join").expect("answered");
    assert_eq!(response.status(), 200, "the in-flight request finished");
    let exit = exits(child, Duration::from_secs(10)).await;
    assert!(exit.success(), "clean exit: {exit:?}");
}

/// A credential read from a file (a mounted Secret, `MEMGATE_*_FILE`) that changes makes
/// `serve` drain and exit cleanly, so its supervisor (the kubelet, for the injected sidecar)
/// starts it again with the new value; the file left alone changes nothing.
#[tokio::test]
async fn a_rotated_credential_file_drains_and_exits() {
    let upstream = FakeUpstream::start().await.expect("upstream");
    upstream.set_delay(Duration::from_millis(1500));
    let data = tempfile::tempdir().expect("dir");
    let key = data.path().join("openai-api-key");
    std::fs::write(&key, "sk-before\n").expect("write");
    let env = [("MEMGATE_OPENAI__API_KEY_FILE", key.display().to_string())];
    let (mut child, base) = spawn_serve(&upstream, data.path(), &env).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "an unchanged credential keeps it running"
    );
    let in_flight = tokio::spawn(reqwest::Client::new().get(format!("{base}/slow")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rotated = Instant::now();
    std::fs::write(&key, "sk-after\n").expect("rotate");
    let response = in_flight.await.expect("join").expect("answered");
    assert_eq!(response.status(), 200, "the in-flight request finished");
    let exit = exits(child, Duration::from_secs(10)).await;
    assert!(exit.success(), "clean exit: {exit:?}");
    eprintln!(
        "exited {:.1} s after the credential changed",
        rotated.elapsed().as_secs_f64()
    );
}

/// A Qdrant server that is not there (nothing listens on its port): reads fall back to legacy,
/// then to the popular memories in Redis, and writes are still acknowledged (the worker stores
/// them once Qdrant is back; no Qdrant server runs on this machine, so that part is not shown
/// here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_vector_store_down_reads_fall_back_and_writes_are_still_acknowledged() {
    let redis = RedisServer::start().expect("redis-server");
    let openai = FakeOpenAi::start(64).await.expect("openai");
    let mut upstream = FakeUpstream::start().await.expect("upstream");
    let data = tempfile::tempdir().expect("dir");
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut config = fault_config(data.path(), redis.url(), openai.base_url(), upstream.url());
    config.vectors.backend = memgate::config::VectorBackend::Qdrant;
    config.vectors.url = Some(format!("http://127.0.0.1:{closed_port}"));
    config.vectors.timeout = Duration::from_millis(300);
    let proxy = start_proxy(config).await.expect("starts without Qdrant");
    let http = reqwest::Client::new();
    let base = format!("http://{}", proxy.api_addr);
    let unknown = "0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e";

    let get = |id: String| {
        http.get(format!("{base}/memories/{id}"))
            .header("x-user-id", "alice")
            .send()
    };
    let search = || {
        http.post(format!("{base}/memories/search"))
            .header("x-user-id", "alice")
            .json(&json!({ "query": "where did we swim", "limit": 3 }))
            .send()
    };
    for _ in 0..4 {
        let response = get(unknown.into()).await.expect("get");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-memgate-degraded"], "legacy");
        assert_eq!(response.headers()["x-memgate-path"], "legacy");
        let response = search().await.expect("search");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-memgate-degraded"], "legacy");
    }
    let metrics = scrape_metrics(proxy.admin_addr).await;
    assert_eq!(
        metric_value(&metrics, "memgate_circuit_state{dependency=\"qdrant\"}"),
        Some(1.0)
    );

    let accepted = http
        .post(format!("{base}/memories"))
        .header("x-user-id", "alice")
        .json(&json!({ "content": "kept until Qdrant is back", "type": "semantic" }))
        .send()
        .await
        .expect("create");
    assert_eq!(accepted.status(), 202, "the queue does not need Qdrant");

    upstream.stop();
    let started = std::time::Instant::now();
    let response = search().await.expect("search");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-memgate-degraded"], "popular");
    let response = get(unknown.into()).await.expect("get");
    assert_eq!(response.status(), 503, "nothing can answer a GET");
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after timeouts"
    );
    proxy.shutdown().await;
}
