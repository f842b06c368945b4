//! Tabular operators: each takes the plan so far and returns the plan after the operator.

use std::collections::HashSet;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, ScalarValue, UnnestOptions};
use datafusion::functions_aggregate::expr_fn::{count, first_value};
use datafusion::logical_expr::{
    Expr, ExprSchemable, JoinType, LogicalPlan, LogicalPlanBuilder, SortExpr, cast, lit, try_cast,
};
use rampart_kql_functions as functions;
use rampart_kql_syntax::ast::{self, ExprKind, OperatorKind, Span};
use rampart_kql_syntax::{KqlError, nearest};
use serde_json::Value;

use super::expr::{canonical_function, fn_error};
use super::{Binding, Planner, column, column_names, df, glob_match};
use crate::naming::{self, UniqueNames};

/// Most columns `bag_unpack` makes (one per distinct property name).
const MAX_UNPACKED_COLUMNS: usize = 1024;

/// Most rows `take`/`top` accept as a count (Kusto's own limit is the result-set limit).
const MAX_TAKE: i64 = i64::MAX / 2;

impl Planner<'_> {
    pub(crate) fn operator(
        &mut self,
        plan: LogicalPlan,
        op: &ast::Operator,
    ) -> Result<LogicalPlan, KqlError> {
        let span = op.span;
        match &op.kind {
            OperatorKind::Where(e) => {
                let predicate = functions::filter_predicate(self.expr(e, plan.schema())?);
                build(LogicalPlanBuilder::from(plan).filter(predicate), span)
            }
            OperatorKind::Project(items) => self.project(plan, items, span),
            OperatorKind::Extend(items) | OperatorKind::Serialize(items) => {
                self.extend(plan, items, span)
            }
            OperatorKind::ProjectAway(patterns) => {
                let matched = matching(plan.schema(), patterns, true)?;
                let keep: Vec<String> = column_names(plan.schema())
                    .into_iter()
                    .filter(|n| !matched.contains(n))
                    .collect();
                select(plan, &keep, span)
            }
            OperatorKind::ProjectKeep(patterns) => {
                let matched = matching(plan.schema(), patterns, true)?;
                let keep: Vec<String> = column_names(plan.schema())
                    .into_iter()
                    .filter(|n| matched.contains(n))
                    .collect();
                select(plan, &keep, span)
            }
            OperatorKind::ProjectRename(pairs) => {
                let schema = plan.schema().clone();
                let mut exprs = Vec::new();
                if let Some((_, old)) = pairs
                    .iter()
                    .find(|(_, old)| column(&schema, &old.name).is_none())
                {
                    return Err(unknown_column(&schema, old));
                }
                for n in column_names(&schema) {
                    let c = column(&schema, &n).unwrap_or_else(|| lit(ScalarValue::Null));
                    let renamed = pairs.iter().find(|(_, old)| old.name == n);
                    exprs.push(c.alias(renamed.map_or(n.clone(), |(new, _)| new.name.clone())));
                }
                build(LogicalPlanBuilder::from(plan).project(exprs), span)
            }
            OperatorKind::ProjectReorder(patterns) => {
                let names = column_names(plan.schema());
                let mut order: Vec<String> = Vec::new();
                for p in patterns {
                    let mut hits: Vec<&String> =
                        names.iter().filter(|n| glob_match(&p.name, n)).collect();
                    if hits.is_empty() && !p.name.contains('*') {
                        return Err(unknown_column(plan.schema(), p));
                    }
                    hits.sort();
                    for h in hits {
                        if !order.contains(h) {
                            order.push(h.clone());
                        }
                    }
                }
                for n in &names {
                    if !order.contains(n) {
                        order.push(n.clone());
                    }
                }
                select(plan, &order, span)
            }
            OperatorKind::Summarize { aggs, by } => self.summarize(plan, aggs, by, span),
            OperatorKind::Count => build(
                LogicalPlanBuilder::from(plan)
                    .aggregate(Vec::<Expr>::new(), vec![count(lit(1i64)).alias("Count")]),
                span,
            ),
            OperatorKind::Take(n) | OperatorKind::Sample(n) => {
                let n = self.row_count(n, plan.schema())?;
                build(LogicalPlanBuilder::from(plan).limit(0, Some(n)), span)
            }
            OperatorKind::Top { n, by } => {
                let n = self.row_count(n, plan.schema())?;
                let sorts = self.sort_keys(by, plan.schema())?;
                build(
                    LogicalPlanBuilder::from(plan).sort_with_limit(sorts, Some(n)),
                    span,
                )
            }
            OperatorKind::Sort(keys) => {
                let sorts = self.sort_keys(keys, plan.schema())?;
                build(LogicalPlanBuilder::from(plan).sort(sorts), span)
            }
            OperatorKind::Distinct { all, columns } => {
                if *all {
                    return build(LogicalPlanBuilder::from(plan).distinct(), span);
                }
                let items: Vec<ast::NamedExpr> = columns
                    .iter()
                    .map(|c| ast::NamedExpr {
                        names: vec![],
                        expr: c.clone(),
                    })
                    .collect();
                let projected = self.project(plan, &items, span)?;
                build(LogicalPlanBuilder::from(projected).distinct(), span)
            }
            OperatorKind::Join { kind, right, on } => {
                let right = self.tabular(right)?;
                self.join(plan, right, *kind, on, false, span)
            }
            OperatorKind::Lookup { inner, right, on } => {
                let right = self.tabular(right)?;
                let kind = if *inner {
                    ast::JoinKind::Inner
                } else {
                    ast::JoinKind::LeftOuter
                };
                self.join(plan, right, kind, on, true, span)
            }
            OperatorKind::Union(u) => self.union(Some(plan), u),
            OperatorKind::MvExpand { items, limit } => self.mv_expand(plan, items, limit, span),
            OperatorKind::Parse { kind, expr, parts } => self.parse(plan, *kind, expr, parts, span),
            OperatorKind::Evaluate { plugin, args } => self.evaluate(plan, plugin, args),
            OperatorKind::MakeSeries(_) => Err(KqlError::unsupported(
                "make-series is not supported yet; use summarize ... by bin(Timestamp, step)",
                span,
            )),
            OperatorKind::Render { chart } => {
                self.chart = Some(chart.name.clone());
                Ok(plan)
            }
            OperatorKind::As(name) => {
                self.bind(&name.name, Binding::Tabular(Box::new(plan.clone())));
                Ok(plan)
            }
            OperatorKind::Invoke { function, args } => {
                self.tabular_call(function, args, Some(plan))
            }
            OperatorKind::GetSchema => getschema(&plan, span),
            OperatorKind::Unsupported(name) => Err(super::unsupported(name)),
        }
    }

    /// `project`: exactly the listed expressions, named.
    pub(crate) fn project(
        &mut self,
        plan: LogicalPlan,
        items: &[ast::NamedExpr],
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        let schema = plan.schema().clone();
        let mut names = UniqueNames::default();
        let mut exprs = Vec::with_capacity(items.len());
        for item in items {
            let e = self.expr(&item.expr, &schema)?;
            let name = self.item_name(item, naming::natural_name(&item.expr))?;
            exprs.push(e.alias(names.claim(&name)));
        }
        build(LogicalPlanBuilder::from(plan).project(exprs), span)
    }

    /// `extend`: every column, then the new ones; a new column with an existing name replaces
    /// it in place. Items are planned one after the other, so later ones see earlier ones.
    fn extend(
        &mut self,
        mut plan: LogicalPlan,
        items: &[ast::NamedExpr],
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        for item in items {
            let schema = plan.schema().clone();
            let e = self.expr(&item.expr, &schema)?;
            let name = match naming::natural_name(&item.expr) {
                // `extend Col` of an existing column without a new name is a no-op in Kusto;
                // a member path gets its joined name.
                Some(n) if item.names.is_empty() && column(&schema, &n).is_some() => continue,
                natural => self.item_name(item, natural)?,
            };
            let mut exprs: Vec<Expr> = Vec::new();
            let mut replaced = false;
            for n in column_names(&schema) {
                if n == name {
                    exprs.push(e.clone().alias(&name));
                    replaced = true;
                } else if let Some(c) = column(&schema, &n) {
                    exprs.push(c.alias(n));
                }
            }
            if !replaced {
                exprs.push(e.alias(&name));
            }
            plan = build(LogicalPlanBuilder::from(plan).project(exprs), span)?;
        }
        Ok(plan)
    }

    /// The name of a `name = expr` item, or its natural name, or `ColumnN`.
    fn item_name(
        &mut self,
        item: &ast::NamedExpr,
        natural: Option<String>,
    ) -> Result<String, KqlError> {
        match item.names.as_slice() {
            [] => Ok(natural.unwrap_or_else(|| self.next_unnamed())),
            [one] => Ok(one.name.clone()),
            [_, second, ..] => Err(KqlError::unsupported(
                "assigning several names at once `(a, b) = ...` is not supported",
                second.span,
            )),
        }
    }

    /// A constant row count for `take`/`top`/`sample`.
    fn row_count(&mut self, n: &ast::Expr, schema: &DFSchema) -> Result<usize, KqlError> {
        let e = self.expr(n, schema)?;
        let value = match &e {
            Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
            Expr::Literal(ScalarValue::Int32(Some(v)), _) => Some(i64::from(*v)),
            _ => None,
        };
        match value {
            Some(v) if (0..=MAX_TAKE).contains(&v) => Ok(usize::try_from(v).unwrap_or(usize::MAX)),
            _ => Err(KqlError::semantic(
                "expected a constant, non-negative row count",
                n.span,
            )),
        }
    }

    fn sort_keys(
        &mut self,
        keys: &[ast::SortKey],
        schema: &DFSchema,
    ) -> Result<Vec<SortExpr>, KqlError> {
        keys.iter()
            .map(|k| {
                let e = self.expr(&k.expr, schema)?;
                // Kusto: nulls last when descending, first when ascending, unless told.
                let nulls_first = k.nulls_first.unwrap_or(k.ascending);
                Ok(e.sort(k.ascending, nulls_first))
            })
            .collect()
    }

    /// `summarize aggs by keys`: keys first, then aggregations, in the order written.
    fn summarize(
        &mut self,
        plan: LogicalPlan,
        aggs: &[ast::NamedExpr],
        by: &[ast::NamedExpr],
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        let input = plan.schema().clone();
        let mut names = UniqueNames::default();

        let mut group = Vec::new();
        let mut key_names = Vec::new();
        for (i, k) in by.iter().enumerate() {
            let e = self.expr(&k.expr, &input)?;
            let natural = naming::group_key_name(&k.expr);
            let name = names.claim(&self.item_name(k, natural)?);
            let internal = format!("__key{i}");
            group.push(e.alias(&internal));
            key_names.push((internal, name));
        }

        // Phase 1: every aggregation call becomes an aggregate expression with an internal name.
        let mut agg_exprs = Vec::new();
        let mut outputs: Vec<Output> = Vec::new();
        for item in aggs {
            let top = multi_output(&item.expr);
            if let Some((fname, args)) = top {
                let cols =
                    self.multi_aggregate(fname, args, &item.expr, &input, by, &mut agg_exprs)?;
                let mut named = Vec::new();
                for (i, (internal, natural)) in cols.into_iter().enumerate() {
                    let name = match (item.names.get(i), i) {
                        (Some(n), _) => n.name.clone(),
                        _ => natural,
                    };
                    named.push((internal, names.claim(&name)));
                }
                outputs.push(Output::Columns(named));
            } else {
                self.collect_aggregates(&item.expr, &input, &mut agg_exprs)?;
                let natural = match &item.expr.kind {
                    ExprKind::Call { name, args }
                        if functions::is_aggregate(canonical_function(&name.name)) =>
                    {
                        Some(naming::aggregate_name(canonical_function(&name.name), args))
                    }
                    _ => None,
                };
                let name = names.claim(&self.item_name(item, natural)?);
                outputs.push(Output::Expr(&item.expr, name));
            }
        }
        let aggregated = build(
            LogicalPlanBuilder::from(plan).aggregate(group, agg_exprs),
            span,
        )?;

        // Phase 2: the items as written, over the aggregate's output.
        let schema = aggregated.schema().clone();
        let mut exprs = Vec::new();
        for (internal, name) in &key_names {
            if let Some(c) = column(&schema, internal) {
                exprs.push(c.alias(name));
            }
        }
        for out in &outputs {
            match out {
                Output::Columns(cols) => {
                    for (internal, name) in cols {
                        if let Some(c) = column(&schema, internal) {
                            exprs.push(c.alias(name));
                        }
                    }
                }
                Output::Expr(e, name) => {
                    let planned = self.expr(e, &schema)?;
                    exprs.push(planned.alias(name));
                }
            }
        }
        self.agg_columns.clear();
        build(LogicalPlanBuilder::from(aggregated).project(exprs), span)
    }

    /// Finds the aggregation calls inside a `summarize` item, plans each over the input, and
    /// records the internal column that stands for it.
    fn collect_aggregates(
        &mut self,
        e: &ast::Expr,
        input: &DFSchema,
        out: &mut Vec<Expr>,
    ) -> Result<(), KqlError> {
        if let ExprKind::Call { name, args } = &e.kind {
            let fname = canonical_function(&name.name);
            if functions::is_aggregate(fname) {
                let planned = self.args(args, input)?;
                let agg = functions::aggregate(fname, planned, input)
                    .map_err(|err| fn_error(err, fname, name.span))?;
                let internal = add_aggregate(out, agg);
                self.agg_columns.insert(e as *const ast::Expr, internal);
                return Ok(());
            }
        }
        for c in children(e) {
            self.collect_aggregates(c, input, out)?;
        }
        Ok(())
    }

    /// `arg_max`/`arg_min`, `percentiles` and `take_any(*)`: aggregations with several output
    /// columns. Returns (internal name, Kusto name) per output column.
    fn multi_aggregate(
        &mut self,
        fname: &str,
        args: &[ast::Expr],
        whole: &ast::Expr,
        input: &DFSchema,
        by: &[ast::NamedExpr],
        out: &mut Vec<Expr>,
    ) -> Result<Vec<(String, String)>, KqlError> {
        let mut cols = Vec::new();
        let mut push = |agg: Expr, natural: String, out: &mut Vec<Expr>| {
            cols.push((add_aggregate(out, agg), natural));
        };
        let by_names: HashSet<String> = by
            .iter()
            .filter_map(|k| {
                k.names
                    .first()
                    .map(|n| n.name.clone())
                    .or_else(|| naming::group_key_name(&k.expr))
            })
            .collect();
        match fname {
            "arg_max" | "arg_min" => {
                let Some((target, rest)) = args.split_first() else {
                    return Err(KqlError::semantic(
                        format!("{fname}() needs the expression to maximise or minimise"),
                        whole.span,
                    ));
                };
                let t = self.expr(target, input)?;
                let at = |value: Expr| match fname {
                    "arg_min" => functions::value_at_min(t.clone(), value, input),
                    _ => functions::value_at_max(t.clone(), value, input),
                };
                let target_name = naming::natural_name(target)
                    .unwrap_or_else(|| format!("{}_", fname.replace('_', "")));
                push(at(t.clone()), target_name.clone(), out);
                for a in rest {
                    if matches!(a.kind, ExprKind::Star) {
                        for n in column_names(input) {
                            if n == target_name || by_names.contains(&n) {
                                continue;
                            }
                            if let Some(c) = column(input, &n) {
                                push(at(c), n, out);
                            }
                        }
                    } else {
                        let e = self.expr(a, input)?;
                        let natural =
                            naming::natural_name(a).unwrap_or_else(|| self.next_unnamed());
                        push(at(e), natural, out);
                    }
                }
            }
            "percentiles" => {
                let Some((x, ps)) = args.split_first() else {
                    return Err(KqlError::semantic(
                        "percentiles() needs a value and percentages",
                        whole.span,
                    ));
                };
                let base = naming::natural_name(x).unwrap_or_default();
                for p in ps {
                    let planned = vec![self.expr(x, input)?, self.expr(p, input)?];
                    let agg = functions::aggregate("percentile", planned, input)
                        .map_err(|err| fn_error(err, "percentiles", whole.span))?;
                    let suffix = naming::number_text(p).unwrap_or_default();
                    push(agg, format!("percentile_{base}_{suffix}"), out);
                }
            }
            _ => {
                // take_any(*) / take_any(a, b): one column per argument, named as they are.
                for a in args {
                    if matches!(a.kind, ExprKind::Star) {
                        for n in column_names(input) {
                            if by_names.contains(&n) {
                                continue;
                            }
                            if let Some(c) = column(input, &n) {
                                push(first_value(c, vec![]), n, out);
                            }
                        }
                    } else {
                        let e = self.expr(a, input)?;
                        let natural =
                            naming::natural_name(a).unwrap_or_else(|| self.next_unnamed());
                        push(first_value(e, vec![]), natural, out);
                    }
                }
            }
        }
        Ok(cols)
    }

    /// `join` (and `lookup`, which drops the right side's key columns). Kusto keeps both sides'
    /// columns; a right column whose name is taken gets a numeric suffix (`DeviceId1`).
    fn join(
        &mut self,
        left: LogicalPlan,
        right: LogicalPlan,
        kind: ast::JoinKind,
        on: &[ast::JoinOn],
        lookup: bool,
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        let mut pairs = Vec::new();
        for o in on {
            let (l, r) = match o {
                ast::JoinOn::Same(c) => (c, c),
                ast::JoinOn::Pair { left, right } => (left, right),
            };
            if column(left.schema(), &l.name).is_none() {
                return Err(unknown_column(left.schema(), l));
            }
            if column(right.schema(), &r.name).is_none() {
                return Err(unknown_column(right.schema(), r));
            }
            pairs.push((l.name.clone(), r.name.clone()));
        }
        if pairs.is_empty() {
            return Err(KqlError::semantic("join needs `on` columns", span));
        }
        let left_names = column_names(left.schema());
        let right_names = column_names(right.schema());
        let left = if kind == ast::JoinKind::InnerUnique {
            // One left row per key (any one), as Kusto's default join does.
            let keys: Vec<Expr> = pairs
                .iter()
                .filter_map(|(l, _)| column(left.schema(), l))
                .collect();
            let all: Vec<Expr> = left_names
                .iter()
                .filter_map(|n| column(left.schema(), n))
                .collect();
            build(
                LogicalPlanBuilder::from(left).distinct_on(keys, all, None),
                span,
            )?
        } else {
            left
        };
        let left = build(LogicalPlanBuilder::from(left).alias("__left"), span)?;
        let right = build(LogicalPlanBuilder::from(right).alias("__right"), span)?;
        let mut lkeys = Vec::new();
        let mut rkeys = Vec::new();
        for (l, r) in &pairs {
            let lk = Expr::Column(Column::new(Some("__left"), l));
            let rk = Expr::Column(Column::new(Some("__right"), r));
            let lt = df(lk.get_type(left.schema()), span)?;
            let rt = df(rk.get_type(right.schema()), span)?;
            if lt == rt {
                lkeys.push(lk);
                rkeys.push(rk);
            } else {
                // Keys of different types (int vs long, string vs number) meet as the left's.
                lkeys.push(lk);
                rkeys.push(try_cast(rk, lt));
            }
        }
        let join_type = match kind {
            ast::JoinKind::InnerUnique | ast::JoinKind::Inner => JoinType::Inner,
            ast::JoinKind::LeftOuter => JoinType::Left,
            ast::JoinKind::RightOuter => JoinType::Right,
            ast::JoinKind::FullOuter => JoinType::Full,
            ast::JoinKind::LeftSemi => JoinType::LeftSemi,
            ast::JoinKind::RightSemi => JoinType::RightSemi,
            ast::JoinKind::LeftAnti => JoinType::LeftAnti,
            ast::JoinKind::RightAnti => JoinType::RightAnti,
        };
        let joined = build(
            LogicalPlanBuilder::from(left).join_with_expr_keys(
                right,
                join_type,
                (lkeys, rkeys),
                None,
            ),
            span,
        )?;
        let side = |q: &str, n: &str| Expr::Column(Column::new(Some(q.to_string()), n));
        let mut exprs = Vec::new();
        match join_type {
            JoinType::LeftSemi | JoinType::LeftAnti => {
                for n in &left_names {
                    exprs.push(side("__left", n).alias(n));
                }
            }
            JoinType::RightSemi | JoinType::RightAnti => {
                for n in &right_names {
                    exprs.push(side("__right", n).alias(n));
                }
            }
            _ => {
                let mut names = UniqueNames::with_taken(left_names.iter().map(String::as_str));
                for n in &left_names {
                    exprs.push(side("__left", n).alias(n));
                }
                for n in &right_names {
                    if lookup && pairs.iter().any(|(_, r)| r == n) {
                        continue;
                    }
                    let name = names.claim(n);
                    exprs.push(side("__right", n).alias(name));
                }
            }
        }
        build(LogicalPlanBuilder::from(joined).project(exprs), span)
    }

    /// `union` of the piped input (if any) and the listed tables, by column name. A column
    /// missing from an input is null there; a column with different types is widened to
    /// string. `kind=inner` keeps only the columns every input has.
    pub(crate) fn union(
        &mut self,
        first: Option<LogicalPlan>,
        u: &ast::Union,
    ) -> Result<LogicalPlan, KqlError> {
        let mut inputs: Vec<(String, LogicalPlan)> = Vec::new();
        if let Some(p) = first {
            inputs.push(("union_arg0".to_string(), p));
        }
        for t in &u.tables {
            match t {
                ast::UnionTable::Tab(tab) => {
                    let name = match (&tab.source, tab.ops.is_empty()) {
                        (ast::Source::Name(n), true) => n.name.clone(),
                        _ => format!("union_arg{}", inputs.len()),
                    };
                    inputs.push((name, self.tabular(tab)?));
                }
                ast::UnionTable::Wildcard(pattern) => {
                    let mut names: Vec<String> = self
                        .catalog
                        .table_names()
                        .into_iter()
                        .filter(|n| glob_match(&pattern.name, n))
                        .collect();
                    names.sort();
                    for n in names {
                        let plan = self.tabular_name(&ast::Ident {
                            name: n.clone(),
                            span: pattern.span,
                        })?;
                        inputs.push((n, plan));
                    }
                }
            }
        }
        if inputs.is_empty() {
            return Err(KqlError::semantic("union matched no table", u.span));
        }
        // The merged columns: first appearance order, first type (string where types differ).
        let mut merged: Vec<(String, DataType)> = Vec::new();
        for (_, p) in &inputs {
            for f in p.schema().fields() {
                match merged.iter_mut().find(|(n, _)| n == f.name()) {
                    Some((_, t)) if t != f.data_type() => *t = DataType::Utf8,
                    Some(_) => {}
                    None => merged.push((f.name().clone(), f.data_type().clone())),
                }
            }
        }
        if u.inner {
            merged.retain(|(n, _)| inputs.iter().all(|(_, p)| column(p.schema(), n).is_some()));
        }
        let mut result: Option<LogicalPlanBuilder> = None;
        for (source, p) in inputs {
            let schema = p.schema().clone();
            let mut exprs = Vec::new();
            if let Some(ws) = &u.with_source {
                exprs.push(lit(source.clone()).alias(&ws.name));
            }
            for (n, t) in &merged {
                let e = match column(&schema, n) {
                    Some(c) => {
                        let ct = df(c.get_type(&schema), u.span)?;
                        if &ct == t { c } else { cast(c, t.clone()) }
                    }
                    None => cast(lit(ScalarValue::Null), t.clone()),
                };
                exprs.push(e.alias(n));
            }
            let projected = build(LogicalPlanBuilder::from(p).project(exprs), u.span)?;
            result = Some(match result {
                None => LogicalPlanBuilder::from(projected),
                Some(b) => df(b.union(projected), u.span)?,
            });
        }
        match result {
            Some(b) => build(Ok(b), u.span),
            None => Err(KqlError::semantic("union matched no table", u.span)),
        }
    }

    /// `mv-expand`: one row per element of a dynamic array (or per property of a bag); several
    /// columns expand side by side.
    fn mv_expand(
        &mut self,
        plan: LogicalPlan,
        items: &[ast::MvExpandItem],
        limit: &Option<ast::Expr>,
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        let schema = plan.schema().clone();
        let mut names = Vec::new();
        let mut replacements: Vec<(String, Expr)> = Vec::new();
        for item in items {
            let e = self.expr(&item.expr, &schema)?;
            let name = match (&item.name, naming::natural_name(&item.expr)) {
                (Some(n), _) => n.name.clone(),
                (None, Some(n)) => n,
                (None, None) => self.next_unnamed(),
            };
            replacements.push((name.clone(), crate::planner::expand::elements(e)));
            names.push((name, item.to_type));
        }
        let mut exprs = Vec::new();
        for n in column_names(&schema) {
            match replacements.iter().position(|(r, _)| *r == n) {
                Some(i) => exprs.push(replacements[i].1.clone().alias(&n)),
                None => {
                    if let Some(c) = column(&schema, &n) {
                        exprs.push(c.alias(&n));
                    }
                }
            }
        }
        for (n, e) in &replacements {
            if column(&schema, n).is_none() {
                exprs.push(e.clone().alias(n));
            }
        }
        let projected = build(LogicalPlanBuilder::from(plan).project(exprs), span)?;
        let cols: Vec<Column> = names
            .iter()
            .map(|(n, _)| Column::new_unqualified(n))
            .collect();
        let mut expanded = build(
            LogicalPlanBuilder::from(projected)
                .unnest_columns_with_options(cols, UnnestOptions::new().with_preserve_nulls(false)),
            span,
        )?;
        if names.iter().any(|(_, t)| t.is_some()) {
            let schema = expanded.schema().clone();
            let mut exprs = Vec::new();
            for n in column_names(&schema) {
                let Some(c) = column(&schema, &n) else {
                    continue;
                };
                let typed = match names.iter().find(|(m, _)| *m == n).and_then(|(_, t)| *t) {
                    Some(t) => functions::cast(c, t, &schema)
                        .map_err(|err| fn_error(err, "mv-expand", span))?,
                    None => c,
                };
                exprs.push(typed.alias(&n));
            }
            expanded = build(LogicalPlanBuilder::from(expanded).project(exprs), span)?;
        }
        if let Some(l) = limit {
            let n = self.row_count(l, expanded.schema())?;
            // Kusto's limit is per input row; a global cap is the closest safe reading.
            expanded = build(LogicalPlanBuilder::from(expanded).limit(0, Some(n)), span)?;
        }
        Ok(expanded)
    }

    /// `parse`: a regex built from the pattern; each named part becomes a column (null where the
    /// text does not match).
    fn parse(
        &mut self,
        plan: LogicalPlan,
        kind: ast::ParseKind,
        source: &ast::Expr,
        parts: &[ast::ParsePart],
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        let schema = plan.schema().clone();
        let text = self.expr(source, &schema)?;
        // Simple patterns match from the start of the text; regex patterns anywhere.
        let mut regex = String::from(if kind == ast::ParseKind::Regex {
            "(?s)"
        } else {
            "(?s)^"
        });
        let mut captures = Vec::new();
        let last_column = parts
            .iter()
            .rposition(|p| matches!(p, ast::ParsePart::Column(..)));
        let ends_with_column = last_column == Some(parts.len().saturating_sub(1));
        for (i, part) in parts.iter().enumerate() {
            match part {
                ast::ParsePart::Text(t) => {
                    if kind == ast::ParseKind::Regex {
                        regex.push_str(t);
                    } else {
                        regex.push_str(&regex_escape(t));
                    }
                }
                ast::ParsePart::Skip => regex.push_str(".*?"),
                ast::ParsePart::Column(name, ty) => {
                    let last = ends_with_column && Some(i) == last_column;
                    regex.push_str(if last { "(.*)" } else { "(.*?)" });
                    captures.push((name.clone(), *ty));
                }
            }
        }
        if ends_with_column {
            regex.push('$');
        }
        let mut items = Vec::new();
        for (group, (name, ty)) in captures.iter().enumerate() {
            let extracted = functions::scalar(
                "extract",
                vec![
                    lit(regex.clone()),
                    lit(i64::try_from(group + 1).unwrap_or(i64::MAX)),
                    text.clone(),
                ],
                &schema,
            )
            .map_err(|err| fn_error(err, "parse", span))?;
            let typed = match ty {
                Some(t) => functions::cast(extracted, *t, &schema)
                    .map_err(|err| fn_error(err, "parse", span))?,
                None => extracted,
            };
            items.push((name.name.clone(), typed));
        }
        let mut exprs = Vec::new();
        for n in column_names(&schema) {
            if items.iter().any(|(m, _)| *m == n) {
                continue;
            }
            if let Some(c) = column(&schema, &n) {
                exprs.push(c.alias(&n));
            }
        }
        for (n, e) in items {
            exprs.push(e.alias(n));
        }
        build(LogicalPlanBuilder::from(plan).project(exprs), span)
    }

    /// `evaluate plugin(...)`: `bag_unpack` only.
    fn evaluate(
        &mut self,
        plan: LogicalPlan,
        plugin: &ast::Ident,
        args: &[ast::Expr],
    ) -> Result<LogicalPlan, KqlError> {
        if plugin.name != "bag_unpack" {
            return Err(KqlError::unsupported(
                format!(
                    "the '{}' plugin is not supported (bag_unpack is)",
                    plugin.name
                ),
                plugin.span,
            ));
        }
        let Some(bag) = args.first() else {
            return Err(KqlError::semantic(
                "bag_unpack() needs the dynamic column to unpack",
                plugin.span,
            ));
        };
        let prefix = match args.get(1).map(|a| &a.kind) {
            Some(ExprKind::Literal(ast::Literal::String(p))) => p.clone(),
            _ => String::new(),
        };
        let schema = plan.schema().clone();
        let bag_expr = self.expr(bag, &schema)?;
        let keys = self.bag_keys(&plan, bag_expr.clone(), plugin.span)?;
        let unpacked_name = naming::natural_name(bag);
        let mut names = UniqueNames::default();
        let mut exprs = Vec::new();
        for n in column_names(&schema) {
            if Some(&n) == unpacked_name.as_ref() {
                continue;
            }
            if let Some(c) = column(&schema, &n) {
                exprs.push(c.alias(names.claim(&n)));
            }
        }
        for k in keys {
            let name = names.claim(&format!("{prefix}{k}"));
            exprs.push(functions::member(bag_expr.clone(), &k).alias(name));
        }
        build(LogicalPlanBuilder::from(plan).project(exprs), plugin.span)
    }

    /// The distinct property names of a dynamic column, found by running a query over the
    /// plan so far (bag_unpack's columns depend on the data).
    fn bag_keys(
        &mut self,
        plan: &LogicalPlan,
        bag: Expr,
        span: Span,
    ) -> Result<Vec<String>, KqlError> {
        let Some(runner) = self.runner else {
            return Err(KqlError::unsupported(
                "bag_unpack needs to read the data to know its columns, which this context does not allow",
                span,
            ));
        };
        let keys = functions::scalar("bag_keys", vec![bag], plan.schema())
            .map_err(|err| fn_error(err, "bag_keys", span))?;
        let probe = build(
            LogicalPlanBuilder::from(plan.clone())
                .project(vec![crate::planner::expand::elements(keys).alias("__key")])
                .and_then(|b| b.unnest_column(Column::new_unqualified("__key")))
                .and_then(LogicalPlanBuilder::distinct)
                .and_then(|b| b.limit(0, Some(MAX_UNPACKED_COLUMNS + 1))),
            span,
        )?;
        let mut out = Vec::new();
        for batch in runner(probe)? {
            let col = batch.column(0);
            for row in 0..batch.num_rows() {
                if let Value::String(k) = crate::results::json_value(col, row) {
                    out.push(k);
                }
            }
        }
        if out.len() > MAX_UNPACKED_COLUMNS {
            return Err(KqlError::semantic(
                format!("bag_unpack would make more than {MAX_UNPACKED_COLUMNS} columns"),
                span,
            ));
        }
        out.sort();
        Ok(out)
    }

    /// `datatable(a: long, ...)[values]`
    pub(crate) fn datatable(
        &mut self,
        columns: &[(ast::Ident, ast::TypeName)],
        values: &[ast::Expr],
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        if columns.is_empty() {
            return Err(KqlError::semantic("datatable needs columns", span));
        }
        if !values.len().is_multiple_of(columns.len()) {
            return Err(KqlError::semantic(
                format!(
                    "datatable has {} columns but {} values (not a whole number of rows)",
                    columns.len(),
                    values.len()
                ),
                span,
            ));
        }
        let empty = DFSchema::empty();
        let mut rows = Vec::new();
        for chunk in values.chunks(columns.len()) {
            let mut row = Vec::new();
            for ((_, t), v) in columns.iter().zip(chunk) {
                let e = self.expr(v, &empty)?;
                row.push(
                    functions::cast(e, *t, &empty)
                        .map_err(|err| fn_error(err, "datatable", v.span))?,
                );
            }
            rows.push(row);
        }
        if rows.is_empty() {
            let mut exprs = Vec::new();
            for (name, t) in columns {
                let null = functions::literal(&ast::Literal::Null(Some(*t)));
                exprs.push(null.alias(&name.name));
            }
            let one = build(LogicalPlanBuilder::empty(false).project(exprs), span)?;
            return Ok(one);
        }
        let values = build(LogicalPlanBuilder::values(rows), span)?;
        let schema = values.schema().clone();
        let exprs: Vec<Expr> = schema
            .columns()
            .into_iter()
            .zip(columns)
            .map(|(c, (name, _))| Expr::Column(c).alias(&name.name))
            .collect();
        build(LogicalPlanBuilder::from(values).project(exprs), span)
    }

    /// `range x from a to b step s` (inclusive), over numbers, datetimes or timespans.
    pub(crate) fn range(
        &mut self,
        column_name: &ast::Ident,
        from: &ast::Expr,
        to: &ast::Expr,
        step: &ast::Expr,
        span: Span,
    ) -> Result<LogicalPlan, KqlError> {
        let empty = DFSchema::empty();
        let f = self.expr(from, &empty)?;
        let t = self.expr(to, &empty)?;
        let s = self.expr(step, &empty)?;
        let ft = df(f.get_type(&empty), from.span)?;
        let as_i64 = |e: Expr| cast(e, DataType::Int64);
        let series =
            datafusion::functions_nested::expr_fn::gen_series(as_i64(f), as_i64(t), as_i64(s));
        let one = build(
            LogicalPlanBuilder::empty(true).project(vec![series.alias(&column_name.name)]),
            span,
        )?;
        let unnested = build(
            LogicalPlanBuilder::from(one).unnest_column(Column::new_unqualified(&column_name.name)),
            span,
        )?;
        let schema = unnested.schema().clone();
        let c = column(&schema, &column_name.name)
            .ok_or_else(|| KqlError::semantic("range produced no column", span))?;
        let typed = if ft.is_integer() { c } else { cast(c, ft) };
        build(
            LogicalPlanBuilder::from(unnested).project(vec![typed.alias(&column_name.name)]),
            span,
        )
    }
}

enum Output<'q> {
    /// Columns produced directly by a multi-output aggregation: (internal, name).
    Columns(Vec<(String, String)>),
    /// An item to plan over the aggregate's output (the node itself: its aggregation calls
    /// are known by address), and its name.
    Expr(&'q ast::Expr, String),
}

/// Adds an aggregation to those of a `summarize` and returns the name of its output column.
///
/// The aggregation goes in unaliased (its column is named after the expression) because
/// DataFusion's rewrites match bare aggregate expressions only. The same aggregation written
/// twice is computed once (an aggregate cannot hold two expressions of the same name).
fn add_aggregate(out: &mut Vec<Expr>, agg: Expr) -> String {
    let name = agg.schema_name().to_string();
    if !out.iter().any(|e| e.schema_name().to_string() == name) {
        out.push(agg);
    }
    name
}

/// The aggregation with several output columns at the top of a `summarize` item, if any.
fn multi_output(e: &ast::Expr) -> Option<(&'static str, &[ast::Expr])> {
    let ExprKind::Call { name, args } = &e.kind else {
        return None;
    };
    let f = canonical_function(&name.name);
    let star = args.iter().any(|a| matches!(a.kind, ExprKind::Star));
    match f {
        "arg_max" => Some(("arg_max", args)),
        "arg_min" => Some(("arg_min", args)),
        "percentiles" => Some(("percentiles", args)),
        "take_any" if star || args.len() > 1 => Some(("take_any", args)),
        _ => None,
    }
}

fn children(e: &ast::Expr) -> Vec<&ast::Expr> {
    let mut v = Vec::new();
    for_each_child(e, &mut |c| v.push(c));
    v
}

fn for_each_child<'e>(e: &'e ast::Expr, f: &mut dyn FnMut(&'e ast::Expr)) {
    match &e.kind {
        ExprKind::Member { base, .. } => f(base),
        ExprKind::Index { base, index } => {
            f(base);
            f(index);
        }
        ExprKind::Call { args, .. } | ExprKind::List(args) => args.iter().for_each(f),
        ExprKind::Unary { expr, .. } => f(expr),
        ExprKind::Binary { left, right, .. } => {
            f(left);
            f(right);
        }
        ExprKind::Between {
            expr, low, high, ..
        } => {
            f(expr);
            f(low);
            f(high);
        }
        ExprKind::NamedArg { value, .. } => f(value),
        ExprKind::Literal(_)
        | ExprKind::Name(_)
        | ExprKind::Side { .. }
        | ExprKind::Star
        | ExprKind::Tabular(_) => {}
    }
}

fn build(
    b: Result<LogicalPlanBuilder, datafusion::error::DataFusionError>,
    span: Span,
) -> Result<LogicalPlan, KqlError> {
    df(b.and_then(LogicalPlanBuilder::build), span)
}

/// Keeps the named columns, in the given order.
fn select(plan: LogicalPlan, names: &[String], span: Span) -> Result<LogicalPlan, KqlError> {
    let schema = plan.schema().clone();
    let exprs: Vec<Expr> = names
        .iter()
        .filter_map(|n| column(&schema, n).map(|c| c.alias(n)))
        .collect();
    build(LogicalPlanBuilder::from(plan).project(exprs), span)
}

/// The columns matching any of the patterns; a pattern without `*` must match a column.
fn matching(
    schema: &DFSchema,
    patterns: &[ast::Ident],
    strict: bool,
) -> Result<HashSet<String>, KqlError> {
    let names = column_names(schema);
    let mut out = HashSet::new();
    for p in patterns {
        let hits: Vec<&String> = names.iter().filter(|n| glob_match(&p.name, n)).collect();
        if strict && hits.is_empty() && !p.name.contains('*') {
            return Err(unknown_column(schema, p));
        }
        out.extend(hits.into_iter().cloned());
    }
    Ok(out)
}

fn unknown_column(schema: &DFSchema, id: &ast::Ident) -> KqlError {
    let names = column_names(schema);
    KqlError::semantic(format!("unknown column '{}'", id.name), id.span)
        .with_suggestion(nearest(&id.name, names.iter().map(String::as_str)))
}

/// `getschema`: one row per column: ColumnName, ColumnOrdinal, DataType, ColumnType.
fn getschema(plan: &LogicalPlan, span: Span) -> Result<LogicalPlan, KqlError> {
    let rows: Vec<Vec<Expr>> = plan
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let kusto = kusto_type_name(f.data_type(), f.metadata());
            vec![
                lit(f.name().clone()),
                lit(i64::try_from(i).unwrap_or(i64::MAX)),
                lit(format!("{}", f.data_type())),
                lit(kusto),
            ]
        })
        .collect();
    if rows.is_empty() {
        return Err(KqlError::semantic("the table has no columns", span));
    }
    let values = build(LogicalPlanBuilder::values(rows), span)?;
    let names = ["ColumnName", "ColumnOrdinal", "DataType", "ColumnType"];
    let exprs: Vec<Expr> = values
        .schema()
        .columns()
        .into_iter()
        .zip(names)
        .map(|(c, n)| Expr::Column(c).alias(n))
        .collect();
    build(LogicalPlanBuilder::from(values).project(exprs), span)
}

/// The Kusto name of an Arrow type (the schema's `kusto.type` tag wins: string vs dynamic).
pub(crate) fn kusto_type_name(
    t: &DataType,
    meta: &std::collections::HashMap<String, String>,
) -> String {
    if let Some(k) = meta.get(rampart_schema::KUSTO_TYPE_KEY) {
        return k.clone();
    }
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        DataType::Int64 | DataType::UInt64 | DataType::UInt32 => "long",
        DataType::Int32 | DataType::Int16 | DataType::Int8 | DataType::UInt16 | DataType::UInt8 => {
            "int"
        }
        DataType::Float64 | DataType::Float32 => "real",
        DataType::Boolean => "bool",
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "datetime",
        DataType::Duration(_) | DataType::Interval(_) => "timespan",
        DataType::Null => "string",
        _ => "dynamic",
    }
    .to_string()
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
