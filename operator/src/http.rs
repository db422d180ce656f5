//! The operator's HTTP plumbing: a complete-body response type, and the plain-HTTP server of
//! its admin endpoints (the webhook's TLS server is in [`crate::webhook`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Every answer the operator serves has its whole body at hand.
pub type Response = http::Response<Full<Bytes>>;

/// A complete body.
pub fn full(bytes: Bytes) -> Full<Bytes> {
    Full::new(bytes)
}

/// How long connections get to finish once the server stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `handler` over plain HTTP/1 and HTTP/2 until `shutdown` turns true, then lets open
/// connections finish (at most 5 s).
pub async fn serve<H>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(http::Request<Incoming>, SocketAddr) -> Response + Clone + Send + Sync + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(server = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let handler = handler.clone();
        let service = service_fn(move |request| {
            std::future::ready(Ok::<_, Infallible>(handler(request, remote)))
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(server = name, %error, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => {
            tracing::warn!(server = name, "drain timed out; closing the remaining connections");
        }
    }
}
