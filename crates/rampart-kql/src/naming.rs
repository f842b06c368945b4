//! Kusto's rules for naming columns that the query did not name.

use rampart_kql_syntax::ast::{Expr, ExprKind, Literal};

/// The name Kusto gives `expr` in `project`/`extend`: a column keeps its name, a member path
/// joins its parts with `_` (`AdditionalFields.Foo` → `AdditionalFields_Foo`); anything else
/// has no natural name (the caller numbers it `Column1`, `Column2`, ...).
pub fn natural_name(expr: &Expr) -> Option<String> {
    match &expr.kind {
        ExprKind::Name(n) => Some(n.clone()),
        ExprKind::Member { base, name } => natural_name(base).map(|b| format!("{b}_{name}")),
        ExprKind::Index { base, index } => match &index.kind {
            ExprKind::Literal(Literal::String(k)) => natural_name(base).map(|b| format!("{b}_{k}")),
            ExprKind::Literal(Literal::Long(i)) => natural_name(base).map(|b| format!("{b}_{i}")),
            _ => None,
        },
        // Conversions keep their column's name: `project tostring(X)` is `X`.
        ExprKind::Call { name, args } if args.len() == 1 && is_conversion(&name.name) => {
            args.first().and_then(natural_name)
        }
        _ => None,
    }
}

fn is_conversion(name: &str) -> bool {
    matches!(
        name,
        "tostring"
            | "toint"
            | "tolong"
            | "todouble"
            | "toreal"
            | "tobool"
            | "toboolean"
            | "todatetime"
            | "totimespan"
            | "todynamic"
            | "toguid"
            | "todecimal"
    )
}

/// The name of a `summarize ... by` key: as [`natural_name`], and `bin(Col, ...)` /
/// `floor(Col, ...)` / `bin_at(Col, ...)` keep `Col`.
pub fn group_key_name(expr: &Expr) -> Option<String> {
    if let ExprKind::Call { name, args } = &expr.kind
        && matches!(name.name.as_str(), "bin" | "floor" | "bin_at")
        && let Some(first) = args.first()
    {
        // `bin(Name = Timestamp, 1h)` names the key.
        if let ExprKind::NamedArg { name, .. } = &first.kind {
            return Some(name.name.clone());
        }
        return natural_name(first);
    }
    natural_name(expr)
}

/// The name Kusto gives an aggregation: `count()` → `count_`, `dcount(A)` → `dcount_A`,
/// `make_set(A)` → `set_A`, `percentile(A, 95)` → `percentile_A_95`.
pub fn aggregate_name(function: &str, args: &[Expr]) -> String {
    let prefix = match function {
        "make_set" | "make_set_if" => "set",
        "make_list" | "make_list_if" | "make_list_with_nulls" => "list",
        "make_bag" | "make_bag_if" => "bag",
        "take_any" | "take_anyif" | "any" | "anyif" => "any",
        other => other,
    };
    // `count()` is `count_`; the old `count(X)` names its column like the others.
    let takes_column = function != "countif";
    let arg = if takes_column {
        args.first().and_then(natural_name).unwrap_or_default()
    } else {
        String::new()
    };
    if function == "percentile"
        && let Some(p) = args.get(1).and_then(number_text)
    {
        return format!("{prefix}_{arg}_{p}");
    }
    format!("{prefix}_{arg}")
}

/// A numeric literal as Kusto writes it in a column name (`95`, `99_9` for 99.9).
pub fn number_text(expr: &Expr) -> Option<String> {
    match &expr.kind {
        ExprKind::Literal(Literal::Long(n)) => Some(n.to_string()),
        ExprKind::Literal(Literal::Real(r)) => Some(r.to_string().replace('.', "_")),
        _ => None,
    }
}

/// Makes names unique within one output, Kusto style: a repeated `X` becomes `X1`, `X2`, ...
#[derive(Default)]
pub struct UniqueNames {
    taken: std::collections::HashSet<String>,
}

impl UniqueNames {
    pub fn with_taken<'a>(names: impl IntoIterator<Item = &'a str>) -> UniqueNames {
        UniqueNames {
            taken: names.into_iter().map(str::to_string).collect(),
        }
    }

    /// `name` itself if free, else the first free `name1`, `name2`, ...
    pub fn claim(&mut self, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut n = 1;
        while self.taken.contains(&candidate) {
            candidate = format!("{name}{n}");
            n += 1;
        }
        self.taken.insert(candidate.clone());
        candidate
    }
}
