//! The page shell (navigation, user menu, theme) and the pieces every page shares: the
//! request context [`Ctx`], forms and query strings that fail as pages, times, severities,
//! pagers and notices. Everything goes through maud, which escapes what it is given.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::{Api, ApiRouter, Failure};
use super::assets;
use super::session::{CSRF_FIELD, Prefs, Theme, Viewer};
use crate::app::App;

/// The areas of the portal, in the order of the navigation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Incidents,
    Alerts,
    Devices,
    Hunting,
    Actions,
    Indicators,
    Rules,
    Settings,
}

impl Section {
    const ALL: [Section; 8] = [
        Section::Incidents,
        Section::Alerts,
        Section::Devices,
        Section::Hunting,
        Section::Actions,
        Section::Indicators,
        Section::Rules,
        Section::Settings,
    ];

    fn label(self) -> &'static str {
        match self {
            Section::Incidents => "Incidents",
            Section::Alerts => "Alerts",
            Section::Devices => "Devices",
            Section::Hunting => "Advanced hunting",
            Section::Actions => "Action center",
            Section::Indicators => "Indicators",
            Section::Rules => "Rules",
            Section::Settings => "Settings",
        }
    }

    fn href(self) -> &'static str {
        match self {
            Section::Incidents => "/incidents",
            Section::Alerts => "/alerts",
            Section::Devices => "/devices",
            Section::Hunting => "/hunting",
            Section::Actions => "/actions",
            Section::Indicators => "/indicators",
            Section::Rules => "/rules",
            Section::Settings => "/settings",
        }
    }
}

/// What a signed-in page handler works with: who is looking, their settings, and the API as
/// they see it. Extracting it from a signed-out request sends the visitor to sign in.
pub struct Ctx {
    pub app: App,
    pub viewer: Viewer,
    pub prefs: Prefs,
    pub api: Api,
    /// The page's own path and query (forms in the shell come back to it).
    pub path: String,
}

impl FromRequestParts<App> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Ctx, Response> {
        let prefs = parts.extensions.get::<Prefs>().copied().unwrap_or(Prefs {
            theme: Theme::System,
            secure: !app.config.insecure_http,
        });
        let Some(viewer) = parts.extensions.get::<Viewer>().cloned() else {
            return Err(Redirect::to("/").into_response());
        };
        let Some(routes) = parts.extensions.get::<ApiRouter>() else {
            return Err(plain_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The portal is not wired to the API.",
            ));
        };
        Ok(Ctx {
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            api: Api::new(routes, &viewer),
            app: app.clone(),
            viewer,
            prefs,
        })
    }
}

impl Ctx {
    /// A whole page: the shell around `body`, with `title` as heading and window title.
    pub fn page(&self, section: Section, title: &str, body: Markup) -> Response {
        document(
            self.prefs.theme,
            title,
            html! {
                a.skip href="#main" { "Skip to content" }
                header.topbar {
                    a.brand href="/incidents" aria-label="Rampart home" {
                        (PreEscaped(assets::LOGO_SVG)) span { "Rampart" }
                    }
                    div.who {
                        span.user title="Signed in" { (self.viewer.principal.username) }
                        span.role { (self.viewer.principal.role.as_str()) }
                        form.inline method="post" action="/theme" {
                            (self.csrf())
                            input type="hidden" name="back" value=(self.path);
                            label.visually-hidden for="theme" { "Theme" }
                            select #theme name="theme" data-autosubmit {
                                @for t in [Theme::System, Theme::Light, Theme::Dark] {
                                    option value=(t.name()) selected[t == self.prefs.theme] { "Theme: " (t.name()) }
                                }
                            }
                            noscript { button.small type="submit" { "Apply" } }
                        }
                        form.inline method="post" action="/logout" {
                            (self.csrf())
                            button.small.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                div.frame {
                    nav.side aria-label="Sections" {
                        ul {
                            @for s in Section::ALL {
                                li { a href=(s.href()) aria-current=[(s == section).then_some("page")] { (s.label()) } }
                            }
                        }
                    }
                    main #main tabindex="-1" {
                        h1 { (title) }
                        (body)
                    }
                }
            },
        )
    }

    /// The page of a failed API call, with the API's status.
    pub fn failure(&self, section: Section, failure: &Failure) -> Response {
        let title = failure.status.canonical_reason().unwrap_or("Error");
        let mut response = self.page(section, title, html! { (failure_box(failure)) });
        *response.status_mut() = failure.status;
        response
    }

    /// The hidden CSRF field every form carries.
    pub fn csrf(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.viewer.csrf); }
    }

    /// Whether the viewer has at least `role` (to hide what the API would refuse anyway).
    pub fn can(&self, access: crate::auth::Access) -> bool {
        crate::auth::may(&self.viewer.principal, access)
    }
}

/// The HTML document around `body`.
pub fn document(theme: Theme, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" data-theme=(theme.name()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Rampart" }
                link rel="stylesheet" href=(assets::CSS_URL);
                link rel="icon" href=(assets::ICON_URL) type="image/svg+xml";
                script src=(assets::JS_URL) defer {}
            }
            body { (body) }
        }
    };
    let mut response = markup.into_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A page with no signed-in shell (errors before or outside a session).
pub fn plain_error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let mut response = document(
        Theme::System,
        title,
        html! {
            main.narrow #main {
                h1 { (title) }
                p { (message) }
                p { a href="/" { "Go to Rampart" } }
            }
        },
    );
    *response.status_mut() = status;
    response
}

/// An API failure as an alert box.
pub fn failure_box(failure: &Failure) -> Markup {
    html! {
        div.notice.error role="alert" {
            strong { (failure.status.canonical_reason().unwrap_or("Error")) ": " }
            (failure.detail)
        }
    }
}

/// A one-line message after a change (`?notice=` of the redirect that followed it).
pub fn notice(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message.filter(|m| !m.is_empty()) {
            div.notice.ok role="status" { (m) }
        }
    }
}

/// `location?notice=message`: where a form goes after its change.
pub fn after_change(location: &str, message: &str) -> Response {
    let separator = if location.contains('?') { '&' } else { '?' };
    let encoded: String = form_urlencoded::byte_serialize(message.as_bytes()).collect();
    Redirect::to(&format!("{location}{separator}notice={encoded}")).into_response()
}

/// A time as `2026-12-02 03:41:14` (UTC), machine-readable in `datetime`.
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) }
    }
}

/// A time given as text (hunting results): shown as [`time`] when it parses.
pub fn time_text(text: &str) -> Markup {
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => time(&t.with_timezone(&chrono::Utc)),
        Err(_) => html! { (text) },
    }
}

/// A severity as a coloured badge (informational, low, medium, high).
pub fn severity(name: &str) -> Markup {
    let class = match name {
        "high" | "critical" => "sev sev-high",
        "medium" => "sev sev-medium",
        "low" => "sev sev-low",
        _ => "sev sev-info",
    };
    html! { span class=(class) { (name) } }
}

/// A status (new, in_progress, resolved, pending, completed, failed, …) as a pill.
pub fn status(name: &str) -> Markup {
    html! { span class={"pill pill-" (name)} { (name.replace('_', " ")) } }
}

/// The name of a serde-serialised enum value (`Severity::High` → `high`).
pub fn name_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// A JSON value as text: strings bare, the rest as JSON.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// "Next page" for a list answered with `next` (a cursor): `base` carries the current filters.
pub fn pager(base: &str, next: Option<&str>) -> Markup {
    html! {
        @if let Some(cursor) = next {
            nav.pager aria-label="Pages" {
                a.button href=(super::api::with_query_appended(base, "cursor", cursor)) { "Next page →" }
            }
        }
    }
}

/// A labelled `<select>` of a filter form: `any` (the empty value: no filter) first, then
/// `options` as (value, label), the one whose value is `chosen` selected.
pub fn choice<V: AsRef<str>, L: maud::Render>(
    id: &str,
    label: &str,
    name: &str,
    any: &str,
    chosen: &str,
    options: impl IntoIterator<Item = (V, L)>,
) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            select #(id) name=(name) {
                option value="" { (any) }
                @for (value, text) in options {
                    option value=(value.as_ref()) selected[value.as_ref() == chosen] { (text) }
                }
            }
        }
    }
}

/// A definition list of facts: label, value.
pub fn facts(rows: &[(&str, Markup)]) -> Markup {
    html! {
        dl.facts {
            @for (label, value) in rows {
                dt { (label) } dd { (value) }
            }
        }
    }
}

/// A query string that fails as a page (axum's own rejection is plain text).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Query<T>, Response> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_from_str(query)
            .map(Query)
            .map_err(|e| plain_error(StatusCode::BAD_REQUEST, &format!("Bad address: {e}")))
    }
}

/// A URL-encoded form body that fails as a page.
pub struct Form<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Form<T>, Response> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Form(value)),
            Err(e) => Err(plain_error(
                StatusCode::BAD_REQUEST,
                &format!("The form could not be read: {}", e.body_text()),
            )),
        }
    }
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    let map: serde_json::Map<String, Value> = pairs
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())
}
