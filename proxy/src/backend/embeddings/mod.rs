//! The embeddings concern: text in, vectors out, and the two-level cache in front of it.
//!
//! Two implementations, chosen by `embeddings.provider`: [`OpenAiEmbedder`] (any
//! OpenAI-compatible `/embeddings` endpoint, through `async-openai`) and [`HashingEmbedder`]
//! (built in, deterministic, no network). [`EmbeddingCache`] keeps vectors in an in-process L1
//! and in the cache store as little-endian f32 bytes.

mod cache;
mod hashing;
mod openai;

pub use cache::{EmbeddingCache, EmbeddingLookup};
pub use hashing::HashingEmbedder;
pub use openai::{openai_client, OpenAiEmbedder};

use crate::backend::{BackendError, Unanswered};
use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("embedding provider: {0}")]
    Provider(String),
    #[error("embedding provider timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("embedding provider returned {got} vectors for {expected} texts")]
    CountMismatch { expected: usize, got: usize },
    #[error("embedding provider returned a vector of size {got}, expected {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error(transparent)]
    Unanswered(#[from] Unanswered),
}

impl BackendError for EmbeddingError {
    fn unanswered(&self) -> Option<&Unanswered> {
        match self {
            Self::Unanswered(unanswered) => Some(unanswered),
            _ => None,
        }
    }
}

#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// The model name, part of every embedding cache key.
    fn model(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One vector per text, in order. Many texts go out in one call.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError>;
}

/// Checks a provider's answer: one vector per text, each of the configured size.
pub(crate) fn check_vectors(
    vectors: &[Vec<f32>],
    texts: usize,
    dimensions: usize,
) -> Result<(), EmbeddingError> {
    if vectors.len() != texts {
        return Err(EmbeddingError::CountMismatch {
            expected: texts,
            got: vectors.len(),
        });
    }
    if let Some(bad) = vectors.iter().find(|v| v.len() != dimensions) {
        return Err(EmbeddingError::DimensionMismatch {
            expected: dimensions,
            got: bad.len(),
        });
    }
    Ok(())
}

/// Little-endian f32 bytes, the layout of `emb:*` keys.
pub fn vector_to_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`vector_to_bytes`]; `None` when the length is not a multiple of 4.
pub fn vector_from_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_bytes() {
        let vector = vec![0.5, -1.25, f32::MIN_POSITIVE, 3.0e7];
        let bytes = vector_to_bytes(&vector);
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[0..4], &0.5f32.to_le_bytes());
        assert_eq!(vector_from_bytes(&bytes), Some(vector));
        assert_eq!(vector_from_bytes(&[1, 2, 3]), None);
    }
}
