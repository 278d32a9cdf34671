//! Mutual TLS: TLS 1.3 only, a client certificate required and verified against the configured
//! CA, and the caller's identity read from that certificate once per connection.
//!
//! The server certificate sits behind a [`ReloadableCertificate`], so `SIGHUP` can swap it without
//! touching connections that are already established.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::authz::CallerIdentity;
use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// The crypto provider used everywhere (ring: no C toolchain beyond `cc`, no cmake).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server certificate and key, swappable at run time.
#[derive(Debug)]
pub struct ReloadableCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl ReloadableCertificate {
    /// Loads the certificate chain and key from PEM files.
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self> {
        let certified = load_certified_key(cert, key, &provider)?;
        Ok(ReloadableCertificate {
            current: RwLock::new(Arc::new(certified)),
            provider,
        })
    }

    /// Reads the files again; on any error the old certificate stays in place.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<()> {
        let certified = load_certified_key(cert, key, &self.provider)?;
        // A poisoned lock only means a panic mid-swap of an Arc; the value is still whole.
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(certified);
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some(current.clone())
    }
}

fn load_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Tls(format!("tls.key {}: {e}", key.display())))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| Error::Tls(format!("tls.key {}: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| Error::Tls(format!("tls.cert and tls.key do not match: {e}")))?;
    Ok(certified)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the rustls server config: TLS 1.3 only, client certificates mandatory.
pub fn server_config(
    tls: &TlsConfig,
    certificate: Arc<ReloadableCertificate>,
) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&tls.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| Error::Tls(format!("tls.client_ca: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Tls(format!("tls.client_ca: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Reads the caller identity from a (verified) client certificate: the first SAN URI, else the
/// first SAN DNS name, else the subject CN.
pub fn identity_from_certificate(der: &[u8]) -> Result<CallerIdentity> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::Tls(format!("client certificate: {e}")))?;
    let mut uri = None;
    let mut dns = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) if uri.is_none() => uri = Some(u.to_string()),
                GeneralName::DNSName(d) if dns.is_none() => dns = Some(d.to_string()),
                _ => {}
            }
        }
    }
    let cn = || {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    };
    uri.or(dns)
        .or_else(cn)
        .filter(|id| !id.is_empty())
        .map(CallerIdentity)
        .ok_or_else(|| Error::Tls("client certificate names no identity".into()))
}

/// What the gRPC handlers learn about the connection a request arrived on.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The verified caller identity.
    pub identity: CallerIdentity,
    /// The peer's address, for logs.
    pub remote_addr: Option<std::net::SocketAddr>,
}

/// A TLS stream whose client certificate has been verified and whose identity has been read.
pub struct AuthenticatedStream {
    inner: TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Counts against `server.max_connections` until the connection is dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl AuthenticatedStream {
    /// Reads the identity from a finished handshake; fails when the certificate names none.
    pub fn new(
        inner: TlsStream<TcpStream>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Self> {
        let (tcp, session) = inner.get_ref();
        let remote_addr = tcp.peer_addr().ok();
        let leaf = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or_else(|| Error::Tls("no client certificate".into()))?;
        let identity = identity_from_certificate(leaf.as_ref())?;
        Ok(AuthenticatedStream {
            inner,
            peer: PeerInfo {
                identity,
                remote_addr,
            },
            _slot: slot,
        })
    }

    /// The caller identity read from the client certificate.
    pub fn identity(&self) -> &CallerIdentity {
        &self.peer.identity
    }
}

impl Connected for AuthenticatedStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for AuthenticatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthenticatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
