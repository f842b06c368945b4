//! The public Defender hunting queries (`../shared/kql/defender-hunting-queries`): every query
//! block parses, plans and runs over the (empty) hunting tables, but for the few that use what
//! Rampart refuses. The same check over a store filled with the EVTX attack samples is
//! `rampart queries check` (see the README and the CLI tests).

use rampart_kql::syntax::blocks::query_blocks;
use rampart_kql::{Engine, ErrorKind, MemCatalog, QueryOptions};

#[test]
fn public_hunting_queries_parse_plan_and_run() {
    let Some(dir) = rampart_testdata::dataset("kql/defender-hunting-queries") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let engine = Engine::new(MemCatalog::hunting_tables());
    let (mut total, mut parsed, mut ran) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    let mut files: Vec<_> = walk(&dir);
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        let md = f.extension().is_some_and(|e| e == "md");
        for b in query_blocks(&text, md) {
            total += 1;
            let where_ = format!("{}:{}", f.strip_prefix(&dir).unwrap_or(&f).display(), b.line);
            match rampart_kql::syntax::parse(&b.text) {
                Err(e) => {
                    failures.push(format!("{where_}: parse: {}", e.render(&b.text)));
                    continue;
                }
                Ok(_) => parsed += 1,
            }
            match rt.block_on(engine.run(&b.text, &QueryOptions::default())) {
                Ok(_) => ran += 1,
                Err(e) => failures.push(format!(
                    "{where_}: {:?}: {}",
                    e.kind,
                    e.render(&b.text)
                )),
            }
        }
    }
    for f in &failures {
        eprintln!("{f}");
    }
    eprintln!("{total} blocks: {parsed} parse, {ran} run");
    assert!(total > 300, "only {total} query blocks found");
    assert!(parsed * 100 >= total * 98, "{parsed} of {total} parse");
    assert!(ran * 100 >= total * 90, "{ran} of {total} run");
    let _ = ErrorKind::Syntax;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "md" || x == "txt") {
            out.push(p);
        }
    }
    out
}
