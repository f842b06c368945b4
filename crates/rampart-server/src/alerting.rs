//! From detections to stored alerts and incidents. One batch at a time (a lock), so that the
//! correlator sees alerts in a deterministic order: drafts are sorted by event time before
//! suppression and correlation. Everything is written to the state database before the
//! ingest request is acknowledged, and the `AlertInfo` / `AlertEvidence` rows go to the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use rampart_alerts::{
    Alert, AlertDraft, Correlation, Correlator, CorrelatorConfig, DetectionSource, EventRef,
    Incident, MatchedField, alert_rows,
};
use rampart_schema::{Row, Table};
use rampart_sigma::Detection;
use rampart_state::{
    AlertFilter, DeviceSighting, IncidentUpdate, NewAlert, NewIncident, PageRequest, Repeats,
    RuleKind, RuleRef, Scope,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::{App, TenantRules};
use crate::config::Config;
use crate::pipeline::Ingested;
use crate::problem::Problem;

/// The correlator and the incidents it is building, in memory; the database has the rest.
pub struct Alerting {
    correlator: Correlator,
    /// Open incidents of the window, to keep their titles and severities current.
    incidents: HashMap<String, Incident>,
    dedup_window: TimeDelta,
}

impl Alerting {
    pub fn new(config: &Config) -> Alerting {
        let window = TimeDelta::seconds(config.detection.incident_window_secs as i64);
        let mut own_hosts = config.server_names.clone();
        own_hosts.push(config.listen_host().to_string());
        Alerting {
            correlator: Correlator::new(CorrelatorConfig {
                window,
                own_hosts,
                ..CorrelatorConfig::default()
            }),
            incidents: HashMap::new(),
            dedup_window: TimeDelta::seconds(config.detection.dedup_window_secs as i64),
        }
    }
}

/// What a batch raised.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    /// New alerts.
    pub raised: u64,
    /// Detections folded into an open alert.
    pub deduplicated: u64,
    pub incidents_created: u64,
    /// Alerts the database refused (logged with the reason).
    pub refused: u64,
    /// Detections not raised: their evidence is covered by an `allow` indicator.
    pub allowed: u64,
    /// Indicator matches on devices outside the indicator's device groups.
    pub out_of_scope: u64,
    /// Incidents the batch's alerts went to.
    pub incidents: Vec<String>,
}

/// Turns a batch's hits into alerts and incidents, and records the devices it saw.
pub async fn raise(
    app: &App,
    tenant: &str,
    source: &str,
    rules: &TenantRules,
    ingested: &Ingested,
) -> Result<Outcome, Problem> {
    let sightings: Vec<DeviceSighting> = ingested
        .computers
        .iter()
        .filter(|(computer, _)| !computer.is_empty())
        .map(|(computer, seen)| DeviceSighting {
            hostname: computer.clone(),
            platform: "Windows".into(),
            os_version: String::new(),
            seen_at: *seen,
        })
        .collect();
    let devices: BTreeMap<String, String> = app
        .db
        .record_device_sightings(tenant, &sightings)
        .await?
        .into_iter()
        .map(|d| (d.hostname, d.id))
        .collect();

    let sigma = ingested
        .hits
        .iter()
        .map(|hit| sigma_candidate(rules, &hit.detection, Some(hit.row.as_ref())));
    let indicators = ingested.indicator_drafts.iter().map(|draft| Candidate {
        draft: draft.clone(),
        rule_id: None,
        kind: None,
    });
    let candidates = sigma
        .chain(indicators)
        .map(|mut candidate| {
            // Alerts cite the upload by the name it was given, not the spool path.
            candidate.draft.event.source = source.to_string();
            candidate
        })
        .collect();
    place_all(app, tenant, candidates, &devices).await
}

/// The candidate of a Sigma detection on `row` (a correlation over records that left no row
/// has none), with the rule-table id of its rule.
pub fn sigma_candidate(rules: &TenantRules, detection: &Detection, row: Option<&Row>) -> Candidate {
    let draft = AlertDraft::from_detection(detection, row);
    let rule_id = rules
        .id_of(std::path::Path::new(&draft.rule_path))
        .map(str::to_string);
    Candidate {
        draft,
        rule_id,
        kind: Some(RuleKind::Sigma),
    }
}

/// A draft and the rule-table id and kind of the rule that raised it (no rule for indicator
/// matches).
pub struct Candidate {
    pub draft: AlertDraft,
    pub rule_id: Option<String>,
    pub kind: Option<RuleKind>,
}

/// The device id of the draft's device, when `devices` (host names to ids) knows it.
fn device_of<'a>(draft: &AlertDraft, devices: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let name = draft.device_name.as_ref()?;
    devices.get(&name.to_lowercase()).map(String::as_str)
}

/// The candidates the tenant's indicators let stand: an indicator's alert only on devices of
/// its groups, and no alert whose evidence an `allow` indicator covers. Devices' groups are
/// looked up only when some indicator is scoped.
async fn screen(
    app: &App,
    tenant: &str,
    candidates: Vec<Candidate>,
    devices: &BTreeMap<String, String>,
    outcome: &mut Outcome,
) -> Result<Vec<Candidate>, Problem> {
    let indicators = app.indicators_of(tenant).await?;
    let mut groups: HashMap<String, Option<String>> = HashMap::new();
    let mut kept = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let group = match device_of(&candidate.draft, devices) {
            Some(id) if indicators.needs_groups() => {
                if !groups.contains_key(id) {
                    let group = match app.db.get_device(tenant, &Scope::all(), id).await {
                        Ok(device) => device.group_id,
                        // Deleted meanwhile: ungrouped.
                        Err(rampart_state::Error::NotFound(_)) => None,
                        Err(e) => return Err(e.into()),
                    };
                    groups.insert(id.to_string(), group);
                }
                groups.get(id).cloned().flatten()
            }
            _ => None,
        };
        if !indicators.applies(&candidate.draft, group.as_deref()) {
            outcome.out_of_scope += 1;
        } else if let Some(allow) = indicators.allowing(&candidate.draft, group.as_deref()) {
            tracing::debug!(rule = %candidate.draft.rule_path, indicator = %allow.id, "alert allowed by an indicator");
            outcome.allowed += 1;
        } else {
            kept.push(candidate);
        }
    }
    Ok(kept)
}

/// Folds a detection into the repeats of its open alert `id` met in this batch.
fn fold(repeats: &mut BTreeMap<String, Repeats>, id: &str, draft: &AlertDraft) {
    let r = repeats.entry(id.to_string()).or_insert_with(|| Repeats {
        alert: id.to_string(),
        count: 0,
        earliest: draft.first_event_time,
        latest: draft.last_event_time,
    });
    r.count = r.count.saturating_add(1);
    r.earliest = r.earliest.min(draft.first_event_time);
    r.latest = r.latest.max(draft.last_event_time);
}

/// Suppresses, stores and correlates drafts, in event-time order; `devices` maps host names to
/// device ids.
pub async fn place_all(
    app: &App,
    tenant: &str,
    candidates: Vec<Candidate>,
    devices: &BTreeMap<String, String>,
) -> Result<Outcome, Problem> {
    let mut outcome = Outcome::default();
    let mut candidates = screen(app, tenant, candidates, devices, &mut outcome).await?;
    candidates.sort_by(|a, b| a.draft.order_key().cmp(&b.draft.order_key()));
    let mut rows = Vec::new();
    let mut state = app.alerting.lock().await;
    // The open alert of each dedup key of this batch (id, latest event folded in), looked up
    // at once, and the repeats folded into each alert: written once per alert, not once per
    // detection. Candidates come in time order, so the first one's window reaches furthest back.
    let mut open: HashMap<String, (String, DateTime<Utc>)> = HashMap::new();
    if let Some(first) = candidates.first() {
        let since = first.draft.first_event_time - state.dedup_window;
        let keys: Vec<String> = candidates
            .iter()
            .map(|c| c.draft.dedup_key.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for (key, alert) in app
            .db
            .find_open_alerts_by_dedup_keys(tenant, &keys, since)
            .await?
        {
            open.insert(key, (alert.id, alert.last_event_time));
        }
    }
    let mut repeats: BTreeMap<String, Repeats> = BTreeMap::new();
    for Candidate {
        draft,
        rule_id,
        kind,
    } in candidates
    {
        let since = draft.first_event_time - state.dedup_window;
        // The newest open alert of the key, stored or of this batch: past the window, there is
        // no later one either.
        let known = open
            .get(&draft.dedup_key)
            .and_then(|(id, latest)| (*latest >= since).then(|| id.clone()));
        if let Some(id) = known {
            fold(&mut repeats, &id, &draft);
            if let Some((_, latest)) = open.get_mut(&draft.dedup_key) {
                *latest = (*latest).max(draft.last_event_time);
            }
            outcome.deduplicated += 1;
            continue;
        }
        let device_id = device_of(&draft, devices).map(str::to_string);
        let new = new_alert(&draft, rule_id.as_deref(), kind, device_id);
        let stored = match app.db.create_alert(tenant, &new).await {
            Ok(stored) => stored,
            // One alert the database refuses (a rule's text over a limit) must not fail the
            // upload: its events are stored already. It is logged and counted.
            Err(rampart_state::Error::Invalid { field, reason }) => {
                tracing::warn!(rule = %draft.rule_path, field, %reason, "alert refused by the database");
                outcome.refused += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        outcome.raised += 1;
        let mut alert = Alert::new(stored.id.clone(), draft);
        let incident_id = rampart_state::new_id("inc")?;
        let correlation = state.correlator.assign(&alert, || incident_id.clone());
        place(app, tenant, &mut state, &alert, &correlation, &mut outcome).await?;
        alert.incident_id = Some(correlation.incident().to_string());
        rows.extend(alert_rows(&alert));
        open.insert(
            alert.draft.dedup_key.clone(),
            (stored.id, alert.draft.last_event_time),
        );
    }
    // Written before the lock goes, so the next batch finds every alert's time range complete.
    let repeats: Vec<Repeats> = repeats.into_values().collect();
    if !repeats.is_empty() {
        app.db.record_duplicates(tenant, &repeats).await?;
    }
    // Incidents out of the correlator's window can gain no alert: their titles are final.
    let Alerting {
        correlator,
        incidents,
        ..
    } = &mut *state;
    incidents.retain(|id, _| correlator.holds_incident(id));
    drop(state);
    append_rows(app, tenant, rows).await?;

    let m = &app.metrics;
    use std::sync::atomic::Ordering::Relaxed;
    m.alerts_raised.fetch_add(outcome.raised, Relaxed);
    m.alerts_deduplicated
        .fetch_add(outcome.deduplicated, Relaxed);
    m.alerts_allowed.fetch_add(outcome.allowed, Relaxed);
    m.rule_errors.fetch_add(outcome.refused, Relaxed);
    m.incidents_created
        .fetch_add(outcome.incidents_created, Relaxed);
    outcome.incidents.sort();
    outcome.incidents.dedup();
    Ok(outcome)
}

/// Carries out the correlator's decision in the database.
async fn place(
    app: &App,
    tenant: &str,
    state: &mut Alerting,
    alert: &Alert,
    correlation: &Correlation,
    outcome: &mut Outcome,
) -> Result<(), Problem> {
    let reason = json!({
        "explanation": correlation.explain(),
        "decision": correlation,
    });
    match correlation {
        Correlation::New { incident, .. } => {
            let found = Incident::found(incident.clone(), alert);
            app.db
                .create_incident(
                    tenant,
                    &NewIncident {
                        id: Some(incident.clone()),
                        title: found.title.clone(),
                        tags: Vec::new(),
                    },
                )
                .await?;
            state.incidents.insert(incident.clone(), found);
            outcome.incidents_created += 1;
            app.db
                .attach_alert(tenant, incident, &alert.id, &reason)
                .await?;
        }
        Correlation::Join {
            incident, merge, ..
        } => {
            app.db
                .attach_alert(tenant, incident, &alert.id, &reason)
                .await?;
            let merged: Vec<String> = merge.iter().map(|m| m.incident.clone()).collect();
            if !merged.is_empty() {
                app.db.merge_incidents(tenant, incident, &merged).await?;
            }
            let absorbed: Vec<Incident> = merged
                .iter()
                .filter_map(|id| state.incidents.remove(id))
                .collect();
            if let Some(current) = state.incidents.get_mut(incident) {
                let before = current.title.clone();
                current.add_alert(alert);
                for other in &absorbed {
                    current.absorb(other);
                }
                if current.title != before {
                    let update = IncidentUpdate {
                        title: Some(current.title.clone()),
                        ..IncidentUpdate::default()
                    };
                    app.db
                        .update_incident(tenant, &Scope::all(), incident, &update)
                        .await?;
                }
            }
        }
    }
    outcome.incidents.push(correlation.incident().to_string());
    Ok(())
}

/// The stored form of a draft. What the database has no column for (category, source, rule
/// file, the event reference, matched fields) rides in `trigger_event` and `matched_fields`, so
/// that [`draft_of`] can rebuild the draft after a restart.
fn new_alert(
    d: &AlertDraft,
    rule_id: Option<&str>,
    kind: Option<RuleKind>,
    device_id: Option<String>,
) -> NewAlert {
    NewAlert {
        rule: kind.map(|kind| RuleRef {
            id: rule_id.map(str::to_string),
            title: d.title.clone(),
            kind,
        }),
        title: printable(&d.title),
        description: printable(&d.description),
        severity: severity(d.severity),
        tactics: d.tactics.clone(),
        techniques: d.techniques.clone(),
        device_id,
        device_name: d.device_name.clone(),
        first_event_time: d.first_event_time,
        last_event_time: d.last_event_time,
        dedup_key: Some(d.dedup_key.clone()),
        evidence: d
            .entities
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect(),
        trigger_event: Some(json!({
            "event": d.event,
            "category": d.category,
            "detection_source": d.detection_source,
            "rule_path": d.rule_path,
            "sigma_id": d.rule_id,
            "device_id": d.device_id,
        })),
        matched_fields: serde_json::to_value(&d.matched).unwrap_or(Value::Null),
    }
}

/// Rule texts may hold carriage returns and other control characters; alerts keep lines and tabs.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

fn severity(s: rampart_alerts::Severity) -> rampart_state::Severity {
    use rampart_alerts::Severity as A;
    use rampart_state::Severity as S;
    match s {
        A::Informational => S::Informational,
        A::Low => S::Low,
        A::Medium => S::Medium,
        A::High => S::High,
    }
}

fn severity_back(s: rampart_state::Severity) -> rampart_alerts::Severity {
    use rampart_alerts::Severity as A;
    use rampart_state::Severity as S;
    match s {
        S::Informational => A::Informational,
        S::Low => A::Low,
        S::Medium => A::Medium,
        S::High => A::High,
    }
}

/// The draft an alert was stored from (see [`new_alert`]); `None` for alerts stored otherwise.
fn draft_of(a: &rampart_state::Alert) -> Option<AlertDraft> {
    let extra = a.trigger_event.as_ref()?;
    let event: EventRef = serde_json::from_value(extra.get("event")?.clone()).ok()?;
    Some(AlertDraft {
        title: a.title.clone(),
        description: a.description.clone(),
        severity: severity_back(a.severity),
        category: extra.get("category")?.as_str()?.to_string(),
        tactics: a.tactics.clone(),
        techniques: a.techniques.clone(),
        detection_source: serde_json::from_value(extra.get("detection_source")?.clone())
            .unwrap_or(DetectionSource::Sigma),
        rule_id: extra.get("sigma_id")?.as_str()?.to_string(),
        rule_path: extra.get("rule_path")?.as_str()?.to_string(),
        device_name: a.device_name.clone(),
        device_id: extra
            .get("device_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        first_event_time: a.first_event_time,
        last_event_time: a.last_event_time,
        entities: a
            .evidence
            .iter()
            .filter_map(|e| serde_json::from_value(e.clone()).ok())
            .collect(),
        event,
        matched: serde_json::from_value::<Vec<MatchedField>>(a.matched_fields.clone())
            .unwrap_or_default(),
        dedup_key: a.dedup_key.clone().unwrap_or_default(),
    })
}

/// Rebuilds the correlator from the alerts of the last window, at start-up. Alerts stored but
/// not yet placed (the process stopped in between) are placed now.
pub async fn restore(app: &App) -> Result<(), anyhow::Error> {
    let window = app.config.detection.incident_window_secs as i64;
    let since: DateTime<Utc> = Utc::now() - TimeDelta::seconds(window);
    for tenant in app.db.list_tenants().await? {
        let filter = AlertFilter {
            from: Some(since),
            ..AlertFilter::default()
        };
        let mut alerts = Vec::new();
        let mut page = PageRequest::first(rampart_state::MAX_PAGE_LIMIT);
        loop {
            let got = app.db.list_alerts(&tenant.id, &filter, &page).await?;
            alerts.extend(got.items);
            match got.next {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        alerts.sort_by_key(|a| (a.first_event_time, a.id.clone()));
        let mut state = app.alerting.lock().await;
        let mut unplaced = 0;
        for stored in &alerts {
            let Some(draft) = draft_of(stored) else {
                continue;
            };
            let mut alert = Alert::new(stored.id.clone(), draft);
            alert.event_count = stored.event_count.max(1) as u64;
            match &stored.incident_id {
                Some(id) => {
                    let incident = match state.incidents.get_mut(id) {
                        Some(i) => {
                            i.add_alert(&alert);
                            i.clone()
                        }
                        None => {
                            let i = Incident::found(id.clone(), &alert);
                            state.incidents.insert(id.clone(), i.clone());
                            i
                        }
                    };
                    state.correlator.remember(&alert, &incident);
                }
                None => {
                    unplaced += 1;
                    let incident_id = rampart_state::new_id("inc")?;
                    let correlation = state.correlator.assign(&alert, || incident_id.clone());
                    let mut outcome = Outcome::default();
                    place(
                        app,
                        &tenant.id,
                        &mut state,
                        &alert,
                        &correlation,
                        &mut outcome,
                    )
                    .await
                    .map_err(|p| anyhow::anyhow!("{}", p.detail.unwrap_or_default()))?;
                }
            }
        }
        tracing::info!(tenant = %tenant.id, alerts = alerts.len(), unplaced, "correlation state restored");
    }
    Ok(())
}

/// Appends the alerts' hunting rows to the store (durably, before the batch is acknowledged).
async fn append_rows(
    app: &App,
    tenant: &str,
    rows: Vec<rampart_schema::Row>,
) -> Result<(), Problem> {
    if rows.is_empty() {
        return Ok(());
    }
    let store = app.store.clone();
    let tenant = tenant.to_string();
    tokio::task::spawn_blocking(move || {
        let mut builders: BTreeMap<Table, rampart_schema::BatchBuilder> = BTreeMap::new();
        for row in &rows {
            let table = row.table();
            let builder = builders
                .entry(table)
                .or_insert_with(|| table.batch_builder());
            // The builder is the row's own table's: this cannot fail.
            let _ = builder.append(row);
        }
        for (table, mut builder) in builders {
            store.append(&tenant, table, builder.finish())?;
        }
        Ok::<_, rampart_store::StoreError>(())
    })
    .await
    .map_err(Problem::internal)?
    .map_err(Problem::internal)
}
