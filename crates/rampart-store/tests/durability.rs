//! Durability: a process ingesting into the store is killed with SIGKILL at random points
//! (during appends, flushes, compactions, recovery), many times over the same store; after
//! each kill every acknowledged row must be there exactly once.
//!
//! The test re-executes its own binary as the ingesting child (switched by an environment
//! variable). The child appends batches of rows with unique ReportIds from two threads, flushes
//! and compacts now and then, runs with a small memory limit (forced flushes) and a busy
//! background thread, and prints each batch's id range once `append` has returned.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use rampart_schema::{DeviceProcessEvents, Row, Table};
use rampart_store::{DEFAULT_TENANT, Store, StoreConfig};

const CHILD_DIR: &str = "RAMPART_STORE_CRASH_DIR";
const CHILD_SEED: &str = "RAMPART_STORE_CRASH_SEED";
const TRIALS: u64 = 30;
/// Ids of trial t, thread k, batch b: `t * 10^9 + k * 10^8 + b * BATCH_ROWS ..`.
const BATCH_ROWS: i64 = 200;
const THREADS: i64 = 2;

/// splitmix64, seeded from the trial number: the same trial always waits as long.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn child_config() -> StoreConfig {
    StoreConfig {
        memory_limit_bytes: 1 << 20,
        flush_interval: Some(Duration::from_millis(15)),
        compact_min_files: 2,
        // Routine flushes hold partitions under 1,024 rows (up to 256 KiB of them, for up to
        // 300 ms) and log them again: kills land while they are held, logged again, written.
        row_group_rows: 2048,
        max_hold: Duration::from_millis(300),
        ..StoreConfig::default()
    }
}

fn batch(first: i64) -> datafusion::arrow::array::RecordBatch {
    let base = DateTime::<Utc>::from_timestamp(1_714_521_600, 0).unwrap_or_default();
    let mut b = Table::DeviceProcessEvents.batch_builder();
    for id in first..first + BATCH_ROWS {
        // Three days, so flushes write several partitions.
        let when = base + chrono::Duration::minutes(id.rem_euclid(3 * 24 * 60));
        let row = DeviceProcessEvents {
            timestamp: Some(when),
            report_id: Some(id),
            file_name: Some(format!("tool{}.exe", id % 13)),
            ..Default::default()
        };
        b.append(&Row::from(row)).unwrap();
    }
    b.finish()
}

/// The child: ingests until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let trial: i64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let store = Store::open(Path::new(&dir), child_config()).unwrap();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let store = &store;
            s.spawn(move || {
                let mut held = false;
                for n in 0.. {
                    let first = trial * 1_000_000_000 + thread * 100_000_000 + n * BATCH_ROWS;
                    store
                        .append(DEFAULT_TENANT, Table::DeviceProcessEvents, batch(first))
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {first}").unwrap();
                    if !held && store.stats().work.held_rows > 0 {
                        held = true;
                        writeln!(out, "held").unwrap();
                    }
                    out.flush().unwrap();
                    drop(out);
                    if thread == 0 && n % 7 == 6 {
                        store.flush().unwrap();
                    }
                    if thread == 1 && n % 11 == 10 {
                        store.compact().unwrap();
                    }
                }
            });
        }
    });
}

/// The ids in the store, and what its recovery did: (torn tails, orphan files, replayed
/// records, held partitions' records of flushes that never committed).
fn stored_ids(dir: &Path) -> (HashMap<i64, u32>, [usize; 4]) {
    let store = Store::open(
        dir,
        StoreConfig {
            background: false,
            ..StoreConfig::default()
        },
    )
    .expect("the store opens after a crash");
    let r = store.recovery();
    let recovery = [
        r.torn.len(),
        r.orphans_removed.len(),
        r.replayed_records as usize,
        r.superseded_records as usize,
    ];
    let provider = store.table_provider(DEFAULT_TENANT, Table::DeviceProcessEvents);
    let batches = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            let ctx = SessionContext::new();
            ctx.read_table(provider)
                .unwrap()
                .select_columns(&["ReportId"])
                .unwrap()
                .collect()
                .await
                .unwrap()
        });
    let mut ids = HashMap::new();
    for b in &batches {
        for id in b.column(0).as_primitive::<Int64Type>().iter().flatten() {
            *ids.entry(id).or_insert(0u32) += 1;
        }
    }
    (ids, recovery)
}

#[test]
fn acknowledged_rows_survive_sigkill_exactly_once() {
    let dir = std::env::temp_dir().join(format!("rampart-store-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut acknowledged: Vec<i64> = Vec::new();
    let mut recovered = [0; 4];
    let mut trials_holding = 0;
    for trial in 1..=TRIALS {
        let mut rng = Rng(trial);
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_SEED, trial.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut held = false;
            let mut lines = BufReader::new(stdout);
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut by the kill has no newline: not counted.
                if let Some(first) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ack ")) {
                    acks.push(first.parse::<i64>().unwrap());
                }
                held |= line == "held\n";
                line.clear();
            }
            (acks, held)
        });
        std::thread::sleep(Duration::from_millis(40 + rng.below(450)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child ingests until killed");
        let (acks, held) = reader.join().unwrap();
        acknowledged.extend(acks);
        trials_holding += u64::from(held);

        let (ids, recovery) = stored_ids(&dir);
        for (total, n) in recovered.iter_mut().zip(recovery) {
            *total += n;
        }
        for &first in &acknowledged {
            for id in first..first + BATCH_ROWS {
                assert_eq!(
                    ids.get(&id),
                    Some(&1),
                    "trial {trial}: acknowledged id {id}"
                );
            }
        }
        // Batches not acknowledged (in flight at the kill) are there whole or not at all.
        let mut per_batch: HashMap<i64, i64> = HashMap::new();
        for (&id, &count) in &ids {
            assert_eq!(count, 1, "trial {trial}: id {id} stored {count} times");
            *per_batch.entry(id - id.rem_euclid(BATCH_ROWS)).or_default() += 1;
        }
        for (first, n) in per_batch {
            assert_eq!(
                n, BATCH_ROWS,
                "trial {trial}: batch {first} is partly stored"
            );
        }
    }
    assert!(
        acknowledged.len() > TRIALS as usize,
        "the children got work done"
    );
    assert!(
        trials_holding >= TRIALS / 4,
        "flushes held partitions in memory in {trials_holding} of {TRIALS} trials"
    );
    eprintln!(
        "{TRIALS} kills: {} batches acknowledged and found exactly once; recoveries cut {} torn log tails, \
         removed {} files of interrupted flushes or compactions, replayed {} log records and \
         skipped {} of held partitions whose flush did not commit; flushes held partitions \
         in {trials_holding} trials; {:.1} s",
        acknowledged.len(),
        recovered[0],
        recovered[1],
        recovered[2],
        recovered[3],
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
