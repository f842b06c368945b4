//! Alerts: the queue, one alert with its evidence and triggering event, and triage changes.

use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rampart_alerts::{EventRef, MatchedField};
use rampart_kql::{Engine, QueryOptions};
use rampart_schema::Table;
use rampart_state::{
    Alert, AlertFilter, AlertSource, AlertStatus, AlertUpdate, Principal, Severity, Time,
};
use rampart_store::TenantCatalog;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Paging, audit};
use crate::app::App;
use crate::problem::{ApiResult, Json, Problem, Query, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    status: Option<AlertStatus>,
    severity: Option<Severity>,
    device_id: Option<String>,
    rule_id: Option<String>,
    incident_id: Option<String>,
    assigned_to: Option<String>,
    source: Option<AlertSource>,
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
        source: q.source,
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

/// Rows sharing the triggering event's table and microsecond that are read to find it.
const EVENT_CANDIDATES: usize = 1000;

/// The stored row of the event that triggered an alert: `{"table", "row"}`. Alerts refer to
/// their event by table, time, channel and event id (record numbers of exported logs are not
/// the ones stored), so the row is the one at that time on the alert's device whose record
/// has that channel and event id, preferring the one that holds the matched values.
pub async fn event(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    let alert = app.db.get_alert(&p.tenant_id, &p.scope, &id).await?;
    let reference: EventRef = alert
        .trigger_event
        .as_ref()
        .and_then(|t| t.get("event"))
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .ok_or_else(|| gone("the alert names no stored event"))?;
    let table = reference
        .table
        .as_deref()
        .and_then(Table::from_name)
        .ok_or_else(|| {
            gone("the alert was raised by a query or over several records, not by one event")
        })?;
    // Users confined to device groups see no table that names no device (as in hunting).
    if !p.scope.is_all() && table.column("DeviceName").is_none() {
        return Err(Problem::not_found("event"));
    }
    let query = format!(
        "{} | where Timestamp == datetime({}) | take {EVENT_CANDIDATES}",
        table.name(),
        reference.timestamp.format("%Y-%m-%dT%H:%M:%S%.6fZ")
    );
    let options = QueryOptions {
        limit: EVENT_CANDIDATES,
        timeout: Duration::from_secs(app.config.hunting.timeout_secs),
    };
    let result = Engine::new(TenantCatalog::of_store(app.store.clone(), &p.tenant_id))
        .run(&query, &options)
        .await
        .map_err(|e| Problem::internal(e.render(&query)))?;
    let row = pick_event(result.json_rows(), &alert, &reference)
        .ok_or_else(|| gone("the event is no longer stored"))?;
    Ok(json(&json!({"table": table.name(), "row": row})))
}

/// A 404 saying why an alert has no event to show.
fn gone(why: &str) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, why)
}

/// The row of `rows` (one table, one time) that is `alert`'s event: on its device, of its
/// channel and event id where the row keeps the record's fields, and holding the most matched
/// values; the first such row when several tie.
fn pick_event(
    rows: Vec<Map<String, Value>>,
    alert: &Alert,
    reference: &EventRef,
) -> Option<Map<String, Value>> {
    let matched: Vec<String> =
        serde_json::from_value::<Vec<MatchedField>>(alert.matched_fields.clone())
            .unwrap_or_default()
            .iter()
            .map(|m| text_of(&m.value))
            .filter(|v| !v.is_empty())
            .collect();
    let mut best: Option<(usize, Map<String, Value>)> = None;
    for row in rows {
        // Identity tables name no device (an empty DeviceName).
        let on_device = match (&alert.device_name, row.get("DeviceName")) {
            (Some(name), Some(Value::String(device))) if !device.is_empty() => {
                device.eq_ignore_ascii_case(name)
            }
            _ => true,
        };
        // The record's own fields: JSON text in `Device*` tables, an object in `Identity*`.
        let record = match row.get("AdditionalFields") {
            Some(Value::String(text)) => serde_json::from_str(text).unwrap_or_default(),
            Some(Value::Object(fields)) => fields.clone(),
            _ => Map::new(),
        };
        let same_channel = reference.channel.is_empty()
            || record
                .get("Channel")
                .and_then(Value::as_str)
                .is_none_or(|c| c == reference.channel);
        let same_id = reference.event_id == 0
            || record
                .get("EventID")
                .and_then(Value::as_u64)
                .is_none_or(|id| id == u64::from(reference.event_id));
        if !(on_device && same_channel && same_id) {
            continue;
        }
        let cells: Vec<String> = row.values().chain(record.values()).map(text_of).collect();
        let score = matched
            .iter()
            .filter(|v| cells.iter().any(|c| c.contains(v.as_str())))
            .count();
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, row));
        }
    }
    best.map(|(_, row)| row)
}

/// A value as text: strings bare, the rest as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn alert(device: Option<&str>, matched: Value) -> Alert {
        serde_json::from_value(json!({
            "id": "alr_1", "tenant_id": "t", "rule": null, "title": "x", "description": "",
            "severity": "high", "status": "new", "classification": null, "determination": null,
            "assigned_to": null, "tactics": [], "techniques": [], "device_id": null,
            "device_name": device, "first_event_time": "2024-01-01T00:00:00Z",
            "last_event_time": "2024-01-01T00:00:00Z", "event_count": 1, "dedup_key": null,
            "evidence": [], "trigger_event": null, "matched_fields": matched, "incident_id": null,
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    fn reference(channel: &str, event_id: u32) -> EventRef {
        serde_json::from_value(json!({
            "table": "DeviceProcessEvents", "timestamp": "2024-01-01T00:00:00Z",
            "channel": channel, "event_id": event_id, "record_id": 7, "source": "x.evtx"
        }))
        .unwrap()
    }

    fn row(device: &str, fields: Value, report: i64) -> Map<String, Value> {
        serde_json::from_value(json!({
            "DeviceName": device, "ReportId": report, "AdditionalFields": fields.to_string()
        }))
        .unwrap()
    }

    fn picked(rows: Vec<Map<String, Value>>, alert: &Alert, r: &EventRef) -> Option<Value> {
        pick_event(rows, alert, r).map(|row| row["ReportId"].clone())
    }

    #[test]
    fn the_event_is_the_record_on_the_alerts_device_with_its_channel_and_id() {
        let sysmon = "Microsoft-Windows-Sysmon/Operational";
        let a = alert(
            Some("ws1"),
            json!([{"field": "CommandLine", "value": "whoami /all"}]),
        );
        let r = reference(sysmon, 1);
        let rows = vec![
            row(
                "ws2",
                json!({"Channel": sysmon, "EventID": 1, "CommandLine": "whoami /all"}),
                1,
            ),
            row("ws1", json!({"Channel": "Security", "EventID": 1}), 2),
            row("ws1", json!({"Channel": sysmon, "EventID": 3}), 3),
            row(
                "WS1",
                json!({"Channel": sysmon, "EventID": 1, "CommandLine": "cmd"}),
                4,
            ),
            row(
                "ws1",
                json!({"Channel": sysmon, "EventID": 1, "CommandLine": "whoami /all"}),
                5,
            ),
        ];
        // The one holding the matched value, among those on the device of that channel and id.
        assert_eq!(picked(rows.clone(), &a, &r), Some(json!(5)));
        assert_eq!(picked(rows[..4].to_vec(), &a, &r), Some(json!(4)));
        assert_eq!(picked(rows[..3].to_vec(), &a, &r), None);
    }

    #[test]
    fn identity_rows_name_no_device_and_rows_without_fields_are_kept() {
        let a = alert(Some("dc1.corp.local"), json!([]));
        let identity = row("", json!({"Channel": "Security", "EventID": 4661}), 8068);
        assert_eq!(
            picked(vec![identity], &a, &reference("Security", 4661)),
            Some(json!(8068))
        );
        // Registry rows keep no record fields: the device and time decide.
        let mut registry = row("dc1.corp.local", json!({}), 9);
        registry.remove("AdditionalFields");
        assert_eq!(
            picked(vec![registry], &a, &reference("Security", 13)),
            Some(json!(9))
        );
    }
}
