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

pub(crate) fn not_found(id: TaskId) -> EngineError {
    EngineError::ThreadNotFound { id }
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
        let text = if task.status == TaskStatus::Succeeded {
            let output = match &task.result {
                Some(r) if !r.output.is_empty() => r.output.clone(),
                _ => records::read_output(txn, task).await?,
            };
            cut_reply(output, task.id)
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
            &mut thread,
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
        put(txn, &thread)?;
    }
    Ok(())
}

fn cut_reply(mut text: String, task: TaskId) -> String {
    if text.len() <= MAX_STORED_REPLY_BYTES {
        return text;
    }
    let mut cut = MAX_STORED_REPLY_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!(
        "\n[... the reply goes on; task {task}'s output has all of it]"
    ));
    text
}
