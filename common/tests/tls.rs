//! TLS: certificates from the deployment CA connect over real QUIC on localhost and
//! identify both ends; certificates from elsewhere, or none, are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qnet_common::tls::{
    self, ALPN, DeploymentCa, Identity, TlsError, TransportOptions, cert_identity, client_config,
    is_valid_identity, load_ca_cert, peer_identity, server_config,
};
use qnet_common::wire::{FrameReader, FrameWriter, Role};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(10);

/// A scratch folder removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("qnet-tls-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn server(identity: &Identity, ca: &DeploymentCa) -> quinn::Endpoint {
    quinn::Endpoint::server(server_config(identity, ca.cert()).unwrap(), localhost()).unwrap()
}

fn client_endpoint(config: quinn::ClientConfig) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

/// Connects with `client` to `server` as `server_name` and returns how each side
/// ended up: the server's accepted connection (or error) and the client's connection
/// once it is known to be alive (or the error that ended it).
async fn attempt(
    server: &quinn::Endpoint,
    client: &quinn::Endpoint,
    server_name: &str,
) -> (
    Result<quinn::Connection, quinn::ConnectionError>,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let addr = server.local_addr().unwrap();
    let accept = async {
        let incoming = server.accept().await.expect("endpoint open");
        incoming.await
    };
    let connect = async {
        let conn = client.connect(addr, server_name).unwrap().await?;
        // In TLS 1.3 the client may finish its handshake before the server has
        // judged the client certificate; a round trip on a stream settles it.
        let (mut send, recv) = conn.open_bi().await?;
        FrameWriter::new(&mut send)
            .write_hello(Role::Node("probe".into()))
            .await
            .map_err(|_| conn.close_reason().expect("stream failed without close"))?;
        let mut reader = FrameReader::new(recv);
        match reader.read_hello().await {
            Ok(_) => Ok(conn),
            Err(_) => Err(conn.closed().await),
        }
    };
    let serve = async {
        let conn = accept.await?;
        let (mut send, recv) = conn.accept_bi().await?;
        let hello = FrameReader::new(recv).read_hello().await.unwrap();
        assert_eq!(hello.role, Role::Node("probe".into()));
        FrameWriter::new(&mut send)
            .write_hello(Role::Broker)
            .await
            .unwrap();
        Ok(conn)
    };
    timeout(DEADLINE, async { tokio::join!(serve, connect) })
        .await
        .expect("connection attempt must finish")
}

#[tokio::test]
async fn same_ca_connects_and_names_both_ends() {
    let ca = DeploymentCa::generate("test run").unwrap();
    let broker = ca.issue("broker").unwrap();
    let alice = ca.issue("alice").unwrap();
    let server = server(&broker, &ca);
    let client = client_endpoint(client_config(&alice, ca.cert()).unwrap());

    let (served, connected) = attempt(&server, &client, "broker").await;
    let served = served.expect("server accepts a client of its own CA");
    let connected = connected.expect("client connects to a server of its own CA");
    assert_eq!(peer_identity(&served).as_deref(), Some("alice"));
    assert_eq!(peer_identity(&connected).as_deref(), Some("broker"));

    let alpn = connected
        .handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap()
        .protocol;
    assert_eq!(alpn.as_deref(), Some(ALPN));

    connected.close(0u32.into(), b"done");
    server.wait_idle().await;
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    let ca = DeploymentCa::generate("test run").unwrap();
    let broker = ca.issue("broker").unwrap();
    let alice = ca.issue("alice").unwrap();
    let server = server(&broker, &ca);
    let client = client_endpoint(client_config(&alice, ca.cert()).unwrap());
    // The server is "broker"; a client expecting "controller" must not accept it.
    let (served, connected) = attempt(&server, &client, "controller").await;
    let err = connected.expect_err("client must refuse");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert!(served.is_err(), "no connection may be established");
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let ca = DeploymentCa::generate("real").unwrap();
    let rogue_ca = DeploymentCa::generate("rogue").unwrap();
    let broker = ca.issue("broker").unwrap();
    // Same name, wrong issuer; it even trusts the real CA for the server.
    let mallory = rogue_ca.issue("alice").unwrap();
    let server = server(&broker, &ca);
    let client = client_endpoint(client_config(&mallory, ca.cert()).unwrap());

    let (served, connected) = attempt(&server, &client, "broker").await;
    let err = served.expect_err("server must refuse a foreign certificate");
    eprintln!("server: {err}");
    assert!(connected.is_err(), "client must not end up connected");
}

#[tokio::test]
async fn server_from_another_ca_is_refused() {
    let ca = DeploymentCa::generate("real").unwrap();
    let rogue_ca = DeploymentCa::generate("rogue").unwrap();
    let fake_broker = rogue_ca.issue("broker").unwrap();
    let alice = ca.issue("alice").unwrap();
    // The fake server trusts the real CA, so only the client's check stops it.
    let server =
        quinn::Endpoint::server(server_config(&fake_broker, ca.cert()).unwrap(), localhost())
            .unwrap();
    let client = client_endpoint(client_config(&alice, ca.cert()).unwrap());
    let (served, connected) = attempt(&server, &client, "broker").await;
    let err = connected.expect_err("client must refuse a foreign server");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(served.is_err());
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = DeploymentCa::generate("real").unwrap();
    let broker = ca.issue("broker").unwrap();
    let server = server(&broker, &ca);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Same ALPN, so the refusal is about the missing certificate and nothing else.
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let client = client_endpoint(quinn::ClientConfig::new(Arc::new(quic)));

    let (served, connected) = attempt(&server, &client, "broker").await;
    let err = served.expect_err("server must refuse a client without certificate");
    eprintln!("server: {err}");
    assert!(connected.is_err(), "client must not end up connected");
}

#[test]
fn identities_are_written_and_loaded() {
    let dir = TempDir::new("files");
    let ca = DeploymentCa::generate("run-1").unwrap();
    ca.write_cert(dir.path()).unwrap();
    let alice = ca.issue_to_dir(dir.path(), "alice").unwrap();
    ca.issue_to_dir(dir.path(), "broker").unwrap();

    assert_eq!(&load_ca_cert(dir.path()).unwrap(), ca.cert());
    let loaded = Identity::load(dir.path(), "alice").unwrap();
    assert_eq!(loaded.name(), "alice");
    assert_eq!(loaded.cert(), alice.cert());
    assert_eq!(cert_identity(loaded.cert()).as_deref(), Some("alice"));
    // A loaded identity is usable for configs.
    client_config(&loaded, &load_ca_cert(dir.path()).unwrap()).unwrap();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("alice.key"), 0o600);
        assert_eq!(mode("broker.key"), 0o600);
        assert_eq!(mode("alice.pem"), 0o644);
    }
    // Rewriting keeps the key private and leaves no temporary files.
    alice.write(dir.path()).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    // A certificate filed under the wrong name is caught.
    std::fs::copy(
        dir.path().join("broker.pem"),
        dir.path().join("mallory.pem"),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("broker.key"),
        dir.path().join("mallory.key"),
    )
    .unwrap();
    match Identity::load(dir.path(), "mallory") {
        Err(TlsError::IdentityMismatch { expected, found }) => {
            assert_eq!(expected, "mallory");
            assert_eq!(found.as_deref(), Some("broker"));
        }
        other => panic!("expected IdentityMismatch, got {other:?}"),
    }
    assert!(matches!(
        Identity::load(dir.path(), "nobody"),
        Err(TlsError::Io { .. })
    ));
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("junk.key"), "not a key").unwrap();
    assert!(matches!(
        Identity::load(dir.path(), "junk"),
        Err(TlsError::Pem { .. })
    ));
}

#[test]
fn identity_names_are_dns_labels() {
    for good in ["alice", "broker", "controller", "n1", "repeater-3", "a"] {
        assert!(is_valid_identity(good), "{good}");
    }
    let long = "a".repeat(64);
    for bad in [
        "", "Alice", "1node", "-a", "a-", "a.b", "a_b", "a b", "ä", &long,
    ] {
        assert!(!is_valid_identity(bad), "{bad:?}");
    }
    let ca = DeploymentCa::generate("x").unwrap();
    assert!(matches!(
        ca.issue("Alice"),
        Err(TlsError::InvalidIdentity(_))
    ));
    // Debug output never shows key material.
    let id = ca.issue("alice").unwrap();
    assert!(!format!("{id:?}").contains("PRIVATE"));
    tls::install_default_provider();
    tls::install_default_provider();
}

#[test]
fn transport_options_build() {
    let options = TransportOptions {
        idle_timeout: Duration::from_millis(1500),
        ..TransportOptions::default()
    };
    options.transport_config().unwrap();
    let absurd = TransportOptions {
        idle_timeout: Duration::from_secs(u64::MAX),
        ..TransportOptions::default()
    };
    assert!(matches!(
        absurd.transport_config(),
        Err(TlsError::Transport(_))
    ));
}
