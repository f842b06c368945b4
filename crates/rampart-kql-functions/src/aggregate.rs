//! Kusto aggregations: DataFusion's where they agree with Kusto (`count`, `sum`, `avg`,
//! `min`, `max`, `stdev`, `variance`), `*if` forms as filtered aggregates, and UDAFs for
//! `dcount` (see `distinct`), `make_list`, `make_set`, `make_bag` (JSON text) and
//! `percentile` (nearest rank, exact).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast as arrow_cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::functions_aggregate::expr_fn as agg;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, ExprFunctionExt, ExprSchemable, Signature,
    SortExpr, Volatility,
};
use serde_json::{Map, Value};

use crate::FnError;
use crate::convert::{to_dynamic, to_real};
use crate::distinct::DcountUdaf;
use crate::extreme::{ExtremeUdaf, orderable};
use crate::json::json_values;
use crate::ops::as_bool;
use crate::types::{KType, dynamic_metadata, field_is_dynamic, ktype};

/// Kusto's default and largest `maxSize` for `make_list` / `make_set`.
const MAX_ITEMS: usize = 1_048_576;

/// What a collecting aggregation builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Collect {
    List,
    ListWithNulls,
    Set,
    Bag,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CollectUdaf {
    name: &'static str,
    kind: Collect,
    max: usize,
    signature: Signature,
}

impl AggregateUDFImpl for CollectUdaf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field(&self, _arg_fields: &[FieldRef]) -> Result<FieldRef> {
        Ok(Arc::new(
            Field::new(self.name, DataType::Utf8, true).with_metadata(dynamic_metadata()),
        ))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "json"),
            DataType::Utf8,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let dynamic = args
            .expr_fields
            .first()
            .is_some_and(|f| field_is_dynamic(f));
        Ok(Box::new(CollectAcc {
            kind: self.kind,
            max: self.max,
            dynamic,
            items: Vec::new(),
            seen: HashSet::new(),
            bag: Map::new(),
            bytes: 0,
        }))
    }
}

#[derive(Debug)]
struct CollectAcc {
    kind: Collect,
    max: usize,
    /// The input is `dynamic`: its text is JSON to embed (and `make_set` flattens arrays).
    dynamic: bool,
    items: Vec<Value>,
    seen: HashSet<String>,
    bag: Map<String, Value>,
    /// Rough heap size, for DataFusion's memory accounting.
    bytes: usize,
}

impl CollectAcc {
    fn add(&mut self, v: Value, flatten: bool) {
        match self.kind {
            Collect::List | Collect::ListWithNulls => {
                if self.items.len() < self.max
                    && (self.kind == Collect::ListWithNulls || !v.is_null())
                {
                    self.bytes += 16 + approx_size(&v);
                    self.items.push(v);
                }
            }
            Collect::Set => match v {
                Value::Null => {}
                Value::Array(items) if flatten => {
                    for item in items {
                        self.add(item, false);
                    }
                }
                v => {
                    if self.items.len() < self.max {
                        let key = v.to_string();
                        if !self.seen.contains(&key) {
                            self.bytes += 16 + 2 * key.len();
                            self.seen.insert(key);
                            self.items.push(v);
                        }
                    }
                }
            },
            Collect::Bag => {
                if let Value::Object(m) = v {
                    for (k, v) in m {
                        if !self.bag.contains_key(&k) {
                            self.bytes += 32 + k.len() + approx_size(&v);
                            self.bag.insert(k, v);
                        }
                    }
                }
            }
        }
    }

    fn json(&self) -> String {
        match self.kind {
            Collect::Bag => Value::Object(self.bag.clone()).to_string(),
            _ => Value::Array(self.items.clone()).to_string(),
        }
    }
}

fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(approx_size).sum::<usize>() + 8 * a.len(),
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + approx_size(v)).sum(),
        _ => 8,
    }
}

impl Accumulator for CollectAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(a) = values.first() else {
            return Ok(());
        };
        let flatten = self.dynamic;
        for v in json_values(a, self.dynamic, a.len())? {
            self.add(v, flatten);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Utf8(Some(self.json())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.bytes
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Utf8(Some(self.json()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(a) = states.first() else {
            return Ok(());
        };
        let Some(s) = a.as_string_opt::<i32>() else {
            return exec_err!("collect state is not Utf8");
        };
        for text in s.iter().flatten() {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(items)) => {
                    for v in items {
                        // Partial sets are already flat: their arrays are elements.
                        self.add(v, false);
                    }
                }
                Ok(v @ Value::Object(_)) => self.add(v, false),
                _ => {}
            }
        }
        Ok(())
    }
}

/// `percentile(x, p)`: the nearest-rank percentile, in the input's type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PercentileUdaf {
    /// `p` in thousandths of a percent (keeps the struct `Eq`/`Hash`).
    milli: i64,
    signature: Signature,
}

impl AggregateUDFImpl for PercentileUdaf {
    fn name(&self) -> &str {
        "percentile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Float64))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "values"),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PercentileAcc {
            p: self.milli as f64 / 1000.0,
            out: args.return_field.data_type().clone(),
            values: Vec::new(),
        }))
    }
}

#[derive(Debug)]
struct PercentileAcc {
    p: f64,
    out: DataType,
    values: Vec<f64>,
}

/// A column as `f64`s (temporal types through their `i64` counts).
fn as_f64(a: &ArrayRef) -> Result<ArrayRef> {
    let a = match a.data_type() {
        DataType::Timestamp(..) | DataType::Duration(_) | DataType::Date64 => {
            arrow_cast(a, &DataType::Int64)?
        }
        _ => Arc::clone(a),
    };
    Ok(arrow_cast(&a, &DataType::Float64)?)
}

impl Accumulator for PercentileAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(a) = values.first() else {
            return Ok(());
        };
        let f = as_f64(a)?;
        if let Some(p) = f.as_primitive_opt::<Float64Type>() {
            self.values
                .extend(p.iter().flatten().filter(|v| !v.is_nan()));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.values.sort_by(f64::total_cmp);
        let n = self.values.len();
        if n == 0 {
            return ScalarValue::try_from(&self.out);
        }
        let rank = (self.p / 100.0 * n as f64).ceil().max(1.0) as usize;
        let v = self
            .values
            .get(rank.min(n) - 1)
            .copied()
            .unwrap_or(f64::NAN);
        let out = if self.out.is_floating() {
            ScalarValue::Float64(Some(v))
        } else {
            ScalarValue::Int64(Some(v as i64))
        };
        out.cast_to(&self.out)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 8 * self.values.capacity()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let bytes: Vec<u8> = self.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(vec![ScalarValue::Binary(Some(bytes))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(a) = states.first() else {
            return Ok(());
        };
        let Some(b) = a.as_binary_opt::<i32>() else {
            return exec_err!("percentile state is not Binary");
        };
        for bytes in b.iter().flatten() {
            for chunk in bytes.chunks_exact(8) {
                let mut buf = [0u8; 8];
                buf.copy_from_slice(chunk);
                self.values.push(f64::from_le_bytes(buf));
            }
        }
        Ok(())
    }
}

fn udaf(u: impl AggregateUDFImpl + 'static, args: Vec<Expr>) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        Arc::new(AggregateUDF::new_from_impl(u)),
        args,
        false,
        None,
        vec![],
        None,
    ))
}

fn with_filter(e: Expr, pred: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let pred = as_bool(pred, schema)?;
    e.filter(pred)
        .build()
        .map_err(|e| FnError::Type(e.to_string()))
}

fn arity(args: &[Expr], min: usize, max: usize) -> Result<(), FnError> {
    if (min..=max).contains(&args.len()) {
        return Ok(());
    }
    Err(FnError::Arity {
        expected: if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        },
        found: args.len(),
    })
}

/// A positive integer literal (`maxSize`, `accuracy`), or the default.
fn literal_usize(e: Option<&Expr>, default: usize) -> Result<usize, FnError> {
    match e {
        None => Ok(default),
        Some(Expr::Literal(v, _)) => {
            let n = match v {
                ScalarValue::Int64(Some(n)) => *n,
                ScalarValue::Int32(Some(n)) => i64::from(*n),
                _ => return Err(FnError::Type("the size must be an integer literal".into())),
            };
            Ok(usize::try_from(n.max(0)).unwrap_or(default).min(default))
        }
        Some(_) => Err(FnError::Type("the size must be an integer literal".into())),
    }
}

fn literal_f64(e: &Expr) -> Option<f64> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(n)), _) => Some(*n as f64),
        Expr::Literal(ScalarValue::Int32(Some(n)), _) => Some(f64::from(*n)),
        Expr::Literal(ScalarValue::Float64(Some(n)), _) => Some(*n),
        _ => None,
    }
}

/// Arguments summed or averaged: dynamic/string values are read as reals.
fn numeric(e: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    match ktype(&e, schema)? {
        KType::String | KType::Dynamic => to_real(e, schema),
        _ => Ok(e),
    }
}

fn collect(
    name: &'static str,
    kind: Collect,
    value: Expr,
    max: Option<&Expr>,
    schema: &DFSchema,
) -> Result<Expr, FnError> {
    let value = if kind == Collect::Bag {
        to_dynamic(value, schema)?
    } else {
        value
    };
    let max = literal_usize(max, MAX_ITEMS)?;
    Ok(udaf(
        CollectUdaf {
            name,
            kind,
            max,
            signature: Signature::any(1, Volatility::Immutable),
        },
        vec![value],
    ))
}

/// The aggregation names this module plans.
pub const AGGREGATES: &[&str] = &[
    "count",
    "countif",
    "dcount",
    "dcountif",
    "count_distinct",
    "count_distinctif",
    "sum",
    "sumif",
    "avg",
    "avgif",
    "min",
    "minif",
    "max",
    "maxif",
    "stdev",
    "stdevif",
    "stdevp",
    "variance",
    "varianceif",
    "variancep",
    "make_list",
    "make_list_if",
    "make_list_with_nulls",
    "makelist",
    "make_set",
    "make_set_if",
    "makeset",
    "make_bag",
    "make_bag_if",
    "take_any",
    "take_anyif",
    "any",
    "percentile",
    "binary_all_or",
    "binary_all_and",
    "binary_all_xor",
];

/// An aggregation call.
pub fn aggregate(name: &str, mut args: Vec<Expr>, schema: &DFSchema) -> Result<Expr, FnError> {
    let a = |args: &[Expr], i: usize| {
        args.get(i).cloned().ok_or(FnError::Arity {
            expected: (i + 1).to_string(),
            found: args.len(),
        })
    };
    match name {
        "count" => {
            arity(&args, 0, 1)?;
            Ok(match args.pop() {
                None => count_star(),
                Some(x) => agg::count(x),
            })
        }
        "countif" => {
            arity(&args, 1, 1)?;
            with_filter(count_star(), a(&args, 0)?, schema)
        }
        "dcount" | "count_distinct" => {
            // The accuracy argument is accepted: the count is exact (see `distinct`).
            arity(&args, 1, 2)?;
            Ok(udaf(DcountUdaf::new(), vec![a(&args, 0)?]))
        }
        "dcountif" | "count_distinctif" => {
            arity(&args, 2, 3)?;
            with_filter(
                udaf(DcountUdaf::new(), vec![a(&args, 0)?]),
                a(&args, 1)?,
                schema,
            )
        }
        "sum" | "avg" | "stdev" | "stdevp" | "variance" | "variancep" => {
            arity(&args, 1, 1)?;
            let x = numeric(a(&args, 0)?, schema)?;
            Ok(numeric_agg(name, x))
        }
        "sumif" | "avgif" | "stdevif" | "varianceif" => {
            arity(&args, 2, 2)?;
            let x = numeric(a(&args, 0)?, schema)?;
            let base = name.strip_suffix("if").unwrap_or(name);
            with_filter(numeric_agg(base, x), a(&args, 1)?, schema)
        }
        "min" => {
            arity(&args, 1, 1)?;
            Ok(agg::min(a(&args, 0)?))
        }
        "max" => {
            arity(&args, 1, 1)?;
            Ok(agg::max(a(&args, 0)?))
        }
        "minif" => {
            arity(&args, 2, 2)?;
            with_filter(agg::min(a(&args, 0)?), a(&args, 1)?, schema)
        }
        "maxif" => {
            arity(&args, 2, 2)?;
            with_filter(agg::max(a(&args, 0)?), a(&args, 1)?, schema)
        }
        "make_list" | "makelist" => {
            arity(&args, 1, 2)?;
            collect(
                "make_list",
                Collect::List,
                a(&args, 0)?,
                args.get(1),
                schema,
            )
        }
        "make_list_with_nulls" => {
            arity(&args, 1, 2)?;
            collect(
                "make_list_with_nulls",
                Collect::ListWithNulls,
                a(&args, 0)?,
                args.get(1),
                schema,
            )
        }
        "make_list_if" => {
            arity(&args, 2, 3)?;
            let e = collect(
                "make_list",
                Collect::List,
                a(&args, 0)?,
                args.get(2),
                schema,
            )?;
            with_filter(e, a(&args, 1)?, schema)
        }
        "make_set" | "makeset" => {
            arity(&args, 1, 2)?;
            collect("make_set", Collect::Set, a(&args, 0)?, args.get(1), schema)
        }
        "make_set_if" => {
            arity(&args, 2, 3)?;
            let e = collect("make_set", Collect::Set, a(&args, 0)?, args.get(2), schema)?;
            with_filter(e, a(&args, 1)?, schema)
        }
        "make_bag" => {
            arity(&args, 1, 2)?;
            collect("make_bag", Collect::Bag, a(&args, 0)?, None, schema)
        }
        "make_bag_if" => {
            arity(&args, 2, 3)?;
            let e = collect("make_bag", Collect::Bag, a(&args, 0)?, None, schema)?;
            with_filter(e, a(&args, 1)?, schema)
        }
        "take_any" | "any" => {
            arity(&args, 1, 1)?;
            Ok(agg::any_value(a(&args, 0)?))
        }
        "take_anyif" => {
            arity(&args, 2, 2)?;
            with_filter(agg::any_value(a(&args, 0)?), a(&args, 1)?, schema)
        }
        "percentile" => {
            arity(&args, 2, 2)?;
            let p = literal_f64(&a(&args, 1)?)
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    FnError::Type("percentile takes a literal between 0 and 100".into())
                })?;
            let x = numeric(a(&args, 0)?, schema)?;
            let milli = (p * 1000.0).round() as i64;
            Ok(udaf(
                PercentileUdaf {
                    milli,
                    signature: Signature::any(1, Volatility::Immutable),
                },
                vec![x],
            ))
        }
        "binary_all_or" | "binary_all_and" | "binary_all_xor" => {
            arity(&args, 1, 1)?;
            let x = a(&args, 0)?;
            Ok(match name {
                "binary_all_or" => agg::bit_or(x),
                "binary_all_and" => agg::bit_and(x),
                _ => agg::bit_xor(x),
            })
        }
        _ => Err(crate::refusal(name)),
    }
}

/// `count(*)` as DataFusion writes it unaliased (`count_all()` comes aliased, which rules out
/// a filter and the planner's own alias).
fn count_star() -> Expr {
    agg::count(Expr::Literal(ScalarValue::Int64(Some(1)), None))
}

fn numeric_agg(name: &str, x: Expr) -> Expr {
    match name {
        "sum" => agg::sum(x),
        "avg" => agg::avg(x),
        "stdev" => agg::stddev(x),
        "stdevp" => agg::stddev_pop(x),
        "variance" => agg::var_sample(x),
        _ => agg::var_pop(x),
    }
}

/// `arg_max` building block: the `value` on the row where `by` is largest (rows with a null
/// `by` are last). Numbers, times and booleans order through [`ExtremeUdaf`] (fast);
/// anything else (strings) through DataFusion's `first_value`, with the same meaning.
pub fn value_at_max(by: Expr, value: Expr, schema: &DFSchema) -> Expr {
    value_at_extreme(by, value, schema, true)
}

/// `arg_min` building block: the `value` on the row where `by` is smallest.
pub fn value_at_min(by: Expr, value: Expr, schema: &DFSchema) -> Expr {
    value_at_extreme(by, value, schema, false)
}

fn value_at_extreme(by: Expr, value: Expr, schema: &DFSchema, max: bool) -> Expr {
    match by.get_type(schema) {
        Ok(t) if orderable(&t) => udaf(ExtremeUdaf::new(max), vec![value, by]),
        _ => agg::first_value(value, vec![SortExpr::new(by, !max, false)]),
    }
}

/// Whether `name` is an aggregation.
pub fn is_aggregate(name: &str) -> bool {
    AGGREGATES.contains(&name)
}
