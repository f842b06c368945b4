//! SigmaHQ's own regression samples: for each, the rule its `info.yml` names must fire on the
//! sample when SigmaHQ's whole rule repository is loaded, as `rampart triage` loads it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rampart_sigma::{RuleSet, RuleStatus};
use rampart_sources::evtx;

/// Samples whose rule cannot fire here, with the reason. Empty: every sample passes.
const EXPECTED_MISSES: &[(&str, &str)] = &[];

struct Sample {
    rule_id: String,
    evtx: PathBuf,
}

/// `info.yml` holds the rule id under `rule_metadata` and the sample paths under
/// `regression_tests_info`; a line scan is enough for this fixed layout.
fn read_info(info: &Path, root: &Path) -> Vec<Sample> {
    let text = std::fs::read_to_string(info).expect("info.yml is readable");
    let mut rule_id = None;
    let mut in_metadata = false;
    let mut paths = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if line.starts_with("rule_metadata:") {
            in_metadata = true;
        } else if !line.starts_with(' ') && !line.starts_with('-') {
            in_metadata = false;
        }
        if in_metadata
            && rule_id.is_none()
            && let Some(id) = t.strip_prefix("- id:").or_else(|| t.strip_prefix("id:"))
        {
            rule_id = Some(id.trim().to_string());
        }
        if let Some(p) = t.strip_prefix("path:") {
            let p = p.trim();
            if p.ends_with(".evtx") {
                paths.push(root.join(p));
            }
        }
    }
    let rule_id = rule_id.unwrap_or_else(|| panic!("{} names no rule id", info.display()));
    paths
        .into_iter()
        .map(|evtx| Sample {
            rule_id: rule_id.clone(),
            evtx,
        })
        .collect()
}

#[test]
fn every_regression_sample_fires_its_rule() {
    let Some(root) = rampart_testdata::dataset("datasets/sigma-regression") else {
        return;
    };
    let Some(rules_dir) = rampart_testdata::dataset("rules/sigma") else {
        return;
    };
    let rules = RuleSet::load(&[rules_dir]);
    let loaded: HashSet<&str> = rules
        .report
        .iter()
        .filter(|r| r.status == RuleStatus::Loaded)
        .filter_map(|r| r.id.as_deref())
        .collect();

    let mut infos: Vec<PathBuf> = walk(&root)
        .into_iter()
        .filter(|p| p.ends_with("info.yml"))
        .collect();
    infos.sort();
    let samples: Vec<Sample> = infos.iter().flat_map(|i| read_info(i, &root)).collect();
    assert!(
        samples.len() >= 100,
        "expected the SigmaHQ regression set, found {} samples",
        samples.len()
    );

    let expected: HashMap<&str, &str> = EXPECTED_MISSES.iter().copied().collect();
    let mut misses = BTreeSet::new();
    let mut not_loaded = BTreeSet::new();
    for sample in &samples {
        if !loaded.contains(sample.rule_id.as_str()) {
            not_loaded.insert(sample.rule_id.clone());
            continue;
        }
        let fired = Mutex::new(HashSet::new());
        let summary = evtx::read_file(&sample.evtx, |event| {
            let mut out = Vec::new();
            rules.evaluate(&event, &mut out);
            let mut fired = fired.lock().unwrap();
            fired.extend(out.into_iter().filter_map(|d| d.rule.id.clone()));
        });
        assert!(
            summary.errors.is_empty(),
            "{}: {:?}",
            sample.evtx.display(),
            summary.errors
        );
        assert!(
            summary.records > 0,
            "{} holds no record",
            sample.evtx.display()
        );
        if !fired.into_inner().unwrap().contains(&sample.rule_id)
            && !expected.contains_key(sample.rule_id.as_str())
        {
            misses.insert(format!("{} ({})", sample.rule_id, sample.evtx.display()));
        }
    }
    println!(
        "{} samples: {} fired their rule, {} rules not loaded",
        samples.len(),
        samples.len() - misses.len() - not_loaded.len(),
        not_loaded.len()
    );
    assert!(
        not_loaded.is_empty(),
        "rules named by samples did not load: {not_loaded:?}"
    );
    assert!(
        misses.is_empty(),
        "rules that did not fire on their sample:\n{}",
        misses.into_iter().collect::<Vec<_>>().join("\n")
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                out.push(p)
            }
        }
    }
    out
}
