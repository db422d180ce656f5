//! The legacy path: forwards a request to the upstream memory service with a pooled keep-alive
//! client, streaming bodies both ways.
//!
//! Hop-by-hop headers (and any named in `Connection`) are dropped in both directions, `Host`
//! becomes the upstream's, and the client address is appended to `x-forwarded-for`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::timeout::error::Elapsed;
use tower::timeout::Timeout;
use tower::{Service, ServiceBuilder};

use crate::front::body::{body_too_large, declared_length};
use crate::front::error::ApiError;
use crate::front::http::{BoxError, Response, ResponseBody};
use crate::guard::dependency::Dependency;
use crate::guard::layer::{circuit_open, GuardLayer, GuardService};

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Settings of the legacy client.
#[derive(Debug, Clone)]
pub struct LegacySettings {
    pub base_url: Uri,
    pub connect_timeout: Duration,
    /// Time allowed for the response headers.
    pub timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub max_body_bytes: usize,
    /// memgate's own `Authorization` for the legacy service; when set it replaces the
    /// client's (which, with memgate's tokens on, was removed before).
    pub authorization: Option<http::HeaderValue>,
}

/// The pooled client, behind the upstream's breaker (transport errors, timeouts and `5xx`
/// answers count as failures) and the time allowed for the response headers.
type GuardedClient = GuardService<Timeout<Client<HttpConnector, ResponseBody>>>;

#[derive(Clone)]
pub struct LegacyClient {
    client: GuardedClient,
    settings: LegacySettings,
}

impl std::fmt::Debug for LegacyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LegacyClient {
    pub fn new(settings: LegacySettings, guard: Dependency) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(connector);
        let client = ServiceBuilder::new()
            .layer(GuardLayer::new(guard, "forward"))
            .timeout(settings.timeout)
            .service(client);
        Self { client, settings }
    }

    /// The upstream URI for a request path and query.
    fn target(&self, path_and_query: &str) -> Result<Uri, ApiError> {
        let base = &self.settings.base_url;
        let prefix = base.path().trim_end_matches('/');
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(format!("{prefix}{path_and_query}").parse().map_err(|_| {
            ApiError::bad_request("invalid_path", "the request path cannot be forwarded")
        })?);
        Uri::from_parts(parts).map_err(|_| {
            ApiError::bad_request("invalid_path", "the request path cannot be forwarded")
        })
    }

    /// Forwards a request whose body is still a stream.
    pub async fn forward<B>(
        &self,
        request: Request<B>,
        client: SocketAddr,
    ) -> Result<Response, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let limit = self.settings.max_body_bytes;
        if declared_length(request.headers()).is_some_and(|length| length > limit as u64) {
            return Err(body_too_large(limit));
        }
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        parts.uri = self.target(&path_and_query)?;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(HOST);
        if let Some(authorization) = &self.settings.authorization {
            parts
                .headers
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
        append_forwarded_for(&mut parts.headers, client);
        let body = Limited::new(body, limit)
            .map_err(BoxError::from)
            .boxed_unsync();
        let request = Request::from_parts(parts, body);

        // Ready, then called (`ServiceExt::oneshot` would do the same, but its future is not
        // provably `Send` here: rustc cannot see it through the higher-ranked lifetimes).
        let mut client = self.client.clone();
        let response = async {
            std::future::poll_fn(|cx| client.poll_ready(cx)).await?;
            client.call(request).await
        }
        .await
        .map_err(|error| self.failed(error))?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(http::Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ))
    }
}

impl LegacyClient {
    /// A forward that got no answer, as the client is told.
    fn failed(&self, error: BoxError) -> ApiError {
        if let Some(open) = circuit_open(&error) {
            return ApiError::unavailable(
                "upstream_unavailable",
                format!("the legacy service is unavailable: {open}"),
            )
            .retry_after(Some(open.retry_after));
        }
        if error.is::<Elapsed>() {
            return ApiError::new(
                http::StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "the legacy service did not answer within {:?}",
                    self.settings.timeout
                ),
            );
        }
        tracing::warn!(%error, "legacy request failed");
        ApiError::bad_gateway(
            "upstream_unavailable",
            format!("the legacy service is unavailable: {error}"),
        )
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    let ip = client.ip().to_string();
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-user-id", HeaderValue::from_static("alice"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-user-id"));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut headers = HeaderMap::new();
        let client: SocketAddr = "10.1.2.3:5555".parse().expect("addr");
        append_forwarded_for(&mut headers, client);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.1.2.3");
        append_forwarded_for(&mut headers, client);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.1.2.3, 10.1.2.3");
    }

    #[test]
    fn targets_keep_the_base_path_and_query() {
        let client = LegacyClient::new(
            LegacySettings {
                base_url: "http://legacy:3000/api/".parse().expect("uri"),
                connect_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                pool_idle_timeout: Duration::from_secs(1),
                pool_max_idle_per_host: 1,
                max_body_bytes: 1,
                authorization: None,
            },
            Dependency::with_defaults("upstream", &crate::metrics::Metrics::new()),
        );
        assert_eq!(
            client
                .target("/memories?limit=3")
                .expect("target")
                .to_string(),
            "http://legacy:3000/api/memories?limit=3"
        );
    }
}
