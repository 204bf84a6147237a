//! What tokens cost: a price table per model (input, output, cache read, cache write, per
//! million tokens), with defaults for current Claude and OpenAI models, overridable in the
//! config. Costs are kept in millionths of a dollar (integers) so sums are exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use supervisor_model::Usage;

/// Prices of one model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Tokens read from the prompt cache (default: 10% of input).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Tokens written to the prompt cache (default: 125% of input).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl ModelPrice {
    const fn new(input: f64, output: f64) -> Self {
        ModelPrice {
            input,
            output,
            cache_read: None,
            cache_write: None,
        }
    }

    /// Cost of `usage` in millionths of a dollar, rounded up.
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        // $/Mtok equals micro-dollars per token.
        let micros = usage.input_tokens as f64 * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cache_read_tokens as f64 * self.cache_read.unwrap_or(self.input * 0.1)
            + usage.cache_write_tokens as f64 * self.cache_write.unwrap_or(self.input * 1.25);
        micros.max(0.0).ceil() as u64
    }
}

/// Built-in prices (US dollars per million tokens). Models match by exact name first,
/// then by the longest known prefix, so dated snapshots (`claude-sonnet-4-5-20250929`)
/// find their family.
const DEFAULTS: &[(&str, ModelPrice)] = &[
    ("claude-opus-4", ModelPrice::new(15.0, 75.0)),
    ("claude-opus-4-5", ModelPrice::new(5.0, 25.0)),
    ("claude-sonnet-4", ModelPrice::new(3.0, 15.0)),
    ("claude-3-7-sonnet", ModelPrice::new(3.0, 15.0)),
    ("claude-3-5-sonnet", ModelPrice::new(3.0, 15.0)),
    ("claude-haiku-4-5", ModelPrice::new(1.0, 5.0)),
    ("claude-3-5-haiku", ModelPrice::new(0.8, 4.0)),
    ("gpt-4o", ModelPrice::new(2.5, 10.0)),
    ("gpt-4o-mini", ModelPrice::new(0.15, 0.6)),
    ("gpt-4.1", ModelPrice::new(2.0, 8.0)),
    ("gpt-4.1-mini", ModelPrice::new(0.4, 1.6)),
    ("gpt-4.1-nano", ModelPrice::new(0.1, 0.4)),
    ("o3", ModelPrice::new(2.0, 8.0)),
    ("o4-mini", ModelPrice::new(1.1, 4.4)),
    ("gpt-5", ModelPrice::new(1.25, 10.0)),
    ("gpt-5-mini", ModelPrice::new(0.25, 2.0)),
    ("mock-1", ModelPrice::new(0.0, 0.0)),
];

/// The price table in force: defaults plus the config's additions and overrides.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    /// Model name (or prefix) → price; entries here win over the defaults.
    pub overrides: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// The price of `model`, if the table knows it.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        let lookup = |name: &str| -> Option<ModelPrice> {
            self.overrides
                .get(name)
                .copied()
                .or_else(|| DEFAULTS.iter().find(|(m, _)| *m == name).map(|(_, p)| *p))
        };
        if let Some(p) = lookup(model) {
            return Some(p);
        }
        let mut best: Option<(&str, ModelPrice)> = None;
        let candidates = self
            .overrides
            .iter()
            .map(|(m, p)| (m.as_str(), *p))
            .chain(DEFAULTS.iter().map(|(m, p)| (*m, *p)));
        for (name, price) in candidates {
            let better = best.is_none_or(|(b, _)| name.len() > b.len());
            if model.starts_with(name) && better {
                best = Some((name, price));
            }
        }
        best.map(|(_, p)| p)
    }

    /// Cost of `usage` on `model` in millionths of a dollar; `None` for an unknown model.
    pub fn cost_micros(&self, model: &str, usage: &Usage) -> Option<u64> {
        self.price(model).map(|p| p.cost_micros(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_snapshots_find_their_family() {
        let t = PriceTable::default();
        assert_eq!(
            t.price("claude-sonnet-4-5-20250929"),
            Some(ModelPrice::new(3.0, 15.0))
        );
        // The longest prefix wins: opus-4-5 is not priced as opus-4.
        assert_eq!(
            t.price("claude-opus-4-5-20251101"),
            Some(ModelPrice::new(5.0, 25.0))
        );
        assert_eq!(
            t.price("gpt-4o-mini-2024-07-18"),
            Some(ModelPrice::new(0.15, 0.6))
        );
        assert_eq!(t.price("llama-3-70b"), None);
    }

    #[test]
    fn cost_is_exact_in_micro_dollars() {
        let t = PriceTable::default();
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            ..Usage::default()
        };
        // $3 + $1.50
        assert_eq!(t.cost_micros("claude-sonnet-4-5", &usage), Some(4_500_000));
    }

    #[test]
    fn overrides_win_and_add_models() {
        let mut t = PriceTable::default();
        t.overrides
            .insert("llama-3".into(), ModelPrice::new(0.5, 0.5));
        t.overrides
            .insert("gpt-4o".into(), ModelPrice::new(1.0, 1.0));
        assert_eq!(t.price("llama-3-70b"), Some(ModelPrice::new(0.5, 0.5)));
        assert_eq!(t.price("gpt-4o"), Some(ModelPrice::new(1.0, 1.0)));
    }
}
