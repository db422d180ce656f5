//! MCP Tasks (`io.modelcontextprotocol/tasks`, for 2026-07-28 clients that declare it): a
//! `store_memory` memgate acknowledges answers with a task, and `tasks/get` follows the write
//! until a worker has stored it.
//!
//! The task is the write itself: its id is the memory's, and its state is read from what the
//! write left, so it is durable as soon as the write is (one step in Redis, before the answer)
//! and any replica answers for it after a restart — `processing` is `working`, `ready` (or in
//! the vector store) is `completed` with the memory as cldmemory answers a store, `failed`
//! (dead-lettered) is `failed` with the reason. `tasks/cancel` of a write not yet applied
//! queues its delete behind it and marks it cancelled; of one already applied it changes
//! nothing (cancellation is cooperative).

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::front::McpFront;
use super::jsonrpc;
use crate::core::CoreError;
use crate::keys::Scope;
use crate::layout::cldmemory::tools;

pub const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// How often a client is asked to poll.
const POLL_INTERVAL_MS: u64 = 500;

/// How long a task is answered for (the cancellation mark's life).
const TASK_TTL_MS: u64 = 24 * 3600 * 1000;

/// Whether a request's client declared the tasks extension in its capabilities.
pub fn wants_tasks(client_capabilities: Option<&Value>) -> bool {
    client_capabilities
        .and_then(|c| c.get("extensions"))
        .and_then(|e| e.get(TASKS_EXTENSION))
        .is_some()
}

/// Where a task stands.
enum TaskState {
    Working,
    Completed(Value),
    Failed(String),
    Cancelled,
}

impl TaskState {
    fn status(&self) -> &'static str {
        match self {
            Self::Working => "working",
            Self::Completed(_) => "completed",
            Self::Failed(_) => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A task's fields; `created_at` from the memory when it says.
fn task(id: Uuid, state: &TaskState, created_at: Option<&str>) -> Map<String, Value> {
    let mut task = Map::new();
    task.insert("taskId".into(), json!(id.to_string()));
    task.insert("status".into(), json!(state.status()));
    let now = now();
    task.insert("createdAt".into(), json!(created_at.unwrap_or(&now)));
    task.insert("lastUpdatedAt".into(), json!(now));
    task.insert("ttlMs".into(), json!(TASK_TTL_MS));
    task.insert("pollIntervalMs".into(), json!(POLL_INTERVAL_MS));
    match state {
        TaskState::Completed(result) => {
            task.insert("result".into(), result.clone());
        }
        TaskState::Failed(reason) => {
            task.insert("statusMessage".into(), json!(reason));
            task.insert(
                "error".into(),
                json!({"code": -32603, "message": format!("the write failed: {reason}")}),
            );
        }
        TaskState::Cancelled => {
            task.insert(
                "statusMessage".into(),
                json!("cancelled before it was stored"),
            );
        }
        TaskState::Working => {
            task.insert(
                "statusMessage".into(),
                json!("acknowledged; enrichment and the vector store write are under way"),
            );
        }
    }
    task
}

fn unknown_task(id: &str) -> Value {
    jsonrpc::error(
        Value::Null,
        super::modern::INVALID_PARAMS,
        &format!("Unknown task: {id}"),
    )
}

fn unavailable(error: CoreError) -> Value {
    jsonrpc::error(Value::Null, jsonrpc::SERVER_ERROR, &error.to_string())
}

impl McpFront {
    /// The `CreateTaskResult` of a store memgate acknowledged (`memory`: its answer, with id).
    pub(super) fn created_task(&self, memory: &Value) -> Option<Value> {
        let id = memory.get("id").and_then(Value::as_str)?;
        let id = Uuid::parse_str(id).ok()?;
        let created = memory.get("createdAt").and_then(Value::as_str);
        let mut result = task(id, &TaskState::Working, created);
        result.insert("resultType".into(), json!("task"));
        Some(Value::Object(result))
    }

    /// `tasks/get`, `tasks/update` and `tasks/cancel`: the result, or the JSON-RPC error.
    pub(super) async fn task_call(
        &self,
        scope: &Scope,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Value, Value> {
        let raw = params
            .and_then(|p| p.get("taskId"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = Uuid::parse_str(raw).map_err(|_| unknown_task(raw))?;
        let (state, created) = self.task_state(scope, id).await?;
        match method {
            "tasks/get" => Ok(Value::Object(task(id, &state, created.as_deref()))),
            // No memgate task ever asks for input: nothing to update.
            "tasks/update" => Ok(json!({})),
            _ => {
                if matches!(state, TaskState::Working) {
                    self.core
                        .cancel_store(scope, id)
                        .await
                        .map_err(unavailable)?;
                }
                Ok(json!({}))
            }
        }
    }

    /// Where the write of `id` stands, and when its memory was created.
    async fn task_state(
        &self,
        scope: &Scope,
        id: Uuid,
    ) -> Result<(TaskState, Option<String>), Value> {
        if self.core.was_cancelled(scope, id).await {
            return Ok((TaskState::Cancelled, None));
        }
        // Following the write is not reading the memory: no read is counted.
        let memory = match self.core.written(scope, id).await {
            Ok(memory) => memory,
            Err(CoreError::NotFound(_)) => return Err(unknown_task(&id.to_string())),
            Err(error) => return Err(unavailable(error)),
        };
        let created = memory
            .get("createdAt")
            .and_then(Value::as_str)
            .map(str::to_string);
        let state = match memory.get("status").and_then(Value::as_str) {
            Some("processing") => TaskState::Working,
            Some("failed") => TaskState::Failed(
                memory
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the write was given up")
                    .to_string(),
            ),
            _ => {
                let shown = self.core.shown(&memory);
                TaskState::Completed(jsonrpc::text_result(tools::memory_text(Some(&shown))))
            }
        };
        Ok((state, created))
    }
}
