//! Exhaustive check for clusters of up to 4 nodes: every combination of per-node report
//! (none, healthy, unhealthy) × active subset of the other nodes × local observation × policy ×
//! q in {1, 18, 33, 50, 51, 66, 67, 100}, through a real engine, against the guide's rule.

mod common;

use common::*;
use gslb_state_core::codec::ReportState;
use gslb_state_core::{Input, Policy, Source};

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
