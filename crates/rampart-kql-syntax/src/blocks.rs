//! Queries inside documents: each fenced code block of a Markdown file, or a whole query file.

/// One query found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryBlock {
    /// 1-based line of the document where the query text starts.
    pub line: usize,
    pub text: String,
}

/// The queries of a document. Markdown: every fenced code block (```` ``` ```` or `~~~`, any
/// info string, closed by a fence of the same character at least as long, or by the end of the
/// document). Anything else (`.kql`, `.txt`): the whole text is one query.
pub fn query_blocks(text: &str, is_markdown: bool) -> Vec<QueryBlock> {
    if !is_markdown {
        // An empty file holds no query.
        if text.trim().is_empty() {
            return Vec::new();
        }
        return vec![QueryBlock {
            line: 1,
            text: text.to_string(),
        }];
    }
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(fence) = opening_fence(line) else {
            continue;
        };
        let mut body = Vec::new();
        for (_, line) in lines.by_ref() {
            if fence.closes(line) {
                break;
            }
            body.push(strip_indent(line, fence.indent));
        }
        blocks.push(QueryBlock {
            // `index` is the fence's 0-based line; the query starts on the next one.
            line: index + 2,
            text: body.join("\n"),
        });
    }
    blocks
}

impl QueryBlock {
    /// The queries of this block as the Kusto and Defender query editors see them: runs of
    /// non-blank lines (the editor runs the one under the cursor, so a blank line ends a query).
    /// Collections of queries are written this way.
    pub fn editor_queries(&self) -> Vec<QueryBlock> {
        let mut out = Vec::new();
        let mut current: Option<QueryBlock> = None;
        for (index, line) in self.text.lines().enumerate() {
            if line.trim().is_empty() {
                out.extend(current.take());
                continue;
            }
            match &mut current {
                Some(query) => {
                    query.text.push('\n');
                    query.text.push_str(line);
                }
                None => {
                    current = Some(QueryBlock {
                        line: self.line + index,
                        text: line.to_string(),
                    });
                }
            }
        }
        out.extend(current);
        out
    }
}

struct Fence {
    ch: char,
    len: usize,
    /// Spaces before the opening fence, removed from the block's lines as CommonMark does.
    indent: usize,
}

impl Fence {
    fn closes(&self, line: &str) -> bool {
        let trimmed = line.trim_start();
        let run = trimmed.chars().take_while(|&c| c == self.ch).count();
        run >= self.len && trimmed.chars().skip(run).all(char::is_whitespace)
    }
}

/// A line opening a fenced block. Fences indented further than CommonMark's three spaces are
/// accepted too, as they occur inside list items.
fn opening_fence(line: &str) -> Option<Fence> {
    let trimmed = line.trim_start();
    let ch = trimmed.chars().next().filter(|&c| c == '`' || c == '~')?;
    let len = trimmed.chars().take_while(|&c| c == ch).count();
    let info = trimmed.get(len..).unwrap_or("");
    // A backtick fence's info string has no backticks (else it is inline code).
    if len < 3 || (ch == '`' && info.contains('`')) {
        return None;
    }
    Some(Fence {
        ch,
        len,
        indent: line.len() - trimmed.len(),
    })
}

fn strip_indent(line: &str, indent: usize) -> &str {
    let spaces = line.bytes().take(indent).take_while(|&b| b == b' ').count();
    line.get(spaces..).unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(line: usize, text: &str) -> QueryBlock {
        QueryBlock {
            line,
            text: text.to_string(),
        }
    }

    #[test]
    fn a_query_file_is_one_block() {
        assert_eq!(
            query_blocks("T\n| take 1\n", false),
            [block(1, "T\n| take 1\n")]
        );
    }

    #[test]
    fn markdown_fences_of_both_kinds_with_any_info_string() {
        let md = "# Title\n\n```kusto\nT\n| take 1\n```\ntext\n~~~ kql\nU\n~~~\n``` Kusto\n```\n";
        assert_eq!(
            query_blocks(md, true),
            [block(4, "T\n| take 1"), block(9, "U"), block(12, "")]
        );
    }

    #[test]
    fn longer_closing_fences_close_and_shorter_or_other_ones_do_not() {
        let md = "````\na\n```\n~~~~\nb\n`````\nc\n";
        assert_eq!(query_blocks(md, true), [block(2, "a\n```\n~~~~\nb")]);
    }

    #[test]
    fn indented_fences_lose_their_indent_and_unclosed_blocks_run_to_the_end() {
        let md = "* item\n  ```\n  T\n    | take 1\n  ```\n\n```\nU\n";
        assert_eq!(
            query_blocks(md, true),
            [block(3, "T\n  | take 1"), block(8, "U")]
        );
    }

    #[test]
    fn inline_code_and_short_fences_are_not_blocks() {
        let md = "Use ```T | take 1``` inline.\n``\nnot a fence\n``\n";
        assert_eq!(query_blocks(md, true), []);
    }

    #[test]
    fn editor_queries_are_separated_by_blank_lines() {
        let b = block(10, "// one\nT\n| take 1\n  \n\nU\n\t\n// three\n");
        assert_eq!(
            b.editor_queries(),
            [
                block(10, "// one\nT\n| take 1"),
                block(15, "U"),
                block(17, "// three")
            ]
        );
        assert_eq!(block(1, "\n \n").editor_queries(), []);
    }

    #[test]
    fn crlf_line_endings() {
        assert_eq!(
            query_blocks("x\r\n```\r\nT\r\n```\r\n", true),
            [block(3, "T")]
        );
    }
}
