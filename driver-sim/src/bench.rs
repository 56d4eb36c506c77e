//! The speed benchmark: a large cluster for a long time, as `gslb-sim bench` runs it.

use std::time::Duration;

use gslb_state_core::{Config, Policy};

use crate::rng::Rng;
use crate::scenario::{EventKind, LinkParams, NS_PER_MS, Scenario};
use crate::world::{self, RunOptions};

/// What a benchmark run measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Wall time of the simulation (building the scenario excluded).
    pub wall: Duration,
    /// CPU time of this process during the simulation, where the OS tells it (Unix); on a
    /// shared machine this is the figure that does not depend on the neighbours.
    pub cpu: Option<Duration>,
    /// Deliveries handed to cores.
    pub deliveries: u64,
    /// Events processed.
    pub events: u64,
    /// Decision changes recorded.
    pub decisions: usize,
}

/// The benchmark scenario: `nodes` nodes in 5 regions under global-quorum, 1 s heartbeats and
/// a 3 s TTL, 10 ms ± 2 ms links. All nodes start at once; their probes report every endpoint
/// one second later (one probe round), then one observation somewhere changes every 100 ms.
pub fn scenario(nodes: usize, endpoints: usize, duration: Duration) -> Scenario {
    let mut state = Config::with_defaults("sim").state;
    state.policy = Policy::GlobalQuorum;
    state.heartbeat_interval = Duration::from_secs(1);
    state.heartbeat_ttl = Duration::from_secs(3);
    let ids: Vec<String> = (0..nodes).map(|i| format!("node-{i:03}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut s = Scenario::new(1, duration, state, &refs);
    for (i, n) in s.nodes.iter_mut().enumerate() {
        n.region = format!("region-{}", i % 5);
    }
    s.network.default = LinkParams {
        latency_ns: 10 * NS_PER_MS,
        jitter_ns: 2 * NS_PER_MS,
        ..LinkParams::default()
    };
    let names: Vec<String> = (0..endpoints).map(|e| format!("endpoint-{e:04}")).collect();
    let mut events = Vec::new();
    for node in 0..nodes {
        for name in &names {
            events.push((
                1_000 * NS_PER_MS,
                EventKind::Observe {
                    node,
                    endpoint: name.clone(),
                    healthy: Some(true),
                },
            ));
        }
    }
    let mut rng = Rng::new(1);
    let mut t = 1_100 * NS_PER_MS;
    while t < s.duration_ns {
        events.push((
            t,
            EventKind::Observe {
                node: rng.below(nodes as u64) as usize,
                endpoint: names[rng.below(endpoints as u64) as usize].clone(),
                healthy: Some(rng.chance(0.8)),
            },
        ));
        t += 100 * NS_PER_MS;
    }
    s.events = events
        .into_iter()
        .map(|(at_ns, kind)| crate::scenario::Event {
            at_ns,
            line: None,
            kind,
        })
        .collect();
    s
}

/// Builds and runs the benchmark scenario, timing the run.
pub fn run(nodes: usize, endpoints: usize, duration: Duration) -> BenchResult {
    let s = scenario(nodes, endpoints, duration);
    let cpu_before = cpu_time();
    let started = std::time::Instant::now();
    let outcome = world::run(&s, RunOptions::default());
    let wall = started.elapsed();
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let decisions = outcome
        .trace
        .records
        .iter()
        .filter(|r| matches!(r, crate::trace::Record::Decision { .. }))
        .count();
    BenchResult {
        wall,
        cpu,
        deliveries: outcome.deliveries,
        events: outcome.events,
        decisions,
    }
}

/// User plus system CPU time of this process so far (`getrusage(RUSAGE_SELF)`).
#[cfg(unix)]
#[allow(unsafe_code)]
fn cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `getrusage` writes a whole `rusage` through the pointer, which is valid for
    // writes of one `rusage`, and keeps no reference to it; `RUSAGE_SELF` is a valid `who`.
    let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: `getrusage` returned 0, so it filled the struct in.
    let usage = unsafe { usage.assume_init() };
    let duration = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(duration(usage.ru_utime) + duration(usage.ru_stime))
}

/// CPU time is not measured off Unix.
#[cfg(not(unix))]
fn cpu_time() -> Option<Duration> {
    None
}
