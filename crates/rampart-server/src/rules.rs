//! The rules each tenant's detection runs: Rampart's own rules (`rules/linux`, embedded in the
//! binary) and Sigma rules from the `--rules` folders (both builtin, re-read at every start),
//! and uploaded ones, kept in the state database with their enabled flag, compiled into one
//! [`RuleSet`] per tenant.

use std::path::{Path, PathBuf};

use rampart_sigma::RuleSet;
use rampart_state::{NewRule, PageRequest, RuleFilter, RuleKind, RuleOrigin, Severity};
use serde::Deserialize;

use crate::app::App;

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

/// The name Rampart's own rules are stored and reported under (`rampart:rules/linux/FILE`).
const OWN_RULES_PREFIX: &str = "rampart:rules/linux/";

/// The rule documents of an upload, each its own rule. Documents are split at `---` lines; one
/// that is not a mapping with a title is skipped here (compiling the whole text reports it).
pub fn new_rules(text: &str, origin: RuleOrigin) -> Vec<NewRule> {
    split_documents(text)
        .into_iter()
        .filter_map(|doc| rule_of(doc, doc.trim_matches('\n'), origin.clone()))
        .collect()
}

/// A rule file as one rule: its documents may refer to each other (correlations, filters), so
/// they stay together; the first titled document names it.
fn file_rule(text: &str, origin: RuleOrigin) -> Option<NewRule> {
    split_documents(text)
        .into_iter()
        .find_map(|doc| rule_of(doc, text, origin.clone()))
}

/// A rule whose table fields come from `doc` and whose source is `source`.
fn rule_of(doc: &str, source: &str, origin: RuleOrigin) -> Option<NewRule> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Meta {
        id: Option<String>,
        title: Option<String>,
        level: Option<String>,
        tags: Vec<String>,
    }
    let meta: Meta = yaml_serde::from_str(doc).ok()?;
    Some(NewRule {
        kind: RuleKind::Sigma,
        sigma_id: meta.id,
        title: meta.title?,
        source: source.to_string(),
        enabled: true,
        severity: match meta.level.as_deref() {
            Some("informational") => Severity::Informational,
            Some("low") => Severity::Low,
            Some("high" | "critical") => Severity::High,
            _ => Severity::Medium,
        },
        tags: meta.tags,
        schedule_secs: None,
        alert_template: None,
        origin,
    })
}

/// A multi-document YAML text cut at its `---` separator lines.
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.retain(|d| !d.trim().is_empty());
    docs
}

/// Recompiles the tenant's enabled Sigma rules and swaps them in.
pub async fn reload(app: &App, tenant: &str) -> rampart_state::Result<()> {
    let filter = RuleFilter {
        kind: Some(RuleKind::Sigma),
        enabled: Some(true),
        ..RuleFilter::default()
    };
    let mut sources: Vec<(PathBuf, String)> = Vec::new();
    let mut ids = std::collections::HashMap::new();
    let mut page = PageRequest::first(rampart_state::MAX_PAGE_LIMIT);
    loop {
        let got = app.db.list_rules(tenant, &filter, &page).await?;
        for rule in got.items {
            let name = match &rule.origin {
                RuleOrigin::Builtin { path } => PathBuf::from(path),
                RuleOrigin::Uploaded => PathBuf::from(format!("uploaded/{}", rule.id)),
            };
            ids.insert(name.clone(), rule.id);
            sources.push((name, rule.source));
        }
        match got.next {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    let set = tokio::task::spawn_blocking(move || RuleSet::from_sources(&sources))
        .await
        .map_err(|e| rampart_state::Error::Internal(e.to_string()))?;
    let failed = set
        .report
        .iter()
        .filter(|r| matches!(r.status, rampart_sigma::RuleStatus::Failed(_)))
        .count();
    app.metrics
        .rule_errors
        .store(failed as u64, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        tenant,
        active = set.active_rules(),
        failed,
        "rules compiled"
    );
    app.set_rules(tenant, crate::app::TenantRules::new(set, ids));
    Ok(())
}

/// Brings the tenant's builtin rules in line with Rampart's own rules (unless
/// `detection.builtin_rules` is off) and the `--rules` folders (new files added, changed ones
/// updated with their enabled flag kept, vanished ones removed) and compiles.
pub async fn install_builtin(app: &App, tenant: &str) -> anyhow::Result<()> {
    let dirs = app.config.rules.clone();
    let mut rules = tokio::task::spawn_blocking(move || builtin_rules(&dirs)).await?;
    if app.config.detection.builtin_rules {
        rules.extend(own_rules());
    }
    let report = app.db.sync_builtin_rules(tenant, &rules).await?;
    tracing::info!(tenant, ?report, "builtin rules synchronised");
    reload(app, tenant).await?;
    Ok(())
}

/// The rule files below the `--rules` folders, as builtin rules named by their path relative to
/// the folder they were found in.
pub fn builtin_rules(dirs: &[PathBuf]) -> Vec<NewRule> {
    let mut out = Vec::new();
    for dir in dirs {
        let files: Vec<PathBuf> = if dir.is_file() {
            vec![dir.clone()]
        } else {
            walkdir::WalkDir::new(dir)
                .follow_links(true)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file() && is_yaml(e.path()))
                .map(|e| e.into_path())
                .collect()
        };
        for file in files {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            if meta.len() > rampart_sigma::MAX_RULE_FILE_BYTES {
                tracing::warn!(file = %file.display(), "rule file over the size limit; skipped");
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&file) else {
                tracing::warn!(file = %file.display(), "rule file unreadable; skipped");
                continue;
            };
            let name = file.display().to_string();
            out.extend(file_rule(&text, RuleOrigin::Builtin { path: name }));
        }
    }
    out
}

/// Rampart's own rules, embedded at build time, as builtin rules.
pub fn own_rules() -> Vec<NewRule> {
    BUILTIN_RULES
        .iter()
        .filter_map(|(name, text)| {
            let path = format!("{OWN_RULES_PREFIX}{name}");
            file_rule(text, RuleOrigin::Builtin { path })
        })
        .collect()
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yml") || e.eq_ignore_ascii_case("yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separators() {
        let text = "title: a\nlevel: high\ntags: [attack.execution]\n---\ntitle: b\n---\n\n";
        let rules = new_rules(text, RuleOrigin::Uploaded);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].title, "a");
        assert_eq!(rules[0].severity, Severity::High);
        assert_eq!(rules[0].tags, vec!["attack.execution"]);
        assert_eq!(rules[1].title, "b");
        assert_eq!(rules[1].severity, Severity::Medium);
        assert_eq!(rules[1].source, "title: b");
    }

    /// Every file of rules/linux is embedded, loads, and is evaluated on agent telemetry.
    #[test]
    fn own_rules_are_embedded_and_active() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/linux");
        let files = std::fs::read_dir(folder)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "yml")
            })
            .count();
        let rules = own_rules();
        assert_eq!(rules.len(), files);
        assert_eq!(BUILTIN_RULES.len(), files);
        let sources: Vec<(PathBuf, String)> = rules
            .iter()
            .map(|r| match &r.origin {
                RuleOrigin::Builtin { path } => (PathBuf::from(path), r.source.clone()),
                RuleOrigin::Uploaded => unreachable!("own rules are builtin"),
            })
            .collect();
        let set = RuleSet::from_sources(&sources);
        for line in &set.report {
            assert_eq!(line.status, rampart_sigma::RuleStatus::Loaded, "{line:?}");
            let linux = line
                .route
                .as_deref()
                .is_some_and(|r| r.starts_with("product:linux/"));
            assert!(
                linux || line.kind == Some(rampart_sigma::RuleKind::Correlation),
                "{line:?}"
            );
        }
        // Each file is one rule; the discovery file holds its base rule and the correlation.
        assert_eq!(set.report.len(), files + 1);
        assert!(rules.iter().all(|r| r.sigma_id.is_some()));
    }

    #[test]
    fn documents_without_title_are_left_to_the_compiler() {
        assert!(new_rules("- a list\n", RuleOrigin::Uploaded).is_empty());
        assert!(new_rules("", RuleOrigin::Uploaded).is_empty());
    }
}
