//! File ingest through the API: an uploaded `.evtx` is spooled to disk (bounded), read into the
//! tenant's tables, detected on, and acknowledged once its rows are durable and its alerts
//! stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use rampart_state::Principal;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::app::App;
use crate::pipeline::{DEFAULT_BATCH_ROWS, EvtxIngest};
use crate::problem::{ApiResult, Problem, Query, json};

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
    let name = sanitize_name(q.name.as_deref().unwrap_or("upload.evtx"));
    let spool = Spool::create(&app, &name).await?;
    spool.fill(body, app.config.limits.max_upload_bytes).await?;

    let rules = app.rules_of(&p.tenant_id);
    let compiled = rules.clone();
    let store = app.store.clone();
    let tenant = p.tenant_id.clone();
    let path = spool.path.clone();
    let ingested = tokio::task::spawn_blocking(move || {
        EvtxIngest {
            store: &store,
            tenant: &tenant,
            rules: Some(&compiled.set),
            batch_rows: DEFAULT_BATCH_ROWS,
        }
        .run(std::slice::from_ref(&path), |_, _| {})
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)?;
    let spool_dir = spool.path.display().to_string();
    drop(spool);

    let records = ingested.records();
    let set_aside = ingested.set_aside();
    let errors: Vec<String> = ingested
        .per_file
        .iter()
        .flat_map(|(_, s)| {
            s.errors
                .iter()
                .map(|e| e.to_string().replace(&spool_dir, &name))
        })
        .collect();
    let m = &app.metrics;
    m.events_ingested.fetch_add(records, Ordering::Relaxed);
    m.events_set_aside.fetch_add(set_aside, Ordering::Relaxed);
    let outcome = crate::alerting::raise(&app, &p.tenant_id, &name, &rules, &ingested).await?;
    m.observe_detection(received.elapsed());

    let per_table: BTreeMap<&str, u64> = ingested
        .per_table
        .iter()
        .map(|(t, n)| (t.name(), *n))
        .collect();
    let body = json!({
        "file": name,
        "records": records,
        "set_aside": set_aside,
        "rows_per_table": per_table,
        "errors": errors,
        "detections": ingested.hits.len(),
        "alerts": outcome,
    });
    Ok(json(&body))
}

/// A file name safe to show and to put in a path: its last component, printable, bounded.
fn sanitize_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    if clean.is_empty() || clean == "." || clean == ".." {
        "upload.evtx".into()
    } else {
        clean
    }
}

/// An upload on disk, removed (with its folder) when dropped.
struct Spool {
    dir: PathBuf,
    path: PathBuf,
}

impl Spool {
    async fn create(app: &App, name: &str) -> Result<Spool, Problem> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A folder per upload keeps the file's own name (alerts cite it) without collisions.
        let dir = app
            .config
            .data_dir
            .join("spool")
            .join(format!("{}-{n}", std::process::id()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Problem::internal)?;
        let path = dir.join(name);
        Ok(Spool { dir, path })
    }

    /// Writes the body, refusing (413) past `limit` bytes.
    async fn fill(&self, body: Body, limit: u64) -> Result<(), Problem> {
        let mut file = tokio::fs::File::create(&self.path)
            .await
            .map_err(Problem::internal)?;
        let mut stream = body.into_data_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| Problem::bad_request(format!("upload interrupted: {e}")))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("uploads are limited to {limit} bytes"),
                ));
            }
            file.write_all(&chunk).await.map_err(Problem::internal)?;
        }
        if written == 0 {
            return Err(Problem::bad_request(
                "the body is empty: send the .evtx file's bytes",
            ));
        }
        file.flush().await.map_err(Problem::internal)?;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
