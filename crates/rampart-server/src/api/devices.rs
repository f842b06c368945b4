//! Devices and device groups. A caller confined to some device groups sees only their devices.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rampart_state::{DeviceFilter, DeviceUpdate, HealthStatus, Principal, Time};
use serde::Deserialize;
use serde_json::json;

use super::{Paging, audit};
use crate::app::App;
use crate::problem::{ApiResult, Json, Problem, Query, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    group: Option<String>,
    tag: Option<String>,
    hostname: Option<String>,
    health: Option<HealthStatus>,
    seen_after: Option<Time>,
    seen_before: Option<Time>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn list(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(q): Query<DeviceQuery>,
) -> ApiResult {
    let filter = DeviceFilter {
        scope: p.scope.clone(),
        group_id: q.group,
        tag: q.tag,
        hostname_contains: q.hostname,
        health_status: q.health,
        last_seen_from: q.seen_after,
        last_seen_to: q.seen_before,
    };
    let paging = Paging {
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(json(
        &app.db
            .list_devices(&p.tenant_id, &filter, &paging.request())
            .await?,
    ))
}

pub async fn get_one(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(json(&app.db.get_device(&p.tenant_id, &p.scope, &id).await?))
}

/// The incidents with an alert on the device, latest activity first.
pub async fn incidents(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    // Scope first: a device outside the caller's groups is "not found".
    app.db.get_device(&p.tenant_id, &p.scope, &id).await?;
    Ok(json(
        &app.db
            .list_device_incidents(&p.tenant_id, &id, &paging.request())
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    group_id: Option<Option<String>>,
}

/// A field that is present (even as `null`) becomes `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub async fn update(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<DevicePatch>,
) -> ApiResult {
    // Scope first: a device outside the caller's groups is "not found".
    app.db.get_device(&p.tenant_id, &p.scope, &id).await?;
    if let Some(Some(group)) = &body.group_id
        && !p.scope.allows(Some(group))
    {
        return Err(Problem::forbidden(
            "that device group is outside your scope",
        ));
    }
    let update = DeviceUpdate {
        group_id: body.group_id.clone(),
        tags: body.tags.clone(),
        ..DeviceUpdate::default()
    };
    let device = app.db.update_device(&p.tenant_id, &id, &update).await?;
    audit(
        &app,
        &p,
        "device.update",
        "device",
        &id,
        json!({"tags": body.tags, "group_id": body.group_id}),
    )
    .await?;
    Ok(json(&device))
}

pub async fn list_groups(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    let mut page = app
        .db
        .list_device_groups(&p.tenant_id, &paging.request())
        .await?;
    page.items.retain(|g| p.scope.allows(Some(&g.id)));
    Ok(json(&page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

pub async fn create_group(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewGroup>,
) -> ApiResult {
    let group = app
        .db
        .create_device_group(&p.tenant_id, &body.name, &body.description)
        .await?;
    audit(
        &app,
        &p,
        "device_group.create",
        "device_group",
        &group.id,
        json!({"name": group.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(group)).into_response())
}

pub async fn delete_group(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    app.db.delete_device_group(&p.tenant_id, &id).await?;
    audit(
        &app,
        &p,
        "device_group.delete",
        "device_group",
        &id,
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
