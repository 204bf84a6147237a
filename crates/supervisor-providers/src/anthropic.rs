//! Placeholder: the anthropic provider is being written on its own branch.

use std::sync::Arc;

use crate::Provider;
use crate::config::AnthropicConfig;
use crate::factory::BuildContext;
use crate::pricing::PriceTable;

/// Builds the anthropic provider named `name` from its config.
pub fn build(
    name: &str,
    _cfg: &AnthropicConfig,
    _prices: Arc<PriceTable>,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    Err(format!(
        "provider {name}: the anthropic kind is not available in this build yet"
    ))
}
