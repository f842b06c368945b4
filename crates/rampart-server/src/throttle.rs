//! Guessing defence for sign-in and agent enrollment: after `max_failures` failures of one key
//! (a user name, an address) within the window, the key is refused for `lockout`, doubling with
//! each further failure up to an hour, whatever the password or token — so online guessing costs
//! hours, not the argon2 time per guess. A success clears the key. Memory is bounded: past
//! [`MAX_KEYS`] keys the stale ones go, then the oldest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered at most.
pub const MAX_KEYS: usize = 100_000;
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    keys: Mutex<HashMap<String, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    failures: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration, lockout: Duration) -> Throttle {
        Throttle {
            max_failures: max_failures.max(1),
            window,
            lockout,
            keys: Mutex::default(),
        }
    }

    /// `Err(wait)` while any of `keys` is locked out: how long until it is not.
    pub fn check(&self, keys: &[&str]) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| entries.get(*k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failure against each key; locks a key out once it has too many.
    pub fn failed(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut entries = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() + keys.len() > MAX_KEYS {
            let window = self.window;
            entries.retain(|_, e| {
                now.duration_since(e.first) < window || e.locked_until.is_some_and(|u| u > now)
            });
            while entries.len() + keys.len() > MAX_KEYS {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.first)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        for key in keys {
            let entry = entries.entry((*key).to_string()).or_insert(Entry {
                failures: 0,
                first: now,
                locked_until: None,
            });
            if now.duration_since(entry.first) >= self.window
                && entry.locked_until.is_none_or(|u| u <= now)
            {
                *entry = Entry {
                    failures: 0,
                    first: now,
                    locked_until: None,
                };
            }
            entry.failures += 1;
            if entry.failures >= self.max_failures {
                let beyond = entry.failures - self.max_failures;
                let lockout = self
                    .lockout
                    .saturating_mul(1 << beyond.min(16))
                    .min(MAX_LOCKOUT);
                entry.locked_until = Some(now + lockout);
            }
        }
    }

    /// A success: the keys start afresh.
    pub fn succeeded(&self, keys: &[&str]) {
        let mut entries = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            entries.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_too_many_failures_and_doubles() {
        let t = Throttle::new(3, Duration::from_secs(60), Duration::from_secs(10));
        for _ in 0..2 {
            t.failed(&["alice"]);
            assert!(t.check(&["alice"]).is_ok());
        }
        t.failed(&["alice"]);
        let wait = t.check(&["alice", "other"]).unwrap_err();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
        assert!(t.check(&["other"]).is_ok(), "other keys are not affected");
        t.failed(&["alice"]);
        assert!(t.check(&["alice"]).unwrap_err() > Duration::from_secs(19));
        t.succeeded(&["alice"]);
        assert!(t.check(&["alice"]).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let t = Throttle::new(5, Duration::from_secs(60), Duration::from_secs(1));
        for i in 0..(MAX_KEYS + 10) {
            t.failed(&[&format!("k{i}")]);
        }
        assert!(t.keys.lock().unwrap().len() <= MAX_KEYS);
    }
}
