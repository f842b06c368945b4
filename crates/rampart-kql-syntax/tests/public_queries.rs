//! Every query of Microsoft's public Defender hunting queries (third-party data beside the
//! repository, never inside it) is parsed; each failure is printed with its file, line and
//! rendered error.
//!
//! A block (a Markdown code block, or a whole `.txt` file) is one query, or — as the Kusto and
//! Defender editors read it — a collection of queries separated by blank lines. A block that
//! does not parse whole counts as parsed when it has several such queries and each parses.
//!
//! Valid KQL that Rampart does not run (`externaldata`, `find`, `top-nested`, ...) parses to
//! the syntax tree's `Unsupported` nodes, which the planner refuses by name: such blocks count
//! as parsed. At least [`MIN_PARSED`] of all blocks must parse; the rest are not KQL at all
//! (templates, prose, separator lines), and every failure is listed.

use std::path::{Path, PathBuf};

use rampart_kql_syntax::{parse, query_blocks};

/// The share of all blocks that must parse.
const MIN_PARSED: f64 = 0.98;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("md" | "txt")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn public_defender_hunting_queries_parse() {
    let Some(root) = rampart_testdata::dataset("kql/defender-hunting-queries") else {
        return;
    };
    let mut paths = Vec::new();
    files(&root, &mut paths);
    paths.sort();
    assert!(
        paths.len() > 200,
        "only {} query files in {}",
        paths.len(),
        root.display()
    );

    let (mut total, mut whole, mut collections, mut refused) = (0usize, 0usize, 0usize, 0usize);
    // The syntax tree's `Unsupported` nodes can sit anywhere in it (in a `let`, a join's right
    // side, `toscalar(...)`): its debug form finds them without a walk over every node kind.
    let uses_unsupported =
        |q: &rampart_kql_syntax::ast::Query| format!("{q:?}").contains("Unsupported(Ident {");
    let mut failures = String::new();
    for path in &paths {
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let name = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        let markdown = path.extension().is_some_and(|e| e == "md");
        for block in query_blocks(&text, markdown) {
            total += 1;
            let error = match parse(&block.text) {
                Ok(q) => {
                    whole += 1;
                    refused += usize::from(uses_unsupported(&q));
                    continue;
                }
                Err(e) => e,
            };
            let queries = block.editor_queries();
            let parsed: Vec<_> = queries.iter().map(|q| (q, parse(&q.text))).collect();
            if queries.len() > 1 && parsed.iter().all(|(_, r)| r.is_ok()) {
                collections += 1;
                refused += usize::from(
                    parsed
                        .iter()
                        .any(|(_, r)| r.as_ref().is_ok_and(uses_unsupported)),
                );
                continue;
            }
            let failed: Vec<_> = parsed
                .into_iter()
                .filter_map(|(q, r)| r.err().map(|e| (q, e)))
                .collect();
            // For a collection, the first of its queries that fails says more than the whole.
            let (query, e) = match failed.into_iter().next() {
                Some(first) if queries.len() > 1 => first,
                _ => (&block, error),
            };
            let at = e.location(&query.text).map_or(0, |l| l.line - 1);
            failures.push_str(&format!(
                "{name}:{} ({:?})\n{}\n",
                query.line + at,
                e.kind,
                e.render(&query.text)
            ));
        }
    }
    let parsed = whole + collections;
    eprintln!(
        "{parsed} of {total} query blocks parse ({whole} as one query, {collections} as \
         collections of blank-line-separated queries; {refused} use constructs the planner \
         refuses); {} fail\n{failures}",
        total - parsed
    );
    assert!(total > 200, "only {total} query blocks found");
    let rate = parsed as f64 / total as f64;
    assert!(
        rate >= MIN_PARSED,
        "{parsed} of the {total} blocks parse ({:.1}%), below {:.0}%:\n{failures}",
        rate * 100.0,
        MIN_PARSED * 100.0
    );
}
