//! The handshake on a new upstream session: `initialize` at memgate's asked revision,
//! `notifications/initialized`, and the tool list, kept for the front to serve (and asked for
//! again when the legacy service says it changed).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::session::{guard, Session};
use super::{Handshake, Resend, Upstream, UpstreamError, UpstreamTarget, ASKED_PROTOCOL_VERSION};
use crate::front::mcp::jsonrpc;

impl Upstream {
    pub(super) async fn open_with_handshake(
        self: &Arc<Self>,
    ) -> Result<Arc<Session>, UpstreamError> {
        let limit = self.settings.connect_timeout * 5;
        let session = tokio::time::timeout(limit, self.open())
            .await
            .map_err(|_| UpstreamError::Timeout(limit))??;
        match self.handshake_on(&session).await {
            Ok(()) => Ok(session),
            Err(error) => {
                session.discard();
                Err(error)
            }
        }
    }

    /// How long the handshake's answers may take: a child process may still be starting.
    fn handshake_limit(&self) -> Duration {
        match self.target {
            UpstreamTarget::Stdio(_) => self.settings.timeout,
            _ => self
                .settings
                .ping_timeout
                .max(self.settings.connect_timeout),
        }
    }

    /// A request on a session being opened, answered within the handshake's limit.
    async fn handshake_request(
        &self,
        session: &Arc<Session>,
        method: &str,
        params: Value,
    ) -> Result<Value, UpstreamError> {
        let limit = self.handshake_limit();
        let mut pending = self.start_on(session, method, Some(params)).await?;
        let answer = tokio::time::timeout(limit, &mut pending.answer).await;
        pending.done = true;
        match answer {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(_)) => Err(UpstreamError::Closed),
            Err(_) => Err(UpstreamError::Timeout(limit)),
        }
    }

    async fn handshake_on(&self, session: &Arc<Session>) -> Result<(), UpstreamError> {
        let params = json!({
            "protocolVersion": ASKED_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "memgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let answer = self
            .handshake_request(session, "initialize", params)
            .await?;
        let Some(initialize) = answer.get("result").cloned() else {
            return Err(UpstreamError::Refused(format!("initialize: {answer}")));
        };
        session.agreed(&initialize);
        session
            .send(&jsonrpc::notification(
                "notifications/initialized",
                Some(json!({})),
            ))
            .await?;
        let lists_tools = initialize
            .get("capabilities")
            .is_some_and(|c| c.get("tools").is_some());
        let tools = if lists_tools {
            let answer = self
                .handshake_request(session, "tools/list", json!({}))
                .await?;
            answer.get("result").cloned()
        } else {
            None
        };
        *guard(&self.handshake) = Some(Handshake { initialize, tools });
        Ok(())
    }

    /// Asks for the tool list again (it changed). Boxed: it opens a session, whose reader
    /// calls it.
    pub(super) fn refresh_tools(self: Arc<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move { self.refresh_tools_now().await })
    }

    async fn refresh_tools_now(self: Arc<Self>) {
        match self.call("tools/list", Some(json!({})), Resend::Safe).await {
            Ok(answer) => {
                if let Some(tools) = answer.get("result").cloned() {
                    if let Some(handshake) = guard(&self.handshake).as_mut() {
                        handshake.tools = Some(tools);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not refresh the legacy tool list"),
        }
    }
}
