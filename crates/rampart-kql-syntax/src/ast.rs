//! The syntax tree of a KQL query, as the parser produces it and the planner consumes it.
//!
//! Every node that can be wrong carries a [`Span`] (byte offsets into the query text), so that
//! planning errors point at the line and column just as parse errors do.

use std::fmt;

/// Byte range `[start, end)` in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub const fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A whole query: `let` and `set` statements, then (at most) one tabular expression whose result
/// is the query's result. A query of only statements has `body == None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub lets: Vec<Let>,
    pub body: Option<TabExpr>,
}

/// `let name = value;`
#[derive(Debug, Clone, PartialEq)]
pub struct Let {
    pub name: Ident,
    pub value: LetValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LetValue {
    /// A scalar expression, or a bare name/call that may turn out to be tabular (the planner
    /// decides: `let T = DeviceEvents;` names a table, `let n = 5;` a scalar).
    Expr(Expr),
    /// An expression with at least one `|` or a tabular-only source (`datatable`, `range`, ...).
    Tabular(TabExpr),
    /// `let f = (a: string, b: long = 3) { ... };` — a user function.
    Function(Function),
}

/// A user-defined function: parameters and a body (its own `let`s, then a result).
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub params: Vec<Param>,
    pub lets: Vec<Let>,
    pub body: LetBody,
    pub span: Span,
}

/// The result of a function body: a scalar expression or a tabular one.
// A tree is built once per query; boxing the large variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum LetBody {
    Expr(Expr),
    Tabular(TabExpr),
}

/// A function parameter. `kind == None` for a scalar of unspecified type; tabular parameters are
/// written `T: (*)` or `T: (col: type, ...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub kind: ParamKind,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParamKind {
    Scalar(Option<TypeName>),
    Tabular,
}

/// A Kusto scalar type name as written in casts, `parse` patterns, `to typeof(...)`, params.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeName {
    Bool,
    Int,
    Long,
    Real,
    Decimal,
    String,
    DateTime,
    TimeSpan,
    Dynamic,
    Guid,
}

impl TypeName {
    /// Parses a type name (`long`, `int64`, `double`, `date`, `boolean`, ...).
    pub fn from_name(name: &str) -> Option<TypeName> {
        Some(match name {
            "bool" | "boolean" => TypeName::Bool,
            "int" | "int32" => TypeName::Int,
            "long" | "int64" => TypeName::Long,
            "real" | "double" => TypeName::Real,
            "decimal" => TypeName::Decimal,
            "string" => TypeName::String,
            "datetime" | "date" => TypeName::DateTime,
            "timespan" | "time" => TypeName::TimeSpan,
            "dynamic" => TypeName::Dynamic,
            "guid" | "uniqueid" => TypeName::Guid,
            _ => return None,
        })
    }
}

/// A tabular expression: a source followed by `| operator`s.
#[derive(Debug, Clone, PartialEq)]
pub struct TabExpr {
    pub source: Source,
    pub ops: Vec<Operator>,
    pub span: Span,
}

/// Where a pipeline's rows come from.
// A tree is built once per query; boxing the large variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A table, a tabular `let`, or a user function called without arguments.
    Name(Ident),
    /// `f(args)`: a user function, `table("name")`, `materialize(T)`, `view`...
    Call { name: Ident, args: Vec<Expr> },
    /// `union [kind=..] [withsource=Col] T1, T2, Device*`
    Union(Union),
    /// `datatable(a: long, b: string) [1, "x", 2, "y"]`
    Datatable {
        columns: Vec<(Ident, TypeName)>,
        values: Vec<Expr>,
        span: Span,
    },
    /// `range x from 1 to 10 step 1`
    Range {
        column: Ident,
        from: Expr,
        to: Expr,
        step: Expr,
    },
    /// `print a = 1, 2`
    Print(Vec<NamedExpr>),
    /// `( tabular )`
    Paren(Box<TabExpr>),
    /// Valid KQL that Rampart does not run (`externaldata`, `find`, `search`): parsed, so its
    /// syntax is checked, and refused by the planner naming the construct.
    Unsupported(Ident),
}

/// `union` as a source or an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Union {
    /// `kind=outer` (default) or `kind=inner`.
    pub inner: bool,
    /// `withsource=Col`: a column naming the table each row came from.
    pub with_source: Option<Ident>,
    pub tables: Vec<UnionTable>,
    pub span: Span,
}

// A tree is built once per query; boxing the large variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum UnionTable {
    /// A tabular expression (a plain name, a parenthesised pipeline, a call).
    Tab(TabExpr),
    /// A name with `*` wildcards, e.g. `Device*Events`.
    Wildcard(Ident),
}

/// `name = expr` or a bare `expr` (the planner names it).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedExpr {
    /// One name, or several for `(a, b) = f(...)` forms (rare; planner may refuse).
    pub names: Vec<Ident>,
    pub expr: Expr,
}

/// A column name pattern in `project-away`, `project-keep`, `project-reorder`: may hold `*`.
pub type ColumnPattern = Ident;

/// One key of `sort by` / `top by`.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub expr: Expr,
    /// Kusto's default order is descending.
    pub ascending: bool,
    /// `None`: Kusto's default (nulls last when descending, first when ascending).
    pub nulls_first: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Kusto's default: deduplicates the left side on the join keys, then inner-joins.
    InnerUnique,
    Inner,
    LeftOuter,
    RightOuter,
    FullOuter,
    LeftSemi,
    RightSemi,
    LeftAnti,
    RightAnti,
}

impl JoinKind {
    /// `kind=` value as written (`leftanti`, `anti`, `leftantisemi`, ...).
    pub fn from_name(name: &str) -> Option<JoinKind> {
        Some(match name {
            "innerunique" => JoinKind::InnerUnique,
            "inner" => JoinKind::Inner,
            "leftouter" => JoinKind::LeftOuter,
            "rightouter" => JoinKind::RightOuter,
            "fullouter" | "outer" => JoinKind::FullOuter,
            "leftsemi" | "semi" => JoinKind::LeftSemi,
            "rightsemi" => JoinKind::RightSemi,
            "leftanti" | "anti" | "leftantisemi" => JoinKind::LeftAnti,
            "rightanti" | "rightantisemi" => JoinKind::RightAnti,
            _ => return None,
        })
    }
}

/// One equality of a join's `on` clause.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOn {
    /// `on Col`: the same column on both sides.
    Same(Ident),
    /// `on $left.A == $right.B`
    Pair { left: Ident, right: Ident },
}

/// One item of `mv-expand`: `[name =] expr [to typeof(type)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MvExpandItem {
    pub name: Option<Ident>,
    pub expr: Expr,
    pub to_type: Option<TypeName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseKind {
    Simple,
    Regex,
    Relaxed,
}

/// A piece of a `parse` pattern: literal text to find, or a column to capture.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsePart {
    /// A string literal to match (or, with `kind=regex`, a regex fragment).
    Text(String),
    /// `*`: skip anything up to the next text.
    Skip,
    /// `Name [: type]`: capture up to the next text (or the end).
    Column(Ident, Option<TypeName>),
}

/// `make-series` (planned where feasible).
#[derive(Debug, Clone, PartialEq)]
pub struct MakeSeries {
    /// `name = aggregation [default = value]`
    pub aggs: Vec<(NamedExpr, Option<Expr>)>,
    /// `on TimeColumn`
    pub on: Expr,
    pub from: Option<Expr>,
    pub to: Option<Expr>,
    pub step: Expr,
    pub by: Vec<NamedExpr>,
}

/// One tabular operator after a `|`.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    pub kind: OperatorKind,
    /// From the operator's name to the end of its arguments.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OperatorKind {
    /// `where` / `filter`
    Where(Expr),
    Project(Vec<NamedExpr>),
    ProjectAway(Vec<ColumnPattern>),
    ProjectKeep(Vec<ColumnPattern>),
    /// `project-rename New = Old, ...`
    ProjectRename(Vec<(Ident, Ident)>),
    /// `project-reorder A, B* asc, ...` (the order suffix is accepted and ignored)
    ProjectReorder(Vec<ColumnPattern>),
    Extend(Vec<NamedExpr>),
    Summarize {
        aggs: Vec<NamedExpr>,
        by: Vec<NamedExpr>,
    },
    /// `count` (the operator): one row, column `Count`.
    Count,
    /// `take` / `limit`
    Take(Expr),
    Top {
        n: Expr,
        by: Vec<SortKey>,
    },
    /// `sort by` / `order by`
    Sort(Vec<SortKey>),
    /// `distinct *` has `all` set and no columns.
    Distinct {
        all: bool,
        columns: Vec<Expr>,
    },
    Join {
        kind: JoinKind,
        right: Box<TabExpr>,
        on: Vec<JoinOn>,
    },
    Lookup {
        /// `kind=leftouter` (default) or `kind=inner`.
        inner: bool,
        right: Box<TabExpr>,
        on: Vec<JoinOn>,
    },
    Union(Union),
    MvExpand {
        items: Vec<MvExpandItem>,
        limit: Option<Expr>,
    },
    Parse {
        kind: ParseKind,
        expr: Expr,
        parts: Vec<ParsePart>,
    },
    /// `evaluate plugin(args)`, e.g. `bag_unpack(col)`.
    Evaluate {
        plugin: Ident,
        args: Vec<Expr>,
    },
    MakeSeries(Box<MakeSeries>),
    /// `render chart [with (...)]`: the chart type travels with the result.
    Render {
        chart: Ident,
    },
    /// `as Name`: binds the pipeline so far to a name usable later in the query.
    As(Ident),
    /// `invoke f(args)`: calls a tabular function with the pipeline as its first argument.
    Invoke {
        function: Ident,
        args: Vec<Expr>,
    },
    GetSchema,
    /// `serialize [name = expr, ...]`: rows keep their order; may add columns like `extend`.
    Serialize(Vec<NamedExpr>),
    /// `sample n`
    Sample(Expr),
    /// Valid KQL that Rampart does not run (`top-nested`, `partition`, `fork`, `facet`, ...):
    /// parsed, so its syntax is checked, and refused by the planner naming the operator.
    Unsupported(Ident),
}

/// A scalar expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Literal(Literal),
    /// A column, a scalar `let`, or a function parameter.
    Name(String),
    /// `$left.Col` / `$right.Col` (only meaningful in join conditions).
    Side {
        right: bool,
        column: String,
    },
    /// `base.name` (dynamic member access, or a name qualified by table in `union`/join)
    Member {
        base: Box<Expr>,
        name: String,
    },
    /// `base[index]`: array index or bag key.
    Index {
        base: Box<Expr>,
        index: Box<Expr>,
    },
    /// `name(args)`. `count()` has no args; `*` appears as [`ExprKind::Star`].
    Call {
        name: Ident,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `expr between (low .. high)` and `!between`.
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    /// A parenthesised list `(a, b, c)`: the right side of `in`, `has_any`, `has_all`.
    List(Vec<Expr>),
    /// `*` as a function argument (`arg_max(T, *)`, `take_any(*)`).
    Star,
    /// A tabular expression where a scalar is expected: `toscalar(T | ...)`, `x in (T | ...)`.
    Tabular(Box<TabExpr>),
    /// `name = value` as a function argument (e.g. `bag_unpack(col, prefix = "x")`, named
    /// render/plugin args).
    NamedArg {
        name: Ident,
        value: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null` alone, or a typed null like `long(null)` (then the type is set).
    Null(Option<TypeName>),
    Bool(bool),
    Long(i64),
    Real(f64),
    String(String),
    /// `datetime(...)`, already parsed to microseconds since the Unix epoch (UTC).
    DateTime(i64),
    /// `1d`, `time(...)`, `timespan(...)`: in nanoseconds.
    TimeSpan(i64),
    /// `dynamic(...)`: a JSON value.
    Dynamic(serde_json::Value),
    /// `guid(...)`: kept as its text.
    Guid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Plus,
    /// `not(x)` is a function in Kusto; the parser lowers it to this.
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    /// `==` (case-sensitive on strings)
    Eq,
    /// `!=` / `<>`
    NotEq,
    /// `=~` (case-insensitive equality)
    EqCi,
    /// `!~`
    NotEqCi,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    /// A string or set operator: `has`, `!contains_cs`, `in~`, `has_any`, `matches regex`, ...
    Str(StrOp),
}

/// A string/set operator with its negation and case sensitivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrOp {
    pub kind: StrOpKind,
    /// `!has`, `!in`, ...
    pub negated: bool,
    /// `_cs` forms, and `in` (which is case-sensitive; `in~` is not).
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOpKind {
    Has,
    HasPrefix,
    HasSuffix,
    Contains,
    StartsWith,
    EndsWith,
    /// `matches regex` (always case-sensitive unless the pattern says otherwise)
    MatchesRegex,
    /// `in` / `in~` / `!in` / `!in~`: right side is a `List`, a name or a `Tabular`.
    In,
    /// `has_any (list)`
    HasAny,
    /// `has_all (list)`
    HasAll,
}
