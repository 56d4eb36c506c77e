//! The invariants `gslb-sim check` checks on every seed, stated precisely.
//!
//! Each seed gives a scenario ([`crate::schedule::generate`]): a random policy, threshold,
//! heartbeat interval and TTL, network, observations and faults (partitions, crashes and
//! restarts, broker outages, isolated nodes, loss bursts) up to `quiet`, then a quiet tail:
//! everything healed, every node connected, no loss. It runs four times:
//!
//! * **A**: every clock exact.
//! * **A again**: must give a byte-identical trace (JSON lines and timeline) — *determinism*.
//! * **B**: every node's clock at a random constant offset strictly within ±(TTL − largest
//!   delay).
//! * **W**: wild clocks (offsets up to ±10 TTL that jump, drift up to ±1%).
//!
//! Then:
//!
//! * **no panic**: no run panics.
//! * **memory bounded** (A, B, W, sampled every heartbeat interval): at most
//!   [`crate::world::queue_bound`] events queued; at most `nodes × (endpoints + 1)` KV
//!   entries; every node knows at most `endpoints` endpoints and remembers at most `nodes`
//!   members; no core drops an output on a full queue.
//! * **agreement** (A and B, at `settle = quiet + TTL + largest delay` and again at the
//!   end): let R be the running nodes. Every node of R has exactly R as its active members,
//!   and every node r of R decides every endpoint exactly as
//!   [`gslb_state_core::policy::decide`] does from r's own observation and the observations
//!   of R without r (verdict, source and both counts). So nodes with the same inputs decide
//!   alike under every policy — under the global policies all of R share one verdict and one
//!   pair of counts — and the verdict is the right one.
//! * **expiry bounds** (A): (1) whenever an observer drops a member as expired, at least TTL
//!   has passed since the newest heartbeat of that member arrived at that observer (a
//!   heartbeat first learned from the membership record in the start-up snapshot counts as
//!   arrived when it was sent, by the sender's clock: the design's one use of sender
//!   timestamps);
//!   (2) when a node crashes and stays down for longer than `TTL + interval + largest delay`,
//!   every observer running throughout that span has dropped it by its end.
//! * **clock invariance** (A against B): for every node and endpoint, the decision in force
//!   (verdict and source) is the same in both runs at every instant, except within TTL (plus
//!   the largest delay, for the heartbeats its records stand for still in flight) after that
//!   node read the KV snapshot at a (re)start, where sender timestamps are used. The
//!   network's draws depend only on (seed, sender, message number, receiver), so both runs
//!   see the same losses and delays; incarnations come from each run's own wall clock, which
//!   keeps their order per node.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;

use gslb_state_core::policy::{RemoteCounts, decide};
use gslb_state_core::{Decision, DownReason, Source};

use crate::scenario::{Scenario, fmt_time};
use crate::schedule::{self, Generated};
use crate::trace::Record;
use crate::world::{self, Outcome, RunOptions};

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// The first seed.
    pub first_seed: u64,
    /// How many seeds, from the first.
    pub seeds: u64,
    /// Nodes per scenario.
    pub nodes: usize,
    /// Endpoints per scenario.
    pub endpoints: usize,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The seed that breaks it.
    pub seed: u64,
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

/// What a check of many seeds found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Seeds checked (up to and including a failing one).
    pub seeds_run: u64,
    /// Simulation runs.
    pub runs: u64,
    /// Simulated time, all runs together.
    pub simulated_ns: u64,
    /// Deliveries, all runs together.
    pub deliveries: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Every violation, when checking went on past the first.
    pub violations: Vec<Violation>,
}

/// The one command that replays `seed`.
pub fn replay_command(seed: u64, nodes: usize, endpoints: usize) -> String {
    format!(
        "cargo run --release -p gslb-state-sim -- check --seeds 1 --first-seed {seed} --nodes {nodes} --endpoints {endpoints}"
    )
}

/// Checks every seed of `config`, stopping at the first violation unless `keep_going`.
pub fn check_many(config: &CheckConfig, keep_going: bool) -> CheckReport {
    let mut report = CheckReport::default();
    for seed in config.first_seed..config.first_seed.saturating_add(config.seeds) {
        report.seeds_run += 1;
        match check_seed(seed, config.nodes, config.endpoints) {
            Ok(stats) => {
                report.runs += stats.runs;
                report.simulated_ns += stats.simulated_ns;
                report.deliveries += stats.deliveries;
            }
            Err(v) => {
                if report.violation.is_none() {
                    report.violation = Some(v.clone());
                }
                report.violations.push(v);
                if !keep_going {
                    break;
                }
            }
        }
    }
    report
}

/// Counters of one seed's runs.
#[derive(Debug, Clone, Default)]
pub struct SeedStats {
    /// Runs made.
    pub runs: u64,
    /// Simulated time.
    pub simulated_ns: u64,
    /// Deliveries.
    pub deliveries: u64,
}

fn options(g: &Generated) -> RunOptions {
    RunOptions {
        track_expiry: true,
        sample_every_ns: g.scenario.state.heartbeat_interval.as_nanos() as u64,
        probes_ns: vec![g.settle_ns, g.scenario.duration_ns],
        quiet: false,
    }
}

fn run_guarded(
    seed: u64,
    what: &str,
    s: &Scenario,
    opts: RunOptions,
) -> Result<Outcome, Violation> {
    std::panic::catch_unwind(AssertUnwindSafe(|| world::run(s, opts))).map_err(|p| {
        let message = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "(no message)".into());
        Violation {
            seed,
            invariant: "no panic",
            detail: format!("run {what} panicked: {message}"),
        }
    })
}

/// The timelines of runs A (exact clocks) and B (offsets) of `seed`, for a closer look at a
/// failure.
pub fn timelines_of(seed: u64, nodes: usize, endpoints: usize) -> (String, String) {
    let g = schedule::generate(seed, nodes, endpoints);
    let a = world::run(&g.scenario, options(&g));
    let b = world::run(&schedule::with_offsets(&g.scenario), options(&g));
    (a.trace.to_timeline(), b.trace.to_timeline())
}

/// Checks every invariant on the scenario of `seed`.
pub fn check_seed(seed: u64, nodes: usize, endpoints: usize) -> Result<SeedStats, Violation> {
    let g = schedule::generate(seed, nodes, endpoints);
    let fail = |invariant: &'static str, detail: String| Violation {
        seed,
        invariant,
        detail: format!("{}\n{detail}", describe(&g)),
    };
    let a = run_guarded(seed, "A", &g.scenario, options(&g))?;
    let a2 = run_guarded(seed, "A again", &g.scenario, options(&g))?;
    let (ja, ja2) = (a.trace.to_json_lines(), a2.trace.to_json_lines());
    if ja != ja2 || a.trace.to_timeline() != a2.trace.to_timeline() {
        let line = ja
            .lines()
            .zip(ja2.lines())
            .position(|(x, y)| x != y)
            .unwrap_or(ja.lines().count().min(ja2.lines().count()));
        return Err(fail(
            "determinism",
            format!(
                "the same seed gave different traces, first at JSON line {}",
                line + 1
            ),
        ));
    }
    let offsets = schedule::with_offsets(&g.scenario);
    let b = run_guarded(seed, "B (clock offsets)", &offsets, options(&g))?;
    let wild = schedule::with_wild_clocks(&g.scenario);
    let w = run_guarded(seed, "W (wild clocks)", &wild, options(&g))?;

    for (name, o) in [("A", &a), ("B", &b), ("W", &w)] {
        if let Some(v) = o.bound_violations.first() {
            return Err(fail("memory bounded", format!("run {name}: {v}")));
        }
    }
    for (name, o) in [("A", &a), ("B", &b)] {
        agreement(&g.scenario, o).map_err(|d| fail("agreement", format!("run {name}: {d}")))?;
    }
    expiry_bounds(&g.scenario, &a).map_err(|d| fail("expiry bounds", d))?;
    clock_invariance(&g.scenario, &a, &b).map_err(|d| {
        let offs: Vec<String> = offsets
            .nodes
            .iter()
            .map(|n| format!("{}={}ms", n.id, n.clock_offset_ms))
            .collect();
        fail(
            "clock invariance",
            format!("{d}\n(offsets in run B: {})", offs.join(", ")),
        )
    })?;
    Ok(SeedStats {
        runs: 4,
        simulated_ns: 4 * g.scenario.duration_ns,
        deliveries: a.deliveries + a2.deliveries + b.deliveries + w.deliveries,
    })
}

/// The scenario in one paragraph, for failure reports.
fn describe(g: &Generated) -> String {
    let s = &g.scenario;
    let d = s.network.default;
    let mut out = format!(
        "scenario: policy {} q={} interval {} TTL {}, latency {}ms jitter {}ms loss {} dup {} reorder {}, quiet from {}, settled by {}, end {}\nevents:",
        s.state.policy,
        s.state.quorum_min_percent,
        humantime::format_duration(s.state.heartbeat_interval),
        humantime::format_duration(s.state.heartbeat_ttl),
        d.latency_ns / 1_000_000,
        d.jitter_ns / 1_000_000,
        d.loss,
        d.duplicate,
        d.reorder,
        fmt_time(g.quiet_ns),
        fmt_time(g.settle_ns),
        fmt_time(s.duration_ns)
    );
    for e in s.events.iter().filter(|e| e.kind.is_fault()) {
        out.push_str(&format!("\n  {:>9} {:?}", fmt_time(e.at_ns), e.kind));
    }
    out
}

fn unknown() -> Decision {
    Decision {
        healthy: None,
        source: Source::Unknown,
        healthy_reports: 0,
        total_reports: 0,
        local: None,
    }
}

/// See the module docs: at each probe, every running node has the running nodes as members and
/// decides every endpoint as `decide` does from the running nodes' observations.
pub fn agreement(s: &Scenario, o: &Outcome) -> Result<(), String> {
    let (policy, q) = (s.state.policy, s.state.quorum_min_percent);
    for p in &o.probes {
        let running: Vec<usize> = (0..p.nodes.len())
            .filter(|&n| p.nodes[n].is_some())
            .collect();
        let ids: Vec<String> = running.iter().map(|&n| s.nodes[n].id.clone()).collect();
        let mut expected_members = ids.clone();
        expected_members.sort();
        let mut endpoints = BTreeSet::new();
        for np in p.nodes.iter().flatten() {
            endpoints.extend(np.decisions.keys().cloned());
            endpoints.extend(np.observations.keys().cloned());
        }
        for &r in &running {
            let np = p.nodes[r].as_ref().expect("running");
            if np.active != expected_members {
                return Err(format!(
                    "at {}: {} has active members [{}], the running nodes are [{}]",
                    fmt_time(p.t_ns),
                    s.nodes[r].id,
                    np.active.join(", "),
                    expected_members.join(", ")
                ));
            }
            for e in &endpoints {
                let mut remote = RemoteCounts::default();
                for &other in running.iter().filter(|&&x| x != r) {
                    let obs = p.nodes[other]
                        .as_ref()
                        .expect("running")
                        .observations
                        .get(e);
                    if let Some(&h) = obs {
                        remote.total += 1;
                        remote.healthy += u32::from(h);
                    }
                }
                let local = np.observations.get(e).copied();
                let want = decide(policy, q, local, remote);
                let got = np.decisions.get(e).copied().unwrap_or_else(unknown);
                let key = |d: &Decision| (d.healthy, d.source, d.healthy_reports, d.total_reports);
                if key(&want) != key(&got) {
                    return Err(format!(
                        "at {}: {} decides {e} {} but its inputs give {}",
                        fmt_time(p.t_ns),
                        s.nodes[r].id,
                        crate::trace::explain(&got),
                        crate::trace::explain(&want)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The last membership record of `node` at or before `t_ns`.
fn members_at(o: &Outcome, node: u32, t_ns: u64) -> Option<&Vec<String>> {
    o.trace
        .records
        .iter()
        .take_while(|r| r.t_ns() <= t_ns)
        .filter_map(|r| match r {
            Record::Members {
                node: n, active, ..
            } if *n == node => Some(active),
            _ => None,
        })
        .last()
}

/// See the module docs.
pub fn expiry_bounds(s: &Scenario, o: &Outcome) -> Result<(), String> {
    let ttl = s.state.heartbeat_ttl.as_nanos() as u64;
    let interval = s.state.heartbeat_interval.as_nanos() as u64;
    let bound = ttl + interval + s.max_delay_ns();
    for d in &o.downs {
        if d.reason != DownReason::Expired {
            continue;
        }
        if let Some(h) = d.last_heartbeat_ns
            && d.t_ns < h + ttl
        {
            return Err(format!(
                "at {}: {} dropped {} as expired, but its last heartbeat arrived at {}, less than TTL ({}) before",
                fmt_time(d.t_ns),
                s.nodes[d.observer as usize].id,
                d.member,
                fmt_time(h),
                humantime::format_duration(s.state.heartbeat_ttl)
            ));
        }
    }
    for crash in &o.lives {
        let Some(t_c) = crash.crashed_ns else {
            continue;
        };
        let deadline = t_c + bound;
        if deadline > s.duration_ns {
            continue;
        }
        let back = o
            .lives
            .iter()
            .any(|l| l.node == crash.node && l.started_ns > t_c && l.started_ns <= deadline);
        if back {
            continue;
        }
        let member = &s.nodes[crash.node as usize].id;
        for obs in &o.lives {
            let covers = obs.node != crash.node
                && obs.started_ns <= t_c
                && obs.crashed_ns.is_none_or(|t| t > deadline);
            if !covers {
                continue;
            }
            if let Some(active) = members_at(o, obs.node, deadline)
                && active.contains(member)
            {
                return Err(format!(
                    "{member} crashed at {}, but {} still counted it at {} (TTL + interval + largest delay later)",
                    fmt_time(t_c),
                    s.nodes[obs.node as usize].id,
                    fmt_time(deadline)
                ));
            }
        }
    }
    Ok(())
}

/// Per node and endpoint: (time, verdict and source or "not running"), with a reset at every
/// start and crash.
type Timeline = Vec<(u64, Option<(Option<bool>, Source)>)>;

fn timelines(o: &Outcome) -> BTreeMap<(u32, String), Timeline> {
    let mut endpoints: BTreeSet<String> = BTreeSet::new();
    for r in &o.trace.records {
        if let Record::Decision { endpoint, .. } = r {
            endpoints.insert(endpoint.clone());
        }
    }
    let mut out: BTreeMap<(u32, String), Timeline> = BTreeMap::new();
    // Lives first, so that a start sorts before the decisions of its instant.
    for l in &o.lives {
        for e in &endpoints {
            let tl = out.entry((l.node, e.clone())).or_default();
            tl.push((l.started_ns, Some((None, Source::Unknown))));
            if let Some(c) = l.crashed_ns {
                tl.push((c, None));
            }
        }
    }
    for r in &o.trace.records {
        if let Record::Decision {
            t_ns,
            node,
            endpoint,
            decision,
        } = r
        {
            out.entry((*node, endpoint.clone()))
                .or_default()
                .push((*t_ns, Some((decision.healthy, decision.source))));
        }
    }
    for tl in out.values_mut() {
        tl.sort_by_key(|(t, _)| *t);
    }
    out
}

fn value_at(tl: &Timeline, t: u64) -> Option<(Option<bool>, Source)> {
    let i = tl.partition_point(|(x, _)| *x <= t);
    if i == 0 { None } else { tl[i - 1].1 }
}

fn fmt_value(v: Option<(Option<bool>, Source)>) -> String {
    match v {
        None => "not running".into(),
        Some((h, s)) => format!(
            "{} ({s})",
            match h {
                Some(true) => "healthy",
                Some(false) => "unhealthy",
                None => "unknown",
            }
        ),
    }
}

/// See the module docs.
pub fn clock_invariance(s: &Scenario, a: &Outcome, b: &Outcome) -> Result<(), String> {
    // The snapshot's records stand for heartbeats that may still be in flight for one delay.
    let window = s.state.heartbeat_ttl.as_nanos() as u64 + s.max_delay_ns();
    let mut windows: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for l in a.lives.iter().chain(&b.lives) {
        if let Some(t) = l.snapshot_ns {
            windows.entry(l.node).or_default().push((t, t + window));
        }
    }
    let ta = timelines(a);
    let tb = timelines(b);
    let keys: BTreeSet<&(u32, String)> = ta.keys().chain(tb.keys()).collect();
    let empty = Timeline::new();
    for key in keys {
        let (x, y) = (ta.get(key).unwrap_or(&empty), tb.get(key).unwrap_or(&empty));
        let w = windows.get(&key.0).map(Vec::as_slice).unwrap_or(&[]);
        let excluded = |t: u64| w.iter().any(|&(s, e)| s <= t && t <= e);
        let points = x
            .iter()
            .chain(y)
            .map(|(t, _)| *t)
            .chain(w.iter().map(|&(_, e)| e + 1));
        for t in points {
            if excluded(t) || t > s.duration_ns {
                continue;
            }
            let (va, vb) = (value_at(x, t), value_at(y, t));
            if va != vb {
                return Err(format!(
                    "at {}: {} decides {} {} with exact clocks but {} with offsets",
                    fmt_time(t),
                    s.nodes[key.0 as usize].id,
                    key.1,
                    fmt_value(va),
                    fmt_value(vb)
                ));
            }
        }
    }
    Ok(())
}
