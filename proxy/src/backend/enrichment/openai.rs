//! Enrichment through any OpenAI-compatible chat completions endpoint, asked and read as the
//! layout's [`ChatRecipe`] says (cldmemory's: its three instructions, temperature, token limits
//! and the way it reads the answers). Given the same model, memgate then stores what the legacy
//! service would.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequestArgs,
};
use async_openai::Client;
use async_trait::async_trait;

use std::sync::Arc;

use super::{ChatRecipe, Enricher, EnrichmentError, Question};

#[derive(Debug, Clone)]
pub struct OpenAiEnricher {
    client: Client<OpenAIConfig>,
    model: String,
    timeout: Duration,
    recipe: Arc<dyn ChatRecipe>,
}

impl OpenAiEnricher {
    pub fn new(
        base_url: &str,
        api_key: Option<&str>,
        model: &str,
        timeout: Duration,
        recipe: Arc<dyn ChatRecipe>,
    ) -> Self {
        Self {
            client: crate::backend::embeddings::openai_client(base_url, api_key),
            model: model.to_string(),
            timeout,
            recipe,
        }
    }

    /// One chat completion: the answer's text, `None` when it has none.
    async fn ask(
        &self,
        question: Question,
        content: &str,
    ) -> Result<Option<String>, EnrichmentError> {
        let asked = self.recipe.question(question);
        #[allow(deprecated)] // `max_tokens`: what cldmemory sends, and what compatible servers read
        let request = CreateChatCompletionRequestArgs::default()
            .model(&self.model)
            .messages([
                ChatCompletionRequestSystemMessage::from(asked.instructions).into(),
                ChatCompletionRequestUserMessage::from(content).into(),
            ])
            .temperature(self.recipe.temperature())
            .max_tokens(asked.max_tokens)
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
        let answer = self.ask(Question::Summary, content).await?;
        let summary = self.recipe.read_summary(answer.as_deref());
        if summary.is_empty() {
            return Err(EnrichmentError::InvalidAnswer {
                expected: "a non-empty summary",
                answer: summary,
            });
        }
        Ok(summary)
    }

    async fn emotional_valence(&self, content: &str) -> Result<Option<f64>, EnrichmentError> {
        let answer = self.ask(Question::Valence, content).await?;
        Ok(self.recipe.read_valence(answer.as_deref()))
    }

    async fn keywords(&self, content: &str) -> Result<Vec<String>, EnrichmentError> {
        let answer = self.ask(Question::Keywords, content).await?;
        Ok(self.recipe.read_keywords(answer.as_deref()))
    }
}
