//! The attack story of an incident, drawn as SVG: its alerts down a time axis (oldest at the
//! top) and the entities they name (devices, users, processes, files, addresses, …) as nodes
//! beside them, each linked to the alerts that name it.
//!
//! The layout is a pure function of the incident: alerts in (event time, id) order, one row
//! each; an entity sits at the mean row of its alerts, pushed down just enough not to overlap
//! the one above, so edges stay short and the same incident always draws the same picture.
//! Labels are cut to fit, with the whole text in each node's `<title>` (the tooltip).

use crate::portal::text::truncate;
use std::collections::BTreeMap;

use maud::{Markup, html};
use rampart_alerts::{Entity, EntityData, EntityKind, Role};
use rampart_state::{IncidentAlert, IncidentDetail};

use super::api::segment;

/// At most this many alerts are drawn (the oldest); the alert list has them all.
pub const MAX_ALERTS: usize = 200;
/// At most this many entities are drawn (those most alerts name); the entity list has them all.
pub const MAX_ENTITIES: usize = 80;

const WIDTH: i64 = 1000;
const ROW: i64 = 26;
const TOP: i64 = 34;
const TIME_X: i64 = 128;
const AXIS_X: i64 = 142;
const TITLE_X: i64 = 156;
const PORT_X: i64 = 452;
const ENTITY_X: i64 = 596;
const ENTITY_W: i64 = WIDTH - ENTITY_X - 6;
const TITLE_CHARS: usize = 44;
const ENTITY_CHARS: usize = 46;
/// Consecutive alerts further apart than this are joined by a dashed stretch of the axis.
const GAP_SECS: i64 = 3600;

/// An entity of the incident and the alerts that name it.
#[derive(Debug, Clone)]
pub struct EntityNode {
    /// The correlation key ([`Entity::key`]): two mentions with the same key are one node.
    pub key: String,
    /// The mention with the most detail.
    pub entity: Entity,
    /// Indices into the time-ordered alerts, ascending.
    pub alerts: Vec<usize>,
}

/// The incident's alerts in time order: first event time, then id.
pub fn alerts_in_time_order(detail: &IncidentDetail) -> Vec<&IncidentAlert> {
    let mut alerts: Vec<&IncidentAlert> = detail.alerts.iter().collect();
    alerts.sort_by(|a, b| {
        (a.alert.first_event_time, &a.alert.id).cmp(&(b.alert.first_event_time, &b.alert.id))
    });
    alerts
}

/// Every entity the alerts name, once per key, in kind order then by name.
pub fn entities(alerts: &[&IncidentAlert]) -> Vec<EntityNode> {
    let mut nodes: BTreeMap<String, EntityNode> = BTreeMap::new();
    for (index, alert) in alerts.iter().enumerate() {
        for value in &alert.alert.evidence {
            let Ok(entity) = serde_json::from_value::<Entity>(value.clone()) else {
                continue;
            };
            let key = entity.key();
            let node = nodes.entry(key.clone()).or_insert_with(|| EntityNode {
                key,
                entity: entity.clone(),
                alerts: Vec::new(),
            });
            if node.alerts.last() != Some(&index) {
                node.alerts.push(index);
            }
            if detail_of(value) > detail_of(&entity_json(&node.entity)) {
                node.entity = entity;
            }
        }
    }
    let mut nodes: Vec<EntityNode> = nodes.into_values().collect();
    nodes.sort_by_cached_key(|n| {
        (
            n.entity.kind(),
            n.entity.display().to_lowercase(),
            n.key.clone(),
        )
    });
    nodes
}

fn entity_json(entity: &Entity) -> serde_json::Value {
    serde_json::to_value(entity).unwrap_or_default()
}

/// How much a mention says: its fields that have a value.
fn detail_of(value: &serde_json::Value) -> usize {
    value
        .as_object()
        .map_or(0, |o| o.values().filter(|v| !v.is_null()).count())
}

/// A kind's short badge and its name in lists.
pub fn kind_names(kind: EntityKind) -> (&'static str, &'static str) {
    match kind {
        EntityKind::Device => ("HOST", "Devices"),
        EntityKind::Account => ("USER", "Users"),
        EntityKind::Process => ("PROC", "Processes"),
        EntityKind::File => ("FILE", "Files"),
        EntityKind::Ip => ("IP", "IP addresses"),
        EntityKind::Url => ("URL", "URLs"),
        EntityKind::Domain => ("DNS", "Domains"),
        EntityKind::RegistryKey => ("REG", "Registry keys"),
        EntityKind::RegistryValue => ("REG", "Registry values"),
        EntityKind::Mailbox => ("MAIL", "Mailboxes"),
        EntityKind::CloudApp => ("APP", "Cloud apps"),
    }
}

/// The entity's secondary facts (command line, path, hash, …), for tooltips and lists.
pub fn entity_details(entity: &Entity) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut add = |label: &'static str, value: &Option<String>| {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            out.push((label, v.to_string()));
        }
    };
    match &entity.data {
        EntityData::Account { sid, upn, .. } => {
            add("SID", sid);
            add("UPN", upn);
        }
        EntityData::Process {
            image,
            command_line,
            sha256,
            creation_time,
            ..
        } => {
            add("Image", image);
            add("Command line", command_line);
            add("SHA-256", sha256);
            add(
                "Started",
                &creation_time.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            );
        }
        EntityData::File {
            sha256, sha1, md5, ..
        } => {
            add("SHA-256", sha256);
            add("SHA-1", sha1);
            add("MD5", md5);
        }
        EntityData::RegistryValue { data, .. } => add("Data", data),
        _ => {}
    }
    out
}

/// The device id (`/devices/{id}`) of a device entity, from the alerts on that device.
pub fn device_ids(alerts: &[&IncidentAlert]) -> BTreeMap<String, String> {
    alerts
        .iter()
        .filter_map(|a| {
            Some((
                a.alert.device_name.as_deref()?,
                a.alert.device_id.as_deref()?,
            ))
        })
        .map(|(name, id)| (device_key(name), id.to_string()))
        .collect()
}

/// The entity key of the device called `name`.
fn device_key(name: &str) -> String {
    Entity::new(
        EntityData::Device {
            name: name.to_string(),
            id: None,
        },
        Role::Impacted,
    )
    .key()
}

/// Where the entities go, in rows of the same height as the alerts'.
struct Layout {
    /// The entities drawn (indices into the nodes) and their rows, top to bottom.
    placed: Vec<(usize, i64)>,
    /// Rows the drawing needs: the alerts' or the entities', whichever go further down.
    rows: i64,
}

/// Rows for the entities: each at the mean row of its alerts, below the previous one.
fn layout(alert_count: usize, nodes: &[EntityNode]) -> Layout {
    let mut chosen: Vec<usize> = (0..nodes.len()).collect();
    if chosen.len() > MAX_ENTITIES {
        // The most connected entities tell the story; ties by kind and key, for stability.
        chosen.sort_by(|&a, &b| {
            let (x, y) = (&nodes[a], &nodes[b]);
            y.alerts
                .len()
                .cmp(&x.alerts.len())
                .then(x.entity.kind().cmp(&y.entity.kind()))
                .then(x.key.cmp(&y.key))
        });
        chosen.truncate(MAX_ENTITIES);
    }
    // Twice the mean row, so that the key stays an integer.
    let wanted = |i: usize| -> i64 {
        let a = &nodes[i].alerts;
        2 * a.iter().sum::<usize>() as i64 / a.len().max(1) as i64
    };
    chosen.sort_by(|&a, &b| {
        wanted(a)
            .cmp(&wanted(b))
            .then(nodes[a].entity.kind().cmp(&nodes[b].entity.kind()))
            .then(nodes[a].key.cmp(&nodes[b].key))
    });
    let mut placed = Vec::with_capacity(chosen.len());
    let mut next = 0i64;
    for i in chosen {
        let row = ((wanted(i) + 1) / 2).max(next);
        placed.push((i, row));
        next = row + 1;
    }
    Layout {
        rows: (alert_count as i64).max(next).max(1),
        placed,
    }
}

fn row_y(row: i64) -> i64 {
    TOP + row * ROW + ROW / 2
}

fn severity_class(severity: rampart_state::Severity) -> &'static str {
    match severity {
        rampart_state::Severity::High => "node-alert sev-dot-high",
        rampart_state::Severity::Medium => "node-alert sev-dot-medium",
        rampart_state::Severity::Low => "node-alert sev-dot-low",
        rampart_state::Severity::Informational => "node-alert sev-dot-info",
    }
}

/// The incident's attack story as `figure` with `svg#attack-story`.
pub fn attack_story(detail: &IncidentDetail) -> Markup {
    let all = alerts_in_time_order(detail);
    let alerts = &all[..all.len().min(MAX_ALERTS)];
    let nodes = entities(alerts);
    let devices = device_ids(alerts);
    let plan = layout(alerts.len(), &nodes);
    let height = TOP + plan.rows * ROW + 8;
    let summary = format!(
        "Attack story: {} alert{} and {} entit{}",
        alerts.len(),
        if alerts.len() == 1 { "" } else { "s" },
        plan.placed.len(),
        if plan.placed.len() == 1 { "y" } else { "ies" },
    );
    let hidden_alerts = all.len() - alerts.len();
    let hidden_entities = nodes.len() - plan.placed.len();
    html! {
        figure.story {
            div.story-scroll {
                svg #attack-story .drawing xmlns="http://www.w3.org/2000/svg"
                    viewBox={"0 0 " (WIDTH) " " (height)} width=(WIDTH) height=(height)
                    role="group" aria-label=(summary) {
                    title { (summary) }
                    text.label x=(TIME_X) y="18" text-anchor="end" { "Time (UTC)" }
                    text.label x=(TITLE_X) y="18" { "Alerts, oldest first" }
                    text.label x=(ENTITY_X) y="18" { "Entities they name" }
                    @for i in 0..alerts.len() {
                        @if i % 2 == 1 {
                            rect.band x="0" y=(TOP + i as i64 * ROW) width=(PORT_X + 6) height=(ROW) {}
                        }
                    }
                    (axis(alerts))
                    g.edges {
                        @for (node, row) in &plan.placed {
                            @for a in &nodes[*node].alerts {
                                @let (y1, y2) = (row_y(*a as i64), row_y(*row));
                                @let mid = (PORT_X + ENTITY_X) / 2;
                                path.edge data-from={"a" (a)} data-to={"e" (node)}
                                    d={"M" (PORT_X) " " (y1) " C" (mid) " " (y1) " " (mid) " " (y2) " " (ENTITY_X) " " (y2)} {}
                            }
                        }
                    }
                    @for (i, a) in alerts.iter().enumerate() {
                        (alert_row(i, a, i.checked_sub(1).map(|p| alerts[p])))
                    }
                    @for (node, row) in &plan.placed {
                        (entity_row(*node, &nodes[*node], *row, &devices))
                    }
                }
            }
            @if hidden_alerts > 0 || hidden_entities > 0 {
                figcaption.muted {
                    @if hidden_alerts > 0 {
                        "The first " (alerts.len()) " of " (all.len()) " alerts are drawn. "
                    }
                    @if hidden_entities > 0 {
                        "The " (hidden_entities) " entities named by the fewest alerts are left out of the "
                        "drawing; the entity list below has them all."
                    }
                }
            }
        }
    }
}

/// The time axis: solid between close alerts, dashed across long quiet stretches.
fn axis(alerts: &[&IncidentAlert]) -> Markup {
    html! {
        g.timeline-axis {
            @for pair in alerts.windows(2).enumerate() {
                @let (i, w) = pair;
                @let gap = (w[1].alert.first_event_time - w[0].alert.first_event_time).num_seconds() > GAP_SECS;
                line class=(if gap { "axis axis-gap" } else { "axis" })
                    x1=(AXIS_X) x2=(AXIS_X) y1=(row_y(i as i64)) y2=(row_y(i as i64 + 1)) {}
            }
        }
    }
}

fn alert_row(i: usize, a: &IncidentAlert, previous: Option<&IncidentAlert>) -> Markup {
    let alert = &a.alert;
    let y = row_y(i as i64);
    let t = alert.first_event_time;
    let same_day =
        previous.is_some_and(|p| p.alert.first_event_time.date_naive() == t.date_naive());
    let time = if same_day {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    };
    let tooltip = format!(
        "{} · {} · {}{}",
        t.format("%Y-%m-%d %H:%M:%S UTC"),
        alert.severity.as_str(),
        alert.title,
        alert
            .device_name
            .as_deref()
            .map(|d| format!(" · on {d}"))
            .unwrap_or_default()
    );
    html! {
        g.alert-row data-node={"a" (i)} {
            title { (tooltip) }
            text.label.mono x=(TIME_X) y=(y + 4) text-anchor="end" { (time) }
            circle class=(severity_class(alert.severity)) cx=(AXIS_X) cy=(y) r="6" {}
            a href={"/alerts/" (segment(&alert.id))} {
                text.node-label x=(TITLE_X) y=(y + 4) { (truncate(&alert.title, TITLE_CHARS)) }
            }
            circle.port cx=(PORT_X) cy=(y) r="3" {}
        }
    }
}

fn entity_row(
    index: usize,
    node: &EntityNode,
    row: i64,
    devices: &BTreeMap<String, String>,
) -> Markup {
    let y = row_y(row);
    let kind = node.entity.kind();
    let (badge, _) = kind_names(kind);
    let display = node.entity.display();
    let mut tooltip = format!("{} {}", kind.name().replace('_', " "), display);
    for (label, value) in entity_details(&node.entity) {
        tooltip.push_str(&format!("\n{label}: {value}"));
    }
    tooltip.push_str(&format!(
        "\nNamed by {} alert{}",
        node.alerts.len(),
        if node.alerts.len() == 1 { "" } else { "s" }
    ));
    let link = match kind {
        EntityKind::Device => devices
            .get(&node.key)
            .map(|id| format!("/devices/{}", segment(id))),
        _ => None,
    };
    let body = html! {
        rect.node x=(ENTITY_X) y=(y - ROW / 2 + 3) width=(ENTITY_W) height=(ROW - 6) rx="5" {}
        text.kind-badge x=(ENTITY_X + 8) y=(y + 4) { (badge) }
        text.node-label x=(ENTITY_X + 52) y=(y + 4) { (truncate(&display, ENTITY_CHARS)) }
    };
    html! {
        g class={"entity-row kind-" (kind.name())} data-node={"e" (index)} {
            title { (tooltip) }
            @if let Some(href) = link {
                a href=(href) { (body) }
            } @else {
                (body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use rampart_state::{Alert, Incident, IncidentStatus, Severity};
    use serde_json::{Value, json};

    use super::*;

    fn alert(id: &str, title: &str, secs: i64, evidence: Vec<Value>) -> IncidentAlert {
        let t = Utc.timestamp_opt(1_600_000_000 + secs, 0).unwrap();
        IncidentAlert {
            alert: Alert {
                id: id.into(),
                tenant_id: "t".into(),
                rule: None,
                title: title.into(),
                description: String::new(),
                severity: Severity::Medium,
                status: rampart_state::AlertStatus::New,
                classification: None,
                determination: None,
                assigned_to: None,
                tactics: vec![],
                techniques: vec![],
                device_id: Some("dev_1".into()),
                device_name: Some("ws1".into()),
                first_event_time: t,
                last_event_time: t,
                event_count: 1,
                dedup_key: None,
                evidence,
                trigger_event: None,
                matched_fields: Value::Null,
                incident_id: Some("inc_1".into()),
                created_at: t,
                updated_at: t,
            },
            reason: json!({}),
            joined_at: t,
        }
    }

    fn detail(alerts: Vec<IncidentAlert>) -> IncidentDetail {
        let t = Utc.timestamp_opt(1_600_000_000, 0).unwrap();
        IncidentDetail {
            incident: Incident {
                id: "inc_1".into(),
                tenant_id: "t".into(),
                title: "x".into(),
                severity: Severity::Medium,
                status: IncidentStatus::Active,
                classification: None,
                determination: None,
                assigned_to: None,
                tags: vec![],
                first_activity: t,
                last_activity: t,
                alert_count: alerts.len() as i64,
                merged_into: None,
                created_at: t,
                updated_at: t,
            },
            alerts,
            alerts_truncated: false,
            entities: vec![],
        }
    }

    fn device() -> Value {
        json!({"kind": "device", "name": "ws1", "id": null, "role": "impacted"})
    }

    fn user(name: &str) -> Value {
        json!({"kind": "account", "name": name, "domain": "CORP", "sid": null, "upn": null, "role": "impacted"})
    }

    fn process(pid: i64, command_line: &str) -> Value {
        json!({"kind": "process", "device": "ws1", "pid": pid, "image": "C:\\w\\cmd.exe",
               "file_name": "cmd.exe", "command_line": command_line, "sha1": null, "sha256": null,
               "creation_time": null, "role": "child"})
    }

    fn count(markup: &str, needle: &str) -> usize {
        markup.matches(needle).count()
    }

    #[test]
    fn one_node_per_alert_and_entity_one_edge_per_mention() {
        let d = detail(vec![
            alert(
                "alr_b",
                "second",
                60,
                vec![device(), user("bob"), process(2, "b")],
            ),
            alert(
                "alr_a",
                "first",
                0,
                vec![device(), user("bob"), process(1, "a")],
            ),
            alert("alr_c", "third", 120, vec![device(), process(2, "b")]),
        ]);
        let svg = attack_story(&d).into_string();
        assert_eq!(count(&svg, "class=\"node-alert"), 3);
        // ws1, CORP\bob, cmd.exe 1, cmd.exe 2.
        assert_eq!(count(&svg, "class=\"node\""), 4);
        // device 3 + bob 2 + pid 1 once + pid 2 twice.
        assert_eq!(count(&svg, "class=\"edge\""), 8);
        assert!(svg.contains("id=\"attack-story\"") && svg.contains("viewBox=\"0 0 1000 "));
        // The device entity links to its device page.
        assert!(svg.contains("href=\"/devices/dev_1\""));
    }

    #[test]
    fn alerts_are_drawn_in_time_order_whatever_the_input_order() {
        let d = detail(vec![
            alert("alr_3", "third", 300, vec![device()]),
            alert("alr_1", "first", 100, vec![device()]),
            alert("alr_2", "second", 200, vec![device()]),
        ]);
        let svg = attack_story(&d).into_string();
        let at = |t: &str| svg.find(&format!(">{t}<")).unwrap();
        assert!(at("first") < at("second") && at("second") < at("third"));
        // The first row carries the date; rows of the same day only the time.
        assert!(svg.contains(">2020-09-13 12:28:20<"));
        assert!(svg.contains(">12:30:00<"));
    }

    #[test]
    fn labels_are_escaped_and_cut_with_the_whole_text_in_the_tooltip() {
        let long = format!("<script>alert(1)</script> {}", "x".repeat(80));
        let d = detail(vec![alert(
            "alr_1",
            &long,
            0,
            vec![device(), process(1, "<img src=x>")],
        )]);
        let svg = attack_story(&d).into_string();
        assert!(!svg.contains("<script>") && !svg.contains("<img"));
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let cut = html! { (truncate(&long, TITLE_CHARS)) }.into_string();
        assert!(cut.ends_with('…') && svg.contains(&format!(">{cut}<")));
        assert!(
            svg.contains(&"x".repeat(80)),
            "the tooltip keeps the whole title"
        );
        assert!(svg.contains("Command line: &lt;img src=x&gt;"));
    }

    #[test]
    fn the_same_incident_draws_the_same_picture() {
        let alerts = || {
            vec![
                alert(
                    "alr_1",
                    "a",
                    0,
                    vec![device(), user("bob"), process(1, "x")],
                ),
                alert("alr_2", "b", 0, vec![user("alice"), device()]),
                alert("alr_3", "c", 9000, vec![process(1, "x"), device()]),
            ]
        };
        let once = attack_story(&detail(alerts())).into_string();
        let mut reversed = alerts();
        reversed.reverse();
        assert_eq!(once, attack_story(&detail(alerts())).into_string());
        assert_eq!(once, attack_story(&detail(reversed)).into_string());
        // A quiet stretch of more than an hour is dashed.
        assert_eq!(count(&once, "axis axis-gap"), 1);
    }

    #[test]
    fn entities_do_not_overlap_and_big_incidents_stay_bounded() {
        let many: Vec<IncidentAlert> = (0..MAX_ALERTS + 20)
            .map(|i| {
                alert(
                    &format!("alr_{i:04}"),
                    "t",
                    i as i64,
                    vec![device(), process(i as i64, "p"), user(&format!("u{i}"))],
                )
            })
            .collect();
        let d = detail(many);
        let svg = attack_story(&d).into_string();
        assert_eq!(count(&svg, "class=\"node-alert"), MAX_ALERTS);
        assert_eq!(count(&svg, "class=\"node\""), MAX_ENTITIES);
        assert!(svg.contains("The first 200 of 220 alerts are drawn."));
        let alerts = alerts_in_time_order(&d);
        let nodes = entities(&alerts[..MAX_ALERTS]);
        let plan = layout(MAX_ALERTS, &nodes);
        let mut rows: Vec<i64> = plan.placed.iter().map(|(_, r)| *r).collect();
        let placed = rows.len();
        rows.dedup();
        assert_eq!(rows.len(), placed, "two entities share a row");
        assert!(plan.rows <= (MAX_ALERTS + MAX_ENTITIES) as i64);
    }

    #[test]
    fn mentions_of_one_entity_are_one_node_with_the_most_detail() {
        let bare = json!({"kind": "process", "device": "ws1", "pid": 7, "image": null, "file_name": "x.exe",
                          "command_line": null, "sha1": null, "sha256": null, "creation_time": null, "role": "parent"});
        let full = json!({"kind": "process", "device": "ws1", "pid": 7, "image": null, "file_name": "x.exe",
                          "command_line": "x.exe /q", "sha1": null, "sha256": null, "creation_time": null, "role": "child"});
        let d = detail(vec![
            alert("alr_1", "a", 0, vec![bare]),
            alert("alr_2", "b", 5, vec![full]),
        ]);
        let alerts = alerts_in_time_order(&d);
        let nodes = entities(&alerts);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].alerts, vec![0, 1]);
        assert_eq!(nodes[0].entity.display(), "x.exe (pid 7)");
    }
}
