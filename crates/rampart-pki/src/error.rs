use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::Fingerprint;

/// Result of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, naming the file or the field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file was read but its content is not what it should be.
    #[error("{}: {reason}", path.display())]
    InvalidFile { path: PathBuf, reason: String },
    /// A PEM argument (`field` names the parameter) could not be used.
    #[error("{field}: {reason}")]
    InvalidPem { field: &'static str, reason: String },
    #[error(
        "{} exists but the CA private key {} does not: restore the key from a backup \
         (a new CA would cut off every enrolled agent)",
        cert.display(),
        key.display()
    )]
    MissingCaKey { key: PathBuf, cert: PathBuf },
    #[error("invalid server name {name:?}: not a DNS name or an IP address")]
    InvalidServerName { name: String },
    #[error("no server names given: the server certificate needs at least one")]
    NoServerNames,
    #[error("invalid agent {field} {value:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidClaim { field: &'static str, value: String },
    #[error("invalid agent certificate validity {0:?}")]
    InvalidValidity(Duration),
    #[error("certificate signing request rejected: {0}")]
    InvalidCsr(#[source] rcgen::Error),
    #[error("not a Rampart agent certificate: {0}")]
    NotAgentCertificate(&'static str),
    #[error("invalid fingerprint {value:?}: expected sha256:<64 hex digits>")]
    InvalidFingerprint { value: String },
    #[error("the server's certificate chain holds no CA certificate with fingerprint {0}")]
    PinnedCaNotInChain(Fingerprint),
    #[error("the system random number generator failed")]
    Random,
    #[error("cannot generate a key or issue a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}
