//! Placeholder: the openai provider is being written on its own branch.

use std::sync::Arc;

use crate::Provider;
use crate::config::OpenAiConfig;
use crate::factory::BuildContext;
use crate::pricing::PriceTable;

/// Builds the openai provider named `name` from its config.
pub fn build(
    name: &str,
    _cfg: &OpenAiConfig,
    _prices: Arc<PriceTable>,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    Err(format!(
        "provider {name}: the openai kind is not available in this build yet"
    ))
}
