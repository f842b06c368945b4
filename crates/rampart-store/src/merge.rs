//! Compaction's merge: several Parquet files of one partition into one whose row groups
//! follow each other in time order with rows clustered within each (see
//! `files::cluster_columns`), reading the inputs one row group at a time so that memory stays
//! near a budget however large the output.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use rampart_schema::Table;

use crate::StoreError;
use crate::files::{FileWriter, TIMESTAMP, Written, cluster, parquet_err, time_order};
use crate::io_err;

/// Rows per batch read from an input row group.
const READ_BATCH_ROWS: usize = 8192;

/// An input row group: where it starts in time (None: no Timestamp statistics, read first),
/// and where it is.
struct Group {
    min_ts: Option<i64>,
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
/// Input row groups are read in the order of their first Timestamp. An output row group (at
/// most `row_group_rows` rows) is written once no unread input row group can hold a row that
/// belongs before its last one, so row groups come out in time order; only when the rows
/// waiting would exceed `budget` bytes (inputs that overlap in time more than that) is one
/// written early, and then the next may start before it ends (Timestamp statistics stay
/// exact). Memory: about `budget` plus one input row group.
pub(crate) fn merge_files(
    out: &Path,
    table: Table,
    props: &WriterProperties,
    inputs: &[PathBuf],
    day: i32,
    row_group_rows: usize,
    budget: usize,
) -> Result<Written, StoreError> {
    let mut sources = Vec::with_capacity(inputs.len());
    let mut groups = Vec::new();
    for (input, path) in inputs.iter().enumerate() {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| parquet_err(path, e))?;
        let parquet = meta.metadata();
        let ts_column = parquet
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == TIMESTAMP);
        for (index, rg) in parquet.row_groups().iter().enumerate() {
            let min_ts = ts_column
                .and_then(|c| rg.column(c).statistics())
                .and_then(|s| match s {
                    Statistics::Int64(v) => v.min_opt().copied(),
                    _ => None,
                });
            groups.push(Group {
                min_ts,
                input,
                index,
            });
        }
        sources.push((file, meta));
    }
    groups.sort_by_key(|g| g.min_ts);

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

    let mut writer = FileWriter::create(out, table, props)?;
    let mut pool = Pool::default();
    let mut unread = groups.iter().peekable();
    let row_group_rows = row_group_rows.max(1);
    loop {
        while pool.rows < row_group_rows && pool.bytes < budget {
            let Some(g) = unread.next() else { break };
            read(g, &mut pool)?;
        }
        if pool.rows == 0 {
            break;
        }
        let sources: Vec<(&RecordBatch, i32)> = pool.batches.iter().map(|b| (b, day)).collect();
        let mut rows = time_order(&sources, table, true)?;
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
    writer.finish()
}
