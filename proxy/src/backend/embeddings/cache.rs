//! Embeddings looked up in order: in-process L1 → cache store (`emb:{model}:{sha256}`) →
//! provider; a provider answer fills both levels. On the request path both the store and the
//! provider come behind their guards (`crate::guard::guarded`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;

use super::{vector_from_bytes, vector_to_bytes, Embedder, EmbeddingError};
use crate::backend::cache::CacheStore;
use crate::backend::BackendError;
use crate::keys::KeySpace;

/// Where an embedding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingLookup {
    L1,
    Cache,
    Provider,
}

pub struct EmbeddingCache {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn CacheStore>,
    keys: KeySpace,
    l1: Cache<String, Arc<Vec<f32>>>,
    ttl: Duration,
}

impl std::fmt::Debug for EmbeddingCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingCache")
            .field("model", &self.embedder.model())
            .finish_non_exhaustive()
    }
}

impl EmbeddingCache {
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn CacheStore>,
        keys: KeySpace,
        l1_entries: u64,
        l1_ttl: Duration,
        ttl: Duration,
    ) -> Self {
        Self {
            embedder,
            store,
            keys,
            l1: Cache::builder()
                .max_capacity(l1_entries)
                .time_to_live(l1_ttl)
                .build(),
            ttl,
        }
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The embedding of `text`, and where it came from. A cache store that fails is skipped
    /// (logged): the provider still answers.
    pub async fn embed(
        &self,
        text: &str,
    ) -> Result<(Arc<Vec<f32>>, EmbeddingLookup), EmbeddingError> {
        let key = self.keys.embedding(self.embedder.model(), text);
        if let Some(vector) = self.l1.get(&key).await {
            return Ok((vector, EmbeddingLookup::L1));
        }
        match self.store.get(&key).await {
            Ok(Some(bytes)) => match vector_from_bytes(&bytes) {
                Some(vector) if vector.len() == self.embedder.dimensions() => {
                    let vector = Arc::new(vector);
                    self.l1.insert(key, vector.clone()).await;
                    return Ok((vector, EmbeddingLookup::Cache));
                }
                _ => tracing::warn!(%key, "ignoring a cached embedding of the wrong size"),
            },
            Ok(None) => {}
            Err(error) if error.breaker_open() => {}
            Err(error) => {
                tracing::warn!(%error, "embedding cache read failed; asking the provider")
            }
        }
        let mut vectors = self.embedder.embed(&[text.to_string()]).await?;
        let vector = Arc::new(vectors.pop().ok_or(EmbeddingError::CountMismatch {
            expected: 1,
            got: 0,
        })?);
        self.l1.insert(key.clone(), vector.clone()).await;
        let stored = self
            .store
            .set(&key, Bytes::from(vector_to_bytes(&vector)), self.ttl);
        match stored.await {
            Err(error) if !error.breaker_open() => {
                tracing::warn!(%error, "embedding cache write failed")
            }
            _ => {}
        }
        Ok((vector, EmbeddingLookup::Provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cache::InProcessCache;
    use crate::backend::embeddings::HashingEmbedder;

    #[tokio::test]
    async fn provider_then_l1_then_shared_cache() {
        let store: Arc<dyn CacheStore> = Arc::new(InProcessCache::new(100));
        let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::new("h", 16));
        let keys = KeySpace::new("t:");
        let first = EmbeddingCache::new(
            embedder.clone(),
            store.clone(),
            keys.clone(),
            10,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let (a, from) = first.embed("hello").await.expect("embed");
        assert_eq!(from, EmbeddingLookup::Provider);
        let (b, from) = first.embed("hello").await.expect("embed");
        assert_eq!(from, EmbeddingLookup::L1);
        assert_eq!(a, b);

        let second = EmbeddingCache::new(
            embedder,
            store.clone(),
            keys.clone(),
            10,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let (c, from) = second.embed("hello").await.expect("embed");
        assert_eq!(
            from,
            EmbeddingLookup::Cache,
            "another process finds it in the shared store"
        );
        assert_eq!(a, c);
        let stored = store
            .get(&keys.embedding("h", "hello"))
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.len(), 16 * 4, "little-endian f32 bytes");
    }
}
