//! Sigma evaluation benchmark: every record of `../shared/datasets/evtx-attack-samples`
//! evaluated by SigmaHQ's Windows rules on one thread, `RAMPART_BENCH_REPEAT` times (10).
//! Prints records per second and CPU microseconds per record: the detection share of the
//! server's per-event budget, without parsing, storage or alerting.
//!
//! `cargo bench -p rampart-sigma` (release). `RAMPART_BENCH_RULES` overrides the rule folder.
//! For instruction counts that do not move with the machine's load, run the built binary
//! under `valgrind --tool=callgrind` with `RAMPART_BENCH_REPEAT=1`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rampart_sigma::RuleSet;
use rampart_sources::WinEvent;

fn main() {
    let (Some(samples), Some(default_rules)) = (
        rampart_testdata::dataset("datasets/evtx-attack-samples"),
        rampart_testdata::dataset("rules/sigma/rules/windows"),
    ) else {
        return;
    };
    let rules_dir = std::env::var_os("RAMPART_BENCH_RULES")
        .map(PathBuf::from)
        .unwrap_or(default_rules);
    let repeat: usize = std::env::var("RAMPART_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);

    let started = Instant::now();
    let rules = RuleSet::load(std::slice::from_ref(&rules_dir));
    eprintln!(
        "{} rules from {} loaded in {:.2} s",
        rules.active_rules(),
        rules_dir.display(),
        started.elapsed().as_secs_f64()
    );
    let (files, _) = rampart_sources::evtx::collect_files(&[samples]);
    let records = std::sync::Mutex::new(Vec::<WinEvent>::new());
    for file in &files {
        rampart_sources::evtx::read_file(Path::new(file), |event| {
            records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event)
        });
    }
    let mut records = records.into_inner().unwrap_or_else(|p| p.into_inner());
    // Records may be read in parallel: one order, so that instruction counts repeat.
    records.sort_by(|a, b| (&a.source, a.record_id).cmp(&(&b.source, b.record_id)));

    let mut detections = Vec::new();
    let mut matched = 0usize;
    let cpu = rampart_testdata::cpu_seconds();
    let wall = Instant::now();
    for _ in 0..repeat {
        for record in &records {
            detections.clear();
            let _held = rules.evaluate(record, &mut detections);
            matched += detections.len();
        }
    }
    let (wall, cpu) = (
        wall.elapsed().as_secs_f64(),
        rampart_testdata::cpu_seconds() - cpu,
    );
    let evaluated = (records.len() * repeat) as f64;
    println!(
        "{{\"records\":{},\"repeat\":{repeat},\"detections\":{matched},\"records_per_s\":{:.0},\"cpu_us_per_record\":{:.2}}}",
        records.len(),
        evaluated / wall,
        cpu * 1e6 / evaluated
    );
}
