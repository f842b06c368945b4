//! Loading Sigma rules into a [`RuleSet`] and evaluating records against it: Windows records
//! ([`RuleSet::evaluate`]) and rows of agent telemetry ([`RuleSet::evaluate_row`]).
//!
//! Rules are parsed and compiled in parallel, then grouped by [`RouteKey`] (category or
//! service). A record is evaluated only against the rules of its own routes, and each route's
//! literal index ([`Prefilter`]) skips the rules whose required literals the record lacks, so
//! most rules never run on most records.
//!
//! Correlation rules are stateful and need records in time order. Detections of rules that a
//! correlation refers to are therefore held back by the `evaluate` methods as
//! [`CorrelationInput`]s; the caller sorts them by time and feeds them to a [`Correlator`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rampart_sources::WinEvent;
use rayon::prelude::*;
use rsigma_eval::{CompiledRule, CorrelationConfig, CorrelationEngine, EvaluationResult};
use rsigma_parser::{CorrelationRule, FilterRule, SigmaCollection, SigmaRule};
use serde_json::Value;

use crate::Level;
use crate::event::{Record, SigmaEvent};
use crate::linux::TelemetryRow;
use crate::prefilter::Prefilter;
use crate::taxonomy::{self, RouteKey};

/// Largest rule file read; Sigma rules are a few KiB.
pub const MAX_RULE_FILE_BYTES: u64 = 1024 * 1024;

/// What a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Detection,
    Correlation,
    Filter,
}

impl RuleKind {
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Detection => "detection",
            RuleKind::Correlation => "correlation",
            RuleKind::Filter => "filter",
        }
    }
}

/// A loaded rule's identity, as detections carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    pub id: Option<String>,
    pub title: String,
    pub level: Level,
    pub tags: Vec<String>,
    pub path: PathBuf,
    pub kind: RuleKind,
}

/// What became of one rule (or of a file that held none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleStatus {
    /// Compiled and evaluated on the records its logsource covers.
    Loaded,
    /// Valid, but no record Rampart reads reaches it (e.g. `product: macos`, or a Linux
    /// `service` such as auditd).
    Inactive(String),
    /// Could not be parsed or compiled.
    Failed(String),
}

/// One line of the load report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleReport {
    pub path: PathBuf,
    pub id: Option<String>,
    pub title: Option<String>,
    pub kind: Option<RuleKind>,
    /// Where the rule is evaluated (`category:process_creation`), when loaded.
    pub route: Option<String>,
    pub status: RuleStatus,
}

/// A rule that matched a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub rule: Arc<RuleInfo>,
    pub timestamp: DateTime<Utc>,
    pub computer: String,
    pub channel: String,
    pub event_id: u32,
    pub record_id: u64,
    pub source: Arc<Path>,
    /// The fields that matched and their values (for a correlation: its group-by values).
    pub matched: Vec<(String, Value)>,
}

/// The rules of one route and their literal index.
pub(crate) struct Route {
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) prefilter: Prefilter,
}

/// A record whose detections feed correlation rules, held back until records are in time order:
/// a Windows record, or a row of agent telemetry (`CorrelationInput<TelemetryRow<'static>>`).
pub struct CorrelationInput<R = WinEvent> {
    pub event: R,
    results: Vec<EvaluationResult>,
}

/// Compiled rules, ready to evaluate records from many threads at once.
pub struct RuleSet {
    /// The compiled rules of each route, with their literal index.
    pub(crate) routes: BTreeMap<RouteKey, Route>,
    /// By rule id, and by title for rules without one (shared with correlators).
    rules: Arc<HashMap<String, Arc<RuleInfo>>>,
    correlations: Vec<CorrelationRule>,
    /// Detection rules (parsed) that correlations refer to, by id and name.
    correlated: Vec<SigmaRule>,
    correlated_keys: HashSet<String>,
    /// Correlated rules whose own matches are not reported (no correlation says `generate`).
    silent: Arc<HashSet<String>>,
    /// What was loaded, set aside or refused, file by file.
    pub report: Vec<RuleReport>,
}

/// A file's documents (or why none could be read), and per-document errors.
type ParsedFile = (Result<Vec<Parsed>, String>, Vec<String>);

/// One parsed document, before compilation.
enum Parsed {
    Rule(Box<SigmaRule>),
    Correlation(Box<CorrelationRule>),
    Filter(Box<FilterRule>),
}

impl RuleSet {
    /// Loads every `.yml`/`.yaml` file below the given files and folders. Nothing here fails:
    /// a rule that cannot load is reported in [`RuleSet::report`] with the reason.
    pub fn load(paths: &[PathBuf]) -> RuleSet {
        let (files, report) = rule_files(paths);
        let parsed = files
            .par_iter()
            .map(|path| (path.clone(), parse_file(path)))
            .collect();
        RuleSet::assemble(parsed, report)
    }

    /// Loads rules from YAML text (one or more documents), as if read from `path`.
    pub fn from_yaml(yaml: &str, path: &Path) -> RuleSet {
        RuleSet::from_sources(&[(path.to_path_buf(), yaml.to_string())])
    }

    /// Loads rules from texts held elsewhere (the server's rule table), each named by the path
    /// it is reported under. Texts over [`MAX_RULE_FILE_BYTES`] are refused like such files.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> RuleSet {
        let parsed = sources
            .par_iter()
            .map(|(path, text)| (path.clone(), parse_bounded(text)))
            .collect();
        RuleSet::assemble(parsed, Vec::new())
    }

    /// Compiles parsed files; `report` already holds what could not be read.
    fn assemble(parsed: Vec<(PathBuf, ParsedFile)>, mut report: Vec<RuleReport>) -> RuleSet {
        let mut docs = Vec::new();
        for (path, (result, errors)) in parsed {
            for error in errors {
                report.push(failed(&path, None, None, error));
            }
            match result {
                Ok(list) => docs.extend(list.into_iter().map(|d| (path.clone(), d))),
                Err(error) => report.push(failed(&path, None, None, error)),
            }
        }
        let mut set = RuleSet::build(docs);
        report.append(&mut set.report);
        report.sort_by(|a, b| a.path.cmp(&b.path).then(a.title.cmp(&b.title)));
        set.report = report;
        set
    }

    fn build(docs: Vec<(PathBuf, Parsed)>) -> RuleSet {
        let mut rules = Vec::new();
        let mut correlations = Vec::new();
        let mut filters = Vec::new();
        for (path, doc) in docs {
            match doc {
                Parsed::Rule(r) => rules.push((path, *r)),
                Parsed::Correlation(c) => correlations.push((path, *c)),
                Parsed::Filter(f) => filters.push((path, *f)),
            }
        }

        // Results, and rsigma's correlation engine, know a rule by its id only: a rule without
        // one gets its rule key as id (the report keeps what the file declared).
        let declared: Vec<Option<String>> = rules.iter().map(|(_, r)| r.id.clone()).collect();
        rules.par_iter_mut().for_each(|(_, rule)| {
            crate::expand::expand_rule(rule);
            if rule.id.is_none() {
                rule.id = Some(rule_key(None, &rule.title));
            }
        });
        // Compile in parallel; group by route.
        let compiled: Vec<_> = rules
            .par_iter()
            .map(|(path, rule)| {
                let ls = &rule.logsource;
                let route = taxonomy::route(
                    ls.product.as_deref(),
                    ls.category.as_deref(),
                    ls.service.as_deref(),
                );
                let outcome = match route {
                    Err(reason) => Err(RuleStatus::Inactive(reason)),
                    Ok(key) => rsigma_eval::compile_rule(rule)
                        .map(|c| (key, c))
                        .map_err(|e| RuleStatus::Failed(e.to_string())),
                };
                (path, rule, outcome)
            })
            .collect();

        let mut report = Vec::new();
        let mut routes: BTreeMap<RouteKey, Vec<CompiledRule>> = BTreeMap::new();
        let mut infos: HashMap<String, Arc<RuleInfo>> = HashMap::new();
        for ((path, rule, outcome), declared) in compiled.into_iter().zip(declared) {
            let info = RuleInfo {
                id: declared.clone(),
                title: rule.title.clone(),
                level: rule.level.map(Level::from).unwrap_or(Level::Medium),
                tags: rule.tags.clone(),
                path: path.clone(),
                kind: RuleKind::Detection,
            };
            let mut line = RuleReport {
                path: path.clone(),
                id: declared,
                title: Some(rule.title.clone()),
                kind: Some(RuleKind::Detection),
                route: None,
                status: RuleStatus::Loaded,
            };
            match outcome {
                Err(status) => line.status = status,
                Ok((key, c)) => {
                    line.route = Some(key.to_string());
                    routes.entry(key).or_default().push(c);
                    infos.insert(rule_key(rule.id.as_deref(), &rule.title), Arc::new(info));
                }
            }
            report.push(line);
        }
        for (index, (path, filter)) in filters.into_iter().enumerate() {
            let mut line = RuleReport {
                path: path.clone(),
                id: filter.id.clone(),
                title: Some(filter.title.clone()),
                kind: Some(RuleKind::Filter),
                route: None,
                status: RuleStatus::Loaded,
            };
            for rules in routes.values_mut() {
                if let Err(e) = crate::filter::apply(&filter, index, rules) {
                    line.status = RuleStatus::Failed(e);
                    break;
                }
            }
            report.push(line);
        }
        let routes: BTreeMap<RouteKey, Route> = routes
            .into_par_iter()
            .map(|(key, rules)| {
                (
                    key,
                    Route {
                        prefilter: Prefilter::build(&rules),
                        rules,
                    },
                )
            })
            .collect();

        // Correlations: validate by compiling them into a throwaway engine with their rules.
        let mut kept = Vec::new();
        for (path, corr) in correlations {
            let mut line = RuleReport {
                path: path.clone(),
                id: corr.id.clone(),
                title: Some(corr.title.clone()),
                kind: Some(RuleKind::Correlation),
                route: None,
                status: RuleStatus::Loaded,
            };
            let missing: Vec<&String> = corr
                .rules
                .iter()
                .filter(|r| {
                    !infos.contains_key(*r)
                        && !rules
                            .iter()
                            .any(|(_, x)| x.name.as_deref() == Some(r.as_str()))
                })
                .collect();
            let mut probe = CorrelationEngine::new(CorrelationConfig::default());
            if !missing.is_empty() {
                let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                line.status = RuleStatus::Inactive(format!(
                    "refers to rules that are not loaded: {}",
                    names.join(", ")
                ));
            } else if let Err(e) = probe.add_correlation(&corr) {
                line.status = RuleStatus::Failed(e.to_string());
            } else {
                infos.insert(
                    rule_key(corr.id.as_deref(), &corr.title),
                    Arc::new(RuleInfo {
                        id: corr.id.clone(),
                        title: corr.title.clone(),
                        level: corr.level.map(Level::from).unwrap_or(Level::Medium),
                        tags: corr.tags.clone(),
                        path: path.clone(),
                        kind: RuleKind::Correlation,
                    }),
                );
                kept.push(corr);
            }
            report.push(line);
        }
        // A correlation names its rules by id or name; results carry id (or title) only.
        let refers = |c: &CorrelationRule, r: &SigmaRule| {
            c.rules
                .iter()
                .any(|x| Some(x) == r.id.as_ref() || Some(x) == r.name.as_ref())
        };
        let correlated: Vec<SigmaRule> = rules
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| kept.iter().any(|c| refers(c, r)))
            .collect();
        let correlated_keys = correlated
            .iter()
            .map(|r| rule_key(r.id.as_deref(), &r.title))
            .collect();
        // Sigma 2: a correlation's rules alert on their own only with `generate: true`.
        let silent = correlated
            .iter()
            .filter(|r| !kept.iter().any(|c| c.generate && refers(c, r)))
            .map(|r| rule_key(r.id.as_deref(), &r.title))
            .collect();

        RuleSet {
            routes,
            rules: Arc::new(infos),
            correlations: kept,
            correlated,
            correlated_keys,
            silent: Arc::new(silent),
            report,
        }
    }

    /// Number of rules compiled and evaluated (detections and correlations).
    pub fn active_rules(&self) -> usize {
        self.rules.len()
    }

    /// Number of detection rules evaluated on Linux agent telemetry only.
    pub fn linux_rules(&self) -> usize {
        self.routes
            .iter()
            .filter(|(key, _)| matches!(key, RouteKey::Linux(_)))
            .map(|(_, route)| route.rules.len())
            .sum()
    }

    /// Number of detection rules evaluated on Windows event-log records.
    pub fn windows_rules(&self) -> usize {
        self.routes
            .iter()
            .filter(|(key, _)| !matches!(key, RouteKey::Linux(_)))
            .map(|(_, route)| route.rules.len())
            .sum()
    }

    /// Whether any rule is evaluated on this record: the rules of its logsource routes.
    pub fn reads(&self, event: &WinEvent) -> bool {
        let mut keys = Vec::with_capacity(4);
        taxonomy::routes_of(event, &mut keys);
        keys.iter().any(|key| self.routes.contains_key(key))
    }

    /// Evaluates one record; detections go to `out`. Detections of rules that correlations
    /// use are held back and returned with the record, for [`Correlator::feed`].
    pub fn evaluate(&self, event: &WinEvent, out: &mut Vec<Detection>) -> Option<CorrelationInput> {
        let mut keys = Vec::with_capacity(4);
        taxonomy::routes_of(event, &mut keys);
        let held = self.evaluate_on(event, &SigmaEvent::new(event), &keys, out);
        (!held.is_empty()).then(|| CorrelationInput {
            event: event.clone(),
            results: held,
        })
    }

    /// Evaluates one row of agent telemetry against the rules of its Linux category (none when
    /// the row is in no category); as [`RuleSet::evaluate`] otherwise. Only a row that feeds a
    /// correlation is copied.
    pub fn evaluate_row(
        &self,
        row: &TelemetryRow<'_>,
        out: &mut Vec<Detection>,
    ) -> Option<CorrelationInput<TelemetryRow<'static>>> {
        let category = row.category()?;
        let key = RouteKey::Linux(category.name);
        // Most tenants' rules leave some categories empty: skip building the view.
        if !self.routes.contains_key(&key) {
            return None;
        }
        let held = self.evaluate_on(row, &row.view_as(category), &[key], out);
        (!held.is_empty()).then(|| CorrelationInput {
            event: row.clone().into_owned(),
            results: held,
        })
    }

    /// Evaluates `view` (of `record`) against the rules of `keys`; returns the results that
    /// correlations use.
    fn evaluate_on(
        &self,
        record: &impl Record,
        view: &SigmaEvent<'_>,
        keys: &[RouteKey],
        out: &mut Vec<Detection>,
    ) -> Vec<EvaluationResult> {
        let mut held = Vec::new();
        for key in keys {
            let Some(route) = self.routes.get(key) else {
                continue;
            };
            let candidates = route.prefilter.candidates(view);
            let results = candidates
                .into_iter()
                .filter_map(|i| rsigma_eval::evaluate_rule(&route.rules[i as usize], view));
            for result in results {
                let key = rule_key(result.header.rule_id.as_deref(), &result.header.rule_title);
                if self.correlated_keys.contains(&key) {
                    held.push(result);
                } else if let Some(d) = detection(&self.rules, record, &result) {
                    out.push(d);
                }
            }
        }
        held
    }

    /// A fresh correlation state over this rule set. It shares the rules' identities with the
    /// set (not the set itself), so it can be kept beside it across batches.
    pub fn correlator(&self) -> Correlator {
        let mut engine = CorrelationEngine::new(CorrelationConfig::default());
        for rule in &self.correlated {
            // Already compiled once at load; here only to register ids and names.
            let _ = engine.add_rule(rule);
        }
        for corr in &self.correlations {
            let _ = engine.add_correlation(corr);
        }
        Correlator {
            rules: self.rules.clone(),
            silent: self.silent.clone(),
            engine,
        }
    }

    /// Whether any correlation rule is loaded.
    pub fn has_correlations(&self) -> bool {
        !self.correlations.is_empty()
    }
}

/// Correlation state; feed it held-back records in time order.
pub struct Correlator {
    rules: Arc<HashMap<String, Arc<RuleInfo>>>,
    silent: Arc<HashSet<String>>,
    engine: CorrelationEngine,
}

impl Correlator {
    /// Feeds one record; the base detections a correlation lets through (`generate: true`)
    /// and every correlation that fires go to `out`.
    pub fn feed<R: Record>(&mut self, input: CorrelationInput<R>, out: &mut Vec<Detection>) {
        let view = input.event.view();
        let results = self.engine.process_with_detections(
            &view,
            input.results,
            input.event.origin().timestamp.timestamp(),
        );
        let silent = |r: &EvaluationResult| {
            r.is_detection()
                && self
                    .silent
                    .contains(&rule_key(r.header.rule_id.as_deref(), &r.header.rule_title))
        };
        out.extend(
            results
                .iter()
                .filter(|r| !silent(r))
                .filter_map(|r| detection(&self.rules, &input.event, r)),
        );
    }
}

/// The detection a result on `record` makes, if its rule is known.
fn detection(
    rules: &HashMap<String, Arc<RuleInfo>>,
    record: &impl Record,
    result: &EvaluationResult,
) -> Option<Detection> {
    let rule = rules.get(&rule_key(
        result.header.rule_id.as_deref(),
        &result.header.rule_title,
    ))?;
    let matched = match &result.body {
        rsigma_eval::ResultBody::Detection(d) => {
            // rsigma lists them in hash-map order; sort so output is reproducible.
            let mut m: Vec<(String, Value)> = d
                .matched_fields
                .iter()
                .map(|m| (m.field.clone(), m.value.clone()))
                .collect();
            m.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| a.1.to_string().cmp(&b.1.to_string()))
            });
            m.dedup();
            m
        }
        rsigma_eval::ResultBody::Correlation(c) => c
            .group_key
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    };
    let origin = record.origin();
    Some(Detection {
        rule: rule.clone(),
        timestamp: origin.timestamp,
        computer: origin.computer.to_string(),
        channel: origin.channel.to_string(),
        event_id: origin.event_id,
        record_id: origin.record_id,
        source: origin.source.clone(),
        matched,
    })
}

fn rule_key(id: Option<&str>, title: &str) -> String {
    match id {
        Some(id) => id.to_string(),
        None => format!("title:{title}"),
    }
}

fn failed(path: &Path, id: Option<String>, title: Option<String>, reason: String) -> RuleReport {
    RuleReport {
        path: path.to_path_buf(),
        id,
        title,
        kind: None,
        route: None,
        status: RuleStatus::Failed(reason),
    }
}

/// Every `.yml`/`.yaml` file below the given paths, sorted; unreadable paths are reported.
fn rule_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<RuleReport>) {
    let mut files = Vec::new();
    let mut report = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        if !path.exists() {
            report.push(failed(path, None, None, "no such file or folder".into()));
            continue;
        }
        for entry in walkdir::WalkDir::new(path).follow_links(true) {
            match entry {
                Ok(e) if e.file_type().is_file() => {
                    let ext = e
                        .path()
                        .extension()
                        .and_then(|x| x.to_str())
                        .unwrap_or_default();
                    if ext.eq_ignore_ascii_case("yml") || ext.eq_ignore_ascii_case("yaml") {
                        files.push(e.into_path());
                    }
                }
                Ok(_) => {}
                Err(err) => report.push(failed(
                    err.path().unwrap_or(path),
                    None,
                    None,
                    err.to_string(),
                )),
            }
        }
    }
    files.sort();
    files.dedup();
    (files, report)
}

fn parse_file(path: &Path) -> ParsedFile {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_RULE_FILE_BYTES => return too_big(m.len()),
        Err(e) => return (Err(e.to_string()), Vec::new()),
        Ok(_) => {}
    }
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_text(&text),
            Err(e) => (Err(format!("not UTF-8: {e}")), Vec::new()),
        },
        Err(e) => (Err(e.to_string()), Vec::new()),
    }
}

fn parse_bounded(text: &str) -> ParsedFile {
    match text.len() as u64 {
        n if n > MAX_RULE_FILE_BYTES => too_big(n),
        _ => parse_text(text),
    }
}

fn too_big(len: u64) -> ParsedFile {
    (
        Err(format!(
            "file is {len} bytes, over the {MAX_RULE_FILE_BYTES}-byte limit"
        )),
        Vec::new(),
    )
}

fn parse_text(text: &str) -> ParsedFile {
    let collection: SigmaCollection = match rsigma_parser::parse_sigma_yaml(text) {
        Ok(c) => c,
        Err(e) => return (Err(e.to_string()), Vec::new()),
    };
    let SigmaCollection {
        rules,
        mut correlations,
        filters,
        errors,
    } = collection;
    if !correlations.is_empty() {
        default_temporal_conditions(text, &mut correlations);
    }
    let docs = rules
        .into_iter()
        .map(|r| Parsed::Rule(Box::new(r)))
        .chain(
            correlations
                .into_iter()
                .map(|c| Parsed::Correlation(Box::new(c))),
        )
        .chain(filters.into_iter().map(|f| Parsed::Filter(Box::new(f))))
        .collect();
    (Ok(docs), errors)
}

/// A `temporal` or `temporal_ordered` correlation without `condition` needs every rule it names
/// (Sigma 2); rsigma-parser 0.23 defaults it to `gte: 1`, i.e. any one rule. The raw documents
/// tell which correlations had no condition.
fn default_temporal_conditions(text: &str, correlations: &mut [CorrelationRule]) {
    use rsigma_parser::{ConditionOperator, CorrelationCondition, CorrelationType};
    use serde::Deserialize;
    let mut absent = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(text) {
        // A document that does not parse ends the stream (as in rsigma's own parser).
        let Ok(value) = yaml_serde::Value::deserialize(doc) else {
            break;
        };
        if let Some(corr) = value.get("correlation") {
            absent.push(corr.get("condition").is_none());
        }
    }
    if absent.len() != correlations.len() {
        return; // documents and correlations do not line up (collection actions): leave as is
    }
    for (corr, absent) in correlations.iter_mut().zip(absent) {
        if absent
            && matches!(
                corr.correlation_type,
                CorrelationType::Temporal | CorrelationType::TemporalOrdered
            )
        {
            corr.condition = CorrelationCondition::Threshold {
                predicates: vec![(ConditionOperator::Gte, corr.rules.len() as u64)],
                field: None,
                percentile: None,
            };
        }
    }
}
