//! The global view: every endpoint known to this node, its counted remote reports, the local
//! observation, and the decision in force. Counters change incrementally; a decision is
//! recomputed only for the endpoint whose counters changed.

use indexmap::IndexSet;
use rustc_hash::FxBuildHasher;

use crate::codec::ReportState;
use crate::policy::{Decision, Policy, RemoteCounts, Source, decide};

/// Dense id of an interned endpoint name; stable for the node's lifetime.
pub(crate) type EndpointId = u32;

/// Per-endpoint state (names live in [`View::names`]).
#[derive(Debug, Clone, Default)]
struct Entry {
    remote: RemoteCounts,
    local: Option<bool>,
    /// The (verdict, source) last handed out as an output.
    emitted: Option<(Option<bool>, Source)>,
    /// In `View::changed` already.
    queued: bool,
    /// In `View::updated` already.
    updated: bool,
}

/// Endpoints, counters and decisions.
#[derive(Debug)]
pub(crate) struct View {
    policy: Policy,
    quorum_min_percent: u8,
    names: IndexSet<Box<str>, FxBuildHasher>,
    entries: Vec<Entry>,
    /// Endpoints whose decision differs from the emitted one, in the order they changed.
    changed: Vec<EndpointId>,
    /// Next position of `changed` to hand out.
    changed_next: usize,
    /// Endpoints whose decision changed in any way (counts included) since last handed out by
    /// [`View::poll_updated`]; each at most once.
    updated: Vec<EndpointId>,
    max_endpoints: usize,
}

impl View {
    pub(crate) fn new(policy: Policy, quorum_min_percent: u8, max_endpoints: usize) -> Self {
        View {
            policy,
            quorum_min_percent,
            names: IndexSet::default(),
            entries: Vec::new(),
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
        self.entries.push(Entry::default());
        // A new endpoint is "unknown"; emit it once it becomes something else.
        self.entries[id].emitted = Some((None, Source::Unknown));
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
        (self.policy, self.quorum_min_percent)
    }

    /// Changes the policy or threshold and re-decides every endpoint (config changes are rare).
    pub(crate) fn set_policy(&mut self, policy: Policy, quorum_min_percent: u8) {
        if (policy, quorum_min_percent) == (self.policy, self.quorum_min_percent) {
            return;
        }
        self.policy = policy;
        self.quorum_min_percent = quorum_min_percent;
        for id in 0..self.entries.len() as EndpointId {
            self.touch(id);
        }
    }

    /// Adds (`add`) or removes (`!add`) one active member's report in the counters.
    pub(crate) fn count(&mut self, id: EndpointId, state: ReportState, add: bool) {
        let e = &mut self.entries[id as usize];
        let (healthy, total) = match state {
            ReportState::Healthy => (1, 1),
            ReportState::Unhealthy => (0, 1),
            ReportState::Withdrawn => return,
        };
        if add {
            e.remote.healthy += healthy;
            e.remote.total += total;
        } else {
            assert!(
                e.remote.healthy >= healthy && e.remote.total >= total,
                "counter underflow: a report was removed that was never counted"
            );
            e.remote.healthy -= healthy;
            e.remote.total -= total;
        }
        self.touch(id);
    }

    /// Sets this node's own observation.
    pub(crate) fn set_local(&mut self, id: EndpointId, local: Option<bool>) {
        self.entries[id as usize].local = local;
        self.touch(id);
    }

    /// The decision in force for `id`.
    pub(crate) fn decision(&self, id: EndpointId) -> Decision {
        let e = &self.entries[id as usize];
        decide(self.policy, self.quorum_min_percent, e.local, e.remote)
    }

    /// Queues `id` for an output when its (verdict, source) now differs from the emitted one,
    /// and for [`View::poll_updated`] in any case.
    fn touch(&mut self, id: EndpointId) {
        let d = self.decision(id);
        let e = &mut self.entries[id as usize];
        if !e.updated {
            e.updated = true;
            self.updated.push(id);
        }
        if !e.queued && e.emitted != Some((d.healthy, d.source)) {
            e.queued = true;
            self.changed.push(id);
        }
    }

    /// The next endpoint whose decision changed since it was last handed out.
    pub(crate) fn poll_changed(&mut self) -> Option<(EndpointId, Decision)> {
        while self.changed_next < self.changed.len() {
            let id = self.changed[self.changed_next];
            self.changed_next += 1;
            let d = self.decision(id);
            let e = &mut self.entries[id as usize];
            e.queued = false;
            if e.emitted != Some((d.healthy, d.source)) {
                e.emitted = Some((d.healthy, d.source));
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
        self.entries[id as usize].updated = false;
        Some(id)
    }

    /// Every endpoint with its decision, in first-seen order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, Decision)> + '_ {
        (0..self.entries.len() as EndpointId).map(move |id| (self.name(id), self.decision(id)))
    }
}
