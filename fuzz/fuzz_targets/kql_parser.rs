//! Arbitrary text as a KQL query (lossy UTF-8): `rampart_kql_syntax::parse` must never panic,
//! overflow the stack or hang, and every error must carry a span inside the text that
//! `KqlError::render` can point at. The text is also read as a Markdown document of queries.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_kql_syntax::{KqlError, parse, query_blocks};

/// Parses `text`; an error must point inside it, on character boundaries, and render.
fn check(text: &str) {
    let Err(error) = parse(text) else {
        return;
    };
    let span = error.span.expect("a parse error has a place in the text");
    assert!(
        span.start <= span.end && span.end <= text.len(),
        "span {span:?} outside a text of {} bytes",
        text.len()
    );
    assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
    let rendered: String = KqlError::render(&error, text);
    assert!(rendered.contains(&error.message));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text);
    for block in query_blocks(&text, true) {
        for query in block.editor_queries() {
            check(&query.text);
        }
    }
});
