//! Prometheus metrics, all named `memgate_*`. Latencies are histograms in seconds labelled by
//! `op`, `path` and `cache`; labels never carry an id.

mod breakers;

pub use breakers::BreakerMetrics;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Buckets from 50 µs to 10 s: the fast path lives in the first few, legacy in the last.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `op`, `path`, `cache`, `status` (the status class, `2xx`..`5xx`).
    pub requests: IntCounterVec,
    /// `op`, `path`, `cache`.
    pub request_duration: HistogramVec,
    /// `dependency` (`redis`, `memory`, `qdrant`, `edge`, `embeddings`, `upstream`), `op`.
    pub dependency_duration: HistogramVec,
    /// `dependency`.
    pub dependency_errors: IntCounterVec,
    /// `code`: why a request was refused.
    pub rejected: IntCounterVec,
    pub rollout_percent: IntGauge,
    pub access_flushed: IntCounter,
    pub access_flush_errors: IntCounter,
    /// Time from request to acknowledged write (record and queue entry stored).
    pub write_ack: prometheus::Histogram,
    /// `stream` (`writes`, `assoc`).
    pub queue_length: IntGaugeVec,
    /// `stream`.
    pub queue_pending: IntGaugeVec,
    /// `stream`: entries in `{stream}:dead`.
    pub dead_letters: IntGaugeVec,
    /// `stream`: dead letters dropped to keep `{stream}:dead` bounded.
    pub dead_letters_dropped: IntGaugeVec,
    /// `stream`: workers that said they were alive within the last ten seconds.
    pub queue_consumers: IntGaugeVec,
    /// Updates made again because another write to the memory came first.
    pub write_conflicts: IntCounter,
    /// Jobs that waited for an earlier write to the same memory (`waited`), or gave up
    /// waiting and were applied out of order (`gave_up`).
    pub ordered_waits: IntCounterVec,
    /// `kind` (create, update, delete), `outcome` (done, retried, dead, unfinished).
    pub jobs: IntCounterVec,
    /// `stage` (wait: for the memory's earlier writes, its lease and a slot; enrich, upsert,
    /// total).
    pub job_duration: HistogramVec,
    pub embedding_calls: IntCounter,
    pub embedded_texts: IntCounter,
    pub access_synced: IntCounter,
    /// Enrichment calls that failed, whose fallback the layout stored instead.
    pub enrichment_fallbacks: IntCounter,
    /// Circuit breaker state and transitions, `dependency`.
    pub breakers: BreakerMetrics,
    /// `level` (`legacy`, `keyword`, `popular`): answers given by a fallback.
    pub degraded: IntCounterVec,
    /// Requests refused at once because `limits.maxInFlight` were already in flight.
    pub overloaded: IntCounter,
    /// MCP tool calls: `tool`, `path` (`fast`, `legacy`), `outcome` (`ok`, `error`,
    /// `cancelled`, `degraded`).
    pub mcp_tool_calls: IntCounterVec,
    /// Time from a tool call's arrival to its result: `tool`, `path`.
    pub mcp_tool_duration: HistogramVec,
    /// Open MCP client sessions, `transport` (`sse`, `streamable`, `stdio`).
    pub mcp_sessions: IntGaugeVec,
    /// memgate's session with the legacy MCP service: `event` (`opened`, `open_failed`, and
    /// why one was lost: `unanswered` (a ping went unanswered), `ended` (its stream or
    /// process ended), `refused` (the service no longer knows it)).
    pub upstream_sessions: IntCounterVec,
    /// Calls sent again on a new legacy session after theirs was lost (reads only).
    pub upstream_resent: IntCounter,
    /// 1 while memgate's legacy MCP session answers, 0 while it is lost or cannot be opened.
    pub upstream_up: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed and unique within this registry, so registration cannot collide.
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new("memgate_requests_total", "Memory API requests answered"),
                &["op", "path", "cache", "status"],
            )
            .expect("valid metric"),
        );
        let request_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "memgate_request_duration_seconds",
                    "Time to answer a Memory API request",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["op", "path", "cache"],
            )
            .expect("valid metric"),
        );
        let dependency_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "memgate_dependency_duration_seconds",
                    "Time spent in one call to a dependency",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["dependency", "op"],
            )
            .expect("valid metric"),
        );
        let dependency_errors = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_dependency_errors_total",
                    "Failed calls to a dependency",
                ),
                &["dependency"],
            )
            .expect("valid metric"),
        );
        let rejected = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_rejected_requests_total",
                    "Requests refused with a 4xx, by error code",
                ),
                &["code"],
            )
            .expect("valid metric"),
        );
        let rollout_percent = register(
            &registry,
            IntGauge::new(
                "memgate_rollout_percent",
                "Share of requests routed to the fast path",
            )
            .expect("valid metric"),
        );
        let access_flushed = register(
            &registry,
            IntCounter::new(
                "memgate_access_flushed_total",
                "Memory access records flushed to the cache store",
            )
            .expect("valid metric"),
        );
        let access_flush_errors = register(
            &registry,
            IntCounter::new(
                "memgate_access_flush_errors_total",
                "Access flushes that failed and were kept for retry",
            )
            .expect("valid metric"),
        );
        let write_ack = register(
            &registry,
            prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "memgate_write_ack_seconds",
                    "Time to acknowledge a write (stored and queued)",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let gauge = |name: &str, help: &str| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["stream"]).expect("valid metric"),
            )
        };
        let queue_length = gauge("memgate_queue_length", "Entries in a queue stream");
        let queue_pending = gauge(
            "memgate_queue_pending",
            "Entries taken by a worker and not finished",
        );
        let dead_letters = gauge("memgate_dead_letters", "Entries in a queue's dead letters");
        let dead_letters_dropped = gauge(
            "memgate_dead_letters_dropped",
            "Dead letters dropped to keep a queue's dead letters bounded",
        );
        let queue_consumers = gauge(
            "memgate_queue_consumers",
            "Workers consuming a queue stream (alive within the last ten seconds)",
        );
        let write_conflicts = register(
            &registry,
            IntCounter::new(
                "memgate_write_conflicts_total",
                "Updates made again because another write to the memory came first",
            )
            .expect("valid metric"),
        );
        let ordered_waits = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_ordered_waits_total",
                    "Write jobs that waited for an earlier write to the same memory",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        );
        for outcome in ["waited", "gave_up"] {
            ordered_waits.with_label_values(&[outcome]);
        }
        let jobs = register(
            &registry,
            IntCounterVec::new(
                Opts::new("memgate_jobs_total", "Write jobs by kind and outcome"),
                &["kind", "outcome"],
            )
            .expect("valid metric"),
        );
        let job_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "memgate_job_duration_seconds",
                    "Time in each stage of a write job",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["stage"],
            )
            .expect("valid metric"),
        );
        let embedding_calls = register(
            &registry,
            IntCounter::new(
                "memgate_embedding_calls_total",
                "Embedding provider calls made by workers",
            )
            .expect("valid metric"),
        );
        let embedded_texts = register(
            &registry,
            IntCounter::new("memgate_embedded_texts_total", "Texts embedded by workers")
                .expect("valid metric"),
        );
        let access_synced = register(
            &registry,
            IntCounter::new(
                "memgate_access_synced_total",
                "Memories whose new read counts were added to the vector store",
            )
            .expect("valid metric"),
        );
        let enrichment_fallbacks = register(
            &registry,
            IntCounter::new(
                "memgate_enrichment_fallbacks_total",
                "Enrichment calls that failed; the layout's fallback was stored instead",
            )
            .expect("valid metric"),
        );
        let breakers = BreakerMetrics::new();
        register(&registry, breakers.state.clone());
        register(&registry, breakers.transitions.clone());
        let degraded = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_degraded_responses_total",
                    "Answers given by a fallback because the fast path could not answer",
                ),
                &["level"],
            )
            .expect("valid metric"),
        );
        let overloaded = register(
            &registry,
            IntCounter::new(
                "memgate_overloaded_requests_total",
                "Requests refused with 503 because too many were in flight",
            )
            .expect("valid metric"),
        );
        let mcp_tool_calls = register(
            &registry,
            IntCounterVec::new(
                Opts::new("memgate_mcp_tool_calls_total", "MCP tool calls answered"),
                &["tool", "path", "outcome"],
            )
            .expect("valid metric"),
        );
        let mcp_tool_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "memgate_mcp_tool_duration_seconds",
                    "Time from an MCP tool call to its result",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["tool", "path"],
            )
            .expect("valid metric"),
        );
        let mcp_sessions = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("memgate_mcp_sessions", "Open MCP client sessions"),
                &["transport"],
            )
            .expect("valid metric"),
        );
        let upstream_sessions = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_upstream_mcp_sessions_total",
                    "memgate's sessions with the legacy MCP service: opened, failed to open, lost",
                ),
                &["event"],
            )
            .expect("valid metric"),
        );
        for event in ["opened", "open_failed", "unanswered", "ended", "refused"] {
            upstream_sessions.with_label_values(&[event]);
        }
        let upstream_resent = register(
            &registry,
            IntCounter::new(
                "memgate_upstream_mcp_resent_total",
                "Read calls sent again on a new legacy MCP session after theirs was lost",
            )
            .expect("valid metric"),
        );
        let upstream_up = register(
            &registry,
            IntGauge::new(
                "memgate_upstream_mcp_up",
                "1 while memgate's legacy MCP session answers, else 0",
            )
            .expect("valid metric"),
        );
        Self {
            upstream_sessions,
            upstream_resent,
            upstream_up,
            breakers,
            degraded,
            overloaded,
            mcp_tool_calls,
            mcp_tool_duration,
            mcp_sessions,
            access_synced,
            enrichment_fallbacks,
            write_ack,
            queue_length,
            queue_pending,
            dead_letters,
            dead_letters_dropped,
            queue_consumers,
            write_conflicts,
            ordered_waits,
            jobs,
            job_duration,
            embedding_calls,
            embedded_texts,
            registry,
            requests,
            request_duration,
            dependency_duration,
            dependency_errors,
            rejected,
            rollout_percent,
            access_flushed,
            access_flush_errors,
        }
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Times one dependency call and counts its failure.
    pub async fn observe<T, E>(
        &self,
        dependency: &str,
        op: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let timer = self
            .dependency_duration
            .with_label_values(&[dependency, op])
            .start_timer();
        let result = call.await;
        timer.observe_duration();
        if result.is_err() {
            self.dependency_errors
                .with_label_values(&[dependency])
                .inc();
        }
        result
    }
}
