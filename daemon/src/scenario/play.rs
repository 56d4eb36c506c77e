//! Playing a scenario: the NATS topology, the daemons, the events in real time, and the
//! expectations checked by watchers that poll a daemon around each expectation's instant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gslb_state_core::{Decision, Source};
use gslb_state_sim::report;
use gslb_state_sim::scenario::{EventKind, Expect, NS_PER_MS, Scenario, fmt_time};
use gslb_state_sim::world::ExpectOutcome;
use gslb_state_sim::yaml::ScenarioFile;
use gslb_state_tests::{LinkMode, NatsCluster, NatsServer, Proxy, RouteLinks, ServerOpts};

use super::TOLERANCE;
use super::node::Node;

/// How often a watcher looks at a daemon within its window.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// HTTP timeout of a watcher's look.
const LOOK_TIMEOUT: Duration = Duration::from_millis(500);

/// What a played scenario leaves.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One per expectation, in the scenario's order.
    pub expects: Vec<ExpectOutcome>,
    /// What was played when, in words.
    pub log: Vec<String>,
    /// The same, and each expectation's verdict, as JSON lines.
    pub json_lines: Vec<String>,
    /// What could not be played as written and was left out (the simulator's network).
    pub notes: Vec<String>,
    /// The node's explanation of the endpoint, for each failed expectation on one (by
    /// expectation index), fetched when its window closed.
    pub explanations: BTreeMap<usize, String>,
}

/// The NATS side: one server, or one server per node in a cluster with proxied routes (when
/// the scenario partitions), and one proxy per node between its daemon and its server.
struct Topology {
    single: Option<NatsServer>,
    cluster: Option<(NatsCluster, RouteLinks)>,
    client_links: Vec<Proxy>,
}

impl Topology {
    fn start(s: &Scenario) -> Result<Topology, String> {
        let partitions = s
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Partition { .. }));
        let opts = ServerOpts::default();
        let (single, cluster, ports): (_, _, Vec<u16>) = if partitions {
            let (cluster, links) = NatsCluster::start_with_route_proxies(s.nodes.len(), opts)
                .map_err(|e| e.to_string())?;
            let ports = cluster
                .servers()
                .iter()
                .map(NatsServer::client_port)
                .collect();
            (None, Some((cluster, links)), ports)
        } else {
            let server = NatsServer::single(opts).map_err(|e| e.to_string())?;
            let ports = vec![server.client_port(); s.nodes.len()];
            (Some(server), None, ports)
        };
        let client_links = ports
            .iter()
            .map(|&p| Proxy::start(p).map_err(|e| format!("cannot start a proxy: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Topology {
            single,
            cluster,
            client_links,
        })
    }

    fn servers(&self) -> Vec<&NatsServer> {
        match (&self.single, &self.cluster) {
            (Some(s), _) => vec![s],
            (None, Some((c, _))) => c.servers().iter().collect(),
            (None, None) => Vec::new(),
        }
    }

    fn broker(&self, up: bool) -> Result<(), String> {
        match (&self.single, &self.cluster, up) {
            (_, Some((cluster, _)), true) => cluster.restart_stopped(),
            (Some(server), _, true) => server.restart(),
            _ => self.servers().into_iter().try_for_each(NatsServer::kill),
        }
        .map_err(|e| e.to_string())
    }
}

/// The configuration file of node `id`: the scenario's `state.*`, its region, NATS through
/// its proxy, its API on a port of its own choosing.
fn node_yaml(s: &Scenario, id: &str, region: &str, proxy_port: u16) -> String {
    let st = &s.state;
    format!(
        "cluster:\n  id: \"scenario\"\nnode:\n  id: {id:?}\n  region: {region:?}\nstate:\n  healthPolicy: \"{}\"\n  quorumMinPercent: {}\n  heartbeatInterval: \"{}ms\"\n  heartbeatTTL: \"{}ms\"\n  quorumScope: \"{}\"\n  holdUp: \"{}ns\"\n  holdDown: \"{}ns\"\nnats:\n  servers: [\"nats://127.0.0.1:{proxy_port}\"]\n  pingInterval: \"1s\"\n  connectTimeout: \"1s\"\n  jetStream:\n    domain: \"{}\"\nadmin:\n  listen: \"127.0.0.1:0\"\n",
        st.policy,
        st.quorum_min_percent,
        st.heartbeat_interval.as_millis(),
        st.heartbeat_ttl.as_millis(),
        st.quorum_scope,
        st.hold_up.as_nanos(),
        st.hold_down.as_nanos(),
        gslb_state_tests::nats_server::DEFAULT_DOMAIN,
    )
}

/// libfaketime's library, if installed (`FAKETIME_LIB`, or Debian's path).
fn faketime_lib() -> Option<String> {
    std::env::var("FAKETIME_LIB")
        .ok()
        .filter(|p| Path::new(p).is_file())
        .or_else(|| {
            [
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
            ]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .map(str::to_owned)
        })
}

/// Which nodes ever need their wall clock off.
fn clocked_nodes(s: &Scenario) -> Vec<bool> {
    let mut clocked: Vec<bool> = s
        .nodes
        .iter()
        .map(|n| n.clock_offset_ms != 0 || n.drift_ppb != 0)
        .collect();
    for e in &s.events {
        match e.kind {
            EventKind::Clock { node, .. } => clocked[node] = true,
            EventKind::Restart {
                node,
                clock_offset_ms: Some(_),
            } => clocked[node] = true,
            _ => {}
        }
    }
    clocked
}

/// Something to do at a scenario instant.
enum Step {
    Start(usize),
    Event(usize),
}

/// The daemons' admin ports (`None` while not running), shared with the watchers.
type Ports = Arc<Mutex<Vec<Option<u16>>>>;

/// Plays `file`: sets up, replays, checks, tears down.
pub(super) fn play(file: &ScenarioFile) -> Result<Outcome, String> {
    let s = &file.scenario;
    let mut outcome = Outcome::default();
    if s.network != Default::default()
        || s.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Network(_)))
    {
        outcome.notes.push(
            "the network section and network events describe the simulator's network; real \
             loopback is played as it is"
                .into(),
        );
    }
    if s.nodes.iter().any(|n| n.monotonic_offset_ns.is_some()) {
        outcome.notes.push(
            "monotonicOffset is the simulator's: a real process's monotonic clock starts where \
             it starts"
                .into(),
        );
    }
    let clocked = clocked_nodes(s);
    let lib = faketime_lib();
    if clocked.iter().any(|&c| c) && lib.is_none() {
        return Err(
            "a node's wall clock is off (clockOffset, drift, clock events): this needs \
             libfaketime (apt-get install faketime, or FAKETIME_LIB)"
                .into(),
        );
    }
    let bin = std::env::current_exe().map_err(|e| format!("cannot find gslb-state: {e}"))?;
    let dir = tempfile_dir()?;
    let topology = Topology::start(s)?;
    let mut nodes: Vec<Node> = s
        .nodes
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let config = dir.join(format!("{}.yaml", i));
            let yaml = node_yaml(s, &spec.id, &spec.region, topology.client_links[i].port());
            std::fs::write(&config, yaml).map(|()| {
                let faketime = clocked[i].then(|| dir.join(format!("{i}.faketime")));
                Node::new(spec, config, faketime)
            })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot write the daemons' config: {e}"))?;

    // Every node that starts at time 0 is up before the clock starts.
    for (i, node) in nodes.iter_mut().enumerate() {
        if s.nodes[i].start_ns == 0 {
            node.start(&bin, &dir, lib.as_deref(), 0)?;
        }
    }
    let ports: Ports = Arc::new(Mutex::new(nodes.iter_mut().map(Node::port).collect()));
    let mut steps: Vec<(u64, Step)> = s
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.start_ns > 0)
        .map(|(i, n)| (n.start_ns, Step::Start(i)))
        .chain(
            s.events
                .iter()
                .enumerate()
                .map(|(i, e)| (e.at_ns, Step::Event(i))),
        )
        .collect();
    steps.sort_by_key(|(t, _)| *t);

    let t0 = Instant::now();
    let watchers: Vec<_> = s
        .expects
        .iter()
        .enumerate()
        .map(|(i, x)| spawn_watcher(i, x.clone(), t0, ports.clone()))
        .collect();
    for (at_ns, step) in steps {
        sleep_until(t0, at_ns);
        let line = match step {
            Step::Start(n) => {
                nodes[n].start(&bin, &dir, lib.as_deref(), at_ns)?;
                format!("{} starts", nodes[n].id)
            }
            Step::Event(i) => apply(s, i, &mut nodes, &topology, &bin, &dir, lib.as_deref())?,
        };
        let port_now: Vec<Option<u16>> = nodes.iter_mut().map(Node::port).collect();
        *ports.lock().unwrap_or_else(|e| e.into_inner()) = port_now;
        let real_ms = t0.elapsed().as_millis();
        outcome.log.push(format!("{:>9}  {line}", fmt_time(at_ns)));
        outcome.json_lines.push(
            serde_json::json!({"t_ms": at_ns / NS_PER_MS, "real_ms": real_ms, "event": line})
                .to_string(),
        );
    }
    sleep_until(t0, s.duration_ns);
    for w in watchers {
        let (x, explanation) = w
            .join()
            .map_err(|_| "an expectation watcher panicked".to_owned())?;
        if let Some(text) = explanation {
            outcome.explanations.insert(x.index, text);
        }
        let e = &s.expects[x.index];
        outcome.json_lines.push(
            serde_json::json!({
                "t_ms": e.at_ns / NS_PER_MS,
                "node": s.nodes[e.node].id,
                "ok": x.ok,
                "seen": x.seen,
                "why": x.why,
            })
            .to_string(),
        );
        outcome.expects.push(x);
    }
    for node in &mut nodes {
        node.crash();
    }
    drop(topology);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(outcome)
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("gslb-scenario-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map(|()| dir)
        .map_err(|e| format!("cannot create a work directory: {e}"))
}

fn sleep_until(t0: Instant, at_ns: u64) {
    let due = t0 + Duration::from_nanos(at_ns);
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}

/// Plays event `i`; returns it in words.
fn apply(
    s: &Scenario,
    i: usize,
    nodes: &mut [Node],
    topology: &Topology,
    bin: &Path,
    dir: &Path,
    lib: Option<&str>,
) -> Result<String, String> {
    let e = &s.events[i];
    let name = |n: usize| s.nodes[n].id.clone();
    Ok(match &e.kind {
        EventKind::Observe {
            node,
            endpoint,
            healthy,
        } => {
            nodes[*node].observe(endpoint, *healthy);
            let what = match healthy {
                Some(true) => "up",
                Some(false) => "down",
                None => "no more (withdrawn)",
            };
            format!("{} sees {endpoint} {what}", name(*node))
        }
        EventKind::Crash(n) => {
            nodes[*n].crash();
            format!("{} crashes (SIGKILL)", name(*n))
        }
        EventKind::Leave(n) => {
            nodes[*n].leave();
            format!("{} leaves (SIGTERM)", name(*n))
        }
        EventKind::Restart {
            node,
            clock_offset_ms,
        } => {
            if let Some(offset) = clock_offset_ms {
                nodes[*node].step_clock(e.at_ns, *offset);
            }
            nodes[*node].start(bin, dir, lib, e.at_ns)?;
            format!("{} restarts", name(*node))
        }
        EventKind::Broker(up) => {
            topology.broker(*up)?;
            format!("broker {}", if *up { "up" } else { "down" })
        }
        EventKind::Isolate(n) => {
            topology.client_links[*n].set_mode(LinkMode::Reset);
            format!("{} cut off from the broker", name(*n))
        }
        EventKind::Rejoin(n) => {
            topology.client_links[*n].set_mode(LinkMode::Pass);
            format!("{} reconnects to the broker", name(*n))
        }
        EventKind::Partition { groups } => {
            if let Some((_, links)) = &topology.cluster {
                links.partition(groups);
            }
            let names: Vec<String> = groups
                .iter()
                .map(|g| {
                    format!(
                        "[{}]",
                        g.iter().map(|&n| name(n)).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            format!("partition {}", names.join(" | "))
        }
        EventKind::Heal => {
            if let Some((_, links)) = &topology.cluster {
                links.heal();
            }
            "partition healed".into()
        }
        EventKind::Clock {
            node,
            offset_ms,
            drift_ppb,
        } => {
            nodes[*node].set_clock(e.at_ns, *offset_ms, *drift_ppb)?;
            format!("{} clock changed", name(*node))
        }
        EventKind::Network(_) => "network change (simulator only: not played)".into(),
    })
}

/// Watches expectation `index` on its node from `TOLERANCE` before its instant to
/// `TOLERANCE` after: it holds if any look in that window matches; otherwise the look
/// nearest its instant is reported.
fn spawn_watcher(
    index: usize,
    x: Expect,
    t0: Instant,
    ports: Ports,
) -> thread::JoinHandle<(ExpectOutcome, Option<String>)> {
    thread::spawn(move || {
        let at = t0 + Duration::from_nanos(x.at_ns);
        let (from, to) = (at.checked_sub(TOLERANCE).unwrap_or(t0), at + TOLERANCE);
        let now = Instant::now();
        if from > now {
            thread::sleep(from - now);
        }
        let mut nearest: Option<(Duration, ExpectOutcome)> = None;
        loop {
            let look_at = Instant::now();
            let port = ports.lock().unwrap_or_else(|e| e.into_inner())[x.node];
            let (ok, seen, why) = match port.and_then(|p| look(p, &x)) {
                Some((decision, active)) => report::evaluate(&x.checks, decision.as_ref(), &active),
                None => (
                    false,
                    "the node is not running (or does not answer)".to_owned(),
                    "the node is crashed at this time".to_owned(),
                ),
            };
            let outcome = ExpectOutcome {
                index,
                ok,
                seen,
                why,
            };
            if ok {
                return (outcome, None);
            }
            let distance = if look_at > at {
                look_at - at
            } else {
                at - look_at
            };
            if nearest.as_ref().is_none_or(|(d, _)| distance < *d) {
                nearest = Some((distance, outcome));
            }
            if Instant::now() >= to {
                let explanation = x.checks.endpoint.as_ref().and_then(|endpoint| {
                    let port = ports.lock().unwrap_or_else(|e| e.into_inner())[x.node]?;
                    super::explain::fetch(port, endpoint)
                });
                return (nearest.expect("looked at least once").1, explanation);
            }
            thread::sleep(POLL_EVERY);
        }
    })
}

/// One look at the daemon on `port`: its decision for the checked endpoint (`None` when it
/// does not know it) and its active members; `None` when it does not answer.
fn look(port: u16, x: &Expect) -> Option<(Option<Decision>, Vec<String>)> {
    let get = |path: &str| -> Option<(u16, serde_json::Value)> {
        let (status, body) = gslb_state_tests::http::get(port, path, LOOK_TIMEOUT).ok()?;
        Some((status, serde_json::from_str(&body).unwrap_or_default()))
    };
    let decision = match &x.checks.endpoint {
        Some(endpoint) => {
            let (status, v) = get(&format!("/v1/decisions/{endpoint}"))?;
            match status {
                200 => Some(decision_of(&v)?),
                404 => None,
                _ => return None,
            }
        }
        None => None,
    };
    let active = if x.checks.active_members.is_some() {
        let (status, v) = get("/v1/members")?;
        if status != 200 {
            return None;
        }
        let mut ids: Vec<String> = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["active"] == true)
            .filter_map(|m| m["node"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    } else {
        Vec::new()
    };
    Some((decision, active))
}

/// A decision from the API's JSON.
pub(super) fn decision_of(v: &serde_json::Value) -> Option<Decision> {
    let source = match v["source"].as_str()? {
        "local" => Source::Local,
        "global" => Source::Global,
        "fallback-local" => Source::FallbackLocal,
        _ => Source::Unknown,
    };
    Some(Decision {
        healthy: v["healthy"].as_bool(),
        source,
        healthy_reports: u32::try_from(v["healthy_reports"].as_u64()?).ok()?,
        total_reports: u32::try_from(v["total_reports"].as_u64()?).ok()?,
        healthy_regions: u32::try_from(v["healthy_regions"].as_u64().unwrap_or(0)).ok()?,
        total_regions: u32::try_from(v["total_regions"].as_u64().unwrap_or(0)).ok()?,
        local: v["local"].as_bool(),
        // Only the verdict of a pending change is compared; its instant is on the daemon's
        // clock.
        pending: v["pending"]["healthy"].as_bool().map(|healthy| {
            gslb_state_core::policy::Pending {
                healthy,
                at: gslb_state_core::Instant::from_nanos(0),
            }
        }),
    })
}
