//! Server-sent events: writing one, and reading a stream of them back into `(event, data)`.

use bytes::Bytes;

/// One event as it goes on the wire.
pub fn event(name: &str, data: &str) -> Bytes {
    let mut text = String::with_capacity(data.len() + name.len() + 16);
    text.push_str("event: ");
    text.push_str(name);
    text.push('\n');
    for line in data.split('\n') {
        text.push_str("data: ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    Bytes::from(text)
}

/// A parsed event: its name (`message` when unnamed) and its data lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Reads events out of a byte stream's chunks, however the chunks split them (a UTF-8
/// sequence, or a `\r\n` line end, across two chunks included).
#[derive(Debug, Default)]
pub struct EventReader {
    buffer: String,
    pending_bytes: Vec<u8>,
    /// The last character read was a `\r`: a `\n` right after it ends no second line.
    after_cr: bool,
}

impl EventReader {
    /// Adds a chunk; the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending_bytes.extend_from_slice(chunk);
        // Keep an incomplete UTF-8 sequence for the next chunk.
        let valid = match std::str::from_utf8(&self.pending_bytes) {
            Ok(text) => text.len(),
            Err(error) => error.valid_up_to(),
        };
        let text = String::from_utf8_lossy(&self.pending_bytes[..valid]).into_owned();
        self.pending_bytes.drain(..valid);
        self.push_lines(&text);
        let mut events = Vec::new();
        while let Some(at) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..at + 2).collect();
            if let Some(event) = parse_block(&block) {
                events.push(event);
            }
        }
        events
    }
}

impl EventReader {
    /// Appends text with every line end (`\r\n`, `\r` or `\n`) as one `\n`.
    fn push_lines(&mut self, text: &str) {
        for c in text.chars() {
            match c {
                '\r' => {
                    self.buffer.push('\n');
                    self.after_cr = true;
                }
                '\n' => {
                    if !self.after_cr {
                        self.buffer.push('\n');
                    }
                    self.after_cr = false;
                }
                c => {
                    self.buffer.push(c);
                    self.after_cr = false;
                }
            }
        }
    }
}

fn parse_block(block: &str) -> Option<Event> {
    let mut name = None;
    let mut data: Option<String> = None;
    for line in block.lines() {
        if line.starts_with(':') {
            continue; // a comment (keep-alive)
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_string()),
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    Some(Event {
        name: name.unwrap_or_else(|| "message".into()),
        data: data?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_chunking() {
        let wire = [
            event("endpoint", "/messages?sessionId=1"),
            Bytes::from_static(b": keep-alive\n\n"),
            event("message", "{\"a\":\"é\"}"),
        ]
        .concat();
        let text = String::from_utf8_lossy(&wire).into_owned();
        let crlf = text.replace('\n', "\r\n").into_bytes();
        let cr = text.replace('\n', "\r").into_bytes();
        for wire in [wire, crlf, cr] {
            every_split_reads(&wire);
        }
    }

    /// Two chunks split at every byte, and one byte a chunk, read the same two events.
    fn every_split_reads(wire: &[u8]) {
        let expected = vec![
            Event {
                name: "endpoint".into(),
                data: "/messages?sessionId=1".into(),
            },
            Event {
                name: "message".into(),
                data: "{\"a\":\"é\"}".into(),
            },
        ];
        let mut reader = EventReader::default();
        let bytewise: Vec<Event> = wire.iter().flat_map(|b| reader.push(&[*b])).collect();
        assert_eq!(bytewise, expected, "byte by byte");
        for split in 0..wire.len() {
            let mut reader = EventReader::default();
            let mut events = reader.push(&wire[..split]);
            events.extend(reader.push(&wire[split..]));
            assert_eq!(events, expected, "split at {split}");
        }
    }
}
