//! What crosses the network between nodes when one asks another's provider to run an
//! attempt: the request, the outcome and a provider's description, encoded with
//! MessagePack (field names included, so a node may add fields without breaking older
//! peers that ignore them).
//!
//! Decoding never panics: a peer that sends something this node cannot read gets a typed
//! error back, and the attempt fails retryably rather than taking the actor down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use supervisor_model::{Specialty, TaskType, ToolPolicy, Usage};
use supervisor_providers::{
    Artifact, Capabilities, ProviderError, ProviderOutput, ProviderRequest,
};

/// Version of this encoding; a peer answering another version is refused with a clear
/// error instead of being misread.
pub const WIRE_VERSION: u32 = 1;

/// A [`ProviderRequest`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRequest {
    version: u32,
    task_id: String,
    attempt: u32,
    task_type: TaskType,
    prompt: String,
    context: BTreeMap<String, String>,
    timeout_ms: u64,
    specialty: Specialty,
    system_prompt: String,
    tools: ToolPolicy,
    /// The caller's provider span (`traceparent`), so the serving node's span joins
    /// the task's trace. Absent from nodes that trace nothing.
    #[serde(default)]
    trace: Option<String>,
    /// The conversation turn, absent from older peers.
    #[serde(default)]
    thread: Option<WireThread>,
}

/// A [`supervisor_providers::ThreadTurn`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireThread {
    id: String,
    seq: u64,
    message: String,
    #[serde(default)]
    previous: Option<String>,
}

/// A provider's answer on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireOutcome {
    version: u32,
    result: Result<WireOutput, WireError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireOutput {
    output: String,
    usage: Usage,
    cost_micros: u64,
    model: String,
    artifacts: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireError {
    retryable: bool,
    kind: String,
    message: String,
    retry_after_ms: Option<u64>,
    /// What the provider reported spending before it failed (absent from older peers).
    #[serde(default)]
    spent: Option<Spent>,
}

/// Tokens and cost a provider reported for an execution so far. A failed execution
/// still used them: they are charged like a success's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Tokens.
    pub usage: Usage,
    /// Cost in millionths of a dollar.
    pub cost_micros: u64,
}

/// What a provider on another node says about itself, asked once per remote provider
/// actor so routing can filter remote providers without a round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireDescription {
    version: u32,
    /// The provider's configured name.
    pub name: String,
    /// Its implementation (`mock`, `claude_cli`...).
    pub kind: String,
    /// Task types it serves.
    pub task_types: Vec<TaskType>,
    /// Models.
    pub models: Vec<String>,
    /// Largest context.
    pub max_context_tokens: u64,
    /// Streams output.
    pub streaming: bool,
    /// Uses tools.
    pub tools: bool,
    /// Works in a task's repository (absent from older peers: no).
    #[serde(default)]
    pub repository: bool,
    /// Concurrency limit on its node.
    pub max_concurrency: u32,
}

/// Something a peer sent could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("could not decode a {what} from a peer node: {why}")]
pub struct WireDecodeError {
    what: &'static str,
    why: String,
}

fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, WireDecodeError> {
    let value: T = rmp_serde::from_slice(bytes).map_err(|e| WireDecodeError {
        what,
        why: e.to_string(),
    })?;
    let v = version(&value);
    if v != WIRE_VERSION {
        return Err(WireDecodeError {
            what,
            why: format!(
                "it speaks wire version {v}, this node {WIRE_VERSION}; run the same release on every node"
            ),
        });
    }
    Ok(value)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs of strings, numbers and maps into a Vec cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Encodes a request.
pub fn encode_request(r: &ProviderRequest) -> Vec<u8> {
    encode(&WireRequest {
        version: WIRE_VERSION,
        task_id: r.task_id.clone(),
        attempt: r.attempt,
        task_type: r.task_type,
        prompt: r.prompt.clone(),
        context: r.context.clone(),
        timeout_ms: r.timeout.as_millis().min(u64::MAX as u128) as u64,
        specialty: r.specialty,
        system_prompt: r.system_prompt.clone(),
        tools: r.tools.clone(),
        trace: supervisor_telemetry::context::current_traceparent(),
        thread: r.thread.as_ref().map(|t| WireThread {
            id: t.id.clone(),
            seq: t.seq,
            message: t.message.clone(),
            previous: t.previous.clone(),
        }),
    })
}

/// Decodes a request, with the caller's trace context if it sent one.
pub fn decode_request(bytes: &[u8]) -> Result<(ProviderRequest, Option<String>), WireDecodeError> {
    let w: WireRequest = decode("provider request", bytes, |w: &WireRequest| w.version)?;
    let request = ProviderRequest {
        task_id: w.task_id,
        attempt: w.attempt,
        task_type: w.task_type,
        prompt: w.prompt,
        context: w.context,
        timeout: Duration::from_millis(w.timeout_ms),
        specialty: w.specialty,
        system_prompt: w.system_prompt,
        tools: w.tools,
        thread: w.thread.map(|t| supervisor_providers::ThreadTurn {
            id: t.id,
            seq: t.seq,
            message: t.message,
            previous: t.previous,
        }),
    };
    Ok((request, w.trace))
}

/// Encodes an outcome; a failure carries what was `spent` before it.
pub fn encode_outcome(result: &Result<ProviderOutput, ProviderError>, spent: Spent) -> Vec<u8> {
    let result = match result {
        Ok(out) => Ok(WireOutput {
            output: out.output.clone(),
            usage: out.usage,
            cost_micros: out.cost_micros,
            model: out.model.clone(),
            artifacts: out
                .artifacts
                .iter()
                .map(|a| (a.name.clone(), a.media_type.clone(), a.content.clone()))
                .collect(),
        }),
        Err(ProviderError::Retryable {
            kind,
            message,
            retry_after,
        }) => Err(WireError {
            retryable: true,
            kind: kind.to_string(),
            message: message.clone(),
            retry_after_ms: retry_after.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            spent: Some(spent),
        }),
        Err(ProviderError::Permanent { kind, message }) => Err(WireError {
            retryable: false,
            kind: kind.to_string(),
            message: message.clone(),
            retry_after_ms: None,
            spent: Some(spent),
        }),
    };
    encode(&WireOutcome {
        version: WIRE_VERSION,
        result,
    })
}

/// Largest encoded outcome sent back to the asking node: ractor_cluster closes a session
/// that receives a frame over 16 MiB, which would fail every call on it.
pub const MAX_OUTCOME_BYTES: usize = 12 * 1024 * 1024;

/// Encodes an outcome, replacing one whose encoding exceeds `limit` bytes by a permanent
/// `output_too_large` error (running it again on the same provider would only repeat it).
pub fn encode_outcome_within(
    result: &Result<ProviderOutput, ProviderError>,
    spent: Spent,
    limit: usize,
) -> Vec<u8> {
    let bytes = encode_outcome(result, spent);
    if bytes.len() <= limit {
        return bytes;
    }
    let spent = match result {
        Ok(out) => Spent {
            usage: out.usage,
            cost_micros: out.cost_micros,
        },
        Err(_) => spent,
    };
    encode_outcome(
        &Err(ProviderError::Permanent {
            kind: "output_too_large",
            message: format!(
                "the outcome is {} bytes, over the {limit} bytes a provider on another node may return; run such tasks on a node that has the provider itself",
                bytes.len()
            ),
        }),
        spent,
    )
}

/// An outcome as decoded: the result, and what a failure spent.
pub type Answer = (Result<ProviderOutput, ProviderError>, Spent);

/// Decodes an outcome.
pub fn decode_outcome(bytes: &[u8]) -> Result<Answer, WireDecodeError> {
    let w: WireOutcome = decode("provider outcome", bytes, |w: &WireOutcome| w.version)?;
    let spent = match &w.result {
        Err(e) => e.spent.unwrap_or_default(),
        Ok(_) => Spent::default(),
    };
    let result = match w.result {
        Ok(out) => Ok(ProviderOutput {
            output: out.output,
            usage: out.usage,
            cost_micros: out.cost_micros,
            model: out.model,
            artifacts: out
                .artifacts
                .into_iter()
                .map(|(name, media_type, content)| Artifact {
                    name,
                    media_type,
                    content,
                })
                .collect(),
        }),
        Err(e) if e.retryable => Err(ProviderError::Retryable {
            kind: intern_kind(&e.kind),
            message: e.message,
            retry_after: e.retry_after_ms.map(Duration::from_millis),
        }),
        Err(e) => Err(ProviderError::Permanent {
            kind: intern_kind(&e.kind),
            message: e.message,
        }),
    };
    Ok((result, spent))
}

/// Encodes a provider's description.
pub fn encode_description(
    name: &str,
    kind: &str,
    caps: &Capabilities,
    max_concurrency: u32,
) -> Vec<u8> {
    encode(&WireDescription {
        version: WIRE_VERSION,
        name: name.to_string(),
        kind: kind.to_string(),
        task_types: caps.task_types.clone(),
        models: caps.models.clone(),
        max_context_tokens: caps.max_context_tokens,
        streaming: caps.streaming,
        tools: caps.tools,
        repository: caps.repository,
        max_concurrency,
    })
}

/// Decodes a provider's description.
pub fn decode_description(bytes: &[u8]) -> Result<WireDescription, WireDecodeError> {
    decode("provider description", bytes, |w: &WireDescription| {
        w.version
    })
}

/// Most distinct error kinds kept from peers; beyond it they read as `remote_error`.
const MAX_KINDS: usize = 256;

/// Error kinds are `&'static str` (they are a small closed vocabulary), so kinds read
/// from a peer are interned once and reused.
fn intern_kind(kind: &str) -> &'static str {
    static KINDS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut kinds = KINDS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = kinds.get(kind) {
        return k;
    }
    if kinds.len() >= MAX_KINDS || kind.len() > 64 {
        return "remote_error";
    }
    let leaked: &'static str = Box::leak(kind.to_string().into_boxed_str());
    kinds.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_outcomes_survive_the_round_trip() {
        let mut req = ProviderRequest::simple(
            "t-1",
            TaskType::PrReview,
            "review this",
            Duration::from_secs(7),
        );
        req.context.insert("file".into(), "a.rs".into());
        req.thread = Some(supervisor_providers::ThreadTurn {
            id: "th-1".into(),
            seq: 5,
            message: "and now?".into(),
            previous: Some("t-0".into()),
        });
        let (back, _) = decode_request(&encode_request(&req)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));

        let ok: Result<ProviderOutput, ProviderError> = Ok(ProviderOutput {
            output: "fine".into(),
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
                cache_read_tokens: 5,
                cache_write_tokens: 6,
            },
            cost_micros: 9,
            model: "m".into(),
            artifacts: vec![Artifact {
                name: "changes.diff".into(),
                media_type: "text/x-diff".into(),
                content: "+x".into(),
            }],
        });
        assert_eq!(
            decode_outcome(&encode_outcome(&ok, Spent::default()))
                .unwrap()
                .0,
            ok
        );
        let limited: Result<ProviderOutput, ProviderError> = Err(ProviderError::Retryable {
            kind: "rate_limited",
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(1500)),
        });
        let spent = Spent {
            usage: Usage {
                input_tokens: 1200,
                ..Usage::default()
            },
            cost_micros: 3600,
        };
        assert_eq!(
            decode_outcome(&encode_outcome(&limited, spent)).unwrap(),
            (limited.clone(), spent),
            "a failure carries what it spent"
        );
        assert_eq!(
            decode_outcome(&encode_outcome(&limited, Spent::default()))
                .unwrap()
                .0,
            limited
        );
        let denied: Result<ProviderOutput, ProviderError> = Err(ProviderError::Permanent {
            kind: "some_new_kind",
            message: "no".into(),
        });
        assert_eq!(
            decode_outcome(&encode_outcome(&denied, Spent::default()))
                .unwrap()
                .0,
            denied
        );
    }

    #[test]
    fn an_outcome_over_the_limit_becomes_a_permanent_error() {
        let big: Result<ProviderOutput, ProviderError> = Ok(ProviderOutput {
            output: "x".repeat(2000),
            usage: Usage::default(),
            cost_micros: 0,
            model: "m".into(),
            artifacts: vec![],
        });
        assert_eq!(
            decode_outcome(&encode_outcome_within(&big, Spent::default(), 4096))
                .unwrap()
                .0,
            big
        );
        match decode_outcome(&encode_outcome_within(&big, Spent::default(), 1000))
            .unwrap()
            .0
        {
            Err(ProviderError::Permanent { kind, message }) => {
                assert_eq!(kind, "output_too_large");
                assert!(message.contains("1000 bytes"), "{message}");
            }
            other => panic!("expected output_too_large, got {other:?}"),
        }
    }

    #[test]
    fn garbage_and_other_versions_are_refused_with_a_reason() {
        let err = decode_request(b"\x01\x02not msgpack").unwrap_err();
        assert!(err.to_string().contains("provider request"), "{err}");
        let mut other = WireDescription {
            version: WIRE_VERSION + 1,
            name: "x".into(),
            kind: "mock".into(),
            task_types: vec![],
            models: vec![],
            max_context_tokens: 0,
            streaming: false,
            tools: false,
            repository: false,
            max_concurrency: 1,
        };
        let err = decode_description(&encode(&other)).unwrap_err();
        assert!(err.to_string().contains("wire version"), "{err}");
        other.version = WIRE_VERSION;
        assert_eq!(decode_description(&encode(&other)).unwrap(), other);
    }
}
