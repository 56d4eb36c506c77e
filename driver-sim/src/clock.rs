//! Each node's two clocks. The wall clock: true time plus an offset, plus a drift that
//! accumulates from the moment it was set. The monotonic clock ([`MonoClock`]): simulated
//! time from an origin of the node's own. Integer arithmetic only, so every platform computes
//! the same times.

use crate::scenario::NS_PER_MS;

/// Wall-clock time at simulated time zero (2023-11-14T22:13:20Z).
pub const WALL_BASE_MS: u64 = 1_700_000_000_000;

/// One node's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Clock {
    /// Offset from true time at `since_ns`, in ms.
    offset_ms: i64,
    /// Drift rate, in parts per billion.
    drift_ppb: i64,
    /// When the drift started.
    since_ns: u64,
}

impl Clock {
    /// A clock `offset_ms` ahead of true time (negative: behind), drifting from time zero.
    pub fn new(offset_ms: i64, drift_ppb: i64) -> Self {
        Clock {
            offset_ms,
            drift_ppb,
            since_ns: 0,
        }
    }

    /// Its drift rate, in parts per billion.
    pub fn drift_ppb(&self) -> i64 {
        self.drift_ppb
    }

    /// The clock's offset from true time at `t_ns`, in ms (drift included).
    pub fn offset_at_ms(&self, t_ns: u64) -> i64 {
        if self.drift_ppb == 0 {
            return self.offset_ms;
        }
        let elapsed = i128::from(t_ns.saturating_sub(self.since_ns));
        let drift_ms = elapsed * i128::from(self.drift_ppb) / 1_000_000_000 / i128::from(NS_PER_MS);
        self.offset_ms.saturating_add(drift_ms as i64)
    }

    /// The wall clock at simulated time `t_ns`, in ms since the Unix epoch.
    pub fn wall_ms(&self, t_ns: u64) -> u64 {
        (WALL_BASE_MS + t_ns / NS_PER_MS).saturating_add_signed(self.offset_at_ms(t_ns))
    }

    /// From `t_ns` on: offset `offset_ms`, drifting at the rate it drifted at before (a step
    /// of the clock, as across a restart).
    pub fn step_to(&mut self, t_ns: u64, offset_ms: i64) {
        let drift_ppb = self.drift_ppb;
        self.set(t_ns, Some(offset_ms), drift_ppb);
    }

    /// From `t_ns` on: offset `offset_ms` (or the current one) and drift `drift_ppb`.
    pub fn set(&mut self, t_ns: u64, offset_ms: Option<i64>, drift_ppb: i64) {
        let offset_ms = offset_ms.unwrap_or_else(|| self.offset_at_ms(t_ns));
        *self = Clock {
            offset_ms,
            drift_ppb,
            since_ns: t_ns,
        };
    }
}

/// One node's monotonic clock, the `Instant` its core sees: where its origin lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonoClock {
    /// Reads 0 when the node starts and again at every restart, as the NATS driver's clock
    /// does (a fresh process).
    FromStart,
    /// Reads this many nanoseconds at simulated time 0, and runs on across restarts (a
    /// driver that keeps its process, or a host clock since boot).
    Offset(u64),
}

impl MonoClock {
    /// The clock of a node spec: `None` for [`MonoClock::FromStart`].
    pub fn from_offset(offset_ns: Option<u64>) -> Self {
        offset_ns.map_or(MonoClock::FromStart, MonoClock::Offset)
    }

    /// The reading at simulated time `t_ns`, for the life that started at `started_ns`.
    pub fn instant_ns(self, t_ns: u64, started_ns: u64) -> u64 {
        match self {
            MonoClock::FromStart => t_ns.saturating_sub(started_ns),
            MonoClock::Offset(offset_ns) => t_ns.saturating_add(offset_ns),
        }
    }

    /// The simulated time at which the clock of the life that started at `started_ns` reads
    /// `instant_ns` (the inverse of [`MonoClock::instant_ns`]): at the start of the life when
    /// that reading lies before it, [`u64::MAX`] when past the end of simulated time.
    pub fn sim_time_ns(self, instant_ns: u64, started_ns: u64) -> u64 {
        match self {
            MonoClock::FromStart => instant_ns.saturating_add(started_ns),
            MonoClock::Offset(offset_ns) => instant_ns.saturating_sub(offset_ns).max(started_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clocks_convert_both_ways() {
        let from_start = MonoClock::FromStart;
        assert_eq!(from_start.instant_ns(7_000, 5_000), 2_000);
        assert_eq!(from_start.sim_time_ns(2_000, 5_000), 7_000);
        assert_eq!(from_start.instant_ns(5_000, 5_000), 0, "0 at every start");
        let day_ns = 86_400 * 1_000 * NS_PER_MS;
        let offset = MonoClock::Offset(3 * day_ns);
        assert_eq!(offset.instant_ns(7_000, 5_000), 3 * day_ns + 7_000);
        assert_eq!(offset.sim_time_ns(3 * day_ns + 7_000, 5_000), 7_000);
        assert_eq!(
            offset.sim_time_ns(10, 5_000),
            5_000,
            "never before the life began"
        );
        assert_eq!(from_start.sim_time_ns(u64::MAX, 5_000), u64::MAX);
    }

    #[test]
    fn offset_and_drift() {
        let mut c = Clock::new(-20_000, 0);
        assert_eq!(
            c.wall_ms(5 * 1_000 * NS_PER_MS),
            WALL_BASE_MS + 5_000 - 20_000
        );
        c.set(10_000 * NS_PER_MS, Some(15_000), 1_000_000); // +1 ms per second
        assert_eq!(c.offset_at_ms(10_000 * NS_PER_MS), 15_000);
        assert_eq!(c.offset_at_ms(20_000 * NS_PER_MS), 15_010);
        c.set(20_000 * NS_PER_MS, None, 0);
        assert_eq!(c.offset_at_ms(90_000 * NS_PER_MS), 15_010);
        let mut d = Clock::new(0, 1_000_000);
        d.step_to(10_000 * NS_PER_MS, -3_600_000);
        assert_eq!(
            d.offset_at_ms(20_000 * NS_PER_MS),
            -3_600_000 + 10,
            "drift kept"
        );
    }
}
