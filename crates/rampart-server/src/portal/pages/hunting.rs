//! Advanced hunting: a KQL editor, results as a paged table with a chart and exports, the
//! schema to browse, the viewer's saved queries and history, and a custom detection made from
//! the query.
//!
//! Results are not kept on the server: a page of results, an export and a chart each come from
//! running the query again (through `POST /api/v1/hunting/query`), so the portal holds no state
//! between requests. A query whose rows come in no fixed order may therefore page differently
//! between runs; `sort by` makes paging exact.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use rampart_state::{HistoryEntry, Page, Rule, SavedQuery, Severity};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{self, Answer, Failure};
use crate::portal::chart::{self, Request};
use crate::portal::html::{self, Ctx, Form, Query, Section};
use crate::portal::text::thousands;

/// Rows per page of results.
const PAGE_ROWS: usize = 100;
/// History entries listed (all the API keeps).
const HISTORY_SHOWN: usize = rampart_state::QUERY_HISTORY_MAX;
/// How often a new custom detection may run, in seconds, with the words for it.
const SCHEDULES: [(i64, &str); 6] = [
    (900, "Every 15 minutes"),
    (3600, "Every hour"),
    (3 * 3600, "Every 3 hours"),
    (12 * 3600, "Every 12 hours"),
    (86_400, "Every day"),
    (7 * 86_400, "Every week"),
];
const DEFAULT_SCHEDULE: i64 = 3600;
/// Beside the rule form when the API found a mistake in the query.
const QUERY_MISTAKE: &str =
    "The query has a mistake: it is marked in the editor and explained below.";

pub fn routes() -> Router<App> {
    Router::new()
        .route("/hunting", get(show).post(run))
        .route("/hunting/export", post(export))
        .route("/hunting/save", post(save))
        .route("/hunting/saved/{id}/delete", post(delete_saved))
        .route("/hunting/detection", post(create_detection))
}

/// The answer of `POST /api/v1/hunting/query`.
#[derive(Deserialize)]
struct Results {
    columns: Vec<String>,
    column_types: Vec<String>,
    rows: Vec<Vec<Value>>,
    truncated: bool,
    chart: Option<String>,
    elapsed_ms: u64,
}

/// The answer of `GET /api/v1/hunting/schema`.
#[derive(Deserialize)]
struct Schema {
    tables: Vec<SchemaTable>,
}

#[derive(Deserialize)]
struct SchemaTable {
    name: String,
    columns: Vec<SchemaColumn>,
}

#[derive(Deserialize)]
struct SchemaColumn {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// What the side panels show, read once per page.
struct Lists {
    schema: Answer<Schema>,
    history: Answer<Page<HistoryEntry>>,
    saved: Answer<Page<SavedQuery>>,
}

impl Lists {
    async fn fetch(ctx: &Ctx) -> Lists {
        let limit = HISTORY_SHOWN.to_string();
        let saved_limit = rampart_state::SAVED_QUERIES_MAX.to_string();
        let history_path = api::with_query("/api/v1/hunting/history", &[("limit", &limit)]);
        let saved_path = api::with_query("/api/v1/hunting/saved", &[("limit", &saved_limit)]);
        let (schema, history, saved) = tokio::join!(
            ctx.api.get::<Schema>("/api/v1/hunting/schema"),
            ctx.api.get::<Page<HistoryEntry>>(&history_path),
            ctx.api.get::<Page<SavedQuery>>(&saved_path),
        );
        Lists {
            schema,
            history,
            saved,
        }
    }
}

/// Every form on the page posts these fields (one form: the editor's text goes with each
/// button); each handler reads the ones it needs.
#[derive(Deserialize, Default)]
pub struct HuntForm {
    #[serde(default)]
    query: String,
    page: Option<String>,
    /// The name to save the query as.
    name: Option<String>,
    format: Option<String>,
    #[serde(flatten)]
    detection: DetectionForm,
}

/// The fields of "Create detection rule", kept as typed so that a mistake can be shown with
/// the form as it was.
#[derive(Deserialize, Default, Clone)]
pub struct DetectionForm {
    title: Option<String>,
    severity: Option<String>,
    schedule: Option<String>,
    tactic: Option<String>,
    techniques: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct Load {
    /// A history entry or saved query to load into the editor.
    history: Option<String>,
    saved: Option<String>,
    notice: Option<String>,
}

/// What the page shows below the editor.
enum Outcome {
    Nothing,
    Ran { results: Results, page: usize },
    Failed(Failure),
}

/// One rendering of the page.
struct View {
    query: String,
    save_name: String,
    outcome: Outcome,
    notice: Option<String>,
    /// A problem with loading or saving (shown above the editor).
    warning: Option<String>,
    detection: DetectionForm,
    /// Shown open (after a mistake in it), with this error.
    detection_open: bool,
    detection_error: Option<String>,
}

impl View {
    fn of(query: String) -> View {
        View {
            query,
            save_name: String::new(),
            outcome: Outcome::Nothing,
            notice: None,
            warning: None,
            detection: DetectionForm::default(),
            detection_open: false,
            detection_error: None,
        }
    }
}

/// `GET /hunting`: the editor with the query asked for (a saved one, one from the history),
/// or else the last one run.
async fn show(ctx: Ctx, Query(load): Query<Load>) -> Response {
    let lists = Lists::fetch(&ctx).await;
    let history = lists
        .history
        .as_ref()
        .map(|p| p.items.as_slice())
        .unwrap_or(&[]);
    let saved = lists
        .saved
        .as_ref()
        .map(|p| p.items.as_slice())
        .unwrap_or(&[]);
    let mut view = View::of(String::new());
    if let Some(id) = &load.saved {
        match saved.iter().find(|s| &s.id == id) {
            Some(s) => {
                view.query = s.query.clone();
                view.save_name = s.name.clone();
            }
            None => view.warning = Some("That saved query no longer exists.".into()),
        }
    } else if let Some(id) = &load.history {
        match history.iter().find(|h| &h.id == id) {
            Some(h) => view.query = h.query.clone(),
            None => {
                view.warning = Some("That query is no longer in your history.".into());
            }
        }
    } else if let Some(last) = history.first() {
        view.query = last.query.clone();
    }
    view.notice = load.notice;
    render(&ctx, &lists, &view, StatusCode::OK)
}

/// `POST /hunting`: runs the query and shows a page of its results (or where it went wrong).
async fn run(ctx: Ctx, Form(form): Form<HuntForm>) -> Response {
    let page = match page_number(form.page.as_deref()) {
        Ok(page) => page,
        Err(why) => return html::plain_error(StatusCode::BAD_REQUEST, &why),
    };
    let mut view = View::of(form.query);
    let mut status = StatusCode::OK;
    if view.query.trim().is_empty() {
        view.warning = Some("Write a query first, then run it.".into());
    } else {
        view.outcome = match hunt(&ctx, &view.query).await {
            Ok(results) => Outcome::Ran { results, page },
            Err(failure) => {
                status = failure.status;
                Outcome::Failed(failure)
            }
        };
    }
    // The lists are read after the run, so the history already shows it.
    let lists = Lists::fetch(&ctx).await;
    render(&ctx, &lists, &view, status)
}

async fn hunt(ctx: &Ctx, query: &str) -> Answer<Results> {
    ctx.api
        .post("/api/v1/hunting/query", json!({ "query": query }))
        .await
}

/// `POST /hunting/export`: every row of the query (up to the server's row limit) as a CSV or
/// JSON download.
async fn export(ctx: Ctx, Form(form): Form<HuntForm>) -> Response {
    let format = match form.format.as_deref() {
        Some("csv") => Export::Csv,
        Some("json") => Export::Json,
        _ => return html::plain_error(StatusCode::BAD_REQUEST, "format: expected csv or json."),
    };
    match hunt(&ctx, &form.query).await {
        Ok(results) => download(&results, format),
        Err(failure) => {
            let status = failure.status;
            let mut view = View::of(form.query);
            view.outcome = Outcome::Failed(failure);
            let lists = Lists::fetch(&ctx).await;
            render(&ctx, &lists, &view, status)
        }
    }
}

/// `POST /hunting/save`: saves the editor's query under the name given (replacing the query of
/// that name) and opens it.
async fn save(ctx: Ctx, Form(form): Form<HuntForm>) -> Response {
    let name = form.name.as_deref().unwrap_or("").trim().to_string();
    let problem = if name.is_empty() {
        Some((
            StatusCode::BAD_REQUEST,
            "Type a name beside Save to save the query.".to_string(),
        ))
    } else if form.query.trim().is_empty() {
        Some((
            StatusCode::BAD_REQUEST,
            "There is no query to save: the editor is empty.".to_string(),
        ))
    } else {
        let body = json!({ "name": name, "query": form.query });
        match ctx
            .api
            .post::<SavedQuery>("/api/v1/hunting/saved", body)
            .await
        {
            Ok(saved) => {
                let location = api::with_query("/hunting", &[("saved", &saved.id)]);
                return html::after_change(&location, &format!("Saved as “{}”.", saved.name));
            }
            Err(failure) => Some((failure.status, failure.detail)),
        }
    };
    let mut view = View::of(form.query);
    view.save_name = name;
    let mut status = StatusCode::OK;
    if let Some((code, why)) = problem {
        status = code;
        view.warning = Some(why);
    }
    let lists = Lists::fetch(&ctx).await;
    render(&ctx, &lists, &view, status)
}

/// `POST /hunting/saved/{id}/delete`.
async fn delete_saved(ctx: Ctx, Path(id): Path<String>) -> Response {
    let path = format!("/api/v1/hunting/saved/{}", api::segment(&id));
    match ctx.api.delete(&path).await {
        Ok(()) => html::after_change("/hunting", "Saved query deleted."),
        Err(failure) => ctx.failure(Section::Hunting, &failure),
    }
}

/// `POST /hunting/detection`: a custom detection from the editor's query (admins). A mistake in
/// the query is marked in the editor; any other stays beside the form, filled in as it was.
async fn create_detection(ctx: Ctx, Form(form): Form<HuntForm>) -> Response {
    let mut view = View::of(form.query);
    view.detection = form.detection;
    view.detection_open = true;
    let mut status = StatusCode::BAD_REQUEST;
    match detection_body(&view.detection, &view.query) {
        Err(why) => view.detection_error = Some(why),
        Ok(body) => {
            match ctx
                .api
                .post::<Rule>("/api/v1/custom-detections", body)
                .await
            {
                Ok(rule) => {
                    let every = schedule_words(rule.schedule_secs.unwrap_or(DEFAULT_SCHEDULE));
                    return html::after_change(
                        &format!("/rules/{}", api::segment(&rule.id)),
                        &format!(
                            "Custom detection created. It runs {}.",
                            every.to_lowercase()
                        ),
                    );
                }
                // Only admins see the form: anyone else gets the API's refusal as a page.
                Err(failure) if failure.status == StatusCode::FORBIDDEN => {
                    return ctx.failure(Section::Hunting, &failure);
                }
                Err(failure) => {
                    status = failure.status;
                    if failure.problem.get("line").is_some() {
                        view.detection_error = Some(QUERY_MISTAKE.into());
                        view.outcome = Outcome::Failed(failure);
                    } else {
                        view.detection_error = Some(failure.detail);
                    }
                }
            }
        }
    }
    let lists = Lists::fetch(&ctx).await;
    render(&ctx, &lists, &view, status)
}

/// The `POST /api/v1/custom-detections` body of the form, or what is wrong with it.
fn detection_body(form: &DetectionForm, query: &str) -> Result<Value, String> {
    let title = form.title.as_deref().unwrap_or("").trim();
    if title.is_empty() {
        return Err("Give the rule a name: it is the title of every alert it raises.".into());
    }
    if query.trim().is_empty() {
        return Err("Write the query the rule runs first.".into());
    }
    let severity: Severity = match form.severity.as_deref().filter(|s| !s.is_empty()) {
        None => Severity::Medium,
        Some(s) => s
            .parse()
            .map_err(|_| format!("Severity: unknown value “{s}”."))?,
    };
    let schedule = match form.schedule.as_deref().filter(|s| !s.is_empty()) {
        None => DEFAULT_SCHEDULE,
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| format!("Schedule: expected a number of seconds, got “{s}”."))?,
    };
    let tactics: Vec<&str> = match form.tactic.as_deref().filter(|s| !s.is_empty()) {
        None => vec![],
        Some(t) => match rampart_schema::attack::TACTICS.iter().find(|x| x.name == t) {
            Some(tactic) => vec![tactic.name],
            None => return Err(format!("ATT&CK tactic: unknown tactic “{t}”.")),
        },
    };
    let techniques = techniques(form.techniques.as_deref().unwrap_or(""))?;
    Ok(json!({
        "title": title,
        "query": query,
        "schedule_secs": schedule,
        "severity": severity,
        "description": form.description.as_deref().unwrap_or("").trim(),
        "tactics": tactics,
        "techniques": techniques,
    }))
}

/// ATT&CK technique ids from a list separated by commas or spaces (`t1059.001, T1003`),
/// upper-cased.
fn techniques(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for item in text
        .split([',', ' ', ';', '\n', '\t'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let id = item.to_uppercase();
        let valid = match id.strip_prefix('T') {
            Some(rest) => {
                let (main, sub) = rest.split_once('.').unwrap_or((rest, ""));
                main.len() == 4
                    && main.bytes().all(|b| b.is_ascii_digit())
                    && ((sub.is_empty() && !rest.contains('.'))
                        || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
            }
            None => false,
        };
        if !valid {
            return Err(format!(
                "ATT&CK techniques: “{item}” is not a technique id such as T1059 or T1059.001."
            ));
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn schedule_words(secs: i64) -> String {
    SCHEDULES
        .iter()
        .find(|(s, _)| *s == secs)
        .map(|(_, words)| words.to_string())
        .unwrap_or_else(|| format!("Every {secs} seconds"))
}

/// `page` of a results form: 1 when absent.
fn page_number(text: Option<&str>) -> Result<usize, String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(1),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("page: expected a whole number from 1, got “{t}”.")),
        },
    }
}

/// Whether the query summarizes (its result may be a series over time worth a chart).
fn summarizes(query: &str) -> bool {
    query
        .split('|')
        .any(|op| op.trim_start().starts_with("summarize"))
}

// ---------------------------------------------------------------------------------------------
// The page.

fn render(ctx: &Ctx, lists: &Lists, view: &View, status: StatusCode) -> Response {
    let body = html! {
        (html::notice(view.notice.as_deref()))
        div.hunt {
            div.hunt-main {
                (editor(ctx, view))
                @match &view.outcome {
                    Outcome::Nothing => (intro()),
                    Outcome::Failed(failure) => (query_error(failure, &view.query)),
                    Outcome::Ran { results, page } => (results_section(ctx, view, results, *page)),
                }
            }
            aside.hunt-side aria-label="Schema, saved queries and history" {
                (schema_panel(&lists.schema))
                (saved_panel(ctx, &lists.saved))
                (history_panel(&lists.history))
            }
        }
    };
    let mut response = ctx.page(Section::Hunting, "Advanced hunting", body);
    *response.status_mut() = status;
    response
}

/// The editor form. Every button posts the editor's text: run, save, create a rule.
fn editor(ctx: &Ctx, view: &View) -> Markup {
    let at = match &view.outcome {
        Outcome::Failed(failure) => location(failure),
        _ => None,
    };
    // A browser drops one newline right after <textarea>: a query that starts with one keeps it.
    let lead = if view.query.starts_with(['\n', '\r']) {
        "\n"
    } else {
        ""
    };
    html! {
        form #hunt method="post" action="/hunting" {
            (ctx.csrf())
            @if let Some(warning) = &view.warning {
                div.notice.error role="alert" { (warning) }
            }
            div.field {
                div.spread {
                    label for="query" { "Query (KQL)" }
                    span.muted.hint { kbd { "Ctrl" } "+" kbd { "Enter" } " runs the query" }
                }
                div.editor data-kql-editor {
                    textarea #query name="query" rows="10" spellcheck="false" autocomplete="off"
                        autocapitalize="off" aria-describedby=[at.map(|_| "query-error")]
                        placeholder="DeviceProcessEvents | where Timestamp > ago(7d) | take 100"
                        data-error-line=[at.map(|a| a.0)] data-error-column=[at.map(|a| a.1)] {
                        (lead) (view.query)
                    }
                }
            }
            div.hunt-actions {
                button #run type="submit" { "Run query" }
                div.save-as {
                    label.visually-hidden for="save-name" { "Name to save the query as" }
                    input #save-name type="text" name="name" value=(view.save_name) maxlength="128"
                        placeholder="Name to save as" data-enter-clicks="save";
                    button #save.quiet type="submit" formaction="/hunting/save" { "Save" }
                }
            }
            @if ctx.can(Access::Admin) {
                (detection_panel(view))
            }
        }
    }
}

/// "Create detection rule": the editor's query run on a schedule, each row an alert.
fn detection_panel(view: &View) -> Markup {
    let d = &view.detection;
    let severity = d.severity.as_deref().unwrap_or("medium");
    let schedule = d
        .schedule
        .as_deref()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(DEFAULT_SCHEDULE);
    let tactic = d.tactic.as_deref().unwrap_or("");
    html! {
        details #new-detection .panel.create-panel open[view.detection_open] {
            summary { "Create detection rule from this query" }
            p.muted {
                "The query runs on the schedule below; every row it returns becomes an alert. "
                "Include Timestamp and DeviceName so that alerts carry their time and device."
            }
            @if let Some(error) = &view.detection_error {
                div.notice.error role="alert" { (error) }
            }
            div.form-grid {
                div.field {
                    label for="rule-title" { "Name" }
                    input #rule-title type="text" name="title" maxlength="512"
                        value=(d.title.as_deref().unwrap_or("")) data-enter-clicks="create-rule";
                }
                div.field {
                    label for="rule-severity" { "Severity" }
                    select #rule-severity name="severity" {
                        @for s in Severity::ALL {
                            option value=(s.as_str()) selected[s.as_str() == severity] { (s.as_str()) }
                        }
                    }
                }
                div.field {
                    label for="rule-schedule" { "Runs" }
                    select #rule-schedule name="schedule" {
                        @for (secs, words) in SCHEDULES {
                            option value=(secs) selected[secs == schedule] { (words) }
                        }
                    }
                }
                div.field {
                    label for="rule-tactic" { "ATT&CK tactic" }
                    select #rule-tactic name="tactic" {
                        option value="" selected[tactic.is_empty()] { "None" }
                        @for t in rampart_schema::attack::TACTICS {
                            option value=(t.name) selected[t.name == tactic] { (t.name) " (" (t.id) ")" }
                        }
                    }
                }
                div.field {
                    label for="rule-techniques" { "ATT&CK techniques" }
                    input #rule-techniques type="text" name="techniques" placeholder="T1059.001, T1003"
                        value=(d.techniques.as_deref().unwrap_or("")) data-enter-clicks="create-rule";
                }
                div.field.wide {
                    label for="rule-description" { "Description" }
                    textarea #rule-description name="description" rows="2" maxlength="8192" {
                        (d.description.as_deref().unwrap_or(""))
                    }
                }
            }
            button #create-rule type="submit" formaction="/hunting/detection" { "Create detection rule" }
        }
    }
}

/// Before anything ran: what to do.
fn intro() -> Markup {
    html! {
        div.panel.hunt-intro {
            p { "Write a query over the hunting tables and run it. Click a table or column in the schema to insert its name." }
            p.muted {
                "For example: " code { "DeviceProcessEvents | where FileName =~ \"powershell.exe\" | take 100" }
                ", or a chart: " code { "DeviceProcessEvents | summarize count() by bin(Timestamp, 1d) | render timechart" }
            }
        }
    }
}

/// The 1-based line and column a KQL error points at.
fn location(failure: &Failure) -> Option<(usize, usize)> {
    let number = |key: &str| {
        failure
            .problem
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
    };
    Some((number("line")?, number("column")?))
}

/// The error's message without the location the API's report starts with
/// (`error at line 2, column 3: unknown operator` → `unknown operator`).
fn message_of(detail: &str) -> &str {
    let first = detail.lines().next().unwrap_or(detail);
    if let Some(rest) = first.strip_prefix("error at line ")
        && let Some((_, message)) = rest.split_once(": ")
    {
        return message;
    }
    first.strip_prefix("error: ").unwrap_or(first)
}

/// The line `line` of `query` split around the token at `column` (1-based, in characters):
/// a word, or one character, or a space past the end of the line.
fn around(query: &str, line: usize, column: usize) -> Option<(String, String, String)> {
    let text: Vec<char> = query.lines().nth(line.checked_sub(1)?)?.chars().collect();
    let start = column.saturating_sub(1).min(text.len());
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let end = if start >= text.len() {
        start
    } else if word(text[start]) {
        start + text[start..].iter().take_while(|c| word(**c)).count()
    } else {
        start + 1
    };
    let mark: String = text[start..end].iter().collect();
    Some((
        text[..start].iter().collect(),
        if mark.is_empty() { " ".into() } else { mark },
        text[end..].iter().collect(),
    ))
}

/// A failed run: what went wrong and, for a mistake in the text, where (marked).
fn query_error(failure: &Failure, query: &str) -> Markup {
    let at = location(failure);
    let kind = failure.problem.get("kind").and_then(Value::as_str);
    let title = match (failure.status, kind) {
        (StatusCode::REQUEST_TIMEOUT, _) => "The query ran past its time limit",
        (_, Some("syntax")) => "Syntax error",
        (_, Some("semantic")) => "Query error",
        (_, Some("unsupported")) => "Not supported",
        (_, Some(_)) => "The query failed",
        _ => "The query was refused",
    };
    let suggestion = failure.problem.get("suggestion").and_then(Value::as_str);
    let context =
        at.and_then(|(line, column)| around(query, line, column).map(|parts| (line, parts)));
    html! {
        div #query-error .notice.error role="alert" {
            p.error-title {
                strong { (title) }
                @if let Some((line, column)) = at { " at line " (line) ", column " (column) }
            }
            p { (message_of(&failure.detail)) }
            @if let Some((line, (before, mark, after))) = context {
                pre.error-context {
                    span.line-number aria-hidden="true" { (line) }
                    (before) span.k-error { (mark) } (after)
                }
            }
            @if let Some(s) = suggestion {
                p { "Did you mean " code { (s) } "?" }
            }
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

fn is_numeric(kind: &str) -> bool {
    matches!(kind, "long" | "int" | "real" | "double" | "decimal")
}

/// The results: their size and time, exports, a chart when there is one, a page of rows.
fn results_section(ctx: &Ctx, view: &View, results: &Results, page: usize) -> Markup {
    let total = results.rows.len();
    let pages = total.div_ceil(PAGE_ROWS).max(1);
    let page = page.min(pages);
    let first = (page - 1) * PAGE_ROWS;
    let shown = &results.rows[first..(first + PAGE_ROWS).min(total)];
    let request = match results.chart.as_deref() {
        Some(render) => Some(Request::Render(render)),
        None if summarizes(&view.query) => Some(Request::SummaryOverTime),
        None => None,
    };
    // Columns with long values wrap (at a readable width); the others stay on one line.
    let long: Vec<bool> = (0..results.columns.len())
        .map(|i| {
            shown.iter().any(|row| {
                row.get(i)
                    .is_some_and(|v| html::value_text(v).chars().count() > 40)
            })
        })
        .collect();
    let drawn = request.and_then(|r| {
        chart::from_results(&results.columns, &results.column_types, &results.rows, r)
    });
    let elapsed = if results.elapsed_ms < 1000 {
        format!("{} ms", results.elapsed_ms)
    } else {
        format!("{:.1} s", results.elapsed_ms as f64 / 1000.0)
    };
    let rerun = |page: usize, label: &str| {
        html! {
            form.inline method="post" action="/hunting" {
                (ctx.csrf())
                input type="hidden" name="query" value=(view.query);
                input type="hidden" name="page" value=(page);
                button.small.quiet type="submit" { (label) }
            }
        }
    };
    html! {
        section #results-section aria-label="Results" {
            div.results-bar {
                p.results-summary role="status" {
                    strong { (plural(total, "row", "rows")) }
                    span.muted { " in " (elapsed) }
                }
                form.inline.export method="post" action="/hunting/export" {
                    (ctx.csrf())
                    input type="hidden" name="query" value=(view.query);
                    span.muted { "Export all rows:" }
                    " "
                    button.small.quiet #export-csv type="submit" name="format" value="csv" { "CSV" }
                    " "
                    button.small.quiet #export-json type="submit" name="format" value="json" { "JSON" }
                }
            }
            @if results.truncated {
                div.notice.warn #truncated role="status" {
                    "Only the first " (thousands(total)) " rows came back: the query returned more. "
                    "Narrow it (where, summarize, take) to see everything."
                }
            }
            @if let Some(drawn) = &drawn {
                figure.panel.chart-box {
                    (chart::svg(drawn, "chart"))
                    @if drawn.series_left_out > 0 || drawn.categories_left_out > 0 {
                        figcaption.muted {
                            @if drawn.series_left_out > 0 {
                                "The " (plural(drawn.series_left_out, "smallest series is", "smallest series are")) " not drawn. "
                            }
                            @if drawn.categories_left_out > 0 {
                                "Only the first " (chart::MAX_CATEGORIES) " categories are drawn."
                            }
                        }
                    }
                }
            } @else if let Some(Request::Render(render)) = request {
                p.muted { "Nothing to draw as " (render) ": the result needs a numeric column and a row with a value." }
            }
            @if total == 0 {
                div.table-wrap {
                    p.empty { "No rows matched. Widen the time range or loosen the filters." }
                }
            } @else {
                div.table-wrap.results-wrap {
                    table #results .grid {
                        thead {
                            tr {
                                @for (i, name) in results.columns.iter().enumerate() {
                                    @let kind = results.column_types.get(i).map_or("", String::as_str);
                                    th scope="col" class=[is_numeric(kind).then_some("num")] title=(kind) { (name) }
                                }
                            }
                        }
                        tbody {
                            @for row in shown {
                                tr {
                                    @for (i, value) in row.iter().enumerate() {
                                        (cell(value, results.column_types.get(i).map_or("", String::as_str), long.get(i) == Some(&true)))
                                    }
                                }
                            }
                        }
                    }
                }
                @if pages > 1 {
                    nav.pager.results-pager aria-label="Result pages" {
                        @if page > 1 { (rerun(page - 1, "← Previous")) }
                        span.muted {
                            "Rows " (thousands(first + 1)) "–" (thousands(first + shown.len()))
                            " of " (thousands(total)) " · page " (page) " of " (pages)
                        }
                        @if page < pages { (rerun(page + 1, "Next →")) }
                    }
                }
            }
        }
    }
}

/// A result cell: times as times, numbers aligned, dynamic values as code, the rest as text;
/// a cell of a column with `long` values wraps.
fn cell(value: &Value, kind: &str, long: bool) -> Markup {
    let text = html::value_text(value);
    let class = if long { "wrap" } else { "nowrap" };
    html! {
        @match kind {
            "datetime" => td.nowrap { (html::time_text(&text)) },
            k if is_numeric(k) => td.num { (text) },
            "dynamic" => td class=(class) { code.dynamic { (text) } },
            _ => td class=(class) { (text) },
        }
    }
}

/// The tables and their columns, each table folded; with script, a name inserts itself at the
/// cursor.
fn schema_panel(schema: &Answer<Schema>) -> Markup {
    html! {
        section.panel.schema aria-labelledby="schema-heading" {
            h2 #schema-heading { "Schema" }
            @match schema {
                Err(failure) => (html::failure_box(failure)),
                Ok(schema) => {
                    div.schema-filter hidden {
                        label.visually-hidden for="schema-filter" { "Filter tables and columns" }
                        input #schema-filter type="search" placeholder="Filter tables and columns";
                    }
                    div.schema-tables {
                        @for table in &schema.tables {
                            details.schema-table {
                                summary {
                                    code.insertable data-insert=(table.name) { (word_breaks(&table.name)) }
                                    span.count.muted { (table.columns.len()) }
                                }
                                ul.schema-columns {
                                    @for column in &table.columns {
                                        li {
                                            code.insertable data-insert=(column.name) { (word_breaks(&column.name)) }
                                            span.col-type { (column.kind) }
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

/// A CamelCase name that may wrap between its words (`Device<wbr>Process<wbr>Events`) rather
/// than anywhere, in the narrow schema panel.
fn word_breaks(name: &str) -> Markup {
    let mut words: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut previous: Option<char> = None;
    for (i, c) in name.char_indices() {
        if c.is_uppercase() && previous.is_some_and(char::is_lowercase) {
            words.push(&name[start..i]);
            start = i;
        }
        previous = Some(c);
    }
    words.push(&name[start..]);
    html! {
        @for (i, word) in words.iter().enumerate() {
            @if i > 0 { wbr; }
            (word)
        }
    }
}

/// A query on one line (whitespace collapsed), shortened to `max` characters, for lists.
fn preview(query: &str, max: usize) -> String {
    let line = query.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn saved_panel(ctx: &Ctx, saved: &Answer<Page<SavedQuery>>) -> Markup {
    html! {
        section.panel.saved-queries aria-labelledby="saved-heading" {
            h2 #saved-heading { "Saved queries" }
            @match saved {
                Err(failure) => (html::failure_box(failure)),
                Ok(page) if page.items.is_empty() => {
                    p.muted.small { "None yet. Type a name beside Save under the editor to keep a query here." }
                }
                Ok(page) => {
                    ul #saved .query-list {
                        @for s in &page.items {
                            li {
                                a.query-link href=(api::with_query("/hunting", &[("saved", &s.id)])) title=(preview(&s.query, 300)) { (s.name) }
                                form.inline method="post" action={"/hunting/saved/" (api::segment(&s.id)) "/delete"}
                                    data-confirm={"Delete the saved query “" (s.name) "”?"} {
                                    (ctx.csrf())
                                    button.small.quiet.delete type="submit" aria-label={"Delete saved query " (s.name)} { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn history_panel(history: &Answer<Page<HistoryEntry>>) -> Markup {
    html! {
        section.panel.history aria-labelledby="history-heading" {
            h2 #history-heading { "History" }
            @match history {
                Err(failure) => (html::failure_box(failure)),
                Ok(page) if page.items.is_empty() => {
                    p.muted.small { "The queries you run appear here, newest first." }
                }
                Ok(page) => {
                    ol #history .query-list {
                        @for entry in &page.items {
                            li {
                                a.query-link href=(api::with_query("/hunting", &[("history", &entry.id)])) title=(preview(&entry.query, 300)) {
                                    code { (preview(&entry.query, 90)) }
                                }
                                span.when { (html::time(&entry.ran_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exports.

#[derive(Clone, Copy)]
enum Export {
    Csv,
    Json,
}

fn download(results: &Results, format: Export) -> Response {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let (body, media_type, extension) = match format {
        Export::Csv => (csv(results), "text/csv; charset=utf-8", "csv"),
        Export::Json => (json_rows(results), "application/json", "json"),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"hunting-{stamp}.{extension}\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    // Hunting results are evidence: not for shared caches or the browser's.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// RFC 4180 CSV with a header row. Text cells that a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, tab or carriage return: event data is attacker-chosen)
/// get a leading `'`.
fn csv(results: &Results) -> String {
    let field = |text: &str, is_text: bool| {
        let guarded = if is_text && text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{text}")
        } else {
            text.to_string()
        };
        if guarded.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", guarded.replace('"', "\"\""))
        } else {
            guarded
        }
    };
    let mut out = String::new();
    let header: Vec<String> = results.columns.iter().map(|c| field(c, true)).collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for row in &results.rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let kind = results.column_types.get(i).map_or("", String::as_str);
                field(
                    &html::value_text(v),
                    matches!(kind, "string" | "dynamic" | ""),
                )
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A JSON array of one object per row, columns in the result's order.
fn json_rows(results: &Results) -> String {
    let key = |name: &String| serde_json::to_string(name).unwrap_or_default();
    let keys: Vec<String> = results.columns.iter().map(key).collect();
    let mut out = String::from("[");
    for (r, row) in results.rows.iter().enumerate() {
        out.push_str(if r == 0 { "\n{" } else { ",\n{" });
        for (i, (k, v)) in keys.iter().zip(row).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
    }
    out.push_str("\n]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(columns: &[&str], types: &[&str], rows: Vec<Vec<Value>>) -> Results {
        Results {
            columns: columns.iter().map(|s| s.to_string()).collect(),
            column_types: types.iter().map(|s| s.to_string()).collect(),
            rows,
            truncated: false,
            chart: None,
            elapsed_ms: 1,
        }
    }

    #[test]
    fn pages_are_whole_numbers_from_one() {
        assert_eq!(page_number(None), Ok(1));
        assert_eq!(page_number(Some(" ")), Ok(1));
        assert_eq!(page_number(Some("3")), Ok(3));
        assert!(page_number(Some("0")).is_err());
        assert!(page_number(Some("-1")).is_err());
        assert!(page_number(Some("two")).unwrap_err().contains("two"));
    }

    #[test]
    fn errors_are_marked_at_their_token() {
        let query = "DeviceProcessEvents\n| wher x";
        assert_eq!(
            around(query, 2, 3),
            Some(("| ".into(), "wher".into(), " x".into()))
        );
        assert_eq!(
            around(query, 2, 1),
            Some(("".into(), "|".into(), " wher x".into()))
        );
        // Past the end of the line: a space is marked; no such line: nothing.
        assert_eq!(
            around(query, 2, 9),
            Some(("| wher x".into(), " ".into(), "".into()))
        );
        assert_eq!(around(query, 3, 1), None);
        assert_eq!(around(query, 0, 1), None);
        // Columns count characters, not bytes.
        assert_eq!(
            around("T | where Name == 'é' | wher", 1, 25),
            Some(("T | where Name == 'é' | ".into(), "wher".into(), "".into()))
        );
        assert_eq!(
            message_of("error at line 2, column 3: unknown operator 'wher'\n  | x\n"),
            "unknown operator 'wher'"
        );
        assert_eq!(message_of("error: query timed out"), "query timed out");
        assert_eq!(
            message_of("the query is over 65536 bytes"),
            "the query is over 65536 bytes"
        );
    }

    #[test]
    fn techniques_are_attack_ids() {
        assert_eq!(
            techniques("t1059.001, T1003 T1003;").unwrap(),
            ["T1059.001", "T1003"]
        );
        assert_eq!(techniques(" ").unwrap(), Vec::<String>::new());
        for bad in [
            "T105",
            "T1059.1",
            "1059",
            "T1059.",
            "T10a9",
            "T1059.001.002",
        ] {
            assert!(techniques(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn detection_forms_need_a_name_and_valid_fields() {
        let form = DetectionForm {
            title: Some(" Encoded PowerShell ".into()),
            severity: Some("high".into()),
            schedule: Some("900".into()),
            tactic: Some("Execution".into()),
            techniques: Some("t1059.001".into()),
            description: None,
        };
        let body = detection_body(&form, "DeviceProcessEvents").unwrap();
        assert_eq!(
            body,
            json!({
                "title": "Encoded PowerShell", "query": "DeviceProcessEvents", "schedule_secs": 900,
                "severity": "high", "description": "", "tactics": ["Execution"],
                "techniques": ["T1059.001"],
            })
        );
        let unnamed = DetectionForm {
            title: None,
            ..form.clone()
        };
        assert!(detection_body(&unnamed, "T").is_err());
        let bad_tactic = DetectionForm {
            tactic: Some("Nope".into()),
            ..form.clone()
        };
        assert!(
            detection_body(&bad_tactic, "T")
                .unwrap_err()
                .contains("Nope")
        );
        let bad_schedule = DetectionForm {
            schedule: Some("hourly".into()),
            ..form.clone()
        };
        assert!(detection_body(&bad_schedule, "T").is_err());
        assert!(detection_body(&form, " ").is_err());
    }

    #[test]
    fn only_summaries_are_charted_without_render() {
        assert!(summarizes("T\n| summarize count() by bin(Timestamp, 1h)"));
        assert!(!summarizes("T | take 10"));
        assert!(!summarizes("T | where Name == 'summarize'"));
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let r = results(
            &["Name", "Count", "Line"],
            &["string", "long", "string"],
            vec![
                vec![json!("=cmd|' /C calc'!A0"), json!(-3), json!("a,\"b\"\nc")],
                vec![Value::Null, json!(1), json!("plain")],
            ],
        );
        assert_eq!(
            csv(&r),
            "Name,Count,Line\r\n'=cmd|' /C calc'!A0,-3,\"a,\"\"b\"\"\nc\"\r\n,1,plain\r\n"
        );
    }

    #[test]
    fn json_export_keeps_the_column_order() {
        let r = results(
            &["Zeta", "Alpha"],
            &["string", "long"],
            vec![vec![json!("a\"b"), json!(1)], vec![Value::Null, json!(2)]],
        );
        let text = json_rows(&r);
        assert_eq!(
            text,
            "[\n{\"Zeta\":\"a\\\"b\",\"Alpha\":1},\n{\"Zeta\":null,\"Alpha\":2}\n]\n"
        );
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed[1]["Alpha"], json!(2));
        assert_eq!(json_rows(&results(&["A"], &["long"], vec![])), "[\n]\n");
    }

    #[test]
    fn schema_names_wrap_between_words() {
        assert_eq!(
            word_breaks("DeviceTvmSoftwareInventory").into_string(),
            "Device<wbr>Tvm<wbr>Software<wbr>Inventory"
        );
        assert_eq!(word_breaks("SHA256").into_string(), "SHA256");
        assert_eq!(
            word_breaks("InitiatingProcessSHA1").into_string(),
            "Initiating<wbr>Process<wbr>SHA1"
        );
        assert_eq!(word_breaks("<b>").into_string(), "&lt;b&gt;");
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(plural(1, "row", "rows"), "1 row");
        assert_eq!(plural(10_000, "row", "rows"), "10,000 rows");
        assert_eq!(preview("\n  T\n| take  1\n", 10), "T | take 1");
        assert_eq!(preview("DeviceProcessEvents", 6), "Devic…");
    }
}
