//! What the commands' tests share: a subject's command line parsed as `supervisor`
//! parses it, and fixed instants to render times at.

use std::time::SystemTime;

use clap::{Parser, Subcommand};
use supervisor_proto::convert::timestamp_from_micros;

use crate::commands::{GlobalArgs, output::system_time};

/// A subject's subcommand `C` with the global options, as `supervisor <subject> ...`
/// reads them.
#[derive(Debug, Parser)]
pub struct Parsed<C: Subcommand> {
    /// `--server`, `--output`.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The subject's subcommand.
    #[command(subcommand)]
    pub command: C,
}

/// Parses what follows the subject's name (`["submit", "--type", "bug_fix", ...]`).
pub fn parse<C: Subcommand>(args: &[&str]) -> Result<Parsed<C>, clap::Error> {
    Parsed::try_parse_from(std::iter::once("supervisor").chain(args.iter().copied()))
}

/// 2023-11-14T22:13:20Z, in microseconds since the epoch: the instant tests set their
/// timestamps around.
pub const T0: i64 = 1_700_000_000_000_000;

/// The instant `micros` microseconds after the epoch.
pub fn at(micros: i64) -> SystemTime {
    system_time(&timestamp_from_micros(micros)).expect("valid")
}
