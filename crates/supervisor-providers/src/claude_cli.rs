//! Placeholder: the claude_cli provider is being written on its own branch.

use std::sync::Arc;

use crate::Provider;
use crate::config::ClaudeCliConfig;
use crate::factory::BuildContext;
use crate::pricing::PriceTable;

/// Builds the claude_cli provider named `name` from its config.
pub fn build(
    name: &str,
    _cfg: &ClaudeCliConfig,
    _prices: Arc<PriceTable>,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    Err(format!(
        "provider {name}: the claude_cli kind is not available in this build yet"
    ))
}
