//! Domain types of Supervisor and their state machines.
//!
//! Everything here is plain data with serde derives: the engine stores these records, the
//! server maps them to protobuf, the node runs them. Invariants that belong to a type live
//! with it (which status transitions are legal, which statuses are terminal).

#![warn(missing_docs)]

#[macro_use]
mod task;
mod identity;
mod specialty;

pub use identity::*;
pub use specialty::*;
pub use task::*;

/// The tenant every task belongs to until authentication introduces more.
pub const DEFAULT_TENANT: &str = "default";

/// Largest prompt accepted, in bytes. Kept well under the store's value limit so a task
/// record (prompt plus metadata) always fits in one value.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Most labels on one task.
pub const MAX_LABELS: usize = 32;
/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Most context entries on one task.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
/// Largest total of context keys and values, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// Largest `max_attempts` a task may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
