//! Arbitrary bytes as one forwarded-events line: the direct read must agree with the parsed
//! `Value`, and never panic.
//!
//! `WinEvent::from_forwarded_slice` reads the records forwarders send straight into their flat
//! fields and leaves every other shape to the parsed `Value`. Whatever the bytes, its result
//! (the event, or the error) must be the `Value` path's: `serde_json` parses the text, then
//! `WinEvent::from_forwarded_json`. Bytes that are not UTF-8 must be refused by both. An event
//! that reads is mapped to its row, which must not panic either.

#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rampart_sources::WinEvent;
use rampart_sources::windows::map_event;

fuzz_target!(|data: &[u8]| {
    let source: Arc<Path> = Arc::from(Path::new("fuzz.jsonl"));
    let direct = WinEvent::from_forwarded_slice(source.clone(), data);
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(direct.is_err(), "not UTF-8, yet read");
        return;
    };
    let parsed = serde_json::from_str(text)
        .map_err(|e| e.to_string())
        .and_then(|json| WinEvent::from_forwarded_json(source, json).map_err(str::to_string));
    assert_eq!(direct, parsed);
    if let Ok(event) = &direct {
        let _ = map_event(event);
    }
});
