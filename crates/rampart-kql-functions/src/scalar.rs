//! The scalar function table: Kusto name → DataFusion expression (a builtin where DataFusion
//! has the same meaning, a kernel of this crate otherwise).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::functions::expr_fn as f;
use datafusion::logical_expr::{Expr, cast, when};
use rampart_kql_syntax::ast::{TypeName, UnaryOp};

use crate::FnError;
use crate::convert::{
    cast as convert, to_bool, to_datetime, to_dynamic, to_int, to_long, to_real, to_text,
    to_timespan,
};
use crate::types::{KType, TIMESPAN, US_PER_SEC, datetime_type, ktype};
use crate::udf::{Kernel, KernelUdf};
use crate::{datetime as dt, ip, json, ops, strings as st};

/// Every scalar function name [`scalar`] plans.
pub const SCALARS: &[&str] = &[
    // conversion
    "tostring",
    "tolong",
    "toint",
    "todouble",
    "toreal",
    "todecimal",
    "tobool",
    "toboolean",
    "todatetime",
    "totimespan",
    "totime",
    "todynamic",
    "toobject",
    "parse_json",
    "toguid",
    "gettype",
    // strings
    "tolower",
    "toupper",
    "strlen",
    "substring",
    "strcat",
    "strcat_delim",
    "split",
    "extract",
    "extract_all",
    "replace_string",
    "replace_regex",
    "replace",
    "trim",
    "trim_start",
    "trim_end",
    "indexof",
    "countof",
    "base64_encode_tostring",
    "base64_encodestring",
    "base64_decode_tostring",
    "base64_decodestring",
    "url_encode",
    "url_encode_component",
    "url_decode",
    "parse_url",
    "parse_path",
    "parse_command_line",
    "reverse",
    "isascii",
    "string_size",
    "strrep",
    "strcmp",
    "hash_sha256",
    "hash_md5",
    "new_guid",
    // conditionals and nulls
    "iff",
    "iif",
    "case",
    "coalesce",
    "isempty",
    "isnotempty",
    "isnull",
    "isnotnull",
    "not",
    // dynamic
    "array_length",
    "bag_keys",
    "pack",
    "bag_pack",
    "pack_dictionary",
    "pack_array",
    "set_union",
    "set_intersect",
    "set_difference",
    "set_has_element",
    "array_concat",
    "array_slice",
    "array_index_of",
    "array_sort_asc",
    "array_sort_desc",
    "array_reverse",
    "array_sum",
    "zip",
    "strcat_array",
    "bag_has_key",
    "bag_merge",
    "bag_remove_keys",
    // datetime
    "now",
    "ago",
    "datetime_add",
    "datetime_diff",
    "datetime_part",
    "startofday",
    "startofweek",
    "startofmonth",
    "startofyear",
    "endofday",
    "endofweek",
    "endofmonth",
    "endofyear",
    "dayofweek",
    "dayofmonth",
    "dayofyear",
    "hourofday",
    "monthofyear",
    "getmonth",
    "getyear",
    "week_of_year",
    "format_datetime",
    "format_timespan",
    "make_datetime",
    "make_timespan",
    "unixtime_seconds_todatetime",
    "unixtime_milliseconds_todatetime",
    "unixtime_microseconds_todatetime",
    "unixtime_nanoseconds_todatetime",
    "bin",
    "floor",
    "bin_at",
    // math
    "abs",
    "round",
    "ceiling",
    "exp",
    "exp2",
    "exp10",
    "log",
    "log10",
    "log2",
    "pow",
    "sqrt",
    "sign",
    "pi",
    "isnan",
    "isinf",
    "isfinite",
    "rand",
    "min_of",
    "max_of",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "cot",
    "degrees",
    "radians",
    // ip
    "parse_ipv4",
    "ipv4_is_private",
    "ipv4_is_in_range",
    "ipv4_is_in_any_range",
    "ipv4_compare",
    "ipv4_is_match",
    "ipv4_netmask_suffix",
    "format_ipv4",
    "format_ipv4_mask",
    "ipv6_compare",
    "ipv6_is_match",
    "has_ipv4",
];

fn arity_err(expected: &str, found: usize) -> FnError {
    FnError::Arity {
        expected: expected.to_string(),
        found,
    }
}

/// Checks `min..=max` arguments (`max == usize::MAX`: no upper bound).
fn arity(args: &[Expr], min: usize, max: usize) -> Result<(), FnError> {
    if (min..=max).contains(&args.len()) {
        return Ok(());
    }
    Err(arity_err(
        &if max == usize::MAX {
            format!("at least {min}")
        } else if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        },
        args.len(),
    ))
}

/// The arguments as an array of `N`, missing trailing ones filled with `fill`.
fn take<const N: usize>(
    mut args: Vec<Expr>,
    min: usize,
    fill: impl Fn(usize) -> Expr,
) -> Result<[Expr; N], FnError> {
    arity(&args, min, N)?;
    while args.len() < N {
        args.push(fill(args.len()));
    }
    let n = args.len();
    args.try_into().map_err(|_| arity_err(&N.to_string(), n))
}

fn null_long(_: usize) -> Expr {
    Expr::Literal(ScalarValue::Int64(None), None)
}

fn none(_: usize) -> Expr {
    Expr::Literal(ScalarValue::Null, None)
}

fn lit_str(s: &str) -> Expr {
    Expr::Literal(ScalarValue::Utf8(Some(s.to_string())), None)
}

fn k(name: &'static str, ret: DataType, kernel: Kernel, args: Vec<Expr>) -> Expr {
    KernelUdf::new(name, ret, kernel).call(args)
}

fn kd(name: &'static str, kernel: Kernel, args: Vec<Expr>) -> Expr {
    KernelUdf::dynamic(name, kernel).call(args)
}

fn texts(args: Vec<Expr>, schema: &DFSchema) -> Result<Vec<Expr>, FnError> {
    args.into_iter().map(|a| to_text(a, schema)).collect()
}

/// Arguments read as `dynamic` (text stays as it is; other values become their JSON).
fn dynamics(args: Vec<Expr>, schema: &DFSchema) -> Result<Vec<Expr>, FnError> {
    args.into_iter()
        .map(|a| match ktype(&a, schema)? {
            KType::String | KType::Dynamic => Ok(a),
            _ => to_dynamic(a, schema),
        })
        .collect()
}

/// A numeric argument: text (dynamic numbers) is read as real.
fn number(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    match ktype(&e, schema)? {
        KType::String | KType::Dynamic => to_real(e, schema),
        _ => Ok(e),
    }
}

fn real(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    to_real(e, schema)
}

/// `now()` as a Kusto datetime; DataFusion folds it to one constant per query.
fn now() -> Expr {
    cast(f::now(), datetime_type())
}

fn datetime_plus(d: Expr, span: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    ops::binary(rampart_kql_syntax::ast::BinaryOp::Add, d, span, schema)
}

/// Kusto `bin(value, size)` / `bin_at(value, size, at)` for numbers, datetimes and timespans.
fn bin(value: Expr, size: Expr, at: Option<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    let ks = ktype(&size, schema)?;
    let mut kv = ktype(&value, schema)?;
    // Text binned by a timespan is a datetime written as text (a dynamic member, say).
    let value = if kv.is_text() && ks == KType::TimeSpan {
        kv = KType::DateTime;
        to_datetime(value, schema)?
    } else {
        value
    };
    let long = |e: Expr| cast(e, DataType::Int64);
    match kv {
        KType::DateTime | KType::TimeSpan => {
            if ks != KType::TimeSpan {
                return Err(FnError::Type(
                    "bin of a datetime or timespan takes a timespan size".into(),
                ));
            }
            let (v, out) = if kv == KType::DateTime {
                (to_datetime(value, schema)?, datetime_type())
            } else {
                (to_timespan(value, schema)?, TIMESPAN)
            };
            let at = match at {
                Some(a) if kv == KType::DateTime => long(to_datetime(a, schema)?),
                Some(a) => long(to_timespan(a, schema)?),
                None => Expr::Literal(ScalarValue::Int64(Some(0)), None),
            };
            let b = k(
                "bin",
                DataType::Int64,
                dt::k_bin_long,
                vec![long(v), long(to_timespan(size, schema)?), at],
            );
            Ok(cast(b, out))
        }
        KType::Int | KType::Long
            if ks.is_integer()
                && at
                    .as_ref()
                    .is_none_or(|a| ktype(a, schema).is_ok_and(KType::is_integer)) =>
        {
            let at = at.map_or(Expr::Literal(ScalarValue::Int64(Some(0)), None), long);
            Ok(k(
                "bin",
                DataType::Int64,
                dt::k_bin_long,
                vec![long(value), long(size), at],
            ))
        }
        KType::Int | KType::Long | KType::Real | KType::String | KType::Dynamic | KType::Null => {
            let at = match at {
                Some(a) => real(a, schema)?,
                None => Expr::Literal(ScalarValue::Float64(Some(0.0)), None),
            };
            Ok(k(
                "bin",
                DataType::Float64,
                dt::k_bin_real,
                vec![real(value, schema)?, real(size, schema)?, at],
            ))
        }
        _ => Err(FnError::Type(
            "bin takes a number, a datetime or a timespan".into(),
        )),
    }
}

fn type_name(k: KType) -> &'static str {
    match k {
        KType::Bool => "bool",
        KType::Int => "int",
        KType::Long => "long",
        KType::Real => "real",
        KType::String => "string",
        KType::DateTime => "datetime",
        KType::TimeSpan => "timespan",
        KType::Null | KType::Dynamic | KType::Other => "null",
    }
}

/// A scalar function call.
pub fn scalar(name: &str, args: Vec<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    let s = schema;
    let n = args.len();
    Ok(match name {
        // ---- conversion
        "tostring" => {
            let [x] = take(args, 1, none)?;
            to_text(x, s)?
        }
        "tolong" => {
            let [x] = take(args, 1, none)?;
            to_long(x, s)?
        }
        "toint" => {
            let [x] = take(args, 1, none)?;
            to_int(x, s)?
        }
        "todouble" | "toreal" | "todecimal" => {
            let [x] = take(args, 1, none)?;
            to_real(x, s)?
        }
        "tobool" | "toboolean" => {
            let [x] = take(args, 1, none)?;
            to_bool(x, s)?
        }
        "todatetime" => {
            let [x] = take(args, 1, none)?;
            to_datetime(x, s)?
        }
        "totimespan" | "totime" => {
            let [x] = take(args, 1, none)?;
            to_timespan(x, s)?
        }
        "todynamic" | "toobject" | "parse_json" => {
            let [x] = take(args, 1, none)?;
            to_dynamic(x, s)?
        }
        "toguid" => {
            let [x] = take(args, 1, none)?;
            convert(x, TypeName::Guid, s)?
        }
        "gettype" => {
            let [x] = take(args, 1, none)?;
            match ktype(&x, s)? {
                KType::Dynamic => k("gettype", DataType::Utf8, json::k_gettype_dynamic, vec![x]),
                t => lit_str(type_name(t)),
            }
        }

        // ---- strings
        "tolower" => {
            let [x] = take(args, 1, none)?;
            f::lower(to_text(x, s)?)
        }
        "toupper" => {
            let [x] = take(args, 1, none)?;
            f::upper(to_text(x, s)?)
        }
        "strlen" => {
            let [x] = take(args, 1, none)?;
            cast(f::character_length(to_text(x, s)?), DataType::Int64)
        }
        "substring" => {
            let [x, start, len] = take(args, 2, null_long)?;
            k(
                "substring",
                DataType::Utf8,
                st::k_substring,
                vec![to_text(x, s)?, to_long(start, s)?, to_long(len, s)?],
            )
        }
        "strcat" => {
            arity(&args, 1, usize::MAX)?;
            f::concat(texts(args, s)?)
        }
        "strcat_delim" => {
            arity(&args, 2, usize::MAX)?;
            let mut it = texts(args, s)?.into_iter();
            let delim = it.next().ok_or_else(|| arity_err("at least 2", n))?;
            // Kusto keeps empty values between delimiters; concat_ws would skip nulls.
            let values = it.map(|v| f::coalesce(vec![v, lit_str("")])).collect();
            f::concat_ws(delim, values)
        }
        "split" => {
            arity(&args, 2, 3)?;
            let mut a = texts(args.iter().take(2).cloned().collect(), s)?;
            if let Some(ix) = args.get(2) {
                a.push(to_long(ix.clone(), s)?);
            }
            kd("split", st::k_split, a)
        }
        "extract" => {
            arity(&args, 3, 4)?;
            let mut it = args.into_iter();
            let (Some(re), Some(group), Some(text)) = (it.next(), it.next(), it.next()) else {
                return Err(arity_err("3 to 4", n));
            };
            let e = k(
                "extract",
                DataType::Utf8,
                st::k_extract,
                vec![to_text(re, s)?, to_long(group, s)?, to_text(text, s)?],
            );
            match it.next() {
                None => e,
                Some(Expr::Literal(ScalarValue::Utf8(Some(t)), _)) => {
                    let t = TypeName::from_name(&t)
                        .ok_or_else(|| FnError::Type(format!("unknown type {t}")))?;
                    convert(e, t, s)?
                }
                Some(_) => return Err(FnError::Type("extract's type must be a type name".into())),
            }
        }
        "extract_all" => {
            let [re, text] = take(args, 2, none)?;
            kd(
                "extract_all",
                st::k_extract_all,
                vec![to_text(re, s)?, to_text(text, s)?],
            )
        }
        "replace_string" => {
            let [x, from, to] = take(args, 3, none)?;
            k(
                "replace_string",
                DataType::Utf8,
                st::k_replace_string,
                texts(vec![x, from, to], s)?,
            )
        }
        "replace_regex" => {
            let [x, re, to] = take(args, 3, none)?;
            k(
                "replace_regex",
                DataType::Utf8,
                st::k_replace_regex,
                texts(vec![x, re, to], s)?,
            )
        }
        "replace" => {
            let [re, to, x] = take(args, 3, none)?;
            k(
                "replace_regex",
                DataType::Utf8,
                st::k_replace_regex,
                texts(vec![x, re, to], s)?,
            )
        }
        "trim" | "trim_start" | "trim_end" => {
            let [re, x] = take(args, 2, none)?;
            let kernel: Kernel = match name {
                "trim" => st::k_trim,
                "trim_start" => st::k_trim_start,
                _ => st::k_trim_end,
            };
            let fname = match name {
                "trim" => "trim",
                "trim_start" => "trim_start",
                _ => "trim_end",
            };
            k(fname, DataType::Utf8, kernel, texts(vec![re, x], s)?)
        }
        "indexof" => {
            let [x, look, start, len, occ] = take(args, 2, null_long)?;
            k(
                "indexof",
                DataType::Int64,
                st::k_indexof,
                vec![
                    to_text(x, s)?,
                    to_text(look, s)?,
                    to_long(start, s)?,
                    to_long(len, s)?,
                    to_long(occ, s)?,
                ],
            )
        }
        "countof" => {
            let [x, look, kind] = take(args, 2, |_| lit_str("normal"))?;
            k(
                "countof",
                DataType::Int64,
                st::k_countof,
                texts(vec![x, look, kind], s)?,
            )
        }
        "base64_encode_tostring" | "base64_encodestring" => {
            let [x] = take(args, 1, none)?;
            k(
                "base64_encode_tostring",
                DataType::Utf8,
                st::k_base64_encode,
                vec![to_text(x, s)?],
            )
        }
        "base64_decode_tostring" | "base64_decodestring" => {
            let [x] = take(args, 1, none)?;
            k(
                "base64_decode_tostring",
                DataType::Utf8,
                st::k_base64_decode,
                vec![to_text(x, s)?],
            )
        }
        "url_encode" => {
            let [x] = take(args, 1, none)?;
            k(
                "url_encode",
                DataType::Utf8,
                st::k_url_encode,
                vec![to_text(x, s)?],
            )
        }
        "url_encode_component" => {
            let [x] = take(args, 1, none)?;
            k(
                "url_encode_component",
                DataType::Utf8,
                st::k_url_encode_component,
                vec![to_text(x, s)?],
            )
        }
        "url_decode" => {
            let [x] = take(args, 1, none)?;
            k(
                "url_decode",
                DataType::Utf8,
                st::k_url_decode,
                vec![to_text(x, s)?],
            )
        }
        "parse_url" => {
            let [x] = take(args, 1, none)?;
            kd("parse_url", st::k_parse_url, vec![to_text(x, s)?])
        }
        "parse_path" => {
            let [x] = take(args, 1, none)?;
            kd("parse_path", st::k_parse_path, vec![to_text(x, s)?])
        }
        "parse_command_line" => {
            let [x, kind] = take(args, 2, none)?;
            kd(
                "parse_command_line",
                st::k_parse_command_line,
                texts(vec![x, kind], s)?,
            )
        }
        "reverse" => {
            let [x] = take(args, 1, none)?;
            k(
                "reverse",
                DataType::Utf8,
                st::k_reverse,
                vec![to_text(x, s)?],
            )
        }
        "isascii" => {
            let [x] = take(args, 1, none)?;
            KernelUdf::new("isascii", DataType::Boolean, st::k_isascii)
                .total()
                .call(vec![to_text(x, s)?])
        }
        "string_size" => {
            let [x] = take(args, 1, none)?;
            k(
                "string_size",
                DataType::Int64,
                st::k_string_size,
                vec![to_text(x, s)?],
            )
        }
        "strrep" => {
            let [x, times, delim] = take(args, 2, |_| lit_str(""))?;
            k(
                "strrep",
                DataType::Utf8,
                st::k_strrep,
                vec![to_text(x, s)?, to_long(times, s)?, to_text(delim, s)?],
            )
        }
        "strcmp" => {
            let [a, b] = take(args, 2, none)?;
            k(
                "strcmp",
                DataType::Int64,
                st::k_strcmp,
                texts(vec![a, b], s)?,
            )
        }
        "hash_sha256" => {
            let [x] = take(args, 1, none)?;
            f::encode(f::sha256(to_text(x, s)?), lit_str("hex"))
        }
        "hash_md5" => {
            let [x] = take(args, 1, none)?;
            f::md5(to_text(x, s)?)
        }
        "new_guid" => {
            arity(&args, 0, 0)?;
            f::uuid()
        }

        // ---- conditionals and nulls
        "iff" | "iif" => {
            let [c, a, b] = take(args, 3, none)?;
            when(ops::as_bool(c, s)?, a)
                .otherwise(b)
                .map_err(|e| FnError::Type(e.to_string()))?
        }
        "case" => {
            if n < 3 || n.is_multiple_of(2) {
                return Err(arity_err("an odd number, at least 3", n));
            }
            let mut it = args.into_iter();
            let mut branches = Vec::new();
            let mut otherwise = None;
            while let Some(first) = it.next() {
                match it.next() {
                    Some(value) => branches.push((ops::as_bool(first, s)?, value)),
                    None => otherwise = Some(first),
                }
            }
            let mut b = branches.into_iter();
            let (c0, v0) = b.next().ok_or_else(|| arity_err("at least 3", n))?;
            let mut builder = when(c0, v0);
            for (c, v) in b {
                builder = builder.when(c, v);
            }
            builder
                .otherwise(otherwise.ok_or_else(|| arity_err("an odd number", n))?)
                .map_err(|e| FnError::Type(e.to_string()))?
        }
        "coalesce" => {
            arity(&args, 1, usize::MAX)?;
            let all_text = args
                .iter()
                .all(|a| ktype(a, s).is_ok_and(|t| t.is_text() || t == KType::Null));
            if all_text {
                // Kusto skips empty strings as well as nulls.
                f::coalesce(
                    args.into_iter()
                        .map(|a| f::nullif(a, lit_str("")))
                        .collect(),
                )
            } else {
                f::coalesce(args)
            }
        }
        "isempty" | "isnotempty" => {
            let [x] = take(args, 1, none)?;
            let empty = match ktype(&x, s)? {
                KType::String | KType::Dynamic => x.clone().is_null().or(x.eq(lit_str(""))),
                _ => x.is_null(),
            };
            if name == "isempty" {
                empty
            } else {
                Expr::Not(Box::new(empty))
            }
        }
        "isnull" | "isnotnull" => {
            let [x] = take(args, 1, none)?;
            // A Kusto string is never null (a missing one is "").
            let null = match ktype(&x, s)? {
                KType::String => Expr::Literal(ScalarValue::Boolean(Some(false)), None),
                _ => x.is_null(),
            };
            if name == "isnull" {
                null
            } else {
                Expr::Not(Box::new(null))
            }
        }
        "not" => {
            let [x] = take(args, 1, none)?;
            ops::unary(UnaryOp::Not, x, s)?
        }

        // ---- dynamic
        "array_length" => {
            let [x] = take(args, 1, none)?;
            k(
                "array_length",
                DataType::Int64,
                json::k_array_length,
                dynamics(vec![x], s)?,
            )
        }
        "bag_keys" => {
            let [x] = take(args, 1, none)?;
            kd("bag_keys", json::k_bag_keys, dynamics(vec![x], s)?)
        }
        "pack" | "bag_pack" | "pack_dictionary" => {
            if !n.is_multiple_of(2) {
                return Err(arity_err("an even number", n));
            }
            if n == 0 {
                crate::types::dynamic_literal(Some("{}".into()))
            } else {
                let mut a = Vec::with_capacity(n);
                for (i, e) in args.into_iter().enumerate() {
                    a.push(if i % 2 == 0 { to_text(e, s)? } else { e });
                }
                kd("bag_pack", json::k_pack, a)
            }
        }
        "pack_array" => {
            if n == 0 {
                crate::types::dynamic_literal(Some("[]".into()))
            } else {
                kd("pack_array", json::k_pack_array, args)
            }
        }
        "set_union" | "set_intersect" | "set_difference" | "array_concat" | "zip" | "bag_merge" => {
            let min = if name == "array_concat" { 1 } else { 2 };
            arity(&args, min, usize::MAX)?;
            let (fname, kernel): (&'static str, Kernel) = match name {
                "set_union" => ("set_union", json::k_set_union),
                "set_intersect" => ("set_intersect", json::k_set_intersect),
                "set_difference" => ("set_difference", json::k_set_difference),
                "array_concat" => ("array_concat", json::k_array_concat),
                "zip" => ("zip", json::k_zip),
                _ => ("bag_merge", json::k_bag_merge),
            };
            kd(fname, kernel, dynamics(args, s)?)
        }
        "set_has_element" => {
            let [arr, v] = take(args, 2, none)?;
            let mut a = dynamics(vec![arr], s)?;
            a.push(v);
            KernelUdf::new(
                "set_has_element",
                DataType::Boolean,
                json::k_set_has_element,
            )
            .total()
            .call(a)
        }
        "array_index_of" => {
            let [arr, v] = take(args, 2, none)?;
            let mut a = dynamics(vec![arr], s)?;
            a.push(v);
            k("array_index_of", DataType::Int64, json::k_array_index_of, a)
        }
        "array_slice" => {
            let [arr, start, end] = take(args, 3, none)?;
            let mut a = dynamics(vec![arr], s)?;
            a.push(to_long(start, s)?);
            a.push(to_long(end, s)?);
            kd("array_slice", json::k_array_slice, a)
        }
        "array_sort_asc" | "array_sort_desc" | "array_reverse" => {
            let [arr] = take(args, 1, none)?;
            let (fname, kernel): (&'static str, Kernel) = match name {
                "array_sort_asc" => ("array_sort_asc", json::k_array_sort_asc),
                "array_sort_desc" => ("array_sort_desc", json::k_array_sort_desc),
                _ => ("array_reverse", json::k_array_reverse),
            };
            kd(fname, kernel, dynamics(vec![arr], s)?)
        }
        "array_sum" => {
            let [arr] = take(args, 1, none)?;
            k(
                "array_sum",
                DataType::Float64,
                json::k_array_sum,
                dynamics(vec![arr], s)?,
            )
        }
        "strcat_array" => {
            let [arr, delim] = take(args, 2, none)?;
            let mut a = dynamics(vec![arr], s)?;
            a.push(to_text(delim, s)?);
            k("strcat_array", DataType::Utf8, json::k_strcat_array, a)
        }
        "bag_has_key" => {
            let [bag, key] = take(args, 2, none)?;
            let mut a = dynamics(vec![bag], s)?;
            a.push(to_text(key, s)?);
            KernelUdf::new("bag_has_key", DataType::Boolean, json::k_bag_has_key)
                .total()
                .call(a)
        }
        "bag_remove_keys" => {
            let [bag, keys] = take(args, 2, none)?;
            kd(
                "bag_remove_keys",
                json::k_bag_remove_keys,
                dynamics(vec![bag, keys], s)?,
            )
        }

        // ---- datetime
        "now" => {
            let [offset] = take(args, 0, none)?;
            match offset {
                Expr::Literal(ScalarValue::Null, _) => now(),
                o => datetime_plus(now(), to_timespan(o, s)?, s)?,
            }
        }
        "ago" => {
            let [span] = take(args, 1, none)?;
            ops::binary(
                rampart_kql_syntax::ast::BinaryOp::Sub,
                now(),
                to_timespan(span, s)?,
                s,
            )?
        }
        "datetime_add" => {
            let [part, amount, d] = take(args, 3, none)?;
            k(
                "datetime_add",
                datetime_type(),
                dt::k_datetime_add,
                vec![to_text(part, s)?, to_long(amount, s)?, to_datetime(d, s)?],
            )
        }
        "datetime_diff" => {
            let [part, a, b] = take(args, 3, none)?;
            k(
                "datetime_diff",
                DataType::Int64,
                dt::k_datetime_diff,
                vec![to_text(part, s)?, to_datetime(a, s)?, to_datetime(b, s)?],
            )
        }
        "datetime_part" => {
            let [part, d] = take(args, 2, none)?;
            k(
                "datetime_part",
                DataType::Int32,
                dt::k_datetime_part,
                vec![to_text(part, s)?, to_datetime(d, s)?],
            )
        }
        "startofday" | "startofweek" | "startofmonth" | "startofyear" | "endofday"
        | "endofweek" | "endofmonth" | "endofyear" => {
            let [d, offset] = take(args, 1, null_long)?;
            let (fname, kernel): (&'static str, Kernel) = match name {
                "startofday" => ("startofday", dt::k_startofday),
                "startofweek" => ("startofweek", dt::k_startofweek),
                "startofmonth" => ("startofmonth", dt::k_startofmonth),
                "startofyear" => ("startofyear", dt::k_startofyear),
                "endofday" => ("endofday", dt::k_endofday),
                "endofweek" => ("endofweek", dt::k_endofweek),
                "endofmonth" => ("endofmonth", dt::k_endofmonth),
                _ => ("endofyear", dt::k_endofyear),
            };
            k(
                fname,
                datetime_type(),
                kernel,
                vec![to_datetime(d, s)?, to_long(offset, s)?],
            )
        }
        "dayofweek" => {
            let [d] = take(args, 1, none)?;
            k(
                "dayofweek",
                TIMESPAN,
                dt::k_dayofweek,
                vec![to_datetime(d, s)?],
            )
        }
        "dayofmonth" | "dayofyear" | "hourofday" | "monthofyear" | "getmonth" | "getyear"
        | "week_of_year" => {
            let [d] = take(args, 1, none)?;
            let (fname, kernel): (&'static str, Kernel) = match name {
                "dayofmonth" => ("dayofmonth", dt::k_dayofmonth),
                "dayofyear" => ("dayofyear", dt::k_dayofyear),
                "hourofday" => ("hourofday", dt::k_hourofday),
                "monthofyear" | "getmonth" => ("getmonth", dt::k_getmonth),
                "getyear" => ("getyear", dt::k_getyear),
                _ => ("week_of_year", dt::k_week_of_year),
            };
            k(fname, DataType::Int32, kernel, vec![to_datetime(d, s)?])
        }
        "format_datetime" => {
            let [d, fmt] = take(args, 2, none)?;
            k(
                "format_datetime",
                DataType::Utf8,
                dt::k_format_datetime,
                vec![to_datetime(d, s)?, to_text(fmt, s)?],
            )
        }
        "format_timespan" => {
            let [t, fmt] = take(args, 2, none)?;
            k(
                "format_timespan",
                DataType::Utf8,
                dt::k_format_timespan,
                vec![to_timespan(t, s)?, to_text(fmt, s)?],
            )
        }
        "make_datetime" => {
            arity(&args, 3, 6)?;
            let mut a = Vec::with_capacity(6);
            for (i, e) in args.into_iter().enumerate() {
                a.push(if i < 5 { to_long(e, s)? } else { real(e, s)? });
            }
            while a.len() < 5 {
                a.push(null_long(0));
            }
            if a.len() < 6 {
                a.push(Expr::Literal(ScalarValue::Float64(None), None));
            }
            k("make_datetime", datetime_type(), dt::k_make_datetime, a)
        }
        "make_timespan" => {
            arity(&args, 2, 4)?;
            let zero = || Expr::Literal(ScalarValue::Int64(Some(0)), None);
            let mut a: Vec<Expr> = args;
            // (h, m), (h, m, s) or (d, h, m, s) → (d, h, m, s)
            if a.len() == 2 {
                a.push(Expr::Literal(ScalarValue::Float64(Some(0.0)), None));
            }
            if a.len() == 3 {
                a.insert(0, zero());
            }
            let mut it = a.into_iter();
            let (Some(d), Some(h), Some(m), Some(sec)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(arity_err("2 to 4", n));
            };
            k(
                "make_timespan",
                TIMESPAN,
                dt::k_make_timespan,
                vec![
                    to_long(d, s)?,
                    to_long(h, s)?,
                    to_long(m, s)?,
                    real(sec, s)?,
                ],
            )
        }
        "unixtime_seconds_todatetime"
        | "unixtime_milliseconds_todatetime"
        | "unixtime_microseconds_todatetime"
        | "unixtime_nanoseconds_todatetime" => {
            let [x] = take(args, 1, none)?;
            let unit = match name {
                "unixtime_seconds_todatetime" => US_PER_SEC as f64,
                "unixtime_milliseconds_todatetime" => 1_000.0,
                "unixtime_microseconds_todatetime" => 1.0,
                _ => 0.001,
            };
            let unit = Expr::Literal(ScalarValue::Float64(Some(unit)), None);
            k(
                "unixtime_todatetime",
                datetime_type(),
                dt::k_unixtime,
                vec![real(x, s)?, unit],
            )
        }
        "bin" | "floor" => {
            let [v, size] = take(args, 2, none)?;
            bin(v, size, None, s)?
        }
        "bin_at" => {
            let [v, size, at] = take(args, 3, none)?;
            bin(v, size, Some(at), s)?
        }

        // ---- math
        "abs" => {
            let [x] = take(args, 1, none)?;
            match ktype(&x, s)? {
                KType::TimeSpan => {
                    cast(f::abs(cast(to_timespan(x, s)?, DataType::Int64)), TIMESPAN)
                }
                _ => f::abs(number(x, s)?),
            }
        }
        "round" => {
            let [x, digits] = take(args, 1, |_| {
                Expr::Literal(ScalarValue::Int64(Some(0)), None)
            })?;
            f::round(vec![real(x, s)?, to_long(digits, s)?])
        }
        "ceiling" => {
            let [x] = take(args, 1, none)?;
            f::ceil(real(x, s)?)
        }
        "exp" | "exp2" | "exp10" => {
            let [x] = take(args, 1, none)?;
            let x = real(x, s)?;
            match name {
                "exp" => f::exp(x),
                "exp2" => k(
                    "pow",
                    DataType::Float64,
                    crate::math::k_pow,
                    vec![Expr::Literal(ScalarValue::Float64(Some(2.0)), None), x],
                ),
                _ => k(
                    "pow",
                    DataType::Float64,
                    crate::math::k_pow,
                    vec![Expr::Literal(ScalarValue::Float64(Some(10.0)), None), x],
                ),
            }
        }
        "log" | "log10" | "log2" | "sqrt" | "sin" | "cos" | "tan" | "asin" | "acos" | "atan"
        | "cot" | "degrees" | "radians" => {
            let [x] = take(args, 1, none)?;
            let x = real(x, s)?;
            match name {
                "log" => f::ln(x),
                "log10" => f::log10(x),
                "log2" => f::log2(x),
                "sqrt" => k("sqrt", DataType::Float64, crate::math::k_sqrt, vec![x]),
                "sin" => f::sin(x),
                "cos" => f::cos(x),
                "tan" => f::tan(x),
                "asin" => f::asin(x),
                "acos" => f::acos(x),
                "atan" => f::atan(x),
                "cot" => f::cot(x),
                "degrees" => f::degrees(x),
                _ => f::radians(x),
            }
        }
        "atan2" => {
            let [y, x] = take(args, 2, none)?;
            f::atan2(real(y, s)?, real(x, s)?)
        }
        "pow" => {
            let [b, e] = take(args, 2, none)?;
            k(
                "pow",
                DataType::Float64,
                crate::math::k_pow,
                vec![real(b, s)?, real(e, s)?],
            )
        }
        "sign" => {
            let [x] = take(args, 1, none)?;
            f::signum(real(x, s)?)
        }
        "pi" => {
            arity(&args, 0, 0)?;
            f::pi()
        }
        "isnan" | "isinf" | "isfinite" => {
            let [x] = take(args, 1, none)?;
            let x = real(x, s)?;
            let inf = Expr::Literal(ScalarValue::Float64(Some(f64::INFINITY)), None);
            let is_inf = f::abs(x.clone()).eq(inf);
            match name {
                "isnan" => f::isnan(x),
                "isinf" => is_inf,
                _ => Expr::Not(Box::new(f::isnan(x))).and(Expr::Not(Box::new(is_inf))),
            }
        }
        "rand" => {
            arity(&args, 0, 1)?;
            match args.into_iter().next() {
                None => f::random(),
                Some(range) => cast(f::floor(f::random() * real(range, s)?), DataType::Int64),
            }
        }
        "min_of" | "max_of" => {
            arity(&args, 1, usize::MAX)?;
            if name == "min_of" {
                f::least(args)
            } else {
                f::greatest(args)
            }
        }

        // ---- ip
        "parse_ipv4" | "ipv4_netmask_suffix" => {
            let [x] = take(args, 1, none)?;
            let kernel: Kernel = if name == "parse_ipv4" {
                ip::k_parse_ipv4
            } else {
                ip::k_ipv4_netmask_suffix
            };
            let fname = if name == "parse_ipv4" {
                "parse_ipv4"
            } else {
                "ipv4_netmask_suffix"
            };
            k(fname, DataType::Int64, kernel, vec![to_text(x, s)?])
        }
        "ipv4_is_private" => {
            let [x] = take(args, 1, none)?;
            k(
                "ipv4_is_private",
                DataType::Boolean,
                ip::k_ipv4_is_private,
                vec![to_text(x, s)?],
            )
        }
        "ipv4_is_in_range" => {
            let [x, r] = take(args, 2, none)?;
            k(
                "ipv4_is_in_range",
                DataType::Boolean,
                ip::k_ipv4_is_in_range,
                texts(vec![x, r], s)?,
            )
        }
        "ipv4_is_in_any_range" => {
            arity(&args, 2, usize::MAX)?;
            k(
                "ipv4_is_in_any_range",
                DataType::Boolean,
                ip::k_ipv4_is_in_any_range,
                texts(json_items(args), s)?,
            )
        }
        "ipv4_compare" | "ipv4_is_match" | "ipv6_compare" | "ipv6_is_match" => {
            let [a, b, p] = take(args, 2, null_long)?;
            let a = vec![to_text(a, s)?, to_text(b, s)?, to_long(p, s)?];
            match name {
                "ipv4_compare" => k("ipv4_compare", DataType::Int64, ip::k_ipv4_compare, a),
                "ipv4_is_match" => k("ipv4_is_match", DataType::Boolean, ip::k_ipv4_is_match, a),
                "ipv6_compare" => k("ipv6_compare", DataType::Int64, ip::k_ipv6_compare, a),
                _ => k("ipv6_is_match", DataType::Boolean, ip::k_ipv6_is_match, a),
            }
        }
        "format_ipv4" | "format_ipv4_mask" => {
            let [x, p] = take(args, 1, null_long)?;
            let a = vec![to_text(x, s)?, to_long(p, s)?];
            if name == "format_ipv4" {
                k("format_ipv4", DataType::Utf8, ip::k_format_ipv4, a)
            } else {
                k(
                    "format_ipv4_mask",
                    DataType::Utf8,
                    ip::k_format_ipv4_mask,
                    a,
                )
            }
        }
        "has_ipv4" => {
            let [x, a] = take(args, 2, none)?;
            k(
                "has_ipv4",
                DataType::Boolean,
                ip::k_has_ipv4,
                texts(vec![x, a], s)?,
            )
        }

        _ if crate::aggregate::is_aggregate(name) => {
            return Err(FnError::Type(format!(
                "{name}() is an aggregation: use it in summarize"
            )));
        }
        _ => return Err(crate::refusal(name)),
    })
}

/// Literal dynamic arrays among the arguments become their elements (range lists).
fn json_items(args: Vec<Expr>) -> Vec<Expr> {
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        match json::literal_array_items(&a) {
            Some(items) => out.extend(items),
            None => out.push(a),
        }
    }
    out
}
