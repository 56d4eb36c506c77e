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

/// Six nodes in three regions (and one without), for the region tests.
const REGIONS: &str = "nodes:\n  - { id: eu-1, region: eu }\n  - { id: us-1, region: us }\n  - { id: eu-2, region: eu }\n  - { id: ap-1, region: ap }\n  - { id: us-2, region: us }\n  - n6\n";

#[test]
fn a_partition_by_region_is_its_regions_nodes() {
    let s = yaml::parse(&format!(
        "{REGIONS}events:\n  - {{ at: 1s, partition: {{ regions: [[eu], [us, ap]] }} }}\n\
         \x20 - {{ at: 2s, partition: {{ regions: [[ap, eu], []] }} }}\n\
         \x20 - {{ at: 3s, partition: [[eu-1, eu-2], [us-1, us-2, ap-1]] }}\n\
         \x20 - {{ at: 4s, partition: {{ regions: [[\"\"], [us]] }} }}\n"
    ))
    .unwrap()
    .scenario;
    let groups: Vec<&EventKind> = s.events.iter().map(|e| &e.kind).collect();
    // A region's nodes in file order, a group's regions in its order; n6 (no region) and the
    // regions not listed form one more group, as nodes not listed do.
    assert_eq!(
        groups,
        [
            &EventKind::Partition {
                groups: vec![vec![0, 2], vec![1, 4, 3]]
            },
            &EventKind::Partition {
                groups: vec![vec![3, 0, 2]]
            },
            &EventKind::Partition {
                groups: vec![vec![0, 2], vec![1, 4, 3]]
            },
            &EventKind::Partition {
                groups: vec![vec![5], vec![1, 4]]
            },
        ]
    );
    assert_eq!(s.events[0].kind, s.events[2].kind, "the same as by node");
}

#[test]
fn region_latency_adds_to_each_link_and_network_events_change_it() {
    let s = yaml::parse(&format!(
        "{REGIONS}network:\n  latency: 5ms\n  links:\n    - {{ between: [eu-1, us-1], latency: 20ms }}\n\
         \x20 regionLatency:\n    eu: {{ us: 40ms, ap: 120ms }}\n    us: {{ ap: 90ms }}\n    ap: {{ ap: 1ms }}\n\
         events:\n  - {{ at: 1s, network: {{ regionLatency: {{ us: {{ eu: 0ms }}, ap: {{ us: 200ms }} }} }} }}\n"
    ))
    .unwrap()
    .scenario;
    let latency_ms = |net: &gslb_state_sim::scenario::NetworkSpec, a: usize, b: usize| {
        net.link(a, b).latency_ns / NS_PER_MS
    };
    let n = &s.network;
    assert_eq!(latency_ms(n, 0, 2), 5, "eu-1 and eu-2: no extra delay");
    assert_eq!(latency_ms(n, 0, 4), 45, "eu and us: 5 + 40");
    assert_eq!(latency_ms(n, 4, 0), 45, "both ways");
    assert_eq!(latency_ms(n, 0, 1), 60, "on top of a link's own latency");
    assert_eq!(latency_ms(n, 2, 3), 125);
    assert_eq!(latency_ms(n, 3, 1), 95);
    assert_eq!(latency_ms(n, 3, 3), 6, "a region with itself");
    assert_eq!(latency_ms(n, 5, 3), 5, "the empty region: nothing set");
    assert_eq!(n.max_delay_ns(), 125 * NS_PER_MS);
    assert_eq!(
        n.region_latency.to_string(),
        "eu-us +40 ms, eu-ap +120 ms, us-ap +90 ms, ap-ap +1 ms"
    );
    // An event changes the pairs it names; the others, and the links, stay.
    let EventKind::Network(later) = &s.events[0].kind else {
        panic!("a network event: {:?}", s.events[0].kind);
    };
    assert_eq!(latency_ms(later, 0, 4), 5, "0ms removes it");
    assert_eq!(latency_ms(later, 0, 1), 20);
    assert_eq!(latency_ms(later, 1, 3), 205);
    assert_eq!(latency_ms(later, 0, 3), 125, "kept");
    assert_eq!(s.max_delay_ns(), 205 * NS_PER_MS);
    // Without regionLatency nothing changes.
    let plain = yaml::parse(&format!("{REGIONS}network: {{ latency: 5ms }}\n")).unwrap();
    assert_eq!(latency_ms(&plain.scenario.network, 0, 1), 5);
    assert_eq!(plain.scenario.network.region_latency, Default::default());
}

#[test]
fn region_partitions_and_latencies_are_refused_with_the_key_and_the_line() {
    let event = |e: &str| err(&format!("{REGIONS}events:\n  - {e}\n"));
    let e = event("{ at: 1s, partition: { regions: [[eu], [sa]] } }");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].partition.regions", Some(9)),
        "{e}"
    );
    assert!(
        e.message
            .contains("unknown region \"sa\": no node is in it")
            && e.message
                .contains("the regions are eu, us, ap, \"\" (nodes without a region)"),
        "{e}"
    );
    let e = event("{ at: 1s, partition: { regions: [[eu, us], [us]] } }");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].partition.regions", Some(9)),
        "{e}"
    );
    assert!(
        e.message
            .contains("region \"us\" is in more than one group"),
        "{e}"
    );
    // Mixing: a node among regions, a region among nodes.
    let e = event("{ at: 1s, partition: { regions: [[eu], [us-1]] } }");
    assert_eq!(e.key, "events[0].partition.regions", "{e}");
    assert!(
        e.message.contains("\"us-1\" is a node, not a region") && e.message.contains("not both"),
        "{e}"
    );
    let e = event("{ at: 1s, partition: [[eu-1], [us]] }");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].partition", Some(9)),
        "{e}"
    );
    assert!(
        e.message.contains("unknown node \"us\"")
            && e.message.contains("\"us\" is a region")
            && e.message.contains("{regions: [[eu], [us, ap]]}"),
        "{e}"
    );
    let e = event("{ at: 1s, partition: { regions: [[eu]], nodes: [[us-1]] } }");
    assert!(e.key.starts_with("events[0].partition"), "{e}");
    assert_eq!(e.line, Some(9), "{e}");
    let e = event("{ at: 1s, partition: { regions: [[], []] } }");
    assert_eq!(e.key, "events[0].partition", "{e}");
    assert!(e.message.contains("at least one group"), "{e}");
    let e = event("{ at: 1s, partition: eu }");
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].partition", Some(9)),
        "{e}"
    );
    assert!(e.message.contains("{regions: [[eu], [us, ap]]}"), "{e}");

    let e = err(&format!(
        "{REGIONS}network:\n  regionLatency:\n    eu: {{ us: 40ms, sa: 1ms }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("network.regionLatency.eu.sa", Some(10)),
        "{e}"
    );
    assert!(e.message.contains("unknown region \"sa\""), "{e}");
    let e = err(&format!(
        "{REGIONS}network:\n  regionLatency:\n    eu-1: {{ us: 40ms }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("network.regionLatency.eu-1", Some(10)),
        "{e}"
    );
    assert!(
        e.message.contains("\"eu-1\" is a node, not a region"),
        "{e}"
    );
    let e = err(&format!(
        "{REGIONS}network:\n  regionLatency:\n    eu: {{ us: 40ms }}\n    us: {{ eu: 50ms }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("network.regionLatency.us.eu", Some(11)),
        "{e}"
    );
    assert!(e.message.contains("given twice"), "{e}");
    // Reported where it is named again, whatever the order of the regions' names.
    let e = err(&format!(
        "{REGIONS}network:\n  regionLatency:\n    us: {{ eu: 40ms }}\n    eu: {{ us: 50ms }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("network.regionLatency.eu.us", Some(11)),
        "{e}"
    );
    let e = err(&format!(
        "{REGIONS}events:\n  - {{ at: 1s, network: {{ regionLatency: {{ eu: {{ us: soon }} }} }} }}\n"
    ));
    assert_eq!(
        (e.key.as_str(), e.line),
        ("events[0].network.regionLatency.eu.us", Some(9)),
        "{e}"
    );
    let e = err(&format!(
        "{REGIONS}network:\n  regionLatency:\n    eu: [us]\n"
    ));
    assert!(e.key.starts_with("network.regionLatency"), "{e}");
    assert_eq!(e.line, Some(10), "{e}");
}
