//! End-to-end test support: real `nats-server` processes on loopback, and a test PKI for mTLS.
//!
//! ```no_run
//! use gslb_state_tests::{NatsCluster, ServerOpts};
//! let cluster = NatsCluster::start(3, ServerOpts::default()).unwrap();
//! let urls = cluster.urls(); // connect async-nats to these; JetStream domain "gslb"
//! cluster.server(0).kill().unwrap();
//! cluster.server(0).restart().unwrap();
//! ```

pub mod nats_server;
pub mod tls;

pub use nats_server::{
    DEFAULT_DOMAIN, HarnessError, INSTALL_HINT, MIN_VERSION, NatsCluster, NatsServer, Result,
    ServerOpts, Version, http_get, nats_server_bin, nats_server_version, wait_for,
    wait_for_blocking, wait_until, wait_until_blocking,
};
pub use tls::{CertFiles, TestPki};
