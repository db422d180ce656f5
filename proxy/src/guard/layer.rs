//! A [`Dependency`] as a tower layer, for the HTTP clients that reach the legacy service:
//! transport errors, timeouts (from a timeout layer inside it) and `5xx` answers count as
//! failures; an open breaker refuses the call with [`CircuitOpen`].
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(GuardLayer::new(dependency, "forward"))
//!     .timeout(timeout)
//!     .service(client)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::backend::Unanswered;
use crate::guard::breaker::CircuitOpen;
use crate::guard::dependency::{CallError, Dependency};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Puts a [`Dependency`] around an HTTP client service; calls are labelled `op`.
#[derive(Clone, Debug)]
pub struct GuardLayer {
    dependency: Dependency,
    op: &'static str,
}

impl GuardLayer {
    pub fn new(dependency: Dependency, op: &'static str) -> Self {
        Self { dependency, op }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            dependency: self.dependency.clone(),
            op: self.op,
        }
    }
}

/// An HTTP client service behind a [`Dependency`]. Its error is the inner service's, or a
/// [`CircuitOpen`] when the breaker refused the call.
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    inner: S,
    dependency: Dependency,
    op: &'static str,
}

impl<S> GuardService<S> {
    pub fn dependency(&self) -> &Dependency {
        &self.dependency
    }
}

impl<S, Request, Body> Service<Request> for GuardService<S>
where
    S: Service<Request, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Request: Send + 'static,
    Body: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The service made ready is the one called; a fresh clone stays behind for the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let dependency = self.dependency.clone();
        let op = self.op;
        Box::pin(async move {
            let healthy = |result: &Result<http::Response<Body>, S::Error>| {
                result
                    .as_ref()
                    .is_ok_and(|response| !response.status().is_server_error())
            };
            dependency
                .call_judged(op, inner.call(request), healthy)
                .await
                .map_err(|error| match error {
                    CallError::Failed(error) => error.into(),
                    CallError::Open(open) => Box::new(open) as BoxError,
                    CallError::Timeout { dependency, after } => {
                        Box::new(Unanswered::TimedOut { dependency, after }) as BoxError
                    }
                })
        })
    }
}

/// The breaker's refusal in an error from a [`GuardService`], if that is what it is.
pub fn circuit_open(error: &BoxError) -> Option<&CircuitOpen> {
    error.downcast_ref::<CircuitOpen>()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;
    use crate::guard::breaker::{BreakerSettings, CircuitBreaker, CircuitState};
    use crate::metrics::Metrics;

    fn guard_layer() -> GuardLayer {
        let metrics = Metrics::new();
        let breaker = CircuitBreaker::new(
            "upstream",
            BreakerSettings {
                failure_threshold: 2,
                cool_down: Duration::from_secs(5),
                max_cool_down: Duration::from_secs(5),
            },
            metrics.dependencies.breakers.clone(),
        );
        GuardLayer::new(Dependency::new(breaker, None, metrics), "forward")
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_and_timeouts_open_the_breaker_and_client_errors_do_not() {
        let upstream = service_fn(|status: u16| async move {
            if status == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            let response = http::Response::builder().status(status.max(200)).body(());
            Ok::<_, http::Error>(response.expect("a response"))
        });
        let service = ServiceBuilder::new()
            .layer(guard_layer())
            .timeout(Duration::from_secs(1))
            .service(upstream);

        for _ in 0..3 {
            let answer = service.clone().oneshot(404).await.expect("an answer");
            assert_eq!(answer.status(), 404);
        }
        assert_eq!(service.dependency().breaker().state(), CircuitState::Closed);

        let answer = service.clone().oneshot(503).await.expect("an answer");
        assert_eq!(answer.status(), 503, "a 5xx is passed on, and counted");
        let timeout = service.clone().oneshot(0).await.expect_err("timed out");
        assert!(timeout.is::<tower::timeout::error::Elapsed>(), "{timeout}");
        assert_eq!(service.dependency().breaker().state(), CircuitState::Open);

        let refused = service.clone().oneshot(200).await.expect_err("open");
        let open = circuit_open(&refused).expect("the breaker's refusal");
        assert_eq!(open.retry_after, Duration::from_secs(5));
    }
}
