use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::files;
use crate::{Ca, Error, Fingerprint, Result, ServerIdentity, cert_fingerprint};

/// The one crypto provider: named explicitly rather than taken from the process default, so
/// another crate enabling a second provider can neither change nor break ours.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration: presents `identity`, offers client authentication against
/// `ca` alone but lets clients without a certificate in (browsers and API clients authenticate
/// with bearer tokens; agents present their certificate). A client certificate from any other
/// CA fails the handshake. ALPN: `h2`, then `http/1.1`.
pub fn server_config(identity: &ServerIdentity, ca: &Ca) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(ca.cert_der())?, provider.clone())
            .allow_unauthenticated()
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain().to_vec(), identity.key().clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client that trusts only the CA in `ca_pem` and has no certificate of its own (the CLI, tests).
pub fn client_config_trusting(ca_pem: &str) -> Result<Arc<ClientConfig>> {
    let roots = roots(&parse_ca("ca_pem", ca_pem)?)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An enrolled agent: trusts only the CA in `ca_pem` and authenticates with its certificate
/// (`cert_pem`, from [`Ca::sign_agent_csr`]) and private key (`key_pem`).
pub fn agent_client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ClientConfig>> {
    let roots = roots(&parse_ca("ca_pem", ca_pem)?)?;
    let chain = files::parse_certs(cert_pem.as_bytes()).map_err(|reason| Error::InvalidPem {
        field: "cert_pem",
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::InvalidPem {
        field: "key_pem",
        reason: format!("no usable PEM private key: {e}"),
    })?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| Error::InvalidPem {
            field: "key_pem",
            reason: format!("cannot be used with cert_pem: {e}"),
        })?;
    Ok(Arc::new(config))
}

/// First contact of an agent holding an enrollment token: trusts the server only if the chain
/// it sends contains a CA certificate whose SHA-256 is `ca_fingerprint` and the server's
/// certificate chains to that CA (and names the host dialled, as usual). After the handshake,
/// [`pinned_ca_pem`] takes the CA certificate from the chain for the agent to keep.
pub fn pinned_client_config(ca_fingerprint: Fingerprint) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = PinnedCaVerifier {
        pin: ca_fingerprint,
        provider: provider.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The pinned CA certificate, as PEM, out of the chain a server sent
/// (`ClientConnection::peer_certificates()` after a [`pinned_client_config`] handshake).
pub fn pinned_ca_pem(
    peer_chain: &[CertificateDer<'_>],
    ca_fingerprint: Fingerprint,
) -> Result<String> {
    peer_chain
        .iter()
        .find(|cert| cert_fingerprint(cert) == ca_fingerprint)
        .map(files::cert_pem)
        .ok_or(Error::PinnedCaNotInChain(ca_fingerprint))
}

fn parse_ca(field: &'static str, pem: &str) -> Result<CertificateDer<'static>> {
    let mut certs =
        files::parse_certs(pem.as_bytes()).map_err(|reason| Error::InvalidPem { field, reason })?;
    if certs.len() != 1 {
        return Err(Error::InvalidPem {
            field,
            reason: "expected exactly one CA certificate".to_owned(),
        });
    }
    Ok(certs.remove(0))
}

fn roots(ca: &CertificateDer<'_>) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(Arc::new(roots))
}

#[derive(Debug)]
struct PinnedCaVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|cert| cert_fingerprint(cert) == self.pin)
        else {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        };
        // With the pinned CA as the only root, the usual checks follow: signature chain,
        // validity period, server name.
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
