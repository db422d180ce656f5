//! A steady request stream for fault tests: requests from a mix, sent at a fixed rate whatever
//! the answers (each request its own task, so a slow answer never delays the next send), each
//! recorded with its send time, status, latency and `x-memgate-degraded`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub enum LoadOp {
    /// `GET /memories/{id}`.
    Get(String),
    /// `POST /memories/search` with the same query every time (its result gets cached).
    SearchCached(String),
    /// `POST /memories/search` with a query never seen before (needs a new embedding).
    SearchFresh(String),
    /// `POST /memories` with a unique content.
    Create,
    /// A request forced onto the legacy path.
    Legacy,
}

impl LoadOp {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Get(_) => "get",
            Self::SearchCached(_) => "search",
            Self::SearchFresh(_) => "search-fresh",
            Self::Create => "create",
            Self::Legacy => "legacy",
        }
    }
}

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    pub op: &'static str,
    /// When it was sent, from the start of the stream.
    pub sent: Duration,
    /// `0` when no answer came (connection error, client timeout).
    pub status: u16,
    pub latency: Duration,
    pub degraded: Option<String>,
    pub overloaded: bool,
    pub retry_after: Option<String>,
    /// The id of a create answered `202`.
    pub created: Option<String>,
}

/// A running stream; [`SteadyLoad::stop`] ends it and returns what it saw.
pub struct SteadyLoad {
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyLoad {
    /// Sends one request every `interval`, cycling through `mix`, to the proxy at `base`.
    pub fn start(base: String, mix: Vec<LoadOp>, interval: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("http client");
        let log = samples.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut in_flight = tokio::task::JoinSet::new();
            for sequence in 0u64.. {
                ticker.tick().await;
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let op = mix[(sequence % mix.len() as u64) as usize].clone();
                let request = build(&client, &base, &op, sequence);
                let log = log.clone();
                in_flight.spawn(async move {
                    let sent = started.elapsed();
                    let sample = send(request, op.label(), sent).await;
                    log.lock().expect("lock").push(sample);
                });
                while in_flight.try_join_next().is_some() {}
            }
            // Every request sent is answered or times out on the client: none is dropped.
            while in_flight.join_next().await.is_some() {}
        });
        Self {
            started,
            samples,
            stop,
            task,
        }
    }

    /// Time since the stream started: mark fault and recovery moments with it.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sending, waits for the answers still due (up to the client timeout), and returns
    /// every sample in send order.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        let mut samples = self.samples.lock().expect("lock").clone();
        samples.sort_by_key(|sample| sample.sent);
        samples
    }
}

fn build(
    client: &reqwest::Client,
    base: &str,
    op: &LoadOp,
    sequence: u64,
) -> reqwest::RequestBuilder {
    match op {
        LoadOp::Get(id) => client.get(format!("{base}/memories/{id}")),
        LoadOp::SearchCached(query) => client
            .post(format!("{base}/memories/search"))
            .json(&json!({ "query": query, "limit": 5 })),
        LoadOp::SearchFresh(prefix) => client
            .post(format!("{base}/memories/search"))
            .json(&json!({ "query": format!("{prefix} {sequence}"), "limit": 5 })),
        LoadOp::Create => client
            .post(format!("{base}/memories"))
            .json(&json!({ "content": format!("steady load memory number {sequence}"), "type": "episodic" })),
        LoadOp::Legacy => client
            .get(format!("{base}/legacy-only/{sequence}"))
            .header("x-memgate-route", "legacy"),
    }
    .header("x-user-id", format!("user-{}", sequence % 7))
}

async fn send(request: reqwest::RequestBuilder, op: &'static str, sent: Duration) -> Sample {
    let started = Instant::now();
    let mut sample = Sample {
        op,
        sent,
        status: 0,
        latency: Duration::ZERO,
        degraded: None,
        overloaded: false,
        retry_after: None,
        created: None,
    };
    let Ok(response) = request.send().await else {
        sample.latency = started.elapsed();
        return sample;
    };
    sample.status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    sample.degraded = header("x-memgate-degraded");
    sample.overloaded = header("x-memgate-overloaded").is_some();
    sample.retry_after = header("retry-after");
    let body: Value = response.json().await.unwrap_or(Value::Null);
    sample.latency = started.elapsed();
    if sample.status == 202 && op == "create" {
        sample.created = body["id"].as_str().map(str::to_string);
    }
    sample
}

/// Samples sent in `[from, to)`.
pub fn between(samples: &[Sample], from: Duration, to: Duration) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.sent >= from && s.sent < to)
        .cloned()
        .collect()
}

/// The `q` quantile (0..=1) of the samples' latencies.
pub fn latency_quantile(samples: &[Sample], q: f64) -> Duration {
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
    latencies[index.min(latencies.len() - 1)]
}

/// `"202×40 503×3 200 degraded=legacy×12"`: how the samples were answered.
pub fn status_mix(samples: &[Sample]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for sample in samples {
        let mut key = match sample.status {
            0 => "no answer".to_string(),
            status => status.to_string(),
        };
        if let Some(level) = &sample.degraded {
            key.push_str(&format!(" ({level})"));
        }
        if sample.overloaded {
            key.push_str(" (overloaded)");
        }
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(key, count)| format!("{key} ×{count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first sample sent at or after `from` that `ok` accepts: how long after `from` the
/// service was seen to work again.
pub fn recovered_after(
    samples: &[Sample],
    from: Duration,
    ok: impl Fn(&Sample) -> bool,
) -> Option<Duration> {
    samples
        .iter()
        .filter(|s| s.sent >= from)
        .find(|s| ok(s))
        .map(|s| s.sent + s.latency - from)
}
