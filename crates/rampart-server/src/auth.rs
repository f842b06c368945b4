//! Who is calling: bearer tokens (API tokens and login sessions) resolved to a [`Principal`],
//! and the access levels routes require. Roles are ordered: an admin may do what an analyst may,
//! an analyst what a read-only user may.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;
use crate::problem::Problem;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Anyone (health, the OpenAPI document, login).
    Public,
    /// An enrolled agent, by its client certificate.
    Agent,
    /// Any signed-in user: reading.
    ReadOnly,
    /// Triage and response: changing alerts, incidents, running actions and hunting.
    Analyst,
    /// Users, tokens, rules, settings.
    Admin,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Agent => "agent",
            Access::ReadOnly => "readonly",
            Access::Analyst => "analyst",
            Access::Admin => "admin",
        }
    }
}

pub use rampart_state::{Principal, Role};

/// Whether `principal` may use a route of `access`.
pub fn may(principal: &Principal, access: Access) -> bool {
    match access {
        Access::Public | Access::ReadOnly => true,
        // Agents authenticate by certificate, never by a user's token.
        Access::Agent => false,
        Access::Analyst => matches!(principal.role, Role::Analyst | Role::Admin),
        Access::Admin => matches!(principal.role, Role::Admin),
    }
}

/// Resolves the bearer token, if any, into a [`Principal`] request extension. A token that is
/// present but unknown, expired or revoked is refused here, whatever the route.
pub async fn authenticate(
    State(app): State<App>,
    mut req: Request,
    next: Next,
) -> Result<Response, Problem> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(next.run(req).await);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let principal = match token {
        None => Err(Problem::bad_request(
            "Authorization must be 'Bearer <token>'",
        )),
        Some(token) => match app.db.authenticate_token(&token).await {
            Ok(Some(principal)) => Ok(principal),
            Ok(None) => Err(Problem::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "the token is unknown, expired or revoked",
            )),
            Err(e) => Err(Problem::internal(e)),
        },
    };
    match principal {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            Ok(next.run(req).await)
        }
        Err(problem) => {
            crate::routes::drain(req).await;
            Err(problem)
        }
    }
}
