//! A Windows event record, flattened the way Sigma rules name its fields.
//!
//! Sigma's Windows rules address a record by flat names: the `System` block's `EventID`,
//! `Channel`, `Provider_Name`, `Computer`, ... and the names of the `EventData` items
//! (`Image`, `CommandLine`, `TargetUserName`, ...). `UserData` has no fixed shape; its leaves
//! are lifted to the top level by their own names, as Hayabusa and Chainsaw do, so a rule on
//! `SubjectUserName` of a 1102 "log cleared" record works.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// One Windows event record, parsed and flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct WinEvent {
    /// The file the record came from.
    pub source: Arc<Path>,
    /// `EventRecordID`.
    pub record_id: u64,
    /// When the event was written (`TimeCreated/@SystemTime`), UTC.
    pub timestamp: DateTime<Utc>,
    /// `EventID` (without qualifiers).
    pub event_id: u32,
    /// `Channel`, e.g. `Microsoft-Windows-Sysmon/Operational`.
    pub channel: String,
    /// `Provider/@Name`, e.g. `Microsoft-Windows-Sysmon`.
    pub provider: String,
    /// `Computer`.
    pub computer: String,
    /// Every field by its flat name: the System ones, then the event's data in record order.
    pub fields: Map<String, Value>,
}

impl WinEvent {
    /// Builds an event from the JSON rendering of a record (`evtx` with separated attributes).
    ///
    /// Returns `None` when the record has no `Event` element, which no valid record lacks.
    pub fn from_json(
        source: Arc<Path>,
        record_id: u64,
        timestamp: DateTime<Utc>,
        mut json: Value,
    ) -> Option<WinEvent> {
        let event = json.get_mut("Event")?.as_object_mut()?;
        let mut fields = Map::new();
        if let Some(Value::Object(system)) = event.remove("System") {
            flatten_system(system, &mut fields);
        }
        for (key, value) in std::mem::take(event) {
            match (key.as_str(), value) {
                ("EventData", Value::Object(data)) => flatten_data(data, &mut fields),
                ("UserData", Value::Object(data)) => lift_leaves(data, &mut fields),
                // Some providers render their payload as bare text (`EventData: "..."`).
                ("EventData", Value::String(text)) => {
                    fields.insert("Data".into(), Value::String(text));
                }
                (_, Value::Null) => {}
                (other, value) if !other.ends_with("_attributes") => {
                    fields.insert(other.to_string(), value);
                }
                _ => {}
            }
        }
        Some(WinEvent::from_fields(source, record_id, timestamp, fields))
    }

    /// Builds an event from its flat field map (what [`WinEvent::fields`] holds): the event id,
    /// channel, provider and computer are read from the fields, and so is the time
    /// (`TimeCreated_SystemTime`) when it is there; `timestamp` is the fallback.
    pub fn from_fields(
        source: Arc<Path>,
        record_id: u64,
        timestamp: DateTime<Utc>,
        fields: Map<String, Value>,
    ) -> WinEvent {
        let event_id = fields.get("EventID").and_then(as_u64).unwrap_or(0) as u32;
        // The rendered System time is what Windows shows; the record header's copy is only a
        // fallback.
        let timestamp = fields
            .get("TimeCreated_SystemTime")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(timestamp, |t| t.to_utc());
        let text = |k: &str| {
            fields
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        WinEvent {
            source,
            record_id,
            timestamp,
            event_id,
            channel: text("Channel"),
            provider: text("Provider_Name"),
            computer: text("Computer"),
            fields,
        }
    }

    /// Builds an event from a forwarded record: the same JSON rendering, but with no file
    /// header to fall back on, so the record id is the rendering's `EventRecordID` (0 when
    /// absent) and the time must be there (`System.TimeCreated_attributes.SystemTime`, RFC 3339).
    pub fn from_forwarded_json(source: Arc<Path>, json: Value) -> Result<WinEvent, &'static str> {
        let mut event = WinEvent::from_json(source, 0, DateTime::UNIX_EPOCH, json)
            .ok_or("not a Windows event: no \"Event\" object")?;
        let timed = event
            .fields
            .get("TimeCreated_SystemTime")
            .and_then(Value::as_str)
            .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok());
        if !timed {
            return Err("no RFC 3339 time in Event.System.TimeCreated_attributes.SystemTime");
        }
        event.record_id = event
            .fields
            .get("EventRecordID")
            .and_then(as_u64)
            .unwrap_or(0);
        Ok(event)
    }

    /// A field's value as text (numbers and booleans are rendered), `None` when absent or empty.
    pub fn get_str(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match self.fields.get(name)? {
            Value::String(s) if s.is_empty() || s == "-" => None,
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(Cow::Owned(b.to_string())),
            _ => None,
        }
    }

    /// A numeric field (decimal or `0x` hex text, or a JSON number).
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        match self.fields.get(name)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|u| u as i64)),
            Value::String(s) => parse_int(s),
            _ => None,
        }
    }

    /// The record's file name, for reports.
    pub fn source_name(&self) -> String {
        self.source.display().to_string()
    }
}

/// Decimal or `0x`-prefixed hex, as Windows renders ids and flags.
pub fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok().map(|u| u as i64)
    } else {
        s.parse::<i64>().ok()
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// System block: plain elements keep their names; attribute-only elements become
/// `Element_Attribute` (`Provider_Name`, `Security_UserID`, `Execution_ProcessID`), except the
/// time, which Sigma calls `TimeCreated_SystemTime` as well.
fn flatten_system(system: Map<String, Value>, out: &mut Map<String, Value>) {
    for (key, value) in system {
        if let Some(element) = key.strip_suffix("_attributes") {
            if let Value::Object(attrs) = value {
                for (attr, v) in attrs {
                    out.insert(format!("{element}_{attr}"), v);
                }
            }
            continue;
        }
        match value {
            // `<Correlation/>` and friends: empty elements carry nothing.
            Value::Null => {}
            Value::Object(o) if o.is_empty() => {}
            other => {
                out.insert(key, other);
            }
        }
    }
}

/// EventData: named items by name; unnamed `<Data>` items as `Data` (one value or a list).
/// Names lose their spaces (Defender's `Threat Name` is Sigma's `ThreatName`).
fn flatten_data(data: Map<String, Value>, out: &mut Map<String, Value>) {
    for (key, value) in data {
        if key.ends_with("_attributes") {
            continue;
        }
        let key = if key.contains(' ') {
            key.replace(' ', "")
        } else {
            key
        };
        match value {
            Value::Null => {
                out.insert(key, Value::String(String::new()));
            }
            other => {
                out.insert(key, other);
            }
        }
    }
}

/// UserData: `<UserData><LogFileCleared><SubjectUserName>..` → `SubjectUserName`. A leaf
/// whose name the System block already uses (104's `Channel`: the log that was cleared) is
/// kept as `UserData_<name>`.
fn lift_leaves(data: Map<String, Value>, out: &mut Map<String, Value>) {
    for (key, value) in data {
        if key.ends_with("_attributes") || key == "xmlns" {
            continue;
        }
        let leaf = match value {
            Value::Object(inner) => {
                lift_leaves(inner, out);
                continue;
            }
            Value::Null => Value::String(String::new()),
            leaf => leaf,
        };
        if out.contains_key(&key) {
            out.insert(format!("UserData_{key}"), leaf);
        } else {
            out.insert(key, leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(json: Value) -> WinEvent {
        WinEvent::from_json(
            Arc::from(Path::new("x.evtx")),
            7,
            DateTime::UNIX_EPOCH,
            json,
        )
        .unwrap()
    }

    #[test]
    fn flattens_system_and_event_data() {
        let e = event(json!({"Event": {
            "Event_attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "Provider_attributes": {"Name": "Microsoft-Windows-Sysmon", "Guid": "{5770}"},
                "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                "Computer": "WS01", "Security_attributes": {"UserID": "S-1-5-18"},
                "Correlation": null,
                "Execution_attributes": {"ProcessID": 2, "ThreadID": 3},
                "TimeCreated_attributes": {"SystemTime": "2019-03-18T17:35:24.123456Z"},
            },
            "EventData": {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami", "Empty": null, "Threat Name": "EICAR"}
        }}));
        assert_eq!(e.event_id, 1);
        assert_eq!(e.timestamp.to_rfc3339(), "2019-03-18T17:35:24.123456+00:00");
        assert_eq!(e.provider, "Microsoft-Windows-Sysmon");
        assert_eq!(e.channel, "Microsoft-Windows-Sysmon/Operational");
        assert_eq!(e.computer, "WS01");
        assert_eq!(e.fields["Security_UserID"], "S-1-5-18");
        assert_eq!(e.fields["Execution_ProcessID"], 2);
        assert_eq!(e.fields["CommandLine"], "cmd /c whoami");
        assert_eq!(e.get_str("Empty"), None);
        assert_eq!(e.get_str("ThreatName").as_deref(), Some("EICAR"));
        assert!(!e.fields.contains_key("Correlation"));
        assert!(!e.fields.contains_key("Event_attributes"));
    }

    #[test]
    fn lifts_user_data_leaves_and_keeps_unnamed_data() {
        let e = event(json!({"Event": {
            "System": {"EventID": 1102, "Channel": "Security", "Provider_attributes": {"Name": "Microsoft-Windows-Eventlog"}},
            "UserData": {"LogFileCleared": {"LogFileCleared_attributes": {"xmlns": "x"}, "SubjectUserName": "bob", "SubjectLogonId": "0x3e7", "Channel": "Microsoft-Windows-Sysmon/Operational"}}
        }}));
        assert_eq!(e.event_id, 1102);
        assert_eq!(e.get_str("SubjectUserName").as_deref(), Some("bob"));
        assert_eq!(e.get_i64("SubjectLogonId"), Some(0x3e7));
        assert_eq!(e.channel, "Security");
        assert_eq!(
            e.fields["UserData_Channel"],
            "Microsoft-Windows-Sysmon/Operational"
        );
        let e = event(
            json!({"Event": {"System": {"EventID": "7045"}, "EventData": {"Data": ["a", "b"]}}}),
        );
        assert_eq!(e.event_id, 7045);
        assert_eq!(e.fields["Data"], json!(["a", "b"]));
    }

    #[test]
    fn a_record_without_event_is_refused() {
        assert!(
            WinEvent::from_json(
                Arc::from(Path::new("x")),
                1,
                DateTime::UNIX_EPOCH,
                json!({"x": 1})
            )
            .is_none()
        );
    }

    #[test]
    fn forwarded_records_need_a_time_and_carry_their_record_id() {
        let source: Arc<Path> = Arc::from(Path::new("fwd"));
        let e = WinEvent::from_forwarded_json(
            source.clone(),
            json!({"Event": {"System": {"EventID": 1, "EventRecordID": 42,
                "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:00.5Z"}}}}),
        )
        .unwrap();
        assert_eq!(e.record_id, 42);
        assert_eq!(e.timestamp.to_rfc3339(), "2024-05-01T10:00:00.500+00:00");
        let untimed = json!({"Event": {"System": {"EventID": 1, "EventRecordID": 42}}});
        assert!(WinEvent::from_forwarded_json(source.clone(), untimed).is_err());
        assert!(WinEvent::from_forwarded_json(source, json!([1])).is_err());
    }

    #[test]
    fn parses_windows_integers() {
        assert_eq!(parse_int("0x3e7"), Some(999));
        assert_eq!(parse_int(" 42 "), Some(42));
        assert_eq!(parse_int("-"), None);
    }
}
