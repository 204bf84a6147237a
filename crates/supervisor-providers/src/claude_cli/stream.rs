//! Reading the CLI's `--output-format stream-json` output. Each stdout line is one JSON
//! object; this module turns them into [`ProviderEvent`]s as they arrive (so people can
//! follow the agent while it works) and, at the end, into the attempt's outcome.
//!
//! The parser is deliberately lenient about what it does not know (new line types, new
//! fields) and strict about what it cannot read: a line that is not JSON means the stream is
//! not what we think it is, and inventing an answer from it would be worse than failing.

use std::sync::Arc;

use serde_json::Value;
use supervisor_model::Usage;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::pricing::PriceTable;
use crate::secret::ApiKey;
use crate::{EventSink, ProviderError, ProviderEvent};

/// Longest stdout line accepted (tool results can carry whole files).
pub(super) const MAX_LINE: usize = 32 * 1024 * 1024;
/// Longest text shown in an activity line.
const ACTIVITY_CHARS: usize = 200;
/// Longest excerpt of a bad line, a result text or stderr put in an error message.
const EXCERPT_CHARS: usize = 2000;

/// Reads lines of at most `max` bytes from a buffered reader.
///
/// Cancel safe: a partial line stays buffered when the future is dropped, so it can be used
/// as a `tokio::select!` branch.
pub(super) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// A reader of `inner` refusing lines longer than `max` bytes.
    pub(super) fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            max,
        }
    }

    /// The next line without its line ending; `None` at the end of the stream.
    pub(super) async fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_line()));
            }
            if let Some(i) = available.iter().position(|b| *b == b'\n') {
                self.buf.extend_from_slice(&available[..i]);
                self.inner.consume(i + 1);
                return Ok(Some(self.take_line()));
            }
            let n = available.len();
            self.buf.extend_from_slice(available);
            self.inner.consume(n);
            if self.buf.len() > self.max {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a stdout line is longer than {} bytes", self.max),
                ));
            }
        }
    }

    fn take_line(&mut self) -> Vec<u8> {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        line
    }
}

/// The last `cap` bytes written to a stream (the CLI's stderr).
#[derive(Debug)]
pub(super) struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

impl Tail {
    /// An empty tail keeping at most `cap` bytes.
    pub(super) fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            cap,
        }
    }

    /// Appends `bytes`, dropping the oldest beyond the cap.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
    }

    /// The end of what was written, for an error message ("" when nothing was).
    pub(super) fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        last_chars(text.trim(), EXCERPT_CHARS)
    }
}

/// The final `result` line.
#[derive(Debug, Clone, PartialEq)]
struct ResultLine {
    subtype: String,
    is_error: bool,
    result: Option<String>,
    num_turns: Option<u64>,
    total_cost_usd: Option<f64>,
    usage: Usage,
}

/// What a finished stream says about the run.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outcome {
    /// The answer.
    pub output: String,
    /// Tokens used.
    pub usage: Usage,
    /// Cost in millionths of a dollar.
    pub cost_micros: u64,
    /// The model that answered.
    pub model: String,
}

/// How the process ended, as far as the outcome is concerned.
#[derive(Debug, Clone)]
pub(super) struct Exit {
    /// Whether it exited with status 0.
    pub success: bool,
    /// How to describe it ("exit status: 3", "signal: 9 (SIGKILL)").
    pub description: String,
}

/// Follows one run's stream.
#[derive(Debug)]
pub(super) struct StreamParser {
    prices: Arc<PriceTable>,
    /// `--model` as configured, until the init line names the model.
    configured_model: Option<String>,
    model: Option<String>,
    text: String,
    /// Usage of each assistant message so far, by message id. The CLI prints a message
    /// once per content block, repeating its usage (later lines win), so usage is summed
    /// over messages, not lines.
    messages: Vec<(String, Usage)>,
    /// The usage last sent as a [`ProviderEvent::Usage`].
    reported: Option<(Usage, u64)>,
    result: Option<ResultLine>,
    /// The key the CLI was given, kept out of every event (a tool may print it).
    key: Option<ApiKey>,
    /// The CLI's session id, from its init line.
    session: Option<String>,
}

impl StreamParser {
    /// A parser that has seen nothing; `prices` prices usage the CLI reports without a
    /// cost, for `configured_model` until the stream names its model; `key` is redacted
    /// from every event.
    pub(super) fn new(
        prices: Arc<PriceTable>,
        configured_model: Option<&str>,
        key: Option<ApiKey>,
    ) -> Self {
        StreamParser {
            prices,
            configured_model: configured_model
                .filter(|m| !m.is_empty())
                .map(str::to_string),
            model: None,
            text: String::new(),
            messages: Vec::new(),
            reported: None,
            result: None,
            key,
            session: None,
        }
    }

    /// The CLI's session id, once its init line named it.
    pub(super) fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// `text` without the key.
    fn redact(&self, text: String) -> String {
        match &self.key {
            Some(key) if text.contains(key.expose()) => key.redact(&text),
            _ => text,
        }
    }

    fn user(&self, value: &Value, sink: &EventSink) {
        for line in tool_results(value) {
            self.activity(sink, line);
        }
    }

    fn output(&self, sink: &EventSink, text: &str) {
        sink.send(ProviderEvent::Output(self.redact(text.to_string())));
    }

    fn activity(&self, sink: &EventSink, line: String) {
        sink.send(ProviderEvent::Activity(self.redact(line)));
    }

    /// The model answering, as far as the stream said ("unknown" if nothing said it).
    fn model(&self) -> String {
        self.model
            .clone()
            .or_else(|| self.configured_model.clone())
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// What `usage` costs: `total_cost_usd` when the CLI reported it, else the price table.
    fn cost(&self, usage: &Usage, total_cost_usd: Option<f64>) -> Option<u64> {
        match total_cost_usd {
            Some(usd) => Some((usd * 1_000_000.0).round() as u64),
            None => self.prices.cost_micros(&self.model(), usage),
        }
    }

    /// Sends the usage so far if it changed.
    fn report(&mut self, usage: Usage, cost_micros: u64, sink: &EventSink) {
        if self.reported == Some((usage, cost_micros)) {
            return;
        }
        self.reported = Some((usage, cost_micros));
        sink.send(ProviderEvent::Usage { usage, cost_micros });
    }

    /// Handles one stdout line, sending its events to `sink`.
    pub(super) fn line(&mut self, raw: &[u8], sink: &EventSink) -> Result<(), ProviderError> {
        let text = String::from_utf8_lossy(raw);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(());
        }
        let value: Value = match serde_json::from_str(trimmed) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(ProviderError::Retryable {
                    kind: "bad_stream",
                    message: format!(
                        "claude printed a line that is not a stream-json object: {}",
                        first_chars(trimmed, 200)
                    ),
                    retry_after: None,
                });
            }
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "system" => self.system(&value, sink),
            "assistant" => self.assistant(&value, sink),
            "user" => self.user(&value, sink),
            "result" => {
                // Reported before the outcome is decided, so a result that is an error
                // still leaves what the run consumed on record.
                let result = result_line(&value);
                let cost = self.cost(&result.usage, result.total_cost_usd).unwrap_or(0);
                self.report(result.usage, cost, sink);
                self.result = Some(result);
            }
            other => tracing::debug!(line_type = other, "claude_cli: ignoring a stream line"),
        }
        Ok(())
    }

    fn system(&mut self, value: &Value, sink: &EventSink) {
        let subtype = value.get("subtype").and_then(Value::as_str).unwrap_or("");
        if subtype != "init" {
            tracing::debug!(subtype, "claude_cli: ignoring a system line");
            return;
        }
        let model = value
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty());
        if let Some(m) = model {
            self.model = Some(m.to_string());
        }
        if let Some(id) = value.get("session_id").and_then(Value::as_str) {
            self.session = Some(id.to_string());
        }
        let tools = value
            .get("tools")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        self.activity(
            sink,
            format!(
                "session started: model {}, {tools} tools",
                model.unwrap_or("unknown")
            ),
        );
    }

    fn assistant(&mut self, value: &Value, sink: &EventSink) {
        if let Some(usage) = value.pointer("/message/usage").filter(|u| u.is_object()) {
            let id = value
                .pointer("/message/id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{}", self.messages.len()), str::to_string);
            let usage = read_usage(usage);
            match self.messages.iter_mut().find(|(m, _)| *m == id) {
                Some((_, seen)) => *seen = usage,
                None => self.messages.push((id, usage)),
            }
            let total = self
                .messages
                .iter()
                .fold(Usage::default(), |sum, (_, u)| Usage {
                    input_tokens: sum.input_tokens + u.input_tokens,
                    output_tokens: sum.output_tokens + u.output_tokens,
                    cache_read_tokens: sum.cache_read_tokens + u.cache_read_tokens,
                    cache_write_tokens: sum.cache_write_tokens + u.cache_write_tokens,
                });
            let cost = self.cost(&total, None).unwrap_or(0);
            self.report(total, cost, sink);
        }
        let Some(blocks) = value.pointer("/message/content").and_then(Value::as_array) else {
            return;
        };
        for block in blocks {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(text) = block.get("text").and_then(Value::as_str)
                        && !text.is_empty()
                    {
                        if !self.text.is_empty() {
                            self.text.push_str("\n\n");
                        }
                        self.text.push_str(text);
                        self.output(sink, text);
                    }
                }
                Some("tool_use") => {
                    let name = block.get("name").and_then(Value::as_str).unwrap_or("?");
                    let input = block.get("input").unwrap_or(&Value::Null);
                    self.activity(sink, format!("tool {}", tool_summary(name, input)));
                }
                _ => {}
            }
        }
    }

    /// The outcome once the process has ended: the result line if there was one, otherwise
    /// a failure saying how the process ended.
    pub(super) fn finish(
        mut self,
        exit: &Exit,
        stderr: &str,
        max_turns: u32,
    ) -> Result<Outcome, ProviderError> {
        let with_stderr = |message: String| {
            if stderr.is_empty() {
                message
            } else {
                format!("{message}; stderr: {stderr}")
            }
        };
        let Some(result) = self.result.take() else {
            if !exit.success {
                return Err(ProviderError::Retryable {
                    kind: "cli_failed",
                    message: with_stderr(format!(
                        "claude ended ({}) without a result",
                        exit.description
                    )),
                    retry_after: None,
                });
            }
            return Err(ProviderError::Retryable {
                kind: "bad_stream",
                message: with_stderr(format!(
                    "claude ended ({}) without printing a result line",
                    exit.description
                )),
                retry_after: None,
            });
        };
        let text = result.result.clone().unwrap_or_default();
        let excerpt = last_chars(text.trim(), EXCERPT_CHARS);
        if result.subtype == "error_max_turns" {
            let turns = result
                .num_turns
                .map(|n| format!(" after {n} turns"))
                .unwrap_or_default();
            return Err(ProviderError::Permanent {
                kind: "max_turns",
                message: with_stderr(format!(
                    "hit max turns {max_turns}{turns}: {}",
                    if excerpt.is_empty() {
                        "the task needs more turns than the limit (raise max_turns)"
                    } else {
                        &excerpt
                    }
                )),
            });
        }
        if result.is_error || result.subtype != "success" {
            // The subtype is only worth showing when it says more than the flag: an error
            // result often has subtype `success`.
            let subtype = match result.subtype.as_str() {
                "success" | "" => String::new(),
                other => format!(" ({other})"),
            };
            let text = if excerpt.is_empty() {
                "no result text".to_string()
            } else {
                format!("\"{excerpt}\"")
            };
            let said = format!("the Claude CLI reported an error{subtype}: {text}");
            // Failures a retry cannot fix: the CLI has no valid key, or no credit.
            let lower = excerpt.to_ascii_lowercase();
            if lower.contains("invalid api key")
                || lower.contains("/login")
                || lower.contains("not logged in")
                || lower.contains("authentication")
            {
                return Err(ProviderError::Permanent {
                    kind: "auth",
                    message: with_stderr(format!(
                        "{said} (check the key this provider gives the CLI: api_key_env or api_key_file)"
                    )),
                });
            }
            if lower.contains("credit balance") {
                return Err(ProviderError::Permanent {
                    kind: "budget",
                    message: with_stderr(format!("{said} (check the account's billing)")),
                });
            }
            return Err(ProviderError::Retryable {
                kind: "cli_error",
                message: with_stderr(said),
                retry_after: None,
            });
        }
        let model = self.model();
        let cost_micros = self
            .cost(&result.usage, result.total_cost_usd)
            .unwrap_or_else(|| {
                tracing::warn!(
                    model,
                    "claude_cli: no cost reported and no price known for the model; counting 0"
                );
                0
            });
        let output = match result.result {
            Some(r) => r,
            None => self.text,
        };
        Ok(Outcome {
            output,
            usage: result.usage,
            cost_micros,
            model,
        })
    }
}

/// One activity line per tool result in a `user` line.
fn tool_results(value: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(blocks) = value.pointer("/message/content").and_then(Value::as_array) else {
        return lines;
    };
    for block in blocks {
        if block.get("type").and_then(Value::as_str) != Some("tool_result") {
            continue;
        }
        let is_error = block
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let content = match block.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("text") => p
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    Some(other) => format!("[{other}]"),
                    None => String::new(),
                })
                .collect::<Vec<_>>()
                .join(" "),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let label = if is_error {
            "tool error"
        } else {
            "tool result"
        };
        let summary = one_line(&content, ACTIVITY_CHARS);
        lines.push(if summary.is_empty() {
            format!("{label} (empty)")
        } else {
            format!("{label}: {summary}")
        });
    }
    lines
}

/// Token counts of a `usage` object as the API names them.
fn read_usage(usage: &Value) -> Usage {
    let tokens = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: tokens("input_tokens"),
        output_tokens: tokens("output_tokens"),
        cache_read_tokens: tokens("cache_read_input_tokens"),
        cache_write_tokens: tokens("cache_creation_input_tokens"),
    }
}

fn result_line(value: &Value) -> ResultLine {
    ResultLine {
        subtype: value
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        is_error: value
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        result: value
            .get("result")
            .and_then(Value::as_str)
            .map(str::to_string),
        num_turns: value.get("num_turns").and_then(Value::as_u64),
        total_cost_usd: value
            .get("total_cost_usd")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite() && *c >= 0.0),
        usage: value.get("usage").map(read_usage).unwrap_or_default(),
    }
}

/// `Name: what it works on`, e.g. `Bash: cargo test` or `Edit: src/lib.rs`.
fn tool_summary(name: &str, input: &Value) -> String {
    const KEYS: &[&str] = &[
        "command",
        "file_path",
        "notebook_path",
        "path",
        "pattern",
        "url",
        "query",
        "description",
        "prompt",
    ];
    for key in KEYS {
        if let Some(s) = input.get(*key).and_then(Value::as_str) {
            return format!("{name}: {}", one_line(s, ACTIVITY_CHARS));
        }
    }
    match input {
        Value::Null => name.to_string(),
        Value::Object(map) if map.is_empty() => name.to_string(),
        other => format!("{name}: {}", one_line(&other.to_string(), ACTIVITY_CHARS)),
    }
}

/// `text` on one line (whitespace runs become one space), at most `max` characters.
pub(super) fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    first_chars(&joined, max)
}

/// At most the first `max` characters of `text`, with `…` when cut.
pub(super) fn first_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// At most the last `max` characters of `text`, with `…` when cut.
pub(super) fn last_chars(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    match text.char_indices().nth(count - max) {
        Some((i, _)) => format!("…{}", &text[i..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[&str]) -> (StreamParser, Vec<ProviderEvent>) {
        let (sink, mut rx) = EventSink::channel();
        let mut p = StreamParser::new(Arc::new(PriceTable::default()), None, None);
        for l in lines {
            assert!(p.line(l.as_bytes(), &sink).is_ok(), "line {l}");
        }
        drop(sink);
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        (p, out)
    }

    fn ok_exit() -> Exit {
        Exit {
            success: true,
            description: "exit status: 0".into(),
        }
    }

    #[test]
    fn cost_falls_back_to_the_price_table_and_output_to_the_text() {
        let (p, _) = events(&[
            r#"{"type":"system","subtype":"init","model":"claude-sonnet-4-5-20250929","tools":[]}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"one"}]}}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"two"}]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"usage":{"input_tokens":1000000,"output_tokens":100000}}"#,
        ]);
        let out = p.finish(&ok_exit(), "", 30).map_err(|e| e.to_string());
        let out = match out {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(out.output, "one\n\ntwo");
        assert_eq!(out.cost_micros, 4_500_000);
        assert_eq!(out.model, "claude-sonnet-4-5-20250929");
    }

    #[test]
    fn tool_summaries_are_short_and_on_one_line() {
        let input = serde_json::json!({"command": "cargo test\n  --all", "timeout": 5});
        assert_eq!(tool_summary("Bash", &input), "Bash: cargo test --all");
        let long = "x".repeat(500);
        let s = tool_summary("Read", &serde_json::json!({ "file_path": long }));
        assert_eq!(s.chars().count(), "Read: ".len() + ACTIVITY_CHARS + 1);
        assert_eq!(
            tool_summary("TodoWrite", &serde_json::json!({"todos": []})),
            r#"TodoWrite: {"todos":[]}"#
        );
    }

    #[test]
    fn unknown_lines_are_ignored_and_non_objects_refused() {
        let (sink, _rx) = EventSink::channel();
        let mut p = StreamParser::new(Arc::new(PriceTable::default()), None, None);
        assert!(
            p.line(br#"{"type":"stream_event","event":{}}"#, &sink)
                .is_ok()
        );
        assert!(p.line(b"", &sink).is_ok());
        assert!(p.line(b"42", &sink).is_err());
        assert!(p.line(b"Error: something", &sink).is_err());
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        assert_eq!(first_chars("héllo", 2), "hé…");
        assert_eq!(last_chars("héllo", 3), "…llo");
        assert_eq!(last_chars("ab", 3), "ab");
        let mut t = Tail::new(4);
        t.push(b"abcdef");
        assert_eq!(t.excerpt(), "cdef");
    }
}
