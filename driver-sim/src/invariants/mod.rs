//! The invariants `gslb-sim check` checks on every seed, stated precisely.
//!
//! Each seed gives a scenario ([`crate::schedule::generate`]): a random policy, threshold,
//! heartbeat interval and TTL, network, monotonic clock origins (per node, at random: 0 at
//! every (re)start as in production, or an offset of up to days that runs on across
//! restarts), observations and faults (partitions, crashes and graceful leaves, each with or
//! without a restart, broker outages, isolated nodes, loss bursts) up to `quiet`, then a quiet
//! tail: everything healed, every node connected, no loss. It runs five times:
//!
//! * **A**: every wall clock exact.
//! * **A again**, with the scenario's `state:` written out key by key (`quorumScope`,
//!   `holdUp` and `holdDown` included, at `members`, `0s`, `0s` for most seeds) and read back
//!   through the scenario reader ([`with_explicit_state`]): must give a byte-identical trace
//!   (JSON lines and timeline) — *determinism*, and *zero holds* (the keys beyond the guide at
//!   their defaults change nothing, byte for byte) for a seed without holds under `members`.
//! * **B**: every node's wall clock at a random constant offset strictly within
//!   ±(TTL − largest delay).
//! * **W**: wild wall clocks (offsets up to ±10 TTL that jump, drift up to ±1%).
//! * **S**: A with each restart stepping the node's wall clock back, with probability 1/2,
//!   by a random 1 s to 2 h from where it was ([`crate::schedule::with_clock_steps`]).
//!
//! A third of the seeds weigh the quorum by region (`quorumScope: regions`), a third hold
//! changes (`holdUp`, `holdDown` from half an interval to three TTLs), and the nodes are
//! spread over one region (the empty one), two, three, or one each.
//!
//! Below, `bound` = `TTL + interval + largest delay`. Then:
//!
//! * **no panic**: no run panics.
//! * **memory bounded** (A, B, W, S, sampled every heartbeat interval): at most
//!   [`crate::world::queue_bound`] events queued; at most `nodes × (endpoints + 3)` KV
//!   entries (per node a record, a key per endpoint and a one-chunk compacted snapshot in
//!   each of its two slots; more chunks for thousands of endpoints); every node knows at most `endpoints` endpoints and remembers at most `nodes`
//!   members; no core drops an output on a full queue.
//! * **agreement** (A and B, at `settle = quiet + TTL + largest delay` and again at the
//!   end): let R be the running nodes. Every node of R has exactly R as its active members,
//!   and every node r of R decides every endpoint exactly as
//!   [`gslb_state_core::policy::decide`] does from r's own observation and the observations
//!   of R without r, with the region votes of R's observations grouped by each node's region
//!   (verdict, source, both report counts and both region counts; with holds, a decision
//!   whose change is pending is held to the rule by its pending verdict, and a change can only
//!   be pending towards the other verdict than the one shown). So nodes with the same inputs decide
//!   alike under every policy — under the global policies all of R share one verdict and one
//!   pair of counts — and the verdict is the right one. In B a node is not held to it at a
//!   probe within TTL + largest delay after it read the KV snapshot (the clock invariance's
//!   window): a node that could read it only after `quiet` (it restarted on the minority side
//!   of a partition) judges the records by sender timestamps, and a wall-clock offset may keep
//!   a member that died just before `quiet` counted until up to TTL after the read.
//! * **expiry bounds** (A): (1) whenever an observer drops a member as expired, at least TTL
//!   has passed since the newest heartbeat of that member arrived at that observer (a
//!   heartbeat first learned from the membership record in the start-up snapshot counts as
//!   arrived when it was sent, by the sender's clock: the design's one use of sender
//!   timestamps);
//!   (2) when a node crashes or leaves and stays down for longer than `bound`, every observer
//!   running throughout that span has dropped it by its end.
//! * **count freshness** (A): no node counts a member later than `bound` after that
//!   member's last heartbeat was *sent* — restarted observers included, whatever their
//!   monotonic clock's origin. Precisely: for every observer life and every member m, at
//!   every instant t at which the observer counts m (m is in its active members, from the
//!   membership change at or before t until the next one, the end of that life or the end
//!   of the run), a heartbeat of m (of any of its lives) was published at some s with
//!   `t − bound ≤ s ≤ t`. Heartbeats are published only while their sender reaches the broker
//!   ([`crate::world::Outcome::heartbeats_sent`]). Only on A: a reader judges snapshot
//!   records by its own wall clock, so an observer whose wall clock is wrong cannot meet it
//!   in general.
//! * **rejoin after restart** (A and S): for every start of a node m at time r (at time 0 or
//!   a restart), and every peer p such that, throughout `[r, r + bound]`, p runs (one life
//!   of it began at or before r and did not stop by `r + bound`) and p and m are connected,
//!   and m still runs at `r + bound`: p counts m at `r + bound`. *Connected* is replayed from
//!   the scenario's events ([`rejoin::PairHistory`]): after every event at every instant of
//!   `[r, r + bound]` (and after the last event before r), the broker is up, neither node is
//!   cut off from it, both are in the same partition group, and the link between them has
//!   `loss` 0 (duplication, reordering and jitter are allowed). Nothing is asked of the KV
//!   store: a node that cannot read its snapshot must still be heard. Whatever the restarted
//!   node's wall clock did, it is heard again.
//! * **holds** (A, B, W and S; see `holds.rs`): per node life and endpoint, with `r` the
//!   rule's verdict recomputed from each recorded decision's counts, a change of the verdict
//!   shown between healthy and unhealthy happens exactly when `r` has said the new verdict
//!   without interruption for its hold (`holdUp` to healthy, `holdDown` to unhealthy) — not
//!   before, not after — or at once without a hold; a change from or to unknown shows `r` at
//!   once; whenever the verdict shown and `r` differ, the change to `r` is pending with the
//!   right instant, and otherwise nothing is. Without holds every change shows `r`.
//! * **clock invariance** (A against B): for every node and endpoint, the decision in force
//!   (verdict and source; with holds, the rule's verdict, as a hold can carry a difference
//!   inside a snapshot window past its end) is the same in both runs at every instant, except within TTL (plus
//!   the largest delay, for the heartbeats its records stand for still in flight) after that
//!   node read the KV snapshot at a (re)start, where sender timestamps are used. The
//!   network's draws depend only on (seed, sender, message number, receiver), so both runs
//!   see the same losses and delays; incarnations come from each run's own wall clock, which
//!   keeps their order per node.
//!
//! * **snapshot reads** (A, B, W and S; see [`snapshot`]): whenever a node's start-up
//!   snapshot is loaded — from other members' compacted-snapshot chunks and the report keys
//!   written since, or their keys read whole — its report of every endpoint from every other
//!   member it remembers (not left, at the incarnation of the key's record) is at least as new
//!   as the health bucket's key says, and the same with the same sequence: what a full per-key
//!   read would have given it. Nodes compact their reports every
//!   [`crate::schedule::COMPACT_INTERVAL`] at most, so runs write and read chunks.
//!
//! The checkers live in `agreement.rs`, `expiry.rs` (expiry bounds, count freshness),
//! [`rejoin`], `holds.rs` (holds, zero holds), `clocks.rs` and [`snapshot`].

mod agreement;
mod clocks;
mod expiry;
mod holds;
pub mod rejoin;
pub mod snapshot;

use std::panic::AssertUnwindSafe;

use crate::scenario::{Scenario, fmt_time};
use crate::schedule::{self, Generated};
use crate::trace::Record;
use crate::world::{self, Outcome, RunOptions};

pub use agreement::{agreement, agreement_outside_snapshot_windows};
pub use clocks::clock_invariance;
pub use expiry::{count_freshness, expiry_bounds};
pub use holds::{holds_respected, identical_traces, with_explicit_state};
pub use rejoin::rejoin_after_restart;
pub use snapshot::snapshot_reads;

/// `TTL + interval + largest delay`: how long a node may go unheard before every peer must
/// have noticed, and how long a (re)started one may take to be heard again.
pub fn silence_bound_ns(s: &Scenario) -> u64 {
    let ttl = s.state.heartbeat_ttl.as_nanos() as u64;
    let interval = s.state.heartbeat_interval.as_nanos() as u64;
    ttl + interval + s.max_delay_ns()
}

/// The last membership record of `node` at or before `t_ns`.
pub(crate) fn members_at(o: &Outcome, node: u32, t_ns: u64) -> Option<&Vec<String>> {
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
    /// Snapshot chunks written, all runs together.
    pub chunk_writes: u64,
    /// Snapshot chunks read in start-up snapshots, all runs together.
    pub chunks_read: u64,
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
                report.chunk_writes += stats.chunk_writes;
                report.chunks_read += stats.chunks_read;
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
    /// Snapshot chunks written.
    pub chunk_writes: u64,
    /// Snapshot chunks read in start-up snapshots.
    pub chunks_read: u64,
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

/// The timelines of runs A (exact clocks), B (offsets) and S (clocks stepped back at
/// restarts) of `seed`, with the file names `--trace-dir` gives them, for a closer look at a
/// failure.
pub fn timelines_of(seed: u64, nodes: usize, endpoints: usize) -> Vec<(&'static str, String)> {
    let g = schedule::generate(seed, nodes, endpoints);
    let a = world::run(&g.scenario, options(&g));
    let b = world::run(&schedule::with_offsets(&g.scenario), options(&g));
    let st = world::run(&schedule::with_clock_steps(&g.scenario), options(&g));
    vec![
        ("exact-clocks.txt", a.trace.to_timeline()),
        ("offset-clocks.txt", b.trace.to_timeline()),
        ("stepped-clocks.txt", st.trace.to_timeline()),
    ]
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
    // "A again" with every state key written out and read back: the same settings, so the
    // same trace byte for byte; for most seeds that is `quorumScope: members, holdUp: 0s,
    // holdDown: 0s` against none of them.
    let explicit = with_explicit_state(&g.scenario).map_err(|d| fail("zero holds", d))?;
    let a2 = run_guarded(seed, "A again", &explicit, options(&g))?;
    let plain = g.scenario.state.holds().is_none()
        && g.scenario.state.quorum_scope == gslb_state_core::policy::QuorumScope::Members;
    identical_traces(&a, &a2).map_err(|d| {
        if plain {
            fail(
                "zero holds",
                format!(
                    "the seed's scenario and the same with quorumScope: members, holdUp: 0s, \
                     holdDown: 0s written out gave different traces (or the runs are not \
                     deterministic), {d}"
                ),
            )
        } else {
            fail(
                "determinism",
                format!("the same seed gave different traces, {d}"),
            )
        }
    })?;
    let offsets = schedule::with_offsets(&g.scenario);
    let b = run_guarded(seed, "B (clock offsets)", &offsets, options(&g))?;
    let wild = schedule::with_wild_clocks(&g.scenario);
    let w = run_guarded(seed, "W (wild clocks)", &wild, options(&g))?;
    let steps = schedule::with_clock_steps(&g.scenario);
    let st = run_guarded(
        seed,
        "S (clocks stepped back at restarts)",
        &steps,
        options(&g),
    )?;

    for (name, o) in [("A", &a), ("B", &b), ("W", &w), ("S", &st)] {
        if let Some(v) = o.bound_violations.first() {
            return Err(fail("memory bounded", format!("run {name}: {v}")));
        }
    }
    for (name, o) in [("A", &a), ("B", &b), ("W", &w), ("S", &st)] {
        snapshot_reads(o).map_err(|d| fail("snapshot reads", format!("run {name}: {d}")))?;
    }
    for (name, sc, o) in [
        ("A", &g.scenario, &a),
        ("B", &offsets, &b),
        ("W", &wild, &w),
        ("S", &steps, &st),
    ] {
        holds_respected(sc, o).map_err(|d| fail("holds", format!("run {name}: {d}")))?;
    }
    agreement(&g.scenario, &a).map_err(|d| fail("agreement", format!("run A: {d}")))?;
    let snapshot_window =
        g.scenario.state.heartbeat_ttl.as_nanos() as u64 + g.scenario.max_delay_ns();
    agreement_outside_snapshot_windows(&g.scenario, &b, snapshot_window)
        .map_err(|d| fail("agreement", format!("run B: {d}")))?;
    expiry_bounds(&g.scenario, &a).map_err(|d| fail("expiry bounds", d))?;
    count_freshness(&g.scenario, &a).map_err(|d| fail("count freshness", format!("run A: {d}")))?;
    rejoin_after_restart(&g.scenario, &a)
        .map_err(|d| fail("rejoin after restart", format!("run A: {d}")))?;
    rejoin_after_restart(&steps, &st).map_err(|d| {
        fail(
            "rejoin after restart",
            format!("run S: {d}\n(restarts in run S: {})", restarts(&steps)),
        )
    })?;
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
    let runs = [&a, &a2, &b, &w, &st];
    Ok(SeedStats {
        runs: 5,
        simulated_ns: 5 * g.scenario.duration_ns,
        deliveries: runs.iter().map(|o| o.deliveries).sum(),
        chunk_writes: runs.iter().map(|o| o.chunk_writes).sum(),
        chunks_read: runs.iter().map(|o| o.chunks_read).sum(),
    })
}

/// The restarts of `s` with the wall-clock offset each sets, for failure reports.
fn restarts(s: &Scenario) -> String {
    let list: Vec<String> = s
        .events
        .iter()
        .filter_map(|e| match e.kind {
            crate::scenario::EventKind::Restart {
                node,
                clock_offset_ms,
            } => Some(format!(
                "{} at {}{}",
                s.nodes[node].id,
                fmt_time(e.at_ns),
                clock_offset_ms.map_or(String::new(), |o| format!(" to offset {o} ms"))
            )),
            _ => None,
        })
        .collect();
    list.join(", ")
}

/// The scenario in one paragraph, for failure reports.
fn describe(g: &Generated) -> String {
    let s = &g.scenario;
    let d = s.network.default;
    let mut out = format!(
        "scenario: policy {} q={} scope {} holdUp {} holdDown {} interval {} TTL {}, latency {}ms jitter {}ms loss {} dup {} reorder {}, quiet from {}, settled by {}, end {}",
        s.state.policy,
        s.state.quorum_min_percent,
        s.state.quorum_scope,
        humantime::format_duration(s.state.hold_up),
        humantime::format_duration(s.state.hold_down),
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
    let monos: Vec<String> = s
        .nodes
        .iter()
        .map(|n| match n.monotonic_offset_ns {
            None => format!("{}=0 at each start", n.id),
            Some(o) => format!("{}={}", n.id, fmt_time(o)),
        })
        .collect();
    let regions: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{}={:?}", n.id, n.region))
        .collect();
    out.push_str(&format!(
        "\nmonotonic clocks: {}\nregions: {}\nregion latency: {}\nevents:",
        monos.join(", "),
        regions.join(", "),
        s.network.region_latency
    ));
    for e in s.events.iter().filter(|e| e.kind.is_fault()) {
        out.push_str(&format!("\n  {:>9} {:?}", fmt_time(e.at_ns), e.kind));
    }
    out
}
