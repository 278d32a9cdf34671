//! Mutual TLS: TLS 1.3 only, a client certificate required and verified against the configured
//! CA and CRLs on every connection, and the caller's identity read from that certificate once
//! per connection.
//!
//! There is no session resumption: a resumed TLS 1.3 session skips the client certificate, so a
//! certificate that expired or was revoked since would keep working. For the same reason an
//! established connection is held to its certificate at every request ([`PeerInfo`]): not past
//! its expiry, and accepted by the CA and CRLs in force. The whole server config is rebuilt on
//! `SIGHUP` (see [`crate::trust`]).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{CertificateRevocationList, FromDer, GeneralName, X509Certificate};

use crate::authz::CallerIdentity;
use crate::config::TlsConfig;
use crate::error::{Error, Result};
use crate::trust::ReloadableTrust;

/// The crypto provider used everywhere (ring: no C toolchain beyond `cc`, no cmake).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = load_certs("tls.cert", cert)?;
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

fn load_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("{field} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{field} {}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Loads the CRLs and checks that each is signed by one of the client CAs. A CRL from another
/// CA would cover no client certificate, and since a certificate no CRL covers is refused, it
/// would lock out every client; a CRL with a bad signature would do the same at the handshake.
fn load_crls(
    paths: &[PathBuf],
    client_cas: &[CertificateDer<'_>],
) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let mut cas = Vec::new();
    for ca in client_cas {
        let (_, ca) = X509Certificate::from_der(ca.as_ref())
            .map_err(|e| Error::Tls(format!("tls.client_ca: {e}")))?;
        cas.push(ca);
    }
    let mut crls = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let field = format!("tls.crls[{i}] {}", path.display());
        let found = CertificateRevocationListDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| Error::Tls(format!("{field}: {e}")))?;
        if found.is_empty() {
            return Err(Error::Tls(format!("{field}: no CRL found")));
        }
        for der in &found {
            let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
                .map_err(|e| Error::Tls(format!("{field}: not a readable CRL ({e})")))?;
            let signed_by_a_client_ca = cas.iter().any(|ca| {
                ca.subject().as_raw() == crl.issuer().as_raw()
                    && crl.verify_signature(ca.public_key()).is_ok()
            });
            if !signed_by_a_client_ca {
                return Err(Error::Tls(format!(
                    "{field}: the CRL of {} is not signed by a CA in tls.client_ca",
                    crl.issuer()
                )));
            }
        }
        crls.extend(found);
    }
    Ok(crls)
}

/// Builds the client certificate verifier from the CA and the CRLs `tls` names.
pub fn client_verifier(tls: &TlsConfig) -> Result<Arc<dyn ClientCertVerifier>> {
    let client_cas = load_certs("tls.client_ca", &tls.client_ca)?;
    let crls = load_crls(&tls.crls, &client_cas)?;
    let mut roots = RootCertStore::empty();
    for ca in client_cas {
        roots
            .add(ca)
            .map_err(|e| Error::Tls(format!("tls.client_ca: {e}")))?;
    }
    // With CRLs, a certificate whose status no CRL covers is refused (rustls's default), and
    // every certificate of the chain below the trust anchor is checked.
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls)
        .build()
        .map_err(|e| Error::Tls(format!("tls.client_ca or tls.crls: {e}")))
}

/// Builds the rustls server config: the server certificate `tls` names, TLS 1.3 only, client
/// certificates mandatory and checked by `verifier`, no session resumption.
pub fn server_config(
    tls: &TlsConfig,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let certified = load_certified_key(&tls.cert, &tls.key, &provider)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption, stateful or stateless: every connection verifies the client certificate
    // afresh (expiry, CRLs), and a ticket key can never outlive a reload.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Reads the caller identity from a (verified) client certificate. A certificate with a SAN
/// extension is named by its first SAN URI, else its first SAN DNS name, and never by its CN; a
/// certificate without a SAN extension is named by its one subject CN. A SAN extension that
/// cannot be read (malformed, or present twice) is refused, never skipped for the CN.
pub fn identity_from_certificate(der: &[u8]) -> Result<CallerIdentity> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| Error::Tls(format!("client certificate: {e}")))?;
    let refuse = |why: String| Err(Error::Tls(format!("client certificate: {why}")));
    let san = match cert.subject_alternative_name() {
        Ok(san) => san,
        Err(e) => return refuse(format!("subject alternative name cannot be read ({e})")),
    };
    let named = match san {
        Some(san) => {
            let names = &san.value.general_names;
            // A name that does not parse (a URI or DNS name that is not text, say) could have
            // been the one meant: refuse rather than pick another.
            if let Some(invalid) = names
                .iter()
                .find(|name| matches!(name, GeneralName::Invalid(..)))
            {
                return refuse(format!(
                    "subject alternative name cannot be read (an invalid name: {invalid})"
                ));
            }
            let uri = names.iter().find_map(|name| match name {
                GeneralName::URI(uri) => Some(CallerIdentity::uri(uri)),
                _ => None,
            });
            let dns = || {
                names.iter().find_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(CallerIdentity::dns(dns)),
                    _ => None,
                })
            };
            match uri.or_else(dns) {
                Some(named) => named,
                None => return refuse("its SAN holds no URI and no DNS name".into()),
            }
        }
        None => {
            let mut common_names = cert.subject().iter_common_name();
            let (Some(cn), None) = (common_names.next(), common_names.next()) else {
                return refuse("without a SAN it must have exactly one subject CN".into());
            };
            match cn.as_str() {
                Ok(cn) => CallerIdentity::common_name(cn),
                Err(e) => return refuse(format!("subject CN is not text ({e})")),
            }
        }
    };
    named.or_else(refuse)
}

/// What the gRPC handlers learn about the connection a request arrived on.
#[derive(Clone)]
pub struct PeerInfo {
    /// The verified caller identity.
    pub identity: CallerIdentity,
    /// The peer's address, for logs.
    pub remote_addr: Option<std::net::SocketAddr>,
    certificate: Arc<AcceptedCertificate>,
}

impl std::fmt::Debug for PeerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerInfo")
            .field("identity", &self.identity)
            .field("remote_addr", &self.remote_addr)
            .finish_non_exhaustive()
    }
}

/// The certificate chain a connection was accepted with. An HTTP/2 connection lives for hours;
/// it must outlive neither its certificate's expiry nor a reload whose CA or CRLs refuse it.
struct AcceptedCertificate {
    /// Leaf first.
    chain: Vec<CertificateDer<'static>>,
    /// The leaf's notAfter, Unix seconds.
    not_after: i64,
    trust: Arc<ReloadableTrust>,
    /// The trust generation the chain was last verified against; verifying again only after a
    /// reload keeps requests cheap.
    verified_generation: AtomicU64,
}

impl PeerInfo {
    /// Holds the connection's certificate to the trust in force now: refuses a request once the
    /// certificate has expired, or once a reload (another CA, a CRL revoking it) refuses it.
    pub fn check_still_trusted(&self) -> std::result::Result<(), String> {
        let accepted = &self.certificate;
        let now = UnixTime::now();
        if i64::try_from(now.as_secs()).unwrap_or(i64::MAX) >= accepted.not_after {
            return Err("client certificate expired; reconnect with a valid one".into());
        }
        let trust = accepted.trust.current();
        if accepted.verified_generation.load(Ordering::Acquire) == trust.generation {
            return Ok(());
        }
        let Some((leaf, intermediates)) = accepted.chain.split_first() else {
            return Err("no client certificate".into());
        };
        trust
            .client_verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| {
                format!("the reloaded trust refuses this client certificate ({e}); reconnect")
            })?;
        accepted
            .verified_generation
            .store(trust.generation, Ordering::Release);
        Ok(())
    }
}

/// A TLS stream whose client certificate has been verified and whose identity has been read.
pub struct AuthenticatedStream {
    inner: TlsStream<TcpStream>,
    peer: PeerInfo,
    /// Counts against `server.max_connections` until the connection is dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl AuthenticatedStream {
    /// Reads the identity from a handshake finished under trust generation `generation` of
    /// `trust`; fails when the certificate names none.
    pub fn new(
        inner: TlsStream<TcpStream>,
        slot: tokio::sync::OwnedSemaphorePermit,
        trust: Arc<ReloadableTrust>,
        generation: u64,
    ) -> Result<Self> {
        let (tcp, session) = inner.get_ref();
        let remote_addr = tcp.peer_addr().ok();
        let chain = session
            .peer_certificates()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| Error::Tls("no client certificate".into()))?
            .to_vec();
        let identity = identity_from_certificate(chain[0].as_ref())?;
        let (_, leaf) = X509Certificate::from_der(chain[0].as_ref())
            .map_err(|e| Error::Tls(format!("client certificate: {e}")))?;
        let not_after = leaf.validity().not_after.timestamp();
        Ok(AuthenticatedStream {
            inner,
            peer: PeerInfo {
                identity,
                remote_addr,
                certificate: Arc::new(AcceptedCertificate {
                    chain,
                    not_after,
                    trust,
                    verified_generation: AtomicU64::new(generation),
                }),
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

#[cfg(test)]
mod tests {
    use rcgen::{CustomExtension, DnType, SanType};

    use super::*;
    use crate::pki::{CertificateParams, DevPki};

    const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

    fn identity_of(
        common_names: &[&str],
        sans: Vec<SanType>,
        extensions: Vec<CustomExtension>,
    ) -> std::result::Result<String, String> {
        let pki = DevPki::generate("unit test CA").unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for cn in common_names {
            params.distinguished_name.push(DnType::CommonName, *cn);
        }
        params.subject_alt_names = sans;
        params.custom_extensions = extensions;
        let cert = pki
            .issue_client_params(params)
            .unwrap_or_else(|e| panic!("{e}"));
        let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        identity_from_certificate(der.as_ref())
            .map(|id| id.to_string())
            .map_err(|e| e.to_string())
    }

    fn uri(text: &str) -> SanType {
        SanType::URI(text.try_into().unwrap_or_else(|e| panic!("{e:?}")))
    }

    fn dns(text: &str) -> SanType {
        SanType::DnsName(text.try_into().unwrap_or_else(|e| panic!("{e:?}")))
    }

    #[test]
    fn names_are_typed_by_the_field_they_come_from() {
        assert_eq!(
            identity_of(&["gateway"], vec![], vec![]).as_deref(),
            Ok("cn:gateway")
        );
        assert_eq!(
            identity_of(
                &["gateway"],
                vec![dns("Pay.Example"), uri("spiffe://x/pay")],
                vec![]
            )
            .as_deref(),
            Ok("uri:spiffe://x/pay")
        );
        assert_eq!(
            identity_of(&["gateway"], vec![dns("Pay.Example")], vec![]).as_deref(),
            Ok("dns:pay.example")
        );
    }

    #[test]
    fn a_san_without_uri_or_dns_is_not_read_by_its_cn() {
        let email = SanType::Rfc822Name(
            "ops@example.org"
                .try_into()
                .unwrap_or_else(|e| panic!("{e:?}")),
        );
        let err = identity_of(&["gateway"], vec![email], vec![]).err();
        assert!(err.is_some_and(|e| e.contains("no URI and no DNS name")));
    }

    #[test]
    fn an_unreadable_san_is_refused_not_read_by_its_cn() {
        for content in [
            // A URI that is not text.
            vec![0x30, 0x03, 0x86, 0x01, 0xff],
            // A sequence whose length runs past the end.
            vec![0x30, 0x09, 0x82, 0x01, b'x'],
            // Not a sequence at all.
            vec![0x05, 0x00],
        ] {
            let broken = CustomExtension::from_oid_content(SUBJECT_ALT_NAME, content.clone());
            let err = identity_of(&["gateway"], vec![], vec![broken]).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("subject alternative name cannot be read")),
                "{content:02x?}: {err:?}"
            );
        }
    }

    #[test]
    fn two_san_extensions_are_refused_not_read_by_its_cn() {
        let second =
            CustomExtension::from_oid_content(SUBJECT_ALT_NAME, vec![0x30, 0x03, 0x82, 0x01, b'x']);
        let err = identity_of(&["gateway"], vec![dns("gateway")], vec![second]).err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("subject alternative name cannot be read")),
            "{err:?}"
        );
    }

    #[test]
    fn without_a_san_a_cn_is_needed() {
        let err = identity_of(&[], vec![], vec![]).err();
        assert!(err.is_some_and(|e| e.contains("exactly one subject CN")));
    }
}
