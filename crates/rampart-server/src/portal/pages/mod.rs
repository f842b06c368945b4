//! The portal's pages, one module per area. Each module's `routes()` lists its own paths;
//! handlers take a [`super::html::Ctx`] (signed in) and answer HTML or a redirect.

pub mod login;

use axum::Router;

use crate::app::App;

/// Every page route.
pub fn routes() -> Router<App> {
    Router::new().merge(login::routes())
}
