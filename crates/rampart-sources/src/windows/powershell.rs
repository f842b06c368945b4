//! PowerShell → `DeviceEvents`.
//!
//! | provider | id | ActionType |
//! |---|---|---|
//! | Microsoft-Windows-PowerShell | 4104 | `AmsiScriptContent` (script text in `ScriptBlockText`, with `ScriptBlockId`, `Path`) |
//! | Microsoft-Windows-PowerShell | 4103 | `PowerShellCommand` (`Command` added to AdditionalFields) |
//! | PowerShell (classic `Windows PowerShell` log) | 800 | `PowerShellCommand` (`Command` added) |
//! | PowerShell | 400, 403, 600 | `PowerShellEngineStarted`, `PowerShellEngineStopped`, `PowerShellProviderStarted` |
//!
//! Defender reports script content seen by AMSI as `AmsiScriptContent` and each command run
//! as `PowerShellCommand` with `{"Command": name}`; the same names let its hunting queries
//! find the script-block and module logs. The writing process (`Execution_ProcessID`) is the
//! initiating process; its command line is the host application when the record names it.

use rampart_schema::{DeviceEvents, Row};
use serde_json::Value;

use super::common::*;
use crate::winevent::WinEvent;

pub(crate) const PROVIDER: &str = "Microsoft-Windows-PowerShell";
/// The provider of the classic `Windows PowerShell` log.
pub(crate) const CLASSIC_PROVIDER: &str = "PowerShell";

/// The row of a PowerShell record, or `None` without a specific mapping.
pub(crate) fn map(ev: &WinEvent) -> Option<Row> {
    let classic = ev.provider == CLASSIC_PROVIDER;
    let row = match (classic, ev.event_id) {
        (false, 4104) => script_block(ev),
        (false, 4103) => module_command(ev),
        (true, 800) => classic_record(ev, "PowerShellCommand"),
        (true, 400) => classic_record(ev, "PowerShellEngineStarted"),
        (true, 403) => classic_record(ev, "PowerShellEngineStopped"),
        (true, 600) => classic_record(ev, "PowerShellProviderStarted"),
        _ => return None,
    };
    Some(row.into())
}

/// `Key<sep>Value` lines of a PowerShell text block (`ContextInfo`, classic details).
fn lookup(text: &str, sep: char, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(sep)?;
        let v = v.trim();
        (k.trim() == key && !v.is_empty()).then(|| v.to_string())
    })
}

/// The first `CommandInvocation(Name)` of a pipeline payload.
fn invoked_command(text: &str) -> Option<String> {
    let start = text.find("CommandInvocation(")? + "CommandInvocation(".len();
    let rest = text.get(start..)?;
    let name = rest.get(..rest.find(')')?)?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The PowerShell host: the record's writer, run as `host_application` by `user`.
fn host(ev: &WinEvent, host_application: Option<String>, user: Option<String>) -> Proc {
    let mut p = Proc {
        id: ev.get_i64("Execution_ProcessID").filter(|&id| id != 0),
        account_sid: sid(ev, "Security_UserID"),
        ..Proc::default()
    }
    .with_image(
        host_application
            .as_deref()
            .and_then(executable)
            .map(str::to_string),
    )
    .with_user(user);
    p.command_line = host_application;
    p
}

fn script_block(ev: &WinEvent) -> DeviceEvents {
    let mut row: DeviceEvents = device_by(ev, "AmsiScriptContent", &[], &host(ev, None, None));
    row.set_file(trimmed(ev, "Path"), Hashes::default());
    row
}

fn module_command(ev: &WinEvent) -> DeviceEvents {
    let context = text(ev, "ContextInfo").unwrap_or_default();
    let field = |key| lookup(&context, '=', key);
    let command: Value = field("Command Name")
        .or_else(|| text(ev, "Payload").as_deref().and_then(invoked_command))
        .into();
    let actor = host(ev, field("Host Application"), field("User"));
    let mut row: DeviceEvents = device_by(ev, "PowerShellCommand", &[("Command", command)], &actor);
    row.set_file(field("Script Name"), Hashes::default());
    row
}

fn classic_record(ev: &WinEvent, action: &str) -> DeviceEvents {
    let items = data_items(ev);
    let detail = |key| items.iter().find_map(|item| lookup(item, '=', key));
    let command: Value = items.iter().find_map(|item| invoked_command(item)).into();
    let actor = host(ev, detail("HostApplication"), detail("UserId"));
    let mut row: DeviceEvents = device_by(ev, action, &[("Command", command)], &actor);
    row.set_file(detail("ScriptName"), Hashes::default());
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::map_event;
    use crate::windows::tests::event;
    use serde_json::json;

    #[test]
    fn script_block_4104() {
        let ev = event(
            PROVIDER,
            "Microsoft-Windows-PowerShell/Operational",
            4104,
            json!({"MessageNumber": 1, "MessageTotal": 1,
                "ScriptBlockText": "Get-Process lsass", "ScriptBlockId": "27f08bda",
                "Path": "C:\\Users\\Public\\lsass_wer_ps.ps1"}),
        );
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("AmsiScriptContent"));
        assert_eq!(r.file_name.as_deref(), Some("lsass_wer_ps.ps1"));
        assert_eq!(r.initiating_process_id, Some(2796));
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["ScriptBlockText"], "Get-Process lsass");
        assert_eq!(raw["ScriptBlockId"], "27f08bda");
    }

    #[test]
    fn module_log_4103() {
        let ev = event(
            PROVIDER,
            "Microsoft-Windows-PowerShell/Operational",
            4103,
            json!({"ContextInfo": "        Severity = Informational\r\n        Host Application = powershell.exe -nop -w hidden\r\n        Command Name = Invoke-WebRequest\r\n        User = CORP\\bob\r\n",
                "Payload": "CommandInvocation(Invoke-WebRequest): \"Invoke-WebRequest\"\r\n"}),
        );
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("PowerShellCommand"));
        assert_eq!(
            r.initiating_process_command_line.as_deref(),
            Some("powershell.exe -nop -w hidden")
        );
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("powershell.exe")
        );
        assert_eq!(r.initiating_process_account_name.as_deref(), Some("bob"));
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["Command"], "Invoke-WebRequest");
    }

    #[test]
    fn classic_pipeline_800() {
        let ev = event(
            CLASSIC_PROVIDER,
            "Windows PowerShell",
            800,
            json!({"Data": {"#text": [
                "$x = 1; Invoke-Item a.exe",
                "\tDetailSequence=1\r\n\tUserId=DESKTOP\\Clippy\r\n\tHostApplication=C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -enc AAA\r\n\tScriptName=\r\n",
                "CommandInvocation(Invoke-Item): \"Invoke-Item\"\r\n"
            ]}}),
        );
        let Row::DeviceEvents(r) = map_event(&ev) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("PowerShellCommand"));
        assert_eq!(r.initiating_process_account_name.as_deref(), Some("Clippy"));
        assert_eq!(
            r.initiating_process_file_name.as_deref(),
            Some("powershell.exe")
        );
        assert_eq!(r.file_name, None);
        let raw: Value = serde_json::from_str(r.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(raw["Command"], "Invoke-Item");
        assert_eq!(invoked_command("CommandInvocation(x"), None);
    }
}
