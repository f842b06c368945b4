//! How the portal writes values for people and reads what they type: numbers with thousands
//! separators, sizes, text cut to fit, and times typed into filters and forms (always UTC, as
//! every page says).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// `1234567` → `1,234,567` (any integer).
pub fn thousands(n: impl std::fmt::Display) -> String {
    let text = n.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size in words (`1.2 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `text` cut to `max` characters, an ellipsis marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A time typed into a form or filter named `field`, as UTC: RFC 3339, `YYYY-MM-DD HH:MM[:SS[.f]]`
/// (or with a `T`, as date-time inputs send it) or `YYYY-MM-DD`. Empty is no time; anything
/// else is an error that names the field and shows the expected form.
pub fn parse_time(field: &str, text: &str) -> Result<Option<DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    let spaced = text.replacen('T', " ", 1);
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&spaced, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    Err(format!(
        "{field}: \"{text}\" is not a date and time (write 2024-05-01 13:00 or 2024-05-01, UTC)."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn numbers_sizes_and_cuts() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000usize), "1,000");
        assert_eq!(thousands(1_234_567i64), "1,234,567");
        assert_eq!(thousands(-1200), "-1,200");
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(4_872_144), "4.6 MiB");
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ünïcödé text", 5), "ünïc…");
    }

    #[test]
    fn times_typed_are_utc() {
        assert_eq!(parse_time("From", ""), Ok(None));
        assert_eq!(parse_time("From", "  "), Ok(None));
        for (typed, meant) in [
            ("2024-01-02", "2024-01-02T00:00:00Z"),
            ("2024-01-02T13:05", "2024-01-02T13:05:00Z"),
            (" 2024-01-02 03:04:05 ", "2024-01-02T03:04:05Z"),
            ("2024-01-02T03:04:05.250", "2024-01-02T03:04:05.25Z"),
            ("2024-01-02T05:04:05+02:00", "2024-01-02T03:04:05Z"),
        ] {
            assert_eq!(parse_time("From", typed), Ok(Some(t(meant))), "{typed}");
        }
        let err = parse_time("To", "yesterday").unwrap_err();
        assert!(err.starts_with("To: \"yesterday\""), "{err}");
        assert!(parse_time("From", "2024-13-02").is_err());
    }
}
