//! End-to-end test support, shared by the library-level tests of this crate and the daemon's
//! tests (`gslb-state-daemon`'s `tests/`): real `nats-server` processes on loopback, a test PKI
//! for mTLS, and the one HTTP client, metrics reader and set of wait helpers of every
//! end-to-end test.
//!
//! * [`nats_server`]: [`NatsServer`] and [`NatsCluster`], killed on drop.
//! * [`daemon`]: [`DaemonProcess`], a `gslb-state run` child with its log and API.
//! * [`tls`]: [`TestPki`], a CA with server and client certificates.
//! * [`proxy`]: [`Proxy`], a TCP proxy a test can cut, blackhole or slow down, and
//!   [`RouteLinks`], a cluster's routes through such proxies.
//! * [`super_cluster`]: [`NatsSuperCluster`], one JetStream cluster per region joined by
//!   gateways through such proxies: cut, blackhole or delay a region's links.
//! * [`http`]: a blocking HTTP/1.1 client for monitor ports and the daemon's API.
//! * [`metrics`]: [`metric_value`], one series read from Prometheus/OpenMetrics text.
//! * [`measure`]: [`percentile`](measure::percentile) and a field of `/proc/<pid>/status`, for
//!   the benchmarks and soaks.
//! * [`wait`]: [`wait_for`], [`wait_until`] and their blocking variants: poll with a deadline.
//! * [`HarnessError`]: what went wrong, with everything needed to debug it.
//!
//! ```no_run
//! use gslb_state_tests::{NatsCluster, ServerOpts};
//! let cluster = NatsCluster::start(3, ServerOpts::default()).unwrap();
//! let urls = cluster.urls(); // connect async-nats to these; JetStream domain "gslb"
//! cluster.server(0).kill().unwrap();
//! cluster.server(0).restart().unwrap();
//! ```

pub mod daemon;
pub mod error;
pub mod http;
pub mod measure;
pub mod metrics;
pub mod nats_server;
pub mod proxy;
pub mod super_cluster;
pub mod tls;
pub mod wait;

pub use daemon::DaemonProcess;
pub use error::{HarnessError, Result};
pub use metrics::metric_value;
pub use nats_server::{
    DEFAULT_DOMAIN, INSTALL_HINT, MIN_VERSION, NatsCluster, NatsServer, RouteLinks, ServerOpts,
    Version, nats_server_bin, nats_server_version,
};
pub use proxy::{LinkMode, Proxy};
pub use super_cluster::NatsSuperCluster;
pub use tls::{CertFiles, TestPki};
pub use wait::{wait_for, wait_for_blocking, wait_until, wait_until_blocking};

/// Makes the process `command` starts die (SIGKILL) when the thread that starts it ends, so
/// that no nats-server or daemon outlives a killed test or `gslb-state scenario` (orphans
/// would keep dialing ports that later runs reuse). Linux only; elsewhere a no-op.
pub fn die_with_parent(command: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl(2) is async-signal-safe and touches only the child being set up.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}
