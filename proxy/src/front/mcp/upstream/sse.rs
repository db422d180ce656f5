//! HTTP+SSE (cldmemory's transport): a `GET` opens the stream whose first event names where
//! messages are posted; every answer comes on the stream.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyStream, Full};

use super::health::Loss;
use super::session::{Outgoing, Session};
use super::{Upstream, UpstreamError};
use crate::front::mcp::sse_events::EventReader;

impl Upstream {
    pub(super) async fn open_sse(
        self: &Arc<Self>,
        url: Uri,
    ) -> Result<Arc<Session>, UpstreamError> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(url.clone())
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(authorization) = &self.settings.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(UpstreamError::Connect(format!(
                "GET {url} answered {}",
                response.status()
            )));
        }
        let mut body = BodyStream::new(response.into_body());
        let mut reader = EventReader::default();
        let mut early = Vec::new();
        let endpoint = loop {
            let Some(frame) = body.next().await else {
                return Err(UpstreamError::Connect(
                    "the event stream ended before its endpoint event".into(),
                ));
            };
            let frame = frame.map_err(|e| UpstreamError::Connect(e.to_string()))?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let mut events = reader.push(&chunk).into_iter();
            if let Some(endpoint) = events.find(|event| event.name == "endpoint") {
                early.extend(events);
                break endpoint.data;
            }
        };
        let endpoint = resolve(&url, &endpoint)?;
        let session = self.session_on(
            Outgoing::Sse {
                http: Box::new(self.http.clone()),
                endpoint,
                authorization: self.settings.authorization.clone(),
            },
            None,
        );
        let incoming = session.incoming.clone();
        let weak = Arc::downgrade(&session);
        session.add_task(tokio::spawn(async move {
            let mut events = early;
            loop {
                for event in events.drain(..) {
                    if event.name == "message" {
                        let _ = incoming.send(event.data);
                    }
                }
                let Some(Ok(frame)) = body.next().await else {
                    break;
                };
                if let Ok(chunk) = frame.into_data() {
                    events = reader.push(&chunk);
                }
            }
            if let Some(session) = weak.upgrade() {
                session.end(Loss::Ended);
            }
        }));
        Ok(session)
    }
}

/// The endpoint an `endpoint` event names, against the stream's URL.
fn resolve(stream: &Uri, endpoint: &str) -> Result<Uri, UpstreamError> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint
            .parse()
            .map_err(|_| UpstreamError::Connect(format!("bad endpoint {endpoint:?}")));
    }
    let mut parts = stream.clone().into_parts();
    let path = if endpoint.starts_with('/') {
        endpoint.to_string()
    } else {
        let base = stream.path();
        let dir = &base[..base.rfind('/').map_or(0, |at| at + 1)];
        format!("{dir}{endpoint}")
    };
    parts.path_and_query = Some(
        path.parse()
            .map_err(|_| UpstreamError::Connect(format!("bad endpoint {endpoint:?}")))?,
    );
    Uri::from_parts(parts).map_err(|_| UpstreamError::Connect(format!("bad endpoint {endpoint:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_against_the_stream() {
        let stream: Uri = "http://127.0.0.1:3000/sse".parse().expect("uri");
        assert_eq!(
            resolve(&stream, "/messages?sessionId=a")
                .expect("ok")
                .to_string(),
            "http://127.0.0.1:3000/messages?sessionId=a"
        );
        let nested: Uri = "http://h/mem/sse".parse().expect("uri");
        assert_eq!(
            resolve(&nested, "messages?sessionId=b")
                .expect("ok")
                .to_string(),
            "http://h/mem/messages?sessionId=b"
        );
    }
}
