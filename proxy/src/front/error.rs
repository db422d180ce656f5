//! Errors a client sees: a status, a stable machine-readable `code` and a message, sent as
//! `{"error": {"code", "message"}}`.

use std::time::Duration;

use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;
use serde_json::json;

use crate::core::CoreError;
use crate::front::http::{json_response, Response};
use crate::memory::InvalidRequest;

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

impl From<InvalidRequest> for ApiError {
    fn from(invalid: InvalidRequest) -> Self {
        Self::bad_request(invalid.code, invalid.message)
    }
}

/// The error code of a `503` whose dependency failed before doing anything.
pub const DEPENDENCY_UNAVAILABLE: &str = "dependency_unavailable";

/// The core's errors as the REST API answers them: the one place they are mapped.
impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        let message = error.to_string();
        let retry_after = error.retry_after();
        match error {
            CoreError::Invalid(invalid) => invalid.into(),
            CoreError::NotFound(_) => Self::not_found(message),
            CoreError::Unavailable { .. } | CoreError::MaybeExists(_) => {
                Self::unavailable(DEPENDENCY_UNAVAILABLE, message)
            }
            CoreError::CacheFull => Self::unavailable("cache_full", message),
            CoreError::Unconfirmed(_) => Self::unavailable("write_unconfirmed", message),
            CoreError::Conflict(_) => Self::new(StatusCode::CONFLICT, "write_conflict", message),
            CoreError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
        .retry_after(retry_after)
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
