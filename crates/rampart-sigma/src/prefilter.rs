//! The literal index: which rules a record can possibly match.
//!
//! For each compiled rule we derive a *witness*: a set of literals, each with the field it was
//! written for, such that, if the rule matches a record, at least one of them occurs
//! (case-folded) in its field's value (in any value, for a keyword). All witnesses of a route
//! go into one Aho-Corasick automaton; only the fields the witnesses name are scanned (every
//! value when a keyword is among them), and only the rules whose witness was seen — plus the
//! few rules without a witness (regex-only, negations, numeric comparisons) — are evaluated.
//! A record's other fields (GUIDs, times, most hashes) are never read.
//!
//! Ours rather than rsigma's `Engine` index because that one builds a case-insensitive DFA per
//! field: ~135 MiB for SigmaHQ's Windows rules, most of triage's memory. A contiguous NFA over
//! the same literals takes a few MiB and scans a record in microseconds.

use std::collections::{BTreeSet, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use rsigma_eval::{CompiledDetection, CompiledMatcher, CompiledRule};
use rsigma_parser::{ConditionExpr, Quantifier};

use crate::event::SigmaEvent;

/// Literals shorter than this are not worth indexing: nearly every record holds them.
const MIN_NEEDLE_CHARS: usize = 2;

/// A literal one of a rule's matches shows, and the field it shows in (`None`: any value).
type Needle = (Option<String>, String);

/// The index of one route's rules.
pub struct Prefilter {
    automaton: Option<AhoCorasick>,
    /// Pattern id → rules whose witness holds it.
    pattern_rules: Vec<Vec<u32>>,
    /// The fields to scan, or `None` for every value (a keyword witness).
    fields: Option<Vec<String>>,
    /// Rules without a witness: evaluated on every record.
    always: Vec<u32>,
    rules: usize,
}

impl Prefilter {
    pub fn build(rules: &[CompiledRule]) -> Prefilter {
        let mut by_needle: HashMap<String, Vec<u32>> = HashMap::new();
        let mut fields = Some(BTreeSet::new());
        let mut always = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match rule_witness(rule) {
                Some(needles) => {
                    for (field, literal) in needles {
                        match field {
                            Some(f) => {
                                if let Some(set) = &mut fields {
                                    set.insert(f);
                                }
                            }
                            None => fields = None,
                        }
                        let rules = by_needle.entry(literal).or_default();
                        // A rule names a literal once, however many fields show it.
                        if rules.last() != Some(&(i as u32)) {
                            rules.push(i as u32);
                        }
                    }
                }
                None => always.push(i as u32),
            }
        }
        let mut entries: Vec<(String, Vec<u32>)> = by_needle.into_iter().collect();
        entries.sort();
        let automaton = if entries.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(true)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(entries.iter().map(|(n, _)| n))
                .ok()
        };
        if automaton.is_none() {
            // Could not build: every rule is a candidate (slower, never wrong).
            always = (0..rules.len() as u32).collect();
        }
        Prefilter {
            automaton,
            pattern_rules: entries.into_iter().map(|(_, r)| r).collect(),
            fields: fields.map(|set| set.into_iter().collect()),
            always,
            rules: rules.len(),
        }
    }

    /// The rules a record can match, in rule order.
    pub fn candidates(&self, event: &SigmaEvent<'_>) -> Vec<u32> {
        let mut hit = vec![false; self.rules];
        for &i in &self.always {
            hit[i as usize] = true;
        }
        if let Some(ac) = &self.automaton {
            // A literal seen again (`.exe` in every path) adds no rule: its rules are marked once.
            let mut seen = vec![0u64; self.pattern_rules.len().div_ceil(64)];
            let mut scan = |value: &str| {
                if value.len() < MIN_NEEDLE_CHARS {
                    return;
                }
                // The automaton folds ASCII itself; other text is folded first.
                let folded;
                let haystack = if value.is_ascii() {
                    value
                } else {
                    folded = fold(value);
                    folded.as_str()
                };
                for m in ac.find_overlapping_iter(haystack) {
                    let p = m.pattern().as_usize();
                    let (word, bit) = (p / 64, 1u64 << (p % 64));
                    if seen[word] & bit == 0 {
                        seen[word] |= bit;
                        for &r in &self.pattern_rules[p] {
                            hit[r as usize] = true;
                        }
                    }
                }
            };
            match &self.fields {
                Some(fields) => fields
                    .iter()
                    .for_each(|f| event.visit_field_text(f, &mut scan)),
                None => event.visit_text(&mut scan),
            }
        }
        hit.iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| i as u32)
            .collect()
    }
}

/// Case folding that keeps substrings substrings: per character, no context rules.
fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Literals one of which every match of the rule shows (each in its field), or `None` when
/// there is no such set.
pub fn rule_witness(rule: &CompiledRule) -> Option<Vec<Needle>> {
    // Several conditions are alternatives.
    union(
        rule.conditions
            .iter()
            .map(|c| condition_witness(c, &rule.detections)),
    )
}

fn condition_witness(
    expr: &ConditionExpr,
    named: &HashMap<String, CompiledDetection>,
) -> Option<Vec<Needle>> {
    match expr {
        ConditionExpr::Identifier(name) => detection_witness(named.get(name)?),
        ConditionExpr::And(list) => best(list.iter().map(|e| condition_witness(e, named))),
        ConditionExpr::Or(list) => union(list.iter().map(|e| condition_witness(e, named))),
        ConditionExpr::Not(_) => None,
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let matching: Vec<&CompiledDetection> = named
                .iter()
                .filter(|(n, _)| pattern.matches_detection_name(n))
                .map(|(_, d)| d)
                .collect();
            if matching.is_empty() {
                return None;
            }
            match quantifier {
                Quantifier::Any | Quantifier::Count(1) => {
                    union(matching.into_iter().map(detection_witness))
                }
                // `all of` (or `n of` with n > 1): any one of them must match.
                Quantifier::All | Quantifier::Count(2..) => {
                    best(matching.into_iter().map(detection_witness))
                }
                Quantifier::Count(0) => None,
            }
        }
    }
}

fn detection_witness(d: &CompiledDetection) -> Option<Vec<Needle>> {
    match d {
        CompiledDetection::AllOf(items) => best(
            items
                .iter()
                .map(|i| matcher_witness(i.field.as_deref(), &i.matcher)),
        ),
        CompiledDetection::AnyOf(list) => union(list.iter().map(detection_witness)),
        CompiledDetection::Keywords(m) => matcher_witness(None, m),
        CompiledDetection::And(list) => best(list.iter().map(detection_witness)),
        CompiledDetection::ArrayMatch { .. } | CompiledDetection::Conditional { .. } => None,
    }
}

fn matcher_witness(field: Option<&str>, m: &CompiledMatcher) -> Option<Vec<Needle>> {
    let literal = |v: &str| {
        let f = fold(v);
        (f.chars().count() >= MIN_NEEDLE_CHARS).then(|| vec![(field.map(str::to_string), f)])
    };
    let within = |m: &CompiledMatcher| matcher_witness(field, m);
    match m {
        CompiledMatcher::Exact { value, .. }
        | CompiledMatcher::Contains { value, .. }
        | CompiledMatcher::StartsWith { value, .. }
        | CompiledMatcher::EndsWith { value, .. } => literal(value),
        CompiledMatcher::AhoCorasickSet { needles, .. } => {
            union(needles.iter().map(|n| literal(n)))
        }
        CompiledMatcher::AnyOf(list) => union(list.iter().map(within)),
        CompiledMatcher::AllOf(list) => best(list.iter().map(within)),
        CompiledMatcher::CaseInsensitiveGroup { children, mode } => match mode {
            rsigma_eval::matcher::GroupMode::Any => union(children.iter().map(within)),
            rsigma_eval::matcher::GroupMode::All => best(children.iter().map(within)),
        },
        _ => None,
    }
}

/// Every alternative must have a witness; the union is the witness of the OR.
fn union(parts: impl Iterator<Item = Option<Vec<Needle>>>) -> Option<Vec<Needle>> {
    let mut out = Vec::new();
    for p in parts {
        out.extend(p?);
    }
    (!out.is_empty()).then_some(out)
}

/// Any conjunct's witness is a witness of the AND: take the most selective.
fn best(parts: impl Iterator<Item = Option<Vec<Needle>>>) -> Option<Vec<Needle>> {
    parts.flatten().filter(|w| !w.is_empty()).max_by_key(|w| {
        let shortest = w.iter().map(|(_, n)| n.chars().count()).min().unwrap_or(0);
        (shortest.min(8), std::cmp::Reverse(w.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuleSet;
    use std::path::Path;

    fn witness(detection: &str) -> Option<Vec<String>> {
        let yaml = format!(
            "title: t\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n{detection}\nlevel: low\n"
        );
        let set = rsigma_parser::parse_sigma_yaml(&yaml).unwrap();
        let rule = rsigma_eval::compile_rule(&set.rules[0]).unwrap();
        rule_witness(&rule).map(|w| {
            let mut literals: Vec<String> = w.into_iter().map(|(_, literal)| literal).collect();
            literals.sort();
            literals
        })
    }

    #[test]
    fn witnesses_follow_the_condition() {
        let w = witness("  sel:\n    Image|endswith: '\\WHOAMI.exe'\n  condition: sel");
        assert_eq!(w, Some(vec!["\\whoami.exe".to_string()]));
        // OR: every branch must give a literal; AND: one conjunct is enough.
        let w = witness(
            "  a:\n    CommandLine|contains: ['-enc', 'frombase64']\n  b:\n    Image|endswith: '.exe'\n  condition: a or b",
        );
        assert_eq!(
            w,
            Some(vec!["-enc".into(), ".exe".into(), "frombase64".into()])
        );
        let w = witness(
            "  a:\n    CommandLine|contains: 'mimikatz'\n  b:\n    CommandLine|re: 'x.*y'\n  condition: a and b",
        );
        assert_eq!(w, Some(vec!["mimikatz".into()]));
        assert_eq!(
            witness(
                "  a:\n    CommandLine|contains: 'x1'\n  b:\n    CommandLine|re: 'x.*y'\n  condition: a or b"
            ),
            None
        );
        assert_eq!(
            witness("  a:\n    CommandLine|contains: 'abc'\n  condition: not a"),
            None
        );
        let w = witness(
            "  sel_a:\n    Image|endswith: 'aa.exe'\n  sel_b:\n    Image|endswith: 'bb.exe'\n  condition: 1 of sel_*",
        );
        assert_eq!(w, Some(vec!["aa.exe".into(), "bb.exe".into()]));
        let w = witness(
            "  sel_a:\n    Image|endswith: 'aa.exe'\n  sel_b:\n    OriginalFileName: 'b'\n  condition: all of sel_*",
        );
        assert_eq!(w, Some(vec!["aa.exe".into()]));
        // Too short to be worth indexing, and numbers, give no witness.
        assert_eq!(
            witness("  a:\n    CommandLine|contains: 'x'\n  condition: a"),
            None
        );
        assert_eq!(witness("  a:\n    ProcessId|gt: 4\n  condition: a"), None);
        let w = witness("  keywords:\n    - 'Invoke-Mimikatz'\n  condition: keywords");
        assert_eq!(w, Some(vec!["invoke-mimikatz".into()]));
    }

    /// Sysmon process creations of the rules `yaml` (one document per rule) and their index.
    fn process_creation_route(yaml: &str) -> (RuleSet, crate::taxonomy::RouteKey) {
        let set = RuleSet::from_yaml(yaml, Path::new("t.yml"));
        (set, crate::taxonomy::RouteKey::Category("process_creation"))
    }

    fn sysmon_process(data: serde_json::Value) -> rampart_sources::WinEvent {
        let json = serde_json::json!({"Event": {
            "System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                "Computer": "PC", "Provider_attributes": {"Name": "Microsoft-Windows-Sysmon"}},
            "EventData": data,
        }});
        rampart_sources::WinEvent::from_json(
            std::sync::Arc::from(Path::new("t.evtx")),
            1,
            chrono::DateTime::UNIX_EPOCH,
            json,
        )
        .unwrap()
    }

    #[test]
    fn only_the_fields_witnesses_name_are_scanned() {
        let rule = |title: &str, detection: &str| {
            format!(
                "title: {title}\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n{detection}\nlevel: low\n"
            )
        };
        let fielded = rule(
            "a",
            "  sel:\n    CommandLine|contains: 'mimikatz'\n  condition: sel",
        );
        let (set, key) = process_creation_route(&fielded);
        let prefilter = &set.routes[&key].prefilter;
        assert_eq!(prefilter.fields, Some(vec!["CommandLine".to_string()]));
        let elsewhere = sysmon_process(serde_json::json!({
            "CommandLine": "cmd.exe /c dir", "ParentCommandLine": "MIMIKATZ.exe"}));
        assert!(
            prefilter
                .candidates(&SigmaEvent::new(&elsewhere))
                .is_empty()
        );
        let there = sysmon_process(serde_json::json!({"CommandLine": "x MimiKatz y"}));
        assert_eq!(prefilter.candidates(&SigmaEvent::new(&there)), vec![0]);

        // A keyword may show in any value: then every value is scanned.
        let keyword = rule("b", "  keywords:\n    - 'mimikatz'\n  condition: keywords");
        let (set, key) = process_creation_route(&format!("{fielded}---\n{keyword}"));
        let prefilter = &set.routes[&key].prefilter;
        assert_eq!(prefilter.fields, None);
        let candidates = prefilter.candidates(&SigmaEvent::new(&elsewhere));
        assert_eq!(
            candidates.len(),
            2,
            "both rules are candidates: {candidates:?}"
        );
    }

    /// The index may only over-approximate: on every record of the shared datasets, every rule
    /// that matches when evaluated directly is among the candidates.
    #[test]
    fn candidates_never_miss_a_match() {
        let Some(rules) = rampart_testdata::dataset("rules/sigma") else {
            return;
        };
        let Some(samples) = rampart_testdata::dataset("datasets/evtx-attack-samples") else {
            return;
        };
        let Some(regression) = rampart_testdata::dataset("datasets/sigma-regression") else {
            return;
        };
        let set = RuleSet::load(&[rules]);
        let (files, _) = rampart_sources::evtx::collect_files(&[samples, regression]);
        let checked = std::sync::atomic::AtomicUsize::new(0);
        for file in &files {
            rampart_sources::evtx::read_file(Path::new(file), |event| {
                let view = SigmaEvent::new(&event);
                let mut keys = Vec::new();
                crate::taxonomy::routes_of(&event, &mut keys);
                for key in keys {
                    let Some(route) = set.routes.get(&key) else {
                        continue;
                    };
                    let candidates = route.prefilter.candidates(&view);
                    for (i, rule) in route.rules.iter().enumerate() {
                        if rsigma_eval::evaluate_rule(rule, &view).is_some() {
                            checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            assert!(
                                candidates.contains(&(i as u32)),
                                "{} matches record {} of {} but is not a candidate",
                                rule.title,
                                event.record_id,
                                file.display()
                            );
                        }
                    }
                }
            });
        }
        assert!(
            checked.into_inner() > 1000,
            "the datasets hold matches to check"
        );
    }
}
