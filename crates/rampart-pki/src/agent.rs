use std::fmt;
use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use x509_parser::extensions::GeneralName;

use crate::ca::load_key;
use crate::files::{self, Secrecy};
use crate::{Error, Result};

/// The form of the URI subject alternative name that carries an agent's identity.
const URI_PREFIX: &str = "rampart://tenant/";
const URI_DEVICE: &str = "/device/";

/// An agent's own key pair (ECDSA P-256). It is made on the agent and never leaves it: the
/// server only ever sees the certificate signing request.
pub struct AgentKey {
    key: KeyPair,
}

impl AgentKey {
    pub fn generate() -> Result<AgentKey> {
        Ok(AgentKey {
            key: KeyPair::generate()?,
        })
    }

    /// Reads a key written by [`AgentKey::save`].
    pub fn load(path: &Path) -> Result<AgentKey> {
        Ok(AgentKey {
            key: load_key(path)?,
        })
    }

    /// Writes the private key as PKCS#8 PEM, mode 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        files::write_atomic(path, self.private_key_pem().as_bytes(), Secrecy::Secret)
    }

    /// The private key as PKCS#8 PEM, for [`crate::agent_client_config`]. A secret.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate signing request for this key. `device_name` goes into the subject as a
    /// hint for the operator; the server decides the identity it certifies.
    pub fn csr_pem(&self, device_name: &str) -> Result<String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_name);
        params.distinguished_name = dn;
        Ok(params.serialize_request(&self.key)?.pem()?)
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKey").finish_non_exhaustive()
    }
}

/// Who an agent certificate speaks for.
///
/// Encoded in the certificate as the URI subject alternative name
/// `rampart://tenant/<tenant>/device/<device_id>`, which is authoritative (a SAN is the standard
/// place for a machine identity, as in SPIFFE, and a URI needs no DN escaping rules); the subject
/// repeats it as O=`tenant`, CN=`device_id` for people reading the certificate.
/// Both values are 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentClaims {
    pub tenant: String,
    pub device_id: String,
}

impl AgentClaims {
    /// Reads the claims from an agent certificate issued by [`crate::Ca::sign_agent_csr`],
    /// checking it has that form (client-auth usage, one `rampart://` URI, matching subject).
    ///
    /// It does not check the signature: call it on a certificate the TLS handshake has verified
    /// (`ServerConnection::peer_certificates()[0]`).
    pub fn from_cert_der(der: &[u8]) -> Result<AgentClaims> {
        use Error::NotAgentCertificate as Not;
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| Not("not a DER certificate"))?;
        match cert.extended_key_usage() {
            Ok(Some(eku)) if eku.value.client_auth => {}
            _ => return Err(Not("not issued for client authentication")),
        }
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return Err(Not("no subject alternative name"));
        };
        let mut uris = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            });
        let (Some(uri), None) = (uris.next(), uris.next()) else {
            return Err(Not("expected exactly one URI name"));
        };
        let claims =
            Self::from_uri(uri).ok_or(Not("URI is not rampart://tenant/<t>/device/<d>"))?;
        let subject = cert.subject();
        let cn = subject
            .iter_common_name()
            .next()
            .and_then(|v| v.as_str().ok());
        let org = subject
            .iter_organization()
            .next()
            .and_then(|v| v.as_str().ok());
        if cn != Some(claims.device_id.as_str()) || org != Some(claims.tenant.as_str()) {
            return Err(Not("subject does not match the URI name"));
        }
        Ok(claims)
    }

    fn from_uri(uri: &str) -> Option<AgentClaims> {
        let (tenant, device_id) = uri.strip_prefix(URI_PREFIX)?.split_once(URI_DEVICE)?;
        let claims = AgentClaims {
            tenant: tenant.to_owned(),
            device_id: device_id.to_owned(),
        };
        claims.validate().ok()?;
        Some(claims)
    }

    pub(crate) fn uri(&self) -> String {
        format!("{URI_PREFIX}{}{URI_DEVICE}{}", self.tenant, self.device_id)
    }

    pub(crate) fn subject(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, self.tenant.as_str());
        dn.push(DnType::CommonName, self.device_id.as_str());
        dn
    }

    /// Restricts both values to characters that need no escaping in a URI path or a DN, and to
    /// the 64 characters X.509 allows in a CN or O.
    pub(crate) fn validate(&self) -> Result<()> {
        for (field, value) in [("tenant", &self.tenant), ("device id", &self.device_id)] {
            let ok = (1..=64).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(Error::InvalidClaim {
                    field,
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(tenant: &str, device_id: &str) -> AgentClaims {
        AgentClaims {
            tenant: tenant.to_owned(),
            device_id: device_id.to_owned(),
        }
    }

    #[test]
    fn uri_round_trips() {
        let c = claims("acme", "3f2b8c1e-0000-4000-8000-000000000001");
        assert_eq!(
            c.uri(),
            "rampart://tenant/acme/device/3f2b8c1e-0000-4000-8000-000000000001"
        );
        assert_eq!(AgentClaims::from_uri(&c.uri()), Some(c));
    }

    #[test]
    fn rejects_values_that_would_change_the_uri() {
        for (t, d) in [
            ("", "d"),
            ("a/b", "d"),
            ("t", "x/device/y"),
            ("t", "d?q"),
            ("t", &"d".repeat(65)),
        ] {
            assert!(claims(t, d).validate().is_err(), "{t:?} {d:?}");
        }
        assert_eq!(
            AgentClaims::from_uri("rampart://tenant/a/device/b/device/c"),
            None
        );
        assert_eq!(AgentClaims::from_uri("https://tenant/a/device/b"), None);
    }

    #[test]
    fn debug_hides_the_key() {
        let key = AgentKey::generate().unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("PRIVATE"));
        assert!(!debug.contains(&key.private_key_pem()[28..60]));
    }
}
