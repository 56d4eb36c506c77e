//! The harness's one error type: what went wrong starting or watching servers, making
//! certificates, or waiting for a condition.

use std::fmt;
use std::io;
use std::time::Duration;

/// Errors of the harness. `Display` gives everything needed to debug (log tails included);
/// `Debug` prints the same, so that `.unwrap()` and `panic!("{e}")` say the same thing.
pub enum HarnessError {
    /// No usable `nats-server` binary; the message says how to install one.
    Binary(String),
    /// An I/O operation of the harness failed.
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A server did not become ready (or died) before its deadline.
    NotReady {
        /// Server name.
        server: String,
        /// Why: timeout, exit status, last HTTP answer.
        reason: String,
        /// Last lines of the server's log.
        log_tail: String,
    },
    /// A monitor endpoint could not be read or parsed.
    Monitor(String),
    /// A [`wait_until`](crate::wait_until)-style condition did not hold before its deadline.
    Timeout {
        /// The condition, as described by the caller.
        what: String,
        /// How long it was awaited.
        waited: Duration,
    },
    /// Certificate generation failed (see [`crate::tls`]).
    Tls(String),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Binary(m) => write!(f, "nats-server binary: {m}"),
            HarnessError::Io { context, source } => write!(f, "{context}: {source}"),
            HarnessError::NotReady {
                server,
                reason,
                log_tail,
            } => write!(
                f,
                "nats-server {server} not ready: {reason}\n--- log tail of {server} ---\n{log_tail}--- end of log ---"
            ),
            HarnessError::Monitor(m) => write!(f, "monitor endpoint: {m}"),
            HarnessError::Timeout { what, waited } => {
                write!(f, "timed out after {waited:?} waiting for: {what}")
            }
            HarnessError::Tls(m) => write!(f, "test PKI: {m}"),
        }
    }
}

impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Result type of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
