//! Exhaustive check for clusters of up to 4 nodes: every combination of per-node report
//! (none, healthy, unhealthy) × active subset of the other nodes × local observation × policy ×
//! q in {1, 18, 33, 50, 51, 66, 67, 100}, through a real engine, against the guide's rule; and
//! the same under `regions` scope for every assignment of the nodes to up to 3 regions,
//! against the region-scoped rule written out plainly.

mod common;

use common::*;
use gslb_state_core::codec::ReportState;
use gslb_state_core::{Input, Policy, QuorumScope, Source};

const QS: [u8; 8] = [1, 18, 33, 50, 51, 66, 67, 100];

/// The guide, word for word: "Active membership = nodes whose latest heartbeat is within
/// heartbeatTTL. For an endpoint, only reports from active members within heartbeatTTL are
/// counted. quorumMinPercent computes healthy threshold: healthy*100/total >= quorumMinPercent."
/// `others` are the reports of the other *active* members.
fn guide(policy: Policy, q: u8, local: Option<bool>, others: &[bool]) -> Option<bool> {
    let members: Vec<bool> = others.iter().copied().chain(local).collect();
    let total = members.len() as u64;
    let healthy = members.iter().filter(|h| **h).count() as u64;
    match policy {
        // "local result is authoritative; global used mainly for hints"
        Policy::PreferLocal => local.or_else(|| {
            let t = others.len() as u64;
            let h = others.iter().filter(|h| **h).count() as u64;
            (t > 0).then(|| h * 100 / t >= u64::from(q))
        }),
        // "ignore global state"
        Policy::LocalOnly => local,
        // "consider healthy if any site reports healthy"; zero members: local
        Policy::GlobalAnyHealthy => {
            if total == 0 {
                local
            } else {
                Some(healthy > 0)
            }
        }
        // "if membership is zero ... falls back to local"
        Policy::GlobalQuorum => match (healthy * 100).checked_div(total) {
            None => local,
            Some(percent) => Some(percent >= u64::from(q)),
        },
    }
}

#[test]
fn every_small_cluster_matches_the_guide() {
    let obs = [None, Some(true), Some(false)];
    let mut cases = 0u64;
    for others in 0..=3usize {
        // Each other node: report none/healthy/unhealthy (3^n) × active or not (2^n).
        for reports in 0..3usize.pow(others as u32) {
            for active_mask in 0..(1usize << others) {
                for local in obs {
                    for policy in Policy::ALL {
                        for q in QS {
                            check(others, reports, active_mask, local, policy, q);
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    // sum over n of 3^n * 2^n * 3 * 4 * 8 = 96 * (1 + 6 + 36 + 216)
    assert_eq!(cases, 96 * 259);
}

fn check(
    others: usize,
    reports: usize,
    active_mask: usize,
    local: Option<bool>,
    policy: Policy,
    q: u8,
) {
    let mut me = node("me", policy, q);
    let mut counted = Vec::new();
    let mut peers = Vec::new();
    let mut code = reports;
    for i in 0..others {
        peers.push((
            i,
            [None, Some(true), Some(false)][code % 3],
            active_mask & (1 << i) != 0,
        ));
        code /= 3;
    }
    // Inactive members were heard longer than TTL (3 s) ago; active ones just now.
    peers.sort_by_key(|p| p.2);
    for (i, report, active) in peers {
        let peer = Peer::new(&format!("n{i}"), 1);
        let heard_ms = if active { 10_000 } else { 6_000 };
        if let Some(h) = report {
            let state = if h {
                ReportState::Healthy
            } else {
                ReportState::Unhealthy
            };
            me.handle(at(heard_ms), peer.batch(1, 1, &[("web", 1, state)]));
            if active {
                counted.push(h);
            }
        }
        me.handle(
            at(heard_ms),
            peer.heartbeat(1, u64::from(report.is_some()), 0),
        );
    }
    if let Some(h) = local {
        me.handle(
            at(10_000),
            Input::LocalHealth {
                endpoint: "web".into(),
                healthy: Some(h),
            },
        );
    }
    me.handle_timeout(at(10_000));
    let want = guide(policy, q, local, &counted);
    let got = me.decision("web");
    let ctx = format!("{policy} q={q} local={local:?} others={counted:?}");
    let Some(d) = got else {
        assert_eq!(want, None, "{ctx}: no decision");
        assert!(local.is_none() && counted.is_empty(), "{ctx}");
        return;
    };
    assert_eq!(d.healthy, want, "{ctx}");
    assert_eq!(d.local, local, "{ctx}");
    assert_eq!(
        d.total_reports as usize,
        counted.len() + usize::from(local.is_some()),
        "{ctx}"
    );
    assert_eq!(
        d.healthy_reports as usize,
        counted.iter().filter(|h| **h).count() + usize::from(local == Some(true)),
        "{ctx}"
    );
    let source = match (policy, local) {
        (Policy::PreferLocal | Policy::LocalOnly, Some(_)) => Source::Local,
        (Policy::LocalOnly, None) => Source::Unknown,
        (_, None) if counted.is_empty() => Source::Unknown,
        (Policy::PreferLocal, None) => Source::Global,
        (_, Some(_)) if counted.is_empty() => Source::FallbackLocal,
        _ => Source::Global,
    };
    assert_eq!(d.source, source, "{ctx}");
}

// ---- region-scoped quorum ----

/// Region names, by block of a partition: this node is always in the first, the empty region.
const REGION_NAMES: [&str; 3] = ["", "eu", "us"];

/// Every assignment of `nodes` nodes to at most 3 regions, up to renaming the regions (the
/// rule does not depend on names): restricted growth strings, node 0 (this node) in region 0.
fn region_assignments(nodes: usize) -> Vec<Vec<usize>> {
    let mut out = vec![vec![0]];
    for _ in 1..nodes {
        let mut next = Vec::new();
        for a in out {
            let highest = *a.iter().max().expect("not empty");
            for r in 0..=(highest + 1).min(2) {
                let mut b = a.clone();
                b.push(r);
                next.push(b);
            }
        }
        out = next;
    }
    out
}

/// The region-scoped rule, written out plainly: counted reports grouped by their reporter's
/// region, a region healthy when `healthy*100/total >= q` inside it, the verdict healthy when
/// `healthy_regions*100/reporting_regions >= q`. Zero other reports: the local observation;
/// prefer-local: the local observation first. Returns (verdict, healthy regions, regions).
fn by_region(
    policy: Policy,
    q: u8,
    local: Option<bool>,
    others: &[(usize, bool)],
) -> (Option<bool>, u32, u32) {
    let mut regions: std::collections::BTreeMap<usize, (u64, u64)> = Default::default();
    for &(region, healthy) in others.iter().chain(local.map(|h| (0usize, h)).as_ref()) {
        let r = regions.entry(region).or_default();
        r.0 += u64::from(healthy);
        r.1 += 1;
    }
    let meets = |h: u64, t: u64| h * 100 / t >= u64::from(q);
    let healthy_regions = regions.values().filter(|(h, t)| meets(*h, *t)).count() as u64;
    let total_regions = regions.len() as u64;
    let region_quorum = || meets(healthy_regions, total_regions);
    let verdict = match policy {
        Policy::LocalOnly => local,
        Policy::PreferLocal => local.or_else(|| (!others.is_empty()).then(region_quorum)),
        _ if others.is_empty() => local,
        Policy::GlobalAnyHealthy => Some(others.iter().any(|o| o.1) || local == Some(true)),
        Policy::GlobalQuorum => Some(region_quorum()),
    };
    (verdict, healthy_regions as u32, total_regions as u32)
}

/// Every cluster of up to 4 nodes × every assignment of them to up to 3 regions × every
/// report of each other node (none, healthy, unhealthy) × every active subset × every local
/// observation × every policy × q in [`QS`], under `regions` scope. One engine per (cluster,
/// regions, active subset, policy, q) holds one endpoint per combination of reports and
/// local observation.
#[test]
fn every_small_cluster_by_region_matches_the_rule() {
    let mut cases = 0u64;
    for others in 0..=3usize {
        for regions in region_assignments(others + 1) {
            for active_mask in 0..(1usize << others) {
                for policy in Policy::ALL {
                    for q in QS {
                        cases += check_regions(others, &regions, active_mask, policy, q);
                    }
                }
            }
        }
    }
    // Assignments of n+1 nodes to at most 3 regions: 1, 2, 5, 14 (Stirling numbers).
    // sum over n of assignments * 2^n * 3^n * 3 * 4 * 8
    let per = |n: u32, a: u64| a * 2u64.pow(n) * 3u64.pow(n) * 96;
    assert_eq!(cases, per(0, 1) + per(1, 2) + per(2, 5) + per(3, 14));
}

/// One engine: `others` peers in `regions[1..]` (this node in `regions[0]`), the ones in
/// `active_mask` active; endpoint `e<code>-<local>` has peer i's report at digit i of `code`
/// (base 3: none, healthy, unhealthy) and local observation `local`. Returns the cases checked.
fn check_regions(
    others: usize,
    regions: &[usize],
    active_mask: usize,
    policy: Policy,
    q: u8,
) -> u64 {
    let mut config = node_config("me", policy, q);
    config.region = REGION_NAMES[regions[0]].to_owned();
    config.state.quorum_scope = QuorumScope::Regions;
    let mut me = gslb_state_core::Node::new(config, at(0)).unwrap();
    let codes = 3usize.pow(others as u32);
    let obs = [None, Some(true), Some(false)];
    let report =
        |code: usize, i: usize| [None, Some(true), Some(false)][code / 3usize.pow(i as u32) % 3];
    let endpoints: Vec<Vec<String>> = (0..codes)
        .map(|code| (0..3).map(|l| format!("e{code}-{l}")).collect())
        .collect();
    // Inactive peers are heard longer than TTL (3 s) before the check, active ones just now.
    let mut order: Vec<usize> = (0..others).collect();
    order.sort_by_key(|&i| active_mask & (1 << i) != 0);
    for i in order {
        let active = active_mask & (1 << i) != 0;
        let heard_ms = if active { 10_000 } else { 6_000 };
        let peer = Peer::in_region(&format!("n{i}"), 1, REGION_NAMES[regions[i + 1]]);
        let mut items = Vec::new();
        for (code, names) in endpoints.iter().enumerate() {
            if let Some(h) = report(code, i) {
                let state = if h {
                    ReportState::Healthy
                } else {
                    ReportState::Unhealthy
                };
                for name in names {
                    items.push((name.as_str(), items.len() as u64 + 1, state));
                }
            }
        }
        let last = items.len() as u64;
        if last > 0 {
            me.handle(at(heard_ms), peer.batch(1, last, &items));
        }
        me.handle(at(heard_ms), peer.heartbeat(1, last, 0));
    }
    for names in &endpoints {
        for (l, name) in names.iter().enumerate() {
            if let Some(h) = obs[l] {
                me.handle(
                    at(10_000),
                    Input::LocalHealth {
                        endpoint: name.clone(),
                        healthy: Some(h),
                    },
                );
            }
        }
    }
    me.handle_timeout(at(10_000));
    let mut cases = 0;
    for (code, names) in endpoints.iter().enumerate() {
        let counted: Vec<(usize, bool)> = (0..others)
            .filter(|&i| active_mask & (1 << i) != 0)
            .filter_map(|i| report(code, i).map(|h| (regions[i + 1], h)))
            .collect();
        for (l, name) in names.iter().enumerate() {
            cases += 1;
            let local = obs[l];
            let (want, healthy_regions, total_regions) = by_region(policy, q, local, &counted);
            let ctx =
                format!("{policy} q={q} regions={regions:?} local={local:?} others={counted:?}");
            let d = me
                .decision(name)
                .unwrap_or(gslb_state_core::Decision::UNKNOWN);
            assert_eq!(d.healthy, want, "{ctx}");
            assert_eq!(
                (d.healthy_regions, d.total_regions),
                (healthy_regions, total_regions),
                "{ctx}"
            );
            assert_eq!(
                d.total_reports as usize,
                counted.len() + usize::from(local.is_some()),
                "{ctx}"
            );
            assert_eq!(
                d.healthy_reports as usize,
                counted.iter().filter(|c| c.1).count() + usize::from(local == Some(true)),
                "{ctx}"
            );
            assert_eq!(d.pending, None, "{ctx}");
        }
    }
    cases
}
