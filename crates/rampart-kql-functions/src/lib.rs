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

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use rampart_kql_syntax::ast::{BinaryOp, Literal, StrOp, TypeName, UnaryOp};

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
