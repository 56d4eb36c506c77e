//! The event loop: N real cores over the simulated network and KV store, driven exactly as a
//! production driver drives one core, with simulated time jumping from event to event.
//!
//! How each output of the core is carried out:
//!
//! | output | what the simulation does |
//! | --- | --- |
//! | `Publish` | fans out to every other running node (the NATS driver connects with `no_echo`), each copy delayed, lost, duplicated or reordered per link (in order per link otherwise, as NATS keeps a publisher's order); dropped on arrival if the path closed meanwhile |
//! | `KvPut`, `KvDelete` | applied to the KV store at once if the node reaches it (`KvPutOk` handed back), else `KvPutFailed` is handed back |
//! | `Resync`, `ReadMembers` | after one link latency, the matching entries are handed in, then `KvReadDone` |
//! | `Decision`, `MemberUp`, `MemberDown` | recorded in the trace |
//!
//! On (re)start a node reads the snapshot (members bucket, health bucket, `KvReadDone(Snapshot)`)
//! as soon as it reaches the KV store, and its probes report again what they see.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::rc::Rc;

use bytes::Bytes;
use gslb_state_core::codec::{self, Message};
use gslb_state_core::stats::{DropReason, MessageKind};
use gslb_state_core::{
    Bucket, Connectivity, Decision, DownReason, Input, Instant, Limits, Node, NodeConfig, Now,
    Output, WallTime,
};

use crate::clock::Clock;
use crate::kv::Kv;
use crate::net::{MAX_COPIES, Net};
use crate::scenario::{EventKind, Scenario, fmt_time};
use crate::trace::{FaultKind, Record, Trace};

/// The cluster id every simulated node belongs to.
pub const CLUSTER_ID: &str = "sim";

/// Inputs handed to one node before its outputs are drained, at most.
const FEED_CHUNK: usize = 1024;

/// What a run records besides the trace.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Track heartbeat arrivals to check expiry bounds (costs a decode per heartbeat).
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

/// Every node at one instant (`None` for a crashed node).
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
    /// Index into [`Scenario::expects`].
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

/// Where a node's life began and whether it read the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Life {
    /// Node index.
    pub node: u32,
    /// When it started.
    pub started_ns: u64,
    /// When it crashed, if it did.
    pub crashed_ns: Option<u64>,
    /// When its snapshot read was handed in, if it was.
    pub snapshot_ns: Option<u64>,
    /// Its incarnation.
    pub incarnation: u64,
}

/// What a finished run leaves.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The trace.
    pub trace: Trace,
    /// One per expectation of the scenario, in the scenario's order.
    pub expects: Vec<ExpectOutcome>,
    /// Probes requested by [`RunOptions::probes_ns`].
    pub probes: Vec<Probe>,
    /// Every `MemberDown` (when [`RunOptions::track_expiry`] is set).
    pub downs: Vec<DownEvent>,
    /// Every node life.
    pub lives: Vec<Life>,
    /// Memory bounds that were exceeded.
    pub bound_violations: Vec<String>,
    /// Most events queued at once.
    pub peak_queue: usize,
    /// Deliveries handed to cores.
    pub deliveries: u64,
    /// Events processed.
    pub events: u64,
}

/// A message on its way to its receivers, with their arrival times in order.
#[derive(Debug)]
struct Flight {
    from: u32,
    subject: String,
    payload: Bytes,
    /// (heartbeat incarnation, sequence), when tracked.
    heartbeat: Option<(u64, u64)>,
    /// (arrival time, receiver, receiver's life), sorted.
    arrivals: Vec<(u64, u32, u32)>,
}

#[derive(Debug)]
enum KvRead {
    Snapshot,
    Resync { node: String, filter: String },
    Members,
}

#[derive(Debug)]
enum Ev {
    Scenario(usize),
    Timer { node: u32, life: u32 },
    Deliver { flight: Rc<Flight>, idx: u32 },
    KvRead { node: u32, life: u32, read: KvRead },
    Expect(usize),
    Probe(usize),
    Sample,
}

/// An event in the queue, ordered by (time, class, insertion order).
#[derive(Debug)]
struct Scheduled {
    t_ns: u64,
    /// 0 for events, 1 for observations of the state (after every event of the instant).
    class: u8,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.t_ns, other.class, other.seq).cmp(&(self.t_ns, self.class, self.seq))
    }
}

/// A node event inside a window.
#[derive(Debug, Clone, Copy)]
struct WinItem {
    t_ns: u64,
    seq: u64,
    what: WinWhat,
}

#[derive(Debug, Clone, Copy)]
enum WinWhat {
    Timer {
        life: u32,
    },
    /// Arrival `idx` of the window's flight number `flight`.
    Deliver {
        flight: u32,
        idx: u32,
    },
}

/// One simulated node: its core (while running) and what survives a crash.
#[derive(Debug)]
struct SimNode {
    id: String,
    region: String,
    core: Option<Node>,
    /// Bumped on every start and crash; stale deliveries, timers and reads carry an old one.
    life: u32,
    clock: Clock,
    /// The instant of the earliest pending timer event.
    timer_at: Option<u64>,
    /// Messages published in this life.
    published: u64,
    last_incarnation: u64,
    /// What this node's probes see (survives crashes: the probes see it again on restart).
    observations: BTreeMap<String, bool>,
    /// What we last told the core.
    connected: bool,
    snapshot_pending: bool,
    snapshot_scheduled: bool,
    /// Newest heartbeat (incarnation, seq, arrival) accepted from each node, this life.
    heard: Vec<Option<(u64, u64, u64)>>,
    life_index: usize,
}

/// The simulation of one scenario.
pub struct World<'a> {
    scenario: &'a Scenario,
    opts: RunOptions,
    now: u64,
    seq: u64,
    /// Node events: timers and deliveries.
    queue: BinaryHeap<Scheduled>,
    /// Events that touch shared state: scenario events, KV reads, observations of the state.
    globals: BinaryHeap<Scheduled>,
    /// The events of the node running in the current window.
    local: BinaryHeap<Scheduled>,
    /// The node running in the current window, and the window's end.
    window_node: Option<u32>,
    window_end: (u64, u8),
    /// Per node: its events of the current window (kept to reuse their memory).
    win_buckets: Vec<Vec<WinItem>>,
    /// The messages delivered in the current window.
    win_flights: Vec<Rc<Flight>>,
    /// Latest in-order arrival per link, `from * nodes + to`.
    link_last: Vec<u64>,
    nodes: Vec<SimNode>,
    net: Net,
    kv: Kv,
    kv_delay_ns: u64,
    max_endpoints: usize,
    out: Outcome,
    outputs: Vec<Output>,
    /// Scenario events before this index were applied with an earlier observation batch.
    observed_until: usize,
}

impl<'a> World<'a> {
    /// A world ready to run `scenario`.
    pub fn new(scenario: &'a Scenario, opts: RunOptions) -> Self {
        let n = scenario.nodes.len();
        let nodes = scenario
            .nodes
            .iter()
            .map(|s| SimNode {
                id: s.id.clone(),
                region: s.region.clone(),
                core: None,
                life: 0,
                clock: Clock::new(s.clock_offset_ms, s.drift_ppb),
                timer_at: None,
                published: 0,
                last_incarnation: 0,
                observations: BTreeMap::new(),
                connected: false,
                snapshot_pending: false,
                snapshot_scheduled: false,
                heard: vec![None; n],
                life_index: 0,
            })
            .collect();
        let trace = Trace {
            nodes: scenario.nodes.iter().map(|s| s.id.clone()).collect(),
            records: Vec::new(),
        };
        World {
            scenario,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            globals: BinaryHeap::new(),
            local: BinaryHeap::new(),
            window_node: None,
            window_end: (0, 0),
            win_buckets: (0..n).map(|_| Vec::new()).collect(),
            win_flights: Vec::new(),
            link_last: vec![0; n * n],
            nodes,
            net: Net::new(n, scenario.network.clone()),
            kv: Kv::default(),
            kv_delay_ns: scenario.network.default.latency_ns,
            max_endpoints: scenario.endpoints().len(),
            out: Outcome {
                trace,
                expects: Vec::new(),
                probes: Vec::new(),
                downs: Vec::new(),
                lives: Vec::new(),
                bound_violations: Vec::new(),
                peak_queue: 0,
                deliveries: 0,
                events: 0,
            },
            outputs: Vec::new(),
            observed_until: 0,
            opts,
        }
    }

    /// Runs the scenario to its end.
    pub fn run(mut self) -> Outcome {
        for i in 0..self.scenario.events.len() {
            let t = self.scenario.events[i].at_ns;
            self.schedule(t, 0, Ev::Scenario(i));
        }
        for i in 0..self.scenario.expects.len() {
            let t = self.scenario.expects[i].at_ns;
            self.schedule(t, 1, Ev::Expect(i));
        }
        for i in 0..self.opts.probes_ns.len() {
            let t = self.opts.probes_ns[i];
            self.schedule(t, 1, Ev::Probe(i));
        }
        if self.opts.sample_every_ns > 0 {
            self.schedule(0, 1, Ev::Sample);
        }
        for n in 0..self.nodes.len() {
            self.start(n);
        }
        self.sync_connectivity();
        let end = self.scenario.duration_ns;
        loop {
            let global = self.globals.peek().map(|s| (s.t_ns, s.class));
            let local = self.queue.peek().map(|s| s.t_ns);
            let global_first = match (global, local) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(g), Some(l)) => g <= (l, 0),
            };
            if global_first {
                let s = self.globals.pop().expect("peeked above");
                if s.t_ns > end {
                    break;
                }
                self.now = s.t_ns;
                self.out.events += 1;
                self.step(s.ev);
            } else {
                let t = local.expect("checked above");
                if t > end {
                    break;
                }
                let bound = (t + self.net.min_delay_ns().max(1), 0);
                let bound = match global {
                    Some(g) if g < bound => g,
                    _ => bound,
                };
                self.window(bound, end);
            }
        }
        self.out.expects.sort_by_key(|x| x.index);
        self.out.probes.sort_by_key(|p| p.t_ns);
        self.out
    }

    fn schedule(&mut self, t_ns: u64, class: u8, ev: Ev) {
        self.seq += 1;
        let s = Scheduled {
            t_ns,
            class,
            seq: self.seq,
            ev,
        };
        match &s.ev {
            Ev::Timer { node, .. }
                if self.window_node == Some(*node) && (t_ns, 0) < self.window_end =>
            {
                self.local.push(s);
            }
            Ev::Timer { .. } | Ev::Deliver { .. } => self.queue.push(s),
            _ => self.globals.push(s),
        }
        let queued = self.queue.len() + self.globals.len();
        self.out.peak_queue = self.out.peak_queue.max(queued);
    }

    /// Runs every node event before `bound` (time, class), node by node.
    ///
    /// Nodes talk only through deliveries, and no delivery takes less than the smallest link
    /// delay, so events of different nodes less than that apart cannot affect each other:
    /// within such a window each node's events run in time order, one node after the other
    /// (which keeps each node's state in cache). Events that touch shared state (scenario
    /// events, KV reads, expectations) are never inside a window; KV writes are (each node
    /// writes only its own keys). Records of the window are then put back in time order.
    fn window(&mut self, bound: (u64, u8), end: u64) {
        let limit = |t: u64| (t, 0) < bound && t <= end;
        let mut buckets = std::mem::take(&mut self.win_buckets);
        let mut flights = std::mem::take(&mut self.win_flights);
        let mut touched: Vec<u32> = Vec::new();
        let mut put = |buckets: &mut Vec<Vec<WinItem>>, node: u32, item: WinItem| {
            let b = &mut buckets[node as usize];
            if b.is_empty() {
                touched.push(node);
            }
            b.push(item);
        };
        while let Some(top) = self.queue.peek() {
            if !limit(top.t_ns) {
                break;
            }
            let s = self.queue.pop().expect("peeked above");
            match s.ev {
                Ev::Timer { node, life } => put(
                    &mut buckets,
                    node,
                    WinItem {
                        t_ns: s.t_ns,
                        seq: s.seq,
                        what: WinWhat::Timer { life },
                    },
                ),
                Ev::Deliver { flight, idx } => {
                    let mut i = idx as usize;
                    let fi = flights.len() as u32;
                    while let Some(&(t, to, _)) = flight.arrivals.get(i) {
                        if !limit(t) {
                            break;
                        }
                        self.seq += 1;
                        put(
                            &mut buckets,
                            to,
                            WinItem {
                                t_ns: t,
                                seq: self.seq,
                                what: WinWhat::Deliver {
                                    flight: fi,
                                    idx: i as u32,
                                },
                            },
                        );
                        i += 1;
                    }
                    if let Some(&(t, _, _)) = flight.arrivals.get(i) {
                        self.seq += 1;
                        self.queue.push(Scheduled {
                            t_ns: t,
                            class: 0,
                            seq: self.seq,
                            ev: Ev::Deliver {
                                flight: flight.clone(),
                                idx: i as u32,
                            },
                        });
                    }
                    flights.push(flight);
                }
                other => {
                    // Only node events are queued here; keep anything else in order.
                    self.globals.push(Scheduled { ev: other, ..s });
                }
            }
        }
        touched.sort_unstable();
        let first_record = self.out.trace.records.len();
        let first_down = self.out.downs.len();
        self.window_end = bound;
        for node in touched {
            self.window_node = Some(node);
            let mut items = std::mem::take(&mut buckets[node as usize]);
            items.sort_unstable_by_key(|w| (w.t_ns, w.seq));
            for w in items.drain(..) {
                // Timers this node armed within the window run in their place.
                while self
                    .local
                    .peek()
                    .is_some_and(|l| (l.t_ns, l.seq) < (w.t_ns, w.seq))
                {
                    let l = self.local.pop().expect("peeked above");
                    self.now = l.t_ns;
                    self.out.events += 1;
                    self.step(l.ev);
                }
                self.now = w.t_ns;
                self.out.events += 1;
                match w.what {
                    WinWhat::Deliver { flight, idx } => {
                        let f = flights[flight as usize].clone();
                        self.deliver_one(&f, idx as usize);
                    }
                    WinWhat::Timer { life } => self.step(Ev::Timer { node, life }),
                }
            }
            while let Some(l) = self.local.pop() {
                self.now = l.t_ns;
                self.out.events += 1;
                self.step(l.ev);
            }
            buckets[node as usize] = items;
        }
        self.window_node = None;
        self.window_end = (0, 0);
        flights.clear();
        self.win_flights = flights;
        self.win_buckets = buckets;
        self.out.trace.records[first_record..].sort_by_key(Record::t_ns);
        self.out.downs[first_down..].sort_by_key(|d| d.t_ns);
    }

    fn now_of(&self, n: usize) -> Now {
        Now::new(
            Instant::from_nanos(self.now),
            WallTime::from_unix_ms(self.nodes[n].clock.wall_ms(self.now)),
        )
    }

    fn record(&mut self, r: Record) {
        self.out.trace.records.push(r);
    }

    fn fault(&mut self, kind: FaultKind, node: Option<usize>, text: String) {
        let t_ns = self.now;
        self.record(Record::Fault {
            t_ns,
            kind,
            node: node.map(|n| n as u32),
            text,
        });
    }

    // ---- the loop ----

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Scenario(i) => self.apply(i),
            Ev::Timer { node, life } => {
                let n = node as usize;
                if self.nodes[n].life != life || self.nodes[n].timer_at != Some(self.now) {
                    return;
                }
                self.nodes[n].timer_at = None;
                let now = self.now_of(n);
                if let Some(core) = self.nodes[n].core.as_mut() {
                    core.handle_timeout(now);
                    self.drain(n);
                }
            }
            Ev::Deliver { flight, idx } => self.deliver(flight, idx as usize),
            Ev::KvRead { node, life, read } => {
                if self.nodes[node as usize].life == life {
                    self.kv_read(node as usize, read);
                }
            }
            Ev::Expect(i) => self.check_expect(i),
            Ev::Probe(i) => self.probe(i),
            Ev::Sample => {
                self.sample();
                let t = self.now + self.opts.sample_every_ns;
                self.schedule(t, 1, Ev::Sample);
            }
        }
    }

    fn deliver(&mut self, flight: Rc<Flight>, idx: usize) {
        if let Some(&(t, _, _)) = flight.arrivals.get(idx + 1) {
            self.schedule(
                t,
                0,
                Ev::Deliver {
                    flight: flight.clone(),
                    idx: idx as u32 + 1,
                },
            );
        }
        self.deliver_one(&flight, idx);
    }

    /// Hands arrival `idx` of `flight` to its receiver, if the path is still open.
    fn deliver_one(&mut self, flight: &Flight, idx: usize) {
        let (_, to, life) = flight.arrivals[idx];
        let to = to as usize;
        let from = flight.from as usize;
        if self.nodes[to].life != life
            || self.nodes[to].core.is_none()
            || !self.net.path_open(from, to)
        {
            return;
        }
        if let Some((inc, seq)) = flight.heartbeat {
            let heard = &mut self.nodes[to].heard[from];
            if heard.is_none_or(|(i, s, _)| (inc, seq) > (i, s)) {
                *heard = Some((inc, seq, self.now));
            }
        }
        self.out.deliveries += 1;
        let now = self.now_of(to);
        if let Some(core) = self.nodes[to].core.as_mut() {
            core.handle_received(now, &flight.subject, &flight.payload);
            self.drain(to);
        }
    }

    /// Hands `inputs` to node `n`, draining its outputs every [`FEED_CHUNK`] inputs.
    fn feed(&mut self, n: usize, inputs: Vec<Input>) {
        for chunk in inputs.chunks(FEED_CHUNK) {
            let now = self.now_of(n);
            let Some(core) = self.nodes[n].core.as_mut() else {
                return;
            };
            for input in chunk {
                core.handle(now, input.clone());
            }
            self.drain(n);
        }
    }

    /// Carries out every output of node `n`, then re-arms its timer.
    fn drain(&mut self, n: usize) {
        let mut membership_changed = false;
        loop {
            let mut outs = std::mem::take(&mut self.outputs);
            let Some(core) = self.nodes[n].core.as_mut() else {
                return;
            };
            while let Some(o) = core.poll_output() {
                outs.push(o);
            }
            if outs.is_empty() {
                self.outputs = outs;
                break;
            }
            let mut feedback = Vec::new();
            for o in outs.drain(..) {
                membership_changed |= self.carry_out(n, o, &mut feedback);
            }
            self.outputs = outs;
            if !feedback.is_empty() {
                let now = self.now_of(n);
                let core = self.nodes[n].core.as_mut().expect("checked above");
                for input in feedback {
                    core.handle(now, input);
                }
            }
        }
        if membership_changed && !self.opts.quiet {
            let active = self.nodes[n]
                .core
                .as_ref()
                .map(|c| c.active_member_ids())
                .unwrap_or_default();
            let t_ns = self.now;
            self.record(Record::Members {
                t_ns,
                node: n as u32,
                active,
            });
        }
        self.arm_timer(n);
    }

    fn arm_timer(&mut self, n: usize) {
        let Some(core) = self.nodes[n].core.as_ref() else {
            return;
        };
        let Some(wake) = core.poll_timeout() else {
            return;
        };
        let t = wake.as_nanos().max(self.now);
        let node = &mut self.nodes[n];
        if node.timer_at.is_none_or(|at| t < at) {
            node.timer_at = Some(t);
            let life = node.life;
            self.schedule(
                t,
                0,
                Ev::Timer {
                    node: n as u32,
                    life,
                },
            );
        }
    }

    /// Carries out one output, pushing what it hands back (KV write results) to `feedback`;
    /// returns true if membership changed.
    fn carry_out(&mut self, n: usize, out: Output, feedback: &mut Vec<Input>) -> bool {
        match out {
            Output::Publish {
                subject,
                payload,
                kind,
            } => {
                self.publish(n, subject, payload, kind);
                false
            }
            Output::KvPut {
                bucket,
                key,
                value,
                seq,
                ..
            } => {
                if self.net.kv_reachable(n) {
                    self.kv.put(bucket, key.clone(), value);
                    feedback.push(Input::KvPutOk { bucket, key, seq });
                } else {
                    feedback.push(Input::KvPutFailed { bucket, key });
                }
                false
            }
            Output::KvDelete { bucket, key } => {
                if self.net.kv_reachable(n) {
                    self.kv.delete(bucket, &key);
                }
                false
            }
            Output::Resync { node, key_filter } => {
                let t = self.now + self.kv_delay_ns;
                let life = self.nodes[n].life;
                self.schedule(
                    t,
                    0,
                    Ev::KvRead {
                        node: n as u32,
                        life,
                        read: KvRead::Resync {
                            node,
                            filter: key_filter,
                        },
                    },
                );
                false
            }
            Output::ReadMembers => {
                let t = self.now + self.kv_delay_ns;
                let life = self.nodes[n].life;
                self.schedule(
                    t,
                    0,
                    Ev::KvRead {
                        node: n as u32,
                        life,
                        read: KvRead::Members,
                    },
                );
                false
            }
            Output::Decision { endpoint, decision } => {
                if !self.opts.quiet {
                    let t_ns = self.now;
                    self.record(Record::Decision {
                        t_ns,
                        node: n as u32,
                        endpoint,
                        decision,
                    });
                }
                false
            }
            Output::MemberUp { .. } => true,
            Output::MemberDown { node, reason } => {
                if self.opts.track_expiry {
                    let last_heartbeat_ns = self
                        .scenario
                        .node_index(&node)
                        .and_then(|m| self.nodes[n].heard[m])
                        .map(|(_, _, t)| t);
                    self.out.downs.push(DownEvent {
                        t_ns: self.now,
                        observer: n as u32,
                        member: node,
                        reason,
                        last_heartbeat_ns,
                    });
                }
                true
            }
            Output::ApplyConfig { .. }
            | Output::ConfigRejected { .. }
            | Output::ConfigIgnored { .. } => false,
        }
    }

    fn publish(&mut self, n: usize, subject: String, payload: Bytes, kind: MessageKind) {
        if !self.net.connected(n) {
            return;
        }
        let node = &mut self.nodes[n];
        node.published += 1;
        let (life, msg) = (node.life, node.published);
        let heartbeat = if self.opts.track_expiry && kind == MessageKind::Heartbeat {
            match codec::decode(&payload) {
                Ok(Message::Heartbeat(hb)) => Some((hb.incarnation, hb.seq)),
                _ => None,
            }
        } else {
            None
        };
        let mut arrivals = Vec::with_capacity(self.nodes.len());
        let mut delays = [0u64; MAX_COPIES];
        for to in 0..self.nodes.len() {
            // The NATS driver connects with `no_echo`: a node does not hear itself.
            if to == n || self.nodes[to].core.is_none() || !self.net.path_open(n, to) {
                continue;
            }
            let (copies, held_back) =
                self.net
                    .delays(self.scenario.seed, n, life, msg, to, &mut delays);
            for (c, d) in delays[..copies].iter().enumerate() {
                let mut at = self.now + d;
                if c == 0 && !held_back {
                    // One publisher's messages arrive in order (NATS keeps per-connection
                    // order); only a held-back message lets later ones overtake it.
                    let last = &mut self.link_last[n * self.nodes.len() + to];
                    at = at.max(*last);
                    *last = at;
                }
                arrivals.push((at, to as u32, self.nodes[to].life));
            }
        }
        if arrivals.is_empty() {
            return;
        }
        arrivals.sort_unstable();
        let first = arrivals[0].0;
        let flight = Rc::new(Flight {
            from: n as u32,
            subject,
            payload,
            heartbeat,
            arrivals,
        });
        self.schedule(first, 0, Ev::Deliver { flight, idx: 0 });
    }

    fn kv_read(&mut self, n: usize, read: KvRead) {
        if self.nodes[n].core.is_none() {
            return;
        }
        let reachable = self.net.kv_reachable(n);
        let mut inputs = Vec::new();
        match read {
            KvRead::Snapshot => {
                self.nodes[n].snapshot_scheduled = false;
                if !reachable {
                    // Retried when the node next reaches the KV store.
                    return;
                }
                self.nodes[n].snapshot_pending = false;
                let idx = self.nodes[n].life_index;
                self.out.lives[idx].snapshot_ns = Some(self.now);
                for bucket in [Bucket::Members, Bucket::Health] {
                    for (key, value) in self.kv.read(bucket, ">") {
                        if self.opts.track_expiry && bucket == Bucket::Members {
                            self.heard_in_snapshot(n, &value);
                        }
                        inputs.push(Input::KvEntry { bucket, key, value });
                    }
                }
                inputs.push(Input::KvReadDone {
                    read: gslb_state_core::KvRead::Snapshot,
                    complete: true,
                });
            }
            KvRead::Members => {
                if reachable {
                    for (key, value) in self.kv.read(Bucket::Members, ">") {
                        inputs.push(Input::KvEntry {
                            bucket: Bucket::Members,
                            key,
                            value,
                        });
                    }
                }
                inputs.push(Input::KvReadDone {
                    read: gslb_state_core::KvRead::Members,
                    complete: reachable,
                });
            }
            KvRead::Resync { node, filter } => {
                if reachable {
                    for (key, value) in self.kv.read(Bucket::Health, &filter) {
                        inputs.push(Input::KvEntry {
                            bucket: Bucket::Health,
                            key,
                            value,
                        });
                    }
                }
                inputs.push(Input::KvReadDone {
                    read: gslb_state_core::KvRead::Reports { node },
                    complete: reachable,
                });
            }
        }
        self.feed(n, inputs);
    }

    /// A membership record read in the start-up snapshot vouches for its heartbeat as if it
    /// had arrived when it was sent (by the sender's clock, as the design says): track it so.
    fn heard_in_snapshot(&mut self, n: usize, value: &Bytes) {
        let Ok(Message::Member(rec)) = codec::decode(value) else {
            return;
        };
        let Some(m) = self.scenario.node_index(rec.node) else {
            return;
        };
        let age_ms = self.nodes[n]
            .clock
            .wall_ms(self.now)
            .saturating_sub(rec.sent_unix_ms);
        let at = self.now.saturating_sub(age_ms * crate::scenario::NS_PER_MS);
        let heard = &mut self.nodes[n].heard[m];
        if heard.is_none_or(|(i, s, _)| (rec.incarnation, rec.hb_seq) > (i, s)) {
            *heard = Some((rec.incarnation, rec.hb_seq, at));
        }
    }

    // ---- node lives ----

    fn start(&mut self, n: usize) {
        let wall = self.nodes[n].clock.wall_ms(self.now);
        let last = self.nodes[n].last_incarnation;
        let incarnation = if wall > last { wall } else { last + 1 };
        if wall <= last {
            let t_ns = self.now;
            self.record(Record::Note {
                t_ns,
                node: n as u32,
                text: format!(
                    "wall clock {wall} ms is not past the last incarnation {last}: using {incarnation}"
                ),
            });
        }
        let config = NodeConfig {
            cluster_id: CLUSTER_ID.to_owned(),
            node_id: self.nodes[n].id.clone(),
            region: self.nodes[n].region.clone(),
            incarnation,
            state: self.scenario.state.clone(),
            limits: Limits::default(),
        };
        let now = self.now_of(n);
        let core = match Node::new(config, now) {
            Ok(core) => core,
            Err(e) => {
                // The scenario was validated; a refusal here is a bug worth seeing.
                let t_ns = self.now;
                self.record(Record::Note {
                    t_ns,
                    node: n as u32,
                    text: format!("node refused to start: {e}"),
                });
                return;
            }
        };
        self.out.lives.push(Life {
            node: n as u32,
            started_ns: self.now,
            crashed_ns: None,
            snapshot_ns: None,
            incarnation,
        });
        let node = &mut self.nodes[n];
        node.life += 1;
        node.life_index = self.out.lives.len() - 1;
        node.core = Some(core);
        node.last_incarnation = incarnation;
        node.timer_at = None;
        node.published = 0;
        node.connected = false;
        node.snapshot_pending = true;
        node.snapshot_scheduled = false;
        node.heard.iter_mut().for_each(|h| *h = None);
        if !self.opts.quiet {
            let t_ns = self.now;
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

    fn crash(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.core = None;
        node.life += 1;
        node.timer_at = None;
        let idx = node.life_index;
        self.out.lives[idx].crashed_ns = Some(self.now);
    }

    /// Tells every running node whether it reaches the broker, and starts pending snapshot
    /// reads of nodes that now reach the KV store.
    fn sync_connectivity(&mut self) {
        for n in 0..self.nodes.len() {
            if self.nodes[n].core.is_none() {
                continue;
            }
            let connected = self.net.connected(n);
            if connected != self.nodes[n].connected {
                self.nodes[n].connected = connected;
                let c = if connected {
                    Connectivity::Connected
                } else {
                    Connectivity::Disconnected
                };
                self.feed(n, vec![Input::Connectivity(c)]);
            }
            let node = &self.nodes[n];
            if node.snapshot_pending && !node.snapshot_scheduled && self.net.kv_reachable(n) {
                self.nodes[n].snapshot_scheduled = true;
                let life = self.nodes[n].life;
                let t = self.now + self.kv_delay_ns;
                self.schedule(
                    t,
                    0,
                    Ev::KvRead {
                        node: n as u32,
                        life,
                        read: KvRead::Snapshot,
                    },
                );
            }
        }
    }

    // ---- scenario events ----

    fn name(&self, n: usize) -> &str {
        &self.nodes[n].id
    }

    /// Observations at one instant reach each node together, as a driver hands in every
    /// probe result it has before it polls: `events[i..]` up to the first event that is not an
    /// observation at the same instant.
    fn observe_batch(&mut self, i: usize) {
        let events = &self.scenario.events;
        let at = events[i].at_ns;
        let end = (i..events.len())
            .find(|&j| {
                events[j].at_ns != at || !matches!(events[j].kind, EventKind::Observe { .. })
            })
            .unwrap_or(events.len());
        self.observed_until = end;
        let mut per_node: BTreeMap<usize, Vec<Input>> = BTreeMap::new();
        for j in i..end {
            let EventKind::Observe {
                node,
                endpoint,
                healthy,
            } = &self.scenario.events[j].kind
            else {
                continue;
            };
            let (node, healthy) = (*node, *healthy);
            if !self.opts.quiet {
                let text = format!(
                    "{} sees {endpoint} {}",
                    self.name(node),
                    match healthy {
                        Some(true) => "up",
                        Some(false) => "down",
                        None => "no more (withdrawn)",
                    }
                );
                self.fault(FaultKind::Observe, Some(node), text);
            }
            match healthy {
                Some(h) => self.nodes[node].observations.insert(endpoint.clone(), h),
                None => self.nodes[node].observations.remove(endpoint),
            };
            per_node.entry(node).or_default().push(Input::LocalHealth {
                endpoint: endpoint.clone(),
                healthy,
            });
        }
        for (node, inputs) in per_node {
            if self.nodes[node].core.is_some() {
                self.feed(node, inputs);
            }
        }
    }

    fn apply(&mut self, i: usize) {
        if i < self.observed_until {
            return;
        }
        let kind = self.scenario.events[i].kind.clone();
        match kind {
            EventKind::Observe { .. } => self.observe_batch(i),
            EventKind::Partition { groups } => {
                let names: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let ids: Vec<&str> = g.iter().map(|&n| self.name(n)).collect();
                        format!("[{}]", ids.join(", "))
                    })
                    .collect();
                self.net.partition(&groups);
                self.fault(
                    FaultKind::Partition,
                    None,
                    format!("partition {}", names.join(" | ")),
                );
            }
            EventKind::Heal => {
                self.net.heal();
                self.fault(FaultKind::Heal, None, "partition healed".into());
            }
            EventKind::Crash(n) => {
                if self.nodes[n].core.is_some() {
                    self.crash(n);
                    let text = format!("{} crashes", self.name(n));
                    self.fault(FaultKind::Crash, Some(n), text);
                }
            }
            EventKind::Restart(n) => {
                if self.nodes[n].core.is_none() {
                    let text = format!("{} restarts", self.name(n));
                    self.fault(FaultKind::Restart, Some(n), text);
                    self.start(n);
                }
            }
            EventKind::Broker(up) => {
                self.net.set_broker(up);
                let (kind, text) = if up {
                    (FaultKind::BrokerUp, "broker up")
                } else {
                    (FaultKind::BrokerDown, "broker down")
                };
                self.fault(kind, None, text.into());
            }
            EventKind::Isolate(n) => {
                self.net.set_isolated(n, true);
                let text = format!("{} cut off from the broker", self.name(n));
                self.fault(FaultKind::Isolate, Some(n), text);
            }
            EventKind::Rejoin(n) => {
                self.net.set_isolated(n, false);
                let text = format!("{} reconnects to the broker", self.name(n));
                self.fault(FaultKind::Rejoin, Some(n), text);
            }
            EventKind::Clock {
                node,
                offset_ms,
                drift_ppb,
            } => {
                self.nodes[node].clock.set(self.now, offset_ms, drift_ppb);
                let offset = self.nodes[node].clock.offset_at_ms(self.now);
                let text = format!(
                    "{} clock offset {offset} ms, drift {} ppm",
                    self.name(node),
                    drift_ppb as f64 / 1000.0
                );
                self.fault(FaultKind::Clock, Some(node), text);
            }
            EventKind::Network(spec) => {
                let d = spec.default;
                let text = format!(
                    "network latency {} ms, jitter {} ms, loss {}, duplicate {}, reorder {}",
                    d.latency_ns as f64 / 1e6,
                    d.jitter_ns as f64 / 1e6,
                    d.loss,
                    d.duplicate,
                    d.reorder
                );
                self.net.set_spec(spec);
                self.kv_delay_ns = self.net.spec().default.latency_ns;
                self.fault(FaultKind::Network, None, text);
            }
        }
        self.sync_connectivity();
    }

    // ---- observing the state ----

    fn check_expect(&mut self, i: usize) {
        let x = &self.scenario.expects[i];
        let node = &self.nodes[x.node];
        let Some(core) = node.core.as_ref() else {
            self.out.expects.push(ExpectOutcome {
                index: i,
                ok: false,
                seen: format!("{} is not running", node.id),
                why: "the node is crashed at this time".into(),
            });
            return;
        };
        let mut seen = Vec::new();
        let mut why = Vec::new();
        if let Some(endpoint) = &x.checks.endpoint {
            let d = core.decision(endpoint).unwrap_or(Decision {
                healthy: None,
                source: gslb_state_core::Source::Unknown,
                healthy_reports: 0,
                total_reports: 0,
                local: None,
            });
            seen.push(format!("{endpoint}: {}", crate::trace::explain(&d)));
            if let Some(h) = x.checks.healthy
                && h != d.healthy
            {
                why.push(format!(
                    "expected healthy: {}, saw {}",
                    fmt_verdict(h),
                    fmt_verdict(d.healthy)
                ));
            }
            if let Some(s) = x.checks.source
                && s != d.source
            {
                why.push(format!("expected source: {s}, saw {}", d.source));
            }
            if let Some(h) = x.checks.healthy_reports
                && h != d.healthy_reports
            {
                why.push(format!(
                    "expected healthyReports: {h}, saw {}",
                    d.healthy_reports
                ));
            }
            if let Some(t) = x.checks.total_reports
                && t != d.total_reports
            {
                why.push(format!(
                    "expected totalReports: {t}, saw {}",
                    d.total_reports
                ));
            }
        }
        if let Some(expected) = &x.checks.active_members {
            let active = core.active_member_ids();
            seen.push(format!("active members: [{}]", active.join(", ")));
            if *expected != active {
                why.push(format!(
                    "expected activeMembers: [{}], saw [{}]",
                    expected.join(", "),
                    active.join(", ")
                ));
            }
        }
        self.out.expects.push(ExpectOutcome {
            index: i,
            ok: why.is_empty(),
            seen: seen.join("; "),
            why: why.join("; "),
        });
    }

    fn probe(&mut self, i: usize) {
        let nodes = (0..self.nodes.len())
            .map(|n| {
                let node = &self.nodes[n];
                node.core.as_ref().map(|core| NodeProbe {
                    connected: self.net.connected(n),
                    active: core.active_member_ids(),
                    decisions: core.decisions().map(|(e, d)| (e.to_owned(), d)).collect(),
                    observations: node.observations.clone(),
                })
            })
            .collect();
        self.out.probes.push(Probe {
            t_ns: self.opts.probes_ns[i],
            nodes,
        });
    }

    /// Checks the memory bounds: see [`crate::invariants`].
    fn sample(&mut self) {
        let n = self.nodes.len();
        let queue_bound = queue_bound(n);
        let queued = self.queue.len() + self.globals.len();
        if queued > queue_bound {
            let msg = format!(
                "at {}: {queued} events queued, bound {queue_bound}",
                fmt_time(self.now)
            );
            self.out.bound_violations.push(msg);
        }
        let kv_bound = n * (self.max_endpoints + 1);
        let kv_len = self.kv.len(Bucket::Members) + self.kv.len(Bucket::Health);
        if kv_len > kv_bound {
            let msg = format!(
                "at {}: {kv_len} KV entries, bound {kv_bound}",
                fmt_time(self.now)
            );
            self.out.bound_violations.push(msg);
        }
        for node in &self.nodes {
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            let mut problems = Vec::new();
            if core.endpoint_count() > self.max_endpoints {
                problems.push(format!(
                    "{} endpoints known, bound {}",
                    core.endpoint_count(),
                    self.max_endpoints
                ));
            }
            if core.members().len() > n {
                problems.push(format!(
                    "{} members remembered, bound {n}",
                    core.members().len()
                ));
            }
            let full = core.stats().dropped(DropReason::OutputQueueFull);
            if full > 0 {
                problems.push(format!("{full} outputs dropped on a full queue"));
            }
            for p in problems {
                let msg = format!("at {}: {}: {p}", fmt_time(self.now), node.id);
                self.out.bound_violations.push(msg);
            }
        }
    }
}

/// The bound on queued events for `nodes` nodes: every node's timer, a few KV reads each, and
/// the publishes of a few heartbeat intervals in flight, each one event.
pub fn queue_bound(nodes: usize) -> usize {
    64 + nodes * 64
}

fn fmt_verdict(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    }
}

/// Runs `scenario` with `opts`.
pub fn run(scenario: &Scenario, opts: RunOptions) -> Outcome {
    World::new(scenario, opts).run()
}
