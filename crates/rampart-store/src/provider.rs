//! The DataFusion view of one tenant's table: its Parquet files and in-memory batches, as
//! they are when a scan is planned.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::object_store::ObjectMeta;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use rampart_schema::Table;

use crate::Snapshot;
use crate::files::TIMESTAMP;

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
        self.table.arrow_schema()
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
        for (i, batch) in snapshot.batches.into_iter().enumerate() {
            memory[i % slots].push(batch);
        }
        let memory = MemorySourceConfig::try_new(&memory, schema.clone(), projection.cloned())?
            .with_limit(limit);
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = vec![DataSourceExec::from_data_source(memory)];

        if !snapshot.files.is_empty() {
            let mut options = state.table_options().parquet.clone();
            // The schema says Utf8; reading as views would only be cast back.
            options.global.schema_force_view_types = false;
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
            let mut groups: Vec<Vec<PartitionedFile>> =
                vec![Vec::new(); partitions.min(snapshot.files.len())];
            let slots = groups.len();
            for (i, file) in snapshot.files.into_iter().enumerate() {
                let location = ObjectPath::from_absolute_path(&file.path)
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                let meta = ObjectMeta {
                    location,
                    // Files are never rewritten in place (every file has a new id), so a fixed
                    // time keeps DataFusion's metadata cache valid.
                    last_modified: chrono::DateTime::UNIX_EPOCH,
                    size: file.meta.bytes,
                    e_tag: None,
                    version: None,
                };
                // The plan holds the file: it is not deleted while the plan may read it.
                groups[i % slots].push(PartitionedFile::new_from_meta(meta).with_extension(file));
            }
            let config = FileScanConfigBuilder::new(url, Arc::new(source))
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            plans.push(DataSourceExec::from_data_source(config));
        }
        UnionExec::try_new(plans)
    }
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
