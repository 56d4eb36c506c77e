//! The simulated NATS network: who reaches the broker, which partition group each node is in,
//! where the KV store is reachable from, and what happens to each delivery (delay, loss,
//! duplication, reordering).
//!
//! A delivery's fate is a pure function of (seed, sender, sender's life, the sender's message
//! number, receiver), never of processing order (see [`crate::rng::draw`]).

use crate::rng::{draw, mix, unit};
use crate::scenario::{LinkParams, NetworkSpec};

/// Tag of the delivery draws in [`draw`] keys.
const DELIVERY_TAG: u64 = 0xDE11_7E27;

/// Most arrivals one delivery can make (the original and one duplicate).
pub const MAX_COPIES: usize = 2;

/// Connectivity of the simulated cluster.
#[derive(Debug, Clone)]
pub struct Net {
    nodes: usize,
    spec: NetworkSpec,
    /// Link parameters for every ordered pair, `from * nodes + to`.
    links: Vec<LinkParams>,
    /// Partition group of each node (all 0 when healed).
    group: Vec<u32>,
    /// The group that reaches the KV store.
    kv_group: u32,
    broker_up: bool,
    isolated: Vec<bool>,
}

impl Net {
    /// A healed network of `nodes` nodes with the broker up.
    pub fn new(nodes: usize, spec: NetworkSpec) -> Self {
        let mut net = Net {
            nodes,
            spec: NetworkSpec::default(),
            links: Vec::new(),
            group: vec![0; nodes],
            kv_group: 0,
            broker_up: true,
            isolated: vec![false; nodes],
        };
        net.set_spec(spec);
        net
    }

    /// New link parameters from now on.
    pub fn set_spec(&mut self, spec: NetworkSpec) {
        self.links = (0..self.nodes * self.nodes)
            .map(|i| spec.link(i / self.nodes, i % self.nodes))
            .collect();
        self.spec = spec;
    }

    /// The shortest delay any delivery can take under the link parameters in force.
    pub fn min_delay_ns(&self) -> u64 {
        self.links
            .iter()
            .map(|l| l.latency_ns.saturating_sub(l.jitter_ns))
            .min()
            .unwrap_or(0)
    }

    /// The link parameters in force.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// Splits the nodes into `groups`; unlisted nodes form one more group. The KV store stays
    /// with the largest group (on a tie, the first listed).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let rest = groups.len() as u32;
        self.group = vec![rest; self.nodes];
        for (g, members) in groups.iter().enumerate() {
            for &n in members {
                self.group[n] = g as u32;
            }
        }
        let size = |g: u32| self.group.iter().filter(|&&x| x == g).count();
        self.kv_group = (0..=rest)
            .max_by_key(|&g| (size(g), std::cmp::Reverse(g)))
            .unwrap_or(0);
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.group = vec![0; self.nodes];
        self.kv_group = 0;
    }

    /// Whether a partition is in force.
    pub fn partitioned(&self) -> bool {
        self.group.iter().any(|&g| g != self.group[0])
    }

    /// Brings the broker down or up.
    pub fn set_broker(&mut self, up: bool) {
        self.broker_up = up;
    }

    /// Whether the broker is up.
    pub fn broker_up(&self) -> bool {
        self.broker_up
    }

    /// Cuts `node` off from the broker, or reconnects it.
    pub fn set_isolated(&mut self, node: usize, isolated: bool) {
        self.isolated[node] = isolated;
    }

    /// Whether `node` is cut off from the broker.
    pub fn isolated(&self, node: usize) -> bool {
        self.isolated[node]
    }

    /// Whether `node` has a connection to the broker (what its driver reports to the core).
    pub fn connected(&self, node: usize) -> bool {
        self.broker_up && !self.isolated[node]
    }

    /// Whether `node` can read and write the KV store.
    pub fn kv_reachable(&self, node: usize) -> bool {
        self.connected(node) && self.group[node] == self.kv_group
    }

    /// Whether a message from `from` can reach `to` right now.
    pub fn path_open(&self, from: usize, to: usize) -> bool {
        self.broker_up && !self.isolated[to] && self.group[from] == self.group[to]
    }

    /// What happens to message number `msg` of `from` (in its life `life`) on its way to
    /// `to`: the delays after which it arrives are written to `out`. NATS delivers one
    /// publisher's messages in order, so the caller keeps copies that were not held back in
    /// order per link; the second copy of a duplicate is never kept in order. A lost message
    /// has no copies, and `out[0]` is when it would have arrived (its receiver learns of the
    /// loss then, as a NATS slow consumer does).
    pub fn delays(
        &self,
        seed: u64,
        from: usize,
        life: u32,
        msg: u64,
        to: usize,
        out: &mut [u64; MAX_COPIES],
    ) -> Fate {
        let link = &self.links[from * self.nodes + to];
        if link.jitter_ns == 0 && link.loss == 0.0 && link.duplicate == 0.0 && link.reorder == 0.0 {
            out[0] = link.latency_ns;
            return Fate {
                copies: 1,
                held_back: false,
                lost: false,
            };
        }
        let base = draw(&[
            seed,
            DELIVERY_TAG,
            from as u64,
            u64::from(life),
            msg,
            to as u64,
        ]);
        let key = |what: u64| mix(base ^ mix(what));
        // Uniform in latency ± jitter, in whole microseconds.
        let jittered = |k: u64| {
            if link.jitter_ns == 0 {
                return link.latency_ns;
            }
            let span_us = 2 * link.jitter_ns / 1_000 + 1;
            let jitter = (k % span_us) * 1_000;
            (link.latency_ns + jitter).saturating_sub(link.jitter_ns)
        };
        if link.loss > 0.0 && unit(key(0)) < link.loss {
            out[0] = jittered(key(2));
            return Fate {
                copies: 0,
                held_back: false,
                lost: true,
            };
        }
        let copies = if link.duplicate > 0.0 && unit(key(1)) < link.duplicate {
            2
        } else {
            1
        };
        let mut held_back = false;
        for (c, slot) in out.iter_mut().enumerate().take(copies) {
            let c = c as u64 * 16;
            let mut delay = jittered(key(2 + c));
            if link.reorder > 0.0 && unit(key(3 + c)) < link.reorder {
                let extra_us = (link.latency_ns + link.jitter_ns) / 1_000 + 1;
                delay += (key(4 + c) % extra_us) * 1_000;
                held_back |= c == 0;
            }
            *slot = delay;
        }
        Fate {
            copies,
            held_back,
            lost: false,
        }
    }
}

/// What happens to one delivery ([`Net::delays`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// How many copies arrive: 0 (lost), 1, or 2 (duplicated).
    pub copies: usize,
    /// Whether the first copy was held back (reordered: later messages may overtake it).
    pub held_back: bool,
    /// Whether the network's `loss` dropped it (not a closed path: that is decided on
    /// arrival).
    pub lost: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::NS_PER_MS;

    fn spec(latency_ms: u64, jitter_ms: u64, loss: f64, duplicate: f64) -> NetworkSpec {
        NetworkSpec {
            default: LinkParams {
                latency_ns: latency_ms * NS_PER_MS,
                jitter_ns: jitter_ms * NS_PER_MS,
                loss,
                duplicate,
                reorder: 0.0,
            },
            ..NetworkSpec::default()
        }
    }

    #[test]
    fn partitions_cut_paths_and_keep_the_kv_with_the_majority() {
        let mut net = Net::new(4, spec(10, 0, 0.0, 0.0));
        assert!(net.path_open(0, 3));
        net.partition(&[vec![0], vec![1, 2]]);
        assert!(net.partitioned());
        assert!(!net.path_open(0, 1));
        assert!(net.path_open(1, 2));
        assert!(!net.path_open(3, 1), "unlisted nodes form their own group");
        assert!(!net.kv_reachable(0));
        assert!(net.kv_reachable(1), "the largest group keeps the KV");
        net.heal();
        assert!(net.path_open(0, 1) && net.kv_reachable(0));
        net.set_isolated(2, true);
        assert!(!net.connected(2) && !net.path_open(0, 2) && net.path_open(2, 0));
        net.set_broker(false);
        assert!(!net.connected(0) && !net.kv_reachable(1));
    }

    #[test]
    fn delays_are_bounded_and_repeatable() {
        let net = Net::new(3, spec(10, 5, 0.2, 0.2));
        let (mut lost, mut dups) = (0, 0);
        for msg in 0..2000 {
            let mut a = [0; MAX_COPIES];
            let mut b = [0; MAX_COPIES];
            let fate = net.delays(7, 0, 0, msg, 1, &mut a);
            assert!(!fate.held_back, "no reordering configured");
            assert_eq!(fate, net.delays(7, 0, 0, msg, 1, &mut b));
            assert_eq!(a, b);
            assert_eq!(fate.lost, fate.copies == 0);
            match fate.copies {
                0 => lost += 1,
                2 => dups += 1,
                _ => {}
            }
            // A lost message's would-be arrival is within the link's delays too.
            for d in &a[..fate.copies.max(1)] {
                assert!((5 * NS_PER_MS..=15 * NS_PER_MS).contains(d), "{d}");
            }
        }
        assert!((300..500).contains(&lost), "{lost}");
        assert!((220..420).contains(&dups), "{dups}");
    }

    #[test]
    fn region_latency_is_added_to_every_delivery_between_the_regions() {
        use crate::scenario::RegionLatency;
        let mut spec = spec(10, 2, 0.0, 0.0);
        let mut regions = RegionLatency::new(["eu", "us", "eu", "ap"]);
        regions.set(0, 1, 40 * NS_PER_MS);
        regions.set(2, 1, 90 * NS_PER_MS);
        spec.region_latency = regions;
        let net = Net::new(4, spec);
        // Every delay of `from` to `to` within `center_ms ± 2 ms`, and spread over most of it.
        let within = |from: usize, to: usize, center_ms: u64| {
            let (mut lo, mut hi) = (u64::MAX, 0);
            for msg in 0..500 {
                let mut out = [0; MAX_COPIES];
                net.delays(3, from, 0, msg, to, &mut out);
                lo = lo.min(out[0]);
                hi = hi.max(out[0]);
            }
            let (center, jitter) = (center_ms * NS_PER_MS, 2 * NS_PER_MS);
            lo >= center - jitter && hi <= center + jitter && hi - lo > 3 * NS_PER_MS
        };
        assert!(within(0, 2, 10), "eu to eu: the link alone");
        assert!(within(0, 1, 50), "eu to us: 10 ± 2 + 40");
        assert!(within(1, 2, 50), "both ways");
        assert!(within(3, 1, 100), "ap to us: 10 ± 2 + 90");
        assert!(within(0, 3, 10), "eu to ap: nothing set");
        assert_eq!(net.min_delay_ns(), 8 * NS_PER_MS);
        assert_eq!(net.spec().max_delay_ns(), 102 * NS_PER_MS);
    }
}
