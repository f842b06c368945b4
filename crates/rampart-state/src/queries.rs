//! What advanced hunting remembers for each user: the queries they ran (a short history, newest
//! first) and the queries they saved under a name. Both are private: every method takes the
//! user's id beside the tenant, and reads or changes that user's rows only.

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use crate::db::{Cols, FromRow, Order, Page, PageRequest, Sql, Time, micros, now};
use crate::validate::{body, limits, line};
use crate::{Error, Result, StateDb, ids};

/// History entries kept per user: each run drops the ones beyond the newest.
pub const QUERY_HISTORY_MAX: usize = 50;
/// Saved queries per user.
pub const SAVED_QUERIES_MAX: usize = 200;
/// Longest query text kept, in characters: every query the hunting API accepts (64 KiB) fits.
pub const QUERY_MAX_CHARS: usize = 64 * 1024;

/// A query the user ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: String,
    pub query: String,
    pub ran_at: Time,
}

impl FromRow for HistoryEntry {
    const COLUMNS: &'static str = "id, query, ran_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(HistoryEntry {
            id: r.str("id")?,
            query: r.str("query")?,
            ran_at: r.time("ran_at")?,
        })
    }
}

/// A query the user saved under a name (unique per user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedQuery {
    pub id: String,
    pub name: String,
    pub query: String,
    pub created_at: Time,
    pub updated_at: Time,
}

impl FromRow for SavedQuery {
    const COLUMNS: &'static str = "id, name, query, created_at, updated_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(SavedQuery {
            id: r.str("id")?,
            name: r.str("name")?,
            query: r.str("query")?,
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
        })
    }
}

impl StateDb {
    /// Records that `user` ran `query`. The same text run again moves to the top rather than
    /// being listed twice (re-running to page through results adds nothing), and only the newest
    /// [`QUERY_HISTORY_MAX`] entries are kept.
    pub async fn record_query(
        &self,
        tenant: &str,
        user: &str,
        query: &str,
    ) -> Result<HistoryEntry> {
        let entry = HistoryEntry {
            id: ids::new_id("qry")?,
            query: body("query", query, QUERY_MAX_CHARS, true)?,
            ran_at: now(),
        };
        self.ensure_exists("users", tenant, user, "user").await?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM query_history WHERE tenant_id = $1 AND user_id = $2 AND query = $3",
        )
        .bind(tenant.to_owned())
        .bind(user.to_owned())
        .bind(entry.query.clone())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO query_history (id, tenant_id, user_id, query, ran_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(entry.id.clone())
        .bind(tenant.to_owned())
        .bind(user.to_owned())
        .bind(entry.query.clone())
        .bind(micros(entry.ran_at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM query_history WHERE tenant_id = $1 AND user_id = $2 AND id NOT IN \
             (SELECT id FROM query_history WHERE tenant_id = $1 AND user_id = $2 \
             ORDER BY ran_at DESC, id DESC LIMIT $3)",
        )
        .bind(tenant.to_owned())
        .bind(user.to_owned())
        .bind(QUERY_HISTORY_MAX as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// The queries `user` ran, newest first.
    pub async fn query_history(
        &self,
        tenant: &str,
        user: &str,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>> {
        let mut sql = Self::select::<HistoryEntry>("query_history", tenant);
        sql.and_eq("user_id", Some(user.to_owned()));
        self.fetch_page(sql, Order::NewestFirst("ran_at"), page)
            .await
    }

    /// Saves `query` as `name` for `user`, replacing the query of that name if there is one.
    /// At most [`SAVED_QUERIES_MAX`] per user.
    pub async fn save_query(
        &self,
        tenant: &str,
        user: &str,
        name: &str,
        query: &str,
    ) -> Result<SavedQuery> {
        let name = line("name", name, limits::NAME_MAX_CHARS, true)?;
        let query = body("query", query, QUERY_MAX_CHARS, true)?;
        let at = micros(now());
        self.ensure_exists("users", tenant, user, "user").await?;
        let mut tx = self.begin().await?;
        let others: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM saved_queries \
             WHERE tenant_id = $1 AND user_id = $2 AND name <> $3",
        )
        .bind(tenant.to_owned())
        .bind(user.to_owned())
        .bind(name.clone())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if others >= SAVED_QUERIES_MAX as i64 {
            return Err(Error::Conflict(format!(
                "{SAVED_QUERIES_MAX} queries are saved already; delete one first"
            )));
        }
        let mut sql = Sql::new(
            "INSERT INTO saved_queries (id, tenant_id, user_id, name, query, created_at, updated_at) VALUES (",
        );
        sql.bind(ids::new_id("svq")?).push(", ");
        sql.bind(tenant.to_owned()).push(", ");
        sql.bind(user.to_owned()).push(", ");
        sql.bind(name).push(", ");
        sql.bind(query).push(", ");
        sql.bind(at).push(", ");
        sql.bind(at);
        sql.push(&format!(
            ") ON CONFLICT (tenant_id, user_id, name) DO UPDATE SET query = excluded.query, \
             updated_at = excluded.updated_at RETURNING {}",
            SavedQuery::COLUMNS
        ));
        let row = sql.query(self.backend)?.fetch_one(&mut *tx).await?;
        let saved = SavedQuery::from_row(&Cols(&row))?;
        tx.commit().await?;
        Ok(saved)
    }

    /// The queries `user` saved, by name.
    pub async fn list_saved_queries(
        &self,
        tenant: &str,
        user: &str,
        page: &PageRequest,
    ) -> Result<Page<SavedQuery>> {
        let mut sql = Self::select::<SavedQuery>("saved_queries", tenant);
        sql.and_eq("user_id", Some(user.to_owned()));
        self.fetch_page(sql, Order::Alphabetical("name"), page)
            .await
    }

    /// Deletes one of `user`'s saved queries (another user's is not found).
    pub async fn delete_saved_query(&self, tenant: &str, user: &str, id: &str) -> Result<()> {
        let done = sqlx::query(
            "DELETE FROM saved_queries WHERE tenant_id = $1 AND user_id = $2 AND id = $3",
        )
        .bind(tenant.to_owned())
        .bind(user.to_owned())
        .bind(id.to_owned())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("saved query"));
        }
        Ok(())
    }
}
