//! Scalar expressions: name resolution here, meaning in `rampart-kql-functions`.

use std::sync::Arc;

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::functions::expr_fn::lower;
use datafusion::logical_expr::expr::InSubquery;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, Subquery, lit};
use rampart_kql_functions::{self as functions, FnError};
use rampart_kql_syntax::ast::{self, BinaryOp, ExprKind, Literal, StrOp, StrOpKind};
use rampart_kql_syntax::{ErrorKind, KqlError, nearest};

use super::{Binding, Planner, column, column_names, df};

/// Old Kusto names that hunting queries still use, and their current names.
pub(crate) fn canonical_function(name: &str) -> &str {
    match name {
        "makeset" => "make_set",
        "makelist" => "make_list",
        "make_set_with_nulls" => "make_set",
        "parsejson" => "parse_json",
        "argmax" => "arg_max",
        "argmin" => "arg_min",
        "any" => "take_any",
        "anyif" => "take_anyif",
        "iif" => "iff",
        "todouble" => "toreal",
        "tostring_cs" => "tostring",
        other => other,
    }
}

impl Planner<'_> {
    /// Plans a scalar expression over `schema`.
    pub(crate) fn expr(&mut self, e: &ast::Expr, schema: &DFSchema) -> Result<Expr, KqlError> {
        match &e.kind {
            ExprKind::Literal(l) => Ok(functions::literal(l)),
            ExprKind::Name(n) => self.name(n, e, schema),
            ExprKind::Side { .. } => Err(KqlError::semantic(
                "$left and $right are only valid in a join's `on` clause",
                e.span,
            )),
            ExprKind::Member { base, name } => {
                let b = self.expr(base, schema)?;
                Ok(functions::member(b, name))
            }
            ExprKind::Index { base, index } => {
                let b = self.expr(base, schema)?;
                if let ExprKind::Literal(Literal::String(k)) = &index.kind {
                    return Ok(functions::member(b, k));
                }
                let i = self.expr(index, schema)?;
                functions::index(b, i, schema).map_err(|err| fn_error(err, "[]", e.span))
            }
            ExprKind::Call { name, args } => self.call(e, name, args, schema),
            ExprKind::Unary { op, expr } => {
                let x = self.expr(expr, schema)?;
                functions::unary(*op, x, schema).map_err(|err| fn_error(err, "operator", e.span))
            }
            ExprKind::Binary { op, left, right } => self.binary(*op, left, right, e, schema),
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let x = self.expr(expr, schema)?;
                let lo = self.expr(low, schema)?;
                let hi = self.expr(high, schema)?;
                functions::between(x, lo, hi, *negated, schema)
                    .map_err(|err| fn_error(err, "between", e.span))
            }
            ExprKind::List(_) => Err(KqlError::semantic(
                "a parenthesised list is only valid after `in`, `has_any` or `has_all`",
                e.span,
            )),
            ExprKind::Star => Err(KqlError::semantic(
                "`*` is only valid as an argument of arg_max, arg_min or take_any",
                e.span,
            )),
            ExprKind::Tabular(_) => Err(KqlError::semantic(
                "a tabular expression is used where a scalar is expected (use toscalar())",
                e.span,
            )),
            // `bin(Name = Timestamp, 1h)` in `summarize ... by` names the key; the value is the
            // argument (the name is taken by the summarize planner).
            ExprKind::NamedArg { value, .. } => self.expr(value, schema),
        }
    }

    fn name(&mut self, n: &str, e: &ast::Expr, schema: &DFSchema) -> Result<Expr, KqlError> {
        if let Some(c) = column(schema, n) {
            return Ok(c);
        }
        match self.lookup(n).cloned() {
            Some(Binding::Planned(x)) => Ok(x),
            Some(Binding::Scalar(v)) => {
                self.enter(e.span)?;
                let r = self.expr(&v, schema);
                self.leave();
                r
            }
            Some(Binding::Tabular(_)) => Err(KqlError::semantic(
                format!("'{n}' is a table, used here as a scalar (use toscalar({n}))"),
                e.span,
            )),
            Some(Binding::Function(f)) if f.params.is_empty() => {
                let id = ast::Ident {
                    name: n.to_string(),
                    span: e.span,
                };
                self.call_scalar_function(&id, &f, &[], schema)
            }
            Some(Binding::Function(_)) => Err(KqlError::semantic(
                format!("'{n}' is a function; call it with ()"),
                e.span,
            )),
            None => {
                let mut names = column_names(schema);
                names.extend(self.tabular_binding_names());
                Err(
                    KqlError::semantic(format!("unknown column or name '{n}'"), e.span)
                        .with_suggestion(nearest(n, names.iter().map(String::as_str))),
                )
            }
        }
    }

    fn call(
        &mut self,
        e: &ast::Expr,
        name: &ast::Ident,
        args: &[ast::Expr],
        schema: &DFSchema,
    ) -> Result<Expr, KqlError> {
        if let Some(c) = self.agg_columns.get(&(e as *const ast::Expr)) {
            return column(schema, c)
                .ok_or_else(|| KqlError::semantic("aggregation is not valid here", e.span));
        }
        if let Some(Binding::Function(f)) = self.lookup(&name.name).cloned() {
            return self.call_scalar_function(name, &f, args, schema);
        }
        let fname = canonical_function(&name.name);
        match fname {
            "toscalar" => return self.toscalar(name, args),
            // `typeof(long)` names a type; the function library takes it as a string.
            "typeof" => {
                if let [
                    ast::Expr {
                        kind: ExprKind::Name(t),
                        ..
                    },
                ] = args
                    && ast::TypeName::from_name(t).is_some()
                {
                    return Ok(lit(t.clone()));
                }
                return Err(KqlError::semantic(
                    "typeof() takes a type name, e.g. typeof(long)",
                    name.span,
                ));
            }
            "column_ifexists" => {
                let (Some(c), Some(default)) = (args.first(), args.get(1)) else {
                    return Err(arity("column_ifexists", "2", args.len(), name.span));
                };
                let ExprKind::Literal(Literal::String(col)) = &c.kind else {
                    return Err(KqlError::semantic(
                        "column_ifexists() takes the column's name as a string",
                        c.span,
                    ));
                };
                return match column(schema, col) {
                    Some(x) => Ok(x),
                    None => self.expr(default, schema),
                };
            }
            "extractjson" | "extract_json" => return self.extract_json(name, args, schema),
            "pack_all" => {
                let mut kv = Vec::new();
                for n in column_names(schema) {
                    if let Some(c) = column(schema, &n) {
                        kv.push(lit(n));
                        kv.push(c);
                    }
                }
                return functions::scalar("bag_pack", kv, schema)
                    .map_err(|err| fn_error(err, "pack_all", name.span));
            }
            _ => {}
        }
        if functions::is_aggregate(fname) || matches!(fname, "arg_max" | "arg_min" | "percentiles")
        {
            return Err(KqlError::semantic(
                format!("aggregation '{fname}' is only valid in summarize (or make-series)"),
                name.span,
            ));
        }
        let planned = self.args(args, schema)?;
        functions::scalar(fname, planned, schema).map_err(|err| {
            let e = fn_error(err, fname, name.span);
            if e.kind == ErrorKind::Semantic
                && e.suggestion.is_none()
                && e.message.starts_with("unknown function")
            {
                e.with_suggestion(self.function_suggestion(fname))
            } else {
                e
            }
        })
    }

    /// `extract_json("$.a.b[0]", text [, typeof(t)])`: the JSONPath walked as member and index
    /// accesses over the parsed text.
    fn extract_json(
        &mut self,
        name: &ast::Ident,
        args: &[ast::Expr],
        schema: &DFSchema,
    ) -> Result<Expr, KqlError> {
        let (Some(path), Some(text)) = (args.first(), args.get(1)) else {
            return Err(arity(&name.name, "2 or 3", args.len(), name.span));
        };
        let ExprKind::Literal(Literal::String(path_text)) = &path.kind else {
            return Err(KqlError::semantic(
                format!("{}() takes the JSONPath as a string literal", name.name),
                path.span,
            ));
        };
        let steps = json_path(path_text).ok_or_else(|| {
            KqlError::semantic(
                format!("'{path_text}' is not a JSONPath Rampart reads ($.a.b, $['a'], $.a[0])"),
                path.span,
            )
        })?;
        let t = self.expr(text, schema)?;
        let mut value = functions::scalar("parse_json", vec![t], schema)
            .map_err(|err| fn_error(err, &name.name, name.span))?;
        for step in steps {
            value = match step {
                PathStep::Key(k) => functions::member(value, &k),
                PathStep::Index(i) => functions::index(value, lit(i), schema)
                    .map_err(|err| fn_error(err, &name.name, name.span))?,
            };
        }
        match args.get(2) {
            Some(ast::Expr {
                kind:
                    ExprKind::Call {
                        name: f,
                        args: targs,
                    },
                ..
            }) if f.name == "typeof" => match targs.as_slice() {
                [
                    ast::Expr {
                        kind: ExprKind::Name(tn),
                        span,
                    },
                ] => {
                    let ty = ast::TypeName::from_name(tn)
                        .ok_or_else(|| KqlError::semantic(format!("unknown type '{tn}'"), *span))?;
                    functions::cast(value, ty, schema)
                        .map_err(|err| fn_error(err, &name.name, name.span))
                }
                _ => Err(KqlError::semantic("typeof() takes a type name", f.span)),
            },
            Some(other) => Err(KqlError::semantic("expected typeof(type)", other.span)),
            None => Ok(value),
        }
    }

    pub(crate) fn args(
        &mut self,
        args: &[ast::Expr],
        schema: &DFSchema,
    ) -> Result<Vec<Expr>, KqlError> {
        args.iter().map(|a| self.expr(a, schema)).collect()
    }

    pub(crate) fn function_suggestion(&self, name: &str) -> Option<String> {
        let user: Vec<String> = self
            .scopes
            .iter()
            .flat_map(|s| s.iter())
            .filter(|(_, b)| matches!(b, Binding::Function(_)))
            .map(|(n, _)| n.clone())
            .collect();
        let mut all: Vec<&str> = functions::names().collect();
        all.extend(user.iter().map(String::as_str));
        nearest(name, all)
    }

    /// `toscalar(T)`: the first column of the first row.
    fn toscalar(&mut self, name: &ast::Ident, args: &[ast::Expr]) -> Result<Expr, KqlError> {
        let Some(arg) = args.first() else {
            return Err(arity("toscalar", "1", 0, name.span));
        };
        let plan = self.expr_as_tabular(arg)?;
        let plan = first_column(plan, arg.span)?;
        let plan = df(
            LogicalPlanBuilder::from(plan)
                .limit(0, Some(1))
                .and_then(LogicalPlanBuilder::build),
            arg.span,
        )?;
        Ok(Expr::ScalarSubquery(Subquery {
            subquery: Arc::new(plan),
            outer_ref_columns: vec![],
            spans: Default::default(),
        }))
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        left: &ast::Expr,
        right: &ast::Expr,
        e: &ast::Expr,
        schema: &DFSchema,
    ) -> Result<Expr, KqlError> {
        if let BinaryOp::Str(s) = op
            && matches!(
                s.kind,
                StrOpKind::In | StrOpKind::HasAny | StrOpKind::HasAll
            )
        {
            return self.in_list(s, left, right, e, schema);
        }
        let l = self.expr(left, schema)?;
        let r = self.expr(right, schema)?;
        functions::binary(op, l, r, schema).map_err(|err| fn_error(err, "operator", e.span))
    }

    /// `in`, `has_any`, `has_all` and their forms: the right side is a list whose items may be
    /// dynamic arrays (expanded) or one tabular expression (a subquery on its first column).
    fn in_list(
        &mut self,
        op: StrOp,
        left: &ast::Expr,
        right: &ast::Expr,
        e: &ast::Expr,
        schema: &DFSchema,
    ) -> Result<Expr, KqlError> {
        let items: Vec<&ast::Expr> = match &right.kind {
            ExprKind::List(items) => items.iter().collect(),
            _ => vec![right],
        };
        let l = self.expr(left, schema)?;
        // One tabular item: `x in (T | project y)` or `x in (letTable)`.
        if op.kind == StrOpKind::In
            && let [item] = items.as_slice()
            && self.is_tabular(item)
        {
            let plan = self.expr_as_tabular(item)?;
            let plan = first_column(plan, item.span)?;
            let (l, plan) = if op.case_sensitive {
                (l, plan)
            } else {
                let col = plan
                    .schema()
                    .columns()
                    .into_iter()
                    .next()
                    .map(Expr::Column)
                    .ok_or_else(|| KqlError::semantic("the table has no column", item.span))?;
                let lowered = df(
                    LogicalPlanBuilder::from(plan)
                        .project(vec![lower(col)])
                        .and_then(LogicalPlanBuilder::build),
                    item.span,
                )?;
                (lower(l), lowered)
            };
            return Ok(Expr::InSubquery(InSubquery::new(
                Box::new(l),
                Subquery {
                    subquery: Arc::new(plan),
                    outer_ref_columns: vec![],
                    spans: Default::default(),
                },
                op.negated,
            )));
        }
        let mut list = Vec::new();
        for item in items {
            if let Some(values) = self.literal_array(item) {
                list.extend(values.iter().map(json_literal));
            } else if self.is_tabular(item) {
                return Err(KqlError::semantic(
                    "a table in a list is only valid as the single item of `in`",
                    item.span,
                ));
            } else {
                list.push(self.expr(item, schema)?);
            }
        }
        functions::in_list(op, l, list, schema).map_err(|err| fn_error(err, "in", e.span))
    }

    /// Whether an expression names or is a table.
    fn is_tabular(&self, e: &ast::Expr) -> bool {
        match &e.kind {
            ExprKind::Tabular(_) => true,
            ExprKind::Name(n) => match self.lookup(n) {
                Some(Binding::Tabular(_)) => true,
                Some(Binding::Scalar(v)) => {
                    matches!(&v.kind, ExprKind::Name(t) if self.catalog.table(t).is_some())
                        || matches!(&v.kind, ExprKind::Tabular(_))
                }
                Some(Binding::Function(f)) => {
                    f.params.is_empty() && matches!(f.body, ast::LetBody::Tabular(_))
                }
                Some(Binding::Planned(_)) => false,
                None => self.catalog.table(n).is_some(),
            },
            ExprKind::Call { name, .. } => {
                matches!(
                    self.lookup(&name.name),
                    Some(Binding::Function(f)) if matches!(f.body, ast::LetBody::Tabular(_))
                ) || name.name == "materialize"
            }
            _ => false,
        }
    }

    /// The elements of a `dynamic([...])` literal, directly or through a scalar `let`.
    fn literal_array(&self, e: &ast::Expr) -> Option<Vec<serde_json::Value>> {
        match &e.kind {
            ExprKind::Literal(Literal::Dynamic(serde_json::Value::Array(a))) => Some(a.clone()),
            ExprKind::Name(n) => match self.lookup(n) {
                Some(Binding::Scalar(v)) => self.literal_array(v),
                _ => None,
            },
            ExprKind::Call { name, args } if name.name == "pack_array" => args
                .iter()
                .map(|a| match &a.kind {
                    ExprKind::Literal(Literal::String(s)) => {
                        Some(serde_json::Value::String(s.clone()))
                    }
                    ExprKind::Literal(Literal::Long(n)) => Some(serde_json::Value::from(*n)),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

enum PathStep {
    Key(String),
    Index(i64),
}

/// The steps of a simple JSONPath: `$`, then `.name`, `['name']` or `[index]` steps.
fn json_path(path: &str) -> Option<Vec<PathStep>> {
    let mut rest = path.trim().strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(PathStep::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            let quoted = inner
                .strip_prefix('\'')
                .and_then(|x| x.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')));
            match quoted {
                Some(k) => steps.push(PathStep::Key(k.to_string())),
                None => steps.push(PathStep::Index(inner.parse().ok()?)),
            }
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// A JSON element of a literal array as a scalar literal (strings raw, numbers as numbers).
fn json_literal(v: &serde_json::Value) -> Expr {
    match v {
        serde_json::Value::String(s) => lit(s.clone()),
        serde_json::Value::Bool(b) => lit(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => lit(i),
            None => lit(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::Null => Expr::Literal(ScalarValue::Utf8(None), None),
        other => lit(other.to_string()),
    }
}

/// Keeps only the first column of a plan (the value of `toscalar` and `in (T)`).
fn first_column(
    plan: datafusion::logical_expr::LogicalPlan,
    span: ast::Span,
) -> Result<datafusion::logical_expr::LogicalPlan, KqlError> {
    let Some(first) = plan.schema().columns().into_iter().next() else {
        return Err(KqlError::semantic("the table has no column", span));
    };
    // A name of its own, so that it never clashes with the outer query's columns when both
    // read the same table (DataFusion's decorrelation joins the two).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "__subquery{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    df(
        LogicalPlanBuilder::from(plan)
            .project(vec![Expr::Column(first).alias(name)])
            .and_then(LogicalPlanBuilder::build),
        span,
    )
}

pub(crate) fn arity(name: &str, expected: &str, found: usize, span: ast::Span) -> KqlError {
    KqlError::semantic(
        format!("{name}() takes {expected} arguments, {found} given"),
        span,
    )
}

/// A function library refusal, located at the call.
pub(crate) fn fn_error(err: FnError, name: &str, span: ast::Span) -> KqlError {
    match err {
        FnError::Unknown => KqlError::semantic(format!("unknown function '{name}'"), span),
        FnError::Arity { expected, found } => arity(name, &expected, found, span),
        FnError::Type(m) => KqlError::semantic(m, span),
        FnError::Unsupported(m) => KqlError::unsupported(m, span),
    }
}
