//! The MCP front's calls to the legacy service: a request relayed over memgate's own session
//! with it ([`Upstream`](super::upstream::Upstream)), and a tool call forwarded with memgate's
//! caches kept coherent with what it changes (what cldmemory's tools change is the layout's:
//! [`forwarded`]).

use serde_json::{json, Value};

use super::front::{McpFront, ToolAnswer};
use super::jsonrpc;
use super::session::ClientSession;
use super::upstream::{Resend, UpstreamError};
use crate::front::routing::RoutePath;
use crate::keys::Scope;
use crate::layout::cldmemory::forwarded::{self, Learned, Touched};
use crate::layout::cldmemory::tools;

impl McpFront {
    /// A tool call sent to the legacy service, with the session's metadata on stores and
    /// memgate's caches kept coherent with what it changes.
    pub(super) async fn forward_tool(
        &self,
        session: &ClientSession,
        name: &str,
        params: Option<Value>,
        degraded: bool,
    ) -> ToolAnswer {
        let mut params = params.unwrap_or_else(|| json!({}));
        if let Some(metadata) = &session.identity.metadata {
            forwarded::add_client_metadata(name, &mut params, metadata);
        }
        let touched = forwarded::touched_memories(name, params.get("arguments"));
        let scope = &session.identity.scope;
        if let Touched::Some(ids) = &touched {
            for id in ids {
                if !self
                    .core
                    .wait_stored(scope, *id, self.settings.wait_for_stored)
                    .await
                {
                    tracing::warn!(%id, tool = name, "forwarding before memgate's write of it is stored");
                }
            }
        }
        self.invalidate(scope, &touched).await;
        let answer = self.forward("tools/call", Some(params)).await;
        self.invalidate(scope, &touched).await;
        if let Ok(result) = &answer {
            self.learn(scope, name, result).await;
        }
        ToolAnswer {
            answer,
            path: RoutePath::Legacy,
            degraded,
        }
    }

    /// Keeps memgate's caches coherent with what a legacy answer shows changed: the memories a
    /// forwarded store created linked themselves into their neighbours' associations (read
    /// from the vector store, as the answer shows them before linking), and a forwarded read
    /// counted one more access of every memory it returns (their records are read again;
    /// dropped from the shared cache after the answer, see [`crate::core::forgetting`]).
    pub(super) async fn learn(&self, scope: &Scope, tool: &str, result: &Value) {
        match forwarded::learned(tool, result) {
            Learned::Created(created) => {
                let mut changed = created.clone();
                for id in created {
                    for neighbour in self.core.neighbours(id).await {
                        if !changed.contains(&neighbour) {
                            changed.push(neighbour);
                        }
                    }
                }
                self.core.invalidate(scope, &changed).await;
            }
            Learned::Read(read) => {
                // After the answer: readers here wait for the records to be gone.
                self.core.forget_records_later(scope, &read).await;
            }
            Learned::Nothing => {}
        }
    }

    async fn invalidate(&self, scope: &Scope, touched: &Touched) {
        match touched {
            Touched::None => {}
            Touched::Some(ids) => self.core.invalidate(scope, ids).await,
            Touched::All => self.core.invalidate_all().await,
        }
    }

    /// A request relayed to the legacy service: its result, or its error (or memgate's, when
    /// it could not be reached).
    pub(super) async fn forward(
        &self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, Value> {
        let Some(upstream) = &self.upstream else {
            return Err(jsonrpc::error(
                Value::Null,
                jsonrpc::METHOD_NOT_FOUND,
                "Method not found",
            ));
        };
        let resend = if tools::may_resend(method, params.as_ref()) {
            Resend::Safe
        } else {
            Resend::Never
        };
        match upstream.call(method, params, resend).await {
            Ok(mut message) => match message.get_mut("result") {
                Some(result) => Ok(result.take()),
                None => Err(message),
            },
            Err(error) => Err(unavailable(&error)),
        }
    }
}

fn unavailable(error: &UpstreamError) -> Value {
    jsonrpc::error(
        Value::Null,
        jsonrpc::SERVER_ERROR,
        &format!("memgate: {error}"),
    )
}
