//! Writing detections as a table, CSV or JSON lines, and aligned text tables.

use std::io::Write;

use anyhow::Result;
use chrono::SecondsFormat;
use rampart_sigma::Detection;
use serde_json::{Value, json};

use crate::Format;

/// Widest a table cell gets before it is cut with `…`.
const MAX_CELL: usize = 80;

/// A text table with aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Table {
        Table::with_header(header.iter().map(|s| s.to_string()).collect())
    }

    /// A table whose columns are known only at run time (query results).
    pub fn with_header(header: Vec<String>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row: each cell on one line, whitespace runs collapsed; every cell but the last
    /// (which aligns nothing) is cut to `MAX_CELL` characters.
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.row_vec(cells.into());
    }

    /// [`Table::row`] for rows whose width is known only at run time.
    pub fn row_vec(&mut self, cells: Vec<String>) {
        let last = cells.len().saturating_sub(1);
        self.rows.push(
            cells
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let one_line = c.split_whitespace().collect::<Vec<_>>().join(" ");
                    if i == last { one_line } else { cut(&one_line) }
                })
                .collect(),
        );
    }

    /// The same cells as CSV with a header line.
    pub fn write_csv(&self, out: &mut dyn Write) -> Result<()> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(&self.header)?;
        for row in &self.rows {
            w.write_record(row)?;
        }
        w.flush()?;
        Ok(())
    }

    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |out: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
            let last = cells.len().saturating_sub(1);
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i == last {
                    writeln!(out, "{cell}")?;
                } else {
                    write!(out, "{cell:<w$}  ")?;
                }
            }
            Ok(())
        };
        line(out, &self.header)?;
        for row in &self.rows {
            line(out, row)?;
        }
        Ok(())
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_CELL - 1).collect();
    t.push('…');
    t
}

/// One detection as the JSON object `--format jsonl` writes.
pub fn detection_json(d: &Detection) -> Value {
    json!({
        "timestamp": d.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
        "computer": d.computer,
        "channel": d.channel,
        "event_id": d.event_id,
        "record_id": d.record_id,
        "source_file": d.source.display().to_string(),
        "rule_id": d.rule.id,
        "rule_title": d.rule.title,
        "rule_kind": d.rule.kind.name(),
        "rule_path": d.rule.path.display().to_string(),
        "level": d.rule.level.name(),
        "tags": d.rule.tags,
        "matched": d.matched.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
    })
}

/// The matched fields as `Field=value` text, for the table and CSV.
fn details(d: &Detection) -> String {
    let mut s = String::new();
    for (k, v) in &d.matched {
        if !s.is_empty() {
            s.push_str(" ¦ ");
        }
        let v = match v {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        s.push_str(k);
        s.push('=');
        s.push_str(&v);
    }
    s
}

/// Writes detections in the chosen format.
pub fn write_detections(
    out: &mut dyn Write,
    format: Format,
    detections: &[Detection],
) -> Result<()> {
    match format {
        Format::Jsonl => {
            for d in detections {
                serde_json::to_writer(&mut *out, &detection_json(d))?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "timestamp",
                "computer",
                "level",
                "rule_title",
                "rule_id",
                "channel",
                "event_id",
                "record_id",
                "source_file",
                "tags",
                "details",
            ])?;
            for d in detections {
                w.write_record([
                    d.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
                    d.computer.clone(),
                    d.rule.level.name().to_string(),
                    d.rule.title.clone(),
                    d.rule.id.clone().unwrap_or_default(),
                    d.channel.clone(),
                    d.event_id.to_string(),
                    d.record_id.to_string(),
                    d.source.display().to_string(),
                    d.rule.tags.join(" "),
                    details(d),
                ])?;
            }
            w.flush()?;
        }
        Format::Table => {
            let mut t = Table::new([
                "TIMESTAMP",
                "COMPUTER",
                "LEVEL",
                "RULE",
                "CHANNEL",
                "EID",
                "RECORD",
                "DETAILS",
            ]);
            for d in detections {
                t.row([
                    d.timestamp.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                    d.computer.clone(),
                    d.rule.level.name().to_string(),
                    d.rule.title.clone(),
                    d.channel.clone(),
                    d.event_id.to_string(),
                    d.record_id.to_string(),
                    details(d),
                ]);
            }
            t.write(out)?;
        }
    }
    Ok(())
}

/// A progress bar over `bytes` of input on a terminal (hidden elsewhere), saying what it does.
pub fn progress_bar(verb: &str, bytes: u64, files: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(bytes);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {verb} {{msg}} [{{bar:30}}] {{binary_bytes}}/{{binary_total_bytes}} ({{binary_bytes_per_sec}}, eta {{eta}})"
    ))
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("{files} files"));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
