//! From a KQL syntax tree to a DataFusion logical plan.
//!
//! The planner owns the *shape* of a query: name resolution (`let`s, user functions, tables),
//! tabular operators, and Kusto's column-naming rules. Scalar meaning (operators, functions,
//! type rules) comes from `rampart-kql-functions`.
//!
//! Every operator's output has unqualified, unique column names, so that a column is always
//! found by the name the user sees.

mod expand;
mod expr;
pub(crate) mod ops;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use rampart_kql_syntax::ast::{self, Span};
use rampart_kql_syntax::{KqlError, nearest};

use crate::catalog::Catalog;

/// A planned query: the logical plan and what `render` asked for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub plan: LogicalPlan,
    /// The chart type of a trailing `render` (e.g. `timechart`).
    pub chart: Option<String>,
}

/// Runs a sub-plan while planning, for operators whose output columns depend on the data
/// (`evaluate bag_unpack`).
pub type Runner<'a> = &'a dyn Fn(LogicalPlan) -> Result<Vec<RecordBatch>, KqlError>;

/// Plans a parsed query over `catalog`. Without a `runner`, data-dependent operators are
/// refused.
pub fn plan_query(
    query: &ast::Query,
    catalog: &dyn Catalog,
    runner: Option<Runner<'_>>,
) -> Result<Plan, KqlError> {
    let mut planner = Planner::new(catalog, runner);
    for l in &query.lets {
        planner.bind_let(l)?;
    }
    let Some(body) = &query.body else {
        return Err(KqlError::semantic(
            "the query has no tabular expression to return (only `let` statements)",
            query.lets.last().map_or(Span::default(), |l| l.name.span),
        ));
    };
    let plan = planner.tabular(body)?;
    Ok(Plan {
        plan,
        chart: planner.chart,
    })
}

/// Deepest nesting of names resolving to names (`let a = b; let b = a;`) and function calls.
const MAX_DEPTH: usize = 64;

#[derive(Clone)]
enum Binding {
    /// A scalar `let`: planned where it is used (its value may depend on the schema there).
    Scalar(ast::Expr),
    /// A function argument, already planned in the caller's scope.
    Planned(Expr),
    Tabular(Box<LogicalPlan>),
    Function(Box<ast::Function>),
}

pub(crate) struct Planner<'a> {
    catalog: &'a dyn Catalog,
    runner: Option<Runner<'a>>,
    scopes: Vec<HashMap<String, Binding>>,
    chart: Option<String>,
    depth: usize,
    /// Aggregation calls of the `summarize` being planned, already turned into columns of the
    /// aggregate's output (keyed by the call's node address).
    agg_columns: HashMap<*const ast::Expr, String>,
    /// Counter for `Column1`, `Column2`, ... names.
    unnamed: usize,
}

impl<'a> Planner<'a> {
    fn new(catalog: &'a dyn Catalog, runner: Option<Runner<'a>>) -> Planner<'a> {
        Planner {
            catalog,
            runner,
            scopes: vec![HashMap::new()],
            chart: None,
            depth: 0,
            agg_columns: HashMap::new(),
            unnamed: 0,
        }
    }

    fn lookup(&self, name: &str) -> Option<&Binding> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn bind(&mut self, name: &str, binding: Binding) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), binding);
        }
    }

    fn bind_let(&mut self, l: &ast::Let) -> Result<(), KqlError> {
        let binding = match &l.value {
            ast::LetValue::Expr(e) => Binding::Scalar(e.clone()),
            ast::LetValue::Tabular(t) => Binding::Tabular(Box::new(self.tabular(t)?)),
            ast::LetValue::Function(f) => Binding::Function(Box::new(f.clone())),
        };
        self.bind(&l.name.name, binding);
        Ok(())
    }

    fn enter(&mut self, span: Span) -> Result<(), KqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(KqlError::semantic(
                format!("names and functions nest deeper than {MAX_DEPTH} levels (a cycle?)"),
                span,
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Plans a tabular expression: its source, then each operator in turn.
    pub(crate) fn tabular(&mut self, t: &ast::TabExpr) -> Result<LogicalPlan, KqlError> {
        self.enter(t.span)?;
        let result = self.tabular_inner(t);
        self.leave();
        result
    }

    fn tabular_inner(&mut self, t: &ast::TabExpr) -> Result<LogicalPlan, KqlError> {
        let mut plan = self.source(&t.source, t.span)?;
        for op in &t.ops {
            plan = self.operator(plan, op)?;
        }
        Ok(plan)
    }

    fn source(&mut self, source: &ast::Source, span: Span) -> Result<LogicalPlan, KqlError> {
        match source {
            ast::Source::Name(id) => self.tabular_name(id),
            ast::Source::Call { name, args } => self.tabular_call(name, args, None),
            ast::Source::Union(u) => self.union(None, u),
            ast::Source::Datatable {
                columns,
                values,
                span,
            } => self.datatable(columns, values, *span),
            ast::Source::Range {
                column,
                from,
                to,
                step,
            } => self.range(column, from, to, step, span),
            ast::Source::Print(items) => {
                // Kusto names unnamed print columns by position: print_0, print_1, ...
                let named: Vec<ast::NamedExpr> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item.names.is_empty() {
                        true => ast::NamedExpr {
                            names: vec![ast::Ident {
                                name: format!("print_{i}"),
                                span: item.expr.span,
                            }],
                            expr: item.expr.clone(),
                        },
                        false => item.clone(),
                    })
                    .collect();
                let empty = one_row()?;
                self.project(empty, &named, span)
            }
            ast::Source::Paren(t) => self.tabular(t),
            ast::Source::Unsupported(name) => Err(unsupported(name)),
        }
    }

    /// A name in tabular position: a tabular `let`, a function without arguments, a scalar
    /// `let` that names a table (`let T = DeviceEvents;`), or a table.
    fn tabular_name(&mut self, id: &ast::Ident) -> Result<LogicalPlan, KqlError> {
        match self.lookup(&id.name).cloned() {
            Some(Binding::Tabular(plan)) => return Ok(*plan),
            Some(Binding::Function(f)) => return self.call_function(id, &f, &[], None),
            Some(Binding::Scalar(e)) => {
                self.enter(id.span)?;
                let result = self.expr_as_tabular(&e);
                self.leave();
                return result;
            }
            Some(Binding::Planned(_)) => {
                return Err(KqlError::semantic(
                    format!("'{}' is a scalar argument, not a table", id.name),
                    id.span,
                ));
            }
            None => {}
        }
        if let Some(table) = self.catalog.table(&id.name) {
            return scan(&id.name, table, id.span);
        }
        let mut names = self.catalog.table_names();
        names.extend(self.tabular_binding_names());
        Err(
            KqlError::semantic(format!("unknown table '{}'", id.name), id.span)
                .with_suggestion(nearest(&id.name, names.iter().map(String::as_str))),
        )
    }

    fn tabular_binding_names(&self) -> Vec<String> {
        self.scopes
            .iter()
            .flat_map(|s| s.iter())
            .filter(|(_, b)| !matches!(b, Binding::Planned(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A scalar-looking expression in tabular position: a name, a call, or `(T | ...)`.
    fn expr_as_tabular(&mut self, e: &ast::Expr) -> Result<LogicalPlan, KqlError> {
        match &e.kind {
            ast::ExprKind::Name(n) => self.tabular_name(&ast::Ident {
                name: n.clone(),
                span: e.span,
            }),
            ast::ExprKind::Call { name, args } => self.tabular_call(name, args, None),
            ast::ExprKind::Tabular(t) => self.tabular(t),
            _ => Err(KqlError::semantic(
                "a scalar value is used where a table is expected",
                e.span,
            )),
        }
    }

    /// `f(args)` in tabular position; `input` is the piped table for `invoke`.
    fn tabular_call(
        &mut self,
        name: &ast::Ident,
        args: &[ast::Expr],
        input: Option<LogicalPlan>,
    ) -> Result<LogicalPlan, KqlError> {
        if input.is_none() {
            match name.name.as_str() {
                "table" => {
                    let Some(ast::Expr {
                        kind: ast::ExprKind::Literal(ast::Literal::String(t)),
                        span,
                    }) = args.first()
                    else {
                        return Err(KqlError::semantic(
                            "table() takes the table's name as a string",
                            name.span,
                        ));
                    };
                    return self.tabular_name(&ast::Ident {
                        name: t.clone(),
                        span: *span,
                    });
                }
                "materialize" | "view" => {
                    let Some(arg) = args.first() else {
                        return Err(KqlError::semantic(
                            format!("{}() takes a tabular expression", name.name),
                            name.span,
                        ));
                    };
                    return self.expr_as_tabular(arg);
                }
                "externaldata" | "external_table" | "cluster" | "database" | "workspace"
                | "app" | "adx" => {
                    return Err(KqlError::unsupported(
                        format!(
                            "'{}' reads data from outside Rampart's store, which Rampart does not do",
                            name.name
                        ),
                        name.span,
                    ));
                }
                _ => {}
            }
        }
        match self.lookup(&name.name).cloned() {
            Some(Binding::Function(f)) => self.call_function(name, &f, args, input),
            Some(_) if args.is_empty() && input.is_none() => self.tabular_name(name),
            Some(_) => Err(KqlError::semantic(
                format!("'{}' is not a function", name.name),
                name.span,
            )),
            None => {
                let fns: Vec<String> = self
                    .scopes
                    .iter()
                    .flat_map(|s| s.iter())
                    .filter(|(_, b)| matches!(b, Binding::Function(_)))
                    .map(|(n, _)| n.clone())
                    .collect();
                Err(KqlError::semantic(
                    format!("unknown tabular function '{}'", name.name),
                    name.span,
                )
                .with_suggestion(nearest(&name.name, fns.iter().map(String::as_str))))
            }
        }
    }

    /// Calls a user function whose body is tabular.
    fn call_function(
        &mut self,
        name: &ast::Ident,
        f: &ast::Function,
        args: &[ast::Expr],
        input: Option<LogicalPlan>,
    ) -> Result<LogicalPlan, KqlError> {
        self.enter(name.span)?;
        let scope = self.bind_params(name, f, args, input, &DFSchema::empty());
        let result = scope.and_then(|scope| {
            self.scopes.push(scope);
            let r = self.function_body_tabular(f);
            self.scopes.pop();
            r
        });
        self.leave();
        result
    }

    fn function_body_tabular(&mut self, f: &ast::Function) -> Result<LogicalPlan, KqlError> {
        for l in &f.lets {
            self.bind_let(l)?;
        }
        match &f.body {
            ast::LetBody::Tabular(t) => self.tabular(t),
            ast::LetBody::Expr(e) => self.expr_as_tabular(e),
        }
    }

    /// Binds a function's parameters to the call's arguments (or their defaults). `input` is
    /// the piped table of `invoke`, bound to the first parameter.
    fn bind_params(
        &mut self,
        name: &ast::Ident,
        f: &ast::Function,
        args: &[ast::Expr],
        input: Option<LogicalPlan>,
        schema: &DFSchema,
    ) -> Result<HashMap<String, Binding>, KqlError> {
        let mut scope = HashMap::new();
        let mut params = f.params.iter();
        if let Some(plan) = input {
            let Some(p) = params.next() else {
                return Err(KqlError::semantic(
                    format!("'{}' takes no table to invoke it on", name.name),
                    name.span,
                ));
            };
            scope.insert(p.name.name.clone(), Binding::Tabular(Box::new(plan)));
        }
        let params: Vec<&ast::Param> = params.collect();
        if args.len() > params.len() {
            return Err(KqlError::semantic(
                format!(
                    "'{}' takes {} arguments, {} given",
                    name.name,
                    params.len(),
                    args.len()
                ),
                name.span,
            ));
        }
        for (i, p) in params.iter().enumerate() {
            let binding = match (args.get(i), &p.kind) {
                (Some(a), ast::ParamKind::Tabular) => {
                    Binding::Tabular(Box::new(self.expr_as_tabular(a)?))
                }
                (Some(a), ast::ParamKind::Scalar(_)) => Binding::Planned(self.expr(a, schema)?),
                (None, _) => match &p.default {
                    Some(d) => Binding::Scalar(d.clone()),
                    None => {
                        return Err(KqlError::semantic(
                            format!("'{}' needs a value for parameter '{}'", name.name, p.name),
                            name.span,
                        ));
                    }
                },
            };
            scope.insert(p.name.name.clone(), binding);
        }
        Ok(scope)
    }

    /// Calls a user function whose body is scalar, at an expression site.
    fn call_scalar_function(
        &mut self,
        name: &ast::Ident,
        f: &ast::Function,
        args: &[ast::Expr],
        schema: &DFSchema,
    ) -> Result<Expr, KqlError> {
        self.enter(name.span)?;
        let result = self
            .bind_params(name, f, args, None, schema)
            .and_then(|scope| {
                self.scopes.push(scope);
                let r = (|| {
                    for l in &f.lets {
                        self.bind_let(l)?;
                    }
                    match &f.body {
                        ast::LetBody::Expr(e) => self.expr(e, schema),
                        ast::LetBody::Tabular(_) => Err(KqlError::semantic(
                            format!("'{}' returns a table, not a scalar", name.name),
                            name.span,
                        )),
                    }
                })();
                self.scopes.pop();
                r
            });
        self.leave();
        result
    }

    fn next_unnamed(&mut self) -> String {
        self.unnamed += 1;
        format!("Column{}", self.unnamed)
    }
}

/// The refusal of a construct Rampart parses but does not run.
pub(crate) fn unsupported(name: &ast::Ident) -> KqlError {
    let why = match name.name.as_str() {
        "externaldata" => "it reads data from outside Rampart's store",
        "find" | "search" => "it searches every table; query the tables with `union` and `where`",
        _ => "Rampart does not run it yet",
    };
    KqlError::unsupported(
        format!("'{}' is not supported: {why}", name.name),
        name.span,
    )
}

/// A scan of a catalog table.
fn scan(name: &str, table: Arc<dyn TableProvider>, span: Span) -> Result<LogicalPlan, KqlError> {
    df(
        LogicalPlanBuilder::scan(name, provider_as_source(table), None)
            .and_then(LogicalPlanBuilder::build),
        span,
    )
}

/// One row, no columns: the input of `print`.
fn one_row() -> Result<LogicalPlan, KqlError> {
    df(LogicalPlanBuilder::empty(true).build(), Span::default())
}

/// A DataFusion error while building a plan, placed at the operator that caused it.
pub(crate) fn df<T>(r: Result<T, DataFusionError>, span: Span) -> Result<T, KqlError> {
    r.map_err(|e| KqlError::semantic(clean_message(&e), span))
}

/// DataFusion's message without its layers of context ("Optimizer rule ... failed", "caused
/// by", "Error during planning: ") and backtraces: the innermost cause, on one line.
pub(crate) fn clean_message(e: &DataFusionError) -> String {
    let text = e.find_root().to_string();
    let mut s = text.as_str();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "Execution error: ",
        "Internal error: ",
        "This feature is not implemented: ",
        "Arrow error: ",
    ] {
        while let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
        }
    }
    s.lines().next().unwrap_or(s).to_string()
}

/// The column of `schema` with this unqualified name, as an expression.
pub(crate) fn column(schema: &DFSchema, name: &str) -> Option<Expr> {
    schema
        .qualified_field_with_unqualified_name(name)
        .ok()
        .map(|(q, f)| Expr::Column(Column::new(q.cloned(), f.name())))
}

/// The unqualified names of `schema`'s columns, in order.
pub(crate) fn column_names(schema: &DFSchema) -> Vec<String> {
    schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// `*` wildcards in column patterns (`project-away Initiating*`).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(at) = rest.find(part) {
            rest = &rest[at + part.len()..];
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("Device*", "DeviceEvents"));
        assert!(glob_match("*Events", "DeviceEvents"));
        assert!(glob_match("D*e*s", "DeviceEvents"));
        assert!(glob_match("*", "x"));
        assert!(!glob_match("Device*", "EmailEvents"));
        assert!(!glob_match("A*B*C", "AxxC"));
        assert!(glob_match("Name", "Name"));
        assert!(!glob_match("Name", "Names"));
    }
}
