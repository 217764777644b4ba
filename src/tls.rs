//! TLS: the rustls server configuration (TLS 1.2 and 1.3 only, one crypto
//! provider), certificate loading from PEM, hot swap on reload, and the dev
//! certificate authority behind `gen-cert` and the embedded default.
//!
//! Must not know about HTTP or sessions.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Installs the one crypto provider (ring). Safe to call more than once.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", cert.display()));
    }
    // The key's own error text never includes key material.
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key_der, &provider)
        .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))?;
    Ok(ck)
}

/// The server certificate, swappable while the listener keeps running.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
        })
    }

    /// New handshakes use `key`; established sessions are untouched.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server config: TLS 1.3 and 1.2, ALPN http/1.1. With `client_ca`,
/// a client certificate is asked for and verified against it, but stays
/// optional: clients without one authenticate by password or token.
pub fn server_config(
    store: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = match client_ca {
        None => builder.with_no_client_auth().with_cert_resolver(store),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs =
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no CA certificate found", ca.display()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(store)
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A verified client certificate as service users name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's first common name, if any.
    pub cn: Option<String>,
    /// `sha256:` and the lower-case hex SHA-256 of the certificate (DER).
    pub fingerprint: String,
}

impl ClientIdentity {
    /// The identity of an end-entity certificate rustls has already verified.
    pub fn of(cert: &CertificateDer<'_>) -> ClientIdentity {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(cert.as_ref());
        let fingerprint = format!("sha256:{}", crate::util::hex(&digest));
        let cn = x509_parser::parse_x509_certificate(cert.as_ref())
            .ok()
            .and_then(|(_, parsed)| {
                parsed
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .map(str::to_owned)
            });
        ClientIdentity { cn, fingerprint }
    }
}

/// PEM text of a dev CA and a server certificate and key signed by it.
pub struct DevCerts {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
}

/// How long a dev certificate is valid: the most browsers and Apple
/// platforms accept for a server certificate (CA/B Forum, 825 days).
pub const DEV_CERT_DAYS: i64 = 825;

/// Makes a dev CA and a server certificate for `hosts` (DNS names or IPs),
/// ECDSA P-256, with the extensions `openssl verify -x509_strict` and browsers
/// expect: the CA has basicConstraints CA:TRUE (critical), keyCertSign and
/// cRLSign; the server certificate has CA:FALSE, digitalSignature (an EC key
/// signs, it never enciphers), serverAuth, Subject and Authority Key
/// Identifiers. Both are valid from an hour ago (clock skew) for
/// [`DEV_CERT_DAYS`].
pub fn generate_dev_certs(hosts: &[String]) -> Result<DevCerts, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let not_after = not_before + time::Duration::days(DEV_CERT_DAYS);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "adjunct-gateway dev CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("localhost", String::as_str),
    );
    // ExplicitNoCa: rcgen then writes CA:FALSE and the Subject Key Identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(DevCerts {
        ca_pem: ca_cert.pem(),
        server_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
    })
}

/// Writes ca.pem, server.pem and server.key (0600) into `dir`.
pub fn write_dev_certs(dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    let certs = generate_dev_certs(hosts)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.pem"), &certs.ca_pem)?;
    std::fs::write(dir.join("server.pem"), &certs.server_pem)?;
    crate::util::write_private(&dir.join("server.key"), certs.server_key_pem.as_bytes())?;
    Ok(())
}
