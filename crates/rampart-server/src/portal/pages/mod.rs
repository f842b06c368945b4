//! The portal's pages, one module per area. Each module's `routes()` lists its own paths;
//! handlers take a [`super::html::Ctx`] (signed in) and answer HTML or a redirect.

pub mod actions;
pub mod alerts;
pub mod devices;
pub mod hunting;
pub mod incidents;
pub mod indicators;
pub mod login;
pub mod rules;
pub mod settings;

use axum::Router;

use crate::app::App;

/// Every page route.
pub fn routes() -> Router<App> {
    Router::new()
        .merge(login::routes())
        .merge(incidents::routes())
        .merge(alerts::routes())
        .merge(devices::routes())
        .merge(actions::routes())
        .merge(hunting::routes())
        .merge(indicators::routes())
        .merge(rules::routes())
        .merge(settings::routes())
}
