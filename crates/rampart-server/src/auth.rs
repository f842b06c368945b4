//! Who is calling: bearer tokens (API tokens and login sessions) resolved to a [`Principal`],
//! and the access levels routes require. Roles are ordered: an admin may do what an analyst may,
//! an analyst what a read-only user may.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::app::App;
use crate::listener::Peer;
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

/// An enrolled agent, known by its client certificate.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub tenant: String,
    pub device_id: String,
    pub hostname: String,
}

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

/// Resolves the bearer token, if any, into a [`Principal`] request extension, or else a client
/// certificate into an [`AgentIdentity`]. A token that is present but unknown, expired or
/// revoked is refused here, whatever the route; so is a certificate of no enrolled device.
pub async fn authenticate(
    State(app): State<App>,
    mut req: Request,
    next: Next,
) -> Result<Response, Problem> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        let cert = req
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.client_cert.clone());
        if let Some(der) = cert {
            match agent(&app, &der).await {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                }
                Err(problem) => {
                    crate::routes::drain(req).await;
                    return Err(problem);
                }
            }
        }
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

/// The enrolled device a (TLS-verified) client certificate belongs to. The certificate must be
/// the one the device enrolled with: a device deleted or re-enrolled invalidates the old one.
async fn agent(app: &App, der: &[u8]) -> Result<AgentIdentity, Problem> {
    let refused = |why: &str| Problem::new(axum::http::StatusCode::UNAUTHORIZED, why.to_string());
    let claims = rampart_pki::AgentClaims::from_cert_der(der)
        .map_err(|_| refused("the client certificate is not an agent certificate"))?;
    let fingerprint = rampart_pki::cert_fingerprint(der).to_hex();
    let device = app
        .db
        .device_by_cert_fingerprint(&fingerprint)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| refused("no enrolled device has this certificate"))?;
    if device.tenant_id != claims.tenant || device.id != claims.device_id {
        return Err(refused("the certificate does not match its device"));
    }
    Ok(AgentIdentity {
        tenant: device.tenant_id,
        device_id: device.id,
        hostname: device.hostname,
    })
}
