//! `rampart`: the Rampart command line.

mod allocator;
mod hunt;
mod ingest;
mod output;
mod rules;
mod server;
mod stats;
mod triage;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

/// Rampart: open-source XDR.
///
/// Triage Windows event logs with Sigma rules and normalise them into Microsoft Defender's
/// advanced-hunting schema.
#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Sigma rules over Windows event logs and print every detection as a timeline.
    ///
    /// Reads .evtx files and folders (recursively) in parallel, normalises every record into
    /// the hunting schema, evaluates the rules on it, and ends with a summary on stderr:
    /// records per channel, rows per table, records set aside, detections per level, top
    /// rules, computers and ATT&CK tactics.
    ///
    /// Exit status: 0 when every input was read, 2 when some inputs had errors (each is
    /// reported; the rest was read), 1 on a fatal error.
    ///
    /// Example: rampart triage --rules sigma/rules/windows --min-level high ./logs/
    #[command(verbatim_doc_comment)]
    Triage(triage::Args),
    /// Read Windows event logs into the event store as hunting-schema rows.
    ///
    /// Reads .evtx files and folders (recursively) in parallel, maps every record to a row of
    /// its hunting table, appends the rows to the store in --data (durable once appended) and
    /// flushes them to Parquet. The summary gives records read, rows per table, records set
    /// aside and why, and the store's totals.
    ///
    /// Exit status: 0 when every input was read, 2 when some inputs had errors (each is
    /// reported; the rest was ingested), 1 on a fatal error.
    ///
    /// Example: rampart ingest --data ./rampart-data ./logs/
    #[command(verbatim_doc_comment)]
    Ingest(ingest::Args),
    /// Work with Sigma rule folders.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run a KQL query over the event store (Defender's advanced-hunting tables).
    ///
    /// The query reads the tables `rampart ingest` filled (DeviceProcessEvents,
    /// DeviceNetworkEvents, DeviceLogonEvents, ...); `--schema` lists them and their columns.
    /// Results print as a table, CSV or one JSON object per row (--format jsonl, or json).
    ///
    /// Exit status: 0 when the query ran (or, with --dry-run, would run); 1 when it cannot run,
    /// with the error's line and column.
    ///
    /// Examples:
    ///   rampart hunt --data ./store 'DeviceProcessEvents | where FileName =~ "powershell.exe" | take 10'
    ///   rampart hunt --data ./store -f query.kql --format csv -o out.csv
    ///   rampart hunt --data ./store --schema DeviceLogonEvents
    #[command(verbatim_doc_comment)]
    Hunt(hunt::Args),
    /// Work with libraries of KQL hunting queries.
    #[command(subcommand)]
    Queries(QueriesCommand),
    /// Run the Rampart server: ingest, detection, alerts, incidents, hunting and the REST API.
    ///
    /// Keeps everything in one data directory (events, the state database, its own CA). The
    /// first run creates the admin account (password from RAMPART_ADMIN_PASSWORD, or generated
    /// and printed once) and a CA whose certificate (DATA_DIR/pki/ca.crt) clients trust.
    /// Serves HTTPS unless --insecure-http. The API is described at /api/openapi.json.
    /// Logs go to stderr (level from RAMPART_LOG, e.g. debug). SIGTERM or Ctrl-C stops it
    /// after flushing everything acknowledged.
    ///
    /// Exit status: 0 after a clean stop, 1 when it cannot start (the reason is printed).
    ///
    /// Example: rampart server --data-dir ./rampart-data --rules ../sigma/rules/windows
    #[command(verbatim_doc_comment)]
    Server(server::Args),
}

#[derive(Subcommand)]
enum QueriesCommand {
    /// Parse, plan and run every query of files and folders (.kql, .txt, and the fenced code
    /// blocks of .md) against the store, and report which fail and why.
    ///
    /// Exit status: 0 when every query ran, 2 when some failed, 1 on a fatal error.
    Check(hunt::CheckArgs),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Load rules and list what loads (and on which logsource: Windows event logs or Linux
    /// agent telemetry), what is inactive (no source reaches it), and what fails and why.
    ///
    /// Exit status: 0 when every rule loaded or is only inactive, 2 when some failed, 1 on a
    /// fatal error.
    Check(rules::CheckArgs),
}

/// How results are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for reading in a terminal.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    #[value(alias = "json")]
    Jsonl,
}

/// Exit status when some inputs could not be read but the rest was.
pub const EXIT_PARTIAL: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Triage(args) => triage::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Rules(RulesCommand::Check(args)) => rules::check(args),
        Command::Hunt(args) => hunt::run(args),
        Command::Queries(QueriesCommand::Check(args)) => hunt::check(args),
        Command::Server(args) => server::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Where output goes: a file, or stdout.
pub fn open_output(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn std::io::Write>> {
    use anyhow::Context;
    Ok(match path {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}
