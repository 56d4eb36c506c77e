//! What the simulated world does with the cores: determinism, and each fault as a driver
//! would carry it out.

use std::time::Duration;

use gslb_state_core::{Config, Policy, Source, StateSettings};
use gslb_state_sim::scenario::{EventKind, Expect, ExpectChecks, NS_PER_MS, Scenario};
use gslb_state_sim::trace::Record;
use gslb_state_sim::world::{Outcome, RunOptions};
use gslb_state_sim::{run, schedule, yaml};

fn state(policy: Policy) -> StateSettings {
    let mut s = Config::with_defaults("sim").state;
    s.policy = policy;
    s.heartbeat_interval = Duration::from_secs(1);
    s.heartbeat_ttl = Duration::from_secs(3);
    s
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn observe(node: usize, endpoint: &str, healthy: Option<bool>) -> EventKind {
    EventKind::Observe {
        node,
        endpoint: endpoint.into(),
        healthy,
    }
}

fn expect(s: &mut Scenario, at_s: u64, node: usize, checks: ExpectChecks) {
    s.expects.push(Expect {
        at_ns: at_s * 1_000 * NS_PER_MS,
        line: None,
        node,
        checks,
    });
}

fn verdict(endpoint: &str, healthy: Option<bool>, source: Source) -> ExpectChecks {
    ExpectChecks {
        endpoint: Some(endpoint.into()),
        healthy: Some(healthy),
        source: Some(source),
        ..ExpectChecks::default()
    }
}

fn members(ids: &[&str]) -> ExpectChecks {
    ExpectChecks {
        active_members: Some(ids.iter().map(|s| s.to_string()).collect()),
        ..ExpectChecks::default()
    }
}

fn assert_all_hold(o: &Outcome) {
    for x in &o.expects {
        assert!(
            x.ok,
            "expectation {} failed: {} (saw {})",
            x.index, x.why, x.seen
        );
    }
}

#[test]
fn the_same_seed_gives_a_byte_identical_trace_and_another_seed_does_not() {
    for seed in [1, 2, 3] {
        let g = schedule::generate(seed, 5, 3);
        let a = run(&g.scenario, RunOptions::default());
        let b = run(&g.scenario, RunOptions::default());
        assert!(!a.trace.records.is_empty());
        assert_eq!(
            a.trace.to_json_lines(),
            b.trace.to_json_lines(),
            "seed {seed}"
        );
        assert_eq!(a.trace.to_timeline(), b.trace.to_timeline(), "seed {seed}");
    }
    // Same schedule, another seed: the network draws differ, so the trace does.
    let g = schedule::generate(1, 5, 3);
    let mut other = g.scenario.clone();
    other.seed = 99;
    let a = run(&g.scenario, RunOptions::default())
        .trace
        .to_json_lines();
    let b = run(&other, RunOptions::default()).trace.to_json_lines();
    assert_ne!(a, b);
}

#[test]
fn json_lines_have_the_documented_fields() {
    let file = yaml::parse(include_str!("../../examples/global-quorum.yaml")).unwrap();
    let o = run(&file.scenario, RunOptions::default());
    let json = o.trace.to_json_lines();
    let (mut decisions, mut memberships) = (0, 0);
    let mut last_t = 0;
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["t_ms"].as_u64().unwrap();
        assert!(t >= last_t, "lines are in time order");
        last_t = t;
        assert!(v["node"].is_string());
        if v.get("endpoint").is_some() {
            decisions += 1;
            assert!(v["healthy"].is_boolean() || v["healthy"].is_null());
            let source = v["source"].as_str().unwrap();
            assert!(["local", "global", "fallback-local", "unknown"].contains(&source));
            assert!(v["healthy_reports"].as_u64().unwrap() <= v["total_reports"].as_u64().unwrap());
        } else {
            memberships += 1;
            assert!(v["active_members"].is_array());
        }
    }
    assert!(
        decisions > 10 && memberships > 10,
        "{decisions} {memberships}"
    );
}

#[test]
fn crash_and_restart_start_a_new_incarnation_that_rereads_the_kv_snapshot() {
    let mut s = Scenario::new(1, secs(30), state(Policy::GlobalQuorum), &["a", "b", "c"]);
    s.at(secs(0), observe(0, "web", Some(true)));
    s.at(secs(0), observe(1, "web", Some(false)));
    s.at(secs(0), observe(2, "db", Some(true)));
    s.at(secs(5), EventKind::Crash(2));
    s.at(
        secs(15),
        EventKind::Restart {
            node: 2,
            clock_offset_ms: None,
        },
    );
    expect(&mut s, 4, 0, members(&["a", "b", "c"]));
    // c is gone from every view within TTL + interval + delay.
    expect(&mut s, 10, 0, members(&["a", "b"]));
    expect(&mut s, 10, 0, verdict("db", None, Source::Unknown));
    // Restarted: its probe reports db again at once, and it learns web from the others
    // (1 of 2 healthy is 50%, below the default 51%).
    expect(
        &mut s,
        15,
        2,
        verdict("db", Some(true), Source::FallbackLocal),
    );
    expect(&mut s, 17, 2, verdict("web", Some(false), Source::Global));
    expect(&mut s, 17, 0, members(&["a", "b", "c"]));
    let o = run(&s, RunOptions::default());
    assert_all_hold(&o);
    let lives: Vec<_> = o.lives.iter().filter(|l| l.node == 2).collect();
    assert_eq!(lives.len(), 2);
    assert!(lives[1].incarnation > lives[0].incarnation);
    assert_eq!(lives[0].stopped_ns, Some(5_000 * NS_PER_MS));
    let snapshot = lives[1]
        .snapshot_ns
        .expect("the restarted node read the snapshot");
    assert_eq!(snapshot, 15_000 * NS_PER_MS + s.network.default.latency_ns);
}

/// With a short compaction interval every node compacts its reports into chunks that its
/// record names; a restarted node reads its peers' reports from those chunks and the report
/// keys written since, and knows what a full per-key read would have told it (checked by the
/// world when the snapshot is loaded). A compaction whose chunk write fails (the node is cut
/// off from the KV store, on the minority side of a partition) is abandoned, and done again
/// after more changes.
#[test]
fn a_restarted_node_reads_compacted_snapshots_and_a_failed_compaction_is_done_again() {
    let endpoints = ["a", "b", "c", "d", "e", "f"];
    let mut s = Scenario::new(
        3,
        secs(30),
        state(Policy::GlobalQuorum),
        &["n0", "n1", "n2"],
    );
    s.compact_interval = secs(1);
    for n in 0..3 {
        for e in endpoints {
            s.at(secs(0), observe(n, e, Some(true)));
        }
    }
    // n0 changes all its reports while it cannot reach the KV store: its compaction fails.
    s.at(
        secs(5),
        EventKind::Partition {
            groups: vec![vec![0], vec![1, 2]],
        },
    );
    for e in endpoints {
        s.at(secs(6), observe(0, e, Some(false)));
    }
    s.at(secs(9), EventKind::Heal);
    // Half of them again, with the KV store in reach: compacted.
    for e in &endpoints[..3] {
        s.at(secs(12), observe(0, e, Some(true)));
    }
    s.at(secs(20), EventKind::Crash(2));
    s.at(
        secs(22),
        EventKind::Restart {
            node: 2,
            clock_offset_ms: None,
        },
    );
    let counted = |endpoint: &str, healthy: u32| ExpectChecks {
        healthy_reports: Some(healthy),
        total_reports: Some(3),
        ..verdict(endpoint, Some(true), Source::Global)
    };
    expect(&mut s, 23, 2, counted("a", 3));
    expect(&mut s, 23, 2, counted("f", 2));
    let o = run(&s, RunOptions::default());
    assert_all_hold(&o);
    assert!(
        o.snapshot_mismatches.is_empty(),
        "{:#?}",
        o.snapshot_mismatches
    );
    assert!(
        o.chunk_writes_failed >= 1,
        "n0's compaction in the partition"
    );
    // Each node's first compaction, n0's after the partition, n2's in its second life.
    assert!(o.chunk_writes >= 5, "{} chunks written", o.chunk_writes);
    assert!(
        o.chunks_read >= 2,
        "n2 read n0's and n1's chunks: {}",
        o.chunks_read
    );
    // With the core's default interval (30 s) nothing is compacted before n2 restarts: it
    // reads every report key.
    let mut long = s.clone();
    long.compact_interval = secs(30);
    let o = run(&long, RunOptions::default());
    assert_all_hold(&o);
    assert_eq!(o.chunks_read, 0);
}

/// Incarnations never go backwards, even when a node restarts with its wall clock behind:
/// it reads its earlier life's record in the snapshot before it writes its own (a first
/// version of the protocol wrote it in the same drain as its first heartbeat, the write
/// landed before the read, and the incarnation went backwards).
#[test]
fn incarnations_increase_even_when_the_clock_goes_back() {
    let mut s = Scenario::new(1, secs(20), state(Policy::PreferLocal), &["a", "b"]);
    s.at(
        secs(2),
        EventKind::Clock {
            node: 1,
            offset_ms: Some(-60_000),
            drift_ppb: 0,
        },
    );
    s.at(secs(3), EventKind::Crash(1));
    s.at(
        secs(4),
        EventKind::Restart {
            node: 1,
            clock_offset_ms: None,
        },
    );
    s.at(secs(4), observe(1, "web", Some(true)));
    expect(&mut s, 8, 0, verdict("web", Some(true), Source::Global));
    let o = run(&s, RunOptions::default());
    assert_all_hold(&o);
    let incs: Vec<u64> = o
        .lives
        .iter()
        .filter(|l| l.node == 1)
        .map(|l| l.incarnation)
        .collect();
    assert_eq!(incs.len(), 2);
    // The core started with its wall clock, a minute behind, then read the record of its
    // earlier life in the snapshot and took the next incarnation above it.
    assert_eq!(incs[1], incs[0] + 1, "raised above the earlier life's");
    assert!(o.trace.records.iter().any(|r| matches!(
        r,
        Record::Note { node: 1, text, .. } if text.contains(&format!("raised from {} to {}", incs[0] - 56_000, incs[1]))
    )), "{}", o.trace.to_timeline());
}

#[test]
fn a_broker_outage_and_an_isolated_node_degrade_to_local_and_recover() {
    let mut s = Scenario::new(
        2,
        secs(40),
        state(Policy::GlobalAnyHealthy),
        &["a", "b", "c"],
    );
    s.at(secs(0), observe(0, "web", Some(false)));
    s.at(secs(0), observe(1, "web", Some(true)));
    s.at(secs(5), EventKind::Broker(false));
    s.at(secs(12), EventKind::Broker(true));
    s.at(secs(20), EventKind::Isolate(1));
    // b changes its mind while cut off: published when it is back.
    s.at(secs(22), observe(1, "web", Some(false)));
    s.at(secs(23), observe(1, "web", Some(true)));
    s.at(secs(24), observe(1, "api", Some(true)));
    s.at(secs(28), EventKind::Rejoin(1));
    expect(&mut s, 4, 0, verdict("web", Some(true), Source::Global));
    expect(
        &mut s,
        10,
        0,
        verdict("web", Some(false), Source::FallbackLocal),
    );
    expect(&mut s, 10, 2, verdict("web", None, Source::Unknown));
    expect(&mut s, 14, 0, verdict("web", Some(true), Source::Global));
    expect(&mut s, 26, 0, members(&["a", "c"]));
    expect(
        &mut s,
        26,
        0,
        verdict("web", Some(false), Source::FallbackLocal),
    );
    expect(
        &mut s,
        26,
        1,
        verdict("web", Some(true), Source::FallbackLocal),
    );
    expect(&mut s, 30, 2, verdict("api", Some(true), Source::Global));
    expect(&mut s, 30, 0, verdict("web", Some(true), Source::Global));
    let o = run(&s, RunOptions::default());
    assert_all_hold(&o);
}

#[test]
fn a_partition_splits_the_count_and_the_kv_stays_with_the_majority() {
    let mut s = Scenario::new(
        3,
        secs(40),
        state(Policy::GlobalQuorum),
        &["a", "b", "c", "d"],
    );
    for n in 0..4 {
        s.at(secs(0), observe(n, "web", Some(n == 0)));
    }
    s.at(
        secs(5),
        EventKind::Partition {
            groups: vec![vec![0], vec![1, 2, 3]],
        },
    );
    // a's change cannot reach the others, nor the KV (it stays with b, c, d).
    s.at(secs(8), observe(0, "db", Some(true)));
    s.at(secs(20), EventKind::Heal);
    expect(&mut s, 4, 1, verdict("web", Some(false), Source::Global));
    expect(
        &mut s,
        12,
        0,
        verdict("web", Some(true), Source::FallbackLocal),
    );
    expect(&mut s, 12, 0, members(&["a"]));
    expect(&mut s, 12, 1, members(&["b", "c", "d"]));
    expect(&mut s, 12, 1, verdict("db", None, Source::Unknown));
    // Healed: the report that failed to reach the KV was republished and re-put.
    expect(&mut s, 25, 1, verdict("db", Some(true), Source::Global));
    expect(&mut s, 25, 3, members(&["a", "b", "c", "d"]));
    let o = run(&s, RunOptions::default());
    assert_all_hold(&o);
}

#[test]
fn loss_duplication_and_reordering_change_no_settled_decision() {
    let mut calm = Scenario::new(
        4,
        secs(30),
        state(Policy::GlobalQuorum),
        &["a", "b", "c", "d", "e"],
    );
    for n in 0..5 {
        calm.at(secs(1), observe(n, "web", Some(n % 2 == 0)));
        calm.at(secs(2), observe(n, "api", Some(true)));
    }
    let mut rough = calm.clone();
    rough.network.default.loss = 0.1;
    rough.network.default.duplicate = 0.3;
    rough.network.default.reorder = 0.3;
    rough.network.default.jitter_ns = 8 * NS_PER_MS;
    let probe = RunOptions {
        probes_ns: vec![20_000 * NS_PER_MS, 29_000 * NS_PER_MS],
        ..RunOptions::default()
    };
    let a = run(&calm, probe.clone());
    let b = run(&rough, probe);
    assert_eq!(a.probes, b.probes);
    assert_ne!(
        a.trace.to_json_lines(),
        b.trace.to_json_lines(),
        "the rough network does show"
    );
}

#[test]
fn bounds_hold_on_a_larger_cluster() {
    let g = schedule::generate(7, 12, 20);
    let o = run(
        &g.scenario,
        RunOptions {
            sample_every_ns: 250 * NS_PER_MS,
            ..RunOptions::default()
        },
    );
    assert!(o.bound_violations.is_empty(), "{:?}", o.bound_violations);
    assert!(o.peak_queue > 0 && o.peak_queue <= gslb_state_sim::world::queue_bound(12));
}

#[test]
fn zero_delay_links_and_jitter_larger_than_latency_still_run() {
    for (latency_ms, jitter_ms) in [(0, 0), (5, 10)] {
        let mut s = Scenario::new(5, secs(20), state(Policy::GlobalQuorum), &["a", "b", "c"]);
        s.network.default.latency_ns = latency_ms * NS_PER_MS;
        s.network.default.jitter_ns = jitter_ms * NS_PER_MS;
        s.at(secs(0), observe(0, "web", Some(true)));
        s.at(secs(5), EventKind::Crash(1));
        expect(&mut s, 4, 2, verdict("web", Some(true), Source::Global));
        expect(&mut s, 12, 2, members(&["a", "c"]));
        let o = run(&s, RunOptions::default());
        assert_all_hold(&o);
        assert!(o.deliveries > 50, "{}", o.deliveries);
    }
}

#[test]
fn a_graceful_leave_is_seen_at_once_and_by_nodes_that_start_later() {
    let mut s = Scenario::new(6, secs(30), state(Policy::GlobalQuorum), &["a", "b", "c"]);
    s.state.heartbeat_ttl = secs(10);
    s.nodes[2].start_ns = 8_000 * NS_PER_MS;
    s.at(secs(0), observe(0, "web", Some(true)));
    s.at(secs(0), observe(1, "web", Some(false)));
    s.at(secs(5), EventKind::Leave(1));
    s.at(
        secs(20),
        EventKind::Restart {
            node: 1,
            clock_offset_ms: None,
        },
    );
    expect(&mut s, 4, 0, verdict("web", Some(false), Source::Global));
    // One delay after the leave, not a TTL.
    s.expects.push(Expect {
        at_ns: 5_100 * NS_PER_MS,
        line: None,
        node: 0,
        checks: members(&["a"]),
    });
    // c starts after the leave: b's leave record keeps it (and its reports) out of c's view,
    // so web is decided on a's report alone.
    expect(&mut s, 9, 2, members(&["a", "c"]));
    expect(&mut s, 9, 2, verdict("web", Some(true), Source::Global));
    // Restarted: back everywhere.
    expect(&mut s, 21, 2, members(&["a", "b", "c"]));
    let o = run(
        &s,
        RunOptions {
            track_expiry: true,
            ..RunOptions::default()
        },
    );
    assert_all_hold(&o);
    let b: Vec<_> = o.lives.iter().filter(|l| l.node == 1).collect();
    assert_eq!(b.len(), 2);
    assert!(b[0].left && b[0].stopped_ns == Some(5_000 * NS_PER_MS));
    assert!(!b[1].left && b[1].stopped_ns.is_none());
    let down = o
        .downs
        .iter()
        .find(|d| d.observer == 0 && d.member == "b")
        .expect("a dropped b");
    assert_eq!(down.reason, gslb_state_core::DownReason::Left);
    assert!(down.t_ns <= 5_000 * NS_PER_MS + s.max_delay_ns());
    let timeline = o.trace.to_timeline();
    assert!(timeline.contains("---- b leaves gracefully: announces it and stops ----"));
    assert!(timeline.contains("---- c starts ----"));
}

#[test]
fn network_loss_tells_the_receiver_and_partitions_stay_silent() {
    let mut lossy = Scenario::new(7, secs(20), state(Policy::GlobalQuorum), &["a", "b", "c"]);
    lossy.network.default.loss = 0.2;
    lossy.network.default.jitter_ns = 3 * NS_PER_MS;
    for n in 0..3 {
        lossy.at(secs(1), observe(n, "web", Some(true)));
    }
    let a = run(&lossy, RunOptions::default());
    let b = run(&lossy, RunOptions::default());
    assert!(a.losses_told > 10, "{}", a.losses_told);
    assert_eq!(a.losses_told, b.losses_told);
    assert_eq!(a.trace.to_json_lines(), b.trace.to_json_lines());
    // A partition and a broker outage lose messages without a word, as NATS does.
    let mut cut = lossy.clone();
    cut.network.default.loss = 0.0;
    cut.at(
        secs(5),
        EventKind::Partition {
            groups: vec![vec![0], vec![1, 2]],
        },
    );
    cut.at(secs(8), EventKind::Heal);
    cut.at(secs(10), EventKind::Broker(false));
    cut.at(secs(12), EventKind::Broker(true));
    cut.at(secs(14), EventKind::Isolate(2));
    assert_eq!(run(&cut, RunOptions::default()).losses_told, 0);
}

#[test]
fn the_monotonic_clock_origin_changes_nothing() {
    // Each life of a core is judged on its own clock only, so where that clock started (0 at
    // every start, or days, running on across restarts) changes no output at all.
    for seed in [1, 2, 3, 4] {
        let g = schedule::generate(seed, 5, 3);
        let mut from_start = g.scenario.clone();
        let mut offsets = g.scenario.clone();
        for (i, n) in from_start.nodes.iter_mut().enumerate() {
            n.monotonic_offset_ns = None;
            offsets.nodes[i].monotonic_offset_ns =
                Some((i as u64 + 1) * 86_400_000 * NS_PER_MS + i as u64 * 7);
        }
        let a = run(&from_start, RunOptions::default());
        let b = run(&offsets, RunOptions::default());
        assert_eq!(a.trace.to_timeline(), b.trace.to_timeline(), "seed {seed}");
    }
}

#[test]
fn a_restart_may_step_the_wall_clock_back() {
    let mut s = Scenario::new(8, secs(20), state(Policy::GlobalQuorum), &["a", "b"]);
    s.at(secs(0), observe(1, "web", Some(true)));
    s.at(secs(3), EventKind::Crash(1));
    s.at(
        secs(8),
        EventKind::Restart {
            node: 1,
            clock_offset_ms: Some(-3_600_000),
        },
    );
    expect(&mut s, 7, 0, members(&["a"]));
    expect(&mut s, 9, 0, members(&["a", "b"]));
    expect(&mut s, 9, 0, verdict("web", Some(true), Source::Global));
    let o = run(&s, RunOptions::default());
    assert_all_hold(&o);
    assert!(
        o.trace
            .to_timeline()
            .contains("b restarts, its wall clock stepped from offset 0 ms to -3600000 ms"),
        "{}",
        o.trace.to_timeline()
    );
}

/// Four nodes in three regions, 10 ms links and the extra delay between regions given.
fn three_regions(network: &str, events: &str) -> Scenario {
    yaml::parse(&format!(
        "seed: 5\nduration: 30s\n\
         state: {{ healthPolicy: global-any-healthy, heartbeatInterval: 1s, heartbeatTTL: 3s }}\n\
         network: {network}\n\
         nodes:\n  - {{ id: eu-1, region: eu }}\n  - {{ id: eu-2, region: eu }}\n  - {{ id: us-1, region: us }}\n  - {{ id: ap-1, region: ap }}\n\
         events:\n{events}"
    ))
    .unwrap()
    .scenario
}

#[test]
fn a_partition_by_region_gives_the_same_trace_as_its_node_list() {
    let trace = |partition: &str| {
        let s = three_regions(
            "{ latency: 10ms, jitter: 5ms, loss: 0.05, duplicate: 0.05, regionLatency: { eu: { us: 40ms } } }",
            &format!(
                "  - {{ at: 0s, node: eu-1, endpoint: web, healthy: true }}\n\
                 \x20 - {{ at: 0s, node: us-1, endpoint: web, healthy: false }}\n\
                 \x20 - {{ at: 5s, partition: {partition} }}\n\
                 \x20 - {{ at: 8s, node: ap-1, endpoint: web, healthy: true }}\n\
                 \x20 - {{ at: 9s, node: eu-2, endpoint: web, healthy: false }}\n\
                 \x20 - {{ at: 15s, heal: true }}\n"
            ),
        );
        let t = run(&s, RunOptions::default()).trace;
        (t.to_json_lines(), t.to_timeline())
    };
    let by_region = trace("{ regions: [[eu], [us, ap]] }");
    assert_eq!(by_region, trace("[[eu-1, eu-2], [us-1, ap-1]]"));
    // Regions left out form one more group, as nodes left out do.
    assert_eq!(trace("{ regions: [[eu]] }"), trace("[[eu-1, eu-2]]"));
    // And the partition is one: another cut gives another trace.
    assert_ne!(by_region.0, trace("{ regions: [[eu, us], [ap]] }").0);
}

#[test]
fn region_latency_delays_cross_region_messages_by_its_amount() {
    let s = three_regions(
        "{ latency: 10ms, regionLatency: { eu: { us: 40ms, ap: 120ms }, us: { ap: 90ms } } }",
        "  - { at: 2s, node: eu-1, endpoint: web, healthy: true }\n\
         \x20 - { at: 4s, network: { regionLatency: { us: { eu: 200ms } } } }\n\
         \x20 - { at: 6s, node: eu-1, endpoint: web, healthy: false }\n\
         \x20 - { at: 8s, node: ap-1, endpoint: api, healthy: true }\n",
    );
    let o = run(&s, RunOptions::default());
    let ms = |t_ns: u64| t_ns / NS_PER_MS;
    // When each node first decided `endpoint` at or after `from_ms`.
    let decided = |node: u32, endpoint: &str, from_ms: u64| {
        o.trace
            .records
            .iter()
            .find_map(|r| match r {
                Record::Decision {
                    t_ns,
                    node: n,
                    endpoint: e,
                    ..
                } if *n == node && e == endpoint && ms(*t_ns) >= from_ms => Some(ms(*t_ns)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("node {node} never decided {endpoint}"))
    };
    // eu-1's report: 10 ms to eu-2, 10 + 40 to us-1, 10 + 120 to ap-1.
    assert_eq!(
        [0, 1, 2, 3].map(|n| decided(n, "web", 2_000)),
        [2_000, 2_010, 2_050, 2_130]
    );
    // After the network event, eu-us is 200 ms; eu-ap stays.
    assert_eq!(
        [0, 1, 2, 3].map(|n| decided(n, "web", 6_000)),
        [6_000, 6_010, 6_210, 6_130]
    );
    // ap-1's report: 10 + 90 to us-1, 10 + 120 to eu-1 and eu-2, both ways the same.
    assert_eq!(
        [3, 2, 0, 1].map(|n| decided(n, "api", 8_000)),
        [8_000, 8_100, 8_130, 8_130]
    );
    // The timeline says what changed.
    assert!(
        o.trace
            .to_timeline()
            .contains("region latency eu-us +200 ms, eu-ap +120 ms, us-ap +90 ms"),
        "{}",
        o.trace.to_timeline()
    );
}
