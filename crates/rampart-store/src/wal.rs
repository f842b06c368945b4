//! The write-ahead log: numbered records in segment files, each record checksummed.
//!
//! A segment is `wal/<first sequence number, 20 digits>.wal`, a run of records:
//!
//! ```text
//! length u32 LE | crc32 u32 LE (of sequence number and payload) | sequence number u64 LE | payload
//! ```
//!
//! Records are only ever appended to the newest (active) segment, and every write is followed
//! by `fdatasync` before anyone is told it is durable. A flush starts a new segment, so the
//! segments it covers can be deleted whole once the manifest says their records are in Parquet.
//! Recovery reads the segments in order and stops a segment at the first record that is
//! incomplete or fails its checksum (a write torn by a crash: never acknowledged), truncating it
//! there.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::{StoreError, TornRecord, io_err, sync_dir};

const HEADER_BYTES: u64 = 16;
const EXTENSION: &str = "wal";
/// Small records are gathered into one `write`; payloads this large go straight through.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// The log: the active segment and the older ones still on disk.
pub(crate) struct Wal {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_first: u64,
    active_bytes: u64,
    next_seq: u64,
    /// Older segments, oldest first: (first sequence number, path, bytes).
    sealed: Vec<(u64, PathBuf, u64)>,
    buf: Vec<u8>,
    /// Group commits and records written since open (for statistics).
    pub(crate) commits: u64,
    pub(crate) records: u64,
}

/// What reading the log at open found, besides the records handed on.
pub(crate) struct Opened {
    pub(crate) wal: Wal,
    pub(crate) torn: Vec<TornRecord>,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{EXTENSION}")
}

fn segment_seq(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let is_segment = path.extension().is_some_and(|e| e == EXTENSION)
        && stem.len() == 20
        && stem.bytes().all(|b| b.is_ascii_digit());
    if is_segment { stem.parse().ok() } else { None }
}

/// The log's segments in order: (first sequence number, path).
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        if let Some(seq) = segment_seq(&path) {
            segments.push((seq, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Whether segment `i` holds only records at or below `covered` (the next one starts at or
/// below `covered + 1`): no need to read it.
fn wholly_covered(segments: &[(u64, PathBuf)], i: usize, covered: u64) -> bool {
    segments
        .get(i + 1)
        .is_some_and(|(next, _)| next.saturating_sub(1) <= covered)
}

/// Reads the records after `covered` without changing anything: for a reader beside a live
/// writer, whose last record may be half written (it is skipped, not truncated).
pub(crate) fn read_only(
    dir: &Path,
    covered: u64,
    mut on_record: impl FnMut(u64, &[u8]),
) -> Result<(), StoreError> {
    let segments = list_segments(dir)?;
    let mut last_seq = covered;
    for (i, (_, path)) in segments.iter().enumerate() {
        if wholly_covered(&segments, i, covered) {
            continue;
        }
        match read_segment(path, &mut last_seq, covered, &mut on_record) {
            Ok(_) => {}
            // Trimmed by the writer since it was listed: its records are in Parquet now. The
            // caller sees the manifest change and reads again.
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens the log in `dir`: reads every segment in order and hands each valid record whose
/// sequence number is above `covered` to `on_record` (records at or below it are already in
/// Parquet). A torn tail is truncated and reported. Segments wholly covered are deleted. New
/// records go to a fresh segment.
pub(crate) fn open(
    dir: &Path,
    covered: u64,
    mut on_record: impl FnMut(u64, &[u8]),
) -> Result<Opened, StoreError> {
    let segments = list_segments(dir)?;
    let mut torn = Vec::new();
    let mut last_seq = covered;
    let mut kept = Vec::new();
    for (i, (first, path)) in segments.iter().enumerate() {
        if wholly_covered(&segments, i, covered) {
            remove(path)?;
            continue;
        }
        let (valid_bytes, tail) = read_segment(path, &mut last_seq, covered, &mut on_record)?;
        if let Some(record) = tail {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| io_err(path, e))?;
            file.set_len(valid_bytes).map_err(|e| io_err(path, e))?;
            file.sync_all().map_err(|e| io_err(path, e))?;
            torn.push(record);
        }
        if valid_bytes == 0 {
            remove(path)?;
        } else {
            kept.push((*first, path.clone(), valid_bytes));
        }
    }
    let next_seq = last_seq + 1;
    let active_path = dir.join(segment_name(next_seq));
    let active = create_segment(&active_path)?;
    sync_dir(dir)?;
    Ok(Opened {
        wal: Wal {
            dir: dir.to_path_buf(),
            active,
            active_path,
            active_first: next_seq,
            active_bytes: 0,
            next_seq,
            sealed: kept,
            buf: Vec::new(),
            commits: 0,
            records: 0,
        },
        torn,
    })
}

fn create_segment(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io_err(path, e))
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path, e)),
        _ => Ok(()),
    }
}

/// Reads one segment; returns the length of its valid prefix and, if the rest is not a valid
/// record, what was found there.
fn read_segment(
    path: &Path,
    last_seq: &mut u64,
    covered: u64,
    on_record: &mut impl FnMut(u64, &[u8]),
) -> Result<(u64, Option<TornRecord>), StoreError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut reader = BufReader::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut offset = 0u64;
    let mut payload = Vec::new();
    let torn = |offset: u64, reason: &str| TornRecord {
        path: path.to_path_buf(),
        offset,
        dropped_bytes: len - offset,
        reason: reason.to_string(),
    };
    while offset < len {
        if len - offset < HEADER_BYTES {
            return Ok((offset, Some(torn(offset, "incomplete record header"))));
        }
        let mut header = [0u8; HEADER_BYTES as usize];
        reader
            .read_exact(&mut header)
            .map_err(|e| io_err(path, e))?;
        let (length, rest) = header.split_at(4);
        let (crc, seq) = rest.split_at(4);
        let length = u64::from(u32::from_le_bytes(to_array(length)));
        let crc = u32::from_le_bytes(to_array(crc));
        let seq = u64::from_le_bytes(to_array(seq));
        if length > len - offset - HEADER_BYTES {
            return Ok((
                offset,
                Some(torn(offset, "record runs past the end of the file")),
            ));
        }
        payload.resize(length as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| io_err(path, e))?;
        if checksum(seq, &payload) != crc {
            return Ok((offset, Some(torn(offset, "checksum mismatch"))));
        }
        // Numbers only grow; a smaller one is stale bytes, not a record of this log.
        if seq <= *last_seq && seq > covered {
            return Ok((offset, Some(torn(offset, "sequence number out of order"))));
        }
        if seq > covered {
            on_record(seq, &payload);
            *last_seq = seq;
        }
        offset += HEADER_BYTES + length;
    }
    Ok((offset, None))
}

fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(bytes);
    a
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

impl Wal {
    /// Appends the payloads as consecutive records in one write and one `fdatasync`; returns
    /// the sequence number of the first. After an error the log's tail is unknown: the caller
    /// must stop writing.
    pub(crate) fn write(&mut self, payloads: &[&[u8]]) -> Result<u64, StoreError> {
        let first = self.next_seq;
        let mut written = 0u64;
        self.buf.clear();
        for (i, payload) in payloads.iter().enumerate() {
            let seq = first + i as u64;
            let length = u32::try_from(payload.len()).map_err(|_| StoreError::BatchTooLarge {
                bytes: payload.len(),
                limit: u32::MAX as usize,
            })?;
            self.buf.extend_from_slice(&length.to_le_bytes());
            self.buf
                .extend_from_slice(&checksum(seq, payload).to_le_bytes());
            self.buf.extend_from_slice(&seq.to_le_bytes());
            // Large payloads are written from where they are rather than copied.
            if payload.len() >= WRITE_BUFFER_BYTES {
                self.active
                    .write_all(&self.buf)
                    .and_then(|()| self.active.write_all(payload))
                    .map_err(|e| io_err(&self.active_path, e))?;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(payload);
            }
            written += HEADER_BYTES + payload.len() as u64;
        }
        self.active
            .write_all(&self.buf)
            .and_then(|()| self.active.sync_data())
            .map_err(|e| io_err(&self.active_path, e))?;
        self.next_seq += payloads.len() as u64;
        self.active_bytes += written;
        self.commits += 1;
        self.records += payloads.len() as u64;
        Ok(first)
    }

    /// Starts a new segment, so that everything written so far can be deleted once it is in
    /// Parquet. Nothing to do when the active segment is empty.
    pub(crate) fn rotate(&mut self) -> Result<(), StoreError> {
        if self.active_bytes == 0 {
            return Ok(());
        }
        let path = self.dir.join(segment_name(self.next_seq));
        let file = create_segment(&path)?;
        sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut self.active, file);
        drop(old);
        let old_path = std::mem::replace(&mut self.active_path, path);
        self.sealed
            .push((self.active_first, old_path, self.active_bytes));
        self.active_first = self.next_seq;
        self.active_bytes = 0;
        Ok(())
    }

    /// Deletes the sealed segments whose records all have sequence numbers at or below
    /// `covered`.
    pub(crate) fn trim(&mut self, covered: u64) -> Result<(), StoreError> {
        let mut keep = Vec::new();
        let firsts: Vec<u64> = self
            .sealed
            .iter()
            .map(|s| s.0)
            .skip(1)
            .chain([self.active_first])
            .collect();
        for (segment, next_first) in std::mem::take(&mut self.sealed).into_iter().zip(firsts) {
            if next_first.saturating_sub(1) <= covered {
                remove(&segment.1)?;
            } else {
                keep.push(segment);
            }
        }
        self.sealed = keep;
        Ok(())
    }

    /// The sequence number of the last record written (or covered when opened).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Bytes of log on disk.
    pub(crate) fn bytes(&self) -> u64 {
        self.active_bytes + self.sealed.iter().map(|s| s.2).sum::<u64>()
    }

    /// Segment files on disk, oldest first (the active one last).
    #[cfg(test)]
    pub(crate) fn segments(&self) -> Vec<PathBuf> {
        self.sealed
            .iter()
            .map(|s| s.1.clone())
            .chain([self.active_path.clone()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rampart-wal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_all(dir: &Path, covered: u64) -> (Vec<(u64, Vec<u8>)>, Opened) {
        let mut got = Vec::new();
        let opened = open(dir, covered, |seq, p| got.push((seq, p.to_vec()))).unwrap();
        (got, opened)
    }

    #[test]
    fn records_come_back_in_order_after_reopen() {
        let dir = scratch("order");
        let (got, mut o) = read_all(&dir, 0);
        assert!(got.is_empty());
        assert_eq!(o.wal.write(&[b"one", b"two"]).unwrap(), 1);
        assert_eq!(o.wal.write(&[b"three"]).unwrap(), 3);
        drop(o);
        let (got, o) = read_all(&dir, 0);
        assert_eq!(
            got,
            vec![
                (1, b"one".to_vec()),
                (2, b"two".to_vec()),
                (3, b"three".to_vec())
            ]
        );
        assert!(o.torn.is_empty());
        drop(o);
        // Records at or below the covered number are not handed on again.
        let (got, _) = read_all(&dir, 2);
        assert_eq!(got, vec![(3, b"three".to_vec())]);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_reported() {
        let dir = scratch("torn");
        let (_, mut o) = read_all(&dir, 0);
        o.wal.write(&[b"kept"]).unwrap();
        o.wal.write(&[b"lost in the crash"]).unwrap();
        let path = o.wal.segments().pop().unwrap();
        drop(o);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let (got, o) = read_all(&dir, 0);
        assert_eq!(got, vec![(1, b"kept".to_vec())]);
        assert_eq!(o.torn.len(), 1);
        assert_eq!(o.torn[0].offset, HEADER_BYTES + 4);
        assert_eq!(o.torn[0].reason, "record runs past the end of the file");
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            HEADER_BYTES + 4,
            "truncated"
        );
        drop(o);
        // A flipped byte fails the checksum.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES as usize] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (got, o) = read_all(&dir, 0);
        assert!(got.is_empty());
        assert_eq!(o.torn[0].reason, "checksum mismatch");
        assert_eq!(o.torn[0].offset, 0);
    }

    #[test]
    fn rotation_and_trim_delete_covered_segments_only() {
        let dir = scratch("trim");
        let (_, mut o) = read_all(&dir, 0);
        o.wal.write(&[b"a", b"b"]).unwrap();
        o.wal.rotate().unwrap();
        o.wal.rotate().unwrap(); // empty active segment: nothing to do
        o.wal.write(&[b"c"]).unwrap();
        assert_eq!(o.wal.segments().len(), 2);
        o.wal.trim(1).unwrap();
        assert_eq!(o.wal.segments().len(), 2, "seq 2 is not covered yet");
        o.wal.trim(2).unwrap();
        assert_eq!(o.wal.segments().len(), 1);
        drop(o);
        let (got, _) = read_all(&dir, 2);
        assert_eq!(got, vec![(3, b"c".to_vec())]);
    }
}
