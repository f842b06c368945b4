//! Agent telemetry into the store, through detection. Each table batch of a request is checked
//! against the tenant's indicators and its rows are evaluated by the tenant's Sigma rules of
//! `product: linux` (in parallel), then appended durably; rows that feed correlation rules go,
//! in time order, to the tenant's telemetry correlator, which keeps its windows across requests.
//! Detections become alert candidates whose evidence is read from the stored row.
//!
//! Exactly-once delivery: agents number their rows (`X-Rampart-Sequence: FIRST-LAST`); the
//! server stores only rows above the device's high-water mark and raises that mark once they
//! are durable ([`Sequence`], [`skip_stored`]). The numbering may skip numbers (an agent's queue
//! does after dropping records); rows then have no known number each, and where that leaves it
//! open whether a row is above the mark, the row is stored: never lost, at worst stored twice.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, TimestampMicrosecondArray};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use rampart_schema::{KustoType, Row, Table};
use rampart_sigma::{CorrelationInput, Detection, TelemetryRow};
use rampart_store::{Store, StoreError};
use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::alerting::{Candidate, sigma_candidate};
use crate::app::TenantRules;
use crate::auth::AgentIdentity;
use crate::indicators::Indicators;
use crate::problem::Problem;

/// The request header numbering a request's rows.
pub const SEQUENCE_HEADER: &str = "x-rampart-sequence";

/// The inclusive range of sequence numbers of a request's rows, in request order (every row of
/// the first batch, then of the next...), strictly increasing, possibly with numbers skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    pub first: u64,
    pub last: u64,
}

impl Sequence {
    /// The request's `X-Rampart-Sequence: FIRST-LAST`, if it has one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Sequence>, Problem> {
        let Some(value) = headers.get(SEQUENCE_HEADER) else {
            return Ok(None);
        };
        let bad = |why: &str| {
            Problem::bad_request(format!(
                "X-Rampart-Sequence: {why} (expected FIRST-LAST, two sequence numbers \
                 with FIRST <= LAST, e.g. 1001-1500)"
            ))
        };
        let text = value.to_str().map_err(|_| bad("not ASCII text"))?;
        let (first, last) = text.trim().split_once('-').ok_or_else(|| bad("no '-'"))?;
        // Stored as BIGINT: at most i64::MAX.
        let number = |part: &str| {
            part.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && part.bytes().all(|b| b.is_ascii_digit()))
                .map(|n| n as u64)
                .ok_or_else(|| bad(&format!("'{part}' is not a sequence number")))
        };
        let (first, last) = (number(first)?, number(last)?);
        if first > last {
            return Err(bad(&format!("{first} is after {last}")));
        }
        Ok(Some(Sequence { first, last }))
    }

    /// How many numbers the range holds: at least the request's rows.
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// A lower bound of the number of row `index` (from 0), exact when no number was skipped.
    pub fn number_of(&self, index: u64) -> u64 {
        self.first + index
    }
}

/// One table's rows as an agent sent them.
pub struct Received {
    /// The batch's place in the request, for error messages.
    pub index: usize,
    pub table: Table,
    pub rows: Vec<Map<String, Value>>,
}

/// The highest sequence number of `seq` above `high_water` that the store already holds for
/// the agent's device (rows carry their number as `ReportId`), looked up within the time span
/// of the request's rows.
pub async fn stored_through(
    app: &crate::app::App,
    agent: &AgentIdentity,
    seq: Sequence,
    high_water: Option<u64>,
    received: &[Received],
) -> Result<Option<u64>, rampart_kql::KqlError> {
    let low = high_water.map_or(seq.first, |h| (h + 1).max(seq.first));
    if low > seq.last {
        return Ok(None);
    }
    let times: Vec<DateTime<Utc>> = received
        .iter()
        .flat_map(|r| &r.rows)
        .filter_map(|row| row.get("Timestamp")?.as_str()?.parse().ok())
        .collect();
    let (Some(from), Some(to)) = (times.iter().min(), times.iter().max()) else {
        return Ok(None);
    };
    let tables: Vec<&str> = Table::ALL
        .iter()
        .filter(|t| t.column("DeviceId").is_some() && t.column("ReportId").is_some())
        .map(|t| t.name())
        .collect();
    // Device ids are ours (letters, digits, '_'): no quoting issue.
    let query = format!(
        "union {} | where DeviceId == '{}' and Timestamp between (datetime({}) .. datetime({})) \
         and ReportId between ({low} .. {}) | summarize m = max(ReportId)",
        tables.join(", "),
        agent.device_id.replace('\'', ""),
        from.to_rfc3339(),
        to.to_rfc3339(),
        seq.last,
    );
    let engine = rampart_kql::Engine::new(rampart_store::TenantCatalog::of_store(
        app.store.clone(),
        &agent.tenant,
    ));
    let options = rampart_kql::QueryOptions {
        limit: 1,
        timeout: std::time::Duration::from_secs(60),
    };
    let result = engine.run(&query, &options).await?;
    Ok(result
        .json_rows()
        .first()
        .and_then(|row| row.get("m"))
        .and_then(Value::as_u64))
}

/// Drops the first rows, those numbered at or below `high_water`, and the batches left empty;
/// returns how many rows were dropped. At most `LAST - high_water` rows can be above the mark,
/// and they are the last ones: the others are dropped. Without skipped numbers that is exactly
/// the rows at or below the mark; with some, a row that may be above it is kept.
pub fn skip_stored(
    sequence: Sequence,
    high_water: Option<u64>,
    batches: &mut Vec<Received>,
) -> u64 {
    let rows: u64 = batches.iter().map(|b| b.rows.len() as u64).sum();
    let above = high_water.map_or(rows, |h| sequence.last.saturating_sub(h));
    let stored = rows - rows.min(above);
    let mut left = stored;
    for batch in batches.iter_mut() {
        let n = left.min(batch.rows.len() as u64) as usize;
        batch.rows.drain(..n);
        left -= n as u64;
    }
    batches.retain(|b| !b.rows.is_empty());
    stored
}

/// One table's rows of a request: as received (device columns fixed) and as an Arrow batch.
struct Batch {
    table: Table,
    rows: Vec<Map<String, Value>>,
    batch: RecordBatch,
}

impl Batch {
    /// The rows as a batch of their table: the device columns forced to the agent's, values of
    /// text columns (string and dynamic) that are not strings kept as their JSON text (as
    /// Defender keeps `AdditionalFields`), unknown columns refused.
    fn of(received: Received, agent: &AgentIdentity) -> Result<Batch, Problem> {
        let Received {
            index,
            table,
            mut rows,
        } = received;
        let refused = |e: String| Problem::bad_request(format!("batches[{index}] ({table}): {e}"));
        let text: Vec<&str> = table
            .columns()
            .iter()
            .filter(|c| matches!(c.kind, KustoType::Dynamic | KustoType::String))
            .map(|c| c.name)
            .collect();
        let has = |name: &str| table.column(name).is_some();
        for (n, row) in rows.iter_mut().enumerate() {
            if let Some(unknown) = row.keys().find(|k| !has(k)) {
                return Err(refused(format!("rows[{n}]: no column '{unknown}'")));
            }
            for name in &text {
                if let Some(v) = row.get_mut(*name)
                    && !v.is_string()
                    && !v.is_null()
                {
                    *v = Value::String(v.to_string());
                }
            }
            if has("DeviceId") {
                row.insert("DeviceId".into(), Value::String(agent.device_id.clone()));
            }
            if has("DeviceName") {
                row.insert("DeviceName".into(), Value::String(agent.hostname.clone()));
            }
        }
        let mut decoder = ReaderBuilder::new(table.arrow_schema())
            .with_batch_size(rows.len().max(1))
            .build_decoder()
            .map_err(|e| refused(e.to_string()))?;
        decoder
            .serialize(&rows)
            .map_err(|e| refused(e.to_string()))?;
        let batch = decoder
            .flush()
            .map_err(|e| refused(e.to_string()))?
            .ok_or_else(|| refused("no rows".into()))?;
        Ok(Batch { table, rows, batch })
    }
}

/// What ingesting a request did, also when an append failed part-way.
#[derive(Default)]
pub struct Ingested {
    /// Rows appended per table.
    pub per_table: BTreeMap<&'static str, u64>,
    /// Rows appended, from the first on: every row before them is durable.
    pub stored: u64,
    /// Alerts to raise on the stored rows.
    pub candidates: Vec<Candidate>,
    /// The append that failed; the batches after it were not appended.
    pub error: Option<StoreError>,
}

/// Converts the batches (400 for rows that do not fit their table), detects on them and appends
/// them in order, stopping at the first failed append. `first_record` numbers the first row
/// (its sequence number, or 1 without one).
pub fn ingest(
    store: &Store,
    rules: &TenantRules,
    indicators: &Indicators,
    agent: &AgentIdentity,
    received: Vec<Received>,
    first_record: u64,
) -> Result<Ingested, Problem> {
    let batches = received
        .into_iter()
        .map(|r| Batch::of(r, agent))
        .collect::<Result<Vec<_>, _>>()?;
    let source: Arc<Path> = Arc::from(Path::new(&format!("agent:{}", agent.hostname)));
    let now = Utc::now();
    let mut out = Ingested::default();
    // The batches (a correlation's alert reads its row back from one) and the rows held for
    // correlations: (batch, row, input).
    let mut kept: Vec<(Table, RecordBatch)> = Vec::new();
    let mut held: Vec<(usize, usize, CorrelationInput<TelemetryRow<'static>>)> = Vec::new();
    let mut record = first_record;
    for Batch { table, rows, batch } in batches {
        let times = timestamps(&batch, now);
        let found = detect(rules, table, &rows, &times, record, &source);
        record += rows.len() as u64;
        let mut candidates = Vec::new();
        for (index, detections, input) in found {
            let row = Row::from_batch(table, &batch, index);
            candidates.extend(
                detections
                    .iter()
                    .map(|d| sigma_candidate(rules, d, row.as_ref())),
            );
            if let Some(input) = input {
                held.push((kept.len(), index, input));
            }
        }
        candidates.extend(indicators.scan(table, &batch).iter().map(|hit| Candidate {
            draft: crate::indicators::draft(table, &batch, hit),
            rule_id: None,
            kind: None,
        }));
        let n = batch.num_rows() as u64;
        kept.push((table, batch.clone()));
        if let Err(e) = store.append(&agent.tenant, table, batch) {
            // This batch's rows and what they fed are not stored: drop them.
            held.retain(|(b, _, _)| *b + 1 < kept.len());
            out.error = Some(e);
            break;
        }
        out.candidates.append(&mut candidates);
        *out.per_table.entry(table.name()).or_default() += n;
        out.stored += n;
    }
    correlate(rules, held, &kept, &mut out.candidates);
    Ok(out)
}

/// Each row's detections and correlation input, for the rows that have any: (row, ...).
type Found = Vec<(
    usize,
    Vec<Detection>,
    Option<CorrelationInput<TelemetryRow<'static>>>,
)>;

/// The tenant's rules on every row, in parallel; rows are borrowed, and copied only when a
/// correlation needs them later.
fn detect(
    rules: &TenantRules,
    table: Table,
    rows: &[Map<String, Value>],
    times: &[DateTime<Utc>],
    first_record: u64,
    source: &Arc<Path>,
) -> Found {
    rows.par_iter()
        .zip(times)
        .enumerate()
        .filter_map(|(index, (columns, &timestamp))| {
            let row = TelemetryRow {
                table: table.name(),
                columns: Cow::Borrowed(columns),
                timestamp,
                record_id: first_record + index as u64,
                source: source.clone(),
            };
            let mut detections = Vec::new();
            let held = rules.set.evaluate_row(&row, &mut detections);
            (!detections.is_empty() || held.is_some()).then_some((index, detections, held))
        })
        .collect()
}

/// Feeds the held rows to the tenant's telemetry correlator in time order; a correlation's
/// alert carries the row that completed it.
fn correlate(
    rules: &TenantRules,
    mut held: Vec<(usize, usize, CorrelationInput<TelemetryRow<'static>>)>,
    kept: &[(Table, RecordBatch)],
    candidates: &mut Vec<Candidate>,
) {
    if held.is_empty() {
        return;
    }
    held.sort_by_key(|(_, _, input)| (input.event.timestamp, input.event.record_id));
    let mut correlator = rules
        .telemetry_correlator
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut found = Vec::new();
    for (batch, index, input) in held {
        correlator.feed(input, &mut found);
        let (table, batch) = &kept[batch];
        let row = Row::from_batch(*table, batch, index);
        candidates.extend(
            found
                .drain(..)
                .map(|d| sigma_candidate(rules, &d, row.as_ref())),
        );
    }
}

/// Each row's `Timestamp` as the batch holds it; a row without one gets `fallback` (the time
/// the request came in).
fn timestamps(batch: &RecordBatch, fallback: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let column = batch
        .column_by_name("Timestamp")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>());
    (0..batch.num_rows())
        .map(|i| {
            column
                .filter(|c| c.is_valid(i))
                .and_then(|c| DateTime::from_timestamp_micros(c.value(i)))
                .unwrap_or(fallback)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn header(value: &str) -> Result<Option<Sequence>, Problem> {
        let mut headers = HeaderMap::new();
        headers.insert(SEQUENCE_HEADER, HeaderValue::from_str(value).unwrap());
        Sequence::from_headers(&headers)
    }

    #[test]
    fn sequence_header() {
        assert_eq!(Sequence::from_headers(&HeaderMap::new()).unwrap(), None);
        let s = header("1001-1500").unwrap().unwrap();
        assert_eq!((s.first, s.last, s.len()), (1001, 1500, 500));
        assert_eq!(header(" 7-7 ").unwrap().unwrap().len(), 1);
        for bad in [
            "",
            "12",
            "5-4",
            "-1-3",
            "+1-3",
            "a-b",
            "1-9223372036854775808",
            "1 - 3",
        ] {
            let problem = header(bad).unwrap_err();
            assert_eq!(problem.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                problem
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains("X-Rampart-Sequence")),
                "{bad}: {problem:?}"
            );
        }
    }

    #[test]
    fn stored_rows_are_skipped_from_the_front() {
        let batch = |index, table, n| Received {
            index,
            table,
            rows: (0..n).map(|_| Map::new()).collect(),
        };
        let request = || {
            vec![
                batch(0, Table::DeviceProcessEvents, 3),
                batch(1, Table::DeviceNetworkEvents, 2),
            ]
        };
        let seq = Sequence {
            first: 101,
            last: 105,
        };
        let lens = |b: &[Received]| {
            b.iter()
                .map(|b| (b.index, b.rows.len()))
                .collect::<Vec<_>>()
        };
        let mut b = request();
        assert_eq!(skip_stored(seq, None, &mut b), 0);
        assert_eq!(skip_stored(seq, Some(100), &mut b), 0);
        assert_eq!(lens(&b), lens(&request()));
        assert_eq!(skip_stored(seq, Some(104), &mut b), 4);
        assert_eq!(lens(&b), [(1, 1)]);
        let mut b = request();
        assert_eq!(skip_stored(seq, Some(102), &mut b), 2);
        assert_eq!(lens(&b), [(0, 1), (1, 2)]);
        let mut b = request();
        assert_eq!(skip_stored(seq, Some(900), &mut b), 5);
        assert!(b.is_empty());
        // 5 rows numbered within 101-110: numbers were skipped, where is unknown. Above 107 at
        // most 3 rows; above 104, any of the 5 may be.
        let gaps = Sequence {
            first: 101,
            last: 110,
        };
        let mut b = request();
        assert_eq!(skip_stored(gaps, Some(107), &mut b), 2);
        assert_eq!(lens(&b), [(0, 1), (1, 2)]);
        let mut b = request();
        assert_eq!(skip_stored(gaps, Some(104), &mut b), 0);
        assert_eq!(gaps.number_of(2), 103);
    }
}
