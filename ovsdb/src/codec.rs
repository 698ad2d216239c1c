//! Framing for OVSDB's wire format: JSON-RPC 1.0 values back to back on a byte stream, with no
//! length prefix or delimiter. The splitter finds where each top-level JSON value ends by
//! tracking nesting and strings, so a value is parsed only once it is complete, and a value
//! larger than the limit is refused before it is buffered whole.

use crate::error::Error;

/// Default upper bound of one message (ovsdb-server's own replies to a large `monitor` can be
/// tens of MiB for a big database).
pub const DEFAULT_MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Buffer capacity kept between messages; more is released once a large message is done.
const RETAINED_CAPACITY: usize = 256 * 1024;

/// Incremental splitter of concatenated JSON values.
#[derive(Debug)]
pub struct JsonSplitter {
    buf: Vec<u8>,
    /// How far `buf` has been scanned.
    scanned: usize,
    /// Where the value being scanned starts, once its first byte was seen.
    start: Option<usize>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    max_message: usize,
}

impl JsonSplitter {
    pub fn new(max_message: usize) -> JsonSplitter {
        JsonSplitter {
            buf: Vec::new(),
            scanned: 0,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            max_message,
        }
    }

    /// Appends bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, if the buffer holds one. An error (a value that is not an
    /// object or array, or one over the size limit) poisons the stream: the caller drops the
    /// connection.
    pub fn next_message(&mut self) -> Result<Option<serde_json::Value>, Error> {
        while self.scanned < self.buf.len() {
            if let Some(start) = self.start
                && self.scanned - start >= self.max_message
            {
                return Err(Error::MessageTooLarge {
                    limit: self.max_message,
                });
            }
            let byte = self.buf[self.scanned];
            let at = self.scanned;
            self.scanned += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' if self.start.is_none() => {}
                b'{' | b'[' => {
                    if self.start.is_none() {
                        self.start = Some(at);
                    }
                    self.depth += 1;
                }
                b'}' | b']' if self.start.is_some() => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return self.complete(at + 1).map(Some);
                    }
                }
                b'"' if self.start.is_some() => self.in_string = true,
                _ if self.start.is_some() => {}
                other => {
                    return Err(Error::Protocol(format!(
                        "expected a JSON object between messages, found byte 0x{other:02x}"
                    )));
                }
            }
        }
        // Skip leading whitespace so an idle peer's newlines do not accumulate.
        if self.start.is_none() {
            self.buf.clear();
            self.scanned = 0;
        }
        Ok(None)
    }

    fn complete(&mut self, end: usize) -> Result<serde_json::Value, Error> {
        let start = self.start.take().unwrap_or(0);
        let parsed = serde_json::from_slice(&self.buf[start..end]);
        self.buf.drain(..end);
        self.scanned = 0;
        // A large message (the initial monitor reply is the size of the database) must not
        // pin its buffer for the life of the connection.
        if self.buf.capacity() > RETAINED_CAPACITY && self.buf.len() < RETAINED_CAPACITY / 2 {
            self.buf.shrink_to(RETAINED_CAPACITY / 2);
        }
        parsed.map_err(|e| Error::Protocol(format!("malformed JSON message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(splitter: &mut JsonSplitter) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(v) = splitter.next_message().unwrap() {
            out.push(v);
        }
        out
    }

    #[test]
    fn splits_concatenated_values_fed_byte_by_byte() {
        let input = br#"{"id":1,"s":"a}\"{"} {"id":[2,{"x":"]"}]}
{"id":3}"#;
        let mut s = JsonSplitter::new(1024);
        let mut got = Vec::new();
        for b in input {
            s.feed(&[*b]);
            got.extend(all(&mut s));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0]["s"], "a}\"{");
        assert_eq!(got[1]["id"][1]["x"], "]");
        assert_eq!(got[2]["id"], 3);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn a_large_message_does_not_pin_its_buffer() {
        let mut s = JsonSplitter::new(16 << 20);
        let big = format!("{{\"x\":\"{}\"}}", "y".repeat(4 << 20));
        s.feed(big.as_bytes());
        assert!(s.next_message().unwrap().is_some());
        assert!(
            s.buf.capacity() <= RETAINED_CAPACITY,
            "{}",
            s.buf.capacity()
        );
    }

    #[test]
    fn truncated_value_waits_for_more() {
        let mut s = JsonSplitter::new(1024);
        s.feed(br#"{"id": 1, "result": ["#);
        assert!(s.next_message().unwrap().is_none());
        s.feed(b"]}");
        assert!(s.next_message().unwrap().is_some());
    }

    #[test]
    fn oversized_value_is_refused_before_it_is_complete() {
        let mut s = JsonSplitter::new(64);
        s.feed(b"{\"a\":\"");
        s.feed(&[b'x'; 100]);
        assert!(matches!(
            s.next_message(),
            Err(Error::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_between_messages_is_an_error() {
        let mut s = JsonSplitter::new(64);
        s.feed(b"hello");
        assert!(matches!(s.next_message(), Err(Error::Protocol(_))));
    }

    #[test]
    fn malformed_inside_braces_is_an_error_not_a_panic() {
        let mut s = JsonSplitter::new(64);
        s.feed(b"{\"a\": tru }");
        assert!(matches!(s.next_message(), Err(Error::Protocol(_))));
    }
}
