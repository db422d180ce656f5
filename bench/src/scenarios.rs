//! The scenarios, in the order they run: baselines (no proxy), the fast path, the legacy
//! service, then writes (creates queue work for the worker, so they go last).
//!
//! | scenario | what is measured |
//! |---|---|
//! | `redis-get` | a direct Redis GET of a cached memory (no proxy) |
//! | `vector-search` | a direct vector search, query vector in hand (no proxy, no HTTP) |
//! | `http-floor` | `GET /memories/{not an id}` through memgate: its server, gate and routing answer `400` before the core (the HTTP hop a cached `get` cannot go below) |
//! | `get` | fast `GET /memories/{id}` of a cached memory (`x-memgate-cache: hit`) |
//! | `get-cold` | fast GET of memories never read: read from the vector store (`miss`) |
//! | `search` | fast search whose result is cached (`hit`) |
//! | `search-cold` | fast search whose embedding is cached but whose result is not: a vector search (`miss`) |
//! | `legacy-get`, `legacy-search` | `get_memory`, `search_memories` of the reference cldmemory over MCP (HTTP+SSE), to the result on the stream |
//! | `mcp-search`, `mcp-search-http` | `search_memories` through memgate's MCP front (HTTP+SSE, Streamable HTTP), result cached |
//! | `mcp-search-shadow` | `mcp-search` through a second proxy that also asks the reference 10% of its reads and compares (`shadow.sample: 0.1`) |
//! | `mcp-search-cold` | `search_memories` through memgate over HTTP+SSE, embedding cached, vector search done |
//! | `mcp-forward` | `get_memory` on sessions forced to the legacy route: forwarded by memgate to the reference |
//! | `create` | fast `POST /memories`, timed to the `202` |
//! | `mcp-store`, `mcp-store-http` | `store_memory` through memgate's MCP front, to its (acknowledging) result |
//! | `legacy-create` | the reference's `store_memory`, to its result |
//!
//! The `legacy-*` scenarios call the reference directly; the `mcp-*` ones call memgate, which
//! has the reference as its upstream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::StatusCode;
use memgate::backend::embeddings::HashingEmbedder;
use memgate::backend::vectors::{PayloadFilter, VectorQuery, VectorStore};
use redis::AsyncCommands;
use serde_json::json;
use uuid::Uuid;

use crate::dataset::{self, Dataset};
use crate::driver::{self, Failure, Op};
use crate::environment::Environment;
use crate::http_calls::{self, Call, Expect, HttpClient};
use crate::mcp_calls::Transport;
use crate::report::{Group, ScenarioResult, WorkerDrain};
use crate::{mcp_calls, progress};

/// How many memories are read over and over (the cached sets).
const HOT: usize = 200;
/// Requests a warm-up keeps in flight: enough to fill the caches in seconds while the OpenAI
/// stand-in takes its time, few enough that a one-core proxy is never overloaded.
const WARM_CONCURRENCY: usize = 64;
/// Query texts of the cold searches start here, far from the cached ones.
const COLD_QUERY_BASE: usize = 1_000_000;

/// What the runs found.
pub struct RunOutcome {
    pub scenarios: Vec<ScenarioResult>,
    /// How long the worker took after the creates, if any ran.
    pub worker: Option<WorkerDrain>,
}

#[derive(Debug, Clone)]
pub struct RunSettings {
    pub rate: u64,
    /// Of the scenarios that search the vector store (`vector-search`, `search-cold`,
    /// `mcp-search-cold`): each costs a millisecond or more of CPU.
    pub vector_rate: u64,
    pub create_rate: u64,
    pub legacy_rate: u64,
    pub seconds: u64,
    pub show_progress: bool,
    /// Run only these scenarios (all when empty); warm-ups always run.
    pub only: Vec<String>,
}

impl RunSettings {
    fn count(&self, rate: u64) -> usize {
        usize::try_from(rate.saturating_mul(self.seconds)).unwrap_or(usize::MAX)
    }
}

/// Runs every scenario; returns the results and how long the worker took after the creates.
pub struct Runner<'a> {
    env: &'a Environment,
    dataset: &'a Dataset,
    settings: RunSettings,
    client: HttpClient,
    results: Vec<ScenarioResult>,
}

impl<'a> Runner<'a> {
    pub fn new(env: &'a Environment, dataset: &'a Dataset, settings: RunSettings) -> Self {
        Self {
            env,
            dataset,
            settings,
            client: http_calls::client(),
            results: Vec::new(),
        }
    }

    fn hot_ids(&self) -> &[Uuid] {
        &self.dataset.ids[..HOT.min(self.dataset.ids.len())]
    }

    fn cold_ids(&self) -> &[Uuid] {
        &self.dataset.ids[HOT.min(self.dataset.ids.len())..]
    }

    fn gets(
        &self,
        base: &str,
        ids: &[Uuid],
        route: Option<&'static str>,
    ) -> anyhow::Result<Vec<Call>> {
        ids.iter()
            .map(|id| {
                let call = Call::get(&format!("{base}/memories/{id}"))?;
                Ok(match route {
                    Some(route) => call.route(route),
                    None => call,
                })
            })
            .collect()
    }

    fn searches(
        &self,
        texts: impl Iterator<Item = usize>,
        limit: u32,
        route: &'static str,
    ) -> anyhow::Result<Vec<Call>> {
        let url = format!("{}/memories/search", self.env.proxy_url());
        texts
            .map(|i| {
                let body =
                    json!({"query": dataset::query(i), "limit": limit, "detailLevel": "compact"});
                Ok(Call::post(&url, &body)?.route(route))
            })
            .collect()
    }

    /// `search_memories` arguments for the same queries (compact rows, cldmemory's default).
    fn legacy_searches(&self, texts: impl Iterator<Item = usize>) -> Vec<serde_json::Value> {
        texts
            .map(|i| json!({"query": dataset::query(i), "limit": 10}))
            .collect()
    }

    fn creates(
        &self,
        first: usize,
        count: usize,
        route: &'static str,
    ) -> anyhow::Result<Vec<Call>> {
        let url = format!("{}/memories", self.env.proxy_url());
        (first..first + count)
            .map(|i| {
                let body = json!({"content": dataset::sentence(i), "type": "episodic", "context": {"tags": ["bench"]}});
                Ok(Call::post(&url, &body)?.route(route))
            })
            .collect()
    }

    /// Runs `op` without recording it, closed loop (`WARM_CONCURRENCY` at a time): fills
    /// caches and connection pools at whatever rate the system answers, never overloading it.
    async fn warm(&self, label: &str, op: &Op, count: usize) -> anyhow::Result<()> {
        let bar = progress::bar(count as u64, label, self.settings.show_progress);
        let outcome = driver::run_closed(op, WARM_CONCURRENCY, count, &bar).await;
        bar.finish_and_clear();
        anyhow::ensure!(
            outcome.errors == 0,
            "{label}: {} of {count} requests failed, first: {}",
            outcome.errors,
            outcome.first_failure.unwrap_or_default()
        );
        Ok(())
    }

    /// Whether any of these scenarios runs.
    fn selected(&self, names: &[&str]) -> bool {
        self.settings.only.is_empty()
            || self
                .settings
                .only
                .iter()
                .any(|name| names.contains(&name.as_str()))
    }

    /// Runs and records one scenario.
    async fn measure(
        &mut self,
        name: &str,
        group: Group,
        what: &str,
        op: &Op,
        rate: u64,
        count: usize,
    ) {
        if !self.selected(&[name]) {
            return;
        }
        let visible = self.settings.show_progress && count as u64 > rate.saturating_mul(3);
        let bar = progress::bar(count as u64, name, visible);
        let outcome = driver::run(op, rate, count, &bar).await;
        bar.finish_and_clear();
        let result = ScenarioResult::new(name, group, what, rate, &outcome);
        eprintln!(
            "{name:>16}: p50 {:.3} ms, p99 {:.3} ms, {} errors, {} unexpected",
            result.p50_ms, result.p99_ms, result.errors, result.unexpected
        );
        if let Some(failure) = &result.first_failure {
            eprintln!("{:>16}  first failure: {failure}", "");
        }
        self.results.push(result);
    }

    pub async fn run(mut self) -> anyhow::Result<RunOutcome> {
        let s = self.settings.clone();
        let proxy = self.env.proxy_url();
        let hit = Expect::status(StatusCode::OK).with_header("x-memgate-cache", "hit");
        let miss = Expect::status(StatusCode::OK).with_header("x-memgate-cache", "miss");
        let count = s.count(s.rate);
        let vector_count = s.count(s.vector_rate);
        let mcp = mcp_calls::sessions(&self.env.legacy.url(), 16, Transport::Sse, &[]).await?;
        let through_sse = mcp_calls::sessions(&proxy, 16, Transport::Sse, &[]).await?;
        let through_http = mcp_calls::sessions(&proxy, 16, Transport::Http, &[]).await?;
        let shadowing =
            mcp_calls::sessions(&self.env.shadow_proxy_url(), 16, Transport::Sse, &[]).await?;
        let forced_legacy = [("x-memgate-route", "legacy")];
        let forwarded = mcp_calls::sessions(&proxy, 16, Transport::Sse, &forced_legacy).await?;

        // Warm up: the hot memories and the cached searches, and the embeddings of the cold
        // searches (searched once with another limit, so their results stay uncached).
        let get_hot = http_calls::op(
            &self.client,
            self.gets(&proxy, self.hot_ids(), Some("fast"))?,
            Expect::status(StatusCode::OK),
        )?;
        self.warm(
            "warming cached GETs",
            &get_hot,
            HOT.min(self.dataset.ids.len()) * 2,
        )
        .await?;
        let search_hot = self.searches(0..HOT, 10, "fast")?;
        let warm_search = http_calls::op(
            &self.client,
            search_hot.clone(),
            Expect::status(StatusCode::OK),
        )?;
        self.warm("warming cached searches", &warm_search, HOT * 2)
            .await?;
        let cold_texts = COLD_QUERY_BASE..COLD_QUERY_BASE + vector_count;
        if self.selected(&["search-cold", "mcp-search-cold"]) {
            let warm_embeddings = http_calls::op(
                &self.client,
                self.searches(cold_texts.clone(), 9, "fast")?,
                Expect::status(StatusCode::OK),
            )?;
            self.warm(
                "warming cold-search embeddings",
                &warm_embeddings,
                vector_count,
            )
            .await?;
        }
        self.settle().await?;

        // Baselines.
        let redis_get = self.redis_get().await?;
        self.measure(
            "redis-get",
            Group::Baseline,
            "Redis GET of a cached memory, no proxy",
            &redis_get,
            s.rate,
            count,
        )
        .await;
        let vector_search = self.vector_search()?;
        self.measure(
            "vector-search",
            Group::Baseline,
            "vector search in process, query vector in hand",
            &vector_search,
            s.vector_rate,
            vector_count,
        )
        .await;

        // The HTTP hop alone: refused by the front before the core.
        let floor_calls = (0..64)
            .map(|n| Ok(Call::get(&format!("{proxy}/memories/not-an-id-{n}"))?.route("fast")))
            .collect::<anyhow::Result<Vec<Call>>>()?;
        let floor = http_calls::op(
            &self.client,
            floor_calls,
            Expect::status(StatusCode::BAD_REQUEST),
        )?;
        self.measure(
            "http-floor",
            Group::Baseline,
            "GET refused before the core (not an id): memgate's HTTP hop alone",
            &floor,
            s.rate,
            count,
        )
        .await;

        // The fast path.
        let get = http_calls::op(
            &self.client,
            self.gets(&proxy, self.hot_ids(), Some("fast"))?,
            hit,
        )?;
        self.measure("get", Group::Fast, "GET, cached (L1)", &get, s.rate, count)
            .await;
        let cold_ids = self.cold_ids().to_vec();
        let get_cold = http_calls::op(
            &self.client,
            self.gets(&proxy, &cold_ids, Some("fast"))?,
            miss,
        )?;
        self.measure(
            "get-cold",
            Group::Fast,
            "GET, never read: from the vector store",
            &get_cold,
            s.rate,
            count.min(cold_ids.len()),
        )
        .await;
        let search = http_calls::op(&self.client, search_hot, hit)?;
        self.measure(
            "search",
            Group::Fast,
            "search, result cached",
            &search,
            s.rate,
            count,
        )
        .await;
        let search_cold =
            http_calls::op(&self.client, self.searches(cold_texts, 10, "fast")?, miss)?;
        self.measure(
            "search-cold",
            Group::Fast,
            "search, embedding cached, vector search done",
            &search_cold,
            s.vector_rate,
            vector_count,
        )
        .await;

        // The legacy service: the reference cldmemory over MCP.
        let legacy_count = s.count(s.legacy_rate);
        let hot_gets: Vec<serde_json::Value> = self
            .hot_ids()
            .iter()
            .map(|id| json!({"id": id.to_string()}))
            .collect();
        let legacy_get = mcp_calls::op(&mcp, "get_memory", hot_gets)?;
        self.measure(
            "legacy-get",
            Group::Legacy,
            "`get_memory` of the reference cldmemory over MCP",
            &legacy_get,
            s.legacy_rate,
            legacy_count,
        )
        .await;
        let legacy_search = mcp_calls::op(&mcp, "search_memories", self.legacy_searches(0..HOT))?;
        self.measure(
            "legacy-search",
            Group::Legacy,
            "`search_memories` of the reference cldmemory over MCP",
            &legacy_search,
            s.legacy_rate,
            legacy_count,
        )
        .await;

        // memgate's MCP front, in front of the reference.
        let mcp_search = mcp_calls::op(
            &through_sse,
            "search_memories",
            self.legacy_searches(0..HOT),
        )?;
        self.measure(
            "mcp-search",
            Group::Fast,
            "`search_memories` through memgate (HTTP+SSE), result cached",
            &mcp_search,
            s.rate,
            count,
        )
        .await;
        // The same searches through the proxy that also asks the reference 10% of them.
        let mcp_search_shadow =
            mcp_calls::op(&shadowing, "search_memories", self.legacy_searches(0..HOT))?;
        self.measure(
            "mcp-search-shadow",
            Group::Fast,
            "`search_memories` through memgate (HTTP+SSE), result cached, 10% shadowed",
            &mcp_search_shadow,
            s.rate,
            count,
        )
        .await;
        let mcp_search_http = mcp_calls::op(
            &through_http,
            "search_memories",
            self.legacy_searches(0..HOT),
        )?;
        self.measure(
            "mcp-search-http",
            Group::Fast,
            "`search_memories` through memgate (Streamable HTTP), result cached",
            &mcp_search_http,
            s.rate,
            count,
        )
        .await;
        // The cold texts' embeddings are cached; with limit 8 no result of them is.
        let cold_mcp: Vec<serde_json::Value> = (COLD_QUERY_BASE..COLD_QUERY_BASE + vector_count)
            .map(|i| json!({"query": dataset::query(i), "limit": 8}))
            .collect();
        let mcp_search_cold = mcp_calls::op(&through_sse, "search_memories", cold_mcp)?;
        self.measure(
            "mcp-search-cold",
            Group::Fast,
            "`search_memories` through memgate (HTTP+SSE), embedding cached",
            &mcp_search_cold,
            s.vector_rate,
            vector_count,
        )
        .await;
        let forwarded_gets: Vec<serde_json::Value> = self
            .hot_ids()
            .iter()
            .map(|id| json!({"id": id.to_string()}))
            .collect();
        let mcp_forward = mcp_calls::op(&forwarded, "get_memory", forwarded_gets)?;
        self.measure(
            "mcp-forward",
            Group::Legacy,
            "`get_memory` forwarded by memgate to the reference (legacy route)",
            &mcp_forward,
            s.legacy_rate,
            legacy_count,
        )
        .await;

        // Writes.
        let create_count = s.count(s.create_rate);
        let create = http_calls::op(
            &self.client,
            self.creates(10_000_000, create_count, "fast")?,
            Expect::status(StatusCode::ACCEPTED).with_header("x-memgate-path", "fast"),
        )?;
        self.measure(
            "create",
            Group::Fast,
            "create, until the 202",
            &create,
            s.create_rate,
            create_count,
        )
        .await;
        let mcp_stores = |first: usize| -> Vec<serde_json::Value> {
            (first..first + create_count)
                .map(|i| json!({"content": dataset::sentence(i), "type": "episodic", "context": {"tags": ["bench"]}}))
                .collect()
        };
        let mcp_store = mcp_calls::op(&through_sse, "store_memory", mcp_stores(30_000_000))?;
        self.measure(
            "mcp-store",
            Group::Fast,
            "`store_memory` through memgate (HTTP+SSE), acknowledged",
            &mcp_store,
            s.create_rate,
            create_count,
        )
        .await;
        let mcp_store_http = mcp_calls::op(&through_http, "store_memory", mcp_stores(40_000_000))?;
        self.measure(
            "mcp-store-http",
            Group::Fast,
            "`store_memory` through memgate (Streamable HTTP), acknowledged",
            &mcp_store_http,
            s.create_rate,
            create_count,
        )
        .await;
        let creates_run = ["create", "mcp-store", "mcp-store-http"]
            .into_iter()
            .filter(|name| self.selected(&[name]))
            .count();
        let drain = if creates_run > 0 {
            Some(
                self.wait_for_worker((create_count * creates_run) as u64)
                    .await?,
            )
        } else {
            None
        };
        let legacy_creates: Vec<serde_json::Value> = (20_000_000..20_000_000 + legacy_count)
            .map(|i| json!({"content": dataset::sentence(i), "type": "episodic", "context": {"tags": ["bench"]}}))
            .collect();
        let legacy_create = mcp_calls::op(&mcp, "store_memory", legacy_creates)?;
        self.measure(
            "legacy-create",
            Group::Legacy,
            "`store_memory` of the reference cldmemory over MCP, to its result",
            &legacy_create,
            s.legacy_rate,
            legacy_count,
        )
        .await;
        Ok(RunOutcome {
            scenarios: self.results,
            worker: drain,
        })
    }

    /// After the warm-ups read every memory once, lets the worker copy the read counts into
    /// the vector store when it does so within seconds (which moves each point out of its
    /// indexed segment; with memgate's default of minutes a run sees one sync at most) and
    /// brings the index up to date, as in a service whose reads are not all new; the runs then
    /// measure that steady state, with the syncing and indexing they cause themselves included.
    async fn settle(&self) -> anyhow::Result<()> {
        let spinner = progress::spinner("settling the index", self.settings.show_progress);
        let started = Instant::now();
        let sync = self.env.config.worker.access_sync_interval;
        if sync <= Duration::from_secs(30) {
            tokio::time::sleep(sync + Duration::from_secs(1)).await;
        }
        self.env.edge.optimize().await?;
        spinner.finish_and_clear();
        eprintln!(
            "settled the index in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// A direct GET of the hot memories' Redis keys.
    async fn redis_get(&self) -> anyhow::Result<Op> {
        let connection = self.env.redis.client().await?;
        let keys: Arc<Vec<String>> = Arc::new(
            self.hot_ids()
                .iter()
                .map(|id| self.env.memory_key(*id))
                .collect(),
        );
        let mut probe = connection.clone();
        let cached: Option<Vec<u8>> = probe.get(&keys[0]).await?;
        anyhow::ensure!(
            cached.is_some(),
            "the hot memories are not in Redis after the warm-up"
        );
        Ok(Arc::new(move |i| {
            let mut connection = connection.clone();
            let key = keys[i % keys.len()].clone();
            Box::pin(async move {
                match connection.get::<_, Option<Vec<u8>>>(&key).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(Failure::Unexpected(format!("{key} is not cached"))),
                    Err(error) => Err(Failure::Error(format!("GET {key}: {error}"))),
                }
            })
        }))
    }

    /// A direct vector search with the query vectors computed beforehand.
    fn vector_search(&self) -> anyhow::Result<Op> {
        let dimensions = usize::try_from(self.env.config.embeddings.dimensions)?;
        let embedder = HashingEmbedder::new("bench", dimensions);
        let layout = self.env.layout.clone();
        let vectors: Arc<Vec<Vec<f32>>> = Arc::new(
            (0..HOT)
                .map(|i| {
                    embedder.embed_one(&layout.query_text(&dataset::query(COLD_QUERY_BASE + i)))
                })
                .collect(),
        );
        let store = self.env.vectors();
        let ef = self.env.config.vectors.search_ef;
        let fetch = layout.search_fetch_limit(10);
        Ok(Arc::new(move |i| {
            let store = store.clone();
            let vector = vectors[i % vectors.len()].clone();
            Box::pin(async move {
                let query = VectorQuery {
                    vector,
                    filter: PayloadFilter::default(),
                    limit: fetch,
                    score_threshold: None,
                    ef,
                    exact: false,
                };
                match store.search(query).await {
                    Ok(found) if !found.is_empty() => Ok(()),
                    Ok(_) => Err(Failure::Unexpected("no results".into())),
                    Err(error) => Err(Failure::Error(format!("search: {error}"))),
                }
            })
        }))
    }

    /// Waits (at most two minutes) until the worker has stored every acknowledged create.
    async fn wait_for_worker(&self, creates: u64) -> anyhow::Result<WorkerDrain> {
        let mut connection = self.env.redis.client().await.context("redis")?;
        let stream = self.env.writes_stream();
        let started = Instant::now();
        let spinner = progress::spinner("waiting for the worker", self.settings.show_progress);
        let mut drained = false;
        while started.elapsed() < Duration::from_secs(120) {
            let backlog: u64 = connection.xlen(&stream).await?;
            if backlog == 0 {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        spinner.finish_and_clear();
        Ok(WorkerDrain {
            creates,
            seconds_after_run: started.elapsed().as_secs_f64(),
            drained,
        })
    }
}
