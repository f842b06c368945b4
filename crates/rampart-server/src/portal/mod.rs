//! The portal: the analyst's web console, served at `/` by the server itself. Pages are
//! rendered on the server (HTML built with `maud`, escaped by default) with a little of our own
//! JavaScript; every asset is compiled into the binary.
//!
//! The portal is a client of the REST API, called in-process ([`api::Api`]) with the signed-in
//! user's session token: it shows and changes exactly what the API lets that user show and
//! change, and the API's authorisation, validation and audit apply to every change made here.
//!
//! Modules: [`session`] (cookies, CSRF, the guard every portal request passes), [`api`] (the
//! in-process API client), [`html`] (the page shell and shared pieces), [`assets`] (CSS, JS,
//! icons), and one module per area under `pages`.

pub mod api;
pub mod assets;
pub mod chart;
pub mod forms;
pub mod graph;
pub mod html;
mod pages;
pub mod session;
pub mod text;
pub mod tree;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::app::App;

/// The portal's routes, all behind [`session::guard`].
pub fn router(app: App) -> Router<App> {
    let api = api::ApiRouter(crate::api_router(&app).with_state(app.clone()));
    pages::routes()
        .route("/static/{name}", get(assets::serve))
        .route("/login", post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/theme", post(pages::login::theme))
        .layer(middleware::from_fn_with_state(app, session::guard))
        .layer(axum::Extension(api))
}

/// Whether `path` belongs to the portal rather than to the API (for the 404 of unknown paths:
/// an HTML page for a person, problem+json for a program).
pub fn is_portal_path(path: &str) -> bool {
    !(path.starts_with("/api/") || matches!(path, "/healthz" | "/readyz" | "/metrics"))
}
