//! What a node receives: heartbeats, report batches and leave announcements on subjects, and
//! records read from the KV (the start-up snapshot, re-syncs, anti-entropy). Here the node
//! judges incarnations, takes its own incarnation above any earlier life of its own, and
//! decides which member a snapshot record vouches for, and for how long.

use crate::codec::{
    self, Heartbeat, MemberRecord, Message, ReportBatch, ReportRecord, ReportState,
};
use crate::input::KvRead;
use crate::membership::{
    HeardNs, IncarnationCheck, MemberIdx, ReportOutcome, SnapshotRecord, heard_ns,
};
use crate::names::{Bucket, SubjectKind};
use crate::output::{DownReason, Output};
use crate::stats::{DropReason, MessageKind};

use super::{Leaving, Node, Snapshot, clock_offset_ms};

impl Node {
    pub(super) fn on_received(&mut self, subject: &str, payload: &[u8]) {
        let Ok((kind, claimed)) = self.names.parse_subject_ref(subject) else {
            self.stats.drop(DropReason::BadName);
            return;
        };
        let msg = match codec::decode(payload) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.drop(e.into());
                return;
            }
        };
        if msg.cluster() != self.names.cluster_id() {
            self.stats.drop(DropReason::WrongCluster);
            return;
        }
        if msg.node() != claimed {
            self.stats.drop(DropReason::Spoofed);
            return;
        }
        match (kind, msg) {
            (SubjectKind::Heartbeat, Message::Heartbeat(hb)) => self.on_live_heartbeat(&hb),
            (SubjectKind::Heartbeat, Message::Leave(rec)) => self.on_left(&rec, true),
            (SubjectKind::Health, Message::Reports(batch)) => self.on_batch(&batch),
            _ => self.stats.drop(DropReason::Malformed),
        }
    }

    /// The member `node` at incarnation `incarnation`: created if new, switched if it is a
    /// newer life (or, for a live message while the member is inactive, any other: it
    /// restarted, perhaps with its wall clock behind). `None` (and counted) if the message is
    /// stale, ours, or over a bound.
    fn member_for(&mut self, node: &str, incarnation: u64, live: bool) -> Option<MemberIdx> {
        if node == self.node_id {
            if incarnation != self.incarnation {
                self.stats.drop(DropReason::DuplicateNodeId);
            }
            return None;
        }
        let Some(idx) = self.members.find_or_insert(node, self.now) else {
            self.stats.drop(DropReason::MemberLimit);
            return None;
        };
        match self
            .members
            .get(idx)
            .check_incarnation(incarnation, live, self.now)
        {
            IncarnationCheck::Current => {}
            IncarnationCheck::Switch => {
                let tentative =
                    (!live && self.snapshot != Snapshot::Reading).then(|| self.now + self.ttl());
                if self.members.reset_incarnation(
                    idx,
                    incarnation,
                    tentative,
                    self.now,
                    &mut self.view,
                ) {
                    self.member_down(idx, DownReason::Restarted);
                }
            }
            IncarnationCheck::Stale => {
                self.stats.drop(DropReason::StaleIncarnation);
                return None;
            }
        }
        Some(idx)
    }

    /// [`Node::member_for`] for a message that only counts while the member has not left.
    fn staying_member(&mut self, node: &str, incarnation: u64, live: bool) -> Option<MemberIdx> {
        let idx = self.member_for(node, incarnation, live)?;
        if self.members.get(idx).left {
            self.stats.drop(DropReason::LeftMember);
            return None;
        }
        Some(idx)
    }

    fn on_live_heartbeat(&mut self, hb: &Heartbeat<'_>) {
        let Some(idx) = self.staying_member(hb.node, hb.incarnation, true) else {
            return;
        };
        let offset = clock_offset_ms(self.wall, hb.sent_unix_ms);
        self.heartbeat_of(idx, hb, heard_ns(self.now), true, offset);
    }

    /// A heartbeat of member `idx` (already checked to be of its incarnation): live
    /// (`heard_at` = now), or one a snapshot record vouches for (`heard_at` = when it was
    /// sent, on our clock; possibly before our clock started).
    fn heartbeat_of(
        &mut self,
        idx: MemberIdx,
        hb: &Heartbeat<'_>,
        heard_at: HeardNs,
        live: bool,
        clock_offset_ms: i64,
    ) {
        let m = self.members.get_mut(idx);
        // The heartbeat a snapshot record stood for still refreshes the member when it arrives
        // live: freshness is judged on our clock; the record only bridges until then.
        let refresh = live && hb.seq == m.hb_seq && m.hb_from_record;
        if hb.seq <= m.hb_seq && !refresh {
            self.stats.drop(DropReason::Duplicate);
            return;
        }
        let region: &str = if m.hb_seq == 0 { hb.region } else { &m.region };
        if m.active_until.is_none() && !self.view.can_acquire_region(region) {
            self.stats.drop(DropReason::RegionLimit);
            return;
        }
        if m.hb_seq == 0 {
            // Only an inactive member has no heartbeat in its incarnation: an active one's
            // region, which its counted reports are filed under, never changes.
            debug_assert!(m.active_until.is_none());
            // The region is fixed for an incarnation: take it from its first heartbeat.
            m.region = hb.region.into();
        }
        m.hb_seq = hb.seq;
        m.hb_from_record = !live;
        m.tentative_until = None;
        m.clock_offset_ms = clock_offset_ms;
        if live {
            self.stats.count_received(MessageKind::Heartbeat);
        }
        if self
            .members
            .mark_heard(idx, heard_at, self.state.heartbeat_ttl, &mut self.view)
        {
            self.member_up(idx);
        }
        self.announce(idx, hb.report_seq, hb.kv_seq);
    }

    /// `idx` says its latest report is `report_seq`, and every report up to `kv_seq` is in the
    /// KV: re-sync it if we miss some that the KV holds.
    fn announce(&mut self, idx: MemberIdx, report_seq: u64, kv_seq: u64) {
        let (now, retry_after) = (self.now, self.ttl());
        // While the snapshot is read, it brings every report anyway.
        let snapshot_done = self.snapshot == Snapshot::Done;
        let m = self.members.get_mut(idx);
        if !m.sync.announce(report_seq, kv_seq, now, retry_after) || !snapshot_done {
            return;
        }
        m.sync.resync_started(now);
        let node = m.id.to_string();
        let region = m.region.to_string();
        let key_filter = self.names.report_key_filter(&node);
        self.stats.resyncs_requested += 1;
        self.push(Output::Resync {
            node,
            region,
            key_filter,
        });
    }

    fn on_batch(&mut self, batch: &ReportBatch<'_>) {
        let Some(idx) = self.staying_member(batch.node, batch.incarnation, false) else {
            return;
        };
        self.stats.count_received(MessageKind::Health);
        for item in &batch.items {
            self.apply_report(idx, item.endpoint, item.seq, item.state);
        }
        let m = self.members.get_mut(idx);
        m.sync.batch(batch.first_seq, batch.last_seq);
    }

    pub(super) fn apply_report(
        &mut self,
        idx: MemberIdx,
        endpoint: &str,
        seq: u64,
        state: ReportState,
    ) {
        let Some(ep) = self.view.intern(endpoint) else {
            self.stats.drop(DropReason::EndpointLimit);
            return;
        };
        match self
            .members
            .apply_report(idx, ep, seq, state, &mut self.view)
        {
            ReportOutcome::Applied => self.stats.reports_applied += 1,
            ReportOutcome::NotNewer => self.stats.drop(DropReason::Duplicate),
            ReportOutcome::Full => self.stats.drop(DropReason::ReportLimit),
        }
    }

    /// A member announced that it leaves (`live`: on its subject; otherwise its record).
    fn on_left(&mut self, rec: &MemberRecord<'_>, live: bool) {
        let Some(idx) = self.member_for(rec.node, rec.incarnation, live) else {
            return;
        };
        if self.members.get(idx).left {
            self.stats.drop(DropReason::Duplicate);
            return;
        }
        self.stats.count_received(MessageKind::Leave);
        if self.members.mark_left(idx, self.now, &mut self.view) {
            self.member_down(idx, DownReason::Left);
        }
    }

    // ---- the KV ----

    pub(super) fn on_kv_entry(&mut self, bucket: Bucket, key: &str, value: &[u8]) {
        let msg = match codec::decode(value) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.drop(e.into());
                return;
            }
        };
        if msg.cluster() != self.names.cluster_id() {
            self.stats.drop(DropReason::WrongCluster);
            return;
        }
        match (bucket, msg) {
            (Bucket::Members, Message::Member(rec)) => self.on_member_entry(key, &rec, false),
            (Bucket::Members, Message::Leave(rec)) => self.on_member_entry(key, &rec, true),
            (Bucket::Health, Message::Report(rec)) => {
                let Ok((node, endpoint)) = self.names.parse_report_key(key) else {
                    self.stats.drop(DropReason::BadName);
                    return;
                };
                if node != rec.node || endpoint != rec.endpoint {
                    self.stats.drop(DropReason::Spoofed);
                    return;
                }
                self.stats.count_received(MessageKind::Report);
                if node == self.node_id {
                    self.own_report_record(key, &rec);
                    return;
                }
                if let Some(idx) = self.staying_member(rec.node, rec.incarnation, false) {
                    self.members.get_mut(idx).sync.read_report(rec.seq);
                    self.apply_report(idx, rec.endpoint, rec.seq, rec.state);
                }
            }
            (Bucket::Health, Message::Chunk(chunk)) => {
                let Ok((node, slot, index)) = self.names.parse_chunk_key(key) else {
                    self.stats.drop(DropReason::BadName);
                    return;
                };
                if node != chunk.node {
                    self.stats.drop(DropReason::Spoofed);
                    return;
                }
                self.on_chunk(slot, index, &chunk);
            }
            _ => self.stats.drop(DropReason::Malformed),
        }
    }

    fn on_member_entry(&mut self, key: &str, rec: &MemberRecord<'_>, left: bool) {
        let Ok(node) = self.names.parse_member_key(key) else {
            self.stats.drop(DropReason::BadName);
            return;
        };
        if node != rec.node {
            self.stats.drop(DropReason::Spoofed);
            return;
        }
        self.stats.count_received(if left {
            MessageKind::Leave
        } else {
            MessageKind::Member
        });
        if rec.node == self.node_id {
            if self.snapshot == Snapshot::Reading {
                self.own_record_ms = self.own_record_ms.max(rec.sent_unix_ms);
            }
            self.own_record(rec.incarnation, rec.hb_seq, self.hb_seq);
            return;
        }
        if self.snapshot == Snapshot::Reading {
            self.snapshot_member_record(rec, left);
        } else if left {
            self.on_left(rec, false);
        } else if let Some(idx) = self.staying_member(rec.node, rec.incarnation, false) {
            // After the snapshot a record only tells what the member has published: liveness
            // is for live heartbeats alone.
            self.members.get_mut(idx).region_from_record(rec.region);
            self.announce(idx, rec.report_seq, rec.kv_seq);
        }
    }

    /// A membership record read during the start-up snapshot: kept (the newest per member)
    /// until the snapshot is complete, when its age is judged.
    fn snapshot_member_record(&mut self, rec: &MemberRecord<'_>, left: bool) {
        let Some(idx) = self.member_for(rec.node, rec.incarnation, false) else {
            return;
        };
        let m = self.members.get_mut(idx);
        // The snapshot reads members first: what a record says is durable is in the health
        // bucket by the time that is read.
        m.sync.snapshot_record(rec.kv_seq);
        let newer = m
            .snapshot_record
            .as_ref()
            .is_none_or(|old| left || (!old.left && rec.hb_seq > old.hb_seq));
        if newer {
            m.snapshot_record = Some(Box::new(SnapshotRecord {
                region: rec.region.into(),
                hb_seq: rec.hb_seq,
                sent_unix_ms: rec.sent_unix_ms,
                report_seq: rec.report_seq,
                kv_seq: rec.kv_seq,
                left,
                snapshot: rec.snapshot,
            }));
        }
    }

    /// A record of our own id at `incarnation` (`seq`: its heartbeat or report sequence, and
    /// `ours`: ours of the same kind now).
    fn own_record(&mut self, incarnation: u64, seq: u64, ours: u64) {
        if incarnation < self.incarnation || self.leaving != Leaving::No {
            // An earlier life (overwritten with our next heartbeat), or we are on our way out.
            return;
        }
        // Our own incarnation, but further along than this life got: an earlier life too.
        let earlier_same = incarnation == self.incarnation && seq > ours;
        if incarnation == self.incarnation && !earlier_same {
            return;
        }
        if self.snapshot != Snapshot::Done {
            // An earlier life of ours with a wall clock ahead of (or at) ours now: take a
            // larger incarnation.
            self.raise_incarnation(incarnation.saturating_add(1));
        } else {
            // After start-up, a larger incarnation of our id is another process using it.
            self.stats.drop(DropReason::DuplicateNodeId);
        }
    }

    /// A report record of our own id under `key`.
    fn own_report_record(&mut self, key: &str, rec: &ReportRecord<'_>) {
        if self.leaving != Leaving::No {
            return;
        }
        if rec.incarnation >= self.incarnation {
            self.own_record(rec.incarnation, rec.seq, self.own.report_seq);
            return;
        }
        // A leftover of an earlier life: delete it, unless a current report of ours
        // overwrites it anyway (a delete after that write would lose it).
        let current = self
            .view
            .id_of(rec.endpoint)
            .is_some_and(|id| self.own.reports.contains_key(&id));
        if !current {
            self.push(Output::KvDelete {
                bucket: Bucket::Health,
                key: key.to_owned(),
            });
        }
    }

    /// Takes incarnation `to` (larger than the current one): every report is renumbered,
    /// published and written again, and the next heartbeat announces the new life.
    fn raise_incarnation(&mut self, to: u64) {
        let from = self.incarnation;
        self.incarnation = to;
        self.hb_seq = 0;
        self.heartbeat_due = true;
        self.own.renumber();
        self.compaction.renumbered(self.own.reports.len());
        self.chunk_puts.clear();
        self.stats.incarnation_raises += 1;
        self.push(Output::IncarnationRaised { from, to });
    }

    pub(super) fn on_kv_read_done(&mut self, read: KvRead, complete: bool) {
        // A complete read holds every report that was durable when it began: up to the
        // `kv_seq` its members said before it. Reports not yet durable then are not trusted
        // to be there; they come on the fast path or in a later re-sync.
        match &read {
            KvRead::Snapshot => {
                if self.snapshot == Snapshot::Reading && !self.snapshot_reads.started {
                    if complete {
                        self.request_snapshot_reports();
                    } else {
                        self.finish_snapshot(false);
                    }
                }
            }
            KvRead::SnapshotReports { region } => {
                if self.snapshot == Snapshot::Reading && self.snapshot_reads.started {
                    self.on_snapshot_reports_done(region, complete);
                }
            }
            KvRead::Members => {}
            KvRead::Reports { node } => {
                if let Some(idx) = self.members.find(node)
                    && self.members.get_mut(idx).sync.resync_done(complete)
                {
                    self.stats.stale_reads += 1;
                }
            }
        }
    }

    /// The snapshot read ended (both parts, or the first incomplete). Each member's newest record vouches for its heartbeat as
    /// sent at its timestamp, judged against our wall clock, or against the timestamp of our
    /// own record from an earlier life if that is later (our clock stepped back across the
    /// restart; the records of others are not trusted to say what time it is): a record at
    /// most TTL old makes the member active until TTL after it was sent, whenever our
    /// monotonic clock started. An incomplete read is asked for again at the next maintenance
    /// tick.
    pub(super) fn finish_snapshot(&mut self, complete: bool) {
        if complete {
            self.snapshot = Snapshot::Done;
            // Our own records may be written now: the next heartbeat, at once, carries ours.
            self.heartbeat_due = true;
            for idx in self.members.indices() {
                if self.members.get_mut(idx).sync.snapshot_complete() {
                    self.stats.stale_reads += 1;
                }
            }
        } else {
            self.snapshot = Snapshot::Wanted;
        }
        let now_ms = self.wall.as_unix_ms().max(self.own_record_ms);
        let ttl_ms = u64::try_from(self.ttl().as_millis()).unwrap_or(u64::MAX);
        for idx in self.members.indices() {
            let m = self.members.get_mut(idx);
            let Some(rec) = m.snapshot_record.take() else {
                continue;
            };
            if m.left {
                continue;
            }
            if rec.left {
                if self.members.mark_left(idx, self.now, &mut self.view) {
                    self.member_down(idx, DownReason::Left);
                }
                continue;
            }
            if rec.hb_seq <= m.hb_seq {
                // A live heartbeat during the read was already newer.
                continue;
            }
            let age_ms = now_ms.saturating_sub(rec.sent_unix_ms);
            if age_ms > ttl_ms {
                // Too old to vouch for the member: it only tells what the member has
                // published. Its heartbeat sequence is not taken, so the live heartbeat it
                // stood for still counts when it arrives.
                self.members.get_mut(idx).region_from_record(&rec.region);
                self.announce(idx, rec.report_seq, rec.kv_seq);
                continue;
            }
            let hb = Heartbeat {
                cluster: "",
                node: "",
                region: &rec.region,
                incarnation: 0,
                seq: rec.hb_seq,
                sent_unix_ms: rec.sent_unix_ms,
                report_seq: rec.report_seq,
                kv_seq: rec.kv_seq,
            };
            let heard_at = heard_ns(self.now) - HeardNs::from(age_ms) * 1_000_000;
            let offset = clock_offset_ms(self.wall, rec.sent_unix_ms);
            self.heartbeat_of(idx, &hb, heard_at, false, offset);
        }
        self.own_record_ms = 0;
    }
}
