//! Whether the core can answer: its dependencies answer, and acknowledged writes are being
//! applied. `/readyz` is assembled from this in `crate::app`.

use super::Core;
use crate::backend::queue::WORKER_SILENCE;

impl Core {
    /// Each dependency's name, and whether it answers.
    pub async fn health(&self) -> Vec<(&'static str, Result<(), String>)> {
        let cache = self.cache.ping().await.map_err(|e| e.to_string());
        let vectors = self.vectors.health().await.map_err(|e| e.to_string());
        let workers = self.writes_consumed().await;
        vec![
            (self.cache.backend_name(), cache),
            (self.vectors.backend_name(), vectors),
            ("workers", workers),
        ]
    }

    /// Fails when acknowledged writes wait and no worker has said it is alive for
    /// [`WORKER_SILENCE`]: nothing would ever apply them. Exports the consumers seen.
    async fn writes_consumed(&self) -> Result<(), String> {
        let consumers = self
            .queue
            .consumers(WORKER_SILENCE)
            .await
            .map_err(|e| e.to_string())?;
        self.metrics
            .worker
            .queue_consumers
            .with_label_values(&[self.queue.stream()])
            .set(i64::try_from(consumers).unwrap_or(i64::MAX));
        if consumers > 0 {
            return Ok(());
        }
        let waiting = self.queue.stats().await.map_err(|e| e.to_string())?.length;
        if waiting == 0 {
            return Ok(());
        }
        Err(format!(
            "{waiting} writes are waiting and no worker has consumed the write queue for {WORKER_SILENCE:?}"
        ))
    }
}
