//! One guarded dependency on the request path: every call goes through its circuit breaker and
//! its timeout, and is timed and counted in `memgate_dependency_*`.
//!
//! The request path talks to Redis, the vector store, the embedding provider and the legacy
//! upstream only through a [`Dependency`] (the backends wrapped in `crate::guard::guarded`,
//! the legacy clients calling it), so a dependency that is down costs one failed call per
//! cool-down rather than a timeout per request. The workers call their dependencies
//! directly: they have their own retries and backoff, and a job must not be dead-lettered
//! because a breaker was open.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::backend::{BackendError, Unanswered};
use crate::guard::breaker::{CircuitBreaker, CircuitOpen};
use crate::metrics::Metrics;

/// Why a guarded call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    #[error(transparent)]
    Open(CircuitOpen),
    #[error("{dependency} did not answer within {after:?}")]
    Timeout {
        dependency: &'static str,
        after: Duration,
    },
    #[error(transparent)]
    Failed(E),
}

impl<E> CallError<E> {
    /// How long a client should wait before trying again, when the breaker knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Open(open) => Some(open.retry_after),
            _ => None,
        }
    }
}

/// A dependency's breaker and timeout.
#[derive(Clone, Debug)]
pub struct Dependency {
    breaker: CircuitBreaker,
    timeout: Option<Duration>,
    metrics: Metrics,
}

impl Dependency {
    /// `timeout: None` when the client already bounds its calls (the legacy client's own
    /// connect and response timeouts).
    pub fn new(breaker: CircuitBreaker, timeout: Option<Duration>, metrics: Metrics) -> Self {
        Self {
            breaker,
            timeout,
            metrics,
        }
    }

    /// A dependency with the default breaker and no timeout of its own.
    pub fn with_defaults(name: &'static str, metrics: &Metrics) -> Self {
        let breaker = CircuitBreaker::new(
            name,
            Default::default(),
            metrics.dependencies.breakers.clone(),
        );
        Self::new(breaker, None, metrics.clone())
    }

    /// The same dependency (one breaker) with another timeout, for calls that may take longer
    /// by design (a write that waits for Redis replicas).
    pub fn with_timeout(&self, timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    pub fn name(&self) -> &'static str {
        self.breaker.dependency()
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Calls a backend through the breaker; an error counts as a failure unless the backend
    /// answered ([`BackendError::is_answer`]). A refused or timed-out call is the backend's
    /// own error, [`Unanswered`].
    pub async fn guard<T, E: BackendError>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let answered = |result: &Result<T, E>| match result {
            Ok(_) => true,
            Err(error) => error.is_answer(),
        };
        self.call_judged(op, call, answered)
            .await
            .map_err(|error| match error {
                CallError::Failed(error) => error,
                CallError::Open(open) => E::from(Unanswered::BreakerOpen {
                    dependency: open.dependency,
                    retry_after: open.retry_after,
                }),
                CallError::Timeout { dependency, after } => {
                    E::from(Unanswered::TimedOut { dependency, after })
                }
            })
    }

    /// Calls through the breaker; any error or a timeout counts as a failure.
    pub async fn call<T, E>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CallError<E>> {
        self.call_judged(op, call, |result| result.is_ok()).await
    }

    /// Calls through the breaker; `healthy` decides whether an answer counts as a success
    /// (an upstream's `5xx` is an answer, and a failure).
    pub async fn call_judged<T, E>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, E>>,
        healthy: impl FnOnce(&Result<T, E>) -> bool,
    ) -> Result<T, CallError<E>> {
        let dependency = self.name();
        let permit = self.breaker.try_acquire().map_err(CallError::Open)?;
        let started = Instant::now();
        let outcome = match self.timeout {
            Some(after) => tokio::time::timeout(after, call).await.ok(),
            None => Some(call.await),
        };
        self.metrics
            .dependencies
            .duration
            .with_label_values(&[dependency, op])
            .observe(started.elapsed().as_secs_f64());
        let healthy = outcome.as_ref().is_some_and(healthy);
        if healthy {
            permit.success();
        } else {
            permit.failure();
            self.metrics
                .dependencies
                .errors
                .with_label_values(&[dependency])
                .inc();
        }
        match outcome {
            Some(result) => result.map_err(CallError::Failed),
            None => Err(CallError::Timeout {
                dependency,
                after: self.timeout.unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::breaker::{BreakerSettings, CircuitState};

    fn dependency(timeout: Option<Duration>) -> Dependency {
        let metrics = Metrics::new();
        let breaker = CircuitBreaker::new(
            "test",
            BreakerSettings {
                failure_threshold: 2,
                cool_down: Duration::from_secs(5),
                max_cool_down: Duration::from_secs(5),
            },
            metrics.dependencies.breakers.clone(),
        );
        Dependency::new(breaker, timeout, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_count_as_failures_and_open_the_breaker() {
        let dependency = dependency(Some(Duration::from_millis(100)));
        for _ in 0..2 {
            let result = dependency
                .call("op", async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok::<_, std::io::Error>(())
                })
                .await;
            assert!(matches!(result, Err(CallError::Timeout { .. })));
        }
        assert_eq!(dependency.breaker().state(), CircuitState::Open);
        let refused = dependency
            .call("op", async { Ok::<_, std::io::Error>(()) })
            .await;
        assert_eq!(
            refused.expect_err("open").retry_after(),
            Some(Duration::from_secs(5))
        );
    }

    #[tokio::test]
    async fn a_judge_can_call_an_answer_a_failure() {
        let dependency = dependency(None);
        for _ in 0..2 {
            let answer = dependency
                .call_judged(
                    "op",
                    async { Ok::<_, std::io::Error>(503) },
                    |r| matches!(r, Ok(status) if *status < 500),
                )
                .await;
            assert_eq!(answer.expect("an answer"), 503);
        }
        assert_eq!(dependency.breaker().state(), CircuitState::Open);
    }

    /// A backend error that says whether the backend answered.
    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("refused: full")]
        Full,
        #[error("broken")]
        Broken,
        #[error(transparent)]
        Unanswered(#[from] Unanswered),
    }

    impl BackendError for TestError {
        fn unanswered(&self) -> Option<&Unanswered> {
            match self {
                Self::Unanswered(unanswered) => Some(unanswered),
                _ => None,
            }
        }

        fn is_answer(&self) -> bool {
            matches!(self, Self::Full)
        }
    }

    #[tokio::test]
    async fn a_backend_that_answered_with_an_error_keeps_its_breaker_closed() {
        let dependency = dependency(None);
        for _ in 0..3 {
            let error = dependency
                .guard("op", async { Err::<(), _>(TestError::Full) })
                .await
                .expect_err("refused");
            assert!(matches!(error, TestError::Full));
        }
        assert_eq!(dependency.breaker().state(), CircuitState::Closed);
        for _ in 0..2 {
            let _ = dependency
                .guard("op", async { Err::<(), _>(TestError::Broken) })
                .await;
        }
        let skipped = dependency
            .guard("op", async { Ok::<_, TestError>(()) })
            .await
            .expect_err("open");
        assert!(skipped.breaker_open(), "{skipped}");
    }
}
