//! Domain types of Supervisor and their state machines.
//!
//! Everything here is plain data with serde derives: the engine stores these records, the
//! server maps them to protobuf, the node runs them. Invariants that belong to a type live
//! with it (which status transitions are legal, which statuses are terminal).

#![warn(missing_docs)]

#[macro_use]
mod task;
mod analytics;
mod identity;
mod predict;
mod resources;
mod specialty;
mod text;

pub use analytics::*;
pub use identity::*;
pub use predict::*;
pub use resources::*;
pub use specialty::*;
pub use task::*;
pub use text::{
    MAX_QUOTED_CHARS, check_name, check_text, floor_char_boundary, forbidden_in_name, quote,
};

/// The tenant every task belongs to until authentication introduces more.
pub const DEFAULT_TENANT: &str = "default";

// The limits of the API. Every layer reads them from here: the model's validation (which
// the server runs on every request), the CLI's flag parsers and value ranges, and the
// docs (`docs/limits.md` and the proto comments name the same numbers; a test checks it).

/// Largest prompt accepted, in bytes. Kept well under the store's value limit so a task
/// record (prompt plus metadata) always fits in one value.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Most labels on one task.
pub const MAX_LABELS: usize = 32;
/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Most context entries on one task.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
/// Longest context key, in bytes.
pub const MAX_CONTEXT_KEY_BYTES: usize = 128;
/// Largest total of context keys and values, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// Largest `max_attempts` a task may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest time limit one attempt may ask for, in milliseconds: 24 hours.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
/// Highest cost ceiling one attempt may ask for, in millionths of a US dollar: $10,000.
pub const MAX_COST_MICROS: u64 = 10_000 * 1_000_000;
/// Longest provider name a task may prefer or exclude, in bytes.
pub const MAX_PROVIDER_NAME_BYTES: usize = 64;
/// Longest reason given when cancelling a task or a run, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Largest request the server reads, in bytes (8 MiB): above every field limit, so an
/// oversized field is decoded and refused naming the field. A larger request is refused
/// with `RESOURCE_EXHAUSTED` before it is read, naming this limit and the field limits
/// of the call.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Largest response the server sends, in bytes: under the 4 MiB (4,194,304 bytes) that
/// gRPC clients accept by default. Listings are cut into pages by size as well as count,
/// and the long texts of a single answer are cut, with `truncated_fields` naming them.
pub const MAX_RESPONSE_BYTES: usize = 4_000_000;
/// Most days one spend query (`GetSpend`) covers, so its answer stays under
/// [`MAX_RESPONSE_BYTES`] (one row per day and provider).
pub const MAX_SPEND_DAYS: u32 = 366;
/// How many attempts abandoned by a node that stopped answering (its lease lapsed, or
/// its node was fenced or restarted) a task may go through per attempt it is allowed,
/// before it fails. Such attempts do not count against `max_attempts` (the task did
/// nothing wrong), but a task that brings its node down every time must not loop
/// forever: with `max_attempts = 3`, the ninth abandoned attempt fails it.
pub const ABANDONED_ATTEMPTS_PER_ATTEMPT: u32 = 3;
