//! Input limits and the checks that enforce them. Every error names the input field.

use crate::{Error, Result};

/// The limits applied to stored input, public so the API layer can document them.
pub mod limits {
    /// Names: tenants, device groups, tokens.
    pub const NAME_MAX_CHARS: usize = 128;
    /// Titles of rules, alerts, incidents, indicators.
    pub const TITLE_MAX_CHARS: usize = 512;
    /// Free-text descriptions.
    pub const DESCRIPTION_MAX_CHARS: usize = 8_192;
    /// A comment on an alert or incident.
    pub const COMMENT_MAX_CHARS: usize = 10_000;
    /// Usernames: 1..=64 of `a-z 0-9 . _ - @`, lowercased.
    pub const USERNAME_MAX_CHARS: usize = 64;
    /// Passwords: at least 8 characters, at most 1024 bytes (bounds the hashing work).
    pub const PASSWORD_MIN_CHARS: usize = 8;
    pub const PASSWORD_MAX_BYTES: usize = 1024;
    /// Tags per object and characters per tag.
    pub const TAGS_MAX: usize = 64;
    pub const TAG_MAX_CHARS: usize = 64;
    /// Device groups in a user's or indicator's scope.
    pub const SCOPE_GROUPS_MAX: usize = 256;
    /// Host names, platforms, versions and other short identifiers.
    pub const SHORT_MAX_CHARS: usize = 255;
    /// A rule's source text (Sigma YAML or KQL).
    pub const RULE_SOURCE_MAX_CHARS: usize = 1 << 20;
    /// Any JSON document stored for an object (evidence, health, params, details, …).
    pub const JSON_MAX_BYTES: usize = 1024 * 1024;
    /// A device's agent-reported health JSON; small because it is rewritten on every heartbeat.
    pub const HEALTH_MAX_BYTES: usize = 16 * 1024;
}

/// A single-line text field: trimmed, 1..=max characters (or empty if `!required`), no control
/// characters.
pub(crate) fn line(field: &'static str, value: &str, max: usize, required: bool) -> Result<String> {
    let v = value.trim();
    check_text(field, v, max, required)?;
    if v.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(v.to_owned())
}

/// A multi-line text field: like [`line`] but tabs and line breaks are allowed and the text is
/// kept as given (only the length is checked).
pub(crate) fn body(field: &'static str, value: &str, max: usize, required: bool) -> Result<String> {
    check_text(field, value, max, required)?;
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::invalid(
            field,
            "must not contain control characters other than tab and newline",
        ));
    }
    Ok(value.to_owned())
}

fn check_text(field: &'static str, v: &str, max: usize, required: bool) -> Result<()> {
    if required && v.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    // Cheap byte bound first so a huge input is not walked char by char.
    if v.len() > max * 4 || v.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(())
}

/// A list of tags: at most [`limits::TAGS_MAX`], each a non-empty line without `"` or `\` (so
/// the JSON text of a tag is the tag in quotes, which the tag filter relies on), duplicates
/// dropped, order kept.
pub(crate) fn tags(field: &'static str, values: &[String]) -> Result<Vec<String>> {
    if values.len() > limits::TAGS_MAX {
        return Err(Error::invalid(
            field,
            format!("more than {} tags", limits::TAGS_MAX),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let t = line(field, v, limits::TAG_MAX_CHARS, true)?;
        if t.contains(['"', '\\']) {
            return Err(Error::invalid(
                field,
                format!("tag {t:?} contains a quote or backslash"),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// A list of device-group ids for a scope: bounded, deduplicated (existence is checked against
/// the tenant by the caller).
pub(crate) fn group_ids(field: &'static str, values: &[String]) -> Result<Vec<String>> {
    if values.len() > limits::SCOPE_GROUPS_MAX {
        return Err(Error::invalid(
            field,
            format!("more than {} groups", limits::SCOPE_GROUPS_MAX),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let g = line(field, v, limits::SHORT_MAX_CHARS, true)?;
        if !out.contains(&g) {
            out.push(g);
        }
    }
    Ok(out)
}

/// Serialises a JSON document for storage, bounded to `max` bytes.
pub(crate) fn json<T: serde::Serialize + ?Sized>(
    field: &'static str,
    value: &T,
    max: usize,
) -> Result<String> {
    let text = crate::db::to_json(value);
    if text.len() > max {
        return Err(Error::invalid(
            field,
            format!("JSON larger than {max} bytes"),
        ));
    }
    Ok(text)
}

/// A positive count or duration.
pub(crate) fn positive(field: &'static str, value: i64) -> Result<i64> {
    if value <= 0 {
        return Err(Error::invalid(field, "must be positive"));
    }
    Ok(value)
}
