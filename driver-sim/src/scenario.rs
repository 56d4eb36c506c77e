//! What a simulation runs: nodes, network, timed events and expectations. Built by
//! [`crate::yaml`] from a scenario file, or by [`crate::schedule`] from a seed.
//!
//! Times are nanoseconds of simulated time since the start (`*_ns`).

use std::fmt;
use std::time::Duration;

use gslb_state_core::{Limits, Source, StateSettings};

/// Nanoseconds in a millisecond.
pub const NS_PER_MS: u64 = 1_000_000;

/// Delay, loss and duplication on the path between two nodes (through the broker).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// Base one-way delay, publisher to subscriber.
    pub latency_ns: u64,
    /// Each delivery is delayed by `latency ± jitter` (uniform, never below zero); one
    /// sender's messages still reach a receiver in the order they were sent, as NATS delivers
    /// them, unless `reorder` holds one back.
    pub jitter_ns: u64,
    /// Probability that a delivery is lost.
    pub loss: f64,
    /// Probability that a delivery arrives twice (the copy with its own delay, in no order).
    pub duplicate: f64,
    /// Probability that a delivery is held back by up to one more `latency + jitter`, so
    /// later messages overtake it.
    pub reorder: f64,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            latency_ns: 10 * NS_PER_MS,
            jitter_ns: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
        }
    }
}

impl LinkParams {
    /// The longest delay a delivery on this link can take.
    pub fn max_delay_ns(&self) -> u64 {
        let one = self.latency_ns + self.jitter_ns;
        if self.reorder > 0.0 { 2 * one } else { one }
    }

    /// The same link with `extra_ns` more latency (a region's distance on top of it).
    pub fn delayed_by(self, extra_ns: u64) -> LinkParams {
        LinkParams {
            latency_ns: self.latency_ns.saturating_add(extra_ns),
            ..self
        }
    }
}

/// The network: default link parameters, per-pair overrides, and the extra delay between
/// regions on top of both.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkSpec {
    /// Every pair without an override.
    pub default: LinkParams,
    /// Overrides for node pairs; of two for the same pair, the later one counts.
    pub links: Vec<LinkOverride>,
    /// Extra one-way delay between the nodes of two regions, added to their link's latency.
    pub region_latency: RegionLatency,
}

/// Extra one-way delays between regions, the same both ways: every delivery between a node of
/// region `a` and a node of region `b` takes that much longer than its link's `latency ±
/// jitter` says (the distance between the regions of a NATS super-cluster). A region may be
/// paired with itself (a delay between its own nodes). The KV store's reads are not delayed
/// by it.
///
/// Bounded by what sets it: one entry per pair set to a delay other than zero.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionLatency {
    /// The regions, in the order their first node is listed (nodes without a region are in
    /// the empty one). Empty when no delay was ever set.
    regions: Vec<String>,
    /// Each node's region, an index into `regions`.
    node_region: Vec<usize>,
    /// `(a, b, extra_ns)` with `a <= b`, sorted by `(a, b)`, one per pair, `extra_ns > 0`.
    pairs: Vec<(usize, usize, u64)>,
}

impl RegionLatency {
    /// No extra delay yet between the regions of the nodes, given in node order.
    pub fn new<'a>(node_regions: impl IntoIterator<Item = &'a str>) -> Self {
        let mut regions: Vec<String> = Vec::new();
        let node_region = node_regions
            .into_iter()
            .map(|r| match regions.iter().position(|x| x == r) {
                Some(i) => i,
                None => {
                    regions.push(r.to_owned());
                    regions.len() - 1
                }
            })
            .collect();
        RegionLatency {
            regions,
            node_region,
            pairs: Vec::new(),
        }
    }

    /// The regions (empty until [`RegionLatency::new`]).
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// The index of region `name`, if a node is in it.
    pub fn region(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r == name)
    }

    /// Sets the extra delay between regions `a` and `b` (indices into
    /// [`RegionLatency::regions`]), both ways; 0 removes it.
    pub fn set(&mut self, a: usize, b: usize, extra_ns: u64) {
        assert!(
            a < self.regions.len() && b < self.regions.len(),
            "region index out of range"
        );
        let key = (a.min(b), a.max(b));
        match self.pairs.binary_search_by_key(&key, |&(a, b, _)| (a, b)) {
            Ok(i) if extra_ns == 0 => {
                self.pairs.remove(i);
            }
            Ok(i) => self.pairs[i].2 = extra_ns,
            Err(_) if extra_ns == 0 => {}
            Err(i) => self.pairs.insert(i, (key.0, key.1, extra_ns)),
        }
    }

    /// The extra delay between node `x` and node `y` (indices into [`Scenario::nodes`]).
    pub fn extra_ns(&self, x: usize, y: usize) -> u64 {
        let (Some(&a), Some(&b)) = (self.node_region.get(x), self.node_region.get(y)) else {
            return 0;
        };
        let key = (a.min(b), a.max(b));
        self.pairs
            .binary_search_by_key(&key, |&(a, b, _)| (a, b))
            .map_or(0, |i| self.pairs[i].2)
    }

    /// The largest extra delay between any two regions.
    pub fn max_extra_ns(&self) -> u64 {
        self.pairs.iter().map(|p| p.2).max().unwrap_or(0)
    }

    /// Every delay set: `(region a, region b, extra_ns)`, in the order of the regions.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.pairs
            .iter()
            .map(|&(a, b, d)| (self.regions[a].as_str(), self.regions[b].as_str(), d))
    }

    /// Each node's region index (for checks).
    pub fn node_regions(&self) -> &[usize] {
        &self.node_region
    }
}

/// The parameters of the path between two nodes, in both directions, instead of the
/// network's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkOverride {
    /// One node (an index into [`Scenario::nodes`]), the lower of the two.
    pub a: usize,
    /// The other node, `b >= a`.
    pub b: usize,
    /// The parameters of the path between them.
    pub params: LinkParams,
}

impl LinkOverride {
    /// An override for the path between `x` and `y`, in either order.
    pub fn between(x: usize, y: usize, params: LinkParams) -> Self {
        LinkOverride {
            a: x.min(y),
            b: x.max(y),
            params,
        }
    }
}

impl NetworkSpec {
    /// The parameters of the path between `a` and `b`: its override or the default, with
    /// the extra delay between their regions added to its latency.
    pub fn link(&self, a: usize, b: usize) -> LinkParams {
        let (a, b) = (a.min(b), a.max(b));
        self.links
            .iter()
            .rev()
            .find(|l| (l.a, l.b) == (a, b))
            .map_or(self.default, |l| l.params)
            .delayed_by(self.region_latency.extra_ns(a, b))
    }

    /// The longest delay of any link (at most; with region latency, the default link is
    /// taken with the largest extra delay between any two regions).
    pub fn max_delay_ns(&self) -> u64 {
        let regions = &self.region_latency;
        self.links
            .iter()
            .map(|l| {
                l.params
                    .delayed_by(regions.extra_ns(l.a, l.b))
                    .max_delay_ns()
            })
            .fold(
                self.default
                    .delayed_by(regions.max_extra_ns())
                    .max_delay_ns(),
                u64::max,
            )
    }
}

/// The delays set, in words: `eu-us +40 ms, eu-ap +120 ms`, or `none`.
impl fmt::Display for RegionLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pairs.is_empty() {
            return f.write_str("none");
        }
        for (i, (a, b, d)) in self.pairs().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{a}-{b} +{} ms", d as f64 / 1e6)?;
        }
        Ok(())
    }
}

/// One simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node id.
    pub id: String,
    /// Region (shown in membership; may be empty).
    pub region: String,
    /// When the node first starts (0 for most; a node that joins a running cluster later).
    pub start_ns: u64,
    /// Wall clock minus true time at the start, in ms.
    pub clock_offset_ms: i64,
    /// Wall-clock drift, in parts per billion (1e6 = 0.001 = 1 ms per second).
    pub drift_ppb: i64,
    /// The node's monotonic clock: `None` starts it at 0 at every (re)start, as the NATS
    /// driver's does; `Some(offset)` makes it read `offset` at simulated time 0 and run on
    /// across restarts.
    pub monotonic_offset_ns: Option<u64>,
}

/// Something that happens at a point in simulated time.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A node's own probe sees `endpoint` up (`Some(true)`), down, or withdraws (`None`).
    Observe {
        /// The node.
        node: usize,
        /// The endpoint.
        endpoint: String,
        /// The observation.
        healthy: Option<bool>,
    },
    /// Messages cross between groups no more (each group still reaches the broker). Nodes in
    /// no group form one more group together. The KV store stays reachable only from the
    /// group holding the most nodes (on a tie, the first listed). A scenario file may name
    /// regions instead of nodes; they are turned into these groups of nodes when it is read.
    Partition {
        /// Disjoint groups of node indices.
        groups: Vec<Vec<usize>>,
    },
    /// Ends every partition.
    Heal,
    /// The node stops: its memory is lost, its messages in flight are still delivered.
    Crash(usize),
    /// The node leaves gracefully: its core is told ([`gslb_state_core::Input::Leave`]), its
    /// outputs (the announcement, its leave record, deletes of its report keys) are carried
    /// out, and then it stops as a crash does.
    Leave(usize),
    /// The node starts again (after a crash or a leave) and reads the KV snapshot; its core
    /// chooses a new incarnation.
    Restart {
        /// The node.
        node: usize,
        /// The wall clock's offset from true time from now on, in ms (its drift rate is
        /// kept): a clock stepped back across the restart, as a VM restored from a snapshot
        /// or a reset RTC has. `None` keeps the clock as it is.
        clock_offset_ms: Option<i64>,
    },
    /// The broker (and with it the KV store) goes down (`false`) or comes back (`true`).
    Broker(bool),
    /// The node loses its connection to the broker (messages and KV), nothing else.
    Isolate(usize),
    /// The node reconnects to the broker.
    Rejoin(usize),
    /// The node's wall clock is set to `offset` from true time and drifts from now on.
    Clock {
        /// The node.
        node: usize,
        /// New offset in ms; `None` keeps the current one (drift included).
        offset_ms: Option<i64>,
        /// New drift in parts per billion.
        drift_ppb: i64,
    },
    /// New network parameters from now on.
    Network(NetworkSpec),
}

impl EventKind {
    /// Whether this is a fault (or the end of one), as opposed to an observation.
    pub fn is_fault(&self) -> bool {
        !matches!(self, EventKind::Observe { .. })
    }
}

/// An event with its time and, when it came from a file, its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub at_ns: u64,
    /// Line in the scenario file.
    pub line: Option<u64>,
    /// What.
    pub kind: EventKind,
}

/// What an expectation checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpectChecks {
    /// The endpoint whose decision is checked.
    pub endpoint: Option<String>,
    /// Expected verdict (`Some(None)` = unknown); `None` = not checked.
    pub healthy: Option<Option<bool>>,
    /// Expected source.
    pub source: Option<Source>,
    /// Expected count of healthy reports.
    pub healthy_reports: Option<u32>,
    /// Expected count of reports.
    pub total_reports: Option<u32>,
    /// Expected count of regions whose counted reports meet the threshold.
    pub healthy_regions: Option<u32>,
    /// Expected count of regions with a counted report.
    pub total_regions: Option<u32>,
    /// Expected pending change (`Some(None)` = none pending, `Some(Some(h))` = a change to
    /// `h` waits for its hold); `None` = not checked.
    pub pending: Option<Option<bool>>,
    /// Expected active members (sorted ids, the node itself included).
    pub active_members: Option<Vec<String>>,
}

/// A statement about one node at one instant, checked after every event at or before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// When.
    pub at_ns: u64,
    /// Line in the scenario file.
    pub line: Option<u64>,
    /// Which node.
    pub node: usize,
    /// What must hold.
    pub checks: ExpectChecks,
}

/// A whole simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Seeds every random draw.
    pub seed: u64,
    /// How long to simulate.
    pub duration_ns: u64,
    /// `state.*` of every node.
    pub state: StateSettings,
    /// The network at the start.
    pub network: NetworkSpec,
    /// The nodes; each starts at its [`NodeSpec::start_ns`].
    pub nodes: Vec<NodeSpec>,
    /// Events, sorted by time (stable: file order within one instant).
    pub events: Vec<Event>,
    /// Expectations, sorted by time.
    pub expects: Vec<Expect>,
    /// [`Limits::compact_interval`] of every node: the least time between two compactions
    /// of its reports into a compacted snapshot. The core's default for a scenario file or
    /// [`Scenario::new`]; [`crate::schedule::COMPACT_INTERVAL`] for `gslb-sim check`'s.
    pub compact_interval: Duration,
}

impl Scenario {
    /// A scenario with `nodes` and nothing happening, for building one in code.
    pub fn new(seed: u64, duration: Duration, state: StateSettings, nodes: &[&str]) -> Self {
        Scenario {
            seed,
            duration_ns: duration.as_nanos() as u64,
            state,
            network: NetworkSpec::default(),
            nodes: nodes
                .iter()
                .map(|id| NodeSpec {
                    id: (*id).to_owned(),
                    region: String::new(),
                    start_ns: 0,
                    clock_offset_ms: 0,
                    drift_ppb: 0,
                    monotonic_offset_ns: None,
                })
                .collect(),
            events: Vec::new(),
            expects: Vec::new(),
            compact_interval: Limits::default().compact_interval,
        }
    }

    /// Adds an event (keeps the list sorted by time).
    pub fn at(&mut self, at: Duration, kind: EventKind) -> &mut Self {
        let at_ns = at.as_nanos() as u64;
        let pos = self.events.partition_point(|e| e.at_ns <= at_ns);
        self.events.insert(
            pos,
            Event {
                at_ns,
                line: None,
                kind,
            },
        );
        self
    }

    /// The index of node `id`.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// The longest delay any delivery can take under any network in the scenario, plus the
    /// KV round trip the simulation adds to reads.
    pub fn max_delay_ns(&self) -> u64 {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Network(n) => Some(n.max_delay_ns()),
                _ => None,
            })
            .fold(self.network.max_delay_ns(), u64::max)
    }

    /// Every endpoint named by an observation, in first-seen order.
    pub fn endpoints(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out: Vec<String> = Vec::new();
        for e in &self.events {
            if let EventKind::Observe { endpoint, .. } = &e.kind
                && seen.insert(endpoint.as_str())
            {
                out.push(endpoint.clone());
            }
        }
        out
    }
}

/// Formats simulated time as seconds with milliseconds: `12.345s`.
pub fn fmt_time(ns: u64) -> String {
    let ms = ns / NS_PER_MS;
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}
