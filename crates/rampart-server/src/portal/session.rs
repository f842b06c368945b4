//! Who is looking at the portal, and the checks every portal request passes: the session
//! cookie and the CSRF token of every state change.
//!
//! A session is the API's own login session (`POST /api/v1/auth/login`), kept in an HttpOnly,
//! SameSite=Strict cookie (Secure over HTTPS). Each change (any method but GET/HEAD) must carry
//! the session's CSRF token, as the `_csrf` form field or the `X-CSRF-Token` header; the token
//! is derived from the session secret, so it cannot be guessed without the cookie and dies with
//! the session. Sign-in itself is protected by a double-submit token (cookie and field equal).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use rampart_state::{Principal, TokenKind};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::listener::Peer;

pub const SESSION_COOKIE: &str = "rampart_session";
pub const LOGIN_COOKIE: &str = "rampart_login";
pub const THEME_COOKIE: &str = "rampart_theme";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The portal's Content-Security-Policy: our own scripts, styles and images only, no inline
/// script or style, forms only to ourselves, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest form body the guard reads to find the CSRF token.
const MAX_FORM_BYTES: usize = 1 << 20;

/// The signed-in user of a portal request.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub principal: Principal,
    /// The session secret (the cookie's value): the portal calls the API with it.
    pub token: String,
    pub csrf: String,
    pub peer: Peer,
}

/// Light, dark or the system's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Theme {
    System,
    Light,
    Dark,
}

impl Theme {
    pub fn name(self) -> &'static str {
        match self {
            Theme::System => "system",
            Theme::Light => "light",
            Theme::Dark => "dark",
        }
    }

    pub fn parse(s: &str) -> Option<Theme> {
        match s {
            "system" => Some(Theme::System),
            "light" => Some(Theme::Light),
            "dark" => Some(Theme::Dark),
            _ => None,
        }
    }
}

/// Settings every page reads (a request extension, set by [`guard`]).
#[derive(Clone, Copy, Debug)]
pub struct Prefs {
    pub theme: Theme,
    /// Cookies get the Secure flag (the server speaks HTTPS).
    pub secure: bool,
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Strict always, Secure over HTTPS;
/// `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    // Names are ours and values are hex or base64url: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The CSRF token of the session whose secret is `token`.
pub fn csrf_token(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"rampart-portal-csrf\0");
    hash.update(token.as_bytes());
    hex::encode(&hash.finalize()[..20])
}

/// A fresh random token (sign-in double submit).
pub fn random_token() -> String {
    let mut bytes = [0u8; 20];
    // Without system randomness the token is empty and every sign-in fails its check.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    hex::encode(bytes)
}

/// Equality that takes the same time wherever the strings differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Paths a signed-out visitor may open: the sign-in page (`/`), sign-in itself and assets.
fn is_public(path: &str) -> bool {
    path == "/" || path == "/login" || path.starts_with("/static/")
}

/// Every portal request: resolves the session cookie into a [`Viewer`], sends signed-out
/// visitors to the sign-in page and checks the CSRF token of every change. (The server's last
/// layer gives every page the portal's [`CSP`].)
pub async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let secure = !app.config.insecure_http;
    let theme = cookie(req.headers(), THEME_COOKIE)
        .and_then(Theme::parse)
        .unwrap_or(Theme::System);
    req.extensions_mut().insert(Prefs { theme, secure });
    let peer = req.extensions().get::<Peer>().cloned();
    let viewer = match (cookie(req.headers(), SESSION_COOKIE), peer) {
        (Some(token), Some(peer)) => match app.db.authenticate_token(token).await {
            Ok(Some(principal)) if principal.token_kind == TokenKind::Session => Some(Viewer {
                csrf: csrf_token(token),
                token: token.to_string(),
                principal,
                peer,
            }),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "portal: session lookup failed");
                return super::html::plain_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The state database did not answer. Try again in a moment.",
                );
            }
        },
        _ => None,
    };
    let path = req.uri().path().to_string();
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if viewer.is_none() && !is_public(&path) {
        let response = if changes {
            super::html::plain_error(
                StatusCode::FORBIDDEN,
                "Your session has ended. Sign in again and repeat the change.",
            )
        } else {
            let next_url = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = format!(
                "/?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", next_url)
                    .finish()
            );
            let mut r = Redirect::to(&target).into_response();
            if cookie(req.headers(), SESSION_COOKIE).is_some() {
                r.headers_mut().append(
                    header::SET_COOKIE,
                    set_cookie(SESSION_COOKIE, "", 0, secure),
                );
            }
            r
        };
        return response;
    }
    if changes {
        let expected = match (&viewer, path.as_str()) {
            (_, "/login") => cookie(req.headers(), LOGIN_COOKIE).map(str::to_string),
            (Some(v), _) => Some(v.csrf.clone()),
            (None, _) => None,
        };
        let (checked, rebuilt) = check_csrf(req, expected.as_deref()).await;
        let Some(rebuilt) = rebuilt else {
            return super::html::plain_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large.",
            );
        };
        if !checked {
            tracing::warn!(path = %path, "portal: change refused, CSRF token missing or wrong");
            return super::html::plain_error(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this portal. Reload the page and try again.",
            );
        }
        req = rebuilt;
    }
    if let Some(viewer) = viewer {
        req.extensions_mut().insert(viewer);
    }
    next.run(req).await
}

/// Whether the request carries `expected` as its CSRF token (header, or field of a URL-encoded
/// form), and the request again with its body restored (none when the body is too large).
async fn check_csrf(req: Request, expected: Option<&str>) -> (bool, Option<Request>) {
    let from_header = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return (false, None);
    };
    let from_form = is_form
        .then(|| {
            form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v.into_owned())
        })
        .flatten();
    let ok = expected.is_some_and(|expected| {
        [from_header, from_form]
            .iter()
            .flatten()
            .any(|given| same(given, expected))
    });
    (ok, Some(Request::from_parts(parts, Body::from(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_https() {
        let https = set_cookie(SESSION_COOKIE, "rps_x", 60, true);
        assert_eq!(
            https.to_str().unwrap(),
            "rampart_session=rps_x; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        let http = set_cookie(SESSION_COOKIE, "", 0, false);
        assert!(!http.to_str().unwrap().contains("Secure"));
        assert!(http.to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn the_cookie_header_is_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; rampart_session=s1"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("rampart_theme=dark"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("s1"));
        assert_eq!(cookie(&headers, THEME_COOKIE), Some("dark"));
        assert_eq!(cookie(&headers, "rampart"), None);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let a = csrf_token("rps_session_a");
        assert_eq!(a, csrf_token("rps_session_a"));
        assert_ne!(a, csrf_token("rps_session_b"));
        assert_eq!(a.len(), 40);
        assert!(
            !a.contains("session"),
            "the token does not reveal the session"
        );
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &csrf_token("rps_session_b")));
        assert!(!same("", ""), "an empty token never matches");
    }
}
