//! Sigma filter documents: `AND` their condition into the rules they name.
//!
//! The same semantics as rsigma's `Engine::apply_filter` (which we cannot use, as we keep
//! compiled rules outside rsigma's engine): the filter's detections join the rule under
//! namespaced names and each rule condition becomes `rule_condition and filter_condition`.

use rsigma_eval::CompiledRule;
use rsigma_eval::compiler::compile_detection;
use rsigma_parser::{ConditionExpr, FilterRule, FilterRuleTarget, LogSource, SelectorPattern};

/// Applies `filter` (the `index`-th filter loaded) to the rules it targets; returns how many.
pub fn apply(
    filter: &FilterRule,
    index: usize,
    rules: &mut [CompiledRule],
) -> Result<usize, String> {
    let prefix = format!("__filter_{index}_");
    let mut detections = Vec::new();
    for (name, detection) in &filter.detection.named {
        detections.push((
            format!("{prefix}{name}"),
            compile_detection(detection).map_err(|e| e.to_string())?,
        ));
    }
    if detections.is_empty() {
        return Ok(0);
    }
    let condition = match filter.detection.conditions.first() {
        Some(c) => rename(c, &prefix),
        None => ConditionExpr::And(
            detections
                .iter()
                .map(|(n, _)| ConditionExpr::Identifier(n.clone()))
                .collect(),
        ),
    };
    let mut applied = 0;
    for rule in rules.iter_mut() {
        let targeted = match &filter.rules {
            FilterRuleTarget::Any => true,
            FilterRuleTarget::Specific(refs) => refs
                .iter()
                .any(|r| rule.id.as_deref() == Some(r.as_str()) || rule.title == *r),
        };
        if !targeted
            || filter
                .logsource
                .as_ref()
                .is_some_and(|ls| !covers(ls, &rule.logsource))
        {
            continue;
        }
        for (name, d) in &detections {
            rule.detections.insert(name.clone(), d.clone());
        }
        rule.conditions = rule
            .conditions
            .iter()
            .map(|c| ConditionExpr::And(vec![c.clone(), condition.clone()]))
            .collect();
        applied += 1;
    }
    Ok(applied)
}

/// Every dimension the filter's logsource sets, the rule's has too.
fn covers(filter: &LogSource, rule: &LogSource) -> bool {
    let same = |f: &Option<String>, r: &Option<String>| match (f, r) {
        (Some(f), Some(r)) => f.eq_ignore_ascii_case(r),
        (Some(_), None) => false,
        (None, _) => true,
    };
    same(&filter.product, &rule.product)
        && same(&filter.category, &rule.category)
        && same(&filter.service, &rule.service)
}

/// The filter's condition over its namespaced detection names.
fn rename(expr: &ConditionExpr, prefix: &str) -> ConditionExpr {
    match expr {
        ConditionExpr::And(l) => ConditionExpr::And(l.iter().map(|e| rename(e, prefix)).collect()),
        ConditionExpr::Or(l) => ConditionExpr::Or(l.iter().map(|e| rename(e, prefix)).collect()),
        ConditionExpr::Not(e) => ConditionExpr::Not(Box::new(rename(e, prefix))),
        ConditionExpr::Identifier(n) => ConditionExpr::Identifier(format!("{prefix}{n}")),
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => ConditionExpr::Selector {
            quantifier: quantifier.clone(),
            pattern: match pattern {
                // `them` in a filter means the filter's own detections.
                SelectorPattern::Them => SelectorPattern::Pattern(format!("{prefix}*")),
                SelectorPattern::Pattern(p) => SelectorPattern::Pattern(format!("{prefix}{p}")),
            },
        },
    }
}
