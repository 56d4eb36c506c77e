//! Benchmark across regions: a real super-cluster (one JetStream cluster per region, joined by
//! gateways through proxies that add a one-way WAN delay), region-local storage.
//!
//! ```text
//! cargo run --release -p gslb-state-tests --example wan_propagation -- [FLIPS] [DELAY_MS] [NODES_PER_REGION] [SERVERS_PER_REGION]
//! ```
//!
//! Defaults: 200 flips, 40 ms one way, 2 nodes per region, 1 server per region; regions eu,
//! us and ap. One node of eu reports 200 endpoints that nobody else observes, so under
//! `prefer-local` every other node decides them from its report alone; it flips one at a
//! time, and the time from `set_health` to the `Decision` event at each node of us and ap is
//! one sample. After each flip a plain client on eu's servers publishes one message to as
//! many plain subscribers on us's and ap's servers, over the same gateways: the raw NATS
//! figure of the same run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use gslb_state_core::{Config, Source};
use gslb_state_nats::{Event, Handle, NodeOptions};
use gslb_state_tests::measure::percentile;
use gslb_state_tests::{DEFAULT_DOMAIN, NatsSuperCluster, ServerOpts};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Receive times of the latest samples, keyed by (receiver, sample key).
type Arrivals = Arc<Mutex<HashMap<(usize, String), Instant>>>;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const ENDPOINTS: usize = 200;

fn config(urls: &[String], region: &str) -> Res<Config> {
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    Ok(Config::from_yaml(&format!(
        "cluster:\n  id: \"wan\"\nnode:\n  region: \"{region}\"\n\
         state:\n  healthPolicy: \"prefer-local\"\n  quorumMinPercent: 51\n  heartbeatInterval: \"1s\"\n  heartbeatTTL: \"5s\"\n\
         nats:\n  servers: [{}]\n  pingInterval: \"2s\"\n  jetStream:\n    domain: \"{DEFAULT_DOMAIN}\"\n    regions: [eu, us, ap]\n",
        servers.join(", ")
    ))?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{name:<34} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        ms(p50),
        ms(p99),
        ms(samples.last().copied().unwrap_or_default())
    );
    (p50, p99)
}

/// Waits until every receiver in `receivers` has an arrival for `key`; returns the delays.
async fn collect(
    arrivals: &Arrivals,
    receivers: &[usize],
    key: &str,
    sent: Instant,
) -> Res<Vec<Duration>> {
    let deadline = sent + Duration::from_secs(10);
    loop {
        {
            let map = arrivals.lock().unwrap();
            let got: Vec<Duration> = receivers
                .iter()
                .filter_map(|r| map.get(&(*r, key.to_owned())))
                .map(|t| t.saturating_duration_since(sent))
                .collect();
            if got.len() == receivers.len() {
                return Ok(got);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{key}: not every receiver got it within 10 s").into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let mut next = |default: u64| args.next().transpose().map(|v| v.unwrap_or(default));
    let flips = next(200)? as usize;
    let delay = Duration::from_millis(next(40)?);
    let per_region = next(2)?.max(1) as usize;
    let servers = next(1)?.max(1) as usize;

    let regions: Vec<(&str, usize)> = REGIONS.iter().map(|r| (*r, servers)).collect();
    let sc = NatsSuperCluster::start(&regions, ServerOpts::default())?;
    for a in REGIONS {
        for b in REGIONS {
            if a != b {
                sc.set_delay(a, b, delay);
            }
        }
    }
    println!(
        "super-cluster: {} regions x {servers} server(s), gateways delayed {} ms one way",
        REGIONS.len(),
        delay.as_millis()
    );

    // Nodes: per_region in each region, on its region's servers; node 0 (eu) flips.
    let mut nodes = Vec::new();
    for region in REGIONS {
        let urls = sc.urls(region);
        for i in 0..per_region {
            let id = format!("{region}-{}", i + 1);
            let node = Handle::start(NodeOptions::new(config(&urls, region)?, &id))
                .map_err(|e| e.to_string())?;
            nodes.push(node);
        }
    }
    let remote: Vec<usize> = (per_region..nodes.len()).collect();
    let names: Vec<String> = (0..ENDPOINTS).map(|i| format!("ep{i:04}")).collect();
    let t = Instant::now();
    for node in &nodes {
        while !node.is_connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Every node hears every other before the first report.
    for node in &nodes {
        while node.members().await?.iter().filter(|m| m.active).count() < nodes.len() {
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("{}: not every member heard", node.node_id()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for e in &names {
        nodes[0].set_health(e, Some(true))?;
    }
    for &r in &remote {
        loop {
            let ready = nodes[r]
                .decisions()
                .await?
                .iter()
                .filter(|(_, d)| d.healthy == Some(true) && d.source == Source::Global)
                .count();
            if ready == ENDPOINTS {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("{}: {ready} of {ENDPOINTS} ready", nodes[r].node_id()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "setup: {} nodes converged in {:.1} s",
        nodes.len(),
        t.elapsed().as_secs_f64()
    );

    let arrivals: Arrivals = Arc::default();
    for &r in &remote {
        let mut events = nodes[r].subscribe();
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let Event::Decision { endpoint, .. } = event {
                    let now = Instant::now();
                    arrivals.lock().unwrap().insert((r, endpoint), now);
                }
            }
        });
    }
    // Raw NATS over the same gateways: a publisher on eu, one subscriber per remote node on
    // that node's region's servers.
    let raw_arrivals: Arrivals = Arc::default();
    let publisher = async_nats::connect(sc.urls("eu")).await?;
    for (k, &r) in remote.iter().enumerate() {
        let region = REGIONS[r / per_region];
        let client = async_nats::connect(sc.urls(region)).await?;
        let mut sub = client.subscribe("raw.bench").await?;
        client.flush().await?;
        let raw_arrivals = raw_arrivals.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let now = Instant::now();
                let key = String::from_utf8_lossy(&m.payload).into_owned();
                raw_arrivals.lock().unwrap().insert((k, key), now);
            }
        });
    }
    // Interest crosses the gateways: warm up until every subscriber gets a message.
    let raw_receivers: Vec<usize> = (0..remote.len()).collect();
    for w in 0.. {
        let key = format!("warm{w}");
        let sent = Instant::now();
        publisher
            .publish("raw.bench", Bytes::from(key.clone()))
            .await?;
        tokio::time::sleep(Duration::from_millis(3 * delay.as_millis() as u64 + 50)).await;
        if collect(&raw_arrivals, &raw_receivers, &key, sent)
            .await
            .is_ok()
        {
            break;
        }
    }

    let mut ours = Vec::new();
    let mut raw = Vec::new();
    let mut state = [true; ENDPOINTS];
    for k in 0..flips {
        let e = k % ENDPOINTS;
        state[e] = !state[e];
        let key = names[e].clone();
        arrivals
            .lock()
            .unwrap()
            .retain(|(_, endpoint), _| *endpoint != key);
        let sent = Instant::now();
        nodes[0].set_health(&key, Some(state[e]))?;
        ours.extend(collect(&arrivals, &remote, &key, sent).await?);
        tokio::time::sleep(Duration::from_millis(2)).await;

        let key = format!("m{k}");
        let sent = Instant::now();
        publisher
            .publish("raw.bench", Bytes::from(key.clone()))
            .await?;
        raw.extend(collect(&raw_arrivals, &raw_receivers, &key, sent).await?);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "propagation eu -> us, ap: {} remote nodes, {flips} flips, {} ms one way:",
        remote.len(),
        delay.as_millis()
    );
    let (_, ours_p99) = summary("  health change -> decision", ours);
    let (_, raw_p99) = summary("  raw NATS publish -> delivery", raw);
    let target = raw_p99.mul_f64(1.2) + Duration::from_millis(1);
    println!(
        "  p99 ratio: {:.3}; p99 {:.3} ms vs target 1.2 x raw + 1 ms = {:.3} ms: {}",
        ours_p99.as_secs_f64() / raw_p99.as_secs_f64().max(1e-9),
        ms(ours_p99),
        ms(target),
        if ours_p99 <= target { "met" } else { "NOT met" }
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
