//! `rampart ingest` end to end: event logs into a store, and the store read back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use rampart_schema::Table;
use rampart_store::{Store, StoreConfig};
use serde_json::Value;

fn rampart(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-ingest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn ingest_accounts_for_every_record_and_the_store_keeps_the_rows() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let data = scratch("samples");
    let o = rampart(&[
        "ingest",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "json",
        samples.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let code = o.status.code();
    assert!(matches!(code, Some(0 | 2)), "exit {code:?}: {stderr}");
    assert_eq!(code == Some(2), stderr.contains("warning:"), "{stderr}");
    let summary: Value = serde_json::from_slice(&o.stdout).expect("a JSON summary on stdout");

    let per_table: BTreeMap<String, u64> = summary["rows_per_table"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let rows: u64 = per_table.values().sum();
    let read = summary["records_read"].as_u64().unwrap();
    let aside = summary["records_set_aside"].as_u64().unwrap();
    assert!(summary["files"].as_u64().unwrap() > 100);
    assert!(rows > 1000, "{summary}");
    assert_eq!(
        rows + aside,
        read,
        "rows per table plus set aside add up to records read"
    );
    assert_eq!(summary["store"]["rows"].as_u64(), Some(rows));
    assert!(per_table.contains_key("DeviceProcessEvents"));

    // Opened again, the store holds the same rows, all in Parquet.
    let store = Store::open(&data, StoreConfig::default()).unwrap();
    assert_eq!(store.recovery().replayed_rows, 0, "ingest flushed");
    let stats = store.stats();
    for (name, n) in &per_table {
        let table = Table::from_name(name).unwrap();
        assert_eq!(stats.table_rows("default", table), *n, "{name}");
    }
    assert_eq!(stats.rows(), rows);
    assert!(stats.files() >= per_table.len());
}

#[test]
fn ingest_refuses_a_bad_tenant_and_reports_missing_input() {
    let data = scratch("bad");
    let o = rampart(&[
        "ingest",
        "--data",
        data.to_str().unwrap(),
        "--tenant",
        "Not/OK",
        "x.evtx",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid tenant name 'Not/OK'"));

    let missing = data.join("nowhere");
    let o = rampart(&[
        "ingest",
        "--data",
        data.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no such file or folder"), "{stderr}");
    assert!(stderr.contains("0 records read"), "{stderr}");
}
