//! Helpers shared by the core's integration tests: clocks, peers that speak the wire format,
//! a pump that carries one node's outputs to another, the end of the start-up snapshot, and
//! a KV store that carries out a node's writes and answers its reads.
#![allow(dead_code)]

pub mod kv;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use gslb_state_core::codec::{
    self, Heartbeat, MemberRecord, Message, ReportBatch, ReportChunk, ReportItem, ReportRecord,
    ReportState, SnapshotRef,
};
use gslb_state_core::names::SubjectKind;
use gslb_state_core::{
    Config, Input, Instant, KvRead, Limits, Names, Node, NodeConfig, Now, Output, Policy, Source,
    WallTime,
};

pub const CLUSTER: &str = "c";
pub const WALL_BASE_MS: u64 = 1_700_000_000_000;

/// Both clocks at `ms` milliseconds after the start, wall clock shifted by `skew_ms`.
pub fn at(ms: u64) -> Now {
    at_skewed(ms, 0)
}

pub fn at_skewed(ms: u64, skew_ms: i64) -> Now {
    Now::new(
        Instant::from_millis(ms),
        WallTime::from_unix_ms((WALL_BASE_MS + ms).wrapping_add_signed(skew_ms)),
    )
}

pub fn node_config(id: &str, policy: Policy, q: u8) -> NodeConfig {
    let mut c = Config::with_defaults(CLUSTER);
    c.state.policy = policy;
    c.state.quorum_min_percent = q;
    c.state.heartbeat_interval = Duration::from_secs(1);
    c.state.heartbeat_ttl = Duration::from_secs(3);
    NodeConfig {
        // Writes at once: these tests look at a change's publish and write together (the delay
        // has tests of its own).
        limits: Limits {
            forget_after_ttls: 0,
            kv_write_delay: Duration::ZERO,
            ..Limits::default()
        },
        ..NodeConfig::from_config(&c, id)
    }
}

pub fn node(id: &str, policy: Policy, q: u8) -> Node {
    Node::new(node_config(id, policy, q), at(0)).unwrap()
}

/// The end of the start-up snapshot's first part: the members bucket read in full.
pub const MEMBERS_READ: Input = Input::KvReadDone {
    read: KvRead::Snapshot,
    complete: true,
};

/// The end of the report read of region `region` (the start-up snapshot's second part).
pub fn reports_read(region: &str, complete: bool) -> Input {
    Input::KvReadDone {
        read: KvRead::SnapshotReports {
            region: region.to_owned(),
        },
        complete,
    }
}

/// Ends the start-up snapshot of `n` (connected, reading it) at `now`, for a test that handed
/// in what it holds as it went (records and report entries alike, which the core takes while
/// reading): the members bucket is read in full, then the one report read the core asks for
/// without region buckets (`Output::ReadSnapshotReports` for region "", left among its
/// outputs) is over. Does nothing visible if no snapshot is being read.
pub fn snapshot_done(n: &mut Node, now: Now) {
    n.handle(now, MEMBERS_READ);
    n.handle(now, reports_read("", true));
}

/// Drains every output of `node`.
pub fn drain(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// Carries `from`'s publishes to each of `to` at `now`; returns every output of `from`.
pub fn pump(from: &mut Node, to: &mut [&mut Node], now: Now) -> Vec<Output> {
    let outs = drain(from);
    for out in &outs {
        if let Output::Publish {
            subject, payload, ..
        } = out
        {
            for n in to.iter_mut() {
                n.handle(
                    now,
                    Input::Received {
                        subject: subject.clone(),
                        payload: payload.clone(),
                    },
                );
            }
        }
    }
    outs
}

/// A remote peer that writes wire messages by hand (for reordering, duplication, spoofing).
pub struct Peer {
    pub id: String,
    pub incarnation: u64,
    pub names: Names,
    /// The region its heartbeats and records name.
    pub region: String,
}

impl Peer {
    pub fn new(id: &str, incarnation: u64) -> Self {
        Peer::in_region(id, incarnation, "")
    }

    pub fn in_region(id: &str, incarnation: u64, region: &str) -> Self {
        Peer {
            id: id.to_owned(),
            incarnation,
            names: Names::new(CLUSTER),
            region: region.to_owned(),
        }
    }

    pub fn heartbeat(&self, seq: u64, report_seq: u64, sent_ms: u64) -> Input {
        self.heartbeat_kv(seq, report_seq, report_seq, sent_ms)
    }

    /// A heartbeat that says only reports up to `kv_seq` are durable in the KV yet.
    pub fn heartbeat_kv(&self, seq: u64, report_seq: u64, kv_seq: u64, sent_ms: u64) -> Input {
        let payload = codec::encode(&Message::Heartbeat(Heartbeat {
            cluster: CLUSTER,
            node: &self.id,
            region: &self.region,
            incarnation: self.incarnation,
            seq,
            sent_unix_ms: sent_ms,
            report_seq,
            kv_seq,
        }));
        Input::Received {
            subject: self.names.subject(SubjectKind::Heartbeat, &self.id),
            payload,
        }
    }

    pub fn batch(
        &self,
        first_seq: u64,
        last_seq: u64,
        items: &[(&str, u64, ReportState)],
    ) -> Input {
        let payload = codec::encode(&Message::Reports(ReportBatch {
            cluster: CLUSTER,
            node: &self.id,
            incarnation: self.incarnation,
            sent_unix_ms: WALL_BASE_MS,
            first_seq,
            last_seq,
            items: items
                .iter()
                .map(|&(endpoint, seq, state)| ReportItem {
                    endpoint,
                    seq,
                    state,
                })
                .collect(),
        }));
        Input::Received {
            subject: self.names.subject(SubjectKind::Health, &self.id),
            payload,
        }
    }

    pub fn member_record(&self, hb_seq: u64, report_seq: u64, sent_ms: u64) -> Input {
        self.member_record_naming(hb_seq, report_seq, report_seq, sent_ms, None)
    }

    /// A membership record that says reports up to `kv_seq` are durable, naming the
    /// compacted snapshot `snapshot`.
    pub fn member_record_naming(
        &self,
        hb_seq: u64,
        report_seq: u64,
        kv_seq: u64,
        sent_ms: u64,
        snapshot: Option<SnapshotRef>,
    ) -> Input {
        let value = codec::encode(&Message::Member(MemberRecord {
            cluster: CLUSTER,
            node: &self.id,
            region: &self.region,
            incarnation: self.incarnation,
            hb_seq,
            sent_unix_ms: sent_ms,
            report_seq,
            kv_seq,
            snapshot,
        }));
        Input::KvEntry {
            bucket: gslb_state_core::Bucket::Members,
            key: self.names.member_key(&self.id),
            value,
        }
    }

    /// Chunk `index` of `snapshot` (a compacted snapshot of this peer) holding `items`, under
    /// its key.
    pub fn chunk(
        &self,
        snapshot: &SnapshotRef,
        index: u32,
        items: &[(&str, u64, ReportState)],
    ) -> Input {
        let items: Vec<ReportItem<'_>> = items
            .iter()
            .map(|&(endpoint, seq, state)| ReportItem {
                endpoint,
                seq,
                state,
            })
            .collect();
        let (reports, items_bytes, packed) = codec::pack_chunk_items(&items);
        let value = codec::encode(&Message::Chunk(ReportChunk {
            cluster: CLUSTER,
            node: &self.id,
            incarnation: snapshot.incarnation,
            generation: snapshot.generation,
            index,
            chunks: snapshot.chunks,
            reports,
            items_bytes,
            items: &packed,
        }));
        Input::KvEntry {
            bucket: gslb_state_core::Bucket::Health,
            key: self.names.chunk_key(&self.id, snapshot.generation, index),
            value,
        }
    }

    fn leave_message(&self, hb_seq: u64, sent_ms: u64) -> Bytes {
        codec::encode(&Message::Leave(MemberRecord {
            cluster: CLUSTER,
            node: &self.id,
            region: &self.region,
            incarnation: self.incarnation,
            hb_seq,
            sent_unix_ms: sent_ms,
            report_seq: 0,
            kv_seq: 0,
            snapshot: None,
        }))
    }

    /// A live leave announcement.
    pub fn leave(&self, sent_ms: u64) -> Input {
        Input::Received {
            subject: self.names.subject(SubjectKind::Heartbeat, &self.id),
            payload: self.leave_message(u64::MAX >> 3, sent_ms),
        }
    }

    /// A membership record that says the node left.
    pub fn leave_record(&self, hb_seq: u64, sent_ms: u64) -> Input {
        Input::KvEntry {
            bucket: gslb_state_core::Bucket::Members,
            key: self.names.member_key(&self.id),
            value: self.leave_message(hb_seq, sent_ms),
        }
    }

    pub fn report_record(&self, endpoint: &str, seq: u64, state: ReportState) -> Input {
        let value = codec::encode(&Message::Report(ReportRecord {
            cluster: CLUSTER,
            node: &self.id,
            endpoint,
            incarnation: self.incarnation,
            seq,
            sent_unix_ms: WALL_BASE_MS,
            state,
        }));
        Input::KvEntry {
            bucket: gslb_state_core::Bucket::Health,
            key: self.names.report_key(&self.id, endpoint),
            value,
        }
    }
}

/// Decisions handed out, per endpoint, as (verdict, source).
#[derive(Default)]
pub struct Emitted(pub BTreeMap<String, (Option<bool>, Source)>);

impl Emitted {
    pub fn absorb(&mut self, outs: &[Output]) {
        for out in outs {
            if let Output::Decision { endpoint, decision } = out {
                self.0
                    .insert(endpoint.clone(), (decision.healthy, decision.source));
            }
        }
    }

    pub fn get(&self, endpoint: &str) -> (Option<bool>, Source) {
        self.0
            .get(endpoint)
            .copied()
            .unwrap_or((None, Source::Unknown))
    }
}

pub fn payload_of(input: &Input) -> Bytes {
    match input {
        Input::Received { payload, .. } | Input::KvEntry { value: payload, .. } => payload.clone(),
        _ => Bytes::new(),
    }
}
