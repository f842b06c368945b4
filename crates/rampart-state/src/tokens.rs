//! Bearer secrets: API tokens, login sessions (same table, `kind = session`) and agent
//! enrollment tokens. A secret is shown once at creation; only its SHA-256 is stored, so a
//! request is authenticated with one lookup on a unique index.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::db::{
    Cols, FromRow, Order, Page, PageRequest, Scope, Sql, Time, exact, micros, now, str_enum,
};
use crate::ids::{new_id, new_secret, secret_hash};
use crate::validate::{limits, line, positive};
use crate::{Error, Result, Role, StateDb};

str_enum! {
    TokenKind {
        /// A named token for scripts and integrations.
        Api = "api",
        /// A login session of the portal.
        Session = "session",
    }
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Api => "rpt",
            TokenKind::Session => "rps",
        }
    }
}

const ENROLLMENT_PREFIX: &str = "rpe";
/// Longer inputs cannot be one of our secrets; rejecting them early bounds the hashing work.
const SECRET_MAX_LEN: usize = 128;
/// `last_used_at` is refreshed at most this often, so authenticating is not a write per request.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// An API token or session (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub kind: TokenKind,
    pub name: String,
    pub role: Role,
    pub created_at: Time,
    pub expires_at: Option<Time>,
    pub last_used_at: Option<Time>,
    pub revoked_at: Option<Time>,
}

impl FromRow for ApiToken {
    const COLUMNS: &'static str = "id, tenant_id, user_id, kind, name, role, created_at, expires_at, last_used_at, revoked_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(ApiToken {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            user_id: r.str("user_id")?,
            kind: r.parse("kind")?,
            name: r.str("name")?,
            role: r.parse("role")?,
            created_at: r.time("created_at")?,
            expires_at: r.opt_time("expires_at")?,
            last_used_at: r.opt_time("last_used_at")?,
            revoked_at: r.opt_time("revoked_at")?,
        })
    }
}

/// Who is calling, as established by [`StateDb::authenticate_token`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub tenant_id: String,
    pub user_id: String,
    pub username: String,
    /// The lesser of the token's role and the user's current role.
    pub role: Role,
    pub scope: Scope,
    pub token_id: String,
    pub token_kind: TokenKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// Devices enrolled with this token join this group.
    pub group_id: Option<String>,
    pub max_uses: i64,
    pub used_count: i64,
    pub expires_at: Time,
    pub created_by: String,
    pub created_at: Time,
    pub revoked_at: Option<Time>,
}

impl FromRow for EnrollmentToken {
    const COLUMNS: &'static str = "id, tenant_id, name, group_id, max_uses, used_count, expires_at, created_by, created_at, revoked_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(EnrollmentToken {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            name: r.str("name")?,
            group_id: r.opt_str("group_id")?,
            max_uses: r.i64("max_uses")?,
            used_count: r.i64("used_count")?,
            expires_at: r.time("expires_at")?,
            created_by: r.str("created_by")?,
            created_at: r.time("created_at")?,
            revoked_at: r.opt_time("revoked_at")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEnrollmentToken {
    pub name: String,
    pub group_id: Option<String>,
    pub max_uses: i64,
    pub expires_at: Time,
}

/// What a successfully consumed enrollment token grants the enrolling agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentGrant {
    pub tenant_id: String,
    pub token_id: String,
    pub group_id: Option<String>,
}

fn plausible_secret(secret: &str, prefix: &str) -> bool {
    secret.len() <= SECRET_MAX_LEN
        && secret
            .strip_prefix(prefix)
            .is_some_and(|s| s.starts_with('_'))
}

impl StateDb {
    /// Creates an API token for `user_id`; returns it with its secret (`rpt_…`), which is not
    /// stored and cannot be shown again. `role` may not exceed the owner's.
    pub async fn create_api_token(
        &self,
        tenant: &str,
        user_id: &str,
        name: &str,
        role: Role,
        expires_at: Option<Time>,
    ) -> Result<(ApiToken, String)> {
        let owner = self.get_user(tenant, user_id).await?;
        if role > owner.role {
            return Err(Error::invalid(
                "role",
                format!("exceeds the owner's role {}", owner.role),
            ));
        }
        let name = line("name", name, limits::NAME_MAX_CHARS, true)?;
        self.insert_token(
            &owner.tenant_id,
            &owner.id,
            TokenKind::Api,
            name,
            role,
            expires_at,
        )
        .await
    }

    /// Starts a login session for a user (after [`StateDb::verify_password`]); returns the
    /// session record and its secret (`rps_…`).
    pub async fn create_session(
        &self,
        tenant: &str,
        user_id: &str,
        ttl: Duration,
    ) -> Result<(ApiToken, String)> {
        let owner = self.get_user(tenant, user_id).await?;
        positive("ttl", ttl.num_seconds())?;
        let expires = now() + ttl;
        self.insert_token(
            &owner.tenant_id,
            &owner.id,
            TokenKind::Session,
            "session".into(),
            owner.role,
            Some(expires),
        )
        .await
    }

    async fn insert_token(
        &self,
        tenant: &str,
        user_id: &str,
        kind: TokenKind,
        name: String,
        role: Role,
        expires_at: Option<Time>,
    ) -> Result<(ApiToken, String)> {
        let secret = new_secret(kind.prefix())?;
        let token = ApiToken {
            id: new_id("tok")?,
            tenant_id: tenant.to_owned(),
            user_id: user_id.to_owned(),
            kind,
            name,
            role,
            created_at: now(),
            expires_at: expires_at.map(exact),
            last_used_at: None,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, user_id, kind, name, secret_hash, role, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(token.id.clone())
        .bind(token.tenant_id.clone())
        .bind(token.user_id.clone())
        .bind(kind.as_str())
        .bind(token.name.clone())
        .bind(secret_hash(&secret))
        .bind(role.as_str())
        .bind(micros(token.created_at))
        .bind(expires_at.map(micros))
        .execute(&self.pool)
        .await?;
        Ok((token, secret))
    }

    /// Tokens and sessions of a tenant, newest first, optionally of one user and one kind.
    pub async fn list_api_tokens(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        kind: Option<TokenKind>,
        page: &PageRequest,
    ) -> Result<Page<ApiToken>> {
        let mut sql = Self::select::<ApiToken>("api_tokens", tenant);
        sql.and_eq("user_id", user_id.map(str::to_owned))
            .and_eq("kind", kind.map(TokenKind::as_str));
        self.fetch_page(sql, Order::NewestFirst("created_at"), page)
            .await
    }

    /// Revokes a token or session (logout). Revoking twice is not an error.
    pub async fn revoke_token(&self, tenant: &str, id: &str) -> Result<()> {
        // COALESCE keeps the first revocation time: revoking twice is not an error.
        let mut sql = Sql::new("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ");
        sql.bind(micros(now())).push(")");
        self.execute_on_id(sql, tenant, id, "token").await
    }

    /// Revokes all of a user's tokens (or those of one kind); returns how many were not yet
    /// revoked.
    pub async fn revoke_user_tokens(
        &self,
        tenant: &str,
        user_id: &str,
        kind: Option<TokenKind>,
    ) -> Result<u64> {
        let mut sql = Sql::new("UPDATE api_tokens SET revoked_at = ");
        sql.bind(micros(now()))
            .push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND user_id = ")
            .bind(user_id.to_owned())
            .push(" AND revoked_at IS NULL")
            .and_eq("kind", kind.map(TokenKind::as_str));
        Ok(sql
            .query(self.backend)?
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Resolves a bearer secret (`rpt_…` or `rps_…`) to the calling principal; `None` if it is
    /// unknown, revoked, expired, or its user is disabled.
    pub async fn authenticate_token(&self, secret: &str) -> Result<Option<Principal>> {
        if !plausible_secret(secret, TokenKind::Api.prefix())
            && !plausible_secret(secret, TokenKind::Session.prefix())
        {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT t.id AS token_id, t.tenant_id AS tenant_id, t.kind AS kind, t.role AS token_role, \
                    t.expires_at AS expires_at, t.revoked_at AS revoked_at, t.last_used_at AS last_used_at, \
                    u.id AS user_id, u.username AS username, u.role AS user_role, \
                    u.scope_groups AS scope_groups, u.disabled AS disabled \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.secret_hash = $1",
        )
        .bind(secret_hash(secret))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let r = Cols(&row);
        let at = now();
        if r.opt_i64("revoked_at")?.is_some()
            || r.bool("disabled")?
            || r.opt_time("expires_at")?.is_some_and(|e| e <= at)
        {
            return Ok(None);
        }
        let token_role: Role = r.parse("token_role")?;
        let user_role: Role = r.parse("user_role")?;
        let principal = Principal {
            tenant_id: r.str("tenant_id")?,
            user_id: r.str("user_id")?,
            username: r.str("username")?,
            role: token_role.min(user_role),
            scope: Scope(r.json("scope_groups")?),
            token_id: r.str("token_id")?,
            token_kind: r.parse("kind")?,
        };
        let stale = r
            .opt_time("last_used_at")?
            .is_none_or(|t| (at - t).num_seconds() >= LAST_USED_GRANULARITY_SECS);
        if stale {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(micros(at))
                .bind(principal.token_id.clone())
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(principal))
    }

    /// Creates an agent enrollment token; returns it with its secret (`rpe_…`), shown once.
    pub async fn create_enrollment_token(
        &self,
        tenant: &str,
        new: &NewEnrollmentToken,
        created_by: &str,
    ) -> Result<(EnrollmentToken, String)> {
        let name = line("name", &new.name, limits::NAME_MAX_CHARS, true)?;
        let max_uses = positive("max_uses", new.max_uses)?;
        if let Some(group) = &new.group_id {
            self.ensure_groups(tenant, "group_id", std::slice::from_ref(group))
                .await?;
        }
        let secret = new_secret(ENROLLMENT_PREFIX)?;
        let token = EnrollmentToken {
            id: new_id("enr")?,
            tenant_id: tenant.to_owned(),
            name,
            group_id: new.group_id.clone(),
            max_uses,
            used_count: 0,
            expires_at: exact(new.expires_at),
            created_by: line("created_by", created_by, limits::SHORT_MAX_CHARS, true)?,
            created_at: now(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO enrollment_tokens \
             (id, tenant_id, name, secret_hash, group_id, max_uses, used_count, expires_at, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9)",
        )
        .bind(token.id.clone())
        .bind(token.tenant_id.clone())
        .bind(token.name.clone())
        .bind(secret_hash(&secret))
        .bind(token.group_id.clone())
        .bind(token.max_uses)
        .bind(micros(token.expires_at))
        .bind(token.created_by.clone())
        .bind(micros(token.created_at))
        .execute(&self.pool)
        .await?;
        Ok((token, secret))
    }

    pub async fn list_enrollment_tokens(
        &self,
        tenant: &str,
        page: &PageRequest,
    ) -> Result<Page<EnrollmentToken>> {
        let sql = Self::select::<EnrollmentToken>("enrollment_tokens", tenant);
        self.fetch_page(sql, Order::NewestFirst("created_at"), page)
            .await
    }

    pub async fn revoke_enrollment_token(&self, tenant: &str, id: &str) -> Result<()> {
        // COALESCE keeps the first revocation time: revoking twice is not an error.
        let mut sql = Sql::new("UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ");
        sql.bind(micros(now())).push(")");
        self.execute_on_id(sql, tenant, id, "enrollment token")
            .await
    }

    /// Uses one enrollment of a token. The check and the increment are one conditional
    /// `UPDATE … RETURNING`, so concurrent enrollments can never exceed `max_uses`. `None` if the
    /// secret is unknown, revoked, expired or used up.
    pub async fn consume_enrollment_token(&self, secret: &str) -> Result<Option<EnrollmentGrant>> {
        if !plausible_secret(secret, ENROLLMENT_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query(
            "UPDATE enrollment_tokens SET used_count = used_count + 1 \
             WHERE secret_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND used_count < max_uses \
             RETURNING id, tenant_id, group_id",
        )
        .bind(secret_hash(secret))
        .bind(micros(now()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let r = Cols(&row);
            Ok(EnrollmentGrant {
                tenant_id: r.str("tenant_id")?,
                token_id: r.str("id")?,
                group_id: r.opt_str("group_id")?,
            })
        })
        .transpose()
    }
}
