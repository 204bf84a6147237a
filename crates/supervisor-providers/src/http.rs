//! What the HTTP providers share: one way to turn an HTTP failure into a typed
//! [`ProviderError`] (so routing treats a 429 the same whichever API sent it), the
//! `retry-after` header, the client settings, and one way to read a streamed answer
//! (so a dropped connection or a garbled stream is reported alike by every provider).

use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::secret::ApiKey;
use crate::sse::{SseEvent, SseParser};
use crate::{Health, ProviderError};

/// Reads a `retry-after` header: either delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The typed error for an HTTP status, with the response body (trimmed) as detail.
/// `retry_after` is the parsed `retry-after` header, if any.
pub fn error_for_status(
    provider: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> ProviderError {
    let detail = summarize_body(body);
    let message = format!("{provider} answered HTTP {status}: {detail}");
    match status {
        429 => ProviderError::Retryable {
            kind: "rate_limited",
            message,
            retry_after,
        },
        529 | 503 => ProviderError::Retryable {
            kind: "overloaded",
            message,
            retry_after,
        },
        408 | 500 | 502 | 504 => ProviderError::Retryable {
            kind: "unavailable",
            message,
            retry_after,
        },
        401 | 403 => ProviderError::Permanent {
            kind: "auth",
            message: format!("{message} (check the provider's API key)"),
        },
        413 => ProviderError::Permanent {
            kind: "context_too_long",
            message,
        },
        400 | 404 | 422 if looks_like_context_overflow(body) => ProviderError::Permanent {
            kind: "context_too_long",
            message,
        },
        402 => ProviderError::Permanent {
            kind: "budget",
            message,
        },
        s if s >= 500 => ProviderError::Retryable {
            kind: "unavailable",
            message,
            retry_after,
        },
        _ => ProviderError::Permanent {
            kind: "bad_request",
            message,
        },
    }
}

/// Whether an error text says the prompt did not fit the model's context window.
pub fn looks_like_context_overflow(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("context length")
        || b.contains("context_length")
        || b.contains("prompt is too long")
        || b.contains("maximum context")
        || b.contains("too many tokens")
}

/// At most 500 characters of a response body, on one line.
pub fn summarize_body(body: &str) -> String {
    excerpt(body, 500)
}

/// At most `max_chars` characters of `text`, on one line (`…` marks a cut).
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > max_chars {
        let cut: String = one_line.chars().take(max_chars).collect();
        format!("{cut}…")
    } else if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

/// An error and its causes on one line (`reqwest` keeps the interesting part, such as
/// "connection refused", in the causes).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A transport failure (connect, reset, timeout) as a retryable error.
pub fn transport_error(provider: &str, err: &reqwest::Error) -> ProviderError {
    let kind = if err.is_timeout() {
        "timeout"
    } else {
        "unavailable"
    };
    ProviderError::Retryable {
        kind,
        message: format!("{provider}: {}", error_chain(err)),
        retry_after: None,
    }
}

/// The error for an attempt that ran out of its time limit.
pub fn timeout_error(provider: &str, limit: Duration) -> ProviderError {
    ProviderError::Retryable {
        kind: "timeout",
        message: format!(
            "{provider}: no complete answer within the attempt's time limit of {limit:?}"
        ),
        retry_after: None,
    }
}

/// The error for a stream that stopped before the API said it was complete: the
/// connection dropped, so the output so far is not a result.
pub fn connection_reset(provider: &str, detail: &str) -> ProviderError {
    ProviderError::Retryable {
        kind: "connection_reset",
        message: format!("{provider}: the stream ended before the answer was complete ({detail})"),
        retry_after: None,
    }
}

/// The error for a stream that is not what the API sends: `what` says what was wrong,
/// `received` is what arrived (shown truncated).
pub fn bad_stream(provider: &str, what: &str, received: &str) -> ProviderError {
    ProviderError::Retryable {
        kind: "bad_stream",
        message: format!("{provider}: {what}; received: {}", excerpt(received, 200)),
        retry_after: None,
    }
}

/// `err` with every occurrence of the key's value replaced, so an API that echoes the key
/// (or a URL holding it) cannot leak it into logs and task records.
pub fn redact_error(err: ProviderError, key: Option<&ApiKey>) -> ProviderError {
    let Some(key) = key else { return err };
    match err {
        ProviderError::Retryable {
            kind,
            message,
            retry_after,
        } => ProviderError::Retryable {
            kind,
            message: key.redact(&message),
            retry_after,
        },
        ProviderError::Permanent { kind, message } => ProviderError::Permanent {
            kind,
            message: key.redact(&message),
        },
    }
}

/// Sends a request; a non-2xx answer becomes the typed error for its status, with the
/// body as detail and the `retry-after` header parsed.
pub async fn send(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    // A body that cannot be read still leaves the status to go by.
    let body = response.text().await.unwrap_or_default();
    Err(error_for_status(
        provider,
        status.as_u16(),
        retry_after,
        &body,
    ))
}

/// What a stream handler wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The API said the answer is complete: stop reading.
    Done,
}

/// Reads a `text/event-stream` answer, handing each event to `on_event` until it returns
/// [`Flow::Done`] or an error. A stream that ends (or breaks) before that is a retryable
/// `connection_reset`; a body that is not an event stream is a retryable `bad_stream`.
pub async fn read_events(
    provider: &str,
    response: reqwest::Response,
    mut on_event: impl FnMut(SseEvent) -> Result<Flow, ProviderError>,
) -> Result<(), ProviderError> {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.is_empty() && !content_type.starts_with("text/event-stream") {
        let body = response.text().await.unwrap_or_default();
        return Err(bad_stream(
            provider,
            &format!("expected an event stream, got content-type {content_type}"),
            &body,
        ));
    }
    let mut parser = SseParser::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) if e.is_timeout() => return Err(transport_error(provider, &e)),
            Err(e) => return Err(connection_reset(provider, &error_chain(&e))),
        };
        let events = parser
            .push(&bytes)
            .map_err(|e| bad_stream(provider, &e.to_string(), &String::from_utf8_lossy(&bytes)))?;
        for event in events {
            if on_event(event)? == Flow::Done {
                return Ok(());
            }
        }
    }
    let detail = if parser.finish() {
        "the connection closed in the middle of an event"
    } else {
        "the connection closed without the end-of-answer event"
    };
    Err(connection_reset(provider, detail))
}

/// A header value carrying the key (`prefix` is e.g. `"Bearer "`), marked sensitive so
/// the HTTP stack never shows it. The error does not contain the key.
pub fn key_header(
    provider: &str,
    key: &ApiKey,
    prefix: &str,
) -> Result<reqwest::header::HeaderValue, String> {
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("{prefix}{}", key.expose())).map_err(
            |_| format!("provider {provider}: the API key ({key}) contains characters not allowed in an HTTP header"),
        )?;
    value.set_sensitive(true);
    Ok(value)
}

/// How long a health probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// A health probe: sends `request` (a cheap authenticated GET, `what` names it in the
/// detail) and reads the answer. 2xx is healthy; 401/403 means the key was rejected; any
/// other status or a transport failure is unhealthy with what was seen. The key never
/// appears in the detail.
pub async fn probe(request: reqwest::RequestBuilder, what: &str, key: Option<&ApiKey>) -> Health {
    let started = std::time::Instant::now();
    let (healthy, detail) = match request.timeout(PROBE_TIMEOUT).send().await {
        Err(e) => (false, format!("{what} failed: {}", error_chain(&e))),
        Ok(response) => {
            let status = response.status();
            let elapsed = started.elapsed();
            if status.is_success() {
                (
                    true,
                    format!(
                        "{what} answered {} in {} ms",
                        status.as_u16(),
                        elapsed.as_millis()
                    ),
                )
            } else {
                let body = response.text().await.unwrap_or_default();
                let seen = format!("HTTP {}: {}", status.as_u16(), excerpt(&body, 200));
                if status.as_u16() == 401 || status.as_u16() == 403 {
                    (false, format!("API key rejected ({what} answered {seen})"))
                } else {
                    (false, format!("{what} answered {seen}"))
                }
            }
        }
    };
    let detail = match key {
        Some(key) => key.redact(&detail),
        None => detail,
    };
    Health { healthy, detail }
}

/// The base URL without trailing slashes, so paths can be appended with one.
pub fn trim_base(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

/// The HTTP client the providers use: no global timeout (each request gets the attempt's
/// own), a connect timeout, TLS from rustls with the webpki roots.
pub fn client(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .user_agent(concat!("supervisor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("could not build the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn statuses_map_to_routing_classes() {
        let e = error_for_status("p", 429, Some(Duration::from_secs(3)), "slow down");
        assert!(
            matches!(e, ProviderError::Retryable { kind: "rate_limited", retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        assert!(matches!(
            error_for_status("p", 529, None, ""),
            ProviderError::Retryable {
                kind: "overloaded",
                ..
            }
        ));
        assert!(matches!(
            error_for_status("p", 401, None, ""),
            ProviderError::Permanent { kind: "auth", .. }
        ));
        assert!(matches!(
            error_for_status(
                "p",
                400,
                None,
                "prompt is too long: 300000 tokens > 200000 maximum"
            ),
            ProviderError::Permanent {
                kind: "context_too_long",
                ..
            }
        ));
        assert!(matches!(
            error_for_status("p", 400, None, "bad json"),
            ProviderError::Permanent {
                kind: "bad_request",
                ..
            }
        ));
        assert!(matches!(
            error_for_status("p", 502, None, ""),
            ProviderError::Retryable {
                kind: "unavailable",
                ..
            }
        ));
    }

    #[test]
    fn excerpts_are_one_line_and_cut() {
        assert_eq!(excerpt("a\n  b", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("  ", 3), "(empty body)");
    }

    #[test]
    fn redaction_keeps_the_error_class() {
        let key = ApiKey::from_value("sk-123", "test");
        let err = redact_error(
            ProviderError::Permanent {
                kind: "auth",
                message: "bad key sk-123".into(),
            },
            Some(&key),
        );
        assert_eq!(
            err,
            ProviderError::Permanent {
                kind: "auth",
                message: "bad key [redacted]".into()
            }
        );
    }
}
