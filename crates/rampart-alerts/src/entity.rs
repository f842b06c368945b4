//! Evidence entities: the things an alert is about (device, account, process, file, address,
//! ...), each with the keys that identify it for correlation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Device,
    Account,
    Process,
    File,
    Ip,
    Url,
    Domain,
    RegistryKey,
    RegistryValue,
    Mailbox,
    CloudApp,
}

impl EntityKind {
    /// The kind's name, as keys and serialised entities write it (`registry_key`).
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Device => "device",
            EntityKind::Account => "account",
            EntityKind::Process => "process",
            EntityKind::File => "file",
            EntityKind::Ip => "ip",
            EntityKind::Url => "url",
            EntityKind::Domain => "domain",
            EntityKind::RegistryKey => "registry_key",
            EntityKind::RegistryValue => "registry_value",
            EntityKind::Mailbox => "mailbox",
            EntityKind::CloudApp => "cloud_app",
        }
    }

    /// `AlertEvidence.EntityType` as Defender writes it. Defender has no domain entity: a
    /// domain is a `Url`, as `RemoteUrl` holds host names in the device tables.
    pub fn evidence_type(self) -> &'static str {
        match self {
            EntityKind::Device => "Machine",
            EntityKind::Account => "User",
            EntityKind::Process => "Process",
            EntityKind::File => "File",
            EntityKind::Ip => "Ip",
            EntityKind::Url | EntityKind::Domain => "Url",
            EntityKind::RegistryKey => "RegistryKey",
            EntityKind::RegistryValue => "RegistryValue",
            EntityKind::Mailbox => "Mailbox",
            EntityKind::CloudApp => "CloudApplication",
        }
    }

    /// Whether entities of this kind recur across unrelated activity (a device, a user, an
    /// address), as opposed to naming one artefact (a process instance, a file, a registry
    /// value). An incident that reached its size cap stops attracting alerts through generic
    /// entities only.
    pub fn is_generic(self) -> bool {
        !matches!(
            self,
            EntityKind::Process
                | EntityKind::File
                | EntityKind::RegistryKey
                | EntityKind::RegistryValue
        )
    }

    /// Which shared entity explains a join best: the most specific kind first, the device
    /// (which explains nothing beyond "same machine") last.
    pub(crate) fn explanation_rank(self) -> u8 {
        match self {
            EntityKind::Process => 0,
            EntityKind::File => 1,
            EntityKind::RegistryValue => 2,
            EntityKind::RegistryKey => 3,
            EntityKind::Account => 4,
            EntityKind::Mailbox => 5,
            EntityKind::Url => 6,
            EntityKind::Domain => 7,
            EntityKind::Ip => 8,
            EntityKind::CloudApp => 9,
            EntityKind::Device => 10,
        }
    }
}

/// An entity's part in the alert. `AlertEvidence.EvidenceRole` knows only `Impacted` and
/// `Related`; `Parent` and `Child` (processes) are written as `Related` there, with the exact
/// role in `AdditionalFields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The device and the accounts the activity ran as.
    Impacted,
    /// Everything else the activity touched.
    Related,
    /// The process that started the process the alert is about.
    Parent,
    /// The process the alert is about, started by the `Parent`.
    Child,
}

impl Role {
    /// `AlertEvidence.EvidenceRole`.
    pub fn evidence_role(self) -> &'static str {
        match self {
            Role::Impacted => "Impacted",
            Role::Related | Role::Parent | Role::Child => "Related",
        }
    }

    /// The role's name in `AdditionalFields` (`Parent`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Impacted => "Impacted",
            Role::Related => "Related",
            Role::Parent => "Parent",
            Role::Child => "Child",
        }
    }
}

/// The identifying fields of an entity, by kind. Text is kept as the source wrote it; keys
/// normalise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntityData {
    Device {
        /// As the source names it, lowercased (`ws01.corp.local`).
        name: String,
        id: Option<String>,
    },
    Account {
        name: Option<String>,
        domain: Option<String>,
        sid: Option<String>,
        upn: Option<String>,
    },
    Process {
        /// The device the process ran on (process ids are per device).
        device: Option<String>,
        pid: Option<i64>,
        /// Full path of the image.
        image: Option<String>,
        file_name: Option<String>,
        command_line: Option<String>,
        sha1: Option<String>,
        sha256: Option<String>,
        creation_time: Option<DateTime<Utc>>,
    },
    File {
        /// The device the file was seen on (a path means something only on its device).
        device: Option<String>,
        name: Option<String>,
        /// Full path including the file name, as Defender's `FolderPath`.
        folder_path: Option<String>,
        sha1: Option<String>,
        sha256: Option<String>,
        md5: Option<String>,
    },
    Ip {
        address: String,
    },
    Url {
        url: String,
    },
    Domain {
        name: String,
    },
    RegistryKey {
        device: Option<String>,
        key: String,
    },
    RegistryValue {
        device: Option<String>,
        key: String,
        name: String,
        data: Option<String>,
    },
    Mailbox {
        address: String,
    },
    CloudApp {
        name: String,
        id: Option<i32>,
    },
}

/// One piece of evidence of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    #[serde(flatten)]
    pub data: EntityData,
    pub role: Role,
}

impl Entity {
    pub fn new(data: EntityData, role: Role) -> Entity {
        Entity { data, role }
    }

    pub fn kind(&self) -> EntityKind {
        match &self.data {
            EntityData::Device { .. } => EntityKind::Device,
            EntityData::Account { .. } => EntityKind::Account,
            EntityData::Process { .. } => EntityKind::Process,
            EntityData::File { .. } => EntityKind::File,
            EntityData::Ip { .. } => EntityKind::Ip,
            EntityData::Url { .. } => EntityKind::Url,
            EntityData::Domain { .. } => EntityKind::Domain,
            EntityData::RegistryKey { .. } => EntityKind::RegistryKey,
            EntityData::RegistryValue { .. } => EntityKind::RegistryValue,
            EntityData::Mailbox { .. } => EntityKind::Mailbox,
            EntityData::CloudApp { .. } => EntityKind::CloudApp,
        }
    }

    /// The entity's primary key (the first of [`Entity::keys`]).
    pub fn key(&self) -> String {
        self.keys().swap_remove(0)
    }

    /// Every key that identifies the entity, most specific first; two entities are the same
    /// when they share any key. Keys are lowercase except SIDs (uppercase) and URLs (as
    /// written: their paths are case-sensitive).
    ///
    /// - device: `device:<host>`, the first label of the name (`ws01.corp.local` and the
    ///   NetBIOS `WS01` other records use are one machine);
    /// - account: `account:sid:S-1-5-21-…`, `account:upn:bob@contoso.com`,
    ///   `account:name:contoso\bob` (domain cut to its first label, for the same reason);
    /// - process: `process:<host>:<pid>@<creation time>` when both are known, else
    ///   `process:<host>:<pid>:<image>` or `process:<host>:<image>`;
    /// - file: `file:sha256:…`, `file:sha1:…`, `file:md5:…`, then `file:path:<host>:<path>`
    ///   (a path without a hash is scoped to its device);
    /// - `ip:10.0.0.5`, `url:<url>`, `domain:<name>`, `registry_key:<host>:<key>`,
    ///   `registry_value:<host>:<key>\<name>`, `mailbox:<address>`, `cloud_app:<id or name>`.
    pub fn keys(&self) -> Vec<String> {
        let host = |d: &Option<String>| d.as_deref().map(host_name).unwrap_or_default();
        // Joined rather than `format!`ed where there is nothing to format: keys are made for
        // every detection, and the formatting machinery cost more than the rest.
        let mut keys = Vec::new();
        match &self.data {
            EntityData::Device { name, .. } => keys.push(["device:", &host_name(name)].concat()),
            EntityData::Account {
                name,
                domain,
                sid,
                upn,
            } => {
                if let Some(sid) = sid {
                    keys.push(["account:sid:", &sid.to_uppercase()].concat());
                }
                if let Some(upn) = upn {
                    keys.push(["account:upn:", &upn.to_lowercase()].concat());
                }
                if let Some(name) = name {
                    keys.push(match domain {
                        Some(domain) => [
                            "account:name:",
                            &host_name(domain),
                            "\\",
                            &name.to_lowercase(),
                        ]
                        .concat(),
                        None => ["account:name:", &name.to_lowercase()].concat(),
                    });
                }
            }
            EntityData::Process {
                device,
                pid,
                image,
                file_name,
                creation_time,
                ..
            } => {
                let image = image
                    .as_deref()
                    .or(file_name.as_deref())
                    .unwrap_or_default()
                    .to_lowercase();
                keys.push(match (pid, creation_time) {
                    // `2024-05-01T10:00:00Z`, as `format("%Y-%m-%dT%H:%M:%SZ")` writes it
                    // without parsing a format string for every detection.
                    (Some(pid), Some(t)) => format!(
                        "process:{}:{pid}@{}",
                        host(device),
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    (Some(pid), None) => format!("process:{}:{pid}:{image}", host(device)),
                    (None, _) => format!("process:{}:{image}", host(device)),
                });
            }
            EntityData::File {
                device,
                name,
                folder_path,
                sha1,
                sha256,
                md5,
            } => {
                for (algo, hash) in [("sha256", sha256), ("sha1", sha1), ("md5", md5)] {
                    if let Some(hash) = hash {
                        keys.push(["file:", algo, ":", &hash.to_lowercase()].concat());
                    }
                }
                let path = folder_path.as_deref().or(name.as_deref());
                keys.push(
                    [
                        "file:path:",
                        &host(device),
                        ":",
                        &path.unwrap_or_default().to_lowercase(),
                    ]
                    .concat(),
                );
            }
            EntityData::Ip { address } => keys.push(["ip:", &address.to_lowercase()].concat()),
            EntityData::Url { url } => keys.push(format!("url:{url}")),
            EntityData::Domain { name } => keys.push(format!(
                "domain:{}",
                name.trim_end_matches('.').to_lowercase()
            )),
            EntityData::RegistryKey { device, key } => keys.push(format!(
                "registry_key:{}:{}",
                host(device),
                key.to_lowercase()
            )),
            EntityData::RegistryValue {
                device, key, name, ..
            } => keys.push(format!(
                "registry_value:{}:{}\\{}",
                host(device),
                key.to_lowercase(),
                name.to_lowercase()
            )),
            EntityData::Mailbox { address } => {
                keys.push(format!("mailbox:{}", address.to_lowercase()));
            }
            EntityData::CloudApp { name, id } => keys.push(match id {
                Some(id) => format!("cloud_app:{id}"),
                None => format!("cloud_app:{}", name.to_lowercase()),
            }),
        }
        keys
    }

    /// What identifies this entity across repeats of the same activity, for the alert's
    /// dedup key: a process by its image and command line (a repeat has a new pid), a parent
    /// process and the device not at all (the device is part of the dedup key on its own, and
    /// the parent differs between repeats run from different shells); other entities by their
    /// key.
    pub(crate) fn occurrence_key(&self) -> Option<String> {
        match (&self.data, self.role) {
            (EntityData::Device { .. }, _) | (EntityData::Process { .. }, Role::Parent) => None,
            (
                EntityData::Process {
                    image,
                    file_name,
                    command_line,
                    ..
                },
                _,
            ) => Some(format!(
                "process:{}|{}",
                image
                    .as_deref()
                    .or(file_name.as_deref())
                    .unwrap_or_default()
                    .to_lowercase(),
                command_line.as_deref().unwrap_or_default()
            )),
            _ => Some(self.key()),
        }
    }

    /// A short human description (`contoso\bob`, `powershell.exe (pid 4242)`).
    pub fn display(&self) -> String {
        match &self.data {
            EntityData::Device { name, .. } => name.clone(),
            EntityData::Account {
                name,
                domain,
                sid,
                upn,
            } => match (name, domain) {
                (Some(name), Some(domain)) => format!("{domain}\\{name}"),
                (Some(name), None) => name.clone(),
                _ => upn.clone().or_else(|| sid.clone()).unwrap_or_default(),
            },
            EntityData::Process {
                pid,
                image,
                file_name,
                ..
            } => {
                let name = file_name
                    .as_deref()
                    .or(image.as_deref())
                    .unwrap_or("process");
                match pid {
                    Some(pid) => format!("{name} (pid {pid})"),
                    None => name.to_string(),
                }
            }
            EntityData::File {
                name,
                folder_path,
                sha256,
                sha1,
                md5,
                ..
            } => folder_path
                .clone()
                .or_else(|| name.clone())
                .or_else(|| sha256.clone())
                .or_else(|| sha1.clone())
                .or_else(|| md5.clone())
                .unwrap_or_default(),
            EntityData::Ip { address } => address.clone(),
            EntityData::Url { url } => url.clone(),
            EntityData::Domain { name } => name.clone(),
            EntityData::RegistryKey { key, .. } => key.clone(),
            EntityData::RegistryValue { key, name, .. } => format!("{key}\\{name}"),
            EntityData::Mailbox { address } => address.clone(),
            EntityData::CloudApp { name, .. } => name.clone(),
        }
    }
}

/// The first label of a host name, lowercased: `WS01.corp.local` → `ws01`. An IP address is
/// kept whole.
pub(crate) fn host_name(name: &str) -> String {
    let name = name.trim().trim_end_matches('.');
    if name.parse::<std::net::IpAddr>().is_ok() {
        return name.to_string();
    }
    name.split('.').next().unwrap_or(name).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, domain: Option<&str>, sid: Option<&str>) -> Entity {
        Entity::new(
            EntityData::Account {
                name: Some(name.into()),
                domain: domain.map(Into::into),
                sid: sid.map(Into::into),
                upn: None,
            },
            Role::Impacted,
        )
    }

    #[test]
    fn keys_normalise_and_list_every_identifier() {
        let a = account("Bob", Some("CONTOSO.local"), Some("s-1-5-21-1-2-3-1104"));
        assert_eq!(
            a.keys(),
            [
                "account:sid:S-1-5-21-1-2-3-1104",
                "account:name:contoso\\bob"
            ]
        );
        assert_eq!(a.key(), "account:sid:S-1-5-21-1-2-3-1104");
        assert_eq!(a.display(), "CONTOSO.local\\Bob");

        let device = Entity::new(
            EntityData::Device {
                name: "WIN-DC01.contoso.local".into(),
                id: None,
            },
            Role::Impacted,
        );
        assert_eq!(device.key(), "device:win-dc01");

        let file = Entity::new(
            EntityData::File {
                device: Some("ws01.corp".into()),
                name: Some("a.exe".into()),
                folder_path: Some(r"C:\Temp\A.exe".into()),
                sha1: None,
                sha256: Some("ABCD".into()),
                md5: None,
            },
            Role::Related,
        );
        assert_eq!(
            file.keys(),
            ["file:sha256:abcd", r"file:path:ws01:c:\temp\a.exe"]
        );
    }

    #[test]
    fn process_keys_need_pid_and_creation_time_to_name_an_instance() {
        let process = |pid, t: Option<DateTime<Utc>>| {
            Entity::new(
                EntityData::Process {
                    device: Some("WS01".into()),
                    pid,
                    image: Some(r"C:\Windows\System32\cmd.exe".into()),
                    file_name: Some("cmd.exe".into()),
                    command_line: Some("cmd /c whoami".into()),
                    sha1: None,
                    sha256: None,
                    creation_time: t,
                },
                Role::Child,
            )
        };
        let t = DateTime::from_timestamp(1_556_380_673, 0);
        assert_eq!(
            process(Some(42), t).key(),
            "process:ws01:42@2019-04-27T15:57:53Z"
        );
        assert_eq!(
            process(Some(42), None).key(),
            r"process:ws01:42:c:\windows\system32\cmd.exe"
        );
        assert_eq!(
            process(None, None).key(),
            r"process:ws01:c:\windows\system32\cmd.exe"
        );
        assert_eq!(process(Some(42), t).display(), "cmd.exe (pid 42)");
        // Repeats of the same command share an occurrence key whatever their pid.
        assert_eq!(
            process(Some(1), t).occurrence_key(),
            process(Some(2), None).occurrence_key()
        );
    }

    #[test]
    fn entities_round_trip_through_json() {
        let a = account("bob", None, None);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["kind"], "account");
        assert_eq!(json["role"], "impacted");
        assert_eq!(serde_json::from_value::<Entity>(json).unwrap(), a);
    }
}
