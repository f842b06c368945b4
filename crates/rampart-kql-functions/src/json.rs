//! Kusto `dynamic` values, held as JSON text in `Utf8`.
//!
//! Representation: a dynamic string is its raw content (unquoted), null is null, anything else
//! compact JSON. Member and index access read the text with a small scanner that skips the
//! values it does not need (no tree is built, nothing is allocated until the answer), so
//! `AdditionalFields.Foo` over millions of rows stays cheap. Functions that build or combine
//! values (`pack`, `set_union`, ...) go through `serde_json::Value`.

use std::collections::HashSet;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast as arrow_cast;
use datafusion::arrow::datatypes::{
    DataType, DurationMicrosecondType, Float64Type, Int64Type, TimestampMicrosecondType,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Expr;
use serde_json::{Map, Number, Value};

use crate::convert::prim;
use crate::types::{TIMESPAN, datetime_type, dynamic_text, format_datetime, format_timespan};
use crate::udf::{Call, KernelUdf, Prims, Strs, bools_total, prims, strings};

fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// The index just past the string starting at `i` (which holds `"`).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The index just past the JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// The raw text of member `key` of the object `text`.
pub fn object_get<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, i)?;
        let raw_key = text.get(i + 1..key_end - 1)?;
        i = ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(b, i + 1);
        let end = skip_value(b, i)?;
        let matches = if raw_key.contains('\\') {
            unescape(raw_key).is_some_and(|k| k == key)
        } else {
            raw_key == key
        };
        if matches {
            return text.get(i..end);
        }
        i = ws(b, end);
        match b.get(i)? {
            b',' => i = ws(b, i + 1),
            _ => return None,
        }
    }
}

/// The raw texts of the elements of the array `text`, or None when it is not an array.
pub fn array_elements(text: &str) -> Option<Vec<&str>> {
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut out = Vec::new();
    i = ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Some(out);
    }
    loop {
        let end = skip_value(b, i)?;
        out.push(text.get(i..end)?);
        i = ws(b, end);
        match b.get(i)? {
            b',' => i = ws(b, i + 1),
            b']' => return Some(out),
            _ => return None,
        }
    }
}

/// Element `index` of the array `text`; a negative index counts from the end.
pub fn array_get(text: &str, index: i64) -> Option<&str> {
    let items = array_elements(text)?;
    let i = if index < 0 {
        items
            .len()
            .checked_sub(usize::try_from(index.unsigned_abs()).ok()?)?
    } else {
        usize::try_from(index).ok()?
    };
    items.get(i).copied()
}

fn unescape(raw: &str) -> Option<String> {
    serde_json::from_str::<String>(&format!("\"{raw}\"")).ok()
}

/// Compact JSON text of a raw value: whitespace outside strings removed.
fn compact(raw: &str) -> String {
    if !raw
        .bytes()
        .any(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for ch in raw.chars() {
        if in_string {
            out.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !ch.is_whitespace() {
            out.push(ch);
        }
    }
    out
}

/// A raw JSON value in Rampart's dynamic representation.
pub fn raw_to_dynamic(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else if raw == "null" || raw.is_empty() {
        None
    } else {
        Some(compact(raw))
    }
}

/// `parse_json` of one text: JSON gives its value, anything else stays the string it is.
pub fn parse_to_dynamic(s: &str) -> Option<String> {
    match serde_json::from_str::<Value>(s) {
        Ok(v) => dynamic_text(&v),
        Err(_) => Some(s.to_string()),
    }
}

/// The value a dynamic text stands for (text that is not JSON is a string).
pub fn dyn_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// One step of a member/index path.
enum Step<'a> {
    Key(Strs<'a>),
    Index(Prims<'a, Int64Type>),
}

/// `base.a.b[0]`: argument 0 is the dynamic text, the others the keys (`Utf8`) and indexes
/// (`Int64`) in order.
fn k_path(c: &Call) -> Result<ArrayRef> {
    let base = Strs::new(c.arg(0)?)?;
    let mut steps = Vec::with_capacity(c.args.len().saturating_sub(1));
    for a in c.args.iter().skip(1) {
        let t = a.data_type();
        steps.push(if t == DataType::Int64 {
            Step::Index(Prims::new(a)?)
        } else {
            Step::Key(Strs::new(a)?)
        });
    }
    Ok(strings(c.rows, |i| {
        let mut cur = base.get(i)?;
        for s in &steps {
            cur = match s {
                Step::Key(k) => object_get(cur, k.get(i)?)?,
                Step::Index(ix) => array_get(cur, ix.get(i)?)?,
            };
        }
        raw_to_dynamic(cur)
    }))
}

const PATH: &str = "member";

/// A path access; accesses on an access (and on `parse_json(x)`) fuse into one scan.
pub fn path(base: Expr, step: Expr) -> Expr {
    if let Expr::ScalarFunction(f) = &base {
        match f.func.name() {
            PATH => {
                let mut args = f.args.clone();
                args.push(step);
                return KernelUdf::dynamic(PATH, k_path).call(args);
            }
            // Scanning the text directly reads the same values `parse_json` would produce.
            "todynamic" => {
                if let Some(inner) = f.args.first() {
                    return KernelUdf::dynamic(PATH, k_path).call(vec![inner.clone(), step]);
                }
            }
            _ => {}
        }
    }
    KernelUdf::dynamic(PATH, k_path).call(vec![base, step])
}

/// `array_length`: elements of an array, null for anything else.
pub fn k_array_length(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        array_elements(s.get(i)?).and_then(|v| i64::try_from(v.len()).ok())
    }))
}

/// Every row of argument `arg` as a JSON value (null for nulls), whatever its Arrow type.
pub fn json_column(c: &Call, arg: usize) -> Result<Vec<Value>> {
    let a = c.array(arg)?;
    json_values(&a, c.is_dynamic(arg), c.rows)
}

pub fn json_values(a: &ArrayRef, dynamic: bool, n: usize) -> Result<Vec<Value>> {
    let t = a.data_type().clone();
    let valid = |i: usize| i < a.len() && a.is_valid(i);
    Ok(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = Strs::of_array(a)?;
            (0..n)
                .map(|i| match s.get(i) {
                    None => Value::Null,
                    Some(v) if dynamic => dyn_value(v),
                    Some(v) => Value::String(v.to_string()),
                })
                .collect()
        }
        DataType::Boolean => match a.as_boolean_opt() {
            Some(b) => (0..n)
                .map(|i| {
                    if valid(i) {
                        Value::Bool(b.value(i))
                    } else {
                        Value::Null
                    }
                })
                .collect(),
            None => vec![Value::Null; n],
        },
        t if t.is_integer() => {
            let x = arrow_cast(a, &DataType::Int64)?;
            let x = prim::<Int64Type>(&x)?;
            (0..n)
                .map(|i| {
                    if valid(i) {
                        Value::from(x.value(i))
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        t if t.is_floating() || t.is_decimal() => {
            let x = arrow_cast(a, &DataType::Float64)?;
            let x = prim::<Float64Type>(&x)?;
            (0..n)
                .map(|i| {
                    if valid(i) {
                        Number::from_f64(x.value(i)).map_or(Value::Null, Value::Number)
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
            let x = arrow_cast(a, &datetime_type())?;
            let x = prim::<TimestampMicrosecondType>(&x)?;
            (0..n)
                .map(|i| {
                    valid(i)
                        .then(|| format_datetime(x.value(i)))
                        .flatten()
                        .map_or(Value::Null, Value::String)
                })
                .collect()
        }
        DataType::Duration(_) => {
            let x = arrow_cast(a, &TIMESPAN)?;
            let x = prim::<DurationMicrosecondType>(&x)?;
            (0..n)
                .map(|i| {
                    if valid(i) {
                        Value::String(format_timespan(x.value(i)))
                    } else {
                        Value::Null
                    }
                })
                .collect()
        }
        _ => vec![Value::Null; n],
    })
}

fn out(v: &Value) -> Option<String> {
    dynamic_text(v)
}

/// `pack_array(v, ...)`.
pub fn k_pack_array(c: &Call) -> Result<ArrayRef> {
    let cols = (0..c.args.len())
        .map(|a| json_column(c, a))
        .collect::<Result<Vec<_>>>()?;
    Ok(strings(c.rows, |i| {
        out(&Value::Array(
            cols.iter()
                .map(|col| col.get(i).cloned().unwrap_or(Value::Null))
                .collect(),
        ))
    }))
}

/// `bag_pack(key, value, ...)`: keys are strings (null keys are skipped).
pub fn k_pack(c: &Call) -> Result<ArrayRef> {
    let cols = (0..c.args.len())
        .map(|a| json_column(c, a))
        .collect::<Result<Vec<_>>>()?;
    Ok(strings(c.rows, |i| {
        let mut m = Map::new();
        for pair in cols.chunks(2) {
            if let [k, v] = pair {
                let key = match k.get(i)? {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                m.insert(key, v.get(i).cloned().unwrap_or(Value::Null));
            }
        }
        out(&Value::Object(m))
    }))
}

/// The rows of a dynamic argument as arrays (None where not an array).
fn arrays(c: &Call, arg: usize) -> Result<Vec<Option<Vec<Value>>>> {
    let s = Strs::new(c.arg(arg)?)?;
    Ok((0..c.rows)
        .map(|i| match s.get(i).map(dyn_value) {
            Some(Value::Array(v)) => Some(v),
            _ => None,
        })
        .collect())
}

fn all_arrays(c: &Call) -> Result<Vec<Vec<Option<Vec<Value>>>>> {
    (0..c.args.len()).map(|a| arrays(c, a)).collect()
}

fn key(v: &Value) -> String {
    v.to_string()
}

/// `set_union(a, b, ...)`: distinct elements in order of first appearance.
pub fn k_set_union(c: &Call) -> Result<ArrayRef> {
    let cols = all_arrays(c)?;
    Ok(strings(c.rows, |i| {
        let mut seen = HashSet::new();
        let mut res = Vec::new();
        for col in &cols {
            for v in col.get(i)?.as_ref()? {
                if seen.insert(key(v)) {
                    res.push(v.clone());
                }
            }
        }
        out(&Value::Array(res))
    }))
}

/// `set_intersect(a, b, ...)`: distinct elements of `a` found in every other array.
pub fn k_set_intersect(c: &Call) -> Result<ArrayRef> {
    let cols = all_arrays(c)?;
    Ok(strings(c.rows, |i| {
        let mut rows = Vec::with_capacity(cols.len());
        for col in &cols {
            rows.push(col.get(i)?.as_ref()?);
        }
        let (first, rest) = rows.split_first()?;
        let others: Vec<HashSet<String>> =
            rest.iter().map(|r| r.iter().map(key).collect()).collect();
        let mut seen = HashSet::new();
        let res: Vec<Value> = first
            .iter()
            .filter(|v| {
                let k = key(v);
                others.iter().all(|o| o.contains(&k)) && seen.insert(k)
            })
            .cloned()
            .collect();
        out(&Value::Array(res))
    }))
}

/// `set_difference(a, b, ...)`: distinct elements of `a` in none of the others.
pub fn k_set_difference(c: &Call) -> Result<ArrayRef> {
    let cols = all_arrays(c)?;
    Ok(strings(c.rows, |i| {
        let mut rows = Vec::with_capacity(cols.len());
        for col in &cols {
            rows.push(col.get(i)?.as_ref()?);
        }
        let (first, rest) = rows.split_first()?;
        let others: HashSet<String> = rest.iter().flat_map(|r| r.iter().map(key)).collect();
        let mut seen = HashSet::new();
        let res: Vec<Value> = first
            .iter()
            .filter(|v| {
                let k = key(v);
                !others.contains(&k) && seen.insert(k)
            })
            .cloned()
            .collect();
        out(&Value::Array(res))
    }))
}

/// Whether two JSON values are the same Kusto value (numbers compare by value).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// `set_has_element(array, value)`.
pub fn k_set_has_element(c: &Call) -> Result<ArrayRef> {
    let arr = arrays(c, 0)?;
    let needle = json_column(c, 1)?;
    Ok(bools_total(c.rows, |i| {
        match (arr.get(i).and_then(Option::as_ref), needle.get(i)) {
            (Some(a), Some(n)) => a.iter().any(|v| same(v, n)),
            _ => false,
        }
    }))
}

/// `array_index_of(array, value)`: position of the first equal element, -1 when absent.
pub fn k_array_index_of(c: &Call) -> Result<ArrayRef> {
    let arr = arrays(c, 0)?;
    let needle = json_column(c, 1)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        let a = arr.get(i)?.as_ref()?;
        let n = needle.get(i)?;
        Some(
            a.iter()
                .position(|v| same(v, n))
                .and_then(|p| i64::try_from(p).ok())
                .unwrap_or(-1),
        )
    }))
}

/// `array_concat(a, b, ...)`.
pub fn k_array_concat(c: &Call) -> Result<ArrayRef> {
    let cols = all_arrays(c)?;
    Ok(strings(c.rows, |i| {
        let mut res = Vec::new();
        for col in &cols {
            res.extend(col.get(i)?.as_ref()?.iter().cloned());
        }
        out(&Value::Array(res))
    }))
}

/// `array_slice(array, start, end)`: `end` inclusive; negative positions count from the end.
pub fn k_array_slice(c: &Call) -> Result<ArrayRef> {
    let arr = arrays(c, 0)?;
    let start = Prims::<Int64Type>::new(c.arg(1)?)?;
    let end = Prims::<Int64Type>::new(c.arg(2)?)?;
    Ok(strings(c.rows, |i| {
        let a = arr.get(i)?.as_ref()?;
        let len = i64::try_from(a.len()).ok()?;
        let fix = |p: i64| if p < 0 { p + len } else { p };
        let s = fix(start.get(i)?).max(0);
        let e = fix(end.get(i)?).min(len - 1);
        let res: Vec<Value> = if s > e {
            Vec::new()
        } else {
            a.get(usize::try_from(s).ok()?..=usize::try_from(e).ok()?)?
                .to_vec()
        };
        out(&Value::Array(res))
    }))
}

fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// `array_sort_asc(array)`: nulls last.
pub fn k_array_sort_asc(c: &Call) -> Result<ArrayRef> {
    sort(c, false)
}

/// `array_sort_desc(array)`: nulls last.
pub fn k_array_sort_desc(c: &Call) -> Result<ArrayRef> {
    sort(c, true)
}

fn sort(c: &Call, desc: bool) -> Result<ArrayRef> {
    let arr = arrays(c, 0)?;
    Ok(strings(c.rows, |i| {
        let mut a = arr.get(i)?.clone()?;
        a.sort_by(|x, y| match (x.is_null(), y.is_null()) {
            (false, false) if desc => order(y, x),
            _ => order(x, y),
        });
        out(&Value::Array(a))
    }))
}

/// `array_reverse(array)`.
pub fn k_array_reverse(c: &Call) -> Result<ArrayRef> {
    let arr = arrays(c, 0)?;
    Ok(strings(c.rows, |i| {
        let mut a = arr.get(i)?.clone()?;
        a.reverse();
        out(&Value::Array(a))
    }))
}

/// `array_sum(array)`: the sum of its numbers, as real.
pub fn k_array_sum(c: &Call) -> Result<ArrayRef> {
    let arr = arrays(c, 0)?;
    Ok(prims::<Float64Type>(c.rows, |i| {
        let a = arr.get(i)?.as_ref()?;
        a.iter().map(|v| v.as_f64()).sum::<Option<f64>>()
    }))
}

/// `zip(a, b, ...)`: arrays of the i-th elements; shorter arrays contribute nulls.
pub fn k_zip(c: &Call) -> Result<ArrayRef> {
    let cols = all_arrays(c)?;
    Ok(strings(c.rows, |i| {
        let mut rows = Vec::with_capacity(cols.len());
        for col in &cols {
            rows.push(col.get(i)?.as_ref()?);
        }
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let res: Vec<Value> = (0..len)
            .map(|j| {
                Value::Array(
                    rows.iter()
                        .map(|r| r.get(j).cloned().unwrap_or(Value::Null))
                        .collect(),
                )
            })
            .collect();
        out(&Value::Array(res))
    }))
}

/// `strcat_array(array, delimiter)`.
pub fn k_strcat_array(c: &Call) -> Result<ArrayRef> {
    let arr = arrays(c, 0)?;
    let delim = Strs::new(c.arg(1)?)?;
    Ok(strings(c.rows, |i| {
        let a = arr.get(i)?.as_ref()?;
        let parts: Vec<String> = a
            .iter()
            .map(|v| dynamic_text(v).unwrap_or_default())
            .collect();
        Some(parts.join(delim.text(i)))
    }))
}

fn objects(c: &Call, arg: usize) -> Result<Vec<Option<Map<String, Value>>>> {
    let s = Strs::new(c.arg(arg)?)?;
    Ok((0..c.rows)
        .map(|i| match s.get(i).map(dyn_value) {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect())
}

/// `bag_keys(bag)`.
pub fn k_bag_keys(c: &Call) -> Result<ArrayRef> {
    let bags = objects(c, 0)?;
    Ok(strings(c.rows, |i| {
        let m = bags.get(i)?.as_ref()?;
        out(&Value::Array(
            m.keys().map(|k| Value::String(k.clone())).collect(),
        ))
    }))
}

/// `bag_has_key(bag, key)`.
pub fn k_bag_has_key(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let k = Strs::new(c.arg(1)?)?;
    Ok(bools_total(c.rows, |i| match (s.get(i), k.get(i)) {
        (Some(s), Some(k)) => object_get(s, k).is_some(),
        _ => false,
    }))
}

/// `bag_merge(b1, b2, ...)`: when bags share a key, the first one wins.
pub fn k_bag_merge(c: &Call) -> Result<ArrayRef> {
    let cols = (0..c.args.len())
        .map(|a| objects(c, a))
        .collect::<Result<Vec<_>>>()?;
    Ok(strings(c.rows, |i| {
        let mut m = Map::new();
        for col in &cols {
            if let Some(Some(b)) = col.get(i) {
                for (k, v) in b {
                    if !m.contains_key(k) {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        out(&Value::Object(m))
    }))
}

/// `bag_remove_keys(bag, keys)`.
pub fn k_bag_remove_keys(c: &Call) -> Result<ArrayRef> {
    let bags = objects(c, 0)?;
    let keys = arrays(c, 1)?;
    Ok(strings(c.rows, |i| {
        let mut m = bags.get(i)?.clone()?;
        for k in keys.get(i)?.as_ref()? {
            if let Value::String(k) = k {
                m.remove(k);
            }
        }
        out(&Value::Object(m))
    }))
}

/// Kusto `gettype` of a dynamic value.
pub fn dynamic_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "real",
        Value::Number(_) => "long",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "dictionary",
    }
}

pub fn k_gettype_dynamic(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(strings(c.rows, |i| {
        Some(
            s.get(i)
                .map_or("null", |v| dynamic_type_name(&dyn_value(v))),
        )
    }))
}

/// A literal `dynamic` array's elements as literals (for `in (dynamic([...]))`).
pub fn literal_array_items(e: &Expr) -> Option<Vec<Expr>> {
    let Expr::Literal(ScalarValue::Utf8(Some(text)), Some(meta)) = e else {
        return None;
    };
    let is_dynamic = meta
        .inner()
        .get(crate::types::KUSTO_TYPE_KEY)
        .is_some_and(|t| t == "dynamic");
    if !is_dynamic {
        return None;
    }
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    Some(
        items
            .iter()
            .map(|v| {
                let sv = match v {
                    Value::Null => ScalarValue::Utf8(None),
                    Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => ScalarValue::Int64(Some(i)),
                        None => ScalarValue::Float64(n.as_f64()),
                    },
                    Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
                    other => ScalarValue::Utf8(Some(other.to_string())),
                };
                Expr::Literal(sv, None)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_members_and_elements() {
        let doc = r#"{ "a" : 1, "b": {"c": [10, "x", {"d": null}]}, "e\"q": "v\n", "s": "t" }"#;
        assert_eq!(object_get(doc, "a"), Some("1"));
        assert_eq!(object_get(doc, "e\"q"), Some("\"v\\n\""));
        assert_eq!(object_get(doc, "zz"), None);
        let b = object_get(doc, "b").unwrap_or_default();
        let c = object_get(b, "c").unwrap_or_default();
        assert_eq!(array_get(c, 1), Some("\"x\""));
        assert_eq!(array_get(c, -1), Some("{\"d\": null}"));
        assert_eq!(array_get(c, 3), None);
        assert_eq!(array_get(c, -4), None);
        assert_eq!(
            raw_to_dynamic("{\"d\": null}").as_deref(),
            Some("{\"d\":null}")
        );
        assert_eq!(raw_to_dynamic("\"v\\n\"").as_deref(), Some("v\n"));
        assert_eq!(raw_to_dynamic("null"), None);
        assert_eq!(array_elements("[]").map(|v| v.len()), Some(0));
        assert_eq!(array_elements("{\"a\":1}"), None);
        assert_eq!(object_get("not json", "a"), None);
        assert_eq!(object_get("{\"a\":", "a"), None);
        assert_eq!(array_elements("[1, 2"), None);
    }
}
