//! Regions: the names of the regions of active members (and of this node), interned to small
//! ids, and per endpoint per region the counted reports, so that region votes change
//! incrementally with the counters.
//!
//! A region holds an id while an active member (or this node) is in it; at most
//! [`MAX_REGIONS`] are held at once, and a member of one more region is not made active
//! (its heartbeat is dropped and counted, [`DropReason::RegionLimit`](crate::DropReason)).

use rustc_hash::FxHashMap;

use crate::policy::quorum_met;
use crate::view::EndpointId;

/// Dense id of an interned region.
pub(crate) type RegionId = u8;

/// Most regions held at once (regions of active members and of this node).
pub const MAX_REGIONS: usize = 64;

/// Regions whose tallies live inline in the view's entry of each endpoint (next to its other
/// counters, for one cache miss per counted report); ids from here on keep theirs in a table
/// per region. The lowest free id is taken first, so a deployment of a few regions is inline.
pub(crate) const INLINE_REGIONS: usize = 2;

/// Counted reports of one endpoint in one region: 16-bit counts, as a region holds at most
/// [`MAX_MEMBERS_LIMIT`](crate::node::MAX_MEMBERS_LIMIT) members and this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    healthy: u16,
    total: u16,
}

impl Tally {
    #[cfg(test)]
    pub(crate) fn new(healthy: u16, total: u16) -> Tally {
        Tally { healthy, total }
    }

    /// Reports that say healthy.
    pub(crate) fn healthy(self) -> u32 {
        u32::from(self.healthy)
    }

    /// Reports.
    pub(crate) fn total(self) -> u32 {
        u32::from(self.total)
    }

    /// The region's vote: `None` when it reports nothing, else whether it meets the threshold.
    pub(crate) fn vote(self, quorum_min_percent: u8) -> Option<bool> {
        (self.total > 0).then(|| quorum_met(self.healthy(), self.total(), quorum_min_percent))
    }

    /// One more (`add`) or one less counted report, `healthy` or not; the region's vote before
    /// and after.
    pub(crate) fn count(
        &mut self,
        healthy: bool,
        add: bool,
        quorum_min_percent: u8,
    ) -> (Option<bool>, Option<bool>) {
        let before = self.vote(quorum_min_percent);
        if add {
            // At most MAX_MEMBERS_LIMIT members and this node: no overflow.
            self.total += 1;
            self.healthy += u16::from(healthy);
        } else {
            assert!(
                self.total > 0 && self.healthy >= u16::from(healthy),
                "region tally underflow: a report was removed that was never counted"
            );
            self.total -= 1;
            self.healthy -= u16::from(healthy);
        }
        (before, self.vote(quorum_min_percent))
    }
}

/// The inline tallies of one endpoint, by region id.
pub(crate) type InlineTallies = [Tally; INLINE_REGIONS];

/// One interned region.
#[derive(Debug)]
struct Slot {
    name: Box<str>,
    /// Active members (and this node) in it.
    refs: u32,
    /// Counted reports per endpoint id, for ids from [`INLINE_REGIONS`] on (grown on demand;
    /// shorter means zero).
    tallies: Vec<Tally>,
}

/// Interned regions, and the tallies of those not inline.
#[derive(Debug, Default)]
pub(crate) struct Regions {
    slots: Vec<Option<Slot>>,
    index: FxHashMap<Box<str>, RegionId>,
}

impl Regions {
    /// Whether [`Regions::acquire`] of `name` would succeed.
    pub(crate) fn can_acquire(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.index.len() < MAX_REGIONS
    }

    /// The id of `name`, taking one reference; `None` when [`MAX_REGIONS`] are held. A new
    /// region takes the lowest free id.
    pub(crate) fn acquire(&mut self, name: &str) -> Option<RegionId> {
        if let Some(&id) = self.index.get(name) {
            self.slot_mut(id).refs += 1;
            return Some(id);
        }
        if self.index.len() >= MAX_REGIONS {
            return None;
        }
        let slot = Slot {
            name: name.into(),
            refs: 1,
            tallies: Vec::new(),
        };
        let at = match self.slots.iter().position(Option::is_none) {
            Some(at) => {
                self.slots[at] = Some(slot);
                at
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        let id = RegionId::try_from(at).expect("at most MAX_REGIONS slots");
        self.index.insert(name.into(), id);
        Some(id)
    }

    /// Drops one reference to `id`; the last one frees it (its tallies are all zero by then:
    /// only active members' reports are counted, and none is left in it).
    pub(crate) fn release(&mut self, id: RegionId) {
        let slot = self.slot_mut(id);
        assert!(slot.refs > 0, "region released more often than acquired");
        slot.refs -= 1;
        if slot.refs > 0 {
            return;
        }
        let slot = self.slots[usize::from(id)].take().expect("checked above");
        debug_assert!(
            slot.tallies.iter().all(|t| *t == Tally::default()),
            "a region with no member left still counts reports"
        );
        self.index.remove(&slot.name);
    }

    fn slot_mut(&mut self, id: RegionId) -> &mut Slot {
        self.slots[usize::from(id)]
            .as_mut()
            .expect("region ids are live while held")
    }

    /// Adds (`add`) or removes one counted report of endpoint `ep` in region `id` (not
    /// inline); returns the region's vote on `ep` before and after.
    pub(crate) fn count(
        &mut self,
        id: RegionId,
        ep: EndpointId,
        healthy: bool,
        add: bool,
        quorum_min_percent: u8,
    ) -> (Option<bool>, Option<bool>) {
        debug_assert!(
            usize::from(id) >= INLINE_REGIONS,
            "inline regions count inline"
        );
        let tallies = &mut self.slot_mut(id).tallies;
        let i = ep as usize;
        if i >= tallies.len() {
            tallies.resize(i + 1, Tally::default());
        }
        tallies[i].count(healthy, add, quorum_min_percent)
    }

    /// Every region with a counted report of `ep` (`inline`: its inline tallies):
    /// (region, tally), by id.
    pub(crate) fn tallies<'a>(
        &'a self,
        ep: EndpointId,
        inline: &'a InlineTallies,
    ) -> impl Iterator<Item = (&'a str, Tally)> + 'a {
        self.slots.iter().enumerate().filter_map(move |(id, s)| {
            let s = s.as_ref()?;
            let t = match inline.get(id) {
                Some(t) => *t,
                None => s.tallies.get(ep as usize).copied()?,
            };
            (t.total > 0).then_some((&*s.name, t))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name of region `id`.
    fn name(r: &Regions, id: RegionId) -> &str {
        &r.slots[usize::from(id)].as_ref().expect("live").name
    }

    #[test]
    fn regions_are_bounded_and_reused() {
        let mut r = Regions::default();
        let eu = r.acquire("eu").unwrap();
        assert_eq!(r.acquire("eu"), Some(eu));
        for i in 1..MAX_REGIONS {
            assert!(r.acquire(&format!("r{i}")).is_some());
        }
        assert_eq!(r.slots.len(), MAX_REGIONS);
        assert!(!r.can_acquire("one-more"));
        assert_eq!(r.acquire("one-more"), None);
        assert!(r.can_acquire("eu"));
        r.release(eu);
        assert_eq!(name(&r, eu), "eu", "still held once");
        r.release(eu);
        let again = r.acquire("one-more").unwrap();
        assert_eq!(again, eu, "the freed id is reused");
        assert_eq!(name(&r, again), "one-more");
        // The lowest free id first.
        r.release(5);
        r.release(3);
        assert_eq!(r.acquire("low"), Some(3));
    }

    #[test]
    fn votes_follow_the_tallies_inline_or_not() {
        let mut r = Regions::default();
        let ids: Vec<RegionId> = ["a", "b", "eu"]
            .iter()
            .map(|n| r.acquire(n).unwrap())
            .collect();
        let eu = ids[2];
        assert_eq!(usize::from(eu), INLINE_REGIONS);
        assert_eq!(r.count(eu, 3, true, true, 51), (None, Some(true)));
        assert_eq!(r.count(eu, 3, false, true, 51), (Some(true), Some(false)));
        assert_eq!(r.count(eu, 3, false, true, 50), (Some(true), Some(false)));
        let mut inline = InlineTallies::default();
        assert_eq!(inline[1].count(true, true, 51), (None, Some(true)));
        let all: Vec<_> = r.tallies(3, &inline).collect();
        assert_eq!(all, vec![("b", Tally::new(1, 1)), ("eu", Tally::new(1, 3))]);
        assert_eq!(r.tallies(2, &InlineTallies::default()).count(), 0);
        assert_eq!(inline[1].count(true, false, 51), (Some(true), None));
    }
}
