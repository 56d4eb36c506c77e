//! Sustained load on a real 3-server JetStream cluster (R3 buckets): how many health changes
//! per second the cluster absorbs while every node stays current within 1 s.
//!
//! ```text
//! cargo run --release -p gslb-state-tests --example sustained -- [--rates 10000,25000,50000,100000,150000,200000] [--window 10] [--nodes 10] [--endpoints 10000] [--tick-ms 5] [--marker-ms 100] [--markers 20] [--grace 3] [--policy global-any-healthy]
//! ```
//!
//! Every node runs in a process of its own (this example started again with a hidden first
//! argument `--node`), so that its CPU and resident memory can be read from `/proc`; the parent
//! starts the servers and the nodes and drives them with one-line commands on their stdin.
//!
//! 1. **Setup.** Every node reports the same ENDPOINTS endpoints (random states) and MARKERS
//!    marker endpoints of its own (unhealthy), then waits until it counts every member and
//!    every report, its snapshot loaded.
//! 2. **Steps.** For each aggregate RATE (changes per second, cluster-wide), every node flips
//!    random endpoints of its own (`set_health` to the opposite) at RATE / NODES per second,
//!    in a small batch every TICK, for WINDOW seconds. Meanwhile every node toggles one of its
//!    markers every MARKER ms (round robin, so one marker changes every MARKERS × MARKER ms).
//!    Under `global-any-healthy` (the default; `global-quorum` works too) a marker reported by
//!    its owner alone decides the verdict everywhere, so every toggle is a `Decision` event at
//!    every other node; the lag is its arrival (wall clock, same host) minus the wall-clock
//!    time just before `set_health`. An arrival is matched to the latest toggle of that marker
//!    to that verdict set before it, which is exact up to twice the marker's period.
//!    After the window the load stops and GRACE seconds later the arrivals are collected.
//!
//! A step passes when, at every node, the p99 and the max lag are at most 1 s, every toggle
//! arrived, no message was lost (the driver's `gslbd_state_dropped_total{reason="slow-consumer"}`,
//! the core's `messages_lost`, the servers' `slow_consumers` in `/varz`), no event was missed by
//! the application (a lagged event receiver), and the nodes issued at least 95 % of the offered
//! rate. The steps stop at the first failure. Per step it prints the offered and achieved rates,
//! the lag, the losses, each node's CPU (utime + stime of the process over the window; 100 % =
//! one core) and resident set (VmRSS at the window's end), the servers' CPU, the host's (and
//! how much of it went to processes other than ours), then where the time goes: CPU time per
//! change of the nodes and of the servers, how long a command waited in the slowest driver's
//! queue at the window's end (a `stats()` round trip) and how many messages were published but
//! not yet received, reports per message published; and a detail line (KV writes and report
//! messages per second, reports applied per node, re-syncs, member-down). The last line names
//! the largest passing rate.
//!
//! All of it shares one host: on a small one the host's CPU, not any one process, is what runs
//! out, so compare the CPU per change and the queues between steps rather than the raw rates
//! with a production cluster of one node per host.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gslb_state_core::{Config, DropReason, Source};
use gslb_state_nats::{Event, Handle, NodeOptions};
use gslb_state_sim::rng::Rng;
use gslb_state_tests::measure::{cpu_ticks, percentile, proc_status_kb};
use gslb_state_tests::{DEFAULT_DOMAIN, NatsCluster, ServerOpts, metric_value};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The bound on lag and its percentile that make a step pass.
const MAX_LAG: Duration = Duration::from_secs(1);
/// Share of the offered rate the nodes must issue for a step to pass.
const MIN_ACHIEVED: f64 = 0.95;

#[derive(Debug, Clone)]
struct Args {
    rates: Vec<u64>,
    window: Duration,
    nodes: usize,
    endpoints: usize,
    tick: Duration,
    marker_every: Duration,
    markers: usize,
    grace: Duration,
    policy: String,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Res<Args> {
    let mut a = Args {
        rates: vec![10_000, 25_000, 50_000, 100_000, 150_000, 200_000],
        window: Duration::from_secs(10),
        nodes: 10,
        endpoints: 10_000,
        tick: Duration::from_millis(5),
        marker_every: Duration::from_millis(100),
        markers: 20,
        grace: Duration::from_secs(3),
        policy: "global-any-healthy".to_owned(),
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag}: a value is missing"))?;
        let num = || {
            value
                .parse::<f64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--rates" => {
                a.rates = value
                    .split(',')
                    .map(|r| r.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--rates {value}: {e}"))?
            }
            "--window" => a.window = Duration::from_secs_f64(num()?),
            "--nodes" => a.nodes = num()? as usize,
            "--endpoints" => a.endpoints = num()? as usize,
            "--tick-ms" => a.tick = Duration::from_secs_f64(num()? / 1e3),
            "--marker-ms" => a.marker_every = Duration::from_secs_f64(num()? / 1e3),
            "--markers" => a.markers = num()? as usize,
            "--grace" => a.grace = Duration::from_secs_f64(num()?),
            "--policy" => a.policy = value,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.nodes < 2 || a.markers == 0 || a.endpoints == 0 || a.tick.is_zero() {
        return Err("need --nodes >= 2, --markers >= 1, --endpoints >= 1, --tick-ms > 0".into());
    }
    Ok(a)
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn endpoint_name(i: usize) -> String {
    format!("ep{i:05}")
}

fn marker_name(node: usize, m: usize) -> String {
    format!("mk-n{node}-{m:02}")
}

/// `mk-n<node>-<m>` → (node, m).
fn parse_marker(name: &str) -> Option<(usize, usize)> {
    let (node, m) = name.strip_prefix("mk-n")?.split_once('-')?;
    Some((node.parse().ok()?, m.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// The node process
// ---------------------------------------------------------------------------------------------

/// What the event thread saw, since the last step started.
#[derive(Default)]
struct Seen {
    /// (owner, marker, healthy, arrival in unix ns).
    arrivals: Vec<(usize, usize, bool, u64)>,
    /// Events the application missed (the receiver lagged).
    lagged: u64,
    member_down: u64,
    disconnected: u64,
}

/// Counters of one node, for deltas over a step.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    slow: u64,
    lost: u64,
    resyncs: u64,
    stale: u64,
    applied: u64,
    kv_ok: u64,
    kv_err: u64,
    published: u64,
    received: u64,
    queue_full: u64,
}

/// Health messages published and received so far (the metrics alone: no round trip through
/// the driver, whose command queue may be long).
fn messages(handle: &Handle) -> (u64, u64) {
    let text = handle.metrics().encode();
    let get = |series: &str| metric_value(&text, series).unwrap_or(0.0) as u64;
    (
        get("gslbd_state_nats_published_total{type=\"health\"}"),
        get("gslbd_state_nats_received_total{type=\"health\"}"),
    )
}

async fn counters(handle: &Handle) -> Res<Counters> {
    let text = handle.metrics().encode();
    let kv = |result: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("gslbd_state_kv_put_total{")
                    && l.contains("health")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let stats = handle.stats().await?;
    Ok(Counters {
        slow: metric_value(&text, "gslbd_state_dropped_total{reason=\"slow-consumer\"}")
            .unwrap_or(0.0) as u64,
        lost: stats.messages_lost,
        resyncs: stats.resyncs_requested,
        stale: stats.stale_reads,
        applied: stats.reports_applied,
        kv_ok: kv("ok"),
        kv_err: kv("error"),
        published: messages(handle).0,
        received: messages(handle).1,
        queue_full: stats.dropped(DropReason::OutputQueueFull),
    })
}

fn node_config(urls: &str, policy: &str) -> Res<Config> {
    let servers: Vec<String> = urls.split(',').map(|u| format!("\"{u}\"")).collect();
    Ok(Config::from_yaml(&format!(
        "cluster:\n  id: \"sustained\"\n\
         state:\n  healthPolicy: \"{policy}\"\n  quorumMinPercent: 51\n\
         nats:\n  servers: [{}]\n  jetStream:\n    domain: \"{DEFAULT_DOMAIN}\"\n",
        servers.join(", ")
    ))?)
}

/// `--node <i> <nodes> <endpoints> <markers> <policy> <urls>`: one node, driven by stdin.
fn node_main(args: &[String]) -> Res<()> {
    let [i, nodes, endpoints, markers, policy, urls] = args else {
        return Err("usage: --node <i> <nodes> <endpoints> <markers> <policy> <urls>".into());
    };
    let (me, nodes, endpoints, markers): (usize, usize, usize, usize) = (
        i.parse()?,
        nodes.parse()?,
        endpoints.parse()?,
        markers.parse()?,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (handle, mut events) = Handle::start_with_events(NodeOptions::new(
        node_config(urls, policy)?,
        &format!("n{me}"),
    ))
    .map_err(|e| e.to_string())?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.blocking_recv() {
                    Ok(Event::Decision { endpoint, decision }) => {
                        let now = unix_nanos(SystemTime::now());
                        if let (Some((owner, m)), Some(healthy)) =
                            (parse_marker(&endpoint), decision.healthy)
                            && owner != me
                        {
                            seen.lock().unwrap().arrivals.push((owner, m, healthy, now));
                        }
                    }
                    Ok(Event::MemberDown { .. }) => seen.lock().unwrap().member_down += 1,
                    Ok(Event::Disconnected) => seen.lock().unwrap().disconnected += 1,
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => seen.lock().unwrap().lagged += n,
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
    let mut out = std::io::stdout().lock();
    // Connected and the (empty) snapshot loaded before anyone reports: a report published
    // before a peer subscribes reaches it only through the KV.
    let t = Instant::now();
    while !(handle.is_connected() && handle.snapshot_loaded()) {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("not connected with the snapshot loaded within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    writeln!(out, "ready")?;
    out.flush()?;

    let mut rng = Rng::new(me as u64);
    let names: Vec<String> = (0..endpoints).map(endpoint_name).collect();
    let mut state: Vec<bool> = (0..endpoints).map(|_| rng.next_u64() & 1 == 1).collect();
    let marker_names: Vec<String> = (0..markers).map(|m| marker_name(me, m)).collect();
    let mut marker_state = vec![false; markers];
    let mut toggles: Vec<(usize, bool, u64)> = Vec::new();
    let mut marker_k = 0usize;
    let mut before = Counters::default();
    let mut seen_before = (0u64, 0u64, 0u64);

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["report"] => {
                for (e, s) in names.iter().zip(&state) {
                    handle.set_health(e, Some(*s))?;
                }
                for m in &marker_names {
                    handle.set_health(m, Some(false))?;
                }
                let t = Instant::now();
                loop {
                    let (members, ready, marks) = rt.block_on(async {
                        let members = handle.members().await?.iter().filter(|m| m.active).count();
                        let decisions = handle.decisions().await?;
                        let ready = decisions
                            .iter()
                            .filter(|(e, d)| {
                                e.starts_with("ep") && d.total_reports as usize == nodes
                            })
                            .count();
                        let marks = decisions
                            .iter()
                            .filter(|(e, d)| {
                                parse_marker(e).is_some_and(|(owner, _)| {
                                    d.total_reports == 1
                                        && (owner == me || d.source == Source::Global)
                                })
                            })
                            .count();
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((members, ready, marks))
                    })?;
                    if members == nodes && ready == endpoints && marks == nodes * markers {
                        break;
                    }
                    if t.elapsed() > Duration::from_secs(300) {
                        return Err(format!(
                            "not converged in 300 s: {members} members, {ready} endpoints, {marks} markers"
                        )
                        .into());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let converged = t.elapsed();
                // Every own key written once and the KV writes settled, so that the setup's
                // writes do not run into the first step.
                let mut last = (u64::MAX, Instant::now());
                loop {
                    let ok = rt.block_on(counters(&handle))?.kv_ok;
                    if ok != last.0 {
                        last = (ok, Instant::now());
                    } else if ok >= (endpoints + markers) as u64
                        && last.1.elapsed() > Duration::from_secs(1)
                    {
                        break;
                    }
                    if t.elapsed() > Duration::from_secs(300) {
                        return Err(
                            format!("KV writes not settled in 300 s: {ok} acknowledged").into()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                writeln!(
                    out,
                    "converged {:.1} {:.1}",
                    converged.as_secs_f64(),
                    t.elapsed().as_secs_f64()
                )?;
            }
            ["step", rate, start_ms, window_ms, tick_us, marker_us] => {
                let rate: f64 = rate.parse()?;
                let start = UNIX_EPOCH + Duration::from_millis(start_ms.parse()?);
                let window = Duration::from_millis(window_ms.parse()?);
                let tick = Duration::from_micros(tick_us.parse()?);
                let marker_every = Duration::from_micros(marker_us.parse()?);
                toggles.clear();
                {
                    let mut s = seen.lock().unwrap();
                    s.arrivals.clear();
                    seen_before = (s.lagged, s.member_down, s.disconnected);
                }
                before = rt.block_on(counters(&handle))?;
                if let Ok(wait) = start.duration_since(SystemTime::now()) {
                    std::thread::sleep(wait);
                }
                let t0 = Instant::now();
                // A node that fell behind catches up by at most 4 ticks' worth per tick.
                let burst = ((rate * tick.as_secs_f64() * 4.0).ceil() as u64).max(1);
                let mut issued = 0u64;
                let mut next_marker = Duration::ZERO;
                loop {
                    let elapsed = t0.elapsed();
                    if elapsed >= window {
                        break;
                    }
                    let due = (elapsed.as_secs_f64() * rate) as u64;
                    for _ in 0..due.saturating_sub(issued).min(burst) {
                        let e = rng.below(endpoints as u64) as usize;
                        state[e] = !state[e];
                        handle.set_health(&names[e], Some(state[e]))?;
                        issued += 1;
                    }
                    if elapsed >= next_marker {
                        let m = marker_k % markers;
                        marker_k += 1;
                        marker_state[m] = !marker_state[m];
                        toggles.push((m, marker_state[m], unix_nanos(SystemTime::now())));
                        handle.set_health(&marker_names[m], Some(marker_state[m]))?;
                        next_marker += marker_every;
                        if next_marker < elapsed {
                            next_marker = elapsed + marker_every;
                        }
                    }
                    let spent = t0.elapsed() - elapsed;
                    std::thread::sleep(tick.saturating_sub(spent));
                }
                let (published, received) = messages(&handle);
                // How long a command waits in the driver's queue now: a stats round trip.
                let asked = Instant::now();
                rt.block_on(handle.stats())?;
                writeln!(
                    out,
                    "done {issued} {} {} {} {:.1}",
                    toggles.len(),
                    published - before.published,
                    received - before.received,
                    asked.elapsed().as_secs_f64() * 1e3,
                )?;
            }
            ["collect"] => {
                let after = rt.block_on(counters(&handle))?;
                for (m, v, t) in &toggles {
                    writeln!(out, "T {m} {} {t}", u8::from(*v))?;
                }
                let s = seen.lock().unwrap();
                for (owner, m, v, t) in &s.arrivals {
                    writeln!(out, "A {owner} {m} {} {t}", u8::from(*v))?;
                }
                writeln!(
                    out,
                    "C slow={} lost={} resyncs={} stale={} applied={} kv_ok={} kv_err={} published={} queue_full={} lagged={} down={} disconnected={}",
                    after.slow - before.slow,
                    after.lost - before.lost,
                    after.resyncs - before.resyncs,
                    after.stale - before.stale,
                    after.applied - before.applied,
                    after.kv_ok - before.kv_ok,
                    after.kv_err - before.kv_err,
                    after.published - before.published,
                    after.queue_full - before.queue_full,
                    s.lagged - seen_before.0,
                    s.member_down - seen_before.1,
                    s.disconnected - seen_before.2,
                )?;
                writeln!(out, "end")?;
            }
            ["quit"] => break,
            _ => return Err(format!("unknown command {line:?}").into()),
        }
        out.flush()?;
    }
    rt.block_on(handle.shutdown());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

/// The node processes, their stdins and one channel of every line they print.
struct Nodes {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    /// (node, line); `None` when the node's stdout closed.
    lines: Receiver<(usize, Option<String>)>,
}

impl Nodes {
    fn spawn(a: &Args, urls: &[String]) -> Res<Nodes> {
        let exe = std::env::current_exe()?;
        let (tx, lines) = mpsc::channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for i in 0..a.nodes {
            let mut cmd = Command::new(&exe);
            cmd.args([
                "--node".to_owned(),
                i.to_string(),
                a.nodes.to_string(),
                a.endpoints.to_string(),
                a.markers.to_string(),
                a.policy.clone(),
                urls.join(","),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
            gslb_state_tests::die_with_parent(&mut cmd);
            let mut child = cmd.spawn()?;
            stdins.push(child.stdin.take().ok_or("no stdin")?);
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send((i, Some(l))).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = tx.send((i, None));
            });
            children.push(child);
        }
        Ok(Nodes {
            children,
            stdins,
            lines,
        })
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn send(&mut self, line: &str) -> Res<()> {
        for stdin in &mut self.stdins {
            writeln!(stdin, "{line}")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Every line of every node up to and including its first line that starts with `last`.
    fn until(&self, last: &str, timeout: Duration) -> Res<Vec<Vec<String>>> {
        let deadline = Instant::now() + timeout;
        let mut got: Vec<Vec<String>> = vec![Vec::new(); self.children.len()];
        let mut finished = vec![false; self.children.len()];
        while finished.iter().any(|f| !f) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (i, line) = self.lines.recv_timeout(left).map_err(|_| {
                let waiting: Vec<usize> = (0..finished.len()).filter(|i| !finished[*i]).collect();
                format!("nodes {waiting:?}: no {last:?} within {timeout:?}")
            })?;
            let line =
                line.ok_or_else(|| format!("node {i} exited while we waited for {last:?}"))?;
            if line.starts_with(last) {
                finished[i] = true;
            }
            got[i].push(line);
        }
        Ok(got)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// (busy, total) jiffies of the whole host, from `/proc/stat`.
fn host_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// The servers' `slow_consumers` in `/varz`, summed.
fn server_slow_consumers(cluster: &NatsCluster) -> u64 {
    cluster
        .servers()
        .iter()
        .filter_map(|s| s.monitor_json("/varz").ok()?["slow_consumers"].as_u64())
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one step measured.
struct StepResult {
    passed: bool,
    node_cpu_mean: f64,
    rss_max_mb: f64,
}

fn run_step(
    a: &Args,
    nodes: &mut Nodes,
    cluster: &NatsCluster,
    server_pids: &[u32],
    rate: u64,
) -> Res<StepResult> {
    let n = a.nodes;
    let per_node = rate as f64 / n as f64;
    let start = SystemTime::now() + Duration::from_millis(500);
    let start_ms = start.duration_since(UNIX_EPOCH)?.as_millis();
    let slow_servers_before = server_slow_consumers(cluster);
    nodes.send(&format!(
        "step {per_node} {start_ms} {} {} {}",
        a.window.as_millis(),
        a.tick.as_micros(),
        a.marker_every.as_micros()
    ))?;
    if let Ok(wait) = start.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    let pids = nodes.pids();
    let t0 = Instant::now();
    let node_cpu0: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let server_cpu0: Vec<u64> = server_pids.iter().map(|p| cpu_ticks(*p)).collect();
    let host0 = host_ticks();
    // The window on our clock; the nodes report when they are done (after a round trip
    // through their drivers' command queues, which may be long).
    std::thread::sleep(a.window.saturating_sub(t0.elapsed()));
    let wall = t0.elapsed().as_secs_f64();
    let hz = clock_ticks_per_sec();
    let pct = |before: u64, after: u64| (after.saturating_sub(before)) as f64 / hz / wall * 100.0;
    let node_cpu: Vec<f64> = pids
        .iter()
        .zip(&node_cpu0)
        .map(|(p, b)| pct(*b, cpu_ticks(*p)))
        .collect();
    let server_cpu: Vec<f64> = server_pids
        .iter()
        .zip(&server_cpu0)
        .map(|(p, b)| pct(*b, cpu_ticks(*p)))
        .collect();
    let host1 = host_ticks();
    let host_busy = (host1.0 - host0.0) as f64 / (host1.1 - host0.1).max(1) as f64 * 100.0;
    // The host's busy time not spent by the nodes or the servers (this parent, other work on
    // the machine), in % of one core.
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let others =
        (host_busy * cores as f64 - node_cpu.iter().sum::<f64>() - server_cpu.iter().sum::<f64>())
            .max(0.0);
    let rss_max_mb = pids
        .iter()
        .map(|p| proc_status_kb(*p, "VmRSS:").unwrap_or(0))
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    let done = nodes.until("done", Duration::from_secs(120))?;
    let issued: u64 = done
        .iter()
        .filter_map(|lines| lines.last()?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    let achieved = issued as f64 / a.window.as_secs_f64();
    // At the end of the window: how long a command waits in a driver's queue (the senders'
    // side), and messages published but not yet handed to a receiver's core (clients,
    // servers, subscription channels).
    let done_fields = |k: usize| -> Vec<f64> {
        done.iter()
            .filter_map(|lines| lines.last()?.split_whitespace().nth(k)?.parse::<f64>().ok())
            .collect()
    };
    let toggled: f64 = done_fields(2).iter().sum();
    let published: f64 = done_fields(3).iter().sum();
    let received: f64 = done_fields(4).iter().sum();
    let queue_ms = done_fields(5).into_iter().fold(0.0, f64::max);
    let receiver_backlog = (published * (a.nodes as f64 - 1.0) - received).max(0.0);
    let reports_per_message = (issued as f64 + toggled) / published.max(1.0);

    std::thread::sleep(a.grace);
    let slow_servers = server_slow_consumers(cluster).saturating_sub(slow_servers_before);
    nodes.send("collect")?;
    let collected = nodes.until("end", Duration::from_secs(60))?;

    // Toggles per (owner, marker), in time order; arrivals per receiver.
    let mut toggles: HashMap<(usize, usize), Vec<(bool, u64)>> = HashMap::new();
    let mut arrivals: Vec<Vec<(usize, usize, bool, u64)>> = vec![Vec::new(); n];
    let mut counters: HashMap<String, u64> = HashMap::new();
    for (i, lines) in collected.iter().enumerate() {
        for line in lines {
            let w: Vec<&str> = line.split_whitespace().collect();
            let num = |k: usize| w.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match w.first() {
                Some(&"T") => toggles
                    .entry((i, num(1) as usize))
                    .or_default()
                    .push((num(2) == 1, num(3))),
                Some(&"A") => {
                    arrivals[i].push((num(1) as usize, num(2) as usize, num(3) == 1, num(4)))
                }
                Some(&"C") => {
                    for kv in &w[1..] {
                        if let Some((k, v)) = kv.split_once('=') {
                            *counters.entry(k.to_owned()).or_default() +=
                                v.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let total_toggles: usize = toggles.values().map(Vec::len).sum();
    let mut all_lags: Vec<Duration> = Vec::new();
    let mut worst_p99 = Duration::ZERO;
    let mut worst_max = Duration::ZERO;
    let mut missing = 0usize;
    for (r, got) in arrivals.iter().enumerate() {
        let mut matched: HashMap<(usize, usize), Vec<Option<Duration>>> = toggles
            .iter()
            .filter(|((owner, _), _)| *owner != r)
            .map(|(k, v)| (*k, vec![None; v.len()]))
            .collect();
        for (owner, m, healthy, at) in got {
            let Some(list) = toggles.get(&(*owner, *m)) else {
                continue;
            };
            // The latest toggle of this marker to this verdict, set before the arrival.
            if let Some(k) = (0..list.len())
                .rev()
                .find(|k| list[*k].0 == *healthy && list[*k].1 <= *at)
            {
                let slot = &mut matched.get_mut(&(*owner, *m)).unwrap()[k];
                if slot.is_none() {
                    *slot = Some(Duration::from_nanos(at - list[k].1));
                }
            }
        }
        let mut lags: Vec<Duration> = Vec::new();
        for slots in matched.values() {
            for s in slots {
                match s {
                    Some(d) => lags.push(*d),
                    None => missing += 1,
                }
            }
        }
        lags.sort();
        worst_p99 = worst_p99.max(percentile(&lags, 0.99));
        worst_max = worst_max.max(lags.last().copied().unwrap_or_default());
        all_lags.extend(lags);
    }
    all_lags.sort();
    let c = |k: &str| counters.get(k).copied().unwrap_or(0);
    let lost = c("slow") + c("lost") + slow_servers;
    let mut why: Vec<String> = Vec::new();
    if worst_p99 > MAX_LAG || worst_max > MAX_LAG {
        why.push(format!(
            "lag > 1 s (worst node p99 {:.0} ms, max {:.0} ms)",
            ms(worst_p99),
            ms(worst_max)
        ));
    }
    if missing > 0 {
        why.push(format!("{missing} marker arrivals missing"));
    }
    if lost > 0 {
        why.push(format!(
            "messages lost (node slow-consumer {}, core lost {}, server slow consumers {slow_servers})",
            c("slow"),
            c("lost")
        ));
    }
    if c("lagged") > 0 {
        why.push(format!("{} events missed by the application", c("lagged")));
    }
    if achieved < MIN_ACHIEVED * rate as f64 {
        why.push(format!(
            "generator behind ({:.0} % of offered)",
            achieved / rate as f64 * 100.0
        ));
    }
    let passed = why.is_empty();
    let node_cpu_mean = node_cpu.iter().sum::<f64>() / n as f64;
    let node_cpu_max = node_cpu.iter().copied().fold(0.0, f64::max);
    let servers: Vec<String> = server_cpu.iter().map(|c| format!("{c:.0}")).collect();
    println!(
        "offered {rate:>7}/s achieved {achieved:>8.0}/s | lag p50 {:>6.1} p99 {:>7.1} max {:>7.1} ms ({} samples, {missing} missing) | \
         slow {lost} | node CPU mean {node_cpu_mean:>3.0}% max {node_cpu_max:>3.0}% | node RSS max {rss_max_mb:>4.0} MB | \
         nats CPU {}% (sum {:.0}%) | host busy {host_busy:.0}% of {cores} cores, {others:.0}% not ours | {}",
        ms(percentile(&all_lags, 0.50)),
        ms(percentile(&all_lags, 0.99)),
        ms(all_lags.last().copied().unwrap_or_default()),
        all_lags.len(),
        servers.join("/"),
        server_cpu.iter().sum::<f64>(),
        if passed {
            "PASS".to_owned()
        } else {
            format!("FAIL: {}", why.join("; "))
        }
    );
    let per_s = |k: &str| c(k) as f64 / (a.window + a.grace).as_secs_f64();
    // CPU time per change issued, in µs: the nodes (sender and receivers) and the servers.
    let per_change = |pct: f64| pct / 100.0 * wall * 1e6 / (issued.max(1) as f64);
    println!(
        "    cpu per change: nodes {:.1} us, servers {:.1} us (window {wall:.1} s); at the window's end: a command waits \
         {queue_ms:.0} ms in the slowest driver's queue, {receiver_backlog:.0} messages published but not yet received; \
         {reports_per_message:.1} reports per message published",
        per_change(node_cpu.iter().sum::<f64>()),
        per_change(server_cpu.iter().sum::<f64>()),
    );
    println!(
        "    detail: {total_toggles} toggles; over window + grace: KV writes {:.0}/s ok ({} errors), report messages published {:.0}/s, \
         reports applied {:.0}/s per node, re-syncs {}, stale reads {}, output-queue-full {}, member-down {}, disconnects {}",
        per_s("kv_ok"),
        c("kv_err"),
        per_s("published"),
        per_s("applied") / n as f64,
        c("resyncs"),
        c("stale"),
        c("queue_full"),
        c("down"),
        c("disconnected"),
    );
    Ok(StepResult {
        passed,
        node_cpu_mean,
        rss_max_mb,
    })
}

fn parent_main(a: Args) -> Res<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sustained: {} nodes x {} endpoints, {} markers each toggled round robin every {} ms, {} s windows, ticks of {} ms, policy {}; load average {}",
        a.nodes,
        a.endpoints,
        a.markers,
        a.marker_every.as_millis(),
        a.window.as_secs_f64(),
        a.tick.as_secs_f64() * 1e3,
        a.policy,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cluster = NatsCluster::start(3, ServerOpts::default())?;
    let server_pids: Vec<u32> = cluster.servers().iter().filter_map(|s| s.pid()).collect();
    let mut nodes = Nodes::spawn(&a, &cluster.urls())?;
    let t = Instant::now();
    nodes.until("ready", Duration::from_secs(90))?;
    nodes.send("report")?;
    let converged = nodes.until("converged", Duration::from_secs(330))?;
    let max_field = |k: usize| {
        converged
            .iter()
            .filter_map(|l| l.last()?.split_whitespace().nth(k)?.parse::<f64>().ok())
            .fold(0.0, f64::max)
    };
    println!(
        "setup: {} nodes x {} endpoints reported; every node counts every report within {:.1} s, \
         every node's own writes acknowledged by the KV within {:.1} s (setup {:.1} s in all)",
        a.nodes,
        a.endpoints,
        max_field(1),
        max_field(2),
        t.elapsed().as_secs_f64(),
    );
    let mut best: Option<(u64, StepResult)> = None;
    for &rate in &a.rates {
        let result = run_step(&a, &mut nodes, &cluster, &server_pids, rate)?;
        if !result.passed {
            break;
        }
        best = Some((rate, result));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    match best {
        Some((rate, r)) => println!(
            "sustained: {rate} changes/s ({} nodes x {} endpoints), node CPU {:.0}%, RSS {:.0} MB",
            a.nodes, a.endpoints, r.node_cpu_mean, r.rss_max_mb
        ),
        None => println!(
            "sustained: 0 changes/s ({} nodes x {} endpoints): no step passed",
            a.nodes, a.endpoints
        ),
    }
    println!(
        "load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = nodes.send("quit");
    let deadline = Instant::now() + Duration::from_secs(10);
    for child in &mut nodes.children {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--node") {
        if let Err(e) = node_main(&args[1..]) {
            eprintln!("sustained node {}: {e}", args.get(1).map_or("?", |s| s));
            std::process::exit(1);
        }
        return Ok(());
    }
    parent_main(parse_args(args.into_iter())?)
}
