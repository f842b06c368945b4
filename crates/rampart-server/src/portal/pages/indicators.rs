//! Indicators of compromise: file hashes, IP addresses, domains, URLs and certificate
//! thumbprints that raise an alert, are blocked or are allowed wherever detection meets them.
//! The page lists them with filters, adds one (a refused one comes back as typed, with the
//! API's reason) and deletes one after a confirmation step.

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use maud::{Markup, html};
use rampart_state::{Indicator, IndicatorAction, IndicatorKind, Page, Severity};
use serde::Deserialize;
use serde_json::json;

use super::settings::Groups;
use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{self, Failure};
use crate::portal::forms::{Confirm, Fields, failure};
use crate::portal::html::{self, Ctx, Query, Section};
use crate::portal::text::parse_time;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/indicators", get(list).post(create))
        .route("/indicators/{id}/delete", get(confirm_delete).post(delete))
}

/// Rows per page.
const PAGE_SIZE: &str = "100";

/// What each kind is called in the forms.
fn kind_label(kind: IndicatorKind) -> &'static str {
    match kind {
        IndicatorKind::Sha256 => "File hash (SHA-256)",
        IndicatorKind::Sha1 => "File hash (SHA-1)",
        IndicatorKind::Md5 => "File hash (MD5)",
        IndicatorKind::Ip => "IP address",
        IndicatorKind::Domain => "Domain",
        IndicatorKind::Url => "URL",
        IndicatorKind::Cert => "Certificate thumbprint",
    }
}

/// What each kind is called in the list, where space is short.
fn kind_short(kind: IndicatorKind) -> &'static str {
    match kind {
        IndicatorKind::Sha256 => "SHA-256",
        IndicatorKind::Sha1 => "SHA-1",
        IndicatorKind::Md5 => "MD5",
        IndicatorKind::Ip => "IP",
        IndicatorKind::Domain => "Domain",
        IndicatorKind::Url => "URL",
        IndicatorKind::Cert => "Certificate",
    }
}

fn action_label(action: IndicatorAction) -> &'static str {
    match action {
        IndicatorAction::Alert => "Alert",
        IndicatorAction::Block => "Block",
        IndicatorAction::Allow => "Allow",
    }
}

#[derive(Deserialize, Default)]
pub struct Filters {
    kind: Option<String>,
    action: Option<String>,
    value: Option<String>,
    /// "1": only indicators not expired now.
    active: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

impl Filters {
    fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }

    fn action(&self) -> &str {
        self.action.as_deref().unwrap_or("")
    }

    fn value(&self) -> &str {
        self.value.as_deref().map_or("", str::trim)
    }

    fn active(&self) -> bool {
        self.active.as_deref() == Some("1")
    }

    fn any(&self) -> bool {
        !(self.kind().is_empty() && self.action().is_empty() && self.value().is_empty())
            || self.active()
    }

    /// This page with the same filters (the pager adds the cursor).
    fn link(&self) -> String {
        api::with_query(
            "/indicators",
            &[
                ("kind", self.kind()),
                ("action", self.action()),
                ("value", self.value()),
                ("active", if self.active() { "1" } else { "" }),
            ],
        )
    }

    fn api(&self) -> String {
        let now = Utc::now().to_rfc3339();
        api::with_query(
            "/api/v1/indicators",
            &[
                ("kind", self.kind()),
                ("action", self.action()),
                ("value", self.value()),
                ("active_at", if self.active() { &now } else { "" }),
                ("limit", PAGE_SIZE),
                ("cursor", self.cursor.as_deref().unwrap_or("")),
            ],
        )
    }
}

async fn list(ctx: Ctx, Query(filters): Query<Filters>) -> Response {
    render(&ctx, &filters, None).await
}

/// The list page; `adding` is a refused addition, shown in its form as typed.
async fn render(ctx: &Ctx, filters: &Filters, adding: Option<(&Fields, &Failure)>) -> Response {
    let path = filters.api();
    let (list, groups) = tokio::join!(ctx.api.get::<Page<Indicator>>(&path), Groups::fetch(ctx));
    let now = Utc::now();
    let analyst = ctx.can(Access::Analyst);
    // Nothing listed and nothing filtered: adding is what the page is for.
    let first = !filters.any() && matches!(&list, Ok(page) if page.items.is_empty());
    let body = html! {
        (html::notice(filters.notice.as_deref()))
        @if analyst {
            (add_form(ctx, &groups, adding, first))
        }
        (filter_form(filters))
        @match &list {
            Err(f) => (html::failure_box(f)),
            Ok(page) => {
                div.table-wrap {
                    table.grid #indicators {
                        thead { tr {
                            th { "Indicator" } th { "Kind" } th { "Action" } th { "Severity" }
                            th { "Device groups" } th { "Expires" } th { "Added" }
                            @if analyst { th { span.visually-hidden { "Delete" } } }
                        } }
                        tbody {
                            @for ind in &page.items {
                                @let expired = ind.expires_at.is_some_and(|e| e <= now);
                                tr.expired[expired] {
                                    td.ioc {
                                        code.ioc-value { (ind.value) }
                                        @if !ind.title.is_empty() { div.ioc-title { (ind.title) } }
                                    }
                                    td title=(kind_label(ind.kind)) { (kind_short(ind.kind)) }
                                    td { span class={"pill ioc-" (ind.action.as_str())} { (action_label(ind.action)) } }
                                    td { (html::severity(ind.severity.as_str())) }
                                    td { (groups.scope(&ind.scope_groups.0)) }
                                    td.when {
                                        @if let Some(e) = &ind.expires_at {
                                            (html::time(e)) @if expired { " " (html::status("expired")) }
                                        } @else { span.muted { "never" } }
                                    }
                                    td.when { (html::time(&ind.created_at)) div.muted { "by " (ind.created_by) } }
                                    @if analyst {
                                        td.actions {
                                            a.button.small.quiet href={"/indicators/" (api::segment(&ind.id)) "/delete"} { "Delete…" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if page.items.is_empty() {
                        p.empty {
                            @if filters.any() {
                                "No indicator matches these filters. " a href="/indicators" { "Clear the filters" }
                            } @else if analyst {
                                "No indicators yet. Add a file hash, IP address, domain, URL or certificate "
                                "thumbprint above to alert on it, block it or allow it."
                            } @else {
                                "No indicators yet."
                            }
                        }
                    }
                }
                (html::pager(&filters.link(), page.next.as_deref()))
            }
        }
    };
    let mut response = ctx.page(Section::Indicators, "Indicators", body);
    if let Some(f) = adding.map(|(_, f)| f).or(list.as_ref().err()) {
        *response.status_mut() = f.status;
    }
    response
}

fn filter_form(filters: &Filters) -> Markup {
    html! {
        form.filters #indicator-filters method="get" action="/indicators" {
            (html::choice("f-kind", "Kind", "kind", "Any kind", filters.kind(), IndicatorKind::ALL.iter().map(|k| (k.as_str(), kind_label(*k)))))
            (html::choice("f-action", "Action", "action", "Any action", filters.action(), IndicatorAction::ALL.iter().map(|a| (a.as_str(), action_label(*a)))))
            div.field {
                label for="f-value" { "Value (exact)" }
                input #f-value type="search" name="value" value=(filters.value()) data-search
                    placeholder="hash, address, domain…";
            }
            div.field {
                label.choice for="f-active" {
                    input #f-active type="checkbox" name="active" value="1" checked[filters.active()];
                    " Not expired"
                }
            }
            button type="submit" { "Filter" }
            @if filters.any() { a.button.quiet href="/indicators" { "Clear" } }
        }
    }
}

/// The add form, open and filled in as typed when the API refused it; open too when `first`.
fn add_form(
    ctx: &Ctx,
    groups: &Groups,
    adding: Option<(&Fields, &Failure)>,
    first: bool,
) -> Markup {
    let typed = adding.map(|(form, _)| form);
    let field = |name: &str| typed.map_or("", |f| f.get(name));
    let chosen = |name: &str, default: &str| -> String {
        Some(field(name))
            .filter(|v| !v.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    let (kind, action, severity) = (
        chosen("kind", IndicatorKind::Sha256.as_str()),
        chosen("action", IndicatorAction::Alert.as_str()),
        chosen("severity", Severity::High.as_str()),
    );
    html! {
        details.panel.create-panel #add-indicator open[adding.is_some() || first] {
            summary { "Add an indicator" }
            @if let Some((_, failure)) = adding {
                div #add-error { (html::failure_box(failure)) }
            }
            form method="post" action="/indicators" {
                (ctx.csrf())
                div.form-grid {
                    div.field {
                        label for="ioc-kind" { "Kind" }
                        select #ioc-kind name="kind" {
                            @for k in IndicatorKind::ALL {
                                option value=(k.as_str()) selected[kind == k.as_str()] { (kind_label(*k)) }
                            }
                        }
                    }
                    div.field.wide {
                        label for="ioc-value" { "Value" }
                        input #ioc-value.mono type="text" name="value" required value=(field("value"))
                            placeholder="a hash, IP address, domain or URL";
                    }
                    div.field {
                        label for="ioc-action" { "Action" }
                        select #ioc-action name="action" {
                            @for a in IndicatorAction::ALL {
                                option value=(a.as_str()) selected[action == a.as_str()] { (action_label(*a)) }
                            }
                        }
                    }
                    div.field {
                        label for="ioc-severity" { "Severity" }
                        select #ioc-severity name="severity" {
                            @for s in Severity::ALL {
                                option value=(s.as_str()) selected[severity == s.as_str()] { (s.as_str()) }
                            }
                        }
                    }
                    div.field.wide {
                        label for="ioc-title" { "Title" }
                        input #ioc-title type="text" name="title" required value=(field("title"))
                            placeholder="What it is, as alerts will name it";
                    }
                    div.field {
                        label for="ioc-expires" { "Expires (UTC) " span.muted { "(optional)" } }
                        input #ioc-expires type="text" name="expires_at" placeholder="YYYY-MM-DD HH:MM" size="16" value=(field("expires_at"));
                    }
                    div.field.full {
                        label for="ioc-description" { "Description " span.muted { "(optional)" } }
                        textarea #ioc-description name="description" rows="2" { "\n" (field("description")) }
                    }
                }
                (groups.choices("Applies to device groups", &typed.map(|f| f.all("scope_groups")).unwrap_or_default()))
                p.hint {
                    "Detection raises an alert wherever an Alert or Block indicator's value appears in "
                    "events (file hashes, IP addresses, domains and their subdomains, URLs). Agents "
                    "enforce Block on file hashes (the file cannot be executed) and IP addresses "
                    "(unreachable both ways) within a heartbeat; Allow is recorded only, and "
                    "certificate thumbprints are not matched yet."
                }
                button type="submit" { "Add indicator" }
            }
        }
    }
}

async fn create(ctx: Ctx, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let expires_at = match parse_time("Expires", form.get("expires_at")) {
        Ok(t) => t,
        Err(message) => {
            let f = failure(StatusCode::BAD_REQUEST, &message);
            return render(&ctx, &Filters::default(), Some((&form, &f))).await;
        }
    };
    let indicator = json!({
        "kind": form.get("kind"),
        "value": form.get("value"),
        "action": form.get("action"),
        "severity": form.get("severity"),
        "title": form.get("title").trim(),
        "description": form.get("description").trim(),
        "scope_groups": form.all("scope_groups"),
        "expires_at": expires_at,
    });
    match ctx
        .api
        .post::<Indicator>("/api/v1/indicators", indicator)
        .await
    {
        Ok(ind) => html::after_change(
            "/indicators",
            &format!(
                "{} {} added ({}).",
                kind_label(ind.kind),
                ind.value,
                ind.action
            ),
        ),
        Err(f) => render(&ctx, &Filters::default(), Some((&form, &f))).await,
    }
}

async fn confirm_delete(ctx: Ctx, Path(id): Path<String>) -> Response {
    let path = format!("/api/v1/indicators/{}", api::segment(&id));
    let ind = match ctx.api.get::<Indicator>(&path).await {
        Ok(ind) => ind,
        Err(f) => return ctx.failure(Section::Indicators, &f),
    };
    Confirm {
        title: "Delete indicator",
        what: html! {
            p { "Delete this indicator? Detection stops acting on it at once; alerts it raised stay." }
            (html::facts(&[
                ("Value", html! { code.ioc-value { (ind.value) } }),
                ("Kind", html! { (kind_label(ind.kind)) }),
                ("Action", html! { (action_label(ind.action)) }),
                ("Title", html! { (ind.title) }),
            ]))
        },
        action: format!("/indicators/{}/delete", api::segment(&id)),
        button: "Delete indicator",
        back: "/indicators".to_string(),
    }
    .page(&ctx, Section::Indicators)
}

async fn delete(ctx: Ctx, Path(id): Path<String>) -> Response {
    match ctx
        .api
        .delete(&format!("/api/v1/indicators/{}", api::segment(&id)))
        .await
    {
        Ok(()) => html::after_change("/indicators", "Indicator deleted."),
        Err(f) => ctx.failure(Section::Indicators, &f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(query: &str) -> Filters {
        let map: serde_json::Map<String, serde_json::Value> =
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
                .collect();
        serde_json::from_value(serde_json::Value::Object(map)).unwrap()
    }

    #[test]
    fn filters_carry_into_links_and_api_calls() {
        let f = filters("kind=ip&action=&value=+10.0.0.1+&active=1&cursor=abc");
        assert!(f.any());
        assert_eq!(f.link(), "/indicators?kind=ip&value=10.0.0.1&active=1");
        let api = f.api();
        assert!(
            api.starts_with("/api/v1/indicators?kind=ip&value=10.0.0.1&active_at="),
            "{api}"
        );
        assert!(api.ends_with("&limit=100&cursor=abc"), "{api}");
        assert!(!api.contains("action="), "{api}");
    }

    #[test]
    fn no_filters_is_the_whole_list() {
        let f = filters("");
        assert!(!f.any());
        assert_eq!(f.link(), "/indicators");
        assert_eq!(f.api(), "/api/v1/indicators?limit=100");
    }
}
