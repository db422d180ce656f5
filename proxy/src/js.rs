//! JavaScript's semantics where a legacy service written in TypeScript shows them in its data:
//! string lengths in UTF-16 code units, `parseFloat`, `new Date(string)`, `Number#toString`,
//! truthiness and `String(value)` of JSON values.
//!
//! memgate must store and answer what the legacy service would, so these follow the
//! ECMAScript specification (and V8 where the specification leaves room), not Rust's habits.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// `string.length`: UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// `string.substring(0, units)`, except that a surrogate pair is never split (JavaScript
/// would leave half of it, which is not valid UTF-8 or JSON).
pub fn utf16_prefix(text: &str, units: usize) -> &str {
    let mut taken = 0;
    for (index, c) in text.char_indices() {
        taken += c.len_utf16();
        if taken > units {
            return &text[..index];
        }
    }
    text
}

/// `parseFloat(text)`: the longest prefix (after leading whitespace) that is a decimal
/// literal, or `Infinity`; `None` where JavaScript answers `NaN`.
pub fn parse_float(text: &str) -> Option<f64> {
    let text = text.trim_start_matches(is_js_whitespace);
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'-') => (-1.0, &text[1..]),
        Some(b'+') => (1.0, &text[1..]),
        _ => (1.0, text),
    };
    if rest.starts_with("Infinity") {
        return Some(sign * f64::INFINITY);
    }
    let bytes = rest.as_bytes();
    let mut end = 0;
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let integer = digits(0);
    end += integer;
    let mut fraction = 0;
    if bytes.get(end) == Some(&b'.') {
        fraction = digits(end + 1);
        if integer > 0 || fraction > 0 {
            end += 1 + fraction;
        }
    }
    if integer == 0 && fraction == 0 {
        return None;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut at = end + 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let exponent = digits(at);
        if exponent > 0 {
            end = at + exponent;
        }
    }
    rest[..end].parse::<f64>().ok().map(|value| sign * value)
}

/// JavaScript's `WhiteSpace` and `LineTerminator`, which `trim` and `parseFloat` skip.
pub fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{A}' | '\u{B}' | '\u{C}' | '\u{D}' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

/// `string.trim()`.
pub fn trim(text: &str) -> &str {
    text.trim_matches(is_js_whitespace)
}

/// `Number.prototype.toString()` (and how `JSON.stringify` writes a number): the shortest
/// digits that read back as the same double, in plain notation from 1e-7 up to 1e21 and in
/// exponent notation (`1e+21`, `1.5e-7`) outside it.
pub fn number_to_string(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value == 0.0 {
        return "0".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if value < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the shortest round-trip digits: `d.ddde±x`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i64;
    // The decimal point sits after `n` digits (ECMAScript's Number::toString, step 5).
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (integer, fraction) = digits.split_at(n as usize);
        format!("{integer}.{fraction}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let exponent_sign = if n > 0 { "+" } else { "-" };
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{first}{fraction}e{exponent_sign}{}", (n - 1).abs())
    };
    format!("{sign}{body}")
}

/// A number as JavaScript's JSON carries it: an integral value is written without a fraction
/// (`1`, not `1.0`), so a payload written from here reads back as one written by JavaScript.
pub fn number(value: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    if value.fract() == 0.0 && value.abs() <= SAFE {
        if value == 0.0 {
            return Value::from(0);
        }
        return Value::from(value as i64);
    }
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Rewrites every number in `value` as [`number`] writes it.
pub fn normalize_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(float) = n.as_f64().filter(|_| n.is_f64()) {
                *value = number(float);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// JavaScript truthiness of a JSON value (`undefined` is `None`).
pub fn is_truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// `String(value)` of a JSON value, as a template literal writes it.
pub fn to_js_string(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n
            .as_f64()
            .map(number_to_string)
            .unwrap_or_else(|| n.to_string()),
        Value::String(s) => s.clone(),
        // `Array.prototype.toString` joins with commas; holes and null/undefined are empty.
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => to_js_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".into(),
    }
}

/// Why a date string is not a date (`new Date(s)` is `Invalid Date`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid time value")]
pub struct InvalidDate;

/// `new Date(text)` for the forms of ECMAScript's date-time string format, as V8 reads them:
/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD` (UTC midnight), with `THH:mm[:ss[.sss]]` and `Z` or
/// `±HH:mm` (without either, the time is local: this process runs in UTC, as containers do),
/// `±YYYYYY` years, and a space instead of `T`. A day past the month's end rolls over into
/// the next month, as V8 does. Other forms (`March 7, 2025`) are refused.
pub fn parse_date(text: &str) -> Result<DateTime<Utc>, InvalidDate> {
    let mut cursor = DateCursor {
        bytes: text.trim().as_bytes(),
        at: 0,
    };
    let year = cursor.year()?;
    let (month, day) = if cursor.eat(b'-') {
        let month = cursor.number(2)?;
        let day = if cursor.eat(b'-') {
            cursor.number(2)?
        } else {
            1
        };
        (month, day)
    } else {
        (1, 1)
    };
    let (mut hour, mut minute, mut second, mut millis) = (0, 0, 0, 0);
    let mut offset_minutes = 0i64;
    if cursor.eat(b'T') || cursor.eat(b't') || cursor.eat(b' ') {
        hour = cursor.number(2)?;
        if !cursor.eat(b':') {
            return Err(InvalidDate);
        }
        minute = cursor.number(2)?;
        if cursor.eat(b':') {
            second = cursor.number(2)?;
            if cursor.eat(b'.') || cursor.eat(b',') {
                let digits = cursor.digits();
                if digits.is_empty() {
                    return Err(InvalidDate);
                }
                // Milliseconds from the first three digits; more are allowed and ignored.
                let padded = format!("{digits:0<3}");
                millis = padded[..3].parse::<i64>().map_err(|_| InvalidDate)?;
            }
        }
        let utc = cursor.eat(b'Z') || cursor.eat(b'z');
        if let Some(sign) = (!utc).then(|| cursor.sign()).flatten() {
            let hours = cursor.number(2)?;
            cursor.eat(b':');
            let minutes = cursor.number(2)?;
            if hours > 23 || minutes > 59 {
                return Err(InvalidDate);
            }
            offset_minutes = sign * (hours * 60 + minutes);
        }
    }
    if !cursor.done() {
        return Err(InvalidDate);
    }
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (hour < 24 || (hour == 24 && minute == 0 && second == 0 && millis == 0))
        && minute < 60
        && second < 60;
    if !valid {
        return Err(InvalidDate);
    }
    let days = days_from_civil(year, month, 1) + (day - 1);
    let millis_total =
        ((days * 24 + hour) * 60 + minute - offset_minutes) * 60_000 + second * 1000 + millis;
    // ECMAScript's time range: ±8.64e15 ms around the epoch.
    if millis_total.abs() > 8_640_000_000_000_000 {
        return Err(InvalidDate);
    }
    DateTime::from_timestamp_millis(millis_total).ok_or(InvalidDate)
}

struct DateCursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl DateCursor<'_> {
    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn sign(&mut self) -> Option<i64> {
        if self.eat(b'+') {
            Some(1)
        } else if self.eat(b'-') {
            Some(-1)
        } else {
            None
        }
    }

    fn digits(&mut self) -> &str {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or_default()
    }

    /// Exactly `count` digits.
    fn number(&mut self, count: usize) -> Result<i64, InvalidDate> {
        let end = self.at + count;
        let slice = self.bytes.get(self.at..end).ok_or(InvalidDate)?;
        if !slice.iter().all(u8::is_ascii_digit) {
            return Err(InvalidDate);
        }
        self.at = end;
        std::str::from_utf8(slice)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(InvalidDate)
    }

    /// `YYYY`, or `±YYYYYY` (where `-000000` is not a year).
    fn year(&mut self) -> Result<i64, InvalidDate> {
        match self.sign() {
            Some(sign) => {
                let year = self.number(6)?;
                if sign < 0 && year == 0 {
                    return Err(InvalidDate);
                }
                Ok(sign * year)
            }
            None => self.number(4),
        }
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `date.toISOString()`: `YYYY-MM-DDTHH:mm:ss.sssZ`.
pub fn to_iso_string(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `JSON.stringify(value, null, 2)`: two-space indent, numbers as [`number_to_string`] writes
/// them (`1`, `0.5`, `1e+21`), strings escaped as JavaScript escapes them.
pub fn stringify_pretty(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, JsFormatter::default());
    if serde::Serialize::serialize(value, &mut serializer).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// serde_json's pretty formatter with JavaScript's number text.
#[derive(Default)]
struct JsFormatter {
    pretty: serde_json::ser::PrettyFormatter<'static>,
}

impl serde_json::ser::Formatter for JsFormatter {
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        writer.write_all(number_to_string(value).as_bytes())
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.begin_array(writer)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.end_array(writer)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.pretty.begin_array_value(writer, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        self.pretty.end_array_value(writer)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.begin_object(writer)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.pretty.end_object(writer)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.pretty.begin_object_key(writer, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        self.pretty.begin_object_value(writer)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        self.pretty.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        let cases = [
            (1.0, "1"),
            (0.5, "0.5"),
            (-0.25, "-0.25"),
            (0.7999999999999999, "0.7999999999999999"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (100.0, "100"),
            (-0.0, "0"),
            (f64::NAN, "NaN"),
        ];
        for (value, expected) in cases {
            assert_eq!(number_to_string(value), expected, "{value:e}");
        }
    }

    #[test]
    fn integral_numbers_are_written_as_integers() {
        assert_eq!(number(1.0).to_string(), "1");
        assert_eq!(number(-0.0).to_string(), "0");
        assert_eq!(number(0.5).to_string(), "0.5");
        assert_eq!(number(f64::NAN), Value::Null);
        let mut value = json!({"a": [1.0, 2.5, {"b": 3.0}], "c": 4});
        normalize_numbers(&mut value);
        assert_eq!(value.to_string(), r#"{"a":[1,2.5,{"b":3}],"c":4}"#);
    }

    #[test]
    fn parse_float_reads_a_prefix() {
        assert_eq!(parse_float("0.8"), Some(0.8));
        assert_eq!(parse_float("  -0.5 (negative)"), Some(-0.5));
        assert_eq!(parse_float("\n.5"), Some(0.5));
        assert_eq!(parse_float("5."), Some(5.0));
        assert_eq!(parse_float("1e3x"), Some(1000.0));
        assert_eq!(parse_float("1e"), Some(1.0));
        assert_eq!(parse_float("Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_float("The valence is 0.5"), None);
        assert_eq!(parse_float(""), None);
        assert_eq!(parse_float("-"), None);
        assert_eq!(parse_float("."), None);
    }

    #[test]
    fn lengths_count_utf16_units() {
        assert_eq!(utf16_len("abc"), 3);
        assert_eq!(utf16_len("é"), 1);
        assert_eq!(utf16_len("😀"), 2);
        assert_eq!(utf16_prefix("a😀b", 2), "a");
        assert_eq!(utf16_prefix("a😀b", 3), "a😀");
        assert_eq!(utf16_prefix("abc", 10), "abc");
    }

    #[test]
    fn dates_parse_as_v8_parses_them() {
        let iso = |text: &str| parse_date(text).map(to_iso_string);
        assert_eq!(iso("2025-01-15"), Ok("2025-01-15T00:00:00.000Z".into()));
        assert_eq!(iso("2025-01"), Ok("2025-01-01T00:00:00.000Z".into()));
        assert_eq!(iso("2025"), Ok("2025-01-01T00:00:00.000Z".into()));
        assert_eq!(
            iso("2025-01-15T10:20:30.123Z"),
            Ok("2025-01-15T10:20:30.123Z".into())
        );
        assert_eq!(
            iso("2025-01-15T10:20+02:00"),
            Ok("2025-01-15T08:20:00.000Z".into())
        );
        assert_eq!(
            iso("2025-01-15 10:20:30"),
            Ok("2025-01-15T10:20:30.000Z".into())
        );
        assert_eq!(
            iso("2025-01-15T10:20:30.1234567Z"),
            Ok("2025-01-15T10:20:30.123Z".into())
        );
        assert_eq!(iso("2019-02-31"), Ok("2019-03-03T00:00:00.000Z".into()));
        assert_eq!(
            iso("2025-01-15T24:00:00Z"),
            Ok("2025-01-16T00:00:00.000Z".into())
        );
        assert_eq!(iso("+002025-01-15"), Ok("2025-01-15T00:00:00.000Z".into()));
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-00-10",
            "2025-01-32",
            "2025-1-5",
            "2025-01-15T25:00",
            "2025-01-15T10",
            "2025-01-15Z",
            "-000000-01-01",
            "March 7, 2025",
        ] {
            assert_eq!(parse_date(bad), Err(InvalidDate), "{bad:?}");
        }
    }

    #[test]
    fn truthiness_and_strings_follow_javascript() {
        assert!(!is_truthy(None));
        assert!(!is_truthy(Some(&json!(""))));
        assert!(!is_truthy(Some(&json!(0))));
        assert!(!is_truthy(Some(&json!(false))));
        assert!(!is_truthy(Some(&json!(null))));
        assert!(is_truthy(Some(&json!([]))));
        assert!(is_truthy(Some(&json!({}))));
        assert!(is_truthy(Some(&json!("0"))));
        assert_eq!(to_js_string(&json!(1.0)), "1");
        assert_eq!(to_js_string(&json!(true)), "true");
        assert_eq!(to_js_string(&json!(["a", null, 2])), "a,,2");
        assert_eq!(to_js_string(&json!({"a": 1})), "[object Object]");
    }

    #[test]
    fn stringify_pretty_writes_as_javascript_does() {
        let value = serde_json::json!({"a": [1.0, 0.5, 1e21, -0.0000001], "b": {}, "c": [], "d": "x\u{1}\"", "e": null});
        assert_eq!(
            stringify_pretty(&value),
            "{\n  \"a\": [\n    1,\n    0.5,\n    1e+21,\n    -1e-7\n  ],\n  \"b\": {},\n  \"c\": [],\n  \"d\": \"x\\u0001\\\"\",\n  \"e\": null\n}"
        );
    }
}
