//! `rampart hunt` and `rampart queries check` driven as an analyst would, over a store filled
//! by `rampart ingest` with the EVTX attack samples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

fn rampart(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The store every test of this file reads, ingested once; and the ingest's rows per table.
fn store() -> Option<&'static (PathBuf, BTreeMap<String, u64>)> {
    static STORE: OnceLock<Option<(PathBuf, BTreeMap<String, u64>)>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let samples = rampart_testdata::dataset("datasets/evtx-attack-samples")?;
            let dir = std::env::temp_dir().join(format!("rampart-hunt-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let o = rampart(&["ingest", "--data", s(&dir), "--format", "json", s(&samples)]);
            assert!(
                matches!(o.status.code(), Some(0 | 2)),
                "ingest failed: {}",
                text(&o.stderr)
            );
            let summary: Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
            let rows = summary["rows_per_table"]
                .as_object()
                .expect("rows_per_table")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect();
            Some((dir, rows))
        })
        .as_ref()
}

fn hunt(data: &Path, query: &str, extra: &[&str]) -> Output {
    let mut args = vec!["hunt", "--data", s(data)];
    args.extend_from_slice(extra);
    args.push(query);
    rampart(&args)
}

fn json_rows(o: &Output) -> Vec<Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn every_ingested_row_is_found_by_hunting() {
    let Some((data, rows)) = store() else { return };
    let o = hunt(
        data,
        "union withsource=Table Device*, Identity* | summarize Rows = count() by Table",
        &["--format", "json"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let found: BTreeMap<String, u64> = json_rows(&o)
        .iter()
        .map(|r| {
            (
                r["Table"].as_str().unwrap().to_string(),
                r["Rows"].as_u64().unwrap(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(&found, rows);
}

#[test]
fn a_hunting_query_finds_the_attack() {
    let Some((data, _)) = store() else { return };
    let o = hunt(
        data,
        "DeviceProcessEvents | where ProcessCommandLine has 'whoami' | summarize n = count() by DeviceName | sort by n desc",
        &["--format", "csv"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("DeviceName,n"));
    assert!(lines.count() >= 2, "{out}");
    // The table format has a header and aligned columns.
    let o = hunt(
        data,
        "DeviceLogonEvents | summarize count() by ActionType",
        &[],
    );
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(out.starts_with("ActionType"), "{out}");
    assert!(out.contains("count_"), "{out}");
}

#[test]
fn the_limit_cuts_and_says_so() {
    let Some((data, _)) = store() else { return };
    let o = hunt(data, "DeviceEvents", &["--limit", "7", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json_rows(&o).len(), 7);
    assert!(
        text(&o.stderr).contains("cut at --limit 7"),
        "{}",
        text(&o.stderr)
    );
    let o = hunt(
        data,
        "DeviceEvents | take 3",
        &["--limit", "7", "--format", "json"],
    );
    assert_eq!(json_rows(&o).len(), 3);
    assert!(!text(&o.stderr).contains("cut"), "{}", text(&o.stderr));
}

#[test]
fn errors_are_located_and_exit_1() {
    let Some((data, _)) = store() else { return };
    let o = hunt(
        data,
        "DeviceProcessEvents\n| where FileNam =~ 'cmd.exe'",
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("line 2, column 9"), "{err}");
    assert!(err.contains("did you mean `FileName`"), "{err}");
    let o = hunt(data, "DeviceProcessEvents | wher x", &["--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("column 23"), "{}", text(&o.stderr));
    let o = hunt(
        data,
        "DeviceProcessEvents | where FileName == 'x'",
        &["--dry-run"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(o.stdout.is_empty(), "a dry run prints no rows");
}

#[test]
fn explain_prints_the_plan_without_running_it() {
    let Some((data, _)) = store() else { return };
    let o = hunt(
        data,
        "DeviceProcessEvents | where FileName =~ 'cmd.exe' | summarize n = count() by DeviceName",
        &["--explain"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let plan = text(&o.stdout);
    // The aggregation, and the scan of the table's files with the filter pushed into it.
    assert!(plan.contains("AggregateExec"), "{plan}");
    assert!(plan.contains("DataSourceExec"), "{plan}");
    assert!(plan.contains("FileName"), "{plan}");
    let o = hunt(data, "DeviceProcessEvents | wher x", &["--explain"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("column 23"), "{}", text(&o.stderr));
}

#[test]
fn a_query_past_its_timeout_is_cancelled() {
    let Some((data, _)) = store() else { return };
    let q = "let R = range x from 1 to 100000 step 1 | extend k = 1; R | join kind=inner R on k | count";
    let o = hunt(data, q, &["--timeout", "200ms"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("timeout"), "{}", text(&o.stderr));
}

#[test]
fn queries_come_from_files_and_stdin() {
    let Some((data, _)) = store() else { return };
    let file = data.with_extension("kql");
    std::fs::write(&file, "// a comment\nDeviceNetworkEvents\n| count\n").unwrap();
    let o = rampart(&[
        "hunt",
        "--data",
        s(data),
        "-f",
        s(&file),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rows = json_rows(&o);
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["Count"].as_u64().unwrap() > 0);
}

#[test]
fn schema_lists_tables_and_columns() {
    let Some((data, _)) = store() else { return };
    let o = rampart(&["hunt", "--data", s(data), "--schema"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 30, "a header and the 29 tables: {out}");
    let o = rampart(&[
        "hunt",
        "--data",
        s(data),
        "--schema",
        "DeviceLogonEvents",
        "--format",
        "json",
    ]);
    assert!(o.status.success());
    let cols = json_rows(&o);
    assert!(cols.contains(&serde_json::json!({"column": "LogonType", "type": "string"})));
    let o = rampart(&["hunt", "--data", s(data), "--schema", "DeviceLogonEvent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("did you mean `DeviceLogonEvents`"));
}

#[test]
fn public_hunting_queries_run_against_the_store() {
    let Some((data, _)) = store() else { return };
    let Some(queries) = rampart_testdata::dataset("kql/defender-hunting-queries") else {
        return;
    };
    let o = rampart(&[
        "queries",
        "check",
        "--data",
        s(data),
        "--format",
        "json",
        s(&queries),
    ]);
    let err = text(&o.stderr);
    let summary = err.lines().last().unwrap_or_default().to_string();
    // "N queries in F files: P parse (x%), L plan (y%), R run (z%)"
    let numbers: Vec<f64> = summary
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .collect();
    let (total, parsed, ran) = (numbers[0], numbers[2], numbers[6]);
    eprintln!("{summary}");
    for failure in json_rows(&o) {
        eprintln!(
            "{} {} {}",
            failure["query"], failure["result"], failure["reason"]
        );
    }
    assert!(total > 200.0, "{summary}");
    assert!(parsed / total >= 0.98, "{summary}");
    assert!(ran / total >= 0.90, "{summary}");
}
