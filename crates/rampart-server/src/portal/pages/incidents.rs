//! The incidents queue (`/incidents`: filters, sort, search, bulk triage) and one incident
//! (`/incidents/{id}`: summary, triage form, attack story, alerts with why each joined,
//! entities, timeline, comments, merge). Also the triage and comment pieces the alert page
//! shares, since alerts and incidents are triaged the same way.

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::TimeDelta;
use maud::{Markup, html};
use rampart_alerts::Correlation;
use rampart_state::{
    AlertSource, Classification, Comment, IncidentAlert, IncidentDetail, IncidentRow, IncidentSort,
    IncidentStatus, Page, Severity,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{self, Answer, segment, with_query};
use crate::portal::graph::{self, EntityNode};
use crate::portal::html::{self, Ctx, Form, Query, Section};
use crate::portal::text::parse_time;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/incidents", get(queue))
        .route("/incidents/bulk", post(bulk))
        .route("/incidents/{id}", get(show).post(update))
        .route("/incidents/{id}/comments", post(comment))
        .route("/incidents/{id}/merge", post(merge))
}

/// Incidents one bulk change may touch (the largest page).
const MAX_BULK: usize = 100;
/// Entities listed per kind on the incident page; the rest are counted.
const ENTITIES_PER_KIND: usize = 50;
/// Comments shown (the newest).
const COMMENTS: &str = "100";

// ---------------------------------------------------------------------------------------------
// Shared with the alert page.

/// `?notice=` (after a change that worked) and `?error=` (after one that did not).
#[derive(Deserialize, Default)]
pub(super) struct Messages {
    notice: Option<String>,
    error: Option<String>,
}

impl Messages {
    pub(super) fn show(&self) -> Markup {
        html! {
            (html::notice(self.notice.as_deref()))
            @if let Some(e) = self.error.as_deref().filter(|e| !e.is_empty()) {
                div.notice.error role="alert" { (e) }
            }
        }
    }
}

/// Back to `location` after a change the API refused, saying why.
pub(super) fn refused(location: &str, detail: &str) -> Response {
    Redirect::to(&api::with_query_appended(location, "error", detail)).into_response()
}

/// A query parameter as typed, trimmed; blank when absent.
pub(super) fn text(v: &Option<String>) -> &str {
    v.as_deref().map(str::trim).unwrap_or("")
}

/// Page sizes offered; the first is the default.
const PAGE_SIZES: [&str; 3] = ["50", "25", "100"];

/// The page size asked for, if it is one offered; else the default.
pub(super) fn page_size(limit: &Option<String>) -> &'static str {
    PAGE_SIZES
        .iter()
        .find(|s| **s == text(limit))
        .unwrap_or(&PAGE_SIZES[0])
}

/// The page-size choice of a filter form (it applies at once with script).
pub(super) fn page_size_field(limit: &Option<String>) -> Markup {
    html! {
        div.field {
            label for="f-limit" { "Per page" }
            select #f-limit name="limit" data-autosubmit {
                @for n in PAGE_SIZES {
                    option value=(n) selected[page_size(limit) == n] { (n) }
                }
            }
        }
    }
}

/// "Next page" and, past the first page, the way back to it. `link` is the view without cursor.
pub(super) fn pages(link: &str, cursor: &Option<String>, next: Option<&str>) -> Markup {
    html! {
        @if text(cursor).is_empty() {
            (html::pager(link, next))
        } @else {
            nav.pager aria-label="Pages" {
                a.button.quiet href=(link) { "← First page" }
                " "
                @if let Some(next) = next {
                    a.button href=(api::with_query_appended(link, "cursor", next)) { "Next page →" }
                }
            }
        }
    }
}

/// The time filters `(name, typed text)` as API values, or what is wrong with one.
pub(super) fn time_filters(filters: &[(&str, Option<&str>)]) -> Result<Vec<String>, String> {
    filters
        .iter()
        .map(
            |(name, text)| match text.map(str::trim).filter(|t| !t.is_empty()) {
                None => Ok(String::new()),
                Some(t) => {
                    parse_time(name, t).map(|t| t.map(|t| t.to_rfc3339()).unwrap_or_default())
                }
            },
        )
        .collect()
}

/// The value of a date-time input for a typed time filter.
pub(super) fn time_input(text: Option<&str>) -> String {
    text.and_then(|t| parse_time("", t).ok().flatten())
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// A time span as people say it: `40 s`, `12 min`, `3 h`, `2 d`.
pub(super) fn span_words(span: TimeDelta) -> String {
    match span.num_seconds().abs() {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

/// A classification as people read it.
pub(super) fn classification_label(c: Classification) -> &'static str {
    match c {
        Classification::TruePositive => "True positive",
        Classification::FalsePositive => "False positive",
        Classification::InformationalExpected => "Informational, expected activity",
    }
}

pub(super) fn source_label(s: AlertSource) -> &'static str {
    match s {
        AlertSource::Sigma => "Sigma rule",
        AlertSource::CustomDetection => "Custom detection",
        AlertSource::Indicator => "Indicator",
    }
}

/// Determinations offered (any text is accepted).
const DETERMINATIONS: [&str; 9] = [
    "Malware",
    "Phishing",
    "Compromised account",
    "Malicious user activity",
    "Unwanted software",
    "Security testing",
    "Line-of-business application",
    "Confirmed activity",
    "Not malicious",
];

/// The triage fields both pages share, after the page's own status field: classification,
/// determination, assignment. `prefix` keeps ids unique.
pub(super) fn triage_fields(
    prefix: &str,
    classification: Option<Classification>,
    determination: Option<&str>,
    assigned_to: Option<&str>,
) -> Markup {
    let id = |name: &str| format!("{prefix}-{name}");
    html! {
        div.field {
            label for=(id("classification")) { "Classification" }
            select id=(id("classification")) name="classification" {
                option value="" selected[classification.is_none()] { "Not classified" }
                @for c in Classification::ALL {
                    option value=(c.as_str()) selected[classification == Some(*c)] { (classification_label(*c)) }
                }
            }
        }
        div.field {
            label for=(id("determination")) { "Determination" }
            input id=(id("determination")) type="text" name="determination" value=(determination.unwrap_or(""))
                list=(id("determinations")) placeholder="e.g. Malware";
            datalist id=(id("determinations")) {
                @for d in DETERMINATIONS { option value=(d) {} }
            }
        }
        div.field {
            label for=(id("assigned")) { "Assigned to" }
            input id=(id("assigned")) type="text" name="assigned_to" value=(assigned_to.unwrap_or(""))
                placeholder="user name (blank: unassigned)" autocomplete="off";
        }
    }
}

/// The assignment as a fact, with a one-click "Assign to me" for analysts (its own form, so
/// that Enter in the triage form never means it).
pub(super) fn assignee(ctx: &Ctx, action: &str, assigned_to: Option<&str>) -> Markup {
    let me = ctx.viewer.principal.username.as_str();
    html! {
        @match assigned_to {
            Some(a) => (a),
            None => span.muted { "Unassigned" },
        }
        @if ctx.can(Access::Analyst) && assigned_to != Some(me) {
            " "
            form.inline method="post" action=(action) {
                (ctx.csrf())
                button.small.quiet type="submit" name="op" value="assign_me" { "Assign to me" }
            }
        }
    }
}

/// The triage form as an API change: `op` = `assign_me` sets only the assignment; otherwise
/// every field is taken as given (blank clears).
#[derive(Deserialize)]
pub(super) struct Triage {
    op: Option<String>,
    status: Option<String>,
    classification: Option<String>,
    determination: Option<String>,
    assigned_to: Option<String>,
    tags: Option<String>,
}

impl Triage {
    /// The PATCH body, and what to tell the analyst once it is done.
    pub(super) fn change(&self, me: &str) -> (Value, String) {
        if self.op.as_deref() == Some("assign_me") {
            return (json!({"assigned_to": me}), "Assigned to you.".into());
        }
        let blank_is_null = |v: &Option<String>| match v.as_deref().map(str::trim) {
            None | Some("") => Value::Null,
            Some(v) => Value::String(v.to_string()),
        };
        let mut body = json!({
            "classification": blank_is_null(&self.classification),
            "determination": blank_is_null(&self.determination),
            "assigned_to": blank_is_null(&self.assigned_to),
        });
        if let Some(status) = self.status.as_deref().filter(|s| !s.is_empty()) {
            body["status"] = json!(status);
        }
        if let Some(tags) = &self.tags {
            body["tags"] = json!(split_list(tags));
        }
        (body, "Changes saved.".into())
    }
}

/// Comma- or space-separated words (tags, incident ids), without blanks.
pub(super) fn split_list(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Comments (oldest first of the newest [`COMMENTS`]) and, for analysts, the form to add one.
pub(super) fn comments_panel(ctx: &Ctx, action: &str, comments: &Answer<Page<Comment>>) -> Markup {
    html! {
        section.panel #comments aria-labelledby="comments-title" {
            h2 #comments-title { "Comments" }
            @match comments {
                Err(f) => (html::failure_box(f)),
                Ok(page) if page.items.is_empty() => p.muted { "No comments yet." }
                Ok(page) => {
                    @if page.next.is_some() { p.muted { "The newest " (page.items.len()) " comments:" } }
                    ol.comments {
                        @for c in page.items.iter().rev() {
                            li {
                                div.comment-head { strong { (c.author) } " · " (html::time(&c.created_at)) }
                                div.comment-text { (c.text) }
                            }
                        }
                    }
                }
            }
            @if ctx.can(Access::Analyst) {
                form method="post" action=(action) {
                    (ctx.csrf())
                    div.field {
                        label for="comment-text" { "Add a comment" }
                        textarea #comment-text name="text" rows="3" required maxlength="10000" {}
                    }
                    button type="submit" { "Comment" }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(super) struct NewComment {
    pub(super) text: String,
}

/// Posts a comment on `/api/v1/{kind}/{id}/comments` and returns to `back`.
pub(super) async fn add_comment(
    ctx: &Ctx,
    kind: &str,
    id: &str,
    text: &str,
    back: &str,
) -> Response {
    let path = format!("/api/v1/{kind}/{}/comments", segment(id));
    match ctx.api.post::<Value>(&path, json!({"text": text})).await {
        Ok(_) => html::after_change(back, "Comment added."),
        Err(f) => refused(back, &f.detail),
    }
}

// ---------------------------------------------------------------------------------------------
// The queue.

#[derive(Deserialize, Default)]
struct Filters {
    status: Option<String>,
    severity: Option<String>,
    assigned_to: Option<String>,
    tag: Option<String>,
    source: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    sort: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    #[serde(flatten)]
    messages: Messages,
}

impl Filters {
    fn sort(&self) -> &str {
        match text(&self.sort) {
            "" => IncidentSort::Activity.as_str(),
            s => s,
        }
    }

    fn limit(&self) -> &str {
        page_size(&self.limit)
    }

    /// The filters that narrow the list (not the order or page size).
    fn narrowing(&self) -> [(&'static str, &str); 8] {
        [
            ("status", text(&self.status)),
            ("severity", text(&self.severity)),
            ("assigned_to", text(&self.assigned_to)),
            ("tag", text(&self.tag)),
            ("source", text(&self.source)),
            ("q", text(&self.q)),
            ("from", text(&self.from)),
            ("to", text(&self.to)),
        ]
    }

    fn any(&self) -> bool {
        self.narrowing().iter().any(|(_, v)| !v.is_empty())
    }

    /// This view's address without its page cursor.
    fn link(&self) -> String {
        let mut pairs = self.narrowing().to_vec();
        if !self.sort.as_deref().unwrap_or("").is_empty() {
            pairs.push(("sort", self.sort()));
        }
        if !self.limit.as_deref().unwrap_or("").is_empty() {
            pairs.push(("limit", self.limit()));
        }
        with_query("/incidents", &pairs)
    }

    /// The API call of this view, or what is wrong with a time filter.
    fn api(&self) -> Result<String, String> {
        let times = time_filters(&[("From", self.from.as_deref()), ("To", self.to.as_deref())])?;
        Ok(with_query(
            "/api/v1/incidents",
            &[
                ("status", text(&self.status)),
                ("severity", text(&self.severity)),
                ("assigned_to", text(&self.assigned_to)),
                ("tag", text(&self.tag)),
                ("source", text(&self.source)),
                ("q", text(&self.q)),
                ("from", &times[0]),
                ("to", &times[1]),
                ("sort", self.sort()),
                ("limit", self.limit()),
                ("cursor", text(&self.cursor)),
            ],
        ))
    }
}

fn incident_status_label(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Active => "Active",
        IncidentStatus::InProgress => "In progress",
        IncidentStatus::Resolved => "Resolved",
        IncidentStatus::Merged => "Merged",
    }
}

fn sort_label(s: IncidentSort) -> &'static str {
    match s {
        IncidentSort::Activity => "Most recent activity",
        IncidentSort::Newest => "Newest first",
        IncidentSort::Oldest => "Oldest first",
        IncidentSort::Severity => "Highest severity",
    }
}

async fn queue(ctx: Ctx, Query(filters): Query<Filters>) -> Response {
    let answer: Result<Answer<Page<IncidentRow>>, String> = match filters.api() {
        Ok(path) => Ok(ctx.api.get(&path).await),
        Err(e) => Err(e),
    };
    let analyst = ctx.can(Access::Analyst);
    let body = html! {
        (filters.messages.show())
        (filter_form(&ctx, &filters))
        @match &answer {
            Err(problem) => div.notice.error role="alert" { (problem) }
            Ok(Err(f)) => (html::failure_box(f)),
            Ok(Ok(page)) => {
                // Readers get the table alone: no form they could not use.
                @if analyst {
                    form #bulk method="post" action="/incidents/bulk" {
                        (ctx.csrf())
                        input type="hidden" name="back" value=(ctx.path);
                        @if !page.items.is_empty() { (bulk_bar()) }
                        (queue_table(&filters, page, analyst))
                    }
                } @else {
                    (queue_table(&filters, page, analyst))
                }
                (pages(&filters.link(), &filters.cursor, page.next.as_deref()))
            }
        }
    };
    let mut response = ctx.page(Section::Incidents, "Incidents", body);
    match &answer {
        Ok(Err(f)) => *response.status_mut() = f.status,
        Err(_) => *response.status_mut() = axum::http::StatusCode::BAD_REQUEST,
        Ok(Ok(_)) => {}
    }
    response
}

fn filter_form(ctx: &Ctx, filters: &Filters) -> Markup {
    let me = ctx.viewer.principal.username.as_str();
    html! {
        form.filters #incident-filters method="get" action="/incidents" {
            div.field.grow {
                label for="f-q" { "Search titles" }
                input #f-q type="search" name="q" value=(text(&filters.q)) data-search
                    placeholder="Search incidents  ( / )";
            }
            (html::choice("f-status", "Status", "status", "Any (not merged)", text(&filters.status), IncidentStatus::ALL.iter().map(|s| (s.as_str(), incident_status_label(*s)))))
            (html::choice("f-severity", "Severity", "severity", "Any", text(&filters.severity), Severity::ALL.iter().rev().map(|s| (s.as_str(), s.as_str()))))
            (html::choice("f-source", "Detection source", "source", "Any", text(&filters.source), AlertSource::ALL.iter().map(|s| (s.as_str(), source_label(*s)))))
            div.field {
                label for="f-assigned" { "Assigned to" }
                input #f-assigned type="text" name="assigned_to" value=(text(&filters.assigned_to))
                    placeholder="user name" size="12" list="f-assigned-me";
                datalist #f-assigned-me { option value=(me) {} }
            }
            div.field {
                label for="f-tag" { "Tag" }
                input #f-tag type="text" name="tag" value=(text(&filters.tag)) size="10";
            }
            div.field {
                label for="f-from" { "Active from (UTC)" }
                input #f-from type="text" name="from" placeholder="YYYY-MM-DD HH:MM" size="16" value=(time_input(filters.from.as_deref()));
            }
            div.field {
                label for="f-to" { "Active until (UTC)" }
                input #f-to type="text" name="to" placeholder="YYYY-MM-DD HH:MM" size="16" value=(time_input(filters.to.as_deref()));
            }
            div.field {
                label for="f-sort" { "Sort by" }
                select #f-sort name="sort" data-autosubmit {
                    @for s in [IncidentSort::Activity, IncidentSort::Newest, IncidentSort::Oldest, IncidentSort::Severity] {
                        option value=(s.as_str()) selected[filters.sort() == s.as_str()] { (sort_label(s)) }
                    }
                }
            }
            (page_size_field(&filters.limit))
            div.filter-actions {
                button type="submit" { "Apply" }
                @if filters.any() { a.button.quiet href="/incidents" { "Clear" } }
            }
        }
    }
}

fn bulk_bar() -> Markup {
    html! {
        div.bulk-bar role="group" aria-label="Change the selected incidents" {
            span.muted { "With the selected incidents:" span data-selected-count {} }
            // First in the form, so that Enter in the user field means this button.
            span.row.tight {
                label.visually-hidden for="bulk-user" { "User to assign the selected incidents to" }
                input #bulk-user type="text" name="user" placeholder="user name" size="12" autocomplete="off";
                button.small.quiet type="submit" name="op" value="assign_user" { "Assign" }
            }
            button.small.quiet type="submit" name="op" value="assign_me" { "Assign to me" }
            button.small.quiet type="submit" name="op" value="in_progress" { "Set in progress" }
            button.small.quiet type="submit" name="op" value="resolved" { "Resolve" }
        }
    }
}

/// Up to `max` names, then how many more (all of them in the tooltip).
fn names(list: &[String], max: usize) -> Markup {
    html! {
        @for (i, n) in list.iter().take(max).enumerate() {
            @if i > 0 { ", " }
            (n)
        }
        @if list.len() > max {
            " " span.more title=(list.join(", ")) { "+" (list.len() - max) " more" }
        }
    }
}

fn queue_table(filters: &Filters, page: &Page<IncidentRow>, analyst: bool) -> Markup {
    html! {
        div.table-wrap {
            table.grid.queue #incidents {
                thead { tr {
                    @if analyst {
                        th.check { input #select-all type="checkbox" data-select-all="id" aria-label="Select every incident on this page"; }
                    }
                    th { "Severity" } th { "Incident" } th { "Status" } th.num { "Alerts" }
                    th { "Devices and users" } th { "Assigned to" } th { "Last activity" }
                } }
                tbody {
                    @for row in &page.items {
                        @let i = &row.incident;
                        @let v = &row.involvement;
                        tr {
                            @if analyst {
                                td.check {
                                    input type="checkbox" name="id" value=(i.id) id={"sel-" (i.id)}
                                        aria-label={"Select " (i.title)};
                                }
                            }
                            td { (html::severity(i.severity.as_str())) }
                            td.wrap.title-cell {
                                a.incident-link href={"/incidents/" (segment(&i.id))} title=(i.id) { (i.title) }
                                div.sub {
                                    @for s in &v.sources { span.source { (source_label(*s)) } }
                                    @for t in &i.tags { span.tag { (t) } }
                                }
                            }
                            td { (html::status(i.status.as_str())) }
                            td.num { (i.alert_count) }
                            td.names {
                                @if !v.devices.is_empty() {
                                    div { span.kind-badge title="Devices" { "HOST" } " " (names(&v.devices, 2)) }
                                }
                                @if !v.users.is_empty() {
                                    div { span.kind-badge title="Users" { "USER" } " " (names(&v.users, 2)) }
                                }
                            }
                            td {
                                @match &i.assigned_to {
                                    Some(a) => (a),
                                    None => span.muted { "Unassigned" },
                                }
                            }
                            td.when {
                                (html::time(&i.last_activity))
                                @if i.first_activity != i.last_activity {
                                    div.muted.small { "since " (html::time(&i.first_activity)) }
                                }
                            }
                        }
                    }
                }
            }
            @if page.items.is_empty() {
                p.empty {
                    @if filters.any() {
                        "No incident matches these filters. " a href="/incidents" { "Clear the filters" }
                        " to see every open incident."
                    } @else if text(&filters.cursor).is_empty() {
                        "No incidents yet. Incidents appear here as detections raise alerts: ingest event "
                        "logs (" code { "rampart ingest" } ") or enroll agents, and make sure detection "
                        "rules are enabled on the " a href="/rules" { "Rules" } " page."
                    } @else {
                        "No more incidents. " a href=(filters.link()) { "Back to the first page" }
                    }
                }
            }
        }
    }
}

/// Where a bulk change returns to: the queue view it was made from.
fn queue_back(back: Option<&str>) -> String {
    match back {
        Some(b) if b == "/incidents" || b.starts_with("/incidents?") => b.to_string(),
        _ => "/incidents".to_string(),
    }
}

/// The bulk form: ids ticked, the operation, and for `assign_user` the user.
struct Bulk {
    ids: Vec<String>,
    op: String,
    user: String,
    back: String,
}

impl Bulk {
    fn parse(body: &[u8]) -> Bulk {
        let mut bulk = Bulk {
            ids: Vec::new(),
            op: String::new(),
            user: String::new(),
            back: String::new(),
        };
        for (k, v) in form_urlencoded::parse(body) {
            match k.as_ref() {
                "id" if !v.is_empty() && !bulk.ids.contains(&v.to_string()) => {
                    bulk.ids.push(v.into_owned())
                }
                "op" => bulk.op = v.into_owned(),
                "user" => bulk.user = v.trim().to_string(),
                "back" => bulk.back = v.into_owned(),
                _ => {}
            }
        }
        bulk.back = queue_back(Some(&bulk.back));
        bulk
    }

    /// The PATCH body and the past-tense description of the change, or why there is none.
    fn change(&self, me: &str) -> Result<(Value, String), String> {
        match self.op.as_str() {
            "assign_me" => Ok((json!({"assigned_to": me}), "assigned to you".into())),
            "assign_user" if self.user.is_empty() => {
                Err("Type the user name to assign the selected incidents to.".into())
            }
            "assign_user" => Ok((
                json!({"assigned_to": self.user}),
                format!("assigned to {}", self.user),
            )),
            "in_progress" => Ok((json!({"status": "in_progress"}), "set in progress".into())),
            "resolved" => Ok((json!({"status": "resolved"}), "resolved".into())),
            _ => Err("Choose what to do with the selected incidents.".into()),
        }
    }
}

/// "3 incidents" / "1 incident".
fn incidents_word(n: usize) -> String {
    format!("{n} incident{}", if n == 1 { "" } else { "s" })
}

async fn bulk(ctx: Ctx, body: Bytes) -> Response {
    let bulk = Bulk::parse(&body);
    if bulk.ids.is_empty() {
        return refused(&bulk.back, "Select at least one incident first.");
    }
    if bulk.ids.len() > MAX_BULK {
        return refused(
            &bulk.back,
            &format!("Select at most {MAX_BULK} incidents at a time."),
        );
    }
    let (change, done) = match bulk.change(&ctx.viewer.principal.username) {
        Ok(c) => c,
        Err(e) => return refused(&bulk.back, &e),
    };
    let mut failed = Vec::new();
    for id in &bulk.ids {
        let path = format!("/api/v1/incidents/{}", segment(id));
        if let Err(f) = ctx.api.patch::<Value>(&path, change.clone()).await {
            failed.push(format!("{id}: {}", f.detail));
        }
    }
    let changed = bulk.ids.len() - failed.len();
    let message = format!("{} {done}.", incidents_word(changed));
    if failed.is_empty() {
        html::after_change(&bulk.back, &message)
    } else {
        let error = format!(
            "{} could not be changed — {}",
            incidents_word(failed.len()),
            failed.join("; ")
        );
        let back = api::with_query_appended(&bulk.back, "error", &error);
        html::after_change(&back, if changed > 0 { &message } else { "" })
    }
}

// ---------------------------------------------------------------------------------------------
// One incident.

fn incident_path(id: &str) -> String {
    format!("/incidents/{}", segment(id))
}

async fn show(ctx: Ctx, Path(id): Path<String>, Query(messages): Query<Messages>) -> Response {
    let api_path = format!("/api/v1/incidents/{}", segment(&id));
    let comments_path = with_query(&format!("{api_path}/comments"), &[("limit", COMMENTS)]);
    let (detail, comments) = tokio::join!(
        ctx.api.get::<IncidentDetail>(&api_path),
        ctx.api.get::<Page<Comment>>(&comments_path),
    );
    let detail = match detail {
        Ok(d) => d,
        Err(f) => return ctx.failure(Section::Incidents, &f),
    };
    if let Some(into) = &detail.incident.merged_into {
        return html::after_change(
            &incident_path(into),
            &format!("Incident {} was merged into this one.", detail.incident.id),
        );
    }
    let title = detail.incident.title.clone();
    let body = incident_body(&ctx, &detail, &comments, &messages);
    ctx.page(Section::Incidents, &title, body)
}

fn incident_body(
    ctx: &Ctx,
    detail: &IncidentDetail,
    comments: &Answer<Page<Comment>>,
    messages: &Messages,
) -> Markup {
    let incident = &detail.incident;
    let alerts = graph::alerts_in_time_order(detail);
    let nodes = graph::entities(&alerts);
    let devices = graph::device_ids(&alerts);
    let analyst = ctx.can(Access::Analyst);
    html! {
        (messages.show())
        div.incident-head {
            (html::severity(incident.severity.as_str()))
            (html::status(incident.status.as_str()))
            @if let Some(c) = incident.classification { span.pill { (classification_label(c)) } }
            span.mono.muted { (incident.id) }
            nav.jump aria-label="On this page" {
                a href="#story" { "Attack story" }
                a href="#alerts" { "Alerts" }
                a href="#entities" { "Entities" }
                a href="#timeline" { "Timeline" }
                a href="#comments" { "Comments" }
            }
        }
        div.cols {
            section.panel aria-labelledby="summary-title" {
                h2 #summary-title { "Summary" }
                (summary(ctx, incident, &alerts, &nodes, &devices))
            }
            @if analyst {
                (manage_form(ctx, detail))
            } @else {
                section.panel {
                    h2 { "Triage" }
                    p.muted { "Your role can read incidents but not change them." }
                }
            }
        }
        section.panel #story aria-labelledby="story-title" {
            div.spread {
                h2 #story-title { "Attack story" }
                span.muted.small { "Hover or focus a node to trace its links. Select an alert to open it." }
            }
            @if alerts.is_empty() {
                p.empty { "This incident has no alerts in your device scope." }
            } @else {
                (graph::attack_story(detail))
            }
        }
        section.panel #alerts aria-labelledby="alerts-title" {
            h2 #alerts-title { "Alerts (" (alerts.len()) ")" }
            @if detail.alerts_truncated {
                p.notice.error {
                    "Only the first " (alerts.len()) " alerts are shown. "
                    a href=(with_query("/alerts", &[("incident_id", &incident.id)])) { "List them all" }
                }
            }
            (alerts_table(&alerts))
        }
        section.panel #entities aria-labelledby="entities-title" {
            h2 #entities-title { "Entities (" (nodes.len()) ")" }
            (entity_groups(&nodes, &devices))
        }
        div.cols-even {
            section.panel aria-labelledby="timeline-title" {
                h2 #timeline-title { "Timeline" }
                (timeline(&alerts))
            }
            div {
                (comments_panel(ctx, &format!("{}/comments", incident_path(&incident.id)), comments))
                @if analyst { (merge_form(ctx, &incident.id)) }
            }
        }
    }
}

fn summary(
    ctx: &Ctx,
    incident: &rampart_state::Incident,
    alerts: &[&IncidentAlert],
    nodes: &[EntityNode],
    devices: &BTreeMap<String, String>,
) -> Markup {
    let device_nodes: Vec<&EntityNode> = nodes
        .iter()
        .filter(|n| n.entity.kind() == rampart_alerts::EntityKind::Device)
        .collect();
    let mut tactics: Vec<&str> = Vec::new();
    for a in alerts {
        for t in &a.alert.tactics {
            if !tactics.contains(&t.as_str()) {
                tactics.push(t);
            }
        }
    }
    let none = html! { span.muted { "—" } };
    html::facts(&[
        ("Severity", html::severity(incident.severity.as_str())),
        ("Status", html::status(incident.status.as_str())),
        (
            "Classification",
            incident
                .classification
                .map_or(none.clone(), |c| html! { (classification_label(c)) }),
        ),
        (
            "Determination",
            incident
                .determination
                .as_deref()
                .map_or(none.clone(), |d| html! { (d) }),
        ),
        (
            "Assigned to",
            assignee(
                ctx,
                &incident_path(&incident.id),
                incident.assigned_to.as_deref(),
            ),
        ),
        (
            "Tags",
            if incident.tags.is_empty() {
                none.clone()
            } else {
                html! { @for t in &incident.tags { span.tag { (t) } " " } }
            },
        ),
        (
            "Activity",
            html! {
                (html::time(&incident.first_activity))
                @if incident.last_activity != incident.first_activity {
                    " → " (html::time(&incident.last_activity))
                    span.muted { " (" (span_words(incident.last_activity - incident.first_activity)) ")" }
                }
            },
        ),
        ("Alerts", html! { (incident.alert_count) }),
        (
            "Devices",
            if device_nodes.is_empty() {
                none.clone()
            } else {
                html! {
                    @for (i, n) in device_nodes.iter().enumerate() {
                        @if i > 0 { ", " }
                        @match devices.get(&n.key) {
                            Some(id) => a href={"/devices/" (segment(id))} { (n.entity.display()) },
                            None => (n.entity.display()),
                        }
                    }
                }
            },
        ),
        (
            "Tactics",
            if tactics.is_empty() {
                none.clone()
            } else {
                html! { @for t in &tactics { span.tag { (t) } " " } }
            },
        ),
        ("Created", html::time(&incident.created_at)),
        ("Updated", html::time(&incident.updated_at)),
    ])
}

fn manage_form(ctx: &Ctx, detail: &IncidentDetail) -> Markup {
    let i = &detail.incident;
    html! {
        section.panel aria-labelledby="manage-title" {
            h2 #manage-title { "Triage" }
            form.stack method="post" action=(incident_path(&i.id)) {
                (ctx.csrf())
                div.field {
                    label for="m-status" { "Status" }
                    select #m-status name="status" {
                        @for s in [IncidentStatus::Active, IncidentStatus::InProgress, IncidentStatus::Resolved] {
                            option value=(s.as_str()) selected[i.status == s] { (incident_status_label(s)) }
                        }
                    }
                }
                (triage_fields("m", i.classification, i.determination.as_deref(), i.assigned_to.as_deref()))
                div.field {
                    label for="m-tags" { "Tags (separated by commas)" }
                    input #m-tags type="text" name="tags" value=(i.tags.join(", "));
                }
                button type="submit" name="op" value="save" { "Save changes" }
            }
        }
    }
}

async fn update(ctx: Ctx, Path(id): Path<String>, Form(form): Form<Triage>) -> Response {
    let (body, done) = form.change(&ctx.viewer.principal.username);
    let back = incident_path(&id);
    match ctx
        .api
        .patch::<Value>(&format!("/api/v1/incidents/{}", segment(&id)), body)
        .await
    {
        Ok(_) => html::after_change(&back, &done),
        Err(f) => refused(&back, &f.detail),
    }
}

async fn comment(ctx: Ctx, Path(id): Path<String>, Form(form): Form<NewComment>) -> Response {
    add_comment(&ctx, "incidents", &id, &form.text, &incident_path(&id)).await
}

fn merge_form(ctx: &Ctx, id: &str) -> Markup {
    html! {
        section.panel aria-labelledby="merge-title" {
            h2 #merge-title { "Merge incidents" }
            p.muted {
                "Fold other incidents into this one: their alerts, with the reasons they joined, "
                "and their tags move here, and they are marked merged. This cannot be undone."
            }
            form #merge-form method="post" action={(incident_path(id)) "/merge"}
                data-confirm="Merge these incidents into this one? This cannot be undone." {
                (ctx.csrf())
                div.field {
                    label for="merge-ids" { "Incident ids (separated by commas or spaces)" }
                    input #merge-ids type="text" name="incidents" required placeholder="inc_…" autocomplete="off";
                }
                button type="submit" { "Merge into this incident" }
            }
        }
    }
}

#[derive(Deserialize)]
struct MergeForm {
    incidents: String,
}

async fn merge(ctx: Ctx, Path(id): Path<String>, Form(form): Form<MergeForm>) -> Response {
    let back = incident_path(&id);
    let others: Vec<String> = split_list(&form.incidents)
        .into_iter()
        .filter(|o| *o != id)
        .collect();
    if others.is_empty() {
        return refused(
            &back,
            "Give the ids of the incidents to merge into this one.",
        );
    }
    let path = format!("/api/v1/incidents/{}/merge", segment(&id));
    match ctx
        .api
        .post::<Value>(&path, json!({"incidents": others}))
        .await
    {
        Ok(_) => html::after_change(
            &back,
            &format!("{} merged into this one.", incidents_word(others.len())),
        ),
        Err(f) => refused(&back, &f.detail),
    }
}

/// Why an alert joined, from the correlator's decision: the entity it shares and with which
/// alert, or that it opened the incident; the stored explanation when the decision is not one
/// this version reads.
fn why_joined(reason: &Value, titles: &HashMap<&str, &str>) -> Markup {
    let decision = reason
        .get("decision")
        .and_then(|d| serde_json::from_value::<Correlation>(d.clone()).ok());
    let alert_link = |id: &str| {
        html! { a href={"/alerts/" (segment(id))} { (titles.get(id).copied().unwrap_or(id)) } }
    };
    html! {
        @match decision {
            Some(Correlation::New { .. }) => span.muted { "First alert: opened the incident" },
            Some(Correlation::Join { reason: r, merge, .. }) => {
                "Shares " (r.entity_kind.name().replace('_', " ")) " "
                strong.entity-name { (r.display) }
                " with " (alert_link(&r.linked_alert))
                span.muted { " (" (span_words(r.alert_time - r.linked_alert_time)) " apart)" }
                @for m in &merge {
                    div.small {
                        "Also linked incident " a href=(incident_path(&m.incident)) { (m.incident) }
                        " through " (m.reason.entity_kind.name().replace('_', " ")) " " strong.entity-name { (m.reason.display) }
                    }
                }
            },
            None => {
                @match reason.get("explanation").and_then(Value::as_str) {
                    Some(text) => (text),
                    None => span.mono { (html::value_text(reason)) },
                }
            },
        }
    }
}

fn alerts_table(alerts: &[&IncidentAlert]) -> Markup {
    let titles: HashMap<&str, &str> = alerts
        .iter()
        .map(|a| (a.alert.id.as_str(), a.alert.title.as_str()))
        .collect();
    html! {
        div.table-wrap {
            table.grid #incident-alerts {
                thead { tr {
                    th { "First event" } th { "Severity" } th { "Alert" } th { "Device" }
                    th { "Status" } th { "Why it joined" }
                } }
                tbody {
                    @for a in alerts {
                        @let alert = &a.alert;
                        tr {
                            td.when { (html::time(&alert.first_event_time)) }
                            td { (html::severity(alert.severity.as_str())) }
                            td.wrap {
                                a.alert-link href={"/alerts/" (segment(&alert.id))} { (alert.title) }
                                @if !alert.tactics.is_empty() {
                                    div.sub.muted { (alert.tactics.join(", ")) }
                                }
                            }
                            td {
                                @match (&alert.device_id, &alert.device_name) {
                                    (Some(id), Some(name)) => a href={"/devices/" (segment(id))} { (name) },
                                    (None, Some(name)) => (name),
                                    _ => span.muted { "—" },
                                }
                            }
                            td { (html::status(alert.status.as_str())) }
                            td.wrap.reason { (why_joined(&a.reason, &titles)) }
                        }
                    }
                }
            }
            @if alerts.is_empty() {
                p.empty { "No alerts of this incident are on devices in your scope." }
            }
        }
    }
}

fn entity_groups(nodes: &[EntityNode], devices: &BTreeMap<String, String>) -> Markup {
    let mut groups: Vec<(rampart_alerts::EntityKind, Vec<&EntityNode>)> = Vec::new();
    for n in nodes {
        match groups.last_mut() {
            Some((kind, list)) if *kind == n.entity.kind() => list.push(n),
            _ => groups.push((n.entity.kind(), vec![n])),
        }
    }
    html! {
        @if groups.is_empty() { p.muted { "The alerts name no entities." } }
        div.entity-groups {
            @for (kind, list) in &groups {
                @let (badge, plural) = graph::kind_names(*kind);
                div.entity-group {
                    h3 { span.kind-badge { (badge) } " " (plural) " (" (list.len()) ")" }
                    ul.entities {
                        @for n in list.iter().take(ENTITIES_PER_KIND) {
                            li { (entity_item(n, devices)) }
                        }
                    }
                    @if list.len() > ENTITIES_PER_KIND {
                        p.muted.small { "and " (list.len() - ENTITIES_PER_KIND) " more" }
                    }
                }
            }
        }
    }
}

/// One entity: its name (a device links to its page), how many alerts name it, its command
/// line shown and its other facts (hashes, SID, …) behind a disclosure.
fn entity_item(n: &EntityNode, devices: &BTreeMap<String, String>) -> Markup {
    let kind = n.entity.kind();
    let (command, facts): (Vec<_>, Vec<_>) = graph::entity_details(&n.entity)
        .into_iter()
        .partition(|(label, _)| *label == "Command line");
    html! {
        @match devices.get(&n.key).filter(|_| kind == rampart_alerts::EntityKind::Device) {
            Some(id) => a.entity-name href={"/devices/" (segment(id))} { (n.entity.display()) },
            None => span.entity-name { (n.entity.display()) },
        }
        span.muted.small { " · " (n.alerts.len()) " alert" @if n.alerts.len() != 1 { "s" } }
        @for (_, line) in &command { code.cmd { (line) } }
        @if !facts.is_empty() {
            details.facts-more {
                summary { "Details" }
                @for (label, value) in &facts {
                    div.entity-fact { span.muted { (label) ": " } span.mono { (value) } }
                }
            }
        }
    }
}

fn timeline(alerts: &[&IncidentAlert]) -> Markup {
    html! {
        @if alerts.is_empty() {
            p.muted { "Nothing to show." }
        } @else {
            ol.timeline #timeline {
                @for (i, a) in alerts.iter().enumerate() {
                    @let alert = &a.alert;
                    li class={"tl-" (alert.severity.as_str())} {
                        div.tl-time {
                            (html::time(&alert.first_event_time))
                            @let since = i.checked_sub(1).map(|p| alert.first_event_time - alerts[p].alert.first_event_time);
                            @if let Some(gap) = since.filter(|g| g.num_seconds() > 0) {
                                span.muted.small { " +" (span_words(gap)) }
                            }
                        }
                        div.tl-body {
                            (html::severity(alert.severity.as_str())) " "
                            a href={"/alerts/" (segment(&alert.id))} { (alert.title) }
                            @if let Some(d) = &alert.device_name { span.muted { " on " (d) } }
                            @if alert.event_count > 1 { span.muted { " · " (alert.event_count) " events" } }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span_words(TimeDelta::seconds(0)), "0 s");
        assert_eq!(span_words(TimeDelta::seconds(-90)), "90 s");
        assert_eq!(span_words(TimeDelta::minutes(45)), "45 min");
        assert_eq!(span_words(TimeDelta::hours(5)), "5 h");
        assert_eq!(span_words(TimeDelta::days(3)), "3 d");
    }

    #[test]
    fn bulk_forms_collect_ticked_ids_once_and_return_to_the_queue_only() {
        let b = Bulk::parse(b"id=inc_1&id=inc_2&id=inc_1&id=&op=assign_user&user=+bob+&back=%2Fincidents%3Fstatus%3Dactive");
        assert_eq!(b.ids, vec!["inc_1", "inc_2"]);
        assert_eq!(b.back, "/incidents?status=active");
        let (body, done) = b.change("me").unwrap();
        assert_eq!(body, json!({"assigned_to": "bob"}));
        assert_eq!(done, "assigned to bob");
        assert_eq!(
            Bulk::parse(b"back=https://evil.example/").back,
            "/incidents"
        );
        assert_eq!(Bulk::parse(b"back=/incidentsX").back, "/incidents");
        assert!(Bulk::parse(b"op=assign_user").change("me").is_err());
        assert!(Bulk::parse(b"op=delete").change("me").is_err());
        let (body, _) = Bulk::parse(b"op=resolved").change("me").unwrap();
        assert_eq!(body, json!({"status": "resolved"}));
    }

    #[test]
    fn triage_forms_clear_blank_fields_and_split_tags() {
        let form = Triage {
            op: Some("save".into()),
            status: Some("resolved".into()),
            classification: Some(String::new()),
            determination: Some(" Malware ".into()),
            assigned_to: Some("  ".into()),
            tags: Some("apt, ,phish  x".into()),
        };
        let (body, _) = form.change("me");
        assert_eq!(
            body,
            json!({"status": "resolved", "classification": null, "determination": "Malware",
                   "assigned_to": null, "tags": ["apt", "phish", "x"]})
        );
        let mine = Triage {
            op: Some("assign_me".into()),
            status: None,
            classification: None,
            determination: None,
            assigned_to: None,
            tags: None,
        };
        assert_eq!(mine.change("alice").0, json!({"assigned_to": "alice"}));
    }

    #[test]
    fn join_reasons_name_the_shared_entity_and_the_linked_alert() {
        let reason = json!({
            "explanation": "shares account CORP\\bob with alert alr_1 (5 s apart)",
            "decision": {"decision": "join", "incident": "inc_1", "merge": [],
                "reason": {"entity_kind": "account", "entity_key": "account:name:corp\\bob",
                    "display": "CORP\\bob", "linked_alert": "alr_1",
                    "linked_alert_time": "2024-01-01T00:00:00Z", "alert_time": "2024-01-01T00:00:05Z"}}
        });
        let titles = HashMap::from([("alr_1", "Encoded <PowerShell>")]);
        let html = why_joined(&reason, &titles).into_string();
        assert!(
            html.contains("Shares account <strong class=\"entity-name\">CORP\\bob</strong>"),
            "{html}"
        );
        assert!(
            html.contains("href=\"/alerts/alr_1\">Encoded &lt;PowerShell&gt;</a>"),
            "{html}"
        );
        assert!(html.contains("5 s apart"));
        let first = json!({"explanation": "first alert", "decision": {"decision": "new", "incident": "inc_1", "title": "t"}});
        assert!(
            why_joined(&first, &titles)
                .into_string()
                .contains("opened the incident")
        );
        let unknown = json!({"explanation": "because <b>"});
        assert_eq!(
            why_joined(&unknown, &titles).into_string(),
            "because &lt;b&gt;"
        );
    }
}
