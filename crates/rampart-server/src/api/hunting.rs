//! Advanced hunting over the API: KQL over the caller's tenant only (the catalog holds nothing
//! else), with the row limit and timeout of the configuration.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use rampart_kql::{Engine, QueryOptions};
use rampart_schema::Table;
use rampart_state::Principal;
use rampart_store::TenantCatalog;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::problem::{ApiResult, Json, Problem, json};

/// Longest query text accepted.
const MAX_QUERY_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HuntRequest {
    query: String,
    /// Fewer rows than the server's limit.
    limit: Option<usize>,
    /// A shorter timeout than the server's, in seconds.
    timeout_secs: Option<u64>,
}

pub async fn query(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<HuntRequest>,
) -> ApiResult {
    if body.query.len() > MAX_QUERY_BYTES {
        return Err(Problem::bad_request(format!(
            "the query is over {MAX_QUERY_BYTES} bytes"
        )));
    }
    if !p.scope.is_all() {
        // Rows carry device names, not our group ids: confining a query to some groups needs a
        // device filter on every table, which the catalog does not apply yet.
        return Err(Problem::forbidden(
            "hunting is open to users whose scope is every device group",
        ));
    }
    let hunting = &app.config.hunting;
    let options = QueryOptions {
        limit: body.limit.unwrap_or(hunting.max_rows).min(hunting.max_rows),
        timeout: Duration::from_secs(
            body.timeout_secs
                .unwrap_or(hunting.timeout_secs)
                .min(hunting.timeout_secs),
        ),
    };
    let engine = Engine::new(TenantCatalog::of_store(app.store.clone(), &p.tenant_id));
    let started = Instant::now();
    let result = engine
        .run(&body.query, &options)
        .await
        .map_err(|e| Problem::kql(&e, &body.query))?;
    let columns = result.column_names();
    let types = result.column_types();
    let rows: Vec<Vec<Value>> = result
        .json_rows()
        .into_iter()
        .map(|row| row.into_iter().map(|(_, v)| v).collect())
        .collect();
    Ok(json(&json!({
        "columns": columns,
        "column_types": types,
        "rows": rows,
        "truncated": result.truncated,
        "chart": result.chart,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    })))
}

pub async fn schema() -> ApiResult {
    let tables: Vec<Value> = Table::ALL
        .iter()
        .map(|t| {
            json!({
                "name": t.name(),
                "columns": t.columns().iter().map(|c| json!({"name": c.name, "type": c.kind.name()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json(&json!({"tables": tables})))
}
