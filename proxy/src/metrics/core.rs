//! What the core counts: degraded answers, write acknowledgements and conflicts, read counts
//! flushed to the cache store.

use prometheus::{HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use super::{register, LATENCY_BUCKETS};

#[derive(Clone)]
pub struct CoreMetrics {
    /// `level` (`legacy`, `keyword`, `popular`): answers given by a fallback.
    pub degraded: IntCounterVec,
    /// Time from request to acknowledged write (record and queue entry stored).
    pub write_ack: prometheus::Histogram,
    /// Updates made again because another write to the memory came first.
    pub write_conflicts: IntCounter,
    /// Batches of reads flushed to the cache store (`crate::core::reads`).
    pub access_flushed: IntCounter,
    /// Flushes that failed; their reads are kept for the next one.
    pub access_flush_errors: IntCounter,
}

impl CoreMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let degraded = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_degraded_responses_total",
                    "Answers given by a fallback because the fast path could not answer",
                ),
                &["level"],
            )
            .expect("valid metric"),
        );
        let write_ack = register(
            registry,
            prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "memgate_write_ack_seconds",
                    "Time to acknowledge a write (stored and queued)",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let write_conflicts = register(
            registry,
            IntCounter::new(
                "memgate_write_conflicts_total",
                "Updates made again because another write to the memory came first",
            )
            .expect("valid metric"),
        );
        let access_flushed = register(
            registry,
            IntCounter::new(
                "memgate_access_flushed_total",
                "Memory access records flushed to the cache store",
            )
            .expect("valid metric"),
        );
        let access_flush_errors = register(
            registry,
            IntCounter::new(
                "memgate_access_flush_errors_total",
                "Access flushes that failed and were kept for retry",
            )
            .expect("valid metric"),
        );
        Self {
            degraded,
            write_ack,
            write_conflicts,
            access_flushed,
            access_flush_errors,
        }
    }
}
