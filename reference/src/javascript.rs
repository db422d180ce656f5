//! What cldmemory inherits from JavaScript: `parseFloat`, `new Date(s)`, `toISOString`,
//! `string.length`, `substring`, truthiness, and how numbers print.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::Value;

/// `s.length` (UTF-16 code units).
pub fn length(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `s.substring(0, n)`; a surrogate pair at the cut is kept out whole.
pub fn substring(s: &str, n: usize) -> String {
    let mut out = String::new();
    let mut units = 0;
    for c in s.chars() {
        units += c.len_utf16();
        if units > n {
            break;
        }
        out.push(c);
    }
    out
}

/// `parseFloat(s)`; `None` for `NaN`.
pub fn parse_float(s: &str) -> Option<f64> {
    let s = s.trim_start();
    let mut end = 0;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
        i += 1;
    }
    let rest: String = chars[i..].iter().collect();
    if rest.starts_with("Infinity") {
        let negative = chars.first() == Some(&'-');
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    let mut seen_digit = false;
    while i < chars.len() && chars[i].is_ascii_digit() {
        i += 1;
        seen_digit = true;
        end = i;
    }
    if i < chars.len() && chars[i] == '.' {
        i += 1;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
            seen_digit = true;
            end = i;
        }
        if seen_digit && end < i {
            end = i;
        }
    }
    if !seen_digit {
        return None;
    }
    if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
        let mut j = i + 1;
        if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
            j += 1;
        }
        let start = j;
        while j < chars.len() && chars[j].is_ascii_digit() {
            j += 1;
        }
        if j > start {
            end = j;
        }
    }
    let text: String = chars[..end].iter().collect();
    let text = text.strip_suffix('.').unwrap_or(&text);
    text.parse().ok()
}

/// `new Date(s)` for ISO strings and `YYYY-MM-DD` (UTC); `None` for `Invalid Date`.
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(s) {
        return Some(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(s, format) {
            return Some(at.and_utc());
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(day.and_time(NaiveTime::MIN).and_utc());
    }
    None
}

/// `date.toISOString()`.
pub fn iso(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Truthiness of a value (`undefined` is `None`).
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_)) | Some(Value::Object(_)) => true,
        Some(Value::Null) | None => false,
    }
}

/// How a number prints in JavaScript (`String(n)`).
pub fn number_text(n: f64) -> String {
    if n == 0.0 {
        return "0".to_string();
    }
    if !n.is_finite() {
        return if n.is_nan() {
            "NaN".into()
        } else if n > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let magnitude = n.abs();
    if (1e-6..1e21).contains(&magnitude) {
        // Rust's Display is the shortest round trip, without an exponent.
        return format!("{n}");
    }
    // Exponent form: shortest digits from `{:e}`, sign always written.
    let text = format!("{n:e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) if exponent.starts_with('-') => format!("{mantissa}e{exponent}"),
        Some((mantissa, exponent)) => format!("{mantissa}e+{exponent}"),
        None => text,
    }
}

/// `String(v)` inside a template literal.
pub fn template(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => number_text(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => template(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

/// A number as JavaScript's JSON writes it: integral values without a fraction.
pub fn json_number(n: f64) -> Value {
    if n.is_finite() && n == n.trunc() && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Every number in `value` as JavaScript's JSON writes it (what a payload sent from Node
/// looks like once stored).
pub fn js_numbers(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => json_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => Value::Array(items.into_iter().map(js_numbers).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, js_numbers(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number_text(0.5), "0.5");
        assert_eq!(number_text(1e21), "1e+21");
        assert_eq!(number_text(2.5e-8), "2.5e-8");
        assert_eq!(number_text(123.0), "123");
        assert_eq!(parse_float(" 0.25 or so"), Some(0.25));
        assert_eq!(parse_float("neutral"), None);
        assert_eq!(parse_float("-1"), Some(-1.0));
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("2025-01-02").map(iso).as_deref(),
            Some("2025-01-02T00:00:00.000Z")
        );
        assert_eq!(parse_date("soon"), None);
    }
}
