//! Which fast-path reads are shadowed, and the shadow call itself: the legacy service is
//! asked the same read after the client has its answer, and the two answers are compared
//! ([`super::shadow`]).
//!
//! MCP's `search_memories` and `get_memory` are asked as they came. A REST get or search is
//! asked as the MCP call that reads the same (cldmemory has no REST API), and its answer is
//! compared with the MCP text of the core's answer to the REST request: the same answer,
//! written as the tool writes it.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::front::{is_error_text, LocalText};
use super::shadow::compare::ShadowTool;
use super::shadow::Outcome as ShadowOutcome;
use super::McpFront;
use crate::core::{row_id, Answer, CacheStatus};
use crate::keys::Scope;
use crate::layout::cldmemory::tools::{self, LocalCall};
use crate::memory::StoredMemory;

impl McpFront {
    /// Whether this call's fast-path answer is compared with the legacy service's.
    pub(super) fn admit_shadow(
        &self,
        call: &LocalCall,
    ) -> Option<(ShadowTool, OwnedSemaphorePermit)> {
        let tool = match call {
            LocalCall::Search(_) => ShadowTool::Search,
            LocalCall::Get(_) => ShadowTool::Get,
            _ => return None,
        };
        Some((tool, self.admit_read(tool)?))
    }

    /// Whether a REST read, compared as `tool`, is shadowed. When it is, the core leaves its
    /// reads to the legacy service ([`crate::core::Reads::LeftToLegacy`]) and the answer goes
    /// to [`Self::shadow_rest_get`] or [`Self::shadow_rest_search`].
    pub fn admit_rest_shadow(&self, tool: ShadowTool) -> Option<OwnedSemaphorePermit> {
        self.admit_read(tool)
    }

    fn admit_read(&self, tool: ShadowTool) -> Option<OwnedSemaphorePermit> {
        let upstream = self.upstream.as_ref()?;
        self.shadow.admit(tool, upstream.breaker_open())
    }

    /// Shadows `GET /memories/{id}`, answered with `memory` (`None`: not found).
    pub fn shadow_rest_get(
        self: &Arc<Self>,
        scope: &Scope,
        id: Uuid,
        memory: Option<&StoredMemory>,
        permit: OwnedSemaphorePermit,
    ) {
        let shown = memory.map(|memory| self.core.shown(memory));
        let read = if memory.is_some() {
            vec![id]
        } else {
            Vec::new()
        };
        let fast = LocalText::answered(tools::memory_text(shown.as_ref()), read, false);
        let params = json!({"name": ShadowTool::Get.name(), "arguments": {"id": id}});
        self.spawn_shadow(scope, ShadowTool::Get, Some(params), &fast, permit);
    }

    /// Shadows `POST /memories/search` with this body, answered with `answer`.
    pub fn shadow_rest_search(
        self: &Arc<Self>,
        scope: &Scope,
        body: &[u8],
        answer: &Answer<Vec<StoredMemory>>,
        permit: OwnedSemaphorePermit,
    ) {
        let Ok(mut arguments) = serde_json::from_slice::<Map<String, Value>>(body) else {
            // The core took this body, so it is an object; nothing to compare otherwise.
            let read: Vec<Uuid> = answer.value.iter().filter_map(row_id).collect();
            self.core.record_reads(scope, read.iter());
            self.shadow
                .count(ShadowTool::Search, ShadowOutcome::Skipped);
            return;
        };
        // The REST search answers whole memories unless told; the tool, compact rows.
        arguments
            .entry("detailLevel")
            .or_insert_with(|| Value::String("full".into()));
        let shown: Vec<Value> = answer
            .value
            .iter()
            .map(|memory| Value::Object(self.core.shown(memory)))
            .collect();
        let fast = LocalText::answered(
            tools::results_text(&shown),
            answer.value.iter().filter_map(row_id).collect(),
            answer.cache == CacheStatus::Hit,
        );
        let params = json!({"name": ShadowTool::Search.name(), "arguments": arguments});
        self.spawn_shadow(scope, ShadowTool::Search, Some(params), &fast, permit);
    }

    /// Asks the legacy service the same call after the client has its answer, and compares.
    pub(super) fn spawn_shadow(
        self: &Arc<Self>,
        scope: &Scope,
        tool: ShadowTool,
        params: Option<Value>,
        fast: &LocalText,
        permit: OwnedSemaphorePermit,
    ) {
        let scope = scope.clone();
        let Some(reading) = self.shadow.claim(&fast.read) else {
            // Another shadow call reads one of these memories: the legacy service could lose
            // one of the two counts. memgate counts this read itself.
            self.core.record_reads(&scope, fast.read.iter());
            self.shadow.count(tool, ShadowOutcome::Skipped);
            return;
        };
        let front = self.clone();
        let fast = fast.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _reading = reading;
            let arguments = params
                .as_ref()
                .and_then(|p| p.get("arguments"))
                .cloned()
                .unwrap_or(Value::Null);
            let legacy = front.forward("tools/call", params).await;
            let text = match &legacy {
                Ok(result) if !is_error_text(result) => result["content"][0]["text"].as_str(),
                _ => None,
            };
            match (text, &legacy) {
                (Some(text), Ok(result)) => {
                    // The legacy service counted this read in its payload.
                    front.learn(&scope, tool.name(), result).await;
                    front.shadow.judge(
                        tool,
                        &arguments,
                        &fast.text,
                        text,
                        fast.from_cached_results,
                    );
                }
                _ => {
                    // Nobody counted it: memgate does, as for any read it answers.
                    front.core.record_reads(&scope, fast.read.iter());
                    front.shadow.count(tool, ShadowOutcome::LegacyError);
                }
            }
        });
    }
}
