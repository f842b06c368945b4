//! Health, readiness, metrics and the OpenAPI document.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::App;
use crate::problem::{ApiResult, Problem};

pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready when the database answers (the store is open before the listener starts).
pub async fn readyz(State(app): State<App>) -> ApiResult {
    app.db
        .get_tenant(rampart_state::DEFAULT_TENANT_ID)
        .await
        .map_err(|e| Problem::new(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")))?;
    Ok(
        axum::Json(json!({"status": "ready", "uptime_secs": app.started.elapsed().as_secs()}))
            .into_response(),
    )
}

pub async fn openapi() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    let doc = DOC.get_or_init(|| crate::routes::openapi(&super::routes()));
    axum::Json(doc).into_response()
}

pub async fn metrics(State(app): State<App>) -> Response {
    let stats = app.store.stats();
    let work = stats.work;
    let text = app.metrics.render(&[
        (
            "rampart_store_rows",
            "Rows in the event store.",
            "gauge",
            stats.rows() as f64,
        ),
        (
            "rampart_store_files",
            "Parquet files in the event store.",
            "gauge",
            stats.files() as f64,
        ),
        (
            "rampart_store_file_bytes",
            "Bytes of Parquet files in the event store.",
            "gauge",
            stats.file_bytes() as f64,
        ),
        (
            "rampart_store_flushes_total",
            "Flushes of in-memory rows to Parquet.",
            "counter",
            work.flushes as f64,
        ),
        (
            "rampart_store_merges_total",
            "Compaction merges.",
            "counter",
            work.merges as f64,
        ),
        (
            "rampart_store_flushed_rows_total",
            "Rows written to Parquet by flushes.",
            "counter",
            work.flushed_rows as f64,
        ),
        (
            "rampart_store_merged_rows_total",
            "Rows encoded again by compaction (per flushed row: its write amplification).",
            "counter",
            work.merged_rows as f64,
        ),
        (
            "rampart_store_copied_rows_total",
            "Rows compaction copied in row groups as they were encoded.",
            "counter",
            work.copied_rows as f64,
        ),
        (
            "rampart_store_held_rows_total",
            "Rows of small partitions flushes held in memory and logged again.",
            "counter",
            work.held_rows as f64,
        ),
        (
            "rampart_store_flush_cpu_seconds_total",
            "CPU time spent flushing.",
            "counter",
            work.flush_cpu.as_secs_f64(),
        ),
        (
            "rampart_store_merge_cpu_seconds_total",
            "CPU time spent merging.",
            "counter",
            work.merge_cpu.as_secs_f64(),
        ),
        (
            "rampart_agent_action_waiters",
            "Agents waiting for actions (long-poll).",
            "gauge",
            app.action_waiters.waiting() as f64,
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
