//! The event loop: N real cores over the simulated network and KV store, driven exactly as a
//! production driver drives one core, with simulated time jumping from event to event.
//!
//! How each output of the core is carried out (in `carry.rs`):
//!
//! | output | what the simulation does |
//! | --- | --- |
//! | `Publish` | fans out to every other running node (the NATS driver connects with `no_echo`), each copy delayed, lost, duplicated or reordered per link (in order per link otherwise, as NATS keeps a publisher's order); dropped on arrival if the path closed meanwhile; a copy the link's `loss` drops is told to its receiver as `MessagesLost { count: 1 }` when it would have arrived (a NATS slow consumer) |
//! | `KvPut`, `KvDelete` | applied to the KV store at once if the node reaches it (`KvPutOk` handed back), else `KvPutFailed` is handed back (a failed delete is dropped) |
//! | `ReadSnapshot` | after one link latency: every entry of the members bucket, then of the health bucket, then `KvReadDone(Snapshot, complete: true)`; `complete: false` alone if the node does not reach the KV store then |
//! | `Resync`, `ReadMembers` | after one link latency, the matching entries are handed in, then `KvReadDone` |
//! | `Decision`, `MemberUp`, `MemberDown` | recorded in the trace |
//! | `IncarnationRaised` | noted in the trace; the life's incarnation is updated |
//! | `ApplyConfig`, `ConfigCommitted`, `ConfigFailed`, `ConfigRejected`, `ConfigIgnored` | nothing (no config sync is simulated) |
//!
//! Nodes start, crash, leave and restart in `lives.rs` (each with its own monotonic clock
//! origin and wall clock), scenario events take effect in `events.rs`, and expectations,
//! probes and memory samples look at the state in `inspect.rs`. What a run leaves is in
//! `outcome.rs`.

mod carry;
mod events;
mod inspect;
mod lives;
mod outcome;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;

use bytes::Bytes;
use gslb_state_core::Output;

use crate::kv::Kv;
use crate::net::Net;
use crate::scenario::Scenario;
use crate::trace::{FaultKind, Record};

use lives::SimNode;
pub use outcome::{
    DownEvent, ExpectOutcome, Life, NodeProbe, Outcome, Probe, RunOptions, queue_bound,
};

/// The cluster id every simulated node belongs to.
pub const CLUSTER_ID: &str = "sim";

/// Inputs handed to one node before its outputs are drained, at most.
const FEED_CHUNK: usize = 1024;

/// A message on its way to its receivers, with their arrival times in order.
#[derive(Debug)]
struct Flight {
    from: u32,
    subject: String,
    payload: Bytes,
    /// (heartbeat incarnation, sequence), when tracked.
    heartbeat: Option<(u64, u64)>,
    /// The copies of this flight were lost on the way: each "arrival" tells its receiver
    /// that a message was lost ([`gslb_state_core::Input::MessagesLost`]).
    lost: bool,
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
    /// A node that starts after time 0.
    Start(usize),
    Scenario(usize),
    Timer {
        node: u32,
        life: u32,
    },
    Deliver {
        flight: Rc<Flight>,
        idx: u32,
    },
    KvRead {
        node: u32,
        life: u32,
        read: KvRead,
    },
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
            .map(|spec| SimNode::new(spec, n))
            .collect();
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
            out: Outcome::new(scenario.nodes.iter().map(|s| s.id.clone()).collect()),
            outputs: Vec::new(),
            observed_until: 0,
            opts,
        }
    }

    /// Runs the scenario to its end.
    pub fn run(mut self) -> Outcome {
        // Late starts before the scenario events of their instant.
        for n in 0..self.nodes.len() {
            let t = self.scenario.nodes[n].start_ns;
            if t > 0 {
                self.schedule(t, 0, Ev::Start(n));
            }
        }
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
            if self.scenario.nodes[n].start_ns == 0 {
                self.start(n);
            }
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
            Ev::Start(n) => self.start_late(n),
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
}

/// Runs `scenario` with `opts`.
pub fn run(scenario: &Scenario, opts: RunOptions) -> Outcome {
    World::new(scenario, opts).run()
}
