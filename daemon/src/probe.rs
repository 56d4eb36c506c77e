//! Built-in probes: a TCP connect or an HTTP(S) GET with an expected status, every `interval`,
//! each try bounded by `timeout`, with `rise`/`fall` counts so one lost packet flips nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gslb_state_core::config::{EndpointSpec, ProbeSpec, ProbeTarget};
use tokio::task::JoinHandle;

use gslb_state_nats::Handle;

/// The rise/fall state of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    successes: u32,
    failures: u32,
    state: Option<bool>,
}

impl RiseFall {
    /// Unknown until `rise` successes or `fall` failures in a row.
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            successes: 0,
            failures: 0,
            state: None,
        }
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.state != Some(true) && self.successes >= self.rise {
                self.state = Some(true);
                return self.state;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.state != Some(false) && self.failures >= self.fall {
                self.state = Some(false);
                return self.state;
            }
        }
        None
    }

    /// The current state (`None` until decided).
    pub fn state(&self) -> Option<bool> {
        self.state
    }
}

/// One probe try: `Ok` when the endpoint answered as expected, else why not.
pub async fn check(
    target: &ProbeTarget,
    timeout: Duration,
    http: &reqwest::Client,
) -> Result<(), String> {
    let attempt = async {
        match target {
            ProbeTarget::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
                .await
                .map(|_| ())
                .map_err(|e| format!("connect {address}: {e}")),
            ProbeTarget::Http { url, expect_status } => {
                let response = http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("GET {url}: {e}"))?;
                let status = response.status().as_u16();
                if status == *expect_status {
                    Ok(())
                } else {
                    Err(format!(
                        "GET {url}: status {status}, expected {expect_status}"
                    ))
                }
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

/// Runs the probes of the configured endpoints and feeds their results to the node.
pub struct Probes {
    node: Arc<Handle>,
    http: reqwest::Client,
    running: HashMap<String, (ProbeSpec, JoinHandle<()>)>,
}

impl Probes {
    /// No probes yet.
    pub fn new(node: Arc<Handle>) -> Self {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Probes {
            node,
            http,
            running: HashMap::new(),
        }
    }

    /// Makes the running probes those of `endpoints`: new ones start, removed or changed ones
    /// stop, and the observation of a removed probe is withdrawn.
    pub fn apply(&mut self, endpoints: &[EndpointSpec]) {
        let wanted: HashMap<&str, &ProbeSpec> = endpoints
            .iter()
            .filter_map(|e| e.probe.as_ref().map(|p| (e.name.as_str(), p)))
            .collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, (spec, _))| wanted.get(name.as_str()) != Some(&spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, task)) = self.running.remove(&name) {
                task.abort();
            }
            if !wanted.contains_key(name.as_str()) {
                let _ = self.node.set_health(&name, None);
                tracing::info!(endpoint = %name, "probe removed; observation withdrawn");
            }
        }
        for (name, spec) in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            let task = tokio::spawn(run(
                name.to_owned(),
                spec.clone(),
                self.node.clone(),
                self.http.clone(),
            ));
            self.running.insert(name.to_owned(), (spec.clone(), task));
        }
    }

    /// How many probes run.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no probe runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stops every probe.
    pub fn stop(&mut self) {
        for (_, (_, task)) in self.running.drain() {
            task.abort();
        }
    }
}

async fn run(endpoint: String, spec: ProbeSpec, node: Arc<Handle>, http: reqwest::Client) {
    let mut state = RiseFall::new(spec.rise, spec.fall);
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = check(&spec.target, spec.timeout, &http).await;
        if let Some(healthy) = state.record(result.is_ok()) {
            match &result {
                Ok(()) => tracing::info!(endpoint = %endpoint, "probe: endpoint up"),
                Err(e) => tracing::warn!(endpoint = %endpoint, error = %e, "probe: endpoint down"),
            }
            if node.set_health(&endpoint, Some(healthy)).is_err() {
                return;
            }
        }
    }
}

/// Installs rustls's `ring` provider once (reqwest is built without one, like async-nats), so
/// that HTTPS probes work whatever else the process links.
fn install_crypto_provider() {
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut s = RiseFall::new(2, 3);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), Some(true));
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None, "a success resets the failures");
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), Some(false));
        assert_eq!(s.record(false), None, "no change, no report");
        assert_eq!(s.state(), Some(false));
    }

    #[tokio::test]
    async fn tcp_probe_sees_a_listener_and_its_absence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        install_crypto_provider();
        let http = reqwest::Client::new();
        let target = ProbeTarget::Tcp {
            address: address.clone(),
        };
        assert_eq!(check(&target, Duration::from_secs(2), &http).await, Ok(()));
        drop(listener);
        assert!(check(&target, Duration::from_secs(2), &http).await.is_err());
    }
}
