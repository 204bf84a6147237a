//! Conversation threads: durable multi-turn conversations whose every reply is a task.
//!
//! A thread keeps its messages in a log beside its record, numbered from 1. Posting a
//! message is one transaction: the message, the task that writes the reply (its prompt
//! the conversation so far, trimmed by [`compose`]) and the thread's `open_turn` are
//! written together. The reply is written into the thread by the transaction that ends
//! that task (whatever ends it: its runner, a cancel, a lapsed lease), so a reply is
//! recorded exactly once and a node lost between or during turns loses nothing: the
//! task is retried like any other and its end lands in the thread.
//!
//! History policy ([`compose`]): a reply's prompt may carry `budget` tokens of history,
//! counted as one token per 4 bytes: three quarters of the provider's context window (the
//! rest is the system prompt's, the tools' and the reply's), and never more than a task's
//! prompt may hold. Always kept: the new message, then what the thread is about (its task
//! or run, up to a quarter of the budget) and the thread's first message; then as many of
//! the newest messages as fit, newest first; what is left out is replaced by one line
//! saying how many messages were.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;

use futures::{Stream, StreamExt};
use supervisor_model::{
    EventKind, FieldError, NewTask, Priority, RoutingPrefs, Task, TaskId, TaskStatus, TaskType,
    ThreadRef,
};
use supervisor_store::{RangeOptions, Transaction, Watch};

use crate::codec::{decode, decode_page};
use crate::event_log::{self, EventLog, FOLLOW_PAGE, RECHECK};
use crate::tasks::SubmitItem;
use crate::thread_log::{
    append, close_orphan_turn, load, load_existing, messages_after, newest_messages, put,
};
use crate::{Engine, EngineError, keyspace, records};

pub use crate::thread_log::{Role, ThreadMessage, ThreadRecord};

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest message, in bytes (half of what a task's prompt may hold: the rest is history).
pub const MAX_MESSAGE_BYTES: usize = supervisor_model::MAX_PROMPT_BYTES / 2;
/// Most messages a thread holds; past it, start a new thread (or convert this one).
pub const MAX_MESSAGES: u64 = 10_000;
/// Threads a search looks through, newest first.
pub const SEARCH_THREADS: usize = 1000;
/// Bytes of messages a search reads at most before it stops (`truncated`).
pub const SEARCH_BYTES: usize = 64 * 1024 * 1024;
/// Messages a search reads per transaction.
const SEARCH_PAGE: usize = 256;
/// Largest `context_tokens` a thread may ask for.
pub const MAX_CONTEXT_TOKENS: u64 = 10_000_000;
/// Context window assumed when nothing says otherwise, in tokens.
pub const DEFAULT_WINDOW_TOKENS: u64 = 100_000;

/// What a new thread is.
#[derive(Debug, Clone, Default)]
pub struct NewThread {
    /// Its title (empty: the first message's first line).
    pub title: String,
    /// The type of its replies (`None`: code analysis).
    pub task_type: Option<TaskType>,
    /// The context of its replies' tasks.
    pub context: BTreeMap<String, String>,
    /// A task it is about.
    pub about_task: Option<TaskId>,
    /// A workflow run it is about.
    pub about_run: Option<TaskId>,
    /// Tokens of history a reply may carry (0: from the providers).
    pub context_tokens: u64,
    /// Providers its replies prefer.
    pub preferred_providers: Vec<String>,
    /// Who creates it.
    pub created_by: String,
}

/// A message posted, and the task answering it.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The message as stored.
    pub message: ThreadMessage,
    /// The task writing the reply.
    pub turn: Task,
    /// Messages of the history left out of the reply's prompt.
    pub omitted: u32,
}

/// One item of a thread's live stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreadUpdate {
    /// A message: a user's, or a reply once its turn ended.
    Message(ThreadMessage),
    /// A piece of the reply being written.
    Delta {
        /// The turn's task.
        task: TaskId,
        /// The lease of the attempt writing it (its fencing token): a new value starts
        /// the reply over.
        lease: u64,
        /// Its attempt number.
        attempt: u32,
        /// Where the text starts in the attempt's reply, in bytes.
        offset: u64,
        /// The text.
        text: String,
    },
    /// The running turn's task changed status.
    Turn {
        /// The turn's task.
        task: TaskId,
        /// Its status now.
        status: TaskStatus,
        /// What happened.
        message: String,
    },
}

/// A page of threads, newest first.
#[derive(Debug, Clone)]
pub struct ThreadPage {
    /// The threads.
    pub threads: Vec<ThreadRecord>,
    /// Whether more follow the last one.
    pub more: bool,
}

/// A message that contains the searched text.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// Its thread.
    pub thread: TaskId,
    /// The thread's title.
    pub title: String,
    /// The message.
    pub message: ThreadMessage,
    /// The text around the first match.
    pub excerpt: String,
}

/// Tokens of `text`, as budgets count them: one per 4 bytes.
fn tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// One message as the history shows it, with the blank line after it.
fn render(m: &ThreadMessage) -> String {
    match m.role {
        Role::User => format!("[user]\n{}\n\n", m.text.trim_end()),
        Role::Assistant => match m.status {
            Some(TaskStatus::Succeeded) | None => {
                format!("[assistant]\n{}\n\n", m.text.trim_end())
            }
            Some(status) => format!(
                "[assistant: no reply, the turn {status}: {}]\n\n",
                m.error.as_deref().unwrap_or("no reason given")
            ),
        },
    }
}

/// The conversation as a prompt: `about` (what the thread is about), the history that
/// fits `budget` tokens, and the new message (`new`, or for a conversion the
/// instruction). `history` is the thread's first message then its newest ones, with
/// `unread` messages between those two that were not read (all too old to fit). Returns
/// the prompt, how many messages were left out, and where `new` starts in the prompt.
pub fn compose(
    about: &str,
    history: &[ThreadMessage],
    unread: usize,
    new: &str,
    new_heading: &str,
    budget: u64,
) -> (String, u32, usize) {
    let budget = budget.min(supervisor_model::MAX_PROMPT_BYTES as u64 / 4);
    let tail = format!("{new_heading}\n{new}\n");
    let mut left = budget.saturating_sub(tokens(&tail) + 64);
    let mut about = about.to_string();
    if !about.is_empty() {
        let cap = left / 4;
        if tokens(&about) > cap {
            let cut = usize::try_from(cap * 4).unwrap_or(usize::MAX);
            about.truncate(supervisor_model::floor_char_boundary(&about, cut));
            about.push_str("\n[... cut to fit the context window]\n");
        }
        left = left.saturating_sub(tokens(&about));
    }
    let rendered: Vec<String> = history.iter().map(render).collect();
    // The first message states what the conversation is for: kept when it fits.
    let mut keep = vec![false; rendered.len()];
    if let Some(first) = rendered.first()
        && tokens(first) <= left
    {
        keep[0] = true;
        left -= tokens(first);
    }
    for i in (1..rendered.len()).rev() {
        let t = tokens(&rendered[i]);
        if t > left {
            break;
        }
        keep[i] = true;
        left -= t;
    }
    let omitted = keep.iter().filter(|k| !**k).count() + unread;
    let mut prompt = String::new();
    if !about.is_empty() {
        prompt.push_str(&about);
        prompt.push('\n');
    }
    if !rendered.is_empty() {
        prompt.push_str("The conversation so far:\n\n");
        // Where the first message left out would be (the unread ones come right after
        // the first message), one note says how many were.
        let mut noted = false;
        for (i, text) in rendered.iter().enumerate() {
            if !noted && ((i == 1 && unread > 0) || !keep[i]) {
                prompt.push_str(&format!(
                    "[{omitted} earlier message{} left out to fit the context window]\n\n",
                    if omitted == 1 { "" } else { "s" }
                ));
                noted = true;
            }
            if keep[i] {
                prompt.push_str(text);
            }
        }
    }
    let message_at = prompt.len() + new_heading.len() + 1;
    prompt.push_str(&tail);
    (
        prompt,
        u32::try_from(omitted).unwrap_or(u32::MAX),
        message_at,
    )
}

/// What the thread is about, in words, read now (empty when nothing, or when it is gone).
async fn about_text(txn: &mut Transaction<'_>, t: &ThreadRecord) -> Result<String, EngineError> {
    let mut text = String::new();
    // A snapshot read: a post does not conflict with the progress of the task it is about.
    if let Some(id) = t.about_task
        && let Some(bytes) = txn.get_snapshot(&keyspace::task(&t.tenant, id)).await?
    {
        let task: Task = decode("task record", &bytes)?;
        text.push_str(&format!(
            "This conversation is about task {id} ({}, {}).\nIts prompt:\n{}\n",
            task.task_type, task.status, task.prompt
        ));
        if task.status == TaskStatus::Succeeded {
            let output = records::read_output(txn, &task).await?;
            text.push_str(&format!("Its result:\n{output}\n"));
        } else if let Some(error) = &task.error {
            text.push_str(&format!("Its error: {error}\n"));
        }
    }
    if let Some(id) = t.about_run
        && let Some(run) = crate::workflows::load_run(txn, &t.tenant, id).await?
    {
        text.push_str(&format!(
            "This conversation is about workflow run {id} ({}, {}).\n",
            run.def.name,
            crate::workflows::run_status_name(run.status)
        ));
        for (step, state) in &run.steps {
            text.push_str(&format!("- step {step}: {state:?}\n"));
        }
    }
    Ok(text)
}

fn check_message(text: &str) -> Result<(), EngineError> {
    if text.trim().is_empty() {
        return Err(FieldError::new("text", "the message is empty").into());
    }
    check_message_text(
        "text",
        "the message",
        text,
        " (attach large inputs as files in the thread's repository)",
    )
}

/// Checks what a caller wrote into a thread (a message, a conversion's instruction):
/// within [`MAX_MESSAGE_BYTES`] (`hint` follows the limit) and free text.
fn check_message_text(
    field: &'static str,
    what: &str,
    text: &str,
    hint: &str,
) -> Result<(), EngineError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(FieldError::new(
            field,
            format!(
                "{what} is {} bytes; at most {MAX_MESSAGE_BYTES}{hint}",
                text.len()
            ),
        )
        .into());
    }
    supervisor_model::check_text(field, what, text)?;
    Ok(())
}

/// The first line of `text`, at most [`MAX_TITLE_CHARS`] characters.
fn title_from(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim().chars().take(MAX_TITLE_CHARS).collect()
}

/// The thread's messages as a log a watch follows.
struct ThreadLog {
    tenant: String,
    id: TaskId,
}

impl EventLog for ThreadLog {
    type Owner = ThreadRecord;
    type Event = ThreadMessage;
    const EVENT: &'static str = "thread message";

    async fn load_owner(&self, txn: &mut Transaction<'_>) -> Result<ThreadRecord, EngineError> {
        load_existing(txn, &self.tenant, self.id).await
    }

    fn owner_key(&self) -> Vec<u8> {
        keyspace::thread(&self.tenant, self.id)
    }

    fn events_after(&self, after_seq: u64) -> (Vec<u8>, Vec<u8>) {
        keyspace::thread_messages_after(&self.tenant, self.id, after_seq)
    }

    fn seq(m: &ThreadMessage) -> u64 {
        m.seq
    }

    fn ended(_: &ThreadRecord) -> bool {
        false
    }

    fn next_seq(t: &ThreadRecord) -> u64 {
        t.next_seq
    }
}

type TaskEvents =
    Pin<Box<dyn Stream<Item = Result<supervisor_model::TaskEvent, EngineError>> + Send>>;

/// What a thread watch holds between items.
struct Follow {
    engine: Engine,
    log: ThreadLog,
    after: u64,
    pending: VecDeque<ThreadUpdate>,
    /// The open turn being streamed.
    turn: Option<OpenTurn>,
    /// The last turn streamed (not streamed again if the thread still names it: then
    /// its end never reached the thread, which is repaired).
    streamed: Option<TaskId>,
    /// Set when caught up: fires when the thread changes.
    watch: Option<Watch>,
    /// The read made when the watch began (it found the thread), used for the first item.
    first: Option<(Vec<ThreadMessage>, ThreadRecord, Watch)>,
    done: bool,
}

/// The turn a watch streams: its task's events, and where its reply stands.
struct OpenTurn {
    task: TaskId,
    events: TaskEvents,
    /// The lease (fencing token) of the attempt writing the reply: every attempt has a
    /// new one, also one that repeats an attempt number after a node was lost.
    lease: u64,
    attempt: u32,
    /// Bytes of the attempt's reply sent so far.
    offset: u64,
    status: Option<TaskStatus>,
}

impl OpenTurn {
    /// What one of the task's events means for the thread's watchers, if anything.
    fn update(&mut self, ev: supervisor_model::TaskEvent) -> Option<ThreadUpdate> {
        if matches!(ev.kind, EventKind::Output | EventKind::Started) && ev.fence != self.lease {
            // Another attempt: its reply starts over.
            self.lease = ev.fence;
            self.attempt = ev.attempt;
            self.offset = 0;
        }
        if ev.kind == EventKind::Output {
            let offset = self.offset;
            self.offset += ev.output.len() as u64;
            return Some(ThreadUpdate::Delta {
                task: self.task,
                lease: self.lease,
                attempt: self.attempt,
                offset,
                text: ev.output,
            });
        }
        if self.status == Some(ev.status) && ev.kind == EventKind::Activity {
            return None;
        }
        self.status = Some(ev.status);
        Some(ThreadUpdate::Turn {
            task: self.task,
            status: ev.status,
            message: ev.message,
        })
    }
}

impl Follow {
    async fn next(&mut self) -> Option<Result<ThreadUpdate, EngineError>> {
        loop {
            if let Some(update) = self.pending.pop_front() {
                return Some(Ok(update));
            }
            if self.done {
                return None;
            }
            if let Some(turn) = self.turn.as_mut() {
                match turn.events.next().await {
                    Some(Ok(ev)) => {
                        if let Some(update) = turn.update(ev) {
                            self.pending.push_back(update);
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    None => {
                        // The turn ended: its reply is in the thread now.
                        self.turn = None;
                        continue;
                    }
                }
            }
            if let Some(watch) = self.watch.take() {
                let _ = tokio::time::timeout(RECHECK, watch).await;
            }
            let read = match self.first.take() {
                Some(first) => Ok(first),
                None => {
                    event_log::read(&self.engine.inner.db, &self.log, self.after, FOLLOW_PAGE).await
                }
            };
            let (messages, thread, watch) = match read {
                Ok(read) => read,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if let Some(last) = messages.last() {
                self.after = last.seq;
            }
            let caught_up = thread.next_seq <= self.after.saturating_add(1);
            self.pending
                .extend(messages.into_iter().map(ThreadUpdate::Message));
            if !caught_up {
                continue;
            }
            let Some(task) = thread.open_turn else {
                self.watch = Some(watch);
                continue;
            };
            if self.streamed == Some(task) {
                // Streamed to its end, yet the thread still waits for it (or its task is
                // gone): record what there is to record, then read on.
                if let Err(e) = self
                    .engine
                    .close_orphan_turn(&self.log.tenant, self.log.id)
                    .await
                {
                    self.done = true;
                    return Some(Err(e));
                }
                self.watch = Some(watch);
                continue;
            }
            self.streamed = Some(task);
            match self.engine.watch_events(&self.log.tenant, task, 0).await {
                Ok(events) => {
                    self.turn = Some(OpenTurn {
                        task,
                        events: Box::pin(events),
                        lease: 0,
                        attempt: 0,
                        offset: 0,
                        status: None,
                    });
                }
                // Gone (retention): the next round records the turn as failed.
                Err(EngineError::NotFound { .. }) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A thread's history for a prompt: its first message, then its newest messages until
/// twice what a prompt may hold (more could never fit), and how many lie between those
/// unread.
async fn history(
    txn: &mut Transaction<'_>,
    tenant: &str,
    id: TaskId,
) -> Result<(Vec<ThreadMessage>, usize), EngineError> {
    let mut history = messages_after(txn, tenant, id, 0, 1).await?;
    let recent =
        newest_messages(txn, tenant, id, 1, 2 * supervisor_model::MAX_PROMPT_BYTES).await?;
    let unread = match (history.first(), recent.first()) {
        (Some(first), Some(oldest)) => usize::try_from(oldest.seq - first.seq - 1).unwrap_or(0),
        _ => 0,
    };
    history.extend(recent);
    Ok((history, unread))
}

/// What a post that already committed answered: its message and its turn's task.
async fn posted_again(
    txn: &mut Transaction<'_>,
    thread: &ThreadRecord,
    turn: Task,
) -> Result<Posted, EngineError> {
    let seq = turn.thread.map_or(0, |r| r.seq);
    let message = messages_after(txn, &thread.tenant, thread.id, seq.saturating_sub(1), 1)
        .await?
        .pop()
        .filter(|m| m.seq == seq)
        .ok_or_else(|| EngineError::Internal(format!("thread {} lost message {seq}", thread.id)))?;
    Ok(Posted {
        message,
        turn,
        omitted: 0,
    })
}

impl Engine {
    /// Starts a thread. The context is checked as a task's is; a task or run it is
    /// about must exist in the tenant.
    pub async fn create_thread(
        &self,
        tenant: &str,
        new: NewThread,
    ) -> Result<ThreadRecord, EngineError> {
        if new.title.chars().count() > MAX_TITLE_CHARS {
            return Err(FieldError::new(
                "title",
                format!("the title is longer than {MAX_TITLE_CHARS} characters"),
            )
            .into());
        }
        supervisor_model::check_text("title", "the title", &new.title)?;
        if new.context_tokens > MAX_CONTEXT_TOKENS {
            return Err(FieldError::new(
                "context_tokens",
                format!(
                    "{} is more than any model's window; at most {MAX_CONTEXT_TOKENS} (0: from the providers)",
                    new.context_tokens
                ),
            )
            .into());
        }
        let task_type = new.task_type.unwrap_or(TaskType::CodeAnalysis);
        // The replies' tasks must be valid: checked now, with a stand-in prompt.
        NewTask {
            task_type: Some(task_type),
            prompt: "-".into(),
            context: new.context.clone(),
            routing: RoutingPrefs {
                preferred_providers: new.preferred_providers.clone(),
                ..RoutingPrefs::default()
            },
            ..NewTask::default()
        }
        .validate()?;
        let now = self.now_micros();
        let record = ThreadRecord {
            id: TaskId::generate(),
            tenant: tenant.to_string(),
            title: new.title.trim().to_string(),
            task_type,
            context: new.context,
            about_task: new.about_task,
            about_run: new.about_run,
            created_by: new.created_by,
            created_at: now,
            updated_at: now,
            next_seq: 1,
            open_turn: None,
            context_tokens: new.context_tokens,
            preferred_providers: new.preferred_providers,
        };
        self.inner
            .db
            .run(|txn| {
                let record = record.clone();
                Box::pin(async move {
                    if let Some(id) = record.about_task
                        && records::load(txn, tenant, id).await?.is_none()
                    {
                        return Err(EngineError::NotFound { id });
                    }
                    if let Some(id) = record.about_run
                        && crate::workflows::load_run(txn, tenant, id).await?.is_none()
                    {
                        return Err(EngineError::RunNotFound { id });
                    }
                    put(txn, &record)?;
                    Ok(record)
                })
            })
            .await
    }

    /// A thread and its messages: all of them, or the newest whose texts hold about
    /// `max_bytes` (a response's room; older ones are read with [`Engine::watch_thread`]).
    pub async fn get_thread(
        &self,
        tenant: &str,
        id: TaskId,
        max_bytes: usize,
    ) -> Result<(ThreadRecord, Vec<ThreadMessage>), EngineError> {
        let mut txn = self.inner.db.begin().await?;
        let thread = load_existing(&mut txn, tenant, id).await?;
        let messages = newest_messages(&mut txn, tenant, id, 0, max_bytes).await?;
        Ok((thread, messages))
    }

    /// Records the reply of a thread's open turn whose task ended without it (or is
    /// gone); nothing when the turn still runs.
    pub async fn close_orphan_turn(&self, tenant: &str, id: TaskId) -> Result<(), EngineError> {
        let now = self.now_micros();
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let Some(mut thread) = load(txn, tenant, id).await? else {
                        return Ok(());
                    };
                    close_orphan_turn(txn, &mut thread, now).await?;
                    Ok::<_, EngineError>(())
                })
            })
            .await
    }

    /// Deletes a thread and its messages; a turn still running is cancelled (its task
    /// stays, like every turn's). Returns how many messages went and the cancelled task.
    pub async fn delete_thread(
        &self,
        tenant: &str,
        id: TaskId,
    ) -> Result<(u64, Option<TaskId>), EngineError> {
        let (deleted, open) = self
            .inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let thread = load_existing(txn, tenant, id).await?;
                    let (begin, end) = keyspace::thread_messages_after(tenant, id, 0);
                    txn.clear_range(&begin, &end);
                    txn.clear(&keyspace::thread(tenant, id));
                    Ok::<_, EngineError>((thread.next_seq.saturating_sub(1), thread.open_turn))
                })
            })
            .await?;
        let mut cancelled = None;
        if let Some(task) = open {
            match self.cancel(tenant, task, "its thread was deleted").await {
                Ok(t) if t.status == TaskStatus::Cancelled => cancelled = Some(task),
                Ok(_) | Err(EngineError::NotFound { .. } | EngineError::FailedPrecondition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, cancelled))
    }

    /// A thread's record, without its messages.
    pub async fn thread_record(
        &self,
        tenant: &str,
        id: TaskId,
    ) -> Result<ThreadRecord, EngineError> {
        let mut txn = self.inner.db.begin().await?;
        load_existing(&mut txn, tenant, id).await
    }

    /// Up to `limit` threads of a tenant, newest first, before `before` when given.
    pub async fn list_threads(
        &self,
        tenant: &str,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<ThreadPage, EngineError> {
        let (begin, mut end) = keyspace::thread_range(tenant);
        if let Some(before) = before {
            end = keyspace::thread(tenant, before);
        }
        let limit = limit.max(1);
        let mut txn = self.inner.db.begin().await?;
        let kvs = txn
            .get_range(
                &begin,
                &end,
                RangeOptions::new().snapshot().reverse().limit(limit + 1),
            )
            .await?;
        let (threads, more) = decode_page("thread", &kvs, limit)?;
        Ok(ThreadPage { threads, more })
    }

    /// Posts `text` to a thread and queues the task writing its reply, whose prompt is
    /// the conversation so far trimmed to `window_tokens` (see the module's policy). One
    /// turn at a time: `FailedPrecondition` while the previous reply has not ended.
    pub async fn post_message(
        &self,
        tenant: &str,
        id: TaskId,
        text: &str,
        author: &str,
        window_tokens: u64,
        trace: Option<String>,
    ) -> Result<Posted, EngineError> {
        check_message(text)?;
        self.admit().await?;
        let now = self.now_micros();
        let task_id = TaskId::generate();
        let cfg = &self.inner.cfg;
        let posted = self
            .inner
            .db
            .run(|txn| {
                let trace = trace.clone();
                Box::pin(async move {
                    let mut thread = load_existing(txn, tenant, id).await?;
                    if let Some(turn) = records::load(txn, tenant, task_id).await? {
                        // This transaction already committed (its commit's result was
                        // unknown and it ran again): the same answer, whatever became of
                        // the turn since.
                        return posted_again(txn, &thread, turn).await;
                    }
                    close_orphan_turn(txn, &mut thread, now).await?;
                    if let Some(open) = thread.open_turn {
                        return Err(EngineError::FailedPrecondition(format!(
                            "the reply to the previous message (task {open}) has not ended; wait for it (supervisor chat shows it) or cancel that task, then post again"
                        )));
                    }
                    if thread.next_seq + 2 > MAX_MESSAGES {
                        return Err(EngineError::FailedPrecondition(format!(
                            "thread {id} holds {MAX_MESSAGES} messages, the most a thread may; start a new thread (ConvertThread turns this one into a task)"
                        )));
                    }
                    let (history, unread) = history(txn, tenant, id).await?;
                    // The reply before, when it succeeded: a provider with a session of its
                    // own resumes it only if it wrote that reply.
                    let previous = history
                        .last()
                        .filter(|m| m.role == Role::Assistant && m.status == Some(TaskStatus::Succeeded))
                        .and_then(|m| m.task);
                    let about = about_text(txn, &thread).await?;
                    let budget = thread_window(&thread, window_tokens).saturating_mul(3) / 4;
                    let (prompt, omitted, message_at) = compose(
                        &about,
                        &history,
                        unread,
                        text,
                        "[user, the message to answer now]",
                        budget,
                    );
                    let request = NewTask {
                        task_type: Some(thread.task_type),
                        prompt,
                        priority: Priority::High,
                        labels: vec![format!("thread:{id}")],
                        context: thread.context.clone(),
                        routing: RoutingPrefs {
                            preferred_providers: thread.preferred_providers.clone(),
                            ..RoutingPrefs::default()
                        },
                        submitted_by: Some(author.to_string()),
                        trace,
                        ..NewTask::default()
                    };
                    let task_type = request.validate()?;
                    let item = SubmitItem::prepared(tenant, request, task_type, task_id, now, None);
                    // A tenant whose lock policy is `reject` is refused here as at a submit.
                    crate::tasks::refuse_if_lock_held(txn, &item, cfg).await??;
                    let mut turn = crate::tasks::create_in_txn(txn, &item, cfg)?;
                    turn.thread = Some(ThreadRef {
                        thread: id,
                        seq: thread.next_seq,
                        message_at: u32::try_from(message_at).unwrap_or(u32::MAX),
                        previous,
                    });
                    records::put(txn, &turn)?;
                    if thread.title.is_empty() {
                        thread.title = title_from(text);
                    }
                    let message = append(
                        txn,
                        &mut thread,
                        ThreadMessage {
                            seq: 0,
                            role: Role::User,
                            text: text.to_string(),
                            task: Some(task_id),
                            status: None,
                            error: None,
                            author: author.to_string(),
                            at: now,
                        },
                    )?;
                    thread.open_turn = Some(task_id);
                    put(txn, &thread)?;
                    Ok(Posted {
                        message,
                        turn,
                        omitted,
                    })
                })
            })
            .await?;
        self.inner.ready.notify_one();
        Ok(posted)
    }

    /// A live stream of a thread: its messages after `after_seq`, then the open reply as
    /// it is written (deltas and status changes) and the reply itself once its turn
    /// ended, then whatever comes next, until dropped.
    pub async fn watch_thread(
        &self,
        tenant: &str,
        id: TaskId,
        after_seq: u64,
    ) -> Result<impl Stream<Item = Result<ThreadUpdate, EngineError>> + Send + 'static, EngineError>
    {
        let log = ThreadLog {
            tenant: tenant.to_string(),
            id,
        };
        // Fails now for a thread that does not exist.
        let first = event_log::read(&self.inner.db, &log, after_seq, FOLLOW_PAGE).await?;
        let follow = Follow {
            engine: self.clone(),
            log,
            after: after_seq,
            pending: VecDeque::new(),
            turn: None,
            streamed: None,
            watch: None,
            first: Some(first),
            done: false,
        };
        Ok(futures::stream::unfold(follow, |mut f| async move {
            f.next().await.map(|item| (item, f))
        }))
    }

    /// Messages of the tenant's threads containing `query` (case-insensitive), newest
    /// threads first, at most `limit`; `truncated` when the newest
    /// [`SEARCH_THREADS`] threads were searched and more exist.
    pub async fn search_threads(
        &self,
        tenant: &str,
        query: &str,
        limit: usize,
    ) -> Result<(Vec<SearchHit>, bool), EngineError> {
        // Lowered character by character, as the texts are (see `excerpt`).
        let needle: String = query.trim().chars().flat_map(char::to_lowercase).collect();
        if needle.is_empty() || needle.chars().count() > 200 {
            return Err(FieldError::new("query", "give 1 to 200 characters to search for").into());
        }
        let (begin, end) = keyspace::thread_range(tenant);
        let kvs = {
            let mut txn = self.inner.db.begin().await?;
            txn.get_range(
                &begin,
                &end,
                RangeOptions::new()
                    .snapshot()
                    .reverse()
                    .limit(SEARCH_THREADS + 1),
            )
            .await?
        };
        let mut truncated = kvs.len() > SEARCH_THREADS;
        let mut hits = Vec::new();
        let mut scanned = 0usize;
        // Each page of messages in a transaction of its own, and the whole search within
        // a bound of bytes read: a tenant's chats can be far larger than one transaction.
        'threads: for kv in kvs.iter().take(SEARCH_THREADS) {
            let thread: ThreadRecord = decode("thread", &kv.value)?;
            let mut after = 0;
            loop {
                if scanned > SEARCH_BYTES {
                    truncated = true;
                    break 'threads;
                }
                let page = {
                    let mut txn = self.inner.db.begin().await?;
                    messages_after(&mut txn, tenant, thread.id, after, SEARCH_PAGE).await?
                };
                let Some(last) = page.last() else {
                    break;
                };
                after = last.seq;
                let full = page.len() == SEARCH_PAGE;
                for message in page {
                    scanned += message.text.len() + 64;
                    let Some(excerpt) = excerpt(&message.text, &needle) else {
                        continue;
                    };
                    hits.push(SearchHit {
                        thread: thread.id,
                        title: thread.title.clone(),
                        message,
                        excerpt,
                    });
                    if hits.len() >= limit {
                        break 'threads;
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok((hits, truncated))
    }

    /// The conversation of a thread as a prompt for a task that does what it agreed,
    /// trimmed like a reply's to the window `window` gives for the thread (0: unknown).
    pub async fn thread_transcript(
        &self,
        tenant: &str,
        id: TaskId,
        instruction: &str,
        window: impl FnOnce(&ThreadRecord) -> u64,
    ) -> Result<(ThreadRecord, String), EngineError> {
        let mut txn = self.inner.db.begin().await?;
        let thread = load_existing(&mut txn, tenant, id).await?;
        check_message_text("instruction", "the instruction", instruction, "")?;
        let (history, unread) = history(&mut txn, tenant, id).await?;
        if history.is_empty() {
            return Err(EngineError::FailedPrecondition(format!(
                "thread {id} has no messages yet: post one first"
            )));
        }
        let about = about_text(&mut txn, &thread).await?;
        let budget = thread_window(&thread, window(&thread)).saturating_mul(3) / 4;
        let (prompt, _, _) = compose(
            &about,
            &history,
            unread,
            instruction,
            "[what to do now]",
            budget,
        );
        Ok((thread, prompt))
    }
}

/// The window a thread's replies get: its own setting, else the providers'.
fn thread_window(thread: &ThreadRecord, window_tokens: u64) -> u64 {
    match thread.context_tokens {
        0 if window_tokens == 0 => DEFAULT_WINDOW_TOKENS,
        0 => window_tokens,
        own => own,
    }
}

/// The text around the first case-insensitive match of `needle` (lowercase) in `text`.
fn excerpt(text: &str, needle: &str) -> Option<String> {
    // Lowercased character by character, remembering which character of `text` each
    // lowercased byte came from (lowercasing may change lengths: 'İ' becomes two chars).
    let chars: Vec<char> = text.chars().collect();
    let mut lower = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    for (i, c) in chars.iter().enumerate() {
        for l in c.to_lowercase() {
            let before = lower.len();
            lower.push(l);
            origin.extend(std::iter::repeat_n(i, lower.len() - before));
        }
    }
    let at = lower.find(needle)?;
    let first = origin[at];
    let last = origin[(at + needle.len()).saturating_sub(1).min(origin.len() - 1)];
    let start = first.saturating_sub(60);
    let end = (last + 1 + 60).min(chars.len()).max(start);
    let mut out: String = chars[start..end].iter().collect();
    out = out.replace('\n', " ");
    if start > 0 {
        out.insert(0, '…');
    }
    if end < chars.len() {
        out.push('…');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, role: Role, text: &str) -> ThreadMessage {
        ThreadMessage {
            seq,
            role,
            text: text.into(),
            task: None,
            status: (role == Role::Assistant).then_some(TaskStatus::Succeeded),
            error: None,
            author: String::new(),
            at: 0,
        }
    }

    #[test]
    fn history_keeps_the_first_and_the_newest_messages_that_fit() {
        let history: Vec<ThreadMessage> = (1..=20)
            .map(|i| {
                let role = if i % 2 == 1 {
                    Role::User
                } else {
                    Role::Assistant
                };
                msg(i, role, &format!("message {i} {}", "x".repeat(400)))
            })
            .collect();
        let (all, omitted, at) = compose("", &history, 0, "next?", "[now]", 100_000);
        assert_eq!(&all[at..], "next?\n");
        assert_eq!(omitted, 0);
        assert!(all.contains("message 1 ") && all.contains("message 20 "));
        // Room for about five messages of ~110 tokens each.
        let (some, omitted, _) = compose("", &history, 0, "next?", "[now]", 700);
        assert!(omitted > 10 && omitted < 19, "{omitted}");
        assert!(some.contains("message 1 "), "the first message is kept");
        assert!(some.contains("message 20 "), "the newest is kept");
        assert!(!some.contains("message 2 "));
        assert!(some.contains(&format!("[{omitted} earlier messages left out")));
        assert!(some.ends_with("[now]\nnext?\n"));
        assert!(tokens(&some) <= 700, "{}", tokens(&some));
    }

    #[test]
    fn the_prompt_never_exceeds_what_a_task_may_hold() {
        let big = "y".repeat(30_000);
        let history: Vec<ThreadMessage> = (1..=10).map(|i| msg(i, Role::User, &big)).collect();
        let (prompt, omitted, _) = compose("", &history, 0, "go", "[now]", u64::MAX);
        assert!(
            prompt.len() <= supervisor_model::MAX_PROMPT_BYTES,
            "{}",
            prompt.len()
        );
        assert!(omitted >= 8);
    }

    #[test]
    fn unread_messages_count_as_left_out_after_the_first() {
        let history = vec![
            msg(1, Role::User, "the goal"),
            msg(52, Role::Assistant, "newest reply"),
        ];
        let (prompt, omitted, _) = compose("", &history, 50, "next", "[now]", 10_000);
        assert_eq!(omitted, 50);
        let note = prompt.find("[50 earlier messages left out").expect(&prompt);
        assert!(prompt.find("the goal").unwrap() < note);
        assert!(note < prompt.find("newest reply").unwrap());
    }

    #[test]
    fn many_short_messages_fit_too() {
        let history: Vec<ThreadMessage> = (1..=9000).map(|i| msg(i, Role::User, "ok")).collect();
        let about = "a".repeat(100_000);
        let (prompt, omitted, _) =
            compose(&about, &history, 0, &"n".repeat(30_000), "[now]", u64::MAX);
        assert!(
            prompt.len() <= supervisor_model::MAX_PROMPT_BYTES,
            "{}",
            prompt.len()
        );
        assert!(omitted > 0);
    }

    #[test]
    fn a_failed_reply_shows_as_such() {
        let mut failed = msg(2, Role::Assistant, "");
        failed.status = Some(TaskStatus::Failed);
        failed.error = Some("rate limited".into());
        let (prompt, _, _) = compose(
            "",
            &[msg(1, Role::User, "hi"), failed],
            0,
            "again",
            "[now]",
            1000,
        );
        assert!(
            prompt.contains("no reply, the turn failed: rate limited"),
            "{prompt}"
        );
    }

    #[test]
    fn excerpts_surround_the_match_whatever_the_case() {
        assert_eq!(
            excerpt("Fix the Parser now", "parser").as_deref(),
            Some("Fix the Parser now")
        );
        assert!(excerpt("nothing", "parser").is_none());
        let long = format!("{}needle{}", "a".repeat(100), "b".repeat(100));
        let e = excerpt(&long, "needle").unwrap();
        assert!(e.starts_with('…') && e.ends_with('…') && e.contains("needle"));
        // Lowercasing that changes lengths moves nothing out of place.
        let turkish = format!("{}NEEDLE", "İ".repeat(100));
        let e = excerpt(&turkish, "needle").unwrap();
        assert!(e.ends_with("NEEDLE") && e.starts_with('…'), "{e}");
    }
}
