//! The circuit breakers' metrics (`crate::guard::breaker`).

use prometheus::{IntCounterVec, IntGaugeVec};

/// The gauges every breaker reports into.
#[derive(Clone, Debug)]
pub struct BreakerMetrics {
    pub state: IntGaugeVec,
    pub transitions: IntCounterVec,
}

impl BreakerMetrics {
    pub fn new() -> Self {
        Self {
            state: IntGaugeVec::new(
                prometheus::Opts::new(
                    "memgate_circuit_state",
                    "Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open",
                ),
                &["dependency"],
            )
            .expect("valid metric"),
            transitions: IntCounterVec::new(
                prometheus::Opts::new(
                    "memgate_circuit_transitions_total",
                    "Circuit breaker state changes per dependency",
                ),
                &["dependency", "to"],
            )
            .expect("valid metric"),
        }
    }
}

impl Default for BreakerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
