//! Group-bys on several text columns grouped on one packed integer instead.
//!
//! DataFusion groups rows by several columns in a table of the groups' values, column by
//! column: each row's values are hashed and compared with its group's copies, a `memcmp` of
//! each text column against group buffers spread over memory. Hunting groups by devices,
//! files and accounts (`summarize dcount(AccountName) by DeviceId, FileName`): there that
//! comparison was ~40 % of the query's time, where DuckDB is faster.
//!
//! [`PackGroupKeys`] rewrites the first (partial) aggregation of such a group-by: the rows
//! get one more column ([`PackedGroupsExec`]), their text keys each numbered in an interner
//! of the partition (hunting's keys have few distinct values: a small table) and the numbers packed
//! side by side into one integer (`UInt64` for two keys, a 128-bit decimal's bits for three
//! or four), which the aggregation groups by in DataFusion's table for one primitive column;
//! [`UnpackGroupsExec`] turns each group's integer back into its text values from the same
//! interner, so the final aggregation, and everything after it, sees what it saw before.
//! Numbers are exact, not hashes; a null value has a number of its own.

use std::fmt;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::expressions::Column;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputOrderMode,
    Partitioning, PlanProperties,
};
use futures::StreamExt;

use crate::key_column::{apply_to_keys, only_child, properties, with_key_column};
use crate::key_table::{NOT_INTERNED, TextTable, texts};

/// The name of the packed key column.
const KEY_COLUMN: &str = "__rampart_group_key";

/// Text keys packed at most (32 bits each, in 128).
const MAX_KEYS: usize = 4;

/// The number of a null value (never given to a value).
const NULL_ID: u32 = NOT_INTERNED;

/// The physical optimiser rule; it runs last, on the plan DataFusion's rules have settled.
#[derive(Debug, Default)]
pub struct PackGroupKeys;

impl PhysicalOptimizerRule for PackGroupKeys {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            Ok(match packed_aggregate(aggregate)? {
                Some(packed) => Transformed::yes(packed),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "pack_group_keys"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The aggregation with its keys packed, or `None` when it is not one to pack: one that
/// reads states rather than rows (a final aggregation), grouping sets, a limit, input in
/// order, fewer than two keys or more than [`MAX_KEYS`], or a key that is not text.
fn packed_aggregate(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let group_by = aggregate.group_expr();
    let mode = *aggregate.mode();
    if !matches!(
        mode,
        AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
    ) || !group_by.is_single()
        || aggregate.limit_options().is_some()
        || *aggregate.input_order_mode() != InputOrderMode::Linear
        || !(2..=MAX_KEYS).contains(&group_by.expr().len())
    {
        return Ok(None);
    }
    let input = aggregate.input();
    let input_schema = input.schema();
    let mut types = Vec::with_capacity(group_by.expr().len());
    for (expr, _) in group_by.expr() {
        let t = expr.data_type(&input_schema)?;
        if !matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Ok(None);
        }
        types.push(t);
    }
    let interners = Arc::new(Interners::new(
        input.output_partitioning().partition_count(),
    ));
    let packed = Arc::new(PackedGroupsExec::new(
        Arc::clone(input),
        group_by.expr().iter().map(|(e, _)| Arc::clone(e)).collect(),
        Arc::clone(&interners),
    ));
    let key = Column::new(KEY_COLUMN, input_schema.fields().len());
    let grouped = AggregateExec::try_new(
        mode,
        PhysicalGroupBy::new_single(vec![(Arc::new(key), KEY_COLUMN.to_string())]),
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        Arc::clone(&packed) as Arc<dyn ExecutionPlan>,
        packed.schema(),
    )?;
    // The aggregation's states follow its one key as they followed the keys.
    let (was, now) = (aggregate.schema(), grouped.schema());
    if was.fields()[types.len()..] != now.fields()[1..] {
        return Ok(None);
    }
    Ok(Some(Arc::new(UnpackGroupsExec::new(
        Arc::new(grouped),
        types,
        interners,
        was,
        aggregate.properties().output_partitioning().clone(),
    ))))
}

/// The packed key's type for `keys` text keys.
fn packed_type(keys: usize) -> DataType {
    if keys <= 2 {
        DataType::UInt64
    } else {
        DataType::Decimal128(38, 0)
    }
}

/// One interner per partition of the aggregation: filled by [`PackedGroupsExec`], read by
/// [`UnpackGroupsExec`].
#[derive(Debug)]
struct Interners {
    slots: Vec<RwLock<Interner>>,
}

impl Interners {
    fn new(n: usize) -> Interners {
        Interners {
            slots: (0..n.max(1)).map(|_| RwLock::default()).collect(),
        }
    }

    fn slot(&self, partition: usize) -> Result<&RwLock<Interner>> {
        match self.slots.get(partition) {
            Some(slot) => Ok(slot),
            None => internal_err!("packed group keys have no interner for partition {partition}"),
        }
    }
}

/// Distinct text values of every key column, numbered in the order first seen.
#[derive(Debug, Default)]
struct Interner {
    texts: TextTable,
    reservation: Option<MemoryReservation>,
}

impl Interner {
    fn id(&mut self, value: &[u8]) -> Result<u32> {
        let reservation = &mut self.reservation;
        self.texts.intern(value, |bytes| match reservation {
            Some(r) => r.try_grow(bytes),
            None => Ok(()),
        })
    }

    fn value(&self, id: u32) -> Result<Option<&str>> {
        if id == NULL_ID {
            return Ok(None);
        }
        let Some(bytes) = self.texts.value(id) else {
            return internal_err!("packed group keys: no value numbered {id}");
        };
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|e| DataFusionError::Internal(format!("packed group keys: {e}")))
    }
}

fn poisoned() -> DataFusionError {
    DataFusionError::Internal("a group key interner was poisoned".into())
}

/// Passes its input's rows on with one more column: their text keys' numbers packed into one
/// integer, first key in the highest bits.
#[derive(Debug)]
pub struct PackedGroupsExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    interners: Arc<Interners>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl PackedGroupsExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        interners: Arc<Interners>,
    ) -> PackedGroupsExec {
        let schema = with_key_column(&input.schema(), KEY_COLUMN, packed_type(keys.len()), false);
        // The input's columns keep their places: its partitioning still describes the rows.
        let properties = properties(&schema, input.output_partitioning().clone(), &input);
        PackedGroupsExec {
            input,
            keys,
            interners,
            schema,
            properties,
        }
    }
}

impl DisplayAs for PackedGroupsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(f, "PackedGroupsExec: keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for PackedGroupsExec {
    fn name(&self) -> &str {
        "PackedGroupsExec"
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
        Ok(Arc::new(PackedGroupsExec::new(
            only_child("PackedGroupsExec", children)?,
            self.keys.clone(),
            Arc::clone(&self.interners),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        {
            let mut interner = self
                .interners
                .slot(partition)?
                .write()
                .map_err(|_| poisoned())?;
            if interner.reservation.is_none() {
                interner.reservation = Some(
                    MemoryConsumer::new(format!("PackedGroupsExec[{partition}]"))
                        .register(context.memory_pool()),
                );
            }
        }
        let input = self.input.execute(partition, context)?;
        let (keys, interners, schema) = (
            self.keys.clone(),
            Arc::clone(&self.interners),
            Arc::clone(&self.schema),
        );
        let packed = input.map(move |batch| {
            let batch = batch?;
            let rows = batch.num_rows();
            let mut packed = vec![0u128; rows];
            let mut ids = vec![NULL_ID; rows];
            let mut interner = interners.slot(partition)?.write().map_err(|_| poisoned())?;
            for key in &keys {
                let values = key.evaluate(&batch)?.into_array(rows)?;
                ids.fill(NULL_ID);
                texts(&values, |v| interner.id(v), |i, id| ids[i] = id)?;
                for (p, &id) in packed.iter_mut().zip(&ids) {
                    *p = *p << 32 | u128::from(id);
                }
            }
            drop(interner);
            let column: ArrayRef = if keys.len() <= 2 {
                Arc::new(UInt64Array::from_iter_values(
                    packed.into_iter().map(|p| p as u64),
                ))
            } else {
                Arc::new(
                    Decimal128Array::from_iter_values(packed.into_iter().map(|p| p as i128))
                        .with_precision_and_scale(38, 0)?,
                )
            };
            let mut columns = batch.columns().to_vec();
            columns.push(column);
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            packed,
        )))
    }
}

/// Turns the packed key of each group a partial aggregation gives back into its text keys,
/// giving the rows the aggregation's schema before packing.
#[derive(Debug)]
pub struct UnpackGroupsExec {
    input: Arc<dyn ExecutionPlan>,
    types: Vec<DataType>,
    interners: Arc<Interners>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl UnpackGroupsExec {
    /// `partitioning`: the original aggregation's (each group's rows are where they were).
    fn new(
        input: Arc<dyn ExecutionPlan>,
        types: Vec<DataType>,
        interners: Arc<Interners>,
        schema: SchemaRef,
        partitioning: Partitioning,
    ) -> UnpackGroupsExec {
        let properties = properties(&schema, partitioning, &input);
        UnpackGroupsExec {
            input,
            types,
            interners,
            schema,
            properties,
        }
    }
}

impl DisplayAs for UnpackGroupsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<&str> = self.schema.fields()[..self.types.len()]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(f, "UnpackGroupsExec: keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for UnpackGroupsExec {
    fn name(&self) -> &str {
        "UnpackGroupsExec"
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
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(UnpackGroupsExec::new(
            only_child("UnpackGroupsExec", children)?,
            self.types.clone(),
            Arc::clone(&self.interners),
            Arc::clone(&self.schema),
            self.properties.output_partitioning().clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // The interner must be the one the aggregation's input of this partition filled.
        self.interners.slot(partition)?;
        let input = self.input.execute(partition, context)?;
        let (types, interners, schema) = (
            self.types.clone(),
            Arc::clone(&self.interners),
            Arc::clone(&self.schema),
        );
        let unpacked = input.map(move |batch| {
            let batch = batch?;
            let interner = interners.slot(partition)?.read().map_err(|_| poisoned())?;
            let Some(key) = batch.columns().first() else {
                return internal_err!("UnpackGroupsExec: a batch without its key");
            };
            let packed: Vec<u128> = match key.data_type() {
                DataType::UInt64 => key
                    .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
                    .values()
                    .iter()
                    .map(|&p| u128::from(p))
                    .collect(),
                DataType::Decimal128(..) => key
                    .as_primitive::<Decimal128Type>()
                    .values()
                    .iter()
                    .map(|&p| p as u128)
                    .collect(),
                t => return internal_err!("UnpackGroupsExec: a {t} key"),
            };
            let mut columns = Vec::with_capacity(schema.fields().len());
            for (k, t) in types.iter().enumerate() {
                let shift = 32 * (types.len() - 1 - k);
                let values = packed
                    .iter()
                    .map(|&p| interner.value((p >> shift) as u32))
                    .collect::<Result<Vec<_>>>()?;
                columns.push(text_array(t, values)?);
            }
            columns.extend(batch.columns()[1..].iter().cloned());
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            unpacked,
        )))
    }
}

fn text_array(t: &DataType, values: Vec<Option<&str>>) -> Result<ArrayRef> {
    Ok(match t {
        DataType::Utf8 => Arc::new(StringArray::from(values)),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from(values)),
        DataType::Utf8View => Arc::new(StringViewArray::from(values)),
        t => return internal_err!("UnpackGroupsExec: {t} is not text"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::functions_aggregate::expr_fn::{count, count_distinct, max, sum};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{Expr, SessionConfig, SessionContext, col, lower};

    use crate::join_keys::tests::Rng;

    /// Values that differ by case only, the empty value, long values (not inlined in a
    /// view), many values in `c`.
    const WORDS: [&str; 6] = [
        "",
        "cmd.exe",
        "CMD.EXE",
        "3f2a9c7e5b1d40f8a6c2e9b7d5f3a1c8e6b4d2f0",
        "3f2a9c7e5b1d40f8a6c2e9b7d5f3a1c8e6b4d2f1",
        "x",
    ];

    /// Three partitions of rows with text keys of each text type, nulls among them, in runs.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8View, true),
            Field::new("b", DataType::Utf8, true),
            Field::new("c", DataType::LargeUtf8, true),
            Field::new("d", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
            Field::new("e", DataType::Utf8, true),
        ]));
        let mut rng = Rng(7);
        let word = |rng: &mut Rng| (rng.below(8) != 0).then(|| WORDS[rng.below(6) as usize]);
        let partitions = (0..3)
            .map(|_| {
                (0..4)
                    .map(|_| {
                        let rows = 1 + rng.below(300) as usize;
                        let mut a = Vec::with_capacity(rows);
                        let (mut b, mut c, mut d) = (vec![], vec![], vec![]);
                        let (mut n, mut e) = (vec![], vec![]);
                        let mut run = word(&mut rng);
                        for _ in 0..rows {
                            if rng.below(4) == 0 {
                                run = word(&mut rng);
                            }
                            a.push(run);
                            b.push(word(&mut rng));
                            c.push(word(&mut rng).map(|w| format!("{w}{}", rng.below(50))));
                            d.push(word(&mut rng));
                            n.push((rng.below(9) != 0).then(|| rng.below(7) as i64));
                            e.push(word(&mut rng));
                        }
                        RecordBatch::try_new(
                            Arc::clone(&schema),
                            vec![
                                Arc::new(StringViewArray::from(a)),
                                Arc::new(StringArray::from(b)),
                                Arc::new(LargeStringArray::from(c)),
                                Arc::new(StringViewArray::from(d)),
                                Arc::new(Int64Array::from(n)),
                                Arc::new(StringArray::from(e)),
                            ],
                        )
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        MemTable::try_new(schema, partitions).unwrap()
    }

    fn context(pack: bool) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(64);
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if pack {
            state = state.with_physical_optimizer_rule(Arc::new(PackGroupKeys));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_table("t", Arc::new(table())).unwrap();
        ctx
    }

    /// The groups, sorted, as text; and the physical plan that produced them.
    async fn run(ctx: &SessionContext, keys: &[Expr]) -> (String, String) {
        let aggregates = vec![
            count(col("n")).alias("count"),
            sum(col("n")).alias("sum"),
            max(col("b")).alias("max_b"),
            count_distinct(col("n")).alias("distinct"),
        ];
        let df = ctx
            .table("t")
            .await
            .unwrap()
            .aggregate(keys.to_vec(), aggregates)
            .unwrap();
        let names: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let sorted = names
            .iter()
            .map(|n| datafusion::prelude::ident(n).sort(true, true))
            .collect();
        let df = df.sort(sorted).unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = df.collect().await.unwrap();
        (pretty_format_batches(&batches).unwrap().to_string(), shown)
    }

    /// Two to four text keys of every text type, a computed key, nulls and values that differ
    /// by case: the packed group-by returns exactly what DataFusion's own returns.
    #[tokio::test]
    async fn packed_group_bys_return_what_unpacked_ones_do() {
        let (plain, packed) = (context(false), context(true));
        let key_sets = [
            vec![col("a"), col("b")],
            vec![col("b"), col("a")],
            vec![col("a"), col("c"), col("d")],
            vec![col("d"), col("c"), col("b"), col("a")],
            vec![lower(col("b")), col("d")],
        ];
        for keys in &key_sets {
            let (want, _) = run(&plain, keys).await;
            let (got, shown) = run(&packed, keys).await;
            assert!(shown.contains("PackedGroupsExec"), "{keys:?}\n{shown}");
            assert_eq!(got, want, "{keys:?}\n{shown}");
        }
    }

    /// One text key (DataFusion's own table for one text column is as good), a key that is
    /// not text, and five keys (more than 128 bits) are left alone.
    #[tokio::test]
    async fn other_group_bys_are_left_alone() {
        let ctx = context(true);
        let key_sets = [
            vec![col("a")],
            vec![col("a"), col("n")],
            vec![col("a"), col("b"), col("c"), col("d"), col("e")],
        ];
        for keys in &key_sets {
            let (_, shown) = run(&ctx, keys).await;
            assert!(!shown.contains("PackedGroupsExec"), "{keys:?}\n{shown}");
        }
    }
}
