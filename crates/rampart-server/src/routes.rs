//! The API's one route table. The router, the authorisation of every route and the OpenAPI
//! document are all built from it, so none can drift from the others — and a test that walks
//! the OpenAPI document walks every route the server has.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::{Access, AgentIdentity, Principal, may};
use crate::problem::Problem;

/// One operation of the API.
pub struct Route {
    pub method: Method,
    /// axum's syntax: `/api/v1/alerts/{id}`.
    pub path: &'static str,
    pub access: Access,
    pub tag: &'static str,
    pub summary: &'static str,
    /// What the summary leaves out (OpenAPI `description`).
    pub description: Option<&'static str>,
    /// Optional parameters the operation reads beyond its path: (where — `header` or `query`,
    /// name, description).
    pub parameters: Vec<(&'static str, &'static str, &'static str)>,
    /// The media type of the request body (POST, PATCH, PUT).
    pub body_type: &'static str,
    pub handler: MethodRouter<App>,
}

impl Route {
    pub fn new(
        method: Method,
        path: &'static str,
        access: Access,
        tag: &'static str,
        summary: &'static str,
        handler: MethodRouter<App>,
    ) -> Route {
        Route {
            method,
            path,
            access,
            tag,
            summary,
            description: None,
            parameters: Vec::new(),
            body_type: "application/json",
            handler,
        }
    }

    /// Documents the operation beyond its summary.
    pub fn describe(mut self, description: &'static str) -> Route {
        self.description = Some(description);
        self
    }

    /// Documents an optional request header the operation reads.
    pub fn header(mut self, name: &'static str, description: &'static str) -> Route {
        self.parameters.push(("header", name, description));
        self
    }

    /// Documents an optional query parameter the operation reads.
    pub fn query(mut self, name: &'static str, description: &'static str) -> Route {
        self.parameters.push(("query", name, description));
        self
    }

    /// The request body is of this media type rather than JSON.
    pub fn accepts(mut self, media_type: &'static str) -> Route {
        self.body_type = media_type;
        self
    }
}

/// The router of `routes`: each operation behind the check of its access level.
pub fn router(routes: Vec<Route>) -> Router<App> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<App>> = BTreeMap::new();
    for route in routes {
        let access = route.access;
        let guarded =
            route
                .handler
                .route_layer(middleware::from_fn(move |req: Request, next: Next| {
                    authorize(access, req, next)
                }));
        let merged = match by_path.remove(route.path) {
            Some(existing) => existing.merge(guarded),
            None => guarded,
        };
        by_path.insert(route.path, merged);
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

/// Lets the request through when its principal (set by [`crate::auth::authenticate`]) has the
/// route's access level: 401 without one, 403 with too little.
async fn authorize(access: Access, req: Request, next: Next) -> Result<Response, Problem> {
    let agent = req.extensions().get::<AgentIdentity>().is_some();
    let refusal = match req.extensions().get::<Principal>() {
        _ if access == Access::Public => None,
        _ if access == Access::Agent => (!agent).then(Problem::unauthorized_agent),
        None => Some(Problem::unauthorized()),
        Some(p) if !may(p, access) => Some(Problem::forbidden(format!(
            "this needs the {} role",
            access.name()
        ))),
        Some(_) => None,
    };
    match refusal {
        None => Ok(next.run(req).await),
        Some(problem) => {
            drain(req).await;
            Err(problem)
        }
    }
}

/// Reads (a bounded part of) a refused request's body, so that the connection can carry the
/// client's next request: HTTP/1.1 cannot reuse a connection whose request body was left unread.
pub async fn drain(req: Request) {
    const MAX_DRAINED: usize = 1 << 20;
    let _ = axum::body::to_bytes(req.into_body(), MAX_DRAINED).await;
}

/// The OpenAPI 3.1 document of `routes`. Each operation names the role it needs in
/// `x-rampart-access` (public, agent, readonly, analyst, admin).
pub fn openapi(routes: &[Route]) -> Value {
    let mut paths = serde_json::Map::new();
    for route in routes {
        let mut operation = json!({
            "tags": [route.tag],
            "summary": route.summary,
            "operationId": operation_id(&route.method, route.path),
            "x-rampart-access": route.access.name(),
            "responses": {
                "200": {"description": "OK"},
                "400": {"$ref": "#/components/responses/Problem"},
                "401": {"$ref": "#/components/responses/Problem"},
                "403": {"$ref": "#/components/responses/Problem"},
            },
        });
        if let Some(description) = route.description {
            operation["description"] = json!(description);
        }
        let parameters: Vec<Value> = path_parameters(route.path)
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .chain(route.parameters.iter().map(|(place, name, description)| {
                json!({"name": name, "in": place, "required": false, "description": description, "schema": {"type": "string"}})
            }))
            .collect();
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        match route.access {
            Access::Public => operation["security"] = json!([]),
            Access::Agent => operation["security"] = json!([{"agentCertificate": []}]),
            _ => {}
        }
        if matches!(route.method, Method::POST | Method::PATCH | Method::PUT) {
            let schema = match route.body_type {
                "application/json" => json!({"type": "object"}),
                _ => json!({"type": "string", "format": "binary"}),
            };
            operation["requestBody"] = json!({"content": {route.body_type: {"schema": schema}}});
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.as_str().to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Rampart API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Rampart's REST API. Authenticate with `Authorization: Bearer <token>` (a session from POST /api/v1/auth/login or an API token). Errors are application/problem+json (RFC 9457).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "agentCertificate": {"type": "mutualTLS", "description": "An agent's client certificate, issued at enrollment."},
            },
            "responses": {
                "Problem": {
                    "description": "An error (RFC 9457)",
                    "content": {"application/problem+json": {"schema": {"type": "object", "properties": {
                        "type": {"type": "string"}, "title": {"type": "string"},
                        "status": {"type": "integer"}, "detail": {"type": "string"},
                    }}}},
                },
            },
        },
    })
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
}

/// `get_api_v1_alerts_id`: unique per operation, stable across releases.
fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_ascii_lowercase();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            seg.chars()
                .filter(|c| !matches!(c, '{' | '}'))
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

/// The `State` extractor, re-exported for handlers' signatures.
pub type AppState = State<App>;
