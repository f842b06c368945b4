//! Evidence entities from a hunting-schema row and from the fields a Sigma rule matched.
//!
//! Roles follow Defender: the device and the accounts the activity ran as are `Impacted`;
//! processes are `Parent`/`Child` on process creation and `Related` elsewhere; everything
//! else is `Related`. Empty, `-` and `null` values never make an entity.

use chrono::{DateTime, Utc};
use rampart_schema::Row;
use serde_json::Value;

use crate::entity::{Entity, EntityData, Role};

/// The entities of `row`, device first, without duplicates (two entities sharing a key are
/// one; `Impacted` wins over another role). `computer` (the record's `Computer`) names the
/// device for tables without a `DeviceName` of their own.
pub fn entities_from_row(row: &Row, computer: &str) -> Vec<Entity> {
    let mut c = Collector::new(computer);
    c.row(row);
    c.entities
}

/// The entities of a detection: those of its row (when there is one; a Sigma correlation has
/// none), then those only the matched fields name.
pub fn entities_of(row: Option<&Row>, computer: &str, matched: &[(String, Value)]) -> Vec<Entity> {
    let mut c = Collector::new(computer);
    if let Some(row) = row {
        c.row(row);
    }
    c.matched(matched);
    c.entities
}

/// A value worth keeping: trimmed, not empty, not a placeholder.
fn clean(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    (!v.is_empty() && v != "-" && !v.eq_ignore_ascii_case("null")).then(|| v.to_string())
}

/// The process columns a row has, borrowed.
struct ProcessColumns<'a> {
    pid: Option<i64>,
    image: Option<&'a str>,
    file_name: Option<&'a str>,
    command_line: Option<&'a str>,
    sha1: Option<&'a str>,
    sha256: Option<&'a str>,
    creation_time: Option<DateTime<Utc>>,
}

/// The account columns a row has, borrowed.
struct AccountColumns<'a> {
    domain: Option<&'a str>,
    name: Option<&'a str>,
    sid: Option<&'a str>,
    upn: Option<&'a str>,
}

/// The `InitiatingProcess*` columns every `Device*` table shares (the generated row structs
/// have no common trait, so a macro reads the same field names from each).
macro_rules! initiating_process {
    ($r:expr) => {
        ProcessColumns {
            pid: $r.initiating_process_id,
            image: $r.initiating_process_folder_path.as_deref(),
            file_name: $r.initiating_process_file_name.as_deref(),
            command_line: $r.initiating_process_command_line.as_deref(),
            sha1: $r.initiating_process_sha1.as_deref(),
            sha256: $r.initiating_process_sha256.as_deref(),
            creation_time: $r.initiating_process_creation_time,
        }
    };
}

macro_rules! initiating_account {
    ($r:expr) => {
        AccountColumns {
            domain: $r.initiating_process_account_domain.as_deref(),
            name: $r.initiating_process_account_name.as_deref(),
            sid: $r.initiating_process_account_sid.as_deref(),
            upn: $r.initiating_process_account_upn.as_deref(),
        }
    };
}

/// `Account*` columns; `upn` for tables that have `AccountUpn`.
macro_rules! account {
    ($r:expr) => {
        account!($r, None)
    };
    ($r:expr, $upn:expr) => {
        AccountColumns {
            domain: $r.account_domain.as_deref(),
            name: $r.account_name.as_deref(),
            sid: $r.account_sid.as_deref(),
            upn: $upn,
        }
    };
}

struct Collector {
    /// The device name processes, files and registry keys are scoped to.
    device: Option<String>,
    computer: Option<String>,
    entities: Vec<Entity>,
}

impl Collector {
    fn new(computer: &str) -> Collector {
        let computer = clean(Some(computer)).map(|c| c.to_lowercase());
        Collector {
            device: computer.clone(),
            computer,
            entities: Vec::new(),
        }
    }

    fn add(&mut self, data: EntityData, role: Role) {
        let entity = Entity::new(data, role);
        let keys = entity.keys();
        if let Some(known) = self
            .entities
            .iter_mut()
            .find(|e| e.kind() == entity.kind() && e.keys().iter().any(|k| keys.contains(k)))
        {
            if role == Role::Impacted {
                known.role = Role::Impacted;
            }
            return;
        }
        self.entities.push(entity);
    }

    /// The device the row happened on. It scopes the row's processes, files and registry keys.
    fn own_device(&mut self, name: Option<&str>, id: Option<&str>) {
        let name = clean(name)
            .map(|n| n.to_lowercase())
            .or(self.computer.clone());
        if let Some(name) = name {
            self.device = Some(name.clone());
            self.add(
                EntityData::Device {
                    name,
                    id: clean(id),
                },
                Role::Impacted,
            );
        }
    }

    /// Another device the row names (a logon's source, a DC). A name that is an address is an
    /// address.
    fn other_device(&mut self, name: Option<&str>) {
        let Some(name) = clean(name) else { return };
        if name.parse::<std::net::IpAddr>().is_ok() {
            self.ip(Some(&name));
            return;
        }
        self.add(
            EntityData::Device {
                name: name.to_lowercase(),
                id: None,
            },
            Role::Related,
        );
    }

    fn account(&mut self, a: AccountColumns, role: Role) {
        let (name, domain, sid, upn) = (
            clean(a.name),
            clean(a.domain),
            clean(a.sid).filter(|s| s != "S-1-0-0"),
            clean(a.upn),
        );
        if name.is_none() && sid.is_none() && upn.is_none() {
            return;
        }
        self.add(
            EntityData::Account {
                name,
                domain,
                sid,
                upn,
            },
            role,
        );
    }

    fn process(&mut self, p: ProcessColumns, role: Role) {
        let image = clean(p.image);
        let file_name = clean(p.file_name).or_else(|| image.as_deref().and_then(last_component));
        if p.pid.is_none() && image.is_none() && file_name.is_none() {
            return;
        }
        self.add(
            EntityData::Process {
                device: self.device.clone(),
                pid: p.pid,
                image,
                file_name,
                command_line: clean(p.command_line),
                sha1: clean(p.sha1).map(|h| h.to_lowercase()),
                sha256: clean(p.sha256).map(|h| h.to_lowercase()),
                creation_time: p.creation_time,
            },
            role,
        );
    }

    fn file(
        &mut self,
        name: Option<&str>,
        path: Option<&str>,
        hashes: [Option<&str>; 3],
        role: Role,
    ) {
        let folder_path = clean(path);
        let name = clean(name).or_else(|| folder_path.as_deref().and_then(last_component));
        let [sha1, sha256, md5] = hashes.map(|h| clean(h).map(|h| h.to_lowercase()));
        if name.is_none() && folder_path.is_none() && sha1.is_none() && sha256.is_none() {
            return;
        }
        self.add(
            EntityData::File {
                device: self.device.clone(),
                name,
                folder_path,
                sha1,
                sha256,
                md5,
            },
            role,
        );
    }

    fn ip(&mut self, address: Option<&str>) {
        if let Some(address) = clean(address) {
            // Canonical text, so `::ffff:10.0.0.5` and `10.0.0.5` are one address.
            let address = match address.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_canonical().to_string(),
                Err(_) => address,
            };
            self.add(EntityData::Ip { address }, Role::Related);
        }
    }

    /// `RemoteUrl` holds a URL or, for connections and DNS, a host name.
    fn url_or_domain(&mut self, value: Option<&str>) {
        let Some(value) = clean(value) else { return };
        if value.contains("://") {
            self.add(EntityData::Url { url: value }, Role::Related);
        } else if value.parse::<std::net::IpAddr>().is_ok() {
            self.ip(Some(&value));
        } else {
            self.add(EntityData::Domain { name: value }, Role::Related);
        }
    }

    fn registry(&mut self, key: Option<&str>, value_name: Option<&str>, data: Option<&str>) {
        let Some(key) = clean(key) else { return };
        let device = self.device.clone();
        match clean(value_name) {
            Some(name) => self.add(
                EntityData::RegistryValue {
                    device,
                    key,
                    name,
                    data: clean(data),
                },
                Role::Related,
            ),
            None => self.add(EntityData::RegistryKey { device, key }, Role::Related),
        }
    }

    fn mailbox(&mut self, address: Option<&str>, role: Role) {
        if let Some(address) = clean(address) {
            self.add(EntityData::Mailbox { address }, role);
        }
    }

    fn row(&mut self, row: &Row) {
        match row {
            Row::DeviceProcessEvents(r) => {
                self.own_device(r.device_name.as_deref(), r.device_id.as_deref());
                self.account(account!(r, r.account_upn.as_deref()), Role::Impacted);
                self.account(initiating_account!(r), Role::Impacted);
                self.process(
                    ProcessColumns {
                        pid: r.process_id,
                        image: r.folder_path.as_deref(),
                        file_name: r.file_name.as_deref(),
                        command_line: r.process_command_line.as_deref(),
                        sha1: r.sha1.as_deref(),
                        sha256: r.sha256.as_deref(),
                        creation_time: r.process_creation_time,
                    },
                    Role::Child,
                );
                self.process(initiating_process!(r), Role::Parent);
                self.file(
                    r.file_name.as_deref(),
                    r.folder_path.as_deref(),
                    [r.sha1.as_deref(), r.sha256.as_deref(), r.md5.as_deref()],
                    Role::Related,
                );
                self.ip(r.process_remote_session_ip.as_deref());
                self.other_device(r.process_remote_session_device_name.as_deref());
            }
            Row::DeviceNetworkEvents(r) => {
                self.own_device(r.device_name.as_deref(), r.device_id.as_deref());
                self.account(initiating_account!(r), Role::Impacted);
                self.process(initiating_process!(r), Role::Related);
                self.ip(r.remote_ip.as_deref());
                self.url_or_domain(r.remote_url.as_deref());
                self.ip(r.local_ip.as_deref());
            }
            Row::DeviceFileEvents(r) => {
                self.own_device(r.device_name.as_deref(), r.device_id.as_deref());
                self.account(initiating_account!(r), Role::Impacted);
                self.process(initiating_process!(r), Role::Related);
                self.file(
                    r.file_name.as_deref(),
                    r.folder_path.as_deref(),
                    [r.sha1.as_deref(), r.sha256.as_deref(), r.md5.as_deref()],
                    Role::Related,
                );
                self.url_or_domain(r.file_origin_url.as_deref());
                self.ip(r.file_origin_ip.as_deref());
                self.ip(r.request_source_ip.as_deref());
                self.account(
                    AccountColumns {
                        domain: r.request_account_domain.as_deref(),
                        name: r.request_account_name.as_deref(),
                        sid: r.request_account_sid.as_deref(),
                        upn: None,
                    },
                    Role::Impacted,
                );
            }
            Row::DeviceRegistryEvents(r) => {
                self.own_device(r.device_name.as_deref(), r.device_id.as_deref());
                self.account(initiating_account!(r), Role::Impacted);
                self.process(initiating_process!(r), Role::Related);
                self.registry(
                    r.registry_key.as_deref(),
                    r.registry_value_name.as_deref(),
                    r.registry_value_data.as_deref(),
                );
            }
            Row::DeviceLogonEvents(r) => {
                self.own_device(r.device_name.as_deref(), r.device_id.as_deref());
                self.account(account!(r), Role::Impacted);
                self.account(initiating_account!(r), Role::Impacted);
                self.process(initiating_process!(r), Role::Related);
                self.ip(r.remote_ip.as_deref());
                self.other_device(r.remote_device_name.as_deref());
            }
            Row::DeviceImageLoadEvents(r) => {
                self.own_device(r.device_name.as_deref(), r.device_id.as_deref());
                self.account(initiating_account!(r), Role::Impacted);
                self.process(initiating_process!(r), Role::Related);
                self.file(
                    r.file_name.as_deref(),
                    r.folder_path.as_deref(),
                    [r.sha1.as_deref(), r.sha256.as_deref(), r.md5.as_deref()],
                    Role::Related,
                );
            }
            Row::DeviceEvents(r) => {
                self.own_device(r.device_name.as_deref(), r.device_id.as_deref());
                self.account(account!(r), Role::Impacted);
                self.account(initiating_account!(r), Role::Impacted);
                self.process(initiating_process!(r), Role::Related);
                // With a process id, FileName/FolderPath are the target process's image
                // (remote thread, process access); without, they are a file (driver, service
                // binary, ...).
                if r.process_id.is_some() {
                    self.process(
                        ProcessColumns {
                            pid: r.process_id,
                            image: r.folder_path.as_deref(),
                            file_name: r.file_name.as_deref(),
                            command_line: r.process_command_line.as_deref(),
                            sha1: r.sha1.as_deref(),
                            sha256: r.sha256.as_deref(),
                            creation_time: r.process_creation_time,
                        },
                        Role::Related,
                    );
                } else {
                    self.file(
                        r.file_name.as_deref(),
                        r.folder_path.as_deref(),
                        [r.sha1.as_deref(), r.sha256.as_deref(), r.md5.as_deref()],
                        Role::Related,
                    );
                }
                self.registry(
                    r.registry_key.as_deref(),
                    r.registry_value_name.as_deref(),
                    r.registry_value_data.as_deref(),
                );
                self.ip(r.remote_ip.as_deref());
                self.url_or_domain(r.remote_url.as_deref());
                self.ip(r.local_ip.as_deref());
                self.other_device(r.remote_device_name.as_deref());
                self.url_or_domain(r.file_origin_url.as_deref());
                self.ip(r.file_origin_ip.as_deref());
            }
            // Identity rows: the record's computer (the domain controller) is the device;
            // `DeviceName` is the client the activity came from.
            Row::IdentityLogonEvents(r) => {
                self.own_device(r.destination_device_name.as_deref(), None);
                self.account(account!(r, r.account_upn.as_deref()), Role::Impacted);
                self.other_device(r.device_name.as_deref());
                self.ip(r.ip_address.as_deref());
                self.other_device(r.target_device_name.as_deref());
                self.ip(r.destination_ip_address.as_deref());
            }
            Row::IdentityDirectoryEvents(r) => {
                self.own_device(r.destination_device_name.as_deref(), None);
                self.account(account!(r, r.account_upn.as_deref()), Role::Impacted);
                self.account(
                    AccountColumns {
                        domain: None,
                        name: r.target_account_display_name.as_deref(),
                        sid: None,
                        upn: r.target_account_upn.as_deref(),
                    },
                    Role::Related,
                );
                self.other_device(r.device_name.as_deref());
                self.ip(r.ip_address.as_deref());
                self.other_device(r.target_device_name.as_deref());
            }
            Row::IdentityQueryEvents(r) => {
                self.own_device(r.destination_device_name.as_deref(), None);
                self.account(account!(r, r.account_upn.as_deref()), Role::Impacted);
                self.other_device(r.device_name.as_deref());
                self.ip(r.ip_address.as_deref());
                self.other_device(r.target_device_name.as_deref());
            }
            Row::EmailEvents(r) => {
                self.mailbox(r.recipient_email_address.as_deref(), Role::Impacted);
                self.mailbox(r.sender_from_address.as_deref(), Role::Related);
                self.ip(r.sender_i_pv4.as_deref());
                self.ip(r.sender_i_pv6.as_deref());
            }
            Row::UrlClickEvents(r) => {
                self.account(
                    AccountColumns {
                        domain: None,
                        name: None,
                        sid: None,
                        upn: r.account_upn.as_deref(),
                    },
                    Role::Impacted,
                );
                self.url_or_domain(r.url.as_deref());
                self.ip(r.ip_address.as_deref());
            }
            Row::CloudAppEvents(r) => {
                if let Some(name) = clean(r.application.as_deref()) {
                    self.add(
                        EntityData::CloudApp {
                            name,
                            id: r.application_id,
                        },
                        Role::Related,
                    );
                }
                self.account(
                    AccountColumns {
                        domain: None,
                        name: r.account_display_name.as_deref(),
                        sid: None,
                        upn: r.account_id.as_deref().filter(|id| id.contains('@')),
                    },
                    Role::Impacted,
                );
                self.ip(r.ip_address.as_deref());
            }
            // Inventory, vulnerability and alert tables hold no activity to alert on; a
            // detection on them names only its device.
            _ => self.own_device(None, None),
        }
    }

    /// Entities the matched fields name that the row did not (a correlation rule's group-by
    /// values, or a record whose mapping keeps the value only in `AdditionalFields`).
    fn matched(&mut self, matched: &[(String, Value)]) {
        if self.entities.is_empty() {
            self.own_device(None, None);
        }
        let get = |name: &str| {
            matched
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_str())
        };
        for (field, value) in matched {
            let Some(text) = value.as_str() else { continue };
            match field.as_str() {
                "IpAddress" | "SourceIp" | "DestinationIp" | "SourceAddress" | "DestAddress"
                | "ClientAddress" | "ClientIPAddress" => self.ip(Some(text)),
                "DestinationHostname" | "QueryName" => self.url_or_domain(Some(text)),
                "TargetFilename" | "ImageLoaded" | "ServiceFileName" | "ImagePath" => {
                    let path = executable_path(text);
                    self.file(None, Some(path), [None; 3], Role::Related);
                }
                "TargetObject" if is_registry_path(text) => match text.rsplit_once('\\') {
                    Some((key, name)) => self.registry(Some(key), Some(name), None),
                    None => self.registry(Some(text), None, None),
                },
                "User" => {
                    let (domain, name) = match text.rsplit_once('\\') {
                        Some((d, n)) => (Some(d), Some(n)),
                        None => (None, Some(text)),
                    };
                    self.account(
                        AccountColumns {
                            domain,
                            name,
                            sid: None,
                            upn: None,
                        },
                        Role::Impacted,
                    );
                }
                "TargetUserName" | "SubjectUserName" => {
                    let prefix = field.trim_end_matches("UserName");
                    self.account(
                        AccountColumns {
                            domain: get(&format!("{prefix}DomainName")),
                            name: Some(text),
                            sid: get(&format!("{prefix}UserSid"))
                                .or_else(|| get(&format!("{prefix}Sid"))),
                            upn: None,
                        },
                        Role::Impacted,
                    );
                }
                _ => {}
            }
        }
    }
}

/// `HKLM\...`, `HKEY_...`, `\REGISTRY\...`.
fn is_registry_path(text: &str) -> bool {
    let upper = text.trim_start().to_ascii_uppercase();
    upper.starts_with("HK") || upper.starts_with(r"\REGISTRY\")
}

/// A service's `ImagePath` is a command line; the file is its executable (quoted or not).
fn executable_path(text: &str) -> &str {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('"') {
        return rest.split('"').next().unwrap_or(rest);
    }
    let lower = t.to_ascii_lowercase();
    match lower.find(".exe ") {
        Some(i) => t.get(..i + 4).unwrap_or(t),
        None => t,
    }
}

fn last_component(path: &str) -> Option<String> {
    let name = path
        .trim_end_matches(['\\', '/'])
        .rsplit(['\\', '/'])
        .next()?;
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::EntityKind;
    use rampart_schema::{
        DeviceLogonEvents, DeviceNetworkEvents, DeviceProcessEvents, DeviceRegistryEvents,
        IdentityLogonEvents,
    };
    use serde_json::json;

    fn keys(entities: &[Entity]) -> Vec<(String, Role)> {
        entities.iter().map(|e| (e.key(), e.role)).collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn process_creation_gives_device_accounts_parent_child_and_image() {
        let t = DateTime::from_timestamp(1_556_380_673, 0);
        let row = DeviceProcessEvents {
            device_name: s("ws01.corp.local"),
            device_id: s("0123"),
            file_name: s("whoami.exe"),
            folder_path: s(r"C:\Windows\System32\whoami.exe"),
            sha256: s("AA11"),
            process_id: Some(4242),
            process_command_line: s("whoami /all"),
            process_creation_time: t,
            account_domain: s("CORP"),
            account_name: s("bob"),
            account_sid: s("S-1-5-21-1-2-3-1104"),
            initiating_process_id: Some(100),
            initiating_process_file_name: s("cmd.exe"),
            initiating_process_folder_path: s(r"C:\Windows\System32\cmd.exe"),
            initiating_process_account_domain: s("CORP"),
            initiating_process_account_name: s("bob"),
            initiating_process_account_sid: s("-"),
            ..Default::default()
        };
        let e = entities_from_row(&row.into(), "WS01.corp.local");
        assert_eq!(
            keys(&e),
            [
                ("device:ws01".to_string(), Role::Impacted),
                (
                    "account:sid:S-1-5-21-1-2-3-1104".to_string(),
                    Role::Impacted
                ),
                (
                    "process:ws01:4242@2019-04-27T15:57:53Z".to_string(),
                    Role::Child
                ),
                (
                    r"process:ws01:100:c:\windows\system32\cmd.exe".to_string(),
                    Role::Parent
                ),
                ("file:sha256:aa11".to_string(), Role::Related),
            ],
            "the parent's account (bob without SID) is the child's: one entity"
        );
        assert!(
            matches!(&e[0].data, EntityData::Device { id: Some(id), .. } if id == "0123"),
            "{e:?}"
        );
    }

    #[test]
    fn network_logon_registry_and_identity_rows() {
        let row = DeviceNetworkEvents {
            device_name: s("ws01"),
            remote_ip: s("::ffff:203.0.113.7"),
            remote_url: s("evil.example.com"),
            local_ip: s("10.0.0.5"),
            initiating_process_id: Some(7),
            initiating_process_file_name: s("powershell.exe"),
            ..Default::default()
        };
        let e = entities_from_row(&row.into(), "ws01");
        let kinds: Vec<_> = e.iter().map(|e| (e.kind(), e.display())).collect();
        assert_eq!(
            kinds,
            [
                (EntityKind::Device, "ws01".to_string()),
                (EntityKind::Process, "powershell.exe (pid 7)".to_string()),
                (EntityKind::Ip, "203.0.113.7".to_string()),
                (EntityKind::Domain, "evil.example.com".to_string()),
                (EntityKind::Ip, "10.0.0.5".to_string()),
            ]
        );

        let row = DeviceLogonEvents {
            device_name: s("dc01.corp.local"),
            account_domain: s("CORP"),
            account_name: s("alice"),
            account_sid: s("S-1-0-0"),
            remote_ip: s("10.0.0.5"),
            remote_device_name: s("WS01"),
            ..Default::default()
        };
        let e = entities_from_row(&row.into(), "dc01.corp.local");
        assert_eq!(
            keys(&e).into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
            [
                "device:dc01",
                "account:name:corp\\alice",
                "ip:10.0.0.5",
                "device:ws01"
            ]
        );

        let row = DeviceRegistryEvents {
            device_name: s("ws01"),
            registry_key: s(r"HKEY_LOCAL_MACHINE\Software\Microsoft\Windows\CurrentVersion\Run"),
            registry_value_name: s("Updater"),
            registry_value_data: s(r"C:\Users\Public\u.exe"),
            ..Default::default()
        };
        let e = entities_from_row(&row.into(), "ws01");
        assert_eq!(
            e[1].key(),
            r"registry_value:ws01:hkey_local_machine\software\microsoft\windows\currentversion\run\updater"
        );

        let row = IdentityLogonEvents {
            destination_device_name: s("dc01.corp.local"),
            device_name: s("ws02"),
            account_name: s("svc_sql"),
            account_domain: s("CORP.LOCAL"),
            ip_address: s("10.0.0.9"),
            ..Default::default()
        };
        let e = entities_from_row(&row.into(), "DC01.corp.local");
        assert_eq!(
            keys(&e),
            [
                ("device:dc01".to_string(), Role::Impacted),
                ("account:name:corp\\svc_sql".to_string(), Role::Impacted),
                ("device:ws02".to_string(), Role::Related),
                ("ip:10.0.0.9".to_string(), Role::Related),
            ]
        );
    }

    #[test]
    fn matched_fields_add_what_the_row_lacks() {
        // A correlation detection has no row: its group-by values are all there is.
        let matched = vec![
            ("IpAddress".to_string(), json!("10.1.2.3")),
            ("TargetDomainName".to_string(), json!("CORP")),
            ("TargetUserName".to_string(), json!("admin")),
            (
                "ServiceFileName".to_string(),
                json!(r#""C:\Temp\x.exe" -k"#),
            ),
            (
                "TargetObject".to_string(),
                json!(r"HKLM\System\CurrentControlSet\Services\x\ImagePath"),
            ),
            ("Count".to_string(), json!(12)),
            ("User".to_string(), json!("-")),
        ];
        let e = entities_of(None, "WS01", &matched);
        assert_eq!(
            keys(&e).into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
            [
                "device:ws01",
                "ip:10.1.2.3",
                "account:name:corp\\admin",
                r"file:path:ws01:c:\temp\x.exe",
                r"registry_value:ws01:hklm\system\currentcontrolset\services\x\imagepath",
            ]
        );
    }

    #[test]
    fn empty_rows_give_only_the_device() {
        let e = entities_from_row(&DeviceProcessEvents::default().into(), " ");
        assert!(e.is_empty(), "{e:?}");
        let e = entities_from_row(&rampart_schema::DeviceInfo::default().into(), "WS09");
        assert_eq!(keys(&e), [("device:ws09".to_string(), Role::Impacted)]);
    }
}
