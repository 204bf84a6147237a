//! Builds providers from their configuration.

use std::sync::Arc;

use crate::Provider;
pub use crate::config::BuildContext;
use crate::config::ProviderConfig;
use crate::mock::MockProvider;
use crate::pricing::PriceTable;

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
        ProviderConfig::Plugin(c) => crate::plugin::build(name, c, prices, ctx)?,
    })
}
