//! Windows events into the store, through detection: every record is mapped to its
//! hunting-table row and appended (durably) to the store in batches, and evaluated by the Sigma
//! rules; what matched comes back as [`Hit`]s (the detection with its row) for alerting. One
//! path ([`Ingest::events`]) whatever read the records — `.evtx` files ([`Ingest::run`]) or
//! forwarded JSON lines ([`Ingest::run_lines`]) — for `rampart ingest` (no rules) and the
//! server's uploads alike.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rampart_schema::{BatchBuilder, Row, Table};
use rampart_sigma::{CorrelationInput, Detection, RuleSet};
use rampart_sources::WinEvent;
use rampart_sources::evtx::{self, FileSummary};
use rampart_sources::jsonl::{self, Line};
use rampart_sources::windows::map_event;
use rampart_store::{Store, StoreError};

/// Rows per batch appended to the store by default.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// A rule that matched, and the row of the record it matched.
#[derive(Debug, Clone)]
pub struct Hit {
    pub detection: Detection,
    pub row: Row,
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
    pub batch_rows: usize,
}

/// The name `rampart ingest` builds it by.
pub type EvtxIngest<'a> = Ingest<'a>;

/// One reading thread's rows being batched, and what it found.
#[derive(Default)]
struct Shard {
    builders: HashMap<Table, BatchBuilder>,
    appended: BTreeMap<Table, u64>,
    hits: Vec<Hit>,
    held: Vec<CorrelationInput>,
    computers: HashMap<String, DateTime<Utc>>,
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
        let append = |shard: &mut Shard, mut builder: BatchBuilder| {
            let mut failed = failure.lock().unwrap_or_else(|p| p.into_inner());
            if failed.is_some() {
                return;
            }
            let table = builder.table();
            let batch = builder.finish();
            let rows = batch.num_rows() as u64;
            match self.store.append(self.tenant, table, batch) {
                Ok(()) => *shard.appended.entry(table).or_default() += rows,
                Err(e) => *failed = Some(e),
            }
        };
        let on_event = |event: WinEvent| {
            let mut detections = Vec::new();
            let held = self
                .rules
                .and_then(|rules| rules.evaluate(&event, &mut detections));
            let row = map_event(&event);
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
            let builder = shard
                .builders
                .entry(table)
                .or_insert_with(|| table.batch_builder());
            // The builder is the row's own table's: this cannot fail.
            let _ = builder.append(&row);
            if builder.len() >= self.batch_rows {
                let full = std::mem::replace(builder, table.batch_builder());
                append(&mut shard, full);
            }
        };
        let per_file = read(&on_event);

        let mut out = Ingested {
            per_file,
            ..Ingested::default()
        };
        let mut held = Vec::new();
        for shard in shards {
            let mut shard = shard.into_inner().unwrap_or_else(|p| p.into_inner());
            for (_, builder) in std::mem::take(&mut shard.builders) {
                if !builder.is_empty() {
                    append(&mut shard, builder);
                }
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
        if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
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
        let row = map_event(&input.event);
        correlator.feed(input, &mut found);
        hits.extend(found.drain(..).map(|detection| Hit {
            detection,
            row: row.clone(),
        }));
    }
}
