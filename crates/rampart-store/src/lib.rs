//! Rampart's event store: rows of the hunting tables, durable before they are acknowledged,
//! queryable at once, kept as Parquet partitioned by tenant, table and day.
//!
//! ```text
//! append ──▶ log writer thread (group commit: one write + fdatasync for every waiting append)
//!              │ durable
//!              ▼
//!            in-memory batches ──(flush: memory limit, interval, close)──▶ Parquet files
//!              │ visible                                          (zstd, in time order)
//!              ▼                                                               │
//!            table_provider(): a snapshot of both, taken when a scan is planned ◀┘
//! ```
//!
//! On disk, under the store's directory:
//!
//! - `MANIFEST`: the live Parquet files and the last log record they hold (JSON; replaced
//!   atomically: written to `MANIFEST.tmp`, fsync'd, renamed, folder fsync'd);
//! - `wal/<first sequence number>.wal`: the write-ahead log; a record is its length, a CRC32,
//!   its sequence number, and the appended batch as an Arrow IPC stream;
//! - `tables/tenant=T/table=Name/day=YYYY-MM-DD/<id>.parquet`: the rows, one day of one table
//!   of one tenant per folder; rows without a Timestamp go to the day they were ingested;
//! - `LOCK`: held while a process has the store open.
//!
//! **Exactly once across a crash at any point.** A batch is acknowledged only after its log
//! record is fsync'd. A flush writes files, fsyncs them and their folders, then commits a
//! manifest naming them and the log sequence number they cover; only then are the covered log
//! segments deleted. Compaction and retention commit a manifest in the same way before they
//! delete anything. At open, files the manifest does not name are deleted (they belong to a
//! change that never committed) and only log records after the manifest's sequence number are
//! replayed. A torn record at the end of the log (never acknowledged) is truncated and
//! reported in [`Store::recovery`].
//!
//! **Files.** A flush writes one file per tenant, table and day (zstd, dictionaries, version 2
//! pages; statistics per row group for numbers and times, and per page for Timestamp), its
//! rows in Timestamp order, nulls first. A flush made by memory pressure or the interval
//! holds back days of a table with fewer rows than half a row group (a rare table, a late
//! day), within [`StoreConfig::max_held_bytes`] and [`StoreConfig::max_hold`]: it logs their
//! rows again into the log segment it starts, marked with the last record of the segments
//! it deletes, and recovery replays such a copy only if the manifest covers that record
//! (the flush committed), the records it copies otherwise. Compaction rewrites them in row groups that follow
//! each other in Timestamp order, with rows clustered within each by the initiating
//! process's file name, the event's file name and the device, in Timestamp order within a
//! cluster: a process's and a device's attributes then repeat in runs that Parquet stores
//! once, while each row group still covers its own stretch of time. It reads its inputs a
//! row group at a time, so it holds about half the memory limit plus one input row group
//! whatever their size.
//! The background thread merges files of about the same size in a partition, a few at a
//! time, so each row is rewritten only a few times; [`Store::compact`] merges all small
//! files. [`Store::apply_retention`] drops whole days once they and their ingestion are past
//! the retention age. The manifest keeps each file's
//! Timestamp range, so scans skip files (and so days) before opening them.
//!
//! **Limits.** In-memory batches are bounded by [`StoreConfig::memory_limit_bytes`]: once
//! the rows that came in since the last flush (not counting those it held) take half of it a
//! background flush starts, and an append that finds the limit reached waits for
//! a flush (back-pressure), never for a merge: merges write their files without the lock that
//! flushes take, and commit only if their inputs are still live. One append is at most [`StoreConfig::max_batch_bytes`]. Appends in
//! flight (at most one batch per appending thread) come on top.
//!
//! **Readers never block the writer.** A scan copies the list of files and batches (reference
//! counts) under a short lock; a file replaced by compaction or dropped by retention is deleted
//! only when the last scan that may read it is gone.
//!
//! The store's calls block (on fsync, on a flush); from async code call them in
//! `spawn_blocking`.

#![warn(missing_docs)]

mod catalog;
mod files;
mod maintain;
mod manifest;
mod merge;
mod provider;
mod record;
mod source;
mod wal;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::TableProvider;
use rampart_schema::Table;

pub use crate::catalog::TenantCatalog;
use crate::files::DataFile;
use crate::maintain::Flush;
use crate::manifest::Manifest;
use crate::provider::{Snapshots, StoreTable, TimeRange};
use crate::record::{MemBatch, Undecodable};
pub use crate::source::{MAX_SOURCE_KIND_LEN, SourceDecoder, Sources};
use crate::wal::Wal;

/// The tenant of a single-tenant installation.
pub const DEFAULT_TENANT: &str = "default";
/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;

/// How the store behaves; [`StoreConfig::default`] suits one machine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Day partitions older than this, and ingested longer ago than this, are dropped by
    /// [`Store::apply_retention`] (30 days).
    pub retention: chrono::Duration,
    /// Most bytes of acknowledged rows held in memory before they must go to Parquet
    /// (256 MiB). A background flush starts once the rows that came in since the last one
    /// take half of it (held rows come on top); appends wait at the limit. Also the
    /// budget of one compaction (half of it).
    pub memory_limit_bytes: usize,
    /// Largest batch one append takes, in Arrow memory bytes, and largest input
    /// [`Store::append_source`] logs (64 MiB; at most 1 GiB).
    pub max_batch_bytes: usize,
    /// Flush rows that have waited in memory this long (5 minutes), which bounds the log
    /// replayed after a crash. `None`: only on memory pressure, [`Store::flush`] and close.
    pub flush_interval: Option<Duration>,
    /// Run flushes and compaction on a background thread (true). Without it, flushes happen in
    /// the appending thread when the memory limit is reached, and compaction only on
    /// [`Store::compact`].
    pub background: bool,
    /// Files smaller than this are merged by compaction (64 MiB).
    pub compact_small_file_bytes: u64,
    /// Background compaction merges this many small files of about the same size (4), so
    /// that each row is rewritten only a few times; [`Store::compact`] merges any two.
    pub compact_min_files: usize,
    /// Rows per Parquet row group (128 Ki): the unit that Timestamp filters skip, and within
    /// which compaction clusters rows.
    pub row_group_rows: usize,
    /// zstd level of the Parquet files (3).
    pub zstd_level: i32,
    /// Compress log records with LZ4 (true): less to write and fsync for a little CPU.
    pub wal_compression: bool,
    /// Most bytes of rows a flush made by memory pressure or by the interval holds in memory
    /// instead of writing (64 MiB, and at most a quarter of `memory_limit_bytes`; 0: none).
    /// It holds the day partitions of a table with too few rows for half a row group,
    /// smallest first (each counted as its share of its table's bytes in memory), and logs
    /// them again into the log segment it starts: a partition that
    /// gets a few rows per flush (a rare table, a late day) is then written once it fills half
    /// a row group or has waited `max_hold`, not as a small file per flush that compaction
    /// reads and writes again and again. [`Store::flush`] and close write everything.
    pub max_held_bytes: usize,
    /// How long a flush holds a partition's rows in memory at most (5 minutes).
    pub max_hold: Duration,
    /// The sources whose input [`Store::append_source`] logs (none). Opening a store whose
    /// log holds records of a source not given here fails.
    pub sources: Sources,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            retention: chrono::Duration::days(30),
            memory_limit_bytes: 256 << 20,
            max_batch_bytes: 64 << 20,
            flush_interval: Some(Duration::from_secs(300)),
            background: true,
            compact_small_file_bytes: 64 << 20,
            compact_min_files: 4,
            row_group_rows: 128 * 1024,
            zstd_level: 3,
            wal_compression: true,
            max_held_bytes: 64 << 20,
            max_hold: Duration::from_secs(300),
            sources: Sources::default(),
        }
    }
}

/// Largest value of [`StoreConfig::max_batch_bytes`]: a log record's length is 32 bits.
pub const MAX_BATCH_BYTES_LIMIT: usize = 1 << 30;

impl StoreConfig {
    fn check(&self) -> Result<(), StoreError> {
        let bad = |what: &str| Err(StoreError::Config(what.to_string()));
        if self.memory_limit_bytes == 0 {
            return bad("memory_limit_bytes must be above 0");
        }
        if self.max_batch_bytes == 0 || self.max_batch_bytes > MAX_BATCH_BYTES_LIMIT {
            return bad("max_batch_bytes must be between 1 byte and 1 GiB");
        }
        if self.row_group_rows == 0 {
            return bad("row_group_rows must be above 0");
        }
        if self.compact_min_files < 2 {
            return bad("compact_min_files must be at least 2");
        }
        if self.retention <= chrono::Duration::zero() {
            return bad("retention must be positive");
        }
        files::writer_properties(Table::DeviceEvents, self.zstd_level, self.row_group_rows)
            .map(|_| ())
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A tenant name that is not 1 to 64 of `a-z`, `0-9`, `_`, `-`.
    #[error("invalid tenant name '{0}': use 1 to 64 characters among a-z, 0-9, '_' and '-'")]
    InvalidTenant(String),
    /// A batch whose columns are not the table's (names and types, in order).
    #[error("the batch does not fit table {table}: {detail}")]
    SchemaMismatch {
        /// The table the batch was appended to.
        table: Table,
        /// The first difference.
        detail: String,
    },
    /// A batch above [`StoreConfig::max_batch_bytes`].
    #[error("a batch of {bytes} bytes is more than the {limit} bytes one append takes")]
    BatchTooLarge {
        /// The batch's Arrow size (a source's input: its length).
        bytes: usize,
        /// The most one append takes.
        limit: usize,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A Parquet file could not be written or read back.
    #[error("{}: {message}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet library said.
        message: String,
    },
    /// Arrow could not encode or rearrange a batch.
    #[error("arrow: {0}")]
    Arrow(String),
    /// The store's own files contradict each other (a manifest that cannot be read, a file it
    /// names that is missing, data without a manifest); nothing is changed.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The file or folder at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The log holds the input of a source this program was not given the decoder of
    /// ([`StoreConfig::sources`]), or an append names such a source.
    #[error(
        "the store's log holds the input of source '{0}', which this program does not read: \
         open it with the program that wrote it (rampart), which replays it"
    )]
    UnknownSource(String),
    /// Another process (or another `Store` in this one) has the store open.
    #[error("the store at {} is open in another process", .0.display())]
    Locked(PathBuf),
    /// A [`StoreConfig`] value out of range.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A write failed in a way that leaves the log or the manifest uncertain; the store
    /// refuses further changes until it is opened again (which recovers).
    #[error(
        "the store stopped accepting writes after an earlier failure (reopen it to recover): {0}"
    )]
    Failed(String),
}

impl From<ArrowError> for StoreError {
    fn from(e: ArrowError) -> StoreError {
        StoreError::Arrow(e.to_string())
    }
}

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

/// Makes the entries of a folder (files created, renamed or deleted in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Checks a tenant name: 1 to 64 of `a-z`, `0-9`, `_`, `-` (it becomes a folder name).
pub fn validate_tenant(name: &str) -> Result<(), StoreError> {
    let ok = (1..=MAX_TENANT_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidTenant(name.to_string()))
    }
}

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Log records replayed into memory (acknowledged, not yet in Parquet).
    pub replayed_records: u64,
    /// Rows in those records.
    pub replayed_rows: u64,
    /// Torn records cut off the end of log segments.
    pub torn: Vec<TornRecord>,
    /// Log records that passed their checksum but could not be decoded, and why (skipped).
    pub skipped_records: Vec<String>,
    /// Records of partitions a flush held in memory, skipped because that flush never
    /// committed (the records they copy were replayed instead).
    pub superseded_records: u64,
    /// Files of changes that never committed, deleted.
    pub orphans_removed: Vec<PathBuf>,
}

/// A log record that was not completely written (a crash during the write), truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornRecord {
    /// The log segment.
    pub path: PathBuf,
    /// Where the torn record starts (the segment now ends there).
    pub offset: u64,
    /// Bytes cut off.
    pub dropped_bytes: u64,
    /// What was wrong with the record (incomplete, checksum mismatch, ...).
    pub reason: String,
}

impl std::fmt::Display for TornRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}: {}; {} bytes dropped (never acknowledged)",
            self.path.display(),
            self.offset,
            self.reason,
            self.dropped_bytes
        )
    }
}

/// What the store holds, per tenant and table.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Tenants and tables that hold rows, in order.
    pub tables: Vec<TableStats>,
    /// Bytes of write-ahead log on disk.
    pub wal_bytes: u64,
    /// Log writes (each one fsync) and records (appends) since open: records per commit is
    /// the group-commit factor.
    pub wal_commits: u64,
    /// See `wal_commits`.
    pub wal_records: u64,
    /// The last error of the background flush or compaction, if any.
    pub background_error: Option<String>,
    /// What flushes and merges have written since open.
    pub work: Work,
}

/// Rows written to Parquet since open, by flushes (each row once) and by compaction's merges,
/// and the CPU time of the threads that wrote them. A merge encodes some rows again
/// (`merged_rows`: per flushed row, compaction's write amplification) and copies row groups
/// of earlier merges as they are encoded (`copied_rows`, nearly free).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Flushes that wrote rows.
    pub flushes: u64,
    /// Rows they wrote.
    pub flushed_rows: u64,
    /// Rows they held in memory and logged again instead (each time they were held; see
    /// [`StoreConfig::max_held_bytes`]).
    pub held_rows: u64,
    /// CPU time of flushing.
    pub flush_cpu: Duration,
    /// Merges committed.
    pub merges: u64,
    /// Rows merges decoded and encoded again.
    pub merged_rows: u64,
    /// Rows merges copied in row groups as they were encoded.
    pub copied_rows: u64,
    /// CPU time of merging.
    pub merge_cpu: Duration,
}

/// [`Work`] as it accrues.
#[derive(Debug, Default)]
struct WorkCounters {
    flushes: AtomicU64,
    flushed_rows: AtomicU64,
    held_rows: AtomicU64,
    flush_cpu_nanos: AtomicU64,
    merges: AtomicU64,
    merged_rows: AtomicU64,
    copied_rows: AtomicU64,
    merge_cpu_nanos: AtomicU64,
}

impl WorkCounters {
    fn read(&self) -> Work {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Work {
            flushes: get(&self.flushes),
            flushed_rows: get(&self.flushed_rows),
            held_rows: get(&self.held_rows),
            flush_cpu: Duration::from_nanos(get(&self.flush_cpu_nanos)),
            merges: get(&self.merges),
            merged_rows: get(&self.merged_rows),
            copied_rows: get(&self.copied_rows),
            merge_cpu: Duration::from_nanos(get(&self.merge_cpu_nanos)),
        }
    }
}

/// CPU time of the calling thread (flushes and merges run on the background thread or on an
/// appending one: either way the thread's own time is theirs).
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill; the clock exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// One tenant's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// The tenant.
    pub tenant: String,
    /// The table.
    pub table: Table,
    /// Rows acknowledged and not yet in Parquet.
    pub memory_rows: u64,
    /// Their Arrow size in memory.
    pub memory_bytes: u64,
    /// Parquet files.
    pub files: usize,
    /// Rows in them.
    pub file_rows: u64,
    /// Their size on disk.
    pub file_bytes: u64,
    /// Day partitions with files.
    pub days: usize,
}

impl TableStats {
    /// All rows, in memory and in files.
    pub fn rows(&self) -> u64 {
        self.memory_rows + self.file_rows
    }
}

impl StoreStats {
    /// Rows of every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(TableStats::rows).sum()
    }

    /// Parquet files.
    pub fn files(&self) -> usize {
        self.tables.iter().map(|t| t.files).sum()
    }

    /// Bytes of Parquet on disk.
    pub fn file_bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.file_bytes).sum()
    }

    /// Rows of one tenant's table.
    pub fn table_rows(&self, tenant: &str, table: Table) -> u64 {
        self.tables
            .iter()
            .filter(|t| t.tenant == tenant && t.table == table)
            .map(TableStats::rows)
            .sum()
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Day partitions that had files merged.
    pub partitions: usize,
    /// Files replaced.
    pub files_merged: usize,
    /// Files that replaced them.
    pub files_written: usize,
    /// Rows rewritten.
    pub rows: u64,
}

/// What retention dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Day partitions dropped (per tenant and table).
    pub partitions: usize,
    /// Files deleted.
    pub files: usize,
    /// Rows in them.
    pub rows: u64,
    /// Their size on disk.
    pub bytes: u64,
}

type Key = (String, Table);

/// One tenant's table: its files and the batches not yet in them.
#[derive(Default)]
struct Part {
    files: Vec<Arc<DataFile>>,
    active: Vec<MemBatch>,
    /// Being written to Parquet by a flush; visible until the files replace them.
    frozen: Vec<MemBatch>,
}

struct State {
    parts: BTreeMap<Key, Part>,
    /// Every log record up to this one is in `parts`.
    applied_seq: u64,
}

impl State {
    /// The files and in-memory batches of one table that may hold rows in `range`.
    fn snapshot(&self, tenant: &str, table: Table, range: &TimeRange) -> Snapshot {
        let Some(part) = self.parts.get(&(tenant.to_string(), table)) else {
            return Snapshot {
                files: Vec::new(),
                batches: Vec::new(),
            };
        };
        Snapshot {
            files: part
                .files
                .iter()
                .filter(|f| range.overlaps(f.meta.min_ts, f.meta.max_ts))
                .cloned()
                .collect(),
            batches: part
                .frozen
                .iter()
                .chain(&part.active)
                .filter(|b| range.overlaps(b.min_ts, b.max_ts))
                .map(|b| b.batch.clone())
                .collect(),
        }
    }

    fn part(&mut self, tenant: &str, table: Table) -> &mut Part {
        self.parts.entry((tenant.to_string(), table)).or_default()
    }

    /// Puts batches a failed flush had taken back in front of the newer ones.
    fn unfreeze(&mut self) {
        for part in self.parts.values_mut() {
            let mut batches = std::mem::take(&mut part.frozen);
            batches.append(&mut part.active);
            part.active = batches;
        }
    }
}

/// An append waiting for the log writer.
struct Pending {
    /// The batches the record holds: one for [`Store::append`], a table's each for
    /// [`Store::append_source`].
    batches: Vec<(Key, MemBatch)>,
    payload: Vec<u8>,
    reply: SyncSender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    shutdown: bool,
}

#[derive(Default)]
struct Signal {
    flush: bool,
    shutdown: bool,
}

/// Held by whoever changes the set of files (flush, compaction, retention): one at a time.
struct Maintenance {
    manifest: Manifest,
    next_file_id: u64,
}

impl Maintenance {
    /// A file id no other file has or will have (committed with the next manifest; a file of
    /// it that no manifest names is deleted at the next open).
    fn take_file_id(&mut self) -> u64 {
        let id = self.next_file_id;
        self.next_file_id += 1;
        id
    }
}

/// The shared state behind [`Store`] and its table providers.
pub(crate) struct Inner {
    dir: PathBuf,
    config: StoreConfig,
    wal: Mutex<Wal>,
    state: Mutex<State>,
    queue: Mutex<Queue>,
    queue_ready: Condvar,
    maintenance: Mutex<Maintenance>,
    /// Arrow bytes of the in-memory batches (active and frozen).
    memory_bytes: AtomicUsize,
    /// Of those, the bytes the last flush held (see [`StoreConfig::max_held_bytes`]).
    held_bytes: AtomicUsize,
    /// Set when a write failed in a way that leaves the state on disk unknown.
    failure: OnceLock<String>,
    signal: Mutex<Signal>,
    signal_ready: Condvar,
    background_error: Mutex<Option<String>>,
    work: WorkCounters,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a scan of one table reads: its files and in-memory batches at planning time.
pub(crate) struct Snapshot {
    pub(crate) files: Vec<Arc<DataFile>>,
    pub(crate) batches: Vec<RecordBatch>,
}

/// The event store. `Send + Sync`: share it behind an `Arc`.
pub struct Store {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    recovery: Recovery,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Snapshots for Inner {
    fn snapshot(&self, tenant: &str, table: Table, range: &TimeRange) -> Snapshot {
        lock(&self.state).snapshot(tenant, table, range)
    }
}

/// A read-only view of a store, as it was when opened, for a process that only queries
/// (`rampart hunt`) while another may be writing. It takes no lock and changes nothing: the
/// manifest's files, plus the log records after them (a half-written last record is skipped).
/// A file that compaction or retention deletes meanwhile fails a scan that needs it; open
/// the view again.
pub struct StoreReader {
    dir: PathBuf,
    state: State,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("dir", &self.dir)
            .finish()
    }
}

impl Snapshots for StoreReader {
    fn snapshot(&self, tenant: &str, table: Table, range: &TimeRange) -> Snapshot {
        self.state.snapshot(tenant, table, range)
    }
}

impl StoreReader {
    /// Opens a view of the store in `dir`, which must exist, whose log holds no source's
    /// input ([`StoreReader::open_with`]).
    pub fn open(dir: &Path) -> Result<Arc<StoreReader>, StoreError> {
        StoreReader::open_with(dir, &Sources::default())
    }

    /// Opens a view of the store in `dir`, which must exist, reading the log records of
    /// `sources` ([`StoreConfig::sources`]).
    pub fn open_with(dir: &Path, sources: &Sources) -> Result<Arc<StoreReader>, StoreError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| io_err(dir, e))?;
        let load = || {
            manifest::load(&dir)?.ok_or_else(|| StoreError::Corrupt {
                path: dir.join(manifest::FILE_NAME),
                message: "missing: not a store".into(),
            })
        };
        // A flush may commit and trim the log between reading the manifest and reading the
        // log, and its rows would be in neither view: read again until the manifest holds
        // still across both.
        let mut manifest = load()?;
        for _ in 0..READER_ATTEMPTS {
            let state = Self::read(&dir, &manifest, sources)?;
            let after = load()?;
            if after == manifest {
                return Ok(Arc::new(StoreReader { dir, state }));
            }
            manifest = after;
        }
        Err(StoreError::Corrupt {
            path: dir.join(manifest::FILE_NAME),
            message: format!("changed {READER_ATTEMPTS} times while it was being read; try again"),
        })
    }

    /// The files `manifest` names and the log records after them.
    fn read(dir: &Path, manifest: &Manifest, sources: &Sources) -> Result<State, StoreError> {
        let mut state = State {
            parts: BTreeMap::new(),
            applied_seq: manifest.wal_seq,
        };
        for meta in &manifest.files {
            let table = Table::from_name(&meta.table).ok_or_else(|| StoreError::Corrupt {
                path: dir.join(manifest::FILE_NAME),
                message: format!("unknown table '{}'", meta.table),
            })?;
            let file = DataFile::new(meta.clone(), dir);
            state.part(&meta.tenant, table).files.push(Arc::new(file));
        }
        let wal_dir = dir.join(WAL_DIR);
        let mut unknown = None;
        if wal_dir.is_dir() {
            wal::read_only(&wal_dir, manifest.wal_seq, |_, payload| {
                match record::decode(payload, sources) {
                    Ok(d) if d.counts(manifest.wal_seq) => {
                        for (table, batch) in d.batches {
                            let batch = MemBatch::new(batch, table, d.ingest_us);
                            state.part(&d.tenant, table).active.push(batch);
                        }
                    }
                    Ok(_) => {}
                    // Skipped here; the writer reports it.
                    Err(Undecodable::Damaged(_)) => {}
                    Err(Undecodable::UnknownSource(kind)) => {
                        unknown.get_or_insert(kind);
                    }
                }
            })?;
        }
        match unknown {
            Some(kind) => Err(StoreError::UnknownSource(kind)),
            None => Ok(state),
        }
    }

    /// One table of one tenant, for DataFusion.
    pub fn table_provider(self: &Arc<Self>, tenant: &str, table: Table) -> Arc<dyn TableProvider> {
        Arc::new(StoreTable {
            source: Arc::clone(self) as Arc<dyn Snapshots>,
            tenant: tenant.to_string(),
            table,
        })
    }

    /// The store's directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

const LOCK_FILE: &str = "LOCK";
/// Reads of a store by [`StoreReader::open`] before it gives up on a store that keeps changing.
const READER_ATTEMPTS: usize = 10;
const WAL_DIR: &str = "wal";
const TABLES_DIR: &str = "tables";

impl Store {
    /// Opens the store in `dir`, creating it if needed. An existing store is recovered:
    /// leftovers of interrupted changes are deleted and the log is replayed (see
    /// [`Store::recovery`]).
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        config.check()?;
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
        }
        let manifest = match manifest::load(&dir)? {
            Some(m) => m,
            None => {
                // Without a manifest, files here are not ours to replay or delete.
                for sub in [WAL_DIR, TABLES_DIR] {
                    let path = dir.join(sub);
                    let has_entries = std::fs::read_dir(&path)
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(false);
                    if has_entries {
                        return Err(StoreError::Corrupt {
                            path,
                            message: format!(
                                "holds data but {} has no {}: not opening it",
                                dir.display(),
                                manifest::FILE_NAME
                            ),
                        });
                    }
                }
                let m = Manifest::empty();
                manifest::commit(&dir, &m).map_err(|e| e.error)?;
                m
            }
        };
        for sub in [WAL_DIR, TABLES_DIR] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| io_err(&path, e))?;
        }
        sync_dir(&dir)?;

        let mut recovery = Recovery::default();
        let mut state = State {
            parts: BTreeMap::new(),
            applied_seq: manifest.wal_seq,
        };
        let mut live = HashSet::new();
        for meta in &manifest.files {
            let table = Table::from_name(&meta.table).ok_or_else(|| StoreError::Corrupt {
                path: dir.join(manifest::FILE_NAME),
                message: format!("unknown table '{}'", meta.table),
            })?;
            let file = DataFile::new(meta.clone(), &dir);
            if !file.path.is_file() {
                return Err(StoreError::Corrupt {
                    path: file.path.clone(),
                    message: "listed in the manifest but missing".into(),
                });
            }
            live.insert(file.path.clone());
            state.part(&meta.tenant, table).files.push(Arc::new(file));
        }
        remove_orphans(&dir.join(TABLES_DIR), &live, &mut recovery.orphans_removed)?;

        let mut memory = 0usize;
        let mut unknown = None;
        let opened =
            wal::open(
                &dir.join(WAL_DIR),
                manifest.wal_seq,
                |seq, payload| match record::decode(payload, &config.sources) {
                    Ok(d) if !d.counts(manifest.wal_seq) => recovery.superseded_records += 1,
                    Ok(d) => {
                        recovery.replayed_records += 1;
                        for (table, batch) in d.batches {
                            recovery.replayed_rows += batch.num_rows() as u64;
                            let batch = MemBatch::new(batch, table, d.ingest_us);
                            memory += batch.bytes;
                            state.part(&d.tenant, table).active.push(batch);
                        }
                    }
                    Err(Undecodable::Damaged(why)) => recovery
                        .skipped_records
                        .push(format!("record {seq}: {why}")),
                    Err(Undecodable::UnknownSource(kind)) => {
                        unknown.get_or_insert(kind);
                    }
                },
            )?;
        if let Some(kind) = unknown {
            return Err(StoreError::UnknownSource(kind));
        }
        recovery.torn = opened.torn;
        state.applied_seq = opened.wal.last_seq();

        let inner = Arc::new(Inner {
            config: config.clone(),
            wal: Mutex::new(opened.wal),
            state: Mutex::new(state),
            queue: Mutex::default(),
            queue_ready: Condvar::new(),
            maintenance: Mutex::new(Maintenance {
                next_file_id: manifest.next_file_id,
                manifest,
            }),
            memory_bytes: AtomicUsize::new(memory),
            held_bytes: AtomicUsize::new(0),
            failure: OnceLock::new(),
            signal: Mutex::default(),
            signal_ready: Condvar::new(),
            background_error: Mutex::new(None),
            work: WorkCounters::default(),
            dir,
        });
        let mut threads = Vec::new();
        let writer = Arc::clone(&inner);
        threads.push(spawn("rampart-store-wal", move || writer.run_writer())?);
        if config.background {
            let background = Arc::clone(&inner);
            threads.push(spawn("rampart-store-bg", move || {
                background.run_background()
            })?);
        }
        let store = Store {
            inner,
            threads,
            recovery,
            _lock: lock_file,
        };
        if memory >= config.memory_limit_bytes {
            store.flush()?;
        }
        Ok(store)
    }

    /// What opening the store found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The store's directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a batch of `table` rows for `tenant`. Returns once the batch is durable (its log
    /// record fsync'd, in one write with the other appends waiting at the time); by then it is
    /// visible to new scans. The batch must have the table's columns
    /// ([`Table::arrow_schema`]); null strings are stored as `""` (Kusto strings are never
    /// null). Waits while in-memory rows are at the memory limit.
    pub fn append(&self, tenant: &str, table: Table, batch: RecordBatch) -> Result<(), StoreError> {
        validate_tenant(tenant)?;
        self.inner.check_failed()?;
        let batch = self.conformed(table, batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let now = Utc::now().timestamp_micros();
        let payload = record::encode(
            tenant,
            table,
            now,
            &batch,
            self.inner.config.wal_compression,
            None,
        )?;
        let batch = MemBatch::new(batch, table, now);
        self.submit(vec![((tenant.to_string(), table), batch)], payload)
    }

    /// Appends the rows a source made of `input`, logging `input` itself rather than the
    /// rows: one record, far smaller than the rows' own encoding, that the source's decoder
    /// ([`StoreConfig::sources`], `kind`) turns into the same rows when the log is replayed.
    /// The rows of every table are acknowledged together (one record, one fsync), as
    /// [`Store::append`] acknowledges one batch.
    pub fn append_source(
        &self,
        tenant: &str,
        kind: &str,
        input: &[u8],
        batches: Vec<(Table, RecordBatch)>,
    ) -> Result<(), StoreError> {
        validate_tenant(tenant)?;
        self.inner.check_failed()?;
        if self.inner.config.sources.get(kind).is_none() {
            return Err(StoreError::UnknownSource(kind.to_string()));
        }
        // The input is held to the bound of a batch: a record's length is 32 bits.
        if input.len() > self.inner.config.max_batch_bytes {
            return Err(StoreError::BatchTooLarge {
                bytes: input.len(),
                limit: self.inner.config.max_batch_bytes,
            });
        }
        let now = Utc::now().timestamp_micros();
        let mut parts = Vec::with_capacity(batches.len());
        for (table, batch) in batches {
            let batch = self.conformed(table, batch)?;
            if batch.num_rows() > 0 {
                parts.push((
                    (tenant.to_string(), table),
                    MemBatch::new(batch, table, now),
                ));
            }
        }
        if parts.is_empty() {
            return Ok(());
        }
        let payload = record::encode_source(tenant, kind, now, input);
        self.submit(parts, payload)
    }

    /// `batch` checked against the size limit and `table`'s schema.
    fn conformed(&self, table: Table, batch: RecordBatch) -> Result<RecordBatch, StoreError> {
        let bytes = batch.get_array_memory_size();
        if bytes > self.inner.config.max_batch_bytes {
            return Err(StoreError::BatchTooLarge {
                bytes,
                limit: self.inner.config.max_batch_bytes,
            });
        }
        record::conform(table, batch)
    }

    /// Hands a record to the log writer and waits until it is durable.
    fn submit(&self, batches: Vec<(Key, MemBatch)>, payload: Vec<u8>) -> Result<(), StoreError> {
        self.inner.wait_for_memory()?;
        let (reply, done) = sync_channel(1);
        {
            let mut queue = lock(&self.inner.queue);
            queue.pending.push(Pending {
                batches,
                payload,
                reply,
            });
        }
        self.inner.queue_ready.notify_one();
        done.recv()
            .unwrap_or_else(|_| Err(StoreError::Failed("the log writer stopped".into())))?;
        if self.inner.config.background && self.inner.past_flush_mark() {
            self.inner.wake_background();
        }
        Ok(())
    }

    /// Writes every acknowledged row still in memory to Parquet, and deletes the log it
    /// covered.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush(Flush::All)
    }

    /// Merges the small files of every day partition that has two or more (row groups in
    /// time order, rows clustered within each; each row exactly once).
    pub fn compact(&self) -> Result<CompactionReport, StoreError> {
        self.inner.compact(false)
    }

    /// Drops every day partition that ended more than [`StoreConfig::retention`] before `now`
    /// and whose last rows were ingested that long before `now` too (events of old days that
    /// were just ingested, say an EVTX file under investigation, stay for the retention
    /// period), after flushing (so rows in memory are covered too).
    pub fn apply_retention(&self, now: DateTime<Utc>) -> Result<RetentionReport, StoreError> {
        self.inner.apply_retention(now)
    }

    /// `tenant`'s `table` for DataFusion: its Parquet files and in-memory batches as they are
    /// when each scan is planned. Timestamp filters skip files, row groups, pages and batches.
    /// `string` columns come back as `Utf8View` (the table's other types as they are stored);
    /// scans carry each file's row count and Timestamp range as statistics.
    pub fn table_provider(&self, tenant: &str, table: Table) -> Arc<dyn TableProvider> {
        Arc::new(StoreTable {
            source: Arc::clone(&self.inner) as Arc<dyn Snapshots>,
            tenant: tenant.to_string(),
            table,
        })
    }

    /// Rows, files and bytes per tenant and table.
    pub fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    /// Flushes what is in memory and stops the store's threads.
    pub fn close(mut self) -> Result<(), StoreError> {
        let flushed = self.flush();
        self.stop();
        flushed
    }

    fn stop(&mut self) {
        lock(&self.inner.queue).shutdown = true;
        self.inner.queue_ready.notify_all();
        lock(&self.inner.signal).shutdown = true;
        self.inner.signal_ready.notify_all();
        for thread in self.threads.drain(..) {
            // A panicked thread has nothing left to hand over.
            let _ = thread.join();
        }
    }
}

impl Drop for Store {
    /// Stops the threads without flushing: what was acknowledged is in the log.
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| StoreError::Io {
            path: PathBuf::from(name),
            source: Arc::new(e),
        })
}

/// Deletes Parquet files below `dir` that are not `live`, and empty folders.
fn remove_orphans(
    dir: &Path,
    live: &HashSet<PathBuf>,
    removed: &mut Vec<PathBuf>,
) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io_err(&path, e))?;
        if kind.is_dir() {
            remove_orphans(&path, live, removed)?;
            // Only succeeds when empty, which is all that is wanted.
            let _ = std::fs::remove_dir(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") && !live.contains(&path) {
            std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            removed.push(path);
        }
    }
    Ok(())
}

impl Inner {
    fn check_failed(&self) -> Result<(), StoreError> {
        match self.failure.get() {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    fn fail(&self, error: &StoreError) {
        let _ = self.failure.set(error.to_string());
    }

    /// Whether a background flush is due: rows that came in since the last flush, besides
    /// those it held, take half the memory limit. (Counting the held rows would make flushes
    /// come more often the more is held, each logging the held rows again and finding fewer
    /// new rows per partition.)
    fn past_flush_mark(&self) -> bool {
        let memory = self.memory_bytes.load(Ordering::Acquire);
        let held = self.held_bytes.load(Ordering::Acquire);
        memory.saturating_sub(held) >= self.config.memory_limit_bytes / 2
    }

    fn wake_background(&self) {
        lock(&self.signal).flush = true;
        self.signal_ready.notify_one();
    }

    /// Back-pressure: at the memory limit, flush (or wait for the flush under way) first.
    fn wait_for_memory(&self) -> Result<(), StoreError> {
        let limit = self.config.memory_limit_bytes;
        if self.memory_bytes.load(Ordering::Acquire) < limit {
            return Ok(());
        }
        let mut m = lock(&self.maintenance);
        if self.memory_bytes.load(Ordering::Acquire) < limit {
            return Ok(());
        }
        self.flush_locked(&mut m, Flush::Routine)
    }

    /// The log writer: takes every append waiting, writes them with one fsync, makes them
    /// visible, and wakes their callers.
    fn run_writer(&self) {
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                while queue.pending.is_empty() && !queue.shutdown {
                    queue = self
                        .queue_ready
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if queue.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let mut replies = Vec::with_capacity(batch.len());
            let result = self.commit(batch, &mut replies);
            if let Err(e) = &result {
                self.fail(e);
            }
            for reply in replies {
                // The caller may be gone; nothing to tell then.
                let _ = reply.send(result.clone());
            }
        }
    }

    fn commit(
        &self,
        batch: Vec<Pending>,
        replies: &mut Vec<SyncSender<Result<(), StoreError>>>,
    ) -> Result<(), StoreError> {
        // After a failed write the log's tail is unknown: nothing more may follow it.
        let failed = self.check_failed();
        let mut wal = lock(&self.wal);
        let written = failed.and_then(|()| {
            let payloads: Vec<&[u8]> = batch.iter().map(|p| p.payload.as_slice()).collect();
            wal.write(&payloads)
        });
        let mut state = lock(&self.state);
        let mut added = 0;
        for pending in batch {
            replies.push(pending.reply);
            if written.is_ok() {
                for ((tenant, table), batch) in pending.batches {
                    added += batch.bytes;
                    state.part(&tenant, table).active.push(batch);
                }
            }
        }
        written?;
        self.memory_bytes.fetch_add(added, Ordering::AcqRel);
        state.applied_seq = wal.last_seq();
        Ok(())
    }

    fn run_background(&self) {
        let mut last = Instant::now();
        loop {
            {
                let mut signal = lock(&self.signal);
                loop {
                    if signal.shutdown {
                        return;
                    }
                    if std::mem::take(&mut signal.flush) {
                        break;
                    }
                    let wait = match self.config.flush_interval {
                        Some(every) => every.saturating_sub(last.elapsed()),
                        None => Duration::from_secs(3600),
                    };
                    if wait.is_zero() {
                        break;
                    }
                    signal = self
                        .signal_ready
                        .wait_timeout(signal, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            last = Instant::now();
            let done = self.flush(Flush::Routine).and_then(|()| self.compact(true));
            if let Err(e) = done {
                *lock(&self.background_error) = Some(e.to_string());
            }
        }
    }

    fn stats(&self) -> StoreStats {
        let mut tables = Vec::new();
        {
            let state = lock(&self.state);
            for ((tenant, table), part) in &state.parts {
                let memory = part.frozen.iter().chain(&part.active);
                let t = TableStats {
                    tenant: tenant.clone(),
                    table: *table,
                    memory_rows: memory.clone().map(|b| b.batch.num_rows() as u64).sum(),
                    memory_bytes: memory.map(|b| b.bytes as u64).sum(),
                    files: part.files.len(),
                    file_rows: part.files.iter().map(|f| f.meta.rows).sum(),
                    file_bytes: part.files.iter().map(|f| f.meta.bytes).sum(),
                    days: part
                        .files
                        .iter()
                        .map(|f| f.meta.day)
                        .collect::<BTreeSet<_>>()
                        .len(),
                };
                if t.rows() > 0 || t.files > 0 {
                    tables.push(t);
                }
            }
        }
        let wal = lock(&self.wal);
        StoreStats {
            tables,
            wal_bytes: wal.bytes(),
            wal_commits: wal.commits,
            wal_records: wal.records,
            background_error: lock(&self.background_error).clone(),
            work: self.work.read(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        for ok in ["default", "acme-corp", "t_1", &"a".repeat(64)] {
            assert!(validate_tenant(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Acme", "a/b", "..", "é", &"a".repeat(65), "a b"] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let bad = [
            StoreConfig {
                memory_limit_bytes: 0,
                ..StoreConfig::default()
            },
            StoreConfig {
                max_batch_bytes: MAX_BATCH_BYTES_LIMIT + 1,
                ..StoreConfig::default()
            },
            StoreConfig {
                zstd_level: 99,
                ..StoreConfig::default()
            },
            StoreConfig {
                retention: chrono::Duration::zero(),
                ..StoreConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.check(), Err(StoreError::Config(_))),
                "{config:?}"
            );
        }
        assert!(StoreConfig::default().check().is_ok());
    }
}
