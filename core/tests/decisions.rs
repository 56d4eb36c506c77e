//! The decisions beyond the guide, one test each: region-scoped quorum, holds, and
//! explanations.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use gslb_state_core::codec::ReportState::{Healthy, Unhealthy, Withdrawn};
use gslb_state_core::{
    Decision, DropReason, Input, Instant, MAX_REGIONS, Node, Output, Part, Pending, Policy,
    QuorumScope, Said, Source, TimerReason,
};

fn with(policy: Policy, q: u8, scope: QuorumScope, holds_ms: (u64, u64), region: &str) -> Node {
    let mut c = node_config("me", policy, q);
    c.region = region.to_owned();
    c.state.quorum_scope = scope;
    c.state.hold_up = Duration::from_millis(holds_ms.0);
    c.state.hold_down = Duration::from_millis(holds_ms.1);
    Node::new(c, at(0)).unwrap()
}

fn local(endpoint: &str, healthy: Option<bool>) -> Input {
    Input::LocalHealth {
        endpoint: endpoint.into(),
        healthy,
    }
}

/// Peers `(id, region, says)`, each heartbeating now with one report of "web".
fn peers_report(me: &mut Node, ms: u64, peers: &[(&str, &str, bool)]) {
    for (id, region, healthy) in peers {
        let p = Peer::in_region(id, 1, region);
        let state = if *healthy { Healthy } else { Unhealthy };
        me.handle(at(ms), p.batch(1, 1, &[("web", 1, state)]));
        me.handle(at(ms), p.heartbeat(1, 1, WALL_BASE_MS + ms));
    }
}

fn verdict(me: &Node) -> (Option<bool>, Source) {
    let d = me.decision("web").unwrap();
    (d.healthy, d.source)
}

fn decisions(outs: &[Output]) -> Vec<(String, Option<bool>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Decision { endpoint, decision } => Some((endpoint.clone(), decision.healthy)),
            _ => None,
        })
        .collect()
}

/// Runs every timer due from `from_ms` (the node's time now) to `ms`, as a driver would;
/// returns each wake-up and its reason.
fn run_until(me: &mut Node, from_ms: u64, ms: u64) -> Vec<(Instant, TimerReason)> {
    let mut seen = Vec::new();
    loop {
        let (wake, reason) = me.poll_timeout_reason();
        let wake = wake.max(Instant::from_millis(from_ms));
        if wake > Instant::from_millis(ms) {
            break;
        }
        seen.push((wake, reason));
        me.handle_timeout(gslb_state_core::Now::new(wake, at(wake.as_millis()).wall));
    }
    me.handle_timeout(at(ms));
    seen
}

fn config_push(version: u64, state: &str) -> Input {
    Input::ConfigEntry {
        version,
        yaml: Bytes::from(format!(
            "cluster: {{id: {CLUSTER}}}\nstate: {{heartbeatInterval: 1s, heartbeatTTL: 3s, {state}}}\n"
        )),
    }
}

// ---- region-scoped quorum ----

#[test]
fn one_big_region_cannot_outvote_the_others() {
    // DESIGN.md: "one region with many nodes cannot outvote the others". eu: us and two more,
    // all healthy; us and ap: one node each, unhealthy. 3 of 5 reports are healthy (60%), but
    // 1 of 3 regions (33%).
    let peers = [
        ("eu-2", "eu", true),
        ("eu-3", "eu", true),
        ("us-1", "us", false),
        ("ap-1", "ap", false),
    ];
    for (scope, want) in [
        (QuorumScope::Members, Some(true)),
        (QuorumScope::Regions, Some(false)),
    ] {
        let mut me = with(Policy::GlobalQuorum, 51, scope, (0, 0), "eu");
        me.handle(at(0), local("web", Some(true)));
        peers_report(&mut me, 0, &peers);
        let d = me.decision("web").unwrap();
        assert_eq!((d.healthy, d.source), (want, Source::Global), "{scope}");
        assert_eq!((d.healthy_reports, d.total_reports), (3, 5), "{scope}");
        // The region votes are filled in either scope.
        assert_eq!((d.healthy_regions, d.total_regions), (1, 3), "{scope}");
    }
}

#[test]
fn a_region_votes_by_its_own_threshold() {
    // The example: eu 2/2, us 1/2, ap 0/1 at q = 50: eu and us vote healthy.
    let mut me = with(Policy::GlobalQuorum, 50, QuorumScope::Regions, (0, 0), "eu");
    me.handle(at(0), local("web", Some(true)));
    peers_report(
        &mut me,
        0,
        &[
            ("eu-2", "eu", true),
            ("us-1", "us", true),
            ("us-2", "us", false),
            ("ap-1", "ap", false),
        ],
    );
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.healthy_regions, d.total_regions),
        (Some(true), 2, 3)
    );
    let x = me.explain("web").unwrap();
    assert_eq!(
        x.summary,
        "global-quorum by region: 2 of 3 regions healthy = 66% >= 50% (ap: 0/1, eu: 2/2, us: 1/2)"
    );
    // At q = 51, us (1 of 2 = 50%) votes unhealthy: 1 of 3 regions.
    me.handle(
        at(1),
        config_push(
            1,
            "healthPolicy: global-quorum, quorumMinPercent: 51, quorumScope: regions",
        ),
    );
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.healthy_regions, d.total_regions),
        (Some(false), 1, 3)
    );
}

#[test]
fn the_empty_region_is_a_region() {
    // Two nodes without a region (us among them) and one in eu.
    let mut me = with(Policy::GlobalQuorum, 51, QuorumScope::Regions, (0, 0), "");
    me.handle(at(0), local("web", Some(false)));
    peers_report(&mut me, 0, &[("a", "", false), ("b", "eu", true)]);
    let d = me.decision("web").unwrap();
    assert_eq!((d.healthy_regions, d.total_regions), (1, 2));
    assert_eq!(d.healthy, Some(false), "1 of 2 regions = 50% < 51%");
    let x = me.explain("web").unwrap();
    assert!(x.summary.ends_with("(\"\": 0/2, eu: 1/1)"), "{}", x.summary);
}

#[test]
fn prefer_local_and_the_fallback_group_the_other_members_by_region() {
    let mut me = with(Policy::PreferLocal, 51, QuorumScope::Regions, (0, 0), "eu");
    // No local observation: the others by region, 2 of 3 nodes healthy but 1 of 2 regions.
    peers_report(
        &mut me,
        0,
        &[("a", "us", true), ("b", "us", true), ("c", "ap", false)],
    );
    assert_eq!(verdict(&me), (Some(false), Source::Global));
    // With one, the local observation.
    me.handle(at(0), local("web", Some(true)));
    assert_eq!(verdict(&me), (Some(true), Source::Local));
    // Global quorum, nobody else reports: the local observation.
    let mut me = with(Policy::GlobalQuorum, 51, QuorumScope::Regions, (0, 0), "eu");
    me.handle(at(0), local("web", Some(true)));
    assert_eq!(verdict(&me), (Some(true), Source::FallbackLocal));
    let d = me.decision("web").unwrap();
    assert_eq!((d.healthy_regions, d.total_regions), (1, 1));
}

#[test]
fn global_any_healthy_ignores_the_scope() {
    let mut me = with(
        Policy::GlobalAnyHealthy,
        100,
        QuorumScope::Regions,
        (0, 0),
        "eu",
    );
    me.handle(at(0), local("web", Some(false)));
    peers_report(&mut me, 0, &[("a", "us", false), ("b", "us", true)]);
    assert_eq!(verdict(&me), (Some(true), Source::Global));
}

#[test]
fn a_pushed_scope_change_re_decides_every_endpoint_at_once() {
    let mut me = with(Policy::GlobalQuorum, 51, QuorumScope::Members, (0, 0), "eu");
    me.handle(at(0), local("web", Some(true)));
    peers_report(&mut me, 0, &[("a", "eu", true), ("b", "us", false)]);
    assert_eq!(verdict(&me).0, Some(true));
    drain(&mut me);
    me.handle(
        at(1),
        config_push(1, "healthPolicy: global-quorum, quorumScope: regions"),
    );
    assert_eq!(
        verdict(&me).0,
        Some(false),
        "eu healthy, us not: 1 of 2 regions"
    );
    assert_eq!(
        decisions(&drain(&mut me)),
        vec![("web".into(), Some(false))]
    );
}

#[test]
fn regions_are_bounded_and_a_member_past_the_bound_is_not_counted() {
    let mut me = with(Policy::GlobalQuorum, 51, QuorumScope::Regions, (0, 0), "r0");
    // Ours and 63 more fill the table.
    for i in 1..MAX_REGIONS {
        let p = Peer::in_region(&format!("n{i}"), 1, &format!("r{i}"));
        me.handle(at(0), p.heartbeat(1, 0, WALL_BASE_MS));
    }
    assert_eq!(me.active_members(), MAX_REGIONS);
    let late = Peer::in_region("late", 1, "one-too-many");
    me.handle(at(0), late.heartbeat(1, 0, WALL_BASE_MS));
    assert_eq!(me.stats().dropped(DropReason::RegionLimit), 1);
    assert_eq!(me.active_members(), MAX_REGIONS, "not made active");
    // A member of a region already held is fine.
    me.handle(
        at(0),
        Peer::in_region("also-r1", 1, "r1").heartbeat(1, 0, WALL_BASE_MS),
    );
    assert_eq!(me.active_members(), MAX_REGIONS + 1);
    // Once the others expire their regions are free again.
    me.handle(at(2_000), late.heartbeat(2, 0, WALL_BASE_MS + 2_000));
    assert_eq!(me.stats().dropped(DropReason::RegionLimit), 2);
    me.handle_timeout(at(3_001));
    assert_eq!(me.active_members(), 1);
    me.handle(at(3_001), late.heartbeat(3, 0, WALL_BASE_MS + 3_001));
    assert_eq!(me.active_members(), 2);
}

// ---- holds ----

#[test]
fn a_change_waits_for_its_hold_and_an_interruption_starts_it_over() {
    let mut me = with(
        Policy::LocalOnly,
        51,
        QuorumScope::Members,
        (10_000, 5_500),
        "",
    );
    me.handle(at(0), local("web", Some(true)));
    assert_eq!(verdict(&me).0, Some(true), "from unknown: at once");
    drain(&mut me);

    me.handle(at(1_000), local("web", Some(false)));
    let d = me.decision("web").unwrap();
    assert_eq!(d.healthy, Some(true), "held");
    assert_eq!(d.local, Some(false), "counts are the current ones");
    assert_eq!((d.healthy_reports, d.total_reports), (0, 1));
    assert_eq!(
        d.pending,
        Some(Pending {
            healthy: false,
            at: Instant::from_millis(6_500)
        })
    );
    assert!(
        decisions(&drain(&mut me)).is_empty(),
        "no verdict change yet"
    );
    run_until(&mut me, 1_000, 3_999);
    assert_eq!(
        me.poll_timeout_reason(),
        (Instant::from_millis(4_000), TimerReason::Heartbeat)
    );

    // Interrupted: healthy again before the hold ran out.
    me.handle(at(4_000), local("web", Some(true)));
    assert_eq!(me.decision("web").unwrap().pending, None);
    let timers = run_until(&mut me, 4_000, 7_000);
    assert!(
        timers.iter().all(|t| t.1 != TimerReason::Hold),
        "{timers:?}"
    );
    assert_eq!(verdict(&me).0, Some(true));

    // Unhealthy again: the hold starts over.
    me.handle(at(7_000), local("web", Some(false)));
    assert_eq!(
        me.decision("web").unwrap().pending.map(|p| p.at),
        Some(Instant::from_millis(12_500))
    );
    run_until(&mut me, 7_000, 12_499);
    assert_eq!(verdict(&me).0, Some(true), "a millisecond early");
    drain(&mut me);
    assert_eq!(
        run_until(&mut me, 12_499, 12_500),
        vec![(Instant::from_millis(12_500), TimerReason::Hold)]
    );
    let d = me.decision("web").unwrap();
    assert_eq!((d.healthy, d.pending), (Some(false), None));
    assert_eq!(
        decisions(&drain(&mut me)),
        vec![("web".into(), Some(false))]
    );

    // Back up: holdUp.
    me.handle(at(13_000), local("web", Some(true)));
    assert_eq!(
        me.decision("web").unwrap().pending,
        Some(Pending {
            healthy: true,
            at: Instant::from_millis(23_000)
        })
    );
}

#[test]
fn changes_from_or_to_unknown_are_immediate() {
    let mut me = with(
        Policy::PreferLocal,
        51,
        QuorumScope::Members,
        (60_000, 60_000),
        "",
    );
    me.handle(at(0), local("web", Some(false)));
    assert_eq!(verdict(&me), (Some(false), Source::Local));
    // Pending up...
    me.handle(at(1_000), local("web", Some(true)));
    assert!(me.decision("web").unwrap().pending.is_some());
    // ... then nobody knows: unknown at once, nothing pending.
    me.handle(at(2_000), local("web", None));
    assert_eq!(me.decision("web").unwrap(), Decision::UNKNOWN);
    assert_eq!(me.poll_timeout_reason().1, TimerReason::Heartbeat);
    // From unknown: at once.
    me.handle(at(3_000), local("web", Some(true)));
    assert_eq!(verdict(&me), (Some(true), Source::Local));
}

#[test]
fn a_member_expiring_is_a_change_like_any_other() {
    // Global quorum: our healthy observation and a peer's unhealthy one, 1 of 2 < 51%.
    let mut me = with(
        Policy::GlobalQuorum,
        51,
        QuorumScope::Members,
        (5_000, 0),
        "",
    );
    me.handle(at(0), local("web", Some(true)));
    peers_report(&mut me, 0, &[("a", "", false)]);
    assert_eq!(verdict(&me), (Some(false), Source::Global));
    // The peer expires at 3 s (+1 ns): the rule says healthy (fallback), held for 5 s.
    let wake = Instant::from_nanos(3_000_000_001);
    me.handle_timeout(gslb_state_core::Now::new(wake, at(3_001).wall));
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.source, d.pending.map(|p| p.at)),
        (
            Some(false),
            Source::FallbackLocal,
            Some(wake + Duration::from_secs(5))
        )
    );
    me.handle_timeout(at(8_001));
    assert_eq!(verdict(&me), (Some(true), Source::FallbackLocal));
}

#[test]
fn a_shortened_hold_pushed_at_run_time_takes_effect_at_once() {
    let mut me = with(Policy::LocalOnly, 51, QuorumScope::Members, (0, 60_000), "");
    me.handle(at(0), local("web", Some(true)));
    me.handle(at(0), local("db", Some(true)));
    me.handle(at(1_000), local("web", Some(false)));
    me.handle(at(8_000), local("db", Some(false)));
    drain(&mut me);
    // holdDown 5 s: web (pending since 1 s) is due, db (since 8 s) not before 13 s.
    me.handle(
        at(10_000),
        config_push(1, "healthPolicy: local-only, holdDown: 5s"),
    );
    assert_eq!(verdict(&me).0, Some(false), "web's hold is over");
    let db = me.decision("db").unwrap();
    assert_eq!(
        (db.healthy, db.pending.map(|p| p.at)),
        (Some(true), Some(Instant::from_millis(13_000)))
    );
    assert_eq!(
        decisions(&drain(&mut me)),
        vec![("web".into(), Some(false))]
    );
    // Lengthened again: db waits longer.
    me.handle(
        at(11_000),
        config_push(2, "healthPolicy: local-only, holdDown: 30s"),
    );
    assert_eq!(
        me.decision("db").unwrap().pending.map(|p| p.at),
        Some(Instant::from_millis(38_000))
    );
    // No hold at all: at once.
    me.handle(at(12_000), config_push(3, "healthPolicy: local-only"));
    assert_eq!(me.decision("db").unwrap().healthy, Some(false));
    assert_eq!(decisions(&drain(&mut me)), vec![("db".into(), Some(false))]);
}

#[test]
fn many_pending_holds_are_cheap() {
    let mut c = node_config("me", Policy::LocalOnly, 51);
    c.state.hold_down = Duration::from_secs(10);
    let mut me = Node::new(c, at(0)).unwrap();
    const N: usize = 20_000;
    for i in 0..N {
        me.handle(at(0), local(&format!("e{i}"), Some(true)));
    }
    // Each endpoint flaps many times, ending unhealthy (pending) at 21 ms.
    for round in 0..=20u64 {
        for i in 0..N {
            me.handle(at(1 + round), local(&format!("e{i}"), Some(round % 2 == 1)));
        }
    }
    drain(&mut me);
    assert!(me.decisions().all(|(_, d)| d.healthy == Some(true)));
    me.handle_timeout(at(21 + 9_999));
    assert!(me.decisions().all(|(_, d)| d.healthy == Some(true)));
    me.handle_timeout(at(21 + 10_000));
    assert!(me.decisions().all(|(_, d)| d.healthy == Some(false)));
    assert_eq!(drain(&mut me).len(), N);
}

// ---- explanations ----

#[test]
fn explanations_say_who_counts_and_why() {
    let mut me = with(Policy::GlobalQuorum, 51, QuorumScope::Members, (0, 0), "eu");
    me.handle(at(0), local("web", Some(true)));
    peers_report(&mut me, 0, &[("a", "eu", true), ("b", "us", false)]);
    // c: inactive (heard 4 s before); d: no report; e: withdrawn; f: left.
    let c = Peer::in_region("c", 1, "ap");
    me.handle(at(0), c.batch(1, 1, &[("web", 1, Healthy)]));
    me.handle(at(0), c.heartbeat(1, 1, WALL_BASE_MS));
    let refresh = |me: &mut Node, ms: u64| {
        for (id, region) in [("a", "eu"), ("b", "us"), ("d", "us"), ("e", "eu")] {
            let p = Peer::in_region(id, 1, region);
            me.handle(at(ms), p.heartbeat(2 + ms / 1000, 1, WALL_BASE_MS + ms));
        }
    };
    let e = Peer::in_region("e", 1, "eu");
    me.handle(at(0), e.batch(1, 1, &[("web", 1, Withdrawn)]));
    let f = Peer::in_region("f", 1, "eu");
    me.handle(at(0), f.heartbeat(1, 0, WALL_BASE_MS));
    me.handle(at(0), f.leave(WALL_BASE_MS));
    refresh(&mut me, 2_000);
    refresh(&mut me, 4_000);
    me.handle_timeout(at(4_000));
    let x = me.explain("web").unwrap();
    assert_eq!(x.decision, me.decision("web").unwrap());
    assert_eq!(x.summary, "global-quorum: 2 of 3 healthy = 66% >= 51%");
    let parts: Vec<(&str, Said, Part)> = x
        .members
        .iter()
        .map(|m| (m.node.as_str(), m.said, m.part))
        .collect();
    assert_eq!(
        parts,
        vec![
            ("me", Said::Healthy, Part::Vote),
            ("a", Said::Healthy, Part::Vote),
            ("b", Said::Unhealthy, Part::Vote),
            ("c", Said::Healthy, Part::Inactive),
            ("d", Said::Nothing, Part::NoReport),
            ("e", Said::Withdrawn, Part::Withdrawn),
            ("f", Said::Nothing, Part::Left),
        ]
    );
    assert!(x.members[0].local && x.members[0].age.is_none());
    assert_eq!(x.members[1].age, Some(Duration::ZERO), "heard just now");
    assert_eq!(x.members[3].age, Some(Duration::from_secs(4)));
    assert_eq!(x.members[2].region, "us");
    assert!(x.members[1].incarnation == 1 && x.members[0].incarnation > 1);
    let text = x.to_string();
    assert!(
        text.starts_with(
            "web: healthy (source global; 2 of 3 reports healthy; 1 of 2 regions healthy)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  rule: global-quorum: 2 of 3 healthy = 66% >= 51%\n"),
        "{text}"
    );
    assert!(
        text.contains("    c (region ap, incarnation 1): healthy, not counted: inactive"),
        "{text}"
    );
    assert!(
        !text.contains("  regions:"),
        "region votes are shown under regions scope: {text}"
    );
    assert!(me.explain("never-heard-of").is_none());
}

#[test]
fn explanations_name_each_policys_rule() {
    let cases: [(Policy, QuorumScope, Option<bool>, &str); 10] = [
        (
            Policy::LocalOnly,
            QuorumScope::Members,
            Some(true),
            "local-only: local observation (healthy)",
        ),
        (
            Policy::LocalOnly,
            QuorumScope::Members,
            None,
            "local-only: no local observation (unknown)",
        ),
        (
            Policy::PreferLocal,
            QuorumScope::Members,
            Some(false),
            "prefer-local: local observation (unhealthy)",
        ),
        (
            Policy::PreferLocal,
            QuorumScope::Members,
            None,
            "prefer-local: no local observation; other members: 1 of 2 healthy = 50% < 51%",
        ),
        (
            Policy::PreferLocal,
            QuorumScope::Regions,
            None,
            "prefer-local: no local observation; other members by region: 1 of 2 regions healthy = 50% < 51% (eu: 1/1, us: 0/1)",
        ),
        (
            Policy::GlobalAnyHealthy,
            QuorumScope::Members,
            Some(false),
            "global-any-healthy: 1 of 3 healthy (at least one is)",
        ),
        (
            Policy::GlobalQuorum,
            QuorumScope::Members,
            Some(true),
            "global-quorum: 2 of 3 healthy = 66% >= 51%",
        ),
        (
            Policy::GlobalQuorum,
            QuorumScope::Regions,
            Some(true),
            "global-quorum by region: 1 of 2 regions healthy = 50% < 51% (eu: 2/2, us: 0/1)",
        ),
        (
            Policy::GlobalQuorum,
            QuorumScope::Members,
            None,
            "global-quorum: 1 of 2 healthy = 50% < 51%",
        ),
        (
            Policy::GlobalAnyHealthy,
            QuorumScope::Regions,
            None,
            "global-any-healthy: 1 of 2 healthy (at least one is)",
        ),
    ];
    for (policy, scope, obs, want) in cases {
        let mut me = with(policy, 51, scope, (0, 0), "eu");
        if let Some(h) = obs {
            me.handle(at(0), local("web", Some(h)));
        }
        peers_report(&mut me, 0, &[("a", "eu", true), ("b", "us", false)]);
        let x = me.explain("web").unwrap();
        assert_eq!(x.summary, want, "{policy} {scope} {obs:?}");
        let parts: Vec<Part> = x.members.iter().map(|m| m.part).collect();
        let remote = match (policy, obs) {
            (Policy::LocalOnly, _) | (Policy::PreferLocal, Some(_)) => Part::NotUsed,
            _ => Part::Vote,
        };
        let local_part = match (policy, obs) {
            (_, None) => Part::NoReport,
            (Policy::LocalOnly | Policy::PreferLocal, Some(_)) => Part::LocalVerdict,
            _ => Part::Vote,
        };
        assert_eq!(
            parts,
            vec![local_part, remote, remote],
            "{policy} {scope} {obs:?}"
        );
        if scope == QuorumScope::Regions {
            assert!(x.to_string().contains("  regions: eu "), "{x}");
        }
    }
    // The fallback, and nobody at all.
    for policy in [Policy::GlobalQuorum, Policy::GlobalAnyHealthy] {
        let mut me = with(policy, 51, QuorumScope::Members, (0, 0), "eu");
        me.handle(at(0), local("web", Some(true)));
        let x = me.explain("web").unwrap();
        assert_eq!(
            x.summary,
            format!(
                "{policy}: no other active member reports it; local observation (fallback-local: healthy)"
            )
        );
        assert_eq!(x.members[0].part, Part::Fallback);
        me.handle(at(0), local("web", None));
        let x = me.explain("web").unwrap();
        assert_eq!(x.summary, format!("{policy}: no reports (unknown)"));
        assert_eq!(
            (x.members[0].said, x.members[0].part),
            (Said::Withdrawn, Part::Withdrawn)
        );
    }
    let mut me = with(Policy::PreferLocal, 51, QuorumScope::Members, (0, 0), "eu");
    me.handle(at(0), local("web", Some(true)));
    me.handle(at(0), local("web", None));
    assert_eq!(
        me.explain("web").unwrap().summary,
        "prefer-local: no observation from anyone (unknown)"
    );
}

#[test]
fn explanations_show_the_pending_change() {
    let mut me = with(
        Policy::LocalOnly,
        51,
        QuorumScope::Members,
        (0, 30_000),
        "eu",
    );
    me.handle(at(0), local("web", Some(true)));
    me.handle(at(1_000), local("web", Some(false)));
    me.handle_timeout(at(3_500));
    let x = me.explain("web").unwrap();
    assert_eq!(
        (x.decision.healthy, x.rule_verdict),
        (Some(true), Some(false))
    );
    assert_eq!(
        x.decision.pending,
        Some(Pending {
            healthy: false,
            at: Instant::from_millis(31_000)
        })
    );
    let text = x.to_string();
    assert!(
        text.contains("  pending: the rule says unhealthy; healthy is held until that has lasted holdDown 30s (in 27s 500ms)\n"),
        "{text}"
    );
}

#[test]
fn many_regions_vote_like_few() {
    // 7 regions (more than kept inline): r0 (ours) .. r6, region i with i + 1 nodes of which
    // the first (i + 1) / 2 say healthy.
    let mut me = with(Policy::GlobalQuorum, 50, QuorumScope::Regions, (0, 0), "r0");
    me.handle(at(0), local("web", Some(true)));
    let mut peers = Vec::new();
    for region in 1..7u64 {
        for k in 0..=region {
            let healthy = k < region.div_ceil(2);
            peers.push((format!("n{region}-{k}"), format!("r{region}"), healthy));
        }
    }
    let list: Vec<(&str, &str, bool)> = peers
        .iter()
        .map(|(n, r, h)| (n.as_str(), r.as_str(), *h))
        .collect();
    peers_report(&mut me, 0, &list);
    // Region i: ceil(i/2) of i+1 healthy: r1 1/2, r2 1/3, r3 2/4, r4 2/5, r5 3/6, r6 3/7;
    // at 50%: r0 (1/1), r1, r3, r5 healthy; 4 of 7 = 57% >= 50%.
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.healthy_regions, d.total_regions),
        (Some(true), 4, 7)
    );
    let x = me.explain("web").unwrap();
    assert_eq!(
        x.summary,
        "global-quorum by region: 4 of 7 regions healthy = 57% >= 50% (r0: 1/1, r1: 1/2, r2: 1/3, r3: 2/4, r4: 2/5, r5: 3/6, r6: 3/7)"
    );
    // A higher threshold re-judges every region: at 51% only r0 is healthy.
    me.handle(
        at(1),
        config_push(
            1,
            "healthPolicy: global-quorum, quorumMinPercent: 51, quorumScope: regions",
        ),
    );
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.healthy_regions, d.total_regions),
        (Some(false), 1, 7)
    );
    // Everyone expires: their regions are freed; new ones take their ids.
    me.handle_timeout(at(3_001));
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.source, d.total_regions),
        (Some(true), Source::FallbackLocal, 1)
    );
    peers_report(
        &mut me,
        3_001,
        &[("x", "elsewhere", false), ("y", "r9", true)],
    );
    let d = me.decision("web").unwrap();
    assert_eq!((d.healthy_regions, d.total_regions), (2, 3));
}
