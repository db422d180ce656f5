//! Reading request bodies: bounded, drained when refused, parsed as JSON with serde's message.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::StatusCode;
use http_body_util::BodyExt;

use super::error::ApiError;
use super::http::BoxError;

/// Reads a whole request body, refusing one over `limit` bytes (by its `Content-Length` before
/// reading anything, or while reading when the length is not declared). A refused body is
/// still read to its end (up to [`DRAIN_CAP_FACTOR`] times the limit, for [`DRAIN_TIMEOUT`] at
/// most) and dropped, so that a client still sending it reads the `413` instead of a broken
/// connection.
pub async fn read_body<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let declared = declared_length(headers);
    if declared.is_some_and(|length| length > limit as u64) {
        drain(body.as_mut(), limit, declared).await;
        return Err(body_too_large(limit));
    }
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            let error: BoxError = error.into();
            ApiError::bad_request(
                "body_unreadable",
                format!("could not read the request body: {error}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > limit {
                drain(body.as_mut(), limit, declared).await;
                return Err(body_too_large(limit));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

/// A refused body is read on for at most this many times the limit, then the connection is
/// closed on the client.
pub const DRAIN_CAP_FACTOR: u64 = 4;
/// And for at most this long.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops the rest of a refused body, within the caps above.
async fn drain<B>(mut body: std::pin::Pin<&mut B>, limit: usize, declared: Option<u64>)
where
    B: http_body::Body<Data = Bytes>,
{
    let cap = (limit as u64).saturating_mul(DRAIN_CAP_FACTOR);
    if declared.is_some_and(|length| length > cap) {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                read += data.len() as u64;
                if read > cap {
                    return;
                }
            }
        }
    })
    .await;
}

/// The request's `Content-Length`, when it declares one.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

pub fn body_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// Parses a JSON body into `T`, with serde's message (which names the field) on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let code = if error.is_data() {
            "invalid_field"
        } else {
            "malformed_json"
        };
        ApiError::bad_request(code, format!("invalid request body: {error}"))
    })
}
