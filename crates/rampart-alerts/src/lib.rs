//! Rampart alerts and incidents: from Sigma detections to alerts, and from alerts to
//! incidents — pure logic, no IO, deterministic and explainable.
//!
//! # Pipeline
//!
//! 1. **Draft** — [`AlertDraft::from_detection`] turns a detection and its record's mapped row
//!    into an alert draft: the rule's title, a severity from its level (Sigma `critical` is
//!    Defender's `High`), ATT&CK tactics and techniques from its `attack.*` tags, the device,
//!    the triggering record, the matched fields, and the **evidence entities** read from the
//!    row's columns by table (and from the matched fields where they name more, e.g. the
//!    group-by values of a correlation rule). Each entity has a kind, its identifying fields,
//!    a role (`Impacted` for the device and the accounts the activity ran as, `Parent`/`Child`
//!    for the processes of a process creation, `Related` for the rest) and keys
//!    ([`Entity::keys`]).
//! 2. **Suppress** — [`Deduplicator`]: a draft whose `dedup_key` (rule + device + what
//!    identifies the occurrence: process image and command line, files, accounts, addresses;
//!    never a pid) matches an alert that had an occurrence within the last hour updates that
//!    alert (`event_count` + 1, last event time) instead of raising a new one.
//! 3. **Correlate** — [`Correlator`] places each new alert into an incident.
//! 4. **Store** — [`Alert`] and [`Incident`] are plain serde structs; [`alert_rows`] gives the
//!    `AlertInfo` / `AlertEvidence` hunting rows.
//!
//! # The correlation rule
//!
//! An alert **joins an incident when it shares a correlating entity key with an alert of that
//! incident whose event time is within the window** (24 hours by default, either side:
//! records arrive out of order). Keys identify an entity across alerts and sources: a device
//! by its host name (first label, lowercased), an account by SID, UPN or `domain\name`, a
//! process *instance* by device + pid + creation time, a file by hash (or by path on its
//! device), an address, URL or domain by its text, a registry key or value by device + path.
//! The device is a correlating entity: alerts on one machine within the window form one
//! incident, as in Defender. Accounts, addresses and hashes link machines.
//!
//! - **Several incidents linked**: the alert joins the *earliest* (by the incident's first
//!   event time, then incident id) and the others are returned as merge candidates; with
//!   `merge` on (the default) the correlator folds them into the earliest.
//! - **No link**: the alert founds a new incident ("first alert"), titled after the alert.
//! - **Reason**: every join names the shared entity (kind, key, display value), the linked
//!   alert and both event times. When several entities are shared, the most specific kind
//!   explains the join (process, file, registry, account, mailbox, URL, domain, address, app,
//!   device), then the linked alert closest in time.
//! - **Entities that would join everything do not correlate** (they stay evidence):
//!   well-known system accounts (`SYSTEM`, `LOCAL SERVICE`, `NETWORK SERVICE`,
//!   `ANONYMOUS LOGON`, SIDs S-1-5-18/19/20/7, `DWM-n`, `UMFD-n`, `NT AUTHORITY\*`,
//!   `NT SERVICE\*`, Linux's `root` and `nobody`); machine accounts (`WS01$`, always: on their
//!   own device they are SYSTEM, elsewhere the device and its address link better);
//!   placeholders (`-`, empty, the NULL SID); loopback, unspecified, link-local, multicast and
//!   broadcast addresses; the server's own host names (configurable) as device, domain or URL;
//!   common system binaries and LOLBins (`svchost.exe`, `lsass.exe`, `cmd.exe`,
//!   `powershell.exe`, ...) as *files* in the Windows folder, and every file in a Linux
//!   distribution's own folders (`/usr/bin`, `/lib`, ...), even with a hash (every machine has
//!   the same one) — a copy elsewhere correlates; processes without pid and creation time (no instance identity); and any key
//!   listed in `ignore_keys` (e.g. the DNS server's address).
//! - **Size cap**: an incident holding `max_incident_alerts` alerts stops attracting alerts
//!   through generic entities (device, account, address, URL, domain, mailbox, app); a
//!   shared process, file or registry value still joins.
//! - **Determinism**: the same alerts in the same order give the same decisions. State is
//!   kept in ordered maps; ties are broken by incident id and alert id. Feed batches sorted by
//!   [`AlertDraft::order_key`] (event time, source file, record id, rule, dedup key) to make
//!   the outcome independent of the order a parallel reader produced them in.
//! - **Bounded state**: the correlator remembers the alerts of one window behind the newest
//!   event time seen (at most `capacity`, oldest dropped first) and the incidents those
//!   alerts are in; the deduplicator likewise. Both are rebuilt at start-up from the stored
//!   alerts and incidents with `remember`.
//! - **Severity and title**: an incident's severity is the highest of its alerts'; its title
//!   is the alert's for one alert, else built from its tactics in kill-chain order and its
//!   devices ("Execution and Defense Evasion on ws01", "Multi-stage incident involving
//!   Execution, Persistence and Credential Access on 3 devices").

mod alert;
mod correlate;
mod dedup;
mod entity;
mod extract;
mod incident;
mod rows;

pub use alert::{Alert, AlertDraft, DetectionSource, EventRef, MatchedField, Severity};
pub use correlate::{Correlation, Correlator, CorrelatorConfig, JoinReason, MergeCandidate};
pub use dedup::{Dedup, DedupConfig, Deduplicator};
pub use entity::{Entity, EntityData, EntityKind, Role};
pub use extract::{entities_from_row, entities_of};
pub use incident::{Incident, incident_severity};
pub use rows::{SERVICE_SOURCE, alert_rows};
