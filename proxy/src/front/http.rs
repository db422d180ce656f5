//! HTTP plumbing shared by the API and admin servers: body types, JSON responses and the
//! response headers that say what happened. Reading request bodies is in
//! [`super::body`].

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;
pub type Response = http::Response<ResponseBody>;

pub const PATH_HEADER: &str = "x-memgate-path";
pub const CACHE_HEADER: &str = "x-memgate-cache";
/// Which fallback answered, when the fast path could not: `legacy`, `keyword` or `popular`.
pub const DEGRADED_HEADER: &str = "x-memgate-degraded";
pub const ROUTE_HEADER: &str = "x-memgate-route";

/// A complete body.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response without a body.
pub fn empty_response(status: StatusCode) -> Response {
    let mut response = http::Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// A response with a JSON body.
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = http::Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
