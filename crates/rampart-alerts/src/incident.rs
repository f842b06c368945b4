//! Incidents as stored: what the correlator's decisions build up, with a Defender-style title.

use chrono::{DateTime, Utc};
use rampart_schema::attack::TACTICS;
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, Severity};
use crate::entity::host_name;

/// An incident: alerts correlated by shared entities and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub title: String,
    /// The highest severity of its alerts.
    pub severity: Severity,
    pub first_event_time: DateTime<Utc>,
    pub last_event_time: DateTime<Utc>,
    pub alert_count: u64,
    /// Device names of its alerts, sorted; one name per machine (`ws01` and `ws01.corp.local`
    /// are one, the first name seen stays).
    pub devices: Vec<String>,
    /// ATT&CK tactics of its alerts, in kill-chain order.
    pub tactics: Vec<String>,
    /// The founding alert's title: a one-alert incident is named after its alert.
    pub first_alert_title: String,
}

impl Incident {
    /// The incident `alert` founds.
    pub fn found(id: impl Into<String>, alert: &Alert) -> Incident {
        let mut incident = Incident {
            id: id.into(),
            title: String::new(),
            severity: alert.draft.severity,
            first_event_time: alert.draft.first_event_time,
            last_event_time: alert.draft.last_event_time,
            alert_count: 0,
            devices: Vec::new(),
            tactics: Vec::new(),
            first_alert_title: alert.draft.title.clone(),
        };
        incident.add_alert(alert);
        incident
    }

    /// Adds an alert that joined: severity, times, devices, tactics and title follow.
    pub fn add_alert(&mut self, alert: &Alert) {
        let d = &alert.draft;
        self.alert_count += 1;
        self.severity = self.severity.max(d.severity);
        self.first_event_time = self.first_event_time.min(d.first_event_time);
        self.last_event_time = self.last_event_time.max(d.last_event_time);
        self.add_devices(d.device_name.iter());
        self.add_tactics(d.tactics.iter());
        self.title = incident_title(self);
    }

    /// Folds `other` (a merge candidate the correlator merged) into this incident.
    pub fn absorb(&mut self, other: &Incident) {
        self.alert_count += other.alert_count;
        self.severity = self.severity.max(other.severity);
        self.first_event_time = self.first_event_time.min(other.first_event_time);
        self.last_event_time = self.last_event_time.max(other.last_event_time);
        self.add_devices(other.devices.iter());
        self.add_tactics(other.tactics.iter());
        self.title = incident_title(self);
    }

    fn add_devices<'a>(&mut self, devices: impl Iterator<Item = &'a String>) {
        for device in devices {
            let host = host_name(device);
            if !self.devices.iter().any(|d| host_name(d) == host) {
                self.devices.push(device.clone());
                self.devices.sort();
            }
        }
    }

    fn add_tactics<'a>(&mut self, tactics: impl Iterator<Item = &'a String>) {
        for tactic in tactics {
            if !self.tactics.contains(tactic) {
                self.tactics.push(tactic.clone());
            }
        }
        self.tactics
            .sort_by_key(|t| TACTICS.iter().position(|k| k.name == t.as_str()));
    }
}

/// The severity of an incident holding `alerts`: the highest of theirs (`Informational` for
/// none), for when the caller recomputes after alerts change.
pub fn incident_severity<'a>(alerts: impl IntoIterator<Item = &'a Alert>) -> Severity {
    alerts
        .into_iter()
        .map(|a| a.draft.severity)
        .max()
        .unwrap_or(Severity::Informational)
}

/// Defender-style: a one-alert incident is named after its alert; otherwise after its
/// tactics and where they happened — "Execution and Defense Evasion on ws01",
/// "Multi-stage incident involving Execution, Persistence and Credential Access on 3 devices",
/// "Multi-stage incident involving Execution, Persistence and 4 other tactics on ws01".
fn incident_title(incident: &Incident) -> String {
    if incident.alert_count <= 1 {
        return incident.first_alert_title.clone();
    }
    let what = match incident.tactics.as_slice() {
        [] => "Multiple alerts".to_string(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [a, b, c] => format!("Multi-stage incident involving {a}, {b} and {c}"),
        [a, b, rest @ ..] => format!(
            "Multi-stage incident involving {a}, {b} and {} other tactics",
            rest.len()
        ),
    };
    match incident.devices.as_slice() {
        [] => what,
        [one] => format!("{what} on {one}"),
        [a, b] => format!("{what} on {a} and {b}"),
        many => format!("{what} on {} devices", many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertDraft;
    use crate::alert::tests::{detection, process_row};
    use rampart_sigma::Level;

    fn alert(id: &str, tags: &[&str], level: Level, device: &str) -> Alert {
        let mut draft =
            AlertDraft::from_detection(&detection(tags, level), Some(&process_row(1, "x")));
        draft.device_name = Some(device.into());
        Alert::new(id, draft)
    }

    #[test]
    fn titles_and_severity_follow_the_alerts() {
        let a = alert("a", &["attack.execution"], Level::Low, "ws01");
        let mut i = Incident::found("i1", &a);
        assert_eq!(i.title, "Whoami Execution");
        assert_eq!(i.severity, Severity::Low);

        i.add_alert(&alert(
            "b",
            &["attack.defense-evasion"],
            Level::Medium,
            "ws01",
        ));
        assert_eq!(i.title, "Execution and Defense Evasion on ws01");
        assert_eq!(i.severity, Severity::Medium);

        let mut other = Incident::found(
            "i2",
            &alert(
                "c",
                &["attack.credential-access", "attack.discovery"],
                Level::Critical,
                "dc01",
            ),
        );
        other.add_alert(&alert(
            "d",
            &["attack.initial-access"],
            Level::Informational,
            "ws02",
        ));
        i.absorb(&other);
        assert_eq!(
            i.title,
            "Multi-stage incident involving Initial Access, Execution and 3 other tactics on 3 devices"
        );
        assert_eq!(i.severity, Severity::High);
        assert_eq!(i.alert_count, 4);
        assert_eq!(i.devices, ["dc01", "ws01", "ws02"]);

        let alerts = [
            alert("e", &[], Level::Medium, "x"),
            alert("f", &[], Level::Low, "x"),
        ];
        assert_eq!(incident_severity(&alerts), Severity::Medium);
        assert_eq!(incident_severity([]), Severity::Informational);
    }
}
