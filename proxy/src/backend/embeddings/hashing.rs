//! A deterministic embedder with no model: feature hashing of words and word pairs into a
//! fixed-size vector, L2-normalised. Texts that share words score high under cosine similarity,
//! which is what `--embedded` and the tests need; it knows nothing of synonyms.

use async_trait::async_trait;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{Embedder, EmbeddingError};

#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    model: String,
    dimensions: usize,
}

impl HashingEmbedder {
    pub fn new(model: impl Into<String>, dimensions: usize) -> Self {
        Self {
            model: model.into(),
            dimensions: dimensions.max(1),
        }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0f32; self.dimensions];
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        for word in &words {
            self.add_feature(&mut vector, word.as_bytes(), 1.0);
        }
        for pair in words.windows(2) {
            let feature = format!("{} {}", pair[0], pair[1]);
            self.add_feature(&mut vector, feature.as_bytes(), 0.5);
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        } else {
            // Cosine similarity is undefined for a zero vector; give empty texts a fixed direction.
            vector[0] = 1.0;
        }
        vector
    }

    fn add_feature(&self, vector: &mut [f32], feature: &[u8], weight: f32) {
        let hash = xxh3_64_with_seed(feature, 0x6d65_6d67);
        let index = (hash % self.dimensions as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[index] += sign * weight;
    }
}

#[async_trait]
impl Embedder for HashingEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        Ok(texts.iter().map(|text| self.embed_one(text)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn shared_words_score_higher_than_unrelated_text() {
        let embedder = HashingEmbedder::new("h", 384);
        let query = embedder.embed_one("coffee in Paris");
        let close = embedder.embed_one("We drank coffee in Paris last spring");
        let far = embedder.embed_one("The quarterly tax report is due");
        assert!(cosine(&query, &close) > 0.4);
        assert!(cosine(&query, &close) > cosine(&query, &far) + 0.3);
    }

    #[test]
    fn deterministic_and_normalised() {
        let embedder = HashingEmbedder::new("h", 64);
        let a = embedder.embed_one("Hello, world");
        assert_eq!(a, embedder.embed_one("hello world"));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(embedder.embed_one("").len(), 64);
    }
}
