//! Settings, one tab each: the viewer's own account, users (admins), API tokens, device groups
//! and agent enrollment tokens (admins). Tabs the viewer's role cannot use are not shown; the
//! API refuses their changes anyway.
//!
//! Secrets (a new API token, a new enrollment token) are shown once, on the answer to the form
//! that created them and never in a URL, as the API shows them once.
//!
//! The end of the module holds the form pieces the indicators and rules pages share with it:
//! device-group choices, repeated form fields, times typed into forms, the confirmation step.

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{TimeDelta, Utc};
use maud::{Markup, html};
use rampart_state::{
    ApiToken, DeviceGroup, EnrollmentToken, Page, Principal, Role, Time, User, limits,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Access;
use crate::portal::api::{self, Failure};
use crate::portal::forms::{Confirm, Fields, failure};
use crate::portal::html::{self, Ctx, Form, Query, Section};
use crate::portal::session::{SESSION_COOKIE, set_cookie};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/settings", get(account))
        .route("/settings/password", post(change_own_password))
        .route("/settings/users", get(users).post(create_user))
        .route("/settings/users/{id}", get(user))
        .route("/settings/users/{id}/access", post(set_access))
        .route("/settings/users/{id}/disabled", post(set_disabled))
        .route("/settings/users/{id}/password", post(set_password))
        .route(
            "/settings/users/{id}/delete",
            get(confirm_delete_user).post(delete_user),
        )
        .route("/settings/tokens", get(tokens).post(create_token))
        .route(
            "/settings/tokens/{id}/revoke",
            get(confirm_revoke_token).post(revoke_token),
        )
        .route("/settings/groups", get(groups).post(create_group))
        .route(
            "/settings/groups/{id}/delete",
            get(confirm_delete_group).post(delete_group),
        )
        .route(
            "/settings/enrollment",
            get(enrollment).post(create_enrollment),
        )
        .route(
            "/settings/enrollment/{id}/revoke",
            get(confirm_revoke_enrollment).post(revoke_enrollment),
        )
}

/// Rows per page of the lists.
const PAGE_SIZE: &str = "100";
/// Enough to find one user or token by id in a tenant's list (the API has no single GET).
const LOOKUP_SIZE: &str = "1000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Account,
    Users,
    Tokens,
    Groups,
    Enrollment,
}

impl Tab {
    const ALL: [Tab; 5] = [
        Tab::Account,
        Tab::Users,
        Tab::Tokens,
        Tab::Groups,
        Tab::Enrollment,
    ];

    fn label(self) -> &'static str {
        match self {
            Tab::Account => "Your account",
            Tab::Users => "Users",
            Tab::Tokens => "API tokens",
            Tab::Groups => "Device groups",
            Tab::Enrollment => "Enrollment tokens",
        }
    }

    fn href(self) -> &'static str {
        match self {
            Tab::Account => "/settings",
            Tab::Users => "/settings/users",
            Tab::Tokens => "/settings/tokens",
            Tab::Groups => "/settings/groups",
            Tab::Enrollment => "/settings/enrollment",
        }
    }

    /// What the API asks of the viewer to use the tab at all.
    fn needs(self) -> Access {
        match self {
            Tab::Users | Tab::Enrollment => Access::Admin,
            Tab::Account | Tab::Tokens | Tab::Groups => Access::ReadOnly,
        }
    }
}

/// A settings page: the tabs the viewer may use, the notice of the change just made, then
/// `body`; answered with the status of `failure` (a refused form, which `body` shows).
fn shell(
    ctx: &Ctx,
    tab: Tab,
    notice: Option<&str>,
    failure: Option<&Failure>,
    body: Markup,
) -> Response {
    let mut response = ctx.page(Section::Settings, "Settings", html! {
        nav.tabs aria-label="Settings" {
            @for t in Tab::ALL {
                @if ctx.can(t.needs()) {
                    a href=(t.href()) aria-current=[(t == tab).then_some("page")] { (t.label()) }
                }
            }
        }
        (html::notice(notice))
        (body)
    });
    if let Some(f) = failure {
        *response.status_mut() = f.status;
    }
    response
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    cursor: Option<String>,
    notice: Option<String>,
}

impl ListQuery {
    /// The list's API path, one page at `cursor`.
    fn api(&self, path: &str) -> String {
        api::with_query(
            path,
            &[
                ("limit", PAGE_SIZE),
                ("cursor", self.cursor.as_deref().unwrap_or("")),
            ],
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Your account

fn role_text(role: Role) -> &'static str {
    match role {
        Role::Readonly => {
            "Sees incidents, alerts, devices, hunting results and settings; changes nothing."
        }
        Role::Analyst => {
            "Triage and response: changes alerts and incidents, runs hunting queries and response \
             actions, manages indicators and your own API tokens."
        }
        Role::Admin => {
            "Everything an analyst does, plus users, detection rules, device groups and agent \
             enrollment."
        }
    }
}

async fn account(ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    account_page(&ctx, q.notice.as_deref(), None).await
}

/// The account tab; `refused`: a password change the API refused, shown beside its form.
async fn account_page(ctx: &Ctx, notice: Option<&str>, refused: Option<&Failure>) -> Response {
    let (me, groups) = tokio::join!(
        ctx.api.get::<Principal>("/api/v1/auth/me"),
        Groups::fetch(ctx)
    );
    let me = match me {
        Ok(me) => me,
        Err(f) => return ctx.failure(Section::Settings, &f),
    };
    shell(
        ctx,
        Tab::Account,
        notice,
        refused,
        html! {
            div.panel #account {
                h2 { "Your account" }
                (html::facts(&[
                    ("User name", html! { strong { (me.username) } }),
                    ("Role", html! { span.pill { (me.role.as_str()) } " " span.muted { (role_text(me.role)) } }),
                    ("Device groups", groups.scope(&me.scope.0)),
                    ("Tenant", html! { code { (me.tenant_id) } }),
                ]))
                p.muted.settings-hint {
                    "Your role and device groups are set by an administrator. "
                    @if ctx.can(Access::Analyst) {
                        "For scripts and integrations, create an "
                        a href=(Tab::Tokens.href()) { "API token" }
                        " rather than using your password."
                    }
                }
            }
            form.panel #own-password method="post" action="/settings/password" {
                h2 { "Change your password" }
                @if let Some(f) = refused {
                    (html::failure_box(f))
                }
                (ctx.csrf())
                div.field {
                    label for="current-password" { "Current password" }
                    input #current-password type="password" name="current_password" required
                        autocomplete="current-password";
                }
                div.field {
                    label for="own-new-password" { "New password" }
                    input #own-new-password type="password" name="new_password" required
                        autocomplete="new-password" minlength=(limits::PASSWORD_MIN_CHARS);
                    span.hint { "At least " (limits::PASSWORD_MIN_CHARS) " characters. Your other sessions end; API tokens stay." }
                }
                div.field {
                    label for="own-new-password-again" { "New password again" }
                    input #own-new-password-again type="password" name="again" required
                        autocomplete="new-password" minlength=(limits::PASSWORD_MIN_CHARS);
                }
                button type="submit" { "Change password" }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct OwnPassword {
    current_password: String,
    new_password: String,
    again: String,
}

/// Changes the viewer's password through the API and keeps them signed in with the session it
/// hands back (the API ends every session of the user, this one included).
async fn change_own_password(ctx: Ctx, Form(form): Form<OwnPassword>) -> Response {
    if form.new_password != form.again {
        let f = failure(
            StatusCode::BAD_REQUEST,
            "The new password and its repetition differ.",
        );
        return account_page(&ctx, None, Some(&f)).await;
    }
    let change = json!({
        "current_password": form.current_password,
        "new_password": form.new_password,
    });
    match ctx.api.post::<Value>("/api/v1/auth/password", change).await {
        Ok(answer) => {
            let mut response = html::after_change(
                "/settings",
                "Password changed; your other sessions have ended.",
            );
            if let Some(token) = answer["session"]["token"].as_str() {
                response.headers_mut().append(
                    header::SET_COOKIE,
                    set_cookie(
                        SESSION_COOKIE,
                        token,
                        ctx.app.config.limits.session_secs,
                        ctx.prefs.secure,
                    ),
                );
            }
            response
        }
        Err(f) => account_page(&ctx, None, Some(&f)).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Users

async fn users(ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    users_page(&ctx, &q, None).await
}

/// The users tab; `creating` is a refused creation, shown beside its form as typed.
async fn users_page(ctx: &Ctx, q: &ListQuery, creating: Option<(&Fields, &Failure)>) -> Response {
    let path = q.api("/api/v1/users");
    let (list, groups) = tokio::join!(ctx.api.get::<Page<User>>(&path), Groups::fetch(ctx));
    let list = match list {
        Ok(list) => list,
        Err(f) => return shell(ctx, Tab::Users, None, Some(&f), html::failure_box(&f)),
    };
    let typed = creating.map(|(form, _)| form);
    let body = html! {
        details.panel.create-panel #create-user open[creating.is_some()] {
            summary { "Create a user" }
            @if let Some((_, failure)) = creating {
                (html::failure_box(failure))
            }
            form method="post" action="/settings/users" {
                (ctx.csrf())
                div.form-grid {
                    div.field {
                        label for="new-username" { "User name" }
                        input #new-username type="text" name="username" required autocomplete="off"
                            value=(typed.map_or("", |f| f.get("username")));
                    }
                    div.field {
                        label for="new-password" { "Password" }
                        input #new-password type="password" name="password" required autocomplete="new-password"
                            minlength=(limits::PASSWORD_MIN_CHARS);
                        span.hint { "At least " (limits::PASSWORD_MIN_CHARS) " characters." }
                    }
                    div.field {
                        label for="new-role" { "Role" }
                        (role_select("new-role", typed.map_or("analyst", |f| f.get("role")), Role::Admin))
                    }
                }
                (groups.choices("Device groups this user may see", &typed.map(|f| f.all("scope_groups")).unwrap_or_default()))
                button type="submit" { "Create user" }
            }
        }
        div.table-wrap {
            table.grid #users {
                thead { tr {
                    th { "User" } th { "Role" } th { "Device groups" } th { "Status" }
                    th { "Last sign-in" } th { "Created" } th { span.visually-hidden { "Manage" } }
                } }
                tbody {
                    @for u in &list.items {
                        tr {
                            td { a.user-link href={"/settings/users/" (api::segment(&u.id))} { (u.username) }
                                @if u.id == ctx.viewer.principal.user_id { " " span.muted { "(you)" } } }
                            td { (u.role.as_str()) }
                            td { (groups.scope(&u.scope_groups.0)) }
                            td { (user_status(u)) }
                            td { @if let Some(t) = &u.last_login_at { (html::time(t)) } @else { span.muted { "never" } } }
                            td { (html::time(&u.created_at)) }
                            td.actions { a.button.small.quiet href={"/settings/users/" (api::segment(&u.id))} { "Manage" } }
                        }
                    }
                }
            }
            @if list.items.is_empty() {
                p.empty { "No users on this page." }
            }
        }
        (html::pager("/settings/users", list.next.as_deref()))
    };
    shell(
        ctx,
        Tab::Users,
        q.notice.as_deref(),
        creating.map(|(_, f)| f),
        body,
    )
}

fn user_status(u: &User) -> Markup {
    if u.disabled {
        html::status("disabled")
    } else {
        html::status("active")
    }
}

/// A role choice offering no more than `up_to` (a token cannot outrank its owner).
fn role_select(id: &str, selected: &str, up_to: Role) -> Markup {
    html! {
        select id=(id) name="role" {
            @for role in Role::ALL.iter().filter(|r| **r <= up_to) {
                option value=(role.as_str()) selected[role.as_str() == selected] { (role.as_str()) }
            }
        }
    }
}

async fn create_user(ctx: Ctx, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let answer = ctx
        .api
        .post::<User>(
            "/api/v1/users",
            json!({
                "username": form.get("username"),
                "password": form.get("password"),
                "role": form.get("role"),
                "scope_groups": form.all("scope_groups"),
            }),
        )
        .await;
    match answer {
        Ok(u) => html::after_change("/settings/users", &format!("User {} created.", u.username)),
        Err(f) => users_page(&ctx, &ListQuery::default(), Some((&form, &f))).await,
    }
}

/// The user `id` from the tenant's list (the API has no single-user read).
async fn find_user(ctx: &Ctx, id: &str) -> Result<User, Failure> {
    let list = ctx
        .api
        .get::<Page<User>>(&api::with_query("/api/v1/users", &[("limit", LOOKUP_SIZE)]))
        .await?;
    list.items
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| failure(StatusCode::NOT_FOUND, "There is no such user."))
}

async fn user(ctx: Ctx, Path(id): Path<String>, Query(q): Query<ListQuery>) -> Response {
    user_page(&ctx, &id, q.notice.as_deref(), None).await
}

/// One user's page: facts and the forms that change them; `failure` is a refused change.
async fn user_page(
    ctx: &Ctx,
    id: &str,
    notice: Option<&str>,
    failure: Option<&Failure>,
) -> Response {
    let (found, groups) = tokio::join!(find_user(ctx, id), Groups::fetch(ctx));
    let u = match found {
        Ok(u) => u,
        Err(f) => return shell(ctx, Tab::Users, None, Some(&f), html::failure_box(&f)),
    };
    let base = format!("/settings/users/{}", api::segment(&u.id));
    let yourself = u.id == ctx.viewer.principal.user_id;
    let body = html! {
        p { a href=(Tab::Users.href()) { "← All users" } }
        (html::notice(notice))
        @if let Some(f) = failure { (html::failure_box(f)) }
        div.cols-even #user {
            div.panel {
                h2 { (u.username) @if yourself { " " span.muted { "(you)" } } }
                (html::facts(&[
                    ("Role", html! { (u.role.as_str()) }),
                    ("Device groups", groups.scope(&u.scope_groups.0)),
                    ("Status", user_status(&u)),
                    ("Last sign-in", html! { @if let Some(t) = &u.last_login_at { (html::time(t)) } @else { "never" } }),
                    ("Created", html::time(&u.created_at)),
                    ("ID", html! { code { (u.id) } }),
                ]))
                @if !yourself {
                    div.row.settings-actions {
                        form.inline method="post" action={(base) "/disabled"} {
                            (ctx.csrf())
                            input type="hidden" name="disabled" value=(if u.disabled { "false" } else { "true" });
                            button.quiet type="submit" { (if u.disabled { "Enable sign-in" } else { "Disable sign-in" }) }
                        }
                        a.button.danger href={(base) "/delete"} { "Delete user…" }
                    }
                }
            }
            div {
                form.panel #user-access method="post" action={(base) "/access"} {
                    h2 { "Role and device groups" }
                    (ctx.csrf())
                    div.field {
                        label for="user-role" { "Role" }
                        (role_select("user-role", u.role.as_str(), Role::Admin))
                    }
                    (groups.choices("Device groups this user may see", &u.scope_groups.0))
                    button type="submit" { "Save" }
                }
                form.panel #user-password method="post" action={(base) "/password"} {
                    h2 { "Reset password" }
                    (ctx.csrf())
                    div.field {
                        label for="user-new-password" { "New password" }
                        input #user-new-password type="password" name="password" required
                            autocomplete="new-password" minlength=(limits::PASSWORD_MIN_CHARS);
                        span.hint { "At least " (limits::PASSWORD_MIN_CHARS) " characters. The user's sessions end; API tokens stay." }
                    }
                    button type="submit" { "Set password" }
                }
            }
        }
    };
    shell(ctx, Tab::Users, None, failure, body)
}

/// PATCH /api/v1/users/{id} with `change`; back to the user's page with `done` or the refusal.
async fn patch_user(ctx: &Ctx, id: &str, change: Value, done: &str) -> Response {
    let path = format!("/api/v1/users/{}", api::segment(id));
    match ctx.api.patch::<User>(&path, change).await {
        Ok(_) => html::after_change(&format!("/settings/users/{}", api::segment(id)), done),
        Err(f) => user_page(ctx, id, None, Some(&f)).await,
    }
}

async fn set_access(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    let form = Fields::parse(&body);
    let change = json!({"role": form.get("role"), "scope_groups": form.all("scope_groups")});
    patch_user(&ctx, &id, change, "Role and device groups saved.").await
}

#[derive(Deserialize)]
pub struct Disabled {
    disabled: String,
}

async fn set_disabled(ctx: Ctx, Path(id): Path<String>, Form(form): Form<Disabled>) -> Response {
    let disabled = form.disabled == "true";
    let done = if disabled {
        "Sign-in disabled."
    } else {
        "Sign-in enabled."
    };
    patch_user(&ctx, &id, json!({"disabled": disabled}), done).await
}

#[derive(Deserialize)]
pub struct Password {
    password: String,
}

async fn set_password(ctx: Ctx, Path(id): Path<String>, Form(form): Form<Password>) -> Response {
    let done = "Password changed; the user's sessions have ended.";
    patch_user(&ctx, &id, json!({"password": form.password}), done).await
}

async fn confirm_delete_user(ctx: Ctx, Path(id): Path<String>) -> Response {
    let u = match find_user(&ctx, &id).await {
        Ok(u) => u,
        Err(f) => return ctx.failure(Section::Settings, &f),
    };
    Confirm {
        title: "Delete user",
        what: html! {
            p { "Delete the user " strong { (u.username) } " (" (u.role.as_str()) ")? "
                "They can no longer sign in, and their API tokens stop working. "
                "What they did stays in the audit log." }
        },
        action: format!("/settings/users/{}/delete", api::segment(&id)),
        button: "Delete user",
        back: format!("/settings/users/{}", api::segment(&id)),
    }
    .page(&ctx, Section::Settings)
}

async fn delete_user(ctx: Ctx, Path(id): Path<String>) -> Response {
    match ctx
        .api
        .delete(&format!("/api/v1/users/{}", api::segment(&id)))
        .await
    {
        Ok(()) => html::after_change("/settings/users", "User deleted."),
        Err(f) => user_page(&ctx, &id, None, Some(&f)).await,
    }
}

// ---------------------------------------------------------------------------------------------
// API tokens

/// How long a new API token lives: the form's value (days) and its label.
const TOKEN_LIFETIMES: [(&str, &str); 4] = [
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "1 year"),
    ("never", "Never expires"),
];

async fn tokens(ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    tokens_page(&ctx, &q, None).await
}

/// The tokens tab; `creating` is a refused creation, shown beside its form as typed.
async fn tokens_page(
    ctx: &Ctx,
    q: &ListQuery,
    creating: Option<(&NewToken, &Failure)>,
) -> Response {
    let admin = ctx.can(Access::Admin);
    // Admins see everyone's tokens: the owners' names come from the users list.
    let owners = async {
        if admin {
            ctx.api
                .get::<Page<User>>(&api::with_query("/api/v1/users", &[("limit", LOOKUP_SIZE)]))
                .await
                .map(|p| p.items)
                .unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    let path = q.api("/api/v1/tokens");
    let (list, owners) = tokio::join!(ctx.api.get::<Page<ApiToken>>(&path), owners);
    let list = match list {
        Ok(list) => list,
        Err(f) => return shell(ctx, Tab::Tokens, None, Some(&f), html::failure_box(&f)),
    };
    let owner = |id: &str| -> String {
        owners
            .iter()
            .find(|u| u.id == id)
            .map_or_else(|| id.to_string(), |u| u.username.clone())
    };
    let now = Utc::now();
    let typed = creating.map(|(form, _)| form);
    let body = html! {
        p.muted.settings-hint {
            "API tokens let scripts and integrations call the REST API as you, with "
            code { "Authorization: Bearer <token>" } ". A token never has more rights than its owner."
            @if admin { " As an administrator you see everyone's tokens." }
        }
        @if ctx.can(Access::Analyst) {
            details.panel.create-panel #create-token open[creating.is_some()] {
                summary { "Create an API token" }
                @if let Some((_, failure)) = creating {
                    (html::failure_box(failure))
                }
                form method="post" action="/settings/tokens" {
                    (ctx.csrf())
                    div.form-grid {
                        div.field {
                            label for="token-name" { "Name" }
                            input #token-name type="text" name="name" required placeholder="e.g. SIEM export"
                                value=(typed.map_or("", |f| f.name.as_str()));
                        }
                        div.field {
                            label for="token-role" { "Role" }
                            (role_select("token-role", typed.map_or(ctx.viewer.principal.role.as_str(), |f| f.role.as_str()), ctx.viewer.principal.role))
                        }
                        div.field {
                            label for="token-expires" { "Expires" }
                            select #token-expires name="expires" {
                                @for (value, label) in TOKEN_LIFETIMES {
                                    option value=(value) selected[typed.map_or(value == "90", |f| f.expires == value)] { (label) }
                                }
                            }
                        }
                    }
                    button type="submit" { "Create token" }
                }
            }
        }
        div.table-wrap {
            table.grid #tokens {
                thead { tr {
                    th { "Name" } @if admin { th { "Owner" } } th { "Role" } th { "Status" }
                    th { "Created" } th { "Expires" } th { "Last used" } th { span.visually-hidden { "Revoke" } }
                } }
                tbody {
                    @for t in &list.items {
                        @let state = token_state(t.revoked_at.as_ref(), t.expires_at.as_ref(), now);
                        tr {
                            td { (t.name) }
                            @if admin { td { (owner(&t.user_id)) } }
                            td { (t.role.as_str()) }
                            td { (html::status(state)) }
                            td { (html::time(&t.created_at)) }
                            td { @if let Some(e) = &t.expires_at { (html::time(e)) } @else { span.muted { "never" } } }
                            td { @if let Some(u) = &t.last_used_at { (html::time(u)) } @else { span.muted { "never" } } }
                            td.actions {
                                @if state != "revoked" && ctx.can(Access::Analyst) {
                                    a.button.small.quiet href={"/settings/tokens/" (api::segment(&t.id)) "/revoke"} { "Revoke…" }
                                }
                            }
                        }
                    }
                }
            }
            @if list.items.is_empty() {
                p.empty { "No API tokens yet."
                    @if ctx.can(Access::Analyst) { " Create one above for a script or an integration." }
                    @else { " Creating one needs the analyst role." } }
            }
        }
        (html::pager("/settings/tokens", list.next.as_deref()))
    };
    shell(
        ctx,
        Tab::Tokens,
        q.notice.as_deref(),
        creating.map(|(_, f)| f),
        body,
    )
}

/// active, expired or revoked.
fn token_state(revoked: Option<&Time>, expires: Option<&Time>, now: Time) -> &'static str {
    if revoked.is_some() {
        "revoked"
    } else if expires.is_some_and(|e| *e <= now) {
        "expired"
    } else {
        "active"
    }
}

#[derive(Deserialize)]
pub struct NewToken {
    name: String,
    role: String,
    expires: String,
}

async fn create_token(
    ctx: Ctx,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<NewToken>,
) -> Response {
    let expires_at = match expiry(&form.expires, &TOKEN_LIFETIMES, TimeDelta::days) {
        Ok(e) => e,
        Err(f) => return tokens_page(&ctx, &ListQuery::default(), Some((&form, &f))).await,
    };
    let body = json!({"name": form.name.trim(), "role": form.role, "expires_at": expires_at});
    let created = match ctx.api.post::<Value>("/api/v1/tokens", body).await {
        Ok(created) => created,
        Err(f) => return tokens_page(&ctx, &ListQuery::default(), Some((&form, &f))).await,
    };
    let secret = created
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let server = server_url(reached_host(&headers, &uri), ctx.prefs.secure);
    secret_page(
        &ctx,
        Tab::Tokens,
        html! {
            div.panel.secret-panel #token-created {
                h2 { "API token “" (form.name.trim()) "” created" }
                p { strong { "Copy the token now: it is not shown again." } " Rampart keeps only a hash of it." }
                (copyable("new-secret", secret, false))
                p.muted { "Use it as " code { "Authorization: Bearer <token>" } ", for example:" }
                pre.mono { "curl -H 'Authorization: Bearer " (secret) "' " (server) "/api/v1/auth/me" }
                p { a.button href=(Tab::Tokens.href()) { "Done" } }
            }
        },
    )
}

/// A value to copy: selectable text, and a copy button that the script shows.
fn copyable(id: &str, text: &str, block: bool) -> Markup {
    html! {
        div.copy-row {
            @if block { pre.mono.copy-text id=(id) { (text) } }
            @else { code.copy-text id=(id) { (text) } }
            button.small.quiet type="button" data-copy=(format!("#{id}")) hidden { "Copy" }
        }
    }
}

/// The one answer that shows a secret: never cached, never in history as a URL.
fn secret_page(ctx: &Ctx, tab: Tab, body: Markup) -> Response {
    let mut response = shell(ctx, tab, None, None, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The token `id` among the viewer's (or, for admins, everyone's) tokens.
async fn find_token(ctx: &Ctx, id: &str) -> Result<ApiToken, Failure> {
    let list = ctx
        .api
        .get::<Page<ApiToken>>(&api::with_query(
            "/api/v1/tokens",
            &[("limit", LOOKUP_SIZE)],
        ))
        .await?;
    list.items
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| failure(StatusCode::NOT_FOUND, "There is no such API token."))
}

async fn confirm_revoke_token(ctx: Ctx, Path(id): Path<String>) -> Response {
    let t = match find_token(&ctx, &id).await {
        Ok(t) => t,
        Err(f) => return ctx.failure(Section::Settings, &f),
    };
    Confirm {
        title: "Revoke API token",
        what: html! {
            p { "Revoke the API token " strong { (t.name) } "? "
                "Scripts using it are refused from now on. This cannot be undone." }
        },
        action: format!("/settings/tokens/{}/revoke", api::segment(&id)),
        button: "Revoke token",
        back: Tab::Tokens.href().to_string(),
    }
    .page(&ctx, Section::Settings)
}

async fn revoke_token(ctx: Ctx, Path(id): Path<String>) -> Response {
    match ctx
        .api
        .delete(&format!("/api/v1/tokens/{}", api::segment(&id)))
        .await
    {
        Ok(()) => html::after_change(Tab::Tokens.href(), "API token revoked."),
        Err(f) => ctx.failure(Section::Settings, &f),
    }
}

// ---------------------------------------------------------------------------------------------
// Device groups

async fn groups(ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    groups_page(&ctx, &q, None).await
}

async fn groups_page(
    ctx: &Ctx,
    q: &ListQuery,
    creating: Option<(&NewGroup, &Failure)>,
) -> Response {
    let list = match ctx
        .api
        .get::<Page<DeviceGroup>>(&q.api("/api/v1/device-groups"))
        .await
    {
        Ok(list) => list,
        Err(f) => return shell(ctx, Tab::Groups, None, Some(&f), html::failure_box(&f)),
    };
    let admin = ctx.can(Access::Admin);
    let typed = creating.map(|(form, _)| form);
    let body = html! {
        p.muted.settings-hint {
            "Device groups scope what users see (a user confined to some groups sees only their devices, "
            "alerts and incidents) and which devices an indicator applies to. Devices join a group "
            "through their enrollment token or on their page."
        }
        @if admin {
            details.panel.create-panel #create-group open[creating.is_some() || list.items.is_empty()] {
                summary { "Create a device group" }
                @if let Some((_, failure)) = creating {
                    (html::failure_box(failure))
                }
                form method="post" action="/settings/groups" {
                    (ctx.csrf())
                    div.form-grid {
                        div.field {
                            label for="group-name" { "Name" }
                            input #group-name type="text" name="name" required placeholder="e.g. Web servers"
                                value=(typed.map_or("", |f| f.name.as_str()));
                        }
                        div.field.wide {
                            label for="group-description" { "Description " span.muted { "(optional)" } }
                            input #group-description type="text" name="description"
                                value=(typed.map_or("", |f| f.description.as_str()));
                        }
                    }
                    button type="submit" { "Create group" }
                }
            }
        }
        div.table-wrap {
            table.grid #groups {
                thead { tr {
                    th { "Name" } th { "Description" } th { "ID" } th { "Created" }
                    th { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for g in &list.items {
                        tr {
                            td { a href=(api::with_query("/devices", &[("group", g.id.as_str())])) title="Devices in this group" { (g.name) } }
                            td.wrap { (g.description) }
                            td { code { (g.id) } }
                            td { (html::time(&g.created_at)) }
                            td.actions {
                                @if admin {
                                    a.button.small.quiet href={"/settings/groups/" (api::segment(&g.id)) "/delete"} { "Delete…" }
                                }
                            }
                        }
                    }
                }
            }
            @if list.items.is_empty() {
                p.empty { "No device groups yet. "
                    @if admin { "Create one above, then give it to an enrollment token so that new devices join it." }
                    @else { "An administrator can create them." } }
            }
        }
        (html::pager(Tab::Groups.href(), list.next.as_deref()))
    };
    shell(
        ctx,
        Tab::Groups,
        q.notice.as_deref(),
        creating.map(|(_, f)| f),
        body,
    )
}

#[derive(Deserialize)]
pub struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create_group(ctx: Ctx, Form(form): Form<NewGroup>) -> Response {
    let body = json!({"name": form.name.trim(), "description": form.description.trim()});
    match ctx
        .api
        .post::<DeviceGroup>("/api/v1/device-groups", body)
        .await
    {
        Ok(g) => html::after_change(
            Tab::Groups.href(),
            &format!("Device group {} created.", g.name),
        ),
        Err(f) => groups_page(&ctx, &ListQuery::default(), Some((&form, &f))).await,
    }
}

async fn confirm_delete_group(ctx: Ctx, Path(id): Path<String>) -> Response {
    let groups = Groups::fetch(&ctx).await;
    let Some(g) = groups.0.iter().find(|g| g.id == id) else {
        let f = failure(StatusCode::NOT_FOUND, "There is no such device group.");
        return ctx.failure(Section::Settings, &f);
    };
    Confirm {
        title: "Delete device group",
        what: html! {
            p { "Delete the device group " strong { (g.name) } "? "
                "Its devices stay, outside any group, and its enrollment tokens are deleted. Users "
                "confined to it no longer see those devices, and indicators limited to it no longer "
                "apply to them." }
        },
        action: format!("/settings/groups/{}/delete", api::segment(&id)),
        button: "Delete group",
        back: Tab::Groups.href().to_string(),
    }
    .page(&ctx, Section::Settings)
}

async fn delete_group(ctx: Ctx, Path(id): Path<String>) -> Response {
    match ctx
        .api
        .delete(&format!("/api/v1/device-groups/{}", api::segment(&id)))
        .await
    {
        Ok(()) => html::after_change(Tab::Groups.href(), "Device group deleted."),
        Err(f) => ctx.failure(Section::Settings, &f),
    }
}

// ---------------------------------------------------------------------------------------------
// Enrollment tokens

/// How long a new enrollment token may be used: the form's value (hours) and its label.
const ENROLLMENT_LIFETIMES: [(&str, &str); 4] = [
    ("1", "1 hour"),
    ("24", "24 hours"),
    ("168", "7 days"),
    ("720", "30 days"),
];

async fn enrollment(ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    enrollment_page(&ctx, &q, None).await
}

async fn enrollment_page(
    ctx: &Ctx,
    q: &ListQuery,
    creating: Option<(&NewEnrollment, &Failure)>,
) -> Response {
    let path = q.api("/api/v1/enrollment-tokens");
    let (list, groups) = tokio::join!(
        ctx.api.get::<Page<EnrollmentToken>>(&path),
        Groups::fetch(ctx)
    );
    let list = match list {
        Ok(list) => list,
        Err(f) => return shell(ctx, Tab::Enrollment, None, Some(&f), html::failure_box(&f)),
    };
    let now = Utc::now();
    let typed = creating.map(|(form, _)| form);
    let body = html! {
        p.muted.settings-hint {
            "An enrollment token lets Linux agents join this tenant: run "
            code { "rampart-agent enroll --server https://… --token …" } " on the machine. "
            "The token carries the server's CA fingerprint, so no certificate needs copying."
        }
        @if ctx.app.ca_fingerprint.is_none() {
            // Without TLS there is no form: a refusal (a form posted anyway) shows here.
            @if let Some((_, failure)) = creating {
                (html::failure_box(failure))
            }
            div.notice.error role="status" {
                "This server runs without TLS (--insecure-http): agents enroll over TLS with Rampart's CA, "
                "so no enrollment token can be created here."
            }
        } @else {
            details.panel.create-panel #create-enrollment open[creating.is_some() || list.items.is_empty()] {
                summary { "Create an enrollment token" }
                @if let Some((_, failure)) = creating {
                    (html::failure_box(failure))
                }
                form method="post" action="/settings/enrollment" {
                    (ctx.csrf())
                    div.form-grid {
                        div.field {
                            label for="enroll-name" { "Name" }
                            input #enroll-name type="text" name="name" required placeholder="e.g. web servers, March"
                                value=(typed.map_or("", |f| f.name.as_str()));
                        }
                        div.field {
                            label for="enroll-group" { "Devices join group" }
                            select #enroll-group name="group_id" {
                                option value="" { "No group" }
                                @for g in &groups.0 {
                                    option value=(g.id) selected[typed.is_some_and(|f| f.group_id == g.id)] { (g.name) }
                                }
                            }
                        }
                        div.field {
                            label for="enroll-uses" { "Devices that may enroll" }
                            input #enroll-uses type="number" name="max_uses" min="1" max="100000" required
                                value=(typed.map_or("1", |f| f.max_uses.as_str()));
                        }
                        div.field {
                            label for="enroll-expires" { "Valid for" }
                            select #enroll-expires name="expires" {
                                @for (value, label) in ENROLLMENT_LIFETIMES {
                                    option value=(value) selected[typed.map_or(value == "24", |f| f.expires == value)] { (label) }
                                }
                            }
                        }
                    }
                    button type="submit" { "Create enrollment token" }
                }
            }
        }
        div.table-wrap {
            table.grid #enrollment-tokens {
                thead { tr {
                    th { "Name" } th { "Group" } th.num { "Used" } th { "Status" }
                    th { "Expires" } th { "Created" } th { span.visually-hidden { "Changes" } }
                } }
                tbody {
                    @for t in &list.items {
                        tr {
                            td { (t.name) }
                            td { @if let Some(g) = &t.group_id { (groups.name(g)) } @else { span.muted { "none" } } }
                            td.num { (t.used_count) " / " (t.max_uses) }
                            td { (html::status(enrollment_state(t, now))) }
                            td { (html::time(&t.expires_at)) }
                            td { (html::time(&t.created_at)) " " span.muted { "by " (t.created_by) } }
                            td {
                                @if t.revoked_at.is_none() {
                                    a.button.small.quiet href={"/settings/enrollment/" (api::segment(&t.id)) "/revoke"} { "Revoke…" }
                                }
                            }
                        }
                    }
                }
            }
            @if list.items.is_empty() {
                p.empty { "No enrollment tokens yet. Create one to enroll a Linux agent." }
            }
        }
        (html::pager(Tab::Enrollment.href(), list.next.as_deref()))
    };
    shell(
        ctx,
        Tab::Enrollment,
        q.notice.as_deref(),
        creating.map(|(_, f)| f),
        body,
    )
}

async fn confirm_revoke_enrollment(ctx: Ctx, Path(id): Path<String>) -> Response {
    let path = api::with_query("/api/v1/enrollment-tokens", &[("limit", LOOKUP_SIZE)]);
    let name = match ctx.api.get::<Page<EnrollmentToken>>(&path).await {
        Ok(list) => match list.items.into_iter().find(|t| t.id == id) {
            Some(t) => t.name,
            None => {
                let f = failure(StatusCode::NOT_FOUND, "no such enrollment token");
                return ctx.failure(Section::Settings, &f);
            }
        },
        Err(f) => return ctx.failure(Section::Settings, &f),
    };
    Confirm {
        title: "Revoke enrollment token",
        what: html! {
            p { "Revoke the enrollment token " strong { (name) } "? "
                "No agent can enroll with it from now on; agents already enrolled keep working." }
        },
        action: format!("/settings/enrollment/{}/revoke", api::segment(&id)),
        button: "Revoke token",
        back: Tab::Enrollment.href().to_string(),
    }
    .page(&ctx, Section::Settings)
}

async fn revoke_enrollment(ctx: Ctx, Path(id): Path<String>) -> Response {
    let path = format!("/api/v1/enrollment-tokens/{}", api::segment(&id));
    match ctx.api.delete(&path).await {
        Ok(()) => html::after_change(Tab::Enrollment.href(), "Enrollment token revoked."),
        Err(f) => ctx.failure(Section::Settings, &f),
    }
}

/// active, used up, expired or revoked.
fn enrollment_state(t: &EnrollmentToken, now: Time) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.used_count >= t.max_uses {
        "used_up"
    } else if t.expires_at <= now {
        "expired"
    } else {
        "active"
    }
}

#[derive(Deserialize)]
pub struct NewEnrollment {
    name: String,
    group_id: String,
    max_uses: String,
    expires: String,
}

async fn create_enrollment(
    ctx: Ctx,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<NewEnrollment>,
) -> Response {
    let (token, max_uses, expires_at) = match request_enrollment(&ctx, &form).await {
        Ok(created) => created,
        Err(f) => return enrollment_page(&ctx, &ListQuery::default(), Some((&form, &f))).await,
    };
    let command = enroll_command(reached_host(&headers, &uri), &token);
    secret_page(
        &ctx,
        Tab::Enrollment,
        html! {
            div.panel.secret-panel #enrollment-created {
                h2 { "Enrollment token “" (form.name.trim()) "” created" }
                p { strong { "Copy it now: it is not shown again." } " "
                    (max_uses) (if max_uses == 1 { " device" } else { " devices" }) " may enroll with it, "
                    "until " (html::time(&expires_at)) "." }
                (copyable("new-secret", &token, false))
                h3 { "On the Linux machine, as root" }
                (copyable("enroll-command", &command, true))
                p.muted { "Then start the agent: " code { "rampart-agent run" } " (or its systemd unit). "
                    "If the machine reaches this server by another address, use that one." }
                p { a.button href=(Tab::Enrollment.href()) { "Done" } }
            }
        },
    )
}

/// Creates the enrollment token of `form`: its secret, how many may use it, until when.
async fn request_enrollment(
    ctx: &Ctx,
    form: &NewEnrollment,
) -> Result<(String, i64, Time), Failure> {
    let max_uses: i64 = form.max_uses.trim().parse().map_err(|_| {
        failure(
            StatusCode::BAD_REQUEST,
            "Devices that may enroll: a whole number such as 1 or 50.",
        )
    })?;
    let expires_at =
        expiry(&form.expires, &ENROLLMENT_LIFETIMES, TimeDelta::hours)?.ok_or_else(|| {
            failure(
                StatusCode::BAD_REQUEST,
                "Choose how long the token is valid.",
            )
        })?;
    let group_id = Some(form.group_id.as_str()).filter(|g| !g.is_empty());
    let body = json!({
        "name": form.name.trim(), "group_id": group_id, "max_uses": max_uses, "expires_at": expires_at,
    });
    let created = ctx
        .api
        .post::<Value>("/api/v1/enrollment-tokens", body)
        .await?;
    let token = created
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok((token.to_string(), max_uses, expires_at))
}

/// The command line that enrolls an agent with `token`, for the server the browser reached as
/// `host` (the likeliest address agents reach it by too).
fn enroll_command(host: Option<&str>, token: &str) -> String {
    let server = server_url(host, true);
    format!("rampart-agent enroll --server {server} --token {token}")
}

/// The host (and port) the browser reached this server by: HTTP/1's Host header, or HTTP/2's
/// `:authority`, which is in the request's URI.
fn reached_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// This server's URL as the browser reached it (`host` is its Host header): what to put in a
/// command line the viewer copies. A Host that is not a plain `host:port` is not repeated.
fn server_url(host: Option<&str>, https: bool) -> String {
    let host = host
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("SERVER:PORT");
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

// ---------------------------------------------------------------------------------------------
// Device groups, shared with the indicators page.

/// The tenant's device groups the viewer may see: names for ids, and scope choices.
pub(super) struct Groups(Vec<DeviceGroup>);

impl Groups {
    /// Every group (bounded); none when the API does not answer, so ids show instead of names.
    pub(super) async fn fetch(ctx: &Ctx) -> Groups {
        let path = api::with_query("/api/v1/device-groups", &[("limit", LOOKUP_SIZE)]);
        match ctx.api.get::<Page<DeviceGroup>>(&path).await {
            Ok(page) => Groups(page.items),
            Err(f) => {
                tracing::warn!(error = %f, "portal: device groups unavailable");
                Groups(Vec::new())
            }
        }
    }

    fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|g| g.id == id)
            .map_or(id, |g| g.name.as_str())
    }

    /// A scope (group ids; none = every group) as tags.
    pub(super) fn scope(&self, ids: &[String]) -> Markup {
        html! {
            @if ids.is_empty() {
                span.muted { "All" }
            } @else {
                span.tag-list { @for id in ids { span.tag { (self.name(id)) } " " } }
            }
        }
    }

    /// Checkboxes `scope_groups` for a scope; none ticked means every group.
    pub(super) fn choices(&self, legend: &str, selected: &[String]) -> Markup {
        html! {
            fieldset.choices {
                legend { (legend) }
                @if self.0.is_empty() {
                    p.muted { "All devices: there are no device groups to limit it to. "
                        a href=(Tab::Groups.href()) { "Device groups" } }
                } @else {
                    p.hint { "None ticked: all devices." }
                    div.choice-list {
                        @for g in &self.0 {
                            label.choice {
                                input type="checkbox" name="scope_groups" value=(g.id) checked[selected.contains(&g.id)];
                                " " (g.name)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The expiry chosen in a select of `choices` (a number of `unit`s, or `never`).
fn expiry(
    choice: &str,
    choices: &[(&str, &str)],
    unit: fn(i64) -> TimeDelta,
) -> Result<Option<Time>, Failure> {
    let bad = || failure(StatusCode::BAD_REQUEST, "Choose an expiry from the list.");
    if !choices.iter().any(|(value, _)| *value == choice) {
        return Err(bad());
    }
    if choice == "never" {
        return Ok(None);
    }
    let n: i64 = choice.parse().map_err(|_| bad())?;
    Ok(Some(Utc::now() + unit(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_choices() {
        assert_eq!(
            expiry("never", &TOKEN_LIFETIMES, TimeDelta::days).unwrap(),
            None
        );
        let in_30 = expiry("30", &TOKEN_LIFETIMES, TimeDelta::days)
            .unwrap()
            .unwrap();
        let days = (in_30 - Utc::now()).num_hours();
        assert!((719..=720).contains(&days), "{days}");
        assert!(expiry("31", &TOKEN_LIFETIMES, TimeDelta::days).is_err());
        assert!(expiry("never", &ENROLLMENT_LIFETIMES, TimeDelta::hours).is_err());
    }

    #[test]
    fn token_states() {
        let now = Utc::now();
        let past = now - TimeDelta::hours(1);
        let future = now + TimeDelta::hours(1);
        assert_eq!(token_state(None, None, now), "active");
        assert_eq!(token_state(None, Some(&future), now), "active");
        assert_eq!(token_state(None, Some(&past), now), "expired");
        assert_eq!(token_state(Some(&past), Some(&future), now), "revoked");
    }

    #[test]
    fn enroll_command_names_the_server_reached() {
        assert_eq!(
            enroll_command(Some("rampart.example:8443"), "rpe_x.ab"),
            "rampart-agent enroll --server https://rampart.example:8443 --token rpe_x.ab"
        );
        assert_eq!(
            enroll_command(Some("[::1]:8443"), "t"),
            "rampart-agent enroll --server https://[::1]:8443 --token t"
        );
        // A Host header that is not a plain host:port is not repeated into a command line.
        for host in [None, Some(""), Some("evil.example; rm -rf /"), Some("a b")] {
            assert_eq!(
                enroll_command(host, "t"),
                "rampart-agent enroll --server https://SERVER:PORT --token t"
            );
        }
        assert_eq!(
            server_url(Some("127.0.0.1:8814"), false),
            "http://127.0.0.1:8814"
        );
    }

    #[test]
    fn the_host_reached_is_read_over_http1_and_http2() {
        let http2: Uri = "https://rampart.example:8443/settings/tokens"
            .parse()
            .unwrap();
        let http1: Uri = "/settings/tokens".parse().unwrap();
        let mut host = HeaderMap::new();
        host.insert(header::HOST, HeaderValue::from_static("10.0.0.5:8443"));
        assert_eq!(
            reached_host(&HeaderMap::new(), &http2),
            Some("rampart.example:8443")
        );
        assert_eq!(reached_host(&host, &http1), Some("10.0.0.5:8443"));
        assert_eq!(reached_host(&HeaderMap::new(), &http1), None);
    }
}
