//! `rampart hunt`: KQL over the event store; `rampart queries check`: a library of hunting
//! queries checked against the store (parse, plan, run).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rampart_kql::syntax::blocks::query_blocks;
use rampart_kql::{Engine, KqlError, QueryOptions, QueryResult};
use rampart_schema::Table as HuntingTable;
use rampart_store::{StoreReader, TenantCatalog};

use crate::output::Table;
use crate::{EXIT_PARTIAL, Format};

#[derive(clap::Args)]
pub struct Args {
    /// The store's data directory (as given to `rampart ingest --data`).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The query text (KQL). Use -f to read it from a file, or - to read stdin.
    #[arg(value_name = "QUERY", required_unless_present_any = ["file", "schema"], conflicts_with = "file")]
    query: Option<String>,
    /// Read the query from this file.
    #[arg(long, short, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output format: an aligned table, CSV with a header, or one JSON object per row.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Most rows to print; the result is cut past it, and stderr says so.
    #[arg(long, default_value_t = 10_000, value_name = "ROWS")]
    limit: usize,
    /// Cancel the query after this long (e.g. 30s, 5m, 1h, 500ms).
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Parse and plan the query only; exit 0 when it would run.
    #[arg(long)]
    dry_run: bool,
    /// Print the plan the query would run and exit without running it: DataFusion's physical
    /// plan, one operator per line (scans with the filters pushed into them, files and row
    /// counts; joins and their keys; aggregations), for seeing why a query is slow.
    #[arg(long, conflicts_with = "dry_run")]
    explain: bool,
    /// List the hunting tables, or the columns and types of one table, and exit.
    #[arg(long, value_name = "TABLE", num_args = 0..=1, default_missing_value = "")]
    schema: Option<String>,
    /// Tenant whose events are queried.
    #[arg(long, default_value = "default", value_name = "NAME")]
    tenant: String,
    /// Write the result to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Accepts `500ms`, `30s`, `5m`, `1h`, `2d`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 30s, 5m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{s}' (use ms, s, m, h or d)"
            ));
        }
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("'{s}' must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    rampart_kql::runtime().context("cannot start the query runtime")
}

fn open_engine(data: &Path, tenant: &str) -> Result<Engine> {
    if !data.is_dir() {
        bail!(
            "{} is not a store (create one with `rampart ingest --data {} PATH...`)",
            data.display(),
            data.display()
        );
    }
    rampart_store::validate_tenant(tenant)?;
    // A read-only view: hunting never waits for (or blocks) an ingest in progress.
    // A server's store logs forwarded events by their input: replayed here as there.
    let store = StoreReader::open_with(data, &rampart_server::forwarded::sources())
        .with_context(|| format!("cannot open the store at {}", data.display()))?;
    Ok(Engine::new(TenantCatalog::of_reader(store, tenant)))
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(table) = &args.schema {
        return print_schema(table, args.format, args.output.as_ref());
    }
    let source = match (&args.query, &args.file) {
        (Some(q), _) if q == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read the query from stdin")?;
            s
        }
        (Some(q), _) => q.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => bail!("give a query, or -f FILE"),
    };
    let engine = open_engine(&args.data, &args.tenant)?;
    let rt = runtime()?;
    if args.explain {
        return match rt.block_on(engine.explain(&source)) {
            Ok(plan) => {
                let mut out = crate::open_output(args.output.as_ref())?;
                out.write_all(plan.as_bytes())?;
                out.flush()?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(report_error(&e, &source)),
        };
    }
    if args.dry_run {
        return match rt.block_on(engine.check(&source)) {
            Ok(plan) => {
                let columns: Vec<String> = plan
                    .plan
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                eprintln!("ok: the query would return columns {}", columns.join(", "));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(report_error(&e, &source)),
        };
    }
    let options = QueryOptions {
        limit: args.limit,
        timeout: args.timeout,
    };
    let started = Instant::now();
    let result = match rt.block_on(engine.run(&source, &options)) {
        Ok(r) => r,
        Err(e) => return Ok(report_error(&e, &source)),
    };
    let mut out = crate::open_output(args.output.as_ref())?;
    write_result(&result, args.format, &mut out)?;
    out.flush()?;
    let mut note = format!(
        "{} row{} in {:.3} s",
        result.rows(),
        if result.rows() == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    if result.truncated {
        note.push_str(&format!(
            "; the result was cut at --limit {} (more rows matched)",
            args.limit
        ));
    }
    if let Some(chart) = &result.chart {
        note.push_str(&format!("; render: {chart}"));
    }
    eprintln!("{note}");
    Ok(ExitCode::SUCCESS)
}

/// Prints a located error; exit 1.
fn report_error(e: &KqlError, source: &str) -> ExitCode {
    eprint!("{}", e.render(source));
    ExitCode::from(1)
}

pub fn write_result(result: &QueryResult, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => {
            let mut t = Table::with_header(result.column_names());
            for row in result.text_rows() {
                t.row_vec(row);
            }
            t.write(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(result.column_names())?;
            for row in result.text_rows() {
                w.write_record(row)?;
            }
            w.flush()?;
        }
        Format::Jsonl => {
            for row in result.json_rows() {
                serde_json::to_writer(&mut *out, &row)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}

fn print_schema(table: &str, format: Format, output: Option<&PathBuf>) -> Result<ExitCode> {
    let mut out = crate::open_output(output)?;
    if table.is_empty() {
        let mut t = Table::new(["table", "columns"]);
        for tab in HuntingTable::ALL {
            t.row([tab.name().to_string(), tab.columns().len().to_string()]);
        }
        write_plain(
            &t,
            format,
            &mut out,
            HuntingTable::ALL.iter().map(
                |tab| serde_json::json!({"table": tab.name(), "columns": tab.columns().len()}),
            ),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(tab) = HuntingTable::from_name(table) else {
        let suggestion =
            rampart_kql::syntax::nearest(table, HuntingTable::ALL.iter().map(|t| t.name()));
        match suggestion {
            Some(s) => bail!("unknown table '{table}' (did you mean `{s}`?)"),
            None => bail!("unknown table '{table}' (`rampart hunt --schema` lists them)"),
        }
    };
    let mut t = Table::new(["column", "type"]);
    for c in tab.columns() {
        t.row([c.name.to_string(), c.kind.name().to_string()]);
    }
    write_plain(
        &t,
        format,
        &mut out,
        tab.columns()
            .iter()
            .map(|c| serde_json::json!({"column": c.name, "type": c.kind.name()})),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// A small listing in the chosen format (the table already holds the text form).
fn write_plain(
    t: &Table,
    format: Format,
    out: &mut dyn Write,
    json: impl Iterator<Item = serde_json::Value>,
) -> Result<()> {
    match format {
        Format::Table => t.write(out)?,
        Format::Csv => t.write_csv(out)?,
        Format::Jsonl => {
            for v in json {
                serde_json::to_writer(&mut *out, &v)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The store's data directory the queries run against.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Files or folders of queries: .kql/.txt files are one query each; every fenced code
    /// block of a .md file is a query.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Parse and plan only; do not run the queries.
    #[arg(long)]
    no_run: bool,
    /// Timeout per query.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Output format of the per-query report.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Which queries to list: all, or only those that failed.
    #[arg(long, default_value = "failed", value_parser = ["all", "failed"])]
    show: String,
    /// Tenant whose events are queried.
    #[arg(long, default_value = "default", value_name = "NAME")]
    tenant: String,
}

/// How far a query got, worst first.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    ParseFailed,
    PlanFailed,
    RunFailed,
    Planned,
    Ran,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::ParseFailed => "parse-failed",
            Stage::PlanFailed => "plan-failed",
            Stage::RunFailed => "run-failed",
            Stage::Ran => "ran",
            Stage::Planned => "planned",
        }
    }
}

pub fn check(args: CheckArgs) -> Result<ExitCode> {
    let engine = open_engine(&args.data, &args.tenant)?;
    let rt = runtime()?;
    let mut files = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
                let entry = entry.with_context(|| format!("cannot read {}", p.display()))?;
                let ext = entry
                    .path()
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("");
                if entry.file_type().is_file() && matches!(ext, "md" | "kql" | "txt") {
                    files.push(entry.path().to_path_buf());
                }
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    let options = QueryOptions {
        limit: 1000,
        timeout: args.timeout,
    };
    let mut report = Table::new(["query", "result", "reason"]);
    let mut json = Vec::new();
    let (mut total, mut parsed, mut planned, mut ran) = (0usize, 0usize, 0usize, 0usize);
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let is_md = f.extension().is_some_and(|e| e == "md");
        for block in query_blocks(&text, is_md) {
            total += 1;
            let (stage, reason) = match rampart_kql::syntax::parse(&block.text) {
                Ok(_) => check_query(&engine, &rt, &block.text, args.no_run, &options),
                Err(whole) => {
                    // A collection of queries separated by blank lines, as the query editors
                    // read them: each must parse, and the block is as good as its worst.
                    let parts = editor_queries(&block);
                    let all_parse = parts.len() > 1
                        && parts.iter().all(|q| rampart_kql::syntax::parse(q).is_ok());
                    if all_parse {
                        parts
                            .iter()
                            .map(|q| check_query(&engine, &rt, q, args.no_run, &options))
                            .min_by_key(|(stage, _)| *stage as u8)
                            .unwrap_or((Stage::ParseFailed, String::new()))
                    } else {
                        (Stage::ParseFailed, located(&whole, &block.text))
                    }
                }
            };
            if stage != Stage::ParseFailed {
                parsed += 1;
            }
            if matches!(stage, Stage::RunFailed | Stage::Ran | Stage::Planned) {
                planned += 1;
            }
            if stage == Stage::Ran {
                ran += 1;
            }
            let ok = matches!(stage, Stage::Ran | Stage::Planned);
            let name = format!("{}:{}", f.display(), block.line);
            if args.show == "all" || !ok {
                report.row([name.clone(), stage.name().to_string(), reason.clone()]);
                json.push(
                    serde_json::json!({"query": name, "result": stage.name(), "reason": reason}),
                );
            }
        }
    }
    let mut out = crate::open_output(None)?;
    match args.format {
        Format::Table => report.write(&mut out)?,
        Format::Csv => report.write_csv(&mut out)?,
        Format::Jsonl => {
            for v in &json {
                serde_json::to_writer(&mut out, v)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    let pct = |n: usize| {
        if total == 0 {
            100.0
        } else {
            n as f64 * 100.0 / total as f64
        }
    };
    eprintln!(
        "{total} queries in {} files: {parsed} parse ({:.1}%), {planned} plan ({:.1}%){}",
        files.len(),
        pct(parsed),
        pct(planned),
        if args.no_run {
            String::new()
        } else {
            format!(", {ran} run ({:.1}%)", pct(ran))
        }
    );
    let all_ok = if args.no_run {
        planned == total
    } else {
        ran == total
    };
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    })
}

/// The queries of a collection as the editors run them; a paragraph of only `let` statements
/// belongs to the query after it (authors put shared `let`s first).
fn editor_queries(block: &rampart_kql::syntax::blocks::QueryBlock) -> Vec<String> {
    let mut out = Vec::new();
    let mut lets = String::new();
    for q in block.editor_queries() {
        let text = format!("{lets}{}", q.text);
        match rampart_kql::syntax::parse(&text) {
            Ok(parsed) if parsed.body.is_none() => lets = format!("{text}\n"),
            _ => {
                out.push(text);
                lets.clear();
            }
        }
    }
    if !lets.is_empty() {
        out.push(lets);
    }
    out
}

/// How far one query gets: plan (and optimise), then run unless `no_run`.
fn check_query(
    engine: &Engine,
    rt: &tokio::runtime::Runtime,
    text: &str,
    no_run: bool,
    options: &QueryOptions,
) -> (Stage, String) {
    let planned = if no_run {
        rt.block_on(engine.check(text))
    } else {
        rt.block_on(engine.plan(text))
    };
    match planned {
        Err(e) => (Stage::PlanFailed, located(&e, text)),
        Ok(_) if no_run => (Stage::Planned, String::new()),
        Ok(plan) => match rt.block_on(engine.execute(plan, options)) {
            Ok(r) => (Stage::Ran, format!("{} rows", r.rows())),
            Err(e) => (Stage::RunFailed, located(&e, text)),
        },
    }
}

/// `line:col: message` on one line.
fn located(e: &KqlError, text: &str) -> String {
    match e.location(text) {
        Some(l) => format!("{}:{}: {e}", l.line, l.column),
        None => e.to_string(),
    }
}
