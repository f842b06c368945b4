//! Suppression and correlation through the public API, and the whole pipeline over the EVTX
//! attack samples with SigmaHQ's rules (skipped with a reason when the shared data is absent).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use rampart_alerts::{
    Alert, AlertDraft, Correlation, Correlator, CorrelatorConfig, Dedup, DedupConfig, Deduplicator,
    Entity, EntityData, EntityKind, Incident, Role,
};
use rampart_sigma::{Detection, Level, RuleInfo, RuleKind, RuleSet};

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default() + TimeDelta::minutes(minutes)
}

/// A draft of rule `rule` on `device` at `minutes`, with `extra` entities beside the device.
fn draft(rule: &str, tags: &[&str], device: &str, minutes: i64, extra: Vec<Entity>) -> AlertDraft {
    let detection = Detection {
        rule: Arc::new(RuleInfo {
            id: Some(format!("rule-{rule}")),
            title: format!("Rule {rule}"),
            level: Level::Medium,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            path: PathBuf::from(format!("{rule}.yml")),
            kind: RuleKind::Detection,
        }),
        timestamp: at(minutes),
        computer: device.to_string(),
        channel: "Security".into(),
        event_id: 4624,
        record_id: minutes as u64,
        source: Arc::from(Path::new("t.evtx")),
        matched: Vec::new(),
    };
    let mut d = AlertDraft::from_detection(&detection, None);
    d.entities.extend(extra);
    d.rekey();
    d
}

fn account(name: &str, sid: &str) -> Entity {
    Entity::new(
        EntityData::Account {
            name: Some(name.into()),
            domain: Some("CORP".into()),
            sid: Some(sid.into()),
            upn: None,
        },
        Role::Impacted,
    )
}

fn system() -> Entity {
    account("SYSTEM", "S-1-5-18")
}

fn ip(address: &str) -> Entity {
    Entity::new(
        EntityData::Ip {
            address: address.into(),
        },
        Role::Related,
    )
}

/// Feeds drafts in order through a deduplicator and a correlator the way the server does,
/// keeping the stored alerts and incidents up to date.
struct Pipeline {
    dedup: Deduplicator,
    correlator: Correlator,
    alerts: BTreeMap<String, Alert>,
    incidents: BTreeMap<String, Incident>,
    decisions: Vec<(String, Correlation)>,
    updates: usize,
    merges: bool,
    next_incident: usize,
}

impl Pipeline {
    fn new(config: CorrelatorConfig) -> Pipeline {
        Pipeline {
            merges: config.merge,
            next_incident: 0,
            dedup: Deduplicator::new(DedupConfig::default()),
            correlator: Correlator::new(config),
            alerts: BTreeMap::new(),
            incidents: BTreeMap::new(),
            decisions: Vec::new(),
            updates: 0,
        }
    }

    fn feed(&mut self, draft: AlertDraft) {
        let time = draft.first_event_time;
        let key = draft.dedup_key.clone();
        if let Dedup::Update(id) = self.dedup.check(&key, time)
            && let Some(alert) = self.alerts.get_mut(&id)
        {
            alert.record_repeat(&draft);
            self.dedup.remember(&key, &id, time);
            self.updates += 1;
            return;
        }
        let id = format!("A{:04}", self.alerts.len() + 1);
        self.dedup.remember(&key, &id, time);
        let mut alert = Alert::new(id.clone(), draft);
        let next = format!("I{:04}", self.next_incident + 1);
        let mut founded = false;
        let correlation = self.correlator.assign(&alert, || {
            founded = true;
            next
        });
        self.next_incident += usize::from(founded);
        alert.incident_id = Some(correlation.incident().to_string());
        match &correlation {
            Correlation::New { incident, .. } => {
                self.incidents
                    .insert(incident.clone(), Incident::found(incident.clone(), &alert));
            }
            Correlation::Join {
                incident, merge, ..
            } => {
                if let Some(i) = self.incidents.get_mut(incident) {
                    i.add_alert(&alert);
                }
                if self.merges {
                    for m in merge {
                        self.fold(&m.incident, incident);
                    }
                }
            }
        }
        self.alerts.insert(id.clone(), alert);
        self.decisions.push((id, correlation));
    }

    fn fold(&mut self, from: &str, into: &str) {
        let Some(old) = self.incidents.remove(from) else {
            return;
        };
        if let Some(target) = self.incidents.get_mut(into) {
            target.absorb(&old);
        }
        for alert in self.alerts.values_mut() {
            if alert.incident_id.as_deref() == Some(from) {
                alert.incident_id = Some(into.to_string());
            }
        }
    }
}

fn joined(c: &Correlation) -> Option<(&str, &str)> {
    match c {
        Correlation::Join {
            incident, reason, ..
        } => Some((incident.as_str(), reason.entity_key.as_str())),
        Correlation::New { .. } => None,
    }
}

#[test]
fn a_shared_account_joins_across_devices_and_system_does_not() {
    let mut p = Pipeline::new(CorrelatorConfig::default());
    let bob = || account("bob", "S-1-5-21-1-2-3-1104");
    p.feed(draft("a", &[], "ws01", 0, vec![bob(), system()]));
    p.feed(draft("b", &[], "ws02.corp.local", 30, vec![bob()]));
    p.feed(draft("c", &[], "ws03", 40, vec![system(), ip("127.0.0.1")]));
    let d = &p.decisions;
    assert_eq!(
        d[0].1,
        Correlation::New {
            incident: "I0001".into(),
            title: "Rule a".into()
        }
    );
    assert_eq!(
        joined(&d[1].1),
        Some(("I0001", "account:sid:S-1-5-21-1-2-3-1104"))
    );
    let Correlation::Join { reason, .. } = &d[1].1 else {
        unreachable!()
    };
    assert_eq!(reason.entity_kind, EntityKind::Account);
    assert_eq!(reason.display, "CORP\\bob");
    assert_eq!(reason.linked_alert, "A0001");
    assert_eq!(
        (reason.alert_time - reason.linked_alert_time).num_minutes(),
        30
    );
    assert_eq!(
        d[1].1.explain(),
        "shares account CORP\\bob with alert A0001 (30 min apart)"
    );
    assert!(
        matches!(&d[2].1, Correlation::New { incident, .. } if incident == "I0002"),
        "SYSTEM and loopback link nothing: {:?}",
        d[2].1
    );
    assert_eq!(d[2].1.explain(), "first alert");
}

#[test]
fn the_device_correlates_until_the_window_expires() {
    let mut p = Pipeline::new(CorrelatorConfig::default());
    p.feed(draft("a", &["attack.execution"], "WS01", 0, vec![]));
    p.feed(draft(
        "b",
        &["attack.defense-evasion"],
        "ws01.corp.local",
        60 * 23,
        vec![],
    ));
    // 25 h after the first alert but 2 h after the second: the window is per linked alert.
    p.feed(draft("c", &[], "ws01", 60 * 25, vec![]));
    assert!(p.correlator.holds_incident("I0001"));
    // 48 h after the last alert: a new incident, and the first one is out of the window.
    p.feed(draft("d", &[], "ws01", 60 * 73, vec![]));
    assert!(!p.correlator.holds_incident("I0001"));
    assert!(p.correlator.holds_incident("I0002"));
    let keys: Vec<_> = p.decisions.iter().map(|(_, c)| joined(c)).collect();
    assert_eq!(
        keys,
        [
            None,
            Some(("I0001", "device:ws01")),
            Some(("I0001", "device:ws01")),
            None
        ]
    );
    let Correlation::Join { reason, .. } = &p.decisions[2].1 else {
        unreachable!()
    };
    assert_eq!(
        reason.linked_alert, "A0002",
        "the closest alert in time explains"
    );
    let incident = &p.incidents["I0001"];
    assert_eq!(incident.title, "Execution and Defense Evasion on ws01");
    assert_eq!(incident.alert_count, 3);
    assert_eq!(p.incidents.len(), 2);
}

#[test]
fn an_alert_bridging_two_incidents_joins_the_earliest_and_reports_the_other() {
    for merge in [true, false] {
        let mut p = Pipeline::new(CorrelatorConfig {
            merge,
            ..Default::default()
        });
        let alice = || account("alice", "S-1-5-21-1-2-3-1105");
        let bob = || account("bob", "S-1-5-21-1-2-3-1104");
        p.feed(draft("a", &[], "ws01", 0, vec![alice()]));
        p.feed(draft("b", &[], "ws02", 10, vec![bob()]));
        p.feed(draft("c", &[], "ws03", 20, vec![bob(), alice()]));
        p.feed(draft("d", &[], "ws04", 30, vec![bob()]));
        let Correlation::Join {
            incident,
            reason,
            merge: candidates,
        } = &p.decisions[2].1
        else {
            panic!("{:?}", p.decisions[2].1)
        };
        assert_eq!(incident, "I0001");
        assert_eq!(reason.linked_alert, "A0001");
        assert_eq!(candidates.len(), 1);
        assert_eq!(candidates[0].incident, "I0002");
        assert_eq!(candidates[0].reason.linked_alert, "A0002");
        assert!(
            p.decisions[2]
                .1
                .explain()
                .contains("also links incident I0002")
        );
        // The next alert of bob links I0001 (through the bridge) and, unmerged, I0002.
        let Correlation::Join {
            incident,
            merge: candidates,
            ..
        } = &p.decisions[3].1
        else {
            panic!("{:?}", p.decisions[3].1)
        };
        assert_eq!(incident, "I0001");
        assert_eq!(candidates.len(), usize::from(!merge), "merge = {merge}");
        assert_eq!(p.incidents.len(), if merge { 1 } else { 2 });
        if merge {
            assert_eq!(p.incidents["I0001"].alert_count, 4);
            assert!(
                p.alerts
                    .values()
                    .all(|a| a.incident_id.as_deref() == Some("I0001"))
            );
        }
    }
}

#[test]
fn a_full_incident_attracts_only_through_specific_entities() {
    let mut p = Pipeline::new(CorrelatorConfig {
        max_incident_alerts: 2,
        ..Default::default()
    });
    let process = |role| {
        Entity::new(
            EntityData::Process {
                device: Some("ws01".into()),
                pid: Some(4242),
                image: Some(r"C:\Users\Public\x.exe".into()),
                file_name: Some("x.exe".into()),
                command_line: None,
                sha1: None,
                sha256: None,
                creation_time: Some(at(0)),
            },
            role,
        )
    };
    p.feed(draft("a", &[], "ws01", 0, vec![process(Role::Child)]));
    p.feed(draft("b", &[], "ws01", 1, vec![]));
    p.feed(draft("c", &[], "ws01", 2, vec![]));
    p.feed(draft("d", &[], "ws01", 3, vec![process(Role::Parent)]));
    let keys: Vec<_> = p.decisions.iter().map(|(_, c)| joined(c)).collect();
    assert_eq!(
        keys,
        [
            None,
            Some(("I0001", "device:ws01")),
            None,
            Some(("I0001", "process:ws01:4242@2023-11-14T22:13:20Z")),
        ]
    );
}

#[test]
fn repeats_are_suppressed_within_the_window() {
    let mut p = Pipeline::new(CorrelatorConfig::default());
    for minutes in [0, 20, 70, 200] {
        p.feed(draft("a", &[], "ws01", minutes, vec![ip("203.0.113.9")]));
    }
    p.feed(draft("a", &[], "ws01", 210, vec![ip("203.0.113.10")]));
    assert_eq!(
        p.updates, 2,
        "20 and 70 minutes repeat the alert of minute 0"
    );
    assert_eq!(p.alerts.len(), 3);
    let first = &p.alerts["A0001"];
    assert_eq!(first.event_count, 3);
    assert_eq!(first.draft.last_event_time, at(70));
}

/// Equal-time alerts produced in any order give the same alerts and incidents once sorted by
/// `AlertDraft::order_key`.
#[test]
fn shuffled_batches_give_the_same_incidents() {
    let batch = || {
        let mut drafts = Vec::new();
        for (i, device) in ["ws01", "ws02", "ws03", "ws04"].into_iter().enumerate() {
            for rule in ["a", "b", "c"] {
                let shared = if i % 2 == 0 {
                    account("bob", "S-1-5-21-1-2-3-1104")
                } else {
                    ip(&format!("10.0.0.{i}"))
                };
                drafts.push(draft(rule, &[], device, 5, vec![shared]));
            }
        }
        drafts
    };
    let run = |mut drafts: Vec<AlertDraft>| {
        drafts.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let mut p = Pipeline::new(CorrelatorConfig::default());
        for d in drafts {
            p.feed(d);
        }
        let shape: Vec<(String, String, String)> = p
            .alerts
            .values()
            .map(|a| {
                (
                    a.id.clone(),
                    a.draft.dedup_key.clone(),
                    a.incident_id.clone().unwrap_or_default(),
                )
            })
            .collect();
        (shape, p.decisions)
    };
    let reference = run(batch());
    // A deterministic shuffle: rotate and reverse in several ways.
    for seed in 1..6 {
        let mut drafts = batch();
        let by = seed * 5 % drafts.len();
        drafts.rotate_left(by);
        if seed % 2 == 0 {
            drafts.reverse();
        }
        assert_eq!(run(drafts), reference, "seed {seed}");
    }
    let incidents: std::collections::BTreeSet<&str> =
        reference.0.iter().map(|(_, _, i)| i.as_str()).collect();
    assert_eq!(
        incidents.len(),
        3,
        "bob's devices (ws01, ws03) form one incident; ws02 and ws04 their own: {:?}",
        reference.0
    );
}

#[test]
fn state_is_bounded_and_rebuilt_from_stored_alerts() {
    let drafts = || {
        (0..60).map(|i| {
            let device = format!("ws{:02}", i % 7);
            let who = account(&format!("user{}", i % 5), &format!("S-1-5-21-9-{}", i % 5));
            draft("a", &[], &device, i * 45, vec![who])
        })
    };
    // Memory: a small capacity holds, time eviction too.
    let mut small = Correlator::new(CorrelatorConfig {
        capacity: 8,
        ..Default::default()
    });
    for (n, d) in drafts().enumerate() {
        let alert = Alert::new(format!("A{n}"), d);
        small.assign(&alert, || format!("I{n}"));
        assert!(small.len() <= 8);
    }
    let mut timed = Correlator::new(CorrelatorConfig::default());
    for (n, d) in drafts().enumerate() {
        timed.assign(&Alert::new(format!("A{n}"), d), || format!("I{n}"));
    }
    // 24 h behind the newest alert at 45-minute steps: 33 alerts.
    assert_eq!(timed.len(), 33);

    // Rebuild half-way from what was stored, then continue: the same decisions as a
    // correlator that never stopped.
    let mut whole = Pipeline::new(CorrelatorConfig::default());
    for d in drafts() {
        whole.feed(d);
    }
    let mut first_half = Pipeline::new(CorrelatorConfig::default());
    for d in drafts().take(30) {
        first_half.feed(d);
    }
    let mut rebuilt = Correlator::new(CorrelatorConfig::default());
    for alert in first_half.alerts.values() {
        let incident = alert
            .incident_id
            .as_ref()
            .and_then(|i| first_half.incidents.get(i))
            .expect("every alert is in a stored incident");
        rebuilt.remember(alert, incident);
    }
    first_half.correlator = rebuilt;
    for d in drafts().skip(30) {
        first_half.feed(d);
    }
    assert_eq!(first_half.decisions, whole.decisions);
}

/// The whole pipeline over the EVTX attack samples with all SigmaHQ rules: every alert ends in
/// exactly one incident, no join goes through an entity that joins everything, and the
/// numbers are printed (`--nocapture`).
#[test]
fn attack_samples_become_alerts_and_incidents() {
    let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
        return;
    };
    let Some(rules_dir) = rampart_testdata::dataset("rules/sigma") else {
        return;
    };
    let rules = RuleSet::load(&[rules_dir]);
    let (files, errors) = rampart_sources::evtx::collect_files(&[samples]);
    assert!(errors.is_empty(), "{errors:?}");
    let drafts: Mutex<Vec<AlertDraft>> = Mutex::default();
    let held = Mutex::new(Vec::new());
    rampart_sources::evtx::read_files(
        &files,
        |event| {
            let mut detections = Vec::new();
            let input = rules.evaluate(&event, &mut detections);
            if !detections.is_empty() {
                let row = rampart_sources::windows::map_event(&event);
                let mut out = drafts.lock().unwrap();
                out.extend(
                    detections
                        .iter()
                        .map(|d| AlertDraft::from_detection(d, Some(&row))),
                );
            }
            held.lock().unwrap().extend(input);
        },
        |_, _| {},
    );
    let mut drafts = drafts.into_inner().unwrap();
    let mut inputs = held.into_inner().unwrap();
    inputs.sort_by_key(|i| (i.event.timestamp, i.event.record_id));
    let mut correlated = Vec::new();
    let mut correlator = rules.correlator();
    for input in inputs {
        correlator.feed(input, &mut correlated);
    }
    drafts.extend(
        correlated
            .iter()
            .map(|d| AlertDraft::from_detection(d, None)),
    );
    drafts.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let detections = drafts.len();
    assert!(
        detections > 100,
        "expected many detections, got {detections}"
    );

    let mut p = Pipeline::new(CorrelatorConfig::default());
    for d in drafts {
        p.feed(d);
    }

    // Every alert is in exactly one live incident, and the counts add up.
    for alert in p.alerts.values() {
        let incident = alert.incident_id.as_deref().expect("placed");
        assert!(
            p.incidents.contains_key(incident),
            "{incident} of {} was merged away",
            alert.id
        );
    }
    let mut per_incident: HashMap<&str, u64> = HashMap::new();
    for alert in p.alerts.values() {
        *per_incident
            .entry(alert.incident_id.as_deref().unwrap_or_default())
            .or_default() += 1;
    }
    for (id, incident) in &p.incidents {
        assert_eq!(
            per_incident.get(id.as_str()).copied(),
            Some(incident.alert_count),
            "{id}"
        );
    }

    // No join through an entity that joins everything.
    let probe = Correlator::new(CorrelatorConfig::default());
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut merges = 0;
    for (id, decision) in &p.decisions {
        let Correlation::Join { reason, merge, .. } = decision else {
            continue;
        };
        merges += merge.len();
        *by_kind.entry(reason.entity_kind.name()).or_default() += 1;
        let key = reason.entity_key.to_lowercase();
        let noisy = [
            "account:sid:s-1-5-18",
            "account:sid:s-1-5-19",
            "account:sid:s-1-5-20",
            "account:name:nt authority\\",
            "account:name:system",
            "ip:127.",
            "ip:::1",
            "ip:0.0.0.0",
            "ip:fe80:",
        ];
        let machine_account = key.starts_with("account:name:") && key.ends_with('$');
        assert!(
            !noisy.iter().any(|n| key.starts_with(n)) && !machine_account,
            "{id} joined via {key}"
        );
        let entity = p.alerts[id]
            .draft
            .entities
            .iter()
            .find(|e| e.keys().contains(&reason.entity_key))
            .expect("the reason names one of the alert's entities");
        assert_eq!(probe.exclusion(entity), None, "{id} joined via {entity:?}");
    }

    let mut excluded: BTreeMap<&str, usize> = BTreeMap::new();
    for alert in p.alerts.values() {
        for entity in &alert.draft.entities {
            if let Some(why) = probe.exclusion(entity) {
                *excluded.entry(why).or_default() += 1;
            }
        }
    }
    println!("entities kept out of correlation: {excluded:?}");
    assert!(
        excluded.contains_key("well-known system account"),
        "the samples run much as SYSTEM: {excluded:?}"
    );
    let mut sizes: Vec<(&String, &Incident)> = p.incidents.iter().collect();
    sizes.sort_by(|a, b| b.1.alert_count.cmp(&a.1.alert_count).then(a.0.cmp(b.0)));
    println!(
        "{} files, {detections} detections → {} alerts ({} repeats suppressed) → {} incidents; joins by entity: {by_kind:?}; merges: {merges}",
        files.len(),
        p.alerts.len(),
        p.updates,
        p.incidents.len()
    );
    for (id, incident) in sizes.iter().take(8) {
        println!(
            "  {id}: {} alerts, {:?}: {}",
            incident.alert_count, incident.severity, incident.title
        );
    }
    assert_eq!(p.updates + p.alerts.len(), detections);
}
