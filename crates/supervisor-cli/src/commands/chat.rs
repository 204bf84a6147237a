//! `supervisor chat`: talk with an agent in a thread, each reply streamed as it is written.
//!
//! Interactive by default: a line is a message (end a line with `\` to go on on the next
//! one), its reply streams below it, then the next prompt. `/task [TYPE]` turns the
//! thread into a task, `/quit` (or end of input) leaves; the thread stays in the store
//! and `supervisor chat <ID>` goes on with it. `--message` posts one message, prints its
//! reply and exits (for scripts). A reply that breaks off (the node restarted) is
//! followed again from where it was.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use futures::StreamExt as _;
use supervisor_client::{Client, Transport};
use supervisor_proto::convert::EnumName as _;
use supervisor_proto::v1::chat_service_client::ChatServiceClient;
use supervisor_proto::v1::{
    self, ConvertThreadRequest, CreateThreadRequest, DeleteThreadRequest, GetThreadRequest,
    ListThreadsRequest, PostMessageRequest, SearchThreadsRequest, TaskStatus, TaskType, ThreadRole,
    WatchThreadRequest, thread_event::Event,
};

use crate::commands::{
    Exit, GlobalArgs, connect,
    output::{OutputFormat, print_json, print_line, print_stdout},
    parse::{EnumArg, context_map, parse_context},
};

/// How long a broken reply is followed again before giving up.
const RESUME_FOR: Duration = Duration::from_secs(120);

/// Options of `supervisor chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The thread to go on with (default: a new one).
    pub thread: Option<String>,
    /// Post this message, print its reply and exit.
    #[arg(long, short = 'm', value_name = "TEXT")]
    pub message: Option<String>,
    /// List the threads, newest first, and exit.
    #[arg(long, conflicts_with_all = ["thread", "message", "search"])]
    pub list: bool,
    /// Find messages containing TEXT (case-insensitive) and exit.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["thread", "message"])]
    pub search: Option<String>,
    /// Print the thread's messages and exit.
    #[arg(long, requires = "thread", conflicts_with = "message")]
    pub show: bool,
    /// Turn the thread into a task ("do what we discussed"); prints its id and exits.
    #[arg(long, requires = "thread", conflicts_with = "message")]
    pub to_task: bool,
    /// Delete the thread and its messages for good (a reply still running is cancelled).
    #[arg(long, requires = "thread", conflicts_with_all = ["message", "to_task", "show"])]
    pub delete: bool,
    /// What the task (or the reply type of a new thread) is: review, bug_fix... (default:
    /// code_analysis for a thread, the thread's type for a task).
    #[arg(long = "type", value_name = "TYPE", value_parser = EnumArg::<TaskType>::new())]
    pub task_type: Option<TaskType>,
    /// With --to-task: what to do, after the conversation (default: what was agreed).
    #[arg(long, value_name = "TEXT", requires = "to_task")]
    pub instruction: Option<String>,
    /// A new thread's title (default: its first message's first line).
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// A new thread's context, such as repo=/src/app (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_context)]
    pub context: Vec<(String, String)>,
    /// A new thread about this task (its prompt and result open the history).
    #[arg(long, value_name = "TASK_ID")]
    pub about_task: Option<String>,
}

/// Runs `supervisor chat`.
pub async fn run(args: ChatArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = connect(global).await?;
    let mut chat = client.chat_service();
    if args.list {
        return list(&mut chat, global.output).await;
    }
    if let Some(text) = &args.search {
        return search(&mut chat, text, global.output).await;
    }
    if let (true, Some(id)) = (args.delete, &args.thread) {
        let gone = chat
            .delete_thread(DeleteThreadRequest { id: id.clone() })
            .await?
            .into_inner();
        let mut line = format!(
            "deleted thread {id} and its {} messages",
            gone.messages_deleted
        );
        if !gone.cancelled_task_id.is_empty() {
            line.push_str(&format!(
                "; cancelled its running reply (task {})",
                gone.cancelled_task_id
            ));
        }
        print_line(&line)?;
        return Ok(());
    }
    let thread = match &args.thread {
        Some(id) => chat
            .get_thread(GetThreadRequest { id: id.clone() })
            .await?
            .into_inner(),
        None => {
            let context = context_map(args.context.clone()).map_err(anyhow::Error::msg)?;
            chat.create_thread(CreateThreadRequest {
                title: args.title.clone().unwrap_or_default(),
                r#type: args.task_type.map_or(0, |t| t as i32),
                context,
                about_task_id: args.about_task.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await?
            .into_inner()
        }
    };
    if args.show {
        let shown = thread.messages.len() as u64;
        if shown < thread.message_count {
            eprintln!(
                "(the newest {shown} of {} messages; the others are too many for one answer)",
                thread.message_count
            );
        }
        for m in &thread.messages {
            print_message(m)?;
        }
        return Ok(());
    }
    if args.to_task {
        let converted = chat
            .convert_thread(ConvertThreadRequest {
                thread_id: thread.id.clone(),
                r#type: args.task_type.map_or(0, |t| t as i32),
                instruction: args.instruction.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let task = converted.task.context("the server started no task")?;
        print_line(&task.id)?;
        return Ok(());
    }
    let mut session = Session {
        chat,
        client,
        thread: thread.id.clone(),
        last_seq: thread.messages.last().map_or(0, |m| m.seq),
    };
    if let Some(text) = &args.message {
        let replied = session.turn(text).await?;
        return Exit::for_ending(!replied, false);
    }
    session.repl(&thread).await
}

/// One conversation as the command follows it.
struct Session {
    chat: ChatServiceClient<Transport>,
    client: Client,
    thread: String,
    /// The last message printed.
    last_seq: u64,
}

impl Session {
    async fn repl(&mut self, thread: &v1::Thread) -> anyhow::Result<()> {
        let interactive = std::io::stdin().is_terminal();
        if interactive {
            eprintln!(
                "thread {} ({} messages). Enter sends; end a line with \\ to go on; /task [TYPE] makes it a task; /quit leaves.",
                thread.id, thread.message_count
            );
            for m in &thread.messages {
                print_message(m)?;
            }
        } else {
            eprintln!("thread {}", thread.id);
        }
        if !thread.open_turn_task_id.is_empty() {
            self.follow_reply(&thread.open_turn_task_id).await?;
        }
        loop {
            let Some(text) = read_message(interactive).await? else {
                return Ok(());
            };
            let text = text.trim_end().to_string();
            if text.trim().is_empty() {
                continue;
            }
            match text.trim() {
                "/quit" | "/exit" => return Ok(()),
                cmd if cmd == "/task" || cmd.starts_with("/task ") => {
                    let kind = cmd.trim_start_matches("/task").trim();
                    let task_type = if kind.is_empty() {
                        0
                    } else {
                        match TaskType::from_name(kind) {
                            Ok(t) => t as i32,
                            Err(e) => {
                                eprintln!("{e}");
                                continue;
                            }
                        }
                    };
                    let converted = self
                        .chat
                        .convert_thread(ConvertThreadRequest {
                            thread_id: self.thread.clone(),
                            r#type: task_type,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    if let Some(task) = converted.task {
                        eprintln!(
                            "task {} started; supervisor task watch {}",
                            task.id, task.id
                        );
                    }
                    continue;
                }
                _ => {}
            }
            // A reply that failed was said so; a message the node refused is said now; the
            // conversation goes on either way.
            if let Err(e) = self.turn(&text).await {
                go_on_after(e)?;
            }
        }
    }

    /// Posts `text` and prints its reply as it is written.
    async fn turn(&mut self, text: &str) -> anyhow::Result<bool> {
        let posted = self
            .chat
            .post_message(PostMessageRequest {
                thread_id: self.thread.clone(),
                text: text.to_string(),
            })
            .await?
            .into_inner();
        let message = posted.message.context("the server returned no message")?;
        self.last_seq = message.seq;
        if posted.omitted_messages > 0 {
            eprintln!(
                "({} earlier messages left out of this reply's prompt to fit the context window)",
                posted.omitted_messages
            );
        }
        self.follow_reply(&message.task_id).await
    }

    /// Follows the thread until the reply of `task` arrives, printing its pieces as
    /// they come; resumes after a break.
    async fn follow_reply(&mut self, task: &str) -> anyhow::Result<bool> {
        let mut shown = Shown::default();
        let mut broken_since: Option<Instant> = None;
        loop {
            let stream = self
                .chat
                .watch_thread(WatchThreadRequest {
                    thread_id: self.thread.clone(),
                    after_seq: self.last_seq,
                })
                .await;
            // What ended this stream; a clean end (the node is leaving) is a break like
            // any other.
            let broke = match stream {
                Err(status) => status,
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.next().await {
                            None => break tonic::Status::unavailable("the node ended the stream"),
                            Some(Err(status)) => break status,
                            Some(Ok(event)) => {
                                broken_since = None;
                                if let Some(replied) = self.on_event(event, task, &mut shown)? {
                                    return Ok(replied);
                                }
                            }
                        }
                    }
                }
            };
            wait_or_give_up(&mut broken_since, &broke, &self.client).await?;
        }
    }

    /// What one event of the thread means while waiting for the reply of `task`: its
    /// pieces are printed as they come; `Some(whether it succeeded)` once it arrived.
    fn on_event(
        &mut self,
        event: v1::ThreadEvent,
        task: &str,
        shown: &mut Shown,
    ) -> anyhow::Result<Option<bool>> {
        match event.event {
            Some(Event::Delta(d)) if d.task_id == task => shown.delta(&d)?,
            Some(Event::Turn(t)) if t.task_id == task => {
                let status = TaskStatus::try_from(t.status).unwrap_or_default();
                if matches!(status, TaskStatus::RetryWait) {
                    eprintln!("\n({})", t.message);
                }
            }
            Some(Event::Message(m)) => {
                self.last_seq = m.seq;
                let reply = m.role == ThreadRole::Assistant as i32 && m.task_id == task;
                if !reply {
                    return Ok(None);
                }
                if m.status == TaskStatus::Succeeded as i32 {
                    // What the stream did not show; all of it when what it showed is not
                    // how the reply begins (another attempt's text).
                    match m.text.strip_prefix(shown.text.as_str()) {
                        Some(rest) => print_stdout(rest)?,
                        None => {
                            if !shown.text.is_empty() {
                                eprintln!("\n(the reply, as its last attempt wrote it:)");
                            }
                            print_stdout(&m.text)?;
                        }
                    }
                    if !m.text.ends_with('\n') {
                        print_stdout("\n")?;
                    }
                    return Ok(Some(true));
                }
                eprintln!(
                    "\n(no reply: the turn {}: {})",
                    TaskStatus::name_of(m.status),
                    m.error
                );
                return Ok(Some(false));
            }
            _ => {}
        }
        Ok(None)
    }
}

/// What of the open reply was printed: the lease of its attempt and the text (from the
/// attempt's offset 0, so its length in bytes is where the next piece must start).
#[derive(Default)]
struct Shown {
    lease: u64,
    text: String,
}

impl Shown {
    fn delta(&mut self, d: &v1::ReplyDelta) -> anyhow::Result<()> {
        if d.lease < self.lease {
            // An earlier attempt's piece, sent again by a resumed watch.
            return Ok(());
        }
        if d.lease > self.lease {
            if !self.text.is_empty() {
                eprintln!("\n(attempt {} starts the reply over)", d.attempt);
            }
            self.lease = d.lease;
            self.text.clear();
        }
        let held = self.text.len() as u64;
        let end = d.offset + d.text.len() as u64;
        if end <= held || d.offset > held {
            return Ok(());
        }
        let skip = usize::try_from(held - d.offset).unwrap_or(usize::MAX);
        if let Some(new) = d.text.get(skip..) {
            print_stdout(new)?;
            self.text.push_str(new);
        }
        Ok(())
    }
}

/// In the REPL, after a call failed: a refusal of this message or command (bad input, a
/// turn still running, an unknown thread) is printed and the session goes on; anything
/// else ends it.
fn go_on_after(e: anyhow::Error) -> anyhow::Result<()> {
    let refused = e
        .chain()
        .find_map(|c| c.downcast_ref::<tonic::Status>())
        .map(|s| {
            matches!(
                s.code(),
                tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::ResourceExhausted
            )
            .then(|| s.message().to_string())
        });
    match refused {
        Some(Some(message)) => {
            eprintln!("({message})");
            Ok(())
        }
        _ => Err(e),
    }
}

/// After a broken watch: waits a second and lets the caller try again, for at most
/// [`RESUME_FOR`] of breaks in a row.
async fn wait_or_give_up(
    broken_since: &mut Option<Instant>,
    status: &tonic::Status,
    client: &Client,
) -> anyhow::Result<()> {
    let retryable = matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    );
    if !retryable {
        bail!("{}", status.message());
    }
    let since = *broken_since.get_or_insert_with(Instant::now);
    if since.elapsed() > RESUME_FOR {
        bail!(
            "lost the node at {} for {} s: {}; the reply goes on: `supervisor chat <thread> --show` shows it",
            client.addr(),
            RESUME_FOR.as_secs(),
            status.message()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Reads one message from standard input (lines ending in `\` go on), `None` at its end.
async fn read_message(interactive: bool) -> anyhow::Result<Option<String>> {
    tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        let mut text = String::new();
        loop {
            if interactive {
                eprint!("{}", if text.is_empty() { "> " } else { ". " });
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                return Ok(if text.is_empty() { None } else { Some(text) });
            }
            let line = line.trim_end_matches(['\n', '\r']);
            match line.strip_suffix('\\') {
                Some(part) => {
                    text.push_str(part);
                    text.push('\n');
                }
                None => {
                    text.push_str(line);
                    return Ok(Some(text));
                }
            }
        }
    })
    .await
    .context("reading standard input")?
}

fn print_message(m: &v1::ThreadMessage) -> anyhow::Result<()> {
    let who = if m.role == ThreadRole::User as i32 {
        format!("you ({})", m.author)
    } else if m.status == TaskStatus::Succeeded as i32 {
        format!("agent ({})", m.author)
    } else {
        format!("agent: no reply ({})", m.error)
    };
    print_line(&format!("#{} {who}:", m.seq))?;
    print_stdout(&m.text)?;
    if !m.text.ends_with('\n') {
        print_stdout("\n")?;
    }
    Ok(())
}

async fn list(chat: &mut ChatServiceClient<Transport>, output: OutputFormat) -> anyhow::Result<()> {
    let page = chat
        .list_threads(ListThreadsRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    if output == OutputFormat::Json {
        let rows: Vec<serde_json::Value> = page
            .threads
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id,
                    "title": t.title,
                    "messages": t.message_count,
                    "open_turn": t.open_turn_task_id,
                })
            })
            .collect();
        print_json(&rows)?;
        return Ok(());
    }
    for t in &page.threads {
        let open = if t.open_turn_task_id.is_empty() {
            ""
        } else {
            " (replying)"
        };
        print_line(&format!(
            "{}  {:>4} messages  {}{open}",
            t.id, t.message_count, t.title
        ))?;
    }
    Ok(())
}

async fn search(
    chat: &mut ChatServiceClient<Transport>,
    text: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let found = chat
        .search_threads(SearchThreadsRequest {
            query: text.to_string(),
            limit: 100,
        })
        .await?
        .into_inner();
    if output == OutputFormat::Json {
        let rows: Vec<serde_json::Value> = found
            .hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "thread": h.thread_id,
                    "title": h.title,
                    "seq": h.message.as_ref().map_or(0, |m| m.seq),
                    "excerpt": h.excerpt,
                })
            })
            .collect();
        print_json(&rows)?;
    } else {
        for h in &found.hits {
            let seq = h.message.as_ref().map_or(0, |m| m.seq);
            print_line(&format!(
                "{} #{seq} {}: {}",
                h.thread_id, h.title, h.excerpt
            ))?;
        }
    }
    if found.truncated {
        eprintln!("(searched the newest 1000 threads only)");
    }
    Ok(())
}
