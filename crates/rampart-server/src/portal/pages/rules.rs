//! Detection rules: the list (filters, enable/disable, delete), Sigma uploads, and one rule's
//! page with its source, its ATT&CK tags, a test over stored data and, for custom detections,
//! "run now". A refused upload comes back with its text and the API's reason beside the form.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use rampart_state::{Page, Rule, RuleKind, RuleOrigin};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{self, Failure};
use crate::portal::forms::{Confirm, failure};
use crate::portal::html::{self, Ctx, Form, Query, Section};
use crate::portal::text::parse_time;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/rules", get(list))
        .route("/rules/upload", post(upload))
        .route("/rules/{id}", get(detail))
        .route("/rules/{id}/enabled", post(set_enabled))
        .route("/rules/{id}/test", post(test))
        .route("/rules/{id}/run", post(run_now))
        .route("/rules/{id}/delete", get(confirm_delete).post(delete))
}

/// Rows per page of the list.
const PAGE_SIZE: &str = "100";
/// Matching rows a test shows (the API counts them all).
const TEST_ROWS: usize = 50;

/// Query pairs of an API call.
type ApiFilters = &'static [(&'static str, &'static str)];

/// The "Kind" filter's choices: value, label, and the API filters each stands for.
const KINDS: [(&str, &str, ApiFilters); 4] = [
    ("sigma", "Sigma, all", &[("kind", "sigma")]),
    ("builtin", "Sigma, built in", &[("origin", "builtin")]),
    (
        "uploaded",
        "Sigma, uploaded",
        &[("kind", "sigma"), ("origin", "uploaded")],
    ),
    ("custom", "Custom detections (KQL)", &[("kind", "kql")]),
];

#[derive(Deserialize, Default)]
pub struct Filters {
    kind: Option<String>,
    /// "true" or "false".
    enabled: Option<String>,
    q: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

impl Filters {
    fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }

    fn enabled(&self) -> &str {
        self.enabled
            .as_deref()
            .filter(|e| matches!(*e, "true" | "false"))
            .unwrap_or_default()
    }

    fn q(&self) -> &str {
        self.q.as_deref().map_or("", str::trim)
    }

    fn any(&self) -> bool {
        !(self.kind().is_empty() && self.enabled().is_empty() && self.q().is_empty())
    }

    /// This page with the same filters (the pager adds the cursor).
    fn link(&self) -> String {
        api::with_query(
            "/rules",
            &[
                ("kind", self.kind()),
                ("enabled", self.enabled()),
                ("q", self.q()),
            ],
        )
    }

    /// The API's list with these filters; an unknown kind is refused here.
    fn api(&self) -> Result<String, Failure> {
        let kind_filters: &[(&str, &str)] = match self.kind() {
            "" => &[],
            kind => KINDS
                .iter()
                .find(|(value, _, _)| *value == kind)
                .map(|(_, _, filters)| *filters)
                .ok_or_else(|| failure(StatusCode::BAD_REQUEST, "Unknown kind of rule."))?,
        };
        let mut pairs = kind_filters.to_vec();
        pairs.extend([
            ("enabled", self.enabled()),
            ("q", self.q()),
            ("limit", PAGE_SIZE),
            ("cursor", self.cursor.as_deref().unwrap_or("")),
        ]);
        Ok(api::with_query("/api/v1/rules", &pairs))
    }
}

/// An ATT&CK tag of a rule (`attack.t1059.001`, `attack.defense-evasion`) as an analyst reads
/// it, with its page on attack.mitre.org; any other tag as it is.
fn attack_tag(tag: &str) -> (String, Option<String>) {
    let Some(name) = tag.strip_prefix("attack.") else {
        return (tag.to_string(), None);
    };
    let mut chars = name.chars();
    let (first, rest) = (chars.next(), chars.as_str());
    let id_like = |s: &str| {
        let (main, sub) = s.split_once('.').unwrap_or((s, ""));
        main.len() == 4
            && main.bytes().all(|b| b.is_ascii_digit())
            && (sub.is_empty() || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
    };
    let page = match first {
        Some('t' | 'T') if id_like(rest) => Some("techniques"),
        Some('g' | 'G') if id_like(rest) && !rest.contains('.') => Some("groups"),
        Some('s' | 'S') if id_like(rest) && !rest.contains('.') => Some("software"),
        _ => None,
    };
    match page {
        Some(page) => {
            let id = name.to_uppercase();
            let url = format!("https://attack.mitre.org/{page}/{}/", id.replace('.', "/"));
            (id, Some(url))
        }
        None => {
            let words = name.replace(['_', '-'], " ");
            let mut label = String::with_capacity(words.len());
            let mut chars = words.chars();
            if let Some(c) = chars.next() {
                label.extend(c.to_uppercase());
            }
            label.push_str(chars.as_str());
            (label, None)
        }
    }
}

fn tags(tags: &[String]) -> Markup {
    html! {
        span.tag-list {
            @for tag in tags {
                @let (label, url) = attack_tag(tag);
                @if let Some(url) = url {
                    a.tag href=(url) rel="noopener noreferrer" target="_blank" title=(tag) { (label) }
                } @else {
                    span.tag title=(tag) { (label) }
                }
                " "
            }
        }
    }
}

fn kind_text(rule: &Rule) -> &'static str {
    match rule.kind {
        RuleKind::Sigma => "Sigma",
        RuleKind::Kql => "Custom detection (KQL)",
    }
}

fn origin_text(rule: &Rule) -> Markup {
    html! {
        @match &rule.origin {
            RuleOrigin::Builtin { path } => span title=(path) { "Built in" },
            RuleOrigin::Uploaded => span { "Uploaded by " (rule.created_by) },
        }
    }
}

fn enabled_status(rule: &Rule) -> Markup {
    html::status(if rule.enabled { "enabled" } else { "disabled" })
}

/// The enable/disable button (admins), coming back to `back`.
fn toggle(ctx: &Ctx, rule: &Rule, back: &str) -> Markup {
    html! {
        form.inline method="post" action={"/rules/" (api::segment(&rule.id)) "/enabled"} {
            (ctx.csrf())
            input type="hidden" name="enabled" value=(!rule.enabled);
            input type="hidden" name="back" value=(back);
            button.small.quiet type="submit" { (if rule.enabled { "Disable" } else { "Enable" }) }
        }
    }
}

async fn list(ctx: Ctx, Query(filters): Query<Filters>) -> Response {
    render(&ctx, &filters, None).await
}

/// The list page; `uploading` is a refused upload: its text and the API's reason.
async fn render(ctx: &Ctx, filters: &Filters, uploading: Option<(&str, &Failure)>) -> Response {
    let list = match filters.api() {
        Ok(path) => ctx.api.get::<Page<Rule>>(&path).await,
        Err(f) => Err(f),
    };
    let admin = ctx.can(Access::Admin);
    let back = filters.link();
    let body = html! {
        (html::notice(filters.notice.as_deref()))
        @if admin {
            (upload_form(ctx, uploading))
        }
        (filter_form(filters))
        @match &list {
            Err(f) => (html::failure_box(f)),
            Ok(page) => {
                div.table-wrap {
                    table.grid #rules {
                        thead { tr {
                            th { "Rule" } th { "Kind" } th { "Source" } th { "Severity" }
                            th { "ATT&CK" } th { "Status" } th { "Updated" }
                            @if admin { th { span.visually-hidden { "Actions" } } }
                        } }
                        tbody {
                            @for rule in &page.items {
                                tr.disabled[!rule.enabled] {
                                    td.wrap { a.rule-link href={"/rules/" (api::segment(&rule.id))} { (rule.title) } }
                                    td { (kind_text(rule)) }
                                    td { (origin_text(rule)) }
                                    td { (html::severity(rule.severity.as_str())) }
                                    td.rule-tags { (tags(&rule.tags)) }
                                    td { (enabled_status(rule)) }
                                    td { (html::time(&rule.updated_at)) }
                                    @if admin {
                                        td.actions {
                                            div.row.nowrap {
                                                (toggle(ctx, rule, &back))
                                                @if rule.origin == RuleOrigin::Uploaded {
                                                    a.button.small.quiet href={"/rules/" (api::segment(&rule.id)) "/delete"} { "Delete…" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if page.items.is_empty() {
                        p.empty {
                            @if filters.any() {
                                "No rule matches these filters. " a href="/rules" { "Clear the filters" }
                            } @else if admin {
                                "No rules yet. Upload Sigma rules above, or create a custom detection from a query in "
                                a href="/hunting" { "Advanced hunting" } "."
                            } @else {
                                "No rules yet. An administrator can upload Sigma rules."
                            }
                        }
                    }
                }
                (html::pager(&back, page.next.as_deref()))
            }
        }
    };
    let mut response = ctx.page(Section::Rules, "Rules", body);
    if let Some(f) = uploading.map(|(_, f)| f).or(list.as_ref().err()) {
        *response.status_mut() = f.status;
    }
    response
}

fn filter_form(filters: &Filters) -> Markup {
    html! {
        form.filters #rule-filters method="get" action="/rules" {
            div.field {
                label for="f-q" { "Search titles" }
                input #f-q type="search" name="q" value=(filters.q()) data-search placeholder="e.g. mimikatz";
            }
            (html::choice("f-kind", "Kind", "kind", "Any kind", filters.kind(), KINDS.iter().map(|(value, label, _)| (value, label))))
            div.field {
                label for="f-enabled" { "Status" }
                select #f-enabled name="enabled" {
                    option value="" { "Enabled or disabled" }
                    option value="true" selected[filters.enabled() == "true"] { "Enabled" }
                    option value="false" selected[filters.enabled() == "false"] { "Disabled" }
                }
            }
            button type="submit" { "Filter" }
            @if filters.any() { a.button.quiet href="/rules" { "Clear" } }
        }
    }
}

/// The upload form, open and holding the refused text when the API refused it.
fn upload_form(ctx: &Ctx, uploading: Option<(&str, &Failure)>) -> Markup {
    let located = uploading.and_then(|(_, failure)| error_location(&failure.detail));
    html! {
        details.panel.create-panel #upload-rules open[uploading.is_some()] {
            summary { "Upload Sigma rules" }
            form #rule-upload method="post" action="/rules/upload" {
                (ctx.csrf())
                div.field {
                    label for="rule-yaml" { "Sigma YAML" }
                    span.hint #rule-yaml-hint {
                        "One rule, or several separated by a line holding only " code { "---" } ". "
                        "Every rule must load, or none is stored."
                    }
                    // The script puts the cursor on the error's line.
                    textarea #rule-yaml.mono name="yaml" rows="14" required spellcheck="false"
                        aria-describedby="rule-yaml-hint"
                        data-error-line=[located.map(|(line, _)| line)]
                        data-error-column=[located.map(|(_, column)| column)] {
                        // A newline right after <textarea> is dropped: this one keeps the text's own.
                        "\n" (uploading.map_or("", |(text, _)| text))
                    }
                }
                @if let Some((text, failure)) = uploading {
                    div #upload-error {
                        (html::failure_box(failure))
                        @if let Some(lines) = located.and_then(|(line, column)| excerpt(text, line, column)) {
                            pre #upload-excerpt { (lines) }
                        }
                    }
                }
                div.row {
                    button type="submit" { "Upload" }
                    // Shown by the script, which reads the chosen files into the text box.
                    span.file-pick hidden {
                        label for="rule-file" { "or load from files" }
                        input #rule-file type="file" accept=".yml,.yaml,text/yaml" multiple;
                    }
                }
            }
        }
    }
}

/// Where a YAML error is, 1-based, as the API's detail says (`… at line 8 column 4, …`).
fn error_location(detail: &str) -> Option<(usize, usize)> {
    detail.match_indices("line ").find_map(|(at, word)| {
        let (line, rest) = detail[at + word.len()..].split_once(' ')?;
        let digits: String = rest
            .strip_prefix("column ")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some((line.parse().ok()?, digits.parse().ok()?))
    })
}

/// The lines of `text` at a located error: the one before, the one, and a caret under the
/// column.
fn excerpt(text: &str, line: usize, column: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let target = lines.get(line.checked_sub(1)?)?;
    let width = line.to_string().len();
    let mut out = String::new();
    if let Some(before) = line.checked_sub(2).and_then(|i| lines.get(i)) {
        out.push_str(&format!("{:>width$} | {before}\n", line - 1));
    }
    out.push_str(&format!("{line:>width$} | {target}\n"));
    out.push_str(&format!(
        "{:>width$} | {}^",
        "",
        " ".repeat(column.saturating_sub(1))
    ));
    Some(out)
}

#[derive(Deserialize)]
pub struct Upload {
    yaml: String,
}

/// What the API answers to an upload.
#[derive(Deserialize)]
struct Uploaded {
    items: Vec<Rule>,
    /// "title: why" of rules that loaded but cannot run here (e.g. a log source not collected).
    #[serde(default)]
    inactive: Vec<String>,
}

/// The one-line notice after an upload.
fn upload_notice(titles: &[&str], inactive: &[String]) -> String {
    let mut text = match titles {
        [one] => format!("Uploaded the rule “{one}”."),
        many => format!("Uploaded {} rules: {}.", many.len(), many.join(", ")),
    };
    if !inactive.is_empty() {
        text.push_str(&format!(" Stored but inactive: {}.", inactive.join("; ")));
    }
    text
}

async fn upload(ctx: Ctx, Form(form): Form<Upload>) -> Response {
    match ctx
        .api
        .post::<Uploaded>("/api/v1/rules", json!({"yaml": form.yaml}))
        .await
    {
        Ok(done) => {
            let titles: Vec<&str> = done.items.iter().map(|r| r.title.as_str()).collect();
            html::after_change(
                "/rules?kind=uploaded",
                &upload_notice(&titles, &done.inactive),
            )
        }
        Err(f) => render(&ctx, &Filters::default(), Some((&form.yaml, &f))).await,
    }
}

#[derive(Deserialize)]
pub struct Enabled {
    enabled: String,
    back: Option<String>,
}

async fn set_enabled(ctx: Ctx, Path(id): Path<String>, Form(form): Form<Enabled>) -> Response {
    let enabled = form.enabled == "true";
    let path = format!("/api/v1/rules/{}", api::segment(&id));
    match ctx
        .api
        .patch::<Rule>(&path, json!({"enabled": enabled}))
        .await
    {
        Ok(rule) => {
            // Back to the list or page the button was on: one of ours, never elsewhere.
            let back = form
                .back
                .filter(|b| b.starts_with("/rules") && !b.contains("notice="))
                .unwrap_or_else(|| "/rules".to_string());
            let state = if rule.enabled { "enabled" } else { "disabled" };
            html::after_change(&back, &format!("“{}” {state}.", rule.title))
        }
        Err(f) => ctx.failure(Section::Rules, &f),
    }
}

async fn confirm_delete(ctx: Ctx, Path(id): Path<String>) -> Response {
    let rule = match ctx
        .api
        .get::<Rule>(&format!("/api/v1/rules/{}", api::segment(&id)))
        .await
    {
        Ok(rule) => rule,
        Err(f) => return ctx.failure(Section::Rules, &f),
    };
    Confirm {
        title: "Delete rule",
        what: html! {
            p { "Delete the rule " strong { (rule.title) } "? It stops detecting at once. "
                "Alerts it raised stay, with its name." }
        },
        action: format!("/rules/{}/delete", api::segment(&id)),
        button: "Delete rule",
        back: format!("/rules/{}", api::segment(&id)),
    }
    .page(&ctx, Section::Rules)
}

async fn delete(ctx: Ctx, Path(id): Path<String>) -> Response {
    match ctx
        .api
        .delete(&format!("/api/v1/rules/{}", api::segment(&id)))
        .await
    {
        Ok(()) => html::after_change("/rules", "Rule deleted."),
        Err(f) => ctx.failure(Section::Rules, &f),
    }
}

// ---------------------------------------------------------------------------------------------
// One rule

#[derive(Deserialize, Default)]
pub struct DetailQuery {
    notice: Option<String>,
}

/// What the rule's page shows beside the rule: a test (its range and answer) or a refused run.
#[derive(Default)]
struct Extra {
    test: Option<Tested>,
    run_failure: Option<Failure>,
}

struct Tested {
    from: String,
    to: String,
    answer: Result<TestAnswer, Failure>,
}

/// The API's answer to a test.
#[derive(Deserialize)]
struct TestAnswer {
    matches: u64,
    #[serde(default)]
    capped: bool,
    rows: Vec<Map<String, Value>>,
    /// Tables whose rows were read as records rebuilt from their columns (Windows registry and
    /// image loads): the counts there are approximate.
    #[serde(default)]
    approximate_tables: Vec<String>,
}

async fn detail(ctx: Ctx, Path(id): Path<String>, Query(q): Query<DetailQuery>) -> Response {
    rule_page(&ctx, &id, q.notice.as_deref(), Extra::default()).await
}

async fn rule_page(ctx: &Ctx, id: &str, notice: Option<&str>, extra: Extra) -> Response {
    let rule = match ctx
        .api
        .get::<Rule>(&format!("/api/v1/rules/{}", api::segment(id)))
        .await
    {
        Ok(rule) => rule,
        Err(f) => return ctx.failure(Section::Rules, &f),
    };
    let base = format!("/rules/{}", api::segment(&rule.id));
    let template = rule.alert_template.as_ref();
    let description = template
        .and_then(|t| t.get("description"))
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty());
    let mut facts = vec![
        ("Kind", html! { (kind_text(&rule)) }),
        ("Source", origin_text(&rule)),
        ("Status", enabled_status(&rule)),
        ("Severity", html::severity(rule.severity.as_str())),
    ];
    if let Some(secs) = rule.schedule_secs {
        facts.push(("Runs every", html! { (schedule_text(secs)) }));
    }
    if let Some(d) = description {
        facts.push(("Description", html! { (d) }));
    }
    if !rule.tags.is_empty() {
        facts.push(("ATT&CK and tags", tags(&rule.tags)));
    }
    if let Some(sigma_id) = &rule.sigma_id {
        facts.push(("Sigma id", html! { code { (sigma_id) } }));
    }
    if let RuleOrigin::Builtin { path } = &rule.origin {
        facts.push(("File", html! { code { (path) } }));
    }
    facts.push((
        "Created",
        html! { (html::time(&rule.created_at)) " by " (rule.created_by) },
    ));
    facts.push(("Updated", html::time(&rule.updated_at)));
    let refused = extra
        .test
        .as_ref()
        .and_then(|t| t.answer.as_ref().err())
        .or(extra.run_failure.as_ref());
    let body = html! {
        p { a href="/rules" { "← All rules" } }
        (html::notice(notice))
        @if let (Some(f), false) = (&extra.run_failure, rule.kind == RuleKind::Kql) {
            // Only custom detections have a "Run now" form to show a refusal beside.
            (html::failure_box(f))
        }
        div.cols #rule {
            div {
                div.panel {
                    (html::facts(&facts))
                }
                div.panel {
                    h2 { (if rule.kind == RuleKind::Kql { "Query" } else { "Sigma source" }) }
                    pre #rule-source { (rule.source) }
                }
            }
            div {
                div.panel {
                    h2 { "Actions" }
                    div.row {
                        a.button.small.quiet href=(api::with_query("/alerts", &[("rule_id", rule.id.as_str())])) { "Alerts from this rule" }
                        @if ctx.can(Access::Admin) {
                            (toggle(ctx, &rule, &base))
                            @if rule.origin == RuleOrigin::Uploaded {
                                a.button.small.danger href={(base) "/delete"} { "Delete…" }
                            }
                        }
                    }
                }
                @if ctx.can(Access::Analyst) {
                    (test_form(ctx, &rule, &base, extra.test.as_ref()))
                    @if rule.kind == RuleKind::Kql {
                        form.panel #rule-run method="post" action={(base) "/run"} {
                            h2 { "Run now" }
                            (ctx.csrf())
                            p.hint { "Runs the query over the stored events as its schedule would: each row becomes an alert (repeats fold into open ones)." }
                            @if let Some(f) = &extra.run_failure { (html::failure_box(f)) }
                            button type="submit" { "Run now" }
                        }
                    }
                }
            }
        }
        @if let Some(Tested { answer: Ok(answer), .. }) = &extra.test {
            (test_result(answer))
        }
    };
    let mut response = ctx.page(Section::Rules, &rule.title, body);
    if let Some(f) = refused {
        *response.status_mut() = f.status;
    }
    response
}

/// "5 minutes", "1 hour", "90 seconds".
fn schedule_text(secs: i64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn test_form(ctx: &Ctx, rule: &Rule, base: &str, tested: Option<&Tested>) -> Markup {
    html! {
        form.panel #rule-test method="post" action={(base) "/test"} {
            h2 { "Test against stored data" }
            (ctx.csrf())
            p.hint {
                @if rule.kind == RuleKind::Kql {
                    "Runs the query over the stored events in the range, without raising alerts."
                } @else {
                    "Evaluates the rule over the stored data in the range, without raising alerts: "
                    "Linux rules over agent telemetry, Windows rules over the event-log records rebuilt from their rows "
                    "(registry and image-load records only approximately: those rows keep their columns, not the whole record)."
                }
            }
            div.form-grid {
                div.field {
                    label for="test-from" { "From (UTC)" }
                    input #test-from type="text" name="from" placeholder="YYYY-MM-DD HH:MM" size="16" value=(tested.map_or("", |t| t.from.as_str()));
                }
                div.field {
                    label for="test-to" { "To (UTC)" }
                    input #test-to type="text" name="to" placeholder="YYYY-MM-DD HH:MM" size="16" value=(tested.map_or("", |t| t.to.as_str()));
                }
            }
            p.hint { "Leave both empty for everything stored." }
            @if let Some(Tested { answer: Err(f), .. }) = tested {
                div #test-error { (html::failure_box(f)) }
            }
            button type="submit" { "Test" }
        }
    }
}

fn test_result(answer: &TestAnswer) -> Markup {
    let columns = result_columns(&answer.rows);
    html! {
        section #test-result {
            h2 { "Test result" }
            p.test-summary {
                strong { (answer.matches) @if answer.capped { "+" } }
                (if answer.matches == 1 { " matching row" } else { " matching rows" })
                @if answer.capped { " (the count stopped at its limit)" }
                @if (answer.rows.len() as u64) < answer.matches { "; the first " (answer.rows.len()) " are shown." }
                @else { "." }
            }
            @if !answer.approximate_tables.is_empty() {
                p.hint #test-approximate {
                    "Approximate for " (answer.approximate_tables.join(", "))
                    ": their rows keep Defender's columns, not the whole record, so a rule reading a field they lack "
                    "(such as an image load's Signed or OriginalFileName) does not see it."
                }
            }
            @if !answer.rows.is_empty() {
                div.table-wrap {
                    table.grid #test-rows {
                        thead { tr { @for c in &columns { th { (c) } } } }
                        tbody {
                            @for row in &answer.rows {
                                tr {
                                    @for c in &columns {
                                        @let cell = row.get(c.as_str()).unwrap_or(&Value::Null);
                                        td {
                                            @if c == "Timestamp" { (html::time_text(&html::value_text(cell))) }
                                            @else { div.cell { (html::value_text(cell)) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Columns that come first in a test's rows, when present: when, where, what.
const FIRST_COLUMNS: [&str; 4] = ["Timestamp", "DeviceName", "ActionType", "FileName"];

/// The columns of a test's rows: the usual ones first, then the others in the order they
/// appear, leaving out those empty in every row.
fn result_columns(rows: &[Map<String, Value>]) -> Vec<String> {
    let filled = |c: &str| {
        rows.iter().any(|r| match r.get(c) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        })
    };
    let mut columns: Vec<String> = FIRST_COLUMNS
        .iter()
        .filter(|c| filled(c))
        .map(|c| c.to_string())
        .collect();
    for row in rows {
        for key in row.keys() {
            if !columns.contains(key) && filled(key) {
                columns.push(key.clone());
            }
        }
    }
    columns
}

#[derive(Deserialize)]
pub struct TestRange {
    from: String,
    to: String,
}

async fn test(ctx: Ctx, Path(id): Path<String>, Form(range): Form<TestRange>) -> Response {
    let answer = match (parse_time("From", &range.from), parse_time("To", &range.to)) {
        (Ok(from), Ok(to)) => {
            let path = format!("/api/v1/rules/{}/test", api::segment(&id));
            let body = json!({"from": from, "to": to, "limit": TEST_ROWS});
            ctx.api.post::<TestAnswer>(&path, body).await
        }
        (Err(message), _) | (_, Err(message)) => Err(failure(StatusCode::BAD_REQUEST, &message)),
    };
    let tested = Tested {
        from: range.from,
        to: range.to,
        answer,
    };
    let extra = Extra {
        test: Some(tested),
        ..Extra::default()
    };
    rule_page(&ctx, &id, None, extra).await
}

/// What a run raised, in a sentence.
fn run_notice(outcome: &Value) -> String {
    let count = |key: &str| outcome.get(key).and_then(Value::as_u64).unwrap_or(0);
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let mut parts = vec![plural(count("raised"), "new alert", "new alerts")];
    if count("deduplicated") > 0 {
        parts.push(format!("{} folded into open alerts", count("deduplicated")));
    }
    if count("allowed") > 0 {
        parts.push(format!(
            "{} not raised (allow indicators)",
            count("allowed")
        ));
    }
    if count("incidents_created") > 0 {
        parts.push(plural(
            count("incidents_created"),
            "new incident",
            "new incidents",
        ));
    }
    if count("refused") > 0 {
        parts.push(format!("{} refused (see the server log)", count("refused")));
    }
    format!("Ran now: {}.", parts.join(", "))
}

async fn run_now(ctx: Ctx, Path(id): Path<String>) -> Response {
    let path = format!("/api/v1/rules/{}/run", api::segment(&id));
    match ctx.api.post::<Value>(&path, json!({})).await {
        Ok(outcome) => html::after_change(
            &format!("/rules/{}", api::segment(&id)),
            &run_notice(&outcome),
        ),
        Err(f) => {
            let extra = Extra {
                run_failure: Some(f),
                ..Extra::default()
            };
            rule_page(&ctx, &id, None, extra).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(kind: &str, enabled: &str, q: &str) -> Filters {
        Filters {
            kind: Some(kind.into()),
            enabled: Some(enabled.into()),
            q: Some(q.into()),
            ..Filters::default()
        }
    }

    #[test]
    fn kinds_map_to_api_filters() {
        let api = |kind: &str| filters(kind, "", "").api().unwrap();
        assert_eq!(api(""), "/api/v1/rules?limit=100");
        assert_eq!(api("sigma"), "/api/v1/rules?kind=sigma&limit=100");
        assert_eq!(api("builtin"), "/api/v1/rules?origin=builtin&limit=100");
        assert_eq!(
            api("uploaded"),
            "/api/v1/rules?kind=sigma&origin=uploaded&limit=100"
        );
        assert_eq!(api("custom"), "/api/v1/rules?kind=kql&limit=100");
        assert_eq!(
            filters("kql'", "", "").api().unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn filters_carry_into_links_and_api_calls() {
        let f = Filters {
            cursor: Some("c1".into()),
            ..filters("custom", "false", "  lsass dump ")
        };
        assert!(f.any());
        assert_eq!(f.link(), "/rules?kind=custom&enabled=false&q=lsass+dump");
        assert_eq!(
            f.api().unwrap(),
            "/api/v1/rules?kind=kql&enabled=false&q=lsass+dump&limit=100&cursor=c1"
        );
        // Only true and false are passed on.
        let odd = filters("", "maybe", "");
        assert!(!odd.any());
        assert_eq!(odd.link(), "/rules");
    }

    #[test]
    fn attack_tags_read_as_names_and_ids() {
        assert_eq!(
            attack_tag("attack.t1059.001"),
            (
                "T1059.001".to_string(),
                Some("https://attack.mitre.org/techniques/T1059/001/".to_string())
            )
        );
        assert_eq!(
            attack_tag("attack.t1003"),
            (
                "T1003".to_string(),
                Some("https://attack.mitre.org/techniques/T1003/".to_string())
            )
        );
        assert_eq!(
            attack_tag("attack.g0016"),
            (
                "G0016".to_string(),
                Some("https://attack.mitre.org/groups/G0016/".to_string())
            )
        );
        assert_eq!(
            attack_tag("attack.s0002"),
            (
                "S0002".to_string(),
                Some("https://attack.mitre.org/software/S0002/".to_string())
            )
        );
        assert_eq!(
            attack_tag("attack.defense-evasion"),
            ("Defense evasion".to_string(), None)
        );
        assert_eq!(
            attack_tag("attack.credential_access"),
            ("Credential access".to_string(), None)
        );
        // Not quite an id: shown as a name, never linked.
        assert_eq!(attack_tag("attack.t10590"), ("T10590".to_string(), None));
        assert_eq!(attack_tag("attack.g0016.001").1, None);
        assert_eq!(
            attack_tag("cve.2021-44228"),
            ("cve.2021-44228".to_string(), None)
        );
        assert_eq!(attack_tag("attack."), (String::new(), None));
    }

    #[test]
    fn yaml_errors_are_located_and_shown() {
        let detail = "Baseline (untitled): YAML parse error: did not find expected key at line 3 column 4, \
                      while parsing a block mapping at line 2 column 3";
        assert_eq!(error_location(detail), Some((3, 4)));
        assert_eq!(error_location("Unknown modifier 'foo'"), None);
        assert_eq!(error_location("at line x column 2"), None);
        let text = "a: 1\nb:\n   c: 2\n";
        assert_eq!(
            excerpt(text, 3, 4).as_deref(),
            Some("2 | b:\n3 |    c: 2\n  |    ^")
        );
        assert_eq!(excerpt(text, 1, 1).as_deref(), Some("1 | a: 1\n  | ^"));
        assert_eq!(excerpt(text, 4, 1), None);
        assert_eq!(excerpt(text, 0, 1), None);
    }

    #[test]
    fn upload_notices() {
        assert_eq!(upload_notice(&["One"], &[]), "Uploaded the rule “One”.");
        assert_eq!(
            upload_notice(&["A", "B"], &["B: no such log source".to_string()]),
            "Uploaded 2 rules: A, B. Stored but inactive: B: no such log source."
        );
    }

    #[test]
    fn run_notices() {
        assert_eq!(run_notice(&json!({"raised": 0})), "Ran now: 0 new alerts.");
        assert_eq!(
            run_notice(
                &json!({"raised": 1, "deduplicated": 2, "incidents_created": 1, "refused": 0})
            ),
            "Ran now: 1 new alert, 2 folded into open alerts, 1 new incident."
        );
    }

    #[test]
    fn schedules_read_in_their_largest_whole_unit() {
        assert_eq!(schedule_text(60), "1 minute");
        assert_eq!(schedule_text(300), "5 minutes");
        assert_eq!(schedule_text(90), "90 seconds");
        assert_eq!(schedule_text(7200), "2 hours");
        assert_eq!(schedule_text(86_400), "1 day");
    }

    #[test]
    fn result_columns_put_the_usual_first_and_drop_empty_ones() {
        let rows: Vec<Map<String, Value>> = vec![
            serde_json::from_value(
                json!({"Z": 1, "Empty": "", "Timestamp": "t", "DeviceName": null}),
            )
            .unwrap(),
            serde_json::from_value(json!({"A": "x", "Null": null, "Z": 2, "DeviceName": "web01"}))
                .unwrap(),
        ];
        assert_eq!(
            result_columns(&rows),
            vec!["Timestamp", "DeviceName", "Z", "A"]
        );
        assert!(result_columns(&[]).is_empty());
    }
}
