//! The enrichment concern: what the legacy service asks an LLM for when a memory is created —
//! a summary, an emotional valence (−1..1) and keywords. The worker runs the three calls in
//! parallel (and embeds separately, in batches); a call that fails is not retried: the layout
//! stores its fallback, as the legacy service does.
//!
//! Two implementations, chosen by `enrichment.provider`: [`OpenAiEnricher`] (chat completions
//! through `async-openai`, asked and read as the layout's [`ChatRecipe`] says: the legacy
//! service's prompts and readings) and [`LocalEnricher`] (built in: extractive summary, VADER
//! valence, RAKE keywords).

mod local;
mod openai;

pub use local::LocalEnricher;
pub use openai::OpenAiEnricher;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum EnrichmentError {
    #[error("enrichment provider: {0}")]
    Provider(String),
    #[error("enrichment provider timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("enrichment provider answered {answer:?}, which is not {expected}")]
    InvalidAnswer {
        expected: &'static str,
        answer: String,
    },
}

#[async_trait]
pub trait Enricher: Send + Sync + 'static {
    async fn summarize(&self, content: &str) -> Result<String, EnrichmentError>;
    /// −1 (very negative) .. 1 (very positive) as the model answered it (not clamped);
    /// `None` when the answer is not a number.
    async fn emotional_valence(&self, content: &str) -> Result<Option<f64>, EnrichmentError>;
    /// A few keywords, most relevant first.
    async fn keywords(&self, content: &str) -> Result<Vec<String>, EnrichmentError>;
}

/// One of the three questions an enrichment asks a chat model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    Summary,
    Valence,
    Keywords,
}

/// How one question is asked: its instructions (the system message; the memory's content is
/// the user message) and the most tokens of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatQuestion {
    pub instructions: &'static str,
    pub max_tokens: u32,
}

/// How a chat model is asked for an enrichment and how its answers are read: the legacy
/// service's wording, limits and readings, which its layout knows.
pub trait ChatRecipe: Send + Sync + std::fmt::Debug + 'static {
    fn question(&self, question: Question) -> ChatQuestion;
    /// The sampling temperature of every question.
    fn temperature(&self) -> f32;
    /// The summary an answer gives (empty when it gives none).
    fn read_summary(&self, answer: Option<&str>) -> String;
    /// The valence an answer gives, `None` when it is not a number.
    fn read_valence(&self, answer: Option<&str>) -> Option<f64>;
    /// The keywords an answer gives, as it lists them.
    fn read_keywords(&self, answer: Option<&str>) -> Vec<String>;
}

/// How many keywords a memory keeps.
pub const MAX_KEYWORDS: usize = 8;

/// Keywords as stored: trimmed, lowercase, non-empty, unique, at most [`MAX_KEYWORDS`].
pub fn clean_keywords(raw: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for keyword in raw {
        let keyword = keyword.trim().to_lowercase();
        if !keyword.is_empty() && !seen.contains(&keyword) {
            seen.push(keyword);
        }
        if seen.len() == MAX_KEYWORDS {
            break;
        }
    }
    seen
}
