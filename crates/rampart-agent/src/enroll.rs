//! `rampart-agent enroll`: first contact with a one-time token. The token ends in the server
//! CA's SHA-256 fingerprint (as `kubeadm join` carries its CA hash), so the agent trusts the
//! server without any prior file: a TLS handshake pinned to that fingerprint yields the CA
//! certificate, then the agent sends a CSR for a key it made and keeps, and gets its client
//! certificate for mutual TLS from then on.

use std::net::TcpStream;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rampart_pki::rustls::{self, pki_types::ServerName};
use rampart_pki::{AgentKey, Fingerprint};
use serde_json::{Value, json};

use crate::state::{Enrollment, StateDir};
use crate::transport;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Enrolls this machine as `hostname`; returns what the server decided.
pub fn enroll(server: &str, token: &str, state: &StateDir, hostname: &str) -> Result<Enrollment> {
    let server = server.trim_end_matches('/').to_string();
    let (_, fingerprint) = token.rsplit_once('.').ok_or_else(|| {
        anyhow!("the token has no CA fingerprint (expected SECRET.FINGERPRINT, as POST /api/v1/enrollment-tokens returns it)")
    })?;
    let fingerprint = Fingerprint::from_str(fingerprint)
        .map_err(|e| anyhow!("the token's CA fingerprint is not valid: {e}"))?;
    let (host, port) = transport::host_port(&server)?;
    let ca_pem = fetch_pinned_ca(&host, port, fingerprint)
        .with_context(|| format!("cannot establish trust with {server}"))?;

    // A key kept from an earlier attempt is reused: the CSR is what the server certifies.
    let key = match AgentKey::load(&state.key_path()) {
        Ok(key) => key,
        Err(_) => {
            let key = AgentKey::generate()?;
            key.save(&state.key_path())?;
            key
        }
    };
    let (os, _) = crate::snapshot::os_release();
    let body = json!({
        "token": token,
        "csr": key.csr_pem(hostname)?,
        "hostname": hostname,
        "platform": "Linux",
        "os_version": os,
        "agent_version": env!("CARGO_PKG_VERSION"),
    });
    let http = transport::http_agent(&ca_pem, None)?;
    let mut answer = http
        .post(&format!("{server}/api/v1/agents/enroll"))
        .send_json(&body)
        .with_context(|| format!("cannot reach {server}"))?;
    let status = answer.status().as_u16();
    let answer: Value = answer.body_mut().read_json().unwrap_or(Value::Null);
    if status != 201 {
        bail!(
            "{server} refused the enrollment ({status}): {}",
            transport::problem_detail(&answer)
        );
    }
    let field = |name: &str| {
        answer[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the enrollment answer lacks '{name}'"))
    };
    let enrollment = Enrollment {
        server,
        device_id: field("device_id")?,
        tenant_id: field("tenant_id")?,
        hostname: hostname.to_string(),
        enrolled_at: chrono::Utc::now(),
    };
    state.save_enrollment(&enrollment, &ca_pem, &field("certificate")?)?;
    Ok(enrollment)
}

/// The server's CA certificate, taken from a handshake that succeeds only if the chain holds
/// a CA with `fingerprint` that signed the server's certificate for `host`.
fn fetch_pinned_ca(host: &str, port: u16, fingerprint: Fingerprint) -> Result<String> {
    let config = rampart_pki::pinned_client_config(fingerprint)?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| anyhow!("'{host}' is not a valid server name: {e}"))?;
    let mut conn = rustls::ClientConnection::new(Arc::clone(&config), name)?;
    let mut sock = TcpStream::connect((host, port))
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    sock.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .context("TLS handshake (is the CA fingerprint in the token the server's?)")?;
    }
    let chain = conn
        .peer_certificates()
        .ok_or_else(|| anyhow!("the server sent no certificate"))?;
    Ok(rampart_pki::pinned_ca_pem(chain, fingerprint)?)
}
