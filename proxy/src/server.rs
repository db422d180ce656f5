//! The accept loop shared by the API and admin servers: HTTP/1.1 and HTTP/2 (`hyper-util`'s
//! auto builder), a header read timeout against slow clients, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::Response;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// In-flight requests get this long to finish after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
        }
    }
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
                let service = service_fn(move |request| {
                    let response = handler(request, remote);
                    async move { Ok::<_, Infallible>(response.await) }
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
