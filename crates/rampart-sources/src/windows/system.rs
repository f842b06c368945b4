//! Event-log service and Service Control Manager records → `DeviceEvents`.
//!
//! | provider | id | ActionType |
//! |---|---|---|
//! | Microsoft-Windows-Eventlog (Security channel) | 1102 | `SecurityLogCleared` |
//! | Microsoft-Windows-Eventlog (System channel) | 104 | `EventLogCleared` |
//! | Service Control Manager | 7045 | `ServiceInstalled` |
//!
//! `ServiceInstalled` (also from Security 4697) puts the service binary in
//! `FileName`/`FolderPath` (the executable of the image path), the whole image path in
//! `ProcessCommandLine`, and adds Defender's `ServiceStartType`/`ServiceAccount` keys to
//! `AdditionalFields` next to the record's own.

use rampart_schema::{DeviceEvents, Row};

use super::common::*;
use crate::winevent::WinEvent;

pub(crate) const EVENTLOG: &str = "Microsoft-Windows-Eventlog";
pub(crate) const SERVICE_CONTROL_MANAGER: &str = "Service Control Manager";

/// The row of an event-log or service-manager record, or `None` without a specific mapping.
pub(crate) fn map(ev: &WinEvent) -> Option<Row> {
    let row = match (ev.provider.as_str(), ev.event_id) {
        (EVENTLOG, 1102) => log_cleared(ev, "SecurityLogCleared"),
        (EVENTLOG, 104) => log_cleared(ev, "EventLogCleared"),
        (SERVICE_CONTROL_MANAGER, 7045) => {
            // The installing account is the record's user.
            let actor = Proc {
                account_sid: sid(ev, "Security_UserID"),
                ..Proc::default()
            };
            service_installed(ev, text(ev, "ImagePath"), &actor)
        }
        _ => return None,
    };
    Some(row.into())
}

fn log_cleared(ev: &WinEvent, action: &str) -> DeviceEvents {
    let (account_domain, account_name, account_sid) = subject(ev);
    let actor = Proc {
        account_domain,
        account_name,
        account_sid: account_sid.or_else(|| sid(ev, "Security_UserID")),
        logon_id: logon_id(ev, "SubjectLogonId"),
        ..Proc::default()
    };
    device_by(ev, action, &[], &actor)
}

/// A `ServiceInstalled` row (System 7045, Security 4697) for the service's image path.
pub(crate) fn service_installed(
    ev: &WinEvent,
    image_path: Option<String>,
    actor: &Proc,
) -> DeviceEvents {
    let extras = [
        ("ServiceStartType", text(ev, "StartType").into()),
        ("ServiceAccount", text(ev, "AccountName").into()),
    ];
    let mut row: DeviceEvents = device_by(ev, "ServiceInstalled", &extras, actor);
    if let Some(command) = image_path {
        let exe = executable(&command).map(str::to_string);
        row.set_file(exe, Hashes::default());
        row.process_command_line = Some(command);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::map_event;
    use crate::windows::tests::event;
    use serde_json::{Value, json};

    #[test]
    fn service_install_7045() {
        let ev = event(
            SERVICE_CONTROL_MANAGER,
            "System",
            7045,
            json!({"ServiceName": "spoolfool", "ImagePath": "\"C:\\Program Files\\x y\\svc.exe\" -k",
                "ServiceType": "user mode service", "StartType": "auto start",
                "AccountName": "LocalSystem"}),
        );
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("ServiceInstalled"));
        assert_eq!(r.file_name.as_deref(), Some("svc.exe"));
        assert_eq!(
            r.folder_path.as_deref(),
            Some("C:\\Program Files\\x y\\svc.exe")
        );
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["ServiceName"], "spoolfool");
        assert_eq!(raw["ServiceStartType"], "auto start");
        assert_eq!(raw["ServiceAccount"], "LocalSystem");
    }

    #[test]
    fn log_cleared_1102() {
        let ev = event(
            EVENTLOG,
            "Security",
            1102,
            json!({"SubjectUserSid": "S-1-5-21-1-1108", "SubjectUserName": "admin01",
                "SubjectDomainName": "EXAMPLE", "SubjectLogonId": "0xaf855"}),
        );
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("SecurityLogCleared"));
        assert_eq!(
            r.initiating_process_account_name.as_deref(),
            Some("admin01")
        );
        assert_eq!(
            r.initiating_process_account_sid.as_deref(),
            Some("S-1-5-21-1-1108")
        );
        assert_eq!(r.initiating_process_logon_id, Some(0xaf855));
    }
}
