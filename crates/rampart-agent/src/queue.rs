//! The agent's durable on-disk queue: recorded events wait here (across restarts, `kill -9` and
//! server outages of hours) until the server confirmed it stored them.
//!
//! Every record gets a run of sequence numbers (as many as the pusher says it holds: the agent
//! pushes compressed blocks of rows, one number per row), strictly increasing over the life of
//! the queue and never reused (not after drops, not after a torn tail is cut off); the server
//! uses them to discard rows it already stored. Counts of records — pending, dropped — are
//! counts of sequence numbers. The queue is bounded on disk: when an append would push the segment
//! files past [`QueueLimits::max_bytes`], the oldest segment is dropped first and every
//! unacknowledged record in it is counted, in counters persisted with the acknowledgement
//! cursor, so loss is never silent.
//!
//! # On-disk format (one directory)
//! - `NNNNNNNNNNNNNNNNNNNN.seg` (20 digits: the first sequence number it holds): a 32-byte
//!   header (`RMPQSEG2`, first seq, `gap_before`, reserved, CRC32) then records whose sequence
//!   numbers follow on, each `crc32 u32 | len u32 | seq u64 | count u32 | reserved u32 |
//!   payload` (little endian; the record holds `seq .. seq + count`; the CRC covers everything
//!   after itself). `gap_before` counts the sequence numbers skipped (and already accounted for)
//!   between the previous segment's last record and this one's first. Segments of the first
//!   format (`RMPQSEG1`, records `crc32 | len | seq | payload` of one number each), left by an
//!   earlier agent, are read and delivered; new records always go into a new-format segment.
//! - `cursor`: two 64-byte slots at offsets 0 and 512, each `RQC1 | crc32 | generation |
//!   acknowledged seq | dropped records | dropped bytes | sequence floor | last counted cut`.
//!   An update overwrites the older slot in place and `fdatasync`s it (one sync, no metadata
//!   change); the valid slot with the highest generation wins, so a torn update leaves the
//!   previous state. Created with temp file + rename + fsync of the directory.
//! - `lock`: an empty file held with `flock` by the single owner.
//!
//! # Durability and bounds
//! [`Queue::push`] only copies into a 256 KiB buffer; [`Queue::flush`] writes and `fdatasync`s.
//! Records [`Queue::peek`] returns are always durable first (peek flushes when it reaches
//! records that are not), so a sequence number the server may have seen is never handed out
//! again after a crash. The sum of the segment files' sizes (buffered bytes included) never
//! exceeds `max_bytes`; the directory holds besides only `cursor` (576 bytes), while it is
//! created `cursor.tmp` (576 bytes), and the empty `lock`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of the header at the start of every segment file.
pub const SEGMENT_HEADER_BYTES: u64 = 32;
/// Bytes of framing in front of every record's payload.
pub const RECORD_HEADER_BYTES: u64 = 24;
/// The most sequence numbers one record can hold.
pub const MAX_RECORD_COUNT: u32 = 1 << 16;

const HDR: u64 = SEGMENT_HEADER_BYTES;
const REC: u64 = RECORD_HEADER_BYTES;
/// Record framing of the first format, one sequence number per record.
const REC_V1: u64 = 16;
const SEG_MAGIC: &[u8; 8] = b"RMPQSEG2";
const SEG_MAGIC_V1: &[u8; 8] = b"RMPQSEG1";
const CURSOR_MAGIC: &[u8; 4] = b"RQC1";
const CURSOR_BYTES: usize = 64;
/// Offset of the second cursor slot (another disk sector than the first).
const CURSOR_SLOT: u64 = 512;
/// Size of the cursor file.
pub const CURSOR_FILE_BYTES: u64 = CURSOR_SLOT + CURSOR_BYTES as u64;
const CURSOR_FILE: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";
const LOCK_FILE: &str = "lock";
const SEG_SUFFIX: &str = ".seg";
/// Pushed records are written out once this much is buffered (and at every flush).
const WRITE_BUFFER: usize = 256 * 1024;
/// Reads from segment files are done in chunks of (at least) this size.
const READ_CHUNK: usize = 256 * 1024;
const MIN_SEGMENT_BYTES: u64 = 4096;

/// Size limits of a [`Queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueLimits {
    /// Bound of the segment files' total size (default 1 GiB). Must be at least twice
    /// `segment_bytes`.
    pub max_bytes: u64,
    /// Size of one segment file (default 8 MiB), the unit in which the queue drops when full.
    /// At least 4 KiB. A record's payload can be at most `segment_bytes - 56` bytes.
    pub segment_bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_bytes: 1 << 30,
            segment_bytes: 8 << 20,
        }
    }
}

impl QueueLimits {
    /// Limits bounded by `max_bytes`, with segments of 8 MiB, or an eighth of `max_bytes` when
    /// that is smaller (at least 4 KiB), so that a small bound still drops in small steps.
    pub fn with_max_bytes(max_bytes: u64) -> QueueLimits {
        QueueLimits {
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT_BYTES, 8 << 20),
        }
    }

    /// The largest payload [`Queue::push`] accepts: what fits in an otherwise empty segment.
    pub fn max_record_bytes(&self) -> usize {
        let max = self
            .segment_bytes
            .saturating_sub(HDR + REC)
            .min(u64::from(u32::MAX));
        usize::try_from(max).unwrap_or(usize::MAX)
    }

    fn validate(&self) -> Result<(), QueueError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(QueueError::InvalidLimits(format!(
                "segment_bytes = {} is below the minimum of {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        if self.max_bytes / 2 < self.segment_bytes {
            return Err(QueueError::InvalidLimits(format!(
                "max_bytes = {} must be at least twice segment_bytes = {}",
                self.max_bytes, self.segment_bytes
            )));
        }
        Ok(())
    }
}

/// One record handed out by [`Queue::peek`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The first of the record's sequence numbers.
    pub seq: u64,
    /// How many it holds.
    pub count: u32,
    pub data: Vec<u8>,
}

/// Counters of a [`Queue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStats {
    /// Sequence numbers pushed and not yet acknowledged (those of a corrupt region not yet
    /// reached by the acknowledgements are still included).
    pub records: u64,
    /// Total size of the segment files, bytes still buffered included.
    pub bytes: u64,
    /// Sequence numbers lost since the queue was created: dropped when full, cut off as torn or
    /// corrupt. Persisted.
    pub dropped_records: u64,
    /// On-disk bytes (framing included) of those records. Persisted.
    pub dropped_bytes: u64,
    /// The sequence number the next pushed record will get.
    pub next_seq: u64,
}

/// What [`Queue::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records lost in this recovery (torn or corrupt tail, missing segment files), already
    /// added to [`QueueStats::dropped_records`].
    pub dropped_records: u64,
    /// Bytes cut off with them.
    pub dropped_bytes: u64,
    /// The segment file that was cut, and the offset it was cut at.
    pub truncated: Option<(PathBuf, u64)>,
    /// The cursor file was missing or corrupt: acknowledgements restart at the oldest segment
    /// (the server discards what it already has) and the drop counters restart from zero.
    pub cursor_reset: bool,
}

/// Errors of the queue. Messages name the file and, where it matters, the offset.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue: I/O error on {}{}: {source}", path.display(), at_offset(offset))]
    Io {
        path: PathBuf,
        offset: Option<u64>,
        source: io::Error,
    },
    #[error(
        "queue: record of {len} bytes refused: with segment_bytes = {segment_bytes} a record holds at most {max} bytes"
    )]
    RecordTooLarge {
        len: usize,
        max: usize,
        segment_bytes: u64,
    },
    #[error("queue: a record holds 1 to {MAX_RECORD_COUNT} sequence numbers, not {0}")]
    InvalidCount(u32),
    #[error("queue: invalid limits: {0}")]
    InvalidLimits(String),
    #[error("queue: directory {} is in use by another process (lock on {})", dir.display(), dir.join(LOCK_FILE).display())]
    Locked { dir: PathBuf },
    #[error(
        "queue: cannot acknowledge sequence {seq}: the next sequence to be assigned is {next_seq}"
    )]
    AckBeyondEnd { seq: u64, next_seq: u64 },
    #[error("queue: a {need}-byte append does not fit in max_bytes = {max_bytes} in {}", dir.display())]
    Full {
        dir: PathBuf,
        need: u64,
        max_bytes: u64,
    },
}

fn at_offset(offset: &Option<u64>) -> String {
    match offset {
        Some(o) => format!(" at offset {o}"),
        None => String::new(),
    }
}

fn io_err(path: &Path, offset: Option<u64>, source: io::Error) -> QueueError {
    QueueError::Io {
        path: path.to_path_buf(),
        offset,
        source,
    }
}

/// The durable queue. Single owner (the directory is locked); the agent wraps it in a `Mutex`.
pub struct Queue {
    dir: PathBuf,
    dir_file: File,
    _lock: File,
    limits: QueueLimits,
    max_record: usize,
    /// Oldest first; the last one is the tail being appended to. Never empty.
    segs: VecDeque<Seg>,
    total_bytes: u64,
    next_seq: u64,
    // Writer (tail segment).
    wfile: File,
    /// Bytes of the tail file written out.
    written: u64,
    /// Bytes of the tail file known durable.
    synced: u64,
    wbuf: Vec<u8>,
    /// When the oldest record not yet durable was pushed.
    unsynced_since: Option<Instant>,
    /// A segment file was created since the directory was last fsynced.
    dir_dirty: bool,
    // Reader.
    /// First unacknowledged position, always in `segs[0]`.
    head: Pos,
    cursor: Cursor,
    cfile: CursorFile,
    peek_end: Option<PeekEnd>,
    rc: ReadCache,
    recovery: Recovery,
    warned_full: bool,
}

#[derive(Debug)]
struct Seg {
    first: u64,
    gap_before: u64,
    /// File size; for the tail, bytes written plus bytes still buffered.
    bytes: u64,
    /// Offset of the first unreadable record of a (non-tail) segment: reading stops there.
    cut: Option<u64>,
    /// Written by an earlier agent in the first format (never the tail appended to).
    v1: bool,
}

#[derive(Debug, Clone, Copy)]
struct Pos {
    off: u64,
    /// Sequence number of the record at `off`.
    seq: u64,
}

/// Where the last non-empty peek stopped, so that acknowledging it needs no re-read.
#[derive(Debug, Clone, Copy)]
struct PeekEnd {
    seg: u64,
    off: u64,
    seq: u64,
    /// The last sequence number of the last record handed out.
    last: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    /// Every record with seq <= acked is delivered or counted as dropped.
    acked: u64,
    dropped_records: u64,
    dropped_bytes: u64,
    /// The next sequence number is at least this (set when records are cut off at recovery).
    seq_floor: u64,
    /// The last cut counted at recovery (segment, offset): a crash before the file is truncated
    /// must not count it twice.
    cut_seg: u64,
    cut_off: u64,
}

impl Cursor {
    fn encode(&self, generation: u64) -> [u8; CURSOR_BYTES] {
        let mut b = [0u8; CURSOR_BYTES];
        b[0..4].copy_from_slice(CURSOR_MAGIC);
        let fields = [
            generation,
            self.acked,
            self.dropped_records,
            self.dropped_bytes,
            self.seq_floor,
            self.cut_seg,
            self.cut_off,
        ];
        for (k, v) in fields.iter().enumerate() {
            b[8 + 8 * k..16 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[8..]);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// (generation, cursor) of a valid slot.
    fn decode(b: &[u8]) -> Option<(u64, Cursor)> {
        if b.len() < CURSOR_BYTES || &b[0..4] != CURSOR_MAGIC {
            return None;
        }
        if crc32fast::hash(&b[8..CURSOR_BYTES]) != le_u32(b, 4) {
            return None;
        }
        Some((
            le_u64(b, 8),
            Cursor {
                acked: le_u64(b, 16),
                dropped_records: le_u64(b, 24),
                dropped_bytes: le_u64(b, 32),
                seq_floor: le_u64(b, 40),
                cut_seg: le_u64(b, 48),
                cut_off: le_u64(b, 56),
            },
        ))
    }

    /// The newest valid slot of a cursor file's contents: its generation and cursor, and the
    /// slot's offset.
    fn decode_file(b: &[u8]) -> Option<(u64, Cursor, u64)> {
        let with = |off: u64| move |(g, c)| (g, c, off);
        let a = Cursor::decode(b).map(with(0));
        let b = b
            .get(CURSOR_SLOT as usize..)
            .and_then(Cursor::decode)
            .map(with(CURSOR_SLOT));
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// The open cursor file and the generation of its newest slot.
struct CursorFile {
    file: File,
    path: PathBuf,
    generation: u64,
    /// The slot of the newest durable store, never overwritten until a newer one is durable:
    /// a machine that crashes finds it whatever became of later stores.
    durable_slot: u64,
    /// A store since the last durable one was not made durable.
    lazy: bool,
}

impl CursorFile {
    /// Creates (replaces) the cursor file atomically: temp file, fdatasync, rename, fsync of the
    /// directory.
    fn create(dir: &Path, dir_file: &File, c: &Cursor) -> Result<CursorFile, QueueError> {
        let tmp = dir.join(CURSOR_TMP);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, None, e))?;
        let mut b = vec![0u8; CURSOR_FILE_BYTES as usize];
        b[..CURSOR_BYTES].copy_from_slice(&c.encode(1));
        f.write_all_at(&b, 0)
            .map_err(|e| io_err(&tmp, Some(0), e))?;
        f.sync_data().map_err(|e| io_err(&tmp, None, e))?;
        let path = dir.join(CURSOR_FILE);
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, None, e))?;
        sync_dir(dir, dir_file)?;
        Ok(CursorFile {
            file: f,
            path,
            generation: 1,
            durable_slot: 0,
            lazy: false,
        })
    }

    /// Stores `c` durably: writes the slot the last durable store is not in, and fdatasyncs.
    fn store(&mut self, c: &Cursor) -> Result<(), QueueError> {
        self.durable_slot = self.write(c)?;
        self.lazy = false;
        self.sync()
    }

    /// Stores `c` without waiting for the disk: it outlives the agent, not always the machine,
    /// which may then find the last durable store. Only for acknowledgements, which a crash may
    /// undo (the server skips rows it already stored), never for counts or for removing
    /// segments.
    fn store_lazily(&mut self, c: &Cursor) -> Result<(), QueueError> {
        self.lazy = true;
        self.write(c).map(|_| ())
    }

    /// Writes `c` as the next generation into the slot the last durable store is not in;
    /// returns that slot.
    fn write(&mut self, c: &Cursor) -> Result<u64, QueueError> {
        let generation = self.generation + 1;
        let off = if self.durable_slot == 0 {
            CURSOR_SLOT
        } else {
            0
        };
        self.file
            .write_all_at(&c.encode(generation), off)
            .map_err(|e| io_err(&self.path, Some(off), e))?;
        self.generation = generation;
        Ok(off)
    }

    fn sync(&mut self) -> Result<(), QueueError> {
        self.file
            .sync_data()
            .map_err(|e| io_err(&self.path, None, e))
    }
}

/// A new segment's header (always the current format).
fn encode_seg_header(first: u64, gap_before: u64) -> [u8; HDR as usize] {
    let mut b = [0u8; HDR as usize];
    b[0..8].copy_from_slice(SEG_MAGIC);
    b[8..16].copy_from_slice(&first.to_le_bytes());
    b[16..24].copy_from_slice(&gap_before.to_le_bytes());
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// (first seq, gap_before, first format) of a valid segment header.
fn decode_seg_header(b: &[u8]) -> Option<(u64, u64, bool)> {
    if b.len() < HDR as usize || crc32fast::hash(&b[..28]) != le_u32(b, 28) {
        return None;
    }
    let v1 = match &b[0..8] {
        m if m == SEG_MAGIC => false,
        m if m == SEG_MAGIC_V1 => true,
        _ => return None,
    };
    Some((le_u64(b, 8), le_u64(b, 16), v1))
}

/// The record header at `at` of `b` (which holds at least its framing): (payload length, first
/// sequence number, count). `None` when the count is out of range.
fn record_header(b: &[u8], at: usize, v1: bool) -> Option<(u32, u64, u32)> {
    let (len, seq) = (le_u32(b, at + 4), le_u64(b, at + 8));
    if v1 {
        return Some((len, seq, 1));
    }
    let count = le_u32(b, at + 16);
    (1..=MAX_RECORD_COUNT)
        .contains(&count)
        .then_some((len, seq, count))
}

/// Little-endian u32 at `at`; callers guarantee `at + 4 <= b.len()`.
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | (u64::from(le_u32(b, at + 4)) << 32)
}

fn seg_name(first: u64) -> String {
    format!("{first:020}{SEG_SUFFIX}")
}

fn parse_seg_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEG_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // Far beyond any real queue: refused so that sequence arithmetic can never overflow.
    digits.parse().ok().filter(|&f: &u64| f < 1 << 62)
}

/// Counts the records lost in `region` (the bytes of a segment from its first unreadable record
/// on, whose expected sequence number is `bad_seq`): looks for intact records further on, so
/// that even when a length field is damaged the sequence numbers after it are known and never
/// reused. At least 1 for a non-empty region. `v1`: the segment is of the first format.
fn count_lost(region: &[u8], bad_seq: u64, v1: bool) -> u64 {
    if region.is_empty() {
        return 0;
    }
    let (rec, per_record) = if v1 {
        (REC_V1 as usize, 1)
    } else {
        (REC as usize, u64::from(MAX_RECORD_COUNT))
    };
    // Every record takes at least `rec` bytes: no sequence number beyond this fits in the region.
    let max_seq = bad_seq.saturating_add(((region.len() / rec) as u64 + 1) * per_record);
    let mut upto = bad_seq; // exclusive end of the sequence numbers seen
    let mut pos = 0usize;
    let mut last_end = 0usize;
    while pos + rec <= region.len() {
        let Some((len, seq, count)) = record_header(region, pos, v1) else {
            pos += 1;
            continue;
        };
        let len = len as usize;
        if seq >= upto && seq < max_seq && len <= region.len() - pos - rec {
            let end = pos + rec + len;
            if crc32fast::hash(&region[pos + 4..end]) == le_u32(region, pos) {
                upto = seq + u64::from(count);
                pos = end;
                last_end = end;
                continue;
            }
        }
        pos += 1;
    }
    // Bytes after the last intact record: one record, torn or damaged. Torn (its header whole,
    // its payload cut short), it held as many numbers as the header says; else one is counted
    // (a damaged count is not believed).
    let trailing = match region.len().checked_sub(last_end) {
        Some(0) | None => 0,
        Some(left) if left >= rec => match record_header(region, last_end, v1) {
            Some((len, seq, count)) if seq == upto && rec + len as usize > left => u64::from(count),
            _ => 1,
        },
        Some(_) => 1,
    };
    (upto - bad_seq + trailing).max(1)
}

/// A chunk of one segment file kept in memory, so that consecutive records cost no syscall.
struct ReadCache {
    seg: Option<u64>,
    file: Option<File>,
    path: PathBuf,
    buf: Vec<u8>,
    buf_off: u64,
}

enum Rec {
    Ok {
        frame: u64,
        start: usize,
        len: usize,
        count: u32,
    },
    Bad(String),
}

impl ReadCache {
    fn new() -> Self {
        ReadCache {
            seg: None,
            file: None,
            path: PathBuf::new(),
            buf: Vec::new(),
            buf_off: 0,
        }
    }

    fn reset(&mut self) {
        self.seg = None;
        self.file = None;
        self.buf.clear();
        self.buf_off = 0;
    }

    fn forget(&mut self, seg: u64) {
        if self.seg == Some(seg) {
            self.reset();
        }
    }

    /// Index in `self.buf` of bytes `[off, off + len)` of segment `seg`, if they lie below `end`
    /// and the file has them.
    fn get(
        &mut self,
        dir: &Path,
        seg: u64,
        off: u64,
        len: usize,
        end: u64,
    ) -> Result<Option<usize>, QueueError> {
        let stop = match off.checked_add(len as u64) {
            Some(s) if s <= end => s,
            _ => return Ok(None),
        };
        if self.seg != Some(seg) || self.file.is_none() {
            self.reset();
            let path = dir.join(seg_name(seg));
            let file = File::open(&path).map_err(|e| io_err(&path, None, e))?;
            self.file = Some(file);
            self.path = path;
            self.seg = Some(seg);
        }
        let buf_end = self.buf_off + self.buf.len() as u64;
        if off >= self.buf_off && stop <= buf_end {
            return Ok(Some((off - self.buf_off) as usize));
        }
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let mut want = (len.max(READ_CHUNK) as u64).min(end - off) as usize;
        loop {
            self.buf.resize(want, 0);
            self.buf_off = off;
            match file.read_exact_at(&mut self.buf, off) {
                Ok(()) => return Ok(Some(0)),
                // The file is shorter than expected: try the exact range, else it is missing.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.buf.clear();
                    if want == len {
                        return Ok(None);
                    }
                    want = len;
                }
                Err(e) => {
                    self.buf.clear();
                    return Err(io_err(&self.path, Some(off), e));
                }
            }
        }
    }

    /// The record at `off` of segment `seg` (of the first format if `v1`), expected to start
    /// at sequence number `expected`.
    fn record(
        &mut self,
        dir: &Path,
        (seg, v1): (u64, bool),
        off: u64,
        end: u64,
        expected: u64,
    ) -> Result<Rec, QueueError> {
        let rec = if v1 { REC_V1 } else { REC };
        let Some(h) = self.get(dir, seg, off, rec as usize, end)? else {
            return Ok(Rec::Bad(format!(
                "{} bytes left, less than a record header",
                end.saturating_sub(off)
            )));
        };
        let Some((len, _, count)) = record_header(&self.buf, h, v1) else {
            return Ok(Rec::Bad(format!(
                "a record count of {} is out of range",
                le_u32(&self.buf, h + 16)
            )));
        };
        let frame = rec + u64::from(len);
        if off.saturating_add(frame) > end {
            return Ok(Rec::Bad(format!(
                "record length {len} runs past the end of the data at offset {end}"
            )));
        }
        let Some(s) = self.get(dir, seg, off, frame as usize, end)? else {
            return Ok(Rec::Bad("the file is shorter than expected".to_string()));
        };
        let bytes = &self.buf[s..s + frame as usize];
        let stored = le_u32(bytes, 0);
        let computed = crc32fast::hash(&bytes[4..]);
        if stored != computed {
            return Ok(Rec::Bad(format!(
                "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            )));
        }
        let seq = le_u64(bytes, 8);
        if seq != expected {
            return Ok(Rec::Bad(format!(
                "sequence number {seq} where {expected} was expected"
            )));
        }
        Ok(Rec::Ok {
            frame,
            start: s + rec as usize,
            len: len as usize,
            count,
        })
    }

    /// Walks intact records from `off`; returns (end of the last intact one, how many sequence
    /// numbers they hold).
    fn scan(
        &mut self,
        dir: &Path,
        seg: (u64, bool),
        mut off: u64,
        end: u64,
        first: u64,
    ) -> Result<(u64, u64), QueueError> {
        let mut seq = first;
        while off < end {
            match self.record(dir, seg, off, end, seq)? {
                Rec::Ok { frame, count, .. } => {
                    off += frame;
                    seq = seq.saturating_add(u64::from(count));
                }
                Rec::Bad(_) => break,
            }
        }
        Ok((off, seq - first))
    }
}

fn sync_dir(dir: &Path, dir_file: &File) -> Result<(), QueueError> {
    dir_file.sync_all().map_err(|e| io_err(dir, None, e))
}

enum CursorRead {
    Ok(CursorFile, Cursor),
    Missing,
    Corrupt,
}

fn load_cursor(dir: &Path) -> Result<CursorRead, QueueError> {
    let path = dir.join(CURSOR_FILE);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(CursorRead::Missing),
        Err(e) => return Err(io_err(&path, None, e)),
    };
    let mut b = vec![0u8; CURSOR_FILE_BYTES as usize];
    let mut n = 0;
    while n < b.len() {
        match file.read_at(&mut b[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(&path, Some(n as u64), e)),
        }
    }
    b.truncate(n);
    Ok(match Cursor::decode_file(&b) {
        Some((generation, c, slot)) => {
            // What was read may not be on the disk yet (stored lazily before the agent
            // stopped): it is made durable before it counts as such.
            file.sync_data().map_err(|e| io_err(&path, None, e))?;
            CursorRead::Ok(
                CursorFile {
                    file,
                    path,
                    generation,
                    durable_slot: slot,
                    lazy: false,
                },
                c,
            )
        }
        None => CursorRead::Corrupt,
    })
}

fn lock_dir(dir: &Path) -> Result<File, QueueError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err(&path, None, e))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(QueueError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        return Err(io_err(&path, None, e));
    }
    Ok(f)
}

/// Creates a segment file and writes its header (not yet durable).
fn create_segment(dir: &Path, first: u64, gap_before: u64) -> Result<File, QueueError> {
    let path = dir.join(seg_name(first));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err(&path, None, e))?;
    f.write_all_at(&encode_seg_header(first, gap_before), 0)
        .map_err(|e| io_err(&path, Some(0), e))?;
    Ok(f)
}

fn remove_file_logged(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "queue: cannot delete consumed segment {}: {e} (retried at the next open)",
            path.display()
        ),
    }
}

impl Queue {
    /// Opens (creating) the queue in `dir`; recovers after a crash: a torn or corrupt tail record
    /// is cut off (counted as dropped, reported in [`Queue::recovery`] and the stats), everything
    /// before it kept, and the sequence numbers it held are never reused.
    pub fn open(dir: &Path, limits: QueueLimits) -> Result<Queue, QueueError> {
        limits.validate()?;
        fs::create_dir_all(dir).map_err(|e| io_err(dir, None, e))?;
        let lock = lock_dir(dir)?;
        let dir_file = File::open(dir).map_err(|e| io_err(dir, None, e))?;
        let tmp = dir.join(CURSOR_TMP);
        if let Err(e) = fs::remove_file(&tmp)
            && e.kind() != ErrorKind::NotFound
        {
            return Err(io_err(&tmp, None, e));
        }

        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, None, e))? {
            let entry = entry.map_err(|e| io_err(dir, None, e))?;
            if let Some(first) = entry.file_name().to_str().and_then(parse_seg_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let mut recovery = Recovery::default();
        let (mut cfile, mut cursor) = match load_cursor(dir)? {
            CursorRead::Ok(f, c) => (f, c),
            CursorRead::Missing if firsts.is_empty() => {
                let c = Cursor::default();
                (CursorFile::create(dir, &dir_file, &c)?, c)
            }
            read => {
                let what = match read {
                    CursorRead::Missing => "missing",
                    _ => "corrupt",
                };
                tracing::warn!(
                    "queue: cursor file {} is {what}: records are delivered again from the oldest segment and the drop counters restart from zero",
                    dir.join(CURSOR_FILE).display()
                );
                recovery.cursor_reset = true;
                let c = Cursor {
                    acked: firsts.first().map_or(0, |f| f.saturating_sub(1)),
                    ..Cursor::default()
                };
                (CursorFile::create(dir, &dir_file, &c)?, c)
            }
        };

        // Segment headers.
        let mut segs = VecDeque::with_capacity(firsts.len() + 1);
        let mut tail_header_ok = true;
        for (k, &first) in firsts.iter().enumerate() {
            let path = dir.join(seg_name(first));
            let f = File::open(&path).map_err(|e| io_err(&path, None, e))?;
            let len = f.metadata().map_err(|e| io_err(&path, None, e))?.len();
            let mut hb = [0u8; HDR as usize];
            let header = if len >= HDR {
                f.read_exact_at(&mut hb, 0)
                    .map_err(|e| io_err(&path, Some(0), e))?;
                decode_seg_header(&hb).filter(|&(f0, _, _)| f0 == first)
            } else {
                None
            };
            let is_tail = k + 1 == firsts.len();
            if header.is_none() {
                if is_tail {
                    tail_header_ok = false;
                } else {
                    tracing::warn!(
                        "queue: segment {} has no valid header: its records are counted as dropped",
                        path.display()
                    );
                }
            }
            segs.push_back(Seg {
                first,
                gap_before: header.map_or(0, |(_, g, _)| g),
                bytes: len,
                cut: if header.is_none() && !is_tail {
                    Some(HDR)
                } else {
                    None
                },
                v1: header.is_some_and(|(_, _, v1)| v1),
            });
        }

        // Recovery of the tail: keep the intact records, cut off the rest.
        let mut rc = ReadCache::new();
        let mut tail_end = 0;
        if let Some(t) = segs.back_mut() {
            let (first, v1) = (t.first, t.v1);
            let len = t.bytes;
            let path = dir.join(seg_name(first));
            let (valid_end, count) = if tail_header_ok {
                rc.scan(dir, (first, v1), HDR, len, first)?
            } else {
                (0, 0)
            };
            rc.reset();
            tail_end = first.saturating_add(count);
            if !tail_header_ok || valid_end < len {
                let region_start = if tail_header_ok {
                    valid_end
                } else {
                    HDR.min(len)
                };
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, None, e))?;
                let mut region = vec![0u8; (len - region_start) as usize];
                f.read_exact_at(&mut region, region_start)
                    .map_err(|e| io_err(&path, Some(region_start), e))?;
                let lost = count_lost(&region, tail_end, v1);
                let lost_bytes = if lost > 0 { len - region_start } else { 0 };
                drop(region);
                if lost > 0 {
                    let mut c = cursor;
                    if (c.cut_seg, c.cut_off) != (first, valid_end) {
                        c.dropped_records = c.dropped_records.saturating_add(lost);
                        c.dropped_bytes = c.dropped_bytes.saturating_add(lost_bytes);
                        c.cut_seg = first;
                        c.cut_off = valid_end;
                    }
                    c.seq_floor = c.seq_floor.max(tail_end.saturating_add(lost));
                    if c != cursor {
                        cfile.store(&c)?;
                        cursor = c;
                    }
                    tracing::warn!(
                        "queue: {} cut at offset {valid_end}: {lost} torn or corrupt records ({lost_bytes} bytes) counted as dropped",
                        path.display()
                    );
                    recovery.dropped_records += lost;
                    recovery.dropped_bytes += lost_bytes;
                    recovery.truncated = Some((path.clone(), valid_end));
                }
                f.set_len(valid_end)
                    .map_err(|e| io_err(&path, Some(valid_end), e))?;
                if !tail_header_ok {
                    f.write_all_at(&encode_seg_header(first, 0), 0)
                        .map_err(|e| io_err(&path, Some(0), e))?;
                }
                f.sync_data().map_err(|e| io_err(&path, None, e))?;
                t.bytes = valid_end.max(HDR);
            }
        }

        // The tail to append to.
        let next_seq = tail_end
            .max(cursor.acked.saturating_add(1))
            .max(cursor.seq_floor)
            .max(1);
        let mut dir_dirty = false;
        let wfile = match segs.back() {
            Some(t) if next_seq == tail_end && t.bytes <= limits.segment_bytes && !t.v1 => {
                let path = dir.join(seg_name(t.first));
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(&path, None, e))?
            }
            last => {
                let gap = if last.is_some() {
                    next_seq - tail_end
                } else {
                    0
                };
                let f = create_segment(dir, next_seq, gap)?;
                segs.push_back(Seg {
                    first: next_seq,
                    gap_before: gap,
                    bytes: HDR,
                    cut: None,
                    v1: false,
                });
                dir_dirty = true;
                f
            }
        };

        // Segments wholly consumed (acknowledged or counted), e.g. after a crash between the
        // cursor update and the deletion.
        while segs.len() > 1 {
            let end = segs[1].first.saturating_sub(segs[1].gap_before);
            if end > cursor.acked.saturating_add(1) {
                break;
            }
            if let Some(s) = segs.pop_front() {
                remove_file_logged(&dir.join(seg_name(s.first)));
            }
        }
        // Sequence numbers between the cursor and the oldest segment with no file: lost.
        let oldest = &segs[0];
        if oldest.first > cursor.acked.saturating_add(1) {
            let missing = oldest
                .first
                .saturating_sub(oldest.gap_before)
                .saturating_sub(cursor.acked.saturating_add(1));
            if missing > 0 {
                tracing::warn!(
                    "queue: {missing} records before {} are missing from {}: counted as dropped",
                    oldest.first,
                    dir.display()
                );
                cursor.dropped_records = cursor.dropped_records.saturating_add(missing);
                recovery.dropped_records += missing;
            }
            cursor.acked = oldest.first - 1;
            cfile.store(&cursor)?;
        }

        let total_bytes = segs.iter().map(|s| s.bytes).sum();
        let written = segs.back().map_or(HDR, |t| t.bytes);
        let head = Pos {
            off: HDR,
            seq: segs[0].first,
        };
        let mut q = Queue {
            dir: dir.to_path_buf(),
            dir_file,
            _lock: lock,
            limits,
            max_record: limits.max_record_bytes(),
            segs,
            total_bytes,
            next_seq,
            wfile,
            written,
            synced: 0,
            unsynced_since: None,
            wbuf: Vec::with_capacity(WRITE_BUFFER),
            dir_dirty,
            head,
            cursor,
            cfile,
            peek_end: None,
            rc,
            recovery,
            warned_full: false,
        };
        // Position the head after the acknowledged records.
        q.advance(q.cursor.acked)?;
        // Limits may have shrunk since the files were written.
        while q.total_bytes > q.limits.max_bytes && q.segs.len() > 1 {
            q.drop_oldest()?;
        }
        q.flush()?;
        Ok(q)
    }

    /// Appends one record holding `count` sequence numbers (buffered; durable after the next
    /// [`Queue::flush`]) and returns the first of them. Refuses a record larger than
    /// [`QueueLimits::max_record_bytes`], and a count of 0 or above [`MAX_RECORD_COUNT`]. When
    /// the segment files would exceed `max_bytes`, the oldest segment(s) are dropped first and
    /// their unacknowledged records counted.
    pub fn push(&mut self, record: &[u8], count: u32) -> Result<u64, QueueError> {
        if !(1..=MAX_RECORD_COUNT).contains(&count) {
            return Err(QueueError::InvalidCount(count));
        }
        if record.len() > self.max_record {
            return Err(QueueError::RecordTooLarge {
                len: record.len(),
                max: self.max_record,
                segment_bytes: self.limits.segment_bytes,
            });
        }
        let frame = REC + record.len() as u64;
        let roll = self.tail().bytes + frame > self.limits.segment_bytes;
        let need = frame + if roll { HDR } else { 0 };
        while self.total_bytes + need > self.limits.max_bytes {
            if self.segs.len() < 2 {
                return Err(QueueError::Full {
                    dir: self.dir.clone(),
                    need,
                    max_bytes: self.limits.max_bytes,
                });
            }
            self.drop_oldest()?;
        }
        if roll {
            self.roll(0)?;
        }
        if !self.wbuf.is_empty() && self.wbuf.len() + frame as usize > WRITE_BUFFER {
            self.write_out()?;
        }
        let seq = self.next_seq;
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(&[0u8; 4]);
        self.wbuf
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.wbuf.extend_from_slice(&seq.to_le_bytes());
        self.wbuf.extend_from_slice(&count.to_le_bytes());
        self.wbuf.extend_from_slice(&[0u8; 4]);
        self.wbuf.extend_from_slice(record);
        let crc = crc32fast::hash(&self.wbuf[start + 4..]);
        self.wbuf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        self.next_seq += u64::from(count);
        self.unsynced_since.get_or_insert_with(Instant::now);
        self.total_bytes += frame;
        if let Some(t) = self.segs.back_mut() {
            t.bytes += frame;
        }
        Ok(seq)
    }

    /// How long the oldest record that is not durable yet has waited (zero if none): the agent
    /// flushes when it reaches 200 ms, so a flush the sender made (it sends durable records
    /// only) spares the next.
    pub fn unsynced_for(&self) -> Duration {
        self.unsynced_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Makes every pushed record durable (write + fdatasync; fsync of the directory when a
    /// segment file was created). The agent calls it when [`Queue::unsynced_for`] reaches
    /// 200 ms and before exit; dropping the queue flushes too.
    pub fn flush(&mut self) -> Result<(), QueueError> {
        self.write_out()?;
        self.sync_tail()?;
        if self.dir_dirty {
            sync_dir(&self.dir, &self.dir_file)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// The oldest unacknowledged records, flushed or not, up to `max_records` sequence numbers
    /// and about `max_bytes` of payload (at least one record), without removing them: the same
    /// records come back until acknowledged. Records not yet durable are flushed first.
    pub fn peek(&mut self, max_records: usize, max_bytes: usize) -> Result<Vec<Entry>, QueueError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.peek_with(max_records, |seq, count, data| {
            if !out.is_empty() && bytes.saturating_add(data.len()) > max_bytes {
                return false;
            }
            bytes += data.len();
            out.push(Entry {
                seq,
                count,
                data: data.to_vec(),
            });
            true
        })?;
        Ok(out)
    }

    /// [`Queue::peek`] without copies: hands each record's first sequence number, count and
    /// payload to `f`, in order, until `f` returns false (that record is not taken) or
    /// `max_records` sequence numbers would be exceeded (the first record is always offered);
    /// returns how many sequence numbers `f` took.
    pub fn peek_with(
        &mut self,
        max_records: usize,
        mut f: impl FnMut(u64, u32, &[u8]) -> bool,
    ) -> Result<usize, QueueError> {
        let mut count = 0usize;
        let mut last_seq = None;
        if max_records == 0 {
            return Ok(count);
        }
        if self.segs.len() > 1 && self.head.off >= self.end_of(0) {
            // The head stands at a corrupt region: account for it first.
            self.advance(self.cursor.acked)?;
        }
        let (mut i, mut off, mut seq) = (0usize, self.head.off, self.head.seq);
        while count < max_records {
            let last = i + 1 == self.segs.len();
            if last && off >= self.synced {
                if self.has_unsynced() {
                    self.flush()?;
                    continue;
                }
                break;
            }
            let end = self.end_of(i);
            if off >= end {
                if last {
                    break;
                }
                i += 1;
                off = HDR;
                seq = self.segs[i].first;
                continue;
            }
            let seg = (self.segs[i].first, self.segs[i].v1);
            match self.rc.record(&self.dir, seg, off, end, seq)? {
                Rec::Bad(reason) => self.mark_cut(i, off, &reason)?,
                Rec::Ok {
                    frame,
                    start,
                    len,
                    count: n,
                } => {
                    let n = n as usize;
                    if (count > 0 && count + n > max_records)
                        || !f(seq, n as u32, &self.rc.buf[start..start + len])
                    {
                        break;
                    }
                    count += n;
                    last_seq = Some(seq + n as u64 - 1);
                    off += frame;
                    seq += n as u64;
                }
            }
        }
        if let Some(last) = last_seq {
            self.peek_end = Some(PeekEnd {
                seg: self.segs[i].first,
                off,
                seq,
                last,
            });
        }
        Ok(count)
    }

    /// Acknowledges every record that starts at or before `seq` (a record is acknowledged whole:
    /// `seq` is meant to be the last of a record [`Queue::peek`] handed out): durably (one slot
    /// of the cursor file rewritten and fdatasynced), and deletes the segment files wholly
    /// acknowledged (the tail, being written, stays). Acknowledging an already acknowledged (or
    /// dropped) seq is a no-op.
    pub fn ack(&mut self, seq: u64) -> Result<(), QueueError> {
        if seq >= self.next_seq {
            return Err(QueueError::AckBeyondEnd {
                seq,
                next_seq: self.next_seq,
            });
        }
        if seq <= self.cursor.acked {
            return Ok(());
        }
        self.advance(seq)
    }

    pub fn stats(&self) -> QueueStats {
        let gaps: u64 = self.segs.iter().skip(1).map(|s| s.gap_before).sum();
        QueueStats {
            records: self
                .next_seq
                .saturating_sub(self.head.seq)
                .saturating_sub(gaps),
            bytes: self.total_bytes,
            dropped_records: self.cursor.dropped_records,
            dropped_bytes: self.cursor.dropped_bytes,
            next_seq: self.next_seq,
        }
    }

    /// What [`Queue::open`] found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    fn tail(&self) -> &Seg {
        &self.segs[self.segs.len() - 1]
    }

    fn seg_path(&self, first: u64) -> PathBuf {
        self.dir.join(seg_name(first))
    }

    /// End of the readable data of segment `i`.
    fn end_of(&self, i: usize) -> u64 {
        if i + 1 == self.segs.len() {
            self.written
        } else {
            let s = &self.segs[i];
            s.cut.unwrap_or(s.bytes).min(s.bytes)
        }
    }

    fn has_unsynced(&self) -> bool {
        !self.wbuf.is_empty() || self.synced < self.written
    }

    fn write_out(&mut self) -> Result<(), QueueError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.wfile.write_all_at(&self.wbuf, self.written) {
            return Err(io_err(
                &self.seg_path(self.tail().first),
                Some(self.written),
                e,
            ));
        }
        self.written += self.wbuf.len() as u64;
        self.wbuf.clear();
        Ok(())
    }

    fn sync_tail(&mut self) -> Result<(), QueueError> {
        if self.synced < self.written {
            if let Err(e) = self.wfile.sync_data() {
                return Err(io_err(&self.seg_path(self.tail().first), None, e));
            }
            self.synced = self.written;
        }
        if self.wbuf.is_empty() {
            self.unsynced_since = None;
        }
        Ok(())
    }

    /// Starts a new tail segment at `next_seq`; the old tail is made durable first, so only the
    /// tail ever holds non-durable records.
    fn roll(&mut self, gap_before: u64) -> Result<(), QueueError> {
        self.write_out()?;
        self.sync_tail()?;
        let first = self.next_seq;
        self.wfile = create_segment(&self.dir, first, gap_before)?;
        self.written = HDR;
        self.synced = 0;
        self.dir_dirty = true;
        self.segs.push_back(Seg {
            first,
            gap_before,
            bytes: HDR,
            cut: None,
            v1: false,
        });
        self.total_bytes += HDR;
        Ok(())
    }

    fn store_cursor(&mut self, c: &Cursor) -> Result<(), QueueError> {
        self.cfile.store(c)
    }

    /// Removes the `n` oldest segments (already accounted for in the durable cursor).
    fn remove_front(&mut self, n: usize) {
        for _ in 0..n {
            let Some(s) = self.segs.pop_front() else {
                return;
            };
            self.total_bytes -= s.bytes;
            self.rc.forget(s.first);
            remove_file_logged(&self.seg_path(s.first));
        }
    }

    /// Drops the oldest segment (never the tail) to make room, counting its unacknowledged
    /// records.
    fn drop_oldest(&mut self) -> Result<(), QueueError> {
        let (first, bytes, next_first, next_gap) = {
            let (a, b) = (&self.segs[0], &self.segs[1]);
            (a.first, a.bytes, b.first, b.gap_before)
        };
        let end = next_first.saturating_sub(next_gap);
        let from = self.head.seq.max(self.cursor.acked.saturating_add(1));
        let lost = end.saturating_sub(from);
        let lost_bytes = if lost > 0 {
            bytes.saturating_sub(self.head.off)
        } else {
            0
        };
        let c = Cursor {
            acked: self.cursor.acked.max(next_first.saturating_sub(1)),
            dropped_records: self.cursor.dropped_records.saturating_add(lost),
            dropped_bytes: self.cursor.dropped_bytes.saturating_add(lost_bytes),
            ..self.cursor
        };
        self.store_cursor(&c)?;
        self.cursor = c;
        if lost > 0 {
            let path = self.seg_path(first);
            if self.warned_full {
                tracing::debug!(
                    "queue full: dropped {} with {lost} unacknowledged records",
                    path.display()
                );
            } else {
                self.warned_full = true;
                tracing::warn!(
                    "queue full ({} bytes): dropped the oldest segment {} with {lost} unacknowledged records (further drops are logged at debug level and counted)",
                    self.limits.max_bytes,
                    path.display()
                );
            }
        }
        self.remove_front(1);
        self.head = Pos {
            off: HDR,
            seq: self.segs[0].first,
        };
        Ok(())
    }

    /// Marks the rest of segment `i` from `off` unreadable (the tail is rolled first, so that
    /// nothing more is appended behind the damage).
    fn mark_cut(&mut self, i: usize, off: u64, reason: &str) -> Result<(), QueueError> {
        if i + 1 == self.segs.len() {
            self.flush()?;
            self.roll(0)?;
        }
        let path = self.seg_path(self.segs[i].first);
        tracing::warn!(
            "queue: unreadable record in {} at offset {off}: {reason}; the rest of the segment is skipped and counted as dropped",
            path.display()
        );
        self.segs[i].cut = Some(off);
        Ok(())
    }

    /// Moves the head past every record with seq <= `seq` and past the end of segments whose
    /// remaining records are unreadable (counted as dropped), stores the cursor, deletes the
    /// segments left behind.
    fn advance(&mut self, seq: u64) -> Result<(), QueueError> {
        let (mut i, mut off, mut s) = (0usize, self.head.off, self.head.seq);
        let mut consumed = self.cursor.acked;
        let mut lost = 0u64;
        let mut lost_bytes = 0u64;
        loop {
            if let Some(pe) = self.peek_end
                && self.segs[i].first == pe.seg
                && off <= pe.off
                && s <= pe.seq
                && seq >= pe.last
            {
                // Everything up to there was read (and checked) by the last peek.
                off = pe.off;
                s = pe.seq;
            }
            let last = i + 1 == self.segs.len();
            let end = self.end_of(i);
            if off >= end {
                if last {
                    if s <= seq && !self.wbuf.is_empty() {
                        self.write_out()?;
                        continue;
                    }
                    break;
                }
                let next = &self.segs[i + 1];
                let seg_end = next.first.saturating_sub(next.gap_before);
                let from = s.max(consumed.saturating_add(1));
                if seg_end > from {
                    lost += seg_end - from;
                    lost_bytes += self.segs[i].bytes.saturating_sub(off);
                }
                consumed = consumed.max(next.first.saturating_sub(1));
                i += 1;
                off = HDR;
                s = self.segs[i].first;
                continue;
            }
            if s > seq {
                break;
            }
            let seg = (self.segs[i].first, self.segs[i].v1);
            match self.rc.record(&self.dir, seg, off, end, s)? {
                Rec::Bad(reason) => self.mark_cut(i, off, &reason)?,
                Rec::Ok { frame, count, .. } => {
                    off += frame;
                    s += u64::from(count);
                }
            }
        }
        let c = Cursor {
            // A record acknowledged whole: every number before `s` is.
            acked: consumed.max(seq).max(s.saturating_sub(1)),
            dropped_records: self.cursor.dropped_records.saturating_add(lost),
            dropped_bytes: self.cursor.dropped_bytes.saturating_add(lost_bytes),
            ..self.cursor
        };
        if c != self.cursor {
            // Segments removed below and loss counted must survive a crash of the machine;
            // acknowledgements alone may be undone by one (the rows are sent again, and the
            // server skips rows it stored): no fdatasync for them, four a second under load.
            if i > 0 || lost > 0 {
                self.store_cursor(&c)?;
            } else {
                self.cfile.store_lazily(&c)?;
            }
            self.cursor = c;
        }
        if lost > 0 {
            tracing::warn!(
                "queue: {lost} unreadable records ({lost_bytes} bytes) in {} counted as dropped",
                self.dir.display()
            );
        }
        self.remove_front(i);
        self.head = Pos { off, seq: s };
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("queue: flush on close failed: {e}");
        }
        // Acknowledgements stored lazily are kept: nothing is sent twice after a clean stop.
        if self.cfile.lazy
            && let Err(e) = self.cfile.store(&self.cursor)
        {
            tracing::warn!("queue: storing the cursor on close failed: {e}");
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("dir", &self.dir)
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_can_be_shared_behind_a_mutex() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Queue>();
        send_sync::<QueueError>();
    }

    #[test]
    fn limits_for_a_bound() {
        assert_eq!(QueueLimits::with_max_bytes(1 << 30), QueueLimits::default());
        let small = QueueLimits::with_max_bytes(10 << 20);
        assert_eq!(small.segment_bytes, (10 << 20) / 8);
        assert!(small.validate().is_ok());
        assert!(QueueLimits::with_max_bytes(8192).validate().is_ok());
        assert!(QueueLimits::with_max_bytes(8191).validate().is_err());
    }

    #[test]
    fn cursor_round_trips_and_detects_damage() {
        let c = Cursor {
            acked: 7,
            dropped_records: 3,
            dropped_bytes: 999,
            seq_floor: 12,
            cut_seg: 5,
            cut_off: 4096,
        };
        let b = c.encode(9);
        assert_eq!(Cursor::decode(&b), Some((9, c)));
        for k in 0..b.len() {
            let mut d = b;
            d[k] ^= 0x40;
            assert_eq!(Cursor::decode(&d), None, "flipped byte {k}");
        }
        assert_eq!(Cursor::decode(&b[..63]), None);
        // Two slots: the newest valid one wins; a damaged newest one leaves the older.
        let older = Cursor { acked: 5, ..c };
        let mut file = vec![0u8; CURSOR_FILE_BYTES as usize];
        file[..64].copy_from_slice(&older.encode(8));
        file[512..].copy_from_slice(&b);
        assert_eq!(Cursor::decode_file(&file), Some((9, c, CURSOR_SLOT)));
        file[520] ^= 1;
        assert_eq!(Cursor::decode_file(&file), Some((8, older, 0)));
        assert_eq!(Cursor::decode_file(&file[..64]), Some((8, older, 0)));
        file[3] ^= 1;
        assert_eq!(Cursor::decode_file(&file), None);
    }

    #[test]
    fn a_lazy_cursor_store_never_overwrites_the_last_durable_one() {
        let dir = tempfile::tempdir().unwrap();
        let dir_file = File::open(dir.path()).unwrap();
        let at = |acked| Cursor {
            acked,
            ..Cursor::default()
        };
        let mut f = CursorFile::create(dir.path(), &dir_file, &at(1)).unwrap();
        // The two slots' acknowledgements, slot 0 first.
        let slots = || {
            let b = std::fs::read(dir.path().join(CURSOR_FILE)).unwrap();
            let acked = |s: &[u8]| Cursor::decode(s).map(|(_, c)| c.acked);
            (acked(&b), acked(&b[CURSOR_SLOT as usize..]))
        };
        f.store_lazily(&at(2)).unwrap();
        f.store_lazily(&at(3)).unwrap();
        assert_eq!(slots(), (Some(1), Some(3)), "the durable 1 is kept");
        f.store(&at(4)).unwrap();
        assert_eq!(slots(), (Some(1), Some(4)));
        f.store_lazily(&at(5)).unwrap();
        assert_eq!(slots(), (Some(5), Some(4)), "now 4 is the one kept");
        // Reopened: the newest is read, made durable, and kept in turn.
        drop(f);
        let CursorRead::Ok(mut f, c) = load_cursor(dir.path()).unwrap() else {
            panic!("the cursor file does not load");
        };
        assert_eq!(c.acked, 5);
        f.store_lazily(&at(6)).unwrap();
        assert_eq!(slots(), (Some(5), Some(6)));
    }

    #[test]
    fn the_oldest_record_not_durable_is_timed_until_a_flush_or_a_peek() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path(), QueueLimits::default()).unwrap();
        assert_eq!(q.unsynced_for(), Duration::ZERO);
        q.push(b"a", 1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        q.push(b"b", 1).unwrap();
        assert!(
            q.unsynced_for() >= Duration::from_millis(20),
            "timed from the first record"
        );
        q.flush().unwrap();
        assert_eq!(q.unsynced_for(), Duration::ZERO);
        q.push(b"c", 1).unwrap();
        assert!(q.unsynced_for() > Duration::ZERO);
        // What the sender peeks is made durable first.
        assert_eq!(q.peek(10, 1 << 20).unwrap().len(), 3);
        assert_eq!(q.unsynced_for(), Duration::ZERO);
    }

    #[test]
    fn segment_header_and_names() {
        let h = encode_seg_header(42, 3);
        assert_eq!(decode_seg_header(&h), Some((42, 3, false)));
        let mut d = h;
        d[9] ^= 1;
        assert_eq!(decode_seg_header(&d), None);
        // A segment an earlier agent wrote.
        let mut v1 = h;
        v1[..8].copy_from_slice(SEG_MAGIC_V1);
        let crc = crc32fast::hash(&v1[..28]);
        v1[28..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_seg_header(&v1), Some((42, 3, true)));
        assert_eq!(seg_name(42), "00000000000000000042.seg");
        assert_eq!(parse_seg_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_seg_name("42.seg"), None);
        assert_eq!(parse_seg_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_seg_name("00000000000000000042.tmp"), None);
    }

    /// A record as `push` writes it (`count: None`: of the first format).
    fn frame(seq: u64, count: Option<u32>, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 4];
        v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v.extend_from_slice(&seq.to_le_bytes());
        if let Some(count) = count {
            v.extend_from_slice(&count.to_le_bytes());
            v.extend_from_slice(&[0; 4]);
        }
        v.extend_from_slice(payload);
        let crc = crc32fast::hash(&v[4..]);
        v[..4].copy_from_slice(&crc.to_le_bytes());
        v
    }

    #[test]
    fn lost_records_are_counted_past_a_damaged_length() {
        // Records of three sequence numbers each, and of the first format (one each).
        for (count, v1) in [(Some(3), false), (None, true)] {
            let n = u64::from(count.unwrap_or(1));
            let mut region = Vec::new();
            for k in 0..5 {
                let seq = 10 + k * n;
                region.extend(frame(seq, count, format!("payload {seq}").as_bytes()));
            }
            // Torn: nothing intact, one sequence number; as many as a whole header says.
            assert_eq!(count_lost(&region[..7], 10, v1), 1);
            assert_eq!(count_lost(&region[..REC as usize + 2], 10, v1), n);
            assert_eq!(count_lost(&[], 10, v1), 0);
            // Length of the first record damaged: the four after it are found, all five lost.
            let mut d = region.clone();
            d[5] ^= 0x7f;
            assert_eq!(count_lost(&d, 10, v1), 5 * n);
            // Last record torn: still five records' numbers.
            assert_eq!(count_lost(&d[..d.len() - 3], 10, v1), 5 * n);
        }
        // A count out of range is no record.
        let mut d = frame(10, Some(0), b"zero");
        d.extend(frame(11, Some(2), b"two"));
        assert_eq!(count_lost(&d, 10, false), 3);
    }
}
