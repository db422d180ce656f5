//! Embeddings from any OpenAI-compatible endpoint through `async-openai`.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::embeddings::{CreateEmbeddingRequestArgs, EmbeddingInput};
use async_openai::Client;
use async_trait::async_trait;

use super::{check_vectors, Embedder, EmbeddingError};

/// A client for an OpenAI-compatible API at `base_url` (`.../v1`).
pub fn openai_client(base_url: &str, api_key: Option<&str>) -> Client<OpenAIConfig> {
    let mut config = OpenAIConfig::new().with_api_base(base_url.trim_end_matches('/'));
    if let Some(key) = api_key {
        config = config.with_api_key(key);
    }
    Client::with_config(config)
}

#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
    dimensions: usize,
    timeout: Duration,
    /// Send `dimensions` in requests (only `text-embedding-3` and later understand it).
    request_dimensions: bool,
}

impl OpenAiEmbedder {
    pub fn new(
        base_url: &str,
        api_key: Option<&str>,
        model: &str,
        dimensions: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            client: openai_client(base_url, api_key),
            model: model.to_string(),
            dimensions,
            timeout,
            request_dimensions: model.starts_with("text-embedding-3"),
        }
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = CreateEmbeddingRequestArgs::default();
        args.model(&self.model)
            .input(EmbeddingInput::StringArray(texts.to_vec()));
        if self.request_dimensions {
            args.dimensions(u32::try_from(self.dimensions).unwrap_or(u32::MAX));
        }
        let request = args
            .build()
            .map_err(|e| EmbeddingError::Provider(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.embeddings().create(request))
            .await
            .map_err(|_| EmbeddingError::Timeout(self.timeout))?
            .map_err(|e| EmbeddingError::Provider(e.to_string()))?;
        let mut data = response.data;
        data.sort_by_key(|item| item.index);
        let vectors: Vec<Vec<f32>> = data.into_iter().map(|item| item.embedding).collect();
        check_vectors(&vectors, texts.len(), self.dimensions)?;
        Ok(vectors)
    }
}
