//! Alerts: the queue, one alert with its evidence, and triage changes.

use axum::Extension;
use axum::extract::{Path, State};
use rampart_state::{AlertFilter, AlertStatus, AlertUpdate, Principal, Severity, Time};
use serde::Deserialize;
use serde_json::json;

use super::{Paging, audit};
use crate::app::App;
use crate::problem::{ApiResult, Json, Query, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    status: Option<AlertStatus>,
    severity: Option<Severity>,
    device_id: Option<String>,
    rule_id: Option<String>,
    incident_id: Option<String>,
    assigned_to: Option<String>,
    from: Option<Time>,
    to: Option<Time>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<AlertQuery>,
) -> ApiResult {
    let filter = AlertFilter {
        scope: p.scope.clone(),
        status: q.status,
        severity: q.severity,
        device_id: q.device_id,
        rule_id: q.rule_id,
        incident_id: q.incident_id,
        assigned_to: q.assigned_to,
        from: q.from,
        to: q.to,
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(json(
        &app.db
            .list_alerts(&p.tenant_id, &filter, &paging.request())
            .await?,
    ))
}

pub async fn get_one(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(json(&app.db.get_alert(&p.tenant_id, &p.scope, &id).await?))
}

pub async fn update(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<AlertUpdate>,
) -> ApiResult {
    let alert = app
        .db
        .update_alert(&p.tenant_id, &p.scope, &id, &body)
        .await?;
    audit(&app, &p, "alert.update", "alert", &id, json!(body)).await?;
    Ok(json(&alert))
}
