//! Shared by the `driver_*` tests: configs with short intervals, starting nodes, and waiting
//! for what a node decides or sees; built on the harness's wait helpers and metrics reader.

#![allow(dead_code)] // each test binary uses a different part

use std::time::{Duration, Instant};

use gslb_state_core::{Config, Decision, Source};
use gslb_state_nats::{Handle, NodeOptions};
use gslb_state_tests::{NatsCluster, NatsServer, TestPki, metric_value, wait_until};

/// Heartbeat interval of every test node.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// Heartbeat TTL of every test node.
pub const TTL: Duration = Duration::from_secs(1);
/// Deadline for anything that should happen within a few heartbeats.
pub const SOON: Duration = Duration::from_secs(10);
/// Deadline for what waits on a JetStream leader election (4–8 s measured) or reconnects.
pub const SLOW: Duration = Duration::from_secs(30);
/// The cluster id of every test.
pub const CLUSTER: &str = "c1";

/// Tests that kill, stop or time servers take this lock, so two of them never share the
/// machine's two cores (timings and leader elections stay meaningful under CI load).
/// (Each test has its own runtime, and takes it before anything else.)
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes [`SERIAL`] (a test that panicked while holding it does not poison it).
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The guide's YAML with short intervals, for `servers` and `policy`; `extra_nats` goes inside
/// `nats:` (e.g. a `tls:` block), indented by the caller with four spaces.
pub fn yaml(servers: &[String], policy: &str, extra_nats: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "cluster:\n  id: \"{CLUSTER}\"\n\
         state:\n  healthPolicy: \"{policy}\"\n  quorumMinPercent: 51\n  heartbeatInterval: \"200ms\"\n  heartbeatTTL: \"1s\"\n\
         nats:\n  servers: [{}]\n  pingInterval: \"500ms\"\n  connectTimeout: \"500ms\"\n  jetStream:\n    domain: \"gslb\"\n{extra_nats}",
        servers.join(", ")
    )
}

/// A parsed [`yaml`].
pub fn config(servers: &[String], policy: &str, extra_nats: &str) -> Config {
    let text = yaml(servers, policy, extra_nats);
    Config::from_yaml(&text).unwrap_or_else(|e| panic!("test config:\n{text}\n{e}"))
}

/// `nats.tls` lines for `pki`'s CA and, if given, a client certificate.
pub fn tls_yaml(pki: &TestPki, client: Option<&gslb_state_tests::CertFiles>) -> String {
    let mut s = format!("  tls:\n    caFile: \"{}\"\n", pki.ca_file().display());
    if let Some(c) = client {
        s.push_str(&format!(
            "    certFile: \"{}\"\n    keyFile: \"{}\"\n",
            c.cert.display(),
            c.key.display()
        ));
    }
    s
}

/// Starts node `id` with `policy` against `servers`.
pub fn start(servers: &[String], policy: &str, id: &str) -> Handle {
    start_with(config(servers, policy, ""), id)
}

/// Starts node `id` with `config`.
pub fn start_with(config: Config, id: &str) -> Handle {
    Handle::start(NodeOptions::new(config, id)).expect("the node starts")
}

/// The decision `node` hands out for `endpoint`, if any.
pub fn decision(node: &Handle, endpoint: &str) -> Option<Decision> {
    node.decision(endpoint)
}

/// Waits until `node` decides `endpoint` as `healthy` from `source`; returns how long it took.
pub async fn wait_decision(
    node: &Handle,
    endpoint: &str,
    healthy: Option<bool>,
    source: Source,
    timeout: Duration,
) -> Duration {
    let what = format!(
        "{} to decide {endpoint} = {healthy:?} from {source:?}",
        node.node_id()
    );
    wait_until(timeout, &what, || async {
        node.decision(endpoint)
            .is_some_and(|d| d.healthy == healthy && d.source == source)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last decision: {:?}", node.decision(endpoint)))
}

/// Like [`wait_decision`] for every node of `nodes`; returns the longest wait.
pub async fn wait_decision_all(
    nodes: &[&Handle],
    endpoint: &str,
    healthy: Option<bool>,
    source: Source,
    timeout: Duration,
) -> Duration {
    let mut longest = Duration::ZERO;
    for node in nodes {
        longest = longest.max(wait_decision(node, endpoint, healthy, source, timeout).await);
    }
    longest
}

/// Active members `node` counts, itself included.
pub async fn active_members(node: &Handle) -> Vec<String> {
    node.members()
        .await
        .expect("driver running")
        .into_iter()
        .filter(|m| m.active)
        .map(|m| m.node)
        .collect()
}

/// Waits until `node` counts exactly `ids` as active members.
pub async fn wait_members(node: &Handle, ids: &[&str], timeout: Duration) -> Duration {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    let what = format!("{} to count members {want:?}", node.node_id());
    let waited = wait_until(timeout, &what, || async {
        let mut got = active_members(node).await;
        got.sort();
        got == want
    })
    .await;
    match waited {
        Ok(took) => took,
        Err(e) => panic!("{e}; members: {:?}", active_members(node).await),
    }
}

/// Waits until every node of `nodes` counts exactly `ids` as members.
pub async fn wait_members_all(nodes: &[&Handle], ids: &[&str], timeout: Duration) {
    for node in nodes {
        wait_members(node, ids, timeout).await;
    }
}

/// Waits until `node` is connected.
pub async fn wait_connected(node: &Handle, timeout: Duration) -> Duration {
    let what = format!("{} to connect", node.node_id());
    wait_until(timeout, &what, || async { node.is_connected() })
        .await
        .unwrap_or_else(|e| panic!("{e}; last connect error: {:?}", node.last_connect_error()))
}

/// The index of the server of `cluster` that node `id` is connected to (from `/connz`).
pub fn connected_server(cluster: &NatsCluster, id: &str) -> Option<usize> {
    (0..cluster.len()).find(|&i| server_has_client(cluster.server(i), id))
}

/// Whether `server` has a client connection named after node `id`.
pub fn server_has_client(server: &NatsServer, id: &str) -> bool {
    if !server.is_running() || server.is_stopped() {
        return false;
    }
    let name = format!("gslb-state {id}");
    server.monitor_json("/connz").is_ok_and(|v| {
        v["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"].as_str() == Some(name.as_str()))
    })
}

/// One series of `node`'s Prometheus text, e.g. `gslbd_state_nats_connected` ([`metric_value`]).
pub fn metric(node: &Handle, series: &str) -> Option<f64> {
    metric_value(&node.metrics().encode(), series)
}

/// Prints a measured figure in a form that is easy to grep from test output.
pub fn report(what: &str, took: Duration) {
    println!("MEASURED {what}: {:.0} ms", took.as_secs_f64() * 1000.0);
}

/// Elapsed since `start`, for [`report`].
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}

/// `node`'s decision for `endpoint` with the counts as they are now (the handle's cached
/// [`Handle::decision`] keeps the counts of the last change of verdict or source).
pub async fn current(node: &Handle, endpoint: &str) -> Option<Decision> {
    node.decisions()
        .await
        .expect("driver running")
        .into_iter()
        .find_map(|(e, d)| (e == endpoint).then_some(d))
}

/// Checks that `node` decides `endpoint` from the global view with the given counts now.
pub async fn assert_global(
    node: &Handle,
    endpoint: &str,
    healthy: bool,
    healthy_reports: u32,
    total: u32,
) {
    let d = current(node, endpoint).await.expect("a decision");
    assert_eq!(
        (d.healthy, d.source, d.healthy_reports, d.total_reports),
        (Some(healthy), Source::Global, healthy_reports, total),
        "{d:?}"
    );
}

/// Publishes on `subject` from `from` until `to` receives it (a subscription's interest takes a
/// moment to cross a gateway); returns how long it took.
pub async fn crosses(
    from: &async_nats::Client,
    to: &async_nats::Client,
    subject: &str,
    timeout: Duration,
) -> gslb_state_tests::Result<Duration> {
    let sub = tokio::sync::Mutex::new(to.subscribe(subject.to_string()).await.unwrap());
    to.flush().await.unwrap();
    gslb_state_tests::wait_for(timeout, &format!("{subject} to cross"), || {
        let sub = &sub;
        async move {
            let _ = from.publish(subject.to_string(), "x".into()).await;
            let mut sub = sub.lock().await;
            tokio::time::timeout(
                Duration::from_millis(20),
                futures::StreamExt::next(&mut *sub),
            )
            .await
            .ok()
            .flatten()
        }
    })
    .await
    .map(|(_, took)| took)
}
