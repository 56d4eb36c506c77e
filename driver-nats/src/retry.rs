//! One retry-with-backoff for every setup step that must eventually succeed (opening or
//! creating buckets and streams), so they all back off alike and log alike.

use std::future::Future;
use std::time::Duration;

/// The first retry of a failed step comes after this; each next one after twice as long, up
/// to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Runs `attempt` until it succeeds, logging each failure (`what`, with the error and the
/// wait) and waiting [`RETRY_FIRST`], then twice as long each time, up to [`RETRY_MAX`].
pub(crate) async fn retry_with_backoff<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = RETRY_FIRST;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?delay, "{what}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}
