//! HTTP requests as scenario operations: a list of prepared calls, sent round-robin, each
//! answer checked for the status and the header that show it was served the way the scenario
//! measures (`x-memgate-cache: hit`, `x-memgate-path: legacy`, ...).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::driver::{Failure, Op};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client with room for every connection a run keeps open.
pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// One prepared request.
#[derive(Clone, Debug)]
pub struct Call {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Call {
    pub fn get(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            method: Method::GET,
            uri: url.parse()?,
            headers: Vec::new(),
            body: Bytes::new(),
        })
    }

    pub fn post(url: &str, body: &serde_json::Value) -> anyhow::Result<Self> {
        Ok(Self {
            method: Method::POST,
            uri: url.parse()?,
            headers: vec![(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from(body.to_string()),
        })
    }

    /// Forces the proxy's path (`fast` or `legacy`).
    pub fn route(mut self, path: &'static str) -> Self {
        self.headers.push((
            HeaderName::from_static("x-memgate-route"),
            HeaderValue::from_static(path),
        ));
        self
    }

    fn request(&self) -> Result<hyper::Request<Full<Bytes>>, Failure> {
        let mut request = hyper::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        request.headers_mut().extend(self.headers.iter().cloned());
        Ok(request)
    }
}

/// What a good answer looks like.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub status: StatusCode,
    pub header: Option<(&'static str, &'static str)>,
}

impl Expect {
    pub fn status(status: StatusCode) -> Self {
        Self {
            status,
            header: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }
}

/// Sends `call` and reads the whole answer.
pub async fn send(client: &HttpClient, call: &Call, expect: Expect) -> Result<(), Failure> {
    let response = client
        .request(call.request()?)
        .await
        .map_err(|error| Failure::Error(format!("{} {}: {error}", call.method, call.uri)))?;
    let status = response.status();
    let header_ok = expect.header.is_none_or(|(name, value)| {
        response
            .headers()
            .get(name)
            .is_some_and(|found| found == value)
    });
    let found_header = expect
        .header
        .and_then(|(name, _)| response.headers().get(name).cloned());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| Failure::Error(format!("{} {}: body: {error}", call.method, call.uri)))?
        .to_bytes();
    if status != expect.status {
        return Err(Failure::Error(format!(
            "{} {}: {status} (expected {}): {}",
            call.method,
            call.uri,
            expect.status,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )));
    }
    if !header_ok {
        let (name, value) = expect.header.unwrap_or_default();
        return Err(Failure::Unexpected(format!(
            "{} {}: {name} was {found_header:?}, expected {value}",
            call.method, call.uri
        )));
    }
    Ok(())
}

/// An operation sending `calls[i % len]`.
pub fn op(client: &HttpClient, calls: Vec<Call>, expect: Expect) -> anyhow::Result<Op> {
    anyhow::ensure!(!calls.is_empty(), "a scenario needs at least one request");
    let calls = Arc::new(calls);
    let client = client.clone();
    Ok(Arc::new(move |i| {
        let calls = calls.clone();
        let client = client.clone();
        Box::pin(async move { send(&client, &calls[i % calls.len()], expect).await })
    }))
}
