//! Arbitrary bytes through Rampart's EVTX path: reading and mapping must never panic.
//!
//! - Input that parses as JSON is taken as one record rendered by `evtx` (the separated
//!   attributes form `read_file` asks for): `WinEvent::from_json`, then `map_event`.
//! - Anything else is written as an `.evtx` file and read with `evtx::read_file`, exactly as
//!   triage reads a file, and every record is mapped with `map_event`.
//!
//! Besides "no panic", the documented contract of `read_file` is checked: the summary counts
//! the records handed on, and every error names the file and, when it has one, an offset
//! inside it.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use rampart_sources::WinEvent;
use rampart_sources::evtx::read_file;
use rampart_sources::windows::map_event;

/// The input file, rewritten for every input, in a folder of this process's own.
fn input_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rampart-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        dir.join("input.evtx")
    })
}

fn check_event(event: &WinEvent) {
    // A mapping may refuse a record whose content does not fit; it must not panic.
    let _ = map_event(event);
}

fn fuzz_json(json: serde_json::Value) {
    let source: Arc<Path> = Arc::from(Path::new("fuzz.json"));
    if let Some(event) = WinEvent::from_json(source, 1, DateTime::UNIX_EPOCH, json) {
        check_event(&event);
    }
}

fn fuzz_evtx(data: &[u8]) {
    let path = input_path();
    std::fs::write(path, data).expect("write the input file");
    let handed = AtomicU64::new(0);
    let summary = read_file(path, |event| {
        assert_eq!(&*event.source, path);
        check_event(&event);
        handed.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(
        summary.records,
        handed.into_inner(),
        "records counted != handed on"
    );
    let len = data.len() as u64;
    for error in &summary.errors {
        assert_eq!(error.path, path, "{error}");
        if let Some(offset) = error.offset {
            assert!(
                offset <= len,
                "offset past the end of the {len}-byte file: {error}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(json) => fuzz_json(json),
        Err(_) => fuzz_evtx(data),
    }
});
