//! What the workers count: the queues, jobs and their stages, embeddings, read syncs and
//! enrichment fallbacks.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use super::{register, LATENCY_BUCKETS};

#[derive(Clone)]
pub struct WorkerMetrics {
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
    /// `stream`: how long the oldest unfinished entry has waited (0 when empty): the lag.
    pub queue_oldest_seconds: prometheus::GaugeVec,
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
}

impl WorkerMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let gauge = |name: &str, help: &str| {
            register(
                registry,
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
        let queue_oldest_seconds = register(
            registry,
            prometheus::GaugeVec::new(
                Opts::new(
                    "memgate_queue_oldest_seconds",
                    "How long the oldest unfinished entry of a queue has waited (0 when empty)",
                ),
                &["stream"],
            )
            .expect("valid metric"),
        );
        let queue_consumers = gauge(
            "memgate_queue_consumers",
            "Workers consuming a queue stream (alive within the last ten seconds)",
        );
        let ordered_waits = register(
            registry,
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
            registry,
            IntCounterVec::new(
                Opts::new("memgate_jobs_total", "Write jobs by kind and outcome"),
                &["kind", "outcome"],
            )
            .expect("valid metric"),
        );
        let job_duration = register(
            registry,
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
            registry,
            IntCounter::new(
                "memgate_embedding_calls_total",
                "Embedding provider calls made by workers",
            )
            .expect("valid metric"),
        );
        let embedded_texts = register(
            registry,
            IntCounter::new("memgate_embedded_texts_total", "Texts embedded by workers")
                .expect("valid metric"),
        );
        let access_synced = register(
            registry,
            IntCounter::new(
                "memgate_access_synced_total",
                "Memories whose new read counts were added to the vector store",
            )
            .expect("valid metric"),
        );
        let enrichment_fallbacks = register(
            registry,
            IntCounter::new(
                "memgate_enrichment_fallbacks_total",
                "Enrichment calls that failed; the layout's fallback was stored instead",
            )
            .expect("valid metric"),
        );
        Self {
            queue_length,
            queue_pending,
            dead_letters,
            dead_letters_dropped,
            queue_consumers,
            queue_oldest_seconds,
            ordered_waits,
            jobs,
            job_duration,
            embedding_calls,
            embedded_texts,
            access_synced,
            enrichment_fallbacks,
        }
    }
}
