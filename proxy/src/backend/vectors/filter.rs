//! Payload filters in the vector store's own terms: conditions on fields named by their paths
//! (`context.tags`), with no knowledge of what the fields mean. The layout
//! (`crate::layout::Layout`) says which fields a search filters on; each backend translates a
//! [`PayloadFilter`] into Qdrant's filter, and [`PayloadFilter::matches`] judges a memory that
//! does not come from the store (a cached one) the same way.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::memory::StoredMemory;

/// One condition on a payload field. A memory without the field fails it; an array field meets
/// it when one of its values does (as Qdrant judges).
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The keyword field is `value`.
    Equals { field: String, value: String },
    /// The keyword field is one of `values`.
    AnyOf { field: String, values: Vec<String> },
    /// The number is within the bounds (inclusive).
    Range {
        field: String,
        gte: Option<f64>,
        lte: Option<f64>,
    },
    /// The RFC 3339 date-time is within the bounds (inclusive).
    DateRange {
        field: String,
        gte: Option<DateTime<Utc>>,
        lte: Option<DateTime<Utc>>,
    },
    /// The full-text field has the word (lowercase; the text is split into lowercase words).
    HasWord { field: String, word: String },
}

/// What a memory must meet: every `must`, and at least one `should` when there are any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadFilter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
}

impl PayloadFilter {
    pub fn all(must: Vec<Condition>) -> Self {
        Self {
            must,
            should: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty()
    }

    /// Whether a memory's JSON meets the filter, as the vector store would judge it.
    pub fn matches(&self, memory: &StoredMemory) -> bool {
        self.must.iter().all(|condition| condition.holds(memory))
            && (self.should.is_empty() || self.should.iter().any(|c| c.holds(memory)))
    }
}

impl Condition {
    /// The field the condition is on.
    pub fn field(&self) -> &str {
        match self {
            Self::Equals { field, .. }
            | Self::AnyOf { field, .. }
            | Self::Range { field, .. }
            | Self::DateRange { field, .. }
            | Self::HasWord { field, .. } => field,
        }
    }

    /// Whether a memory meets the condition.
    pub fn holds(&self, memory: &StoredMemory) -> bool {
        let Some(found) = field_value(memory, self.field()) else {
            return false;
        };
        match found {
            Value::Array(values) => values.iter().any(|value| self.holds_for(value)),
            value => self.holds_for(value),
        }
    }

    fn holds_for(&self, value: &Value) -> bool {
        match self {
            Self::Equals { value: wanted, .. } => value.as_str() == Some(wanted.as_str()),
            Self::AnyOf { values, .. } => value
                .as_str()
                .is_some_and(|found| values.iter().any(|wanted| wanted == found)),
            Self::Range { gte, lte, .. } => value.as_f64().is_some_and(|number| {
                gte.is_none_or(|min| number >= min) && lte.is_none_or(|max| number <= max)
            }),
            Self::DateRange { gte, lte, .. } => value
                .as_str()
                .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
                .is_some_and(|at| {
                    gte.is_none_or(|start| at >= start) && lte.is_none_or(|end| at <= end)
                }),
            Self::HasWord { word, .. } => value.as_str().is_some_and(|text| {
                text.split(|c: char| !c.is_alphanumeric())
                    .any(|token| token.to_lowercase() == *word)
            }),
        }
    }
}

/// The value at a dotted path (`context.chunkOf`).
fn field_value<'a>(memory: &'a StoredMemory, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = memory.get(parts.next()?)?;
    parts.try_fold(first, |value, part| value.get(part))
}

/// The kind of index a payload field needs for its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Keyword,
    Float,
    Datetime,
    /// Full text: word tokens, lowercased.
    Text,
}

/// A payload field with an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedField {
    pub field: String,
    pub kind: IndexKind,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn memory(value: Value) -> StoredMemory {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        }
    }

    fn date(text: &str) -> DateTime<Utc> {
        text.parse().expect("a date")
    }

    #[test]
    fn conditions_judge_memories_as_the_store_does() {
        let stored = memory(json!({
            "tenant": "alice", "type": "semantic", "importance": 0.7,
            "emotionalValence": -0.2, "timestamp": "2025-01-10T12:00:00.000Z",
            "content": "Coffee in Paris, with Marie.",
            "context": {"tags": ["travel", "food"], "chunkOf": "p"}
        }));
        let equals = |field: &str, value: &str| Condition::Equals {
            field: field.into(),
            value: value.into(),
        };
        assert!(PayloadFilter::default().matches(&stored));
        assert!(PayloadFilter::all(vec![
            equals("tenant", "alice"),
            equals("type", "semantic"),
            equals("context.chunkOf", "p"),
            equals("context.tags", "food"),
            Condition::Range {
                field: "importance".into(),
                gte: Some(0.7),
                lte: None
            },
            Condition::Range {
                field: "emotionalValence".into(),
                gte: Some(-0.5),
                lte: Some(0.0)
            },
            Condition::DateRange {
                field: "timestamp".into(),
                gte: Some(date("2025-01-05T00:00:00Z")),
                lte: Some(date("2025-01-15T00:00:00Z")),
            },
        ])
        .matches(&stored));
        for failing in [
            equals("tenant", "bob"),
            equals("context.chunkOf", "q"),
            equals("missing", "x"),
            Condition::Range {
                field: "importance".into(),
                gte: Some(0.8),
                lte: None,
            },
            Condition::DateRange {
                field: "timestamp".into(),
                gte: Some(date("2025-01-11T00:00:00Z")),
                lte: None,
            },
        ] {
            assert!(!failing.holds(&stored), "{failing:?}");
        }
    }

    #[test]
    fn one_should_condition_is_enough() {
        let stored = memory(json!({"content": "Coffee in Paris", "context": {"tags": ["food"]}}));
        let word = |word: &str| Condition::HasWord {
            field: "content".into(),
            word: word.into(),
        };
        let tags = |values: &[&str]| Condition::AnyOf {
            field: "context.tags".into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let filter = |should| PayloadFilter {
            must: Vec::new(),
            should,
        };
        assert!(filter(vec![word("tea"), word("paris")]).matches(&stored));
        assert!(filter(vec![word("tea"), tags(&["music", "food"])]).matches(&stored));
        assert!(!filter(vec![word("tea"), word("pari"), tags(&["music"])]).matches(&stored));
    }
}
