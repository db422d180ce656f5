//! What cldmemory's searches filter on, as payload conditions for the vector store: the fields
//! its Qdrant collection indexes, a search's filters, the keyword rung's words and a parent's
//! chunks.

use crate::backend::vectors::{Condition, IndexKind, IndexedField};
use crate::memory::NormalizedSearch;

/// The payload indexes cldmemory's collection has (the same fields, the same kinds).
pub(super) fn indexed_fields() -> Vec<IndexedField> {
    [
        ("type", IndexKind::Keyword),
        ("context.tags", IndexKind::Keyword),
        ("context.chunkOf", IndexKind::Keyword),
        ("importance", IndexKind::Float),
        ("emotionalValence", IndexKind::Float),
        ("timestamp", IndexKind::Datetime),
        ("content", IndexKind::Text),
    ]
    .into_iter()
    .map(|(field, kind)| IndexedField {
        field: field.to_string(),
        kind,
    })
    .collect()
}

/// `type`, `minImportance`, `emotionalRange` and `dateRange` as cldmemory's `searchMemories`
/// puts them in its Qdrant filter.
pub(super) fn search_conditions(search: &NormalizedSearch) -> Vec<Condition> {
    let mut conditions = Vec::new();
    if let Some(memory_type) = search.memory_type {
        conditions.push(Condition::Equals {
            field: "type".into(),
            value: memory_type.as_str().to_string(),
        });
    }
    if let Some(min) = search.min_importance {
        conditions.push(Condition::Range {
            field: "importance".into(),
            gte: Some(min),
            lte: None,
        });
    }
    if let Some(range) = search.emotional_range {
        conditions.push(Condition::Range {
            field: "emotionalValence".into(),
            gte: Some(range.min),
            lte: Some(range.max),
        });
    }
    if let Some(range) = search.date_range {
        conditions.push(Condition::DateRange {
            field: "timestamp".into(),
            gte: range.start,
            lte: range.end,
        });
    }
    conditions
}

/// A memory with one of the words in its content, or one of them as a tag.
pub(super) fn keyword_conditions(terms: &[String]) -> Vec<Condition> {
    terms
        .iter()
        .map(|term| Condition::HasWord {
            field: "content".into(),
            word: term.clone(),
        })
        .chain([Condition::AnyOf {
            field: "context.tags".into(),
            values: terms.to_vec(),
        }])
        .collect()
}

/// The chunks of the parent memory `parent_id` (their `context.chunkOf`).
pub(super) fn chunks_of(parent_id: &str) -> Condition {
    Condition::Equals {
        field: "context.chunkOf".into(),
        value: parent_id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::backend::vectors::PayloadFilter;
    use crate::memory::{DateRange, MemoryType, SearchRequest, StoredMemory, ValenceRange};

    fn memory(value: Value) -> StoredMemory {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test memories are objects"),
        }
    }

    fn search(adjust: impl FnOnce(&mut NormalizedSearch)) -> NormalizedSearch {
        let mut search = serde_json::from_value::<SearchRequest>(json!({"query": "coffee"}))
            .expect("a search")
            .normalize(0.7)
            .expect("valid");
        adjust(&mut search);
        search
    }

    #[test]
    fn a_search_filters_memories_as_cldmemory_does() {
        let stored = memory(json!({
            "id": "x", "content": "Coffee in Paris", "type": "episodic", "importance": 0.6,
            "emotionalValence": -0.2, "timestamp": "2026-03-01T10:00:00.000Z",
            "context": {"tags": ["travel"]}
        }));
        let judged = |search: NormalizedSearch| {
            PayloadFilter::all(search_conditions(&search)).matches(&stored)
        };
        assert!(judged(search(|_| {})));
        assert!(judged(search(|s| {
            s.memory_type = Some(MemoryType::Episodic);
            s.min_importance = Some(0.5);
            s.emotional_range = Some(ValenceRange {
                min: -0.5,
                max: 0.0,
            });
            s.date_range = Some(DateRange {
                start: "2026-01-01T00:00:00Z".parse().ok(),
                end: None,
            });
        })));
        assert!(!judged(search(
            |s| s.memory_type = Some(MemoryType::Semantic)
        )));
        assert!(!judged(search(|s| s.min_importance = Some(0.7))));
        assert!(!judged(search(|s| {
            s.date_range = Some(DateRange {
                start: "2026-06-01T00:00:00Z".parse().ok(),
                end: None,
            })
        })));
        let words = |terms: &[&str]| PayloadFilter {
            must: Vec::new(),
            should: keyword_conditions(&terms.iter().map(|t| t.to_string()).collect::<Vec<_>>()),
        };
        assert!(words(&["paris"]).matches(&stored));
        assert!(words(&["tea", "travel"]).matches(&stored));
        assert!(!words(&["tea"]).matches(&stored));
        assert!(!PayloadFilter::all(vec![chunks_of("x")]).matches(&stored));
    }
}
