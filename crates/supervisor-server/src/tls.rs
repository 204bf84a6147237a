//! TLS on the API (`[server.tls]`): the node's certificate and key are read again when
//! their files change (checked at most once a second, on new connections), so a renewed
//! certificate is served without a restart; with `client_ca`, clients must present a
//! certificate that authority signed. Handshakes run off the accept loop, each bounded
//! in time, so a slow or silent client holds up no one.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// `[server.tls]`: certificate files (PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The node's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate this authority signed.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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

fn load_key(tls: &ServerTls) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_certs("server.tls.cert", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        format!(
            "could not read a private key from server.tls.key {}: {e}",
            tls.key.display()
        )
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("server.tls.key {} is not usable: {e}", tls.key.display()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Serves the current certificate, reloading it when its files change.
#[derive(Debug)]
struct Reloading {
    tls: ServerTls,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl Reloading {
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= Duration::from_secs(1) {
            state.checked = Instant::now();
            let stamps = (modified(&self.tls.cert), modified(&self.tls.key));
            if stamps != state.stamps {
                match load_key(&self.tls) {
                    Ok(key) => {
                        tracing::info!(cert = %self.tls.cert.display(), "server certificate reloaded");
                        state.key = key;
                        state.stamps = stamps;
                    }
                    // A half-written renewal: keep serving the last good one.
                    Err(err) => {
                        tracing::warn!(%err, "could not reload the server certificate; serving the previous one")
                    }
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The acceptor for `[server.tls]`. Errors name the file and what was wrong with it.
pub fn acceptor(tls: &ServerTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(Reloading {
        state: Mutex::new(Loaded {
            key: load_key(tls)?,
            stamps: (modified(&tls.cert), modified(&tls.key)),
            checked: Instant::now(),
        }),
        tls: tls.clone(),
    });
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs("server.tls.client_ca", ca)? {
                roots.add(cert).map_err(|e| {
                    format!("server.tls.client_ca {} is not usable: {e}", ca.display())
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A TLS connection to a client, as tonic serves it (its peer address is the TCP one).
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` and yields those whose handshake succeeded.
pub fn incoming(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let info = TcpConnectInfo {
                local_addr: tcp.local_addr().ok(),
                remote_addr: tcp.peer_addr().ok(),
            };
            let (acceptor, conns) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = conns.send(Ok(TlsConn { stream, info })).await;
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(peer = ?info.remote_addr, error = %err, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = ?info.remote_addr, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    struct Authority {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pem: String,
    }

    fn authority(name: &str) -> Authority {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("authority");
        Authority {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1 signed by `ca`: (chain PEM, key PEM, DER).
    fn leaf(ca: &Authority, cn: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn client(ca: &Authority, identity: Option<(String, String)>) -> tokio_rustls::TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(chain.as_bytes())
                        .map(|c| c.expect("pem"))
                        .collect(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Connects and returns the certificate the server presented, or why it failed.
    async fn presented(
        addr: std::net::SocketAddr,
        connector: &tokio_rustls::TlsConnector,
    ) -> Result<Vec<u8>, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3 reports a refused client certificate on the first read.
        use tokio::io::AsyncWriteExt as _;
        let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\n").await;
        let mut buf = [0u8; 1];
        if let Ok(Err(e)) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
        )
        .await
        {
            return Err(e.to_string());
        }
        let (_, session) = tls.get_ref();
        Ok(session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default())
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = authority("test authority");
        let (chain, key, first) = leaf(&ca, "first");
        let files = ServerTls {
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node.key"),
            client_ca: None,
        };
        std::fs::write(&files.cert, &chain).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = incoming(listener, acceptor(&files).expect("acceptor"));
        // Hold every connection open, as a server would.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(conn) = conns.next().await {
                held.push(conn);
            }
        });
        // A fresh client each time: a resumed session would not show the certificate anew.
        assert_eq!(presented(addr, &client(&ca, None)).await.unwrap(), first);

        let (chain, key, second) = leaf(&ca, "second");
        std::fs::write(&files.cert, &chain).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        // The files are looked at again at most once a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(presented(addr, &client(&ca, None)).await.unwrap(), second);

        // A broken renewal keeps the last good certificate.
        std::fs::write(&files.cert, "not a certificate").unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(presented(addr, &client(&ca, None)).await.unwrap(), second);
    }

    #[tokio::test]
    async fn with_a_client_authority_only_its_clients_are_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let ca = authority("servers");
        let clients = authority("clients");
        let strangers = authority("strangers");
        let (chain, key, _) = leaf(&ca, "node");
        std::fs::write(dir.path().join("node.pem"), &chain).unwrap();
        std::fs::write(dir.path().join("node.key"), &key).unwrap();
        std::fs::write(dir.path().join("clients.pem"), &clients.pem).unwrap();
        let files = ServerTls {
            cert: dir.path().join("node.pem"),
            key: dir.path().join("node.key"),
            client_ca: Some(dir.path().join("clients.pem")),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = incoming(listener, acceptor(&files).expect("acceptor"));
        // Hold every connection open, as a server would.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(conn) = conns.next().await {
                held.push(conn);
            }
        });

        let (c_chain, c_key, _) = leaf(&clients, "ana");
        assert!(
            presented(addr, &client(&ca, Some((c_chain, c_key))))
                .await
                .is_ok()
        );
        assert!(
            presented(addr, &client(&ca, None)).await.is_err(),
            "no certificate"
        );
        let (s_chain, s_key, _) = leaf(&strangers, "eve");
        assert!(
            presented(addr, &client(&ca, Some((s_chain, s_key))))
                .await
                .is_err(),
            "a certificate of another authority"
        );
    }

    #[test]
    fn missing_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerTls {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
            client_ca: None,
        };
        let err = acceptor(&files).err().expect("refused");
        assert!(
            err.contains("server.tls.cert") && err.contains("nope.pem"),
            "{err}"
        );
    }
}
