//! Kusto's string operators: `has` and its family (whole terms), `contains`, `startswith`,
//! `endswith`, `=~`, `in~`, `has_any`, `has_all` and `matches regex`.
//!
//! A term is a maximal run of ASCII letters and digits. `has "x"` matches where the needle
//! occurs with a term boundary on each side where the needle itself starts or ends with a term
//! character (`has "cmd.exe"` matches "c:\cmd.exe /c" but not "xcmd.exe"). `hasprefix` checks
//! only the left boundary, `hassuffix` only the right one.
//!
//! Literal needles (the common case) are compiled once at plan time into an Aho-Corasick
//! automaton (ASCII case folding built in), so a row is scanned without allocating. Needles
//! that are columns go through a per-row path. A null string reads as `""` (Kusto strings are
//! never null), so these predicates never return null and `!has` keeps rows whose value is
//! empty, as Kusto does.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use aho_corasick::{AhoCorasick, Input};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, GenericStringArray,
    OffsetSizeTrait, StringViewArray,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use rampart_kql_syntax::ast::{StrOp, StrOpKind};
use regex::Regex;

use crate::FnError;
use crate::convert::to_text;
use crate::json::{dyn_value, literal_array_items};
use crate::udf::{Call, KernelUdf, Strs, bools_total};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Has,
    HasPrefix,
    HasSuffix,
    Contains,
    StartsWith,
    EndsWith,
    /// `=~` / `in~` (with `cs`: plain equality against a set).
    Equals,
}

impl Mode {
    fn of(kind: StrOpKind) -> Option<Mode> {
        Some(match kind {
            StrOpKind::Has | StrOpKind::HasAny | StrOpKind::HasAll => Mode::Has,
            StrOpKind::HasPrefix => Mode::HasPrefix,
            StrOpKind::HasSuffix => Mode::HasSuffix,
            StrOpKind::Contains => Mode::Contains,
            StrOpKind::StartsWith => Mode::StartsWith,
            StrOpKind::EndsWith => Mode::EndsWith,
            StrOpKind::In => Mode::Equals,
            StrOpKind::MatchesRegex => return None,
        })
    }

    fn name(self, cs: bool, all: bool, many: bool) -> &'static str {
        match (self, cs, all, many) {
            (Mode::Has, false, false, false) => "has",
            (Mode::Has, true, false, false) => "has_cs",
            (Mode::Has, _, false, true) => "has_any",
            (Mode::Has, _, true, _) => "has_all",
            (Mode::HasPrefix, false, ..) => "hasprefix",
            (Mode::HasPrefix, true, ..) => "hasprefix_cs",
            (Mode::HasSuffix, false, ..) => "hassuffix",
            (Mode::HasSuffix, true, ..) => "hassuffix_cs",
            (Mode::Contains, false, ..) => "contains",
            (Mode::Contains, true, ..) => "contains_cs",
            (Mode::StartsWith, false, ..) => "startswith",
            (Mode::StartsWith, true, ..) => "startswith_cs",
            (Mode::EndsWith, false, ..) => "endswith",
            (Mode::EndsWith, true, ..) => "endswith_cs",
            (Mode::Equals, false, ..) => "in~",
            (Mode::Equals, true, ..) => "in",
        }
    }

    /// Term boundaries this mode checks on the left and on the right of a match.
    fn boundaries(self) -> (bool, bool) {
        match self {
            Mode::Has => (true, true),
            Mode::HasPrefix => (true, false),
            Mode::HasSuffix => (false, true),
            _ => (false, false),
        }
    }
}

/// Up to this many `=~` / `in~` needles are compared one by one on ASCII columns; more are
/// looked up in a set.
const FEW_NEEDLES: usize = 8;

#[inline]
fn is_term(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Case folding for comparisons: ASCII fast path into a reused buffer, Unicode otherwise.
fn fold_into<'a>(s: &str, buf: &'a mut String) -> &'a str {
    buf.clear();
    if s.is_ascii() {
        buf.push_str(s);
        buf.make_ascii_lowercase();
    } else {
        buf.push_str(&s.to_lowercase());
    }
    buf.as_str()
}

/// Literal needles compiled for one operator.
#[derive(Debug)]
pub(crate) struct Matcher {
    mode: Mode,
    cs: bool,
    /// `has_all`: every needle must match (otherwise any one).
    all: bool,
    needles: Vec<String>,
    /// The automaton over the non-empty needles (term and substring modes).
    ac: Option<AhoCorasick>,
    /// Per needle: whether a term boundary is required on its left / right.
    left: Vec<bool>,
    right: Vec<bool>,
    /// Some needle is empty: it matches every string.
    has_empty: bool,
    /// Case-insensitive with non-ASCII needles: compare Unicode-lowercased text.
    unicode: bool,
    /// Folded needles for `Equals`.
    set: HashSet<String>,
}

impl Matcher {
    pub fn new(mode: Mode, cs: bool, all: bool, needles: Vec<String>) -> Result<Matcher, FnError> {
        let unicode = !cs && needles.iter().any(|n| !n.is_ascii());
        let folded: Vec<String> = if cs {
            needles.clone()
        } else {
            needles.iter().map(|n| n.to_lowercase()).collect()
        };
        let non_empty: Vec<&String> = needles.iter().filter(|n| !n.is_empty()).collect();
        let (bl, br) = mode.boundaries();
        let uses_ac = matches!(mode, Mode::Has | Mode::HasPrefix | Mode::HasSuffix)
            || (mode == Mode::Contains && !unicode);
        let ac = if uses_ac && !non_empty.is_empty() {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(!cs)
                    .build(&non_empty)
                    .map_err(|e| FnError::Type(format!("cannot compile the needles: {e}")))?,
            )
        } else {
            None
        };
        let left = non_empty
            .iter()
            .map(|n| bl && n.bytes().next().is_some_and(is_term))
            .collect();
        let right = non_empty
            .iter()
            .map(|n| br && n.bytes().next_back().is_some_and(is_term))
            .collect();
        Ok(Matcher {
            mode,
            cs,
            all,
            has_empty: needles.len() != non_empty.len(),
            set: folded.iter().cloned().collect(),
            needles: if unicode && mode != Mode::Equals {
                folded
            } else {
                needles
            },
            ac,
            left,
            right,
            unicode,
        })
    }

    /// Whether `hay` satisfies the operator (`buf` is scratch space reused across rows).
    #[inline]
    pub fn matches(&self, hay: &str, buf: &mut String) -> bool {
        match self.mode {
            Mode::Has | Mode::HasPrefix | Mode::HasSuffix => self.terms(hay),
            Mode::Contains if !self.unicode => self.substrings(hay),
            Mode::Equals => {
                if self.cs {
                    self.set.contains(hay)
                } else {
                    self.set.contains(fold_into(hay, buf))
                }
            }
            Mode::Contains | Mode::StartsWith | Mode::EndsWith => {
                let hay = if self.unicode {
                    fold_into(hay, buf)
                } else {
                    hay
                };
                let one = |n: &String| match self.mode {
                    Mode::Contains => hay.contains(n.as_str()),
                    Mode::StartsWith => starts_with(hay, n, self.cs || self.unicode),
                    _ => ends_with(hay, n, self.cs || self.unicode),
                };
                if self.all {
                    self.needles.iter().all(one)
                } else {
                    self.needles.iter().any(one)
                }
            }
        }
    }

    /// The operator over a column: a whole `Utf8` buffer is searched at once when the
    /// operator is a search for any needle (no per-row call, and the automaton's prefilter runs
    /// across row boundaries); other layouts and operators go row by row.
    pub fn eval(&self, hay: &Strs, rows: usize) -> ArrayRef {
        let scans = !self.all
            && !self.has_empty
            && match self.mode {
                Mode::Has | Mode::HasPrefix | Mode::HasSuffix => true,
                Mode::Contains => !self.unicode,
                _ => false,
            };
        // `=~` / `in~` on a column that is all ASCII (checked once, over its whole buffer):
        // ASCII folds byte by byte, so values compare in place, without copying or hashing.
        let ascii_equals = self.mode == Mode::Equals
            && !self.cs
            && !self.unicode
            && self.needles.len() <= FEW_NEEDLES;
        if let (Strs::View(a), Some(ac)) = (hay, &self.ac)
            && scans
            && a.len() == rows
            // The search runs across the values laid end to end: gathering them is the copy
            // that reading the column as `Utf8` would have made.
            && let Ok(gathered) = cast(*a, &DataType::Utf8)
        {
            return self.scan_column(ac, gathered.as_string::<i32>());
        }
        match (hay, &self.ac) {
            (Strs::Utf8(a), Some(ac)) if scans && a.len() == rows => self.scan_column(ac, *a),
            (Strs::Large(a), Some(ac)) if scans && a.len() == rows => self.scan_column(ac, *a),
            (Strs::Utf8(a), _) if ascii_equals && a.len() == rows && a.value_data().is_ascii() => {
                self.equals_ascii(*a)
            }
            (Strs::Large(a), _) if ascii_equals && a.len() == rows && a.value_data().is_ascii() => {
                self.equals_ascii(*a)
            }
            (Strs::View(a), _) if ascii_equals && a.len() == rows => self.equals_ascii_view(a),
            _ => {
                let mut buf = String::new();
                let empty = self.matches("", &mut buf);
                bools_total(rows, |i| match hay.get(i) {
                    Some(h) => self.matches(h, &mut buf),
                    None => empty,
                })
            }
        }
    }

    /// Case-insensitive equality with the needles, for a column whose text is all ASCII.
    fn equals_ascii<O: OffsetSizeTrait>(&self, a: &GenericStringArray<O>) -> ArrayRef {
        let needles: Vec<&[u8]> = self.needles.iter().map(|n| n.as_bytes()).collect();
        // A null reads as "".
        let empty = needles.iter().any(|n| n.is_empty());
        bools_total(a.len(), |i| {
            if a.is_null(i) {
                return empty;
            }
            let v = a.value(i).as_bytes();
            needles
                .iter()
                .any(|n| n.len() == v.len() && n.eq_ignore_ascii_case(v))
        })
    }

    /// [`Matcher::equals_ascii`] for views, whose text is not in one buffer to check at once.
    /// A view holds the value's length and first four bytes; ASCII bytes fold one to one, so
    /// a value whose first bytes are ASCII and begin no needle cannot match. A first pass over
    /// the views alone (a few operations on each, no read of the values' buffers) finds the
    /// values that may;
    /// only those are read and compared, and one that is not ASCII (it may still fold to an
    /// ASCII needle, as the Kelvin sign does to `k`) takes the general path.
    fn equals_ascii_view(&self, a: &StringViewArray) -> ArrayRef {
        // The bytes of a view's head word that belong to a value of 0, 1, 2, 3, 4+ bytes.
        const SHOWN: [u32; 5] = [0, 0xff, 0xffff, 0xff_ffff, 0xffff_ffff];
        let needles: Vec<&[u8]> = self.needles.iter().map(|n| n.as_bytes()).collect();
        // A null reads as "".
        let empty = needles.iter().any(|n| n.is_empty());
        let heads: Vec<(u32, u32)> = needles
            .iter()
            .map(|n| {
                let mut head = [0u8; 4];
                let k = n.len().min(4);
                head[..k].copy_from_slice(&n[..k]);
                (lower_ascii4(u32::from_le_bytes(head)), k as u32)
            })
            .collect();
        let views = a.views();
        // The view's shown bytes, their mask, and whether they are not all ASCII.
        let head = |i: usize| {
            let view = views[i];
            let shown = (view as u32).min(4);
            let mask = SHOWN[shown as usize];
            let head = (view >> 32) as u32 & mask;
            (lower_ascii4(head), shown, mask, head & 0x8080_8080 != 0)
        };
        let begins = |(n, n_shown): (u32, u32),
                      (lowered, shown, mask, _): (u32, u32, u32, bool)| {
            (n_shown >= shown) & (n & mask == lowered)
        };
        // One needle (`=~`) is the common case: its loop has no inner loop.
        let may = match heads[..] {
            [one] => BooleanBuffer::collect_bool(a.len(), |i| {
                let h = head(i);
                h.3 | begins(one, h)
            }),
            _ => BooleanBuffer::collect_bool(a.len(), |i| {
                let h = head(i);
                heads.iter().fold(h.3, |may, &n| may | begins(n, h))
            }),
        };
        let mut hits = BooleanBufferBuilder::new(a.len());
        hits.append_n(a.len(), false);
        let mut buf = String::new();
        for i in may.set_indices() {
            if a.is_null(i) {
                continue;
            }
            let v = a.value(i);
            let hit = if v.is_ascii() {
                let v = v.as_bytes();
                needles
                    .iter()
                    .any(|n| n.len() == v.len() && n.eq_ignore_ascii_case(v))
            } else {
                self.matches(v, &mut buf)
            };
            hits.set_bit(i, hit);
        }
        if empty && let Some(nulls) = a.nulls() {
            for i in (0..a.len()).filter(|&i| nulls.is_null(i)) {
                hits.set_bit(i, true);
            }
        }
        Arc::new(BooleanArray::new(hits.finish(), None))
    }

    fn scan_column<O: OffsetSizeTrait>(
        &self,
        ac: &AhoCorasick,
        a: &GenericStringArray<O>,
    ) -> ArrayRef {
        let offsets = a.value_offsets();
        let data = a.value_data();
        let rows = a.len();
        let mut hits = vec![false; rows];
        let at = |k: usize| offsets.get(k).map_or(0, |o| o.as_usize());
        let end = at(rows);
        let single = self.left.len() == 1;
        let mut pos = at(0);
        'search: while pos < end {
            let input = Input::new(data).span(pos..end);
            if single {
                let Some(m) = ac.find(input) else { break };
                pos = match self.row_hit(data, offsets, &m, &mut hits) {
                    Some(row_end) => row_end,
                    None => m.start() + 1,
                };
            } else {
                for m in ac.find_overlapping_iter(input) {
                    if let Some(row_end) = self.row_hit(data, offsets, &m, &mut hits) {
                        pos = row_end;
                        continue 'search;
                    }
                }
                break;
            }
        }
        // A null row reads as "", which no non-empty needle matches.
        bools_total(rows, |i| {
            hits.get(i).copied().unwrap_or(false) && a.is_valid(i)
        })
    }

    /// Checks a match of the whole-buffer search against its row's bounds and term boundaries;
    /// on a hit, marks the row and returns the row's end (where the search resumes).
    fn row_hit<O: OffsetSizeTrait>(
        &self,
        data: &[u8],
        offsets: &[O],
        m: &aho_corasick::Match,
        hits: &mut [bool],
    ) -> Option<usize> {
        let (s, e) = (m.start(), m.end());
        let row = offsets
            .partition_point(|o| o.as_usize() <= s)
            .checked_sub(1)?;
        let row_start = offsets.get(row)?.as_usize();
        let row_end = offsets.get(row + 1)?.as_usize();
        if e > row_end {
            return None;
        }
        let p = m.pattern().as_usize();
        let left_ok = !self.left.get(p).copied().unwrap_or(false)
            || s == row_start
            || data.get(s.wrapping_sub(1)).is_none_or(|&c| !is_term(c));
        let right_ok = !self.right.get(p).copied().unwrap_or(false)
            || e == row_end
            || data.get(e).is_none_or(|&c| !is_term(c));
        if !(left_ok && right_ok) {
            return None;
        }
        *hits.get_mut(row)? = true;
        Some(row_end)
    }

    fn substrings(&self, hay: &str) -> bool {
        let Some(ac) = &self.ac else {
            return self.has_empty;
        };
        if !self.all {
            return self.has_empty || ac.is_match(hay);
        }
        let mut found = Found::new(self.left.len());
        for m in ac.find_overlapping_iter(hay) {
            if found.mark(m.pattern().as_usize()) {
                return true;
            }
        }
        false
    }

    fn terms(&self, hay: &str) -> bool {
        let Some(ac) = &self.ac else {
            return self.has_empty;
        };
        if !self.all && self.has_empty {
            return true;
        }
        let b = hay.as_bytes();
        let mut found = Found::new(if self.all { self.left.len() } else { 0 });
        for m in ac.find_overlapping_iter(hay) {
            let p = m.pattern().as_usize();
            let left_ok = !self.left.get(p).copied().unwrap_or(false)
                || m.start()
                    .checked_sub(1)
                    .and_then(|i| b.get(i))
                    .is_none_or(|&c| !is_term(c));
            let right_ok = !self.right.get(p).copied().unwrap_or(false)
                || b.get(m.end()).is_none_or(|&c| !is_term(c));
            if left_ok && right_ok && (!self.all || found.mark(p)) {
                return true;
            }
        }
        false
    }
}

/// Which needles `has_all` has seen; without allocation for up to 64 needles.
enum Found {
    Bits { seen: u64, full: u64 },
    Many { seen: Vec<bool>, left: usize },
}

impl Found {
    fn new(n: usize) -> Found {
        if n <= 64 {
            let full = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            Found::Bits { seen: 0, full }
        } else {
            Found::Many {
                seen: vec![false; n],
                left: n,
            }
        }
    }

    /// Marks needle `p`; true once every needle is seen.
    fn mark(&mut self, p: usize) -> bool {
        match self {
            Found::Bits { seen, full } => {
                *seen |= 1u64
                    .checked_shl(u32::try_from(p).unwrap_or(u32::MAX))
                    .unwrap_or(0);
                *seen == *full
            }
            Found::Many { seen, left } => {
                if let Some(s) = seen.get_mut(p)
                    && !*s
                {
                    *s = true;
                    *left -= 1;
                }
                *left == 0
            }
        }
    }
}

/// Lowercases the ASCII bytes of a word (bytes with the high bit set are left as they are):
/// each byte in `A..=Z` gains 0x20, found without a branch per byte.
fn lower_ascii4(x: u32) -> u32 {
    let low = x & 0x7f7f_7f7f;
    // The high bit of each byte: set where the byte is at least 'A', and where it is past 'Z'.
    let from_a = low.wrapping_add(0x3f3f_3f3f);
    let past_z = low.wrapping_add(0x2525_2525);
    let upper = from_a & !past_z & !x & 0x8080_8080;
    x | (upper >> 2)
}

fn starts_with(hay: &str, n: &str, exact: bool) -> bool {
    match hay.as_bytes().get(..n.len()) {
        Some(h) => {
            if exact {
                h == n.as_bytes()
            } else {
                h.eq_ignore_ascii_case(n.as_bytes())
            }
        }
        None => false,
    }
}

fn ends_with(hay: &str, n: &str, exact: bool) -> bool {
    let Some(start) = hay.len().checked_sub(n.len()) else {
        return false;
    };
    match hay.as_bytes().get(start..) {
        Some(h) => {
            if exact {
                h == n.as_bytes()
            } else {
                h.eq_ignore_ascii_case(n.as_bytes())
            }
        }
        None => false,
    }
}

/// The operator with a needle that is a value per row (not a literal).
fn match_row(mode: Mode, cs: bool, hay: &str, needle: &str) -> bool {
    if !(cs || hay.is_ascii() && needle.is_ascii()) {
        return match_row(mode, true, &hay.to_lowercase(), &needle.to_lowercase());
    }
    let eq = |a: &[u8], b: &[u8]| {
        if cs {
            a == b
        } else {
            a.eq_ignore_ascii_case(b)
        }
    };
    match mode {
        Mode::Equals => eq(hay.as_bytes(), needle.as_bytes()),
        Mode::StartsWith => starts_with(hay, needle, cs),
        Mode::EndsWith => ends_with(hay, needle, cs),
        Mode::Contains | Mode::Has | Mode::HasPrefix | Mode::HasSuffix => {
            if needle.is_empty() {
                return true;
            }
            let (bl, br) = mode.boundaries();
            let n = needle.as_bytes();
            let h = hay.as_bytes();
            let need_left = bl && n.first().is_some_and(|&c| is_term(c));
            let need_right = br && n.last().is_some_and(|&c| is_term(c));
            h.windows(n.len()).enumerate().any(|(i, w)| {
                eq(w, n)
                    && (!need_left
                        || i.checked_sub(1)
                            .and_then(|j| h.get(j))
                            .is_none_or(|&c| !is_term(c)))
                    && (!need_right || h.get(i + n.len()).is_none_or(|&c| !is_term(c)))
            })
        }
    }
}

/// A string operator with literal needles, compiled once.
#[derive(Debug)]
struct LiteralOp {
    name: &'static str,
    signature: Signature,
    matcher: Arc<Matcher>,
}

impl PartialEq for LiteralOp {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.matcher.all == other.matcher.all
            && self.matcher.needles == other.matcher.needles
    }
}

impl Eq for LiteralOp {}

impl Hash for LiteralOp {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.matcher.needles.hash(state);
    }
}

impl ScalarUDFImpl for LiteralOp {
    fn name(&self) -> &str {
        self.name
    }

    /// The needles are part of the column name, so that two operators on one column differ.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let needles: Vec<String> = self
            .matcher
            .needles
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        let hay = args
            .first()
            .map(|a| a.schema_name().to_string())
            .unwrap_or_default();
        Ok(format!("{}({hay}, {})", self.name, needles.join(", ")))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(self.name, DataType::Boolean, false)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return datafusion::common::exec_err!("{} needs its string", self.name);
        };
        let hay = Strs::new(arg)?;
        Ok(ColumnarValue::Array(
            self.matcher.eval(&hay, args.number_rows),
        ))
    }
}

fn literal_op(
    mode: Mode,
    cs: bool,
    all: bool,
    many: bool,
    needles: Vec<String>,
    hay: Expr,
) -> Result<Expr, FnError> {
    let matcher = Matcher::new(mode, cs, all, needles)?;
    let udf = LiteralOp {
        name: mode.name(cs, all, many),
        signature: Signature::any(1, Volatility::Immutable),
        matcher: Arc::new(matcher),
    };
    Ok(ScalarUDF::new_from_impl(udf).call(vec![hay]))
}

/// The text of a literal usable as a needle (`has 123` looks for "123").
fn literal_text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                Some(s.clone().unwrap_or_default())
            }
            ScalarValue::Int64(Some(i)) => Some(i.to_string()),
            ScalarValue::Int32(Some(i)) => Some(i.to_string()),
            ScalarValue::Float64(Some(f)) => Some(crate::types::format_real(*f)),
            ScalarValue::Boolean(Some(b)) => Some(b.to_string()),
            ScalarValue::Null => Some(String::new()),
            _ => None,
        },
        _ => None,
    }
}

/// A string operator whose needle is a column: per row, or per element when the needle is
/// a dynamic array (`has_any (col)`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct RowOp {
    signature: Signature,
    mode: Mode,
    cs: bool,
    all: bool,
    list: bool,
}

impl RowOp {
    fn udf(mode: Mode, cs: bool, all: bool, list: bool) -> ScalarUDF {
        ScalarUDF::new_from_impl(RowOp {
            signature: Signature::any(2, Volatility::Immutable),
            mode,
            cs,
            all,
            list,
        })
    }
}

impl ScalarUDFImpl for RowOp {
    fn name(&self) -> &str {
        self.mode.name(self.cs, self.all, self.list)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(self.name(), DataType::Boolean, false)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (Some(hay), Some(needle)) = (args.args.first(), args.args.get(1)) else {
            return datafusion::common::exec_err!("{} needs two arguments", self.name());
        };
        let hay = Strs::new(hay)?;
        let needle = Strs::new(needle)?;
        let (mode, cs) = (self.mode, self.cs);
        Ok(ColumnarValue::Array(bools_total(args.number_rows, |i| {
            let h = hay.text(i);
            if !self.list {
                return match_row(mode, cs, h, needle.text(i));
            }
            let needles = row_needles(needle.text(i));
            if self.all {
                needles.iter().all(|n| match_row(mode, cs, h, n))
            } else {
                needles.iter().any(|n| match_row(mode, cs, h, n))
            }
        })))
    }
}

/// `left <op> right` for the single-operand string operators (and `=~`, which is
/// `Mode::Equals` case-insensitive).
pub(crate) fn compare(
    mode: Mode,
    cs: bool,
    negated: bool,
    left: Expr,
    right: Expr,
    schema: &DFSchema,
) -> Result<Expr, FnError> {
    let left = to_text(left, schema)?;
    let e = match literal_text(&right) {
        Some(needle) => literal_op(mode, cs, false, false, vec![needle], left)?,
        None => {
            let right = to_text(right, schema)?;
            RowOp::udf(mode, cs, false, false).call(vec![left, right])
        }
    };
    Ok(if negated { Expr::Not(Box::new(e)) } else { e })
}

/// A string operator from the syntax tree with one right operand.
pub(crate) fn string_op(
    op: StrOp,
    left: Expr,
    right: Expr,
    schema: &DFSchema,
) -> Result<Expr, FnError> {
    match op.kind {
        StrOpKind::MatchesRegex => {
            let e = matches_regex(left, right, schema)?;
            Ok(if op.negated {
                Expr::Not(Box::new(e))
            } else {
                e
            })
        }
        StrOpKind::In | StrOpKind::HasAny | StrOpKind::HasAll => {
            crate::ops::in_list(op, left, vec![right], schema)
        }
        kind => match Mode::of(kind) {
            Some(mode) => compare(mode, op.case_sensitive, op.negated, left, right, schema),
            None => Err(FnError::Type(format!(
                "{kind:?} is not a string comparison"
            ))),
        },
    }
}

/// Flattens literal dynamic arrays in a list (`in (dynamic(["a", "b"]))`, a `let` of an array).
pub(crate) fn flatten_list(list: Vec<Expr>) -> Vec<Expr> {
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        match literal_array_items(&e) {
            Some(items) => out.extend(items),
            None => out.push(e),
        }
    }
    out
}

/// `has_any` / `has_all` / `in~` over a list (already flattened). Literal needles compile into
/// one matcher; a non-literal item that is a dynamic array is searched per row.
pub(crate) fn list_match(
    mode: Mode,
    cs: bool,
    all: bool,
    left: Expr,
    list: Vec<Expr>,
    schema: &DFSchema,
) -> Result<Expr, FnError> {
    let left = to_text(left, schema)?;
    let mut needles = Vec::new();
    let mut others = Vec::new();
    for e in list {
        match literal_text(&e) {
            Some(t) => needles.push(t),
            None => others.push(to_text(e, schema)?),
        }
    }
    if others.is_empty() {
        if needles.is_empty() {
            // `has_any ()` matches nothing; `has_all ()` everything.
            return Ok(Expr::Literal(ScalarValue::Boolean(Some(all)), None));
        }
        return literal_op(mode, cs, all, true, needles, left);
    }
    let mut parts: Vec<Expr> = Vec::new();
    if !needles.is_empty() {
        parts.push(literal_op(mode, cs, all, true, needles, left.clone())?);
    }
    for o in others {
        parts.push(RowOp::udf(mode, cs, all, true).call(vec![left.clone(), o]));
    }
    let join = |a: Expr, b: Expr| if all { a.and(b) } else { a.or(b) };
    parts
        .into_iter()
        .reduce(join)
        .ok_or_else(|| FnError::Type("empty list".into()))
}

/// The needles of a row: the elements of a dynamic array, or the value itself.
fn row_needles(s: &str) -> Vec<String> {
    match dyn_value(s) {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| crate::types::dynamic_text(v).unwrap_or_default())
            .collect(),
        _ => vec![s.to_string()],
    }
}

/// `matches regex`: a literal pattern is compiled once (and checked at plan time).
fn matches_regex(left: Expr, right: Expr, schema: &DFSchema) -> Result<Expr, FnError> {
    let left = to_text(left, schema)?;
    if let Some(pattern) = literal_text(&right) {
        let re = Regex::new(&pattern)
            .map_err(|e| FnError::Type(format!("invalid regular expression: {e}")))?;
        let udf = RegexOp {
            signature: Signature::any(1, Volatility::Immutable),
            pattern,
            re,
        };
        return Ok(ScalarUDF::new_from_impl(udf).call(vec![left]));
    }
    let right = to_text(right, schema)?;
    Ok(
        KernelUdf::new("matches_regex", DataType::Boolean, k_matches_regex)
            .total()
            .call(vec![left, right]),
    )
}

fn k_matches_regex(c: &Call) -> Result<ArrayRef> {
    let hay = Strs::new(c.arg(0)?)?;
    let pat = Strs::new(c.arg(1)?)?;
    let mut cache: Option<(String, Option<Regex>)> = None;
    Ok(bools_total(c.rows, |i| {
        let p = pat.text(i);
        if cache.as_ref().is_none_or(|(k, _)| k != p) {
            cache = Some((p.to_string(), Regex::new(p).ok()));
        }
        cache
            .as_ref()
            .and_then(|(_, r)| r.as_ref())
            .is_some_and(|r| r.is_match(hay.text(i)))
    }))
}

#[derive(Debug)]
struct RegexOp {
    signature: Signature,
    pattern: String,
    re: Regex,
}

impl PartialEq for RegexOp {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for RegexOp {}

impl Hash for RegexOp {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pattern.hash(state);
    }
}

impl ScalarUDFImpl for RegexOp {
    fn name(&self) -> &str {
        "matches_regex"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let hay = args
            .first()
            .map(|a| a.schema_name().to_string())
            .unwrap_or_default();
        Ok(format!("matches_regex({hay}, {:?})", self.pattern))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            "matches_regex",
            DataType::Boolean,
            false,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return datafusion::common::exec_err!("matches regex needs its string");
        };
        let hay = Strs::new(arg)?;
        Ok(ColumnarValue::Array(bools_total(args.number_rows, |i| {
            self.re.is_match(hay.text(i))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};

    fn m(mode: Mode, cs: bool, all: bool, needles: &[&str]) -> Matcher {
        match Matcher::new(
            mode,
            cs,
            all,
            needles.iter().map(|s| s.to_string()).collect(),
        ) {
            Ok(m) => m,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn t(matcher: &Matcher, hay: &str) -> bool {
        matcher.matches(hay, &mut String::new())
    }

    #[test]
    fn words_lowercase_byte_by_byte() {
        for b in 0..=255u8 {
            for at in 0..4 {
                let mut word = *b"aZ@[";
                word[at] = b;
                let mut want = word.map(|c| {
                    if c.is_ascii() {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                });
                want[at] = if b.is_ascii() {
                    b.to_ascii_lowercase()
                } else {
                    b
                };
                let got = lower_ascii4(u32::from_le_bytes(word)).to_le_bytes();
                assert_eq!(got, want, "{word:?}");
            }
        }
    }

    #[test]
    fn has_matches_whole_terms() {
        let has = |n: &str, h: &str| t(&m(Mode::Has, false, false, &[n]), h);
        assert!(has("whoami", "cmd.exe /c whoami"));
        assert!(has("cmd.exe", "cmd.exe /c whoami"));
        assert!(has("exe", "cmd.exe /c whoami"));
        assert!(!has("who", "cmd.exe /c whoami"));
        assert!(!has("exe", "calc.exe1"));
        assert!(has("WHOAMI", "cmd.exe /c whoami"));
        assert!(!has("md.exe", "cmd.exe"));
        assert!(has("/c", "cmd.exe /c whoami"));
        assert!(has("c:\\windows", "C:\\Windows\\System32"));
        assert!(!has("abc", ""));
        assert!(has("a_b", "x a_b y"));
        // Underscore is not alphanumeric, so it separates terms.
        assert!(has("a", "a_b"));
    }

    #[test]
    fn has_cs_and_affixes() {
        assert!(!t(&m(Mode::Has, true, false, &["WHOAMI"]), "whoami"));
        assert!(t(&m(Mode::Has, true, false, &["whoami"]), "x whoami"));
        assert!(t(
            &m(Mode::HasPrefix, false, false, &["who"]),
            "cmd /c whoami"
        ));
        assert!(!t(
            &m(Mode::HasPrefix, false, false, &["ami"]),
            "cmd /c whoami"
        ));
        assert!(t(
            &m(Mode::HasSuffix, false, false, &["ami"]),
            "cmd /c whoami"
        ));
        assert!(!t(
            &m(Mode::HasSuffix, false, false, &["who"]),
            "cmd /c whoami"
        ));
    }

    #[test]
    fn any_and_all() {
        let any = m(Mode::Has, false, false, &["powershell", "whoami"]);
        assert!(t(&any, "whoami /all"));
        assert!(!t(&any, "net user"));
        let all = m(Mode::Has, false, true, &["net", "user"]);
        assert!(t(&all, "NET USER admin"));
        assert!(!t(&all, "net localgroup"));
        assert!(!t(&all, "network user"));
        let many: Vec<String> = (0..70).map(|i| format!("t{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let big = m(Mode::Has, false, true, &refs);
        assert!(t(&big, &many.join(" ")));
        assert!(!t(&big, &many[1..].join(" ")));
    }

    #[test]
    fn substring_modes_fold_case() {
        assert!(t(&m(Mode::Contains, false, false, &["BRik"]), "FabriKam"));
        assert!(!t(&m(Mode::Contains, true, false, &["BRik"]), "FabriKam"));
        assert!(t(&m(Mode::StartsWith, false, false, &["fab"]), "FabriKam"));
        assert!(t(&m(Mode::EndsWith, false, false, &["KAM"]), "FabriKam"));
        assert!(!t(&m(Mode::EndsWith, true, false, &["KAM"]), "FabriKam"));
        assert!(t(&m(Mode::Contains, false, false, &["ÉCOLE"]), "une école"));
        assert!(t(&m(Mode::Equals, false, false, &["Straße", "ABC"]), "abc"));
        assert!(t(
            &m(Mode::Equals, false, false, &["STRASSE", "straße"]),
            "STRAßE"
        ));
        assert!(!t(&m(Mode::Equals, true, false, &["ABC"]), "abc"));
    }

    /// The operator over a column, as `Utf8` and as views (their paths must agree).
    fn column(m: &Matcher, a: &StringArray) -> Vec<bool> {
        let bools = |out: ArrayRef| -> Vec<bool> {
            match out.as_boolean_opt() {
                Some(b) => b.iter().map(|v| v.unwrap_or(false)).collect(),
                None => panic!("not booleans"),
            }
        };
        let utf8 = bools(m.eval(&Strs::Utf8(a), a.len()));
        let views = StringViewArray::from_iter(a.iter());
        assert_eq!(bools(m.eval(&Strs::View(&views), a.len())), utf8, "views");
        utf8
    }

    #[test]
    fn whole_buffer_scan_respects_rows() {
        // A match may not span two rows, and a null row's bytes do not count.
        let values = Buffer::from("whoamiwhoamiwho ami x".as_bytes());
        let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![0i32, 6, 12, 15, 21]));
        let nulls = NullBuffer::from(vec![true, false, true, true]);
        let a = match StringArray::try_new(offsets, values, Some(nulls)) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            column(&m(Mode::Has, false, false, &["whoami"]), &a),
            [true, false, false, false]
        );
        assert_eq!(
            column(&m(Mode::Has, false, false, &["ami"]), &a),
            [false, false, false, true]
        );
        assert_eq!(
            column(&m(Mode::Contains, false, false, &["WHO"]), &a),
            [true, false, true, false]
        );
        // An overlapping candidate that fails its boundary must not hide another needle.
        let b = StringArray::from(vec!["abcd", "x bc", "zbcz"]);
        assert_eq!(
            column(&m(Mode::Has, false, false, &["abcd", "bc"]), &b),
            [true, true, false]
        );
        assert_eq!(
            column(&m(Mode::HasPrefix, false, false, &["b"]), &b),
            [false, true, false]
        );
        // Rows after an early hit are still searched.
        let c = StringArray::from(vec!["exe exe", "", "a.exe", "exec"]);
        assert_eq!(
            column(&m(Mode::Has, false, false, &["exe"]), &c),
            [true, false, true, false]
        );
        let sliced = c.slice(2, 2);
        assert_eq!(
            column(&m(Mode::Has, false, false, &["exe"]), &sliced),
            [true, false]
        );
    }

    #[test]
    fn equality_on_ascii_columns_agrees_with_folding() {
        let eq = |needles: &[&str], values: Vec<Option<&str>>| {
            let a = StringArray::from(values);
            let fast = column(&m(Mode::Equals, false, false, needles), &a);
            let matcher = m(Mode::Equals, false, false, needles);
            let slow: Vec<bool> = a
                .iter()
                .map(|v| t(&matcher, v.unwrap_or_default()))
                .collect();
            assert_eq!(fast, slow, "{needles:?}");
            fast
        };
        let values = vec![
            Some("CMD.exe"),
            None,
            Some("cmd.exe1"),
            Some(""),
            Some("cmd"),
        ];
        assert_eq!(
            eq(&["cmd.exe"], values.clone()),
            [true, false, false, false, false]
        );
        // A null reads as "", which an empty needle matches.
        assert_eq!(eq(&["", "CMD"], values), [false, true, false, true, true]);
        // A column with other text takes the folding path (the Kelvin sign folds to `k`).
        assert_eq!(
            eq(&["k"], vec![Some("\u{212A}"), Some("K"), Some("é")]),
            [true, true, false]
        );
    }

    #[test]
    fn per_row_path_agrees() {
        assert!(match_row(Mode::Has, false, "cmd.exe /c WHOAMI", "whoami"));
        assert!(!match_row(Mode::Has, false, "cmd.exe /c whoami", "who"));
        assert!(match_row(
            Mode::HasPrefix,
            false,
            "cmd.exe /c whoami",
            "who"
        ));
        assert!(match_row(Mode::Contains, false, "ÉCOLE normale", "école"));
        assert!(!match_row(Mode::Contains, true, "ÉCOLE normale", "école"));
        assert!(match_row(Mode::Equals, false, "ABC", "abc"));
        assert!(!match_row(Mode::Equals, true, "ABC", "abc"));
        assert!(match_row(Mode::EndsWith, true, "abc", ""));
    }
}
