//! Detection rules: Sigma rules loaded from `--rules` folders (builtin) or uploaded, each
//! enabled or disabled per tenant. Any change recompiles the tenant's rule set, which the
//! next ingested batch uses.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use rampart_sigma::{RuleSet, RuleStatus};
use rampart_state::{Principal, RuleFilter, RuleKind, RuleOrigin};
use serde::Deserialize;
use serde_json::json;

use super::{Paging, audit};
use crate::app::App;
use crate::problem::{ApiResult, Json, Problem, Query, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleQuery {
    kind: Option<RuleKind>,
    enabled: Option<bool>,
    origin: Option<OriginFilter>,
    /// Case-insensitive substring of the title.
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Where listed rules come from: the server's rule folders, or uploads.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum OriginFilter {
    Builtin,
    Uploaded,
}

pub async fn list(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<RuleQuery>,
) -> ApiResult {
    let filter = RuleFilter {
        kind: q.kind,
        enabled: q.enabled,
        severity: None,
        builtin: q.origin.map(|o| matches!(o, OriginFilter::Builtin)),
        title_contains: q.q.filter(|q| !q.trim().is_empty()),
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor,
    };
    let mut page = app
        .db
        .list_rules(&p.tenant_id, &filter, &paging.request())
        .await?;
    // The queue shows what a rule is, not its whole text; GET /rules/{id} has the source.
    for rule in &mut page.items {
        rule.source.clear();
    }
    Ok(json(&page))
}

pub async fn get_one(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(json(&app.db.get_rule(&p.tenant_id, &id).await?))
}

/// The body is Sigma YAML (one rule, or several documents separated by `---`), or, for clients
/// that speak only JSON (the portal's in-process client), `{"yaml": "…"}` sent as
/// `application/json`. Every document must load: one that does not is reported with its reason
/// and nothing is stored.
pub async fn upload(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let text = upload_text(&headers, &body)?;
    let compiled = RuleSet::from_yaml(&text, std::path::Path::new("upload.yml"));
    let failed = statuses(&compiled, |s| match s {
        RuleStatus::Failed(why) => Some(why),
        _ => None,
    });
    if !failed.is_empty() || compiled.report.is_empty() {
        let detail = if failed.is_empty() {
            "no Sigma rule in the body".to_string()
        } else {
            failed.join("; ")
        };
        return Err(Problem::bad_request(detail));
    }
    let mut created = Vec::new();
    for new in crate::rules::new_rules(&text, RuleOrigin::Uploaded) {
        let rule = app.db.create_rule(&p.tenant_id, &new, &p.username).await?;
        audit(
            &app,
            &p,
            "rule.create",
            "rule",
            &rule.id,
            json!({"title": rule.title}),
        )
        .await?;
        created.push(rule);
    }
    crate::rules::reload(&app, &p.tenant_id)
        .await
        .map_err(Problem::internal)?;
    let inactive = statuses(&compiled, |s| match s {
        RuleStatus::Inactive(why) => Some(why),
        _ => None,
    });
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"items": created, "inactive": inactive})),
    )
        .into_response())
}

/// The YAML of an upload: the body itself, or its `yaml` member when it is JSON.
fn upload_text(headers: &HeaderMap, body: &[u8]) -> Result<String, Problem> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Upload {
            yaml: String,
        }
        return serde_json::from_slice::<Upload>(body)
            .map(|u| u.yaml)
            .map_err(|e| Problem::bad_request(format!("expected {{\"yaml\": \"…\"}}: {e}")));
    }
    String::from_utf8(body.to_vec())
        .map_err(|e| Problem::bad_request(format!("the body is not UTF-8: {e}")))
}

/// "title: reason" of each rule whose status `pick` gives a reason for.
fn statuses(set: &RuleSet, pick: impl Fn(&RuleStatus) -> Option<&String>) -> Vec<String> {
    set.report
        .iter()
        .filter_map(|r| {
            let why = pick(&r.status)?;
            Some(format!(
                "{}: {why}",
                r.title.as_deref().unwrap_or("(untitled)")
            ))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    enabled: bool,
}

pub async fn update(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<RulePatch>,
) -> ApiResult {
    let rule = app
        .db
        .set_rule_enabled(&p.tenant_id, &id, body.enabled)
        .await?;
    audit(
        &app,
        &p,
        "rule.update",
        "rule",
        &id,
        json!({"enabled": body.enabled}),
    )
    .await?;
    crate::rules::reload(&app, &p.tenant_id)
        .await
        .map_err(Problem::internal)?;
    Ok(json(&rule))
}

pub async fn remove(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let rule = app.db.get_rule(&p.tenant_id, &id).await?;
    if matches!(rule.origin, RuleOrigin::Builtin { .. }) {
        return Err(Problem::conflict(
            "a rule from the server's rule folders can be disabled, not deleted",
        ));
    }
    app.db.delete_rule(&p.tenant_id, &id).await?;
    audit(
        &app,
        &p,
        "rule.delete",
        "rule",
        &id,
        json!({"title": rule.title}),
    )
    .await?;
    crate::rules::reload(&app, &p.tenant_id)
        .await
        .map_err(Problem::internal)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCustomDetection {
    title: String,
    /// KQL over the hunting tables; each row it returns becomes an alert.
    query: String,
    /// How often it runs (at least [`crate::custom::MIN_SCHEDULE_SECS`]).
    schedule_secs: i64,
    #[serde(default = "medium")]
    severity: rampart_state::Severity,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    description: String,
    /// ATT&CK tactic names (`Execution`) and technique ids (`T1059.001`).
    #[serde(default)]
    tactics: Vec<String>,
    #[serde(default)]
    techniques: Vec<String>,
}

fn medium() -> rampart_state::Severity {
    rampart_state::Severity::Medium
}

/// Creates a custom detection (a scheduled KQL rule). The query must plan against the tenant's
/// tables: a mistake is answered with its line and column, and nothing is stored.
pub async fn create_custom(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewCustomDetection>,
) -> ApiResult {
    if body.schedule_secs < crate::custom::MIN_SCHEDULE_SECS {
        return Err(Problem::bad_request(format!(
            "schedule_secs: at least {}",
            crate::custom::MIN_SCHEDULE_SECS
        )));
    }
    let engine = rampart_kql::Engine::new(rampart_store::TenantCatalog::of_store(
        app.store.clone(),
        &p.tenant_id,
    ));
    if let Err(e) = engine.check(&body.query).await {
        return Err(Problem::kql(&e, &body.query));
    }
    let new = rampart_state::NewRule {
        kind: RuleKind::Kql,
        sigma_id: None,
        title: body.title,
        source: body.query,
        enabled: body.enabled.unwrap_or(true),
        severity: body.severity,
        tags: body
            .techniques
            .iter()
            .map(|t| format!("attack.{}", t.to_lowercase()))
            .collect(),
        schedule_secs: Some(body.schedule_secs),
        alert_template: Some(json!(crate::custom::AlertTemplate {
            description: body.description,
            tactics: body.tactics,
            techniques: body.techniques,
        })),
        origin: RuleOrigin::Uploaded,
    };
    let rule = app.db.create_rule(&p.tenant_id, &new, &p.username).await?;
    audit(
        &app,
        &p,
        "rule.create",
        "rule",
        &rule.id,
        json!({"title": rule.title, "kind": "kql"}),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(rule)).into_response())
}

/// Runs a custom detection now (as its schedule would): its rows become alerts.
pub async fn run_now(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let rule = app.db.get_rule(&p.tenant_id, &id).await?;
    if rule.kind != RuleKind::Kql {
        return Err(Problem::conflict(
            "only custom detections (KQL rules) run on demand; Sigma rules run on every ingested event",
        ));
    }
    let outcome = crate::custom::run(&app, &p.tenant_id, &rule).await?;
    audit(&app, &p, "rule.run", "rule", &id, json!(outcome)).await?;
    Ok(json(&outcome))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    /// Only events in `[from, to)` (default: the whole store).
    from: Option<rampart_state::Time>,
    to: Option<rampart_state::Time>,
    /// Rows shown at most (default 100).
    limit: Option<usize>,
}

/// Tests a rule against stored events without raising anything: how many rows it would alert
/// on, and the first ones. Custom detections run their query; Linux Sigma rules evaluate the
/// stored agent telemetry; Windows Sigma rules evaluate the event-log records rebuilt from the
/// stored rows (approximately for registry and image-load rows: see [`test_windows`]).
pub async fn test(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<RuleTest>,
) -> ApiResult {
    let rule = app.db.get_rule(&p.tenant_id, &id).await?;
    let limit = body.limit.unwrap_or(100).min(app.config.hunting.max_rows);
    let window = time_window(body.from, body.to);
    if rule.kind != RuleKind::Kql {
        return test_sigma(&app, &p, &rule, &window, limit).await;
    }
    let kql = format!("{}\n{window}", rule.source);
    let rows = crate::custom::query(&app, &p.tenant_id, &kql, crate::custom::MAX_ALERTS_PER_RUN)
        .await
        .map_err(|e| Problem::kql(&e, &kql))?;
    Ok(json(&json!({
        "matches": rows.len(),
        "capped": rows.len() >= crate::custom::MAX_ALERTS_PER_RUN,
        "rows": rows.into_iter().take(limit).collect::<Vec<_>>(),
    })))
}

/// Rows of a table read at most per test of a Sigma rule.
const SIGMA_TEST_MAX_ROWS: usize = 200_000;

/// What a Sigma rule test found: matching rows counted, the first `limit` kept.
struct Found {
    matches: usize,
    capped: bool,
    rows: Vec<serde_json::Value>,
    limit: usize,
}

impl Found {
    fn new(limit: usize) -> Found {
        Found {
            matches: 0,
            capped: false,
            rows: Vec::new(),
            limit,
        }
    }

    /// Reads a table: `stored` rows came back of at most [`SIGMA_TEST_MAX_ROWS`].
    fn read(&mut self, stored: usize) {
        self.capped |= stored >= SIGMA_TEST_MAX_ROWS;
    }

    fn matched(&mut self, columns: &serde_json::Map<String, serde_json::Value>) {
        self.matches += 1;
        if self.rows.len() < self.limit {
            self.rows.push(serde_json::Value::Object(columns.clone()));
        }
    }

    fn answer(self) -> serde_json::Value {
        json!({"matches": self.matches, "capped": self.capped, "rows": self.rows})
    }
}

/// A Sigma rule over stored data, as the rule would have seen it arriving (correlation rules
/// are not replayed): a Linux rule over the agent telemetry of its category's table, a Windows
/// rule over the event-log records rebuilt from the stored rows. A rule that reads neither
/// (its logsource is one Rampart does not read) is answered 409 with why.
async fn test_sigma(
    app: &App,
    p: &Principal,
    rule: &rampart_state::Rule,
    window: &str,
    limit: usize,
) -> ApiResult {
    let set = RuleSet::from_yaml(&rule.source, std::path::Path::new(&rule.title));
    if set.linux_rules() > 0 {
        return test_linux(app, p, &set, window, limit).await;
    }
    if set.windows_rules() > 0 {
        return test_windows(app, p, &set, window, limit).await;
    }
    let why = statuses(&set, |s| match s {
        RuleStatus::Inactive(why) | RuleStatus::Failed(why) => Some(why),
        RuleStatus::Loaded => None,
    });
    Err(Problem::conflict(format!(
        "this rule reads nothing Rampart stores (Windows event-log records, or Linux agent \
         telemetry of process_creation, file_event, file_delete or network_connection), so it \
         cannot be tested{}",
        if why.is_empty() {
            " (correlation rules are not replayed over stored data)".to_string()
        } else {
            format!(": {}", why.join("; "))
        }
    )))
}

/// The rows of each Linux category's table within the window.
async fn test_linux(
    app: &App,
    p: &Principal,
    set: &RuleSet,
    window: &str,
    limit: usize,
) -> ApiResult {
    use std::borrow::Cow;
    let source: Arc<std::path::Path> = Arc::from(std::path::Path::new("stored events"));
    let mut found = Found::new(limit);
    let mut tables: Vec<&str> = rampart_sigma::linux::CATEGORIES
        .iter()
        .map(|c| c.table)
        .collect();
    tables.dedup();
    for table in tables {
        let actions: Vec<String> = rampart_sigma::linux::CATEGORIES
            .iter()
            .filter(|c| c.table == table)
            .flat_map(|c| c.actions.iter().map(|a| format!("'{a}'")))
            .collect();
        let kql = format!(
            "{table} | where ActionType in ({}) {window}",
            actions.join(", ")
        );
        let stored = crate::custom::query(app, &p.tenant_id, &kql, SIGMA_TEST_MAX_ROWS)
            .await
            .map_err(|e| Problem::kql(&e, &kql))?;
        found.read(stored.len());
        for (index, columns) in stored.iter().enumerate() {
            let timestamp = columns
                .get("Timestamp")
                .and_then(|t| t.as_str()?.parse().ok())
                .unwrap_or_default();
            let row = rampart_sigma::TelemetryRow {
                table,
                columns: Cow::Borrowed(columns),
                timestamp,
                record_id: columns
                    .get("ReportId")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(index as u64),
                source: source.clone(),
            };
            let mut detections = Vec::new();
            set.evaluate_row(&row, &mut detections);
            if !detections.is_empty() {
                found.matched(columns);
            }
        }
    }
    Ok(json(&found.answer()))
}

/// The Windows event-log records stored within the window, each rebuilt from its row
/// ([`rampart_sources::windows::rebuild`]) and evaluated as at ingest, the rule set routing
/// each record to the rules of its channel and event id. Rows of the tables Windows records
/// map to are read: those whose `AdditionalFields` hold a `Channel` (the record's whole field
/// map: rebuilt exactly) and every row of `DeviceRegistryEvents` and `DeviceImageLoadEvents`
/// (no `AdditionalFields`: the record is rebuilt from the columns, without the fields they
/// lack, such as an image load's `Signed` or `OriginalFileName`). Rows no Windows record
/// became (agents') are skipped. When the rule read records of those two tables (records of
/// its logsource were there), the answer lists them in `approximate_tables`.
async fn test_windows(
    app: &App,
    p: &Principal,
    set: &RuleSet,
    window: &str,
    limit: usize,
) -> ApiResult {
    use rampart_sources::windows::rebuild;
    let source: Arc<std::path::Path> = Arc::from(std::path::Path::new("stored events"));
    let mut found = Found::new(limit);
    let mut approximate = Vec::new();
    for table in rebuild::TABLES {
        let columns_only = rebuild::APPROXIMATE.contains(&table);
        let kql = if columns_only {
            format!("{table} {window}")
        } else {
            format!("{table} | where AdditionalFields has_cs 'Channel' {window}")
        };
        let stored = crate::custom::query(app, &p.tenant_id, &kql, SIGMA_TEST_MAX_ROWS)
            .await
            .map_err(|e| Problem::kql(&e, &kql))?;
        found.read(stored.len());
        let mut read = false;
        for columns in &stored {
            let Some(event) = rebuild::rebuild(table, columns, &source) else {
                continue;
            };
            read |= columns_only && set.reads(&event);
            let mut detections = Vec::new();
            set.evaluate(&event, &mut detections);
            if !detections.is_empty() {
                found.matched(columns);
            }
        }
        if read {
            approximate.push(table.name());
        }
    }
    let mut answer = found.answer();
    if !approximate.is_empty() {
        answer["approximate_tables"] = json!(approximate);
    }
    Ok(json(&answer))
}

/// `| where Timestamp >= … and Timestamp < …` for `[from, to)`, or nothing.
fn time_window(from: Option<rampart_state::Time>, to: Option<rampart_state::Time>) -> String {
    let window = match (from, to) {
        (None, None) => String::new(),
        (from, to) => {
            let mut w = String::from("| where ");
            let mut parts = Vec::new();
            if let Some(f) = from {
                parts.push(format!("Timestamp >= datetime({})", f.to_rfc3339()));
            }
            if let Some(t) = to {
                parts.push(format!("Timestamp < datetime({})", t.to_rfc3339()));
            }
            w.push_str(&parts.join(" and "));
            w
        }
    };
    // The window applies to what the query returns; a query without Timestamp cannot be
    // windowed and says so.
    window
}
