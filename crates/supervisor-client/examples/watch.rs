//! Submits a task, then follows its events as they happen, printing each one, until the
//! terminal event (`SUCCEEDED`, `FAILED` or `CANCELLED`).
//!
//! ```text
//! cargo run -p supervisor-client --example watch -- [PROMPT...]
//! ```
//!
//! [`Client::follow`] resumes the watch from the last event seen when the connection
//! breaks (a server restarting, say), so no event is printed twice or lost; the
//! [`ResumePolicy`] says how long it keeps trying.
//!
//! The server is `SUPERVISOR_SERVER`, else `127.0.0.1:50051`; the token,
//! when the node checks credentials, comes from `SUPERVISOR_TOKEN` (or the file
//! `SUPERVISOR_TOKEN_FILE` names). Exits with 1 when the task does not succeed, and with 2
//! when it cannot be submitted or followed.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt as _;
use supervisor_client::{Client, ConnectOptions, DEFAULT_ADDR, ResumePolicy, v1};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("watch: {err}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether the task succeeded.
async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let server = std::env::var("SUPERVISOR_SERVER").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let words: Vec<String> = std::env::args().skip(1).collect();
    let prompt = if words.is_empty() {
        "Review the retry logic of the uploader".to_owned()
    } else {
        words.join(" ")
    };

    // Keep trying for over a minute of failed attempts in a row (2 s apart at most).
    let resume = ResumePolicy {
        max_consecutive_failures: 40,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    };
    let client = Client::connect_with(&server, &ConnectOptions::from_env()?)
        .await?
        .with_resume_policy(resume);
    let task = client
        .submit(v1::SubmitTaskRequest {
            r#type: v1::TaskType::PrReview as i32,
            prompt,
            ..Default::default()
        })
        .await?;
    println!("submitted task {}", task.id);

    // From sequence number 0: every event since the submit.
    let mut events = client.follow(&task.id, 0);
    let mut last = None;
    while let Some(event) = events.next().await {
        let event = event?;
        println!("{}", describe(&event));
        last = Some(event.r#type());
    }
    // The stream ends after the terminal event (or, if the task had already ended
    // before the watch caught up, once the server closes it).
    let ended = client.get(&task.id).await?;
    println!(
        "task {} ended {}",
        ended.id,
        name(ended.status().as_str_name(), "TASK_STATUS_")
    );
    if !last.is_some_and(v1::TaskEventType::is_terminal) {
        return Err(format!(
            "the events of task {} stopped before its terminal event",
            task.id
        )
        .into());
    }
    Ok(ended.status() == v1::TaskStatus::Succeeded)
}

/// One line per event: `event 3 OUTPUT status=RUNNING attempt=1 output="..."`.
fn describe(event: &v1::TaskEvent) -> String {
    let mut line = format!(
        "event {} {} status={} attempt={}",
        event.seq,
        name(event.r#type().as_str_name(), "TASK_EVENT_TYPE_"),
        name(event.status().as_str_name(), "TASK_STATUS_"),
        event.attempt
    );
    if !event.message.is_empty() {
        line.push_str(&format!(" message={:?}", event.message));
    }
    if !event.output.is_empty() {
        line.push_str(&format!(" output={:?}", event.output));
    }
    line
}

/// A protobuf enum name without its prefix: `SUCCEEDED` for `TASK_STATUS_SUCCEEDED`.
fn name(full: &'static str, prefix: &str) -> &'static str {
    full.strip_prefix(prefix).unwrap_or(full)
}
