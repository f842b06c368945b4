//! The literal index: which rules a record can possibly match.
//!
//! For each compiled rule we derive a *witness*: a set of literals, each with the field it was
//! written for and where in the value it must stand (anywhere for `contains`, at the start for
//! `startswith`, at the end for `endswith`, the whole value for an exact match), or numbers a
//! field must equal (`EventID: 4624`), such that, if the rule matches a record, at least one
//! of them occurs (case-folded) there. Each field a witness names has its own literals, by
//! place: those that must start or end the value, or be all of it, in tries walked from the
//! value's first or last byte (a few bytes, however many literals); only `contains` literals
//! need an Aho-Corasick scan of the whole value, with that field's literals alone. So a rule is
//! a candidate only when one of its literals is in its own field at its own place —
//! `\cmd.exe` at the end of `Image`, not in the middle of `CommandLine` — or one of its
//! numbers is its field's. Keywords are looked for in every text value. The few rules without
//! a witness (regex-only, negations, ranges) are evaluated on every record. A record's other
//! fields (GUIDs, times, most hashes) are never read.
//!
//! Ours rather than rsigma's `Engine` index because that one builds a case-insensitive DFA per
//! field: ~135 MiB for SigmaHQ's Windows rules, most of triage's memory. A contiguous NFA over
//! the same literals takes a few MiB and scans a record in microseconds.

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, MatchKind};
use rsigma_eval::event::Event;
use rsigma_eval::{CompiledDetection, CompiledMatcher, CompiledRule};
use rsigma_parser::{ConditionExpr, Quantifier};

use crate::event::SigmaEvent;

/// Literals shorter than this are not worth indexing: nearly every record holds them (an
/// ASCII character); one non-ASCII character (an emoji, a right-to-left override) is rare.
const MIN_NEEDLE_BYTES: usize = 2;

/// Where in a value a literal must stand for its matcher to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Anchor {
    Anywhere,
    Start,
    End,
    Whole,
}

/// What a match of a rule shows in a field's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shows {
    /// A literal (case-folded) at a place in the value's text.
    Text(String, Anchor),
    /// The number the value equals: an integer, as `NumericEq` compares in `f64`.
    Number(i64),
}

/// What one of a rule's matches shows, and in which field (`None`: any value).
type Needle = (Option<String>, Shows);

/// Integers up to this magnitude are exact in `f64`: equality there is equality of the `i64`.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// The index of one route's rules.
pub struct Prefilter {
    /// The literals of each field a witness names, by field name.
    fields: Vec<(String, Literals)>,
    /// The literals of keyword witnesses: looked for in every text value.
    keywords: Option<Literals>,
    /// Per field, the rules whose witness holds a number, by the number.
    numbers: Vec<(String, HashMap<i64, Vec<u32>>)>,
    /// Rules without a witness: evaluated on every record.
    always: Vec<u32>,
    rules: usize,
}

impl Prefilter {
    pub fn build(rules: &[CompiledRule]) -> Prefilter {
        let mut fields: BTreeMap<String, LiteralsBuilder> = BTreeMap::new();
        let mut keywords: Option<LiteralsBuilder> = None;
        let mut numbers: BTreeMap<String, HashMap<i64, Vec<u32>>> = BTreeMap::new();
        let mut always = Vec::new();
        for (i, compiled) in rules.iter().enumerate() {
            let rule = i as u32;
            let Some(needles) = rule_witness(compiled) else {
                always.push(rule);
                continue;
            };
            for (field, shows) in needles {
                match (field, shows) {
                    (Some(field), Shows::Text(literal, anchor)) => {
                        fields.entry(field).or_default().add(&literal, anchor, rule)
                    }
                    (None, Shows::Text(literal, anchor)) => {
                        keywords.get_or_insert_default().add(&literal, anchor, rule)
                    }
                    (Some(field), Shows::Number(n)) => {
                        let rules = numbers.entry(field).or_default().entry(n).or_default();
                        if rules.last() != Some(&rule) {
                            rules.push(rule);
                        }
                    }
                    // `number_witness` gives numbers of named fields only; were it not to,
                    // the rule is evaluated on every record.
                    (None, Shows::Number(_)) => always.push(rule),
                }
            }
        }
        let fields: Option<Vec<(String, Literals)>> = fields
            .into_iter()
            .map(|(field, literals)| Some((field, literals.build()?)))
            .collect();
        let keywords = keywords.map(LiteralsBuilder::build);
        match (fields, keywords) {
            (Some(fields), None) => Prefilter {
                fields,
                keywords: None,
                numbers: numbers.into_iter().collect(),
                always,
                rules: rules.len(),
            },
            (Some(fields), Some(Some(keywords))) => Prefilter {
                fields,
                keywords: Some(keywords),
                numbers: numbers.into_iter().collect(),
                always,
                rules: rules.len(),
            },
            // An automaton could not be built: every rule is a candidate (slower, never wrong).
            _ => Prefilter {
                fields: Vec::new(),
                keywords: None,
                numbers: Vec::new(),
                always: (0..rules.len() as u32).collect(),
                rules: rules.len(),
            },
        }
    }

    /// The rules a record can match, in rule order.
    pub fn candidates(&self, event: &SigmaEvent<'_>) -> Vec<u32> {
        let mut hit = vec![false; self.rules];
        for &i in &self.always {
            hit[i as usize] = true;
        }
        for (field, by_number) in &self.numbers {
            event.visit_field_numbers(field, &mut |n| {
                // A number a witness holds is an integer below `EXACT_INTEGER`: one equal to
                // it is too.
                if n.fract() == 0.0 && n.abs() < EXACT_INTEGER {
                    for &i in by_number.get(&(n as i64)).into_iter().flatten() {
                        hit[i as usize] = true;
                    }
                }
            });
        }
        let mut scratch = Scratch::default();
        for (field, literals) in &self.fields {
            event.visit_field_text(field, &mut |value, text| {
                literals.find(value, text, &mut hit, &mut scratch)
            });
        }
        if let Some(keywords) = &self.keywords {
            // Keywords are matched against text values only (numbers never match them).
            event.visit_string_values(&mut |value| {
                keywords.find(value, true, &mut hit, &mut scratch)
            });
        }
        hit.iter()
            .enumerate()
            .filter(|(_, h)| **h)
            .map(|(i, _)| i as u32)
            .collect()
    }
}

/// The literals of one field (or the keywords), by where in a value they must stand: the
/// anchored ones are looked up by walking a trie from the value's start or end, a few bytes
/// whatever the number of literals; only `contains` literals need a scan of the whole value.
struct Literals {
    /// `startswith` literals, and whole values (rules matched only where the walk ends).
    heads: Trie,
    /// `endswith` literals, reversed: walked from the value's last byte.
    tails: Trie,
    /// `contains` literals.
    inner: Option<Inner>,
}

/// `contains` literals, searched for in the folded value.
enum Inner {
    /// Each literal's rules: an overlapping search finds every literal the value holds.
    Each(AhoCorasick, Vec<Vec<u32>>),
    /// The literals of a few rules (the keywords of one or two rules, say): a leftmost search
    /// that stops at the first literal found, which can use the crate's SIMD searcher, and
    /// marks all of them.
    Any(AhoCorasick, Vec<u32>),
}

/// At most this many rules share an [`Inner::Any`].
const ANY_RULES: usize = 4;

/// What the search of one record reuses from value to value.
#[derive(Default)]
struct Scratch {
    /// Which literals of an [`Inner::Each`] have been found in the value.
    seen: Vec<u64>,
    folded: String,
}

impl Literals {
    /// Marks the rules of the literals `value` shows where they must stand. A number or
    /// boolean (`text` false) is rendered by the evaluator in its own way: a literal anywhere
    /// in it counts, whatever its place.
    fn find(&self, value: &str, text: bool, hit: &mut [bool], scratch: &mut Scratch) {
        if value.len() < MIN_NEEDLE_BYTES {
            return;
        }
        // The walks fold ASCII as they go; the automata take the folded value.
        let Scratch { seen, folded } = scratch;
        let ascii = value.is_ascii();
        let bytes = if ascii && self.inner.is_none() {
            value.as_bytes()
        } else {
            folded.clear();
            if ascii {
                folded.push_str(value);
                folded.make_ascii_lowercase();
            } else {
                folded.extend(value.chars().flat_map(char::to_lowercase));
            }
            folded.as_bytes()
        };
        if text {
            self.heads.walk(bytes.iter().copied(), false, hit);
            self.tails.walk(bytes.iter().rev().copied(), false, hit);
        } else {
            for at in 0..bytes.len() {
                self.heads.walk(bytes[at..].iter().copied(), true, hit);
                self.tails
                    .walk(bytes[..=at].iter().rev().copied(), true, hit);
            }
        }
        match &self.inner {
            None => {}
            Some(Inner::Each(ac, rules)) => {
                // A literal found once has marked its rules: later finds are skipped.
                seen.clear();
                seen.resize(rules.len().div_ceil(64), 0);
                for m in ac.find_overlapping_iter(bytes) {
                    let p = m.pattern().as_usize();
                    let (word, bit) = (p / 64, 1u64 << (p % 64));
                    if seen[word] & bit == 0 {
                        seen[word] |= bit;
                        for &i in &rules[p] {
                            hit[i as usize] = true;
                        }
                    }
                }
            }
            Some(Inner::Any(ac, rules)) => {
                if rules.iter().any(|&i| !hit[i as usize]) && ac.is_match(bytes) {
                    for &i in rules {
                        hit[i as usize] = true;
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct LiteralsBuilder {
    heads: TrieBuilder,
    tails: TrieBuilder,
    inner: BTreeMap<String, Vec<u32>>,
}

impl LiteralsBuilder {
    fn add(&mut self, literal: &str, anchor: Anchor, rule: u32) {
        let bytes = literal.bytes();
        match anchor {
            Anchor::Start => self.heads.add(bytes, rule, false),
            Anchor::Whole => self.heads.add(bytes, rule, true),
            Anchor::End => self.tails.add(bytes.rev(), rule, false),
            Anchor::Anywhere => {
                let rules = self.inner.entry(literal.to_string()).or_default();
                if rules.last() != Some(&rule) {
                    rules.push(rule);
                }
            }
        }
    }

    /// `None` when the automaton cannot be built.
    fn build(self) -> Option<Literals> {
        let mut rules: Vec<u32> = self.inner.values().flatten().copied().collect();
        rules.sort_unstable();
        rules.dedup();
        // Literals and values are folded: the automata compare bytes. Which kind of automaton
        // is the crate's choice: a DFA for a few literals, a contiguous NFA for the thousands
        // of a command line's (a DFA of those would take tens of MiB).
        let inner = if self.inner.is_empty() {
            None
        } else if rules.len() <= ANY_RULES {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(self.inner.keys())
                .ok()?;
            Some(Inner::Any(ac, rules))
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(self.inner.keys())
                .ok()?;
            Some(Inner::Each(ac, self.inner.into_values().collect()))
        };
        Some(Literals {
            heads: self.heads.build(),
            tails: self.tails.build(),
            inner,
        })
    }
}

/// A byte trie of case-folded literals, each node with the rules of the literals ending there.
struct Trie {
    nodes: Vec<TrieNode>,
    /// Every node's children, by byte, sorted: `(byte, node)`.
    edges: Vec<(u8, u32)>,
    /// Every node's rules.
    rules: Vec<u32>,
}

/// Ranges into the trie's `edges` and `rules`.
struct TrieNode {
    edges: (u32, u32),
    /// Rules of a literal ending here that the value may go on after.
    prefix: (u32, u32),
    /// Rules of a literal ending here that must be the whole value.
    whole: (u32, u32),
}

impl Trie {
    /// Walks `bytes` (ASCII folded on the way) from the root, marking the rules of every
    /// literal they start with, and of the whole-value literal they are. With `anywhere`, the
    /// whole-value literals they start with are marked too.
    fn walk(&self, bytes: impl Iterator<Item = u8>, anywhere: bool, hit: &mut [bool]) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut mark = |range: (u32, u32)| {
            for &i in &self.rules[range.0 as usize..range.1 as usize] {
                hit[i as usize] = true;
            }
        };
        for b in bytes {
            let edges = &self.edges[node.edges.0 as usize..node.edges.1 as usize];
            let Ok(at) = edges.binary_search_by_key(&b.to_ascii_lowercase(), |e| e.0) else {
                return;
            };
            node = &self.nodes[edges[at].1 as usize];
            mark(node.prefix);
            if anywhere {
                mark(node.whole);
            }
        }
        mark(node.whole);
    }
}

/// A trie being built, node 0 the root.
#[derive(Default)]
struct TrieBuilder {
    nodes: Vec<NodeBuilder>,
}

/// A node being built: its children by byte, its prefix rules and its whole-value rules.
type NodeBuilder = (BTreeMap<u8, u32>, Vec<u32>, Vec<u32>);

impl TrieBuilder {
    fn add(&mut self, bytes: impl Iterator<Item = u8>, rule: u32, whole: bool) {
        if self.nodes.is_empty() {
            self.nodes.push(Default::default());
        }
        let mut node = 0;
        for b in bytes {
            let next = self.nodes.len() as u32;
            node = *self.nodes[node].0.entry(b).or_insert(next) as usize;
            if node == self.nodes.len() {
                self.nodes.push(Default::default());
            }
        }
        let (_, prefix, exact) = &mut self.nodes[node];
        let rules = if whole { exact } else { prefix };
        if rules.last() != Some(&rule) {
            rules.push(rule);
        }
    }

    fn build(self) -> Trie {
        let mut trie = Trie {
            nodes: Vec::with_capacity(self.nodes.len()),
            edges: Vec::new(),
            rules: Vec::new(),
        };
        fn append<T>(to: &mut Vec<T>, items: impl IntoIterator<Item = T>) -> (u32, u32) {
            let start = to.len() as u32;
            to.extend(items);
            (start, to.len() as u32)
        }
        for (children, prefix, whole) in self.nodes {
            trie.nodes.push(TrieNode {
                edges: append(&mut trie.edges, children),
                prefix: append(&mut trie.rules, prefix),
                whole: append(&mut trie.rules, whole),
            });
        }
        trie
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
        (f.len() >= MIN_NEEDLE_BYTES)
            .then(|| vec![(field.map(str::to_string), Shows::Text(f, anchor))])
    };
    let within = |m: &CompiledMatcher| matcher_witness(field, m);
    match m {
        CompiledMatcher::Exact { value, .. } => literal(value, Anchor::Whole),
        CompiledMatcher::Contains { value, .. } => literal(value, Anchor::Anywhere),
        CompiledMatcher::StartsWith { value, .. } => literal(value, Anchor::Start),
        CompiledMatcher::EndsWith { value, .. } => literal(value, Anchor::End),
        CompiledMatcher::NumericEq(n) => number_witness(field, *n),
        CompiledMatcher::Regex(re) => regex_witness(field, re.as_str()),
        CompiledMatcher::RegexSetMatch { set, mode } => {
            let each = set.patterns().iter().map(|p| regex_witness(field, p));
            match mode {
                rsigma_eval::matcher::GroupMode::Any => union(each),
                rsigma_eval::matcher::GroupMode::All => best(each),
            }
        }
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

/// The literals a match of `pattern` (searched anywhere in the value, as rsigma does) starts
/// with: regex-syntax's prefix extraction, sound for any regex it parses — every match begins
/// with one of them, or the set is infinite, or holds one too short to index (`None`).
fn regex_witness(field: Option<&str>, pattern: &str) -> Option<Vec<Needle>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::parse(pattern).ok()?;
    let prefixes = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let mut needles: Vec<Needle> = Vec::new();
    for literal in prefixes.literals()? {
        let folded = fold(std::str::from_utf8(literal.as_bytes()).ok()?);
        if folded.len() < MIN_NEEDLE_BYTES {
            return None;
        }
        let needle = (
            field.map(str::to_string),
            Shows::Text(folded, Anchor::Anywhere),
        );
        // `(?i)` spells a literal in every case: one folded needle stands for them all.
        if !needles.contains(&needle) {
            needles.push(needle);
        }
    }
    (!needles.is_empty()).then_some(needles)
}

/// `field` equal to `n` (within `f64::EPSILON`, as rsigma compares): indexed when `n` is a
/// non-zero integer below `EXACT_INTEGER`, which only itself is that close to. Not for
/// keywords: a number in any value is nearly every record.
fn number_witness(field: Option<&str>, n: f64) -> Option<Vec<Needle>> {
    let field = field?;
    (n.fract() == 0.0 && n.abs() >= 1.0 && n.abs() < EXACT_INTEGER)
        .then(|| vec![(Some(field.to_string()), Shows::Number(n as i64))])
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
        let shortest = w.iter().map(|(_, shows)| rarity(shows)).min().unwrap_or(0);
        (shortest.min(8), std::cmp::Reverse(w.len()))
    })
}

/// How rarely a needle shows, as the length of a literal about as rare: an event id or a
/// logon type is shared by a whole kind of record, like a short literal.
fn rarity(shows: &Shows) -> usize {
    match shows {
        Shows::Text(literal, _) => literal.chars().count(),
        Shows::Number(_) => 3,
    }
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
            let mut literals: Vec<String> = w
                .into_iter()
                .map(|(_, shows)| match shows {
                    Shows::Text(literal, _) => literal,
                    Shows::Number(n) => n.to_string(),
                })
                .collect();
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
        // Integers a field equals are witnesses (an event id: as rare as a short literal);
        // zero and fractions are not (rsigma's `f64::EPSILON` lets near values equal them).
        let w = witness("  a:\n    EventID:\n      - 4728\n      - 632\n  condition: a");
        assert_eq!(w, Some(vec!["4728".into(), "632".into()]));
        let w =
            witness("  a:\n    EventID: 4720\n    TargetUserName|endswith: '$'\n  condition: a");
        assert_eq!(w, Some(vec!["4720".into()]));
        let w = witness(
            "  a:\n    EventID: 4720\n    TargetUserName|endswith: 'admin'\n  condition: a",
        );
        assert_eq!(w, Some(vec!["admin".into()]));
        assert_eq!(witness("  a:\n    Status: 0\n  condition: a"), None);
        assert_eq!(witness("  a:\n    Ratio: 1.5\n  condition: a"), None);
        assert_eq!(
            witness("  keywords:\n    - 4624\n  condition: keywords"),
            None
        );
        // A regex: the literals its matches start with, folded; none when one is too short or
        // they are endless.
        let re = |pattern: &str| {
            witness(&format!(
                "  a:\n    CommandLine|re: '{pattern}'\n  condition: a"
            ))
        };
        assert_eq!(re("(?i)WhoAmI.*>"), Some(vec!["whoami".into()]));
        assert_eq!(re("(ab|cd)e+"), Some(vec!["abe".into(), "cde".into()]));
        assert_eq!(re("x.*y"), None);
        assert_eq!(re("\\w+`"), None);
        assert_eq!(re("(?:)"), None);
        // One non-ASCII character is rare enough to index.
        let w = witness("  a:\n    CommandLine|contains: '\u{202e}'\n  condition: a");
        assert_eq!(w, Some(vec!["\u{202e}".into()]));
        assert_eq!(
            witness("  a:\n    CommandLine|contains: 'y'\n  condition: a"),
            None
        );
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
        let fields: Vec<&str> = prefilter.fields.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["CommandLine"]);
        assert!(prefilter.keywords.is_none());
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
        assert!(prefilter.keywords.is_some());
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

    #[test]
    fn a_number_counts_however_the_record_writes_it() {
        use serde_json::json;
        let rule = |title: &str, detection: &str| {
            format!(
                "title: {title}\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n{detection}\nlevel: low\n"
            )
        };
        let rules = [
            rule("logon", "  sel:\n    LogonType: 3\n  condition: sel"),
            rule(
                "groups",
                "  sel:\n    GroupId:\n      - 4728\n      - 632\n  condition: sel",
            ),
        ]
        .join("---\n");
        let (set, key) = process_creation_route(&rules);
        let route = &set.routes[&key];
        assert!(route.prefilter.always.is_empty());
        let candidates = |data: serde_json::Value| {
            let event = sysmon_process(data);
            let view = SigmaEvent::new(&event);
            let found: Vec<&str> = route
                .prefilter
                .candidates(&view)
                .into_iter()
                .map(|i| route.rules[i as usize].title.as_str())
                .collect();
            // What the evaluator matches is always among them.
            for (i, rule) in route.rules.iter().enumerate() {
                if rsigma_eval::evaluate_rule(rule, &view).is_some() {
                    assert!(found.contains(&rule.title.as_str()), "{i} missed");
                }
            }
            found
        };
        assert_eq!(candidates(json!({"LogonType": 3})), ["logon"]);
        assert_eq!(candidates(json!({"LogonType": "3"})), ["logon"]);
        assert_eq!(candidates(json!({"LogonType": 3.0})), ["logon"]);
        assert_eq!(candidates(json!({"LogonType": " 3"})), Vec::<&str>::new());
        assert_eq!(candidates(json!({"LogonType": "3.0"})), ["logon"]);
        assert_eq!(
            candidates(json!({"LogonType": 30, "GroupId": [1, 632]})),
            ["groups"]
        );
        assert_eq!(
            candidates(json!({"LogonType": 3.5, "GroupId": "0x278"})),
            Vec::<&str>::new()
        );
        assert_eq!(
            candidates(json!({"CommandLine": "3", "Image": "632"})),
            Vec::<&str>::new()
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
