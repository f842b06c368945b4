//! Kusto string functions that DataFusion has no exact equivalent for. Positions and lengths
//! count characters, as Kusto does; regexes are Rust's (RE2-like) syntax.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::Result;
use regex::Regex;
use serde_json::{Map, Value};

use crate::udf::{Call, Prims, Strs, bools_total, prims, strings};

/// Compiles regexes, remembering the last one (a pattern is almost always a constant).
#[derive(Default)]
pub(crate) struct RegexCache {
    last: Option<(String, Option<Regex>)>,
}

impl RegexCache {
    pub fn get(&mut self, pattern: &str) -> Option<&Regex> {
        self.get_with(pattern, |p| p.to_string())
    }

    /// The regex of `make(pattern)` (e.g. an anchored form), cached by `pattern`.
    pub fn get_with(&mut self, pattern: &str, make: impl FnOnce(&str) -> String) -> Option<&Regex> {
        if self.last.as_ref().is_none_or(|(p, _)| p != pattern) {
            self.last = Some((pattern.to_string(), Regex::new(&make(pattern)).ok()));
        }
        self.last.as_ref().and_then(|(_, r)| r.as_ref())
    }
}

/// The byte offset of character `n` of `s` (or `s.len()` past the end).
fn char_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// `substring(source, start[, length])`: a negative start counts from the end.
pub fn k_substring(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let start = Prims::<Int64Type>::new(c.arg(1)?)?;
    let len = Prims::<Int64Type>::new(c.arg(2)?)?;
    let has_len = !matches!(len, Prims::One(None));
    Ok(strings(c.rows, |i| {
        let text = s.text(i);
        let count = i64::try_from(text.chars().count()).ok()?;
        let mut from = start.get(i)?;
        if from < 0 {
            from = (count + from).max(0);
        }
        let from = from.min(count);
        let to = if has_len {
            (from + len.get(i)?.max(0)).min(count)
        } else {
            count
        };
        let a = char_offset(text, usize::try_from(from).ok()?);
        let b = char_offset(text, usize::try_from(to).ok()?);
        text.get(a..b).map(str::to_string)
    }))
}

/// `split(source, delimiter[, index])`: a dynamic array, or its element at `index`.
pub fn k_split(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let d = Strs::new(c.arg(1)?)?;
    let index = match c.args.get(2) {
        Some(a) => Some(Prims::<Int64Type>::new(a)?),
        None => None,
    };
    Ok(strings(c.rows, |i| {
        let text = s.text(i);
        let delim = d.text(i);
        let parts: Vec<&str> = if delim.is_empty() {
            vec![text]
        } else {
            text.split(delim).collect()
        };
        match &index {
            None => Some(
                Value::Array(
                    parts
                        .iter()
                        .map(|p| Value::String((*p).to_string()))
                        .collect(),
                )
                .to_string(),
            ),
            // Kusto returns an array even for one requested part (empty when out of range).
            Some(ix) => {
                let k = usize::try_from(ix.get(i)?).ok();
                let part = k.and_then(|k| parts.get(k));
                let items = part
                    .map(|p| Value::String((*p).to_string()))
                    .into_iter()
                    .collect();
                Some(Value::Array(items).to_string())
            }
        }
    }))
}

/// `extract(regex, group, text)`: the group of the first match, null when none.
pub fn k_extract(c: &Call) -> Result<ArrayRef> {
    let re = Strs::new(c.arg(0)?)?;
    let group = Prims::<Int64Type>::new(c.arg(1)?)?;
    let s = Strs::new(c.arg(2)?)?;
    let mut cache = RegexCache::default();
    Ok(strings(c.rows, |i| {
        let r = cache.get(re.get(i)?)?;
        let g = usize::try_from(group.get(i)?).ok()?;
        let caps = r.captures(s.text(i))?;
        caps.get(g).map(|m| m.as_str().to_string())
    }))
}

/// `extract_all(regex, text)`: every match's capture group (or, with several groups, the
/// array of groups); the whole match when the regex has no group.
pub fn k_extract_all(c: &Call) -> Result<ArrayRef> {
    let re = Strs::new(c.arg(0)?)?;
    let s = Strs::new(c.arg(1)?)?;
    let mut cache = RegexCache::default();
    Ok(strings(c.rows, |i| {
        let r = cache.get(re.get(i)?)?;
        let groups = r.captures_len() - 1;
        let text_of = |m: Option<regex::Match>| {
            m.map_or(Value::Null, |m| Value::String(m.as_str().to_string()))
        };
        let all: Vec<Value> = r
            .captures_iter(s.text(i))
            .map(|caps| match groups {
                0 => text_of(caps.get(0)),
                1 => text_of(caps.get(1)),
                n => Value::Array((1..=n).map(|g| text_of(caps.get(g))).collect()),
            })
            .collect();
        if all.is_empty() {
            None
        } else {
            Some(Value::Array(all).to_string())
        }
    }))
}

/// `replace_string(text, lookup, rewrite)`.
pub fn k_replace_string(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let from = Strs::new(c.arg(1)?)?;
    let to = Strs::new(c.arg(2)?)?;
    Ok(strings(c.rows, |i| {
        let f = from.text(i);
        let text = s.text(i);
        Some(if f.is_empty() {
            text.to_string()
        } else {
            text.replace(f, to.text(i))
        })
    }))
}

/// Kusto rewrites name groups `\1`; Rust's regex wants `${1}`.
fn rewrite_template(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            _ => out.push(ch),
        }
    }
    out
}

/// `replace_regex(text, regex, rewrite)`.
pub fn k_replace_regex(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let re = Strs::new(c.arg(1)?)?;
    let to = Strs::new(c.arg(2)?)?;
    let mut cache = RegexCache::default();
    Ok(strings(c.rows, |i| {
        let r = cache.get(re.get(i)?)?;
        Some(
            r.replace_all(s.text(i), rewrite_template(to.text(i)).as_str())
                .into_owned(),
        )
    }))
}

/// `trim(regex, text)`, `trim_start`, `trim_end`: removes repeated matches at the ends.
fn trim(c: &Call, start: bool, end: bool) -> Result<ArrayRef> {
    let re = Strs::new(c.arg(0)?)?;
    let s = Strs::new(c.arg(1)?)?;
    let mut head = RegexCache::default();
    let mut tail = RegexCache::default();
    Ok(strings(c.rows, |i| {
        let p = re.get(i)?;
        let mut text = s.text(i);
        if start {
            let r = head.get_with(p, |p| format!("^(?:{p})+"))?;
            if let Some(m) = r.find(text) {
                text = text.get(m.end()..)?;
            }
        }
        if end {
            let r = tail.get_with(p, |p| format!("(?:{p})+$"))?;
            if let Some(m) = r.find(text) {
                text = text.get(..m.start())?;
            }
        }
        Some(text.to_string())
    }))
}

pub fn k_trim(c: &Call) -> Result<ArrayRef> {
    trim(c, true, true)
}

pub fn k_trim_start(c: &Call) -> Result<ArrayRef> {
    trim(c, true, false)
}

pub fn k_trim_end(c: &Call) -> Result<ArrayRef> {
    trim(c, false, true)
}

/// `indexof(source, lookup[, start[, length[, occurrence]]])`: a character position, -1 when
/// not found.
pub fn k_indexof(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let look = Strs::new(c.arg(1)?)?;
    let start = Prims::<Int64Type>::new(c.arg(2)?)?;
    let length = Prims::<Int64Type>::new(c.arg(3)?)?;
    let occurrence = Prims::<Int64Type>::new(c.arg(4)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        let text = s.text(i);
        let needle = look.text(i);
        let count = i64::try_from(text.chars().count()).ok()?;
        let mut from = start.get(i).unwrap_or(0);
        if from < 0 {
            from = (count + from).max(0);
        }
        if from > count {
            return None;
        }
        let to = match length.get(i) {
            // Kusto's documented examples examine `length + 1` positions.
            Some(l) if l >= 0 => (from + l + 1).min(count),
            Some(-1) | None => count,
            Some(_) => return None,
        };
        let occ = occurrence.get(i).unwrap_or(1);
        if occ <= 0 {
            return None;
        }
        let a = char_offset(text, usize::try_from(from).ok()?);
        let b = char_offset(text, usize::try_from(to).ok()?);
        let window = text.get(a..b)?;
        let mut seen = 0;
        let mut pos = 0usize;
        while let Some(found) = window.get(pos..).and_then(|w| w.find(needle)) {
            let at = pos + found;
            seen += 1;
            if seen == occ {
                let chars_before = i64::try_from(text.get(..a + at)?.chars().count()).ok()?;
                return Some(chars_before);
            }
            pos = at + window.get(at..)?.chars().next().map_or(1, char::len_utf8);
        }
        Some(-1)
    }))
}

/// `countof(text, search[, "regex"])`: plain matches may overlap; regex matches do not.
pub fn k_countof(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let look = Strs::new(c.arg(1)?)?;
    let kind = Strs::new(c.arg(2)?)?;
    let mut cache = RegexCache::default();
    Ok(prims::<Int64Type>(c.rows, |i| {
        let text = s.text(i);
        let needle = look.text(i);
        let n = if kind.text(i) == "regex" {
            cache.get(needle)?.find_iter(text).count()
        } else if needle.is_empty() {
            0
        } else {
            let mut n = 0;
            let mut pos = 0;
            while let Some(found) = text.get(pos..).and_then(|t| t.find(needle)) {
                n += 1;
                pos += found
                    + text
                        .get(pos + found..)?
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
            }
            n
        };
        i64::try_from(n).ok()
    }))
}

pub fn k_base64_encode(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| s.get(i).map(|t| BASE64.encode(t))))
}

/// `base64_decode_tostring`: null when the input is not base64 of UTF-8 text.
pub fn k_base64_decode(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| {
        let bytes = BASE64.decode(s.get(i)?.trim()).ok()?;
        String::from_utf8(bytes).ok()
    }))
}

fn url_encode(s: &str, space_plus: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'*'
            | b'('
            | b')' => out.push(char::from(b)),
            b' ' if space_plus => out.push('+'),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// `url_encode`: form encoding (space as `+`), as .NET's `HttpUtility.UrlEncode`.
pub fn k_url_encode(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| s.get(i).map(|t| url_encode(t, true))))
}

/// `url_encode_component`: space as `%20`.
pub fn k_url_encode_component(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| s.get(i).map(|t| url_encode(t, false))))
}

fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `url_decode`: null for malformed escapes.
pub fn k_url_decode(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| url_decode(s.get(i)?)))
}

/// `reverse`: characters in reverse order.
pub fn k_reverse(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| {
        Some(s.text(i).chars().rev().collect::<String>())
    }))
}

/// `strrep(value, multiplier[, delimiter])`.
pub fn k_strrep(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let n = Prims::<Int64Type>::new(c.arg(1)?)?;
    let d = Strs::new(c.arg(2)?)?;
    Ok(strings(c.rows, |i| {
        // Bounded like Kusto (which caps at 64 K repetitions).
        let k = usize::try_from(n.get(i)?.clamp(0, 65_536)).ok()?;
        Some(vec![s.text(i); k].join(d.text(i)))
    }))
}

/// `strcmp(a, b)`: -1, 0 or 1 in ordinal order.
pub fn k_strcmp(c: &Call) -> Result<ArrayRef> {
    let a = Strs::new(c.arg(0)?)?;
    let b = Strs::new(c.arg(1)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        Some(match a.text(i).cmp(b.text(i)) {
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater => 1,
        })
    }))
}

pub fn k_isascii(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(bools_total(c.rows, |i| s.text(i).is_ascii()))
}

/// `string_size`: bytes in UTF-8.
pub fn k_string_size(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        i64::try_from(s.text(i).len()).ok()
    }))
}

/// `parse_url(url)`: a bag of Scheme, Host, Port, Path, Username, Password, Query
/// Parameters and Fragment; null when the text is not an absolute URL.
pub fn k_parse_url(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| {
        parse_url(s.get(i)?).map(|v| v.to_string())
    }))
}

fn parse_url(url: &str) -> Option<Value> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match rest.find('/') {
        Some(p) => (rest.get(..p)?, rest.get(p..)?),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':').unwrap_or(""))
    } else {
        hostport.rsplit_once(':').unwrap_or((hostport, ""))
    };
    let mut params = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(
            url_decode(k).unwrap_or_else(|| k.to_string()),
            Value::String(url_decode(v).unwrap_or_else(|| v.to_string())),
        );
    }
    let mut m = Map::new();
    let text = |s: &str| Value::String(s.to_string());
    m.insert("Scheme".into(), text(scheme));
    m.insert("Host".into(), text(host));
    m.insert("Port".into(), text(port));
    m.insert("Path".into(), text(path));
    m.insert("Username".into(), text(user));
    m.insert("Password".into(), text(password));
    m.insert("Query Parameters".into(), Value::Object(params));
    m.insert("Fragment".into(), text(fragment));
    Some(Value::Object(m))
}

/// `parse_path(path)`: Scheme, RootPath, DirectoryPath, DirectoryName, Filename, Extension
/// and AlternateDataStreamName of a Windows, UNC, POSIX or URL path.
pub fn k_parse_path(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| Some(parse_path(s.get(i)?).to_string())))
}

fn parse_path(p: &str) -> Value {
    let (scheme, root) = match p.split_once("://") {
        Some((sc, rest)) => (sc, rest.split(['/', '\\']).next().unwrap_or("")),
        None => {
            let b = p.as_bytes();
            let drive = b.len() >= 2
                && b.first().is_some_and(u8::is_ascii_alphabetic)
                && b.get(1) == Some(&b':');
            ("", if drive { p.get(..2).unwrap_or("") } else { "" })
        }
    };
    let (dir, file) = match p.rfind(['/', '\\']) {
        Some(at) => (p.get(..at).unwrap_or(""), p.get(at + 1..).unwrap_or("")),
        None => ("", p),
    };
    // A colon inside the file name (not a drive's) starts an alternate data stream.
    let (file, stream) = match file.split_once(':') {
        Some((f, s)) if !(dir.is_empty() && f.len() == 1) => (f, s),
        _ => (file, ""),
    };
    let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
    let dir_name = dir.rsplit(['/', '\\']).next().unwrap_or("");
    let mut m = Map::new();
    let text = |s: &str| Value::String(s.to_string());
    m.insert("Scheme".into(), text(scheme));
    m.insert("RootPath".into(), text(root));
    m.insert("DirectoryPath".into(), text(dir));
    m.insert("DirectoryName".into(), text(dir_name));
    m.insert("Filename".into(), text(file));
    m.insert("Extension".into(), text(ext));
    m.insert("AlternateDataStreamName".into(), text(stream));
    Value::Object(m)
}

/// `parse_command_line(cmd, "windows")`: the arguments as `CommandLineToArgvW` splits them.
pub fn k_parse_command_line(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let kind = Strs::new(c.arg(1)?)?;
    Ok(strings(c.rows, |i| {
        if !kind.text(i).eq_ignore_ascii_case("windows") {
            return None;
        }
        let args = command_line_to_argv(s.text(i));
        Some(Value::Array(args.into_iter().map(Value::String).collect()).to_string())
    }))
}

/// Windows' rules: the program name ends at the next quote (if quoted) or whitespace, with no
/// escapes; then `2n` backslashes before a quote give `n` and toggle quoting, `2n+1` give `n`
/// and a literal quote, other backslashes are literal, and `""` inside quotes is a quote.
pub fn command_line_to_argv(cmd: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = cmd.chars().peekable();
    while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
        chars.next();
    }
    if chars.peek().is_none() {
        return args;
    }
    let mut program = String::new();
    if chars.peek() == Some(&'"') {
        chars.next();
        for ch in chars.by_ref() {
            if ch == '"' {
                break;
            }
            program.push(ch);
        }
    } else {
        while let Some(&ch) = chars.peek() {
            if ch == ' ' || ch == '\t' {
                break;
            }
            program.push(ch);
            chars.next();
        }
    }
    args.push(program);
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        if chars.peek().is_none() {
            return args;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while let Some(&ch) = chars.peek() {
            match ch {
                '\\' => {
                    let mut n = 0;
                    while chars.peek() == Some(&'\\') {
                        n += 1;
                        chars.next();
                    }
                    if chars.peek() == Some(&'"') {
                        arg.extend(std::iter::repeat_n('\\', n / 2));
                        if n % 2 == 1 {
                            arg.push('"');
                            chars.next();
                        }
                    } else {
                        arg.extend(std::iter::repeat_n('\\', n));
                    }
                }
                '"' => {
                    chars.next();
                    if quoted && chars.peek() == Some(&'"') {
                        arg.push('"');
                        chars.next();
                    } else {
                        quoted = !quoted;
                    }
                }
                ' ' | '\t' if !quoted => break,
                _ => {
                    arg.push(ch);
                    chars.next();
                }
            }
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_follows_windows_rules() {
        let v = |s: &str| command_line_to_argv(s);
        assert_eq!(
            v(r#""C:\Program Files\a.exe" -x "y z""#),
            [r"C:\Program Files\a.exe", "-x", "y z"]
        );
        assert_eq!(
            v(r#"cmd.exe /c "echo \"hi\"""#),
            ["cmd.exe", "/c", r#"echo "hi""#]
        );
        assert_eq!(v(r#"a.exe a\\\\"b c" d"#), ["a.exe", r"a\\b c", "d"]);
        assert_eq!(v(r#"a.exe a\\\"b c"#), ["a.exe", r#"a\"b"#, "c"]);
        assert_eq!(v(r"a.exe C:\dir\ x"), ["a.exe", r"C:\dir\", "x"]);
        assert_eq!(v(r#"a.exe "a""b""#), ["a.exe", r#"a"b"#]);
        assert_eq!(v("   "), Vec::<String>::new());
        assert_eq!(v("  notepad.exe\tfile.txt "), ["notepad.exe", "file.txt"]);
    }

    #[test]
    fn paths_and_urls_split() {
        let p = parse_path(r"C:\temp\file.txt");
        assert_eq!(p["RootPath"], "C:");
        assert_eq!(p["DirectoryPath"], r"C:\temp");
        assert_eq!(p["DirectoryName"], "temp");
        assert_eq!(p["Filename"], "file.txt");
        assert_eq!(p["Extension"], "txt");
        let p = parse_path(r"C:\temp\file.txt:stream");
        assert_eq!(p["Filename"], "file.txt");
        assert_eq!(p["AlternateDataStreamName"], "stream");
        let p = parse_path(r"\\shared\users\temp\file.txt.gz");
        assert_eq!(p["DirectoryPath"], r"\\shared\users\temp");
        assert_eq!(p["Extension"], "gz");
        let p = parse_path("https://contoso.com/temp/file.txt");
        assert_eq!(p["Scheme"], "https");
        assert_eq!(p["RootPath"], "contoso.com");
        assert_eq!(p["DirectoryPath"], "https://contoso.com/temp");
        let u =
            parse_url("scheme://username:password@host:1234/this/is/a/path?k1=v1&k2=v2#fragment");
        let u = u.unwrap_or_default();
        assert_eq!(u["Scheme"], "scheme");
        assert_eq!(u["Host"], "host");
        assert_eq!(u["Port"], "1234");
        assert_eq!(u["Path"], "/this/is/a/path");
        assert_eq!(u["Username"], "username");
        assert_eq!(u["Password"], "password");
        assert_eq!(u["Query Parameters"]["k2"], "v2");
        assert_eq!(u["Fragment"], "fragment");
        assert!(parse_url("not a url").is_none());
    }

    #[test]
    fn rewrite_templates_translate_backreferences() {
        assert_eq!(rewrite_template(r"\1-\2"), "${1}-${2}");
        assert_eq!(rewrite_template("cost $5"), "cost $$5");
    }
}
