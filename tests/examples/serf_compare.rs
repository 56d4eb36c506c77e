//! gslb-state beside Serf, the gossip peer operators reach for, at the same cluster sizes on
//! this machine's loopback (run by `scripts/bench-serf`, which installs Serf when missing):
//!
//! ```text
//! cargo run --release -p gslb-state-tests --example serf_compare -- [SIZES...]   # default: 5 20
//! ```
//!
//! For each size N, three measurements on each side, every one "until every other member
//! knows", in wall-clock time:
//!
//! 1. **A state change reaching all members**: a gslb-state health flip (`set_health` to the
//!    `Decision` event at the last of the N - 1 others) against a Serf user event (`serf
//!    event` to its event handler having run at the last of the N - 1 others; the handler is a
//!    process Serf forks, which costs it about a millisecond).
//! 2. **A crashed member noticed by all**: a gslb-state node stopped without a word (no leave;
//!    heartbeat interval 1 s, TTL 3 s) against a Serf agent killed with SIGKILL (Serf's LAN
//!    defaults: probes every 1 s, suspicion before failure), until every other agent lists it
//!    as `failed` (polled over RPC: the membership itself, ahead of the agent's coalescing of
//!    member events for its handlers).
//! 3. **A graceful leave**: `Handle::shutdown` (announces the leave) against `serf leave`,
//!    until every other agent lists it as `left`.
//!
//! User events are sent with `-coalesce=false`.
//!
//! gslb-state's nodes run on a 3-server nats-server cluster (R3 buckets), in this process;
//! Serf's agents are N processes. Each line prints both and their ratio (Serf / ours).

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gslb_state_core::Config;
use gslb_state_nats::{Event, Handle, NodeOptions};
use gslb_state_tests::{DEFAULT_DOMAIN, NatsCluster, ServerOpts};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const FLIPS: usize = 20;
const DEADLINE: Duration = Duration::from_secs(60);

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn free_ports(n: usize) -> Res<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

/// Median and worst of each measurement, in ms.
struct Figures {
    change: (f64, f64),
    crash: f64,
    leave: f64,
}

// ---- gslb-state ----

fn config(urls: &[String]) -> Res<Config> {
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    Ok(Config::from_yaml(&format!(
        "cluster:\n  id: \"serfcmp\"\n\
         state:\n  healthPolicy: \"global-any-healthy\"\n  heartbeatInterval: \"1s\"\n  heartbeatTTL: \"3s\"\n\
         nats:\n  servers: [{}]\n  jetStream:\n    domain: \"{DEFAULT_DOMAIN}\"\n",
        servers.join(", ")
    ))?)
}

/// Waits until `cond` holds for every receiver's events (polled); returns when it did.
async fn until_all(
    rxs: &mut [tokio::sync::broadcast::Receiver<Event>],
    mut done: impl FnMut(usize, &Event) -> bool,
) -> Res<u128> {
    let mut seen = vec![false; rxs.len()];
    let mut last = 0;
    let start = Instant::now();
    while seen.iter().any(|s| !s) {
        for (i, rx) in rxs.iter_mut().enumerate() {
            while let Ok(e) = rx.try_recv() {
                if !seen[i] && done(i, &e) {
                    seen[i] = true;
                    last = unix_ns();
                }
            }
        }
        if start.elapsed() > DEADLINE {
            return Err("gslb-state: not every member knew within 60 s".into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Ok(last)
}

async fn ours(cluster: &NatsCluster, n: usize) -> Res<Figures> {
    let config = config(&cluster.urls())?;
    let nodes: Vec<Handle> = (0..n)
        .map(|i| Handle::start(NodeOptions::new(config.clone(), &format!("g{n}-{i}"))))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    for node in &nodes {
        while node.members().await?.iter().filter(|m| m.active).count() < n {
            if start.elapsed() > DEADLINE {
                return Err("gslb-state: members did not converge".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // 1. Flips by node 0, seen by 1..n.
    let mut change = Vec::new();
    for k in 0..FLIPS {
        let mut rxs: Vec<_> = nodes[1..].iter().map(Handle::subscribe).collect();
        let ep = format!("ep{k}");
        let t0 = unix_ns();
        nodes[0].set_health(&ep, Some(true))?;
        let last = until_all(
            &mut rxs,
            |_, e| matches!(e, Event::Decision { endpoint, .. } if *endpoint == ep),
        )
        .await?;
        change.push(ms(last - t0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 2. The last node stops without a word.
    let crashed = nodes[n - 1].node_id().to_owned();
    let mut rxs: Vec<_> = nodes[..n - 1].iter().map(Handle::subscribe).collect();
    let t0 = unix_ns();
    nodes[n - 1].shutdown_quietly().await;
    let last = until_all(
        &mut rxs,
        |_, e| matches!(e, Event::MemberDown { node, .. } if *node == crashed),
    )
    .await?;
    let crash = ms(last - t0);
    // 3. The one before it leaves.
    let leaving = nodes[n - 2].node_id().to_owned();
    let mut rxs: Vec<_> = nodes[..n - 2].iter().map(Handle::subscribe).collect();
    let t0 = unix_ns();
    nodes[n - 2].shutdown().await;
    let last = until_all(
        &mut rxs,
        |_, e| matches!(e, Event::MemberDown { node, .. } if *node == leaving),
    )
    .await?;
    let leave = ms(last - t0);
    for node in &nodes[..n - 2] {
        node.shutdown().await;
    }
    let worst = change.iter().copied().fold(0.0, f64::max);
    Ok(Figures {
        change: (median(change), worst),
        crash,
        leave,
    })
}

// ---- Serf ----

struct Agents {
    children: Vec<Option<Child>>,
    rpc: Vec<u16>,
    log: PathBuf,
    serf: PathBuf,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agents {
    /// Lines of the handlers' log: (unix ns, node, event, detail).
    fn lines(&self) -> Vec<(u128, String, String, String)> {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                let mut it = l.splitn(4, ' ');
                let t = it.next()?.parse().ok()?;
                Some((
                    t,
                    it.next()?.to_owned(),
                    it.next()?.to_owned(),
                    it.next().unwrap_or("").to_owned(),
                ))
            })
            .collect()
    }

    /// When the last of `nodes` logged `event` with `detail` in it (after `t0`).
    fn until_all(&self, nodes: &[String], event: &str, detail: &str, t0: u128) -> Res<u128> {
        let start = Instant::now();
        loop {
            let lines = self.lines();
            let mut last = 0;
            let all = nodes.iter().all(|n| {
                lines
                    .iter()
                    .find(|(t, node, e, d)| {
                        *t >= t0 && node == n && e == event && d.contains(detail)
                    })
                    .map(|(t, ..)| last = last.max(*t))
                    .is_some()
            });
            if all {
                return Ok(last);
            }
            if start.elapsed() > DEADLINE {
                return Err(
                    format!("serf: not every member logged {event} {detail} within 60 s").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// When every agent of `idxs` first listed `name` with `status` (polled over RPC, after
    /// `t0`): the membership itself, ahead of the agent's event coalescing.
    fn until_status(&self, idxs: &[usize], name: &str, status: &str) -> Res<u128> {
        let start = Instant::now();
        let mut seen = vec![false; idxs.len()];
        let mut last = 0;
        while seen.iter().any(|s| !s) {
            for (k, &i) in idxs.iter().enumerate() {
                if seen[k] {
                    continue;
                }
                let out = Command::new(&self.serf)
                    .arg("members")
                    .arg(format!("-rpc-addr=127.0.0.1:{}", self.rpc[i]))
                    .arg(format!("-status={status}"))
                    .arg(format!("-name=^{name}$"))
                    .output()?;
                if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                    seen[k] = true;
                    last = unix_ns();
                }
            }
            if start.elapsed() > DEADLINE {
                return Err(
                    format!("serf: not every member saw {name} {status} within 60 s").into(),
                );
            }
        }
        Ok(last)
    }

    fn cmd(&self, i: usize, args: &[&str]) -> Res<()> {
        let rpc = format!("-rpc-addr=127.0.0.1:{}", self.rpc[i]);
        let out = Command::new(&self.serf)
            .args(&args[..1])
            .arg(rpc)
            .args(&args[1..])
            .output()?;
        if !out.status.success() {
            return Err(format!("serf {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    }
}

fn serf_agents(serf: &Path, dir: &Path, n: usize) -> Res<Agents> {
    let log = dir.join(format!("events-{n}.log"));
    let handler = dir.join("handler.sh");
    // One line per event: time, this node, event, and for member events the members named
    // on stdin (for a user event, its name).
    std::fs::write(
        &handler,
        format!(
            "#!/bin/sh\nt=$(date +%s%N)\nif [ \"$SERF_EVENT\" = user ]; then d=\"$SERF_USER_EVENT\"; else d=$(cut -f1 | tr '\\n' ','); fi\necho \"$t $SERF_SELF_NAME $SERF_EVENT $d\" >> {}\n",
            log.display()
        ),
    )?;
    Command::new("chmod").arg("+x").arg(&handler).status()?;
    let ports = free_ports(2 * n)?;
    let mut agents = Agents {
        children: Vec::new(),
        rpc: Vec::new(),
        log,
        serf: serf.to_owned(),
    };
    for i in 0..n {
        let bind = ports[2 * i];
        let rpc = ports[2 * i + 1];
        let mut c = Command::new(serf);
        c.arg("agent")
            .arg(format!("-node=s{n}-{i}"))
            .arg(format!("-bind=127.0.0.1:{bind}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
            .arg(format!("-event-handler={}", handler.display()))
            .arg("-log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if i > 0 {
            c.arg(format!("-join=127.0.0.1:{}", ports[0]));
        }
        agents.children.push(Some(c.spawn()?));
        agents.rpc.push(rpc);
        if i == 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Every agent sees n alive members.
    let start = Instant::now();
    for i in 0..n {
        loop {
            let out = Command::new(serf)
                .arg("members")
                .arg(format!("-rpc-addr=127.0.0.1:{}", agents.rpc[i]))
                .arg("-status=alive")
                .output()?;
            if String::from_utf8_lossy(&out.stdout).lines().count() == n {
                break;
            }
            if start.elapsed() > DEADLINE {
                return Err("serf: members did not converge".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(agents)
}

fn serfs(serf: &Path, dir: &Path, n: usize) -> Res<Figures> {
    let mut a = serf_agents(serf, dir, n)?;
    let names: Vec<String> = (0..n).map(|i| format!("s{n}-{i}")).collect();
    let mut change = Vec::new();
    for k in 0..FLIPS {
        let ev = format!("flip{k}");
        let t0 = unix_ns();
        a.cmd(0, &["event", "-coalesce=false", &ev])?;
        let last = a.until_all(&names[1..], "user", &ev, t0)?;
        change.push(ms(last - t0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let t0 = unix_ns();
    if let Some(mut c) = a.children[n - 1].take() {
        c.kill()?;
        c.wait()?;
    }
    let others: Vec<usize> = (0..n - 1).collect();
    let last = a.until_status(&others, &names[n - 1], "failed")?;
    let crash = ms(last - t0);
    let t0 = unix_ns();
    a.cmd(n - 2, &["leave"])?;
    let others: Vec<usize> = (0..n - 2).collect();
    let last = a.until_status(&others, &names[n - 2], "left")?;
    let leave = ms(last - t0);
    let worst = change.iter().copied().fold(0.0, f64::max);
    Ok(Figures {
        change: (median(change), worst),
        crash,
        leave,
    })
}

#[tokio::main]
async fn main() -> Res<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() { vec![5, 20] } else { sizes };
    let serf = PathBuf::from(std::env::var("SERF_BIN").unwrap_or_else(|_| "serf".to_owned()));
    let dir = tempfile::tempdir()?;
    let cluster = NatsCluster::start(3, ServerOpts::default())?;
    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "", "gslb-state", "serf", "serf / ours"
    );
    for n in sizes {
        if n < 3 {
            return Err("sizes of at least 3".into());
        }
        let g = ours(&cluster, n).await?;
        let s = serfs(&serf, dir.path(), n)?;
        let row = |what: &str, ours: f64, serf: f64| {
            println!(
                "{:<44} {:>9.2} ms {:>9.2} ms {:>12.2}",
                format!("{n} members: {what}"),
                ours,
                serf,
                serf / ours
            )
        };
        row("change reaches all, median", g.change.0, s.change.0);
        row("change reaches all, worst", g.change.1, s.change.1);
        row("crash noticed by all", g.crash, s.crash);
        row("graceful leave seen by all", g.leave, s.leave);
    }
    Ok(())
}
