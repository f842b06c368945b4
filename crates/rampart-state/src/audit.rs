//! The audit log: append-only (this crate has no statement that changes or deletes an entry).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{Cols, FromRow, Order, Page, PageRequest, Time, micros, now};
use crate::validate::{json, limits, line};
use crate::{Result, StateDb, ids};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub tenant_id: String,
    pub at: Time,
    /// Who: a username, `agent:<device id>`, or `system`.
    pub actor: String,
    /// What, as a dotted verb such as `alert.update` or `user.login`.
    pub action: String,
    pub target_kind: String,
    pub target_id: String,
    pub details: Value,
    pub remote_addr: Option<String>,
}

impl FromRow for AuditEntry {
    const COLUMNS: &'static str =
        "id, tenant_id, at, actor, action, target_kind, target_id, details, remote_addr";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(AuditEntry {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            at: r.time("at")?,
            actor: r.str("actor")?,
            action: r.str("action")?,
            target_kind: r.str("target_kind")?,
            target_id: r.str("target_id")?,
            details: r.json("details")?,
            remote_addr: r.opt_str("remote_addr")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: String,
    pub target_kind: String,
    pub target_id: String,
    #[serde(default)]
    pub details: Value,
    pub remote_addr: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    /// Time range, `[from, to)`.
    pub from: Option<Time>,
    pub to: Option<Time>,
}

impl StateDb {
    /// Appends an entry, timestamped now.
    pub async fn append_audit(&self, tenant: &str, entry: &NewAuditEntry) -> Result<AuditEntry> {
        let short = |field, v: &str| line(field, v, limits::SHORT_MAX_CHARS, true);
        let e = AuditEntry {
            id: ids::new_id("aud")?,
            tenant_id: tenant.to_owned(),
            at: now(),
            actor: short("actor", &entry.actor)?,
            action: short("action", &entry.action)?,
            target_kind: short("target_kind", &entry.target_kind)?,
            target_id: line(
                "target_id",
                &entry.target_id,
                limits::SHORT_MAX_CHARS,
                false,
            )?,
            details: entry.details.clone(),
            remote_addr: entry
                .remote_addr
                .as_deref()
                .map(|a| short("remote_addr", a))
                .transpose()?,
        };
        sqlx::query(
            "INSERT INTO audit_log (id, tenant_id, at, actor, action, target_kind, target_id, details, remote_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(e.id.clone())
        .bind(e.tenant_id.clone())
        .bind(micros(e.at))
        .bind(e.actor.clone())
        .bind(e.action.clone())
        .bind(e.target_kind.clone())
        .bind(e.target_id.clone())
        .bind(json("details", &e.details, limits::JSON_MAX_BYTES)?)
        .bind(e.remote_addr.clone())
        .execute(&self.pool)
        .await?;
        Ok(e)
    }

    /// Entries, newest first.
    pub async fn list_audit(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        let mut sql = Self::select::<AuditEntry>("audit_log", tenant);
        sql.and_eq("actor", filter.actor.clone())
            .and_eq("action", filter.action.clone())
            .and_eq("target_kind", filter.target_kind.clone())
            .and_eq("target_id", filter.target_id.clone())
            .and_range("at", filter.from, filter.to);
        self.fetch_page(sql, Order::NewestFirst("at"), page).await
    }
}
