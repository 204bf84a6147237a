//! `supervisor workflow ...`: validate, submit, read, list, follow, cancel and retry
//! workflow runs (DAGs of tasks written in YAML or JSON).

mod json;
mod progress;
mod text;

use std::{collections::HashMap, path::PathBuf, time::SystemTime};

use clap::{Args, Subcommand, ValueEnum};
use supervisor_client::{Client, read_workflow_source};
use supervisor_proto::v1::{ListWorkflowsRequest, RunStatus, WorkflowRun, WorkflowSource};

use crate::commands::{
    EXIT_ERROR, Exit, GlobalArgs, connect,
    follow::WatchMode,
    output::{OutputFormat, print_json, print_line, print_stderr_line, print_stdout},
    parse::{parse_var, var_map},
};

use json::{ValidationJson, WorkflowRunJson};
use text::{run_status_name, run_summary, run_table, validation_text};

/// Runs listed when `--limit` is not given.
const DEFAULT_LIST_LIMIT: usize = 50;

/// Validate, submit, inspect, follow, cancel and retry workflow runs.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Check a workflow definition without running it: prints `valid`, or every error
    /// and warning; exits 1 when it is invalid.
    Validate(SourceArgs),
    /// Start a run of a workflow; prints its id (or, with --watch, follows it to the
    /// end).
    Submit(SubmitArgs),
    /// Show one run: its status and the table of its steps.
    Get {
        /// The run's id.
        id: String,
    },
    /// List runs, newest first.
    List(ListArgs),
    /// Follow a run until it ends: its steps live on a terminal, one line per event
    /// otherwise; exits 3 if it failed, 4 if it was cancelled.
    Watch {
        /// The run's id.
        id: String,
        /// Only events after this sequence number (0: from the start).
        #[arg(long, value_name = "N", default_value_t = 0)]
        after_seq: u64,
    },
    /// Cancel a running run: its running steps are cancelled, its pending ones skipped.
    Cancel {
        /// The run's id.
        id: String,
        /// Why, recorded in the run's events.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a failed or cancelled run from its unfinished steps (succeeded steps keep
    /// their outputs); prints its id.
    Retry {
        /// The run's id.
        id: String,
        /// Follow the resumed run until it ends; exits 3 if it failed, 4 if it was
        /// cancelled.
        #[arg(long)]
        watch: bool,
    },
}

/// The workflow definition file (`-f`), shared by `workflow validate`, `workflow
/// submit` and `schedule create`.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// The workflow definition: a .yaml, .yml or .json file, or - for YAML on standard
    /// input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

impl SourceArgs {
    /// Reads the definition file (its extension tells YAML from JSON).
    pub fn read(&self) -> anyhow::Result<WorkflowSource> {
        Ok(read_workflow_source(&self.file)?)
    }
}

/// Options of `workflow submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The workflow definition file.
    #[command(flatten)]
    pub source: SourceArgs,
    /// A variable overriding the definition's, such as repo=/src/app (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Follow the run until it ends; exits 3 if it failed, 4 if it was cancelled.
    #[arg(long)]
    pub watch: bool,
}

/// Options of `workflow list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs in this status.
    #[arg(long, value_enum)]
    pub status: Option<RunStatusArg>,
    /// Only runs of the workflow with this name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// At most this many runs (default 50).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// A workflow run status, as `--status` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunStatusArg {
    /// Runs that have not ended.
    Running,
    /// Runs whose steps all succeeded or were skipped.
    Succeeded,
    /// Runs that failed.
    Failed,
    /// Runs that were cancelled.
    Cancelled,
}

impl From<RunStatusArg> for RunStatus {
    fn from(status: RunStatusArg) -> Self {
        match status {
            RunStatusArg::Running => Self::Running,
            RunStatusArg::Succeeded => Self::Succeeded,
            RunStatusArg::Failed => Self::Failed,
            RunStatusArg::Cancelled => Self::Cancelled,
        }
    }
}

/// Gathers `--var` pairs, refusing a variable given twice.
pub fn vars(pairs: &[(String, String)]) -> anyhow::Result<HashMap<String, String>> {
    var_map(pairs.to_vec()).map_err(anyhow::Error::msg)
}

/// Runs a `workflow` subcommand against the server named in `global`.
pub async fn run(cmd: WorkflowCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        WorkflowCommand::Validate(source) => validate(&source, global).await,
        WorkflowCommand::Submit(args) => submit(args, global).await,
        WorkflowCommand::Get { id } => {
            let run = connect(global).await?.get_workflow(&id).await?;
            print_run(&run, global.output)
        }
        WorkflowCommand::List(args) => list(args, global).await,
        WorkflowCommand::Watch { id, after_seq } => {
            let client = connect(global).await?;
            let mode = WatchMode::for_output(global.output);
            let run = progress::watch_run(&client, &id, after_seq, 0, mode).await?;
            exit_for_run(&run)
        }
        WorkflowCommand::Cancel { id, reason } => {
            let client = connect(global).await?;
            let reason = reason.as_deref().unwrap_or("");
            let run = client.cancel_workflow(&id, reason).await?;
            match global.output {
                OutputFormat::Json => print_json(&WorkflowRunJson::from(&run)),
                OutputFormat::Text => Ok(print_line(&format!(
                    "workflow run {} {}",
                    run.id,
                    run_status_name(run.status)
                ))?),
            }
        }
        WorkflowCommand::Retry { id, watch } => {
            let client = connect(global).await?;
            let run = client.retry_workflow(&id).await?;
            if watch {
                // Only the resumed attempt: the events before its `run_retried` are
                // the attempts already shown.
                follow_new_run(&client, &run, run.retries, global.output).await
            } else {
                print_id_or_run(&run, global.output)
            }
        }
    }
}

async fn validate(source: &SourceArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let definition = source.read()?;
    let report = connect(global).await?.validate_workflow(definition).await?;
    match global.output {
        OutputFormat::Json => print_json(&ValidationJson::from(&report))?,
        OutputFormat::Text => print_stdout(&validation_text(&report))?,
    }
    if report.valid {
        Ok(())
    } else {
        // The errors were printed.
        Err(Exit {
            code: EXIT_ERROR,
            message: None,
        }
        .into())
    }
}

async fn submit(args: SubmitArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let vars = vars(&args.vars)?;
    let definition = args.source.read()?;
    let client = connect(global).await?;
    let run = client.submit_workflow(definition, vars).await?;
    if args.watch {
        follow_new_run(&client, &run, 0, global.output).await
    } else {
        print_id_or_run(&run, global.output)
    }
}

/// Prints the id of a run just started or resumed (text), then follows it to its end
/// and exits as [`exit_for_run`] says. Events before the `hide_retries`-th
/// `run_retried` are not shown.
async fn follow_new_run(
    client: &Client,
    run: &WorkflowRun,
    hide_retries: u32,
    output: OutputFormat,
) -> anyhow::Result<()> {
    if output == OutputFormat::Text {
        print_line(&run.id)?;
    }
    let mode = WatchMode::for_output(output);
    let ended = progress::watch_run(client, &run.id, 0, hide_retries, mode).await?;
    exit_for_run(&ended)
}

async fn list(args: ListArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let limit = args.limit.map_or(DEFAULT_LIST_LIMIT, |limit| {
        usize::try_from(limit).unwrap_or(usize::MAX)
    });
    let filter = list_filter(&args);
    let client = connect(global).await?;
    let (runs, next_page_token) = client.list_workflows_up_to(filter, Some(limit)).await?;
    match global.output {
        OutputFormat::Json => {
            let runs: Vec<WorkflowRunJson> = runs.iter().map(WorkflowRunJson::from).collect();
            print_json(&runs)?;
        }
        OutputFormat::Text if runs.is_empty() => print_stderr_line("no workflow runs"),
        OutputFormat::Text => print_stdout(&run_table(&runs, SystemTime::now()))?,
    }
    if !next_page_token.is_empty() && global.output == OutputFormat::Text {
        print_stderr_line(&format!(
            "(showing the first {}; use --limit N for more)",
            runs.len()
        ));
    }
    Ok(())
}

/// The request of `workflow list` (without paging).
fn list_filter(args: &ListArgs) -> ListWorkflowsRequest {
    ListWorkflowsRequest {
        status: args.status.map_or(RunStatus::Unspecified, RunStatus::from) as i32,
        name: args.name.clone().unwrap_or_default(),
        page_size: 0,
        page_token: String::new(),
    }
}

/// Prints a run in full (text) or as JSON.
fn print_run(run: &WorkflowRun, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&WorkflowRunJson::from(run)),
        OutputFormat::Text => Ok(print_stdout(&run_summary(run, SystemTime::now()))?),
    }
}

/// Prints a run's id (text) or the run as JSON.
pub fn print_id_or_run(run: &WorkflowRun, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&WorkflowRunJson::from(run)),
        OutputFormat::Text => Ok(print_line(&run.id)?),
    }
}

/// Success, or the exit code of a run that ended failed (3) or cancelled (4), as for
/// tasks.
fn exit_for_run(run: &WorkflowRun) -> anyhow::Result<()> {
    let status = run.status();
    Exit::for_ending(status == RunStatus::Failed, status == RunStatus::Cancelled)
}

#[cfg(test)]
mod tests {
    use supervisor_proto::v1::workflow_source::Source;

    use super::*;
    use crate::commands::harness::{self, Parsed};
    use crate::commands::{EXIT_TASK_CANCELLED, EXIT_TASK_FAILED};

    fn parse(args: &[&str]) -> Result<Parsed<WorkflowCommand>, clap::Error> {
        harness::parse(args)
    }

    fn submit_args(args: &[&str]) -> SubmitArgs {
        match parse(args).expect("valid arguments").command {
            WorkflowCommand::Submit(args) => args,
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn submit_takes_a_file_vars_and_watch() {
        let args = submit_args(&[
            "submit",
            "-f",
            "flow.yaml",
            "--var",
            "repo=/src/app",
            "--var",
            "issue=flaky retry=test",
            "--watch",
        ]);
        assert_eq!(args.source.file, PathBuf::from("flow.yaml"));
        assert!(args.watch);
        let vars = vars(&args.vars).expect("distinct");
        assert_eq!(vars.len(), 2);
        assert_eq!(vars["repo"], "/src/app");
        assert_eq!(vars["issue"], "flaky retry=test");

        let args = submit_args(&["submit", "--file", "-"]);
        assert_eq!(args.source.file, PathBuf::from("-"));
        assert!(args.vars.is_empty() && !args.watch);
    }

    #[test]
    fn bad_vars_are_refused() {
        let err = parse(&["submit", "-f", "f.yaml", "--var", "repo"]).expect_err("no '='");
        assert!(
            err.to_string()
                .contains("invalid variable \"repo\": expected KEY=VALUE"),
            "{err}"
        );
        let err = parse(&["submit", "-f", "f.yaml", "--var", "=x"]).expect_err("no name");
        assert!(err.to_string().contains("key before '=' is empty"), "{err}");
        let args = submit_args(&["submit", "-f", "f.yaml", "--var", "a=1", "--var", "a=2"]);
        assert_eq!(
            vars(&args.vars).expect_err("twice").to_string(),
            "variable \"a\" is given more than once"
        );
        assert!(parse(&["submit"]).is_err(), "the file is required");
    }

    #[test]
    fn the_file_extension_picks_yaml_or_json() {
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = dir.path().join("flow.yml");
        std::fs::write(&yaml, "name: fix\n").expect("write");
        let json = dir.path().join("flow.JSON");
        std::fs::write(&json, "{\"name\": \"fix\"}").expect("write");
        let read = |path: &std::path::Path| {
            SourceArgs {
                file: path.to_path_buf(),
            }
            .read()
        };

        let source = read(&yaml).expect("yaml");
        assert_eq!(source.source, Some(Source::Yaml("name: fix\n".into())));
        let source = read(&json).expect("json");
        assert_eq!(
            source.source,
            Some(Source::Json("{\"name\": \"fix\"}".into()))
        );

        let toml = dir.path().join("flow.toml");
        let err = read(&toml).expect_err("unknown extension");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot tell the format of the workflow file {}: expected a .yaml, .yml or \
                 .json file (or - for YAML on standard input)",
                toml.display()
            )
        );
        let missing = dir.path().join("missing.yaml");
        let err = read(&missing).expect_err("missing");
        // As printed: the file, then the cause.
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!(
                "could not read the workflow file {}: ",
                missing.display()
            )),
            "{text}"
        );
        assert_eq!(text.matches("os error").count(), 1, "{text}");
    }

    #[test]
    fn list_filters() {
        let cli = parse(&[
            "list", "--status", "failed", "--name", "nightly", "--limit", "5", "--output", "json",
        ])
        .expect("valid");
        assert_eq!(cli.global.output, OutputFormat::Json);
        let WorkflowCommand::List(args) = cli.command else {
            panic!("not a list");
        };
        assert_eq!(args.limit, Some(5));
        let filter = list_filter(&args);
        assert_eq!(filter.status(), RunStatus::Failed);
        assert_eq!(filter.name, "nightly");

        let WorkflowCommand::List(args) = parse(&["list"]).expect("valid").command else {
            panic!("not a list");
        };
        assert_eq!(list_filter(&args).status(), RunStatus::Unspecified);
        assert!(list_filter(&args).name.is_empty());

        let err = parse(&["list", "--status", "done"]).expect_err("unknown status");
        assert!(
            err.to_string()
                .contains("[possible values: running, succeeded, failed, cancelled]"),
            "{err}"
        );
        assert!(parse(&["list", "--limit", "0"]).is_err());
    }

    #[test]
    fn watch_cancel_and_retry_arguments() {
        let cli = parse(&["watch", "r1", "--after-seq", "7"]).expect("valid");
        assert!(
            matches!(cli.command, WorkflowCommand::Watch { ref id, after_seq: 7 } if id == "r1")
        );
        let cli = parse(&["cancel", "r1", "--reason", "not needed"]).expect("valid");
        assert!(
            matches!(cli.command, WorkflowCommand::Cancel { reason: Some(ref r), .. } if r == "not needed")
        );
        let cli = parse(&["retry", "r1", "--watch"]).expect("valid");
        assert!(matches!(
            cli.command,
            WorkflowCommand::Retry { watch: true, .. }
        ));
        let cli = parse(&["validate", "-f", "flow.json"]).expect("valid");
        assert!(
            matches!(cli.command, WorkflowCommand::Validate(ref s) if s.file.as_os_str() == "flow.json")
        );
    }

    #[test]
    fn exit_codes_follow_the_run_status() {
        let run = |status: RunStatus| WorkflowRun {
            status: status as i32,
            ..Default::default()
        };
        assert!(exit_for_run(&run(RunStatus::Succeeded)).is_ok());
        let code = |status| {
            exit_for_run(&run(status))
                .expect_err("non-zero")
                .downcast_ref::<Exit>()
                .map(|exit| exit.code)
        };
        assert_eq!(code(RunStatus::Failed), Some(EXIT_TASK_FAILED));
        assert_eq!(code(RunStatus::Cancelled), Some(EXIT_TASK_CANCELLED));
    }
}
