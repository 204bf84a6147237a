//! `supervisor providers ...`: what the node's providers are doing and what they cost.

mod json;
mod text;

use std::{
    io::IsTerminal as _,
    time::{Duration, SystemTime},
};

use anyhow::bail;
use clap::{Args, Subcommand};
use futures::StreamExt as _;
use supervisor_proto::v1::ProviderInfo;

use crate::commands::{
    EXIT_INTERRUPTED, Exit, GlobalArgs, connect,
    follow::ctrl_c,
    output::{
        OutputFormat, escape_line, print_json, print_stderr_line, print_stdout, print_stdout_exact,
        truncate,
    },
    parse::{parse_day, parse_timeout},
    terminal::{Size, size},
};

use json::{ProviderJson, SpendJson};
use text::{providers_table, spend_table};

/// Moves the cursor home and clears the screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// Inspect the providers of the node the client is connected to.
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// List the providers with their health, circuit breaker, limits, latency and spend.
    List,
    /// Show the provider list again whenever it changes, until Ctrl-C (exit 130).
    Watch {
        /// Shortest time between two updates, such as 1s or 500ms.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_timeout)]
        interval: Duration,
    },
    /// Spend per day and provider, from the durable ledger.
    Spend(SpendArgs),
}

/// Options of `providers spend`.
#[derive(Debug, Args)]
pub struct SpendArgs {
    /// First day, YYYY-MM-DD in UTC (default: today, or the --to day when only that is
    /// given).
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD in UTC (default: today).
    #[arg(long, value_name = "DAY", value_parser = parse_day)]
    pub to: Option<String>,
}

/// Runs a `providers` subcommand against the server named in `global`.
pub async fn run(cmd: ProviderCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        ProviderCommand::List => {
            let providers = connect(global).await?.providers().await?;
            match global.output {
                OutputFormat::Json => print_json(&providers_json(&providers)),
                OutputFormat::Text if providers.is_empty() => {
                    print_stderr_line("no providers");
                    Ok(())
                }
                OutputFormat::Text => Ok(print_stdout(&providers_table(&providers))?),
            }
        }
        ProviderCommand::Watch { interval } => watch(global, interval).await,
        ProviderCommand::Spend(args) => spend(global, args).await,
    }
}

fn providers_json(providers: &[ProviderInfo]) -> Vec<ProviderJson> {
    providers.iter().map(ProviderJson::from).collect()
}

/// How `providers watch` shows each list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchView {
    /// The screen cleared and the table redrawn under a heading, cut to fit a terminal
    /// of this size (stdout is a terminal; the size is read again for each list).
    Redraw(Size),
    /// Each table followed by a blank line (stdout is not a terminal).
    Plain,
    /// One JSON array per line.
    JsonLines,
}

/// What `providers watch` prints for one list, escaped. `addr` and `now` go in the
/// heading of the [`WatchView::Redraw`] view, whose lines are cut to the terminal's
/// width (less one column, so none wraps) and, when they would not fit its height, end
/// with a count of the rows left out.
fn watch_frame(
    view: WatchView,
    providers: &[ProviderInfo],
    addr: &str,
    now: SystemTime,
) -> anyhow::Result<String> {
    let table = if providers.is_empty() {
        "no providers\n".to_owned()
    } else {
        providers_table(providers)
    };
    Ok(match view {
        WatchView::Redraw(screen) => {
            let at = humantime::format_rfc3339_seconds(now);
            let heading = format!("providers of {addr} at {at} (Ctrl-C to stop)");
            let mut lines: Vec<String> = vec![escape_line(&heading).into_owned(), String::new()];
            lines.extend(table.lines().map(str::to_owned));
            // The last row stays free for the cursor, so the screen never scrolls.
            let room = screen.height.saturating_sub(1).max(3);
            if lines.len() > room {
                let left_out = lines.len() - (room - 1);
                lines.truncate(room - 1);
                lines.push(format!(
                    "… {left_out} more rows (a taller window shows them)"
                ));
            }
            let mut frame = CLEAR_SCREEN.to_owned();
            for line in lines {
                frame.push_str(&truncate(&line, screen.width.saturating_sub(1)));
                frame.push('\n');
            }
            frame
        }
        WatchView::Plain => format!("{table}\n"),
        WatchView::JsonLines => {
            let mut line = serde_json::to_string(&providers_json(providers))?;
            line.push('\n');
            line
        }
    })
}

/// Prints the provider list each time the server sends it, until Ctrl-C.
async fn watch(global: &GlobalArgs, interval: Duration) -> anyhow::Result<()> {
    let view = || match global.output {
        OutputFormat::Json => WatchView::JsonLines,
        OutputFormat::Text if std::io::stdout().is_terminal() => WatchView::Redraw(size()),
        OutputFormat::Text => WatchView::Plain,
    };
    let client = connect(global).await?;
    let mut lists = client.watch_providers(interval);
    let interrupted = ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            item = lists.next() => match item {
                Some(Ok(providers)) => {
                    let frame = watch_frame(view(), &providers, client.addr(), SystemTime::now())?;
                    print_stdout_exact(&frame)?;
                }
                Some(Err(err)) => return Err(err.into()),
                None => bail!("the server ended the provider stream"),
            },
            () = &mut interrupted => {
                return Err(Exit { code: EXIT_INTERRUPTED, message: None }.into());
            }
        }
    }
}

/// The days of a spend request: `--to` alone asks for that one day.
fn spend_days(args: &SpendArgs) -> anyhow::Result<(Option<&str>, Option<&str>)> {
    let to = args.to.as_deref();
    let from = args.from.as_deref().or(to);
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        bail!("--from {from} is after --to {to}");
    }
    Ok((from, to))
}

/// Words for the days asked, for the message of an empty report.
fn period(from: Option<&str>, to: Option<&str>) -> String {
    match (from, to) {
        (None, None) => "today".to_owned(),
        (Some(from), None) => format!("from {from} to today"),
        (None, Some(to)) => format!("from today to {to}"),
        (Some(from), Some(to)) if from == to => format!("on {from}"),
        (Some(from), Some(to)) => format!("from {from} to {to}"),
    }
}

async fn spend(global: &GlobalArgs, args: SpendArgs) -> anyhow::Result<()> {
    let (from, to) = spend_days(&args)?;
    let spend = connect(global).await?.spend(from, to).await?;
    match global.output {
        OutputFormat::Json => print_json(&SpendJson::from(&spend)),
        OutputFormat::Text if spend.rows.is_empty() => {
            print_stderr_line(&format!("no spend recorded {}", period(from, to)));
            Ok(())
        }
        OutputFormat::Text => Ok(print_stdout(&spend_table(&spend))?),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::commands::harness::{self, Parsed, T0};
    use crate::commands::output::width;

    fn parse(args: &[&str]) -> Result<Parsed<ProviderCommand>, clap::Error> {
        harness::parse(args)
    }

    fn spend_args(args: &[&str]) -> SpendArgs {
        match parse(args).expect("valid arguments").command {
            ProviderCommand::Spend(args) => args,
            other => panic!("not a spend: {other:?}"),
        }
    }

    #[test]
    fn watch_interval_defaults_to_a_second() {
        let cli = parse(&["watch"]).expect("valid");
        assert!(matches!(
            cli.command,
            ProviderCommand::Watch { interval } if interval == Duration::from_secs(1)
        ));
        let cli = parse(&["watch", "--interval", "250ms"]).expect("valid");
        assert!(matches!(
            cli.command,
            ProviderCommand::Watch { interval } if interval == Duration::from_millis(250)
        ));
        let err = parse(&["watch", "--interval", "5"]).expect_err("no unit");
        assert!(err.to_string().contains("invalid duration \"5\""), "{err}");
    }

    #[test]
    fn spend_days_default_to_the_server_and_to_alone_is_one_day() {
        assert_eq!(spend_days(&spend_args(&["spend"])).ok(), Some((None, None)));
        let args = spend_args(&["spend", "--from", "2026-01-01"]);
        assert_eq!(spend_days(&args).ok(), Some((Some("2026-01-01"), None)));
        let args = spend_args(&["spend", "--to", "2026-01-05"]);
        assert_eq!(
            spend_days(&args).ok(),
            Some((Some("2026-01-05"), Some("2026-01-05")))
        );
        let args = spend_args(&["spend", "--from", "2026-02-01", "--to", "2026-01-31"]);
        assert_eq!(
            spend_days(&args).expect_err("backwards").to_string(),
            "--from 2026-02-01 is after --to 2026-01-31"
        );
        let err = parse(&["spend", "--from", "yesterday"]).expect_err("not a day");
        assert!(err.to_string().contains("expected YYYY-MM-DD"), "{err}");
        assert_eq!(period(None, None), "today");
        assert_eq!(
            period(Some("2026-01-05"), Some("2026-01-05")),
            "on 2026-01-05"
        );
        assert_eq!(period(Some("2026-01-01"), None), "from 2026-01-01 to today");
    }

    fn provider() -> ProviderInfo {
        ProviderInfo {
            name: "mock".into(),
            kind: "mock".into(),
            healthy: true,
            circuit: "closed".into(),
            max_concurrency: 4,
            success_rate: -1.0,
            latency_p50_ms: -1.0,
            latency_p95_ms: -1.0,
            ..Default::default()
        }
    }

    #[test]
    fn watch_frames() {
        let now = harness::at(T0);
        let providers = [provider()];
        let table = providers_table(&providers);

        let frame = watch_frame(WatchView::Plain, &providers, "http://h:1", now).expect("frame");
        assert_eq!(frame, format!("{table}\n"));

        let wide = WatchView::Redraw(Size {
            width: 220,
            height: 50,
        });
        let frame = watch_frame(wide, &providers, "http://h:1", now).expect("frame");
        assert_eq!(
            frame,
            format!(
                "{CLEAR_SCREEN}providers of http://h:1 at 2023-11-14T22:13:20Z \
                 (Ctrl-C to stop)\n\n{table}"
            )
        );
        let empty = watch_frame(WatchView::Plain, &[], "http://h:1", now).expect("frame");
        assert_eq!(empty, "no providers\n\n");

        let line = watch_frame(WatchView::JsonLines, &providers, "http://h:1", now).expect("frame");
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value[0]["name"], "mock");
        assert_eq!(value[0]["circuit"], "closed");
        assert_eq!(value[0]["success_rate"], serde_json::Value::Null);
        let empty = watch_frame(WatchView::JsonLines, &[], "http://h:1", now).expect("frame");
        assert_eq!(empty, "[]\n");
    }

    #[test]
    fn redrawn_frames_fit_the_terminal() {
        let now = harness::at(T0);
        let providers: Vec<_> = (0..20)
            .map(|n| ProviderInfo {
                name: format!("p{n}"),
                ..provider()
            })
            .collect();
        let small = Size {
            width: 50,
            height: 10,
        };
        let frame =
            watch_frame(WatchView::Redraw(small), &providers, "http://h:1", now).expect("frame");
        let body = frame.strip_prefix(CLEAR_SCREEN).expect("clears first");
        let lines: Vec<_> = body.lines().collect();
        assert_eq!(lines.len(), 9, "the last row stays free: {body}");
        assert!(lines.iter().all(|l| width(l) <= 49), "{body}");
        assert!(lines[8].starts_with("… 17 more rows"), "{body}");
    }

    #[test]
    fn hostile_text_is_escaped_in_every_view() {
        let now = harness::at(T0);
        let mut hostile = provider();
        hostile.health_detail = "bad\x1b[2J\nkey".into();
        let big = Size {
            width: 500,
            height: 50,
        };
        for view in [WatchView::Redraw(big), WatchView::Plain] {
            let frame = watch_frame(view, &[hostile.clone()], "h\x1b:1", now).expect("frame");
            let body = frame.strip_prefix(CLEAR_SCREEN).unwrap_or(&frame);
            assert!(!body.contains('\x1b'), "{body:?}");
            assert!(body.contains("bad\\e[2J\\nkey"), "{body:?}");
        }
        // JSON is exact.
        let line = watch_frame(WatchView::JsonLines, &[hostile], "h", now).expect("frame");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value[0]["health_detail"], "bad\x1b[2J\nkey");
    }
}
