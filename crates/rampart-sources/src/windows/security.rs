//! Security log (`Microsoft-Windows-Security-Auditing`) on a device → `Device*` tables.
//! Domain-controller events (Kerberos, NTLM, directory changes) are in [`super::identity`].
//!
//! | id | table | ActionType |
//! |---|---|---|
//! | 4624, 4625 | DeviceLogonEvents | `LogonSuccess`, `LogonFailed` (`FailureReason` from `SubStatus`/`Status`) |
//! | 4634, 4647 | DeviceLogonEvents | `Logoff` |
//! | 4648 | DeviceEvents | `LogonAttemptedWithExplicitCredentials` |
//! | 4672 | DeviceEvents | `SpecialPrivilegesAssigned` (kept out of DeviceLogonEvents so logons are not counted twice) |
//! | 4688 | DeviceProcessEvents | `ProcessCreated` |
//! | 4689 | DeviceEvents | `ProcessTerminated` |
//! | 4657 | DeviceRegistryEvents | `RegistryValueSet` / `RegistryValueDeleted` |
//! | 4697 | DeviceEvents | `ServiceInstalled` |
//! | 4698..4702 | DeviceEvents | `ScheduledTaskCreated`, `ScheduledTaskDeleted`, `ScheduledTaskEnabled`, `ScheduledTaskDisabled`, `ScheduledTaskUpdated` |
//! | 5140, 5145 | DeviceEvents | `ShareAccessed`, `ShareObjectAccessChecked` (remote user in `Account*`, client in `RemoteIP`) |
//! | 5142..5144 | DeviceEvents | `ShareAdded`, `ShareModified`, `ShareDeleted` |
//! | 5154, 5156, 5157 | DeviceNetworkEvents | `ListeningConnectionCreated`, `ConnectionSuccess` / `InboundConnectionAccepted` (by `Direction`), `ConnectionFailed` |
//!
//! `LogonType` is named as Defender writes it (`Interactive`, `Network`, `Batch`, `Service`,
//! `Unlock`, `NetworkCleartext`, `NewCredentials`, `RemoteInteractive`, `CachedInteractive`,
//! `CachedRemoteInteractive`, `CachedUnlock`); `Protocol` is `AuthenticationPackageName`.

use rampart_schema::{
    DeviceEvents, DeviceLogonEvents, DeviceNetworkEvents, DeviceProcessEvents,
    DeviceRegistryEvents, Row,
};

use super::common::*;
use super::{identity, system};
use crate::winevent::WinEvent;

pub(crate) const PROVIDER: &str = "Microsoft-Windows-Security-Auditing";

/// The row of a Security record, or `None` for an event id without a specific mapping.
pub(crate) fn map(ev: &WinEvent) -> Option<Row> {
    let row = match ev.event_id {
        4624 | 4625 | 4634 | 4647 => logon(ev).into(),
        4648 => explicit_credentials(ev).into(),
        4672 => special_privileges(ev).into(),
        4688 => process_created(ev).into(),
        4689 => process_exited(ev).into(),
        4657 => registry_value(ev).into(),
        4697 => system::service_installed(
            ev,
            text(ev, "ServiceFileName"),
            &subject_process(ev, "ProcessName", "ClientProcessId"),
        )
        .into(),
        4698..=4702 => scheduled_task(ev).into(),
        5140 | 5142..=5145 => share(ev).into(),
        5154 | 5156 | 5157 => connection(ev).into(),
        _ => return identity::map(ev),
    };
    Some(row)
}

/// A `LogonType` number as Defender names it; an unknown number stays a number.
pub(crate) fn logon_type_name(kind: i64) -> String {
    let name = match kind {
        0 => "System",
        2 => "Interactive",
        3 => "Network",
        4 => "Batch",
        5 => "Service",
        7 => "Unlock",
        8 => "NetworkCleartext",
        9 => "NewCredentials",
        10 => "RemoteInteractive",
        11 => "CachedInteractive",
        12 => "CachedRemoteInteractive",
        13 => "CachedUnlock",
        other => return other.to_string(),
    };
    name.to_string()
}

fn logon(ev: &WinEvent) -> DeviceLogonEvents {
    let action = match ev.event_id {
        4624 => "LogonSuccess",
        4625 => "LogonFailed",
        _ => "Logoff",
    };
    let actor = subject_process(ev, "ProcessName", "ProcessId");
    let mut row: DeviceLogonEvents = device_by(ev, action, &[], &actor);
    row.logon_type = ev.get_i64("LogonType").map(logon_type_name);
    row.account_domain = trimmed(ev, "TargetDomainName");
    row.account_name = trimmed(ev, "TargetUserName");
    row.account_sid = sid(ev, "TargetUserSid");
    row.logon_id = logon_id(ev, "TargetLogonId");
    row.protocol = trimmed(ev, "AuthenticationPackageName");
    row.remote_ip = ip(ev, "IpAddress");
    row.remote_ip_type = ip_type(row.remote_ip.as_deref());
    row.remote_port = port(ev, "IpPort");
    row.remote_device_name = trimmed(ev, "WorkstationName");
    if ev.event_id == 4625 {
        let reason = |key| trimmed(ev, key).and_then(|c| ntstatus_reason(&c));
        row.failure_reason = reason("SubStatus").or_else(|| reason("Status"));
    }
    row
}

fn explicit_credentials(ev: &WinEvent) -> DeviceEvents {
    let actor = subject_process(ev, "ProcessName", "ProcessId");
    let mut row: DeviceEvents = device_by(ev, "LogonAttemptedWithExplicitCredentials", &[], &actor);
    row.account_domain = trimmed(ev, "TargetDomainName");
    row.account_name = trimmed(ev, "TargetUserName");
    row.remote_device_name = trimmed(ev, "TargetServerName");
    row.remote_ip = ip(ev, "IpAddress");
    row.remote_port = port(ev, "IpPort");
    row
}

/// A `DeviceEvents` row whose `Account*` and `LogonId` are the record's subject.
fn about_subject(ev: &WinEvent, action: &str) -> DeviceEvents {
    let mut row: DeviceEvents = device(ev, action, &[]);
    (row.account_domain, row.account_name, row.account_sid) = subject(ev);
    row.logon_id = logon_id(ev, "SubjectLogonId");
    row
}

fn special_privileges(ev: &WinEvent) -> DeviceEvents {
    about_subject(ev, "SpecialPrivilegesAssigned")
}

fn process_created(ev: &WinEvent) -> DeviceProcessEvents {
    let parent = subject_process(ev, "ParentProcessName", "ProcessId");
    let mut row: DeviceProcessEvents = device_by(ev, "ProcessCreated", &[], &parent);
    // Version 2 names the new process's account in Target*; "-" / NULL SID there means the
    // subject's.
    let (account_domain, account_name, account_sid) = match trimmed(ev, "TargetUserName") {
        Some(name) => (
            trimmed(ev, "TargetDomainName"),
            Some(name),
            sid(ev, "TargetUserSid"),
        ),
        None => subject(ev),
    };
    let created = Proc {
        id: ev.get_i64("NewProcessId"),
        command_line: text(ev, "CommandLine"),
        creation_time: Some(ev.timestamp),
        account_domain,
        account_name,
        account_sid,
        logon_id: logon_id(ev, "TargetLogonId")
            .filter(|&id| id != 0)
            .or_else(|| logon_id(ev, "SubjectLogonId")),
        integrity_level: trimmed(ev, "MandatoryLabel").and_then(|l| integrity_level(&l)),
        token_elevation: trimmed(ev, "TokenElevationType").and_then(|t| token_elevation(&t)),
        ..Proc::default()
    }
    .with_image(known(ev, "NewProcessName"));
    set_created_process(&mut row, created);
    row
}

fn process_exited(ev: &WinEvent) -> DeviceEvents {
    let mut row: DeviceEvents = device(ev, "ProcessTerminated", &[]);
    set_target_process(&mut row, subject_process(ev, "ProcessName", "ProcessId"));
    row
}

fn registry_value(ev: &WinEvent) -> DeviceRegistryEvents {
    // %%1904 value added, %%1905 value modified, %%1906 value deleted.
    let action = match trimmed(ev, "OperationType").as_deref() {
        Some("%%1906") => "RegistryValueDeleted",
        _ => "RegistryValueSet",
    };
    let actor = subject_process(ev, "ProcessName", "ProcessId");
    let mut row: DeviceRegistryEvents = device_by(ev, action, &[], &actor);
    row.registry_key = trimmed(ev, "ObjectName").map(|k| registry_key(&k));
    row.registry_value_name = text(ev, "ObjectValueName");
    row.registry_value_data = text(ev, "NewValue");
    row.previous_registry_value_data = text(ev, "OldValue");
    if row.previous_registry_value_data.is_some() {
        row.previous_registry_value_name = row.registry_value_name.clone();
    }
    row
}

fn scheduled_task(ev: &WinEvent) -> DeviceEvents {
    let action = match ev.event_id {
        4698 => "ScheduledTaskCreated",
        4699 => "ScheduledTaskDeleted",
        4700 => "ScheduledTaskEnabled",
        4701 => "ScheduledTaskDisabled",
        _ => "ScheduledTaskUpdated",
    };
    let actor = subject_process(ev, "ClientProcessName", "ClientProcessId");
    device_by(ev, action, &[], &actor)
}

fn share(ev: &WinEvent) -> DeviceEvents {
    let action = match ev.event_id {
        5140 => "ShareAccessed",
        5142 => "ShareAdded",
        5143 => "ShareModified",
        5144 => "ShareDeleted",
        _ => "ShareObjectAccessChecked",
    };
    let mut row = about_subject(ev, action);
    row.remote_ip = ip(ev, "IpAddress");
    row.remote_port = port(ev, "IpPort");
    let local = trimmed(ev, "ShareLocalPath").and_then(|p| folder_path(&p));
    let relative = trimmed(ev, "RelativeTargetName");
    row.file_name = relative.as_deref().and_then(file_name);
    row.folder_path = match (local, relative) {
        (Some(local), Some(relative)) => Some(format!(
            "{}\\{}",
            local.trim_end_matches('\\'),
            relative.trim_start_matches('\\')
        )),
        (local, _) => local,
    };
    row
}

fn connection(ev: &WinEvent) -> DeviceNetworkEvents {
    // Direction: %%14592 inbound, %%14593 outbound. Source* is always the local end.
    let inbound = trimmed(ev, "Direction").as_deref() == Some("%%14592");
    let action = match ev.event_id {
        5154 => "ListeningConnectionCreated",
        5157 => "ConnectionFailed",
        _ if inbound => "InboundConnectionAccepted",
        _ => "ConnectionSuccess",
    };
    let actor = Proc {
        id: ev.get_i64("ProcessID").or_else(|| ev.get_i64("ProcessId")),
        ..Proc::default()
    }
    .with_image(known(ev, "Application"));
    let mut row: DeviceNetworkEvents = device_by(ev, action, &[], &actor);
    row.local_ip = ip(ev, "SourceAddress");
    row.local_port = port(ev, "SourcePort");
    row.local_ip_type = ip_type(row.local_ip.as_deref());
    row.remote_ip = ip(ev, "DestAddress");
    row.remote_port = port(ev, "DestPort");
    row.remote_ip_type = ip_type(row.remote_ip.as_deref());
    row.protocol = trimmed(ev, "Protocol").and_then(|p| protocol_name(&p));
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::tests::security;
    use serde_json::json;

    #[test]
    fn process_create_4688() {
        let Row::DeviceProcessEvents(r) = security(
            4688,
            json!({"SubjectUserSid": "S-1-5-21-1-1000", "SubjectUserName": "bob",
                "SubjectDomainName": "CORP", "SubjectLogonId": "0x3e7",
                "NewProcessId": "0x1fc", "NewProcessName": "C:\\Windows\\System32\\whoami.exe",
                "TokenElevationType": "%%1937", "ProcessId": "0x278",
                "CommandLine": "whoami /all", "TargetUserSid": "S-1-0-0", "TargetUserName": "-",
                "TargetDomainName": "-", "TargetLogonId": "0x0",
                "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
                "MandatoryLabel": "S-1-16-12288"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ProcessCreated"));
        assert_eq!(r.file_name.as_deref(), Some("whoami.exe"));
        assert_eq!(r.process_id, Some(0x1fc));
        assert_eq!(r.process_command_line.as_deref(), Some("whoami /all"));
        assert_eq!(r.process_integrity_level.as_deref(), Some("High"));
        assert_eq!(
            r.process_token_elevation.as_deref(),
            Some("TokenElevationTypeFull")
        );
        assert_eq!(r.account_name.as_deref(), Some("bob"));
        assert_eq!(r.account_sid.as_deref(), Some("S-1-5-21-1-1000"));
        assert_eq!(r.logon_id, Some(0x3e7));
        assert_eq!(r.initiating_process_id, Some(0x278));
        assert_eq!(r.initiating_process_file_name.as_deref(), Some("cmd.exe"));
        assert_eq!(r.initiating_process_account_name.as_deref(), Some("bob"));
        assert_eq!(r.process_creation_time, r.timestamp);
    }

    #[test]
    fn logon_4624_and_failure_4625() {
        let Row::DeviceLogonEvents(r) = security(
            4624,
            json!({"SubjectUserName": "PC01$", "TargetUserName": "user01",
                "TargetDomainName": "EXAMPLE", "TargetUserSid": "S-1-5-21-9",
                "TargetLogonId": "0x1414c8", "LogonType": 10, "LogonProcessName": "User32 ",
                "AuthenticationPackageName": "Negotiate", "WorkstationName": "PC02",
                "ProcessId": "0x704", "ProcessName": "C:\\Windows\\System32\\winlogon.exe",
                "IpAddress": "10.0.2.18", "IpPort": "51234"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("LogonSuccess"));
        assert_eq!(r.logon_type.as_deref(), Some("RemoteInteractive"));
        assert_eq!(r.account_name.as_deref(), Some("user01"));
        assert_eq!(r.account_domain.as_deref(), Some("EXAMPLE"));
        assert_eq!(r.account_sid.as_deref(), Some("S-1-5-21-9"));
        assert_eq!(r.logon_id, Some(0x1414c8));
        assert_eq!(r.protocol.as_deref(), Some("Negotiate"));
        assert_eq!(r.remote_ip.as_deref(), Some("10.0.2.18"));
        assert_eq!(r.remote_ip_type.as_deref(), Some("Private"));
        assert_eq!(r.remote_port, Some(51234));
        assert_eq!(r.remote_device_name.as_deref(), Some("PC02"));
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("winlogon.exe")
        );
        assert_eq!(r.initiating_process_id, Some(0x704));
        assert_eq!(r.failure_reason, None);

        let Row::DeviceLogonEvents(r) = security(
            4625,
            json!({"TargetUserName": "IEUser", "LogonType": 3, "Status": "0xc000006d",
                "SubStatus": "0xc000006a", "IpAddress": "-", "IpPort": "-", "TargetUserSid": "S-1-0-0"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("LogonFailed"));
        assert_eq!(r.logon_type.as_deref(), Some("Network"));
        assert_eq!(r.failure_reason.as_deref(), Some("WrongPassword"));
        assert_eq!(r.account_sid, None);
        assert_eq!(r.remote_ip, None);
        let Row::DeviceLogonEvents(r) =
            security(4625, json!({"Status": "0xc000006d", "SubStatus": "0x0"}))
        else {
            panic!()
        };
        assert_eq!(
            r.failure_reason.as_deref(),
            Some("InvalidUserNameOrPassword")
        );
        let Row::DeviceLogonEvents(r) = security(4634, json!({"LogonType": 99})) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("Logoff"));
        assert_eq!(r.logon_type.as_deref(), Some("99"));
    }

    #[test]
    fn shares_tasks_and_connections() {
        let Row::DeviceEvents(r) = security(
            5145,
            json!({"SubjectUserName": "backdoor", "SubjectDomainName": "3B",
                "ShareName": "\\\\*\\C$", "ShareLocalPath": "\\??\\C:\\",
                "RelativeTargetName": "Windows\\Temp\\x.exe", "IpAddress": "172.16.66.1", "IpPort": "52415"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ShareObjectAccessChecked"));
        assert_eq!(r.account_name.as_deref(), Some("backdoor"));
        assert_eq!(r.file_name.as_deref(), Some("x.exe"));
        assert_eq!(r.folder_path.as_deref(), Some("C:\\Windows\\Temp\\x.exe"));
        assert_eq!(r.remote_ip.as_deref(), Some("172.16.66.1"));

        let Row::DeviceEvents(r) = security(
            4698,
            json!({"SubjectUserName": "Administrator", "TaskName": "\\CYAlyNSS"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ScheduledTaskCreated"));
        assert_eq!(
            r.initiating_process_account_name.as_deref(),
            Some("Administrator")
        );
        assert!(r.additional_fields.unwrap().contains("CYAlyNSS"));

        let Row::DeviceNetworkEvents(r) = security(
            5156,
            json!({"ProcessID": 820, "Application": "\\device\\harddiskvolume1\\windows\\system32\\svchost.exe",
                "Direction": "%%14593", "SourceAddress": "10.0.2.17", "SourcePort": "546",
                "DestAddress": "ff02::1:2", "DestPort": "547", "Protocol": 17}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ConnectionSuccess"));
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("svchost.exe")
        );
        assert_eq!(r.initiating_process_id, Some(820));
        assert_eq!(r.remote_ip.as_deref(), Some("ff02::1:2"));
        assert_eq!(r.remote_ip_type.as_deref(), Some("Multicast"));
        assert_eq!(r.protocol.as_deref(), Some("Udp"));
    }

    #[test]
    fn service_install_4697() {
        let Row::DeviceEvents(r) = security(
            4697,
            json!({"SubjectUserName": "admin", "ServiceName": "evil",
                "ServiceFileName": "%COMSPEC% /c whoami", "ServiceStartType": "3"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ServiceInstalled"));
        assert_eq!(r.file_name.as_deref(), Some("%COMSPEC%"));
        assert_eq!(
            r.process_command_line.as_deref(),
            Some("%COMSPEC% /c whoami")
        );
        assert_eq!(r.initiating_process_account_name.as_deref(), Some("admin"));
    }
}
