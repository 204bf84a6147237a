//! The live views on a real terminal: `task watch` and `workflow submit --watch` run with
//! their output on a pseudo-terminal of 50 and of 220 columns, and what they write is
//! replayed on a terminal emulator (vt100), as a person would see it. At 50 columns no
//! redraw leaves a line behind; at 220 the status line is not cut at 80.

mod common;

use std::fs::File;
use std::io::Read as _;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{NodeProcess, cli};

/// The frames of the live views' spinner: any of them left on screen is a stale line.
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// A pseudo-terminal of `cols` x `rows`: the master end to read what was written, and
/// the slave end to hand to a process.
fn open_pty(cols: u16, rows: u16) -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the integers it is given; the name
    // buffer and terminal settings may be null; the size points at a valid winsize.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Runs `supervisor args` against `addr` with stdout and stderr on a terminal of `cols`
/// x `rows` columns (no `$COLUMNS` or `$LINES` to go by), feeding what it writes to an
/// emulator of that size; `during` sees the screen after each write. Returns the exit
/// code and the emulator at the end.
fn run_on_terminal(
    addr: &str,
    args: &[&str],
    cols: u16,
    rows: u16,
    mut during: impl FnMut(&vt100::Screen),
) -> (i32, vt100::Parser) {
    let (mut master, slave) = open_pty(cols, rows);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_supervisor"));
    cmd.args(args)
        .env("SUPERVISOR_SERVER", addr)
        .env_remove("COLUMNS")
        .env_remove("LINES")
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawn supervisor");
    // Only the child holds the terminal now: reads end (EIO) once it exits.
    drop(cmd);
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut parser = vt100::Parser::new(rows, cols, 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(bytes) => {
                parser.process(&bytes);
                during(parser.screen());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "supervisor {args:?} did not end:\n{}",
                parser.screen().contents()
            );
        }
    }
    let status = child.wait().expect("wait");
    (status.code().unwrap_or(-1), parser)
}

/// The rows of the screen that still show a spinner: lines a redraw left behind.
fn stale_rows(screen: &vt100::Screen) -> Vec<String> {
    screen
        .contents()
        .lines()
        .filter(|row| row.contains(SPINNER))
        .map(str::to_owned)
        .collect()
}

fn submit(addr: &str, prompt: &str) -> String {
    let (code, out, err) = cli(
        addr,
        &["task", "submit", "--type", "bug_fix", "--prompt", prompt],
    );
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

#[test]
fn task_watch_fits_narrow_and_wide_terminals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "2s")]);
    let addr = node.addr.as_str();

    // 50 columns: the status line (spinner, a 36-character id, status, attempt, time,
    // message) is wider than that; every redraw must erase the last one entirely.
    let id = submit(addr, "narrow terminal");
    let (code, parser) = run_on_terminal(addr, &["task", "watch", &id], 50, 40, |_| {});
    let screen = parser.screen().contents();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("succeeded"), "{screen}");
    assert_eq!(
        stale_rows(parser.screen()),
        Vec::<String>::new(),
        "{screen}"
    );

    // 220 columns: the status line shows its whole message, not 79 columns of it.
    let id = submit(addr, "wide terminal");
    let mut status_rows = Vec::new();
    let (code, parser) = run_on_terminal(addr, &["task", "watch", &id], 220, 40, |screen| {
        for row in screen.contents().lines() {
            if row.contains(SPINNER) && row.contains(&id) {
                status_rows.push(row.to_owned());
            }
        }
    });
    let screen = parser.screen().contents();
    assert_eq!(code, 0, "{screen}");
    assert!(
        status_rows
            .iter()
            .any(|row| row.contains("started on node")),
        "the status line at 220 columns shows the whole message: {status_rows:#?}"
    );
    assert!(
        status_rows.iter().all(|row| !row.contains('…')),
        "{status_rows:#?}"
    );
    assert_eq!(
        stale_rows(parser.screen()),
        Vec::<String>::new(),
        "{screen}"
    );
}

#[test]
fn workflow_watch_redraws_its_steps_without_leaving_lines_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeProcess::start(dir.path(), &[("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "1s")]);
    let file = dir.path().join("pty-check.yaml");
    std::fs::write(
        &file,
        "name: a-workflow-with-a-rather-long-name\n\
         steps:\n  \
           - id: analyse\n    \
             task: { type: code_analysis, prompt: \"look at the pager\" }\n  \
           - id: review\n    \
             needs: [analyse]\n    \
             task: { type: pr_review, prompt: \"review {{ steps.analyse.output }}\" }\n",
    )
    .expect("write the workflow");
    let file = file.to_str().expect("utf-8 path");
    for cols in [50, 220] {
        let (code, parser) = run_on_terminal(
            &node.url(),
            &["workflow", "submit", "-f", file, "--watch"],
            cols,
            40,
            |_| {},
        );
        let screen = parser.screen().contents();
        assert_eq!(code, 0, "{cols} columns:\n{screen}");
        assert!(screen.contains("succeeded in"), "{cols} columns:\n{screen}");
        assert_eq!(
            stale_rows(parser.screen()),
            Vec::<String>::new(),
            "{cols} columns:\n{screen}"
        );
    }
}
