//! **snapshot reads**: a start-up snapshot read from compacted-snapshot chunks and the report
//! keys written since leaves a node knowing at least what a full per-key read of the health
//! bucket would have told it.
//!
//! Checked in the world, at the instant a node's snapshot is loaded (the
//! `KvReadDone(SnapshotReports)` that completes it has been handed in; the KV store has not
//! changed since the read, as the simulation reads it at one instant): for every report key
//! `<member>.<endpoint>` of the health bucket whose record is of another node, with a
//! sequence up to the `kv_seq` that member's record said when the members bucket was read
//! (what the core promises: a change made after that comes on the fast path or by a
//! re-sync when the member next announces it), and of the
//! incarnation the node now knows that member at, a member it remembers and that has not
//! left, the node's report of that member on that endpoint
//! ([`gslb_state_core::Node::explain`]) has at least the key's sequence, and with the same
//! sequence the same state. (At least: a newer report may have come on the fast path before
//! the read.) The mismatches found are kept in [`crate::world::Outcome::snapshot_mismatches`]
//! and [`snapshot_reads`] reports them.

use std::collections::BTreeMap;

use gslb_state_core::codec::{self, Message, ReportState};
use gslb_state_core::{Bucket, Names, Node, Said};

use crate::kv::Kv;
use crate::world::Outcome;

/// One report key of the health bucket, as a full per-key read gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The member that wrote it.
    pub node: String,
    /// The endpoint.
    pub endpoint: String,
    /// The member's incarnation that wrote it.
    pub incarnation: u64,
    /// Its report sequence.
    pub seq: u64,
    /// What it says.
    pub said: Said,
}

/// Every report key of the health bucket (`*.*`) whose report is of another node than
/// `reader`, in key order.
pub fn per_key_reports(kv: &Kv, reader: &str) -> Vec<KeyReport> {
    kv.entries(Bucket::Health, Names::REPORTS_FILTER)
        .filter_map(|(_, v)| match codec::decode(&v.value) {
            Ok(Message::Report(r)) if r.node != reader => Some(KeyReport {
                node: r.node.to_owned(),
                endpoint: r.endpoint.to_owned(),
                incarnation: r.incarnation,
                seq: r.seq,
                said: said(r.state),
            }),
            _ => None,
        })
        .collect()
}

fn said(state: ReportState) -> Said {
    match state {
        ReportState::Healthy => Said::Healthy,
        ReportState::Unhealthy => Said::Unhealthy,
        ReportState::Withdrawn => Said::Withdrawn,
    }
}

/// Where `core`'s view of the other members' reports falls behind `per_key` (see the module
/// documentation), one line each.
pub fn view_mismatches(core: &Node, per_key: &[KeyReport]) -> Vec<String> {
    let members: BTreeMap<String, (u64, bool)> = core
        .members()
        .into_iter()
        .filter(|m| !m.local)
        .map(|m| (m.node, (m.incarnation, m.left)))
        .collect();
    let mut by_endpoint: BTreeMap<&str, Vec<&KeyReport>> = BTreeMap::new();
    for r in per_key {
        let held = members
            .get(&r.node)
            .is_some_and(|&(incarnation, left)| incarnation == r.incarnation && !left);
        if held {
            by_endpoint.entry(&r.endpoint).or_default().push(r);
        }
    }
    let mut out = Vec::new();
    for (endpoint, reports) in by_endpoint {
        let explanation = core.explain(endpoint);
        for r in reports {
            let part = explanation
                .as_ref()
                .and_then(|x| x.members.iter().find(|p| !p.local && p.node == r.node));
            let (seq, seen) = part.map_or((None, Said::Nothing), |p| (p.seq, p.said));
            let behind = match seq {
                None => true,
                Some(s) => s < r.seq || (s == r.seq && seen != r.said),
            };
            if behind {
                out.push(format!(
                    "{}'s report of {endpoint} is {} (seq {}), the KV key says {} (seq {}, \
                     incarnation {})",
                    r.node,
                    seen,
                    seq.map_or("none".to_owned(), |s| s.to_string()),
                    r.said,
                    r.seq,
                    r.incarnation
                ));
            }
        }
    }
    out
}

/// The snapshot-read mismatches a run recorded, if any (the first few).
pub fn snapshot_reads(o: &Outcome) -> Result<(), String> {
    if o.snapshot_mismatches.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = o
        .snapshot_mismatches
        .iter()
        .take(5)
        .map(String::as_str)
        .collect();
    Err(format!(
        "{} report(s) behind the health bucket's keys once a snapshot was loaded:\n  {}",
        o.snapshot_mismatches.len(),
        shown.join("\n  ")
    ))
}
