//! The environment agent processes (and the git commands run for them) start with.
//!
//! Why an allowlist: an agent runs whatever a prompt talks it into, and `env > env.txt` is
//! enough to put every secret of the node (other providers' keys, the cluster cookie) into
//! a diff that is stored and shown. So nothing of the node's environment reaches the CLI
//! but `PATH`, the locale (`LANG`, `LC_*`) and `TERM`; `HOME` and `TMPDIR` are directories
//! of the attempt, removed with it; then come the provider's own `env` table (literal
//! values, not secrets) and its own key under the variable the CLI reads, with
//! `ANTHROPIC_BASE_URL` when a `base_url` is configured. Nothing else, ever.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::config::ClaudeCliConfig;
use crate::secret::ApiKey;

/// `PATH` when the node has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Variables the `env` table may not set, and what to use instead.
const RESERVED: &[(&str, &str)] = &[
    ("HOME", "it is the attempt's own directory"),
    ("TMPDIR", "it is the attempt's own directory"),
    (
        "ANTHROPIC_API_KEY",
        "put secrets in api_key_env or api_key_file",
    ),
    (
        "ANTHROPIC_AUTH_TOKEN",
        "put secrets in api_key_env or api_key_file (with api_key_var)",
    ),
    (
        "CLAUDE_CODE_OAUTH_TOKEN",
        "put secrets in api_key_env or api_key_file (with api_key_var)",
    ),
    ("ANTHROPIC_BASE_URL", "use base_url"),
];

/// The variables every child gets from the node: `PATH` (or a default), the locale and
/// `TERM`, when set.
pub(crate) fn basics() -> Vec<(OsString, OsString)> {
    let mut vars = Vec::new();
    let path = std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into());
    vars.push(("PATH".into(), path));
    for (name, value) in std::env::vars_os() {
        let keep =
            name == "LANG" || name == "TERM" || name.to_str().is_some_and(|n| n.starts_with("LC_"));
        if keep {
            vars.push((name, value));
        }
    }
    vars
}

/// Checks the provider's `env` table and `api_key_var`, naming the first wrong entry.
pub(super) fn validate(provider: &str, cfg: &ClaudeCliConfig) -> Result<(), String> {
    if !crate::valid_env_name(&cfg.api_key_var) {
        return Err(format!(
            "provider {provider}: api_key_var {:?} is not a variable name",
            cfg.api_key_var
        ));
    }
    for (name, value) in &cfg.env {
        crate::check_env_entry(name, value, RESERVED)
            .map_err(|e| format!("provider {provider}: {e}"))?;
        if *name == cfg.api_key_var {
            return Err(format!(
                "provider {provider}: env may not set {name}, the key's variable (api_key_var): put secrets in api_key_env or api_key_file"
            ));
        }
    }
    Ok(())
}

/// Where an attempt's agent keeps its files.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttemptDirs<'a> {
    /// `HOME`.
    pub home: &'a Path,
    /// `TMPDIR`.
    pub tmp: &'a Path,
}

/// The whole environment of the CLI for one attempt: [`basics`], `HOME` and `TMPDIR`, the
/// `env` table, the key under `api_key_var`, `ANTHROPIC_BASE_URL`. Later entries win.
pub(super) fn agent(
    cfg: &ClaudeCliConfig,
    key: Option<&ApiKey>,
    dirs: AttemptDirs<'_>,
) -> BTreeMap<OsString, OsString> {
    let mut vars: BTreeMap<OsString, OsString> = basics().into_iter().collect();
    vars.insert("HOME".into(), dirs.home.into());
    vars.insert("TMPDIR".into(), dirs.tmp.into());
    for (name, value) in &cfg.env {
        vars.insert(name.into(), value.into());
    }
    if let Some(key) = key {
        vars.insert((&cfg.api_key_var).into(), key.expose().into());
    }
    if let Some(url) = cfg.base_url.as_deref().filter(|u| !u.is_empty()) {
        vars.insert("ANTHROPIC_BASE_URL".into(), url.into());
    }
    vars
}

/// The environment of a short command the provider runs itself (`claude --version`):
/// [`basics`] only.
pub(super) fn probe() -> Vec<(OsString, OsString)> {
    basics()
}

/// The environment of the git commands the provider runs in a repository and its
/// worktrees: [`basics`], plus the node's `HOME` and `XDG_CONFIG_HOME` (the user's git
/// configuration, such as `safe.directory`), and no prompts. No `GIT_*` variable of the
/// node gets through, so none can point git at another repository.
pub(super) fn git() -> Vec<(OsString, OsString)> {
    let mut vars = basics();
    for name in ["HOME", "XDG_CONFIG_HOME"] {
        if let Some(value) = std::env::var_os(name) {
            vars.push((name.into(), value));
        }
    }
    vars.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
    vars
}

/// Whether the CLI runs in `bypassPermissions` mode for these arguments.
pub(super) fn bypasses_permissions(args: &[OsString]) -> bool {
    args.iter().any(|a| a == "--dangerously-skip-permissions")
        || args.windows(2).any(|w| {
            w[0] == OsStr::new("--permission-mode") && w[1] == OsStr::new("bypassPermissions")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_table_cannot_carry_secrets_or_replace_the_attempt_dirs() {
        let mut cfg = ClaudeCliConfig::default();
        cfg.env.insert("IS_SANDBOX".into(), "1".into());
        assert!(validate("cli", &cfg).is_ok());
        for (name, hint) in [
            ("HOME", "attempt"),
            ("ANTHROPIC_API_KEY", "api_key_env"),
            ("ANTHROPIC_BASE_URL", "base_url"),
            ("1X", "variable name"),
            ("A=B", "variable name"),
        ] {
            let mut cfg = ClaudeCliConfig::default();
            cfg.env.insert(name.into(), "x".into());
            let err = validate("cli", &cfg).unwrap_err();
            assert!(err.contains(hint), "{name}: {err}");
        }
        let mut cfg = ClaudeCliConfig {
            api_key_var: "CUSTOM_TOKEN".into(),
            ..ClaudeCliConfig::default()
        };
        cfg.env.insert("CUSTOM_TOKEN".into(), "x".into());
        assert!(validate("cli", &cfg).unwrap_err().contains("api_key_var"));
    }

    #[test]
    fn bypass_is_recognised_in_both_spellings() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(bypasses_permissions(&args(&[
            "--permission-mode",
            "bypassPermissions"
        ])));
        assert!(bypasses_permissions(&args(&[
            "--dangerously-skip-permissions"
        ])));
        assert!(!bypasses_permissions(&args(&[
            "--permission-mode",
            "acceptEdits"
        ])));
    }
}
