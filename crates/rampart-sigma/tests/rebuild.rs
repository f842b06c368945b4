//! Records rebuilt from stored rows (`rampart_sources::windows::rebuild`, what the server's rule
//! test evaluates) meet SigmaHQ's Windows rules as the records themselves did at ingest: every
//! EVTX attack sample record is mapped, rendered as a hunting answer, rebuilt, and both are
//! evaluated. Records of tables with `AdditionalFields` must raise the same detections; those
//! rebuilt from columns (registry, image loads) are approximations, and the rules that differ
//! on them are printed (run with `--nocapture`) and bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rampart_sigma::{Detection, RuleSet};
use rampart_sources::evtx;
use rampart_sources::windows::map_event;
use rampart_sources::windows::rebuild::{APPROXIMATE, rebuild, row_columns};

fn titles(set: &RuleSet, event: &rampart_sources::WinEvent) -> BTreeSet<String> {
    let mut out: Vec<Detection> = Vec::new();
    set.evaluate(event, &mut out);
    out.into_iter().map(|d| d.rule.title.clone()).collect()
}

#[test]
fn rebuilt_records_raise_what_the_records_raised() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let Some(rules) = rampart_testdata::dataset("rules/sigma/rules/windows") else {
        return;
    };
    let set = RuleSet::load(&[rules]);
    let (files, errors) = evtx::collect_files(&[samples]);
    assert!(errors.is_empty(), "{errors:?}");
    let source: Arc<Path> = Arc::from(Path::new("stored events"));
    // (exact records with different detections, per approximate table: rule → (lost, gained)).
    let exact_differences: Mutex<Vec<String>> = Mutex::default();
    type Counts = BTreeMap<String, (usize, usize)>;
    let approximate: Mutex<BTreeMap<String, Counts>> = Mutex::default();
    let detections = Mutex::new((0usize, 0usize));
    evtx::read_files(
        &files,
        |original| {
            let row = map_event(&original);
            let table = row.table();
            let Some(rebuilt) = rebuild(table, &row_columns(&row), &source) else {
                exact_differences
                    .lock()
                    .unwrap()
                    .push(format!("{table}: not rebuilt"));
                return;
            };
            let (before, after) = (titles(&set, &original), titles(&set, &rebuilt));
            {
                let mut d = detections.lock().unwrap();
                d.0 += before.len();
                d.1 += after.len();
            }
            if before == after {
                return;
            }
            if !APPROXIMATE.contains(&table) {
                exact_differences.lock().unwrap().push(format!(
                    "{} record {}: {before:?} became {after:?}",
                    original.source_name(),
                    original.record_id
                ));
                return;
            }
            let mut approximate = approximate.lock().unwrap();
            let counts = approximate.entry(table.to_string()).or_default();
            for lost in before.difference(&after) {
                counts.entry(lost.clone()).or_default().0 += 1;
            }
            for gained in after.difference(&before) {
                counts.entry(gained.clone()).or_default().1 += 1;
            }
        },
        |_, _| {},
    );
    let (before, after) = detections.into_inner().unwrap();
    println!("{before} detections on the records, {after} on the rebuilt ones");
    let approximate = approximate.into_inner().unwrap();
    for (table, rules) in &approximate {
        for (rule, (lost, gained)) in rules {
            println!("{table}: {rule}: {lost} lost, {gained} gained");
        }
    }
    let exact_differences = exact_differences.into_inner().unwrap();
    assert!(
        exact_differences.is_empty(),
        "{} records differ:\n{}",
        exact_differences.len(),
        exact_differences[..exact_differences.len().min(10)].join("\n")
    );
    assert!(before > 100, "only {before} detections");
    // What the approximation costs, measured on these samples: 18 of 771 detections, all of
    // "Unsigned DLL Loaded by Windows Utility" (it reads an image load's `Signed`, which is not
    // stored); registry records raise what they raised. A change that loses more than 5 % is a
    // regression of the rebuild.
    let lost: usize = approximate
        .values()
        .flat_map(|rules| rules.values())
        .map(|(lost, _)| lost)
        .sum();
    assert!(lost * 20 <= before, "{lost} of {before} detections lost");
}
