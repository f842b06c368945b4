//! Where tests find the third-party data that sits beside the repository (never inside it),
//! and [`fleet`], the synthetic hunting data that benchmarks generate.
//!
//! The data lives in `../shared` next to the workspace, or in `$RAMPART_DATA_DIR`. When it is
//! missing a test skips with a printed reason — unless `RAMPART_REQUIRE_DATA=1` (CI), where a
//! missing dataset is a failure.

pub mod fleet;

use std::io::Write;
use std::path::PathBuf;

/// The data root: `$RAMPART_DATA_DIR`, or `../shared` beside the workspace.
///
/// The workspace is found at run time from the running test's `CARGO_MANIFEST_DIR` (every
/// crate sits in `crates/<name>`): a path compiled in would point at whichever checkout built
/// this crate first when several checkouts share one target directory.
pub fn data_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("RAMPART_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    crate_dir.join("../../../shared")
}

/// Whether CI demands the data (`RAMPART_REQUIRE_DATA=1`).
pub fn data_required() -> bool {
    std::env::var("RAMPART_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

/// `relative` below the data root, or `None` after printing why the test skips.
///
/// # Panics
/// When the path is missing and `RAMPART_REQUIRE_DATA=1`.
pub fn dataset(relative: &str) -> Option<PathBuf> {
    let path = data_root().join(relative);
    if path.exists() {
        return Some(path);
    }
    unavailable(&format!(
        "{} is missing (set RAMPART_DATA_DIR to the folder holding datasets/ and rules/)",
        path.display()
    ));
    None
}

/// Prints why a test skips for want of something outside the repository (data, a browser).
///
/// # Panics
/// When `RAMPART_REQUIRE_DATA=1`: CI has everything, so a missing part is a failure there.
pub fn unavailable(reason: &str) {
    assert!(!data_required(), "RAMPART_REQUIRE_DATA=1 but {reason}");
    // Written to stderr directly, not with `eprintln!`, so the test harness does not swallow it.
    let _ = writeln!(std::io::stderr(), "skipping: {reason}");
}

/// CPU seconds (user + system) this process has used, from `/proc` (Linux; 0 elsewhere): what
/// benchmarks report per CPU second, whatever else runs on the machine.
pub fn cpu_seconds() -> f64 {
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
