//! Provider configuration: one table per provider, `[providers.<name>]`, whose `kind`
//! says which implementation serves it. API keys are never in the file: `api_key_env`
//! names an environment variable, `api_key_file` a file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::KeySource;

/// Limits and failure handling every provider has, enforced by its actor on each node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most concurrent executions (default: 1024 for the mock, 16 otherwise, per node).
    /// When set and nodes share a store, it holds for the whole cluster as well.
    pub max_concurrency: Option<u32>,
    /// Requests per minute (unset: unlimited). When nodes share a store it holds for the
    /// whole cluster, give or take one slice (a twentieth) per node.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute, input plus output (unset: unlimited); cluster-wide like
    /// `requests_per_minute`.
    pub tokens_per_minute: Option<u64>,
    /// Failures within `breaker_window` that open the circuit breaker (default 5).
    pub breaker_failures: Option<u32>,
    /// Window over which failures count (default 60s).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub breaker_window: Option<Duration>,
    /// How long an open breaker refuses work before one trial request (default 30s).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub breaker_cooldown: Option<Duration>,
}

/// Settings of the mock provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Whether routing may use it. Default true.
    pub enabled: bool,
    /// Time one execution takes. Default 0s.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Extra time, spread deterministically per task between 0 and this. Default 0s.
    #[serde(with = "humantime_serde")]
    pub latency_jitter: Duration,
    /// Fraction (0 to 1) of attempts that fail with a retryable error, chosen
    /// deterministically from the task id and attempt. Default 0.
    pub failure_rate: f64,
    /// Fraction (0 to 1) of attempts that panic inside the agent (to exercise
    /// supervision). Default 0.
    pub panic_rate: f64,
    /// Input tokens reported; 0 means derived from the prompt (one per 4 bytes). Default 0.
    pub input_tokens: u64,
    /// Output tokens reported; 0 means derived from the output. Default 0.
    pub output_tokens: u64,
    /// Pieces the output is streamed in (spread over the latency). Default 4.
    pub stream_chunks: u32,
    /// Pads every output to at least this many bytes with deterministic filler lines
    /// (for measuring what large outputs cost); at most 1 MiB. Default 0 (no padding).
    pub output_bytes: u64,
    /// Price charged per million tokens, in millionths of a dollar. Default 0 (free).
    pub price_micros_per_mtok: u64,
    /// Limits (concurrency defaults to 1024 for the mock).
    pub limits: Limits,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            enabled: true,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            failure_rate: 0.0,
            panic_rate: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            stream_chunks: 4,
            output_bytes: 0,
            price_micros_per_mtok: 0,
            limits: Limits::default(),
        }
    }
}

impl MockConfig {
    /// Checks the values, naming the first wrong one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("failure_rate", self.failure_rate),
            ("panic_rate", self.panic_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "providers.mock.{name} must be between 0 and 1, got {v}"
                ));
            }
        }
        if self.output_bytes > 1024 * 1024 {
            return Err(format!(
                "providers.mock.output_bytes must be at most 1048576, got {}",
                self.output_bytes
            ));
        }
        Ok(())
    }
}

/// What a provider may need from the node that builds it.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The node's data directory (the Claude CLI makes worktrees under it by default).
    pub data_dir: PathBuf,
    /// The node's hooks (run by providers that work in a directory of their own).
    pub hooks: crate::hooks::Hooks,
}

/// The Anthropic Messages API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnthropicConfig {
    /// Whether routing may use it. Default true.
    pub enabled: bool,
    /// Base URL. Default `https://api.anthropic.com`.
    pub base_url: String,
    /// Environment variable holding the API key. Default `ANTHROPIC_API_KEY`.
    pub api_key_env: Option<String>,
    /// Or a file holding it.
    pub api_key_file: Option<PathBuf>,
    /// Model. Default `claude-sonnet-4-5`.
    pub model: String,
    /// `max_tokens` of each request. Default 8192.
    pub max_tokens: u32,
    /// The `anthropic-version` header. Default `2023-06-01`.
    pub anthropic_version: String,
    /// Connect timeout. Default 10s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limits.
    pub limits: Limits,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            enabled: true,
            base_url: "https://api.anthropic.com".into(),
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
            api_key_file: None,
            model: "claude-sonnet-4-5".into(),
            max_tokens: 8192,
            anthropic_version: "2023-06-01".into(),
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

impl AnthropicConfig {
    /// Where its key comes from.
    pub fn key_source(&self) -> KeySource {
        KeySource {
            api_key_env: self.api_key_env.clone(),
            api_key_file: self.api_key_file.clone(),
        }
    }
}

/// Any OpenAI-compatible `/v1/chat/completions` server (OpenAI, vLLM, Ollama, llama.cpp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Whether routing may use it. Default true.
    pub enabled: bool,
    /// Base URL including `/v1`. Default `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable holding the API key (unset: no key, for local servers).
    pub api_key_env: Option<String>,
    /// Or a file holding it.
    pub api_key_file: Option<PathBuf>,
    /// Model. Default `gpt-4o-mini`.
    pub model: String,
    /// `max_tokens` of each request. Default 4096.
    pub max_tokens: u32,
    /// Connect timeout. Default 10s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Limits.
    pub limits: Limits,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            enabled: true,
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: None,
            api_key_file: None,
            model: "gpt-4o-mini".into(),
            max_tokens: 4096,
            connect_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

impl OpenAiConfig {
    /// Where its key comes from.
    pub fn key_source(&self) -> KeySource {
        KeySource {
            api_key_env: self.api_key_env.clone(),
            api_key_file: self.api_key_file.clone(),
        }
    }
}

/// How the processes of a `claude_cli` attempt are confined, so that every one of them
/// ends with the attempt (see `docs/providers.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    /// The best this machine offers, in the order below (detected when the provider is
    /// built).
    #[default]
    Auto,
    /// A PID namespace per attempt (root, or an unprivileged user namespace).
    PidNamespace,
    /// A cgroup v2 per attempt under the node's own (delegated, writable) cgroup, ended
    /// with `cgroup.kill`.
    Cgroup,
    /// A supervising process that adopts and kills the CLI's orphans (always available).
    Subreaper,
}

/// The Claude Code CLI, run headless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaudeCliConfig {
    /// Whether routing may use it. Default true.
    pub enabled: bool,
    /// The executable. Default `claude` (looked up on PATH).
    pub binary: PathBuf,
    /// `--model` (unset: the CLI's default).
    pub model: Option<String>,
    /// `--max-turns`. Default 30.
    pub max_turns: u32,
    /// Extra arguments appended to every run.
    pub extra_args: Vec<String>,
    /// Where per-task git worktrees are made (unset: `<data_dir>/worktrees`).
    pub worktree_dir: Option<PathBuf>,
    /// Environment variable of the node holding the key the CLI gets (unset: none).
    pub api_key_env: Option<String>,
    /// Or a file holding it.
    pub api_key_file: Option<PathBuf>,
    /// The variable the key is given to the CLI in. Default `ANTHROPIC_API_KEY`
    /// (`CLAUDE_CODE_OAUTH_TOKEN` for a token from `claude setup-token`).
    pub api_key_var: String,
    /// Given to the CLI as `ANTHROPIC_BASE_URL` (unset: the CLI's default).
    pub base_url: Option<String>,
    /// More environment variables for the CLI, literal values (not for secrets: those go
    /// in `api_key_env` or `api_key_file`). Nothing else of the node's environment but
    /// `PATH`, `LANG`, `LC_*` and `TERM` reaches the CLI.
    pub env: BTreeMap<String, String>,
    /// How the CLI's processes are confined. Default `auto`.
    pub isolation: IsolationMode,
    /// After a successful run with changes, commit them on the task's branch and keep
    /// it (only the worktree directory is removed). Default true.
    pub keep_branch: bool,
    /// Author and committer of that commit. Default `Supervisor <supervisor@localhost>`.
    pub commit_author: String,
    /// Limits.
    pub limits: Limits,
}

impl Default for ClaudeCliConfig {
    fn default() -> Self {
        ClaudeCliConfig {
            enabled: true,
            binary: PathBuf::from("claude"),
            model: None,
            max_turns: 30,
            extra_args: Vec::new(),
            worktree_dir: None,
            api_key_env: None,
            api_key_file: None,
            api_key_var: "ANTHROPIC_API_KEY".into(),
            base_url: None,
            env: BTreeMap::new(),
            isolation: IsolationMode::Auto,
            keep_branch: true,
            commit_author: "Supervisor <supervisor@localhost>".into(),
            limits: Limits::default(),
        }
    }
}

impl ClaudeCliConfig {
    /// Where its key comes from.
    pub fn key_source(&self) -> KeySource {
        KeySource {
            api_key_env: self.api_key_env.clone(),
            api_key_file: self.api_key_file.clone(),
        }
    }
}

/// A provider in another process, speaking `supervisor.plugin.v1.ProviderPlugin`: one the
/// node starts and supervises (`command`), or one already running (`address`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Whether routing may use it. Default true.
    pub enabled: bool,
    /// The plugin's address (`http://127.0.0.1:7400`), when something else runs it.
    pub address: Option<String>,
    /// The program and its arguments, when the node starts it: it must listen on the
    /// address in `SUPERVISOR_PLUGIN_LISTEN` (`127.0.0.1:<port>`, chosen by the node).
    pub command: Vec<String>,
    /// The working directory of `command` (unset: the node's).
    pub working_dir: Option<PathBuf>,
    /// Environment variables for `command`, literal values. Nothing of the node's
    /// environment but `PATH`, `HOME`, `LANG`, `LC_*`, `TERM`, `TZ` and the names in
    /// `pass_env` reaches it.
    pub env: BTreeMap<String, String>,
    /// Names of the node's environment variables `command` gets (an API key the plugin
    /// needs, say).
    pub pass_env: Vec<String>,
    /// How long a started plugin may take to answer its first health check (it is killed
    /// and started again past it), and how long the node waits at start for a plugin to
    /// say what it can do. Default 30s.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// How long connecting, a health check, GetCapabilities or a cancel may take, and
    /// how long a call waits for a restarting plugin. Default 5s.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Longest pause between restarts of a plugin that keeps exiting (the pause doubles
    /// from 0.5s up to this). Default 30s.
    #[serde(with = "humantime_serde")]
    pub max_restart_backoff: Duration,
    /// Largest output (and each artifact) accepted from the plugin, in bytes. Default
    /// 16 MiB: a result past it fails the attempt (permanently).
    pub max_output_bytes: u64,
    /// Limits.
    pub limits: Limits,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            enabled: true,
            address: None,
            command: Vec::new(),
            working_dir: None,
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            start_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(5),
            max_restart_backoff: Duration::from_secs(30),
            max_output_bytes: 16 * 1024 * 1024,
            limits: Limits::default(),
        }
    }
}

impl PluginConfig {
    /// Checks that exactly one of `address` and `command` is given, naming what is wrong.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        match (&self.address, self.command.is_empty()) {
            (Some(_), false) => Err(format!(
                "providers.{name}: give either address (a plugin already running) or command (one the node starts), not both"
            )),
            (None, true) => Err(format!(
                "providers.{name}: a plugin needs address = \"http://host:port\" (one already running) or command = [\"program\", \"arg\"...] (one the node starts)"
            )),
            (Some(a), true) if !a.starts_with("http://") => Err(format!(
                "providers.{name}.address {a:?} is not a URL like http://127.0.0.1:7400 (plugins are reached over plain HTTP/2: keep them on loopback or a private network, or behind a TLS-terminating proxy of yours)"
            )),
            _ if self.start_timeout.is_zero() || self.call_timeout.is_zero() => Err(format!(
                "providers.{name}: start_timeout and call_timeout must be more than 0"
            )),
            _ if self.max_output_bytes == 0 => Err(format!(
                "providers.{name}.max_output_bytes must be more than 0"
            )),
            _ => Ok(()),
        }
    }
}

/// One configured provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// The deterministic mock.
    Mock(MockConfig),
    /// The Anthropic Messages API.
    Anthropic(AnthropicConfig),
    /// An OpenAI-compatible server.
    Openai(OpenAiConfig),
    /// The Claude Code CLI.
    ClaudeCli(ClaudeCliConfig),
    /// A provider in another process (a plugin).
    Plugin(PluginConfig),
}

impl ProviderConfig {
    /// The implementation's name (`mock`, `anthropic`, `openai`, `claude_cli`, `plugin`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Mock(_) => "mock",
            ProviderConfig::Anthropic(_) => "anthropic",
            ProviderConfig::Openai(_) => "openai",
            ProviderConfig::ClaudeCli(_) => "claude_cli",
            ProviderConfig::Plugin(_) => "plugin",
        }
    }

    /// Whether routing may use it.
    pub fn enabled(&self) -> bool {
        match self {
            ProviderConfig::Mock(c) => c.enabled,
            ProviderConfig::Anthropic(c) => c.enabled,
            ProviderConfig::Openai(c) => c.enabled,
            ProviderConfig::ClaudeCli(c) => c.enabled,
            ProviderConfig::Plugin(c) => c.enabled,
        }
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        match self {
            ProviderConfig::Mock(c) => &c.limits,
            ProviderConfig::Anthropic(c) => &c.limits,
            ProviderConfig::Openai(c) => &c.limits,
            ProviderConfig::ClaudeCli(c) => &c.limits,
            ProviderConfig::Plugin(c) => &c.limits,
        }
    }

    /// Concurrency per node after the kind's default.
    pub fn max_concurrency(&self) -> u32 {
        let default = match self {
            ProviderConfig::Mock(_) => 1024,
            _ => 16,
        };
        self.limits().max_concurrency.unwrap_or(default).max(1)
    }
}
