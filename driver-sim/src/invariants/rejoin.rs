//! Rejoining: a (re)started node is counted again by every peer connected to it, within
//! `TTL + interval + largest delay`, whatever its wall clock did across the restart.

use crate::net::Net;
use crate::scenario::{EventKind, Scenario, fmt_time};
use crate::world::Outcome;

use super::{members_at, silence_bound_ns};

/// When each pair of nodes was connected, replayed from the scenario's events: both reach the
/// broker, they are in the same partition group, and the network's `loss` on the link
/// between them is 0.
#[derive(Debug, Clone)]
pub struct PairHistory {
    nodes: usize,
    /// The pairs' state after each connectivity event, in time order; the first entry is
    /// the start.
    states: Vec<PairsAt>,
}

/// Every pair's state after an event.
#[derive(Debug, Clone)]
struct PairsAt {
    /// When the event took effect.
    t_ns: u64,
    /// Whether each unordered pair `a * nodes + b`, `a < b`, was connected.
    connected: Vec<bool>,
}

impl PairHistory {
    /// Replays the connectivity events of `s` (partition, heal, broker, isolate, rejoin,
    /// network) through a [`Net`], noting every pair's state after each event.
    pub fn of(s: &Scenario) -> Self {
        let nodes = s.nodes.len();
        let mut net = Net::new(nodes, s.network.clone());
        let mut states = vec![PairsAt {
            t_ns: 0,
            connected: Self::pairs(&net, nodes),
        }];
        for e in &s.events {
            match &e.kind {
                EventKind::Partition { groups } => net.partition(groups),
                EventKind::Heal => net.heal(),
                EventKind::Broker(up) => net.set_broker(*up),
                EventKind::Isolate(n) => net.set_isolated(*n, true),
                EventKind::Rejoin(n) => net.set_isolated(*n, false),
                EventKind::Network(spec) => net.set_spec(spec.clone()),
                EventKind::Observe { .. }
                | EventKind::Crash(_)
                | EventKind::Leave(_)
                | EventKind::Restart { .. }
                | EventKind::Clock { .. } => continue,
            }
            states.push(PairsAt {
                t_ns: e.at_ns,
                connected: Self::pairs(&net, nodes),
            });
        }
        PairHistory { nodes, states }
    }

    fn pairs(net: &Net, nodes: usize) -> Vec<bool> {
        let mut out = vec![false; nodes * nodes];
        for a in 0..nodes {
            for b in a + 1..nodes {
                out[a * nodes + b] =
                    net.path_open(a, b) && net.path_open(b, a) && net.spec().link(a, b).loss == 0.0;
            }
        }
        out
    }

    /// Whether `a` and `b` were connected at every instant of `[from, to]`, after every event
    /// at that instant (and after each event in between: a partition healed within the same
    /// instant still counts as a cut).
    pub fn connected_throughout(&self, a: usize, b: usize, from: u64, to: u64) -> bool {
        if a == b {
            return true;
        }
        let pair = a.min(b) * self.nodes + a.max(b);
        let at_from = self.states.partition_point(|s| s.t_ns <= from);
        // The state in force at `from`: after the last event at or before it.
        let first = at_from.saturating_sub(1);
        self.states[first..]
            .iter()
            .take_while(|s| s.t_ns <= to)
            .all(|s| s.connected[pair])
    }
}

/// See the module docs: after every start of a node m at r, every peer p running throughout
/// `[r, r + bound]` and connected to m throughout it (see [`PairHistory`]) counts m at
/// `r + bound`, if m still runs then.
pub fn rejoin_after_restart(s: &Scenario, o: &Outcome) -> Result<(), String> {
    let bound = silence_bound_ns(s);
    let pairs = PairHistory::of(s);
    for life in &o.lives {
        let (m, r) = (life.node as usize, life.started_ns);
        let deadline = r + bound;
        if deadline > s.duration_ns || life.stopped_ns.is_some_and(|t| t <= deadline) {
            continue;
        }
        let member = &s.nodes[m].id;
        for p in (0..s.nodes.len()).filter(|&p| p != m) {
            let running = o.lives.iter().any(|l| {
                l.node as usize == p
                    && l.started_ns <= r
                    && l.stopped_ns.is_none_or(|t| t > deadline)
            });
            if !running || !pairs.connected_throughout(m, p, r, deadline) {
                continue;
            }
            let counted = members_at(o, p as u32, deadline).is_some_and(|a| a.contains(member));
            if !counted {
                let how = if r == 0 { "started" } else { "restarted" };
                return Err(format!(
                    "{member} {how} at {} (incarnation {}), but {} does not count it at {} \
                     (TTL + interval + largest delay later), though both ran and were \
                     connected throughout",
                    fmt_time(r),
                    life.incarnation,
                    s.nodes[p].id,
                    fmt_time(deadline)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gslb_state_core::Config;

    use super::*;

    #[test]
    fn pairs_are_connected_only_while_nothing_cuts_them() {
        let state = Config::with_defaults("sim").state;
        let mut s = Scenario::new(1, Duration::from_secs(60), state, &["a", "b", "c"]);
        s.at(Duration::from_secs(10), EventKind::Isolate(2));
        s.at(Duration::from_secs(20), EventKind::Rejoin(2));
        s.at(
            Duration::from_secs(30),
            EventKind::Partition {
                groups: vec![vec![0], vec![1, 2]],
            },
        );
        s.at(Duration::from_secs(30), EventKind::Heal);
        let mut lossy = s.network.clone();
        lossy.default.loss = 0.1;
        s.at(Duration::from_secs(40), EventKind::Network(lossy));
        let h = PairHistory::of(&s);
        let sec = |x: u64| x * 1_000_000_000;
        assert!(h.connected_throughout(0, 1, 0, sec(29)));
        assert!(h.connected_throughout(1, 0, sec(20), sec(29)));
        assert!(!h.connected_throughout(0, 2, sec(5), sec(15)), "isolated");
        assert!(
            !h.connected_throughout(0, 2, sec(10), sec(11)),
            "from the instant it begins"
        );
        assert!(h.connected_throughout(0, 2, sec(20), sec(29)), "rejoined");
        assert!(
            !h.connected_throughout(0, 1, sec(25), sec(35)),
            "a cut healed at once"
        );
        assert!(h.connected_throughout(1, 2, sec(31), sec(39)));
        assert!(!h.connected_throughout(1, 2, sec(31), sec(41)), "lossy");
    }
}
