//! The REST API, called in-process with the viewer's session token: the portal's only way to
//! read or change anything, so that it can never show or do more than the API allows.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower::ServiceExt;

use super::session::Viewer;
use crate::listener::Peer;

/// Largest API answer the portal reads (a hunting result is bounded by its row limit).
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// The API's routes, built once for the portal's in-process calls (a request extension the
/// portal's router adds).
#[derive(Clone)]
pub struct ApiRouter(pub Router);

/// The API as one signed-in user sees it.
pub struct Api {
    router: Router,
    token: Option<String>,
    peer: Peer,
}

/// An API call that did not succeed: its status and the problem's detail.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub detail: String,
    /// The whole problem document (a KQL error carries its line and column).
    pub problem: Value,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

pub type Answer<T = Value> = Result<T, Failure>;

impl Api {
    /// The API as `viewer` sees it.
    pub fn new(routes: &ApiRouter, viewer: &Viewer) -> Api {
        Api {
            router: routes.0.clone(),
            token: Some(viewer.token.clone()),
            peer: viewer.peer.clone(),
        }
    }

    /// The API as an anonymous caller from `peer` sees it (signing in).
    pub fn anonymous(routes: &ApiRouter, peer: Peer) -> Api {
        Api {
            router: routes.0.clone(),
            token: None,
            peer,
        }
    }

    /// `GET path` (with its query string).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Answer<T> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Answer<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: Value) -> Answer<T> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer<()> {
        self.call::<Value>(Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    /// One call; an empty answer (204) reads as JSON `null`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer<T> {
        let response = self.send(method, path, body).await?;
        let bytes = read(response).await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                failure(
                    StatusCode::BAD_GATEWAY,
                    format!("the answer of {path} is not JSON: {e}"),
                )
            })?
        };
        serde_json::from_value(value).map_err(|e| {
            failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected answer from {path}: {e}"),
            )
        })
    }

    /// One call whose successful answer is handed back unread, to be streamed on to the
    /// browser (downloads); a refusal is read into its [`Failure`].
    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer<Response> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        let mut request = request
            .body(body)
            .map_err(|e| failure(StatusCode::BAD_REQUEST, format!("not a valid request: {e}")))?;
        request.extensions_mut().insert(self.peer.clone());
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = read(response).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).trim().to_string()));
        let detail = value
            .get("detail")
            .and_then(Value::as_str)
            .or_else(|| value.as_str().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
            .to_string();
        Err(Failure {
            status,
            detail,
            problem: value,
        })
    }
}

/// A failure of the portal's own making (not the API's answer).
fn failure(status: StatusCode, detail: String) -> Failure {
    Failure {
        status,
        problem: serde_json::json!({"detail": detail}),
        detail,
    }
}

/// The whole body of an API answer, bounded.
async fn read(response: Response) -> Answer<axum::body::Bytes> {
    axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|e| failure(StatusCode::BAD_GATEWAY, format!("answer unreadable: {e}")))
}

/// `path?k=v&…`, skipping empty values.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(k, v);
        any = true;
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_string()
    }
}

/// A path segment (an id from a URL) made safe to put back into a path.
pub fn segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// `base` with one more query pair (it may already have a query string).
pub fn with_query_appended(base: &str, key: &str, value: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    let pair = form_urlencoded::Serializer::new(String::new())
        .append_pair(key, value)
        .finish();
    format!("{base}{separator}{pair}")
}
