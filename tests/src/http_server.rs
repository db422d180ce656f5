//! A tiny HTTP/1.1 server for the stand-ins: a handler from request to response, on a free
//! loopback port, stopped on drop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A request with its body read.
pub type FullRequest = Request<Bytes>;

type Spawner = Arc<dyn Fn(TcpListener) -> tokio::task::JoinHandle<()> + Send + Sync>;

pub struct TestServer {
    pub addr: SocketAddr,
    spawn: Spawner,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestServer {
    pub async fn start<H, F>(handler: H) -> anyhow::Result<Self>
    where
        H: Fn(FullRequest, SocketAddr) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        Self::start_on("127.0.0.1:0".parse()?, handler).await
    }

    /// [`Self::start`] on `addr` (another loopback address, e.g. `127.0.0.2:0`).
    pub async fn start_on<H, F>(addr: SocketAddr, handler: H) -> anyhow::Result<Self>
    where
        H: Fn(FullRequest, SocketAddr) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let handler = Arc::new(handler);
        let spawn: Spawner = Arc::new(move |listener| {
            let handler = handler.clone();
            tokio::spawn(accept_loop(listener, handler))
        });
        let task = Some(spawn(listener));
        Ok(Self { addr, spawn, task })
    }

    /// Closes the listener and every open connection, as a stopped process would.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr).await?;
        self.task = Some((self.spawn)(listener));
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves connections until aborted; aborting it drops the `JoinSet` and with it every
/// connection.
async fn accept_loop<H, F>(listener: TcpListener, handler: Arc<H>)
where
    H: Fn(FullRequest, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let handler = handler.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok::<_, Infallible>(handler(Request::from_parts(parts, bytes), remote).await)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub fn json(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
