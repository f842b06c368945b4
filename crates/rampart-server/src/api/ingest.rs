//! Ingest through the API. An uploaded `.evtx` is spooled to disk (bounded); forwarded events
//! arrive as newline-delimited JSON, optionally compressed, held in memory (bounded before and
//! after decompression). Either way the records go through the one pipeline
//! ([`crate::pipeline::Ingest`]) into the tenant's tables and detection, and the request is
//! acknowledged once its rows are durable and its alerts stored.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use rampart_sources::jsonl;
use rampart_state::Principal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::spool::Spool;
use crate::app::{App, TenantRules};
use crate::forwarded::{self, Encoding};
use crate::pipeline::{DEFAULT_BATCH_ROWS, Ingest, Ingested};
use crate::problem::{ApiResult, Problem, Query, json};

/// Line errors listed in an answer at most; `set_aside` counts them all.
const MAX_LISTED_ERRORS: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The file's name, as alerts will cite it (default `upload.evtx`).
    name: Option<String>,
}

pub async fn evtx(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult {
    let received = Instant::now();
    let _slot = app.ingest_slot().await?;
    let name = sanitize_name(q.name.as_deref().unwrap_or("upload.evtx"), "upload.evtx");
    let spool = Spool::create(&app, &name).await?;
    let limit = app.config.limits.max_upload_bytes;
    if spool
        .fill(body, limit, "limits.max_upload_bytes", |_| {})
        .await?
        == 0
    {
        return Err(Problem::bad_request(
            "the body is empty: send the .evtx file's bytes",
        ));
    }

    let rules = app.rules_of(&p.tenant_id);
    let compiled = rules.clone();
    let indicators = app.indicators_of(&p.tenant_id).await?;
    let store = app.store.clone();
    let tenant = p.tenant_id.clone();
    let path = spool.path.clone();
    let ingested = tokio::task::spawn_blocking(move || {
        Ingest {
            store: &store,
            tenant: &tenant,
            rules: Some(&compiled.set),
            indicators: Some(&indicators),
            batch_rows: DEFAULT_BATCH_ROWS,
            logged_as: None,
        }
        .run(std::slice::from_ref(&path), |_, _| {})
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let spool_dir = spool.path.display().to_string();
    drop(spool);

    let errors: Vec<String> = ingested
        .per_file
        .iter()
        .flat_map(|(_, s)| {
            s.errors
                .iter()
                .map(|e| e.to_string().replace(&spool_dir, &name))
        })
        .collect();
    let mut body = answer(&app, &p, &name, &rules, &ingested, received).await?;
    body.insert("file".into(), json!(name));
    body.insert("errors".into(), json!(errors));
    Ok(json(&body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// What alerts cite as the events' source (default `events`), e.g. the forwarder's name.
    name: Option<String>,
}

/// Forwarded Windows events: one JSON record per line, in the `evtx` crate's rendering with
/// separated attributes (`{"Event": {"System": {..., "TimeCreated_attributes": {"SystemTime":
/// ...}}, "EventData": {...}}}`), optionally `Content-Encoding: gzip` or `zstd`. A line that is
/// not such a record is set aside and reported by number; the others are ingested.
pub async fn events(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let received = Instant::now();
    let encoding = Encoding::of(&headers)?;
    let _slot = app.ingest_slot().await?;
    let limits = &app.config.limits;
    let (max_bytes, max_events) = (limits.max_events_bytes, limits.max_events_per_request);
    // The compressed body is held to the same bound: it is never larger than what it expands to
    // by more than a few bytes.
    let raw = read_bounded(body, max_bytes).await?;
    let name = sanitize_name(q.name.as_deref().unwrap_or("events"), "events");

    let rules = app.rules_of(&p.tenant_id);
    let compiled = rules.clone();
    let indicators = app.indicators_of(&p.tenant_id).await?;
    let store = app.store.clone();
    let tenant = p.tenant_id.clone();
    let source = name.clone();
    let ingested = tokio::task::spawn_blocking(move || {
        let text = encoding.decode(&raw, max_bytes)?;
        let lines = jsonl::lines(&text);
        if lines.is_empty() {
            return Err(Problem::bad_request(
                "the body holds no events: send one JSON record per line",
            ));
        }
        if lines.len() > max_events {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} events in one request; the limit is {max_events}",
                    lines.len()
                ),
            ));
        }
        // The body a request of the usual size came as is what the log keeps (one record);
        // a larger one's rows are appended batch by batch as they fill, as a file's are.
        let log_body =
            (lines.len() <= DEFAULT_BATCH_ROWS).then(|| forwarded::input(encoding, &raw));
        Ingest {
            store: &store,
            tenant: &tenant,
            rules: Some(&compiled.set),
            indicators: Some(&indicators),
            batch_rows: DEFAULT_BATCH_ROWS,
            logged_as: log_body.as_ref().map(|input| (forwarded::KIND, &input[..])),
        }
        .run_lines(Path::new(&source), &lines)
        .map_err(Problem::internal)
    })
    .await
    .map_err(Problem::internal)??;

    let errors: Vec<Value> = ingested
        .per_file
        .iter()
        .flat_map(|(_, s)| &s.errors)
        .take(MAX_LISTED_ERRORS)
        .map(|e| json!({"line": e.offset, "error": e.message}))
        .collect();
    let mut body = answer(&app, &p, &name, &rules, &ingested, received).await?;
    body.insert("source".into(), json!(name));
    body.insert("errors".into(), json!(errors));
    Ok(json(&body))
}

/// What both routes answer once the records are stored: counts, alerts raised (stored before
/// this returns), and the metrics updated.
async fn answer(
    app: &App,
    p: &Principal,
    source: &str,
    rules: &TenantRules,
    ingested: &Ingested,
    received: Instant,
) -> Result<serde_json::Map<String, Value>, Problem> {
    let records = ingested.records();
    let set_aside = ingested.set_aside();
    let m = &app.metrics;
    m.events_ingested.fetch_add(records, Ordering::Relaxed);
    m.events_set_aside.fetch_add(set_aside, Ordering::Relaxed);
    let outcome = crate::alerting::raise(app, &p.tenant_id, source, rules, ingested).await?;
    m.observe_detection(received.elapsed());

    let per_table: BTreeMap<&str, u64> = ingested
        .per_table
        .iter()
        .map(|(t, n)| (t.name(), *n))
        .collect();
    let mut body = serde_json::Map::new();
    body.insert("records".into(), json!(records));
    body.insert("set_aside".into(), json!(set_aside));
    body.insert("rows_per_table".into(), json!(per_table));
    body.insert("detections".into(), json!(ingested.hits.len()));
    body.insert("alerts".into(), json!(outcome));
    Ok(body)
}

fn too_large(detail: String) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
}

/// The body in memory, refusing (413) past `limit` bytes.
async fn read_bounded(body: Body, limit: u64) -> Result<Vec<u8>, Problem> {
    let mut stream = body.into_data_stream();
    let mut raw = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_request(format!("upload interrupted: {e}")))?;
        if (raw.len() + chunk.len()) as u64 > limit {
            return Err(too_large(format!(
                "event bodies are limited to {limit} bytes"
            )));
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

/// A file name safe to show and to put in a path: its last component, printable, bounded
/// (`fallback` when nothing is left).
fn sanitize_name(name: &str, fallback: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    if clean.is_empty() || clean == "." || clean == ".." {
        fallback.into()
    } else {
        clean
    }
}
