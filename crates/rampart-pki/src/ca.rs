use std::fmt;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::agent::AgentClaims;
use crate::files::{self, Secrecy};
use crate::{Error, Fingerprint, Result, cert_fingerprint};

const CA_KEY: &str = "ca.key";
const CA_CERT: &str = "ca.crt";
/// Ten years: the CA cannot be rotated without re-enrolling every agent, so it outlives them.
const CA_LIFETIME: Duration = Duration::from_secs(3653 * 86_400);
/// Issued certificates start this long before "now": an agent whose clock is a few minutes behind
/// the server's would otherwise reject a certificate as not yet valid.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Rampart's private certificate authority: signs the server certificate and agent certificates.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    fingerprint: Fingerprint,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Loads the CA from `dir/ca.key` and `dir/ca.crt`, creating both on first run.
    ///
    /// It never replaces an existing CA: every enrolled agent trusts exactly this one.
    pub fn load_or_create(dir: &Path) -> Result<Ca> {
        let key_path = dir.join(CA_KEY);
        let cert_path = dir.join(CA_CERT);
        match (files::exists(&key_path)?, files::exists(&cert_path)?) {
            (true, true) => Self::load(&key_path, &cert_path),
            // The key is written first: a crash before the certificate leaves a key whose
            // certificate nobody can have seen yet, so issuing one now is safe.
            (true, false) => {
                let key = load_key(&key_path)?;
                Self::create_cert(key, &cert_path)
            }
            (false, true) => Err(Error::MissingCaKey {
                key: key_path,
                cert: cert_path,
            }),
            (false, false) => {
                files::create_private_dir(dir)?;
                let key = KeyPair::generate()?;
                files::write_atomic(&key_path, key.serialize_pem().as_bytes(), Secrecy::Secret)?;
                Self::create_cert(key, &cert_path)
            }
        }
    }

    fn create_cert(key: KeyPair, cert_path: &Path) -> Result<Ca> {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Rampart");
        // Every installation's CA gets its own name, so two Rampart CAs in one trust store (a
        // browser, an analyst's laptop) are told apart and never confused when building a chain.
        dn.push(DnType::CommonName, format!("Rampart CA {}", random_hex(4)?));
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        // Path length 0: the CA signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        set_lifetime(&mut params, CA_LIFETIME)?;
        let cert = params.self_signed(&key)?;
        files::write_atomic(
            cert_path,
            files::cert_pem(cert.der()).as_bytes(),
            Secrecy::Public,
        )?;
        Self::from_parts(cert.der().clone(), key, cert_path)
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<Ca> {
        let key = load_key(key_path)?;
        let invalid = |reason: &str| Error::InvalidFile {
            path: cert_path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut certs = files::parse_certs(&files::read(cert_path)?).map_err(|r| invalid(&r))?;
        if certs.len() != 1 {
            return Err(invalid("expected exactly one certificate"));
        }
        let der = certs.remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(&format!("cannot parse the certificate: {e}")))?;
        if !matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
            return Err(invalid("not a CA certificate"));
        }
        if cert.public_key().raw != key.subject_public_key_info() {
            return Err(invalid(&format!(
                "does not match the private key in {}",
                key_path.display()
            )));
        }
        Self::from_parts(der, key, cert_path)
    }

    fn from_parts(der: CertificateDer<'static>, key: KeyPair, cert_path: &Path) -> Result<Ca> {
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| Error::InvalidFile {
            path: cert_path.to_owned(),
            reason: format!("unusable as an issuer: {e}"),
        })?;
        Ok(Ca {
            cert_pem: files::cert_pem(&der),
            fingerprint: cert_fingerprint(&der),
            cert_der: der,
            issuer,
        })
    }

    /// SHA-256 of the CA certificate: what enrollment tokens carry so that an agent can trust
    /// the server on first contact.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs an agent's certificate signing request for the tenant and device the server decided.
    ///
    /// Only the request's public key is used (its signature proves the agent holds the private
    /// key); the subject, names and extensions it asks for are ignored, so an agent cannot name
    /// its own tenant. Returns the certificate as PEM.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        claims: &AgentClaims,
        validity: Duration,
    ) -> Result<String> {
        claims.validate()?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(Error::InvalidCsr)?;
        let mut params = leaf_params(claims.subject(), rcgen::ExtendedKeyUsagePurpose::ClientAuth)?;
        params.subject_alt_names = vec![rcgen::SanType::URI(claims.uri().try_into()?)];
        set_lifetime(&mut params, validity)?;
        Ok(files::cert_pem(self.issue(&params, &csr.public_key)?.der()))
    }

    pub(crate) fn issue(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<rcgen::Certificate> {
        Ok(params.signed_by(public_key, &self.issuer)?)
    }
}

impl fmt::Debug for Ca {
    /// The fingerprint only: the private key must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

pub(crate) fn load_key(path: &Path) -> Result<KeyPair> {
    let pem = files::read(path)?;
    let invalid = |reason: String| Error::InvalidFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::str::from_utf8(&pem).map_err(|_| invalid("not PEM text".to_owned()))?;
    // rcgen's message never contains key material.
    KeyPair::from_pem(pem).map_err(|e| invalid(format!("not a usable private key: {e}")))
}

/// Parameters shared by every leaf certificate this CA issues.
pub(crate) fn leaf_params(
    subject: DistinguishedName,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    // Lets verifiers pick the right issuer directly instead of by name.
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Makes `params` valid from (almost) now for `lifetime`.
pub(crate) fn set_lifetime(params: &mut CertificateParams, lifetime: Duration) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = time::Duration::try_from(lifetime)
        .ok()
        .filter(|d| d.is_positive())
        .and_then(|d| now.checked_add(d))
        .ok_or(Error::InvalidValidity(lifetime))?;
    Ok(())
}

/// A random positive 16-byte serial number. rcgen's default derives the serial from the public
/// key, which would repeat when a key is certified again; serials must be unique per issuer.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    // Clear the sign bit (serials are positive) and set the next one (never zero, always 16 bytes).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn random_hex(len: usize) -> Result<String> {
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn fill_random(bytes: &mut [u8]) -> Result<()> {
    ring::rand::SystemRandom::new()
        .fill(bytes)
        .map_err(|_| Error::Random)
}
