//! Alerts: what a detection becomes, with its evidence, ATT&CK mapping and dedup key.

use chrono::{DateTime, Utc};
use rampart_schema::Row;
use rampart_schema::attack::{tactic_of_tag, technique_of_tag};
use rampart_sigma::{Detection, Level};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::entity::{Entity, EntityData, Role};
use crate::extract::entities_of;

/// Alert severity, Defender's four levels, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
}

impl Severity {
    /// As `AlertInfo.Severity` writes it (`High`).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Informational => "Informational",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
        }
    }
}

/// Sigma's `critical` is Defender's `High`: Defender has no higher level.
impl From<Level> for Severity {
    fn from(level: Level) -> Severity {
        match level {
            Level::Informational => Severity::Informational,
            Level::Low => Severity::Low,
            Level::Medium => Severity::Medium,
            Level::High | Level::Critical => Severity::High,
        }
    }
}

/// What raised the alert (`AlertInfo.DetectionSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionSource {
    /// A Sigma rule.
    Sigma,
    /// A scheduled KQL query.
    CustomDetection,
    /// An indicator of compromise.
    Indicator,
}

impl DetectionSource {
    pub fn name(self) -> &'static str {
        match self {
            DetectionSource::Sigma => "Sigma",
            DetectionSource::CustomDetection => "Custom detection",
            DetectionSource::Indicator => "Indicator",
        }
    }
}

/// The record that triggered the alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// The hunting table its row went to; `None` for a Sigma correlation (many records).
    pub table: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub channel: String,
    pub event_id: u32,
    pub record_id: u64,
    /// The file the record came from (its name, not its full path).
    pub source: String,
}

/// One field the rule matched and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedField {
    pub field: String,
    pub value: Value,
}

/// An alert before suppression decides whether it is new: everything but its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertDraft {
    /// The rule's title.
    pub title: String,
    pub description: String,
    pub severity: Severity,
    /// Defender's category: the rule's first tactic (`DefenseEvasion`), else
    /// `SuspiciousActivity`.
    pub category: String,
    /// ATT&CK tactic names in the rule's tag order (`Defense Evasion`).
    pub tactics: Vec<String>,
    /// ATT&CK technique ids (`T1059.001`).
    pub techniques: Vec<String>,
    pub detection_source: DetectionSource,
    /// The rule's id (its title when it has none) and file.
    pub rule_id: String,
    pub rule_path: String,
    /// The device, lowercased, as `DeviceName` writes it.
    pub device_name: Option<String>,
    pub device_id: Option<String>,
    pub first_event_time: DateTime<Utc>,
    pub last_event_time: DateTime<Utc>,
    pub entities: Vec<Entity>,
    pub event: EventRef,
    pub matched: Vec<MatchedField>,
    /// Rule + device + what identifies this occurrence, hashed: 16 hex digits.
    pub dedup_key: String,
}

impl AlertDraft {
    /// The draft of a Sigma detection; `row` is the record's mapped row (`None` for a
    /// correlation rule, which matches many records).
    pub fn from_detection(detection: &Detection, row: Option<&Row>) -> AlertDraft {
        let rule = &detection.rule;
        let entities = entities_of(row, &detection.computer, &detection.matched);
        let (device_name, device_id) = entities
            .iter()
            .find_map(|e| match &e.data {
                EntityData::Device { name, id } if e.role == Role::Impacted => {
                    Some((Some(name.clone()), id.clone()))
                }
                _ => None,
            })
            .unwrap_or_default();
        let mut tactics: Vec<String> = Vec::new();
        let mut techniques: Vec<String> = Vec::new();
        for tag in &rule.tags {
            let tag = tag.to_ascii_lowercase();
            if let Some(t) = tactic_of_tag(&tag)
                && !tactics.iter().any(|n| n == t.name)
            {
                tactics.push(t.name.to_string());
            }
            if let Some(t) = technique_of_tag(&tag)
                && !techniques.contains(&t)
            {
                techniques.push(t);
            }
        }
        let category = tactics
            .first()
            .map_or_else(|| "SuspiciousActivity".to_string(), |t| category_of(t));
        let rule_id = rule.id.clone().unwrap_or_else(|| rule.title.clone());
        let source = detection.source.file_name().map_or_else(
            || detection.source.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let matched: Vec<MatchedField> = detection
            .matched
            .iter()
            .map(|(field, value)| MatchedField {
                field: field.clone(),
                value: value.clone(),
            })
            .collect();
        let mut draft = AlertDraft {
            description: describe(detection, device_name.as_deref(), &matched),
            title: rule.title.clone(),
            severity: rule.level.into(),
            category,
            tactics,
            techniques,
            detection_source: DetectionSource::Sigma,
            rule_path: rule.path.display().to_string(),
            rule_id,
            device_name,
            device_id,
            first_event_time: detection.timestamp,
            last_event_time: detection.timestamp,
            entities,
            event: EventRef {
                table: row.map(|r| r.table().name().to_string()),
                timestamp: detection.timestamp,
                channel: detection.channel.clone(),
                event_id: detection.event_id,
                record_id: detection.record_id,
                source,
            },
            matched,
            dedup_key: String::new(),
        };
        draft.rekey();
        draft
    }

    /// Recomputes `dedup_key` from the rule, device and entities, for drafts built or amended
    /// by hand (custom detections, indicators, extra evidence).
    pub fn rekey(&mut self) {
        self.dedup_key = dedup_key(&self.rule_id, self.device_name.as_deref(), &self.entities);
    }

    /// The order to feed drafts in when they arrive in a batch: event time, then source file,
    /// record id, rule and dedup key. Feeding a batch sorted by this key makes the alerts and
    /// incidents independent of the order the batch was produced in (parallel readers), since
    /// ids handed out in feeding order then follow it too.
    pub fn order_key(&self) -> (DateTime<Utc>, &str, u64, &str, &str) {
        (
            self.first_event_time,
            &self.event.source,
            self.event.record_id,
            &self.rule_id,
            &self.dedup_key,
        )
    }
}

/// An alert as stored: a draft with its id, its incident, and how often it recurred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    /// Set once the correlator placed the alert.
    pub incident_id: Option<String>,
    /// Occurrences folded into this alert by suppression (1 for a new alert).
    pub event_count: u64,
    #[serde(flatten)]
    pub draft: AlertDraft,
}

impl Alert {
    pub fn new(id: impl Into<String>, draft: AlertDraft) -> Alert {
        Alert {
            id: id.into(),
            incident_id: None,
            event_count: 1,
            draft,
        }
    }

    /// Folds a repeat (a draft the deduplicator answered `Update` for) into the alert.
    pub fn record_repeat(&mut self, repeat: &AlertDraft) {
        self.event_count += 1;
        self.draft.first_event_time = self.draft.first_event_time.min(repeat.first_event_time);
        self.draft.last_event_time = self.draft.last_event_time.max(repeat.last_event_time);
    }
}

/// `Defense Evasion` → `DefenseEvasion`, `Command and Control` → `CommandAndControl`.
fn category_of(tactic: &str) -> String {
    tactic
        .split_whitespace()
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// Rule, device and the sorted occurrence keys of the entities, hashed (FNV-1a, 64 bits):
/// stable across runs, platforms and versions.
fn dedup_key(rule_id: &str, device: Option<&str>, entities: &[Entity]) -> String {
    let mut parts: Vec<String> = entities.iter().filter_map(Entity::occurrence_key).collect();
    parts.sort();
    parts.dedup();
    let mut text = format!("{rule_id}\n{}", device.unwrap_or_default());
    for p in parts {
        text.push('\n');
        text.push_str(&p);
    }
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Longest matched value shown in a description.
const DESCRIPTION_VALUE_CHARS: usize = 200;

fn describe(detection: &Detection, device: Option<&str>, matched: &[MatchedField]) -> String {
    // Event-log records have an event id; telemetry rows (event id 0) are named by their table.
    let what = match (detection.channel.as_str(), detection.event_id) {
        ("", id) => format!("an event {id}"),
        (table, 0) => format!("a {table} row"),
        (channel, id) => format!("{channel} event {id}"),
    };
    let mut text = format!(
        "Sigma rule \"{}\" ({}) matched {what} on {}.",
        detection.rule.title,
        detection.rule.level,
        device.unwrap_or("an unknown device"),
    );
    if !matched.is_empty() {
        text.push_str(" Matched: ");
        let fields: Vec<String> = matched
            .iter()
            .map(|m| {
                let value = match &m.value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let short: String = value.chars().take(DESCRIPTION_VALUE_CHARS).collect();
                let more = if short.len() < value.len() { "…" } else { "" };
                format!("{}={short}{more}", m.field)
            })
            .collect();
        text.push_str(&fields.join("; "));
        text.push('.');
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rampart_schema::DeviceProcessEvents;
    use rampart_sigma::{RuleInfo, RuleKind};
    use serde_json::json;

    use super::*;

    pub(crate) fn detection(tags: &[&str], level: Level) -> Detection {
        Detection {
            rule: Arc::new(RuleInfo {
                id: Some("5f8e2a1c-0000-4000-8000-000000000001".into()),
                title: "Whoami Execution".into(),
                level,
                tags: tags.iter().map(|t| t.to_string()).collect(),
                path: PathBuf::from("rules/windows/proc_creation_win_whoami.yml"),
                kind: RuleKind::Detection,
            }),
            timestamp: DateTime::from_timestamp(1_556_380_673, 0).unwrap_or_default(),
            computer: "WS01.corp.local".into(),
            channel: "Microsoft-Windows-Sysmon/Operational".into(),
            event_id: 1,
            record_id: 42,
            source: Arc::from(Path::new("/data/samples/whoami.evtx")),
            matched: vec![("Image".into(), json!(r"C:\Windows\System32\whoami.exe"))],
        }
    }

    pub(crate) fn process_row(pid: i64, command_line: &str) -> Row {
        DeviceProcessEvents {
            device_name: Some("ws01.corp.local".into()),
            file_name: Some("whoami.exe".into()),
            folder_path: Some(r"C:\Windows\System32\whoami.exe".into()),
            process_id: Some(pid),
            process_command_line: Some(command_line.into()),
            account_domain: Some("CORP".into()),
            account_name: Some("bob".into()),
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn tactics_techniques_severity_and_category_from_the_rule() {
        let d = detection(
            &[
                "attack.discovery",
                "attack.t1033",
                "attack.Defense_Evasion",
                "attack.t1059.001",
                "attack.discovery",
                "car.2016-03-001",
            ],
            Level::Critical,
        );
        let draft = AlertDraft::from_detection(&d, Some(&process_row(1, "whoami /all")));
        assert_eq!(draft.tactics, ["Discovery", "Defense Evasion"]);
        assert_eq!(draft.techniques, ["T1033", "T1059.001"]);
        assert_eq!(draft.severity, Severity::High);
        assert_eq!(draft.category, "Discovery");
        assert_eq!(draft.title, "Whoami Execution");
        assert_eq!(draft.device_name.as_deref(), Some("ws01.corp.local"));
        assert_eq!(draft.event.table.as_deref(), Some("DeviceProcessEvents"));
        assert_eq!(draft.event.source, "whoami.evtx");
        assert_eq!(draft.dedup_key.len(), 16);
        assert!(
            draft
                .description
                .contains(r"Image=C:\Windows\System32\whoami.exe"),
            "{}",
            draft.description
        );

        let none = AlertDraft::from_detection(&detection(&[], Level::Low), None);
        assert_eq!(none.category, "SuspiciousActivity");
        assert_eq!(none.severity, Severity::Low);
        assert_eq!(category_of("Command and Control"), "CommandAndControl");
    }

    #[test]
    fn dedup_key_ignores_pids_but_not_command_lines() {
        let d = detection(&[], Level::Medium);
        let key = |pid, cmd| AlertDraft::from_detection(&d, Some(&process_row(pid, cmd))).dedup_key;
        assert_eq!(key(1, "whoami /all"), key(2, "whoami /all"));
        assert_ne!(key(1, "whoami /all"), key(1, "whoami /priv"));
    }

    #[test]
    fn alerts_round_trip_through_json_and_fold_repeats() {
        let d = detection(&["attack.execution"], Level::High);
        let draft = AlertDraft::from_detection(&d, Some(&process_row(1, "whoami")));
        let mut alert = Alert::new("a1", draft.clone());
        let mut later = draft;
        later.first_event_time += chrono::TimeDelta::minutes(5);
        later.last_event_time = later.first_event_time;
        alert.record_repeat(&later);
        assert_eq!(alert.event_count, 2);
        assert_eq!(alert.draft.last_event_time, later.last_event_time);
        let json = serde_json::to_string(&alert).unwrap();
        assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), alert);
    }
}
