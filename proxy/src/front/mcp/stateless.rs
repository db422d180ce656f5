//! The 2026-07-28 revision on `/mcp`: each POST one request, checked against its headers
//! ([`super::modern::check`]) and answered in its response, with no session kept.
//!
//! What a session held is taken from the request itself: the tenant and token from its headers
//! as for any request, the metadata from `Memory-Metadata`, the rollout route sticky by the
//! configured header, the metadata's `user`, or the tenant
//! ([`super::front::McpFront::request_session`]). The tools are answered exactly as for a
//! session; calls memgate does not answer go to the legacy service over memgate's own
//! (2025-era) session, without the protocol's `_meta` keys.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use super::front::{own_introduction, McpFront};
use super::http_transports::{client_metadata, json, respond, HttpTransports};
use super::jsonrpc::{self, Message};
use super::modern::{self, Checked};
use super::session::{ClientSession, SessionIdentity, Transport};
use super::tasks::{wants_tasks, TASKS_EXTENSION};
use crate::front::error::ApiError;
use crate::front::routing::RoutePath;
use crate::keys::Scope;
use crate::layout::parse_metadata;

/// Methods whose results carry caching hints (`ttlMs`, `cacheScope`).
const CACHEABLE: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

impl McpFront {
    /// The stand-in session of one stateless request (2026-07-28): who sent it, from its
    /// headers and metadata as a session's opening request would say, and its route, sticky
    /// by the configured header, else the metadata's `user`, else the tenant, else one route
    /// for every anonymous client (`crate::front::mcp::stateless`).
    pub fn request_session(
        &self,
        headers: &HeaderMap,
        metadata: Option<String>,
        scope: Scope,
    ) -> Result<Arc<ClientSession>, ApiError> {
        let user = metadata.as_deref().map(parse_metadata).and_then(|pairs| {
            pairs
                .get("user")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let sticky = scope.value().unwrap_or("anonymous").to_string();
        let route = match &self.upstream {
            None => RoutePath::Fast,
            Some(_) => self
                .router
                .choose_for_session(headers, user.as_deref(), &sticky)?,
        };
        // Within the tenant (the key space's scope), a client is its metadata's user.
        let client = match &user {
            Some(user) => format!("user:{user}"),
            None => "anonymous".to_string(),
        };
        let identity = SessionIdentity {
            metadata,
            scope,
            route,
            client: Some(client),
        };
        Ok(Arc::new(ClientSession::new(
            Uuid::new_v4().to_string(),
            Transport::Stateless,
            identity,
        )))
    }

    /// What `initialize` would say (the legacy service's introduction, else memgate's), without
    /// a protocol version: for `server/discover`.
    pub async fn introduction(&self) -> Value {
        let mut answer = self.initialize(None).await;
        if let Value::Object(map) = &mut answer {
            map.remove("protocolVersion");
        }
        answer
    }

    /// Who answers, as results' `_meta` names it: the legacy service's `serverInfo` once its
    /// session is open, else memgate's (never waited for).
    pub fn server_info(&self) -> Value {
        self.upstream
            .as_ref()
            .and_then(|upstream| upstream.handshake())
            .and_then(|handshake| handshake.initialize.get("serverInfo").cloned())
            .unwrap_or_else(|| own_introduction()["serverInfo"].clone())
    }
}

impl HttpTransports {
    /// One modern message, answered.
    pub(super) async fn stateless(
        &self,
        parts: &http::request::Parts,
        body: Value,
        scope: Result<Scope, ApiError>,
    ) -> crate::front::http::Response {
        let Checked {
            message,
            client_capabilities,
            ..
        } = match modern::check(&parts.headers, body) {
            Ok(checked) => checked,
            Err(refusal) => return json(refusal.status, &refusal.body),
        };
        let tasks = wants_tasks(client_capabilities.as_ref());
        let Message::Request { id, method, params } = message else {
            // This revision defines no notification a client sends over HTTP.
            return respond(StatusCode::ACCEPTED, "text/plain", "");
        };
        let mut server_info = self.front.server_info();
        let cacheable = CACHEABLE.contains(&method.as_str());
        let answer = if method == "server/discover" {
            let (result, introduced) = self.discover().await;
            server_info = introduced;
            jsonrpc::result(id, result)
        } else {
            let scope = match scope {
                Ok(scope) => scope,
                Err(error) => return error.into_response(),
            };
            let session =
                match self
                    .front
                    .request_session(&parts.headers, client_metadata(parts), scope)
                {
                    Ok(session) => session,
                    Err(error) => return error.into_response(),
                };
            if method.starts_with("tasks/") {
                let scope = &session.identity.scope;
                match self.front.task_call(scope, &method, params.as_ref()).await {
                    Ok(result) => jsonrpc::result(id, result),
                    Err(mut error) => {
                        error["id"] = id;
                        error
                    }
                }
            } else {
                let store = tasks && is_store(&method, params.as_ref());
                let request = Message::Request { id, method, params };
                match self.front.handle(&session, request).await {
                    Some(answer) if store => self.as_task(answer),
                    Some(answer) => answer,
                    // Cancelled: the client is gone.
                    None => return respond(StatusCode::NO_CONTENT, "text/plain", ""),
                }
            }
        };
        match answer.get("result").cloned() {
            Some(result) => {
                let mut answer = answer;
                answer["result"] = modern::complete(result, &server_info, cacheable);
                json(StatusCode::OK, &answer)
            }
            None => json(modern::status_of_error(&answer), &answer),
        }
    }

    /// A store's answer as a task, when memgate acknowledged it (a memory, not an error).
    fn as_task(&self, mut answer: Value) -> Value {
        let memory = answer
            .pointer("/result/content/0/text")
            .and_then(Value::as_str)
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        if let Some(task) = memory.and_then(|memory| self.front.created_task(&memory)) {
            answer["result"] = task;
        }
        answer
    }

    /// `server/discover`: the revisions served, and the introduction a 2025-era client gets
    /// at `initialize` (the legacy service's capabilities and instructions); and its
    /// `serverInfo`, for the result's `_meta`.
    async fn discover(&self) -> (Value, Value) {
        let mut result = self.front.introduction().await;
        let mut server_info = self.front.server_info();
        if let Value::Object(map) = &mut result {
            if let Some(introduced) = map.remove("serverInfo") {
                server_info = introduced;
            }
            map.insert(
                "supportedVersions".into(),
                serde_json::json!(modern::supported_versions()),
            );
            if let Some(Value::Object(capabilities)) = map.get_mut("capabilities") {
                let extensions = capabilities
                    .entry("extensions")
                    .or_insert_with(|| serde_json::json!({}));
                extensions[TASKS_EXTENSION] = serde_json::json!({});
            }
        }
        (result, server_info)
    }
}

/// Whether a request is a `tools/call` of `store_memory`.
fn is_store(method: &str, params: Option<&Value>) -> bool {
    method == "tools/call"
        && params.and_then(|p| p.get("name")).and_then(Value::as_str) == Some("store_memory")
}
