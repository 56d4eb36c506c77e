//! The engine target: the policy engine driven side by side with the reference model.
//!
//! This module holds the harness that drives both ([`Harness`]); the operations and how
//! they are drawn from the fuzzer's bytes are in `ops.rs`, and what is checked after each
//! output and each operation in `checks.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::WALL_BASE_MS;
use crate::codec::{self, Message, SnapshotRef};
use crate::config::Config;
use crate::names::{Bucket, MAX_ENDPOINT_NAME_BYTES, Names, check_endpoint_name};
use crate::reference::Reference;
use crate::{
    Connectivity, Input, Instant, Limits, MessageKind, Node, NodeConfig, Now, Policy, QuorumScope,
    WallTime,
};

mod checks;
mod ops;

use checks::Seen;
use ops::{ByteFlip, Op};

const CLUSTER: &str = "c";
const OWN_ID: &str = "me";
/// The second engine, which hears what the node publishes.
const PEER_ID: &str = "peer";
/// Remote node ids, our own among them (messages that claim to be us must be ignored).
const NODES: [&str; 6] = ["a", "b", "n.1", "ünï ☃", OWN_ID, "z-9"];
/// At most this many earlier messages are kept for replays.
const MAX_REMEMBERED: usize = 64;
/// At most this many compacted snapshots named by records handed in are kept (for chunks
/// that match them).
const MAX_SNAPSHOT_REFS: usize = 16;
/// Timer wake-ups run one by one in a time jump before the rest is jumped at once.
const MAX_WAKES_PER_ADVANCE: usize = 256;
/// Time never goes past this (about 3 years), so instants stay far from saturation.
const MAX_T_NS: u64 = 100_000_000_000_000_000;

/// The endpoints operations name (besides arbitrary ones), the longest allowed among them.
fn endpoint_names() -> [String; 5] {
    [
        "web".to_owned(),
        "db".to_owned(),
        "dns ☃".to_owned(),
        "a.b>*".to_owned(),
        "é".repeat(MAX_ENDPOINT_NAME_BYTES / 2),
    ]
}

/// A hold time: none half of the time, else up to 10 s (in whole ms, or a few ns).
fn hold(u: &mut Unstructured<'_>) -> arbitrary::Result<Duration> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=3 => Duration::ZERO,
        4 => Duration::from_nanos(u.int_in_range(1u64..=3)?),
        _ => Duration::from_millis(u.int_in_range(1u64..=10_000)?),
    })
}

/// The policy engine against the reference model.
///
/// The bytes become a starting configuration (policy, threshold, timing, quorum scope, holds,
/// our region) and a sequence of operations: heartbeats (from peers in a few regions), report
/// batches, local observations, KV member and report records with skewed timestamps, replays
/// and corrupted replays of earlier messages, spoofed and foreign messages, echoes of the
/// node's own messages, config events (valid and not, changing scope and holds too),
/// connectivity changes, KV read and write outcomes (acknowledgements with KV revisions, in
/// order or not), both parts of the start-up snapshot, member records that name compacted
/// snapshots and their chunks (matching, or of another generation, slot, index, node or
/// incarnation), time jumps (through hold deadlines) and wall-clock steps. They drive a [`Node`] and a [`Reference`] side by
/// side; after every operation every decision and the set of active members must agree, and the
/// engine's own invariants must hold: decision outputs match the getters, counters match the
/// outputs, every input is counted, timers are never in the past, and what the node publishes
/// is well-formed and announces exactly what it has sent, the report reads of the snapshot
/// are the ones the model expects, and every compacted snapshot the node's record names is,
/// with the report keys written after it, at least as new as its report keys in the KV.
pub fn engine(data: &[u8]) {
    engine_traced(data, &mut |_, _| {});
}

/// [`engine`], calling `trace` with each step's number and operation before running it (for
/// reading what a crashing input does).
pub fn engine_traced(data: &[u8], trace: &mut dyn FnMut(usize, &dyn std::fmt::Debug)) {
    let mut u = Unstructured::new(data);
    let Ok(mut h) = Harness::new(&mut u) else {
        return;
    };
    trace(0, &h.start);
    let mut step = 1usize;
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u, &h) else {
            break;
        };
        trace(step, &op);
        h.apply(&op);
        h.check(step, &op);
        step += 1;
    }
}

/// The node under test, the reference model beside it, a peer that hears the node, and what
/// the harness remembers to build and check later operations.
struct Harness {
    /// The starting configuration, for traces.
    start: String,
    names: Names,
    /// The engine under test.
    node: Node,
    /// The reference model, fed the same inputs.
    model: Reference,
    /// Monotonic time, the same for the node, the model and the peer.
    t_ns: u64,
    /// What wall-clock steps added up to, in ms: the wall clock reads [`WALL_BASE_MS`] plus
    /// monotonic time plus this.
    wall_skew_ms: i64,
    /// Inputs from others, for replays.
    remembered: Vec<Input>,
    /// The node's own publishes, for echoes.
    own_publishes: Vec<(String, Bytes)>,
    /// A second engine that hears everything the node publishes, at once and in order.
    peer: Node,
    /// Publishes of the node not yet handed to the peer.
    peer_inbox: Vec<(String, Bytes)>,
    /// Our own observations, as the harness handed them in (valid names only).
    local: BTreeMap<String, bool>,
    /// Endpoints whose KV write the harness reported as failed since their last write.
    failed_puts: BTreeSet<String>,
    /// Health-bucket writes of the node not acknowledged yet: (key, seq, value).
    unacked_puts: Vec<(String, u64, Bytes)>,
    /// The KV revision of the node's latest health-bucket write or delete the harness carried
    /// out (revisions grow by one per write).
    revision: u64,
    /// The node's health-bucket keys as the harness stored them (when it acknowledged the
    /// write): revision and value.
    kv: BTreeMap<String, (u64, Bytes)>,
    /// Compacted snapshots named by the member records handed in, with their node: chunks
    /// are drawn to match them.
    snapshot_refs: Vec<(&'static str, SnapshotRef)>,
    /// What the node did so far, as the checks saw it.
    seen: Seen,
}

impl Harness {
    fn new(u: &mut Unstructured<'_>) -> arbitrary::Result<Harness> {
        let mut config = Config::with_defaults(CLUSTER);
        config.state.policy = Policy::arbitrary(u)?;
        config.state.quorum_min_percent = u.int_in_range(1u8..=100)?;
        config.state.heartbeat_interval = Duration::from_millis(u.int_in_range(10u64..=2_000)?);
        config.state.heartbeat_ttl =
            config.state.heartbeat_interval + Duration::from_millis(u.int_in_range(1u64..=8_000)?);
        config.state.quorum_scope = QuorumScope::arbitrary(u)?;
        config.state.hold_up = hold(u)?;
        config.state.hold_down = hold(u)?;
        config.region = ops::region(u)?.to_owned();
        let compact_interval = match u.int_in_range(0u8..=3)? {
            0 => Limits::default().compact_interval,
            _ => Duration::from_millis(u.int_in_range(0u64..=5_000)?),
        };
        let node_config = NodeConfig {
            limits: Limits {
                // Forgetting long-gone members is a memory bound the model does not have.
                forget_after_ttls: 0,
                compact_interval,
                ..Limits::default()
            },
            confirm_apply: u.arbitrary()?,
            apply_timeout: Duration::from_millis(u.int_in_range(1u64..=10_000)?),
            ..NodeConfig::from_config(&config, OWN_ID)
        };
        let t_ns = u64::from(u.arbitrary::<u32>()?);
        let now = Now::new(
            Instant::from_nanos(t_ns),
            WallTime::from_unix_ms(WALL_BASE_MS + t_ns / 1_000_000),
        );
        let connect = u.arbitrary()?;
        // The peer has no observations of its own: under prefer-local its verdicts are the
        // node's reports.
        let mut peer_config = NodeConfig {
            node_id: PEER_ID.to_owned(),
            ..node_config.clone()
        };
        peer_config.state.policy = Policy::PreferLocal;
        peer_config.state.quorum_scope = QuorumScope::Members;
        peer_config.state.hold_up = Duration::ZERO;
        peer_config.state.hold_down = Duration::ZERO;
        let mut h = Harness {
            start: format!(
                "start at {t_ns} ns: {:?}, compact interval {compact_interval:?}, connected: {connect}",
                config.state
            ),
            names: Names::new(CLUSTER),
            model: Reference::new(&node_config, now),
            node: Node::new(node_config, now).expect("the harness's config is valid"),
            t_ns,
            wall_skew_ms: 0,
            remembered: Vec::new(),
            own_publishes: Vec::new(),
            peer: Node::new(peer_config, now).expect("the harness's config is valid"),
            peer_inbox: Vec::new(),
            local: BTreeMap::new(),
            failed_puts: BTreeSet::new(),
            unacked_puts: Vec::new(),
            revision: 0,
            kv: BTreeMap::new(),
            snapshot_refs: Vec::new(),
            seen: Seen::default(),
        };
        if connect {
            h.feed(Input::Connectivity(Connectivity::Connected));
            h.drain();
        }
        Ok(h)
    }

    fn wall_at(&self, t_ns: u64) -> WallTime {
        let ms = (WALL_BASE_MS + t_ns / 1_000_000).saturating_add_signed(self.wall_skew_ms);
        WallTime::from_unix_ms(ms)
    }

    fn now(&self) -> Now {
        Now::new(Instant::from_nanos(self.t_ns), self.wall_at(self.t_ns))
    }

    fn feed(&mut self, input: Input) {
        let now = self.now();
        self.model.handle(now, &input);
        self.node.handle(now, input);
    }

    fn counted(&self) -> u64 {
        let s = self.node.stats();
        MessageKind::ALL.iter().map(|&k| s.received(k)).sum::<u64>() + s.dropped_total()
    }

    /// Hands in a message or KV entry and checks it was counted (as accepted or dropped),
    /// unless it is an echo of our own message.
    fn feed_counted(&mut self, input: Input) {
        let before = self.counted();
        let own = self.node.incarnation();
        let echo = match &input {
            Input::Received { payload, .. } => codec::decode(payload).is_ok_and(|m| {
                m.node() == OWN_ID
                    && m.cluster() == CLUSTER
                    && match m {
                        Message::Heartbeat(hb) => hb.incarnation == own,
                        Message::Reports(b) => b.incarnation == own,
                        Message::Leave(r) => r.incarnation == own,
                        _ => false,
                    }
            }),
            // Our own records are ours to judge (an earlier life, or the current one).
            Input::KvEntry { value, .. } => {
                codec::decode(value).is_ok_and(|m| m.node() == OWN_ID && m.cluster() == CLUSTER)
            }
            _ => false,
        };
        self.feed(input.clone());
        assert!(
            echo || self.counted() > before,
            "input neither accepted nor counted as dropped: {input:?}"
        );
    }

    fn remember(&mut self, input: &Input) {
        if self.remembered.len() < MAX_REMEMBERED {
            self.remembered.push(input.clone());
        } else {
            let i = (self.t_ns as usize ^ self.remembered.len()) % MAX_REMEMBERED;
            self.remembered[i] = input.clone();
        }
    }

    fn advance_to(&mut self, target_ns: u64, run_timers: bool) {
        let target_ns = target_ns.min(MAX_T_NS).max(self.t_ns);
        if run_timers {
            for _ in 0..MAX_WAKES_PER_ADVANCE {
                let wake = self.node.poll_timeout();
                if wake.as_nanos() > target_ns {
                    break;
                }
                self.t_ns = self.t_ns.max(wake.as_nanos());
                self.timeout();
            }
        }
        self.t_ns = target_ns;
        self.timeout();
    }

    fn timeout(&mut self) {
        let now = self.now();
        self.node.handle_timeout(now);
        self.model.handle_timeout(now);
        self.peer.handle_timeout(now);
        let wake = self.node.poll_timeout();
        assert!(
            wake > now.mono,
            "after handle_timeout({:?}) the next timer is not in the future: {:?}",
            now.mono,
            self.node.poll_timeout_reason()
        );
        self.drain();
    }

    fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::Advance { ns } => self.advance_to(self.t_ns.saturating_add(ns), true),
            Op::Skip { ns } => self.advance_to(self.t_ns.saturating_add(ns), false),
            Op::WallStep { ms } => {
                self.wall_skew_ms = self
                    .wall_skew_ms
                    .saturating_add(ms)
                    .clamp(-(WALL_BASE_MS as i64), 10 * WALL_BASE_MS as i64);
                self.timeout();
            }
            Op::Receive { subject, payload } => {
                let input = Input::Received { subject, payload };
                self.remember(&input);
                self.feed_counted(input);
            }
            Op::Kv { bucket, key, value } => {
                if let Ok(Message::Member(rec)) = codec::decode(&value)
                    && let Some(s) = rec.snapshot
                    && let Some(&node) = NODES.iter().find(|&&n| n == rec.node)
                {
                    if self.snapshot_refs.len() >= MAX_SNAPSHOT_REFS {
                        self.snapshot_refs.remove(0);
                    }
                    self.snapshot_refs.push((node, s));
                }
                let input = Input::KvEntry { bucket, key, value };
                self.remember(&input);
                self.feed_counted(input);
            }
            Op::Local { endpoint, healthy } => {
                if check_endpoint_name(&endpoint).is_ok() {
                    match healthy {
                        Some(h) => self.local.insert(endpoint.clone(), h),
                        None => self.local.remove(&endpoint),
                    };
                }
                self.feed(Input::LocalHealth { endpoint, healthy });
            }
            Op::Replay { index, flip } => {
                if self.remembered.is_empty() {
                    return;
                }
                let mut input = self.remembered[index % self.remembered.len()].clone();
                if let Some(ByteFlip { at, xor }) = flip
                    && let Input::Received { payload, .. } | Input::KvEntry { value: payload, .. } =
                        &mut input
                    && !payload.is_empty()
                {
                    let mut v = payload.to_vec();
                    let i = at % v.len();
                    v[i] ^= xor;
                    *payload = Bytes::from(v);
                }
                self.feed_counted(input);
            }
            Op::Echo { index } => {
                if self.own_publishes.is_empty() {
                    return;
                }
                let (subject, payload) =
                    self.own_publishes[index % self.own_publishes.len()].clone();
                self.feed_counted(Input::Received { subject, payload });
            }
            Op::Config { version, yaml } => self.feed(Input::ConfigEntry { version, yaml }),
            Op::Connectivity(c) => self.feed(Input::Connectivity(c)),
            Op::ReadDone { read, complete } => self.feed(Input::KvReadDone { read, complete }),
            Op::PutFailed { bucket, key } => {
                if bucket == Bucket::Health
                    && let Ok((node, endpoint)) = self.names.parse_report_key(&key)
                    && node == OWN_ID
                {
                    self.failed_puts.insert(endpoint);
                }
                // The seq of the latest write of that key still unacknowledged.
                let seq = self
                    .unacked_puts
                    .iter()
                    .rev()
                    .find(|(k, _, _)| *k == key)
                    .map_or(0, |(_, seq, _)| *seq);
                self.feed(Input::KvPutFailed { bucket, key, seq });
            }
            Op::AckPuts { reverse } => {
                // Stored in the order handed out, each at the next revision; the
                // acknowledgements may come back in another order.
                let mut acks = Vec::new();
                for (key, seq, value) in std::mem::take(&mut self.unacked_puts) {
                    self.revision += 1;
                    self.kv.insert(key.clone(), (self.revision, value));
                    acks.push((key, seq, self.revision));
                }
                if reverse {
                    acks.reverse();
                }
                for (key, seq, revision) in acks {
                    self.feed(Input::KvPutOk {
                        bucket: Bucket::Health,
                        key,
                        seq,
                        revision,
                    });
                }
            }
            Op::Lost { count } => self.feed(Input::MessagesLost { count }),
            Op::ConfigApplied { version, ok } => self.feed(Input::ConfigApplied {
                version,
                result: if ok { Ok(()) } else { Err("harness".into()) },
            }),
            Op::Leave => self.feed(Input::Leave),
        }
        self.drain();
    }

    /// Drains the node's outputs, checking each.
    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            self.check_output(out);
        }
        self.deliver_to_peer();
    }
}
