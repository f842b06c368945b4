//! Numbers of join and group keys: text values in a [`TextTable`], and packed join keys in a
//! [`KeyTable`], an open-addressing table read a batch at a time, with the memory of rows
//! ahead asked for early.
//!
//! A join's build side holds millions of distinct keys, and numbering them (on the build
//! side) and looking them up (on the probe side) was two fifths of a hunting join, nearly
//! all of it waiting for memory: a `HashMap` reads a key's control bytes, then its entry,
//! two cache misses per row, one row after the other. Here a slot holds the key beside its
//! number (linear probing, at most half full, so a lookup reads one slot or its neighbours),
//! and a batch's keys are hashed first, then each row's slot read while the slot of the row
//! [`PREFETCH`] ahead is already asked of memory, so that the misses of many rows overlap.
//!
//! Our own: no hash map crate offers batch lookups with prefetches.
//!
//! Text keys are numbered first, each value in a [`TextTable`] (a few thousand devices and
//! files: a small table), read through [`texts`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, internal_err};

/// A number never given: the number of an empty slot, and what a key not held looks up as.
pub(crate) const NOT_INTERNED: u32 = u32::MAX;

/// How many rows ahead a slot is asked of memory: enough misses in flight to cover memory's
/// latency, few enough that the slots asked for are still in the cache when their rows come.
const PREFETCH: usize = 16;

/// Slots of a table's first allocation.
const FIRST_SLOTS: usize = 1024;

/// Memory counted for an interned text beyond its bytes (the map's entry, the list's and the
/// shared allocation's header; an estimate, not measured).
const TEXT_OVERHEAD: usize = 64;

/// Distinct text values, each numbered `0..len` in the order first interned, and kept so that
/// a number gives its value back.
#[derive(Debug, Default)]
pub(crate) struct TextTable {
    ids: HashMap<Arc<[u8]>, u32, foldhash::fast::RandomState>,
    values: Vec<Arc<[u8]>>,
}

impl TextTable {
    /// The number of `value`, the next one if it is new; `grow` is asked for the bytes a new
    /// value takes before it is kept, and may refuse them.
    pub(crate) fn intern(
        &mut self,
        value: &[u8],
        grow: impl FnOnce(usize) -> Result<()>,
    ) -> Result<u32> {
        if let Some(&id) = self.ids.get(value) {
            return Ok(id);
        }
        let id = u32::try_from(self.values.len())
            .ok()
            .filter(|&id| id != NOT_INTERNED)
            .ok_or_else(|| {
                DataFusionError::ResourcesExhausted(
                    "a key column has more than 4,294,967,294 distinct values in one partition"
                        .into(),
                )
            })?;
        grow(value.len() + TEXT_OVERHEAD)?;
        let value: Arc<[u8]> = value.into();
        self.ids.insert(Arc::clone(&value), id);
        self.values.push(value);
        Ok(id)
    }

    /// The number of `value`, [`NOT_INTERNED`] if it was never interned.
    pub(crate) fn find(&self, value: &[u8]) -> u32 {
        self.ids.get(value).copied().unwrap_or(NOT_INTERNED)
    }

    /// The value numbered `id`.
    pub(crate) fn value(&self, id: u32) -> Option<&[u8]> {
        self.values.get(id as usize).map(|v| &v[..])
    }
}

/// Distinct 128-bit keys, each numbered `0..len` in the order first interned.
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    /// A power of two many, or none before the first key.
    slots: Vec<Slot>,
    len: usize,
    state: foldhash::fast::RandomState,
}

/// A key as two halves: 24 bytes rather than an `i128`'s 32 (its alignment).
#[derive(Debug, Clone, Copy)]
struct Slot {
    hi: u64,
    lo: u64,
    id: u32,
}

const EMPTY: Slot = Slot {
    hi: 0,
    lo: 0,
    id: NOT_INTERNED,
};

fn halves(key: i128) -> (u64, u64) {
    ((key >> 64) as u64, key as u64)
}

impl KeyTable {
    /// The bytes a table of `slots` slots takes.
    pub(crate) fn bytes(slots: usize) -> usize {
        slots * size_of::<Slot>()
    }

    /// Numbers each key (`out[i]`), giving a key not seen before the next number; rows that
    /// are null in `nulls` are skipped (their number is 0). `grow` is asked for the bytes of
    /// each larger allocation before it is made, and may refuse it.
    pub(crate) fn intern(
        &mut self,
        keys: &[i128],
        nulls: Option<&NullBuffer>,
        out: &mut [u32],
        mut grow: impl FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        let hashes = self.hashes(keys);
        for (i, (&key, &hash)) in keys.iter().zip(&hashes).enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH) {
                self.prefetch(ahead);
            }
            if nulls.is_some_and(|n| n.is_null(i)) {
                out[i] = 0;
                continue;
            }
            if 2 * (self.len + 1) > self.slots.len() {
                self.grow(&mut grow)?;
            }
            out[i] = self.insert(key, hash)?;
        }
        Ok(())
    }

    /// The number of each key, [`NOT_INTERNED`] for a key never interned.
    pub(crate) fn find(&self, keys: &[i128], out: &mut [u32]) {
        if self.slots.is_empty() {
            out.fill(NOT_INTERNED);
            return;
        }
        let hashes = self.hashes(keys);
        let mask = self.slots.len() - 1;
        for (i, (&key, &hash)) in keys.iter().zip(&hashes).enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH) {
                self.prefetch(ahead);
            }
            let (hi, lo) = halves(key);
            let mut at = hash as usize & mask;
            out[i] = loop {
                let slot = self.slots[at];
                if slot.id == NOT_INTERNED || (slot.hi == hi && slot.lo == lo) {
                    break slot.id;
                }
                at = (at + 1) & mask;
            };
        }
    }

    fn hashes(&self, keys: &[i128]) -> Vec<u64> {
        keys.iter()
            .map(|&k| self.state.hash_one(halves(k)))
            .collect()
    }

    fn prefetch(&self, hash: u64) {
        if let Some(slot) = self
            .slots
            .get(hash as usize & self.slots.len().wrapping_sub(1))
        {
            prefetch(slot);
        }
    }

    /// The number of `key`, interned if new; the table has room for one more key.
    fn insert(&mut self, key: i128, hash: u64) -> Result<u32> {
        let (hi, lo) = halves(key);
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let slot = &mut self.slots[at];
            if slot.id == NOT_INTERNED {
                let id = u32::try_from(self.len)
                    .ok()
                    .filter(|&id| id != NOT_INTERNED)
                    .ok_or_else(|| {
                        DataFusionError::ResourcesExhausted(
                            "a join's build side has more than 4,294,967,294 distinct keys".into(),
                        )
                    })?;
                *slot = Slot { hi, lo, id };
                self.len += 1;
                return Ok(id);
            }
            if slot.hi == hi && slot.lo == lo {
                return Ok(slot.id);
            }
            at = (at + 1) & mask;
        }
    }

    /// Doubles the slots (or makes the first ones) and places every key again.
    fn grow(&mut self, grow: &mut impl FnMut(usize) -> Result<()>) -> Result<()> {
        let slots = (2 * self.slots.len()).max(FIRST_SLOTS);
        grow(Self::bytes(slots) - Self::bytes(self.slots.len()))?;
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        let mask = slots - 1;
        for slot in old.into_iter().filter(|s| s.id != NOT_INTERNED) {
            let key = (i128::from(slot.hi) << 64) | i128::from(slot.lo);
            let mut at = self.state.hash_one(halves(key)) as usize & mask;
            while self.slots[at].id != NOT_INTERNED {
                at = (at + 1) & mask;
            }
            self.slots[at] = slot;
        }
        Ok(())
    }
}

/// Asks for the cache line of `value` without waiting for it.
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE, which `_mm_prefetch` needs, is part of every x86_64 target; a prefetch
    // reads nothing the program sees and cannot fault.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Hands each text value's number (what `number` gives it) to `put` with its row; null rows
/// are skipped.
pub(crate) fn texts(
    values: &ArrayRef,
    mut number: impl FnMut(&[u8]) -> Result<u32>,
    mut put: impl FnMut(usize, u32),
) -> Result<()> {
    match values.data_type() {
        DataType::Utf8View => {
            let a = values.as_string_view();
            // Equal views of one array are equal values (a long value's view names its
            // bytes' place), and a column read from a Parquet dictionary repeats the view of
            // each of its values: a small cache of views seen spares hashing and comparing
            // the bytes of most rows (a device's 40-character id, say).
            let mut seen = ViewCache::new();
            for (i, &view) in a.views().iter().enumerate() {
                if a.is_null(i) {
                    continue;
                }
                let id = match seen.get(view) {
                    Some(id) => id,
                    None => {
                        let id = number(a.value(i).as_bytes())?;
                        seen.put(view, id);
                        id
                    }
                };
                put(i, id);
            }
            Ok(())
        }
        DataType::Utf8 => strings(values.as_string::<i32>().iter(), number, put),
        DataType::LargeUtf8 => strings(values.as_string::<i64>().iter(), number, put),
        t => internal_err!("PackedKeysExec: {t} is not text"),
    }
}

/// The numbers of views lately seen in one array, each in the one place its view hashes to.
struct ViewCache {
    views: Vec<u128>,
    ids: Vec<u32>,
}

impl ViewCache {
    /// Places: 2,048, twice the distinct device ids of a batch of the bench's 1,000-device
    /// fleet (a larger fleet's batches hit less often, never wrongly); small enough that
    /// filling them per batch costs little beside the batch's 8,192 rows.
    const BITS: u32 = 11;

    fn new() -> ViewCache {
        // No view is all ones: it would name buffer 4,294,967,295 of its array.
        ViewCache {
            views: vec![u128::MAX; 1 << Self::BITS],
            ids: vec![0; 1 << Self::BITS],
        }
    }

    fn place(view: u128) -> usize {
        let mixed = (view as u64) ^ ((view >> 64) as u64).rotate_left(29);
        (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Self::BITS)) as usize
    }

    fn get(&self, view: u128) -> Option<u32> {
        let at = Self::place(view);
        (self.views[at] == view).then(|| self.ids[at])
    }

    fn put(&mut self, view: u128, id: u32) {
        let at = Self::place(view);
        self.views[at] = view;
        self.ids[at] = id;
    }
}

fn strings<'a>(
    values: impl Iterator<Item = Option<&'a str>>,
    mut number: impl FnMut(&[u8]) -> Result<u32>,
    mut put: impl FnMut(usize, u32),
) -> Result<()> {
    let mut last: Option<(&str, u32)> = None;
    for (i, v) in values.enumerate() {
        let Some(v) = v else { continue };
        let id = match last {
            Some((l, id)) if v == l => id,
            _ => {
                let id = number(v.as_bytes())?;
                last = Some((v, id));
                id
            }
        };
        put(i, id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::array::StringViewBuilder;

    fn intern(table: &mut KeyTable, keys: &[i128]) -> Vec<u32> {
        let mut out = vec![0; keys.len()];
        table.intern(keys, None, &mut out, |_| Ok(())).unwrap();
        out
    }

    #[test]
    fn numbers_keys_in_the_order_first_seen_and_finds_them() {
        let mut table = KeyTable::default();
        let mut none = vec![0; 2];
        table.find(&[1, 2], &mut none);
        assert_eq!(none, [NOT_INTERNED, NOT_INTERNED]);
        // Keys differing only in one half, and enough of them to grow the table many times.
        let keys: Vec<i128> = (0..10_000i128)
            .map(|i| if i % 2 == 0 { i << 64 } else { i })
            .chain([-1, i128::MIN, i128::MAX, 0])
            .collect();
        let first = intern(&mut table, &keys);
        assert_eq!(first[..10_000], (0..10_000).collect::<Vec<u32>>()[..]);
        // -1, MIN, MAX are new; 0 was the first key.
        assert_eq!(first[10_000..], [10_000, 10_001, 10_002, 0]);
        assert_eq!(table.len, 10_003);
        assert_eq!(intern(&mut table, &keys), first);
        let mut found = vec![0; keys.len() + 2];
        let probe: Vec<i128> = keys.iter().copied().chain([1 << 64 | 1, 3 << 64]).collect();
        table.find(&probe, &mut found);
        assert_eq!(found[..keys.len()], first[..]);
        assert_eq!(found[keys.len()..], [NOT_INTERNED, NOT_INTERNED]);
    }

    #[test]
    fn null_rows_are_not_interned() {
        let mut table = KeyTable::default();
        let nulls = NullBuffer::from(vec![true, false, true]);
        let mut out = vec![7; 3];
        table
            .intern(&[5, 6, 5], Some(&nulls), &mut out, |_| Ok(()))
            .unwrap();
        assert_eq!(out, [0, 0, 0]);
        assert_eq!(table.len, 1);
        let mut found = vec![0; 1];
        table.find(&[6], &mut found);
        assert_eq!(found, [NOT_INTERNED]);
    }

    #[test]
    fn growth_asks_for_its_bytes_and_stops_when_refused() {
        let mut table = KeyTable::default();
        let mut asked = Vec::new();
        let keys: Vec<i128> = (0..2_000).collect();
        let mut out = vec![0; keys.len()];
        table
            .intern(&keys, None, &mut out, |b| {
                asked.push(b);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            asked,
            [
                KeyTable::bytes(1024),
                KeyTable::bytes(2048),
                KeyTable::bytes(4096)
            ]
            .iter()
            .scan(0, |had, &now| {
                let more = now - *had;
                *had = now;
                Some(more)
            })
            .collect::<Vec<_>>()
        );
        let more: Vec<i128> = (2_000..4_000).collect();
        let refused = table.intern(&more, None, &mut out, |_| {
            Err(DataFusionError::ResourcesExhausted("no".into()))
        });
        assert!(refused.is_err());
        // What was interned before the refusal is still there and numbered as it was.
        let mut found = vec![0; 2];
        table.find(&[0, 1_999], &mut found);
        assert_eq!(found, [0, 1_999]);
    }

    #[test]
    fn text_table_numbers_values_and_gives_them_back() {
        let mut table = TextTable::default();
        let mut asked = 0;
        let mut grow = |b| {
            asked += b;
            Ok(())
        };
        assert_eq!(table.intern(b"a", &mut grow).unwrap(), 0);
        assert_eq!(table.intern(b"", &mut grow).unwrap(), 1);
        assert_eq!(table.intern(b"a", &mut grow).unwrap(), 0);
        assert_eq!(asked, 1 + 2 * TEXT_OVERHEAD);
        assert_eq!(table.find(b"A"), NOT_INTERNED);
        assert_eq!(table.find(b""), 1);
        assert_eq!(table.value(0), Some(&b"a"[..]));
        assert_eq!(table.value(2), None);
        let refused = table.intern(b"b", |_| {
            Err(DataFusionError::ResourcesExhausted("no".into()))
        });
        assert!(refused.is_err());
        assert_eq!(table.find(b"b"), NOT_INTERNED);
    }

    /// Views that repeat (as a column read from a Parquet dictionary has them) are numbered
    /// by their values, most of them without their bytes being looked up again; more distinct
    /// values than the cache has places, so that places are taken over.
    #[test]
    fn repeated_views_are_numbered_by_their_values() {
        let mut rng = crate::join_keys::tests::Rng(7);
        let distinct: Vec<String> = (0..5_000)
            .map(|i| format!("device-{i:034}"))
            .chain(["a".into(), "".into()])
            .collect();
        let mut builder = StringViewBuilder::new().with_deduplicate_strings();
        let mut rows = Vec::new();
        for _ in 0..60_000 {
            // A few values are common, as a fleet's busiest devices are.
            let pick = match rng.below(4) {
                0 => rng.below(distinct.len() as u64),
                _ => rng.below(40),
            };
            let value = (rng.below(50) != 0).then(|| distinct[pick as usize].as_str());
            builder.append_option(value);
            rows.push(value);
        }
        let array: ArrayRef = Arc::new(builder.finish());
        let mut numbers: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut looked_up = 0;
        let mut got = vec![None; rows.len()];
        texts(
            &array,
            |v| {
                looked_up += 1;
                let next = numbers.len() as u32;
                Ok(*numbers.entry(v.to_vec()).or_insert(next))
            },
            |i, id| got[i] = Some(id),
        )
        .unwrap();
        for (row, (value, id)) in rows.iter().zip(&got).enumerate() {
            let want = value.map(|v| numbers[v.as_bytes()]);
            assert_eq!(*id, want, "row {row}: {value:?}");
        }
        assert!(
            looked_up < rows.len() / 3,
            "{looked_up} lookups for {} rows",
            rows.len()
        );
    }
}
