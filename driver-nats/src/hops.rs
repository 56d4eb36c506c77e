//! Where a health change spends its time between two nodes, for the propagation benchmark
//! (feature `trace-hops`; without it every call here compiles to nothing).
//!
//! The driver stamps each [`Hop`] of a health change as it passes (one process, one clock):
//! the command reaching the drive loop, the report batch handed to the NATS connection, the
//! batch reaching a receiver's drive loop, and the receiver's decision handed to the
//! application. The benchmark stamps the set-health call and the decision's arrival itself
//! and subtracts.

use std::time::Instant;

/// A point on a health change's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hop {
    /// `Handle::set_health` was called (stamped by the caller).
    SetHealth,
    /// The drive loop took the command.
    Command,
    /// The report batch was handed to the NATS connection.
    Published,
    /// A receiver's drive loop took the batch from its subscription.
    Received,
    /// The receiver's decision changed; it is handed to the application now.
    Decided,
    /// The application has the decision event (stamped by the caller).
    Delivered,
}

/// One stamp: the hop, the node it happened at, when.
pub type Stamp = (Hop, String, Instant);

#[cfg(feature = "trace-hops")]
static STAMPS: std::sync::Mutex<Vec<Stamp>> = std::sync::Mutex::new(Vec::new());

/// Stamps `hop` at `node` now (nothing without the feature `trace-hops`).
#[inline]
pub fn stamp(hop: Hop, node: &str) {
    #[cfg(feature = "trace-hops")]
    {
        let now = Instant::now();
        if let Ok(mut s) = STAMPS.lock() {
            s.push((hop, node.to_owned(), now));
        }
    }
    #[cfg(not(feature = "trace-hops"))]
    let _ = (hop, node);
}

/// Every stamp since the last call, in the order taken (empty without `trace-hops`).
pub fn take() -> Vec<Stamp> {
    #[cfg(feature = "trace-hops")]
    {
        STAMPS
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
    #[cfg(not(feature = "trace-hops"))]
    Vec::new()
}

/// Whether stamps are taken (the feature `trace-hops` is on).
pub const ENABLED: bool = cfg!(feature = "trace-hops");
