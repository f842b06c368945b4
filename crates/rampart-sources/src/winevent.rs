//! A Windows event record, flattened the way Sigma rules name its fields.
//!
//! Sigma's Windows rules address a record by flat names: the `System` block's `EventID`,
//! `Channel`, `Provider_Name`, `Computer`, ... and the names of the `EventData` items
//! (`Image`, `CommandLine`, `TargetUserName`, ...). `UserData` has no fixed shape; its leaves
//! are lifted to the top level by their own names, as Hayabusa and Chainsaw do, so a rule on
//! `SubjectUserName` of a 1102 "log cleared" record works.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

mod direct;

/// A record's flat fields, in record order. An `IndexMap` as serde_json's own ordered `Map` is,
/// but hashed with foldhash (seeded per process): every record's ~25 fields are inserted and
/// read by name several times, and SipHash was ~6 % of the server's work.
pub type Fields = indexmap::IndexMap<String, Value, foldhash::fast::RandomState>;

/// One Windows event record, parsed and flattened.
#[derive(Debug, Clone)]
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
    pub fields: Fields,
    /// `fields` as the members of a JSON object (`"name":value,...`, no braces), each value as
    /// the forwarded record's text has it: what `AdditionalFields` then copies instead of
    /// escaping every string again. `None` but for records read from forwarded text, and
    /// cleared by whatever changes `fields` in this crate (outside it, `fields` is only read).
    fields_json: Option<String>,
}

/// Events are equal by what they hold: `fields_json` is one way to write `fields`.
impl PartialEq for WinEvent {
    fn eq(&self, other: &WinEvent) -> bool {
        let WinEvent {
            source,
            record_id,
            timestamp,
            event_id,
            channel,
            provider,
            computer,
            fields,
            fields_json: _,
        } = self;
        *source == other.source
            && *record_id == other.record_id
            && *timestamp == other.timestamp
            && *event_id == other.event_id
            && *channel == other.channel
            && *provider == other.provider
            && *computer == other.computer
            && *fields == other.fields
    }
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
        let fields = fields_of_json(&mut json)?;
        Some(WinEvent::from_fields(source, record_id, timestamp, fields))
    }

    /// Builds an event from its flat field map (what [`WinEvent::fields`] holds): the event id,
    /// channel, provider and computer are read from the fields, and so is the time
    /// (`TimeCreated_SystemTime`) when it is there; `timestamp` is the fallback.
    pub fn from_fields(
        source: Arc<Path>,
        record_id: u64,
        timestamp: DateTime<Utc>,
        fields: Fields,
    ) -> WinEvent {
        WinEvent::timed(source, record_id, timestamp, fields).0
    }

    /// [`WinEvent::from_fields`], and whether the time was read from the fields.
    fn timed(
        source: Arc<Path>,
        record_id: u64,
        timestamp: DateTime<Utc>,
        fields: Fields,
    ) -> (WinEvent, bool) {
        let event_id = fields.get("EventID").and_then(as_u64).unwrap_or(0) as u32;
        // The rendered System time is what Windows shows; the record header's copy is only a
        // fallback.
        let rendered = fields
            .get("TimeCreated_SystemTime")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let timed = rendered.is_some();
        let timestamp = rendered.map_or(timestamp, |t| t.to_utc());
        let text = |k: &str| {
            fields
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let event = WinEvent {
            source,
            record_id,
            timestamp,
            event_id,
            channel: text("Channel"),
            provider: text("Provider_Name"),
            computer: text("Computer"),
            fields,
            fields_json: None,
        };
        (event, timed)
    }

    /// Builds an event from a forwarded record: the same JSON rendering, but with no file
    /// header to fall back on, so the record id is the rendering's `EventRecordID` (0 when
    /// absent) and the time must be there (`System.TimeCreated_attributes.SystemTime`, RFC 3339).
    pub fn from_forwarded_json(
        source: Arc<Path>,
        mut json: Value,
    ) -> Result<WinEvent, &'static str> {
        let fields = fields_of_json(&mut json).ok_or(NO_EVENT)?;
        WinEvent::forwarded(source, fields)
    }

    /// [`WinEvent::from_forwarded_json`] of a record's JSON text, read straight into the flat
    /// fields: no map or list is built for `Event`, `System`, `EventData` and the attribute
    /// objects only to be emptied again (that was a sixth of the server's time per event).
    /// Records of an unusual shape (`System` not first, a key given twice where that changes
    /// what is kept) and malformed text are read through a parsed `Value`, which decides.
    pub fn from_forwarded_slice(source: Arc<Path>, text: &[u8]) -> Result<WinEvent, String> {
        // Checked once, word by word: parsed from bytes, every string was checked on its own.
        let text = std::str::from_utf8(text)
            .map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to() + 1))?;
        if let Some(direct::Read { fields, members }) = direct::fields(text) {
            let mut event = WinEvent::forwarded(source, fields)?;
            event.fields_json = members;
            return Ok(event);
        }
        let json: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(WinEvent::from_forwarded_json(source, json)?)
    }

    /// A forwarded record of `fields`: its time must be there, its record id is the
    /// rendering's.
    fn forwarded(source: Arc<Path>, fields: Fields) -> Result<WinEvent, &'static str> {
        let (mut event, timed) = WinEvent::timed(source, 0, DateTime::UNIX_EPOCH, fields);
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

    /// [`WinEvent::fields_json`]: the fields as JSON object members, when read from text.
    pub(crate) fn fields_json(&self) -> Option<&str> {
        self.fields_json.as_deref()
    }

    /// Forgets [`WinEvent::fields_json`]: for whatever changes `fields`.
    pub(crate) fn fields_changed(&mut self) {
        self.fields_json = None;
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

const NO_EVENT: &str = "not a Windows event: no \"Event\" object";

/// The flat fields of a record's parsed JSON (`None` without an `Event` object).
fn fields_of_json(json: &mut Value) -> Option<Fields> {
    let event = json.get_mut("Event")?.as_object_mut()?;
    // Shifted out, not swapped: the other parts keep their record order.
    let system = match event.shift_remove("System") {
        Some(Value::Object(system)) => Some(system.into_iter().map(Part::of).collect()),
        _ => None,
    };
    let rest = std::mem::take(event).into_iter().map(Part::of).collect();
    Some(flatten(system, rest))
}

/// A value of the `Event` object as flattening takes it: an object's entries in order (no map
/// is built for them), or any other value.
enum Part {
    Entries(Vec<(String, Value)>),
    Value(Value),
}

impl Part {
    fn of((key, value): (String, Value)) -> (String, Part) {
        let part = match value {
            Value::Object(map) => Part::Entries(map.into_iter().collect()),
            other => Part::Value(other),
        };
        (key, part)
    }

    fn into_value(self) -> Value {
        match self {
            Part::Entries(entries) => Value::Object(entries.into_iter().collect()),
            Part::Value(value) => value,
        }
    }
}

/// The flat fields of an `Event` object: its `System` entries (when `System` is an object)
/// first, then the others in order.
fn flatten(system: Option<Vec<(String, Part)>>, rest: Vec<(String, Part)>) -> Fields {
    // Sized once: a map growing to a few dozen fields would be rehashed at each doubling.
    let entries = |parts: &[(String, Part)]| -> usize {
        parts
            .iter()
            .map(|(_, part)| match part {
                Part::Entries(entries) => entries.len(),
                Part::Value(_) => 1,
            })
            .sum()
    };
    let mut fields = Fields::with_capacity_and_hasher(
        system.as_deref().map_or(0, entries) + entries(&rest),
        Default::default(),
    );
    for (key, part) in system.into_iter().flatten() {
        match (key.strip_suffix("_attributes"), part) {
            (Some(element), Part::Entries(attrs)) => {
                for (attr, value) in attrs {
                    insert_attribute(&mut fields, element, &attr, value);
                }
            }
            (Some(_), Part::Value(_)) => {}
            (None, part) => {
                insert_system(&mut fields, key.into(), part.into_value());
            }
        }
    }
    for (key, part) in rest {
        match (key.as_str(), part) {
            ("EventData", Part::Entries(data)) => {
                for (key, value) in data {
                    insert_data(&mut fields, key, value);
                }
            }
            (_, part) => {
                insert_part(&mut fields, key.into(), part.into_value());
            }
        }
    }
    fields
}

/// System block: plain elements keep their names; attribute-only elements become
/// `Element_Attribute` (`Provider_Name`, `Security_UserID`, `Execution_ProcessID`), except the
/// time, which Sigma calls `TimeCreated_SystemTime` as well. This inserts one attribute.
///
/// These `insert_*` return whether the value replaced one of the same name.
fn insert_attribute(out: &mut Fields, element: &str, attr: &str, value: Value) -> bool {
    // Not `format!`: its machinery cost more than the map insert, per attribute.
    let mut name = String::with_capacity(element.len() + 1 + attr.len());
    name.push_str(element);
    name.push('_');
    name.push_str(attr);
    out.insert(name, value).is_some()
}

/// A plain element of the System block. `<Correlation/>` and friends: empty elements carry
/// nothing. The key is owned only once kept.
fn insert_system(out: &mut Fields, key: Cow<'_, str>, value: Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(map) if map.is_empty() => false,
        value => out.insert(key.into_owned(), value).is_some(),
    }
}

/// An EventData item: named items by name; unnamed `<Data>` items as `Data` (one value or a
/// list). Names lose their spaces (Defender's `Threat Name` is Sigma's `ThreatName`).
fn insert_data(out: &mut Fields, key: String, value: Value) -> bool {
    if key.ends_with("_attributes") {
        return false;
    }
    let key = if key.contains(' ') {
        key.replace(' ', "")
    } else {
        key
    };
    let value = match value {
        Value::Null => Value::String(String::new()),
        other => other,
    };
    out.insert(key, value).is_some()
}

/// A part of the `Event` object other than `System` and an `EventData` object.
/// `UserData`'s leaves are lifted whatever they replace (`false`).
fn insert_part(out: &mut Fields, key: Cow<'_, str>, value: Value) -> bool {
    match (&*key, value) {
        ("UserData", Value::Object(data)) => {
            lift_leaves(data, out);
            false
        }
        // Some providers render their payload as bare text (`EventData: "..."`).
        ("EventData", Value::String(text)) => {
            out.insert("Data".into(), Value::String(text)).is_some()
        }
        (_, Value::Null) => false,
        (other, value) if !other.ends_with("_attributes") => {
            out.insert(key.into_owned(), value).is_some()
        }
        _ => false,
    }
}

/// UserData: `<UserData><LogFileCleared><SubjectUserName>..` → `SubjectUserName`. A leaf
/// whose name the System block already uses (104's `Channel`: the log that was cleared) is
/// kept as `UserData_<name>`.
fn lift_leaves(data: impl IntoIterator<Item = (String, Value)>, out: &mut Fields) {
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

    /// A map's entries in order.
    fn entries(fields: &Fields) -> Vec<(String, Value)> {
        fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The members of an object's text, in order, repeats included.
    fn members_of(members: &str) -> Vec<(String, Value)> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Vec<(String, Value)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(out)
            }
        }
        let text = format!("{{{members}}}");
        let mut de = serde_json::Deserializer::from_str(&text);
        serde::Deserializer::deserialize_map(&mut de, Entries).expect("members are JSON")
    }

    /// The forwarded text reads as its parsed `Value` does: every record of the shared samples
    /// as the evtx crate renders it, and odd shapes.
    #[test]
    fn forwarded_text_reads_as_its_parsed_value() {
        let source: Arc<Path> = Arc::from(Path::new("fwd"));
        let same = |line: &str| {
            let direct = WinEvent::from_forwarded_slice(source.clone(), line.as_bytes());
            let parsed = serde_json::from_str(line)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    WinEvent::from_forwarded_json(source.clone(), json).map_err(str::to_string)
                });
            assert_eq!(direct, parsed, "{line}");
            if let Some(direct::Read {
                fields,
                members: Some(members),
            }) = direct::fields(line)
            {
                assert_eq!(members_of(&members), entries(&fields), "{line}");
            }
        };
        let t = r#""TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:00Z"}"#;
        let mut lines = vec![
            format!(
                r#"{{"Event": {{"System": {{"EventID": 1, {t}}}, "EventData": {{"Threat Name": "x", "A": null, "B_attributes": {{"c": 1}}, "N": 1.5, "L": [1, "a", null]}}}}}}"#
            ),
            format!(
                r#"{{"x": [1, {{"Event": 2}}], "Event": {{"EventData": "text", "System": {{{t}, "Correlation": null, "Empty": {{}}, "Nested": {{"a": 1}}, "EventID": "7"}}}}, "y": 1}}"#
            ),
            format!(
                r#"{{"Event": {{"System": {{{t}, "Channel": "Security"}}, "UserData": {{"E": {{"E_attributes": {{}}, "xmlns": "u", "Channel": "Sysmon", "S": null}}}}}}}}"#
            ),
            format!(
                r#"{{"Event": {{"System": {{{t}, "EventID": 1, "EventID": 2}}, "EventData": {{"A": 1}}, "EventData": {{"A": 2, "A": 3}}, "Other": [1], "Other_attributes": {{"z": 1}}, "Null": null}}}}"#
            ),
            format!(
                r#"{{"Event": {{"EventData": [1, 2], "UserData": "text", "System": "text"}}, "Event2": {{{t}}}}}"#
            ),
            format!(
                r#"{{"Event": {{"System": {{{t}}}}}, "Event": {{"System": {{{t}, "EventID": 9}}}}}}"#
            ),
            // Escapes, numbers and layouts of every kind, valid or not.
            format!(
                r#"{{"Event":{{"System":{{{t},"Computer":"a\"b\\c\/d\b\f\n\r\t\u00e9\u20AC\ud83d\ude00 e"}},"EventData":{{"P":"C:\\Windows\\x.exe","N":-5,"Z":0,"M":-0,"F":1.5e3,"G":2E-2,"H":18446744073709551615,"I":18446744073709551616,"J":1234567890123456789,"T":true,"U":false,"S":"","E":{{}},"L":[]}}}}}}"#
            ),
            format!(
                "{{\n\t\"Event\" :\r\n{{ \"System\" : {{ {t} }} , \"EventData\" : {{ \"A\" : 1 }} }} \n}}\n "
            ),
            format!(r#"{{"Event": {{"System": {{{t}, "Computer": "\ud83d"}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Computer": "\ude00"}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Computer": "\ud83d\u0041"}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Computer": "\u00g1"}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Computer": "\u+0041"}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Computer": "\x"}}}}}}"#),
            format!("{{\"Event\": {{\"System\": {{{t}, \"Computer\": \"a\tb\"}}}}}}"),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": 01}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": 1.}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": 1e}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": -}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": +1}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": tru}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": nulls}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t},}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t} "Level": 1}}}}}}"#),
            format!(
                r#"{{"Event": {{"System": {{{t}, "Level": 1}}, "EventData": {{"A": [1, 2}}}}}}"#
            ),
            format!(r#"{{"Event": {{"System": {{{t}, "Computer": "unterminated}}}}}}"#),
            format!(
                r#"{{"Event": {{"System": {{{t}, "Comp\u0075ter": "escaped key"}}, "Event\u0044ata": {{"A\"B": 1}}}}}}"#
            ),
            // Values skipped unread must still be JSON; deep nesting is serde_json's to refuse.
            format!(r#"{{"x": [1,], "Event": {{"System": {{{t}}}}}}}"#),
            format!(r#"{{"x": {{"a" 1}}, "Event": {{"System": {{{t}}}}}}}"#),
            format!(
                r#"{{"x": [[], {{}}, "a\"", -1.5, null], "Event": {{"System": {{{t}}}, "EventData": {{"A_attributes": [nul]}}}}}}"#
            ),
            format!(
                r#"{{"x": {}1{}, "Event": {{"System": {{{t}}}}}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            r#"{"Event": 1}"#.to_string(),
            r#"{"Event": {"System": {"EventID": 1}}}"#.to_string(),
            r#"[{"Event": {}}]"#.to_string(),
            r#"{"Event": {}} x"#.to_string(),
            r#"{"Event": {"System": {"EventID": 1e400}}}"#.to_string(),
            "\"text\"".to_string(),
        ];
        // Nesting at each side of serde_json's limit (127 objects and lists, counted from the
        // record): in a skipped value at the top, in a data item and in a skipped one.
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        for n in [125, 126, 127] {
            lines.push(format!(
                r#"{{"x": {}, "Event": {{"System": {{{t}}}}}}}"#,
                nested(n)
            ));
        }
        for n in [118, 119, 123, 124, 125] {
            lines.push(format!(
                r#"{{"Event": {{"System": {{{t}}}, "EventData": {{"A": {a}, "B_attributes": {a}}}}}}}"#,
                a = nested(n)
            ));
        }
        for line in lines {
            same(&line);
        }
        let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
            return;
        };
        let (files, _) = crate::evtx::collect_files(&[samples]);
        let settings = evtx::ParserSettings::new().separate_json_attributes(true);
        // Records without their values' text though they have no UserData: a data item named
        // as a System element (Sysmon 4's `Version`) replaces its value; 6 of the samples.
        let mut repeats = 0;
        let mut records = 0;
        for file in &files {
            let Ok(parser) = evtx::EvtxParser::from_path(file) else {
                continue;
            };
            let mut parser = parser.with_configuration(settings.clone());
            for record in parser.records_json_value().flatten() {
                let line = record.data.to_string();
                same(&line);
                // Every record as the evtx crate renders it takes the direct read, and keeps
                // its values' text unless its UserData leaves were lifted.
                let read = direct::fields(&line);
                assert!(read.is_some(), "{line}");
                let members = read.and_then(|r| r.members);
                if members.is_none() && !line.contains(r#""UserData":"#) {
                    repeats += 1;
                }
                records += 1;
            }
        }
        assert!(records > 5000, "{records} records");
        assert!(
            repeats * 100 < records,
            "{repeats} of {records} records without their text"
        );
    }

    /// Records damaged at random — bytes replaced by JSON's own punctuation, escapes, digits,
    /// control and non-ASCII characters, dropped or repeated — read as their parsed `Value`
    /// does (the same event, or an error either way), and their members' text matches their
    /// fields: the direct read never accepts what `serde_json` refuses.
    #[test]
    fn damaged_forwarded_records_read_as_their_parsed_value() {
        let source: Arc<Path> = Arc::from(Path::new("fwd"));
        let records = [
            r#"{"Event_attributes":{"xmlns":"x"},"Event":{"System":{"Provider_attributes":{"Name":"Microsoft-Windows-Sysmon"},"EventID":1,"Version":5,"TimeCreated_attributes":{"SystemTime":"2024-05-01T10:00:00.1234567Z"},"EventRecordID":42,"Correlation":null,"Execution_attributes":{"ProcessID":3192,"ThreadID":3288},"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"ws1"},"EventData":{"Image":"C:\\Windows\\System32\\cmd.exe","CommandLine":"cmd /c \"echo \u00e9\"","ProcessId":-12,"Ratio":1.5e3,"Flag":true,"List":[1,"a"],"Empty":null,"Name With Space":"x"}}}"#,
            r#"{"Event":{"System":{"EventID":104,"TimeCreated_attributes":{"SystemTime":"2024-05-01T10:00:00Z"},"Channel":"System"},"UserData":{"LogFileCleared":{"Channel":"Security","SubjectUserName":"bob"}}}}"#,
        ];
        let alphabet: &[&[u8]] = &[
            b"\"",
            b"\\",
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b" ",
            b"0",
            b"-",
            b"e",
            b".",
            b"\\u",
            b"\\ud83d",
            b"\\n",
            b"\t",
            b"\x01",
            b"n",
            b"t",
            "\u{e9}".as_bytes(),
            b"",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below as u64) as usize
        };
        let mut direct_reads = 0;
        for _ in 0..4000 {
            let mut line = records[next(records.len())].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(line.len());
                let len = next(4).min(line.len() - at);
                let with = alphabet[next(alphabet.len())];
                line.splice(at..at + len, with.iter().copied());
            }
            let direct = WinEvent::from_forwarded_slice(source.clone(), &line);
            let parsed = std::str::from_utf8(&line)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
                .and_then(|json| {
                    WinEvent::from_forwarded_json(source.clone(), json).map_err(str::to_string)
                });
            let text = String::from_utf8_lossy(&line);
            assert_eq!(direct.is_ok(), parsed.is_ok(), "{text}");
            if let (Ok(direct), Ok(parsed)) = (&direct, &parsed) {
                assert_eq!(direct, parsed, "{text}");
            }
            if let Ok(text) = std::str::from_utf8(&line)
                && let Some(read) = direct::fields(text)
            {
                direct_reads += 1;
                if let Some(members) = &read.members {
                    assert_eq!(members_of(members), entries(&read.fields), "{text}");
                }
            }
        }
        // Most damage leaves a record the direct read takes (a value changed, not the shape).
        assert!(direct_reads > 1000, "{direct_reads} direct reads");
    }

    /// Shapes the direct read takes, and those it leaves to the parsed `Value`; each reads as
    /// its `Value` does.
    #[test]
    fn forwarded_shapes_are_read_directly_or_left_to_the_value() {
        let t = r#""TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:00Z"}"#;
        let direct = [
            // Repeats where the last value wins either way, parts after `EventData` in
            // record order, `EventData` as text or null.
            format!(
                r#"{{"Event": {{"System": {{{t}, "Execution_attributes": {{"ProcessID": 1, "ThreadID": 2, "ProcessID": 3}}}}, "EventData": {{"A": 1, "B B": null, "A": 2, "BB": 3, "C_attributes": 1}}, "RenderingInfo": {{"Message": "m"}}, "Last": 5, "UserData": {{"U": {{"Channel": "c", "V": 1, "V": 2}}}}}}}}"#
            ),
            format!(r#"{{"Event": {{"System": {{{t}}}, "EventData": "text"}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}}}, "EventData": null, "Z": null}}}}"#),
        ];
        let valued = [
            // A repeat in System that changes what is kept, an attribute object that is not
            // one, `EventData` that is a list, `System` not first, `Event` twice.
            format!(r#"{{"Event": {{"System": {{{t}, "Level": 4, "Level": null}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Level": null, "Task": 1, "Level": 4}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}, "Security_attributes": "x"}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}}}, "EventData": [1, 2]}}}}"#),
            format!(r#"{{"Event": {{"EventData": {{"A": 1}}, "System": {{{t}}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}}}}}, "Event": {{"System": {{{t}}}}}}}"#),
            format!(r#"{{"Event": {{"System": {{{t}}}}}}} trailing"#),
        ];
        let source: Arc<Path> = Arc::from(Path::new("fwd"));
        for (line, taken) in direct
            .iter()
            .map(|l| (l, true))
            .chain(valued.iter().map(|l| (l, false)))
        {
            assert_eq!(direct::fields(line).is_some(), taken, "{line}");
            let parsed = serde_json::from_str(line)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    WinEvent::from_forwarded_json(source.clone(), json).map_err(str::to_string)
                });
            assert_eq!(
                WinEvent::from_forwarded_slice(source.clone(), line.as_bytes()),
                parsed,
                "{line}"
            );
        }
        // Parts after `EventData` keep their record order, read either way.
        let fields = direct::fields(&direct[0]).unwrap().fields;
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "TimeCreated_SystemTime",
                "Execution_ProcessID",
                "Execution_ThreadID",
                "A",
                "BB",
                "RenderingInfo",
                "Last",
                "Channel",
                "V"
            ]
        );
        assert_eq!(fields["Execution_ProcessID"], json!(3));
        assert_eq!(fields["A"], json!(2));
        assert_eq!(fields["BB"], json!(3));
    }

    #[test]
    fn forwarded_text_that_is_not_utf8_is_refused_with_its_place() {
        let source: Arc<Path> = Arc::from(Path::new("fwd"));
        let line = b"{\"Event\": {\"System\": {\"Computer\": \"ws\xff1\"}}}";
        let err = WinEvent::from_forwarded_slice(source, line).unwrap_err();
        assert_eq!(err, "not UTF-8 text (byte 38)");
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
