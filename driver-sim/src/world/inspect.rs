//! Looking at the state without changing it: expectations, probes and memory samples.

use gslb_state_core::{Bucket, DropReason};

use crate::scenario::fmt_time;

use super::{ExpectOutcome, NodeProbe, Probe, World, queue_bound};

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
        let kv_bound = n * (self.max_endpoints + 1);
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
