//! An incremental parser for server-sent events (the `text/event-stream` format both the
//! Anthropic and the OpenAI-compatible APIs stream in). Bytes go in as they arrive, in
//! chunks of any size; complete events come out.
//!
//! Follows the WHATWG rules that matter here: lines end in `\n`, `\r\n` or `\r`; a blank
//! line dispatches the event; `data:` lines accumulate joined by `\n`; a single space after
//! the colon is dropped; lines starting with `:` are comments (keep-alives); unknown fields
//! are ignored. A line that is not valid UTF-8 is reported, not guessed at.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (empty when the stream gave none, meaning `message`).
    pub event: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// A stream that does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event stream: {0}")]
pub struct SseError(pub String);

/// Largest line accepted; a longer one means the peer is not speaking SSE.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// The parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: String,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(&mut out)?,
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut out)?;
                }
                _ => {
                    if self.line.len() >= MAX_LINE_BYTES {
                        return Err(SseError(format!("a line exceeds {MAX_LINE_BYTES} bytes")));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    /// The stream ended: a pending event without its blank line is dropped, as the
    /// format requires; returns whether anything was left unfinished.
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty() || self.data.is_some();
        *self = SseParser::default();
        pending
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let raw = std::mem::take(&mut self.line);
        if raw.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: std::mem::take(&mut self.event),
                    data,
                    id: self.id.clone(),
                });
            } else {
                self.event.clear();
            }
            return Ok(());
        }
        let line =
            String::from_utf8(raw).map_err(|_| SseError("a line is not valid UTF-8".into()))?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.push(c).unwrap()).collect()
    }

    #[test]
    fn events_split_across_chunks_at_any_byte() {
        let stream =
            b"event: message_start\ndata: {\"a\":1}\n\n: ping\nevent: delta\ndata: x\ndata: y\n\n";
        let whole = all(&[stream]);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].event, "message_start");
        assert_eq!(whole[1].data, "x\ny");
        for cut in 1..stream.len() {
            assert_eq!(
                all(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let events = all(&[b"data: one\r", b"\n\r\ndata: two\r\r"]);
        assert_eq!(
            events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            vec!["one", "two"]
        );
    }

    #[test]
    fn unfinished_event_is_reported_at_the_end() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: partial").unwrap().is_empty());
        assert!(p.finish());
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: \xff\xfe\n").is_err());
    }
}
