//! Tenants: the top of the ownership tree; bootstrap is the only tenant-less write.

use serde::{Deserialize, Serialize};

use crate::db::{Cols, FromRow, Sql, Time, micros, now};
use crate::validate::{limits, line};
use crate::{Result, StateDb, ids};

/// The tenant a single-tenant install uses; the same id the event store partitions by.
pub const DEFAULT_TENANT_ID: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: Time,
}

impl FromRow for Tenant {
    const COLUMNS: &'static str = "id, name, created_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(Tenant {
            id: r.str("id")?,
            name: r.str("name")?,
            created_at: r.time("created_at")?,
        })
    }
}

impl StateDb {
    /// Creates the tenant [`DEFAULT_TENANT_ID`] if it does not exist, and returns it.
    pub async fn ensure_default_tenant(&self) -> Result<Tenant> {
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(DEFAULT_TENANT_ID)
        .bind("Default")
        .bind(micros(now()))
        .execute(&self.pool)
        .await?;
        self.get_tenant(DEFAULT_TENANT_ID).await
    }

    /// Creates a tenant with a generated id.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let tenant = Tenant {
            id: ids::new_id("ten")?,
            name: line("name", name, limits::NAME_MAX_CHARS, true)?,
            created_at: now(),
        };
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(tenant.id.clone())
            .bind(tenant.name.clone())
            .bind(micros(tenant.created_at))
            .execute(&self.pool)
            .await?;
        Ok(tenant)
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Tenant> {
        let mut sql = Sql::new(&format!(
            "SELECT {} FROM tenants WHERE id = ",
            Tenant::COLUMNS
        ));
        sql.bind(id.to_owned());
        self.fetch_one(sql, "tenant").await
    }

    /// All tenants by name (an operator view; installs have few).
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let sql = Sql::new(&format!(
            "SELECT {} FROM tenants ORDER BY name, id",
            Tenant::COLUMNS
        ));
        self.fetch_all(sql).await
    }
}
