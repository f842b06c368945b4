//! The incident correlator: which incident an alert joins, and why.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::entity::{Entity, EntityData, EntityKind, host_name};
use crate::incident::Incident;

/// Tuning of the correlator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelatorConfig {
    /// Two alerts sharing an entity correlate when their event times are at most this far
    /// apart. Default 24 hours.
    pub window: TimeDelta,
    /// Whether an alert linking several incidents merges them into the earliest (default).
    /// Either way the others are reported as merge candidates.
    pub merge: bool,
    /// An incident with this many alerts stops attracting alerts through generic entities
    /// (device, account, address, URL, domain, mailbox, app); process, file and registry
    /// links still join. Default 100.
    pub max_incident_alerts: u64,
    /// Most alerts remembered; beyond it the oldest are forgotten. Default 100 000.
    pub capacity: usize,
    /// The server's own host names: as a device, domain or URL host they do not correlate
    /// (every agent talks to them).
    pub own_hosts: Vec<String>,
    /// Entity keys that never correlate (e.g. `ip:10.0.0.1` for the DNS server every device
    /// queries).
    pub ignore_keys: Vec<String>,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            window: TimeDelta::hours(24),
            merge: true,
            max_incident_alerts: 100,
            capacity: 100_000,
            own_hosts: Vec::new(),
            ignore_keys: Vec::new(),
        }
    }
}

/// Why an alert joined an incident: the entity it shares with an alert of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReason {
    pub entity_kind: EntityKind,
    pub entity_key: String,
    /// The shared entity as people read it (`CORP\bob`).
    pub display: String,
    /// The incident's alert that shares it (the closest in time of the best-explaining kind).
    pub linked_alert: String,
    pub linked_alert_time: DateTime<Utc>,
    pub alert_time: DateTime<Utc>,
}

/// Another incident the alert links, and through what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeCandidate {
    pub incident: String,
    pub reason: JoinReason,
}

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Correlation {
    /// The alert founds a new incident (no entity links it to a recent alert).
    New { incident: String, title: String },
    /// The alert joins `incident`, the earliest it links. `merge` lists the other incidents
    /// it links, earliest first: with [`CorrelatorConfig::merge`] on, the correlator has
    /// folded them into `incident` and the caller should do the same with the stored ones
    /// ([`Incident::absorb`]); with it off, they stay apart.
    Join {
        incident: String,
        reason: JoinReason,
        merge: Vec<MergeCandidate>,
    },
}

impl Correlation {
    /// The incident the alert is in.
    pub fn incident(&self) -> &str {
        match self {
            Correlation::New { incident, .. } | Correlation::Join { incident, .. } => incident,
        }
    }

    /// One line for people: "first alert", or the shared entity and linked alert.
    pub fn explain(&self) -> String {
        match self {
            Correlation::New { .. } => "first alert".to_string(),
            Correlation::Join { reason, merge, .. } => {
                let mut text = format!(
                    "shares {} {} with alert {} ({} apart)",
                    reason.entity_kind.name(),
                    reason.display,
                    reason.linked_alert,
                    human_delta((reason.alert_time - reason.linked_alert_time).abs()),
                );
                for m in merge {
                    text.push_str(&format!(
                        "; also links incident {} through {} {}",
                        m.incident,
                        m.reason.entity_kind.name(),
                        m.reason.display
                    ));
                }
                text
            }
        }
    }
}

fn human_delta(d: TimeDelta) -> String {
    match d.num_seconds() {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// An alert's place in time: (first event time, alert id). The id breaks ties, so slots are
/// totally ordered.
type Slot = (DateTime<Utc>, String);

/// A correlating key of a remembered alert.
#[derive(Debug, Clone)]
struct Link {
    key: String,
    kind: EntityKind,
    display: String,
}

#[derive(Debug, Clone)]
struct Remembered {
    incident: String,
    links: Vec<Link>,
}

#[derive(Debug, Clone)]
struct IncidentState {
    first: DateTime<Utc>,
    alerts: u64,
    members: BTreeSet<Slot>,
}

/// A link found for an incident, ordered by how well it explains the join: kind, then
/// closeness in time, then the earlier alert, then the alert's own key order (most specific
/// identifier of an entity first).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u8,
    distance: TimeDelta,
    slot: Slot,
    /// Index into the alert's links.
    link: usize,
}

/// Places alerts into incidents (see the crate documentation for the rule).
///
/// State: the alerts of the last `window` (behind the newest event time seen) with their
/// correlating keys and incident, at most `capacity` of them. Deterministic: the same alerts
/// in the same order give the same answers; nothing depends on hash-map iteration order.
#[derive(Debug, Clone)]
pub struct Correlator {
    config: CorrelatorConfig,
    own_hosts: HashSet<String>,
    ignore_keys: HashSet<String>,
    recent: BTreeMap<Slot, Remembered>,
    /// key → incident → slots of its alerts carrying the key.
    by_key: HashMap<String, BTreeMap<String, BTreeSet<Slot>>>,
    incidents: HashMap<String, IncidentState>,
    watermark: Option<DateTime<Utc>>,
}

impl Correlator {
    pub fn new(config: CorrelatorConfig) -> Correlator {
        Correlator {
            own_hosts: config.own_hosts.iter().map(|h| host_name(h)).collect(),
            ignore_keys: config.ignore_keys.iter().cloned().collect(),
            config,
            recent: BTreeMap::new(),
            by_key: HashMap::new(),
            incidents: HashMap::new(),
            watermark: None,
        }
    }

    /// Places `alert` (by its first event time): it joins the earliest incident it links, or
    /// founds one with the id `new_incident` gives. The alert is remembered either way.
    pub fn assign(&mut self, alert: &Alert, new_incident: impl FnOnce() -> String) -> Correlation {
        let time = alert.draft.first_event_time;
        let slot: Slot = (time, alert.id.clone());
        // Placing an alert again (a retry) starts from a state without it.
        self.forget_slot(&slot);
        let links = self.links(alert);
        let mut found = self.candidates(&slot, &links);
        let correlation = if found.is_empty() {
            let incident = new_incident();
            self.incidents.insert(
                incident.clone(),
                IncidentState {
                    first: time,
                    alerts: 0,
                    members: BTreeSet::new(),
                },
            );
            // A one-alert incident is named after its alert (see `Incident::found`).
            Correlation::New {
                incident,
                title: alert.draft.title.clone(),
            }
        } else {
            let (incident, best) = found.remove(0);
            let merge: Vec<MergeCandidate> = found
                .iter()
                .map(|(incident, c)| MergeCandidate {
                    incident: incident.clone(),
                    reason: reason(c, &links, time),
                })
                .collect();
            let reason = reason(&best, &links, time);
            if self.config.merge {
                for m in &merge {
                    self.merge(&m.incident, &incident);
                }
            }
            Correlation::Join {
                incident,
                reason,
                merge,
            }
        };
        let incident = correlation.incident().to_string();
        if let Some(state) = self.incidents.get_mut(&incident) {
            state.alerts += 1;
        }
        self.insert(slot, incident, links);
        correlation
    }

    /// Rebuilds state at start-up: `alert` (already placed) is in `incident`. Feed the
    /// persisted alerts of the last window in event-time order.
    pub fn remember(&mut self, alert: &Alert, incident: &Incident) {
        let slot: Slot = (alert.draft.first_event_time, alert.id.clone());
        self.forget_slot(&slot);
        let links = self.links(alert);
        let state = self
            .incidents
            .entry(incident.id.clone())
            .or_insert_with(|| IncidentState {
                first: incident.first_event_time,
                alerts: 0,
                members: BTreeSet::new(),
            });
        state.first = state.first.min(incident.first_event_time);
        state.alerts = state.alerts.max(incident.alert_count);
        self.insert(slot, incident.id.clone(), links);
    }

    /// Why `entity` does not correlate, or `None` when it does.
    pub fn exclusion(&self, entity: &Entity) -> Option<&'static str> {
        let own = |host: &str| {
            let h = host_name(host);
            h.is_empty() || h == "localhost" || self.own_hosts.contains(&h)
        };
        match &entity.data {
            EntityData::Device { name, .. } => own(name).then_some("the server itself"),
            EntityData::Account {
                name,
                domain,
                sid,
                upn,
            } => system_account(name.as_deref(), domain.as_deref(), sid.as_deref()).or_else(|| {
                (name.is_none() && sid.is_none() && upn.is_none()).then_some("no identifier")
            }),
            EntityData::Process {
                pid, creation_time, ..
            } => (pid.is_none() || creation_time.is_none())
                .then_some("process instance unknown (needs pid and creation time)"),
            EntityData::File {
                name, folder_path, ..
            } => system_binary(name.as_deref(), folder_path.as_deref())
                .then_some("common system binary"),
            EntityData::Ip { address } => non_routable(address),
            EntityData::Domain { name } => own(name).then_some("the server itself"),
            EntityData::Url { url } => own(url_host(url)).then_some("the server itself"),
            EntityData::RegistryKey { .. }
            | EntityData::RegistryValue { .. }
            | EntityData::Mailbox { .. }
            | EntityData::CloudApp { .. } => None,
        }
    }

    /// Whether an alert of `incident` is still in the window (a new alert could join it).
    pub fn holds_incident(&self, incident: &str) -> bool {
        self.incidents.contains_key(incident)
    }

    /// Alerts remembered.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// The keys through which `alert` correlates: its entities' keys, minus excluded
    /// entities and ignored keys, each once.
    fn links(&self, alert: &Alert) -> Vec<Link> {
        let mut links: Vec<Link> = Vec::new();
        for entity in &alert.draft.entities {
            if self.exclusion(entity).is_some() {
                continue;
            }
            for key in entity.keys() {
                if !self.ignore_keys.contains(&key) && !links.iter().any(|l| l.key == key) {
                    links.push(Link {
                        key,
                        kind: entity.kind(),
                        display: entity.display(),
                    });
                }
            }
        }
        links
    }

    /// The incidents `links` reach within the window, each with its best link, earliest
    /// incident first (ties: incident id).
    fn candidates(&self, slot: &Slot, links: &[Link]) -> Vec<(String, Candidate)> {
        let time = slot.0;
        let mut best: BTreeMap<&str, Candidate> = BTreeMap::new();
        for (index, link) in links.iter().enumerate() {
            let Some(per_incident) = self.by_key.get(&link.key) else {
                continue;
            };
            for (incident, slots) in per_incident {
                let Some(state) = self.incidents.get(incident) else {
                    continue;
                };
                if link.kind.is_generic() && state.alerts >= self.config.max_incident_alerts {
                    continue;
                }
                // The incident's alert closest in time that carries the key.
                let after = slots.range(slot.clone()..).next();
                let before = slots.range(..slot.clone()).next_back();
                let Some(nearest) = [before, after]
                    .into_iter()
                    .flatten()
                    .map(|s| ((s.0 - time).abs(), s))
                    .filter(|(d, _)| *d <= self.config.window)
                    .min()
                else {
                    continue;
                };
                let candidate = Candidate {
                    rank: link.kind.explanation_rank(),
                    distance: nearest.0,
                    slot: nearest.1.clone(),
                    link: index,
                };
                best.entry(incident)
                    .and_modify(|c| {
                        if candidate < *c {
                            *c = candidate.clone();
                        }
                    })
                    .or_insert(candidate);
            }
        }
        let mut found: Vec<(String, Candidate)> =
            best.into_iter().map(|(i, c)| (i.to_string(), c)).collect();
        found.sort_by_key(|(i, _)| (self.incidents.get(i).map(|s| s.first), i.clone()));
        found
    }

    /// Moves every remembered alert of `from` into `into`.
    fn merge(&mut self, from: &str, into: &str) {
        let Some(old) = self.incidents.remove(from) else {
            return;
        };
        for slot in &old.members {
            let Some(remembered) = self.recent.get_mut(slot) else {
                continue;
            };
            remembered.incident = into.to_string();
            for link in &remembered.links {
                if let Some(per_incident) = self.by_key.get_mut(&link.key) {
                    if let Some(slots) = per_incident.get_mut(from) {
                        slots.remove(slot);
                        if slots.is_empty() {
                            per_incident.remove(from);
                        }
                    }
                    per_incident
                        .entry(into.to_string())
                        .or_default()
                        .insert(slot.clone());
                }
            }
        }
        if let Some(target) = self.incidents.get_mut(into) {
            target.first = target.first.min(old.first);
            target.alerts += old.alerts;
            target.members.extend(old.members);
        }
    }

    fn insert(&mut self, slot: Slot, incident: String, links: Vec<Link>) {
        for link in &links {
            self.by_key
                .entry(link.key.clone())
                .or_default()
                .entry(incident.clone())
                .or_default()
                .insert(slot.clone());
        }
        if let Some(state) = self.incidents.get_mut(&incident) {
            state.members.insert(slot.clone());
        }
        self.watermark = Some(self.watermark.map_or(slot.0, |w| w.max(slot.0)));
        self.recent.insert(slot, Remembered { incident, links });
        self.evict();
    }

    /// Forgets alerts a window older than the newest, then the oldest beyond capacity.
    fn evict(&mut self) {
        let horizon = self.watermark.map(|w| w - self.config.window);
        while let Some(slot) = self.recent.keys().next().cloned() {
            let expired = horizon.is_some_and(|h| slot.0 < h);
            if !expired && self.recent.len() <= self.config.capacity {
                break;
            }
            self.forget_slot(&slot);
        }
    }

    fn forget_slot(&mut self, slot: &Slot) {
        let Some(remembered) = self.recent.remove(slot) else {
            return;
        };
        let incident = &remembered.incident;
        for link in &remembered.links {
            if let Some(per_incident) = self.by_key.get_mut(&link.key) {
                if let Some(slots) = per_incident.get_mut(incident) {
                    slots.remove(slot);
                    if slots.is_empty() {
                        per_incident.remove(incident);
                    }
                }
                if per_incident.is_empty() {
                    self.by_key.remove(&link.key);
                }
            }
        }
        if let Some(state) = self.incidents.get_mut(incident) {
            state.members.remove(slot);
            // An incident without recent alerts can attract nothing: its state goes too.
            if state.members.is_empty() {
                self.incidents.remove(incident);
            }
        }
    }
}

/// The reason a candidate gives; `c.link` indexes `links`, the alert's links it was found
/// with.
fn reason(c: &Candidate, links: &[Link], time: DateTime<Utc>) -> JoinReason {
    let link = &links[c.link];
    JoinReason {
        entity_kind: link.kind,
        entity_key: link.key.clone(),
        display: link.display.clone(),
        linked_alert: c.slot.1.clone(),
        linked_alert_time: c.slot.0,
        alert_time: time,
    }
}

/// Accounts every machine has, which would join everything that runs as them: `SYSTEM`,
/// `LOCAL SERVICE`, `NETWORK SERVICE`, `ANONYMOUS LOGON` (by name or SID), the per-session
/// `DWM-n` / `UMFD-n` accounts, virtual `NT SERVICE\*` accounts, Linux's `root` and `nobody`,
/// and machine accounts (`WS01$`): on its own device a machine account is SYSTEM under another
/// name, and on other machines the device is linked better by its device entity and address.
fn system_account(
    name: Option<&str>,
    domain: Option<&str>,
    sid: Option<&str>,
) -> Option<&'static str> {
    if let Some(sid) = sid.map(str::to_ascii_uppercase) {
        let well_known = matches!(
            sid.as_str(),
            "S-1-5-18" | "S-1-5-19" | "S-1-5-20" | "S-1-5-7" | "S-1-0-0"
        );
        if well_known || sid.starts_with("S-1-5-90-") || sid.starts_with("S-1-5-96-") {
            return Some("well-known system account");
        }
    }
    if let Some(domain) = domain.map(str::to_ascii_lowercase)
        && matches!(
            domain.as_str(),
            "nt authority" | "nt service" | "window manager" | "font driver host"
        )
    {
        return Some("well-known system account");
    }
    let name = name?.trim().to_ascii_lowercase();
    if name.ends_with('$') {
        return Some("machine account");
    }
    let system = matches!(
        name.as_str(),
        "system"
            | "local system"
            | "localsystem"
            | "local service"
            | "localservice"
            | "network service"
            | "networkservice"
            | "anonymous logon"
            | "anonymous"
            | "root"
            | "nobody"
            | "-"
            | ""
    ) || name.starts_with("dwm-")
        || name.starts_with("umfd-");
    system.then_some("well-known system account")
}

/// Binaries every Windows machine runs (and LOLBins every attack uses): as files in the
/// Windows folder (or without a folder) they would join everything; a copy elsewhere
/// (`C:\Users\Public\svchost.exe`) is suspicious and correlates. Processes are not affected:
/// they correlate as instances (device, pid, creation time), never by image name.
const SYSTEM_BINARIES: &[&str] = &[
    "svchost.exe",
    "services.exe",
    "lsass.exe",
    "csrss.exe",
    "smss.exe",
    "wininit.exe",
    "winlogon.exe",
    "explorer.exe",
    "conhost.exe",
    "dllhost.exe",
    "taskhost.exe",
    "taskhostw.exe",
    "sihost.exe",
    "spoolsv.exe",
    "wmiprvse.exe",
    "runtimebroker.exe",
    "searchindexer.exe",
    "searchprotocolhost.exe",
    "audiodg.exe",
    "system",
    "cmd.exe",
    "powershell.exe",
    "pwsh.exe",
    "rundll32.exe",
    "regsvr32.exe",
    "mshta.exe",
    "wscript.exe",
    "cscript.exe",
    "msiexec.exe",
    "wmic.exe",
    "reg.exe",
    "sc.exe",
    "net.exe",
    "net1.exe",
    "schtasks.exe",
    "whoami.exe",
    "ntdll.dll",
    "kernel32.dll",
    "kernelbase.dll",
    "advapi32.dll",
    "user32.dll",
];

/// Linux folders of the distribution's own programs and libraries: every machine of a release
/// has the same files there (a dropped tool lives in /tmp, /dev/shm or a home folder).
const LINUX_SYSTEM_FOLDERS: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/lib/",
    "/lib64/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/lib/",
    "/usr/lib64/",
    "/usr/libexec/",
];

fn system_binary(name: Option<&str>, folder_path: Option<&str>) -> bool {
    if folder_path.is_some_and(|p| LINUX_SYSTEM_FOLDERS.iter().any(|f| p.starts_with(f))) {
        return true;
    }
    let name = name
        .map(str::to_string)
        .or_else(|| folder_path.and_then(|p| p.rsplit(['\\', '/']).next().map(str::to_string)))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let in_windows = folder_path.is_none_or(|p| {
        let p = p.to_ascii_lowercase();
        p.contains(r"\windows\") || p.starts_with(r"\systemroot\") || p.starts_with("%systemroot%")
    });
    in_windows && SYSTEM_BINARIES.contains(&name.as_str())
}

/// Addresses that name no one machine: loopback, unspecified, link-local, multicast,
/// broadcast; and text that is no address.
fn non_routable(address: &str) -> Option<&'static str> {
    let Ok(ip) = address.parse::<IpAddr>() else {
        return Some("not an IP address");
    };
    let local = match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unicast_link_local()
                || v6.is_multicast()
        }
    };
    local.then_some("loopback, unspecified, link-local or multicast address")
}

/// The host of a URL (`https://host:8443/x` → `host`).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host.split(':').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::Role;

    fn entity(data: EntityData) -> Entity {
        Entity::new(data, Role::Related)
    }

    fn account(name: &str, domain: Option<&str>, sid: Option<&str>) -> Entity {
        entity(EntityData::Account {
            name: Some(name.into()),
            domain: domain.map(Into::into),
            sid: sid.map(Into::into),
            upn: None,
        })
    }

    /// `curl` at `path` on a Linux machine, with the hash every copy of it has.
    fn linux_file(path: &str) -> Entity {
        entity(EntityData::File {
            device: Some("web01".into()),
            name: Some("curl".into()),
            folder_path: Some(path.into()),
            sha1: None,
            sha256: Some("cd".into()),
            md5: None,
        })
    }

    #[test]
    fn noisy_entities_do_not_correlate() {
        let c = Correlator::new(CorrelatorConfig {
            own_hosts: vec!["Rampart01.corp.local".into()],
            ..Default::default()
        });
        let noisy = [
            account("SYSTEM", Some("NT AUTHORITY"), Some("S-1-5-18")),
            account("whatever", None, Some("s-1-5-20")),
            account("LOCAL SERVICE", None, None),
            account("DWM-1", Some("Window Manager"), Some("S-1-5-90-0-1")),
            account("UMFD-0", None, None),
            account("WS01$", Some("CORP"), None),
            account("ANONYMOUS LOGON", None, None),
            account("root", None, None),
            linux_file("/usr/bin/curl"),
            entity(EntityData::Ip {
                address: "127.0.0.1".into(),
            }),
            entity(EntityData::Ip {
                address: "fe80::1".into(),
            }),
            entity(EntityData::Ip {
                address: "0.0.0.0".into(),
            }),
            entity(EntityData::Ip {
                address: "::ffff:127.0.0.1".into(),
            }),
            entity(EntityData::Device {
                name: "rampart01".into(),
                id: None,
            }),
            entity(EntityData::Url {
                url: "https://rampart01.corp.local:8443/api".into(),
            }),
            entity(EntityData::File {
                device: None,
                name: Some("svchost.exe".into()),
                folder_path: Some(r"C:\Windows\System32\svchost.exe".into()),
                sha1: None,
                sha256: Some("ab".into()),
                md5: None,
            }),
            entity(EntityData::Process {
                device: Some("ws01".into()),
                pid: Some(4),
                image: None,
                file_name: Some("System".into()),
                command_line: None,
                sha1: None,
                sha256: None,
                creation_time: None,
            }),
        ];
        for e in &noisy {
            assert!(c.exclusion(e).is_some(), "{e:?} should not correlate");
        }
        let useful = [
            account("bob", Some("CORP"), Some("S-1-5-21-1-2-3-1104")),
            entity(EntityData::Ip {
                address: "10.0.0.5".into(),
            }),
            entity(EntityData::Device {
                name: "ws01.corp.local".into(),
                id: None,
            }),
            entity(EntityData::File {
                device: None,
                name: Some("svchost.exe".into()),
                folder_path: Some(r"C:\Users\Public\svchost.exe".into()),
                sha1: None,
                sha256: None,
                md5: None,
            }),
            account("www-data", None, None),
            linux_file("/tmp/.x/curl"),
        ];
        for e in &useful {
            assert_eq!(c.exclusion(e), None, "{e:?} should correlate");
        }
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://u:p@host.example:8443/x?y"),
            "host.example"
        );
        assert_eq!(url_host("http://[::1]:80/"), "::1");
        assert_eq!(url_host("host/path"), "host");
    }
}
