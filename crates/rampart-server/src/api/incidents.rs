//! Incidents (with their alerts, entities and why each alert joined), triage changes, merges,
//! and comments on incidents and alerts.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rampart_state::{
    AlertSource, CommentTarget, IncidentFilter, IncidentSort, IncidentStatus, IncidentUpdate,
    Principal, Severity, Time,
};
use serde::Deserialize;
use serde_json::json;

use super::{Paging, audit};
use crate::app::App;
use crate::problem::{ApiResult, Json, Problem, Query, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    status: Option<IncidentStatus>,
    severity: Option<Severity>,
    assigned_to: Option<String>,
    tag: Option<String>,
    from: Option<Time>,
    to: Option<Time>,
    /// Text the title contains.
    q: Option<String>,
    source: Option<AlertSource>,
    sort: Option<IncidentSort>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Incidents, each with the devices, users and detection sources of its alerts.
pub async fn list(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<IncidentQuery>,
) -> ApiResult {
    let filter = IncidentFilter {
        scope: p.scope.clone(),
        status: q.status,
        severity: q.severity,
        assigned_to: q.assigned_to,
        tag: q.tag,
        activity_from: q.from,
        activity_to: q.to,
        q: q.q,
        source: q.source,
        sort: q.sort.unwrap_or_default(),
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(json(
        &app.db
            .list_incident_rows(&p.tenant_id, &filter, &paging.request())
            .await?,
    ))
}

pub async fn get_one(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(json(
        &app.db.incident_detail(&p.tenant_id, &p.scope, &id).await?,
    ))
}

pub async fn update(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<IncidentUpdate>,
) -> ApiResult {
    let incident = app
        .db
        .update_incident(&p.tenant_id, &p.scope, &id, &body)
        .await?;
    audit(&app, &p, "incident.update", "incident", &id, json!(body)).await?;
    Ok(json(&incident))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merge {
    /// Incidents folded into this one.
    incidents: Vec<String>,
}

pub async fn merge(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<Merge>,
) -> ApiResult {
    if body.incidents.is_empty() || body.incidents.len() > 100 {
        return Err(Problem::bad_request(
            "incidents: give 1 to 100 incident ids",
        ));
    }
    // Every incident involved must be visible to the caller.
    for other in std::iter::once(&id).chain(&body.incidents) {
        app.db.get_incident(&p.tenant_id, &p.scope, other).await?;
    }
    let incident = app
        .db
        .merge_incidents(&p.tenant_id, &id, &body.incidents)
        .await?;
    audit(
        &app,
        &p,
        "incident.merge",
        "incident",
        &id,
        json!({"merged": body.incidents}),
    )
    .await?;
    Ok(json(&incident))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    text: String,
}

/// Comments of `/alerts/{id}` and `/incidents/{id}`: which is told by the route.
async fn visible(app: &App, p: &Principal, target: CommentTarget, id: &str) -> Result<(), Problem> {
    match target {
        CommentTarget::Alert => app
            .db
            .get_alert(&p.tenant_id, &p.scope, id)
            .await
            .map(drop)?,
        CommentTarget::Incident => app
            .db
            .get_incident(&p.tenant_id, &p.scope, id)
            .await
            .map(drop)?,
    }
    Ok(())
}

async fn list_comments(
    app: App,
    p: Principal,
    target: CommentTarget,
    id: String,
    paging: Paging,
) -> ApiResult {
    visible(&app, &p, target, &id).await?;
    Ok(json(
        &app.db
            .list_comments(&p.tenant_id, target, &id, &paging.request())
            .await?,
    ))
}

async fn add_comment(
    app: App,
    p: Principal,
    target: CommentTarget,
    id: String,
    text: String,
) -> ApiResult {
    visible(&app, &p, target, &id).await?;
    let comment = app
        .db
        .add_comment(&p.tenant_id, target, &id, &p.username, &text)
        .await?;
    audit(
        &app,
        &p,
        "comment.create",
        target.as_str(),
        &id,
        json!({"comment": comment.id}),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(comment)).into_response())
}

pub async fn incident_comments(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    list_comments(app, p, CommentTarget::Incident, id, paging).await
}

pub async fn comment_incident(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<NewComment>,
) -> ApiResult {
    add_comment(app, p, CommentTarget::Incident, id, body.text).await
}

pub async fn alert_comments(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    list_comments(app, p, CommentTarget::Alert, id, paging).await
}

pub async fn comment_alert(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<NewComment>,
) -> ApiResult {
    add_comment(app, p, CommentTarget::Alert, id, body.text).await
}
