//! The operator's Prometheus metrics, all named `memgate_operator_*`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `result`: `ok`, `error`, `invalid_object`.
    pub reconciles: IntCounterVec,
    /// `kind`: the error's reason (`InvalidSpec`, `SecretNotFound`, `ApiError`, …).
    pub errors: IntCounterVec,
    /// `result`.
    pub duration: HistogramVec,
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

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "memgate_operator_reconciles_total",
                "Reconciles of MemoryStores",
            ),
            &["result"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "memgate_operator_reconcile_errors_total",
                "Failed reconciles by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "memgate_operator_reconcile_duration_seconds",
                "Time to reconcile one MemoryStore",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["result"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
        ] {
            registry.register(metric).expect("unique metric names");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
        }
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
