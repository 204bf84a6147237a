//! The durable part of conversation threads that the rest of the engine touches: the
//! thread's record, its message log, and the reply a turn's task writes into it when it
//! ends ([`on_turns_ended`], called by every transaction that ends a task). Posting,
//! watching and searching are in `threads`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use supervisor_model::{Task, TaskId, TaskStatus, TaskType};
use supervisor_store::{RangeOptions, Transaction};

use crate::codec::{decode, encode};
use crate::{EngineError, keyspace, records};

/// Longest reply stored in the thread, in bytes; a longer one is cut with a note (the
/// turn's task keeps all of it).
pub const MAX_STORED_REPLY_BYTES: usize = 64 * 1024;

/// A stored thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    /// Its id (time-ordered, like a task's).
    pub id: TaskId,
    /// Its tenant.
    pub tenant: String,
    /// Its title.
    pub title: String,
    /// The type of its replies' tasks.
    pub task_type: TaskType,
    /// The context of its replies' tasks.
    pub context: BTreeMap<String, String>,
    /// The task it is about.
    pub about_task: Option<TaskId>,
    /// The workflow run it is about.
    pub about_run: Option<TaskId>,
    /// Who created it.
    pub created_by: String,
    /// Creation time (unix microseconds).
    pub created_at: i64,
    /// When its last message was written.
    pub updated_at: i64,
    /// The sequence number its next message gets.
    pub next_seq: u64,
    /// The task writing the current reply.
    pub open_turn: Option<TaskId>,
    /// Tokens of history a reply's prompt may carry (0: from the providers).
    pub context_tokens: u64,
    /// Providers its replies prefer.
    pub preferred_providers: Vec<String>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A person.
    User,
    /// The agent.
    Assistant,
}

/// One message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadMessage {
    /// Position in the thread, from 1.
    pub seq: u64,
    /// Who wrote it.
    pub role: Role,
    /// What it says (empty for a reply that failed).
    pub text: String,
    /// The turn's task.
    pub task: Option<TaskId>,
    /// How the turn's task ended (replies).
    pub status: Option<TaskStatus>,
    /// Why the reply failed or was cancelled.
    pub error: Option<String>,
    /// Who posted it; for a reply, the provider that wrote it.
    pub author: String,
    /// When it was written (unix microseconds).
    pub at: i64,
}

pub(crate) async fn load(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
) -> Result<Option<ThreadRecord>, EngineError> {
    match txn.get(&keyspace::thread(tenant, id)).await? {
        Some(bytes) => Ok(Some(decode("thread", &bytes)?)),
        None => Ok(None),
    }
}

/// Reads a thread that must exist.
pub(crate) async fn load_existing(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
) -> Result<ThreadRecord, EngineError> {
    load(txn, tenant, id)
        .await?
        .ok_or(EngineError::ThreadNotFound { id })
}

pub(crate) fn put(txn: &mut Transaction<'_>, t: &ThreadRecord) -> Result<(), EngineError> {
    txn.set(&keyspace::thread(&t.tenant, t.id), &encode(t)?);
    Ok(())
}

pub(crate) fn append(
    txn: &mut Transaction<'_>,
    t: &mut ThreadRecord,
    mut message: ThreadMessage,
) -> Result<ThreadMessage, EngineError> {
    message.seq = t.next_seq;
    t.next_seq += 1;
    t.updated_at = message.at;
    txn.set(
        &keyspace::thread_message(&t.tenant, t.id, message.seq),
        &encode(&message)?,
    );
    Ok(message)
}

pub(crate) async fn messages_after(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
    after: u64,
    limit: usize,
) -> Result<Vec<ThreadMessage>, EngineError> {
    let (begin, end) = keyspace::thread_messages_after(tenant, id, after);
    let kvs = txn
        .get_range(&begin, &end, RangeOptions::new().snapshot().limit(limit))
        .await?;
    kvs.iter()
        .map(|kv| decode("thread message", &kv.value))
        .collect()
}

/// The newest messages of a thread after message `after`, oldest first, read newest
/// first until their texts hold `max_bytes` (or all of them): what a prompt's history or
/// a response has room for, whatever the thread's length.
pub(crate) async fn newest_messages(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
    after: u64,
    max_bytes: usize,
) -> Result<Vec<ThreadMessage>, EngineError> {
    let (begin, mut end) = keyspace::thread_messages_after(tenant, id, after);
    let mut newest_first = Vec::new();
    let mut bytes = 0usize;
    while bytes < max_bytes {
        let kvs = txn
            .get_range(
                &begin,
                &end,
                RangeOptions::new().snapshot().reverse().limit(64),
            )
            .await?;
        let Some(last) = kvs.last() else {
            break;
        };
        end = last.key.clone();
        let done = kvs.len() < 64;
        for kv in &kvs {
            let m: ThreadMessage = decode("thread message", &kv.value)?;
            bytes += m.text.len() + m.error.as_ref().map_or(0, String::len) + 64;
            newest_first.push(m);
            if bytes >= max_bytes {
                break;
            }
        }
        if done {
            break;
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// Called in the transaction that ended `tasks`: each one that writes a thread's reply
/// appends it (its output, or why it failed) and closes the turn.
pub(crate) async fn on_turns_ended(
    txn: &mut Transaction<'_>,
    tasks: &[Task],
    now: i64,
) -> Result<(), EngineError> {
    for task in tasks {
        let Some(thread_id) = task.thread.map(|r| r.thread) else {
            continue;
        };
        if !task.status.is_terminal() {
            continue;
        }
        let Some(mut thread) = load(txn, &task.tenant, thread_id).await? else {
            continue;
        };
        if thread.open_turn != Some(task.id) {
            continue;
        }
        record_reply(txn, &mut thread, task, now).await?;
    }
    Ok(())
}

/// Appends `task`'s reply (terminal) to `thread` and closes the turn.
async fn record_reply(
    txn: &mut Transaction<'_>,
    thread: &mut ThreadRecord,
    task: &Task,
    now: i64,
) -> Result<(), EngineError> {
    let text = if task.status == TaskStatus::Succeeded {
        // A stored task's result holds no output: it is kept in chunks of its own.
        cut_reply(records::read_output(txn, task).await?, task.id)
    } else {
        String::new()
    };
    let author = task
        .attempts
        .last()
        .map(|a| a.provider.clone())
        .unwrap_or_default();
    append(
        txn,
        thread,
        ThreadMessage {
            seq: 0,
            role: Role::Assistant,
            text,
            task: Some(task.id),
            status: Some(task.status),
            error: task
                .error
                .clone()
                .filter(|_| task.status != TaskStatus::Succeeded),
            author,
            at: now,
        },
    )?;
    thread.open_turn = None;
    put(txn, thread)
}

/// Closes a turn whose reply never came in: its task ended without its end reaching the
/// thread (a node of an older release ran it) or is gone (retention). The reply is
/// recorded from the task as it ended, or as failed when it is gone; a turn whose task
/// still runs is left alone. Returns whether the thread changed.
pub(crate) async fn close_orphan_turn(
    txn: &mut Transaction<'_>,
    thread: &mut ThreadRecord,
    now: i64,
) -> Result<bool, EngineError> {
    let Some(open) = thread.open_turn else {
        return Ok(false);
    };
    match records::load(txn, &thread.tenant, open).await? {
        Some(task) if !task.status.is_terminal() => Ok(false),
        Some(task) => {
            record_reply(txn, thread, &task, now).await?;
            Ok(true)
        }
        None => {
            append(
                txn,
                thread,
                ThreadMessage {
                    seq: 0,
                    role: Role::Assistant,
                    text: String::new(),
                    task: Some(open),
                    status: Some(TaskStatus::Failed),
                    error: Some(format!(
                        "the turn's task {open} is gone (deleted by retention) without a reply"
                    )),
                    author: String::new(),
                    at: now,
                },
            )?;
            thread.open_turn = None;
            put(txn, thread)?;
            Ok(true)
        }
    }
}

fn cut_reply(mut text: String, task: TaskId) -> String {
    if text.len() <= MAX_STORED_REPLY_BYTES {
        return text;
    }
    text.truncate(supervisor_model::floor_char_boundary(
        &text,
        MAX_STORED_REPLY_BYTES,
    ));
    text.push_str(&format!(
        "\n[... the reply goes on; task {task}'s output has all of it]"
    ));
    text
}
