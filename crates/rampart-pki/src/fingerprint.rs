use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// SHA-256 of a certificate's DER encoding; written `sha256:<64 lowercase hex digits>`.
///
/// Parsing also accepts bare hex and the colon-separated upper-case form `openssl x509
/// -fingerprint -sha256` prints, so an operator can paste either.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// The fingerprint of a DER-encoded certificate.
pub fn cert_fingerprint(der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut bytes = [0; 32];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint(bytes)
}

impl Fingerprint {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidFingerprint {
            value: s.to_owned(),
        };
        let trimmed = s.trim();
        let hex = trimmed.strip_prefix("sha256:").unwrap_or(trimmed);
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
        if digits.len() != 64 {
            return Err(invalid());
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Fingerprint(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let fp = cert_fingerprint(b"not really a certificate");
        let text = fp.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(text.len(), 7 + 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(fp.to_hex().parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn parses_openssl_form() {
        let fp = cert_fingerprint(b"x");
        let openssl: Vec<String> = fp.as_bytes().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(openssl.join(":").parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        for bad in [
            "",
            "sha256:",
            "sha256:abcd",
            &"zz".repeat(32),
            &"é".repeat(32),
        ] {
            assert!(
                matches!(
                    bad.parse::<Fingerprint>(),
                    Err(Error::InvalidFingerprint { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
