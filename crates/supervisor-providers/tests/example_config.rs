//! The provider blocks of `supervisor.example.toml`: each commented-out
//! `# [providers.<name>]` block, uncommented, must parse as a provider configuration
//! (unknown keys are errors) and must name every key of its kind, so the documented
//! examples cannot drift from the code. Inside a block, `# # ...` lines are comments of
//! the block itself (an alternative shown but not used, such as `api_key_file`).

use std::collections::BTreeMap;

use serde::Deserialize;
use supervisor_providers::config::{
    AnthropicConfig, ClaudeCliConfig, OpenAiConfig, PluginConfig, ProviderConfig,
};

const EXAMPLE: &str = include_str!("../../../supervisor.example.toml");

/// A configuration file holding only providers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Providers {
    providers: BTreeMap<String, ProviderConfig>,
}

/// One commented-out block: its name, its text as written, and uncommented.
struct Block {
    name: String,
    written: String,
    toml: String,
}

/// The blocks: from a `# [providers.<name>]` line through the last commented line after
/// it (a blank or uncommented line ends a block).
fn blocks(text: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut current: Option<Block> = None;
    for line in text.lines() {
        let header = line
            .strip_prefix("# [providers.")
            .and_then(|rest| rest.split_once(']'))
            .map(|(name, _)| name)
            .filter(|name| !name.contains('.'));
        if let Some(name) = header {
            blocks.extend(current.take());
            current = Some(Block {
                name: name.to_string(),
                written: String::new(),
                toml: String::new(),
            });
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        if !line.starts_with('#') {
            blocks.extend(current.take());
            continue;
        }
        block.written.push_str(line);
        block.written.push('\n');
        let uncommented = line
            .strip_prefix("# ")
            .unwrap_or(line.trim_start_matches('#'));
        block.toml.push_str(uncommented);
        block.toml.push('\n');
    }
    blocks.extend(current);
    blocks
}

/// The keys of a kind's configuration, from its defaults.
fn keys_of(defaults: serde_json::Value) -> Vec<String> {
    match defaults {
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not a table: {other}"),
    }
}

#[test]
fn every_documented_provider_block_parses_and_names_every_key() {
    let blocks = blocks(EXAMPLE);
    let mut kinds = Vec::new();
    for block in &blocks {
        let parsed: Providers = toml::from_str(&block.toml).unwrap_or_else(|e| {
            panic!(
                "the example block [providers.{}] does not parse: {e}\n{}",
                block.name, block.toml
            )
        });
        let config = parsed
            .providers
            .get(&block.name)
            .unwrap_or_else(|| panic!("block {} defines another provider", block.name));
        let keys = match config {
            ProviderConfig::Anthropic(_) => {
                keys_of(serde_json::to_value(AnthropicConfig::default()).expect("json"))
            }
            ProviderConfig::Openai(_) => {
                keys_of(serde_json::to_value(OpenAiConfig::default()).expect("json"))
            }
            ProviderConfig::ClaudeCli(_) => {
                keys_of(serde_json::to_value(ClaudeCliConfig::default()).expect("json"))
            }
            ProviderConfig::Plugin(_) => {
                keys_of(serde_json::to_value(PluginConfig::default()).expect("json"))
            }
            ProviderConfig::Mock(_) => panic!("the mock is configured uncommented"),
        };
        for key in keys {
            let shown = [
                format!("# {key} ="),
                format!("# # {key} ="),
                format!("# [providers.{}.{key}]", block.name),
            ];
            assert!(
                block
                    .written
                    .lines()
                    .any(|l| shown.iter().any(|s| l.starts_with(s.as_str()))),
                "the example block [providers.{}] does not document `{key}`",
                block.name
            );
        }
        assert!(
            block.written.contains("# kind ="),
            "block {} has no kind",
            block.name
        );
        kinds.push(config.kind());
    }
    kinds.sort_unstable();
    assert_eq!(kinds, vec!["anthropic", "claude_cli", "openai", "plugin"]);
}

#[test]
fn a_key_that_does_not_exist_fails_the_check() {
    // The check itself: deny_unknown_fields holds in a block.
    let text = "# [providers.x]\n# kind = \"claude_cli\"\n# no_such_key = 1\n";
    let block = &blocks(text)[0];
    assert_eq!(block.name, "x");
    let err = toml::from_str::<Providers>(&block.toml).expect_err("an unknown key");
    assert!(err.to_string().contains("no_such_key"), "{err}");
}
