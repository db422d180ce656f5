//! A session's outgoing messages as the body of an event stream, a comment when it has been
//! quiet for a while (proxies and clients cut streams that stay silent), and what happens when
//! the client stops reading it.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

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

/// How long a stream stays silent before it carries a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The comment sent on a quiet stream: clients ignore it, intermediaries see traffic.
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// `event: message` per outgoing message, after an optional first event; a keep-alive
/// comment after [`KEEP_ALIVE`] without one.
pub struct EventStream {
    first: Option<Bytes>,
    receiver: Option<mpsc::UnboundedReceiver<Value>>,
    on_close: OnClose,
    quiet: Interval,
}

impl EventStream {
    pub fn new(
        first: Option<Bytes>,
        receiver: mpsc::UnboundedReceiver<Value>,
        on_close: OnClose,
    ) -> Self {
        let mut quiet = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        quiet.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            first,
            receiver: Some(receiver),
            on_close,
            quiet,
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
                self.quiet.reset();
                Poll::Ready(Some(sse_events::event("message", &message.to_string())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.quiet.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Bytes::from_static(KEEP_ALIVE_COMMENT))),
                Poll::Pending => Poll::Pending,
            },
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

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_carries_a_keep_alive_comment_and_messages_put_it_off() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut stream = EventStream::new(None, receiver, OnClose::GiveBack(Weak::new()));
        let started = Instant::now();
        let comment = stream.next().await.expect("a comment");
        assert_eq!(&comment[..], KEEP_ALIVE_COMMENT);
        assert_eq!(started.elapsed(), KEEP_ALIVE);

        tokio::time::advance(KEEP_ALIVE / 2).await;
        sender.send(json!({"id": 1})).expect("sent");
        let message = stream.next().await.expect("the message");
        assert!(message.starts_with(b"event: message"));
        let before = Instant::now();
        let comment = stream.next().await.expect("a comment");
        assert_eq!(&comment[..], KEEP_ALIVE_COMMENT);
        assert_eq!(
            before.elapsed(),
            KEEP_ALIVE,
            "counted from the last message"
        );

        drop(sender);
        assert!(stream.next().await.is_none(), "ends with its session");
    }
}
