//! Comparing the fast path's tool result with the legacy service's for the same call: for a
//! search, the ids and their order and then each row; for a get, the memory; in both, the
//! read counters (`accessCount`, `lastAccessed`) set aside (each side counts its own read) and
//! numbers equal within a tolerance. Pure: no I/O.

use serde_json::Value;

/// The fields each side sets by counting its own read.
const READ_COUNTERS: [&str; 2] = ["accessCount", "lastAccessed"];

/// How far two numbers may be apart and still be the same (float formatting, a valence
/// computed in another order).
pub const NUMBER_TOLERANCE: f64 = 1e-6;

/// The tools whose fast-path answers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowTool {
    Search,
    Get,
}

impl ShadowTool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Search => "search_memories",
            Self::Get => "get_memory",
        }
    }
}

/// The outcome of one comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Match,
    /// What differs, in a few words (no content).
    Mismatch(String),
}

/// Compares the two result texts of `tool`.
pub fn compare(tool: ShadowTool, fast: &str, legacy: &str) -> Verdict {
    let (fast_json, legacy_json) = (
        serde_json::from_str::<Value>(fast).ok(),
        serde_json::from_str::<Value>(legacy).ok(),
    );
    match (fast_json, legacy_json) {
        (Some(fast), Some(legacy)) => match tool {
            ShadowTool::Search => compare_rows(&fast, &legacy),
            ShadowTool::Get => compare_memory(&fast, &legacy, "the memory"),
        },
        (None, None) if fast == legacy => Verdict::Match,
        (None, None) => Verdict::Mismatch("the texts differ".into()),
        (Some(_), None) => Verdict::Mismatch(format!(
            "only the fast path found it (legacy: {})",
            first_words(legacy)
        )),
        (None, Some(_)) => Verdict::Mismatch(format!(
            "only the legacy service found it (fast path: {})",
            first_words(fast)
        )),
    }
}

fn first_words(text: &str) -> String {
    text.chars().take(40).collect()
}

fn compare_rows(fast: &Value, legacy: &Value) -> Verdict {
    let (Some(fast_rows), Some(legacy_rows)) = (fast.as_array(), legacy.as_array()) else {
        return compare_memory(fast, legacy, "the result");
    };
    let ids = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|row| row["id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (fast_ids, legacy_ids) = (ids(fast_rows), ids(legacy_rows));
    if fast_ids != legacy_ids {
        return Verdict::Mismatch(format!(
            "ids or their order differ: fast path {fast_ids:?}, legacy {legacy_ids:?}"
        ));
    }
    for (row, (fast_row, legacy_row)) in fast_rows.iter().zip(legacy_rows).enumerate() {
        if let Verdict::Mismatch(what) = compare_memory(
            fast_row,
            legacy_row,
            &format!("row {row} ({})", fast_ids[row]),
        ) {
            return Verdict::Mismatch(what);
        }
    }
    Verdict::Match
}

fn compare_memory(fast: &Value, legacy: &Value, what: &str) -> Verdict {
    match first_difference(
        &without_read_counters(fast),
        &without_read_counters(legacy),
        "",
    ) {
        None => Verdict::Match,
        Some(path) => Verdict::Mismatch(format!(
            "{what} differs at {}",
            if path.is_empty() { "its value" } else { &path }
        )),
    }
}

/// `value` without the read counters, at any depth (associated memories carry theirs).
fn without_read_counters(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(key, _)| !READ_COUNTERS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), without_read_counters(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_read_counters).collect()),
        other => other.clone(),
    }
}

/// The path of the first place two values differ (key order does not matter; numbers within
/// [`NUMBER_TOLERANCE`]); `None` when they are the same.
fn first_difference(fast: &Value, legacy: &Value, path: &str) -> Option<String> {
    match (fast, legacy) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .find_map(|key| match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => first_difference(x, y, &format!("{path}.{key}")),
                    _ => Some(format!("{path}.{key}")),
                })
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]"))),
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            ((a - b).abs() > NUMBER_TOLERANCE).then(|| path.to_string())
        }
        _ => (fast != legacy).then(|| path.to_string()),
    }
}

/// The value with its texts replaced by their length, so a mismatch can be shown without the
/// memories' content.
pub fn redacted(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => redact(&value),
        Err(_) => Value::String(format!(
            "[redacted text: {} characters]",
            text.chars().count()
        )),
    }
}

/// Ids, types and times are kept: they say which memory differs without saying what it holds.
const SHOWN_TEXTS: [&str; 4] = ["id", "type", "timestamp", "lastAccessed"];

fn redact(value: &Value) -> Value {
    redact_under(value, false)
}

fn redact_under(value: &Value, shown: bool) -> Value {
    match value {
        Value::String(text) if !shown => {
            Value::String(format!("[redacted: {} characters]", text.chars().count()))
        }
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| {
                    let shown = SHOWN_TEXTS.contains(&key.as_str());
                    (key.clone(), redact_under(value, shown))
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| redact_under(item, shown)).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn memory(id: &str, content: &str, reads: u64) -> Value {
        json!({"id": id, "content": content, "importance": 0.5, "emotionalValence": 0.1234567,
               "accessCount": reads, "lastAccessed": format!("2026-12-0{reads}T00:00:00.000Z"),
               "context": {"tags": ["a"]}})
    }

    #[test]
    fn the_same_memory_matches_whatever_its_read_counters_say() {
        let fast = memory("m1", "hello", 3).to_string();
        let legacy = memory("m1", "hello", 4).to_string();
        assert_eq!(compare(ShadowTool::Get, &fast, &legacy), Verdict::Match);
    }

    #[test]
    fn a_changed_field_or_a_number_beyond_the_tolerance_is_a_mismatch_that_names_where() {
        let fast = memory("m1", "hello", 3).to_string();
        let legacy = memory("m1", "hello there", 3).to_string();
        assert_eq!(
            compare(ShadowTool::Get, &fast, &legacy),
            Verdict::Mismatch("the memory differs at .content".into())
        );
        let mut close = memory("m1", "hello", 3);
        close["emotionalValence"] = json!(0.12345670000001);
        assert_eq!(
            compare(ShadowTool::Get, &fast, &close.to_string()),
            Verdict::Match
        );
        close["importance"] = json!(0.6);
        assert!(matches!(
            compare(ShadowTool::Get, &fast, &close.to_string()),
            Verdict::Mismatch(what) if what.contains(".importance")
        ));
    }

    #[test]
    fn searches_compare_ids_and_order_then_rows() {
        let rows = |ids: &[&str]| {
            Value::Array(ids.iter().map(|id| memory(id, id, 1)).collect()).to_string()
        };
        assert_eq!(
            compare(ShadowTool::Search, &rows(&["a", "b"]), &rows(&["a", "b"])),
            Verdict::Match
        );
        assert!(matches!(
            compare(ShadowTool::Search, &rows(&["a", "b"]), &rows(&["b", "a"])),
            Verdict::Mismatch(what) if what.contains("order")
        ));
        assert!(matches!(
            compare(ShadowTool::Search, &rows(&["a"]), &rows(&["a", "b"])),
            Verdict::Mismatch(_)
        ));
        let mut changed: Vec<Value> = ["a", "b"].iter().map(|id| memory(id, id, 1)).collect();
        changed[1]["summary"] = json!("new");
        assert!(matches!(
            compare(ShadowTool::Search, &rows(&["a", "b"]), &Value::Array(changed).to_string()),
            Verdict::Mismatch(what) if what.contains("row 1 (b)")
        ));
    }

    #[test]
    fn not_found_on_one_side_only_is_a_mismatch_and_on_both_a_match() {
        let found = memory("m1", "hello", 1).to_string();
        assert_eq!(
            compare(ShadowTool::Get, "Memory not found", "Memory not found"),
            Verdict::Match
        );
        assert!(matches!(
            compare(ShadowTool::Get, &found, "Memory not found"),
            Verdict::Mismatch(what) if what.contains("only the fast path")
        ));
        assert!(matches!(
            compare(ShadowTool::Get, "Memory not found", &found),
            Verdict::Mismatch(what) if what.contains("only the legacy")
        ));
    }

    #[test]
    fn redaction_keeps_ids_and_shapes_and_hides_texts() {
        let shown = redacted(&memory("m1", "the door code is 4711", 1).to_string());
        assert_eq!(shown["id"], "m1");
        assert_eq!(shown["content"], "[redacted: 21 characters]");
        assert_eq!(shown["context"]["tags"][0], "[redacted: 1 characters]");
        assert_eq!(shown["importance"], 0.5);
        assert_eq!(
            redacted("Error: boom"),
            json!("[redacted text: 11 characters]")
        );
    }
}
