//! Devices: the inventory, and each device's page with tabs — overview (facts, sensor health,
//! tags and group, response actions), timeline, process tree, alerts and incidents.
//!
//! The timeline and the tree come from the hunting tables (`POST /api/v1/hunting/query` with KQL
//! built here, the device's name as an escaped string literal). A response action is asked for
//! twice: the device page's form answers a confirmation page saying what will happen, and only
//! its confirm button queues the action (`POST /api/v1/actions`).

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use maud::{Markup, html};
use rampart_schema::Table;
use rampart_state::{
    Action, ActionKind, Alert, Device, DeviceGroup, HealthStatus, Incident, IsolationState, Page,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::actions::{kind_label, params_fact, params_summary, result_summary};
use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{Answer, Failure, segment, with_query};
use crate::portal::html::{self, Ctx, Form, Query, Section};
use crate::portal::text::{bytes, parse_time, thousands};
use crate::portal::tree::{self, Tree};

/// Devices per page of the inventory.
const DEVICES_PER_PAGE: &str = "50";
/// Alerts and incidents per page of a device's tabs.
const ITEMS_PER_PAGE: &str = "50";
/// Events per page of the timeline.
const TIMELINE_PAGE: usize = 200;
/// Process-creation rows read for a tree: before and after the focus, or the latest ones.
const TREE_ROWS_BEFORE: usize = 2000;
const TREE_ROWS_AFTER: usize = 3000;
const TREE_ROWS_LATEST: usize = 300;
/// How far from the focus a tree looks for its processes.
const TREE_WINDOW: TimeDelta = TimeDelta::days(1);
/// Processes a tree holds, descendants of a focus shown, and tree levels drawn.
const TREE_MAX_NODES: usize = 5000;
const TREE_MAX_DESCENDANTS: usize = 1500;
const TREE_MAX_DEPTH: usize = 60;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/devices", get(list))
        .route("/devices/{id}", get(overview))
        .route("/devices/{id}/labels", post(set_labels))
        .route("/devices/{id}/timeline", get(timeline))
        .route("/devices/{id}/tree", get(process_tree))
        .route("/devices/{id}/alerts", get(alerts))
        .route("/devices/{id}/incidents", get(incidents))
        .route("/devices/{id}/actions", post(request_action))
}

// ---------------------------------------------------------------------------------------------
// The inventory

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    group: Option<String>,
    tag: Option<String>,
    health: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

const HEALTH_STATES: [(HealthStatus, &str); 4] = [
    (HealthStatus::Active, "Active"),
    (HealthStatus::Inactive, "Inactive"),
    (HealthStatus::Misconfigured, "Misconfigured"),
    (HealthStatus::NoSensorData, "No sensor data"),
];

/// `GET /devices`: the devices, filtered, a page at a time.
async fn list(ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    let text = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_string();
    let (search, group, tag, health) = (text(&q.q), text(&q.group), text(&q.tag), text(&q.health));
    if !health.is_empty() && !HEALTH_STATES.iter().any(|(h, _)| h.as_str() == health) {
        return html::plain_error(StatusCode::BAD_REQUEST, "Unknown health state.");
    }
    let path = with_query(
        "/api/v1/devices",
        &[
            ("hostname", &search),
            ("group", &group),
            ("tag", &tag),
            ("health", &health),
            ("limit", DEVICES_PER_PAGE),
            ("cursor", q.cursor.as_deref().unwrap_or("")),
        ],
    );
    let (devices, groups) = tokio::join!(
        ctx.api.get::<Page<Device>>(&path),
        ctx.api
            .get::<Page<DeviceGroup>>("/api/v1/device-groups?limit=1000"),
    );
    let devices = match devices {
        Ok(d) => d,
        Err(f) => return ctx.failure(Section::Devices, &f),
    };
    let groups = groups.map(|g| g.items).unwrap_or_default();
    let base = with_query(
        "/devices",
        &[
            ("q", &search),
            ("group", &group),
            ("tag", &tag),
            ("health", &health),
        ],
    );
    let filtered = [&search, &group, &tag, &health]
        .iter()
        .any(|v| !v.is_empty());
    ctx.page(Section::Devices, "Devices", html! {
        (html::notice(q.notice.as_deref()))
        form.filters method="get" action="/devices" role="search" {
            div.field {
                label for="q" { "Host name" }
                input #q type="search" name="q" value=(search) placeholder="Part of a host name" data-search;
            }
            (html::choice("group", "Group", "group", "Any group", &group, groups.iter().map(|g| (g.id.as_str(), g.name.as_str()))))
            div.field {
                label for="tag" { "Tag" }
                input #tag type="text" name="tag" value=(tag) size="12";
            }
            (html::choice("health", "Health", "health", "Any health", &health, HEALTH_STATES.iter().map(|(state, label)| (state.as_str(), label))))
            button type="submit" { "Filter" }
            @if filtered { a.button.quiet href="/devices" { "Clear filters" } }
        }
        @if devices.items.is_empty() {
            div.panel.empty {
                @if filtered {
                    "No device matches these filters. " a href="/devices" { "Clear the filters" } " to see every device."
                } @else {
                    "No devices yet. Devices appear when an agent enrolls or when ingested event logs name them."
                }
            }
        } @else {
            div.table-wrap {
                table #devices .grid {
                    thead { tr {
                        th scope="col" { "Device" }
                        th scope="col" { "Health" }
                        th scope="col" { "Sensor" }
                        th scope="col" { "Last seen" }
                        th scope="col" { "Risk" }
                        th scope="col" { "Group" }
                        th scope="col" { "Tags" }
                        th scope="col" { "Isolation" }
                        th.num scope="col" title="Events the agent could not deliver (cumulative)" { "Dropped" }
                    } }
                    tbody {
                        @for d in &devices.items {
                            tr {
                                td.wrap {
                                    a.device-link href={"/devices/" (segment(&d.id))} { (d.hostname) }
                                    div.muted.small { (platform_text(d)) }
                                }
                                td { (html::status(d.health_status.as_str())) }
                                td { (sensor_text(d)) }
                                td { (html::time(&d.last_seen)) }
                                td { (risk(d)) }
                                td { (group_name(&groups, d.group_id.as_deref())) }
                                td.wrap { (tag_list(&d.tags)) }
                                td { (isolation(d.isolation)) }
                                td.num { (dropped(d.events_dropped)) }
                            }
                        }
                    }
                }
            }
            (html::pager(&base, devices.next.as_deref()))
        }
    })
}

fn platform_text(d: &Device) -> String {
    match (d.platform.as_str(), d.os_version.as_str()) {
        ("", "") => "Platform unknown".into(),
        (p, "") => p.into(),
        ("", v) => v.into(),
        (p, v) => format!("{p} · {v}"),
    }
}

/// The sensor mode the agent reports, or why there is none.
fn sensor_text(d: &Device) -> Markup {
    let mode = d.health.get("sensor_mode").and_then(Value::as_str);
    let error = d.health.get("sensor_error").and_then(Value::as_str);
    html! {
        @match (d.agent_version.as_ref(), mode) {
            (None, _) => span.muted title="Known from event logs only" { "no agent" },
            (Some(_), Some(mode)) => {
                span class=[error.map(|_| "warn")] title=[error] { (mode) }
            }
            (Some(_), None) => span.muted { "not reported" },
        }
    }
}

fn risk(d: &Device) -> Markup {
    let name = d.risk.as_str();
    html! {
        @if name == "none" { span.muted { "none" } } @else { (html::severity(name)) }
    }
}

fn isolation(state: IsolationState) -> Markup {
    html! {
        @if state == IsolationState::NotIsolated {
            span.muted { "not isolated" }
        } @else {
            (html::status(state.as_str()))
        }
    }
}

fn dropped(n: i64) -> Markup {
    html! {
        @if n > 0 {
            span.drops title="Events the agent could not deliver: telemetry is missing" { (thousands(n)) }
        } @else {
            span.muted { "0" }
        }
    }
}

fn group_name(groups: &[DeviceGroup], id: Option<&str>) -> Markup {
    html! {
        @match id {
            None => span.muted { "none" },
            Some(id) => a href=(with_query("/devices", &[("group", id)])) title="Devices of this group" {
                @match groups.iter().find(|g| g.id == id) {
                    Some(g) => (g.name),
                    None => span.mono { (id) },
                }
            },
        }
    }
}

fn tag_list(tags: &[String]) -> Markup {
    html! {
        @if tags.is_empty() {
            span.muted { "none" }
        } @else {
            span.tag-list {
                @for t in tags {
                    a.tag href=(with_query("/devices", &[("tag", t)])) title="Devices with this tag" { (t) }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The device page and its tabs

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Overview,
    Timeline,
    Tree,
    Alerts,
    Incidents,
}

impl Tab {
    const ALL: [Tab; 5] = [
        Tab::Overview,
        Tab::Timeline,
        Tab::Tree,
        Tab::Alerts,
        Tab::Incidents,
    ];

    fn label(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Timeline => "Timeline",
            Tab::Tree => "Process tree",
            Tab::Alerts => "Alerts",
            Tab::Incidents => "Incidents",
        }
    }

    fn href(self, id: &str) -> String {
        let base = format!("/devices/{}", segment(id));
        match self {
            Tab::Overview => base,
            Tab::Timeline => format!("{base}/timeline"),
            Tab::Tree => format!("{base}/tree"),
            Tab::Alerts => format!("{base}/alerts"),
            Tab::Incidents => format!("{base}/incidents"),
        }
    }
}

/// The device, or the page saying why it cannot be shown.
pub(super) async fn device(ctx: &Ctx, id: &str) -> Result<Device, Response> {
    ctx.api
        .get::<Device>(&format!("/api/v1/devices/{}", segment(id)))
        .await
        .map_err(|f| ctx.failure(Section::Devices, &f))
}

/// A tab of the device page: the device's key facts, the tabs, then `body`.
fn device_page(ctx: &Ctx, d: &Device, tab: Tab, body: Markup) -> Response {
    let title = match tab {
        Tab::Overview => d.hostname.clone(),
        other => format!("{} · {}", d.hostname, other.label()),
    };
    ctx.page(Section::Devices, &title, html! {
        div.device-summary.row {
            span { (platform_text(d)) }
            (html::status(d.health_status.as_str()))
            (isolation(d.isolation))
            span { "Risk " (risk(d)) }
            span.muted { "Last seen " (html::time(&d.last_seen)) }
            @if d.events_dropped > 0 {
                span { (dropped(d.events_dropped)) " events dropped" }
            }
            a.back href="/devices" { "All devices" }
        }
        nav.tabs aria-label="Device views" {
            @for t in Tab::ALL {
                a href=(t.href(&d.id)) aria-current=[(t == tab).then_some("page")] { (t.label()) }
            }
        }
        (body)
    })
}

#[derive(Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
}

/// `GET /devices/{id}`: facts, sensor health, tags and group, response actions.
async fn overview(ctx: Ctx, Path(id): Path<String>, Query(q): Query<NoticeQuery>) -> Response {
    let recent_path = with_query("/api/v1/actions", &[("device_id", &id), ("limit", "8")]);
    let (d, groups, recent) = tokio::join!(
        device(&ctx, &id),
        ctx.api
            .get::<Page<DeviceGroup>>("/api/v1/device-groups?limit=1000"),
        ctx.api.get::<Page<Action>>(&recent_path),
    );
    let d = match d {
        Ok(d) => d,
        Err(page) => return page,
    };
    let groups = groups.map(|g| g.items).unwrap_or_default();
    let analyst = ctx.can(Access::Analyst);
    // An isolation asked for and not carried out yet (the device's state changes once it is).
    let isolation_pending = recent.as_ref().ok().and_then(|page| {
        page.items.iter().find(|a| {
            matches!(a.kind, ActionKind::Isolate | ActionKind::Release) && !a.status.is_terminal()
        })
    });
    let body = html! {
        (html::notice(q.notice.as_deref()))
        (health_warnings(&d))
        div.cols {
            div {
                div.panel {
                    h2 { "Device" }
                    (html::facts(&[
                        ("Host name", html! { (d.hostname) }),
                        ("Device id", html! { span.mono { (d.id) } }),
                        ("Platform", html! { (or_unknown(&d.platform)) }),
                        ("OS version", html! { (or_unknown(&d.os_version)) }),
                        ("Agent", html! {
                            @match &d.agent_version {
                                Some(v) => { "version " (v) },
                                None => span.muted { "none: known from event logs only" },
                            }
                        }),
                        ("Health", html::status(d.health_status.as_str())),
                        ("Isolation", html! {
                            (isolation(d.isolation))
                            @if let Some(a) = isolation_pending {
                                " · " a.warn href={"/actions/" (segment(&a.id))} {
                                    (kind_label(a.kind)) " requested (" (a.status.as_str()) ")"
                                }
                            }
                        }),
                        ("Risk", risk(&d)),
                        ("First seen", html::time(&d.first_seen)),
                        ("Last seen", html::time(&d.last_seen)),
                        ("Events dropped", html! {
                            (dropped(d.events_dropped))
                            @if d.drops_reported > 0 {
                                span.muted { " (" (thousands(d.drops_reported)) " drop reports)" }
                            }
                        }),
                        ("Group", group_name(&groups, d.group_id.as_deref())),
                        ("Tags", tag_list(&d.tags)),
                        ("Certificate", html! {
                            @match &d.cert_fingerprint {
                                Some(fp) => span.mono.wrap-anywhere { "sha256:" (fp) },
                                None => span.muted { "none" },
                            }
                        }),
                    ]))
                }
                div.panel {
                    h2 { "Sensor health" }
                    @if d.health.as_object().is_none_or(Map::is_empty) {
                        p.muted { "The device has not reported any health details: "
                            @if d.agent_version.is_none() { "it has no agent." } @else { "its agent has not sent a heartbeat yet." } }
                    } @else {
                        p.muted { "As the agent reported it last (" (html::time(&d.last_seen)) ")." }
                        (health_details(&d.health))
                    }
                }
                @if analyst {
                    (labels_form(&ctx, &d, &groups))
                }
            }
            div {
                @if analyst {
                    (action_forms(&ctx, &d))
                }
                (recent_actions(&d, &recent))
            }
        }
    };
    device_page(&ctx, &d, Tab::Overview, body)
}

fn or_unknown(text: &str) -> Markup {
    html! {
        @if text.is_empty() { span.muted { "unknown" } } @else { (text) }
    }
}

/// What in the agent's report needs attention at once: tampering, a sensor that is not fully
/// working, a silent or stopping agent, lost telemetry.
fn health_warnings(d: &Device) -> Markup {
    let h = &d.health;
    let tamper: Vec<String> = h
        .get("tamper")
        .and_then(Value::as_array)
        .map(|t| t.iter().map(html::value_text).collect())
        .unwrap_or_default();
    let sensor_error = h.get("sensor_error").and_then(Value::as_str);
    let stopping = h.get("stopping").and_then(Value::as_str);
    html! {
        @for t in &tamper {
            div.notice.error role="alert" { strong { "Tampering: " } (t) }
        }
        @if let Some(e) = sensor_error {
            div.notice.error role="alert" { strong { "Sensor: " } (e) }
        }
        @if d.health_status == HealthStatus::Inactive {
            div.notice.warn role="status" {
                strong { "The agent is silent. " }
                "It has not reported since " (html::time(&d.last_seen)) "; response actions wait until it does."
            }
        } @else if let Some(s) = stopping {
            div.notice.warn role="status" { strong { "Stopping: " } (s) }
        }
        @if d.events_dropped > 0 {
            div.notice.warn role="status" {
                strong { (thousands(d.events_dropped)) " events dropped. " }
                "The agent could not deliver them: the device's timeline and process tree are incomplete."
            }
        }
    }
}

/// Keys of the agent's health report in words.
fn health_label(key: &str) -> String {
    let known = match key {
        "sensor_mode" => "Sensor mode",
        "sensor_error" => "Sensor error",
        "logon_source" => "Logon source",
        "dns" => "DNS capture",
        "detached_programs" => "Detached sensor programs",
        "queue" => "Send queue",
        "records" => "Records waiting",
        "bytes" => "Size",
        "dropped_records" => "Records dropped",
        "counters" => "Since the agent started",
        "rows_queued" => "Rows queued",
        "rows_sent" => "Rows sent",
        "rows_refused" => "Rows refused by the server",
        "kernel_lost" => "Events lost in the kernel",
        "send_failures" => "Failed sends",
        "isolated" => "Isolated (agent's view)",
        "tamper" => "Tampering",
        "stopping" => "Stopping",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_string();
    }
    let words = key.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => words,
    }
}

/// Values of these keys are bad news when not zero or empty.
fn is_warning(key: &str, value: &Value) -> bool {
    let watched = matches!(
        key,
        "sensor_error"
            | "detached_programs"
            | "dropped_records"
            | "dropped_bytes"
            | "rows_refused"
            | "kernel_lost"
            | "send_failures"
            | "tamper"
            | "stopping"
    );
    watched
        && match value {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Bool(true) => true,
        }
}

/// The agent's health report (any JSON) as nested facts in words.
fn health_details(value: &Value) -> Markup {
    health_value("", value, 0)
}

fn health_value(key: &str, value: &Value, depth: usize) -> Markup {
    html! {
        @match value {
            Value::Object(fields) if depth < 4 => {
                dl.facts.health {
                    @for (k, v) in fields {
                        dt { (health_label(k)) }
                        dd class=[is_warning(k, v).then_some("warn")] { (health_value(k, v, depth + 1)) }
                    }
                }
            }
            Value::Array(items) if items.is_empty() => span.muted { "none" },
            Value::Array(items) => {
                ul.plain { @for item in items { li { (html::value_text(item)) } } }
            }
            Value::Bool(b) => { @if *b { "yes" } @else { "no" } },
            Value::Null => span.muted { "none" },
            Value::Number(n) if key.ends_with("bytes") => (n.as_u64().map_or_else(|| n.to_string(), bytes)),
            Value::Number(n) => (n.as_i64().map_or_else(|| n.to_string(), thousands)),
            other => (html::value_text(other)),
        }
    }
}

/// Tags and group, changed through `PATCH /api/v1/devices/{id}`.
fn labels_form(ctx: &Ctx, d: &Device, groups: &[DeviceGroup]) -> Markup {
    html! {
        div.panel {
            h2 { "Tags and group" }
            form method="post" action={"/devices/" (segment(&d.id)) "/labels"} {
                (ctx.csrf())
                div.field {
                    label for="tags" { "Tags" }
                    input #tags type="text" name="tags" value=(d.tags.join(", ")) placeholder="e.g. server, finance";
                    span.muted.small { "Separated by commas or spaces." }
                }
                div.field {
                    label for="group-id" { "Device group" }
                    select #group-id name="group_id" {
                        option value="" selected[d.group_id.is_none()] { "No group" }
                        @for g in groups {
                            option value=(g.id) selected[d.group_id.as_deref() == Some(g.id.as_str())] { (g.name) }
                        }
                    }
                }
                button type="submit" { "Save tags and group" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct LabelsForm {
    tags: Option<String>,
    group_id: Option<String>,
}

/// Tags typed as `a, b c` (commas or spaces), without repeats.
fn parse_tags(text: &str) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in text
        .split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    tags
}

/// `POST /devices/{id}/labels`.
async fn set_labels(ctx: Ctx, Path(id): Path<String>, Form(form): Form<LabelsForm>) -> Response {
    let tags = parse_tags(form.tags.as_deref().unwrap_or(""));
    let group = form.group_id.filter(|g| !g.is_empty());
    let answer: Answer<Device> = ctx
        .api
        .patch(
            &format!("/api/v1/devices/{}", segment(&id)),
            json!({"tags": tags, "group_id": group}),
        )
        .await;
    match answer {
        Ok(_) => html::after_change(&Tab::Overview.href(&id), "Tags and group saved."),
        Err(f) => failed(&ctx, Section::Devices, &f, &Tab::Overview.href(&id)),
    }
}

/// A failed change: the API's reason and the way back.
pub fn failed(ctx: &Ctx, section: Section, failure: &Failure, back: &str) -> Response {
    let mut response = ctx.page(
        section,
        "Not done",
        html! {
            (html::failure_box(failure))
            p { a.button href=(back) { "Back" } }
        },
    );
    *response.status_mut() = failure.status;
    response
}

fn recent_actions(d: &Device, recent: &Answer<Page<Action>>) -> Markup {
    let all = with_query("/actions", &[("device", &d.id)]);
    html! {
        div.panel {
            h2 { "Recent actions" }
            @match recent {
                Err(f) => (html::failure_box(f)),
                Ok(page) if page.items.is_empty() => p.muted { "No response action on this device yet." },
                Ok(page) => {
                    ul.plain.recent-actions {
                        @for a in &page.items {
                            li {
                                a href={"/actions/" (segment(&a.id))} { (kind_label(a.kind)) }
                                " " (html::status(a.status.as_str()))
                                div.muted.small { (html::time(&a.requested_at)) " · " (a.requested_by) }
                                div.small { (params_summary(a.kind, &a.params)) }
                                div.small { (result_summary(a)) }
                            }
                        }
                    }
                    p { a href=(all) { "All actions on this device" } }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Response actions: form, confirmation, request

/// The allow-list of the agent's live response (`rampart-agent`'s `live::COMMANDS`), offered
/// as suggestions: the agent decides.
const LIVE_COMMANDS: &[&str] = &[
    "ps",
    "ss",
    "ip",
    "netstat",
    "lsof",
    "who",
    "w",
    "uptime",
    "lsmod",
    "last",
    "lastb",
    "df",
    "mount",
    "findmnt",
    "systemctl",
    "journalctl",
    "cat",
    "sha256sum",
    "sha1sum",
    "md5sum",
    "stat",
    "file",
    "head",
    "tail",
    "ls",
    "readlink",
    "find",
];

fn action_forms(ctx: &Ctx, d: &Device) -> Markup {
    let target = format!("/devices/{}/actions", segment(&d.id));
    let kind = |k: ActionKind| html! { input type="hidden" name="kind" value=(k.as_str()); };
    html! {
        div.panel.response {
            h2 { "Response actions" }
            @if d.agent_version.is_none() {
                p.notice.warn { "This device has no agent: an action waits until one enrolls with this host name." }
            }
            p.muted.small { "Each action asks for confirmation first. The agent carries it out at its next contact; follow it in the "
                a href="/actions" { "action center" } "." }
            div.row {
                form #action-isolate method="post" action=(target) {
                    (ctx.csrf()) (kind(ActionKind::Isolate))
                    button.danger type="submit" { "Isolate device" }
                }
                form #action-release method="post" action=(target) {
                    (ctx.csrf()) (kind(ActionKind::Release))
                    button.quiet type="submit" { "Release from isolation" }
                }
                form #action-collect method="post" action=(target) {
                    (ctx.csrf()) (kind(ActionKind::CollectPackage))
                    button.quiet type="submit" { "Collect investigation package" }
                }
            }
            form #action-kill.action method="post" action=(target) {
                (ctx.csrf()) (kind(ActionKind::KillProcess))
                h3 { "Kill a process" }
                div.row {
                    div.field {
                        label for="kill-pid" { "Process id" }
                        input #kill-pid type="number" name="pid" min="2" required size="8";
                    }
                    div.check {
                        input #kill-tree type="checkbox" name="tree" value="1";
                        label for="kill-tree" { "and its descendants" }
                    }
                }
                button type="submit" { "Kill process" }
            }
            form #action-quarantine.action method="post" action=(target) {
                (ctx.csrf()) (kind(ActionKind::QuarantineFile))
                h3 { "Quarantine a file" }
                div.field {
                    label for="quarantine-path" { "Path" }
                    input #quarantine-path type="text" name="path" required placeholder="/tmp/payload";
                }
                button type="submit" { "Quarantine file" }
            }
            form #action-run.action method="post" action=(target) {
                (ctx.csrf()) (kind(ActionKind::RunCommand))
                h3 { "Run a live-response command" }
                div.row {
                    div.field {
                        label for="run-command" { "Command" }
                        input #run-command type="text" name="command" list="live-commands" required size="10" placeholder="ps";
                        datalist #live-commands { @for c in LIVE_COMMANDS { option value=(c) {} } }
                    }
                    div.field.grow {
                        label for="run-args" { "Arguments" }
                        input #run-args type="text" name="args" placeholder="aux";
                    }
                }
                p.muted.small { "Read-only commands from the agent's allow-list, run without a shell. Quote an argument with spaces: \"a b\"." }
                button type="submit" { "Run command" }
            }
        }
    }
}

#[derive(Deserialize, Default, Clone)]
pub struct ActionForm {
    kind: Option<String>,
    pid: Option<String>,
    tree: Option<String>,
    path: Option<String>,
    command: Option<String>,
    args: Option<String>,
    /// The quarantine to restore a file from (the `id` a quarantine action answered).
    quarantine_id: Option<String>,
    comment: Option<String>,
    confirmed: Option<String>,
}

/// The action a form asks for: its kind and parameters, or what is wrong with the form.
fn action_request(form: &ActionForm) -> Result<(ActionKind, Value), String> {
    let kind: ActionKind = form
        .kind
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|_| "Unknown action.".to_string())?;
    let text = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_string();
    let mut params = match kind {
        ActionKind::Isolate | ActionKind::Release | ActionKind::CollectPackage => json!({}),
        ActionKind::KillProcess => {
            let pid: u32 = text(&form.pid)
                .parse()
                .ok()
                .filter(|&p| p > 1)
                .ok_or("The process id must be a whole number above 1.")?;
            json!({"pid": pid, "tree": form.tree.as_deref().is_some_and(|t| !t.is_empty())})
        }
        ActionKind::QuarantineFile => {
            let path = text(&form.path);
            if !path.starts_with('/') {
                return Err("The path must be absolute (start with /).".into());
            }
            json!({"path": path})
        }
        ActionKind::RunCommand => {
            let command = text(&form.command);
            if command.is_empty() || command.contains(char::is_whitespace) {
                return Err("Name one command (its arguments go in their own field).".into());
            }
            let args = split_args(&text(&form.args))?;
            json!({"command": command, "args": args})
        }
        ActionKind::RestoreFile => {
            let id = text(&form.quarantine_id);
            if id.is_empty() {
                return Err("Restore a file from the action that quarantined it.".into());
            }
            // The agent goes by the id; the path says which file it is.
            json!({"id": id, "path": text(&form.path)})
        }
    };
    let comment = text(&form.comment);
    if !comment.is_empty() {
        params["comment"] = Value::String(comment);
    }
    Ok((kind, params))
}

/// Arguments typed on one line: split at spaces; `"…"` or `'…'` keeps spaces in one argument.
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                current.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => args.extend(current.take()),
            (None, c) => current.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("An argument's quote is not closed.".into());
    }
    args.extend(current);
    Ok(args)
}

/// The question a confirmation page asks.
fn question(kind: ActionKind, host: &str) -> String {
    match kind {
        ActionKind::Isolate => format!("Isolate {host}?"),
        ActionKind::Release => format!("Release {host} from isolation?"),
        ActionKind::CollectPackage => format!("Collect an investigation package from {host}?"),
        ActionKind::KillProcess => format!("Kill a process on {host}?"),
        ActionKind::QuarantineFile => format!("Quarantine a file on {host}?"),
        ActionKind::RestoreFile => format!("Restore a file on {host}?"),
        ActionKind::RunCommand => format!("Run a command on {host}?"),
    }
}

/// The confirm button's words.
fn confirm_label(kind: ActionKind, host: &str) -> String {
    match kind {
        ActionKind::Isolate => format!("Isolate {host}"),
        ActionKind::Release => format!("Release {host}"),
        other => kind_label(other).to_string(),
    }
}

/// What an action will do, in words, for its confirmation.
fn consequence(kind: ActionKind, d: &Device) -> String {
    let host = &d.hostname;
    match kind {
        ActionKind::Isolate => format!(
            "{host} will be cut off from the network: every connection is blocked except the agent's to Rampart, so you can still investigate and release it. Users of {host} lose network access until then."
        ),
        ActionKind::Release => format!("{host} gets its network access back."),
        ActionKind::CollectPackage => format!(
            "The agent on {host} collects an investigation package (processes, connections, users, logs, autoruns…) and uploads it; download it from the action center."
        ),
        ActionKind::KillProcess => {
            format!("The process is killed on {host} (SIGKILL): unsaved work in it is lost.")
        }
        ActionKind::QuarantineFile => format!(
            "The file is moved into the agent's quarantine on {host} (readable by root only) and can be restored later."
        ),
        ActionKind::RunCommand => format!(
            "The command runs on {host} without a shell, for at most a minute; its output is shown in the action center."
        ),
        ActionKind::RestoreFile => format!("The file is put back where it was on {host}."),
    }
}

/// `POST /devices/{id}/actions`: the confirmation page; confirmed, the action is queued.
async fn request_action(
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let d = match device(&ctx, &id).await {
        Ok(d) => d,
        Err(page) => return page,
    };
    let (kind, params) = match action_request(&form) {
        Ok(request) => request,
        Err(problem) => return confirmation(&ctx, &d, &form, None, Some(&problem)),
    };
    if form.confirmed.as_deref() != Some("1") {
        return confirmation(&ctx, &d, &form, Some((kind, &params)), None);
    }
    let answer: Answer<Action> = ctx
        .api
        .post(
            "/api/v1/actions",
            json!({"device_id": d.id, "kind": kind.as_str(), "params": params}),
        )
        .await;
    match answer {
        Ok(action) => html::after_change(
            &with_query("/actions", &[("device", &d.id)]),
            &format!(
                "{} requested for {} ({}): it waits for the agent's next contact.",
                kind_label(kind),
                d.hostname,
                action.id
            ),
        ),
        Err(f) => {
            let mut page = confirmation(&ctx, &d, &form, Some((kind, &params)), Some(&f.detail));
            *page.status_mut() = f.status;
            page
        }
    }
}

/// The page between a device's action form and the action: what will happen, to which device,
/// with the button that queues it. With `problem`, what must be corrected first.
fn confirmation(
    ctx: &Ctx,
    d: &Device,
    form: &ActionForm,
    request: Option<(ActionKind, &Value)>,
    problem: Option<&str>,
) -> Response {
    let back = Tab::Overview.href(&d.id);
    let title = match request {
        Some((kind, _)) => question(kind, &d.hostname),
        None => "The action cannot be requested".to_string(),
    };
    let hidden = [
        ("kind", &form.kind),
        ("pid", &form.pid),
        ("tree", &form.tree),
        ("path", &form.path),
        ("command", &form.command),
        ("args", &form.args),
        ("quarantine_id", &form.quarantine_id),
    ];
    let mut response = ctx.page(Section::Devices, &title, html! {
        @if let Some(p) = problem {
            div.notice.error role="alert" { (p) }
        }
        @if let Some((kind, params)) = request {
            div.panel.confirm {
                p.lead { (consequence(kind, d)) }
                (html::facts(&[
                    ("Device", html! { a href=(back) { (d.hostname) } " " span.muted { "(" (platform_text(d)) ")" } }),
                    ("Action", html! { (kind_label(kind)) }),
                    ("Parameters", params_fact(kind, params)),
                    ("Agent", html! {
                        @match &d.agent_version {
                            Some(v) => { "version " (v) ", last seen " (html::time(&d.last_seen)) },
                            None => span.warn { "none: the action waits until an agent enrolls for this host" },
                        }
                    }),
                ]))
                form method="post" action={"/devices/" (segment(&d.id)) "/actions"} {
                    (ctx.csrf())
                    @for (name, value) in hidden {
                        @if let Some(v) = value { input type="hidden" name=(name) value=(v); }
                    }
                    input type="hidden" name="confirmed" value="1";
                    div.field {
                        label for="comment" { "Reason (kept with the action)" }
                        input #comment type="text" name="comment" value=[form.comment.as_deref()] placeholder="e.g. incident 42: beaconing to a known C2";
                    }
                    div.row {
                        button #confirm class=[matches!(kind, ActionKind::Isolate | ActionKind::KillProcess).then_some("danger")] type="submit" {
                            (confirm_label(kind, &d.hostname))
                        }
                        a.button.quiet href=(back) { "Cancel" }
                    }
                }
            }
        } @else {
            p { a.button href=(back) { "Back to " (d.hostname) } }
        }
    });
    if request.is_none() {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Hunting queries

/// The answer of `POST /api/v1/hunting/query`, as far as the device pages read it.
#[derive(Deserialize)]
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

impl Rows {
    fn index(&self) -> impl Fn(&str) -> Option<usize> + '_ {
        move |name| self.columns.iter().position(|c| c == name)
    }
}

async fn hunt(ctx: &Ctx, query: &str) -> Answer<Rows> {
    ctx.api
        .post(
            "/api/v1/hunting/query",
            json!({"query": query, "history": false}),
        )
        .await
}

/// `text` as a KQL string literal: double-quoted, with quotes, backslashes, control and
/// invisible characters escaped, so that no value can end the literal or change the query.
fn kql_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{200B}' | '\u{2060}' | '\u{FEFF}' | '\u{2028}' | '\u{2029}'
                ) =>
            {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn kql_time(t: DateTime<Utc>) -> String {
    format!(
        "datetime({})",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// A time as it is typed in a filter.
fn input_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The timeline

/// The event tables of a device, with the short name the timeline gives their rows.
const EVENT_TABLES: [(Table, &str); 7] = [
    (Table::DeviceProcessEvents, "Process"),
    (Table::DeviceNetworkEvents, "Network"),
    (Table::DeviceFileEvents, "File"),
    (Table::DeviceRegistryEvents, "Registry"),
    (Table::DeviceLogonEvents, "Logon"),
    (Table::DeviceImageLoadEvents, "Image load"),
    (Table::DeviceEvents, "Other"),
];

/// The columns the timeline reads (of those the chosen tables have).
const TIMELINE_COLUMNS: &[&str] = &[
    "Timestamp",
    "ActionType",
    "FileName",
    "FolderPath",
    "SHA256",
    "ProcessId",
    "ProcessCommandLine",
    "AccountDomain",
    "AccountName",
    "LogonType",
    "Protocol",
    "LocalIP",
    "LocalPort",
    "RemoteIP",
    "RemotePort",
    "RemoteUrl",
    "RegistryKey",
    "RegistryValueName",
    "RegistryValueData",
    "InitiatingProcessId",
    "InitiatingProcessFileName",
    "InitiatingProcessCommandLine",
    "AdditionalFields",
];

/// The columns free text is looked for in.
const TEXT_COLUMNS: &[&str] = &[
    "FileName",
    "FolderPath",
    "SHA256",
    "ProcessCommandLine",
    "AccountName",
    "RemoteIP",
    "RemoteUrl",
    "RegistryKey",
    "RegistryValueName",
    "RegistryValueData",
    "InitiatingProcessFileName",
    "InitiatingProcessCommandLine",
    "AdditionalFields",
];

#[derive(Deserialize, Default)]
pub struct TimelineQuery {
    table: Option<String>,
    action_type: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Paging: only events before this time (RFC 3339).
    before: Option<String>,
}

/// The timeline's filters, checked.
#[derive(Clone, Debug, Default, PartialEq)]
struct TimelineFilter {
    table: Option<Table>,
    action_type: String,
    text: String,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

impl TimelineFilter {
    fn parse(q: &TimelineQuery) -> Result<TimelineFilter, String> {
        let table = match q.table.as_deref().unwrap_or("") {
            "" => None,
            name => Some(
                EVENT_TABLES
                    .iter()
                    .map(|(t, _)| *t)
                    .find(|t| t.name() == name)
                    .ok_or_else(|| format!("{name} is not an event table of a device."))?,
            ),
        };
        Ok(TimelineFilter {
            table,
            action_type: q.action_type.as_deref().unwrap_or("").trim().to_string(),
            text: q.q.as_deref().unwrap_or("").trim().to_string(),
            from: parse_time("From", q.from.as_deref().unwrap_or(""))?,
            to: parse_time("To", q.to.as_deref().unwrap_or(""))?,
            before: parse_time("Before", q.before.as_deref().unwrap_or(""))?,
        })
    }

    /// The timeline's address with these filters (`before` left out).
    fn href(&self, id: &str) -> String {
        let (from, to) = (input_time(self.from), input_time(self.to));
        with_query(
            &Tab::Timeline.href(id),
            &[
                ("table", self.table.map_or("", |t| t.name())),
                ("action_type", &self.action_type),
                ("q", &self.text),
                ("from", &from),
                ("to", &to),
            ],
        )
    }

    fn is_empty(&self) -> bool {
        self.table.is_none()
            && self.action_type.is_empty()
            && self.text.is_empty()
            && self.from.is_none()
            && self.to.is_none()
    }
}

/// The times a device's events can have, to spare the store the days of other devices: from a
/// day before the device was first seen and, for a device without an agent (known from the
/// events that name it), to a day after it was last seen.
type Bounds = (DateTime<Utc>, Option<DateTime<Utc>>);

fn event_bounds(d: &Device) -> Bounds {
    let margin = TimeDelta::days(1);
    (
        d.first_seen - margin,
        d.agent_version.is_none().then(|| d.last_seen + margin),
    )
}

/// `[from, to)` narrowed to `bounds`.
fn within(
    bounds: Bounds,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    let from = from.map_or(bounds.0, |f| f.max(bounds.0));
    let to = match (to, bounds.1) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (from, to)
}

/// The KQL of a page of the device's events, newest first: `limit` rows.
fn timeline_query(hostname: &str, f: &TimelineFilter, bounds: Bounds, limit: usize) -> String {
    let tables: Vec<Table> = match f.table {
        Some(t) => vec![t],
        None => EVENT_TABLES.iter().map(|(t, _)| *t).collect(),
    };
    let has = |column: &&str| tables.iter().any(|t| t.column(column).is_some());
    let names: Vec<&str> = tables.iter().map(|t| t.name()).collect();
    let mut q = format!(
        "union withsource=SourceTable {}\n| where DeviceName == {}",
        names.join(", "),
        kql_string(hostname)
    );
    let end = match (f.to, f.before) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let (from, to) = within(bounds, f.from, end);
    q.push_str(&format!("\n| where Timestamp >= {}", kql_time(from)));
    if let Some(to) = to {
        q.push_str(&format!("\n| where Timestamp < {}", kql_time(to)));
    }
    if !f.action_type.is_empty() {
        q.push_str(&format!(
            "\n| where ActionType =~ {}",
            kql_string(&f.action_type)
        ));
    }
    if !f.text.is_empty() {
        let needle = kql_string(&f.text);
        let any: Vec<String> = TEXT_COLUMNS
            .iter()
            .filter(|c| has(c))
            .map(|c| format!("{c} contains {needle}"))
            .collect();
        q.push_str(&format!("\n| where {}", any.join(" or ")));
    }
    let columns: Vec<&str> = TIMELINE_COLUMNS
        .iter()
        .filter(|c| has(c))
        .copied()
        .collect();
    q.push_str(&format!(
        "\n| project {}, SourceTable\n| order by Timestamp desc\n| take {limit}",
        columns.join(", ")
    ));
    q
}

/// How many of a page of rows (their times, newest first, one more than `page` when there are
/// more) to show, and the `before` of the next page. Rows of one instant are not split between
/// pages, unless a single instant has more than a page of them.
fn page_end(times: &[DateTime<Utc>], page: usize) -> (usize, Option<DateTime<Utc>>) {
    if times.len() <= page {
        return (times.len(), None);
    }
    let last = times[page - 1];
    if times[page] != last {
        return (page, Some(last));
    }
    let keep = times[..page].iter().take_while(|t| **t != last).count();
    if keep > 0 {
        (keep, Some(last + TimeDelta::microseconds(1)))
    } else {
        (page, Some(last))
    }
}

/// `GET /devices/{id}/timeline`.
async fn timeline(ctx: Ctx, Path(id): Path<String>, Query(q): Query<TimelineQuery>) -> Response {
    let d = match device(&ctx, &id).await {
        Ok(d) => d,
        Err(page) => return page,
    };
    let filter = TimelineFilter::parse(&q);
    let answer = match &filter {
        Ok(f) => Some(
            hunt(
                &ctx,
                &timeline_query(&d.hostname, f, event_bounds(&d), TIMELINE_PAGE + 1),
            )
            .await,
        ),
        Err(_) => None,
    };
    let shown = filter.as_ref().ok().cloned().unwrap_or_default();
    let body = html! {
        form.filters method="get" action=(Tab::Timeline.href(&d.id)) {
            div.field {
                label for="tl-table" { "Events" }
                select #tl-table name="table" {
                    option value="" { "All events" }
                    @for (t, label) in EVENT_TABLES {
                        option value=(t.name()) selected[shown.table == Some(t)] { (label) }
                    }
                }
            }
            div.field {
                label for="tl-action" { "Action type" }
                input #tl-action type="text" name="action_type" value=(shown.action_type) placeholder="e.g. ProcessCreated" size="14";
            }
            div.field {
                label for="tl-q" { "Text" }
                input #tl-q type="search" name="q" value=(shown.text) placeholder="File, command line, IP, key…" size="18" data-search;
            }
            div.field {
                label for="tl-from" { "From (UTC)" }
                input #tl-from type="text" name="from" value=(input_time(shown.from)) placeholder="YYYY-MM-DD HH:MM:SS" size="17";
            }
            div.field {
                label for="tl-to" { "To (UTC)" }
                input #tl-to type="text" name="to" value=(input_time(shown.to)) placeholder="YYYY-MM-DD HH:MM:SS" size="17";
            }
            button type="submit" { "Show events" }
            @if !shown.is_empty() { a.button.quiet href=(Tab::Timeline.href(&d.id)) { "Clear filters" } }
        }
        @match (&filter, &answer) {
            (Err(problem), _) => div.notice.error role="alert" { (problem) },
            (_, Some(Err(f))) => (html::failure_box(f)),
            (Ok(f), Some(Ok(rows))) => (timeline_table(&d, f, rows)),
            _ => {},
        }
    };
    let mut response = device_page(&ctx, &d, Tab::Timeline, body);
    if filter.is_err() {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    response
}

/// One timeline row read by column name.
struct Event<'a> {
    rows: &'a Rows,
    row: &'a [Value],
}

impl Event<'_> {
    fn value(&self, name: &str) -> &Value {
        self.rows.index()(name)
            .and_then(|i| self.row.get(i))
            .unwrap_or(&Value::Null)
    }

    fn text(&self, name: &str) -> String {
        html::value_text(self.value(name)).trim().to_string()
    }

    fn time(&self) -> Option<DateTime<Utc>> {
        self.value("Timestamp")
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }
}

fn timeline_table(d: &Device, f: &TimelineFilter, rows: &Rows) -> Markup {
    let times: Vec<DateTime<Utc>> = rows
        .rows
        .iter()
        .map(|row| Event { rows, row }.time().unwrap_or_default())
        .collect();
    let (shown, next) = page_end(&times, TIMELINE_PAGE);
    let here = f.href(&d.id);
    html! {
        @if rows.rows.is_empty() {
            div.panel.empty {
                @if f.before.is_some() {
                    "No older events. " a href=(here) { "Back to the newest" }
                } @else if !f.is_empty() {
                    "No event of this device matches these filters. " a href=(Tab::Timeline.href(&d.id)) { "Clear the filters" }
                } @else {
                    "No events stored for this device. Its events appear here once its agent sends telemetry or its event logs are ingested."
                }
            }
        } @else {
            p.muted {
                (shown) " events, newest first"
                @if let Some(b) = f.before { ", before " (html::time(&b)) }
                "."
            }
            div.table-wrap {
                table #timeline .grid {
                    thead { tr {
                        th scope="col" { "Time" }
                        th scope="col" { "Kind" }
                        th scope="col" { "Action" }
                        th scope="col" { "What" }
                        th scope="col" { "By process" }
                    } }
                    tbody {
                        @for row in rows.rows.iter().take(shown) {
                            (timeline_row(d, f, &Event { rows, row }))
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if f.before.is_some() { a.button.quiet href=(here) { "← Newest" } " " }
                @if let Some(before) = next {
                    a.button href=(crate::portal::api::with_query_appended(&here, "before", &before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))) { "Older events →" }
                }
            }
        }
    }
}

/// Where the tree of process `pid` at `time` is.
fn tree_href(id: &str, pid: &str, time: &str) -> String {
    with_query(&Tab::Tree.href(id), &[("process_id", pid), ("time", time)])
}

fn timeline_row(d: &Device, f: &TimelineFilter, e: &Event<'_>) -> Markup {
    let table = e.text("SourceTable");
    let kind = EVENT_TABLES
        .iter()
        .find(|(t, _)| t.name() == table)
        .map_or(table.as_str(), |(_, label)| label);
    let action = e.text("ActionType");
    let time = e.text("Timestamp");
    let filter_action = TimelineFilter {
        action_type: action.clone(),
        ..f.clone()
    }
    .href(&d.id);
    let by = e.text("InitiatingProcessFileName");
    let by_pid = e.text("InitiatingProcessId");
    html! {
        tr {
            td.nowrap { (html::time_text(&time)) }
            td { span.kind { (kind) } }
            td.action { a href=(filter_action) title="Only events of this action type" { (action) } }
            td.wrap { (event_details(d, &table, e)) }
            td.wrap {
                @if !by.is_empty() || !by_pid.is_empty() {
                    @if by_pid.is_empty() {
                        (by)
                    } @else {
                        a href=(tree_href(&d.id, &by_pid, &time)) title="This process in the process tree" {
                            (if by.is_empty() { "unknown program" } else { by.as_str() })
                        }
                        span.muted { " pid " (by_pid) }
                    }
                    @let cmd = e.text("InitiatingProcessCommandLine");
                    @if !cmd.is_empty() && cmd != by && cmd != "?" { code.cmd.small.clamp title=(cmd) { (cmd) } }
                }
            }
        }
    }
}

/// What an event is about, by its table: the process started, the connection, the file, the
/// registry value, the logon; other events show their fields.
fn event_details(d: &Device, table: &str, e: &Event<'_>) -> Markup {
    let t = |name: &str| e.text(name);
    let pair = |a: String, b: String| match (a.is_empty(), b.is_empty()) {
        (false, false) => format!("{a}:{b}"),
        (false, true) => a,
        _ => String::new(),
    };
    let account = match (t("AccountDomain"), t("AccountName")) {
        (dom, name) if dom.is_empty() || name.is_empty() => name,
        (dom, name) => format!("{dom}\\{name}"),
    };
    html! {
        @match table {
            "DeviceProcessEvents" => {
                @let pid = t("ProcessId");
                strong { (or_dash(&t("FileName"))) }
                @if !pid.is_empty() {
                    " " a.small href=(tree_href(&d.id, &pid, &t("Timestamp"))) title="This process in the process tree" { "pid " (pid) }
                }
                @if !account.is_empty() { span.muted { " as " (account) } }
                @let cmd = t("ProcessCommandLine");
                @if !cmd.is_empty() { code.cmd.clamp title=(cmd) { (cmd) } }
            }
            "DeviceNetworkEvents" => {
                @let remote = pair(t("RemoteIP"), t("RemotePort"));
                @let local = pair(t("LocalIP"), t("LocalPort"));
                strong { (or_dash(&remote)) }
                @let url = t("RemoteUrl");
                @if !url.is_empty() { " " span.mono.wrap-anywhere { (url) } }
                @if !local.is_empty() { span.muted { " · local " (local) } }
                @let proto = t("Protocol");
                @if !proto.is_empty() { span.muted { " · " (proto) } }
            }
            "DeviceRegistryEvents" => {
                span.mono.wrap-anywhere { (or_dash(&t("RegistryKey"))) }
                @let name = t("RegistryValueName");
                @if !name.is_empty() {
                    div { span.muted { "value " } (name) @let data = t("RegistryValueData"); @if !data.is_empty() { " = " span.mono.wrap-anywhere { (data) } } }
                }
            }
            "DeviceLogonEvents" => {
                strong { (or_dash(&account)) }
                @let kind = t("LogonType");
                @if !kind.is_empty() { span.muted { " · " (kind) } }
                @let from = t("RemoteIP");
                @if !from.is_empty() { span.muted { " from " } (from) }
            }
            _ => {
                @let path = t("FolderPath");
                @let name = t("FileName");
                @if !path.is_empty() {
                    span.mono.wrap-anywhere { (path) }
                } @else if !name.is_empty() {
                    strong { (name) }
                }
                @let hash = t("SHA256");
                @if !hash.is_empty() { div.muted.small.mono.wrap-anywhere { "SHA256 " (hash) } }
                @let cmd = t("ProcessCommandLine");
                @if !cmd.is_empty() { code.cmd { (cmd) } }
                @let remote = pair(t("RemoteIP"), t("RemotePort"));
                @if !remote.is_empty() { div { span.muted { "remote " } (remote) } }
                @let fields = t("AdditionalFields");
                @if !fields.is_empty() && table == "DeviceEvents" {
                    @let summary = field_summary(&fields, 4);
                    @if !summary.is_empty() {
                        ul.plain.event-fields {
                            @for (k, v) in &summary { li { span.muted { (k) " " } (v) } }
                        }
                    }
                    details.fields {
                        summary { "All fields" }
                        pre.small { (excerpt(&fields, 4000)) }
                    }
                }
            }
        }
    }
}

/// The first `max` fields of an event's `AdditionalFields` (JSON) that say what happened:
/// without the Windows record's bookkeeping (provider, record id, channel, …) and identifiers
/// (SIDs, GUIDs, logon and handle ids), and with the acting user (`Subject…`) after the rest.
fn field_summary(json: &str, max: usize) -> Vec<(String, String)> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    const PREFIXES: [&str; 5] = [
        "Provider_",
        "Execution_",
        "TimeCreated_",
        "Security_",
        "Correlation_",
    ];
    const SUFFIXES: [&str; 4] = ["Sid", "Guid", "LogonId", "HandleId"];
    const KEYS: [&str; 11] = [
        "EventID",
        "Version",
        "Level",
        "Task",
        "Opcode",
        "Keywords",
        "EventRecordID",
        "Channel",
        "Computer",
        "Qualifiers",
        "ObjectServer",
    ];
    let skipped = |k: &str| {
        PREFIXES.iter().any(|p| k.starts_with(p))
            || SUFFIXES.iter().any(|s| k.ends_with(s))
            || KEYS.contains(&k)
    };
    let mut shown: Vec<(String, String)> = fields
        .iter()
        .filter(|(k, _)| !skipped(k))
        .map(|(k, v)| (k.clone(), html::value_text(v).trim().to_string()))
        .filter(|(_, v)| !v.is_empty() && v != "[]" && v != "{}" && v != "-")
        .map(|(k, v)| (k, excerpt(&v, 160)))
        .collect();
    shown.sort_by_key(|(k, _)| k.starts_with("Subject"));
    shown.truncate(max);
    shown
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

/// The start of `text`, at most `max` characters, marked when cut.
fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The process tree

#[derive(Deserialize, Default)]
pub struct TreeQuery {
    process_id: Option<String>,
    time: Option<String>,
}

/// The KQL of the device's process creations in `[from, to)`, `limit` of them closest to
/// `to` (`newest`) or to `from`.
fn tree_query(
    hostname: &str,
    (from, to): (DateTime<Utc>, Option<DateTime<Utc>>),
    newest: bool,
    limit: usize,
) -> String {
    let mut q = format!(
        "DeviceProcessEvents\n| where DeviceName == {} and ActionType == \"ProcessCreated\"",
        kql_string(hostname)
    );
    q.push_str(&format!("\n| where Timestamp >= {}", kql_time(from)));
    if let Some(to) = to {
        q.push_str(&format!("\n| where Timestamp < {}", kql_time(to)));
    }
    q.push_str(&format!(
        "\n| project {}\n| order by Timestamp {}\n| take {limit}",
        tree::COLUMNS.join(", "),
        if newest { "desc" } else { "asc" }
    ));
    q
}

/// `GET /devices/{id}/tree[?process_id=&time=]`: the tree around one process (its ancestors and
/// descendants), or the device's latest processes.
async fn process_tree(ctx: Ctx, Path(id): Path<String>, Query(q): Query<TreeQuery>) -> Response {
    let d = match device(&ctx, &id).await {
        Ok(d) => d,
        Err(page) => return page,
    };
    let pid_text = q.process_id.as_deref().unwrap_or("").trim().to_string();
    let time_text = q.time.as_deref().unwrap_or("").trim().to_string();
    let parsed = (|| {
        let pid = match pid_text.as_str() {
            "" => None,
            p => Some(
                p.parse::<i64>()
                    .map_err(|_| format!("Process id: \"{p}\" is not a number."))?,
            ),
        };
        Ok::<_, String>((pid, parse_time("Time", &time_text)?))
    })();
    let (pid, time) = match parsed {
        Ok(p) => p,
        Err(problem) => {
            let mut page = device_page(
                &ctx,
                &d,
                Tab::Tree,
                html! {
                    (tree_form(&d, &pid_text, &time_text))
                    div.notice.error role="alert" { (problem) }
                },
            );
            *page.status_mut() = StatusCode::BAD_REQUEST;
            return page;
        }
    };
    let (tree, focus, rows) = match load_tree(&ctx, &d, pid, time).await {
        Ok(loaded) => loaded,
        Err(f) => {
            return device_page(
                &ctx,
                &d,
                Tab::Tree,
                html! {
                    (tree_form(&d, &pid_text, &time_text))
                    (html::failure_box(&f))
                },
            );
        }
    };
    let body = html! {
        (tree_form(&d, &pid_text, &time_text))
        @if tree.nodes.is_empty() {
            div.panel.empty {
                "No process creation recorded for this device"
                @if time.is_some() { " around that time" }
                ". Processes appear once its agent sends telemetry or its Sysmon or Security logs are ingested."
            }
        } @else {
            @match (pid, focus) {
                (Some(p), None) => div.notice.warn role="status" {
                    "Process " (p) " was not found"
                    @if let Some(t) = time { " around " (html::time(&t)) }
                    ". The latest processes are shown instead."
                },
                _ => {},
            }
            p.muted {
                (thousands(rows)) " process creations read"
                @if let (Some(_), Some(t)) = (pid, time) { " within a day of " (html::time(&t)) }
                @if tree.dropped > 0 { "; " (thousands(tree.dropped)) " left out to keep the tree small" }
                ". Inferred processes are known from their children's events only."
            }
            div.panel.tree-panel #process-tree {
                (tree_markup(&d, &tree, focus))
            }
        }
    };
    device_page(&ctx, &d, Tab::Tree, body)
}

/// The process tree of device `d` around process `pid` running at `time` (its ancestors and
/// descendants within a day), or its latest processes: the tree, the focused node if found,
/// and how many process creations were read.
pub(super) async fn load_tree(
    ctx: &Ctx,
    d: &Device,
    pid: Option<i64>,
    time: Option<DateTime<Utc>>,
) -> Result<(Tree, Option<usize>, usize), Failure> {
    let bounds = event_bounds(d);
    let answers: Vec<Answer<Rows>> = match (pid, time) {
        (Some(_), Some(t)) => {
            // The focus's time is rounded up to the second, as some logs give it.
            let at = t + TimeDelta::seconds(1);
            let before = tree_query(
                &d.hostname,
                within(bounds, Some(t - TREE_WINDOW), Some(at)),
                true,
                TREE_ROWS_BEFORE,
            );
            let after = tree_query(
                &d.hostname,
                within(bounds, Some(at), Some(t + TREE_WINDOW)),
                false,
                TREE_ROWS_AFTER,
            );
            let (before, after) = tokio::join!(hunt(ctx, &before), hunt(ctx, &after));
            vec![before, after]
        }
        (_, t) => vec![
            hunt(
                ctx,
                &tree_query(
                    &d.hostname,
                    within(bounds, None, t.map(|t| t + TimeDelta::seconds(1))),
                    true,
                    TREE_ROWS_LATEST,
                ),
            )
            .await,
        ],
    };
    let mut events = Vec::new();
    for answer in answers {
        match answer {
            Ok(rows) => events.extend(
                rows.rows
                    .iter()
                    .filter_map(|row| tree::Event::from_row(&rows.columns, row)),
            ),
            Err(f) => return Err(f),
        }
    }
    let rows = events.len();
    let tree = Tree::build(events, TREE_MAX_NODES);
    let focus = pid.and_then(|p| tree.find(p, time));
    Ok((tree, focus, rows))
}

fn tree_form(d: &Device, pid: &str, time: &str) -> Markup {
    html! {
        form.filters method="get" action=(Tab::Tree.href(&d.id)) {
            div.field {
                label for="tree-pid" { "Process id" }
                input #tree-pid type="text" inputmode="numeric" name="process_id" value=(pid) size="10";
            }
            div.field {
                label for="tree-time" { "Running at (UTC)" }
                input #tree-time type="text" name="time" value=(time) placeholder="YYYY-MM-DD HH:MM:SS" size="26";
            }
            button type="submit" { "Show tree" }
            @if !pid.is_empty() || !time.is_empty() {
                a.button.quiet href=(Tab::Tree.href(&d.id)) { "Latest processes" }
            }
        }
    }
}

/// The tree as nested lists: around `focus` its ancestors and descendants only, else every
/// process (roots newest first).
pub(super) fn tree_markup(d: &Device, tree: &Tree, focus: Option<usize>) -> Markup {
    let mut shown = vec![focus.is_none(); tree.nodes.len()];
    let mut cut = false;
    let roots: Vec<usize> = match focus {
        Some(f) => {
            let ancestors = tree.ancestors(f);
            let (below, more) = tree.subtree(f, TREE_MAX_DESCENDANTS);
            cut = more;
            for n in ancestors.iter().chain(&below) {
                shown[*n] = true;
            }
            vec![ancestors.first().copied().unwrap_or(f)]
        }
        None => tree.roots.iter().rev().copied().collect(),
    };
    let view = TreeView {
        d,
        tree,
        shown: &shown,
        focus,
    };
    html! {
        ul.tree {
            @for r in roots { (view.node(r, 0)) }
        }
        @if cut {
            p.muted { "More descendants than can be shown: focus on one of them to see its own." }
        }
    }
}

struct TreeView<'a> {
    d: &'a Device,
    tree: &'a Tree,
    shown: &'a [bool],
    focus: Option<usize>,
}

impl TreeView<'_> {
    fn node(&self, n: usize, depth: usize) -> Markup {
        let node = &self.tree.nodes[n];
        let image = &node.image;
        let started = image
            .started
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_default();
        let children: Vec<usize> = node
            .children
            .iter()
            .copied()
            .filter(|&c| self.shown[c])
            .collect();
        let is_focus = self.focus == Some(n);
        html! {
            li class=[is_focus.then_some("focus")] aria-current=[is_focus.then_some("true")] {
                span.proc {
                    strong { (if image.file_name.is_empty() { "unknown program" } else { image.file_name.as_str() }) }
                    span.muted { " pid " (image.pid) }
                    @if node.exec { " " span.tag title="The same process, running a new program" { "exec" } }
                    @if node.inferred { " " span.tag title="Known from its children's events only" { "inferred" } }
                    @if let Some(t) = &image.started { " " span.muted.small { (html::time(t)) } }
                    @if !image.account.is_empty() { " " span.muted.small { (image.account) } }
                    @if is_focus {
                        span.visually-hidden { " (the process asked for)" }
                    } @else {
                        " " a.small href=(tree_href(&self.d.id, &image.pid.to_string(), &started)) title="Show only this process's ancestors and descendants" { "focus" }
                    }
                    @if !image.command_line.is_empty() { code.cmd { (image.command_line) } }
                    @else if !image.folder_path.is_empty() { code.cmd { (image.folder_path) } }
                }
                @if !children.is_empty() {
                    @if depth + 1 >= TREE_MAX_DEPTH {
                        ul { li.muted { (children.len()) " more levels below: focus on this process to see them." } }
                    } @else {
                        ul { @for c in children { (self.node(c, depth + 1)) } }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Alerts and incidents of the device

#[derive(Deserialize, Default)]
pub struct PageQuery {
    cursor: Option<String>,
}

/// `GET /devices/{id}/alerts`.
async fn alerts(ctx: Ctx, Path(id): Path<String>, Query(q): Query<PageQuery>) -> Response {
    let path = with_query(
        "/api/v1/alerts",
        &[
            ("device_id", &id),
            ("limit", ITEMS_PER_PAGE),
            ("cursor", q.cursor.as_deref().unwrap_or("")),
        ],
    );
    let (d, page) = tokio::join!(device(&ctx, &id), ctx.api.get::<Page<Alert>>(&path));
    let d = match d {
        Ok(d) => d,
        Err(page) => return page,
    };
    let body = html! {
        @match &page {
            Err(f) => (html::failure_box(f)),
            Ok(p) if p.items.is_empty() => div.panel.empty { "No alert on this device." },
            Ok(p) => {
                div.table-wrap {
                    table #device-alerts .grid {
                        thead { tr {
                            th scope="col" { "Last event" }
                            th scope="col" { "Severity" }
                            th scope="col" { "Alert" }
                            th scope="col" { "Status" }
                            th scope="col" { "Incident" }
                            th.num scope="col" { "Events" }
                        } }
                        tbody {
                            @for a in &p.items {
                                tr {
                                    td.nowrap { (html::time(&a.last_event_time)) }
                                    td { (html::severity(a.severity.as_str())) }
                                    td.wrap { a href={"/alerts/" (segment(&a.id))} { (a.title) } }
                                    td { (html::status(a.status.as_str())) }
                                    td {
                                        @match &a.incident_id {
                                            Some(i) => a href={"/incidents/" (segment(i))} { "Incident" },
                                            None => span.muted { "none" },
                                        }
                                    }
                                    td.num { (thousands(a.event_count)) }
                                }
                            }
                        }
                    }
                }
                (html::pager(&Tab::Alerts.href(&d.id), p.next.as_deref()))
            }
        }
    };
    device_page(&ctx, &d, Tab::Alerts, body)
}

/// `GET /devices/{id}/incidents`.
async fn incidents(ctx: Ctx, Path(id): Path<String>, Query(q): Query<PageQuery>) -> Response {
    let path = with_query(
        &format!("/api/v1/devices/{}/incidents", segment(&id)),
        &[
            ("limit", ITEMS_PER_PAGE),
            ("cursor", q.cursor.as_deref().unwrap_or("")),
        ],
    );
    let (d, page) = tokio::join!(device(&ctx, &id), ctx.api.get::<Page<Incident>>(&path));
    let d = match d {
        Ok(d) => d,
        Err(page) => return page,
    };
    let body = html! {
        @match &page {
            Err(f) => (html::failure_box(f)),
            Ok(p) if p.items.is_empty() => div.panel.empty { "No incident involves this device." },
            Ok(p) => {
                div.table-wrap {
                    table #device-incidents .grid {
                        thead { tr {
                            th scope="col" { "Last activity" }
                            th scope="col" { "Severity" }
                            th scope="col" { "Incident" }
                            th scope="col" { "Status" }
                            th scope="col" { "Assigned to" }
                            th.num scope="col" { "Alerts" }
                        } }
                        tbody {
                            @for i in &p.items {
                                tr {
                                    td.nowrap { (html::time(&i.last_activity)) }
                                    td { (html::severity(i.severity.as_str())) }
                                    td.wrap { a href={"/incidents/" (segment(&i.id))} { (i.title) } }
                                    td { (html::status(i.status.as_str())) }
                                    td { @match &i.assigned_to { Some(u) => (u), None => span.muted { "nobody" } } }
                                    td.num { (thousands(i.alert_count)) }
                                }
                            }
                        }
                    }
                }
                (html::pager(&Tab::Incidents.href(&d.id), p.next.as_deref()))
            }
        }
    };
    device_page(&ctx, &d, Tab::Incidents, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn kql_strings_cannot_be_broken_out_of() {
        assert_eq!(kql_string("pc01"), "\"pc01\"");
        assert_eq!(kql_string(r#"a" or 1==1 //"#), r#""a\" or 1==1 //""#);
        assert_eq!(kql_string("c:\\windows\\"), r#""c:\\windows\\""#);
        assert_eq!(kql_string("a\nb\u{0}\u{200B}"), r#""a\nb\u0000\u200b""#);
        // The engine reads the literal back as the text.
        for text in ["x\"y", "\\\"", "é ü 漢", "tab\tcr\r", "\u{7f}\u{85}"] {
            let q = format!("print s = {}", kql_string(text));
            let parsed = rampart_kql::syntax::parse(&q).expect("the query parses");
            let tree = format!("{parsed:?}");
            assert!(
                tree.contains(&format!("String({text:?})")),
                "{text:?} → {q}: {tree}"
            );
        }
    }

    #[test]
    fn timeline_queries_filter_by_device_and_filters() {
        let f = TimelineFilter {
            table: Some(Table::DeviceNetworkEvents),
            action_type: "ConnectionSuccess".into(),
            text: "10.0.0.5".into(),
            from: Some(t("2024-01-01T00:00:00Z")),
            before: Some(t("2024-01-02T00:00:00.5Z")),
            ..TimelineFilter::default()
        };
        // Bounds wider than the filters leave them as they are.
        let wide = (t("2020-01-01T00:00:00Z"), None);
        let q = timeline_query("pc\"01", &f, wide, 201);
        assert!(q.starts_with("union withsource=SourceTable DeviceNetworkEvents\n| where DeviceName == \"pc\\\"01\""), "{q}");
        assert!(
            q.contains("| where Timestamp >= datetime(2024-01-01T00:00:00.000000Z)"),
            "{q}"
        );
        assert!(
            q.contains("| where Timestamp < datetime(2024-01-02T00:00:00.500000Z)"),
            "{q}"
        );
        assert!(
            q.contains("| where ActionType =~ \"ConnectionSuccess\""),
            "{q}"
        );
        assert!(q.contains("RemoteIP contains \"10.0.0.5\""), "{q}");
        // Columns of other tables are neither searched nor projected.
        assert!(!q.contains("RegistryKey"), "{q}");
        assert!(q.ends_with("| order by Timestamp desc\n| take 201"), "{q}");
        let all = timeline_query("pc01", &TimelineFilter::default(), wide, 10);
        for (table, _) in EVENT_TABLES {
            assert!(all.contains(table.name()), "{all}");
        }
        assert!(
            !all.contains("contains") && !all.contains("Timestamp <"),
            "{all}"
        );
        assert!(all.contains("| where Timestamp >= datetime(2020-01-01T00:00:00.000000Z)"));
        // Narrower bounds narrow the filters.
        let narrow = (t("2024-01-01T12:00:00Z"), Some(t("2024-01-01T18:00:00Z")));
        let q2 = timeline_query("pc01", &f, narrow, 10);
        assert!(
            q2.contains("Timestamp >= datetime(2024-01-01T12:00:00.000000Z)"),
            "{q2}"
        );
        assert!(
            q2.contains("Timestamp < datetime(2024-01-01T18:00:00.000000Z)"),
            "{q2}"
        );
        assert!(rampart_kql::syntax::parse(&all).is_ok(), "{all}");
        assert!(rampart_kql::syntax::parse(&q).is_ok(), "{q}");
    }

    #[test]
    fn queries_keep_to_the_days_a_device_can_have_events() {
        let mut d: Device = serde_json::from_value(json!({
            "id": "dev_1", "tenant_id": "default", "hostname": "pc01", "platform": "Windows",
            "os_version": "", "agent_version": null, "group_id": null, "tags": [],
            "first_seen": "2024-01-10T00:00:00Z", "last_seen": "2024-01-20T00:00:00Z",
            "health_status": "no_sensor_data", "health": {}, "cert_fingerprint": null,
            "events_dropped": 0, "drops_reported": 0, "isolation": "not_isolated", "risk": "none"
        }))
        .unwrap();
        let bounds = event_bounds(&d);
        assert_eq!(
            bounds,
            (t("2024-01-09T00:00:00Z"), Some(t("2024-01-21T00:00:00Z")))
        );
        // An agent may send events newer than its last heartbeat.
        d.agent_version = Some("1.0".into());
        assert_eq!(event_bounds(&d).1, None);
        assert_eq!(
            within(
                bounds,
                Some(t("2024-01-15T00:00:00Z")),
                Some(t("2025-01-01T00:00:00Z"))
            ),
            (t("2024-01-15T00:00:00Z"), Some(t("2024-01-21T00:00:00Z")))
        );
        assert_eq!(within(bounds, None, None), bounds);
        let q = tree_query("pc01", within(bounds, None, None), true, 300);
        assert!(q.contains("ActionType == \"ProcessCreated\""), "{q}");
        assert!(
            q.contains("Timestamp < datetime(2024-01-21T00:00:00.000000Z)"),
            "{q}"
        );
        assert!(q.ends_with("| order by Timestamp desc\n| take 300"), "{q}");
        assert!(rampart_kql::syntax::parse(&q).is_ok(), "{q}");
    }

    #[test]
    fn timeline_filters_are_checked() {
        let q = TimelineQuery {
            table: Some("DeviceFileEvents".into()),
            from: Some("2024-03-01T10:20".into()),
            to: Some("2024-03-02".into()),
            ..TimelineQuery::default()
        };
        let f = TimelineFilter::parse(&q).unwrap();
        assert_eq!(f.table, Some(Table::DeviceFileEvents));
        assert_eq!(f.from, Some(t("2024-03-01T10:20:00Z")));
        assert_eq!(f.to, Some(t("2024-03-02T00:00:00Z")));
        assert_eq!(
            f.href("dev_1"),
            "/devices/dev_1/timeline?table=DeviceFileEvents&from=2024-03-01+10%3A20%3A00&to=2024-03-02+00%3A00%3A00"
        );
        // What the link carries reads back as the same filter.
        let back = TimelineQuery {
            table: Some("DeviceFileEvents".into()),
            from: Some(input_time(f.from)),
            to: Some(input_time(f.to)),
            ..TimelineQuery::default()
        };
        assert_eq!(TimelineFilter::parse(&back), Ok(f));
        let bad_table = TimelineQuery {
            table: Some("IdentityInfo".into()),
            ..TimelineQuery::default()
        };
        assert!(TimelineFilter::parse(&bad_table).is_err());
        let bad_time = TimelineQuery {
            from: Some("yesterday".into()),
            ..TimelineQuery::default()
        };
        assert!(
            TimelineFilter::parse(&bad_time)
                .unwrap_err()
                .contains("yesterday")
        );
    }

    #[test]
    fn pages_end_between_instants() {
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        // Fewer rows than a page: all of them, no next page.
        assert_eq!(page_end(&[at(3), at(2)], 3), (2, None));
        // A full page and more: the next one starts before the last shown.
        assert_eq!(page_end(&[at(5), at(4), at(3), at(2)], 3), (3, Some(at(3))));
        // The page would end inside an instant: that instant goes to the next page whole.
        assert_eq!(
            page_end(&[at(5), at(4), at(4), at(4)], 3),
            (1, Some(at(4) + TimeDelta::microseconds(1)))
        );
        // One instant fills the page: shown, the rest of it skipped.
        assert_eq!(page_end(&[at(4), at(4), at(4), at(4)], 3), (3, Some(at(4))));
    }

    #[test]
    fn times_are_written_as_typed() {
        assert_eq!(
            input_time(Some(t("2024-01-02T03:04:05Z"))),
            "2024-01-02 03:04:05"
        );
    }

    #[test]
    fn action_forms_become_action_requests() {
        let form = |kind: &str| ActionForm {
            kind: Some(kind.into()),
            ..ActionForm::default()
        };
        assert_eq!(
            action_request(&form("isolate")),
            Ok((ActionKind::Isolate, json!({})))
        );
        let kill = ActionForm {
            pid: Some(" 4242 ".into()),
            tree: Some("1".into()),
            ..form("kill_process")
        };
        assert_eq!(
            action_request(&kill),
            Ok((ActionKind::KillProcess, json!({"pid": 4242, "tree": true})))
        );
        for pid in ["", "1", "-5", "abc", "99999999999"] {
            let bad = ActionForm {
                pid: Some(pid.into()),
                ..form("kill_process")
            };
            assert!(action_request(&bad).is_err(), "pid {pid:?}");
        }
        let file = ActionForm {
            path: Some("relative/x".into()),
            ..form("quarantine_file")
        };
        assert!(action_request(&file).is_err());
        let run = ActionForm {
            command: Some("ls".into()),
            args: Some("-la \"/tmp/a b\"".into()),
            comment: Some(" why ".into()),
            ..form("run_command")
        };
        assert_eq!(
            action_request(&run),
            Ok((
                ActionKind::RunCommand,
                json!({"command": "ls", "args": ["-la", "/tmp/a b"], "comment": "why"})
            ))
        );
        let two = ActionForm {
            command: Some("ls -la".into()),
            ..form("run_command")
        };
        assert!(action_request(&two).is_err());
        assert!(action_request(&form("reboot")).is_err());
        assert!(action_request(&form("restore_file")).is_err());
        let restore = ActionForm {
            quarantine_id: Some("q1".into()),
            path: Some("/tmp/x".into()),
            ..form("restore_file")
        };
        assert_eq!(
            action_request(&restore),
            Ok((
                ActionKind::RestoreFile,
                json!({"id": "q1", "path": "/tmp/x"})
            ))
        );
    }

    #[test]
    fn arguments_split_like_a_shell_line() {
        assert_eq!(split_args(""), Ok(vec![]));
        assert_eq!(
            split_args("  -n  50 /var/log/syslog "),
            Ok(vec!["-n".into(), "50".into(), "/var/log/syslog".into()])
        );
        assert_eq!(
            split_args("'a b' \"\" c'd e'"),
            Ok(vec!["a b".into(), "".into(), "cd e".into()])
        );
        assert!(split_args("\"open").is_err());
    }

    #[test]
    fn event_fields_are_summed_up_without_bookkeeping() {
        let windows = r#"{"Provider_Name":"Microsoft-Windows-Security-Auditing","EventID":4663,"Channel":"Security","SubjectUserSid":"S-1-5-18","SubjectUserName":"IEUser","ObjectName":"\\REGISTRY\\MACHINE","AccessList":"","ProcessName":"C:\\Windows\\explorer.exe","HandleId":"0x3708"}"#;
        assert_eq!(
            field_summary(windows, 3),
            [
                ("ObjectName".to_string(), "\\REGISTRY\\MACHINE".to_string()),
                ("ProcessName".into(), "C:\\Windows\\explorer.exe".into()),
                ("SubjectUserName".into(), "IEUser".into()),
            ]
        );
        let dns = r#"{"DnsQueryString":"example.org","DnsAnswers":[],"Truncated":false}"#;
        assert_eq!(field_summary(dns, 4).len(), 2);
        assert!(field_summary("not json", 4).is_empty());
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("abc", 3), "abc");
    }

    #[test]
    fn tags_are_split_at_commas_and_spaces() {
        assert_eq!(parse_tags(" web, prod  prod,,db "), ["web", "prod", "db"]);
        assert!(parse_tags(" , ").is_empty());
    }

    #[test]
    fn health_reads_in_words() {
        assert_eq!(health_label("sensor_mode"), "Sensor mode");
        assert_eq!(health_label("queue_depth"), "Queue depth");
        assert!(is_warning("kernel_lost", &json!(3)));
        assert!(!is_warning("kernel_lost", &json!(0)));
        assert!(is_warning("tamper", &json!(["replaced"])));
        assert!(!is_warning("tamper", &json!([])));
        assert!(!is_warning("events", &json!(5)));
        let html =
            health_details(&json!({"sensor_mode": "ebpf", "queue": {"bytes": 2048}, "tamper": []}))
                .into_string();
        assert!(
            html.contains("Sensor mode") && html.contains("2.0 KiB") && html.contains("none"),
            "{html}"
        );
    }
}
