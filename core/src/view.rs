//! The global view: every endpoint known to this node, its counted reports (in total and per
//! region), the local observation, and the decision in force with its hold. Counters change
//! incrementally; an endpoint whose counters changed is marked, and its decision is recomputed
//! once when the input that changed it has been handled ([`View::settle`]), so that holds see
//! only the verdicts in force between inputs.

use indexmap::IndexSet;
use rustc_hash::FxBuildHasher;

use crate::codec::ReportState;
use crate::hold::HoldQueue;
use crate::policy::{
    Decision, Holds, Pending, Policy, RegionCounts, RemoteCounts, Rule, Source, decide, hold_step,
};
use crate::regions::{InlineTallies, RegionId, Regions, Tally};
use crate::time::Instant;

/// Dense id of an interned endpoint name; stable for the node's lifetime.
pub(crate) type EndpointId = u32;

/// Per-endpoint state (names live in [`View::names`]), packed into 16 bytes: every counted
/// report reads and writes its endpoint's entry, so the entries' size is the view's cache
/// footprint.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Active other members' reports that say healthy (at most
    /// [`MAX_MEMBERS_LIMIT`](crate::node::MAX_MEMBERS_LIMIT)).
    remote_healthy: u16,
    /// Active other members' reports.
    remote_total: u16,
    /// Region votes over every counted report (ours included): healthy ones, and all.
    healthy_regions: u8,
    total_regions: u8,
    /// Two bits each ([`pack_verdict`]): this node's observation, the verdict in force (the
    /// rule's, unless a change of it is pending), and the verdict last handed out as an
    /// output; and two bits ([`pack_source`]): the source last handed out.
    verdicts: u8,
    /// [`PENDING`], [`DIRTY`], [`QUEUED`], [`UPDATED`].
    flags: u8,
    /// Counted reports (ours included) in the regions with the lowest ids
    /// ([`INLINE_REGIONS`](crate::regions::INLINE_REGIONS)).
    tallies: InlineTallies,
}

/// A change is pending (in `View::holds_pending`).
const PENDING: u8 = 1;
/// In `View::dirty` already.
const DIRTY: u8 = 2;
/// In `View::changed` already.
const QUEUED: u8 = 4;
/// In `View::updated` already.
const UPDATED: u8 = 8;

/// Bit offsets in [`Entry::verdicts`].
const LOCAL_AT: u8 = 0;
const SHOWN_AT: u8 = 2;
/// The emitted (verdict, source): four bits.
const EMITTED_AT: u8 = 4;

/// Two bits: 0 unhealthy, 1 healthy, 2 unknown (what the compiler keeps an `Option<bool>` as,
/// so packing and unpacking cost next to nothing on the hot path).
fn pack_verdict(v: Option<bool>) -> u8 {
    match v {
        Some(healthy) => u8::from(healthy),
        None => 2,
    }
}

fn unpack_verdict(bits: u8) -> Option<bool> {
    const VERDICTS: [Option<bool>; 4] = [Some(false), Some(true), None, None];
    VERDICTS[usize::from(bits & 3)]
}

/// Two bits.
fn pack_source(s: Source) -> u8 {
    s as u8
}

/// A new entry: no local observation, unknown, emitted as (unknown, unknown).
const NEW_VERDICTS: u8 = 2 << LOCAL_AT | 2 << SHOWN_AT | (2 | 3 << 2) << EMITTED_AT;

/// A (verdict, source) as the four bits kept of the emitted one.
fn pack_emitted(v: Option<bool>, s: Source) -> u8 {
    pack_verdict(v) | pack_source(s) << 2
}

impl Entry {
    fn get(&self, at: u8) -> Option<bool> {
        unpack_verdict(self.verdicts >> at)
    }

    fn set(&mut self, at: u8, v: Option<bool>) {
        self.verdicts = (self.verdicts & !(3 << at)) | pack_verdict(v) << at;
    }

    fn local(&self) -> Option<bool> {
        self.get(LOCAL_AT)
    }

    fn shown(&self) -> Option<bool> {
        self.get(SHOWN_AT)
    }

    fn emitted(&self) -> u8 {
        self.verdicts >> EMITTED_AT
    }

    fn set_emitted(&mut self, packed: u8) {
        self.verdicts = (self.verdicts & 0x0f) | packed << EMITTED_AT;
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn mark(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    fn remote(&self) -> RemoteCounts {
        RemoteCounts {
            healthy: u32::from(self.remote_healthy),
            total: u32::from(self.remote_total),
        }
    }
}

/// Endpoints, counters and decisions.
#[derive(Debug)]
pub(crate) struct View {
    rule: Rule,
    holds: Holds,
    /// `holds.is_none()`, kept for the hot path.
    no_holds: bool,
    names: IndexSet<Box<str>, FxBuildHasher>,
    entries: Vec<Entry>,
    regions: Regions,
    /// This node's region (held for the node's lifetime).
    local_region: RegionId,
    holds_pending: HoldQueue,
    /// Endpoints whose counters changed since the last [`View::settle`].
    dirty: Vec<EndpointId>,
    /// Endpoints whose decision differs from the emitted one, in the order they changed.
    changed: Vec<EndpointId>,
    /// Next position of `changed` to hand out.
    changed_next: usize,
    /// Endpoints whose decision changed in any way (counts included) since last handed out by
    /// [`View::poll_updated`]; each at most once.
    updated: Vec<EndpointId>,
    max_endpoints: usize,
}

/// `(healthy, total)` region votes moved from vote `before` to vote `after`.
fn move_vote(healthy: &mut u8, total: &mut u8, before: Option<bool>, after: Option<bool>) {
    if before == after {
        return;
    }
    *total -= u8::from(before.is_some());
    *healthy -= u8::from(before == Some(true));
    *total += u8::from(after.is_some());
    *healthy += u8::from(after == Some(true));
}

impl View {
    pub(crate) fn new(rule: Rule, holds: Holds, local_region: &str, max_endpoints: usize) -> Self {
        let mut regions = Regions::default();
        let local_region = regions
            .acquire(local_region)
            .expect("the first region always fits");
        View {
            rule,
            holds,
            no_holds: holds.is_none(),
            names: IndexSet::default(),
            entries: Vec::new(),
            regions,
            local_region,
            holds_pending: HoldQueue::default(),
            dirty: Vec::new(),
            changed: Vec::new(),
            changed_next: 0,
            updated: Vec::new(),
            max_endpoints,
        }
    }

    /// The id of `name`, interning it; `None` when the endpoint bound is reached.
    pub(crate) fn intern(&mut self, name: &str) -> Option<EndpointId> {
        if let Some(id) = self.names.get_index_of(name) {
            return Some(id as EndpointId);
        }
        if self.names.len() >= self.max_endpoints {
            return None;
        }
        let (id, _) = self.names.insert_full(name.into());
        // A new endpoint is "unknown" (emitted as such): emit it once it becomes something else.
        self.entries.push(Entry {
            verdicts: NEW_VERDICTS,
            ..Entry::default()
        });
        Some(id as EndpointId)
    }

    /// The id of `name`, if known.
    pub(crate) fn id_of(&self, name: &str) -> Option<EndpointId> {
        self.names.get_index_of(name).map(|i| i as EndpointId)
    }

    /// The name of endpoint `id`.
    pub(crate) fn name(&self, id: EndpointId) -> &str {
        self.names
            .get_index(id as usize)
            .expect("endpoint ids come from intern()")
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn policy(&self) -> (Policy, u8) {
        (self.rule.policy, self.rule.quorum_min_percent)
    }

    pub(crate) fn rule(&self) -> Rule {
        self.rule
    }

    pub(crate) fn holds(&self) -> Holds {
        self.holds
    }

    /// Changes the rule and re-decides every endpoint (config changes are rare).
    pub(crate) fn set_rule(&mut self, rule: Rule) {
        if rule == self.rule {
            return;
        }
        let q_changed = rule.quorum_min_percent != self.rule.quorum_min_percent;
        self.rule = rule;
        for id in 0..self.entries.len() as EndpointId {
            if q_changed {
                let (mut healthy, mut total) = (0u8, 0u8);
                for (_, t) in self.region_tallies(id) {
                    move_vote(
                        &mut healthy,
                        &mut total,
                        None,
                        t.vote(rule.quorum_min_percent),
                    );
                }
                let e = &mut self.entries[id as usize];
                (e.healthy_regions, e.total_regions) = (healthy, total);
            }
            self.touch(id);
        }
    }

    /// Changes the hold times: every pending change is judged again at the next
    /// [`View::settle`] (a shortened hold whose deadline has passed takes effect then).
    pub(crate) fn set_holds(&mut self, holds: Holds) {
        if holds == self.holds {
            return;
        }
        self.holds = holds;
        self.no_holds = holds.is_none();
        for id in self.holds_pending.ids() {
            self.touch(id);
        }
    }

    // ---- regions ----

    /// Whether a member of region `name` can become active (see [`Regions::can_acquire`]).
    pub(crate) fn can_acquire_region(&self, name: &str) -> bool {
        self.regions.can_acquire(name)
    }

    /// Takes a reference to region `name` for a member becoming active.
    pub(crate) fn acquire_region(&mut self, name: &str) -> Option<RegionId> {
        self.regions.acquire(name)
    }

    /// Drops a member's reference to its region (it stopped being active).
    pub(crate) fn release_region(&mut self, id: RegionId) {
        self.regions.release(id);
    }

    /// Every region with a counted report of `id`, ours included: (name, tally).
    pub(crate) fn region_tallies(
        &self,
        id: EndpointId,
    ) -> impl Iterator<Item = (&str, Tally)> + '_ {
        self.regions.tallies(id, &self.entries[id as usize].tallies)
    }

    // ---- counters ----

    /// Adds (`add`) or removes (`!add`) one active member's report, from region `region`, in
    /// the counters.
    pub(crate) fn count(
        &mut self,
        id: EndpointId,
        region: RegionId,
        state: ReportState,
        add: bool,
    ) {
        if self.count_only(id, region, state, add) {
            self.touch(id);
        }
    }

    /// One active member's report, from region `region`, changed from `old` to `new`: both
    /// counted, and `id` decided once (not once per half of the change).
    pub(crate) fn recount(
        &mut self,
        id: EndpointId,
        region: RegionId,
        old: ReportState,
        new: ReportState,
    ) {
        let removed = self.count_only(id, region, old, false);
        if self.count_only(id, region, new, true) || removed {
            self.touch(id);
        }
    }

    /// The counters of [`View::count`], without deciding; whether they changed.
    #[inline]
    fn count_only(
        &mut self,
        id: EndpointId,
        region: RegionId,
        state: ReportState,
        add: bool,
    ) -> bool {
        let healthy = match state {
            ReportState::Healthy => true,
            ReportState::Unhealthy => false,
            ReportState::Withdrawn => return false,
        };
        let e = &mut self.entries[id as usize];
        if add {
            // At most MAX_MEMBERS_LIMIT members are counted: no overflow.
            e.remote_healthy += u16::from(healthy);
            e.remote_total += 1;
        } else {
            assert!(
                e.remote_healthy >= u16::from(healthy) && e.remote_total >= 1,
                "counter underflow: a report was removed that was never counted"
            );
            e.remote_healthy -= u16::from(healthy);
            e.remote_total -= 1;
        }
        self.tally(id, region, healthy, add);
        true
    }

    /// One counted report more or less in `region`'s tally, and the region votes after it.
    #[inline]
    fn tally(&mut self, id: EndpointId, region: RegionId, healthy: bool, add: bool) {
        let q = self.rule.quorum_min_percent;
        let e = &mut self.entries[id as usize];
        let (before, after) = match e.tallies.get_mut(usize::from(region)) {
            Some(t) => t.count(healthy, add, q),
            None => self.regions.count(region, id, healthy, add, q),
        };
        let e = &mut self.entries[id as usize];
        move_vote(&mut e.healthy_regions, &mut e.total_regions, before, after);
    }

    /// Sets this node's own observation.
    pub(crate) fn set_local(&mut self, id: EndpointId, local: Option<bool>) {
        let e = &mut self.entries[id as usize];
        let old = e.local();
        e.set(LOCAL_AT, local);
        if old != local {
            let region = self.local_region;
            if let Some(h) = old {
                self.tally(id, region, h, false);
            }
            if let Some(h) = local {
                self.tally(id, region, h, true);
            }
        }
        self.touch(id);
    }

    /// This node's own observation of `id`.
    pub(crate) fn local(&self, id: EndpointId) -> Option<bool> {
        self.entries[id as usize].local()
    }

    // ---- decisions ----

    /// The rule's decision for `id`, before holds.
    #[inline]
    fn rule_decision(&self, id: EndpointId) -> Decision {
        let e = &self.entries[id as usize];
        let regions = RegionCounts {
            healthy: u32::from(e.healthy_regions),
            total: u32::from(e.total_regions),
        };
        decide(self.rule, e.local(), e.remote(), regions)
    }

    /// The rule's verdict for `id` now, before holds.
    pub(crate) fn rule_verdict(&self, id: EndpointId) -> Option<bool> {
        self.rule_decision(id).healthy
    }

    /// The decision in force for `id`.
    pub(crate) fn decision(&self, id: EndpointId) -> Decision {
        let mut d = self.rule_decision(id);
        let e = &self.entries[id as usize];
        d.healthy = e.shown();
        if e.has(PENDING) {
            let (_, at) = self
                .holds_pending
                .get(id)
                .expect("a pending entry is in the hold queue");
            let held = e.shown().expect("only a known verdict is held");
            d.pending = Some(Pending { healthy: !held, at });
        }
        d
    }

    /// Marks `id` for [`View::settle`]. Without holds, every change takes effect at once
    /// whenever it is judged, so `id` is decided at once instead.
    #[inline]
    fn touch(&mut self, id: EndpointId) {
        if self.no_holds {
            // `now` only matters to a hold; with none, any change is due.
            self.decide(id, Instant::MAX);
            return;
        }
        let e = &mut self.entries[id as usize];
        if !e.has(DIRTY) {
            e.mark(DIRTY, true);
            self.dirty.push(id);
        }
    }

    /// Re-decides every endpoint marked since the last call, at `now`: the hold rule applies
    /// to the verdicts in force between inputs.
    pub(crate) fn settle(&mut self, now: Instant) {
        for i in 0..self.dirty.len() {
            let id = self.dirty[i];
            self.entries[id as usize].mark(DIRTY, false);
            self.decide(id, now);
        }
        self.dirty.clear();
    }

    /// Decides `id` at `now` under the hold rule. Queues it for [`View::poll_updated`], and
    /// for an output when its (verdict, source) now differs from the emitted one.
    #[inline]
    fn decide(&mut self, id: EndpointId, now: Instant) {
        let d = self.rule_decision(id);
        let pending_since = if self.entries[id as usize].has(PENDING) {
            self.holds_pending.get(id).map(|p| p.0)
        } else {
            None
        };
        let e = &mut self.entries[id as usize];
        let (shown, since) = if pending_since.is_none() && self.no_holds {
            (d.healthy, None)
        } else {
            hold_step(self.holds, e.shown(), pending_since, d.healthy, now)
        };
        e.set(SHOWN_AT, shown);
        e.mark(PENDING, since.is_some());
        if let Some(since) = since {
            let to = d.healthy.expect("a pending change has a known verdict");
            self.holds_pending.set(id, since, since + self.holds.of(to));
        } else if pending_since.is_some() {
            self.holds_pending.clear(id);
        }
        if !e.has(UPDATED) {
            e.mark(UPDATED, true);
            self.updated.push(id);
        }
        if !e.has(QUEUED) && e.emitted() != pack_emitted(shown, d.source) {
            e.mark(QUEUED, true);
            self.changed.push(id);
        }
    }

    /// Lets every pending change due at `now` take effect (before the input at `now` is
    /// handled: it held until now).
    pub(crate) fn fire_holds(&mut self, now: Instant) {
        while let Some(id) = self.holds_pending.pop_due(now) {
            self.touch(id);
        }
        self.settle(now);
    }

    /// Drops stale hold deadlines at the front, so that [`View::next_hold`] is exact.
    pub(crate) fn refresh_front(&mut self) {
        self.holds_pending.refresh_front();
    }

    /// When the earliest pending change takes effect.
    pub(crate) fn next_hold(&self) -> Option<Instant> {
        self.holds_pending.next_deadline()
    }

    /// The next endpoint whose decision changed since it was last handed out.
    pub(crate) fn poll_changed(&mut self) -> Option<(EndpointId, Decision)> {
        while self.changed_next < self.changed.len() {
            let id = self.changed[self.changed_next];
            self.changed_next += 1;
            let d = self.decision(id);
            let e = &mut self.entries[id as usize];
            debug_assert!(!e.has(DIRTY), "decisions are handed out settled");
            e.mark(QUEUED, false);
            let now = pack_emitted(d.healthy, d.source);
            if e.emitted() != now {
                e.set_emitted(now);
                return Some((id, d));
            }
        }
        self.changed.clear();
        self.changed_next = 0;
        None
    }

    /// The next endpoint touched since it was last handed out here.
    pub(crate) fn poll_updated(&mut self) -> Option<EndpointId> {
        let id = self.updated.pop()?;
        self.entries[id as usize].mark(UPDATED, false);
        Some(id)
    }

    /// Every endpoint with its decision, in first-seen order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Decision)> + '_ {
        (0..self.entries.len() as EndpointId).map(move |id| (self.name(id), self.decision(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_16_bytes_and_packs_its_verdicts() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        let mut e = Entry {
            verdicts: NEW_VERDICTS,
            ..Entry::default()
        };
        assert_eq!((e.local(), e.shown()), (None, None));
        assert_eq!(e.emitted(), pack_emitted(None, Source::Unknown));
        for local in [None, Some(false), Some(true)] {
            for shown in [None, Some(false), Some(true)] {
                e.set(LOCAL_AT, local);
                e.set(SHOWN_AT, shown);
                e.set_emitted(pack_emitted(shown, Source::FallbackLocal));
                assert_eq!((e.local(), e.shown()), (local, shown));
                assert_eq!(e.emitted(), pack_emitted(shown, Source::FallbackLocal));
            }
        }
        e.mark(QUEUED, true);
        e.mark(DIRTY, true);
        e.mark(DIRTY, false);
        assert!(e.has(QUEUED) && !e.has(DIRTY) && !e.has(PENDING));
        let all = [
            Source::Unknown,
            Source::Local,
            Source::Global,
            Source::FallbackLocal,
        ];
        let packed: std::collections::BTreeSet<u8> = all
            .iter()
            .flat_map(|&s| [None, Some(false), Some(true)].map(|v| pack_emitted(v, s)))
            .collect();
        assert_eq!(
            packed.len(),
            12,
            "distinct (verdict, source) pack distinctly"
        );
    }
}
