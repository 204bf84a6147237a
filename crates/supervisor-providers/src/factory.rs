//! Builds providers from their configuration.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Provider;
use crate::config::ProviderConfig;
use crate::mock::MockProvider;
use crate::pricing::PriceTable;

/// What a provider may need from the node that builds it.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The node's data directory (the Claude CLI makes worktrees under it by default).
    pub data_dir: PathBuf,
}

/// Builds the provider `name` described by `cfg`. Errors say what to fix in the config
/// (a missing API key variable, an unreadable key file...).
pub fn build(
    name: &str,
    cfg: &ProviderConfig,
    prices: Arc<PriceTable>,
    ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    Ok(match cfg {
        ProviderConfig::Mock(c) => {
            c.validate().map_err(|e| format!("provider {name}: {e}"))?;
            Arc::new(MockProvider::new(name, c.clone()))
        }
        ProviderConfig::Anthropic(c) => crate::anthropic::build(name, c, prices, ctx)?,
        ProviderConfig::Openai(c) => crate::openai::build(name, c, prices, ctx)?,
        ProviderConfig::ClaudeCli(c) => crate::claude_cli::build(name, c, prices, ctx)?,
    })
}
