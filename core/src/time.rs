//! Time as the core sees it: a monotonic instant and a wall-clock timestamp, both injected.
//!
//! The core never reads a clock. A driver maps its own clock onto [`Instant`] (for example
//! nanoseconds since the driver started) and reads the wall clock into [`WallTime`].

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the driver's monotonic clock, in nanoseconds since an arbitrary origin.
///
/// Only differences between instants of one node mean anything. Instants of different nodes
/// are never compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    nanos: u64,
}

impl Instant {
    /// The origin of the driver's clock.
    pub const ZERO: Instant = Instant { nanos: 0 };
    /// The largest representable instant (about 584 years after the origin).
    pub const MAX: Instant = Instant { nanos: u64::MAX };

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant { nanos }
    }

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            nanos: millis.saturating_mul(1_000_000),
        }
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.nanos
    }

    /// Milliseconds since the origin, rounded down.
    pub const fn as_millis(self) -> u64 {
        self.nanos / 1_000_000
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(earlier.nanos))
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant {
            nanos: self.nanos.saturating_add(add),
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_since(earlier)
    }
}

/// Wall-clock time: milliseconds since the Unix epoch, as read by the driver.
///
/// Wall time goes on the wire (sender timestamps) and is used only to judge the age of
/// KV snapshot entries read at start-up; live freshness uses [`Instant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WallTime {
    unix_ms: u64,
}

impl WallTime {
    /// A wall-clock time `unix_ms` milliseconds after 1970-01-01T00:00:00Z.
    pub const fn from_unix_ms(unix_ms: u64) -> Self {
        WallTime { unix_ms }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_ms(self) -> u64 {
        self.unix_ms
    }

    /// How long ago `earlier` was, clamped at zero when `earlier` is in our future.
    pub fn age_of(self, earlier: WallTime) -> Duration {
        Duration::from_millis(self.unix_ms.saturating_sub(earlier.unix_ms))
    }
}

/// Both clocks at one moment, as handed to every state-changing call of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// The driver's monotonic clock.
    pub mono: Instant,
    /// The driver's wall clock.
    pub wall: WallTime,
}

impl Now {
    /// Both clocks at one moment.
    pub const fn new(mono: Instant, wall: WallTime) -> Self {
        Now { mono, wall }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t.saturating_since(Instant::from_millis(7)), Duration::ZERO);
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!((t + Duration::from_millis(3)).as_millis(), 8);
        let w = WallTime::from_unix_ms(1_000);
        assert_eq!(w.age_of(WallTime::from_unix_ms(2_000)), Duration::ZERO);
        assert_eq!(
            w.age_of(WallTime::from_unix_ms(400)),
            Duration::from_millis(600)
        );
    }
}
