//! Idempotency keys: a key names one request, and resubmitting it returns the task the
//! first submit created. Reusing a key for a different request is a mistake the caller
//! must hear about (as payment APIs answer), not a silent return of an unrelated task:
//! the key is stored with a fingerprint of the normalized request, and a submit whose
//! fingerprint differs is refused with `ALREADY_EXISTS` naming the fields that differ.
//!
//! `("idem", tenant, key)` holds an [`Entry`]. Entries written before fingerprints
//! existed hold the bare task id; they are read as an entry without a fingerprint, which
//! matches any request (what was sent then is not known).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use supervisor_model::{NewTask, Priority, RoutingStrategy, Specialty, Task, TaskId, TaskType};

use crate::EngineError;
use crate::codec::{decode, encode};

/// The value stored under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The task the first submit created.
    pub task: TaskId,
    /// The fingerprint of that submit's request (hex BLAKE3 of its normalized form);
    /// `None` for entries written before fingerprints were kept.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl Entry {
    /// The entry for a new task created by `request`.
    pub(crate) fn new(task: TaskId, request: &NewTask) -> Entry {
        Entry {
            task,
            fingerprint: Some(fingerprint(request)),
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, EngineError> {
        encode(self)
    }

    /// Reads an entry, or the bare task id older versions stored.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Entry, EngineError> {
        match decode::<Entry>("idempotency entry", bytes) {
            Ok(entry) => Ok(entry),
            Err(_) => Ok(Entry {
                task: decode::<TaskId>("idempotency entry", bytes)?,
                fingerprint: None,
            }),
        }
    }

    /// Whether `request` is the request this entry was made for.
    pub(crate) fn matches(&self, request: &NewTask) -> bool {
        self.fingerprint
            .as_ref()
            .is_none_or(|f| *f == fingerprint(request))
    }
}

/// A request as its fingerprint sees it: what the caller asked for, with the parts whose
/// order means nothing (labels, excluded providers) sorted and deduplicated. The key
/// itself is left out. Preferred providers keep their order: it is the order of
/// preference.
#[derive(Serialize)]
struct Normalized<'a> {
    task_type: Option<TaskType>,
    prompt: &'a str,
    priority: Priority,
    labels: Vec<&'a str>,
    context: &'a BTreeMap<String, String>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    specialty: Option<Specialty>,
    strategy: Option<RoutingStrategy>,
    preferred_providers: &'a [String],
    excluded_providers: Vec<&'a str>,
    max_cost_micros: Option<u64>,
}

fn sorted(items: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = items.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The fingerprint of a request: hex BLAKE3 of its normalized form encoded with field
/// names. A field added to [`Normalized`] later must be skipped when it has its default,
/// or every key stored before would refuse the very request that made it.
pub(crate) fn fingerprint(request: &NewTask) -> String {
    let normalized = Normalized {
        task_type: request.task_type,
        prompt: &request.prompt,
        priority: request.priority,
        labels: sorted(&request.labels),
        context: &request.context,
        max_attempts: request.max_attempts,
        timeout_ms: request.timeout_ms,
        specialty: request.routing.specialty,
        strategy: request.routing.strategy,
        preferred_providers: &request.routing.preferred_providers,
        excluded_providers: sorted(&request.routing.excluded_providers),
        max_cost_micros: request.routing.max_cost_micros,
    };
    // Encoding plain data with named fields cannot fail; an empty input would only make
    // every request of this shape look alike, never two different ones alike by chance.
    let bytes = rmp_serde::to_vec_named(&normalized).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

/// The fields of `request` that differ from what `task` was created with, as the API
/// names them. Values the caller left to the defaults are compared with the defaults
/// the task got (`default_attempts`, `default_timeout_ms`).
pub(crate) fn differences(
    request: &NewTask,
    task: &Task,
    default_attempts: u32,
    default_timeout_ms: u64,
) -> Vec<&'static str> {
    let r = request;
    let mut out = Vec::new();
    let mut differs = |field, same: bool| {
        if !same {
            out.push(field);
        }
    };
    differs("type", r.task_type == Some(task.task_type));
    differs("prompt", r.prompt == task.prompt);
    differs("priority", r.priority == task.priority);
    differs("labels", sorted(&r.labels) == sorted(&task.labels));
    differs("context", r.context == task.context);
    differs(
        "max_attempts",
        r.max_attempts.unwrap_or(default_attempts) == task.max_attempts,
    );
    differs(
        "timeout_ms",
        r.timeout_ms.unwrap_or(default_timeout_ms) == task.timeout_ms,
    );
    let (a, b) = (&r.routing, &task.routing);
    differs("specialty", a.specialty == b.specialty);
    differs("routing_strategy", a.strategy == b.strategy);
    differs(
        "preferred_providers",
        a.preferred_providers == b.preferred_providers,
    );
    differs(
        "excluded_providers",
        sorted(&a.excluded_providers) == sorted(&b.excluded_providers),
    );
    differs("max_cost_usd", a.max_cost_micros == b.max_cost_micros);
    out
}

/// The refusal of a key reused for another request.
pub(crate) fn conflict(key: &str, task: TaskId, fields: &[&str]) -> EngineError {
    let what = if fields.is_empty() {
        String::new()
    } else {
        format!(" (it differs in {})", fields.join(", "))
    };
    EngineError::AlreadyExists(format!(
        "idempotency key {} was already used for a different request{what}, which created task {task}; send the same request to get that task again, or use a new key for a new task",
        supervisor_model::quote(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> NewTask {
        NewTask {
            task_type: Some(TaskType::BugFix),
            prompt: "fix it".into(),
            labels: vec!["b".into(), "a".into()],
            idempotency_key: Some("k".into()),
            ..NewTask::default()
        }
    }

    #[test]
    fn the_fingerprint_ignores_order_that_means_nothing_and_the_key() {
        let a = request();
        let mut b = request();
        b.labels = vec!["a".into(), "b".into(), "a".into()];
        b.idempotency_key = Some("other".into());
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut c = request();
        c.routing.preferred_providers = vec!["x".into(), "y".into()];
        let mut d = request();
        d.routing.preferred_providers = vec!["y".into(), "x".into()];
        assert_ne!(fingerprint(&c), fingerprint(&d), "preference order counts");
        let mut e = request();
        e.max_attempts = Some(3);
        assert_ne!(fingerprint(&a), fingerprint(&e));
    }

    #[test]
    fn entries_of_older_versions_match_any_request() {
        let id = TaskId::generate();
        let old = encode(&id).expect("encode");
        let entry = Entry::decode(&old).expect("decode");
        assert_eq!(entry.task, id);
        assert!(entry.matches(&request()));
        let new = Entry::new(id, &request());
        let back = Entry::decode(&new.encode().expect("encode")).expect("decode");
        assert_eq!(back, new);
        let mut other = request();
        other.prompt = "fix that".into();
        assert!(back.matches(&request()) && !back.matches(&other));
    }
}
