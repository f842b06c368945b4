//! The portal's static files, compiled into the binary: one stylesheet, one script, the logo.
//! Their URLs carry the version, so a browser may keep them for a day and still never runs an
//! old script against a new page.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const CSS_URL: &str = concat!("/static/portal.css?v=", env!("CARGO_PKG_VERSION"));
pub const JS_URL: &str = concat!("/static/portal.js?v=", env!("CARGO_PKG_VERSION"));
pub const ICON_URL: &str = concat!("/static/icon.svg?v=", env!("CARGO_PKG_VERSION"));

const CSS: &str = include_str!("assets/portal.css");
const JS: &str = include_str!("assets/portal.js");
/// The mark, inline in every page's header and served as the favicon.
pub const LOGO_SVG: &str = include_str!("assets/icon.svg");

pub async fn serve(Path(name): Path<String>) -> Response {
    let (body, media_type) = match name.as_str() {
        "portal.css" => (CSS, "text/css; charset=utf-8"),
        "portal.js" => (JS, "text/javascript; charset=utf-8"),
        "icon.svg" => (LOGO_SVG, "image/svg+xml"),
        _ => return super::html::plain_error(StatusCode::NOT_FOUND, "There is no such file."),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    response
}
