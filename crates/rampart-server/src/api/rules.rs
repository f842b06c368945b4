//! Detection rules: Sigma rules loaded from `--rules` folders (builtin) or uploaded, each
//! enabled or disabled per tenant. Any change recompiles the tenant's rule set, which the
//! next ingested batch uses.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
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
    limit: Option<u32>,
    cursor: Option<String>,
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

/// The body is Sigma YAML (one rule, or several documents separated by `---`). Every document
/// must load: one that does not is reported with its reason and nothing is stored.
pub async fn upload(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> ApiResult {
    let text = std::str::from_utf8(&body)
        .map_err(|e| Problem::bad_request(format!("the body is not UTF-8: {e}")))?;
    let compiled = RuleSet::from_yaml(text, std::path::Path::new("upload.yml"));
    let failed: Vec<String> = compiled
        .report
        .iter()
        .filter_map(|r| match &r.status {
            RuleStatus::Failed(why) => Some(format!(
                "{}: {why}",
                r.title.as_deref().unwrap_or("(untitled)")
            )),
            _ => None,
        })
        .collect();
    if !failed.is_empty() || compiled.report.is_empty() {
        let detail = if failed.is_empty() {
            "no Sigma rule in the body".to_string()
        } else {
            failed.join("; ")
        };
        return Err(Problem::bad_request(detail));
    }
    let mut created = Vec::new();
    for new in crate::rules::new_rules(text, RuleOrigin::Uploaded) {
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
    let inactive: Vec<String> = compiled
        .report
        .iter()
        .filter_map(|r| match &r.status {
            RuleStatus::Inactive(why) => Some(format!(
                "{}: {why}",
                r.title.as_deref().unwrap_or("(untitled)")
            )),
            _ => None,
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"items": created, "inactive": inactive})),
    )
        .into_response())
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
