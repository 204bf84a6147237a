//! The node's configuration: one TOML file with a documented default for every tunable
//! (`supervisor config default` prints it), each overridable by a `SUPERVISOR_*`
//! environment variable with `__` between levels, e.g. `SUPERVISOR_ENGINE__LEASE_DURATION=5s`
//! or `SUPERVISOR_PROVIDERS__MOCK__LATENCY=50ms`. Precedence: defaults < file < environment
//! < command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use supervisor_engine::EngineConfig;
use supervisor_node::{ClusterConfig, NodeConfig, RoutingConfig};
use supervisor_providers::config::ProviderConfig;
use supervisor_providers::mock::MockConfig;
use supervisor_providers::pricing::PriceTable;

use crate::store::{StoreConfig, StoreUrl};

/// The annotated default configuration, shipped with the binary.
pub const EXAMPLE: &str = include_str!("../../../supervisor.example.toml");

/// `SUPERVISOR_*` variables that are not the node's configuration: the client's address,
/// key and CA file (`supervisor task ...` in the same shell reads them) and the config
/// file's path.
const CLIENT_ENV_KEYS: [&str; 5] = ["server", "token", "token_file", "ca_file", "config"];

/// Everything a node reads at start.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded store keeps its file and, unless configured elsewhere, where
    /// the Claude CLI provider makes its worktrees and the first start with
    /// authentication on writes the admin key. Created by whichever of them first uses
    /// it: a node on a shared store that needs none of them never creates it.
    pub data_dir: DataDir,
    /// The gRPC listener.
    pub server: ServerConfig,
    /// The store.
    pub store: StoreConfig,
    /// The durable layer.
    pub engine: EngineConfig,
    /// The node's actors.
    pub node: NodeConfig,
    /// Membership and networking between nodes.
    pub cluster: ClusterConfig,
    /// Providers by name, each `[providers.<name>]` with a `kind`. When none is
    /// configured (in the file or the environment), one mock provider named `mock`; when
    /// any is, exactly those.
    pub providers: ProvidersConfig,
    /// How attempts are routed to providers.
    pub routing: RoutingConfig,
    /// Prices per million tokens by model (or model prefix), over the built-in table.
    pub prices: PriceTable,
    /// Checks run on an agent's work before its result is accepted, `[hooks.<name>]`
    /// (see `supervisor_providers::hooks`).
    pub hooks: BTreeMap<String, supervisor_providers::hooks::HookConfig>,
    /// Logging.
    pub log: LogConfig,
    /// Who may call the API.
    pub auth: crate::auth::AuthConfig,
    /// Traces and metrics: the OTLP collector, sampling, label caps.
    pub telemetry: supervisor_telemetry::TelemetryConfig,
    /// How long finished tasks and workflow runs are kept, and where they are archived.
    pub retention: supervisor_engine::RetentionConfig,
    /// Where each provider's configuration came from (set by [`Config::load`]; not a
    /// key of the file).
    #[serde(skip)]
    pub provider_origins: BTreeMap<String, String>,
}

/// The data directory (a newtype so its default is documented in one place).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DataDir(pub PathBuf);

impl Default for DataDir {
    fn default() -> Self {
        DataDir(PathBuf::from("supervisor-data"))
    }
}

/// The gRPC listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:50051`.
    pub listen: String,
    /// Address of the node's HTTP side (`/metrics` for Prometheus, `/healthz`, the web
    /// console). Default `127.0.0.1:50052`; empty turns it off.
    pub http_listen: String,
    /// Whether the HTTP side serves the web console and the API as gRPC-Web for it
    /// (with the same authentication as the gRPC listener). Default true.
    pub console: bool,
    /// TLS on the API (`https://` for clients); plain HTTP/2 when absent.
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:50051".into(),
            http_listen: "127.0.0.1:50052".into(),
            console: true,
            tls: None,
        }
    }
}

/// Providers by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProvidersConfig(pub BTreeMap<String, ProviderConfig>);

impl Default for ProvidersConfig {
    fn default() -> Self {
        let mut map = BTreeMap::new();
        map.insert(
            "mock".to_string(),
            ProviderConfig::Mock(MockConfig::default()),
        );
        ProvidersConfig(map)
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `supervisor_engine=debug,info`. `RUST_LOG`
    /// overrides it. Default `info`.
    pub level: String,
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration that cannot be loaded or does not hold together. Each names the key
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file given does not exist.
    #[error(
        "config file {} does not exist; `supervisor config default > {}` writes one with every default",
        path.display(),
        path.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file or a `SUPERVISOR_*` variable is not valid TOML for the config: an
    /// unknown key, a value of the wrong type.
    #[error("invalid configuration in {origin}: {error}")]
    Parse {
        /// Where the configuration came from.
        origin: String,
        /// What is wrong, naming the key.
        error: Box<figment::Error>,
    },
    /// A value is out of its range, or two values contradict each other.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// `server.listen` is not a socket address.
    #[error(
        "invalid configuration: server.listen {listen:?} is not an address like 127.0.0.1:50051"
    )]
    Listen {
        /// The value given.
        listen: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
}

impl Config {
    /// Loads defaults, then `file` (if given; it must exist), then `SUPERVISOR_*`
    /// variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        // SUPERVISOR_SERVER, SUPERVISOR_TOKEN, SUPERVISOR_TOKEN_FILE and SUPERVISOR_CA_FILE
        // (what a client uses to reach a node, set in the same shell) and SUPERVISOR_CONFIG
        // (the config file's path) are not keys of the node's config.
        let env = || {
            Env::prefixed("SUPERVISOR_")
                .split("__")
                .ignore(&CLIENT_ENV_KEYS)
        };
        figment = figment.merge(env());
        let mut config: Config = figment.extract().map_err(|error| ConfigError::Parse {
            origin: file
                .map(|p| format!("{} or the SUPERVISOR_* environment", p.display()))
                .unwrap_or_else(|| "the SUPERVISOR_* environment".into()),
            error: Box::new(error),
        })?;
        // The default mock stands in only when no provider is configured: a file or the
        // environment naming any provider gets exactly those.
        let named = |f: Figment| -> Vec<String> {
            match f.find_value("providers") {
                Ok(figment::value::Value::Dict(_, map)) => map.keys().cloned().collect(),
                _ => Vec::new(),
            }
        };
        let from_file = file
            .map(|p| named(Figment::from(Toml::file(p))))
            .unwrap_or_default();
        let from_env = named(Figment::from(env()));
        if from_file.is_empty() && from_env.is_empty() {
            for name in config.providers.0.keys() {
                config.provider_origins.insert(
                    name.clone(),
                    "built-in default: no provider is configured".into(),
                );
            }
        } else {
            config
                .providers
                .0
                .retain(|name, _| from_file.contains(name) || from_env.contains(name));
            for name in config.providers.0.keys() {
                let origin = match (file, from_env.contains(name)) {
                    (_, true) => format!(
                        "SUPERVISOR_PROVIDERS__{}__* in the environment",
                        name.to_uppercase()
                    ),
                    (Some(path), false) => path.display().to_string(),
                    (None, false) => "the configuration".into(),
                };
                config.provider_origins.insert(name.clone(), origin);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// The configuration with its secrets hidden (the cluster cookie, the store URL's
    /// password), for printing.
    pub fn redacted(&self) -> Config {
        let mut shown = self.clone();
        if !shown.cluster.cookie.is_empty() {
            shown.cluster.cookie = "<redacted>".into();
        }
        if shown.store.url.starts_with("postgres") {
            shown.store.url = supervisor_store::postgres::redact_url(&shown.store.url);
        }
        shown
    }

    /// The configuration in force as TOML, with its secrets hidden (see
    /// [`Config::redacted`]).
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(&self.redacted())
    }

    /// Checks every section, naming the first wrong value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut checks = vec![
            self.engine.validate(),
            self.node.validate(),
            self.cluster.validate(),
            self.auth.validate(),
            self.telemetry.validate(),
            self.retention.validate(),
            supervisor_providers::hooks::Hooks::new(self.hooks.clone()).map(|_| ()),
        ];
        for (name, provider) in &self.providers.0 {
            if let ProviderConfig::Mock(m) = provider {
                checks.push(
                    m.validate()
                        .map_err(|e| e.replace("providers.mock", &format!("providers.{name}"))),
                );
            }
        }
        for name in &self.routing.chain {
            match self.providers.0.get(name) {
                Some(p) if p.enabled() => {}
                Some(_) => checks.push(Err(format!(
                    "routing.chain names provider {name:?}, which is disabled"
                ))),
                None => checks.push(Err(format!(
                    "routing.chain names {name:?}, which is not under [providers]; configured: {}",
                    self.providers
                        .0
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
        if !self.providers.0.values().any(ProviderConfig::enabled) {
            checks.push(Err(
                "no provider is enabled; configure at least one under [providers.<name>]".into(),
            ));
        }
        for check in checks {
            check.map_err(ConfigError::Invalid)?;
        }
        if self.store.max_batch == 0 || self.store.pool_size == 0 {
            return Err(ConfigError::Invalid(
                "store.max_batch and store.pool_size must be at least 1".into(),
            ));
        }
        StoreUrl::parse(&self.store.url)
            .map_err(|e| ConfigError::Invalid(format!("store.url: {e}")))?;
        if self.cluster.heartbeat_interval >= self.engine.lease_duration {
            return Err(ConfigError::Invalid(format!(
                "cluster.heartbeat_interval ({:?}) must be shorter than engine.lease_duration ({:?})",
                self.cluster.heartbeat_interval, self.engine.lease_duration
            )));
        }
        self.server
            .listen
            .parse::<std::net::SocketAddr>()
            .map_err(|source| ConfigError::Listen {
                listen: self.server.listen.clone(),
                source,
            })?;
        if !self.server.http_listen.is_empty() {
            let http = self
                .server
                .http_listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| {
                    ConfigError::Invalid(format!(
                        "server.http_listen {:?} is not an address like 127.0.0.1:50052 ({e}); give one, or \"\" to serve no metrics",
                        self.server.http_listen
                    ))
                })?;
            // The HTTP side is plain text: credentials sent to the console there would
            // cross the network unencrypted while the gRPC listener encrypts them.
            if self.server.console && self.server.tls.is_some() && !http.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "server.http_listen {} is not a loopback address and serves the console and its API in plain text, while the gRPC listener uses TLS: set server.console = false (metrics and health stay), or bind http_listen to 127.0.0.1 and put a TLS proxy in front",
                    self.server.http_listen
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_is_exactly_the_defaults() {
        let parsed: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(EXAMPLE))
            .extract()
            .expect("the shipped example parses");
        assert_eq!(parsed, Config::default());
        // And every key in it is a real key: a file with only the example's content and
        // no defaults underneath must parse too (deny_unknown_fields catches typos).
        let strict: Config = toml::from_str(EXAMPLE).expect("example parses on its own");
        assert_eq!(strict.engine, EngineConfig::default());
        assert_eq!(strict.providers, ProvidersConfig::default());
    }

    #[test]
    fn printing_hides_the_cookie_and_the_store_password() {
        let mut cfg = Config::default();
        cfg.cluster.cookie = "topsecret".into();
        cfg.store.url = "postgres://sv:hunter2@db:5432/sv".into();
        let text = cfg.to_redacted_toml().expect("serializes");
        assert!(
            !text.contains("topsecret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("db:5432/sv"), "{text}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[engine]\nlease_duraton = \"5s\"\n"))
            .extract::<Config>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease_duraton"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment::Error
    fn environment_overrides_nested_values() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SUPERVISOR_ENGINE__LEASE_DURATION", "5s");
            jail.set_env("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "50ms");
            jail.set_env("SUPERVISOR_SERVER", "127.0.0.1:1");
            jail.set_env("SUPERVISOR_CONFIG", "/somewhere/supervisor.toml");
            // A shell that talks to a node as a client may start one too.
            jail.set_env("SUPERVISOR_TOKEN", "svk_a_b");
            jail.set_env("SUPERVISOR_TOKEN_FILE", "/somewhere/admin.key");
            jail.set_env("SUPERVISOR_CA_FILE", "/somewhere/ca.pem");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.engine.lease_duration, std::time::Duration::from_secs(5));
            assert_eq!(
                match cfg.providers.0.get("mock") {
                    Some(ProviderConfig::Mock(m)) => m.latency,
                    other => panic!("mock provider missing: {other:?}"),
                },
                std::time::Duration::from_millis(50)
            );
            assert_eq!(cfg.server.listen, "127.0.0.1:50051");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment::Error
    fn invalid_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SUPERVISOR_PROVIDERS__MOCK__FAILURE_RATE", "2");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("failure_rate"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment::Error
    fn the_mock_serves_only_when_no_provider_is_configured() {
        figment::Jail::expect_with(|jail| {
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.providers.0.keys().collect::<Vec<_>>(), ["mock"]);
            assert!(cfg.provider_origins["mock"].contains("built-in default"));

            jail.create_file(
                "real.toml",
                "[providers.claude]\nkind = \"anthropic\"\napi_key_env = \"SV_TEST_KEY\"\n",
            )?;
            let cfg = Config::load(Some(Path::new("real.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                cfg.providers.0.keys().collect::<Vec<_>>(),
                ["claude"],
                "a configured provider replaces the default mock"
            );
            assert_eq!(cfg.provider_origins["claude"], "real.toml");

            jail.set_env("SUPERVISOR_PROVIDERS__LOCAL__KIND", "mock");
            let cfg = Config::load(Some(Path::new("real.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                cfg.providers.0.keys().collect::<Vec<_>>(),
                ["claude", "local"]
            );
            assert!(cfg.provider_origins["local"].contains("SUPERVISOR_PROVIDERS__LOCAL__"));
            Ok(())
        });
    }
}
