//! Windows event records → hunting-schema rows.
//!
//! [`map_event`] turns one [`WinEvent`] into exactly one [`Row`]. Records with a concept in
//! Defender's advanced-hunting schema go to that table, with Defender's `ActionType` where it
//! has one; every other record becomes a `DeviceEvents` row, so nothing is dropped.
//!
//! | module | provider | tables |
//! |---|---|---|
//! | `sysmon` | `Microsoft-Windows-Sysmon` | DeviceProcessEvents, DeviceNetworkEvents, DeviceFileEvents, DeviceRegistryEvents, DeviceImageLoadEvents, DeviceEvents |
//! | `security` | `Microsoft-Windows-Security-Auditing` (device events) | DeviceProcessEvents, DeviceLogonEvents, DeviceNetworkEvents, DeviceRegistryEvents, DeviceEvents |
//! | `identity` | `Microsoft-Windows-Security-Auditing` (domain controller) | IdentityLogonEvents, IdentityDirectoryEvents, IdentityQueryEvents |
//! | `system` | `Microsoft-Windows-Eventlog`, `Service Control Manager` | DeviceEvents |
//! | `powershell` | `Microsoft-Windows-PowerShell`, `PowerShell` | DeviceEvents |
//! | `defender` | `Microsoft-Windows-Windows Defender` | DeviceEvents |
//!
//! Each module's documentation lists its event ids and `ActionType`s; `common` holds the
//! shared column fillers and value parsers.
//!
//! # Columns every row gets
//!
//! - `Timestamp`: the record's time (`TimeCreated`), always, for every provider. Times a
//!   provider writes itself (Sysmon `UtcTime`, ...) stay in `AdditionalFields` or go to their
//!   own column (`ProcessCreationTime`).
//! - `DeviceName`: `Computer`, lowercased (Defender shows names in lower case; the record gives
//!   the FQDN or the NetBIOS name, whichever the machine used).
//! - `DeviceId`: 32 lowercase hex digits, the FNV-1a 128-bit hash of that lowercased name: stable
//!   across runs and versions, the same for every record of a machine.
//! - `ReportId`: the `EventRecordID` of the record's XML (a number in `Device*` tables, text in
//!   `Identity*` tables); exported logs renumber the record headers, the XML keeps the original.
//! - `AdditionalFields`: the record's whole field map ([`WinEvent::fields`], which includes
//!   `Channel`, `EventID` and `Provider_Name`), plus a few keys under Defender's names (e.g.
//!   `DesiredAccess`, `Command`, `TO.GROUP`) that never replace a record field. JSON text in
//!   `Device*` tables, a JSON object in `Identity*` tables. `DeviceRegistryEvents` and
//!   `DeviceImageLoadEvents` have no such column: their rows keep only the mapped columns.
//! - Paths: `FolderPath`/`InitiatingProcessFolderPath` hold the full path including the file
//!   name, as Defender's data does; `FileName` is its last component. Hashes are lowercase;
//!   registry hives are spelt out (`HKEY_LOCAL_MACHINE\..`); IP addresses are canonical text.
//!
//! # Records without a specific mapping
//!
//! A `DeviceEvents` row with `ActionType` = `<Provider_Name>/<EventID>`, e.g.
//! `Microsoft-Windows-Sysmon/255` or `Service Control Manager/7036` (the channel stands in for
//! a missing provider name), and the shared columns above; the record's data is in
//! `AdditionalFields`.
//!
//! Mapping never fails and never panics: a malformed value leaves its column null.
//!
//! # Back to records
//!
//! [`rebuild::rebuild`] turns a stored row back into the record it was mapped from, so Sigma
//! rules can be evaluated on stored data: exactly for the tables with `AdditionalFields`, and
//! as far as the columns allow for `DeviceRegistryEvents` and `DeviceImageLoadEvents` (its
//! documentation lists the fields that come back).

mod common;
mod defender;
mod identity;
mod powershell;
pub mod rebuild;
mod security;
mod sysmon;
mod system;

use rampart_schema::{DeviceEvents, Row};

use crate::winevent::WinEvent;

/// Maps one record to its row.
pub fn map_event(event: &WinEvent) -> Row {
    let specific = match event.provider.as_str() {
        sysmon::PROVIDER => sysmon::map(event),
        security::PROVIDER => security::map(event),
        system::EVENTLOG | system::SERVICE_CONTROL_MANAGER => system::map(event),
        powershell::PROVIDER | powershell::CLASSIC_PROVIDER => powershell::map(event),
        defender::PROVIDER => defender::map(event),
        _ => None,
    };
    specific.unwrap_or_else(|| fallback(event))
}

/// The `ActionType` of a record without a specific mapping: `<Provider_Name>/<EventID>`.
fn fallback_action_type(event: &WinEvent) -> String {
    let source = [&event.provider, &event.channel]
        .into_iter()
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .unwrap_or("Unknown");
    format!("{source}/{}", event.event_id)
}

fn fallback(event: &WinEvent) -> Row {
    common::device::<DeviceEvents>(event, &fallback_action_type(event), &[]).into()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use chrono::DateTime;
    use serde_json::{Value, json};

    use super::*;

    /// A Security-log record of `id`, mapped.
    pub(crate) fn security(id: u32, data: Value) -> Row {
        map_event(&event(security::PROVIDER, "Security", id, data))
    }

    /// A record of `provider` as `WinEvent::from_json` builds it: computer `WS01.corp.local`,
    /// record id 42, writer process 2796, event data `data`.
    pub(crate) fn event(provider: &str, channel: &str, id: u32, data: Value) -> WinEvent {
        let json = json!({"Event": {
            "System": {
                "Provider_attributes": {"Name": provider},
                "EventID": id,
                "EventRecordID": 42,
                "Channel": channel,
                "Computer": "WS01.corp.local",
                "Execution_attributes": {"ProcessID": 2796, "ThreadID": 1},
                "Security_attributes": {"UserID": "S-1-5-18"},
            },
            "EventData": data,
        }});
        WinEvent::from_json(
            Arc::from(Path::new("t.evtx")),
            42,
            DateTime::from_timestamp(1_556_380_673, 0).unwrap_or_default(),
            json,
        )
        .expect("a test record has an Event element")
    }

    #[test]
    fn unknown_records_fall_back_to_device_events() {
        let ev = event(
            "Microsoft-Windows-Sysmon",
            "Sysmon",
            255,
            json!({"ID": "x"}),
        );
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!("fallback is DeviceEvents")
        };
        assert_eq!(
            r.action_type.as_deref(),
            Some("Microsoft-Windows-Sysmon/255")
        );
        assert_eq!(r.device_name.as_deref(), Some("ws01.corp.local"));
        assert_eq!(r.device_id.as_deref().map(str::len), Some(32));
        assert_eq!(r.report_id, Some(42));
        assert_eq!(r.timestamp, Some(ev.timestamp));
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["ID"], "x");
        assert_eq!(raw["Channel"], "Sysmon");

        let mut ev = event("", "Application", 1000, json!({}));
        ev.computer = String::new();
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("Application/1000"));
        assert_eq!(r.device_name, None);
        assert_eq!(r.device_id, None);
    }

    #[test]
    fn device_id_follows_the_name_case_insensitively() {
        let a = event("X", "Y", 1, json!({}));
        let mut b = a.clone();
        b.computer = "ws01.CORP.local".into();
        let id = |e: &WinEvent| match map_event(e) {
            Row::DeviceEvents(r) => r.device_id,
            _ => None,
        };
        assert_eq!(id(&a), id(&b));
    }

    /// Every mapped provider and event id, fed values of every JSON type, maps without panic.
    #[test]
    fn hostile_values_never_panic() {
        let sysmon_ids: Vec<u32> = (0..=30).collect();
        let security_ids: Vec<u32> = (4600..=4800).chain(5130..=5160).collect();
        let providers: [(&str, &[u32]); 7] = [
            (sysmon::PROVIDER, &sysmon_ids),
            (security::PROVIDER, &security_ids),
            (system::EVENTLOG, &[104, 1102, 1100]),
            (system::SERVICE_CONTROL_MANAGER, &[7045, 7036]),
            (powershell::PROVIDER, &[4103, 4104, 4100]),
            (powershell::CLASSIC_PROVIDER, &[400, 403, 600, 800, 1]),
            (
                defender::PROVIDER,
                &[1006, 1007, 1015, 1116, 1117, 1119, 5001, 5007, 2],
            ),
        ];
        let keys = [
            "Image",
            "ProcessId",
            "ProcessGuid",
            "User",
            "Hashes",
            "UtcTime",
            "TargetObject",
            "Details",
            "NewName",
            "EventType",
            "Initiated",
            "SourceIp",
            "SourcePort",
            "DestinationIp",
            "DestinationPort",
            "DestinationHostname",
            "SourceHostname",
            "Protocol",
            "TargetFilename",
            "Contents",
            "LogonType",
            "IpAddress",
            "IpPort",
            "Status",
            "SubStatus",
            "TargetUserName",
            "TargetDomainName",
            "NewProcessId",
            "NewProcessName",
            "MandatoryLabel",
            "TokenElevationType",
            "Properties",
            "MemberName",
            "ObjectDN",
            "ServiceName",
            "ImagePath",
            "ServiceFileName",
            "ContextInfo",
            "Payload",
            "Data",
            "Path",
            "ShareLocalPath",
            "RelativeTargetName",
            "Direction",
            "ObjectServer",
            "GrantedAccess",
            "TargetSid",
            "Workstation",
        ];
        let values = [
            json!(null),
            json!(""),
            json!("-"),
            json!("\\"),
            json!("CN="),
            json!("0x"),
            json!("é\\ü@"),
            json!(-1),
            json!(u64::MAX),
            json!(1.5),
            json!(true),
            json!([1, "a"]),
            json!({"#text": ["a=b", "CommandInvocation("]}),
            json!("DWORD ("),
            json!("QWORD (0x1-"),
            json!("{ffffffff-ffff-ffff}"),
            json!("file:_;containerfile:_"),
        ];
        for (provider, ids) in providers {
            for &id in ids {
                for value in &values {
                    let data: serde_json::Map<String, Value> = keys
                        .iter()
                        .map(|k| (k.to_string(), value.clone()))
                        .collect();
                    let ev = event(provider, "C", id, Value::Object(data));
                    let _row = map_event(&ev);
                }
            }
        }
    }
}
