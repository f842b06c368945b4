//! Ingest benchmark: appends synthetic `DeviceProcessEvents` rows and flushes them to Parquet,
//! then reports rows per second (wall and per CPU second) and stored bytes per row.
//!
//! `cargo bench -p rampart-store` (release). `RAMPART_BENCH_ROWS` sets the row count (default
//! 1,000,000); rows come in batches of 8,192 from one appending thread. The data imitates a
//! fleet: ~1,000 devices, ~300 executables, ~2,000 accounts, command lines built from
//! templates with varying arguments (numbers, hex ids, user names), process ids as Windows
//! gives them, ReportId counting per device, timestamps spread over one day in time order.
//! `RAMPART_BENCH_ZSTD` overrides the Parquet zstd level.

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use rampart_schema::{DeviceProcessEvents, Row, Table};
use rampart_store::{DEFAULT_TENANT, Store, StoreConfig};

const BATCH_ROWS: usize = 8192;

/// splitmix64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Skewed towards small values, as real fleets are (a few hosts and tools dominate).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b)
    }
}

const TOOLS: [&str; 12] = [
    "cmd.exe",
    "powershell.exe",
    "svchost.exe",
    "chrome.exe",
    "msedge.exe",
    "conhost.exe",
    "rundll32.exe",
    "wmiprvse.exe",
    "taskhostw.exe",
    "backgroundTaskHost.exe",
    "git.exe",
    "python.exe",
];
const PARENTS: [&str; 8] = [
    "explorer.exe",
    "services.exe",
    "svchost.exe",
    "cmd.exe",
    "powershell.exe",
    "wmiprvse.exe",
    "taskeng.exe",
    "winlogon.exe",
];
const TEMPLATES: [&str; 10] = [
    "{exe} /c echo {n} > C:\\Users\\{user}\\AppData\\Local\\Temp\\{guid}.tmp",
    "\"C:\\Program Files\\{exe}\" --type=renderer --field-trial-handle={n},{m} --lang=en-US --renderer-client-id={k}",
    "{exe} -NoProfile -ExecutionPolicy Bypass -File C:\\ProgramData\\scripts\\job{k}.ps1",
    "C:\\Windows\\system32\\{exe} -k netsvcs -p -s Schedule",
    "{exe} /d /s /c \"git status --porcelain {guid}\"",
    "\"C:\\Windows\\System32\\{exe}\" C:\\Windows\\System32\\shell32.dll,Control_RunDLL {n}",
    "{exe} -Embedding",
    "\\??\\C:\\Windows\\system32\\{exe} 0xffffffff -ForceV1",
    "{exe} C:\\Users\\{user}\\projects\\tool{k}\\main.py --port {n}",
    "{exe} /c schtasks /query /tn \\Microsoft\\Windows\\Task{k}",
];

fn hex(rng: &mut Rng, digits: usize) -> String {
    let mut s = String::with_capacity(digits);
    while s.len() < digits {
        s.push_str(&format!("{:016x}", rng.next()));
    }
    s.truncate(digits);
    s
}

fn make_batches(rows: usize) -> Vec<datafusion::arrow::array::RecordBatch> {
    let mut rng = Rng(42);
    let devices: Vec<(String, String)> = (0..1000)
        .map(|i| (hex(&mut rng, 40), format!("ws-{i:04}.corp.example.com")))
        .collect();
    let files: Vec<(String, String, String, String, String)> = (0..300)
        .map(|i| {
            let base = TOOLS[i % TOOLS.len()];
            let name = if i < TOOLS.len() {
                base.to_string()
            } else {
                format!("{}{i}.exe", &base[..base.len() - 4])
            };
            let folder = format!("C:\\Program Files\\Vendor{}\\{name}", i % 40);
            (
                name,
                folder,
                hex(&mut rng, 40),
                hex(&mut rng, 64),
                hex(&mut rng, 32),
            )
        })
        .collect();
    let accounts: Vec<(String, String)> = (0..2000)
        .map(|i| {
            (
                format!("user{i:04}"),
                format!("S-1-5-21-1004336348-1177238915-682003330-{}", 1000 + i),
            )
        })
        .collect();
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2024-05-01T00:00:00Z")
        .map(|t| t.to_utc())
        .unwrap_or_default();
    let step_us = (86_400_000_000 / rows.max(1)) as i64;
    let mut builder = Table::DeviceProcessEvents.batch_builder();
    let mut batches = Vec::new();
    // ReportId counts per device, as event record ids do.
    let mut report_ids = vec![0i64; devices.len()];
    // Windows process ids are multiples of 4, mostly below 32768.
    let pid = |rng: &mut Rng| 4 * rng.below(8192) as i64;
    for i in 0..rows {
        let device = rng.skewed(1000) as usize;
        let (device_id, device_name) = &devices[device];
        report_ids[device] += 1;
        let (name, folder, sha1, sha256, md5) = &files[rng.skewed(300) as usize];
        let (parent, parent_folder, psha1, psha256, pmd5) =
            &files[rng.below(PARENTS.len() as u64) as usize];
        let (user, sid) = &accounts[rng.skewed(2000) as usize];
        let template = TEMPLATES[rng.skewed(TEMPLATES.len() as u64) as usize];
        let command = template
            .replace("{exe}", name)
            .replace("{user}", user)
            .replace("{guid}", &hex(&mut rng, 8))
            .replace("{n}", &rng.below(100_000).to_string())
            .replace("{m}", &rng.below(1000).to_string())
            .replace("{k}", &rng.below(50).to_string());
        let when = start + Duration::microseconds(i as i64 * step_us + rng.below(1000) as i64);
        let created = when - Duration::milliseconds(rng.below(5000) as i64);
        let row = DeviceProcessEvents {
            timestamp: Some(when),
            device_id: Some(device_id.clone()),
            device_name: Some(device_name.clone()),
            action_type: Some("ProcessCreated".into()),
            file_name: Some(name.clone()),
            folder_path: Some(folder.clone()),
            sha1: Some(sha1.clone()),
            sha256: Some(sha256.clone()),
            md5: Some(md5.clone()),
            file_size: Some(100_000 + (sha1.len() as i64) * 1000),
            process_id: Some(pid(&mut rng)),
            process_command_line: Some(command),
            process_integrity_level: Some(
                ["Medium", "High", "System"][rng.skewed(3) as usize].into(),
            ),
            process_token_elevation: Some(
                ["TokenElevationTypeDefault", "TokenElevationTypeFull"][rng.below(2) as usize]
                    .into(),
            ),
            process_creation_time: Some(when),
            account_domain: Some("CORP".into()),
            account_name: Some(user.clone()),
            account_sid: Some(sid.clone()),
            logon_id: Some(rng.below(5000) as i64 + 0x3e7),
            initiating_process_account_domain: Some("CORP".into()),
            initiating_process_account_name: Some(user.clone()),
            initiating_process_account_sid: Some(sid.clone()),
            initiating_process_file_name: Some(
                PARENTS[rng.skewed(PARENTS.len() as u64) as usize].into(),
            ),
            initiating_process_folder_path: Some(parent_folder.clone()),
            initiating_process_sha1: Some(psha1.clone()),
            initiating_process_sha256: Some(psha256.clone()),
            initiating_process_md5: Some(pmd5.clone()),
            initiating_process_id: Some(pid(&mut rng)),
            initiating_process_command_line: Some(format!("{parent} -k {}", rng.below(20))),
            initiating_process_creation_time: Some(created),
            initiating_process_parent_id: Some(pid(&mut rng)),
            initiating_process_parent_file_name: Some("services.exe".into()),
            initiating_process_integrity_level: Some("Medium".into()),
            report_id: Some(report_ids[device]),
            ..Default::default()
        };
        // The builder is the table's own; a row of it always fits.
        let _ = builder.append(&Row::from(row));
        if builder.len() == BATCH_ROWS {
            batches.push(builder.finish());
        }
    }
    if !builder.is_empty() {
        batches.push(builder.finish());
    }
    batches
}

/// CPU seconds (user + system) this process has used, from /proc (Linux); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

/// Appends `batches` (handed over, as a real source does) and flushes; prints the figures.
fn run(
    dir: &Path,
    batches: Vec<datafusion::arrow::array::RecordBatch>,
    rows: usize,
    wal_compression: bool,
) {
    let _ = std::fs::remove_dir_all(dir);
    let mut config = StoreConfig {
        wal_compression,
        ..StoreConfig::default()
    };
    if let Some(level) = std::env::var("RAMPART_BENCH_ZSTD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.zstd_level = level;
    }
    let store = match Store::open(dir, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the store: {e}");
            return;
        }
    };
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for b in batches {
        if let Err(e) = store.append(DEFAULT_TENANT, Table::DeviceProcessEvents, b) {
            eprintln!("append failed: {e}");
            return;
        }
    }
    let appended = t0.elapsed().as_secs_f64();
    // The log holds the rows not yet flushed: its size per such row is the log's cost.
    let before_flush = store.stats();
    let in_log = before_flush
        .tables
        .iter()
        .map(|t| t.memory_rows)
        .sum::<u64>()
        .max(1);
    let wal_per_row = before_flush.wal_bytes as f64 / in_log as f64;
    if let Err(e) = store.flush() {
        eprintln!("flush failed: {e}");
        return;
    }
    let total = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = store.stats();
    let stored = stats.file_bytes();
    println!(
        "wal compression {}: {rows} rows; append {:.0} rows/s; append+flush {:.2} s = {:.0} rows/s wall, {:.0} rows per CPU second ({:.2} CPU s); \
         {:.1} B/row in Parquet ({} files, {:.1} MB); log {:.1} B/row; {} log writes for {} appends",
        if wal_compression { "LZ4" } else { "off" },
        rows as f64 / appended,
        total,
        rows as f64 / total,
        rows as f64 / cpu.max(1e-9),
        cpu,
        stored as f64 / rows as f64,
        stats.files(),
        stored as f64 / 1e6,
        wal_per_row,
        stats.wal_commits,
        stats.wal_records,
    );
    if let Err(e) = store.close() {
        eprintln!("close failed: {e}");
    }
    let columns: Vec<String> = largest_columns(dir)
        .into_iter()
        .take(8)
        .map(|(name, bytes)| format!("{name} {:.1}", bytes as f64 / rows as f64))
        .collect();
    println!("  B/row by column, largest first: {}", columns.join(", "));
}

/// Compressed bytes per column over every Parquet file below `dir`, largest first.
fn largest_columns(dir: &Path) -> Vec<(String, i64)> {
    let mut sizes: std::collections::BTreeMap<String, i64> = Default::default();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let Ok(reader) = std::fs::File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    parquet::file::reader::SerializedFileReader::new(f).map_err(|e| e.to_string())
                })
            else {
                continue;
            };
            use parquet::file::reader::FileReader;
            for rg in reader.metadata().row_groups() {
                for c in rg.columns() {
                    *sizes.entry(c.column_path().string()).or_default() += c.compressed_size();
                }
            }
        }
    }
    let mut sizes: Vec<(String, i64)> = sizes.into_iter().collect();
    sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
    sizes
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rows: usize = std::env::var("RAMPART_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("rampart-store-bench-{}", std::process::id()));
    for compression in [true, false] {
        let t = Instant::now();
        let batches = make_batches(rows);
        let memory: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        println!(
            "generated {rows} DeviceProcessEvents rows in {:.1} s ({:.0} B/row in Arrow memory)",
            t.elapsed().as_secs_f64(),
            memory as f64 / rows as f64
        );
        run(&dir, batches, rows, compression);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
