//! Identifiers and secrets generated in Rust (not by the database, so both backends agree).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::db::now;
use crate::{Error, Result};

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("random source: {e}")))?;
    Ok(buf)
}

/// A new id such as `alr_01j5…`: a type prefix, then a ULID (48-bit millisecond time + 80
/// random bits, Crockford base32). Time-ordered ids keep inserts at the right edge of the
/// primary-key index and make ids roughly sortable by creation when read by a person.
pub(crate) fn new_id(prefix: &str) -> Result<String> {
    let millis = u128::from(u64::try_from(now().timestamp_millis()).unwrap_or(0)) & ((1 << 48) - 1);
    let rand = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[6..].copy_from_slice(&random::<10>()?);
        b
    });
    let value = (millis << 80) | rand;
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    // 26 base32 digits cover 130 bits; the top two are always zero.
    for i in (0..26).rev() {
        out.push(char::from(CROCKFORD[((value >> (i * 5)) & 31) as usize]));
    }
    Ok(out)
}

/// A new bearer secret: `prefix_` + 32 random bytes in base64url (43 characters).
pub(crate) fn new_secret(prefix: &str) -> Result<String> {
    Ok(format!(
        "{prefix}_{}",
        URL_SAFE_NO_PAD.encode(random::<32>()?)
    ))
}

/// What is stored for a secret: its SHA-256 in hex. The secrets are 256-bit random values, so a
/// fast unsalted hash is enough (no dictionary to attack), and it allows one indexed lookup.
pub(crate) fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
