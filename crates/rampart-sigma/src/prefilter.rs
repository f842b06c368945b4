//! The literal index: which rules a record can possibly match.
//!
//! For each compiled rule we derive a *witness* from its condition: up to three clauses, all
//! of which every match satisfies, each a set of *needles* of which the match shows one — a
//! literal in the field it was written for, at its place in the value (anywhere for
//! `contains`, at the start for `startswith`, at the end for `endswith`, the whole value for
//! an exact match; for a regex, the literals its matches start with or, past a part that can
//! be anything, go on with: `werfaultsecure.exe` of `\.exe\s+.*werfaultsecure\.exe`), or a
//! number a field equals (`EventID: 4624`). `Image|endswith: '\cmd.exe'` and
//! `CommandLine|contains: ' del '` are two clauses; a list of values is one clause of several
//! needles.
//!
//! Each field a witness names has its own literals, by place: those that must start the value
//! or be all of it in a trie walked from the value's first byte, those that must end it in one
//! walked from its last (a few bytes, however many literals); only `contains` literals need an
//! Aho-Corasick scan of the whole value, with that field's literals alone. Keywords are looked
//! for in every text value. A rule is a candidate once a needle of each of its clauses is
//! found — `\cmd.exe` at the end of `Image`, not in the middle of `CommandLine`. The few rules
//! without a witness (negations, ranges, regexes with no literal of two bytes or one rare one)
//! are evaluated on every record. A record's other fields (GUIDs, times, most hashes) are never
//! read.
//!
//! Ours rather than rsigma's `Engine` index because that one builds a case-insensitive DFA per
//! field: ~135 MiB for SigmaHQ's Windows rules, most of triage's memory. Tries and automata of
//! each field's own literals take a few MiB and look a record up in microseconds.

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, MatchKind};
use rsigma_eval::event::Event;
use rsigma_eval::{CompiledDetection, CompiledMatcher, CompiledRule};
use rsigma_parser::{ConditionExpr, Quantifier};

use crate::event::SigmaEvent;

/// Literals shorter than this are not worth indexing: nearly every record holds them (an
/// ASCII character); one non-ASCII character (an emoji, a right-to-left override) is rare.
const MIN_NEEDLE_BYTES: usize = 2;

/// ASCII characters taken as rare enough alone to index (a judgement, not a measured
/// frequency): the escapes obfuscated command lines use (PowerShell's backtick, cmd's caret),
/// and cmd's input redirection. A rule may have no longer literal (`\w+`(?:\w+|-|.)`` of PowerShell token
/// obfuscation, `CommandLine|contains: '<'`): without these it was evaluated on every process
/// creation, or on every shell's.
const RARE_BYTES: &[u8] = b"`^<";

/// Whether a folded literal is worth indexing (see [`MIN_NEEDLE_BYTES`], [`RARE_BYTES`]).
fn indexable(folded: &str) -> bool {
    folded.len() >= MIN_NEEDLE_BYTES
        || (folded.len() == 1 && RARE_BYTES.contains(&folded.as_bytes()[0]))
}

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
    /// Per field, the clauses whose needles include a number, by the number.
    numbers: Vec<(String, HashMap<i64, Vec<Target>>)>,
    /// Per rule, the clauses of its witness that a record must satisfy, one bit each: none
    /// for a rule without a witness, which is evaluated on every record.
    need: Vec<u8>,
    /// The rules without a witness.
    always: Vec<u32>,
}

/// A clause of a rule's witness, `rule << 3 | clause`: what finding a needle marks.
type Target = u32;

/// At most this many clauses of a witness are indexed, the most selective (up to 8: a byte
/// of bits per rule). Each costs literals to look for in every record; on the attack samples 3
/// did best (327.6 M instructions per pass of the sigma bench; 2: 336.7 M, 8: 339.2 M).
const MAX_CLAUSES: usize = 3;

fn target(rule: usize, clause: usize) -> Target {
    (rule << 3 | clause) as Target
}

/// The clauses a record satisfies, one bit each per rule, and the rules with any: a record
/// marks a few dozen of a route's thousand rules, so candidates are read from those rather
/// than from every rule's bits (that scan was a seventh of the index's work).
#[derive(Default)]
struct Hits {
    bits: Vec<u8>,
    touched: Vec<u32>,
}

impl Hits {
    /// Ready for a route of `rules` rules, none of them marked.
    fn prepare(&mut self, rules: usize) {
        // Left marked only if a search panicked: every marked rule is touched.
        self.clear();
        if self.bits.len() < rules {
            self.bits.resize(rules, 0);
        }
    }

    /// Unmarks every rule.
    fn clear(&mut self) {
        for i in self.touched.drain(..) {
            self.bits[i as usize] = 0;
        }
    }

    /// Marks a clause as satisfied.
    fn mark(&mut self, t: Target) {
        let rule = (t >> 3) as usize;
        if self.bits[rule] == 0 {
            self.touched.push(rule as u32);
        }
        self.bits[rule] |= 1 << (t & 7);
    }

    fn marked(&self, t: Target) -> bool {
        self.bits[(t >> 3) as usize] & (1 << (t & 7)) != 0
    }
}

/// Adds `t` to a list of targets once (the needles of a clause are added one after another).
fn push_once(targets: &mut Vec<Target>, t: Target) {
    if targets.last() != Some(&t) {
        targets.push(t);
    }
}

impl Prefilter {
    pub fn build(rules: &[CompiledRule]) -> Prefilter {
        let mut fields: BTreeMap<String, LiteralsBuilder> = BTreeMap::new();
        let mut keywords: Option<LiteralsBuilder> = None;
        let mut numbers: BTreeMap<String, HashMap<i64, Vec<Target>>> = BTreeMap::new();
        let mut need = vec![0u8; rules.len()];
        'rules: for (rule, compiled) in rules.iter().enumerate() {
            let Some(clauses) = rule_witness(compiled) else {
                continue;
            };
            for (clause, needles) in clauses.iter().enumerate() {
                let t = target(rule, clause);
                for (field, shows) in needles {
                    match (field, shows) {
                        (Some(field), Shows::Text(literal, anchor)) => fields
                            .entry(field.clone())
                            .or_default()
                            .add(literal, *anchor, t),
                        (None, Shows::Text(literal, anchor)) => {
                            keywords.get_or_insert_default().add(literal, *anchor, t)
                        }
                        (Some(field), Shows::Number(n)) => push_once(
                            numbers
                                .entry(field.clone())
                                .or_default()
                                .entry(*n)
                                .or_default(),
                            t,
                        ),
                        // `number_witness` gives numbers of named fields only; were it not
                        // to, the rule is evaluated on every record.
                        (None, Shows::Number(_)) => continue 'rules,
                    }
                }
            }
            need[rule] = ((1u16 << clauses.len()) - 1) as u8;
        }
        let fields: Option<Vec<(String, Literals)>> = fields
            .into_iter()
            .map(|(field, literals)| Some((field, literals.build()?)))
            .collect();
        let keywords = keywords.map(LiteralsBuilder::build);
        let (fields, keywords, numbers) = match (fields, keywords) {
            (Some(fields), None) => (fields, None, numbers.into_iter().collect()),
            (Some(fields), Some(Some(keywords))) => {
                (fields, Some(keywords), numbers.into_iter().collect())
            }
            // An automaton could not be built: every rule is a candidate (slower, never wrong).
            _ => {
                need.fill(0);
                (Vec::new(), None, Vec::new())
            }
        };
        let always = (0..need.len() as u32)
            .filter(|&i| need[i as usize] == 0)
            .collect();
        Prefilter {
            fields,
            keywords,
            numbers,
            need,
            always,
        }
    }

    /// The rules a record can match, in rule order: those whose every indexed clause has a
    /// needle the record shows.
    pub fn candidates(&self, event: &SigmaEvent<'_>) -> Vec<u32> {
        REUSED.with_borrow_mut(|Reused { hits, scratch }| {
            hits.prepare(self.need.len());
            self.mark(event, hits, scratch);
            let mut out: Vec<u32> = hits
                .touched
                .iter()
                .copied()
                .filter(|&i| {
                    let need = self.need[i as usize];
                    need != 0 && hits.bits[i as usize] & need == need
                })
                .chain(self.always.iter().copied())
                .collect();
            hits.clear();
            scratch.trim();
            out.sort_unstable();
            out
        })
    }

    /// Marks the clauses of the needles `event` shows.
    fn mark(&self, event: &SigmaEvent<'_>, hit: &mut Hits, scratch: &mut Scratch) {
        for (field, by_number) in &self.numbers {
            event.visit_field_numbers(field, &mut |n| {
                // A number a witness holds is an integer below `EXACT_INTEGER`: one equal to
                // it is too.
                if n.fract() == 0.0 && n.abs() < EXACT_INTEGER {
                    for &t in by_number.get(&(n as i64)).into_iter().flatten() {
                        hit.mark(t);
                    }
                }
            });
        }
        for (field, literals) in &self.fields {
            event.visit_field_text(field, &mut |value, text| {
                literals.find(value, text, hit, scratch)
            });
        }
        if let Some(keywords) = &self.keywords {
            keywords.find_in_values(event, hit, scratch);
        }
    }
}

thread_local! {
    /// What [`Prefilter::candidates`] reuses from record to record on a thread, rather than
    /// allocate (and grow) for each of a record's routes: that took 6 % of the Sigma
    /// benchmark's instructions (glibc's allocator).
    static REUSED: std::cell::RefCell<Reused> = std::cell::RefCell::default();
}

#[derive(Default)]
struct Reused {
    hits: Hits,
    scratch: Scratch,
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
    /// No `contains` literal holds a NUL: values can be searched joined by NULs.
    joinable: bool,
    /// Shorter values hold none of the literals: 1 when a literal is one (rare) byte, else
    /// [`MIN_NEEDLE_BYTES`] (a shorter value is ASCII, and folds to as many bytes).
    shortest_value: usize,
}

/// `contains` literals, searched for in the folded value.
enum Inner {
    /// Each literal's clauses: an overlapping search finds every literal the value holds.
    Each(AhoCorasick, Vec<Vec<Target>>),
    /// The literals of a few clauses (the keywords of one or two rules, say): a leftmost
    /// search that stops at the first literal found, which can use the crate's SIMD searcher,
    /// and marks all of them.
    Any(AhoCorasick, Vec<Target>),
}

/// At most this many clauses share an [`Inner::Any`].
const ANY_CLAUSES: usize = 4;

/// What the search of one record reuses from value to value.
#[derive(Default)]
struct Scratch {
    /// Which literals of an [`Inner::Each`] have been found in the value.
    seen: Vec<u64>,
    folded: String,
}

impl Scratch {
    /// A record's text can be large (a script block): a thread does not keep that much.
    fn trim(&mut self) {
        const KEPT: usize = 64 * 1024;
        if self.folded.capacity() > KEPT {
            self.folded = String::new();
        }
    }
}

impl Literals {
    /// Marks the rules of the literals `value` shows where they must stand. A number or
    /// boolean (`text` false) is rendered by the evaluator in its own way: a literal anywhere
    /// in it counts, whatever its place.
    fn find(&self, value: &str, text: bool, hit: &mut Hits, scratch: &mut Scratch) {
        if value.len() < self.shortest_value {
            return;
        }
        // The walks fold ASCII as they go; the automata take the folded value.
        let Scratch { seen, folded } = scratch;
        let bytes = if value.is_ascii() && self.inner.is_none() {
            value.as_bytes()
        } else {
            folded.clear();
            fold_into(value, folded);
            folded.as_bytes()
        };
        self.walk(bytes, text, hit);
        self.search(bytes, hit, seen);
    }

    /// [`Literals::find`] in every text value of `event` (numbers never match keywords), with
    /// one search of the automaton over all of them: each value folded and followed by a NUL,
    /// which no literal holds (checked at build), so no literal is found across two values.
    /// One search per record rather than per value: the keyword scan went from 7.4 % to 5.3 %
    /// of the server's instructions.
    fn find_in_values(&self, event: &SigmaEvent<'_>, hit: &mut Hits, scratch: &mut Scratch) {
        if !self.joinable {
            event.visit_string_values(&mut |value| self.find(value, true, hit, scratch));
            return;
        }
        let Scratch { seen, folded } = scratch;
        folded.clear();
        event.visit_string_values(&mut |value| {
            if value.len() < self.shortest_value {
                return;
            }
            let start = folded.len();
            fold_into(value, folded);
            self.walk(&folded.as_bytes()[start..], true, hit);
            folded.push('\0');
        });
        self.search(folded.as_bytes(), hit, seen);
    }

    /// Marks the clauses of the anchored literals `bytes` (a folded value) shows.
    fn walk(&self, bytes: &[u8], text: bool, hit: &mut Hits) {
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
    }

    /// Marks the clauses of the `contains` literals found in `bytes` (folded).
    fn search(&self, bytes: &[u8], hit: &mut Hits, seen: &mut Vec<u64>) {
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
                        for &t in &rules[p] {
                            hit.mark(t);
                        }
                    }
                }
            }
            Some(Inner::Any(ac, rules))
                if rules.iter().any(|&t| !hit.marked(t)) && ac.is_match(bytes) =>
            {
                for &t in rules {
                    hit.mark(t);
                }
            }
            Some(Inner::Any(..)) => {}
        }
    }
}

/// Appends `value` case-folded, as the literals are.
fn fold_into(value: &str, out: &mut String) {
    if value.is_ascii() {
        let start = out.len();
        out.push_str(value);
        out[start..].make_ascii_lowercase();
    } else {
        out.extend(value.chars().flat_map(char::to_lowercase));
    }
}

#[derive(Default)]
struct LiteralsBuilder {
    heads: TrieBuilder,
    tails: TrieBuilder,
    inner: BTreeMap<String, Vec<Target>>,
    /// A literal is one byte long.
    single: bool,
}

impl LiteralsBuilder {
    fn add(&mut self, literal: &str, anchor: Anchor, t: Target) {
        self.single |= literal.len() == 1;
        let bytes = literal.bytes();
        match anchor {
            Anchor::Start => self.heads.add(bytes, t, false),
            Anchor::Whole => self.heads.add(bytes, t, true),
            Anchor::End => self.tails.add(bytes.rev(), t, false),
            Anchor::Anywhere => push_once(self.inner.entry(literal.to_string()).or_default(), t),
        }
    }

    /// `None` when the automaton cannot be built.
    fn build(self) -> Option<Literals> {
        let joinable = !self.inner.keys().any(|k| k.contains('\0'));
        let mut targets: Vec<Target> = self.inner.values().flatten().copied().collect();
        targets.sort_unstable();
        targets.dedup();
        // Literals and values are folded: the automata compare bytes. Which kind of automaton
        // is the crate's choice: a DFA for a few literals, a contiguous NFA for the thousands
        // of a command line's (a DFA of those would take tens of MiB: +89 MiB of the server's
        // memory for an eighth less of the search's instructions, measured with the prefilter). The crate's prefilter for
        // many literals looks for their rarest bytes, which folded command lines and paths
        // are full of: it was restarted at nearly every byte, and the search without it takes
        // half the instructions (172 M → 86 M on the server's benchmark).
        let inner = if self.inner.is_empty() {
            None
        } else if targets.len() <= ANY_CLAUSES {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(self.inner.keys())
                .ok()?;
            Some(Inner::Any(ac, targets))
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .prefilter(false)
                .build(self.inner.keys())
                .ok()?;
            Some(Inner::Each(ac, self.inner.into_values().collect()))
        };
        Some(Literals {
            heads: self.heads.build(),
            tails: self.tails.build(),
            inner,
            joinable,
            shortest_value: if self.single { 1 } else { MIN_NEEDLE_BYTES },
        })
    }
}

/// A byte trie of case-folded literals, each node with the clauses of the literals ending
/// there.
struct Trie {
    nodes: Vec<TrieNode>,
    /// Every node's children, by byte, sorted: `(byte, node)`.
    edges: Vec<(u8, u32)>,
    /// Every node's clauses.
    targets: Vec<Target>,
}

/// Ranges into the trie's `edges` and `targets`.
struct TrieNode {
    edges: (u32, u32),
    /// Clauses of a literal ending here that the value may go on after.
    prefix: (u32, u32),
    /// Clauses of a literal ending here that must be the whole value.
    whole: (u32, u32),
}

impl Trie {
    /// Walks `bytes` (ASCII folded on the way) from the root, marking the clauses of every
    /// literal they start with, and of the whole-value literal they are. With `anywhere`, the
    /// whole-value literals they start with are marked too.
    fn walk(&self, bytes: impl Iterator<Item = u8>, anywhere: bool, hit: &mut Hits) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        let mut mark_all = |range: (u32, u32)| {
            for &t in &self.targets[range.0 as usize..range.1 as usize] {
                hit.mark(t);
            }
        };
        for b in bytes {
            let edges = &self.edges[node.edges.0 as usize..node.edges.1 as usize];
            let Ok(at) = edges.binary_search_by_key(&b.to_ascii_lowercase(), |e| e.0) else {
                return;
            };
            node = &self.nodes[edges[at].1 as usize];
            mark_all(node.prefix);
            if anywhere {
                mark_all(node.whole);
            }
        }
        mark_all(node.whole);
    }
}

/// A trie being built, node 0 the root.
#[derive(Default)]
struct TrieBuilder {
    nodes: Vec<NodeBuilder>,
}

/// A node being built: its children by byte, its prefix clauses and its whole-value clauses.
type NodeBuilder = (BTreeMap<u8, u32>, Vec<u32>, Vec<u32>);

impl TrieBuilder {
    fn add(&mut self, bytes: impl Iterator<Item = u8>, t: Target, whole: bool) {
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
        push_once(if whole { exact } else { prefix }, t);
    }

    fn build(self) -> Trie {
        let mut trie = Trie {
            nodes: Vec::with_capacity(self.nodes.len()),
            edges: Vec::new(),
            targets: Vec::new(),
        };
        fn append<T>(to: &mut Vec<T>, items: impl IntoIterator<Item = T>) -> (u32, u32) {
            let start = to.len() as u32;
            to.extend(items);
            (start, to.len() as u32)
        }
        for (children, prefix, whole) in self.nodes {
            trie.nodes.push(TrieNode {
                edges: append(&mut trie.edges, children),
                prefix: append(&mut trie.targets, prefix),
                whole: append(&mut trie.targets, whole),
            });
        }
        trie
    }
}

/// Case folding that keeps substrings substrings: per character, no context rules.
fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Clauses every match of a rule satisfies, the most selective first: each clause a set of
/// needles of which a match shows one.
pub type Witness = Vec<Vec<Needle>>;

/// The witness of a rule, or `None` when no needle is certain to show in a match.
pub fn rule_witness(rule: &CompiledRule) -> Option<Witness> {
    // Several conditions are alternatives.
    any_of(
        rule.conditions
            .iter()
            .map(|c| condition_witness(c, &rule.detections)),
    )
}

fn condition_witness(
    expr: &ConditionExpr,
    named: &HashMap<String, CompiledDetection>,
) -> Option<Witness> {
    match expr {
        ConditionExpr::Identifier(name) => detection_witness(named.get(name)?),
        ConditionExpr::And(list) => all_of(list.iter().map(|e| condition_witness(e, named))),
        ConditionExpr::Or(list) => any_of(list.iter().map(|e| condition_witness(e, named))),
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
            let each = matching.iter().map(|d| detection_witness(d));
            match quantifier {
                // `n of` as many as there are: all of them.
                Quantifier::All => all_of(each),
                Quantifier::Count(n) if *n as usize >= matching.len() && *n > 0 => all_of(each),
                // `n of` fewer: some of them, no telling which.
                Quantifier::Any | Quantifier::Count(1..) => any_of(each),
                Quantifier::Count(0) => None,
            }
        }
    }
}

fn detection_witness(d: &CompiledDetection) -> Option<Witness> {
    match d {
        CompiledDetection::AllOf(items) => all_of(
            items
                .iter()
                .map(|i| matcher_witness(i.field.as_deref(), &i.matcher)),
        ),
        CompiledDetection::AnyOf(list) => any_of(list.iter().map(detection_witness)),
        CompiledDetection::Keywords(m) => matcher_witness(None, m),
        CompiledDetection::And(list) => all_of(list.iter().map(detection_witness)),
        CompiledDetection::ArrayMatch { .. } | CompiledDetection::Conditional { .. } => None,
    }
}

fn matcher_witness(field: Option<&str>, m: &CompiledMatcher) -> Option<Witness> {
    let literal = |v: &str, anchor: Anchor| {
        let f = fold(v);
        indexable(&f).then(|| vec![vec![(field.map(str::to_string), Shows::Text(f, anchor))]])
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
                rsigma_eval::matcher::GroupMode::Any => any_of(each),
                rsigma_eval::matcher::GroupMode::All => all_of(each),
            }
        }
        CompiledMatcher::AhoCorasickSet { needles, .. } => {
            any_of(needles.iter().map(|n| literal(n, Anchor::Anywhere)))
        }
        CompiledMatcher::AnyOf(list) => any_of(list.iter().map(within)),
        CompiledMatcher::AllOf(list) => all_of(list.iter().map(within)),
        CompiledMatcher::CaseInsensitiveGroup { children, mode } => match mode {
            rsigma_eval::matcher::GroupMode::Any => any_of(children.iter().map(within)),
            rsigma_eval::matcher::GroupMode::All => all_of(children.iter().map(within)),
        },
        _ => None,
    }
}

/// Literals every match of `pattern` (searched anywhere in the value, as rsigma does) holds:
/// regex-syntax's prefix extraction, sound for any regex it parses — every match of a part
/// begins with one of the part's literals, or the set is infinite, or holds one too short to
/// index. The parts are the regex itself and, where it is a sequence, each of its tails: a
/// match of `.*\x{fe0f}\x{20e3}` or `\.exe\s+.*werfaultsecure\.exe` holds its last
/// literal, which its start (none, or `.exe`) does not say.
fn regex_witness(field: Option<&str>, pattern: &str) -> Option<Witness> {
    hir_witness(field, &folded_hir(&regex_syntax::parse(pattern).ok()?))
}

/// `hir` with each class of one character's cases (`(?i)` makes `[Ww]` of `w`) the literal of
/// its folded character: a match, folded, then holds the folded literals. The extractor gives
/// up on the cases of long literals (2^n spellings): `(?i)ipconfig` gave `ipconfi`.
fn folded_hir(hir: &regex_syntax::hir::Hir) -> regex_syntax::hir::Hir {
    use regex_syntax::hir::{Capture, Class, Hir, HirKind, Repetition};
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => {
            let mut chars = class.iter().flat_map(|r| r.start()..=r.end());
            let folded = chars.next().map(|c| fold(c.encode_utf8(&mut [0; 4])));
            match folded {
                Some(f)
                    if class.iter().map(|r| r.len()).sum::<usize>() <= 4
                        && f.chars().count() == 1
                        && chars.all(|c| fold(c.encode_utf8(&mut [0; 4])) == f) =>
                {
                    Hir::literal(f.into_bytes())
                }
                _ => hir.clone(),
            }
        }
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            sub: Box::new(folded_hir(&r.sub)),
            ..r.clone()
        }),
        HirKind::Capture(c) => Hir::capture(Capture {
            sub: Box::new(folded_hir(&c.sub)),
            ..c.clone()
        }),
        HirKind::Concat(parts) => Hir::concat(parts.iter().map(folded_hir).collect()),
        HirKind::Alternation(parts) => Hir::alternation(parts.iter().map(folded_hir).collect()),
        _ => hir.clone(),
    }
}

/// At most this many tails of a sequence are looked at (each is extracted on its own).
const MAX_TAILS: usize = 64;

fn hir_witness(field: Option<&str>, hir: &regex_syntax::hir::Hir) -> Option<Witness> {
    use regex_syntax::hir::{Hir, HirKind};
    match hir.kind() {
        HirKind::Capture(capture) => hir_witness(field, &capture.sub),
        HirKind::Alternation(branches) => any_of(branches.iter().map(|b| hir_witness(field, b))),
        // Every match holds a match of each tail: each tail's literals are a clause.
        HirKind::Concat(parts) => all_of(
            (0..parts.len().min(MAX_TAILS))
                .map(|at| prefix_witness(field, &Hir::concat(parts[at..].to_vec()))),
        ),
        _ => prefix_witness(field, hir),
    }
}

/// The literals every match of `hir` starts with, as one clause.
fn prefix_witness(field: Option<&str>, hir: &regex_syntax::hir::Hir) -> Option<Witness> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let prefixes = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
    let mut needles: Vec<Needle> = Vec::new();
    for literal in prefixes.literals()? {
        let folded = fold(std::str::from_utf8(literal.as_bytes()).ok()?);
        if !indexable(&folded) {
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
    (!needles.is_empty()).then(|| vec![needles])
}

/// `field` equal to `n` (within `f64::EPSILON`, as rsigma compares): indexed when `n` is a
/// non-zero integer below `EXACT_INTEGER`, which only itself is that close to. Not for
/// keywords: a number in any value is nearly every record.
fn number_witness(field: Option<&str>, n: f64) -> Option<Witness> {
    let field = field?;
    (n.fract() == 0.0 && n.abs() >= 1.0 && n.abs() < EXACT_INTEGER)
        .then(|| vec![vec![(Some(field.to_string()), Shows::Number(n as i64))]])
}

/// The witness of an AND: the clauses of every conjunct that has some (one without says
/// nothing), the most selective `MAX_CLAUSES`.
fn all_of(parts: impl Iterator<Item = Option<Witness>>) -> Option<Witness> {
    ordered(parts.flatten().flatten().collect())
}

/// The witness of an OR: every alternative must have one. `(A1 and A2) or B` holds
/// `(A1 or B) and (A2 or B)`: a clause for each choice of one clause per alternative, while
/// that makes at most `MAX_CLAUSES`; past that, each alternative's most selective clause.
fn any_of(parts: impl Iterator<Item = Option<Witness>>) -> Option<Witness> {
    let mut parts: Vec<Witness> = parts.collect::<Option<_>>()?;
    // A clause of the first alternative that a clause of every other one implies holds
    // whichever alternative matched: `find` of `ipconfig*|*find`, `net*|*find`, ... (kept
    // whole, where the choices below may keep only `ipconfig` of one and `net` of another).
    let shared: Witness = match parts.split_first() {
        Some((first, others)) if !others.is_empty() => first
            .iter()
            .filter(|clause| {
                others
                    .iter()
                    .all(|other| other.iter().any(|o| implies(o, clause)))
            })
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    let choices = parts.iter().fold(1usize, |n, p| n.saturating_mul(p.len()));
    if choices > MAX_CLAUSES {
        for p in &mut parts {
            p.truncate(1);
        }
    }
    let mut out: Witness = vec![Vec::new()];
    for mut alternative in parts {
        if alternative.len() == 1 {
            // The common case (a list of values): every clause takes the alternative's needles.
            let needles = alternative.pop().unwrap_or_default();
            for clause in &mut out {
                clause.extend(needles.iter().cloned());
            }
        } else {
            out = out
                .iter()
                .flat_map(|clause| {
                    alternative.iter().map(move |other| {
                        let mut joined = clause.clone();
                        joined.extend(other.iter().cloned());
                        joined
                    })
                })
                .collect();
        }
    }
    out.extend(shared);
    for clause in &mut out {
        clause.sort();
        clause.dedup();
    }
    ordered(out)
}

/// Clauses the most selective first, each once, at most `MAX_CLAUSES`; `None` when there are
/// none. A clause is as selective as its most common needle; of two alike, the one with fewer
/// needles (fewer to look for). A clause that one already taken implies is left out: it would
/// be looked for and found whenever that one is (a regex's tails `werfault`, `erfault`, ...).
fn ordered(mut clauses: Witness) -> Option<Witness> {
    clauses.retain(|c| !c.is_empty());
    // Past 8 characters a literal is rare whatever its length: fewer needles come first, then
    // longer literals (`\servers\stable-` before `\cmd.exe`, which every shell shows).
    let key = |c: &Vec<Needle>| {
        let commonest = c.iter().map(|(_, shows)| rarity(shows)).min().unwrap_or(0);
        (
            std::cmp::Reverse(commonest.min(8)),
            c.len(),
            std::cmp::Reverse(commonest),
        )
    };
    clauses.sort_by_key(key);
    let mut out: Witness = Vec::new();
    for clause in clauses {
        if out.len() < MAX_CLAUSES && !out.iter().any(|taken| implies(taken, &clause)) {
            out.push(clause);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Whether every record that shows a needle of clause `a` shows one of clause `b`: each needle
/// of `a` is one of `b`'s, or holds one of `b`'s `Anywhere` literals in the same field.
fn implies(a: &[Needle], b: &[Needle]) -> bool {
    a.iter().all(|(field, shows)| {
        b.iter().any(|(other_field, other)| {
            field == other_field
                && match (shows, other) {
                    (Shows::Text(lit, _), Shows::Text(inner, Anchor::Anywhere)) => {
                        lit.contains(inner.as_str())
                    }
                    _ => shows == other,
                }
        })
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

    /// The witness of a rule as text: each clause's needles sorted and joined by `|`, the
    /// clauses sorted and joined by ` & `.
    fn witness(detection: &str) -> Option<String> {
        let yaml = format!(
            "title: t\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n{detection}\nlevel: low\n"
        );
        let set = rsigma_parser::parse_sigma_yaml(&yaml).unwrap();
        let rule = rsigma_eval::compile_rule(&set.rules[0]).unwrap();
        rule_witness(&rule).map(|w| {
            let mut clauses: Vec<String> = w
                .into_iter()
                .map(|clause| {
                    let mut needles: Vec<String> = clause
                        .into_iter()
                        .map(|(_, shows)| match shows {
                            Shows::Text(literal, _) => literal,
                            Shows::Number(n) => n.to_string(),
                        })
                        .collect();
                    needles.sort();
                    needles.join("|")
                })
                .collect();
            clauses.sort();
            clauses.join(" & ")
        })
    }

    #[test]
    fn witnesses_follow_the_condition() {
        let w = witness("  sel:\n    Image|endswith: '\\WHOAMI.exe'\n  condition: sel");
        assert_eq!(w, Some("\\whoami.exe".into()));
        // OR: every branch must give a literal; AND: every conjunct that has some.
        let w = witness(
            "  a:\n    CommandLine|contains: ['-enc', 'frombase64']\n  b:\n    Image|endswith: '.exe'\n  condition: a or b",
        );
        assert_eq!(w, Some("-enc|.exe|frombase64".into()));
        let w = witness(
            "  a:\n    CommandLine|contains: 'mimikatz'\n  b:\n    CommandLine|re: 'x.*y'\n  condition: a and b",
        );
        assert_eq!(w, Some("mimikatz".into()));
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
        assert_eq!(w, Some("aa.exe|bb.exe".into()));
        let w = witness(
            "  sel_a:\n    Image|endswith: 'aa.exe'\n  sel_b:\n    OriginalFileName: 'b'\n  condition: all of sel_*",
        );
        assert_eq!(w, Some("aa.exe".into()));
        // An AND's conjuncts are clauses, all of which a match satisfies; an OR of ANDs takes
        // one clause for each choice of a clause per alternative.
        let w = witness(
            "  sel:\n    Image|endswith: '\\cmd.exe'\n    CommandLine|contains: 'del /f'\n  condition: sel",
        );
        assert_eq!(w, Some("\\cmd.exe & del /f".into()));
        let w = witness(
            "  a:\n    Image|endswith: 'aa.exe'\n  b:\n    CommandLine|contains: 'bbb'\n  c:\n    OriginalFileName: 'ccc.exe'\n  condition: (a and b) or c",
        );
        assert_eq!(w, Some("aa.exe|ccc.exe & bbb|ccc.exe".into()));
        // `2 of` three: some two, no telling which; `2 of` two: both.
        let three = "  sel_a:\n    Image|endswith: 'aa.exe'\n  sel_b:\n    Image|endswith: 'bb.exe'\n  sel_c:\n    Image|endswith: 'cc.exe'\n  condition: 2 of sel_*";
        assert_eq!(witness(three), Some("aa.exe|bb.exe|cc.exe".into()));
        let two = "  sel_a:\n    Image|endswith: 'aa.exe'\n  sel_b:\n    CommandLine|contains: 'bb'\n  condition: 2 of sel_*";
        assert_eq!(witness(two), Some("aa.exe & bb".into()));
        // Too short to be worth indexing, and numbers, give no witness.
        assert_eq!(
            witness("  a:\n    CommandLine|contains: 'x'\n  condition: a"),
            None
        );
        assert_eq!(witness("  a:\n    ProcessId|gt: 4\n  condition: a"), None);
        // Integers a field equals are witnesses (an event id: as rare as a short literal);
        // zero and fractions are not (rsigma's `f64::EPSILON` lets near values equal them).
        let w = witness("  a:\n    EventID:\n      - 4728\n      - 632\n  condition: a");
        assert_eq!(w, Some("4728|632".into()));
        let w =
            witness("  a:\n    EventID: 4720\n    TargetUserName|endswith: '$'\n  condition: a");
        assert_eq!(w, Some("4720".into()));
        let w = witness(
            "  a:\n    EventID: 4720\n    TargetUserName|endswith: 'admin'\n  condition: a",
        );
        assert_eq!(w, Some("4720 & admin".into()));
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
        assert_eq!(re("(?i)WhoAmI.*>"), Some("whoami".into()));
        assert_eq!(re("(ab|cd)e+"), Some("abe|cde".into()));
        assert_eq!(re("x.*y"), None);
        assert_eq!(re("(?:)"), None);
        // A sequence's later literals count too, the most selective kept; a tail's literals
        // that a longer one holds are left out.
        assert_eq!(re(".*\u{fe0f}\u{20e3}"), Some("\u{fe0f}\u{20e3}".into()));
        assert_eq!(re("ipconfig.*\\|.*find"), Some("find & ipconfig".into()));
        assert_eq!(re("cmd.*<"), Some("< & cmd".into()));
        // Of an alternative's clauses, past 8 characters the longer literal stands for it.
        let w = witness(
            "  sel_a:\n    Image|endswith: '\\cmd.exe'\n    CommandLine|contains: '\\servers\\Stable-'\n  sel_b:\n    CommandLine|endswith: '.exe tunnel'\n    Image|endswith: 'code.exe'\n  condition: 1 of sel_*",
        );
        assert_eq!(w, Some(".exe tunnel|\\servers\\stable-".into()));
        // What every alternative holds is a clause of their OR.
        let w = witness(
            "  a:\n    CommandLine|contains:\n      - 'ipconfig*|*find'\n      - 'net*|*find'\n      - 'whoami*|*find'\n  condition: a",
        );
        assert_eq!(w, Some("find".into()));
        assert_eq!(
            re("(?i)\\.EXE\\s+[^\"]{0,64}WerFault\\.exe\\s+\\d{2,10}"),
            Some("werfault.exe".into())
        );
        assert_eq!(re("(a|b)cd|xy(zz|ww)"), Some("acd|bcd|xyww|xyzz".into()));
        // One rare ASCII character (PowerShell's escape) is enough; a common one is not.
        assert_eq!(re("\\w+`(?:\\w+|-|.)`[\\w+|\\s]"), Some("`".into()));
        assert_eq!(re("\\w+;\\w+"), None);
        // One non-ASCII character is rare enough to index.
        let w = witness("  a:\n    CommandLine|contains: '\u{202e}'\n  condition: a");
        assert_eq!(w, Some("\u{202e}".into()));
        assert_eq!(
            witness("  a:\n    CommandLine|contains: 'y'\n  condition: a"),
            None
        );
        let w = witness("  keywords:\n    - 'Invoke-Mimikatz'\n  condition: keywords");
        assert_eq!(w, Some("invoke-mimikatz".into()));
        // A clause another implies adds nothing: `del` is found wherever `del /f` is.
        let w = witness(
            "  a:\n    CommandLine|contains|all: ['del /f', 'del']\n    Image|endswith: 'cmd.exe'\n  condition: a",
        );
        assert_eq!(w, Some("cmd.exe & del /f".into()));
    }

    /// Sysmon process creations of the rules `yaml` (one document per rule) and their index.
    /// A process-creation rule's YAML.
    fn rule(title: &str, detection: &str) -> String {
        format!(
            "title: {title}\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n{detection}\nlevel: low\n"
        )
    }

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
    fn keywords_are_found_in_one_value_never_across_two() {
        use serde_json::json;
        // Three keyword rules share an `Any` search (a find marks them all); six need an
        // `Each` (a find marks its own). One keyword has a wildcard: a regex, searched for by
        // its literal start.
        let few = ["ab cd", "zz-top"];
        let many = ["ab cd", "zz-top", "k3a", "k3b", "k3c"];
        for (keywords, each) in [(&few[..], false), (&many[..], true)] {
            let mut rules: Vec<String> = keywords
                .iter()
                .map(|k| {
                    rule(
                        k,
                        &format!("  keywords:\n    - '{k}'\n  condition: keywords"),
                    )
                })
                .collect();
            rules.push(rule(
                "wildcard",
                "  keywords:\n    - 'start-here*x'\n  condition: keywords",
            ));
            let (set, key) = process_creation_route(&rules.join("---\n"));
            let prefilter = &set.routes[&key].prefilter;
            let literals = prefilter.keywords.as_ref().unwrap();
            assert!(literals.joinable);
            assert_eq!(matches!(literals.inner, Some(Inner::Each(..))), each);
            let found = |data: serde_json::Value| -> Vec<String> {
                prefilter
                    .candidates(&SigmaEvent::new(&sysmon_process(data)))
                    .into_iter()
                    .map(|i| set.routes[&key].rules[i as usize].title.clone())
                    .collect()
            };
            // Split over two values (in either order): nothing.
            assert!(found(json!({"A": "x ab", "B": "cd y", "C": "zz-", "D": "top"})).is_empty());
            assert!(found(json!({"A": "cd", "B": "x ab "})).is_empty());
            assert!(found(json!({"A": "x start", "B": "-here"})).is_empty());
            // Whole in a later value, folded; two in one value.
            let later = found(json!({"A": "nothing", "B": 12, "C": "1 AB CD 2"}));
            let both = found(json!({"A": "x", "B": "Ünïcode ZZ-Top start-HERE"}));
            if each {
                assert_eq!(later, ["ab cd"]);
                assert_eq!(both, ["zz-top", "wildcard"]);
            } else {
                assert_eq!(later, ["ab cd", "zz-top", "wildcard"]);
                assert_eq!(both, later);
            }
        }
    }

    #[test]
    fn a_candidate_shows_a_needle_of_every_clause() {
        let rules = "title: del\nlogsource: {product: windows, category: process_creation}\ndetection:\n  sel:\n    Image|endswith: '\\cmd.exe'\n    CommandLine|contains: ' del '\n  filter:\n    ParentImage|endswith: '\\x.exe'\n  condition: sel and not filter\nlevel: low\n";
        let (set, key) = process_creation_route(rules);
        let prefilter = &set.routes[&key].prefilter;
        let candidates =
            |data: serde_json::Value| prefilter.candidates(&SigmaEvent::new(&sysmon_process(data)));
        use serde_json::json;
        let cmd = "C:\\Windows\\System32\\cmd.exe";
        assert!(candidates(json!({"Image": cmd, "CommandLine": "cmd /c dir"})).is_empty());
        assert!(candidates(json!({"Image": "C:\\x\\a.exe", "CommandLine": "x del y"})).is_empty());
        assert_eq!(
            candidates(
                json!({"Image": cmd, "CommandLine": "cmd /c del x", "ParentImage": "C:\\x.exe"})
            ),
            [0]
        );
    }

    #[test]
    fn a_number_counts_however_the_record_writes_it() {
        use serde_json::json;
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
        assert!(route.prefilter.need.iter().all(|&n| n != 0));
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
