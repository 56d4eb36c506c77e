//! Benchmark of the NATS driver on a real 3-server JetStream cluster (R3 buckets).
//!
//! ```text
//! cargo run --release -p gslb-state-tests --example propagation -- [FLIPS] [NODES] [ENDPOINTS] [SNAPSHOT_NODES] [SNAPSHOT_REPORTS]
//! ```
//!
//! FLIPS = 0 skips the propagation part; SNAPSHOT_NODES = 0 writes nothing and skips the snapshot ratios. Defaults: 300 flips, 10 nodes, 10,000 endpoints, and a snapshot of 20 nodes × 100,000
//! reports. Two measurements:
//!
//! 1. **Propagation.** Every node reports every endpoint, half of them healthy, under
//!    `global-quorum` at 51 %: 5 of 10 is not enough, 6 of 10 is. One node of the unhealthy
//!    half flips an endpoint, which changes the decision at every node; the time from
//!    `set_health` until the decision is in force at each other node is one sample (stamped by
//!    a `NodeOptions::on_decision` listener, which the driver calls on its thread the moment
//!    `Handle::decision` returns the new decision). Then as many flips again with a subscriber
//!    task of the benchmark on each node's events: the time until it receives the `Decision`
//!    event is printed beside (not during the first half: on one machine, the subscribers
//!    woken by each flip take CPU from the receivers still to come). After each flip of the
//!    first half, a
//!    plain client publishes one message to as many plain subscribers (each its own connection)
//!    and the publish-to-delivery time is measured the same way: the raw NATS figure of the
//!    same run, under the same load.
//!    The raw figure is also taken with each subscriber on a thread of its own, as each node
//!    is (a second ratio line). Each sample starts with no KV write in flight: after our
//!    flip, the flipper's durable write of it (which trails the publish by `kv_write_delay`)
//!    is awaited before the raw sample.
//!    With `--features gslb-state-nats/trace-hops`, the time of each hop of our path is printed
//!    too (see `gslb_state_nats::hops`).
//! 2. **Snapshot load.** The reports, compacted snapshots and membership records of
//!    SNAPSHOT_NODES nodes are written into the buckets with the core's codec, as those nodes
//!    would leave them after their first compaction (one key per report, then the chunks); a
//!    new node starts and the time until its snapshot is loaded is measured (three rounds, the
//!    median), beside the core alone fed the same records and chunks (three rounds, the
//!    median), and a bare ordered consumer reading every report key (what a per-key snapshot
//!    read cannot beat).
//!    Then a real daemon (`GSLB_STATE_BIN`, else `target/release/gslb-state` when built)
//!    loads the same snapshot, and its resident memory once loaded is printed.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use gslb_state_core::codec::{
    MemberRecord, Message, ReportItem, ReportRecord, ReportState, SnapshotRef, encode,
};
use gslb_state_core::compaction::encode_chunks;
use gslb_state_core::{Bucket, Config, Names, Source};
use gslb_state_nats::hops::{self, Hop};
use gslb_state_nats::{DecisionListener, Event, Handle, NodeOptions};
use gslb_state_tests::measure::{
    cpu_ticks, percentile, proc_status_kb, this_thread_stat, threads_stat,
};
use gslb_state_tests::{DEFAULT_DOMAIN, NatsCluster, ServerOpts};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Receive times of the latest samples, keyed by (receiver, sample key).
type Arrivals = Arc<Mutex<HashMap<(usize, String), Instant>>>;

fn config(cluster_id: &str, urls: &[String], ttl: &str) -> Res<Config> {
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    Ok(Config::from_yaml(&format!(
        "cluster:\n  id: \"{cluster_id}\"\n\
         state:\n  healthPolicy: \"global-quorum\"\n  quorumMinPercent: 51\n  heartbeatInterval: \"1s\"\n  heartbeatTTL: \"{ttl}\"\n\
         nats:\n  servers: [{}]\n  pingInterval: \"2s\"\n  jetStream:\n    domain: \"{DEFAULT_DOMAIN}\"\n",
        servers.join(", ")
    ))?)
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{name:<48} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    (p50, p99)
}

/// Waits until every receiver but `except` has an arrival for `key`; returns the delays.
async fn collect(
    arrivals: &Arrivals,
    receivers: usize,
    except: Option<usize>,
    key: &str,
    sent: Instant,
) -> Res<Vec<Duration>> {
    let deadline = sent + Duration::from_secs(10);
    loop {
        {
            let map = arrivals.lock().unwrap();
            let got: Vec<Duration> = (0..receivers)
                .filter(|r| Some(*r) != except)
                .filter_map(|r| map.get(&(r, key.to_owned())))
                .map(|t| t.saturating_duration_since(sent))
                .collect();
            if got.len() == receivers - usize::from(except.is_some()) {
                return Ok(got);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{key}: not every receiver got it within 10 s").into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn propagation(cluster: &NatsCluster, flips: usize, n: usize, endpoints: usize) -> Res<()> {
    let urls = cluster.urls();
    let names: Vec<String> = (0..endpoints).map(|i| format!("ep{i:05}")).collect();
    let config = config("prop", &urls, "5s")?;
    // Our decisions, timestamped the moment they are in force at each node (the listener runs
    // on the node's driver thread, where `Handle::decision` starts returning them).
    let in_force: Arrivals = Arc::default();
    // GSLB_BENCH_LAYOUT=runtime: every node a task of this benchmark's runtime
    // (`Handle::spawn`), as the raw subscribers below share it; else each on its own thread.
    let spawned = std::env::var("GSLB_BENCH_LAYOUT").is_ok_and(|l| l == "runtime");
    let mut nodes: Vec<Handle> = Vec::with_capacity(n);
    for i in 0..n {
        let in_force = in_force.clone();
        let options = NodeOptions {
            on_decision: Some(DecisionListener::new(move |endpoint, _| {
                let now = Instant::now();
                in_force
                    .lock()
                    .unwrap()
                    .insert((i, endpoint.to_owned()), now);
            })),
            ..NodeOptions::new(config.clone(), &format!("n{i}"))
        };
        let node = if spawned {
            Handle::spawn(options).await.map(|(node, _)| node)
        } else {
            Handle::start(options)
        };
        nodes.push(node.map_err(|e| e.to_string())?);
    }
    // Every node subscribed and its (empty) snapshot loaded before anyone reports: a report
    // published before a peer subscribes reaches it only through the KV, and see the README
    // (GSLB_BENCH_NO_WAIT=1 skips this wait and shows the re-sync race it avoids).
    if std::env::var_os("GSLB_BENCH_NO_WAIT").is_none() {
        for node in &nodes {
            while !node.is_connected()
                || node
                    .metrics()
                    .encode()
                    .contains("gslbd_state_nats_connected 0")
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let t = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        for e in &names {
            node.set_health(e, Some(i < n / 2))?;
        }
    }
    // Every node counts every report: n/2 of n healthy is below 51 %.
    for node in &nodes {
        loop {
            let members = node.members().await?.iter().filter(|m| m.active).count();
            let ready = node
                .decisions()
                .await?
                .iter()
                .filter(|(_, d)| d.total_reports as usize == n && d.source == Source::Global)
                .count();
            if members == n && ready == endpoints {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                let stuck: Vec<_> = node
                    .decisions()
                    .await?
                    .into_iter()
                    .filter(|(_, d)| d.total_reports as usize != n || d.source != Source::Global)
                    .take(5)
                    .collect();
                let reports: Vec<_> = node
                    .members()
                    .await?
                    .iter()
                    .map(|m| (m.node.clone(), m.reports))
                    .collect();
                let published: Vec<_> = nodes
                    .iter()
                    .map(|n| {
                        let text = n.metrics().encode();
                        let line = text
                            .lines()
                            .find(|l| {
                                l.starts_with("gslbd_state_nats_published_total{type=\"health\"}")
                            })
                            .map(str::to_owned);
                        (n.node_id().to_owned(), line)
                    })
                    .collect();
                return Err(format!(
                    "{}: {members} members, {ready} ready; stuck {stuck:?}; reports {reports:?}; {:?}; published {published:?}",
                    node.node_id(),
                    node.stats().await?,
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "setup: {n} nodes x {endpoints} endpoints converged in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Our decision events, timestamped as a subscriber task on this runtime receives them
    // (subscribed only for the second half of the flips: on one machine, 19 subscriber tasks
    // woken per flip take CPU from the receivers still to come, which a real fleet's nodes,
    // each on its own machine, do not share).
    let arrivals: Arrivals = Arc::default();
    // Raw NATS: one publisher, n - 1 subscribers, each its own connection.
    let raw_arrivals: Arrivals = Arc::default();
    let publisher = async_nats::connect(urls.clone()).await?;
    for r in 0..n - 1 {
        let client = async_nats::connect(urls.clone()).await?;
        let mut sub = client.subscribe("raw.bench").await?;
        client.flush().await?;
        let raw_arrivals = raw_arrivals.clone();
        tokio::spawn(async move {
            let _client = client;
            while let Some(m) = sub.next().await {
                let now = Instant::now();
                let key = String::from_utf8_lossy(&m.payload).into_owned();
                raw_arrivals.lock().unwrap().insert((r, key), now);
            }
        });
    }
    // The same, but each subscriber on a thread of its own (a current-thread runtime), as each
    // of our nodes is: on one machine, n - 1 receivers on n - 1 threads pay n - 1 wake-ups
    // where n - 1 subscribers sharing this runtime's two workers pay fewer.
    let threaded_arrivals: Arrivals = Arc::default();
    for r in 0..n - 1 {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let urls = urls.clone();
        let arrivals = threaded_arrivals.clone();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
            };
            rt.block_on(async move {
                let subscribed = async {
                    let client = async_nats::connect(urls).await?;
                    let sub = client.subscribe("raw.threads").await?;
                    client.flush().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>((client, sub))
                };
                let (_client, mut sub) = match subscribed.await {
                    Ok(s) => s,
                    Err(e) => return drop(ready_tx.send(Err(e.to_string()))),
                };
                let _ = ready_tx.send(Ok(()));
                while let Some(m) = sub.next().await {
                    let now = Instant::now();
                    let key = String::from_utf8_lossy(&m.payload).into_owned();
                    arrivals.lock().unwrap().insert((r, key), now);
                }
            });
        });
        ready_rx.recv()??;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut ours = Vec::new();
    let mut ours_events = Vec::new();
    let mut raw = Vec::new();
    let mut threaded = Vec::new();
    let mut state = vec![false; endpoints];
    for k in 0..2 * flips {
        if k == flips {
            for (i, node) in nodes.iter().enumerate() {
                let mut events = node.subscribe();
                let arrivals = arrivals.clone();
                tokio::spawn(async move {
                    while let Ok(event) = events.recv().await {
                        if let Event::Decision { endpoint, .. } = event {
                            hops::stamp(Hop::Delivered, &format!("n{i}"));
                            let now = Instant::now();
                            arrivals.lock().unwrap().insert((i, endpoint), now);
                        }
                    }
                });
            }
        }
        let flipper = n / 2 + k % (n - n / 2);
        let e = k % endpoints;
        state[e] = !state[e];
        let key = names[e].clone();
        for map in [&arrivals, &in_force] {
            map.lock()
                .unwrap()
                .retain(|(_, endpoint), _| *endpoint != key);
        }
        let written = health_puts_ok(&nodes[flipper]);
        let sent = Instant::now();
        nodes[flipper].set_health(&key, Some(state[e]))?;
        if k < flips {
            ours.extend(collect(&in_force, n, Some(flipper), &key, sent).await?);
        } else {
            ours_events.extend(collect(&arrivals, n, Some(flipper), &key, sent).await?);
        }
        // Our durable write of the flip lands before the raw sample, not during it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while health_puts_ok(&nodes[flipper]) <= written {
            if Instant::now() > deadline {
                return Err(
                    format!("{key}: the flipper's KV write not acknowledged in 5 s").into(),
                );
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        if k >= flips {
            continue;
        }

        let key = format!("m{k}");
        let sent = Instant::now();
        publisher
            .publish("raw.bench", Bytes::from(key.clone()))
            .await?;
        raw.extend(collect(&raw_arrivals, n - 1, None, &key, sent).await?);
        tokio::time::sleep(Duration::from_millis(2)).await;

        let key = format!("t{k}");
        let sent = Instant::now();
        publisher
            .publish("raw.threads", Bytes::from(key.clone()))
            .await?;
        threaded.extend(collect(&threaded_arrivals, n - 1, None, &key, sent).await?);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let layout = if spawned {
        "nodes on the benchmark's runtime"
    } else {
        "a thread per node"
    };
    println!("propagation, {n} nodes, {endpoints} endpoints, {flips} flips, {layout}:");
    let (ours_p50, ours_p99) = summary("  health change -> decision in force", ours);
    summary("  health change -> Decision event received", ours_events);
    let (raw_p50, raw_p99) = summary("  raw NATS publish -> delivery", raw);
    let (_, threaded_p99) = summary("  raw NATS, a thread per subscriber", threaded);
    println!(
        "  p99 ratio: {:.2} (target <= 1.50)",
        ours_p99.as_secs_f64() / raw_p99.as_secs_f64().max(1e-9)
    );
    println!(
        "  p50 over raw: {:+.3} ms (target <= +0.150)",
        (ours_p50.as_secs_f64() - raw_p50.as_secs_f64()) * 1e3
    );
    println!(
        "  p99 ratio to raw with a thread per subscriber: {:.2}",
        ours_p99.as_secs_f64() / threaded_p99.as_secs_f64().max(1e-9)
    );
    if hops::ENABLED {
        print_hops(hops::take(), 2 * flips);
    }
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

/// KV writes of `node` to its health bucket acknowledged so far.
fn health_puts_ok(node: &Handle) -> u64 {
    node.metrics()
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("gslbd_state_kv_put_total{")
                && l.contains("health")
                && l.contains("result=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The time of each hop of the last `flips` health changes (stamps of `gslb_state_nats::hops`):
/// per flip, the flipper's set-health, command and publish; per receiver, its receive,
/// decision and the application's event.
fn print_hops(stamps: Vec<hops::Stamp>, flips: usize) {
    struct Flip {
        node: String,
        at: HashMap<Hop, Instant>,
        rx: HashMap<String, HashMap<Hop, Instant>>,
    }
    let mut all: Vec<Flip> = Vec::new();
    for (hop, node, t) in stamps {
        if hop == Hop::SetHealth {
            all.push(Flip {
                node,
                at: HashMap::from([(hop, t)]),
                rx: HashMap::new(),
            });
            continue;
        }
        let Some(f) = all.last_mut() else { continue };
        match hop {
            Hop::Command | Hop::Published if node == f.node => {
                f.at.entry(hop).or_insert(t);
            }
            Hop::Received | Hop::Decided | Hop::Delivered if node != f.node => {
                f.rx.entry(node).or_default().entry(hop).or_insert(t);
            }
            _ => {}
        }
    }
    let skip = all.len().saturating_sub(flips);
    let names = [
        "set_health -> drive loop (command channel)",
        "drive loop: core + publish handed to NATS",
        "NATS: client, server, receiver's drive loop",
        "receiver: core decides (in force)",
        "decision event -> application (2nd half)",
    ];
    let mut spans: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    for f in &all[skip..] {
        let (Some(&s), Some(&c), Some(&p)) = (
            f.at.get(&Hop::SetHealth),
            f.at.get(&Hop::Command),
            f.at.get(&Hop::Published),
        ) else {
            continue;
        };
        spans[0].push(c - s);
        spans[1].push(p - c);
        for r in f.rx.values() {
            if let (Some(&rv), Some(&d)) = (r.get(&Hop::Received), r.get(&Hop::Decided)) {
                spans[2].push(rv.saturating_duration_since(p));
                spans[3].push(d - rv);
                if let Some(&dl) = r.get(&Hop::Delivered) {
                    spans[4].push(dl.saturating_duration_since(d));
                }
            }
        }
    }
    println!("  where the time goes (trace-hops):");
    for (name, samples) in names.iter().zip(spans) {
        summary(&format!("    {name}"), samples);
    }
}

/// The memory of a real daemon holding the snapshot: `gslb-state run` (`GSLB_STATE_BIN`, else
/// `target/release/gslb-state` when built) started on the same buckets; its resident set once
/// `/healthz` says the snapshot is loaded. Skipped, with a line saying so, without a binary.
async fn daemon_rss(
    cluster: &NatsCluster,
    cluster_id: &str,
    writers: usize,
    reports: usize,
) -> Res<()> {
    let bin = std::env::var_os("GSLB_STATE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target/release/gslb-state"));
    if !bin.exists() {
        println!(
            "daemon RSS: skipped ({} not built: cargo build --release -p gslb-state-daemon)",
            bin.display()
        );
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let servers: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let yaml = format!(
        "cluster:\n  id: \"{cluster_id}\"\nnode:\n  id: \"rss\"\n\
         state:\n  healthPolicy: \"global-quorum\"\n  quorumMinPercent: 51\n  heartbeatInterval: \"1s\"\n  heartbeatTTL: \"10m\"\n\
         nats:\n  servers: [{}]\n  jetStream:\n    domain: \"{DEFAULT_DOMAIN}\"\n\
         admin:\n  listen: \"127.0.0.1:0\"\n",
        servers.join(", ")
    );
    let config = dir.path().join("rss.yaml");
    std::fs::write(&config, yaml)?;
    let start = Instant::now();
    let mut d = gslb_state_tests::DaemonProcess::spawn(&bin, "rss", &config, &[], &[], dir.path())?;
    let loaded =
        gslb_state_tests::wait_until(Duration::from_secs(180), "daemon snapshot", || async {
            d.get_json("/healthz")
                .is_some_and(|h| h["snapshot_loaded"] == true)
        })
        .await;
    if let Err(e) = loaded {
        let tail = d.log_tail(20);
        d.kill();
        return Err(format!("{e}\n{tail}").into());
    }
    let took = start.elapsed();
    let endpoints = d
        .get_json("/v1/status")
        .and_then(|s| s["endpoints"].as_u64())
        .unwrap_or(0);
    if endpoints != reports as u64 {
        let tail = d.log_tail(200);
        d.kill();
        return Err(format!("the daemon knows {endpoints} of {reports} endpoints\n{tail}").into());
    }
    let pid = d.pid().ok_or("the daemon exited")?;
    let kb = |field: &str| proc_status_kb(pid, field).unwrap_or(0);
    println!(
        "daemon RSS: {} MB holding {writers} members x {reports} endpoints ({} MB at its peak; loaded in {:.1} s; target <= 150 MB)",
        kb("VmRSS:") / 1024,
        kb("VmHWM:") / 1024,
        took.as_secs_f64()
    );
    d.kill();
    Ok(())
}

/// Rounds of the core alone and of the snapshot load (medians compared).
const ROUNDS: usize = 3;

/// The median of `samples`.
/// The core alone, fed the members' records and the chunks as a driver would hand them in,
/// its outputs and changed decisions drained; checks that all `total` reports were applied.
fn core_alone(
    node_config: &gslb_state_core::NodeConfig,
    member_values: &[(String, Bytes)],
    chunk_values: &[(String, Bytes)],
    total: u64,
) -> Res<Duration> {
    let mut core = gslb_state_core::Node::new(
        node_config.clone(),
        gslb_state_core::Now::new(
            gslb_state_core::Instant::from_nanos(0),
            gslb_state_core::WallTime::from_unix_ms(unix_ms()),
        ),
    )?;
    let faults = this_thread_stat().minor_faults;
    let t = Instant::now();
    let now = gslb_state_core::Now::new(
        gslb_state_core::Instant::from_nanos(1),
        gslb_state_core::WallTime::from_unix_ms(unix_ms()),
    );
    // Connected, the core asks for the snapshot; the entries below are its answer.
    core.handle(
        now,
        gslb_state_core::Input::Connectivity(gslb_state_core::Connectivity::Connected),
    );
    for (key, value) in member_values {
        core.handle(
            now,
            gslb_state_core::Input::KvEntry {
                bucket: Bucket::Members,
                key: key.clone(),
                value: value.clone(),
            },
        );
    }
    core.handle(
        now,
        gslb_state_core::Input::KvReadDone {
            read: gslb_state_core::KvRead::Snapshot,
            complete: true,
        },
    );
    let mut asked = 0;
    while let Some(out) = core.poll_output() {
        if let gslb_state_core::Output::ReadSnapshotReports { chunks, .. } = out {
            asked += chunks.len();
        }
    }
    // A driver drains the changed decisions as well as the outputs.
    let drain = |core: &mut gslb_state_core::Node| {
        while core.poll_output().is_some() {}
        while core.poll_updated().is_some() {}
    };
    if asked != chunk_values.len() {
        return Err(format!(
            "the core asked for {asked} of {} chunks",
            chunk_values.len()
        )
        .into());
    }
    for (key, value) in chunk_values {
        core.handle(
            now,
            gslb_state_core::Input::KvEntry {
                bucket: Bucket::Health,
                key: key.clone(),
                value: value.clone(),
            },
        );
        drain(&mut core);
    }
    core.handle(
        now,
        gslb_state_core::Input::KvReadDone {
            read: gslb_state_core::KvRead::SnapshotReports {
                region: String::new(),
            },
            complete: true,
        },
    );
    drain(&mut core);
    let core_alone = t.elapsed();
    if !core.snapshot_loaded() || core.stats().reports_applied != total {
        return Err(format!(
            "core alone: loaded {}, {} reports applied",
            core.snapshot_loaded(),
            core.stats().reports_applied
        )
        .into());
    }
    println!(
        "core alone: {} active members' records and {} chunks ({total} reports) handed in, outputs and changed decisions drained, in {:.3} s ({} page faults)",
        member_values.len(),
        chunk_values.len(),
        core_alone.as_secs_f64(),
        this_thread_stat().minor_faults - faults
    );
    Ok(core_alone)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}

/// Waits (at most 60 s) until the servers of `cluster` use under 5 % of a core together over
/// half a second; returns how long that took.
async fn servers_quiet(cluster: &NatsCluster) -> Duration {
    let pids: Vec<u32> = cluster.servers().iter().filter_map(|s| s.pid()).collect();
    let ticks = || pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let before = ticks();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // 100 ticks a second: 5 % of a core over 0.5 s is 2.5 ticks.
        if ticks() - before <= 2 {
            break;
        }
    }
    start.elapsed()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn snapshot(cluster: &NatsCluster, writers: usize, reports: usize) -> Res<()> {
    let cluster_id = "snap";
    let names = Names::new(cluster_id);
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .connect(cluster.urls())
        .await?;
    let js = jetstream::with_domain(client.clone(), DEFAULT_DOMAIN);
    for bucket in [Bucket::Members, Bucket::Health] {
        // As the driver creates them.
        js.create_key_value(kv::Config {
            bucket: names.bucket(bucket).to_owned(),
            history: 1,
            max_value_size: 1024 * 1024,
            num_replicas: 3,
            ..Default::default()
        })
        .await?;
    }
    let t = Instant::now();
    let health = names.bucket(Bucket::Health).to_owned();
    let endpoints: Vec<String> = (0..reports).map(|i| format!("ep{i:06}")).collect();
    let now_ms = unix_ms();
    let state_of = |i: usize, w: usize| {
        if (i + w).is_multiple_of(3) {
            ReportState::Unhealthy
        } else {
            ReportState::Healthy
        }
    };
    // As a node leaves them: one key per report, then (at its first compaction) the chunks of
    // its compacted snapshot, named by its membership record with the highest revision of its
    // report writes.
    let mut acks = futures::stream::FuturesUnordered::new();
    let mut records = Vec::with_capacity(writers);
    let mut chunk_values: Vec<(String, Bytes)> = Vec::new();
    for w in 0..writers {
        let node = format!("w{w}");
        let mut revision = 0u64;
        for (i, e) in endpoints.iter().enumerate() {
            let value = encode(&Message::Report(ReportRecord {
                cluster: cluster_id,
                node: &node,
                endpoint: e,
                incarnation: 1,
                seq: i as u64 + 1,
                sent_unix_ms: now_ms,
                state: state_of(i, w),
            }));
            let subject = format!("$KV.{health}.{}", names.report_key(&node, e));
            acks.push(js.publish(subject, value).await?.into_future());
            if acks.len() >= 4096
                && let Some(ack) = acks.next().await
            {
                revision = revision.max(ack?.sequence);
            }
        }
        while let Some(ack) = acks.next().await {
            revision = revision.max(ack?.sequence);
        }
        let items: Vec<ReportItem<'_>> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| ReportItem {
                endpoint: e,
                seq: i as u64 + 1,
                state: state_of(i, w),
            })
            .collect();
        let chunks = encode_chunks(cluster_id, &node, 1, 1, &items).ok_or("too many chunks")?;
        for (i, value) in chunks.iter().enumerate() {
            let key = names.chunk_key(&node, 1, i as u32);
            js.publish(format!("$KV.{health}.{key}"), value.clone())
                .await?
                .await?;
            chunk_values.push((key, value.clone()));
        }
        records.push((
            node,
            SnapshotRef {
                incarnation: 1,
                generation: 1,
                chunks: chunks.len() as u32,
                seq: reports as u64,
                revision,
            },
        ));
    }
    let record_of = |node: &str, snapshot: SnapshotRef| {
        encode(&Message::Member(MemberRecord {
            cluster: cluster_id,
            node,
            region: "",
            incarnation: 1,
            hb_seq: 1,
            sent_unix_ms: unix_ms(),
            report_seq: reports as u64,
            kv_seq: reports as u64,
            snapshot: Some(snapshot),
        }))
    };
    let members = js.get_key_value(names.bucket(Bucket::Members)).await?;
    for (node, snapshot) in &records {
        members
            .put(names.member_key(node), record_of(node, *snapshot))
            .await?;
    }
    println!(
        "snapshot: wrote {writers} nodes x {reports} reports (R3), and {} chunks of their compacted snapshots ({:.1} MB), in {:.1} s",
        chunk_values.len(),
        chunk_values.iter().map(|(_, v)| v.len()).sum::<usize>() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // A node restarts at any later time: the servers have applied the writes by then.
    let quiet = servers_quiet(cluster).await;
    println!("servers quiet (under 5 % of a core together) after {quiet:.1?}");

    // The core alone, fed the same records and chunks: what any driver must spend. Three
    // rounds each of this and of the real load below, one after the other; the medians are
    // compared.
    let member_values: Vec<(String, Bytes)> = records
        .iter()
        .map(|(node, snapshot)| (names.member_key(node), record_of(node, *snapshot)))
        .collect();
    let node_config = gslb_state_core::NodeConfig::from_config(
        &config(cluster_id, &cluster.urls(), "10m")?,
        "reader",
    );
    let total = (writers * reports) as u64;
    // Each round twice: on this benchmark's thread, whose allocator already holds the memory
    // of the round before (warm), and on a new thread, as each node's driver starts (its
    // report tables are fresh memory: page faults a warm round does not pay). The ratio
    // below uses the new thread's.
    let mut warm_rounds = Vec::new();
    let mut core_rounds = Vec::new();
    for _ in 0..ROUNDS {
        warm_rounds.push(core_alone(
            &node_config,
            &member_values,
            &chunk_values,
            total,
        )?);
        let fresh = std::thread::scope(|s| {
            s.spawn(|| {
                core_alone(&node_config, &member_values, &chunk_values, total)
                    .map_err(|e| e.to_string())
            })
            .join()
        })
        .map_err(|_| "the core-alone thread panicked")??;
        core_rounds.push(fresh);
    }
    println!(
        "core alone, medians of {ROUNDS}: {:.3} s on a new thread, {:.3} s warm",
        median(core_rounds.clone()).as_secs_f64(),
        median(warm_rounds).as_secs_f64()
    );
    drop((chunk_values, member_values));

    let mut load_rounds = Vec::new();
    for round in 0..ROUNDS {
        let start = Instant::now();
        let node = Handle::start(NodeOptions::new(
            config(cluster_id, &cluster.urls(), "10m")?,
            &format!("reader{round}"),
        ))
        .map_err(|e| e.to_string())?;
        // Polled rather than awaited as an event: a subscriber would clone a million decision
        // events on this machine's two cores.
        let mut connected = None;
        let total = (writers * reports) as u64;
        loop {
            if connected.is_none() && node.is_connected() {
                connected = Some(start.elapsed());
            }
            if node.snapshot_loaded() && node.stats().await?.reports_applied >= total {
                break;
            }
            if start.elapsed() > Duration::from_secs(120) {
                return Err("snapshot not loaded within 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = start.elapsed();
        // The driver thread's CPU time (how much of the load was our thread's work rather
        // than waiting on the servers; clock ticks, usually 10 ms) and page faults.
        let driver = threads_stat(&format!("gslb-state-reader{round}"));
        let driver_cpu = (driver.utime + driver.stime) as f64 / 100.0;
        let driver_faults = driver.minor_faults;
        let active = node.members().await?.iter().filter(|m| m.active).count();
        let known = node.decisions().await?.len();
        let applied = node.stats().await?.reports_applied;
        println!(
            "snapshot load: {writers} nodes x {reports} reports in {:.3} s from start ({:.3} s after connecting; driver thread CPU {driver_cpu:.2} s, {driver_faults} page faults); \
         {active} active members, {known} endpoints, {applied} reports applied (target <= 2 s)",
            took.as_secs_f64(),
            (took - connected.unwrap_or_default()).as_secs_f64()
        );
        if applied != (writers * reports) as u64 {
            return Err(format!("only {applied} of {} reports applied", writers * reports).into());
        }
        load_rounds.push(took);
        node.shutdown().await;
    }
    daemon_rss(cluster, cluster_id, writers, reports).await?;

    if writers * reports == 0 {
        println!("snapshot: nothing written, no ratios");
        return Ok(());
    }
    // The floor: the same entries read by a bare ordered consumer, nothing done with them.
    let store = js.get_key_value(&health).await?;
    let t = Instant::now();
    let consumer = store
        .stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: format!("$KV.{health}.{}", Names::REPORTS_FILTER),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut read = 0usize;
    while let Some(m) = messages.next().await {
        read += 1;
        if m?.info()?.pending == 0 {
            break;
        }
    }
    let per_key = t.elapsed();
    println!(
        "raw read of the same {read} entries (one ordered consumer, nothing done with them): {:.3} s",
        per_key.as_secs_f64()
    );
    let (took, core_alone) = (median(load_rounds), median(core_rounds));
    println!(
        "medians of {ROUNDS}: snapshot load {:.3} s, core alone {:.3} s",
        took.as_secs_f64(),
        core_alone.as_secs_f64()
    );
    println!(
        "snapshot load / core alone: {:.2} (target <= 1.50)",
        took.as_secs_f64() / core_alone.as_secs_f64()
    );
    println!(
        "snapshot load / per-key read: {:.2} (target <= 0.20: 5x faster)",
        took.as_secs_f64() / per_key.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let mut next = |default: usize| args.next().transpose().map(|v| v.unwrap_or(default));
    let flips = next(300)?;
    let n = next(10)?;
    let endpoints = next(10_000)?;
    let writers = next(20)?;
    let reports = next(100_000)?;
    let cluster = NatsCluster::start(3, ServerOpts::default())?;
    if flips > 0 {
        propagation(&cluster, flips, n, endpoints).await?;
    }
    snapshot(&cluster, writers, reports).await?;
    Ok(())
}
