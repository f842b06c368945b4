//! The lexer: query text to tokens, each with its byte span.
//!
//! Keywords are not tokens of their own: KQL's keywords (`by`, `on`, `kind`, `to`, ...) are also
//! valid column names, so they stay identifiers and the parser reads them by context. Literals
//! whose contents are not KQL tokens (`datetime(2020-01-01)`, `guid(...)`, `long(null)`) are lexed
//! as one [`Tok::Typed`] token holding their raw text, as Kusto's own lexer does.

use crate::ast::Span;
use crate::error::KqlError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A name or a keyword; `$left` / `$right` keep their `$`.
    Ident(String),
    /// One string literal, escapes decoded (adjacent literals are joined by the parser).
    Str(String),
    /// An integer, unsigned: `-9223372036854775808` is only in range once negated.
    Int(u64),
    Real(f64),
    /// `1d`, `1.5h`, `10ms`: nanoseconds.
    TimeSpan(i64),
    /// `datetime(...)`, `long(...)`, `guid(...)`...: the text between the parentheses.
    Typed(TypedKind, String),
    Pipe,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Semi,
    Dot,
    DotDot,
    Colon,
    /// `=`
    Assign,
    /// `==`
    EqEq,
    /// `!=` and `<>`
    NotEq,
    /// `=~`
    EqTilde,
    /// `!~`
    BangTilde,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    /// `!` before a string operator (`!has`, `!in`, ...)
    Bang,
    /// `~` after `in` (`in~`)
    Tilde,
    Eof,
}

/// The type of a [`Tok::Typed`] literal, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypedKind {
    Long,
    Int,
    Real,
    Decimal,
    Bool,
    DateTime,
    TimeSpan,
    Guid,
}

impl TypedKind {
    fn from_prefix(name: &str) -> Option<TypedKind> {
        Some(match name {
            "long" => TypedKind::Long,
            "int" => TypedKind::Int,
            "real" | "double" => TypedKind::Real,
            "decimal" => TypedKind::Decimal,
            "bool" => TypedKind::Bool,
            "datetime" => TypedKind::DateTime,
            "time" | "timespan" => TypedKind::TimeSpan,
            "guid" => TypedKind::Guid,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Splits `src` into tokens, ending with [`Tok::Eof`] (its span is the end of the text).
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, KqlError> {
    let mut lexer = Lexer {
        src,
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    let end = src.len();
    lexer.tokens.push(Token {
        tok: Tok::Eof,
        span: Span::new(end, end),
    });
    Ok(lexer.tokens)
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    tokens: Vec<Token>,
}

/// Zero-width spaces, word joiners and byte-order marks: invisible, and left behind when
/// queries are copied from web pages and documents. They separate tokens like whitespace.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        self.tokens.push(Token {
            tok,
            span: Span::new(start, self.pos),
        });
    }

    /// Byte offset after the run of characters from `from` that satisfy `pred`.
    fn scan_while(&self, from: usize, pred: impl Fn(char) -> bool) -> usize {
        let tail = self.src.get(from..).unwrap_or("");
        from + tail.find(|c| !pred(c)).unwrap_or(tail.len())
    }

    fn run(&mut self) -> Result<(), KqlError> {
        while let Some(c) = self.peek() {
            let start = self.pos;
            if (c == 'h' || c == 'H') && self.obfuscated_string(start)? {
                continue;
            }
            if c.is_whitespace() || is_invisible(c) {
                self.pos += c.len_utf8();
            } else if self.rest().starts_with("//") {
                self.pos = self.scan_while(start, |c| c != '\n');
            } else if c.is_ascii_digit() {
                self.number()?;
            } else if c == '"' || c == '\'' {
                let s = self.quoted(start, start)?;
                self.push(Tok::Str(s), start);
            } else if c == '@' && matches!(self.peek_at(1), Some('"' | '\'')) {
                let s = self.verbatim(start, start + 1)?;
                self.push(Tok::Str(s), start);
            } else if self.rest().starts_with("```") || self.rest().starts_with("~~~") {
                let s = self.multi_line(start)?;
                self.push(Tok::Str(s), start);
            } else if is_ident_start(c) || (c == '$' && self.peek_at(1).is_some_and(is_ident_start))
            {
                self.ident(start)?;
            } else {
                self.punct(c, start)?;
            }
        }
        Ok(())
    }

    /// `h"..."`, `h'...'`, `h@"..."` (hidden from logs; the value is an ordinary string).
    /// Returns false, consuming nothing, when the `h` starts a name.
    fn obfuscated_string(&mut self, start: usize) -> Result<bool, KqlError> {
        let s = match (self.peek_at(1), self.peek_at(2)) {
            (Some('"' | '\''), _) => self.quoted(start, start + 1)?,
            (Some('@'), Some('"' | '\'')) => self.verbatim(start, start + 2)?,
            _ => return Ok(false),
        };
        self.push(Tok::Str(s), start);
        Ok(true)
    }

    fn ident(&mut self, start: usize) -> Result<(), KqlError> {
        // Skip a leading `$` (of `$left`), then the name.
        let first = self.peek().map_or(0, char::len_utf8);
        let end = self.scan_while(start + first, is_ident_char);
        let name = self.src.get(start..end).unwrap_or("").to_string();
        self.pos = end;
        if let Some(kind) = TypedKind::from_prefix(&name)
            && self.peek() == Some('(')
        {
            return self.typed(kind, start);
        }
        self.push(Tok::Ident(name), start);
        Ok(())
    }

    /// `kind(` was seen: everything up to the first `)` is the literal's text.
    fn typed(&mut self, kind: TypedKind, start: usize) -> Result<(), KqlError> {
        let open = self.pos + 1;
        let Some(len) = self.src.get(open..).and_then(|t| t.find(')')) else {
            return Err(KqlError::syntax(
                "this literal has no closing ')'",
                Span::new(start, self.src.len()),
            ));
        };
        let text = self.src.get(open..open + len).unwrap_or("").to_string();
        self.pos = open + len + 1;
        self.push(Tok::Typed(kind, text), start);
        Ok(())
    }

    /// A string in `"` or `'` whose opening quote is at `quote`; backslash escapes apply.
    fn quoted(&mut self, start: usize, quote: usize) -> Result<String, KqlError> {
        let q = self
            .src
            .get(quote..)
            .and_then(|t| t.chars().next())
            .unwrap_or('"');
        let mut out = String::new();
        let mut chars = self.src.get(quote + 1..).unwrap_or("").char_indices();
        while let Some((i, c)) = chars.next() {
            let at = quote + 1 + i;
            match c {
                _ if c == q => {
                    self.pos = at + 1;
                    return Ok(out);
                }
                '\n' | '\r' => break,
                '\\' => {
                    let Some((_, e)) = chars.next() else { break };
                    if e == '\n' || e == '\r' {
                        break;
                    }
                    let simple = match e {
                        '\'' | '"' | '\\' => Some(e),
                        'a' => Some('\u{7}'),
                        'b' => Some('\u{8}'),
                        'f' => Some('\u{c}'),
                        'n' => Some('\n'),
                        'r' => Some('\r'),
                        't' => Some('\t'),
                        'v' => Some('\u{b}'),
                        _ => None,
                    };
                    if let Some(ch) = simple {
                        out.push(ch);
                        continue;
                    }
                    let (radix, max_digits) = match e {
                        'u' => (16, 4),
                        'U' => (16, 8),
                        'x' => (16, 2),
                        '0'..='7' => (8, 3),
                        _ => {
                            return Err(KqlError::syntax(
                                format!(
                                    "unknown escape sequence '\\{e}' (use @\"...\" for a string without escapes)"
                                ),
                                Span::new(at, at + 1 + e.len_utf8()),
                            ));
                        }
                    };
                    // Octal escapes include their first digit; hex ones start after the letter.
                    let mut digits = String::new();
                    if radix == 8 {
                        digits.push(e);
                    }
                    let mut end = at + 2;
                    while digits.len() < max_digits {
                        match chars.clone().next() {
                            Some((j, d)) if d.is_digit(radix) => {
                                digits.push(d);
                                end = quote + 1 + j + 1;
                                chars.next();
                            }
                            _ => break,
                        }
                    }
                    let code = u32::from_str_radix(&digits, radix).ok();
                    let ch = code.and_then(char::from_u32).filter(|_| {
                        // \u, \U and \x need all their digits; octal takes one to three.
                        radix == 8 || digits.len() == max_digits
                    });
                    match ch {
                        Some(ch) => out.push(ch),
                        None => {
                            return Err(KqlError::syntax(
                                "invalid character escape",
                                Span::new(at, end),
                            ));
                        }
                    }
                }
                _ => out.push(c),
            }
        }
        Err(KqlError::syntax(
            "unterminated string literal",
            Span::new(start, self.line_end(start)),
        ))
    }

    /// `@"..."` / `@'...'` with the quote at `quote`: no escapes, a doubled quote is one quote.
    fn verbatim(&mut self, start: usize, quote: usize) -> Result<String, KqlError> {
        let q = self
            .src
            .get(quote..)
            .and_then(|t| t.chars().next())
            .unwrap_or('"');
        let mut out = String::new();
        let mut chars = self
            .src
            .get(quote + 1..)
            .unwrap_or("")
            .char_indices()
            .peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                _ if c == q => {
                    if chars.peek().is_some_and(|&(_, n)| n == q) {
                        chars.next();
                        out.push(q);
                    } else {
                        self.pos = quote + 1 + i + 1;
                        return Ok(out);
                    }
                }
                '\n' | '\r' => break,
                _ => out.push(c),
            }
        }
        Err(KqlError::syntax(
            "unterminated string literal",
            Span::new(start, self.line_end(start)),
        ))
    }

    /// ```` ```text``` ```` or `~~~text~~~`: may span lines, no escapes.
    fn multi_line(&mut self, start: usize) -> Result<String, KqlError> {
        let fence = self.src.get(start..start + 3).unwrap_or("```");
        let body = start + 3;
        let Some(len) = self.src.get(body..).and_then(|t| t.find(fence)) else {
            return Err(KqlError::syntax(
                "unterminated multi-line string literal",
                Span::new(start, self.line_end(start)),
            ));
        };
        let text = self.src.get(body..body + len).unwrap_or("").to_string();
        self.pos = body + len + 3;
        Ok(text)
    }

    fn line_end(&self, from: usize) -> usize {
        self.scan_while(from, |c| c != '\n' && c != '\r')
    }

    /// A long (decimal or `0x` hex), a real (`1.5`, `1e6`, `1.`) or a timespan (`1.5h`).
    fn number(&mut self) -> Result<(), KqlError> {
        let start = self.pos;
        let rest = self.rest();
        if (rest.starts_with("0x") || rest.starts_with("0X"))
            && rest
                .get(2..)
                .and_then(|t| t.chars().next())
                .is_some_and(|c| c.is_ascii_hexdigit())
        {
            let end = self.scan_while(start + 2, |c| c.is_ascii_hexdigit());
            let digits = self.src.get(start + 2..end).unwrap_or("");
            self.pos = end;
            self.no_suffix(start)?;
            let value = u64::from_str_radix(digits, 16)
                .map_err(|_| KqlError::syntax("number out of range", Span::new(start, end)))?;
            self.push(Tok::Int(value), start);
            return Ok(());
        }
        let int_end = self.scan_while(start, |c| c.is_ascii_digit());
        let mut end = int_end;
        let mut frac = "";
        let mut is_real = false;
        // `1.5` and `1.` are reals, but `1..5` is a range: the dot must not start `..`.
        if self
            .src
            .get(end..)
            .is_some_and(|t| t.starts_with('.') && !t.starts_with(".."))
        {
            let frac_end = self.scan_while(end + 1, |c| c.is_ascii_digit());
            frac = self.src.get(end + 1..frac_end).unwrap_or("");
            end = frac_end;
            is_real = true;
        }
        let mut exponent_end = end;
        if let Some(t) = self.src.get(end..) {
            let mut it = t.chars();
            if matches!(it.next(), Some('e' | 'E')) {
                let mut skip = 1;
                let mut next = it.next();
                if matches!(next, Some('+' | '-')) {
                    skip += 1;
                    next = it.next();
                }
                if next.is_some_and(|c| c.is_ascii_digit()) {
                    exponent_end = self.scan_while(end + skip, |c| c.is_ascii_digit());
                }
            }
        }
        let int_digits = self.src.get(start..int_end).unwrap_or("");
        let suffix_end = self.scan_while(exponent_end, is_ident_char);
        let suffix = self.src.get(exponent_end..suffix_end).unwrap_or("");
        if exponent_end == end && !suffix.is_empty() {
            // A unit after the number: a timespan. Digits then letters that are no unit are a
            // name in Kusto (`1st`), but not after a fraction.
            self.pos = suffix_end;
            let span = Span::new(start, suffix_end);
            if let Some(unit) = unit_nanos(suffix) {
                let nanos = scale(int_digits, frac, unit)
                    .ok_or_else(|| KqlError::syntax("timespan out of range", span))?;
                self.push(Tok::TimeSpan(nanos), start);
            } else if !is_real {
                let name = self.src.get(start..suffix_end).unwrap_or("").to_string();
                self.push(Tok::Ident(name), start);
            } else {
                return Err(KqlError::syntax(
                    format!("unknown timespan unit '{suffix}'"),
                    Span::new(exponent_end, suffix_end),
                ));
            }
            return Ok(());
        }
        self.pos = exponent_end;
        self.no_suffix(start)?;
        let text = self.src.get(start..exponent_end).unwrap_or("");
        let span = Span::new(start, exponent_end);
        if is_real || exponent_end != end {
            let value: f64 = text
                .parse()
                .map_err(|_| KqlError::syntax("invalid real number", span))?;
            if !value.is_finite() {
                return Err(KqlError::syntax("real number out of range", span));
            }
            self.push(Tok::Real(value), start);
        } else {
            let value: u64 = text
                .parse()
                .map_err(|_| KqlError::syntax("number out of range", span))?;
            self.push(Tok::Int(value), start);
        }
        Ok(())
    }

    /// Letters straight after a hex number or an exponent make no valid token.
    fn no_suffix(&self, start: usize) -> Result<(), KqlError> {
        let end = self.scan_while(self.pos, is_ident_char);
        if end > self.pos {
            return Err(KqlError::syntax(
                "invalid number literal",
                Span::new(start, end),
            ));
        }
        Ok(())
    }

    fn punct(&mut self, c: char, start: usize) -> Result<(), KqlError> {
        let next = self.peek_at(1);
        let (tok, len) = match (c, next) {
            ('|', _) => (Tok::Pipe, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            ('{', _) => (Tok::LBrace, 1),
            ('}', _) => (Tok::RBrace, 1),
            (',', _) => (Tok::Comma, 1),
            (';', _) => (Tok::Semi, 1),
            ('.', Some('.')) => (Tok::DotDot, 2),
            ('.', _) => (Tok::Dot, 1),
            (':', _) => (Tok::Colon, 1),
            ('=', Some('=')) => (Tok::EqEq, 2),
            ('=', Some('~')) => (Tok::EqTilde, 2),
            ('=', _) => (Tok::Assign, 1),
            ('!', Some('=')) => (Tok::NotEq, 2),
            ('!', Some('~')) => (Tok::BangTilde, 2),
            ('!', _) => (Tok::Bang, 1),
            ('<', Some('=')) => (Tok::Le, 2),
            ('<', Some('>')) => (Tok::NotEq, 2),
            ('<', _) => (Tok::Lt, 1),
            ('>', Some('=')) => (Tok::Ge, 2),
            ('>', _) => (Tok::Gt, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('*', _) => (Tok::Star, 1),
            ('/', _) => (Tok::Slash, 1),
            ('%', _) => (Tok::Percent, 1),
            ('~', _) => (Tok::Tilde, 1),
            _ => {
                return Err(KqlError::syntax(
                    format!("unexpected character '{c}'"),
                    Span::new(start, start + c.len_utf8()),
                ));
            }
        };
        self.pos += len;
        self.push(tok, start);
        Ok(())
    }
}

/// Nanoseconds in one of a timespan unit, by every spelling Kusto accepts.
pub(crate) fn unit_nanos(unit: &str) -> Option<i128> {
    Some(match unit {
        "d" | "day" | "days" => 86_400_000_000_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
        "m" | "min" | "minute" | "minutes" => 60_000_000_000,
        "s" | "sec" | "second" | "seconds" => 1_000_000_000,
        "ms" | "milli" | "millis" | "millisec" | "millisecond" | "milliseconds" => 1_000_000,
        "micro" | "micros" | "microsec" | "microsecond" | "microseconds" => 1_000,
        "nano" | "nanos" | "nanosec" | "nanosecond" | "nanoseconds" => 1,
        "tick" | "ticks" => 100,
        _ => return None,
    })
}

/// `int.frac` units of `unit` nanoseconds, exactly (fractions of a nanosecond are dropped).
pub(crate) fn scale(int: &str, frac: &str, unit: i128) -> Option<i64> {
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    // Digits past the 18th cannot change a result in nanoseconds of at most a day per unit.
    let frac = frac.get(..frac.len().min(18)).unwrap_or("");
    let mut total = whole.checked_mul(unit)?;
    if !frac.is_empty() {
        let digits: i128 = frac.parse().ok()?;
        let denom = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        total = total.checked_add(digits.checked_mul(unit)? / denom)?;
    }
    i64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        match tokenize(src) {
            Ok(t) => t.into_iter().map(|t| t.tok).collect(),
            Err(e) => panic!("{src:?}: {}", e.render(src)),
        }
    }

    fn lex_err(src: &str) -> KqlError {
        match tokenize(src) {
            Ok(t) => panic!("{src:?} lexed: {t:?}"),
            Err(e) => e,
        }
    }

    fn ident(s: &str) -> Tok {
        Tok::Ident(s.to_string())
    }

    fn string(s: &str) -> Tok {
        Tok::Str(s.to_string())
    }

    #[test]
    fn spans_are_byte_ranges() {
        let t = tokenize("T | where x").unwrap();
        let spans: Vec<_> = t.iter().map(|t| (t.span.start, t.span.end)).collect();
        assert_eq!(spans, [(0, 1), (2, 3), (4, 9), (10, 11), (11, 11)]);
    }

    #[test]
    fn comments_and_whitespace_are_skipped() {
        assert_eq!(
            toks("a // comment | b\n\t b // last"),
            [ident("a"), ident("b"), Tok::Eof]
        );
        // `//` inside a string is text.
        assert_eq!(toks(r#""http://x""#), [string("http://x"), Tok::Eof]);
    }

    #[test]
    fn invisible_characters_separate_tokens() {
        assert_eq!(
            toks("\u{FEFF}\u{200B}T\u{200B}| take\u{2060}1"),
            [ident("T"), Tok::Pipe, ident("take"), Tok::Int(1), Tok::Eof]
        );
    }

    #[test]
    fn identifiers() {
        assert_eq!(
            toks("_a b1 $left Été 1st"),
            [
                ident("_a"),
                ident("b1"),
                ident("$left"),
                ident("Été"),
                ident("1st"),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            toks(r#""a\"b\\c\n\t" 'it\'s' "\u0041\x42\101\0""#),
            [
                string("a\"b\\c\n\t"),
                string("it's"),
                string("ABA\0"),
                Tok::Eof
            ]
        );
        assert_eq!(toks(r#"'say "hi"'"#), [string("say \"hi\""), Tok::Eof]);
    }

    #[test]
    fn unknown_escape_is_an_error_at_the_escape() {
        let e = lex_err(r#"x == "a\qb""#);
        assert_eq!(e.span, Some(Span::new(7, 9)));
        assert!(e.message.contains("\\q"), "{}", e.message);
    }

    #[test]
    fn verbatim_strings() {
        assert_eq!(
            toks(r#"@"C:\Windows\" @'it''s' @"say ""hi""""#),
            [
                string(r"C:\Windows\"),
                string("it's"),
                string("say \"hi\""),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn obfuscated_strings() {
        assert_eq!(
            toks(r#"h"secret" H'x' h@"c:\a" h"#),
            [
                string("secret"),
                string("x"),
                string(r"c:\a"),
                ident("h"),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn multi_line_strings() {
        assert_eq!(
            toks("```line 1\nline \"2\"\\``` ~~~a~~~"),
            [string("line 1\nline \"2\"\\"), string("a"), Tok::Eof]
        );
    }

    #[test]
    fn unterminated_strings_point_at_the_opening_quote() {
        let e = lex_err("T | where x == \"abc\n| take 1");
        assert_eq!(e.span, Some(Span::new(15, 19)));
        assert_eq!(e.message, "unterminated string literal");
        let e = lex_err("x @'abc");
        assert_eq!(e.span, Some(Span::new(2, 7)));
        let e = lex_err("x 'abc\\\nd'");
        assert_eq!(e.message, "unterminated string literal");
        assert_eq!(e.span, Some(Span::new(2, 7)));
        let e = lex_err("x ```abc");
        assert_eq!(e.message, "unterminated multi-line string literal");
        assert_eq!(e.span, Some(Span::new(2, 8)));
    }

    #[test]
    fn numbers() {
        assert_eq!(
            toks("42 0x1F 1.5 2. 1e6 2.5E-3 1..5"),
            [
                Tok::Int(42),
                Tok::Int(31),
                Tok::Real(1.5),
                Tok::Real(2.0),
                Tok::Real(1e6),
                Tok::Real(2.5e-3),
                Tok::Int(1),
                Tok::DotDot,
                Tok::Int(5),
                Tok::Eof
            ]
        );
        // Unsigned until the parser sees a minus sign.
        assert_eq!(
            toks("9223372036854775808"),
            [Tok::Int(9_223_372_036_854_775_808), Tok::Eof]
        );
        assert_eq!(
            lex_err("99999999999999999999").message,
            "number out of range"
        );
        assert_eq!(lex_err("0x1G").message, "invalid number literal");
        assert_eq!(lex_err("1e5x").span, Some(Span::new(0, 4)));
    }

    #[test]
    fn timespans() {
        const S: i64 = 1_000_000_000;
        let cases = [
            ("1d", 86_400 * S),
            ("2h", 7_200 * S),
            ("30m", 1_800 * S),
            ("10s", 10 * S),
            ("100ms", 100_000_000),
            ("5min", 300 * S),
            ("1tick", 100),
            ("2microseconds", 2_000),
            ("1.5h", 5_400 * S),
            ("3days", 3 * 86_400 * S),
            ("1hr", 3_600 * S),
            ("7nanos", 7),
            ("0.1s", S / 10),
        ];
        for (src, nanos) in cases {
            assert_eq!(toks(src), [Tok::TimeSpan(nanos), Tok::Eof], "{src}");
        }
        assert_eq!(lex_err("1.5w").message, "unknown timespan unit 'w'");
        assert_eq!(lex_err("99999999999d").message, "timespan out of range");
    }

    #[test]
    fn typed_literals_keep_their_text() {
        assert_eq!(
            toks("datetime(2020-01-01 10:00) guid(a-b) long(null) time(1.2:00) datetime_add("),
            [
                Tok::Typed(TypedKind::DateTime, "2020-01-01 10:00".into()),
                Tok::Typed(TypedKind::Guid, "a-b".into()),
                Tok::Typed(TypedKind::Long, "null".into()),
                Tok::Typed(TypedKind::TimeSpan, "1.2:00".into()),
                ident("datetime_add"),
                Tok::LParen,
                Tok::Eof
            ]
        );
        // With a space the name is a plain identifier (Kusto's rule too).
        assert_eq!(toks("time (")[0], ident("time"));
        let e = lex_err("datetime(2020");
        assert_eq!(e.span, Some(Span::new(0, 13)));
    }

    #[test]
    fn punctuation() {
        assert_eq!(
            toks("| ( ) [ ] { } , ; . .. : = == != <> =~ !~ < <= > >= + - * / % ! ~"),
            [
                Tok::Pipe,
                Tok::LParen,
                Tok::RParen,
                Tok::LBracket,
                Tok::RBracket,
                Tok::LBrace,
                Tok::RBrace,
                Tok::Comma,
                Tok::Semi,
                Tok::Dot,
                Tok::DotDot,
                Tok::Colon,
                Tok::Assign,
                Tok::EqEq,
                Tok::NotEq,
                Tok::NotEq,
                Tok::EqTilde,
                Tok::BangTilde,
                Tok::Lt,
                Tok::Le,
                Tok::Gt,
                Tok::Ge,
                Tok::Plus,
                Tok::Minus,
                Tok::Star,
                Tok::Slash,
                Tok::Percent,
                Tok::Bang,
                Tok::Tilde,
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("!has in~"),
            [Tok::Bang, ident("has"), ident("in"), Tok::Tilde, Tok::Eof]
        );
        let e = lex_err("a # b");
        assert_eq!(e.message, "unexpected character '#'");
        assert_eq!(e.span, Some(Span::new(2, 3)));
        assert_eq!(lex_err("a $ b").span, Some(Span::new(2, 3)));
    }
}
