//! End-to-end tests: expressions planned by this crate, run through DataFusion on small
//! batches, with results compared to Kusto's documented behaviour.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, DurationMicrosecondArray, Float64Array, Int32Array, Int64Array,
    StringArray, StringViewArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast as arrow_cast, concat};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use rampart_kql_syntax::ast::{BinaryOp, Literal, StrOp, StrOpKind, TypeName, UnaryOp};

use crate::types::{
    US_PER_DAY, US_PER_HOUR, US_PER_MIN, US_PER_SEC, dynamic_metadata, parse_datetime,
};
use crate::{
    FnError, aggregate, between, binary, cast, in_list, index, literal, member, scalar, unary,
};

/// A column of a test table.
struct Col {
    name: &'static str,
    array: ArrayRef,
    dynamic: bool,
}

fn strs(name: &'static str, v: &[Option<&str>]) -> Col {
    Col {
        name,
        array: Arc::new(StringArray::from(v.to_vec())),
        dynamic: false,
    }
}

fn dyns(name: &'static str, v: &[Option<&str>]) -> Col {
    Col {
        name,
        array: Arc::new(StringArray::from(v.to_vec())),
        dynamic: true,
    }
}

fn longs(name: &'static str, v: &[Option<i64>]) -> Col {
    Col {
        name,
        array: Arc::new(Int64Array::from(v.to_vec())),
        dynamic: false,
    }
}

fn ints(name: &'static str, v: &[Option<i32>]) -> Col {
    Col {
        name,
        array: Arc::new(Int32Array::from(v.to_vec())),
        dynamic: false,
    }
}

fn reals(name: &'static str, v: &[Option<f64>]) -> Col {
    Col {
        name,
        array: Arc::new(Float64Array::from(v.to_vec())),
        dynamic: false,
    }
}

fn bools(name: &'static str, v: &[Option<bool>]) -> Col {
    Col {
        name,
        array: Arc::new(BooleanArray::from(v.to_vec())),
        dynamic: false,
    }
}

fn us(s: &str) -> i64 {
    match parse_datetime(s) {
        Some(v) => v,
        None => panic!("bad test datetime {s}"),
    }
}

fn times(name: &'static str, v: &[Option<&str>]) -> Col {
    let a = TimestampMicrosecondArray::from(v.iter().map(|t| t.map(us)).collect::<Vec<_>>())
        .with_timezone("UTC");
    Col {
        name,
        array: Arc::new(a),
        dynamic: false,
    }
}

fn spans(name: &'static str, v: &[Option<i64>]) -> Col {
    Col {
        name,
        array: Arc::new(DurationMicrosecondArray::from(v.to_vec())),
        dynamic: false,
    }
}

struct Fixture {
    df: DataFrame,
}

impl Fixture {
    fn new(cols: Vec<Col>) -> Fixture {
        let fields: Vec<Field> = cols
            .iter()
            .map(|c| {
                let f = Field::new(c.name, c.array.data_type().clone(), true);
                if c.dynamic {
                    f.with_metadata(dynamic_metadata())
                } else {
                    f
                }
            })
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            cols.into_iter().map(|c| c.array).collect(),
        );
        let batch = match batch {
            Ok(b) => b,
            Err(e) => panic!("test batch: {e}"),
        };
        match SessionContext::new().read_batch(batch) {
            Ok(df) => Fixture { df },
            Err(e) => panic!("read_batch: {e}"),
        }
    }

    /// One row, no columns of interest: for constant expressions.
    fn one() -> Fixture {
        Fixture::new(vec![longs("unit", &[Some(1)])])
    }

    fn schema(&self) -> &DFSchema {
        self.df.schema()
    }

    /// Runs one expression; every value as text (`null` for nulls).
    async fn eval(&self, e: Result<Expr, FnError>) -> Vec<String> {
        let e = match e {
            Ok(e) => e,
            Err(err) => panic!("planning failed: {err:?}"),
        };
        self.run(vec![e.alias("r")]).await
    }

    async fn run(&self, exprs: Vec<Expr>) -> Vec<String> {
        let batches = match self.df.clone().select(exprs) {
            Ok(df) => match df.collect().await {
                Ok(b) => b,
                Err(e) => panic!("execution failed: {e}"),
            },
            Err(e) => panic!("select failed: {e}"),
        };
        show_column(&batches, 0)
    }

    async fn agg(&self, group: Vec<Expr>, aggs: Vec<Result<Expr, FnError>>) -> Vec<Vec<String>> {
        let aggs: Vec<Expr> = aggs
            .into_iter()
            .enumerate()
            .map(|(i, a)| match a {
                Ok(a) => a.alias(format!("a{i}")),
                Err(e) => panic!("planning failed: {e:?}"),
            })
            .collect();
        let n_group = group.len();
        let sort: Vec<_> = group.iter().map(|g| g.clone().sort(true, true)).collect();
        let df = match self
            .df
            .clone()
            .aggregate(group, aggs)
            .and_then(|d| if sort.is_empty() { Ok(d) } else { d.sort(sort) })
        {
            Ok(df) => df,
            Err(e) => panic!("aggregate failed: {e}"),
        };
        let batches = match df.collect().await {
            Ok(b) => b,
            Err(e) => panic!("execution failed: {e}"),
        };
        let width = batches.first().map_or(0, |b| b.num_columns());
        (n_group..width).map(|c| show_column(&batches, c)).collect()
    }
}

fn show_column(batches: &[datafusion::arrow::record_batch::RecordBatch], c: usize) -> Vec<String> {
    let arrays: Vec<ArrayRef> = batches.iter().map(|b| Arc::clone(b.column(c))).collect();
    let refs: Vec<&dyn datafusion::arrow::array::Array> =
        arrays.iter().map(|a| a.as_ref()).collect();
    let Ok(a) = concat(&refs) else {
        panic!("concat")
    };
    // Durations as microseconds, so expectations read as arithmetic.
    let a = if matches!(a.data_type(), DataType::Duration(_)) {
        match arrow_cast(&a, &DataType::Int64) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        }
    } else {
        a
    };
    let opts = FormatOptions::default().with_null("null");
    let Ok(fmt) = ArrayFormatter::try_new(a.as_ref(), &opts) else {
        panic!("format")
    };
    (0..a.len()).map(|i| fmt.value(i).to_string()).collect()
}

fn s(v: &str) -> Expr {
    lit(v)
}

fn n(v: i64) -> Expr {
    lit(v)
}

fn op(kind: StrOpKind, negated: bool, case_sensitive: bool) -> BinaryOp {
    BinaryOp::Str(StrOp {
        kind,
        negated,
        case_sensitive,
    })
}

fn sop(kind: StrOpKind, negated: bool, case_sensitive: bool) -> StrOp {
    StrOp {
        kind,
        negated,
        case_sensitive,
    }
}

fn call(f: &Fixture, name: &str, args: Vec<Expr>) -> Result<Expr, FnError> {
    scalar(name, args, f.schema())
}

fn span_lit(us: i64) -> Expr {
    literal(&Literal::TimeSpan(us * 1000))
}

fn dt_lit(text: &str) -> Expr {
    literal(&Literal::DateTime(us(text)))
}

fn dyn_lit(json: &str) -> Expr {
    match serde_json::from_str(json) {
        Ok(v) => literal(&Literal::Dynamic(v)),
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------- literals and types

#[tokio::test]
async fn literals_have_kusto_types() {
    let f = Fixture::one();
    assert_eq!(
        f.eval(Ok(literal(&Literal::DateTime(us("2024-01-02 03:04:05")))))
            .await,
        ["2024-01-02T03:04:05Z"]
    );
    assert_eq!(
        f.eval(Ok(literal(&Literal::TimeSpan(90 * 1_000_000_000))))
            .await,
        ["90000000"]
    );
    assert_eq!(
        f.eval(Ok(dyn_lit(r#"{"a": [1, "x"]}"#))).await,
        [r#"{"a":[1,"x"]}"#]
    );
    assert_eq!(f.eval(Ok(dyn_lit(r#""plain""#))).await, ["plain"]);
    assert_eq!(
        f.eval(Ok(literal(&Literal::Null(Some(TypeName::Long)))))
            .await,
        ["null"]
    );
    let typed = |t| literal(&Literal::Null(Some(t))).get_type(f.schema()).ok();
    use datafusion::logical_expr::ExprSchemable;
    assert_eq!(typed(TypeName::Long), Some(DataType::Int64));
    assert_eq!(typed(TypeName::Int), Some(DataType::Int32));
    assert_eq!(
        typed(TypeName::DateTime),
        Some(crate::types::datetime_type())
    );
    assert_eq!(typed(TypeName::TimeSpan), Some(crate::types::TIMESPAN));
    assert_eq!(
        crate::ktype(&dyn_lit("[1]"), f.schema()),
        Ok(crate::KType::Dynamic)
    );
    assert_eq!(
        f.eval(Ok(literal(&Literal::Guid(
            "ABCDEF01-0000-0000-0000-000000000000".into()
        ))))
        .await,
        ["abcdef01-0000-0000-0000-000000000000"]
    );
}

// ---------------------------------------------------------------- comparisons

fn people() -> Fixture {
    Fixture::new(vec![
        strs("name", &[Some("Alice"), Some("alice"), Some(""), None]),
        longs("age", &[Some(30), Some(40), None, Some(30)]),
        dyns(
            "extra",
            &[
                Some(r#"{"age":"30","n":5}"#),
                Some(r#"{"age":41}"#),
                None,
                Some("{}"),
            ],
        ),
    ])
}

#[tokio::test]
async fn equality_is_case_sensitive_and_null_aware() {
    let f = people();
    let sc = f.schema();
    let b = |o, l: Expr, r: Expr| binary(o, l, r, sc);
    assert_eq!(
        f.eval(b(BinaryOp::Eq, col("name"), s("Alice"))).await,
        ["true", "false", "false", "false"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::NotEq, col("name"), s("Alice"))).await,
        ["false", "true", "true", "true"]
    );
    // A missing string is "" in Kusto.
    assert_eq!(
        f.eval(b(BinaryOp::Eq, col("name"), s(""))).await,
        ["false", "false", "true", "true"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::NotEq, col("name"), s(""))).await,
        ["true", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::EqCi, col("name"), s("ALICE"))).await,
        ["true", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::NotEqCi, col("name"), s("ALICE"))).await,
        ["false", "false", "true", "true"]
    );
    // null == 30 is false, null != 30 true (Kusto's rule), ordering with null is null.
    assert_eq!(
        f.eval(b(BinaryOp::Eq, col("age"), n(30))).await,
        ["true", "false", "false", "true"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::NotEq, col("age"), n(30))).await,
        ["false", "true", "true", "false"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Gt, col("age"), n(35))).await,
        ["false", "true", "null", "false"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Le, col("age"), n(30))).await,
        ["true", "false", "null", "true"]
    );
    // Two nulls compare null.
    let null_long = literal(&Literal::Null(Some(TypeName::Long)));
    assert_eq!(
        f.eval(b(BinaryOp::Eq, col("age"), null_long)).await,
        ["false", "false", "null", "false"]
    );
    // Strings order ordinally; a column against a column.
    assert_eq!(
        f.eval(b(BinaryOp::Lt, col("name"), s("B"))).await,
        ["true", "false", "true", "true"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::EqCi, col("name"), f::lower_name()))
            .await,
        ["true", "true", "true", "true"]
    );
}

mod f {
    use super::*;
    /// `tolower(name)` as a column expression.
    pub fn lower_name() -> Expr {
        datafusion::functions::expr_fn::lower(col("name"))
    }
}

#[tokio::test]
async fn text_against_numbers_compares_numerically() {
    let f = people();
    let sc = f.schema();
    let age = member(col("extra"), "age");
    assert_eq!(
        f.eval(binary(BinaryOp::Eq, age.clone(), n(30), sc)).await,
        ["true", "false", "false", "false"]
    );
    assert_eq!(
        f.eval(binary(BinaryOp::Gt, age.clone(), n(35), sc)).await,
        ["false", "true", "null", "null"]
    );
    assert_eq!(
        f.eval(binary(BinaryOp::Eq, age, col("age"), sc)).await,
        ["true", "false", "null", "false"]
    );
    assert_eq!(
        f.eval(binary(BinaryOp::Eq, s("7"), n(7), sc)).await,
        ["true", "true", "true", "true"]
    );
}

#[tokio::test]
async fn filter_predicate_keeps_meaning_in_where() {
    let f = people();
    let sc = f.schema();
    let p = match binary(BinaryOp::Eq, col("age"), n(30), sc) {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    };
    assert!(format!("{p}").contains("coalesce"));
    let stripped = crate::filter_predicate(p.clone().and(p));
    assert!(!format!("{stripped}").contains("coalesce"), "{stripped}");
    let rows = match f.df.clone().filter(stripped) {
        Ok(df) => df.count().await.ok(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(rows, Some(2));
}

// ---------------------------------------------------------------- has family

fn commands() -> Fixture {
    Fixture::new(vec![strs(
        "cmd",
        &[
            Some("cmd.exe /c whoami"),
            Some("calc.exe1"),
            Some("POWERSHELL -enc AAAA"),
            Some(r"C:\Windows\System32\rundll32.exe x.dll,Start"),
            None,
        ],
    )])
}

async fn str_op(
    f: &Fixture,
    kind: StrOpKind,
    negated: bool,
    cs: bool,
    needle: Expr,
) -> Vec<String> {
    f.eval(binary(
        op(kind, negated, cs),
        col("cmd"),
        needle,
        f.schema(),
    ))
    .await
}

#[tokio::test]
async fn has_matches_terms() {
    let f = commands();
    use StrOpKind::*;
    assert_eq!(
        str_op(&f, Has, false, false, s("whoami")).await,
        ["true", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, Has, false, false, s("cmd.exe")).await,
        ["true", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, Has, false, false, s("who")).await,
        ["false", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, Has, false, false, s("exe")).await,
        ["true", "false", "false", "true", "false"]
    );
    assert_eq!(
        str_op(&f, Has, false, false, s("powershell")).await,
        ["false", "false", "true", "false", "false"]
    );
    assert_eq!(
        str_op(&f, Has, false, true, s("powershell")).await,
        ["false", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, Has, false, false, s(r"system32\rundll32.exe")).await,
        ["false", "false", "false", "true", "false"]
    );
    assert_eq!(
        str_op(&f, Has, true, false, s("whoami")).await,
        ["false", "true", "true", "true", "true"]
    );
    assert_eq!(
        str_op(&f, HasPrefix, false, false, s("who")).await,
        ["true", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, HasPrefix, false, false, s("calc")).await,
        ["false", "true", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, HasSuffix, false, false, s("ami")).await,
        ["true", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, HasSuffix, true, false, s("ll")).await,
        ["true", "true", "false", "false", "true"]
    );
}

#[tokio::test]
async fn two_operators_on_one_column_have_distinct_names() {
    let f = commands();
    let sc = f.schema();
    let a = binary(op(StrOpKind::Has, false, false), col("cmd"), s("x"), sc);
    let b = binary(op(StrOpKind::Has, false, false), col("cmd"), s("y"), sc);
    let c = binary(
        op(StrOpKind::MatchesRegex, false, true),
        col("cmd"),
        s("y"),
        sc,
    );
    let (Ok(a), Ok(b), Ok(c)) = (a, b, c) else {
        panic!("planning failed")
    };
    assert_ne!(a.schema_name().to_string(), b.schema_name().to_string());
    assert_eq!(a.schema_name().to_string(), r#"has(cmd, "x")"#);
    assert_eq!(c.schema_name().to_string(), r#"matches_regex(cmd, "y")"#);
    // Both can be projected side by side without aliases.
    assert_eq!(f.run(vec![a, b]).await.len(), 5);
}

#[tokio::test]
async fn substring_operators() {
    let f = commands();
    use StrOpKind::*;
    assert_eq!(
        str_op(&f, Contains, false, false, s("WHO")).await,
        ["true", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, Contains, false, true, s("WHO")).await,
        ["false", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, Contains, true, false, s("exe")).await,
        ["false", "false", "true", "false", "true"]
    );
    assert_eq!(
        str_op(&f, StartsWith, false, false, s("powershell")).await,
        ["false", "false", "true", "false", "false"]
    );
    assert_eq!(
        str_op(&f, StartsWith, false, true, s("powershell")).await,
        ["false", "false", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, EndsWith, false, false, s("START")).await,
        ["false", "false", "false", "true", "false"]
    );
    assert_eq!(
        str_op(&f, EndsWith, true, true, s("1")).await,
        ["true", "false", "true", "true", "true"]
    );
    assert_eq!(
        str_op(&f, MatchesRegex, false, true, s(r"\.exe\d")).await,
        ["false", "true", "false", "false", "false"]
    );
    assert_eq!(
        str_op(&f, MatchesRegex, true, true, s("(?i)^cmd")).await,
        ["false", "true", "true", "true", "true"]
    );
    assert!(matches!(
        binary(
            op(MatchesRegex, false, true),
            col("cmd"),
            s("(unclosed"),
            f.schema()
        ),
        Err(FnError::Type(_))
    ));
}

#[tokio::test]
async fn operators_with_column_needles() {
    let f = Fixture::new(vec![
        strs(
            "hay",
            &[
                Some("cmd.exe /c whoami"),
                Some("Hello World"),
                None,
                Some("abc"),
            ],
        ),
        strs("needle", &[Some("WHOAMI"), Some("wor"), Some("x"), None]),
    ]);
    let sc = f.schema();
    use StrOpKind::*;
    let b = |k, neg, cs| binary(op(k, neg, cs), col("hay"), col("needle"), sc);
    assert_eq!(
        f.eval(b(Has, false, false)).await,
        ["true", "false", "false", "true"]
    );
    assert_eq!(
        f.eval(b(HasPrefix, false, false)).await,
        ["true", "true", "false", "true"]
    );
    assert_eq!(
        f.eval(b(Contains, false, true)).await,
        ["false", "false", "false", "true"]
    );
    assert_eq!(
        f.eval(b(Contains, false, false)).await,
        ["true", "true", "false", "true"]
    );
    assert_eq!(
        f.eval(b(StartsWith, true, false)).await,
        ["true", "true", "true", "false"]
    );
    assert_eq!(
        f.eval(binary(BinaryOp::EqCi, col("hay"), s("HELLO WORLD"), sc))
            .await,
        ["false", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(b(MatchesRegex, false, true)).await,
        ["false", "false", "false", "true"]
    );
}

// ---------------------------------------------------------------- in, has_any, has_all

#[tokio::test]
async fn in_and_case_insensitive_in() {
    let f = people();
    let sc = f.schema();
    let inl = |o, list: Vec<Expr>| in_list(o, col("name"), list, sc);
    use StrOpKind::In;
    assert_eq!(
        f.eval(inl(sop(In, false, true), vec![s("Alice"), s("Bob")]))
            .await,
        ["true", "false", "false", "false"]
    );
    assert_eq!(
        f.eval(inl(sop(In, true, true), vec![s("Alice"), s("Bob")]))
            .await,
        ["false", "true", "true", "true"]
    );
    assert_eq!(
        f.eval(inl(sop(In, false, false), vec![s("ALICE"), s("Bob")]))
            .await,
        ["true", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(inl(sop(In, true, false), vec![s("ALICE")])).await,
        ["false", "false", "true", "true"]
    );
    // A literal dynamic array in the list is flattened.
    assert_eq!(
        f.eval(inl(
            sop(In, false, false),
            vec![dyn_lit(r#"["bob", "alice"]"#)]
        ))
        .await,
        ["true", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(inl(sop(In, false, true), vec![dyn_lit(r#"["x", ""]"#)]))
            .await,
        ["false", "false", "true", "true"]
    );
    assert_eq!(
        f.eval(in_list(
            sop(In, false, true),
            col("age"),
            vec![n(40), n(41)],
            sc
        ))
        .await,
        ["false", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(in_list(sop(In, true, true), col("age"), vec![n(40)], sc))
            .await,
        ["true", "false", "true", "true"]
    );
    // Dynamic numbers against numbers.
    assert_eq!(
        f.eval(in_list(
            sop(In, false, true),
            member(col("extra"), "age"),
            vec![n(41)],
            sc
        ))
        .await,
        ["false", "true", "false", "false"]
    );
}

#[tokio::test]
async fn has_any_and_has_all() {
    let f = commands();
    let sc = f.schema();
    use StrOpKind::{HasAll, HasAny, In};
    let l = |o, list: Vec<Expr>| in_list(o, col("cmd"), list, sc);
    assert_eq!(
        f.eval(l(
            sop(HasAny, false, false),
            vec![s("whoami"), s("rundll32")]
        ))
        .await,
        ["true", "false", "false", "true", "false"]
    );
    assert_eq!(
        f.eval(l(
            sop(HasAny, true, false),
            vec![s("whoami"), s("rundll32")]
        ))
        .await,
        ["false", "true", "true", "false", "true"]
    );
    assert_eq!(
        f.eval(l(
            sop(HasAny, false, false),
            vec![dyn_lit(r#"["enc", "calc"]"#)]
        ))
        .await,
        ["false", "true", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(l(sop(HasAll, false, false), vec![s("cmd"), s("whoami")]))
            .await,
        ["true", "false", "false", "false", "false"]
    );
    assert_eq!(
        f.eval(l(
            sop(HasAll, false, false),
            vec![s("cmd"), s("powershell")]
        ))
        .await,
        ["false", "false", "false", "false", "false"]
    );
    assert_eq!(
        f.eval(l(sop(HasAny, false, false), vec![])).await,
        ["false", "false", "false", "false", "false"]
    );
    // A needle list held in a dynamic column.
    let g = Fixture::new(vec![
        strs("cmd", &[Some("net user admin"), Some("net group")]),
        dyns("words", &[Some(r#"["user","x"]"#), Some(r#"["user"]"#)]),
    ]);
    assert_eq!(
        g.eval(in_list(
            sop(HasAny, false, false),
            col("cmd"),
            vec![col("words")],
            g.schema()
        ))
        .await,
        ["true", "false"]
    );
    assert_eq!(
        g.eval(in_list(
            sop(In, false, true),
            s("user"),
            vec![col("words")],
            g.schema()
        ))
        .await,
        ["true", "true"]
    );
}

// ---------------------------------------------------------------- arithmetic

fn clock() -> Fixture {
    Fixture::new(vec![
        times(
            "t",
            &[
                Some("2024-03-10 12:30:00"),
                Some("2024-03-11 00:00:00.5"),
                None,
            ],
        ),
        times(
            "u",
            &[
                Some("2024-03-10 12:00:00"),
                Some("2024-03-10 00:00:00"),
                Some("2024-01-01"),
            ],
        ),
        spans("d", &[Some(US_PER_HOUR), Some(-US_PER_MIN), None]),
        longs("k", &[Some(7), Some(-7), Some(0)]),
        reals("x", &[Some(1.5), Some(-0.5), None]),
    ])
}

#[tokio::test]
async fn datetime_and_timespan_arithmetic() {
    let f = clock();
    let sc = f.schema();
    let b = |o, l: Expr, r: Expr| binary(o, l, r, sc);
    assert_eq!(
        f.eval(b(BinaryOp::Sub, col("t"), col("u"))).await,
        [
            (30 * US_PER_MIN).to_string(),
            (US_PER_DAY + 500_000).to_string(),
            "null".into()
        ]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Add, col("t"), col("d"))).await,
        ["2024-03-10T13:30:00Z", "2024-03-10T23:59:00.500Z", "null"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Sub, col("u"), span_lit(US_PER_DAY)))
            .await,
        [
            "2024-03-09T12:00:00Z",
            "2024-03-09T00:00:00Z",
            "2023-12-31T00:00:00Z"
        ]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Add, span_lit(US_PER_DAY), col("u")))
            .await,
        [
            "2024-03-11T12:00:00Z",
            "2024-03-11T00:00:00Z",
            "2024-01-02T00:00:00Z"
        ]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Add, col("d"), span_lit(US_PER_MIN)))
            .await,
        [
            (US_PER_HOUR + US_PER_MIN).to_string(),
            "0".into(),
            "null".into()
        ]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Mul, col("d"), n(2))).await,
        [
            (2 * US_PER_HOUR).to_string(),
            (-2 * US_PER_MIN).to_string(),
            "null".into()
        ]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Mul, lit(1.5), col("d"))).await,
        [
            (90 * US_PER_MIN).to_string(),
            (-90 * US_PER_SEC).to_string(),
            "null".into()
        ]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Div, col("d"), n(4))).await,
        [
            (15 * US_PER_MIN).to_string(),
            (-15 * US_PER_SEC).to_string(),
            "null".into()
        ]
    );
    assert_eq!(
        f.eval(b(
            BinaryOp::Div,
            span_lit(US_PER_DAY),
            span_lit(5 * US_PER_HOUR)
        ))
        .await,
        ["4.8", "4.8", "4.8"]
    );
    assert_eq!(
        f.eval(b(
            BinaryOp::Div,
            span_lit(US_PER_HOUR),
            span_lit(US_PER_SEC)
        ))
        .await,
        ["3600.0", "3600.0", "3600.0"]
    );
    assert_eq!(
        f.eval(unary(UnaryOp::Neg, col("d"), sc)).await,
        [
            (-US_PER_HOUR).to_string(),
            US_PER_MIN.to_string(),
            "null".into()
        ]
    );
    assert!(matches!(
        b(BinaryOp::Add, col("t"), col("u")),
        Err(FnError::Type(_))
    ));
}

#[tokio::test]
async fn numeric_arithmetic() {
    let f = clock();
    let sc = f.schema();
    let b = |o, l: Expr, r: Expr| binary(o, l, r, sc);
    // long / long is integer division (truncating), and a zero divisor gives null.
    assert_eq!(
        f.eval(b(BinaryOp::Div, col("k"), n(2))).await,
        ["3", "-3", "0"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Div, n(10), col("k"))).await,
        ["1", "-1", "null"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Mod, col("k"), n(4))).await,
        ["3", "-3", "0"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Add, col("k"), col("x"))).await,
        ["8.5", "-7.5", "null"]
    );
    assert_eq!(
        f.eval(b(BinaryOp::Div, col("x"), lit(2.0))).await,
        ["0.75", "-0.25", "null"]
    );
    assert_eq!(
        f.eval(unary(UnaryOp::Neg, col("k"), sc)).await,
        ["-7", "7", "0"]
    );
    let g = people();
    assert_eq!(
        g.eval(binary(
            BinaryOp::Add,
            member(col("extra"), "n"),
            n(1),
            g.schema()
        ))
        .await,
        ["6", "null", "null", "null"]
    );
}

#[tokio::test]
async fn between_numbers_and_times() {
    let f = clock();
    let sc = f.schema();
    assert_eq!(
        f.eval(between(col("k"), n(0), n(7), false, sc)).await,
        ["true", "false", "true"]
    );
    assert_eq!(
        f.eval(between(col("k"), n(0), n(7), true, sc)).await,
        ["false", "true", "false"]
    );
    // The range is [low, low + 1d]: half a second past it is out.
    assert_eq!(
        f.eval(between(
            col("t"),
            dt_lit("2024-03-10"),
            span_lit(US_PER_DAY),
            false,
            sc
        ))
        .await,
        ["true", "false", "null"]
    );
    assert_eq!(
        f.eval(between(
            col("t"),
            dt_lit("2024-03-10"),
            dt_lit("2024-03-10 23:59"),
            false,
            sc
        ))
        .await,
        ["true", "false", "null"]
    );
}

#[tokio::test]
async fn logic_and_not() {
    let f = Fixture::new(vec![
        bools("p", &[Some(true), Some(false), None]),
        dyns("j", &[Some("true"), Some("false"), None]),
    ]);
    let sc = f.schema();
    assert_eq!(
        f.eval(unary(UnaryOp::Not, col("p"), sc)).await,
        ["false", "true", "null"]
    );
    assert_eq!(
        f.eval(binary(BinaryOp::And, col("p"), col("j"), sc)).await,
        ["true", "false", "null"]
    );
    assert_eq!(
        f.eval(binary(BinaryOp::Or, col("p"), lit(true), sc)).await,
        ["true", "true", "true"]
    );
    assert_eq!(
        f.eval(call(&f, "not", vec![col("j")])).await,
        ["false", "true", "null"]
    );
}

// ---------------------------------------------------------------- dynamic access

fn events() -> Fixture {
    Fixture::new(vec![dyns(
        "af",
        &[
            Some(
                r#"{"User": {"Name": "bob", "Groups": ["a", "b", "c"]}, "Count": 3, "Flag": true, "Nested": {"x": [1, {"y": null}]}}"#,
            ),
            Some(r#"{"User": "plain", "Count": "12"}"#),
            Some("not json"),
            None,
        ],
    )])
}

#[tokio::test]
async fn member_and_index_access() {
    let f = events();
    let sc = f.schema();
    let user = member(col("af"), "User");
    assert_eq!(
        f.eval(Ok(member(user.clone(), "Name"))).await,
        ["bob", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(Ok(user.clone())).await,
        [
            r#"{"Name":"bob","Groups":["a","b","c"]}"#,
            "plain",
            "null",
            "null"
        ]
    );
    let groups = member(user.clone(), "Groups");
    assert_eq!(
        f.eval(index(groups.clone(), n(0), sc)).await,
        ["a", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(index(groups.clone(), n(-1), sc)).await,
        ["c", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(index(groups.clone(), n(3), sc)).await,
        ["null", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(index(col("af"), s("Count"), sc)).await,
        ["3", "12", "null", "null"]
    );
    assert_eq!(
        f.eval(Ok(member(col("af"), "Flag"))).await,
        ["true", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(Ok(member(member(col("af"), "Nested"), "x"))).await,
        [r#"[1,{"y":null}]"#, "null", "null", "null"]
    );
    // Chained accesses fuse into one call.
    assert!(matches!(member(user, "Name"), Expr::ScalarFunction(ref sf) if sf.args.len() == 3));
    assert_eq!(crate::ktype(&groups, sc), Ok(crate::KType::Dynamic));
    // parse_json of a dynamic column, then member access.
    let parsed = call(
        &f,
        "parse_json",
        vec![call(&f, "tostring", vec![col("af")]).unwrap_or(col("af"))],
    );
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(
        f.eval(Ok(member(parsed, "Count"))).await,
        ["3", "12", "null", "null"]
    );
}

#[tokio::test]
async fn dynamic_values_convert() {
    let f = events();
    let sc = f.schema();
    let count = member(col("af"), "Count");
    assert_eq!(
        f.eval(cast(count.clone(), TypeName::Long, sc)).await,
        ["3", "12", "null", "null"]
    );
    assert_eq!(
        f.eval(cast(count.clone(), TypeName::String, sc)).await,
        ["3", "12", "null", "null"]
    );
    assert_eq!(
        f.eval(call(
            &f,
            "array_length",
            vec![member(member(col("af"), "User"), "Groups")]
        ))
        .await,
        ["3", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(call(&f, "array_length", vec![col("af")])).await,
        ["null", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(call(&f, "bag_keys", vec![col("af")])).await,
        [
            r#"["User","Count","Flag","Nested"]"#,
            r#"["User","Count"]"#,
            "null",
            "null"
        ]
    );
    assert_eq!(
        f.eval(call(&f, "gettype", vec![member(col("af"), "User")]))
            .await,
        ["dictionary", "string", "null", "null"]
    );
    assert_eq!(
        f.eval(call(&f, "gettype", vec![member(col("af"), "Flag")]))
            .await,
        ["bool", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(call(&f, "todynamic", vec![s(r#"{"a" : 1}"#)])).await,
        [r#"{"a":1}"#; 4]
    );
    assert_eq!(
        f.eval(call(&f, "parse_json", vec![s("not json")])).await,
        ["not json"; 4]
    );
    assert_eq!(
        f.eval(call(&f, "parse_json", vec![s(r#""quoted""#)])).await,
        ["quoted"; 4]
    );
}

// ---------------------------------------------------------------- conversions

#[tokio::test]
async fn to_functions() {
    let f = Fixture::new(vec![
        strs(
            "s",
            &[Some("42"), Some(" 2.9 "), Some("abc"), Some("true"), None],
        ),
        reals("r", &[Some(2.5), Some(-2.5), Some(1e20), None, Some(0.0)]),
        bools(
            "b",
            &[Some(true), Some(false), None, Some(true), Some(false)],
        ),
    ]);
    let sc = f.schema();
    assert_eq!(
        f.eval(cast(col("s"), TypeName::Long, sc)).await,
        ["42", "2", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(cast(col("s"), TypeName::Real, sc)).await,
        ["42.0", "2.9", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(cast(col("s"), TypeName::Bool, sc)).await,
        ["true", "null", "null", "true", "null"]
    );
    assert_eq!(
        f.eval(cast(col("r"), TypeName::Long, sc)).await,
        ["2", "-2", "null", "null", "0"]
    );
    assert_eq!(
        f.eval(cast(col("r"), TypeName::Int, sc)).await,
        ["2", "-2", "null", "null", "0"]
    );
    assert_eq!(
        f.eval(cast(col("r"), TypeName::String, sc)).await,
        ["2.5", "-2.5", "1E+20", "", "0"]
    );
    assert_eq!(
        f.eval(cast(col("b"), TypeName::String, sc)).await,
        ["true", "false", "", "true", "false"]
    );
    assert_eq!(
        f.eval(cast(col("b"), TypeName::Long, sc)).await,
        ["1", "0", "null", "1", "0"]
    );
    assert_eq!(
        f.eval(cast(col("r"), TypeName::Bool, sc)).await,
        ["true", "true", "true", "null", "false"]
    );
    let g = Fixture::new(vec![strs(
        "t",
        &[
            Some("2024-01-02T03:04:05.5Z"),
            Some("2024-01-02 03:04"),
            Some("nope"),
        ],
    )]);
    let gs = g.schema();
    assert_eq!(
        g.eval(cast(col("t"), TypeName::DateTime, gs)).await,
        ["2024-01-02T03:04:05.500Z", "2024-01-02T03:04:00Z", "null"]
    );
    let dt = cast(col("t"), TypeName::DateTime, gs);
    let dt = match dt {
        Ok(d) => d,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(
        g.eval(cast(dt.clone(), TypeName::String, gs)).await,
        ["2024-01-02T03:04:05.5000000Z", "2024-01-02T03:04:00Z", ""]
    );
    // tolong of a datetime gives .NET ticks.
    assert_eq!(
        g.eval(cast(dt, TypeName::Long, gs)).await,
        ["638397614455000000", "638397614400000000", "null"]
    );
    let h = Fixture::new(vec![strs(
        "ts",
        &[
            Some("01:30:00"),
            Some("2.00:00:01.5"),
            Some("10m"),
            Some("x"),
        ],
    )]);
    assert_eq!(
        h.eval(cast(col("ts"), TypeName::TimeSpan, h.schema()))
            .await,
        [
            (90 * US_PER_MIN).to_string(),
            (2 * US_PER_DAY + 1_500_000).to_string(),
            (10 * US_PER_MIN).to_string(),
            "null".into()
        ]
    );
    let span = cast(col("ts"), TypeName::TimeSpan, h.schema());
    let span = match span {
        Ok(x) => x,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(
        h.eval(cast(span, TypeName::String, h.schema())).await,
        ["01:30:00", "2.00:00:01.5000000", "00:10:00", ""]
    );
    assert_eq!(
        h.eval(cast(
            s("{AB12CD34-0000-1111-2222-333344445555}"),
            TypeName::Guid,
            h.schema()
        ))
        .await,
        ["ab12cd34-0000-1111-2222-333344445555"; 4]
    );
}

// ---------------------------------------------------------------- string functions

#[tokio::test]
async fn string_functions() {
    let f = Fixture::new(vec![strs("v", &[Some("Hello World"), Some(""), None])]);
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("tolower", vec![col("v")])).await,
        ["hello world", "", "null"]
    );
    assert_eq!(
        f.eval(c("toupper", vec![col("v")])).await,
        ["HELLO WORLD", "", "null"]
    );
    assert_eq!(
        f.eval(c("strlen", vec![col("v")])).await,
        ["11", "0", "null"]
    );
    assert_eq!(
        f.eval(c("substring", vec![col("v"), n(6)])).await,
        ["World", "", ""]
    );
    assert_eq!(
        f.eval(c("substring", vec![col("v"), n(0), n(5)])).await,
        ["Hello", "", ""]
    );
    assert_eq!(
        f.eval(c("substring", vec![col("v"), n(-5), n(2)])).await,
        ["Wo", "", ""]
    );
    assert_eq!(
        f.eval(c("strcat", vec![col("v"), s("!"), n(1)])).await,
        ["Hello World!1", "!1", "!1"]
    );
    assert_eq!(
        f.eval(c("strcat_delim", vec![s("-"), s("a"), col("v"), s("b")]))
            .await,
        ["a-Hello World-b", "a--b", "a--b"]
    );
    assert_eq!(
        f.eval(c("split", vec![col("v"), s(" ")])).await,
        [r#"["Hello","World"]"#, r#"[""]"#, r#"[""]"#]
    );
    assert_eq!(
        f.eval(c("split", vec![col("v"), s(" "), n(1)])).await,
        [r#"["World"]"#, "[]", "[]"]
    );
    assert_eq!(
        f.eval(c("reverse", vec![col("v")])).await,
        ["dlroW olleH", "", ""]
    );
    assert_eq!(
        f.eval(c("indexof", vec![col("v"), s("o")])).await,
        ["4", "-1", "-1"]
    );
    assert_eq!(
        f.eval(c("indexof", vec![col("v"), s("o"), n(5)])).await,
        ["7", "null", "null"]
    );
    assert_eq!(
        f.eval(c("indexof", vec![col("v"), s("o"), n(0), n(-1), n(2)]))
            .await,
        ["7", "-1", "-1"]
    );
    assert_eq!(
        f.eval(c("countof", vec![s("aaaa"), s("aa")])).await,
        ["3"; 3]
    );
    assert_eq!(
        f.eval(c("countof", vec![s("aaaa"), s("aa"), s("regex")]))
            .await,
        ["2"; 3]
    );
    assert_eq!(
        f.eval(c("countof", vec![col("v"), s("l")])).await,
        ["3", "0", "0"]
    );
    assert_eq!(
        f.eval(c("replace_string", vec![col("v"), s("World"), s("There")]))
            .await,
        ["Hello There", "", ""]
    );
    assert_eq!(
        f.eval(c(
            "replace_regex",
            vec![col("v"), s(r"(\w+) (\w+)"), s(r"\2 \1")]
        ))
        .await,
        ["World Hello", "", ""]
    );
    assert_eq!(
        f.eval(c("replace", vec![s("o"), s("0"), col("v")])).await,
        ["Hell0 W0rld", "", ""]
    );
    assert_eq!(
        f.eval(c("trim", vec![s("-+"), s("--abc---")])).await,
        ["abc"; 3]
    );
    assert_eq!(
        f.eval(c("trim_start", vec![s(r"\s"), s("  x  ")])).await,
        ["x  "; 3]
    );
    assert_eq!(
        f.eval(c("trim_end", vec![s("d"), col("v")])).await,
        ["Hello Worl", "", ""]
    );
    assert_eq!(f.eval(c("isascii", vec![s("é")])).await, ["false"; 3]);
    assert_eq!(f.eval(c("string_size", vec![s("é")])).await, ["2"; 3]);
    assert_eq!(
        f.eval(c("strrep", vec![s("ab"), n(3), s(",")])).await,
        ["ab,ab,ab"; 3]
    );
    assert_eq!(
        f.eval(c("strcmp", vec![col("v"), s("Hello")])).await,
        ["1", "-1", "-1"]
    );
    assert_eq!(
        f.eval(c("hash_sha256", vec![s("abc")])).await,
        ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; 3]
    );
    assert_eq!(
        f.eval(c("hash_md5", vec![s("abc")])).await,
        ["900150983cd24fb0d6963f7d28e17f72"; 3]
    );
}

#[tokio::test]
async fn indexof_documented_examples() {
    let f = Fixture::one();
    let ix = |args: Vec<Expr>| call(&f, "indexof", args);
    let abc = || s("abcdefg");
    assert_eq!(f.eval(ix(vec![abc(), s("cde")])).await, ["2"]);
    assert_eq!(f.eval(ix(vec![abc(), s("cde"), n(1), n(4)])).await, ["2"]);
    assert_eq!(f.eval(ix(vec![abc(), s("cde"), n(1), n(2)])).await, ["-1"]);
    assert_eq!(f.eval(ix(vec![abc(), s("cde"), n(3), n(4)])).await, ["-1"]);
    assert_eq!(f.eval(ix(vec![abc(), s("cde"), n(-5)])).await, ["2"]);
    assert_eq!(
        f.eval(ix(vec![n(1_234_567), n(5), n(1), n(4)])).await,
        ["4"]
    );
    assert_eq!(f.eval(ix(vec![abc(), s("cde"), n(2), n(-1)])).await, ["2"]);
    assert_eq!(
        f.eval(ix(vec![s("abcdefgabcdefg"), s("cde"), n(1), n(10), n(2)]))
            .await,
        ["9"]
    );
    assert_eq!(
        f.eval(ix(vec![s("abcdefgabcdefg"), s("cde"), n(1), n(-1), n(3)]))
            .await,
        ["-1"]
    );
    assert_eq!(
        f.eval(ix(vec![abc(), s("cde"), n(1), n(-2)])).await,
        ["null"]
    );
    assert_eq!(
        f.eval(ix(vec![abc(), s("cde"), n(0), n(-1), n(-1)])).await,
        ["null"]
    );
}

#[tokio::test]
async fn extract_functions() {
    let f = Fixture::new(vec![strs(
        "v",
        &[Some("user=bob id=42 id=43"), Some("nothing"), None],
    )]);
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("extract", vec![s(r"id=(\d+)"), n(1), col("v")]))
            .await,
        ["42", "null", "null"]
    );
    assert_eq!(
        f.eval(c("extract", vec![s(r"user=(\w+)"), n(0), col("v")]))
            .await,
        ["user=bob", "null", "null"]
    );
    assert_eq!(
        f.eval(c(
            "extract",
            vec![s(r"id=(\d+)"), n(1), col("v"), s("long")]
        ))
        .await,
        ["42", "null", "null"]
    );
    assert_eq!(
        f.eval(c("extract_all", vec![s(r"id=(\d+)"), col("v")]))
            .await,
        [r#"["42","43"]"#, "null", "null"]
    );
    assert_eq!(
        f.eval(c("extract_all", vec![s(r"(\w+)=(\w+)"), col("v")]))
            .await,
        [
            r#"[["user","bob"],["id","42"],["id","43"]]"#,
            "null",
            "null"
        ]
    );
}

#[tokio::test]
async fn encodings_and_parsers() {
    let f = Fixture::one();
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("base64_encode_tostring", vec![s("Kusto1")])).await,
        ["S3VzdG8x"]
    );
    assert_eq!(
        f.eval(c("base64_decode_tostring", vec![s("S3VzdG8x")]))
            .await,
        ["Kusto1"]
    );
    assert_eq!(
        f.eval(c("base64_decode_tostring", vec![s("!!!")])).await,
        ["null"]
    );
    assert_eq!(
        f.eval(c("url_encode", vec![s("https://www.bing.com/hello world")]))
            .await,
        ["https%3a%2f%2fwww.bing.com%2fhello+world"]
    );
    assert_eq!(
        f.eval(c("url_encode_component", vec![s("a b&c")])).await,
        ["a%20b%26c"]
    );
    assert_eq!(
        f.eval(c("url_decode", vec![s("https%3a%2f%2fwww.bing.com%2f")]))
            .await,
        ["https://www.bing.com/"]
    );
    assert_eq!(f.eval(c("url_decode", vec![s("%zz")])).await, ["null"]);
    assert_eq!(
        f.eval(c(
            "parse_command_line",
            vec![s(r#""C:\Program Files\x.exe" -a "b c" d\"e"#), s("windows")]
        ))
        .await,
        [r#"["C:\\Program Files\\x.exe","-a","b c","d\"e"]"#]
    );
    assert_eq!(
        f.eval(c(
            "parse_url",
            vec![s("https://u:p@host.com:8080/a/b?k=v#frag")]
        ))
        .await,
        [
            r#"{"Scheme":"https","Host":"host.com","Port":"8080","Path":"/a/b","Username":"u","Password":"p","Query Parameters":{"k":"v"},"Fragment":"frag"}"#
        ]
    );
    assert_eq!(
        f.eval(c("parse_path", vec![s(r"C:\temp\file.txt")])).await,
        [
            r#"{"Scheme":"","RootPath":"C:","DirectoryPath":"C:\\temp","DirectoryName":"temp","Filename":"file.txt","Extension":"txt","AlternateDataStreamName":""}"#
        ]
    );
    let url = member(
        c("parse_url", vec![s("http://h/p?q=1")]).unwrap_or(lit(0)),
        "Host",
    );
    assert_eq!(f.eval(Ok(url)).await, ["h"]);
}

// ---------------------------------------------------------------- conditionals

#[tokio::test]
async fn conditionals_and_emptiness() {
    let f = people();
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    let sc = f.schema();
    let older = binary(BinaryOp::Gt, col("age"), n(35), sc).unwrap_or(lit(false));
    assert_eq!(
        f.eval(c("iff", vec![older.clone(), s("old"), s("young")]))
            .await,
        ["young", "old", "young", "young"]
    );
    assert_eq!(
        f.eval(c("iif", vec![older, n(1), n(0)])).await,
        ["0", "1", "0", "0"]
    );
    let is30 = binary(BinaryOp::Eq, col("age"), n(30), sc).unwrap_or(lit(false));
    let is40 = binary(BinaryOp::Eq, col("age"), n(40), sc).unwrap_or(lit(false));
    assert_eq!(
        f.eval(c(
            "case",
            vec![is30, s("thirty"), is40, s("forty"), s("other")]
        ))
        .await,
        ["thirty", "forty", "other", "thirty"]
    );
    assert!(matches!(
        c("case", vec![lit(true), s("x")]),
        Err(FnError::Arity { .. })
    ));
    assert_eq!(
        f.eval(c("coalesce", vec![col("name"), s("anon")])).await,
        ["Alice", "alice", "anon", "anon"]
    );
    assert_eq!(
        f.eval(c("coalesce", vec![col("age"), n(0)])).await,
        ["30", "40", "0", "30"]
    );
    assert_eq!(
        f.eval(c("isempty", vec![col("name")])).await,
        ["false", "false", "true", "true"]
    );
    assert_eq!(
        f.eval(c("isnotempty", vec![col("name")])).await,
        ["true", "true", "false", "false"]
    );
    assert_eq!(
        f.eval(c("isnull", vec![col("age")])).await,
        ["false", "false", "true", "false"]
    );
    assert_eq!(
        f.eval(c("isnotnull", vec![col("age")])).await,
        ["true", "true", "false", "true"]
    );
    // Kusto strings are never null.
    assert_eq!(
        f.eval(c("isnull", vec![col("name")])).await,
        ["false", "false", "false", "false"]
    );
    assert_eq!(
        f.eval(c("isnull", vec![member(col("extra"), "n")])).await,
        ["false", "true", "true", "true"]
    );
    assert_eq!(
        f.eval(c("min_of", vec![col("age"), n(35)])).await,
        ["30", "35", "35", "30"]
    );
    assert_eq!(
        f.eval(c("max_of", vec![col("age"), n(35), n(1)])).await,
        ["35", "40", "35", "35"]
    );
}

// ---------------------------------------------------------------- dynamic functions

#[tokio::test]
async fn dynamic_functions() {
    let f = Fixture::new(vec![
        dyns("a", &[Some("[1,2,2,3]"), Some(r#"["x"]"#), None]),
        dyns("b", &[Some("[3,4]"), Some("[]"), Some("[1]")]),
        longs("k", &[Some(1), Some(2), None]),
        strs("t", &[Some("p"), Some("q"), None]),
    ]);
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("pack_array", vec![col("k"), col("t"), col("a")]))
            .await,
        [
            r#"[1,"p",[1,2,2,3]]"#,
            r#"[2,"q",["x"]]"#,
            "[null,null,null]"
        ]
    );
    assert_eq!(
        f.eval(c("bag_pack", vec![s("k"), col("k"), s("t"), col("t")]))
            .await,
        [
            r#"{"k":1,"t":"p"}"#,
            r#"{"k":2,"t":"q"}"#,
            r#"{"k":null,"t":null}"#
        ]
    );
    assert_eq!(
        f.eval(c("pack", vec![s("n"), col("a")])).await,
        [r#"{"n":[1,2,2,3]}"#, r#"{"n":["x"]}"#, r#"{"n":null}"#]
    );
    assert_eq!(
        f.eval(c("set_union", vec![col("a"), col("b")])).await,
        ["[1,2,3,4]", r#"["x"]"#, "null"]
    );
    assert_eq!(
        f.eval(c("set_intersect", vec![col("a"), col("b")])).await,
        ["[3]", "[]", "null"]
    );
    assert_eq!(
        f.eval(c("set_difference", vec![col("a"), col("b")])).await,
        ["[1,2]", r#"["x"]"#, "null"]
    );
    assert_eq!(
        f.eval(c("set_has_element", vec![col("a"), n(2)])).await,
        ["true", "false", "false"]
    );
    assert_eq!(
        f.eval(c("set_has_element", vec![col("a"), s("x")])).await,
        ["false", "true", "false"]
    );
    assert_eq!(
        f.eval(c("array_concat", vec![col("a"), col("b")])).await,
        ["[1,2,2,3,3,4]", r#"["x"]"#, "null"]
    );
    assert_eq!(
        f.eval(c("array_slice", vec![col("a"), n(1), n(2)])).await,
        ["[2,2]", "[]", "null"]
    );
    assert_eq!(
        f.eval(c("array_slice", vec![col("a"), n(-2), n(-1)])).await,
        ["[2,3]", r#"["x"]"#, "null"]
    );
    assert_eq!(
        f.eval(c("array_index_of", vec![col("a"), n(3)])).await,
        ["3", "-1", "null"]
    );
    assert_eq!(
        f.eval(c("array_sort_desc", vec![col("a")])).await,
        ["[3,2,2,1]", r#"["x"]"#, "null"]
    );
    assert_eq!(
        f.eval(c("array_sort_asc", vec![dyn_lit(r#"[3, null, 1]"#)]))
            .await,
        ["[1,3,null]"; 3]
    );
    assert_eq!(
        f.eval(c("array_reverse", vec![col("b")])).await,
        ["[4,3]", "[]", "[1]"]
    );
    assert_eq!(
        f.eval(c("array_sum", vec![col("a")])).await,
        ["8.0", "null", "null"]
    );
    assert_eq!(
        f.eval(c("zip", vec![col("b"), dyn_lit(r#"["a"]"#)])).await,
        [r#"[[3,"a"],[4,null]]"#, r#"[[null,"a"]]"#, r#"[[1,"a"]]"#]
    );
    assert_eq!(
        f.eval(c("strcat_array", vec![col("a"), s("-")])).await,
        ["1-2-2-3", "x", "null"]
    );
    assert_eq!(
        f.eval(c("bag_has_key", vec![dyn_lit(r#"{"k": 1}"#), s("k")]))
            .await,
        ["true"; 3]
    );
    assert_eq!(
        f.eval(c(
            "bag_merge",
            vec![dyn_lit(r#"{"a": 1}"#), dyn_lit(r#"{"a": 2, "b": 3}"#)]
        ))
        .await,
        [r#"{"a":1,"b":3}"#; 3]
    );
    assert_eq!(
        f.eval(c(
            "bag_remove_keys",
            vec![dyn_lit(r#"{"a": 1, "b": 2}"#), dyn_lit(r#"["a"]"#)]
        ))
        .await,
        [r#"{"b":2}"#; 3]
    );
    assert_eq!(f.eval(c("pack_array", vec![])).await, ["[]"; 3]);
    // Dynamic results keep their tag, so they nest as JSON rather than as strings.
    let nested = c(
        "pack_array",
        vec![c("pack_array", vec![col("k")]).unwrap_or(lit(0))],
    );
    assert_eq!(f.eval(nested).await, ["[[1]]", "[[2]]", "[[null]]"]);
}

// ---------------------------------------------------------------- datetime functions

#[tokio::test]
async fn calendar_functions() {
    let f = Fixture::new(vec![times(
        "t",
        &[
            Some("2017-11-01 13:14:15.5"),
            Some("2024-02-29 00:00:00"),
            None,
        ],
    )]);
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("startofday", vec![col("t")])).await,
        ["2017-11-01T00:00:00Z", "2024-02-29T00:00:00Z", "null"]
    );
    assert_eq!(
        f.eval(c("startofweek", vec![col("t")])).await,
        ["2017-10-29T00:00:00Z", "2024-02-25T00:00:00Z", "null"]
    );
    assert_eq!(
        f.eval(c("startofmonth", vec![col("t"), n(1)])).await,
        ["2017-12-01T00:00:00Z", "2024-03-01T00:00:00Z", "null"]
    );
    assert_eq!(
        f.eval(c("startofyear", vec![col("t")])).await,
        ["2017-01-01T00:00:00Z", "2024-01-01T00:00:00Z", "null"]
    );
    assert_eq!(
        f.eval(c("endofday", vec![col("t")])).await,
        [
            "2017-11-01T23:59:59.999999Z",
            "2024-02-29T23:59:59.999999Z",
            "null"
        ]
    );
    assert_eq!(
        f.eval(c("endofmonth", vec![col("t")])).await,
        [
            "2017-11-30T23:59:59.999999Z",
            "2024-02-29T23:59:59.999999Z",
            "null"
        ]
    );
    assert_eq!(
        f.eval(c("dayofweek", vec![col("t")])).await,
        [
            (3 * US_PER_DAY).to_string(),
            (4 * US_PER_DAY).to_string(),
            "null".into()
        ]
    );
    assert_eq!(
        f.eval(c("dayofmonth", vec![col("t")])).await,
        ["1", "29", "null"]
    );
    assert_eq!(
        f.eval(c("dayofyear", vec![col("t")])).await,
        ["305", "60", "null"]
    );
    assert_eq!(
        f.eval(c("hourofday", vec![col("t")])).await,
        ["13", "0", "null"]
    );
    assert_eq!(
        f.eval(c("getmonth", vec![col("t")])).await,
        ["11", "2", "null"]
    );
    assert_eq!(
        f.eval(c("monthofyear", vec![col("t")])).await,
        ["11", "2", "null"]
    );
    assert_eq!(
        f.eval(c("getyear", vec![col("t")])).await,
        ["2017", "2024", "null"]
    );
    assert_eq!(
        f.eval(c("week_of_year", vec![col("t")])).await,
        ["44", "9", "null"]
    );
    assert_eq!(
        f.eval(c("datetime_part", vec![s("Minute"), col("t")]))
            .await,
        ["14", "0", "null"]
    );
    assert_eq!(
        f.eval(c(
            "format_datetime",
            vec![col("t"), s("yyyy-MM-dd HH:mm:ss.fff")]
        ))
        .await,
        ["2017-11-01 13:14:15.500", "2024-02-29 00:00:00.000", "null"]
    );
    assert_eq!(
        f.eval(c("format_datetime", vec![col("t"), s("M/d/yy h:mm tt")]))
            .await,
        ["11/1/17 1:14 PM", "2/29/24 12:00 AM", "null"]
    );
}

#[tokio::test]
async fn datetime_add_and_diff() {
    let f = Fixture::one();
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    let d = |t: &str| dt_lit(t);
    assert_eq!(
        f.eval(c("datetime_add", vec![s("month"), n(1), d("2024-01-31")]))
            .await,
        ["2024-02-29T00:00:00Z"]
    );
    assert_eq!(
        f.eval(c("datetime_add", vec![s("year"), n(-1), d("2024-02-29")]))
            .await,
        ["2023-02-28T00:00:00Z"]
    );
    assert_eq!(
        f.eval(c("datetime_add", vec![s("hour"), n(36), d("2024-01-01")]))
            .await,
        ["2024-01-02T12:00:00Z"]
    );
    assert_eq!(
        f.eval(c("datetime_add", vec![s("week"), n(1), d("2024-01-01")]))
            .await,
        ["2024-01-08T00:00:00Z"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_add",
            vec![s("fortnight"), n(1), d("2024-01-01")]
        ))
        .await,
        ["null"]
    );
    // The examples of Kusto's documentation.
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![s("year"), d("2017-01-01"), d("2000-12-31")]
        ))
        .await,
        ["17"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![s("quarter"), d("2017-07-01"), d("2017-03-30")]
        ))
        .await,
        ["2"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![s("month"), d("2017-01-01"), d("2015-12-30")]
        ))
        .await,
        ["13"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![s("week"), d("2017-10-29 00:00"), d("2017-09-30 23:59")]
        ))
        .await,
        ["5"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![s("day"), d("2017-10-29 00:00"), d("2017-09-30 23:59")]
        ))
        .await,
        ["29"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![s("hour"), d("2017-10-31 01:00"), d("2017-10-30 23:59")]
        ))
        .await,
        ["2"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![
                s("minute"),
                d("2017-10-30 23:05:01"),
                d("2017-10-30 23:00:59")
            ]
        ))
        .await,
        ["5"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![
                s("second"),
                d("2017-10-30 23:00:10.100"),
                d("2017-10-30 23:00:00.900")
            ]
        ))
        .await,
        ["10"]
    );
    assert_eq!(
        f.eval(c(
            "datetime_diff",
            vec![
                s("millisecond"),
                d("2017-10-30 23:00:00.200100"),
                d("2017-10-30 23:00:00.100900")
            ]
        ))
        .await,
        ["100"]
    );
    assert_eq!(
        f.eval(c(
            "make_datetime",
            vec![n(2017), n(10), n(1), n(12), n(10), lit(30.5)]
        ))
        .await,
        ["2017-10-01T12:10:30.500Z"]
    );
    assert_eq!(
        f.eval(c("make_datetime", vec![n(2017), n(2), n(30)])).await,
        ["null"]
    );
    assert_eq!(
        f.eval(c("make_timespan", vec![n(1), n(30)])).await,
        [(90 * US_PER_MIN).to_string()]
    );
    assert_eq!(
        f.eval(c("make_timespan", vec![n(2), n(1), n(0), lit(1.5)]))
            .await,
        [(2 * US_PER_DAY + US_PER_HOUR + 1_500_000).to_string()]
    );
    assert_eq!(
        f.eval(c("unixtime_seconds_todatetime", vec![n(1_546_300_800)]))
            .await,
        ["2019-01-01T00:00:00Z"]
    );
    assert_eq!(
        f.eval(c(
            "unixtime_milliseconds_todatetime",
            vec![n(1_546_300_800_123)]
        ))
        .await,
        ["2019-01-01T00:00:00.123Z"]
    );
    assert_eq!(
        f.eval(c(
            "format_timespan",
            vec![
                span_lit(US_PER_DAY + 2 * US_PER_HOUR + 3 * US_PER_MIN),
                s("d.hh:mm:ss")
            ]
        ))
        .await,
        ["1.02:03:00"]
    );
}

#[tokio::test]
async fn now_and_ago_fold_to_the_same_instant() {
    let f = Fixture::one();
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    let ago = c("ago", vec![span_lit(US_PER_HOUR)]).unwrap_or(lit(0));
    let now = c("now", vec![]).unwrap_or(lit(0));
    let diff = binary(BinaryOp::Sub, now.clone(), ago, f.schema());
    assert_eq!(f.eval(diff).await, [US_PER_HOUR.to_string()]);
    let later = c("now", vec![span_lit(US_PER_MIN)]).unwrap_or(lit(0));
    assert_eq!(
        f.eval(binary(BinaryOp::Sub, later, now, f.schema())).await,
        [US_PER_MIN.to_string()]
    );
}

#[tokio::test]
async fn bin_numbers_times_and_spans() {
    let f = Fixture::new(vec![
        longs("n", &[Some(7), Some(-7), Some(10), None]),
        reals("r", &[Some(4.5), Some(-0.5), Some(10.0), None]),
        times(
            "t",
            &[
                Some("2024-03-10 13:45:07"),
                Some("1969-12-31 23:30:00"),
                Some("2024-03-10 00:00:00"),
                None,
            ],
        ),
        spans(
            "d",
            &[Some(90 * US_PER_MIN), Some(-US_PER_MIN), Some(0), None],
        ),
    ]);
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("bin", vec![col("n"), n(5)])).await,
        ["5", "-10", "10", "null"]
    );
    assert_eq!(
        f.eval(c("bin", vec![col("r"), n(1)])).await,
        ["4.0", "-1.0", "10.0", "null"]
    );
    assert_eq!(
        f.eval(c("bin", vec![col("r"), lit(2.5)])).await,
        ["2.5", "-2.5", "10.0", "null"]
    );
    assert_eq!(
        f.eval(c("floor", vec![col("n"), n(3)])).await,
        ["6", "-9", "9", "null"]
    );
    assert_eq!(
        f.eval(c("bin", vec![col("n"), n(0)])).await,
        ["null", "null", "null", "null"]
    );
    assert_eq!(
        f.eval(c("bin", vec![col("t"), span_lit(US_PER_HOUR)]))
            .await,
        [
            "2024-03-10T13:00:00Z",
            "1969-12-31T23:00:00Z",
            "2024-03-10T00:00:00Z",
            "null"
        ]
    );
    assert_eq!(
        f.eval(c("bin", vec![col("t"), span_lit(US_PER_DAY)])).await,
        [
            "2024-03-10T00:00:00Z",
            "1969-12-31T00:00:00Z",
            "2024-03-10T00:00:00Z",
            "null"
        ]
    );
    assert_eq!(
        f.eval(c("bin", vec![col("d"), span_lit(US_PER_HOUR)]))
            .await,
        [
            US_PER_HOUR.to_string(),
            (-US_PER_HOUR).to_string(),
            "0".into(),
            "null".into()
        ]
    );
    assert_eq!(
        f.eval(c(
            "bin_at",
            vec![col("t"), span_lit(US_PER_DAY), dt_lit("2024-03-09 12:00")]
        ))
        .await,
        [
            "2024-03-10T12:00:00Z",
            "1969-12-31T12:00:00Z",
            "2024-03-09T12:00:00Z",
            "null"
        ]
    );
    assert_eq!(
        f.eval(c("bin_at", vec![col("n"), n(5), n(1)])).await,
        ["6", "-9", "6", "null"]
    );
    assert!(matches!(
        c("bin", vec![col("t"), n(5)]),
        Err(FnError::Type(_))
    ));
    assert_eq!(
        f.eval(c(
            "bin",
            vec![s("2024-03-10T13:45:07Z"), span_lit(US_PER_HOUR)]
        ))
        .await,
        ["2024-03-10T13:00:00Z"; 4]
    );
}

// ---------------------------------------------------------------- math

#[tokio::test]
async fn math_functions() {
    let f = Fixture::new(vec![
        reals("x", &[Some(2.5), Some(-2.5), Some(0.0), None]),
        ints("i", &[Some(-3), Some(4), Some(0), None]),
    ]);
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("abs", vec![col("i")])).await,
        ["3", "4", "0", "null"]
    );
    assert_eq!(
        f.eval(c("round", vec![col("x")])).await,
        ["3.0", "-3.0", "0.0", "null"]
    );
    assert_eq!(
        f.eval(c("round", vec![lit(1.2345), n(2)])).await,
        ["1.23", "1.23", "1.23", "1.23"]
    );
    assert_eq!(
        f.eval(c("ceiling", vec![col("x")])).await,
        ["3.0", "-2.0", "0.0", "null"]
    );
    assert_eq!(f.eval(c("pow", vec![n(2), n(10)])).await, ["1024.0"; 4]);
    assert_eq!(f.eval(c("sqrt", vec![n(16)])).await, ["4.0"; 4]);
    assert_eq!(f.eval(c("log10", vec![n(1000)])).await, ["3.0"; 4]);
    assert_eq!(f.eval(c("log2", vec![n(8)])).await, ["3.0"; 4]);
    assert_eq!(f.eval(c("log", vec![n(1)])).await, ["0.0"; 4]);
    assert_eq!(f.eval(c("exp", vec![n(0)])).await, ["1.0"; 4]);
    assert_eq!(f.eval(c("exp10", vec![n(2)])).await, ["100.0"; 4]);
    assert_eq!(
        f.eval(c("sign", vec![col("x")])).await,
        ["1.0", "-1.0", "0.0", "null"]
    );
    assert_eq!(
        f.eval(c(
            "isnan",
            vec![c("sqrt", vec![col("x")]).unwrap_or(lit(0))]
        ))
        .await,
        ["false", "true", "false", "null"]
    );
    assert_eq!(
        f.eval(c(
            "isinf",
            vec![binary(BinaryOp::Div, lit(1.0), col("x"), f.schema()).unwrap_or(lit(0))]
        ))
        .await,
        ["false", "false", "true", "null"]
    );
    assert_eq!(
        f.eval(c("isfinite", vec![col("x")])).await,
        ["true", "true", "true", "null"]
    );
    let r = f.eval(c("rand", vec![n(10)])).await;
    assert!(
        r.iter()
            .all(|v| v.parse::<i64>().is_ok_and(|v| (0..10).contains(&v))),
        "{r:?}"
    );
}

// ---------------------------------------------------------------- ip

#[tokio::test]
async fn ipv4_functions() {
    let f = Fixture::new(vec![strs(
        "ip",
        &[
            Some("10.1.2.3"),
            Some("172.32.0.1"),
            Some("192.168.7.7/24"),
            Some("not an ip"),
            None,
        ],
    )]);
    let c = |name: &str, args: Vec<Expr>| call(&f, name, args);
    assert_eq!(
        f.eval(c("ipv4_is_private", vec![col("ip")])).await,
        ["true", "false", "true", "null", "null"]
    );
    assert_eq!(
        f.eval(c("parse_ipv4", vec![col("ip")])).await,
        ["167838211", "2887778305", "3232237312", "null", "null"]
    );
    assert_eq!(
        f.eval(c("ipv4_is_in_range", vec![col("ip"), s("10.0.0.0/8")]))
            .await,
        ["true", "false", "false", "null", "null"]
    );
    assert_eq!(
        f.eval(c(
            "ipv4_is_in_any_range",
            vec![col("ip"), dyn_lit(r#"["172.32.0.0/16", "10.1.0.0/16"]"#)]
        ))
        .await,
        ["true", "true", "false", "null", "null"]
    );
    assert_eq!(
        f.eval(c("ipv4_netmask_suffix", vec![col("ip")])).await,
        ["32", "32", "24", "null", "null"]
    );
    assert_eq!(
        f.eval(c("ipv4_compare", vec![s("127.0.0.1"), s("127.0.0.2")]))
            .await,
        ["-1"; 5]
    );
    assert_eq!(
        f.eval(c(
            "ipv4_compare",
            vec![s("192.168.1.1"), s("192.168.1.255"), n(24)]
        ))
        .await,
        ["0"; 5]
    );
    assert_eq!(
        f.eval(c(
            "ipv4_is_match",
            vec![s("192.168.1.1/24"), s("192.168.1.255")]
        ))
        .await,
        ["true"; 5]
    );
    assert_eq!(
        f.eval(c("format_ipv4", vec![s("192.168.1.255"), n(24)]))
            .await,
        ["192.168.1.0"; 5]
    );
    assert_eq!(
        f.eval(c("format_ipv4", vec![n(3_232_235_777)])).await,
        ["192.168.1.1"; 5]
    );
    assert_eq!(
        f.eval(c("format_ipv4_mask", vec![s("192.168.1.255"), n(24)]))
            .await,
        ["192.168.1.0/24"; 5]
    );
    assert_eq!(
        f.eval(c("ipv6_compare", vec![s("::ffff:7f00:1"), s("127.0.0.1")]))
            .await,
        ["0"; 5]
    );
    assert_eq!(
        f.eval(c(
            "ipv6_is_match",
            vec![
                s("fe80::85d:e82c:9446:7994"),
                s("fe80::85d:e82c:9446:7995"),
                n(120)
            ]
        ))
        .await,
        ["true"; 5]
    );
    assert_eq!(
        f.eval(c(
            "has_ipv4",
            vec![s("from 10.1.2.3:443 ok"), s("10.1.2.3")]
        ))
        .await,
        ["true"; 5]
    );
    assert_eq!(
        f.eval(c("has_ipv4", vec![s("from 10.1.2.30"), s("10.1.2.3")]))
            .await,
        ["false"; 5]
    );
}

// ---------------------------------------------------------------- aggregations

fn logons() -> Fixture {
    Fixture::new(vec![
        strs(
            "user",
            &[Some("a"), Some("a"), Some("b"), Some("a"), Some("b"), None],
        ),
        longs("n", &[Some(1), Some(2), Some(3), None, Some(5), Some(6)]),
        strs(
            "host",
            &[
                Some("h1"),
                Some("h2"),
                Some("h1"),
                Some("h1"),
                None,
                Some("h3"),
            ],
        ),
        dyns(
            "tags",
            &[
                Some(r#"["x","y"]"#),
                Some(r#"["y"]"#),
                Some(r#"["z"]"#),
                None,
                Some("[]"),
                Some(r#"{"k":1}"#),
            ],
        ),
        times(
            "t",
            &[
                Some("2024-01-01"),
                Some("2024-01-03"),
                Some("2024-01-02"),
                Some("2024-01-04"),
                Some("2024-01-05"),
                None,
            ],
        ),
    ])
}

#[tokio::test]
async fn counting_aggregations() {
    let f = logons();
    let sc = f.schema();
    let a = |name: &str, args: Vec<Expr>| aggregate(name, args, sc);
    let big = binary(BinaryOp::Gt, col("n"), n(1), sc).unwrap_or(lit(false));
    let r = f
        .agg(
            vec![col("user")],
            vec![
                a("count", vec![]),
                a("countif", vec![big.clone()]),
                a("dcount", vec![col("host")]),
                a("dcountif", vec![col("host"), big]),
                a("sum", vec![col("n")]),
                a("avg", vec![col("n")]),
            ],
        )
        .await;
    // Groups sorted: null, "a", "b".
    assert_eq!(r[0], ["1", "3", "2"]);
    assert_eq!(r[1], ["1", "1", "2"]);
    assert_eq!(r[2], ["1", "2", "1"]);
    assert_eq!(r[3], ["1", "1", "1"]);
    assert_eq!(r[4], ["6", "3", "8"]);
    assert_eq!(r[5], ["6.0", "1.5", "4.0"]);
}

#[tokio::test]
async fn filtered_and_statistical_aggregations() {
    let f = logons();
    let sc = f.schema();
    let a = |name: &str, args: Vec<Expr>| aggregate(name, args, sc);
    let is_a = binary(BinaryOp::Eq, col("user"), s("a"), sc).unwrap_or(lit(false));
    let r = f
        .agg(
            vec![],
            vec![
                a("sumif", vec![col("n"), is_a.clone()]),
                a("minif", vec![col("n"), is_a.clone()]),
                a("maxif", vec![col("t"), is_a.clone()]),
                a("min", vec![col("t")]),
                a("max", vec![col("host")]),
                a("avgif", vec![col("n"), is_a]),
                a("variance", vec![col("n")]),
                a("variancep", vec![col("n")]),
                a("stdev", vec![col("n")]),
                a("percentile", vec![col("n"), n(50)]),
                a("percentile", vec![col("n"), n(100)]),
                a("percentile", vec![col("t"), n(0)]),
            ],
        )
        .await;
    assert_eq!(r[0], ["3"]);
    assert_eq!(r[1], ["1"]);
    assert_eq!(r[2], ["2024-01-04T00:00:00Z"]);
    assert_eq!(r[3], ["2024-01-01T00:00:00Z"]);
    assert_eq!(r[4], ["h3"]);
    assert_eq!(r[5], ["1.5"]);
    let near = |v: &[String], want: f64| {
        v.first()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| (v - want).abs() < 1e-9)
    };
    assert!(near(&r[6], 4.3), "{:?}", r[6]);
    assert!(near(&r[7], 3.44), "{:?}", r[7]);
    assert!(near(&r[8], 4.3f64.sqrt()), "{:?}", r[8]);
    // Nearest rank over [1, 2, 3, 5, 6]: rank ceil(2.5) = 3.
    assert_eq!(r[9], ["3"]);
    assert_eq!(r[10], ["6"]);
    assert_eq!(r[11], ["2024-01-01T00:00:00Z"]);
}

#[tokio::test]
async fn collecting_aggregations() {
    let f = logons();
    let sc = f.schema();
    let a = |name: &str, args: Vec<Expr>| aggregate(name, args, sc);
    let r = f
        .agg(
            vec![col("user")],
            vec![
                a("make_list", vec![col("host")]),
                a("make_set", vec![col("host")]),
                a("make_set", vec![col("tags")]),
                a("make_list", vec![col("tags")]),
                a("make_list", vec![col("n"), n(1)]),
                a("make_bag", vec![col("tags")]),
                a(
                    "make_set_if",
                    vec![
                        col("host"),
                        binary(BinaryOp::Gt, col("n"), n(1), sc).unwrap_or(lit(false)),
                    ],
                ),
            ],
        )
        .await;
    assert_eq!(r[0], [r#"["h3"]"#, r#"["h1","h2","h1"]"#, r#"["h1"]"#]);
    assert_eq!(r[1], [r#"["h3"]"#, r#"["h1","h2"]"#, r#"["h1"]"#]);
    // make_set flattens dynamic arrays; make_list does not.
    assert_eq!(r[2], [r#"[{"k":1}]"#, r#"["x","y"]"#, r#"["z"]"#]);
    assert_eq!(
        r[3],
        [r#"[{"k":1}]"#, r#"[["x","y"],["y"]]"#, r#"[["z"],[]]"#]
    );
    assert_eq!(r[4], ["[6]", "[1]", "[3]"]);
    assert_eq!(r[5], [r#"{"k":1}"#, "{}", "{}"]);
    assert_eq!(r[6], [r#"["h3"]"#, r#"["h2"]"#, r#"["h1"]"#]);
    let any = f.agg(vec![], vec![a("take_any", vec![col("user")])]).await;
    assert!(any[0].iter().all(|v| v == "a" || v == "b"), "{any:?}");
    assert!(
        crate::is_aggregate("make_set")
            && crate::is_aggregate("arg_max")
            && !crate::is_aggregate("strcat")
    );
    assert!(matches!(
        a("arg_max", vec![col("n")]),
        Err(FnError::Unsupported(_))
    ));
}

#[tokio::test]
async fn arg_max_helpers() {
    let f = logons();
    let s = f.schema();
    let r = f
        .agg(
            vec![col("user")],
            vec![
                Ok(crate::value_at_max(col("t"), col("host"), s)),
                Ok(crate::value_at_min(col("t"), col("host"), s)),
                // Ordered by a long with a null: the null row comes last.
                Ok(crate::value_at_max(col("n"), col("t"), s)),
                // Ordered by strings: DataFusion's first_value, same meaning.
                Ok(crate::value_at_max(col("host"), col("n"), s)),
                Ok(crate::value_at_min(col("host"), col("n"), s)),
            ],
        )
        .await;
    assert_eq!(r[0], ["h3", "h1", "null"]);
    assert_eq!(r[1], ["h3", "h1", "h1"]);
    assert_eq!(
        r[2],
        ["null", "2024-01-03T00:00:00Z", "2024-01-05T00:00:00Z"]
    );
    assert_eq!(r[3], ["6", "2", "3"]);
    assert_eq!(r[4], ["6", "1", "3"]);
    // Without groups.
    let r = f
        .agg(
            vec![],
            vec![
                Ok(crate::value_at_max(col("t"), col("host"), s)),
                Ok(crate::value_at_min(col("n"), col("user"), s)),
            ],
        )
        .await;
    assert_eq!(r[0], ["null"]);
    assert_eq!(r[1], ["a"]);
}

// ---------------------------------------------------------------- names and refusals

#[test]
fn every_listed_name_is_planned() {
    let f = Fixture::one();
    for name in crate::scalar::SCALARS {
        let r = scalar(name, vec![], f.schema());
        assert!(
            !matches!(r, Err(FnError::Unknown)),
            "{name} is listed but unknown"
        );
    }
    for name in crate::aggregate::AGGREGATES {
        let r = aggregate(
            name,
            vec![col("unit"), col("unit"), col("unit"), col("unit")],
            f.schema(),
        );
        assert!(
            !matches!(r, Err(FnError::Unknown)),
            "{name} is listed but unknown"
        );
    }
    let names: Vec<&str> = crate::names().collect();
    assert!(
        names.contains(&"has_ipv4") && names.contains(&"make_bag") && names.contains(&"arg_min")
    );
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate names");
}

#[test]
fn refusals_name_the_function() {
    let f = Fixture::one();
    for name in [
        "geo_point_to_s2cell",
        "series_fir",
        "external_table",
        "row_number",
        "hash",
        "datetime_utc_to_local",
    ] {
        match scalar(name, vec![], f.schema()) {
            Err(FnError::Unsupported(why)) => assert!(why.contains(name), "{why}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(
        scalar("no_such_function", vec![], f.schema()),
        Err(FnError::Unknown)
    );
    assert_eq!(
        aggregate("no_such_aggregate", vec![], f.schema()),
        Err(FnError::Unknown)
    );
    assert!(matches!(
        scalar("strlen", vec![], f.schema()),
        Err(FnError::Arity { found: 0, .. })
    ));
    assert!(matches!(
        scalar("count", vec![], f.schema()),
        Err(FnError::Type(_))
    ));
}

#[tokio::test]
async fn view_strings_are_read_too() {
    let f = Fixture::new(vec![Col {
        name: "v",
        array: Arc::new(StringViewArray::from(vec![Some("cmd.exe /c whoami"), None])),
        dynamic: false,
    }]);
    assert_eq!(
        f.eval(binary(
            op(StrOpKind::Has, false, false),
            col("v"),
            s("whoami"),
            f.schema()
        ))
        .await,
        ["true", "false"]
    );
    assert_eq!(
        f.eval(call(&f, "substring", vec![col("v"), n(4)])).await,
        ["exe /c whoami", ""]
    );
}

#[tokio::test]
async fn case_insensitive_equality_on_views_reads_past_the_first_bytes() {
    // Views keep a value's length and first four bytes inline; `=~` rules values out on them,
    // so values that share the first bytes, differ only later, differ only in case, are short
    // or long, or begin with a character that folds to ASCII must all still compare right.
    let values = [
        Some("PowerShell.exe"),
        Some("powershell.exE"),
        Some("powershell.com"),
        Some("power"),
        Some("cmd.exe"),
        Some("\u{212A}ernel.exe"),
        Some(""),
        None,
    ];
    let f = Fixture::new(vec![Col {
        name: "v",
        array: Arc::new(StringViewArray::from(values.to_vec())),
        dynamic: false,
    }]);
    let eq_ci = |needle: &str| binary(BinaryOp::EqCi, col("v"), s(needle), f.schema());
    assert_eq!(
        f.eval(eq_ci("POWERSHELL.EXE")).await,
        [
            "true", "true", "false", "false", "false", "false", "false", "false"
        ]
    );
    assert_eq!(
        f.eval(eq_ci("kernel.exe")).await,
        [
            "false", "false", "false", "false", "false", "true", "false", "false"
        ]
    );
    assert_eq!(
        f.eval(eq_ci("")).await,
        [
            "false", "false", "false", "false", "false", "false", "true", "true"
        ]
    );
    assert_eq!(
        f.eval(binary(BinaryOp::NotEqCi, col("v"), s("Power"), f.schema()))
            .await,
        [
            "true", "true", "true", "false", "true", "true", "true", "true"
        ]
    );
    let any_of = |needles: &[&str]| {
        let list = needles.iter().map(|n| s(n)).collect();
        in_list(sop(StrOpKind::In, false, false), col("v"), list, f.schema())
    };
    assert_eq!(
        f.eval(any_of(&["CMD.exe", "kernel.EXE", "pow"])).await,
        [
            "false", "false", "false", "false", "true", "true", "false", "false"
        ]
    );
}
