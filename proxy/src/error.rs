//! Errors a client sees: a status, a stable machine-readable `code` and a message, sent as
//! `{"error": {"code", "message"}}`.

use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;
use serde_json::json;

use crate::http::{json_response, Response};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// With a `503` or `429`: when to try again (sent as `Retry-After`, at least one second).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Sets the `Retry-After` of this answer.
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    pub fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = json_response(self.status, body.to_string().into());
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            let seconds = self
                .retry_after
                .map_or(1, |after| after.as_secs_f64().ceil() as u64)
                .max(1);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_answers_say_when_to_retry() {
        let response = ApiError::unavailable("x", "down").into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let response = ApiError::unavailable("x", "down")
            .retry_after(Some(Duration::from_millis(41_200)))
            .into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "42");
        let response = ApiError::bad_request("x", "no").into_response();
        assert!(!response.headers().contains_key(RETRY_AFTER));
    }
}
