//! Conversions: `tostring`, `tolong`, `toint`, `todouble`, `tobool`, `todatetime`,
//! `totimespan`, `todynamic`, `toguid`. A value that does not convert gives null, never an
//! error.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::compute::cast as arrow_cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, DurationMicrosecondType, Float64Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::{Expr, ExprSchemable, cast as df_cast, try_cast};
use rampart_kql_syntax::ast::TypeName;

use crate::FnError;
use crate::types::{
    EPOCH_TICKS, KType, TIMESPAN, datetime_type, format_datetime, format_real, format_timespan,
    ktype, parse_datetime, parse_timespan,
};
use crate::udf::{Call, KernelUdf, Strs, bools, prims, strings, timestamps};

/// A column downcast to the primitive type a cast just produced.
pub(crate) fn prim<T: ArrowPrimitiveType>(a: &ArrayRef) -> Result<&PrimitiveArray<T>> {
    match a.as_primitive_opt::<T>() {
        Some(p) => Ok(p),
        None => exec_err!("expected {}, got {}", T::DATA_TYPE, a.data_type()),
    }
}

fn value<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, i: usize) -> Option<T::Native> {
    (i < a.len() && a.is_valid(i)).then(|| a.value(i))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_real(t: &DataType) -> bool {
    t.is_floating() || t.is_decimal()
}

fn data_type(e: &Expr, schema: &DFSchema) -> Result<DataType, FnError> {
    e.get_type(schema).map_err(|e| FnError::Type(e.to_string()))
}

/// Kusto `tostring`: strings and dynamics as they are, other types in Kusto's text forms.
pub fn to_text(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    Ok(match ktype(&e, schema)? {
        KType::String | KType::Dynamic => e,
        KType::Null => Expr::Literal(ScalarValue::Utf8(None), None),
        _ => KernelUdf::new("tostring", DataType::Utf8, k_tostring).call(vec![e]),
    })
}

fn k_tostring(c: &Call) -> Result<ArrayRef> {
    let a = c.array(0)?;
    let n = c.rows;
    let t = a.data_type().clone();
    Ok(if is_string(&t) {
        let s = Strs::of_array(&a)?;
        strings(n, |i| s.get(i))
    } else if let Some(b) = a.as_boolean_opt() {
        strings(n, |i| {
            Some(match (i < b.len() && b.is_valid(i)).then(|| b.value(i)) {
                Some(true) => "true",
                Some(false) => "false",
                None => "",
            })
        })
    } else if t.is_integer() {
        let x = arrow_cast(&a, &DataType::Int64)?;
        let x = prim::<Int64Type>(&x)?;
        strings(n, |i| {
            Some(value(x, i).map(|v| v.to_string()).unwrap_or_default())
        })
    } else if is_real(&t) {
        let x = arrow_cast(&a, &DataType::Float64)?;
        let x = prim::<Float64Type>(&x)?;
        strings(n, |i| {
            Some(value(x, i).map(format_real).unwrap_or_default())
        })
    } else if matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    ) {
        let x = arrow_cast(&a, &datetime_type())?;
        let x = prim::<TimestampMicrosecondType>(&x)?;
        strings(n, |i| {
            Some(value(x, i).and_then(format_datetime).unwrap_or_default())
        })
    } else if matches!(t, DataType::Duration(_)) {
        let x = arrow_cast(&a, &TIMESPAN)?;
        let x = prim::<DurationMicrosecondType>(&x)?;
        strings(n, |i| {
            Some(value(x, i).map(format_timespan).unwrap_or_default())
        })
    } else if t == DataType::Null {
        strings(n, |_| Some(""))
    } else {
        arrow_cast(&a, &DataType::Utf8)?
    })
}

/// Kusto `tolong`.
pub fn to_long(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let t = data_type(&e, schema)?;
    Ok(match t {
        DataType::Int64 => e,
        t if t.is_integer() => try_cast(e, DataType::Int64),
        _ => KernelUdf::new("tolong", DataType::Int64, k_tolong).call(vec![e]),
    })
}

/// Kusto `toint`: `tolong`, then null when out of `int`'s range.
pub fn to_int(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let t = data_type(&e, schema)?;
    Ok(match t {
        DataType::Int32 => e,
        t if t.is_integer() => try_cast(e, DataType::Int32),
        _ => KernelUdf::new("toint", DataType::Int32, k_toint).call(vec![e]),
    })
}

/// Kusto `todouble` / `toreal` / `todecimal` (decimal is represented as real).
pub fn to_real(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let t = data_type(&e, schema)?;
    Ok(match t {
        DataType::Float64 => e,
        t if t.is_numeric() => df_cast(e, DataType::Float64),
        _ => KernelUdf::new("todouble", DataType::Float64, k_toreal).call(vec![e]),
    })
}

/// Kusto `tobool`.
pub fn to_bool(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let t = data_type(&e, schema)?;
    Ok(match t {
        DataType::Boolean => e,
        _ => KernelUdf::new("tobool", DataType::Boolean, k_tobool).call(vec![e]),
    })
}

/// Kusto `todatetime`.
pub fn to_datetime(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let t = data_type(&e, schema)?;
    Ok(match t {
        t if t == datetime_type() => e,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            df_cast(e, datetime_type())
        }
        _ => KernelUdf::new("todatetime", datetime_type(), k_todatetime).call(vec![e]),
    })
}

/// Kusto `totimespan`.
pub fn to_timespan(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let t = data_type(&e, schema)?;
    Ok(match t {
        DataType::Duration(TimeUnit::Microsecond) => e,
        DataType::Duration(_) => df_cast(e, TIMESPAN),
        _ => KernelUdf::new("totimespan", TIMESPAN, k_totimespan).call(vec![e]),
    })
}

/// Kusto `todynamic` / `parse_json`: text that is JSON becomes that value, other text stays a
/// (dynamic) string; other types become their JSON value.
pub fn to_dynamic(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    Ok(match ktype(&e, schema)? {
        KType::Dynamic => e,
        _ => KernelUdf::dynamic("todynamic", k_todynamic).call(vec![e]),
    })
}

/// Kusto `toguid`: the canonical lowercase text of a GUID, or null.
pub fn to_guid(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let e = to_text(e, schema)?;
    Ok(KernelUdf::new("toguid", DataType::Utf8, k_toguid).call(vec![e]))
}

/// The cast a `T(expr)`-style conversion or a typed context asks for.
pub fn cast(e: Expr, to: TypeName, schema: &DFSchema) -> Result<Expr, FnError> {
    match to {
        TypeName::Bool => to_bool(e, schema),
        TypeName::Int => to_int(e, schema),
        TypeName::Long => to_long(e, schema),
        TypeName::Real | TypeName::Decimal => to_real(e, schema),
        TypeName::String => to_text(e, schema),
        TypeName::DateTime => to_datetime(e, schema),
        TypeName::TimeSpan => to_timespan(e, schema),
        TypeName::Dynamic => to_dynamic(e, schema),
        TypeName::Guid => to_guid(e, schema),
    }
}

pub fn parse_long(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    real_to_long(parse_real(s)?)
}

pub fn parse_real(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

pub fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        s.parse::<i64>().ok().map(|v| v != 0)
    }
}

fn real_to_long(v: f64) -> Option<i64> {
    let t = v.trunc();
    (t.is_finite() && t >= i64::MIN as f64 && t < i64::MAX as f64).then_some(t as i64)
}

/// A column as `i64`s the way `tolong` reads it: datetimes and timespans as ticks.
fn longs_of(a: &ArrayRef, n: usize) -> Result<Vec<Option<i64>>> {
    let t = a.data_type().clone();
    Ok(if is_string(&t) {
        let s = Strs::of_array(a)?;
        (0..n).map(|i| s.get(i).and_then(parse_long)).collect()
    } else if let Some(b) = a.as_boolean_opt() {
        (0..n)
            .map(|i| (i < b.len() && b.is_valid(i)).then(|| i64::from(b.value(i))))
            .collect()
    } else if t.is_integer() {
        let x = arrow_cast(a, &DataType::Int64)?;
        let x = prim::<Int64Type>(&x)?;
        (0..n).map(|i| value(x, i)).collect()
    } else if is_real(&t) {
        let x = arrow_cast(a, &DataType::Float64)?;
        let x = prim::<Float64Type>(&x)?;
        (0..n).map(|i| value(x, i).and_then(real_to_long)).collect()
    } else if matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    ) {
        let x = arrow_cast(a, &datetime_type())?;
        let x = prim::<TimestampMicrosecondType>(&x)?;
        (0..n)
            .map(|i| value(x, i).and_then(|us| us.checked_mul(10)?.checked_add(EPOCH_TICKS)))
            .collect()
    } else if matches!(t, DataType::Duration(_)) {
        let x = arrow_cast(a, &TIMESPAN)?;
        let x = prim::<DurationMicrosecondType>(&x)?;
        (0..n)
            .map(|i| value(x, i).and_then(|us| us.checked_mul(10)))
            .collect()
    } else {
        vec![None; n]
    })
}

fn k_tolong(c: &Call) -> Result<ArrayRef> {
    let v = longs_of(&c.array(0)?, c.rows)?;
    Ok(prims::<Int64Type>(c.rows, |i| v.get(i).copied().flatten()))
}

fn k_toint(c: &Call) -> Result<ArrayRef> {
    let v = longs_of(&c.array(0)?, c.rows)?;
    Ok(prims::<Int32Type>(c.rows, |i| {
        v.get(i)
            .copied()
            .flatten()
            .and_then(|x| i32::try_from(x).ok())
    }))
}

fn k_toreal(c: &Call) -> Result<ArrayRef> {
    let a = c.array(0)?;
    let t = a.data_type().clone();
    let n = c.rows;
    if is_string(&t) {
        let s = Strs::of_array(&a)?;
        return Ok(prims::<Float64Type>(n, |i| s.get(i).and_then(parse_real)));
    }
    if t.is_numeric() {
        return Ok(arrow_cast(&a, &DataType::Float64)?);
    }
    let v = longs_of(&a, n)?;
    Ok(prims::<Float64Type>(n, |i| {
        v.get(i).copied().flatten().map(|x| x as f64)
    }))
}

fn k_tobool(c: &Call) -> Result<ArrayRef> {
    let a = c.array(0)?;
    let t = a.data_type().clone();
    let n = c.rows;
    if is_string(&t) {
        let s = Strs::of_array(&a)?;
        return Ok(bools(n, |i| s.get(i).and_then(parse_bool)));
    }
    if is_real(&t) {
        let x = arrow_cast(&a, &DataType::Float64)?;
        let x = prim::<Float64Type>(&x)?;
        return Ok(bools(n, |i| value(x, i).map(|v| v != 0.0)));
    }
    if t.is_integer() {
        let v = longs_of(&a, n)?;
        return Ok(bools(n, |i| v.get(i).copied().flatten().map(|x| x != 0)));
    }
    Ok(bools(n, |_| None))
}

fn k_todatetime(c: &Call) -> Result<ArrayRef> {
    let a = c.array(0)?;
    let t = a.data_type().clone();
    if is_string(&t) {
        let s = Strs::of_array(&a)?;
        return Ok(timestamps(c.rows, |i| s.get(i).and_then(parse_datetime)));
    }
    Ok(timestamps(c.rows, |_| None))
}

fn k_totimespan(c: &Call) -> Result<ArrayRef> {
    let a = c.array(0)?;
    let t = a.data_type().clone();
    let n = c.rows;
    if is_string(&t) {
        let s = Strs::of_array(&a)?;
        return Ok(prims::<DurationMicrosecondType>(n, |i| {
            s.get(i).and_then(parse_timespan)
        }));
    }
    if t.is_integer() {
        // A number is ticks (100 ns).
        let v = longs_of(&a, n)?;
        return Ok(prims::<DurationMicrosecondType>(n, |i| {
            v.get(i).copied().flatten().map(|t| t / 10)
        }));
    }
    Ok(prims::<DurationMicrosecondType>(n, |_| None))
}

fn k_todynamic(c: &Call) -> Result<ArrayRef> {
    let a = c.array(0)?;
    if !is_string(a.data_type()) {
        return k_tostring(c);
    }
    let s = Strs::of_array(&a)?;
    Ok(strings(c.rows, |i| {
        s.get(i).and_then(crate::json::parse_to_dynamic)
    }))
}

fn k_toguid(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| s.get(i).and_then(normalize_guid)))
}

fn normalize_guid(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(s);
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let ok = lens == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Some(s.to_ascii_lowercase())
    } else if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        let l = s.to_ascii_lowercase();
        Some(format!(
            "{}-{}-{}-{}-{}",
            l.get(0..8)?,
            l.get(8..12)?,
            l.get(12..16)?,
            l.get(16..20)?,
            l.get(20..32)?
        ))
    } else {
        None
    }
}
