//! Kusto's operators: comparison (with Kusto's null rules), arithmetic (with datetime and
//! timespan rules), logic, `between`, `in`, and dynamic member/index access.
//!
//! Null rules (Kusto's documented ones): `null == x` is false and `null != x` true when `x` is
//! not null; two nulls compare null; ordering comparisons with a null are null. Strings are
//! never null in Kusto, so a null string compares as `""`. To keep these exact, an equality on
//! nullable operands is wrapped in `coalesce(x, false)` / `coalesce(x, true)` (not `IS TRUE`:
//! DataFusion 55 plans that as a nullable physical expression under a non-nullable logical
//! field, which fails when projected); [`filter_predicate`] removes the `false` wrappers where
//! only truth matters (a `where`), so DataFusion can still prune with the plain comparisons.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::functions::expr_fn::{coalesce, nullif};
use datafusion::logical_expr::{Expr, cast, try_cast, when};
use rampart_kql_syntax::ast::{BinaryOp, StrOp, StrOpKind, UnaryOp};

use crate::FnError;
use crate::convert::{to_bool, to_datetime, to_long, to_real, to_timespan};
use crate::json::path;
use crate::strops::{self, Mode};
use crate::types::{KType, TIMESPAN, datetime_type, ktype, nullable};

fn lit_bool(b: bool) -> Expr {
    Expr::Literal(ScalarValue::Boolean(Some(b)), None)
}

/// `x`, with null read as false.
pub(crate) fn null_false(x: Expr) -> Expr {
    coalesce(vec![x, lit_bool(false)])
}

/// `x`, with null read as true.
fn null_true(x: Expr) -> Expr {
    coalesce(vec![x, lit_bool(true)])
}

fn lit_str(s: &str) -> Expr {
    Expr::Literal(ScalarValue::Utf8(Some(s.to_string())), None)
}

fn type_err(what: &str, l: KType, r: KType) -> FnError {
    FnError::Type(format!(
        "cannot apply {what} to {} and {}",
        name(l),
        name(r)
    ))
}

fn name(t: KType) -> &'static str {
    match t {
        KType::Null => "null",
        KType::Bool => "bool",
        KType::Int => "int",
        KType::Long => "long",
        KType::Real => "real",
        KType::String => "string",
        KType::Dynamic => "dynamic",
        KType::DateTime => "datetime",
        KType::TimeSpan => "timespan",
        KType::Other => "an unsupported type",
    }
}

/// A Kusto binary operator.
pub fn binary(op: BinaryOp, left: Expr, right: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    match op {
        BinaryOp::And => Ok(as_bool(left, schema)?.and(as_bool(right, schema)?)),
        BinaryOp::Or => Ok(as_bool(left, schema)?.or(as_bool(right, schema)?)),
        BinaryOp::Eq
        | BinaryOp::NotEq
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge => comparison(op, left, right, schema),
        BinaryOp::EqCi => strops::compare(Mode::Equals, false, false, left, right, schema),
        BinaryOp::NotEqCi => strops::compare(Mode::Equals, false, true, left, right, schema),
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => {
            arithmetic(op, left, right, schema)
        }
        BinaryOp::Str(s) => strops::string_op(s, left, right, schema),
    }
}

/// A value used as a condition: booleans as they are, dynamic/string text and numbers
/// converted as `tobool` does.
pub fn as_bool(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    match ktype(&e, schema)? {
        KType::Bool => Ok(e),
        KType::Null => Ok(cast(e, DataType::Boolean)),
        KType::String | KType::Dynamic | KType::Int | KType::Long | KType::Real => {
            to_bool(e, schema)
        }
        t => Err(FnError::Type(format!("a {} is not a condition", name(t)))),
    }
}

/// Brings two operands of a comparison to comparable types: text against a number, a
/// datetime, a timespan or a bool is converted to that type (null when it does not convert).
fn coerce(l: Expr, r: Expr, what: &str, schema: &DFSchema) -> Result<(Expr, Expr, KType), FnError> {
    let (kl, kr) = (ktype(&l, schema)?, ktype(&r, schema)?);
    use KType::*;
    Ok(match (kl, kr) {
        (String | Dynamic, String | Dynamic)
        | (String | Dynamic, Null)
        | (Null, String | Dynamic) => (l, r, String),
        (String | Dynamic, Int | Long | Real) => {
            (to_real(l, schema)?, cast(r, DataType::Float64), Real)
        }
        (Int | Long | Real, String | Dynamic) => {
            (cast(l, DataType::Float64), to_real(r, schema)?, Real)
        }
        (String | Dynamic | DateTime, DateTime) | (DateTime, String | Dynamic) => {
            (to_datetime(l, schema)?, to_datetime(r, schema)?, DateTime)
        }
        (String | Dynamic | TimeSpan, TimeSpan) | (TimeSpan, String | Dynamic) => {
            (to_timespan(l, schema)?, to_timespan(r, schema)?, TimeSpan)
        }
        (String | Dynamic, Bool) => (to_bool(l, schema)?, r, Bool),
        (Bool, String | Dynamic) => (l, to_bool(r, schema)?, Bool),
        // Kusto compares bools with numbers as 1 and 0 (`where IsLocalAdmin == 1`).
        (Bool, Int | Long | Real) => (cast(l, DataType::Int64), r, Long),
        (Int | Long | Real, Bool) => (l, cast(r, DataType::Int64), Long),
        (Int | Long | Real, Int | Long | Real) => (l, r, Real),
        (a, b) if a == b || a == Null || b == Null => (l, r, if a == Null { b } else { a }),
        (a, b) => return Err(type_err(what, a, b)),
    })
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

fn comparison(op: BinaryOp, l: Expr, r: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let (l, r, kind) = coerce(l, r, "a comparison", schema)?;
    let (ln, rn) = (nullable(&l, schema), nullable(&r, schema));
    let eq = op == BinaryOp::Eq;
    if kind == KType::String {
        return Ok(match op {
            BinaryOp::Eq | BinaryOp::NotEq => {
                let (col, lit, col_nullable) = match (string_literal(&l), string_literal(&r)) {
                    (_, Some(s)) => (l.clone(), s.to_string(), ln),
                    (Some(s), None) => (r.clone(), s.to_string(), rn),
                    (None, None) => {
                        let (l, r) = (text_or_empty(l, ln), text_or_empty(r, rn));
                        return Ok(if eq { l.eq(r) } else { l.not_eq(r) });
                    }
                };
                let c = if eq {
                    col.clone().eq(lit_str(&lit))
                } else {
                    col.clone().not_eq(lit_str(&lit))
                };
                if !col_nullable {
                    c
                } else if eq != lit.is_empty() {
                    // `x == "a"` / `x != ""`: a null x (read as "") makes it false.
                    null_false(c)
                } else {
                    // `x != "a"` / `x == ""`: a null x makes it true.
                    null_true(c)
                }
            }
            _ => ordering(op, text_or_empty(l, ln), text_or_empty(r, rn)),
        });
    }
    Ok(match op {
        BinaryOp::Eq | BinaryOp::NotEq => {
            let c = if eq {
                l.clone().eq(r.clone())
            } else {
                l.clone().not_eq(r.clone())
            };
            let wrapped = if eq { null_false(c) } else { null_true(c) };
            match (ln, rn) {
                (false, false) => {
                    if eq {
                        l.eq(r)
                    } else {
                        l.not_eq(r)
                    }
                }
                (true, true) => when(
                    l.is_null().and(r.is_null()),
                    Expr::Literal(ScalarValue::Boolean(None), None),
                )
                .otherwise(wrapped)
                .map_err(|e| FnError::Type(e.to_string()))?,
                _ => wrapped,
            }
        }
        _ => ordering(op, l, r),
    })
}

fn text_or_empty(e: Expr, is_nullable: bool) -> Expr {
    if is_nullable {
        coalesce(vec![e, lit_str("")])
    } else {
        e
    }
}

fn ordering(op: BinaryOp, l: Expr, r: Expr) -> Expr {
    match op {
        BinaryOp::Lt => l.lt(r),
        BinaryOp::Le => l.lt_eq(r),
        BinaryOp::Gt => l.gt(r),
        _ => l.gt_eq(r),
    }
}

/// Removes the `coalesce(x, false)` wrappers of Kusto equality from a predicate whose nulls
/// are dropped anyway (a `where`), through `and` / `or`, so that DataFusion sees plain
/// comparisons.
pub fn filter_predicate(e: Expr) -> Expr {
    match e {
        Expr::ScalarFunction(f)
            if f.func.name() == "coalesce"
                && matches!(
                    f.args.as_slice(),
                    [_, Expr::Literal(ScalarValue::Boolean(Some(false)), _)]
                ) =>
        {
            match f.args.into_iter().next() {
                Some(x) => filter_predicate(x),
                None => Expr::Literal(ScalarValue::Boolean(Some(false)), None),
            }
        }
        Expr::BinaryExpr(b)
            if matches!(
                b.op,
                datafusion::logical_expr::Operator::And | datafusion::logical_expr::Operator::Or
            ) =>
        {
            let op = b.op;
            Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                Box::new(filter_predicate(*b.left)),
                op,
                Box::new(filter_predicate(*b.right)),
            ))
        }
        other => other,
    }
}

fn i64_of(e: Expr) -> Expr {
    cast(e, DataType::Int64)
}

fn f64_of(e: Expr) -> Expr {
    cast(e, DataType::Float64)
}

fn as_datetime(e: Expr) -> Expr {
    cast(e, datetime_type())
}

fn as_timespan(e: Expr) -> Expr {
    cast(e, TIMESPAN)
}

fn is_nonzero_literal(e: &Expr) -> bool {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(x)), _) => *x != 0,
        Expr::Literal(ScalarValue::Int32(Some(x)), _) => *x != 0,
        _ => false,
    }
}

/// An integer divisor that yields null rather than a run-time error when it is zero (real
/// division by zero gives infinity, as in Kusto).
fn safe_divisor(e: Expr) -> Expr {
    if is_nonzero_literal(&e) {
        e
    } else {
        nullif(
            cast(e, DataType::Int64),
            Expr::Literal(ScalarValue::Int64(Some(0)), None),
        )
    }
}

/// `l op r`; `integers` when both sides are integers (division and modulo guard zero).
fn arith(op: BinaryOp, l: Expr, r: Expr, integers: bool) -> Expr {
    match op {
        BinaryOp::Add => l + r,
        BinaryOp::Sub => l - r,
        BinaryOp::Mul => l * r,
        BinaryOp::Div if integers => l / safe_divisor(r),
        BinaryOp::Div => l / r,
        _ if integers => l % safe_divisor(r),
        _ => l % r,
    }
}

fn arithmetic(op: BinaryOp, l: Expr, r: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    use BinaryOp::*;
    use KType::*;
    let (kl, kr) = (ktype(&l, schema)?, ktype(&r, schema)?);
    // Normalise temporal units to µs so that the Int64 arithmetic below is in one unit.
    let l = match kl {
        DateTime => to_datetime(l, schema)?,
        TimeSpan => to_timespan(l, schema)?,
        _ => l,
    };
    let r = match kr {
        DateTime => to_datetime(r, schema)?,
        TimeSpan => to_timespan(r, schema)?,
        _ => r,
    };
    Ok(match (kl, op, kr) {
        (DateTime, Sub, DateTime) => as_timespan(i64_of(l) - i64_of(r)),
        (DateTime, Add | Sub, TimeSpan) => as_datetime(arith(op, i64_of(l), i64_of(r), true)),
        (TimeSpan, Add, DateTime) => as_datetime(i64_of(l) + i64_of(r)),
        (TimeSpan, Add | Sub | Mod, TimeSpan) => as_timespan(arith(op, i64_of(l), i64_of(r), true)),
        (TimeSpan, Div, TimeSpan) => f64_of(l) / f64_of(r),
        (TimeSpan, Mul | Div, Int | Long) => {
            as_timespan(arith(op, i64_of(l), cast(r, DataType::Int64), true))
        }
        (TimeSpan, Mul | Div, Real) => {
            as_timespan(try_cast(arith(op, f64_of(l), r, false), DataType::Int64))
        }
        (Int | Long, Mul, TimeSpan) => as_timespan(cast(l, DataType::Int64) * i64_of(r)),
        (Real, Mul, TimeSpan) => as_timespan(try_cast(l * f64_of(r), DataType::Int64)),
        (DateTime | TimeSpan, _, Null) => {
            let t = if kl == DateTime {
                datetime_type()
            } else {
                TIMESPAN
            };
            Expr::Literal(
                ScalarValue::try_from(&t).map_err(|e| FnError::Type(e.to_string()))?,
                None,
            )
        }
        (Null, _, DateTime | TimeSpan) => {
            let t = if kr == DateTime {
                datetime_type()
            } else {
                TIMESPAN
            };
            Expr::Literal(
                ScalarValue::try_from(&t).map_err(|e| FnError::Type(e.to_string()))?,
                None,
            )
        }
        (String | Dynamic, _, Int | Long | Real | Null | String | Dynamic)
        | (Int | Long | Real | Null, _, String | Dynamic) => {
            // Dynamic numbers (`x.count + 1`): arithmetic on the parsed values.
            let num = |e: Expr, k: KType| -> Result<Expr, FnError> {
                match k {
                    String | Dynamic if kl == Real || kr == Real => to_real(e, schema),
                    String | Dynamic => to_long(e, schema),
                    _ => Ok(e),
                }
            };
            let integers = kl != Real && kr != Real;
            arith(op, num(l, kl)?, num(r, kr)?, integers)
        }
        (Int | Long | Real | Null, _, Int | Long | Real | Null) => {
            arith(op, l, r, kl != Real && kr != Real)
        }
        (a, _, b) => return Err(type_err("arithmetic", a, b)),
    })
}

/// A Kusto unary operator.
pub fn unary(op: UnaryOp, e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let k = ktype(&e, schema)?;
    match op {
        UnaryOp::Not => Ok(Expr::Not(Box::new(as_bool(e, schema)?))),
        UnaryOp::Plus => match k {
            KType::String | KType::Dynamic => to_real(e, schema),
            _ => Ok(e),
        },
        UnaryOp::Neg => match k {
            KType::TimeSpan => Ok(as_timespan(Expr::Negative(Box::new(i64_of(to_timespan(
                e, schema,
            )?))))),
            KType::Int | KType::Long | KType::Real | KType::Null => Ok(Expr::Negative(Box::new(e))),
            KType::String | KType::Dynamic => Ok(Expr::Negative(Box::new(to_real(e, schema)?))),
            t => Err(FnError::Type(format!("cannot negate a {}", name(t)))),
        },
    }
}

/// `expr between (low .. high)`; for a datetime, `high` may be a timespan counted from `low`.
pub fn between(
    e: Expr,
    low: Expr,
    high: Expr,
    negated: bool,
    schema: &DFSchema,
) -> Result<Expr, FnError> {
    let high = match (ktype(&e, schema)?, ktype(&high, schema)?) {
        (KType::DateTime, KType::TimeSpan) => arithmetic(BinaryOp::Add, low.clone(), high, schema)?,
        _ => high,
    };
    let inside = comparison(BinaryOp::Ge, e.clone(), low, schema)?.and(comparison(
        BinaryOp::Le,
        e,
        high,
        schema,
    )?);
    Ok(if negated {
        Expr::Not(Box::new(inside))
    } else {
        inside
    })
}

/// `in`, `!in`, `in~`, `!in~`, `has_any`, `has_all` with a list (literal dynamic arrays in the
/// list are flattened into it).
pub fn in_list(op: StrOp, left: Expr, list: Vec<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    let list = strops::flatten_list(list);
    let e = match op.kind {
        StrOpKind::In if op.case_sensitive => in_exact(left, list, schema)?,
        StrOpKind::In => strops::list_match(Mode::Equals, false, false, left, list, schema)?,
        StrOpKind::HasAny => {
            strops::list_match(Mode::Has, op.case_sensitive, false, left, list, schema)?
        }
        StrOpKind::HasAll => {
            strops::list_match(Mode::Has, op.case_sensitive, true, left, list, schema)?
        }
        other => return Err(FnError::Type(format!("{other:?} does not take a list"))),
    };
    Ok(if op.negated {
        Expr::Not(Box::new(e))
    } else {
        e
    })
}

/// Case-sensitive `in`: DataFusion's `IN` (a hash set for literal lists), with Kusto's nulls:
/// a null value is in no list (a null string is `""`).
fn in_exact(left: Expr, list: Vec<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    let kl = ktype(&left, schema)?;
    let mut items = Vec::with_capacity(list.len());
    let mut dynamic_items = Vec::new();
    for item in list {
        let k = ktype(&item, schema)?;
        if k == KType::Dynamic && !matches!(item, Expr::Literal(..)) {
            dynamic_items.push(item);
        } else {
            items.push((item, k));
        }
    }
    let numeric_list = items.iter().any(|(_, k)| k.is_numeric());
    let left_is_text = kl.is_text();
    let (left, target): (Expr, Option<DataType>) = if left_is_text && numeric_list {
        (to_real(left, schema)?, Some(DataType::Float64))
    } else if kl.is_numeric() || kl == KType::DateTime || kl == KType::TimeSpan || kl == KType::Bool
    {
        let t = match kl {
            KType::DateTime => to_datetime(left.clone(), schema)?,
            KType::TimeSpan => to_timespan(left.clone(), schema)?,
            _ => left.clone(),
        };
        let dt = datafusion::logical_expr::ExprSchemable::get_type(&t, schema)
            .map_err(|e| FnError::Type(e.to_string()))?;
        (t, Some(dt))
    } else {
        (left, None)
    };
    let has_empty = items.iter().any(|(e, _)| {
        string_literal(e) == Some("") || matches!(e, Expr::Literal(ScalarValue::Utf8(None), _))
    });
    let left = if left_is_text && target.is_none() && has_empty && nullable(&left, schema) {
        coalesce(vec![left, lit_str("")])
    } else {
        left
    };
    let items: Vec<Expr> = items
        .into_iter()
        .map(|(e, k)| match &target {
            Some(t) if k.is_text() => try_cast(e, t.clone()),
            Some(t) if k.is_numeric() && t == &DataType::Float64 => cast(e, DataType::Float64),
            _ => e,
        })
        .collect();
    let mut parts = Vec::new();
    if !items.is_empty() {
        let e = left.clone().in_list(items, false);
        parts.push(if nullable(&left, schema) {
            null_false(e)
        } else {
            e
        });
    }
    for d in dynamic_items {
        parts.push(strops::list_match(
            Mode::Equals,
            true,
            false,
            left.clone(),
            vec![d],
            schema,
        )?);
    }
    Ok(parts
        .into_iter()
        .reduce(|a, b| a.or(b))
        .unwrap_or(Expr::Literal(ScalarValue::Boolean(Some(false)), None)))
}

/// Dynamic member access: `base.key`, `base["key"]`.
pub fn member(base: Expr, key: &str) -> Expr {
    path(base, lit_str(key))
}

/// `base[index]`: an array element (negative counts from the end) or, for a string, a member.
pub fn index(base: Expr, idx: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    match ktype(&idx, schema)? {
        KType::String | KType::Dynamic => Ok(path(base, idx)),
        KType::Int | KType::Long => Ok(path(base, cast(idx, DataType::Int64))),
        KType::Null => Ok(crate::types::dynamic_literal(None)),
        t => Err(FnError::Type(format!("cannot index with a {}", name(t)))),
    }
}
