//! One Memory API request, from classification to the response headers:
//!
//! 1. classify the operation from method and path;
//! 2. pick the path ([`Router`]): forced by `x-memgate-route`, else sticky rollout;
//! 3. on the fast path, the Memory API's operations (get, search, create, update, delete) are
//!    answered by the [`Core`], whose errors become REST errors in one place
//!    (`impl From<CoreError> for ApiError`); everything else, and every request on the legacy
//!    path, is forwarded unchanged ([`LegacyClient`]);
//! 4. stamp `x-memgate-path` and `x-memgate-cache`, and record metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use uuid::Uuid;

use tokio::sync::OwnedSemaphorePermit;

use crate::core::{
    Answer, CacheStatus, Core, CoreError, Degraded, MemoryJson, OperationKind, Reads,
};
use crate::front::body::{parse_json, read_body};
use crate::front::error::ApiError;
use crate::front::http::{
    json_response, BoxError, Response, CACHE_HEADER, DEGRADED_HEADER, PATH_HEADER,
};
use crate::front::mcp::shadow::compare::ShadowTool;
use crate::front::mcp::shadow::Outcome as ShadowOutcome;
use crate::front::rest::endpoint::{Endpoint, Operation};
use crate::front::rest::legacy::LegacyClient;
use crate::keys::Scope;
use crate::memory::{
    parse_memory_id, InvalidRequest, SearchRequest, StoreRequest, StoredMemory, UpdateRequest,
};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The client's metadata string (cldmemory's `Memory-Metadata`), stamped on what it creates.
const MEMORY_METADATA: &str = "memory-metadata";
use crate::front::routing::{RoutePath, Router};
use crate::front::security::{Gate, WriteLimit};
use crate::metrics::Metrics;

/// Everything a request needs; shared by all connections.
pub struct ApiState {
    pub router: Router,
    pub core: Arc<Core>,
    pub legacy: Option<LegacyClient>,
    pub scope_header: Option<HeaderName>,
    /// Origin, host, content type and token checks, before anything else.
    pub gate: Arc<Gate>,
    /// `limits.writesPerSecondPerTenant`.
    pub write_limit: Option<Arc<WriteLimit>>,
    pub max_body_bytes: usize,
    /// Forward writes to legacy when the write queue is unreachable.
    pub writes_to_legacy: bool,
    pub metrics: Metrics,
    pub openapi: Bytes,
    /// MCP over HTTP: `/sse`, `/messages`, `/mcp`.
    pub mcp: crate::front::mcp::HttpTransports,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
    }
}

/// How a request was answered: the response and what the headers and metrics say about it.
struct Outcome {
    response: Response,
    route: RoutePath,
    cache: CacheStatus,
    degraded: Option<Degraded>,
}

/// Why a fast-path request got no answer from the core: the request was refused before it
/// reached the core, or the core failed.
enum Failed {
    Refused(ApiError),
    Core(CoreError),
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Self {
        Self::Refused(error)
    }
}

impl From<InvalidRequest> for Failed {
    fn from(error: InvalidRequest) -> Self {
        Self::Refused(error.into())
    }
}

impl From<CoreError> for Failed {
    fn from(error: CoreError) -> Self {
        Self::Core(error)
    }
}

impl Outcome {
    fn fast(response: Response, cache: CacheStatus) -> Self {
        Self {
            response,
            route: RoutePath::Fast,
            cache,
            degraded: None,
        }
    }

    fn legacy(response: Response) -> Self {
        Self {
            response,
            route: RoutePath::Legacy,
            cache: CacheStatus::Bypass,
            degraded: None,
        }
    }

    fn degraded(mut self, level: Degraded) -> Self {
        self.degraded = Some(level);
        self
    }

    /// A core answer, as `respond` says its value.
    fn answered<T>(answer: Answer<T>, respond: impl FnOnce(T) -> Response) -> Self {
        Self {
            response: respond(answer.value),
            route: RoutePath::Fast,
            cache: answer.cache,
            degraded: answer.degraded,
        }
    }
}

impl ApiState {
    /// Answers one request; never fails (errors become JSON error responses).
    pub async fn handle<B>(self: Arc<Self>, request: Request<B>, client: SocketAddr) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        let admitted = match self.gate.admit(&mut parts).await {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if let Some(code) = refusal.code() {
                    self.metrics.front.rejected.with_label_values(&[code]).inc();
                }
                return refusal.into_response();
            }
        };
        let request = Request::from_parts(parts, body);
        let path = request.uri().path().to_string();
        let operation = Operation::classify(request.method(), &path);
        let outcome = self.dispatch(operation, request, client).await;
        let (route, cache) = (outcome.route, outcome.cache);
        let mut response = outcome.response;
        let headers = response.headers_mut();
        headers.insert(PATH_HEADER, HeaderValue::from_static(route.as_str()));
        headers.insert(CACHE_HEADER, HeaderValue::from_static(cache.as_str()));
        if let Some(level) = outcome.degraded {
            headers.insert(DEGRADED_HEADER, HeaderValue::from_static(level.as_str()));
            self.metrics
                .core
                .degraded
                .with_label_values(&[level.as_str()])
                .inc();
        }
        let labels = [operation.label(), route.as_str(), cache.as_str()];
        self.metrics
            .front
            .request_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        let status = status_class(response.status());
        self.metrics
            .front
            .requests
            .with_label_values(&[labels[0], labels[1], labels[2], status])
            .inc();
        admitted.decorate(&mut response);
        response
    }

    async fn dispatch<B>(
        &self,
        operation: Operation<'_>,
        request: Request<B>,
        client: SocketAddr,
    ) -> Outcome
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match operation {
            Operation::OpenApi => {
                let response = json_response(StatusCode::OK, self.openapi.clone());
                return Outcome::fast(response, CacheStatus::Bypass);
            }
            Operation::McpStream | Operation::McpMessage | Operation::Mcp => {
                return Outcome::fast(self.mcp(operation, request).await, CacheStatus::Bypass);
            }
            _ => {}
        }
        if let Err(refusal) = self.take_write(operation, request.headers()) {
            return self.refused(refusal);
        }
        let route = match self.router.choose(request.headers(), client.ip()) {
            Ok(route) => route,
            Err(error) => return self.refused(error),
        };
        let fast_operation = matches!(
            operation,
            Operation::Get(_)
                | Operation::Search
                | Operation::Create
                | Operation::Update(_)
                | Operation::Delete(_)
        );
        if route == RoutePath::Legacy || !fast_operation {
            return Outcome::legacy(self.forward(request, client).await);
        }
        let (parts, body) = request.into_parts();
        let body = match read_body(&parts.headers, body, self.max_body_bytes).await {
            Ok(body) => body,
            Err(error) => return self.refused(error),
        };
        let answer = match operation {
            Operation::Search => return self.search(parts, body, client).await,
            Operation::Get(id) => self.fast_get(&parts, id).await,
            Operation::Create => self.fast_create(&parts, &body).await,
            Operation::Update(id) => self.fast_update(&parts, &body, id).await,
            Operation::Delete(id) => self.fast_delete(&parts, id).await,
            Operation::OpenApi
            | Operation::McpStream
            | Operation::McpMessage
            | Operation::Mcp
            | Operation::Other => {
                unreachable!("only fast-path operations get here")
            }
        };
        match answer {
            Ok(outcome) => outcome,
            Err(Failed::Refused(error)) => self.refused(error),
            Err(Failed::Core(error)) if self.legacy_may_answer(operation, &error) => {
                match self.legacy_fallback(parts, body, client).await {
                    Some(response) => Outcome::legacy(response).degraded(Degraded::Legacy),
                    None => self.refused(error.into()),
                }
            }
            Err(Failed::Core(error)) => self.refused(error.into()),
        }
    }

    /// Whether the legacy service may answer what the core could not (the core's rule).
    fn legacy_may_answer(&self, operation: Operation<'_>, error: &CoreError) -> bool {
        self.legacy.is_some() && error.legacy_may_answer(operation.kind(), self.writes_to_legacy)
    }

    /// MCP over HTTP: the session's tenant comes from the request that opens it.
    async fn mcp<B>(&self, operation: Operation<'_>, request: Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let scope = self.scope(&parts.headers);
        match operation {
            Operation::McpStream => self.mcp.open_sse(&parts, scope),
            Operation::McpMessage => self.mcp.post_sse_message(parts, body, scope).await,
            _ => self.mcp.streamable(parts, body, scope).await,
        }
    }

    /// The legacy service's answer to a request the fast path could not answer, unless it
    /// failed too (unreachable, open breaker, `5xx`).
    async fn legacy_fallback(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        client: SocketAddr,
    ) -> Option<Response> {
        let legacy = self.legacy.as_ref()?;
        let request = Request::from_parts(parts, Full::new(body));
        match legacy.forward(request, client).await {
            Ok(response) if !response.status().is_server_error() => Some(response),
            Ok(response) => {
                tracing::debug!(status = %response.status(), "legacy fallback failed too");
                None
            }
            Err(error) => {
                tracing::debug!(%error, "legacy fallback failed too");
                None
            }
        }
    }

    /// `POST /memories/search` down the ladder: fast path → legacy → keyword → popular; a
    /// `503` with `Retry-After` only when no rung can answer.
    async fn search(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        client: SocketAddr,
    ) -> Outcome {
        let request = self.scope(&parts.headers).and_then(|scope| {
            let request = parse_json::<SearchRequest>(&body)?;
            Ok((
                scope,
                request.normalize(self.core.default_similarity_threshold())?,
            ))
        });
        let (scope, search) = match request {
            Ok(request) => request,
            Err(error) => return self.refused(error),
        };
        let shadow = self.mcp.front.admit_rest_shadow(ShadowTool::Search);
        let reads = shadow_reads(&shadow);
        let fast_error = match self
            .core
            .search_counted_by(&scope, search.clone(), reads)
            .await
        {
            Ok(answer) => {
                if let Some(permit) = shadow {
                    self.mcp
                        .front
                        .shadow_rest_search(&scope, &body, &answer, permit);
                }
                return Outcome::answered(answer, search_response);
            }
            Err(error) => {
                if shadow.is_some() {
                    self.mcp
                        .front
                        .shadow
                        .count(ShadowTool::Search, ShadowOutcome::FastError);
                }
                if !error.legacy_may_answer(OperationKind::Read, false) {
                    return self.refused(error.into());
                }
                error
            }
        };
        if let Some(response) = self.legacy_fallback(parts, body, client).await {
            return Outcome::legacy(response).degraded(Degraded::Legacy);
        }
        match self.core.lower_rungs(&scope, &search).await {
            Some(answer) => Outcome::answered(answer, search_response),
            None => self.refused(fast_error.into()),
        }
    }

    fn refused(&self, error: ApiError) -> Outcome {
        Outcome::fast(self.reject(error), CacheStatus::Bypass)
    }

    fn reject(&self, error: ApiError) -> Response {
        if error.status.is_client_error() {
            self.metrics
                .front
                .rejected
                .with_label_values(&[error.code])
                .inc();
        }
        error.into_response()
    }

    /// One write of the request's tenant, past `limits.writesPerSecondPerTenant` refused
    /// (`429`, with when to try again); reads are not counted.
    fn take_write(
        &self,
        operation: Operation<'_>,
        headers: &http::HeaderMap,
    ) -> Result<(), ApiError> {
        let Some(limit) = &self.write_limit else {
            return Ok(());
        };
        if !matches!(
            operation,
            Operation::Create | Operation::Update(_) | Operation::Delete(_)
        ) {
            return Ok(());
        }
        let scope = self.scope(headers).unwrap_or(Scope::UNSCOPED);
        limit.take(&scope).map_err(|wait| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "write_limit",
                "this tenant is writing faster than limits.writesPerSecondPerTenant allows; \
                 try again after Retry-After",
            )
            .retry_after(Some(wait))
        })
    }

    /// The tenant of a fast-path request; required when scoping is on.
    fn scope(&self, headers: &http::HeaderMap) -> Result<Scope, ApiError> {
        let Some(header) = &self.scope_header else {
            return Ok(Scope::UNSCOPED);
        };
        headers
            .get(header)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(Scope::tenant)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "missing_scope",
                    format!("the `{header}` header is required"),
                )
            })
    }

    async fn fast_get(&self, parts: &http::request::Parts, id: &str) -> Result<Outcome, Failed> {
        let id = parse_memory_id(id)?;
        let scope = self.scope(&parts.headers)?;
        let shadow = self.mcp.front.admit_rest_shadow(ShadowTool::Get);
        let answer = self
            .core
            .get_counted_by(&scope, id, shadow_reads(&shadow))
            .await;
        if let Some(permit) = shadow {
            self.shadow_get(&scope, id, &answer, permit);
        }
        Ok(Outcome::answered(answer?, |memory| {
            json_response(StatusCode::OK, memory.into_bytes())
        }))
    }

    /// Compares a shadowed get's answer (found or not) with the legacy service's.
    fn shadow_get(
        &self,
        scope: &Scope,
        id: Uuid,
        answer: &Result<Answer<MemoryJson>, CoreError>,
        permit: OwnedSemaphorePermit,
    ) {
        let front = &self.mcp.front;
        match answer.as_ref().map(|answer| answer.value.memory()) {
            Ok(Ok(memory)) => front.shadow_rest_get(scope, id, Some(&memory), permit),
            Err(CoreError::NotFound(_)) => front.shadow_rest_get(scope, id, None, permit),
            Ok(Err(_)) | Err(_) => {
                // Answered by the legacy service or refused: nothing of the fast path's to compare.
                front
                    .shadow
                    .count(ShadowTool::Get, ShadowOutcome::FastError);
            }
        }
    }

    async fn fast_create(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Result<Outcome, Failed> {
        let scope = self.scope(&parts.headers)?;
        let create = parse_json::<StoreRequest>(body)?;
        let client_metadata = parts
            .headers
            .get(MEMORY_METADATA)
            .map(|value| {
                value.to_str().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_metadata",
                        "`Memory-Metadata` must be visible ASCII: `key:value,key2:value2`",
                    )
                })
            })
            .transpose()?;
        let idempotency_key = parts
            .headers
            .get(IDEMPOTENCY_KEY)
            .map(|value| {
                value
                    .to_str()
                    .ok()
                    .filter(|key| !key.is_empty() && key.len() <= 256)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_idempotency_key",
                            "`Idempotency-Key` must be 1 to 256 visible characters",
                        )
                    })
            })
            .transpose()?;
        let stored = self
            .core
            .store(&scope, create, idempotency_key, client_metadata)
            .await?;
        Ok(accepted(stored.id, "processing"))
    }

    async fn fast_update(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        id: &str,
    ) -> Result<Outcome, Failed> {
        let id = parse_memory_id(id)?;
        let scope = self.scope(&parts.headers)?;
        let update = parse_json::<UpdateRequest>(body)?;
        self.core.change(&scope, id, update).await?;
        Ok(accepted(id, "processing"))
    }

    async fn fast_delete(&self, parts: &http::request::Parts, id: &str) -> Result<Outcome, Failed> {
        let id = parse_memory_id(id)?;
        let scope = self.scope(&parts.headers)?;
        self.core.delete(&scope, id).await?;
        Ok(accepted(id, "deleting"))
    }

    async fn forward<B>(&self, request: Request<B>, client: SocketAddr) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(legacy) = &self.legacy else {
            return without_legacy(request.method(), request.uri().path());
        };
        match legacy.forward(request, client).await {
            Ok(response) => response,
            Err(error) => self.reject(error),
        }
    }
}

/// The answer to a request memgate does not serve itself when there is no legacy service to
/// forward it to (`serve --embedded`, or no `upstream.url`): a method one of its endpoints
/// does not take is `405` with `Allow`; a path memgate does not have is `404`; anything else
/// (a legacy-only request on the legacy path) is `502 no_upstream`.
fn without_legacy(method: &Method, path: &str) -> Response {
    match Endpoint::of(path).map(Endpoint::allow) {
        Some(allowed) if !allowed.split(", ").any(|m| m == method.as_str()) => {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} takes {allowed}, not {method}"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allowed));
            response
        }
        Some(_) => ApiError::bad_gateway(
            "no_upstream",
            "this request needs the legacy service, and upstream.url is not configured",
        )
        .into_response(),
        None => ApiError::not_found(format!(
            "{path} is not a memgate endpoint, and no legacy service (upstream.url) is configured to forward it to"
        ))
        .into_response(),
    }
}

/// `202` for an acknowledged write: `{"id","status"}`, and the memory's `Location`.
fn accepted(id: Uuid, status: &str) -> Outcome {
    let body = serde_json::json!({ "id": id, "status": status }).to_string();
    let mut response = json_response(StatusCode::ACCEPTED, Bytes::from(body));
    if let Ok(location) = HeaderValue::from_str(&format!("/memories/{id}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    Outcome::fast(response, CacheStatus::Bypass)
}

/// How the core counts a read: left to the legacy service when it is shadowed (the legacy
/// service counts the read it answers).
fn shadow_reads(shadow: &Option<OwnedSemaphorePermit>) -> Reads {
    match shadow {
        Some(_) => Reads::LeftToLegacy,
        None => Reads::Count,
    }
}

/// A search answer: `{"memories": [...]}`.
fn search_response(memories: Vec<StoredMemory>) -> Response {
    #[derive(serde::Serialize)]
    struct SearchBody {
        memories: Vec<StoredMemory>,
    }
    match serde_json::to_vec(&SearchBody { memories }) {
        Ok(body) => json_response(StatusCode::OK, Bytes::from(body)),
        Err(error) => {
            ApiError::from(crate::core::CoreError::Internal(error.to_string())).into_response()
        }
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_legacy_service_an_unserved_request_gets_405_or_404() {
        let answer = without_legacy(&Method::TRACE, "/memories/search");
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.headers()[http::header::ALLOW], "POST");
        assert_eq!(
            Operation::classify(&Method::PATCH, "/memories/search"),
            Operation::Other,
            "no memory is called `search`"
        );
        let by_id = without_legacy(
            &Method::PUT,
            "/memories/0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e",
        );
        assert_eq!(by_id.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(by_id.headers()[http::header::ALLOW], "GET, PATCH, DELETE");
        assert_eq!(
            without_legacy(&Method::GET, "/api/other").status(),
            StatusCode::NOT_FOUND
        );
        // A served method with nowhere to go (the legacy path forced): the legacy service is
        // missing, not the endpoint.
        assert_eq!(
            without_legacy(&Method::POST, "/memories/search").status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
