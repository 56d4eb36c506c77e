//! This node's own reports: their sequence numbers, and what remains to be published, written
//! to the KV, acknowledged, refreshed or deleted.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::codec::ReportState;
use crate::membership::PackedReport;
use crate::view::EndpointId;

/// Most reports rewritten to the KV in one maintenance tick by the refresh (a node that was
/// away long catches up over several ticks instead of in one burst).
pub(crate) const MAX_REFRESH_PER_TICK: usize = 1024;

/// One own report and its pending work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnReport {
    pub(crate) report: PackedReport,
    /// In `Own::to_publish`.
    pub(crate) publish_pending: bool,
    /// In `Own::to_put`.
    pub(crate) put_pending: bool,
    /// In `Own::failed_puts`.
    pub(crate) put_failed: bool,
    /// The oldest sequence of this endpoint superseded before its write was acknowledged
    /// (0: none); it stays in `Own::unacked` until the current report's write is.
    superseded_unacked: u64,
}

/// This node's own reports and what remains to be sent of them.
#[derive(Debug, Default)]
pub(crate) struct Own {
    /// Latest report per endpoint, withdrawn ones included (they keep their sequence).
    pub(crate) reports: FxHashMap<EndpointId, OwnReport>,
    /// Sequence of the latest change.
    pub(crate) report_seq: u64,
    /// Every change up to this sequence has been handed out for publishing.
    pub(crate) published_seq: u64,
    /// Changed since the last publish.
    pub(crate) to_publish: Vec<EndpointId>,
    /// Changed (or due for a refresh) since the last KV write.
    pub(crate) to_put: VecDeque<EndpointId>,
    /// KV writes that failed, retried on the next maintenance tick.
    pub(crate) failed_puts: Vec<EndpointId>,
    /// Sequences not durable yet: of current reports whose KV write is not acknowledged, and
    /// per endpoint the oldest one superseded before its write was (so that `kv_seq` never
    /// names a change the KV never held: see [`Own::kv_seq`]).
    unacked: BTreeSet<u64>,
    /// Keys to delete from the KV (after leaving).
    pub(crate) to_delete: Vec<EndpointId>,
    /// The refresh's next endpoint id to look at.
    refresh_cursor: EndpointId,
    /// The refresh's accumulated allowance, in report-nanoseconds.
    refresh_credit: u128,
}

impl Own {
    /// Every change up to this sequence is stored in the KV (or superseded by a stored one),
    /// and the KV holds a report at least this new: readers distrust a read without one
    /// (a lagging replica). A change superseded before its write was acknowledged keeps this
    /// below it until the change that superseded it is durable, as the KV never held it.
    pub(crate) fn kv_seq(&self) -> u64 {
        self.unacked
            .first()
            .map_or(self.report_seq, |first| first - 1)
    }

    /// Records a new observation of endpoint `id`. Returns false when nothing changed.
    pub(crate) fn observe(&mut self, id: EndpointId, state: ReportState) -> bool {
        match self.reports.get(&id) {
            Some(r) if r.report.state() == state => return false,
            None if state == ReportState::Withdrawn => return false,
            _ => {}
        }
        self.report_seq += 1;
        let mut superseded_unacked = 0;
        if let Some(old) = self.reports.get(&id) {
            let old_seq = old.report.seq();
            superseded_unacked = old.superseded_unacked;
            // The oldest change of this endpoint the KV never held stays unacknowledged.
            if self.unacked.contains(&old_seq) && superseded_unacked == 0 {
                superseded_unacked = old_seq;
            } else {
                self.unacked.remove(&old_seq);
            }
        }
        self.unacked.insert(self.report_seq);
        let report = PackedReport::new(self.report_seq, state);
        let entry = self.reports.entry(id).or_insert(OwnReport {
            report,
            publish_pending: false,
            put_pending: false,
            put_failed: false,
            superseded_unacked: 0,
        });
        entry.report = report;
        entry.superseded_unacked = superseded_unacked;
        if !entry.publish_pending {
            entry.publish_pending = true;
            self.to_publish.push(id);
        }
        if !entry.put_pending {
            entry.put_pending = true;
            self.to_put.push_back(id);
        }
        true
    }

    /// A KV write of the report with sequence `seq` of endpoint `id` was acknowledged.
    pub(crate) fn put_acked(&mut self, id: EndpointId, seq: u64) {
        // Only the write of the current report makes it durable; an older one is superseded.
        if let Some(r) = self.reports.get_mut(&id)
            && r.report.seq() == seq
        {
            self.unacked.remove(&seq);
            self.unacked.remove(&r.superseded_unacked);
            r.superseded_unacked = 0;
        }
    }

    /// A KV write of endpoint `id` failed: retried (and republished) at the next tick.
    pub(crate) fn put_failed(&mut self, id: EndpointId) {
        if let Some(r) = self.reports.get_mut(&id)
            && !r.put_failed
        {
            r.put_failed = true;
            self.failed_puts.push(id);
        }
    }

    /// Queues a KV write of endpoint `id` (a retry or a refresh), unless one is queued.
    pub(crate) fn queue_put(&mut self, id: EndpointId) {
        if let Some(r) = self.reports.get_mut(&id)
            && !r.put_pending
        {
            r.put_pending = true;
            self.to_put.push_back(id);
        }
    }

    /// A new incarnation: every report gets a new sequence above every old one (so no
    /// acknowledgement of an old write is taken for a new one), in the old order, and is
    /// published and written again. Publishing starts over at sequence 1: receivers start the
    /// new incarnation from nothing, and no change of it lies below the new sequences.
    pub(crate) fn renumber(&mut self) {
        let mut ids: Vec<EndpointId> = self.reports.keys().copied().collect();
        ids.sort_unstable_by_key(|id| self.reports[id].report.seq());
        self.unacked.clear();
        self.to_publish.clear();
        self.to_put.clear();
        self.failed_puts.clear();
        for id in ids {
            self.report_seq += 1;
            let r = self.reports.get_mut(&id).expect("ids come from the map");
            r.report = PackedReport::new(self.report_seq, r.report.state());
            r.publish_pending = true;
            r.put_pending = true;
            r.put_failed = false;
            r.superseded_unacked = 0;
            self.unacked.insert(self.report_seq);
            self.to_publish.push(id);
            self.to_put.push_back(id);
        }
        self.published_seq = 0;
    }

    /// Leaving: nothing more is published or written; every report's key is to be deleted.
    pub(crate) fn leave(&mut self) {
        self.to_publish.clear();
        self.to_put.clear();
        self.failed_puts.clear();
        self.to_delete = self.reports.keys().copied().collect();
        self.to_delete.sort_unstable();
        for r in self.reports.values_mut() {
            r.publish_pending = false;
            r.put_pending = false;
            r.put_failed = false;
            r.superseded_unacked = 0;
        }
    }

    /// The refresh of one maintenance tick `tick` long: queues KV rewrites so that every report
    /// is rewritten about once per `period` (records age out of the buckets after twice that
    /// and more), spread evenly, at most [`MAX_REFRESH_PER_TICK`] at once. `endpoints` is the
    /// number of endpoint ids. Returns how many were queued.
    pub(crate) fn refresh(&mut self, tick: Duration, period: Duration, endpoints: usize) -> usize {
        if self.reports.is_empty() || endpoints == 0 || period.is_zero() {
            return 0;
        }
        let period_ns = period.as_nanos();
        self.refresh_credit = self
            .refresh_credit
            .saturating_add(self.reports.len() as u128 * tick.as_nanos())
            .min(MAX_REFRESH_PER_TICK as u128 * period_ns);
        let due = ((self.refresh_credit / period_ns) as usize).min(MAX_REFRESH_PER_TICK);
        if due == 0 {
            return 0;
        }
        self.refresh_credit -= due as u128 * period_ns;
        let mut queued = 0;
        let mut looked = 0;
        while queued < due && looked < endpoints {
            let id = self.refresh_cursor;
            self.refresh_cursor = if (id as usize) + 1 >= endpoints {
                0
            } else {
                id + 1
            };
            looked += 1;
            if self.reports.contains_key(&id) {
                self.queue_put(id);
                queued += 1;
            }
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(own: &Own) -> Vec<(EndpointId, u64)> {
        let mut v: Vec<_> = own
            .reports
            .iter()
            .map(|(id, r)| (*id, r.report.seq()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn kv_seq_never_names_a_change_the_kv_never_held() {
        let mut own = Own::default();
        own.observe(1, ReportState::Healthy); // seq 1
        own.observe(2, ReportState::Healthy); // seq 2
        own.put_acked(1, 1);
        own.put_acked(2, 2);
        assert_eq!(own.kv_seq(), 2);
        // Endpoint 1 changes twice before any write of it is acknowledged: 3 is superseded
        // by 5 and never written; 4 (endpoint 2) is.
        own.observe(1, ReportState::Unhealthy); // seq 3
        own.observe(2, ReportState::Unhealthy); // seq 4
        own.observe(1, ReportState::Healthy); // seq 5
        own.observe(1, ReportState::Unhealthy); // seq 6 (5 superseded too)
        own.put_acked(2, 4);
        // The KV holds endpoint 1 at seq 1 and endpoint 2 at seq 4. Change 3 was never
        // written (nor 5): kv_seq stays below 3 until endpoint 1's current change is durable.
        assert_eq!(own.kv_seq(), 2, "3 is held down until 6 is durable");
        own.put_acked(1, 5); // an ack of a superseded write changes nothing
        assert_eq!(own.kv_seq(), 2);
        own.put_acked(1, 6);
        assert_eq!(own.kv_seq(), 6);
    }

    #[test]
    fn renumbering_keeps_order_and_leaves_old_acks_unmatched() {
        let mut own = Own::default();
        own.observe(0, ReportState::Healthy);
        own.observe(1, ReportState::Unhealthy);
        own.observe(0, ReportState::Unhealthy); // 0 is now seq 3, 1 is seq 2
        own.put_acked(1, 2);
        own.published_seq = 3;
        own.renumber();
        assert_eq!(seqs(&own), vec![(0, 5), (1, 4)]);
        assert_eq!(own.published_seq, 0);
        assert_eq!(own.to_publish.len(), 2);
        // An acknowledgement of an old write matches no new sequence.
        own.put_acked(0, 3);
        own.put_acked(1, 2);
        assert_eq!(
            own.kv_seq(),
            3,
            "nothing of the new incarnation is durable yet"
        );
        own.put_acked(1, 4);
        own.put_acked(0, 5);
        assert_eq!(own.kv_seq(), 5);
    }

    #[test]
    fn refresh_spreads_rewrites_over_the_period() {
        let mut own = Own::default();
        for id in 0..100 {
            own.observe(id, ReportState::Healthy);
        }
        own.to_put.clear();
        for r in own.reports.values_mut() {
            r.put_pending = false;
        }
        let tick = Duration::from_secs(1);
        let period = Duration::from_secs(50);
        // 100 reports over 50 ticks: 2 per tick, every report once per period.
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..50 {
            assert_eq!(own.refresh(tick, period, 100), 2);
            while let Some(id) = own.to_put.pop_front() {
                own.reports.get_mut(&id).unwrap().put_pending = false;
                *seen.entry(id).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 100);
        assert!(seen.values().all(|&n| n == 1));
        // Bounded per tick whatever the backlog.
        let mut big = Own::default();
        for id in 0..10_000 {
            big.observe(id, ReportState::Healthy);
        }
        big.to_put.clear();
        for r in big.reports.values_mut() {
            r.put_pending = false;
        }
        assert!(
            big.refresh(Duration::from_secs(3600), Duration::from_secs(1), 10_000)
                <= MAX_REFRESH_PER_TICK
        );
    }
}
