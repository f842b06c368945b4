//! `rampart` driven as a user drives it: the binary, its flags, its outputs and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn rampart(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One JSON value per line (`--format jsonl`); a line that is not JSON fails the test.
fn json_lines(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("UTF-8 output");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// A fresh folder for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Our own rules, written for the attack sample named in `sysmon_file`.
const RULES: &str = r#"
title: Whoami From Any Shell
id: 11111111-0000-0000-0000-000000000001
logsource: {product: windows, category: process_creation}
detection:
    selection:
        Image|endswith: '\whoami.exe'
    condition: selection
level: low
tags: [attack.discovery, attack.t1033]
---
title: Any Process Creation
id: 11111111-0000-0000-0000-000000000002
logsource: {product: windows, category: process_creation}
detection:
    selection:
        EventID: [1, 4688]
    condition: selection
level: high
tags: [attack.execution]
"#;

const BAD_RULE: &str = "title: Broken\nlogsource: {product: windows}\ndetection:\n  sel:\n    Image|nosuchmodifier: x\n  condition: sel\n";

fn attack_samples() -> Option<PathBuf> {
    rampart_testdata::dataset("datasets/evtx-attack-samples")
}

/// A Sysmon file of the attack samples with process creations in it.
fn sysmon_file(samples: &Path) -> PathBuf {
    samples.join("Lateral Movement/LM_wmiexec_impacket_sysmon_whoami.evtx")
}

#[test]
fn triage_writes_jsonl_with_the_contract_fields_and_a_summary() {
    let Some(samples) = attack_samples() else {
        return;
    };
    let dir = scratch("jsonl");
    std::fs::write(dir.join("rules.yml"), RULES).unwrap();
    std::fs::write(dir.join("bad.yml"), BAD_RULE).unwrap();
    let out = dir.join("out.jsonl");
    let summary = dir.join("summary.json");
    let file = sysmon_file(&samples);
    let o = rampart(&[
        "triage",
        "--rules",
        s(&dir),
        "--format",
        "jsonl",
        "-o",
        s(&out),
        "--summary-json",
        s(&summary),
        s(&file),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&std::fs::read(&out).unwrap());
    assert!(!lines.is_empty());
    for d in &lines {
        for key in [
            "timestamp",
            "computer",
            "channel",
            "event_id",
            "record_id",
            "source_file",
            "rule_id",
            "rule_title",
            "level",
            "tags",
        ] {
            assert!(d.get(key).is_some(), "{key} missing in {d}");
        }
        assert!(chrono::DateTime::parse_from_rfc3339(d["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(d["source_file"], s(&file));
    }
    let whoami: Vec<&Value> = lines
        .iter()
        .filter(|d| d["rule_title"] == "Whoami From Any Shell")
        .collect();
    assert!(
        !whoami.is_empty(),
        "the whoami rule fires on {}",
        file.display()
    );
    assert_eq!(
        whoami[0]["tags"],
        serde_json::json!(["attack.discovery", "attack.t1033"])
    );
    assert_eq!(whoami[0]["level"], "low");
    // Timeline order.
    let times: Vec<&str> = lines
        .iter()
        .map(|d| d["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));

    let sum: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(sum["rules_failed"], 1, "the broken rule is counted");
    assert!(
        stderr(&o).contains("bad.yml not loaded: Unknown modifier 'nosuchmodifier'"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sum["rules_active"], 2);
    let rows: u64 = sum["rows_per_table"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        rows + sum["records_set_aside"].as_u64().unwrap(),
        sum["records_read"].as_u64().unwrap()
    );
    let err = stderr(&o);
    for part in [
        "== Input",
        "CHANNEL",
        "TABLE",
        "== Detections",
        "by level:",
        "TOP RULES",
        "COMPUTER",
        "ATT&CK TACTIC",
    ] {
        assert!(err.contains(part), "summary lacks {part}:\n{err}");
    }
}

#[test]
fn min_level_and_time_window_filter_detections() {
    let Some(samples) = attack_samples() else {
        return;
    };
    let dir = scratch("filters");
    std::fs::write(dir.join("rules.yml"), RULES).unwrap();
    let file = sysmon_file(&samples);
    let run = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["triage", "-q", "--rules", s(&dir), "--format", "jsonl"];
        args.extend_from_slice(extra);
        args.push(s(&file));
        let o = rampart(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        json_lines(&o.stdout)
    };
    let all = run(&[]);
    let high = run(&["--min-level", "high"]);
    assert!(high.len() < all.len());
    assert!(high.iter().all(|d| d["level"] == "high"));
    let mut times: Vec<String> = all
        .iter()
        .map(|d| d["timestamp"].as_str().unwrap().to_string())
        .collect();
    times.sort();
    let first = times.first().unwrap().clone();
    let last = times.last().unwrap().clone();
    assert_ne!(first, last, "the sample spans more than one instant");
    let windowed = run(&["--from", &first, "--to", &last]);
    assert!(
        windowed
            .iter()
            .all(|d| d["timestamp"].as_str().unwrap() < last.as_str())
    );
    assert!(windowed.len() < all.len());
    let o = rampart(&[
        "triage",
        "--rules",
        s(&dir),
        "--from",
        "2020-01-02",
        "--to",
        "2020-01-01",
        s(&file),
    ]);
    assert_eq!(o.status.code(), Some(1), "an empty window is a usage error");
    assert!(stderr(&o).contains("--from"));
}

#[test]
fn table_and_csv_formats() {
    let Some(samples) = attack_samples() else {
        return;
    };
    let dir = scratch("formats");
    std::fs::write(dir.join("rules.yml"), RULES).unwrap();
    let file = sysmon_file(&samples);
    let o = rampart(&[
        "triage",
        "-q",
        "--rules",
        s(&dir),
        "--format",
        "csv",
        s(&file),
    ]);
    assert!(o.status.success());
    let csv = String::from_utf8(o.stdout).unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("timestamp,computer,level,rule_title,rule_id,")
    );
    assert!(lines.any(|l| l.contains("Whoami From Any Shell")));
    let o = rampart(&["triage", "-q", "--rules", s(&dir), s(&file)]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.starts_with("TIMESTAMP"));
    assert!(table.contains("Whoami From Any Shell"));
}

#[test]
fn unreadable_inputs_exit_2_and_the_rest_is_read() {
    let Some(samples) = attack_samples() else {
        return;
    };
    let dir = scratch("partial");
    std::fs::write(dir.join("rules.yml"), RULES).unwrap();
    let junk = dir.join("junk.evtx");
    std::fs::write(&junk, b"this is not an event log").unwrap();
    let missing = dir.join("missing");
    let file = sysmon_file(&samples);
    let o = rampart(&[
        "triage",
        "-q",
        "--rules",
        s(&dir),
        "--format",
        "jsonl",
        s(&file),
        s(&junk),
        s(&missing),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("junk.evtx"), "{err}");
    assert!(
        err.contains("missing") && err.contains("no such file"),
        "{err}"
    );
    assert!(
        String::from_utf8(o.stdout)
            .unwrap()
            .contains("Whoami From Any Shell"),
        "the good file is still read"
    );
}

#[test]
fn fatal_errors_exit_1() {
    let dir = scratch("fatal");
    std::fs::write(dir.join("bad.yml"), BAD_RULE).unwrap();
    let o = rampart(&["triage", "--rules", s(&dir), s(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no rule could be loaded"),
        "{}",
        stderr(&o)
    );
    std::fs::write(dir.join("ok.yml"), RULES).unwrap();
    let o = rampart(&[
        "triage",
        "--rules",
        s(&dir),
        "-o",
        "/nonexistent-dir/out.txt",
        s(&dir),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot create /nonexistent-dir/out.txt"));
}

#[test]
fn rules_check_lists_loaded_inactive_and_failed() {
    let dir = scratch("check");
    std::fs::write(dir.join("rules.yml"), RULES).unwrap();
    std::fs::write(dir.join("bad.yml"), BAD_RULE).unwrap();
    std::fs::write(dir.join("linux.yml"), "title: L\nlogsource: {product: linux, category: process_creation}\ndetection:\n  s:\n    Image: /bin/sh\n  condition: s\n").unwrap();
    std::fs::write(dir.join("macos.yml"), "title: M\nlogsource: {product: macos, category: process_creation}\ndetection:\n  s:\n    Image: /bin/sh\n  condition: s\n").unwrap();
    std::fs::write(dir.join("notyaml.yml"), "title: [unclosed\n").unwrap();
    let o = rampart(&["rules", "check", "--format", "jsonl", s(&dir)]);
    assert_eq!(o.status.code(), Some(2), "failures give exit 2");
    let lines = json_lines(&o.stdout);
    let status_of = |file: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["path"].as_str().unwrap().ends_with(file))
            .map(|l| l["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(status_of("rules.yml"), ["loaded", "loaded"]);
    assert_eq!(status_of("linux.yml"), ["loaded"]);
    assert_eq!(status_of("macos.yml"), ["inactive"]);
    assert_eq!(status_of("bad.yml"), ["failed"]);
    assert_eq!(status_of("notyaml.yml"), ["failed"]);
    let bad = lines
        .iter()
        .find(|l| l["path"].as_str().unwrap().ends_with("bad.yml"))
        .unwrap();
    assert!(
        bad["detail"].as_str().unwrap().contains("nosuchmodifier"),
        "{bad}"
    );
    assert!(
        stderr(&o).contains(
            "3 rules loaded, 1 inactive (no Windows event log nor agent telemetry reaches them), 2 failed"
        ),
        "{}",
        stderr(&o)
    );
    std::fs::remove_file(dir.join("bad.yml")).unwrap();
    std::fs::remove_file(dir.join("notyaml.yml")).unwrap();
    assert!(rampart(&["rules", "check", s(&dir)]).status.success());
}

/// The issue's measurement over the whole attack-sample folder with SigmaHQ's rules: every
/// record lands in a table or is set aside, and detection coverage is at least Hayabusa's
/// (116 files, 413 distinct file/rule pairs on the same data).
#[test]
fn attack_samples_with_sigmahq_rules() {
    let Some(samples) = attack_samples() else {
        return;
    };
    let Some(rules) = rampart_testdata::dataset("rules/sigma") else {
        return;
    };
    let dir = scratch("attack");
    let summary = dir.join("summary.json");
    let o = rampart(&[
        "triage",
        "-q",
        "--rules",
        s(&rules),
        "--format",
        "jsonl",
        "-o",
        s(&dir.join("d.jsonl")),
        "--summary-json",
        s(&summary),
        s(&samples),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sum: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(sum["files"], 162);
    let read = sum["records_read"].as_u64().unwrap();
    assert_eq!(read, 5705);
    let rows: u64 = sum["rows_per_table"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(rows + sum["records_set_aside"].as_u64().unwrap(), read);
    assert!(
        sum["files_with_detections"].as_u64().unwrap() >= 116,
        "{sum}"
    );
    assert!(
        sum["distinct_file_rule_pairs"].as_u64().unwrap() >= 413,
        "{sum}"
    );
    assert_eq!(sum["rules_failed"], 0, "{sum}");
}

/// The same input gives byte-identical output, whatever the threads did.
#[test]
fn output_is_reproducible() {
    let Some(samples) = attack_samples() else {
        return;
    };
    let Some(rules) = rampart_testdata::dataset("rules/sigma") else {
        return;
    };
    let dir = samples.join("Defense Evasion");
    let run = || {
        let o = rampart(&[
            "triage",
            "-q",
            "--rules",
            s(&rules),
            "--format",
            "jsonl",
            s(&dir),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    let first = run();
    assert!(first.len() > 1000);
    assert_eq!(first, run());
}
