//! Value expansions done by us before compilation, where rsigma 0.23 expands them wrongly.
//!
//! - `windash`: the spec varies every `-` or `/` that starts an option (after a non-word
//!   character, before a word character) over `-`, `/`, en dash, em dash and horizontal bar;
//!   rsigma varies `-` only, so `' /create '` never matched `schtasks -create`.
//! - `base64offset`: the three encodings must drop the characters that depend on the bytes
//!   before and after the value; rsigma keeps the trailing partial character, so the value was
//!   missed whenever more text followed it (two alignments in three).
//!
//! - field-less `'|all':` lists: each value must occur somewhere in the record; rsigma compiles
//!   them to whole-value equality that one single value must satisfy.
//!
//! The first two are rewritten into plain value lists (an OR, as the spec defines them); items
//! that also carry `all` are left to rsigma: an AND of ORs has no flat-list form. The third
//! becomes one keyword item per value.

use base64::Engine as _;
use rsigma_parser::value::{SigmaString, SigmaValue, SpecialChar, StringPart};
use rsigma_parser::{Detection, DetectionItem, Modifier, SigmaRule};

const DASHES: [char; 5] = ['-', '/', '–', '—', '―'];
/// More option dashes than this in one value is left alone (5^4 = 625 variants already).
const MAX_DASHES: usize = 4;

/// Rewrites the rule's `windash` and `base64offset` items in place.
pub fn expand_rule(rule: &mut SigmaRule) {
    for detection in rule.detection.named.values_mut() {
        expand_detection(detection);
    }
}

fn expand_detection(detection: &mut Detection) {
    match detection {
        Detection::AllOf(items) => {
            *items = std::mem::take(items)
                .into_iter()
                .flat_map(split_keyword_all)
                .collect();
            items.iter_mut().for_each(expand_item);
        }
        Detection::AnyOf(list) => list.iter_mut().for_each(expand_detection),
        _ => {}
    }
}

/// `'|all': [a, b]` without a field → one `'|contains': a` keyword item per value (ANDed).
fn split_keyword_all(item: DetectionItem) -> Vec<DetectionItem> {
    if item.field.name.is_some()
        || !item.field.modifiers.contains(&Modifier::All)
        || item.values.len() < 2
    {
        return vec![item];
    }
    let mut modifiers: Vec<Modifier> = item
        .field
        .modifiers
        .iter()
        .copied()
        .filter(|m| *m != Modifier::All)
        .collect();
    if !modifiers.iter().any(|m| {
        matches!(
            m,
            Modifier::Contains | Modifier::StartsWith | Modifier::EndsWith | Modifier::Re
        )
    }) {
        modifiers.push(Modifier::Contains);
    }
    item.values
        .into_iter()
        .map(|v| DetectionItem {
            field: rsigma_parser::FieldSpec::new(None, modifiers.clone()),
            values: vec![v],
        })
        .collect()
}

fn expand_item(item: &mut DetectionItem) {
    let mods = &item.field.modifiers;
    if mods.contains(&Modifier::All) || mods.contains(&Modifier::Re) {
        return;
    }
    if mods.contains(&Modifier::WindAsh) {
        let Some(values) = item
            .values
            .iter()
            .map(windash_variants)
            .collect::<Option<Vec<_>>>()
        else {
            return;
        };
        item.values = values.into_iter().flatten().collect();
        item.field.modifiers.retain(|m| *m != Modifier::WindAsh);
    }
    if let Some(pos) = item
        .field
        .modifiers
        .iter()
        .position(|m| *m == Modifier::Base64Offset)
    {
        let encodings: Vec<Modifier> = item.field.modifiers[..pos]
            .iter()
            .copied()
            .filter(|m| matches!(m, Modifier::Wide | Modifier::Utf16be | Modifier::Utf16))
            .collect();
        let plain: Option<Vec<String>> = item.values.iter().map(plain_string).collect();
        let Some(plain) = plain else { return };
        item.values = plain
            .iter()
            .flat_map(|v| base64_offsets(&encode(v, encodings.last().copied())))
            .map(|s| SigmaValue::String(SigmaString::from_raw(&s)))
            .collect();
        item.field.modifiers.retain(|m| {
            !matches!(
                m,
                Modifier::Base64Offset | Modifier::Wide | Modifier::Utf16be | Modifier::Utf16
            )
        });
    }
}

fn plain_string(v: &SigmaValue) -> Option<String> {
    match v {
        SigmaValue::String(s) => s.as_plain(),
        _ => None,
    }
}

/// The bytes a value stands for under an encoding modifier (`wide` = UTF-16LE; `utf16` adds
/// the little-endian byte-order mark, as Python's `utf-16` codec writes it).
fn encode(value: &str, encoding: Option<Modifier>) -> Vec<u8> {
    match encoding {
        Some(Modifier::Wide) => value.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        Some(Modifier::Utf16be) => value.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        Some(Modifier::Utf16) => [0xff, 0xfe]
            .into_iter()
            .chain(value.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
        _ => value.as_bytes().to_vec(),
    }
}

/// The three base64 renderings of `bytes` at offsets 0, 1 and 2 of a 3-byte group, cut to the
/// characters that depend on `bytes` alone.
fn base64_offsets(bytes: &[u8]) -> Vec<String> {
    const START: [usize; 3] = [0, 2, 3];
    const END: [usize; 3] = [0, 3, 2];
    (0..3)
        .filter_map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(bytes);
            let enc = base64::engine::general_purpose::STANDARD.encode(&padded);
            let end = enc.len().checked_sub(END[(bytes.len() + i) % 3])?;
            enc.get(START[i]..end)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .collect()
}

/// Every dash variant of a value, or `None` when it is not a string or has too many dashes.
fn windash_variants(value: &SigmaValue) -> Option<Vec<SigmaValue>> {
    let SigmaValue::String(s) = value else {
        return Some(vec![value.clone()]);
    };
    // Characters of the value with their part, wildcards as `None` (not word characters).
    let tokens: Vec<Option<char>> = s
        .parts
        .iter()
        .flat_map(|p| match p {
            StringPart::Plain(t) => t.chars().map(Some).collect::<Vec<_>>(),
            StringPart::Special(_) => vec![None],
        })
        .collect();
    let word =
        |c: Option<&Option<char>>| matches!(c, Some(Some(c)) if c.is_alphanumeric() || *c == '_');
    let dashes: Vec<usize> = (0..tokens.len())
        .filter(|&i| matches!(tokens[i], Some('-' | '/')))
        .filter(|&i| !word(i.checked_sub(1).and_then(|p| tokens.get(p))) && word(tokens.get(i + 1)))
        .collect();
    if dashes.is_empty() {
        return Some(vec![value.clone()]);
    }
    if dashes.len() > MAX_DASHES {
        return None;
    }
    let specials: Vec<&SpecialChar> = s
        .parts
        .iter()
        .filter_map(|p| match p {
            StringPart::Special(c) => Some(c),
            StringPart::Plain(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    for combo in 0..DASHES.len().pow(dashes.len() as u32) {
        let mut tokens = tokens.clone();
        let mut n = combo;
        for &i in &dashes {
            tokens[i] = Some(DASHES[n % DASHES.len()]);
            n /= DASHES.len();
        }
        out.push(SigmaValue::String(rebuild(&tokens, &specials)));
    }
    Some(out)
}

/// Puts a token list back into a `SigmaString`, wildcards in their original order.
fn rebuild(tokens: &[Option<char>], specials: &[&SpecialChar]) -> SigmaString {
    let mut parts = Vec::new();
    let mut plain = String::new();
    let mut original = String::new();
    let mut next_special = specials.iter();
    for t in tokens {
        match t {
            Some(c) => {
                plain.push(*c);
                if matches!(c, '*' | '?' | '\\') {
                    original.push('\\');
                }
                original.push(*c);
            }
            None => {
                if !plain.is_empty() {
                    parts.push(StringPart::Plain(std::mem::take(&mut plain)));
                }
                let special = next_special
                    .next()
                    .map_or(SpecialChar::WildcardMulti, |s| (*s).clone());
                original.push(if special == SpecialChar::WildcardSingle {
                    '?'
                } else {
                    '*'
                });
                parts.push(StringPart::Special(special));
            }
        }
    }
    if !plain.is_empty() {
        parts.push(StringPart::Plain(plain));
    }
    SigmaString { parts, original }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(values: &[SigmaValue]) -> Vec<String> {
        values
            .iter()
            .map(|v| match v {
                SigmaValue::String(s) => s.original.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn windash_varies_option_dashes_only() {
        let v = SigmaValue::String(SigmaString::new(" /create "));
        let out = texts(&windash_variants(&v).unwrap());
        assert_eq!(
            out,
            [
                " -create ",
                " /create ",
                " –create ",
                " —create ",
                " ―create "
            ]
        );
        // A dash inside a word is not an option dash.
        let v = SigmaValue::String(SigmaString::new("x-y"));
        assert_eq!(texts(&windash_variants(&v).unwrap()), ["x-y"]);
        // Wildcards survive.
        let v = SigmaValue::String(SigmaString::new("*-enc *"));
        let out = windash_variants(&v).unwrap();
        assert_eq!(out.len(), 5);
        assert_eq!(texts(&out)[1], "*/enc *");
        let SigmaValue::String(s) = &out[1] else {
            panic!()
        };
        assert!(s.contains_wildcards());
        // Two dashes: every combination.
        let v = SigmaValue::String(SigmaString::new(" -a -b"));
        assert_eq!(windash_variants(&v).unwrap().len(), 25);
        let v = SigmaValue::String(SigmaString::new(" -a -b -c -d -e"));
        assert!(windash_variants(&v).is_none());
    }

    #[test]
    fn base64_offsets_match_inside_longer_payloads() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let needles = base64_offsets(b"IEX (New-Object");
        assert_eq!(needles.len(), 3);
        for prefix in ["", "a", "ab", "abc"] {
            for suffix in ["", "x", "xy", ".DownloadString('http://x')"] {
                let hay = b64(&format!("{prefix}IEX (New-Object{suffix}"));
                assert!(
                    needles.iter().any(|n| hay.contains(n.as_str())),
                    "{prefix}|{suffix}: {needles:?} in {hay}"
                );
            }
        }
        // UTF-16LE with BOM for `utf16`.
        assert_eq!(encode("A", Some(Modifier::Utf16)), [0xff, 0xfe, b'A', 0]);
        assert_eq!(encode("A", Some(Modifier::Utf16be)), [0, b'A']);
        assert_eq!(encode("A", Some(Modifier::Wide)), [b'A', 0]);
    }
}
