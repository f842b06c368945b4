//! Errors as RFC 9457 `application/problem+json`, and the JSON extractor that turns every
//! malformed body into one (axum's own rejections are plain text).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error answer: status, a short title and what exactly went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(skip)]
    pub status: StatusCode,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    #[serde(rename = "status")]
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extra machine-readable members (e.g. a KQL error's line and column).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// Seconds to wait before retrying (429, 503).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            code: status.as_u16(),
            detail: Some(detail.into()),
            extra: None,
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, format!("no such {what}"))
    }

    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "sign in, or send 'Authorization: Bearer <token>'",
        )
    }

    pub fn unauthorized_agent() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "agents present the client certificate they enrolled with",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, detail)
    }

    pub fn too_busy(retry_after: u64) -> Problem {
        Problem::too_many_requests("ingest is at capacity; retry later", retry_after)
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(detail: impl Into<String>, retry_after: u64) -> Problem {
        Problem {
            retry_after: Some(retry_after),
            ..Problem::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// A fault of ours: logged in full, answered without internals.
    pub fn internal(error: impl std::fmt::Display) -> Problem {
        tracing::error!(%error, "request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the server log)",
        )
    }

    /// A KQL error, located: 400 with `line`, `column`, `suggestion` and `kind` members (408
    /// when the query ran past its timeout).
    pub fn kql(error: &rampart_kql::KqlError, source: &str) -> Problem {
        let status = match error.kind {
            rampart_kql::ErrorKind::Execution if error.message.contains("timeout") => {
                StatusCode::REQUEST_TIMEOUT
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let mut problem = Problem::new(status, error.render(source));
        if let Some(at) = error.location(source) {
            problem = problem.with("line", at.line).with("column", at.column);
        }
        if let Some(s) = &error.suggestion {
            problem = problem.with("suggestion", s.clone());
        }
        problem.with("kind", format!("{:?}", error.kind).to_lowercase())
    }

    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Problem {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_string(), value.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `Json<T>` whose rejections are problems: 400 for malformed or mistyped JSON (with serde's
/// line and column), 415 without a JSON content type, 413 past the body limit.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    let status = rejection.status();
    let detail = match &rejection {
        JsonRejection::JsonDataError(e) => format!("invalid request: {}", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => format!("malformed JSON: {}", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => {
            "send 'Content-Type: application/json'".to_string()
        }
        other => other.body_text(),
    };
    let status = match status {
        // A data error (wrong field type, missing field) is the client's mistake too.
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        s => s,
    };
    Problem::new(status, detail)
}

/// Answers with `value` as JSON.
pub fn json<T: Serialize>(value: &T) -> Response {
    axum::Json(value).into_response()
}

/// Results of handlers.
pub type ApiResult<T = Response> = Result<T, Problem>;

impl From<rampart_state::Error> for Problem {
    fn from(e: rampart_state::Error) -> Problem {
        use rampart_state::Error as E;
        match e {
            E::NotFound(what) => Problem::not_found(what),
            E::Conflict(why) => Problem::conflict(why),
            E::Invalid { field, reason } => {
                Problem::bad_request(format!("invalid {field}: {reason}")).with("field", field)
            }
            other => Problem::internal(other),
        }
    }
}

/// `Query<T>` whose rejections are 400 problems naming the bad parameter.
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded_from(query).map(Query)
    }
}

fn serde_urlencoded_from<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| Problem::bad_request("malformed query string"))?,
    )
    .map(|q| q.0)
    .map_err(|e| Problem::bad_request(format!("invalid query: {}", e.body_text())))
}
