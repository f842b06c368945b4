//! Forwarded Windows events as newline-delimited JSON: one record per line, in the rendering
//! [`WinEvent::from_forwarded_slice`] reads (the `evtx` crate's JSON with separated attributes,
//! `{"Event": {"System": {...}, "EventData": {...}}}`).
//!
//! Lines are parsed in parallel; a line that is not such a record is reported with its number
//! ([`Damage::Line`]) and the others are read. Blank lines are skipped and not counted.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::evtx::{Damage, FileSummary, ReadError};
use crate::winevent::WinEvent;

/// One line of the input: its number (from 1) and its bytes, without the line break.
pub type Line<'a> = (u64, &'a [u8]);

/// Lines handed to one task: enough to amortise the scheduling, few enough to spread a
/// 1,000-event batch over the cores.
const LINES_PER_TASK: usize = 64;

/// The non-blank lines of `text`, numbered from 1 (blank ones keep their numbers). Line
/// breaks are found by `memchr` (a few bytes at once; splitting byte by byte was 3 % of the
/// server's work); only a line's ends are read to tell a blank one.
pub fn lines(text: &[u8]) -> Vec<Line<'_>> {
    let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
    let mut start = 0;
    let mut out = Vec::new();
    for (i, end) in ends.enumerate() {
        let line = &text[start..end];
        start = end + 1;
        if !line.trim_ascii().is_empty() {
            out.push((i as u64 + 1, line));
        }
    }
    out
}

/// Reads `lines`, calling `on_event` for every record (from several threads at once, in no
/// particular order). `source` names the input in errors and in each event.
pub fn read_lines<F>(source: &Path, lines: &[Line<'_>], on_event: F) -> FileSummary
where
    F: Fn(WinEvent) + Sync,
{
    let shared: Arc<Path> = Arc::from(source);
    let (records, mut errors) = lines
        .par_chunks(LINES_PER_TASK)
        .map(|chunk| {
            let mut records = 0u64;
            let mut errors = Vec::new();
            for &(number, line) in chunk {
                let parsed = WinEvent::from_forwarded_slice(shared.clone(), line);
                match parsed {
                    Ok(event) => {
                        records += 1;
                        on_event(event);
                    }
                    Err(message) => errors.push(ReadError {
                        path: source.to_path_buf(),
                        damage: Damage::Line,
                        offset: Some(number),
                        message,
                    }),
                }
            }
            (records, errors)
        })
        .reduce(
            || (0, Vec::new()),
            |(n, mut e), (m, f)| {
                e.extend(f);
                (n + m, e)
            },
        );
    errors.sort_by_key(|e| e.offset);
    FileSummary {
        records,
        lost: errors.len() as u64,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn bad_lines_are_reported_by_number_and_the_rest_read() {
        let text = concat!(
            r#"{"Event": {"System": {"EventID": 1, "EventRecordID": 7, "Computer": "ws1", "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:00Z"}}, "EventData": {"Image": "C:\\x.exe"}}}"#,
            "\r\n\n   \n",
            "{\"Event\": \n",
            r#"{"Event": {"System": {"EventID": 2}}}"#,
            "\n",
            r#"{"Event": {"System": {"EventID": 3, "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:01Z"}}}}"#,
        );
        let lines = lines(text.as_bytes());
        assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), [1, 4, 5, 6]);
        let seen = Mutex::new(Vec::new());
        let summary = read_lines(Path::new("fwd"), &lines, |e| {
            seen.lock().unwrap().push((e.event_id, e.record_id));
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, [(1, 7), (3, 0)]);
        assert_eq!((summary.records, summary.lost), (2, 2));
        assert_eq!(summary.errors[0].offset, Some(4));
        assert!(
            summary.errors[0].to_string().starts_with("fwd line 4: "),
            "{}",
            summary.errors[0]
        );
        assert_eq!(summary.errors[1].offset, Some(5));
        assert!(summary.errors[1].message.contains("TimeCreated"));
    }
}
