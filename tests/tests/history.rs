//! Writes under concurrency and faults, checked the way Jepsen checks databases.
//!
//! Concurrent clients issue random creates, PATCHes (of `content` or of `importance`),
//! deletes, gets and searches on overlapping memories through a real proxy, applied by workers
//! on a real `redis-server` (AOF on), with an OpenAI stand-in that answers slowly enough for
//! jobs to overlap. Meanwhile faults are injected: a worker is killed mid-job (its tasks stop
//! at once, as in a crash: entries pending, leases held) and another started, and Redis is
//! SIGKILLed and started again. Every operation is recorded with its invocation, completion
//! and outcome; once the faults stop and the queue drains, the history and the final state
//! (read through the API and straight from the vector store) are checked by
//! `memgate_testkit::history`. The report is printed; the test passes only with 0 anomalies.
//!
//! The same history runs on Redis with replicas under Sentinel while the primary is SIGKILLed
//! and a replica promoted: with `durability: replicated`, no acknowledged write may be lost.
//!
//! Two targeted races from the field come first: a create followed at once by its delete or
//! its PATCH, and concurrent PATCHes of one memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memgate::app::{Backends, RunningProxy, RunningWorker};
use memgate::config::Config;
use memgate::config::Durability;
use memgate_testkit::history::{self, Event, Op, Outcome, Read, Value as Field};
use memgate_testkit::{
    eventually, start_proxy_with_backends, test_config, FakeOpenAi, RedisServer, SentinelGroup,
};
use redis::AsyncCommands;
use serde_json::{json, Value};

/// A small deterministic generator (xorshift), seeded per client and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The Redis a cluster runs on.
enum Redis {
    /// One `redis-server` (AOF, `appendfsync always`); the fault: SIGKILLed and started again.
    Single {
        server: Arc<Mutex<RedisServer>>,
        url: String,
    },
    /// A primary, two replicas and three sentinels; the fault: the primary SIGKILLed, and a
    /// replica promoted by the sentinels.
    Replicated(tokio::sync::Mutex<SentinelGroup>),
}

/// What goes wrong while the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Faults {
    /// Workers crash and Redis restarts, in turn.
    WorkersAndRedis,
    /// The Redis primary is SIGKILLed once, a third of the way in.
    PrimaryKilled,
}

struct Cluster {
    redis: Redis,
    openai: FakeOpenAi,
    proxy: RunningProxy,
    backends: Backends,
    config: Config,
    workers: Mutex<Vec<RunningWorker>>,
    prefix: String,
    _data: tempfile::TempDir,
}

fn cluster_config(data: &std::path::Path, redis: String, openai: String) -> Config {
    let mut config = test_config(data, Some(redis), Some(openai), None);
    config.worker.concurrency = 4;
    config.worker.claim_idle = Duration::from_millis(1000);
    config.worker.retry_backoff = Duration::from_millis(20);
    config.worker.max_retry_backoff = Duration::from_millis(200);
    config.worker.max_attempts = 20;
    config.circuit_breaker.cool_down = Duration::from_millis(100);
    config.circuit_breaker.max_cool_down = Duration::from_millis(500);
    config
}

impl Cluster {
    async fn start(workers: usize) -> Cluster {
        let server = RedisServer::start_durable().expect("redis-server");
        let url = server.url();
        let redis = Redis::Single {
            server: Arc::new(Mutex::new(server)),
            url: url.clone(),
        };
        Self::start_on(redis, url, None, workers).await
    }

    /// On a primary with two replicas under three sentinels, through Sentinel, with writes
    /// acknowledged as `durability` says.
    async fn start_replicated(workers: usize, durability: Durability) -> Cluster {
        let group = SentinelGroup::start(2, 3)
            .await
            .expect("redis with sentinels");
        let url = group.url();
        let redis = Redis::Replicated(tokio::sync::Mutex::new(group));
        Self::start_on(redis, url, Some(durability), workers).await
    }

    async fn start_on(
        redis: Redis,
        redis_url: String,
        durability: Option<Durability>,
        workers: usize,
    ) -> Cluster {
        let openai = FakeOpenAi::start(64).await.expect("openai");
        let data = tempfile::tempdir().expect("dir");
        let mut config = cluster_config(data.path(), redis_url, openai.base_url());
        config.redis.durability = durability;
        let prefix = config.key_prefix();
        let (proxy, backends) = start_proxy_with_backends(config.clone())
            .await
            .expect("proxy");
        let cluster = Cluster {
            redis,
            openai,
            proxy,
            backends,
            config,
            workers: Mutex::new(Vec::new()),
            prefix,
            _data: data,
        };
        for _ in 0..workers {
            cluster.add_worker().await;
        }
        cluster
    }

    async fn add_worker(&self) {
        let worker = memgate::app::start_worker_with(self.config.clone(), self.backends.clone())
            .await
            .expect("worker");
        self.workers.lock().expect("workers").push(worker);
    }

    /// Kills the oldest worker as a crash would and starts another.
    async fn crash_a_worker(&self) {
        let oldest = {
            let mut workers = self.workers.lock().expect("workers");
            (!workers.is_empty()).then(|| workers.remove(0))
        };
        if let Some(worker) = oldest {
            worker.kill();
        }
        self.add_worker().await;
    }

    /// SIGKILLs Redis, waits `down`, starts it again on its AOF.
    async fn restart_redis(&self, down: Duration) {
        let Redis::Single { server, .. } = &self.redis else {
            panic!("restarts are for a single redis-server");
        };
        let redis = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut redis = redis.lock().expect("redis");
            redis.kill();
            std::thread::sleep(down);
            redis.restart().expect("redis restarts");
        })
        .await
        .expect("join");
    }

    /// SIGKILLs the Redis primary; when a replica was promoted in its place (from the kill).
    async fn kill_primary(&self) -> Duration {
        let Redis::Replicated(group) = &self.redis else {
            panic!("a failover needs replicas");
        };
        let mut group = group.lock().await;
        let killed = Instant::now();
        let old = group.kill_primary().await.expect("the primary killed");
        group
            .wait_for_new_primary(old, Duration::from_secs(30))
            .await
            .expect("a replica promoted");
        killed.elapsed()
    }

    /// A connection to Redis (the primary, with replicas).
    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        match &self.redis {
            Redis::Single { url, .. } => {
                let client = redis::Client::open(url.as_str()).expect("url");
                client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("redis")
            }
            Redis::Replicated(group) => group.lock().await.primary().await.expect("the primary"),
        }
    }

    /// Whether every queued write and association job is finished.
    async fn drained(&self) -> bool {
        let mut redis = self.connection().await;
        let mut total = 0u64;
        for stream in ["writes", "assoc"] {
            let length: u64 = redis
                .xlen(format!("{}{stream}", self.prefix))
                .await
                .unwrap_or(1);
            total += length;
        }
        total == 0
    }

    /// How long the live workers' jobs waited for their turn, lease and slot, on average.
    async fn job_waits(&self) -> String {
        let admins: Vec<std::net::SocketAddr> = self
            .workers
            .lock()
            .expect("workers")
            .iter()
            .map(|worker| worker.admin_addr)
            .collect();
        let (mut sum, mut count) = (0.0, 0.0);
        for admin in admins {
            let metrics = memgate_testkit::scrape_metrics(admin).await;
            let value =
                |series: &str| memgate_testkit::metric_value(&metrics, series).unwrap_or(0.0);
            sum += value("memgate_job_duration_seconds_sum{stage=\"wait\"}");
            count += value("memgate_job_duration_seconds_count{stage=\"wait\"}");
        }
        format!(
            "the last workers' {count} jobs waited {:.1} ms on average for their turn, lease and slot",
            if count > 0.0 { sum / count * 1000.0 } else { 0.0 }
        )
    }

    /// Keys memgate left without a TTL, apart from the few that are bounded by what they are:
    /// the streams (entries leave when finished; dead letters are capped), the search
    /// generation and dead-letter counters, the set of ids whose reads await a copy to the
    /// vector store (emptied every sync), and the consumer sets (trimmed on each heartbeat).
    async fn keys_without_bound(&self) -> Vec<String> {
        let bounded = [
            "writes",
            "assoc",
            "writes:dead",
            "assoc:dead",
            "writes:dead:dropped",
            "assoc:dead:dropped",
            "writes:consumers",
            "assoc:consumers",
            "search:gen",
            "access:dirty",
        ];
        let mut redis = self.connection().await;
        let keys: Vec<String> = redis.keys(format!("{}*", self.prefix)).await.expect("keys");
        let mut unbounded = Vec::new();
        for key in keys {
            let name = key.trim_start_matches(&self.prefix);
            if bounded.contains(&name) {
                continue;
            }
            // -1: no TTL; -2: gone since it was listed.
            let ttl: i64 = redis.pttl(&key).await.expect("pttl");
            if ttl == -1 {
                unbounded.push(name.to_string());
            }
        }
        unbounded
    }

    /// Prints what is left in the queue and why, when it does not drain.
    async fn diagnose(&self) {
        let mut redis = self.connection().await;
        for stream in ["writes", "assoc"] {
            let key = format!("{}{stream}", self.prefix);
            let length: u64 = redis.xlen(&key).await.unwrap_or(0);
            let pending: redis::Value = redis::cmd("XPENDING")
                .arg(&key)
                .arg("workers")
                .arg("-")
                .arg("+")
                .arg(10)
                .query_async(&mut redis)
                .await
                .unwrap_or(redis::Value::Nil);
            let entries: redis::streams::StreamRangeReply = redis
                .xrange_count(&key, "-", "+", 10)
                .await
                .unwrap_or_default();
            println!("{stream}: {length} entries; pending {pending:?}");
            for entry in entries.ids {
                let op = entry.get::<String>("op").unwrap_or_default();
                let rev = entry.get::<String>("rev").unwrap_or_default();
                let id = serde_json::from_str::<Value>(&op)
                    .ok()
                    .and_then(|op| op["id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let revisions: HashMap<String, String> = redis
                    .hgetall(format!("{}rev:{id}", self.prefix))
                    .await
                    .unwrap_or_default();
                let lock: Option<String> = redis
                    .get(format!("{}lock:{id}", self.prefix))
                    .await
                    .unwrap_or(None);
                println!(
                    "  {} rev {rev} {} revisions {revisions:?} lock {lock:?}",
                    entry.id,
                    &op[..op.len().min(60)]
                );
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.api_addr)
    }

    async fn shutdown(self) {
        let workers = std::mem::take(&mut *self.workers.lock().expect("workers"));
        for worker in workers {
            worker.shutdown().await;
        }
        self.proxy.shutdown().await;
    }
}

/// What a write's answer says about whether it applied.
fn write_outcome(result: &Result<(u16, Value), reqwest::Error>) -> Outcome<()> {
    match result {
        Ok((200..=299, _)) => Outcome::Ok(()),
        Ok((503, body)) if body["error"]["code"] == "write_unconfirmed" => Outcome::Unknown,
        Ok(_) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

/// The fields the checker follows, as a read shows them.
fn read_fields(memory: &Value) -> BTreeMap<String, Field> {
    let mut fields = BTreeMap::new();
    if let Some(content) = memory["content"].as_str() {
        fields.insert("content".into(), Field::Text(content.into()));
    }
    if let Some(importance) = memory["importance"].as_f64() {
        fields.insert("importance".into(), Field::Number(importance));
    }
    fields
}

struct Client {
    number: usize,
    http: reqwest::Client,
    base: String,
    started: Instant,
    ids: Arc<Mutex<Vec<String>>>,
    events: Vec<Event>,
    rng: Rng,
    writes: u64,
    /// Reads answered as unconfirmed (`x-memgate-degraded: unconfirmed`).
    unconfirmed: u64,
}

impl Client {
    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.call_marked(method, path, body)
            .await
            .map(|(status, body, _)| (status, body))
    }

    /// [`Client::call`], and whether the answer says it is degraded (`x-memgate-degraded`).
    async fn call_marked(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value, bool), reqwest::Error> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let degraded = response.headers().contains_key("x-memgate-degraded");
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body, degraded))
    }

    fn record(&mut self, memory: &str, op: Op, invoked: u64, outcome: Outcome<()>) {
        let completed = self.now();
        self.events.push(Event {
            client: self.number,
            memory: memory.to_string(),
            op,
            invoked,
            completed,
            outcome,
        });
    }

    fn some_id(&mut self) -> Option<String> {
        let ids = self.ids.lock().expect("ids");
        if ids.is_empty() {
            return None;
        }
        // Mostly recent memories, so operations overlap on the same ones.
        let recent = ids.len().min(24);
        let index = ids.len() - 1 - self.rng.below(recent);
        Some(ids[index].clone())
    }

    fn token(&mut self) -> String {
        self.writes += 1;
        format!(
            "memory text from client {} write {}",
            self.number, self.writes
        )
    }

    fn importance(&mut self) -> f64 {
        self.writes += 1;
        (self.number as f64 * 100_000.0 + self.writes as f64) / 10_000_000.0
    }

    async fn create(&mut self) {
        let content = self.token();
        let importance = self.importance();
        let invoked = self.now();
        let body = json!({"content": content, "type": "episodic", "importance": importance});
        let result = self
            .call(reqwest::Method::POST, "/memories", Some(body))
            .await;
        let outcome = write_outcome(&result);
        let Ok((_, answer)) = &result else { return };
        let Some(id) = answer["id"].as_str().map(str::to_string) else {
            return;
        };
        let fields = BTreeMap::from([
            ("content".to_string(), Field::Text(content)),
            ("importance".to_string(), Field::Number(importance)),
        ]);
        self.record(&id, Op::Create(fields), invoked, outcome);
        self.ids.lock().expect("ids").push(id);
    }

    async fn update(&mut self) {
        let Some(id) = self.some_id() else { return };
        let (field, value, body) = if self.rng.below(2) == 0 {
            let content = self.token();
            let body = json!({"content": content});
            ("content", Field::Text(content), body)
        } else {
            let importance = self.importance();
            (
                "importance",
                Field::Number(importance),
                json!({"importance": importance}),
            )
        };
        let invoked = self.now();
        let result = self
            .call(
                reqwest::Method::PATCH,
                &format!("/memories/{id}"),
                Some(body),
            )
            .await;
        let fields = BTreeMap::from([(field.to_string(), value)]);
        self.record(&id, Op::Update(fields), invoked, write_outcome(&result));
    }

    async fn delete(&mut self) {
        let Some(id) = self.some_id() else { return };
        let invoked = self.now();
        let result = self
            .call(reqwest::Method::DELETE, &format!("/memories/{id}"), None)
            .await;
        self.record(&id, Op::Delete, invoked, write_outcome(&result));
    }

    async fn get(&mut self) {
        let Some(id) = self.some_id() else { return };
        let invoked = self.now();
        let read = match self
            .call_marked(reqwest::Method::GET, &format!("/memories/{id}"), None)
            .await
        {
            // Said to be unconfirmed (the cache was down): not a claim the checker holds it to.
            Ok((_, _, true)) => {
                self.unconfirmed += 1;
                return;
            }
            Ok((200, memory, _)) => Read::Found(read_fields(&memory)),
            Ok((404, _, _)) => Read::NotFound,
            _ => return,
        };
        self.record(&id, Op::Read(read), invoked, Outcome::Ok(()));
    }

    async fn search(&mut self) {
        let invoked = self.now();
        let body = json!({"query": "memory text from client", "limit": 25, "detailLevel": "full"});
        let answer = match self
            .call_marked(reqwest::Method::POST, "/memories/search", Some(body))
            .await
        {
            Ok((200, _, true)) => {
                self.unconfirmed += 1;
                return;
            }
            Ok((200, answer, false)) => answer,
            _ => return,
        };
        let known: std::collections::HashSet<String> =
            self.ids.lock().expect("ids").iter().cloned().collect();
        for memory in answer["memories"].as_array().cloned().unwrap_or_default() {
            let Some(id) = memory["id"].as_str() else {
                continue;
            };
            if known.contains(id) {
                let read = Read::Found(read_fields(&memory));
                self.record(id, Op::Found(read), invoked, Outcome::Ok(()));
            }
        }
    }

    async fn run(mut self, until: Instant) -> (Vec<Event>, u64) {
        while Instant::now() < until {
            match self.rng.below(20) {
                0..=4 => self.create().await,
                5..=10 => self.update().await,
                11..=12 => self.delete().await,
                13..=17 => self.get().await,
                _ => self.search().await,
            }
            // About 30 operations a second per client: the workers keep up, and operations
            // still overlap on the same memories.
            tokio::time::sleep(Duration::from_millis(10 + self.rng.below(40) as u64)).await;
        }
        (self.events, self.unconfirmed)
    }
}

/// Reads every memory once the system is quiet, through the API and from the vector store.
async fn final_state(
    cluster: &Cluster,
    ids: &[String],
) -> (HashMap<String, Read>, HashMap<String, String>, Vec<String>) {
    let http = reqwest::Client::new();
    let mut reads = HashMap::new();
    let mut statuses = HashMap::new();
    let mut differences = Vec::new();
    for id in ids {
        let response = http
            .get(cluster.url(&format!("/memories/{id}")))
            .send()
            .await
            .expect("final get");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let read = match status {
            200 => {
                statuses.insert(
                    id.clone(),
                    body["status"].as_str().unwrap_or("?").to_string(),
                );
                Read::Found(read_fields(&body))
            }
            404 => Read::NotFound,
            other => panic!("final read of {id}: {other} {body}"),
        };
        let uuid = uuid::Uuid::parse_str(id).expect("uuid");
        let stored = cluster
            .backends
            .vectors
            .retrieve(uuid)
            .await
            .expect("vector store");
        let in_store = match stored {
            Some(memory) => Read::Found(read_fields(&Value::Object(memory))),
            None => Read::NotFound,
        };
        if in_store != read {
            differences.push(format!(
                "{id}: the API reads {read:?}, the vector store holds {in_store:?}"
            ));
        }
        reads.insert(id.clone(), read);
    }
    (reads, statuses, differences)
}

async fn run_history(
    cluster: &Cluster,
    clients: usize,
    seconds: u64,
    faults: Faults,
) -> (history::Report, Vec<String>, String) {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seed = started.elapsed().as_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut tasks = Vec::new();
    for number in 0..clients {
        let client = Client {
            number,
            http: reqwest::Client::new(),
            base: cluster.url(""),
            started,
            ids: ids.clone(),
            events: Vec::new(),
            rng: Rng(seed.wrapping_add(number as u64 * 7919) | 1),
            writes: 0,
            unconfirmed: 0,
        };
        tasks.push(tokio::spawn(client.run(until)));
    }
    let mut fault_log = Vec::new();
    let mut primary_killed_at = None;
    if faults == Faults::PrimaryKilled {
        tokio::time::sleep(Duration::from_secs(seconds) / 3).await;
        let at = started.elapsed();
        primary_killed_at = Some(at.as_nanos() as u64);
        let promoted = cluster.kill_primary().await;
        fault_log.push(format!(
            "{} ms: the Redis primary SIGKILLed; a replica answered as primary {} ms later",
            at.as_millis(),
            promoted.as_millis()
        ));
    }
    if faults == Faults::WorkersAndRedis {
        let mut round = 0;
        while Instant::now() + Duration::from_millis(1500) < until {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let at = started.elapsed().as_millis();
            if round % 2 == 0 {
                cluster.crash_a_worker().await;
                fault_log.push(format!("{at} ms: a worker killed, another started"));
            } else {
                cluster.restart_redis(Duration::from_millis(300)).await;
                fault_log.push(format!(
                    "{at} ms: redis-server SIGKILLed, back after 300 ms"
                ));
            }
            round += 1;
        }
    }
    let mut events = Vec::new();
    let mut unconfirmed = 0;
    for task in tasks {
        let (recorded, marked) = task.await.expect("client");
        events.extend(recorded);
        unconfirmed += marked;
    }
    let draining = Instant::now();
    let quiet = eventually(Duration::from_secs(90), || cluster.drained()).await;
    let drained_in = draining.elapsed();
    if !quiet {
        cluster.diagnose().await;
    }
    assert!(quiet, "the write queue never drained");
    let ids: Vec<String> = ids.lock().expect("ids").clone();
    let (reads, statuses, differences) = final_state(cluster, &ids).await;
    let waits = cluster.job_waits().await;
    let report = history::check(&events, &reads, &statuses);
    if let Some(killed) = primary_killed_at {
        fault_log.push(acknowledged_again(&events, killed));
    }
    let summary = format!(
        "seed {seed:#x}, {clients} clients for {seconds} s; faults: {}\n\
         {unconfirmed} reads answered as unconfirmed while the cache was down (not checked); \
         the queue drained {} ms after the clients stopped; {waits}\n{}",
        if fault_log.is_empty() {
            "none".to_string()
        } else {
            fault_log.join("; ")
        },
        drained_in.as_millis(),
        report.summary()
    );
    (report, differences, summary)
}

/// How long after `killed` (ns into the run) the first write invoked after it was acknowledged,
/// and how the writes invoked after it ended until then.
fn acknowledged_again(events: &[Event], killed: u64) -> String {
    let is_write = |event: &&Event| matches!(event.op, Op::Create(_) | Op::Update(_) | Op::Delete);
    let after: Vec<&Event> = events
        .iter()
        .filter(is_write)
        .filter(|event| event.invoked > killed)
        .collect();
    let first_ok = after
        .iter()
        .filter(|event| event.outcome == Outcome::Ok(()))
        .map(|event| event.completed)
        .min();
    let Some(first_ok) = first_ok else {
        return "no write invoked after the kill was acknowledged".into();
    };
    let before_it = |outcome: Outcome<()>| {
        after
            .iter()
            .filter(|event| event.completed < first_ok && event.outcome == outcome)
            .count()
    };
    format!(
        "writes acknowledged again {} ms after the kill ({} refused and {} unconfirmed before)",
        (first_ok - killed) / 1_000_000,
        before_it(Outcome::Failed),
        before_it(Outcome::Unknown)
    )
}

/// Acknowledged writes the checker found lost: a newer value hidden, or a memory gone.
fn lost_writes(report: &history::Report) -> usize {
    ["lost write", "vanished"]
        .iter()
        .map(|kind| report.anomalies.get(kind).map_or(0, Vec::len))
        .sum()
}

fn assert_clean(report: &history::Report, differences: &[String], summary: &str) {
    println!("{summary}");
    for difference in differences.iter().take(10) {
        println!("  {difference}");
    }
    assert!(
        report.count() == 0 && differences.is_empty(),
        "anomalies found:\n{summary}\n{} API/vector-store differences",
        differences.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_with_workers_and_redis_killed_see_every_acknowledged_write_in_order() {
    // `TEST_LOG=memgate=warn` (an `EnvFilter`) shows what the proxy and workers log.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_target(false)
        .try_init();
    let cluster = Cluster::start(2).await;
    cluster.openai.set_delay(Duration::from_millis(20));
    let (report, differences, summary) =
        run_history(&cluster, 12, 12, Faults::WorkersAndRedis).await;
    assert!(report.operations > 500, "too few operations: {summary}");
    let metrics = memgate_testkit::scrape_metrics(cluster.proxy.admin_addr).await;
    println!(
        "write conflicts retried: {}",
        memgate_testkit::metric_value(&metrics, "memgate_write_conflicts_total").unwrap_or(0.0)
    );
    assert_clean(&report, &differences, &summary);
    let unbounded = cluster.keys_without_bound().await;
    assert!(
        unbounded.is_empty(),
        "keys with neither a TTL nor a bound: {unbounded:?}"
    );
    cluster.shutdown().await;
}

/// Redis with replicas under Sentinel: the history runs through memgate and two workers while
/// the primary is SIGKILLed and the sentinels promote a replica. With `durability: replicated`
/// (each acknowledged write also on a replica, `WAIT`), no acknowledged write is lost and the
/// history has no anomaly; the same run with `local` is reported beside it for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_primary_failover_loses_no_acknowledged_write_when_writes_wait_for_a_replica() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_target(false)
        .try_init();
    let mut figures = Vec::new();
    for durability in [Durability::Replicated, Durability::Local] {
        let cluster = Cluster::start_replicated(2, durability).await;
        cluster.openai.set_delay(Duration::from_millis(20));
        let (report, differences, summary) =
            run_history(&cluster, 8, 15, Faults::PrimaryKilled).await;
        println!("durability {durability:?}: {summary}");
        figures.push(format!(
            "{durability:?}: {} acknowledged writes lost, {} anomalies in {} operations",
            lost_writes(&report),
            report.count(),
            report.operations
        ));
        if durability == Durability::Replicated {
            assert!(report.operations > 300, "too few operations: {summary}");
            assert_clean(&report, &differences, &summary);
        }
        cluster.shutdown().await;
    }
    println!("across a Redis primary failover: {}", figures.join("; "));
}

/// A create and, at once, its delete or its PATCH, 60 of each from 16 clients; then PATCHes of
/// different fields of one memory at the same time.
async fn race_creates_with_deletes_and_patches<D, F>(
    base: &str,
    vectors: &Arc<dyn memgate::backend::vectors::VectorStore>,
    drained: D,
) where
    D: FnMut() -> F,
    F: std::future::Future<Output = bool>,
{
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for client in 0..16 {
        let (http, base) = (http.clone(), base.to_string());
        tasks.push(tokio::spawn(async move {
            let mut deleted = Vec::new();
            let mut patched = Vec::new();
            for n in 0..8 {
                if client * 8 + n >= 120 {
                    break;
                }
                let created: Value = http
                    .post(format!("{base}/memories"))
                    .json(&json!({"content": format!("race {client}-{n}"), "type": "episodic"}))
                    .send()
                    .await
                    .expect("create")
                    .json()
                    .await
                    .expect("json");
                let id = created["id"].as_str().expect("id").to_string();
                if (client + n) % 2 == 0 {
                    let status = http
                        .delete(format!("{base}/memories/{id}"))
                        .send()
                        .await
                        .expect("delete")
                        .status();
                    assert_eq!(status, 202);
                    deleted.push(id);
                } else {
                    let status = http
                        .patch(format!("{base}/memories/{id}"))
                        .json(&json!({"content": format!("patched {client}-{n}")}))
                        .send()
                        .await
                        .expect("patch")
                        .status();
                    assert_eq!(status, 202);
                    patched.push((id, format!("patched {client}-{n}")));
                }
            }
            (deleted, patched)
        }));
    }
    let mut deleted = Vec::new();
    let mut patched = Vec::new();
    for task in tasks {
        let (d, p) = task.await.expect("client");
        deleted.extend(d);
        patched.extend(p);
    }
    // One memory, PATCHed on two fields at once, many times.
    let shared: Value = http
        .post(format!("{base}/memories"))
        .json(&json!({"content": "shared", "type": "episodic", "importance": 0.5}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let shared = shared["id"].as_str().expect("id").to_string();
    let mut concurrent = Vec::new();
    for n in 0..10 {
        let (http, base, shared) = (http.clone(), base.to_string(), shared.clone());
        concurrent.push(tokio::spawn(async move {
            let body = if n % 2 == 0 {
                json!({"content": format!("shared {n}")})
            } else {
                json!({"importance": 0.9})
            };
            http.patch(format!("{base}/memories/{shared}"))
                .json(&body)
                .send()
                .await
                .expect("patch")
                .status()
        }));
    }
    for task in concurrent {
        assert_eq!(task.await.expect("patch"), 202);
    }
    assert!(
        eventually(Duration::from_secs(60), drained).await,
        "the queue never drained"
    );
    let mut resurrected = 0;
    for id in &deleted {
        let status = http
            .get(format!("{base}/memories/{id}"))
            .send()
            .await
            .expect("get")
            .status();
        resurrected += usize::from(status != 404);
    }
    let mut undone = 0;
    for (id, content) in &patched {
        let memory: Value = http
            .get(format!("{base}/memories/{id}"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if memory["content"] != content.as_str() || memory["status"] != "ready" {
            let uuid = uuid::Uuid::parse_str(id).expect("uuid");
            let stored = vectors.retrieve(uuid).await.expect("vector store");
            let stored = stored.and_then(|memory| memory.get("content").cloned());
            println!("undone: {content} → reads {memory}, the vector store holds {stored:?}");
            undone += 1;
        }
    }
    let memory: Value = http
        .get(format!("{base}/memories/{shared}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    println!(
        "{} deleted, {resurrected} readable again; {} patched, {undone} not showing their PATCH; shared: {memory}",
        deleted.len(),
        patched.len()
    );
    assert_eq!(resurrected, 0, "deleted memories came back");
    assert_eq!(undone, 0, "acknowledged PATCHes were undone");
    assert_eq!(memory["importance"], 0.9, "both fields' PATCHes apply");
    assert!(
        memory["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("shared ")),
        "{memory}"
    );
    assert_eq!(memory["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_and_at_once_its_delete_or_patch_apply_in_order_with_redis_and_workers() {
    let cluster = Cluster::start(2).await;
    cluster.openai.set_delay(Duration::from_millis(150));
    race_creates_with_deletes_and_patches(&cluster.url(""), &cluster.backends.vectors, || {
        cluster.drained()
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_and_at_once_its_delete_or_patch_apply_in_order_embedded() {
    let data = tempfile::tempdir().expect("dir");
    let config = test_config(data.path(), None, None, None);
    let (proxy, backends) = start_proxy_with_backends(config).await.expect("proxy");
    let base = format!("http://{}", proxy.api_addr);
    let admin = proxy.admin_addr;
    race_creates_with_deletes_and_patches(&base, &backends.vectors, || async move {
        // The worker exports its queue's depth once a second: wait for a figure taken after
        // the last write.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let metrics = memgate_testkit::scrape_metrics(admin).await;
        memgate_testkit::metric_value(&metrics, "memgate_queue_length{stream=\"writes\"}")
            == Some(0.0)
            && memgate_testkit::metric_value(&metrics, "memgate_queue_length{stream=\"assoc\"}")
                == Some(0.0)
    })
    .await;
    proxy.shutdown().await;
}
