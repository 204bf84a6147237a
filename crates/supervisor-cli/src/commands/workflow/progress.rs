//! Following a workflow run: on a terminal, its steps redrawn in place under the events;
//! piped, one plain line per event; with `--output json`, one JSON object per event.
//!
//! The live view, one line per step:
//!
//! ```text
//! 22:13:21 ● step analyse succeeded (task 0190…)
//! ⠹ fix-and-review 0190a5b4-…  running  1/4 steps  12.3s
//!   ● analyse   …3f9a2c1d  8.4s
//!   ◐ fix       …8b7e6d5c  3.9s
//!   ○ review
//!   ○ refactor
//! ```

use std::{
    fmt::Write as _,
    io::{self, Write},
    time::{Instant, SystemTime},
};

use supervisor_client::Client;
use supervisor_proto::v1::{RunStatus, StepRun, WorkflowEvent, WorkflowRun};

use super::{
    json::WorkflowEventJson,
    text::{
        run_outcome_line, run_status_name, short_task_id, step_counts, step_has_ended, step_symbol,
    },
};
use crate::commands::{
    follow::{Followed, SPINNER, View, WatchMode, follow},
    output::{
        elapsed, escape_line, rfc3339, rfc3339_seconds, single_line, system_time, truncate, width,
    },
    terminal::{Size, SizeSource, total_rows},
};

/// Moves the cursor up `n` rows, to the start of the row, and erases to the end of the
/// screen.
fn clear_lines(n: usize) -> String {
    format!("\x1b[{n}A\r\x1b[J")
}

/// Follows workflow run `id`'s events after `after_seq` until the run ends, showing
/// them in `mode` on stdout, then reads the ended run. Events before the
/// `hide_retries`-th `run_retried` one are not shown (they are the attempts before a
/// retry); 0 shows them all. Ctrl-C stops the watch (not the run) with exit code 130.
pub async fn watch_run(
    client: &Client,
    id: &str,
    after_seq: u64,
    hide_retries: u32,
    mode: WatchMode,
) -> anyhow::Result<WorkflowRun> {
    let initial = client.get_workflow(id).await?;
    let mut progress = Progress::new(mode, io::stdout(), &initial, SizeSource::Terminal);
    progress.hidden_retries = hide_retries;
    let followed = Followed {
        noun: "workflow run",
        group: "workflow",
        id,
        after_seq,
    };
    follow(
        client.follow_workflow(id, after_seq),
        &mut progress,
        followed,
    )
    .await?;
    let run = client.get_workflow(id).await?;
    progress.finish(&run, SystemTime::now())?;
    Ok(run)
}

/// The plain line of a workflow event: `<seq> <rfc3339> <kind> <step> <message>`, with
/// `-` for a run event's step; escaped.
pub fn plain_event_line(event: &WorkflowEvent) -> String {
    let at = event.at.as_ref().map_or_else(|| "-".to_owned(), rfc3339);
    let step = if event.step.is_empty() {
        "-"
    } else {
        event.step.as_str()
    };
    let line = format!(
        "{} {at} {} {step} {}",
        event.seq,
        event.kind,
        single_line(&event.message),
    );
    escape_line(line.trim_end()).into_owned()
}

/// The symbol of an event in the live view: its step's new state, or the run's.
fn event_symbol(kind: &str) -> char {
    match kind {
        "run_started" => '▶',
        "run_retried" => '↻',
        "run_succeeded" => '✓',
        "run_failed" => '✗',
        "run_cancelled" => '⊘',
        _ => match kind.strip_prefix("step_").map(step_state_after) {
            Some(Some(state)) => step_symbol(state),
            _ => '·',
        },
    }
}

/// The state a step is in after an event `step_<what>`.
fn step_state_after(what: &str) -> Option<&'static str> {
    match what {
        "started" => Some("running"),
        "succeeded" => Some("succeeded"),
        "failed" => Some("failed"),
        "cancelled" => Some("cancelled"),
        "skipped" => Some("skipped"),
        _ => None,
    }
}

/// The live view's line for an event: `22:13:21 ● step analyse succeeded (task …)`
/// (UTC time of day); escaped.
fn live_event_line(event: &WorkflowEvent) -> String {
    let at = event.at.as_ref().map(rfc3339_seconds);
    let time = at
        .as_deref()
        .and_then(|at| at.get(11..19))
        .unwrap_or("--:--:--");
    let message = single_line(event.message.trim());
    let text = match (message.is_empty(), event.step.is_empty()) {
        (false, _) => message,
        (true, true) => event.kind.clone(),
        (true, false) => format!("{} {}", event.kind, event.step),
    };
    escape_line(&format!("{time} {} {text}", event_symbol(&event.kind))).into_owned()
}

/// One step as the live view knows it.
#[derive(Debug, Clone, PartialEq)]
struct StepView {
    id: String,
    state: String,
    task_id: String,
    /// When its task started, if the watch saw it.
    started: Option<SystemTime>,
    /// When it ended, if the watch saw it.
    ended: Option<SystemTime>,
}

impl StepView {
    /// How long it ran (so far, while it runs), when the watch saw it start.
    fn elapsed(&self, now: SystemTime) -> Option<String> {
        let started = self.started?;
        let until = match self.ended {
            Some(ended) => ended,
            None if self.state == "running" => now,
            None => return None,
        };
        Some(elapsed(until.duration_since(started).unwrap_or_default()))
    }
}

/// A run as the live view knows it: the run read at the start, with the events since.
#[derive(Debug)]
struct RunView {
    id: String,
    name: String,
    status: i32,
    created: Option<SystemTime>,
    finished: Option<SystemTime>,
    /// When the watch began (for the run's age when it has no creation time).
    opened: Instant,
    steps: Vec<StepView>,
}

impl RunView {
    fn new(run: &WorkflowRun) -> Self {
        let mut view = Self {
            id: run.id.clone(),
            name: run.name.clone(),
            status: run.status,
            created: run.created_at.as_ref().and_then(system_time),
            finished: None,
            opened: Instant::now(),
            steps: Vec::with_capacity(run.steps.len()),
        };
        view.sync(run);
        view
    }

    /// Takes the states of `run` (read from the server), keeping the times seen.
    fn sync(&mut self, run: &WorkflowRun) {
        self.status = run.status;
        self.finished = run.finished_at.as_ref().and_then(system_time);
        for step in &run.steps {
            let view = self.step_mut(&step.id);
            view.state = step.state.clone();
            view.task_id = step.task_id.clone();
        }
    }

    /// The step `id`, added at the end if the run did not list it.
    fn step_mut(&mut self, id: &str) -> &mut StepView {
        let index = match self.steps.iter().position(|step| step.id == id) {
            Some(index) => index,
            None => {
                self.steps.push(StepView {
                    id: id.to_owned(),
                    state: "pending".to_owned(),
                    task_id: String::new(),
                    started: None,
                    ended: None,
                });
                self.steps.len() - 1
            }
        };
        &mut self.steps[index]
    }

    /// Applies an event. Unknown kinds change nothing.
    fn apply(&mut self, event: &WorkflowEvent) {
        let at = event.at.as_ref().and_then(system_time);
        match event.kind.as_str() {
            "run_started" => self.status = RunStatus::Running as i32,
            "run_succeeded" => self.end(RunStatus::Succeeded, at),
            "run_failed" => self.end(RunStatus::Failed, at),
            "run_cancelled" => self.end(RunStatus::Cancelled, at),
            "run_retried" => {
                // As the server does: failed, cancelled and skipped steps run again.
                self.status = RunStatus::Running as i32;
                self.finished = None;
                for step in &mut self.steps {
                    if matches!(step.state.as_str(), "failed" | "cancelled" | "skipped") {
                        step.state = "pending".to_owned();
                        step.task_id.clear();
                        step.started = None;
                        step.ended = None;
                    }
                }
            }
            kind => {
                let Some(state) = kind.strip_prefix("step_").and_then(step_state_after) else {
                    return;
                };
                if event.step.is_empty() {
                    return;
                }
                let step = self.step_mut(&event.step);
                step.state = state.to_owned();
                if !event.task_id.is_empty() {
                    step.task_id = event.task_id.clone();
                }
                if state == "running" {
                    step.started = at;
                    step.ended = None;
                } else {
                    step.ended = at;
                }
            }
        }
    }

    fn end(&mut self, status: RunStatus, at: Option<SystemTime>) {
        self.status = status as i32;
        self.finished = at;
    }

    /// The heading: `⠹ fix-and-review <id>  running  1/4 steps  12.3s`.
    fn header(&self, frame: usize, now: SystemTime) -> String {
        let age = match self.created {
            Some(created) => self
                .finished
                .unwrap_or(now)
                .duration_since(created)
                .unwrap_or_default(),
            None => self.opened.elapsed(),
        };
        let ended = self
            .steps
            .iter()
            .filter(|step| step_has_ended(&step.state))
            .count();
        let mut line = format!("{} ", SPINNER[frame % SPINNER.len()]);
        if !self.name.is_empty() {
            line.push_str(&self.name);
            line.push(' ');
        }
        let _ = write!(
            line,
            "{}  {}  {ended}/{} steps  {}",
            self.id,
            run_status_name(self.status),
            self.steps.len(),
            elapsed(age),
        );
        line
    }

    /// The lines of `steps` (indexes into `self.steps`): symbol, id, short task id and
    /// time, in aligned columns; escaped.
    fn step_lines(&self, steps: &[usize], now: SystemTime) -> Vec<String> {
        let id_width = steps
            .iter()
            .map(|&i| width(&escape_line(&self.steps[i].id)))
            .max()
            .unwrap_or(0);
        let task = |step: &StepView| {
            if step.task_id.is_empty() || step.state == "pending" {
                String::new()
            } else {
                short_task_id(&step.task_id)
            }
        };
        let task_width = steps
            .iter()
            .map(|&i| width(&escape_line(&task(&self.steps[i]))))
            .max()
            .unwrap_or(0);
        // Padded by display width: `format!`'s padding counts chars.
        let padded = |text: &str, to: usize| {
            let text = escape_line(text);
            let pad = to.saturating_sub(width(&text));
            format!("{text}{}", " ".repeat(pad))
        };
        steps
            .iter()
            .map(|&i| {
                let step = &self.steps[i];
                let line = format!(
                    "  {} {}  {}  {}",
                    step_symbol(&step.state),
                    padded(&step.id, id_width),
                    padded(&task(step), task_width),
                    step.elapsed(now).unwrap_or_default(),
                );
                line.trim_end().to_owned()
            })
            .collect()
    }

    /// The steps shown when at most `room` lines are free: all, or, when they do not
    /// fit, the most interesting ones (running, failed, cancelled, then pending, then
    /// skipped and succeeded) in run order, and the others counted on a last line.
    fn visible_steps(&self, room: usize) -> (Vec<usize>, Option<String>) {
        let all: Vec<usize> = (0..self.steps.len()).collect();
        if all.len() <= room {
            return (all, None);
        }
        let keep = room.saturating_sub(1);
        let interest = |state: &str| match state {
            "running" => 0,
            "failed" | "cancelled" => 1,
            "pending" => 2,
            "skipped" => 3,
            "succeeded" => 4,
            _ => 1,
        };
        let mut ranked = all;
        ranked.sort_by_key(|&i| interest(&self.steps[i].state));
        let (shown, hidden) = ranked.split_at(keep.min(ranked.len()));
        let mut shown = shown.to_vec();
        shown.sort_unstable();
        let hidden: Vec<_> = hidden
            .iter()
            .map(|&i| StepRun {
                id: self.steps[i].id.clone(),
                state: self.steps[i].state.clone(),
                ..Default::default()
            })
            .collect();
        let more = format!("  … {} more: {}", hidden.len(), step_counts(&hidden));
        (shown, Some(more))
    }

    /// The live block: the heading, then one line per step (as many as fit on
    /// `screen`), each escaped and cut to the screen's width less one column (so that
    /// none wraps).
    fn lines(&self, frame: usize, now: SystemTime, screen: Size) -> Vec<String> {
        let room = screen.height.saturating_sub(3).max(3);
        let (steps, more) = self.visible_steps(room);
        let mut lines = vec![self.header(frame, now)];
        lines.extend(self.step_lines(&steps, now));
        lines.extend(more);
        let max = screen.width.saturating_sub(1);
        lines
            .iter()
            .map(|line| truncate(&escape_line(line), max))
            .collect()
    }
}

/// Shows a run's events on `out` in one of the [`WatchMode`]s.
struct Progress<W: Write> {
    mode: WatchMode,
    out: W,
    view: RunView,
    screen: SizeSource,
    frame: usize,
    /// How wide each line of the live block on screen is (none: no block is).
    drawn: Vec<usize>,
    /// `run_retried` events still to come before events are shown.
    hidden_retries: u32,
}

impl<W: Write> Progress<W> {
    fn new(mode: WatchMode, out: W, run: &WorkflowRun, screen: SizeSource) -> Self {
        Self {
            mode,
            out,
            view: RunView::new(run),
            screen,
            frame: 0,
            drawn: Vec::new(),
            hidden_retries: 0,
        }
    }

    /// Replaces the live block with `above` (if any) and the block drawn anew at the
    /// terminal's size now, in one write.
    fn draw(&mut self, above: Option<&str>, now: SystemTime) -> io::Result<()> {
        self.frame = self.frame.wrapping_add(1);
        let screen = self.screen.get();
        let lines = self.view.lines(self.frame, now, screen);
        let mut text = self.clear_text(screen.width);
        if let Some(above) = above {
            text.push_str(&truncate(
                &escape_line(above),
                screen.width.saturating_sub(1),
            ));
            text.push('\n');
        }
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        self.out.write_all(text.as_bytes())?;
        self.drawn = lines.iter().map(|line| width(line)).collect();
        self.out.flush()
    }

    /// What erases the live block, if it is on screen, from a terminal `width` columns
    /// wide: as many rows as its lines take at that width (more than one each when the
    /// window shrank since they were drawn).
    fn clear_text(&mut self, width: usize) -> String {
        let drawn = std::mem::take(&mut self.drawn);
        if drawn.is_empty() {
            return String::new();
        }
        clear_lines(total_rows(&drawn, width))
    }

    /// Shows how the run ended (text modes): on a terminal, every step as it ended and
    /// the outcome line in place of the live block; piped, the outcome line.
    fn finish(&mut self, run: &WorkflowRun, now: SystemTime) -> io::Result<()> {
        self.view.sync(run);
        match self.mode {
            WatchMode::Live => {
                let mut text = self.clear_text(self.screen.get().width);
                let all: Vec<usize> = (0..self.view.steps.len()).collect();
                for line in self.view.step_lines(&all, now) {
                    text.push_str(&line);
                    text.push('\n');
                }
                let mark = match run.status() {
                    RunStatus::Succeeded => '✓',
                    RunStatus::Failed | RunStatus::Cancelled => '✗',
                    _ => '•',
                };
                let _ = writeln!(text, "{mark} {}", escape_line(&run_outcome_line(run)));
                self.out.write_all(text.as_bytes())?;
            }
            WatchMode::Plain => writeln!(self.out, "{}", escape_line(&run_outcome_line(run)))?,
            WatchMode::JsonLines | WatchMode::Quiet => {}
        }
        self.out.flush()
    }
}

impl<W: Write> View for Progress<W> {
    type Event = WorkflowEvent;

    fn mode(&self) -> WatchMode {
        self.mode
    }

    /// Shows one event (and applies it to the live view).
    fn event(&mut self, event: &WorkflowEvent, now: SystemTime) -> io::Result<()> {
        self.view.apply(event);
        if self.hidden_retries > 0 {
            if event.kind != "run_retried" {
                return Ok(());
            }
            self.hidden_retries -= 1;
            if self.hidden_retries > 0 {
                return Ok(());
            }
        }
        match self.mode {
            WatchMode::Quiet => Ok(()),
            WatchMode::JsonLines => {
                let line = serde_json::to_string(&WorkflowEventJson::from(event))?;
                writeln!(self.out, "{line}")?;
                self.out.flush()
            }
            WatchMode::Plain => {
                writeln!(self.out, "{}", plain_event_line(event))?;
                self.out.flush()
            }
            WatchMode::Live => self.draw(Some(&live_event_line(event)), now),
        }
    }

    /// Redraws the live block (a no-op in other modes).
    fn redraw(&mut self, now: SystemTime) -> io::Result<()> {
        if self.mode != WatchMode::Live {
            return Ok(());
        }
        self.draw(None, now)
    }

    /// Erases the live block if it is on screen.
    fn clear(&mut self) -> io::Result<()> {
        let text = self.clear_text(self.screen.get().width);
        if !text.is_empty() {
            self.out.write_all(text.as_bytes())?;
            self.out.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use supervisor_proto::convert::timestamp_from_micros;

    use super::*;
    use crate::commands::harness::{self, T0};

    const SIZE: Size = Size {
        width: 80,
        height: 24,
    };
    const SCREEN: SizeSource = SizeSource::Fixed(SIZE);

    fn at(secs: f64) -> SystemTime {
        harness::at(T0 + (secs * 1e6) as i64)
    }

    fn event(seq: u64, kind: &str, step: &str, task_id: &str, message: &str) -> WorkflowEvent {
        WorkflowEvent {
            run_id: "r1".into(),
            seq,
            kind: kind.into(),
            step: step.into(),
            task_id: task_id.into(),
            message: message.into(),
            at: Some(timestamp_from_micros(T0 + seq as i64 * 1_000_000)),
        }
    }

    fn step(id: &str, state: &str, task_id: &str) -> StepRun {
        StepRun {
            id: id.into(),
            state: state.into(),
            task_id: task_id.into(),
            ..Default::default()
        }
    }

    fn run(status: RunStatus, steps: Vec<StepRun>) -> WorkflowRun {
        WorkflowRun {
            id: "r1".into(),
            name: "fix".into(),
            status: status as i32,
            steps,
            created_at: Some(timestamp_from_micros(T0)),
            ..Default::default()
        }
    }

    fn pending_run() -> WorkflowRun {
        run(
            RunStatus::Running,
            vec![
                step("analyse", "pending", ""),
                step("fix", "pending", ""),
                step("review", "pending", ""),
            ],
        )
    }

    const TASK_A: &str = "0190a5b4-0000-7000-8000-00003f9a2c1d";
    const TASK_B: &str = "0190a5b4-0000-7000-8000-00008b7e6d5c";

    #[test]
    fn plain_event_lines() {
        assert_eq!(
            plain_event_line(&event(
                2,
                "step_started",
                "analyse",
                TASK_A,
                "step analyse started\nas task x"
            )),
            "2 2023-11-14T22:13:22.000000Z step_started analyse step analyse started as task x"
        );
        assert_eq!(
            plain_event_line(&event(1, "run_started", "", "", "")),
            "1 2023-11-14T22:13:21.000000Z run_started -"
        );
        let mut no_time = event(3, "run_failed", "", "", "run failed");
        no_time.at = None;
        assert_eq!(plain_event_line(&no_time), "3 - run_failed - run failed");
    }

    #[test]
    fn live_event_lines_show_the_time_of_day_and_a_symbol() {
        assert_eq!(
            live_event_line(&event(
                2,
                "step_succeeded",
                "analyse",
                TASK_A,
                "step analyse ok"
            )),
            "22:13:22 ● step analyse ok"
        );
        assert_eq!(
            live_event_line(&event(3, "step_skipped", "fix", "", "")),
            "22:13:23 ↷ step_skipped fix"
        );
        assert_eq!(
            live_event_line(&event(4, "run_retried", "", "", "")),
            "22:13:24 ↻ run_retried"
        );
        assert_eq!(event_symbol("something_new"), '·');
        assert_eq!(event_symbol("step_started"), '◐');
        assert_eq!(event_symbol("step_failed"), '✗');
        assert_eq!(event_symbol("step_cancelled"), '⊘');
    }

    #[test]
    fn the_view_follows_events_and_retries() {
        let mut view = RunView::new(&pending_run());
        for e in [
            event(1, "run_started", "", "", ""),
            event(2, "step_started", "analyse", TASK_A, ""),
            event(5, "step_succeeded", "analyse", TASK_A, ""),
            event(6, "step_started", "fix", TASK_B, ""),
        ] {
            view.apply(&e);
        }
        let lines = view.lines(0, at(8.5), SIZE);
        assert_eq!(
            lines,
            [
                "⠋ fix r1  running  1/3 steps  8.5s",
                "  ● analyse  …3f9a2c1d  3.0s",
                "  ◐ fix      …8b7e6d5c  2.5s",
                "  ○ review",
            ]
        );

        view.apply(&event(9, "step_failed", "fix", TASK_B, ""));
        view.apply(&event(10, "step_skipped", "review", "", ""));
        view.apply(&event(11, "run_failed", "", "", ""));
        let lines = view.lines(1, at(60.0), SIZE);
        assert_eq!(
            lines,
            [
                "⠙ fix r1  failed  3/3 steps  11.0s",
                "  ● analyse  …3f9a2c1d  3.0s",
                "  ✗ fix      …8b7e6d5c  3.0s",
                "  ↷ review",
            ]
        );

        // A retry runs the failed and skipped steps again; succeeded ones stay.
        view.apply(&event(12, "run_retried", "", "", ""));
        let lines = view.lines(2, at(13.0), SIZE);
        assert_eq!(
            lines,
            [
                "⠹ fix r1  running  1/3 steps  13.0s",
                "  ● analyse  …3f9a2c1d  3.0s",
                "  ○ fix",
                "  ○ review",
            ]
        );
    }

    #[test]
    fn many_steps_are_summed_up_to_fit_the_screen() {
        let mut steps: Vec<StepRun> = (0..8)
            .map(|n| step(&format!("s{n}"), "succeeded", &format!("t{n}")))
            .collect();
        steps[5].state = "running".into();
        steps[6].state = "failed".into();
        steps[7].state = "pending".into();
        steps[7].task_id.clear();
        let view = RunView::new(&run(RunStatus::Running, steps));
        let screen = Size {
            width: 80,
            height: 7,
        };
        let lines = view.lines(0, at(1.0), screen);
        assert_eq!(
            lines,
            [
                "⠋ fix r1  running  6/8 steps  1.0s",
                "  ◐ s5  t5",
                "  ✗ s6  t6",
                "  ○ s7",
                "  … 5 more: 5 succeeded",
            ]
        );
        let narrow = Size {
            width: 20,
            height: 24,
        };
        let lines = view.lines(0, at(1.0), narrow);
        assert!(lines.iter().all(|l| l.chars().count() <= 19), "{lines:?}");
        assert_eq!(lines[0], "⠋ fix r1  running …");
    }

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn plain_mode_prints_event_lines_then_the_outcome() {
        let mut out = Vec::new();
        let mut progress = Progress::new(WatchMode::Plain, &mut out, &pending_run(), SCREEN);
        progress
            .event(
                &event(1, "run_started", "", "", "run of fix started"),
                at(1.0),
            )
            .expect("write");
        progress
            .event(
                &event(
                    2,
                    "step_cancelled",
                    "analyse",
                    TASK_A,
                    "step analyse cancelled: stop",
                ),
                at(2.0),
            )
            .expect("write");
        let mut ended = run(
            RunStatus::Cancelled,
            vec![
                step("analyse", "cancelled", TASK_A),
                step("fix", "skipped", ""),
                step("review", "skipped", ""),
            ],
        );
        ended.finished_at = Some(timestamp_from_micros(T0 + 2_000_000));
        progress.finish(&ended, at(3.0)).expect("write");
        assert_eq!(
            text(out),
            "1 2023-11-14T22:13:21.000000Z run_started - run of fix started\n\
             2 2023-11-14T22:13:22.000000Z step_cancelled analyse step analyse cancelled: stop\n\
             workflow run r1 (fix) cancelled in 2.0s: 1 cancelled (analyse), 2 skipped\n"
        );
    }

    #[test]
    fn json_mode_prints_one_object_per_line_and_nothing_at_the_end() {
        let mut out = Vec::new();
        let mut progress = Progress::new(WatchMode::JsonLines, &mut out, &pending_run(), SCREEN);
        progress
            .event(
                &event(2, "step_started", "analyse", TASK_A, "started"),
                at(1.0),
            )
            .expect("write");
        progress
            .event(
                &event(3, "run_cancelled", "", "", "run was cancelled"),
                at(1.0),
            )
            .expect("write");
        progress
            .finish(&run(RunStatus::Cancelled, vec![]), at(2.0))
            .expect("write");
        let text = text(out);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({
                "run_id": "r1",
                "seq": 2,
                "kind": "step_started",
                "step": "analyse",
                "task_id": TASK_A,
                "message": "started",
                "at": "2023-11-14T22:13:22.000000Z",
            })
        );
        assert_eq!(lines[1]["step"], serde_json::Value::Null);
    }

    #[test]
    fn events_before_the_last_retry_are_hidden() {
        let mut out = Vec::new();
        let mut progress = Progress::new(WatchMode::Plain, &mut out, &pending_run(), SCREEN);
        progress.hidden_retries = 2;
        for e in [
            event(1, "run_started", "", "", ""),
            event(2, "run_failed", "", "", ""),
            event(3, "run_retried", "", "", "retry 1"),
            event(4, "run_failed", "", "", ""),
            event(5, "run_retried", "", "", "retry 2"),
            event(6, "step_started", "fix", TASK_B, "go"),
        ] {
            progress.event(&e, at(1.0)).expect("write");
        }
        assert_eq!(
            text(out),
            "5 2023-11-14T22:13:25.000000Z run_retried - retry 2\n\
             6 2023-11-14T22:13:26.000000Z step_started fix go\n"
        );
    }

    #[test]
    fn live_mode_redraws_the_block_in_place() {
        let mut out = Vec::new();
        let mut progress = Progress::new(WatchMode::Live, &mut out, &pending_run(), SCREEN);
        progress.redraw(at(0.5)).expect("write");
        progress
            .event(
                &event(2, "step_started", "analyse", TASK_A, "step analyse started"),
                at(2.5),
            )
            .expect("write");
        let mut ended = run(
            RunStatus::Succeeded,
            vec![
                step("analyse", "succeeded", TASK_A),
                step("fix", "skipped", ""),
                step("review", "succeeded", TASK_B),
            ],
        );
        ended.finished_at = Some(timestamp_from_micros(T0 + 4_000_000));
        progress
            .event(
                &event(4, "step_succeeded", "analyse", TASK_A, "done"),
                at(4.0),
            )
            .expect("write");
        progress.finish(&ended, at(4.0)).expect("write");
        let up4 = clear_lines(4);
        assert_eq!(
            text(out),
            format!(
                "⠙ fix r1  running  0/3 steps  0.5s\n  ○ analyse\n  ○ fix\n  ○ review\n\
                 {up4}22:13:22 ◐ step analyse started\n\
                 ⠹ fix r1  running  0/3 steps  2.5s\n  ◐ analyse  …3f9a2c1d  0.5s\n  ○ fix\n  ○ review\n\
                 {up4}22:13:24 ● done\n\
                 ⠸ fix r1  running  1/3 steps  4.0s\n  ● analyse  …3f9a2c1d  2.0s\n  ○ fix\n  ○ review\n\
                 {up4}  ● analyse  …3f9a2c1d  2.0s\n  ↷ fix\n  ● review   …8b7e6d5c\n\
                 ✓ workflow run r1 (fix) succeeded in 4.0s: 2 succeeded, 1 skipped\n"
            )
        );
    }

    #[test]
    fn hostile_ids_and_messages_are_shown_escaped() {
        let mut hostile = pending_run();
        hostile.name = "fix\x1b[2J".into();
        hostile.steps[0].id = "ana\nlyse".into();
        let events = [
            event(1, "run_started", "", "", "run \u{202e}started"),
            event(2, "step_started", "ana\nlyse", TASK_A, "\x1b]0;pwned\x07"),
        ];
        for mode in [WatchMode::Live, WatchMode::Plain] {
            let mut out = Vec::new();
            let mut progress = Progress::new(mode, &mut out, &hostile, SCREEN);
            for e in &events {
                progress.event(e, at(1.0)).expect("write");
            }
            let mut ended = hostile.clone();
            ended.status = RunStatus::Failed as i32;
            ended.steps[0].state = "failed".into();
            progress.finish(&ended, at(2.0)).expect("write");
            let text = text(out);
            let mut rest = text.clone();
            for n in 1..10 {
                rest = rest.replace(&clear_lines(n), "");
            }
            for raw in ['\x1b', '\x07', '\u{202e}'] {
                assert!(!rest.contains(raw), "{mode:?}: {raw:?} in {text:?}");
            }
            assert!(text.contains("ana\\nlyse"), "{mode:?}: {text:?}");
            assert!(text.contains("\\e]0;pwned\\u{7}"), "{mode:?}: {text:?}");
        }
    }

    #[test]
    fn the_block_is_drawn_at_the_terminal_size_and_erased_after_a_resize() {
        let size = |width| SizeSource::Fixed(Size { width, height: 24 });
        let mut long = pending_run();
        long.name = "n".repeat(150);
        let mut out = Vec::new();
        let mut progress = Progress::new(WatchMode::Live, &mut out, &long, size(220));
        progress.redraw(at(0.5)).expect("write");
        let drawn = progress.drawn.clone();
        assert_eq!(drawn.len(), 4, "header and three steps");
        assert!(drawn[0] > 150 && drawn[0] < 220, "not cut at 80: {drawn:?}");

        // At 50 columns the header on screen wraps onto ceil(width / 50) rows, the
        // steps one row each: the redraw moves up over all of them.
        progress.screen = size(50);
        progress.redraw(at(0.6)).expect("write");
        let rows = drawn[0].div_ceil(50) + 3;
        assert!(
            progress.drawn.iter().all(|w| *w <= 49),
            "{:?}",
            progress.drawn
        );
        let text = text(out);
        assert!(
            text.contains(&format!("\n{}⠹ ", clear_lines(rows))),
            "moves up {rows} rows: {text:?}"
        );
    }
}
