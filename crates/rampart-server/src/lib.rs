//! `rampart server`: the XDR server. One process with embedded storage in one data directory:
//! it takes in telemetry (event-log uploads, forwarded events, agents), stores every event for hunting,
//! detects on the stream, raises alerts, groups them into incidents, and serves it all through
//! an authenticated REST API (`/api/v1`, described by `/api/openapi.json`).
//!
//! Modules, in the order a request meets them: [`listener`] (TCP, TLS, HTTP), [`routes`] (the
//! one route table: router, authorisation and OpenAPI), [`auth`] (bearer tokens → principal),
//! `api` (handlers), [`pipeline`] (event logs → store and Sigma), `telemetry` (agent rows →
//! store and Sigma, exactly once), `alerting` (detections → alerts → incidents), [`rules`] (each
//! tenant's compiled rules, Rampart's own included), and [`portal`] (the web console, a client
//! of the API inside the process).

mod alerting;
mod api;
pub mod app;
pub mod auth;
mod bootstrap;
pub mod config;
mod custom;
pub mod forwarded;
pub mod indicators;
pub mod listener;
mod local_agent;
pub mod metrics;
pub mod pipeline;
pub mod portal;
pub mod problem;
pub mod routes;
pub mod rules;
mod telemetry;
pub mod throttle;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub use bootstrap::{Started, run};

use crate::app::App;
use crate::problem::Problem;

/// The whole HTTP application over `app`: the API and the portal.
pub fn router(app: App) -> Router {
    api_router(&app)
        .merge(portal::router(app.clone()))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(app.config.limits.max_json_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), finish))
        .with_state(app)
}

/// The API's routes behind authentication, without the state (the portal calls it in-process).
pub(crate) fn api_router(app: &App) -> Router<App> {
    routes::router(api::routes()).layer(middleware::from_fn_with_state(
        app.clone(),
        auth::authenticate,
    ))
}

/// An unknown path: a page for a person, a problem for a program.
async fn not_found(req: Request) -> Response {
    if portal::is_portal_path(req.uri().path()) {
        portal::html::plain_error(StatusCode::NOT_FOUND, "There is no such page.")
    } else {
        Problem::not_found("route").into_response()
    }
}

/// Every response: errors as problem+json (axum's own rejections are plain text), security
/// headers, and a count by status class.
async fn finish(State(app): State<App>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let status = response.status();
    app.metrics.count_response(status.as_u16());
    let is_explained = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/problem+json")
                || v.as_bytes().starts_with(b"text/html")
        });
    if (status.is_client_error() || status.is_server_error()) && !is_explained {
        response = plain_to_problem(status, response).await;
    }
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let headers = response.headers_mut();
    // Pages load the portal's own script, style and images; nothing else loads anything.
    let csp = if is_page {
        portal::session::CSP
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if !app.config.insecure_http {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Rewrites a plain-text error (e.g. axum's 405, or a body over the size limit) as a problem.
async fn plain_to_problem(status: StatusCode, response: Response) -> Response {
    const MAX_DETAIL: usize = 1024;
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let text = axum::body::to_bytes(response.into_body(), MAX_DETAIL)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = Problem::new(status, detail).into_response();
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}
