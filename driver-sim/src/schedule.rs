//! Random fault schedules for `gslb-sim check`: a scenario per seed with a random policy
//! (quorum scope, holds and regions included), network, monotonic clock origins,
//! observations and faults, followed by a quiet tail in
//! which the invariants about agreement can be checked; and the variants of it that the
//! other runs use (clock offsets, wild clocks, wall clocks stepped back at restarts).

use std::time::Duration;

use gslb_state_core::policy::QuorumScope;
use gslb_state_core::{Config, Policy};

use crate::rng::Rng;
use crate::scenario::{
    Event, EventKind, LinkOverride, LinkParams, NS_PER_MS, NetworkSpec, NodeSpec, RegionLatency,
    Scenario,
};

const SEC: u64 = 1_000 * NS_PER_MS;
const DAY: u64 = 86_400 * SEC;

/// Largest monotonic clock offset drawn for a node whose clock runs on across restarts.
pub const MONOTONIC_OFFSET_MAX_NS: u64 = 4 * DAY;
/// [`crate::Scenario::compact_interval`] of a generated scenario: far below the core's default
/// (30 s), so that runs of a minute or so compact every node's reports again and again —
/// during partitions and outages too, where the chunk writes fail — and (re)started nodes
/// read the compacted snapshots.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(2);
/// Smallest and largest wall-clock step back at a restart in run S.
pub const CLOCK_STEP_MS: (u64, u64) = (1_000, 2 * 3_600_000);

/// A generated scenario and the instants that matter to the invariants.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The scenario, with every clock exact.
    pub scenario: Scenario,
    /// From here on: no fault, no observation change, every partition healed, broker up,
    /// every node connected, no loss.
    pub quiet_ns: u64,
    /// When the cluster must have settled: `quiet + TTL + largest delay` (the bound).
    pub settle_ns: u64,
}

/// The scenario of `seed` with `nodes` nodes and `endpoints` endpoints.
pub fn generate(seed: u64, nodes: usize, endpoints: usize) -> Generated {
    let mut rng = Rng::new(seed);
    let mut state = Config::with_defaults("sim").state;
    state.policy = *rng.pick(&Policy::ALL).expect("four policies");
    state.quorum_min_percent = *rng
        .pick(&[1u8, 33, 34, 50, 51, 66, 67, 100])
        .expect("non-empty");
    let interval_ms = *rng.pick(&[250u64, 500, 1000, 2000]).expect("non-empty");
    state.heartbeat_interval = Duration::from_millis(interval_ms);
    state.heartbeat_ttl =
        Duration::from_millis(interval_ms * rng.range(2, 4) + rng.below(interval_ms));

    let latency_ns = rng.range(1, 50) * NS_PER_MS;
    let base = LinkParams {
        latency_ns,
        jitter_ns: rng.below(latency_ns / NS_PER_MS + 1) * NS_PER_MS,
        loss: *rng.pick(&[0.0, 0.0, 0.01, 0.05, 0.2]).expect("non-empty"),
        duplicate: *rng.pick(&[0.0, 0.0, 0.01, 0.1]).expect("non-empty"),
        reorder: *rng.pick(&[0.0, 0.0, 0.05, 0.2]).expect("non-empty"),
    };
    let mut network = NetworkSpec {
        default: base,
        ..NetworkSpec::default()
    };
    if nodes >= 2 && rng.chance(0.5) {
        // One slow, lossy long-haul link.
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        let slow = LinkParams {
            latency_ns: latency_ns * 3,
            loss: (base.loss * 2.0).min(0.3),
            ..base
        };
        network.links.push(LinkOverride::between(a, b, slow));
    }

    // Beyond the guide, from a stream of their own (so the rest of each seed's draws stay as
    // they were): a third of the seeds weigh the quorum by region, a third hold changes, and
    // the nodes are spread over one to three regions (or one each).
    let mut rule_rng = Rng::new(seed ^ 0x0005_C0BE_401D);
    if rule_rng.chance(1.0 / 3.0) {
        state.quorum_scope = QuorumScope::Regions;
    }
    if rule_rng.chance(1.0 / 3.0) {
        let ttl_ms = state.heartbeat_ttl.as_millis() as u64;
        let picks = [
            0,
            interval_ms / 2,
            interval_ms,
            ttl_ms,
            3 * ttl_ms,
            rule_rng.range(1, 5_000),
        ];
        state.hold_up = Duration::from_millis(*rule_rng.pick(&picks).expect("non-empty"));
        state.hold_down = Duration::from_millis(*rule_rng.pick(&picks).expect("non-empty"));
    }
    let region_count = *rule_rng.pick(&[1, 2, 3, 3, nodes]).expect("non-empty");

    // Monotonic clocks from a stream of their own: half start at 0 at every (re)start, as
    // production's do; the others read up to days at time 0 and run on across restarts.
    let mut mono_rng = Rng::new(seed ^ 0x000A_0C1C_10C4);
    let node_specs: Vec<NodeSpec> = (0..nodes)
        .map(|i| NodeSpec {
            id: format!("n{i}"),
            // One region: the empty one, which is a region too.
            region: if region_count == 1 {
                String::new()
            } else {
                format!("r{}", i % region_count)
            },
            start_ns: 0,
            clock_offset_ms: 0,
            drift_ppb: 0,
            monotonic_offset_ns: mono_rng
                .chance(0.5)
                .then(|| mono_rng.below(MONOTONIC_OFFSET_MAX_NS + 1)),
        })
        .collect();
    let endpoint_names: Vec<String> = (0..endpoints).map(|e| format!("ep{e}")).collect();

    // Regions as a NATS super-cluster has them, from a stream of their own: for half the
    // seeds with regions, an extra delay between each two of them; for a third, partitions
    // along region lines (see `region_split`).
    let mut region_rng = Rng::new(seed ^ 0x0000_2E61_0A5E);
    let regions = RegionLatency::new(node_specs.iter().map(|n| n.region.as_str()));
    let region_partitions = regions.regions().len() >= 2 && region_rng.chance(1.0 / 3.0);
    if regions.regions().len() >= 2 && region_rng.chance(0.5) {
        let mut matrix = regions.clone();
        let count = matrix.regions().len();
        for a in 0..count {
            for b in a + 1..count {
                let extra_ms = *region_rng
                    .pick(&[0, 5, 20, 40, 90, 120])
                    .expect("non-empty");
                matrix.set(a, b, extra_ms * NS_PER_MS);
            }
        }
        network.region_latency = matrix;
    }

    let fault_phase_ns = rng.range(20, 60) * SEC;
    let mut events: Vec<(u64, EventKind)> = Vec::new();
    // Initial observations, then changes during the fault phase.
    for node in 0..nodes {
        for e in &endpoint_names {
            if rng.chance(0.7) {
                events.push((
                    0,
                    EventKind::Observe {
                        node,
                        endpoint: e.clone(),
                        healthy: Some(rng.chance(0.7)),
                    },
                ));
            }
        }
    }
    for _ in 0..rng.range(0, (nodes * endpoints) as u64) {
        let healthy = match rng.below(5) {
            0 => None,
            1 | 2 => Some(false),
            _ => Some(true),
        };
        events.push((
            rng.range(1, fault_phase_ns / NS_PER_MS - 1) * NS_PER_MS,
            EventKind::Observe {
                node: rng.below(nodes as u64) as usize,
                endpoint: rng.pick(&endpoint_names).expect("endpoints >= 1").clone(),
                healthy,
            },
        ));
    }

    // Faults, each with its end.
    let mut crashed: Vec<Vec<(u64, u64)>> = vec![Vec::new(); nodes];
    for _ in 0..rng.range(1, 8) {
        let start = rng.range(500, fault_phase_ns / NS_PER_MS - 500) * NS_PER_MS;
        let end = (start + rng.range(200, 15_000) * NS_PER_MS).min(fault_phase_ns);
        let node = rng.below(nodes as u64) as usize;
        match rng.below(6) {
            0 => {
                let mut groups = random_split(&mut rng, nodes);
                if region_partitions {
                    groups = region_split(&mut region_rng, &regions);
                }
                events.push((start, EventKind::Partition { groups }));
                events.push((end, EventKind::Heal));
            }
            1 | 2 => {
                // A quarter of the stops are graceful; some nodes stay down for good.
                let leave = rng.chance(0.25);
                let back = rng.chance(0.85);
                let down_until = if back { end } else { u64::MAX / 4 };
                let overlaps = crashed[node]
                    .iter()
                    .any(|&(s, e)| start <= e + SEC && s <= down_until + SEC);
                if overlaps {
                    continue;
                }
                crashed[node].push((start, down_until));
                let stop = if leave {
                    EventKind::Leave(node)
                } else {
                    EventKind::Crash(node)
                };
                events.push((start, stop));
                if back {
                    let restart = EventKind::Restart {
                        node,
                        clock_offset_ms: None,
                    };
                    events.push((end, restart));
                }
            }
            3 => {
                events.push((start, EventKind::Broker(false)));
                events.push((end, EventKind::Broker(true)));
            }
            4 => {
                events.push((start, EventKind::Isolate(node)));
                events.push((end, EventKind::Rejoin(node)));
            }
            _ => {
                let burst = LinkParams {
                    loss: rng.unit() * 0.5,
                    jitter_ns: base.jitter_ns * 2,
                    ..base
                };
                let mut spec = network.clone();
                spec.default = burst;
                events.push((start, EventKind::Network(spec)));
                events.push((end, EventKind::Network(network.clone())));
            }
        }
    }

    // The quiet tail: everything healed, no loss.
    let quiet_ns = fault_phase_ns;
    let mut calm = network.clone();
    calm.default.loss = 0.0;
    for link in calm.links.iter_mut() {
        link.params.loss = 0.0;
    }
    events.push((quiet_ns, EventKind::Heal));
    events.push((quiet_ns, EventKind::Broker(true)));
    for n in 0..nodes {
        events.push((quiet_ns, EventKind::Rejoin(n)));
    }
    events.push((quiet_ns, EventKind::Network(calm.clone())));

    events.sort_by_key(|(t, _)| *t);
    let mut scenario = Scenario {
        seed,
        duration_ns: 0,
        state,
        network,
        nodes: node_specs,
        events: events
            .into_iter()
            .map(|(at_ns, kind)| Event {
                at_ns,
                line: None,
                kind,
            })
            .collect(),
        expects: Vec::new(),
        compact_interval: COMPACT_INTERVAL,
    };
    let ttl = scenario.state.heartbeat_ttl.as_nanos() as u64;
    let interval = scenario.state.heartbeat_interval.as_nanos() as u64;
    let settle_ns = quiet_ns + ttl + scenario.max_delay_ns();
    scenario.duration_ns = settle_ns + ttl + interval;
    Generated {
        scenario,
        quiet_ns,
        settle_ns,
    }
}

/// Splits `nodes` into two or three non-empty groups.
fn random_split(rng: &mut Rng, nodes: usize) -> Vec<Vec<usize>> {
    let k = if nodes >= 3 && rng.chance(0.3) { 3 } else { 2 };
    let mut groups = vec![Vec::new(); k];
    for n in 0..nodes {
        // The first k nodes seed the groups so none is empty.
        let g = if n < k {
            n
        } else {
            rng.below(k as u64) as usize
        };
        groups[g].push(n);
    }
    groups
}

/// Splits the regions (at least two) into two or three non-empty groups, each region's nodes
/// together, as `partition: {regions: [...]}` does; some regions may be left out, their nodes
/// forming one more group.
fn region_split(rng: &mut Rng, regions: &RegionLatency) -> Vec<Vec<usize>> {
    let count = regions.regions().len();
    let k = if count >= 3 && rng.chance(0.3) { 3 } else { 2 };
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut groups = vec![Vec::new(); k];
    for (i, &r) in order.iter().enumerate() {
        // The first k regions seed the groups; the others join one, or (1 in 5) none.
        let g = if i < k {
            i
        } else if rng.chance(0.2) {
            continue;
        } else {
            rng.below(k as u64) as usize
        };
        groups[g].push(r);
    }
    groups
        .iter()
        .map(|rs| {
            (0..regions.node_regions().len())
                .filter(|&n| rs.contains(&regions.node_regions()[n]))
                .collect()
        })
        .collect()
}

/// `scenario` with every node's clock at a random constant offset strictly within
/// `±(TTL - largest delay)`, drawn from a stream of its own.
pub fn with_offsets(scenario: &Scenario) -> Scenario {
    let mut s = scenario.clone();
    let mut rng = Rng::new(s.seed ^ 0x0FF5_E7C1_0C4E);
    let ttl_ms = s.state.heartbeat_ttl.as_millis() as u64;
    let margin_ms = s.max_delay_ns() / NS_PER_MS + 1;
    let bound_ms = ttl_ms.saturating_sub(margin_ms).max(1);
    for n in &mut s.nodes {
        n.clock_offset_ms = rng.range(0, 2 * bound_ms - 2) as i64 - (bound_ms as i64 - 1);
    }
    s
}

/// `scenario` with every node's wall clock stepped back at some restarts (each with
/// probability 1/2) by a random amount within [`CLOCK_STEP_MS`], from the clock it had
/// before: a VM restored from a snapshot, an RTC reset. Drawn from a stream of its own.
pub fn with_clock_steps(scenario: &Scenario) -> Scenario {
    let mut s = scenario.clone();
    let mut rng = Rng::new(s.seed ^ 0x57E9_BAC4_C10C);
    let mut offset_ms: Vec<i64> = s.nodes.iter().map(|n| n.clock_offset_ms).collect();
    for e in &mut s.events {
        match &mut e.kind {
            EventKind::Clock {
                node,
                offset_ms: Some(o),
                ..
            } => offset_ms[*node] = *o,
            EventKind::Restart {
                node,
                clock_offset_ms,
            } => {
                if let Some(o) = clock_offset_ms {
                    offset_ms[*node] = *o;
                }
                if rng.chance(0.5) {
                    let step = rng.range(CLOCK_STEP_MS.0, CLOCK_STEP_MS.1) as i64;
                    offset_ms[*node] -= step;
                    *clock_offset_ms = Some(offset_ms[*node]);
                }
            }
            _ => {}
        }
    }
    s
}

/// `scenario` with wild clocks: offsets up to ±10 TTL that jump during the run, and drift up
/// to ±1%. Nothing is promised about decisions here; the run must not panic and must stay
/// within its memory bounds.
pub fn with_wild_clocks(scenario: &Scenario) -> Scenario {
    let mut s = scenario.clone();
    let mut rng = Rng::new(s.seed ^ 0x3117_D0C1_0C45);
    let ttl_ms = s.state.heartbeat_ttl.as_millis() as i64;
    for n in &mut s.nodes {
        n.clock_offset_ms = rng.range(0, 20 * ttl_ms as u64) as i64 - 10 * ttl_ms;
        n.drift_ppb = rng.range(0, 20_000_000) as i64 - 10_000_000;
    }
    let nodes = s.nodes.len();
    for _ in 0..rng.range(1, 4) {
        let at = Duration::from_nanos(rng.below(s.duration_ns));
        let kind = EventKind::Clock {
            node: rng.below(nodes as u64) as usize,
            offset_ms: Some(rng.range(0, 20 * ttl_ms as u64) as i64 - 10 * ttl_ms),
            drift_ppb: rng.range(0, 20_000_000) as i64 - 10_000_000,
        };
        s.at(at, kind);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_valid_and_repeatable() {
        for seed in 0..200 {
            let g = generate(seed, 5, 3);
            assert_eq!(g.scenario, generate(seed, 5, 3).scenario);
            let s = &g.scenario;
            assert!(s.events.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
            assert!(g.quiet_ns < g.settle_ns && g.settle_ns < s.duration_ns);
            s.state.validate().unwrap();
            // Stop only running nodes, restart only stopped ones.
            let mut up = [true; 5];
            for e in &s.events {
                match e.kind {
                    EventKind::Crash(n) | EventKind::Leave(n) => {
                        assert!(up[n], "seed {seed}");
                        up[n] = false;
                    }
                    EventKind::Restart { node: n, .. } => {
                        assert!(!up[n], "seed {seed}");
                        up[n] = true;
                    }
                    _ => {}
                }
            }
            let o = with_offsets(s);
            let ttl_ms = s.state.heartbeat_ttl.as_millis() as i64;
            assert!(o.nodes.iter().all(|n| n.clock_offset_ms.abs() < ttl_ms));
            assert!(s.nodes.iter().all(|n| {
                n.monotonic_offset_ns
                    .is_none_or(|o| o <= MONOTONIC_OFFSET_MAX_NS)
            }));
        }
        assert_ne!(generate(1, 5, 3).scenario, generate(2, 5, 3).scenario);
        // Over many seeds: both kinds of monotonic clock, leaves among the faults.
        let all: Vec<Generated> = (0..200).map(|seed| generate(seed, 5, 3)).collect();
        let monos: Vec<Option<u64>> = all
            .iter()
            .flat_map(|g| g.scenario.nodes.iter().map(|n| n.monotonic_offset_ns))
            .collect();
        assert!(monos.iter().any(Option::is_none));
        assert!(monos.iter().any(|o| o.is_some_and(|o| o > DAY)));
        let leaves = all
            .iter()
            .flat_map(|g| &g.scenario.events)
            .filter(|e| matches!(e.kind, EventKind::Leave(_)))
            .count();
        assert!(leaves > 20, "{leaves}");
    }

    #[test]
    fn clock_steps_go_back_by_one_second_to_two_hours_and_add_up() {
        let mut stepped = 0;
        for seed in 0..200 {
            let g = generate(seed, 5, 3);
            let s = with_clock_steps(&g.scenario);
            assert_eq!(s.events.len(), g.scenario.events.len());
            let mut offset_ms = [0i64; 5];
            for (a, b) in g.scenario.events.iter().zip(&s.events) {
                match (&a.kind, &b.kind) {
                    (
                        EventKind::Restart {
                            node,
                            clock_offset_ms: None,
                        },
                        EventKind::Restart {
                            node: same,
                            clock_offset_ms: Some(o),
                        },
                    ) => {
                        assert_eq!(node, same);
                        let step = offset_ms[*node] - o;
                        assert!(
                            (CLOCK_STEP_MS.0 as i64..=CLOCK_STEP_MS.1 as i64).contains(&step),
                            "{step}"
                        );
                        offset_ms[*node] = *o;
                        stepped += 1;
                    }
                    _ => assert_eq!(a, b),
                }
            }
        }
        assert!(stepped > 50, "{stepped}");
    }

    #[test]
    fn seeds_with_regions_draw_region_cuts_and_latencies() {
        let (mut region_cuts, mut matrices) = (0, 0);
        for seed in 0..300 {
            let s = generate(seed, 5, 2).scenario;
            let region_of = |n: usize| s.nodes[n].region.as_str();
            let regions: std::collections::BTreeSet<&str> = (0..5).map(region_of).collect();
            let latency = &s.network.region_latency;
            if latency.max_extra_ns() > 0 {
                assert!(regions.len() >= 2, "seed {seed}: a matrix without regions");
                matrices += 1;
            }
            for e in &s.events {
                if let EventKind::Network(n) = &e.kind {
                    assert_eq!(&n.region_latency, latency, "seed {seed}: kept by events");
                }
                let EventKind::Partition { groups } = &e.kind else {
                    continue;
                };
                // A cut along region lines keeps every region on one side (counted where
                // regions have several nodes).
                let whole = (0..5).all(|a| {
                    (0..5).all(|b| {
                        region_of(a) != region_of(b)
                            || groups.iter().position(|g| g.contains(&a))
                                == groups.iter().position(|g| g.contains(&b))
                    })
                });
                if whole && (2..=3).contains(&regions.len()) {
                    region_cuts += 1;
                }
            }
        }
        assert!(matrices > 30, "{matrices}");
        // Random splits keep every region whole by chance about half as often.
        assert!(region_cuts > 50, "{region_cuts}");
    }
}
