//! Kusto's scalar semantics on DataFusion: functions, aggregations, operators and type rules.
//!
//! The planner (`rampart-kql`) owns the shape of a query (tables, operators, column naming);
//! every scalar meaning lives here, so that one crate answers "what does `has` do on a null?".
//!
//! Representation of Kusto types in Arrow (shared with the store and the planner):
//!
//! | Kusto | Arrow |
//! |---|---|
//! | `string` | `Utf8` |
//! | `dynamic` | `Utf8` holding JSON text; member/index access yields strings unquoted (raw) and anything else as JSON text |
//! | `datetime` | `Timestamp(Microsecond, "UTC")` |
//! | `timespan` | `Duration(Microsecond)` |
//! | `long` / `int` / `real` / `bool` | `Int64` / `Int32` / `Float64` / `Boolean` |
//!
//! Semantics the planner relies on:
//!
//! - A null string reads as `""` in every string operator and function (Kusto strings are
//!   never null), so `!has`, `!contains`, `!in`, `!=` keep rows whose string is missing.
//! - `==` / `!=` follow Kusto's null rules and may come back wrapped in `coalesce(x, false)` /
//!   `coalesce(x, true)`; pass `where` predicates through [`filter_predicate`] so DataFusion
//!   sees the plain comparisons (and can prune with them).
//! - A `dynamic` is `Utf8` JSON text whose field metadata says `kusto.type = dynamic`; a
//!   dynamic string is held unquoted. Results of this crate that are dynamic carry the tag.
//! - `typeof(T)` arguments (e.g. `extract`'s fourth) are passed as a string literal naming the
//!   type.

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use rampart_kql_syntax::ast::{BinaryOp, Literal, StrOp, TypeName, UnaryOp};

mod aggregate;
mod convert;
mod datetime;
mod distinct;
mod extreme;
mod ip;
mod json;
mod math;
mod one_group;
mod ops;
mod scalar;
mod strings;
mod strops;
mod types;
mod udf;

#[cfg(test)]
mod tests;

pub use aggregate::{value_at_max, value_at_min};
pub use ops::filter_predicate;
pub use types::{KType, dynamic_metadata, field_is_dynamic, ktype, ktype_of_field};

/// Why a call could not be built.
#[derive(Debug, Clone, PartialEq)]
pub enum FnError {
    /// No such function.
    Unknown,
    /// Wrong number of arguments; `expected` reads like "2" or "1 to 3".
    Arity { expected: String, found: usize },
    /// Arguments of types the function does not take.
    Type(String),
    /// A Kusto function Rampart does not run, with the reason.
    Unsupported(String),
}

impl std::fmt::Display for FnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FnError::Unknown => f.write_str("unknown function"),
            FnError::Arity { expected, found } => {
                write!(f, "expects {expected} argument(s), got {found}")
            }
            FnError::Type(why) => f.write_str(why),
            FnError::Unsupported(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for FnError {}

/// The DataFusion literal of a Kusto literal: datetime → `Timestamp(µs, UTC)`, timespan
/// (nanoseconds in the AST) → `Duration(µs)`, dynamic → tagged JSON text, typed nulls typed.
pub fn literal(lit: &Literal) -> Expr {
    types::literal(lit)
}

/// A binary operator, including the string and set operators with one right operand.
pub fn binary(op: BinaryOp, left: Expr, right: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    ops::binary(op, left, right, schema)
}

/// `in`, `!in`, `in~`, `!in~`, `has_any`, `has_all` with a list of values (literal dynamic
/// arrays in the list are flattened into it, as Kusto does).
pub fn in_list(op: StrOp, left: Expr, list: Vec<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    ops::in_list(op, left, list, schema)
}

/// A unary operator (`-x`, `+x`, `not(x)`).
pub fn unary(op: UnaryOp, expr: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    ops::unary(op, expr, schema)
}

/// `expr between (low .. high)` / `!between`; for datetimes `high` may be a timespan.
pub fn between(
    expr: Expr,
    low: Expr,
    high: Expr,
    negated: bool,
    schema: &DFSchema,
) -> Result<Expr, FnError> {
    ops::between(expr, low, high, negated, schema)
}

/// Dynamic member access `base.key` / `base["key"]`: strings come back unquoted, other values
/// as compact JSON, a missing member as null. Chains of accesses fuse into one scan.
pub fn member(base: Expr, key: &str) -> Expr {
    ops::member(base, key)
}

/// `base[index]`: an array element (negative from the end) or, with a string, a member.
pub fn index(base: Expr, index: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    ops::index(base, index, schema)
}

/// A conversion to a Kusto type (`tostring`, `tolong`, ...): a value that does not convert
/// gives null.
pub fn cast(expr: Expr, to: TypeName, schema: &DFSchema) -> Result<Expr, FnError> {
    convert::cast(expr, to, schema)
}

/// A scalar function call.
pub fn scalar(name: &str, args: Vec<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    scalar::scalar(name, args, schema)
}

/// An aggregation call (the top of the result is always an aggregate function expression).
pub fn aggregate(name: &str, args: Vec<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    aggregate::aggregate(name, args, schema)
}

/// Whether `name` is an aggregation (including the ones the planner composes itself).
pub fn is_aggregate(name: &str) -> bool {
    aggregate::is_aggregate(name) || PLANNER_AGGREGATES.contains(&name)
}

/// Every scalar and aggregate function name, for "did you mean" suggestions.
pub fn names() -> impl Iterator<Item = &'static str> {
    scalar::SCALARS
        .iter()
        .chain(aggregate::AGGREGATES)
        .chain(PLANNER_AGGREGATES)
        .copied()
}

/// Aggregations with several outputs, which the planner builds from this crate's pieces.
const PLANNER_AGGREGATES: &[&str] = &["arg_max", "arg_min", "percentiles"];

/// Kusto functions Rampart knows of but does not run, by name or by family prefix.
const REFUSED: &[(&str, &str)] = &[
    ("geo_", "geospatial functions are not supported"),
    ("series_", "time-series functions are not supported"),
    ("external_", "external data is not reachable from Rampart"),
    ("cursor_", "database cursors do not exist in Rampart"),
    (
        "current_",
        "cluster and principal metadata do not exist in Rampart",
    ),
    ("ingestion_time", "ingestion time is not recorded"),
    ("extent_", "extents do not exist in Rampart"),
    (
        "row_",
        "row window functions need serialized input, which is not supported",
    ),
    (
        "prev",
        "row window functions need serialized input, which is not supported",
    ),
    (
        "next",
        "row window functions need serialized input, which is not supported",
    ),
    ("hll", "HyperLogLog intermediate results are not supported"),
    ("tdigest", "t-digest intermediate results are not supported"),
    ("percentilew", "weighted percentiles are not supported"),
    (
        "datetime_utc_to_local",
        "time zones are not supported (all datetimes are UTC)",
    ),
    (
        "datetime_local_to_utc",
        "time zones are not supported (all datetimes are UTC)",
    ),
    (
        "hash",
        "Kusto's hash() values cannot be reproduced; use hash_sha256() or hash_md5()",
    ),
    ("parse_xml", "XML parsing is not supported"),
    ("parse_user_agent", "user-agent parsing is not supported"),
    (
        "pack_all",
        "pack_all() is not supported; list the columns with bag_pack()",
    ),
    (
        "estimate_data_size",
        "data size estimates are not supported",
    ),
    ("toscalar", "toscalar() is planned by the query planner"),
];

/// The error for a name no table here plans: `Unsupported` with the reason for known Kusto
/// functions, `Unknown` otherwise.
pub(crate) fn refusal(name: &str) -> FnError {
    if PLANNER_AGGREGATES.contains(&name) {
        return FnError::Unsupported(format!(
            "{name}() has several outputs and is composed by the planner"
        ));
    }
    for (prefix, why) in REFUSED {
        let hit = if prefix.ends_with('_') {
            name.starts_with(prefix)
        } else {
            name == *prefix
        };
        if hit {
            return FnError::Unsupported(format!("{name}(): {why}"));
        }
    }
    FnError::Unknown
}
