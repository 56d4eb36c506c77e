//! Node lives: a node's clocks, its start and restart (a new core, which chooses its own
//! incarnation), its crash and its graceful leave, and what its driver tells it about the
//! connection.

use std::collections::{BTreeMap, HashMap};

use gslb_state_core::config::DEFAULT_APPLY_TIMEOUT;
use gslb_state_core::policy::{Pending, Rule};
use gslb_state_core::{
    Connectivity, Decision, Input, Instant, Limits, Node, NodeConfig, Now, Source, WallTime,
};

use crate::clock::{Clock, MonoClock};
use crate::scenario::NodeSpec;
use crate::trace::Record;

use super::carry::HeardHeartbeat;
use super::{CLUSTER_ID, Life, World};

/// One simulated node: its core (while running) and what survives a crash.
#[derive(Debug)]
pub(super) struct SimNode {
    pub(super) id: String,
    pub(super) region: String,
    pub(super) core: Option<Node>,
    /// The life number, bumped on every start and stop; stale deliveries, timers and reads
    /// carry an old one.
    pub(super) life: u32,
    /// The wall clock.
    pub(super) wall_clock: Clock,
    /// The monotonic clock.
    pub(super) monotonic: MonoClock,
    /// When the current (or last) life started.
    pub(super) started_ns: u64,
    /// The instant of the earliest pending timer event.
    pub(super) timer_at_ns: Option<u64>,
    /// Messages published in this life.
    pub(super) messages_published: u64,
    /// What this node's probes see (survives crashes: the probes see it again on restart).
    pub(super) observations: BTreeMap<String, bool>,
    /// Whether the core was last told it is connected.
    pub(super) told_connected: bool,
    /// Per node index: the newest heartbeat accepted from it this life, when heartbeats are
    /// tracked ([`super::RunOptions::track_expiry`]).
    pub(super) heard: Vec<Option<HeardHeartbeat>>,
    /// This life's index in [`super::Outcome::lives`].
    pub(super) life_index: usize,
    /// What the records of its snapshot's members read said was durable: (member,
    /// incarnation) → `kv_seq` (for the snapshot-reads check).
    pub(super) snapshot_kv_seqs: std::collections::BTreeMap<(String, u64), u64>,
    /// Per endpoint, when the scenario has holds: the decision last recorded in this life.
    pub(super) recorded: HashMap<String, Recorded>,
}

/// What the trace shows of a decision when the scenario has holds (a new record whenever it
/// changes): the verdict held, the source, the rule's verdict (recomputed from the counts)
/// and the pending change, its instant in simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recorded {
    shown: Option<bool>,
    source: Source,
    rule: Option<bool>,
    pending: Option<Pending>,
}

impl Recorded {
    /// What the trace shows of `d` (in simulated time) under `rule`.
    pub(super) fn of(rule: Rule, d: &Decision) -> Recorded {
        Recorded {
            shown: d.healthy,
            source: d.source,
            rule: crate::trace::rule_verdict(rule, d),
            pending: d.pending,
        }
    }
}

impl SimNode {
    /// A node of `spec` in a world of `nodes` nodes, not started yet.
    pub(super) fn new(spec: &NodeSpec, nodes: usize) -> Self {
        SimNode {
            id: spec.id.clone(),
            region: spec.region.clone(),
            core: None,
            life: 0,
            wall_clock: Clock::new(spec.clock_offset_ms, spec.drift_ppb),
            monotonic: MonoClock::from_offset(spec.monotonic_offset_ns),
            started_ns: 0,
            timer_at_ns: None,
            messages_published: 0,
            observations: BTreeMap::new(),
            told_connected: false,
            heard: vec![None; nodes],
            life_index: 0,
            snapshot_kv_seqs: std::collections::BTreeMap::new(),
            recorded: HashMap::new(),
        }
    }

    /// Both of this node's clocks at simulated time `t_ns`.
    pub(super) fn now_at(&self, t_ns: u64) -> Now {
        Now::new(
            Instant::from_nanos(self.monotonic.instant_ns(t_ns, self.started_ns)),
            WallTime::from_unix_ms(self.wall_clock.wall_ms(t_ns)),
        )
    }

    /// The simulated time at which this node's monotonic clock reads `wake`.
    pub(super) fn sim_time_of(&self, wake: Instant) -> u64 {
        self.monotonic.sim_time_ns(wake.as_nanos(), self.started_ns)
    }

    /// `d` with its pending change's instant in simulated time, as the trace keeps it.
    pub(super) fn in_sim_time(&self, mut d: Decision) -> Decision {
        if let Some(p) = &mut d.pending {
            p.at = Instant::from_nanos(self.sim_time_of(p.at));
        }
        d
    }
}

impl World<'_> {
    /// Node `n`'s clocks now.
    pub(super) fn now_of(&self, n: usize) -> Now {
        self.nodes[n].now_at(self.now_ns)
    }

    /// Starts node `n` (at time 0 or on a restart): a new core, which chooses its own
    /// incarnation from its wall clock; its probes report what they see. It asks for the
    /// snapshot itself once it is told it is connected.
    pub(super) fn start(&mut self, n: usize) {
        let config = NodeConfig {
            cluster_id: CLUSTER_ID.to_owned(),
            node_id: self.nodes[n].id.clone(),
            region: self.nodes[n].region.clone(),
            min_incarnation: 0,
            state: self.scenario.state.clone(),
            apply_timeout: DEFAULT_APPLY_TIMEOUT,
            confirm_apply: false,
            region_buckets: false,
            limits: Limits {
                compact_interval: self.scenario.compact_interval,
                ..Limits::default()
            },
        };
        self.nodes[n].started_ns = self.now_ns;
        let now = self.now_of(n);
        let core = match Node::new(config, now) {
            Ok(core) => core,
            Err(e) => {
                // The scenario was validated; a refusal here is a bug worth seeing.
                let t_ns = self.now_ns;
                self.record(Record::Note {
                    t_ns,
                    node: n as u32,
                    text: format!("node refused to start: {e}"),
                });
                return;
            }
        };
        self.outcome.lives.push(Life {
            node: n as u32,
            started_ns: self.now_ns,
            stopped_ns: None,
            left: false,
            snapshot_ns: None,
            incarnation: core.incarnation(),
        });
        let node = &mut self.nodes[n];
        node.life += 1;
        node.life_index = self.outcome.lives.len() - 1;
        node.core = Some(core);
        node.timer_at_ns = None;
        node.messages_published = 0;
        node.told_connected = false;
        node.heard.iter_mut().for_each(|h| *h = None);
        node.recorded.clear();
        if !self.options.quiet {
            let t_ns = self.now_ns;
            let id = self.nodes[n].id.clone();
            self.record(Record::Members {
                t_ns,
                node: n as u32,
                active: vec![id],
            });
        }
        let observations: Vec<Input> = self.nodes[n]
            .observations
            .iter()
            .map(|(endpoint, &healthy)| Input::LocalHealth {
                endpoint: endpoint.clone(),
                healthy: Some(healthy),
            })
            .collect();
        self.feed(n, observations);
        self.drain(n);
    }

    /// Node `n` leaves gracefully: its core is told, what it hands out (the announcement on its
    /// heartbeat subject, its leave record, deletes of its report keys; nothing while it does
    /// not reach the broker) is carried out, and then it stops.
    pub(super) fn leave(&mut self, n: usize) {
        self.feed(n, vec![Input::Leave]);
        self.stop(n, true);
    }

    /// Node `n` stops (`left`: after leaving; otherwise it crashed): its memory is lost; what
    /// it already sent is still delivered.
    pub(super) fn stop(&mut self, n: usize, left: bool) {
        let node = &mut self.nodes[n];
        node.core = None;
        node.life += 1;
        node.timer_at_ns = None;
        let life = &mut self.outcome.lives[node.life_index];
        life.stopped_ns = Some(self.now_ns);
        life.left = left;
    }

    /// Tells every running node whether it reaches the broker.
    pub(super) fn sync_connectivity(&mut self) {
        for n in 0..self.nodes.len() {
            if self.nodes[n].core.is_none() {
                continue;
            }
            let connected = self.net.connected(n);
            if connected != self.nodes[n].told_connected {
                self.nodes[n].told_connected = connected;
                let c = if connected {
                    Connectivity::Connected
                } else {
                    Connectivity::Disconnected
                };
                self.feed(n, vec![Input::Connectivity(c)]);
            }
        }
    }
}
