//! Analyst comments on alerts and incidents.

use serde::{Deserialize, Serialize};

use crate::db::{Cols, FromRow, Order, Page, PageRequest, Time, micros, now, str_enum};
use crate::validate::{body, limits, line};
use crate::{Result, StateDb, ids};

str_enum! {
    CommentTarget {
        Alert = "alert",
        Incident = "incident",
    }
}

impl CommentTarget {
    fn table(self) -> &'static str {
        match self {
            CommentTarget::Alert => "alerts",
            CommentTarget::Incident => "incidents",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: String,
    pub tenant_id: String,
    pub target_kind: CommentTarget,
    pub target_id: String,
    pub author: String,
    pub text: String,
    pub created_at: Time,
}

impl FromRow for Comment {
    const COLUMNS: &'static str = "id, tenant_id, target_kind, target_id, author, text, created_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(Comment {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            target_kind: r.parse("target_kind")?,
            target_id: r.str("target_id")?,
            author: r.str("author")?,
            text: r.str("text")?,
            created_at: r.time("created_at")?,
        })
    }
}

impl StateDb {
    /// Adds a comment (at most [`limits::COMMENT_MAX_CHARS`]) to an alert or incident of this
    /// tenant.
    pub async fn add_comment(
        &self,
        tenant: &str,
        target: CommentTarget,
        target_id: &str,
        author: &str,
        text: &str,
    ) -> Result<Comment> {
        let what = match target {
            CommentTarget::Alert => "alert",
            CommentTarget::Incident => "incident",
        };
        let comment = Comment {
            id: ids::new_id("cmt")?,
            tenant_id: tenant.to_owned(),
            target_kind: target,
            target_id: target_id.to_owned(),
            author: line("author", author, limits::SHORT_MAX_CHARS, true)?,
            text: body("text", text, limits::COMMENT_MAX_CHARS, true)?,
            created_at: now(),
        };
        self.ensure_exists(target.table(), tenant, target_id, what)
            .await?;
        sqlx::query(
            "INSERT INTO comments (id, tenant_id, target_kind, target_id, author, text, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(comment.id.clone())
        .bind(comment.tenant_id.clone())
        .bind(target.as_str())
        .bind(comment.target_id.clone())
        .bind(comment.author.clone())
        .bind(comment.text.clone())
        .bind(micros(comment.created_at))
        .execute(&self.pool)
        .await?;
        Ok(comment)
    }

    /// Comments on one alert or incident, newest first.
    pub async fn list_comments(
        &self,
        tenant: &str,
        target: CommentTarget,
        target_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Comment>> {
        let mut sql = Self::select::<Comment>("comments", tenant);
        sql.and_eq("target_kind", Some(target.as_str()))
            .and_eq("target_id", Some(target_id.to_owned()));
        self.fetch_page(sql, Order::NewestFirst("created_at"), page)
            .await
    }
}
