//! Looking at the state without changing it: expectations, probes and memory samples.

use gslb_state_core::codec::{MAX_SEQ, MAX_SNAPSHOT_CHUNKS, ReportItem, ReportState};
use gslb_state_core::compaction::encode_chunks;
use gslb_state_core::{Bucket, DropReason};

use crate::scenario::{Scenario, fmt_time};

use super::{ExpectOutcome, NodeProbe, Probe, World, queue_bound};

/// The most KV entries `scenario` may leave: per node its record, a key per endpoint, and in
/// each of its two snapshot slots as many chunks as a compacted snapshot of every endpoint
/// takes (one for a few endpoints: `nodes × (endpoints + 3)`).
pub(super) fn kv_bound(scenario: &Scenario) -> usize {
    let endpoints = scenario.endpoints();
    let items: Vec<ReportItem<'_>> = endpoints
        .iter()
        .map(|e| ReportItem {
            endpoint: e,
            seq: MAX_SEQ,
            state: ReportState::Withdrawn,
        })
        .collect();
    let longest_id = scenario
        .nodes
        .iter()
        .map(|n| n.id.as_str())
        .max_by_key(|id| id.len());
    let chunks = encode_chunks(
        super::CLUSTER_ID,
        longest_id.unwrap_or(""),
        MAX_SEQ,
        1,
        &items,
    )
    .map_or(MAX_SNAPSHOT_CHUNKS as usize, |c| c.len());
    scenario.nodes.len() * (endpoints.len() + 1 + 2 * chunks)
}

impl World<'_> {
    /// Checks expectation `i` against the state in force now.
    pub(super) fn check_expect(&mut self, i: usize) {
        let x = &self.scenario.expects[i];
        let node = &self.nodes[x.node];
        let Some(core) = node.core.as_ref() else {
            self.outcome.expects.push(ExpectOutcome {
                index: i,
                ok: false,
                seen: format!("{} is not running", node.id),
                why: "the node is crashed at this time".into(),
            });
            return;
        };
        let decision = x.checks.endpoint.as_ref().and_then(|e| core.decision(e));
        let active = core.active_member_ids();
        let (ok, seen, why) = crate::report::evaluate(&x.checks, decision.as_ref(), &active);
        if !ok && let Some(endpoint) = &x.checks.endpoint {
            // Why the node decides as it does, at this instant: for the report of a failure.
            let text = match core.explain(endpoint) {
                Some(explanation) => explanation.to_string(),
                None => format!("{}: {} has never heard of it\n", endpoint, node.id),
            };
            self.outcome.explanations.insert(i, text);
        }
        self.outcome.expects.push(ExpectOutcome {
            index: i,
            ok,
            seen,
            why,
        });
    }

    /// Takes probe `i`: every running node's connection, members, decisions and observations.
    pub(super) fn probe(&mut self, i: usize) {
        let nodes = (0..self.nodes.len())
            .map(|n| {
                let node = &self.nodes[n];
                node.core.as_ref().map(|core| NodeProbe {
                    connected: self.net.connected(n),
                    active: core.active_member_ids(),
                    decisions: core.decisions().map(|(e, d)| (e.to_owned(), d)).collect(),
                    observations: node.observations.clone(),
                })
            })
            .collect();
        self.outcome.probes.push(Probe {
            t_ns: self.options.probes_ns[i],
            nodes,
        });
    }

    /// Checks the memory bounds: see [`crate::invariants`].
    pub(super) fn sample(&mut self) {
        let n = self.nodes.len();
        let queue_bound = queue_bound(n);
        let queued = self.node_events.len() + self.global_events.len();
        if queued > queue_bound {
            let msg = format!(
                "at {}: {queued} events queued, bound {queue_bound}",
                fmt_time(self.now_ns)
            );
            self.outcome.bound_violations.push(msg);
        }
        let kv_bound = self.kv_bound;
        let kv_len = self.kv.len(Bucket::Members) + self.kv.len(Bucket::Health);
        if kv_len > kv_bound {
            let msg = format!(
                "at {}: {kv_len} KV entries, bound {kv_bound}",
                fmt_time(self.now_ns)
            );
            self.outcome.bound_violations.push(msg);
        }
        for node in &self.nodes {
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            let mut problems = Vec::new();
            if core.endpoint_count() > self.max_endpoints {
                problems.push(format!(
                    "{} endpoints known, bound {}",
                    core.endpoint_count(),
                    self.max_endpoints
                ));
            }
            if core.members().len() > n {
                problems.push(format!(
                    "{} members remembered, bound {n}",
                    core.members().len()
                ));
            }
            let full = core.stats().dropped(DropReason::OutputQueueFull);
            if full > 0 {
                problems.push(format!("{full} outputs dropped on a full queue"));
            }
            for p in problems {
                let msg = format!("at {}: {}: {p}", fmt_time(self.now_ns), node.id);
                self.outcome.bound_violations.push(msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gslb_state_core::Config;

    use super::*;
    use crate::scenario::EventKind;

    fn with_endpoints(count: usize) -> Scenario {
        let state = Config::with_defaults("sim").state;
        let mut s = Scenario::new(1, Duration::from_secs(1), state, &["a", "b"]);
        for i in 0..count {
            s.at(
                Duration::ZERO,
                EventKind::Observe {
                    node: 0,
                    endpoint: format!("endpoint-{i:06}"),
                    healthy: Some(true),
                },
            );
        }
        s
    }

    #[test]
    fn the_kv_bound_counts_two_snapshot_slots_of_as_many_chunks_as_needed() {
        assert_eq!(kv_bound(&with_endpoints(3)), 2 * (3 + 3));
        // Tens of thousands of endpoints need more than one chunk per snapshot.
        let many = 40_000;
        assert!(kv_bound(&with_endpoints(many)) >= 2 * (many + 1 + 2 * 2));
    }
}
