//! The DataFusion view of one tenant's table: its Parquet files and in-memory batches, as
//! they are when a scan is planned.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Result, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileGroupPartitioner, FileScanConfigBuilder, ParquetSource,
};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::object_store::ObjectMeta;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use rampart_schema::{KustoType, Table};

use crate::Snapshot;
use crate::files::DataFile;
use crate::files::TIMESTAMP;
use crate::manifest::FileMeta;

/// Where a scan takes its files and in-memory batches from: the live store or a read-only
/// view of it.
pub(crate) trait Snapshots: std::fmt::Debug + Send + Sync {
    fn snapshot(&self, tenant: &str, table: Table, range: &TimeRange) -> Snapshot;
}

/// A table of one tenant, as DataFusion sees it.
#[derive(Debug)]
pub(crate) struct StoreTable {
    pub(crate) source: Arc<dyn Snapshots>,
    pub(crate) tenant: String,
    pub(crate) table: Table,
}

/// Inclusive bounds on Timestamp (microseconds) implied by a scan's filters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeRange {
    pub(crate) lo: Option<i64>,
    pub(crate) hi: Option<i64>,
}

impl TimeRange {
    fn bounded(&self) -> bool {
        self.lo.is_some() || self.hi.is_some()
    }

    /// Whether rows with Timestamps in `[min, max]` (`None`: no non-null Timestamp) may match.
    pub(crate) fn overlaps(&self, min: Option<i64>, max: Option<i64>) -> bool {
        if let (Some(lo), Some(hi)) = (self.lo, self.hi)
            && lo > hi
        {
            return false;
        }
        match (min, max) {
            // A comparison with a null Timestamp is never true.
            (None, _) | (_, None) => !self.bounded(),
            (Some(min), Some(max)) => {
                self.lo.is_none_or(|lo| max >= lo) && self.hi.is_none_or(|hi| min <= hi)
            }
        }
    }

    fn at_least(&mut self, us: i64) {
        self.lo = Some(self.lo.map_or(us, |lo| lo.max(us)));
    }

    fn at_most(&mut self, us: i64) {
        self.hi = Some(self.hi.map_or(us, |hi| hi.min(us)));
    }
}

/// The Timestamp bounds that every row passing `filters` (all of them) must meet. Only what
/// is certain is used: comparisons of Timestamp with a literal, joined by AND.
pub(crate) fn time_range(filters: &[Expr]) -> TimeRange {
    let mut range = TimeRange::default();
    for f in filters {
        narrow(f, &mut range);
    }
    range
}

fn narrow(expr: &Expr, range: &mut TimeRange) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                narrow(left, range);
                narrow(right, range);
                return;
            }
            let (op, value) = if is_timestamp(left) {
                (*op, micros(right))
            } else if is_timestamp(right) {
                match op.swap() {
                    Some(swapped) => (swapped, micros(left)),
                    None => return,
                }
            } else {
                return;
            };
            // Timestamps are whole microseconds: `ts > 2.5` is `ts >= 3`, `ts < 2.5` is `ts <= 2`.
            let Some((floor, ceil)) = value else { return };
            match op {
                Operator::Gt => range.at_least(floor.saturating_add(1)),
                Operator::GtEq => range.at_least(ceil),
                Operator::Lt => range.at_most(ceil.saturating_sub(1)),
                Operator::LtEq => range.at_most(floor),
                Operator::Eq => {
                    range.at_least(ceil);
                    range.at_most(floor);
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_timestamp(expr) => {
            if let Some((_, ceil)) = micros(low) {
                range.at_least(ceil);
            }
            if let Some((floor, _)) = micros(high) {
                range.at_most(floor);
            }
        }
        _ => {}
    }
}

/// The Timestamp column, possibly cast to another timestamp type (a monotonic change).
fn is_timestamp(expr: &Expr) -> bool {
    match expr {
        Expr::Column(c) => c.name == TIMESTAMP,
        Expr::Cast(c) => {
            matches!(
                c.field.data_type(),
                datafusion::arrow::datatypes::DataType::Timestamp(..)
            ) && is_timestamp(&c.expr)
        }
        _ => false,
    }
}

/// A timestamp literal in microseconds, rounded down and up (equal unless it has nanoseconds).
fn micros(expr: &Expr) -> Option<(i64, i64)> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let (v, per_us_num, per_us_den) = match value {
        ScalarValue::TimestampSecond(Some(v), _) => (*v, 1_000_000, 1),
        ScalarValue::TimestampMillisecond(Some(v), _) => (*v, 1_000, 1),
        ScalarValue::TimestampMicrosecond(Some(v), _) => (*v, 1, 1),
        ScalarValue::TimestampNanosecond(Some(v), _) => (*v, 1, 1_000),
        _ => return None,
    };
    let scaled = i128::from(v) * per_us_num;
    let floor = scaled.div_euclid(per_us_den);
    let ceil = -(-scaled).div_euclid(per_us_den);
    let clamp = |x: i128| x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    Some((clamp(floor), clamp(ceil)))
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        scan_schema(self.table)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter is used to skip files, row groups and pages (Parquet statistics) and
    /// in-memory batches (their Timestamp range), never to drop single rows: DataFusion still
    /// applies it to what the scan returns.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let range = time_range(filters);
        let snapshot = self.source.snapshot(&self.tenant, self.table, &range);
        let partitions = state.config().target_partitions().max(1);

        let mut memory: Vec<Vec<_>> =
            vec![Vec::new(); partitions.min(snapshot.batches.len()).max(1)];
        let slots = memory.len();
        // Only the columns the scan reads are cast to views (strings are stored as `Utf8`).
        let projected = match projection {
            Some(columns) => Arc::new(schema.project(columns)?),
            None => schema.clone(),
        };
        for (i, batch) in snapshot.batches.into_iter().enumerate() {
            let batch = match projection {
                Some(columns) => batch.project(columns)?,
                None => batch,
            };
            memory[i % slots].push(as_scanned(&batch, &projected)?);
        }
        let memory = MemorySourceConfig::try_new(&memory, projected, None)?.with_limit(limit);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = vec![DataSourceExec::from_data_source(memory)];

        if !snapshot.files.is_empty() {
            let mut options = state.table_options().parquet.clone();
            // Strings come out of Parquet as views, as `scan_schema` has them.
            options.global.schema_force_view_types = true;
            let url = ObjectStoreUrl::local_filesystem();
            let object_store = state.runtime_env().object_store(&url)?;
            let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
            let mut source = ParquetSource::new(schema.clone())
                .with_table_parquet_options(options)
                .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                    object_store,
                    metadata_cache,
                )));
            // Filters that cannot be planned here are still applied above the scan.
            let df_schema = DFSchema::try_from(schema.clone())?;
            let usable = filters
                .iter()
                .filter(|f| state.create_physical_expr((*f).clone(), &df_schema).is_ok())
                .cloned();
            if let Some(predicate) = conjunction(usable) {
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let total = files_statistics(&schema, snapshot.files.iter().map(|f| &f.meta));
            let mut files = Vec::with_capacity(snapshot.files.len());
            for file in &snapshot.files {
                let location = ObjectPath::from_absolute_path(&file.path)
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                let meta = ObjectMeta {
                    location,
                    // Files are never rewritten in place (every file has a new id), so a
                    // fixed time keeps DataFusion's metadata cache valid.
                    last_modified: chrono::DateTime::UNIX_EPOCH,
                    size: file.meta.bytes,
                    e_tag: None,
                    version: None,
                };
                let file_stats = files_statistics(&schema, [&file.meta]);
                // The plan holds the file: it is not deleted while the plan may read it.
                files.push(
                    PartitionedFile::new_from_meta(meta)
                        .with_statistics(Arc::new(file_stats))
                        .with_extension(Arc::clone(file)),
                );
            }
            let groups = file_groups(state, partitions, &schema, files, &snapshot.files);
            let config = FileScanConfigBuilder::new(url, Arc::new(source))
                .with_file_groups(groups)
                .with_statistics(total)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            plans.push(DataSourceExec::from_data_source(config));
        }
        UnionExec::try_new(plans)
    }
}

/// Byte ranges per partition a scan of large files is cut into (see [`file_groups`]).
const RANGES_PER_PARTITION: usize = 4;

/// The scan's files in up to `partitions` groups. Once they are large enough to be worth it
/// (`repartition_file_min_size`), files are cut into `RANGES_PER_PARTITION` byte ranges per
/// partition, of equal bytes (a range reads the row groups whose first page it holds), dealt
/// in turn to the groups. DataFusion lets a partition that has read its own ranges take
/// ranges not yet opened from the others: the smaller the ranges, the sooner both cores
/// finish. Cut only as many ranges as partitions, a compacted store's three day files of
/// ~126 MB became a whole file, two halves and a whole file, and one core read the last file
/// alone (0.3 s of the hunting benchmark's 0.85 s `dcount`, at the same CPU). A range's file
/// statistics are only bounds; the scan's own (the sum over whole files) stay exact.
fn file_groups(
    state: &dyn Session,
    partitions: usize,
    schema: &Schema,
    files: Vec<PartitionedFile>,
    held: &[Arc<DataFile>],
) -> Vec<FileGroup> {
    let options = &state.config_options().optimizer;
    let all = FileGroup::new(files);
    let ranges = (options.repartition_file_scans && partitions > 1)
        .then(|| {
            FileGroupPartitioner::new()
                .with_target_partitions(partitions * RANGES_PER_PARTITION)
                .with_repartition_file_min_size(options.repartition_file_min_size)
                .repartition_file_groups(std::slice::from_ref(&all))
        })
        .flatten();
    if let Some(ranges) = ranges {
        let mut groups = vec![Vec::new(); partitions];
        for (i, range) in ranges.into_iter().enumerate() {
            groups[i % partitions].extend(range.into_inner().into_iter().map(|mut file| {
                file.statistics = file
                    .statistics
                    .map(|s| Arc::new(s.as_ref().clone().to_inexact()));
                file
            }));
        }
        return groups.into_iter().map(FileGroup::new).collect();
    }
    let slots = partitions.min(held.len()).max(1);
    let mut dealt: Vec<(Vec<PartitionedFile>, Vec<&FileMeta>)> = vec![Default::default(); slots];
    for (i, (file, data)) in all.into_inner().into_iter().zip(held).enumerate() {
        dealt[i % slots].0.push(file);
        dealt[i % slots].1.push(&data.meta);
    }
    dealt
        .into_iter()
        .map(|(files, metas)| {
            let stats = files_statistics(schema, metas);
            FileGroup::new(files).with_statistics(Arc::new(stats))
        })
        .collect()
}

/// The table as scans return it: `string` columns as `Utf8View`, the rest as stored. A view
/// points into the page it was decoded from, so reading a string does not copy it (a
/// dictionary page's values are not copied once per row), and DataFusion groups, compares
/// and joins views faster than `Utf8`. `dynamic` columns stay `Utf8`: they hold JSON text for
/// the dynamic functions, and are rarely grouped or joined on.
fn scan_schema(table: Table) -> SchemaRef {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        Table::ALL
            .iter()
            .map(|t| {
                let fields: Vec<Field> = t
                    .columns()
                    .iter()
                    .map(|c| {
                        let field = c.arrow_field();
                        match c.kind {
                            KustoType::String => field.with_data_type(DataType::Utf8View),
                            _ => field,
                        }
                    })
                    .collect();
                Arc::new(Schema::new(fields))
            })
            .collect()
    });
    let index = Table::ALL
        .iter()
        .position(|t| *t == table)
        .unwrap_or_default();
    schemas[index].clone()
}

/// An in-memory batch (columns as stored) as a scan returns it, in `schema`.
fn as_scanned(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => cast(c, f.data_type()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A scan may read no column at all (`count`): the row count then says how many rows.
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// What the planner knows of files before opening them: their rows, so that a join builds its
/// hash table on the smaller input, and their Timestamp range (file pruning by dynamic
/// filters, answers from statistics). Exact: a file never changes once written.
fn files_statistics<'a>(
    schema: &Schema,
    files: impl IntoIterator<Item = &'a FileMeta>,
) -> Statistics {
    let mut rows = 0usize;
    let mut range: Option<(i64, i64)> = None;
    for f in files {
        rows = rows.saturating_add(usize::try_from(f.rows).unwrap_or(usize::MAX));
        if let (Some(lo), Some(hi)) = (f.min_ts, f.max_ts) {
            range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
    }
    let mut stats = Statistics::new_unknown(schema);
    stats.num_rows = Precision::Exact(rows);
    if let (Some((lo, hi)), Ok(index)) = (range, schema.index_of(TIMESTAMP))
        && let DataType::Timestamp(TimeUnit::Microsecond, tz) = schema.field(index).data_type()
    {
        let column = &mut stats.column_statistics[index];
        column.min_value =
            Precision::Exact(ScalarValue::TimestampMicrosecond(Some(lo), tz.clone()));
        column.max_value =
            Precision::Exact(ScalarValue::TimestampMicrosecond(Some(hi), tz.clone()));
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{ident, lit};

    fn ts(us: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(us),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_bounds_come_from_comparisons_joined_by_and() {
        let r = time_range(&[
            ident("Timestamp").gt_eq(ts(10)),
            ident("Timestamp").lt(ts(20)),
        ]);
        assert_eq!(
            r,
            TimeRange {
                lo: Some(10),
                hi: Some(19)
            }
        );
        let r = time_range(&[ts(10)
            .lt_eq(ident("Timestamp"))
            .and(ident("X").eq(lit("a")))]);
        assert_eq!(
            r,
            TimeRange {
                lo: Some(10),
                hi: None
            }
        );
        let r = time_range(&[ident("Timestamp").between(ts(5), ts(7))]);
        assert_eq!(
            r,
            TimeRange {
                lo: Some(5),
                hi: Some(7)
            }
        );
        // OR, NOT and other columns say nothing certain.
        let r = time_range(&[ident("Timestamp")
            .gt(ts(10))
            .or(ident("Timestamp").lt(ts(0)))]);
        assert_eq!(r, TimeRange::default());
        let r = time_range(&[ident("ProcessCreationTime").gt(ts(10))]);
        assert_eq!(r, TimeRange::default());
        // Nanoseconds: whole microseconds around them.
        let ns = |v| lit(ScalarValue::TimestampNanosecond(Some(v), None));
        let r = time_range(&[
            ident("Timestamp").gt(ns(1_500)),
            ident("Timestamp").lt(ns(4_500)),
        ]);
        assert_eq!(
            r,
            TimeRange {
                lo: Some(2),
                hi: Some(4)
            }
        );
        let r = time_range(&[ident("Timestamp").eq(ns(1_500))]);
        assert!(!r.overlaps(Some(0), Some(10)), "no microsecond is 1.5 µs");
    }

    #[test]
    fn file_statistics_sum_rows_and_span_timestamps() {
        let meta = |rows, min_ts, max_ts| FileMeta {
            id: 1,
            path: String::new(),
            tenant: "default".into(),
            table: Table::DeviceProcessEvents.name().into(),
            day: 0,
            rows,
            bytes: 0,
            min_ts,
            max_ts,
            ingested: 0,
        };
        let schema = scan_schema(Table::DeviceProcessEvents);
        let files = [
            meta(10, Some(5), Some(9)),
            meta(7, None, None),
            meta(3, Some(1), Some(4)),
        ];
        let stats = files_statistics(&schema, &files);
        assert_eq!(stats.num_rows, Precision::Exact(20));
        let ts = |v| ScalarValue::TimestampMicrosecond(Some(v), Some("UTC".into()));
        let Ok(index) = schema.index_of(TIMESTAMP) else {
            panic!("no Timestamp")
        };
        let column = &stats.column_statistics[index];
        assert_eq!(column.min_value, Precision::Exact(ts(1)));
        assert_eq!(column.max_value, Precision::Exact(ts(9)));
        // Files with only null Timestamps say nothing of the range.
        let stats = files_statistics(&schema, &files[1..2]);
        assert_eq!(stats.column_statistics[index].min_value, Precision::Absent);
    }

    #[test]
    fn ranges_overlap() {
        let r = TimeRange {
            lo: Some(10),
            hi: Some(20),
        };
        assert!(r.overlaps(Some(0), Some(10)));
        assert!(r.overlaps(Some(20), Some(30)));
        assert!(!r.overlaps(Some(21), Some(30)));
        assert!(!r.overlaps(None, None), "only null Timestamps");
        assert!(TimeRange::default().overlaps(None, None));
    }
}
