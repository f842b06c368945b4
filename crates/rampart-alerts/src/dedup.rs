//! Suppression: repeats of an open alert update it instead of raising new alerts.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

/// How long an alert stays open to repeats, and how many open alerts are tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupConfig {
    /// A draft whose event time is within this of the open alert's last event (either side:
    /// records arrive out of order) is a repeat. Default one hour.
    pub window: TimeDelta,
    /// Most dedup keys tracked; beyond it the key seen longest ago is dropped, so a flood of
    /// distinct alerts costs bounded memory (its oldest repeats then raise new alerts).
    pub capacity: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window: TimeDelta::hours(1),
            capacity: 100_000,
        }
    }
}

/// What to do with a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dedup {
    /// Raise a new alert (then [`Deduplicator::remember`] it).
    New,
    /// A repeat of this open alert: count it there (and [`Deduplicator::remember`] the time).
    Update(String),
}

#[derive(Debug, Clone)]
struct Open {
    alert: String,
    last: DateTime<Utc>,
}

/// Open alerts by dedup key. Pure bookkeeping: [`Deduplicator::check`] answers, the caller
/// acts and reports back with [`Deduplicator::remember`]; rebuilt at start-up by remembering
/// the persisted open alerts (their dedup key, id and last event time).
#[derive(Debug, Clone)]
pub struct Deduplicator {
    config: DedupConfig,
    open: HashMap<String, Open>,
    /// (last event time, key): the eviction order.
    by_time: BTreeSet<(DateTime<Utc>, String)>,
    /// The latest event time remembered; keys whose last event is a window older are closed.
    watermark: Option<DateTime<Utc>>,
}

impl Deduplicator {
    pub fn new(config: DedupConfig) -> Deduplicator {
        Deduplicator {
            config,
            open: HashMap::new(),
            by_time: BTreeSet::new(),
            watermark: None,
        }
    }

    /// Whether a draft with `key` at event `time` is new or a repeat of an open alert.
    pub fn check(&self, key: &str, time: DateTime<Utc>) -> Dedup {
        match self.open.get(key) {
            Some(open) if (time - open.last).abs() <= self.config.window => {
                Dedup::Update(open.alert.clone())
            }
            _ => Dedup::New,
        }
    }

    /// Records that alert `alert` has an occurrence with `key` at `time` (a new alert, a
    /// repeat, or a persisted alert at start-up). The window slides: it is measured from the
    /// alert's latest occurrence.
    pub fn remember(&mut self, key: &str, alert: &str, time: DateTime<Utc>) {
        let last = match self.open.get(key) {
            Some(open) if open.alert == alert => open.last.max(time),
            _ => time,
        };
        self.forget(key);
        self.by_time.insert((last, key.to_string()));
        self.open.insert(
            key.to_string(),
            Open {
                alert: alert.to_string(),
                last,
            },
        );
        self.watermark = Some(self.watermark.map_or(time, |w| w.max(time)));
        self.evict();
    }

    /// Stops treating `key` as open (its alert was resolved): the next draft is new.
    pub fn forget(&mut self, key: &str) {
        if let Some(open) = self.open.remove(key) {
            self.by_time.remove(&(open.last, key.to_string()));
        }
    }

    /// Open keys tracked.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn evict(&mut self) {
        let horizon = self.watermark.map(|w| w - self.config.window);
        while let Some((last, key)) = self.by_time.first().cloned() {
            let expired = horizon.is_some_and(|h| last < h);
            if !expired && self.open.len() <= self.config.capacity {
                break;
            }
            self.forget(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::days(20_000) + TimeDelta::minutes(minutes)
    }

    #[test]
    fn repeats_within_the_window_update_and_the_window_slides() {
        let mut d = Deduplicator::new(DedupConfig::default());
        assert_eq!(d.check("k", at(0)), Dedup::New);
        d.remember("k", "a1", at(0));
        assert_eq!(d.check("k", at(59)), Dedup::Update("a1".into()));
        d.remember("k", "a1", at(59));
        // 110 minutes after the first occurrence, 51 after the last: still open.
        assert_eq!(d.check("k", at(110)), Dedup::Update("a1".into()));
        assert_eq!(d.check("k", at(120)), Dedup::New);
        // Out of order, within the window before the last occurrence.
        assert_eq!(d.check("k", at(10)), Dedup::Update("a1".into()));
        assert_eq!(d.check("other", at(1)), Dedup::New);
        // A new alert for the key replaces the old one.
        d.remember("k", "a2", at(200));
        assert_eq!(d.check("k", at(201)), Dedup::Update("a2".into()));
        d.forget("k");
        assert_eq!(d.check("k", at(201)), Dedup::New);
    }

    #[test]
    fn expired_keys_are_evicted_and_memory_is_capped() {
        let mut d = Deduplicator::new(DedupConfig {
            window: TimeDelta::hours(1),
            capacity: 3,
        });
        for i in 0..10 {
            d.remember(&format!("k{i}"), &format!("a{i}"), at(i));
        }
        assert_eq!(d.len(), 3, "capped");
        assert_eq!(d.check("k0", at(10)), Dedup::New, "oldest evicted");
        assert_eq!(d.check("k9", at(10)), Dedup::Update("a9".into()));
        d.remember("late", "b", at(600));
        assert_eq!(
            d.len(),
            1,
            "everything a window older than the newest is gone"
        );
    }
}
