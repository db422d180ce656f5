//! Enrichment through any OpenAI-compatible chat completions endpoint. Each prompt asks for a
//! JSON object (`response_format: json_object`); answers are parsed and range-checked, and one
//! that does not fit is an error (the worker retries it).

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequestArgs, ResponseFormat,
};
use async_openai::Client;
use async_trait::async_trait;
use serde::Deserialize;

use super::{clean_keywords, Enricher, EnrichmentError};

const SUMMARY_PROMPT: &str =
    "Summarize the user's memory in one or two sentences, at most 200 characters. \
Answer with a JSON object: {\"summary\": \"...\"}.";
const EMOTION_PROMPT: &str =
    "Rate the emotional valence of the user's memory from -1 (very negative) to 1 \
(very positive), 0 being neutral. Answer with a JSON object: {\"valence\": <number>}.";
const KEYWORDS_PROMPT: &str =
    "List up to 8 short lowercase keywords for the user's memory, most relevant first. \
Answer with a JSON object: {\"keywords\": [\"...\"]}.";

#[derive(Debug, Clone)]
pub struct OpenAiEnricher {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct SummaryAnswer {
    summary: String,
}

#[derive(Deserialize)]
struct EmotionAnswer {
    valence: f64,
}

#[derive(Deserialize)]
struct KeywordsAnswer {
    keywords: Vec<String>,
}

impl OpenAiEnricher {
    pub fn new(base_url: &str, api_key: Option<&str>, model: &str, timeout: Duration) -> Self {
        Self {
            client: crate::embeddings::openai_client(base_url, api_key),
            model: model.to_string(),
            timeout,
        }
    }

    /// One chat completion whose answer is a JSON object of type `T`.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        instructions: &str,
        content: &str,
        expected: &'static str,
    ) -> Result<T, EnrichmentError> {
        let request = CreateChatCompletionRequestArgs::default()
            .model(&self.model)
            .messages([
                ChatCompletionRequestSystemMessage::from(instructions).into(),
                ChatCompletionRequestUserMessage::from(content).into(),
            ])
            .response_format(ResponseFormat::JsonObject)
            .temperature(0.0)
            .build()
            .map_err(|e| EnrichmentError::Provider(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.chat().create(request))
            .await
            .map_err(|_| EnrichmentError::Timeout(self.timeout))?
            .map_err(|e| EnrichmentError::Provider(e.to_string()))?;
        let answer = response
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .unwrap_or_default();
        serde_json::from_str(answer.trim())
            .map_err(|_| EnrichmentError::InvalidAnswer { expected, answer })
    }
}

#[async_trait]
impl Enricher for OpenAiEnricher {
    async fn summarize(&self, content: &str) -> Result<String, EnrichmentError> {
        let answer: SummaryAnswer = self
            .ask(SUMMARY_PROMPT, content, "{\"summary\": string}")
            .await?;
        let summary = answer.summary.trim().to_string();
        if summary.is_empty() {
            return Err(EnrichmentError::InvalidAnswer {
                expected: "a non-empty summary",
                answer: summary,
            });
        }
        Ok(summary)
    }

    async fn emotional_valence(&self, content: &str) -> Result<f64, EnrichmentError> {
        let answer: EmotionAnswer = self
            .ask(EMOTION_PROMPT, content, "{\"valence\": number}")
            .await?;
        if !(-1.0..=1.0).contains(&answer.valence) {
            return Err(EnrichmentError::InvalidAnswer {
                expected: "a valence between -1 and 1",
                answer: answer.valence.to_string(),
            });
        }
        Ok(answer.valence)
    }

    async fn keywords(&self, content: &str) -> Result<Vec<String>, EnrichmentError> {
        let answer: KeywordsAnswer = self
            .ask(KEYWORDS_PROMPT, content, "{\"keywords\": [string]}")
            .await?;
        Ok(clean_keywords(answer.keywords))
    }
}
