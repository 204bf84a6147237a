//! How the SDK reaches a server: the address (`host:port`, `http://` or `https://`), TLS
//! with a CA file, and the credentials every call carries (`authorization: Bearer
//! <token>`, and `supervisor-tenant` for an admin acting in another tenant).

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::ClientError;

/// The environment variable holding the token when none is given.
pub const TOKEN_ENV: &str = "SUPERVISOR_TOKEN";
/// The environment variable naming a file that holds the token.
pub const TOKEN_FILE_ENV: &str = "SUPERVISOR_TOKEN_FILE";
/// The environment variable naming the CA file for `https://` servers.
pub const CA_FILE_ENV: &str = "SUPERVISOR_CA_FILE";

/// How to connect, beyond the address. `Default` is no token, no CA file, the token's own
/// tenant.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The bearer token: an API key (`svk_...`) or a JWT.
    pub token: Option<String>,
    /// PEM file of the authority that signed the server's certificate (`https://` only;
    /// without one, the usual public authorities are trusted).
    pub ca_file: Option<PathBuf>,
    /// Act in this tenant (admins only).
    pub tenant: Option<String>,
}

impl ConnectOptions {
    /// Options from the environment: `SUPERVISOR_TOKEN` (or the file
    /// `SUPERVISOR_TOKEN_FILE` names) and `SUPERVISOR_CA_FILE`.
    pub fn from_env() -> Result<ConnectOptions, ClientError> {
        let token = match std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
            Some(token) => Some(token),
            None => match std::env::var_os(TOKEN_FILE_ENV) {
                Some(path) => Some(read_token_file(Path::new(&path))?),
                None => None,
            },
        };
        Ok(ConnectOptions {
            token,
            ca_file: std::env::var_os(CA_FILE_ENV).map(PathBuf::from),
            tenant: None,
        })
    }
}

/// Reads a token from a file (surrounding whitespace ignored).
pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Credentials {
        reason: format!("cannot read the token file {}: {e}", path.display()),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::Credentials {
            reason: format!("the token file {} is empty", path.display()),
        });
    }
    Ok(token.to_string())
}

/// Adds the credentials to every call.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
    tenant: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// Credentials for `options`; a token or tenant that cannot be sent as metadata is an
    /// error naming which.
    pub fn new(options: &ConnectOptions) -> Result<Credentials, ClientError> {
        let value = |what: &str, text: String| {
            text.parse::<MetadataValue<Ascii>>()
                .map_err(|_| ClientError::Credentials {
                    reason: format!("the {what} contains characters metadata cannot carry"),
                })
        };
        Ok(Credentials {
            authorization: options
                .token
                .as_ref()
                .map(|t| value("token", format!("Bearer {}", t.trim())))
                .transpose()?,
            tenant: options
                .tenant
                .as_ref()
                .map(|t| value("tenant", t.clone()))
                .transpose()?,
        })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(auth) = &self.authorization {
            req.metadata_mut().insert("authorization", auth.clone());
        }
        if let Some(tenant) = &self.tenant {
            req.metadata_mut()
                .insert("supervisor-tenant", tenant.clone());
        }
        Ok(req)
    }
}

/// Turns `host:port`, `http://host:port` or `https://host:port` into the URI the client
/// dials (`host:port` means `http://`). Surrounding whitespace and a trailing `/` are
/// ignored. Fails on an empty address and on other schemes.
pub fn normalize_addr(addr: &str) -> Result<String, ClientError> {
    let trimmed = addr.trim();
    let invalid = |reason: &str| ClientError::InvalidAddress {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => ("http", trimmed),
    };
    if scheme != "http" && scheme != "https" {
        return Err(invalid(&format!(
            "unsupported scheme {scheme:?}; expected host:port, http://host:port or https://host:port"
        )));
    }
    let host_port = rest.trim_end_matches('/');
    if host_port.is_empty() {
        return Err(invalid("no host; expected host:port or http://host:port"));
    }
    let uri = format!("{scheme}://{host_port}");
    // Let the URI parser catch spaces, bad ports and the like.
    Endpoint::from_shared(uri.clone()).map_err(|e| invalid(&crate::error::chain(&e)))?;
    Ok(uri)
}

/// TLS settings for an `https://` URI: the CA file when given, else public authorities.
pub(crate) fn tls_for(
    uri: &str,
    options: &ConnectOptions,
) -> Result<Option<ClientTlsConfig>, ClientError> {
    if !uri.starts_with("https://") {
        if options.ca_file.is_some() {
            return Err(ClientError::Credentials {
                reason: format!("a CA file is given but {uri} is not https://"),
            });
        }
        return Ok(None);
    }
    let tls = ClientTlsConfig::new();
    let tls = match &options.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| ClientError::Credentials {
                reason: format!("cannot read the CA file {}: {e}", path.display()),
            })?;
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_webpki_roots(),
    };
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized() {
        assert_eq!(
            normalize_addr("127.0.0.1:50051").ok().as_deref(),
            Some("http://127.0.0.1:50051")
        );
        assert_eq!(
            normalize_addr(" http://localhost:50051/ ").ok().as_deref(),
            Some("http://localhost:50051")
        );
        assert_eq!(
            normalize_addr("https://sv.example:443").ok().as_deref(),
            Some("https://sv.example:443")
        );
        assert_eq!(
            normalize_addr("[::1]:7000").ok().as_deref(),
            Some("http://[::1]:7000")
        );
    }

    #[test]
    fn bad_addresses_are_refused_with_the_address() {
        for bad in ["", "grpc://x:1", "http://", "a b:1"] {
            let err = normalize_addr(bad).expect_err(bad);
            assert!(
                matches!(&err, ClientError::InvalidAddress { addr, .. } if addr == bad),
                "{err:?}"
            );
        }
    }

    #[test]
    fn credentials_are_sent_as_metadata() {
        let mut creds = Credentials::new(&ConnectOptions {
            token: Some("svk_x ".into()),
            tenant: Some("team-a".into()),
            ..ConnectOptions::default()
        })
        .unwrap();
        let req = creds.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer svk_x");
        assert_eq!(req.metadata().get("supervisor-tenant").unwrap(), "team-a");
        let bad = Credentials::new(&ConnectOptions {
            token: Some("bad\ntoken".into()),
            ..ConnectOptions::default()
        });
        assert!(matches!(bad, Err(ClientError::Credentials { .. })));
    }
}
