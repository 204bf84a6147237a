//! Submits a task, waits for it to end, and prints its status and output.
//!
//! ```text
//! cargo run -p supervisor-client --example submit_and_wait -- [PROMPT...]
//! ```
//!
//! The server is `SUPERVISOR_SERVER`, else `127.0.0.1:50051`; the token,
//! when the node checks credentials, comes from `SUPERVISOR_TOKEN` (or the file
//! `SUPERVISOR_TOKEN_FILE` names). Exits with 1 when the task does not succeed, and with 2
//! when it cannot be submitted or followed.

use std::process::ExitCode;

use supervisor_client::{Client, ConnectOptions, DEFAULT_ADDR, v1};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("submit_and_wait: {err}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether the task succeeded.
async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let server = std::env::var("SUPERVISOR_SERVER").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let words: Vec<String> = std::env::args().skip(1).collect();
    let prompt = if words.is_empty() {
        "Find the off-by-one in the pager".to_owned()
    } else {
        words.join(" ")
    };

    let client = Client::connect_with(&server, &ConnectOptions::from_env()?).await?;
    let task = client
        .submit(v1::SubmitTaskRequest {
            r#type: v1::TaskType::BugFix as i32,
            prompt,
            ..Default::default()
        })
        .await?;
    println!("submitted task {}", task.id);

    // Follows the task's events (resuming when the connection breaks) until it ends.
    let done = client.wait(&task.id).await?;
    let status = done.status();
    println!("task {} ended {}", done.id, status_name(status));
    match &done.result {
        Some(result) => {
            println!(
                "provider {} ({}), {} output bytes, ${:.6}",
                result.provider, result.model, result.output_bytes, result.cost_usd
            );
            println!("output:\n{}", result.output);
        }
        None => println!("error: {}", done.error),
    }
    Ok(status == v1::TaskStatus::Succeeded)
}

/// `SUCCEEDED` for `TASK_STATUS_SUCCEEDED`.
fn status_name(status: v1::TaskStatus) -> &'static str {
    let name = status.as_str_name();
    name.strip_prefix("TASK_STATUS_").unwrap_or(name)
}
