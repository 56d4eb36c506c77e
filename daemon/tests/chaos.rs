//! The chaos soak: a 3-server JetStream cluster (routes through proxies) and 5 daemons (each
//! reaching every server through a proxy of its own), under random faults from a printed seed
//! — health flips at a steady rate, SIGKILL and SIGSTOP of daemons and servers, proxy cuts of
//! a daemon or of a route, restarts — then a quiet period and a checker:
//!
//! * every live daemon decides every endpoint as the guide's rule does on the true last
//!   observations of the live daemons (verdict, source and counts);
//! * no daemon died on its own;
//! * no report of a live daemon is missing from (or stale in) the KV health bucket;
//! * every daemon's memory (RSS) stayed bounded.
//!
//! `CHAOS_SECONDS` (default 60) sets how long faults are injected, `CHAOS_SEED` replays a
//! schedule (the schedule is the seed's; its real timing is as the machine runs it).
//! `scripts/chaos [SECONDS]` runs it in release mode with its report.

mod daemon_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gslb_state_core::codec::{self, Message, ReportState};
use gslb_state_core::policy::{QuorumScope, RegionCounts, RemoteCounts, Rule, decide};
use gslb_state_core::{Names, Policy};
use gslb_state_tests::measure::proc_status_kb;
use gslb_state_tests::{
    DaemonProcess, LinkMode, NatsCluster, Proxy, ServerOpts, wait_until_blocking,
};

const CLUSTER: &str = "chaos";
const DAEMONS: usize = 5;
const SERVERS: usize = 3;
const ENDPOINTS: usize = 12;
const INTERVAL: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_secs(2);
/// A health flip this often.
const FLIP_EVERY: Duration = Duration::from_millis(200);
/// A fault this often.
const FAULT_EVERY: Duration = Duration::from_millis(1500);
/// After the quiet period the state must be right within this (reconnects, re-syncs and a
/// JetStream that lost servers take a few seconds more than TTL + interval).
const CONVERGE_WITHIN: Duration = Duration::from_secs(20);
/// Resident memory a daemon may use.
const MAX_RSS_BYTES: u64 = 200 * 1024 * 1024;

/// xorshift64*, from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// Something to undo later.
#[derive(Debug, Clone, Copy)]
enum Undo {
    StartDaemon(usize),
    ContDaemon(usize),
    RestartServer(usize),
    ContServer(usize),
    HealDaemon(usize),
    HealRoute(usize, usize),
}

struct Soak {
    dir: tempfile::TempDir,
    cluster: NatsCluster,
    routes: gslb_state_tests::RouteLinks,
    /// Per daemon, one proxy per server.
    links: Vec<Vec<Proxy>>,
    configs: Vec<std::path::PathBuf>,
    daemons: Vec<Option<DaemonProcess>>,
    /// The true last observation of each daemon per endpoint.
    truth: Vec<BTreeMap<String, bool>>,
    /// Daemons SIGSTOPped now (told what they missed when they continue).
    stopped: Vec<bool>,
    policy: Policy,
    q: u8,
    faults: Vec<String>,
    flips: u64,
}

fn name(i: usize) -> String {
    format!("d{i}")
}

impl Soak {
    fn start(rng: &mut Rng) -> Soak {
        let (cluster, routes) =
            NatsCluster::start_with_route_proxies(SERVERS, ServerOpts::default()).expect("cluster");
        let dir = tempfile::tempdir().expect("temp dir");
        let policy = Policy::ALL[rng.below(4)];
        let q = [34, 51, 67, 100][rng.below(4)];
        let mut links = Vec::new();
        let mut configs = Vec::new();
        for i in 0..DAEMONS {
            let proxies: Vec<Proxy> = cluster
                .servers()
                .iter()
                .map(|s| Proxy::start(s.client_port()).expect("proxy"))
                .collect();
            let servers: Vec<String> = proxies
                .iter()
                .map(|p| format!("\"nats://127.0.0.1:{}\"", p.port()))
                .collect();
            let yaml = format!(
                "cluster:\n  id: {CLUSTER}\nnode:\n  id: {}\nstate:\n  healthPolicy: {policy}\n  quorumMinPercent: {q}\n  heartbeatInterval: {}ms\n  heartbeatTTL: {}ms\nnats:\n  servers: [{}]\n  pingInterval: 1s\n  connectTimeout: 1s\n  jetStream:\n    domain: {}\nadmin:\n  listen: 127.0.0.1:0\n",
                name(i),
                INTERVAL.as_millis(),
                TTL.as_millis(),
                servers.join(", "),
                gslb_state_tests::DEFAULT_DOMAIN
            );
            let path = dir.path().join(format!("{}.yaml", name(i)));
            std::fs::write(&path, yaml).expect("config");
            configs.push(path);
            links.push(proxies);
        }
        let mut soak = Soak {
            dir,
            cluster,
            routes,
            links,
            configs,
            daemons: (0..DAEMONS).map(|_| None).collect(),
            truth: vec![BTreeMap::new(); DAEMONS],
            stopped: vec![false; DAEMONS],
            policy,
            q,
            faults: Vec::new(),
            flips: 0,
        };
        for i in 0..DAEMONS {
            soak.start_daemon(i);
        }
        soak
    }

    /// Tells daemon `i` every observation it has (after a start or a SIGCONT).
    fn tell_all(&mut self, i: usize) {
        let Some(d) = self.daemons[i].as_mut() else {
            return;
        };
        for (endpoint, healthy) in &self.truth[i] {
            let _ = d.request(
                "PUT",
                &format!("/v1/health/{endpoint}"),
                &format!("{{\"healthy\": {healthy}}}"),
            );
        }
    }

    fn start_daemon(&mut self, i: usize) {
        let d = DaemonProcess::spawn(
            daemon_common::bin(),
            &name(i),
            &self.configs[i],
            &[],
            &[],
            self.dir.path(),
        )
        .expect("spawn gslb-state");
        wait_until_blocking(Duration::from_secs(15), "the daemon's API", &mut || {
            d.port().is_some()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log_tail(20)));
        self.daemons[i] = Some(d);
        self.stopped[i] = false;
        self.tell_all(i);
    }

    fn running(&mut self, i: usize) -> bool {
        self.daemons[i]
            .as_mut()
            .is_some_and(|d| d.try_exit().is_none())
    }

    fn flip(&mut self, rng: &mut Rng) {
        let i = rng.below(DAEMONS);
        let endpoint = format!("ep{}", rng.below(ENDPOINTS));
        let healthy = rng.below(2) == 0;
        self.truth[i].insert(endpoint.clone(), healthy);
        self.flips += 1;
        if self.stopped[i] {
            // Told when it continues, as its probes would see it then.
            return;
        }
        if let Some(d) = self.daemons[i].as_mut() {
            let _ = d.request(
                "PUT",
                &format!("/v1/health/{endpoint}"),
                &format!("{{\"healthy\": {healthy}}}"),
            );
        }
    }

    /// Injects one random fault; returns what undoes it and when.
    fn fault(&mut self, rng: &mut Rng, t: Duration) -> Option<(Duration, Undo)> {
        let later = t + rng.ms(1000, 5000);
        let (what, undo) = match rng.below(7) {
            0 => {
                let i = rng.below(DAEMONS);
                if !self.running(i) {
                    return None;
                }
                self.daemons[i].as_mut()?.kill();
                self.stopped[i] = false;
                (format!("SIGKILL {}", name(i)), Undo::StartDaemon(i))
            }
            1 => {
                let i = rng.below(DAEMONS);
                if !self.running(i) {
                    return None;
                }
                if self.stopped[i] {
                    return None;
                }
                self.daemons[i].as_mut()?.signal(libc::SIGSTOP).ok()?;
                self.stopped[i] = true;
                (format!("SIGSTOP {}", name(i)), Undo::ContDaemon(i))
            }
            2 => {
                let s = rng.below(SERVERS);
                if !self.cluster.server(s).is_running() || self.cluster.server(s).is_stopped() {
                    return None;
                }
                self.cluster.server(s).kill().ok()?;
                (format!("SIGKILL server {s}"), Undo::RestartServer(s))
            }
            3 => {
                let s = rng.below(SERVERS);
                if !self.cluster.server(s).is_running() || self.cluster.server(s).is_stopped() {
                    return None;
                }
                self.cluster.server(s).stop().ok()?;
                (format!("SIGSTOP server {s}"), Undo::ContServer(s))
            }
            4 => {
                let i = rng.below(DAEMONS);
                for p in &self.links[i] {
                    p.set_mode(LinkMode::Reset);
                }
                (format!("cut {} from NATS", name(i)), Undo::HealDaemon(i))
            }
            5 => {
                let a = rng.below(SERVERS);
                let b = (a + 1 + rng.below(SERVERS - 1)) % SERVERS;
                self.routes.set(a, b, LinkMode::Reset);
                (format!("cut the route {a}-{b}"), Undo::HealRoute(a, b))
            }
            _ => {
                let i = rng.below(DAEMONS);
                if !self.running(i) || self.stopped[i] {
                    return None;
                }
                let d = self.daemons[i].as_mut()?;
                let _ = d.signal(libc::SIGTERM);
                let _ = wait_until_blocking(Duration::from_secs(10), "a leave", &mut || {
                    d.try_exit().is_some()
                });
                d.kill();
                self.start_daemon(i);
                let what = format!("restart {} (SIGTERM, start)", name(i));
                self.faults
                    .push(format!("{:>7.1}s  {what}", t.as_secs_f64()));
                return None;
            }
        };
        self.faults
            .push(format!("{:>7.1}s  {what}", t.as_secs_f64()));
        Some((later, undo))
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::StartDaemon(i) => {
                if !self.running(i) {
                    self.start_daemon(i);
                }
            }
            Undo::ContDaemon(i) => {
                if self.stopped[i]
                    && let Some(d) = self.daemons[i].as_mut()
                {
                    let _ = d.signal(libc::SIGCONT);
                    self.stopped[i] = false;
                    self.tell_all(i);
                }
            }
            Undo::RestartServer(s) => {
                if !self.cluster.server(s).is_running() {
                    let _ = self.cluster.server(s).restart();
                }
            }
            Undo::ContServer(s) => {
                let _ = self.cluster.server(s).cont();
            }
            Undo::HealDaemon(i) => {
                for p in &self.links[i] {
                    p.set_mode(LinkMode::Pass);
                }
            }
            Undo::HealRoute(a, b) => self.routes.set(a, b, LinkMode::Pass),
        }
    }

    /// What is wrong now (empty when every check holds).
    fn problems(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let live: Vec<usize> = (0..DAEMONS).filter(|&i| self.running(i)).collect();
        for &r in &live {
            let d = self.daemons[r].as_ref().expect("running");
            let Some(v) = d.get_json("/v1/decisions") else {
                problems.push(format!("{}: no answer", name(r)));
                continue;
            };
            for e in 0..ENDPOINTS {
                let endpoint = format!("ep{e}");
                let mut remote = RemoteCounts::default();
                for &o in live.iter().filter(|&&o| o != r) {
                    if let Some(&h) = self.truth[o].get(&endpoint) {
                        remote.total += 1;
                        remote.healthy += u32::from(h);
                    }
                }
                let local = self.truth[r].get(&endpoint).copied();
                let rule = Rule {
                    policy: self.policy,
                    quorum_min_percent: self.q,
                    scope: QuorumScope::Members,
                };
                // Members scope: the region votes are for information only.
                let want = decide(rule, local, remote, RegionCounts::default());
                let got = &v["decisions"][&endpoint];
                let got_key = (
                    got["healthy"].as_bool(),
                    got["source"].as_str().unwrap_or("unknown").to_owned(),
                    got["healthy_reports"].as_u64().unwrap_or(0),
                    got["total_reports"].as_u64().unwrap_or(0),
                );
                let want_key = (
                    want.healthy,
                    want.source.to_string(),
                    u64::from(want.healthy_reports),
                    u64::from(want.total_reports),
                );
                if got_key != want_key {
                    problems.push(format!(
                        "{} decides {endpoint} {got_key:?}, the rule gives {want_key:?}",
                        name(r)
                    ));
                }
            }
        }
        problems
    }

    /// Reports of live daemons missing from (or stale in) the health bucket.
    fn kv_problems(&mut self) -> Vec<String> {
        let url = self.cluster.server(0).url();
        let live: Vec<usize> = (0..DAEMONS).filter(|&i| self.running(i)).collect();
        let truth = self.truth.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut problems = Vec::new();
            let client = match async_nats::connect(url).await {
                Ok(c) => c,
                Err(e) => return vec![format!("cannot connect to read the KV: {e}")],
            };
            let js = async_nats::jetstream::with_domain(client, gslb_state_tests::DEFAULT_DOMAIN);
            let names = Names::new(CLUSTER);
            let kv = match js
                .get_key_value(names.bucket(gslb_state_core::Bucket::Health))
                .await
            {
                Ok(kv) => kv,
                Err(e) => return vec![format!("cannot open the health bucket: {e}")],
            };
            for i in live {
                for (endpoint, &healthy) in &truth[i] {
                    let key = names.report_key(&name(i), endpoint);
                    let entry = kv.get(&key).await;
                    let state = match &entry {
                        Ok(Some(v)) => match codec::decode(v) {
                            Ok(Message::Report(r)) => Some(r.state),
                            _ => None,
                        },
                        _ => None,
                    };
                    let want = ReportState::from_observation(Some(healthy));
                    if state != Some(want) {
                        problems.push(format!("KV {key}: {state:?}, expected {want:?}"));
                    }
                }
            }
            problems
        })
    }

    fn rss_bytes(&self) -> Vec<(String, u64)> {
        self.daemons
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let pid = d.as_ref()?.pid()?;
                let kb = proc_status_kb(pid, "VmRSS:")?;
                Some((name(i), kb * 1024))
            })
            .collect()
    }
}

#[test]
fn chaos_soak() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!(
        "chaos: seed {seed}, {seconds} s of faults (replay: CHAOS_SEED={seed} CHAOS_SECONDS={seconds})"
    );
    // Faults and flips draw from streams of their own, so that the fault sequence a seed
    // gives does not depend on how many flips fitted between two faults on this run.
    let mut rng = Rng(seed);
    let mut flip_rng = Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1);
    let mut soak = Soak::start(&mut rng);
    println!(
        "chaos: {SERVERS} servers, {DAEMONS} daemons, policy {} q={}",
        soak.policy, soak.q
    );
    let start = Instant::now();
    let end = Duration::from_secs(seconds);
    let mut pending: Vec<(Duration, Undo)> = Vec::new();
    let (mut next_flip, mut next_fault) = (Duration::ZERO, FAULT_EVERY);
    let mut max_rss = 0u64;
    while start.elapsed() < end {
        let t = start.elapsed();
        if t >= next_flip {
            soak.flip(&mut flip_rng);
            next_flip += FLIP_EVERY;
        }
        if t >= next_fault {
            if let Some(p) = soak.fault(&mut rng, t) {
                pending.push(p);
            }
            next_fault += FAULT_EVERY;
        }
        let (due, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, _)| *at <= t);
        pending = rest;
        for (_, undo) in due {
            soak.undo(undo);
        }
        for (_, rss) in soak.rss_bytes() {
            max_rss = max_rss.max(rss);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Quiet: everything undone, every server ready, every daemon running and connected.
    for (_, undo) in std::mem::take(&mut pending) {
        soak.undo(undo);
    }
    for s in soak.cluster.servers() {
        s.wait_ready(Duration::from_secs(30)).expect("server ready");
    }
    for i in 0..DAEMONS {
        let d = soak.daemons[i].as_ref().expect("started");
        wait_until_blocking(Duration::from_secs(30), "connected", &mut || {
            d.get_json("/healthz")
                .is_some_and(|v| v["nats_connected"] == true)
        })
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", name(i), d.log_tail(30)));
    }
    std::thread::sleep(TTL + INTERVAL);
    let mut last = Vec::new();
    let converged = wait_until_blocking(
        CONVERGE_WITHIN,
        "the decisions and the KV right",
        &mut || {
            last = soak.problems();
            if last.is_empty() {
                last = soak.kv_problems();
            }
            last.is_empty()
        },
    );
    let dead: Vec<usize> = (0..DAEMONS).filter(|&i| !soak.running(i)).collect();
    let died: Vec<String> = dead
        .into_iter()
        .map(|i| {
            let d = soak.daemons[i].as_ref().expect("started");
            format!("{} died on its own:\n{}", name(i), d.log_tail(30))
        })
        .collect();
    for (_, rss) in soak.rss_bytes() {
        max_rss = max_rss.max(rss);
    }
    println!("chaos: fault schedule ({} faults):", soak.faults.len());
    for f in &soak.faults {
        println!("  {f}");
    }
    println!(
        "chaos: {} faults, {} flips, {} daemons x {ENDPOINTS} endpoints checked, converged {} after the quiet period, max RSS {:.1} MB, violations {}",
        soak.faults.len(),
        soak.flips,
        DAEMONS,
        match &converged {
            Ok(took) => format!("{:.1} s", took.as_secs_f64()),
            Err(_) => format!("never (within {CONVERGE_WITHIN:?})"),
        },
        max_rss as f64 / 1e6,
        last.len() + died.len()
    );
    assert!(died.is_empty(), "seed {seed}: {}", died.join("\n"));
    if converged.is_err() {
        // The logs of the daemons that are wrong, for the diagnosis.
        let logs: Vec<String> = (0..DAEMONS)
            .filter(|&i| last.iter().any(|p| p.starts_with(&format!("{} ", name(i)))))
            .filter_map(|i| {
                let d = soak.daemons[i].as_ref()?;
                Some(format!("--- {} ---\n{}", name(i), d.log_tail(60)))
            })
            .collect();
        panic!(
            "seed {seed}: not right {CONVERGE_WITHIN:?} after the quiet period:\n{}\n{}",
            last.join("\n"),
            logs.join("\n")
        );
    }
    assert!(max_rss <= MAX_RSS_BYTES, "seed {seed}: RSS {max_rss} bytes");
}
