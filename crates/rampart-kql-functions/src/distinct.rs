//! `dcount`: the number of distinct values of each group, counted in one hash table of
//! (group, value hash) pairs.
//!
//! DataFusion plans `count(DISTINCT x) … GROUP BY k` as a group by on `k, x` and then a count
//! (its single-distinct rewrite): every row's key columns are hashed and compared again in a
//! table of all (k, x) pairs, which with a 40-character `DeviceId` in `k` was nearly all of
//! `summarize dcount(AccountName) by DeviceId, FileName`. Here the group by is on `k` alone;
//! each row adds the hash of its value to the table with its group's index, and a pair seen
//! for the first time adds one to the group's count. A partial aggregate hands each group's
//! hashes on as a list, which the final aggregate adds to its own table.
//!
//! The count is exact unless two distinct values of one group have the same 64-bit hash: for
//! a group of n distinct values, a chance of about n²/2⁶⁵ (3·10⁻⁸ for a million values). The
//! hash is foldhash's quality variant with a seed drawn once per process, so values cannot be
//! chosen in advance to collide. Kusto's own `dcount` is an estimate (HyperLogLog, a standard
//! error of 0.8 % at its default accuracy).

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, UInt64Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::hash_utils::{QualityRandomState, create_hashes};
use datafusion::common::{HashSet, Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::one_group::{OneGroup, OneGroupValues};

/// `dcount(x)`: distinct non-null values of `x`, as a `long`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct DcountUdaf {
    signature: Signature,
}

impl DcountUdaf {
    pub(crate) fn new() -> DcountUdaf {
        DcountUdaf {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// An item of the state's lists: a value hash.
fn hash_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::UInt64, false))
}

/// The lists of the state: `lengths` consecutive runs of `hashes`.
fn hash_lists(lengths: impl IntoIterator<Item = usize>, hashes: Vec<u64>) -> Result<ListArray> {
    Ok(ListArray::try_new(
        hash_item(),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(UInt64Array::from(hashes)),
        None,
    )?)
}

impl AggregateUDFImpl for DcountUdaf {
    fn name(&self) -> &str {
        "dcount"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    /// Over no rows (a `summarize` without `by` on an empty input) the count is 0.
    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "hashes"),
            DataType::List(hash_item()),
            true,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OneGroup(DistinctHashes::default())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(DistinctHashes::default()))
    }
}

/// The hash of values: one seed per process (partial and final aggregates of a query run in
/// the same process, and must agree).
fn value_hasher() -> QualityRandomState {
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8));
    QualityRandomState::with_seed(seed)
}

/// Hashes a (group, value hash) pair: the value hash is already uniform, so the group is
/// mixed in with one multiplication instead of hashing both again.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }

    fn write_usize(&mut self, g: usize) {
        self.0 ^= (g as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Hashes the rows of `value` into `hashes`; returns which rows count (not null, and kept by
/// the filter), or `None` when all do.
fn hash_rows(
    random: &QualityRandomState,
    value: &ArrayRef,
    filter: Option<&BooleanArray>,
    hashes: &mut Vec<u64>,
) -> Result<Option<NullBuffer>> {
    hashes.clear();
    hashes.resize(value.len(), 0);
    create_hashes([value], random, hashes)?;
    let kept = filter.map(|f| {
        let mut keep = f.values().clone();
        if let Some(n) = f.nulls() {
            keep = &keep & n.inner();
        }
        NullBuffer::from(keep)
    });
    Ok(NullBuffer::union(
        value.logical_nulls().as_ref(),
        kept.as_ref(),
    ))
}

/// Every group's distinct value hashes, and how many each group has.
#[derive(Debug)]
struct DistinctHashes {
    random: QualityRandomState,
    seen: HashSet<(usize, u64), BuildHasherDefault<PairHasher>>,
    counts: Vec<i64>,
    /// Scratch: the hashes of the batch being added.
    hashes: Vec<u64>,
}

impl Default for DistinctHashes {
    fn default() -> DistinctHashes {
        DistinctHashes {
            random: value_hasher(),
            seen: HashSet::default(),
            counts: Vec::new(),
            hashes: Vec::new(),
        }
    }
}

impl DistinctHashes {
    /// Adds each row's hash to its group.
    fn add(&mut self, groups: &[usize], valid: Option<&NullBuffer>, total_groups: usize) {
        self.counts.resize(total_groups, 0);
        // Clustered rows repeat (group, value) pairs: a repeat of the row before is skipped
        // without a probe.
        let mut last = None;
        for (row, (&g, &h)) in groups.iter().zip(&self.hashes).enumerate() {
            if valid.is_some_and(|v| v.is_null(row)) || last == Some((g, h)) {
                continue;
            }
            last = Some((g, h));
            if self.seen.insert((g, h)) {
                self.counts[g] += 1;
            }
        }
    }

    /// The hashes of the first `n` groups, one list per group (the table is not changed).
    fn lists(&self, n: usize) -> Result<ListArray> {
        let counts = self.counts.get(..n).unwrap_or(&self.counts);
        let mut next: Vec<usize> = Vec::with_capacity(counts.len());
        let mut total = 0usize;
        for &c in counts {
            next.push(total);
            total += usize::try_from(c).unwrap_or(0);
        }
        let mut hashes = vec![0u64; total];
        for &(g, h) in &self.seen {
            if let Some(at) = next.get_mut(g) {
                if let Some(slot) = hashes.get_mut(*at) {
                    *slot = h;
                }
                *at += 1;
            }
        }
        hash_lists(
            counts.iter().map(|&c| usize::try_from(c).unwrap_or(0)),
            hashes,
        )
    }

    /// Removes the groups `emit_to` names; the groups after them are numbered from 0.
    fn take(&mut self, emit_to: EmitTo) -> Vec<i64> {
        let counts = emit_to.take_needed(&mut self.counts);
        match emit_to {
            EmitTo::All => self.seen.clear(),
            EmitTo::First(n) => {
                self.seen = std::mem::take(&mut self.seen)
                    .into_iter()
                    .filter(|&(g, _)| g >= n)
                    .map(|(g, h)| (g - n, h))
                    .collect();
            }
        }
        counts
    }

    fn emitted(&self, emit_to: EmitTo) -> usize {
        match emit_to {
            EmitTo::All => self.counts.len(),
            EmitTo::First(n) => n.min(self.counts.len()),
        }
    }
}

impl GroupsAccumulator for DistinctHashes {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let [value] = values else {
            return exec_err!("dcount takes one value");
        };
        if value.len() != group_indices.len() {
            return exec_err!(
                "dcount: {} values for {} rows",
                value.len(),
                group_indices.len()
            );
        }
        let valid = hash_rows(&self.random, value, opt_filter, &mut self.hashes)?;
        self.add(group_indices, valid.as_ref(), total_num_groups);
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from(self.take(emit_to))))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let lists = self.lists(self.emitted(emit_to))?;
        self.take(emit_to);
        Ok(vec![Arc::new(lists)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let [lists] = values else {
            return exec_err!("dcount state is one list of hashes");
        };
        let Some(lists) = lists.as_list_opt::<i32>() else {
            return exec_err!("dcount state is not a list");
        };
        let Some(hashes) = lists.values().as_primitive_opt::<UInt64Type>() else {
            return exec_err!("dcount state does not hold hashes");
        };
        if lists.len() != group_indices.len() {
            return exec_err!(
                "dcount: {} states for {} rows",
                lists.len(),
                group_indices.len()
            );
        }
        self.counts.resize(total_num_groups, 0);
        let offsets = lists.value_offsets();
        for (row, &g) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            for &h in hashes.values().get(start..end).unwrap_or_default() {
                if self.seen.insert((g, h)) {
                    self.counts[g] += 1;
                }
            }
        }
        Ok(())
    }

    /// Each row as a state of its own: a list of its value's hash, empty when the row does
    /// not count.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let [value] = values else {
            return exec_err!("dcount takes one value");
        };
        let mut hashes = Vec::new();
        let valid = hash_rows(&self.random, value, opt_filter, &mut hashes)?;
        let counts =
            (0..value.len()).map(|row| usize::from(valid.as_ref().is_none_or(|v| v.is_valid(row))));
        let hashes: Vec<u64> = match &valid {
            None => hashes,
            Some(v) => v.valid_indices().map(|row| hashes[row]).collect(),
        };
        Ok(vec![Arc::new(hash_lists(counts, hashes)?)])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.seen.capacity() * (std::mem::size_of::<(usize, u64)>() + 1)
            + self.counts.capacity() * 8
            + self.hashes.capacity() * 8
    }
}

/// The same count without groups (`summarize dcount(x)` with no `by`).
impl OneGroupValues for DistinctHashes {
    fn value(&self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(
            self.counts.first().copied().unwrap_or(0),
        )))
    }

    fn state_values(&self) -> Result<Vec<ScalarValue>> {
        let one = if self.counts.is_empty() {
            hash_lists([0], Vec::new())?
        } else {
            self.lists(1)?
        };
        Ok(vec![ScalarValue::List(Arc::new(one))])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet as StdSet;

    use datafusion::arrow::array::{StringArray, StringViewArray};

    use super::*;

    fn strings(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringViewArray::from(v.to_vec()))
    }

    fn counts(a: &ArrayRef) -> Vec<i64> {
        a.as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn counts_distinct_non_null_values_per_group() -> Result<()> {
        let mut acc = DistinctHashes::default();
        let v = strings(&[Some("a"), Some("b"), Some("a"), None, Some("a"), Some("c")]);
        acc.update_batch(&[v], &[0, 0, 0, 0, 1, 2], None, 3)?;
        // A group first seen in a later batch, and values already seen.
        let v = strings(&[Some("b"), None, Some("z")]);
        acc.update_batch(&[v], &[0, 3, 1], None, 4)?;
        assert_eq!(counts(&acc.evaluate(EmitTo::All)?), [2, 2, 1, 0]);
        assert!(acc.seen.is_empty());
        Ok(())
    }

    #[test]
    fn a_filter_leaves_rows_out() -> Result<()> {
        let mut acc = DistinctHashes::default();
        let v = strings(&[Some("a"), Some("b"), Some("c"), Some("d")]);
        let keep = BooleanArray::from(vec![Some(true), Some(false), None, Some(true)]);
        acc.update_batch(&[v], &[0, 0, 0, 1], Some(&keep), 2)?;
        assert_eq!(counts(&acc.evaluate(EmitTo::All)?), [1, 1]);
        Ok(())
    }

    #[test]
    fn partial_states_merge_without_counting_twice() -> Result<()> {
        // Two partial aggregates see overlapping values of the same groups.
        let mut left = DistinctHashes::default();
        left.update_batch(
            &[strings(&[Some("a"), Some("b"), Some("x")])],
            &[0, 0, 1],
            None,
            2,
        )?;
        let mut right = DistinctHashes::default();
        right.update_batch(
            &[strings(&[Some("x"), Some("b"), Some("c")])],
            &[0, 1, 1],
            None,
            2,
        )?;
        let (l, r) = (left.state(EmitTo::All)?, right.state(EmitTo::All)?);
        let mut fin = DistinctHashes::default();
        // Left's groups 0, 1 are the final's 1, 0; right's keep their numbers.
        fin.merge_batch(&l, &[1, 0], 2)?;
        fin.merge_batch(&r, &[0, 1], 2)?;
        // Group 0: x (left's 1) and x (right's 0); group 1: a, b (left's 0) and b, c.
        assert_eq!(counts(&fin.evaluate(EmitTo::All)?), [1, 3]);
        Ok(())
    }

    #[test]
    fn emitting_the_first_groups_renumbers_the_rest() -> Result<()> {
        let mut acc = DistinctHashes::default();
        let v = strings(&[Some("a"), Some("b"), Some("a"), Some("c"), Some("d")]);
        acc.update_batch(&[v], &[0, 0, 1, 2, 2], None, 3)?;
        let state = acc.state(EmitTo::First(1))?;
        assert_eq!(state[0].as_list::<i32>().value_length(0), 2);
        assert_eq!(acc.counts, [1, 2]);
        // Former group 1 (now 0) holds "a"; former group 2 (now 1) holds "c" and "d".
        acc.update_batch(
            &[strings(&[Some("a"), Some("d"), Some("e")])],
            &[0, 1, 1],
            None,
            2,
        )?;
        assert_eq!(counts(&acc.evaluate(EmitTo::First(1))?), [1]);
        assert_eq!(counts(&acc.evaluate(EmitTo::All)?), [3]);
        Ok(())
    }

    #[test]
    fn rows_passed_on_as_state_count_once_merged() -> Result<()> {
        let acc = DistinctHashes::default();
        let v = strings(&[Some("a"), None, Some("a"), Some("b")]);
        let keep = BooleanArray::from(vec![true, true, true, false]);
        let state = acc.convert_to_state(&[v], Some(&keep))?;
        let lists = state[0].as_list::<i32>();
        assert_eq!(
            (0..4).map(|r| lists.value_length(r)).collect::<Vec<_>>(),
            [1, 0, 1, 0]
        );
        let mut fin = DistinctHashes::default();
        fin.merge_batch(&state, &[0, 0, 0, 0], 1)?;
        assert_eq!(counts(&fin.evaluate(EmitTo::All)?), [1]);
        Ok(())
    }

    #[test]
    fn one_group_without_by() -> Result<()> {
        let mut one = OneGroup(DistinctHashes::default());
        assert_eq!(one.evaluate()?, ScalarValue::Int64(Some(0)));
        let empty = one.state()?;
        one.update_batch(&[Arc::new(StringArray::from(vec!["p", "q", "p"])) as ArrayRef])?;
        let state = one.state()?;
        let mut fin = OneGroup(DistinctHashes::default());
        for s in [empty, state] {
            let [ScalarValue::List(l)] = s.as_slice() else {
                panic!("the state is one list");
            };
            fin.merge_batch(&[Arc::clone(l) as ArrayRef])?;
        }
        assert_eq!(fin.evaluate()?, ScalarValue::Int64(Some(2)));
        Ok(())
    }

    #[test]
    fn many_values_match_an_exact_count() -> Result<()> {
        // 200,000 rows over 1,000 groups, in batches; checked against a set of the values.
        let mut acc = DistinctHashes::default();
        let mut exact: Vec<StdSet<String>> = vec![StdSet::new(); 1000];
        for batch in 0..25u64 {
            let mut groups = Vec::new();
            let mut values = Vec::new();
            for i in 0..8000u64 {
                let x = (batch * 8000 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let g = (x % 1000) as usize;
                let v = format!("user{}", (x >> 20) % 500);
                exact[g].insert(v.clone());
                groups.push(g);
                values.push(Some(v));
            }
            let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
            acc.update_batch(&[strings(&refs)], &groups, None, 1000)?;
        }
        let want: Vec<i64> = exact.iter().map(|s| s.len() as i64).collect();
        assert_eq!(counts(&acc.evaluate(EmitTo::All)?), want);
        Ok(())
    }
}
