//! Submits a workflow (a DAG of tasks), waits for the run to end, and prints each step's
//! state, task and output summary.
//!
//! ```text
//! cargo run -p supervisor-client --example workflow -- [--var NAME=VALUE]... [FILE]
//! ```
//!
//! `FILE` is a definition in YAML (`.yaml`, `.yml`) or JSON (`.json`), such as
//! `examples/review-pr.yaml` at the repository's root; without one, the example runs
//! the small definition in [`INLINE`]. Each `--var` overrides one of the definition's
//! variables.
//!
//! The server is `SUPERVISOR_SERVER`, else `127.0.0.1:50051`; the token,
//! when the node checks credentials, comes from `SUPERVISOR_TOKEN` (or the file
//! `SUPERVISOR_TOKEN_FILE` names). Exits with 1 when the run does not succeed, and with 2
//! when it cannot be submitted or followed (an invalid definition is refused with every
//! problem the server found).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use supervisor_client::{
    Client, ConnectOptions, DEFAULT_ADDR, SourceFormat, read_workflow_source, v1, workflow_source,
};

const USAGE: &str = "usage: workflow [--var NAME=VALUE]... [FILE]";

/// The workflow run when no file is given: an analysis, then a fix and its tests side by
/// side, both fed the analysis.
const INLINE: &str = r#"
name: analyse-fix-test
vars: { module: pager }
steps:
  - id: analyse
    task: { type: code_analysis, prompt: "Find the off-by-one in the {{ vars.module }}" }
  - id: fix
    needs: [analyse]
    task: { type: bug_fix, prompt: "Fix it. Analysis: {{ steps.analyse.output }}" }
  - id: test
    needs: [analyse]
    task: { type: testing, prompt: "Write a test for: {{ steps.analyse.output }}" }
"#;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("workflow: {err}");
            ExitCode::from(2)
        }
    }
}

/// What the command line asks for.
struct Args {
    server: String,
    vars: HashMap<String, String>,
    file: Option<PathBuf>,
}

/// Returns whether the run succeeded.
async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let args = parse_args(std::env::args().skip(1))?;
    let source = match &args.file {
        // The server parses the text, so its errors point at the file's lines.
        Some(path) => read_workflow_source(path)?,
        None => workflow_source(INLINE.to_owned(), SourceFormat::Yaml),
    };

    let client = Client::connect_with(&args.server, &ConnectOptions::from_env()?).await?;
    let run = client.submit_workflow(source, args.vars).await?;
    println!("submitted run {} of workflow {}", run.id, run.name);

    // Follows the run's events (resuming when the connection breaks) until it ends.
    let done = client.wait_workflow(&run.id).await?;
    println!("run {} ended {}", done.id, run_status_name(done.status()));
    for step in &done.steps {
        let mut line = format!("step {} {}", step.id, step.state);
        if !step.task_id.is_empty() {
            line.push_str(&format!(" task={}", step.task_id));
        }
        if !step.output_summary.is_empty() {
            line.push_str(&format!(" output={:?}", step.output_summary));
        }
        if !step.failure.is_empty() {
            line.push_str(&format!(" failure={:?}", step.failure));
        }
        println!("{line}");
    }
    Ok(done.status() == v1::RunStatus::Succeeded)
}

/// `SUCCEEDED` for `RUN_STATUS_SUCCEEDED`.
fn run_status_name(status: v1::RunStatus) -> &'static str {
    let name = status.as_str_name();
    name.strip_prefix("RUN_STATUS_").unwrap_or(name)
}

/// The server address (`SUPERVISOR_SERVER`, else the default), the variables and the
/// definition file.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, Box<dyn std::error::Error>> {
    let server = std::env::var("SUPERVISOR_SERVER").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let mut vars = HashMap::new();
    let mut file = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--var" => {
                let pair = args
                    .next()
                    .ok_or_else(|| format!("--var needs NAME=VALUE\n{USAGE}"))?;
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("--var {pair:?} is not NAME=VALUE\n{USAGE}"))?;
                vars.insert(name.to_owned(), value.to_owned());
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // `-` alone is standard input, read as YAML.
            flag if flag.starts_with('-') && flag != "-" => {
                return Err(format!("unknown option {flag}\n{USAGE}").into());
            }
            _ if file.is_some() => {
                return Err(
                    format!("one definition file at most, got {arg:?} too\n{USAGE}").into(),
                );
            }
            _ => file = Some(PathBuf::from(arg)),
        }
    }
    Ok(Args { server, vars, file })
}
