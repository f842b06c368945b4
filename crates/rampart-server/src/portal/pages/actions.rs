//! The action center: response actions waiting for their agent and done, who asked for them
//! and what came of them, with cancelling and the investigation packages to download.

use axum::Router;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use rampart_state::{Action, ActionKind, ActionStatus, Device, Page};
use serde::Deserialize;
use serde_json::{Value, json};

use super::devices::failed;
use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{Answer, segment, with_query};
use crate::portal::html::{self, Ctx, Form, Query, Section};
use crate::portal::text::bytes;

/// Actions per page.
const PER_PAGE: &str = "50";
/// Devices read to name the devices of a page and fill the device filter.
const DEVICES_LISTED: &str = "500";
/// Seconds between reloads of a page with actions still open (with script).
const REFRESH_SECS: &str = "10";

pub fn routes() -> Router<App> {
    Router::new()
        .route("/actions", get(list))
        .route("/actions/{id}", get(detail))
        .route("/actions/{id}/cancel", post(cancel))
        .route("/actions/{id}/package", get(package))
}

/// An action kind in words.
pub fn kind_label(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Isolate => "Isolate device",
        ActionKind::Release => "Release from isolation",
        ActionKind::KillProcess => "Kill process",
        ActionKind::QuarantineFile => "Quarantine file",
        ActionKind::RestoreFile => "Restore file",
        ActionKind::CollectPackage => "Collect investigation package",
        ActionKind::RunCommand => "Run command",
    }
}

fn text(params: &Value, key: &str) -> String {
    params.get(key).map(html::value_text).unwrap_or_default()
}

/// An action's parameters in one line (and the reason given, if any).
pub fn params_summary(kind: ActionKind, p: &Value) -> Markup {
    let comment = text(p, "comment");
    html! {
        @match kind {
            ActionKind::KillProcess => {
                "process " span.mono { (text(p, "pid")) }
                @if p.get("tree").and_then(Value::as_bool) == Some(true) { " and its descendants" }
            }
            ActionKind::QuarantineFile => span.mono.wrap-anywhere { (text(p, "path")) },
            ActionKind::RestoreFile => span.mono.wrap-anywhere {
                @let path = text(p, "path");
                (if path.is_empty() { text(p, "id") } else { path })
            },
            ActionKind::RunCommand => code.cmd { (command_line(p)) },
            ActionKind::Isolate | ActionKind::Release | ActionKind::CollectPackage => {},
        }
        @if !comment.is_empty() { " " span.muted.comment { "“" (comment) "”" } }
    }
}

/// An action's parameters as a fact of a page: "none" when it has none.
pub fn params_fact(kind: ActionKind, p: &Value) -> Markup {
    html! {
        @if p.as_object().is_none_or(serde_json::Map::is_empty) { span.muted { "none" } }
        @else { (params_summary(kind, p)) }
    }
}

/// An argument as it would be typed (quoted when it holds spaces or is empty).
fn shell_word(arg: &str) -> String {
    if arg.is_empty() || arg.contains(char::is_whitespace) {
        format!("\"{arg}\"")
    } else {
        arg.to_string()
    }
}

/// A `run_command` action's command as it would be typed.
fn command_line(params: &Value) -> String {
    let mut line = text(params, "command");
    for arg in params
        .get("args")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        line.push(' ');
        line.push_str(&shell_word(&html::value_text(arg)));
    }
    line
}

/// What came of an action, in one line.
pub fn result_summary(a: &Action) -> Markup {
    let r = a.result.as_ref().unwrap_or(&Value::Null);
    let error = r.get("error").map(html::value_text);
    html! {
        @if let Some(e) = error.filter(|_| a.status == ActionStatus::Failed) {
            span.err { (e) }
        } @else if !a.status.is_terminal() {
            span.muted { (waiting(a.status)) }
        } @else if a.status == ActionStatus::Cancelled {
            span.muted { "cancelled before it was carried out" }
        } @else {
            @match a.kind {
                ActionKind::KillProcess => {
                    @let killed: Vec<String> = r.get("killed").and_then(Value::as_array).into_iter().flatten().map(html::value_text).collect();
                    @if killed.is_empty() { "nothing killed" } @else { "killed " span.mono { (killed.join(", ")) } }
                }
                ActionKind::QuarantineFile => {
                    "moved to quarantine"
                    @let hash = text(r, "sha256");
                    @if !hash.is_empty() { span.muted.mono { " sha256 " (short(&hash)) } }
                }
                ActionKind::RestoreFile => { "restored " span.mono.wrap-anywhere { (text(r, "restored")) } },
                ActionKind::Isolate => {
                    "isolated"
                    @let since = text(r, "since");
                    @if !since.is_empty() { " since " (html::time_text(&since)) }
                }
                ActionKind::Release => {
                    @if r.get("was_isolated").and_then(Value::as_bool) == Some(false) { "was not isolated" } @else { "released" }
                }
                ActionKind::CollectPackage => {
                    @match &a.package {
                        Some(p) => { "package of " (bytes(p.bytes)) " " a href={"/actions/" (segment(&a.id)) "/package"} { "Download" } },
                        None => span.muted { "no package stored (not uploaded, or removed by retention)" },
                    }
                }
                ActionKind::RunCommand => {
                    @let code = text(r, "exit_code");
                    "exit code " (if code.is_empty() { "—".to_string() } else { code })
                    @let lines = text(r, "stdout").lines().count();
                    ", " (lines) (if lines == 1 { " line" } else { " lines" }) " of output"
                    @if r.get("timed_out").and_then(Value::as_bool) == Some(true) { span.err { ", timed out" } }
                    @if r.get("truncated").and_then(Value::as_bool) == Some(true) { span.muted { ", cut short" } }
                }
            }
        }
    }
}

fn waiting(status: ActionStatus) -> &'static str {
    match status {
        ActionStatus::Pending => "waiting for the agent to pick it up",
        ActionStatus::Sent => "handed to the agent",
        ActionStatus::Running => "being carried out",
        _ => "",
    }
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

// ---------------------------------------------------------------------------------------------
// The list

#[derive(Deserialize, Default)]
pub struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    device: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

/// The status filter's choices: open and finished ones, then each status.
const STATUS_CHOICES: [(&str, &str); 8] = [
    ("open", "Open (not finished)"),
    ("finished", "Finished"),
    ("pending", "Pending"),
    ("sent", "Sent"),
    ("running", "Running"),
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
];

/// The API filter of a status choice.
fn status_filter(choice: &str) -> Option<(&'static str, &'static str)> {
    match choice {
        "open" => Some(("open", "true")),
        "finished" => Some(("open", "false")),
        other => ActionStatus::ALL
            .iter()
            .find(|s| s.as_str() == other)
            .map(|s| ("status", s.as_str())),
    }
}

/// `GET /actions`.
async fn list(ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    let value = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_string();
    let (status, kind, device) = (value(&q.status), value(&q.kind), value(&q.device));
    let (status_key, status_value) = match status.as_str() {
        "" => ("status", ""),
        s => match status_filter(s) {
            Some(pair) => pair,
            None => return html::plain_error(StatusCode::BAD_REQUEST, "Unknown action status."),
        },
    };
    if !kind.is_empty() && kind.parse::<ActionKind>().is_err() {
        return html::plain_error(StatusCode::BAD_REQUEST, "Unknown action kind.");
    }
    let path = with_query(
        "/api/v1/actions",
        &[
            (status_key, status_value),
            ("kind", &kind),
            ("device_id", &device),
            ("limit", PER_PAGE),
            ("cursor", q.cursor.as_deref().unwrap_or("")),
        ],
    );
    let device_path = format!("/api/v1/devices?limit={DEVICES_LISTED}");
    let (actions, devices) = tokio::join!(
        ctx.api.get::<Page<Action>>(&path),
        ctx.api.get::<Page<Device>>(&device_path),
    );
    let actions = match actions {
        Ok(a) => a,
        Err(f) => return ctx.failure(Section::Actions, &f),
    };
    let devices = devices.map(|d| d.items).unwrap_or_default();
    let base = with_query(
        "/actions",
        &[("status", &status), ("kind", &kind), ("device", &device)],
    );
    let filtered = [&status, &kind, &device].iter().any(|v| !v.is_empty());
    let any_open = actions.items.iter().any(|a| !a.status.is_terminal());
    let analyst = ctx.can(Access::Analyst);
    ctx.page(Section::Actions, "Action center", html! {
        (html::notice(q.notice.as_deref()))
        form.filters method="get" action="/actions" {
            (html::choice("status", "Status", "status", "Any status", &status, STATUS_CHOICES.iter().map(|(value, label)| (value, label))))
            (html::choice("kind", "Action", "kind", "Any action", &kind, ActionKind::ALL.iter().map(|k| (k.as_str(), kind_label(*k)))))
            div.field {
                label for="device" { "Device" }
                select #device name="device" {
                    option value="" { "Any device" }
                    @if !device.is_empty() && !devices.iter().any(|d| d.id == device) {
                        option value=(device) selected { (device) }
                    }
                    @for d in &devices {
                        option value=(d.id) selected[d.id == device] { (d.hostname) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if filtered { a.button.quiet href="/actions" { "Clear filters" } }
        }
        @if any_open {
            p.muted.small data-refresh=(REFRESH_SECS) { "Open actions update as their agents report; this page reloads every " (REFRESH_SECS) " seconds." }
        }
        @if actions.items.is_empty() {
            div.panel.empty {
                @if filtered {
                    "No action matches these filters. " a href="/actions" { "Clear the filters" } "."
                } @else {
                    "No response action yet. Ask for one on a device's page (" a href="/devices" { "Devices" } "): isolate it, collect an investigation package, kill a process, quarantine a file or run a command."
                }
            }
        } @else {
            div.table-wrap {
                table #actions .grid {
                    thead { tr {
                        th scope="col" { "Requested" }
                        th scope="col" { "Device" }
                        th scope="col" { "Action" }
                        th scope="col" { "Status" }
                        th scope="col" { "Result" }
                        th scope="col" { span.visually-hidden { "Changes" } }
                    } }
                    tbody {
                        @for a in &actions.items {
                            tr data-status=(a.status.as_str()) {
                                td.nowrap {
                                    (html::time(&a.requested_at))
                                    div.muted.small { "by " (a.requested_by) }
                                }
                                td.device { (device_link(&devices, &a.device_id)) }
                                td.wrap {
                                    a href={"/actions/" (segment(&a.id))} { (kind_label(a.kind)) }
                                    div.small { (params_summary(a.kind, &a.params)) }
                                }
                                td {
                                    (html::status(a.status.as_str()))
                                    @if a.updated_at != a.requested_at {
                                        div.muted.small { "at " (html::time(&a.updated_at)) }
                                    }
                                }
                                td.wrap.small.result { (result_summary(a)) }
                                td.changes {
                                    @if analyst && !a.status.is_terminal() {
                                        (cancel_form(&ctx, a, &base))
                                    }
                                    @if analyst { (restore_form(&ctx, a)) }
                                }
                            }
                        }
                    }
                }
            }
            (html::pager(&base, actions.next.as_deref()))
        }
    })
}

fn device_link(devices: &[Device], id: &str) -> Markup {
    let name = devices
        .iter()
        .find(|d| d.id == id)
        .map(|d| d.hostname.as_str());
    html! {
        a href={"/devices/" (segment(id))} {
            @match name { Some(n) => (n), None => span.mono { (id) } }
        }
    }
}

/// The cancel button of an open action; back to `back` afterwards.
fn cancel_form(ctx: &Ctx, a: &Action, back: &str) -> Markup {
    html! {
        form.inline method="post" action={"/actions/" (segment(&a.id)) "/cancel"} {
            (ctx.csrf())
            input type="hidden" name="back" value=(back);
            button.small.quiet type="submit" aria-label={"Cancel " (kind_label(a.kind)) " " (a.id)} { "Cancel" }
        }
    }
}

/// For a file quarantined: the button that asks (on the device's confirmation page) to put it
/// back.
fn restore_form(ctx: &Ctx, a: &Action) -> Markup {
    let id = a
        .result
        .as_ref()
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str);
    html! {
        @if let (ActionKind::QuarantineFile, ActionStatus::Succeeded, Some(id)) = (a.kind, a.status, id) {
            form.inline method="post" action={"/devices/" (segment(&a.device_id)) "/actions"} {
                (ctx.csrf())
                input type="hidden" name="kind" value=(ActionKind::RestoreFile.as_str());
                input type="hidden" name="quarantine_id" value=(id);
                input type="hidden" name="path" value=(text(&a.params, "path"));
                button.small.quiet type="submit" { "Restore file…" }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One action

/// `GET /actions/{id}`: the action with its parameters and whole result.
async fn detail(ctx: Ctx, Path(id): Path<String>, Query(q): Query<NoticeQuery>) -> Response {
    let a = match ctx
        .api
        .get::<Action>(&format!("/api/v1/actions/{}", segment(&id)))
        .await
    {
        Ok(a) => a,
        Err(f) => return ctx.failure(Section::Actions, &f),
    };
    let device: Answer<Device> = ctx
        .api
        .get(&format!("/api/v1/devices/{}", segment(&a.device_id)))
        .await;
    let devices: Vec<Device> = device.into_iter().collect();
    let r = a.result.as_ref();
    let here = format!("/actions/{}", segment(&a.id));
    let title = format!(
        "{} · {}",
        kind_label(a.kind),
        devices
            .first()
            .map_or(a.device_id.as_str(), |d| d.hostname.as_str())
    );
    ctx.page(Section::Actions, &title, html! {
        (html::notice(q.notice.as_deref()))
        @if !a.status.is_terminal() {
            p.muted.small data-refresh=(REFRESH_SECS) { "This page reloads every " (REFRESH_SECS) " seconds until the action is finished." }
        }
        div.cols {
            div {
                div.panel {
                    h2 { "Action" }
                    (html::facts(&[
                        ("Action", html! { (kind_label(a.kind)) }),
                        ("Device", device_link(&devices, &a.device_id)),
                        ("Status", html! { (html::status(a.status.as_str())) " " span.muted.small { (waiting(a.status)) } }),
                        ("Parameters", params_fact(a.kind, &a.params)),
                        ("Requested by", html! { (a.requested_by) }),
                        ("Requested", html::time(&a.requested_at)),
                        ("Last change", html::time(&a.updated_at)),
                        ("Id", html! { span.mono { (a.id) } }),
                    ]))
                    @if ctx.can(Access::Analyst) {
                        p.row {
                            @if !a.status.is_terminal() { (cancel_form(&ctx, &a, &here)) }
                            (restore_form(&ctx, &a))
                        }
                    }
                }
            }
            div {
                div.panel {
                    h2 { "Result" }
                    p { (result_summary(&a)) }
                    @if let Some(p) = &a.package {
                        (html::facts(&[
                            ("Package", html! { a.button href={(here) "/package"} { "Download (" (bytes(p.bytes)) ")" } }),
                            ("SHA-256", html! { span.mono.wrap-anywhere { (p.sha256) } }),
                            ("Stored", html::time(&p.stored_at)),
                        ]))
                    }
                }
            }
        }
        @if let Some(r) = r {
            @if a.kind == ActionKind::RunCommand && r.get("stdout").is_some() {
                (command_output(&a.params, r))
            }
            details.panel {
                summary { "The agent's whole report (JSON)" }
                pre { (serde_json::to_string_pretty(r).unwrap_or_default()) }
            }
        }
    })
}

#[derive(Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
}

/// A live-response command's output, as a terminal would show it.
fn command_output(params: &Value, r: &Value) -> Markup {
    let stdout = text(r, "stdout");
    let stderr = text(r, "stderr");
    html! {
        div.panel {
            h2 { "Output" }
            p.muted.small {
                code { "$ " (command_line(params)) }
                " · exit code " (text(r, "exit_code"))
                " · " (text(r, "duration_ms")) " ms"
                @if r.get("truncated").and_then(Value::as_bool) == Some(true) { " · output cut short" }
                @if r.get("timed_out").and_then(Value::as_bool) == Some(true) { " · timed out" }
            }
            @if !stderr.is_empty() {
                h3 { "Errors (stderr)" }
                pre.output.err { (stderr) }
            }
            h3 { "Output (stdout)" }
            @if stdout.is_empty() { p.muted { "No output." } } @else { pre.output { (stdout) } }
        }
    }
}

#[derive(Deserialize)]
pub struct CancelForm {
    back: Option<String>,
}

/// Where to return after a change: a path of the action center, else its list.
fn safe_back(back: Option<&str>) -> &str {
    match back {
        Some(b) if b.starts_with("/actions") => b,
        _ => "/actions",
    }
}

/// `POST /actions/{id}/cancel`.
async fn cancel(ctx: Ctx, Path(id): Path<String>, Form(form): Form<CancelForm>) -> Response {
    let answer: Answer<Action> = ctx
        .api
        .post(
            &format!("/api/v1/actions/{}/cancel", segment(&id)),
            json!({}),
        )
        .await;
    let back = safe_back(form.back.as_deref());
    match answer {
        Ok(a) => html::after_change(
            back,
            &format!("{} ({}) cancelled.", kind_label(a.kind), a.id),
        ),
        Err(f) => failed(&ctx, Section::Actions, &f, back),
    }
}

/// `GET /actions/{id}/package`: the investigation package, streamed from the API as the viewer
/// (whose role and scope it checks, and whose download it audits). The portal's API client
/// reads whole answers, so this one call is made here.
async fn package(ctx: Ctx, Path(id): Path<String>) -> Response {
    let path = format!("/api/v1/actions/{}/package", segment(&id));
    match ctx.api.send(Method::GET, &path, None).await {
        Ok(download) => download,
        Err(failure) => ctx.failure(Section::Actions, &failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn action(
        kind: ActionKind,
        status: ActionStatus,
        params: Value,
        result: Option<Value>,
    ) -> Action {
        Action {
            id: "act_1".into(),
            tenant_id: "default".into(),
            device_id: "dev_1".into(),
            kind,
            params,
            status,
            requested_by: "ann".into(),
            requested_at: Utc::now(),
            updated_at: Utc::now(),
            result,
            package: None,
        }
    }

    #[test]
    fn parameters_read_in_one_line() {
        let run = action(
            ActionKind::RunCommand,
            ActionStatus::Pending,
            json!({"command": "ls", "args": ["-la", "/tmp/a b"], "comment": "why"}),
            None,
        );
        let html = params_summary(run.kind, &run.params).into_string();
        assert!(
            html.contains("ls -la \"/tmp/a b\"") || html.contains("ls -la &quot;/tmp/a b&quot;"),
            "{html}"
        );
        assert!(html.contains("why"), "{html}");
        let kill = action(
            ActionKind::KillProcess,
            ActionStatus::Pending,
            json!({"pid": 42, "tree": true}),
            None,
        );
        assert!(
            params_summary(kill.kind, &kill.params)
                .into_string()
                .contains("and its descendants")
        );
        assert_eq!(shell_word("a b"), "\"a b\"");
        assert_eq!(shell_word("-la"), "-la");
    }

    #[test]
    fn results_read_in_words() {
        let failed = action(
            ActionKind::KillProcess,
            ActionStatus::Failed,
            json!({"pid": 42}),
            Some(json!({"error": "no such process"})),
        );
        assert!(
            result_summary(&failed)
                .into_string()
                .contains("no such process")
        );
        let killed = action(
            ActionKind::KillProcess,
            ActionStatus::Succeeded,
            json!({"pid": 42}),
            Some(json!({"killed": [42, 43]})),
        );
        assert!(result_summary(&killed).into_string().contains("42, 43"));
        let pending = action(ActionKind::Isolate, ActionStatus::Pending, json!({}), None);
        assert!(
            result_summary(&pending)
                .into_string()
                .contains("waiting for the agent")
        );
        let ran = action(
            ActionKind::RunCommand,
            ActionStatus::Succeeded,
            json!({"command": "uptime"}),
            Some(json!({"exit_code": 0, "stdout": "a\nb\n", "timed_out": true})),
        );
        let html = result_summary(&ran).into_string();
        assert!(
            html.contains("exit code 0") && html.contains("2 lines") && html.contains("timed out"),
            "{html}"
        );
        let collected = action(
            ActionKind::CollectPackage,
            ActionStatus::Succeeded,
            json!({}),
            Some(json!({})),
        );
        assert!(
            result_summary(&collected)
                .into_string()
                .contains("no package stored")
        );
    }

    #[test]
    fn status_choices_map_to_api_filters() {
        assert_eq!(status_filter("open"), Some(("open", "true")));
        assert_eq!(status_filter("finished"), Some(("open", "false")));
        assert_eq!(status_filter("failed"), Some(("status", "failed")));
        assert_eq!(status_filter("bogus"), None);
        for (choice, _) in STATUS_CHOICES {
            assert!(status_filter(choice).is_some(), "{choice}");
        }
    }

    #[test]
    fn changes_return_to_the_action_center_only() {
        assert_eq!(
            safe_back(Some("/actions?status=open")),
            "/actions?status=open"
        );
        assert_eq!(safe_back(Some("/actions/act_1")), "/actions/act_1");
        assert_eq!(safe_back(Some("https://evil.example/")), "/actions");
        assert_eq!(safe_back(Some("//evil.example/actions")), "/actions");
        assert_eq!(safe_back(None), "/actions");
    }
}
