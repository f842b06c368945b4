//! `rampart server`: the XDR server. One process with embedded storage in one data directory:
//! it takes in telemetry (event-log uploads now; agents next), stores every event for hunting,
//! detects on the stream, raises alerts, groups them into incidents, and serves it all through
//! an authenticated REST API (`/api/v1`, described by `/api/openapi.json`).
//!
//! Modules, in the order a request meets them: [`listener`] (TCP, TLS, HTTP), [`routes`] (the
//! one route table: router, authorisation and OpenAPI), [`auth`] (bearer tokens → principal),
//! `api` (handlers), [`pipeline`] (event logs → store + Sigma), `telemetry` (agent rows → store
//! + Sigma, exactly once), `alerting` (detections → alerts → incidents), [`rules`] (each
//! tenant's compiled rules, Rampart's own included).

mod alerting;
mod api;
pub mod app;
pub mod auth;
mod bootstrap;
pub mod config;
mod custom;
pub mod indicators;
pub mod listener;
mod local_agent;
pub mod metrics;
pub mod pipeline;
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

/// The whole HTTP application over `app`.
pub fn router(app: App) -> Router {
    routes::router(api::routes())
        .fallback(|| async { Problem::not_found("route") })
        .layer(middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(app.config.limits.max_json_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), finish))
        .with_state(app)
}

/// Every response: errors as problem+json (axum's own rejections are plain text), security
/// headers, and a count by status class.
async fn finish(State(app): State<App>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let status = response.status();
    app.metrics.count_response(status.as_u16());
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        response = plain_to_problem(status, response).await;
    }
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
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
