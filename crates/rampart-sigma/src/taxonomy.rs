//! Sigma's logsource taxonomy: which records a rule's `logsource` covers, and the field names a
//! record must also answer to. Windows event logs are here; `product: linux` categories are read
//! from agent telemetry ([`crate::linux`]).
//!
//! A `service` is a channel (`security` = the Security log); a `category` is a kind of event
//! that one or more providers record (`process_creation` = Sysmon 1 and Security 4688). Records
//! of a category from a provider whose field names differ from Sysmon's (4688, 4657, 5156) get
//! aliases under the Sysmon names, as SigmaHQ's Windows audit pipeline maps them, so one rule
//! reads both.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use rampart_sources::WinEvent;
use serde_json::Value;

/// Where a rule is evaluated: a Windows category, a Windows service, any Windows record, or a
/// Linux category of agent telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKey {
    Category(&'static str),
    Service(&'static str),
    /// `product: windows` with neither category nor service: every record.
    AnyWindows,
    /// `product: linux` with a category agent telemetry records (see [`crate::linux`]).
    Linux(&'static str),
}

const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";
const SECURITY: &str = "Security";
const PS_OPERATIONAL: &[&str] = &[
    "Microsoft-Windows-PowerShell/Operational",
    "PowerShellCore/Operational",
];
const PS_CLASSIC: &str = "Windows PowerShell";
const DEFENDER: &str = "Microsoft-Windows-Windows Defender/Operational";

/// `service` → the channels it names.
const SERVICES: &[(&str, &[&str])] = &[
    ("security", &[SECURITY]),
    ("system", &["System"]),
    ("application", &["Application"]),
    ("sysmon", &[SYSMON]),
    ("powershell", PS_OPERATIONAL),
    ("powershell-classic", &[PS_CLASSIC]),
    ("windefend", &[DEFENDER]),
    (
        "taskscheduler",
        &["Microsoft-Windows-TaskScheduler/Operational"],
    ),
    ("wmi", &["Microsoft-Windows-WMI-Activity/Operational"]),
    ("dns-server", &["DNS Server"]),
    (
        "dns-server-analytic",
        &["Microsoft-Windows-DNSServer/Analytical"],
    ),
    (
        "dns-client",
        &["Microsoft-Windows-DNS Client Events/Operational"],
    ),
    (
        "driver-framework",
        &["Microsoft-Windows-DriverFrameworks-UserMode/Operational"],
    ),
    ("ntlm", &["Microsoft-Windows-NTLM/Operational"]),
    (
        "firewall-as",
        &["Microsoft-Windows-Windows Firewall With Advanced Security/Firewall"],
    ),
    (
        "bits-client",
        &["Microsoft-Windows-Bits-Client/Operational"],
    ),
    (
        "codeintegrity-operational",
        &["Microsoft-Windows-CodeIntegrity/Operational"],
    ),
    (
        "applocker",
        &[
            "Microsoft-Windows-AppLocker/MSI and Script",
            "Microsoft-Windows-AppLocker/EXE and DLL",
            "Microsoft-Windows-AppLocker/Packaged app-Deployment",
            "Microsoft-Windows-AppLocker/Packaged app-Execution",
        ],
    ),
    ("msexchange-management", &["MSExchange Management"]),
    (
        "printservice-admin",
        &["Microsoft-Windows-PrintService/Admin"],
    ),
    (
        "printservice-operational",
        &["Microsoft-Windows-PrintService/Operational"],
    ),
    (
        "smbclient-security",
        &["Microsoft-Windows-SmbClient/Security"],
    ),
    (
        "smbclient-connectivity",
        &["Microsoft-Windows-SmbClient/Connectivity"],
    ),
    (
        "smbserver-connectivity",
        &["Microsoft-Windows-SMBServer/Connectivity"],
    ),
    (
        "terminalservices-localsessionmanager",
        &["Microsoft-Windows-TerminalServices-LocalSessionManager/Operational"],
    ),
    ("openssh", &["OpenSSH/Operational"]),
    ("shell-core", &["Microsoft-Windows-Shell-Core/Operational"]),
    ("ldap", &["Microsoft-Windows-LDAP-Client/Debug"]),
    ("lsa-server", &["Microsoft-Windows-LSA/Operational"]),
    ("vhdmp", &["Microsoft-Windows-VHDMP-Operational"]),
    (
        "appxdeployment-server",
        &["Microsoft-Windows-AppXDeploymentServer/Operational"],
    ),
    (
        "appxpackaging-om",
        &["Microsoft-Windows-AppxPackaging/Operational"],
    ),
    (
        "appmodel-runtime",
        &["Microsoft-Windows-AppModel-Runtime/Admin"],
    ),
    ("capi2", &["Microsoft-Windows-CAPI2/Operational"]),
    (
        "certificateservicesclient-lifecycle-system",
        &["Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational"],
    ),
    (
        "diagnosis-scripted",
        &["Microsoft-Windows-Diagnosis-Scripted/Operational"],
    ),
    (
        "security-mitigations",
        &[
            "Microsoft-Windows-Security-Mitigations/Kernel Mode",
            "Microsoft-Windows-Security-Mitigations/User Mode",
        ],
    ),
    (
        "bitlocker",
        &["Microsoft-Windows-BitLocker/BitLocker Management"],
    ),
    (
        "iis-configuration",
        &["Microsoft-IIS-Configuration/Operational"],
    ),
    (
        "microsoft-servicebus-client",
        &["Microsoft-ServiceBus-Client"],
    ),
    (
        "kernel-shimengine",
        &["Microsoft-Windows-Kernel-ShimEngine/Operational"],
    ),
];

/// Channels and the event ids in them that record a category.
type Source = (&'static [&'static str], &'static [u32]);

/// `category` → the sources that record it.
const CATEGORIES: &[(&str, &[Source])] = &[
    (
        "process_creation",
        &[(&[SYSMON], &[1]), (&[SECURITY], &[4688])],
    ),
    ("file_change", &[(&[SYSMON], &[2])]),
    (
        "network_connection",
        &[(&[SYSMON], &[3]), (&[SECURITY], &[5156])],
    ),
    ("sysmon_status", &[(&[SYSMON], &[4, 16])]),
    (
        "process_termination",
        &[(&[SYSMON], &[5]), (&[SECURITY], &[4689])],
    ),
    ("driver_load", &[(&[SYSMON], &[6])]),
    ("image_load", &[(&[SYSMON], &[7])]),
    ("create_remote_thread", &[(&[SYSMON], &[8])]),
    ("raw_access_thread", &[(&[SYSMON], &[9])]),
    ("process_access", &[(&[SYSMON], &[10])]),
    ("file_event", &[(&[SYSMON], &[11])]),
    (
        "registry_event",
        &[(&[SYSMON], &[12, 13, 14]), (&[SECURITY], &[4657])],
    ),
    ("registry_add", &[(&[SYSMON], &[12])]),
    ("registry_delete", &[(&[SYSMON], &[12])]),
    (
        "registry_set",
        &[(&[SYSMON], &[13]), (&[SECURITY], &[4657])],
    ),
    ("registry_rename", &[(&[SYSMON], &[14])]),
    ("create_stream_hash", &[(&[SYSMON], &[15])]),
    ("pipe_created", &[(&[SYSMON], &[17, 18])]),
    ("wmi_event", &[(&[SYSMON], &[19, 20, 21])]),
    ("dns_query", &[(&[SYSMON], &[22])]),
    ("file_delete", &[(&[SYSMON], &[23, 26])]),
    ("clipboard_capture", &[(&[SYSMON], &[24])]),
    ("process_tampering", &[(&[SYSMON], &[25])]),
    ("file_block", &[(&[SYSMON], &[27, 28])]),
    ("file_executable_detected", &[(&[SYSMON], &[29])]),
    ("sysmon_error", &[(&[SYSMON], &[255])]),
    ("ps_module", &[(PS_OPERATIONAL, &[4103])]),
    ("ps_script", &[(PS_OPERATIONAL, &[4104])]),
    ("ps_classic_start", &[(&[PS_CLASSIC], &[400])]),
    ("ps_classic_provider_start", &[(&[PS_CLASSIC], &[600])]),
    ("ps_classic_script", &[(&[PS_CLASSIC], &[800])]),
    (
        "antivirus",
        &[(
            &[DEFENDER],
            &[
                1006, 1007, 1008, 1009, 1010, 1011, 1012, 1015, 1116, 1117, 1118, 1119,
            ],
        )],
    ),
];

/// The route of a rule's logsource, or why no record Rampart reads reaches it.
pub fn route(
    product: Option<&str>,
    category: Option<&str>,
    service: Option<&str>,
) -> Result<RouteKey, String> {
    match product {
        Some(p) if p.eq_ignore_ascii_case("linux") => {
            return crate::linux::route(category, service).map(RouteKey::Linux);
        }
        Some(p) if !p.eq_ignore_ascii_case("windows") => {
            return Err(format!(
                "product '{p}' is read neither from Windows event logs nor from agent telemetry"
            ));
        }
        _ => {}
    }
    if let Some(c) = category {
        return CATEGORIES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(c))
            .map(|(name, _)| RouteKey::Category(name))
            .ok_or_else(|| format!("no Windows event log records category '{c}'"));
    }
    if let Some(s) = service {
        return SERVICES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|(name, _)| RouteKey::Service(name))
            .ok_or_else(|| format!("no Windows event log channel is known for service '{s}'"));
    }
    match product {
        Some(_) => Ok(RouteKey::AnyWindows),
        None => Err("logsource names no product, category or service".into()),
    }
}

/// Every route a record belongs to (its service, its categories, and every Windows record).
pub fn routes_of(event: &WinEvent, out: &mut Vec<RouteKey>) {
    out.clear();
    out.push(RouteKey::AnyWindows);
    // Channels compare without ASCII case: the record's is folded (on the stack) and looked
    // up once, instead of compared with every channel of every service and category.
    let channel = event.channel.as_bytes();
    let mut folded = [0u8; MAX_CHANNEL];
    let Some(folded) = folded.get_mut(..channel.len()) else {
        return;
    };
    folded.copy_from_slice(channel);
    folded.make_ascii_lowercase();
    let Some(routes) = std::str::from_utf8(folded)
        .ok()
        .and_then(|c| channel_routes().get(c))
    else {
        return;
    };
    for (key, ids) in routes {
        if ids.is_empty() || ids.contains(&event.event_id) {
            out.push(*key);
        }
    }
}

/// The longest channel the taxonomy names is shorter: a longer one is in no route but
/// [`RouteKey::AnyWindows`].
const MAX_CHANNEL: usize = 96;

/// Per channel (ASCII-lowercased), its routes in the order of [`SERVICES`] then
/// [`CATEGORIES`], each with the event ids it takes (none: every record of the channel).
type ChannelRoutes = HashMap<String, Vec<(RouteKey, Vec<u32>)>, foldhash::fast::FixedState>;

fn channel_routes() -> &'static ChannelRoutes {
    static ROUTES: OnceLock<ChannelRoutes> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut routes = ChannelRoutes::default();
        for (name, channels) in SERVICES {
            for c in *channels {
                routes
                    .entry(c.to_ascii_lowercase())
                    .or_default()
                    .push((RouteKey::Service(name), Vec::new()));
            }
        }
        for (name, sources) in CATEGORIES {
            for (channels, ids) in *sources {
                for c in *channels {
                    let list = routes.entry(c.to_ascii_lowercase()).or_default();
                    let key = RouteKey::Category(name);
                    match list.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, known)) => known.extend_from_slice(ids),
                        None => list.push((key, ids.to_vec())),
                    }
                }
            }
        }
        routes
    })
}

/// Fields a record must also answer to under Sysmon's names, for the categories it is in.
pub fn aliases(event: &WinEvent) -> Vec<(&'static str, Value)> {
    if !event.channel.eq_ignore_ascii_case(SECURITY) {
        return Vec::new();
    }
    let s = |name: &str| event.get_str(name).map(Cow::into_owned);
    let mut out: Vec<(&'static str, Value)> = Vec::new();
    let mut put = |name: &'static str, value: Option<String>| {
        if let Some(v) = value {
            out.push((name, Value::String(v)));
        }
    };
    match event.event_id {
        4688 => {
            put("Image", s("NewProcessName"));
            put("ParentImage", s("ParentProcessName"));
            // In 4688, `ProcessId` is the creator; Sigma's `ProcessId` is the new process.
            put(
                "ProcessId",
                event.get_i64("NewProcessId").map(|n| n.to_string()),
            );
            put(
                "ParentProcessId",
                event.get_i64("ProcessId").map(|n| n.to_string()),
            );
            put(
                "IntegrityLevel",
                s("MandatoryLabel").map(|l| integrity_level(&l)),
            );
            let (domain, user) = match s("TargetUserName") {
                Some(u) if u != "-" => (s("TargetDomainName"), Some(u)),
                _ => (s("SubjectDomainName"), s("SubjectUserName")),
            };
            put(
                "User",
                user.map(|u| match domain {
                    Some(d) => format!("{d}\\{u}"),
                    None => u,
                }),
            );
            put(
                "LogonId",
                s("TargetLogonId")
                    .filter(|l| l != "0x0")
                    .or_else(|| s("SubjectLogonId")),
            );
        }
        4689 => put("Image", s("ProcessName")),
        4657 => {
            put("TargetObject", s("ObjectName").map(|k| registry_path(&k)));
            put("Details", s("NewValue"));
            put("Image", s("ProcessName"));
            put("EventType", Some("SetValue".into()));
        }
        5156 => {
            put("Image", s("Application"));
            put("DestinationIp", s("DestAddress"));
            put("DestinationPort", s("DestPort"));
            put("SourceIp", s("SourceAddress"));
            put(
                "Initiated",
                s("Direction").map(|d| (d == "%%14593").to_string()),
            );
            put(
                "Protocol",
                s("Protocol").map(|p| match p.as_str() {
                    "6" => "tcp".into(),
                    "17" => "udp".into(),
                    _ => p,
                }),
            );
        }
        _ => {}
    }
    out
}

/// `S-1-16-12288` → `High`, as Sysmon writes integrity levels.
fn integrity_level(label: &str) -> String {
    match label {
        "S-1-16-0" => "Untrusted",
        "S-1-16-4096" => "Low",
        "S-1-16-8192" => "Medium",
        "S-1-16-8448" => "MediumPlus",
        "S-1-16-12288" => "High",
        "S-1-16-16384" => "System",
        "S-1-16-20480" => "Protected",
        other => other,
    }
    .to_string()
}

/// `\REGISTRY\MACHINE\SOFTWARE\..` → `HKLM\SOFTWARE\..`, as Sysmon writes keys.
fn registry_path(key: &str) -> String {
    let upper = key.to_ascii_uppercase();
    for (native, short) in [("\\REGISTRY\\MACHINE", "HKLM"), ("\\REGISTRY\\USER", "HKU")] {
        if upper.starts_with(native) {
            return format!("{short}{}", &key[native.len()..]);
        }
    }
    key.to_string()
}

/// Every category and service the taxonomy knows, for `rules check` and the docs.
pub fn known_logsources() -> impl Iterator<Item = RouteKey> {
    CATEGORIES
        .iter()
        .map(|(c, _)| RouteKey::Category(c))
        .chain(SERVICES.iter().map(|(s, _)| RouteKey::Service(s)))
        .chain(
            crate::linux::CATEGORIES
                .iter()
                .map(|c| RouteKey::Linux(c.name)),
        )
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteKey::Category(c) => write!(f, "category:{c}"),
            RouteKey::Service(s) => write!(f, "service:{s}"),
            RouteKey::AnyWindows => f.write_str("product:windows"),
            RouteKey::Linux(c) => write!(f, "product:linux/category:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    /// `routes_of` by comparing the record with every service and category in turn.
    fn routes_by_scan(event: &WinEvent) -> Vec<RouteKey> {
        let on = |c: &&str| c.eq_ignore_ascii_case(&event.channel);
        let mut out = vec![RouteKey::AnyWindows];
        for (name, channels) in SERVICES {
            if channels.iter().any(on) {
                out.push(RouteKey::Service(name));
            }
        }
        for (name, sources) in CATEGORIES {
            if sources
                .iter()
                .any(|(channels, ids)| ids.contains(&event.event_id) && channels.iter().any(on))
            {
                out.push(RouteKey::Category(name));
            }
        }
        out
    }

    #[test]
    fn routes_are_those_of_every_service_and_category_the_record_is_in() {
        let mut channels: Vec<String> = SERVICES
            .iter()
            .flat_map(|(_, c)| c.iter())
            .chain(
                CATEGORIES
                    .iter()
                    .flat_map(|(_, s)| s.iter().flat_map(|(c, _)| c.iter())),
            )
            .flat_map(|c| [c.to_string(), c.to_uppercase(), c.to_lowercase()])
            .collect();
        assert!(channels.iter().all(|c| c.len() < MAX_CHANNEL));
        channels.extend([
            "".into(),
            "Other".into(),
            "x".repeat(MAX_CHANNEL + 1),
            "Sécurité".into(),
        ]);
        let ids: Vec<u32> = CATEGORIES
            .iter()
            .flat_map(|(_, s)| s.iter().flat_map(|(_, ids)| ids.iter().copied()))
            .chain([0, 2, 7, 4624, 99_999])
            .collect();
        let mut routes = Vec::new();
        let mut checked = 0;
        for channel in &channels {
            for &id in &ids {
                let e = event(channel, id, serde_json::json!({}));
                routes_of(&e, &mut routes);
                assert_eq!(routes, routes_by_scan(&e), "{channel} {id}");
                checked += usize::from(routes.len() > 2);
            }
        }
        // Some records are in a service and a category.
        assert!(checked > 0);
    }

    fn event(channel: &str, id: u32, data: Value) -> WinEvent {
        let json = serde_json::json!({"Event": {
            "System": {"EventID": id, "Channel": channel, "Computer": "PC"},
            "EventData": data,
        }});
        WinEvent::from_json(
            Arc::from(Path::new("t.evtx")),
            1,
            chrono::DateTime::UNIX_EPOCH,
            json,
        )
        .unwrap()
    }

    #[test]
    fn routes_rules() {
        assert_eq!(
            route(Some("windows"), Some("process_creation"), None),
            Ok(RouteKey::Category("process_creation"))
        );
        assert_eq!(
            route(Some("Windows"), None, Some("Security")),
            Ok(RouteKey::Service("security"))
        );
        assert_eq!(route(Some("windows"), None, None), Ok(RouteKey::AnyWindows));
        assert_eq!(
            route(Some("linux"), Some("process_creation"), None),
            Ok(RouteKey::Linux("process_creation"))
        );
        assert_eq!(
            RouteKey::Linux("file_event").to_string(),
            "product:linux/category:file_event"
        );
        assert!(
            route(Some("linux"), None, Some("auditd"))
                .unwrap_err()
                .contains("auditd")
        );
        assert!(
            route(Some("macos"), Some("process_creation"), None)
                .unwrap_err()
                .contains("macos")
        );
        assert!(
            route(Some("windows"), Some("webserver"), None)
                .unwrap_err()
                .contains("webserver")
        );
        assert!(route(None, None, None).is_err());
    }

    #[test]
    fn routes_records() {
        let mut keys = Vec::new();
        routes_of(&event(SYSMON, 13, Value::Null), &mut keys);
        assert_eq!(
            keys,
            [
                RouteKey::AnyWindows,
                RouteKey::Service("sysmon"),
                RouteKey::Category("registry_event"),
                RouteKey::Category("registry_set")
            ]
        );
        routes_of(&event("Security", 4688, Value::Null), &mut keys);
        assert!(keys.contains(&RouteKey::Category("process_creation")));
        assert!(keys.contains(&RouteKey::Service("security")));
        routes_of(&event("Security", 4624, Value::Null), &mut keys);
        assert!(!keys.iter().any(|k| matches!(k, RouteKey::Category(_))));
    }

    #[test]
    fn security_4688_answers_to_sysmon_names() {
        let e = event(
            "Security",
            4688,
            serde_json::json!({
                "NewProcessName": "C:\\Windows\\System32\\whoami.exe", "NewProcessId": "0x1a4",
                "ProcessId": "0x10", "ParentProcessName": "C:\\Windows\\System32\\cmd.exe",
                "MandatoryLabel": "S-1-16-12288", "SubjectUserName": "bob", "SubjectDomainName": "CORP",
                "TargetUserName": "-", "SubjectLogonId": "0x3e7", "TargetLogonId": "0x0"
            }),
        );
        let a: std::collections::HashMap<_, _> = aliases(&e).into_iter().collect();
        assert_eq!(a["Image"], "C:\\Windows\\System32\\whoami.exe");
        assert_eq!(a["ParentImage"], "C:\\Windows\\System32\\cmd.exe");
        assert_eq!(a["ProcessId"], "420");
        assert_eq!(a["ParentProcessId"], "16");
        assert_eq!(a["IntegrityLevel"], "High");
        assert_eq!(a["User"], "CORP\\bob");
        assert_eq!(a["LogonId"], "0x3e7");
        assert!(aliases(&event(SYSMON, 1, Value::Null)).is_empty());
        let e = event(
            "Security",
            4657,
            serde_json::json!({"ObjectName": "\\REGISTRY\\MACHINE\\SOFTWARE\\X"}),
        );
        assert_eq!(
            aliases(&e)[0],
            ("TargetObject", Value::String("HKLM\\SOFTWARE\\X".into()))
        );
    }
}
