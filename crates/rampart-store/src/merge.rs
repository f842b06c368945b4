//! Compaction's merge: several Parquet files of one partition into one whose row groups are
//! each clustered (see `files::cluster_columns`) and follow each other in time order. Row
//! groups of earlier merges that are full enough are copied as they are encoded; the rest
//! are read one row group at a time, so that memory stays near a budget however large the
//! output.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::error::ArrowError;
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use rampart_schema::Table;

use crate::StoreError;
use crate::files::{
    FileWriter, RowGroupCopy, TIMESTAMP, Written, cluster, copied_rows, is_clustered, parquet_err,
    time_order,
};
use crate::io_err;

/// Rows per batch read from an input row group.
const READ_BATCH_ROWS: usize = 8192;

/// An input row group: its time range (None: no Timestamp statistics, read first), and
/// where it is.
struct Group {
    min_ts: Option<i64>,
    max_ts: Option<i64>,
    input: usize,
    index: usize,
}

/// Rows read and not yet written, in memory.
#[derive(Default)]
struct Pool {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl Pool {
    fn push(&mut self, batch: RecordBatch) {
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        self.batches.push(batch);
    }
}

/// Merges `inputs` (files of `table`, all of partition day `day`) into a new file at `out`.
///
/// A row group of an earlier merge (already clustered) with at least half of
/// `row_group_rows` rows, in a file of the table's current layout, is copied as it is
/// encoded: a row is decoded and clustered once, not at every merge that carries it. The
/// other input row groups are read in the order of their first Timestamp. An output row
/// group (at most `row_group_rows` rows) is written once no unread input row group can hold
/// a row that belongs before its last one, so those row groups come out in time order; only
/// when the rows waiting would exceed `budget` bytes (inputs that overlap in time more than
/// that) is one written early, and then the next may start before it ends. Each copy goes
/// before the first written row group that starts after it. Timestamp statistics stay exact
/// for every row group. Memory: about `budget` plus one input row group.
pub(crate) fn merge_files(
    out: &Path,
    table: Table,
    props: &WriterProperties,
    inputs: &[PathBuf],
    day: i32,
    row_group_rows: usize,
    budget: usize,
) -> Result<Written, StoreError> {
    let layout = ArrowSchemaConverter::new()
        .convert(&table.arrow_schema())
        .map_err(|e| parquet_err(out, e))?;
    let row_group_rows = row_group_rows.max(1);
    let mut sources = Vec::with_capacity(inputs.len());
    let mut groups = Vec::new();
    let mut copied = Vec::new();
    for (input, path) in inputs.iter().enumerate() {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let meta = ArrowReaderMetadata::load(
            &file,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .map_err(|e| parquet_err(path, e))?;
        let parquet = meta.metadata();
        let schema = parquet.file_metadata().schema_descr();
        let copyable = is_clustered(parquet) && schema.columns() == layout.columns();
        let ts_column = schema.columns().iter().position(|c| c.name() == TIMESTAMP);
        for (index, rg) in parquet.row_groups().iter().enumerate() {
            let range = ts_column
                .and_then(|c| rg.column(c).statistics())
                .and_then(|s| match s {
                    Statistics::Int64(v) => Some((v.min_opt().copied(), v.max_opt().copied())),
                    _ => None,
                });
            let group = Group {
                min_ts: range.and_then(|r| r.0),
                max_ts: range.and_then(|r| r.1),
                input,
                index,
            };
            let rows = usize::try_from(rg.num_rows()).unwrap_or(0);
            if copyable && rows >= copied_rows(row_group_rows) {
                copied.push(group);
            } else {
                groups.push(group);
            }
        }
        sources.push((file, meta));
    }
    groups.sort_by_key(|g| g.min_ts);
    copied.sort_by_key(|g| g.min_ts);

    let read = |g: &Group, pool: &mut Pool| -> Result<(), StoreError> {
        let path = &inputs[g.input];
        let (file, meta) = &sources[g.input];
        let file = file.try_clone().map_err(|e| io_err(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
            .with_row_groups(vec![g.index])
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| parquet_err(path, e))?;
        let schema = table.arrow_schema();
        let located = |e: ArrowError| StoreError::Parquet {
            path: path.clone(),
            message: e.to_string(),
        };
        for batch in reader {
            let batch = batch.map_err(located)?;
            // Same columns; this restores the table's own field metadata.
            pool.push(
                RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(located)?,
            );
        }
        Ok(())
    };

    let copy_of = |g: &Group| RowGroupCopy {
        path: &inputs[g.input],
        file: &sources[g.input].0,
        meta: sources[g.input].1.metadata(),
        index: g.index,
        min_ts: g.min_ts,
        max_ts: g.max_ts,
    };
    let mut copies = copied.iter().peekable();
    let mut writer = FileWriter::create(out, table, props)?;
    let mut pool = Pool::default();
    let mut unread = groups.iter().peekable();
    loop {
        while pool.rows < row_group_rows && pool.bytes < budget {
            let Some(g) = unread.next() else { break };
            read(g, &mut pool)?;
        }
        if pool.rows == 0 {
            break;
        }
        let sources: Vec<(&RecordBatch, i32)> = pool.batches.iter().map(|b| (b, day)).collect();
        let mut rows = time_order(&sources, table)?;
        // Rows no unread row group can precede: those up to where the next one starts.
        let ready = match unread.peek() {
            None => rows.len(),
            Some(next) => rows.partition_point(|r| match (r.ts, next.min_ts) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(t), Some(start)) => t <= start,
            }),
        };
        if ready < row_group_rows.min(rows.len())
            && pool.bytes < budget
            && let Some(g) = unread.next()
        {
            read(g, &mut pool)?;
            continue;
        }
        // Over budget with nothing ready: write the earliest rows anyway.
        let take = match ready {
            0 => row_group_rows.min(rows.len()),
            n => n.min(row_group_rows),
        };
        let (group, rest) = rows.split_at_mut(take);
        // Copies that start before this row group go first (row groups in time order as far
        // as the inputs allow).
        let starts = group.first().and_then(|r| r.ts);
        while let Some(g) = copies.next_if(|g| g.min_ts < starts) {
            writer.copy_row_group(&copy_of(g))?;
        }
        cluster(group);
        let batches: Vec<&RecordBatch> = pool.batches.iter().collect();
        writer.write_rows(&batches, group)?;
        writer.end_row_group()?;
        let rest: Vec<(usize, usize)> = rest
            .iter()
            .map(|r| (r.batch as usize, r.row as usize))
            .collect();
        let mut left = Pool::default();
        if !rest.is_empty() {
            left.push(interleave_record_batch(&batches, &rest)?);
        }
        pool = left;
    }
    for g in copies {
        writer.copy_row_group(&copy_of(g))?;
    }
    writer.finish(true)
}
