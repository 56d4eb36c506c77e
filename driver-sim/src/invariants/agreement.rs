//! Agreement: at the probe instants, the running nodes see each other and decide as the
//! policy says from their inputs.

use std::collections::{BTreeMap, BTreeSet};

use gslb_state_core::Decision;
use gslb_state_core::policy::{RegionCounts, RemoteCounts, Rule, decide, quorum_met};

use crate::scenario::{Scenario, fmt_time};
use crate::world::Outcome;

fn unknown() -> Decision {
    Decision::UNKNOWN
}

/// See the module docs: at each probe, every running node has the running nodes as members and
/// decides every endpoint as `decide` does from the running nodes' observations.
pub fn agreement(s: &Scenario, o: &Outcome) -> Result<(), String> {
    agreement_outside_snapshot_windows(s, o, 0)
}

/// [`agreement`], except that a node is not checked at a probe less than `window_ns` after
/// it read the KV snapshot: there it judges records by sender timestamps, so wall-clock
/// offsets may keep a dead member counted (never longer than TTL after the read: a record's
/// age is clamped at 0). Run B is checked so, with the clock invariance's window.
pub fn agreement_outside_snapshot_windows(
    s: &Scenario,
    o: &Outcome,
    window_ns: u64,
) -> Result<(), String> {
    let rule = Rule::of(&s.state);
    let holds = !s.state.holds().is_none();
    let in_window = |node: usize, t: u64| {
        o.lives.iter().any(|l| {
            l.node as usize == node
                && l.snapshot_ns
                    .is_some_and(|x| x <= t && t < x.saturating_add(window_ns))
        })
    };
    for p in &o.probes {
        let running: Vec<usize> = (0..p.nodes.len())
            .filter(|&n| p.nodes[n].is_some())
            .collect();
        let ids: Vec<String> = running.iter().map(|&n| s.nodes[n].id.clone()).collect();
        let mut expected_members = ids.clone();
        expected_members.sort();
        let mut endpoints = BTreeSet::new();
        for np in p.nodes.iter().flatten() {
            endpoints.extend(np.decisions.keys().cloned());
            endpoints.extend(np.observations.keys().cloned());
        }
        for &r in running.iter().filter(|&&r| !in_window(r, p.t_ns)) {
            let np = p.nodes[r].as_ref().expect("running");
            if np.active != expected_members {
                return Err(format!(
                    "at {}: {} has active members [{}], the running nodes are [{}]",
                    fmt_time(p.t_ns),
                    s.nodes[r].id,
                    np.active.join(", "),
                    expected_members.join(", ")
                ));
            }
            for e in &endpoints {
                let mut remote = RemoteCounts::default();
                // Per region, over every counted report (r's own included): (healthy, total).
                let mut tallies: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
                for &x in &running {
                    let obs = p.nodes[x].as_ref().expect("running").observations.get(e);
                    if let Some(&h) = obs {
                        let t = tallies.entry(s.nodes[x].region.as_str()).or_default();
                        t.0 += u32::from(h);
                        t.1 += 1;
                        if x != r {
                            remote.total += 1;
                            remote.healthy += u32::from(h);
                        }
                    }
                }
                let regions = RegionCounts {
                    healthy: tallies
                        .values()
                        .filter(|&&(h, t)| quorum_met(h, t, rule.quorum_min_percent))
                        .count() as u32,
                    total: tallies.len() as u32,
                };
                let local = np.observations.get(e).copied();
                let want = decide(rule, local, remote, regions);
                let got = np.decisions.get(e).copied().unwrap_or_else(unknown);
                // With holds, a change of verdict may still wait for its hold: the rule's
                // verdict is then the pending one, and the verdict held is the other.
                let rule_verdict = match got.pending {
                    Some(p) if holds && got.healthy == Some(!p.healthy) => Some(p.healthy),
                    Some(_) => {
                        return Err(format!(
                            "at {}: {} decides {e} {} with a change pending{}",
                            fmt_time(p.t_ns),
                            s.nodes[r].id,
                            crate::trace::explain(&got),
                            if holds {
                                " to the verdict it shows"
                            } else {
                                ", without holds"
                            }
                        ));
                    }
                    None => got.healthy,
                };
                let key = |d: &Decision, healthy: Option<bool>| {
                    (
                        healthy,
                        d.source,
                        d.healthy_reports,
                        d.total_reports,
                        d.healthy_regions,
                        d.total_regions,
                    )
                };
                if key(&want, want.healthy) != key(&got, rule_verdict) {
                    return Err(format!(
                        "at {}: {} decides {e} {} but its inputs give {}",
                        fmt_time(p.t_ns),
                        s.nodes[r].id,
                        crate::trace::explain_with_regions(&got),
                        crate::trace::explain_with_regions(&want)
                    ));
                }
            }
        }
    }
    Ok(())
}
