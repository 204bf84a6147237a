//! `supervisor schedule ...`: create, list, pause, resume, trigger and delete schedules
//! that start workflow runs on a cron.

mod json;
mod text;

use std::time::SystemTime;

use clap::{Args, Subcommand, ValueEnum};
use supervisor_client::schedule_block;
use supervisor_proto::v1::{CreateScheduleRequest, Schedule};

use crate::commands::{
    GlobalArgs, connect,
    output::{OutputFormat, print_json, print_line, print_stderr_line, print_stdout},
    parse::{parse_cron, parse_var},
    workflow::{SourceArgs, print_id_or_run, vars},
};

use json::ScheduleJson;
use text::{schedule_next, schedule_table, timezone_name};

/// Create, list, pause, resume, trigger and delete schedules of workflow runs.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule that starts runs of a workflow on a cron, or replace the
    /// schedule of that name.
    Create(CreateArgs),
    /// List the schedules, with their next and last runs.
    List,
    /// Stop a schedule from starting runs until it is resumed.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Let a paused schedule start runs again, from its next tick.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Start a run of the schedule's workflow now, outside its ticks; prints the run's
    /// id.
    Trigger {
        /// The schedule's name.
        name: String,
    },
    /// Delete a schedule (the runs it started are kept).
    Delete {
        /// The schedule's name.
        name: String,
    },
}

/// Options of `schedule create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The schedule's name; a schedule of that name is replaced.
    pub name: String,
    /// When to start runs: a cron expression with 5 fields (minute hour day-of-month
    /// month day-of-week), or 6 with seconds first, such as "0 3 * * *" (default: the
    /// file's `schedule:` block).
    #[arg(long, value_name = "EXPR", value_parser = parse_cron)]
    pub cron: Option<String>,
    /// The IANA time zone the cron is read in, such as Europe/Paris (default: the file's
    /// `schedule:` block, else UTC).
    #[arg(long = "tz", value_name = "ZONE")]
    pub timezone: Option<String>,
    /// What to do about ticks missed while no node ran (default: the file's `schedule:`
    /// block, else skip).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub missed: Option<MissedArg>,
    /// The workflow definition file.
    #[command(flatten)]
    pub source: SourceArgs,
    /// A variable overriding the definition's in every run, such as repo=/src/app
    /// (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
}

/// What a schedule does about ticks missed while no node ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MissedArg {
    /// Start nothing for the missed ticks.
    #[value(name = "skip")]
    Skip,
    /// Start one run for all the missed ticks.
    #[value(name = "catch_up_one", alias = "catch-up-one")]
    CatchUpOne,
}

impl MissedArg {
    /// The name the API takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::CatchUpOne => "catch_up_one",
        }
    }
}

/// Builds the request of `schedule create`, reading the definition file. Flags left out
/// are left empty, for the server to take from the file's `schedule:` block; the notes
/// returned say which flags override that block.
fn create_request(args: &CreateArgs) -> anyhow::Result<(CreateScheduleRequest, Vec<String>)> {
    let name = args.name.trim();
    if name.is_empty() {
        anyhow::bail!("the schedule name is empty");
    }
    let vars = vars(&args.vars)?;
    let source = args.source.read()?;
    let block = schedule_block(&source);
    let timezone = args.timezone.as_deref().map(str::trim).unwrap_or_default();
    let missed = args.missed.map(MissedArg::as_str).unwrap_or_default();
    let cron = args.cron.clone().unwrap_or_default();
    let mut notes = Vec::new();
    match &block {
        None if cron.is_empty() => anyhow::bail!(
            "give --cron: {} has no `schedule:` block",
            args.source.file.display()
        ),
        None => {}
        Some(block) => {
            for (flag, given, in_file) in [
                ("--cron", cron.as_str(), block.cron.as_str()),
                ("--tz", timezone, block.timezone.as_str()),
                ("--missed", missed, block.missed),
            ] {
                if !given.is_empty() && given != in_file {
                    notes.push(format!(
                        "note: {flag} {given} overrides the file's schedule ({} {in_file:?})",
                        flag.trim_start_matches('-')
                    ));
                }
            }
        }
    }
    let request = CreateScheduleRequest {
        name: name.to_owned(),
        cron,
        timezone: timezone.to_owned(),
        missed: missed.to_owned(),
        source: Some(source),
        vars,
    };
    Ok((request, notes))
}

/// Runs a `schedule` subcommand against the server named in `global`.
pub async fn run(cmd: ScheduleCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        ScheduleCommand::Create(args) => {
            let (request, notes) = create_request(&args)?;
            for note in notes {
                eprintln!("{note}");
            }
            let schedule = connect(global).await?.create_schedule(request).await?;
            print_schedule(&schedule, global.output, &saved_line(&schedule))
        }
        ScheduleCommand::List => {
            let schedules = connect(global).await?.list_schedules().await?;
            match global.output {
                OutputFormat::Json => {
                    let schedules: Vec<ScheduleJson> =
                        schedules.iter().map(ScheduleJson::from).collect();
                    print_json(&schedules)
                }
                OutputFormat::Text if schedules.is_empty() => {
                    print_stderr_line("no schedules");
                    Ok(())
                }
                OutputFormat::Text => Ok(print_stdout(&schedule_table(
                    &schedules,
                    SystemTime::now(),
                ))?),
            }
        }
        ScheduleCommand::Pause { name } => {
            let schedule = connect(global).await?.pause_schedule(&name).await?;
            let line = format!("schedule {} paused", schedule.name);
            print_schedule(&schedule, global.output, &line)
        }
        ScheduleCommand::Resume { name } => {
            let schedule = connect(global).await?.resume_schedule(&name).await?;
            let line = format!(
                "schedule {} resumed; {}",
                schedule.name,
                schedule_next(&schedule)
            );
            print_schedule(&schedule, global.output, &line)
        }
        ScheduleCommand::Trigger { name } => {
            let run = connect(global).await?.trigger_schedule(&name).await?;
            print_id_or_run(&run, global.output)
        }
        ScheduleCommand::Delete { name } => {
            let schedule = connect(global).await?.delete_schedule(&name).await?;
            let line = format!("schedule {} deleted", schedule.name);
            print_schedule(&schedule, global.output, &line)
        }
    }
}

/// `schedule nightly saved: fix-and-review at "0 3 * * *" (Europe/Paris); next run at …`.
fn saved_line(schedule: &Schedule) -> String {
    let workflow = if schedule.workflow_name.is_empty() {
        String::new()
    } else {
        format!(" {}", schedule.workflow_name)
    };
    format!(
        "schedule {} saved:{workflow} at \"{}\" ({}); {}",
        schedule.name,
        schedule.cron,
        timezone_name(&schedule.timezone),
        schedule_next(schedule)
    )
}

/// Prints `line` (text) or the schedule as JSON.
fn print_schedule(schedule: &Schedule, output: OutputFormat, line: &str) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&ScheduleJson::from(schedule)),
        OutputFormat::Text => Ok(print_line(line)?),
    }
}

#[cfg(test)]
mod tests {
    use supervisor_proto::{convert::timestamp_from_micros, v1::workflow_source::Source};

    use super::*;
    use crate::commands::harness::{self, Parsed, T0};

    fn parse(args: &[&str]) -> Result<Parsed<ScheduleCommand>, clap::Error> {
        harness::parse(args)
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        match parse(args).expect("valid arguments").command {
            ScheduleCommand::Create(args) => args,
            other => panic!("not a create: {other:?}"),
        }
    }

    #[test]
    fn create_builds_the_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("nightly.yaml");
        std::fs::write(&file, "name: audit\n").expect("write");
        let file = file.to_str().expect("utf-8 path");
        let args = create_args(&[
            "create",
            "nightly",
            "--cron",
            "0  3 * * *",
            "--tz",
            "Europe/Paris",
            "--missed",
            "catch-up-one",
            "-f",
            file,
            "--var",
            "repo=/src",
        ]);
        let (request, notes) = create_request(&args).expect("request");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(request.name, "nightly");
        assert_eq!(request.cron, "0 3 * * *");
        assert_eq!(request.timezone, "Europe/Paris");
        assert_eq!(request.missed, "catch_up_one");
        assert_eq!(request.vars["repo"], "/src");
        assert_eq!(
            request.source.and_then(|s| s.source),
            Some(Source::Yaml("name: audit\n".into()))
        );

        // Defaults are left to the server: UTC, skip.
        let args = create_args(&["create", "n", "--cron", "0 3 * * *", "-f", file]);
        let (request, _) = create_request(&args).expect("request");
        assert!(request.timezone.is_empty() && request.missed.is_empty());
    }

    #[test]
    fn create_takes_the_files_schedule_unless_flags_override_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("nightly.yaml");
        std::fs::write(
            &file,
            "name: audit\nschedule: { cron: \"30 2 * * *\", timezone: Europe/Paris, missed: catch_up_one }\n",
        )
        .expect("write");
        let file = file.to_str().expect("utf-8 path");
        // No flag: every field is left to the file's block.
        let (request, notes) =
            create_request(&create_args(&["create", "n", "-f", file])).expect("request");
        assert!(
            request.cron.is_empty() && request.timezone.is_empty() && request.missed.is_empty()
        );
        assert!(notes.is_empty(), "{notes:?}");
        // A flag overrides its field and says so; one that agrees says nothing.
        let (request, notes) = create_request(&create_args(&[
            "create",
            "n",
            "-f",
            file,
            "--cron",
            "0 4 * * *",
            "--tz",
            "Europe/Paris",
        ]))
        .expect("request");
        assert_eq!(request.cron, "0 4 * * *");
        assert_eq!(
            notes,
            ["note: --cron 0 4 * * * overrides the file's schedule (cron \"30 2 * * *\")"]
        );
        // Without a block, --cron is required.
        let bare = dir.path().join("bare.yaml");
        std::fs::write(&bare, "name: audit\n").expect("write");
        let err = create_request(&create_args(&["create", "n", "-f", bare.to_str().unwrap()]))
            .expect_err("no cron anywhere");
        assert!(err.to_string().starts_with("give --cron: "), "{err}");
    }

    #[test]
    fn create_refuses_bad_input() {
        let err = parse(&["create", "n", "--cron", "daily", "-f", "f.yaml"]).expect_err("cron");
        assert!(err.to_string().contains("invalid cron \"daily\""), "{err}");
        let err = parse(&[
            "create",
            "n",
            "--cron",
            "0 3 * * *",
            "-f",
            "f.yaml",
            "--missed",
            "all",
        ])
        .expect_err("missed");
        assert!(
            err.to_string()
                .contains("[possible values: skip, catch_up_one]"),
            "{err}"
        );
        assert!(
            parse(&["create", "n", "--cron", "0 3 * * *"]).is_err(),
            "file required"
        );
        let args = create_args(&["create", " ", "--cron", "0 3 * * *", "-f", "f.yaml"]);
        assert_eq!(
            create_request(&args).expect_err("blank").to_string(),
            "the schedule name is empty"
        );
        let args = create_args(&["create", "n", "--cron", "0 3 * * *", "-f", "f.txt"]);
        assert!(
            create_request(&args)
                .expect_err("extension")
                .to_string()
                .starts_with("cannot tell the format of the workflow file f.txt"),
        );
    }

    #[test]
    fn name_commands() {
        for (verb, expected) in [
            ("pause", "pause"),
            ("resume", "resume"),
            ("trigger", "trigger"),
            ("delete", "delete"),
        ] {
            let cli = parse(&[verb, "nightly"]).expect("valid");
            let (got, name) = match cli.command {
                ScheduleCommand::Pause { name } => ("pause", name),
                ScheduleCommand::Resume { name } => ("resume", name),
                ScheduleCommand::Trigger { name } => ("trigger", name),
                ScheduleCommand::Delete { name } => ("delete", name),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!((got, name.as_str()), (expected, "nightly"));
        }
        assert!(parse(&["pause"]).is_err(), "name required");
    }

    #[test]
    fn text_lines() {
        let schedule = Schedule {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            workflow_name: "audit".into(),
            next_fire_at: Some(timestamp_from_micros(T0)),
            ..Default::default()
        };
        assert_eq!(
            saved_line(&schedule),
            "schedule nightly saved: audit at \"0 3 * * *\" (UTC); \
             next run at 2023-11-14T22:13:20Z"
        );
        let paused = Schedule {
            paused: true,
            ..schedule
        };
        assert_eq!(
            saved_line(&paused),
            "schedule nightly saved: audit at \"0 3 * * *\" (UTC); paused"
        );
    }
}
