//! Stored rows → Windows records again: the inverse of [`super::map_event`], so that Sigma rules
//! can be evaluated on what the store holds (the server's rule test) as they were at ingest.
//!
//! [`rebuild`] takes a row of one of the [`TABLES`] as a hunting query answers it (column name →
//! JSON value; datetimes as RFC 3339 text, `AdditionalFields` as JSON text or an object, see
//! [`row_columns`]) and gives back the [`WinEvent`] it was mapped from, or `None` for a row no
//! Windows record became (an agent's row).
//!
//! # Exact: tables with `AdditionalFields`
//!
//! `DeviceProcessEvents`, `DeviceNetworkEvents`, `DeviceFileEvents`, `DeviceLogonEvents`,
//! `DeviceEvents` and the `Identity*` tables keep the record's whole field map in
//! `AdditionalFields`. The record is that map, less the keys the mapper added under Defender's
//! names (`DesiredAccess`, `Command`, `TO.GROUP`, ...): a key of that list is dropped when
//! mapping the record without it adds it back with the same value, which is how a record's own
//! `ServiceAccount` (Security 4697) is told from the one added to a System 7045 record. Its event
//! id, channel, provider, computer and time follow from the fields as when it was read
//! ([`WinEvent::from_fields`]); its record id is `EventRecordID` (the `ReportId`), not the
//! position in the file it came from, which is not stored.
//!
//! A `Device*` row is a Windows record's when its `DeviceId` is the one the mapper derives from
//! its `DeviceName` (agents' rows carry their enrolled device's id) and its `AdditionalFields`
//! hold a `Channel`; an `Identity*` row when its `AdditionalFields` hold a `Channel`.
//!
//! # Approximate: `DeviceRegistryEvents` and `DeviceImageLoadEvents` ([`APPROXIMATE`])
//!
//! Defender's schema, which the store keeps column for column, has no `AdditionalFields` in
//! these two tables: the record is rebuilt from the mapped columns, and only the fields below
//! come back. Every rebuilt record has the System fields `Provider_Name`, `EventID`, `Channel`,
//! `Computer` (the `DeviceName`: lower case, as the mapper wrote it), `EventRecordID`
//! (`ReportId`) and `TimeCreated_SystemTime` (`Timestamp`, to the microsecond: Windows writes
//! tenths of microseconds, the store keeps microseconds).
//!
//! | record | fields rebuilt | fields that cannot be |
//! |---|---|---|
//! | Sysmon 12, 13, 14 (registry) | `EventType` and the event id (from `ActionType`: `CreateKey`/`DeleteKey`/`DeleteValue` 12, `SetValue` 13, `RenameKey` 14), `TargetObject` (`RegistryKey` + `\` + `RegistryValueName`, or `PreviousRegistryKey` for a rename, with the hive abbreviated as Sysmon writes it: `HKLM`, `HKU`, `HKCU`, `HKCR`, `HKCC`), `Details` (13: from `RegistryValueType`/`RegistryValueData`: `DWORD (0x00000001)`, `QWORD (0x…-0x…)`, `Binary Data`, `(Empty)` or the text), `NewName` (14: the new key's full path), `Image`, `ProcessId`, `User` | `RuleName`, `UtcTime`, `ProcessGuid` (only the process start time it carries is kept); a `CreateValue` event type comes back as `SetValue`; `Details` of a `DWORD`/`QWORD` whose number did not parse |
//! | Security 4657 (registry value) | `ObjectName` (hive as Windows writes it: `\REGISTRY\MACHINE`, `\REGISTRY\USER`), `ObjectValueName`, `NewValue`, `OldValue`, `OperationType` (`%%1906` deleted; `%%1905` modified when there was an old value, else `%%1904` added), `ProcessId` (hex), `ProcessName`, `SubjectUserSid`, `SubjectUserName`, `SubjectDomainName` | `SubjectLogonId`, `HandleId`, `OldValueType`, `NewValueType` |
//! | Sysmon 7 (image load) | `ImageLoaded`, `Hashes` (`SHA1=…,MD5=…,SHA256=…` of those the row has, in upper case), `Image`, `ProcessId`, `User` | `RuleName`, `UtcTime`, `ProcessGuid`, `IMPHASH`, and the loaded file's `FileVersion`, `Description`, `Product`, `Company`, `OriginalFileName`, `Signed`, `Signature`, `SignatureStatus` (Defender's table has no columns for them, and the mapper keeps none) |
//!
//! A registry row is Security 4657's when it names the account's SID or a previous value (Sysmon
//! gives neither), else Sysmon's. A rule that reads a field that cannot be rebuilt does not see
//! it: a selection on it misses, a filter on it filters nothing, so results on these two tables
//! are an approximation.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rampart_schema::arrow_array::cast::AsArray;
use rampart_schema::arrow_array::types::{
    Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use rampart_schema::arrow_array::{Array, ArrayRef};
use rampart_schema::{KustoType, Row, Table};
use serde_json::{Map, Value};

use super::common::{ADDED_KEYS, device_id};
use super::{map_event, security, sysmon};
use crate::winevent::WinEvent;

/// The tables Windows records are mapped to, which [`rebuild`] reads.
pub const TABLES: [Table; 10] = [
    Table::DeviceProcessEvents,
    Table::DeviceNetworkEvents,
    Table::DeviceFileEvents,
    Table::DeviceRegistryEvents,
    Table::DeviceLogonEvents,
    Table::DeviceImageLoadEvents,
    Table::DeviceEvents,
    Table::IdentityLogonEvents,
    Table::IdentityDirectoryEvents,
    Table::IdentityQueryEvents,
];

/// The tables whose rows keep only their mapped columns: records rebuilt from them lack the
/// fields listed in the [module documentation](self).
pub const APPROXIMATE: [Table; 2] = [Table::DeviceRegistryEvents, Table::DeviceImageLoadEvents];

const SYSMON_CHANNEL: &str = "Microsoft-Windows-Sysmon/Operational";

/// The Windows record a stored row of `table` was mapped from, named by `source` in detections;
/// `None` when no Windows record became this row (a row of an agent, of another table, or one
/// without the columns a record needs).
pub fn rebuild(table: Table, columns: &Map<String, Value>, source: &Arc<Path>) -> Option<WinEvent> {
    let row = Columns(columns);
    if table.name().starts_with("Device") && !row.written_by_the_mapper() {
        return None;
    }
    match table {
        Table::DeviceRegistryEvents => registry(&row, source),
        Table::DeviceImageLoadEvents => image_load(&row, source),
        t if TABLES.contains(&t) => with_additional_fields(&row, source),
        _ => None,
    }
}

/// A row's columns as a hunting query answers them (what the server's
/// `crate::custom::query` gives per row, and [`rebuild`] reads): every column of the table,
/// null cells as `null`, datetimes as RFC 3339 UTC text, `dynamic` columns as JSON text.
pub fn row_columns(row: &Row) -> Map<String, Value> {
    let table = row.table();
    let mut builder = table.batch_builder();
    // The builder is the row's own table's: this cannot fail.
    let _ = builder.append(row);
    let batch = builder.finish();
    table
        .columns()
        .iter()
        .zip(batch.columns())
        .map(|(column, array)| (column.name.to_string(), cell(column.kind, array)))
        .collect()
}

/// The first (only) cell of a one-row column.
fn cell(kind: KustoType, array: &ArrayRef) -> Value {
    if array.is_null(0) {
        return Value::Null;
    }
    match kind {
        KustoType::String | KustoType::Dynamic => array
            .as_string_opt::<i32>()
            .map_or(Value::Null, |a| Value::String(a.value(0).to_string())),
        KustoType::Long => array
            .as_primitive_opt::<Int64Type>()
            .map_or(Value::Null, |a| a.value(0).into()),
        KustoType::Int => array
            .as_primitive_opt::<Int32Type>()
            .map_or(Value::Null, |a| a.value(0).into()),
        KustoType::Real => array
            .as_primitive_opt::<Float64Type>()
            .and_then(|a| serde_json::Number::from_f64(a.value(0)))
            .map_or(Value::Null, Value::Number),
        KustoType::Bool => array
            .as_boolean_opt()
            .map_or(Value::Null, |a| a.value(0).into()),
        KustoType::DateTime => array
            .as_primitive_opt::<TimestampMicrosecondType>()
            .and_then(|a| DateTime::from_timestamp_micros(a.value(0)))
            .map_or(Value::Null, |t| {
                Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }),
    }
}

/// A row's columns, read leniently (a hunting answer may render a number as text).
struct Columns<'a>(&'a Map<String, Value>);

impl Columns<'_> {
    /// A column as text; `None` when null or empty.
    fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A text column, empty text included (a registry value's empty data).
    fn text_or_empty(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    fn number(&self, name: &str) -> Option<i64> {
        match self.0.get(name)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn time(&self, name: &str) -> Option<DateTime<Utc>> {
        let text = self.text(name)?;
        DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc())
    }

    /// Whether the Windows mapper wrote this `Device*` row: its `DeviceId` is the hash of its
    /// `DeviceName` (or both are missing, for a record without a computer name). The server
    /// gives agents' rows the enrolled device's id, which never is.
    fn written_by_the_mapper(&self) -> bool {
        match (self.text("DeviceId"), self.text("DeviceName")) {
            (Some(id), Some(name)) => id == device_id(name),
            (None, None) => true,
            _ => false,
        }
    }

    /// `DOMAIN\name` (or `name`) of the initiating process's account.
    fn user(&self) -> Option<String> {
        let name = self.text("InitiatingProcessAccountName")?;
        Some(match self.text("InitiatingProcessAccountDomain") {
            Some(domain) => format!("{domain}\\{name}"),
            None => name.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Tables with AdditionalFields
// ---------------------------------------------------------------------------------------------

fn with_additional_fields(row: &Columns, source: &Arc<Path>) -> Option<WinEvent> {
    let fields: crate::winevent::Fields = match row.0.get("AdditionalFields")? {
        Value::String(text) => match serde_json::from_str(text).ok()? {
            Value::Object(map) => map.into_iter().collect(),
            _ => return None,
        },
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => return None,
    };
    if !fields.contains_key("Channel") {
        return None;
    }
    let record_id = fields
        .get("EventRecordID")
        .and_then(unsigned)
        .or_else(|| row.0.get("ReportId").and_then(unsigned))
        .unwrap_or(0);
    let timestamp = row.time("Timestamp").unwrap_or(DateTime::UNIX_EPOCH);
    let event = WinEvent::from_fields(source.clone(), record_id, timestamp, fields);
    Some(without_added_keys(event))
}

fn unsigned(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The record less the keys its mapper added to `AdditionalFields`: a key of [`ADDED_KEYS`] is
/// the mapper's when mapping the record without it gives it back with the same value.
fn without_added_keys(mut event: WinEvent) -> WinEvent {
    event.fields_changed();
    let present: Vec<(String, Value)> = ADDED_KEYS
        .iter()
        .filter_map(|key| event.fields.shift_remove_entry(*key))
        .collect();
    if present.is_empty() {
        return event;
    }
    let remapped = additional_fields(&map_event(&event)).unwrap_or_default();
    for (key, value) in present {
        if remapped.get(&key) != Some(&value) {
            event.fields.insert(key, value);
        }
    }
    event
}

/// The `AdditionalFields` object of a mapped row, for the tables that have one.
fn additional_fields(row: &Row) -> Option<Map<String, Value>> {
    let text = |t: &Option<String>| serde_json::from_str(t.as_deref()?).ok();
    let value: Value = match row {
        Row::DeviceProcessEvents(r) => text(&r.additional_fields)?,
        Row::DeviceNetworkEvents(r) => text(&r.additional_fields)?,
        Row::DeviceFileEvents(r) => text(&r.additional_fields)?,
        Row::DeviceLogonEvents(r) => text(&r.additional_fields)?,
        Row::DeviceEvents(r) => text(&r.additional_fields)?,
        Row::IdentityLogonEvents(r) => r.additional_fields.clone()?,
        Row::IdentityDirectoryEvents(r) => r.additional_fields.clone()?,
        Row::IdentityQueryEvents(r) => r.additional_fields.clone()?,
        _ => return None,
    };
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Tables rebuilt from their columns
// ---------------------------------------------------------------------------------------------

/// A record's fields, System block first, as `WinEvent::from_json` orders them.
struct Fields(crate::winevent::Fields);

impl Fields {
    /// The System fields of a record of `provider`/`channel`/`event_id` stored as `row`.
    fn system(row: &Columns, provider: &str, channel: &str, event_id: u32) -> Fields {
        let mut f = Fields(Default::default());
        f.put("Provider_Name", Some(provider.into()));
        f.put("EventID", Some(event_id.into()));
        f.put("Channel", Some(channel.into()));
        f.put("Computer", row.text("DeviceName").map(Value::from));
        f.put("EventRecordID", row.number("ReportId").map(Value::from));
        f.put(
            "TimeCreated_SystemTime",
            row.time("Timestamp")
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true).into()),
        );
        f
    }

    fn put(&mut self, key: &str, value: Option<Value>) {
        if let Some(value) = value {
            self.0.insert(key.to_string(), value);
        }
    }

    fn put_text(&mut self, key: &str, value: Option<&str>) {
        self.put(key, value.map(Value::from));
    }

    fn event(self, row: &Columns, source: &Arc<Path>) -> WinEvent {
        let record_id = row
            .number("ReportId")
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let timestamp = row.time("Timestamp").unwrap_or(DateTime::UNIX_EPOCH);
        WinEvent::from_fields(source.clone(), record_id, timestamp, self.0)
    }
}

/// Registry hives as the mapper spells them out, and as Sysmon and the Security log write them.
const HIVES: [(&str, &str, Option<&str>); 5] = [
    ("HKEY_LOCAL_MACHINE", "HKLM", Some(r"\REGISTRY\MACHINE")),
    ("HKEY_USERS", "HKU", Some(r"\REGISTRY\USER")),
    ("HKEY_CURRENT_USER", "HKCU", None),
    ("HKEY_CLASSES_ROOT", "HKCR", None),
    ("HKEY_CURRENT_CONFIG", "HKCC", None),
];

/// A key with its hive as Sysmon (`native` false: `HKLM\..`) or the Security log (`native`
/// true: `\REGISTRY\MACHINE\..`) writes it.
fn hive_as_written(key: &str, native: bool) -> String {
    for (long, short, registry) in HIVES {
        let Some(rest) = key.strip_prefix(long) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('\\')) {
            continue;
        }
        let head = match (native, registry) {
            (true, Some(registry)) => registry,
            (true, None) => long,
            (false, _) => short,
        };
        return format!("{head}{rest}");
    }
    key.to_string()
}

/// Sysmon's `Details` from Defender's value type and data (the inverse of the mapper's
/// `registry_data`).
fn registry_details(kind: Option<&str>, data: Option<&str>) -> Option<String> {
    match (kind, data) {
        (Some("Dword"), Some(d)) => d.parse::<u32>().ok().map(|n| format!("DWORD (0x{n:08x})")),
        (Some("Qword"), Some(d)) => d
            .parse::<u64>()
            .ok()
            .map(|n| format!("QWORD (0x{:08x}-0x{:08x})", n >> 32, n & 0xffff_ffff)),
        (Some("Binary"), _) => Some("Binary Data".into()),
        (None, Some("")) => Some("(Empty)".into()),
        (None, Some(d)) => Some(d.to_string()),
        _ => None,
    }
}

fn registry(row: &Columns, source: &Arc<Path>) -> Option<WinEvent> {
    let action = row.text("ActionType")?;
    let security = matches!(action, "RegistryValueSet" | "RegistryValueDeleted")
        && (row.text("InitiatingProcessAccountSid").is_some()
            || row.text("PreviousRegistryValueData").is_some()
            || row.text("PreviousRegistryValueName").is_some());
    if security {
        return Some(security_registry(row, action == "RegistryValueDeleted").event(row, source));
    }
    let (event_type, event_id) = match action {
        "RegistryKeyCreated" => ("CreateKey", 12),
        "RegistryKeyDeleted" => ("DeleteKey", 12),
        "RegistryValueDeleted" => ("DeleteValue", 12),
        "RegistryValueSet" => ("SetValue", 13),
        "RegistryKeyRenamed" => ("RenameKey", 14),
        _ => return None,
    };
    let mut f = Fields::system(row, sysmon::PROVIDER, SYSMON_CHANNEL, event_id);
    f.put_text("EventType", Some(event_type));
    f.put(
        "ProcessId",
        row.number("InitiatingProcessId").map(Value::from),
    );
    f.put_text("Image", row.text("InitiatingProcessFolderPath"));
    let key = |column: &str| row.text(column).map(|k| hive_as_written(k, false));
    match action {
        "RegistryValueSet" | "RegistryValueDeleted" => {
            let target = key("RegistryKey").map(|k| match row.text_or_empty("RegistryValueName") {
                Some(value) => format!("{k}\\{value}"),
                None => k,
            });
            f.put("TargetObject", target.map(Value::from));
            if action == "RegistryValueSet" {
                let details = registry_details(
                    row.text("RegistryValueType"),
                    row.text_or_empty("RegistryValueData"),
                );
                f.put("Details", details.map(Value::from));
            }
        }
        "RegistryKeyRenamed" => {
            f.put("TargetObject", key("PreviousRegistryKey").map(Value::from));
            f.put("NewName", key("RegistryKey").map(Value::from));
        }
        _ => f.put("TargetObject", key("RegistryKey").map(Value::from)),
    }
    f.put("User", row.user().map(Value::from));
    Some(f.event(row, source))
}

/// A Security 4657 "registry value was modified" record.
fn security_registry(row: &Columns, deleted: bool) -> Fields {
    let mut f = Fields::system(row, security::PROVIDER, "Security", 4657);
    f.put_text("SubjectUserSid", row.text("InitiatingProcessAccountSid"));
    f.put_text("SubjectUserName", row.text("InitiatingProcessAccountName"));
    f.put_text(
        "SubjectDomainName",
        row.text("InitiatingProcessAccountDomain"),
    );
    f.put(
        "ObjectName",
        row.text("RegistryKey")
            .map(|k| hive_as_written(k, true).into()),
    );
    f.put_text("ObjectValueName", row.text("RegistryValueName"));
    let old = row.text("PreviousRegistryValueData");
    let operation = match (deleted, old) {
        (true, _) => "%%1906",
        (false, Some(_)) => "%%1905",
        (false, None) => "%%1904",
    };
    f.put_text("OperationType", Some(operation));
    f.put_text("OldValue", old);
    f.put_text("NewValue", row.text("RegistryValueData"));
    f.put(
        "ProcessId",
        row.number("InitiatingProcessId")
            .map(|id| format!("{id:#x}").into()),
    );
    f.put_text("ProcessName", row.text("InitiatingProcessFolderPath"));
    f
}

fn image_load(row: &Columns, source: &Arc<Path>) -> Option<WinEvent> {
    if row.text("ActionType")? != "ImageLoaded" {
        return None;
    }
    let mut f = Fields::system(row, sysmon::PROVIDER, SYSMON_CHANNEL, 7);
    f.put(
        "ProcessId",
        row.number("InitiatingProcessId").map(Value::from),
    );
    f.put_text("Image", row.text("InitiatingProcessFolderPath"));
    f.put_text("ImageLoaded", row.text("FolderPath"));
    let hashes: Vec<String> = [("SHA1", "SHA1"), ("MD5", "MD5"), ("SHA256", "SHA256")]
        .iter()
        .filter_map(|(name, column)| {
            Some(format!("{name}={}", row.text(column)?.to_ascii_uppercase()))
        })
        .collect();
    f.put(
        "Hashes",
        (!hashes.is_empty()).then(|| hashes.join(",").into()),
    );
    f.put("User", row.user().map(Value::from));
    Some(f.event(row, source))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::windows::tests::event;

    fn source() -> Arc<Path> {
        Arc::from(Path::new("stored events"))
    }

    /// Maps `ev`, renders the row as a hunting answer and rebuilds the record from it.
    fn round_trip(ev: &WinEvent) -> (Table, Option<WinEvent>) {
        let row = map_event(ev);
        let table = row.table();
        (table, rebuild(table, &row_columns(&row), &source()))
    }

    /// A field as Sigma compares it (text, case-insensitively).
    fn sigma_text(ev: &WinEvent, key: &str) -> Option<String> {
        ev.get_str(key).map(|s| s.to_lowercase())
    }

    /// The hashes of a Sysmon `Hashes` value that a row keeps (not `IMPHASH`).
    fn kept_hashes(ev: &WinEvent) -> Vec<String> {
        let mut parts: Vec<String> = ev
            .get_str("Hashes")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.to_ascii_uppercase().starts_with("IMPHASH"))
            .map(str::to_ascii_uppercase)
            .filter(|p| !p.is_empty())
            .collect();
        parts.sort();
        parts
    }

    /// The rebuilt fields of an approximate table (see the module documentation) that differ
    /// from the record's.
    fn approximate_differences(
        table: Table,
        original: &WinEvent,
        rebuilt: &WinEvent,
    ) -> Vec<String> {
        let mut keys = vec![
            "Channel",
            "EventID",
            "Provider_Name",
            "Computer",
            "EventRecordID",
        ];
        keys.extend(match (table, original.event_id) {
            (Table::DeviceImageLoadEvents, _) => &["ImageLoaded", "Image", "ProcessId", "User"][..],
            (_, 4657) => &[
                "ObjectName",
                "ObjectValueName",
                "NewValue",
                "OldValue",
                "ProcessId",
                "ProcessName",
                "SubjectUserSid",
                "SubjectUserName",
                "SubjectDomainName",
            ][..],
            (_, 14) => &[
                "EventType",
                "TargetObject",
                "NewName",
                "Image",
                "ProcessId",
                "User",
            ][..],
            _ => &[
                "EventType",
                "TargetObject",
                "Details",
                "Image",
                "ProcessId",
                "User",
            ][..],
        });
        let mut out: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                let number = |e: &WinEvent| e.get_i64(k);
                sigma_text(original, k) != sigma_text(rebuilt, k)
                    && !(*k == "ProcessId" && number(original) == number(rebuilt))
            })
            .map(|k| {
                format!(
                    "{k}: {:?} became {:?}",
                    original.fields.get(k),
                    rebuilt.fields.get(k)
                )
            })
            .collect();
        if table == Table::DeviceImageLoadEvents && kept_hashes(original) != kept_hashes(rebuilt) {
            out.push(format!(
                "Hashes: {:?} became {:?}",
                original.fields.get("Hashes"),
                rebuilt.fields.get("Hashes")
            ));
        }
        // The store keeps microseconds; Windows writes tenths of them.
        let micros = |e: &WinEvent| e.timestamp.timestamp_micros();
        if micros(original) != micros(rebuilt) {
            out.push(format!(
                "time {} became {}",
                original.timestamp, rebuilt.timestamp
            ));
        }
        out
    }

    #[test]
    fn records_with_additional_fields_come_back_whole() {
        let cases = [
            event(
                sysmon::PROVIDER,
                SYSMON_CHANNEL,
                1,
                json!({"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami",
                       "ProcessId": 42, "Hashes": "SHA1=AB,MD5=CD", "Empty": null}),
            ),
            // Keys the mapper adds (DesiredAccess, FileOperation, NamedPipeEnd) go away again.
            event(
                sysmon::PROVIDER,
                SYSMON_CHANNEL,
                10,
                json!({"SourceImage": "C:\\t\\m.exe", "TargetImage": "C:\\Windows\\system32\\lsass.exe",
                       "GrantedAccess": "0x1010"}),
            ),
            event(
                sysmon::PROVIDER,
                SYSMON_CHANNEL,
                17,
                json!({"PipeName": "\\x"}),
            ),
            event(
                "Service Control Manager",
                "System",
                7045,
                json!({"ServiceName": "s", "ImagePath": "C:\\s.exe", "StartType": "demand start",
                       "AccountName": "LocalSystem"}),
            ),
            // A record's own field under an added key's name stays (4697 has ServiceAccount).
            event(
                security::PROVIDER,
                "Security",
                4697,
                json!({"ServiceName": "s", "ServiceFileName": "C:\\s.exe", "ServiceAccount": "LocalSystem",
                       "ServiceStartType": "3", "SubjectUserName": "bob"}),
            ),
            event(
                security::PROVIDER,
                "Security",
                4624,
                json!({"LogonType": 3, "TargetUserName": "bob", "IpAddress": "10.0.0.5"}),
            ),
            event(
                "Microsoft-Windows-PowerShell",
                "Microsoft-Windows-PowerShell/Operational",
                4103,
                json!({"ContextInfo": "Host Application = powershell.exe\r\nCommand Name = Invoke-Expression\r\n",
                       "Payload": "x"}),
            ),
            event(
                "Some-Provider",
                "Application",
                1000,
                json!({"Data": ["a", "b"]}),
            ),
        ];
        for original in cases {
            let (table, rebuilt) = round_trip(&original);
            let rebuilt = rebuilt.unwrap_or_else(|| panic!("{table}: not rebuilt"));
            assert_eq!(rebuilt.fields, original.fields, "{table}");
            assert_eq!(rebuilt.event_id, original.event_id);
            assert_eq!(rebuilt.channel, original.channel);
            assert_eq!(rebuilt.provider, original.provider);
            assert_eq!(rebuilt.computer, original.computer);
            assert_eq!(rebuilt.timestamp, original.timestamp);
            assert_eq!(rebuilt.record_id, 42);
            assert_eq!(rebuilt.source, source());
        }
    }

    #[test]
    fn identity_rows_come_back_whole() {
        // 4728 on a domain controller: an IdentityDirectoryEvents row with TO.GROUP added.
        let original = event(
            security::PROVIDER,
            "Security",
            4728,
            json!({"MemberName": "CN=bob,CN=Users,DC=corp", "MemberSid": "S-1-5-21-1-1104",
                   "TargetUserName": "Domain Admins", "SubjectUserName": "admin"}),
        );
        let row = map_event(&original);
        let (table, rebuilt) = round_trip(&original);
        assert!(table.name().starts_with("Identity"), "{table}");
        assert!(
            additional_fields(&row).is_some_and(|f| f.contains_key("TO.GROUP")),
            "{row:?}"
        );
        assert_eq!(rebuilt.map(|e| e.fields), Some(original.fields));
        // The dynamic column may come as an object too.
        let mut columns = row_columns(&row);
        let text = columns["AdditionalFields"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        columns.insert(
            "AdditionalFields".into(),
            serde_json::from_str(&text).unwrap(),
        );
        assert!(rebuild(table, &columns, &source()).is_some());
    }

    #[test]
    fn rows_of_agents_and_other_tables_are_not_records() {
        let original = event(
            sysmon::PROVIDER,
            SYSMON_CHANNEL,
            1,
            json!({"Image": "C:\\a.exe"}),
        );
        let row = map_event(&original);
        let mut columns = row_columns(&row);
        assert!(rebuild(Table::DeviceProcessEvents, &columns, &source()).is_some());
        // An agent's row: its enrolled device's id.
        columns.insert("DeviceId".into(), json!("dev_01j5abcdefghjkmnpqrstvwxyz"));
        assert!(rebuild(Table::DeviceProcessEvents, &columns, &source()).is_none());
        // A Windows device's row without a record in AdditionalFields.
        let mut columns = row_columns(&row);
        columns.insert("AdditionalFields".into(), json!("{\"x\":1}"));
        assert!(rebuild(Table::DeviceProcessEvents, &columns, &source()).is_none());
        columns.insert("AdditionalFields".into(), json!("not json"));
        assert!(rebuild(Table::DeviceProcessEvents, &columns, &source()).is_none());
        columns.remove("AdditionalFields");
        assert!(rebuild(Table::DeviceProcessEvents, &columns, &source()).is_none());
        assert!(rebuild(Table::DeviceInfo, &row_columns(&row), &source()).is_none());
        // A registry row needs its ActionType.
        assert!(rebuild(Table::DeviceRegistryEvents, &Map::new(), &source()).is_none());
    }

    #[test]
    fn registry_records_are_rebuilt_from_columns() {
        let sysmon_event = |id, data| event(sysmon::PROVIDER, SYSMON_CHANNEL, id, data);
        let cases = [
            sysmon_event(
                13,
                json!({"EventType": "SetValue", "ProcessId": 3168, "Image": "C:\\Windows\\regedit.exe",
                       "TargetObject": "HKU\\S-1-5-21-1\\Software\\Classes\\mscfile\\shell\\open\\command\\(Default)",
                       "Details": "C:\\Windows\\System32\\cmd.exe", "User": "PC\\bob"}),
            ),
            sysmon_event(
                13,
                json!({"EventType": "SetValue", "TargetObject": "HKLM\\System\\CurrentControlSet\\Services\\x\\Start",
                       "Details": "DWORD (0x00000d3d)"}),
            ),
            sysmon_event(
                13,
                json!({"EventType": "SetValue", "TargetObject": "HKLM\\S\\Q", "Details": "QWORD (0x00000001-0x0000000a)"}),
            ),
            sysmon_event(
                13,
                json!({"EventType": "SetValue", "TargetObject": "HKCR\\x\\B", "Details": "Binary Data"}),
            ),
            sysmon_event(
                13,
                json!({"EventType": "SetValue", "TargetObject": "HKCU\\x\\E", "Details": "(Empty)"}),
            ),
            sysmon_event(
                12,
                json!({"EventType": "CreateKey", "ProcessId": 4, "Image": "System",
                       "TargetObject": "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"}),
            ),
            sysmon_event(
                12,
                json!({"EventType": "DeleteKey", "TargetObject": "HKLM\\SOFTWARE\\K"}),
            ),
            sysmon_event(
                12,
                json!({"EventType": "DeleteValue", "TargetObject": "HKLM\\SOFTWARE\\K\\V"}),
            ),
            sysmon_event(
                14,
                json!({"EventType": "RenameKey", "TargetObject": "HKLM\\S\\Old", "NewName": "HKLM\\S\\New"}),
            ),
            event(
                security::PROVIDER,
                "Security",
                4657,
                json!({"SubjectUserSid": "S-1-5-18", "SubjectUserName": "PC$", "SubjectDomainName": "CORP",
                       "SubjectLogonId": "0x3e7",
                       "ObjectName": "\\REGISTRY\\MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Lsa",
                       "ObjectValueName": "DisableRestrictedAdmin", "OperationType": "%%1905",
                       "OldValue": "1", "NewValue": "0", "ProcessId": "0x1a4",
                       "ProcessName": "C:\\Windows\\regedit.exe"}),
            ),
            event(
                security::PROVIDER,
                "Security",
                4657,
                json!({"SubjectUserSid": "S-1-5-18", "ObjectName": "\\REGISTRY\\USER\\S-1-5-21\\Run",
                       "ObjectValueName": "x", "OperationType": "%%1906", "ProcessId": "0x4",
                       "ProcessName": "C:\\x.exe"}),
            ),
        ];
        for original in cases {
            let (table, rebuilt) = round_trip(&original);
            assert_eq!(table, Table::DeviceRegistryEvents);
            let rebuilt = rebuilt.expect("rebuilt");
            assert_eq!(
                approximate_differences(table, &original, &rebuilt),
                Vec::<String>::new(),
                "{original:?}\n{rebuilt:?}"
            );
            assert_eq!(rebuilt.event_id, original.event_id);
            assert_eq!(rebuilt.channel, original.channel);
        }
        // Security's own spelling and operation; Sysmon's hive abbreviations.
        let (_, rebuilt) = round_trip(&event(
            security::PROVIDER,
            "Security",
            4657,
            json!({"SubjectUserSid": "S-1-5-18", "ObjectName": "\\REGISTRY\\MACHINE\\SOFTWARE\\K",
                   "ObjectValueName": "V", "NewValue": "1", "ProcessId": "0x1a4"}),
        ));
        let rebuilt = rebuilt.expect("rebuilt");
        assert_eq!(
            rebuilt.fields["ObjectName"],
            "\\REGISTRY\\MACHINE\\SOFTWARE\\K"
        );
        assert_eq!(rebuilt.fields["OperationType"], "%%1904");
        assert_eq!(rebuilt.fields["ProcessId"], "0x1a4");
        assert_eq!(
            hive_as_written("HKEY_LOCAL_MACHINEX\\y", false),
            "HKEY_LOCAL_MACHINEX\\y"
        );
        assert_eq!(hive_as_written("HKEY_CURRENT_USER", false), "HKCU");
        assert_eq!(
            hive_as_written("\\REGISTRY\\A\\x", true),
            "\\REGISTRY\\A\\x"
        );
        assert_eq!(registry_details(Some("Dword"), None), None);
        assert_eq!(registry_details(Some("Dword"), Some("junk")), None);
    }

    #[test]
    fn image_loads_are_rebuilt_from_columns() {
        let original = event(
            sysmon::PROVIDER,
            SYSMON_CHANNEL,
            7,
            json!({"ProcessId": 1200, "Image": "C:\\Windows\\System32\\sysprep\\sysprep.exe",
                   "ImageLoaded": "C:\\Windows\\System32\\sysprep\\CRYPTBASE.dll",
                   "Hashes": "SHA1=AB12,MD5=CD34,SHA256=EF56,IMPHASH=0000",
                   "Signed": "false", "Signature": "", "User": "PC\\bob"}),
        );
        let (table, rebuilt) = round_trip(&original);
        assert_eq!(table, Table::DeviceImageLoadEvents);
        let rebuilt = rebuilt.expect("rebuilt");
        assert_eq!(
            approximate_differences(table, &original, &rebuilt),
            Vec::<String>::new()
        );
        assert_eq!(rebuilt.fields["Hashes"], "SHA1=AB12,MD5=CD34,SHA256=EF56");
        assert_eq!(rebuilt.fields.get("Signed"), None, "not kept");
        assert_eq!(rebuilt.event_id, 7);
        assert_eq!(rebuilt.channel, SYSMON_CHANNEL);
    }

    /// Every record of the EVTX attack samples: mapped, rendered as a hunting answer and
    /// rebuilt, it gives back its fields (tables with `AdditionalFields`) or the fields the
    /// module documentation lists (registry and image loads).
    #[test]
    fn every_attack_sample_record_comes_back() {
        let Some(root) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
            return;
        };
        let (files, errors) = crate::evtx::collect_files(&[root]);
        assert!(errors.is_empty(), "listing the samples: {errors:?}");
        let per_table: Mutex<BTreeMap<Table, usize>> = Mutex::default();
        let problems: Mutex<Vec<String>> = Mutex::default();
        crate::evtx::read_files(
            &files,
            |original| {
                let (table, rebuilt) = round_trip(&original);
                let what = format!(
                    "{} {} record {} ({table})",
                    original.source_name(),
                    original.channel,
                    original.record_id
                );
                let problem = match rebuilt {
                    None => Some("not rebuilt".to_string()),
                    Some(rebuilt) if APPROXIMATE.contains(&table) => {
                        let diff = approximate_differences(table, &original, &rebuilt);
                        (!diff.is_empty()).then(|| diff.join("; "))
                    }
                    Some(rebuilt) => (rebuilt.fields != original.fields
                        || rebuilt.timestamp != original.timestamp
                        || rebuilt.event_id != original.event_id)
                        .then(|| format!("{:?}\nbecame {:?}", original.fields, rebuilt.fields)),
                };
                if let Some(problem) = problem {
                    problems
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{what}: {problem}"));
                }
                *per_table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(table)
                    .or_default() += 1;
            },
            |_, _| {},
        );
        let per_table = per_table.into_inner().unwrap_or_default();
        let problems = problems.into_inner().unwrap_or_default();
        println!("{per_table:?}");
        assert!(
            per_table.contains_key(&Table::DeviceRegistryEvents)
                && per_table.contains_key(&Table::DeviceImageLoadEvents),
            "{per_table:?}"
        );
        assert!(
            problems.is_empty(),
            "{} records differ, e.g.:\n{}",
            problems.len(),
            problems[..problems.len().min(10)].join("\n")
        );
    }
}
