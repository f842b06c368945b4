//! Sources whose log records hold their input rather than their rows.
//!
//! A row logged as Arrow is encoded twice: once for the log, once for Parquet. A source that
//! turns its input into rows deterministically (forwarded Windows events: a compressed body of
//! JSON lines) can log the input as it came, a fraction of the rows' size and no encoding at
//! all, and have the rows made again from it when the log is replayed. The store then needs
//! that source's decoder wherever it reads the log: a store whose log holds records of a source
//! it has no decoder for is not opened, rather than opened without their rows.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use rampart_schema::Table;

/// Makes the rows of a logged input again.
pub trait SourceDecoder: Send + Sync {
    /// The rows `input` gave when it was appended (the same rows, in any order and batching).
    fn decode(&self, input: &[u8]) -> Result<Vec<(Table, RecordBatch)>, String>;
}

/// The decoders of the sources a store logs by input, by kind (a name the log records carry).
#[derive(Clone, Default)]
pub struct Sources(Arc<BTreeMap<String, Arc<dyn SourceDecoder>>>);

/// Longest name of a source kind (one byte of length in a record).
pub const MAX_SOURCE_KIND_LEN: usize = 64;

impl Sources {
    /// These sources and `kind`, read by `decoder`. A kind is at most
    /// [`MAX_SOURCE_KIND_LEN`] bytes of ASCII letters, digits, `-` and `.`.
    pub fn with(self, kind: &str, decoder: impl SourceDecoder + 'static) -> Sources {
        assert!(valid_kind(kind), "source kind '{kind}'");
        let mut map = Arc::unwrap_or_clone(self.0);
        map.insert(kind.to_string(), Arc::new(decoder));
        Sources(Arc::new(map))
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&dyn SourceDecoder> {
        self.0.get(kind).map(|d| d.as_ref())
    }
}

pub(crate) fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_SOURCE_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}
