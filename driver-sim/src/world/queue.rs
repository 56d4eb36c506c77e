//! What the event queues hold: [`SimEvent`]s, each [`Scheduled`] at an instant and a
//! [`Phase`] of that instant, and the order they run in.

use std::cmp::Ordering;
use std::rc::Rc;

use super::carry::{Flight, KvReadRequest};

/// Something the simulation does at a point in simulated time.
#[derive(Debug)]
pub(super) enum SimEvent {
    /// Node `.0` (an index into [`crate::Scenario::nodes`]) starts after time 0.
    LateStart(usize),
    /// Scenario event `.0` (an index into [`crate::Scenario::events`]) takes effect.
    Scenario(usize),
    /// A node's timer fires, if it is still armed for now in that life.
    Timer {
        /// Node index.
        node: u32,
        /// The life that armed it.
        life: u32,
    },
    /// Arrival number `arrival` of `flight` reaches its receiver.
    Deliver {
        /// The message on its way.
        flight: Rc<Flight>,
        /// Index into [`Flight::arrivals`].
        arrival: u32,
    },
    /// A KV read the core asked for is carried out.
    KvRead {
        /// Node index.
        node: u32,
        /// The life that asked.
        life: u32,
        /// What to read.
        read: KvReadRequest,
    },
    /// Expectation `.0` (an index into [`crate::Scenario::expects`]) is checked.
    Expect(usize),
    /// Probe `.0` (an index into [`super::RunOptions::probes_ns`]) is taken.
    Probe(usize),
    /// The memory bounds are sampled.
    Sample,
}

impl SimEvent {
    /// Whether this event belongs to one node and touches no shared state, so it may run in
    /// a window (see [`super::World::window`]).
    pub(super) fn is_node_event(&self) -> bool {
        matches!(self, SimEvent::Timer { .. } | SimEvent::Deliver { .. })
    }
}

/// Where an event sorts among the events of its instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Phase {
    /// Something happens: node events, scenario events, KV reads.
    Event,
    /// The state is looked at (expectations, probes, samples), after every event of the
    /// instant.
    Observe,
}

/// A point in the order of the queues: an instant and a phase of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Moment {
    /// Simulated time.
    pub(super) t_ns: u64,
    /// The phase within that instant.
    pub(super) phase: Phase,
}

impl Moment {
    /// The events phase of instant `t_ns`.
    pub(super) fn event(t_ns: u64) -> Self {
        Moment {
            t_ns,
            phase: Phase::Event,
        }
    }

    /// The first moment: nothing sorts before it.
    pub(super) const START: Moment = Moment {
        t_ns: 0,
        phase: Phase::Event,
    };
}

/// An event in a queue, ordered by (time, phase, insertion order).
#[derive(Debug)]
pub(super) struct Scheduled {
    /// When it runs.
    pub(super) t_ns: u64,
    /// Its phase of that instant.
    pub(super) phase: Phase,
    /// Insertion order, among events of the same time and phase.
    pub(super) seq: u64,
    /// What runs.
    pub(super) event: SimEvent,
}

impl Scheduled {
    /// When it runs, with its phase.
    pub(super) fn moment(&self) -> Moment {
        Moment {
            t_ns: self.t_ns,
            phase: self.phase,
        }
    }
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
        (other.t_ns, other.phase, other.seq).cmp(&(self.t_ns, self.phase, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BinaryHeap;

    use super::*;

    #[test]
    fn events_run_by_time_then_phase_then_insertion() {
        let at = |t_ns, phase, seq| Scheduled {
            t_ns,
            phase,
            seq,
            event: SimEvent::Sample,
        };
        let mut heap = BinaryHeap::from([
            at(5, Phase::Event, 4),
            at(3, Phase::Observe, 1),
            at(3, Phase::Event, 3),
            at(3, Phase::Event, 2),
        ]);
        let mut order = Vec::new();
        while let Some(s) = heap.pop() {
            order.push((s.t_ns, s.seq));
        }
        assert_eq!(order, [(3, 2), (3, 3), (3, 1), (5, 4)]);
        assert!(Moment::event(3) < at(3, Phase::Observe, 0).moment());
        assert!(Moment::START <= Moment::event(0));
    }
}
