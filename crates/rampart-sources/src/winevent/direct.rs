//! A forwarded record's JSON text read straight into its flat fields, for
//! [`WinEvent::from_forwarded_slice`](super::WinEvent::from_forwarded_slice), with the text of
//! each kept value (see [`Read::members`]).
//!
//! The fields are those of reading the text into a `Value` and flattening it, for the records
//! forwarders send: an `Event` object with `System` first, and no key of `Event` or `System`
//! given twice (a repeat there can change what is kept: a later `null` drops an earlier value).
//! Anything else, malformed text included, ends the read with `None`: the caller then reads
//! the text through a `Value`, which decides. So this reader leaves to it whatever it would
//! not read exactly as `serde_json` does (a lone surrogate escape, nesting near the limit; a
//! number other than a plain integer is read by `serde_json` itself), and never accepts text
//! `serde_json` refuses.
//! The per-entry rules are the parent's, shared with the flattening of a `Value`.
//!
//! Ours rather than a visitor over `serde_json`'s deserializer (the reader before this one):
//! per token that machinery cost more than the scan of the text, and only a reader of our own
//! keeps each value's text, which `AdditionalFields` copies instead of escaping every string
//! again; together they were ~35 % of the server's instructions per event.

use std::borrow::Cow;

use serde_json::Value;

use super::{Fields, insert_attribute, insert_data, insert_part, insert_system};
use crate::json;

/// What a direct read gives.
pub(super) struct Read {
    pub(super) fields: Fields,
    /// `fields` as the members of a JSON object, each value as the record's text has it, when
    /// every kept value was kept as it reads (`None` after a repeated name or a `UserData`
    /// part, whose leaves are lifted).
    pub(super) members: Option<String>,
}

/// The flat fields of a record's JSON text, or `None` when a parsed `Value` must decide.
pub(super) fn fields(text: &str) -> Option<Read> {
    let mut s = Scanner { text, at: 0 };
    s.ws();
    s.expect(b'{')?;
    let mut read = None;
    let mut first = true;
    while let Some(key) = s.next_key(first)? {
        first = false;
        if key != "Event" {
            s.skip(1)?;
        } else if read.is_none() {
            s.ws();
            s.expect(b'{')?;
            read = Some(event(&mut s)?);
        } else {
            return None;
        }
    }
    s.ws();
    (s.at == text.len()).then_some(())?;
    read
}

/// The `Event` object, after its `{`: `System` first, then each other part once.
fn event(s: &mut Scanner<'_>) -> Option<Read> {
    // A record has ~25 fields: grown from fewer, the map was rehashed at each doubling.
    let mut out = Out {
        fields: Fields::with_capacity_and_hasher(32, Default::default()),
        members: Some(String::with_capacity(s.text.len())),
    };
    match s.next_key(true)? {
        Some(key) if key == "System" => {
            s.ws();
            s.expect(b'{')?;
            system(s, &mut out)?;
        }
        _ => return None,
    }
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    while let Some(key) = s.next_key(false)? {
        if key == "System" || seen.contains(&key) {
            return None;
        }
        if key == "EventData" {
            data(s, &mut out)?;
        } else {
            if key == "UserData" {
                out.members = None;
            }
            let (value, raw) = s.value()?;
            out.keep(is_plain(&key), raw, |f| insert_part(f, key.clone(), value));
        }
        seen.push(key);
    }
    Some(Read {
        fields: out.fields,
        members: out.members,
    })
}

/// The `System` object, after its `{`: plain elements and attribute objects.
fn system(s: &mut Scanner<'_>, out: &mut Out) -> Option<()> {
    // ~15 keys: a scan of them costs less than hashing them.
    let mut seen: Vec<Cow<'_, str>> = Vec::with_capacity(16);
    let mut first = true;
    while let Some(key) = s.next_key(first)? {
        first = false;
        if seen.contains(&key) {
            return None;
        }
        match key.strip_suffix("_attributes") {
            Some(element) => {
                s.ws();
                s.expect(b'{')?;
                let mut first = true;
                while let Some(attr) = s.next_key(first)? {
                    first = false;
                    let (value, raw) = s.value()?;
                    let clean = is_plain(&key) && is_plain(&attr);
                    out.keep(clean, raw, |f| insert_attribute(f, element, &attr, value));
                }
            }
            None => {
                let (value, raw) = s.value()?;
                out.keep(is_plain(&key), raw, |f| {
                    insert_system(f, key.clone(), value)
                });
            }
        }
        seen.push(key);
    }
    Some(())
}

/// `EventData`: an object's items, a provider's bare text, or null.
fn data(s: &mut Scanner<'_>, out: &mut Out) -> Option<()> {
    s.ws();
    match s.peek()? {
        b'{' => {
            s.at += 1;
            let mut first = true;
            while let Some(key) = s.next_key(first)? {
                first = false;
                // Dropped whatever they hold.
                if key.ends_with("_attributes") {
                    s.skip(3)?;
                    continue;
                }
                let (value, raw) = s.value()?;
                out.keep(is_plain(&key), raw, |f| {
                    insert_data(f, key.into_owned(), value)
                });
            }
        }
        b'"' => {
            let (value, raw) = s.value()?;
            out.keep(true, raw, |f| {
                insert_part(f, Cow::Borrowed("EventData"), value)
            });
        }
        b'n' => s.skip(2)?,
        _ => return None,
    }
    Some(())
}

/// The fields being read, and their members' text.
struct Out {
    fields: Fields,
    members: Option<String>,
}

impl Out {
    /// Inserts into `fields` (`insert` says whether it replaced a value), then writes the new
    /// entry's member: its value's text `raw` as the record has it; `clean`: its name was made
    /// of text with nothing to escape, and is copied as it is. An insert that added more than
    /// one entry or replaced one leaves no members.
    fn keep(&mut self, clean: bool, raw: &str, insert: impl FnOnce(&mut Fields) -> bool) {
        let before = self.fields.len();
        let replaced = insert(&mut self.fields);
        let Some(members) = &mut self.members else {
            return;
        };
        let added = self.fields.len() - before;
        let last = self.fields.last();
        match (added, replaced, last) {
            (0, false, _) => {}
            (1, false, Some((key, value))) => {
                if !members.is_empty() {
                    members.push(',');
                }
                if clean {
                    members.push('"');
                    members.push_str(key);
                    members.push_str("\":");
                } else {
                    json::push_str(members, key);
                    members.push(':');
                }
                match value {
                    // A data item's null is kept as empty text.
                    Value::String(text) if raw == "null" => json::push_str(members, text),
                    _ => members.push_str(raw),
                }
            }
            _ => self.members = None,
        }
    }
}

/// Whether a string read from the text had no escape: then it holds nothing JSON escapes.
#[expect(
    clippy::ptr_arg,
    reason = "whether the text was borrowed is the question"
)]
fn is_plain(text: &Cow<'_, str>) -> bool {
    matches!(text, Cow::Borrowed(_))
}

/// Most objects and lists `serde_json` reads nested in one another: a value nested deeper is
/// left to it, which refuses it.
const MAX_DEPTH: usize = 127;

/// Most objects and lists around a value this reader builds (an attribute's: the record,
/// `Event`, `System` and the attribute object).
const MAX_ENCLOSING: usize = 4;

/// How many objects and lists `value` nests, itself included.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A cursor over a record's text.
struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// After an object's `{` (`first`) or a member's value: the next member's key, past its
    /// colon, or `Some(None)` past the object's `}`.
    #[inline]
    fn next_key(&mut self, first: bool) -> Option<Option<Cow<'a, str>>> {
        self.ws();
        match self.peek()? {
            b'}' => {
                self.at += 1;
                return Some(None);
            }
            b',' if !first => {
                self.at += 1;
                self.ws();
            }
            b'"' if first => {}
            _ => return None,
        }
        let key = self.string()?;
        self.ws();
        self.expect(b':')?;
        Some(Some(key))
    }

    /// A value and its text.
    fn value(&mut self) -> Option<(Value, &'a str)> {
        self.ws();
        let start = self.at;
        let value = match self.peek()? {
            b'"' => Value::String(self.string()?.into_owned()),
            b'0'..=b'9' | b'-' => self.number()?,
            b't' => self.literal("true", Value::Bool(true))?,
            b'f' => self.literal("false", Value::Bool(false))?,
            b'n' => self.literal("null", Value::Null)?,
            b'{' | b'[' => self.nested()?,
            _ => return None,
        };
        Some((value, &self.text[start..self.at]))
    }

    fn literal(&mut self, word: &str, value: Value) -> Option<Value> {
        self.text[self.at..].starts_with(word).then(|| {
            self.at += word.len();
            value
        })
    }

    /// Past a value that is not kept, inside `depth` objects and lists, checked as
    /// `serde_json` checks what it ignores.
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.at += 1;
                let mut first = true;
                while self.next_key(first)?.is_some() {
                    first = false;
                    self.skip(depth + 1)?;
                }
                Some(())
            }
            b'[' => {
                self.at += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(drop),
            _ => self.value().map(drop),
        }
    }

    /// An object or a list (rare in a record's fields): `serde_json` reads it, but one nested
    /// deeper than the whole record's reading would allow is left to that reading.
    fn nested(&mut self) -> Option<Value> {
        let mut values = serde_json::Deserializer::from_str(&self.text[self.at..]).into_iter();
        let value = values.next()?.ok()?;
        (depth(&value) + MAX_ENCLOSING <= MAX_DEPTH).then_some(())?;
        self.at += values.byte_offset();
        Some(value)
    }

    /// A number: a plain integer of up to 19 digits is read here; any other (negative,
    /// fraction, exponent, longer) by `serde_json`, which decides what it is.
    fn number(&mut self) -> Option<Value> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let digits = |mut i: usize| {
            while let Some(b'0'..=b'9') = bytes.get(i) {
                i += 1;
            }
            i
        };
        let mut i = start + usize::from(bytes.get(start) == Some(&b'-'));
        let int_start = i;
        // A leading zero stands alone: "01" is not JSON, and the byte after "0" is then no
        // separator, which ends the read.
        i = match bytes.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i + 1),
            _ => return None,
        };
        let int_end = i;
        if bytes.get(i) == Some(&b'.') {
            let fraction = i + 1;
            i = digits(fraction);
            (i > fraction).then_some(())?;
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            let exponent = i;
            i = digits(exponent);
            (i > exponent).then_some(())?;
        }
        self.at = i;
        let token = &self.text[start..i];
        if int_start == start && int_end == i && int_end - int_start <= 19 {
            return token.parse::<u64>().ok().map(Value::from);
        }
        serde_json::from_str(token).ok()
    }

    /// A string (at its opening quote), borrowed from the text unless it holds an escape.
    #[inline]
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let end = json::plain_run(bytes, start);
        match bytes.get(end)? {
            b'"' => {
                self.at = end + 1;
                Some(Cow::Borrowed(&self.text[start..end]))
            }
            b'\\' => self.unescape(start, end).map(Cow::Owned),
            // A control character: not JSON.
            _ => None,
        }
    }

    /// The rest of a string whose text from `start` holds an escape at `at`.
    fn unescape(&mut self, start: usize, mut at: usize) -> Option<String> {
        let bytes = self.text.as_bytes();
        let mut out = String::with_capacity(at - start + 32);
        out.push_str(&self.text[start..at]);
        loop {
            // At a backslash.
            let escaped = *bytes.get(at + 1)?;
            at += 2;
            match escaped {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let (c, next) = self.unicode(at)?;
                    out.push(c);
                    at = next;
                }
                _ => return None,
            }
            let end = json::plain_run(bytes, at);
            out.push_str(self.text.get(at..end)?);
            match bytes.get(end)? {
                b'"' => {
                    self.at = end + 1;
                    return Some(out);
                }
                b'\\' => at = end,
                _ => return None,
            }
        }
    }

    /// The character of a `\u` escape whose hex digits start at `at`, and where it ends: a
    /// surrogate pair is one character; a lone surrogate is left to `serde_json`.
    fn unicode(&self, at: usize) -> Option<(char, usize)> {
        let hex = |at: usize| {
            let digits = self.text.get(at..at + 4)?;
            // `from_str_radix` would take a sign.
            digits
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then(|| u32::from_str_radix(digits, 16).ok())?
        };
        match hex(at)? {
            high @ 0xD800..=0xDBFF => {
                (self.text.get(at + 4..at + 6)? == "\\u").then_some(())?;
                let low = hex(at + 6)?;
                (0xDC00..=0xDFFF).contains(&low).then_some(())?;
                let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                Some((char::from_u32(c)?, at + 10))
            }
            c => Some((char::from_u32(c)?, at + 4)),
        }
    }
}
