//! What following an event log (`task watch`, `workflow watch`) shares: the way events
//! are shown, and the size of the terminal a live view draws on.

use std::{
    io::{self, IsTerminal as _},
    time::Duration,
};

use crate::commands::output::OutputFormat;

/// How often the live display is redrawn.
pub const TICK: Duration = Duration::from_millis(100);
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

/// The terminal's width in columns (`$COLUMNS`, else 80).
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|cols| cols.trim().parse::<usize>().ok())
        .filter(|cols| *cols >= 20)
        .unwrap_or(80)
}

/// The terminal's height in lines (`$LINES`, else 24).
pub fn terminal_height() -> usize {
    std::env::var("LINES")
        .ok()
        .and_then(|lines| lines.trim().parse::<usize>().ok())
        .filter(|lines| *lines >= 5)
        .unwrap_or(24)
}
