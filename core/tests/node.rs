//! The cases the operator guide names, and the mechanics around them, one test each.

mod common;

use bytes::Bytes;
use common::*;
use gslb_state_core::codec::ReportState::{Healthy, Unhealthy, Withdrawn};
use gslb_state_core::{
    Bucket, Connectivity, DownReason, DropReason, Input, KvRead, Output, Policy, Source,
};

fn connected(policy: Policy, q: u8, id: &str) -> gslb_state_core::Node {
    let mut n = node(id, policy, q);
    n.handle(at(0), Input::Connectivity(Connectivity::Connected));
    snapshot_done(&mut n, at(0));
    n.handle_timeout(at(0));
    n
}

fn local(endpoint: &str, healthy: Option<bool>) -> Input {
    Input::LocalHealth {
        endpoint: endpoint.into(),
        healthy,
    }
}

#[test]
fn default_policy_is_prefer_local_and_local_is_authoritative() {
    let c = gslb_state_core::Config::from_yaml("cluster: {id: c}\n").unwrap();
    assert_eq!(c.state.policy, Policy::PreferLocal);
    let mut me = connected(Policy::PreferLocal, 51, "me");
    let peer = Peer::new("a", 1);
    me.handle(at(0), peer.heartbeat(1, 1, WALL_BASE_MS));
    me.handle(at(0), peer.batch(1, 1, &[("web", 1, Healthy)]));
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.source),
        (Some(true), Source::Global),
        "no local observation: the others decide"
    );
    me.handle(at(1), local("web", Some(false)));
    let d = me.decision("web").unwrap();
    assert_eq!((d.healthy, d.source), (Some(false), Source::Local));
    assert_eq!(
        (d.healthy_reports, d.total_reports),
        (1, 2),
        "counts still explain the global view"
    );
    me.handle(at(2), local("web", None));
    assert_eq!(
        me.decision("web").unwrap().source,
        Source::Global,
        "withdrawn: back to the others"
    );
}

#[test]
fn zero_members_falls_back_to_local_under_global_quorum() {
    let mut me = connected(Policy::GlobalQuorum, 51, "me");
    assert_eq!(me.active_members(), 1, "the local node is always a member");
    me.handle(at(0), local("web", Some(true)));
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.source, d.total_reports),
        (Some(true), Source::FallbackLocal, 1)
    );
    me.handle(at(0), local("web", Some(false)));
    assert_eq!(me.decision("web").unwrap().healthy, Some(false));
}

#[test]
fn two_nodes_share_health_and_quorum_is_integer_exact() {
    let mut a = connected(Policy::GlobalQuorum, 50, "a");
    let mut b = connected(Policy::GlobalQuorum, 50, "b");
    a.handle(at(0), local("web", Some(true)));
    b.handle(at(0), local("web", Some(false)));
    pump(&mut a, &mut [&mut b], at(1));
    pump(&mut b, &mut [&mut a], at(1));
    for n in [&a, &b] {
        let d = n.decision("web").unwrap();
        assert_eq!(
            (d.healthy, d.source, d.healthy_reports, d.total_reports),
            (Some(true), Source::Global, 1, 2)
        );
        assert_eq!(n.active_members(), 2);
    }
    // 1 of 2 is 50%: passes at 50, fails at 51.
    let mut c = connected(Policy::GlobalQuorum, 51, "c");
    c.handle(at(0), local("web", Some(true)));
    let peer = Peer::new("b", 1);
    c.handle(at(1), peer.heartbeat(1, 1, WALL_BASE_MS));
    c.handle(at(1), peer.batch(1, 1, &[("web", 1, Unhealthy)]));
    assert_eq!(c.decision("web").unwrap().healthy, Some(false));
}

#[test]
fn a_member_expires_exactly_after_ttl_on_the_receivers_clock() {
    let mut me = connected(Policy::GlobalAnyHealthy, 51, "me");
    let peer = Peer::new("a", 1);
    me.handle(at(1_000), peer.heartbeat(1, 1, 0));
    me.handle(at(1_000), peer.batch(1, 1, &[("web", 1, Healthy)]));
    assert_eq!(me.decision("web").unwrap().healthy, Some(true));
    drain(&mut me);
    // TTL is 3 s: active at exactly 4.000 s, gone right after.
    me.handle_timeout(at(4_000));
    assert_eq!(me.active_members(), 2);
    let wake = me.poll_timeout();
    assert_eq!(
        wake.as_nanos(),
        4_000_000_001,
        "expiry wakes the driver right after TTL"
    );
    me.handle_timeout(gslb_state_core::Now::new(wake, at(4_001).wall));
    assert_eq!(me.active_members(), 1);
    let outs = drain(&mut me);
    assert!(
        outs.contains(&Output::MemberDown {
            node: "a".into(),
            reason: DownReason::Expired
        }),
        "{outs:?}"
    );
    let d = me.decision("web").unwrap();
    assert_eq!((d.healthy, d.source), (None, Source::Unknown));
    // The next heartbeat vouches for the same report set again.
    me.handle(at(5_000), peer.heartbeat(2, 1, 0));
    assert_eq!(me.decision("web").unwrap().healthy, Some(true));
}

#[test]
fn skewed_sender_clocks_change_no_live_decision() {
    for skew_ms in [-3_600_000i64, -3_000, 0, 3_000, 3_600_000] {
        let mut me = connected(Policy::GlobalQuorum, 51, "me");
        let peer = Peer::new("a", 1);
        let sent = (WALL_BASE_MS as i64 + 1_000 + skew_ms) as u64;
        me.handle(at(1_000), peer.heartbeat(1, 1, sent));
        me.handle(at(1_000), peer.batch(1, 1, &[("web", 1, Healthy)]));
        me.handle_timeout(at(3_900));
        let d = me.decision("web").unwrap();
        assert_eq!(
            (d.healthy, d.source, d.total_reports),
            (Some(true), Source::Global, 1),
            "skew {skew_ms}"
        );
        let info = me.members().into_iter().find(|m| m.node == "a").unwrap();
        assert_eq!(
            info.clock_offset_ms, -skew_ms,
            "the offset is visible to operators"
        );
        me.handle_timeout(at(4_001));
        assert_eq!(
            me.active_members(),
            1,
            "skew {skew_ms}: expiry is on our clock only"
        );
    }
}

#[test]
fn nats_down_degrades_to_local_and_recovers_without_loss() {
    let mut a = connected(Policy::GlobalQuorum, 51, "a");
    let mut b = connected(Policy::GlobalQuorum, 51, "b");
    b.handle(at(0), local("web", Some(false)));
    a.handle(at(0), local("web", Some(true)));
    pump(&mut a, &mut [&mut b], at(0));
    pump(&mut b, &mut [&mut a], at(0));
    assert_eq!(
        a.decision("web").unwrap().healthy,
        Some(false),
        "1 of 2 is below 51%"
    );
    // NATS goes away for both.
    a.handle(at(100), Input::Connectivity(Connectivity::Disconnected));
    b.handle(at(100), Input::Connectivity(Connectivity::Disconnected));
    b.handle(at(200), local("db", Some(true)));
    let outs = drain(&mut b);
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::Publish { .. } | Output::KvPut { .. })),
        "nothing is sent while down"
    );
    // Timers keep running; after TTL every remote member is gone and decisions are local.
    for t in (1_000..=4_000).step_by(500) {
        a.handle_timeout(at(t));
        b.handle_timeout(at(t));
    }
    assert_eq!(a.active_members(), 1);
    let d = a.decision("web").unwrap();
    assert_eq!((d.healthy, d.source), (Some(true), Source::FallbackLocal));
    assert_eq!(b.decision("db").unwrap().source, Source::FallbackLocal);
    // Back: b publishes what changed while down, before its heartbeat.
    b.handle(at(5_000), Input::Connectivity(Connectivity::Connected));
    let outs = pump(&mut b, &mut [&mut a], at(5_000));
    let kinds: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Publish { kind, .. } => Some(kind.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        ["health", "heartbeat"],
        "changes first, then the heartbeat that announces them"
    );
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::KvPut {
            bucket: Bucket::Health,
            ..
        }
    )));
    let d = a.decision("db").unwrap();
    assert_eq!((d.healthy, d.total_reports), (Some(true), 1));
    assert_eq!(
        a.decision("web").unwrap().total_reports,
        2,
        "b's old report counts again"
    );
}

#[test]
fn duplicates_reordering_and_stale_incarnations_change_nothing() {
    let mut me = connected(Policy::GlobalAnyHealthy, 51, "me");
    let peer = Peer::new("a", 5);
    let down = peer.batch(2, 2, &[("web", 2, Unhealthy)]);
    let up = peer.batch(1, 1, &[("web", 1, Healthy)]);
    me.handle(at(0), peer.heartbeat(1, 2, 0));
    me.handle(at(0), down.clone());
    me.handle(at(0), up.clone()); // late
    me.handle(at(0), down.clone()); // duplicate
    assert_eq!(me.decision("web").unwrap().healthy, Some(false));
    assert_eq!(me.stats().dropped(DropReason::Duplicate), 2);
    let old = Peer::new("a", 4);
    me.handle(at(1), old.heartbeat(9, 9, 0));
    me.handle(at(1), old.batch(9, 9, &[("web", 9, Healthy)]));
    assert_eq!(me.decision("web").unwrap().healthy, Some(false));
    assert_eq!(me.stats().dropped(DropReason::StaleIncarnation), 2);
    // A restart (newer incarnation) drops the old report set until it reports again.
    let new = Peer::new("a", 6);
    me.handle(at(2), new.heartbeat(1, 0, 0));
    assert_eq!(me.decision("web").unwrap().source, Source::Unknown);
    let outs = drain(&mut me);
    assert!(outs.contains(&Output::MemberDown {
        node: "a".into(),
        reason: DownReason::Restarted
    }));
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::MemberUp { node, incarnation: 6, .. } if node == "a"))
    );
}

#[test]
fn spoofed_foreign_and_garbage_messages_are_counted_drops() {
    let mut me = connected(Policy::GlobalAnyHealthy, 51, "me");
    let honest = Peer::new("a", 1);
    let Input::Received { payload, .. } = honest.heartbeat(1, 0, 0) else {
        unreachable!()
    };
    let as_b = Peer::new("b", 1)
        .names
        .subject(gslb_state_core::names::SubjectKind::Heartbeat, "b");
    me.handle(
        at(0),
        Input::Received {
            subject: as_b,
            payload: payload.clone(),
        },
    );
    assert_eq!(me.stats().dropped(DropReason::Spoofed), 1);
    me.handle(
        at(0),
        Input::Received {
            subject: "gslb.other.hb.a".into(),
            payload: payload.clone(),
        },
    );
    assert_eq!(me.stats().dropped(DropReason::BadName), 1);
    let subject = honest
        .names
        .subject(gslb_state_core::names::SubjectKind::Heartbeat, "a");
    me.handle(
        at(0),
        Input::Received {
            subject: subject.clone(),
            payload: Bytes::from_static(b"{\"hello\":1}"),
        },
    );
    assert_eq!(me.stats().dropped(DropReason::NotOurs), 1);
    // A health batch on a heartbeat subject.
    let Input::Received { payload: batch, .. } = honest.batch(1, 1, &[("web", 1, Healthy)]) else {
        unreachable!()
    };
    me.handle(
        at(0),
        Input::Received {
            subject,
            payload: batch,
        },
    );
    assert_eq!(me.stats().dropped(DropReason::Malformed), 1);
    // Our own id with another incarnation: a second process claims to be us.
    me.handle(at(0), Peer::new("me", 99).heartbeat(1, 0, 0));
    assert_eq!(me.stats().dropped(DropReason::DuplicateNodeId), 1);
    assert_eq!(me.active_members(), 1);
    assert_eq!(me.endpoint_count(), 0);
}

#[test]
fn a_missed_report_is_noticed_and_resynced_from_the_kv() {
    let mut me = connected(Policy::GlobalAnyHealthy, 51, "me");
    drain(&mut me);
    let peer = Peer::new("a", 1);
    me.handle(at(0), peer.batch(1, 1, &[("web", 1, Healthy)]));
    me.handle(at(0), peer.heartbeat(1, 1, 0));
    assert!(
        !drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "nothing missed yet"
    );
    // Batch 2 is lost; the next heartbeat announces report 2.
    me.handle(at(1_000), peer.heartbeat(2, 2, 0));
    let outs = drain(&mut me);
    assert!(
        outs.contains(&Output::Resync {
            node: "a".into(),
            region: String::new(),
            key_filter: "a.*".into()
        }),
        "{outs:?}"
    );
    // Not asked again while the first request is outstanding.
    me.handle(at(1_500), peer.heartbeat(3, 2, 0));
    assert!(
        !drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. }))
    );
    me.handle(at(1_600), peer.report_record("web", 1, Healthy));
    me.handle(at(1_600), peer.report_record("db", 2, Unhealthy));
    me.handle(
        at(1_600),
        Input::KvReadDone {
            read: KvRead::Reports { node: "a".into() },
            complete: true,
        },
    );
    assert_eq!(me.decision("db").unwrap().healthy, Some(false));
    me.handle(at(2_000), peer.heartbeat(4, 2, 0));
    assert!(
        !drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "in sync now"
    );
    assert_eq!(me.stats().resyncs_requested, 1);
}

#[test]
fn startup_snapshot_uses_sender_timestamps() {
    let mut me = node("me", Policy::GlobalAnyHealthy, 51);
    // Connected, the node asks for the snapshot; its records are judged when it is complete.
    me.handle(at(0), Input::Connectivity(Connectivity::Connected));
    assert!(drain(&mut me).contains(&Output::ReadSnapshot));
    let fresh = Peer::new("a", 1);
    let stale = Peer::new("b", 1);
    // At wall time base+10s: a wrote 1 s ago (active for 2 s more), b 5 s ago (older than TTL).
    let now = at(10_000);
    // c's clock runs a minute ahead: its record counts as age 0, never more than TTL.
    let ahead = Peer::new("c", 1);
    me.handle(now, fresh.member_record(7, 1, WALL_BASE_MS + 9_000));
    me.handle(now, stale.member_record(7, 1, WALL_BASE_MS + 5_000));
    me.handle(now, ahead.member_record(1, 0, WALL_BASE_MS + 70_000));
    me.handle(now, fresh.report_record("web", 1, Unhealthy));
    me.handle(now, stale.report_record("web", 1, Healthy));
    snapshot_done(&mut me, now);
    assert_eq!(me.active_member_ids(), ["a", "c", "me"]);
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.healthy_reports, d.total_reports),
        (Some(false), 0, 1)
    );
    me.handle_timeout(at(12_000));
    assert_eq!(me.active_members(), 3);
    me.handle_timeout(at(12_001));
    assert_eq!(
        me.active_member_ids(),
        ["c", "me"],
        "a expires TTL after it *sent* its record"
    );
    me.handle_timeout(at(13_000));
    assert_eq!(me.active_members(), 2);
    me.handle_timeout(at(13_001));
    assert_eq!(me.active_members(), 1, "c: TTL after the snapshot was read");
    // After the snapshot, a record read for anti-entropy vouches for nobody: only live
    // heartbeats judge freshness, so no sender clock does outside the start-up window.
    let later = Peer::new("d", 1);
    me.handle(at(14_000), later.member_record(3, 0, WALL_BASE_MS + 14_000));
    assert_eq!(me.active_members(), 1);
    me.handle(at(14_000), later.heartbeat(3, 0, 0));
    assert_eq!(
        me.active_members(),
        2,
        "the heartbeat the record stood for still counts"
    );
    // Then b's live heartbeats: its stale record vouched for nothing, so even the heartbeat
    // it stood for counts when it arrives live; a duplicate of it does not.
    me.handle(at(16_001), stale.heartbeat(7, 1, 0));
    assert!(me.active_member_ids().contains(&"b".to_string()));
    me.handle(at(16_002), stale.heartbeat(7, 1, 0));
    assert_eq!(me.stats().dropped(DropReason::Duplicate), 1);
    assert_eq!(me.decision("web").unwrap().healthy, Some(true));
}

#[test]
fn our_leftovers_from_an_earlier_life_are_deleted() {
    let mut me = node("me", Policy::PreferLocal, 51);
    let earlier_me = Peer::new("me", 0);
    me.handle(at(0), earlier_me.report_record("old", 3, Healthy));
    // Our membership record from that life is no sign of a second process with our id.
    me.handle(at(0), earlier_me.member_record(9, 3, WALL_BASE_MS));
    assert_eq!(me.stats().dropped(DropReason::DuplicateNodeId), 0);
    let outs = drain(&mut me);
    assert_eq!(
        outs,
        [Output::KvDelete {
            bucket: Bucket::Health,
            key: "me.old".into()
        }]
    );
    assert_eq!(me.endpoint_count(), 0);
}

#[test]
fn failed_kv_writes_are_retried_and_republished() {
    let mut me = connected(Policy::PreferLocal, 51, "me");
    drain(&mut me);
    me.handle(at(10), local("web", Some(true)));
    let outs = drain(&mut me);
    let (key, seq) = outs
        .iter()
        .find_map(|o| match o {
            Output::KvPut {
                bucket: Bucket::Health,
                key,
                seq,
                ..
            } => Some((key.clone(), *seq)),
            _ => None,
        })
        .expect("a KV write of the report");
    me.handle(
        at(20),
        Input::KvPutFailed {
            bucket: Bucket::Health,
            key: key.clone(),
            seq,
        },
    );
    assert!(
        drain(&mut me).is_empty(),
        "retried on the next maintenance tick, not at once"
    );
    me.handle_timeout(at(1_000));
    let outs = drain(&mut me);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::KvPut { key: k, .. } if *k == key)),
        "{outs:?}"
    );
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Publish {
            kind: gslb_state_core::MessageKind::Health,
            ..
        }
    )));
}

#[test]
fn withdrawn_reports_stop_counting() {
    let mut me = connected(Policy::GlobalQuorum, 100, "me");
    let peer = Peer::new("a", 1);
    me.handle(at(0), peer.heartbeat(1, 2, 0));
    me.handle(
        at(0),
        peer.batch(1, 2, &[("web", 1, Unhealthy), ("db", 2, Healthy)]),
    );
    me.handle(at(0), local("web", Some(true)));
    assert_eq!(me.decision("web").unwrap().healthy, Some(false));
    me.handle(at(1), peer.batch(3, 3, &[("web", 3, Withdrawn)]));
    let d = me.decision("web").unwrap();
    assert_eq!(
        (d.healthy, d.source, d.total_reports),
        (Some(true), Source::FallbackLocal, 1)
    );
}

fn config_yaml(policy: &str, q: u8, ttl: &str) -> Bytes {
    Bytes::from(format!(
        "cluster: {{id: {CLUSTER}}}\nstate:\n  healthPolicy: {policy}\n  quorumMinPercent: {q}\n  heartbeatInterval: 1s\n  heartbeatTTL: {ttl}\nendpoints:\n  - name: web\n"
    ))
}

#[test]
fn config_events_apply_forward_only_and_keep_the_last_good_one() {
    let mut me = connected(Policy::PreferLocal, 51, "me");
    let peer = Peer::new("a", 1);
    me.handle(at(0), peer.heartbeat(1, 1, 0));
    me.handle(at(0), peer.batch(1, 1, &[("web", 1, Healthy)]));
    me.handle(at(0), local("web", Some(false)));
    drain(&mut me);
    me.handle(
        at(1),
        Input::ConfigEntry {
            version: 5,
            yaml: config_yaml("global-any-healthy", 51, "3s"),
        },
    );
    let outs = drain(&mut me);
    assert!(outs.iter().any(
        |o| matches!(o, Output::ApplyConfig { version: 5, config } if config.endpoints.len() == 1)
    ));
    assert!(
        outs.iter().any(
            |o| matches!(o, Output::Decision { decision, .. } if decision.healthy == Some(true))
        ),
        "re-decided at once"
    );
    me.handle(
        at(2),
        Input::ConfigEntry {
            version: 5,
            yaml: config_yaml("local-only", 51, "3s"),
        },
    );
    me.handle(
        at(2),
        Input::ConfigEntry {
            version: 4,
            yaml: config_yaml("local-only", 51, "3s"),
        },
    );
    assert_eq!(me.policy().0, Policy::GlobalAnyHealthy);
    assert_eq!(me.stats().config_ignored, 2);
    me.handle(
        at(3),
        Input::ConfigEntry {
            version: 6,
            yaml: Bytes::from_static(b"state: [unclosed"),
        },
    );
    me.handle(
        at(3),
        Input::ConfigEntry {
            version: 7,
            yaml: config_yaml("global-quorum", 0, "3s"),
        },
    );
    me.handle(
        at(3),
        Input::ConfigEntry {
            version: 8,
            yaml: Bytes::from_static(b"cluster: {id: other}\n"),
        },
    );
    let outs = drain(&mut me);
    let rejected: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::ConfigRejected { version, error } => Some((*version, error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(
        rejected[1].1.contains("state.quorumMinPercent"),
        "{rejected:?}"
    );
    assert_eq!(
        me.policy().0,
        Policy::GlobalAnyHealthy,
        "the last good config stays"
    );
    assert_eq!(me.config_version(), 5);
    // A longer TTL applies to members already heard; a shorter one expires them.
    me.handle(
        at(3_500),
        Input::ConfigEntry {
            version: 9,
            yaml: config_yaml("global-any-healthy", 51, "10s"),
        },
    );
    me.handle_timeout(at(9_000));
    assert_eq!(me.active_members(), 2);
    me.handle(
        at(9_000),
        Input::ConfigEntry {
            version: 10,
            yaml: config_yaml("global-any-healthy", 51, "2s"),
        },
    );
    assert_eq!(me.active_members(), 1);
    assert!(drain(&mut me).contains(&Output::MemberDown {
        node: "a".into(),
        reason: DownReason::TtlChanged
    }));
}

#[test]
fn heartbeats_follow_the_interval_and_carry_the_published_sequence() {
    let mut me = connected(Policy::PreferLocal, 51, "me");
    let outs = drain(&mut me);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Publish {
            kind: gslb_state_core::MessageKind::Heartbeat,
            ..
        }
    )));
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::KvPut {
            bucket: Bucket::Members,
            ..
        }
    )));
    assert_eq!(me.poll_timeout().as_millis(), 1_000);
    me.handle_timeout(at(999));
    assert!(drain(&mut me).is_empty(), "an early timeout does nothing");
    let mut count = 0;
    for t in (1_000..=10_000).step_by(250) {
        me.handle_timeout(at(t));
        count += drain(&mut me)
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Publish {
                        kind: gslb_state_core::MessageKind::Heartbeat,
                        ..
                    }
                )
            })
            .count();
    }
    assert_eq!(count, 10, "one heartbeat per interval");
}

#[test]
fn batches_are_split_under_the_bounds() {
    let mut me = connected(Policy::PreferLocal, 51, "me");
    drain(&mut me);
    for i in 0..10_000 {
        me.handle(
            at(1),
            local(
                &format!("endpoint-{i:05}-{}", "x".repeat(200)),
                Some(i % 2 == 0),
            ),
        );
    }
    me.handle_timeout(at(1_000));
    let outs = drain(&mut me);
    let batches: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Publish {
                payload,
                kind: gslb_state_core::MessageKind::Health,
                ..
            } => Some(payload.clone()),
            _ => None,
        })
        .collect();
    assert!(batches.len() >= 3, "{}", batches.len());
    let mut peer = connected(Policy::PreferLocal, 51, "peer");
    let subject = me
        .names()
        .subject(gslb_state_core::names::SubjectKind::Health, "me");
    for b in &batches {
        assert!(b.len() <= gslb_state_core::codec::MAX_PAYLOAD_BYTES);
        peer.handle(
            at(2),
            Input::Received {
                subject: subject.clone(),
                payload: b.clone(),
            },
        );
    }
    let me_hb = outs
        .iter()
        .find_map(|o| match o {
            Output::Publish {
                subject,
                payload,
                kind: gslb_state_core::MessageKind::Heartbeat,
            } => Some((subject.clone(), payload.clone())),
            _ => None,
        })
        .unwrap();
    peer.handle(
        at(2),
        Input::Received {
            subject: me_hb.0,
            payload: me_hb.1,
        },
    );
    assert_eq!(peer.endpoint_count(), 10_000);
    assert_eq!(peer.stats().dropped_total(), 0);
    assert!(
        !drain(&mut peer)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "contiguous batches: no resync"
    );
}

#[test]
fn bounds_on_members_endpoints_and_reports_hold() {
    let mut cfg = node_config("me", Policy::GlobalAnyHealthy, 51);
    cfg.limits.max_members = 2;
    cfg.limits.max_endpoints = 3;
    cfg.limits.max_reports_per_member = 2;
    let mut me = gslb_state_core::Node::new(cfg, at(0)).unwrap();
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        me.handle(at(0), Peer::new(id, 1).heartbeat(1, 0, i as u64));
    }
    assert_eq!(me.active_members(), 3);
    assert_eq!(me.stats().dropped(DropReason::MemberLimit), 2);
    let a = Peer::new("a", 1);
    me.handle(
        at(0),
        a.batch(
            1,
            4,
            &[
                ("e1", 1, Healthy),
                ("e2", 2, Healthy),
                ("e3", 3, Healthy),
                ("e4", 4, Healthy),
            ],
        ),
    );
    assert_eq!(me.stats().dropped(DropReason::ReportLimit), 1);
    assert_eq!(me.stats().dropped(DropReason::EndpointLimit), 1);
    assert_eq!(me.endpoint_count(), 3);
    me.handle(at(0), local(&"x".repeat(256), Some(true)));
    me.handle(at(0), local("", Some(true)));
    assert_eq!(me.stats().dropped(DropReason::BadEndpointName), 2);
}

#[test]
fn long_gone_members_are_forgotten() {
    let mut cfg = node_config("me", Policy::GlobalAnyHealthy, 51);
    cfg.limits.forget_after_ttls = 10;
    let mut me = gslb_state_core::Node::new(cfg, at(0)).unwrap();
    me.handle(at(0), Input::Connectivity(Connectivity::Connected));
    snapshot_done(&mut me, at(0));
    let peer = Peer::new("a", 1);
    me.handle(at(0), peer.heartbeat(1, 1, 0));
    me.handle(at(0), peer.batch(1, 1, &[("web", 1, Healthy)]));
    assert_eq!(me.members().len(), 2);
    // 10 TTLs is only 30 s here, but nobody is forgotten sooner than FORGET_AFTER_MIN.
    for t in (0..=300_000).step_by(1_000) {
        me.handle_timeout(at(t));
    }
    assert_eq!(
        me.members().len(),
        2,
        "a partition of minutes loses nothing"
    );
    let gone_ms = gslb_state_core::node::FORGET_AFTER_MIN.as_millis() as u64 + 10_000;
    for t in (300_000..=gone_ms).step_by(1_000) {
        me.handle_timeout(at(t));
    }
    assert_eq!(
        me.members().len(),
        1,
        "forgotten after FORGET_AFTER_MIN of silence"
    );
    me.handle(at(gone_ms), peer.heartbeat(2, 1, 0));
    assert!(
        drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "and re-synced when it returns"
    );
}

#[test]
fn a_full_member_table_makes_room_by_forgetting_the_longest_silent() {
    let mut cfg = node_config("me", Policy::GlobalAnyHealthy, 51);
    cfg.limits.max_members = 2;
    let mut me = gslb_state_core::Node::new(cfg, at(0)).unwrap();
    me.handle(at(0), Peer::new("a", 1).heartbeat(1, 0, 0));
    me.handle(at(1_000), Peer::new("b", 1).heartbeat(1, 0, 0));
    // Both active: a third is refused.
    me.handle(at(1_000), Peer::new("c", 1).heartbeat(1, 0, 0));
    assert_eq!(me.stats().dropped(DropReason::MemberLimit), 1);
    // a falls silent first, then b; c takes a's place.
    me.handle_timeout(at(4_500));
    assert_eq!(me.active_members(), 1);
    me.handle(at(4_500), Peer::new("c", 1).heartbeat(1, 0, 0));
    let ids: Vec<String> = me.members().into_iter().map(|m| m.node).collect();
    assert_eq!(ids, ["me", "b", "c"]);
}

#[test]
fn only_a_complete_read_of_reports_counts_as_synced() {
    let mut me = connected(Policy::GlobalAnyHealthy, 51, "me");
    drain(&mut me);
    let peer = Peer::new("a", 1);
    me.handle(at(0), peer.batch(1, 1, &[("web", 1, Healthy)]));
    me.handle(at(0), peer.heartbeat(1, 1, 0));
    // Report 2 is lost; the heartbeat announces it and a re-sync is asked for.
    me.handle(at(1_000), peer.heartbeat(2, 2, 0));
    assert!(
        drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. }))
    );
    // The read fails part-way; an anti-entropy read of the members bucket ends meanwhile.
    me.handle(
        at(1_100),
        Input::KvReadDone {
            read: KvRead::Reports { node: "a".into() },
            complete: false,
        },
    );
    me.handle(
        at(1_100),
        Input::KvReadDone {
            read: KvRead::Members,
            complete: true,
        },
    );
    // Neither made us believe we have report 2: the failed read is over, so the member's next
    // heartbeat asks again (not a TTL after the failed attempt).
    me.handle(at(2_000), peer.heartbeat(3, 2, 0));
    assert!(
        drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "asked again"
    );
    // That one is in flight: the next heartbeat does not ask a third time.
    me.handle(at(2_500), peer.heartbeat(4, 2, 0));
    assert!(
        !drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "in flight"
    );
    assert_eq!(me.stats().resyncs_requested, 2);
}

#[test]
fn a_kv_read_is_trusted_only_up_to_what_the_sender_says_is_durable() {
    let mut me = connected(Policy::GlobalAnyHealthy, 51, "me");
    drain(&mut me);
    let peer = Peer::new("a", 1);
    // a reported web (1) and db (2), both missed here; only web's KV write is acknowledged.
    me.handle(at(0), peer.heartbeat_kv(1, 2, 1, 0));
    assert!(
        drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. }))
    );
    // The read races db's write: it finds web only, and is complete.
    me.handle(at(10), peer.report_record("web", 1, Healthy));
    me.handle(
        at(10),
        Input::KvReadDone {
            read: KvRead::Reports { node: "a".into() },
            complete: true,
        },
    );
    assert_eq!(me.decision("db"), None);
    // Nothing more is durable yet: no pointless read.
    me.handle(at(1_000), peer.heartbeat_kv(2, 2, 1, 0));
    assert!(
        !drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. }))
    );
    // db's write lands: the next heartbeat says so, and the read is asked for at once.
    me.handle(at(1_100), peer.heartbeat_kv(3, 2, 2, 0));
    assert!(
        drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "read again"
    );
    me.handle(at(1_110), peer.report_record("web", 1, Healthy));
    me.handle(at(1_110), peer.report_record("db", 2, Unhealthy));
    me.handle(
        at(1_110),
        Input::KvReadDone {
            read: KvRead::Reports { node: "a".into() },
            complete: true,
        },
    );
    assert_eq!(me.decision("db").unwrap().healthy, Some(false));
    me.handle(at(2_000), peer.heartbeat_kv(4, 2, 2, 0));
    assert!(
        !drain(&mut me)
            .iter()
            .any(|o| matches!(o, Output::Resync { .. })),
        "in sync"
    );
    assert_eq!(me.stats().resyncs_requested, 2);
}

#[test]
fn a_node_says_which_of_its_reports_are_durable() {
    let mut me = connected(Policy::PreferLocal, 51, "me");
    drain(&mut me);
    me.handle(at(1), local("web", Some(true)));
    me.handle(at(1), local("db", Some(false)));
    let puts: Vec<(String, u64)> = drain(&mut me)
        .into_iter()
        .filter_map(|o| match o {
            Output::KvPut {
                bucket: Bucket::Health,
                key,
                seq,
                ..
            } => Some((key, seq)),
            _ => None,
        })
        .collect();
    assert_eq!(puts.len(), 2);
    let kv_seq_of_next_heartbeat = |me: &mut gslb_state_core::Node, t: u64| {
        me.handle_timeout(at(t));
        drain(me)
            .into_iter()
            .find_map(|o| match o {
                Output::Publish {
                    payload,
                    kind: gslb_state_core::MessageKind::Heartbeat,
                    ..
                } => match gslb_state_core::codec::decode(&payload).unwrap() {
                    gslb_state_core::codec::Message::Heartbeat(hb) => {
                        Some((hb.report_seq, hb.kv_seq))
                    }
                    _ => None,
                },
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(kv_seq_of_next_heartbeat(&mut me, 1_000), (2, 0));
    // db's write (seq 2) is acknowledged first: still only 0 is durable in order.
    me.handle(
        at(1_100),
        Input::KvPutOk {
            bucket: Bucket::Health,
            key: puts[1].0.clone(),
            seq: puts[1].1,
            revision: 2,
        },
    );
    assert_eq!(kv_seq_of_next_heartbeat(&mut me, 2_000), (2, 0));
    me.handle(
        at(2_100),
        Input::KvPutOk {
            bucket: Bucket::Health,
            key: puts[0].0.clone(),
            seq: puts[0].1,
            revision: 1,
        },
    );
    assert_eq!(kv_seq_of_next_heartbeat(&mut me, 3_000), (2, 2));
}
