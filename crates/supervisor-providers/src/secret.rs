//! API keys: read from an environment variable or a file named in the config, never from
//! the config itself, and never printed: [`ApiKey`]'s `Debug` and `Display` show only
//! where the key came from.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a provider's API key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySource {
    /// Name of an environment variable holding the key, e.g. `ANTHROPIC_API_KEY`.
    pub api_key_env: Option<String>,
    /// A file holding the key (surrounding whitespace is ignored).
    pub api_key_file: Option<PathBuf>,
}

/// A loaded API key. Its value is only reachable through [`ApiKey::expose`].
#[derive(Clone)]
pub struct ApiKey {
    value: String,
    origin: String,
}

impl ApiKey {
    /// The key itself, for the request header.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// `text` with every occurrence of the key replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        if self.value.is_empty() {
            return text.to_string();
        }
        text.replace(&self.value, "[redacted]")
    }

    /// A key given directly (tests).
    pub fn from_value(value: impl Into<String>, origin: impl Into<String>) -> Self {
        ApiKey {
            value: value.into(),
            origin: origin.into(),
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(from {}, redacted)", self.origin)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<key from {}>", self.origin)
    }
}

impl KeySource {
    /// Loads the key. `provider` names the provider in errors; `required` says whether a
    /// missing source is an error (an OpenAI-compatible local server may need no key).
    pub fn load(&self, provider: &str, required: bool) -> Result<Option<ApiKey>, String> {
        if let Some(var) = &self.api_key_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(ApiKey {
                    value: v.trim().to_string(),
                    origin: format!("${var}"),
                })),
                _ => Err(format!(
                    "provider {provider}: the environment variable {var} (api_key_env) is not set or empty"
                )),
            };
        }
        if let Some(path) = &self.api_key_file {
            let v = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "provider {provider}: could not read the API key file {} (api_key_file): {e}",
                    path.display()
                )
            })?;
            if v.trim().is_empty() {
                return Err(format!(
                    "provider {provider}: the API key file {} is empty",
                    path.display()
                ));
            }
            return Ok(Some(ApiKey {
                value: v.trim().to_string(),
                origin: path.display().to_string(),
            }));
        }
        if required {
            return Err(format!(
                "provider {provider} needs an API key: set api_key_env (an environment variable name) or api_key_file"
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_never_shows_in_debug_or_display() {
        let k = ApiKey::from_value("sk-secret-123", "$TEST_KEY");
        assert!(!format!("{k:?}").contains("sk-secret"));
        assert!(!format!("{k}").contains("sk-secret"));
        assert_eq!(k.expose(), "sk-secret-123");
        assert_eq!(
            k.redact("bad key sk-secret-123 given"),
            "bad key [redacted] given"
        );
    }

    #[test]
    fn missing_sources_name_what_to_set() {
        let src = KeySource {
            api_key_env: Some("SUPERVISOR_TEST_SURELY_UNSET_VAR".into()),
            api_key_file: None,
        };
        let err = src.load("anthropic", true).unwrap_err();
        assert!(err.contains("SUPERVISOR_TEST_SURELY_UNSET_VAR"), "{err}");
        let err = KeySource::default().load("anthropic", true).unwrap_err();
        assert!(err.contains("api_key_env"), "{err}");
        assert!(KeySource::default().load("local", false).unwrap().is_none());
    }

    #[test]
    fn key_from_a_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  sk-file\n").unwrap();
        let src = KeySource {
            api_key_env: None,
            api_key_file: Some(path),
        };
        assert_eq!(src.load("p", true).unwrap().unwrap().expose(), "sk-file");
    }
}
