//! The parser: tokens to the syntax tree of [`crate::ast`], by recursive descent.
//!
//! Expressions use precedence climbing: `or` < `and` < comparisons and string operators <
//! `+ -` < `* / %` < unary `- +` < postfix (`.x`, `[i]`, calls). Where KQL lets a tabular
//! expression stand in for a scalar (function arguments, parentheses, `let` values), the parser
//! reads an expression and, if a `|` follows, turns it into the source of a pipeline.
//!
//! Valid KQL that Rampart does not run (`find`, `top-nested`, `fork`, ...) is parsed all the
//! same, so that its syntax errors are reported as such, and becomes an `Unsupported` node that
//! the planner refuses by name.
//!
//! Hostile input cannot exhaust the stack. Every cycle of recursion passes through one of
//! `expr`, `unary`, `json`, `function`, `tab_atom`, `subquery` or the bodies of `partition
//! { ... }` and of `evaluate` as a source, which count nesting up to [`MAX_NESTING`]; and the
//! height of the tree (which the recursive `Drop`, `Clone` and the
//! planner's walks follow) is capped at [`MAX_HEIGHT`], counting the left-leaning chains like
//! `a + b + c` and `a.b.c` that are built in a loop.

use serde_json::Value;

use crate::ast::*;
use crate::error::{KqlError, nearest};
use crate::lexer::{Tok, Token, TypedKind, scale, tokenize, unit_nanos};

/// How deeply expressions, pipelines and `let` functions may nest. Public hunting queries nest
/// at most 7 levels. At 64 the deepest input takes about 1 MiB of stack in an unoptimised
/// build (15 KiB a level at worst; 6 KiB optimised), so it parses on a 2 MiB thread.
pub(crate) const MAX_NESTING: usize = 64;
/// How tall the syntax tree may grow (nesting plus chained binary and postfix operators), so
/// that the planner's recursive walks stay shallow too. Public hunting queries reach 15.
pub(crate) const MAX_HEIGHT: usize = 512;

type Result<T> = std::result::Result<T, KqlError>;

pub(crate) fn parse_query(src: &str) -> Result<Query> {
    let tokens = tokenize(src)?;
    let end = src.len();
    let mut parser = Parser {
        tokens,
        pos: 0,
        last_end: 0,
        nesting: 0,
        height: 0,
        search_terms: false,
        eof: Token {
            tok: Tok::Eof,
            span: Span::new(end, end),
        },
    };
    parser.query()
}

/// Tabular operators Rampart parses. Some are refused by the planner, named in
/// [`OperatorKind::Unsupported`]: they are parsed so that their syntax is checked.
const OPERATORS: &[&str] = &[
    "where",
    "filter",
    "project",
    "project-away",
    "project-keep",
    "project-rename",
    "project-reorder",
    "extend",
    "summarize",
    "count",
    "take",
    "limit",
    "top",
    "sort",
    "order",
    "distinct",
    "join",
    "lookup",
    "union",
    "mv-expand",
    "mvexpand",
    "parse",
    "evaluate",
    "make-series",
    "render",
    "as",
    "invoke",
    "getschema",
    "serialize",
    "sample",
    "consume",
    "facet",
    "fork",
    "mv-apply",
    "mvapply",
    "parse-kv",
    "parse-where",
    "partition",
    "reduce",
    "sample-distinct",
    "scan",
    "search",
    "top-hitters",
    "top-nested",
];

/// Tabular operators Kusto has that Rampart neither parses nor runs: graph operators and
/// operators without a public grammar.
const UNSUPPORTED_OPERATORS: &[&str] = &[
    "assert-schema",
    "execute-and-cache",
    "extend-smart",
    "graph-mark-components",
    "graph-match",
    "graph-merge",
    "graph-shortest-paths",
    "graph-to-table",
    "macro-expand",
    "make-graph",
    "project-by-names",
    "project-smart",
];

const TYPE_NAMES: &[&str] = &[
    "bool", "boolean", "int", "int32", "long", "int64", "real", "double", "decimal", "string",
    "datetime", "date", "timespan", "time", "dynamic", "guid", "uniqueid",
];

const JOIN_KINDS: &[&str] = &[
    "innerunique",
    "inner",
    "leftouter",
    "rightouter",
    "fullouter",
    "outer",
    "leftsemi",
    "semi",
    "rightsemi",
    "leftanti",
    "anti",
    "leftantisemi",
    "rightanti",
    "rightantisemi",
];

// Binding strength of binary operators; higher binds tighter.
const OR: u8 = 1;
const AND: u8 = 2;
const CMP: u8 = 3;
const ADD: u8 = 4;
const MUL: u8 = 5;

/// A tabular or a scalar expression, where KQL allows either.
enum TabOrExpr {
    /// Boxed: a pipeline is four times the size of an expression, and these are returned
    /// through every level of recursion.
    Tab(Box<TabExpr>),
    Expr(Expr),
}

/// A binary operator as recognised ahead of its right operand.
#[derive(Clone, Copy)]
enum BinForm {
    Op(BinaryOp),
    Str(StrOp),
    Between { negated: bool },
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// End of the last token consumed: where spans of finished nodes end.
    last_end: usize,
    nesting: usize,
    height: usize,
    /// Inside the predicate of `search`, where `Column : "term"` is a binary operator.
    search_terms: bool,
    /// Returned by lookahead past the end (the token list always ends with `Eof` too).
    eof: Token,
}

fn describe(tok: &Tok) -> String {
    let s = match tok {
        Tok::Ident(name) => return format!("'{name}'"),
        Tok::Str(_) => "a string",
        Tok::Int(_) | Tok::Real(_) => "a number",
        Tok::TimeSpan(_) => "a timespan",
        Tok::Typed(..) => "a literal",
        Tok::Pipe => "'|'",
        Tok::LParen => "'('",
        Tok::RParen => "')'",
        Tok::LBracket => "'['",
        Tok::RBracket => "']'",
        Tok::LBrace => "'{'",
        Tok::RBrace => "'}'",
        Tok::Comma => "','",
        Tok::Semi => "';'",
        Tok::Dot => "'.'",
        Tok::DotDot => "'..'",
        Tok::Colon => "':'",
        Tok::Assign => "'='",
        Tok::EqEq => "'=='",
        Tok::NotEq => "'!='",
        Tok::EqTilde => "'=~'",
        Tok::BangTilde => "'!~'",
        Tok::Lt => "'<'",
        Tok::Le => "'<='",
        Tok::Gt => "'>'",
        Tok::Ge => "'>='",
        Tok::Plus => "'+'",
        Tok::Minus => "'-'",
        Tok::Star => "'*'",
        Tok::Slash => "'/'",
        Tok::Percent => "'%'",
        Tok::Bang => "'!'",
        Tok::Tilde => "'~'",
        Tok::Eof => "the end of the query",
    };
    s.to_string()
}

/// A string operator by name: its kind, case sensitivity, and whether the name negates it.
fn str_op(name: &str) -> Option<(StrOpKind, bool, bool)> {
    use StrOpKind::*;
    Some(match name {
        "has" => (Has, false, false),
        "has_cs" => (Has, true, false),
        "hasprefix" => (HasPrefix, false, false),
        "hasprefix_cs" => (HasPrefix, true, false),
        "hassuffix" => (HasSuffix, false, false),
        "hassuffix_cs" => (HasSuffix, true, false),
        "contains" => (Contains, false, false),
        "contains_cs" => (Contains, true, false),
        "notcontains" => (Contains, false, true),
        "notcontainscs" => (Contains, true, true),
        "startswith" => (StartsWith, false, false),
        "startswith_cs" => (StartsWith, true, false),
        "endswith" => (EndsWith, false, false),
        "endswith_cs" => (EndsWith, true, false),
        "in" => (In, true, false),
        "has_any" => (HasAny, false, false),
        "has_all" => (HasAll, false, false),
        _ => return None,
    })
}

/// Operators that take a `!` prefix (`!in~` and `!between` are handled with `in~`/`between`).
const NEGATABLE: &[&str] = &[
    "has",
    "has_cs",
    "hasprefix",
    "hasprefix_cs",
    "hassuffix",
    "hassuffix_cs",
    "contains",
    "contains_cs",
    "startswith",
    "startswith_cs",
    "endswith",
    "endswith_cs",
    "in",
    "between",
];

impl Parser {
    // ----- tokens -----

    fn token(&self, n: usize) -> &Token {
        self.tokens.get(self.pos + n).unwrap_or(&self.eof)
    }

    fn tok(&self) -> &Tok {
        &self.token(0).tok
    }

    fn peek(&self, n: usize) -> &Tok {
        &self.token(n).tok
    }

    fn span(&self) -> Span {
        self.token(0).span
    }

    /// Takes the current token (never moving past `Eof`).
    fn bump(&mut self) -> Token {
        let Some(slot) = self.tokens.get_mut(self.pos) else {
            return self.eof.clone();
        };
        if slot.tok == Tok::Eof {
            return slot.clone();
        }
        let span = slot.span;
        let token = std::mem::replace(
            slot,
            Token {
                tok: Tok::Eof,
                span,
            },
        );
        self.pos += 1;
        self.last_end = span.end;
        token
    }

    fn at(&self, tok: &Tok) -> bool {
        self.tok() == tok
    }

    fn at_ident(&self, word: &str) -> bool {
        matches!(self.tok(), Tok::Ident(s) if s == word)
    }

    fn peek_is_ident(&self, n: usize, word: &str) -> bool {
        matches!(self.peek(n), Tok::Ident(s) if s == word)
    }

    /// Whether the tokens at `n` and `n + 1` touch (no space or comment between).
    fn adjacent(&self, n: usize) -> bool {
        self.token(n).span.end == self.token(n + 1).span.start
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let found = self.at(tok);
        if found {
            self.bump();
        }
        found
    }

    fn eat_ident(&mut self, word: &str) -> bool {
        let found = self.at_ident(word);
        if found {
            self.bump();
        }
        found
    }

    fn expected(&self, what: &str) -> KqlError {
        KqlError::syntax(
            format!("expected {what}, found {}", describe(self.tok())),
            self.span(),
        )
    }

    fn expect(&mut self, tok: &Tok) -> Result<Span> {
        if self.at(tok) {
            Ok(self.bump().span)
        } else {
            Err(self.expected(&describe(tok)))
        }
    }

    fn expect_ident(&mut self, word: &str) -> Result<Span> {
        if self.at_ident(word) {
            Ok(self.bump().span)
        } else {
            Err(self.expected(&format!("'{word}'")))
        }
    }

    /// `name = ...` ahead: an option like `kind=inner`.
    fn at_option(&self, name: &str) -> bool {
        self.at_ident(name) && self.peek(1) == &Tok::Assign
    }

    /// Where an operator's arguments end: the next `|`, or the end of the enclosing construct.
    fn at_op_end(&self) -> bool {
        matches!(
            self.tok(),
            Tok::Pipe | Tok::Semi | Tok::RParen | Tok::RBrace | Tok::Comma | Tok::Eof
        )
    }

    // ----- depth limits -----

    fn too_deep(&self) -> KqlError {
        KqlError::unsupported(
            format!(
                "the query is nested too deeply (Rampart parses at most {MAX_NESTING} levels of nested expressions and chains of at most {MAX_HEIGHT} operators)"
            ),
            self.span(),
        )
    }

    /// One nesting level deeper; [`Self::leave`] undoes it. An error ends the whole parse, so
    /// returning one without leaving does no harm.
    fn enter(&mut self) -> Result<()> {
        if self.nesting >= MAX_NESTING || self.height >= MAX_HEIGHT {
            return Err(self.too_deep());
        }
        self.nesting += 1;
        self.height += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
        self.height = self.height.saturating_sub(1);
    }

    /// One more node on a left-leaning chain; the caller gives the height back when done.
    fn grow(&mut self) -> Result<()> {
        if self.height >= MAX_HEIGHT {
            return Err(self.too_deep());
        }
        self.height += 1;
        Ok(())
    }

    // ----- statements -----

    fn query(&mut self) -> Result<Query> {
        let mut lets = Vec::new();
        let mut body = None;
        loop {
            while self.eat(&Tok::Semi) {}
            if self.at(&Tok::Eof) {
                break;
            }
            if body.is_some() {
                return Err(KqlError::unsupported(
                    "statements after the query's tabular expression (a batch of several results) are not supported",
                    self.span(),
                ));
            }
            self.refuse_statement()?;
            if self.at_ident("let") {
                lets.push(self.let_stmt()?);
            } else if self.at_ident("set") && matches!(self.peek(1), Tok::Ident(_)) {
                self.set_stmt();
            } else {
                body = Some(self.body()?);
            }
            if !self.at(&Tok::Semi) && !self.at(&Tok::Eof) {
                return Err(self.expected("';' or the end of the query"));
            }
        }
        Ok(Query { lets, body })
    }

    /// Statements Kusto has that Rampart does not run.
    fn refuse_statement(&self) -> Result<()> {
        let what = match self.tok() {
            Tok::Dot => "control commands ('.show', ...) are not supported",
            Tok::Ident(w) if w == "declare" && self.peek_is_ident(1, "query_parameters") => {
                "'declare query_parameters' is not supported: write the values into the query with 'let'"
            }
            Tok::Ident(w) if w == "declare" && self.peek_is_ident(1, "pattern") => {
                "'declare pattern' is not supported"
            }
            Tok::Ident(w) if w == "alias" && self.peek_is_ident(1, "database") => {
                "'alias database' is not supported"
            }
            Tok::Ident(w) if w == "restrict" && self.peek_is_ident(1, "access") => {
                "'restrict access' is not supported"
            }
            _ => return Ok(()),
        };
        Err(KqlError::unsupported(what, self.span()))
    }

    /// `set option [= value];`: query options tune execution, not results, so they are skipped.
    fn set_stmt(&mut self) {
        while !self.at(&Tok::Semi) && !self.at(&Tok::Eof) {
            self.bump();
        }
    }

    fn let_stmt(&mut self) -> Result<Let> {
        self.expect_ident("let")?;
        let name = self.name()?;
        self.expect(&Tok::Assign)?;
        let value = if self.function_ahead() {
            LetValue::Function(self.function()?)
        } else {
            match self.tab_or_expr()? {
                TabOrExpr::Tab(t) => LetValue::Tabular(*t),
                TabOrExpr::Expr(Expr {
                    kind: ExprKind::Tabular(t),
                    ..
                }) => LetValue::Tabular(*t),
                TabOrExpr::Expr(e) => LetValue::Expr(e),
            }
        };
        Ok(Let { name, value })
    }

    /// `(params) {` or `view (params) {` ahead.
    fn function_ahead(&self) -> bool {
        let open = if self.at_ident("view") && self.peek(1) == &Tok::LParen {
            1
        } else if self.at(&Tok::LParen) {
            0
        } else {
            return false;
        };
        let mut depth = 0usize;
        let mut n = open;
        loop {
            match self.peek(n) {
                Tok::LParen => depth += 1,
                Tok::RParen => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return self.peek(n + 1) == &Tok::LBrace;
                    }
                }
                Tok::Eof => return false,
                _ => {}
            }
            n += 1;
        }
    }

    fn function(&mut self) -> Result<Function> {
        self.enter()?;
        let p = self;
        let start = p.span().start;
        p.eat_ident("view");
        p.expect(&Tok::LParen)?;
        let mut params = Vec::new();
        if !p.at(&Tok::RParen) {
            loop {
                params.push(p.param()?);
                if !p.eat(&Tok::Comma) {
                    break;
                }
            }
        }
        p.expect(&Tok::RParen)?;
        let open = p.expect(&Tok::LBrace)?;
        let mut lets = Vec::new();
        let mut result = None;
        loop {
            while p.eat(&Tok::Semi) {}
            if p.at(&Tok::RBrace) {
                break;
            }
            if result.is_some() {
                return Err(p.expected("'}' (a function body ends with its one result)"));
            }
            if p.at_ident("let") {
                lets.push(p.let_stmt()?);
            } else {
                result = Some(p.tab_or_expr()?);
            }
            if !p.at(&Tok::Semi) && !p.at(&Tok::RBrace) {
                return Err(p.expected("';' or '}'"));
            }
        }
        let close = p.expect(&Tok::RBrace)?;
        let body = match result {
            Some(TabOrExpr::Tab(t)) => LetBody::Tabular(*t),
            Some(TabOrExpr::Expr(Expr {
                kind: ExprKind::Tabular(t),
                ..
            })) => LetBody::Tabular(*t),
            Some(TabOrExpr::Expr(e)) => LetBody::Expr(e),
            None => {
                return Err(KqlError::syntax(
                    "a function body needs a result after its 'let's",
                    open.to(close),
                ));
            }
        };
        p.leave();
        Ok(Function {
            params,
            lets,
            body,
            span: Span::new(start, p.last_end),
        })
    }

    /// `name [: type | : (*) | : (col: type, ...)] [= default]`
    fn param(&mut self) -> Result<Param> {
        let name = self.name()?;
        let kind = if self.eat(&Tok::Colon) {
            if self.at(&Tok::LParen) {
                self.skip_parens()?;
                ParamKind::Tabular
            } else {
                ParamKind::Scalar(Some(self.type_name()?))
            }
        } else {
            ParamKind::Scalar(None)
        };
        let default = if self.eat(&Tok::Assign) {
            Some(self.expr()?)
        } else {
            None
        };
        Ok(Param {
            name,
            kind,
            default,
        })
    }

    /// Skips a balanced `( ... )` whose contents do not matter (a tabular parameter's schema,
    /// `render`'s presentation properties).
    fn skip_parens(&mut self) -> Result<()> {
        let open = self.expect(&Tok::LParen)?;
        let mut depth = 1usize;
        while depth > 0 {
            match self.bump().tok {
                Tok::LParen => depth += 1,
                Tok::RParen => depth -= 1,
                Tok::Eof => return Err(KqlError::syntax("this '(' is never closed", open)),
                _ => {}
            }
        }
        Ok(())
    }

    fn type_name(&mut self) -> Result<TypeName> {
        let span = self.span();
        let Tok::Ident(name) = self.tok() else {
            return Err(self.expected("a type name"));
        };
        match TypeName::from_name(name) {
            Some(t) => {
                self.bump();
                Ok(t)
            }
            None => Err(KqlError::syntax(format!("unknown type '{name}'"), span)
                .with_suggestion(nearest(name, TYPE_NAMES.iter().copied()))),
        }
    }

    /// The query's tabular expression.
    fn body(&mut self) -> Result<TabExpr> {
        match self.tab_or_expr()? {
            TabOrExpr::Tab(t) => Ok(*t),
            TabOrExpr::Expr(e) => expr_to_tab(e),
        }
    }

    // ----- tabular expressions -----

    /// A pipeline, or a scalar expression where one may stand (`let` values, arguments,
    /// parentheses).
    fn tab_or_expr(&mut self) -> Result<TabOrExpr> {
        let start = self.span().start;
        let source = match self.tabular_source()? {
            Some(source) => source,
            None => {
                let e = self.expr()?;
                if !self.at(&Tok::Pipe) {
                    return Ok(TabOrExpr::Expr(e));
                }
                expr_to_source(e)?
            }
        };
        let ops = self.ops()?;
        Ok(TabOrExpr::Tab(Box::new(TabExpr {
            source,
            ops,
            span: Span::new(start, self.last_end),
        })))
    }

    /// A source that only a tabular expression can start with (`union`, `datatable`, ...).
    fn tabular_source(&mut self) -> Result<Option<Source>> {
        let Tok::Ident(word) = self.tok() else {
            return Ok(None);
        };
        let word = word.clone();
        let span = self.span();
        let next = self.peek(1);
        let next_is_name = matches!(next, Tok::Ident(_));
        let next_is_paren = next == &Tok::LParen;
        // `find`/`search` followed by what can only continue an expression are names.
        let next_ends_name = matches!(
            next,
            Tok::Pipe
                | Tok::RParen
                | Tok::RBrace
                | Tok::Comma
                | Tok::Semi
                | Tok::Eof
                | Tok::Dot
                | Tok::LBracket
                | Tok::LParen
        );
        let refused = match word.as_str() {
            "union" => {
                self.bump();
                return Ok(Some(Source::Union(self.union_body(span.start)?)));
            }
            "datatable" if next_is_paren => return self.datatable().map(Some),
            "range" if next_is_name && self.peek_is_ident(2, "from") => {
                return self.range().map(Some);
            }
            "print" => {
                self.bump();
                return Ok(Some(Source::Print(self.named_list()?)));
            }
            "externaldata" | "external_data" if next_is_paren => {
                self.bump();
                self.externaldata()?;
                "externaldata"
            }
            "find" if !next_ends_name => {
                self.bump();
                self.find()?;
                "find"
            }
            "search" if !next_ends_name => {
                self.bump();
                self.search(true)?;
                "search"
            }
            "evaluate" if next_is_name => {
                self.bump();
                self.hints()?;
                self.plain_name("a plugin name")?;
                // Arguments may hold pipelines that start with `evaluate` again.
                self.enter()?;
                self.args()?;
                self.leave();
                "evaluate (as a source)"
            }
            _ => return Ok(None),
        };
        Ok(Some(Source::Unsupported(Ident {
            name: refused.to_string(),
            span,
        })))
    }

    /// After `externaldata`: `(Column: type, ...) ["uri", ...] [with (property = value, ...)]`.
    fn externaldata(&mut self) -> Result<()> {
        self.columns()?;
        self.expect(&Tok::LBracket)?;
        loop {
            if !matches!(self.tok(), Tok::Str(_)) {
                return Err(self.expected("a string (where the data is)"));
            }
            self.strings();
            // A trailing comma is allowed.
            if !self.eat(&Tok::Comma) || self.at(&Tok::RBracket) {
                break;
            }
        }
        self.expect(&Tok::RBracket)?;
        if self.eat_ident("with") {
            self.paren_properties()?;
        }
        Ok(())
    }

    /// After `find`: `[withsource = Column] [in (Table, ...)] where Predicate` (`where` may be
    /// left out when nothing precedes it), then `project-smart` or
    /// `project Column[: type], ... [, pack_all()]`.
    fn find(&mut self) -> Result<()> {
        let mut needs_where = false;
        if self.at_option("withsource") || self.at_option("with_source") {
            self.bump();
            self.bump();
            self.name()?;
            needs_where = true;
        }
        if self.at_ident("in") && self.peek(1) == &Tok::LParen {
            self.bump();
            self.tables()?;
            needs_where = true;
        }
        if needs_where {
            self.expect_ident("where")?;
        } else {
            self.eat_ident("where");
        }
        self.expr()?;
        match self.op_name_ahead(0) {
            Some((clause, _)) if clause == "project-smart" => {
                self.op_name()?;
            }
            Some((clause, _)) if clause == "project" => {
                self.bump();
                loop {
                    if self.at_ident("pack_all") && self.peek(1) == &Tok::LParen {
                        self.bump();
                        self.bump();
                        self.expect(&Tok::RParen)?;
                    } else {
                        self.name()?;
                        if self.eat(&Tok::Colon) {
                            self.type_name()?;
                        }
                    }
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After `search`: `[kind = CaseSensitivity] [in (Table, ...)] Predicate`. The tables are
    /// only for a query that starts with `search`: after `|`, the input is what is searched.
    fn search(&mut self, starts_query: bool) -> Result<()> {
        loop {
            if self.at_option("kind") {
                self.bump();
                self.bump();
                let value = self.option_value()?;
                const KINDS: [&str; 3] = ["default", "case_insensitive", "case_sensitive"];
                if !KINDS.contains(&value.name.as_str()) {
                    return Err(KqlError::syntax(
                        format!("unknown search kind '{}'", value.name),
                        value.span,
                    )
                    .with_suggestion(nearest(&value.name, KINDS)));
                }
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        if self.at_ident("in") && self.peek(1) == &Tok::LParen {
            if !starts_query {
                return Err(KqlError::syntax(
                    "'search in (...)' names the tables to search, so it can only start a query",
                    self.span(),
                ));
            }
            self.bump();
            self.tables()?;
        }
        let outer = std::mem::replace(&mut self.search_terms, true);
        let predicate = self.expr();
        self.search_terms = outer;
        predicate.map(drop)
    }

    /// `(Table, ...)` after `find in` and `search in`: names with `*` wildcards, calls and
    /// parenthesised queries, as `union` takes them.
    fn tables(&mut self) -> Result<()> {
        self.expect(&Tok::LParen)?;
        loop {
            self.union_table()?;
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        if !self.at(&Tok::RParen) {
            return Err(self.expected("',' or ')'"));
        }
        self.bump();
        Ok(())
    }

    fn ops(&mut self) -> Result<Vec<Operator>> {
        let mut ops = Vec::new();
        while self.eat(&Tok::Pipe) {
            ops.push(self.operator()?);
        }
        Ok(ops)
    }

    /// The operator name `n` tokens ahead, with its hyphenated parts joined (`project-away`,
    /// `mv-expand`), and how many tokens spell it.
    fn op_name_ahead(&self, n: usize) -> Option<(String, usize)> {
        let Tok::Ident(first) = self.peek(n) else {
            return None;
        };
        if first.starts_with('$') {
            return None;
        }
        let mut name = first.clone();
        let mut len = 1;
        while self.peek(n + len) == &Tok::Minus
            && self.adjacent(n + len - 1)
            && self.adjacent(n + len)
        {
            let Tok::Ident(part) = self.peek(n + len + 1) else {
                break;
            };
            name.push('-');
            name.push_str(part);
            len += 2;
        }
        Some((name, len))
    }

    /// An operator name (see [`Self::op_name_ahead`]).
    fn op_name(&mut self) -> Result<Ident> {
        let Some((name, len)) = self.op_name_ahead(0) else {
            return Err(self.expected("an operator after '|'"));
        };
        let mut span = self.span();
        for _ in 0..len {
            span = span.to(self.bump().span);
        }
        Ok(Ident { name, span })
    }

    fn operator(&mut self) -> Result<Operator> {
        let name = self.op_name()?;
        let kind = match name.name.as_str() {
            "where" | "filter" => OperatorKind::Where(self.expr()?),
            "project" => OperatorKind::Project(self.named_list()?),
            "project-away" => OperatorKind::ProjectAway(self.patterns(false)?),
            "project-keep" => OperatorKind::ProjectKeep(self.patterns(false)?),
            "project-reorder" => OperatorKind::ProjectReorder(self.patterns(true)?),
            "project-rename" => OperatorKind::ProjectRename(self.renames()?),
            "extend" => OperatorKind::Extend(self.named_list()?),
            "summarize" => self.summarize()?,
            "count" => OperatorKind::Count,
            "take" | "limit" => {
                self.hints()?;
                OperatorKind::Take(self.expr()?)
            }
            "top" => self.top()?,
            "sort" | "order" => {
                self.hints()?;
                self.expect_ident("by")?;
                OperatorKind::Sort(self.sort_keys()?)
            }
            "distinct" => self.distinct()?,
            "join" => self.join()?,
            "lookup" => self.lookup()?,
            "union" => OperatorKind::Union(self.union_body(name.span.start)?),
            "mv-expand" | "mvexpand" => self.mv_expand()?,
            "parse" => self.parse_op()?,
            "evaluate" => {
                self.hints()?;
                let plugin = self.plain_name("a plugin name")?;
                let args = self.args()?;
                OperatorKind::Evaluate { plugin, args }
            }
            "make-series" => self.make_series()?,
            "render" => self.render()?,
            "as" => {
                self.hints()?;
                OperatorKind::As(self.name()?)
            }
            "invoke" => {
                let function = self.plain_name("a function name")?;
                let args = self.args()?;
                OperatorKind::Invoke { function, args }
            }
            "getschema" => OperatorKind::GetSchema,
            "serialize" => OperatorKind::Serialize(if self.at_op_end() {
                Vec::new()
            } else {
                self.named_list()?
            }),
            "sample" => OperatorKind::Sample(self.expr()?),
            other => {
                let Some(arguments) = refused_operator(other) else {
                    return Err(not_an_operator(&name));
                };
                arguments(self)?;
                OperatorKind::Unsupported(name.clone())
            }
        };
        // The operator must end where a pipeline's next `|` could follow.
        if self.at(&Tok::Assign) {
            return Err(KqlError::syntax(
                "unexpected '=': comparisons are written '=='",
                self.span(),
            )
            .with_suggestion(Some("==".into())));
        }
        if !self.at_op_end() {
            return Err(KqlError::syntax(
                format!(
                    "unexpected {} after the operator's arguments; expected '|' or the end of the query",
                    describe(self.tok())
                ),
                self.span(),
            ));
        }
        Ok(Operator {
            kind,
            span: Span::new(name.span.start, self.last_end),
        })
    }

    /// After `consume`: `[decodeblocks = bool]`.
    fn consume(&mut self) -> Result<()> {
        if self.at_option("decodeblocks") {
            self.bump();
            self.bump();
            self.option_value()?;
        }
        Ok(())
    }

    /// After `parse-kv`: `Expr as (Key: type, ...) with (property = value, ...)`.
    fn parse_kv(&mut self) -> Result<()> {
        self.expr()?;
        self.expect_ident("as")?;
        self.columns()?;
        self.expect_ident("with")?;
        self.paren_properties()
    }

    /// After `sample-distinct`: `[hints] N of Column`.
    fn sample_distinct(&mut self) -> Result<()> {
        self.hints()?;
        self.expr()?;
        self.expect_ident("of")?;
        self.expr()?;
        Ok(())
    }

    /// After `top-hitters`: `N of Expr [by Expr]`.
    fn top_hitters(&mut self) -> Result<()> {
        self.expr()?;
        self.expect_ident("of")?;
        self.named_expr()?;
        if self.eat_ident("by") {
            self.named_expr()?;
        }
        Ok(())
    }

    /// After `top-nested`: `[N] of [Name =] Expr [with others = Value] by [Name =] Aggregation
    /// [asc | desc]`, then more levels, each after `, top-nested`.
    fn top_nested(&mut self) -> Result<()> {
        loop {
            if !self.at_ident("of") {
                self.expr()?;
            }
            self.expect_ident("of")?;
            self.named_expr()?;
            if self.at_ident("with") && self.peek_is_ident(1, "others") {
                self.bump();
                self.bump();
                self.expect(&Tok::Assign)?;
                self.expr()?;
            }
            self.expect_ident("by")?;
            self.named_expr()?;
            self.sort_order()?;
            // A comma followed by anything else ends the operator (as in `f(T | top-nested
            // ..., x)`).
            let more = self.at(&Tok::Comma)
                && self
                    .op_name_ahead(1)
                    .is_some_and(|(next, _)| next == "top-nested");
            if !more {
                return Ok(());
            }
            self.bump();
            self.op_name()?;
        }
    }

    /// After `partition`: `[hints] by Column ( operators )`, or `{ query }` whose rows come from
    /// a source of its own.
    fn partition(&mut self) -> Result<()> {
        self.hints()?;
        self.expect_ident("by")?;
        self.name()?;
        if !self.at(&Tok::LBrace) {
            return self.subquery("'(' or '{'");
        }
        self.enter()?;
        self.bump();
        self.body()?;
        self.expect(&Tok::RBrace)?;
        self.leave();
        Ok(())
    }

    /// After `fork`: one or more `[Name =] ( operators )`.
    fn fork(&mut self) -> Result<()> {
        loop {
            if self.at_name() && self.name_then_assign() {
                self.name()?;
                self.bump();
            }
            self.subquery("'('")?;
            let another_leg = self.at(&Tok::LParen) || (self.at_name() && self.name_then_assign());
            if !another_leg {
                return Ok(());
            }
        }
    }

    /// After `facet`: `by Column, ... [with ( operators )]`.
    fn facet(&mut self) -> Result<()> {
        self.expect_ident("by")?;
        loop {
            self.name()?;
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        if self.eat_ident("with") {
            self.subquery("'('")?;
        }
        Ok(())
    }

    /// After `mv-apply`: `[with_itemindex = Name] Item, ... [limit N] on ( operators )`, items
    /// as `mv-expand` takes them.
    fn mv_apply(&mut self) -> Result<()> {
        loop {
            if self.at_option("with_itemindex") {
                self.bump();
                self.bump();
                self.name()?;
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        self.mv_items()?;
        if self.eat_ident("limit") {
            self.expr()?;
        }
        self.expect_ident("on")?;
        self.subquery("'('")
    }

    /// After `reduce`: `[kind = source] by Expr [with property = value, ...]`.
    fn reduce(&mut self) -> Result<()> {
        if self.at_option("kind") {
            self.bump();
            self.bump();
            let value = self.option_value()?;
            if value.name != "source" {
                return Err(KqlError::syntax(
                    format!("unknown reduce kind '{}'", value.name),
                    value.span,
                )
                .with_suggestion(nearest(&value.name, ["source"])));
            }
        }
        self.expect_ident("by")?;
        self.expr()?;
        if self.eat_ident("with") {
            self.properties()?;
        }
        Ok(())
    }

    /// After `scan`: `[with_match_id = Name] [order by ...] [partition by ...]
    /// [declare (Column: type [= default], ...)] with ( step ... )`.
    fn scan(&mut self) -> Result<()> {
        loop {
            if self.at_option("with_match_id") {
                self.bump();
                self.bump();
                self.name()?;
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        if self.eat_ident("order") {
            self.expect_ident("by")?;
            self.sort_keys()?;
        }
        if self.eat_ident("partition") {
            self.expect_ident("by")?;
            loop {
                self.expr()?;
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
        }
        if self.eat_ident("declare") {
            self.expect(&Tok::LParen)?;
            loop {
                self.name()?;
                self.expect(&Tok::Colon)?;
                self.type_name()?;
                if self.eat(&Tok::Assign) {
                    self.expr()?;
                }
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(&Tok::RParen)?;
        }
        self.expect_ident("with")?;
        self.expect(&Tok::LParen)?;
        loop {
            self.scan_step()?;
            if !self.at_ident("step") {
                break;
            }
        }
        self.expect(&Tok::RParen)?;
        Ok(())
    }

    /// `step Name [output = all | last | none] : Condition [=> Column = Value, ...] ;`
    fn scan_step(&mut self) -> Result<()> {
        self.expect_ident("step")?;
        self.name()?;
        if self.at_option("output") {
            self.bump();
            self.bump();
            let value = self.option_value()?;
            const OUTPUTS: [&str; 3] = ["all", "last", "none"];
            if !OUTPUTS.contains(&value.name.as_str()) {
                return Err(KqlError::syntax(
                    format!("unknown step output '{}'", value.name),
                    value.span,
                )
                .with_suggestion(nearest(&value.name, OUTPUTS)));
            }
        }
        self.expect(&Tok::Colon)?;
        self.expr()?;
        // `=>` is lexed as `=` and `>`.
        if self.at(&Tok::Assign) && self.peek(1) == &Tok::Gt && self.adjacent(0) {
            self.bump();
            self.bump();
            loop {
                self.name()?;
                self.expect(&Tok::Assign)?;
                self.expr()?;
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
        }
        self.expect(&Tok::Semi)?;
        Ok(())
    }

    /// `( operator | operator ... )`: a pipeline whose rows come from the operator around it
    /// (`fork`, `partition`, `facet`, `mv-apply`). `open` describes what may start it.
    fn subquery(&mut self, open: &str) -> Result<()> {
        self.enter()?;
        if !self.at(&Tok::LParen) {
            return Err(self.expected(open));
        }
        self.bump();
        if self.op_name_ahead(0).is_none() {
            return Err(self.expected("an operator"));
        }
        self.operator()?;
        self.ops()?;
        self.expect(&Tok::RParen)?;
        self.leave();
        Ok(())
    }

    /// `( property = value, ... )`, possibly empty: options of `externaldata` and `parse-kv`.
    fn paren_properties(&mut self) -> Result<()> {
        self.expect(&Tok::LParen)?;
        if !self.at(&Tok::RParen) {
            self.properties()?;
        }
        self.expect(&Tok::RParen)?;
        Ok(())
    }

    /// `property = value, ...`
    fn properties(&mut self) -> Result<()> {
        loop {
            self.plain_name("a property name")?;
            self.expect(&Tok::Assign)?;
            self.expr()?;
            if !self.eat(&Tok::Comma) {
                return Ok(());
            }
        }
    }

    /// `hint.name = value` options: they steer Kusto's distribution strategy, not results.
    fn hints(&mut self) -> Result<()> {
        while self.at_ident("hint") && self.peek(1) == &Tok::Dot {
            self.bump();
            self.bump();
            self.plain_name("a hint name")?;
            self.expect(&Tok::Assign)?;
            self.option_value()?;
        }
        Ok(())
    }

    /// The value of `name = value` options: a word, a number or a string.
    fn option_value(&mut self) -> Result<Ident> {
        let span = self.span();
        let text = match self.tok() {
            Tok::Ident(s) => s.clone(),
            Tok::Str(s) => s.clone(),
            Tok::Int(n) => n.to_string(),
            _ => return Err(self.expected("an option value")),
        };
        self.bump();
        Ok(Ident { name: text, span })
    }

    fn summarize(&mut self) -> Result<OperatorKind> {
        self.hints()?;
        let aggs = if self.at_ident("by") || self.at_op_end() {
            Vec::new()
        } else {
            self.named_list()?
        };
        let by = if self.eat_ident("by") {
            self.named_list()?
        } else {
            Vec::new()
        };
        Ok(OperatorKind::Summarize { aggs, by })
    }

    fn top(&mut self) -> Result<OperatorKind> {
        self.hints()?;
        let n = self.expr()?;
        self.expect_ident("by")?;
        let by = self.sort_keys()?;
        Ok(OperatorKind::Top { n, by })
    }

    fn sort_keys(&mut self) -> Result<Vec<SortKey>> {
        let mut keys = Vec::new();
        loop {
            let expr = self.expr()?;
            let (ascending, nulls_first) = self.sort_order()?;
            keys.push(SortKey {
                expr,
                ascending,
                nulls_first,
            });
            if !self.eat(&Tok::Comma) {
                return Ok(keys);
            }
        }
    }

    /// `[asc | desc] [nulls first | nulls last]` after a sort key: whether ascending (Kusto's
    /// default is descending) and whether nulls come first (`None`: Kusto's default).
    fn sort_order(&mut self) -> Result<(bool, Option<bool>)> {
        let ascending = if self.eat_ident("asc") {
            true
        } else {
            self.eat_ident("desc");
            false
        };
        let nulls_first = if self.eat_ident("nulls") {
            if self.eat_ident("first") {
                Some(true)
            } else if self.eat_ident("last") {
                Some(false)
            } else {
                return Err(self.expected("'first' or 'last'"));
            }
        } else {
            None
        };
        Ok((ascending, nulls_first))
    }

    fn distinct(&mut self) -> Result<OperatorKind> {
        self.hints()?;
        if self.eat(&Tok::Star) {
            return Ok(OperatorKind::Distinct {
                all: true,
                columns: Vec::new(),
            });
        }
        let mut columns = Vec::new();
        loop {
            columns.push(self.expr()?);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        Ok(OperatorKind::Distinct {
            all: false,
            columns,
        })
    }

    fn join(&mut self) -> Result<OperatorKind> {
        let mut kind = JoinKind::InnerUnique;
        loop {
            if self.at_option("kind") {
                self.bump();
                self.bump();
                let value = self.option_value()?;
                kind = JoinKind::from_name(&value.name).ok_or_else(|| {
                    KqlError::syntax(format!("unknown join kind '{}'", value.name), value.span)
                        .with_suggestion(nearest(&value.name, JOIN_KINDS.iter().copied()))
                })?;
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        let right = Box::new(self.tab_atom()?);
        let on = self.join_on()?;
        Ok(OperatorKind::Join { kind, right, on })
    }

    fn lookup(&mut self) -> Result<OperatorKind> {
        let mut inner = false;
        loop {
            if self.at_option("kind") {
                self.bump();
                self.bump();
                let value = self.option_value()?;
                inner = match value.name.as_str() {
                    "inner" => true,
                    "leftouter" => false,
                    other => {
                        return Err(KqlError::syntax(
                            format!("unknown lookup kind '{other}'"),
                            value.span,
                        )
                        .with_suggestion(nearest(other, ["inner", "leftouter"])));
                    }
                };
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        let right = Box::new(self.tab_atom()?);
        let on = self.join_on()?;
        Ok(OperatorKind::Lookup { inner, right, on })
    }

    /// The right side of `join`/`lookup`: a name, a call, or a parenthesised pipeline.
    fn tab_atom(&mut self) -> Result<TabExpr> {
        self.enter()?;
        let start = self.span().start;
        let tab = if self.eat(&Tok::LParen) {
            let inner = self.tab_or_expr()?;
            let close = self.expect(&Tok::RParen)?;
            let mut tab = match inner {
                TabOrExpr::Tab(t) => *t,
                TabOrExpr::Expr(e) => expr_to_tab(e)?,
            };
            tab.span = Span::new(start, close.end);
            tab
        } else {
            if !self.at_name() {
                return Err(self.expected("a table name or a parenthesised query"));
            }
            let name = self.name()?;
            let source = if self.at(&Tok::LParen) {
                Source::Call {
                    name,
                    args: self.args()?,
                }
            } else {
                Source::Name(name)
            };
            TabExpr {
                source,
                ops: Vec::new(),
                span: Span::new(start, self.last_end),
            }
        };
        self.leave();
        Ok(tab)
    }

    /// `on A, B` / `on $left.A == $right.B and ...`
    fn join_on(&mut self) -> Result<Vec<JoinOn>> {
        self.expect_ident("on")?;
        let mut on = Vec::new();
        loop {
            let cond = self.expr()?;
            // `and` chains are flattened with a work list: they can be long.
            let mut work = vec![cond];
            while let Some(e) = work.pop() {
                match e.kind {
                    ExprKind::Binary {
                        op: BinaryOp::And,
                        left,
                        right,
                    } => {
                        work.push(*right);
                        work.push(*left);
                    }
                    ExprKind::Name(name) => on.push(JoinOn::Same(Ident { name, span: e.span })),
                    ExprKind::Binary {
                        op: BinaryOp::Eq,
                        left,
                        right,
                    } => on.push(side_pair(*left, *right, e.span)?),
                    _ => {
                        return Err(KqlError::syntax(
                            "a join condition is a column name or '$left.Column == $right.Column'",
                            e.span,
                        ));
                    }
                }
            }
            if !self.eat(&Tok::Comma) {
                return Ok(on);
            }
        }
    }

    /// After `union` (source or operator): options, then tables.
    fn union_body(&mut self, start: usize) -> Result<Union> {
        let mut inner = false;
        let mut with_source = None;
        loop {
            if self.at_option("kind") {
                self.bump();
                self.bump();
                let value = self.option_value()?;
                inner = match value.name.as_str() {
                    "inner" => true,
                    "outer" => false,
                    other => {
                        return Err(KqlError::syntax(
                            format!("unknown union kind '{other}'"),
                            value.span,
                        )
                        .with_suggestion(nearest(other, ["inner", "outer"])));
                    }
                };
            } else if self.at_option("withsource") || self.at_option("with_source") {
                self.bump();
                self.bump();
                with_source = Some(self.name()?);
            } else if self.at_option("isfuzzy") {
                // `isfuzzy` only tolerates missing tables; Rampart reports them instead.
                self.bump();
                self.bump();
                self.option_value()?;
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        let mut tables = Vec::new();
        loop {
            tables.push(self.union_table()?);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        Ok(Union {
            inner,
            with_source,
            tables,
            span: Span::new(start, self.last_end),
        })
    }

    fn union_table(&mut self) -> Result<UnionTable> {
        let wildcard = match self.tok() {
            Tok::Star => true,
            Tok::Ident(_) => self.adjacent(0) && self.peek(1) == &Tok::Star,
            _ => false,
        };
        if wildcard {
            return Ok(UnionTable::Wildcard(self.pattern()?));
        }
        Ok(UnionTable::Tab(self.tab_atom()?))
    }

    /// A name pattern with `*` wildcards, written without spaces (`Device*Events`, `*`).
    fn pattern(&mut self) -> Result<Ident> {
        if self.at(&Tok::LBracket) {
            return self.name();
        }
        let mut text = String::new();
        let start = self.span();
        let mut span = start;
        loop {
            match self.tok() {
                Tok::Ident(s) if !s.starts_with('$') => text.push_str(s),
                Tok::Star => text.push('*'),
                _ if text.is_empty() => return Err(self.expected("a column name or pattern")),
                _ => break,
            }
            span = span.to(self.bump().span);
            if span.end != self.span().start {
                break;
            }
        }
        Ok(Ident { name: text, span })
    }

    /// Column patterns of `project-away`/`-keep`/`-reorder` (the latter may add an order).
    fn patterns(&mut self, with_order: bool) -> Result<Vec<ColumnPattern>> {
        let mut out = Vec::new();
        loop {
            out.push(self.pattern()?);
            if with_order {
                // The order of matched columns is accepted and ignored (see ast::ProjectReorder).
                if self.at_ident("granny")
                    && self.peek(1) == &Tok::Minus
                    && matches!(self.peek(2), Tok::Ident(s) if s == "asc" || s == "desc")
                {
                    self.bump();
                    self.bump();
                    self.bump();
                } else if !self.eat_ident("asc") {
                    self.eat_ident("desc");
                }
            }
            if !self.eat(&Tok::Comma) {
                return Ok(out);
            }
        }
    }

    /// `New = Old, ...`
    fn renames(&mut self) -> Result<Vec<(Ident, Ident)>> {
        let mut out = Vec::new();
        loop {
            let new = self.name()?;
            self.expect(&Tok::Assign)?;
            let old = self.name()?;
            out.push((new, old));
            if !self.eat(&Tok::Comma) {
                return Ok(out);
            }
        }
    }

    fn mv_expand(&mut self) -> Result<OperatorKind> {
        // An option Rampart does not run makes the operator refused, named by the option.
        let mut refused = None;
        loop {
            if self.at_option("bagexpansion") || self.at_option("kind") {
                let option = self.plain_name("an option")?;
                self.bump();
                let value = self.option_value()?;
                match value.name.as_str() {
                    "bag" => {}
                    "array" => {
                        refused.get_or_insert(Ident {
                            name: format!("mv-expand {}=array", option.name),
                            span: option.span.to(value.span),
                        });
                    }
                    other => {
                        return Err(KqlError::syntax(
                            format!("unknown bag expansion '{other}'"),
                            value.span,
                        )
                        .with_suggestion(nearest(other, ["bag", "array"])));
                    }
                }
            } else if self.at_option("with_itemindex") {
                let option = self.plain_name("an option")?;
                self.bump();
                self.name()?;
                refused.get_or_insert(Ident {
                    name: "mv-expand with_itemindex".into(),
                    span: option.span,
                });
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        let items = self.mv_items()?;
        let limit = if self.eat_ident("limit") {
            Some(self.expr()?)
        } else {
            None
        };
        Ok(match refused {
            Some(option) => OperatorKind::Unsupported(option),
            None => OperatorKind::MvExpand { items, limit },
        })
    }

    /// The items of `mv-expand` and `mv-apply`: `[Name =] Expr [to typeof(type)], ...`
    fn mv_items(&mut self) -> Result<Vec<MvExpandItem>> {
        let mut items = Vec::new();
        loop {
            let name = if self.at_name() && self.name_then_assign() {
                let name = self.name()?;
                self.bump();
                Some(name)
            } else {
                None
            };
            let expr = self.expr()?;
            let to_type = if self.eat_ident("to") {
                self.expect_ident("typeof")?;
                self.expect(&Tok::LParen)?;
                let t = self.type_name()?;
                self.expect(&Tok::RParen)?;
                Some(t)
            } else {
                None
            };
            items.push(MvExpandItem {
                name,
                expr,
                to_type,
            });
            if !self.eat(&Tok::Comma) {
                return Ok(items);
            }
        }
    }

    /// `parse [kind=...] expr with * "text" Column:type ...`
    fn parse_op(&mut self) -> Result<OperatorKind> {
        let mut kind = ParseKind::Simple;
        // Regex flags are not run: they make the operator refused.
        let mut flags = None;
        loop {
            if self.at_option("kind") {
                self.bump();
                self.bump();
                let value = self.option_value()?;
                kind = match value.name.as_str() {
                    "simple" => ParseKind::Simple,
                    "regex" => ParseKind::Regex,
                    "relaxed" => ParseKind::Relaxed,
                    other => {
                        return Err(KqlError::syntax(
                            format!("unknown parse kind '{other}'"),
                            value.span,
                        )
                        .with_suggestion(nearest(other, ["simple", "regex", "relaxed"])));
                    }
                };
            } else if self.at_option("flags") {
                let option = self.plain_name("an option")?;
                self.bump();
                self.option_value()?;
                flags = Some(option);
            } else {
                break;
            }
        }
        if let Some(option) = &flags
            && kind != ParseKind::Regex
        {
            return Err(KqlError::syntax(
                "'flags' are regex flags: they need 'kind=regex'",
                option.span,
            ));
        }
        let expr = self.expr()?;
        self.expect_ident("with")?;
        let mut parts = Vec::new();
        while !self.at_op_end() {
            match self.tok() {
                Tok::Str(_) => {
                    let (text, _) = self.strings();
                    parts.push(ParsePart::Text(text));
                }
                Tok::Star => {
                    self.bump();
                    parts.push(ParsePart::Skip);
                }
                _ if self.at_name() => {
                    let column = self.name()?;
                    let ty = if self.eat(&Tok::Colon) {
                        Some(self.type_name()?)
                    } else {
                        None
                    };
                    parts.push(ParsePart::Column(column, ty));
                }
                _ => return Err(self.expected("a string, '*' or a column name")),
            }
        }
        if parts.is_empty() {
            return Err(self.expected("a parse pattern"));
        }
        Ok(match flags {
            Some(option) => OperatorKind::Unsupported(Ident {
                name: "parse flags".into(),
                span: option.span,
            }),
            None => OperatorKind::Parse { kind, expr, parts },
        })
    }

    fn make_series(&mut self) -> Result<OperatorKind> {
        // `kind=nonempty` (a row of defaults for an empty input) is not run: it makes the
        // operator refused.
        let mut refused = None;
        loop {
            if self.at_option("kind") {
                let option = self.plain_name("an option")?;
                self.bump();
                let value = self.option_value()?;
                if value.name != "nonempty" {
                    return Err(KqlError::syntax(
                        format!("unknown make-series kind '{}'", value.name),
                        value.span,
                    )
                    .with_suggestion(nearest(&value.name, ["nonempty"])));
                }
                refused = Some(Ident {
                    name: "make-series kind=nonempty".into(),
                    span: option.span.to(value.span),
                });
            } else if self.at_ident("hint") && self.peek(1) == &Tok::Dot {
                self.hints()?;
            } else {
                break;
            }
        }
        let mut aggs = Vec::new();
        loop {
            let agg = self.named_expr()?;
            let default = if self.at_option("default") {
                self.bump();
                self.bump();
                Some(self.expr()?)
            } else {
                None
            };
            aggs.push((agg, default));
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect_ident("on")?;
        // Not a full expression: `on Timestamp in range(...)` must not read `in` as an operator.
        let on = self.unary()?;
        let (from, to, step) = if self.eat_ident("in") {
            self.expect_ident("range")?;
            self.expect(&Tok::LParen)?;
            let from = self.expr()?;
            self.expect(&Tok::Comma)?;
            let to = self.expr()?;
            self.expect(&Tok::Comma)?;
            let step = self.expr()?;
            self.expect(&Tok::RParen)?;
            (Some(from), Some(to), step)
        } else {
            let from = if self.eat_ident("from") {
                Some(self.expr()?)
            } else {
                None
            };
            let to = if self.eat_ident("to") {
                Some(self.expr()?)
            } else {
                None
            };
            self.expect_ident("step")?;
            (from, to, self.expr()?)
        };
        let by = if self.eat_ident("by") {
            self.named_list()?
        } else {
            Vec::new()
        };
        if let Some(option) = refused {
            return Ok(OperatorKind::Unsupported(option));
        }
        Ok(OperatorKind::MakeSeries(Box::new(MakeSeries {
            aggs,
            on,
            from,
            to,
            step,
            by,
        })))
    }

    fn render(&mut self) -> Result<OperatorKind> {
        let chart = self.plain_name("a chart type")?;
        if self.eat_ident("with") {
            // Properties only shape how a client draws the chart.
            self.skip_parens()?;
        }
        Ok(OperatorKind::Render { chart })
    }

    fn datatable(&mut self) -> Result<Source> {
        let start = self.expect_ident("datatable")?.start;
        let columns = self.columns()?;
        self.expect(&Tok::LBracket)?;
        let mut values = Vec::new();
        while !self.at(&Tok::RBracket) {
            values.push(self.expr()?);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(&Tok::RBracket)?;
        Ok(Source::Datatable {
            columns,
            values,
            span: Span::new(start, self.last_end),
        })
    }

    /// `(Column: type, ...)`: the schema of `datatable`, `externaldata`, `parse-kv`.
    fn columns(&mut self) -> Result<Vec<(Ident, TypeName)>> {
        self.expect(&Tok::LParen)?;
        let mut columns = Vec::new();
        loop {
            let name = self.name()?;
            self.expect(&Tok::Colon)?;
            columns.push((name, self.type_name()?));
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(&Tok::RParen)?;
        Ok(columns)
    }

    fn range(&mut self) -> Result<Source> {
        self.expect_ident("range")?;
        let column = self.name()?;
        self.expect_ident("from")?;
        let from = self.expr()?;
        self.expect_ident("to")?;
        let to = self.expr()?;
        self.expect_ident("step")?;
        let step = self.expr()?;
        Ok(Source::Range {
            column,
            from,
            to,
            step,
        })
    }

    // ----- names and lists -----

    fn at_name(&self) -> bool {
        match self.tok() {
            Tok::Ident(s) => !s.starts_with('$'),
            Tok::LBracket => matches!(self.peek(1), Tok::Str(_)) && self.peek(2) == &Tok::RBracket,
            _ => false,
        }
    }

    /// At a name (see [`Self::at_name`]) that is followed by `=`.
    fn name_then_assign(&self) -> bool {
        let len = if self.at(&Tok::LBracket) { 3 } else { 1 };
        self.peek(len) == &Tok::Assign
    }

    /// A name: an identifier or a quoted `['name']` / `["name"]`.
    fn name(&mut self) -> Result<Ident> {
        if !self.at_name() {
            return Err(self.expected("a name"));
        }
        let first = self.bump();
        match first.tok {
            Tok::Ident(name) => Ok(Ident {
                name,
                span: first.span,
            }),
            _ => {
                let name = match self.bump().tok {
                    Tok::Str(s) => s,
                    _ => String::new(),
                };
                let close = self.bump().span;
                Ok(Ident {
                    name,
                    span: first.span.to(close),
                })
            }
        }
    }

    /// An unquoted identifier (plugin, function and chart names).
    fn plain_name(&mut self, what: &str) -> Result<Ident> {
        match self.tok() {
            Tok::Ident(s) if !s.starts_with('$') => {
                let name = s.clone();
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            _ => Err(self.expected(what)),
        }
    }

    fn named_list(&mut self) -> Result<Vec<NamedExpr>> {
        let mut out = Vec::new();
        loop {
            out.push(self.named_expr()?);
            if !self.eat(&Tok::Comma) {
                return Ok(out);
            }
        }
    }

    /// `[name =] expr` or `(a, b) = expr`.
    fn named_expr(&mut self) -> Result<NamedExpr> {
        let mut names = Vec::new();
        if self.at_name() && self.name_then_assign() {
            names.push(self.name()?);
            self.bump();
        } else if self.names_tuple_ahead() {
            self.bump();
            loop {
                names.push(self.name()?);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(&Tok::RParen)?;
            self.expect(&Tok::Assign)?;
        }
        let expr = self.expr()?;
        Ok(NamedExpr { names, expr })
    }

    /// `(a, b, ...) =` ahead.
    fn names_tuple_ahead(&self) -> bool {
        if !self.at(&Tok::LParen) {
            return false;
        }
        let mut n = 1;
        loop {
            if !matches!(self.peek(n), Tok::Ident(s) if !s.starts_with('$')) {
                return false;
            }
            match self.peek(n + 1) {
                Tok::Comma => n += 2,
                Tok::RParen => return self.peek(n + 2) == &Tok::Assign,
                _ => return false,
            }
        }
    }

    /// `( arg, ... )` of a call.
    fn args(&mut self) -> Result<Vec<Expr>> {
        self.expect(&Tok::LParen)?;
        let mut args = Vec::new();
        if self.eat(&Tok::RParen) {
            return Ok(args);
        }
        loop {
            args.push(self.arg()?);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        if !self.at(&Tok::RParen) {
            return Err(self.expected("',' or ')'"));
        }
        self.bump();
        Ok(args)
    }

    /// `*`, `name = value`, or an expression (a pipeline too: `toscalar(T | count)`).
    fn arg(&mut self) -> Result<Expr> {
        if self.at(&Tok::Star) && matches!(self.peek(1), Tok::Comma | Tok::RParen) {
            let span = self.bump().span;
            return Ok(Expr {
                kind: ExprKind::Star,
                span,
            });
        }
        if matches!(self.tok(), Tok::Ident(s) if !s.starts_with('$'))
            && self.peek(1) == &Tok::Assign
        {
            let name = self.name()?;
            self.bump();
            let value = self.expr()?;
            let span = name.span.to(value.span);
            return Ok(Expr {
                kind: ExprKind::NamedArg {
                    name,
                    value: Box::new(value),
                },
                span,
            });
        }
        Ok(wrap(self.tab_or_expr()?))
    }

    // ----- expressions -----

    fn expr(&mut self) -> Result<Expr> {
        self.enter()?;
        let e = self.binary(OR)?;
        self.leave();
        Ok(e)
    }

    // The recursive descent is split into small functions so that each level of nesting costs
    // little stack, even in unoptimised builds.

    fn binary(&mut self, min: u8) -> Result<Expr> {
        let left = self.unary()?;
        self.binary_ops(left, min)
    }

    /// The operators after `left` that bind at least as tightly as `min`.
    fn binary_ops(&mut self, mut left: Expr, min: u8) -> Result<Expr> {
        let mut folds = 0;
        while let Some((form, prec, len)) = self.peek_binop()? {
            if prec < min {
                break;
            }
            let op_span = self.span();
            for _ in 0..len {
                self.bump();
            }
            self.grow()?;
            folds += 1;
            left = match form {
                BinForm::Op(op) => {
                    let right = self.binary(prec + 1)?;
                    binary(op, left, right)
                }
                BinForm::Str(op) => {
                    let right = match op.kind {
                        StrOpKind::In | StrOpKind::HasAny | StrOpKind::HasAll => self.set_rhs()?,
                        _ => self.binary(prec + 1)?,
                    };
                    binary(BinaryOp::Str(op), left, right)
                }
                BinForm::Between { negated } => self.between(left, negated, op_span)?,
            };
        }
        self.height = self.height.saturating_sub(folds);
        Ok(left)
    }

    /// After `between`: `(low .. high)`.
    fn between(&mut self, left: Expr, negated: bool, op_span: Span) -> Result<Expr> {
        if !self.at(&Tok::LParen) {
            return Err(KqlError::syntax(
                "expected '(low .. high)' after 'between'",
                if self.at(&Tok::Eof) {
                    op_span
                } else {
                    self.span()
                },
            ));
        }
        self.bump();
        let low = self.expr()?;
        self.expect(&Tok::DotDot)?;
        let high = self.expr()?;
        let close = self.expect(&Tok::RParen)?;
        let span = left.span.to(close);
        Ok(Expr {
            kind: ExprKind::Between {
                expr: Box::new(left),
                low: Box::new(low),
                high: Box::new(high),
                negated,
            },
            span,
        })
    }

    /// The binary operator ahead, its precedence and how many tokens spell it.
    fn peek_binop(&self) -> Result<Option<(BinForm, u8, usize)>> {
        let op = |op| Some((BinForm::Op(op), CMP, 1));
        let str_form = |kind, case_sensitive, negated| {
            BinForm::Str(StrOp {
                kind,
                negated,
                case_sensitive,
            })
        };
        Ok(match self.tok() {
            Tok::EqEq => op(BinaryOp::Eq),
            Tok::NotEq => op(BinaryOp::NotEq),
            Tok::EqTilde => op(BinaryOp::EqCi),
            Tok::BangTilde => op(BinaryOp::NotEqCi),
            Tok::Lt => op(BinaryOp::Lt),
            Tok::Le => op(BinaryOp::Le),
            Tok::Gt => op(BinaryOp::Gt),
            Tok::Ge => op(BinaryOp::Ge),
            Tok::Plus => Some((BinForm::Op(BinaryOp::Add), ADD, 1)),
            Tok::Minus => Some((BinForm::Op(BinaryOp::Sub), ADD, 1)),
            Tok::Star => Some((BinForm::Op(BinaryOp::Mul), MUL, 1)),
            Tok::Slash => Some((BinForm::Op(BinaryOp::Div), MUL, 1)),
            Tok::Percent => Some((BinForm::Op(BinaryOp::Mod), MUL, 1)),
            // `Column : "term"` in a search predicate: the term in that column.
            Tok::Colon if self.search_terms => {
                Some((str_form(StrOpKind::Has, false, false), CMP, 1))
            }
            Tok::Ident(w) => match w.as_str() {
                "or" => Some((BinForm::Op(BinaryOp::Or), OR, 1)),
                "and" => Some((BinForm::Op(BinaryOp::And), AND, 1)),
                "between" => Some((BinForm::Between { negated: false }, CMP, 1)),
                "matches" if self.peek_is_ident(1, "regex") => {
                    Some((str_form(StrOpKind::MatchesRegex, true, false), CMP, 2))
                }
                "in" if self.peek(1) == &Tok::Tilde => {
                    Some((str_form(StrOpKind::In, false, false), CMP, 2))
                }
                "like" | "likecs" | "notlike" | "notlikecs" => {
                    return Err(KqlError::unsupported(
                        format!(
                            "the '{w}' operator is not supported: use 'contains' or 'matches regex'"
                        ),
                        self.span(),
                    ));
                }
                w => str_op(w).map(|(kind, cs, neg)| (str_form(kind, cs, neg), CMP, 1)),
            },
            Tok::Bang => {
                let Tok::Ident(w) = self.peek(1) else {
                    return Err(KqlError::syntax("unexpected '!'", self.span()));
                };
                let span = self.span().to(self.token(1).span);
                if !NEGATABLE.contains(&w.as_str()) {
                    return Err(KqlError::syntax(format!("unknown operator '!{w}'"), span)
                        .with_suggestion(
                            nearest(w, NEGATABLE.iter().copied()).map(|s| format!("!{s}")),
                        ));
                }
                match w.as_str() {
                    "between" => Some((BinForm::Between { negated: true }, CMP, 2)),
                    "in" if self.peek(2) == &Tok::Tilde => {
                        Some((str_form(StrOpKind::In, false, true), CMP, 3))
                    }
                    w => str_op(w).map(|(kind, cs, _)| (str_form(kind, cs, true), CMP, 2)),
                }
            }
            _ => None,
        })
    }

    /// The right side of `in`, `has_any`, `has_all`: a parenthesised list (or one pipeline),
    /// or a single operand such as a `let` name.
    fn set_rhs(&mut self) -> Result<Expr> {
        if !self.at(&Tok::LParen) {
            return self.unary();
        }
        let (items, span, _) = self.paren_items()?;
        let kind = match <[TabOrExpr; 1]>::try_from(items) {
            Ok([TabOrExpr::Tab(t)]) => ExprKind::Tabular(t),
            Ok([item]) => ExprKind::List(vec![wrap(item)]),
            Err(items) => ExprKind::List(items.into_iter().map(wrap).collect()),
        };
        Ok(Expr { kind, span })
    }

    /// `( item, ... )`: the items, the span with the parentheses, and whether a comma was seen.
    fn paren_items(&mut self) -> Result<(Vec<TabOrExpr>, Span, bool)> {
        let open = self.expect(&Tok::LParen)?;
        let mut items = Vec::new();
        let mut comma = false;
        if !self.at(&Tok::RParen) {
            loop {
                items.push(self.tab_or_expr()?);
                if !self.eat(&Tok::Comma) {
                    break;
                }
                comma = true;
            }
        }
        if !self.at(&Tok::RParen) {
            return Err(self.expected("',' or ')'"));
        }
        let close = self.bump().span;
        Ok((items, open.to(close), comma))
    }

    fn unary(&mut self) -> Result<Expr> {
        match self.tok() {
            Tok::Minus | Tok::Plus => self.signed(),
            _ => self.postfix(),
        }
    }

    /// `-x`, `+x`; a sign before a number makes one literal (so -9223372036854775808 fits).
    fn signed(&mut self) -> Result<Expr> {
        let start = self.bump();
        let negative = start.tok == Tok::Minus;
        let start = start.span;
        let literal = match self.tok() {
            Tok::Int(v) => Some(signed_long(*v, negative, start.to(self.span()))?),
            Tok::Real(v) => Some(Literal::Real(if negative { -v } else { *v })),
            Tok::TimeSpan(v) => Some(Literal::TimeSpan(if negative { -v } else { *v })),
            _ => None,
        };
        if let Some(literal) = literal {
            let span = start.to(self.bump().span);
            return Ok(Expr {
                kind: ExprKind::Literal(literal),
                span,
            });
        }
        self.enter()?;
        let expr = self.unary()?;
        self.leave();
        let span = start.to(expr.span);
        let op = if negative {
            UnaryOp::Neg
        } else {
            UnaryOp::Plus
        };
        Ok(Expr {
            kind: ExprKind::Unary {
                op,
                expr: Box::new(expr),
            },
            span,
        })
    }

    fn postfix(&mut self) -> Result<Expr> {
        let base = self.primary()?;
        self.postfix_ops(base)
    }

    /// `.member` and `[index]` after `expr`.
    fn postfix_ops(&mut self, mut expr: Expr) -> Result<Expr> {
        let mut folds = 0;
        loop {
            let start = expr.span.start;
            if self.eat(&Tok::Dot) {
                let name = self.member_name()?;
                expr = Expr {
                    kind: ExprKind::Member {
                        base: Box::new(expr),
                        name,
                    },
                    span: Span::new(start, self.last_end),
                };
            } else if self.eat(&Tok::LBracket) {
                let index = self.expr()?;
                self.expect(&Tok::RBracket)?;
                expr = Expr {
                    kind: ExprKind::Index {
                        base: Box::new(expr),
                        index: Box::new(index),
                    },
                    span: Span::new(start, self.last_end),
                };
            } else {
                break;
            }
            self.grow()?;
            folds += 1;
        }
        self.height = self.height.saturating_sub(folds);
        Ok(expr)
    }

    /// After `.`: a member name, any word (`x.type`, `x.by`) or a quoted `['name']`.
    fn member_name(&mut self) -> Result<String> {
        match self.tok() {
            Tok::Ident(s) if !s.starts_with('$') => {
                let name = s.clone();
                self.bump();
                Ok(name)
            }
            Tok::LBracket if self.at_name() => Ok(self.name()?.name),
            _ => Err(self.expected("a member name after '.'")),
        }
    }

    fn primary(&mut self) -> Result<Expr> {
        match self.tok() {
            Tok::LParen => self.paren_expr(),
            Tok::Ident(w) if w.starts_with('$') => self.side(),
            Tok::Ident(w) if literal_word(w).is_none() && self.peek(1) == &Tok::LParen => {
                self.call()
            }
            _ => self.atom(),
        }
    }

    /// `( ... )`: one expression, one pipeline, or a list.
    fn paren_expr(&mut self) -> Result<Expr> {
        let (mut items, span, comma) = self.paren_items()?;
        let kind = match items.pop() {
            Some(TabOrExpr::Tab(t)) if items.is_empty() && !comma => ExprKind::Tabular(t),
            Some(TabOrExpr::Expr(e)) if items.is_empty() && !comma => e.kind,
            last => {
                items.extend(last);
                ExprKind::List(items.into_iter().map(wrap).collect())
            }
        };
        Ok(Expr { kind, span })
    }

    /// A literal or a name.
    fn atom(&mut self) -> Result<Expr> {
        let span = self.span();
        let kind = match self.tok() {
            Tok::Int(v) => ExprKind::Literal(signed_long(*v, false, span)?),
            Tok::Real(v) => ExprKind::Literal(Literal::Real(*v)),
            Tok::TimeSpan(v) => ExprKind::Literal(Literal::TimeSpan(*v)),
            Tok::Typed(kind, text) => ExprKind::Literal(typed_literal(*kind, text, span)?),
            Tok::Str(_) => {
                let (text, span) = self.strings();
                return Ok(Expr {
                    kind: ExprKind::Literal(Literal::String(text)),
                    span,
                });
            }
            Tok::LBracket if self.at_name() => {
                let name = self.name()?;
                return Ok(Expr {
                    kind: ExprKind::Name(name.name),
                    span: name.span,
                });
            }
            Tok::Ident(w) => match literal_word(w) {
                Some(literal) => ExprKind::Literal(literal),
                None => ExprKind::Name(w.clone()),
            },
            // `* has "x"`: any column (Kusto's search of a whole row).
            Tok::Star if matches!(self.peek(1), Tok::Ident(w) if str_op(w).is_some()) => {
                ExprKind::Star
            }
            _ => return Err(self.expected("an expression")),
        };
        self.bump();
        Ok(Expr { kind, span })
    }

    /// One string literal, or several written side by side (joined, as Kusto does).
    fn strings(&mut self) -> (String, Span) {
        let mut text = String::new();
        let mut span = self.span();
        while let Tok::Str(_) = self.tok() {
            let token = self.bump();
            span = span.to(token.span);
            if let Tok::Str(s) = token.tok {
                text.push_str(&s);
            }
        }
        (text, span)
    }

    /// `$left.Column` / `$right.Column`
    fn side(&mut self) -> Result<Expr> {
        let span = self.span();
        let right = match self.tok() {
            Tok::Ident(w) if w == "$left" => false,
            Tok::Ident(w) if w == "$right" => true,
            other => {
                let word = match other {
                    Tok::Ident(w) => w.clone(),
                    _ => String::new(),
                };
                return Err(KqlError::syntax(
                    format!("unknown name '{word}': only $left and $right start with '$'"),
                    span,
                ));
            }
        };
        self.bump();
        self.expect(&Tok::Dot)?;
        let column = self.member_name()?;
        Ok(Expr {
            kind: ExprKind::Side { right, column },
            span: Span::new(span.start, self.last_end),
        })
    }

    fn call(&mut self) -> Result<Expr> {
        let token = self.bump();
        let name_span = token.span;
        let word = match token.tok {
            Tok::Ident(w) => w,
            _ => String::new(),
        };
        if word == "cluster" || word == "database" {
            self.args()?;
            return Err(KqlError::unsupported(
                "tables of other databases and clusters are not supported",
                Span::new(name_span.start, self.last_end),
            ));
        }
        if word == "dynamic" {
            self.expect(&Tok::LParen)?;
            let value = self.json()?;
            let close = self.expect(&Tok::RParen)?;
            return Ok(Expr {
                kind: ExprKind::Literal(Literal::Dynamic(value)),
                span: name_span.to(close),
            });
        }
        let args = self.args()?;
        let span = Span::new(name_span.start, self.last_end);
        if word == "not" {
            let mut args = args;
            return match (args.pop(), args.is_empty()) {
                (Some(arg), true) => Ok(Expr {
                    kind: ExprKind::Unary {
                        op: UnaryOp::Not,
                        expr: Box::new(arg),
                    },
                    span,
                }),
                _ => Err(KqlError::syntax("not() takes exactly one argument", span)),
            };
        }
        Ok(Expr {
            kind: ExprKind::Call {
                name: Ident {
                    name: word,
                    span: name_span,
                },
                args,
            },
            span,
        })
    }

    /// The contents of `dynamic(...)`: JSON, with Kusto's extras (single-quoted strings,
    /// `datetime(...)` and other typed literals, unquoted keys, trailing commas).
    fn json(&mut self) -> Result<Value> {
        self.enter()?;
        let value = self.json_value()?;
        self.leave();
        Ok(value)
    }

    fn json_value(&mut self) -> Result<Value> {
        let p = self;
        let span = p.span();
        match p.tok() {
            Tok::LBracket => {
                p.bump();
                let mut items = Vec::new();
                while !p.at(&Tok::RBracket) {
                    items.push(p.json()?);
                    if !p.eat(&Tok::Comma) {
                        break;
                    }
                }
                p.expect(&Tok::RBracket)?;
                Ok(Value::Array(items))
            }
            Tok::LBrace => {
                p.bump();
                let mut map = serde_json::Map::new();
                while !p.at(&Tok::RBrace) {
                    let key = match p.tok() {
                        Tok::Str(s) => s.clone(),
                        Tok::Ident(s) => s.clone(),
                        _ => return Err(p.expected("a property name")),
                    };
                    p.bump();
                    p.expect(&Tok::Colon)?;
                    map.insert(key, p.json()?);
                    if !p.eat(&Tok::Comma) {
                        break;
                    }
                }
                p.expect(&Tok::RBrace)?;
                Ok(Value::Object(map))
            }
            Tok::Str(_) => Ok(Value::String(p.strings().0)),
            Tok::Ident(w) if w == "null" => {
                p.bump();
                Ok(Value::Null)
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                let b = w == "true";
                p.bump();
                Ok(Value::Bool(b))
            }
            Tok::Minus | Tok::Plus | Tok::Int(_) | Tok::Real(_) | Tok::TimeSpan(_) => {
                let e = p.unary()?;
                match e.kind {
                    ExprKind::Literal(Literal::Long(n)) => Ok(Value::from(n)),
                    ExprKind::Literal(Literal::Real(f)) => serde_json::Number::from_f64(f)
                        .map(Value::Number)
                        .ok_or_else(|| KqlError::syntax("not a finite number", e.span)),
                    ExprKind::Literal(Literal::TimeSpan(_)) => Err(KqlError::unsupported(
                        "timespans inside dynamic(...) are not supported",
                        e.span,
                    )),
                    _ => Err(KqlError::syntax("expected a number", e.span)),
                }
            }
            Tok::Typed(kind, text) => {
                let value = match typed_literal(*kind, text, span)? {
                    Literal::Null(_) => Value::Null,
                    Literal::Bool(b) => Value::Bool(b),
                    Literal::Long(n) => Value::from(n),
                    Literal::Real(f) => serde_json::Number::from_f64(f)
                        .map(Value::Number)
                        .ok_or_else(|| KqlError::syntax("not a finite number", span))?,
                    // Kusto keeps these in a dynamic value as their ISO / text form.
                    Literal::DateTime(us) => Value::String(iso_datetime(us, span)?),
                    Literal::Guid(g) => Value::String(g),
                    _ => {
                        return Err(KqlError::unsupported(
                            "this literal is not supported inside dynamic(...)",
                            span,
                        ));
                    }
                };
                p.bump();
                Ok(value)
            }
            _ => Err(p.expected("a JSON value")),
        }
    }
}

/// The parser of the arguments of an operator Rampart parses, to check its syntax, and refuses
/// by name ([`OperatorKind::Unsupported`]). A separate table keeps [`Parser::operator`]'s stack
/// frame, which every level of nesting repeats, small.
fn refused_operator(name: &str) -> Option<fn(&mut Parser) -> Result<()>> {
    Some(match name {
        "consume" => Parser::consume,
        "facet" => Parser::facet,
        "fork" => Parser::fork,
        "mv-apply" | "mvapply" => Parser::mv_apply,
        "parse-kv" => Parser::parse_kv,
        "parse-where" => |p| p.parse_op().map(drop),
        "partition" => Parser::partition,
        "reduce" => Parser::reduce,
        "sample-distinct" => Parser::sample_distinct,
        "scan" => Parser::scan,
        "search" => |p| p.search(false),
        "top-hitters" => Parser::top_hitters,
        "top-nested" => Parser::top_nested,
        _ => return None,
    })
}

/// Why `name` is no operator Rampart parses.
fn not_an_operator(name: &Ident) -> KqlError {
    match name.name.as_str() {
        "find" => KqlError::syntax(
            "'find' searches tables of its own, so it can only start a query",
            name.span,
        ),
        other if UNSUPPORTED_OPERATORS.contains(&other) => KqlError::unsupported(
            format!("the '{other}' operator is not supported"),
            name.span,
        ),
        other => KqlError::syntax(format!("unknown operator '{other}'"), name.span)
            .with_suggestion(nearest(other, OPERATORS.iter().copied())),
    }
}

fn binary(op: BinaryOp, left: Expr, right: Expr) -> Expr {
    let span = left.span.to(right.span);
    Expr {
        kind: ExprKind::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        },
        span,
    }
}

/// A pipeline where a scalar expression is expected becomes [`ExprKind::Tabular`].
fn wrap(item: TabOrExpr) -> Expr {
    match item {
        TabOrExpr::Expr(e) => e,
        TabOrExpr::Tab(t) => Expr {
            span: t.span,
            kind: ExprKind::Tabular(t),
        },
    }
}

/// `true`, `false` (in Kusto's three spellings each) and `null`.
fn literal_word(word: &str) -> Option<Literal> {
    match word {
        "true" | "TRUE" | "True" => Some(Literal::Bool(true)),
        "false" | "FALSE" | "False" => Some(Literal::Bool(false)),
        "null" => Some(Literal::Null(None)),
        _ => None,
    }
}

/// The source of a pipeline written as an expression: `T`, `f(x)`, `(T | ...)`.
fn expr_to_source(e: Expr) -> Result<Source> {
    match e.kind {
        ExprKind::Name(name) => Ok(Source::Name(Ident { name, span: e.span })),
        ExprKind::Call { name, args } => Ok(Source::Call { name, args }),
        ExprKind::Tabular(t) => Ok(Source::Paren(t)),
        _ => Err(KqlError::syntax(
            "expected a tabular expression: a table name, a function call or a parenthesised query",
            e.span,
        )),
    }
}

fn expr_to_tab(e: Expr) -> Result<TabExpr> {
    if let ExprKind::Tabular(t) = e.kind {
        return Ok(*t);
    }
    let span = e.span;
    Ok(TabExpr {
        source: expr_to_source(e)?,
        ops: Vec::new(),
        span,
    })
}

/// `$left.A == $right.B` (either way round).
fn side_pair(left: Expr, right: Expr, span: Span) -> Result<JoinOn> {
    let side = |e: &Expr| match &e.kind {
        ExprKind::Side { right, column } => Some((
            *right,
            Ident {
                name: column.clone(),
                span: e.span,
            },
        )),
        _ => None,
    };
    match (side(&left), side(&right)) {
        (Some((false, l)), Some((true, r))) | (Some((true, r)), Some((false, l))) => {
            Ok(JoinOn::Pair { left: l, right: r })
        }
        _ => Err(KqlError::syntax(
            "a join equality compares '$left.Column' with '$right.Column'",
            span,
        )),
    }
}

/// A long from its unsigned digits and sign.
fn signed_long(magnitude: u64, negative: bool, span: Span) -> Result<Literal> {
    let value = i128::from(magnitude);
    let value = if negative { -value } else { value };
    i64::try_from(value)
        .map(Literal::Long)
        .map_err(|_| KqlError::syntax("number out of range for a long", span))
}

/// The value of `datetime(...)`, `long(...)`, `guid(...)` and the other typed literals.
fn typed_literal(kind: TypedKind, text: &str, span: Span) -> Result<Literal> {
    let t = text.trim();
    let type_name = match kind {
        TypedKind::Long => TypeName::Long,
        TypedKind::Int => TypeName::Int,
        TypedKind::Real => TypeName::Real,
        TypedKind::Decimal => TypeName::Decimal,
        TypedKind::Bool => TypeName::Bool,
        TypedKind::DateTime => TypeName::DateTime,
        TypedKind::TimeSpan => TypeName::TimeSpan,
        TypedKind::Guid => TypeName::Guid,
    };
    if t == "null" {
        return Ok(Literal::Null(Some(type_name)));
    }
    let bad = |what: &str| KqlError::syntax(format!("invalid {what} literal"), span);
    match kind {
        TypedKind::Long | TypedKind::Int => {
            parse_long(t).map(Literal::Long).ok_or_else(|| bad("long"))
        }
        TypedKind::Real | TypedKind::Decimal => {
            parse_real(t).map(Literal::Real).ok_or_else(|| bad("real"))
        }
        TypedKind::Bool => match t.to_ascii_lowercase().as_str() {
            "true" => Ok(Literal::Bool(true)),
            "false" => Ok(Literal::Bool(false)),
            _ => Err(bad("bool")),
        },
        TypedKind::DateTime => parse_datetime(t)
            .map(Literal::DateTime)
            .ok_or_else(|| bad("datetime")),
        TypedKind::TimeSpan => parse_timespan(t)
            .map(Literal::TimeSpan)
            .ok_or_else(|| bad("timespan")),
        TypedKind::Guid => {
            if is_guid(t) {
                Ok(Literal::Guid(t.to_string()))
            } else {
                Err(bad("guid"))
            }
        }
    }
}

fn parse_long(t: &str) -> Option<i64> {
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t.strip_prefix('+').unwrap_or(t).trim_start()),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().ok()?
        }
        None => return None,
    };
    let value = i128::from(magnitude);
    i64::try_from(if negative { -value } else { value }).ok()
}

fn parse_real(t: &str) -> Option<f64> {
    match t {
        "nan" => return Some(f64::NAN),
        "inf" | "+inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    // Only digits, signs, dots and exponents: Rust would also read "infinity" and "NaN".
    if t.is_empty()
        || !t
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return None;
    }
    t.parse().ok()
}

fn is_guid(t: &str) -> bool {
    let groups: Vec<&str> = t.split('-').collect();
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    match groups.as_slice() {
        [one] => one.len() == 32 && hex(one),
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && groups.iter().all(|g| hex(g))
        }
        _ => false,
    }
}

/// `time(...)` / `timespan(...)`: `2` (days), `15 seconds`, `1.5h`, `[-][d.]hh:mm[:ss[.f]]`.
fn parse_timespan(t: &str) -> Option<i64> {
    let (negative, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.trim()),
        None => (false, t.strip_prefix('+').unwrap_or(t).trim()),
    };
    let nanos = if body.contains(':') {
        clock_timespan(body)?
    } else {
        let split = body.find(|c: char| c.is_alphabetic()).unwrap_or(body.len());
        let (number, unit) = (body.get(..split)?.trim(), body.get(split..)?.trim());
        let unit = if unit.is_empty() {
            unit_nanos("d")?
        } else {
            unit_nanos(unit)?
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        scale(int, frac, unit)?
    };
    Some(if negative { -nanos } else { nanos })
}

/// `[d.]hh:mm[:ss[.fffffff]]`
fn clock_timespan(body: &str) -> Option<i64> {
    let parts: Vec<&str> = body.split(':').collect();
    let (first, minutes, seconds) = match parts.as_slice() {
        [h, m] => (*h, *m, "0"),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    let (days, hours) = first.split_once('.').unwrap_or(("0", first));
    let (secs, frac) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole = |s: &str| -> Option<i128> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (d, h, m, s) = (whole(days)?, whole(hours)?, whole(minutes)?, whole(secs)?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let total = d
        .checked_mul(24)?
        .checked_add(h)?
        .checked_mul(60)?
        .checked_add(m)?
        .checked_mul(60)?
        .checked_add(s)?;
    let frac_nanos = if frac.is_empty() {
        0
    } else {
        i128::from(scale("0", frac, 1_000_000_000)?)
    };
    i64::try_from(total.checked_mul(1_000_000_000)?.checked_add(frac_nanos)?).ok()
}

/// Microseconds since the epoch (UTC) of a Kusto datetime literal: ISO 8601 (`2020-01-01`,
/// `2020-01-01 10:00:00.5`, `2020-01-01T10:00Z`, with an offset), `MM/DD/YYYY [time] [AM|PM]`,
/// and RFC 822/850 (`Sat, 8 Nov 14 15:05:02 GMT`, `Saturday, 08-Nov-14 15:05`, `10 MAY 2021`).
/// A time alone (`8:00 AM`) is on today's date (UTC), as Kusto reads it.
fn parse_datetime(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = ['"', '\'']
        .iter()
        .find_map(|q| t.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
        .unwrap_or(t)
        .trim();
    let mut c = Cursor { s: t, pos: 0 };
    // A leading weekday name (RFC 822/850) says nothing the date does not.
    if !c.word().is_some_and(|w| weekday(&w)) {
        c.pos = 0;
    }
    c.eat(',');
    c.spaces();
    let after_weekday = c.pos;
    let (date, micros_of_day) = match c.date() {
        Some((year, month, day)) => {
            let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
            let mut micros_of_day = 0;
            if (c.eat('T') || c.spaces())
                && let Some(time) = c.time()
            {
                micros_of_day = time;
                c.spaces();
            }
            (date, micros_of_day)
        }
        None => {
            c.pos = after_weekday;
            let time = c.time()?;
            c.spaces();
            (chrono::Utc::now().date_naive(), time)
        }
    };
    let offset_minutes = c.zone()?;
    c.spaces();
    if !c.done() {
        return None;
    }
    let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
    midnight
        .checked_add(micros_of_day)?
        .checked_sub(i64::from(offset_minutes).checked_mul(60_000_000)?)
}

fn weekday(w: &str) -> bool {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let w = w.to_ascii_lowercase();
    DAYS.iter()
        .any(|d| *d == w || d.get(..3) == Some(w.as_str()))
}

fn month(w: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let w = w.to_ascii_lowercase();
    let i = MONTHS
        .iter()
        .position(|m| *m == w || (w.len() == 3 && m.get(..3) == Some(w.as_str())))?;
    u32::try_from(i + 1).ok()
}

/// A cursor over datetime text.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn done(&self) -> bool {
        self.rest().is_empty()
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.rest().starts_with(c);
        if found {
            self.pos += c.len_utf8();
        }
        found
    }

    /// Skips whitespace (of any kind: pasted queries hold no-break spaces); whether there was any.
    fn spaces(&mut self) -> bool {
        let rest = self.rest();
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        rest.len() != trimmed.len()
    }

    /// 1 to `max` digits.
    fn number(&mut self, max: usize) -> Option<(u32, usize)> {
        let rest = self.rest();
        let len = rest
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if len == 0 {
            return None;
        }
        let value = rest.get(..len)?.parse().ok()?;
        self.pos += len;
        Some((value, len))
    }

    fn word(&mut self) -> Option<String> {
        let rest = self.rest();
        let len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if len == 0 {
            return None;
        }
        self.pos += len;
        rest.get(..len).map(str::to_string)
    }

    /// `YYYY-MM-DD`, `YYYY/MM/DD`, `MM/DD/YYYY`, `D Mon YY[YY]`, `DD-Mon-YY[YY]`.
    fn date(&mut self) -> Option<(i32, u32, u32)> {
        let start = self.pos;
        let (first, first_len) = self.number(4)?;
        if first_len == 4 {
            let sep = if self.eat('-') {
                '-'
            } else if self.eat('/') {
                '/'
            } else {
                return None;
            };
            let (m, _) = self.number(2)?;
            if !self.eat(sep) {
                return None;
            }
            let (d, _) = self.number(2)?;
            return Some((i32::try_from(first).ok()?, m, d));
        }
        if self.eat('/') {
            let (d, _) = self.number(2)?;
            if !self.eat('/') {
                return None;
            }
            let (y, y_len) = self.number(4)?;
            return Some((full_year(y, y_len)?, first, d));
        }
        let sep = if self.eat('-') {
            '-'
        } else if self.spaces() {
            ' '
        } else {
            self.pos = start;
            return None;
        };
        let m = month(&self.word()?)?;
        let separated = if sep == ' ' {
            self.spaces()
        } else {
            self.eat(sep)
        };
        if !separated {
            return None;
        }
        let (y, y_len) = self.number(4)?;
        Some((full_year(y, y_len)?, m, first))
    }

    /// `H:MM[:SS[.fffffff]] [AM|PM]`: microseconds since midnight. Consumes nothing when
    /// there is no valid time.
    fn time(&mut self) -> Option<i64> {
        let start = self.pos;
        let time = self.time_of_day();
        if time.is_none() {
            self.pos = start;
        }
        time
    }

    fn time_of_day(&mut self) -> Option<i64> {
        let (mut h, _) = self.number(2)?;
        if !self.eat(':') {
            return None;
        }
        let (m, _) = self.number(2)?;
        let mut s = 0;
        let mut micros = 0i64;
        if self.eat(':') {
            s = self.number(2)?.0;
            if self.eat('.') {
                let rest = self.rest();
                let len = rest.bytes().take_while(u8::is_ascii_digit).count();
                let digits = rest.get(..len)?;
                self.pos += len;
                micros = scale("0", digits, 1_000_000)?;
            }
        }
        let save = self.pos;
        self.spaces();
        match self.word().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("AM") if (1..=12).contains(&h) => h %= 12,
            Some("PM") if (1..=12).contains(&h) => h = h % 12 + 12,
            _ => self.pos = save,
        }
        if h > 23 || m > 59 || s > 59 {
            return None;
        }
        Some(i64::from((h * 60 + m) * 60 + s) * 1_000_000 + micros)
    }

    /// `Z`, `GMT`, `UTC`, `+hh:mm`, `-hhmm`, `+hh`, or nothing: minutes east of UTC.
    fn zone(&mut self) -> Option<i32> {
        if self.done() {
            return Some(0);
        }
        if self.eat('Z') {
            return Some(0);
        }
        let sign = if self.eat('+') {
            1
        } else if self.eat('-') {
            -1
        } else {
            let save = self.pos;
            return match self.word().as_deref() {
                Some("GMT" | "UTC") => Some(0),
                _ => {
                    self.pos = save;
                    Some(0)
                }
            };
        };
        let (h, len) = self.number(4)?;
        let minutes = if len > 2 {
            (h / 100) * 60 + h % 100
        } else if self.eat(':') {
            h * 60 + self.number(2)?.0
        } else {
            h * 60
        };
        Some(sign * i32::try_from(minutes).ok()?)
    }
}

/// Two-digit years as .NET reads them: 00-29 are 20xx, 30-99 are 19xx.
fn full_year(y: u32, len: usize) -> Option<i32> {
    let y = i32::try_from(y).ok()?;
    match len {
        4 => Some(y),
        2 if y < 30 => Some(2000 + y),
        2 => Some(1900 + y),
        _ => None,
    }
}

/// A datetime in Kusto's ISO form, for datetimes kept inside dynamic values.
fn iso_datetime(micros: i64, span: Span) -> Result<String> {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
        .ok_or_else(|| KqlError::syntax("datetime out of range", span))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::ErrorKind;

    fn parse_ok(src: &str) -> Query {
        match parse_query(src) {
            Ok(q) => q,
            Err(e) => panic!("{src}\n{}", e.render(src)),
        }
    }

    fn parse_err(src: &str) -> KqlError {
        match parse_query(src) {
            Ok(q) => panic!("{src} parsed: {q:?}"),
            Err(e) => e,
        }
    }

    fn body(src: &str) -> TabExpr {
        parse_ok(src).body.expect("a tabular expression")
    }

    fn ops(src: &str) -> Vec<OperatorKind> {
        body(src).ops.into_iter().map(|o| o.kind).collect()
    }

    /// The one operator of `src`.
    fn op(src: &str) -> OperatorKind {
        let mut all = ops(src);
        assert_eq!(all.len(), 1, "{src}: {all:?}");
        all.remove(0)
    }

    fn where_expr(cond: &str) -> Expr {
        match op(&format!("T | where {cond}")) {
            OperatorKind::Where(e) => e,
            other => panic!("{other:?}"),
        }
    }

    /// The condition as an S-expression.
    fn ex(cond: &str) -> String {
        sx(&where_expr(cond))
    }

    fn lit(value: &str) -> Literal {
        match where_expr(value).kind {
            ExprKind::Literal(l) => l,
            other => panic!("{value}: {other:?}"),
        }
    }

    fn source_name(t: &TabExpr) -> String {
        match &t.source {
            Source::Name(n) => n.name.clone(),
            Source::Call { name, .. } => format!("{}()", name.name),
            Source::Paren(inner) => format!("({})", source_name(inner)),
            other => format!("{other:?}"),
        }
    }

    fn str_op_name(s: &StrOp) -> String {
        let base = match s.kind {
            StrOpKind::Has => "has",
            StrOpKind::HasPrefix => "hasprefix",
            StrOpKind::HasSuffix => "hassuffix",
            StrOpKind::Contains => "contains",
            StrOpKind::StartsWith => "startswith",
            StrOpKind::EndsWith => "endswith",
            StrOpKind::MatchesRegex => "matches-regex",
            StrOpKind::In => "in",
            StrOpKind::HasAny => "has_any",
            StrOpKind::HasAll => "has_all",
        };
        let neg = if s.negated { "!" } else { "" };
        let cs = if s.case_sensitive { "_cs" } else { "" };
        format!("{neg}{base}{cs}")
    }

    fn sx(e: &Expr) -> String {
        let list = |items: &[Expr]| items.iter().map(sx).collect::<Vec<_>>().join(" ");
        match &e.kind {
            ExprKind::Literal(l) => match l {
                Literal::Null(None) => "null".into(),
                Literal::Null(Some(t)) => format!("{t:?}(null)"),
                Literal::Bool(b) => b.to_string(),
                Literal::Long(n) => n.to_string(),
                Literal::Real(f) => format!("{f:?}"),
                Literal::String(s) => format!("{s:?}"),
                Literal::DateTime(us) => format!("dt:{us}"),
                Literal::TimeSpan(ns) => format!("ts:{ns}"),
                Literal::Dynamic(v) => format!("dyn:{v}"),
                Literal::Guid(g) => format!("guid:{g}"),
            },
            ExprKind::Name(n) => n.clone(),
            ExprKind::Side { right, column } => {
                format!("${}.{column}", if *right { "right" } else { "left" })
            }
            ExprKind::Member { base, name } => format!("(. {} {name})", sx(base)),
            ExprKind::Index { base, index } => format!("([] {} {})", sx(base), sx(index)),
            ExprKind::Call { name, args } if args.is_empty() => format!("({})", name.name),
            ExprKind::Call { name, args } => format!("({} {})", name.name, list(args)),
            ExprKind::Unary { op, expr } => {
                let op = match op {
                    UnaryOp::Neg => "neg",
                    UnaryOp::Plus => "pos",
                    UnaryOp::Not => "not",
                };
                format!("({op} {})", sx(expr))
            }
            ExprKind::Binary { op, left, right } => {
                let op = match op {
                    BinaryOp::Or => "or".to_string(),
                    BinaryOp::And => "and".into(),
                    BinaryOp::Eq => "==".into(),
                    BinaryOp::NotEq => "!=".into(),
                    BinaryOp::EqCi => "=~".into(),
                    BinaryOp::NotEqCi => "!~".into(),
                    BinaryOp::Lt => "<".into(),
                    BinaryOp::Le => "<=".into(),
                    BinaryOp::Gt => ">".into(),
                    BinaryOp::Ge => ">=".into(),
                    BinaryOp::Add => "+".into(),
                    BinaryOp::Sub => "-".into(),
                    BinaryOp::Mul => "*".into(),
                    BinaryOp::Div => "/".into(),
                    BinaryOp::Mod => "%".into(),
                    BinaryOp::Str(s) => str_op_name(s),
                };
                format!("({op} {} {})", sx(left), sx(right))
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => format!(
                "({}between {} {} {})",
                if *negated { "!" } else { "" },
                sx(expr),
                sx(low),
                sx(high)
            ),
            ExprKind::List(items) => format!("[{}]", list(items)),
            ExprKind::Star => "*".into(),
            ExprKind::Tabular(t) => format!("(tab {} {})", source_name(t), t.ops.len()),
            ExprKind::NamedArg { name, value } => format!("(= {} {})", name.name, sx(value)),
        }
    }

    fn names(list: &[NamedExpr]) -> Vec<Vec<String>> {
        list.iter()
            .map(|n| n.names.iter().map(|i| i.name.clone()).collect())
            .collect()
    }

    fn loc(src: &str, e: &KqlError) -> (usize, usize) {
        let l = e.location(src).expect("a located error");
        (l.line, l.column)
    }

    const SEC: i64 = 1_000_000_000;

    // ----- expressions -----

    #[test]
    fn precedence_or_and_comparison_additive_multiplicative_unary_postfix() {
        assert_eq!(ex("a or b and c"), "(or a (and b c))");
        assert_eq!(ex("a and b or c"), "(or (and a b) c)");
        assert_eq!(ex("a == 1 or b has 'x'"), r#"(or (== a 1) (has b "x"))"#);
        assert_eq!(ex("a < b + 1 * c"), "(< a (+ b (* 1 c)))");
        assert_eq!(ex("a + b * c - d"), "(- (+ a (* b c)) d)");
        assert_eq!(ex("a - b - c"), "(- (- a b) c)");
        assert_eq!(ex("a / b % c"), "(% (/ a b) c)");
        assert_eq!(ex("-a * b"), "(* (neg a) b)");
        assert_eq!(ex("+a"), "(pos a)");
        assert_eq!(ex("- -a"), "(neg (neg a))");
        assert_eq!(ex("(a or b) and c"), "(and (or a b) c)");
        assert_eq!(ex("a + 'x' has b"), r#"(has (+ a "x") b)"#);
        assert_eq!(
            ex("a.b[0].c == f(x).y"),
            "(== (. ([] (. a b) 0) c) (. (f x) y))"
        );
        assert_eq!(ex("-a.b"), "(neg (. a b))");
        assert_eq!(ex("not(a and b) or c"), "(or (not (and a b)) c)");
    }

    #[test]
    fn hyphens_between_names_are_subtraction() {
        assert_eq!(ex("a-b"), "(- a b)");
        assert_eq!(ex("x -1"), "(- x 1)");
        assert_eq!(
            ex("Timestamp-15m"),
            format!("(- Timestamp ts:{})", 900 * SEC)
        );
    }

    #[test]
    fn comparison_operators() {
        for (src, op) in [
            ("==", "=="),
            ("!=", "!="),
            ("<>", "!="),
            ("=~", "=~"),
            ("!~", "!~"),
            ("<", "<"),
            ("<=", "<="),
            (">", ">"),
            (">=", ">="),
        ] {
            assert_eq!(ex(&format!("a {src} b")), format!("({op} a b)"), "{src}");
        }
    }

    #[test]
    fn string_operators_with_negation_and_case() {
        for name in [
            "has",
            "hasprefix",
            "hassuffix",
            "contains",
            "startswith",
            "endswith",
        ] {
            assert_eq!(ex(&format!("a {name} 'x'")), format!(r#"({name} a "x")"#));
            assert_eq!(ex(&format!("a !{name} 'x'")), format!(r#"(!{name} a "x")"#));
            assert_eq!(
                ex(&format!("a {name}_cs 'x'")),
                format!(r#"({name}_cs a "x")"#)
            );
            assert_eq!(
                ex(&format!("a !{name}_cs 'x'")),
                format!(r#"(!{name}_cs a "x")"#)
            );
        }
        assert_eq!(ex("a notcontains 'x'"), r#"(!contains a "x")"#);
        assert_eq!(ex("a notcontainscs 'x'"), r#"(!contains_cs a "x")"#);
        assert_eq!(
            ex("a matches regex @'\\d+'"),
            r#"(matches-regex_cs a "\\d+")"#
        );
    }

    #[test]
    fn set_operators_take_lists_names_and_pipelines() {
        let e = where_expr("a in ('x', 'y')");
        let ExprKind::Binary {
            op: BinaryOp::Str(s),
            right,
            ..
        } = e.kind
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            s,
            StrOp {
                kind: StrOpKind::In,
                negated: false,
                case_sensitive: true
            }
        );
        assert_eq!(sx(&right), r#"["x" "y"]"#);
        assert_eq!(ex("a in~ ('x')"), r#"(in a ["x"])"#);
        assert_eq!(ex("a !in ('x')"), r#"(!in_cs a ["x"])"#);
        assert_eq!(ex("a !in~ ('x')"), r#"(!in a ["x"])"#);
        assert_eq!(ex("a has_any (L)"), "(has_any a [L])");
        assert_eq!(ex("a has_all ('x', 'y')"), r#"(has_all a ["x" "y"])"#);
        assert_eq!(ex("a in (T | project y)"), "(in_cs a (tab T 1))");
        assert_eq!(ex("a in (dynamic([1]))"), "(in_cs a [dyn:[1]])");
        assert_eq!(ex("a in L"), "(in_cs a L)");
        assert_eq!(ex("a in ()"), "(in_cs a [])");
    }

    #[test]
    fn between() {
        assert_eq!(ex("a between (1 .. 5)"), "(between a 1 5)");
        assert_eq!(ex("a !between (1..5)"), "(!between a 1 5)");
        assert_eq!(
            ex("Timestamp between (ago(1d) .. now()) and x"),
            format!(
                "(and (between Timestamp (ago ts:{}) (now)) x)",
                86_400 * SEC
            )
        );
        let e = parse_err("T | where a between 1");
        assert_eq!(e.message, "expected '(low .. high)' after 'between'");
        assert_eq!(e.span, Some(Span::new(20, 21)));
    }

    #[test]
    fn a_star_before_a_string_operator_is_any_column() {
        assert_eq!(ex("* has 'mimikatz'"), r#"(has * "mimikatz")"#);
        assert_eq!(
            ex("* contains_cs 'x' and a"),
            r#"(and (contains_cs * "x") a)"#
        );
        assert_eq!(
            parse_err("T | where * == 1").message,
            "expected an expression, found '*'"
        );
    }

    #[test]
    fn calls_arguments_and_not() {
        assert_eq!(ex("f()"), "(f)");
        assert_eq!(ex("arg_max(T, *)"), "(arg_max T *)");
        assert_eq!(ex("f(a, b = 2)"), "(f a (= b 2))");
        assert_eq!(ex("toscalar(T | count) > 1"), "(> (toscalar (tab T 1)) 1)");
        assert_eq!(ex("not(x)"), "(not x)");
        assert_eq!(
            parse_err("T | where not(a, b)").message,
            "not() takes exactly one argument"
        );
    }

    #[test]
    fn names_quoted_names_members_and_join_sides() {
        assert_eq!(ex("['Quoted Name'] == [\"x\"]"), "(== Quoted Name x)");
        assert_eq!(ex("d.['a b'] == d['k']"), r#"(== (. d a b) ([] d "k"))"#);
        assert_eq!(ex("d.type.by"), "(. (. d type) by)");
        assert_eq!(ex("$left.A == $right.['B C']"), "(== $left.A $right.B C)");
        let e = parse_err("T | where $up.A");
        assert_eq!(e.span, Some(Span::new(10, 13)));
        assert!(e.message.contains("$left and $right"), "{}", e.message);
    }

    #[test]
    fn spans_of_expressions_and_operators() {
        let b = body("T | where a + bc > 1 | take 5");
        assert_eq!(b.span, Span::new(0, 29));
        assert_eq!(b.ops[0].span, Span::new(4, 20));
        assert_eq!(b.ops[1].span, Span::new(23, 29));
        let OperatorKind::Where(e) = &b.ops[0].kind else {
            panic!()
        };
        assert_eq!(e.span, Span::new(10, 20));
        let ExprKind::Binary { left, .. } = &e.kind else {
            panic!()
        };
        assert_eq!(left.span, Span::new(10, 16));
        assert_eq!(where_expr("(a)").span, Span::new(10, 13));
        assert_eq!(where_expr("-5").span, Span::new(10, 12));
    }

    // ----- literals -----

    #[test]
    fn numbers() {
        assert_eq!(lit("42"), Literal::Long(42));
        assert_eq!(lit("-42"), Literal::Long(-42));
        assert_eq!(lit("0x1F"), Literal::Long(31));
        assert_eq!(lit("-9223372036854775808"), Literal::Long(i64::MIN));
        assert_eq!(lit("1.5"), Literal::Real(1.5));
        assert_eq!(lit("-2.5e-3"), Literal::Real(-2.5e-3));
        assert_eq!(lit("1e6"), Literal::Real(1e6));
        let e = parse_err("T | where 9223372036854775808");
        assert_eq!(e.message, "number out of range for a long");
        assert_eq!(e.span, Some(Span::new(10, 29)));
    }

    #[test]
    fn timespans() {
        assert_eq!(lit("1d"), Literal::TimeSpan(86_400 * SEC));
        assert_eq!(lit("-30m"), Literal::TimeSpan(-1_800 * SEC));
        assert_eq!(lit("1.5h"), Literal::TimeSpan(5_400 * SEC));
        assert_eq!(lit("time(1d)"), Literal::TimeSpan(86_400 * SEC));
        assert_eq!(lit("timespan(2)"), Literal::TimeSpan(2 * 86_400 * SEC));
        assert_eq!(lit("time(15 seconds)"), Literal::TimeSpan(15 * SEC));
        assert_eq!(lit("time(0.5)"), Literal::TimeSpan(43_200 * SEC));
        assert_eq!(
            lit("time(0.12:34:56.7)"),
            Literal::TimeSpan(45_296_700_000_000)
        );
        assert_eq!(lit("time(00:01:00)"), Literal::TimeSpan(60 * SEC));
        assert_eq!(lit("time(-1h)"), Literal::TimeSpan(-3_600 * SEC));
        assert_eq!(
            lit("time(2.01:00)"),
            Literal::TimeSpan((2 * 86_400 + 3_600) * SEC)
        );
        assert_eq!(
            lit("timespan(null)"),
            Literal::Null(Some(TypeName::TimeSpan))
        );
        for bad in [
            "time(1w)",
            "time(25:00)",
            "time(1:2:3:4)",
            "time()",
            "time(99999999999999999999999999999999999999.00:00)",
            "time(99999999999d)",
        ] {
            let e = parse_err(&format!("T | where {bad}"));
            assert_eq!(e.message, "invalid timespan literal", "{bad}");
            assert_eq!(e.span, Some(Span::new(10, 10 + bad.len())), "{bad}");
        }
    }

    #[test]
    fn datetimes_to_utc_microseconds() {
        let cases = [
            ("datetime(2020-01-01)", 1_577_836_800_000_000),
            ("datetime(2020-01-01 10:00:00.5)", 1_577_872_800_500_000),
            ("datetime(2020-01-01T10:00Z)", 1_577_872_800_000_000),
            ("datetime(2020-01-01T10:00:00+02:00)", 1_577_865_600_000_000),
            (
                "datetime(1999-12-31 23:59:59.1234567-0530)",
                946_704_599_123_456,
            ),
            ("datetime('2020-01-01')", 1_577_836_800_000_000),
            ("datetime(\"01/16/2022 00:00:00\")", 1_642_291_200_000_000),
            ("datetime(5/4/2021 3:04 PM)", 1_620_140_640_000_000),
            (
                "datetime(Sat, 8 Nov 14 15:05:02 GMT)",
                1_415_459_102_000_000,
            ),
            ("datetime(Saturday, 08-Nov-14 15:05)", 1_415_459_100_000_000),
            ("datetime(10 MAY 2021)", 1_620_604_800_000_000),
            ("datetime(2020/01/01)", 1_577_836_800_000_000),
            // Pasted text may hold no-break spaces.
            (
                "datetime(2021-01-01\u{202F}10:10:17)",
                1_609_495_817_000_000,
            ),
        ];
        for (src, us) in cases {
            assert_eq!(lit(src), Literal::DateTime(us), "{src}");
        }
        assert_eq!(
            lit("datetime(null)"),
            Literal::Null(Some(TypeName::DateTime))
        );
        for bad in [
            "datetime(2021-02-30)",
            "datetime(2020-01-01 25:00)",
            "datetime(yesterday)",
            "datetime(2020-01-01 10:00 extra)",
            "datetime(x.y)",
        ] {
            let e = parse_err(&format!("T | where {bad}"));
            assert_eq!(e.kind, ErrorKind::Syntax, "{bad}");
            assert_eq!(e.message, "invalid datetime literal", "{bad}");
            assert_eq!(e.span, Some(Span::new(10, 10 + bad.len())), "{bad}");
        }
        // A time alone is today's, in UTC.
        const DAY: i64 = 86_400_000_000;
        let today = || chrono::Utc::now().timestamp_micros().div_euclid(DAY);
        let before = today();
        let Literal::DateTime(us) = lit("datetime(\"5:30:00 PM\")") else {
            panic!()
        };
        assert!((before..=today()).contains(&us.div_euclid(DAY)), "{us}");
        assert_eq!(us.rem_euclid(DAY), (17 * 3_600 + 1_800) * 1_000_000);
    }

    #[test]
    fn typed_literals_and_typed_nulls() {
        assert_eq!(lit("long(null)"), Literal::Null(Some(TypeName::Long)));
        assert_eq!(lit("int(null)"), Literal::Null(Some(TypeName::Int)));
        assert_eq!(lit("real(null)"), Literal::Null(Some(TypeName::Real)));
        assert_eq!(lit("decimal(null)"), Literal::Null(Some(TypeName::Decimal)));
        assert_eq!(lit("bool(null)"), Literal::Null(Some(TypeName::Bool)));
        assert_eq!(lit("guid(null)"), Literal::Null(Some(TypeName::Guid)));
        assert_eq!(lit("long(-12)"), Literal::Long(-12));
        assert_eq!(lit("int(0x10)"), Literal::Long(16));
        assert_eq!(lit("real(2.5)"), Literal::Real(2.5));
        assert_eq!(lit("double(-inf)"), Literal::Real(f64::NEG_INFINITY));
        assert!(matches!(lit("real(nan)"), Literal::Real(f) if f.is_nan()));
        assert_eq!(lit("decimal(1.25)"), Literal::Real(1.25));
        assert_eq!(lit("bool(true)"), Literal::Bool(true));
        assert_eq!(lit("bool(FALSE)"), Literal::Bool(false));
        assert_eq!(lit("true"), Literal::Bool(true));
        assert_eq!(lit("False"), Literal::Bool(false));
        assert_eq!(lit("null"), Literal::Null(None));
        assert_eq!(
            lit("guid(74be27de-1e4e-49d9-b579-fe0b331d3642)"),
            Literal::Guid("74be27de-1e4e-49d9-b579-fe0b331d3642".into())
        );
        for (bad, what) in [
            ("guid(74be27de)", "guid"),
            ("long(1.5)", "long"),
            ("real(infinity)", "real"),
            ("bool(yes)", "bool"),
        ] {
            let e = parse_err(&format!("T | where {bad}"));
            assert_eq!(e.message, format!("invalid {what} literal"), "{bad}");
        }
    }

    #[test]
    fn strings_join_when_adjacent() {
        assert_eq!(
            lit("\"a\" 'b'\n @\"c\\d\" h'e'"),
            Literal::String("abc\\de".into())
        );
        assert_eq!(where_expr("'a' 'b'").span, Span::new(10, 17));
    }

    #[test]
    fn dynamic_literals() {
        assert_eq!(
            lit(r#"dynamic([1, "a", null, true, -2.5, {"k": []}, ])"#),
            Literal::Dynamic(json!([1, "a", null, true, -2.5, {"k": []}]))
        );
        assert_eq!(
            lit("dynamic({'a': long(7), b: datetime(2020-01-01), c: guid(null)})"),
            Literal::Dynamic(json!({"a": 7, "b": "2020-01-01T00:00:00Z", "c": null}))
        );
        assert_eq!(lit("dynamic(null)"), Literal::Dynamic(Value::Null));
        assert_eq!(lit("dynamic(-5)"), Literal::Dynamic(json!(-5)));
        let e = parse_err("T | where dynamic([1d])");
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let e = parse_err("T | where dynamic([1, x])");
        assert_eq!(e.message, "expected a JSON value, found 'x'");
        assert_eq!(e.span, Some(Span::new(22, 23)));
    }

    // ----- statements -----

    #[test]
    fn let_statements() {
        let q = parse_ok(
            "let n = 5;\nlet T2 = T | where a > n;\nlet N = DeviceEvents;\n\
             let D = datatable(a:long, ['b c']:string)[1, 'x', -2, 'y',];\n\
             let R = range x from 1 to 10 step 2;\nlet P = print v = 1;\n\
             let U = union A, B;\nlet M = materialize(T | take 1);\nlet Q = (T | take 1);\n\
             T2",
        );
        let values: Vec<_> = q
            .lets
            .iter()
            .map(|l| (l.name.name.as_str(), &l.value))
            .collect();
        assert!(matches!(values[0], ("n", LetValue::Expr(e)) if sx(e) == "5"));
        assert!(
            matches!(values[1], ("T2", LetValue::Tabular(t)) if source_name(t) == "T" && t.ops.len() == 1)
        );
        assert!(matches!(values[2], ("N", LetValue::Expr(e)) if sx(e) == "DeviceEvents"));
        let ("D", LetValue::Tabular(d)) = values[3] else {
            panic!("{:?}", values[3])
        };
        let Source::Datatable {
            columns, values: v, ..
        } = &d.source
        else {
            panic!("{d:?}")
        };
        let cols: Vec<_> = columns.iter().map(|(n, t)| (n.name.as_str(), *t)).collect();
        assert_eq!(cols, [("a", TypeName::Long), ("b c", TypeName::String)]);
        assert_eq!(
            v.iter().map(sx).collect::<Vec<_>>(),
            ["1", "\"x\"", "-2", "\"y\""]
        );
        assert!(
            matches!(values[4], ("R", LetValue::Tabular(t)) if matches!(&t.source,
            Source::Range { column, .. } if column.name == "x"))
        );
        assert!(
            matches!(values[5], ("P", LetValue::Tabular(t)) if matches!(&t.source, Source::Print(p) if p.len() == 1))
        );
        assert!(
            matches!(values[6], ("U", LetValue::Tabular(t)) if matches!(&t.source, Source::Union(u) if u.tables.len() == 2))
        );
        assert!(
            matches!(values[7], ("M", LetValue::Expr(e)) if sx(e) == "(materialize (tab T 1))")
        );
        assert!(
            matches!(values[8], ("Q", LetValue::Tabular(t)) if source_name(t) == "T" && t.ops.len() == 1)
        );
        assert_eq!(source_name(&q.body.expect("body")), "T2");
    }

    #[test]
    fn let_functions() {
        let q = parse_ok(
            "let f = (a: string, b: long = 3, t: (*), u: (x: long)) { let c = 1; t | where x == a };\n\
             let g = (x: long) { x + 1 };\nlet v = view () { T };\nf('x', 2, T, U)",
        );
        let LetValue::Function(f) = &q.lets[0].value else {
            panic!()
        };
        let params: Vec<_> = f
            .params
            .iter()
            .map(|p| (p.name.name.as_str(), &p.kind, p.default.as_ref().map(sx)))
            .collect();
        assert_eq!(
            params,
            [
                ("a", &ParamKind::Scalar(Some(TypeName::String)), None),
                (
                    "b",
                    &ParamKind::Scalar(Some(TypeName::Long)),
                    Some("3".into())
                ),
                ("t", &ParamKind::Tabular, None),
                ("u", &ParamKind::Tabular, None),
            ]
        );
        assert_eq!(f.lets.len(), 1);
        assert!(matches!(&f.body, LetBody::Tabular(t) if source_name(t) == "t"));
        assert_eq!(f.span.start, 8);
        let LetValue::Function(g) = &q.lets[1].value else {
            panic!()
        };
        assert!(matches!(&g.body, LetBody::Expr(e) if sx(e) == "(+ x 1)"));
        let LetValue::Function(v) = &q.lets[2].value else {
            panic!()
        };
        assert!(v.params.is_empty());
        assert!(matches!(&v.body, LetBody::Expr(e) if sx(e) == "T"));
        assert_eq!(source_name(&q.body.expect("body")), "f()");
        let e = parse_err("let f = (a: strin) { a };");
        assert_eq!(e.message, "unknown type 'strin'");
        assert_eq!(e.suggestion.as_deref(), Some("string"));
        let e = parse_err("let f = () { let x = 1; };");
        assert_eq!(e.message, "a function body needs a result after its 'let's");
    }

    #[test]
    fn set_statements_are_skipped_and_queries_may_be_only_statements() {
        let q = parse_ok("set querytrace;\nset truncationmaxrecords = 10;\nT | take 1;");
        assert!(q.lets.is_empty());
        assert_eq!(source_name(&q.body.expect("body")), "T");
        let q = parse_ok(";; let x = 1; // only a let\n");
        assert_eq!(q.lets.len(), 1);
        assert!(q.body.is_none());
        assert_eq!(
            parse_ok(""),
            Query {
                lets: vec![],
                body: None
            }
        );
    }

    #[test]
    fn refused_statements() {
        for (src, word) in [
            (
                "declare query_parameters(x: string);\nT",
                "query_parameters",
            ),
            (".show tables", "control commands"),
            ("alias database db = cluster('c').database('d');", "alias"),
            ("restrict access to (T);", "restrict"),
            ("T;\nU", "batch"),
        ] {
            let e = parse_err(src);
            assert_eq!(e.kind, ErrorKind::Unsupported, "{src}");
            assert!(e.message.contains(word), "{src}: {}", e.message);
        }
        let e = parse_err("T;\nU");
        assert_eq!(e.span, Some(Span::new(3, 4)));
    }

    #[test]
    fn a_scalar_is_not_a_query() {
        let e = parse_err("1 + 2");
        assert_eq!(e.kind, ErrorKind::Syntax);
        assert!(
            e.message.starts_with("expected a tabular expression"),
            "{}",
            e.message
        );
        assert_eq!(e.span, Some(Span::new(0, 5)));
        let e = parse_err("1 + 2 | take 1");
        assert_eq!(e.span, Some(Span::new(0, 5)));
    }

    // ----- sources -----

    #[test]
    fn sources() {
        assert!(
            matches!(body("T").source, Source::Name(n) if n.name == "T" && n.span == Span::new(0, 1))
        );
        assert!(matches!(body("['My Table']").source, Source::Name(n) if n.name == "My Table"));
        let b = body("table('T') | take 1");
        assert!(
            matches!(&b.source, Source::Call { name, args } if name.name == "table" && args.len() == 1)
        );
        let b = body("(T | where x) | count");
        assert!(
            matches!(&b.source, Source::Paren(inner) if source_name(inner) == "T" && inner.ops.len() == 1)
        );
        assert_eq!(b.ops.len(), 1);
        let b = body("range x from 1 to 5 step 1 | extend y = x");
        let Source::Range {
            column,
            from,
            to,
            step,
        } = &b.source
        else {
            panic!("{b:?}")
        };
        assert_eq!(
            (column.name.as_str(), sx(from), sx(to), sx(step)),
            ("x", "1".into(), "5".into(), "1".into())
        );
        let b = body("print a = 1, 'b'");
        let Source::Print(items) = &b.source else {
            panic!()
        };
        assert_eq!(names(items), [vec!["a".to_string()], vec![]]);
        assert!(matches!(
            body("range(1, 2, 3) | take 1").source,
            Source::Call { .. }
        ));
        assert!(
            matches!(body("datatable(a: long)[]").source, Source::Datatable { values, .. } if values.is_empty())
        );
    }

    #[test]
    fn union_source_and_operator() {
        let b = body(
            "union kind=inner withsource=Src isfuzzy=true Device*Events, (U | take 1), V, *Logs",
        );
        let Source::Union(u) = &b.source else {
            panic!("{b:?}")
        };
        assert!(u.inner);
        assert_eq!(u.with_source.as_ref().map(|i| i.name.as_str()), Some("Src"));
        assert_eq!(u.span, Span::new(0, b.span.end));
        let tables: Vec<_> = u
            .tables
            .iter()
            .map(|t| match t {
                UnionTable::Wildcard(p) => format!("*{}", p.name),
                UnionTable::Tab(t) => format!("{}/{}", source_name(t), t.ops.len()),
            })
            .collect();
        assert_eq!(tables, ["*Device*Events", "U/1", "V/0", "**Logs"]);
        let OperatorKind::Union(u) = op("T | union U, V*") else {
            panic!()
        };
        assert!(!u.inner);
        assert_eq!(u.tables.len(), 2);
        let e = parse_err("union kind=innr A, B");
        assert_eq!(e.suggestion.as_deref(), Some("inner"));
        assert_eq!(e.span, Some(Span::new(11, 15)));
    }

    // ----- operators -----

    #[test]
    fn where_project_extend() {
        assert!(matches!(op("T | filter a"), OperatorKind::Where(e) if sx(&e) == "a"));
        let OperatorKind::Project(p) = op("T | project A, B = C + 1, ['D E'] = 2, (x, y) = f(z)")
        else {
            panic!()
        };
        assert_eq!(
            names(&p),
            [
                vec![],
                vec!["B".to_string()],
                vec!["D E".into()],
                vec!["x".into(), "y".into()]
            ]
        );
        assert_eq!(sx(&p[1].expr), "(+ C 1)");
        let OperatorKind::Extend(e) = op("T | extend c = a-b, d = (a, b)") else {
            panic!()
        };
        assert_eq!(sx(&e[0].expr), "(- a b)");
        assert_eq!(sx(&e[1].expr), "[a b]");
    }

    #[test]
    fn project_away_keep_reorder_rename() {
        let all = ops(
            "T | project-away A, B*, ['C D'] | project-keep *Id, X | project-reorder Z asc, Y* desc, W granny-asc \
             | project-rename New = Old, ['N 2'] = ['O 2']",
        );
        let pats = |p: &[ColumnPattern]| p.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert!(matches!(&all[0], OperatorKind::ProjectAway(p) if pats(p) == ["A", "B*", "C D"]));
        assert!(matches!(&all[1], OperatorKind::ProjectKeep(p) if pats(p) == ["*Id", "X"]));
        assert!(matches!(&all[2], OperatorKind::ProjectReorder(p) if pats(p) == ["Z", "Y*", "W"]));
        let OperatorKind::ProjectRename(r) = &all[3] else {
            panic!()
        };
        let r: Vec<_> = r
            .iter()
            .map(|(a, b)| (a.name.as_str(), b.name.as_str()))
            .collect();
        assert_eq!(r, [("New", "Old"), ("N 2", "O 2")]);
    }

    #[test]
    fn summarize() {
        let OperatorKind::Summarize { aggs, by } = op(
            "T | summarize hint.shufflekey = DeviceId hint.strategy=shuffle Count = count(), dcount(x) \
             by DeviceId, Hour = bin(Timestamp, 1h)",
        ) else {
            panic!()
        };
        assert_eq!(names(&aggs), [vec!["Count".to_string()], vec![]]);
        assert_eq!(sx(&aggs[1].expr), "(dcount x)");
        assert_eq!(names(&by), [vec![], vec!["Hour".to_string()]]);
        assert_eq!(
            sx(&by[1].expr),
            format!("(bin Timestamp ts:{})", 3_600 * SEC)
        );
        assert!(
            matches!(op("T | summarize by A"), OperatorKind::Summarize { aggs, by } if aggs.is_empty() && by.len() == 1)
        );
        assert!(
            matches!(op("T | summarize count()"), OperatorKind::Summarize { aggs, by } if aggs.len() == 1 && by.is_empty())
        );
        let OperatorKind::Summarize { aggs, .. } =
            op("T | summarize (t, x) = arg_max(Timestamp, *) by A")
        else {
            panic!()
        };
        assert_eq!(names(&aggs), [vec!["t".to_string(), "x".into()]]);
        assert_eq!(sx(&aggs[0].expr), "(arg_max Timestamp *)");
    }

    #[test]
    fn count_take_top_sort_distinct_sample() {
        let all = ops(
            "T | count | take 3 | limit 2 | top 10 by Timestamp asc nulls first, Name | \
             order by A desc, B asc nulls last | sort by C | distinct * | distinct A, B | sample 5",
        );
        assert_eq!(all[0], OperatorKind::Count);
        assert!(matches!(&all[1], OperatorKind::Take(e) if sx(e) == "3"));
        assert!(matches!(&all[2], OperatorKind::Take(e) if sx(e) == "2"));
        let OperatorKind::Top { n, by } = &all[3] else {
            panic!()
        };
        assert_eq!(sx(n), "10");
        let keys: Vec<_> = by
            .iter()
            .map(|k| (sx(&k.expr), k.ascending, k.nulls_first))
            .collect();
        assert_eq!(
            keys,
            [
                ("Timestamp".to_string(), true, Some(true)),
                ("Name".into(), false, None)
            ]
        );
        let OperatorKind::Sort(keys) = &all[4] else {
            panic!()
        };
        let keys: Vec<_> = keys.iter().map(|k| (k.ascending, k.nulls_first)).collect();
        assert_eq!(keys, [(false, None), (true, Some(false))]);
        assert!(matches!(&all[5], OperatorKind::Sort(k) if k.len() == 1));
        assert_eq!(
            all[6],
            OperatorKind::Distinct {
                all: true,
                columns: vec![]
            }
        );
        assert!(
            matches!(&all[7], OperatorKind::Distinct { all: false, columns } if columns.len() == 2)
        );
        assert!(matches!(&all[8], OperatorKind::Sample(e) if sx(e) == "5"));
    }

    #[test]
    fn join_and_lookup() {
        let OperatorKind::Join { kind, right, on } =
            op("T | join kind=leftanti hint.strategy=broadcast (U | where x) on A, B")
        else {
            panic!()
        };
        assert_eq!(kind, JoinKind::LeftAnti);
        assert_eq!((source_name(&right), right.ops.len()), ("U".into(), 1));
        assert_eq!(right.span, Span::new(47, 60));
        let on: Vec<_> = on
            .iter()
            .map(|o| match o {
                JoinOn::Same(c) => c.name.clone(),
                JoinOn::Pair { left, right } => format!("{}={}", left.name, right.name),
            })
            .collect();
        assert_eq!(on, ["A", "B"]);
        let OperatorKind::Join { kind, right, on } =
            op("T | join U on $left.a == $right.b and $right.c == $left.d, E")
        else {
            panic!()
        };
        assert_eq!(kind, JoinKind::InnerUnique);
        assert_eq!(source_name(&right), "U");
        assert_eq!(on.len(), 3);
        assert!(
            matches!(&on[1], JoinOn::Pair { left, right } if left.name == "d" && right.name == "c")
        );
        assert!(matches!(&on[2], JoinOn::Same(c) if c.name == "E"));
        assert!(matches!(
            op("T | join kind = inner (U) on A"),
            OperatorKind::Join {
                kind: JoinKind::Inner,
                ..
            }
        ));
        let e = parse_err("T | join kind=innr U on A");
        assert_eq!(e.message, "unknown join kind 'innr'");
        assert_eq!(e.suggestion.as_deref(), Some("inner"));
        let e = parse_err("T | join U on $left.a < $right.b");
        assert_eq!(e.span, Some(Span::new(14, 32)));
        let e = parse_err("T | join U on $left.a == $left.b");
        assert!(e.message.contains("$right"), "{}", e.message);
        assert!(matches!(
            op("T | lookup kind=inner U on A"),
            OperatorKind::Lookup { inner: true, .. }
        ));
        assert!(matches!(
            op("T | lookup (U | take 1) on A"),
            OperatorKind::Lookup { inner: false, .. }
        ));
    }

    #[test]
    fn mv_expand() {
        let OperatorKind::MvExpand { items, limit } =
            op("T | mv-expand bagexpansion=bag Item = Items to typeof(string), Other limit 10")
        else {
            panic!()
        };
        let items: Vec<_> = items
            .iter()
            .map(|i| {
                (
                    i.name.as_ref().map(|n| n.name.clone()),
                    sx(&i.expr),
                    i.to_type,
                )
            })
            .collect();
        assert_eq!(
            items,
            [
                (
                    Some("Item".to_string()),
                    "Items".to_string(),
                    Some(TypeName::String)
                ),
                (None, "Other".into(), None)
            ]
        );
        assert_eq!(limit.as_ref().map(sx).as_deref(), Some("10"));
        assert!(
            matches!(op("T | mvexpand todynamic(x)"), OperatorKind::MvExpand { items, .. } if items.len() == 1)
        );
        let e = parse_err("T | mv-expand bagexpansion=arry x");
        assert_eq!(e.kind, ErrorKind::Syntax);
        assert_eq!(e.suggestion.as_deref(), Some("array"));
    }

    #[test]
    fn parse_operator() {
        let OperatorKind::Parse { kind, expr, parts } =
            op(r#"T | parse kind=regex Msg with * "user=" User:string " " Rest"#)
        else {
            panic!()
        };
        assert_eq!(kind, ParseKind::Regex);
        assert_eq!(sx(&expr), "Msg");
        let column = |n: &str, t| {
            ParsePart::Column(
                Ident {
                    name: n.into(),
                    span: Span::default(),
                },
                t,
            )
        };
        let strip = |p: &ParsePart| match p {
            ParsePart::Column(c, t) => column(&c.name, *t),
            other => other.clone(),
        };
        assert_eq!(
            parts.iter().map(strip).collect::<Vec<_>>(),
            [
                ParsePart::Skip,
                ParsePart::Text("user=".into()),
                column("User", Some(TypeName::String)),
                ParsePart::Text(" ".into()),
                column("Rest", None)
            ]
        );
        let OperatorKind::Parse { kind, parts, .. } =
            op(r#"T | parse x.y with *"'"Name"'" "a" 'b'*"#)
        else {
            panic!()
        };
        assert_eq!(kind, ParseKind::Simple);
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[3], ParsePart::Text("'ab".into()));
        assert_eq!(
            parse_err("T | parse x with").message,
            "expected a parse pattern, found the end of the query"
        );
    }

    #[test]
    fn evaluate_make_series_render_and_the_rest() {
        let OperatorKind::Evaluate { plugin, args } =
            op(r#"T | evaluate bag_unpack(Col, prefix = "p_")"#)
        else {
            panic!()
        };
        assert_eq!(plugin.name, "bag_unpack");
        assert_eq!(
            args.iter().map(sx).collect::<Vec<_>>(),
            ["Col", r#"(= prefix "p_")"#]
        );

        let OperatorKind::MakeSeries(ms) = op(
            "T | make-series Count = count() default = 0, dcount(x) on Timestamp from ago(7d) to now() step 1d by Device",
        ) else {
            panic!()
        };
        assert_eq!(ms.aggs.len(), 2);
        assert_eq!(names(&[ms.aggs[0].0.clone()]), [vec!["Count".to_string()]]);
        assert_eq!(ms.aggs[0].1.as_ref().map(sx).as_deref(), Some("0"));
        assert!(ms.aggs[1].1.is_none());
        assert_eq!(sx(&ms.on), "Timestamp");
        assert_eq!(
            ms.from.as_ref().map(sx),
            Some(format!("(ago ts:{})", 7 * 86_400 * SEC))
        );
        assert_eq!(ms.to.as_ref().map(sx).as_deref(), Some("(now)"));
        assert_eq!(sx(&ms.step), format!("ts:{}", 86_400 * SEC));
        assert_eq!(ms.by.len(), 1);
        let OperatorKind::MakeSeries(ms) =
            op("T | make-series count() on Timestamp in range(a, b, 1h)")
        else {
            panic!()
        };
        assert_eq!(
            (
                ms.from.as_ref().map(sx),
                ms.to.as_ref().map(sx),
                sx(&ms.step)
            ),
            (
                Some("a".into()),
                Some("b".into()),
                format!("ts:{}", 3_600 * SEC)
            )
        );
        let OperatorKind::MakeSeries(ms) = op("T | make-series count() on Timestamp step 1h")
        else {
            panic!()
        };
        assert!(ms.from.is_none() && ms.to.is_none() && ms.by.is_empty());

        let all = ops(
            "T | render timechart with (title = 'x', ycolumns = a, b) | as hint.materialized=true Saved \
             | invoke f(1) | getschema | serialize | serialize rn = row_number()",
        );
        assert!(matches!(&all[0], OperatorKind::Render { chart } if chart.name == "timechart"));
        assert!(matches!(&all[1], OperatorKind::As(n) if n.name == "Saved"));
        assert!(
            matches!(&all[2], OperatorKind::Invoke { function, args } if function.name == "f" && args.len() == 1)
        );
        assert_eq!(all[3], OperatorKind::GetSchema);
        assert_eq!(all[4], OperatorKind::Serialize(vec![]));
        assert!(
            matches!(&all[5], OperatorKind::Serialize(n) if names(n) == [vec!["rn".to_string()]])
        );
    }

    // ----- errors -----

    #[test]
    fn typos_of_operators_get_a_suggestion_and_point_at_the_name() {
        let src = "DeviceEvents\n| wher ActionType == 'x'";
        let e = parse_err(src);
        assert_eq!(e.kind, ErrorKind::Syntax);
        assert_eq!(e.message, "unknown operator 'wher'");
        assert_eq!(e.suggestion.as_deref(), Some("where"));
        assert_eq!(loc(src, &e), (2, 3));
        assert_eq!(e.span, Some(Span::new(15, 19)));
        for (src, suggestion) in [
            ("T | summarise count()", Some("summarize")),
            ("T | projectaway A", Some("project-away")),
            ("T | project-awy A", Some("project-away")),
            ("T | mv-expnd x", Some("mv-expand")),
            ("T | frobnicate", None),
        ] {
            let e = parse_err(src);
            assert_eq!(e.kind, ErrorKind::Syntax, "{src}");
            assert_eq!(e.suggestion.as_deref(), suggestion, "{src}");
        }
    }

    /// The one operator of `src` that Rampart refuses, and its name.
    fn refused_op(src: &str) -> Ident {
        let mut refused = body(src).ops.into_iter().filter_map(|o| match o.kind {
            OperatorKind::Unsupported(name) => Some(name),
            _ => None,
        });
        match (refused.next(), refused.next()) {
            (Some(name), None) => name,
            other => panic!("{src}: {other:?}"),
        }
    }

    /// The span of the first `needle` in `src`.
    fn span_of(src: &str, needle: &str) -> Span {
        let start = src.find(needle).expect(needle);
        Span::new(start, start + needle.len())
    }

    #[test]
    fn operators_rampart_does_not_run_parse_to_unsupported_nodes() {
        for (src, name, keyword) in [
            (
                "T | top-nested 3 of A by count(), top-nested 2 of B with others = -1 by \
                 Total = sum(x) asc nulls last, top-nested of Name = C by max(1) | take 1",
                "top-nested",
                "top-nested",
            ),
            (
                "T | partition by A (top 1 by B | project A) | count",
                "partition",
                "partition",
            ),
            (
                "T | partition hint.strategy=native hint.concurrency=4 by A (summarize count())",
                "partition",
                "partition",
            ),
            (
                "T | partition by A { U | where B == toscalar(A) | take 1 }",
                "partition",
                "partition",
            ),
            (
                "T | fork (where a > 1) (where b > 1 | as B) Named = (take 5)",
                "fork",
                "fork",
            ),
            (
                "T | facet by A, B with (where x > 1 | take 5)",
                "facet",
                "facet",
            ),
            ("T | facet by A", "facet", "facet"),
            (
                "T | scan with_match_id=Id order by Ts partition by Dev \
                 declare (Start: datetime, n: long = 0) with (\
                 step s1 output=last: Ev == 'a' => Start = Ts, n = s1.n + 1; \
                 step s2: Ev == 'b' and Ts - s1.Start < 5m;)",
                "scan",
                "scan",
            ),
            (
                "T | mv-apply with_itemindex=I Metric to typeof(real), B = Other limit 10 \
                 on (top 2 by Metric desc | extend I)",
                "mv-apply",
                "mv-apply",
            ),
            ("T | mvapply x on (take 1)", "mvapply", "mvapply"),
            (
                "T | search kind=case_sensitive \"err\" and Col:\"x\" or * has 'y'",
                "search",
                "search",
            ),
            (
                "T | parse-where kind=regex Msg with 'user=' User:string",
                "parse-where",
                "parse-where",
            ),
            (
                "T | parse-kv Msg as (a: string, b: long) with (pair_delimiter=' ', kv_delimiter='=')",
                "parse-kv",
                "parse-kv",
            ),
            (
                "T | parse-kv Msg as (a: string) with ()",
                "parse-kv",
                "parse-kv",
            ),
            (
                "T | reduce kind=source by Msg with threshold=0.1, characters='-'",
                "reduce",
                "reduce",
            ),
            (
                "T | sample-distinct 5 of A",
                "sample-distinct",
                "sample-distinct",
            ),
            (
                "T | top-hitters 5 of A by sum(B)",
                "top-hitters",
                "top-hitters",
            ),
            ("T | consume decodeblocks=true", "consume", "consume"),
            (
                "T | mv-expand with_itemindex=I x",
                "mv-expand with_itemindex",
                "with_itemindex",
            ),
            (
                "T | mv-expand bagexpansion=array x to typeof(string) limit 5",
                "mv-expand bagexpansion=array",
                "bagexpansion=array",
            ),
            (
                "T | mv-expand kind=array x",
                "mv-expand kind=array",
                "kind=array",
            ),
            (
                "T | parse kind=regex flags=Ui Msg with 'a=' A",
                "parse flags",
                "flags",
            ),
            (
                "T | make-series kind=nonempty count() on Ts step 1h by A",
                "make-series kind=nonempty",
                "kind=nonempty",
            ),
        ] {
            let refused = refused_op(src);
            assert_eq!(refused.name, name, "{src}");
            assert_eq!(refused.span, span_of(src, keyword), "{src}");
        }
        // The operator's span covers its arguments.
        let src = "T | fork (take 1) (take 2) | count";
        assert_eq!(
            body(src).ops[0].span,
            span_of(src, "fork (take 1) (take 2)")
        );
        // A comma after `top-nested` that no `top-nested` follows is not the operator's.
        let b = body("f(T | top-nested 1 of A by count(), 2)");
        assert!(matches!(&b.source, Source::Call { args, .. } if args.len() == 2));
    }

    #[test]
    fn sources_rampart_does_not_run_parse_to_unsupported_nodes() {
        let source = |src: &str| match parse_ok(src).body.map(|b| b.source) {
            Some(Source::Unsupported(name)) => name,
            other => panic!("{src}: {other:?}"),
        };
        for (src, name, keyword) in [
            (
                "externaldata (a: string, b: bool) [h@'https://x/a.csv', @'https://x/b.csv',] \
                 with (format = 'csv', ignoreFirstRecord = true) | where b",
                "externaldata",
                "externaldata",
            ),
            (
                "external_data (a: string) ['u']",
                "externaldata",
                "external_data",
            ),
            (
                "find withsource=Src in (T1, (T2 | where x > 1), D*) where A == 1 \
                 project A, B: string, pack_all() | take 1",
                "find",
                "find",
            ),
            ("find A == 1 project-smart", "find", "find"),
            ("find where A has 'x'", "find", "find"),
            (
                "search in (T1, T2, A*) \"err\" | take 1",
                "search",
                "search",
            ),
            (
                "search kind=default Col:'x' and Other == 1",
                "search",
                "search",
            ),
            ("search * has 'x'", "search", "search"),
            (
                "evaluate http_request('https://x') | take 1",
                "evaluate (as a source)",
                "evaluate",
            ),
        ] {
            let refused = source(src);
            assert_eq!(refused.name, name, "{src}");
            assert_eq!(refused.span, span_of(src, keyword), "{src}");
        }
        // They are tabular expressions wherever one may stand.
        let q = parse_ok(
            "let T = (externaldata (x: string) ['u'] | take 1);\n\
             let S = toscalar(externaldata (x: string) ['u'] with (format='txt') | count);\n\
             union (find x == 1), (search 'y')",
        );
        let refused = |t: &TabExpr| matches!(t.source, Source::Unsupported(_));
        assert!(matches!(&q.lets[0].value, LetValue::Tabular(t) if refused(t)));
        assert!(matches!(&q.lets[1].value, LetValue::Expr(Expr {
            kind: ExprKind::Call { args, .. }, ..
        }) if matches!(&args[0].kind, ExprKind::Tabular(t) if refused(t))));
        let tables = match q.body.map(|b| b.source) {
            Some(Source::Union(u)) => u.tables,
            other => panic!("{other:?}"),
        };
        assert!(
            tables
                .iter()
                .all(|t| matches!(t, UnionTable::Tab(t) if refused(t)))
        );
        // `find` and `search` stay names where a name is all they can be.
        assert!(matches!(body("search | take 1").source, Source::Name(n) if n.name == "search"));
        assert!(matches!(body("find").source, Source::Name(n) if n.name == "find"));
        assert!(matches!(
            &parse_ok("let f = (find: string) { find }; f('x')").lets[0].value,
            LetValue::Function(f) if matches!(&f.body, LetBody::Expr(e) if sx(e) == "find")
        ));
    }

    #[test]
    fn broken_refused_constructs_are_located_syntax_errors() {
        for (src, at, message) in [
            (
                "T | top-nested 3 A by count()",
                "A by",
                "expected 'of', found 'A'",
            ),
            (
                "T | top-nested 3 of A with others 1 by count()",
                "1 by",
                "expected '=', found a number",
            ),
            (
                "T | top-nested 3 of A by count(), top-nested 2 of B",
                "",
                "expected 'by', found the end of the query",
            ),
            (
                "T | partition by A take 1",
                "take",
                "expected '(' or '{', found 'take'",
            ),
            (
                "T | partition by A (U | take 1)",
                "U |",
                "unknown operator 'U'",
            ),
            (
                "T | partition by A { U | take 1 ",
                "",
                "expected '}', found the end",
            ),
            (
                "T | partition A (take 1)",
                "A (",
                "expected 'by', found 'A'",
            ),
            ("T | fork (where)", ")", "expected an expression, found ')'"),
            ("T | fork ()", ")", "expected an operator, found ')'"),
            ("T | fork where x", "where", "expected '(', found 'where'"),
            (
                "T | fork (where a) X = take 1",
                "take",
                "expected '(', found 'take'",
            ),
            ("T | facet A", "A", "expected 'by', found 'A'"),
            (
                "T | facet by A with take 1",
                "take",
                "expected '(', found 'take'",
            ),
            ("T | scan with (step s: x)", ")", "expected ';', found ')'"),
            (
                "T | scan with (step s output=first: x;)",
                "first",
                "unknown step output 'first'",
            ),
            (
                "T | scan declare (n) with (step s: x;)",
                ") with",
                "expected ':', found ')'",
            ),
            ("T | scan with ()", ")", "expected 'step', found ')'"),
            (
                "T | scan with (step s: x => y; )",
                ";",
                "expected '=', found ';'",
            ),
            (
                "T | mv-apply x limit 5 (take 1)",
                "(",
                "expected 'on', found '('",
            ),
            (
                "T | mv-apply x on (wher y)",
                "wher",
                "unknown operator 'wher'",
            ),
            (
                "T | search in (U) 'x'",
                "in",
                "'search in (...)' names the tables to search",
            ),
            (
                "T | search kind=upper 'x'",
                "upper",
                "unknown search kind 'upper'",
            ),
            ("search a:", "", "expected an expression, found the end"),
            (
                "search 'x' y",
                "y",
                "expected ';' or the end of the query, found 'y'",
            ),
            ("find in (T) A == 1", "A ==", "expected 'where', found 'A'"),
            ("find where A == 1 project A:", "", "expected a type name"),
            ("find in (T where x", "where", "expected ',' or ')'"),
            (
                "T | find where x",
                "find",
                "'find' searches tables of its own",
            ),
            ("externaldata (a: string) [1]", "1", "expected a string"),
            (
                "externaldata (a string) ['u']",
                "string",
                "expected ':', found 'string'",
            ),
            (
                "externaldata (a: string) ['u'] with (format)",
                ")",
                "expected '=', found ')'",
            ),
            (
                "evaluate http_request 'x'",
                "'x'",
                "expected '(', found a string",
            ),
            (
                "T | parse flags=U x with y",
                "flags",
                "'flags' are regex flags: they need 'kind=regex'",
            ),
            (
                "T | make-series kind=empty count() on T step 1h",
                "empty",
                "unknown make-series kind 'empty'",
            ),
            ("T | parse-where x", "", "expected 'with', found the end"),
            (
                "T | parse-kv x as (a: string)",
                "",
                "expected 'with', found the end",
            ),
            ("T | reduce x", "x", "expected 'by', found 'x'"),
            (
                "T | reduce kind=sink by x",
                "sink",
                "unknown reduce kind 'sink'",
            ),
            ("T | sample-distinct 5 A", "A", "expected 'of', found 'A'"),
            ("T | top-hitters 5 by A", "by", "expected 'of', found 'by'"),
            (
                "T | consume decodeblocks",
                "decodeblocks",
                "unexpected 'decodeblocks'",
            ),
        ] {
            let e = parse_err(src);
            assert_eq!(e.kind, ErrorKind::Syntax, "{src}: {}", e.message);
            assert!(e.message.starts_with(message), "{src}: {}", e.message);
            let start = if at.is_empty() {
                src.len()
            } else {
                src.rfind(at).expect(at)
            };
            assert_eq!(e.span.map(|s| s.start), Some(start), "{src}: {}", e.message);
        }
        // A location on a later line of a refused construct.
        let src = "T\n| fork\n    (where x > 1)\n    (summarize count() by)";
        let e = parse_err(src);
        assert_eq!(e.kind, ErrorKind::Syntax);
        assert_eq!(loc(src, &e), (4, 26));
        let e = parse_err("T | fork (wher x)");
        assert_eq!(e.suggestion.as_deref(), Some("where"));
    }

    #[test]
    fn kusto_features_rampart_does_not_parse_are_unsupported_and_named() {
        for (src, name, at) in [
            ("T | graph-match (a)-->(b)", "graph-match", (4, 15)),
            ("T | where a like 'x%'", "like", (12, 16)),
            (
                "cluster('c').database('d').T | take 1",
                "databases",
                (0, 12),
            ),
        ] {
            let e = parse_err(src);
            assert_eq!(e.kind, ErrorKind::Unsupported, "{src}");
            assert!(e.message.contains(name), "{src}: {}", e.message);
            assert_eq!(e.span, Some(Span::new(at.0, at.1)), "{src}");
        }
    }

    #[test]
    fn errors_point_at_the_offending_token() {
        let src = "DeviceEvents\n| where x ==\n| take 1";
        let e = parse_err(src);
        assert_eq!(e.message, "expected an expression, found '|'");
        assert_eq!(loc(src, &e), (3, 1));

        let src = "T\n| where f(x\n  y)";
        let e = parse_err(src);
        assert_eq!(e.message, "expected ',' or ')', found 'y'");
        assert_eq!(loc(src, &e), (3, 3));

        let src = "T | where x == 1 y";
        let e = parse_err(src);
        assert!(
            e.message
                .starts_with("unexpected 'y' after the operator's arguments"),
            "{}",
            e.message
        );
        assert_eq!(e.span, Some(Span::new(17, 18)));

        let src = "T | where x = 1";
        let e = parse_err(src);
        assert_eq!(e.message, "unexpected '=': comparisons are written '=='");
        assert_eq!(e.suggestion.as_deref(), Some("=="));
        assert_eq!(e.span, Some(Span::new(12, 13)));

        let src = "T | take";
        let e = parse_err(src);
        assert_eq!(
            e.message,
            "expected an expression, found the end of the query"
        );
        assert_eq!(e.span, Some(Span::new(8, 8)));

        let src = "T | where a !has_any ('x')";
        let e = parse_err(src);
        assert_eq!(e.message, "unknown operator '!has_any'");
        assert_eq!(e.span, Some(Span::new(12, 20)));

        let src = "let x = 1\nT";
        let e = parse_err(src);
        assert_eq!(e.message, "expected ';' or the end of the query, found 'T'");
        assert_eq!(loc(src, &e), (2, 1));

        let src = "T\n| where Name == \"évé\n| take 1";
        let e = parse_err(src);
        assert_eq!(e.message, "unterminated string literal");
        assert_eq!(loc(src, &e), (2, 17));

        let src = "datatable(a: lng)[1]";
        let e = parse_err(src);
        assert_eq!(e.message, "unknown type 'lng'");
        assert_eq!(e.suggestion.as_deref(), Some("long"));
        assert_eq!(e.span, Some(Span::new(13, 16)));

        let src = "T | render chart with (title = 'x'";
        assert_eq!(parse_err(src).message, "this '(' is never closed");

        let e = parse_err("T | ");
        assert_eq!(
            e.message,
            "expected an operator after '|', found the end of the query"
        );
    }

    // ----- limits -----

    #[test]
    fn nesting_is_capped_without_overflowing_the_stack() {
        type Gen = fn(usize) -> String;
        fn deep(open: &str, close: &str, n: usize) -> String {
            format!("T | where {}x{}", open.repeat(n), close.repeat(n))
        }
        let constructs: [(&str, Gen); 10] = [
            ("parentheses", |n| deep("(", ")", n)),
            ("calls", |n| deep("f(", ")", n)),
            ("signs", |n| deep("-", "", n)),
            ("pipelines", |n| deep("(T | where ", ")", n)),
            ("dynamic", |n| {
                format!("T | where dynamic({}1{})", "[".repeat(n), "]".repeat(n))
            }),
            ("joins", |n| {
                format!(
                    "T | join {}U{} on A",
                    "(U | join ".repeat(n),
                    " on A)".repeat(n)
                )
            }),
            ("functions", |n| {
                format!("{}T{}", "let f = () { ".repeat(n), " }; f".repeat(n))
            }),
            ("evaluate sources", |n| {
                format!("{}1{}", "evaluate p(".repeat(n), ")".repeat(n))
            }),
            ("forks", |n| {
                format!("T | {}take 1{}", "fork (".repeat(n), ")".repeat(n))
            }),
            ("partitions", |n| {
                format!(
                    "T | {}take 1{}",
                    "partition by A { T | ".repeat(n),
                    " }".repeat(n)
                )
            }),
        ];
        // On a thread with a 2 MiB stack (a test thread's, a tokio worker's), the deepest input
        // accepted parses; one level more is refused; far more is refused without recursing.
        let run = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                for (what, make) in constructs {
                    let mut deepest = 0;
                    while parse_query(&make(deepest + 1)).is_ok() {
                        deepest += 1;
                    }
                    assert!(
                        deepest >= MAX_NESTING / 2 - 1,
                        "{what}: only {deepest} levels"
                    );
                    for n in [deepest + 1, 100_000] {
                        let e = parse_err(&make(n));
                        assert_eq!(e.kind, ErrorKind::Unsupported, "{what}");
                        assert!(
                            e.message.contains("nested too deeply"),
                            "{what}: {}",
                            e.message
                        );
                    }
                }
            });
        assert!(run.expect("spawn").join().is_ok());
    }

    #[test]
    fn operator_chains_are_capped() {
        let chain = |op: &str, n: usize| format!("T | where a{}", format!(" {op} a").repeat(n));
        // Long `or` chains are common in hunting queries.
        let q = parse_ok(&chain("or", MAX_HEIGHT - 10));
        drop(q);
        for src in [
            chain("+", MAX_HEIGHT),
            chain("or", 100_000),
            format!("T | where a{}", ".b".repeat(100_000)),
            format!("T | where a{}", "[0]".repeat(100_000)),
        ] {
            let e = parse_err(&src);
            assert!(e.message.contains("nested too deeply"), "{}", e.message);
        }
    }
}
