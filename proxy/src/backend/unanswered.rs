//! What a guard (`crate::guard`) says in place of a dependency's answer, and what every backend
//! error can tell about its dependency. Each backend's error has an `Unanswered` variant, so a
//! guarded backend keeps its trait and its error type.

use std::time::Duration;

/// A call that got no answer from its dependency: refused by the circuit breaker, or cut
/// short by the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unanswered {
    #[error("{dependency} is failing; circuit open for another {retry_after:?}")]
    BreakerOpen {
        dependency: &'static str,
        /// When a call may be let through again.
        retry_after: Duration,
    },
    #[error("{dependency} did not answer within {after:?}")]
    TimedOut {
        dependency: &'static str,
        after: Duration,
    },
}

/// A backend's error: whether a guard stood in for the dependency, and whether the dependency
/// answered (a failure that says nothing against its health).
pub trait BackendError: std::error::Error + From<Unanswered> + Send + Sync + 'static {
    /// The guard's word, when the dependency was not heard.
    fn unanswered(&self) -> Option<&Unanswered>;

    /// Whether the dependency answered and is up, though the call failed (a full Redis
    /// refusing a write): such a failure leaves its breaker closed.
    fn is_answer(&self) -> bool {
        false
    }

    /// Whether the call was skipped because the dependency's breaker is open (expected while
    /// it is down: not worth a warning per call).
    fn breaker_open(&self) -> bool {
        matches!(self.unanswered(), Some(Unanswered::BreakerOpen { .. }))
    }

    /// Whether the call was cut short by its timeout (the dependency may have acted on it).
    fn timed_out(&self) -> bool {
        matches!(self.unanswered(), Some(Unanswered::TimedOut { .. }))
    }

    /// When to try again, when the breaker says.
    fn retry_after(&self) -> Option<Duration> {
        match self.unanswered() {
            Some(Unanswered::BreakerOpen { retry_after, .. }) => Some(*retry_after),
            _ => None,
        }
    }
}
