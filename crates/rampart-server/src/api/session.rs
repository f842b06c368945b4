//! Signing in and out, API tokens and users.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_state::{NewUser, Principal, Role, Time, TokenKind, UserUpdate};
use serde::Deserialize;
use serde_json::json;

use super::{Paging, audit, is_admin};
use crate::app::App;
use crate::listener::Peer;
use crate::problem::{ApiResult, Json, Problem, Query, json};

/// Longest password accepted at login (argon2 work is bounded by it).
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

pub async fn login(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(body): Json<Login>,
) -> ApiResult {
    if body.password.len() > MAX_PASSWORD_BYTES || body.username.len() > 256 {
        return Err(Problem::bad_request("username or password too long"));
    }
    let user_key = format!("user:{}", body.username.to_lowercase());
    let addr_key = format!("addr:{}", peer.addr.ip());
    throttled(&app.login_throttle, &user_key)?;
    throttled(&app.address_throttle, &addr_key)?;
    let Some(user) = app
        .db
        .verify_password(&body.username, &body.password)
        .await?
    else {
        tracing::info!(username = %body.username, "sign-in refused");
        app.login_throttle.failed(&[&user_key]);
        app.address_throttle.failed(&[&addr_key]);
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "wrong username or password",
        ));
    };
    app.login_throttle.succeeded(&[&user_key]);
    let (session, secret) = app
        .db
        .create_session(&user.tenant_id, &user.id, chrono_ttl(&app))
        .await?;
    tracing::info!(username = %user.username, "signed in");
    Ok(json(&json!({
        "token": secret,
        "expires_at": session.expires_at,
        "user": user,
    })))
}

/// 429 with Retry-After while `key` is locked out by `throttle`.
pub(crate) fn throttled(throttle: &crate::throttle::Throttle, key: &str) -> Result<(), Problem> {
    throttle.check(&[key]).map_err(|wait| {
        Problem::too_many_requests(
            "too many failed attempts: try again later",
            wait.as_secs().max(1),
        )
    })
}

fn chrono_ttl(app: &App) -> chrono::Duration {
    chrono::Duration::seconds(app.config.limits.session_secs as i64)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's own password; the current one is asked for again (a stolen session
/// alone cannot lock its user out) and failures count against sign-in's throttle. Every
/// session of the user ends; a caller signed in with a session gets a new one.
pub async fn change_password(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<PasswordChange>,
) -> ApiResult {
    if body.current_password.len() > MAX_PASSWORD_BYTES {
        return Err(Problem::bad_request("current_password too long"));
    }
    let user_key = format!("user:{}", p.username.to_lowercase());
    throttled(&app.login_throttle, &user_key)?;
    let verified = app
        .db
        .verify_password(&p.username, &body.current_password)
        .await?;
    if verified.is_none_or(|u| u.id != p.user_id) {
        app.login_throttle.failed(&[&user_key]);
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "the current password is wrong",
        ));
    }
    app.login_throttle.succeeded(&[&user_key]);
    let update = UserUpdate {
        password: Some(body.new_password),
        ..UserUpdate::default()
    };
    app.db
        .update_user(&p.tenant_id, &p.user_id, &update)
        .await?;
    audit(&app, &p, "user.password", "user", &p.user_id, json!({})).await?;
    tracing::info!(username = %p.username, "password changed");
    let session = match p.token_kind {
        TokenKind::Session => {
            let (session, secret) = app
                .db
                .create_session(&p.tenant_id, &p.user_id, chrono_ttl(&app))
                .await?;
            json!({"token": secret, "expires_at": session.expires_at})
        }
        TokenKind::Api => serde_json::Value::Null,
    };
    Ok(json(&json!({"password_changed": true, "session": session})))
}

pub async fn logout(State(app): State<App>, Extension(p): Extension<Principal>) -> ApiResult {
    app.db.revoke_token(&p.tenant_id, &p.token_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn me(Extension(p): Extension<Principal>) -> Response {
    json(&p)
}

pub async fn list_tokens(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    let owner = (!is_admin(&p)).then_some(p.user_id.as_str());
    let page = app
        .db
        .list_api_tokens(&p.tenant_id, owner, Some(TokenKind::Api), &paging.request())
        .await?;
    Ok(json(&page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    /// Defaults to the caller's role; may not exceed it.
    role: Option<Role>,
    expires_at: Option<Time>,
}

pub async fn create_token(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewToken>,
) -> ApiResult {
    let role = body.role.unwrap_or(p.role);
    if role > p.role {
        return Err(Problem::forbidden(
            "a token cannot have more rights than you",
        ));
    }
    let (token, secret) = app
        .db
        .create_api_token(&p.tenant_id, &p.user_id, &body.name, role, body.expires_at)
        .await?;
    audit(
        &app,
        &p,
        "token.create",
        "token",
        &token.id,
        json!({"name": token.name, "role": token.role}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"token": secret, "info": token})),
    )
        .into_response())
}

pub async fn revoke_token(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    if !is_admin(&p) {
        // Only one's own tokens: look among them.
        let own = app
            .db
            .list_api_tokens(
                &p.tenant_id,
                Some(&p.user_id),
                None,
                &rampart_state::PageRequest::first(rampart_state::MAX_PAGE_LIMIT),
            )
            .await?;
        if !own.items.iter().any(|t| t.id == id) {
            return Err(Problem::not_found("token"));
        }
    }
    app.db.revoke_token(&p.tenant_id, &id).await?;
    audit(&app, &p, "token.revoke", "token", &id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_users(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    Ok(json(
        &app.db.list_users(&p.tenant_id, &paging.request()).await?,
    ))
}

pub async fn create_user(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewUser>,
) -> ApiResult {
    let user = app.db.create_user(&p.tenant_id, &body).await?;
    audit(
        &app,
        &p,
        "user.create",
        "user",
        &user.id,
        json!({"username": user.username, "role": user.role}),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(user)).into_response())
}

pub async fn update_user(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<UserUpdate>,
) -> ApiResult {
    let user = app.db.update_user(&p.tenant_id, &id, &body).await?;
    let details = json!({
        "role": body.role, "scope_groups": body.scope_groups, "disabled": body.disabled,
        "password_changed": body.password.is_some(),
    });
    audit(&app, &p, "user.update", "user", &id, details).await?;
    Ok(json(&user))
}

pub async fn delete_user(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult {
    if id == p.user_id {
        return Err(Problem::conflict("you cannot delete yourself"));
    }
    app.db.delete_user(&p.tenant_id, &id).await?;
    audit(&app, &p, "user.delete", "user", &id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    name: String,
    /// The tenant's first admin.
    admin_username: String,
    admin_password: String,
}

/// Tenants are managed by the admins of the default (provider) tenant.
fn provider_admin(p: &Principal) -> Result<(), Problem> {
    if p.tenant_id == rampart_state::DEFAULT_TENANT_ID && is_admin(p) {
        Ok(())
    } else {
        Err(Problem::forbidden(
            "tenants are managed by the provider tenant's admins",
        ))
    }
}

pub async fn list_tenants(State(app): State<App>, Extension(p): Extension<Principal>) -> ApiResult {
    provider_admin(&p)?;
    Ok(json(&json!({"items": app.db.list_tenants().await?})))
}

pub async fn create_tenant(
    State(app): State<App>,
    Extension(p): Extension<Principal>,
    Json(body): Json<NewTenant>,
) -> ApiResult {
    provider_admin(&p)?;
    let tenant = app.db.create_tenant(&body.name).await?;
    let admin = NewUser {
        username: body.admin_username,
        password: body.admin_password,
        role: Role::Admin,
        scope_groups: Vec::new(),
    };
    let user = app.db.create_user(&tenant.id, &admin).await?;
    crate::rules::install_builtin(&app, &tenant.id)
        .await
        .map_err(Problem::internal)?;
    audit(
        &app,
        &p,
        "tenant.create",
        "tenant",
        &tenant.id,
        json!({"name": tenant.name, "admin": user.username}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"tenant": tenant, "admin": user})),
    )
        .into_response())
}
