//! Ingest benchmark: appends synthetic `DeviceProcessEvents` rows and flushes them to Parquet,
//! then reports rows per second (wall and per CPU second) and stored bytes per row.
//!
//! `cargo bench -p rampart-store` (release). `RAMPART_BENCH_ROWS` sets the row count (default
//! 1,000,000); rows come in batches of 8,192 from one appending thread. The data is the
//! synthetic fleet the benchmarks share (`rampart_testdata::fleet`: ~1,000 devices, ~300
//! executables, ~2,000 accounts, process trees, command lines from templates with varying
//! arguments), over one day in time order. `RAMPART_BENCH_ZSTD` overrides the Parquet zstd
//! level, `RAMPART_BENCH_ROW_GROUP_ROWS` the rows per row group.

use std::path::Path;
use std::time::Instant;

use rampart_schema::Table;
use rampart_store::{DEFAULT_TENANT, Store, StoreConfig};
use rampart_testdata::cpu_seconds;
use rampart_testdata::fleet::{FleetConfig, ProcessEvents};

fn make_batches(rows: usize) -> Vec<datafusion::arrow::array::RecordBatch> {
    ProcessEvents::new(&FleetConfig {
        processes: rows,
        days: 1,
        ..FleetConfig::default()
    })
    .collect()
}

/// Appends `batches` (handed over, as a real source does) and flushes; prints the figures.
fn run(
    dir: &Path,
    batches: Vec<datafusion::arrow::array::RecordBatch>,
    rows: usize,
    wal_compression: bool,
) {
    let _ = std::fs::remove_dir_all(dir);
    let mut config = StoreConfig {
        wal_compression,
        ..StoreConfig::default()
    };
    if let Some(level) = std::env::var("RAMPART_BENCH_ZSTD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.zstd_level = level;
    }
    if let Some(rows) = std::env::var("RAMPART_BENCH_ROW_GROUP_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.row_group_rows = rows;
    }
    let store = match Store::open(dir, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the store: {e}");
            return;
        }
    };
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for b in batches {
        if let Err(e) = store.append(DEFAULT_TENANT, Table::DeviceProcessEvents, b) {
            eprintln!("append failed: {e}");
            return;
        }
    }
    let appended = t0.elapsed().as_secs_f64();
    // The log holds the rows not yet flushed: its size per such row is the log's cost.
    let before_flush = store.stats();
    let in_log = before_flush
        .tables
        .iter()
        .map(|t| t.memory_rows)
        .sum::<u64>()
        .max(1);
    let wal_per_row = before_flush.wal_bytes as f64 / in_log as f64;
    if let Err(e) = store.flush() {
        eprintln!("flush failed: {e}");
        return;
    }
    let total = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = store.stats();
    let stored = stats.file_bytes();
    println!(
        "wal compression {}: {rows} rows; append {:.0} rows/s; append+flush {:.2} s = {:.0} rows/s wall, {:.0} rows per CPU second ({:.2} CPU s); \
         {:.1} B/row in Parquet ({} files, {:.1} MB); log {:.1} B/row; {} log writes for {} appends",
        if wal_compression { "LZ4" } else { "off" },
        rows as f64 / appended,
        total,
        rows as f64 / total,
        rows as f64 / cpu.max(1e-9),
        cpu,
        stored as f64 / rows as f64,
        stats.files(),
        stored as f64 / 1e6,
        wal_per_row,
        stats.wal_commits,
        stats.wal_records,
    );
    if let Err(e) = store.close() {
        eprintln!("close failed: {e}");
    }
    let columns: Vec<String> = largest_columns(dir)
        .into_iter()
        .take(8)
        .map(|(name, bytes)| format!("{name} {:.1}", bytes as f64 / rows as f64))
        .collect();
    println!("  B/row by column, largest first: {}", columns.join(", "));
}

/// Compressed bytes per column over every Parquet file below `dir`, largest first.
fn largest_columns(dir: &Path) -> Vec<(String, i64)> {
    let mut sizes: std::collections::BTreeMap<String, i64> = Default::default();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let Ok(reader) = std::fs::File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    parquet::file::reader::SerializedFileReader::new(f).map_err(|e| e.to_string())
                })
            else {
                continue;
            };
            use parquet::file::reader::FileReader;
            for rg in reader.metadata().row_groups() {
                for c in rg.columns() {
                    *sizes.entry(c.column_path().string()).or_default() += c.compressed_size();
                }
            }
        }
    }
    let mut sizes: Vec<(String, i64)> = sizes.into_iter().collect();
    sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
    sizes
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rows: usize = std::env::var("RAMPART_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("rampart-store-bench-{}", std::process::id()));
    for compression in [true, false] {
        let t = Instant::now();
        let batches = make_batches(rows);
        let memory: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        println!(
            "generated {rows} DeviceProcessEvents rows in {:.1} s ({:.0} B/row in Arrow memory)",
            t.elapsed().as_secs_f64(),
            memory as f64 / rows as f64
        );
        run(&dir, batches, rows, compression);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
