//! `rampart ingest`: Windows event logs into the event store, as hunting-schema rows.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use rampart_schema::Table;
use rampart_server::pipeline::Ingest;
use rampart_sources::evtx::{self, Damage};
use rampart_store::{Store, StoreConfig, StoreStats};
use serde_json::json;

use crate::EXIT_PARTIAL;
use crate::output::Table as TextTable;
use crate::stats::peak_rss_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// .evtx files or folders to read (folders are searched recursively for *.evtx).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The store's data folder (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "server",
        conflicts_with = "server"
    )]
    data: Option<PathBuf>,
    /// Upload to a running server instead (https://HOST:PORT); it stores, detects and alerts.
    #[arg(long, value_name = "URL", requires = "token")]
    server: Option<String>,
    /// API token for --server (create one with POST /api/v1/tokens).
    #[arg(
        long,
        env = "RAMPART_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The CA certificate the server's certificate chains to (its DATA_DIR/pki/ca.crt).
    #[arg(long, value_name = "FILE", requires = "server")]
    cacert: Option<PathBuf>,
    /// Tenant the rows belong to (a-z, 0-9, '_', '-'; at most 64).
    #[arg(long, default_value = rampart_store::DEFAULT_TENANT)]
    tenant: String,
    /// Summary format: a table on stderr, or JSON on stdout.
    #[arg(long, value_enum, default_value = "table")]
    format: SummaryFormat,
    /// Rows per batch appended to the store.
    #[arg(long, value_name = "N", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    batch_rows: u32,
}

/// How the closing summary is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// Aligned text on stderr.
    Table,
    /// One JSON object on stdout (for scripts).
    Json,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (Some(data), None) = (&args.data, &args.server) else {
        let target = crate::upload::Target {
            server: args.server.as_deref().unwrap_or_default(),
            token: args.token.as_deref().unwrap_or_default(),
            cacert: args.cacert.as_deref(),
        };
        return crate::upload::run(&target, &args.paths, args.format == SummaryFormat::Json);
    };
    let started = Instant::now();
    rampart_store::validate_tenant(&args.tenant)?;
    let config = StoreConfig {
        sources: rampart_server::forwarded::sources(),
        ..StoreConfig::default()
    };
    let store = Store::open(data, config)
        .with_context(|| format!("cannot open the store at {}", data.display()))?;
    for torn in &store.recovery().torn {
        eprintln!("warning: store log: {torn}");
    }
    for skipped in &store.recovery().skipped_records {
        eprintln!("warning: store log: {skipped}");
    }

    let (files, mut input_errors) = evtx::collect_files(&args.paths);
    let sizes: HashMap<&Path, u64> = files
        .iter()
        .map(|f| (f.as_path(), std::fs::metadata(f).map_or(0, |m| m.len())))
        .collect();
    let total_bytes: u64 = sizes.values().sum();
    let bar = crate::output::progress_bar("ingesting", total_bytes, files.len());

    let on_file = |path: &Path, _: &evtx::FileSummary| {
        bar.inc(sizes.get(path).copied().unwrap_or(0));
    };
    let ingest = Ingest {
        store: &store,
        tenant: &args.tenant,
        rules: None,
        indicators: None,
        batch_rows: args.batch_rows as usize,
        logged_as: None,
    };
    let ingested = ingest.run(&files, on_file);
    bar.finish_and_clear();
    let ingested =
        ingested.with_context(|| format!("cannot append to the store at {}", data.display()))?;
    store
        .flush()
        .with_context(|| format!("cannot flush the store at {}", data.display()))?;
    let stats = store.stats();
    store
        .close()
        .with_context(|| format!("cannot close the store at {}", data.display()))?;

    let records_ok = ingested.records();
    let lost = ingested.set_aside();
    let per_table = ingested.per_table;
    for (_, s) in ingested.per_file {
        input_errors.extend(s.errors);
    }
    let summary = Summary {
        files: files.len(),
        bytes: total_bytes,
        records_read: records_ok + lost,
        set_aside: lost,
        per_table,
        damaged: [Damage::File, Damage::Chunk, Damage::Record]
            .map(|kind| input_errors.iter().filter(|e| e.damage == kind).count()),
        tenant: &args.tenant,
        stats: &stats,
        elapsed: started.elapsed().as_secs_f64(),
    };
    // Input errors are always shown: they are why the exit status is 2.
    for error in &input_errors {
        eprintln!("warning: {error}");
    }
    match args.format {
        SummaryFormat::Table => summary.print(&mut std::io::stderr().lock())?,
        SummaryFormat::Json => {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &summary.to_json())?;
            writeln!(out)?;
        }
    }
    Ok(if input_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

struct Summary<'a> {
    files: usize,
    bytes: u64,
    records_read: u64,
    /// Records the files hold that could not be read.
    set_aside: u64,
    /// Rows appended (acknowledged) per table.
    per_table: BTreeMap<Table, u64>,
    /// Unreadable files or paths, damaged chunks, damaged records.
    damaged: [usize; 3],
    tenant: &'a str,
    stats: &'a StoreStats,
    elapsed: f64,
}

impl Summary<'_> {
    fn rows(&self) -> u64 {
        self.per_table.values().sum()
    }

    fn to_json(&self) -> serde_json::Value {
        let store_tables: Vec<serde_json::Value> = self
            .stats
            .tables
            .iter()
            .map(|t| {
                json!({
                    "tenant": t.tenant,
                    "table": t.table.name(),
                    "rows": t.rows(),
                    "files": t.files,
                    "bytes": t.file_bytes,
                    "days": t.days,
                })
            })
            .collect();
        json!({
            "files": self.files,
            "bytes": self.bytes,
            "records_read": self.records_read,
            "records_set_aside": self.set_aside,
            "set_aside_reasons": {
                "unreadable_files": self.damaged[0],
                "damaged_chunks": self.damaged[1],
                "damaged_records": self.damaged[2],
            },
            "tenant": self.tenant,
            "rows_per_table": self.per_table.iter().map(|(t, n)| (t.name(), *n)).collect::<BTreeMap<_, _>>(),
            "rows": self.rows(),
            "seconds": self.elapsed,
            "rows_per_second": self.rows() as f64 / self.elapsed.max(1e-9),
            "peak_rss_bytes": peak_rss_bytes(),
            "store": {
                "rows": self.stats.rows(),
                "files": self.stats.files(),
                "bytes": self.stats.file_bytes(),
                "tables": store_tables,
            },
        })
    }

    fn print(&self, e: &mut dyn Write) -> Result<()> {
        writeln!(e, "\n== Input")?;
        writeln!(
            e,
            "{} files, {:.1} MB, {} records read; {} rows ingested for tenant '{}' in {:.2} s ({:.0} rows/s); peak memory {:.0} MiB",
            self.files,
            self.bytes as f64 / 1e6,
            self.records_read,
            self.rows(),
            self.tenant,
            self.elapsed,
            self.rows() as f64 / self.elapsed.max(1e-9),
            peak_rss_bytes() as f64 / (1024.0 * 1024.0),
        )?;
        writeln!(
            e,
            "{} records set aside (unreadable); {} damaged chunks; {} damaged records; {} unreadable files or paths",
            self.set_aside, self.damaged[1], self.damaged[2], self.damaged[0]
        )?;
        let mut t = TextTable::new(["TABLE", "ROWS"]);
        for (table, n) in &self.per_table {
            t.row([table.name().to_string(), n.to_string()]);
        }
        t.row(["(set aside)".into(), self.set_aside.to_string()]);
        writeln!(e)?;
        t.write(e)?;

        writeln!(e, "\n== Store")?;
        let rows = self.stats.rows();
        let bytes = self.stats.file_bytes();
        writeln!(
            e,
            "{rows} rows in {} Parquet files, {:.1} MB ({:.1} B/row)",
            self.stats.files(),
            bytes as f64 / 1e6,
            bytes as f64 / rows.max(1) as f64
        )?;
        let mut t = TextTable::new(["TENANT", "TABLE", "ROWS", "DAYS", "FILES", "BYTES"]);
        for s in &self.stats.tables {
            t.row([
                s.tenant.clone(),
                s.table.name().to_string(),
                s.rows().to_string(),
                s.days.to_string(),
                s.files.to_string(),
                s.file_bytes.to_string(),
            ]);
        }
        writeln!(e)?;
        t.write(e)?;
        Ok(())
    }
}
