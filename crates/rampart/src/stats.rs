//! Counts gathered during triage, per worker thread and merged at the end.

use std::collections::{BTreeMap, HashMap};

use rampart_schema::Table;
use rampart_sigma::{CorrelationInput, Detection};

/// What one worker saw.
#[derive(Default)]
pub struct Shard {
    pub per_channel: HashMap<String, u64>,
    pub per_table: BTreeMap<Table, u64>,
    pub detections: Vec<Detection>,
    pub correlation_inputs: Vec<CorrelationInput>,
}

impl Shard {
    pub fn merge(&mut self, other: Shard) {
        for (k, v) in other.per_channel {
            *self.per_channel.entry(k).or_default() += v;
        }
        for (k, v) in other.per_table {
            *self.per_table.entry(k).or_default() += v;
        }
        self.detections.extend(other.detections);
        self.correlation_inputs.extend(other.correlation_inputs);
    }
}

/// Peak resident memory of this process so far, in bytes.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0;
    if ok {
        usage.ru_maxrss.max(0) as u64 * 1024
    } else {
        0
    }
}
