//! Reading `.evtx` files: in parallel across files and across the chunks of each file, never
//! stopping at a damaged chunk or record.
//!
//! A file is walked chunk by chunk; each chunk (64 KiB, self-contained) is parsed on the rayon
//! pool. Whatever cannot be read is reported as a [`ReadError`] with the file and the byte
//! offset of the chunk or record, and the walk goes on with the next one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use evtx::err::EvtxError;
use evtx::{EvtxParser, ParserSettings};
use rayon::prelude::*;

use crate::winevent::WinEvent;

const FILE_HEADER_SIZE: u64 = 4096;
const CHUNK_SIZE: u64 = 65536;
const CHUNK_HEADER_SIZE: u64 = 512;
const RECORD_HEADER_SIZE: u64 = 24;

/// What part of an input could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Damage {
    /// The whole file (missing, unreadable, not EVTX).
    File,
    /// A 64 KiB chunk: its records are lost.
    Chunk,
    /// One record, or the bytes where one was expected; records lost are in
    /// [`FileSummary::lost`].
    Record,
    /// One line of newline-delimited JSON events ([`crate::jsonl`]): its record is lost.
    Line,
}

/// Something in an input that could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub path: PathBuf,
    pub damage: Damage,
    /// Byte offset in the file of the damaged part (file header, chunk or record), if known;
    /// for [`Damage::Line`], the line's number (from 1).
    pub offset: Option<u64>,
    /// What went wrong, with the chunk or record number where the parser gave one.
    pub message: String,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(line) if self.damage == Damage::Line => {
                write!(f, "{} line {line}: {}", self.path.display(), self.message)
            }
            Some(offset) => write!(
                f,
                "{} at offset {offset:#x}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ReadError {}

/// What reading one file gave, apart from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Records read and handed on.
    pub records: u64,
    /// Records the chunk headers count that could not be read (set aside).
    pub lost: u64,
    /// Chunks or records that could not be read.
    pub errors: Vec<ReadError>,
}

/// Expands files and folders into the `.evtx` files below them, sorted; a path that does not
/// exist or cannot be listed becomes an error, and the others are still returned.
pub fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<ReadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        if !path.exists() {
            errors.push(ReadError {
                path: path.clone(),
                damage: Damage::File,
                offset: None,
                message: "no such file or folder".into(),
            });
            continue;
        }
        for entry in walkdir::WalkDir::new(path).follow_links(true) {
            match entry {
                Ok(e) if e.file_type().is_file() && is_evtx(e.path()) => files.push(e.into_path()),
                Ok(_) => {}
                Err(err) => errors.push(ReadError {
                    path: err.path().unwrap_or(path).to_path_buf(),
                    damage: Damage::File,
                    offset: None,
                    message: err.to_string(),
                }),
            }
        }
    }
    files.sort();
    files.dedup();
    (files, errors)
}

fn is_evtx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("evtx"))
}

/// Reads one file, calling `on_event` for every record (from several threads at once, in no
/// particular order). Damaged parts are counted in the summary; the rest is read.
pub fn read_file<F>(path: &Path, on_event: F) -> FileSummary
where
    F: Fn(WinEvent) + Sync,
{
    let fail = |damage: Damage, offset: Option<u64>, message: String| ReadError {
        path: path.to_path_buf(),
        damage,
        offset,
        message,
    };
    let parser = match EvtxParser::from_path(path) {
        Ok(p) => p,
        Err(err) => {
            return FileSummary {
                records: 0,
                lost: 0,
                errors: vec![fail(Damage::File, Some(0), chain(&err))],
            };
        }
    };
    let mut errors = truncation(path, &parser);
    let settings = Arc::new(
        ParserSettings::new()
            .separate_json_attributes(true)
            .num_threads(1),
    );
    let parser = parser.with_configuration((*settings).clone());
    let source: Arc<Path> = Arc::from(path);

    let total = parser
        .into_chunks()
        .enumerate()
        .par_bridge()
        .map(|(index, chunk)| {
            let fallback = FILE_HEADER_SIZE + index as u64 * CHUNK_SIZE;
            match chunk {
                Ok(data) => read_chunk(data, &settings, &source, &on_event, fallback),
                Err(err) => {
                    let offset = error_offset(&err).unwrap_or(fallback);
                    ChunkOutcome {
                        errors: vec![(Damage::Chunk, offset, chain(&err))],
                        ..Default::default()
                    }
                }
            }
        })
        .reduce(ChunkOutcome::default, ChunkOutcome::merge);
    errors.extend(
        total
            .errors
            .into_iter()
            .map(|(damage, offset, message)| fail(damage, Some(offset), message)),
    );
    errors.sort_by_key(|e| e.offset);
    FileSummary {
        records: total.records,
        lost: total.lost,
        errors,
    }
}

/// What one chunk gave.
#[derive(Default)]
struct ChunkOutcome {
    records: u64,
    lost: u64,
    errors: Vec<(Damage, u64, String)>,
}

impl ChunkOutcome {
    fn merge(mut self, other: ChunkOutcome) -> ChunkOutcome {
        self.records += other.records;
        self.lost += other.lost;
        self.errors.extend(other.errors);
        self
    }
}

/// Reads the records of one chunk. Records the chunk header counts but that could not be read
/// are `lost`; a damaged spot that costs no record (the parser finds the next one) is reported
/// but loses nothing.
fn read_chunk<F>(
    mut data: evtx::EvtxChunkData,
    settings: &Arc<ParserSettings>,
    source: &Arc<Path>,
    on_event: &F,
    fallback_offset: u64,
) -> ChunkOutcome
where
    F: Fn(WinEvent) + Sync,
{
    let chunk_offset = data
        .number
        .map_or(fallback_offset, |n| FILE_HEADER_SIZE + n * CHUNK_SIZE);
    let header = &data.header;
    // A sane header says how many records the chunk holds (a record takes at least 24 bytes).
    let expected = (header.first_event_record_id <= header.last_event_record_id)
        .then(|| header.last_event_record_id - header.first_event_record_id + 1)
        .filter(|n| *n <= CHUNK_SIZE / 24);
    let mut out = ChunkOutcome::default();
    let mut chunk = match data.parse(settings.clone()) {
        Ok(chunk) => chunk,
        Err(err) => {
            out.lost = expected.unwrap_or(0);
            out.errors.push((
                Damage::Chunk,
                chunk_offset,
                format!("chunk cannot be parsed: {err}"),
            ));
            return out;
        }
    };
    let mut record_errors = 0;
    // Where the next record should start: after the chunk header, then after the last good one.
    let mut next_record = CHUNK_HEADER_SIZE;
    for record in chunk.iter() {
        let record = match record {
            Ok(r) => r,
            Err(err) => {
                let offset = error_offset(&err).unwrap_or(chunk_offset + next_record);
                out.errors.push((Damage::Record, offset, chain(&err)));
                record_errors += 1;
                continue;
            }
        };
        let start = record.binxml_offset.saturating_sub(RECORD_HEADER_SIZE);
        next_record = record.binxml_offset + u64::from(record.binxml_size) + 4;
        let offset = chunk_offset + start;
        let record_id = record.event_record_id;
        let timestamp = to_utc(record.timestamp);
        let message = match record.into_json_value() {
            Ok(json) => {
                match WinEvent::from_json(source.clone(), record_id, timestamp, json.data) {
                    Some(event) => {
                        out.records += 1;
                        on_event(event);
                        continue;
                    }
                    None => format!("record {record_id} has no Event element"),
                }
            }
            Err(err) => chain(&err),
        };
        out.errors.push((Damage::Record, offset, message));
        record_errors += 1;
    }
    out.lost = match expected {
        Some(n) => n.saturating_sub(out.records),
        None => record_errors,
    };
    out
}

/// A file that ends inside a chunk, or holds fewer chunks than its header names, lost data
/// that the parser silently stops before.
fn truncation(path: &Path, parser: &EvtxParser<std::fs::File>) -> Vec<ReadError> {
    let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
        return Vec::new();
    };
    let body = len.saturating_sub(FILE_HEADER_SIZE);
    let whole = body / CHUNK_SIZE;
    let mut errors = Vec::new();
    let at = |offset: u64, message: String| ReadError {
        path: path.to_path_buf(),
        damage: Damage::Chunk,
        offset: Some(offset),
        message,
    };
    if body % CHUNK_SIZE != 0 {
        let offset = FILE_HEADER_SIZE + whole * CHUNK_SIZE;
        errors.push(at(
            offset,
            format!(
                "file is truncated: the chunk here has {} of {CHUNK_SIZE} bytes",
                body % CHUNK_SIZE
            ),
        ));
    } else if u64::from(parser.header().chunk_count) > whole {
        let offset = FILE_HEADER_SIZE + whole * CHUNK_SIZE;
        let named = parser.header().chunk_count;
        errors.push(at(
            offset,
            format!("file is truncated: its header names {named} chunks, {whole} are present"),
        ));
    }
    errors
}

/// Reads many files in parallel; `on_file` is told when each is done.
pub fn read_files<F, D>(files: &[PathBuf], on_event: F, on_file: D) -> Vec<(PathBuf, FileSummary)>
where
    F: Fn(WinEvent) + Sync,
    D: Fn(&Path, &FileSummary) + Sync,
{
    files
        .par_iter()
        .map(|path| {
            let summary = read_file(path, &on_event);
            on_file(path, &summary);
            (path.clone(), summary)
        })
        .collect()
}

fn to_utc(ts: evtx::Timestamp) -> DateTime<Utc> {
    let nanos = ts.as_nanosecond();
    DateTime::from_timestamp_nanos(nanos.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// The byte offset the parser names for a record it could not read, if it names one.
fn error_offset(err: &EvtxError) -> Option<u64> {
    match err {
        EvtxError::FailedToReadRecordAt {
            chunk: Some(chunk),
            offset,
            ..
        } => Some(FILE_HEADER_SIZE + chunk * CHUNK_SIZE + offset),
        EvtxError::FailedToParseChunk { chunk_id, .. } => {
            Some(FILE_HEADER_SIZE + chunk_id * CHUNK_SIZE)
        }
        _ => None,
    }
}

/// The error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
