//! Prometheus metrics, all named `memgate_*`, one group per layer: [`FrontMetrics`] (requests,
//! refusals, MCP), [`CoreMetrics`] (degraded answers, writes, read flushes),
//! [`DependencyMetrics`] (the guards: calls, failures, breakers) and [`WorkerMetrics`] (queues
//! and jobs). Latencies are histograms in seconds; labels never carry an id.

mod breakers;
mod core;
mod dependencies;
mod front;
mod worker;

pub use self::core::CoreMetrics;
pub use breakers::BreakerMetrics;
pub use dependencies::DependencyMetrics;
pub use front::FrontMetrics;
pub use worker::WorkerMetrics;

use prometheus::{Encoder, Registry, TextEncoder};

/// Buckets from 50 µs to 10 s: the fast path lives in the first few, legacy in the last.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Every group, registered in one registry (one `/metrics` page).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub front: FrontMetrics,
    pub core: CoreMetrics,
    pub dependencies: DependencyMetrics,
    pub worker: WorkerMetrics,
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
        Self {
            front: FrontMetrics::new(&registry),
            core: CoreMetrics::new(&registry),
            dependencies: DependencyMetrics::new(&registry),
            worker: WorkerMetrics::new(&registry),
            registry,
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
}
