//! Remote members: their incarnation, liveness, and the index from each member to its reports.
//!
//! A member is *active* while its latest accepted heartbeat was received at most TTL ago on our
//! own monotonic clock. Only an active member's reports are counted in the [`View`]; activating
//! or deactivating a member adds or removes exactly its own reports, nothing else.

use std::collections::VecDeque;

use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::codec::ReportState;
use crate::regions::RegionId;
use crate::report_sync::ReportSync;
use crate::time::Instant;
use crate::view::{EndpointId, View};

/// Dense index of a member slot.
pub(crate) type MemberIdx = u32;

/// A report in memory: `seq << 2 | state`, 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedReport(u64);

impl PackedReport {
    pub(crate) fn new(seq: u64, state: ReportState) -> Self {
        debug_assert!(seq <= crate::codec::MAX_SEQ, "decoder bounds sequences");
        let code = match state {
            ReportState::Healthy => 0,
            ReportState::Unhealthy => 1,
            ReportState::Withdrawn => 2,
        };
        PackedReport(seq << 2 | code)
    }

    pub(crate) fn seq(self) -> u64 {
        self.0 >> 2
    }

    pub(crate) fn state(self) -> ReportState {
        match self.0 & 3 {
            0 => ReportState::Healthy,
            1 => ReportState::Unhealthy,
            _ => ReportState::Withdrawn,
        }
    }
}

/// A time on this node's monotonic clock in nanoseconds, signed: a heartbeat vouched for by a
/// snapshot record may have been sent before this node's clock started.
pub(crate) type HeardNs = i128;

/// `t` as a [`HeardNs`].
pub(crate) fn heard_ns(t: Instant) -> HeardNs {
    HeardNs::from(t.as_nanos())
}

/// `heard + ttl` as an instant (0 if that is before the origin: expired already).
fn until_of(heard: HeardNs, ttl: Duration) -> Instant {
    let until = heard.saturating_add(HeardNs::try_from(ttl.as_nanos()).unwrap_or(HeardNs::MAX));
    Instant::from_nanos(u64::try_from(until.max(0)).unwrap_or(u64::MAX))
}

/// The newest membership record of a member read during the start-up snapshot, judged when
/// the snapshot is complete (its age needs the newest timestamp of the whole snapshot).
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRecord {
    pub(crate) region: Box<str>,
    pub(crate) hb_seq: u64,
    pub(crate) sent_unix_ms: u64,
    pub(crate) report_seq: u64,
    pub(crate) kv_seq: u64,
    /// The record says the member left.
    pub(crate) left: bool,
    /// The compacted snapshot of its reports the record names.
    pub(crate) snapshot: Option<crate::codec::SnapshotRef>,
}

/// One remote node as this node knows it.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) id: Box<str>,
    pub(crate) region: Box<str>,
    /// The id of `region` in the view, held while active (meaningless while inactive).
    pub(crate) region_id: RegionId,
    pub(crate) incarnation: u64,
    /// The highest incarnation known to be an earlier life than the current one: messages of
    /// incarnations up to it, other than the current one, are stale (unless live while the
    /// member is inactive).
    pub(crate) retired: u64,
    /// The member announced that it left (this incarnation).
    pub(crate) left: bool,
    /// `Some(until)` when the current incarnation was taken from a report batch or a KV
    /// record outside the start-up snapshot, and no heartbeat of it was heard yet: until a
    /// TTL after that, it is a life that is running (it just published) rather than one that
    /// went silent. A live message of another incarnation does not replace it meanwhile, as it
    /// would a life that expired: that is a late or duplicated heartbeat of the life it
    /// replaced (it raised its incarnation). A tentative life never heard within the TTL is
    /// taken for expired.
    pub(crate) tentative_until: Option<Instant>,
    /// Sequence of the latest accepted heartbeat (0 = none in this incarnation).
    pub(crate) hb_seq: u64,
    /// `hb_seq` came from a snapshot record, not a live heartbeat.
    pub(crate) hb_from_record: bool,
    /// When the latest accepted heartbeat arrived (or, from a snapshot, was sent).
    pub(crate) last_heard: Option<HeardNs>,
    /// `Some(last_heard + TTL)` while active.
    pub(crate) active_until: Option<Instant>,
    /// How far its reports are known here, and the re-sync in flight.
    pub(crate) sync: ReportSync,
    /// The newest record of this member in the snapshot being read.
    pub(crate) snapshot_record: Option<Box<SnapshotRecord>>,
    /// When the member last became inactive (for forgetting it eventually).
    pub(crate) inactive_since: Instant,
    /// Our wall clock minus the sender's at its last heartbeat, ms (includes the transit delay).
    pub(crate) clock_offset_ms: i64,
    pub(crate) reports: FxHashMap<EndpointId, PackedReport>,
}

/// How a message's incarnation relates to the member's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncarnationCheck {
    /// The current incarnation.
    Current,
    /// Another life to switch to: a newer one, or any other from a live heartbeat while the
    /// member is inactive (it restarted, perhaps with its wall clock behind its last one).
    Switch,
    /// An earlier life: drop the message.
    Stale,
}

impl Member {
    /// Takes the region a membership record of the current incarnation gives, while no
    /// heartbeat of it was heard (a heartbeat's region is fixed for the incarnation): the
    /// member's reports are in that region's bucket.
    pub(crate) fn region_from_record(&mut self, region: &str) {
        if self.hb_seq == 0 && *self.region != *region {
            debug_assert!(self.active_until.is_none());
            self.region = region.into();
        }
    }

    /// Judges `incarnation` against the current one. `live` is true for a live message (a
    /// heartbeat or a leave): only a running process sends those, so while the current life
    /// is inactive any other incarnation that speaks live is the member's life now.
    pub(crate) fn check_incarnation(
        &self,
        incarnation: u64,
        live: bool,
        now: Instant,
    ) -> IncarnationCheck {
        let inactive = self.active_until.is_none();
        let tentative = self.tentative_until.is_some_and(|until| now < until);
        if incarnation == self.incarnation {
            IncarnationCheck::Current
        } else if (live && inactive && !tentative)
            || (incarnation > self.incarnation && incarnation > self.retired)
        {
            IncarnationCheck::Switch
        } else {
            IncarnationCheck::Stale
        }
    }
}

/// Why a report was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReportOutcome {
    /// Stored; it replaced an older report or was new.
    Applied,
    /// Not newer than the stored report.
    NotNewer,
    /// The member holds its maximum number of reports.
    Full,
}

/// All remote members.
#[derive(Debug)]
pub(crate) struct Members {
    slots: Vec<Option<Member>>,
    free: Vec<MemberIdx>,
    index: FxHashMap<Box<str>, MemberIdx>,
    /// (active_until, member) in time order, one entry per heartbeat; an entry whose time is
    /// no longer its member's `active_until` is stale and skipped. With one TTL for all,
    /// heartbeats arrive in expiry order, so an update is a push at the back.
    expiries: VecDeque<(Instant, MemberIdx)>,
    /// Active members.
    active: usize,
    max_members: usize,
    max_reports_per_member: usize,
}

impl Members {
    pub(crate) fn new(max_members: usize, max_reports_per_member: usize) -> Self {
        Members {
            slots: Vec::new(),
            free: Vec::new(),
            index: FxHashMap::default(),
            expiries: VecDeque::new(),
            active: 0,
            max_members,
            max_reports_per_member,
        }
    }

    pub(crate) fn find(&self, id: &str) -> Option<MemberIdx> {
        self.index.get(id).copied()
    }

    /// The member `id`, created (inactive, incarnation 0) if new; `None` at the member bound.
    pub(crate) fn find_or_insert(&mut self, id: &str, now: Instant) -> Option<MemberIdx> {
        if let Some(idx) = self.find(id) {
            return Some(idx);
        }
        if self.index.len() >= self.max_members {
            // Full: make room by forgetting the member silent the longest, if any is.
            let oldest = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    m.as_ref()
                        .filter(|m| m.active_until.is_none())
                        .map(|m| (m.inactive_since, i))
                })
                .min()?;
            self.forget(oldest.1);
        }
        let member = Member {
            id: id.into(),
            region: "".into(),
            region_id: 0,
            incarnation: 0,
            retired: 0,
            left: false,
            tentative_until: None,
            hb_seq: 0,
            hb_from_record: false,
            last_heard: None,
            active_until: None,
            sync: ReportSync::default(),
            snapshot_record: None,
            inactive_since: now,
            clock_offset_ms: 0,
            reports: FxHashMap::default(),
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.slots[idx as usize] = Some(member);
                idx
            }
            None => {
                self.slots.push(Some(member));
                (self.slots.len() - 1) as MemberIdx
            }
        };
        self.index.insert(id.into(), idx);
        Some(idx)
    }

    pub(crate) fn get(&self, idx: MemberIdx) -> &Member {
        self.slots[idx as usize]
            .as_ref()
            .expect("member indices are live while held")
    }

    pub(crate) fn get_mut(&mut self, idx: MemberIdx) -> &mut Member {
        self.slots[idx as usize]
            .as_mut()
            .expect("member indices are live while held")
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Member> + '_ {
        self.slots.iter().flatten()
    }

    /// Indices of every remembered member.
    pub(crate) fn indices(&self) -> Vec<MemberIdx> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .map(|i| i as MemberIdx)
            .collect()
    }

    pub(crate) fn active_count(&self) -> usize {
        self.active
    }

    /// When to look at expiries next: right after the earliest entry's time (exact after
    /// [`Members::refresh_front`]; otherwise possibly early, which is harmless).
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.expiries
            .front()
            .map(|(t, _)| *t + Duration::from_nanos(1))
    }

    /// Marks `idx` heard at `heard_at`: active until `heard_at + ttl`, which must not be
    /// before `now`. Returns true if it just became active (its reports are now counted). An
    /// inactive member's region must have room ([`View::can_acquire_region`]).
    pub(crate) fn mark_heard(
        &mut self,
        idx: MemberIdx,
        heard_at: HeardNs,
        ttl: Duration,
        view: &mut View,
    ) -> bool {
        let m = self.get_mut(idx);
        let heard = m.last_heard.map_or(heard_at, |t| t.max(heard_at));
        m.last_heard = Some(heard);
        self.set_active_until(idx, until_of(heard, ttl), view)
            .expect("the caller checked that the member's region has room")
    }

    /// Keeps `idx` active until `until`; returns true if it just became active, `None` if it
    /// cannot become active because [`MAX_REGIONS`](crate::MAX_REGIONS) other
    /// regions are held.
    fn set_active_until(
        &mut self,
        idx: MemberIdx,
        until: Instant,
        view: &mut View,
    ) -> Option<bool> {
        let m = self.slots[idx as usize].as_mut().expect("live member");
        if m.active_until.is_none() {
            m.region_id = view.acquire_region(&m.region)?;
        }
        let was = m.active_until.replace(until);
        if was != Some(until) {
            self.index_expiry(until, idx);
        }
        if was.is_some() {
            return Some(false);
        }
        self.active += 1;
        let m = self.slots[idx as usize].as_ref().expect("live member");
        for (&ep, r) in &m.reports {
            view.count(ep, m.region_id, r.state(), true);
        }
        Some(true)
    }

    /// Adds an entry in time order (a push at the back but for snapshot records and TTL
    /// changes), compacting when stale entries pile up (a member heartbeating very fast).
    fn index_expiry(&mut self, until: Instant, idx: MemberIdx) {
        if self.expiries.back().is_none_or(|&(t, _)| t <= until) {
            self.expiries.push_back((until, idx));
        } else {
            let at = self.expiries.partition_point(|&(t, _)| t <= until);
            self.expiries.insert(at, (until, idx));
        }
        if self.expiries.len() > 4 * self.active + 64 {
            self.rebuild_expiries();
        }
    }

    /// One entry per active member, in time order.
    fn rebuild_expiries(&mut self) {
        let mut live: Vec<(Instant, MemberIdx)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref()?.active_until.map(|t| (t, i as MemberIdx)))
            .collect();
        live.sort_unstable();
        self.expiries = live.into();
    }

    /// Whether `entry` still stands for its member's expiry.
    fn is_current(&self, (t, idx): (Instant, MemberIdx)) -> bool {
        self.slots[idx as usize]
            .as_ref()
            .is_some_and(|m| m.active_until == Some(t))
    }

    /// Makes `idx` inactive and removes its reports from the counters. Returns true if it was
    /// active.
    pub(crate) fn deactivate(&mut self, idx: MemberIdx, now: Instant, view: &mut View) -> bool {
        let m = self.slots[idx as usize].as_mut().expect("live member");
        if m.active_until.take().is_none() {
            return false;
        }
        self.active -= 1;
        m.inactive_since = now;
        for (&ep, r) in &m.reports {
            view.count(ep, m.region_id, r.state(), false);
        }
        view.release_region(m.region_id);
        true
    }

    /// Drops stale entries at the front, so that [`Members::next_expiry`] is exact. Each entry
    /// is dropped once: amortised O(1) per heartbeat.
    pub(crate) fn refresh_front(&mut self) {
        while let Some(&front) = self.expiries.front() {
            if self.is_current(front) {
                return;
            }
            self.expiries.pop_front();
        }
    }

    /// Pops one member whose activity ended before `now` (active *at* `active_until`).
    pub(crate) fn pop_expired(&mut self, now: Instant, view: &mut View) -> Option<MemberIdx> {
        loop {
            let &(t, idx) = self.expiries.front()?;
            if !self.is_current((t, idx)) {
                self.expiries.pop_front();
                continue;
            }
            if t >= now {
                return None;
            }
            self.expiries.pop_front();
            let was_active = self.deactivate(idx, now, view);
            assert!(
                was_active,
                "a current expiry entry belongs to an active member"
            );
            return Some(idx);
        }
    }

    /// Re-judges every member under a new TTL: returns the members that became active, those
    /// that stopped being active (their counters are already updated), and how many could not
    /// become active again because their region has no room.
    pub(crate) fn set_ttl(
        &mut self,
        ttl: Duration,
        now: Instant,
        view: &mut View,
    ) -> (Vec<MemberIdx>, Vec<MemberIdx>, usize) {
        let (mut up, mut down, mut refused) = (Vec::new(), Vec::new(), 0);
        for idx in self.indices() {
            let Some(heard) = self.get(idx).last_heard else {
                continue;
            };
            if self.get(idx).left {
                continue;
            }
            // Judged before `until_of` clamps to the origin: heard + ttl before it is expired
            // even at instant 0.
            let ttl_ns = HeardNs::try_from(ttl.as_nanos()).unwrap_or(HeardNs::MAX);
            if heard.saturating_add(ttl_ns) >= heard_ns(now) {
                let until = until_of(heard, ttl);
                match self.set_active_until(idx, until, view) {
                    Some(true) => up.push(idx),
                    Some(false) => {}
                    None => refused += 1,
                }
            } else if self.deactivate(idx, now, view) {
                down.push(idx);
            }
        }
        self.rebuild_expiries();
        (up, down, refused)
    }

    /// Switches `idx` to another incarnation (newer, or a lower one of a later life): deactivates
    /// it and drops all its reports.
    /// `tentative_until`: see [`Member::tentative_until`]. Returns true if it was active.
    pub(crate) fn reset_incarnation(
        &mut self,
        idx: MemberIdx,
        incarnation: u64,
        tentative_until: Option<Instant>,
        now: Instant,
        view: &mut View,
    ) -> bool {
        let was_active = self.deactivate(idx, now, view);
        let m = self.get_mut(idx);
        debug_assert!(incarnation != m.incarnation);
        // Every life left behind is an earlier one: its messages are stale from now on, even
        // when its incarnation is larger (a clock that stepped back).
        m.retired = m.retired.max(m.incarnation);
        m.incarnation = incarnation;
        m.tentative_until = tentative_until;
        m.left = false;
        m.snapshot_record = None;
        m.hb_seq = 0;
        m.hb_from_record = false;
        m.last_heard = None;
        m.sync = ReportSync::default();
        m.reports = FxHashMap::default();
        was_active
    }

    /// Marks `idx` as left (this incarnation): deactivates it and drops its reports. Returns
    /// true if it was active.
    pub(crate) fn mark_left(&mut self, idx: MemberIdx, now: Instant, view: &mut View) -> bool {
        let was_active = self.deactivate(idx, now, view);
        let m = self.get_mut(idx);
        m.left = true;
        m.reports = FxHashMap::default();
        m.sync.cancel_resync();
        was_active
    }

    /// Makes room for `more` reports of member `idx` beyond those it holds (bounded by the
    /// per-member limit), when that many are known to be on the way.
    pub(crate) fn reserve_reports(&mut self, idx: MemberIdx, more: usize) {
        let max_reports = self.max_reports_per_member;
        let m = self.slots[idx as usize].as_mut().expect("live member");
        let more = more.min(max_reports.saturating_sub(m.reports.len()));
        m.reports.reserve(more);
    }

    /// Stores a report of `idx` if it is newer than the one held, updating counters when the
    /// member is active.
    pub(crate) fn apply_report(
        &mut self,
        idx: MemberIdx,
        ep: EndpointId,
        seq: u64,
        state: ReportState,
        view: &mut View,
    ) -> ReportOutcome {
        let max_reports = self.max_reports_per_member;
        let m = self.slots[idx as usize].as_mut().expect("live member");
        let new = PackedReport::new(seq, state);
        let active = m.active_until.is_some();
        let region = m.region_id;
        let len = m.reports.len();
        match m.reports.entry(ep) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let old = *o.get();
                if old.seq() >= seq {
                    return ReportOutcome::NotNewer;
                }
                o.insert(new);
                if active && old.state() != state {
                    view.recount(ep, region, old.state(), state);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                if len >= max_reports {
                    return ReportOutcome::Full;
                }
                v.insert(new);
                if active {
                    view.count(ep, region, state, true);
                }
            }
        }
        ReportOutcome::Applied
    }

    /// Forgets members inactive for longer than `after`, with their reports (bounded memory for
    /// nodes that left for good). Returns how many were forgotten.
    pub(crate) fn forget_inactive(&mut self, now: Instant, after: Duration) -> usize {
        let mut forgotten = 0;
        for idx in 0..self.slots.len() {
            let stale = matches!(&self.slots[idx], Some(m) if m.active_until.is_none() && now.saturating_since(m.inactive_since) > after);
            if stale {
                self.forget(idx);
                forgotten += 1;
            }
        }
        forgotten
    }

    /// Drops the inactive member in slot `idx` with its reports.
    fn forget(&mut self, idx: usize) {
        let m = self.slots[idx]
            .take()
            .expect("forget() is given a live slot");
        assert!(
            m.active_until.is_none(),
            "only inactive members are forgotten"
        );
        self.index.remove(&m.id);
        self.free.push(idx as MemberIdx);
        // Its stale entries must not be taken for the next member in this slot.
        self.expiries.retain(|&(_, i)| i as usize != idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_reports_round_trip() {
        for state in [
            ReportState::Healthy,
            ReportState::Unhealthy,
            ReportState::Withdrawn,
        ] {
            for seq in [1, 2, crate::codec::MAX_SEQ] {
                let p = PackedReport::new(seq, state);
                assert_eq!((p.seq(), p.state()), (seq, state));
            }
        }
        assert_eq!(std::mem::size_of::<(EndpointId, PackedReport)>(), 16);
    }
}
