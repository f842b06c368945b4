//! What the provider mappers share: the columns every row carries, the process description
//! that fills the `InitiatingProcess*` (and target process) columns, and the small parsers
//! Windows values need (accounts, paths, hashes, times, logon ids, integrity levels, registry
//! keys, addresses).
//!
//! Everything here is total: a malformed value gives `None`, never a panic.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime, Utc};
use rampart_schema::{
    DeviceEvents, DeviceFileEvents, DeviceImageLoadEvents, DeviceLogonEvents, DeviceNetworkEvents,
    DeviceProcessEvents, DeviceRegistryEvents, IdentityDirectoryEvents, IdentityLogonEvents,
    IdentityQueryEvents, Row,
};
use serde_json::{Map, Value};

use crate::json;
use crate::winevent::{WinEvent, parse_int};

/// Extra `AdditionalFields` entries a mapper adds under Defender's names. The raw record's
/// fields come first and win a clash, so nothing of the record is ever overwritten.
pub(crate) type Extras<'a> = &'a [(&'a str, Value)];

// ---------------------------------------------------------------------------------------------
// Reading fields
// ---------------------------------------------------------------------------------------------

/// A field as owned text; `None` when absent, empty or `-`.
pub(crate) fn text(ev: &WinEvent, key: &str) -> Option<String> {
    ev.get_str(key).map(|s| s.into_owned())
}

/// A field as trimmed text; `None` when absent or blank.
pub(crate) fn trimmed(ev: &WinEvent, key: &str) -> Option<String> {
    let s = ev.get_str(key)?;
    let t = s.trim();
    (!t.is_empty() && t != "-").then(|| t.to_string())
}

/// A field that Windows fills with a placeholder when it does not know (`?`, `Unknown`, `-`,
/// `%%1793` "<value not set>"): the placeholders become `None`.
pub(crate) fn known(ev: &WinEvent, key: &str) -> Option<String> {
    trimmed(ev, key).filter(|s| {
        !matches!(
            s.as_str(),
            "?" | "Unknown" | "unknown" | "<unknown process>" | "%%1793"
        )
    })
}

/// A boolean field (`true`/`false` as JSON or text, any case).
pub(crate) fn flag(ev: &WinEvent, key: &str) -> Option<bool> {
    match ev.fields.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The first of several keys that is present (providers rename fields across versions).
pub(crate) fn first_text(ev: &WinEvent, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| text(ev, k))
}

/// A SID, except the NULL SID `S-1-0-0` Windows writes when there is none.
pub(crate) fn sid(ev: &WinEvent, key: &str) -> Option<String> {
    trimmed(ev, key).filter(|s| s != "S-1-0-0")
}

/// A logon id (`0x3e7` or decimal).
pub(crate) fn logon_id(ev: &WinEvent, key: &str) -> Option<i64> {
    ev.get_i64(key)
}

/// A port; 0 (no port) and out-of-range values are `None`.
pub(crate) fn port(ev: &WinEvent, key: &str) -> Option<i32> {
    ev.get_i64(key)
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as i32)
}

/// The unnamed `<Data>` items of classic providers, in order.
pub(crate) fn data_items(ev: &WinEvent) -> Vec<&str> {
    fn items(v: &Value) -> Vec<&str> {
        match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::Object(o) => o.get("#text").map(items).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
    ev.fields.get("Data").map(items).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// `DOMAIN\user` → (`DOMAIN`, `user`); `user@domain` → (`domain`, `user`); `user` → (None, `user`).
pub(crate) fn split_account(account: &str) -> (Option<String>, Option<String>) {
    let account = account.trim();
    let non_empty = |s: &str| (!s.is_empty() && s != "-").then(|| s.to_string());
    if let Some((domain, name)) = account.rsplit_once('\\') {
        (non_empty(domain), non_empty(name))
    } else if let Some((name, domain)) = account.rsplit_once('@') {
        (non_empty(domain), non_empty(name))
    } else {
        (None, non_empty(account))
    }
}

/// The last component of a Windows (or `/`) path; `None` for an empty one.
pub(crate) fn file_name(path: &str) -> Option<String> {
    let name = path
        .trim_end_matches(['\\', '/'])
        .rsplit(['\\', '/'])
        .next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// A path as Defender shows it in `FolderPath`: the full path of the file, with the
/// `\??\` prefix of NT paths removed.
pub(crate) fn folder_path(path: &str) -> Option<String> {
    let p = path.trim();
    let p = p.strip_prefix(r"\??\").unwrap_or(p);
    (!p.is_empty()).then(|| p.to_string())
}

/// The executable of a command line: the quoted first token, or the text up to the first
/// executable extension followed by a blank (unquoted paths with spaces), or the first token.
pub(crate) fn executable(command_line: &str) -> Option<&str> {
    let cmd = command_line.trim();
    if let Some(rest) = cmd.strip_prefix('"') {
        let exe = rest.split('"').next().unwrap_or(rest).trim();
        return (!exe.is_empty()).then_some(exe);
    }
    let lower = cmd.to_ascii_lowercase();
    for ext in [
        ".exe", ".sys", ".dll", ".com", ".bat", ".cmd", ".ps1", ".scr",
    ] {
        let mut from = 0;
        while let Some(i) = lower.get(from..).and_then(|s| s.find(ext)) {
            let end = from + i + ext.len();
            let after = lower.get(end..).unwrap_or_default();
            if after.is_empty() || after.starts_with([' ', '\t']) {
                return cmd.get(..end);
            }
            from = end;
        }
    }
    cmd.split_whitespace().next()
}

/// The hashes Sysmon writes as `SHA1=..,MD5=..,SHA256=..,IMPHASH=..`, lowercased as Defender
/// shows them.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Hashes {
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub md5: Option<String>,
}

pub(crate) fn hashes(text: &str) -> Hashes {
    let mut h = Hashes::default();
    for part in text.split(',') {
        let Some((algo, value)) = part.split_once('=') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        // Named without an upper-cased copy of the name: an allocation per algorithm, per record.
        let algo = algo.trim();
        let slot = if algo.eq_ignore_ascii_case("SHA1") {
            &mut h.sha1
        } else if algo.eq_ignore_ascii_case("SHA256") {
            &mut h.sha256
        } else if algo.eq_ignore_ascii_case("MD5") {
            &mut h.md5
        } else {
            continue;
        };
        *slot = Some(value.to_ascii_lowercase());
    }
    h
}

/// Sysmon's `UtcTime` / `CreationUtcTime` (`2019-03-18 17:35:24.123`).
pub(crate) fn sysmon_time(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// The process start time a Sysmon process GUID carries: `{MMMMMMMM-TTTT-tttt-...}` holds the
/// start time in Unix seconds as `0xttttTTTT` (second precision). Values outside 2000..2100
/// (the all-zero GUID, other producers' GUIDs) give `None`.
pub(crate) fn sysmon_guid_time(guid: &str) -> Option<DateTime<Utc>> {
    let mut parts = guid.trim().trim_matches(['{', '}']).split('-');
    let (_, low, high) = (parts.next()?, parts.next()?, parts.next()?);
    if low.len() != 4 || high.len() != 4 {
        return None;
    }
    let half = |hex: &str| {
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| u32::from_str_radix(hex, 16).ok())?
    };
    let secs = i64::from(half(high)? << 16 | half(low)?);
    // 2000-01-01 .. 2100-01-01
    if !(946_684_800..4_102_444_800).contains(&secs) {
        return None;
    }
    DateTime::from_timestamp(secs, 0)
}

/// An integrity level as Defender names it, from Sysmon's label or a mandatory-label SID.
pub(crate) fn integrity_level(value: &str) -> Option<String> {
    let v = value.trim();
    let name = match v.to_ascii_uppercase().as_str() {
        "S-1-16-0" => "Untrusted",
        "S-1-16-4096" => "Low",
        "S-1-16-8192" | "S-1-16-8448" => "Medium",
        "S-1-16-12288" => "High",
        "S-1-16-16384" => "System",
        "S-1-16-20480" | "S-1-16-28672" => "Protected",
        "" | "-" | "?" => return None,
        _ => return Some(v.to_string()),
    };
    Some(name.to_string())
}

/// `TokenElevationType` (`%%1936`/`%%1937`/`%%1938`) as Defender names it.
pub(crate) fn token_elevation(value: &str) -> Option<String> {
    let name = match value.trim() {
        "%%1936" | "1" => "TokenElevationTypeDefault",
        "%%1937" | "2" => "TokenElevationTypeFull",
        "%%1938" | "3" => "TokenElevationTypeLimited",
        _ => return None,
    };
    Some(name.to_string())
}

/// A registry path with its hive spelt out as Defender shows it (`HKLM\..` and
/// `\REGISTRY\MACHINE\..` → `HKEY_LOCAL_MACHINE\..`).
pub(crate) fn registry_key(path: &str) -> String {
    const HIVES: [(&str, &str); 9] = [
        ("HKLM", "HKEY_LOCAL_MACHINE"),
        ("HKU", "HKEY_USERS"),
        ("HKCU", "HKEY_CURRENT_USER"),
        ("HKCR", "HKEY_CLASSES_ROOT"),
        ("HKCC", "HKEY_CURRENT_CONFIG"),
        (r"\REGISTRY\MACHINE", "HKEY_LOCAL_MACHINE"),
        (r"\REGISTRY\USER", "HKEY_USERS"),
        (r"\REGISTRY\A", r"\REGISTRY\A"),
        (r"\REGISTRY\WC", r"\REGISTRY\WC"),
    ];
    let path = path.trim();
    for (short, long) in HIVES {
        let Some(head) = path.get(..short.len()) else {
            continue;
        };
        let rest = path.get(short.len()..).unwrap_or_default();
        if head.eq_ignore_ascii_case(short) && (rest.is_empty() || rest.starts_with('\\')) {
            return format!("{long}{rest}");
        }
    }
    path.to_string()
}

/// Splits a registry value path into (key, value name).
pub(crate) fn split_registry_value(path: &str) -> (String, Option<String>) {
    match path.rsplit_once('\\') {
        Some((key, value)) => (key.to_string(), Some(value.to_string())),
        None => (path.to_string(), None),
    }
}

/// An IP address in canonical text (compressed IPv6, IPv4-mapped IPv6 as IPv4); text that
/// does not parse is kept as written, and `-`/empty give `None`.
pub(crate) fn ip(ev: &WinEvent, key: &str) -> Option<String> {
    let raw = trimmed(ev, key)?;
    Some(match raw.parse::<IpAddr>() {
        Ok(addr) => addr.to_canonical().to_string(),
        Err(_) => raw,
    })
}

/// Defender's `*IPType` for an address.
pub(crate) fn ip_type(addr: Option<&str>) -> Option<String> {
    let addr: IpAddr = addr?.parse().ok()?;
    let kind = match addr.to_canonical() {
        a if a.is_loopback() => "Loopback",
        a if a.is_unspecified() => "Reserved",
        a if a.is_multicast() => "Multicast",
        IpAddr::V4(v4) if v4.is_broadcast() => "Broadcast",
        // RFC 1918 and the shared (CGNAT) range 100.64.0.0/10.
        IpAddr::V4(v4)
            if v4.is_private() || (v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64) =>
        {
            "Private"
        }
        IpAddr::V4(v4) if v4.is_link_local() => "LinkLocal",
        IpAddr::V6(v6) if v6.is_unicast_link_local() => "LinkLocal",
        IpAddr::V6(v6) if v6.is_unique_local() => "Private",
        IpAddr::V6(v6) if v6.segments()[0] == 0x2001 && v6.segments()[1] == 0 => "Teredo",
        _ => "Public",
    };
    Some(kind.to_string())
}

/// A transport protocol as Defender names it (`Tcp`, `Udp`, ...), from a name or an IANA number.
pub(crate) fn protocol_name(value: &str) -> Option<String> {
    let v = value.trim();
    let name = match v.to_ascii_lowercase().as_str() {
        "6" | "tcp" => "Tcp",
        "17" | "udp" => "Udp",
        "1" | "icmp" => "Icmp",
        "58" | "icmpv6" => "IcmpV6",
        "" | "-" => return None,
        _ => return Some(v.to_string()),
    };
    Some(name.to_string())
}

/// Why a logon failed, from an NTSTATUS code (4625 `SubStatus`/`Status`, 4776 `Status`), in
/// the words Defender uses; an unknown code is kept as written.
pub(crate) fn ntstatus_reason(code: &str) -> Option<String> {
    let value = parse_int(code)?;
    let reason = match value as u32 {
        0 => return None,
        0xC000_0064 => "UnknownUser",
        0xC000_006A => "WrongPassword",
        0xC000_006D => "InvalidUserNameOrPassword",
        0xC000_006E => "AccountRestriction",
        0xC000_006F => "TimeRestriction",
        0xC000_0070 => "WorkstationRestriction",
        0xC000_0071 => "PasswordExpired",
        0xC000_0072 => "AccountDisabled",
        0xC000_005E => "NoLogonServers",
        0xC000_0133 => "ClockOutOfSync",
        0xC000_015B => "LogonTypeNotGranted",
        0xC000_018C => "TrustFailure",
        0xC000_0192 => "NetlogonNotStarted",
        0xC000_0193 => "AccountExpired",
        0xC000_0224 => "MustChangePassword",
        0xC000_0234 => "AccountLocked",
        0xC000_0413 => "AuthenticationFirewallFailed",
        _ => return Some(format!("{:#x}", value as u32)),
    };
    Some(reason.to_string())
}

// ---------------------------------------------------------------------------------------------
// Device identity
// ---------------------------------------------------------------------------------------------

/// `DeviceName`: the record's `Computer`, trimmed and lowercased (Defender shows the FQDN in
/// lower case; a record gives whatever name the machine had, FQDN or NetBIOS).
pub(crate) fn device_name(ev: &WinEvent) -> Option<String> {
    let name = ev.computer.trim();
    (!name.is_empty()).then(|| name.to_lowercase())
}

/// `DeviceId`: 32 lowercase hex digits, the FNV-1a 128-bit hash of the lowercased `Computer`.
/// Stable across runs, versions and platforms; the same name always gives the same id.
pub(crate) fn device_id(device_name: &str) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = device_name
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    // Written digit by digit: through `format!` this was most of the function's cost.
    (0..32)
        .rev()
        .map(|i| char::from(b"0123456789abcdef"[((hash >> (4 * i)) & 0xf) as usize]))
        .collect()
}

/// `ReportId`: the record's `EventRecordID` as written in its XML (exported logs renumber the
/// record headers from 1 but keep the original id there), else the header's record number.
pub(crate) fn report_id(ev: &WinEvent) -> Option<i64> {
    ev.get_i64("EventRecordID")
        .or_else(|| i64::try_from(ev.record_id).ok())
}

/// Every key a mapper adds to `AdditionalFields` under Defender's names ([`Extras`]), so that
/// [`super::rebuild`] can tell them from the record's own fields. A mapper adding a key not
/// listed here fails the debug assertion in [`raw_fields`] (and with it the tests that map
/// every provider's records).
pub(crate) const ADDED_KEYS: &[&str] = &[
    // Sysmon 10.
    "DesiredAccess",
    // Sysmon 17, 18.
    "FileOperation",
    "NamedPipeEnd",
    // System 7045, Security 4697.
    "ServiceStartType",
    "ServiceAccount",
    // PowerShell 4103, classic 400/403/600/800.
    "Command",
    // Defender detections.
    "ThreatName",
    // Group membership changes on a domain controller.
    "TO.GROUP",
    "FROM.GROUP",
    "TARGET_OBJECT.USER",
];

/// The record's fields (plus the mapper's extras) as the `AdditionalFields` object.
pub(crate) fn raw_fields(ev: &WinEvent, extras: Extras) -> Map<String, Value> {
    let mut map: Map<String, Value> = ev
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in added(ev, extras) {
        map.insert(key.to_string(), value.clone());
    }
    map
}

/// [`raw_fields`] as JSON text, written from the record as it is (no copy of its fields):
/// most rows store it so, once per event on the server's ingest path. A forwarded record's
/// fields come as the text they were read from ([`WinEvent::fields_json`]); others are written
/// as `serde_json` writes them, their strings escaped eight bytes at a time ([`json::push_str`]):
/// through `serde_json`'s serializer this was ~8 % of the server's work.
pub(crate) fn raw_fields_json(ev: &WinEvent, extras: Extras) -> String {
    let mut out;
    match ev.fields_json() {
        Some(members) => {
            out = String::with_capacity(members.len() + 128);
            out.push('{');
            out.push_str(members);
        }
        None => {
            // Room for a record of about the average size (a forwarded line is ~1.1 KB):
            // grown from less, the text was copied on the way.
            out = String::with_capacity(2048);
            out.push('{');
            for (key, value) in &ev.fields {
                push_member(&mut out, key, value);
            }
        }
    }
    for (key, value) in added(ev, extras) {
        push_member(&mut out, key, value);
    }
    out.push('}');
    out
}

/// Appends `"key":value` to the members of an object begun in `out`.
fn push_member(out: &mut String, key: &str, value: &Value) {
    if !out.ends_with('{') {
        out.push(',');
    }
    json::push_str(out, key);
    out.push(':');
    match value {
        Value::String(text) => json::push_str(out, text),
        // Ids, levels, versions: about ten integers a record, written by `itoa` (through
        // `Display` they were 2 % of the server's instructions in one build).
        Value::Number(n) if let Some(u) = n.as_u64() => {
            out.push_str(itoa::Buffer::new().format(u));
        }
        Value::Number(n) if let Some(i) = n.as_i64() => {
            out.push_str(itoa::Buffer::new().format(i));
        }
        // Fractions, lists, booleans: rare.
        other => out.push_str(&other.to_string()),
    }
}

/// The extras `AdditionalFields` adds to the record's fields: those with a value whose key the
/// record (or an earlier extra) does not have.
fn added<'a>(ev: &'a WinEvent, extras: Extras<'a>) -> impl Iterator<Item = (&'a str, &'a Value)> {
    extras
        .iter()
        .enumerate()
        .filter_map(move |(i, (key, value))| {
            debug_assert!(
                ADDED_KEYS.contains(key),
                "{key}: an AdditionalFields key a mapper adds must be listed in ADDED_KEYS"
            );
            let earlier = extras[..i].iter().any(|(k, v)| k == key && !v.is_null());
            (!value.is_null() && !earlier && !ev.fields.contains_key(*key)).then_some((*key, value))
        })
}

// ---------------------------------------------------------------------------------------------
// Device* rows
// ---------------------------------------------------------------------------------------------

/// The columns every `Device*` row carries.
pub(crate) struct Base {
    timestamp: DateTime<Utc>,
    device_id: Option<String>,
    device_name: Option<String>,
    action_type: String,
    report_id: Option<i64>,
    additional_fields: Option<String>,
}

/// A process as the mappers know it, for the `InitiatingProcess*` columns or, on process and
/// API-call events, the target process columns.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Proc {
    /// Full path of the image (Defender's `FolderPath` holds the file name too).
    pub folder_path: Option<String>,
    pub file_name: Option<String>,
    pub id: Option<i64>,
    pub command_line: Option<String>,
    pub creation_time: Option<DateTime<Utc>>,
    pub account_domain: Option<String>,
    pub account_name: Option<String>,
    pub account_sid: Option<String>,
    pub logon_id: Option<i64>,
    pub integrity_level: Option<String>,
    pub token_elevation: Option<String>,
    pub session_id: Option<i64>,
    pub hashes: Hashes,
    pub company: Option<String>,
    pub product: Option<String>,
    pub product_version: Option<String>,
    pub description: Option<String>,
    pub original_file_name: Option<String>,
}

impl Proc {
    /// Sets the image from a path (full path and file name).
    pub fn with_image(mut self, path: Option<String>) -> Proc {
        if let Some(path) = path.as_deref().and_then(folder_path) {
            self.file_name = file_name(&path);
            self.folder_path = Some(path);
        }
        self
    }

    /// Sets the account from `DOMAIN\user`.
    pub fn with_user(mut self, user: Option<String>) -> Proc {
        if let Some(user) = user {
            (self.account_domain, self.account_name) = split_account(&user);
        }
        self
    }
}

/// A `Device*` table, so the mappers fill the shared columns once for all of them.
pub(crate) trait DeviceRow: Default + Into<Row> {
    /// Whether the table has `AdditionalFields` (not `DeviceRegistryEvents` and
    /// `DeviceImageLoadEvents`: the raw fields of those rows are not kept).
    const KEEPS_RAW: bool;
    fn set_base(&mut self, base: Base);
    /// Fills the `InitiatingProcess*` columns the table has.
    fn set_initiating(&mut self, p: &Proc);
}

macro_rules! device_row {
    ($table:ident, raw: $raw:tt, [$($extra:ident),*]) => {
        impl DeviceRow for $table {
            const KEEPS_RAW: bool = $raw;

            fn set_base(&mut self, base: Base) {
                self.timestamp = Some(base.timestamp);
                self.device_id = base.device_id;
                self.device_name = base.device_name;
                self.action_type = Some(base.action_type);
                self.report_id = base.report_id;
                device_row!(@raw $raw, self, base);
            }

            fn set_initiating(&mut self, p: &Proc) {
                self.initiating_process_folder_path = p.folder_path.clone();
                self.initiating_process_file_name = p.file_name.clone();
                self.initiating_process_id = p.id;
                self.initiating_process_command_line = p.command_line.clone();
                self.initiating_process_creation_time = p.creation_time;
                self.initiating_process_account_domain = p.account_domain.clone();
                self.initiating_process_account_name = p.account_name.clone();
                self.initiating_process_account_sid = p.account_sid.clone();
                self.initiating_process_session_id = p.session_id;
                self.initiating_process_sha1 = p.hashes.sha1.clone();
                self.initiating_process_sha256 = p.hashes.sha256.clone();
                self.initiating_process_md5 = p.hashes.md5.clone();
                self.initiating_process_version_info_company_name = p.company.clone();
                self.initiating_process_version_info_product_name = p.product.clone();
                self.initiating_process_version_info_product_version = p.product_version.clone();
                self.initiating_process_version_info_file_description = p.description.clone();
                self.initiating_process_version_info_original_file_name =
                    p.original_file_name.clone();
                $(device_row!(@$extra self, p);)*
            }
        }
    };
    (@raw true, $row:ident, $base:ident) => {
        $row.additional_fields = $base.additional_fields;
    };
    (@raw false, $row:ident, $base:ident) => {
        let _ = $base.additional_fields;
    };
    (@integrity $row:ident, $p:ident) => {
        $row.initiating_process_integrity_level = $p.integrity_level.clone();
        $row.initiating_process_token_elevation = $p.token_elevation.clone();
    };
    (@logon_id $row:ident, $p:ident) => {
        $row.initiating_process_logon_id = $p.logon_id;
    };
}

device_row!(DeviceProcessEvents, raw: true, [integrity, logon_id]);
device_row!(DeviceNetworkEvents, raw: true, [integrity]);
device_row!(DeviceFileEvents, raw: true, [integrity]);
device_row!(DeviceLogonEvents, raw: true, [integrity]);
device_row!(DeviceEvents, raw: true, [logon_id]);
device_row!(DeviceRegistryEvents, raw: false, [integrity]);
device_row!(DeviceImageLoadEvents, raw: false, [integrity]);

/// A `Device*` row with its shared columns set: `Timestamp` (record time), `DeviceName`,
/// `DeviceId`, `ActionType`, `ReportId` (`EventRecordID`) and, where the table has it,
/// `AdditionalFields` (the record's fields and `extras`, as JSON text).
pub(crate) fn device<T: DeviceRow>(ev: &WinEvent, action: &str, extras: Extras) -> T {
    let device_name = device_name(ev);
    let mut row = T::default();
    row.set_base(Base {
        timestamp: ev.timestamp,
        device_id: device_name.as_deref().map(device_id),
        device_name,
        action_type: action.to_string(),
        report_id: report_id(ev),
        additional_fields: T::KEEPS_RAW.then(|| raw_fields_json(ev, extras)),
    });
    row
}

/// A `Device*` row whose initiating process is `p`.
pub(crate) fn device_by<T: DeviceRow>(ev: &WinEvent, action: &str, extras: Extras, p: &Proc) -> T {
    let mut row: T = device(ev, action, extras);
    row.set_initiating(p);
    row
}

/// Fills the created-process columns of a `DeviceProcessEvents` row.
pub(crate) fn set_created_process(row: &mut DeviceProcessEvents, p: Proc) {
    row.folder_path = p.folder_path;
    row.file_name = p.file_name;
    row.process_id = p.id;
    row.process_command_line = p.command_line;
    row.process_creation_time = p.creation_time;
    row.account_domain = p.account_domain;
    row.account_name = p.account_name;
    row.account_sid = p.account_sid;
    row.logon_id = p.logon_id;
    row.process_integrity_level = p.integrity_level;
    row.process_token_elevation = p.token_elevation;
    row.created_process_session_id = p.session_id;
    row.sha1 = p.hashes.sha1;
    row.sha256 = p.hashes.sha256;
    row.md5 = p.hashes.md5;
    row.process_version_info_company_name = p.company;
    row.process_version_info_product_name = p.product;
    row.process_version_info_product_version = p.product_version;
    row.process_version_info_file_description = p.description;
    row.process_version_info_original_file_name = p.original_file_name;
}

/// Fills the target-process columns of a `DeviceEvents` row (remote thread, process access,
/// termination).
pub(crate) fn set_target_process(row: &mut DeviceEvents, p: Proc) {
    row.folder_path = p.folder_path;
    row.file_name = p.file_name;
    row.process_id = p.id;
    row.process_command_line = p.command_line;
    row.process_creation_time = p.creation_time;
    row.process_token_elevation = p.token_elevation;
    row.account_domain = p.account_domain;
    row.account_name = p.account_name;
    row.account_sid = p.account_sid;
    row.logon_id = p.logon_id;
    row.created_process_session_id = p.session_id;
    row.sha1 = p.hashes.sha1;
    row.sha256 = p.hashes.sha256;
    row.md5 = p.hashes.md5;
}

/// A row with `FileName`, `FolderPath` and file hashes.
pub(crate) trait FileColumns {
    /// Sets the file from its path (nothing when there is none) and its hashes.
    fn set_file(&mut self, path: Option<String>, hashes: Hashes);
}

macro_rules! file_columns {
    ($($table:ident),*) => {$(
        impl FileColumns for $table {
            fn set_file(&mut self, path: Option<String>, hashes: Hashes) {
                if let Some(path) = path.as_deref().and_then(folder_path) {
                    self.file_name = file_name(&path);
                    self.folder_path = Some(path);
                }
                self.sha1 = hashes.sha1;
                self.sha256 = hashes.sha256;
                self.md5 = hashes.md5;
            }
        }
    )*};
}

file_columns!(DeviceEvents, DeviceFileEvents, DeviceImageLoadEvents);

// ---------------------------------------------------------------------------------------------
// Identity* rows
// ---------------------------------------------------------------------------------------------

/// An `Identity*` table (domain-controller activity).
pub(crate) trait IdentityRow: Default + Into<Row> {
    /// Sets `Timestamp`, `ActionType`, `Application` ("Active Directory"), `ReportId`
    /// (`EventRecordID` as text), `DestinationDeviceName` (the DC: `Computer`, lowercased) and
    /// `AdditionalFields` (the record's fields and `extras`, as a JSON object).
    fn set_base(&mut self, ev: &WinEvent, action: &str, extras: Extras);
    /// The acting account.
    fn set_account(&mut self, domain: Option<String>, name: Option<String>, sid: Option<String>);
}

macro_rules! identity_row {
    ($($table:ident),*) => {$(
        impl IdentityRow for $table {
            fn set_base(&mut self, ev: &WinEvent, action: &str, extras: Extras) {
                self.timestamp = Some(ev.timestamp);
                self.action_type = Some(action.to_string());
                self.application = Some("Active Directory".to_string());
                self.report_id = report_id(ev).map(|id| id.to_string());
                self.destination_device_name = device_name(ev);
                self.additional_fields = Some(Value::Object(raw_fields(ev, extras)));
            }

            fn set_account(
                &mut self,
                domain: Option<String>,
                name: Option<String>,
                sid: Option<String>,
            ) {
                self.account_domain = domain;
                self.account_name = name;
                self.account_sid = sid;
            }
        }
    )*};
}

identity_row!(
    IdentityLogonEvents,
    IdentityDirectoryEvents,
    IdentityQueryEvents
);

/// An `Identity*` row with its shared columns set.
pub(crate) fn identity<T: IdentityRow>(ev: &WinEvent, action: &str, extras: Extras) -> T {
    let mut row = T::default();
    row.set_base(ev, action, extras);
    row
}

// ---------------------------------------------------------------------------------------------
// Security-log conventions shared by several providers
// ---------------------------------------------------------------------------------------------

/// The `Subject*` account of a Security-style record: (domain, name, sid).
pub(crate) fn subject(ev: &WinEvent) -> (Option<String>, Option<String>, Option<String>) {
    (
        trimmed(ev, "SubjectDomainName"),
        trimmed(ev, "SubjectUserName"),
        sid(ev, "SubjectUserSid"),
    )
}

/// A process named by a Security-style record (`ProcessName` + hex `ProcessId`), run by the
/// record's subject.
pub(crate) fn subject_process(ev: &WinEvent, name_key: &str, id_key: &str) -> Proc {
    let (account_domain, account_name, account_sid) = subject(ev);
    Proc {
        // "0x0": no process.
        id: ev.get_i64(id_key).filter(|&id| id != 0),
        account_domain,
        account_name,
        account_sid,
        logon_id: logon_id(ev, "SubjectLogonId"),
        ..Proc::default()
    }
    .with_image(known(ev, name_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn additional_fields_keep_the_record_and_add_the_first_of_each_extra() {
        let mut fields = crate::winevent::Fields::default();
        fields.insert("EventID".into(), Value::from(4104));
        fields.insert("Command".into(), Value::from("record's"));
        let ev = WinEvent::from_fields(
            std::sync::Arc::from(std::path::Path::new("x.evtx")),
            1,
            DateTime::UNIX_EPOCH,
            fields,
        );
        let extras: Extras = &[
            ("Command", Value::from("mapper's")),
            ("ThreatName", Value::Null),
            ("ThreatName", Value::from("first")),
            ("ThreatName", Value::from("second")),
        ];
        let json = raw_fields_json(&ev, extras);
        assert_eq!(
            json,
            r#"{"EventID":4104,"Command":"record's","ThreatName":"first"}"#
        );
        assert_eq!(json, Value::Object(raw_fields(&ev, extras)).to_string());

        // Every kind of value, written as serde_json writes it.
        let mut fields = crate::winevent::Fields::default();
        for (key, value) in [
            ("Big", Value::from(u64::MAX)),
            ("Negative", Value::from(-42)),
            ("Zero", Value::from(0)),
            ("Fraction", Value::from(1.5e20)),
            ("Flag", Value::from(true)),
            ("List", serde_json::json!([1, "a\\b", null])),
            ("Nothing", Value::Null),
        ] {
            fields.insert(key.into(), value);
        }
        let ev = WinEvent::from_fields(ev.source.clone(), 1, DateTime::UNIX_EPOCH, fields);
        assert_eq!(
            raw_fields_json(&ev, &[]),
            Value::Object(raw_fields(&ev, &[])).to_string()
        );
    }

    /// A forwarded record's `AdditionalFields` copies its values' text (escapes as they came)
    /// and reads as the same object as the one written from its fields, extras included.
    #[test]
    fn additional_fields_of_forwarded_text_copy_its_values() {
        let line = r#"{"Event": {"System": {"EventID": 4104, "TimeCreated_attributes": {"SystemTime": "2024-05-01T10:00:00Z"}, "Computer": "ws\/1"}, "EventData": {"Command": "a\\b \u00e9", "Empty": null, "Big": 1.5e20, "Threat Name": "t", "List": [1, "x"]}}}"#;
        let mut ev = WinEvent::from_forwarded_slice(
            std::sync::Arc::from(std::path::Path::new("fwd")),
            line.as_bytes(),
        )
        .unwrap();
        assert!(ev.fields_json().is_some());
        let extras: Extras = &[
            ("Command", Value::from("mapper's")),
            ("ThreatName", Value::from("mapper's")),
            ("ServiceAccount", Value::from("added")),
        ];
        let json = raw_fields_json(&ev, extras);
        assert!(json.contains(r#""Computer":"ws\/1""#), "{json}");
        assert!(json.contains(r#""Empty":"""#), "{json}");
        assert!(json.ends_with(r#","ServiceAccount":"added"}"#), "{json}");
        let object = Value::Object(raw_fields(&ev, extras));
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), object);
        ev.fields_changed();
        assert_eq!(raw_fields_json(&ev, extras), object.to_string());
    }

    #[test]
    fn splits_accounts() {
        assert_eq!(
            split_account(r"IEWIN7\IEUser"),
            (Some("IEWIN7".into()), Some("IEUser".into()))
        );
        assert_eq!(
            split_account("bob@CORP.LOCAL"),
            (Some("CORP.LOCAL".into()), Some("bob".into()))
        );
        assert_eq!(split_account("bob"), (None, Some("bob".into())));
        assert_eq!(split_account(r"\"), (None, None));
    }

    #[test]
    fn paths_and_executables() {
        assert_eq!(file_name(r"C:\Windows\cmd.exe").as_deref(), Some("cmd.exe"));
        assert_eq!(file_name("System").as_deref(), Some("System"));
        assert_eq!(file_name(""), None);
        assert_eq!(
            folder_path(r"\??\C:\x\y.sys").as_deref(),
            Some(r"C:\x\y.sys")
        );
        assert_eq!(
            executable(r#""C:\Program Files\a b\s.exe" -k x"#),
            Some(r"C:\Program Files\a b\s.exe")
        );
        assert_eq!(
            executable(r"C:\Program Files\a b\s.exe -k x"),
            Some(r"C:\Program Files\a b\s.exe")
        );
        assert_eq!(
            executable(r"%SystemRoot%\system32\svchost.exe -k netsvcs"),
            Some(r"%SystemRoot%\system32\svchost.exe")
        );
        assert_eq!(executable("cmd.exe"), Some("cmd.exe"));
        assert_eq!(executable("powershell -nop"), Some("powershell"));
        assert_eq!(executable(r#"""#), None);
        assert_eq!(executable(""), None);
    }

    #[test]
    fn parses_hashes() {
        let h = hashes("SHA1=AB12,MD5=CD34,SHA256=EF56,IMPHASH=00");
        assert_eq!(h.sha1.as_deref(), Some("ab12"));
        assert_eq!(h.md5.as_deref(), Some("cd34"));
        assert_eq!(h.sha256.as_deref(), Some("ef56"));
        assert_eq!(hashes("Unknown"), Hashes::default());
        assert_eq!(hashes("SHA1=zz,=,MD5"), Hashes::default());
    }

    #[test]
    fn parses_times() {
        let t = sysmon_time("2019-03-18 17:35:24.123").unwrap();
        assert_eq!(t.to_rfc3339(), "2019-03-18T17:35:24.123+00:00");
        assert_eq!(sysmon_time("yesterday"), None);
        let t = sysmon_guid_time("{365abb72-7c01-5cc4-0000-00102b3e0c00}").unwrap();
        assert_eq!(t.to_rfc3339(), "2019-04-27T15:57:53+00:00");
        assert_eq!(
            sysmon_guid_time("{00000000-0000-0000-0000-000000000000}"),
            None
        );
        assert_eq!(sysmon_guid_time("{x-ü-y}"), None);
    }

    #[test]
    fn names_levels_and_keys() {
        assert_eq!(integrity_level("S-1-16-12288").as_deref(), Some("High"));
        assert_eq!(integrity_level("Medium").as_deref(), Some("Medium"));
        assert_eq!(
            token_elevation("%%1937").as_deref(),
            Some("TokenElevationTypeFull")
        );
        assert_eq!(
            registry_key(r"HKLM\SOFTWARE\x"),
            r"HKEY_LOCAL_MACHINE\SOFTWARE\x"
        );
        assert_eq!(registry_key(r"HKU\S-1-5\x"), r"HKEY_USERS\S-1-5\x");
        assert_eq!(
            registry_key(r"\REGISTRY\MACHINE\SYSTEM"),
            r"HKEY_LOCAL_MACHINE\SYSTEM"
        );
        assert_eq!(registry_key("HKLMX"), "HKLMX");
        assert_eq!(registry_key("é"), "é");
    }

    #[test]
    fn classifies_addresses() {
        assert_eq!(ip_type(Some("10.0.2.15")).as_deref(), Some("Private"));
        assert_eq!(ip_type(Some("8.8.8.8")).as_deref(), Some("Public"));
        assert_eq!(ip_type(Some("127.0.0.1")).as_deref(), Some("Loopback"));
        assert_eq!(ip_type(Some("fe80::1")).as_deref(), Some("LinkLocal"));
        assert_eq!(
            ip_type(Some("239.255.255.250")).as_deref(),
            Some("Multicast")
        );
        assert_eq!(
            ip_type(Some("::ffff:192.168.1.1")).as_deref(),
            Some("Private")
        );
        assert_eq!(ip_type(Some("nonsense")), None);
        assert_eq!(protocol_name("tcp").as_deref(), Some("Tcp"));
        assert_eq!(protocol_name("17").as_deref(), Some("Udp"));
    }

    #[test]
    fn names_failures() {
        assert_eq!(
            ntstatus_reason("0xc000006a").as_deref(),
            Some("WrongPassword")
        );
        assert_eq!(ntstatus_reason("0x0"), None);
        assert_eq!(ntstatus_reason("0xc0000999").as_deref(), Some("0xc0000999"));
        assert_eq!(ntstatus_reason("-"), None);
    }

    #[test]
    fn device_ids_are_stable() {
        assert_eq!(device_id("pc01"), device_id("pc01"));
        assert_ne!(device_id("pc01"), device_id("pc02"));
        assert_eq!(device_id("").len(), 32);
        // Pinned: stored rows and alerts carry these ids.
        assert_eq!(device_id(""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(device_id("pc01"), "69ef389046757277b806e99dabadfcdf");
    }
}
