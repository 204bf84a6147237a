//! What the HTTP providers share: one way to turn an HTTP failure into a typed
//! [`ProviderError`] (so routing treats a 429 the same whichever API sent it), the
//! `retry-after` header, and the client settings.

use std::time::{Duration, SystemTime};

use crate::ProviderError;

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

fn looks_like_context_overflow(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("context length")
        || b.contains("context_length")
        || b.contains("prompt is too long")
        || b.contains("maximum context")
        || b.contains("too many tokens")
}

/// At most 500 characters of a response body, on one line.
pub fn summarize_body(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 500 {
        let cut: String = one_line.chars().take(500).collect();
        format!("{cut}…")
    } else if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
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
        message: format!("{provider}: {err}"),
        retry_after: None,
    }
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
}
