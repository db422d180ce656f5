//! `memgate-bench`: seeds memories, runs every scenario open loop, and writes the results as
//! Markdown, JSON and an SVG latency plot.
//!
//! `cargo run --release -p memgate-bench -- --dataset-size 10000`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use memgate::backend::embeddings::HashingEmbedder;
use memgate_bench::environment::{Environment, EnvironmentSettings};
use memgate_bench::machine::Machine;
use memgate_bench::placement::{self, Placement};
use memgate_bench::plot;
use memgate_bench::report::{ReadSyncs, Report, Seeding, Settings};
use memgate_bench::scenarios::{RunSettings, Runner};
use memgate_bench::{dataset, recall};

/// Benchmarks memgate's fast path against a reference legacy memory service on this machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Memories stored before the runs.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    dataset_size: u64,
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Requests per second of the read scenarios and baselines.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Requests per second of the scenarios that search the vector store (`vector-search`,
    /// `search-cold`, `mcp-search-cold`; each search costs a millisecond or more of CPU at
    /// 1536 dimensions); `--rate` unless given.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    vector_rate: Option<u64>,
    /// Requests per second of the `create` scenario.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    create_rate: u64,
    /// Requests per second of the legacy searches and creates (each holds a connection for
    /// hundreds of milliseconds).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    legacy_rate: u64,
    /// Latency the OpenAI-compatible stand-in adds to every call, in milliseconds.
    #[arg(long, default_value_t = 150)]
    openai_latency_ms: u64,
    /// Embedding dimensions.
    #[arg(long, default_value_t = 1536, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    dimensions: u64,
    /// How often the worker indexes what was written (`vectors.optimizeInterval`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    optimize_interval: Duration,
    /// How often the worker copies read counts into the vector store
    /// (`worker.accessSyncInterval`; memgate's default).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    access_sync_interval: Duration,
    /// Where `results.md`, `results.json` and `latency.svg` go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Give the proxy and its Redis one core, and the load generator, worker, stand-in and
    /// reference another (`taskset`'s affinity, per thread), instead of letting them share
    /// both.
    #[arg(long)]
    pin: bool,
    /// Run only these scenarios (comma-separated names, e.g. `search,search-cold`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The name of the proxy runtime's threads, which a pinned run keeps on a core of their own.
const PROXY_THREADS: &str = "proxy";

/// Queries the recall of the search ef is measured over.
const RECALL_QUERIES: usize = 200;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,qdrant_edge=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let dataset_size = usize::try_from(args.dataset_size)?;
    let vector_rate = args.vector_rate.unwrap_or(args.rate);
    // Before pinning: a pinned thread sees one core.
    let machine = Machine::describe();
    let mut placement = if args.pin {
        Placement::pinned()?
    } else {
        Placement::Unpinned
    };
    // The proxy, the rest of the system (worker, legacy service, stand-ins) and the load
    // generator (this thread) run on runtimes of their own. Unpinned, the proxy shares the
    // services' runtime and all of it shares this machine's cores. Pinned, the proxy's runtime
    // is on its core from the start, and the rest of the process moves to the other core once
    // seeding and indexing (which use both) are done.
    let services = placement::runtime("services", 2, None)?;
    let proxy_runtime = match placement.system_core() {
        Some(core) => Some(placement::runtime(PROXY_THREADS, 1, Some(core))?),
        None => None,
    };
    let proxy_handle = proxy_runtime
        .as_ref()
        .map_or_else(|| services.handle().clone(), |rt| rt.handle().clone());
    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    eprintln!("placement: {placement}");

    let env = services.block_on(Environment::start(
        &EnvironmentSettings {
            dimensions: args.dimensions,
            openai_latency: Duration::from_millis(args.openai_latency_ms),
            optimize_interval: args.optimize_interval,
            access_sync_interval: args.access_sync_interval,
            placement,
        },
        &proxy_handle,
    ))?;
    let embedder = HashingEmbedder::new("bench", usize::try_from(args.dimensions)?);
    let dataset = services.block_on(dataset::seed(
        &env.vectors(),
        env.layout.as_ref(),
        &embedder,
        dataset_size,
        !args.quiet,
    ))?;
    let (points, indexed) = env.edge.index_status().context("the collection is open")?;
    eprintln!(
        "seeded {points} memories in {:.1} s, indexed in {:.1} s ({indexed} with an HNSW index)",
        dataset.seconds_to_store, dataset.seconds_to_index
    );

    let recall = services.block_on(recall::measure(
        &env.vectors(),
        env.layout.as_ref(),
        &embedder,
        RECALL_QUERIES,
        &[
            env.config.vectors.search_ef,
            Some(16),
            Some(32),
            Some(64),
            Some(128),
        ],
    ))?;
    for result in &recall {
        eprintln!(
            "recall@10 with ef {}: {:.4}",
            result.ef.map_or("default".into(), |ef| ef.to_string()),
            result.recall_at_10
        );
    }

    if let Some(core) = placement.rest_core() {
        let moved = placement::pin_this_process_except(PROXY_THREADS, core)?;
        eprintln!("pinned {moved} threads to CPU {core}");
        // This thread is the load generator.
        match placement::make_current_thread_realtime(placement::GENERATOR_PRIORITY) {
            Ok(()) => placement.set_realtime_generator(),
            Err(error) => eprintln!("the load generator keeps the default priority: {error:#}"),
        }
    }

    let runner = Runner::new(
        &env,
        &dataset,
        RunSettings {
            rate: args.rate,
            vector_rate,
            create_rate: args.create_rate,
            legacy_rate: args.legacy_rate,
            seconds: args.seconds,
            show_progress: !args.quiet,
            only: args.only.clone(),
        },
    );
    let synced_before = load.block_on(access_synced(env.worker.admin_addr))?;
    let runs_started = std::time::Instant::now();
    let outcome = load.block_on(runner.run())?;
    let read_syncs = ReadSyncs {
        interval_seconds: args.access_sync_interval.as_secs_f64(),
        points_rewritten: load
            .block_on(access_synced(env.worker.admin_addr))?
            .saturating_sub(synced_before),
        minutes: runs_started.elapsed().as_secs_f64() / 60.0,
    };

    let mut report = Report {
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        settings: Settings {
            dataset_size,
            seconds: args.seconds,
            rate: args.rate,
            vector_rate,
            create_rate: args.create_rate,
            legacy_rate: args.legacy_rate,
            openai_latency_ms: args.openai_latency_ms,
            dimensions: args.dimensions,
            search_ef: env.config.vectors.search_ef,
            placement,
        },
        seeding: Seeding {
            memories: points,
            seconds_to_store: dataset.seconds_to_store,
            seconds_to_index: dataset.seconds_to_index,
            indexed_points: indexed,
        },
        worker: outcome.worker,
        read_syncs: Some(read_syncs),
        recall,
        scenarios: outcome.scenarios,
        comparisons: Vec::new(),
        targets: Vec::new(),
    };
    report.evaluate();
    write_outputs(&args.out, &report)?;
    // The proxy's own view (dependency call times, cache hits), for where the time went.
    let metrics = load.block_on(proxy_metrics(env.proxy.admin_addr))?;
    std::fs::write(args.out.join("proxy-metrics.txt"), metrics)?;
    println!("{}", report.markdown());
    eprintln!("results in {}", args.out.display());
    let data = services.block_on(env.shutdown());
    // Edge flushes its shard when the last handle goes, possibly on a blocking thread: the
    // runtime (which waits for those) goes before the directory does.
    drop(proxy_runtime);
    drop(services);
    drop(data);
    Ok(())
}

/// The worker's `memgate_access_synced_total`: memories whose reads it added to the payload.
async fn access_synced(admin: std::net::SocketAddr) -> anyhow::Result<u64> {
    let metrics = proxy_metrics(admin).await?;
    Ok(metrics
        .lines()
        .find_map(|line| line.strip_prefix("memgate_access_synced_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64))
}

async fn proxy_metrics(admin: std::net::SocketAddr) -> anyhow::Result<String> {
    use http_body_util::BodyExt;
    let client = memgate_bench::http_calls::client();
    let response = client
        .get(format!("http://{admin}/metrics").parse()?)
        .await
        .context("proxy /metrics")?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn write_outputs(dir: &std::path::Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, contents: String| {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    };
    write("results.md", report.markdown())?;
    write("results.json", serde_json::to_string_pretty(report)?)?;
    write("latency.svg", plot::svg(report))?;
    Ok(())
}
