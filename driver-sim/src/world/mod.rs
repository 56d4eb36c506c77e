//! The event loop: N real cores over the simulated network and KV store, driven exactly as a
//! production driver drives one core, with simulated time jumping from event to event.
//!
//! This module holds the [`World`] and its scheduler: the queues (`queue.rs` says what they
//! hold and in which order it runs), the main loop, and the windows in which node events run
//! node by node. The rest is in modules of their own:
//!
//! * `carry.rs`: carrying out each output of a core (publishes over the simulated network, KV
//!   writes and reads), delivering what arrives, and re-arming each node's timer;
//! * `lives.rs`: nodes start, crash, leave and restart, each life with its own monotonic clock
//!   origin and wall clock, and are told when they reach the broker;
//! * `events.rs`: scenario events taking effect;
//! * `inspect.rs`: expectations, probes and memory samples, which look at the state;
//! * `outcome.rs`: what a run is asked to record and what it leaves.

mod carry;
mod events;
mod inspect;
mod lives;
mod outcome;
mod queue;

use std::collections::BinaryHeap;
use std::rc::Rc;

use gslb_state_core::Output;
use gslb_state_core::policy::{QuorumScope, Rule};

use crate::kv::Kv;
use crate::net::Net;
use crate::scenario::Scenario;
use crate::trace::Record;

use carry::Flight;
use lives::SimNode;
pub use outcome::{
    DownEvent, ExpectOutcome, Life, NodeProbe, Outcome, Probe, RunOptions, queue_bound,
};
use queue::{Moment, Phase, Scheduled, SimEvent};

/// The cluster id every simulated node belongs to.
pub const CLUSTER_ID: &str = "sim";

/// A node event of the current window, in a node's bucket.
#[derive(Debug, Clone, Copy)]
struct WindowItem {
    /// When it runs.
    t_ns: u64,
    /// Insertion order, among events of the same time.
    seq: u64,
    /// What runs.
    kind: WindowEventKind,
}

/// What a [`WindowItem`] runs.
#[derive(Debug, Clone, Copy)]
enum WindowEventKind {
    /// The node's timer, armed in life `life`.
    Timer {
        /// The life that armed it.
        life: u32,
    },
    /// An arrival of one of the window's flights.
    Deliver {
        /// Index into the window's flights.
        flight: u32,
        /// Index into that flight's [`Flight::arrivals`].
        arrival: u32,
    },
}

/// The simulation of one scenario.
pub struct World<'a> {
    scenario: &'a Scenario,
    options: RunOptions,
    /// Simulated time of the event running.
    now_ns: u64,
    /// The insertion order of the latest scheduled event.
    seq: u64,
    /// Node events: timers and deliveries.
    node_events: BinaryHeap<Scheduled>,
    /// Events that touch shared state: scenario events, KV reads, observations of the state.
    global_events: BinaryHeap<Scheduled>,
    /// The timers the node running in the current window arms within the window.
    window_timers: BinaryHeap<Scheduled>,
    /// The node running in the current window.
    window_node: Option<u32>,
    /// The current window's end (exclusive).
    window_end: Moment,
    /// Per node: its events of the current window (kept to reuse their memory).
    window_items: Vec<Vec<WindowItem>>,
    /// The messages delivered in the current window.
    window_flights: Vec<Rc<Flight>>,
    /// Latest in-order arrival per link, `from * nodes + to`.
    link_last_arrival_ns: Vec<u64>,
    nodes: Vec<SimNode>,
    net: Net,
    kv: Kv,
    /// How long a KV read takes: one link latency.
    kv_delay_ns: u64,
    /// Endpoints the scenario names: the bound on what a core may know.
    max_endpoints: usize,
    /// The bound on KV entries (see [`inspect::kv_bound`]).
    kv_bound: usize,
    outcome: Outcome,
    /// A node's drained outputs (kept to reuse their memory).
    outputs: Vec<Output>,
    /// Scenario events before this index were applied with an earlier observation batch.
    observed_until: usize,
    /// The scenario has holds: pending changes are recorded (see [`World::record_updates`]).
    holds: Option<gslb_state_core::policy::Rule>,
}

impl<'a> World<'a> {
    /// A world ready to run `scenario`.
    pub fn new(scenario: &'a Scenario, options: RunOptions) -> Self {
        let n = scenario.nodes.len();
        let nodes = scenario
            .nodes
            .iter()
            .map(|spec| SimNode::new(spec, n))
            .collect();
        let state = &scenario.state;
        let mut outcome = Outcome::new(scenario.nodes.iter().map(|s| s.id.clone()).collect());
        outcome.trace.regions = state.quorum_scope == QuorumScope::Regions;
        outcome.trace.holds = !state.holds().is_none();
        World {
            scenario,
            now_ns: 0,
            seq: 0,
            node_events: BinaryHeap::new(),
            global_events: BinaryHeap::new(),
            window_timers: BinaryHeap::new(),
            window_node: None,
            window_end: Moment::START,
            window_items: (0..n).map(|_| Vec::new()).collect(),
            window_flights: Vec::new(),
            link_last_arrival_ns: vec![0; n * n],
            nodes,
            net: Net::new(n, scenario.network.clone()),
            kv: Kv::default(),
            kv_delay_ns: scenario.network.default.latency_ns,
            max_endpoints: scenario.endpoints().len(),
            kv_bound: inspect::kv_bound(scenario),
            outcome,
            outputs: Vec::new(),
            observed_until: 0,
            holds: (!state.holds().is_none() && !options.quiet).then(|| Rule::of(state)),
            options,
        }
    }

    /// Runs the scenario to its end.
    pub fn run(mut self) -> Outcome {
        // Late starts before the scenario events of their instant.
        for n in 0..self.nodes.len() {
            let t = self.scenario.nodes[n].start_ns;
            if t > 0 {
                self.schedule(t, Phase::Event, SimEvent::LateStart(n));
            }
        }
        for i in 0..self.scenario.events.len() {
            let t = self.scenario.events[i].at_ns;
            self.schedule(t, Phase::Event, SimEvent::Scenario(i));
        }
        for i in 0..self.scenario.expects.len() {
            let t = self.scenario.expects[i].at_ns;
            self.schedule(t, Phase::Observe, SimEvent::Expect(i));
        }
        for i in 0..self.options.probes_ns.len() {
            let t = self.options.probes_ns[i];
            self.schedule(t, Phase::Observe, SimEvent::Probe(i));
        }
        if self.options.sample_every_ns > 0 {
            self.schedule(0, Phase::Observe, SimEvent::Sample);
        }
        for n in 0..self.nodes.len() {
            if self.scenario.nodes[n].start_ns == 0 {
                self.start(n);
            }
        }
        self.sync_connectivity();
        let end_ns = self.scenario.duration_ns;
        loop {
            let global = self.global_events.peek().map(Scheduled::moment);
            let local = self.node_events.peek().map(|s| s.t_ns);
            let global_first = match (global, local) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(g), Some(l)) => g <= Moment::event(l),
            };
            if global_first {
                let s = self.global_events.pop().expect("peeked above");
                if s.t_ns > end_ns {
                    break;
                }
                self.now_ns = s.t_ns;
                self.outcome.events += 1;
                self.step(s.event);
            } else {
                let t = local.expect("checked above");
                if t > end_ns {
                    break;
                }
                let bound = Moment::event(t + self.net.min_delay_ns().max(1));
                let bound = match global {
                    Some(g) if g < bound => g,
                    _ => bound,
                };
                self.window(bound, end_ns);
            }
        }
        self.outcome.expects.sort_by_key(|x| x.index);
        self.outcome.probes.sort_by_key(|p| p.t_ns);
        self.outcome
    }

    /// Queues `event` at `t_ns`: a timer the node running in the current window arms within
    /// the window runs in it, other node events wait for a window, and everything else runs
    /// on its own.
    fn schedule(&mut self, t_ns: u64, phase: Phase, event: SimEvent) {
        self.seq += 1;
        let s = Scheduled {
            t_ns,
            phase,
            seq: self.seq,
            event,
        };
        match &s.event {
            SimEvent::Timer { node, .. }
                if self.window_node == Some(*node) && Moment::event(t_ns) < self.window_end =>
            {
                self.window_timers.push(s);
            }
            e if e.is_node_event() => self.node_events.push(s),
            _ => self.global_events.push(s),
        }
        let queued = self.node_events.len() + self.global_events.len();
        self.outcome.peak_queue = self.outcome.peak_queue.max(queued);
    }

    /// Runs every node event before `bound`, node by node.
    ///
    /// Nodes talk only through deliveries, and no delivery takes less than the smallest link
    /// delay, so events of different nodes less than that apart cannot affect each other:
    /// within such a window each node's events run in time order, one node after the other
    /// (which keeps each node's state in cache). Events that touch shared state (scenario
    /// events, KV reads, expectations) are never inside a window; KV writes are (each node
    /// writes only its own keys). Records of the window are then put back in time order.
    fn window(&mut self, bound: Moment, end_ns: u64) {
        let mut items = std::mem::take(&mut self.window_items);
        let mut flights = std::mem::take(&mut self.window_flights);
        let touched = self.collect_window(bound, end_ns, &mut items, &mut flights);
        let first_record = self.outcome.trace.records.len();
        let first_down = self.outcome.downs.len();
        self.window_end = bound;
        for node in touched {
            self.window_node = Some(node);
            let mut node_items = std::mem::take(&mut items[node as usize]);
            node_items.sort_unstable_by_key(|w| (w.t_ns, w.seq));
            for item in node_items.drain(..) {
                // Timers this node armed within the window run in their place.
                self.run_window_timers_before(Some(item));
                self.now_ns = item.t_ns;
                self.outcome.events += 1;
                match item.kind {
                    WindowEventKind::Deliver { flight, arrival } => {
                        let flight = flights[flight as usize].clone();
                        self.deliver_one(&flight, arrival as usize);
                    }
                    WindowEventKind::Timer { life } => self.fire_timer(node, life),
                }
            }
            self.run_window_timers_before(None);
            items[node as usize] = node_items;
        }
        self.window_node = None;
        self.window_end = Moment::START;
        flights.clear();
        self.window_flights = flights;
        self.window_items = items;
        self.outcome.trace.records[first_record..].sort_by_key(Record::t_ns);
        self.outcome.downs[first_down..].sort_by_key(|d| d.t_ns);
    }

    /// Moves every node event before `bound` (and at most `end_ns`) from the queue into the
    /// bucket of its node in `items`; a delivery's later arrivals within the window go with
    /// it, and its first arrival past the window goes back to the queue. Returns the nodes
    /// with events, in index order.
    fn collect_window(
        &mut self,
        bound: Moment,
        end_ns: u64,
        items: &mut [Vec<WindowItem>],
        flights: &mut Vec<Rc<Flight>>,
    ) -> Vec<u32> {
        let within = |t_ns: u64| Moment::event(t_ns) < bound && t_ns <= end_ns;
        let mut touched: Vec<u32> = Vec::new();
        let mut put = |items: &mut [Vec<WindowItem>], node: u32, item: WindowItem| {
            let bucket = &mut items[node as usize];
            if bucket.is_empty() {
                touched.push(node);
            }
            bucket.push(item);
        };
        while let Some(top) = self.node_events.peek() {
            if !within(top.t_ns) {
                break;
            }
            let s = self.node_events.pop().expect("peeked above");
            match s.event {
                SimEvent::Timer { node, life } => put(
                    items,
                    node,
                    WindowItem {
                        t_ns: s.t_ns,
                        seq: s.seq,
                        kind: WindowEventKind::Timer { life },
                    },
                ),
                SimEvent::Deliver { flight, arrival } => {
                    let mut i = arrival as usize;
                    let flight_index = flights.len() as u32;
                    while let Some(a) = flight.arrivals.get(i) {
                        if !within(a.at_ns) {
                            break;
                        }
                        self.seq += 1;
                        put(
                            items,
                            a.to,
                            WindowItem {
                                t_ns: a.at_ns,
                                seq: self.seq,
                                kind: WindowEventKind::Deliver {
                                    flight: flight_index,
                                    arrival: i as u32,
                                },
                            },
                        );
                        i += 1;
                    }
                    if let Some(a) = flight.arrivals.get(i) {
                        self.seq += 1;
                        self.node_events.push(Scheduled {
                            t_ns: a.at_ns,
                            phase: Phase::Event,
                            seq: self.seq,
                            event: SimEvent::Deliver {
                                flight: flight.clone(),
                                arrival: i as u32,
                            },
                        });
                    }
                    flights.push(flight);
                }
                other => {
                    // Only node events are queued here; keep anything else in order.
                    self.global_events.push(Scheduled { event: other, ..s });
                }
            }
        }
        touched.sort_unstable();
        touched
    }

    /// Runs the timers the window's node armed within the window that come before `item`
    /// (by time, then insertion order), or all of them.
    fn run_window_timers_before(&mut self, item: Option<WindowItem>) {
        while let Some(timer) = self.window_timers.peek() {
            if item.is_some_and(|item| (timer.t_ns, timer.seq) >= (item.t_ns, item.seq)) {
                break;
            }
            let timer = self.window_timers.pop().expect("peeked above");
            self.now_ns = timer.t_ns;
            self.outcome.events += 1;
            self.step(timer.event);
        }
    }

    /// Runs one event.
    fn step(&mut self, event: SimEvent) {
        match event {
            SimEvent::LateStart(n) => self.start_late(n),
            SimEvent::Scenario(i) => self.apply_scenario_event(i),
            SimEvent::Timer { node, life } => self.fire_timer(node, life),
            SimEvent::Deliver { flight, arrival } => self.deliver(flight, arrival as usize),
            SimEvent::KvRead { node, life, read } => {
                if self.nodes[node as usize].life == life {
                    self.kv_read(node as usize, read);
                }
            }
            SimEvent::Expect(i) => self.check_expect(i),
            SimEvent::Probe(i) => self.probe(i),
            SimEvent::Sample => {
                self.sample();
                let t = self.now_ns + self.options.sample_every_ns;
                self.schedule(t, Phase::Observe, SimEvent::Sample);
            }
        }
    }
}

/// Runs `scenario` with `options`.
pub fn run(scenario: &Scenario, options: RunOptions) -> Outcome {
    World::new(scenario, options).run()
}
