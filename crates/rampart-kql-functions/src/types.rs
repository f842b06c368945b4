//! Kusto's types over Arrow: telling them apart (a `dynamic` is a `Utf8` tagged in its field
//! metadata), literals, and the text forms Kusto prints and parses for datetimes, timespans and
//! reals.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::metadata::FieldMetadata;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, ExprSchemable};
use rampart_kql_syntax::ast::{Literal, TypeName};

use crate::FnError;

/// Field metadata key naming the Kusto type (shared with `rampart-schema`).
pub const KUSTO_TYPE_KEY: &str = "kusto.type";
/// Arrow's extension-type key; `dynamic` columns carry the canonical `arrow.json`.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";

/// Microseconds per unit.
pub const US_PER_SEC: i64 = 1_000_000;
pub const US_PER_MIN: i64 = 60 * US_PER_SEC;
pub const US_PER_HOUR: i64 = 60 * US_PER_MIN;
pub const US_PER_DAY: i64 = 24 * US_PER_HOUR;
/// .NET ticks (100 ns, Kusto's unit) from 0001-01-01 to the Unix epoch.
pub const EPOCH_TICKS: i64 = 621_355_968_000_000_000;

/// A Kusto scalar type, as far as the Arrow field tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KType {
    /// An untyped null literal.
    Null,
    Bool,
    Int,
    Long,
    Real,
    String,
    Dynamic,
    DateTime,
    TimeSpan,
    /// Anything else (lists, structs, binary ...): passed through untouched.
    Other,
}

impl KType {
    pub fn is_numeric(self) -> bool {
        matches!(self, KType::Int | KType::Long | KType::Real)
    }

    pub fn is_integer(self) -> bool {
        matches!(self, KType::Int | KType::Long)
    }

    /// `string` or `dynamic`: both are text in Arrow.
    pub fn is_text(self) -> bool {
        matches!(self, KType::String | KType::Dynamic)
    }
}

/// The metadata that marks a `Utf8` field as Kusto `dynamic`.
pub fn dynamic_metadata() -> HashMap<String, String> {
    HashMap::from([
        (KUSTO_TYPE_KEY.to_string(), "dynamic".to_string()),
        (EXTENSION_NAME_KEY.to_string(), "arrow.json".to_string()),
    ])
}

pub fn field_is_dynamic(field: &Field) -> bool {
    let meta = field.metadata();
    meta.get(KUSTO_TYPE_KEY).is_some_and(|t| t == "dynamic")
        || meta
            .get(EXTENSION_NAME_KEY)
            .is_some_and(|t| t == "arrow.json")
}

pub fn ktype_of_field(field: &Field) -> KType {
    match field.data_type() {
        DataType::Null => KType::Null,
        DataType::Boolean => KType::Bool,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            KType::Int
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => KType::Long,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => KType::Real,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            if field_is_dynamic(field) {
                KType::Dynamic
            } else {
                KType::String
            }
        }
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => KType::DateTime,
        DataType::Duration(_) => KType::TimeSpan,
        DataType::Dictionary(_, v) => ktype_of_field(&Field::new("", (**v).clone(), true)),
        _ => KType::Other,
    }
}

/// The Kusto type of a planned expression.
pub fn ktype(expr: &Expr, schema: &DFSchema) -> Result<KType, FnError> {
    let (_, field) = expr
        .to_field(schema)
        .map_err(|e| FnError::Type(e.to_string()))?;
    Ok(ktype_of_field(&field))
}

/// Whether the expression may be null (unknown counts as nullable).
pub fn nullable(expr: &Expr, schema: &DFSchema) -> bool {
    expr.nullable(schema).unwrap_or(true)
}

/// `Timestamp(µs, "UTC")`, the Arrow type of a Kusto `datetime`.
pub fn datetime_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `Duration(µs)`, the Arrow type of a Kusto `timespan`.
pub const TIMESPAN: DataType = DataType::Duration(TimeUnit::Microsecond);

pub fn datetime_value(us: Option<i64>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(us, Some("UTC".into()))
}

/// A `dynamic` literal: its text (see [`dynamic_text`]) tagged as dynamic.
pub fn dynamic_literal(text: Option<String>) -> Expr {
    Expr::Literal(
        ScalarValue::Utf8(text),
        Some(FieldMetadata::from(dynamic_metadata())),
    )
}

/// The text of a dynamic value in Rampart's representation: a JSON string is its raw content,
/// null is null, anything else compact JSON.
pub fn dynamic_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The DataFusion literal of a Kusto literal.
pub fn literal(lit: &Literal) -> Expr {
    let value = match lit {
        Literal::Null(None) => ScalarValue::Null,
        Literal::Null(Some(t)) => return typed_null(*t),
        Literal::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Literal::Long(v) => ScalarValue::Int64(Some(*v)),
        Literal::Real(v) => ScalarValue::Float64(Some(*v)),
        Literal::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Literal::DateTime(us) => datetime_value(Some(*us)),
        Literal::TimeSpan(ns) => ScalarValue::DurationMicrosecond(Some(ns / 1000)),
        Literal::Dynamic(v) => return dynamic_literal(dynamic_text(v)),
        Literal::Guid(g) => ScalarValue::Utf8(Some(g.to_ascii_lowercase())),
    };
    Expr::Literal(value, None)
}

/// `T(null)`: a null of Kusto type `T`.
pub fn typed_null(t: TypeName) -> Expr {
    let value = match t {
        TypeName::Bool => ScalarValue::Boolean(None),
        TypeName::Int => ScalarValue::Int32(None),
        TypeName::Long => ScalarValue::Int64(None),
        TypeName::Real | TypeName::Decimal => ScalarValue::Float64(None),
        TypeName::String | TypeName::Guid => ScalarValue::Utf8(None),
        TypeName::DateTime => datetime_value(None),
        TypeName::TimeSpan => ScalarValue::DurationMicrosecond(None),
        TypeName::Dynamic => return dynamic_literal(None),
    };
    Expr::Literal(value, None)
}

pub fn naive(us: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(us).map(|d| d.naive_utc())
}

/// Kusto's text for a datetime: ISO 8601 in UTC, seven fractional digits when there is a
/// fraction (`2024-01-02T03:04:05.1234560Z`), none otherwise.
pub fn format_datetime(us: i64) -> Option<String> {
    let t = naive(us)?;
    let frac = us.rem_euclid(US_PER_SEC);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    Some(if frac == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{:07}Z", frac * 10)
    })
}

/// Kusto's text for a timespan: `[-][d.]hh:mm:ss[.fffffff]`.
pub fn format_timespan(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let a = us.unsigned_abs();
    let day = US_PER_DAY.unsigned_abs();
    let days = a / day;
    let rest = a % day;
    let h = rest / US_PER_HOUR.unsigned_abs();
    let m = rest % US_PER_HOUR.unsigned_abs() / US_PER_MIN.unsigned_abs();
    let s = rest % US_PER_MIN.unsigned_abs() / US_PER_SEC.unsigned_abs();
    let frac = rest % US_PER_SEC.unsigned_abs();
    let mut out = String::from(sign);
    if days > 0 {
        out.push_str(&format!("{days}."));
    }
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    if frac > 0 {
        out.push_str(&format!(".{:07}", frac * 10));
    }
    out
}

/// Kusto's text for a real: the shortest round-trip form, with .NET's spelling of exponents
/// and non-finite values.
pub fn format_real(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-5..1e15).contains(&a) {
        let e = format!("{v:e}");
        return match e.split_once('e') {
            Some((m, x)) => {
                let (sign, digits) = match x.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', x),
                };
                format!("{m}E{sign}{digits:0>2}")
            }
            None => e,
        };
    }
    format!("{v}")
}

/// Parses the datetime formats Kusto accepts (ISO 8601 with `T` or a space, optional
/// fraction of any length and zone; date only; RFC 822/2822) to microseconds since the epoch.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_micros());
    }
    let bare = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .unwrap_or(s);
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(bare, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(bare, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%:z") {
        return Some(d.timestamp_micros());
    }
    DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| d.timestamp_micros())
}

/// Parses Kusto's timespan text: `[-][d.]hh:mm[:ss[.f]]`, or a number with a unit (`1.5h`,
/// `30m`, `100ms`, `2d`, `10tick`...); a bare number is days, as in .NET.
pub fn parse_timespan(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, s),
    };
    let us = if body.contains(':') {
        parse_clock(body)?
    } else {
        parse_unit_span(body)?
    };
    Some(if neg { -us } else { us })
}

fn parse_clock(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split(':').collect();
    let (head, minutes, seconds) = match parts.as_slice() {
        [h, m] => (*h, *m, None),
        [h, m, sec] => (*h, *m, Some(*sec)),
        _ => return None,
    };
    let (days, hours) = match head.split_once('.') {
        Some((d, h)) => (d.parse::<i64>().ok()?, h.parse::<i64>().ok()?),
        None => (0, head.parse::<i64>().ok()?),
    };
    let minutes: i64 = minutes.parse().ok()?;
    if !(0..24).contains(&hours) || !(0..60).contains(&minutes) || days < 0 {
        return None;
    }
    let mut us = days
        .checked_mul(US_PER_DAY)?
        .checked_add(hours * US_PER_HOUR + minutes * US_PER_MIN)?;
    if let Some(sec) = seconds {
        let (whole, frac) = match sec.split_once('.') {
            Some((w, f)) => (w, f),
            None => (sec, ""),
        };
        let whole: i64 = whole.parse().ok()?;
        if !(0..60).contains(&whole) {
            return None;
        }
        us += whole * US_PER_SEC + fraction_us(frac)?;
    }
    Some(us)
}

/// Microseconds in a decimal fraction's digits (`"5"` → 500000); more than six digits are
/// truncated.
pub fn fraction_us(digits: &str) -> Option<i64> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut us = 0i64;
    for i in 0..6 {
        let d = digits.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        us = us * 10 + d;
    }
    Some(us)
}

fn parse_unit_span(s: &str) -> Option<i64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let unit_us: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "d" | "day" | "days" => US_PER_DAY as f64,
        "h" | "hr" | "hrs" | "hour" | "hours" => US_PER_HOUR as f64,
        "m" | "min" | "minute" | "minutes" => US_PER_MIN as f64,
        "s" | "sec" | "second" | "seconds" => US_PER_SEC as f64,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000.0,
        "microsecond" | "microseconds" => 1.0,
        "tick" | "ticks" => 0.1,
        _ => return None,
    };
    let us = (n * unit_us).trunc();
    (us.is_finite() && us.abs() < i64::MAX as f64).then_some(us as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_text_round_trips() {
        let us = parse_datetime("2024-03-05T06:07:08.1234567Z");
        assert_eq!(us, Some(1_709_618_828_123_456));
        assert_eq!(
            format_datetime(1_709_618_828_123_456).as_deref(),
            Some("2024-03-05T06:07:08.1234560Z")
        );
        assert_eq!(format_datetime(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(parse_datetime("2024-03-05"), Some(1_709_596_800_000_000));
        assert_eq!(
            parse_datetime("2024-03-05 01:02"),
            Some(1_709_596_800_000_000 + 3_720_000_000)
        );
        assert_eq!(
            parse_datetime("2024-03-05T01:00:00+01:00"),
            Some(1_709_596_800_000_000)
        );
        assert_eq!(
            parse_datetime("Tue, 5 Mar 2024 00:00:00 GMT"),
            Some(1_709_596_800_000_000)
        );
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(parse_datetime(""), None);
    }

    #[test]
    fn timespan_text_round_trips() {
        assert_eq!(parse_timespan("01:00:00"), Some(US_PER_HOUR));
        assert_eq!(
            parse_timespan("1.02:03:04.5"),
            Some(US_PER_DAY + 2 * US_PER_HOUR + 3 * US_PER_MIN + 4_500_000)
        );
        assert_eq!(parse_timespan("-00:30"), Some(-30 * US_PER_MIN));
        assert_eq!(parse_timespan("1.5h"), Some(90 * US_PER_MIN));
        assert_eq!(parse_timespan("100ms"), Some(100_000));
        assert_eq!(parse_timespan("2d"), Some(2 * US_PER_DAY));
        assert_eq!(parse_timespan("25:00:00"), None);
        assert_eq!(parse_timespan("abc"), None);
        assert_eq!(
            format_timespan(US_PER_DAY + 2 * US_PER_HOUR + 3 * US_PER_MIN + 4_500_000),
            "1.02:03:04.5000000"
        );
        assert_eq!(format_timespan(-30 * US_PER_MIN), "-00:30:00");
        assert_eq!(format_timespan(0), "00:00:00");
    }

    #[test]
    fn real_text_is_kusto_like() {
        assert_eq!(format_real(1.0), "1");
        assert_eq!(format_real(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_real(-2.5), "-2.5");
        assert_eq!(format_real(1e20), "1E+20");
        assert_eq!(format_real(1.5e-7), "1.5E-07");
        assert_eq!(format_real(f64::NAN), "NaN");
        assert_eq!(format_real(f64::NEG_INFINITY), "-Infinity");
    }
}
