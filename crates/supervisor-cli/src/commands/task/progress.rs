//! Following a task: a live one-line display on a terminal, plain lines when piped,
//! JSON lines with `--output json`.

use std::{
    io::{self, Write},
    time::{Instant, SystemTime},
};

use supervisor_client::Client;
use supervisor_proto::{
    convert::EnumName,
    v1::{Task, TaskEvent, TaskEventType, TaskStatus},
};

use super::{
    json::EventJson,
    text::{attempts, outcome_line},
};
use crate::commands::{
    follow::{Followed, SPINNER, View, WatchMode, follow},
    output::{
        Layout, elapsed, escape, escape_line, rfc3339, single_line, system_time, truncate, width,
    },
    terminal::{SizeSource, rows},
};

/// Moves to the start of the line and erases it.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// What erases a status line `line_width` columns wide, drawn last and not ended by a
/// newline, from a terminal now `width` columns wide: the rows it wraps onto (after the
/// window shrank, say) are erased too.
fn erase_status_line(line_width: usize, width: usize) -> String {
    match rows(line_width, width) {
        1 => CLEAR_LINE.to_owned(),
        n => format!("\r\x1b[{}A\x1b[J", n - 1),
    }
}

/// What a watch ended with.
#[derive(Debug)]
pub struct Watched {
    /// The task as it ended, read after its terminal event.
    pub task: Task,
    /// How many OUTPUT events were shown.
    pub output_events: u64,
}

/// Follows task `id`'s events after `after_seq` until its terminal event, showing them
/// in `mode` on stdout, then reads the finished task. Ctrl-C stops the watch (not the
/// task) with exit code 130.
pub async fn watch(
    client: &Client,
    id: &str,
    after_seq: u64,
    mode: WatchMode,
) -> anyhow::Result<Watched> {
    let initial = client.get(id).await?;
    let mut display = Display::new(mode, io::stdout(), &initial, SizeSource::Terminal);
    let followed = Followed {
        noun: "task",
        group: "task",
        id,
        after_seq,
    };
    follow(client.follow(id, after_seq), &mut display, followed).await?;
    display.flush_output()?;
    let task = client.get(id).await?;
    display.finish(&task)?;
    Ok(Watched {
        output_events: display.output_events,
        task,
    })
}

/// Splits streamed text into complete lines, keeping the unfinished end.
#[derive(Debug, Default)]
struct LineBuffer {
    partial: String,
}

impl LineBuffer {
    /// Adds text; returns the lines it completed, without their line ends.
    fn push(&mut self, text: &str) -> Vec<String> {
        self.partial.push_str(text);
        let mut lines = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            lines.push(line.trim_end_matches(['\n', '\r']).to_owned());
        }
        lines
    }

    /// The unfinished last line, if any, emptying the buffer.
    fn take_rest(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

/// What the live status line shows.
#[derive(Debug)]
struct LiveState {
    id: String,
    status: TaskStatus,
    attempt: u32,
    max_attempts: u32,
    message: String,
    created: Option<SystemTime>,
    started: Instant,
    frame: usize,
}

impl LiveState {
    /// The status line, escaped and cut to `width - 1` columns (so that it never wraps).
    fn line(&self, now: SystemTime, width: usize) -> String {
        let age = match self.created {
            Some(created) => now.duration_since(created).unwrap_or_default(),
            None => self.started.elapsed(),
        };
        let mut line = format!(
            "{} {}  {}  attempt {}  {}",
            SPINNER[self.frame % SPINNER.len()],
            escape_line(&self.id),
            self.status.name(),
            attempts(self.attempt, self.max_attempts),
            elapsed(age),
        );
        if !self.message.is_empty() {
            line.push_str("  ");
            line.push_str(&single_line(&self.message));
        }
        truncate(&line, width.saturating_sub(1))
    }
}

/// The plain line of an event:
/// `<seq> <rfc3339> <event_type> <status> attempt=<n> <message>`.
fn plain_event_line(event: &TaskEvent) -> String {
    let at = event.at.as_ref().map_or_else(|| "-".to_owned(), rfc3339);
    let line = format!(
        "{} {} {} {} attempt={} {}",
        event.seq,
        at,
        TaskEventType::name_of(event.r#type),
        TaskStatus::name_of(event.status),
        event.attempt,
        single_line(&event.message),
    );
    line.trim_end().to_owned()
}

/// The live display's line for an ACTIVITY event: `· <message>`, on one line.
fn activity_line(event: &TaskEvent) -> String {
    format!("· {}", single_line(event.message.trim()))
}

/// Shows events on `out` in one of the [`WatchMode`]s. Every line of text it writes is
/// escaped: the task's output as a [`Layout::Body`], everything else as one line.
struct Display<W: Write> {
    mode: WatchMode,
    out: W,
    lines: LineBuffer,
    state: LiveState,
    size: SizeSource,
    /// How wide the live status line on screen is, if one is.
    drawn: Option<usize>,
    output_events: u64,
}

impl<W: Write> Display<W> {
    fn new(mode: WatchMode, out: W, task: &Task, size: SizeSource) -> Self {
        Self {
            mode,
            out,
            lines: LineBuffer::default(),
            state: LiveState {
                id: task.id.clone(),
                status: task.status(),
                attempt: task.attempt,
                max_attempts: task.max_attempts,
                message: String::new(),
                created: task.created_at.as_ref().and_then(system_time),
                started: Instant::now(),
                frame: 0,
            },
            size,
            drawn: None,
            output_events: 0,
        }
    }

    /// Writes one line of text, escaped as `layout` says.
    fn write_line(&mut self, text: &str, layout: Layout) -> io::Result<()> {
        writeln!(self.out, "{}", escape(text, layout))
    }

    /// Prints lines of the task's output above the live status line.
    fn print_above(&mut self, lines: &[String], layout: Layout) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.clear()?;
        for line in lines {
            self.write_line(line, layout)?;
        }
        Ok(())
    }

    /// Prints the unfinished last line of output, if any.
    fn flush_output(&mut self) -> io::Result<()> {
        let Some(rest) = self.lines.take_rest() else {
            return Ok(());
        };
        match self.mode {
            WatchMode::Plain => self.write_line(&format!("  | {rest}"), Layout::Body),
            WatchMode::Live => self.print_above(&[rest], Layout::Body),
            WatchMode::JsonLines | WatchMode::Quiet => Ok(()),
        }
    }

    /// Replaces the status line with the task's outcome (text modes).
    fn finish(&mut self, task: &Task) -> io::Result<()> {
        match self.mode {
            WatchMode::Live => {
                self.clear()?;
                let mark = match task.status() {
                    TaskStatus::Succeeded => '✓',
                    TaskStatus::Failed | TaskStatus::Cancelled => '✗',
                    _ => '•',
                };
                self.write_line(&format!("{mark} {}", outcome_line(task)), Layout::Line)?;
            }
            WatchMode::Plain => self.write_line(&outcome_line(task), Layout::Line)?,
            WatchMode::JsonLines | WatchMode::Quiet => {}
        }
        self.out.flush()
    }
}

impl<W: Write> View for Display<W> {
    type Event = TaskEvent;

    fn mode(&self) -> WatchMode {
        self.mode
    }

    /// Shows one event.
    fn event(&mut self, event: &TaskEvent, now: SystemTime) -> io::Result<()> {
        let is_output = event.r#type() == TaskEventType::Output;
        if is_output {
            self.output_events += 1;
        }
        match self.mode {
            WatchMode::Quiet => Ok(()),
            WatchMode::JsonLines => {
                let line = serde_json::to_string(&EventJson::from(event))?;
                writeln!(self.out, "{line}")?;
                self.out.flush()
            }
            WatchMode::Plain => {
                if is_output {
                    for line in self.lines.push(&event.output) {
                        self.write_line(&format!("  | {line}"), Layout::Body)?;
                    }
                } else {
                    self.flush_output()?;
                    self.write_line(&plain_event_line(event), Layout::Line)?;
                }
                self.out.flush()
            }
            WatchMode::Live => {
                self.state.status = event.status();
                self.state.attempt = self.state.attempt.max(event.attempt);
                if is_output {
                    let lines = self.lines.push(&event.output);
                    self.print_above(&lines, Layout::Body)?;
                } else if event.r#type() == TaskEventType::Activity {
                    // What the agent did goes above the status line, which keeps the
                    // message of the last lifecycle event.
                    self.flush_output()?;
                    if !event.message.trim().is_empty() {
                        self.print_above(&[activity_line(event)], Layout::Line)?;
                    }
                } else {
                    self.flush_output()?;
                    self.state.message = event.message.clone();
                    if matches!(
                        event.r#type(),
                        TaskEventType::RetryScheduled | TaskEventType::Requeued
                    ) {
                        let note = format!(
                            "{} (attempt {}): {}",
                            TaskEventType::name_of(event.r#type),
                            event.attempt,
                            single_line(&event.message)
                        );
                        self.print_above(&[note], Layout::Line)?;
                    }
                }
                self.redraw(now)
            }
        }
    }

    /// Redraws the live status line (a no-op in other modes) at the terminal's width
    /// now, erasing the one drawn before, however many rows it has come to take.
    fn redraw(&mut self, now: SystemTime) -> io::Result<()> {
        if self.mode != WatchMode::Live {
            return Ok(());
        }
        self.state.frame = self.state.frame.wrapping_add(1);
        let width_now = self.size.get().width;
        let erase = match self.drawn.take() {
            Some(drawn) => erase_status_line(drawn, width_now),
            None => CLEAR_LINE.to_owned(),
        };
        let line = self.state.line(now, width_now);
        write!(self.out, "{erase}{line}")?;
        self.drawn = Some(width(&line));
        self.out.flush()
    }

    /// Erases the live status line if it is on screen.
    fn clear(&mut self) -> io::Result<()> {
        if let Some(drawn) = self.drawn.take() {
            let erase = erase_status_line(drawn, self.size.get().width);
            write!(self.out, "{erase}")?;
            self.out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use supervisor_proto::convert::timestamp_from_micros;

    use super::*;
    use crate::commands::harness::{T0, at};
    use crate::commands::terminal::Size;

    fn event(seq: u64, kind: TaskEventType, status: TaskStatus, text: &str) -> TaskEvent {
        let (message, output) = if kind == TaskEventType::Output {
            (String::new(), text.to_owned())
        } else {
            (text.to_owned(), String::new())
        };
        TaskEvent {
            task_id: "t1".into(),
            seq,
            r#type: kind as i32,
            status: status as i32,
            attempt: 1,
            message,
            output,
            at: Some(timestamp_from_micros(T0 + seq as i64)),
            ..Default::default()
        }
    }

    fn task() -> Task {
        Task {
            id: "t1".into(),
            status: TaskStatus::Queued as i32,
            max_attempts: 3,
            created_at: Some(timestamp_from_micros(T0)),
            ..Default::default()
        }
    }

    fn now() -> SystemTime {
        at(T0 + 12_300_000)
    }

    const SCREEN: SizeSource = SizeSource::Fixed(Size {
        width: 80,
        height: 24,
    });

    #[test]
    fn line_buffer_splits_streamed_text() {
        let mut lines = LineBuffer::default();
        assert!(lines.push("Hel").is_empty());
        assert_eq!(lines.push("lo\nwor"), ["Hello"]);
        assert_eq!(lines.push("ld\r\n\nend"), ["world", ""]);
        assert_eq!(lines.take_rest().as_deref(), Some("end"));
        assert_eq!(lines.take_rest(), None);
    }

    #[test]
    fn plain_mode_prints_event_lines_and_prefixed_output() {
        use {TaskEventType as E, TaskStatus as S};
        let mut out = Vec::new();
        let mut display = Display::new(WatchMode::Plain, &mut out, &task(), SCREEN);
        for e in [
            event(1, E::Submitted, S::Queued, ""),
            event(2, E::Started, S::Running, "on node n1"),
            event(3, E::Output, S::Running, "first line\nsec"),
            event(4, E::Output, S::Running, "ond"),
            event(5, E::Succeeded, S::Succeeded, "done"),
        ] {
            display.event(&e, now()).expect("write");
        }
        let mut done = task();
        done.status = S::Succeeded as i32;
        done.attempt = 1;
        display.finish(&done).expect("write");
        assert_eq!(display.output_events, 2);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "1 2023-11-14T22:13:20.000001Z submitted queued attempt=1\n\
             2 2023-11-14T22:13:20.000002Z started running attempt=1 on node n1\n  \
             | first line\n  \
             | second\n\
             5 2023-11-14T22:13:20.000005Z succeeded succeeded attempt=1 done\n\
             task t1 succeeded (1 attempt)\n"
        );
    }

    #[test]
    fn plain_mode_prints_activity_like_other_events() {
        use {TaskEventType as E, TaskStatus as S};
        let mut out = Vec::new();
        let mut display = Display::new(WatchMode::Plain, &mut out, &task(), SCREEN);
        for e in [
            event(3, E::Output, S::Running, "partial"),
            event(
                4,
                E::Activity,
                S::Running,
                "routed to claude (fastest)\np50 800ms",
            ),
        ] {
            display.event(&e, now()).expect("write");
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "  | partial\n\
             4 2023-11-14T22:13:20.000004Z activity running attempt=1 \
             routed to claude (fastest) p50 800ms\n"
        );
    }

    #[test]
    fn live_mode_prints_activity_above_the_status_line() {
        use {TaskEventType as E, TaskStatus as S};
        let mut out = Vec::new();
        let mut display = Display::new(WatchMode::Live, &mut out, &task(), SCREEN);
        for e in [
            event(2, E::Started, S::Running, "on n1"),
            event(3, E::Activity, S::Running, "tool read_file src/lib.rs"),
            event(4, E::Activity, S::Running, "  "),
        ] {
            display.event(&e, now()).expect("write");
        }
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains(&format!("{CLEAR_LINE}· tool read_file src/lib.rs\n")),
            "{text:?}"
        );
        assert_eq!(
            text.matches("· ").count(),
            1,
            "blank activity is skipped: {text:?}"
        );
        // The status line still shows the last lifecycle message.
        let last_line = text.rsplit(CLEAR_LINE).next().unwrap_or_default();
        assert!(
            last_line.ends_with("t1  running  attempt 1/3  12.3s  on n1"),
            "{text:?}"
        );
    }

    #[test]
    fn json_mode_prints_one_event_per_line() {
        let mut out = Vec::new();
        let mut display = Display::new(WatchMode::JsonLines, &mut out, &task(), SCREEN);
        let e = event(1, TaskEventType::Submitted, TaskStatus::Queued, "");
        display.event(&e, now()).expect("write");
        display.event(&e, now()).expect("write");
        display.finish(&task()).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let value: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(value["type"], "submitted");
        assert_eq!(value["seq"], 1);
    }

    #[test]
    fn live_mode_redraws_one_line_and_prints_output_above() {
        use {TaskEventType as E, TaskStatus as S};
        let mut out = Vec::new();
        let mut display = Display::new(WatchMode::Live, &mut out, &task(), SCREEN);
        display
            .event(&event(2, E::Started, S::Running, "on n1"), now())
            .expect("write");
        display
            .event(&event(3, E::Output, S::Running, "hello\n"), now())
            .expect("write");
        let mut failed = task();
        failed.status = S::Failed as i32;
        failed.attempt = 3;
        failed.error = "boom".into();
        display.finish(&failed).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let status = "t1  running  attempt 1/3  12.3s  on n1";
        assert!(text.starts_with(CLEAR_LINE), "{text:?}");
        assert!(text.contains(status), "{text:?}");
        assert!(text.contains(&format!("{CLEAR_LINE}hello\n")), "{text:?}");
        assert!(
            text.ends_with(&format!(
                "{CLEAR_LINE}✗ task t1 failed after 3 attempts: boom\n"
            )),
            "{text:?}"
        );
    }

    #[test]
    fn status_line_is_cut_to_the_width() {
        let state = LiveState {
            id: "t1".into(),
            status: TaskStatus::Running,
            attempt: 2,
            max_attempts: 0,
            message: "a very long message\nwith a line break".into(),
            created: Some(at(T0)),
            started: Instant::now(),
            frame: 0,
        };
        let line = state.line(now(), 200);
        assert_eq!(
            line,
            "⠋ t1  running  attempt 2  12.3s  a very long message with a line break"
        );
        let cut = state.line(now(), 30);
        assert_eq!(cut.chars().count(), 29);
        assert!(cut.ends_with('…'));
    }

    /// `text` without the display's own terminal sequences: what is left must hold no
    /// ESC.
    fn without_own_sequences(text: &str) -> String {
        let mut rest = text.replace(CLEAR_LINE, "");
        for n in 1..10 {
            rest = rest.replace(&format!("\r\x1b[{n}A\x1b[J"), "");
        }
        rest
    }

    #[test]
    fn hostile_text_is_shown_escaped_in_every_mode() {
        use {TaskEventType as E, TaskStatus as S};
        let events = [
            event(2, E::Started, S::Running, "on n1\x1b[2J"),
            event(3, E::Activity, S::Running, "tool \u{202e}cod.exe"),
            event(4, E::Output, S::Running, "\x1b]0;pwned\x07hello\tworld\n"),
            event(5, E::RetryScheduled, S::RetryWait, "bad\x1b[31m"),
        ];
        let mut failed = task();
        failed.status = S::Failed as i32;
        failed.error = "boom\n\x1b[1mbold".into();
        for mode in [WatchMode::Live, WatchMode::Plain] {
            let mut out = Vec::new();
            let mut display = Display::new(mode, &mut out, &task(), SCREEN);
            for e in &events {
                display.event(e, now()).expect("write");
            }
            display.finish(&failed).expect("write");
            let text = String::from_utf8(out).expect("utf-8");
            let rest = without_own_sequences(&text);
            for raw in ['\x1b', '\x07', '\u{202e}'] {
                assert!(!rest.contains(raw), "{mode:?}: {raw:?} in {text:?}");
            }
            for shown in [
                "\\e]0;pwned\\u{7}hello\tworld",
                "\\u{202e}cod.exe",
                "boom\\n\\e[1mbold",
            ] {
                assert!(text.contains(shown), "{mode:?}: {shown:?} in {text:?}");
            }
        }
    }

    #[test]
    fn the_status_line_uses_the_whole_width_and_follows_a_resize() {
        use {TaskEventType as E, TaskStatus as S};
        let size = |width| SizeSource::Fixed(Size { width, height: 24 });
        let message = format!("attempt 1 of 3 started on node {}", "n".repeat(100));
        let mut out = Vec::new();
        let mut display = Display::new(WatchMode::Live, &mut out, &task(), size(220));
        display
            .event(&event(2, E::Started, S::Running, &message), now())
            .expect("write");
        let drawn = display.drawn.expect("drawn");
        assert!(drawn > 80 && drawn < 220, "not cut at 80 columns: {drawn}");

        // The window shrinks to 50 columns: the line on screen now wraps onto
        // ceil(drawn / 50) rows, all of which the next redraw erases; the new line fits.
        display.size = size(50);
        display.redraw(now()).expect("write");
        let rows = drawn.div_ceil(50);
        assert!(rows > 1);
        let after = display.drawn.expect("drawn");
        assert!(after <= 49, "{after}");
        display.redraw(now()).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let erase = format!("\r\x1b[{}A\x1b[J", rows - 1);
        let (before, redrawn) = text.split_once(&erase).expect("erases the wrapped rows");
        assert!(
            before.contains(&message),
            "the full message at 220: {before:?}"
        );
        // At 50 columns, one row: the following redraw clears one line.
        assert!(redrawn.contains(CLEAR_LINE), "{redrawn:?}");
        assert!(redrawn.ends_with('…'), "{redrawn:?}");
    }
}
