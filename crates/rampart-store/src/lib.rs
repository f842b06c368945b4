//! Rampart's event store: rows of the hunting tables, durable before they are acknowledged,
//! queryable at once, kept as Parquet partitioned by tenant, table and day.
//!
//! ```text
//! append ──▶ log writer thread (group commit: one write + fdatasync for every waiting append)
//!              │ durable
//!              ▼
//!            in-memory batches ──(flush: memory limit, interval, close)──▶ Parquet files
//!              │ visible                                                  (zstd, sorted by Timestamp)
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
//! **Limits.** In-memory batches are bounded by [`StoreConfig::memory_limit_bytes`]: above
//! half of it a background flush starts, and an append that finds the limit reached waits for
//! a flush (back-pressure). One append is at most [`StoreConfig::max_batch_bytes`]. Appends in
//! flight (at most one batch per appending thread) come on top.
//!
//! **Readers never block the writer.** A scan copies the list of files and batches (reference
//! counts) under a short lock; a file replaced by compaction or dropped by retention is deleted
//! only when the last scan that may read it is gone.
//!
//! The store's calls block (on fsync, on a flush); from async code call them in
//! `spawn_blocking`.

mod files;
mod manifest;
mod provider;
mod record;
mod wal;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::catalog::TableProvider;
use rampart_schema::Table;

use crate::files::{DataFile, RowRef, order_rows, relative_path, write_file};
use crate::manifest::{FileMeta, Manifest};
use crate::provider::{StoreTable, TimeRange};
use crate::record::MemBatch;
use crate::wal::Wal;

/// The tenant of a single-tenant installation.
pub const DEFAULT_TENANT: &str = "default";
/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;

/// How the store behaves; [`StoreConfig::default`] suits one machine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Day partitions older than this are dropped by [`Store::apply_retention`] (30 days).
    pub retention: chrono::Duration,
    /// Most bytes of acknowledged rows held in memory before they must go to Parquet
    /// (256 MiB). A background flush starts at half of it; appends wait at the limit. Also the
    /// budget of one compaction (half of it).
    pub memory_limit_bytes: usize,
    /// Largest batch one append takes, in Arrow memory bytes (64 MiB; at most 1 GiB).
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
    /// Background compaction merges a partition once it has this many small files (4);
    /// [`Store::compact`] merges any two.
    pub compact_min_files: usize,
    /// Rows per Parquet row group (128 Ki): the unit that Timestamp filters skip.
    pub row_group_rows: usize,
    /// zstd level of the Parquet files (3).
    pub zstd_level: i32,
    /// Compress log records with LZ4 (true): less to write and fsync for a little CPU.
    pub wal_compression: bool,
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
    #[error("invalid tenant name '{0}': use 1 to 64 characters among a-z, 0-9, '_' and '-'")]
    InvalidTenant(String),
    #[error("the batch does not fit table {table}: {detail}")]
    SchemaMismatch { table: Table, detail: String },
    #[error("a batch of {bytes} bytes is more than the {limit} bytes one append takes")]
    BatchTooLarge { bytes: usize, limit: usize },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{}: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
    #[error("arrow: {0}")]
    Arrow(String),
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("the store at {} is open in another process", .0.display())]
    Locked(PathBuf),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("the store stopped accepting writes after an earlier failure (reopen it to recover): {0}")]
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
    pub replayed_rows: u64,
    /// Torn records cut off the end of log segments.
    pub torn: Vec<TornRecord>,
    /// Log records that passed their checksum but could not be decoded, and why (skipped).
    pub skipped_records: Vec<String>,
    /// Files of changes that never committed, deleted.
    pub orphans_removed: Vec<PathBuf>,
}

/// A log record that was not completely written (a crash during the write), truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornRecord {
    pub path: PathBuf,
    pub offset: u64,
    pub dropped_bytes: u64,
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
    pub wal_records: u64,
    /// The last error of the background flush or compaction, if any.
    pub background_error: Option<String>,
}

/// One tenant's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    pub tenant: String,
    pub table: Table,
    /// Rows acknowledged and not yet in Parquet, and their Arrow size.
    pub memory_rows: u64,
    pub memory_bytes: u64,
    pub files: usize,
    pub file_rows: u64,
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
    pub files_merged: usize,
    pub files_written: usize,
    pub rows: u64,
}

/// What retention dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Day partitions dropped (per tenant and table).
    pub partitions: usize,
    pub files: usize,
    pub rows: u64,
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
    fn part(&mut self, tenant: &str, table: Table) -> &mut Part {
        self.parts
            .entry((tenant.to_string(), table))
            .or_default()
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
    key: Key,
    batch: MemBatch,
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
    /// Set when a write failed in a way that leaves the state on disk unknown.
    failure: OnceLock<String>,
    signal: Mutex<Signal>,
    signal_ready: Condvar,
    background_error: Mutex<Option<String>>,
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

const LOCK_FILE: &str = "LOCK";
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
        let opened = wal::open(&dir.join(WAL_DIR), manifest.wal_seq, |seq, payload| {
            match record::decode(payload) {
                Ok(d) => {
                    recovery.replayed_records += 1;
                    for batch in d.batches {
                        recovery.replayed_rows += batch.num_rows() as u64;
                        let batch = MemBatch::new(batch, d.table, d.ingest_us);
                        memory += batch.bytes;
                        state.part(&d.tenant, d.table).active.push(batch);
                    }
                }
                Err(why) => recovery.skipped_records.push(format!("record {seq}: {why}")),
            }
        })?;
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
            failure: OnceLock::new(),
            signal: Mutex::default(),
            signal_ready: Condvar::new(),
            background_error: Mutex::new(None),
            dir,
        });
        let mut threads = Vec::new();
        let writer = Arc::clone(&inner);
        threads.push(spawn("rampart-store-wal", move || writer.run_writer())?);
        if config.background {
            let background = Arc::clone(&inner);
            threads.push(spawn("rampart-store-bg", move || background.run_background())?);
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
        let bytes = batch.get_array_memory_size();
        if bytes > self.inner.config.max_batch_bytes {
            return Err(StoreError::BatchTooLarge {
                bytes,
                limit: self.inner.config.max_batch_bytes,
            });
        }
        let batch = record::conform(table, batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let now = Utc::now().timestamp_micros();
        let payload = record::encode(tenant, table, now, &batch, self.inner.config.wal_compression)?;
        let batch = MemBatch::new(batch, table, now);
        self.inner.wait_for_memory()?;
        let (reply, done) = sync_channel(1);
        {
            let mut queue = lock(&self.inner.queue);
            queue.pending.push(Pending {
                key: (tenant.to_string(), table),
                batch,
                payload,
                reply,
            });
        }
        self.inner.queue_ready.notify_one();
        done.recv()
            .unwrap_or_else(|_| Err(StoreError::Failed("the log writer stopped".into())))?;
        if self.inner.config.background
            && self.inner.memory_bytes.load(Ordering::Relaxed)
                >= self.inner.config.memory_limit_bytes / 2
        {
            self.inner.wake_background();
        }
        Ok(())
    }

    /// Writes every acknowledged row still in memory to Parquet, and deletes the log it
    /// covered.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    /// Merges the small files of every day partition that has two or more (rows stay sorted by
    /// Timestamp; each row exactly once).
    pub fn compact(&self) -> Result<CompactionReport, StoreError> {
        self.inner.compact(2)
    }

    /// Drops every day partition that ended more than [`StoreConfig::retention`] before `now`,
    /// after flushing (so rows in memory are covered too).
    pub fn apply_retention(&self, now: DateTime<Utc>) -> Result<RetentionReport, StoreError> {
        self.inner.apply_retention(now)
    }

    /// `tenant`'s `table` for DataFusion: its Parquet files and in-memory batches as they are
    /// when each scan is planned. Timestamp filters skip files, row groups, pages and batches.
    pub fn table_provider(&self, tenant: &str, table: Table) -> Arc<dyn TableProvider> {
        Arc::new(StoreTable {
            inner: Arc::clone(&self.inner),
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

/// Deletes Parquet and temporary files below `dir` that are not `live`, and empty folders.
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
        } else if path
            .extension()
            .is_some_and(|e| e == "parquet" || e == "tmp")
            && !live.contains(&path)
        {
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
        self.flush_locked(&mut m)
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
                added += pending.batch.bytes;
                state.part(&pending.key.0, pending.key.1).active.push(pending.batch);
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
            let done = self
                .flush()
                .and_then(|()| self.compact(self.config.compact_min_files));
            if let Err(e) = done {
                *lock(&self.background_error) = Some(e.to_string());
            }
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.check_failed()?;
        let mut m = lock(&self.maintenance);
        self.flush_locked(&mut m)
    }

    fn flush_locked(&self, m: &mut Maintenance) -> Result<(), StoreError> {
        // Freeze: the batches to write stay visible; appends go on into fresh lists and a new
        // log segment, so the old segments hold only what this flush writes.
        let (work, upto) = {
            let mut wal = lock(&self.wal);
            let mut state = lock(&self.state);
            let mut work: Vec<(Key, Vec<(RecordBatch, i32)>)> = Vec::new();
            for (key, part) in &mut state.parts {
                if part.active.is_empty() {
                    continue;
                }
                part.frozen = std::mem::take(&mut part.active);
                let batches = part
                    .frozen
                    .iter()
                    .map(|b| (b.batch.clone(), b.ingest_day))
                    .collect();
                work.push((key.clone(), batches));
            }
            if work.is_empty() {
                return Ok(());
            }
            if let Err(e) = wal.rotate() {
                state.unfreeze();
                return Err(e);
            }
            (work, state.applied_seq)
        };

        let mut created = Vec::new();
        let mut new_files = Vec::new();
        let written = self.write_partitions(m, &work, &mut created, &mut new_files);
        let mut next = m.manifest.clone();
        next.files.extend(new_files.iter().map(|(_, f)| f.clone()));
        next.wal_seq = upto;
        next.next_file_id = m.next_file_id;
        if let Err(e) = written.and_then(|()| self.commit_manifest(&next)) {
            if self.failure.get().is_none() {
                remove_all(&created);
            }
            lock(&self.state).unfreeze();
            return Err(e);
        }
        m.manifest = next;

        // Publish: the files replace the frozen batches in one step for readers.
        let mut freed = 0;
        {
            let mut state = lock(&self.state);
            for (table, meta) in new_files {
                let file = Arc::new(DataFile::new(meta, &self.dir));
                state.part(&file.meta.tenant, table).files.push(file);
            }
            for part in state.parts.values_mut() {
                freed += part.frozen.iter().map(|b| b.bytes).sum::<usize>();
                part.frozen.clear();
            }
        }
        self.memory_bytes.fetch_sub(freed, Ordering::AcqRel);
        lock(&self.wal).trim(upto)
    }

    /// Writes one file per tenant, table and day of the frozen batches.
    fn write_partitions(
        &self,
        m: &mut Maintenance,
        work: &[(Key, Vec<(RecordBatch, i32)>)],
        created: &mut Vec<PathBuf>,
        new_files: &mut Vec<(Table, FileMeta)>,
    ) -> Result<(), StoreError> {
        let mut folders = BTreeSet::new();
        for ((tenant, table), batches) in work {
            let props =
                files::writer_properties(*table, self.config.zstd_level, self.config.row_group_rows)?;
            let refs: Vec<(&RecordBatch, i32)> = batches.iter().map(|(b, d)| (b, *d)).collect();
            let rows = order_rows(&refs, *table);
            let sources: Vec<&RecordBatch> = batches.iter().map(|(b, _)| b).collect();
            for day_rows in rows.chunk_by(|a, b| a.day == b.day) {
                let meta = self.write_new_file(m, tenant, *table, &props, &sources, day_rows, created)?;
                folders.insert(self.dir.join(&meta.path).with_file_name(""));
                new_files.push((*table, meta));
            }
        }
        folders.iter().try_for_each(|f| sync_dir(f))
    }

    #[allow(clippy::too_many_arguments)]
    fn write_new_file(
        &self,
        m: &mut Maintenance,
        tenant: &str,
        table: Table,
        props: &parquet::file::properties::WriterProperties,
        sources: &[&RecordBatch],
        rows: &[RowRef],
        created: &mut Vec<PathBuf>,
    ) -> Result<FileMeta, StoreError> {
        let day = rows.first().map_or(0, |r| r.day);
        let id = m.next_file_id;
        m.next_file_id += 1;
        let rel = relative_path(tenant, table, day, id);
        let path = self.dir.join(&rel);
        if let Some(folder) = path.parent() {
            self.ensure_dir(folder)?;
        }
        created.push(path.clone());
        let w = write_file(&path, table, props, sources, rows)?;
        Ok(FileMeta {
            id,
            path: rel,
            tenant: tenant.to_string(),
            table: table.name().to_string(),
            day,
            rows: w.rows,
            bytes: w.bytes,
            memory_bytes: w.memory_bytes,
            min_ts: w.min_ts,
            max_ts: w.max_ts,
        })
    }

    /// Creates a partition folder and makes its entry durable up to the store's folder.
    fn ensure_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let mut child = dir;
        while let Some(parent) = child.parent() {
            sync_dir(parent)?;
            if parent == self.dir {
                break;
            }
            child = parent;
        }
        Ok(())
    }

    /// Commits a manifest; a failure after which the live one is unknown stops the store.
    fn commit_manifest(&self, next: &Manifest) -> Result<(), StoreError> {
        manifest::commit(&self.dir, next).map_err(|e| {
            if e.uncertain {
                self.fail(&e.error);
            }
            e.error
        })
    }

    /// Swaps files in the readers' view: `gone` out (deleted once no scan holds them), `new`
    /// in. Call after the manifest saying so is committed.
    fn replace_files(&self, gone: &HashSet<u64>, new: Option<(Table, FileMeta)>) {
        let mut state = lock(&self.state);
        for part in state.parts.values_mut() {
            part.files.retain(|f| {
                let keep = !gone.contains(&f.meta.id);
                if !keep {
                    f.retire();
                }
                keep
            });
        }
        if let Some((table, meta)) = new {
            let file = Arc::new(DataFile::new(meta, &self.dir));
            state.part(&file.meta.tenant, table).files.push(file);
        }
    }

    fn compact(&self, min_files: usize) -> Result<CompactionReport, StoreError> {
        self.check_failed()?;
        let mut m = lock(&self.maintenance);
        let budget = (self.config.memory_limit_bytes / 2) as u64;
        let mut partitions: BTreeMap<(&str, &str, i32), Vec<&FileMeta>> = BTreeMap::new();
        for f in &m.manifest.files {
            if f.bytes < self.config.compact_small_file_bytes {
                partitions
                    .entry((&f.tenant, &f.table, f.day))
                    .or_default()
                    .push(f);
            }
        }
        // Groups of files to merge, each within the memory budget.
        let mut groups: Vec<Vec<FileMeta>> = Vec::new();
        for files in partitions.into_values() {
            if files.len() < min_files {
                continue;
            }
            let mut group: Vec<FileMeta> = Vec::new();
            let mut size = 0;
            for f in files {
                if !group.is_empty() && size + f.memory_bytes > budget {
                    groups.push(std::mem::take(&mut group));
                    size = 0;
                }
                size += f.memory_bytes;
                group.push(f.clone());
            }
            groups.push(group);
        }
        groups.retain(|g| g.len() >= 2);

        let mut report = CompactionReport::default();
        let mut seen = BTreeSet::new();
        for group in groups {
            if let Some(first) = group.first() {
                seen.insert((first.tenant.clone(), first.table.clone(), first.day));
            }
            report.files_merged += group.len();
            report.rows += group.iter().map(|f| f.rows).sum::<u64>();
            report.files_written += 1;
            self.merge(&mut m, group)?;
        }
        report.partitions = seen.len();
        Ok(report)
    }

    /// Replaces `inputs` (files of one partition) by one file holding all their rows.
    fn merge(&self, m: &mut Maintenance, inputs: Vec<FileMeta>) -> Result<(), StoreError> {
        let Some(first) = inputs.first() else {
            return Ok(());
        };
        let table = table_of(first)?;
        let (tenant, day) = (first.tenant.clone(), first.day);
        let mut batches = Vec::new();
        for f in &inputs {
            batches.extend(files::read_file(&self.dir.join(&f.path), table)?);
        }
        let refs: Vec<(&RecordBatch, i32)> = batches.iter().map(|b| (b, day)).collect();
        let rows = order_rows(&refs, table);
        let sources: Vec<&RecordBatch> = batches.iter().collect();
        let props = files::writer_properties(table, self.config.zstd_level, self.config.row_group_rows)?;
        let mut created = Vec::new();
        let written = self
            .write_new_file(m, &tenant, table, &props, &sources, &rows, &mut created)
            .and_then(|meta| {
                sync_dir(&self.dir.join(&meta.path).with_file_name(""))?;
                Ok(meta)
            });
        let gone: HashSet<u64> = inputs.iter().map(|f| f.id).collect();
        let committed = written.and_then(|meta| {
            let mut next = m.manifest.clone();
            next.files.retain(|f| !gone.contains(&f.id));
            next.files.push(meta.clone());
            next.next_file_id = m.next_file_id;
            self.commit_manifest(&next)?;
            Ok((next, meta))
        });
        match committed {
            Ok((next, meta)) => {
                m.manifest = next;
                self.replace_files(&gone, Some((table, meta)));
                Ok(())
            }
            Err(e) => {
                if self.failure.get().is_none() {
                    remove_all(&created);
                }
                Err(e)
            }
        }
    }

    fn apply_retention(&self, now: DateTime<Utc>) -> Result<RetentionReport, StoreError> {
        self.check_failed()?;
        let mut m = lock(&self.maintenance);
        self.flush_locked(&mut m)?;
        let cutoff = (now - self.config.retention).timestamp_micros();
        // A day is dropped once it has wholly ended before the cutoff.
        let first_kept = cutoff.div_euclid(86_400_000_000);
        let doomed: Vec<&FileMeta> = m
            .manifest
            .files
            .iter()
            .filter(|f| i64::from(f.day) < first_kept)
            .collect();
        let report = RetentionReport {
            partitions: doomed
                .iter()
                .map(|f| (&f.tenant, &f.table, f.day))
                .collect::<BTreeSet<_>>()
                .len(),
            files: doomed.len(),
            rows: doomed.iter().map(|f| f.rows).sum(),
            bytes: doomed.iter().map(|f| f.bytes).sum(),
        };
        if doomed.is_empty() {
            return Ok(report);
        }
        let gone: HashSet<u64> = doomed.iter().map(|f| f.id).collect();
        let folders: BTreeSet<PathBuf> = doomed
            .iter()
            .map(|f| self.dir.join(&f.path).with_file_name(""))
            .collect();
        let mut next = m.manifest.clone();
        next.files.retain(|f| !gone.contains(&f.id));
        self.commit_manifest(&next)?;
        m.manifest = next;
        self.replace_files(&gone, None);
        for folder in folders {
            // Empty unless a scan still holds one of its files; then the next open tidies it.
            let _ = std::fs::remove_dir(&folder);
        }
        Ok(report)
    }

    pub(crate) fn snapshot(&self, tenant: &str, table: Table, range: &TimeRange) -> Snapshot {
        let state = lock(&self.state);
        let Some(part) = state.parts.get(&(tenant.to_string(), table)) else {
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
        }
    }
}

fn table_of(meta: &FileMeta) -> Result<Table, StoreError> {
    Table::from_name(&meta.table).ok_or_else(|| StoreError::Corrupt {
        path: PathBuf::from(&meta.path),
        message: format!("unknown table '{}'", meta.table),
    })
}

/// Deletes files of a change that did not commit (best effort: the next open deletes what is
/// left, as orphans).
fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
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
            assert!(matches!(config.check(), Err(StoreError::Config(_))), "{config:?}");
        }
        assert!(StoreConfig::default().check().is_ok());
    }
}
