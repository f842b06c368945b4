//! Alerts: one detection hit (deduplicated over repeats) with its evidence entities.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{
    Cols, FromRow, Order, Page, PageRequest, Scope, Sql, Time, exact, micros, now, str_enum,
    to_json,
};
use crate::devices::double_option;
use crate::validate::{body, json, limits, line, tags};
use crate::{Error, Result, RuleKind, StateDb, ids};

str_enum! {
    /// Alert and incident severity, ordered: `High` is the maximum.
    Severity {
        Informational = "informational",
        Low = "low",
        Medium = "medium",
        High = "high",
    }
}

/// Deduplication keys per lookup statement (a bound on its parameters).
pub const KEYS_PER_LOOKUP: usize = 500;

/// Alerts with their activity (events' count and time range, kept apart: see the migration
/// `0006_alert_activity.sql`), for reading; no column name is in both tables.
pub(crate) const WITH_ACTIVITY: &str =
    "alerts JOIN alert_activity ON alert_activity.alert_id = alerts.id";

/// An unresolved alert, as a deduplication lookup finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAlert {
    pub id: String,
    pub last_event_time: Time,
}

/// Repeats of an alert's detection to fold into it: how many, and the time range of their
/// events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeats {
    pub alert: String,
    pub count: u32,
    pub earliest: Time,
    pub latest: Time,
}

str_enum! {
    AlertStatus {
        New = "new",
        InProgress = "in_progress",
        Resolved = "resolved",
    }
}

str_enum! {
    /// What raised an alert: a Sigma rule, a custom detection (a scheduled KQL rule), or an
    /// indicator match (the alerts raised without a rule).
    AlertSource {
        Sigma = "sigma",
        CustomDetection = "custom_detection",
        Indicator = "indicator",
    }
}

impl AlertSource {
    /// The source of an alert whose rule has this kind (`None`: raised without a rule).
    pub fn of_rule_kind(kind: Option<RuleKind>) -> AlertSource {
        match kind {
            Some(RuleKind::Sigma) => AlertSource::Sigma,
            Some(RuleKind::Kql) => AlertSource::CustomDetection,
            None => AlertSource::Indicator,
        }
    }

    /// The kind of rule that raises alerts of this source (`None`: no rule).
    pub fn rule_kind(self) -> Option<RuleKind> {
        match self {
            AlertSource::Sigma => Some(RuleKind::Sigma),
            AlertSource::CustomDetection => Some(RuleKind::Kql),
            AlertSource::Indicator => None,
        }
    }

    /// `AND <rule_kind_col> matches this source`: the source is not stored, the rule kind
    /// (copied into the alert) says it.
    pub(crate) fn and_matches(self, sql: &mut Sql, rule_kind_col: &str) {
        sql.push(" AND ").push(rule_kind_col);
        match self.rule_kind() {
            Some(kind) => sql.push(" = ").bind(kind.as_str()),
            None => sql.push(" IS NULL"),
        };
    }
}

str_enum! {
    Classification {
        TruePositive = "true_positive",
        FalsePositive = "false_positive",
        InformationalExpected = "informational_expected",
    }
}

/// The rule an alert came from, copied into the alert so it survives the rule's deletion
/// (`id` becomes `None` then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: Option<String>,
    pub title: String,
    pub kind: RuleKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub tenant_id: String,
    /// `None` for alerts not raised by a rule (indicator matches, behavioural detections).
    pub rule: Option<RuleRef>,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub classification: Option<Classification>,
    pub determination: Option<String>,
    pub assigned_to: Option<String>,
    /// ATT&CK tactics (e.g. `execution`) and techniques (e.g. `T1059.001`).
    pub tactics: Vec<String>,
    pub techniques: Vec<String>,
    pub device_id: Option<String>,
    pub device_name: Option<String>,
    pub first_event_time: Time,
    pub last_event_time: Time,
    /// Events folded into this alert by deduplication (1 for a fresh alert).
    pub event_count: i64,
    pub dedup_key: Option<String>,
    /// Evidence entities (process, file, user, ip, …) as JSON objects.
    pub evidence: Vec<Value>,
    /// Where the triggering event is stored: table, timestamp, source, record id, report id.
    pub trigger_event: Option<Value>,
    pub matched_fields: Value,
    pub incident_id: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
}

impl Alert {
    /// What raised the alert.
    pub fn source(&self) -> AlertSource {
        AlertSource::of_rule_kind(self.rule.as_ref().map(|r| r.kind))
    }
}

impl FromRow for Alert {
    /// Read from [`WITH_ACTIVITY`].
    const COLUMNS: &'static str = "id, tenant_id, rule_id, rule_title, rule_kind, title, description, severity, \
        status, classification, determination, assigned_to, tactics, techniques, device_id, device_name, \
        first_event_time, last_event_time, event_count, dedup_key, evidence, trigger_event, matched_fields, \
        incident_id, created_at, \
        CASE WHEN activity_at > updated_at THEN activity_at ELSE updated_at END AS updated_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        let rule = match (r.opt_str("rule_title")?, r.opt_parse("rule_kind")?) {
            (Some(title), Some(kind)) => Some(RuleRef {
                id: r.opt_str("rule_id")?,
                title,
                kind,
            }),
            _ => None,
        };
        Ok(Alert {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            rule,
            title: r.str("title")?,
            description: r.str("description")?,
            severity: r.parse("severity")?,
            status: r.parse("status")?,
            classification: r.opt_parse("classification")?,
            determination: r.opt_str("determination")?,
            assigned_to: r.opt_str("assigned_to")?,
            tactics: r.json("tactics")?,
            techniques: r.json("techniques")?,
            device_id: r.opt_str("device_id")?,
            device_name: r.opt_str("device_name")?,
            first_event_time: r.time("first_event_time")?,
            last_event_time: r.time("last_event_time")?,
            event_count: r.i64("event_count")?,
            dedup_key: r.opt_str("dedup_key")?,
            evidence: r.json("evidence")?,
            trigger_event: r.opt_json("trigger_event")?,
            matched_fields: r.json("matched_fields")?,
            incident_id: r.opt_str("incident_id")?,
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAlert {
    pub rule: Option<RuleRef>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub tactics: Vec<String>,
    #[serde(default)]
    pub techniques: Vec<String>,
    pub device_id: Option<String>,
    pub device_name: Option<String>,
    pub first_event_time: Time,
    pub last_event_time: Time,
    pub dedup_key: Option<String>,
    #[serde(default)]
    pub evidence: Vec<Value>,
    pub trigger_event: Option<Value>,
    #[serde(default)]
    pub matched_fields: Value,
}

/// An analyst's triage change; `None` leaves a field as is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertUpdate {
    pub status: Option<AlertStatus>,
    #[serde(default, with = "double_option")]
    pub classification: Option<Option<Classification>>,
    #[serde(default, with = "double_option")]
    pub determination: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub assigned_to: Option<Option<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFilter {
    #[serde(default)]
    pub scope: Scope,
    pub status: Option<AlertStatus>,
    pub severity: Option<Severity>,
    pub device_id: Option<String>,
    pub rule_id: Option<String>,
    pub incident_id: Option<String>,
    pub assigned_to: Option<String>,
    pub source: Option<AlertSource>,
    /// Creation time range, `[from, to)`.
    pub from: Option<Time>,
    pub to: Option<Time>,
}

/// Optional single-line text clearing to `None` when blank.
pub(crate) fn opt_line(field: &'static str, v: Option<&str>) -> Result<Option<String>> {
    Ok(v.map(|s| line(field, s, limits::SHORT_MAX_CHARS, false))
        .transpose()?
        .filter(|s| !s.is_empty()))
}

impl StateDb {
    pub async fn create_alert(&self, tenant: &str, new: &NewAlert) -> Result<Alert> {
        if new.first_event_time > new.last_event_time {
            return Err(Error::invalid("first_event_time", "after last_event_time"));
        }
        if let Some(device) = &new.device_id {
            self.ensure_exists("devices", tenant, device, "device")
                .await?;
        }
        let rule = match &new.rule {
            Some(r) => {
                if let Some(id) = &r.id {
                    self.ensure_exists("rules", tenant, id, "rule").await?;
                }
                Some(RuleRef {
                    id: r.id.clone(),
                    title: line("rule.title", &r.title, limits::TITLE_MAX_CHARS, true)?,
                    kind: r.kind,
                })
            }
            None => None,
        };
        let at = now();
        let alert = Alert {
            id: ids::new_id("alr")?,
            tenant_id: tenant.to_owned(),
            rule,
            title: line("title", &new.title, limits::TITLE_MAX_CHARS, true)?,
            description: body(
                "description",
                &new.description,
                limits::DESCRIPTION_MAX_CHARS,
                false,
            )?,
            severity: new.severity,
            status: AlertStatus::New,
            classification: None,
            determination: None,
            assigned_to: None,
            tactics: tags("tactics", &new.tactics)?,
            techniques: tags("techniques", &new.techniques)?,
            device_id: new.device_id.clone(),
            device_name: opt_line("device_name", new.device_name.as_deref())?,
            first_event_time: exact(new.first_event_time),
            last_event_time: exact(new.last_event_time),
            event_count: 1,
            dedup_key: opt_line("dedup_key", new.dedup_key.as_deref())?,
            evidence: new.evidence.clone(),
            trigger_event: new.trigger_event.clone(),
            matched_fields: new.matched_fields.clone(),
            incident_id: None,
            created_at: at,
            updated_at: at,
        };
        let evidence = json("evidence", &alert.evidence, limits::JSON_MAX_BYTES)?;
        let trigger = alert
            .trigger_event
            .as_ref()
            .map(|t| json("trigger_event", t, limits::JSON_MAX_BYTES))
            .transpose()?;
        let matched = json(
            "matched_fields",
            &alert.matched_fields,
            limits::JSON_MAX_BYTES,
        )?;
        let rule = alert.rule.as_ref();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO alerts (id, tenant_id, rule_id, rule_title, rule_kind, title, description, severity, status, \
             tactics, techniques, device_id, device_name, dedup_key, \
             evidence, trigger_event, matched_fields, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)",
        )
        .bind(alert.id.clone())
        .bind(alert.tenant_id.clone())
        .bind(rule.and_then(|r| r.id.clone()))
        .bind(rule.map(|r| r.title.clone()))
        .bind(rule.map(|r| r.kind.as_str()))
        .bind(alert.title.clone())
        .bind(alert.description.clone())
        .bind(alert.severity.as_str())
        .bind(alert.status.as_str())
        .bind(to_json(&alert.tactics))
        .bind(to_json(&alert.techniques))
        .bind(alert.device_id.clone())
        .bind(alert.device_name.clone())
        .bind(alert.dedup_key.clone())
        .bind(evidence)
        .bind(trigger)
        .bind(matched)
        .bind(micros(at))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO alert_activity (alert_id, first_event_time, last_event_time, event_count, \
             activity_at) VALUES ($1, $2, $3, 1, $4)",
        )
        .bind(alert.id.clone())
        .bind(micros(alert.first_event_time))
        .bind(micros(alert.last_event_time))
        .bind(micros(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(device) = &alert.device_id {
            self.refresh_device_risk(tenant, device).await?;
        }
        Ok(alert)
    }

    /// For each of `keys`, the newest unresolved alert with that deduplication key whose last
    /// event is at or after `since` (the deduplication window), if any: a batch's detections
    /// looked up at once (one statement per [`KEYS_PER_LOOKUP`] keys).
    pub async fn find_open_alerts_by_dedup_keys(
        &self,
        tenant: &str,
        keys: &[String],
        since: Time,
    ) -> Result<HashMap<String, OpenAlert>> {
        let mut found: HashMap<String, OpenAlert> = HashMap::new();
        for chunk in keys.chunks(KEYS_PER_LOOKUP) {
            let mut sql = Sql::new(&format!(
                "SELECT dedup_key, id, last_event_time FROM {WITH_ACTIVITY} WHERE tenant_id = "
            ));
            sql.bind(tenant.to_owned())
                .and_in("dedup_key", chunk)
                .push(" AND status <> ")
                .bind(AlertStatus::Resolved.as_str())
                .and_range("last_event_time", Some(since), None);
            for row in sql.query(self.backend)?.fetch_all(&self.pool).await? {
                let r = Cols(&row);
                let open = OpenAlert {
                    id: r.str("id")?,
                    last_event_time: r.time("last_event_time")?,
                };
                let newest = |o: &OpenAlert| (o.last_event_time, o.id.clone());
                match found.entry(r.str("dedup_key")?) {
                    Entry::Occupied(mut e) if newest(e.get()) < newest(&open) => {
                        e.insert(open);
                    }
                    Entry::Occupied(_) => {}
                    Entry::Vacant(e) => {
                        e.insert(open);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Folds repeated matching events into their alerts, in one transaction: each alert counts
    /// its repeats and widens its event time range, and so does the activity range of the
    /// incident it is in (once per incident). Per [`KEYS_PER_LOOKUP`] alerts, one lookup of
    /// their tenant and incidents (a covering index) and one update of their activity rows;
    /// one update per as many incidents (`UPDATE … FROM (VALUES …)`, which SQLite and
    /// PostgreSQL both read), not one each: every statement is a round trip to the database's
    /// thread or server.
    pub async fn record_duplicates(&self, tenant: &str, repeats: &[Repeats]) -> Result<()> {
        let mut tx = self.begin().await?;
        let updated_at = micros(now());
        // Each alert once (repeats of one alert given apart are added up): a statement updates
        // a row once whatever the number of its matches.
        let mut alerts: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
        for r in repeats {
            let (first, last) = (
                micros(r.earliest.min(r.latest)),
                micros(r.earliest.max(r.latest)),
            );
            let a = alerts.entry(&r.alert).or_insert((0, first, last));
            *a = (a.0 + i64::from(r.count), a.1.min(first), a.2.max(last));
        }
        let alerts: Vec<(&str, (i64, i64, i64))> = alerts.into_iter().collect();
        let mut incidents: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for chunk in alerts.chunks(KEYS_PER_LOOKUP) {
            // The tenant's alerts among them, with their incidents: every alert must be found
            // (an unknown one fails the call, and nothing is kept).
            let mut sql = Sql::new("SELECT id, incident_id FROM alerts WHERE tenant_id = ");
            sql.bind(tenant.to_owned()).and_in(
                "id",
                &chunk.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
            );
            let rows = sql.query(self.backend)?.fetch_all(&mut *tx).await?;
            if rows.len() < chunk.len() {
                return Err(Error::NotFound("alert"));
            }
            let mut sql = Sql::new(
                "UPDATE alert_activity SET event_count = event_count + v.column2, \
                 last_event_time = CASE WHEN last_event_time < v.column3 THEN v.column3 \
                 ELSE last_event_time END, \
                 first_event_time = CASE WHEN first_event_time > v.column4 THEN v.column4 \
                 ELSE first_event_time END, activity_at = ",
            );
            let values: Vec<(&str, [i64; 3])> = chunk
                .iter()
                .map(|(alert, (count, first, last))| (*alert, [*count, *last, *first]))
                .collect();
            sql.bind(updated_at)
                .push(" FROM (VALUES ")
                .values_rows(&values)
                .push(") AS v WHERE alert_activity.alert_id = v.column1");
            sql.query(self.backend)?.execute(&mut *tx).await?;
            let ranges: HashMap<&str, (i64, i64)> = chunk
                .iter()
                .map(|(alert, (_, first, last))| (*alert, (*first, *last)))
                .collect();
            for row in &rows {
                let r = Cols(row);
                let (Some(&(first, last)), Some(incident)) =
                    (ranges.get(r.str("id")?.as_str()), r.opt_str("incident_id")?)
                else {
                    continue;
                };
                let range = incidents.entry(incident).or_insert((first, last));
                *range = (range.0.min(first), range.1.max(last));
            }
        }
        let incidents: Vec<(String, (i64, i64))> = incidents.into_iter().collect();
        for chunk in incidents.chunks(KEYS_PER_LOOKUP) {
            let mut sql = Sql::new(
                "UPDATE incidents SET \
                 last_activity = CASE WHEN last_activity < v.column2 THEN v.column2 \
                 ELSE last_activity END, \
                 first_activity = CASE WHEN first_activity > v.column3 THEN v.column3 \
                 ELSE first_activity END FROM (VALUES ",
            );
            let rows: Vec<(&str, [i64; 2])> = chunk
                .iter()
                .map(|(incident, (first, last))| (incident.as_str(), [*last, *first]))
                .collect();
            sql.values_rows(&rows)
                .push(") AS v WHERE incidents.tenant_id = ")
                .bind(tenant.to_owned())
                .push(" AND incidents.id = v.column1");
            sql.query(self.backend)?.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_alert(&self, tenant: &str, scope: &Scope, id: &str) -> Result<Alert> {
        let mut sql = Self::select::<Alert>(WITH_ACTIVITY, tenant);
        sql.and_eq("id", Some(id.to_owned()))
            .and_device_scope(tenant, "device_id", scope);
        self.fetch_one(sql, "alert").await
    }

    /// Alerts, newest first.
    pub async fn list_alerts(
        &self,
        tenant: &str,
        filter: &AlertFilter,
        page: &PageRequest,
    ) -> Result<Page<Alert>> {
        let mut sql = Self::select::<Alert>(WITH_ACTIVITY, tenant);
        sql.and_device_scope(tenant, "device_id", &filter.scope)
            .and_eq("status", filter.status.map(AlertStatus::as_str))
            .and_eq("severity", filter.severity.map(Severity::as_str))
            .and_eq("device_id", filter.device_id.clone())
            .and_eq("rule_id", filter.rule_id.clone())
            .and_eq("incident_id", filter.incident_id.clone())
            .and_eq("assigned_to", filter.assigned_to.clone())
            .and_range("created_at", filter.from, filter.to);
        if let Some(source) = filter.source {
            source.and_matches(&mut sql, "rule_kind");
        }
        self.fetch_page(sql, Order::NewestFirst("created_at"), page)
            .await
    }

    /// Applies an analyst's triage change.
    pub async fn update_alert(
        &self,
        tenant: &str,
        scope: &Scope,
        id: &str,
        update: &AlertUpdate,
    ) -> Result<Alert> {
        let mut sql = Sql::new("UPDATE alerts SET updated_at = ");
        sql.bind(micros(now()));
        if let Some(status) = update.status {
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
        sql.push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned())
            .and_device_scope(tenant, "device_id", scope)
            .push(" RETURNING id");
        sql.query(self.backend)?
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("alert"))?;
        // Read back with its activity.
        let alert = self.get_alert(tenant, scope, id).await?;
        if let (Some(_), Some(device)) = (update.status, &alert.device_id) {
            self.refresh_device_risk(tenant, device).await?;
        }
        Ok(alert)
    }

    /// Sets a device's risk to the highest severity of its alerts not resolved (`none`
    /// without any), as Defender's device risk level: raised by a new alert, lowered when the
    /// alerts behind it are resolved.
    pub(crate) async fn refresh_device_risk(&self, tenant: &str, device: &str) -> Result<()> {
        sqlx::query(
            "UPDATE devices SET risk = COALESCE((SELECT CASE MAX(CASE severity \
               WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END) \
               WHEN 3 THEN 'high' WHEN 2 THEN 'medium' WHEN 1 THEN 'low' ELSE 'none' END \
               FROM alerts WHERE alerts.tenant_id = $1 AND alerts.device_id = $2 \
               AND alerts.status <> 'resolved'), 'none') \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.to_owned())
        .bind(device.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
