//! Users, roles and password login.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use serde::{Deserialize, Serialize};

use crate::db::{
    Cols, FromRow, Order, Page, PageRequest, Scope, Sql, Time, micros, now, str_enum, to_json,
};
use crate::validate::{group_ids, limits};
use crate::{Error, Result, StateDb, TokenKind, ids};

str_enum! {
    /// What a user may do; ordered so that `a <= b` means "a grants no more than b".
    Role {
        Readonly = "readonly",
        Analyst = "analyst",
        Admin = "admin",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub tenant_id: String,
    pub username: String,
    pub role: Role,
    /// Device groups this user may see; empty = all.
    pub scope_groups: Scope,
    pub disabled: bool,
    pub created_at: Time,
    pub last_login_at: Option<Time>,
}

impl FromRow for User {
    const COLUMNS: &'static str =
        "id, tenant_id, username, role, scope_groups, disabled, created_at, last_login_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(User {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            username: r.str("username")?,
            role: r.parse("role")?,
            scope_groups: Scope(r.json("scope_groups")?),
            disabled: r.bool("disabled")?,
            created_at: r.time("created_at")?,
            last_login_at: r.opt_time("last_login_at")?,
        })
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub scope_groups: Vec<String>,
}

/// Never prints the password (requests are logged with `Debug`).
impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("scope_groups", &self.scope_groups)
            .finish_non_exhaustive()
    }
}

/// A partial update; `None` leaves a field unchanged.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub scope_groups: Option<Vec<String>>,
    pub disabled: Option<bool>,
    /// A new password; changing it ends the user's login sessions.
    pub password: Option<String>,
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("role", &self.role)
            .field("scope_groups", &self.scope_groups)
            .field("disabled", &self.disabled)
            .field("password_changed", &self.password.is_some())
            .finish()
    }
}

/// Usernames are lowercased so login is case-insensitive, and limited to characters that are
/// safe in URLs, logs and e-mail-style names.
fn username(value: &str) -> Result<String> {
    let u = value.trim().to_lowercase();
    if u.is_empty() || u.chars().count() > limits::USERNAME_MAX_CHARS {
        return Err(Error::invalid(
            "username",
            format!("must be 1 to {} characters", limits::USERNAME_MAX_CHARS),
        ));
    }
    let ok_char = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@')
    };
    if !u.chars().all(ok_char) || !u.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::invalid(
            "username",
            "use letters, digits, '.', '_', '-', '@', starting with a letter or digit",
        ));
    }
    Ok(u)
}

fn password(value: &str) -> Result<()> {
    if value.chars().count() < limits::PASSWORD_MIN_CHARS {
        return Err(Error::invalid(
            "password",
            format!("must be at least {} characters", limits::PASSWORD_MIN_CHARS),
        ));
    }
    if value.len() > limits::PASSWORD_MAX_BYTES {
        return Err(Error::invalid(
            "password",
            format!("longer than {} bytes", limits::PASSWORD_MAX_BYTES),
        ));
    }
    Ok(())
}

/// Argon2id with the crate's defaults (OWASP's 19 MiB, 2 passes). Runs on the blocking pool:
/// tens of milliseconds of CPU must not stall the async workers.
async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::Internal(format!("password hashing: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("password hashing task: {e}")))?
}

/// Constant-time check (argon2 compares the outputs in constant time). When the user does not
/// exist, the same work is done against a fixed hash so response time does not reveal which
/// usernames exist.
async fn password_matches(password: String, stored: Option<String>) -> Result<bool> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    tokio::task::spawn_blocking(move || {
        let phc = match &stored {
            Some(s) => s.as_str(),
            None => DUMMY.get_or_init(|| {
                Argon2::default()
                    .hash_password(b"rampart-dummy-password")
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            }),
        };
        let ok = match PasswordHash::new(phc) {
            Ok(parsed) => Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        };
        ok && stored.is_some()
    })
    .await
    .map_err(|e| Error::Internal(format!("password check task: {e}")))
}

impl StateDb {
    pub async fn create_user(&self, tenant: &str, new: &NewUser) -> Result<User> {
        let name = username(&new.username)?;
        password(&new.password)?;
        let groups = group_ids("scope_groups", &new.scope_groups)?;
        self.ensure_groups(tenant, "scope_groups", &groups).await?;
        let hash = hash_password(new.password.clone()).await?;
        let user = User {
            id: ids::new_id("usr")?,
            tenant_id: tenant.to_owned(),
            username: name,
            role: new.role,
            scope_groups: Scope(groups),
            disabled: false,
            created_at: now(),
            last_login_at: None,
        };
        sqlx::query(
            "INSERT INTO users (id, tenant_id, username, password_hash, role, scope_groups, disabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(user.id.clone())
        .bind(user.tenant_id.clone())
        .bind(user.username.clone())
        .bind(hash)
        .bind(user.role.as_str())
        .bind(to_json(&user.scope_groups))
        .bind(micros(user.created_at))
        .execute(&self.pool)
        .await
        .map_err(Error::from)
        .map_err(Error::unique("username"))?;
        Ok(user)
    }

    pub async fn get_user(&self, tenant: &str, id: &str) -> Result<User> {
        let mut sql = Self::select::<User>("users", tenant);
        sql.and_eq("id", Some(id.to_owned()));
        self.fetch_one(sql, "user").await
    }

    /// Users of a tenant by username.
    pub async fn list_users(&self, tenant: &str, page: &PageRequest) -> Result<Page<User>> {
        let sql = Self::select::<User>("users", tenant);
        self.fetch_page(sql, Order::Alphabetical("username"), page)
            .await
    }

    pub async fn update_user(&self, tenant: &str, id: &str, update: &UserUpdate) -> Result<User> {
        let mut sql = Sql::new("UPDATE users SET id = id");
        if let Some(role) = update.role {
            sql.push(", role = ").bind(role.as_str());
        }
        if let Some(groups) = &update.scope_groups {
            let groups = group_ids("scope_groups", groups)?;
            self.ensure_groups(tenant, "scope_groups", &groups).await?;
            sql.push(", scope_groups = ").bind(to_json(&groups));
        }
        if let Some(disabled) = update.disabled {
            sql.push(", disabled = ").bind(i64::from(disabled));
        }
        if let Some(new_password) = &update.password {
            password(new_password)?;
            sql.push(", password_hash = ")
                .bind(hash_password(new_password.clone()).await?);
        }
        self.execute_on_id(sql, tenant, id, "user").await?;
        if update.password.is_some() {
            self.revoke_user_tokens(tenant, id, Some(TokenKind::Session))
                .await?;
        }
        self.get_user(tenant, id).await
    }

    /// Deletes a user and (by cascade) their tokens and sessions.
    pub async fn delete_user(&self, tenant: &str, id: &str) -> Result<()> {
        self.delete_by_id("users", tenant, id, "user").await
    }

    /// Login check. Usernames are unique across tenants, so the username alone finds the user
    /// (and so the tenant). Returns `None` for an unknown user, a wrong password or a disabled
    /// account, without saying which; records the login time on success.
    pub async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>> {
        if password.len() > limits::PASSWORD_MAX_BYTES {
            return Ok(None);
        }
        let name = username.trim().to_lowercase();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {}, password_hash FROM users WHERE username = $1",
            User::COLUMNS
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let found = row
            .as_ref()
            .map(|r| Ok::<_, Error>((User::from_row(&Cols(r))?, Cols(r).str("password_hash")?)))
            .transpose()?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        if !password_matches(password.to_owned(), hash).await? {
            return Ok(None);
        }
        let Some(mut user) = user.filter(|u| !u.disabled) else {
            return Ok(None);
        };
        let at = now();
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(micros(at))
            .bind(user.id.clone())
            .execute(&self.pool)
            .await?;
        user.last_login_at = Some(at);
        Ok(Some(user))
    }
}
