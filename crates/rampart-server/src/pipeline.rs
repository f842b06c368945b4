//! Windows events into the store, through detection: every record is mapped to its
//! hunting-table row and appended (durably) to the store in batches, and evaluated by the Sigma
//! rules; what matched comes back as [`Hit`]s (the detection with its row) for alerting. One
//! path ([`Ingest::events`]) whatever read the records — `.evtx` files ([`Ingest::run`]) or
//! forwarded JSON lines ([`Ingest::run_lines`]) — for `rampart ingest` (no rules) and the
//! server's uploads alike.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use rampart_alerts::AlertDraft;
use rampart_schema::{Row, Table};
use rampart_sigma::{CorrelationInput, Detection, RuleSet};
use rampart_sources::WinEvent;
use rampart_sources::evtx::{self, FileSummary};
use rampart_sources::jsonl::{self, Line};
use rampart_sources::windows::map_event;
use rampart_store::{Store, StoreError};

use crate::indicators::Indicators;
use rayon::prelude::*;

/// Rows per batch appended to the store by default.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// A rule that matched, and the row of the record it matched.
#[derive(Debug, Clone)]
pub struct Hit {
    pub detection: Detection,
    /// Shared by the detections of one record.
    pub row: Arc<Row>,
}

/// What reading some inputs (files, or one request's lines) gave.
#[derive(Debug, Default)]
pub struct Ingested {
    /// Rows appended (acknowledged by the store) per table.
    pub per_table: BTreeMap<Table, u64>,
    pub per_file: Vec<(PathBuf, FileSummary)>,
    /// In time order (then source, record, rule): the same input always gives the same list.
    pub hits: Vec<Hit>,
    /// Each computer seen, with the time of its latest record.
    pub computers: BTreeMap<String, DateTime<Utc>>,
    /// Alerts of the tenant's indicators found in the stored rows.
    pub indicator_drafts: Vec<AlertDraft>,
}

impl Ingested {
    pub fn records(&self) -> u64 {
        self.per_file.iter().map(|(_, s)| s.records).sum()
    }

    /// Records the files hold that could not be read.
    pub fn set_aside(&self) -> u64 {
        self.per_file.iter().map(|(_, s)| s.lost).sum()
    }
}

/// Reads Windows events into one tenant's tables of a store.
pub struct Ingest<'a> {
    pub store: &'a Store,
    pub tenant: &'a str,
    /// Evaluated on every record when given.
    pub rules: Option<&'a RuleSet>,
    /// Matched against every batch before it is stored, when given.
    pub indicators: Option<&'a Indicators>,
    pub batch_rows: usize,
    /// The source input (kind, input) the rows are made of, logged by the store instead of
    /// the rows ([`Store::append_source`]): the rows of every table are then appended at the
    /// end, at once.
    pub logged_as: Option<(&'a str, &'a [u8])>,
}

/// Small maps looked up once or twice per record: foldhash rather than SipHash.
type Fast = foldhash::fast::RandomState;

/// One reading thread's rows waiting for their batch, and what it found.
#[derive(Default)]
struct Shard {
    /// Kept as rows until a batch is made of them (at `batch_rows`, or at the end from every
    /// shard's rows of the table): its buffers are then sized for them, and one table's rows
    /// of several threads become one batch without a copy (building in Arrow builders as rows
    /// came, buffer growth and the concatenation of the threads' batches cost ~3 % of the
    /// server's instructions).
    rows: HashMap<Table, Vec<Arc<Row>>, Fast>,
    appended: BTreeMap<Table, u64>,
    hits: Vec<Hit>,
    held: Vec<CorrelationInput>,
    computers: HashMap<String, DateTime<Utc>, Fast>,
}

impl Ingest<'_> {
    /// Reads `files` (in parallel), calling `on_file` as each is done.
    pub fn run(
        &self,
        files: &[PathBuf],
        on_file: impl Fn(&Path, &FileSummary) + Sync,
    ) -> Result<Ingested, StoreError> {
        self.events(|on_event| evtx::read_files(files, on_event, on_file))
    }

    /// Reads forwarded events, one JSON record per line (in parallel); `source` names them in
    /// alerts and errors.
    pub fn run_lines(&self, source: &Path, lines: &[Line<'_>]) -> Result<Ingested, StoreError> {
        self.events(|on_event| {
            vec![(
                source.to_path_buf(),
                jsonl::read_lines(source, lines, on_event),
            )]
        })
    }

    /// The one path every reader goes through: `read` hands each record it reads to the
    /// function it is given (from any thread) and returns what each of its inputs gave. The
    /// first store failure stops further appends and is returned; rows appended before it stay
    /// acknowledged.
    pub fn events(
        &self,
        read: impl FnOnce(&(dyn Fn(WinEvent) + Sync)) -> Vec<(PathBuf, FileSummary)>,
    ) -> Result<Ingested, StoreError> {
        let failure: Mutex<Option<StoreError>> = Mutex::new(None);
        let shards: Vec<Mutex<Shard>> = (0..rayon::current_num_threads() + 1)
            .map(|_| Mutex::default())
            .collect();
        // Rows stored, or `None` once any append has failed. The failure lock is not held
        // across the append: appends from several threads then wait for the store together and
        // share its group commit (one fsync), instead of one fsync each in turn.
        let indicator_drafts: Mutex<Vec<AlertDraft>> = Mutex::default();
        // With `logged_as`, the batches waiting for the one append of them all.
        let collected: Mutex<Vec<(Table, RecordBatch)>> = Mutex::default();
        let store = |table: Table, batch: RecordBatch| -> Option<u64> {
            if failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                return None;
            }
            if let Some(indicators) = self.indicators.filter(|i| !i.is_empty()) {
                let drafts: Vec<AlertDraft> = indicators
                    .scan(table, &batch)
                    .iter()
                    .map(|hit| crate::indicators::draft(table, &batch, hit))
                    .collect();
                if !drafts.is_empty() {
                    indicator_drafts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(drafts);
                }
            }
            let rows = batch.num_rows() as u64;
            if self.logged_as.is_some() {
                // Counted once appended.
                collected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((table, batch));
                return None;
            }
            match self.store.append(self.tenant, table, batch) {
                Ok(()) => Some(rows),
                Err(e) => {
                    failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    None
                }
            }
        };
        // A batch of rows of `table`: they are by construction, else the request fails rather
        // than lose them.
        let batch_of = |table: Table, rows: &[Arc<Row>]| -> Option<RecordBatch> {
            let rows: Vec<&Row> = rows.iter().map(|r| &**r).collect();
            match table.batch_of(&rows) {
                Ok(batch) => Some(batch),
                Err(e) => {
                    let mismatch = StoreError::SchemaMismatch {
                        table,
                        detail: e.to_string(),
                    };
                    failure
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(mismatch);
                    None
                }
            }
        };
        let on_event = |event: WinEvent| {
            let mut detections = Vec::new();
            let held = self
                .rules
                .and_then(|rules| rules.evaluate(&event, &mut detections));
            let row = Arc::new(map_event(&event));
            let table = row.table();
            let slot = rayon::current_thread_index().map_or(0, |i| i + 1);
            let mut shard = shards[slot].lock().unwrap_or_else(|p| p.into_inner());
            match shard.computers.get_mut(&event.computer) {
                Some(seen) => *seen = (*seen).max(event.timestamp),
                None => {
                    shard
                        .computers
                        .insert(event.computer.clone(), event.timestamp);
                }
            }
            shard.held.extend(held);
            shard
                .hits
                .extend(detections.into_iter().map(|detection| Hit {
                    detection,
                    row: row.clone(),
                }));
            let rows = shard.rows.entry(table).or_default();
            rows.push(row);
            let full = (rows.len() >= self.batch_rows).then(|| std::mem::take(rows));
            if let Some(full) = full {
                // Built and appended without the shard's lock: the thread's next record must
                // not wait for the fsync of this batch.
                drop(shard);
                if let Some(rows) = batch_of(table, &full).and_then(|batch| store(table, batch)) {
                    let mut shard = shards[slot].lock().unwrap_or_else(|p| p.into_inner());
                    *shard.appended.entry(table).or_default() += rows;
                }
            }
        };
        let per_file = read(&on_event);

        let mut out = Ingested {
            per_file,
            ..Ingested::default()
        };
        let mut held = Vec::new();
        let mut rest: BTreeMap<Table, Vec<Arc<Row>>> = BTreeMap::new();
        for shard in shards {
            let mut shard = shard.into_inner().unwrap_or_else(|p| p.into_inner());
            for (table, rows) in std::mem::take(&mut shard.rows) {
                rest.entry(table).or_default().extend(rows);
            }
            for (table, n) in shard.appended {
                *out.per_table.entry(table).or_default() += n;
            }
            for (computer, seen) in shard.computers {
                let latest = out.computers.entry(computer).or_insert(seen);
                *latest = (*latest).max(seen);
            }
            out.hits.append(&mut shard.hits);
            held.append(&mut shard.held);
        }
        // What is left in the shards goes as few batches of at most `batch_rows` per table
        // (fewer, larger log records and files), and every table at once (one group commit).
        let most = self.batch_rows.max(1);
        let packed: Vec<(Table, &[Arc<Row>])> = rest
            .iter()
            .flat_map(|(table, rows)| rows.chunks(most).map(move |chunk| (*table, chunk)))
            .collect();
        let stored: Vec<(Table, u64)> = packed
            .into_par_iter()
            .filter_map(|(table, rows)| Some((table, store(table, batch_of(table, rows)?)?)))
            .collect();
        for (table, n) in stored {
            *out.per_table.entry(table).or_default() += n;
        }
        if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        if let Some((kind, input)) = self.logged_as {
            let batches = collected.into_inner().unwrap_or_else(|p| p.into_inner());
            let counts: Vec<(Table, u64)> = batches
                .iter()
                .map(|(table, b)| (*table, b.num_rows() as u64))
                .collect();
            self.store
                .append_source(self.tenant, kind, input, batches)?;
            for (table, n) in counts {
                *out.per_table.entry(table).or_default() += n;
            }
        }
        out.indicator_drafts = indicator_drafts
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(rules) = self.rules {
            correlate(rules, held, &mut out.hits);
        }
        out.hits.sort_by_cached_key(|h| {
            let d = &h.detection;
            (
                d.timestamp,
                d.source.clone(),
                d.record_id,
                d.rule.title.clone(),
            )
        });
        Ok(out)
    }
}

/// Correlation rules see the records in time order; a correlation's hit carries the row of the
/// record that completed it.
fn correlate(rules: &RuleSet, mut held: Vec<CorrelationInput>, hits: &mut Vec<Hit>) {
    held.sort_by_key(|i| (i.event.timestamp, i.event.record_id));
    let mut correlator = rules.correlator();
    let mut found = Vec::new();
    for input in held {
        let row = Arc::new(map_event(&input.event));
        correlator.feed(input, &mut found);
        hits.extend(found.drain(..).map(|detection| Hit {
            detection,
            row: row.clone(),
        }));
    }
}
