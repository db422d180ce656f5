//! One Memory API request, from classification to the response headers:
//!
//! 1. classify the operation from method and path;
//! 2. pick the path ([`Router`]): forced by `x-memgate-route`, else sticky rollout;
//! 3. fast path for get, search and create ([`FastPath`]); everything else, and every request
//!    on the legacy path, is forwarded unchanged ([`LegacyClient`]);
//! 4. stamp `x-memgate-path` and `x-memgate-cache`, and record metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{Method, Request, StatusCode};

use crate::error::ApiError;
use crate::fastpath::{CacheStatus, FastAnswer, FastPath};
use crate::http::{
    json_response, parse_json, read_body, BoxError, Response, CACHE_HEADER, PATH_HEADER,
};
use crate::keys::Scope;
use crate::legacy::LegacyClient;
use crate::memory::{parse_memory_id, CreateMemoryRequest, SearchRequest, UpdateMemoryRequest};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
use crate::metrics::Metrics;
use crate::routing::{RoutePath, Router};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    Get(&'a str),
    Search,
    Create,
    Update(&'a str),
    Delete(&'a str),
    OpenApi,
    Other,
}

impl<'a> Operation<'a> {
    pub fn classify(method: &Method, path: &'a str) -> Self {
        let rest = path.strip_prefix("/memories");
        match (method, rest) {
            (&Method::GET, _) if path == "/openapi.json" => Self::OpenApi,
            (&Method::POST, Some("" | "/")) => Self::Create,
            (&Method::POST, Some("/search")) => Self::Search,
            (method, Some(rest)) => match rest.strip_prefix('/') {
                Some(id) if !id.is_empty() && !id.contains('/') => match *method {
                    Method::GET => Self::Get(id),
                    Method::PATCH => Self::Update(id),
                    Method::DELETE => Self::Delete(id),
                    _ => Self::Other,
                },
                _ => Self::Other,
            },
            _ => Self::Other,
        }
    }

    /// The `op` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Get(_) => "get",
            Self::Search => "search",
            Self::Create => "create",
            Self::Update(_) => "update",
            Self::Delete(_) => "delete",
            Self::OpenApi => "openapi",
            Self::Other => "other",
        }
    }
}

/// Everything a request needs; shared by all connections.
pub struct ApiState {
    pub router: Router,
    pub fast: Arc<FastPath>,
    pub legacy: Option<LegacyClient>,
    pub scope_header: Option<HeaderName>,
    pub max_body_bytes: usize,
    pub metrics: Metrics,
    pub openapi: Bytes,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").finish_non_exhaustive()
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
        let path = request.uri().path().to_string();
        let operation = Operation::classify(request.method(), &path);
        let (mut response, route, cache) = self.dispatch(operation, request, client).await;
        let headers = response.headers_mut();
        headers.insert(PATH_HEADER, HeaderValue::from_static(route.as_str()));
        headers.insert(CACHE_HEADER, HeaderValue::from_static(cache.as_str()));
        let labels = [operation.label(), route.as_str(), cache.as_str()];
        self.metrics
            .request_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        let status = status_class(response.status());
        self.metrics
            .requests
            .with_label_values(&[labels[0], labels[1], labels[2], status])
            .inc();
        response
    }

    async fn dispatch<B>(
        &self,
        operation: Operation<'_>,
        request: Request<B>,
        client: SocketAddr,
    ) -> (Response, RoutePath, CacheStatus)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if operation == Operation::OpenApi {
            let response = json_response(StatusCode::OK, self.openapi.clone());
            return (response, RoutePath::Fast, CacheStatus::Bypass);
        }
        let route = match self.router.choose(request.headers(), client.ip()) {
            Ok(route) => route,
            Err(error) => return (self.reject(error), RoutePath::Fast, CacheStatus::Bypass),
        };
        let answer = match (route, operation) {
            (RoutePath::Fast, Operation::Get(id)) => self.fast_get(&request, id).await,
            (RoutePath::Fast, Operation::Search) => self.fast_search(request).await,
            (RoutePath::Fast, Operation::Create) => self.fast_create(request).await,
            (RoutePath::Fast, Operation::Update(id)) => self.fast_update(request, id).await,
            (RoutePath::Fast, Operation::Delete(id)) => self.fast_delete(&request, id).await,
            _ => {
                let response = self.forward(request, client).await;
                return (response, RoutePath::Legacy, CacheStatus::Bypass);
            }
        };
        match answer {
            Ok(answer) => {
                let cache = answer.cache;
                (fast_response(answer), RoutePath::Fast, cache)
            }
            Err(error) => (self.reject(error), RoutePath::Fast, CacheStatus::Bypass),
        }
    }

    fn reject(&self, error: ApiError) -> Response {
        if error.status.is_client_error() {
            self.metrics.rejected.with_label_values(&[error.code]).inc();
        }
        error.into_response()
    }

    /// The tenant of a fast-path request; required when scoping is on.
    fn scope<B>(&self, request: &Request<B>) -> Result<Scope, ApiError> {
        let Some(header) = &self.scope_header else {
            return Ok(Scope::UNSCOPED);
        };
        request
            .headers()
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

    async fn fast_get<B>(&self, request: &Request<B>, id: &str) -> Result<FastAnswer, ApiError> {
        let id = parse_memory_id(id)?;
        let scope = self.scope(request)?;
        self.fast.get(&scope, id).await
    }

    async fn fast_search<B>(&self, request: Request<B>) -> Result<FastAnswer, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let scope = self.scope(&request)?;
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, self.max_body_bytes).await?;
        let search = parse_json::<SearchRequest>(&body)?.normalize()?;
        self.fast.search(&scope, search).await
    }

    async fn fast_create<B>(&self, request: Request<B>) -> Result<FastAnswer, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let scope = self.scope(&request)?;
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, self.max_body_bytes).await?;
        let create = parse_json::<CreateMemoryRequest>(&body)?;
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
        self.fast.create(&scope, create, idempotency_key).await
    }

    async fn fast_update<B>(&self, request: Request<B>, id: &str) -> Result<FastAnswer, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let id = parse_memory_id(id)?;
        let scope = self.scope(&request)?;
        let (parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, self.max_body_bytes).await?;
        let update = parse_json::<UpdateMemoryRequest>(&body)?;
        self.fast.update(&scope, id, update).await
    }

    async fn fast_delete<B>(&self, request: &Request<B>, id: &str) -> Result<FastAnswer, ApiError> {
        let id = parse_memory_id(id)?;
        let scope = self.scope(request)?;
        self.fast.delete(&scope, id).await
    }

    async fn forward<B>(&self, request: Request<B>, client: SocketAddr) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(legacy) = &self.legacy else {
            return ApiError::bad_gateway(
                "no_upstream",
                "this request needs the legacy service, and upstream.url is not configured",
            )
            .into_response();
        };
        match legacy.forward(request, client).await {
            Ok(response) => response,
            Err(error) => self.reject(error),
        }
    }
}

fn fast_response(answer: FastAnswer) -> Response {
    let created_id = (answer.status == StatusCode::ACCEPTED)
        .then(|| serde_json::from_slice::<serde_json::Value>(&answer.body).ok())
        .flatten()
        .and_then(|memory| {
            memory
                .get("id")
                .and_then(|id| id.as_str().map(str::to_string))
        });
    let mut response = json_response(answer.status, answer.body);
    if let Some(id) = created_id {
        if let Ok(location) = HeaderValue::from_str(&format!("/memories/{id}")) {
            response.headers_mut().insert(LOCATION, location);
        }
    }
    response
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
    fn operations_are_classified_by_method_and_path() {
        let id = "0195b4f0-7a3c-7cc2-8d0e-3f1c2b4a5d6e";
        let path = format!("/memories/{id}");
        assert_eq!(Operation::classify(&Method::GET, &path), Operation::Get(id));
        assert_eq!(
            Operation::classify(&Method::PATCH, &path),
            Operation::Update(id)
        );
        assert_eq!(
            Operation::classify(&Method::DELETE, &path),
            Operation::Delete(id)
        );
        assert_eq!(
            Operation::classify(&Method::POST, "/memories"),
            Operation::Create
        );
        assert_eq!(
            Operation::classify(&Method::POST, "/memories/search"),
            Operation::Search
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/memories"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/memories/a/b"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/memoriesx/1"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/health"),
            Operation::Other
        );
        assert_eq!(
            Operation::classify(&Method::GET, "/openapi.json"),
            Operation::OpenApi
        );
    }
}
