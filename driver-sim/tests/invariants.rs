//! The invariants of `gslb-sim check`: they hold on seeds, and each checker does catch what it
//! is there to catch.

use gslb_state_core::policy::{Pending, QuorumScope};
use gslb_state_core::{Decision, DownReason};
use gslb_state_sim::invariants::{self, CheckConfig};
use gslb_state_sim::scenario::{NS_PER_MS, Scenario};
use gslb_state_sim::trace::Record;
use gslb_state_sim::world::{DownEvent, Outcome, RunOptions};
use gslb_state_sim::{run, schedule, yaml};

fn options(g: &schedule::Generated) -> RunOptions {
    RunOptions {
        track_expiry: true,
        sample_every_ns: g.scenario.state.heartbeat_interval.as_nanos() as u64,
        probes_ns: vec![g.settle_ns, g.scenario.duration_ns],
        quiet: false,
    }
}

#[test]
fn every_invariant_holds_on_these_seeds() {
    let report = invariants::check_many(
        &CheckConfig {
            first_seed: 1,
            seeds: 12,
            nodes: 5,
            endpoints: 3,
        },
        false,
    );
    assert!(report.violation.is_none(), "{:?}", report.violation);
    assert_eq!(report.seeds_run, 12);
    assert_eq!(report.runs, 60);
    assert!(report.deliveries > 10_000, "{}", report.deliveries);
}

#[test]
fn agreement_catches_a_node_that_decides_differently() {
    let g = schedule::generate(3, 5, 3);
    let mut o = run(&g.scenario, options(&g));
    invariants::agreement(&g.scenario, &o).unwrap();
    let probe = &mut o.probes[0];
    let node = probe.nodes.iter_mut().flatten().next().unwrap();
    let (_, d) = node
        .decisions
        .iter_mut()
        .next()
        .expect("an endpoint is known");
    d.healthy = Some(d.healthy != Some(true));
    let e = invariants::agreement(&g.scenario, &o).unwrap_err();
    assert!(e.contains("decides"), "{e}");
    // A node that misses a member.
    let mut o = run(&g.scenario, options(&g));
    o.probes[1]
        .nodes
        .iter_mut()
        .flatten()
        .next()
        .unwrap()
        .active
        .pop();
    let e = invariants::agreement(&g.scenario, &o).unwrap_err();
    assert!(e.contains("active members"), "{e}");
    // Within the snapshot window of that node (as run B is checked) it is not held to it.
    let (node, t) = (
        o.probes[1].nodes.iter().position(Option::is_some).unwrap(),
        o.probes[1].t_ns,
    );
    let window = invariants::silence_bound_ns(&g.scenario);
    invariants::agreement_outside_snapshot_windows(&g.scenario, &o, window).unwrap_err();
    let life = o
        .lives
        .iter_mut()
        .rfind(|l| l.node as usize == node)
        .unwrap();
    life.snapshot_ns = Some(t - window / 2);
    invariants::agreement_outside_snapshot_windows(&g.scenario, &o, window).unwrap();
}

#[test]
fn expiry_bounds_catch_early_and_late_expiry() {
    let g = schedule::generate(5, 5, 3);
    let o = run(&g.scenario, options(&g));
    invariants::expiry_bounds(&g.scenario, &o).unwrap();
    let ttl = g.scenario.state.heartbeat_ttl.as_nanos() as u64;
    // Too early: dropped before TTL after the last heartbeat.
    let mut early = o.clone();
    early.downs.push(DownEvent {
        t_ns: 10_000 * NS_PER_MS,
        observer: 0,
        member: "n1".into(),
        reason: DownReason::Expired,
        last_heartbeat_ns: Some(10_000 * NS_PER_MS - ttl / 2),
    });
    let e = invariants::expiry_bounds(&g.scenario, &early).unwrap_err();
    assert!(e.contains("less than TTL"), "{e}");
    // Too late: a crashed node still counted at TTL + interval + largest delay after it.
    let mut sc = gslb_state_sim::Scenario::new(
        1,
        std::time::Duration::from_secs(20),
        g.scenario.state.clone(),
        &["a", "b", "c"],
    );
    sc.at(
        std::time::Duration::from_secs(5),
        gslb_state_sim::scenario::EventKind::Crash(2),
    );
    let mut opts = options(&g);
    opts.probes_ns.clear();
    let o = run(&sc, opts);
    invariants::expiry_bounds(&sc, &o).unwrap();
    let bound = ttl + g.scenario.state.heartbeat_interval.as_nanos() as u64 + sc.max_delay_ns();
    let mut late = o.clone();
    late.trace.records.push(Record::Members {
        t_ns: 5_000 * NS_PER_MS + bound - 1,
        node: 0,
        active: vec!["a".into(), "b".into(), "c".into()],
    });
    late.trace.records.sort_by_key(Record::t_ns);
    let e = invariants::expiry_bounds(&sc, &late).unwrap_err();
    assert!(e.contains("c crashed"), "{e}");
}

#[test]
fn clock_invariance_catches_a_changed_decision_and_spares_the_snapshot_window() {
    let g = schedule::generate(2, 5, 3);
    let a = run(&g.scenario, options(&g));
    let b = run(&schedule::with_offsets(&g.scenario), options(&g));
    invariants::clock_invariance(&g.scenario, &a, &b).unwrap();
    let ttl = g.scenario.state.heartbeat_ttl.as_nanos() as u64;
    // Flip a decision well after every snapshot window of its node.
    let mut flipped = b.clone();
    let last_snapshot = |node: u32| {
        b.lives
            .iter()
            .filter(|l| l.node == node)
            .filter_map(|l| l.snapshot_ns)
            .max()
            .unwrap_or(0)
    };
    let i = flipped
        .trace
        .records
        .iter()
        .position(|r| matches!(r, Record::Decision { t_ns, node, .. } if *t_ns > last_snapshot(*node) + ttl))
        .expect("a decision after the snapshot windows");
    if let Record::Decision { decision, .. } = &mut flipped.trace.records[i] {
        decision.healthy = Some(decision.healthy != Some(true));
    }
    let e = invariants::clock_invariance(&g.scenario, &a, &flipped).unwrap_err();
    assert!(e.contains("with offsets"), "{e}");
    // The same flip inside a snapshot window is allowed.
    let mut in_window = b.clone();
    let first_life = in_window.lives[0].clone();
    let t = first_life.snapshot_ns.unwrap() + ttl / 2;
    in_window.trace.records.push(Record::Decision {
        t_ns: t,
        node: first_life.node,
        endpoint: "ep0".into(),
        decision: gslb_state_core::Decision {
            healthy: Some(true),
            source: gslb_state_core::Source::Global,
            healthy_reports: 9,
            total_reports: 9,
            local: None,
            ..gslb_state_core::Decision::UNKNOWN
        },
    });
    in_window.trace.records.sort_by_key(Record::t_ns);
    // Its effect lasts until the next decision of that endpoint, which may be outside the
    // window; only assert that the instant itself is not reported.
    if let Err(e) = invariants::clock_invariance(&g.scenario, &a, &in_window) {
        assert!(!e.contains(&gslb_state_sim::scenario::fmt_time(t)), "{e}");
    }
}

#[test]
fn the_replay_command_names_the_seed_and_the_shape() {
    assert_eq!(
        invariants::replay_command(1234, 5, 3),
        "cargo run --release -p gslb-state-sim -- check --seeds 1 --first-seed 1234 --nodes 5 --endpoints 3"
    );
}

/// The options `gslb-sim check` runs with, for a scenario file.
fn tracked() -> RunOptions {
    RunOptions {
        track_expiry: true,
        ..RunOptions::default()
    }
}

fn example(text: &str) -> (Scenario, Outcome) {
    let file = yaml::parse(text).unwrap();
    let o = run(&file.scenario, tracked());
    for x in &o.expects {
        assert!(
            x.ok,
            "expectation {} failed: {} (saw {})",
            x.index, x.why, x.seen
        );
    }
    (file.scenario, o)
}

const LATE_JOINER: &str = include_str!("../../examples/late-joiner.yaml");
const CLOCK_BEHIND: &str = include_str!("../../examples/restart-clock-behind.yaml");

/// Replaces every membership record of `node` from `from_ns` on by `active` at `from_ns`,
/// then `after` at `until_ns`: what the node's membership would have been.
fn rewrite_members(
    o: &mut Outcome,
    node: u32,
    from_ns: u64,
    active: &[&str],
    until_ns: u64,
    after: &[&str],
) {
    o.trace.records.retain(
        |r| !matches!(r, Record::Members { t_ns, node: n, .. } if *n == node && *t_ns >= from_ns),
    );
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    o.trace.records.push(Record::Members {
        t_ns: from_ns,
        node,
        active: ids(active),
    });
    o.trace.records.push(Record::Members {
        t_ns: until_ns,
        node,
        active: ids(after),
    });
    o.trace.records.sort_by_key(Record::t_ns);
}

#[test]
fn count_freshness_holds_for_a_late_joiner_and_catches_the_old_snapshot_clamp() {
    // The issue's case: 1 s / 10 s, eu-1 crashes at 10 s, ap-1 starts at 16 s with its
    // monotonic clock at 0 and reads eu-1's record from the snapshot.
    let (s, o) = example(LATE_JOINER);
    invariants::count_freshness(&s, &o).unwrap();
    let eu1 = s.node_index("eu-1").unwrap();
    let ap1 = s.node_index("ap-1").unwrap() as u32;
    let last_sent = *o.heartbeats_sent[eu1].last().unwrap();
    assert!(last_sent < 10_000 * NS_PER_MS);
    // The old core's symptom: "received = now - age" clamped at the reader's clock origin, so
    // ap-1 counted eu-1 until TTL after ap-1 started (26 s), 16 s after the crash.
    let mut old = o.clone();
    let started = 16_000 * NS_PER_MS;
    rewrite_members(
        &mut old,
        ap1,
        started + 10 * NS_PER_MS,
        &["ap-1", "eu-1", "us-1", "us-2"],
        started + 10_000 * NS_PER_MS,
        &["ap-1", "us-1", "us-2"],
    );
    let e = invariants::count_freshness(&s, &old).unwrap_err();
    assert!(e.contains("ap-1 counts eu-1"), "{e}");
    assert!(e.contains("sent no heartbeat within"), "{e}");
    // Counting it up to the bound is allowed; one nanosecond later is not.
    let bound = invariants::silence_bound_ns(&s);
    let mut edge = o.clone();
    rewrite_members(
        &mut edge,
        ap1,
        started + 10 * NS_PER_MS,
        &["ap-1", "eu-1", "us-1", "us-2"],
        last_sent + bound + 1,
        &["ap-1", "us-1", "us-2"],
    );
    invariants::count_freshness(&s, &edge).unwrap();
    rewrite_members(
        &mut edge,
        ap1,
        started + 10 * NS_PER_MS,
        &["ap-1", "eu-1", "us-1", "us-2"],
        last_sent + bound + 2,
        &["ap-1", "us-1", "us-2"],
    );
    let e = invariants::count_freshness(&s, &edge).unwrap_err();
    let at = gslb_state_sim::scenario::fmt_time(last_sent + bound + 1);
    assert!(e.starts_with(&format!("at {at}: ap-1 counts eu-1")), "{e}");
}

#[test]
fn rejoin_holds_after_a_clock_step_back_and_catches_a_node_never_heard_again() {
    // The issue's case: us-1 restarts with its wall clock an hour behind.
    let (s, o) = example(CLOCK_BEHIND);
    invariants::rejoin_after_restart(&s, &o).unwrap();
    let us1 = s.node_index("us-1").unwrap() as u32;
    let restart = o.lives.iter().filter(|l| l.node == us1).nth(1).unwrap();
    assert_eq!(restart.started_ns, 14_000 * NS_PER_MS);
    // The old core's symptom: the new life's incarnation is below the old one, so the peers
    // dropped its heartbeats as stale and never counted it again.
    let mut old = o.clone();
    for peer in ["eu-1", "ap-1"] {
        let p = s.node_index(peer).unwrap() as u32;
        rewrite_members(
            &mut old,
            p,
            restart.started_ns,
            &["ap-1", "eu-1"],
            s.duration_ns,
            &["ap-1", "eu-1"],
        );
    }
    let e = invariants::rejoin_after_restart(&s, &old).unwrap_err();
    assert!(e.contains("us-1 restarted at 14.000s"), "{e}");
    assert!(e.contains("does not count it"), "{e}");
    // Only ap-1 misses it: still a violation, unless ap-1 was cut off from the broker
    // meanwhile (then nothing is asked of it).
    let ap1 = s.node_index("ap-1").unwrap();
    let mut ap_only = o.clone();
    rewrite_members(
        &mut ap_only,
        ap1 as u32,
        restart.started_ns,
        &["ap-1", "eu-1"],
        s.duration_ns,
        &["ap-1", "eu-1"],
    );
    let e = invariants::rejoin_after_restart(&s, &ap_only).unwrap_err();
    assert!(e.contains("but ap-1 does not count it"), "{e}");
    let mut cut = s.clone();
    cut.at(
        std::time::Duration::from_secs(15),
        gslb_state_sim::scenario::EventKind::Isolate(ap1),
    );
    invariants::rejoin_after_restart(&cut, &ap_only).unwrap();
}

#[test]
fn the_issues_two_cases_hold_over_the_run_of_every_invariant() {
    // Both examples, with every invariant that applies to a single run.
    for text in [LATE_JOINER, CLOCK_BEHIND] {
        let (s, o) = example(text);
        invariants::expiry_bounds(&s, &o).unwrap();
        invariants::count_freshness(&s, &o).unwrap();
        invariants::rejoin_after_restart(&s, &o).unwrap();
    }
}

/// A regression test of a core bug the rejoin invariant found (see the scenario's
/// description): both the expectation and the invariant failed before the fix.
#[test]
fn a_restart_with_the_clock_behind_is_heard_within_the_bound() {
    let file = yaml::parse(include_str!(
        "data/restart-clock-behind-raises-incarnation.yaml"
    ))
    .unwrap();
    assert!(file.name.unwrap().contains("raises its incarnation"));
    let o = run(&file.scenario, tracked());
    invariants::rejoin_after_restart(&file.scenario, &o).unwrap();
    assert!(o.expects.iter().all(|x| x.ok), "{:?}", o.expects);
}

const HOLD_DOWN: &str = include_str!("../../examples/hold-down.yaml");

/// The index in `o`'s trace of the decision record of `node` on `endpoint` at `t_ms`.
fn decision_at(o: &Outcome, node: u32, endpoint: &str, t_ms: u64) -> usize {
    o.trace
        .records
        .iter()
        .position(|r| {
            matches!(r, Record::Decision { t_ns, node: n, endpoint: e, .. }
                if *n == node && e == endpoint && *t_ns / NS_PER_MS == t_ms)
        })
        .unwrap_or_else(|| panic!("no decision of node {node} on {endpoint} at {t_ms} ms"))
}

fn decision_mut(o: &mut Outcome, i: usize) -> &mut Decision {
    match &mut o.trace.records[i] {
        Record::Decision { decision, .. } => decision,
        _ => unreachable!(),
    }
}

#[test]
fn holds_catch_an_early_change_a_late_one_and_a_change_not_pending() {
    // us-1 (node 1): the rule says unhealthy from 20.006s, holdDown 5s: down at 25.006s.
    let (s, o) = example(HOLD_DOWN);
    invariants::holds_respected(&s, &o).unwrap();
    let pending = decision_at(&o, 1, "web", 20_006);
    let change = decision_at(&o, 1, "web", 25_006);
    let d = match &o.trace.records[change] {
        Record::Decision { decision, .. } => *decision,
        _ => unreachable!(),
    };
    assert_eq!((d.healthy, d.pending), (Some(false), None));

    // Taking effect a second early.
    let mut early = o.clone();
    if let Record::Decision { t_ns, .. } = &mut early.trace.records[change] {
        *t_ns -= 1_000 * NS_PER_MS;
    }
    early.trace.records.sort_by_key(Record::t_ns);
    let e = invariants::holds_respected(&s, &early).unwrap_err();
    assert!(
        e.contains("at 24.006s") && e.contains("due at 25.006s"),
        "{e}"
    );

    // Never taking effect: still pending at the next record of us-1 (30s).
    let mut never = o.clone();
    never.trace.records.remove(change);
    let e = invariants::holds_respected(&s, &never).unwrap_err();
    assert!(
        e.contains("due at 25.006s but had not taken effect by 30.000s"),
        "{e}"
    );

    // Held without saying so.
    let mut silent = o.clone();
    decision_mut(&mut silent, pending).pending = None;
    let e = invariants::holds_respected(&s, &silent).unwrap_err();
    assert!(e.contains("with no change pending"), "{e}");

    // Pending towards the wrong instant: the wait must run from when the rule turned.
    let mut wrong = o.clone();
    let p = decision_mut(&mut wrong, pending).pending.as_mut().unwrap();
    p.at = gslb_state_core::Instant::from_nanos(p.at.as_nanos() - NS_PER_MS);
    let e = invariants::holds_respected(&s, &wrong).unwrap_err();
    assert!(e.contains("since 20.006s"), "{e}");

    // The same trace under no hold at all: nothing may be held.
    let mut no_holds = s.clone();
    no_holds.state.hold_down = std::time::Duration::ZERO;
    no_holds.state.hold_up = std::time::Duration::ZERO;
    let e = invariants::holds_respected(&no_holds, &o).unwrap_err();
    assert!(e.contains("there is no holdDown"), "{e}");

    // Without holds, every change shows the rule's verdict.
    let (gs, go) = example(include_str!("../../examples/global-quorum.yaml"));
    invariants::holds_respected(&gs, &go).unwrap();
    let mut flipped = go.clone();
    let i = flipped
        .trace
        .records
        .iter()
        .rposition(|r| matches!(r, Record::Decision { decision, .. } if decision.healthy.is_some()))
        .unwrap();
    let d = decision_mut(&mut flipped, i);
    d.healthy = d.healthy.map(|h| !h);
    let e = invariants::holds_respected(&gs, &flipped).unwrap_err();
    assert!(e.contains("the rule says"), "{e}");
}

/// The first seed from `from` whose scenario satisfies `want`.
fn seed_where(from: u64, want: impl Fn(&Scenario) -> bool) -> schedule::Generated {
    (from..from + 500)
        .map(|seed| schedule::generate(seed, 5, 3))
        .find(|g| want(&g.scenario))
        .expect("some seed has it")
}

#[test]
fn zero_holds_written_out_give_the_same_trace_and_a_short_hold_does_not() {
    let g = seed_where(1, |s| {
        s.state.holds().is_none() && s.state.quorum_scope == QuorumScope::Members
    });
    let explicit = invariants::with_explicit_state(&g.scenario).unwrap();
    assert_eq!(explicit, g.scenario);
    let a = run(&g.scenario, options(&g));
    let b = run(&explicit, options(&g));
    invariants::identical_traces(&a, &b).unwrap();
    // A 300 ms holdDown written out is read as such, and shows in the trace.
    let mut held = g.scenario.clone();
    held.state.hold_down = std::time::Duration::from_millis(300);
    let held = invariants::with_explicit_state(&held).unwrap();
    assert_eq!(held.state.hold_down, std::time::Duration::from_millis(300));
    let c = run(&held, options(&g));
    let e = invariants::identical_traces(&a, &c).unwrap_err();
    assert!(e.contains("first at JSON line"), "{e}");
}

#[test]
fn agreement_checks_region_counts_and_accepts_only_a_pending_change_towards_the_rule() {
    let g = seed_where(1, |s| {
        s.state.quorum_scope == QuorumScope::Regions && s.state.holds().is_none()
    });
    let o = run(&g.scenario, options(&g));
    invariants::agreement(&g.scenario, &o).unwrap();
    let mut wrong = o.clone();
    let (_, d) = wrong.probes[0]
        .nodes
        .iter_mut()
        .flatten()
        .find_map(|n| n.decisions.iter_mut().next())
        .expect("a decision");
    d.healthy_regions += 1;
    let e = invariants::agreement(&g.scenario, &wrong).unwrap_err();
    assert!(e.contains("regions healthy"), "{e}");

    let g = seed_where(1, |s| !s.state.holds().is_none());
    let o = run(&g.scenario, options(&g));
    invariants::agreement(&g.scenario, &o).unwrap();
    // A change pending towards the verdict already shown is not the rule's verdict.
    let mut wrong = o.clone();
    let (_, d) = wrong.probes[1]
        .nodes
        .iter_mut()
        .flatten()
        .find_map(|n| {
            n.decisions
                .iter_mut()
                .find(|(_, d)| d.healthy.is_some() && d.pending.is_none())
        })
        .expect("a known decision");
    d.pending = Some(Pending {
        healthy: d.healthy.unwrap(),
        at: gslb_state_core::Instant::from_nanos(0),
    });
    let e = invariants::agreement(&g.scenario, &wrong).unwrap_err();
    assert!(e.contains("with a change pending"), "{e}");
    // One towards the other verdict stands for the rule's verdict: the wrong one here.
    let mut wrong = o.clone();
    let (_, d) = wrong.probes[1]
        .nodes
        .iter_mut()
        .flatten()
        .find_map(|n| {
            n.decisions
                .iter_mut()
                .find(|(_, d)| d.healthy.is_some() && d.pending.is_none())
        })
        .expect("a known decision");
    d.pending = Some(Pending {
        healthy: !d.healthy.unwrap(),
        at: gslb_state_core::Instant::from_nanos(0),
    });
    let e = invariants::agreement(&g.scenario, &wrong).unwrap_err();
    assert!(e.contains("decides"), "{e}");
}

#[test]
fn random_runs_weigh_by_region_and_hold_changes() {
    let (mut regions, mut holds, mut pending_records) = (0, 0, 0);
    for seed in 1..=30 {
        let g = schedule::generate(seed, 5, 3);
        regions += usize::from(g.scenario.state.quorum_scope == QuorumScope::Regions);
        if g.scenario.state.holds().is_none() {
            continue;
        }
        holds += 1;
        let o = run(&g.scenario, options(&g));
        pending_records += o
            .trace
            .records
            .iter()
            .filter(
                |r| matches!(r, Record::Decision { decision, .. } if decision.pending.is_some()),
            )
            .count();
        invariants::holds_respected(&g.scenario, &o).unwrap();
    }
    assert!(regions >= 5 && holds >= 5, "{regions} {holds}");
    assert!(pending_records >= 20, "{pending_records}");
}
