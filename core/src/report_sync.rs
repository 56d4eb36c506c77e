//! What this node knows of one member's reports: up to which sequence it holds every change,
//! what the member announced and says is durable in the KV, and the re-sync in flight.
//!
//! A member's report changes carry sequences 1, 2, 3, ...; a batch claims a range, and a
//! receiver that holds everything before its start holds everything to its end afterwards.
//! Heartbeats announce the latest sequence and the one up to which the KV holds everything
//! (`kv_seq`); a receiver that is behind re-reads the member's reports from the KV, and trusts a
//! complete read only up to what was durable when it asked.

use std::time::Duration;

use crate::time::Instant;

/// One member's report sync state (reset with each new incarnation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReportSync {
    /// The latest report sequence the member announced.
    announced_seq: u64,
    /// Every report change up to this sequence is known here.
    synced_seq: u64,
    /// Every report change up to this sequence is in the KV, as the member last said.
    kv_seq: u64,
    /// `kv_seq` as the start-up snapshot's membership records said (read before the health
    /// bucket, so a complete snapshot holds every report up to it).
    snapshot_kv_seq: u64,
    /// `kv_seq` when the re-sync in flight was asked for (a complete read holds up to it).
    resync_kv_seq: u64,
    /// When the re-sync in flight was asked for.
    resync_since: Option<Instant>,
    /// The highest report sequence read from the KV since the read in flight (a re-sync, or
    /// the start-up snapshot) began. A read is trusted up to `kv_seq` only if it saw a report
    /// at least that new: the KV holds the report of sequence `kv_seq` (or a newer one of the
    /// same endpoint), so a read without it was served by a replica that lagged behind.
    read_seq: u64,
}

impl ReportSync {
    /// The member says its latest report is `report_seq` and the KV holds every one up to
    /// `kv_seq`. Returns true when a re-sync should be asked for now: the KV holds reports
    /// missing here, and no re-sync is in flight (or the one in flight is older than
    /// `retry_after`). The caller then asks and calls [`ReportSync::resync_started`].
    pub(crate) fn announce(
        &mut self,
        report_seq: u64,
        kv_seq: u64,
        now: Instant,
        retry_after: Duration,
    ) -> bool {
        self.announced_seq = self.announced_seq.max(report_seq);
        self.kv_seq = self.kv_seq.max(kv_seq);
        // Reports not yet in the KV are left to the fast path until the KV has them.
        if self.announced_seq <= self.synced_seq || self.kv_seq <= self.synced_seq {
            return false;
        }
        self.resync_since
            .is_none_or(|since| now.saturating_since(since) >= retry_after)
    }

    /// A re-sync was asked for at `now`.
    pub(crate) fn resync_started(&mut self, now: Instant) {
        self.resync_since = Some(now);
        self.resync_kv_seq = self.kv_seq;
        self.read_seq = 0;
    }

    /// A report of sequence `seq` was read from the KV.
    pub(crate) fn read_report(&mut self, seq: u64) {
        self.read_seq = self.read_seq.max(seq);
    }

    /// The re-sync ended: a complete read holds everything that was durable when it began,
    /// unless it was stale (it lacked the newest durable report: a lagging replica, which
    /// needs time to catch up): then it is asked for again once its retry is due. A read that
    /// failed (the KV out of reach) is over: the member's next announcement asks again, so a
    /// KV back within a heartbeat interval is read then, not a TTL after the failed attempt.
    /// Returns true for a stale read.
    pub(crate) fn resync_done(&mut self, complete: bool) -> bool {
        let stale = complete && self.read_seq < self.resync_kv_seq;
        if !stale {
            if complete {
                self.synced_seq = self.synced_seq.max(self.resync_kv_seq);
            }
            self.resync_since = None;
        }
        stale
    }

    /// A batch claiming `first_seq..=last_seq` (`first_seq` 0: no claim) was applied.
    pub(crate) fn batch(&mut self, first_seq: u64, last_seq: u64) {
        if first_seq >= 1 && first_seq <= self.synced_seq + 1 {
            self.synced_seq = self.synced_seq.max(last_seq);
            if self.synced_seq >= self.announced_seq {
                // Caught up on the fast path: a re-sync in flight is no longer waited for.
                self.resync_since = None;
            }
        }
    }

    /// A membership record of the start-up snapshot says the KV holds everything up to
    /// `kv_seq`.
    pub(crate) fn snapshot_record(&mut self, kv_seq: u64) {
        self.snapshot_kv_seq = self.snapshot_kv_seq.max(kv_seq);
    }

    /// The start-up snapshot's reports of this member were not read up to its record (its
    /// region could not be read, or its compacted snapshot was incomplete).
    pub(crate) fn snapshot_unread(&mut self) {
        self.snapshot_kv_seq = 0;
    }

    /// The start-up snapshot was read in full: it held every report its records said was
    /// durable (unless it was stale, see [`ReportSync::resync_done`]: then the member is
    /// re-synced when it next announces); no re-sync is waited for. Returns true for a stale
    /// read.
    pub(crate) fn snapshot_complete(&mut self) -> bool {
        let stale = self.read_seq < self.snapshot_kv_seq;
        if !stale {
            self.synced_seq = self.synced_seq.max(self.snapshot_kv_seq);
        }
        self.resync_since = None;
        stale
    }

    /// Forgets the re-sync in flight (the member left).
    pub(crate) fn cancel_resync(&mut self) {
        self.resync_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(3);

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn contiguous_batches_keep_it_synced_and_a_gap_does_not() {
        let mut s = ReportSync::default();
        s.batch(1, 3);
        assert!(!s.announce(3, 3, t(0), RETRY), "synced to 3");
        s.batch(5, 6); // 4 was lost
        assert!(s.announce(6, 6, t(0), RETRY), "4 is missing and durable");
        // A repair (no claim) changes nothing about the range.
        s.batch(0, 6);
        assert!(s.announce(6, 6, t(0), RETRY));
    }

    #[test]
    fn a_resync_is_asked_for_once_until_it_ends_or_its_retry_is_due() {
        let mut s = ReportSync::default();
        assert!(s.announce(4, 4, t(0), RETRY));
        s.resync_started(t(0));
        assert!(!s.announce(4, 4, t(1_000), RETRY), "in flight");
        assert!(s.announce(4, 4, t(3_000), RETRY), "retry due");
        s.resync_started(t(3_000));
        s.read_report(4);
        s.resync_done(true);
        assert!(!s.announce(4, 4, t(3_001), RETRY), "synced to 4");
    }

    #[test]
    fn a_read_is_trusted_only_up_to_what_was_durable_when_asked() {
        let mut s = ReportSync::default();
        // 5 reports, 3 durable: re-sync, then the member says 5 are durable.
        assert!(s.announce(5, 3, t(0), RETRY));
        s.resync_started(t(0));
        assert!(!s.announce(5, 5, t(10), RETRY));
        s.read_report(3);
        s.resync_done(true);
        // Synced to 3 only: 4 and 5 may have been written after the read began.
        assert!(s.announce(5, 5, t(20), RETRY));
        // An incomplete read trusts nothing, and is over: the next announcement asks again.
        s.resync_started(t(20));
        s.read_report(5);
        assert!(!s.resync_done(false), "failed, not stale");
        assert_eq!(s.synced_seq, 3, "nothing trusted from a failed read");
        assert!(
            s.announce(5, 5, t(30), RETRY),
            "asked again before its retry is due"
        );
    }

    #[test]
    fn nothing_is_asked_for_what_the_kv_does_not_hold_yet() {
        let mut s = ReportSync::default();
        s.batch(1, 2);
        assert!(
            !s.announce(4, 2, t(0), RETRY),
            "3 and 4 are not durable yet"
        );
        assert!(s.announce(4, 3, t(0), RETRY));
    }

    #[test]
    fn a_complete_snapshot_holds_what_its_records_said_was_durable() {
        let mut s = ReportSync::default();
        s.snapshot_record(7);
        s.snapshot_record(5);
        s.read_report(7);
        s.snapshot_complete();
        assert!(!s.announce(7, 7, t(0), RETRY));
        assert!(s.announce(8, 8, t(0), RETRY));
    }

    #[test]
    fn a_read_without_the_newest_durable_report_is_stale_and_not_trusted() {
        let mut s = ReportSync::default();
        assert!(s.announce(5, 5, t(0), RETRY));
        s.resync_started(t(0));
        // A lagging replica served reports up to 3 only.
        s.read_report(2);
        s.read_report(3);
        assert!(s.resync_done(true), "stale");
        assert!(!s.announce(5, 5, t(1_000), RETRY), "retried once due");
        assert!(s.announce(5, 5, t(3_000), RETRY), "retry due");
        s.resync_started(t(3_000));
        s.read_report(5);
        assert!(!s.resync_done(true));
        assert!(!s.announce(5, 5, t(3_001), RETRY), "synced to 5");

        // The snapshot likewise: its records said 4 is durable, it saw 2.
        let mut s = ReportSync::default();
        s.snapshot_record(4);
        s.read_report(2);
        assert!(s.snapshot_complete());
        assert!(s.announce(4, 4, t(0), RETRY), "re-synced when it announces");
        let mut s = ReportSync::default();
        s.snapshot_record(4);
        s.read_report(4);
        assert!(!s.snapshot_complete());
        assert!(!s.announce(4, 4, t(0), RETRY));
    }

    #[test]
    fn catching_up_on_the_fast_path_ends_the_wait_for_a_resync() {
        let mut s = ReportSync::default();
        assert!(s.announce(2, 2, t(0), RETRY));
        s.resync_started(t(0));
        s.batch(1, 2);
        s.batch(3, 3);
        assert!(
            s.announce(4, 4, t(1), RETRY),
            "4 missing: asked at once again"
        );
    }
}
