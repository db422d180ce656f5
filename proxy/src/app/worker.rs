//! `memgate worker`: the workers of this config, started on the backends and stopped again.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backends::{
    collection_spec, ensure_collection_retrying, spawn_vector_optimizer, Backends,
};
use crate::backend::queue::WriteQueue;
use crate::config::Config;
use crate::front::admin::AdminState;
use crate::front::server::{serve, ConnectionSettings};
use crate::keys::KeySpace;
use crate::metrics::Metrics;
use crate::worker::{EmbeddingBatcher, Worker, WorkerParts, WorkerSettings};

/// The workers of this config — one on `writes`, one on `assoc` — and the task batching their
/// embeddings.
pub fn build_workers(
    config: &Config,
    backends: &Backends,
    metrics: &Metrics,
) -> (Arc<Worker>, Arc<Worker>, JoinHandle<()>) {
    let (batcher, batcher_task) = EmbeddingBatcher::spawn(
        backends.embedder.clone(),
        config.worker.embedding_batch_size,
        config.worker.embedding_batch_window,
        metrics.clone(),
    );
    let worker = |queue: Arc<dyn WriteQueue>| {
        let parts = WorkerParts {
            queue,
            vectors: backends.vectors.clone(),
            enricher: backends.enricher.clone(),
            embeddings: batcher.clone(),
            cache: backends.cache.clone(),
            layout: backends.layout.clone(),
            keys: KeySpace::new(config.key_prefix()),
            metrics: metrics.clone(),
        };
        Worker::new(
            parts,
            WorkerSettings {
                concurrency: config.worker.concurrency,
                max_attempts: config.worker.max_attempts,
                retry_backoff: config.worker.retry_backoff,
                max_retry_backoff: config.worker.max_retry_backoff,
                claim_idle: config.worker.claim_idle,
                order_wait: config.worker.order_wait,
                drain_timeout: config.worker.drain_timeout,
                memory_ttl: config.cache.memory_ttl,
                access_sync_interval: config.worker.access_sync_interval,
                search_ef: config.vectors.search_ef,
                scope_field: config.scope.as_ref().map(|scope| scope.field.clone()),
            },
        )
    };
    let writes = Arc::new(worker(backends.queue.clone()));
    let assoc = Arc::new(worker(backends.assoc_queue.clone()));
    (writes, assoc, batcher_task)
}

/// A consumer name unique to this process: the pod name in a cluster.
pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A running `memgate worker`: the worker and its admin server.
pub struct RunningWorker {
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningWorker {
    /// Stops at once, as a crash would: jobs in flight stay pending, leases are left to run
    /// out. For fault tests.
    pub fn kill(mut self) {
        for task in self.tasks.drain(..).chain(self.background.drain(..)) {
            task.abort();
        }
    }

    /// Takes no new jobs, finishes the ones in flight, stops.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

/// Starts `memgate worker`: waits for the collection, then drains the queue.
pub async fn start_worker(config: Config) -> anyhow::Result<RunningWorker> {
    let backends = Backends::from_config(&config)?;
    start_worker_with(config, backends).await
}

/// Starts a worker on backends built elsewhere.
pub async fn start_worker_with(
    config: Config,
    backends: Backends,
) -> anyhow::Result<RunningWorker> {
    let spec = collection_spec(&config, backends.layout.as_ref());
    // The worker waits for its vector store before it takes any job.
    ensure_collection_retrying(
        backends.vectors.as_ref(),
        &spec,
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    )
    .await
    .context("vectors.collection")?;
    let metrics = Metrics::new();
    let (worker, assoc, batcher) = build_workers(&config, &backends, &metrics);
    let admin_listener = TcpListener::bind(config.worker.admin_listen)
        .await
        .with_context(|| {
            format!(
                "worker.adminListen: cannot bind {}",
                config.worker.admin_listen
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let admin = Arc::new(AdminState {
        metrics,
        readiness: worker.clone(),
        shadow: None,
    });
    let admin_server = tokio::spawn(serve(
        "admin",
        admin_listener,
        move |request, _remote| admin.clone().handle(request),
        shutdown_rx.clone(),
        ConnectionSettings::default(),
    ));
    let consumer = consumer_name();
    tracing::info!(%admin_addr, %consumer, "memgate worker running");
    let run_assoc = tokio::spawn(assoc.run(consumer.clone(), shutdown_rx.clone()));
    let run = tokio::spawn(worker.run(consumer, shutdown_rx));
    Ok(RunningWorker {
        admin_addr,
        shutdown,
        tasks: vec![run, run_assoc, admin_server],
        background: vec![
            batcher,
            spawn_vector_optimizer(backends.vectors.clone(), config.vectors.optimize_interval),
        ],
    })
}
