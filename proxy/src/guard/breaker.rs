//! A circuit breaker per dependency, as linkerd's failure accrual does it:
//!
//! - **closed**: calls go through; `failureThreshold` consecutive failures open it;
//! - **open**: calls fail at once (no waiting on a dependency known to be down) until the
//!   cool-down has passed;
//! - **half-open**: exactly one call (the probe) goes through. Its success closes the breaker
//!   and resets the cool-down; its failure opens it again with the cool-down doubled, up to
//!   `maxCoolDown`.
//!
//! State is exported as `memgate_circuit_state{dependency}` (0 closed, 1 open, 2 half-open)
//! and every transition is logged and counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use crate::metrics::BreakerMetrics;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub cool_down: Duration,
    pub max_cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_millis(250),
            max_cool_down: Duration::from_secs(1),
        }
    }
}

/// A breaker's state, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// A call refused because the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{dependency} is failing; circuit open for another {retry_after:?}")]
pub struct CircuitOpen {
    pub dependency: &'static str,
    /// When a call may be let through again.
    pub retry_after: Duration,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    consecutive_failures: u32,
    /// The current cool-down: grows while probes fail.
    cool_down: Duration,
    /// While open: when the next probe may go.
    open_until: Instant,
    /// While half-open: whether the probe is out.
    probe_out: bool,
}

/// One dependency's breaker; cheap to clone (clones share the state).
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    dependency: &'static str,
    settings: BreakerSettings,
    inner: Arc<Mutex<Inner>>,
    metrics: BreakerMetrics,
}

/// Permission for one call. Report its outcome with [`Permit::success`] or
/// [`Permit::failure`]; a permit dropped without either (the caller gave up) reports nothing,
/// and a probe dropped that way lets the next call probe instead.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(
        dependency: &'static str,
        settings: BreakerSettings,
        metrics: BreakerMetrics,
    ) -> Self {
        metrics.state.with_label_values(&[dependency]).set(0);
        Self {
            dependency,
            settings,
            inner: Arc::new(Mutex::new(Inner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                cool_down: settings.cool_down,
                open_until: Instant::now(),
                probe_out: false,
            })),
            metrics,
        }
    }

    pub fn dependency(&self) -> &'static str {
        self.dependency
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Lets a call through, or says for how long calls are refused.
    pub fn try_acquire(&self) -> Result<Permit, CircuitOpen> {
        let mut inner = self.lock();
        let now = Instant::now();
        let probe = match inner.state {
            CircuitState::Closed => false,
            CircuitState::Open if now < inner.open_until => {
                return Err(self.refused(inner.open_until - now));
            }
            CircuitState::Open => {
                self.transition(&mut inner, CircuitState::HalfOpen);
                inner.probe_out = true;
                true
            }
            CircuitState::HalfOpen if inner.probe_out => {
                // The probe is out; its answer decides. Ask again in a moment.
                return Err(self.refused(Duration::from_secs(1)));
            }
            CircuitState::HalfOpen => {
                inner.probe_out = true;
                true
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            probe,
            reported: false,
        })
    }

    fn refused(&self, retry_after: Duration) -> CircuitOpen {
        CircuitOpen {
            dependency: self.dependency,
            retry_after,
        }
    }

    fn transition(&self, inner: &mut Inner, to: CircuitState) {
        if inner.state == to {
            return;
        }
        let from = inner.state;
        inner.state = to;
        self.metrics
            .state
            .with_label_values(&[self.dependency])
            .set(to.gauge_value());
        self.metrics
            .transitions
            .with_label_values(&[self.dependency, to.as_str()])
            .inc();
        match to {
            CircuitState::Open => tracing::warn!(
                dependency = self.dependency,
                from = from.as_str(),
                cool_down = ?inner.cool_down,
                failures = inner.consecutive_failures,
                "circuit opened"
            ),
            _ => tracing::info!(
                dependency = self.dependency,
                from = from.as_str(),
                to = to.as_str(),
                "circuit state changed"
            ),
        }
    }

    fn on_success(&self, probe: bool) {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => inner.consecutive_failures = 0,
            CircuitState::HalfOpen if probe => {
                inner.probe_out = false;
                inner.consecutive_failures = 0;
                inner.cool_down = self.settings.cool_down;
                self.transition(&mut inner, CircuitState::Closed);
            }
            // A call let through before the breaker opened says nothing about now.
            CircuitState::HalfOpen | CircuitState::Open => {}
        }
    }

    fn on_failure(&self, probe: bool) {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= self.settings.failure_threshold {
                    inner.open_until = Instant::now() + inner.cool_down;
                    self.transition(&mut inner, CircuitState::Open);
                }
            }
            CircuitState::HalfOpen if probe => {
                inner.probe_out = false;
                inner.consecutive_failures += 1;
                inner.cool_down = (inner.cool_down * 2).min(self.settings.max_cool_down);
                inner.open_until = Instant::now() + inner.cool_down;
                self.transition(&mut inner, CircuitState::Open);
            }
            CircuitState::HalfOpen | CircuitState::Open => {}
        }
    }

    fn on_abandoned_probe(&self) {
        let mut inner = self.lock();
        if inner.state == CircuitState::HalfOpen {
            inner.probe_out = false;
        }
    }
}

impl Permit {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.on_success(self.probe);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.on_failure(self.probe);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.on_abandoned_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerSettings {
                failure_threshold: threshold,
                cool_down: Duration::from_secs(10),
                max_cool_down: Duration::from_secs(30),
            },
            BreakerMetrics::new(),
        )
    }

    fn fail(breaker: &CircuitBreaker, times: u32) {
        for _ in 0..times {
            breaker.try_acquire().expect("closed").failure();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let breaker = breaker(3);
        fail(&breaker, 2);
        breaker.try_acquire().expect("closed").success();
        fail(&breaker, 2);
        assert_eq!(breaker.state(), CircuitState::Closed);
        fail(&breaker, 1);
        assert_eq!(breaker.state(), CircuitState::Open);
        let refused = breaker.try_acquire().expect_err("open");
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        assert_eq!(breaker.metrics.state.with_label_values(&["test"]).get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_probe_through() {
        let breaker = breaker(1);
        fail(&breaker, 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = breaker.try_acquire().expect("probe");
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        assert!(breaker.try_acquire().is_err(), "a second call waits");
        probe.success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(breaker.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_doubles_the_cool_down_up_to_the_cap() {
        let breaker = breaker(1);
        fail(&breaker, 1);
        for expected in [20, 30, 30] {
            tokio::time::advance(Duration::from_secs(30)).await;
            breaker.try_acquire().expect("probe").failure();
            let refused = breaker.try_acquire().expect_err("open again");
            assert_eq!(refused.retry_after, Duration::from_secs(expected));
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        breaker.try_acquire().expect("probe").success();
        fail(&breaker, 1);
        let refused = breaker.try_acquire().expect_err("open");
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(10),
            "a success resets the cool-down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let breaker = breaker(1);
        fail(&breaker, 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(breaker.try_acquire().expect("probe"));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        breaker.try_acquire().expect("another probe").success();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn late_answers_from_before_the_opening_change_nothing() {
        let breaker = breaker(1);
        let early = breaker.try_acquire().expect("closed");
        fail(&breaker, 1);
        early.success();
        assert_eq!(breaker.state(), CircuitState::Open);
    }
}
