//! The alerts queue (`/alerts`) and one alert (`/alerts/{id}`): its rule and source, ATT&CK
//! techniques, the event that matched with the matched fields highlighted, its evidence, and
//! triage and comments.

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use rampart_alerts::{Entity, MatchedField};
use rampart_state::{Alert, AlertSource, AlertStatus, Comment, Page, Severity};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::incidents::{
    Messages, NewComment, Triage, add_comment, assignee, classification_label, comments_panel,
    page_size, page_size_field, pages, refused, source_label, text, time_filters, time_input,
    triage_fields,
};
use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{Answer, segment, with_query};
use crate::portal::graph::{entity_details, kind_names};
use crate::portal::html::{self, Ctx, Form, Query, Section};
use crate::portal::text::parse_time;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/alerts", get(queue))
        .route("/alerts/{id}", get(show).post(update))
        .route("/alerts/{id}/comments", post(comment))
}

/// Devices offered in the device filter (the API lists them by name).
const DEVICE_CHOICES: &str = "500";
/// Comments shown (the newest).
const COMMENTS: &str = "100";

/// The part of a device the filter needs.
#[derive(Deserialize)]
struct DeviceName {
    id: String,
    hostname: String,
}

/// The part of a rule the alert page shows.
#[derive(Deserialize)]
struct RuleSource {
    id: String,
    title: String,
    kind: String,
    source: String,
}

/// The stored event of an alert (`GET /api/v1/alerts/{id}/event`).
#[derive(Deserialize)]
struct Event {
    table: String,
    row: Map<String, Value>,
}

fn status_label(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::New => "New",
        AlertStatus::InProgress => "In progress",
        AlertStatus::Resolved => "Resolved",
    }
}

// ---------------------------------------------------------------------------------------------
// The queue.

#[derive(Deserialize, Default)]
struct Filters {
    status: Option<String>,
    severity: Option<String>,
    source: Option<String>,
    device_id: Option<String>,
    rule_id: Option<String>,
    incident_id: Option<String>,
    assigned_to: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    #[serde(flatten)]
    messages: Messages,
}

impl Filters {
    fn limit(&self) -> &str {
        page_size(&self.limit)
    }

    fn narrowing(&self) -> [(&'static str, &str); 9] {
        [
            ("status", text(&self.status)),
            ("severity", text(&self.severity)),
            ("source", text(&self.source)),
            ("device_id", text(&self.device_id)),
            ("rule_id", text(&self.rule_id)),
            ("incident_id", text(&self.incident_id)),
            ("assigned_to", text(&self.assigned_to)),
            ("from", text(&self.from)),
            ("to", text(&self.to)),
        ]
    }

    fn any(&self) -> bool {
        self.narrowing().iter().any(|(_, v)| !v.is_empty())
    }

    /// This view's address without its page cursor; `without` drops one filter.
    fn link_without(&self, without: &str) -> String {
        let mut pairs: Vec<(&str, &str)> = self
            .narrowing()
            .into_iter()
            .filter(|(k, _)| *k != without)
            .collect();
        if !text(&self.limit).is_empty() {
            pairs.push(("limit", self.limit()));
        }
        with_query("/alerts", &pairs)
    }

    fn link(&self) -> String {
        self.link_without("")
    }

    fn api(&self) -> Result<String, String> {
        let times = time_filters(&[("From", self.from.as_deref()), ("To", self.to.as_deref())])?;
        let mut pairs: Vec<(&str, &str)> = self
            .narrowing()
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "from" | "to"))
            .collect();
        pairs.extend([
            ("from", times[0].as_str()),
            ("to", times[1].as_str()),
            ("limit", self.limit()),
            ("cursor", text(&self.cursor)),
        ]);
        Ok(with_query("/api/v1/alerts", &pairs))
    }
}

async fn queue(ctx: Ctx, Query(filters): Query<Filters>) -> Response {
    let devices_path = with_query("/api/v1/devices", &[("limit", DEVICE_CHOICES)]);
    let (answer, devices) = match filters.api() {
        Ok(path) => {
            let (list, devices) = tokio::join!(
                ctx.api.get::<Page<Alert>>(&path),
                ctx.api.get::<Page<DeviceName>>(&devices_path),
            );
            (Ok(list), devices.map(|d| d.items).unwrap_or_default())
        }
        Err(e) => (Err(e), Vec::new()),
    };
    let body = html! {
        (filters.messages.show())
        (filter_form(&ctx, &filters, &devices, answer.as_ref().ok().and_then(|a| a.as_ref().ok())))
        @match &answer {
            Err(problem) => div.notice.error role="alert" { (problem) },
            Ok(Err(f)) => (html::failure_box(f)),
            Ok(Ok(page)) => {
                (queue_table(&filters, page))
                (pages(&filters.link(), &filters.cursor, page.next.as_deref()))
            }
        }
    };
    let mut response = ctx.page(Section::Alerts, "Alerts", body);
    match &answer {
        Ok(Err(f)) => *response.status_mut() = f.status,
        Err(_) => *response.status_mut() = axum::http::StatusCode::BAD_REQUEST,
        Ok(Ok(_)) => {}
    }
    response
}

fn filter_form(
    ctx: &Ctx,
    filters: &Filters,
    devices: &[DeviceName],
    page: Option<&Page<Alert>>,
) -> Markup {
    let me = ctx.viewer.principal.username.as_str();
    let device = text(&filters.device_id);
    let rule = text(&filters.rule_id);
    let incident = text(&filters.incident_id);
    // The rule's title, from an alert it raised (the list is filtered by it).
    let rule_title = page
        .and_then(|p| {
            p.items
                .iter()
                .find_map(|a| a.rule.as_ref().map(|r| r.title.clone()))
        })
        .unwrap_or_else(|| rule.to_string());
    html! {
        form.filters #alert-filters method="get" action="/alerts" {
            (html::choice("f-status", "Status", "status", "Any", text(&filters.status), AlertStatus::ALL.iter().map(|s| (s.as_str(), status_label(*s)))))
            (html::choice("f-severity", "Severity", "severity", "Any", text(&filters.severity), Severity::ALL.iter().rev().map(|s| (s.as_str(), s.as_str()))))
            (html::choice("f-source", "Detection source", "source", "Any", text(&filters.source), AlertSource::ALL.iter().map(|s| (s.as_str(), source_label(*s)))))
            div.field {
                label for="f-device" { "Device" }
                select #f-device name="device_id" {
                    option value="" { "Any device" }
                    @if !device.is_empty() && !devices.iter().any(|d| d.id == device) {
                        option value=(device) selected { (device) }
                    }
                    @for d in devices {
                        option value=(d.id) selected[d.id == device] { (d.hostname) }
                    }
                }
            }
            div.field {
                label for="f-assigned" { "Assigned to" }
                input #f-assigned type="text" name="assigned_to" value=(text(&filters.assigned_to))
                    placeholder="user name" size="12" list="f-assigned-me";
                datalist #f-assigned-me { option value=(me) {} }
            }
            div.field {
                label for="f-from" { "Raised from (UTC)" }
                input #f-from type="text" name="from" placeholder="YYYY-MM-DD HH:MM" size="16" value=(time_input(filters.from.as_deref()));
            }
            div.field {
                label for="f-to" { "Raised before (UTC)" }
                input #f-to type="text" name="to" placeholder="YYYY-MM-DD HH:MM" size="16" value=(time_input(filters.to.as_deref()));
            }
            (page_size_field(&filters.limit))
            @if !rule.is_empty() { input type="hidden" name="rule_id" value=(rule); }
            @if !incident.is_empty() { input type="hidden" name="incident_id" value=(incident); }
            div.filter-actions {
                button type="submit" { "Apply" }
                @if filters.any() { a.button.quiet href="/alerts" { "Clear" } }
            }
        }
        @if !rule.is_empty() || !incident.is_empty() {
            p.chips {
                @if !rule.is_empty() {
                    span.chip { "Rule: " strong { (rule_title) } " "
                        a href=(filters.link_without("rule_id")) aria-label="Stop filtering by this rule" { "×" } }
                }
                @if !incident.is_empty() {
                    span.chip { "Incident: " span.mono { (incident) } " "
                        a href=(filters.link_without("incident_id")) aria-label="Stop filtering by this incident" { "×" } }
                }
            }
        }
    }
}

fn queue_table(filters: &Filters, page: &Page<Alert>) -> Markup {
    html! {
        div.table-wrap {
            table.grid.queue #alerts {
                thead { tr {
                    th { "Severity" } th { "Alert" } th { "Status" } th { "Device" }
                    th { "Assigned to" } th.num { "Events" } th { "First event" }
                } }
                tbody {
                    @for a in &page.items {
                        tr {
                            td { (html::severity(a.severity.as_str())) }
                            td.wrap.title-cell {
                                a.alert-link href={"/alerts/" (segment(&a.id))} { (a.title) }
                                div.sub {
                                    span.source { (source_label(a.source())) }
                                    @if let Some(rule_id) = a.rule.as_ref().and_then(|r| r.id.as_deref()) {
                                        a.small href=(with_query("/alerts", &[("rule_id", rule_id)])) { "same rule" }
                                    }
                                    @if let Some(i) = &a.incident_id {
                                        a.small href={"/incidents/" (segment(i))} title=(i) { "incident" }
                                    }
                                    @if !a.tactics.is_empty() { span.muted { (a.tactics.join(", ")) } }
                                }
                            }
                            td { (html::status(a.status.as_str())) }
                            td {
                                @match (&a.device_id, &a.device_name) {
                                    (Some(id), Some(name)) => a href={"/devices/" (segment(id))} { (name) },
                                    (None, Some(name)) => (name),
                                    _ => span.muted { "—" },
                                }
                            }
                            td {
                                @match &a.assigned_to {
                                    Some(u) => (u),
                                    None => span.muted { "Unassigned" },
                                }
                            }
                            td.num { (a.event_count) }
                            td.when { (html::time(&a.first_event_time)) }
                        }
                    }
                }
            }
            @if page.items.is_empty() {
                p.empty {
                    @if filters.any() {
                        "No alert matches these filters. " a href="/alerts" { "Clear the filters" }
                    } @else if text(&filters.cursor).is_empty() {
                        "No alerts yet. Alerts are raised as events arrive: ingest event logs ("
                        code { "rampart ingest" } ") or enroll agents, and check that rules are enabled on the "
                        a href="/rules" { "Rules" } " page."
                    } @else {
                        "No more alerts. " a href=(filters.link()) { "Back to the first page" }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One alert.

fn alert_path(id: &str) -> String {
    format!("/alerts/{}", segment(id))
}

async fn show(ctx: Ctx, Path(id): Path<String>, Query(messages): Query<Messages>) -> Response {
    let api_path = format!("/api/v1/alerts/{}", segment(&id));
    let alert = match ctx.api.get::<Alert>(&api_path).await {
        Ok(a) => a,
        Err(f) => return ctx.failure(Section::Alerts, &f),
    };
    let rule_id = alert.rule.as_ref().and_then(|r| r.id.clone());
    let comments_path = with_query(&format!("{api_path}/comments"), &[("limit", COMMENTS)]);
    let event_path = format!("{api_path}/event");
    let (event, comments, rule) = tokio::join!(
        ctx.api.get::<Event>(&event_path),
        ctx.api.get::<Page<Comment>>(&comments_path),
        async {
            match &rule_id {
                Some(r) => Some(
                    ctx.api
                        .get::<RuleSource>(&format!("/api/v1/rules/{}", segment(r)))
                        .await,
                ),
                None => None,
            }
        },
    );
    let tree = match process_of(&alert, event.as_ref().ok()) {
        Some(process) => tree_panel(&ctx, &process).await,
        None => html! {},
    };
    let body = alert_body(
        &ctx,
        &alert,
        &event,
        &comments,
        rule.as_ref(),
        &messages,
        tree,
    );
    ctx.page(Section::Alerts, &alert.title.clone(), body)
}

/// Where the triggering event is: `(table, timestamp, channel, event id, source)` as stored.
fn trigger(alert: &Alert) -> Option<&Map<String, Value>> {
    alert.trigger_event.as_ref()?.get("event")?.as_object()
}

fn alert_body(
    ctx: &Ctx,
    alert: &Alert,
    event: &Answer<Event>,
    comments: &Answer<Page<Comment>>,
    rule: Option<&Answer<RuleSource>>,
    messages: &Messages,
    process_tree: Markup,
) -> Markup {
    let matched: Vec<MatchedField> =
        serde_json::from_value(alert.matched_fields.clone()).unwrap_or_default();
    let tree = process_of(alert, event.as_ref().ok()).map(|p| process_tree_link(&p));
    html! {
        (messages.show())
        div.incident-head {
            (html::severity(alert.severity.as_str()))
            (html::status(alert.status.as_str()))
            span.pill { (source_label(alert.source())) }
            @if let Some(c) = alert.classification { span.pill { (classification_label(c)) } }
            span.mono.muted { (alert.id) }
            span.head-actions {
                @if let Some(i) = &alert.incident_id {
                    a.button.small href={"/incidents/" (segment(i))} { "Open incident" }
                }
                @if let Some(href) = &tree {
                    a.button.small.quiet href=(href) { "Process tree" }
                }
            }
        }
        div.cols {
            section.panel aria-labelledby="details-title" {
                h2 #details-title { "Details" }
                @if !alert.description.is_empty() { p.description { (alert.description) } }
                (details(ctx, alert))
            }
            @if ctx.can(Access::Analyst) {
                section.panel aria-labelledby="triage-title" {
                    h2 #triage-title { "Triage" }
                    form.stack method="post" action=(alert_path(&alert.id)) {
                        (ctx.csrf())
                        div.field {
                            label for="t-status" { "Status" }
                            select #t-status name="status" {
                                @for s in AlertStatus::ALL {
                                    option value=(s.as_str()) selected[alert.status == *s] { (status_label(*s)) }
                                }
                            }
                        }
                        (triage_fields("t", alert.classification, alert.determination.as_deref(), alert.assigned_to.as_deref()))
                        button type="submit" name="op" value="save" { "Save changes" }
                    }
                }
            } @else {
                section.panel {
                    h2 { "Triage" }
                    p.muted { "Your role can read alerts but not change them." }
                }
            }
        }
        (event_panel(alert, event, &matched))
        (process_tree)
        div.cols-even {
            (evidence_panel(alert))
            (rule_panel(alert, rule))
        }
        (comments_panel(ctx, &format!("{}/comments", alert_path(&alert.id)), comments))
    }
}

fn details(ctx: &Ctx, alert: &Alert) -> Markup {
    let none = html! { span.muted { "—" } };
    let reference = trigger(alert);
    let origin = reference.map(|r| {
        let field = |k: &str| r.get(k).map(html::value_text).unwrap_or_default();
        let mut parts = Vec::new();
        for (label, key) in [("", "channel"), ("event ", "event_id"), ("from ", "source")] {
            let v = field(key);
            if !v.is_empty() && v != "0" {
                parts.push(format!("{label}{v}"));
            }
        }
        parts.join(" · ")
    });
    html::facts(&[
        (
            "Device",
            match (&alert.device_id, &alert.device_name) {
                (Some(id), Some(name)) => html! { a href={"/devices/" (segment(id))} { (name) } },
                (None, Some(name)) => html! { (name) },
                _ => none.clone(),
            },
        ),
        (
            "Events",
            html! {
                (html::time(&alert.first_event_time))
                @if alert.last_event_time != alert.first_event_time {
                    " → " (html::time(&alert.last_event_time))
                }
                span.muted { " (" (alert.event_count) " event" @if alert.event_count != 1 { "s" } ")" }
            },
        ),
        ("Raised", html::time(&alert.created_at)),
        (
            "Rule",
            match &alert.rule {
                Some(r) => html! {
                    (r.title)
                    @if let Some(id) = &r.id {
                        " " a.small href=(with_query("/alerts", &[("rule_id", id)])) { "its alerts" }
                    }
                },
                None => {
                    html! { span.muted { "none (" (source_label(alert.source()).to_lowercase()) ")" } }
                }
            },
        ),
        (
            "Tactics",
            if alert.tactics.is_empty() {
                none.clone()
            } else {
                html! { @for t in &alert.tactics { span.tag { (t) } " " } }
            },
        ),
        (
            "Techniques",
            if alert.techniques.is_empty() {
                none.clone()
            } else {
                html! {
                    @for t in &alert.techniques {
                        @match attack_url(t) {
                            Some(url) => a.tag href=(url) rel="noopener noreferrer" target="_blank" { (t) },
                            None => span.tag { (t) },
                        }
                        " "
                    }
                }
            },
        ),
        (
            "Incident",
            match &alert.incident_id {
                Some(i) => html! { a.mono href={"/incidents/" (segment(i))} { (i) } },
                None => none.clone(),
            },
        ),
        (
            "Assigned to",
            assignee(ctx, &alert_path(&alert.id), alert.assigned_to.as_deref()),
        ),
        (
            "Determination",
            alert
                .determination
                .as_deref()
                .map_or(none.clone(), |d| html! { (d) }),
        ),
        (
            "Source event",
            origin
                .filter(|o| !o.is_empty())
                .map_or(none.clone(), |o| html! { span.small { (o) } }),
        ),
    ])
}

/// The MITRE ATT&CK page of a technique id (`T1059` or `T1059.001`); `None` for anything else.
fn attack_url(technique: &str) -> Option<String> {
    let (base, sub) = match technique.split_once('.') {
        Some((b, s)) => (b, Some(s)),
        None => (technique, None),
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let number = base.strip_prefix('T')?;
    if !digits(number, 4) || sub.is_some_and(|s| !digits(s, 3)) {
        return None;
    }
    Some(match sub {
        Some(s) => format!("https://attack.mitre.org/techniques/T{number}/{s}/"),
        None => format!("https://attack.mitre.org/techniques/T{number}/"),
    })
}

/// The process the alert is about: its device, the event's `ProcessId` (else the pid of the
/// process evidence), and when it ran (the triggering event's time).
fn process_of(alert: &Alert, event: Option<&Event>) -> Option<(String, i64, String)> {
    let device = alert.device_id.clone()?;
    let from_event = event
        .and_then(|e| e.row.get("ProcessId"))
        .and_then(Value::as_i64);
    let from_evidence = || {
        alert
            .evidence
            .iter()
            .filter_map(|e| serde_json::from_value::<Entity>(e.clone()).ok())
            .find_map(|e| match (e.data, e.role) {
                (rampart_alerts::EntityData::Process { pid, .. }, rampart_alerts::Role::Child) => {
                    pid
                }
                _ => None,
            })
    };
    let pid = from_event.or_else(from_evidence)?;
    let time = trigger(alert)
        .and_then(|r| r.get("timestamp"))
        .and_then(Value::as_str)
        .map_or_else(|| alert.first_event_time.to_rfc3339(), str::to_string);
    Some((device, pid, time))
}

/// The device page's process tree focused on `process`.
fn process_tree_link((device, pid, time): &(String, i64, String)) -> String {
    with_query(
        &format!("/devices/{}/tree", segment(device)),
        &[("process_id", &pid.to_string()), ("time", time)],
    )
}

/// The process tree around the alert's process, drawn on the alert page (ancestors and
/// descendants, the process itself marked); nothing when the device has no process events.
async fn tree_panel(ctx: &Ctx, process: &(String, i64, String)) -> Markup {
    let (device_id, pid, time) = process;
    let Ok(device) = super::devices::device(ctx, device_id).await else {
        return html! {};
    };
    let time = parse_time("Time", time).ok().flatten();
    match super::devices::load_tree(ctx, &device, Some(*pid), time).await {
        Ok((tree, Some(focus), _)) => html! {
            section.panel #alert-process-tree aria-labelledby="tree-title" {
                div.spread {
                    h2 #tree-title { "Process tree" }
                    a href=(process_tree_link(process)) { "Explore on the device page" }
                }
                (super::devices::tree_markup(&device, &tree, Some(focus)))
            }
        },
        Ok(_) => html! {},
        Err(f) => html! {
            section.panel #alert-process-tree {
                h2 { "Process tree" }
                (html::failure_box(&f))
            }
        },
    }
}

/// Whether a field of the event is one the rule matched: a record field by name, any field by
/// a matched value (hunting columns carry record values under Defender's names).
fn is_hit(name: &str, value: &str, matched: &[MatchedField]) -> bool {
    matched.iter().any(|m| {
        m.field.eq_ignore_ascii_case(name)
            || (!value.is_empty() && html::value_text(&m.value) == value)
    })
}

/// The record's own fields: JSON text in `Device*` tables, an object in `Identity*` tables.
fn record_fields(row: &Map<String, Value>) -> Map<String, Value> {
    match row.get("AdditionalFields") {
        Some(Value::String(text)) => serde_json::from_str(text).unwrap_or_default(),
        Some(Value::Object(fields)) => fields.clone(),
        _ => Map::new(),
    }
}

/// Field/value rows, empty values left out; the count of those left out.
fn field_rows<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    matched: &[MatchedField],
) -> (Markup, usize) {
    let mut empty = 0;
    let mut shown = Vec::new();
    for (name, value) in fields {
        let text = html::value_text(value);
        if text.is_empty() {
            empty += 1;
        } else {
            let hit = is_hit(name, &text, matched);
            shown.push((name, text, hit));
        }
    }
    let markup = html! {
        @for (name, text, hit) in &shown {
            tr.hit[*hit] {
                th scope="row" { (name) }
                td.wrap.mono { (text) }
            }
        }
    };
    (markup, empty)
}

fn event_panel(alert: &Alert, event: &Answer<Event>, matched: &[MatchedField]) -> Markup {
    html! {
        section.panel #matching-event aria-labelledby="event-title" {
            div.spread {
                h2 #event-title { "Matching event" }
                @if !matched.is_empty() {
                    span.legend { span.hit.swatch {} " fields the rule matched" }
                }
            }
            @if !matched.is_empty() {
                ul.matched aria-label="Matched values" {
                    @for m in matched {
                        li.hit { span.match-field { (m.field) } " " code { (html::value_text(&m.value)) } }
                    }
                }
            }
            @match event {
                Ok(e) => {
                    @let record = record_fields(&e.row);
                    @let (record_rows, record_empty) = field_rows(record.iter(), matched);
                    @let (column_rows, column_empty) = field_rows(
                        e.row.iter().filter(|(k, _)| k.as_str() != "AdditionalFields"), matched);
                    div.table-wrap.event-scroll {
                        table.grid.fields {
                            @if !record.is_empty() {
                                tbody {
                                    tr.group { th colspan="2" { "Record fields" } }
                                    (record_rows)
                                }
                            }
                            tbody {
                                tr.group { th colspan="2" { "Hunting columns (" (e.table) ")" } }
                                (column_rows)
                            }
                        }
                    }
                    @if record_empty + column_empty > 0 {
                        p.muted.small { (record_empty + column_empty) " empty fields are not shown." }
                    }
                }
                Err(f) => {
                    p.muted { "The stored event is not available: " (f.detail) "." }
                }
            }
            @if alert.event_count > 1 {
                p.muted.small { "The first of " (alert.event_count) " matching events; the others were folded into this alert." }
            }
        }
    }
}

fn evidence_panel(alert: &Alert) -> Markup {
    html! {
        section.panel aria-labelledby="evidence-title" {
            h2 #evidence-title { "Evidence" }
            @if alert.evidence.is_empty() {
                p.muted { "The alert names no entities." }
            } @else {
                div.table-wrap {
                    table.grid #evidence {
                        thead { tr { th { "Kind" } th { "Entity" } th { "Role" } } }
                        tbody {
                            @for value in &alert.evidence {
                                @match serde_json::from_value::<Entity>(value.clone()) {
                                    Ok(e) => tr {
                                        td { span.kind-badge { (kind_names(e.kind()).0) } }
                                        td.wrap {
                                            span.entity-name { (e.display()) }
                                            @for (label, v) in entity_details(&e) {
                                                div.entity-fact { span.muted { (label) ": " } span.mono { (v) } }
                                            }
                                        }
                                        td { (e.role.name()) }
                                    },
                                    Err(_) => tr {
                                        td { "?" }
                                        td.wrap.mono { (value.to_string()) }
                                        td {}
                                    },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn rule_panel(alert: &Alert, rule: Option<&Answer<RuleSource>>) -> Markup {
    html! {
        section.panel aria-labelledby="rule-title" {
            h2 #rule-title { "Rule" }
            @match rule {
                None => p.muted {
                    @match &alert.rule {
                        Some(r) => { "“" (r.title) "” has been deleted; its text is no longer stored." }
                        None => { "This alert was not raised by a rule (" (source_label(alert.source()).to_lowercase()) ")." }
                    }
                },
                Some(Err(f)) => (html::failure_box(f)),
                Some(Ok(r)) => {
                    p {
                        strong { (r.title) }
                        span.muted { " · " (if r.kind == "kql" { "KQL" } else { "Sigma" }) " · " }
                        a href={"/rules/" (segment(&r.id))} { "Rule page" }
                    }
                    @if r.source.is_empty() {
                        p.muted { "The rule's text is not stored." }
                    } @else {
                        pre.rule-source { code { (r.source) } }
                    }
                }
            }
        }
    }
}

async fn update(ctx: Ctx, Path(id): Path<String>, Form(form): Form<Triage>) -> Response {
    let (body, done) = form.change(&ctx.viewer.principal.username);
    let back = alert_path(&id);
    match ctx
        .api
        .patch::<Value>(&format!("/api/v1/alerts/{}", segment(&id)), body)
        .await
    {
        Ok(_) => html::after_change(&back, &done),
        Err(f) => refused(&back, &f.detail),
    }
}

async fn comment(ctx: Ctx, Path(id): Path<String>, Form(form): Form<NewComment>) -> Response {
    add_comment(&ctx, "alerts", &id, &form.text, &alert_path(&id)).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn matched() -> Vec<MatchedField> {
        serde_json::from_value(json!([
            {"field": "CommandLine", "value": "cmd.exe /c whoami"},
            {"field": "Image", "value": "C:\\Windows\\System32\\cmd.exe"},
        ]))
        .unwrap()
    }

    #[test]
    fn matched_fields_are_hits_by_name_or_by_value() {
        let m = matched();
        assert!(is_hit("CommandLine", "anything", &m));
        assert!(is_hit("commandline", "", &m));
        assert!(is_hit("ProcessCommandLine", "cmd.exe /c whoami", &m));
        assert!(is_hit("FolderPath", "C:\\Windows\\System32\\cmd.exe", &m));
        assert!(!is_hit("ParentImage", "C:\\Windows\\explorer.exe", &m));
        assert!(!is_hit("Empty", "", &m));
    }

    #[test]
    fn event_tables_highlight_hits_escape_values_and_count_empty_fields() {
        let row: Map<String, Value> = serde_json::from_value(json!({
            "ProcessCommandLine": "cmd.exe /c whoami",
            "AccountSid": "",
            "InitiatingProcessCommandLine": "<script>alert(1)</script>",
            "ProcessId": 42,
        }))
        .unwrap();
        let (rows, empty) = field_rows(row.iter(), &matched());
        let html = rows.into_string();
        assert_eq!(empty, 1);
        assert_eq!(html.matches("<tr class=\"hit\">").count(), 1, "{html}");
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains(">42<"));
    }

    #[test]
    fn record_fields_come_from_text_or_objects() {
        let text: Map<String, Value> =
            serde_json::from_value(json!({"AdditionalFields": "{\"EventID\":1}"})).unwrap();
        assert_eq!(record_fields(&text).get("EventID"), Some(&json!(1)));
        let object: Map<String, Value> =
            serde_json::from_value(json!({"AdditionalFields": {"EventID": 4624}})).unwrap();
        assert_eq!(record_fields(&object).get("EventID"), Some(&json!(4624)));
        assert!(record_fields(&Map::new()).is_empty());
    }

    #[test]
    fn techniques_link_to_attack_only_when_well_formed() {
        assert_eq!(
            attack_url("T1059").as_deref(),
            Some("https://attack.mitre.org/techniques/T1059/")
        );
        assert_eq!(
            attack_url("T1053.005").as_deref(),
            Some("https://attack.mitre.org/techniques/T1053/005/")
        );
        for bad in ["t1059", "T105", "T1059.5", "T1059/../x", "javascript:x"] {
            assert_eq!(attack_url(bad), None, "{bad}");
        }
    }
}
