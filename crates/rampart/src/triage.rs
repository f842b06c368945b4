//! `rampart triage`: Sigma rules over Windows event logs, as a timeline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rampart_schema::attack;
use rampart_sigma::{Detection, Level, RuleSet, RuleStatus};
use rampart_sources::evtx::{self, Damage, ReadError};
use rampart_sources::windows::map_event;

use crate::output::{Table, write_detections};
use crate::stats::{Shard, peak_rss_bytes};
use crate::{EXIT_PARTIAL, Format};

#[derive(clap::Args)]
pub struct Args {
    /// .evtx files or folders to read (folders are searched recursively for *.evtx).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Sigma rule file or folder; repeat for more. Every .yml/.yaml below a folder is loaded.
    #[arg(long, short, required = true, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Output format of the detections.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write detections to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Report only detections of rules at this level or above
    /// (informational, low, medium, high, critical).
    #[arg(long, value_name = "LEVEL", default_value = "informational")]
    min_level: Level,
    /// Only records at or after this time (UTC; RFC 3339, "YYYY-MM-DD HH:MM:SS" or "YYYY-MM-DD").
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<DateTime<Utc>>,
    /// Only records before this time (same forms as --from).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<DateTime<Utc>>,
    /// Do not print the closing summary.
    #[arg(long, short)]
    quiet: bool,
    /// Also write the closing summary as JSON to this file (for scripts and benchmarks).
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
}

/// Accepts RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` and `YYYY-MM-DD`, all UTC.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("'{s}' is not a time (use RFC 3339, 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD')")
        })
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from >= to
    {
        bail!("--from ({from}) must be before --to ({to})");
    }
    let started = Instant::now();
    let rules = RuleSet::load(&args.rules);
    let failed_rules = rules
        .report
        .iter()
        .filter(|r| matches!(r.status, RuleStatus::Failed(_)))
        .count();
    let inactive_rules = rules
        .report
        .iter()
        .filter(|r| matches!(r.status, RuleStatus::Inactive(_)))
        .count();
    if rules.active_rules() == 0 {
        bail!(
            "no rule could be loaded from {} ({failed_rules} failed, {inactive_rules} inactive); see 'rampart rules check'",
            args.rules
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let rules_loaded_in = started.elapsed();
    // Open the output before the long part, so a bad path fails at once.
    let mut out = crate::open_output(args.output.as_ref())?;

    let (files, mut input_errors) = evtx::collect_files(&args.paths);
    let sizes: HashMap<&std::path::Path, u64> = files
        .iter()
        .map(|f| (f.as_path(), std::fs::metadata(f).map_or(0, |m| m.len())))
        .collect();
    let total_bytes: u64 = sizes.values().sum();
    let bar = crate::output::progress_bar("reading", total_bytes, files.len());

    let shards: Vec<Mutex<Shard>> = (0..rayon::current_num_threads() + 1)
        .map(|_| Mutex::default())
        .collect();
    let (from, to) = (args.from, args.to);
    let on_event = |event: rampart_sources::WinEvent| {
        let slot = rayon::current_thread_index().map_or(0, |i| i + 1);
        let mut detections = Vec::new();
        let in_window =
            from.is_none_or(|f| event.timestamp >= f) && to.is_none_or(|t| event.timestamp < t);
        let held = if in_window {
            rules.evaluate(&event, &mut detections)
        } else {
            None
        };
        let table = map_event(&event).table();
        let mut shard = shards[slot].lock().unwrap_or_else(|p| p.into_inner());
        match shard.per_channel.get_mut(&event.channel) {
            Some(n) => *n += 1,
            None => {
                shard.per_channel.insert(event.channel.clone(), 1);
            }
        }
        *shard.per_table.entry(table).or_default() += 1;
        shard.detections.append(&mut detections);
        shard.correlation_inputs.extend(held);
    };
    let on_file = |path: &std::path::Path, _: &evtx::FileSummary| {
        bar.inc(sizes.get(path).copied().unwrap_or(0));
    };
    let per_file = evtx::read_files(&files, on_event, on_file);
    bar.finish_and_clear();

    let mut all = Shard::default();
    for s in shards {
        all.merge(s.into_inner().unwrap_or_else(|p| p.into_inner()));
    }
    // Correlations need records in time order.
    if !all.correlation_inputs.is_empty() {
        let mut inputs = std::mem::take(&mut all.correlation_inputs);
        inputs.sort_by_key(|i| (i.event.timestamp, i.event.record_id));
        let mut correlator = rules.correlator();
        for input in inputs {
            correlator.feed(input, &mut all.detections);
        }
    }
    let mut detections: Vec<Detection> = all
        .detections
        .into_iter()
        .filter(|d| d.rule.level >= args.min_level)
        .collect();
    // A total order, so that the same input always gives the same output whatever the threads did.
    let key = |d: &Detection| {
        (
            d.timestamp,
            d.computer.clone(),
            d.source.clone(),
            d.record_id,
            d.rule.title.clone(),
            d.rule.id.clone(),
        )
    };
    detections.sort_by_cached_key(key);

    write_detections(&mut out, args.format, &detections)
        .and_then(|()| out.flush().map_err(Into::into))
        .with_context(|| match &args.output {
            Some(p) => format!("cannot write {}", p.display()),
            None => "cannot write to stdout".into(),
        })?;

    let records_ok: u64 = per_file.iter().map(|(_, s)| s.records).sum();
    let lost: u64 = per_file.iter().map(|(_, s)| s.lost).sum();
    for (_, s) in per_file {
        input_errors.extend(s.errors);
    }
    let summary = Summary {
        files: files.len(),
        bytes: total_bytes,
        records_ok,
        lost,
        per_channel: all.per_channel,
        per_table: all.per_table,
        errors: &input_errors,
        detections: &detections,
        rules: &rules,
        failed_rules,
        inactive_rules,
        rules_loaded_in: rules_loaded_in.as_secs_f64(),
        elapsed: started.elapsed().as_secs_f64(),
    };
    summary.print(args.quiet)?;
    if let Some(path) = &args.summary_json {
        let text = serde_json::to_string_pretty(&summary.to_json())?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
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
    records_ok: u64,
    /// Records the files hold that could not be read (set aside).
    lost: u64,
    per_channel: HashMap<String, u64>,
    per_table: BTreeMap<rampart_schema::Table, u64>,
    errors: &'a [ReadError],
    detections: &'a [Detection],
    rules: &'a RuleSet,
    failed_rules: usize,
    inactive_rules: usize,
    rules_loaded_in: f64,
    elapsed: f64,
}

impl Summary<'_> {
    fn to_json(&self) -> serde_json::Value {
        let count = |kind| self.errors.iter().filter(|x| x.damage == kind).count();
        let pairs: BTreeSet<_> = self
            .detections
            .iter()
            .map(|d| (&d.source, &d.rule.title))
            .collect();
        let files_hit: BTreeSet<_> = self.detections.iter().map(|d| &d.source).collect();
        let mut per_level: BTreeMap<&str, u64> = BTreeMap::new();
        for d in self.detections {
            *per_level.entry(d.rule.level.name()).or_default() += 1;
        }
        serde_json::json!({
            "files": self.files,
            "bytes": self.bytes,
            "records_read": self.records_ok + self.lost,
            "records_set_aside": self.lost,
            "damaged_chunks": count(Damage::Chunk),
            "unreadable_files": count(Damage::File),
            "records_per_channel": self.per_channel,
            "rows_per_table": self.per_table.iter().map(|(t, n)| (t.name(), *n)).collect::<BTreeMap<_, _>>(),
            "rules_active": self.rules.active_rules(),
            "rules_inactive": self.inactive_rules,
            "rules_failed": self.failed_rules,
            "detections": self.detections.len(),
            "detections_per_level": per_level,
            "files_with_detections": files_hit.len(),
            "distinct_file_rule_pairs": pairs.len(),
            "seconds": self.elapsed,
            "rules_load_seconds": self.rules_loaded_in,
            "peak_rss_bytes": peak_rss_bytes(),
        })
    }

    fn print(&self, quiet: bool) -> Result<()> {
        let err = std::io::stderr();
        let mut e = err.lock();
        // Input errors are always shown: they are why the exit status is 2.
        for error in self.errors {
            writeln!(e, "warning: {error}")?;
        }
        for rule in &self.rules.report {
            if let RuleStatus::Failed(why) = &rule.status {
                let title = rule
                    .title
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default();
                writeln!(
                    e,
                    "warning: rule {}{title} not loaded: {why}",
                    rule.path.display()
                )?;
            }
        }
        if quiet {
            return Ok(());
        }
        let records_read = self.records_ok + self.lost;
        let set_aside = self.lost;
        let mb = self.bytes as f64 / 1e6;
        writeln!(e, "\n== Input")?;
        writeln!(
            e,
            "{} files, {:.1} MB, {} records read in {:.2} s ({:.0} records/s); rules loaded in {:.2} s; peak memory {:.0} MiB",
            self.files,
            mb,
            records_read,
            self.elapsed,
            records_read as f64 / self.elapsed.max(1e-9),
            self.rules_loaded_in,
            peak_rss_bytes() as f64 / (1024.0 * 1024.0),
        )?;
        let chunks = self
            .errors
            .iter()
            .filter(|x| x.damage == Damage::Chunk)
            .count();
        let bad_files = self
            .errors
            .iter()
            .filter(|x| x.damage == Damage::File)
            .count();
        writeln!(
            e,
            "{set_aside} records set aside (unreadable); {chunks} damaged chunks; {bad_files} unreadable files or paths"
        )?;

        let mut t = Table::new(["CHANNEL", "RECORDS"]);
        let mut channels: Vec<_> = self.per_channel.iter().collect();
        channels.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (c, n) in channels {
            t.row([c.clone(), n.to_string()]);
        }
        writeln!(e)?;
        t.write(&mut e)?;

        let mut t = Table::new(["TABLE", "ROWS"]);
        for (table, n) in &self.per_table {
            t.row([table.name().to_string(), n.to_string()]);
        }
        t.row(["(set aside)".into(), set_aside.to_string()]);
        writeln!(e)?;
        t.write(&mut e)?;

        writeln!(e, "\n== Rules")?;
        writeln!(
            e,
            "{} rules active ({} of them on Linux agent telemetry, not read here), {} inactive, {} failed to load (see 'rampart rules check')",
            self.rules.active_rules(),
            self.rules.linux_rules(),
            self.inactive_rules,
            self.failed_rules
        )?;

        writeln!(e, "\n== Detections")?;
        let files_hit: BTreeSet<_> = self.detections.iter().map(|d| &d.source).collect();
        let pairs: BTreeSet<_> = self
            .detections
            .iter()
            .map(|d| (&d.source, &d.rule.title))
            .collect();
        writeln!(
            e,
            "{} detections in {} of {} files ({} distinct file/rule pairs)",
            self.detections.len(),
            files_hit.len(),
            self.files,
            pairs.len()
        )?;
        let mut per_level: BTreeMap<Level, u64> = BTreeMap::new();
        let mut per_rule: HashMap<(&str, Level), u64> = HashMap::new();
        let mut per_computer: HashMap<&str, u64> = HashMap::new();
        let mut tactics: BTreeMap<attack::Tactic, u64> = BTreeMap::new();
        for d in self.detections {
            *per_level.entry(d.rule.level).or_default() += 1;
            *per_rule
                .entry((d.rule.title.as_str(), d.rule.level))
                .or_default() += 1;
            *per_computer.entry(d.computer.as_str()).or_default() += 1;
            let found: BTreeSet<_> = d
                .rule
                .tags
                .iter()
                .filter_map(|t| attack::tactic_of_tag(t))
                .collect();
            for tactic in found {
                *tactics.entry(tactic).or_default() += 1;
            }
        }
        let levels: Vec<String> = per_level
            .iter()
            .rev()
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        writeln!(
            e,
            "by level: {}",
            if levels.is_empty() {
                "none".into()
            } else {
                levels.join(", ")
            }
        )?;

        let mut rules: Vec<_> = per_rule.into_iter().collect();
        rules.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.1.cmp(&a.0.1)).then(a.0.0.cmp(b.0.0)));
        let mut t = Table::new(["TOP RULES", "LEVEL", "HITS"]);
        for ((title, level), n) in rules.into_iter().take(15) {
            t.row([title.to_string(), level.to_string(), n.to_string()]);
        }
        writeln!(e)?;
        t.write(&mut e)?;

        let mut computers: Vec<_> = per_computer.into_iter().collect();
        computers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut t = Table::new(["COMPUTER", "DETECTIONS"]);
        for (c, n) in computers.into_iter().take(15) {
            t.row([c.to_string(), n.to_string()]);
        }
        writeln!(e)?;
        t.write(&mut e)?;

        let mut t = Table::new(["ATT&CK TACTIC", "ID", "DETECTIONS"]);
        for (tactic, n) in &tactics {
            t.row([
                tactic.name.to_string(),
                tactic.id.to_string(),
                n.to_string(),
            ]);
        }
        writeln!(
            e,
            "\n{} of {} ATT&CK tactics covered",
            tactics.len(),
            attack::TACTICS.len()
        )?;
        t.write(&mut e)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn parses_times() {
        assert_eq!(
            parse_time("2019-03-18").unwrap().to_rfc3339(),
            "2019-03-18T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2019-03-18 17:35:24").unwrap().to_rfc3339(),
            "2019-03-18T17:35:24+00:00"
        );
        assert_eq!(
            parse_time("2019-03-18T17:35:24+02:00")
                .unwrap()
                .to_rfc3339(),
            "2019-03-18T15:35:24+00:00"
        );
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
    }
}
