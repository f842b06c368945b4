//! Custom detections: KQL queries that run on a schedule over a tenant's events; each result
//! row becomes an alert, suppressed and correlated like any other. The query decides what to
//! look at (Defender's custom detections likewise run the analyst's query as written, typically
//! with a `Timestamp > ago(...)` filter); repeated rows fold into their open alert through the
//! dedup key, so a query that finds the same row at every run raises it once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rampart_alerts::{
    AlertDraft, DetectionSource, Entity, EntityData, EventRef, MatchedField, Role, Severity,
};
use rampart_kql::{Engine, KqlError, QueryOptions};
use rampart_state::{PageRequest, Rule, RuleFilter, RuleKind};
use rampart_store::TenantCatalog;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::alerting::{Candidate, Outcome, place_all};
use crate::app::App;
use crate::problem::Problem;

/// Rows of one run turned into alerts at most; a query finding more is cut (and logged).
pub const MAX_ALERTS_PER_RUN: usize = 1000;
/// Shortest schedule.
pub const MIN_SCHEDULE_SECS: i64 = 10;
/// How often the scheduler looks for due rules.
const TICK: Duration = Duration::from_secs(5);

/// What a custom detection's alerts say, beside the rule's title (the rule's alert template).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTemplate {
    #[serde(default)]
    pub description: String,
    /// ATT&CK tactic names (`Execution`) and technique ids (`T1059.001`).
    #[serde(default)]
    pub tactics: Vec<String>,
    #[serde(default)]
    pub techniques: Vec<String>,
}

/// Runs due custom detections of every tenant, forever.
pub async fn scheduler(app: App) {
    let mut last_run: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let tenants = match app.db.list_tenants().await {
            Ok(t) => t,
            Err(error) => {
                tracing::warn!(%error, "custom detections: cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            let rules = match enabled_kql_rules(&app, &tenant.id).await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%error, tenant = %tenant.id, "custom detections: cannot list rules");
                    continue;
                }
            };
            for rule in rules {
                let every = Duration::from_secs(
                    rule.schedule_secs.unwrap_or(3600).max(MIN_SCHEDULE_SECS) as u64,
                );
                if last_run.get(&rule.id).is_some_and(|t| t.elapsed() < every) {
                    continue;
                }
                last_run.insert(rule.id.clone(), Instant::now());
                match run(&app, &tenant.id, &rule).await {
                    Ok(outcome) => {
                        tracing::debug!(rule = %rule.id, ?outcome, "custom detection ran")
                    }
                    Err(problem) => {
                        app.metrics
                            .rule_errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(rule = %rule.id, detail = ?problem.detail, "custom detection failed");
                    }
                }
            }
        }
    }
}

async fn enabled_kql_rules(app: &App, tenant: &str) -> rampart_state::Result<Vec<Rule>> {
    let filter = RuleFilter {
        kind: Some(RuleKind::Kql),
        enabled: Some(true),
        ..RuleFilter::default()
    };
    let mut out = Vec::new();
    let mut page = PageRequest::first(rampart_state::MAX_PAGE_LIMIT);
    loop {
        let got = app.db.list_rules(tenant, &filter, &page).await?;
        out.extend(got.items);
        match got.next {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(out),
        }
    }
}

/// Runs the query over the tenant's events and returns its rows (at most `limit`).
pub async fn query(
    app: &App,
    tenant: &str,
    kql: &str,
    limit: usize,
) -> Result<Vec<Map<String, Value>>, KqlError> {
    let engine = Engine::new(TenantCatalog::of_store(app.store.clone(), tenant));
    let options = QueryOptions {
        limit,
        timeout: Duration::from_secs(app.config.hunting.timeout_secs),
    };
    Ok(engine.run(kql, &options).await?.json_rows())
}

/// Runs one custom detection now: its rows become alerts.
pub async fn run(app: &App, tenant: &str, rule: &Rule) -> Result<Outcome, Problem> {
    let rows = query(app, tenant, &rule.source, MAX_ALERTS_PER_RUN)
        .await
        .map_err(|e| Problem::kql(&e, &rule.source))?;
    let template: AlertTemplate = rule
        .alert_template
        .clone()
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or_default();
    let candidates: Vec<Candidate> = rows
        .iter()
        .map(|row| Candidate {
            draft: draft(rule, &template, row),
            rule_id: Some(rule.id.clone()),
            kind: Some(RuleKind::Kql),
        })
        .collect();
    // The devices the rows name, when known: their alerts then belong to the device (and its
    // group's analysts see them) as any other alert does.
    let names: Vec<String> = candidates
        .iter()
        .filter_map(|c| c.draft.device_name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let devices: BTreeMap<String, String> = app
        .db
        .device_ids_by_hostname(tenant, &names)
        .await?
        .into_iter()
        .collect();
    place_all(app, tenant, candidates, &devices).await
}

fn text<'a>(row: &'a Map<String, Value>, column: &str) -> Option<&'a str> {
    row.get(column)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "-")
}

fn time(row: &Map<String, Value>, column: &str) -> Option<DateTime<Utc>> {
    text(row, column).and_then(|t| DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc()))
}

/// The alert a result row raises. Evidence comes from the hunting schema's column names the
/// row carries (DeviceName, Account*, FileName/FolderPath/SHA*, ProcessId/ProcessCommandLine,
/// RemoteIP, RemoteUrl).
fn draft(rule: &Rule, template: &AlertTemplate, row: &Map<String, Value>) -> AlertDraft {
    let at = time(row, "Timestamp").unwrap_or_else(Utc::now);
    let device = text(row, "DeviceName").map(str::to_lowercase);
    let mut entities = Vec::new();
    let mut add = |data: EntityData, role: Role| entities.push(Entity::new(data, role));
    if let Some(name) = &device {
        add(
            EntityData::Device {
                name: name.clone(),
                id: text(row, "DeviceId").map(str::to_string),
            },
            Role::Impacted,
        );
    }
    let account = ["AccountName", "AccountDomain", "AccountSid", "AccountUpn"]
        .map(|c| text(row, c).map(str::to_string));
    if account.iter().any(Option::is_some) {
        let [name, domain, sid, upn] = account;
        add(
            EntityData::Account {
                name,
                domain,
                sid,
                upn,
            },
            Role::Impacted,
        );
    }
    let hashes = ["SHA1", "SHA256", "MD5"].map(|c| text(row, c).map(str::to_string));
    if text(row, "FileName").is_some() || hashes.iter().any(Option::is_some) {
        let [sha1, sha256, md5] = hashes.clone();
        add(
            EntityData::File {
                device: device.clone(),
                name: text(row, "FileName").map(str::to_string),
                folder_path: text(row, "FolderPath").map(str::to_string),
                sha1,
                sha256,
                md5,
            },
            Role::Related,
        );
    }
    if let Some(command_line) = text(row, "ProcessCommandLine") {
        let [sha1, sha256, _] = hashes;
        add(
            EntityData::Process {
                device: device.clone(),
                pid: row.get("ProcessId").and_then(Value::as_i64),
                image: text(row, "FolderPath").map(str::to_string),
                file_name: text(row, "FileName").map(str::to_string),
                command_line: Some(command_line.to_string()),
                sha1,
                sha256,
                creation_time: time(row, "ProcessCreationTime"),
            },
            Role::Related,
        );
    }
    if let Some(ip) = text(row, "RemoteIP") {
        add(
            EntityData::Ip {
                address: ip.to_string(),
            },
            Role::Related,
        );
    }
    if let Some(url) = text(row, "RemoteUrl") {
        add(
            EntityData::Url {
                url: url.to_string(),
            },
            Role::Related,
        );
    }
    let mut draft = AlertDraft {
        title: rule.title.clone(),
        description: template.description.clone(),
        severity: match rule.severity {
            rampart_state::Severity::Informational => Severity::Informational,
            rampart_state::Severity::Low => Severity::Low,
            rampart_state::Severity::Medium => Severity::Medium,
            rampart_state::Severity::High => Severity::High,
        },
        category: template.tactics.first().map_or_else(
            || "SuspiciousActivity".to_string(),
            |t| t.split_whitespace().collect(),
        ),
        tactics: template.tactics.clone(),
        techniques: template.techniques.clone(),
        detection_source: DetectionSource::CustomDetection,
        rule_id: rule.id.clone(),
        rule_path: format!("custom/{}", rule.id),
        device_name: device,
        device_id: text(row, "DeviceId").map(str::to_string),
        first_event_time: at,
        last_event_time: at,
        entities,
        event: EventRef {
            table: None,
            timestamp: at,
            channel: String::new(),
            event_id: 0,
            record_id: 0,
            source: format!("custom detection: {}", rule.title),
        },
        // The row itself, bounded: it is what the analyst's query chose to show.
        matched: row
            .iter()
            .take(64)
            .map(|(k, v)| MatchedField {
                field: k.clone(),
                value: v.clone(),
            })
            .collect(),
        dedup_key: String::new(),
    };
    draft.rekey();
    draft
}
