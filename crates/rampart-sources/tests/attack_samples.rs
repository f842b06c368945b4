//! The EVTX attack samples (`datasets/evtx-attack-samples` of the shared data) through the
//! Windows mapper: every record becomes exactly one row, the main families land in their
//! tables with their key columns, and every row goes into an Arrow batch.
//!
//! Run with `--nocapture` to see the rows per table and per `ActionType`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rampart_schema::arrow_array::Array;
use rampart_schema::arrow_array::cast::AsArray;
use rampart_schema::{Row, Table};
use rampart_sources::evtx;
use rampart_sources::windows::map_event;

/// Checks one record's row; returns what is wrong with it.
fn check(provider: &str, event_id: u32, row: &Row) -> Option<String> {
    match (provider, event_id, row) {
        ("Microsoft-Windows-Sysmon", 1, Row::DeviceProcessEvents(r)) => {
            let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
            (empty(&r.file_name) || empty(&r.process_command_line))
                .then(|| format!("Sysmon 1 without FileName/ProcessCommandLine: {r:?}"))
        }
        ("Microsoft-Windows-Sysmon", 1, other) => {
            Some(format!("Sysmon 1 mapped to {}", other.table()))
        }
        ("Microsoft-Windows-Security-Auditing", 4624, Row::DeviceLogonEvents(r)) => r
            .logon_type
            .is_none()
            .then(|| format!("4624 without LogonType: {r:?}")),
        ("Microsoft-Windows-Security-Auditing", 4624, other) => {
            Some(format!("4624 mapped to {}", other.table()))
        }
        _ => None,
    }
}

#[test]
fn every_attack_sample_record_maps_to_one_row() {
    let Some(root) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let (files, errors) = evtx::collect_files(&[root]);
    assert!(errors.is_empty(), "listing the samples: {errors:?}");
    assert!(!files.is_empty(), "no .evtx file in the samples");

    let rows: Mutex<Vec<Row>> = Mutex::default();
    let problems: Mutex<Vec<String>> = Mutex::default();
    let summaries = evtx::read_files(
        &files,
        |event| {
            let row = map_event(&event);
            if let Some(problem) = check(&event.provider, event.event_id, &row) {
                problems.lock().unwrap().push(problem);
            }
            rows.lock().unwrap().push(row);
        },
        |_, _| {},
    );
    let records: u64 = summaries.iter().map(|(_, s)| s.records).sum();
    let rows = rows.into_inner().unwrap();
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} problems: {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );

    // One row per record.
    let mut per_table: BTreeMap<Table, usize> = BTreeMap::new();
    for row in &rows {
        *per_table.entry(row.table()).or_default() += 1;
    }
    println!("{} files, {records} records", files.len());
    for (table, n) in &per_table {
        println!("{n:>7}  {table}");
    }
    assert_eq!(per_table.values().sum::<usize>() as u64, records);
    assert!(records > 0);

    // Every table Windows records are mapped to gets rows from the samples.
    for table in rampart_sources::windows::rebuild::TABLES {
        assert!(per_table.contains_key(&table), "no {table} row");
    }

    // Every row goes into its table's Arrow batch.
    let mut builders: BTreeMap<Table, _> = BTreeMap::new();
    for row in &rows {
        builders
            .entry(row.table())
            .or_insert_with(|| row.table().batch_builder())
            .append(row)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut per_action: BTreeMap<(Table, String), usize> = BTreeMap::new();
    for (table, mut builder) in builders {
        let batch = builder.finish();
        assert_eq!(batch.num_rows(), per_table[&table]);
        let actions = batch
            .column_by_name("ActionType")
            .expect("every mapped table has ActionType");
        let actions = actions.as_string::<i32>();
        assert_eq!(actions.null_count(), 0, "{table} rows without ActionType");
        for action in actions.iter().flatten() {
            *per_action.entry((table, action.to_string())).or_default() += 1;
        }
    }
    for ((table, action), n) in &per_action {
        println!("{n:>7}  {table} {action}");
    }
}
