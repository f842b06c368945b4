//! `rampart rules check`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use rampart_sigma::{RuleReport, RuleSet, RuleStatus};
use serde_json::json;

use crate::output::Table;
use crate::{EXIT_PARTIAL, Format};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Rule files or folders (every .yml/.yaml below a folder is read).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Which rules to list: all, or only those that failed or are inactive.
    #[arg(long, value_enum, default_value = "all")]
    show: Show,
    /// Write the list to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Show {
    All,
    Failed,
    Inactive,
}

pub fn check(args: CheckArgs) -> Result<ExitCode> {
    let set = RuleSet::load(&args.paths);
    let mut out = crate::open_output(args.output.as_ref())?;
    let shown: Vec<&RuleReport> = set
        .report
        .iter()
        .filter(|r| match args.show {
            Show::All => true,
            Show::Failed => matches!(r.status, RuleStatus::Failed(_)),
            Show::Inactive => matches!(r.status, RuleStatus::Inactive(_)),
        })
        .collect();
    let status = |r: &RuleReport| match &r.status {
        RuleStatus::Loaded => ("loaded", r.route.clone().unwrap_or_default()),
        RuleStatus::Inactive(why) => ("inactive", why.clone()),
        RuleStatus::Failed(why) => ("failed", why.clone()),
    };
    match args.format {
        Format::Jsonl => {
            for r in &shown {
                let (s, why) = status(r);
                let line = json!({
                    "path": r.path, "id": r.id, "title": r.title, "kind": r.kind.map(|k| k.name()),
                    "status": s, "detail": why,
                });
                writeln!(out, "{line}")?;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(["status", "path", "id", "title", "kind", "detail"])?;
            for r in &shown {
                let (s, why) = status(r);
                let path = r.path.display().to_string();
                let kind = r.kind.map(|k| k.name()).unwrap_or_default();
                w.write_record([
                    s,
                    &path,
                    r.id.as_deref().unwrap_or(""),
                    r.title.as_deref().unwrap_or(""),
                    kind,
                    &why,
                ])?;
            }
            w.flush()?;
        }
        Format::Table => {
            let mut t = Table::new(["STATUS", "RULE", "PATH", "DETAIL"]);
            for r in &shown {
                let (s, why) = status(r);
                t.row([
                    s.to_string(),
                    r.title.clone().unwrap_or_default(),
                    r.path.display().to_string(),
                    why,
                ]);
            }
            t.write(&mut out)?;
        }
    }
    out.flush()?;

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &set.report {
        *counts.entry(status(r).0).or_default() += 1;
    }
    let n = |k| counts.get(k).copied().unwrap_or(0);
    eprintln!(
        "{} rules loaded, {} inactive (no Windows event log nor agent telemetry reaches them), {} failed",
        n("loaded"),
        n("inactive"),
        n("failed")
    );
    Ok(if n("failed") > 0 {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}
