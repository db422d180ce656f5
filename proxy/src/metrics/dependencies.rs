//! What the guards count (`crate::guard`): each call to a dependency, its failures, and the
//! circuit breakers.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::BreakerMetrics;
use super::{register, LATENCY_BUCKETS};

#[derive(Clone)]
pub struct DependencyMetrics {
    /// `dependency` (`redis`, `memory`, `qdrant`, `edge`, `embeddings`, `upstream`), `op`.
    pub duration: HistogramVec,
    /// `dependency`.
    pub errors: IntCounterVec,
    /// Circuit breaker state and transitions, `dependency`.
    pub breakers: BreakerMetrics,
}

impl DependencyMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let dependency_duration = register(
            registry,
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
            registry,
            IntCounterVec::new(
                Opts::new(
                    "memgate_dependency_errors_total",
                    "Failed calls to a dependency",
                ),
                &["dependency"],
            )
            .expect("valid metric"),
        );
        let breakers = BreakerMetrics::new();
        register(registry, breakers.state.clone());
        register(registry, breakers.transitions.clone());
        Self {
            duration: dependency_duration,
            errors: dependency_errors,
            breakers,
        }
    }
    /// Times one dependency call and counts its failure.
    pub async fn observe<T, E>(
        &self,
        dependency: &str,
        op: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let timer = self
            .duration
            .with_label_values(&[dependency, op])
            .start_timer();
        let result = call.await;
        timer.observe_duration();
        if result.is_err() {
            self.errors.with_label_values(&[dependency]).inc();
        }
        result
    }
}
