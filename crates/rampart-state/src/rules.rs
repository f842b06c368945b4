//! Detection rules: Sigma rules evaluated on the stream and scheduled KQL queries.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{Cols, FromRow, Order, Page, PageRequest, Time, micros, now, str_enum, to_json};
use crate::validate::{body, json, limits, line, positive, tags};
use crate::{Error, Result, Severity, StateDb, ids};

str_enum! {
    RuleKind {
        Sigma = "sigma",
        Kql = "kql",
    }
}

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RuleOrigin {
    /// Shipped with Rampart; `path` is its path in the rule set.
    Builtin { path: String },
    /// Uploaded through the API or CLI.
    Uploaded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub tenant_id: String,
    pub kind: RuleKind,
    /// The Sigma rule's own `id:` (unique per tenant), when it has one.
    pub sigma_id: Option<String>,
    pub title: String,
    pub source: String,
    pub enabled: bool,
    pub severity: Severity,
    pub tags: Vec<String>,
    /// KQL rules: how often the query runs.
    pub schedule_secs: Option<i64>,
    /// KQL rules: how result rows become alerts (title, severity, entity mappings, …).
    pub alert_template: Option<Value>,
    pub origin: RuleOrigin,
    pub created_by: String,
    pub created_at: Time,
    pub updated_at: Time,
}

impl FromRow for Rule {
    const COLUMNS: &'static str = "id, tenant_id, kind, sigma_id, title, source, enabled, severity, tags, \
        schedule_secs, alert_template, origin, origin_path, created_by, created_at, updated_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        let origin = match (r.str("origin")?.as_str(), r.opt_str("origin_path")?) {
            ("builtin", Some(path)) => RuleOrigin::Builtin { path },
            ("uploaded", None) => RuleOrigin::Uploaded,
            (other, _) => return Err(Error::Corrupt(format!("origin: {other:?}"))),
        };
        Ok(Rule {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            kind: r.parse("kind")?,
            sigma_id: r.opt_str("sigma_id")?,
            title: r.str("title")?,
            source: r.str("source")?,
            enabled: r.bool("enabled")?,
            severity: r.parse("severity")?,
            tags: r.json("tags")?,
            schedule_secs: r.opt_i64("schedule_secs")?,
            alert_template: r.opt_json("alert_template")?,
            origin,
            created_by: r.str("created_by")?,
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
        })
    }
}

/// A rule to store. The caller (who parsed the source) supplies the extracted fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRule {
    pub kind: RuleKind,
    pub sigma_id: Option<String>,
    pub title: String,
    pub source: String,
    pub enabled: bool,
    pub severity: Severity,
    #[serde(default)]
    pub tags: Vec<String>,
    pub schedule_secs: Option<i64>,
    pub alert_template: Option<Value>,
    pub origin: RuleOrigin,
}

/// What [`StateDb::sync_builtin_rules`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuiltinSync {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub unchanged: u64,
    /// Paths left out, with why (a Sigma id already taken, a field over its limit).
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFilter {
    pub kind: Option<RuleKind>,
    pub enabled: Option<bool>,
    pub severity: Option<Severity>,
    /// Only builtin rules (`true`) or only uploaded ones (`false`).
    pub builtin: Option<bool>,
    /// Case-insensitive substring of the title.
    pub title_contains: Option<String>,
}

impl StateDb {
    pub async fn create_rule(&self, tenant: &str, new: &NewRule, created_by: &str) -> Result<Rule> {
        let rule = validated(tenant, new, created_by)?;
        insert(&self.pool, &rule).await?;
        Ok(rule)
    }

    /// Brings a tenant's builtin rules in line with `rules` (the rule files the server was
    /// started with), in one transaction: a new path is added (enabled), a changed source is
    /// updated (its enabled flag kept), a path no longer given is removed. A rule that is
    /// invalid, or whose Sigma id another rule of the tenant already has, is left out and named
    /// in the report: one bad file does not stop the others.
    pub async fn sync_builtin_rules(&self, tenant: &str, rules: &[NewRule]) -> Result<BuiltinSync> {
        let mut report = BuiltinSync::default();
        let mut tx = self.begin().await?;
        let rows =
            sqlx::query("SELECT id, origin_path, source, sigma_id FROM rules WHERE tenant_id = $1")
                .bind(tenant.to_owned())
                .fetch_all(&mut *tx)
                .await?;
        let mut builtin: HashMap<String, (String, String)> = HashMap::new();
        let mut ids_taken: HashSet<String> = HashSet::new();
        for row in &rows {
            let c = Cols(row);
            if let Some(path) = c.opt_str("origin_path")? {
                builtin.insert(path, (c.str("id")?, c.str("source")?));
            } else if let Some(sigma) = c.opt_str("sigma_id")? {
                // Uploaded rules keep their ids; builtin ones are re-checked below.
                ids_taken.insert(sigma);
            }
        }
        let at = micros(now());
        // Paths already stored first: they keep their Sigma ids against newcomers.
        let (known, fresh): (Vec<&NewRule>, Vec<&NewRule>) = rules.iter().partition(
            |r| matches!(&r.origin, RuleOrigin::Builtin { path } if builtin.contains_key(path)),
        );
        for new in known.into_iter().chain(fresh) {
            let RuleOrigin::Builtin { path } = &new.origin else {
                return Err(Error::invalid(
                    "origin",
                    "only builtin rules are synchronised",
                ));
            };
            let rule = match validated(tenant, new, "server") {
                Ok(rule) => rule,
                Err(e) => {
                    report.skipped.push((path.clone(), e.to_string()));
                    continue;
                }
            };
            if let Some(sigma) = &rule.sigma_id
                && !ids_taken.insert(sigma.clone())
            {
                report
                    .skipped
                    .push((path.clone(), format!("sigma id {sigma} is taken")));
                continue;
            }
            match builtin.remove(path) {
                Some((_, source)) if source == rule.source => report.unchanged += 1,
                Some((id, _)) => {
                    sqlx::query(
                        "UPDATE rules SET sigma_id = $1, title = $2, source = $3, severity = $4, tags = $5, \
                         updated_at = $6 WHERE tenant_id = $7 AND id = $8",
                    )
                    .bind(rule.sigma_id.clone())
                    .bind(rule.title.clone())
                    .bind(rule.source.clone())
                    .bind(rule.severity.as_str())
                    .bind(to_json(&rule.tags))
                    .bind(at)
                    .bind(tenant.to_owned())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    report.updated += 1;
                }
                None => {
                    insert(&mut *tx, &rule).await?;
                    report.added += 1;
                }
            }
        }
        for (_, (id, _)) in builtin {
            sqlx::query("DELETE FROM rules WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.to_owned())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            report.removed += 1;
        }
        tx.commit().await?;
        Ok(report)
    }

    pub async fn get_rule(&self, tenant: &str, id: &str) -> Result<Rule> {
        let mut sql = Self::select::<Rule>("rules", tenant);
        sql.and_eq("id", Some(id.to_owned()));
        self.fetch_one(sql, "rule").await
    }

    /// Rules by title.
    pub async fn list_rules(
        &self,
        tenant: &str,
        filter: &RuleFilter,
        page: &PageRequest,
    ) -> Result<Page<Rule>> {
        let mut sql = Self::select::<Rule>("rules", tenant);
        sql.and_eq("kind", filter.kind.map(RuleKind::as_str))
            .and_eq("enabled", filter.enabled.map(i64::from))
            .and_eq("severity", filter.severity.map(Severity::as_str))
            .and_eq(
                "origin",
                filter
                    .builtin
                    .map(|b| if b { "builtin" } else { "uploaded" }),
            )
            .and_contains(
                self.backend,
                "lower(title)",
                filter.title_contains.as_ref().map(|t| t.to_lowercase()),
            );
        self.fetch_page(sql, Order::Alphabetical("title"), page)
            .await
    }

    pub async fn set_rule_enabled(&self, tenant: &str, id: &str, enabled: bool) -> Result<Rule> {
        let done = sqlx::query(
            "UPDATE rules SET enabled = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(i64::from(enabled))
        .bind(micros(now()))
        .bind(tenant.to_owned())
        .bind(id.to_owned())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("rule"));
        }
        self.get_rule(tenant, id).await
    }

    /// Deletes a rule; its alerts keep the rule's title and kind.
    pub async fn delete_rule(&self, tenant: &str, id: &str) -> Result<()> {
        self.delete_by_id("rules", tenant, id, "rule").await
    }
}

/// The rule `new` describes, checked and normalised, with a fresh id.
fn validated(tenant: &str, new: &NewRule, created_by: &str) -> Result<Rule> {
    let (schedule_secs, alert_template) = match new.kind {
        RuleKind::Kql => {
            let secs = new
                .schedule_secs
                .ok_or_else(|| Error::invalid("schedule_secs", "required for KQL rules"))?;
            let template = new
                .alert_template
                .clone()
                .ok_or_else(|| Error::invalid("alert_template", "required for KQL rules"))?;
            (Some(positive("schedule_secs", secs)?), Some(template))
        }
        RuleKind::Sigma => {
            if new.schedule_secs.is_some() || new.alert_template.is_some() {
                return Err(Error::invalid(
                    "schedule_secs",
                    "only KQL rules are scheduled",
                ));
            }
            (None, None)
        }
    };
    let origin = match &new.origin {
        RuleOrigin::Builtin { path } => RuleOrigin::Builtin {
            path: line("origin.path", path, limits::SHORT_MAX_CHARS * 4, true)?,
        },
        RuleOrigin::Uploaded => RuleOrigin::Uploaded,
    };
    let at = now();
    let rule = Rule {
        id: ids::new_id("rul")?,
        tenant_id: tenant.to_owned(),
        kind: new.kind,
        sigma_id: new
            .sigma_id
            .as_deref()
            .map(|s| line("sigma_id", s, limits::SHORT_MAX_CHARS, true).map(|s| s.to_lowercase()))
            .transpose()?,
        title: line("title", &new.title, limits::TITLE_MAX_CHARS, true)?,
        source: body("source", &new.source, limits::RULE_SOURCE_MAX_CHARS, true)?,
        enabled: new.enabled,
        severity: new.severity,
        tags: tags("tags", &new.tags)?,
        schedule_secs,
        alert_template,
        origin,
        created_by: line("created_by", created_by, limits::SHORT_MAX_CHARS, true)?,
        created_at: at,
        updated_at: at,
    };
    Ok(rule)
}

/// Inserts a validated rule.
async fn insert<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    rule: &Rule,
) -> Result<()> {
    let origin_path = match &rule.origin {
        RuleOrigin::Builtin { path } => Some(path.clone()),
        RuleOrigin::Uploaded => None,
    };
    let template = rule
        .alert_template
        .as_ref()
        .map(|t| json("alert_template", t, limits::JSON_MAX_BYTES))
        .transpose()?;
    sqlx::query(
        "INSERT INTO rules (id, tenant_id, kind, sigma_id, title, source, enabled, severity, tags, \
         schedule_secs, alert_template, origin, origin_path, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(rule.id.clone())
    .bind(rule.tenant_id.clone())
    .bind(rule.kind.as_str())
    .bind(rule.sigma_id.clone())
    .bind(rule.title.clone())
    .bind(rule.source.clone())
    .bind(i64::from(rule.enabled))
    .bind(rule.severity.as_str())
    .bind(to_json(&rule.tags))
    .bind(rule.schedule_secs)
    .bind(template)
    .bind(if origin_path.is_some() {
        "builtin"
    } else {
        "uploaded"
    })
    .bind(origin_path)
    .bind(rule.created_by.clone())
    .bind(micros(rule.created_at))
    .execute(executor)
    .await
    .map_err(Error::from)
    .map_err(Error::unique("rule with this sigma id"))?;
    Ok(())
}
