//! The store as its users drive it: append, query through DataFusion, flush, compact, retain,
//! reopen, and what it refuses.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::prelude::{Expr, SessionContext, ident, lit};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::metadata::PageIndexPolicy;
use rampart_schema::{DeviceProcessEvents, DeviceTvmSoftwareInventory, Row, Table};
use rampart_store::{
    DEFAULT_TENANT, SourceDecoder, Sources, Store, StoreConfig, StoreError, StoreReader,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Deterministic: no background thread, no timed flushes.
fn config() -> StoreConfig {
    StoreConfig {
        background: false,
        flush_interval: None,
        ..StoreConfig::default()
    }
}

/// Deterministic, with row groups of 128 rows: a few hundred rows make several.
fn groups_of_128() -> StoreConfig {
    StoreConfig {
        row_group_rows: 128,
        ..config()
    }
}

/// A deterministic store whose in-memory rows are bounded by `limit` bytes.
fn limited_store(dir: &Path, limit: usize) -> Store {
    Store::open(
        dir,
        StoreConfig {
            memory_limit_bytes: limit,
            ..config()
        },
    )
    .unwrap()
}

fn day(date: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("{date}T00:00:00Z"))
        .unwrap()
        .to_utc()
}

/// `DeviceProcessEvents` rows whose ReportId is each of `ids`, at `when(id)`.
fn rows(ids: Range<i64>, when: impl Fn(i64) -> Option<DateTime<Utc>>) -> RecordBatch {
    let mut b = Table::DeviceProcessEvents.batch_builder();
    for id in ids {
        let row = DeviceProcessEvents {
            timestamp: when(id),
            report_id: Some(id),
            file_name: (id % 3 != 0).then(|| format!("tool{}.exe", id % 7)),
            process_command_line: Some(format!("tool --run {id}")),
            device_id: Some(format!("device-{}", id % 3)),
            initiating_process_file_name: Some(format!("parent{}.exe", id % 5)),
            ..Default::default()
        };
        b.append(&Row::from(row)).unwrap();
    }
    b.finish()
}

fn ts_lit(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(t.timestamp_micros()),
        Some("UTC".into()),
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The ReportIds a query returns, sorted.
fn report_ids(store: &Store, tenant: &str, filter: Option<Expr>) -> Vec<i64> {
    provider_ids(
        store.table_provider(tenant, Table::DeviceProcessEvents),
        filter,
    )
}

/// The ReportIds a scan of `table` returns, sorted.
fn provider_ids(
    table: Arc<dyn datafusion::catalog::TableProvider>,
    filter: Option<Expr>,
) -> Vec<i64> {
    let batches = runtime().block_on(async {
        let ctx = SessionContext::new();
        let mut df = ctx.read_table(table).unwrap();
        if let Some(f) = filter {
            df = df.filter(f).unwrap();
        }
        df.collect().await.unwrap()
    });
    sorted_report_ids(&batches)
}

/// The ReportIds of `batches`, sorted.
fn sorted_report_ids(batches: &[RecordBatch]) -> Vec<i64> {
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("ReportId")
                .unwrap()
                .as_primitive::<Int64Type>();
            c.iter().flatten().collect::<Vec<_>>()
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Parquet files below the store, relative to it, sorted.
fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("tables"), dir, &mut out);
    out.sort();
    out
}

/// Checks a Parquet file's row order: row groups in time order (each one's Timestamps at or
/// after the previous one's), and within a row group the rows of one initiating process file
/// name together, within them those of one file name, within them those of one device, and
/// those in time order (nulls first). Returns the number of row groups.
/// How a file's columns are compressed, and whether any has a dictionary.
fn encoding_of(path: &Path) -> (Compression, bool) {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let columns: Vec<_> = reader
        .metadata()
        .row_groups()
        .iter()
        .flat_map(|g| g.columns().iter())
        .collect();
    let compression = columns[0].compression();
    assert!(columns.iter().all(|c| c.compression() == compression));
    let dictionary = columns.iter().any(|c| c.dictionary_page_offset().is_some());
    (compression, dictionary)
}

fn assert_clustered(path: &Path) -> usize {
    let open = || {
        let file = std::fs::File::open(path).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap()
    };
    let groups = open().metadata().num_row_groups();
    let mut previous_max = None;
    for g in 0..groups {
        // (InitiatingProcessFileName, FileName, DeviceId), Timestamp
        let mut rows: Vec<([String; 3], Option<i64>)> = Vec::new();
        for b in open().with_row_groups(vec![g]).build().unwrap() {
            let b = b.unwrap();
            let text = |name: &str| b.column_by_name(name).unwrap().as_string::<i32>().clone();
            let keys = [
                text("InitiatingProcessFileName"),
                text("FileName"),
                text("DeviceId"),
            ];
            let ts = b
                .column_by_name("Timestamp")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                rows.push((
                    keys.clone().map(|k| k.value(i).to_string()),
                    ts.is_valid(i).then(|| ts.value(i)),
                ));
            }
        }
        let times = rows.iter().filter_map(|r| r.1);
        let (min, max) = (times.clone().min(), times.max());
        if let (Some(before), Some(min)) = (previous_max, min) {
            assert!(
                before <= min,
                "{}: row group {g} starts before the previous one ended",
                path.display()
            );
        }
        previous_max = max.or(previous_max);
        // Each level: every prefix of the key in one run.
        for level in 1..=3 {
            let runs: Vec<&[String]> = rows
                .chunk_by(|a, b| a.0[..level] == b.0[..level])
                .map(|run| &run[0].0[..level])
                .collect();
            let distinct: std::collections::HashSet<_> = runs.iter().collect();
            assert_eq!(
                runs.len(),
                distinct.len(),
                "{}: row group {g}: a cluster of {level} column(s) in more than one run",
                path.display()
            );
        }
        for run in rows.chunk_by(|a, b| a.0 == b.0) {
            assert!(
                run.iter().map(|r| r.1).is_sorted(),
                "{}: a cluster is in time order",
                path.display()
            );
        }
    }
    groups
}

fn partition_of(file: &str) -> &str {
    file.rsplit_once('/').unwrap().0
}

#[test]
fn appended_rows_are_visible_at_once_flushed_and_kept_across_reopen() {
    let dir = scratch("visible");
    let store = Store::open(&dir, config()).unwrap();
    let at = |_| Some(day("2024-05-01") + Duration::minutes(5));
    store
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, rows(0..100, at))
        .unwrap();
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..100).collect::<Vec<_>>()
    );
    let s = store.stats();
    assert_eq!((s.tables[0].memory_rows, s.files()), (100, 0));

    store.flush().unwrap();
    let s = store.stats();
    assert_eq!(
        (s.tables[0].memory_rows, s.tables[0].file_rows, s.files()),
        (0, 100, 1)
    );
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None).len(), 100);

    // Acknowledged but not flushed, then the process goes away without closing.
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(100..150, at),
        )
        .unwrap();
    drop(store);
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(store.recovery().replayed_rows, 50);
    assert!(store.recovery().torn.is_empty());
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..150).collect::<Vec<_>>()
    );
    store.close().unwrap();

    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(
        store.recovery().replayed_rows,
        0,
        "close flushed everything"
    );
    assert_eq!(store.stats().rows(), 150);
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..150).collect::<Vec<_>>()
    );
}

#[test]
fn files_are_partitioned_by_tenant_table_and_day_and_sorted_by_time() {
    let dir = scratch("layout");
    let store = Store::open(&dir, config()).unwrap();
    // Two days, out of order, and rows without a Timestamp.
    let at = |id: i64| match id % 4 {
        0 => None,
        1 => Some(day("2024-05-02") + Duration::seconds(1000 - id)),
        _ => Some(day("2024-05-01") + Duration::seconds(1000 - id)),
    };
    store
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, rows(0..400, at))
        .unwrap();
    let mut b = Table::DeviceTvmSoftwareInventory.batch_builder();
    let sw = DeviceTvmSoftwareInventory {
        device_name: Some("ws-1".into()),
        software_name: Some("7zip".into()),
        ..Default::default()
    };
    b.append(&Row::from(sw)).unwrap();
    store
        .append("acme", Table::DeviceTvmSoftwareInventory, b.finish())
        .unwrap();
    let today = Utc::now().format("%Y-%m-%d").to_string();
    store.flush().unwrap();

    let files = parquet_files(&dir);
    let partitions: Vec<&str> = files.iter().map(|f| partition_of(f)).collect();
    let mut expected = vec![
        "tables/tenant=default/table=DeviceProcessEvents/day=2024-05-01".to_string(),
        "tables/tenant=default/table=DeviceProcessEvents/day=2024-05-02".to_string(),
        format!("tables/tenant=default/table=DeviceProcessEvents/day={today}"),
        format!("tables/tenant=acme/table=DeviceTvmSoftwareInventory/day={today}"),
    ];
    expected.sort();
    assert_eq!(partitions, expected);
    assert!(
        report_ids(&store, "acme", None).is_empty(),
        "tenants are apart"
    );

    // Each file: sorted by Timestamp, zstd, statistics per row group and per page.
    for f in &files {
        let file = std::fs::File::open(dir.join(f)).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let meta = reader.metadata().clone();
        let mut times = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            if let Some(ts) = batch.column_by_name("Timestamp") {
                times.extend(ts.as_primitive::<TimestampMicrosecondType>().iter());
            }
            let names = batch.column_by_name("DeviceName").unwrap();
            assert_eq!(names.null_count(), 0, "strings are never null");
        }
        assert!(times.is_sorted(), "{f} is sorted by Timestamp, nulls first");
        let rg = meta.row_group(0);
        let column = rg.column(0);
        assert!(
            matches!(column.compression(), parquet::basic::Compression::ZSTD(_)),
            "{f}"
        );
        if f.contains("DeviceProcessEvents") {
            let ts = rg.column(0);
            assert_eq!(ts.column_path().string(), "Timestamp");
            assert!(ts.statistics().is_some(), "{f}: row-group statistics");
            assert!(ts.column_index_offset().is_some(), "{f}: page statistics");
            let schema = Table::DeviceProcessEvents.arrow_schema();
            let report_id = rg.column(schema.index_of("ReportId").unwrap());
            assert!(
                report_id.statistics().is_some(),
                "{f}: numbers have statistics"
            );
        }
    }
}

/// An investigation ingests old events (an EVTX file of years ago): they stay for the
/// retention age after their ingestion, through compaction and a restart, then go whole.
#[test]
fn retention_keeps_old_events_for_the_age_after_their_ingestion() {
    let dir = scratch("retention-ingested");
    let store = Store::open(&dir, config()).unwrap();
    for first in [0, 10] {
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(first..first + 10, |_| Some(day("2019-03-01"))),
            )
            .unwrap();
        store.flush().unwrap();
    }
    assert_eq!(store.compact().unwrap().files_merged, 2);
    drop(store);
    let store = Store::open(&dir, config()).unwrap();
    let ingested = Utc::now();
    for now in [ingested, ingested + Duration::days(29)] {
        assert_eq!(store.apply_retention(now).unwrap(), Default::default());
    }
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..20).collect::<Vec<_>>()
    );
    let report = store
        .apply_retention(ingested + Duration::days(31))
        .unwrap();
    assert_eq!((report.partitions, report.files, report.rows), (1, 1, 20));
    assert!(report_ids(&store, DEFAULT_TENANT, None).is_empty());
}

#[test]
fn retention_drops_whole_days_past_the_age_and_nothing_else() {
    let dir = scratch("retention");
    let store = Store::open(&dir, config()).unwrap();
    // Retention also waits for the rows' ingestion (now) to be past the age: apply it as if
    // 60 days from today at noon. The cutoff is 30 days before that; of these days, the first
    // two ended before it, the third did not.
    let today = Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let now = today + Duration::days(60) + Duration::hours(12);
    let date = |ago: i64| {
        (today + Duration::days(60 - ago))
            .format("%Y-%m-%d")
            .to_string()
    };
    let days = [date(40), date(31), date(30), date(1)];
    for (i, d) in days.iter().enumerate() {
        let first = i as i64 * 10;
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(first..first + 10, |_| Some(day(d) + Duration::hours(23))),
            )
            .unwrap();
        store.flush().unwrap();
    }
    let report = store.apply_retention(now).unwrap();
    assert_eq!((report.partitions, report.files, report.rows), (2, 2, 20));
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (20..40).collect::<Vec<_>>()
    );
    let left: Vec<String> = parquet_files(&dir)
        .iter()
        .map(|f| partition_of(f).to_string())
        .collect();
    assert_eq!(
        left,
        [&days[2], &days[3]]
            .map(|d| format!("tables/tenant=default/table=DeviceProcessEvents/day={d}"))
    );
    assert!(
        !dir.join(format!(
            "tables/tenant=default/table=DeviceProcessEvents/day={}",
            days[0]
        ))
        .exists()
    );
    // Rows still in memory are covered too (retention flushes first).
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(100..105, |_| Some(day("2024-01-01"))),
        )
        .unwrap();
    let report = store.apply_retention(now).unwrap();
    assert_eq!(report.rows, 5);
    assert_eq!(store.apply_retention(now).unwrap(), Default::default());
    drop(store);
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (20..40).collect::<Vec<_>>()
    );
}

#[test]
fn compaction_reads_a_row_group_at_a_time_and_bounds_its_memory() {
    let dir = scratch("compact-bounded");
    // Each flushed file is larger than the compaction budget (half the memory limit): a merge
    // that read whole files would hold them all.
    let config = || StoreConfig {
        memory_limit_bytes: 32 << 10,
        row_group_rows: 200,
        ..config()
    };
    let store = Store::open(&dir, config()).unwrap();
    // Four flushes of one day: the first two overlap in time, the last two follow.
    let spans = [(0, 300), (150, 450), (450, 750), (750, 1050)];
    for (f, (from, to)) in spans.into_iter().enumerate() {
        let ids = f as i64 * 1000..f as i64 * 1000 + 300;
        let step = (to - from) / 300;
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(ids, |id| {
                    Some(day("2024-05-01") + Duration::seconds(from + (id % 1000) * step))
                }),
            )
            .unwrap();
        store.flush().unwrap();
    }
    assert_eq!(parquet_files(&dir).len(), 4);
    let before = report_ids(&store, DEFAULT_TENANT, None);
    assert_eq!(before.len(), 1200);

    let report = store.compact().unwrap();
    assert_eq!((report.files_merged, report.files_written), (4, 1));
    let files = parquet_files(&dir);
    assert_eq!(files.len(), 1);
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        before,
        "every row once"
    );

    // Row groups: at most 200 rows, fewer where the budget cut one short, and statistics that
    // hold each group's own Timestamps.
    let file = std::fs::File::open(dir.join(&files[0])).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let meta = reader.metadata().clone();
    let mut seen = 0;
    for g in meta.row_groups() {
        assert!(g.num_rows() <= 200, "{} rows in a row group", g.num_rows());
        seen += g.num_rows();
        let Some(parquet::file::statistics::Statistics::Int64(ts)) = g.column(0).statistics()
        else {
            panic!("Timestamp statistics")
        };
        assert!(ts.min_opt() <= ts.max_opt());
    }
    assert_eq!(seen, 1200);
    assert!(meta.num_row_groups() > 6, "the budget cut row groups short");
    // The statistics are exact: a time filter finds the rows a scan finds.
    let from = day("2024-05-01") + Duration::seconds(400);
    let to = day("2024-05-01") + Duration::seconds(500);
    let filter = ident("Timestamp")
        .gt_eq(ts_lit(from))
        .and(ident("Timestamp").lt(ts_lit(to)));
    let expected: Vec<i64> = (0..4i64)
        .flat_map(|f| {
            let (start, end) = spans[f as usize];
            let step = (end - start) / 300;
            (0..300).filter_map(move |i| {
                let t = start + i * step;
                (400..500).contains(&t).then_some(f * 1000 + i)
            })
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(report_ids(&store, DEFAULT_TENANT, Some(filter)), expected);
}

#[test]
fn compaction_flushes_rows_waiting_in_memory_between_merges() {
    let dir = scratch("compact-flush");
    let batch = |ids| rows(ids, |id| Some(day("2024-05-01") + Duration::seconds(id)));
    let in_memory = |store: &Store| {
        let stats = store.stats();
        let rows: u64 = stats.tables.iter().map(|t| t.memory_rows).sum();
        let bytes: u64 = stats.tables.iter().map(|t| t.memory_bytes).sum();
        (rows, bytes)
    };
    // One batch of 100 rows is past half the limit (the background's mark), not at the limit:
    // measured as the store counts it (stored arrays, not the builder's capacity).
    let probe = Store::open(&dir.join("probe"), config()).unwrap();
    probe
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, batch(200..300))
        .unwrap();
    let limit = in_memory(&probe).1 as usize * 3 / 2;
    probe.close().unwrap();
    let store = limited_store(&dir.join("store"), limit);
    for ids in [0..100, 100..200] {
        store
            .append(DEFAULT_TENANT, Table::DeviceProcessEvents, batch(ids))
            .unwrap();
        store.flush().unwrap();
    }
    store
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, batch(200..300))
        .unwrap();
    let (rows_before, bytes) = in_memory(&store);
    assert_eq!(rows_before, 100);
    assert!(bytes as usize >= limit / 2, "{bytes} bytes, limit {limit}");

    let report = store.compact().unwrap();
    assert_eq!(report.files_merged, 2);
    assert_eq!(in_memory(&store), (0, 0), "flushed before the merge");
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..300).collect::<Vec<_>>()
    );
    store.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Merges write without the maintenance lock: two compactions and a stream of appends that
/// flush at the memory limit run at once, and every row is still there exactly once, also after
/// reopening (a merge whose inputs another one took is dropped, not committed).
#[test]
fn compactions_and_appends_at_the_memory_limit_run_side_by_side() {
    let dir = scratch("compact-concurrent");
    let batch = |ids| rows(ids, |id| Some(day("2024-05-01") + Duration::seconds(id)));
    let store = limited_store(&dir, 64 << 10);
    let append = |i: i64| {
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                batch(i * 500..(i + 1) * 500),
            )
            .unwrap()
    };
    for i in 0..8 {
        append(i);
        store.flush().unwrap();
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| store.compact().unwrap());
        let b = s.spawn(|| store.compact().unwrap());
        s.spawn(|| (8..40).for_each(append));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a.files_merged + b.files_merged >= 8,
        "the first files were merged: {a:?} {b:?}"
    );
    let all: Vec<i64> = (0..20_000).collect();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
    store.compact().unwrap();
    store.close().unwrap();
    let store = limited_store(&dir, 64 << 10);
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
    store.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A flush the memory limit calls for writes a partition too small to cluster as a fragment
/// (plain values, LZ4: a merge encodes its rows again); merges, and the flush of a store that
/// closes (no merge may follow), write files to last (zstd, dictionaries).
#[test]
fn routine_flushes_write_fragments_that_merges_and_closing_write_to_last() {
    let dir = scratch("fragments");
    let store = limited_store(&dir, 64 << 10);
    let at = |id| Some(day("2024-05-01") + Duration::seconds(id));
    let append = |ids: Range<i64>| {
        store
            .append(DEFAULT_TENANT, Table::DeviceProcessEvents, rows(ids, at))
            .unwrap()
    };
    for i in 0..4i64 {
        append(i * 500..(i + 1) * 500);
    }
    let fragments = parquet_files(&dir);
    assert!(
        fragments.len() >= 2,
        "the memory limit flushed: {fragments:?}"
    );
    for f in &fragments {
        assert_eq!(
            encoding_of(&dir.join(f)),
            (Compression::LZ4_RAW, false),
            "{f}"
        );
    }
    let report = store.compact().unwrap();
    assert_eq!(
        (report.files_merged, report.files_written),
        (fragments.len(), 1)
    );
    let to_last = |path: &Path| {
        let (compression, dictionary) = encoding_of(path);
        matches!(compression, Compression::ZSTD(_)) && dictionary
    };
    // The merge's file, and fragments of rows that waited past the flush mark while it ran.
    let merged = parquet_files(&dir);
    assert!(merged.iter().all(|f| !fragments.contains(f)));
    let kept: Vec<&String> = merged.iter().filter(|f| to_last(&dir.join(f))).collect();
    assert_eq!(kept.len(), 1, "{merged:?}");

    append(2000..2100);
    store.close().unwrap();
    let closed: Vec<String> = parquet_files(&dir)
        .into_iter()
        .filter(|f| !merged.contains(f))
        .collect();
    assert!(!closed.is_empty());
    for f in &closed {
        assert!(to_last(&dir.join(f)), "{f}");
    }
    let store = limited_store(&dir, 64 << 10);
    let all: Vec<i64> = (0..2100).collect();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
    store.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compaction_merges_small_files_and_keeps_every_row_exactly_once() {
    let dir = scratch("compact");
    // Several row groups per merged file, and flushes too small for row groups that a merge
    // would copy (see the next tests).
    let config = || StoreConfig {
        row_group_rows: 256,
        ..config()
    };
    let store = Store::open(&dir, config()).unwrap();
    // Five flushes into one day, timestamps interleaved across them.
    for f in 0..5i64 {
        let ids = f * 100..(f + 1) * 100;
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(ids, |id| {
                    Some(day("2024-05-01") + Duration::seconds((id % 100) * 10 + (id / 100)))
                }),
            )
            .unwrap();
        store.flush().unwrap();
    }
    let before = parquet_files(&dir);
    assert_eq!(before.len(), 5);

    // A scan planned before the compaction reads the files it saw.
    let rt = runtime();
    let ctx = SessionContext::new();
    let df = ctx
        .read_table(store.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents))
        .unwrap();
    let plan = rt.block_on(df.create_physical_plan()).unwrap();

    let report = store.compact().unwrap();
    assert_eq!(
        (
            report.partitions,
            report.files_merged,
            report.files_written,
            report.rows
        ),
        (1, 5, 1, 500)
    );
    let after = parquet_files(&dir);
    assert_eq!(after.len(), 6, "the old files wait for the planned scan");
    let old = rt
        .block_on(datafusion::physical_plan::collect(plan, ctx.task_ctx()))
        .unwrap();
    assert_eq!(old.iter().map(RecordBatch::num_rows).sum::<usize>(), 500);
    drop(old);
    assert_eq!(
        parquet_files(&dir).len(),
        1,
        "deleted once the scan is gone"
    );

    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..500).collect::<Vec<_>>()
    );
    assert_eq!(
        store.compact().unwrap(),
        Default::default(),
        "nothing left to merge"
    );
    let work = store.stats().work;
    assert_eq!(
        (
            work.flushes,
            work.flushed_rows,
            work.merges,
            work.merged_rows,
            work.copied_rows
        ),
        (5, 500, 1, 500, 0),
        "each row flushed once and merged once"
    );
    assert!(
        work.flush_cpu > std::time::Duration::ZERO && work.merge_cpu > std::time::Duration::ZERO
    );
    drop(store);
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..500).collect::<Vec<_>>()
    );
    let merged = parquet_files(&dir);
    assert_eq!(merged.len(), 1);
    assert_eq!(
        assert_clustered(&dir.join(&merged[0])),
        2,
        "500 rows in groups of 256"
    );
}

#[test]
fn merges_copy_the_full_row_groups_of_earlier_merges_as_they_are_encoded() {
    let dir = scratch("copy");
    let config = groups_of_128;
    let store = Store::open(&dir, config()).unwrap();
    let at = |id: i64| Some(day("2024-05-01") + Duration::seconds(id));
    // Flushes of 50 rows: fewer than half a row group, so written in time order.
    let flush = |ids: Range<i64>| {
        for start in ids.clone().step_by(50) {
            let end = (start + 50).min(ids.end);
            store
                .append(
                    DEFAULT_TENANT,
                    Table::DeviceProcessEvents,
                    rows(start..end, at),
                )
                .unwrap();
            store.flush().unwrap();
        }
    };
    for f in 0..4 {
        flush(f * 100..(f + 1) * 100);
    }
    assert_eq!(store.compact().unwrap().rows, 400);
    let first = parquet_files(&dir);
    assert_eq!(first.len(), 1);
    assert_eq!(
        assert_clustered(&dir.join(&first[0])),
        4,
        "128 + 128 + 128 + 16 rows"
    );
    let work = store.stats().work;
    assert_eq!((work.merged_rows, work.copied_rows), (400, 0));

    // Later rows, and late rows of the time of the first merge's last row group.
    flush(400..500);
    flush(500..600);
    let late = |ids: Range<i64>, shift: i64| {
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(ids, |id| at(id - shift)),
            )
            .unwrap();
        store.flush().unwrap();
    };
    late(600..610, 210);
    assert_eq!(store.compact().unwrap().rows, 610);
    let work = store.stats().work;
    assert_eq!(
        (work.merged_rows, work.copied_rows),
        (400 + 226, 384),
        "the three full row groups copied; the last one and the new rows encoded"
    );
    let merged = parquet_files(&dir);
    assert_eq!(merged.len(), 1);
    let path = dir.join(&merged[0]);
    assert_eq!(
        assert_clustered(&path),
        5,
        "three copies, then 128 + 98 rows"
    );
    let row_groups = |path: &Path| {
        let file = std::fs::File::open(path).unwrap();
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).unwrap();
        let meta = reader.metadata();
        let indexed = meta.offset_index().map_or(0, |i| i.len());
        assert_eq!(
            indexed,
            meta.num_row_groups(),
            "every row group keeps its page index"
        );
        meta.row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect::<Vec<_>>()
    };
    assert_eq!(row_groups(&path), [128, 128, 128, 128, 98]);

    // Late rows inside a copied row group's time range: their row group overlaps it, and
    // time filters still find every row.
    late(700..710, 500);
    assert_eq!(store.compact().unwrap().rows, 620);
    let work = store.stats().work;
    assert_eq!(
        (work.merged_rows, work.copied_rows),
        (400 + 226 + 10, 384 + 610)
    );
    let merged = parquet_files(&dir);
    assert_eq!(
        row_groups(&dir.join(&merged[0])),
        [128, 128, 10, 128, 128, 98]
    );
    let all: Vec<i64> = (0..610).chain(700..710).collect();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
    let filter = ident("Timestamp")
        .gt_eq(ts_lit(day("2024-05-01") + Duration::seconds(200)))
        .and(ident("Timestamp").lt(ts_lit(day("2024-05-01") + Duration::seconds(300))));
    let expected: Vec<i64> = (200..300).chain(700..710).collect();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, Some(filter)), expected);
    drop(store);
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
}

#[test]
fn a_flush_of_half_a_row_group_or_more_writes_clustered_row_groups_that_merges_copy() {
    let dir = scratch("flush-clustered");
    let store = Store::open(&dir, groups_of_128()).unwrap();
    let at = |id: i64| Some(day("2024-05-01") + Duration::seconds(id));
    let append = |ids: Range<i64>| {
        store
            .append(DEFAULT_TENANT, Table::DeviceProcessEvents, rows(ids, at))
            .unwrap();
    };
    // Two appends, one flush: 300 rows in three row groups of 100, not 128 + 128 + 44 (a
    // row group under half of 128 rows would be encoded again by every merge).
    append(0..150);
    append(150..300);
    store.flush().unwrap();
    let flushed = parquet_files(&dir);
    assert_eq!(flushed.len(), 1);
    assert_eq!(assert_clustered(&dir.join(&flushed[0])), 3);
    let sizes = |path: &Path| {
        let file = std::fs::File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect::<Vec<_>>()
    };
    assert_eq!(sizes(&dir.join(&flushed[0])), [100, 100, 100]);
    let zstd = |path: &Path| {
        let (compression, dictionary) = encoding_of(path);
        matches!(compression, Compression::ZSTD(_)) && dictionary
    };
    assert!(
        zstd(&dir.join(&flushed[0])),
        "written to last: zstd, dictionaries"
    );

    // 64 rows (half of 128): one clustered row group; 63: in time order.
    append(300..364);
    store.flush().unwrap();
    append(364..427);
    store.flush().unwrap();
    let report = store.compact().unwrap();
    assert_eq!((report.files_merged, report.rows), (3, 427));
    let work = store.stats().work;
    assert_eq!(
        (work.flushed_rows, work.merged_rows, work.copied_rows),
        (427, 63, 364),
        "the flushes' clustered row groups copied, the 63 rows encoded again"
    );
    let merged = parquet_files(&dir);
    assert_eq!(merged.len(), 1);
    assert_eq!(assert_clustered(&dir.join(&merged[0])), 5);
    assert_eq!(sizes(&dir.join(&merged[0])), [100, 100, 100, 64, 63]);
    assert!(zstd(&dir.join(&merged[0])), "a merge writes to last");
    let all: Vec<i64> = (0..427).collect();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
    drop(store);
    let store = Store::open(&dir, groups_of_128()).unwrap();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
}

#[test]
fn a_scan_cuts_large_files_into_small_ranges_so_each_partition_reads_its_share() {
    let dir = scratch("ranges");
    // Row groups large enough for the rows, not the footer, to be most of the file's bytes.
    let config = StoreConfig {
        row_group_rows: 4096,
        ..config()
    };
    let store = Store::open(&dir, config).unwrap();
    // Three days, a file of 8 row groups each: three files for two partitions.
    let at = |id: i64| {
        Some(day("2024-05-01") + Duration::days(id / 32768) + Duration::milliseconds(id % 32768))
    };
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(0..3 * 32768, at),
        )
        .unwrap();
    store.flush().unwrap();
    let files = parquet_files(&dir);
    assert_eq!(files.len(), 3);
    let bytes: i64 = files
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len() as i64)
        .sum();
    // The byte ranges of the file that each partition of a scan reads (None: all of it), and
    // the ReportIds the scan returns.
    let scan = |min_size: usize| {
        let config = datafusion::prelude::SessionConfig::new()
            .with_target_partitions(2)
            .with_repartition_file_min_size(min_size);
        let ctx = SessionContext::new_with_config(config);
        let table = store.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents);
        runtime().block_on(async {
            let df = ctx.read_table(table).unwrap();
            let plan = df.create_physical_plan().await.unwrap();
            let files = plan
                .children()
                .into_iter()
                .filter_map(|c| c.as_ref().downcast_ref::<DataSourceExec>())
                .find_map(|e| e.data_source().downcast_ref::<FileScanConfig>())
                .unwrap();
            let ranges: Vec<Vec<Option<(i64, i64)>>> = files
                .file_groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|f| f.range.as_ref().map(|r| (r.start, r.end)))
                        .collect()
                })
                .collect();
            let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
                .await
                .unwrap();
            let ids = sorted_report_ids(&batches);
            (ranges, ids)
        })
    };
    let all: Vec<i64> = (0..3 * 32768).collect();
    // Files under DataFusion's threshold (10 MB by default) are dealt whole.
    assert_eq!(
        scan(10 << 20),
        (vec![vec![None, None], vec![None]], all.clone())
    );
    // Past it, the files are cut into 8 ranges of equal bytes (a range reads the row groups
    // whose first page it holds), 4 for each partition: small enough units for a partition
    // that is done to take the other's ranges not yet opened. Every row is read once.
    let (ranges, ids) = scan(0);
    let eighth = (bytes + 7) / 8;
    for group in &ranges {
        let pieces: Vec<i64> = group
            .iter()
            .flatten()
            .map(|(start, end)| end - start)
            .collect();
        assert_eq!(
            pieces.len(),
            group.len(),
            "every file of a group is a range: {ranges:?}"
        );
        assert!(pieces.len() >= 4, "{ranges:?}");
        assert!(pieces.iter().all(|&p| p <= eighth), "{ranges:?}");
        let read: i64 = pieces.iter().sum();
        assert!(
            (read - bytes / 2).abs() <= eighth,
            "about half the bytes each: {ranges:?}"
        );
    }
    assert_eq!(ranges.len(), 2);
    assert_eq!(ids, all);
}

#[test]
fn a_torn_log_tail_is_cut_reported_and_the_rest_replayed() {
    let dir = scratch("torn");
    let store = Store::open(&dir, config()).unwrap();
    let at = |_| Some(day("2024-05-01"));
    for i in 0..3 {
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(i * 10..(i + 1) * 10, at),
            )
            .unwrap();
    }
    drop(store);
    // Half of the last record made it to disk.
    let segment = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .max()
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let one_record = bytes.len() / 3;
    std::fs::write(&segment, &bytes[..bytes.len() - one_record / 2]).unwrap();

    let store = Store::open(&dir, config()).unwrap();
    let torn = &store.recovery().torn;
    assert_eq!(torn.len(), 1, "{torn:?}");
    assert_eq!(torn[0].path, segment.canonicalize().unwrap());
    assert!(torn[0].to_string().contains("never acknowledged"));
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..20).collect::<Vec<_>>()
    );
    store
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, rows(20..30, at))
        .unwrap();
    drop(store);
    let store = Store::open(&dir, config()).unwrap();
    assert!(store.recovery().torn.is_empty());
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..30).collect::<Vec<_>>()
    );
}

#[test]
fn batches_that_do_not_fit_are_refused_and_the_store_goes_on() {
    let dir = scratch("refused");
    let store = Store::open(
        &dir,
        StoreConfig {
            max_batch_bytes: 1 << 20,
            ..config()
        },
    )
    .unwrap();
    let at = |_| Some(day("2024-05-01"));
    let err = store
        .append(DEFAULT_TENANT, Table::DeviceFileEvents, rows(0..1, at))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaMismatch {
                table: Table::DeviceFileEvents,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("column"), "{err}");

    // Same names, one type changed.
    let good = rows(0..1, at);
    let schema = good.schema();
    let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let i = schema.index_of("ReportId").unwrap();
    fields[i] = fields[i]
        .clone()
        .with_data_type(datafusion::arrow::datatypes::DataType::Utf8);
    let mut columns = good.columns().to_vec();
    columns[i] = Arc::new(datafusion::arrow::array::StringArray::from(vec!["1"]));
    let wrong = RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .unwrap();
    let err = store
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, wrong)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ReportId (Int64) in the table, ReportId (Utf8) in the batch"),
        "{err}"
    );

    let err = store
        .append("Not A Tenant", Table::DeviceProcessEvents, rows(0..1, at))
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTenant(_)), "{err}");
    let err = store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(0..20_000, at),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::BatchTooLarge { .. }), "{err}");

    store
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, rows(0..10, at))
        .unwrap();
    assert_eq!(store.stats().rows(), 10);
}

#[test]
fn timestamp_filters_prune_files_row_groups_and_memory() {
    let dir = scratch("prune");
    let store = Store::open(
        &dir,
        StoreConfig {
            row_group_rows: 100,
            ..config()
        },
    )
    .unwrap();
    // Ten days of 1000 rows, one every 60 s from midnight, in files; one more day in memory.
    for d in 0..10i64 {
        let start = day("2024-05-01") + Duration::days(d);
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(d * 1000..(d + 1) * 1000, |id| {
                    Some(start + Duration::seconds((id % 1000) * 60))
                }),
            )
            .unwrap();
    }
    store.flush().unwrap();
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(10_000..10_010, |_| Some(day("2024-05-20"))),
        )
        .unwrap();
    assert_eq!(store.stats().files(), 10);

    let rt = runtime();
    let ctx = SessionContext::new();
    let scan = |filter: Expr| {
        let df = ctx
            .read_table(store.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents))
            .unwrap()
            .filter(filter)
            .unwrap();
        let plan = rt.block_on(df.create_physical_plan()).unwrap();
        let batches = rt
            .block_on(datafusion::physical_plan::collect(
                plan.clone(),
                ctx.task_ctx(),
            ))
            .unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut seen = Seen::default();
        seen.visit(&plan);
        (rows, seen)
    };

    // One day: one file of ten, no in-memory batch.
    let from = day("2024-05-04");
    let (n, seen) = scan(
        ident("Timestamp")
            .gt_eq(ts_lit(from))
            .and(ident("Timestamp").lt(ts_lit(from + Duration::days(1)))),
    );
    assert_eq!(n, 1000);
    assert_eq!((seen.files, seen.memory_batches), (1, 0));

    // One hour of that day: 60 rows, most row groups (100 rows each) skipped by statistics.
    let (n, seen) = scan(ident("Timestamp").between(
        ts_lit(from + Duration::hours(2)),
        ts_lit(from + Duration::minutes(179)),
    ));
    assert_eq!(n, 60);
    assert_eq!(seen.files, 1);
    assert!(seen.row_groups_pruned >= 8, "{seen:?}");
    assert!(seen.row_groups_read <= 2, "{seen:?}");

    // The in-memory day only.
    let (n, seen) = scan(ident("Timestamp").gt(ts_lit(day("2024-05-15"))));
    assert_eq!(n, 10);
    assert_eq!((seen.files, seen.memory_batches), (0, 1));

    // No time filter: everything.
    let (n, seen) = scan(ident("ReportId").gt_eq(lit(0i64)));
    assert_eq!(n, 10_010);
    assert_eq!((seen.files, seen.memory_batches), (10, 1));
}

/// What a plan read.
#[derive(Debug, Default)]
struct Seen {
    files: usize,
    memory_batches: usize,
    row_groups_pruned: usize,
    row_groups_read: usize,
}

impl Seen {
    fn visit(&mut self, plan: &Arc<dyn ExecutionPlan>) {
        if let Some(exec) = plan.as_ref().downcast_ref::<DataSourceExec>() {
            if let Some(files) = exec.data_source().downcast_ref::<FileScanConfig>() {
                // DataFusion may split a large file into ranges read in parallel.
                let distinct: std::collections::BTreeSet<_> = files
                    .file_groups
                    .iter()
                    .flat_map(|g| g.iter().map(|f| f.object_meta.location.clone()))
                    .collect();
                self.files += distinct.len();
                if let Some(MetricValue::PruningMetrics {
                    pruning_metrics, ..
                }) = plan
                    .metrics()
                    .and_then(|m| m.sum_by_name("row_groups_pruned_statistics"))
                {
                    self.row_groups_pruned += pruning_metrics.pruned();
                    self.row_groups_read += pruning_metrics.matched();
                }
            }
            if let Some(memory) = exec.data_source().downcast_ref::<MemorySourceConfig>() {
                self.memory_batches += memory.partitions().iter().map(Vec::len).sum::<usize>();
            }
        }
        for child in plan.children() {
            self.visit(child);
        }
    }
}

#[test]
fn missing_strings_read_as_empty_strings() {
    let dir = scratch("empty");
    let store = Store::open(&dir, config()).unwrap();
    // ReportIds divisible by 3 have no FileName.
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(0..9, |_| Some(day("2024-05-01"))),
        )
        .unwrap();
    let empty = Some(ident("FileName").eq(lit("")));
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, empty.clone()),
        vec![0, 3, 6]
    );
    store.flush().unwrap();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, empty), vec![0, 3, 6]);
    assert!(report_ids(&store, DEFAULT_TENANT, Some(ident("FileName").is_null())).is_empty());
}

#[test]
fn strings_are_scanned_as_views_from_memory_and_files_alike() {
    let dir = scratch("views");
    let store = Store::open(&dir, config()).unwrap();
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(0..30, |_| Some(day("2024-05-01"))),
        )
        .unwrap();
    // Two columns of 66: the scan casts only what it reads.
    let scan = || {
        let table = store.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents);
        runtime().block_on(async {
            let ctx = SessionContext::new();
            let df = ctx
                .read_table(table)
                .unwrap()
                .filter(ident("FileName").eq(lit("tool1.exe")))
                .unwrap()
                .select(vec![ident("ProcessCommandLine")])
                .unwrap();
            let mut lines: Vec<String> = Vec::new();
            for batch in df.collect().await.unwrap() {
                let column = batch.column(0).as_string_view();
                lines.extend(column.iter().map(|v| v.unwrap_or_default().to_string()));
            }
            lines.sort();
            lines
        })
    };
    let in_memory = scan();
    assert_eq!(
        in_memory,
        [
            "tool --run 1",
            "tool --run 22",
            "tool --run 29",
            "tool --run 8"
        ]
    );
    store.flush().unwrap();
    assert_eq!(scan(), in_memory);
}

#[test]
fn concurrent_appends_share_log_writes_and_all_land() {
    let dir = scratch("concurrent");
    let store = Store::open(&dir, config()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8i64 {
            let store = &store;
            s.spawn(move || {
                for i in 0..50 {
                    let first = (t * 50 + i) * 10;
                    store
                        .append(
                            DEFAULT_TENANT,
                            Table::DeviceProcessEvents,
                            rows(first..first + 10, |_| Some(day("2024-05-01"))),
                        )
                        .unwrap();
                }
            });
        }
    });
    let s = store.stats();
    assert_eq!(s.wal_records, 400);
    assert!(s.wal_commits <= s.wal_records);
    eprintln!(
        "400 appends from 8 threads took {} log writes",
        s.wal_commits
    );
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..4000).collect::<Vec<_>>()
    );
}

#[test]
fn the_memory_limit_makes_appends_flush() {
    let dir = scratch("memory");
    let limit = 1 << 20;
    let store = limited_store(&dir.join("store"), limit);
    let mut largest = 0;
    for i in 0..40 {
        let batch = rows(i * 500..(i + 1) * 500, |_| Some(day("2024-05-01")));
        largest = largest.max(batch.get_array_memory_size() as u64);
        store
            .append(DEFAULT_TENANT, Table::DeviceProcessEvents, batch)
            .unwrap();
        let memory = store.stats().tables[0].memory_bytes;
        assert!(memory <= limit as u64 + largest, "{memory} bytes in memory");
    }
    let s = store.stats();
    assert!(s.files() > 1, "the limit forced flushes");
    assert_eq!(s.rows(), 20_000);
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..20_000).collect::<Vec<_>>()
    );
}

/// Flushes at the memory limit (`limit` bytes) and row groups of 2,048 rows, so that a
/// partition under 1,024 rows is held.
fn holding(limit: usize) -> StoreConfig {
    StoreConfig {
        memory_limit_bytes: limit,
        row_group_rows: 2048,
        ..config()
    }
}

/// Rows `ids` of 2024-05-01 (a file's worth per flush), but for one in a hundred: late rows
/// of 2024-04-01, the kind of partition that would otherwise be a small file per flush.
fn with_late_rows(ids: Range<i64>) -> RecordBatch {
    rows(ids, |id| {
        Some(match id % 100 {
            0 => day("2024-04-01"),
            _ => day("2024-05-01") + Duration::seconds(id),
        })
    })
}

#[test]
fn small_partitions_stay_in_memory_across_flushes_and_come_back_once_after_a_crash() {
    let dir = scratch("held");
    // The old day gets 600 rows here, under half a row group: held throughout.
    let config = holding(2 << 20);
    let today = day("2024-05-01");
    let store = Store::open(&dir, config.clone()).unwrap();
    for i in 0..60 {
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                with_late_rows(i * 1000..(i + 1) * 1000),
            )
            .unwrap();
    }
    let all: Vec<i64> = (0..60_000).collect();
    let olds: Vec<i64> = (0..60_000).step_by(100).collect();
    let s = store.stats();
    assert!(s.work.flushes >= 2, "the memory limit made flushes: {s:?}");
    assert!(s.work.held_rows > 0, "{s:?}");
    let files = parquet_files(&dir);
    assert!(
        files.iter().all(|f| f.contains("day=2024-05-01")) && !files.is_empty(),
        "flushes wrote today's rows and held the old day's: {files:?}"
    );
    let in_memory = s.tables[0].memory_rows;
    assert!(in_memory >= olds.len() as u64, "{s:?}");
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
    let before_today = ident("Timestamp").lt(ts_lit(today));
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, Some(before_today.clone())),
        olds
    );
    // A crash: the log segments the flushes covered are gone; the held rows come back from
    // the records logged again, once, with what came after the last flush.
    drop(store);
    let store = Store::open(&dir, config.clone()).unwrap();
    let r = store.recovery();
    assert_eq!((r.replayed_rows, r.superseded_records), (in_memory, 0));
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
    let reader = StoreReader::open(&dir).unwrap();
    assert_eq!(
        provider_ids(
            reader.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents),
            None
        ),
        all,
        "a read-only view replays the held rows too"
    );
    // An explicit flush writes everything, held rows included.
    store.flush().unwrap();
    assert_eq!(store.stats().tables[0].memory_rows, 0);
    assert!(
        parquet_files(&dir)
            .iter()
            .any(|f| f.contains("day=2024-04-01"))
    );
    store.close().unwrap();
    let store = Store::open(&dir, config).unwrap();
    assert_eq!(store.recovery().replayed_rows, 0);
    assert_eq!(report_ids(&store, DEFAULT_TENANT, Some(before_today)), olds);
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None), all);
}

#[test]
fn a_held_partition_is_written_once_it_has_waited_max_hold() {
    let dir = scratch("held-age");
    let config = StoreConfig {
        max_hold: std::time::Duration::from_millis(300),
        ..holding(1 << 20)
    };
    let store = Store::open(&dir, config).unwrap();
    let mut next = 0;
    // Appends until the memory limit has made a flush: today's rows are written, the old
    // day's few are held.
    let mut until_flushed = |store: &Store| {
        let flushes = store.stats().work.flushes;
        while store.stats().work.flushes == flushes {
            store
                .append(
                    DEFAULT_TENANT,
                    Table::DeviceProcessEvents,
                    with_late_rows(next..next + 1000),
                )
                .unwrap();
            next += 1000;
        }
    };
    let old_files = || {
        parquet_files(&dir)
            .iter()
            .filter(|f| f.contains("day=2024-04-01"))
            .count()
    };
    until_flushed(&store);
    assert_eq!(old_files(), 0, "held");
    std::thread::sleep(std::time::Duration::from_millis(350));
    until_flushed(&store);
    assert_eq!(old_files(), 1, "waited past max_hold: written");
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..next).collect::<Vec<_>>()
    );
}

#[test]
fn the_background_thread_flushes_and_compacts() {
    let dir = scratch("background");
    let config = StoreConfig {
        background: true,
        flush_interval: Some(std::time::Duration::from_millis(20)),
        compact_min_files: 2,
        // Files of 10 rows are fragments (under half a row group), merged two at a time
        // once they hold 16 rows.
        row_group_rows: 32,
        // Flushes write them all (none held in memory).
        max_held_bytes: 0,
        ..StoreConfig::default()
    };
    let store = Store::open(&dir, config).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut counts = BTreeMap::new();
    for i in 0..6 {
        store
            .append(
                DEFAULT_TENANT,
                Table::DeviceProcessEvents,
                rows(i * 10..(i + 1) * 10, |_| Some(day("2024-05-01"))),
            )
            .unwrap();
        // Each batch gets flushed on its own, and files get merged.
        while store.stats().tables[0].memory_rows > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        *counts.entry(store.stats().files()).or_insert(0) += 1;
    }
    assert_eq!(
        store.stats().tables[0].memory_rows,
        0,
        "flushed in the background"
    );
    assert!(
        store.stats().files() < 6,
        "compacted in the background: {counts:?}"
    );
    assert_eq!(store.stats().background_error, None);
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..60).collect::<Vec<_>>()
    );
}

#[test]
fn a_store_is_open_in_one_place_at_a_time() {
    let dir = scratch("locked");
    let store = Store::open(&dir, config()).unwrap();
    assert!(matches!(
        Store::open(&dir, config()),
        Err(StoreError::Locked(_))
    ));
    drop(store);
    Store::open(&dir, config()).unwrap();
}

#[test]
fn a_folder_with_data_but_no_manifest_is_left_alone() {
    let dir = scratch("foreign");
    std::fs::create_dir_all(dir.join("tables/x")).unwrap();
    std::fs::write(dir.join("tables/x/data.parquet"), b"not ours").unwrap();
    let err = Store::open(&dir, config()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(dir.join("tables/x/data.parquet").exists());
}

#[test]
fn leftovers_of_an_interrupted_flush_are_removed_at_open() {
    let dir = scratch("orphans");
    let store = Store::open(&dir, config()).unwrap();
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(0..10, |_| Some(day("2024-05-01"))),
        )
        .unwrap();
    store.flush().unwrap();
    drop(store);
    // A file written by a flush that crashed before its manifest commit.
    let orphan = dir.join("tables/tenant=default/table=DeviceProcessEvents/day=2024-05-02/00000000000000000099.parquet");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"half a file").unwrap();
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(store.recovery().orphans_removed.len(), 1);
    assert!(!orphan.exists());
    assert!(
        !orphan.parent().unwrap().exists(),
        "empty partition folder removed"
    );
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn a_reader_sees_what_the_writer_acknowledged_without_blocking_it() {
    let dir = scratch("reader");
    let store = Store::open(&dir, config()).unwrap();
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(0..10, |_| Some(day("2024-05-01"))),
        )
        .unwrap();
    store.flush().unwrap();
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(10..15, |_| Some(day("2024-05-02"))),
        )
        .unwrap();

    // The writer holds its lock; a reader needs none and sees files and the log's tail.
    let reader = StoreReader::open(&dir).unwrap();
    let table = reader.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents);
    assert_eq!(
        provider_ids(table.clone(), None),
        (0..15).collect::<Vec<_>>()
    );
    assert_eq!(
        provider_ids(
            table,
            Some(ident("Timestamp").gt_eq(ts_lit(day("2024-05-02"))))
        ),
        (10..15).collect::<Vec<_>>()
    );
    // The view is of the moment it was opened; the writer goes on.
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(15..20, |_| Some(day("2024-05-02"))),
        )
        .unwrap();
    let table = reader.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents);
    assert_eq!(provider_ids(table, None).len(), 15);
    let again = StoreReader::open(&dir).unwrap();
    let table = again.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents);
    assert_eq!(provider_ids(table, None).len(), 20);
    assert!(StoreReader::open(&dir.join("nope")).is_err());
}

/// A source's input, `FIRST..LAST`: the process rows of those ReportIds (what a source that
/// logs its input, such as forwarded events, makes of it).
struct IdRange;

impl SourceDecoder for IdRange {
    fn decode(&self, input: &[u8]) -> Result<Vec<(Table, RecordBatch)>, String> {
        let text = std::str::from_utf8(input).map_err(|e| e.to_string())?;
        let (first, last) = text.split_once("..").ok_or("no '..'")?;
        let ids = first.parse().map_err(|_| "first")?..last.parse().map_err(|_| "last")?;
        Ok(vec![(
            Table::DeviceProcessEvents,
            rows(ids, |_| Some(day("2024-05-01"))),
        )])
    }
}

#[test]
fn a_source_logged_by_its_input_is_replayed_by_its_decoder() {
    let dir = scratch("source");
    let sources = Sources::default().with("ids", IdRange);
    let with_ids = StoreConfig {
        sources: sources.clone(),
        ..config()
    };
    let store = Store::open(&dir, with_ids.clone()).unwrap();
    let decoded = |input: &[u8]| IdRange.decode(input).unwrap();
    // A source the store has no decoder for is refused: its rows could not come back.
    let refused = store.append_source(DEFAULT_TENANT, "other", b"0..5", decoded(b"0..5"));
    assert!(matches!(refused, Err(StoreError::UnknownSource(k)) if k == "other"));
    // An input past the batch bound is refused too: its record could not be written.
    let small = Store::open(
        &scratch("source-small"),
        StoreConfig {
            max_batch_bytes: 4,
            ..with_ids.clone()
        },
    )
    .unwrap();
    let refused = small.append_source(DEFAULT_TENANT, "ids", b"0..50", vec![]);
    assert!(
        matches!(
            refused,
            Err(StoreError::BatchTooLarge { bytes: 5, limit: 4 })
        ),
        "{refused:?}"
    );
    let before = store.stats().wal_bytes;
    store
        .append_source(DEFAULT_TENANT, "ids", b"0..100", decoded(b"0..100"))
        .unwrap();
    let source_record = store.stats().wal_bytes - before;
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(100..200, |_| Some(day("2024-05-01"))),
        )
        .unwrap();
    let rows_record = store.stats().wal_bytes - before - source_record;
    // The log holds the input (a few bytes and the record's header), not the 100 rows.
    assert!(source_record < 64, "{source_record} bytes");
    assert!(rows_record > 10 * source_record, "{rows_record} bytes");
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..200).collect::<Vec<_>>()
    );
    drop(store); // a crash: nothing flushed

    // Without the decoder neither the store nor a reader opens, rather than lose the rows.
    for opened in [
        Store::open(&dir, config()).err(),
        StoreReader::open(&dir).err(),
    ] {
        assert!(
            matches!(&opened, Some(StoreError::UnknownSource(k)) if k == "ids"),
            "{opened:?}"
        );
    }
    let reader = StoreReader::open_with(&dir, &sources).unwrap();
    assert_eq!(
        provider_ids(
            reader.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents),
            None
        ),
        (0..200).collect::<Vec<_>>()
    );
    let store = Store::open(&dir, with_ids).unwrap();
    let recovery = store.recovery();
    assert_eq!(
        (recovery.replayed_records, recovery.replayed_rows),
        (2, 200)
    );
    assert_eq!(
        report_ids(&store, DEFAULT_TENANT, None),
        (0..200).collect::<Vec<_>>()
    );
    // Once flushed, the log no longer holds the input: the store opens without the decoder.
    store.close().unwrap();
    let store = Store::open(&dir, config()).unwrap();
    assert_eq!(report_ids(&store, DEFAULT_TENANT, None).len(), 200);
}

/// A count reads no column: rows in memory and in files are counted all the same (a scan of
/// in-memory rows with an empty projection still carries its row count).
#[test]
fn counting_reads_no_column_from_memory_or_files() {
    let dir = scratch("count");
    let store = Arc::new(Store::open(&dir, config()).unwrap());
    let at = |_| Some(day("2024-05-01"));
    store
        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, rows(0..40, at))
        .unwrap();
    store.flush().unwrap();
    store
        .append(
            DEFAULT_TENANT,
            Table::DeviceProcessEvents,
            rows(40..100, at),
        )
        .unwrap();
    let engine = rampart_kql::Engine::new(rampart_store::TenantCatalog::of_store(
        store.clone(),
        DEFAULT_TENANT,
    ));
    let result = runtime()
        .block_on(engine.run("DeviceProcessEvents | count", &Default::default()))
        .unwrap();
    assert_eq!(result.json_rows()[0]["Count"], 100);
}
