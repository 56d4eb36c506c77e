//! Pending verdict changes (`state.holdUp` / `state.holdDown`): since when each is pending
//! and when it takes effect, with a time-ordered queue of deadlines for the core's timer.
//!
//! The queue is invalidated lazily: an entry whose deadline is no longer its endpoint's is
//! skipped when it reaches the front, and the queue is rebuilt when stale entries pile up, so
//! each change costs O(log n) however many endpoints have one pending.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::time::Instant;
use crate::view::EndpointId;

/// The pending changes of every endpoint that has one.
#[derive(Debug, Default)]
pub(crate) struct HoldQueue {
    /// Endpoint → (since, deadline).
    pending: FxHashMap<EndpointId, (Instant, Instant)>,
    /// (deadline, endpoint), earliest first; stale entries are skipped.
    queue: BinaryHeap<Reverse<(Instant, EndpointId)>>,
}

impl HoldQueue {
    /// Since when, and until when, `id`'s change is pending.
    pub(crate) fn get(&self, id: EndpointId) -> Option<(Instant, Instant)> {
        self.pending.get(&id).copied()
    }

    /// Endpoints with a pending change, in id order.
    pub(crate) fn ids(&self) -> Vec<EndpointId> {
        let mut ids: Vec<EndpointId> = self.pending.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// `id`'s change is pending since `since` and takes effect at `deadline`.
    pub(crate) fn set(&mut self, id: EndpointId, since: Instant, deadline: Instant) {
        if self.pending.insert(id, (since, deadline)).map(|p| p.1) != Some(deadline) {
            self.queue.push(Reverse((deadline, id)));
            if self.queue.len() > 2 * self.pending.len() + 64 {
                self.rebuild();
            }
        }
    }

    /// `id` has no pending change any more.
    pub(crate) fn clear(&mut self, id: EndpointId) {
        self.pending.remove(&id);
    }

    fn rebuild(&mut self) {
        let live: Vec<Reverse<(Instant, EndpointId)>> = self
            .pending
            .iter()
            .map(|(&id, &(_, deadline))| Reverse((deadline, id)))
            .collect();
        self.queue = BinaryHeap::from(live);
    }

    fn is_current(&self, (deadline, id): (Instant, EndpointId)) -> bool {
        self.pending.get(&id).is_some_and(|p| p.1 == deadline)
    }

    /// Takes one endpoint whose change is due at `now` off the queue (it stays pending until
    /// the caller lets it take effect).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<EndpointId> {
        while let Some(&Reverse(front)) = self.queue.peek() {
            if front.0 > now {
                return None;
            }
            self.queue.pop();
            if self.is_current(front) {
                return Some(front.1);
            }
        }
        None
    }

    /// Drops stale entries at the front, so that [`HoldQueue::next_deadline`] is exact.
    pub(crate) fn refresh_front(&mut self) {
        while let Some(&Reverse(front)) = self.queue.peek() {
            if self.is_current(front) {
                return;
            }
            self.queue.pop();
        }
    }

    /// The earliest deadline (exact after [`HoldQueue::refresh_front`]).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn due_changes_come_in_deadline_order_and_stale_ones_are_skipped() {
        let mut h = HoldQueue::default();
        h.set(1, t(0), t(30));
        h.set(2, t(0), t(10));
        h.set(3, t(5), t(20));
        h.set(1, t(0), t(15)); // shortened: the entry at 30 is stale
        h.clear(3);
        h.refresh_front();
        assert_eq!(h.next_deadline(), Some(t(10)));
        assert_eq!(h.pop_due(t(9)), None);
        assert_eq!(h.pop_due(t(100)), Some(2));
        h.clear(2);
        assert_eq!(h.pop_due(t(100)), Some(1));
        h.clear(1);
        assert_eq!(h.pop_due(t(100)), None);
        h.refresh_front();
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn stale_entries_are_bounded() {
        let mut h = HoldQueue::default();
        for i in 0..10_000u64 {
            h.set(7, t(i), t(i + 1_000));
        }
        assert!(h.queue.len() <= 2 * h.pending.len() + 65);
        assert_eq!(h.get(7), Some((t(9_999), t(10_999))));
    }
}
