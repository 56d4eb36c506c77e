//! What a node sends: its own observations as report batches and KV records, heartbeats with
//! its membership record, retries and refreshes of KV writes, and its leaving.

use crate::codec::{
    self, Heartbeat, MAX_BATCH_ITEMS, MAX_PAYLOAD_BYTES, MemberRecord, Message, ReportBatch,
    ReportItem, ReportRecord, ReportState,
};
use crate::names::{Bucket, RECORD_MAX_AGE, SubjectKind, check_endpoint_name};
use crate::output::Output;
use crate::stats::{DropReason, MessageKind};
use crate::view::EndpointId;

use super::{ANTI_ENTROPY_EVERY_TICKS, FORGET_AFTER_MIN, Leaving, Node, Snapshot};

impl Node {
    pub(super) fn on_local_health(&mut self, endpoint: &str, healthy: Option<bool>) {
        if check_endpoint_name(endpoint).is_err() {
            self.stats.drop(DropReason::BadEndpointName);
            return;
        }
        let Some(id) = self.view.intern(endpoint) else {
            self.stats.drop(DropReason::EndpointLimit);
            return;
        };
        // After leaving, the node still decides on what it sees, but tells nobody.
        if self.leaving == Leaving::No {
            if !self.own.observe(id, ReportState::from_observation(healthy)) {
                return;
            }
            self.compaction.changed();
        }
        self.view.set_local(id, healthy);
    }

    /// The next output of a member in good standing: report batches, the heartbeat, KV writes.
    pub(super) fn poll_send(&mut self) -> Option<Output> {
        if !self.own.to_publish.is_empty() {
            self.flush_reports();
            return self.queue.pop_front();
        }
        if self.heartbeat_due {
            self.heartbeat_due = false;
            self.emit_heartbeat();
            return self.queue.pop_front();
        }
        // Nothing of ours is written to the KV before the snapshot was read: it may hold an
        // earlier life of ours (with a larger incarnation, if our clock stepped back), which
        // our writes would hide. Heartbeats and batches go out meanwhile.
        if !self.puts_allowed() {
            return None;
        }
        if let Some(out) = self.chunk_puts.pop_front() {
            return Some(out);
        }
        if self.own.to_put.is_empty() {
            self.puts_due = None;
            return None;
        }
        // The writes trail the publishes they follow by `kv_write_delay`.
        let due = *self
            .puts_due
            .get_or_insert(self.now + self.limits.kv_write_delay);
        if self.now < due {
            return None;
        }
        while let Some(ep) = self.own.to_put.pop_front() {
            if let Some(out) = self.report_put(ep) {
                return Some(out);
            }
        }
        self.puts_due = None;
        None
    }

    /// Turns every pending change into report batches on the queue, oldest first.
    fn flush_reports(&mut self) {
        let mut pending = std::mem::take(&mut self.own.to_publish);
        pending.sort_unstable_by_key(|id| self.own.reports[id].report.seq());
        let mut start = 0;
        while start < pending.len() {
            let end = self.batch_end(&pending, start);
            let chunk = &pending[start..end];
            let last_seq = self.own.reports[&chunk[chunk.len() - 1]].report.seq();
            let first_seq = self.own.published_seq + 1;
            self.publish_batch(chunk, first_seq, last_seq);
            self.own.published_seq = last_seq;
            start = end;
        }
        for id in &pending {
            if let Some(r) = self.own.reports.get_mut(id) {
                r.publish_pending = false;
            }
        }
    }

    /// The end of the batch that starts at `ids[start]`: at most [`MAX_BATCH_ITEMS`] reports
    /// and half of [`MAX_PAYLOAD_BYTES`], and at least one report.
    fn batch_end(&self, ids: &[EndpointId], start: usize) -> usize {
        let mut end = start;
        let mut bytes = 128;
        while end < ids.len() && end - start < MAX_BATCH_ITEMS {
            let size = codec::item_size_bound(self.view.name(ids[end]).len());
            if bytes + size > MAX_PAYLOAD_BYTES / 2 {
                break;
            }
            bytes += size;
            end += 1;
        }
        end
    }

    /// Our current reports of `ids`, as they go on the wire.
    fn own_items(&self, ids: &[EndpointId]) -> Vec<ReportItem<'_>> {
        ids.iter()
            .map(|id| {
                let r = self.own.reports[id].report;
                ReportItem {
                    endpoint: self.view.name(*id),
                    seq: r.seq(),
                    state: r.state(),
                }
            })
            .collect()
    }

    /// Publishes the reports of `ids`, claiming `first_seq..=last_seq` (`first_seq` 0 = no
    /// claim, `last_seq` is then the highest sequence in the batch).
    fn publish_batch(&mut self, ids: &[EndpointId], first_seq: u64, last_seq: u64) {
        let items = self.own_items(ids);
        let payload = codec::encode(&Message::Reports(ReportBatch {
            cluster: self.names.cluster_id(),
            node: &self.node_id,
            incarnation: self.incarnation,
            sent_unix_ms: self.wall.as_unix_ms(),
            first_seq,
            last_seq,
            items,
        }));
        let subject = self.names.subject(SubjectKind::Health, &self.node_id);
        self.stats.count_published(MessageKind::Health);
        self.push(Output::Publish {
            subject,
            payload,
            kind: MessageKind::Health,
        });
    }

    /// This node's membership record as of now.
    fn member_record(&self, hb_seq: u64) -> MemberRecord<'_> {
        MemberRecord {
            cluster: self.names.cluster_id(),
            node: &self.node_id,
            region: &self.region,
            incarnation: self.incarnation,
            hb_seq,
            sent_unix_ms: self.wall.as_unix_ms(),
            report_seq: self.own.published_seq,
            kv_seq: self.own.kv_seq().min(self.own.published_seq),
            snapshot: self.compaction.current(),
        }
    }

    fn emit_heartbeat(&mut self) {
        self.hb_seq += 1;
        let rec = self.member_record(self.hb_seq);
        let payload = codec::encode(&Message::Heartbeat(Heartbeat {
            cluster: rec.cluster,
            node: rec.node,
            region: rec.region,
            incarnation: rec.incarnation,
            seq: rec.hb_seq,
            sent_unix_ms: rec.sent_unix_ms,
            report_seq: rec.report_seq,
            kv_seq: rec.kv_seq,
        }));
        let value = codec::encode(&Message::Member(rec));
        let subject = self.names.subject(SubjectKind::Heartbeat, &self.node_id);
        self.stats.count_published(MessageKind::Heartbeat);
        self.push(Output::Publish {
            subject,
            payload,
            kind: MessageKind::Heartbeat,
        });
        if self.snapshot != Snapshot::Done {
            // See `poll_send`: the record is written with the first heartbeat after it.
            return;
        }
        self.stats.count_published(MessageKind::Member);
        self.push(Output::KvPut {
            bucket: Bucket::Members,
            key: self.names.member_key(&self.node_id),
            value,
            kind: MessageKind::Member,
            seq: 0,
        });
    }

    /// Whether our report of `endpoint` changed and its KV write waits for
    /// [`Limits::kv_write_delay`](super::Limits::kv_write_delay) (for the fuzz checks).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn kv_write_waiting(&self, endpoint: &str) -> bool {
        self.view.id_of(endpoint).is_some_and(|id| {
            self.own.reports.get(&id).is_some_and(|r| r.put_pending)
                && self.puts_due.is_some_and(|due| self.now < due)
        })
    }

    /// Whether our reports may be written to the KV now: connected, a member (not leaving),
    /// and the snapshot read.
    pub(super) fn puts_allowed(&self) -> bool {
        self.connected && self.leaving == Leaving::No && self.snapshot == Snapshot::Done
    }

    fn report_put(&mut self, id: EndpointId) -> Option<Output> {
        let r = self.own.reports.get_mut(&id)?;
        r.put_pending = false;
        let report = r.report;
        let endpoint = self.view.name(id);
        let value = codec::encode(&Message::Report(ReportRecord {
            cluster: self.names.cluster_id(),
            node: &self.node_id,
            endpoint,
            incarnation: self.incarnation,
            seq: report.seq(),
            sent_unix_ms: self.wall.as_unix_ms(),
            state: report.state(),
        }));
        let key = self.names.report_key(&self.node_id, endpoint);
        self.stats.count_published(MessageKind::Report);
        Some(Output::KvPut {
            bucket: Bucket::Health,
            key,
            value,
            kind: MessageKind::Report,
            seq: report.seq(),
        })
    }

    pub(super) fn on_kv_put_ok(&mut self, bucket: Bucket, key: &str, seq: u64, revision: u64) {
        if bucket != Bucket::Health {
            return;
        }
        if let Some(id) = self.own_endpoint_of_key(key) {
            self.own.put_acked(id, seq);
            self.compaction.report_acked(revision);
        } else if let Some((_, index)) = self.own_chunk_of_key(key)
            && self.compaction.chunk_acked(seq, index)
        {
            // Whole: the record names it from the next heartbeat on, which goes out now.
            self.heartbeat_due = true;
        }
    }

    /// The slot and index of one of our own chunk keys.
    fn own_chunk_of_key(&self, key: &str) -> Option<(u64, u32)> {
        let (node, slot, index) = self.names.parse_chunk_key(key).ok()?;
        (node == self.node_id).then_some((slot, index))
    }

    /// Begins a compaction of our reports if one is due: every report (withdrawn ones
    /// included) as of now, in chunks written to the slot the record does not name.
    fn compact(&mut self) {
        let interval = self.limits.compact_interval;
        if !self.puts_allowed()
            || !self
                .compaction
                .due(self.now, interval, self.own.reports.len())
        {
            return;
        }
        let mut ids: Vec<EndpointId> = self.own.reports.keys().copied().collect();
        ids.sort_unstable();
        let items = self.own_items(&ids);
        let generation = self.compaction.next_generation();
        let Some(chunks) = crate::compaction::encode_chunks(
            self.names.cluster_id(),
            &self.node_id,
            self.incarnation,
            generation,
            &items,
        ) else {
            return;
        };
        drop(items);
        let count = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        let snapshot =
            self.compaction
                .begin(self.now, self.incarnation, self.own.report_seq, count);
        debug_assert_eq!(snapshot.generation, generation);
        for (index, value) in chunks.into_iter().enumerate() {
            self.stats.count_published(MessageKind::Chunk);
            self.chunk_puts.push_back(Output::KvPut {
                bucket: Bucket::Health,
                key: self
                    .names
                    .chunk_key(&self.node_id, generation, index as u32),
                value,
                kind: MessageKind::Chunk,
                seq: generation,
            });
        }
    }

    /// The endpoint of one of our own health-bucket keys.
    fn own_endpoint_of_key(&self, key: &str) -> Option<EndpointId> {
        let (node, endpoint) = self.names.parse_report_key(key).ok()?;
        if node != self.node_id {
            return None;
        }
        self.view.id_of(&endpoint)
    }

    pub(super) fn on_kv_put_failed(&mut self, bucket: Bucket, key: &str, seq: u64) {
        // A failed membership record is rewritten with the next heartbeat anyway.
        if bucket != Bucket::Health || self.leaving != Leaving::No {
            return;
        }
        if let Some(id) = self.own_endpoint_of_key(key) {
            self.own.put_failed(id);
        } else if let Some((slot, _)) = self.own_chunk_of_key(key)
            && let Some(generation) = self.compaction.writing_generation()
            && generation % 2 == slot
            // A chunk write's seq is its generation: the late failure of an earlier
            // compaction's chunk in the same slot does not abandon this one.
            && seq == generation
        {
            self.compaction.chunk_failed(generation);
            self.chunk_puts.clear();
        }
    }

    pub(super) fn maintenance(&mut self) {
        if self.connected && self.leaving == Leaving::No {
            self.retry_failed_puts();
            let tick = self.state.heartbeat_interval;
            self.own.refresh(tick, RECORD_MAX_AGE / 4, self.view.len());
            self.compact();
        }
        if self.limits.forget_after_ttls > 0 {
            let forget_after = (self.ttl() * self.limits.forget_after_ttls).max(FORGET_AFTER_MIN);
            self.members.forget_inactive(self.now, forget_after);
        }
        self.maintenance_ticks += 1;
        if self.leaving != Leaving::No {
            return;
        }
        self.request_snapshot();
        let periodic = self
            .maintenance_ticks
            .is_multiple_of(ANTI_ENTROPY_EVERY_TICKS);
        if self.connected && self.snapshot == Snapshot::Done && (periodic || self.anti_entropy_due)
        {
            self.anti_entropy_due = false;
            self.push(Output::ReadMembers);
        }
    }

    /// Retries failed KV writes, and republishes those reports: a peer that missed the
    /// publish could not have read them from the KV either.
    fn retry_failed_puts(&mut self) {
        if self.own.failed_puts.is_empty() {
            return;
        }
        let failed = std::mem::take(&mut self.own.failed_puts);
        let mut start = 0;
        while start < failed.len() {
            let end = self.batch_end(&failed, start);
            let chunk = &failed[start..end];
            // A repair claims no range (first_seq 0); its items must still lie within
            // last_seq, or receivers refuse the batch.
            let last_seq = chunk
                .iter()
                .map(|id| self.own.reports[id].report.seq())
                .max()
                .unwrap_or(0);
            self.publish_batch(chunk, 0, last_seq);
            start = end;
        }
        for id in failed {
            if let Some(r) = self.own.reports.get_mut(&id) {
                r.put_failed = false;
            }
            self.own.queue_put(id);
        }
    }

    // ---- leaving ----

    pub(super) fn on_leave(&mut self) {
        if self.leaving == Leaving::No {
            self.leaving = Leaving::Announce;
            self.heartbeat_due = false;
            self.own.leave();
            self.chunk_puts.clear();
            // Our compacted snapshots go with our reports: every chunk key this life wrote.
            let written = self.compaction.written_chunks();
            self.chunk_deletes = (0..2u64)
                .flat_map(|slot| (0..written[slot as usize]).map(move |i| (slot, i)))
                .map(|(slot, i)| self.names.chunk_key(&self.node_id, slot, i))
                .collect();
        }
    }

    /// Tells everyone this node leaves: on its heartbeat subject (peers drop it at once) and
    /// as its membership record (a later snapshot knows it left). Its report keys are deleted
    /// next.
    pub(super) fn announce_leave(&mut self) {
        self.leaving = Leaving::Left;
        let rec = self.member_record(self.hb_seq + 1);
        let payload = codec::encode(&Message::Leave(rec));
        let subject = self.names.subject(SubjectKind::Heartbeat, &self.node_id);
        self.stats.count_published(MessageKind::Leave);
        self.push(Output::Publish {
            subject,
            payload: payload.clone(),
            kind: MessageKind::Leave,
        });
        self.stats.count_published(MessageKind::Leave);
        self.push(Output::KvPut {
            bucket: Bucket::Members,
            key: self.names.member_key(&self.node_id),
            value: payload,
            kind: MessageKind::Leave,
            seq: 0,
        });
    }

    /// The next key of ours to delete after leaving: the report keys, then the chunk keys.
    pub(super) fn poll_delete(&mut self) -> Option<Output> {
        let key = match self.own.to_delete.pop() {
            Some(id) => self.names.report_key(&self.node_id, self.view.name(id)),
            None => self.chunk_deletes.pop()?,
        };
        Some(Output::KvDelete {
            bucket: Bucket::Health,
            key,
        })
    }
}
