//! What the engine harness checks: each output of the node as it comes
//! ([`Harness::check_output`]), the peer that hears the node's publishes
//! ([`Harness::deliver_to_peer`]), and after every operation the node against the reference
//! model and its own getters, counters and protocol ([`Harness::check`]).

use std::collections::{BTreeMap, BTreeSet};

use super::ops::Op;
use super::{CLUSTER, Harness, MAX_REMEMBERED, OWN_ID, endpoint_names};
use crate::codec::{self, MemberRecord, Message, ReportState, SnapshotRef};
use crate::names::{Bucket, SubjectKind};
use crate::{Decision, DropReason, Input, MessageKind, Output, Said, Source};

/// What the harness has seen the node do, to check its counters and its protocol.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Latest (verdict, source) handed out per endpoint.
    pub(super) emitted: BTreeMap<String, (Option<bool>, Source)>,
    pub(super) decisions: u64,
    pub(super) resyncs: u64,
    pub(super) config_applied: u64,
    pub(super) config_failed: u64,
    /// The version of the latest `ApplyConfig`.
    pub(super) last_apply_version: u64,
    pub(super) config_rejected: u64,
    pub(super) config_ignored: u64,
    pub(super) published: [u64; MessageKind::ALL.len()],
    /// Highest heartbeat sequence published.
    pub(super) hb_seq: u64,
    /// `last_seq` of the latest batch that claims a sequence range.
    pub(super) batch_last_seq: u64,
    /// Newest report per endpoint over every report batch published.
    pub(super) batch_reports: BTreeMap<String, NewestReport>,
    /// Newest report per endpoint over every report written to the KV.
    pub(super) kv_reports: BTreeMap<String, NewestReport>,
    /// The compacted snapshot the node's latest membership record named.
    pub(super) named: Option<SnapshotRef>,
    /// Generation and chunk count of the compaction whose chunks the node writes now.
    pub(super) writing: Option<(u64, u32)>,
}

/// The newest report the node sent about one endpoint.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewestReport {
    /// Its sequence number.
    seq: u64,
    /// What it said.
    state: ReportState,
}

impl Harness {
    pub(super) fn check_output(&mut self, out: Output) {
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
                        if let Some(s) = rec.snapshot {
                            self.check_named_snapshot(&rec, s);
                        }
                        self.seen.named = rec.snapshot;
                    }
                    (Bucket::Health, MessageKind::Report, Message::Report(rec)) => {
                        assert_eq!(key, self.names.report_key(OWN_ID, rec.endpoint));
                        newest(&mut self.seen.kv_reports, rec.endpoint, rec.seq, rec.state);
                        self.failed_puts.remove(rec.endpoint);
                        assert_eq!(seq, rec.seq, "a KV write carries its report's sequence");
                        if self.unacked_puts.len() < MAX_REMEMBERED {
                            self.unacked_puts.push((key.clone(), seq, value.clone()));
                        }
                    }
                    (Bucket::Health, MessageKind::Chunk, Message::Chunk(c)) => {
                        assert_eq!(
                            key,
                            self.names.chunk_key(OWN_ID, c.generation, c.index),
                            "a chunk under another key"
                        );
                        assert_eq!(seq, c.generation, "a chunk write carries its generation");
                        if let Some(named) = self.seen.named {
                            assert!(
                                c.generation > named.generation
                                    && c.generation % 2 != named.generation % 2,
                                "chunk of generation {} written over the slot of the named \
                                 snapshot {named:?}",
                                c.generation
                            );
                        }
                        match self.seen.writing {
                            Some((generation, chunks)) if generation == c.generation => {
                                assert_eq!(chunks, c.chunks, "the chunk count changed");
                            }
                            previous => {
                                assert!(
                                    previous.is_none_or(|(g, _)| g < c.generation),
                                    "compaction generations went back: {previous:?}, then {}",
                                    c.generation
                                );
                                assert_eq!(c.index, 0, "a compaction's first chunk is not 0");
                                self.seen.writing = Some((c.generation, c.chunks));
                            }
                        }
                        // Each report the chunk holds was published (a chunk holds what the
                        // node said, never more).
                        let mut buf = Vec::new();
                        let items = codec::unpack_chunk_items(&c, &mut buf)
                            .expect("the node's own chunk unpacks");
                        for item in &items {
                            let published = self.seen.batch_reports.get(item.endpoint);
                            assert!(
                                published.is_some_and(|p| p.seq > item.seq
                                    || (p.seq == item.seq && p.state == item.state)),
                                "chunk item {item:?} was never published (newest {published:?})"
                            );
                        }
                        if self.unacked_puts.len() < MAX_REMEMBERED {
                            self.unacked_puts.push((key.clone(), seq, value.clone()));
                        }
                    }
                    (b, k, m) => panic!("wrote {k:?} to {b:?} under {key:?}: {m:?}"),
                }
            }
            Output::KvDelete { bucket, key } => {
                assert_eq!(bucket, Bucket::Health, "deleted from the members bucket");
                // A report key, or (after leaving) a chunk key of ours.
                let node = match self.names.parse_chunk_key(&key) {
                    Ok((node, _, _)) => node,
                    Err(_) => {
                        self.names
                            .parse_report_key(&key)
                            .unwrap_or_else(|e| panic!("deleted a bad key {key:?}: {e}"))
                            .0
                    }
                };
                assert_eq!(node, OWN_ID, "deleted another node's key {key:?}");
                // Carried out at once: a delete is a write at the next revision.
                self.revision += 1;
                self.kv.remove(&key);
            }
            Output::ReadSnapshotReports {
                region,
                chunks,
                key_filters,
            } => {
                let plan = self
                    .model
                    .snapshot_reports_plan(&region)
                    .unwrap_or_else(|| {
                        panic!(
                            "asked for the reports of region {region:?}, none due (due: {:?})",
                            self.model.snapshot_reports_pending()
                        )
                    });
                let chunk_set: BTreeSet<String> = chunks.iter().cloned().collect();
                assert_eq!(chunks.len(), chunk_set.len(), "a chunk asked for twice");
                assert_eq!(chunk_set, plan.chunks, "chunks of region {region:?}");
                let filter_set: BTreeSet<(String, u64)> = key_filters.iter().cloned().collect();
                assert_eq!(
                    key_filters.len(),
                    filter_set.len(),
                    "a filter asked for twice"
                );
                assert_eq!(
                    filter_set, plan.key_filters,
                    "key filters of region {region:?}"
                );
            }
            Output::Resync {
                node, key_filter, ..
            } => {
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
                // A new life: heartbeat and batch sequences start over, and the compacted
                // snapshot of the old one is no longer named.
                self.seen.hb_seq = 0;
                self.seen.batch_last_seq = 0;
                self.seen.named = None;
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
    pub(super) fn deliver_to_peer(&mut self) {
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

    pub(super) fn check(&self, step: usize, op: &Op) {
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
            self.check_explanation(ep, &got, &active, &ctx);
        }
        assert_eq!(
            self.node.snapshot_loaded(),
            self.model.snapshot_loaded(),
            "snapshot loaded {}",
            ctx()
        );
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
                let sent = self.seen.batch_reports.get(ep).map(|r| r.state);
                assert_eq!(sent, Some(want), "published report for {ep:?} {}", ctx());
                if self.node.snapshot_loaded()
                    && !self.failed_puts.contains(ep)
                    && !self.node.kv_write_waiting(ep)
                {
                    let put = self.seen.kv_reports.get(ep).map(|r| r.state);
                    assert_eq!(put, Some(want), "KV report for {ep:?} {}", ctx());
                }
            }
        }
    }
}

const UNKNOWN: Decision = Decision::UNKNOWN;

impl Harness {
    /// The node's record `rec` names its compacted snapshot `s`. As the harness stored the
    /// node's writes, a reader that takes the chunks of `s` and (when the record says reports
    /// changed after `s`) the node's report keys written after `s.revision` must hold, per endpoint, a report at least as new as the one under
    /// its report key, and one at least as new as the record's `kv_seq` (or it would take the
    /// read for a lagging replica's). Every chunk must be there, of `s`.
    fn check_named_snapshot(&self, rec: &MemberRecord<'_>, s: SnapshotRef) {
        assert_eq!(
            s.incarnation, rec.incarnation,
            "the record names a snapshot of another incarnation"
        );
        assert!(
            s.seq <= rec.report_seq,
            "the record names {s:?} of reports it has not published"
        );
        let mut read: BTreeMap<String, (u64, ReportState)> = BTreeMap::new();
        let take = |read: &mut BTreeMap<String, (u64, ReportState)>, ep: &str, seq, state| {
            if read.get(ep).is_none_or(|&(old, _)| old < seq) {
                read.insert(ep.to_owned(), (seq, state));
            }
        };
        for i in 0..s.chunks {
            let key = self.names.chunk_key(OWN_ID, s.generation, i);
            let (_, value) = self
                .kv
                .get(&key)
                .unwrap_or_else(|| panic!("the record names {s:?}, chunk {key:?} is not stored"));
            let Ok(Message::Chunk(c)) = codec::decode(value) else {
                panic!("chunk {key:?} does not decode");
            };
            assert_eq!(
                (c.incarnation, c.generation, c.index, c.chunks),
                (s.incarnation, s.generation, i, s.chunks),
                "the record names {s:?}, {key:?} holds another chunk"
            );
            let mut buf = Vec::new();
            let items = codec::unpack_chunk_items(&c, &mut buf).expect("a stored chunk unpacks");
            for item in &items {
                assert!(item.seq <= s.seq, "chunk item {item:?} above {s:?}");
                take(&mut read, item.endpoint, item.seq, item.state);
            }
        }
        let mut per_key: BTreeMap<String, (u64, ReportState)> = BTreeMap::new();
        for (key, (revision, value)) in &self.kv {
            let Ok(Message::Report(r)) = codec::decode(value) else {
                continue;
            };
            if r.incarnation != s.incarnation {
                continue;
            }
            per_key.insert(key.clone(), (r.seq, r.state));
            if *revision > s.revision && rec.report_seq > s.seq {
                take(&mut read, r.endpoint, r.seq, r.state);
            }
            let got = read.get(r.endpoint).copied();
            assert!(
                got.is_some_and(|(seq, _)| seq >= r.seq),
                "{key:?} holds seq {} (revision {revision}), chunks and tail after {s:?} \
                 hold {got:?}",
                r.seq
            );
        }
        let newest = read.values().map(|&(seq, _)| seq).max().unwrap_or(0);
        assert!(
            newest >= rec.kv_seq,
            "the record says {} is durable, chunks and tail after {s:?} reach {newest}",
            rec.kv_seq
        );
    }
}

impl Harness {
    /// The explanation of `ep` agrees with its decision: its counted members add up to the
    /// counts, grouped by region to the region votes, and only active members are counted.
    fn check_explanation(
        &self,
        ep: &str,
        got: &Decision,
        active: &[String],
        ctx: &dyn Fn() -> String,
    ) {
        let Some(x) = self.node.explain(ep) else {
            assert_eq!(
                *got,
                UNKNOWN,
                "no explanation of a known decision {}",
                ctx()
            );
            return;
        };
        assert_eq!(x.decision, *got, "explained decision of {ep:?} {}", ctx());
        match got.pending {
            None => assert_eq!(x.rule_verdict, got.healthy, "{}", ctx()),
            Some(p) => assert_eq!(x.rule_verdict, Some(p.healthy), "{}", ctx()),
        }
        let mut counted = (0u32, 0u32);
        let mut by_region: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        for m in &x.members {
            assert_eq!(m.counted, m.part.counted());
            assert_eq!(
                m.active,
                active.contains(&m.node),
                "explained activity of {} {}",
                m.node,
                ctx()
            );
            if m.counted {
                assert!(m.active, "an inactive member counted {}", ctx());
                let healthy = match m.said {
                    Said::Healthy => 1,
                    Said::Unhealthy => 0,
                    other => panic!("counted a report that says {other} {}", ctx()),
                };
                counted.0 += healthy;
                counted.1 += 1;
                let r = by_region.entry(&m.region).or_default();
                r.0 += healthy;
                r.1 += 1;
            }
        }
        assert_eq!(
            counted,
            (got.healthy_reports, got.total_reports),
            "explained members of {ep:?} {}",
            ctx()
        );
        let regions: Vec<(&str, u32, u32)> = x
            .regions
            .iter()
            .map(|r| (r.region.as_str(), r.healthy, r.total))
            .collect();
        let want: Vec<(&str, u32, u32)> = by_region.iter().map(|(r, c)| (*r, c.0, c.1)).collect();
        assert_eq!(regions, want, "explained regions of {ep:?} {}", ctx());
        let healthy_regions = x.regions.iter().filter(|r| r.healthy_vote).count() as u32;
        assert_eq!(
            (healthy_regions, x.regions.len() as u32),
            (got.healthy_regions, got.total_regions),
            "explained region votes of {ep:?} {}",
            ctx()
        );
        assert!(!x.to_string().is_empty());
    }
}

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
        Message::Chunk(m) => m.incarnation,
    };
    assert_eq!(incarnation, own_incarnation);
    msg
}

/// Keeps the report (`seq`, `state`) about `ep` in `map` unless a newer one is there.
fn newest(map: &mut BTreeMap<String, NewestReport>, ep: &str, seq: u64, state: ReportState) {
    match map.get(ep) {
        Some(old) if old.seq >= seq => {}
        _ => {
            map.insert(ep.to_owned(), NewestReport { seq, state });
        }
    }
}
