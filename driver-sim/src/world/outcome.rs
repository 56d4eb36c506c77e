//! What a run is asked to record ([`RunOptions`]) and what it leaves ([`Outcome`]).

use std::collections::BTreeMap;

use gslb_state_core::{Decision, DownReason};

use crate::trace::{FaultKind, Record, Trace};

use super::World;

/// What a run records besides the trace.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Track heartbeats (when each was published, and when each arrived where) to check the
    /// expiry bounds (costs a decode per heartbeat).
    pub track_expiry: bool,
    /// Sample memory bounds at this period (0 = never).
    pub sample_every_ns: u64,
    /// Take a [`Probe`] of every node at these instants (after every event at that instant).
    pub probes_ns: Vec<u64>,
    /// Do not record decisions and membership changes (for benchmarks).
    pub quiet: bool,
}

/// One node as seen at a probe instant.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeProbe {
    /// Whether it reaches the broker.
    pub connected: bool,
    /// Its active members, sorted.
    pub active: Vec<String>,
    /// Its decision on every endpoint it knows.
    pub decisions: BTreeMap<String, Decision>,
    /// Its local observations (the probe truth the simulation fed it).
    pub observations: BTreeMap<String, bool>,
}

/// Every node at one instant (`None` for a node that is not running).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// When.
    pub t_ns: u64,
    /// By node index.
    pub nodes: Vec<Option<NodeProbe>>,
}

/// The verdict on one expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectOutcome {
    /// Index into [`crate::Scenario::expects`].
    pub index: usize,
    /// Whether it held.
    pub ok: bool,
    /// What was seen, in words.
    pub seen: String,
    /// What was wrong, in words (empty when it held).
    pub why: String,
}

/// A `MemberDown` and what the simulation knew when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownEvent {
    /// When.
    pub t_ns: u64,
    /// The node whose view changed.
    pub observer: u32,
    /// The member that left.
    pub member: String,
    /// Why.
    pub reason: DownReason,
    /// When the newest heartbeat the observer had from it arrived (this life of the
    /// observer), if one did.
    pub last_heartbeat_ns: Option<u64>,
}

/// One life of a node: from a (re)start to a crash or a leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Life {
    /// Node index.
    pub node: u32,
    /// When it started.
    pub started_ns: u64,
    /// When it stopped (crashed or left), if it did.
    pub stopped_ns: Option<u64>,
    /// Whether it stopped by leaving gracefully.
    pub left: bool,
    /// When its snapshot read was handed in complete, if it was.
    pub snapshot_ns: Option<u64>,
    /// Its incarnation, as its core chose it (raised when the core raised it).
    pub incarnation: u64,
}

/// What a finished run leaves.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The trace.
    pub trace: Trace,
    /// One per expectation of the scenario, in the scenario's order.
    pub expects: Vec<ExpectOutcome>,
    /// For each expectation on an endpoint that failed, by its index: the node's explanation
    /// of its decision at that instant ([`gslb_state_core::Node::explain`], as text).
    pub explanations: BTreeMap<usize, String>,
    /// Probes requested by [`RunOptions::probes_ns`].
    pub probes: Vec<Probe>,
    /// Every `MemberDown` (when [`RunOptions::track_expiry`] is set).
    pub downs: Vec<DownEvent>,
    /// Per node index, when each of its heartbeats was published (when
    /// [`RunOptions::track_expiry`] is set), in time order; only heartbeats that went out
    /// (the node reached the broker) are here.
    pub heartbeats_sent: Vec<Vec<u64>>,
    /// Every node life, in the order they began.
    pub lives: Vec<Life>,
    /// Memory bounds that were exceeded.
    pub bound_violations: Vec<String>,
    /// Start-up snapshots that left a node's view of a member's reports behind what a full
    /// per-key read of the health bucket gives ([`crate::invariants::snapshot`]; not
    /// checked when [`RunOptions::quiet`]).
    pub snapshot_mismatches: Vec<String>,
    /// Snapshot chunks written to the KV store (`KvPut` of kind `Chunk` acknowledged).
    pub chunk_writes: u64,
    /// Snapshot chunk writes that failed (the node did not reach the KV store).
    pub chunk_writes_failed: u64,
    /// Snapshot chunks handed to a reader in a start-up snapshot's report read.
    pub chunks_read: u64,
    /// Most events queued at once.
    pub peak_queue: usize,
    /// Deliveries handed to cores.
    pub deliveries: u64,
    /// Lost deliveries the receivers were told of ([`gslb_state_core::Input::MessagesLost`]).
    pub losses_told: u64,
    /// Events processed.
    pub events: u64,
}

impl Outcome {
    /// An empty outcome for a run of `nodes`.
    pub(crate) fn new(nodes: Vec<String>) -> Self {
        let n = nodes.len();
        Outcome {
            trace: Trace {
                nodes,
                ..Trace::default()
            },
            expects: Vec::new(),
            explanations: BTreeMap::new(),
            probes: Vec::new(),
            downs: Vec::new(),
            heartbeats_sent: vec![Vec::new(); n],
            lives: Vec::new(),
            bound_violations: Vec::new(),
            snapshot_mismatches: Vec::new(),
            chunk_writes: 0,
            chunk_writes_failed: 0,
            chunks_read: 0,
            peak_queue: 0,
            deliveries: 0,
            losses_told: 0,
            events: 0,
        }
    }
}

/// The bound on queued events for `nodes` nodes: every node's timer, a few KV reads each, and
/// the publishes of a few heartbeat intervals in flight, each one event.
pub fn queue_bound(nodes: usize) -> usize {
    64 + nodes * 64
}

impl World<'_> {
    /// Adds `record` to the trace.
    pub(super) fn record(&mut self, record: Record) {
        self.outcome.trace.records.push(record);
    }

    /// Records a scenario event that took effect now, concerning `node` (if one).
    pub(super) fn fault(&mut self, kind: FaultKind, node: Option<usize>, text: String) {
        let t_ns = self.now_ns;
        self.record(Record::Fault {
            t_ns,
            kind,
            node: node.map(|n| n as u32),
            text,
        });
    }
}
