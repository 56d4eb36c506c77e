//! The one set of wait helpers of the end-to-end tests: poll a condition with a deadline,
//! never sleep to synchronise.
//!
//! Every helper polls every 2 ms at first, doubling up to 50 ms, until the condition holds;
//! it returns the value (for `wait_for*`) and how long it took, or, once `timeout` has passed,
//! [`HarnessError::Timeout`], whose message is `timed out after {waited:?} waiting for: {what}`.
//! [`wait_for`] and [`wait_until`] await an async condition (each attempt cut off at the
//! deadline); [`wait_for_blocking`] and [`wait_until_blocking`] call a plain one on the current
//! thread, for blocking tests and process control. A test that cannot go on without the
//! condition panics with the error's message (`.unwrap_or_else(|e| panic!("{e}"))`, or
//! `.unwrap()`, which prints the same).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// The first pause between two attempts.
const PAUSE_FIRST: Duration = Duration::from_millis(2);
/// The longest pause between two attempts.
const PAUSE_MAX: Duration = Duration::from_millis(50);

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(PAUSE_MAX)
}

/// Awaits `f()` until it yields `Some(t)`, polling every 2..50 ms; each attempt is cut off at the
/// deadline. Returns the value and the time it took, or [`HarnessError::Timeout`] naming `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut pause = PAUSE_FIRST;
    loop {
        if let Ok(Some(v)) = tokio::time::timeout_at(deadline, f()).await {
            return Ok((v, start.elapsed()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
        pause = next_pause(pause);
    }
}

/// Awaits `cond()` until it is true (see [`wait_for`]); returns how long it took.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
    .map(|((), d)| d)
}

/// Blocking [`wait_for`]: calls `f()` until it yields `Some(t)` or `timeout` passes.
pub fn wait_for_blocking<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    let mut pause = PAUSE_FIRST;
    loop {
        if let Some(v) = f() {
            return Ok((v, start.elapsed()));
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                waited: elapsed,
            });
        }
        std::thread::sleep(pause.min(timeout - elapsed));
        pause = next_pause(pause);
    }
}

/// Blocking [`wait_until`]: calls `cond()` until it is true; returns how long it took.
pub fn wait_until_blocking(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    wait_for_blocking(timeout, what, || cond().then_some(())).map(|((), d)| d)
}
