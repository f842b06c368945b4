//! JSON text, read and written a word at a time: where a string's plain run ends, and a string
//! written escaped as `serde_json` escapes it. Shared by the forwarded records' reader and the
//! `AdditionalFields` writer, the two places every forwarded event's strings pass through.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
const SPACES: u64 = ONES * b' ' as u64;

/// The high bit of each byte of `w` that ends a plain run: a quote, a backslash or a control
/// character. Above a flagged byte, a byte may be flagged wrongly (a borrow); the lowest
/// flagged byte is always right.
fn specials(w: u64) -> u64 {
    // The bytes of `w` below `n` (n ≤ 0x80).
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGHS;
    below(w, 0x20)
        | below(w ^ (ONES * u64::from(b'"')), 1)
        | below(w ^ (ONES * u64::from(b'\\')), 1)
}

fn is_special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first quote, backslash or control character of `bytes` at or after
/// `from`, or `bytes.len()`: where a JSON string's text stops being copied as it is. Sixteen
/// bytes are checked at once with SSE2 (part of every x86_64), the rest as [`plain_run_swar`]
/// does.
#[inline]
pub(crate) fn plain_run(bytes: &[u8], from: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    let from = {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let mut i = from;
        // SAFETY: SSE2 is part of the x86_64 baseline; each load reads the 16 bytes at `i`,
        // inside `bytes` (`i + 16 <= bytes.len()`), unaligned.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            while i + 16 <= bytes.len() {
                let x = _mm_loadu_si128(bytes.as_ptr().add(i).cast());
                // x <= 0x1f (unsigned) exactly when min(x, 0x1f) == x.
                let found = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                    _mm_cmpeq_epi8(_mm_min_epu8(x, control), x),
                );
                let mask = _mm_movemask_epi8(found) as u32;
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
        i
    };
    plain_run_swar(bytes, from)
}

/// [`plain_run`] eight bytes at a time in a word: the last few of a longer slice as the eight
/// that end it (the ones already checked replaced by spaces), those of a shorter one byte by
/// byte.
#[inline]
fn plain_run_swar(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(eight) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let flagged = specials(u64::from_le_bytes(*eight));
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let left = bytes.len().saturating_sub(i);
    if left == 0 {
        return bytes.len();
    }
    if let Some(last) = bytes.last_chunk::<8>() {
        let seen = 8 * (8 - left) as u32;
        let w = (u64::from_le_bytes(*last) >> seen) | (SPACES << (64 - seen));
        let flagged = specials(w);
        return match flagged {
            0 => bytes.len(),
            _ => i + (flagged.trailing_zeros() / 8) as usize,
        };
    }
    bytes[i..]
        .iter()
        .position(|&b| is_special(b))
        .map_or(bytes.len(), |at| i + at)
}

/// Appends `text` as a JSON string, escaped as `serde_json` escapes it (`\"`, `\\`, `\n`,
/// `\r`, `\t`, `\b`, `\f`, other control characters as `\u00xx`); plain runs are copied at
/// once ([`plain_run`]).
pub(crate) fn push_str(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    // The text and its quotes at once; escapes grow it as they come.
    out.reserve(bytes.len() + 2);
    out.push('"');
    let mut copied = 0;
    loop {
        // Stopped at an ASCII byte or the end: a character boundary either way.
        let i = plain_run(bytes, copied);
        out.push_str(&text[copied..i]);
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        copied = i + 1;
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every control character, quotes and backslashes at every offset of a word, and text
    /// beyond ASCII: written as `serde_json` writes them, and every plain run ends where the
    /// byte-by-byte definition says.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| (b as char).to_string()).collect();
        for special in [
            "\"", "\\", "\n", "\u{1}", "\u{1f}", "\u{7f}", "é", "€", "😀",
        ] {
            for at in 0..17 {
                let mut text = "C:\\Windows\\System32"
                    .chars()
                    .cycle()
                    .take(at)
                    .collect::<String>();
                text.push_str(special);
                text.push_str("abcdefghijklmnop");
                cases.push(text);
            }
            // At every place of strings up to two words long: in a short string's bytes, and
            // in the last word of a longer one, where earlier bytes are shifted out.
            for len in 0..16 {
                for at in 0..=len {
                    cases.push(format!(
                        "{}{special}{}",
                        "x".repeat(at),
                        "\\".repeat(len - at)
                    ));
                }
            }
        }
        // Specials in a string's last few bytes, and short strings.
        let mut short = Vec::new();
        for text in &cases {
            for tail in 0..9 {
                short.push(
                    text.chars()
                        .rev()
                        .skip(16)
                        .collect::<String>()
                        .chars()
                        .rev()
                        .chain("é_xyzabc".chars().take(tail))
                        .collect::<String>(),
                );
            }
        }
        cases.extend(short);
        // Past the first sixteen bytes, and in the last sixteen of longer strings.
        for special in ["\"", "\\", "\u{0}", "\u{1f}", "\u{7f}", "\u{80}", " "] {
            for at in 0..48 {
                cases.push(format!(
                    "{}{special}{}",
                    "a".repeat(at),
                    "é".repeat(48 - at)
                ));
            }
        }
        cases.push(String::new());
        cases.push("plain text of more than eight bytes".into());
        cases.push("Ünïcode ☃ \u{7f}\u{80}".into());
        for text in cases {
            let mut out = String::new();
            push_str(&mut out, &text);
            assert_eq!(out, serde_json::to_string(&text).unwrap(), "{text:?}");
            let bytes = text.as_bytes();
            for from in 0..=bytes.len() {
                let expected = (from..bytes.len())
                    .find(|&i| is_special(bytes[i]))
                    .unwrap_or(bytes.len());
                assert_eq!(plain_run(bytes, from), expected, "{text:?} from {from}");
                assert_eq!(
                    plain_run_swar(bytes, from),
                    expected,
                    "{text:?} from {from}"
                );
            }
        }
    }
}
