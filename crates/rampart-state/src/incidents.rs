//! Incidents: correlated alerts, each with the reason it joined; severity and activity range
//! are derived from the alerts and recomputed whenever alerts join or incidents merge.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alerts::opt_line;
use crate::db::{
    Cols, FromRow, MAX_PAGE_LIMIT, Order, Page, PageRequest, Scope, Sql, Time, micros, now,
    str_enum, to_json,
};
use crate::devices::double_option;
use crate::validate::{json, limits, line, tags};
use crate::{
    Alert, AlertFilter, AlertSource, Backend, Classification, Error, Result, RuleKind, Severity,
    StateDb, ids,
};

str_enum! {
    IncidentStatus {
        Active = "active",
        InProgress = "in_progress",
        Resolved = "resolved",
        /// Folded into another incident (`merged_into`); kept so old links can redirect.
        Merged = "merged",
    }
}

str_enum! {
    /// The order of an incident list.
    #[derive(Default)]
    IncidentSort {
        /// Newest created first (the default).
        #[default]
        Newest = "newest",
        /// Oldest created first.
        Oldest = "oldest",
        /// Most recent activity (latest alert event) first.
        Activity = "activity",
        /// Highest severity first, then most recent activity.
        Severity = "severity",
    }
}

impl IncidentSort {
    /// The integer the list is ordered by, largest first. Every order is "largest first" on
    /// one computed key so that one keyset cursor serves them all.
    fn key(self) -> String {
        match self {
            IncidentSort::Newest => "created_at".into(),
            IncidentSort::Oldest => "0 - created_at".into(),
            IncidentSort::Activity => "last_activity".into(),
            // Times are microseconds since 1970, below 10^16 until the year 2286.
            IncidentSort::Severity => format!(
                "CASE severity WHEN '{}' THEN 3 WHEN '{}' THEN 2 WHEN '{}' THEN 1 ELSE 0 END \
                 * 10000000000000000 + last_activity",
                Severity::High.as_str(),
                Severity::Medium.as_str(),
                Severity::Low.as_str()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub tenant_id: String,
    pub title: String,
    /// The highest severity among its alerts.
    pub severity: Severity,
    pub status: IncidentStatus,
    pub classification: Option<Classification>,
    pub determination: Option<String>,
    pub assigned_to: Option<String>,
    pub tags: Vec<String>,
    pub first_activity: Time,
    pub last_activity: Time,
    pub alert_count: i64,
    pub merged_into: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
}

impl FromRow for Incident {
    const COLUMNS: &'static str = "id, tenant_id, title, severity, status, classification, determination, \
        assigned_to, tags, first_activity, last_activity, alert_count, merged_into, created_at, updated_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(Incident {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            title: r.str("title")?,
            severity: r.parse("severity")?,
            status: r.parse("status")?,
            classification: r.opt_parse("classification")?,
            determination: r.opt_str("determination")?,
            assigned_to: r.opt_str("assigned_to")?,
            tags: r.json("tags")?,
            first_activity: r.time("first_activity")?,
            last_activity: r.time("last_activity")?,
            alert_count: r.i64("alert_count")?,
            merged_into: r.opt_str("merged_into")?,
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIncident {
    /// An id from [`crate::new_id`]`("inc")`, when the caller named the incident already;
    /// otherwise one is made.
    #[serde(default)]
    pub id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// An analyst's change; `None` leaves a field as is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    pub title: Option<String>,
    /// Any status but `merged` (use [`StateDb::merge_incidents`]).
    pub status: Option<IncidentStatus>,
    #[serde(default, with = "double_option")]
    pub classification: Option<Option<Classification>>,
    #[serde(default, with = "double_option")]
    pub determination: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub assigned_to: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentFilter {
    /// Incidents with at least one alert on a device in scope.
    #[serde(default)]
    pub scope: Scope,
    /// Without a status, merged incidents are left out.
    pub status: Option<IncidentStatus>,
    pub severity: Option<Severity>,
    pub assigned_to: Option<String>,
    pub tag: Option<String>,
    /// Incidents whose activity overlaps `[activity_from, activity_to)`.
    pub activity_from: Option<Time>,
    pub activity_to: Option<Time>,
    /// Incidents whose title contains this text, ignoring case (ASCII letters only on SQLite).
    pub q: Option<String>,
    /// Incidents with at least one alert from this source.
    pub source: Option<AlertSource>,
    #[serde(default)]
    pub sort: IncidentSort,
}

/// What an incident's alerts name, for its row in the queue: the devices and accounts, and the
/// detection sources that raised them (each sorted, without repeats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Involvement {
    pub devices: Vec<String>,
    pub users: Vec<String>,
    pub sources: Vec<AlertSource>,
}

/// An incident as the queue lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentRow {
    #[serde(flatten)]
    pub incident: Incident,
    #[serde(flatten)]
    pub involvement: Involvement,
}

/// An alert of an incident with why it joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAlert {
    pub alert: Alert,
    pub reason: Value,
    pub joined_at: Time,
}

/// An incident with its alerts (oldest first, at most [`MAX_PAGE_LIMIT`]) and the union of
/// their evidence entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDetail {
    pub incident: Incident,
    pub alerts: Vec<IncidentAlert>,
    /// More alerts exist than were returned (list them with an `incident_id` alert filter).
    pub alerts_truncated: bool,
    pub entities: Vec<Value>,
}

/// `AND id IN (incidents with an alert on a device in scope)`.
fn and_incident_scope(sql: &mut Sql, tenant: &str, scope: &Scope) {
    if !scope.is_all() {
        sql.push(" AND id IN (SELECT incident_id FROM alerts WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .and_device_scope(tenant, "device_id", scope)
            .push(")");
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

async fn incident_in_tx(backend: Backend, tx: &mut Tx, tenant: &str, id: &str) -> Result<Incident> {
    let mut sql = StateDb::select::<Incident>("incidents", tenant);
    sql.and_eq("id", Some(id.to_owned()));
    let row = sql.query(backend)?.fetch_optional(&mut **tx).await?;
    let incident = row
        .map(|r| Incident::from_row(&Cols(&r)))
        .transpose()?
        .ok_or(Error::NotFound("incident"))?;
    if let Some(into) = &incident.merged_into {
        return Err(Error::Conflict(format!(
            "incident {id} was merged into {into}"
        )));
    }
    Ok(incident)
}

/// Re-derives an incident's severity, activity range and alert count from its alerts.
async fn recompute(backend: Backend, tx: &mut Tx, tenant: &str, id: &str) -> Result<Incident> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT severity, first_event_time, last_event_time FROM {} \
         WHERE tenant_id = $1 AND incident_id = $2",
        crate::alerts::WITH_ACTIVITY
    )))
    .bind(tenant.to_owned())
    .bind(id.to_owned())
    .fetch_all(&mut **tx)
    .await?;
    let mut severity = Severity::Informational;
    let mut range: Option<(i64, i64)> = None;
    for row in &rows {
        let r = Cols(row);
        severity = severity.max(r.parse("severity")?);
        let (first, last) = (r.i64("first_event_time")?, r.i64("last_event_time")?);
        range = Some(range.map_or((first, last), |(f, l)| (f.min(first), l.max(last))));
    }
    let mut sql = Sql::new("UPDATE incidents SET severity = ");
    sql.bind(severity.as_str())
        .push(", alert_count = ")
        .bind(rows.len() as i64)
        .push(", updated_at = ")
        .bind(micros(now()));
    if let Some((first, last)) = range {
        sql.push(", first_activity = ")
            .bind(first)
            .push(", last_activity = ")
            .bind(last);
    }
    sql.push(" WHERE tenant_id = ")
        .bind(tenant.to_owned())
        .push(" AND id = ")
        .bind(id.to_owned())
        .push(&format!(" RETURNING {}", Incident::COLUMNS));
    let row = sql.query(backend)?.fetch_one(&mut **tx).await?;
    Incident::from_row(&Cols(&row))
}

impl StateDb {
    /// Creates an empty incident (attach its first alert next, in the correlator).
    pub async fn create_incident(&self, tenant: &str, new: &NewIncident) -> Result<Incident> {
        let at = now();
        let incident = Incident {
            id: match &new.id {
                Some(id) => line("id", id, limits::SHORT_MAX_CHARS, true)?,
                None => ids::new_id("inc")?,
            },
            tenant_id: tenant.to_owned(),
            title: line("title", &new.title, limits::TITLE_MAX_CHARS, true)?,
            severity: Severity::Informational,
            status: IncidentStatus::Active,
            classification: None,
            determination: None,
            assigned_to: None,
            tags: tags("tags", &new.tags)?,
            first_activity: at,
            last_activity: at,
            alert_count: 0,
            merged_into: None,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(
            "INSERT INTO incidents (id, tenant_id, title, severity, status, tags, first_activity, last_activity, \
             alert_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0, $7, $7)",
        )
        .bind(incident.id.clone())
        .bind(incident.tenant_id.clone())
        .bind(incident.title.clone())
        .bind(incident.severity.as_str())
        .bind(incident.status.as_str())
        .bind(to_json(&incident.tags))
        .bind(micros(at))
        .execute(&self.pool)
        .await?;
        Ok(incident)
    }

    /// Adds an alert to an incident with the correlator's reason (shared entities, time window,
    /// …), in one transaction with the incident's severity/activity/count. Attaching an alert
    /// to the incident it is already in changes nothing; an alert in another incident is a
    /// `Conflict` (merge the incidents instead).
    pub async fn attach_alert(
        &self,
        tenant: &str,
        incident_id: &str,
        alert_id: &str,
        reason: &Value,
    ) -> Result<Incident> {
        let reason = json("reason", reason, limits::JSON_MAX_BYTES)?;
        let mut tx = self.begin().await?;
        let incident = incident_in_tx(self.backend, &mut tx, tenant, incident_id).await?;
        let current: Option<Option<String>> =
            sqlx::query("SELECT incident_id FROM alerts WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.to_owned())
                .bind(alert_id.to_owned())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Cols(&r).opt_str("incident_id"))
                .transpose()?;
        match current {
            None => return Err(Error::NotFound("alert")),
            Some(Some(existing)) if existing == incident_id => return Ok(incident),
            Some(Some(existing)) => {
                return Err(Error::Conflict(format!(
                    "alert {alert_id} is already in incident {existing}"
                )));
            }
            Some(None) => {}
        }
        let at = micros(now());
        sqlx::query(
            "INSERT INTO incident_alerts (tenant_id, incident_id, alert_id, reason, joined_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.to_owned())
        .bind(incident_id.to_owned())
        .bind(alert_id.to_owned())
        .bind(reason)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)
        .map_err(Error::unique("incident link for this alert"))?;
        sqlx::query(
            "UPDATE alerts SET incident_id = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(incident_id.to_owned())
        .bind(at)
        .bind(tenant.to_owned())
        .bind(alert_id.to_owned())
        .execute(&mut *tx)
        .await?;
        let incident = recompute(self.backend, &mut tx, tenant, incident_id).await?;
        tx.commit().await?;
        Ok(incident)
    }

    /// Moves every alert of `sources` into `target`, keeping each alert's join reason; the
    /// sources become `merged` with `merged_into = target` and their tags join the target's.
    pub async fn merge_incidents(
        &self,
        tenant: &str,
        target: &str,
        sources: &[String],
    ) -> Result<Incident> {
        if sources.is_empty() || sources.iter().any(|s| s == target) {
            return Err(Error::invalid(
                "sources",
                "must be non-empty and not contain the target",
            ));
        }
        let mut tx = self.begin().await?;
        let mut into = incident_in_tx(self.backend, &mut tx, tenant, target).await?;
        for source in sources {
            let s = incident_in_tx(self.backend, &mut tx, tenant, source).await?;
            for t in s.tags {
                if into.tags.len() < limits::TAGS_MAX && !into.tags.contains(&t) {
                    into.tags.push(t);
                }
            }
        }
        let at = micros(now());
        for table in ["incident_alerts", "alerts"] {
            let mut sql = Sql::new(&format!("UPDATE {table} SET incident_id = "));
            sql.bind(target.to_owned())
                .push(" WHERE tenant_id = ")
                .bind(tenant.to_owned())
                .and_in("incident_id", sources);
            sql.query(self.backend)?.execute(&mut *tx).await?;
        }
        let mut sql = Sql::new("UPDATE incidents SET status = ");
        sql.bind(IncidentStatus::Merged.as_str())
            .push(", merged_into = ")
            .bind(target.to_owned())
            .push(", alert_count = 0, updated_at = ")
            .bind(at)
            .push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .and_in("id", sources);
        sql.query(self.backend)?.execute(&mut *tx).await?;
        sqlx::query("UPDATE incidents SET tags = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(to_json(&into.tags))
            .bind(tenant.to_owned())
            .bind(target.to_owned())
            .execute(&mut *tx)
            .await?;
        let merged = recompute(self.backend, &mut tx, tenant, target).await?;
        tx.commit().await?;
        Ok(merged)
    }

    pub async fn update_incident(
        &self,
        tenant: &str,
        scope: &Scope,
        id: &str,
        update: &IncidentUpdate,
    ) -> Result<Incident> {
        let mut sql = Sql::new("UPDATE incidents SET updated_at = ");
        sql.bind(micros(now()));
        if let Some(title) = &update.title {
            sql.push(", title = ")
                .bind(line("title", title, limits::TITLE_MAX_CHARS, true)?);
        }
        if let Some(status) = update.status {
            if status == IncidentStatus::Merged {
                return Err(Error::invalid("status", "use merge to merge incidents"));
            }
            sql.push(", status = ").bind(status.as_str());
        }
        if let Some(c) = update.classification {
            sql.push(", classification = ")
                .bind(c.map(Classification::as_str));
        }
        if let Some(d) = &update.determination {
            sql.push(", determination = ")
                .bind(opt_line("determination", d.as_deref())?);
        }
        if let Some(a) = &update.assigned_to {
            sql.push(", assigned_to = ")
                .bind(opt_line("assigned_to", a.as_deref())?);
        }
        if let Some(t) = &update.tags {
            sql.push(", tags = ").bind(to_json(&tags("tags", t)?));
        }
        sql.push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned())
            .push(" AND merged_into IS NULL");
        and_incident_scope(&mut sql, tenant, scope);
        sql.push(&format!(" RETURNING {}", Incident::COLUMNS));
        self.fetch_one(sql, "incident").await
    }

    /// An incident (possibly `merged`: follow `merged_into`) without its alerts.
    pub async fn get_incident(&self, tenant: &str, scope: &Scope, id: &str) -> Result<Incident> {
        let mut sql = Self::select::<Incident>("incidents", tenant);
        sql.and_eq("id", Some(id.to_owned()));
        and_incident_scope(&mut sql, tenant, scope);
        self.fetch_one(sql, "incident").await
    }

    /// An incident with its alerts, each alert's join reason, and the union of their evidence.
    pub async fn incident_detail(
        &self,
        tenant: &str,
        scope: &Scope,
        id: &str,
    ) -> Result<IncidentDetail> {
        let incident = self.get_incident(tenant, scope, id).await?;
        let filter = AlertFilter {
            scope: scope.clone(),
            incident_id: Some(incident.id.clone()),
            ..AlertFilter::default()
        };
        let alerts = self
            .list_alerts(tenant, &filter, &PageRequest::first(MAX_PAGE_LIMIT))
            .await?;
        let reasons: HashMap<String, (Value, Time)> =
            sqlx::query("SELECT alert_id, reason, joined_at FROM incident_alerts WHERE tenant_id = $1 AND incident_id = $2")
                .bind(tenant.to_owned())
                .bind(incident.id.clone())
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| {
                    let r = Cols(row);
                    Ok((r.str("alert_id")?, (r.json("reason")?, r.time("joined_at")?)))
                })
                .collect::<Result<_>>()?;
        let mut seen = HashSet::new();
        let mut entities = Vec::new();
        let mut items = Vec::with_capacity(alerts.items.len());
        // Oldest first reads as the attack story.
        for alert in alerts.items.into_iter().rev() {
            for e in &alert.evidence {
                if seen.insert(to_json(e)) {
                    entities.push(e.clone());
                }
            }
            let (reason, joined_at) = reasons.get(&alert.id).cloned().ok_or_else(|| {
                Error::Corrupt(format!("alert {} has no incident link", alert.id))
            })?;
            items.push(IncidentAlert {
                alert,
                reason,
                joined_at,
            });
        }
        Ok(IncidentDetail {
            incident,
            alerts: items,
            alerts_truncated: alerts.next.is_some(),
            entities,
        })
    }

    /// Incidents in the filter's order (newest first by default).
    pub async fn list_incidents(
        &self,
        tenant: &str,
        filter: &IncidentFilter,
        page: &PageRequest,
    ) -> Result<Page<Incident>> {
        // The sort key is a column of a subquery, so that the keyset cursor can compare it.
        let mut sql = Sql::new(&format!(
            "SELECT * FROM (SELECT {}, {} AS sort_key FROM incidents WHERE tenant_id = ",
            Incident::COLUMNS,
            filter.sort.key()
        ));
        sql.bind(tenant.to_owned());
        and_incident_scope(&mut sql, tenant, &filter.scope);
        match filter.status {
            Some(status) => sql.and_eq("status", Some(status.as_str())),
            None => sql.push(" AND merged_into IS NULL"),
        };
        let q = filter
            .q
            .as_deref()
            .map(|q| line("q", q, limits::SHORT_MAX_CHARS, false))
            .transpose()?
            .filter(|q| !q.is_empty());
        sql.and_eq("severity", filter.severity.map(Severity::as_str))
            .and_eq("assigned_to", filter.assigned_to.clone())
            .and_tag(self.backend, "tags", filter.tag.as_deref())
            .and_range("last_activity", filter.activity_from, None)
            .and_range("first_activity", None, filter.activity_to)
            .and_contains(self.backend, "lower(title)", q.map(|q| q.to_lowercase()));
        if let Some(source) = filter.source {
            sql.push(" AND id IN (SELECT incident_id FROM alerts WHERE tenant_id = ")
                .bind(tenant.to_owned());
            source.and_matches(&mut sql, "rule_kind");
            sql.push(")");
        }
        sql.push(") AS sorted WHERE 1 = 1");
        self.fetch_page(sql, Order::NewestFirst("sort_key"), page)
            .await
    }

    /// [`StateDb::list_incidents`] with what each incident's alerts (those in `filter.scope`)
    /// involve: one more statement for the whole page.
    pub async fn list_incident_rows(
        &self,
        tenant: &str,
        filter: &IncidentFilter,
        page: &PageRequest,
    ) -> Result<Page<IncidentRow>> {
        let incidents = self.list_incidents(tenant, filter, page).await?;
        let ids: Vec<String> = incidents.items.iter().map(|i| i.id.clone()).collect();
        let mut involved = self.involvement(tenant, &filter.scope, &ids).await?;
        Ok(Page {
            items: incidents
                .items
                .into_iter()
                .map(|incident| IncidentRow {
                    involvement: involved.remove(&incident.id).unwrap_or_default(),
                    incident,
                })
                .collect(),
            next: incidents.next,
        })
    }

    /// The devices, accounts and sources of the alerts of `incidents`, by incident.
    async fn involvement(
        &self,
        tenant: &str,
        scope: &Scope,
        incidents: &[String],
    ) -> Result<HashMap<String, Involvement>> {
        if incidents.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = Sql::new(
            "SELECT DISTINCT incident_id, device_name, rule_kind, evidence FROM alerts WHERE tenant_id = ",
        );
        sql.bind(tenant.to_owned())
            .and_in("incident_id", incidents)
            .and_device_scope(tenant, "device_id", scope);
        /// Names keyed by their lower case: one entry per name whatever its case.
        #[derive(Default)]
        struct Names {
            devices: BTreeMap<String, String>,
            users: BTreeMap<String, String>,
            sources: BTreeSet<AlertSource>,
        }
        let mut by_incident: HashMap<String, Names> = HashMap::new();
        for row in sql.query(self.backend)?.fetch_all(&self.pool).await? {
            let r = Cols(&row);
            let names = by_incident.entry(r.str("incident_id")?).or_default();
            if let Some(device) = r.opt_str("device_name")? {
                names.devices.entry(device.to_lowercase()).or_insert(device);
            }
            let kind: Option<RuleKind> = r.opt_parse("rule_kind")?;
            names.sources.insert(AlertSource::of_rule_kind(kind));
            let evidence: Vec<Value> = r.json("evidence")?;
            for user in evidence.iter().filter_map(account_name) {
                names.users.entry(user.to_lowercase()).or_insert(user);
            }
        }
        Ok(by_incident
            .into_iter()
            .map(|(id, n)| {
                let involvement = Involvement {
                    devices: n.devices.into_values().collect(),
                    users: n.users.into_values().collect(),
                    sources: n.sources.into_iter().collect(),
                };
                (id, involvement)
            })
            .collect())
    }
}

/// An account entity of an alert's evidence as people read it: `DOMAIN\name`, else its name,
/// UPN or SID; `None` for other entities.
fn account_name(entity: &Value) -> Option<String> {
    if entity.get("kind")?.as_str()? != "account" {
        return None;
    }
    let text = |key: &str| {
        entity
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (text("domain"), text("name")) {
        (Some(domain), Some(name)) => Some(format!("{domain}\\{name}")),
        (None, Some(name)) => Some(name.to_owned()),
        _ => text("upn").or_else(|| text("sid")).map(str::to_owned),
    }
}
