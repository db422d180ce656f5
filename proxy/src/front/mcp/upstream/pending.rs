//! A call sent upstream and not yet answered: its wait (probing a quiet session with a ping),
//! and its cancellation upstream when it is dropped unanswered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::session::Session;
use super::Upstream;
use crate::front::mcp::jsonrpc;

/// A request sent upstream and not yet answered; dropping it cancels it upstream.
pub struct PendingCall {
    pub(super) session: Arc<Session>,
    pub(super) id: u64,
    pub(super) answer: oneshot::Receiver<Value>,
    pub(super) sent: Instant,
    pub(super) done: bool,
}

/// How a wait for an answer ended without one.
pub(super) enum Unanswered {
    /// The session was lost (or closed) before the answer came.
    Lost,
    /// No answer within the call's time, on a session that answers otherwise.
    TimedOut,
}

impl PendingCall {
    /// The answer, or why none came: while it waits longer than `ping_timeout` on a session
    /// nothing was heard from since it was sent, the session is probed with a ping.
    pub(super) async fn answer(
        mut self,
        upstream: &Upstream,
        limit: Duration,
    ) -> Result<Value, Unanswered> {
        let deadline = self.sent + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Unanswered::TimedOut);
            }
            let wait = left.min(upstream.settings.ping_timeout);
            match tokio::time::timeout(wait, &mut self.answer).await {
                Ok(Ok(message)) => {
                    self.done = true;
                    return Ok(message);
                }
                Ok(Err(_)) => return Err(Unanswered::Lost),
                Err(_) => {
                    if !upstream.answers(&self.session, self.sent).await {
                        // The answer may have come while the probe waited.
                        return match self.answer.try_recv() {
                            Ok(message) => {
                                self.done = true;
                                Ok(message)
                            }
                            Err(_) => Err(Unanswered::Lost),
                        };
                    }
                }
            }
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waited = self.session.waiting().remove(&self.id).is_some();
        if waited && !self.session.is_closed() {
            let session = self.session.clone();
            let cancel = jsonrpc::notification(
                "notifications/cancelled",
                Some(
                    json!({"requestId": self.id, "reason": "the client went away or the call timed out"}),
                ),
            );
            tokio::spawn(async move {
                let _ = session.send(&cancel).await;
            });
        }
    }
}
