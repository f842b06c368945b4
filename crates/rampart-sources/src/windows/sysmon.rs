//! Sysmon (`Microsoft-Windows-Sysmon/Operational`) → `Device*` tables.
//!
//! | id | table | ActionType |
//! |---|---|---|
//! | 1 | DeviceProcessEvents | `ProcessCreated` |
//! | 2 | DeviceFileEvents | `FileModified` (creation time changed) |
//! | 3 | DeviceNetworkEvents | `ConnectionSuccess` / `InboundConnectionAccepted` (by `Initiated`) |
//! | 4, 16 | DeviceEvents | `SysmonServiceStateChanged`, `SysmonConfigStateChanged` |
//! | 5 | DeviceEvents | `ProcessTerminated` |
//! | 6 | DeviceEvents | `DriverLoad` |
//! | 7 | DeviceImageLoadEvents | `ImageLoaded` |
//! | 8 | DeviceEvents | `CreateRemoteThreadApiCall` |
//! | 9 | DeviceEvents | `RawAccessRead` |
//! | 10 | DeviceEvents | `OpenProcessApiCall` (`DesiredAccess` added to AdditionalFields) |
//! | 11, 15, 29 | DeviceFileEvents | `FileCreated` (15: stream; origin URLs from its Zone.Identifier) |
//! | 12, 13, 14 | DeviceRegistryEvents | `RegistryKeyCreated` / `RegistryKeyDeleted` / `RegistryValueSet` / `RegistryValueDeleted` / `RegistryKeyRenamed` |
//! | 17, 18 | DeviceEvents | `NamedPipeEvent` (`FileOperation`, `NamedPipeEnd` added) |
//! | 19, 20, 21 | DeviceEvents | `WmiEventFilterCreated`, `WmiEventConsumerCreated`, `WmiBindEventFilterToConsumer` (`...Deleted` / `WmiUnbindEventFilterFromConsumer` on deletion) |
//! | 22 | DeviceEvents | `DnsQueryResponse` (`RemoteUrl` = query name) |
//! | 23, 26 | DeviceFileEvents | `FileDeleted` |
//! | 24 | DeviceEvents | `ClipboardChanged` |
//! | 25 | DeviceEvents | `ProcessTampering` |
//! | 27, 28 | DeviceEvents | `FileBlockExecutable`, `FileBlockShredding` |
//!
//! The acting process (`Image`, `ProcessId`, `ProcessGuid`, `User`; `Parent*` for 1,
//! `Source*` for 8/10) fills the `InitiatingProcess*` columns; its creation time comes from
//! the Sysmon process GUID (second precision; dropped when later than the record). `Timestamp` stays the record time; Sysmon's own
//! `UtcTime` is in `AdditionalFields` (and in `ProcessCreationTime` for 1).

use rampart_schema::{
    DeviceEvents, DeviceFileEvents, DeviceImageLoadEvents, DeviceNetworkEvents,
    DeviceProcessEvents, DeviceRegistryEvents, Row,
};
use serde_json::Value;

use super::common::*;
use crate::winevent::WinEvent;

pub(crate) const PROVIDER: &str = "Microsoft-Windows-Sysmon";

/// The row of a Sysmon record, or `None` for an event id without a specific mapping.
pub(crate) fn map(ev: &WinEvent) -> Option<Row> {
    let row = match ev.event_id {
        1 => process_created(ev).into(),
        2 => file(ev, "FileModified").into(),
        3 => network(ev).into(),
        4 => device::<DeviceEvents>(ev, "SysmonServiceStateChanged", &[]).into(),
        5 => target_only(ev, "ProcessTerminated").into(),
        6 => driver_loaded(ev).into(),
        7 => image_loaded(ev).into(),
        8 => api_call(ev, "CreateRemoteThreadApiCall", &[]).into(),
        9 => by_actor(ev, "RawAccessRead", &[]).into(),
        10 => {
            let access: Value = ev.get_i64("GrantedAccess").into();
            api_call(ev, "OpenProcessApiCall", &[("DesiredAccess", access)]).into()
        }
        11 | 15 | 29 => file(ev, "FileCreated").into(),
        12..=14 => registry(ev).into(),
        16 => device::<DeviceEvents>(ev, "SysmonConfigStateChanged", &[]).into(),
        17 | 18 => pipe(ev).into(),
        19..=21 => wmi(ev).into(),
        22 => dns(ev).into(),
        23 | 26 => file(ev, "FileDeleted").into(),
        24 => by_actor(ev, "ClipboardChanged", &[]).into(),
        25 => target_only(ev, "ProcessTampering").into(),
        27 => blocked_file(ev, "FileBlockExecutable").into(),
        28 => blocked_file(ev, "FileBlockShredding").into(),
        _ => return None,
    };
    Some(row)
}

/// A process Sysmon names by `{prefix}Image`, `{prefix}ProcessId`, `{prefix}ProcessGuid`
/// (or `GUID`), `{prefix}CommandLine` and `{prefix}User`.
fn process(ev: &WinEvent, prefix: &str) -> Proc {
    // Joined, not `format!`ed: six names per record, where the formatting machinery cost more
    // than the lookups.
    let key = |name: &str| [prefix, name].concat();
    let guid = first_text(ev, &[&key("ProcessGuid"), &key("ProcessGUID")]);
    Proc {
        id: ev.get_i64(&key("ProcessId")),
        command_line: text(ev, &key("CommandLine")),
        // A start time after the record is not one (the GUID of `System` carries none).
        creation_time: guid
            .as_deref()
            .and_then(sysmon_guid_time)
            .filter(|t| *t <= ev.timestamp + chrono::TimeDelta::minutes(1)),
        ..Proc::default()
    }
    .with_image(known(ev, &key("Image")))
    .with_user(trimmed(ev, &key("User")))
}

/// `Hashes` (or 15's `Hash`).
fn file_hashes(ev: &WinEvent) -> Hashes {
    first_text(ev, &["Hashes", "Hash"])
        .map(|h| hashes(&h))
        .unwrap_or_default()
}

fn process_created(ev: &WinEvent) -> DeviceProcessEvents {
    let mut row: DeviceProcessEvents = device_by(ev, "ProcessCreated", &[], &process(ev, "Parent"));
    let mut p = process(ev, "");
    p.creation_time = text(ev, "UtcTime")
        .and_then(|t| sysmon_time(&t))
        .or(p.creation_time);
    p.hashes = file_hashes(ev);
    p.company = known(ev, "Company");
    p.product = known(ev, "Product");
    p.product_version = known(ev, "FileVersion");
    p.description = known(ev, "Description");
    p.original_file_name = known(ev, "OriginalFileName");
    p.integrity_level = trimmed(ev, "IntegrityLevel").and_then(|l| integrity_level(&l));
    p.logon_id = logon_id(ev, "LogonId");
    p.session_id = ev.get_i64("TerminalSessionId");
    set_created_process(&mut row, p);
    row
}

/// A `DeviceEvents` row whose initiating process is the record's `Image`.
fn by_actor(ev: &WinEvent, action: &str, extras: Extras) -> DeviceEvents {
    device_by(ev, action, extras, &process(ev, ""))
}

/// A `DeviceEvents` row about the record's process itself (termination, tampering): it goes
/// in the target columns, as Sysmon does not say who acted.
fn target_only(ev: &WinEvent, action: &str) -> DeviceEvents {
    let mut row: DeviceEvents = device(ev, action, &[]);
    set_target_process(&mut row, process(ev, ""));
    row
}

fn api_call(ev: &WinEvent, action: &str, extras: Extras) -> DeviceEvents {
    let mut row: DeviceEvents = device_by(ev, action, extras, &process(ev, "Source"));
    set_target_process(&mut row, process(ev, "Target"));
    row
}

fn driver_loaded(ev: &WinEvent) -> DeviceEvents {
    let mut row: DeviceEvents = device(ev, "DriverLoad", &[]);
    row.set_file(text(ev, "ImageLoaded"), file_hashes(ev));
    row
}

fn blocked_file(ev: &WinEvent, action: &str) -> DeviceEvents {
    let mut row = by_actor(ev, action, &[]);
    row.set_file(text(ev, "TargetFilename"), file_hashes(ev));
    row
}

fn image_loaded(ev: &WinEvent) -> DeviceImageLoadEvents {
    let mut row: DeviceImageLoadEvents = device_by(ev, "ImageLoaded", &[], &process(ev, ""));
    row.set_file(text(ev, "ImageLoaded"), file_hashes(ev));
    row
}

fn file(ev: &WinEvent, action: &str) -> DeviceFileEvents {
    let mut row: DeviceFileEvents = device_by(ev, action, &[], &process(ev, ""));
    row.set_file(text(ev, "TargetFilename"), file_hashes(ev));
    // 15: the stream's content, for a Zone.Identifier `[ZoneTransfer] ZoneId=3 HostUrl=..`.
    if let Some(contents) = text(ev, "Contents") {
        let value = |name: &str| {
            contents
                .split_whitespace()
                .find_map(|t| t.strip_prefix(name))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        row.file_origin_url = value("HostUrl=");
        row.file_origin_referrer_url = value("ReferrerUrl=");
    }
    row
}

/// One end of a Sysmon connection.
struct Endpoint {
    ip: Option<String>,
    port: Option<i32>,
    hostname: Option<String>,
}

impl Endpoint {
    fn read(ev: &WinEvent, side: &str) -> Endpoint {
        Endpoint {
            ip: ip(ev, &format!("{side}Ip")),
            port: port(ev, &format!("{side}Port")),
            hostname: trimmed(ev, &format!("{side}Hostname")),
        }
    }

    fn is_named(&self, host: &str) -> bool {
        self.hostname
            .as_deref()
            .and_then(|h| h.split('.').next())
            .is_some_and(|h| !host.is_empty() && h.eq_ignore_ascii_case(host))
    }
}

/// (local, remote). Outbound records put the local end in `Source*`. Inbound ones differ by
/// Sysmon version (some keep the local end in `Source*`, others in `Destination*`), so the
/// local end is the one named like the computer, else the one on the lower (listening) port.
fn ends(ev: &WinEvent, inbound: bool) -> (Endpoint, Endpoint) {
    let (source, destination) = (
        Endpoint::read(ev, "Source"),
        Endpoint::read(ev, "Destination"),
    );
    if !inbound {
        return (source, destination);
    }
    let host = ev.computer.split('.').next().unwrap_or_default();
    match (source.is_named(host), destination.is_named(host)) {
        (true, false) => (source, destination),
        (false, true) => (destination, source),
        _ if source.port.unwrap_or(0) <= destination.port.unwrap_or(0) => (source, destination),
        _ => (destination, source),
    }
}

fn network(ev: &WinEvent) -> DeviceNetworkEvents {
    let inbound = flag(ev, "Initiated") == Some(false);
    let action = if inbound {
        "InboundConnectionAccepted"
    } else {
        "ConnectionSuccess"
    };
    let mut row: DeviceNetworkEvents = device_by(ev, action, &[], &process(ev, ""));
    let (local, remote) = ends(ev, inbound);
    row.local_ip_type = ip_type(local.ip.as_deref());
    row.remote_ip_type = ip_type(remote.ip.as_deref());
    (row.local_ip, row.local_port) = (local.ip, local.port);
    (row.remote_ip, row.remote_port, row.remote_url) = (remote.ip, remote.port, remote.hostname);
    row.protocol = trimmed(ev, "Protocol").and_then(|p| protocol_name(&p));
    row
}

/// Sysmon's registry value `Details` as (type, data) in Defender's terms: `DWORD (0x00000001)`
/// → (`Dword`, `1`), `QWORD (0x00000000-0x00000001)` → (`Qword`, `1`), `Binary Data` →
/// (`Binary`, none: Sysmon does not log the bytes), `(Empty)` → empty text; other text as is.
fn registry_data(details: &str) -> (Option<String>, Option<String>) {
    let d = details.trim();
    let number = |inner: &str| parse_hex(inner);
    if let Some(inner) = d.strip_prefix("DWORD (").and_then(|s| s.strip_suffix(')')) {
        return (Some("Dword".into()), number(inner).map(|n| n.to_string()));
    }
    if let Some(inner) = d.strip_prefix("QWORD (").and_then(|s| s.strip_suffix(')')) {
        let value = inner
            .split_once('-')
            .and_then(|(hi, lo)| Some((number(hi)? << 32) | number(lo)?));
        return (Some("Qword".into()), value.map(|n| n.to_string()));
    }
    match d {
        "Binary Data" => (Some("Binary".into()), None),
        "(Empty)" => (None, Some(String::new())),
        _ => (None, Some(details.to_string())),
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u64::from_str_radix(digits, 16).ok()
}

fn registry(ev: &WinEvent) -> DeviceRegistryEvents {
    let event_type = trimmed(ev, "EventType").unwrap_or_default();
    let action = match event_type.as_str() {
        "CreateKey" => "RegistryKeyCreated",
        "DeleteKey" => "RegistryKeyDeleted",
        "SetValue" | "CreateValue" => "RegistryValueSet",
        "DeleteValue" => "RegistryValueDeleted",
        "RenameKey" => "RegistryKeyRenamed",
        _ => match ev.event_id {
            12 => "RegistryKeyCreated",
            13 => "RegistryValueSet",
            _ => "RegistryKeyRenamed",
        },
    };
    let mut row: DeviceRegistryEvents = device_by(ev, action, &[], &process(ev, ""));
    let target = trimmed(ev, "TargetObject").map(|t| registry_key(&t));
    match action {
        "RegistryValueSet" | "RegistryValueDeleted" => {
            if let Some((key, value)) = target.map(|t| split_registry_value(&t)) {
                row.registry_key = Some(key);
                row.registry_value_name = value;
            }
            if action == "RegistryValueSet"
                && let Some(details) = text(ev, "Details")
            {
                (row.registry_value_type, row.registry_value_data) = registry_data(&details);
            }
        }
        "RegistryKeyRenamed" => {
            // `NewName` is a full path; a bare name renames within the old key's parent.
            let new = trimmed(ev, "NewName").map(|n| match (n.contains('\\'), &target) {
                (false, Some(old)) => match old.rsplit_once('\\') {
                    Some((parent, _)) => format!("{parent}\\{n}"),
                    None => n,
                },
                _ => registry_key(&n),
            });
            row.previous_registry_key = target;
            row.registry_key = new;
        }
        _ => row.registry_key = target,
    }
    row
}

fn pipe(ev: &WinEvent) -> DeviceEvents {
    let (operation, end) = if ev.event_id == 17 {
        ("File created", "Server")
    } else {
        ("File opened", "Client")
    };
    by_actor(
        ev,
        "NamedPipeEvent",
        &[
            ("FileOperation", operation.into()),
            ("NamedPipeEnd", end.into()),
        ],
    )
}

fn wmi(ev: &WinEvent) -> DeviceEvents {
    let deleted = trimmed(ev, "Operation").is_some_and(|o| o.eq_ignore_ascii_case("Deleted"));
    let action = match (ev.event_id, deleted) {
        (19, false) => "WmiEventFilterCreated",
        (19, true) => "WmiEventFilterDeleted",
        (20, false) => "WmiEventConsumerCreated",
        (20, true) => "WmiEventConsumerDeleted",
        (_, false) => "WmiBindEventFilterToConsumer",
        (_, true) => "WmiUnbindEventFilterFromConsumer",
    };
    by_actor(ev, action, &[])
}

fn dns(ev: &WinEvent) -> DeviceEvents {
    let mut row = by_actor(ev, "DnsQueryResponse", &[]);
    row.remote_url = trimmed(ev, "QueryName");
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::map_event;
    use crate::windows::tests::event;
    use serde_json::json;

    fn sysmon(id: u32, data: Value) -> Row {
        map_event(&event(
            PROVIDER,
            "Microsoft-Windows-Sysmon/Operational",
            id,
            data,
        ))
    }

    #[test]
    fn process_create() {
        let Row::DeviceProcessEvents(r) = sysmon(
            1,
            json!({
                "UtcTime": "2019-04-27 15:57:53.368",
                "ProcessGuid": "{365abb72-7c01-5cc4-0000-00102b3e0c00}",
                "ProcessId": 2680,
                "Image": "C:\\Users\\IEUser\\Downloads\\Flash_update.exe",
                "FileVersion": "?", "Description": "Flash", "Company": "?",
                "OriginalFileName": "Wmiprvse.exe",
                "CommandLine": "\"C:\\Users\\IEUser\\Downloads\\Flash_update.exe\" ",
                "User": "IEWIN7\\IEUser", "LogonId": "0xf4be", "TerminalSessionId": 1,
                "IntegrityLevel": "High",
                "Hashes": "SHA1=B4E5,MD5=4289,SHA256=1A06",
                "ParentProcessGuid": "{365abb72-7acc-5cc4-0000-0010b2470300}",
                "ParentProcessId": 2772, "ParentImage": "C:\\Windows\\explorer.exe",
                "ParentCommandLine": "C:\\Windows\\Explorer.EXE"
            }),
        ) else {
            panic!("not a process event")
        };
        assert_eq!(r.action_type.as_deref(), Some("ProcessCreated"));
        assert_eq!(r.file_name.as_deref(), Some("Flash_update.exe"));
        assert_eq!(
            r.folder_path.as_deref(),
            Some("C:\\Users\\IEUser\\Downloads\\Flash_update.exe")
        );
        assert_eq!(r.process_id, Some(2680));
        assert!(r.process_command_line.unwrap().contains("Flash_update"));
        assert_eq!(
            r.process_creation_time.unwrap().to_rfc3339(),
            "2019-04-27T15:57:53.368+00:00"
        );
        assert_eq!(r.sha1.as_deref(), Some("b4e5"));
        assert_eq!(r.md5.as_deref(), Some("4289"));
        assert_eq!(r.sha256.as_deref(), Some("1a06"));
        assert_eq!(r.process_version_info_company_name, None);
        assert_eq!(
            r.process_version_info_file_description.as_deref(),
            Some("Flash")
        );
        assert_eq!(
            r.process_version_info_original_file_name.as_deref(),
            Some("Wmiprvse.exe")
        );
        assert_eq!(r.process_integrity_level.as_deref(), Some("High"));
        assert_eq!(r.account_domain.as_deref(), Some("IEWIN7"));
        assert_eq!(r.account_name.as_deref(), Some("IEUser"));
        assert_eq!(r.logon_id, Some(0xf4be));
        assert_eq!(r.created_process_session_id, Some(1));
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("explorer.exe")
        );
        assert_eq!(r.initiating_process_id, Some(2772));
        assert_eq!(
            r.initiating_process_command_line.as_deref(),
            Some("C:\\Windows\\Explorer.EXE")
        );
        assert_eq!(
            r.initiating_process_creation_time.unwrap().to_rfc3339(),
            "2019-04-27T15:52:44+00:00"
        );
        assert_eq!(r.device_name.as_deref(), Some("ws01.corp.local"));
        assert_eq!(r.report_id, Some(42));
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(
            raw["Channel"],
            json!("Microsoft-Windows-Sysmon/Operational")
        );
        assert_eq!(raw["EventID"], json!(1));
    }

    #[test]
    fn network_connection_both_directions() {
        let out = sysmon(
            3,
            json!({"Image": "C:\\x\\powershell.exe", "ProcessId": 7, "User": "D\\u",
                "Protocol": "tcp", "Initiated": "true",
                "SourceIp": "10.0.2.15", "SourcePort": 49727,
                "DestinationIp": "172.217.17.132", "DestinationHostname": "ams.1e100.net",
                "DestinationPort": 80}),
        );
        let Row::DeviceNetworkEvents(r) = out else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ConnectionSuccess"));
        assert_eq!(r.remote_ip.as_deref(), Some("172.217.17.132"));
        assert_eq!(r.remote_port, Some(80));
        assert_eq!(r.remote_url.as_deref(), Some("ams.1e100.net"));
        assert_eq!(r.remote_ip_type.as_deref(), Some("Public"));
        assert_eq!(r.local_ip.as_deref(), Some("10.0.2.15"));
        assert_eq!(r.local_port, Some(49727));
        assert_eq!(r.protocol.as_deref(), Some("Tcp"));
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("powershell.exe")
        );
        assert_eq!(r.initiating_process_account_name.as_deref(), Some("u"));

        // Inbound, with the local end in Destination (named like the computer).
        let Row::DeviceNetworkEvents(r) = sysmon(
            3,
            json!({"Image": "System", "Protocol": "tcp", "Initiated": false,
                "SourceIp": "10.0.2.17", "SourcePort": 49851,
                "DestinationIp": "10.0.2.15", "DestinationHostname": "WS01", "DestinationPort": 445}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("InboundConnectionAccepted"));
        assert_eq!(r.remote_ip.as_deref(), Some("10.0.2.17"));
        assert_eq!(r.local_port, Some(445));
        // Inbound, with the local (listening) end in Source.
        let Row::DeviceNetworkEvents(r) = sysmon(
            3,
            json!({"Initiated": false, "SourceIp": "127.0.0.2", "SourcePort": 3389,
                "DestinationIp": "127.0.0.1", "DestinationPort": 49186}),
        ) else {
            panic!()
        };
        assert_eq!(r.local_port, Some(3389));
        assert_eq!(r.remote_port, Some(49186));
    }

    #[test]
    fn file_create_and_stream() {
        let Row::DeviceFileEvents(r) = sysmon(
            11,
            json!({"Image": "C:\\Windows\\Explorer.EXE", "ProcessId": 2772,
                "TargetFilename": "C:\\Users\\IEUser\\Downloads\\Flash_update.exe",
                "CreationUtcTime": "2019-04-27 15:57:25.868"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("FileCreated"));
        assert_eq!(r.file_name.as_deref(), Some("Flash_update.exe"));
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("Explorer.EXE")
        );
        assert_eq!(r.initiating_process_id, Some(2772));
        let Row::DeviceFileEvents(r) = sysmon(
            15,
            json!({"TargetFilename": "C:\\d\\a.exe:Zone.Identifier", "Hash": "SHA256=AB",
                "Contents": "[ZoneTransfer]  ZoneId=3  ReferrerUrl=https://r/  HostUrl=https://h/a.exe  "}),
        ) else {
            panic!()
        };
        assert_eq!(r.file_name.as_deref(), Some("a.exe:Zone.Identifier"));
        assert_eq!(r.sha256.as_deref(), Some("ab"));
        assert_eq!(r.file_origin_url.as_deref(), Some("https://h/a.exe"));
        assert_eq!(r.file_origin_referrer_url.as_deref(), Some("https://r/"));
        let Row::DeviceFileEvents(r) = sysmon(23, json!({"TargetFilename": "C:\\x.txt"})) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("FileDeleted"));
    }

    #[test]
    fn registry_events() {
        let Row::DeviceRegistryEvents(r) = sysmon(
            13,
            json!({"EventType": "SetValue", "Image": "C:\\a\\NvSmart.exe",
                "TargetObject": "HKU\\S-1-5-21-1\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\svchost",
                "Details": "C:\\Users\\IEUser\\AppData\\Roaming\\svchost.exe"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("RegistryValueSet"));
        assert_eq!(
            r.registry_key.as_deref(),
            Some("HKEY_USERS\\S-1-5-21-1\\Software\\Microsoft\\Windows\\CurrentVersion\\Run")
        );
        assert_eq!(r.registry_value_name.as_deref(), Some("svchost"));
        assert_eq!(
            r.registry_value_data.as_deref(),
            Some("C:\\Users\\IEUser\\AppData\\Roaming\\svchost.exe")
        );
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("NvSmart.exe")
        );
        let Row::DeviceRegistryEvents(r) = sysmon(
            13,
            json!({"EventType": "SetValue", "TargetObject": "HKLM\\S\\V", "Details": "DWORD (0x00000010)"}),
        ) else {
            panic!()
        };
        assert_eq!(r.registry_value_type.as_deref(), Some("Dword"));
        assert_eq!(r.registry_value_data.as_deref(), Some("16"));
        let Row::DeviceRegistryEvents(r) = sysmon(
            12,
            json!({"EventType": "CreateKey", "TargetObject": "HKLM\\SOFTWARE\\K"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("RegistryKeyCreated"));
        assert_eq!(
            r.registry_key.as_deref(),
            Some("HKEY_LOCAL_MACHINE\\SOFTWARE\\K")
        );
        assert_eq!(r.registry_value_name, None);
        let Row::DeviceRegistryEvents(r) = sysmon(
            14,
            json!({"EventType": "RenameKey", "TargetObject": "HKLM\\S\\Old", "NewName": "New"}),
        ) else {
            panic!()
        };
        assert_eq!(
            r.previous_registry_key.as_deref(),
            Some("HKEY_LOCAL_MACHINE\\S\\Old")
        );
        assert_eq!(
            r.registry_key.as_deref(),
            Some("HKEY_LOCAL_MACHINE\\S\\New")
        );
        assert_eq!(
            registry_data("QWORD (0x00000001-0x00000002)"),
            (Some("Qword".into()), Some(((1u64 << 32) | 2).to_string()))
        );
        assert_eq!(registry_data("DWORD (junk)"), (Some("Dword".into()), None));
    }

    #[test]
    fn api_calls_pipes_and_others() {
        let Row::DeviceEvents(r) = sysmon(
            10,
            json!({"SourceImage": "C:\\t\\mimikatz.exe", "SourceProcessId": 1,
                "SourceProcessGUID": "{365abb72-7c01-5cc4-0000-0010f9530c00}",
                "TargetImage": "C:\\Windows\\system32\\lsass.exe", "TargetProcessId": 600,
                "GrantedAccess": "0x1010"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("OpenProcessApiCall"));
        assert_eq!(r.file_name.as_deref(), Some("lsass.exe"));
        assert_eq!(r.process_id, Some(600));
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("mimikatz.exe")
        );
        assert!(r.initiating_process_creation_time.is_some());
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["DesiredAccess"], json!(0x1010));
        assert_eq!(raw["GrantedAccess"], json!("0x1010"));

        let Row::DeviceEvents(r) = sysmon(17, json!({"PipeName": "\\kekeo", "Image": "C:\\k.exe"}))
        else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("NamedPipeEvent"));
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["NamedPipeEnd"], json!("Server"));

        let Row::DeviceEvents(r) = sysmon(21, json!({"Operation": "Created"})) else {
            panic!()
        };
        assert_eq!(
            r.action_type.as_deref(),
            Some("WmiBindEventFilterToConsumer")
        );
        let Row::DeviceEvents(r) = sysmon(22, json!({"QueryName": "evil.example"})) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("DnsQueryResponse"));
        assert_eq!(r.remote_url.as_deref(), Some("evil.example"));
        let Row::DeviceEvents(r) = sysmon(5, json!({"Image": "C:\\a.exe", "ProcessId": 5})) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ProcessTerminated"));
        assert_eq!(r.process_id, Some(5));
        let Row::DeviceImageLoadEvents(r) = sysmon(
            7,
            json!({"ImageLoaded": "C:\\w\\winmm.dll", "Hashes": "MD5=AA"}),
        ) else {
            panic!()
        };
        assert_eq!(r.file_name.as_deref(), Some("winmm.dll"));
        assert_eq!(r.md5.as_deref(), Some("aa"));
    }

    #[test]
    fn garbage_leaves_columns_empty() {
        let Row::DeviceProcessEvents(r) = sysmon(
            1,
            json!({"ProcessId": "x", "Image": 5, "Hashes": [1], "UtcTime": "soon", "LogonId": "0xzz",
                "ProcessGuid": "{}", "User": ""}),
        ) else {
            panic!()
        };
        assert_eq!(r.process_id, None);
        assert_eq!(r.file_name.as_deref(), Some("5"));
        assert_eq!(r.process_creation_time, None);
        assert_eq!(r.logon_id, None);
        assert_eq!(r.account_name, None);
    }
}
