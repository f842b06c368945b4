//! Rampart's private certificate authority and the TLS configurations the server and the agents
//! share.
//!
//! # Trust model
//!
//! - **One private CA per installation.** On first run the server creates an ECDSA P-256 CA
//!   (`ca.key`, mode 0600, and `ca.crt` in the data directory's `pki/`), valid ten years and
//!   never replaced automatically: every enrolled agent trusts exactly this CA and nothing else.
//!   Its identity is the SHA-256 of its certificate, written `sha256:<hex>`.
//! - **The server** serves HTTPS with a certificate from that CA for every name clients use
//!   (`localhost`, loopback addresses, the hostname, the listen host), valid one year and
//!   re-issued when the names change or 30 days before expiry. It sends the CA certificate in
//!   its chain. An operator may supply their own certificate and key instead.
//! - **Enrollment** works like `kubeadm join --discovery-token-ca-cert-hash`: the one-time
//!   enrollment token carries the CA fingerprint. On first contact the agent accepts the server
//!   only if the chain it sends holds a CA certificate with that fingerprint and the server
//!   certificate chains to it; the agent then keeps that CA certificate as its only root.
//! - **Agents** make their own key pair and send a certificate signing request; the private key
//!   never leaves the agent. The server takes only the public key from the request and issues a
//!   client certificate naming the tenant and device *it* decided, as the URI subject
//!   alternative name `rampart://tenant/<tenant>/device/<device id>` (repeated as O/CN in the
//!   subject for people). From then on the agent uses mutual TLS.
//! - **The server's TLS endpoint** asks for a client certificate from the CA but does not
//!   require one: browsers, API clients and the CLI authenticate with bearer tokens, agents with
//!   their certificate. A certificate from any other CA fails the handshake; a handshake without
//!   one succeeds, and the layer above decides what such a client may do.
//! - **One crypto provider**: rustls with `ring`, chosen explicitly in every configuration.
//!
//! Private keys never appear in `Debug` output or error messages.

mod agent;
mod ca;
mod error;
mod files;
mod fingerprint;
mod server;
mod tls;

pub use agent::{AgentClaims, AgentKey};
pub use ca::Ca;
pub use error::{Error, Result};
pub use fingerprint::{Fingerprint, cert_fingerprint};
/// The rustls this crate's configurations are for, so callers use the same version.
pub use rustls;
pub use server::{ServerIdentity, default_server_names};
pub use tls::{
    agent_client_config, client_config_trusting, pinned_ca_pem, pinned_client_config, server_config,
};
