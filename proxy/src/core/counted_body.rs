//! A memory's JSON body with its read counts left open, so that an L1 hit shows new counts
//! without parsing and serializing the whole memory again.
//!
//! Made once when a record enters L1: the body is parsed, each read-count field the layout
//! names ([`crate::layout::Layout::access_fields`]) is replaced by a marker, the memory is
//! serialized again and cut at the markers. An answer then writes the pieces with the new
//! values between them. serde_json writes a map as its entries one after another and a value
//! the same wherever it stands, so the result is, byte for byte, what serializing the memory
//! with those values would give (a test holds it to that).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::layout::Layout;
use crate::memory::StoredMemory;

/// A body cut at its read-count fields' values.
#[derive(Debug, Clone)]
pub(super) struct CountedBody {
    /// The text before each open value, then the text after the last one.
    pieces: Vec<Bytes>,
    /// The field whose value goes after each piece but the last.
    slots: Vec<String>,
    /// The read-count fields as stored (what the layout counts on from).
    stored: StoredMemory,
}

/// A marker no memory holds: a control character cannot be typed, and it is checked for.
fn marker(slot: usize) -> String {
    format!("\u{1}memgate-read-count-{slot}\u{1}")
}

/// Where `needle` is in `haystack`, if it is there exactly once.
fn find_once(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut at = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at);
    let first = at.next()?;
    at.next().is_none().then_some(first)
}

impl CountedBody {
    /// `body` cut at the values of `fields`; `None` when it is not a JSON object, or holds
    /// none of them.
    pub fn of(body: &[u8], fields: &[&str]) -> Option<Self> {
        let mut memory: StoredMemory = serde_json::from_slice(body).ok()?;
        let mut stored = StoredMemory::new();
        let mut markers = Vec::new();
        for (slot, field) in fields.iter().enumerate() {
            if let Some(value) = memory.get_mut(*field) {
                stored.insert((*field).to_string(), value.clone());
                let marker = marker(slot);
                markers.push((field.to_string(), serde_json::to_vec(&marker).ok()?));
                *value = Value::String(marker);
            }
        }
        if markers.is_empty() {
            return None;
        }
        let text = serde_json::to_vec(&memory).ok()?;
        let mut cuts: Vec<(usize, usize, String)> = markers
            .into_iter()
            .map(|(field, marker)| {
                find_once(&text, &marker).map(|at| (at, at + marker.len(), field))
            })
            .collect::<Option<_>>()?;
        cuts.sort();
        let text = Bytes::from(text);
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        let mut slots = Vec::with_capacity(cuts.len());
        let mut from = 0;
        for (start, end, field) in cuts {
            pieces.push(text.slice(from..start));
            slots.push(field);
            from = end;
        }
        pieces.push(text.slice(from..));
        Some(Self {
            pieces,
            slots,
            stored,
        })
    }

    /// The body with `count` more reads, the last at `last`, as the layout counts them.
    pub fn with_reads(&self, layout: &dyn Layout, count: u64, last: DateTime<Utc>) -> Bytes {
        let counted = layout.accessed(&self.stored, count, last);
        let size = self.pieces.iter().map(Bytes::len).sum::<usize>() + 32 * self.slots.len();
        let mut out = Vec::with_capacity(size);
        for (piece, field) in self.pieces.iter().zip(&self.slots) {
            out.extend_from_slice(piece);
            let value = counted.get(field).or_else(|| self.stored.get(field));
            if serde_json::to_writer(&mut out, &value.unwrap_or(&Value::Null)).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        if let Some(last_piece) = self.pieces.last() {
            out.extend_from_slice(last_piece);
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reads::counted;
    use crate::layout::{CldMemoryLayout, CldMemorySettings};

    fn layout() -> CldMemoryLayout {
        CldMemoryLayout::new(CldMemorySettings {
            similarity_threshold: 0.7,
            memory_metadata: None,
            project: "box:/app".into(),
        })
    }

    /// What an answer showed before: the memory parsed, counted and serialized again.
    fn by_parsing(body: &[u8], count: u64, last: DateTime<Utc>) -> Vec<u8> {
        let memory: StoredMemory = serde_json::from_slice(body).expect("a memory");
        serde_json::to_vec(&counted(&layout(), memory, Some((count, last)))).expect("json")
    }

    #[test]
    fn the_cut_body_says_what_parsing_it_again_says() {
        let last: DateTime<Utc> = "2026-12-04T10:11:12.345Z".parse().expect("a time");
        let bodies = [
            r#"{"id":"a","content":"tea \u00e9 \"quoted\"","accessCount":3,"lastAccessed":"2026-01-01T00:00:00.000Z","importance":0.5,"status":"ready"}"#,
            r#"{"lastAccessed":"2027-01-01T00:00:00.000Z","id":"b","accessCount":0}"#,
            r#"{"id":"c","accessCount":7}"#,
            r#"{"id":"d","nested":{"accessCount":1},"accessCount":1.0,"tags":["x"]}"#,
        ];
        let layout = layout();
        for body in bodies {
            let cut = CountedBody::of(body.as_bytes(), layout.access_fields()).expect("cut");
            for count in [1, 2, 1000] {
                assert_eq!(
                    cut.with_reads(&layout, count, last),
                    by_parsing(body.as_bytes(), count, last),
                    "{body}"
                );
            }
        }
    }

    #[test]
    fn a_body_without_counts_or_not_an_object_is_not_cut() {
        let fields = layout().access_fields();
        assert!(CountedBody::of(br#"{"id":"a"}"#, fields).is_none());
        assert!(CountedBody::of(b"[1,2]", fields).is_none());
        assert!(CountedBody::of(b"not json", fields).is_none());
    }
}
