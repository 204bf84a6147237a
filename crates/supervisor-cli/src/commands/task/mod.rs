//! `supervisor task ...`: submit, read, list, watch, cancel and retry tasks.

mod apply;
mod json;
mod progress;
mod text;

use std::{
    io::{IsTerminal as _, Read as _},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use supervisor_client::Client;
use supervisor_model::{RoutingStrategy, Specialty};
use supervisor_proto::convert::EnumName as _;
use supervisor_proto::v1::{
    ListTasksRequest, Priority, SubmitTaskRequest, Task, TaskStatus, TaskType,
};

use crate::commands::{
    Exit, GlobalArgs, connect,
    follow::WatchMode,
    output::{
        OutputFormat, print_json, print_line, print_stderr_line, print_stdout, print_stdout_exact,
    },
    parse::{
        EnumArg, ModelArg, context_map, duration_millis, parse_attempt_timeout, parse_context,
        parse_dollars, parse_provider,
    },
};

use json::{StatsJson, TaskJson};
use progress::{Watched, watch};
use text::{stats_text, task_summary, task_table};

/// Tasks listed when neither `--limit` nor `--all` is given.
const DEFAULT_LIST_LIMIT: usize = 50;

/// Submit, inspect, follow, cancel and retry tasks.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task; prints its id (or, with --wait, follows it to the end).
    Submit(SubmitArgs),
    /// Show one task, with its result once it has one.
    Get {
        /// The task's id.
        id: String,
    },
    /// List tasks, newest first.
    List(ListArgs),
    /// Follow a task's events until it finishes; exits 3 if it failed, 4 if it was
    /// cancelled.
    Watch {
        /// The task's id.
        id: String,
        /// Only events after this sequence number (0: from the start).
        #[arg(long, value_name = "N", default_value_t = 0)]
        after_seq: u64,
    },
    /// Cancel a task that has not finished.
    Cancel {
        /// The task's id.
        id: String,
        /// Why, recorded in the task's error and events.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Run a failed or cancelled task again, as a new task; prints the new id.
    Retry {
        /// The id of the failed or cancelled task.
        id: String,
    },
    /// Count tasks by status: your tenant's (the whole cluster's with authentication off).
    Stats,
    /// Print one artifact of a finished task (such as `changes.diff`) to standard output:
    /// exactly as stored when it goes to a file or a pipe (`> changes.diff`, `| git
    /// apply`); on a terminal, with its control characters (escape sequences included)
    /// shown escaped unless --raw.
    Artifact {
        /// The task's id.
        id: String,
        /// The artifact's name, as `task get` lists it.
        name: String,
        /// Print it exactly as stored even on a terminal, which then obeys any escape
        /// sequence in it.
        #[arg(long)]
        raw: bool,
    },
    /// Apply a finished repository task's changes (its `changes.diff`) to a checkout.
    Apply {
        /// The task's id.
        id: String,
        /// The checkout to change (default: the repository the task named, else the
        /// current directory).
        #[arg(long, value_name = "PATH")]
        repo: Option<PathBuf>,
        /// Only check that the changes apply; change nothing.
        #[arg(long)]
        check: bool,
    },
}

/// Options of `task submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// What kind of work the task asks for.
    #[arg(long = "type", value_name = "TYPE", value_parser = EnumArg::<TaskType>::new())]
    pub task_type: TaskType,
    /// The instructions.
    #[arg(
        long,
        value_name = "TEXT",
        required_unless_present = "prompt_file",
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the instructions from a file (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Scheduling priority (default: normal).
    #[arg(long, value_parser = EnumArg::<Priority>::new())]
    pub priority: Option<Priority>,
    /// A label (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// An extra input, such as repo=/src/app (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_context)]
    pub context: Vec<(String, String)>,
    /// Submitting again with the same key returns the first task.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Attempts before giving up, 1 to 100 (default: the server's).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(supervisor_model::MAX_ATTEMPTS_LIMIT))
    )]
    pub max_attempts: Option<u32>,
    /// Time limit of one attempt, such as 30s or 5m, at most 24h (default: the server's).
    #[arg(long, value_name = "DURATION", value_parser = parse_attempt_timeout)]
    pub timeout: Option<Duration>,
    /// The agent specialty to work on it (default: chosen from its labels, prompt and
    /// type).
    #[arg(long, value_name = "NAME", value_parser = ModelArg::<Specialty>::new())]
    pub specialty: Option<Specialty>,
    /// How to choose its provider (default: the node's configured strategy).
    #[arg(long, value_name = "NAME", value_parser = ModelArg::<RoutingStrategy>::new())]
    pub strategy: Option<RoutingStrategy>,
    /// A provider to try first (repeatable; tried in the order given).
    #[arg(long = "prefer", value_name = "PROVIDER", value_parser = parse_provider)]
    pub prefer: Vec<String>,
    /// A provider never to use (repeatable).
    #[arg(long = "exclude", value_name = "PROVIDER", value_parser = parse_provider)]
    pub exclude: Vec<String>,
    /// Most one attempt may cost by the provider's estimate, in US dollars, such as
    /// 0.50, at most 10000 (default: no limit).
    #[arg(
        long,
        value_name = "DOLLARS",
        value_parser = parse_dollars,
        allow_negative_numbers = true
    )]
    pub max_cost: Option<f64>,
    /// Follow the task until it finishes and print its result; exits 3 if it
    /// failed, 4 if it was cancelled.
    #[arg(long)]
    pub wait: bool,
}

/// Options of `task list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this status.
    #[arg(long, value_parser = EnumArg::<TaskStatus>::new())]
    pub status: Option<TaskStatus>,
    /// Only tasks of this type.
    #[arg(long = "type", value_name = "TYPE", value_parser = EnumArg::<TaskType>::new())]
    pub task_type: Option<TaskType>,
    /// Only tasks carrying this label.
    #[arg(long)]
    pub label: Option<String>,
    /// At most this many tasks (default 50, or all with --all).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Every matching task, following pages.
    #[arg(long)]
    pub all: bool,
}

/// Runs a `task` subcommand against the server named in `global`.
pub async fn run(cmd: TaskCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Submit(args) => submit(args, global).await,
        TaskCommand::Get { id } => {
            let task = connect(global).await?.get(&id).await?;
            print_task(&task, global.output)
        }
        TaskCommand::List(args) => list(args, global).await,
        TaskCommand::Watch { id, after_seq } => {
            let client = connect(global).await?;
            let mode = WatchMode::for_output(global.output);
            let watched = watch(&client, &id, after_seq, mode).await?;
            exit_for(&watched.task)
        }
        TaskCommand::Cancel { id, reason } => {
            let client = connect(global).await?;
            let task = client.cancel(&id, reason.as_deref().unwrap_or("")).await?;
            match global.output {
                OutputFormat::Json => print_json(&TaskJson::from(&task)),
                OutputFormat::Text => Ok(print_line(&format!(
                    "task {} {}",
                    task.id,
                    TaskStatus::name_of(task.status)
                ))?),
            }
        }
        TaskCommand::Retry { id } => {
            let task = connect(global).await?.retry(&id).await?;
            print_id_or_task(&task, global.output)
        }
        TaskCommand::Artifact { id, name, raw } => {
            let task = connect(global).await?.get(&id).await?;
            let artifacts = task.result.map(|r| r.artifacts).unwrap_or_default();
            match artifacts.into_iter().find(|a| a.name == name) {
                Some(a) if raw || !std::io::stdout().is_terminal() => {
                    Ok(print_stdout_exact(&a.content)?)
                }
                Some(a) => Ok(print_stdout(&a.content)?),
                None => anyhow::bail!(
                    "task {id} has no artifact named {name:?}; `supervisor task get {id}` lists its artifacts"
                ),
            }
        }
        TaskCommand::Apply { id, repo, check } => {
            let task = connect(global).await?.get(&id).await?;
            apply::apply(&task, repo, check, global.output)
        }
        TaskCommand::Stats => {
            let stats = connect(global).await?.stats().await?;
            match global.output {
                OutputFormat::Json => print_json(&StatsJson::from(&stats)),
                OutputFormat::Text => Ok(print_stdout(&stats_text(&stats))?),
            }
        }
    }
}

/// Builds the request of `task submit`, reading the prompt file if any.
fn submit_request(args: &SubmitArgs) -> anyhow::Result<SubmitTaskRequest> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(prompt), _) => prompt.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut prompt = String::new();
            std::io::stdin()
                .read_to_string(&mut prompt)
                .context("could not read the prompt from standard input")?;
            prompt
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("could not read the prompt file {}", path.display()))?,
        (None, None) => bail!("give the prompt with --prompt or --prompt-file"),
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let context = context_map(args.context.clone()).map_err(anyhow::Error::msg)?;
    if let Some(both) = args.prefer.iter().find(|name| args.exclude.contains(name)) {
        bail!("provider {both:?} is both preferred (--prefer) and excluded (--exclude)");
    }
    Ok(SubmitTaskRequest {
        r#type: args.task_type as i32,
        prompt,
        priority: args.priority.unwrap_or(Priority::Unspecified) as i32,
        labels: args.labels.clone(),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        context,
        max_attempts: args.max_attempts.unwrap_or(0),
        timeout_ms: args.timeout.map_or(0, duration_millis),
        specialty: args
            .specialty
            .map(Specialty::as_str)
            .unwrap_or_default()
            .to_owned(),
        routing_strategy: args
            .strategy
            .map(RoutingStrategy::as_str)
            .unwrap_or_default()
            .to_owned(),
        preferred_providers: args.prefer.clone(),
        excluded_providers: args.exclude.clone(),
        max_cost_usd: args.max_cost.unwrap_or(0.0),
    })
}

async fn submit(args: SubmitArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let request = submit_request(&args)?;
    let client = connect(global).await?;
    let task = client.submit(request).await?;
    if !args.wait {
        return print_id_or_task(&task, global.output);
    }
    wait_and_print(&client, &task, global.output).await
}

/// Follows a just-submitted task to its end, then prints the result.
async fn wait_and_print(client: &Client, task: &Task, output: OutputFormat) -> anyhow::Result<()> {
    // JSON prints the task once it has ended, not its events.
    let mode = match output {
        OutputFormat::Json => WatchMode::Quiet,
        OutputFormat::Text => WatchMode::for_output(output),
    };
    if output == OutputFormat::Text {
        print_line(&task.id)?;
    }
    let Watched {
        task,
        output_events,
    } = watch(client, &task.id, 0, mode).await?;
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(&task))?,
        OutputFormat::Text => {
            // Output already streamed as OUTPUT events is not repeated.
            if let Some(result) = &task.result
                && output_events == 0
                && !result.output.is_empty()
            {
                let mut text = result.output.clone();
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                print_stdout(&text)?;
            }
        }
    }
    exit_for(&task)
}

async fn list(args: ListArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let limit = match (args.limit, args.all) {
        (Some(limit), _) => Some(usize::try_from(limit).unwrap_or(usize::MAX)),
        (None, true) => None,
        (None, false) => Some(DEFAULT_LIST_LIMIT),
    };
    let filter = ListTasksRequest {
        status: args.status.unwrap_or(TaskStatus::Unspecified) as i32,
        r#type: args.task_type.unwrap_or(TaskType::Unspecified) as i32,
        label: args.label.unwrap_or_default(),
        page_size: 0,
        page_token: String::new(),
    };
    let client = connect(global).await?;
    let (tasks, next_page_token) = client.list_up_to(filter, limit).await?;
    match global.output {
        OutputFormat::Json => {
            let tasks: Vec<TaskJson> = tasks.iter().map(TaskJson::from).collect();
            print_json(&tasks)?;
        }
        OutputFormat::Text if tasks.is_empty() => print_stderr_line("no tasks"),
        OutputFormat::Text => print_stdout(&task_table(&tasks, SystemTime::now()))?,
    }
    if !next_page_token.is_empty() && !args.all && global.output == OutputFormat::Text {
        print_stderr_line(&format!(
            "(showing the first {}; use --all or --limit N for more)",
            tasks.len()
        ));
    }
    Ok(())
}

/// Prints a task in full (text) or as JSON.
fn print_task(task: &Task, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(task)),
        OutputFormat::Text => Ok(print_stdout(&task_summary(task, SystemTime::now()))?),
    }
}

/// Prints a new task's id (text) or the task as JSON.
fn print_id_or_task(task: &Task, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&TaskJson::from(task)),
        OutputFormat::Text => Ok(print_line(&task.id)?),
    }
}

/// Success, or the exit code of a task that ended failed or cancelled.
fn exit_for(task: &Task) -> anyhow::Result<()> {
    let status = task.status();
    Exit::for_ending(
        status == TaskStatus::Failed,
        status == TaskStatus::Cancelled,
    )
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::commands::harness::{self, Parsed};
    use crate::commands::{EXIT_TASK_CANCELLED, EXIT_TASK_FAILED};

    fn parse(args: &[&str]) -> Result<Parsed<TaskCommand>, clap::Error> {
        harness::parse(args)
    }

    fn submit_args(args: &[&str]) -> SubmitArgs {
        match parse(args).expect("valid arguments").command {
            TaskCommand::Submit(args) => args,
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn submit_builds_the_request() {
        let args = submit_args(&[
            "submit",
            "--type",
            "bug_fix",
            "--prompt",
            "fix it",
            "--priority",
            "high",
            "--label",
            "a",
            "--label",
            "b",
            "--context",
            "repo=/src",
            "--idempotency-key",
            "k1",
            "--max-attempts",
            "2",
            "--timeout",
            "1m30s",
        ]);
        let request = submit_request(&args).expect("request");
        assert_eq!(request.r#type(), TaskType::BugFix);
        assert_eq!(request.priority(), Priority::High);
        assert_eq!(request.prompt, "fix it");
        assert_eq!(request.labels, ["a", "b"]);
        assert_eq!(
            request.context.get("repo").map(String::as_str),
            Some("/src")
        );
        assert_eq!(request.idempotency_key, "k1");
        assert_eq!(request.max_attempts, 2);
        assert_eq!(request.timeout_ms, 90_000);
    }

    #[test]
    fn submit_sends_routing_preferences() {
        let args = submit_args(&[
            "submit",
            "--type",
            "bug_fix",
            "--prompt",
            "fix it",
            "--specialty",
            "bug-hunter",
            "--strategy",
            "FASTEST",
            "--prefer",
            "claude",
            "--prefer",
            "mock",
            "--exclude",
            "openai",
            "--max-cost",
            "0.50",
        ]);
        let request = submit_request(&args).expect("request");
        assert_eq!(request.specialty, "bug_hunter");
        assert_eq!(request.routing_strategy, "fastest");
        assert_eq!(request.preferred_providers, ["claude", "mock"]);
        assert_eq!(request.excluded_providers, ["openai"]);
        assert_eq!(request.max_cost_usd, 0.5);
    }

    #[test]
    fn submit_refuses_bad_routing_preferences() {
        let base = ["submit", "--type", "bug_fix", "--prompt", "x"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args)
        };
        let err = with(&["--specialty", "wizard"]).expect_err("unknown specialty");
        assert!(
            err.to_string().contains("expected one of: code_architect"),
            "{err}"
        );
        let err = with(&["--strategy", "random"]).expect_err("unknown strategy");
        assert!(err.to_string().contains("round_robin"), "{err}");
        let err = with(&["--max-cost", "free"]).expect_err("not a number");
        assert!(
            err.to_string()
                .contains("invalid amount \"free\": expected a number of US dollars"),
            "{err}"
        );
        for bad in ["0", "-1"] {
            let err = with(&["--max-cost", bad]).expect_err("not positive");
            assert!(err.to_string().contains("must be more than 0"), "{err}");
        }
        let err = with(&["--prefer", ""]).expect_err("blank provider");
        assert!(err.to_string().contains("provider name is empty"), "{err}");

        let args = match with(&["--prefer", "mock", "--exclude", "mock"])
            .expect("valid arguments")
            .command
        {
            TaskCommand::Submit(args) => args,
            other => panic!("not a submit: {other:?}"),
        };
        assert_eq!(
            submit_request(&args)
                .expect_err("contradiction")
                .to_string(),
            "provider \"mock\" is both preferred (--prefer) and excluded (--exclude)"
        );
    }

    #[test]
    fn submit_defaults_leave_choices_to_the_server() {
        let request = submit_request(&submit_args(&[
            "submit", "--type", "testing", "--prompt", "x",
        ]))
        .expect("request");
        assert_eq!(request.priority(), Priority::Unspecified);
        assert_eq!(request.max_attempts, 0);
        assert_eq!(request.timeout_ms, 0);
        assert!(request.idempotency_key.is_empty());
        assert!(request.specialty.is_empty());
        assert!(request.routing_strategy.is_empty());
        assert!(request.preferred_providers.is_empty());
        assert!(request.excluded_providers.is_empty());
        assert_eq!(request.max_cost_usd, 0.0);
    }

    #[test]
    fn submit_reads_the_prompt_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("prompt.txt");
        std::fs::write(&path, "from a file\n").expect("write");
        let path = path.to_str().expect("utf-8 path");
        let args = submit_args(&["submit", "--type", "refactor", "--prompt-file", path]);
        assert_eq!(
            submit_request(&args).expect("request").prompt,
            "from a file\n"
        );
        let missing = submit_args(&["submit", "--type", "refactor", "--prompt-file", "/nope"]);
        let err = submit_request(&missing).expect_err("missing file");
        assert!(
            format!("{err:#}").starts_with("could not read the prompt file /nope: "),
            "{err:#}"
        );
    }

    #[test]
    fn submit_refuses_bad_input() {
        let err = parse(&["submit", "--type", "bugfix", "--prompt", "x"]).expect_err("bad type");
        assert!(
            err.to_string().contains("expected one of: pr_review"),
            "{err}"
        );
        let err = parse(&[
            "submit",
            "--type",
            "bug_fix",
            "--prompt",
            "x",
            "--context",
            "repo",
        ])
        .expect_err("bad context");
        assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
        let err = parse(&[
            "submit",
            "--type",
            "bug_fix",
            "--prompt",
            "x",
            "--timeout",
            "30",
        ])
        .expect_err("bad timeout");
        assert!(err.to_string().contains("invalid duration \"30\""), "{err}");
        assert!(
            parse(&["submit", "--type", "bug_fix"]).is_err(),
            "prompt required"
        );
        assert!(
            parse(&[
                "submit",
                "--type",
                "bug_fix",
                "--prompt",
                "x",
                "--prompt-file",
                "f"
            ])
            .is_err(),
            "prompt and prompt file conflict"
        );
        assert!(
            parse(&[
                "submit",
                "--type",
                "bug_fix",
                "--prompt",
                "x",
                "--max-attempts",
                "0"
            ])
            .is_err()
        );

        let duplicate = submit_args(&[
            "submit",
            "--type",
            "bug_fix",
            "--prompt",
            "x",
            "--context",
            "a=1",
            "--context",
            "a=2",
        ]);
        let err = submit_request(&duplicate).expect_err("duplicate key");
        assert_eq!(err.to_string(), "context key \"a\" is given more than once");
        let blank = submit_args(&["submit", "--type", "bug_fix", "--prompt", "  "]);
        assert_eq!(
            submit_request(&blank).expect_err("blank").to_string(),
            "the prompt is empty"
        );
    }

    #[test]
    fn submit_limits_are_the_apis() {
        let over = |flag: &str, value: &str| {
            parse(&["submit", "--type", "bug_fix", "--prompt", "x", flag, value])
                .expect_err("over the limit")
                .to_string()
        };
        let err = over("--max-attempts", "101");
        assert!(err.contains("101 is not in 1..=100"), "{err}");
        let err = over("--timeout", "100y");
        assert!(err.contains("the limit is 1day per attempt"), "{err}");
        let err = over("--max-cost", "1e308");
        assert!(err.contains("the limit is $10000 per attempt"), "{err}");
        let at_limits = submit_args(&[
            "submit",
            "--type",
            "bug_fix",
            "--prompt",
            "x",
            "--max-attempts",
            "100",
            "--timeout",
            "24h",
            "--max-cost",
            "10000",
        ]);
        let request = submit_request(&at_limits).expect("request");
        assert_eq!(
            (
                request.max_attempts,
                request.timeout_ms,
                request.max_cost_usd
            ),
            (100, supervisor_model::MAX_TIMEOUT_MS, 10_000.0)
        );
    }

    #[test]
    fn global_options_and_list_filters() {
        let cli = parse(&[
            "list",
            "--status",
            "retry_wait",
            "--type",
            "pr_review",
            "--label",
            "ci",
            "--all",
            "--output",
            "json",
            "--server",
            "http://h:1",
        ])
        .expect("valid");
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.server, "http://h:1");
        let TaskCommand::List(args) = cli.command else {
            panic!("not a list");
        };
        assert_eq!(args.status, Some(TaskStatus::RetryWait));
        assert_eq!(args.task_type, Some(TaskType::PrReview));
        assert!(args.all);
        assert!(parse(&["list", "--limit", "0"]).is_err());
    }

    #[test]
    fn watch_and_cancel_arguments() {
        let cli = parse(&["watch", "t1", "--after-seq", "7"]).expect("valid");
        assert!(matches!(cli.command, TaskCommand::Watch { ref id, after_seq: 7 } if id == "t1"));
        let cli = parse(&["cancel", "t1", "--reason", "no longer needed"]).expect("valid");
        assert!(
            matches!(cli.command, TaskCommand::Cancel { reason: Some(ref r), .. } if r == "no longer needed")
        );
    }

    #[test]
    fn exit_codes_follow_the_final_status() {
        let task = |status: TaskStatus| Task {
            status: status as i32,
            ..Default::default()
        };
        assert!(exit_for(&task(TaskStatus::Succeeded)).is_ok());
        let code = |status| {
            exit_for(&task(status))
                .expect_err("non-zero")
                .downcast_ref::<Exit>()
                .map(|exit| exit.code)
        };
        assert_eq!(code(TaskStatus::Failed), Some(EXIT_TASK_FAILED));
        assert_eq!(code(TaskStatus::Cancelled), Some(EXIT_TASK_CANCELLED));
    }
}
