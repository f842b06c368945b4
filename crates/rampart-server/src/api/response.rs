//! Indicators, response actions, the audit log and agent enrollment tokens.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rampart_state::{
    ActionFilter, ActionKind, ActionStatus, AuditFilter, IndicatorAction, IndicatorFilter,
    IndicatorKind, NewAction, NewEnrollmentToken, NewIndicator, Principal, Time,
};
use serde::Deserialize;
use serde_json::json;

use super::{Paging, audit};
use crate::app::App;
use crate::problem::{ApiResult, Json, Problem, Query, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorQuery {
    kind: Option<IndicatorKind>,
    action: Option<IndicatorAction>,
    value: Option<String>,
    /// Only indicators not expired at this time.
    active_at: Option<Time>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list_indicators(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<IndicatorQuery>,
) -> ApiResult {
    let filter = IndicatorFilter {
        kind: q.kind,
        action: q.action,
        value: q.value,
        active_at: q.active_at,
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(json(
        &app.db
            .list_indicators(&p.tenant_id, &filter, &paging.request())
            .await?,
    ))
}

pub async fn create_indicator(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewIndicator>,
) -> ApiResult {
    let indicator = app
        .db
        .create_indicator(&p.tenant_id, &body, &p.username)
        .await?;
    app.forget_indicators(&p.tenant_id).await;
    audit(
        &app,
        &p,
        "indicator.create",
        "indicator",
        &indicator.id,
        json!({"kind": indicator.kind, "value": indicator.value, "action": indicator.action}),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(indicator)).into_response())
}

pub async fn get_indicator(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(json(&app.db.get_indicator(&p.tenant_id, &id).await?))
}

pub async fn delete_indicator(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    app.db.delete_indicator(&p.tenant_id, &id).await?;
    app.forget_indicators(&p.tenant_id).await;
    audit(&app, &p, "indicator.delete", "indicator", &id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionQuery {
    device_id: Option<String>,
    kind: Option<ActionKind>,
    status: Option<ActionStatus>,
    /// `true`: only actions not finished yet; `false`: only finished ones.
    open: Option<bool>,
    from: Option<Time>,
    to: Option<Time>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list_actions(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ActionQuery>,
) -> ApiResult {
    let filter = ActionFilter {
        scope: p.scope.clone(),
        device_id: q.device_id,
        kind: q.kind,
        status: q.status,
        open: q.open,
        from: q.from,
        to: q.to,
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(json(
        &app.db
            .list_actions(&p.tenant_id, &filter, &paging.request())
            .await?,
    ))
}

pub async fn get_action(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(json(&app.db.get_action(&p.tenant_id, &p.scope, &id).await?))
}

/// Queues a response action for a device; its agent picks it up and reports the result.
pub async fn create_action(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewAction>,
) -> ApiResult {
    // The device must be within the caller's scope.
    app.db
        .get_device(&p.tenant_id, &p.scope, &body.device_id)
        .await?;
    let action = app
        .db
        .create_action(&p.tenant_id, &body, &p.username)
        .await?;
    // An agent waiting for actions gets it now rather than at its next heartbeat.
    app.action_waiters.wake(&action.device_id);
    audit(
        &app,
        &p,
        "action.create",
        "action",
        &action.id,
        json!({"device_id": action.device_id, "kind": action.kind, "params": action.params}),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(action)).into_response())
}

pub async fn cancel_action(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    app.db.get_action(&p.tenant_id, &p.scope, &id).await?;
    let action = app
        .db
        .set_action_status(&p.tenant_id, &id, ActionStatus::Cancelled, None)
        .await?;
    audit(&app, &p, "action.cancel", "action", &id, json!({})).await?;
    Ok(json(&action))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target_kind: Option<String>,
    target_id: Option<String>,
    from: Option<Time>,
    to: Option<Time>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list_audit(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        target_kind: q.target_kind,
        target_id: q.target_id,
        from: q.from,
        to: q.to,
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(json(
        &app.db
            .list_audit(&p.tenant_id, &filter, &paging.request())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    #[serde(default = "default_enrollment_name")]
    name: String,
    group_id: Option<String>,
    /// Devices that may enroll with it (default 1).
    #[serde(default = "one")]
    max_uses: i64,
    /// Default: 24 hours from now.
    expires_at: Option<Time>,
}

fn default_enrollment_name() -> String {
    "enrollment".into()
}

fn one() -> i64 {
    1
}

/// Creates a one-time enrollment token. The returned token embeds the CA fingerprint
/// (`<secret>.<sha256 hex>`), so an agent given only the token and the URL can verify the
/// server on first contact.
pub async fn create_enrollment_token(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<EnrollmentRequest>,
) -> ApiResult {
    let Some(fingerprint) = app.ca_fingerprint.clone() else {
        return Err(Problem::conflict(
            "agents enroll over TLS with Rampart's CA: not available with --insecure-http",
        ));
    };
    let new = NewEnrollmentToken {
        name: body.name,
        group_id: body.group_id,
        max_uses: body.max_uses,
        expires_at: body
            .expires_at
            .unwrap_or_else(|| chrono::Utc::now() + chrono::TimeDelta::hours(24)),
    };
    let (token, secret) = app
        .db
        .create_enrollment_token(&p.tenant_id, &new, &p.username)
        .await?;
    audit(
        &app,
        &p,
        "enrollment_token.create",
        "enrollment_token",
        &token.id,
        json!({"name": token.name, "max_uses": token.max_uses}),
    )
    .await?;
    let hex = fingerprint.trim_start_matches("sha256:");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"token": format!("{secret}.{hex}"), "ca_fingerprint": fingerprint, "info": token})),
    )
        .into_response())
}

pub async fn list_enrollment_tokens(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    Ok(json(
        &app.db
            .list_enrollment_tokens(&p.tenant_id, &paging.request())
            .await?,
    ))
}

/// Revokes an enrollment token: no agent enrolls with it from now on (enrolled ones keep their
/// certificates). Revoking twice is not an error.
pub async fn revoke_enrollment_token(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    app.db.revoke_enrollment_token(&p.tenant_id, &id).await?;
    audit(
        &app,
        &p,
        "enrollment_token.revoke",
        "enrollment_token",
        &id,
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
