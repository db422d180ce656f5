//! The degradation ladder of a search: the core → the legacy service (each front forwards in
//! its protocol) → **keyword** → **popular**. The two lowest rungs are here, for both fronts:
//!
//! - **keyword**: no embedding needed. The vector store returns memories whose content holds
//!   any of the query's words or whose tags are one of them; they are ranked here by the share
//!   of the query's words they contain, then by importance.
//! - **popular**: no vector store needed either. The tenant's most-read memories, from the
//!   `popular` set and the cached records.
//!
//! Each answer has the rows of a search answer (each with a `score`), marked with the rung
//! ([`Degraded`]).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::OnceLock;

use uuid::Uuid;

use super::error::unavailable;
use super::search::with_score;
use super::{Answer, CacheStatus, Core, CoreError, Degraded};
use crate::backend::vectors::PayloadFilter;
use crate::keys::Scope;
use crate::layout::{KeywordView, Layout};
use crate::memory::{is_tombstone, NormalizedSearch, StoredMemory};

/// The most words of a query a keyword search looks for.
const MAX_TERMS: usize = 16;

/// The lowercase words of a query worth matching: letters and digits, two characters or more,
/// no English stop words, each once.
fn query_terms(query: &str) -> Vec<String> {
    static STOP_WORDS: OnceLock<BTreeSet<String>> = OnceLock::new();
    let stop_words = STOP_WORDS.get_or_init(|| {
        stop_words::get("en")
            .iter()
            .map(|word| word.to_lowercase())
            .collect()
    });
    let mut seen = BTreeSet::new();
    query
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|word| word.chars().count() >= 2 && !stop_words.contains(word))
        .filter(|word| seen.insert(word.clone()))
        .take(MAX_TERMS)
        .collect()
}

/// The share of `terms` a memory's text or tags contain (0..=1).
fn keyword_score(view: &KeywordView, terms: &[String]) -> f32 {
    if terms.is_empty() {
        return 0.0;
    }
    let text = view.text.to_lowercase();
    let tags: Vec<String> = view.tags.iter().map(|tag| tag.to_lowercase()).collect();
    let matched = terms
        .iter()
        .filter(|term| text.contains(term.as_str()) || tags.iter().any(|tag| tag == *term))
        .count();
    matched as f32 / terms.len() as f32
}

/// Best first: most of the query's words, then most important (as the layout sees them); at
/// most `limit`.
fn rank_by_keywords(
    layout: &dyn Layout,
    memories: Vec<StoredMemory>,
    terms: &[String],
    limit: usize,
) -> Vec<(StoredMemory, f32)> {
    let mut scored: Vec<(StoredMemory, f32, f64)> = memories
        .into_iter()
        .map(|memory| {
            let view = layout.keyword_view(&memory);
            let score = keyword_score(&view, terms);
            (memory, score, view.importance)
        })
        .filter(|(_, score, _)| *score > 0.0)
        .collect();
    scored.sort_by(|(_, a_score, a_importance), (_, b_score, b_importance)| {
        b_score
            .partial_cmp(a_score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| {
                b_importance
                    .partial_cmp(a_importance)
                    .unwrap_or(Ordering::Equal)
            })
    });
    scored.truncate(limit);
    scored
        .into_iter()
        .map(|(memory, score, _)| (memory, score))
        .collect()
}

/// Each memory with its score, as a search answer's rows.
fn rows(memories: Vec<(StoredMemory, f32)>) -> Vec<StoredMemory> {
    memories
        .into_iter()
        .map(|(memory, score)| with_score(memory, Some(score)))
        .collect()
}

impl Core {
    /// A search answered by the rungs below the legacy service: memories with the query's
    /// words, else the most read ones; `None` when neither can answer either.
    pub async fn lower_rungs(
        &self,
        scope: &Scope,
        search: &NormalizedSearch,
    ) -> Option<Answer<Vec<StoredMemory>>> {
        let filter = self.filter_for(scope, search);
        let degraded = |value, level| Answer {
            value,
            cache: CacheStatus::Bypass,
            degraded: Some(level),
        };
        match self.keyword(search, filter.clone()).await {
            Ok(Some(found)) => return Some(degraded(found, Degraded::Keyword)),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "keyword rung failed"),
        }
        match self.popular(scope, search, filter).await {
            Ok(found) => Some(degraded(found, Degraded::Popular)),
            Err(error) => {
                tracing::debug!(%error, "every rung of the search ladder failed");
                None
            }
        }
    }

    /// Memories containing the query's words. `None` when the query has no word worth
    /// matching (only stop words): the next rung answers instead.
    async fn keyword(
        &self,
        search: &NormalizedSearch,
        filter: PayloadFilter,
    ) -> Result<Option<Vec<StoredMemory>>, CoreError> {
        let terms = query_terms(&search.query);
        if terms.is_empty() {
            return Ok(None);
        }
        let filter = PayloadFilter {
            should: self.layout.keyword_conditions(&terms),
            ..filter
        };
        let candidates = self
            .settings
            .keyword_candidates
            .max(u64::from(search.limit));
        let found = self
            .vectors
            .scroll(&filter, candidates)
            .await
            .map_err(|e| unavailable("the vector store", e))?;
        let ranked = rank_by_keywords(self.layout.as_ref(), found, &terms, search.limit as usize);
        Ok(Some(rows(ranked)))
    }

    /// The tenant's most-read memories that meet the search's filter, from the cache.
    async fn popular(
        &self,
        scope: &Scope,
        search: &NormalizedSearch,
        filter: PayloadFilter,
    ) -> Result<Vec<StoredMemory>, CoreError> {
        let limit = search.limit as usize;
        // Some of the most read are filtered out or no longer cached: look further down.
        let ids = self
            .cache
            .most_read(&self.keys.popular(scope), limit * 4)
            .await
            .map_err(|e| unavailable("the cache", e))?;
        let keys: Vec<String> = ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .map(|id| self.keys.memory(scope, id))
            .collect();
        let records = self
            .cache
            .get_many(&keys)
            .await
            .map_err(|e| unavailable("the cache", e))?;
        let memories: Vec<(StoredMemory, f32)> = records
            .into_iter()
            .flatten()
            .filter(|record| !is_tombstone(record))
            .filter_map(|record| serde_json::from_slice::<StoredMemory>(&record).ok())
            .filter(|memory| filter.matches(memory))
            .take(limit)
            .map(|memory| (memory, 0.0))
            .collect();
        Ok(rows(memories))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn layout() -> crate::layout::CldMemoryLayout {
        crate::layout::CldMemoryLayout::new(crate::layout::CldMemorySettings {
            similarity_threshold: 0.7,
            memory_metadata: None,
            project: "box:/app".into(),
        })
    }

    fn memory(value: Value) -> StoredMemory {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test memories are objects"),
        }
    }

    #[test]
    fn query_terms_are_lowercase_words_without_stop_words() {
        assert_eq!(
            query_terms("What did I plant in the Garden? Tomatoes, tomatoes!"),
            vec!["plant", "garden", "tomatoes"]
        );
        assert!(query_terms("the of and").is_empty());
        assert_eq!(query_terms("a").len(), 0);
        assert_eq!(query_terms(&"word ".repeat(100)), vec!["word"]);
        let many: String = (0..40).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_terms(&many).len(), MAX_TERMS);
    }

    #[test]
    fn keyword_ranking_prefers_more_words_then_importance() {
        let terms = query_terms("garden tomatoes");
        let memories = vec![
            memory(json!({ "id": "a", "content": "The garden is green", "importance": 0.9 })),
            memory(json!({ "id": "b", "content": "Tomatoes in the GARDEN", "importance": 0.1 })),
            memory(json!({ "id": "c", "content": "Nothing here", "importance": 1.0 })),
            memory(
                json!({ "id": "d", "content": "A note", "context": {"tags": ["Garden"]}, "importance": 0.5 }),
            ),
        ];
        let ranked = rank_by_keywords(&layout(), memories, &terms, 10);
        let ids: Vec<&str> = ranked
            .iter()
            .filter_map(|(m, _)| m.get("id").and_then(Value::as_str))
            .collect();
        assert_eq!(ids, vec!["b", "a", "d"]);
        assert_eq!(ranked[0].1, 1.0);
        assert_eq!(ranked[1].1, 0.5);
        assert_eq!(rank_by_keywords(&layout(), Vec::new(), &terms, 10).len(), 0);
    }

    #[test]
    fn answers_have_the_search_rows_shape() {
        let found = rows(vec![(memory(json!({ "id": "a" })), 0.5)]);
        assert_eq!(found, vec![memory(json!({ "id": "a", "score": 0.5 }))]);
    }
}
