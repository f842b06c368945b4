//! Errors that point at the query text: line, column, and a suggestion where one helps.

use std::fmt;

use crate::ast::Span;

/// What stage refused the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text is not KQL.
    Syntax,
    /// Valid KQL naming something that does not exist (a table, column, function) or mixing
    /// types that do not go together.
    Semantic,
    /// Valid KQL that Rampart does not run (e.g. `externaldata`).
    Unsupported,
    /// The query planned but failed while running (including cancellation on timeout).
    Execution,
}

/// An error with its location in the query text.
#[derive(Debug, Clone, PartialEq)]
pub struct KqlError {
    pub kind: ErrorKind,
    pub message: String,
    /// Where in the query text; `None` only for errors that have no place (e.g. a timeout).
    pub span: Option<Span>,
    /// "did you mean ...?"
    pub suggestion: Option<String>,
}

/// 1-based line and column (in characters) of a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn of(source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }
}

impl KqlError {
    pub fn new(kind: ErrorKind, message: impl Into<String>, span: Span) -> KqlError {
        KqlError {
            kind,
            message: message.into(),
            span: Some(span),
            suggestion: None,
        }
    }

    pub fn syntax(message: impl Into<String>, span: Span) -> KqlError {
        KqlError::new(ErrorKind::Syntax, message, span)
    }

    pub fn semantic(message: impl Into<String>, span: Span) -> KqlError {
        KqlError::new(ErrorKind::Semantic, message, span)
    }

    pub fn unsupported(message: impl Into<String>, span: Span) -> KqlError {
        KqlError::new(ErrorKind::Unsupported, message, span)
    }

    pub fn execution(message: impl Into<String>) -> KqlError {
        KqlError {
            kind: ErrorKind::Execution,
            message: message.into(),
            span: None,
            suggestion: None,
        }
    }

    pub fn with_suggestion(mut self, suggestion: Option<String>) -> KqlError {
        self.suggestion = suggestion;
        self
    }

    /// Where the error starts, as line and column of `source`.
    pub fn location(&self, source: &str) -> Option<Location> {
        self.span.map(|s| Location::of(source, s.start))
    }

    /// A multi-line report: `line:col: message`, the offending line, a caret under the span,
    /// and the suggestion.
    pub fn render(&self, source: &str) -> String {
        let mut out = String::new();
        match self.span {
            Some(span) => {
                let loc = Location::of(source, span.start);
                out.push_str(&format!(
                    "error at line {}, column {}: {}\n",
                    loc.line, loc.column, self.message
                ));
                let line_text = source.lines().nth(loc.line - 1).unwrap_or("");
                let width = source
                    .get(span.start..span.end.min(source.len()))
                    .map_or(1, |s| s.lines().next().unwrap_or("").chars().count().max(1));
                let (shown, caret_at) = window(line_text, loc.column - 1);
                out.push_str(&format!("  | {shown}\n"));
                out.push_str(&format!(
                    "  | {}{}\n",
                    " ".repeat(caret_at),
                    "^".repeat(width.min(SHOWN_CHARS))
                ));
            }
            None => out.push_str(&format!("error: {}\n", self.message)),
        }
        if let Some(s) = &self.suggestion {
            out.push_str(&format!("  = help: did you mean `{s}`?\n"));
        }
        out
    }
}

impl fmt::Display for KqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.suggestion {
            write!(f, " (did you mean `{s}`?)")?;
        }
        Ok(())
    }
}

impl std::error::Error for KqlError {}

/// Most characters of the offending line an error shows.
const SHOWN_CHARS: usize = 100;

/// The part of a long line around `column` (0-based, in characters), with `…` where cut, and
/// where the column falls in it.
fn window(line: &str, column: usize) -> (String, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= SHOWN_CHARS {
        return (line.to_string(), column);
    }
    let start = column
        .saturating_sub(SHOWN_CHARS / 2)
        .min(chars.len() - SHOWN_CHARS);
    let end = start + SHOWN_CHARS;
    let mut shown = String::new();
    let mut caret = column - start;
    if start > 0 {
        shown.push('…');
        caret += 1;
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    (shown, caret)
}

/// The candidate closest to `name` by edit distance (case-insensitive), if close enough to be a
/// plausible typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_lowercase();
    let limit = (name.chars().count() / 3).clamp(1, 4);
    candidates
        .into_iter()
        .map(|c| (levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c.to_string())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters() {
        let src = "T\n| where é == 1";
        assert_eq!(Location::of(src, 0), Location { line: 1, column: 1 });
        let at = src.find("==").unwrap();
        assert_eq!(
            Location::of(src, at),
            Location {
                line: 2,
                column: 11
            }
        );
    }

    #[test]
    fn render_points_a_caret_at_the_span() {
        let src = "T | wher x";
        let e = KqlError::syntax("unknown operator 'wher'", Span::new(4, 8))
            .with_suggestion(Some("where".into()));
        let r = e.render(src);
        assert!(r.starts_with("error at line 1, column 5: unknown operator 'wher'"));
        assert!(r.contains("  |     ^^^^\n"), "{r}");
        assert!(r.contains("did you mean `where`"));
    }

    #[test]
    fn long_lines_are_shown_around_the_error() {
        let src = format!("print x = {}nope", "1 + ".repeat(100));
        let at = src.find("nope").unwrap();
        let e = KqlError::semantic("unknown name", Span::new(at, at + 4));
        let r = e.render(&src);
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines[1].starts_with("  | …"), "{r}");
        assert!(lines[1].chars().count() <= SHOWN_CHARS + 6, "{r}");
        let caret = lines[2].find('^').unwrap();
        let under: String = lines[1].chars().skip(caret).take(4).collect();
        assert_eq!(under, "nope", "{r}");
    }

    #[test]
    fn nearest_finds_typos_only() {
        let names = ["DeviceProcessEvents", "DeviceFileEvents", "EmailEvents"];
        assert_eq!(
            nearest("DeviceProcesEvents", names).as_deref(),
            Some("DeviceProcessEvents")
        );
        assert_eq!(
            nearest("deviceprocessevents", names).as_deref(),
            Some("DeviceProcessEvents")
        );
        assert_eq!(nearest("Zzz", names), None);
    }
}
