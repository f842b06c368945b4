//! Parquet files: how rows are laid out in them, writing and reading them, and the live-file
//! handle that deletes a replaced file once nothing reads it any more.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::common::hash_utils::{RandomState, create_hashes};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{KeyValue, ParquetMetaData};
use parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder, WriterVersion,
};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rampart_schema::{KustoType, Table};

use crate::manifest::FileMeta;
use crate::{StoreError, io_err};

/// The column every table that has one is sorted and partitioned by.
pub(crate) const TIMESTAMP: &str = "Timestamp";
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Prefix of the columns that describe the process that caused an event.
const INITIATING_PROCESS: &str = "InitiatingProcess";
/// Rows gathered per write into the Parquet writer (bounds the copy of rows written out of
/// their source order: a merge's clusters, a flush's late arrivals).
const WRITE_CHUNK_ROWS: usize = 64 * 1024;
/// Runs of rows in source order at least this long are written as slices, not copied.
const MIN_SLICE_ROWS: usize = 256;
/// Rows a clustered row group needs for merges to copy it as it is encoded (half a row
/// group): flushes cluster partitions of this many rows, compaction copies such row groups,
/// tiers smaller files by rows, and flushes hold smaller partitions in memory.
pub(crate) fn copied_rows(row_group_rows: usize) -> usize {
    row_group_rows.div_ceil(2)
}

/// Key-value metadata of a file each of whose row groups is clustered (what merges, and
/// flushes of enough rows, write):
/// a later merge copies such row groups as they are encoded instead of decoding them,
/// clustering them again and re-encoding every value.
pub(crate) const CLUSTERED_KEY: &str = "rampart.clustered";

/// A live Parquet file. Readers hold it (in their scan plans) while they may still open the
/// file; once it is replaced or dropped by retention it is marked retired and deleted when
/// the last holder lets go, so a scan planned before a compaction still finds its files.
#[derive(Debug)]
pub(crate) struct DataFile {
    pub(crate) meta: FileMeta,
    pub(crate) path: PathBuf,
    retired: AtomicBool,
}

impl DataFile {
    pub(crate) fn new(meta: FileMeta, store_dir: &Path) -> DataFile {
        DataFile {
            path: store_dir.join(&meta.path),
            meta,
            retired: AtomicBool::new(false),
        }
    }

    /// Marks the file for deletion once no one holds it (call after the manifest that drops it
    /// is committed).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            // A failure leaves an orphan that the next open deletes.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The day (since 1970-01-01) of a timestamp in microseconds, if it is a calendar date.
pub(crate) fn day_of_micros(us: i64) -> Option<i32> {
    let day = i32::try_from(us.div_euclid(MICROS_PER_DAY)).ok()?;
    date_of_day(day).map(|_| day)
}

/// The first microsecond of day `day` (days since 1970-01-01).
pub(crate) fn day_start_micros(day: i32) -> i64 {
    i64::from(day) * MICROS_PER_DAY
}

pub(crate) fn date_of_day(day: i32) -> Option<NaiveDate> {
    // 719_163 is 1970-01-01 counted from 0001-01-01 (day 1).
    day.checked_add(719_163)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
}

/// `tables/tenant=T/table=Name/day=YYYY-MM-DD/<id>.parquet`, relative to the store.
pub(crate) fn relative_path(tenant: &str, table: Table, day: i32, id: u64) -> String {
    let date =
        date_of_day(day).map_or_else(|| format!("{day}"), |d| d.format("%Y-%m-%d").to_string());
    format!("tables/tenant={tenant}/table={table}/day={date}/{id:020}.parquet")
}

/// Where a row goes: its day and Timestamp, its cluster, and where it sits among the batches
/// being written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowRef {
    pub(crate) day: i32,
    pub(crate) ts: Option<i64>,
    cluster: [u64; CLUSTER_LEVELS],
    pub(crate) batch: u32,
    pub(crate) row: u32,
}

/// The rows of `batches` by day, then by Timestamp with nulls first, arrival order among
/// equals: the order of a flush. A row without a Timestamp (or with one that is no
/// calendar date) belongs to its batch's ingestion day. Each row also gets the keys
/// [`cluster`] orders by.
pub(crate) fn time_order(
    batches: &[(&RecordBatch, i32)],
    table: Table,
) -> Result<Vec<RowRef>, StoreError> {
    let total = batches.iter().map(|(b, _)| b.num_rows()).sum();
    let mut rows = Vec::with_capacity(total);
    let levels = cluster_columns(table);
    let mut hashes: [Vec<u64>; CLUSTER_LEVELS] = Default::default();
    for (b, (batch, ingest_day)) in batches.iter().enumerate() {
        let ts = timestamps(batch, table);
        for (level, column) in levels.iter().enumerate() {
            cluster_hashes(batch, column, &mut hashes[level])?;
        }
        for row in 0..batch.num_rows() {
            let t = ts.and_then(|a| a.is_valid(row).then(|| a.value(row)));
            rows.push(RowRef {
                day: t.and_then(day_of_micros).unwrap_or(*ingest_day),
                ts: t,
                cluster: std::array::from_fn(|level| hashes[level].get(row).copied().unwrap_or(0)),
                batch: b as u32,
                row: row as u32,
            });
        }
    }
    // Stable: rows with equal keys keep their arrival order. Input that is already in time
    // order (the common case) is one run and sorts in linear time.
    rows.sort_by_key(|r| (r.day, r.ts));
    Ok(rows)
}

/// Clusters the rows of one row group, given in time order (see [`cluster_columns`]), in
/// time order within a cluster.
pub(crate) fn cluster(group: &mut [RowRef]) {
    // Stable: time order within a cluster.
    group.sort_by_key(|r| r.cluster);
}

/// How many columns clustering can use.
const CLUSTER_LEVELS: usize = 3;

/// The columns whose equal values a merged file's row group keeps together, outermost first,
/// among those the table has: the file of the process that caused the event, the event's
/// file, the device. A process's attributes (folder, hashes, version information, command
/// lines built from the same template…) and a device's repeat on the rows they cause, so
/// clustered they become runs that Parquet stores once and zstd finds close together: on a
/// synthetic fleet's process events, 59 B/row in time order against 38 clustered by these
/// (44 by device then initiating process; pyarrow, 128 Ki-row groups). Row groups stay in
/// time order, so the Timestamp ranges that queries prune on are those of time-sorted files.
fn cluster_columns(table: Table) -> Vec<&'static str> {
    ["InitiatingProcessFileName", "FileName", "DeviceId"]
        .into_iter()
        .filter(|c| table.column(c).is_some())
        .collect()
}

/// One hash per row of the values of `column` in `batch` (zeros if it lacks the column).
fn cluster_hashes(batch: &RecordBatch, column: &str, out: &mut Vec<u64>) -> Result<(), StoreError> {
    out.clear();
    out.resize(batch.num_rows(), 0);
    let Some(array) = batch.column_by_name(column) else {
        return Ok(());
    };
    // Fixed seeds: the same rows cluster the same way in every run.
    create_hashes([array], &RandomState::with_seed(0), out)
        .map(|_| ())
        .map_err(|e| StoreError::Arrow(format!("hashing rows to cluster them: {e}")))
}

/// The Timestamp column of a batch of `table`, if the table has one.
pub(crate) fn timestamps(
    batch: &RecordBatch,
    table: Table,
) -> Option<&datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    table.column(TIMESTAMP)?;
    batch
        .column_by_name(TIMESTAMP)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
}

/// How a table's files are written: [`TableProps::kept`] for the files meant to last, and
/// [`TableProps::fragment`] for a flush's small partitions, which a merge decodes and encodes
/// again (see [`write_file`]).
pub(crate) struct TableProps {
    pub(crate) kept: WriterProperties,
    pub(crate) fragment: WriterProperties,
}

impl TableProps {
    /// With `fragments` false, small partitions are written to last too: when no compaction
    /// may follow (the store closing, `rampart ingest` done).
    pub(crate) fn new(
        table: Table,
        zstd_level: i32,
        row_group_rows: usize,
        fragments: bool,
    ) -> Result<TableProps, StoreError> {
        let kept = writer_properties(table, zstd_level, row_group_rows)?;
        let fragment = match fragments {
            true => fragment_properties(table, row_group_rows),
            false => kept.clone(),
        };
        Ok(TableProps { kept, fragment })
    }
}

/// How files meant to last are written: zstd, dictionaries, row-group statistics for numbers
/// and times, and page statistics for Timestamp (what time filters prune on: row groups, and
/// in a file in time order, pages).
pub(crate) fn writer_properties(
    table: Table,
    zstd_level: i32,
    row_group_rows: usize,
) -> Result<WriterProperties, StoreError> {
    let level = ZstdLevel::try_new(zstd_level)
        .map_err(|e| StoreError::Config(format!("zstd level {zstd_level}: {e}")))?;
    let mut props = statistics(table, WriterProperties::builder())
        // Version 2 falls back from a full dictionary to delta encodings rather than plain.
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(level))
        .set_dictionary_enabled(true)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)));
    for c in table.columns() {
        let path = || ColumnPath::from(c.name);
        match c.kind {
            // The times of the initiating process and of its parent repeat on every row that
            // process starts (one of ~10,000 values in 100,000 rows of a fleet): dictionary
            // indices take half the bytes of the deltas between them.
            KustoType::DateTime if c.name.starts_with(INITIATING_PROCESS) => {}
            // Nearly unique and in order (in a file in time order, or within a cluster):
            // deltas, not a dictionary.
            KustoType::DateTime => {
                props = props
                    .set_column_dictionary_enabled(path(), false)
                    .set_column_encoding(path(), Encoding::DELTA_BINARY_PACKED);
            }
            _ => {}
        }
    }
    Ok(props.build())
}

/// How a flush writes a partition too small to cluster: the merge that gathers it with
/// others into row groups decodes every value and encodes it again, so it is written for a
/// cheap write and read: plain values (no dictionary to look every value up in: on the
/// server's benchmark, the dictionaries' lookups were ~40 % of a flush), LZ4. It is still a
/// file queries read like any other, with the same statistics; a partition that stays small
/// has its fragments merged by row tier (`Inner::compact`), into files written to last.
fn fragment_properties(table: Table, row_group_rows: usize) -> WriterProperties {
    statistics(table, WriterProperties::builder())
        // Version 1 falls back to plain values where version 2 would compute deltas.
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::LZ4_RAW)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build()
}

/// Row-group statistics for numbers and times, page statistics for Timestamp, none for
/// strings.
fn statistics(table: Table, mut props: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    props = props.set_statistics_enabled(EnabledStatistics::Chunk);
    for c in table.columns() {
        // A row group's string range spans nearly everything, so it would prune nothing;
        // computing it was a third of the time spent writing.
        if matches!(c.kind, KustoType::String | KustoType::Dynamic) {
            props = props
                .set_column_statistics_enabled(ColumnPath::from(c.name), EnabledStatistics::None);
        }
    }
    if table.column(TIMESTAMP).is_some() {
        props = props
            .set_column_statistics_enabled(ColumnPath::from(TIMESTAMP), EnabledStatistics::Page);
    }
    props
}

/// What writing a file gave.
pub(crate) struct Written {
    pub(crate) rows: u64,
    /// Of `rows`, those in row groups copied from other files.
    pub(crate) copied: u64,
    pub(crate) bytes: u64,
    pub(crate) min_ts: Option<i64>,
    pub(crate) max_ts: Option<i64>,
}

/// Writes a flush's `rows` (in time order, all of one day, with their cluster keys) from
/// `batches` to a new file at `path`, and fsyncs it. The file must not exist.
///
/// Rows enough for row groups a merge copies ([`copied_rows`]) are split into row groups of
/// about equal size, each clustered, and the file is marked clustered: each such row is then
/// encoded once, here, instead of here and again by the merge that would cluster it (in the
/// ingest benchmark's profile merges took more CPU than flushes). Fewer rows are a fragment,
/// written in time order with [`TableProps::fragment`]: a merge clusters them with others and
/// encodes them for good.
pub(crate) fn write_file(
    path: &Path,
    table: Table,
    props: &TableProps,
    batches: &[&RecordBatch],
    rows: &[RowRef],
) -> Result<Written, StoreError> {
    let row_group_rows = props.kept.max_row_group_row_count().unwrap_or(usize::MAX);
    if rows.len() < copied_rows(row_group_rows) {
        let mut file = FileWriter::create(path, table, &props.fragment)?;
        file.write_rows(batches, rows)?;
        return file.finish(false);
    }
    let mut file = FileWriter::create(path, table, &props.kept)?;
    let group_rows = rows
        .len()
        .div_ceil(rows.len().div_ceil(file.row_group_rows));
    let mut group = Vec::with_capacity(group_rows);
    for chunk in rows.chunks(group_rows) {
        group.clear();
        group.extend_from_slice(chunk);
        cluster(&mut group);
        file.write_rows(batches, &group)?;
        file.end_row_group()?;
    }
    file.finish(true)
}

/// A Parquet file being written, a row group at a time: rows encoded by Arrow column writers
/// (a row group ends at `max_row_group_row_count` rows or on [`FileWriter::end_row_group`]),
/// or row groups of other files copied as they are encoded.
pub(crate) struct FileWriter {
    path: PathBuf,
    writer: Writer,
    schema: SchemaRef,
    row_group_rows: usize,
    /// The row group being encoded, and its rows so far.
    open: Option<(Vec<ArrowColumnWriter>, usize)>,
    rows: u64,
    copied: u64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
}

impl FileWriter {
    /// Creates the file; it must not exist.
    pub(crate) fn create(
        path: &Path,
        table: Table,
        props: &WriterProperties,
    ) -> Result<FileWriter, StoreError> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        Ok(FileWriter {
            path: path.to_path_buf(),
            writer: Writer::Pending(file, Box::new(props.clone())),
            schema: table.arrow_schema(),
            row_group_rows: props.max_row_group_row_count().unwrap_or(usize::MAX).max(1),
            open: None,
            rows: 0,
            copied: 0,
            min_ts: None,
            max_ts: None,
        })
    }

    /// The Parquet writer, opened if it is not yet: with the properties the file was created
    /// with, but plain values for the string columns that `first` (the batches of its first
    /// rows, if any) holds only empty strings in (see [`plain_when_empty`]).
    fn writer(
        &mut self,
        first: &[&RecordBatch],
    ) -> Result<(&mut SerializedFileWriter<File>, &ArrowRowGroupWriterFactory), StoreError> {
        if let Writer::Pending(..) = self.writer
            && let Writer::Pending(file, props) = std::mem::replace(&mut self.writer, Writer::Gone)
        {
            let props = plain_when_empty(*props, &self.schema, first);
            let (writer, factory) = ArrowWriter::try_new(file, self.schema.clone(), Some(props))
                .and_then(ArrowWriter::into_serialized_writer)
                .map_err(|e| parquet_err(&self.path, e))?;
            self.writer = Writer::Open(Box::new(writer), factory);
        }
        match &mut self.writer {
            Writer::Open(writer, factory) => Ok((writer, factory)),
            _ => Err(StoreError::Parquet {
                path: self.path.clone(),
                message: "the Parquet writer could not be opened".to_string(),
            }),
        }
    }

    /// Appends `rows` of `batches`, in that order.
    pub(crate) fn write_rows(
        &mut self,
        batches: &[&RecordBatch],
        rows: &[RowRef],
    ) -> Result<(), StoreError> {
        self.writer(batches)?;
        let mut gathered: Vec<(usize, usize)> =
            Vec::with_capacity(WRITE_CHUNK_ROWS.min(rows.len()));
        // Rows that follow each other in one source batch are written as slices of it,
        // without a copy; the rest is gathered.
        for run in rows.chunk_by(|a, b| a.batch == b.batch && a.row + 1 == b.row) {
            let Some(first) = run.first() else { continue };
            let slice = run.len() >= MIN_SLICE_ROWS;
            if (slice || gathered.len() + run.len() > WRITE_CHUNK_ROWS) && !gathered.is_empty() {
                self.write_batch(&interleave_record_batch(batches, &gathered)?)?;
                gathered.clear();
            }
            if slice {
                self.write_batch(
                    &batches[first.batch as usize].slice(first.row as usize, run.len()),
                )?;
            } else {
                gathered.extend(run.iter().map(|r| (r.batch as usize, r.row as usize)));
            }
        }
        if !gathered.is_empty() {
            self.write_batch(&interleave_record_batch(batches, &gathered)?)?;
        }
        self.rows += rows.len() as u64;
        let times = rows.iter().filter_map(|r| r.ts);
        self.min_ts = times.clone().chain(self.min_ts).min();
        self.max_ts = times.chain(self.max_ts).max();
        Ok(())
    }

    /// Encodes `batch` into the open row group, ending it (and opening the next) whenever it
    /// holds `row_group_rows`.
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let mut done = 0;
        while done < batch.num_rows() {
            let (columns, held) = match &mut self.open {
                Some(open) => open,
                None => {
                    let (writer, factory) = match &self.writer {
                        Writer::Open(writer, factory) => (writer, factory),
                        _ => {
                            return Err(StoreError::Parquet {
                                path: self.path.clone(),
                                message: "rows written before the file was opened".to_string(),
                            });
                        }
                    };
                    let columns = factory
                        .create_column_writers(writer.flushed_row_groups().len())
                        .map_err(|e| parquet_err(&self.path, e))?;
                    self.open.insert((columns, 0))
                }
            };
            let take = (self.row_group_rows - *held).min(batch.num_rows() - done);
            let part = batch.slice(done, take);
            let mut writers = columns.iter_mut();
            for (field, column) in self.schema.fields().iter().zip(part.columns()) {
                let leaves =
                    compute_leaves(field, column).map_err(|e| parquet_err(&self.path, e))?;
                for leaf in leaves {
                    let writer = writers.next().ok_or_else(|| StoreError::Parquet {
                        path: self.path.clone(),
                        message: "more columns than the file's schema".to_string(),
                    })?;
                    writer
                        .write(&leaf)
                        .map_err(|e| parquet_err(&self.path, e))?;
                }
            }
            *held += take;
            done += take;
            if *held >= self.row_group_rows {
                self.end_row_group()?;
            }
        }
        Ok(())
    }

    /// Closes the row group being written (the next rows start a new one).
    pub(crate) fn end_row_group(&mut self) -> Result<(), StoreError> {
        let Some((columns, _)) = self.open.take() else {
            return Ok(());
        };
        let path = self.path.clone();
        let located = |e| parquet_err(&path, e);
        let mut group = self.writer(&[])?.0.next_row_group().map_err(located)?;
        for column in columns {
            column
                .close()
                .and_then(|chunk| chunk.append_to_row_group(&mut group))
                .map_err(located)?;
        }
        group.close().map_err(located)?;
        Ok(())
    }

    /// Appends `copy` (a row group of another file of the table) as it is encoded, after the
    /// row groups written so far.
    pub(crate) fn copy_row_group(&mut self, copy: &RowGroupCopy<'_>) -> Result<(), StoreError> {
        self.end_row_group()?;
        let path = self.path.clone();
        let located = |e| parquet_err(&path, e);
        let group = copy.meta.row_group(copy.index);
        let rows = u64::try_from(group.num_rows()).unwrap_or(0);
        let mut out = self.writer(&[])?.0.next_row_group().map_err(located)?;
        for (column, chunk) in group.columns().iter().enumerate() {
            let close = ColumnCloseResult {
                bytes_written: u64::try_from(chunk.compressed_size()).unwrap_or(0),
                rows_written: rows,
                metadata: chunk.clone(),
                bloom_filter: None,
                column_index: copy
                    .meta
                    .column_index()
                    .and_then(|i| i.get(copy.index)?.get(column).cloned()),
                offset_index: copy
                    .meta
                    .offset_index()
                    .and_then(|i| i.get(copy.index)?.get(column).cloned()),
            };
            out.append_column(copy.file, close)
                .map_err(|e| parquet_err(copy.path, e))?;
        }
        out.close().map_err(located)?;
        self.rows += rows;
        self.copied += rows;
        self.min_ts = copy.min_ts.into_iter().chain(self.min_ts).min();
        self.max_ts = copy.max_ts.into_iter().chain(self.max_ts).max();
        Ok(())
    }

    /// Finishes the file and fsyncs it; `clustered` marks it as a file each of whose row
    /// groups is clustered ([`CLUSTERED_KEY`]).
    pub(crate) fn finish(mut self, clustered: bool) -> Result<Written, StoreError> {
        self.end_row_group()?;
        let writer = self.writer(&[])?.0;
        if clustered {
            writer.append_key_value_metadata(KeyValue::new(
                CLUSTERED_KEY.to_string(),
                "1".to_string(),
            ));
        }
        let path = self.path;
        let Writer::Open(writer, _) = self.writer else {
            return Err(StoreError::Parquet {
                path,
                message: "the Parquet writer could not be opened".to_string(),
            });
        };
        let file = writer.into_inner().map_err(|e| parquet_err(&path, e))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        let bytes = file.metadata().map_err(|e| io_err(&path, e))?.len();
        Ok(Written {
            rows: self.rows,
            copied: self.copied,
            bytes,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        })
    }
}

/// A [`FileWriter`]'s Parquet writer: opened at the first rows (or row group, or the end), when
/// the columns they leave empty are known.
enum Writer {
    Pending(File, Box<WriterProperties>),
    Open(Box<SerializedFileWriter<File>>, ArrowRowGroupWriterFactory),
    /// Its opening failed.
    Gone,
}

/// `props` with plain values, no dictionary, for each string column that every one of
/// `batches` holds only empty strings (or nulls) in: Kusto's strings are never null, so a
/// column no source fills is `""` on every row (most of a Windows event's row: ~80 % of its
/// strings), and a dictionary looked each one up — Parquet's interner hashing and comparing
/// them (the interner's `memcmp`, for all strings, was 5.3 % of the server's CPU in a profile
/// of its benchmark). Plain
/// empty strings are a zero length each, which zstd makes nothing of. `props` as they are
/// without batches.
fn plain_when_empty(
    props: WriterProperties,
    schema: &SchemaRef,
    batches: &[&RecordBatch],
) -> WriterProperties {
    if batches.is_empty() {
        return props;
    }
    let empty: Vec<ColumnPath> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| (i, ColumnPath::from(field.name().as_str())))
        .filter(|(i, path)| {
            props.dictionary_enabled(path)
                && batches.iter().all(|b| {
                    let column = b.columns().get(*i).and_then(|c| c.as_string_opt::<i32>());
                    column.is_some_and(|s| {
                        let offsets = s.offsets();
                        offsets.first() == offsets.last()
                    })
                })
        })
        .map(|(_, path)| path)
        .collect();
    if empty.is_empty() {
        return props;
    }
    empty
        .into_iter()
        .fold(props.into_builder(), |b, path| {
            b.set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::PLAIN)
        })
        .build()
}

/// A row group of another file to copy into a merged one without decoding it.
pub(crate) struct RowGroupCopy<'a> {
    pub(crate) path: &'a Path,
    pub(crate) file: &'a File,
    pub(crate) meta: &'a ParquetMetaData,
    pub(crate) index: usize,
    pub(crate) min_ts: Option<i64>,
    pub(crate) max_ts: Option<i64>,
}

/// Whether a file's row groups are each clustered (see [`CLUSTERED_KEY`]).
pub(crate) fn is_clustered(meta: &ParquetMetaData) -> bool {
    meta.file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|e| e.key == CLUSTERED_KEY))
}

pub(crate) fn parquet_err(path: &Path, e: parquet::errors::ParquetError) -> StoreError {
    StoreError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use rampart_schema::{DeviceProcessEvents, Row};

    /// A column no row fills is written plain; one that rows fill keeps its dictionary; the
    /// file reads back the same, empty strings as empty strings.
    #[test]
    fn string_columns_no_row_fills_are_written_plain() {
        let table = Table::DeviceProcessEvents;
        let mut builder = table.batch_builder();
        for id in 0..100 {
            let row = DeviceProcessEvents {
                timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + id, 0),
                report_id: Some(id),
                process_command_line: Some(format!("tool --run {}", id % 4)),
                ..Default::default()
            };
            builder.append(&Row::from(row)).unwrap();
        }
        let batch = crate::record::conform(table, builder.finish()).unwrap();
        let props = writer_properties(table, 3, 1024).unwrap();
        let dir = std::env::temp_dir().join(format!("rampart-plain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.parquet");
        let _ = std::fs::remove_file(&path);
        let mut file = FileWriter::create(&path, table, &props).unwrap();
        file.writer(&[&batch]).unwrap();
        file.write_batch(&batch).unwrap();
        file.finish(false).unwrap();

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let chunk = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        assert!(chunk("FolderPath").dictionary_page_offset().is_none());
        assert!(
            chunk("ProcessCommandLine")
                .dictionary_page_offset()
                .is_some()
        );
        let read: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let read = datafusion::arrow::compute::concat_batches(&batch.schema(), &read).unwrap();
        assert_eq!(read.num_rows(), 100);
        for name in ["FolderPath", "ProcessCommandLine"] {
            let (before, after) = (batch.column_by_name(name), read.column_by_name(name));
            assert_eq!(before.unwrap().as_ref(), after.unwrap().as_ref(), "{name}");
        }
        assert_eq!(read.column_by_name("FolderPath").unwrap().null_count(), 0);
        // Without rows to look at (a merge that copies a row group first), as they were.
        let same = plain_when_empty(props.clone(), &table.arrow_schema(), &[]);
        assert!(same.dictionary_enabled(&ColumnPath::from("FolderPath")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn days_and_paths() {
        assert_eq!(day_of_micros(0), Some(0));
        assert_eq!(day_of_micros(-1), Some(-1));
        assert_eq!(day_of_micros(MICROS_PER_DAY), Some(1));
        assert_eq!(day_of_micros(i64::MAX), None, "beyond the calendar");
        assert_eq!(
            relative_path("default", Table::DeviceEvents, 19_723, 7),
            "tables/tenant=default/table=DeviceEvents/day=2024-01-01/00000000000000000007.parquet"
        );
    }
}
