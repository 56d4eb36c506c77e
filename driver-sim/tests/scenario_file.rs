//! The scenario format: the issue's example as written, and errors that name the key and line.

use std::time::Duration;

use gslb_state_core::policy::QuorumScope;
use gslb_state_core::{Policy, Source};
use gslb_state_sim::scenario::{EventKind, NS_PER_MS};
use gslb_state_sim::yaml::{self, ScenarioError};

const ISSUE: &str = include_str!("data/issue-scenario.yaml");

fn err(text: &str) -> ScenarioError {
    yaml::parse(text).expect_err("must be refused")
}

#[test]
fn the_issues_example_is_accepted_as_written() {
    let file = yaml::parse(ISSUE).unwrap();
    let s = &file.scenario;
    assert_eq!(s.seed, 7);
    assert_eq!(s.duration_ns, 60_000 * NS_PER_MS);
    assert_eq!(s.state.policy, Policy::GlobalQuorum);
    assert_eq!(s.state.quorum_min_percent, 51);
    assert_eq!(s.state.heartbeat_ttl.as_secs(), 3);
    assert_eq!(s.network.default.latency_ns, 10 * NS_PER_MS);
    assert_eq!(s.network.default.jitter_ns, 5 * NS_PER_MS);
    let ids: Vec<&str> = s.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["eu-1", "us-1", "ap-1"]);
    assert_eq!(s.nodes[2].clock_offset_ms, -20_000);
    assert_eq!(s.events.len(), 11);
    assert_eq!(
        s.events[1].kind,
        EventKind::Observe {
            node: 0,
            endpoint: "web".into(),
            healthy: None
        },
        "`healthy: null` withdraws"
    );
    assert_eq!(
        s.events[2].kind,
        EventKind::Partition {
            groups: vec![vec![0], vec![1, 2]]
        }
    );
    assert_eq!(s.events[4].kind, EventKind::Crash(1));
    assert_eq!(s.events[6].kind, EventKind::Broker(false));
    assert_eq!(s.events[8].kind, EventKind::Isolate(2));
    assert_eq!(
        s.events[10].kind,
        EventKind::Clock {
            node: 2,
            offset_ms: Some(15_000),
            drift_ppb: 1_000_000
        }
    );
    assert_eq!(s.events[10].line, Some(20));
    let x = &s.expects[0];
    assert_eq!((x.at_ns, x.node, x.line), (8_000 * NS_PER_MS, 1, Some(22)));
    assert_eq!(x.checks.healthy, Some(Some(false)));
    assert_eq!(x.checks.source, Some(Source::Global));
}

#[test]
fn errors_name_the_key_and_the_line() {
    let base = "seed: 1\nnodes: [a, b]\n";
    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, crash: a, bogus: 1 }}\n"
    ));
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.key.starts_with("events[0]"), "{e}");
    assert!(e.message.contains("bogus"), "{e}");

    let e = err(&format!("{base}events:\n  - {{ at: 1s, crash: c }}\n"));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].crash", Some(4)),
        "{e}"
    );
    assert!(e.message.contains("unknown node \"c\""), "{e}");

    let e = err("nodes: [a]\nstate:\n  healthPolicy: majority\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("state.healthPolicy", Some(3)),
        "{e}"
    );
    assert!(e.message.contains("global-quorum"), "{e}");

    let e = err("nodes: [a]\nstate:\n  quorumMinPercent: 0\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("state.quorumMinPercent", Some(3)),
        "{e}"
    );

    let e = err("nodes: [a]\nstate:\n  heartbeatInterval: 3s\n  heartbeatTTL: 2s\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("state.heartbeatTTL", Some(4)),
        "{e}"
    );

    let e = err(&format!(
        "{base}duration: 10s\nevents:\n  - {{ at: 11s, heal: true }}\n"
    ));
    assert_eq!((e.key.as_str(), e.line), ("events[0].at", Some(5)), "{e}");

    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, crash: a }}\n  - {{ at: 2s, crash: a }}\n"
    ));
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("already down"), "{e}");

    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, node: a, endpoint: web }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].healthy", Some(4)),
        "{e}"
    );

    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, heal: true, crash: a }}\n"
    ));
    assert!(e.message.contains("exactly one"), "{e}");

    let e = err(&format!("{base}network: {{ loss: 1.5 }}\n"));
    assert_eq!((e.key.as_str(), e.line), ("network.loss", Some(3)), "{e}");

    let e = err(&format!(
        "{base}expect:\n  - {{ at: 1s, node: a, endpoint: web, source: nowhere }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("expect[0].source", Some(4)),
        "{e}"
    );

    let e = err("nodes: [a, a]\n");
    assert!(e.message.contains("duplicate"), "{e}");
    let e = err("seed: 1\n");
    assert_eq!(e.key, "nodes");
    let e = err("nodes: [a]\nduration: soon\n");
    assert_eq!((e.key.as_str(), e.line), ("duration", Some(2)), "{e}");
    assert!(err("").message.contains("empty"));
    assert!(err("- a\n- b\n").line.is_some());
}

#[test]
fn nodes_links_clock_and_expectations_in_every_form() {
    let s = yaml::parse(
        "nodes:\n  - a\n  - { id: b, region: eu, clockOffset: 1500ms, drift: -0.002 }\n\
         network:\n  latency: 5ms\n  links:\n    - { between: [a, b], latency: 100ms, loss: 0.1 }\n\
         expect:\n  - { at: 1s, node: a, activeMembers: [b, a] }\n  - { at: 2s, node: b, endpoint: x, healthy: null, healthyReports: 0, totalReports: 1 }\n",
    )
    .unwrap()
    .scenario;
    assert_eq!(s.nodes[1].region, "eu");
    assert_eq!(s.nodes[1].clock_offset_ms, 1500);
    assert_eq!(s.nodes[1].drift_ppb, -2_000_000);
    assert_eq!(s.network.link(0, 1).latency_ns, 100 * NS_PER_MS);
    assert_eq!(s.network.link(1, 0).loss, 0.1);
    assert_eq!(s.network.link(0, 0).latency_ns, 5 * NS_PER_MS);
    assert_eq!(
        s.expects[0].checks.active_members,
        Some(vec!["a".into(), "b".into()])
    );
    assert_eq!(s.expects[1].checks.healthy, Some(None));
    assert_eq!(s.expects[1].checks.total_reports, Some(1));
}

#[test]
fn the_core_issue_reproducers_hold_since_the_fixes() {
    // Regression tests for two core bugs the simulation found: anti-entropy records judged by
    // sender clocks, and a failed or members-only KV read taken as a complete re-sync.
    for text in [
        include_str!("data/core-anti-entropy-timestamps.yaml"),
        include_str!("data/core-lost-report-never-resynced.yaml"),
    ] {
        let file = yaml::parse(text).unwrap();
        assert!(file.name.unwrap().starts_with("core issue"));
        assert_eq!(file.scenario.expects.len(), 2);
        let o = gslb_state_sim::run(&file.scenario, Default::default());
        assert!(o.expects.iter().all(|x| x.ok), "{:?}", o.expects);
    }
}

#[test]
fn monotonic_clocks_late_starts_leaves_and_clock_steps() {
    let s = yaml::parse(
        "duration: 30s\nnodes:\n  - a\n  - { id: b, monotonicOffset: 2d }\n  - { id: c, start: 5s }\n\
         events:\n  - { at: 2s, leave: a }\n  - { at: 4s, restart: a }\n  - { at: 6s, crash: b }\n\
         \x20 - { at: 8s, restart: { node: b, clockOffset: -1h } }\n  - { at: 9s, leave: c }\n\
         \x20 - { at: 10s, restart: { node: c } }\n",
    )
    .unwrap()
    .scenario;
    assert_eq!(
        s.nodes[0].monotonic_offset_ns, None,
        "0 at every start by default"
    );
    assert_eq!(
        s.nodes[1].monotonic_offset_ns,
        Some(2 * 86_400_000 * NS_PER_MS)
    );
    assert_eq!(
        (s.nodes[0].start_ns, s.nodes[2].start_ns),
        (0, 5_000 * NS_PER_MS)
    );
    let kinds: Vec<&EventKind> = s.events.iter().map(|e| &e.kind).collect();
    assert_eq!(
        kinds,
        [
            &EventKind::Leave(0),
            &EventKind::Restart {
                node: 0,
                clock_offset_ms: None
            },
            &EventKind::Crash(1),
            &EventKind::Restart {
                node: 1,
                clock_offset_ms: Some(-3_600_000)
            },
            &EventKind::Leave(2),
            &EventKind::Restart {
                node: 2,
                clock_offset_ms: None
            },
        ]
    );
}

#[test]
fn new_keys_are_refused_with_the_key_and_the_line() {
    let base = "seed: 1\nnodes: [a, b]\n";
    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, restart: {{ node: a, clockOffset: soon }} }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].restart.clockOffset", Some(4)),
        "{e}"
    );
    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, restart: {{ node: z }} }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].restart.node", Some(4)),
        "{e}"
    );
    assert!(e.message.contains("unknown node \"z\""), "{e}");
    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, restart: {{ node: a, offset: 1s }} }}\n"
    ));
    assert!(e.key.starts_with("events[0]"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
    let e = err(&format!("{base}events:\n  - {{ at: 1s, leave: z }}\n"));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].leave", Some(4)),
        "{e}"
    );
    let e = err(&format!(
        "{base}events:\n  - {{ at: 1s, leave: a }}\n  - {{ at: 2s, crash: a }}\n"
    ));
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("crash: a is already down"), "{e}");
    let e = err(&format!("{base}events:\n  - {{ at: 1s, restart: a }}\n"));
    assert!(e.message.contains("let it leave first"), "{e}");
    let e = err("nodes:\n  - a\n  - { id: b, monotonicOffset: -1s }\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("nodes[1].monotonicOffset", Some(3)),
        "{e}"
    );
    let e = err("duration: 10s\nnodes:\n  - a\n  - { id: b, start: 11s }\n");
    assert_eq!((e.key.as_str(), e.line), ("nodes[1].start", Some(4)), "{e}");
    let e = err("nodes:\n  - a\n  - { id: b, start: 5s }\nevents:\n  - { at: 2s, crash: b }\n");
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("has not started yet"), "{e}");
    let e = err("nodes: [a]\nevents:\n  - { at: 1s, leave: a, crash: a }\n");
    assert!(
        e.message.contains("leave and crash") || e.message.contains("crash and leave"),
        "{e}"
    );
}

#[test]
fn quorum_scope_holds_and_their_expectations() {
    let s = yaml::parse(
        "nodes:\n  - { id: a, region: eu }\n  - { id: b, region: us }\nstate:\n  quorumScope: regions\n  holdUp: 10s\n  holdDown: 1m 30s\nexpect:\n  - { at: 1s, node: a, endpoint: web, healthyRegions: 1, totalRegions: 2 }\n  - { at: 2s, node: a, endpoint: web, pending: unhealthy }\n  - { at: 3s, node: b, endpoint: web, pending: none, healthy_regions: 0 }\n  - { at: 4s, node: b, endpoint: web, pending: healthy, total_regions: 3 }\n",
    )
    .unwrap()
    .scenario;
    assert_eq!(s.state.quorum_scope, QuorumScope::Regions);
    assert_eq!(s.state.hold_up, Duration::from_secs(10));
    assert_eq!(s.state.hold_down, Duration::from_secs(90));
    let c: Vec<_> = s.expects.iter().map(|x| &x.checks).collect();
    assert_eq!(
        (c[0].healthy_regions, c[0].total_regions),
        (Some(1), Some(2))
    );
    assert_eq!(c[0].pending, None, "not checked");
    assert_eq!(c[1].pending, Some(Some(false)));
    assert_eq!((c[2].pending, c[2].healthy_regions), (Some(None), Some(0)));
    assert_eq!(
        (c[3].pending, c[3].total_regions),
        (Some(Some(true)), Some(3))
    );
    // Written out at their defaults, they are the defaults.
    let explicit =
        yaml::parse("nodes: [a]\nstate: { quorumScope: members, holdUp: 0s, holdDown: 0s }\n")
            .unwrap();
    assert_eq!(
        explicit.scenario.state,
        yaml::parse("nodes: [a]\n").unwrap().scenario.state
    );

    let e = err("nodes: [a]\nstate:\n  quorumScope: region\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("state.quorumScope", Some(3)),
        "{e}"
    );
    assert!(
        e.message.contains("members") && e.message.contains("regions"),
        "{e}"
    );
    let e = err("nodes: [a]\nstate:\n  healthPolicy: global-quorum\n  holdUp: -5s\n");
    assert_eq!((e.key.as_str(), e.line), ("state.holdUp", Some(4)), "{e}");
    let e = err("nodes: [a]\nstate:\n  holdDown: soon\n");
    assert_eq!((e.key.as_str(), e.line), ("state.holdDown", Some(3)), "{e}");
    let e = err("nodes: [a]\nstate:\n  holdDown: 8d\n");
    assert_eq!((e.key.as_str(), e.line), ("state.holdDown", Some(3)), "{e}");
    let e = err("nodes: [a]\nexpect:\n  - { at: 1s, node: a, endpoint: web, pending: maybe }\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("expect[0].pending", Some(3)),
        "{e}"
    );
    assert!(e.message.contains("healthy, unhealthy or none"), "{e}");
    let e = err("nodes: [a]\nexpect:\n  - { at: 1s, node: a, totalRegions: 2 }\n");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("expect[0].endpoint", Some(3)),
        "{e}"
    );
    let e = err("nodes: [a]\nexpect:\n  - { at: 1s, node: a, endpoint: web }\n");
    assert!(e.message.contains("healthyRegions"), "{e}");
}
