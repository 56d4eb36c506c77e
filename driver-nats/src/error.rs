//! The library's errors: each says what went wrong in a way an embedder can act on (an
//! invalid configuration is not an unreachable NATS).

use std::fmt;
use std::time::Duration;

use gslb_state_core::NodeConfigError;

/// A `nats.tls.*` or `nats.auth.*` setting that cannot be used: a file that is missing or holds
/// no key, an environment variable that is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSetupError {
    /// The configuration key, like `nats.tls.caFile`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConnectSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConnectSetupError {}

/// Why [`Handle::start`](crate::Handle::start) failed. An unreachable NATS is not one of them:
/// the node starts deciding locally and connects in the background.
#[derive(Debug)]
pub enum StartError {
    /// The configuration cannot start a node (its ids, region or `state.*`).
    Config(NodeConfigError),
    /// A TLS or credentials setting cannot be used.
    Credentials(ConnectSetupError),
    /// The NATS client could not be set up (for example a malformed `nats.servers` URL).
    Connect(async_nats::ConnectError),
    /// The subscription to the cluster's subjects was refused.
    Subscribe(async_nats::SubscribeError),
    /// The driver's thread or its tokio runtime could not start.
    Runtime(std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid configuration: {e}"),
            StartError::Credentials(e) => write!(f, "{e}"),
            StartError::Connect(e) => write!(f, "nats.servers: {e}"),
            StartError::Subscribe(e) => {
                write!(f, "cannot subscribe to the cluster's subjects: {e}")
            }
            StartError::Runtime(e) => write!(f, "cannot start the driver: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Config(e) => Some(e),
            StartError::Credentials(e) => Some(e),
            StartError::Connect(e) => Some(e),
            StartError::Subscribe(e) => Some(e),
            StartError::Runtime(e) => Some(e),
        }
    }
}

/// Why [`connect`](crate::connect) (the tools' connection) failed.
#[derive(Debug)]
pub enum ConnectError {
    /// A TLS or credentials setting cannot be used.
    Setup(ConnectSetupError),
    /// The NATS client could not be set up (for example a malformed `nats.servers` URL).
    Client(async_nats::ConnectError),
    /// No server answered in time.
    Unreachable {
        /// `nats.servers`.
        servers: Vec<String>,
        /// How long it tried.
        waited: Duration,
        /// The last failure, in full (for example a refused certificate).
        last_error: String,
    },
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Setup(e) => write!(f, "{e}"),
            ConnectError::Client(e) => write!(f, "nats.servers: {e}"),
            ConnectError::Unreachable {
                servers,
                waited,
                last_error,
            } => write!(
                f,
                "cannot reach any of nats.servers {servers:?} within {waited:?}: {last_error}"
            ),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A JetStream bucket or stream that could not be opened, created, read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What: the configuration key and the name, like `config.kvBucket PLEIADES_CFG`.
    pub what: String,
    /// The operation that failed, like `creating` or `reading the history of`.
    pub operation: &'static str,
    /// What NATS said.
    pub message: String,
}

impl StoreError {
    pub(crate) fn new(
        what: impl Into<String>,
        operation: &'static str,
        e: impl fmt::Display,
    ) -> Self {
        StoreError {
            what: what.into(),
            operation,
            message: e.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.operation, self.what, self.message)
    }
}

impl std::error::Error for StoreError {}
