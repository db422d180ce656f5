//! Read-path benchmark: drives memgate proxies at a fixed request rate (open loop: latency is
//! measured from when each request was due, so a stall shows in the tail instead of lowering
//! the rate) and prints p50/p95/p99/max per scenario, with the ratios that matter.
//!
//! Everything runs on this machine: a `redis-server` of its own, a stand-in upstream that
//! answers at once, Qdrant Edge, and the hashing embedder. The proxies run on their own tokio
//! runtime (2 threads), the load generator on another (1 thread).
//!
//! `cargo run --release -p memgate-testkit --bin memgate-bench -- --rate 1000 --seconds 10`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use memgate_testkit::{start_proxy_and_worker, test_config, FakeOpenAi, FakeUpstream, RedisServer};
use redis::AsyncCommands;

#[derive(Debug, Parser)]
struct Args {
    /// Requests per second in every scenario.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of load per scenario (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Memories stored before the runs.
    #[arg(long, default_value_t = 1000)]
    dataset_size: usize,
    /// Rate of the create-acknowledgement scenario.
    #[arg(long, default_value_t = 500)]
    create_rate: u64,
    /// Rate of the worker-throughput scenario.
    #[arg(long, default_value_t = 100)]
    worker_rate: u64,
    /// Latency of every OpenAI call in the write scenarios, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    openai_latency_ms: u64,
    /// Skip the read scenarios.
    #[arg(long)]
    writes_only: bool,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone)]
struct Call {
    method: hyper::Method,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Call {
    fn get(url: String) -> Self {
        Self {
            method: hyper::Method::GET,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    fn post(url: String, body: serde_json::Value) -> Self {
        Self {
            method: hyper::Method::POST,
            url,
            headers: vec![("content-type", "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn request(&self) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let mut builder = hyper::Request::builder()
            .method(self.method.clone())
            .uri(&self.url);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        Ok(builder.body(Full::new(self.body.clone()))?)
    }
}

struct Outcome {
    histogram: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
    expected_header: Option<(&'static str, &'static str)>,
    unexpected: u64,
    /// Latest a send left after it was due (the load generator's own delay).
    max_lag: Duration,
}

async fn send(
    client: &HttpClient,
    call: &Call,
    expect: Option<(&'static str, &'static str)>,
) -> Result<bool, ()> {
    let request = call.request().map_err(|_| ())?;
    let response = client.request(request).await.map_err(|_| ())?;
    let ok_header =
        expect.is_none_or(|(name, value)| response.headers().get(name).is_some_and(|v| v == value));
    let status = response.status();
    response.into_body().collect().await.map_err(|_| ())?;
    if status.is_success() {
        Ok(ok_header)
    } else {
        Err(())
    }
}

/// Sends `calls` round-robin at `rate` per second for `duration`, open loop.
async fn run(
    client: &HttpClient,
    calls: &[Call],
    rate: u64,
    duration: Duration,
    expect: Option<(&'static str, &'static str)>,
) -> Outcome {
    let total = rate * duration.as_secs();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let client = client.clone();
        let call = calls[i as usize % calls.len()].clone();
        tasks.push(tokio::spawn(async move {
            // Each request is its own task, so a slow answer never delays the next send (open
            // loop); latency is timed from the send, not from the timer's tick, whose 1 ms
            // granularity would otherwise be counted as proxy time.
            let sent = tokio::time::Instant::now();
            let lag = sent.saturating_duration_since(due);
            let result = send(&client, &call, expect).await;
            (sent.elapsed(), lag, result)
        }));
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut errors = 0;
    let mut unexpected = 0;
    let mut max_lag = Duration::ZERO;
    for task in tasks {
        match task.await {
            Ok((latency, lag, Ok(header_ok))) => {
                max_lag = max_lag.max(lag);
                let _ = histogram.record(latency.as_micros().max(1) as u64);
                unexpected += u64::from(!header_ok);
            }
            _ => errors += 1,
        }
    }
    Outcome {
        histogram,
        errors,
        elapsed: start.elapsed(),
        expected_header: expect,
        unexpected,
        max_lag,
    }
}

fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

fn row(name: &str, outcome: &Outcome) {
    let h = &outcome.histogram;
    println!(
        "| {name} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.95)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        h.len() as f64 / outcome.elapsed.as_secs_f64(),
        outcome.errors,
        outcome
            .expected_header
            .map(|(n, v)| format!("{} without {n}: {v}", outcome.unexpected))
            .unwrap_or_default(),
        ms(outcome.max_lag.as_micros() as u64),
    );
}

async fn post_json(
    client: &HttpClient,
    url: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let request = hyper::Request::post(url)
        .header("x-memgate-route", "fast")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = client.request(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "{url}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(serde_json::from_slice(&bytes)?)
}

const WORDS: &[&str] = &[
    "coffee", "paris", "meeting", "project", "deadline", "birthday", "garden", "music", "travel",
    "recipe", "budget", "doctor", "running", "book", "movie", "family", "weekend", "code",
    "review", "holiday",
];

fn sentence(i: usize) -> String {
    (0..8)
        .map(|k| WORDS[(i * 7 + k * 13 + k * k) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
        + &format!(" note {i}")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let redis = RedisServer::start().context("redis-server")?;
    let data = tempfile::tempdir()?;
    let (upstream, proxy, seed_worker, proxy_no_l1) = proxy_runtime.block_on(async {
        let upstream = FakeUpstream::start().await?;
        let mut config = test_config(
            &data.path().join("a"),
            Some(redis.url()),
            None,
            Some(upstream.url()),
        );
        config.embeddings.dimensions = 384;
        config.store.name = "bench".into();
        config.cache.l1.max_entries = 100_000;
        let (proxy, seed_worker) = start_proxy_and_worker(config.clone()).await?;
        let mut no_l1 = config;
        no_l1.vectors.path = Some(data.path().join("b"));
        no_l1.cache.l1.ttl = Duration::from_micros(1);
        let proxy_no_l1 = memgate::app::start(no_l1, None).await?;
        anyhow::Ok((upstream, proxy, seed_worker, proxy_no_l1))
    })?;
    let upstream = Arc::new(upstream);

    load_runtime.block_on(async {
        if args.writes_only {
            return anyhow::Ok(());
        }
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build_http();
        let fast = format!("http://{}", proxy.api_addr);
        let fast_no_l1 = format!("http://{}", proxy_no_l1.api_addr);

        eprintln!("seeding {} memories", args.dataset_size);
        let seeding = Instant::now();
        let mut ids = Vec::new();
        for i in 0..args.dataset_size {
            let memory = post_json(
                &client,
                &format!("{fast}/memories"),
                serde_json::json!({"content": sentence(i)}),
            )
            .await?;
            ids.push(memory["id"].as_str().context("id")?.to_string());
        }
        // The second proxy has its own Qdrant Edge shard but shares Redis: its GETs read the
        // memories the first one cached, with the L1 effectively off.
        // Wait until the worker has enriched and stored every memory (and associated it).
        let mut connection = redis.client().await?;
        for stream in ["writes", "assoc"] {
            let key = format!("memgate:test/bench:{stream}");
            while connection.xlen::<_, u64>(&key).await? > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        eprintln!(
            "seeded and stored in {:.1}s",
            seeding.elapsed().as_secs_f64()
        );

        let hot: Vec<String> = ids.iter().take(200).cloned().collect();
        let user = |call: Call, i: usize| {
            call.with("x-memgate-route", "fast")
                .with("x-user-id", format!("u{i}"))
        };
        let get_fast: Vec<Call> = hot
            .iter()
            .enumerate()
            .map(|(i, id)| user(Call::get(format!("{fast}/memories/{id}")), i))
            .collect();
        let get_redis: Vec<Call> = hot
            .iter()
            .enumerate()
            .map(|(i, id)| user(Call::get(format!("{fast_no_l1}/memories/{id}")), i))
            .collect();
        let searches: Vec<Call> = (0..50)
            .map(|i| {
                let mut call = user(Call::get(format!("{fast}/memories/search")), i);
                call.method = hyper::Method::POST;
                call.body = Bytes::from(
                    serde_json::json!({"query": sentence(i * 31), "limit": 10}).to_string(),
                );
                call
            })
            .collect();
        let direct: Vec<Call> = hot
            .iter()
            .map(|id| Call::get(format!("{}/memories/{id}", upstream.url())))
            .collect();
        let legacy: Vec<Call> = hot
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Call::get(format!("{fast}/memories/{id}"))
                    .with("x-memgate-route", "legacy")
                    .with("x-user-id", format!("u{i}"))
            })
            .collect();

        // Warm every cache and connection pool, then measure.
        let warm = Duration::from_secs(1);
        for calls in [&get_fast, &get_redis, &searches, &direct, &legacy] {
            run(&client, calls, args.rate, warm, None).await;
        }
        for call in get_redis.iter() {
            send(&client, call, None).await.ok();
        }
        let duration = Duration::from_secs(args.seconds);
        let results = vec![
            (
                "upstream direct (baseline)",
                run(&client, &direct, args.rate, duration, None).await,
            ),
            (
                "legacy via proxy",
                run(
                    &client,
                    &legacy,
                    args.rate,
                    duration,
                    Some(("x-memgate-path", "legacy")),
                )
                .await,
            ),
            (
                "get, L1 hit",
                run(
                    &client,
                    &get_fast,
                    args.rate,
                    duration,
                    Some(("x-memgate-cache", "hit")),
                )
                .await,
            ),
            (
                "get, Redis hit (L1 off)",
                run(
                    &client,
                    &get_redis,
                    args.rate,
                    duration,
                    Some(("x-memgate-cache", "hit")),
                )
                .await,
            ),
            (
                "search, result cached",
                run(
                    &client,
                    &searches,
                    args.rate,
                    duration,
                    Some(("x-memgate-cache", "hit")),
                )
                .await,
            ),
        ];

        println!(
            "\n{} memories, {} req/s open loop, {} s per scenario, latency in ms\n",
            args.dataset_size, args.rate, args.seconds
        );
        println!(
            "| scenario | p50 | p95 | p99 | max | req/s | errors | header check | max send lag |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (name, outcome) in &results {
            row(name, outcome);
        }
        let p50 = |i: usize| results[i].1.histogram.value_at_quantile(0.5) as f64;
        println!(
            "\nlegacy overhead at p50: {:.3} ms ({:.2}x the direct call)",
            (p50(1) - p50(0)) / 1000.0,
            p50(1) / p50(0)
        );
        anyhow::Ok(())
    })?;
    write_scenarios(&args, &redis, &proxy_runtime, &load_runtime, data.path())?;
    proxy_runtime.block_on(async {
        proxy.shutdown().await;
        seed_worker.shutdown().await;
        proxy_no_l1.shutdown().await;
    });
    drop(upstream);
    Ok(())
}

/// Writes: the acknowledgement latency at `create_rate` while every OpenAI call takes
/// `openai_latency_ms`, then whether the workers keep up with `worker_rate` creates per second.
fn write_scenarios(
    args: &Args,
    redis: &RedisServer,
    proxy_runtime: &tokio::runtime::Runtime,
    load_runtime: &tokio::runtime::Runtime,
    data: &std::path::Path,
) -> anyhow::Result<()> {
    let (openai, proxy, worker, prefix) = proxy_runtime.block_on(async {
        let openai = FakeOpenAi::start(384).await?;
        openai.set_delay(Duration::from_millis(args.openai_latency_ms));
        let mut config = test_config(
            &data.join("writes"),
            Some(redis.url()),
            Some(openai.base_url()),
            None,
        );
        config.store.name = "bench-writes".into();
        config.embeddings.dimensions = 384;
        config.openai.timeout = Duration::from_secs(30);
        config.worker.concurrency = 512;
        config.worker.embedding_batch_window = Duration::from_millis(20);
        let prefix = config.key_prefix();
        let (proxy, worker) = start_proxy_and_worker(config).await?;
        anyhow::Ok((openai, proxy, worker, prefix))
    })?;
    let mut connection = load_runtime.block_on(redis.client())?;
    load_runtime.block_on(async {
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build_http();
        let url = format!("http://{}/memories", proxy.api_addr);
        let creates: Vec<Call> = (0..1000)
            .map(|i| Call::post(url.clone(), serde_json::json!({"content": sentence(i)})).with("x-memgate-route", "fast"))
            .collect();
        let duration = Duration::from_secs(args.seconds);
        run(&client, &creates, args.create_rate, Duration::from_secs(1), None).await;
        let ack = run(&client, &creates, args.create_rate, duration, None).await;
        println!(
            "\nwrites: every OpenAI call takes {} ms; create acknowledged (202) at {} req/s\n",
            args.openai_latency_ms, args.create_rate
        );
        println!("| scenario | p50 | p95 | p99 | max | req/s | errors | header check | max send lag |");
        println!("|---|---|---|---|---|---|---|---|---|");
        row("create (202 ack)", &ack);

        let writes = format!("{prefix}writes");
        let drained = |connection: &mut redis::aio::MultiplexedConnection| {
            let mut connection = connection.clone();
            let writes = writes.clone();
            async move { connection.xlen::<_, u64>(&writes).await.unwrap_or(u64::MAX) == 0 }
        };
        eprintln!("draining the backlog of the acknowledgement run");
        let wait = Instant::now();
        while !drained(&mut connection).await && wait.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let calls_before = openai.embedding_calls() + openai.chat_calls();
        let embedding_calls_before = openai.embedding_calls();
        let texts_before = openai.embedded_texts();

        let started = Instant::now();
        let sampler = {
            let mut connection = connection.clone();
            let writes = writes.clone();
            tokio::spawn(async move {
                let mut max_backlog = 0u64;
                loop {
                    let length: u64 = connection.xlen(&writes).await.unwrap_or(0);
                    max_backlog = max_backlog.max(length);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if length == 0 && started.elapsed() > Duration::from_secs(1) {
                        return max_backlog;
                    }
                }
            })
        };
        let sustained = run(&client, &creates, args.worker_rate, duration, None).await;
        while !drained(&mut connection).await && started.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = started.elapsed();
        sampler.abort();
        let jobs = sustained.histogram.len();
        let calls = openai.embedding_calls() + openai.chat_calls() - calls_before;
        let embed_texts = openai.embedded_texts() - texts_before;
        println!(
            "\nworker throughput: {jobs} creates at {} /s over {} s, all enriched and stored {:.2} s after the first; \
             {:.1} jobs/s; {:.2} OpenAI calls per memory ({} embedding texts in {} embedding calls)",
            args.worker_rate,
            args.seconds,
            total.as_secs_f64(),
            jobs as f64 / total.as_secs_f64(),
            calls as f64 / jobs.max(1) as f64,
            embed_texts,
            openai.embedding_calls() - embedding_calls_before,
        );
        anyhow::Ok(())
    })?;
    proxy_runtime.block_on(async {
        proxy.shutdown().await;
        worker.shutdown().await;
    });
    drop(openai);
    Ok(())
}
