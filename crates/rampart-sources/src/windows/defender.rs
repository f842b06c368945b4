//! Microsoft Defender Antivirus (`Microsoft-Windows-Windows Defender/Operational`) →
//! `DeviceEvents`.
//!
//! | id | ActionType |
//! |---|---|
//! | 1006, 1015, 1116 | `AntivirusDetection` |
//! | 1007, 1117 | `AntivirusMalwareActionTaken` |
//! | 1008, 1118, 1119 | `AntivirusMalwareActionFailed` |
//! | 5001 | `AntivirusRealTimeProtectionDisabled` |
//! | 5007 | `AntivirusConfigurationChanged` |
//!
//! The first file resource of `Path` (`file:_C:\..`, `containerfile:_..`) gives
//! `FileName`/`FolderPath`; `ProcessName` is the initiating process and `DetectionUser` its
//! account. The record's `ThreatName` is Defender's own `AdditionalFields` key. (Field names
//! are read without their spaces, as [`WinEvent`] stores them, or with them.)

use rampart_schema::{DeviceEvents, Row};
use serde_json::Value;

use super::common::*;
use crate::winevent::WinEvent;

pub(crate) const PROVIDER: &str = "Microsoft-Windows-Windows Defender";

/// The row of a Defender record, or `None` without a specific mapping.
pub(crate) fn map(ev: &WinEvent) -> Option<Row> {
    let action = match ev.event_id {
        1006 | 1015 | 1116 => "AntivirusDetection",
        1007 | 1117 => "AntivirusMalwareActionTaken",
        1008 | 1118 | 1119 => "AntivirusMalwareActionFailed",
        5001 => "AntivirusRealTimeProtectionDisabled",
        5007 => "AntivirusConfigurationChanged",
        _ => return None,
    };
    Some(threat(ev, action).into())
}

/// The first file of a Defender resource list (`file:_C:\a.exe;process:_pid:4,...`).
fn resource_file(path: &str) -> Option<String> {
    path.split(';').find_map(|resource| {
        let (kind, rest) = resource.split_once(":_")?;
        matches!(kind.trim(), "file" | "containerfile")
            .then(|| rest.split("->").next().unwrap_or(rest).trim().to_string())
            .filter(|p| !p.is_empty())
    })
}

fn threat(ev: &WinEvent, action: &str) -> DeviceEvents {
    let field = |name: &str| trimmed(ev, &name.replace(' ', "")).or_else(|| trimmed(ev, name));
    let threat_name: Value = field("Threat Name").into();
    let actor = Proc::default()
        .with_image(field("Process Name").filter(|p| p != "Unknown"))
        .with_user(field("Detection User"));
    let mut row: DeviceEvents = device_by(ev, action, &[("ThreatName", threat_name)], &actor);
    let file = field("Path").and_then(|p| resource_file(&p));
    row.set_file(file, Hashes::default());
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::map_event;
    use crate::windows::tests::event;
    use serde_json::json;

    #[test]
    fn detection_1116() {
        let ev = event(
            PROVIDER,
            "Microsoft-Windows-Windows Defender/Operational",
            1116,
            json!({"Threat Name": "HackTool:Win32/Mimikatz", "Severity Name": "High",
                "Path": "file:_C:\\Users\\bob\\Downloads\\mimikatz.exe;process:_pid:4,ProcessStart:1",
                "Process Name": "C:\\Windows\\explorer.exe", "Detection User": "CORP\\bob"}),
        );
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("AntivirusDetection"));
        assert_eq!(r.file_name.as_deref(), Some("mimikatz.exe"));
        assert_eq!(
            r.folder_path.as_deref(),
            Some("C:\\Users\\bob\\Downloads\\mimikatz.exe")
        );
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("explorer.exe")
        );
        assert_eq!(r.initiating_process_account_name.as_deref(), Some("bob"));
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["ThreatName"], "HackTool:Win32/Mimikatz");
        assert_eq!(raw["SeverityName"], "High");
    }

    #[test]
    fn resource_lists() {
        assert_eq!(
            resource_file("containerfile:_C:\\a.zip;file:_C:\\a.zip->x.exe").as_deref(),
            Some("C:\\a.zip")
        );
        assert_eq!(resource_file("process:_pid:4"), None);
        assert_eq!(resource_file(""), None);
    }
}
