//! What the commands' tests share: a subject's command line parsed as `supervisor`
//! parses it, and fixed instants to render times at.

use std::time::SystemTime;

use clap::{Parser, Subcommand};
use supervisor_proto::convert::timestamp_from_micros;

use crate::commands::{ClientArgs, GlobalArgs, output::system_time};

/// A subject's subcommand `C` with its client options, as `supervisor <subject> ...`
/// reads them.
#[derive(Debug, Parser)]
struct Subject<C: Subcommand> {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: C,
}

/// A subject's subcommand `C` parsed, with the client options resolved.
#[derive(Debug)]
pub struct Parsed<C> {
    /// `--server`, `--output` (or their defaults).
    pub global: GlobalArgs,
    /// The subject's subcommand.
    pub command: C,
}

/// Parses what follows the subject's name (`["submit", "--type", "bug_fix", ...]`).
pub fn parse<C: Subcommand>(args: &[&str]) -> Result<Parsed<C>, clap::Error> {
    let subject =
        Subject::<C>::try_parse_from(std::iter::once("supervisor").chain(args.iter().copied()))?;
    Ok(Parsed {
        global: GlobalArgs::resolve(&ClientArgs::default(), &subject.client),
        command: subject.command,
    })
}

/// 2023-11-14T22:13:20Z, in microseconds since the epoch: the instant tests set their
/// timestamps around.
pub const T0: i64 = 1_700_000_000_000_000;

/// The instant `micros` microseconds after the epoch.
pub fn at(micros: i64) -> SystemTime {
    system_time(&timestamp_from_micros(micros)).expect("valid")
}
