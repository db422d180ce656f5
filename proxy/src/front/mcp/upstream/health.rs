//! Whether memgate's session with the legacy MCP service answers: what is said of it in
//! `/readyz`, the `memgate_upstream_mcp_*` metrics and the log, and when opening a session is
//! not worth trying yet (a forwarded call then fails at once instead of waiting out a
//! connect timeout).
//!
//! A session is *lost* when a ping goes unanswered within `upstream.mcp.pingTimeout`, its
//! event stream or process ends, or the service no longer knows it. cldmemory's SSE transport
//! answers on the stream opened last, so a session is lost for good whenever another client
//! opens (or closes) a stream on the same cldmemory; losing sessions again and again is warned
//! about, as it means the endpoint is shared.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::metrics::Metrics;

/// Losses within this window that are warned about as a pattern.
const LOSS_WINDOW: Duration = Duration::from_secs(600);
const LOSSES_WARNED: usize = 3;
/// The first and the longest wait before opening a session again after a failed open.
const MIN_REOPEN_DELAY: Duration = Duration::from_millis(250);
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(30);

/// Why a session was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// A ping (or the handshake) went unanswered.
    Unanswered,
    /// Its event stream or its process ended.
    Ended,
    /// The service answered that it does not know the session.
    Refused,
}

impl Loss {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unanswered => "unanswered",
            Self::Ended => "ended",
            Self::Refused => "refused",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::Unanswered => "it stopped answering (a ping went unanswered)",
            Self::Ended => "its event stream or process ended",
            Self::Refused => "the service no longer knows the session",
        }
    }
}

#[derive(Debug)]
enum State {
    /// No session tried yet.
    Unknown,
    Up,
    /// The last session was lost and none is open yet.
    Lost(Loss),
    /// Opening a session failed; the next try is not before `retry_at`.
    Unreachable {
        error: String,
        retry_at: Instant,
        delays: ExponentialBackoff,
    },
}

/// The state of memgate's legacy MCP session, as the rest of memgate sees it.
pub struct Health {
    metrics: Metrics,
    state: Mutex<State>,
    losses: Mutex<VecDeque<Instant>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("state", &*self.state())
            .finish_non_exhaustive()
    }
}

impl Health {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            state: Mutex::new(State::Unknown),
            losses: Mutex::new(VecDeque::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session opened and its handshake was answered.
    pub fn opened(&self) {
        self.metrics
            .front
            .upstream_sessions
            .with_label_values(&["opened"])
            .inc();
        self.metrics.front.upstream_up.set(1);
        let mut state = self.state();
        if !matches!(*state, State::Unknown | State::Up) {
            tracing::info!("the legacy MCP session is open again");
        }
        *state = State::Up;
    }

    /// Opening a session failed with `error`.
    pub fn open_failed(&self, error: &str) {
        self.metrics
            .front
            .upstream_sessions
            .with_label_values(&["open_failed"])
            .inc();
        self.metrics.front.upstream_up.set(0);
        let mut state = self.state();
        let (mut delays, first) = match std::mem::replace(&mut *state, State::Unknown) {
            State::Unreachable { delays, .. } => (delays, false),
            _ => (reopen_delays(), true),
        };
        let delay = delays.next().unwrap_or(MAX_REOPEN_DELAY);
        if first {
            tracing::warn!(%error, ?delay, "cannot open a session with the legacy MCP service; forwarded calls fail at once until it opens");
        } else {
            tracing::debug!(%error, ?delay, "the legacy MCP service is still unreachable");
        }
        *state = State::Unreachable {
            error: error.to_string(),
            retry_at: Instant::now() + delay,
            delays,
        };
    }

    /// A session was lost.
    pub fn lost(&self, loss: Loss) {
        self.metrics
            .front
            .upstream_sessions
            .with_label_values(&[loss.as_str()])
            .inc();
        self.metrics.front.upstream_up.set(0);
        *self.state() = State::Lost(loss);
        let recent = self.count_loss();
        if recent >= LOSSES_WARNED {
            tracing::warn!(
                reason = loss.explain(),
                recent,
                "the legacy MCP session keeps being lost ({recent} times in {} minutes): is its SSE endpoint shared with another client? cldmemory answers only the stream opened last, so each memgate needs a cldmemory of its own",
                LOSS_WINDOW.as_secs() / 60
            );
        } else {
            tracing::warn!(
                reason = loss.explain(),
                "the legacy MCP session was lost; opening another"
            );
        }
    }

    /// Records a loss; the losses within the window.
    fn count_loss(&self) -> usize {
        let mut losses = self.losses.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        losses.push_back(now);
        while losses
            .front()
            .is_some_and(|at| now.duration_since(*at) > LOSS_WINDOW)
        {
            losses.pop_front();
        }
        losses.len()
    }

    /// Whether a session was ever asked for (a legacy service that speaks no MCP, only
    /// forwarded REST, is never asked).
    pub fn asked(&self) -> bool {
        !matches!(*self.state(), State::Unknown)
    }

    /// While opening a session is not worth trying yet: the last failure and how long until
    /// the next try.
    pub fn unreachable(&self) -> Option<(String, Duration)> {
        match &*self.state() {
            State::Unreachable {
                error, retry_at, ..
            } => {
                let wait = retry_at.saturating_duration_since(Instant::now());
                (!wait.is_zero()).then(|| (error.clone(), wait))
            }
            _ => None,
        }
    }

    /// What `/readyz` says of the legacy service.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.state() {
            State::Unknown | State::Up => Ok(()),
            State::Lost(loss) => Err(format!(
                "the legacy MCP session was lost: {}",
                loss.explain()
            )),
            State::Unreachable { error, .. } => {
                Err(format!("cannot open a legacy MCP session: {error}"))
            }
        }
    }
}

fn reopen_delays() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(MIN_REOPEN_DELAY)
        .with_max_delay(MAX_REOPEN_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_open_is_not_tried_again_at_once_and_an_open_clears_it() {
        let health = Health::new(Metrics::new());
        assert!(health.readiness().is_ok(), "nothing known yet");
        health.open_failed("connection refused");
        let (error, wait) = health.unreachable().expect("waits before trying again");
        assert_eq!(error, "connection refused");
        assert!(wait <= MIN_REOPEN_DELAY * 2, "{wait:?}");
        assert!(health.readiness().is_err());
        health.opened();
        assert!(health.unreachable().is_none());
        assert!(health.readiness().is_ok());
        assert_eq!(health.metrics.front.upstream_up.get(), 1);
    }

    #[test]
    fn the_waits_grow_while_the_service_stays_unreachable() {
        let health = Health::new(Metrics::new());
        let mut waits = Vec::new();
        for _ in 0..6 {
            health.open_failed("down");
            waits.push(health.unreachable().expect("waiting").1);
        }
        assert!(waits[5] > waits[0], "{waits:?}");
        assert!(waits.iter().all(|wait| *wait <= MAX_REOPEN_DELAY * 2));
    }

    #[test]
    fn losses_are_counted_by_reason_and_shown_until_a_session_opens() {
        let health = Health::new(Metrics::new());
        health.opened();
        health.lost(Loss::Unanswered);
        health.lost(Loss::Ended);
        let error = health.readiness().expect_err("lost");
        assert!(error.contains("stream or process ended"), "{error}");
        let counted = |event: &str| {
            health
                .metrics
                .front
                .upstream_sessions
                .with_label_values(&[event])
                .get()
        };
        assert_eq!((counted("unanswered"), counted("ended")), (1, 1));
        assert_eq!(health.metrics.front.upstream_up.get(), 0);
        health.opened();
        assert!(health.readiness().is_ok());
    }
}
