//! A development PKI (rcgen): a CA, a server certificate for localhost and client certificates
//! for named identities. Used by `signerd dev-pki`, the local stack and the tests. Not for
//! production: the CA key is written next to the certificates.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateRevocationListParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The certificate parameters [`DevPki::issue_client_params`] takes (rcgen's).
pub use rcgen::CertificateParams;

use crate::error::{Error, Result};

/// A certificate and its private key, PEM encoded.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl IssuedCertificate {
    /// Writes `<dir>/<name>.pem` and `<dir>/<name>.key` (the key readable by the owner only).
    pub fn write(&self, dir: &Path, name: &str) -> Result<()> {
        write_file(&dir.join(format!("{name}.pem")), &self.cert_pem, false)?;
        write_file(&dir.join(format!("{name}.key")), &self.key_pem, true)
    }
}

/// How a client certificate names its holder.
#[derive(Clone, Debug)]
pub enum ClientName {
    /// Subject CN only.
    CommonName(String),
    /// A SAN URI (and the same text as CN).
    Uri(String),
    /// A SAN DNS name (and the same text as CN).
    Dns(String),
}

/// A certificate authority kept in memory.
pub struct DevPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_key_pem: String,
}

impl DevPki {
    /// Creates a fresh CA named `name`.
    pub fn generate(name: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(pki_err)?;
        let ca_key_pem = key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(params, key).map_err(pki_err)?;
        Ok(DevPki { ca, ca_key_pem })
    }

    /// The CA certificate (PEM), for `tls.client_ca` and for clients verifying the server.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn issue_server(&self) -> Result<IssuedCertificate> {
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .map_err(pki_err)?;
        params.distinguished_name = dn("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate valid from now for `days` days.
    pub fn issue_client(&self, name: &ClientName, days: i64) -> Result<IssuedCertificate> {
        let now = time_now();
        self.issue_client_valid(name, now - ONE_HOUR, now + days * ONE_DAY)
    }

    /// A client certificate valid between two instants (seconds since the Unix epoch), so that
    /// tests can make expired and not-yet-valid certificates.
    pub fn issue_client_valid(
        &self,
        name: &ClientName,
        not_before: i64,
        not_after: i64,
    ) -> Result<IssuedCertificate> {
        let (text, san) = match name {
            ClientName::CommonName(cn) => (cn.clone(), None),
            ClientName::Uri(uri) => (
                uri.clone(),
                Some(SanType::URI(uri.clone().try_into().map_err(pki_err)?)),
            ),
            ClientName::Dns(dns) => (
                dns.clone(),
                Some(SanType::DnsName(dns.clone().try_into().map_err(pki_err)?)),
            ),
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&text);
        params.subject_alt_names = san.into_iter().collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;
        self.issue(params)
    }

    /// A client certificate from hand-made parameters, for tests of odd certificates (a CN
    /// beside a SAN, a malformed extension). Client authentication is added to the extended key
    /// usages when they name none.
    pub fn issue_client_params(&self, mut params: CertificateParams) -> Result<IssuedCertificate> {
        if params.extended_key_usages.is_empty() {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        self.issue(params)
    }

    /// A CRL signed by this CA, valid from an hour ago for a day, revoking `revoked`.
    pub fn crl_pem(&self, revoked: &[IssuedCertificate]) -> Result<String> {
        let now = time_now();
        let revoked_certs = revoked
            .iter()
            .map(|cert| {
                Ok(RevokedCertParams {
                    serial_number: serial_of(cert)?,
                    revocation_time: to_offset(now - 60)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Later CRLs carry larger numbers, as RFC 5280 wants.
        let crl_number = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let params = CertificateRevocationListParams {
            this_update: to_offset(now - ONE_HOUR)?,
            next_update: to_offset(now + ONE_DAY)?,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.ca).map_err(pki_err)?;
        crl.pem().map_err(pki_err)
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCertificate> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let cert = params.signed_by(&key, &self.ca).map_err(pki_err)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `ca.key`, `server.pem`/`.key` and `<name>.pem`/`.key` per client
    /// (CN = the name, which is then the identity to put in the ACL).
    pub fn write_dir(&self, dir: &Path, clients: &[String]) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        write_file(&dir.join("ca.pem"), &self.ca_pem(), false)?;
        write_file(&dir.join("ca.key"), &self.ca_key_pem, true)?;
        self.issue_server()?.write(dir, "server")?;
        for client in clients {
            if client.is_empty()
                || !client
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(Error::InvalidArgument(format!(
                    "client name {client:?} must be [A-Za-z0-9._-]+"
                )));
            }
            self.issue_client(&ClientName::CommonName(client.clone()), 365)?
                .write(dir, client)?;
        }
        Ok(())
    }
}

const ONE_HOUR: i64 = 3600;
const ONE_DAY: i64 = 86_400;

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn to_offset(unix: i64) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(pki_err)
}

fn serial_of(cert: &IssuedCertificate) -> Result<SerialNumber> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert.cert_pem.as_bytes()).map_err(pki_err)?;
    let (_, parsed) = X509Certificate::from_der(&pem.contents).map_err(pki_err)?;
    Ok(SerialNumber::from_slice(parsed.raw_serial()))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn pki_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("generating certificates: {e}"))
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
