//! Signing in and out, and the theme switch. Signed out, `/` is the sign-in form; signed in it
//! leads to the incidents queue.

use axum::extract::Extension;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Router, extract::State};
use maud::{PreEscaped, html};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::listener::Peer;
use crate::portal::api::{Api, ApiRouter};
use crate::portal::assets;
use crate::portal::html::{Ctx, Form, Query, document};
use crate::portal::session::{
    CSRF_FIELD, LOGIN_COOKIE, Prefs, SESSION_COOKIE, THEME_COOKIE, Theme, Viewer, random_token,
    set_cookie,
};

pub fn routes() -> Router<App> {
    Router::new().route("/", get(home))
}

#[derive(Deserialize, Default)]
pub struct Next {
    next: Option<String>,
}

/// Where to go after signing in: a path of ours (never another site).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/incidents",
    }
}

/// `/`: the sign-in form, or the incidents queue when signed in.
async fn home(
    viewer: Option<Extension<Viewer>>,
    Extension(prefs): Extension<Prefs>,
    Query(next): Query<Next>,
) -> Response {
    if viewer.is_some() {
        return Redirect::to(safe_next(next.next.as_deref())).into_response();
    }
    form_page(prefs, next.next.as_deref(), None, StatusCode::OK)
}

/// The sign-in form with a fresh double-submit token (cookie and field).
fn form_page(
    prefs: Prefs,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = random_token();
    let mut response = document(
        prefs.theme,
        "Sign in",
        html! {
            main.narrow #main {
                div.panel.login {
                    div.brand { (PreEscaped(assets::LOGO_SVG)) span { "Rampart" } }
                    h1 { "Sign in" }
                    @if let Some(error) = error {
                        div.notice.error role="alert" { (error) }
                    }
                    form method="post" action="/login" {
                        input type="hidden" name=(CSRF_FIELD) value=(token);
                        input type="hidden" name="next" value=(safe_next(next));
                        div.field {
                            label for="username" { "User name" }
                            input #username type="text" name="username" autocomplete="username" required autofocus;
                        }
                        div.field {
                            label for="password" { "Password" }
                            input #password type="password" name="password" autocomplete="current-password" required;
                        }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        },
    );
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &token, 3600, prefs.secure),
    );
    response
}

#[derive(Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
    next: Option<String>,
}

/// Signs in through the API (its throttling applies) and keeps the session in a cookie.
pub async fn submit(
    State(app): State<App>,
    Extension(routes): Extension<ApiRouter>,
    Extension(peer): Extension<Peer>,
    Extension(prefs): Extension<Prefs>,
    Form(form): Form<Credentials>,
) -> Response {
    let api = Api::anonymous(&routes, peer);
    let answer: Result<serde_json::Value, _> = api
        .post(
            "/api/v1/auth/login",
            json!({"username": form.username, "password": form.password}),
        )
        .await;
    match answer {
        Ok(session) => {
            let Some(token) = session.get("token").and_then(|t| t.as_str()) else {
                return form_page(
                    prefs,
                    form.next.as_deref(),
                    Some("The server gave no session."),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            };
            let mut response = Redirect::to(safe_next(form.next.as_deref())).into_response();
            let headers = response.headers_mut();
            let max_age = app.config.limits.session_secs;
            headers.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, token, max_age, prefs.secure),
            );
            headers.append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", 0, prefs.secure),
            );
            response
        }
        Err(failure) => {
            let message = match failure.status {
                StatusCode::UNAUTHORIZED => "Wrong user name or password.".to_string(),
                _ => failure.detail,
            };
            form_page(prefs, form.next.as_deref(), Some(&message), failure.status)
        }
    }
}

/// Ends the session (the API revokes it) and forgets the cookie.
pub async fn logout(ctx: Ctx) -> Response {
    // The cookie goes whatever the API says: a session that cannot be revoked now expires.
    if let Err(failure) = ctx
        .api
        .post::<serde_json::Value>("/api/v1/auth/logout", json!({}))
        .await
    {
        tracing::warn!(error = %failure, "portal: sign-out could not revoke the session");
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, ctx.prefs.secure),
    );
    response
}

#[derive(Deserialize)]
pub struct ThemeChoice {
    theme: String,
    back: Option<String>,
}

/// Keeps the chosen theme in a cookie and returns to the page it was chosen on.
pub async fn theme(ctx: Ctx, Form(choice): Form<ThemeChoice>) -> Response {
    let theme = Theme::parse(&choice.theme).unwrap_or(Theme::System);
    let mut response = Redirect::to(safe_next(choice.back.as_deref())).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(THEME_COOKIE, theme.name(), 365 * 86400, ctx.prefs.secure),
    );
    response
}
