//! A session's outgoing messages as the body of an event stream, and what happens when the
//! client stops reading it.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;

use super::front::McpFront;
use super::session::ClientSession;
use super::sse_events;

/// What the end of the stream means.
pub enum OnClose {
    /// HTTP+SSE: the stream is the session; closing it closes the session.
    CloseSession(Arc<McpFront>, String),
    /// Streamable HTTP: the session lives on; a later `GET` may open another stream.
    GiveBack(Weak<ClientSession>),
}

/// `event: message` per outgoing message, after an optional first event.
pub struct EventStream {
    first: Option<Bytes>,
    receiver: Option<mpsc::UnboundedReceiver<Value>>,
    on_close: OnClose,
}

impl EventStream {
    pub fn new(
        first: Option<Bytes>,
        receiver: mpsc::UnboundedReceiver<Value>,
        on_close: OnClose,
    ) -> Self {
        Self {
            first,
            receiver: Some(receiver),
            on_close,
        }
    }
}

impl Stream for EventStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(None);
        };
        match receiver.poll_recv(cx) {
            Poll::Ready(Some(message)) => {
                Poll::Ready(Some(sse_events::event("message", &message.to_string())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        match &self.on_close {
            OnClose::CloseSession(front, id) => {
                front.sessions.close(id);
            }
            OnClose::GiveBack(session) => {
                if let (Some(session), Some(receiver)) = (session.upgrade(), self.receiver.take()) {
                    session.give_back_stream(receiver);
                }
            }
        }
    }
}
