//! Following an event log to its end, for `task watch` and `workflow watch` (and their
//! `--wait`/`--watch` forms): one loop that shows each event on a [`View`], redraws a
//! live view on a tick, and stops at Ctrl-C with a hint to resume. The views themselves
//! are the subjects' (`task::progress`, `workflow::progress`).

use std::{
    io::{self, IsTerminal as _},
    time::{Duration, SystemTime},
};

use futures::{Stream, StreamExt as _};
use supervisor_client::ClientError;
use supervisor_proto::v1::{TaskEvent, WorkflowEvent};

use crate::commands::{
    EXIT_INTERRUPTED, Exit,
    output::{OutputFormat, print_stderr_line},
};

/// How often the live display is redrawn.
const TICK: Duration = Duration::from_millis(100);
/// Spinner frames of the live display.
pub const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// How a watch shows the events (of a task in `task::progress`, of a workflow run in
/// `workflow::progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Redrawn in place, with lines printed above (stdout is a terminal): a task's
    /// status line under its output text and activity, a run's steps under its events.
    Live,
    /// One line per event (a task's activity included, its output as `  | `-prefixed
    /// lines) (stdout is not a terminal).
    Plain,
    /// One JSON object per event and line.
    JsonLines,
    /// Nothing until the end (the caller prints the final task or run).
    Quiet,
}

impl WatchMode {
    /// The mode of a watch printing in `output`: JSON lines, or text shown live on a
    /// terminal and as plain lines otherwise.
    pub fn for_output(output: OutputFormat) -> Self {
        match output {
            OutputFormat::Json => Self::JsonLines,
            OutputFormat::Text if io::stdout().is_terminal() => Self::Live,
            OutputFormat::Text => Self::Plain,
        }
    }
}

/// An event of a followed log: it has a sequence number to resume after.
pub trait Event {
    /// Its position in the log.
    fn seq(&self) -> u64;
}

impl Event for TaskEvent {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Event for WorkflowEvent {
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// Shows the events of a followed log in one [`WatchMode`].
pub trait View {
    /// The events it shows.
    type Event: Event;

    /// The mode it shows them in.
    fn mode(&self) -> WatchMode;

    /// Shows one event.
    fn event(&mut self, event: &Self::Event, now: SystemTime) -> io::Result<()>;

    /// Redraws the live view (a no-op in other modes).
    fn redraw(&mut self, now: SystemTime) -> io::Result<()>;

    /// Erases the live view if it is on screen.
    fn clear(&mut self) -> io::Result<()>;
}

/// What a watch follows, for the hint printed when Ctrl-C stops it.
#[derive(Debug, Clone, Copy)]
pub struct Followed<'a> {
    /// What it is: `task` or `workflow run`.
    pub noun: &'static str,
    /// The command group whose `watch` resumes it: `task` or `workflow`.
    pub group: &'static str,
    /// Its id.
    pub id: &'a str,
    /// The sequence number the watch started after.
    pub after_seq: u64,
}

/// Shows `events` on `view` until the log ends (the server closes it after the terminal
/// event). Ctrl-C stops the watch (not what it follows) with exit code 130, after a
/// hint on how to resume it; a broken stream clears the live view and returns its
/// error.
pub async fn follow<V, S>(mut events: S, view: &mut V, followed: Followed<'_>) -> anyhow::Result<()>
where
    V: View,
    S: Stream<Item = Result<V::Event, ClientError>> + Unpin,
{
    let live = view.mode() == WatchMode::Live;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let interrupted = ctrl_c();
    tokio::pin!(interrupted);
    let mut last_seq = followed.after_seq;

    loop {
        tokio::select! {
            item = events.next() => match item {
                Some(Ok(event)) => {
                    last_seq = last_seq.max(event.seq());
                    view.event(&event, SystemTime::now())?;
                }
                Some(Err(err)) => {
                    view.clear()?;
                    return Err(err.into());
                }
                None => return Ok(()),
            },
            _ = ticker.tick(), if live => {
                view.redraw(SystemTime::now())?;
            }
            () = &mut interrupted => {
                view.clear()?;
                let Followed { noun, group, id, .. } = followed;
                print_stderr_line(&format!(
                    "interrupted: {noun} {id} keeps running; resume with \
                     `supervisor {group} watch {id} --after-seq {last_seq}`"
                ));
                return Err(Exit { code: EXIT_INTERRUPTED, message: None }.into());
            }
        }
    }
}

/// Resolves at the first Ctrl-C; never when this process cannot catch signals, so that
/// a watch goes on without.
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
