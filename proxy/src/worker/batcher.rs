//! Embeddings batched across jobs: each job asks for one vector, and texts that arrive within
//! `window` of each other (up to `max_batch`) go out in one provider call. Calls run
//! concurrently, so a slow provider limits latency, not throughput.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::backend::embeddings::{Embedder, EmbeddingError};
use crate::metrics::Metrics;

type Reply = oneshot::Sender<Result<Vec<f32>, String>>;

#[derive(Clone)]
pub struct EmbeddingBatcher {
    requests: mpsc::Sender<(String, Reply)>,
}

impl std::fmt::Debug for EmbeddingBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingBatcher").finish_non_exhaustive()
    }
}

impl EmbeddingBatcher {
    pub fn spawn(
        embedder: Arc<dyn Embedder>,
        max_batch: usize,
        window: Duration,
        metrics: Metrics,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (requests, mut incoming) = mpsc::channel::<(String, Reply)>(max_batch.max(1) * 4);
        let task = tokio::spawn(async move {
            while let Some(first) = incoming.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + window;
                while batch.len() < max_batch {
                    match tokio::time::timeout_at(deadline, incoming.recv()).await {
                        Ok(Some(request)) => batch.push(request),
                        Ok(None) | Err(_) => break,
                    }
                }
                let embedder = embedder.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let (texts, replies): (Vec<String>, Vec<Reply>) = batch.into_iter().unzip();
                    metrics.worker.embedding_calls.inc();
                    metrics.worker.embedded_texts.inc_by(texts.len() as u64);
                    let result = metrics
                        .dependencies
                        .observe("embeddings", "embed_batch", embedder.embed(&texts))
                        .await;
                    match result {
                        Ok(vectors) => {
                            for (reply, vector) in replies.into_iter().zip(vectors) {
                                let _ = reply.send(Ok(vector));
                            }
                        }
                        Err(error) => {
                            let message = error.to_string();
                            for reply in replies {
                                let _ = reply.send(Err(message.clone()));
                            }
                        }
                    }
                });
            }
        });
        (Self { requests }, task)
    }

    /// The embedding of `text`, shared with whatever else is waiting.
    pub async fn embed(&self, text: String) -> Result<Vec<f32>, EmbeddingError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((text, reply))
            .await
            .map_err(|_| EmbeddingError::Provider("the embedding batcher stopped".into()))?;
        answer
            .await
            .map_err(|_| {
                EmbeddingError::Provider("the embedding batcher dropped a request".into())
            })?
            .map_err(EmbeddingError::Provider)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::backend::embeddings::HashingEmbedder;

    struct Counting {
        inner: HashingEmbedder,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Embedder for Counting {
        fn model(&self) -> &str {
            "counting"
        }
        fn dimensions(&self) -> usize {
            self.inner.dimensions()
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.embed(texts).await
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_calls_and_get_their_own_vectors() {
        let embedder = Arc::new(Counting {
            inner: HashingEmbedder::new("h", 16),
            calls: AtomicUsize::new(0),
        });
        let (batcher, _task) = EmbeddingBatcher::spawn(
            embedder.clone(),
            10,
            Duration::from_millis(30),
            Metrics::new(),
        );
        let texts: Vec<String> = (0..25).map(|i| format!("text number {i}")).collect();
        let answers =
            futures::future::join_all(texts.iter().map(|t| batcher.embed(t.clone()))).await;
        for (text, answer) in texts.iter().zip(answers) {
            assert_eq!(
                answer.expect("vector"),
                HashingEmbedder::new("h", 16).embed_one(text)
            );
        }
        let calls = embedder.calls.load(Ordering::SeqCst);
        assert!(
            (3..=5).contains(&calls),
            "25 texts in batches of 10 took {calls} calls"
        );
    }
}
