//! Advanced hunting over the API: KQL over the caller's tenant only (the catalog holds nothing
//! else) — and for a user confined to device groups, over those groups' devices only — with the
//! row limit and timeout of the configuration. Each user also has a history of the queries they
//! ran and the queries they saved, private to them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use datafusion::datasource::TableProvider;
use rampart_kql::{Catalog, Engine, QueryOptions};
use rampart_schema::Table;
use rampart_state::{DeviceFilter, PageRequest, Principal};
use rampart_store::TenantCatalog;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Paging, audit};
use crate::app::App;
use crate::problem::{ApiResult, Json, Problem, Query, json};

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
    /// Whether the query goes into the caller's history (default true; the portal's own
    /// queries, such as a device's timeline, say false).
    history: Option<bool>,
}

/// Refuses query text over [`MAX_QUERY_BYTES`] (to run or to save).
fn check_size(query: &str) -> Result<(), Problem> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(Problem::bad_request(format!(
            "the query is over {MAX_QUERY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Runs a query, after recording it in the caller's history (a query that fails is worth
/// finding again to fix it).
pub async fn query(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<HuntRequest>,
) -> ApiResult {
    check_size(&body.query)?;
    // The history is a convenience: hunting goes on when it cannot be written.
    if body.history != Some(false)
        && !body.query.trim().is_empty()
        && let Err(e) = app
            .db
            .record_query(&p.tenant_id, &p.user_id, &body.query)
            .await
    {
        tracing::warn!(
            error = %e,
            user = %p.username,
            "hunting: query not recorded in the history"
        );
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
    let catalog = TenantCatalog::of_store(app.store.clone(), &p.tenant_id);
    let engine = if p.scope.is_all() {
        Engine::new(catalog)
    } else {
        Engine::new(ScopedCatalog {
            inner: catalog,
            hostnames: scope_hostnames(&app, &p).await?,
        })
    };
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

/// The host names of the devices in the caller's device groups (lower case, as stored).
async fn scope_hostnames(app: &App, p: &Principal) -> Result<Vec<String>, Problem> {
    let filter = DeviceFilter {
        scope: p.scope.clone(),
        ..DeviceFilter::default()
    };
    let mut names = Vec::new();
    let mut cursor = None;
    loop {
        let page = app
            .db
            .list_devices(&p.tenant_id, &filter, &PageRequest::after(1000, cursor))
            .await?;
        names.extend(page.items.into_iter().map(|d| d.hostname));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(names),
        }
    }
}

/// A tenant's tables as a user confined to device groups sees them: rows of the devices in
/// those groups only (by `DeviceName`, which every device table has and which is the device's
/// host name), and nothing of tables that name no device (identity, mail, cloud, AlertInfo).
struct ScopedCatalog {
    inner: TenantCatalog,
    hostnames: Vec<String>,
}

impl Catalog for ScopedCatalog {
    fn table(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        use datafusion::datasource::{MemTable, ViewTable, provider_as_source};
        use datafusion::logical_expr::LogicalPlanBuilder;
        use datafusion::prelude::{ident, lit, lower};
        let table = Table::from_name(name)?;
        let provider = self.inner.table(name)?;
        if table.column("DeviceName").is_none() {
            let empty = MemTable::try_new(provider.schema(), vec![vec![]]).ok()?;
            return Some(Arc::new(empty));
        }
        let names = self.hostnames.iter().map(|h| lit(h.as_str())).collect();
        let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)
            .and_then(|b| b.filter(lower(ident("DeviceName")).in_list(names, false)))
            .and_then(LogicalPlanBuilder::build)
            .map_err(|e| tracing::error!(table = name, "scoped view: {e}"))
            .ok()?;
        Some(Arc::new(ViewTable::new(plan, None)))
    }

    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }
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

/// The caller's recent queries, newest first (at most [`rampart_state::QUERY_HISTORY_MAX`]).
pub async fn history(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    let page = app
        .db
        .query_history(&p.tenant_id, &p.user_id, &paging.request())
        .await?;
    Ok(json(&page))
}

/// The caller's saved queries, by name.
pub async fn list_saved(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    let page = app
        .db
        .list_saved_queries(&p.tenant_id, &p.user_id, &paging.request())
        .await?;
    Ok(json(&page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSavedQuery {
    name: String,
    query: String,
}

/// Saves a query under a name: 201 when the name is new, 200 when it replaced the query of
/// that name.
pub async fn save(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewSavedQuery>,
) -> ApiResult {
    check_size(&body.query)?;
    let saved = app
        .db
        .save_query(&p.tenant_id, &p.user_id, &body.name, &body.query)
        .await?;
    audit(
        &app,
        &p,
        "query.save",
        "saved_query",
        &saved.id,
        json!({"name": saved.name}),
    )
    .await?;
    let status = if saved.created_at == saved.updated_at {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(saved)).into_response())
}

/// Deletes one of the caller's saved queries.
pub async fn delete_saved(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    app.db
        .delete_saved_query(&p.tenant_id, &p.user_id, &id)
        .await?;
    audit(&app, &p, "query.delete", "saved_query", &id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
