//! Enrichment without a model, for `--embedded` and tests: the first sentences as the summary,
//! VADER's compound score as the valence, RAKE phrases as keywords.

use async_trait::async_trait;
use rake::{Rake, StopWords};

use super::{clean_keywords, Enricher, EnrichmentError};

/// Longest summary, in characters.
const SUMMARY_CHARS: usize = 200;

pub struct LocalEnricher {
    rake: Rake,
    sentiment: vader_sentiment::SentimentIntensityAnalyzer<'static>,
}

impl std::fmt::Debug for LocalEnricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEnricher").finish_non_exhaustive()
    }
}

impl Default for LocalEnricher {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalEnricher {
    pub fn new() -> Self {
        let stop_words: StopWords = stop_words::get("en")
            .iter()
            .map(|word| word.to_string())
            .collect::<std::collections::HashSet<_>>()
            .into();
        Self {
            rake: Rake::new(stop_words),
            sentiment: vader_sentiment::SentimentIntensityAnalyzer::new(),
        }
    }

    /// Whole sentences from the start, as many as fit in the summary length.
    pub fn summary_of(content: &str) -> String {
        let content = content.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut summary = String::new();
        for sentence in content.split_inclusive(['.', '!', '?']) {
            if summary.chars().count() + sentence.chars().count() > SUMMARY_CHARS {
                break;
            }
            summary.push_str(sentence);
        }
        if summary.trim().is_empty() {
            // One long sentence: cut at a word boundary.
            let mut cut = String::new();
            for word in content.split(' ') {
                if cut.chars().count() + word.chars().count() + 1 > SUMMARY_CHARS {
                    break;
                }
                if !cut.is_empty() {
                    cut.push(' ');
                }
                cut.push_str(word);
            }
            if cut.is_empty() {
                cut = content.chars().take(SUMMARY_CHARS).collect();
            }
            return cut;
        }
        summary.trim().to_string()
    }
}

#[async_trait]
impl Enricher for LocalEnricher {
    async fn summarize(&self, content: &str) -> Result<String, EnrichmentError> {
        Ok(Self::summary_of(content))
    }

    async fn emotional_valence(&self, content: &str) -> Result<Option<f64>, EnrichmentError> {
        let scores = self.sentiment.polarity_scores(content);
        Ok(Some(
            scores
                .get("compound")
                .copied()
                .unwrap_or(0.0)
                .clamp(-1.0, 1.0),
        ))
    }

    async fn keywords(&self, content: &str) -> Result<Vec<String>, EnrichmentError> {
        let phrases = self.rake.run(content);
        Ok(clean_keywords(
            phrases.into_iter().map(|scored| scored.keyword),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn valence_follows_the_mood() {
        let enricher = LocalEnricher::new();
        let happy = enricher
            .emotional_valence("What a wonderful, happy day with great friends!")
            .await
            .expect("valence")
            .expect("a number");
        let sad = enricher
            .emotional_valence("A terrible, sad and painful loss.")
            .await
            .expect("valence")
            .expect("a number");
        assert!(happy > 0.5, "{happy}");
        assert!(sad < -0.5, "{sad}");
    }

    #[tokio::test]
    async fn keywords_leave_out_stop_words() {
        let enricher = LocalEnricher::new();
        let keywords = enricher
            .keywords("We drank strong coffee in Paris and then visited the Louvre museum.")
            .await
            .expect("keywords");
        assert!(!keywords.is_empty());
        assert!(
            keywords.iter().any(|k| k.contains("coffee")),
            "{keywords:?}"
        );
        assert!(
            !keywords.iter().any(|k| k == "the" || k == "and"),
            "{keywords:?}"
        );
    }

    #[test]
    fn summaries_keep_whole_sentences() {
        let long = format!(
            "First sentence here. {}",
            "Second sentence is long. ".repeat(20)
        );
        let summary = LocalEnricher::summary_of(&long);
        assert!(summary.starts_with("First sentence here."));
        assert!(summary.ends_with('.'));
        assert!(summary.chars().count() <= SUMMARY_CHARS);
        let one = "word ".repeat(100);
        assert!(LocalEnricher::summary_of(&one).chars().count() <= SUMMARY_CHARS);
    }
}
