//! cldmemory's OpenAI calls, as the official Node client makes them: embeddings asked with
//! `encoding_format: "base64"` (little-endian f32), chat completions with its three prompts.
//! Enrichment never fails a create: each call has its fallback.

use base64::Engine;
use serde_json::{json, Value};

use crate::javascript;

#[derive(Debug, Clone)]
pub struct OpenAi {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    embedding_model: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenAiError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{status} {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer: {0}")]
    Answer(String),
}

impl OpenAi {
    pub fn new(base_url: &str, api_key: &str, embedding_model: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            embedding_model: embedding_model.to_string(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, OpenAiError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(OpenAiError::Status {
                status: status.as_u16(),
                body: response.text().await.unwrap_or_default(),
            });
        }
        Ok(response.json().await?)
    }

    /// `createEmbedding(text)`.
    pub async fn create_embedding(&self, text: &str) -> Result<Vec<f32>, OpenAiError> {
        let answer = self
            .post(
                "/embeddings",
                json!({"model": self.embedding_model, "input": text, "encoding_format": "base64"}),
            )
            .await?;
        match &answer["data"][0]["embedding"] {
            Value::String(encoded) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| OpenAiError::Answer(e.to_string()))?;
                Ok(bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect())
            }
            Value::Array(items) => Ok(items
                .iter()
                .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                .collect()),
            other => Err(OpenAiError::Answer(other.to_string())),
        }
    }

    async fn chat(
        &self,
        system: &str,
        text: &str,
        max_tokens: u32,
    ) -> Result<Option<String>, OpenAiError> {
        let answer = self
            .post(
                "/chat/completions",
                json!({
                    "model": "gpt-4o",
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
                    "temperature": 0.3,
                    "max_tokens": max_tokens,
                }),
            )
            .await?;
        Ok(answer["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string))
    }

    /// `generateSummary`: `content?.trim() || text.substring(0, 150) + '...'` on an answer;
    /// on an error, the text itself up to 150 characters, else its first 147 and `...`.
    pub async fn generate_summary(&self, text: &str) -> String {
        match self
            .chat(
                "Create a concise 1-2 sentence summary capturing the essence of the text. Be specific and informative.",
                text,
                60,
            )
            .await
        {
            Ok(Some(answer)) if !answer.trim().is_empty() => answer.trim().to_string(),
            Ok(_) => format!("{}...", javascript::substring(text, 150)),
            Err(_) if javascript::length(text) > 150 => {
                format!("{}...", javascript::substring(text, 147))
            }
            Err(_) => text.to_string(),
        }
    }

    /// `analyzeEmotion`: the answer as a number, clamped; `null` (NaN) when it is none; 0 on
    /// an error.
    pub async fn analyze_emotion(&self, text: &str) -> Option<f64> {
        match self
            .chat(
                "Analyze the emotional valence of this text. Return only a number between -1 (very negative) and 1 (very positive).",
                text,
                10,
            )
            .await
        {
            Ok(answer) => {
                let answer = answer.filter(|a| !a.is_empty()).unwrap_or_else(|| "0".into());
                javascript::parse_float(&answer).map(|v| v.clamp(-1.0, 1.0))
            }
            Err(_) => Some(0.0),
        }
    }

    /// `extractKeywords`: the answer split on commas, trimmed; none on an error.
    pub async fn extract_keywords(&self, text: &str) -> Vec<String> {
        match self
            .chat(
                "Extract 3-5 key words or phrases from the text. Return only comma-separated keywords.",
                text,
                50,
            )
            .await
        {
            Ok(Some(answer)) => answer.split(',').map(|k| k.trim().to_string()).collect(),
            _ => Vec::new(),
        }
    }
}
