//! Kernel times (nanoseconds since boot) as UTC wall-clock times.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The wall-clock time of boot, in ns since the Unix epoch.
    boot_epoch_ns: i128,
    ticks_per_second: u64,
}

impl Clock {
    /// Reads the offset now. Boot time counts suspend (CLOCK_BOOTTIME), as the kernel's
    /// process start times in /proc do.
    pub fn now() -> Clock {
        let realtime = read(libc::CLOCK_REALTIME);
        let boottime = read(libc::CLOCK_BOOTTIME);
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Clock {
            boot_epoch_ns: realtime - boottime,
            ticks_per_second: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
        }
    }

    pub fn boot_to_utc(&self, since_boot_ns: u64) -> DateTime<Utc> {
        let ns = self.boot_epoch_ns + i128::from(since_boot_ns);
        DateTime::from_timestamp_nanos(i64::try_from(ns).unwrap_or(i64::MAX))
    }

    pub fn ticks_per_second(&self) -> u64 {
        self.ticks_per_second
    }
}

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_offset_lands_now() {
        let clock = Clock::now();
        let now_since_boot = u64::try_from(read(libc::CLOCK_BOOTTIME)).unwrap();
        let delta = Utc::now() - clock.boot_to_utc(now_since_boot);
        assert!(delta.num_milliseconds().abs() < 1000, "{delta}");
    }
}
