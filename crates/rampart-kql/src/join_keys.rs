//! Hash joins on text keys (alone or with others) joined on one numbered key instead.
//!
//! DataFusion's hash join compares the keys of every candidate pair column by column through
//! a general comparator (a dynamic call per column and pair); only a single key column of a
//! plain type takes its typed loop. Hunting joins are mostly on a device's 40-character
//! `DeviceId` and a process id, so that comparison, and the cache misses of reading the
//! build side's strings again for every match, were a fifth of such a join's time; a text
//! key alone is hashed and compared whole, however long (a command line, a path).
//!
//! [`PackJoinKeys`] rewrites such a join so that each side carries one more column
//! ([`PackedKeysExec`]): its keys packed into one 128-bit integer — a text key as the number
//! of its value in an interner, other keys as their bits, side by side, so that two packed
//! keys are equal exactly when every key is — and that integer numbered in turn, in the
//! order the build side first shows it (a lone text key's numbers are that already). The
//! join then has one `UInt32` key whose values are dense, `0..distinct keys`: DataFusion indexes its build rows by them in an array (its
//! "perfect hash" join) instead of a hash table, and compares no keys.
//!
//! Numbers are exact, not hashes: each partition of the join has an interner, filled by the
//! build side as the join reads it (rows with equal keys are in the same partition on both
//! sides: the join's inputs are partitioned on the original keys) and only read by the probe
//! side, which the join reads once the build side is done; a probe value or key the build
//! side never held gets a number no build row has. The interner holds each distinct build
//! value and key once and counts against the query's memory pool like the join's own table.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, NullEquality, Result, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::JoinType;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{Stream, StreamExt};

use crate::key_column::{apply_to_keys, only_child, properties, with_key_column};
use crate::key_table::{KeyTable, TextTable, texts};

/// The name of the packed key column each side of a rewritten join gets.
const KEY_COLUMN: &str = "__rampart_join_key";

/// Keys wider than this together are not packed (into an `i128`).
const MAX_KEY_BITS: u32 = 128;

/// The physical optimiser rule; it runs last, on the plan DataFusion's rules have settled.
#[derive(Debug, Default)]
pub struct PackJoinKeys;

impl PhysicalOptimizerRule for PackJoinKeys {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match packed_join(join)? {
                Some(packed) => Transformed::yes(packed),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "pack_join_keys"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// How one key enters the packed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Text, as its interned number.
    Text,
    /// A fixed-width integer (or a time, a date, a duration: an integer underneath) of this
    /// many bytes, as its bits.
    Bits(usize),
}

impl Part {
    fn of(t: &DataType) -> Option<Part> {
        match t {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Part::Text),
            // Floats are left alone: bit equality is not their equality (0.0 and -0.0, NaN).
            t if t.is_integer()
                || matches!(
                    t,
                    DataType::Timestamp(..)
                        | DataType::Date32
                        | DataType::Date64
                        | DataType::Duration(_)
                ) =>
            {
                t.primitive_width().map(Part::Bits)
            }
            _ => None,
        }
    }

    fn bits(self) -> u32 {
        match self {
            Part::Text => 32,
            Part::Bits(bytes) => 8 * bytes as u32,
        }
    }
}

/// The join with its keys packed, or `None` when it is not one to pack: no text key, a key
/// type without exact bits, keys too wide together, nulls that equal nulls, a null-aware anti
/// join, or a join whose rows with equal keys are not known to meet in one partition.
fn packed_join(join: &HashJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let (left, right) = (join.left(), join.right());
    let shared = match join.partition_mode() {
        // Rows of equal keys meet in one partition: both sides hash-partitioned alike (the
        // join checked), or one partition each.
        PartitionMode::Partitioned => {
            match (left.output_partitioning(), right.output_partitioning()) {
                (Partitioning::Hash(_, a), Partitioning::Hash(_, b)) if a == b => false,
                (l, r) if l.partition_count() == 1 && r.partition_count() == 1 => false,
                _ => return Ok(None),
            }
        }
        PartitionMode::CollectLeft => true,
        PartitionMode::Auto => return Ok(None),
    };
    // A null-aware anti join (`NOT IN`) is left alone: its null handling is not tested here.
    if join.null_equality() != NullEquality::NullEqualsNothing
        || join.null_aware
        || HashJoinExec::probe_side() != datafusion::common::JoinSide::Right
        || !handled(join.join_type)
    {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(join.on.len());
    for (l, r) in &join.on {
        let lt = l.data_type(&left.schema())?;
        if lt != r.data_type(&right.schema())? {
            return Ok(None);
        }
        match Part::of(&lt) {
            Some(p) => parts.push(p),
            None => return Ok(None),
        }
    }
    if !parts.contains(&Part::Text) || parts.iter().map(|p| p.bits()).sum::<u32>() > MAX_KEY_BITS {
        return Ok(None);
    }

    let slots = if shared {
        1
    } else {
        left.output_partitioning().partition_count()
    };
    let interners = Arc::new(Interners::new(slots));
    let build = Arc::new(PackedKeysExec::new(
        Arc::clone(left),
        join.on.iter().map(|(l, _)| Arc::clone(l)).collect(),
        parts.clone(),
        Side::Build,
        Arc::clone(&interners),
    ));
    let probe = Arc::new(PackedKeysExec::new(
        Arc::clone(right),
        join.on.iter().map(|(_, r)| Arc::clone(r)).collect(),
        parts,
        if shared {
            Side::SharedProbe
        } else {
            Side::Probe
        },
        interners,
    ));
    let (l_cols, r_cols) = (left.schema().fields().len(), right.schema().fields().len());
    let on = vec![(
        Arc::new(Column::new(KEY_COLUMN, l_cols)) as Arc<dyn PhysicalExpr>,
        Arc::new(Column::new(KEY_COLUMN, r_cols)) as Arc<dyn PhysicalExpr>,
    )];
    // The join's output columns stay those it had: its projection is mapped past the key
    // columns now at the end of each side.
    let unprojected = join_output_len(join.join_type, l_cols, r_cols);
    let projection: Vec<usize> = match join.projection.as_deref() {
        Some(p) => p.to_vec(),
        None => (0..unprojected).collect(),
    }
    .into_iter()
    .map(|i| shifted(join.join_type, i, l_cols))
    .collect();
    let new = join
        .builder()
        .with_new_children(vec![build, probe])?
        .with_on(on)
        .with_projection(Some(projection))
        .reset_state()
        .build()?;
    if new.schema().fields() != join.schema().fields() {
        return Ok(None);
    }
    Ok(Some(Arc::new(new)))
}

/// The join types whose output columns [`shifted`] knows.
fn handled(t: JoinType) -> bool {
    matches!(
        t,
        JoinType::Inner
            | JoinType::Left
            | JoinType::Right
            | JoinType::Full
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::RightSemi
            | JoinType::RightAnti
    )
}

/// Columns of a join's output before its projection.
fn join_output_len(t: JoinType, left: usize, right: usize) -> usize {
    match t {
        JoinType::LeftSemi | JoinType::LeftAnti => left,
        JoinType::RightSemi | JoinType::RightAnti => right,
        _ => left + right,
    }
}

/// Where output column `i` of the join before packing is in the join's output after it.
fn shifted(t: JoinType, i: usize, left: usize) -> usize {
    match t {
        JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full if i >= left => i + 1,
        _ => i,
    }
}

/// The interners of a join, one per partition of its build side.
#[derive(Debug)]
struct Interners {
    slots: Vec<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    interner: RwLock<Interner>,
    /// Set when the build side of this partition is read to its end.
    built: AtomicBool,
}

impl Interners {
    fn new(n: usize) -> Interners {
        Interners {
            slots: (0..n.max(1)).map(|_| Slot::default()).collect(),
        }
    }
}

/// Distinct text values and packed keys, each numbered in the order first seen.
#[derive(Debug, Default)]
struct Interner {
    texts: TextTable,
    keys: KeyTable,
    reservation: Option<MemoryReservation>,
}

/// Counts `bytes` more of an interner against the pool.
fn reserve(reservation: &mut Option<MemoryReservation>, bytes: usize) -> Result<()> {
    match reservation {
        Some(r) => r.try_grow(bytes),
        None => Ok(()),
    }
}

/// How a side numbers text values and packed keys: the build side interns them, the probe
/// side looks them up.
trait Numbering {
    fn text(&mut self, value: &[u8]) -> Result<u32>;
    /// Numbers a batch's packed keys (`out`); null rows' numbers are whatever.
    fn keys(&mut self, packed: &[i128], nulls: Option<&NullBuffer>, out: &mut [u32]) -> Result<()>;
}

impl Numbering for &mut Interner {
    fn text(&mut self, value: &[u8]) -> Result<u32> {
        let reservation = &mut self.reservation;
        self.texts
            .intern(value, |bytes| reserve(reservation, bytes))
    }

    fn keys(&mut self, packed: &[i128], nulls: Option<&NullBuffer>, out: &mut [u32]) -> Result<()> {
        let reservation = &mut self.reservation;
        self.keys
            .intern(packed, nulls, out, |bytes| reserve(reservation, bytes))
    }
}

impl Numbering for &Interner {
    fn text(&mut self, value: &[u8]) -> Result<u32> {
        Ok(self.texts.find(value))
    }

    fn keys(&mut self, packed: &[i128], _: Option<&NullBuffer>, out: &mut [u32]) -> Result<()> {
        self.keys.find(packed, out);
        Ok(())
    }
}

/// Which side of the join a [`PackedKeysExec`] feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Interns the values of its partition.
    Build,
    /// Looks values up in its partition's interner.
    Probe,
    /// Looks values up in the one interner (the build side is read whole, once).
    SharedProbe,
}

/// Passes its input's rows on with one more column: their join keys as one number.
#[derive(Debug)]
pub struct PackedKeysExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    parts: Vec<Part>,
    side: Side,
    interners: Arc<Interners>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl PackedKeysExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        parts: Vec<Part>,
        side: Side,
        interners: Arc<Interners>,
    ) -> PackedKeysExec {
        let schema = with_key_column(&input.schema(), KEY_COLUMN, DataType::UInt32, true);
        // The input's columns keep their places, so its partitioning still describes the rows.
        // Each side of a partitioned join is partitioned on its original keys, with rows of
        // equal keys in the same partition on both sides: rows of equal packed keys too, which
        // is what the join checks its inputs for.
        let partitioning = match (side, input.output_partitioning()) {
            (Side::Build | Side::Probe, Partitioning::Hash(_, n)) => Partitioning::Hash(
                vec![Arc::new(Column::new(KEY_COLUMN, schema.fields().len() - 1))],
                *n,
            ),
            (_, p) => p.clone(),
        };
        let properties = properties(&schema, partitioning, &input);
        PackedKeysExec {
            input,
            keys,
            parts,
            side,
            interners,
            schema,
            properties,
        }
    }
}

impl DisplayAs for PackedKeysExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let side = match self.side {
            Side::Build => "build",
            Side::Probe | Side::SharedProbe => "probe",
        };
        write!(f, "PackedKeysExec: {side}, keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for PackedKeysExec {
    fn name(&self) -> &str {
        "PackedKeysExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_to_keys(&self.keys, f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(PackedKeysExec::new(
            only_child("PackedKeysExec", children)?,
            self.keys.clone(),
            self.parts.clone(),
            self.side,
            Arc::clone(&self.interners),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let slot = match self.side {
            Side::SharedProbe => 0,
            Side::Build | Side::Probe => partition,
        };
        if slot >= self.interners.slots.len() {
            return internal_err!("PackedKeysExec has no interner for partition {partition}");
        }
        if self.side == Side::Build {
            let mut interner = self.interners.slots[slot]
                .interner
                .write()
                .map_err(|_| poisoned())?;
            if interner.reservation.is_none() {
                interner.reservation = Some(
                    MemoryConsumer::new(format!("PackedKeysExec[{partition}]"))
                        .register(context.memory_pool()),
                );
            }
        }
        Ok(Box::pin(PackedKeysStream {
            input: self.input.execute(partition, context)?,
            keys: self.keys.clone(),
            parts: self.parts.clone(),
            side: self.side,
            interners: Arc::clone(&self.interners),
            slot,
            schema: Arc::clone(&self.schema),
        }))
    }
}

struct PackedKeysStream {
    input: SendableRecordBatchStream,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    parts: Vec<Part>,
    side: Side,
    interners: Arc<Interners>,
    slot: usize,
    schema: SchemaRef,
}

impl PackedKeysStream {
    fn pack(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let slot = &self.interners.slots[self.slot];
        if self.side != Side::Build && !slot.built.load(Ordering::Acquire) {
            // The join reads its probe side once the build side is done; anything else would
            // leave values not yet interned unmatched.
            return internal_err!("PackedKeysExec: probe rows before the build side was read");
        }
        let mut values = Vec::with_capacity(self.keys.len());
        let mut nulls: Option<NullBuffer> = None;
        for key in &self.keys {
            let v = key.evaluate(&batch)?.into_array(rows)?;
            nulls = NullBuffer::union(nulls.as_ref(), v.logical_nulls().as_ref());
            values.push(v);
        }
        let numbers = if self.side == Side::Build {
            let mut interner = slot.interner.write().map_err(|_| poisoned())?;
            self.numbers(&values, nulls.as_ref(), rows, &mut &mut *interner)?
        } else {
            let interner = slot.interner.read().map_err(|_| poisoned())?;
            self.numbers(&values, nulls.as_ref(), rows, &mut &*interner)?
        };
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(UInt32Array::new(numbers.into(), nulls)));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Each row's keys packed into one integer, first key in the highest bits, and that
    /// integer's number (whatever where a key is null).
    fn numbers(
        &self,
        values: &[ArrayRef],
        nulls: Option<&NullBuffer>,
        rows: usize,
        numbering: &mut impl Numbering,
    ) -> Result<Vec<u32>> {
        if let [Part::Text] = self.parts[..] {
            // One text key: its values' numbers are already dense.
            let mut numbers = vec![0; rows];
            texts(&values[0], |v| numbering.text(v), |i, id| numbers[i] = id)?;
            return Ok(numbers);
        }
        let mut packed = vec![0i128; rows];
        for (values, part) in values.iter().zip(&self.parts) {
            match part {
                Part::Text => texts(
                    values,
                    |v| numbering.text(v),
                    |i, id| {
                        packed[i] = packed[i] << 32 | i128::from(id);
                    },
                )?,
                Part::Bits(bytes) => shift_in(&mut packed, values, *bytes)?,
            }
        }
        let mut numbers = vec![0; rows];
        numbering.keys(&packed, nulls, &mut numbers)?;
        Ok(numbers)
    }
}

fn poisoned() -> DataFusionError {
    DataFusionError::Internal("a join key interner was poisoned".into())
}

/// Shifts each row's bits of a fixed-width key into its packed key.
fn shift_in(packed: &mut [i128], values: &ArrayRef, bytes: usize) -> Result<()> {
    let data = values.to_data();
    let width = 8 * bytes;
    macro_rules! shift {
        ($t:ty) => {
            for (p, v) in packed.iter_mut().zip(data.buffer::<$t>(0)) {
                *p = *p << width | i128::from(*v);
            }
        };
    }
    match bytes {
        1 => shift!(u8),
        2 => shift!(u16),
        4 => shift!(u32),
        8 => shift!(u64),
        _ => return internal_err!("PackedKeysExec: a {bytes}-byte key"),
    }
    Ok(())
}

impl Stream for PackedKeysStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.input.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(self.pack(batch))),
            Poll::Ready(None) => {
                if self.side == Side::Build {
                    self.interners.slots[self.slot]
                        .built
                        .store(true, Ordering::Release);
                }
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

impl RecordBatchStream for PackedKeysStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use datafusion::arrow::array::{Int32Array, Int64Array, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{Expr, SessionConfig, SessionContext, col, lit};

    /// A small deterministic generator (the tests need no statistical quality).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    const WORDS: [&str; 6] = [
        "",
        "a",
        "3f2a9c7e5b1d40f8a6c2e9b7d5f3a1c8e6b4d2f0",
        "3f2a9c7e5b1d40f8a6c2e9b7d5f3a1c8e6b4d2f1",
        "short",
        "ÄÖü",
    ];

    /// A table of text, long, int and payload columns, with nulls, in batches of `batch`.
    /// Table 2's text also takes values table 1 never has (ones the build side of a join
    /// may not have interned).
    fn table(rng: &mut Rng, rows: usize, batch: usize, view: bool, tag: i64) -> MemTable {
        let words: Vec<&str> = match tag {
            2 => WORDS
                .iter()
                .chain(&["only in r", "also only in r"])
                .copied()
                .collect(),
            _ => WORDS.to_vec(),
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "s",
                if view {
                    DataType::Utf8View
                } else {
                    DataType::Utf8
                },
                true,
            ),
            Field::new("n", DataType::Int64, true),
            Field::new("i", DataType::Int32, true),
            Field::new("t", DataType::Utf8, true),
            Field::new("payload", DataType::Int64, false),
            Field::new("u", DataType::Utf8View, true),
        ]));
        let mut batches = Vec::new();
        let mut row = 0;
        while row < rows {
            let len = batch.min(rows - row);
            let mut s = Vec::new();
            let mut n = Vec::new();
            let mut i = Vec::new();
            let mut t = Vec::new();
            let mut payload = Vec::new();
            let mut u = Vec::new();
            let mut word = WORDS[0];
            for _ in 0..len {
                // Runs of one value, as clustered rows have.
                if rng.below(3) == 0 {
                    word = words[rng.below(words.len() as u64) as usize];
                }
                s.push((rng.below(10) != 0).then_some(word));
                n.push((rng.below(10) != 0).then(|| rng.below(5) as i64 - 2));
                i.push((rng.below(10) != 0).then(|| rng.below(3) as i32 - 1));
                t.push((rng.below(10) != 0).then_some(words[rng.below(3) as usize]));
                payload.push(tag * 1_000_000 + row as i64);
                // Many values, long ones: a selective lone key. Table 2 has some table 1 has not.
                let many = if tag == 2 { 240 } else { 200 };
                u.push(
                    (rng.below(10) != 0).then(|| format!("{}-{:03}", WORDS[2], rng.below(many))),
                );
                row += 1;
            }
            let s: ArrayRef = if view {
                Arc::new(StringViewArray::from(s))
            } else {
                Arc::new(StringArray::from(s))
            };
            batches.push(
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        s,
                        Arc::new(Int64Array::from(n)),
                        Arc::new(Int32Array::from(i)),
                        Arc::new(StringArray::from(t)),
                        Arc::new(Int64Array::from(payload)),
                        Arc::new(StringViewArray::from(u)),
                    ],
                )
                .unwrap(),
            );
        }
        MemTable::try_new(schema, vec![batches]).unwrap()
    }

    fn context(pack: bool, partitioned: bool) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(64);
        if partitioned {
            let options = config.options_mut();
            options.optimizer.hash_join_single_partition_threshold = 0;
            options.optimizer.hash_join_single_partition_threshold_rows = 0;
        }
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if pack {
            state = state.with_physical_optimizer_rule(Arc::new(PackJoinKeys));
        }
        SessionContext::new_with_state(state.build())
    }

    /// An equality per key: a column of both tables, or `payload % 3` (a computed key).
    fn condition(keys: &[&str]) -> Vec<Expr> {
        keys.iter()
            .map(|&k| match k {
                "payload % 3" => (col("l.payload") % lit(3i64)).eq(col("r.payload") % lit(3i64)),
                k => col(format!("l.{k}")).eq(col(format!("r.{k}"))),
            })
            .collect()
    }

    /// The joined rows, sorted, as text; and the physical plan that produced them.
    async fn run(ctx: &SessionContext, kind: JoinType, keys: &[&str]) -> (String, String) {
        let columns = match kind {
            JoinType::LeftSemi | JoinType::LeftAnti => vec![col("l.payload"), col("l.s")],
            JoinType::RightSemi | JoinType::RightAnti => vec![col("r.payload"), col("r.s")],
            _ => vec![
                col("l.payload"),
                col("l.s"),
                col("r.payload").alias("rp"),
                col("r.n"),
            ],
        };
        let order = columns.iter().map(|c| c.clone().sort(true, true)).collect();
        let left = ctx.table("l").await.unwrap();
        let right = ctx.table("r").await.unwrap();
        let df = left
            .join_on(right, kind, condition(keys))
            .unwrap()
            .select(columns)
            .unwrap()
            .sort(order)
            .unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), shown)
    }

    /// Every join kind, both partition modes, keys of text with longs, ints, text and a
    /// computed key: the packed join returns exactly what DataFusion's own returns.
    #[tokio::test]
    async fn packed_joins_return_what_unpacked_joins_do() {
        let kinds = [
            JoinType::Inner,
            JoinType::Left,
            JoinType::Right,
            JoinType::Full,
            JoinType::LeftSemi,
            JoinType::LeftAnti,
            JoinType::RightSemi,
            JoinType::RightAnti,
        ];
        let conditions: [&[&str]; 7] = [
            &["u"],
            &["s", "n"],
            &["i", "s", "t"],
            &["s", "t"],
            &["i", "s"],
            // 128 bits, all an i128 holds.
            &["n", "s", "i"],
            &["s", "payload % 3"],
        ];
        for round in 0..2 {
            let view = round == 0;
            for partitioned in [true, false] {
                let plain = context(false, partitioned);
                let packed = context(true, partitioned);
                for ctx in [&plain, &packed] {
                    // The same tables in both contexts.
                    let mut seed = Rng(round * 7 + 1);
                    ctx.register_table("l", Arc::new(table(&mut seed, 700, 97, view, 1)))
                        .unwrap();
                    ctx.register_table("r", Arc::new(table(&mut seed, 500, 61, view, 2)))
                        .unwrap();
                }
                for kind in kinds {
                    for keys in conditions {
                        let (want, _) = run(&plain, kind, keys).await;
                        let (got, shown) = run(&packed, kind, keys).await;
                        let what =
                            format!("{kind} on {keys:?} (partitioned {partitioned}, views {view})");
                        assert!(
                            shown.contains("PackedKeysExec"),
                            "not packed: {what}\n{shown}"
                        );
                        assert_eq!(got, want, "{what}\n{shown}");
                        assert!(want.lines().count() > 8, "{what}: too few rows to tell");
                    }
                }
            }
        }
    }

    /// Joins that packing does not help, or could get wrong, are left as they are.
    #[tokio::test]
    async fn joins_without_text_or_too_wide_are_left_alone() {
        let ctx = context(true, true);
        let mut seed = Rng(5);
        ctx.register_table("l", Arc::new(table(&mut seed, 100, 50, true, 1)))
            .unwrap();
        ctx.register_table("r", Arc::new(table(&mut seed, 100, 50, true, 2)))
            .unwrap();
        // No text; 160 bits, past what an i128 holds.
        let conditions: [&[&str]; 3] = [&["n"], &["n", "i"], &["n", "s", "payload"]];
        for keys in conditions {
            let (_, shown) = run(&ctx, JoinType::Inner, keys).await;
            assert!(!shown.contains("PackedKeysExec"), "{keys:?}\n{shown}");
        }
    }

    /// The interner counts against the query's memory pool: a pool too small for the build
    /// side's distinct values fails the query with a resources error naming it.
    #[tokio::test]
    async fn the_interner_counts_against_the_memory_pool() {
        let mut rng = Rng(11);
        let rows = 2_000;
        let values: Vec<String> = (0..rows)
            .map(|i| format!("{i:0>200}{}", rng.below(9)))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8View, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringViewArray::from_iter_values(values.iter())),
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            ],
        )
        .unwrap();
        let input: Arc<dyn ExecutionPlan> =
            datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[vec![batch]],
                Arc::clone(&schema),
                None,
            )
            .unwrap();
        let exec = PackedKeysExec::new(
            input,
            vec![
                Arc::new(Column::new("s", 0)) as Arc<dyn PhysicalExpr>,
                Arc::new(Column::new("n", 1)),
            ],
            vec![Part::Text, Part::Bits(8)],
            Side::Build,
            Arc::new(Interners::new(1)),
        );
        let pool = Arc::new(datafusion::execution::memory_pool::GreedyMemoryPool::new(
            100_000,
        ));
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .unwrap();
        let task = Arc::new(TaskContext::default().with_runtime(runtime));
        let mut stream = exec.execute(0, task).unwrap();
        let mut error = None;
        while let Some(batch) = stream.next().await {
            if let Err(e) = batch {
                error = Some(e);
                break;
            }
        }
        let error = error.expect("2,000 values of 200 bytes fit in 100 kB");
        assert!(
            matches!(error.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{error}"
        );
        assert!(error.to_string().contains("PackedKeysExec"), "{error}");
    }
}
