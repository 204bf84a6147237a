//! TLS between nodes: both sides present a certificate signed by the cluster's authority
//! (mutual TLS), on top of the cookie. Built from the PEM files of
//! [`ClusterTls`](crate::config::ClusterTls).
//!
//! rustls is told its crypto provider (ring) explicitly: ractor_cluster's TLS dependency
//! also compiles aws-lc-rs in, and with two providers rustls cannot pick one by itself.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::ClusterTls;

/// The acceptor for incoming connections and the connector for outgoing ones.
#[derive(Clone)]
pub struct TlsPair {
    /// Accepts peers whose certificate the authority signed.
    pub acceptor: TlsAcceptor,
    /// Dials peers, checking their certificate against the authority and their address.
    pub connector: TlsConnector,
}

fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("could not read {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Loads the certificates and builds both sides. Errors name the file and what was wrong
/// with it.
pub fn load(tls: &ClusterTls) -> Result<TlsPair, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs("cluster.tls.cert", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        format!(
            "could not read a private key from cluster.tls.key {}: {e}",
            tls.key.display()
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs("cluster.tls.ca", &tls.ca)? {
        roots.add(ca).map_err(|e| {
            format!(
                "cluster.tls.ca {} is not a usable authority: {e}",
                tls.ca.display()
            )
        })?;
    }
    let roots = Arc::new(roots);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("cluster.tls.ca cannot verify peers: {e}"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| {
            format!(
                "cluster.tls.cert {} does not match cluster.tls.key {}: {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!(
                "cluster.tls.cert {} does not match cluster.tls.key {}: {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    Ok(TlsPair {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

/// The name a peer's certificate must carry: the host part of its cluster address (an
/// IP address or a DNS name).
pub fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("peer address {address:?} has no usable host name for TLS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            format!("{:?}", server_name("10.0.0.5:4697").unwrap()),
            format!("{:?}", ServerName::try_from("10.0.0.5").unwrap())
        );
        assert!(server_name("node-b.internal:4697").is_ok());
        assert!(server_name("[::1]:4697").is_ok());
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let err = load(&ClusterTls {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: "/nonexistent/ca.pem".into(),
        })
        .err()
        .unwrap();
        assert!(
            err.contains("cluster.tls.cert /nonexistent/cert.pem"),
            "{err}"
        );
    }
}
