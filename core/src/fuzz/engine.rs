//! The engine target: the policy engine driven side by side with the reference model.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::WALL_BASE_MS;
use crate::codec::{
    self, Heartbeat, MAX_SEQ, MemberRecord, Message, ReportBatch, ReportItem, ReportRecord,
    ReportState,
};
use crate::config::Config;
use crate::input::KvRead;
use crate::names::{Bucket, MAX_ENDPOINT_NAME_BYTES, Names, SubjectKind, check_endpoint_name};
use crate::reference::Reference;
use crate::{
    Connectivity, Decision, DropReason, Input, Instant, Limits, MessageKind, Node, NodeConfig, Now,
    Output, Policy, Source, WallTime,
};

const CLUSTER: &str = "c";
const OWN_ID: &str = "me";
/// The second engine, which hears what the node publishes.
const PEER_ID: &str = "peer";
/// Remote node ids, our own among them (messages that claim to be us must be ignored).
const NODES: [&str; 6] = ["a", "b", "n.1", "ünï ☃", OWN_ID, "z-9"];
/// At most this many earlier messages are kept for replays.
const MAX_REMEMBERED: usize = 64;
/// Timer wake-ups run one by one in a time jump before the rest is jumped at once.
const MAX_WAKES_PER_ADVANCE: usize = 256;
/// Time never goes past this (about 3 years), so instants stay far from saturation.
const MAX_T_NS: u64 = 100_000_000_000_000_000;

fn endpoint_names() -> [String; 5] {
    [
        "web".to_owned(),
        "db".to_owned(),
        "dns ☃".to_owned(),
        "a.b>*".to_owned(),
        "é".repeat(MAX_ENDPOINT_NAME_BYTES / 2),
    ]
}

/// The policy engine against the reference model.
///
/// The bytes become a starting configuration and a sequence of operations: heartbeats, report
/// batches, local observations, KV member and report records with skewed timestamps, replays
/// and corrupted replays of earlier messages, spoofed and foreign messages, echoes of the
/// node's own messages, config events (valid and not), connectivity changes, KV read and write
/// outcomes, time jumps and wall-clock steps. They drive a [`Node`] and a [`Reference`] side by
/// side; after every operation every decision and the set of active members must agree, and the
/// engine's own invariants must hold: decision outputs match the getters, counters match the
/// outputs, every input is counted, timers are never in the past, and what the node publishes
/// is well-formed and announces exactly what it has sent.
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

/// One operation of the engine harness.
#[derive(Debug, Clone)]
enum Op {
    /// Jump forward, running the timers due on the way.
    Advance { ns: u64 },
    /// Jump forward without running the timers on the way (a late driver).
    Skip { ns: u64 },
    /// Step the wall clock (NTP), forwards or backwards.
    WallStep { ms: i64 },
    /// Hand in a message as received on `subject`.
    Receive { subject: String, payload: Bytes },
    /// Hand in a KV entry.
    Kv {
        bucket: Bucket,
        key: String,
        value: Bytes,
    },
    /// A local observation.
    Local {
        endpoint: String,
        healthy: Option<bool>,
    },
    /// Replay a remembered input, possibly with one byte changed.
    Replay {
        index: usize,
        flip: Option<(usize, u8)>,
    },
    /// Hand one of the node's own publishes back to it (NATS echo).
    Echo { index: usize },
    /// A config event.
    Config { version: u64, yaml: Bytes },
    /// NATS up or down.
    Connectivity(Connectivity),
    /// A KV read finished.
    ReadDone { read: KvRead, complete: bool },
    /// A KV write failed.
    PutFailed { bucket: Bucket, key: String },
    /// Acknowledge every KV write of the node so far.
    AckPuts,
    /// Messages were lost (a slow consumer).
    Lost { count: u64 },
    /// The driver reports how applying a config version went.
    ConfigApplied { version: u64, ok: bool },
    /// The node leaves.
    Leave,
}

impl Op {
    fn arbitrary(u: &mut Unstructured<'_>, h: &Harness) -> arbitrary::Result<Op> {
        let names = &h.names;
        Ok(match u.int_in_range(0u8..=20)? {
            0..=2 => Op::Advance {
                ns: duration_ns(u)?,
            },
            3 => Op::Skip {
                ns: duration_ns(u)?,
            },
            4 => Op::WallStep {
                ms: u.int_in_range(-86_400_000i64..=86_400_000)?,
            },
            5..=7 => {
                let (node, subject_node) = sender(u)?;
                let msg = Message::Heartbeat(Heartbeat {
                    cluster: cluster(u)?,
                    node,
                    region: region(u)?,
                    incarnation: incarnation(u, h)?,
                    seq: seq(u)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    report_seq: seq(u)?,
                    kv_seq: seq(u)?,
                });
                Op::Receive {
                    subject: subject(u, names, SubjectKind::Heartbeat, subject_node)?,
                    payload: codec::encode(&msg),
                }
            }
            8..=10 => {
                let (node, subject_node) = sender(u)?;
                let mut items = Vec::new();
                let endpoints = endpoint_names();
                let mut names_held = Vec::new();
                while items.len() < 6 && u.ratio(3u8, 4u8)? {
                    names_held.push(endpoint(u, &endpoints)?);
                    items.push((seq(u)?, ReportState::arbitrary(u)?));
                }
                let first_seq = seq(u)?;
                let top = items.iter().map(|i| i.0).max().unwrap_or(0).max(first_seq);
                let last_seq = if u.ratio(1u8, 8u8)? { seq(u)? } else { top };
                let msg = Message::Reports(ReportBatch {
                    cluster: cluster(u)?,
                    node,
                    incarnation: incarnation(u, h)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    first_seq,
                    last_seq,
                    items: names_held
                        .iter()
                        .zip(&items)
                        .map(|(endpoint, &(seq, state))| ReportItem {
                            endpoint,
                            seq,
                            state,
                        })
                        .collect(),
                });
                Op::Receive {
                    subject: subject(u, names, SubjectKind::Health, subject_node)?,
                    payload: codec::encode(&msg),
                }
            }
            11 => {
                let (node, key_node) = sender(u)?;
                let rec = MemberRecord {
                    cluster: cluster(u)?,
                    node,
                    region: region(u)?,
                    incarnation: incarnation(u, h)?,
                    hb_seq: seq(u)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    report_seq: seq(u)?,
                    kv_seq: seq(u)?,
                };
                let msg = if u.ratio(1u8, 6u8)? {
                    Message::Leave(rec)
                } else {
                    Message::Member(rec)
                };
                let key = if u.ratio(1u8, 16u8)? {
                    String::arbitrary(u)?
                } else {
                    names.member_key(key_node)
                };
                let bucket = if u.ratio(1u8, 16u8)? {
                    Bucket::Health
                } else {
                    Bucket::Members
                };
                Op::Kv {
                    bucket,
                    key,
                    value: codec::encode(&msg),
                }
            }
            12 => {
                let (node, key_node) = sender(u)?;
                let endpoints = endpoint_names();
                let ep = endpoint(u, &endpoints)?;
                let key_ep = if u.ratio(1u8, 16u8)? {
                    endpoint(u, &endpoints)?
                } else {
                    ep.clone()
                };
                let msg = Message::Report(ReportRecord {
                    cluster: cluster(u)?,
                    node,
                    endpoint: &ep,
                    incarnation: incarnation(u, h)?,
                    seq: seq(u)?,
                    sent_unix_ms: h.sent_unix_ms(u)?,
                    state: ReportState::arbitrary(u)?,
                });
                let key = if u.ratio(1u8, 16u8)? {
                    String::arbitrary(u)?
                } else {
                    names.report_key(key_node, &key_ep)
                };
                let bucket = if u.ratio(1u8, 16u8)? {
                    Bucket::Members
                } else {
                    Bucket::Health
                };
                Op::Kv {
                    bucket,
                    key,
                    value: codec::encode(&msg),
                }
            }
            13..=14 => {
                let endpoints = endpoint_names();
                Op::Local {
                    endpoint: endpoint(u, &endpoints)?,
                    healthy: Option::<bool>::arbitrary(u)?,
                }
            }
            15 => Op::Replay {
                index: usize::arbitrary(u)?,
                flip: if u.ratio(1u8, 4u8)? {
                    Some((usize::arbitrary(u)?, u8::arbitrary(u)?.max(1)))
                } else {
                    None
                },
            },
            16 => Op::Echo {
                index: usize::arbitrary(u)?,
            },
            17 => {
                let version = if u.ratio(7u8, 8u8)? {
                    u64::from(u.int_in_range(0u8..=12)?)
                } else {
                    u64::arbitrary(u)?
                };
                Op::Config {
                    version,
                    yaml: config_yaml(u)?,
                }
            }
            20 => match u.int_in_range(0u8..=5)? {
                0 => Op::Lost {
                    count: u64::from(u.int_in_range(1u8..=200)?),
                },
                1 | 2 => Op::ConfigApplied {
                    version: if u.ratio(3u8, 4u8)? {
                        h.seen.last_apply_version
                    } else {
                        u64::from(u.int_in_range(0u8..=12)?)
                    },
                    ok: u.ratio(2u8, 3u8)?,
                },
                3 => Op::Leave,
                _ => {
                    // A leave announcement on a heartbeat subject.
                    let (node, subject_node) = sender(u)?;
                    let msg = Message::Leave(MemberRecord {
                        cluster: cluster(u)?,
                        node,
                        region: region(u)?,
                        incarnation: incarnation(u, h)?,
                        hb_seq: seq(u)?,
                        sent_unix_ms: h.sent_unix_ms(u)?,
                        report_seq: seq(u)?,
                        kv_seq: seq(u)?,
                    });
                    Op::Receive {
                        subject: subject(u, names, SubjectKind::Heartbeat, subject_node)?,
                        payload: codec::encode(&msg),
                    }
                }
            },
            18 => match u.int_in_range(0u8..=2)? {
                0 => Op::Connectivity(Connectivity::arbitrary(u)?),
                1 => Op::ReadDone {
                    read: match u.int_in_range(0u8..=2)? {
                        0 => KvRead::Snapshot,
                        1 => KvRead::Members,
                        _ => KvRead::Reports {
                            node: sender(u)?.0.to_owned(),
                        },
                    },
                    complete: u.arbitrary()?,
                },
                _ => {
                    let endpoints = endpoint_names();
                    let bucket = Bucket::arbitrary(u)?;
                    let key = match (bucket, u.int_in_range(0u8..=2)?) {
                        (Bucket::Health, 0 | 1) => {
                            names.report_key(OWN_ID, &endpoint(u, &endpoints)?)
                        }
                        (Bucket::Members, 0 | 1) => names.member_key(OWN_ID),
                        _ => String::arbitrary(u)?,
                    };
                    if u.arbitrary()? {
                        Op::PutFailed { bucket, key }
                    } else {
                        Op::AckPuts
                    }
                }
            },
            _ => {
                // Garbage: random bytes, often behind a valid envelope header, on a valid or
                // random subject.
                let mut payload = Vec::new();
                if u.arbitrary()? {
                    payload.extend_from_slice(&codec::MAGIC);
                    payload.push(codec::FORMAT_VERSION);
                    payload.push(u.int_in_range(1u8..=5)?);
                }
                let len = u.int_in_range(0usize..=48)?;
                payload.extend_from_slice(u.bytes(len.min(u.len()))?);
                let subject = if u.ratio(1u8, 8u8)? {
                    String::arbitrary(u)?
                } else {
                    let kind = if u.arbitrary()? {
                        SubjectKind::Heartbeat
                    } else {
                        SubjectKind::Health
                    };
                    names.subject(kind, sender(u)?.0)
                };
                Op::Receive {
                    subject,
                    payload: Bytes::from(payload),
                }
            }
        })
    }
}

fn duration_ns(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => u.int_in_range(0u64..=3)?,
        1 => u64::from(u.int_in_range(0u32..=4_000_000_000)?),
        2 => u.int_in_range(0u64..=400_000_000_000_000)?, // up to about 4.6 days
        _ => u64::from(u.int_in_range(0u16..=5_000)?) * 1_000_000,
    })
}

/// The node a message is from, and the node its subject or key names (usually the same).
fn sender(u: &mut Unstructured<'_>) -> arbitrary::Result<(&'static str, &'static str)> {
    let node = *u.choose(&NODES)?;
    let named = if u.ratio(1u8, 16u8)? {
        *u.choose(&NODES)?
    } else {
        node
    };
    Ok((node, named))
}

fn cluster(u: &mut Unstructured<'_>) -> arbitrary::Result<&'static str> {
    Ok(if u.ratio(1u8, 32u8)? {
        "other"
    } else {
        CLUSTER
    })
}

fn region(u: &mut Unstructured<'_>) -> arbitrary::Result<&'static str> {
    const REGIONS: [&str; 4] = ["", "eu", "us-east-1", "ap"];
    u.choose(&REGIONS).copied()
}

/// An incarnation: small, any, or near our own (records of our own id can raise it).
fn incarnation(u: &mut Unstructured<'_>, h: &Harness) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=31)? {
        0 => u64::arbitrary(u)?,
        1..=2 => h.node.incarnation() + u64::from(u.int_in_range(0u8..=2)?),
        _ => u64::from(u.int_in_range(1u8..=3)?),
    })
}

fn seq(u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
    Ok(match u.int_in_range(0u8..=31)? {
        0 => u64::arbitrary(u)?,
        1 => MAX_SEQ,
        _ => u64::from(u.int_in_range(0u8..=14)?),
    })
}

fn endpoint(u: &mut Unstructured<'_>, known: &[String]) -> arbitrary::Result<String> {
    Ok(if u.ratio(1u8, 16u8)? {
        let len = u.int_in_range(0usize..=300)?;
        "x".repeat(len)
    } else if u.ratio(1u8, 16u8)? {
        String::arbitrary(u)?
    } else {
        u.choose(known)?.clone()
    })
}

fn subject(
    u: &mut Unstructured<'_>,
    names: &Names,
    kind: SubjectKind,
    node: &str,
) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0u8..=31)? {
        0 => String::arbitrary(u)?,
        1 => {
            let other = if kind == SubjectKind::Heartbeat {
                SubjectKind::Health
            } else {
                SubjectKind::Heartbeat
            };
            names.subject(other, node)
        }
        2 => Names::new("other").subject(kind, node),
        _ => names.subject(kind, node),
    })
}

fn config_yaml(u: &mut Unstructured<'_>) -> arbitrary::Result<Bytes> {
    if u.ratio(1u8, 8u8)? {
        let len = u.int_in_range(0usize..=200)?;
        return Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?));
    }
    let policy = u.choose(&Policy::ALL)?.as_str();
    let q = match u.int_in_range(0u8..=15)? {
        0 => u.int_in_range(0u8..=101)?,
        n => [1, 18, 33, 50, 51, 66, 67, 100][usize::from(n % 8)],
    };
    let interval_ms = u.int_in_range(5u64..=3_000)?;
    let ttl_ms = if u.ratio(1u8, 16u8)? {
        u.int_in_range(0u64..=100_000)?
    } else {
        interval_ms + u.int_in_range(1u64..=10_000)?
    };
    let cluster = if u.ratio(1u8, 16u8)? {
        "other"
    } else {
        CLUSTER
    };
    Ok(Bytes::from(format!(
        "cluster: {{id: {cluster}}}\nstate: {{healthPolicy: {policy}, quorumMinPercent: {q}, heartbeatInterval: {interval_ms}ms, heartbeatTTL: {ttl_ms}ms}}\n"
    )))
}

/// What the harness has seen the node do, to check its counters and its protocol.
#[derive(Debug, Default)]
struct Seen {
    /// Latest (verdict, source) handed out per endpoint.
    emitted: BTreeMap<String, (Option<bool>, Source)>,
    decisions: u64,
    resyncs: u64,
    config_applied: u64,
    config_failed: u64,
    /// The version of the latest `ApplyConfig`.
    last_apply_version: u64,
    config_rejected: u64,
    config_ignored: u64,
    published: [u64; MessageKind::ALL.len()],
    /// Highest heartbeat sequence published.
    hb_seq: u64,
    /// `last_seq` of the latest batch that claims a sequence range.
    batch_last_seq: u64,
    /// Newest (seq, state) per endpoint over every report batch published.
    batch_reports: BTreeMap<String, (u64, ReportState)>,
    /// Newest (seq, state) per endpoint over every report written to the KV.
    kv_reports: BTreeMap<String, (u64, ReportState)>,
}

struct Harness {
    /// The starting configuration, for traces.
    start: String,
    names: Names,
    node: Node,
    model: Reference,
    t_ns: u64,
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
    /// Health-bucket writes of the node not acknowledged yet: (key, seq).
    unacked_puts: Vec<(String, u64)>,
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
        let node_config = NodeConfig {
            limits: Limits {
                // Forgetting long-gone members is a memory bound the model does not have.
                forget_after_ttls: 0,
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
        let mut h = Harness {
            start: format!(
                "start at {t_ns} ns: {:?}, connected: {connect}",
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

    /// A sender timestamp: near our wall clock, skewed, or anything at all.
    fn sent_unix_ms(&self, u: &mut Unstructured<'_>) -> arbitrary::Result<u64> {
        let wall = self.now().wall.as_unix_ms();
        Ok(match u.int_in_range(0u8..=15)? {
            0 => u64::arbitrary(u)?,
            1 => wall.saturating_add_signed(i64::from(u.arbitrary::<i32>()?)),
            _ => wall.saturating_add_signed(i64::from(u.int_in_range(-20_000i32..=20_000)?)),
        })
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
                if let Some((at, xor)) = flip
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
                self.feed(Input::KvPutFailed { bucket, key });
            }
            Op::AckPuts => {
                for (key, seq) in std::mem::take(&mut self.unacked_puts) {
                    self.feed(Input::KvPutOk {
                        bucket: Bucket::Health,
                        key,
                        seq,
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

    fn check_output(&mut self, out: Output) {
        match out {
            Output::Decision { endpoint, decision } => {
                assert_eq!(
                    self.node.decision(&endpoint),
                    Some(decision),
                    "decision output for {endpoint:?} differs from the getter"
                );
                self.seen.decisions += 1;
                self.seen
                    .emitted
                    .insert(endpoint, (decision.healthy, decision.source));
            }
            Output::Publish {
                subject,
                payload,
                kind,
            } => {
                self.seen.published[kind as usize] += 1;
                let (subject_kind, node) = self
                    .names
                    .parse_subject(&subject)
                    .unwrap_or_else(|e| panic!("published on a bad subject {subject:?}: {e}"));
                assert_eq!(node, OWN_ID, "published on another node's subject");
                let msg = own_message(&payload, self.node.incarnation());
                match (subject_kind, kind, &msg) {
                    (SubjectKind::Heartbeat, MessageKind::Leave, Message::Leave(rec)) => {
                        assert!(self.node.is_leaving(), "a leave without being asked");
                        assert_eq!(rec.hb_seq, self.seen.hb_seq + 1);
                    }
                    (SubjectKind::Heartbeat, MessageKind::Heartbeat, Message::Heartbeat(hb)) => {
                        assert!(hb.seq > self.seen.hb_seq, "heartbeat sequence went back");
                        self.seen.hb_seq = hb.seq;
                        assert_eq!(
                            hb.report_seq, self.seen.batch_last_seq,
                            "heartbeat announces a report sequence other than the last published"
                        );
                    }
                    (SubjectKind::Health, MessageKind::Health, Message::Reports(b)) => {
                        if b.first_seq != 0 {
                            assert_eq!(
                                b.first_seq,
                                self.seen.batch_last_seq + 1,
                                "report batches leave a gap or overlap"
                            );
                            self.seen.batch_last_seq = b.last_seq;
                        }
                        for item in &b.items {
                            newest(
                                &mut self.seen.batch_reports,
                                item.endpoint,
                                item.seq,
                                item.state,
                            );
                        }
                    }
                    _ => panic!("published {kind:?} on {subject:?}: {msg:?}"),
                }
                if self.own_publishes.len() < MAX_REMEMBERED {
                    self.own_publishes.push((subject.clone(), payload.clone()));
                }
                self.peer_inbox.push((subject, payload));
            }
            Output::KvPut {
                bucket,
                key,
                value,
                kind,
                seq,
            } => {
                self.seen.published[kind as usize] += 1;
                assert!(
                    !self.node.is_leaving() || kind == MessageKind::Leave,
                    "wrote {kind:?} after being asked to leave"
                );
                match (bucket, kind, own_message(&value, self.node.incarnation())) {
                    (Bucket::Members, MessageKind::Leave, Message::Leave(rec)) => {
                        assert_eq!(key, self.names.member_key(OWN_ID));
                        assert_eq!(rec.hb_seq, self.seen.hb_seq + 1);
                    }
                    (Bucket::Members, MessageKind::Member, Message::Member(rec)) => {
                        assert_eq!(key, self.names.member_key(OWN_ID));
                        assert_eq!(
                            rec.hb_seq, self.seen.hb_seq,
                            "member record without heartbeat"
                        );
                    }
                    (Bucket::Health, MessageKind::Report, Message::Report(rec)) => {
                        assert_eq!(key, self.names.report_key(OWN_ID, rec.endpoint));
                        newest(&mut self.seen.kv_reports, rec.endpoint, rec.seq, rec.state);
                        self.failed_puts.remove(rec.endpoint);
                        assert_eq!(seq, rec.seq, "a KV write carries its report's sequence");
                        if self.unacked_puts.len() < MAX_REMEMBERED {
                            self.unacked_puts.push((key.clone(), seq));
                        }
                    }
                    (b, k, m) => panic!("wrote {k:?} to {b:?} under {key:?}: {m:?}"),
                }
            }
            Output::KvDelete { bucket, key } => {
                assert_eq!(bucket, Bucket::Health, "deleted from the members bucket");
                let (node, _) = self
                    .names
                    .parse_report_key(&key)
                    .unwrap_or_else(|e| panic!("deleted a bad key {key:?}: {e}"));
                assert_eq!(node, OWN_ID, "deleted another node's report");
            }
            Output::Resync { node, key_filter } => {
                self.seen.resyncs += 1;
                assert_ne!(node, OWN_ID, "re-sync of ourselves");
                assert_eq!(key_filter, self.names.report_key_filter(&node));
            }
            Output::ReadMembers => {}
            Output::ReadSnapshot => {
                assert!(
                    self.node.is_connected(),
                    "a snapshot asked for while disconnected"
                );
                self.model.snapshot_requested();
            }
            Output::IncarnationRaised { from, to } => {
                assert!(to > from, "incarnation went back");
                assert_eq!(to, self.node.incarnation());
                // A new life: heartbeat and batch sequences start over.
                self.seen.hb_seq = 0;
                self.seen.batch_last_seq = 0;
            }
            Output::MemberUp { node, .. } | Output::MemberDown { node, .. } => {
                assert_ne!(node, OWN_ID, "membership change of ourselves");
            }
            Output::ApplyConfig { version, config } => {
                self.seen.last_apply_version = version;
                // Committed at once (in the same call) when the driver does not confirm.
                assert!(version >= self.node.config_version());
                assert_eq!(config.cluster_id, CLUSTER);
            }
            Output::ConfigCommitted { version } => {
                self.seen.config_applied += 1;
                assert_eq!(version, self.node.config_version());
            }
            Output::ConfigFailed { version, .. } => {
                self.seen.config_failed += 1;
                assert!(version > self.node.config_version());
            }
            Output::ConfigRejected { .. } => self.seen.config_rejected += 1,
            Output::ConfigIgnored { version, current } => {
                self.seen.config_ignored += 1;
                assert!(version <= current, "ignored a newer config");
            }
        }
    }

    /// Hands the node's publishes to the peer. Hearing every one in order, the peer never
    /// needs a re-sync and drops nothing but repeated reports.
    fn deliver_to_peer(&mut self) {
        let now = self.now();
        for (subject, payload) in std::mem::take(&mut self.peer_inbox) {
            self.peer.handle(now, Input::Received { subject, payload });
        }
        while let Some(out) = self.peer.poll_output() {
            assert!(
                !matches!(out, Output::Resync { .. }),
                "the peer heard every publish in order, yet asks for a re-sync: {out:?}"
            );
        }
        let s = self.peer.stats();
        assert_eq!(
            s.dropped_total(),
            s.dropped(DropReason::Duplicate),
            "the peer dropped the node's messages: {s:?}"
        );
    }

    fn check(&self, step: usize, op: &Op) {
        let ctx = || format!("after step {step} ({op:?})");
        // The engine against the model.
        let active = self.node.active_member_ids();
        assert_eq!(
            active,
            self.model.active_members(),
            "active members {}",
            ctx()
        );
        let mut endpoints: BTreeSet<String> = self.model.endpoints();
        endpoints.extend(endpoint_names());
        endpoints.extend(self.node.decisions().map(|(name, _)| name.to_owned()));
        for ep in &endpoints {
            let want = self.model.decision(ep);
            let got = self.node.decision(ep).unwrap_or(UNKNOWN);
            assert_eq!(got, want, "decision for {ep:?} {}", ctx());
            let emitted = self
                .seen
                .emitted
                .get(ep)
                .copied()
                .unwrap_or((None, Source::Unknown));
            assert_eq!(
                emitted,
                (got.healthy, got.source),
                "emitted decision for {ep:?} {}",
                ctx()
            );
        }
        // Getters agree with each other.
        let mut count = 0;
        for (name, d) in self.node.decisions() {
            assert_eq!(self.node.decision(name), Some(d));
            count += 1;
        }
        assert_eq!(count, self.node.endpoint_count());
        assert_eq!(self.node.active_members(), active.len());
        let members = self.node.members();
        assert!(members[0].local && members[0].active && members[0].node == OWN_ID);
        let mut listed: Vec<String> = members
            .iter()
            .filter(|m| m.active)
            .map(|m| m.node.clone())
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            active,
            "members() and active_member_ids() disagree {}",
            ctx()
        );
        // Counters match the outputs.
        let s = self.node.stats();
        assert_eq!(s.decisions_changed, self.seen.decisions);
        assert_eq!(s.resyncs_requested, self.seen.resyncs);
        assert_eq!(s.config_applied, self.seen.config_applied);
        assert_eq!(s.config_failed, self.seen.config_failed);
        assert_eq!(s.config_rejected, self.seen.config_rejected);
        assert_eq!(s.config_ignored, self.seen.config_ignored);
        for kind in MessageKind::ALL {
            assert_eq!(
                s.published(kind),
                self.seen.published[kind as usize],
                "{kind:?}"
            );
        }
        assert_eq!(s.dropped(DropReason::OutputQueueFull), 0);
        // While connected, a peer that hears the node live sees exactly its observations.
        if self.node.is_connected()
            && !self.node.is_leaving()
            && self.peer.active_member_ids().iter().any(|m| m == OWN_ID)
        {
            for (ep, d) in self.peer.decisions() {
                let want = self.local.get(ep).copied();
                assert_eq!(d.healthy, want, "the peer's view of {ep:?} {}", ctx());
            }
            for ep in self.local.keys() {
                assert!(
                    self.peer.decision(ep).is_some(),
                    "the peer never heard of {ep:?} {}",
                    ctx()
                );
            }
        }
        // While connected, with every output carried out, peers have been told every local
        // observation: by the report batches, and by the KV (once the snapshot was read)
        // unless a write of it failed.
        if self.node.is_connected() && !self.node.is_leaving() {
            for (ep, &healthy) in &self.local {
                let want = ReportState::from_observation(Some(healthy));
                let sent = self.seen.batch_reports.get(ep).map(|r| r.1);
                assert_eq!(sent, Some(want), "published report for {ep:?} {}", ctx());
                if self.node.snapshot_loaded() && !self.failed_puts.contains(ep) {
                    let put = self.seen.kv_reports.get(ep).map(|r| r.1);
                    assert_eq!(put, Some(want), "KV report for {ep:?} {}", ctx());
                }
            }
        }
    }
}

const UNKNOWN: Decision = Decision {
    healthy: None,
    source: Source::Unknown,
    healthy_reports: 0,
    total_reports: 0,
    local: None,
};

/// Decodes a message the node wrote, which must be valid, its own, and of its incarnation.
fn own_message(bytes: &[u8], own_incarnation: u64) -> Message<'_> {
    let msg = codec::decode(bytes)
        .unwrap_or_else(|e| panic!("the node wrote an undecodable message: {e}"));
    assert_eq!((msg.cluster(), msg.node()), (CLUSTER, OWN_ID));
    let incarnation = match &msg {
        Message::Heartbeat(m) => m.incarnation,
        Message::Reports(m) => m.incarnation,
        Message::Member(m) => m.incarnation,
        Message::Report(m) => m.incarnation,
        Message::Leave(m) => m.incarnation,
    };
    assert_eq!(incarnation, own_incarnation);
    msg
}

fn newest(map: &mut BTreeMap<String, (u64, ReportState)>, ep: &str, seq: u64, state: ReportState) {
    match map.get(ep) {
        Some(&(old, _)) if old >= seq => {}
        _ => {
            map.insert(ep.to_owned(), (seq, state));
        }
    }
}
