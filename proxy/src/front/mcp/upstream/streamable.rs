//! Streamable HTTP: each message is a POST, and its answer comes in the response (JSON, or an
//! event stream).

use std::sync::Mutex;

use futures::StreamExt;
use http::StatusCode;
use http_body_util::{BodyExt, BodyStream};
use serde_json::Value;

use super::health::Loss;
use super::session::{guard, refused, Outgoing, Session};
use super::UpstreamError;
use crate::front::mcp::sse_events::EventReader;

impl Session {
    /// A Streamable HTTP POST's answer: `202` for a notification, else the messages in its
    /// JSON body or event stream, into the session's incoming channel.
    pub(super) async fn streamable_answer(
        &self,
        session_id: &Mutex<Option<String>>,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<(), UpstreamError> {
        let status = response.status();
        if let Some(id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            *guard(session_id) = Some(id.to_string());
        }
        if status == StatusCode::NOT_FOUND && guard(session_id).is_some() {
            self.end(Loss::Refused);
        }
        if !status.is_success() {
            return Err(refused(status, response.into_body()).await);
        }
        let event_stream = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if event_stream {
            let incoming = self.incoming.clone();
            self.add_task(tokio::spawn(async move {
                let mut body = BodyStream::new(response.into_body());
                let mut reader = EventReader::default();
                while let Some(Ok(frame)) = body.next().await {
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    for event in reader.push(&chunk) {
                        if event.name == "message" && incoming.send(event.data).is_err() {
                            return;
                        }
                    }
                }
            }));
            return Ok(());
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?
            .to_bytes();
        if body.is_empty() {
            return Ok(());
        }
        let messages = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) => items,
            Ok(message) => vec![message],
            Err(error) => return Err(UpstreamError::Refused(format!("not JSON: {error}"))),
        };
        for message in messages {
            let _ = self.incoming.send(message.to_string());
        }
        Ok(())
    }

    /// Remembers the revision agreed at `initialize` (Streamable HTTP sends it on).
    pub(super) fn agreed(&self, initialize: &Value) {
        if let Outgoing::Streamable {
            protocol_version, ..
        } = &self.outgoing
        {
            *guard(protocol_version) = initialize
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }
}
