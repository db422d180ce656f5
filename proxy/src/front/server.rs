//! The accept loop shared by the API and admin servers: HTTP/1.1 and HTTP/2 (`hyper-util`'s
//! auto builder), a header read timeout against slow clients, a cap on requests in flight,
//! and a graceful drain on shutdown.
//!
//! Every request of every connection takes a permit from one semaphore per listener before it
//! is handled. With none left it is answered `503` at once (`x-memgate-overloaded`), never
//! queued.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use http::header::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::front::error::ApiError;
use crate::front::http::Response;

/// The header on a `503` given because too many requests were in flight.
pub const OVERLOADED_HEADER: &str = "x-memgate-overloaded";

/// At most `max` requests in flight on a listener; `refused` counts the ones turned away.
#[derive(Debug, Clone)]
pub struct InFlightLimit {
    pub max: usize,
    pub refused: IntCounter,
}

#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// In-flight requests get this long to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// No cap when `None`.
    pub max_in_flight: Option<InFlightLimit>,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            max_in_flight: None,
        }
    }
}

/// The answer to a request past the in-flight cap.
fn overloaded(refused: Option<&IntCounter>) -> Response {
    if let Some(refused) = refused {
        refused.inc();
    }
    let mut response = ApiError::unavailable(
        "overloaded",
        "too many requests in flight; try again shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(OVERLOADED_HEADER, HeaderValue::from_static("true"));
    response
}

/// Serves connections from `listener` until `shutdown` turns true, then drains.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    settings: ConnectionSettings,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let permits = settings
        .max_in_flight
        .as_ref()
        .map_or(Semaphore::MAX_PERMITS, |limit| limit.max);
    let in_flight = Arc::new(Semaphore::new(permits));
    let refused = settings.max_in_flight.map(|limit| limit.refused);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(server = name, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let refused = refused.clone();
                let in_flight = in_flight.clone();
                let service = service_fn(move |request| {
                    // Taken before the request is handled and held until its response is
                    // ready; none left means answer at once, never wait for one.
                    let permit = in_flight.clone().try_acquire_owned();
                    let response = permit.is_ok().then(|| handler(request, remote));
                    let refused = refused.clone();
                    async move {
                        let _permit = permit;
                        Ok::<_, Infallible>(match response {
                            Some(response) => response.await,
                            None => overloaded(refused.as_ref()),
                        })
                    }
                });
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(server = name, %error, %remote, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(server = name, "drained"),
        _ = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!(server = name, "drain timed out; closing the remaining connections");
        }
    }
}
