//! `arg_max` / `arg_min` building blocks: the value on the row where an ordering column is
//! largest (smallest), one aggregation per output column.
//!
//! DataFusion's `first_value(v ORDER BY by DESC NULLS LAST)` gives the same answer, but it
//! compares rows through a generic lexicographic comparator and keeps each group's ordering as
//! `ScalarValue`s. On time-ordered data, where nearly every row is a new maximum of its group,
//! that was most of `summarize arg_max(Timestamp, ...) by DeviceId`. Here the ordering column
//! becomes `i64` keys that sort as it does (one cast per batch), the best row of each group in
//! a batch is found with integer comparisons, and a group's value is copied at most once per
//! batch.
//!
//! Semantics are `first_value`'s: rows with a null ordering value come last (a group of only
//! such rows takes the value of one of them), ties keep the row seen first, and floats order
//! as Arrow sorts them (`NaN` above every number).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::compute::cast as arrow_cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, not_impl_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::one_group::{OneGroup, OneGroupValues};

/// Whether values of this type can order `arg_max` / `arg_min` here (others go through
/// DataFusion's `first_value`).
pub(crate) fn orderable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Float32
            | DataType::Float64
            | DataType::Timestamp(..)
            | DataType::Duration(_)
            | DataType::Date32
            | DataType::Date64
    )
}

/// The ordering column as `i64` keys in the same order (nulls stay null).
fn order_keys(by: &ArrayRef) -> Result<Int64Array> {
    match by.data_type() {
        DataType::Float32 | DataType::Float64 => {
            let f = arrow_cast(by, &DataType::Float64)?;
            let f = f.as_primitive::<Float64Type>();
            // `f64::total_cmp`'s key: flip every bit but the sign of negative numbers.
            Ok(f.unary::<_, Int64Type>(|v| {
                let bits = v.to_bits() as i64;
                bits ^ ((((bits >> 63) as u64) >> 1) as i64)
            }))
        }
        // Date32 has no direct cast to Int64; its days do.
        DataType::Date32 => {
            let days = arrow_cast(by, &DataType::Int32)?;
            Ok(arrow_cast(&days, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .clone())
        }
        t if orderable(t) => Ok(arrow_cast(by, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone()),
        t => exec_err!("arg_max/arg_min cannot order by {t}"),
    }
}

/// `value_at_max(value, by)` / `value_at_min(value, by)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ExtremeUdaf {
    max: bool,
    signature: Signature,
}

impl ExtremeUdaf {
    pub(crate) fn new(max: bool) -> ExtremeUdaf {
        ExtremeUdaf {
            max,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for ExtremeUdaf {
    fn name(&self) -> &str {
        if self.max {
            "value_at_max"
        } else {
            "value_at_min"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    /// The value's type and metadata (a `dynamic` stays dynamic); null when there is no row.
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        let Some(value) = arg_fields.first() else {
            return exec_err!("{} takes a value and an ordering", self.name());
        };
        Ok(Arc::new(
            Field::new(self.name(), value.data_type().clone(), true)
                .with_metadata(value.metadata().clone()),
        ))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "value"),
                args.return_type().clone(),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "key"),
                DataType::Int64,
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let groups = Extremes::new(self.max, args.return_field.data_type())?;
        Ok(Box::new(OneGroup(groups)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Extremes::new(
            self.max,
            args.return_field.data_type(),
        )?))
    }
}

/// What a group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Nothing,
    /// The value of a row whose ordering value is null.
    Unordered,
    /// The value of the best row so far, whose key is in `keys`.
    Ordered,
}

/// What a value holds beyond its own `ScalarValue`.
fn heap_bytes(v: &ScalarValue) -> usize {
    v.size().saturating_sub(std::mem::size_of::<ScalarValue>())
}

/// No row of the current batch is the group's best.
const NO_ROW: u32 = u32::MAX;

/// The state of every group.
#[derive(Debug)]
struct Extremes {
    max: bool,
    /// A null of the value's type, for groups without a value.
    null: ScalarValue,
    held: Vec<Held>,
    keys: Vec<i64>,
    values: Vec<ScalarValue>,
    /// Heap bytes of `values`, kept as they change (DataFusion asks after every batch).
    value_bytes: usize,
    /// Per group, the row of the current batch that is its best (scratch between batches).
    winner: Vec<u32>,
    touched: Vec<usize>,
}

impl Extremes {
    fn new(max: bool, value_type: &DataType) -> Result<Extremes> {
        Ok(Extremes {
            max,
            null: ScalarValue::try_from(value_type)?,
            held: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
            value_bytes: 0,
            winner: Vec::new(),
            touched: Vec::new(),
        })
    }

    fn resize(&mut self, groups: usize) {
        self.held.resize(groups, Held::Nothing);
        self.keys.resize(groups, 0);
        self.values.resize(groups, self.null.clone());
        self.winner.resize(groups, NO_ROW);
    }

    /// Takes the rows of `value` ordered by `keys` into their groups.
    fn absorb(
        &mut self,
        value: &ArrayRef,
        keys: &Int64Array,
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total_groups: usize,
    ) -> Result<()> {
        if value.len() != groups.len() || keys.len() != groups.len() {
            return exec_err!("arg_max/arg_min: columns of different lengths");
        }
        if value.len() > NO_ROW as usize {
            return exec_err!("arg_max/arg_min: a batch of more than {NO_ROW} rows");
        }
        self.resize(total_groups);
        for (row, &g) in groups.iter().enumerate() {
            if filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            let better = match (keys.is_valid(row), self.held[g]) {
                (_, Held::Nothing) => true,
                (true, Held::Unordered) => true,
                (true, Held::Ordered) => {
                    let (new, old) = (keys.value(row), self.keys[g]);
                    if self.max { new > old } else { new < old }
                }
                (false, _) => false,
            };
            if !better {
                continue;
            }
            if keys.is_valid(row) {
                self.held[g] = Held::Ordered;
                self.keys[g] = keys.value(row);
            } else {
                self.held[g] = Held::Unordered;
            }
            if self.winner[g] == NO_ROW {
                self.touched.push(g);
            }
            self.winner[g] = row as u32;
        }
        for g in self.touched.drain(..) {
            let row = std::mem::replace(&mut self.winner[g], NO_ROW) as usize;
            let v = ScalarValue::try_from_array(value, row)?;
            self.value_bytes =
                self.value_bytes.saturating_sub(heap_bytes(&self.values[g])) + heap_bytes(&v);
            self.values[g] = v;
        }
        Ok(())
    }

    /// The values of the groups `emit_to` names, which leave the state.
    fn take_values(&mut self, emit_to: EmitTo) -> Result<(ArrayRef, Vec<Held>, Vec<i64>)> {
        let values = emit_to.take_needed(&mut self.values);
        let held = emit_to.take_needed(&mut self.held);
        let keys = emit_to.take_needed(&mut self.keys);
        let _ = emit_to.take_needed(&mut self.winner);
        self.value_bytes = self.values.iter().map(heap_bytes).sum();
        let array = if values.is_empty() {
            datafusion::arrow::array::new_empty_array(&self.null.data_type())
        } else {
            ScalarValue::iter_to_array(values)?
        };
        Ok((array, held, keys))
    }
}

impl GroupsAccumulator for Extremes {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [value, by] = values else {
            return exec_err!("arg_max/arg_min takes a value and an ordering");
        };
        let keys = order_keys(by)?;
        self.absorb(value, &keys, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.take_values(emit_to)?.0)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (values, held, keys) = self.take_values(emit_to)?;
        let keys: Int64Array = held
            .iter()
            .zip(keys)
            .map(|(h, k)| (*h == Held::Ordered).then_some(k))
            .collect();
        Ok(vec![values, Arc::new(keys)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let [value, keys] = values else {
            return exec_err!("arg_max/arg_min state is a value and a key");
        };
        let Some(keys) = keys.as_primitive_opt() else {
            return exec_err!("arg_max/arg_min state key is not Int64");
        };
        self.absorb(value, keys, group_indices, None, total_num_groups)
    }

    /// Not offered (`supports_convert_to_state` stays false): in the state, a row left out by
    /// a filter could not be told from a row whose ordering value is null.
    fn convert_to_state(
        &self,
        _values: &[ArrayRef],
        _opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        not_impl_err!("arg_max/arg_min rows cannot be passed on as state")
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.held.capacity() * std::mem::size_of::<Held>()
            + self.keys.capacity() * 8
            + self.values.capacity() * std::mem::size_of::<ScalarValue>()
            + self.winner.capacity() * 4
            + self.touched.capacity() * 8
            + self.value_bytes
    }
}

/// The same aggregation without groups (`summarize arg_max(...)` with no `by`).
impl OneGroupValues for Extremes {
    fn value(&self) -> Result<ScalarValue> {
        Ok(self
            .values
            .first()
            .cloned()
            .unwrap_or_else(|| self.null.clone()))
    }

    fn state_values(&self) -> Result<Vec<ScalarValue>> {
        let key = match self.held.first() {
            Some(Held::Ordered) => self.keys.first().copied(),
            _ => None,
        };
        Ok(vec![self.value()?, ScalarValue::Int64(key)])
    }
}
