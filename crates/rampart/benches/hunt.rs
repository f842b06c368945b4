//! Hunting benchmark: Rampart's KQL against DuckDB's SQL over the same Parquet files, after
//! measuring ingest into the store.
//!
//! `bench/hunt.sh`, or `cargo bench -p rampart --bench hunt` (release). In one run:
//!
//! 1. **Ingest.** Generates `RAMPART_BENCH_ROWS` (default 10,000,000) `DeviceProcessEvents`
//!    rows of a synthetic fleet (`rampart_testdata::fleet`), then the `DeviceNetworkEvents`
//!    rows of the processes that connect, and appends them to a fresh store in batches of
//!    8,192, flushing every 1 Mi rows. Reported per table: rows per second of wall time
//!    (append + flush) and per CPU second of the whole process (getrusage; the generator's own
//!    thread time is subtracted, the store's background threads count); then a full
//!    compaction, and the stored bytes per process event (Parquet bytes of the table over its
//!    rows) before and after it.
//! 2. **DuckDB's write, for reference.** DuckDB writes the first `RAMPART_BENCH_WRITE_ROWS`
//!    (default 2,000,000) of the stored process events, held in memory as Arrow, to a Parquet
//!    file with zstd (`bench/hunt_duckdb.py`, `write`), in the order read and ordered by
//!    Timestamp: rows per CPU second of its process, and the store's ingest rate as a ratio
//!    of it (DuckDB keeps no log and does not fsync; the store does both).
//! 3. **Queries.** Five hunting queries, each run `RAMPART_BENCH_RUNS` times (default 3) with
//!    `rampart hunt` and with DuckDB (`bench/hunt_duckdb.py`, the equivalent SQL over the
//!    store's Parquet files) alternately, so both meet the same page cache. The times are
//!    in-process (Rampart: planning + execution as `hunt` prints it; DuckDB:
//!    `execute(sql).fetchall()`), medians; a table gives them and their ratio. Both results
//!    must agree (row count and the sum of a check column); a mismatch is reported and the
//!    bench exits with status 1.
//!
//! `RAMPART_BENCH_DIR=DIR` keeps the store in DIR: an empty or missing DIR is filled, one that
//! holds exactly the requested rows is reused (ingest is skipped), anything else is refused.
//! Without it the store goes to a temporary folder that is removed at the end.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::RecordBatch;
use rampart_schema::Table;
use rampart_store::{DEFAULT_TENANT, Store, StoreConfig, TableStats};
use rampart_testdata::fleet::{FleetConfig, ProcessEvents};
use serde_json::Value;

/// Batches generated, then appended, at a time: bounds the memory of generated rows (about
/// 1.7 GiB of Arrow arrays of process rows) and is the flush interval of the ingest phase.
const CHUNK_BATCHES: usize = 128;

/// A benchmark query: its name (also DuckDB's, in `bench/hunt_duckdb.py`), the KQL, and the
/// numeric column whose sum both engines must agree on.
struct Query {
    name: &'static str,
    kql: &'static str,
    check: &'static str,
}

const QUERIES: [Query; 5] = [
    Query {
        name: "filter_count",
        kql: "DeviceProcessEvents \
              | where Timestamp between (datetime(2024-05-01 06:00:00) .. datetime(2024-05-02 18:00:00)) \
              | where FileName =~ 'powershell.exe' \
              | count",
        check: "Count",
    },
    Query {
        name: "has_term",
        kql: "DeviceProcessEvents | where ProcessCommandLine has 'bypass' | count",
        check: "Count",
    },
    Query {
        name: "dcount",
        kql: "DeviceProcessEvents \
              | summarize Accounts = dcount(AccountName) by DeviceId, FileName \
              | where Accounts > 1 \
              | count",
        check: "Count",
    },
    Query {
        name: "join",
        kql: "DeviceProcessEvents \
              | join kind=inner (DeviceNetworkEvents | where ActionType == 'ConnectionSuccess') \
                  on DeviceId, $left.ProcessId == $right.InitiatingProcessId \
              | summarize Connections = count() by FileName",
        check: "Connections",
    },
    Query {
        name: "top_arg_max",
        kql: "DeviceProcessEvents \
              | summarize arg_max(Timestamp, FileName, ProcessCommandLine), Processes = count() by DeviceId \
              | top 10 by Processes",
        check: "Processes",
    },
];

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hunt benchmark: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark; false when the engines disagreed on a result.
fn run() -> Result<bool> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rows = env_number("RAMPART_BENCH_ROWS", 10_000_000)?;
    let runs = env_number("RAMPART_BENCH_RUNS", 3)?.max(1);
    let script = workspace().join("bench/hunt_duckdb.py");
    if !script.is_file() {
        bail!("{} is missing", script.display());
    }
    check_duckdb()?;

    let (dir, _cleanup) = match std::env::var_os("RAMPART_BENCH_DIR") {
        Some(dir) => (PathBuf::from(dir), None),
        None => {
            let dir =
                std::env::temp_dir().join(format!("rampart-hunt-bench-{}", std::process::id()));
            (dir.clone(), Some(RemoveOnDrop(dir)))
        }
    };
    println!("store: {}", dir.display());
    let ingested = ingest(&dir, rows)?;
    let write_rows = env_number("RAMPART_BENCH_WRITE_ROWS", 2_000_000)?.min(rows);
    duckdb_write(&dir, &script, write_rows, ingested.as_ref())?;

    let before = parquet_files(&dir);
    let agreed = queries(&dir, &script, runs)?;
    if parquet_files(&dir) != before {
        println!(
            "note: the store's files changed while the queries ran (background compaction at \
             open), so the runs may not all have read the same layout"
        );
    }
    Ok(agreed)
}

/// The workspace root, found at run time (see `rampart_testdata::data_root` for why).
fn workspace() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..")
}

fn env_number(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn check_duckdb() -> Result<()> {
    let out = Command::new("python3")
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output()
        .context("cannot run python3 (DuckDB's side of the benchmark needs it)")?;
    if !out.status.success() {
        bail!("python3 cannot import duckdb: pip install duckdb (bench/hunt.sh does it)");
    }
    println!("DuckDB {}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}

/// Deletes the temporary store when the benchmark ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CPU seconds (user + system) of the process (`RUSAGE_SELF`) or of the calling thread.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn process_cpu() -> f64 {
    cpu_seconds(libc::RUSAGE_SELF)
}

#[cfg(target_os = "linux")]
fn thread_cpu() -> f64 {
    cpu_seconds(libc::RUSAGE_THREAD)
}

/// Without per-thread accounting the generator's time cannot be subtracted: NaN says so.
#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> f64 {
    f64::NAN
}

fn peak_rss_mib() -> f64 {
    // SAFETY: as in `cpu_seconds`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    usage.ru_maxrss as f64 / 1024.0
}

/// What ingesting one table took.
struct Ingested {
    rows: u64,
    wall: f64,
    cpu: f64,
    generate_cpu: f64,
}

impl Ingested {
    fn report(&self, table: Table) {
        println!(
            "ingest {table}: {} rows, append+flush {:.2} s wall = {:.0} rows/s; {:.2} CPU s = {:.0} rows per CPU second \
             (generating them: {:.2} CPU s, not counted)",
            self.rows,
            self.wall,
            self.rows as f64 / self.wall,
            self.cpu,
            self.rows as f64 / self.cpu,
            self.generate_cpu,
        );
    }
}

/// Appends what `batches` yields to `table`, a chunk at a time: generating a chunk is not
/// timed, appending and flushing it is. Flushing each chunk inside the timed part keeps
/// background flushes from running on while the next chunk is generated, where the wall time
/// would miss them.
fn ingest_table(
    store: &Store,
    table: Table,
    batches: &mut impl Iterator<Item = RecordBatch>,
) -> Result<Ingested> {
    let cpu_start = process_cpu();
    let mut done = Ingested {
        rows: 0,
        wall: 0.0,
        cpu: 0.0,
        generate_cpu: 0.0,
    };
    loop {
        let generating = thread_cpu();
        let chunk: Vec<RecordBatch> = batches.by_ref().take(CHUNK_BATCHES).collect();
        done.generate_cpu += thread_cpu() - generating;
        if chunk.is_empty() {
            break;
        }
        let started = Instant::now();
        for batch in chunk {
            done.rows += batch.num_rows() as u64;
            store
                .append(DEFAULT_TENANT, table, batch)
                .with_context(|| format!("appending to {table}"))?;
        }
        store.flush().context("flushing the store")?;
        done.wall += started.elapsed().as_secs_f64();
    }
    done.cpu = process_cpu() - cpu_start - done.generate_cpu;
    Ok(done)
}

fn table_stats(store: &Store, table: Table) -> Option<TableStats> {
    store
        .stats()
        .tables
        .into_iter()
        .find(|t| t.tenant == DEFAULT_TENANT && t.table == table)
}

fn bytes_per_row(store: &Store, table: Table) -> String {
    match table_stats(store, table) {
        Some(t) if t.file_rows > 0 => format!(
            "{:.1} B/row ({} files, {:.1} MB)",
            t.file_bytes as f64 / t.file_rows as f64,
            t.files,
            t.file_bytes as f64 / 1e6
        ),
        _ => "no files".to_string(),
    }
}

/// Fills the store at `dir` with `rows` process events and their connections (unless it
/// already holds them), reporting ingest speed and size. Returns what ingesting the process
/// events took, if they were ingested.
fn ingest(dir: &Path, rows: usize) -> Result<Option<Ingested>> {
    let store = Store::open(dir, StoreConfig::default())
        .with_context(|| format!("cannot open a store at {}", dir.display()))?;
    let stats = store.stats();
    let have = stats.table_rows(DEFAULT_TENANT, Table::DeviceProcessEvents);
    let connections = stats.table_rows(DEFAULT_TENANT, Table::DeviceNetworkEvents);
    if have == rows as u64 && connections > 0 {
        println!(
            "reusing the store: {have} process events, {connections} network events; \
             DeviceProcessEvents {}",
            bytes_per_row(&store, Table::DeviceProcessEvents)
        );
        store.close().context("closing the store")?;
        return Ok(None);
    }
    if have > 0 || connections > 0 || stats.rows() > 0 {
        bail!(
            "{} holds {have} process events, not {rows}: remove it, or set RAMPART_BENCH_ROWS={have}",
            dir.display()
        );
    }

    let config = FleetConfig {
        processes: rows,
        ..FleetConfig::default()
    };
    println!(
        "generating {rows} process events of a {}-day fleet (1,000 devices, 300 executables, 2,000 accounts) and their connections",
        config.days
    );
    let mut processes = ProcessEvents::new(&config);
    let process = ingest_table(&store, Table::DeviceProcessEvents, &mut processes)?;
    process.report(Table::DeviceProcessEvents);
    let flushed = bytes_per_row(&store, Table::DeviceProcessEvents);
    let network = ingest_table(
        &store,
        Table::DeviceNetworkEvents,
        &mut processes.network_events(),
    )?;
    network.report(Table::DeviceNetworkEvents);

    let cpu = process_cpu();
    let started = Instant::now();
    let compaction = store.compact().context("compacting the store")?;
    println!(
        "compaction: {} files merged into {} in {:.2} s ({:.2} CPU s)",
        compaction.files_merged,
        compaction.files_written,
        started.elapsed().as_secs_f64(),
        process_cpu() - cpu
    );
    println!(
        "stored DeviceProcessEvents: {flushed} after ingest, {} after compaction; \
         DeviceNetworkEvents: {}; peak memory of the benchmark {:.0} MiB",
        bytes_per_row(&store, Table::DeviceProcessEvents),
        bytes_per_row(&store, Table::DeviceNetworkEvents),
        peak_rss_mib()
    );
    store.close().context("closing the store")?;
    Ok(Some(process))
}

/// DuckDB writing `rows` of the store's process events to Parquet (`bench/hunt_duckdb.py`,
/// `write`): the reference for the store's ingest, compared per CPU second with `ingested`.
fn duckdb_write(dir: &Path, script: &Path, rows: usize, ingested: Option<&Ingested>) -> Result<()> {
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg("write")
        .arg(rows.to_string())
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!(
            "DuckDB failed to write Parquet:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let run: Value = serde_json::from_str(line)
            .with_context(|| format!("DuckDB's script printed no JSON: {line}"))?;
        let field = |name: &str| {
            run[name]
                .as_f64()
                .with_context(|| format!("no {name} in DuckDB's {line}"))
        };
        let (written, cpu, wall, bytes) = (
            field("rows")?,
            field("cpu")?,
            field("wall")?,
            field("bytes")?,
        );
        let per_cpu = written / cpu;
        let ratio = ingested.map_or_else(String::new, |i| {
            format!(
                "; Rampart's ingest of process events {:.2}x that per CPU second",
                i.rows as f64 / i.cpu / per_cpu
            )
        });
        println!(
            "DuckDB writes {written} of these process events from Arrow to Parquet (zstd, {}): \
             {wall:.2} s wall, {cpu:.2} CPU s = {per_cpu:.0} rows per CPU second, {:.1} B/row{ratio}",
            run["order"].as_str().unwrap_or("?"),
            bytes / written,
        );
    }
    Ok(())
}

/// The Parquet files below `dir`.
fn parquet_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    let mut folders = vec![dir.join("tables")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.insert(path);
            }
        }
    }
    files
}

/// One run of one engine: its in-process seconds, result rows and the check column's sum.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Outcome {
    seconds: f64,
    rows: usize,
    check: f64,
}

impl Outcome {
    fn agrees(&self, other: &Outcome) -> bool {
        self.rows == other.rows && self.check == other.check
    }
}

/// A JSON number, or a number in a string (how 64-bit integers sometimes travel).
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn run_rampart(dir: &Path, q: &Query) -> Result<Outcome> {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("hunt")
        .arg("--data")
        .arg(dir)
        .args(["--format", "json", "--limit", "1000000", q.kql])
        .output()
        .context("cannot run rampart")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("rampart hunt failed on {}:\n{stderr}", q.name);
    }
    // The closing note: "N rows in X.XXX s".
    let seconds = stderr
        .lines()
        .rev()
        .find_map(|l| {
            let (_, after) = l.split_once(" in ")?;
            after.strip_suffix(" s")?.parse::<f64>().ok()
        })
        .with_context(|| format!("no time in rampart's output: {stderr}"))?;
    let mut rows = 0;
    let mut check = 0.0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row: Value = serde_json::from_str(line)
            .with_context(|| format!("rampart printed a line that is not JSON: {line}"))?;
        rows += 1;
        check += row
            .get(q.check)
            .and_then(number)
            .with_context(|| format!("{}: no number in column {} of {line}", q.name, q.check))?;
    }
    Ok(Outcome {
        seconds,
        rows,
        check,
    })
}

fn run_duckdb(dir: &Path, script: &Path, q: &Query) -> Result<Outcome> {
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg(q.name)
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!(
            "DuckDB failed on {}:\n{}",
            q.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("DuckDB's script printed no JSON for {}", q.name))?;
    let seconds = result["seconds"]
        .as_f64()
        .context("no seconds from DuckDB")?;
    let column = result["columns"]
        .as_array()
        .and_then(|c| c.iter().position(|c| c.as_str() == Some(q.check)))
        .with_context(|| format!("DuckDB's result for {} has no column {}", q.name, q.check))?;
    let rows = result["rows"].as_array().context("no rows from DuckDB")?;
    let mut check = 0.0;
    for row in rows {
        check += row
            .get(column)
            .and_then(number)
            .with_context(|| format!("{}: no number in column {} of {row}", q.name, q.check))?;
    }
    Ok(Outcome {
        seconds,
        rows: rows.len(),
        check,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Runs every query on both engines; false when some result differed.
fn queries(dir: &Path, script: &Path, runs: usize) -> Result<bool> {
    let mut table = Vec::new();
    let mut agreed = true;
    for q in &QUERIES {
        let mut rampart = Vec::new();
        let mut duckdb = Vec::new();
        for _ in 0..runs {
            rampart.push(run_rampart(dir, q)?);
            duckdb.push(run_duckdb(dir, script, q)?);
        }
        let times = |o: &[Outcome]| {
            o.iter()
                .map(|o| format!("{:.3}", o.seconds))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{}: rampart {} s; duckdb {} s",
            q.name,
            times(&rampart),
            times(&duckdb)
        );
        let first = rampart[0];
        let same = rampart.iter().chain(&duckdb).all(|o| o.agrees(&first));
        if !same {
            agreed = false;
            println!(
                "!!! MISMATCH on {}: rampart {:?} vs duckdb {:?} (rows, sum of {})",
                q.name,
                rampart
                    .iter()
                    .map(|o| (o.rows, o.check))
                    .collect::<Vec<_>>(),
                duckdb.iter().map(|o| (o.rows, o.check)).collect::<Vec<_>>(),
                q.check
            );
        }
        let r = median(rampart.iter().map(|o| o.seconds).collect());
        let d = median(duckdb.iter().map(|o| o.seconds).collect());
        table.push((q, r, d, first, same));
    }
    println!();
    println!(
        "| query | Rampart (s) | DuckDB (s) | Rampart / DuckDB | result (rows, sum of check column) |"
    );
    println!("|---|---|---|---|---|");
    for (q, r, d, first, same) in table {
        println!(
            "| {} | {r:.3} | {d:.3} | {:.2}x | {} rows, {} = {}{} |",
            q.name,
            r / d,
            first.rows,
            q.check,
            first.check,
            if same { ", same" } else { ", MISMATCH" }
        );
    }
    println!("(medians of {runs} runs each, in-process times, to the millisecond)");
    Ok(agreed)
}
