//! The client's error type.

use std::error::Error as StdError;

use tonic::Code;

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server address could not be understood.
    #[error("invalid server address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials or TLS settings cannot be used (an unreadable file, a token
    /// metadata cannot carry).
    #[error("{reason}")]
    Credentials {
        /// What is wrong.
        reason: String,
    },
    /// Nothing answered at the server address.
    #[error("could not connect to Supervisor at {addr}: {detail} — is `supervisor up` running?")]
    Connect {
        /// The URI dialed (`http://host:port`).
        addr: String,
        /// The transport error and its causes.
        detail: String,
    },
    /// The server (or the transport) answered with a gRPC error status.
    #[error("{}", format_status(*code, message))]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The status message (may be empty).
        message: String,
    },
    /// The server answered something the contract does not allow.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The gRPC code: the status's, `UNAVAILABLE` for connection failures,
    /// `INVALID_ARGUMENT` for a bad address and `INTERNAL` for protocol violations.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidAddress { .. } | Self::Credentials { .. } => Code::InvalidArgument,
            Self::Connect { .. } => Code::Unavailable,
            Self::Status { code, .. } => *code,
            Self::Protocol(_) => Code::Internal,
        }
    }

    /// The status message, or this error's text when it is not a status.
    pub fn message(&self) -> String {
        match self {
            Self::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// Whether the server could not be reached (connection refused or lost, server
    /// shutting down): retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        self.code() == Code::Unavailable
    }

    /// Whether the server does not know the task (or other entity) asked for.
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// `NOT_FOUND: no task with id x`, or just the code when the message is empty.
fn format_status(code: Code, message: &str) -> String {
    if message.is_empty() {
        code_name(code).to_owned()
    } else {
        format!("{}: {message}", code_name(code))
    }
}

/// The canonical name of a gRPC code, as in the gRPC specification (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error and its causes, joined by `: `, without repeating a cause that the
/// previous text already contains.
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_display_code_and_message() {
        let err = ClientError::from(tonic::Status::not_found("no task with id t1"));
        assert_eq!(err.to_string(), "NOT_FOUND: no task with id t1");
        assert!(err.is_not_found());
        assert_eq!(err.message(), "no task with id t1");
        let bare = ClientError::from(tonic::Status::new(Code::Unavailable, ""));
        assert_eq!(bare.to_string(), "UNAVAILABLE");
        assert!(bare.is_unavailable());
    }

    #[test]
    fn every_code_has_a_screaming_name() {
        for n in 0..=16 {
            let code = Code::from(n);
            let debug = format!("{code:?}");
            // `NotFound` -> `NOT_FOUND`
            let mut expected = String::new();
            for (i, c) in debug.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    expected.push('_');
                }
                expected.push(c.to_ascii_uppercase());
            }
            assert_eq!(code_name(code), expected);
        }
    }

    #[test]
    fn chain_skips_repeated_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("top")]
        struct Top(#[source] Outer);
        assert_eq!(chain(&Top(Outer(Inner))), "top: outer: inner");
    }
}
