//! The deployment's PKI and the QUIC configurations built on it.
//!
//! The controller makes one [`DeploymentCa`] per deployment and issues every process
//! an [`Identity`]: a key and a leaf certificate whose only subject alternative name
//! is a DNS name equal to the identity (`broker`, `controller`, or a node name such
//! as `alice`). Every connection is mutual TLS 1.3 against that CA, so either end
//! learns who the other is from [`peer_identity`] and never from a message field
//! (DESIGN §5).
//!
//! On disk, one folder holds `ca.pem`, `<identity>.pem` and `<identity>.key` (keys
//! with mode 0600). The CA's own key is never written: a deployment issues every
//! certificate it needs when it starts.
//!
//! Configs are built with an explicit ring [`CryptoProvider`], so no process-wide
//! provider has to be installed; [`install_default_provider`] exists for code that
//! uses rustls' `builder()` shortcuts.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A DER certificate, as the configs here take it.
pub use rustls::pki_types::CertificateDer;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};

/// The ALPN protocol id of every qnet connection.
pub const ALPN: &[u8] = b"qnet/1";

/// File name of the CA certificate in a certificate folder.
pub const CA_CERT_FILE: &str = "ca.pem";

/// The identity of the broker's certificate.
pub const BROKER_IDENTITY: &str = "broker";

/// The identity of the controller's certificate, the only one allowed admin
/// operations.
pub const CONTROLLER_IDENTITY: &str = "controller";

/// Longest identity: one DNS label.
pub const MAX_IDENTITY_LEN: usize = 63;

/// What can go wrong making, storing or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{}: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// An identity is not a lowercase DNS label (`[a-z][a-z0-9-]*`, no trailing `-`,
    /// at most [`MAX_IDENTITY_LEN`] characters).
    #[error("invalid identity {0:?}: use a lowercase DNS label (letters, digits, '-')")]
    InvalidIdentity(String),
    /// A loaded certificate is not for the identity it was loaded as.
    #[error("certificate for {expected:?} names {found:?}")]
    IdentityMismatch {
        /// The identity asked for.
        expected: String,
        /// The DNS name in the certificate, if any.
        found: Option<String>,
    },
    /// rcgen could not make a key or certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificates or keys.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. no usable CA).
    #[error("client verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// The rustls configuration lacks the cipher suite QUIC needs for its initial
    /// packets.
    #[error("QUIC crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A transport option is out of range.
    #[error("transport option: {0}")]
    Transport(String),
}

/// True if `name` can be an identity: a lowercase DNS label that starts with a
/// letter (`[a-z][a-z0-9-]*`, not ending in `-`, at most 63 characters). This is also
/// what Kubernetes accepts as a resource name.
pub fn is_valid_identity(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_IDENTITY_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_identity(name: &str) -> Result<(), TlsError> {
    if is_valid_identity(name) {
        Ok(())
    } else {
        Err(TlsError::InvalidIdentity(name.to_owned()))
    }
}

/// The ring crypto provider every config here is built with.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs ring as rustls' process-wide default provider; harmless if a default is
/// already installed. Only needed by code that builds rustls configs itself with
/// `builder()`.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A deployment's certificate authority: a self-signed CA certificate and its key,
/// kept in memory only.
pub struct DeploymentCa {
    name: String,
    cert: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DeploymentCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeploymentCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DeploymentCa {
    /// A new CA with common name `name` (any text, e.g. the run id) and a fresh
    /// P-256 key.
    pub fn generate(name: &str) -> Result<DeploymentCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "qnet");
        // The CA signs leaves directly; no intermediates.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DeploymentCa {
            name: name.to_owned(),
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CA certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues `identity` a fresh key and a certificate with `identity` as its only DNS
    /// subject alternative name, valid for both TLS client and server authentication.
    pub fn issue(&self, identity: &str) -> Result<Identity, TlsError> {
        check_identity(identity)?;
        let mut params = CertificateParams::new(vec![identity.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, identity);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "qnet");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            name: identity.to_owned(),
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA certificate to `dir/ca.pem`, creating `dir` if needed.
    pub fn write_cert(&self, dir: &Path) -> Result<(), TlsError> {
        write_file(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), false)
    }

    /// [`issue`](Self::issue)s `identity` and [`write`](Identity::write)s it to `dir`.
    pub fn issue_to_dir(&self, dir: &Path, identity: &str) -> Result<Identity, TlsError> {
        let id = self.issue(identity)?;
        id.write(dir)?;
        Ok(id)
    }
}

/// One process's certificate and private key.
pub struct Identity {
    name: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity (the certificate's DNS name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leaf certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Writes `dir/<name>.pem` (certificate) and `dir/<name>.key` (private key, mode
    /// 0600), creating `dir` if needed. Each file is written to a temporary name and
    /// renamed, so a reader never sees half a file.
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        write_file(
            &dir.join(format!("{}.key", self.name)),
            self.key_pem.as_bytes(),
            true,
        )?;
        write_file(
            &dir.join(format!("{}.pem", self.name)),
            self.cert_pem.as_bytes(),
            false,
        )
    }

    /// Loads `dir/<name>.pem` and `dir/<name>.key`, checking that the certificate is
    /// really for `name`.
    pub fn load(dir: &Path, name: &str) -> Result<Identity, TlsError> {
        check_identity(name)?;
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&cert_path, e))?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::Pem {
                path: cert_path,
                detail: "no certificate in file".into(),
            });
        };
        let found = cert_identity(leaf);
        if found.as_deref() != Some(name) {
            return Err(TlsError::IdentityMismatch {
                expected: name.to_owned(),
                found,
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| pem_error(&key_path, e))?;
        Ok(Identity {
            name: name.to_owned(),
            chain,
            key,
            cert_pem,
            key_pem,
        })
    }
}

/// Loads the CA certificate from `dir/ca.pem`.
pub fn load_ca_cert(dir: &Path) -> Result<CertificateDer<'static>, TlsError> {
    let path = dir.join(CA_CERT_FILE);
    let pem = read_file(&path)?;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| pem_error(&path, e))
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file and a rename; `private`
/// files get mode 0600 from the moment they exist.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    // A leftover temporary file from an earlier run keeps its old mode; fix it.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err(&tmp))?;
    }
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// The DNS name in a certificate's subject alternative names (the first, if there
/// are several), without verifying anything. Use [`peer_identity`] for connections:
/// there rustls has already verified the certificate.
pub fn cert_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    cert.valid_dns_names().next().map(str::to_owned)
}

/// The identity of the peer of an established connection: the DNS name of its
/// verified leaf certificate. `None` if the handshake has not finished or the peer
/// presented no certificate (neither happens on a connection accepted or made with
/// the configs of this module).
pub fn peer_identity(conn: &quinn::Connection) -> Option<String> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    cert_identity(chain.first()?)
}

/// QUIC transport settings shared by servers and clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// How often to send a keep-alive when the connection is otherwise quiet.
    pub keep_alive: Duration,
    /// A connection with no traffic for this long is considered dead. With keep-alives
    /// this is how quickly a crashed or partitioned peer is noticed.
    pub idle_timeout: Duration,
    /// Bidirectional streams the peer may have open at once.
    pub max_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once.
    pub max_uni_streams: u32,
}

impl Default for TransportOptions {
    /// Keep-alive every second, idle timeout 5 s, 256 bidirectional and 1024
    /// unidirectional streams.
    fn default() -> Self {
        TransportOptions {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            max_bidi_streams: 256,
            max_uni_streams: 1024,
        }
    }
}

impl TransportOptions {
    /// The quinn transport config for these options.
    pub fn transport_config(&self) -> Result<quinn::TransportConfig, TlsError> {
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| TlsError::Transport(format!("idle timeout: {e}")))?;
        let mut config = quinn::TransportConfig::default();
        config
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(idle))
            .max_concurrent_bidi_streams(self.max_bidi_streams.into())
            .max_concurrent_uni_streams(self.max_uni_streams.into());
        Ok(config)
    }
}

fn root_store(ca_cert: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.clone())?;
    Ok(Arc::new(roots))
}

/// A QUIC server config with default [`TransportOptions`]; see
/// [`server_config_with`].
pub fn server_config(
    identity: &Identity,
    ca_cert: &CertificateDer<'static>,
) -> Result<quinn::ServerConfig, TlsError> {
    server_config_with(identity, ca_cert, &TransportOptions::default())
}

/// A QUIC server config that presents `identity` and accepts only clients whose
/// certificate is signed by `ca_cert` (TLS 1.3, ALPN [`ALPN`]).
pub fn server_config_with(
    identity: &Identity,
    ca_cert: &CertificateDer<'static>,
    options: &TransportOptions,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(ca_cert)?, provider.clone())
            .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(options.transport_config()?));
    Ok(config)
}

/// A QUIC client config with default [`TransportOptions`]; see
/// [`client_config_with`].
pub fn client_config(
    identity: &Identity,
    ca_cert: &CertificateDer<'static>,
) -> Result<quinn::ClientConfig, TlsError> {
    client_config_with(identity, ca_cert, &TransportOptions::default())
}

/// A QUIC client config that presents `identity` and accepts only servers whose
/// certificate is signed by `ca_cert` (TLS 1.3, ALPN [`ALPN`]). Connect with the
/// server's identity as the server name (`endpoint.connect(addr, "broker")`): the
/// server's certificate must name it.
pub fn client_config_with(
    identity: &Identity,
    ca_cert: &CertificateDer<'static>,
    options: &TransportOptions,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(ca_cert)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(options.transport_config()?));
    Ok(config)
}
