//! The driver's clocks, mapped onto the core's [`Instant`] and [`WallTime`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gslb_state_core::{Instant, Now, WallTime};

/// Monotonic time since the driver started, and the system's wall clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// Both clocks now.
    pub(crate) fn now(&self) -> Now {
        let mono = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Now::new(Instant::from_nanos(mono), wall_now())
    }

    /// The tokio instant of a core instant.
    pub(crate) fn to_tokio(self, at: Instant) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos())
    }
}

/// The system's wall clock (0 if it is before 1970).
pub(crate) fn wall_now() -> WallTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    WallTime::from_unix_ms(ms)
}
