//! Indicator matching on the stream: every batch of rows a tenant ingests is checked against
//! the tenant's active `alert` indicators (file hashes, IP addresses, domains, URLs) in the
//! columns where Defender's schema carries such values. A match becomes an alert like any other
//! (suppressed and correlated), with the indicator, the column and the value as its evidence.
//! `block` indicators alert the same way and are also handed to agents in their policy
//! ([`Indicators::blocklist`]), which enforce them. An indicator scoped to device groups
//! applies only to devices of those groups ([`Indicators::applies`]).
//!
//! `allow` indicators mark known-good files, addresses, domains and URLs, as Defender's do: an
//! alert whose evidence (other than the parent of the process it is about) is allowed is not
//! raised ([`Indicators::allowing`]), whatever raised it — an alert indicator on a parent
//! domain, a Sigma rule on the allowed file's process. The parent is left out so that an allowed
//! tool does not hide what the processes it starts do.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::record_batch::RecordBatch;
use rampart_alerts::{
    AlertDraft, DetectionSource, Entity, EntityData, EventRef, MatchedField, Role, Severity,
};
use rampart_kql::results::cell_text;
use rampart_schema::Table;
use rampart_state::{Indicator, IndicatorAction, IndicatorKind};

/// The columns each kind of indicator is looked for in.
const COLUMNS: &[(IndicatorKind, &[&str])] = &[
    (IndicatorKind::Sha1, &["SHA1", "InitiatingProcessSHA1"]),
    (
        IndicatorKind::Sha256,
        &["SHA256", "InitiatingProcessSHA256"],
    ),
    (IndicatorKind::Md5, &["MD5", "InitiatingProcessMD5"]),
    (IndicatorKind::Ip, &["RemoteIP", "IPAddress"]),
    (IndicatorKind::Url, &["RemoteUrl", "Url"]),
    // A domain indicator matches the host of a URL and its subdomains.
    (IndicatorKind::Domain, &["RemoteUrl", "Url"]),
];

/// A tenant's active indicators, by kind and canonical value (one per value: the database
/// refuses a second).
#[derive(Default)]
pub struct Indicators {
    by_value: HashMap<(IndicatorKind, String), Indicator>,
    /// The key of each indicator in `by_value`, by id.
    by_id: HashMap<String, (IndicatorKind, String)>,
    /// Whether any is an `alert` or `block` one (rows are scanned only then), any an `allow`
    /// one, any scoped to device groups (alerting looks up nothing when neither).
    any_matched: bool,
    any_allowed: bool,
    any_scoped: bool,
}

/// Most block indicators an agent's policy carries (the agent refuses more): a limit on what
/// each heartbeat answer costs; the newest are kept.
pub const MAX_BLOCKED: usize = 10_000;

/// One indicator found in one cell.
pub struct Hit<'a> {
    pub indicator: &'a Indicator,
    pub column: &'static str,
    pub value: String,
    pub row: usize,
}

impl Indicators {
    /// `list`: the tenant's active indicators. `alert` and `block` ones are looked for in rows
    /// (a blocked file or address is still worth an alert where it shows up); `allow` ones
    /// keep alerts from being raised.
    pub fn new(list: Vec<Indicator>) -> Indicators {
        let any_matched = list.iter().any(|i| i.action != IndicatorAction::Allow);
        let any_allowed = list.iter().any(|i| i.action == IndicatorAction::Allow);
        let any_scoped = list.iter().any(|i| !i.scope_groups.is_all());
        let by_id = list
            .iter()
            .map(|i| (i.id.clone(), (i.kind, i.value.clone())))
            .collect();
        Indicators {
            by_value: list
                .into_iter()
                .map(|i| ((i.kind, i.value.clone()), i))
                .collect(),
            by_id,
            any_matched,
            any_allowed,
            any_scoped,
        }
    }

    /// Whether placing an alert needs its device's group: some indicator is scoped.
    pub fn needs_groups(&self) -> bool {
        self.any_scoped
    }

    /// Whether `draft` still stands for a device of `group` (None: ungrouped): an indicator's
    /// alert only within the indicator's scope; any other alert always.
    pub fn applies(&self, draft: &AlertDraft, group: Option<&str>) -> bool {
        if draft.detection_source != DetectionSource::Indicator {
            return true;
        }
        // An indicator deleted since the match: its alert is raised as matched.
        self.by_id
            .get(&draft.rule_id)
            .and_then(|key| self.by_value.get(key))
            .is_none_or(|i| i.scope_groups.allows(group))
    }

    /// The `allow` indicator, in scope for `group`, that covers some of `draft`'s evidence
    /// other than a parent process: the alert is not raised.
    pub fn allowing(&self, draft: &AlertDraft, group: Option<&str>) -> Option<&Indicator> {
        if !self.any_allowed {
            return None;
        }
        let allowed = |kind: IndicatorKind, text: &str| {
            candidates(kind, text).into_iter().find_map(|value| {
                self.by_value
                    .get(&(kind, value))
                    .filter(|i| i.action == IndicatorAction::Allow)
                    .filter(|i| i.scope_groups.allows(group))
            })
        };
        let hashes = |sha1: &Option<String>, sha256: &Option<String>, md5: &Option<String>| {
            [
                (IndicatorKind::Sha1, sha1),
                (IndicatorKind::Sha256, sha256),
                (IndicatorKind::Md5, md5),
            ]
            .into_iter()
            .find_map(|(kind, value)| value.as_deref().and_then(|v| allowed(kind, v)))
        };
        draft
            .entities
            .iter()
            .filter(|e| e.role != Role::Parent)
            .find_map(|e| match &e.data {
                EntityData::Process { sha1, sha256, .. } => hashes(sha1, sha256, &None),
                EntityData::File {
                    sha1, sha256, md5, ..
                } => hashes(sha1, sha256, md5),
                EntityData::Ip { address } => allowed(IndicatorKind::Ip, address),
                EntityData::Url { url } => {
                    allowed(IndicatorKind::Url, url).or_else(|| allowed(IndicatorKind::Domain, url))
                }
                EntityData::Domain { name } => allowed(IndicatorKind::Domain, name),
                _ => None,
            })
    }

    /// What an agent of device group `group` enforces: the block indicators of the kinds
    /// agents can block (file hashes, IP addresses, domains) scoped to that group or to all
    /// devices, at most [`MAX_BLOCKED`], newest first. `{"files": [{"id", "kind", "value"}],
    /// "addresses": [{"id", "value"}], "domains": [{"id", "value"}]}`.
    pub fn blocklist(&self, group: Option<&str>) -> serde_json::Value {
        let mut blocked: Vec<&Indicator> = self
            .by_value
            .values()
            .filter(|i| i.action == IndicatorAction::Block)
            .filter(|i| i.scope_groups.allows(group))
            .filter(|i| {
                matches!(
                    i.kind,
                    IndicatorKind::Sha1
                        | IndicatorKind::Sha256
                        | IndicatorKind::Md5
                        | IndicatorKind::Ip
                        | IndicatorKind::Domain
                )
            })
            .collect();
        blocked.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        blocked.truncate(MAX_BLOCKED);
        let of_kind = |kinds: &[IndicatorKind]| {
            blocked
                .iter()
                .filter(|i| kinds.contains(&i.kind))
                .map(|i| serde_json::json!({"id": i.id, "kind": i.kind.as_str(), "value": i.value}))
                .collect::<Vec<_>>()
        };
        serde_json::json!({
            "files": of_kind(&[IndicatorKind::Sha1, IndicatorKind::Sha256, IndicatorKind::Md5]),
            "addresses": of_kind(&[IndicatorKind::Ip]),
            "domains": of_kind(&[IndicatorKind::Domain]),
        })
    }

    /// Whether no row can match: there is no `alert` or `block` indicator.
    pub fn is_empty(&self) -> bool {
        !self.any_matched
    }

    /// Every `alert` and `block` indicator found in `batch` of `table`, whatever its scope
    /// (alerting knows the devices' groups: [`Indicators::applies`]).
    pub fn scan(&self, table: Table, batch: &RecordBatch) -> Vec<Hit<'_>> {
        let mut hits = Vec::new();
        if self.is_empty() {
            return hits;
        }
        for (kind, columns) in COLUMNS {
            if !self.by_value.keys().any(|(k, _)| k == kind) {
                continue;
            }
            for column in columns.iter().filter(|c| table.column(c).is_some()) {
                let Ok(index) = batch.schema().index_of(column) else {
                    continue;
                };
                let array = batch.column(index);
                for row in 0..batch.num_rows() {
                    if array.is_null(row) {
                        continue;
                    }
                    let text = cell_text(array, row);
                    for candidate in candidates(*kind, &text) {
                        if let Some(indicator) = self
                            .by_value
                            .get(&(*kind, candidate))
                            .filter(|i| i.action != IndicatorAction::Allow)
                        {
                            hits.push(Hit {
                                indicator,
                                column,
                                value: text.clone(),
                                row,
                            });
                        }
                    }
                }
            }
        }
        hits
    }
}

/// The canonical forms under which a cell's text can match an indicator of `kind`.
fn candidates(kind: IndicatorKind, text: &str) -> Vec<String> {
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    match kind {
        IndicatorKind::Domain => {
            // The URL's host, then each parent domain (a.b.evil.com → b.evil.com → evil.com).
            let host = host_of(text);
            let mut out = Vec::new();
            let mut rest = host.as_str();
            while rest.contains('.') {
                out.push(rest.to_string());
                rest = rest.split_once('.').map_or("", |(_, r)| r);
            }
            out
        }
        _ => kind.normalize(text).ok().into_iter().collect(),
    }
}

/// The host of a URL (or of a bare `host/path`), lowercased, without port.
fn host_of(text: &str) -> String {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next().unwrap_or_default();
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The alert an indicator hit raises; evidence: the device, the matched value as its entity,
/// and the process that produced the row when the row names it.
pub fn draft(table: Table, batch: &RecordBatch, hit: &Hit<'_>) -> AlertDraft {
    let cell = |name: &str| -> Option<String> {
        let index = batch.schema().index_of(name).ok()?;
        let array: &ArrayRef = batch.column(index);
        let text = cell_text(array, hit.row);
        (!text.is_empty()).then_some(text)
    };
    let at = cell("Timestamp")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map_or_else(Utc::now, |t| t.to_utc());
    let device = cell("DeviceName").map(|d| d.to_lowercase());
    let i = hit.indicator;
    let mut entities = Vec::new();
    if let Some(name) = &device {
        entities.push(Entity::new(
            EntityData::Device {
                name: name.clone(),
                id: cell("DeviceId"),
            },
            Role::Impacted,
        ));
    }
    let matched = match i.kind {
        IndicatorKind::Sha1 | IndicatorKind::Sha256 | IndicatorKind::Md5 | IndicatorKind::Cert => {
            let hash = Some(i.value.clone());
            EntityData::File {
                device: device.clone(),
                name: cell("FileName"),
                folder_path: cell("FolderPath"),
                sha1: hash.clone().filter(|_| i.kind == IndicatorKind::Sha1),
                sha256: hash.clone().filter(|_| i.kind == IndicatorKind::Sha256),
                md5: hash.filter(|_| i.kind == IndicatorKind::Md5),
            }
        }
        IndicatorKind::Ip => EntityData::Ip {
            address: i.value.clone(),
        },
        IndicatorKind::Url => EntityData::Url {
            url: hit.value.clone(),
        },
        IndicatorKind::Domain => EntityData::Domain {
            name: host_of(&hit.value),
        },
    };
    entities.push(Entity::new(matched, Role::Related));
    if let Some(command_line) = cell("InitiatingProcessCommandLine") {
        entities.push(Entity::new(
            EntityData::Process {
                device: device.clone(),
                pid: cell("InitiatingProcessId").and_then(|p| p.parse().ok()),
                image: cell("InitiatingProcessFolderPath"),
                file_name: cell("InitiatingProcessFileName"),
                command_line: Some(command_line),
                sha1: cell("InitiatingProcessSHA1"),
                sha256: cell("InitiatingProcessSHA256"),
                creation_time: cell("InitiatingProcessCreationTime")
                    .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| t.to_utc()),
            },
            Role::Related,
        ));
    }
    let mut draft = AlertDraft {
        title: format!("Indicator matched: {}", i.title),
        description: i.description.clone(),
        severity: match i.severity {
            rampart_state::Severity::Informational => Severity::Informational,
            rampart_state::Severity::Low => Severity::Low,
            rampart_state::Severity::Medium => Severity::Medium,
            rampart_state::Severity::High => Severity::High,
        },
        category: "SuspiciousActivity".into(),
        tactics: Vec::new(),
        techniques: Vec::new(),
        detection_source: DetectionSource::Indicator,
        rule_id: i.id.clone(),
        rule_path: format!("indicator/{}", i.id),
        device_name: device,
        device_id: cell("DeviceId"),
        first_event_time: at,
        last_event_time: at,
        entities,
        event: EventRef {
            table: Some(table.name().to_string()),
            timestamp: at,
            channel: String::new(),
            event_id: 0,
            record_id: cell("ReportId").and_then(|r| r.parse().ok()).unwrap_or(0),
            source: format!("indicator {} {}", i.kind, i.value),
        },
        matched: vec![MatchedField {
            field: hit.column.to_string(),
            value: serde_json::Value::String(hit.value.clone()),
        }],
        dedup_key: String::new(),
    };
    draft.rekey();
    draft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_hosts_and_their_parents() {
        assert_eq!(
            candidates(IndicatorKind::Domain, "https://a.b.Evil.com:8443/x?y"),
            ["a.b.evil.com", "b.evil.com", "evil.com"]
        );
        assert_eq!(
            candidates(IndicatorKind::Domain, "evil.com/path"),
            ["evil.com"]
        );
        assert!(candidates(IndicatorKind::Domain, "localhost").is_empty());
        assert_eq!(host_of("http://user@Host.example:80/"), "host.example");
    }

    #[test]
    fn hashes_and_addresses_compare_canonically() {
        let sha1 = "A9993E364706816ABA3E25717850C26C9CD0D89D";
        assert_eq!(candidates(IndicatorKind::Sha1, sha1), [sha1.to_lowercase()]);
        assert!(candidates(IndicatorKind::Sha1, "not a hash").is_empty());
        assert_eq!(candidates(IndicatorKind::Ip, " 10.0.0.5 "), ["10.0.0.5"]);
        assert_eq!(
            candidates(IndicatorKind::Ip, "2001:DB8::1"),
            ["2001:db8::1"]
        );
    }
}
