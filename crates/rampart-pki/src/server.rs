use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, PublicKeyData, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::ca::{Ca, leaf_params, load_key, set_lifetime};
use crate::files::{self, Secrecy};
use crate::{Error, Result, cert_fingerprint};

const SERVER_KEY: &str = "server.key";
const SERVER_CERT: &str = "server.crt";
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Re-issued this long before expiry, so a server restarted now and then never serves an expired
/// certificate.
const RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// The certificate chain and private key the server presents.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// One subject alternative name, normalised so that the names asked for and the names in an
/// existing certificate compare equal when they mean the same.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SanName {
    Dns(String),
    Ip(IpAddr),
}

impl ServerIdentity {
    /// Loads `dir/server.crt` and `dir/server.key`, issuing them from `ca` when missing,
    /// unreadable, not for exactly `names`, not from `ca`, or expiring within 30 days.
    ///
    /// `names` are the DNS names and IP addresses clients use to reach the server (see
    /// [`default_server_names`]). `server.crt` holds the leaf certificate and then the CA
    /// certificate: agents on first contact find the CA there and check it against the
    /// fingerprint in their enrollment token.
    pub fn load_or_create(dir: &Path, ca: &Ca, names: &[String]) -> Result<ServerIdentity> {
        let wanted = parse_names(names)?;
        let key_path = dir.join(SERVER_KEY);
        let cert_path = dir.join(SERVER_CERT);
        // These files are derived from the CA and the configuration: anything wrong with them
        // (missing, corrupt, stale) is repaired by issuing new ones.
        if let Some(identity) = Self::load_current(
            &key_path,
            &cert_path,
            ca,
            &wanted,
            OffsetDateTime::now_utc(),
        ) {
            return Ok(identity);
        }
        files::create_private_dir(dir)?;
        let key = KeyPair::generate()?;
        let mut params = leaf_params(server_subject(&wanted), ExtendedKeyUsagePurpose::ServerAuth)?;
        params.subject_alt_names = wanted
            .iter()
            .map(|name| match name {
                SanName::Dns(dns) => Ok(SanType::DnsName(dns.as_str().try_into()?)),
                SanName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_>>()?;
        set_lifetime(&mut params, SERVER_LIFETIME)?;
        let cert = ca.issue(&params, &key)?;
        files::write_atomic(&key_path, key.serialize_pem().as_bytes(), Secrecy::Secret)?;
        let chain_pem = format!("{}{}", files::cert_pem(cert.der()), ca.cert_pem());
        files::write_atomic(&cert_path, chain_pem.as_bytes(), Secrecy::Public)?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone(), ca.cert_der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// The existing identity, if it is still the right one at `now`.
    fn load_current(
        key_path: &Path,
        cert_path: &Path,
        ca: &Ca,
        wanted: &BTreeSet<SanName>,
        now: OffsetDateTime,
    ) -> Option<ServerIdentity> {
        if !files::exists(key_path).ok()? || !files::exists(cert_path).ok()? {
            return None;
        }
        let key = load_key(key_path).ok()?;
        let chain = files::parse_certs(&files::read(cert_path).ok()?).ok()?;
        let [leaf, issuer] = chain.as_slice() else {
            return None;
        };
        if issuer != ca.cert_der() {
            return None;
        }
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        // A crash between writing the new key and the new certificate leaves them unpaired.
        let current = cert.public_key().raw == key.subject_public_key_info()
            && cert.validity().not_after.timestamp() - now.unix_timestamp()
                > RENEW_BEFORE.whole_seconds()
            && cert_names(&cert)? == *wanted;
        current.then(|| ServerIdentity {
            chain,
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// A certificate chain (leaf first) and private key from the operator, e.g. from their own
    /// CA or ACME, used as they are. Agents then enroll by trusting that chain's CA, not by
    /// pinning Rampart's (the pinned first contact needs Rampart's CA in the chain).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerIdentity> {
        let chain =
            files::parse_certs(&files::read(cert)?).map_err(|reason| Error::InvalidFile {
                path: cert.to_owned(),
                reason,
            })?;
        let invalid_key = |reason: String| Error::InvalidFile {
            path: key.to_owned(),
            reason,
        };
        let key_der = PrivateKeyDer::from_pem_slice(&files::read(key)?)
            .map_err(|e| invalid_key(format!("no usable PEM private key: {e}")))?;
        // Checked here rather than when the TLS config is built so the error names the files.
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
            .map_err(|e| invalid_key(format!("unsupported private key: {e}")))?;
        rustls::sign::CertifiedKey::new(chain.clone(), signing_key)
            .keys_match()
            .map_err(|_| {
                invalid_key(format!(
                    "does not match the first certificate in {}",
                    cert.display()
                ))
            })?;
        Ok(ServerIdentity {
            chain,
            key: key_der,
        })
    }

    /// The chain presented to clients, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub(crate) fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }
}

impl fmt::Debug for ServerIdentity {
    /// Fingerprints only: the private key must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain: Vec<_> = self.chain.iter().map(|c| cert_fingerprint(c)).collect();
        f.debug_struct("ServerIdentity")
            .field("chain", &chain)
            .finish_non_exhaustive()
    }
}

/// The names the server certificate should cover when listening on `listen_host`: `localhost`,
/// `127.0.0.1`, `::1`, this machine's hostname and `listen_host` itself. A wildcard listen
/// address (`0.0.0.0`, `::`) is left out: no client connects to it.
pub fn default_server_names(listen_host: &str) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(hostname());
    names.push(listen_host.to_owned());
    let mut seen = BTreeSet::new();
    names.retain(|name| match parse_name(name) {
        Ok(SanName::Ip(ip)) if ip.is_unspecified() => false,
        Ok(parsed) => seen.insert(parsed),
        Err(_) => false,
    });
    names
}

fn parse_names(names: &[String]) -> Result<BTreeSet<SanName>> {
    let set = names
        .iter()
        .map(|n| parse_name(n))
        .collect::<Result<BTreeSet<_>>>()?;
    if set.is_empty() {
        return Err(Error::NoServerNames);
    }
    Ok(set)
}

fn parse_name(name: &str) -> Result<SanName> {
    let invalid = || Error::InvalidServerName {
        name: name.to_owned(),
    };
    // An IPv6 address is often written as in a URL.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match ServerName::try_from(bare).map_err(|_| invalid())? {
        ServerName::DnsName(dns) => Ok(SanName::Dns(dns.as_ref().to_ascii_lowercase())),
        ServerName::IpAddress(ip) => Ok(SanName::Ip(IpAddr::from(ip))),
        _ => Err(invalid()),
    }
}

/// The names in a certificate, or `None` if it has a kind of name we never issue.
fn cert_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<BTreeSet<SanName>> {
    let san = cert.subject_alternative_name().ok()??;
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => Some(SanName::Dns(dns.to_ascii_lowercase())),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(SanName::Ip(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?))),
                16 => Some(SanName::Ip(IpAddr::from(
                    <[u8; 16]>::try_from(*bytes).ok()?,
                ))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// CN = the first DNS name (what browsers show), else the first address.
fn server_subject(names: &BTreeSet<SanName>) -> DistinguishedName {
    let first = names
        .iter()
        .find(|n| matches!(n, SanName::Dns(_)))
        .or_else(|| names.first());
    let cn = match first {
        Some(SanName::Dns(dns)) => dns.clone(),
        Some(SanName::Ip(ip)) => ip.to_string(),
        None => "Rampart server".to_owned(),
    };
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Rampart");
    dn.push(DnType::CommonName, cn);
    dn
}

#[cfg(unix)]
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // No NUL means the name was truncated: better no hostname than a wrong one.
    let end = buf.iter().position(|&b| b == 0)?;
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(not(unix))]
fn hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_normalised() {
        let a = parse_names(&names(&["LocalHost", "[::1]", "127.0.0.1"])).unwrap();
        let b = parse_names(&names(&["localhost", "::1", "127.0.0.1", "localhost"])).unwrap();
        assert!(a == b);
        assert!(matches!(
            parse_names(&names(&["bad name"])),
            Err(Error::InvalidServerName { name }) if name == "bad name"
        ));
        assert!(matches!(parse_names(&[]), Err(Error::NoServerNames)));
    }

    #[test]
    fn default_names_skip_wildcards_and_duplicates() {
        let list = default_server_names("0.0.0.0");
        assert_eq!(&list[..3], ["localhost", "127.0.0.1", "::1"]);
        assert!(!list.iter().any(|n| n == "0.0.0.0"));
        let list = default_server_names("localhost");
        assert_eq!(list.iter().filter(|n| *n == "localhost").count(), 1);
        assert!(
            default_server_names("rampart.example.org").contains(&"rampart.example.org".to_owned())
        );
    }

    #[test]
    fn reissued_within_thirty_days_of_expiry() {
        let dir = std::env::temp_dir().join(format!("rampart-pki-renew-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::load_or_create(&dir).unwrap();
        let wanted = parse_names(&names(&["localhost"])).unwrap();
        ServerIdentity::load_or_create(&dir, &ca, &names(&["localhost"])).unwrap();
        let (key, cert) = (dir.join(SERVER_KEY), dir.join(SERVER_CERT));
        let now = OffsetDateTime::now_utc();
        assert!(ServerIdentity::load_current(&key, &cert, &ca, &wanted, now).is_some());
        let in_334_days = now + time::Duration::days(334);
        assert!(ServerIdentity::load_current(&key, &cert, &ca, &wanted, in_334_days).is_some());
        let in_336_days = now + time::Duration::days(336);
        assert!(ServerIdentity::load_current(&key, &cert, &ca, &wanted, in_336_days).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
