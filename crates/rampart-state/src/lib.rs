//! Rampart's state database: tenants, users, API tokens and sessions, enrollment tokens, device
//! groups and devices, rules, alerts with evidence, incidents with the reason each alert joined,
//! comments, indicators, response actions, the audit log, and each user's hunting history and
//! saved queries.
//!
//! # One code path, two engines
//!
//! A single machine runs on **SQLite** (one file in the data directory, WAL journal, foreign keys
//! on); larger installs point the same binary at **PostgreSQL**. Both go through
//! [`sqlx::AnyPool`], so every statement is written once. That works because the schema keeps to
//! what both engines treat the same way, and one set of migrations (`migrations/`, embedded in the
//! binary) serves both:
//!
//! - **ids are TEXT generated in Rust** (`alr_` + a ULID): no `SERIAL`/`AUTOINCREMENT` dialects,
//!   ids are known before the insert (no `RETURNING id` round trip), time-ordered, and a prefixed
//!   id says what it names in logs and URLs;
//! - **times are BIGINT unix microseconds** (UTC): SQLite has no timestamp type and sqlx's `Any`
//!   driver decodes none, while integers compare, sort and index identically everywhere;
//! - **JSON and lists are TEXT**, **booleans are BIGINT 0/1** (the `Any` driver cannot decode
//!   SQLite's BOOLEAN), placeholders are `$n` (PostgreSQL's syntax, which SQLite reads as numbered
//!   parameters), upserts use `ON CONFLICT … DO UPDATE` and `RETURNING`, both standard in the two.
//!
//! What is not portable stays a tiny per-backend branch: substring search (`instr` vs `strpos`),
//! `BEGIN IMMEDIATE` for SQLite write transactions, and the WAL pragma.
//!
//! # Tenancy and scope
//!
//! Every method takes the tenant id explicitly and every statement filters on it; references
//! given by callers (device group, device, rule ids) are checked to belong to the same tenant
//! before they are stored. The only methods without a tenant are tenant bootstrap and the
//! authentication lookups whose secret itself determines the tenant ([`StateDb::verify_password`],
//! [`StateDb::authenticate_token`], [`StateDb::consume_enrollment_token`],
//! [`StateDb::device_by_cert_fingerprint`]). Device-group scoping ([`Scope`]) applies to devices,
//! alerts (through their device), incidents (through their alerts) and actions.
//!
//! # Logins
//!
//! Usernames are unique across all tenants, so `POST /api/v1/auth/login {"username","password"}`
//! needs no tenant field: the user row determines the tenant.
//!
//! # Lists
//!
//! Every list takes a filter struct and a [`PageRequest`] and returns a [`Page`]. Pages use keyset
//! cursors over (sort column, id), so paging is stable and complete while rows are being added.

mod db;
mod error;
mod ids;
mod validate;

mod actions;
mod alerts;
mod audit;
mod comments;
mod devices;
mod incidents;
mod indicators;
mod queries;
mod rules;
mod tenants;
mod tokens;
mod users;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Executor as _, SqlSafeStr as _};

pub use actions::{Action, ActionFilter, ActionKind, ActionStatus, NewAction, Package};
pub use alerts::{
    Alert, AlertFilter, AlertSource, AlertStatus, AlertUpdate, Classification, KEYS_PER_LOOKUP,
    NewAlert, OpenAlert, Repeats, RuleRef, Severity,
};
pub use audit::{AuditEntry, AuditFilter, NewAuditEntry};
pub use comments::{Comment, CommentTarget};
pub use db::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT, Page, PageRequest, Scope, Time};
pub use devices::{
    Device, DeviceFilter, DeviceGroup, DeviceHeartbeat, DeviceRisk, DeviceSighting, DeviceUpdate,
    HealthStatus, IsolationState, NewDevice, SIGHTING_GRANULARITY, SightedDevice,
};
pub use error::{Error, Result};
pub use incidents::{
    Incident, IncidentAlert, IncidentDetail, IncidentFilter, IncidentRow, IncidentSort,
    IncidentStatus, IncidentUpdate, Involvement, NewIncident,
};
pub use indicators::{Indicator, IndicatorAction, IndicatorFilter, IndicatorKind, NewIndicator};
pub use queries::{
    HistoryEntry, QUERY_HISTORY_MAX, QUERY_MAX_CHARS, SAVED_QUERIES_MAX, SavedQuery,
};
pub use rules::{BuiltinSync, NewRule, Rule, RuleFilter, RuleKind, RuleOrigin};
pub use tenants::{DEFAULT_TENANT_ID, Tenant};
pub use tokens::{
    ApiToken, EnrollmentGrant, EnrollmentToken, NewEnrollmentToken, Principal, TokenKind,
};
pub use users::{NewUser, Role, User, UserUpdate};
pub use validate::limits;

/// A new id such as `inc_01j5…` (see `ids`), for objects whose id the caller must know before
/// storing them (the incident correlator names incidents as it founds them).
pub fn new_id(prefix: &str) -> Result<String> {
    ids::new_id(prefix)
}

/// The embedded migrations, in order. A new schema change is a new file plus a line here.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (
        2,
        "telemetry sequence",
        include_str!("../migrations/0002_telemetry_sequence.sql"),
    ),
    (
        3,
        "action packages",
        include_str!("../migrations/0003_action_packages.sql"),
    ),
    (
        4,
        "hunting queries",
        include_str!("../migrations/0004_hunting_queries.sql"),
    ),
    (
        5,
        "device risk",
        include_str!("../migrations/0005_device_risk.sql"),
    ),
    (
        6,
        "alert activity",
        include_str!("../migrations/0006_alert_activity.sql"),
    ),
    (
        7,
        "rules by kind",
        include_str!("../migrations/0007_rules_by_kind.sql"),
    ),
];

/// Which database engine a [`StateDb`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The state database: a cheap-to-clone handle over a connection pool (put it in axum state).
#[derive(Debug, Clone)]
pub struct StateDb {
    pool: AnyPool,
    backend: Backend,
    /// Hosts this process has recorded from event logs, so that a batch's sightings skip the
    /// database when they say nothing new (see [`StateDb::record_device_sightings`]).
    sightings: std::sync::Arc<std::sync::Mutex<devices::Sightings>>,
}

impl StateDb {
    /// Connects and brings the schema up to date.
    ///
    /// `url` is `sqlite://PATH?mode=rwc` (the file is created if missing; in-memory databases are
    /// not supported since every pooled connection would see its own) or
    /// `postgres://user@host/db` (add `?options=-c%20search_path%3Dname` for a schema).
    pub async fn connect(url: &str) -> Result<StateDb> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::invalid(
                "url",
                "expected a sqlite:// or postgres:// URL",
            ));
        };
        install_default_drivers();
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the single writer; it is a property of the file, set
            // on every new connection because the pragma is a no-op once the file is in WAL.
            // foreign_keys=ON and a 5 s busy timeout are sqlx's SQLite defaults.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    // Pages read in place from the mapped file: each write by one connection
                    // empties the page caches of the others, which then read every page they
                    // touch again; mapped, that is no read call and no copy.
                    conn.execute("PRAGMA mmap_size = 268435456").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        let db = StateDb {
            pool,
            backend,
            sightings: Default::default(),
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    AssertSqlSafe(sql).into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    /// The engine behind this handle.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction. SQLite's default deferred `BEGIN` takes the write lock at the first
    /// write and fails with SQLITE_BUSY (no wait) if another writer got in since the read;
    /// `BEGIN IMMEDIATE` takes it up front, where the busy timeout applies.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}
