//! `supervisor providers ...`: what the node's providers are doing.

use clap::Subcommand;

use super::{
    GlobalArgs, OutputFormat, connect, format::providers_table, json::ProviderJson, print_json,
    print_stdout,
};

/// Inspect the providers of the node the client is connected to.
#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// List the providers with their health and counters.
    List,
}

/// Runs a `providers` subcommand against the server named in `global`.
pub async fn run(cmd: ProviderCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        ProviderCommand::List => {
            let providers = connect(global).await?.providers().await?;
            match global.output {
                OutputFormat::Json => {
                    let providers: Vec<ProviderJson> =
                        providers.iter().map(ProviderJson::from).collect();
                    print_json(&providers)
                }
                OutputFormat::Text if providers.is_empty() => {
                    eprintln!("no providers");
                    Ok(())
                }
                OutputFormat::Text => Ok(print_stdout(&providers_table(&providers))?),
            }
        }
    }
}
