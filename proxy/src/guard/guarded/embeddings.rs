//! The embedding provider behind its guard.

use async_trait::async_trait;

use super::Guarded;
use crate::backend::embeddings::{Embedder, EmbeddingError};

#[async_trait]
impl Embedder for Guarded<dyn Embedder> {
    fn model(&self) -> &str {
        self.inner.model()
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        self.guard("embed", self.inner.embed(texts)).await
    }
}
