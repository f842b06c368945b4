//! Sigma's Linux logsources on agent telemetry: which rows of the hunting tables a
//! `product: linux` category covers, and the Sigma field names their columns answer to.
//!
//! The Linux agent sends Defender hunting-table rows (`FolderPath` is the full path, file name
//! included). A category is a table and some of its `ActionType`s; SigmaHQ's Linux rules name
//! fields as Sysmon for Linux does (`Image`, `CommandLine`, `TargetFilename`, ...), so each
//! category reads its columns under those names, and computes the few that no column holds as
//! such (`CurrentDirectory` from `AdditionalFields`, `Hashes`, `Initiated`, a lowercase
//! `Protocol`).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::event::{Origin, Record, SigmaEvent};

/// A Linux category: the table and action types of the rows it covers, and how its Sigma
/// fields are read from them.
pub struct Category {
    pub name: &'static str,
    pub table: &'static str,
    pub actions: &'static [&'static str],
    /// `(Sigma field, column)`.
    fields: &'static [(&'static str, &'static str)],
}

const PROCESS_FIELDS: &[(&str, &str)] = &[
    ("Image", "FolderPath"),
    ("CommandLine", "ProcessCommandLine"),
    ("ParentImage", "InitiatingProcessFolderPath"),
    ("ParentCommandLine", "InitiatingProcessCommandLine"),
    ("User", "AccountName"),
    ("ParentUser", "InitiatingProcessAccountName"),
    ("ProcessId", "ProcessId"),
    ("ParentProcessId", "InitiatingProcessId"),
    ("LogonId", "LogonId"),
    ("Computer", "DeviceName"),
];

const FILE_FIELDS: &[(&str, &str)] = &[
    ("TargetFilename", "FolderPath"),
    ("SourceFilename", "PreviousFolderPath"),
    ("Image", "InitiatingProcessFolderPath"),
    ("CommandLine", "InitiatingProcessCommandLine"),
    ("User", "InitiatingProcessAccountName"),
    ("ProcessId", "InitiatingProcessId"),
    ("Computer", "DeviceName"),
];

const NETWORK_FIELDS: &[(&str, &str)] = &[
    ("Image", "InitiatingProcessFolderPath"),
    ("CommandLine", "InitiatingProcessCommandLine"),
    ("User", "InitiatingProcessAccountName"),
    ("ProcessId", "InitiatingProcessId"),
    ("DestinationIp", "RemoteIP"),
    ("DestinationPort", "RemotePort"),
    ("DestinationHostname", "RemoteUrl"),
    ("SourceIp", "LocalIP"),
    ("SourcePort", "LocalPort"),
    ("Computer", "DeviceName"),
];

/// Connections this machine opened; `InboundConnectionAccepted` is the one it accepted
/// (listening sockets are no connection and have no category).
const OUTBOUND: &[&str] = &["ConnectionSuccess", "ConnectionAttempt", "ConnectionFailed"];
const INBOUND: &str = "InboundConnectionAccepted";

/// Every Linux category agent telemetry records.
pub const CATEGORIES: &[Category] = &[
    Category {
        name: "process_creation",
        table: "DeviceProcessEvents",
        actions: &["ProcessCreated"],
        fields: PROCESS_FIELDS,
    },
    Category {
        name: "file_event",
        table: "DeviceFileEvents",
        actions: &["FileCreated", "FileModified", "FileRenamed"],
        fields: FILE_FIELDS,
    },
    Category {
        name: "file_delete",
        table: "DeviceFileEvents",
        actions: &["FileDeleted"],
        fields: FILE_FIELDS,
    },
    Category {
        name: "network_connection",
        table: "DeviceNetworkEvents",
        actions: &[
            "ConnectionSuccess",
            "ConnectionAttempt",
            "ConnectionFailed",
            INBOUND,
        ],
        fields: NETWORK_FIELDS,
    },
];

/// The category of a `product: linux` logsource, or why agent telemetry does not reach it.
pub fn route(category: Option<&str>, service: Option<&str>) -> Result<&'static str, String> {
    match (category, service) {
        (Some(c), _) => CATEGORIES
            .iter()
            .find(|k| k.name.eq_ignore_ascii_case(c))
            .map(|k| k.name)
            .ok_or_else(|| format!("agent telemetry records no Linux category '{c}'")),
        (None, Some(s)) => Err(format!(
            "Linux service '{s}' is not collected \
             (agent telemetry covers process, file and network events)"
        )),
        (None, None) => Err("a Linux logsource without a category reads log lines, \
                             which agent telemetry does not carry"
            .into()),
    }
}

/// A row of agent telemetry: a hunting-table row as JSON, as the agent gateway receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryRow<'a> {
    /// The hunting table (`DeviceProcessEvents`).
    pub table: &'static str,
    /// Column name → value; text columns hold strings (`AdditionalFields` its JSON text or an
    /// object).
    pub columns: Cow<'a, Map<String, Value>>,
    pub timestamp: DateTime<Utc>,
    /// The row's number (the agent's sequence number), for detections to cite.
    pub record_id: u64,
    /// What sent it, for detections to cite.
    pub source: Arc<Path>,
}

impl TelemetryRow<'_> {
    /// The category the row is in, if any.
    pub fn category(&self) -> Option<&'static Category> {
        let action = self.columns.get("ActionType")?.as_str()?;
        CATEGORIES
            .iter()
            .find(|c| c.table == self.table && c.actions.contains(&action))
    }

    /// The row with its columns owned, to outlive the request it came in.
    pub fn into_owned(self) -> TelemetryRow<'static> {
        TelemetryRow {
            table: self.table,
            columns: Cow::Owned(self.columns.into_owned()),
            timestamp: self.timestamp,
            record_id: self.record_id,
            source: self.source,
        }
    }

    /// The row as `category`'s rules read it.
    pub(crate) fn view_as(&self, category: &Category) -> SigmaEvent<'_> {
        SigmaEvent::mapped(
            &self.columns,
            category.fields,
            computed(category, &self.columns),
        )
    }
}

impl Record for TelemetryRow<'_> {
    fn view(&self) -> SigmaEvent<'_> {
        match self.category() {
            Some(category) => self.view_as(category),
            None => SigmaEvent::mapped(&self.columns, &[], Vec::new()),
        }
    }

    fn origin(&self) -> Origin<'_> {
        Origin {
            timestamp: self.timestamp,
            computer: text(&self.columns, "DeviceName").unwrap_or_default(),
            channel: self.table,
            event_id: 0,
            record_id: self.record_id,
            source: &self.source,
        }
    }
}

/// The Sigma fields of `category` that no column holds as such.
fn computed(category: &Category, row: &Map<String, Value>) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    match category.name {
        "process_creation" => {
            if let Some(dir) = additional_field(row, "CurrentDirectory") {
                out.push(("CurrentDirectory", dir));
            }
            // Sysmon's `Hashes`: `SHA1=..,MD5=..,SHA256=..`.
            let hashes: Vec<String> = [("SHA1", "SHA1"), ("MD5", "MD5"), ("SHA256", "SHA256")]
                .iter()
                .filter_map(|(name, column)| Some(format!("{name}={}", text(row, column)?)))
                .collect();
            if !hashes.is_empty() {
                out.push(("Hashes", Value::String(hashes.join(","))));
            }
        }
        "network_connection" => {
            if let Some(action) = text(row, "ActionType") {
                let initiated = OUTBOUND.contains(&action);
                out.push(("Initiated", Value::String(initiated.to_string())));
            }
            if let Some(protocol) = text(row, "Protocol") {
                out.push(("Protocol", Value::String(protocol.to_ascii_lowercase())));
            }
        }
        _ => {}
    }
    out
}

/// A column's text, when it has some.
fn text<'a>(row: &'a Map<String, Value>, column: &str) -> Option<&'a str> {
    row.get(column)?.as_str().filter(|s| !s.is_empty())
}

/// One member of `AdditionalFields` (a JSON object, or its text).
fn additional_field(row: &Map<String, Value>, name: &str) -> Option<Value> {
    match row.get("AdditionalFields")? {
        Value::Object(fields) => fields.get(name).cloned(),
        // Parsed only when it can hold the member: most rows' fields are never read.
        Value::String(text) if text.contains(name) => match serde_json::from_str(text).ok()? {
            Value::Object(mut fields) => fields.remove(name),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsigma_eval::event::{Event, EventValue};
    use serde_json::json;

    fn row(table: &'static str, columns: Value) -> TelemetryRow<'static> {
        let Value::Object(columns) = columns else {
            panic!("columns are an object")
        };
        TelemetryRow {
            table,
            columns: Cow::Owned(columns),
            timestamp: DateTime::UNIX_EPOCH,
            record_id: 7,
            source: Arc::from(Path::new("agent")),
        }
    }

    fn field(view: &SigmaEvent<'_>, name: &str) -> Option<Value> {
        view.get_field(name).map(|v| v.to_json())
    }

    #[test]
    fn routes_linux_logsources() {
        assert_eq!(
            route(Some("Process_Creation"), None),
            Ok("process_creation")
        );
        assert_eq!(route(Some("file_delete"), None), Ok("file_delete"));
        assert!(
            route(Some("registry_set"), None)
                .unwrap_err()
                .contains("registry_set")
        );
        assert!(route(None, Some("auditd")).unwrap_err().contains("auditd"));
        assert!(route(None, None).is_err());
    }

    #[test]
    fn rows_find_their_category_by_table_and_action() {
        let category = |table, action: &str| {
            row(table, json!({"ActionType": action}))
                .category()
                .map(|c| c.name)
        };
        assert_eq!(
            category("DeviceProcessEvents", "ProcessCreated"),
            Some("process_creation")
        );
        assert_eq!(
            category("DeviceFileEvents", "FileRenamed"),
            Some("file_event")
        );
        assert_eq!(
            category("DeviceFileEvents", "FileDeleted"),
            Some("file_delete")
        );
        assert_eq!(
            category("DeviceNetworkEvents", "ConnectionFailed"),
            Some("network_connection")
        );
        assert_eq!(
            category("DeviceNetworkEvents", "ListeningConnectionCreated"),
            None
        );
        assert_eq!(category("DeviceFileEvents", "ProcessCreated"), None);
        assert_eq!(
            row("DeviceProcessEvents", json!({}))
                .category()
                .map(|c| c.name),
            None
        );
    }

    #[test]
    fn process_rows_answer_to_sysmon_names() {
        let r = row(
            "DeviceProcessEvents",
            json!({
                "ActionType": "ProcessCreated", "DeviceName": "web01",
                "FolderPath": "/usr/bin/curl", "ProcessCommandLine": "curl -s http://x",
                "InitiatingProcessFolderPath": "/usr/bin/bash", "InitiatingProcessCommandLine": "bash",
                "AccountName": "www-data", "ProcessId": 4242, "InitiatingProcessId": 4000, "LogonId": 0,
                "SHA256": "ab12", "MD5": "",
                "AdditionalFields": "{\"CurrentDirectory\":\"/var/www\",\"Tty\":\"pts/0\"}",
            }),
        );
        let view = r.view();
        assert_eq!(field(&view, "Image"), Some(json!("/usr/bin/curl")));
        assert_eq!(field(&view, "CommandLine"), Some(json!("curl -s http://x")));
        assert_eq!(field(&view, "ParentImage"), Some(json!("/usr/bin/bash")));
        assert_eq!(field(&view, "User"), Some(json!("www-data")));
        assert_eq!(field(&view, "ProcessId"), Some(json!(4242)));
        assert_eq!(field(&view, "ParentProcessId"), Some(json!(4000)));
        assert_eq!(field(&view, "LogonId"), Some(json!(0)));
        assert_eq!(field(&view, "CurrentDirectory"), Some(json!("/var/www")));
        assert_eq!(field(&view, "Hashes"), Some(json!("SHA256=ab12")));
        assert_eq!(field(&view, "Computer"), Some(json!("web01")));
        // Columns are read under Sigma's names only.
        assert_eq!(field(&view, "FolderPath"), None);
        assert!(matches!(view.get_field("Image"), Some(EventValue::Str(_))));
        let mut text = Vec::new();
        view.visit_text(&mut |t| text.push(t.to_string()));
        assert!(text.contains(&"4242".to_string()) && text.contains(&"/var/www".to_string()));
        let origin = r.origin();
        assert_eq!(
            (origin.computer, origin.channel, origin.record_id),
            ("web01", "DeviceProcessEvents", 7)
        );
    }

    #[test]
    fn file_and_network_rows() {
        let columns = json!({"ActionType": "FileRenamed", "FolderPath": "/etc/cron.d/x",
            "PreviousFolderPath": "/tmp/x", "InitiatingProcessFolderPath": "/usr/bin/mv",
            "InitiatingProcessAccountName": "root", "AdditionalFields": {"CurrentDirectory": "/root"}});
        let r = row("DeviceFileEvents", columns);
        let view = r.view();
        assert_eq!(field(&view, "TargetFilename"), Some(json!("/etc/cron.d/x")));
        assert_eq!(field(&view, "SourceFilename"), Some(json!("/tmp/x")));
        assert_eq!(field(&view, "Image"), Some(json!("/usr/bin/mv")));
        assert_eq!(field(&view, "User"), Some(json!("root")));
        assert_eq!(field(&view, "CurrentDirectory"), None, "process rows only");

        let net = |action: &str| {
            row(
                "DeviceNetworkEvents",
                json!({
                    "ActionType": action, "RemoteIP": "203.0.113.7", "RemotePort": 4444,
                    "LocalIP": "10.0.0.5", "LocalPort": 50312, "Protocol": "Tcp",
                    "RemoteUrl": "c2.example", "InitiatingProcessFolderPath": "/usr/bin/bash",
                }),
            )
        };
        let out = net("ConnectionSuccess");
        let view = out.view();
        assert_eq!(field(&view, "Initiated"), Some(json!("true")));
        assert_eq!(field(&view, "Protocol"), Some(json!("tcp")));
        assert_eq!(field(&view, "DestinationIp"), Some(json!("203.0.113.7")));
        assert_eq!(field(&view, "DestinationPort"), Some(json!(4444)));
        assert_eq!(
            field(&view, "DestinationHostname"),
            Some(json!("c2.example"))
        );
        assert_eq!(field(&view, "SourceIp"), Some(json!("10.0.0.5")));
        assert_eq!(field(&view, "SourcePort"), Some(json!(50312)));
        let inbound = net("InboundConnectionAccepted");
        assert_eq!(field(&inbound.view(), "Initiated"), Some(json!("false")));
    }
}
