//! The CA, certificates and TLS configurations end to end, with real handshakes over loopback TCP
//! (std sockets and `rustls::StreamOwned` in threads: no async runtime to build).

use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rampart_pki::rustls::pki_types::{CertificateDer, ServerName};
use rampart_pki::rustls::{
    ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned,
};
use rampart_pki::{
    AgentClaims, AgentKey, Ca, Error, Fingerprint, ServerIdentity, agent_client_config,
    cert_fingerprint, client_config_trusting, pinned_ca_pem, pinned_client_config, server_config,
};
use x509_parser::extensions::GeneralName;

const DAY: Duration = Duration::from_secs(86_400);

/// A fresh directory per test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("rampart-pki-it-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn claims(tenant: &str, device_id: &str) -> AgentClaims {
    AgentClaims {
        tenant: tenant.to_owned(),
        device_id: device_id.to_owned(),
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A CA and a server identity for `localhost` and `127.0.0.1` in `dir`.
fn server(dir: &TempDir) -> (Ca, Arc<ServerConfig>) {
    let ca = Ca::load_or_create(&dir.0).unwrap();
    let identity =
        ServerIdentity::load_or_create(&dir.0, &ca, &names(&["localhost", "127.0.0.1"])).unwrap();
    let config = server_config(&identity, &ca).unwrap();
    (ca, config)
}

/// An agent key and a certificate for it signed by `ca`: (cert PEM, key PEM).
fn enrolled_agent(ca: &Ca, tenant: &str, device: &str) -> (String, String) {
    let key = AgentKey::generate().unwrap();
    let cert = ca
        .sign_agent_csr(
            &key.csr_pem("laptop-42").unwrap(),
            &claims(tenant, device),
            30 * DAY,
        )
        .unwrap();
    (cert, key.private_key_pem())
}

struct Outcome {
    /// What the server saw: the client's certificates (empty without one), or its error.
    server: io::Result<Vec<CertificateDer<'static>>>,
    /// What the client saw: the server's chain, or its error.
    client: io::Result<Vec<CertificateDer<'static>>>,
}

/// One connection over loopback: the client sends "ping", the server answers "pong".
fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, host: &str) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = thread::spawn(move || -> io::Result<Vec<CertificateDer<'static>>> {
        let (tcp, _) = listener.accept()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let conn = ServerConnection::new(server).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        let mut ping = [0; 4];
        tls.read_exact(&mut ping)?;
        assert_eq!(&ping, b"ping");
        let peer = tls
            .conn
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        tls.write_all(b"pong")?;
        tls.conn.send_close_notify();
        tls.flush()?;
        Ok(peer)
    });
    let client = (|| -> io::Result<Vec<CertificateDer<'static>>> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
        let conn = ClientConnection::new(client, name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        tls.write_all(b"ping")?;
        let mut pong = [0; 4];
        tls.read_exact(&mut pong)?;
        assert_eq!(&pong, b"pong");
        Ok(tls
            .conn
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default())
    })();
    Outcome {
        server: server_side.join().unwrap(),
        client,
    }
}

/// The TLS error inside an I/O error from `StreamOwned`, as text.
fn tls_error(result: &io::Result<Vec<CertificateDer<'static>>>) -> String {
    match result {
        Ok(_) => panic!("handshake succeeded"),
        Err(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rampart_pki::rustls::Error>())
        {
            Some(tls) => format!("{tls:?}"),
            None => format!("not a TLS error: {e}"),
        },
    }
}

#[test]
fn ca_is_created_once_then_loaded() {
    let dir = TempDir::new("ca-once");
    let first = Ca::load_or_create(&dir.0).unwrap();
    let second = Ca::load_or_create(&dir.0).unwrap();
    assert_eq!(first.fingerprint(), second.fingerprint());
    assert_eq!(first.cert_pem(), second.cert_pem());
    assert_eq!(first.fingerprint(), cert_fingerprint(first.cert_der()));
    assert_eq!(
        fs::read_to_string(dir.0.join("ca.crt")).unwrap(),
        first.cert_pem()
    );

    let text = first.fingerprint().to_string();
    assert!(text.starts_with("sha256:") && text.len() == 71, "{text}");
    assert_eq!(text.parse::<Fingerprint>().unwrap(), first.fingerprint());
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.0.join("ca.key")), 0o600);
        assert_eq!(mode(&dir.0), 0o700);
    }
}

#[test]
fn ca_certificate_is_a_ten_year_signing_ca() {
    let dir = TempDir::new("ca-form");
    let ca = Ca::load_or_create(&dir.0).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert!(cert.basic_constraints().unwrap().unwrap().value.ca);
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign());
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        cn.starts_with("Rampart CA ") && cn.len() > "Rampart CA ".len(),
        "{cn}"
    );
    let validity = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(validity >= 3650 * 86_400, "{validity}");
    // Two installations get two distinct CAs.
    let other = TempDir::new("ca-form-other");
    assert_ne!(
        Ca::load_or_create(&other.0).unwrap().fingerprint(),
        ca.fingerprint()
    );
}

#[test]
fn ca_files_that_are_missing_or_wrong_are_named() {
    let dir = TempDir::new("ca-broken");
    let ca = Ca::load_or_create(&dir.0).unwrap();
    let key = dir.0.join("ca.key");

    // Key lost: refuse rather than replace the CA every agent trusts.
    let saved_key = fs::read(&key).unwrap();
    fs::remove_file(&key).unwrap();
    let err = Ca::load_or_create(&dir.0).unwrap_err();
    assert!(
        matches!(&err, Error::MissingCaKey { key: k, .. } if *k == key),
        "{err}"
    );
    assert!(err.to_string().contains("ca.key"));

    // A key that is not PEM.
    fs::write(&key, "garbage").unwrap();
    let err = Ca::load_or_create(&dir.0).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidFile { path, .. } if *path == key),
        "{err}"
    );

    // Another CA's key beside this certificate.
    let other = TempDir::new("ca-broken-other");
    Ca::load_or_create(&other.0).unwrap();
    fs::copy(other.0.join("ca.key"), &key).unwrap();
    let err = Ca::load_or_create(&dir.0).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidFile { path, .. } if path.ends_with("ca.crt")),
        "{err}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");

    // Certificate lost after a crash between the two writes: the key gets a certificate.
    fs::write(&key, &saved_key).unwrap();
    fs::remove_file(dir.0.join("ca.crt")).unwrap();
    let reborn = Ca::load_or_create(&dir.0).unwrap();
    assert_ne!(reborn.fingerprint(), ca.fingerprint());
    assert_eq!(
        Ca::load_or_create(&dir.0).unwrap().fingerprint(),
        reborn.fingerprint()
    );
}

fn sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut out: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => dns.to_string(),
            GeneralName::IPAddress(ip) if ip.len() == 4 => <[u8; 4]>::try_from(*ip)
                .map(std::net::IpAddr::from)
                .unwrap()
                .to_string(),
            GeneralName::IPAddress(ip) => <[u8; 16]>::try_from(*ip)
                .map(std::net::IpAddr::from)
                .unwrap()
                .to_string(),
            other => panic!("unexpected name {other:?}"),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn server_certificate_has_the_names_and_is_reissued_when_they_change() {
    let dir = TempDir::new("server-names");
    let ca = Ca::load_or_create(&dir.0).unwrap();
    let wanted = names(&["localhost", "127.0.0.1", "::1", "rampart.example.org"]);
    let first = ServerIdentity::load_or_create(&dir.0, &ca, &wanted).unwrap();
    let chain = first.cert_chain();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        &chain[1],
        ca.cert_der(),
        "the chain ends with the CA certificate"
    );
    assert_eq!(
        sans(&chain[0]),
        ["127.0.0.1", "::1", "localhost", "rampart.example.org"]
    );
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert!(
        leaf.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );
    assert!(
        !leaf
            .extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .client_auth
    );
    assert_eq!(
        leaf.issuer(),
        x509_parser::parse_x509_certificate(ca.cert_der())
            .unwrap()
            .1
            .subject()
    );
    #[cfg(unix)]
    assert_eq!(mode(&dir.0.join("server.key")), 0o600);

    // Same names in another order and case: loaded, not re-issued.
    let reordered = names(&["rampart.example.org", "::1", "LOCALHOST", "127.0.0.1"]);
    let again = ServerIdentity::load_or_create(&dir.0, &ca, &reordered).unwrap();
    assert_eq!(again.cert_chain(), first.cert_chain());

    let changed =
        ServerIdentity::load_or_create(&dir.0, &ca, &names(&["localhost", "10.1.2.3"])).unwrap();
    assert_ne!(changed.cert_chain()[0], first.cert_chain()[0]);
    assert_eq!(sans(&changed.cert_chain()[0]), ["10.1.2.3", "localhost"]);

    // A new CA (after the operator replaced pki/ca.*) means a new server certificate.
    fs::remove_file(dir.0.join("ca.key")).unwrap();
    fs::remove_file(dir.0.join("ca.crt")).unwrap();
    let new_ca = Ca::load_or_create(&dir.0).unwrap();
    let renewed =
        ServerIdentity::load_or_create(&dir.0, &new_ca, &names(&["localhost", "10.1.2.3"]))
            .unwrap();
    assert_eq!(&renewed.cert_chain()[1], new_ca.cert_der());

    assert!(matches!(
        ServerIdentity::load_or_create(&dir.0, &ca, &names(&["not a name"])),
        Err(Error::InvalidServerName { .. })
    ));
}

#[test]
fn client_without_certificate_is_let_in() {
    let dir = TempDir::new("tls-anon");
    let (ca, server) = server(&dir);
    for host in ["localhost", "127.0.0.1"] {
        let outcome = handshake(
            server.clone(),
            client_config_trusting(ca.cert_pem()).unwrap(),
            host,
        );
        let server_chain = outcome.client.unwrap();
        assert_eq!(server_chain.len(), 2);
        assert!(outcome.server.unwrap().is_empty(), "no client certificate");
    }
}

#[test]
fn agent_certificate_is_seen_by_the_server_with_its_claims() {
    let dir = TempDir::new("tls-agent");
    let (ca, server) = server(&dir);
    let (cert, key) = enrolled_agent(&ca, "acme", "0f7e3c2a-1d4b-4e8f-9a6c-5b2d1e0f3a47");
    let client = agent_client_config(ca.cert_pem(), &cert, &key).unwrap();
    let outcome = handshake(server, client, "localhost");
    outcome.client.unwrap();
    let peer = outcome.server.unwrap();
    assert_eq!(peer.len(), 1);
    assert_eq!(
        AgentClaims::from_cert_der(&peer[0]).unwrap(),
        claims("acme", "0f7e3c2a-1d4b-4e8f-9a6c-5b2d1e0f3a47")
    );
    assert_eq!(cert_fingerprint(&peer[0]).to_string().len(), 71);
}

#[test]
fn agent_certificate_from_another_ca_is_refused() {
    let dir = TempDir::new("tls-foreign");
    let (ca, server) = server(&dir);
    let other_dir = TempDir::new("tls-foreign-other");
    let other_ca = Ca::load_or_create(&other_dir.0).unwrap();
    let (cert, key) = enrolled_agent(&other_ca, "acme", "dev-1");
    let client = agent_client_config(ca.cert_pem(), &cert, &key).unwrap();
    let outcome = handshake(server, client, "localhost");
    assert!(
        tls_error(&outcome.server).contains("UnknownIssuer"),
        "{}",
        tls_error(&outcome.server)
    );
    assert!(outcome.client.is_err());
}

#[test]
fn pinned_first_contact_checks_the_ca_fingerprint() {
    let dir = TempDir::new("tls-pinned");
    let (ca, server) = server(&dir);

    let outcome = handshake(
        server.clone(),
        pinned_client_config(ca.fingerprint()).unwrap(),
        "localhost",
    );
    let chain = outcome.client.unwrap();
    outcome.server.unwrap();
    // The agent keeps the CA from the chain, and it is the one it pinned.
    let saved = pinned_ca_pem(&chain, ca.fingerprint()).unwrap();
    assert_eq!(saved, ca.cert_pem());
    let outcome = handshake(
        server.clone(),
        client_config_trusting(&saved).unwrap(),
        "localhost",
    );
    outcome.client.unwrap();

    let other_dir = TempDir::new("tls-pinned-other");
    let wrong = Ca::load_or_create(&other_dir.0).unwrap().fingerprint();
    let outcome = handshake(
        server.clone(),
        pinned_client_config(wrong).unwrap(),
        "localhost",
    );
    assert!(
        tls_error(&outcome.client).contains("UnknownIssuer"),
        "{}",
        tls_error(&outcome.client)
    );
    assert!(outcome.server.is_err());
    assert!(matches!(
        pinned_ca_pem(&chain, wrong),
        Err(Error::PinnedCaNotInChain(_))
    ));

    // The pin does not replace the name check.
    let outcome = handshake(
        server,
        pinned_client_config(ca.fingerprint()).unwrap(),
        "elsewhere.example.org",
    );
    assert!(
        tls_error(&outcome.client).contains("NotValidForName"),
        "{}",
        tls_error(&outcome.client)
    );
}

#[test]
fn claims_come_from_the_server_not_from_the_csr() {
    let dir = TempDir::new("csr-claims");
    let ca = Ca::load_or_create(&dir.0).unwrap();
    let key = AgentKey::generate().unwrap();
    // A request that asks for another tenant in its subject and in a URI name.
    let mut params =
        rcgen::CertificateParams::new(vec!["rampart://tenant/victim/device/x".to_owned()]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "rampart://tenant/victim/device/x".try_into().unwrap(),
    )];
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "victim");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "x");
    let signer = rcgen::KeyPair::from_pem(&key.private_key_pem()).unwrap();
    let csr = params.serialize_request(&signer).unwrap().pem().unwrap();

    let cert_pem = ca
        .sign_agent_csr(&csr, &claims("acme", "dev-7"), 30 * DAY)
        .unwrap();
    let der = rampart_pki::rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
        .map(|c: CertificateDer<'static>| c)
        .unwrap();
    assert_eq!(
        AgentClaims::from_cert_der(&der).unwrap(),
        claims("acme", "dev-7")
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(!format!("{:?}", cert.subject_alternative_name()).contains("victim"));
    assert!(!cert.subject().to_string().contains("victim"));
    // The certificate is for the key that signed the request.
    assert_eq!(
        cert.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&signer)
    );
}

#[test]
fn bad_requests_and_foreign_certificates_are_rejected() {
    let dir = TempDir::new("rejects");
    let ca = Ca::load_or_create(&dir.0).unwrap();
    let csr = AgentKey::generate().unwrap().csr_pem("d").unwrap();

    assert!(matches!(
        ca.sign_agent_csr(&csr, &claims("a/b", "d"), DAY),
        Err(Error::InvalidClaim {
            field: "tenant",
            ..
        })
    ));
    assert!(matches!(
        ca.sign_agent_csr("not a csr", &claims("t", "d"), DAY),
        Err(Error::InvalidCsr(_))
    ));
    // A corrupted request.
    let mut tampered = csr
        .replace("\r\n", "\n")
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let mid = tampered.len() / 2;
    tampered[mid] = tampered[mid].chars().rev().collect();
    assert!(
        ca.sign_agent_csr(&tampered.join("\n"), &claims("t", "d"), DAY)
            .is_err()
    );
    assert!(matches!(
        ca.sign_agent_csr(&csr, &claims("t", "d"), Duration::ZERO),
        Err(Error::InvalidValidity(_))
    ));

    // The server's own certificate is not an agent certificate; neither is the CA's.
    let identity = ServerIdentity::load_or_create(&dir.0, &ca, &names(&["localhost"])).unwrap();
    assert!(matches!(
        AgentClaims::from_cert_der(&identity.cert_chain()[0]),
        Err(Error::NotAgentCertificate(_))
    ));
    assert!(AgentClaims::from_cert_der(ca.cert_der()).is_err());
    assert!(AgentClaims::from_cert_der(b"junk").is_err());
}

#[test]
fn operator_supplied_certificate_files() {
    let dir = TempDir::new("user-cert");
    let ca = Ca::load_or_create(&dir.0).unwrap();
    // Stand-in for the operator's own CA: another Rampart CA's server certificate.
    let theirs = TempDir::new("user-cert-theirs");
    let their_ca = Ca::load_or_create(&theirs.0).unwrap();
    ServerIdentity::load_or_create(&theirs.0, &their_ca, &names(&["localhost"])).unwrap();
    let (cert, key) = (theirs.0.join("server.crt"), theirs.0.join("server.key"));

    let identity = ServerIdentity::from_pem_files(&cert, &key).unwrap();
    let outcome = handshake(
        server_config(&identity, &ca).unwrap(),
        client_config_trusting(their_ca.cert_pem()).unwrap(),
        "localhost",
    );
    outcome.client.unwrap();

    let err = ServerIdentity::from_pem_files(&cert, &dir.0.join("ca.key")).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidFile { path, .. } if path.ends_with("ca.key")),
        "{err}"
    );
    let err = ServerIdentity::from_pem_files(&key, &key).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidFile { path, .. } if *path == key),
        "{err}"
    );
    let missing = dir.0.join("nope.crt");
    assert!(
        matches!(ServerIdentity::from_pem_files(&missing, &key), Err(Error::Read { path, .. }) if path == missing)
    );
}

#[test]
fn agent_config_names_the_bad_argument() {
    let dir = TempDir::new("agent-args");
    let ca = Ca::load_or_create(&dir.0).unwrap();
    let (cert, key) = enrolled_agent(&ca, "t", "d");
    let field = |r: rampart_pki::Result<_>| match r {
        Err(Error::InvalidPem { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(agent_client_config("x", &cert, &key)), "ca_pem");
    assert_eq!(
        field(agent_client_config(ca.cert_pem(), "x", &key)),
        "cert_pem"
    );
    assert_eq!(
        field(agent_client_config(ca.cert_pem(), &cert, "x")),
        "key_pem"
    );
    let (_, other_key) = enrolled_agent(&ca, "t", "d");
    assert_eq!(
        field(agent_client_config(ca.cert_pem(), &cert, &other_key)),
        "key_pem"
    );
}

#[test]
fn agent_key_is_saved_privately_and_never_shown() {
    let dir = TempDir::new("agent-key");
    fs::create_dir_all(&dir.0).unwrap();
    let key = AgentKey::generate().unwrap();
    let path = dir.0.join("agent.key");
    key.save(&path).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        AgentKey::load(&path).unwrap().private_key_pem(),
        key.private_key_pem()
    );

    let ca = Ca::load_or_create(&dir.0).unwrap();
    let identity = ServerIdentity::load_or_create(&dir.0, &ca, &names(&["localhost"])).unwrap();
    let ca_key = fs::read_to_string(dir.0.join("ca.key")).unwrap();
    let server_key = fs::read_to_string(dir.0.join("server.key")).unwrap();
    let shown = format!("{key:?} {ca:?} {identity:?}");
    for secret in [key.private_key_pem(), ca_key, server_key] {
        let body = secret.lines().nth(1).unwrap();
        assert!(!shown.contains(body), "{shown}");
    }
    assert!(shown.contains(&ca.fingerprint().to_string()));
}
