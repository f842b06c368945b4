//! The literal index: which rules a record can possibly match.
//!
//! For each compiled rule we derive a *witness*: a set of literals, each with the field it was
//! written for and where in the value it must stand (anywhere for `contains`, at the start for
//! `startswith`, at the end for `endswith`, the whole value for an exact match), such that, if
//! the rule matches a record, at least one of them occurs (case-folded) there. All witnesses of
//! a route go into one Aho-Corasick automaton; only the fields the witnesses name are scanned
//! (every value when a keyword is among them), and a rule is a candidate only when one of its
//! literals was found in its own field at its own place — `\cmd.exe` at the end of `Image`,
//! not in the middle of `CommandLine`. The few rules without a witness (regex-only, negations,
//! numeric comparisons) are evaluated on every record. A record's other fields (GUIDs, times,
//! most hashes) are never read.
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

/// Where in a value a literal must stand for its matcher to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Anchor {
    Anywhere,
    Start,
    End,
    Whole,
}

impl Anchor {
    /// Whether a literal found at `start..end` of a text of `len` bytes stands where it must.
    /// Only text values are held to it: numbers are rendered differently by the evaluator.
    fn holds(self, start: usize, end: usize, len: usize, text: bool) -> bool {
        !text
            || match self {
                Anchor::Anywhere => true,
                Anchor::Start => start == 0,
                Anchor::End => end == len,
                Anchor::Whole => start == 0 && end == len,
            }
    }
}

/// A literal one of a rule's matches shows: the field it shows in (`None`: any value), the
/// literal, and where in the value.
type Needle = (Option<String>, String, Anchor);

/// A literal's rules while the index is built: rule, field name and place.
type Uses = Vec<(u32, Option<String>, Anchor)>;

/// A rule that a literal stands for, in which field (`None`: any) and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    rule: u32,
    field: Option<u16>,
    anchor: Anchor,
}

/// The index of one route's rules.
pub struct Prefilter {
    automaton: Option<AhoCorasick>,
    /// Pattern id → the rules whose witness holds it, with field and place.
    pattern_entries: Vec<Vec<Entry>>,
    /// The fields to scan, or `None` for every value (a keyword witness).
    fields: Option<Vec<String>>,
    /// Every field a witness names, by name: the index entries refer to.
    field_ids: HashMap<String, u16>,
    /// Rules without a witness: evaluated on every record.
    always: Vec<u32>,
    rules: usize,
}

impl Prefilter {
    pub fn build(rules: &[CompiledRule]) -> Prefilter {
        let mut by_needle: HashMap<String, Uses> = HashMap::new();
        let mut named = BTreeSet::new();
        let mut keyword = false;
        let mut always = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match rule_witness(rule) {
                Some(needles) => {
                    for (field, literal, anchor) in needles {
                        match &field {
                            Some(f) => {
                                named.insert(f.clone());
                            }
                            None => keyword = true,
                        }
                        let entries = by_needle.entry(literal).or_default();
                        let entry = (i as u32, field, anchor);
                        if !entries.contains(&entry) {
                            entries.push(entry);
                        }
                    }
                }
                None => always.push(i as u32),
            }
        }
        let mut automaton = None;
        let mut field_ids = HashMap::new();
        let mut pattern_entries = Vec::new();
        // More fields than an entry can name: fall back to every rule (slower, never wrong).
        if named.len() <= usize::from(u16::MAX) {
            field_ids = named
                .iter()
                .enumerate()
                .map(|(id, name)| (name.clone(), id as u16))
                .collect();
            let mut literals: Vec<(String, Uses)> = by_needle.into_iter().collect();
            literals.sort();
            if !literals.is_empty() {
                automaton = AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .ascii_case_insensitive(true)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(literals.iter().map(|(n, _)| n))
                    .ok();
            }
            pattern_entries = literals
                .into_iter()
                .map(|(_, entries)| {
                    entries
                        .into_iter()
                        .map(|(rule, field, anchor)| Entry {
                            rule,
                            field: field.and_then(|f| field_ids.get(&f).copied()),
                            anchor,
                        })
                        .collect()
                })
                .collect();
        }
        if automaton.is_none() {
            // Nothing to scan with: every rule is a candidate (slower, never wrong).
            always = (0..rules.len() as u32).collect();
        }
        Prefilter {
            automaton,
            pattern_entries,
            fields: (!keyword).then(|| named.into_iter().collect()),
            field_ids,
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
            // A literal whose rules are all candidates already (`.exe` in every path) is not
            // looked at again.
            let mut done = vec![0u64; self.pattern_entries.len().div_ceil(64)];
            let mut scan = |field: Option<u16>, value: &str, text: bool| {
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
                    if done[word] & bit != 0 {
                        continue;
                    }
                    let mut all = true;
                    for e in &self.pattern_entries[p] {
                        if !hit[e.rule as usize] {
                            if (e.field.is_none() || e.field == field)
                                && e.anchor.holds(m.start(), m.end(), haystack.len(), text)
                            {
                                hit[e.rule as usize] = true;
                            } else {
                                all = false;
                            }
                        }
                    }
                    if all {
                        done[word] |= bit;
                    }
                }
            };
            match &self.fields {
                Some(fields) => {
                    for (id, f) in fields.iter().enumerate() {
                        event.visit_field_text(f, &mut |value, text| {
                            scan(Some(id as u16), value, text)
                        });
                    }
                }
                None => event.visit_named_text(&mut |name, value, text| {
                    scan(self.field_ids.get(name).copied(), value, text)
                }),
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
    let literal = |v: &str, anchor: Anchor| {
        let f = fold(v);
        (f.chars().count() >= MIN_NEEDLE_CHARS)
            .then(|| vec![(field.map(str::to_string), f, anchor)])
    };
    let within = |m: &CompiledMatcher| matcher_witness(field, m);
    match m {
        CompiledMatcher::Exact { value, .. } => literal(value, Anchor::Whole),
        CompiledMatcher::Contains { value, .. } => literal(value, Anchor::Anywhere),
        CompiledMatcher::StartsWith { value, .. } => literal(value, Anchor::Start),
        CompiledMatcher::EndsWith { value, .. } => literal(value, Anchor::End),
        CompiledMatcher::AhoCorasickSet { needles, .. } => {
            union(needles.iter().map(|n| literal(n, Anchor::Anywhere)))
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
        let shortest = w
            .iter()
            .map(|(_, n, _)| n.chars().count())
            .min()
            .unwrap_or(0);
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
            let mut literals: Vec<String> = w.into_iter().map(|(_, literal, _)| literal).collect();
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

        // A keyword may show in any value: then every value is scanned, and the keyword rule
        // is a candidate; the fielded one is not, its literal is in another field.
        let keyword = rule("b", "  keywords:\n    - 'mimikatz'\n  condition: keywords");
        let (set, key) = process_creation_route(&format!("{fielded}---\n{keyword}"));
        let prefilter = &set.routes[&key].prefilter;
        assert_eq!(prefilter.fields, None);
        assert_eq!(prefilter.candidates(&SigmaEvent::new(&elsewhere)), vec![1]);
        assert_eq!(prefilter.candidates(&SigmaEvent::new(&there)), vec![0, 1]);
    }

    #[test]
    fn a_literal_counts_in_its_own_field_at_its_own_place() {
        let rule = |title: &str, detection: &str| {
            format!(
                "title: {title}\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n{detection}\nlevel: low\n"
            )
        };
        let rules = [
            rule(
                "end",
                "  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel",
            ),
            rule(
                "start",
                "  sel:\n    CommandLine|startswith: 'net '\n  condition: sel",
            ),
            rule(
                "exact",
                "  sel:\n    OriginalFileName: 'Cmd.Exe'\n  condition: sel",
            ),
            rule(
                "contains",
                "  sel:\n    CommandLine|contains: 'whoami'\n  condition: sel",
            ),
        ]
        .join("---\n");
        let candidates = |rules: &str, data: serde_json::Value| {
            let (set, key) = process_creation_route(rules);
            let names: Vec<String> = set.routes[&key]
                .prefilter
                .candidates(&SigmaEvent::new(&sysmon_process(data)))
                .into_iter()
                .map(|i| set.routes[&key].rules[i as usize].title.clone())
                .collect();
            names
        };
        assert_eq!(
            candidates(
                &rules,
                serde_json::json!({
                "Image": "C:\\Windows\\System32\\WHOAMI.EXE", "CommandLine": "Net user",
                "OriginalFileName": "cmd.exe"})
            ),
            ["end", "start", "exact"]
        );
        // The same literals elsewhere in the value, or in another field.
        assert_eq!(
            candidates(
                &rules,
                serde_json::json!({
                "Image": "C:\\x\\whoami.exe.bak", "CommandLine": "cmd /c net user & whoami.exe",
                "ParentImage": "C:\\whoami.exe", "OriginalFileName": "cmd.exe.mui"})
            ),
            ["contains"]
        );
        // Numbers are rendered differently by the evaluator: no place is required of them.
        let number = rule("number", "  sel:\n    ProcessId: '10'\n  condition: sel");
        assert_eq!(
            candidates(&number, serde_json::json!({"ProcessId": 10.0})),
            ["number"]
        );
        // With a keyword rule every value is scanned; fielded literals still need their field.
        let keyword = rule(
            "keyword",
            "  keywords:\n    - 'mimikatz'\n  condition: keywords",
        );
        let both = format!("{rules}---\n{keyword}");
        assert_eq!(
            candidates(
                &both,
                serde_json::json!({
                "ParentImage": "C:\\whoami.exe", "Description": "MimiKatz"})
            ),
            ["keyword"]
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
