//! Enrichment through any OpenAI-compatible chat completions endpoint, asked as cldmemory asks
//! (its three instructions, temperature 0.3, its token limits) and answered as cldmemory reads
//! the answers: the summary trimmed, the valence by JavaScript's `parseFloat`, the keywords
//! split on commas. Given the same model, memgate then stores what cldmemory would.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use async_trait::async_trait;

use super::{Enricher, EnrichmentError};
use crate::js;

const SUMMARY_PROMPT: &str = "Create a concise 1-2 sentence summary capturing the essence of \
the text. Be specific and informative.";
const EMOTION_PROMPT: &str = "Analyze the emotional valence of this text. Return only a number \
between -1 (very negative) and 1 (very positive).";
const KEYWORDS_PROMPT: &str =
    "Extract 3-5 key words or phrases from the text. Return only comma-separated keywords.";

#[derive(Debug, Clone)]
pub struct OpenAiEnricher {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
}

impl OpenAiEnricher {
    pub fn new(base_url: &str, api_key: Option<&str>, model: &str, timeout: Duration) -> Self {
        Self {
            client: crate::backend::embeddings::openai_client(base_url, api_key),
            model: model.to_string(),
            timeout,
        }
    }

    /// One chat completion: the answer's text, `None` when it has none.
    async fn ask(
        &self,
        instructions: &str,
        content: &str,
        max_tokens: u32,
    ) -> Result<Option<String>, EnrichmentError> {
        #[allow(deprecated)] // `max_tokens`: what cldmemory sends, and what compatible servers read
        let request = CreateChatCompletionRequestArgs::default()
            .model(&self.model)
            .messages([
                ChatCompletionRequestSystemMessage::from(instructions).into(),
                ChatCompletionRequestUserMessage::from(content).into(),
            ])
            .temperature(0.3)
            .max_tokens(max_tokens)
            .build()
            .map_err(|e| EnrichmentError::Provider(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.chat().create(request))
            .await
            .map_err(|_| EnrichmentError::Timeout(self.timeout))?
            .map_err(|e| EnrichmentError::Provider(e.to_string()))?;
        Ok(response
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content))
    }
}

#[async_trait]
impl Enricher for OpenAiEnricher {
    async fn summarize(&self, content: &str) -> Result<String, EnrichmentError> {
        let answer = self.ask(SUMMARY_PROMPT, content, 60).await?;
        let summary = js::trim(answer.as_deref().unwrap_or_default()).to_string();
        if summary.is_empty() {
            return Err(EnrichmentError::InvalidAnswer {
                expected: "a non-empty summary",
                answer: summary,
            });
        }
        Ok(summary)
    }

    async fn emotional_valence(&self, content: &str) -> Result<Option<f64>, EnrichmentError> {
        let answer = self.ask(EMOTION_PROMPT, content, 10).await?;
        // `parseFloat(answer || '0')`
        let answer = answer.filter(|text| !text.is_empty());
        Ok(js::parse_float(answer.as_deref().unwrap_or("0")))
    }

    async fn keywords(&self, content: &str) -> Result<Vec<String>, EnrichmentError> {
        let answer = self.ask(KEYWORDS_PROMPT, content, 50).await?;
        Ok(answer
            .map(|text| text.split(',').map(|k| js::trim(k).to_string()).collect())
            .unwrap_or_default())
    }
}
