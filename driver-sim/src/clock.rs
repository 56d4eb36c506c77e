//! Each node's wall clock: true time plus an offset, plus a drift that accumulates from the
//! moment it was set. Integer arithmetic only, so every platform computes the same times.

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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
