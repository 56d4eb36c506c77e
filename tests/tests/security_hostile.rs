//! Hostile peers on a real nats-server, end to end.
//!
//! * Spoofing: a client holding node n1's certificate (so allowed to publish on n1's subjects
//!   and keys, and nothing else) sends messages that claim to be from n2, or from cluster d1.
//!   The receiving node drops and counts them (`gslbd_state_dropped_total{reason="spoofed"}` /
//!   `"wrong-cluster"`) and its decisions do not move.
//! * Bounds: a client allowed to publish anywhere under `gslb.c1.` sends oversized payloads, a
//!   flood of made-up node ids, and one node announcing more endpoints than allowed. The node
//!   drops and counts, its tables stay within the bounds it was given, and it keeps answering
//!   and deciding.

mod security_common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gslb_state_core::codec::{self, Message, ReportRecord, ReportState};
use gslb_state_core::time::{Instant as CoreInstant, WallTime};
use gslb_state_core::{
    Config, Connectivity, Input, KvRead, Limits, MessageKind, Node, NodeConfig, Now, Output, Source,
};
use gslb_state_nats::{Handle, NodeOptions};
use gslb_state_tests::{NatsServer, ServerOpts, wait_until};
use security_common::*;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a genuine node `node` of `cluster` publishes first, made by a real core (so the test
/// needs no knowledge of the wire format): its heartbeat, and the health batch carrying
/// `endpoints` (all healthy or all not).
struct Forged {
    heartbeat: Bytes,
    batch: Option<Bytes>,
}

fn forge(cluster: &str, node: &str, endpoints: &[String], healthy: bool) -> Forged {
    let now = Now::new(
        CoreInstant::from_millis(1),
        WallTime::from_unix_ms(now_ms()),
    );
    let config = NodeConfig::from_config(&Config::with_defaults(cluster), node);
    let mut core = Node::new(config, now).unwrap();
    core.handle(now, Input::Connectivity(Connectivity::Connected));
    core.handle(
        now,
        Input::KvReadDone {
            read: KvRead::Snapshot,
            complete: true,
        },
    );
    // The report read the core asks for then (one region without region buckets): empty.
    core.handle(
        now,
        Input::KvReadDone {
            read: KvRead::SnapshotReports {
                region: String::new(),
            },
            complete: true,
        },
    );
    for endpoint in endpoints {
        core.handle(
            now,
            Input::LocalHealth {
                endpoint: endpoint.clone(),
                healthy: Some(healthy),
            },
        );
    }
    core.handle_timeout(now);
    let (mut heartbeat, mut batch) = (None, None);
    while let Some(out) = core.poll_output() {
        if let Output::Publish { payload, kind, .. } = out {
            match kind {
                MessageKind::Heartbeat => heartbeat = heartbeat.or(Some(payload)),
                MessageKind::Health => batch = batch.or(Some(payload)),
                _ => {}
            }
        }
    }
    Forged {
        heartbeat: heartbeat.expect("a connected node heartbeats at once"),
        batch,
    }
}

async fn wait_metric(node: &Handle, series: &str, at_least: f64) {
    let what = format!("{}: {series} >= {at_least}", node.node_id());
    wait_until(SOON, &what, || async { metric(node, series) >= at_least })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", node.metrics().encode()));
}

async fn wait_decision(node: &Handle, ep: &str, healthy: bool, source: Source) {
    let what = format!(
        "{} to decide {ep} = {healthy} from {source:?}",
        node.node_id()
    );
    wait_until(SOON, &what, || async {
        node.decision(ep)
            .is_some_and(|d| d.healthy == Some(healthy) && d.source == source)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; decision: {:?}", node.decision(ep)));
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_claiming_another_node_or_cluster_are_dropped_and_counted() {
    let s = SecureServer::start(&[("c1", "n1"), ("c1", "n2"), ("c1", "n3")], "", |n| {
        n.permissions()
    });
    s.bootstrap().await;
    let n2 = s.node("n2").start();
    let n3 = s.node("n3").start();
    wait_members(&n3, &["n2", "n3"]).await;
    n2.set_health("api", Some(true)).unwrap();
    wait_decision(&n3, "api", true, Source::Global).await;

    // A client with n1's certificate: it may publish on n1's subjects only.
    let (rogue, _errors) = s.client_of("n1").await;
    // "I am n2" (on n1's subjects), saying api is down; "I am n1 of cluster d1".
    let as_n2 = forge("c1", "n2", &["api".to_owned()], false);
    let as_d1 = forge("d1", "n1", &["api".to_owned()], false);
    for _ in 0..5 {
        rogue
            .publish("gslb.c1.hb.n1", as_n2.heartbeat.clone())
            .await
            .unwrap();
        rogue
            .publish("gslb.c1.health.n1", as_n2.batch.clone().unwrap())
            .await
            .unwrap();
        rogue
            .publish("gslb.c1.hb.n1", as_d1.heartbeat.clone())
            .await
            .unwrap();
    }
    rogue.flush().await.unwrap();
    wait_metric(&n3, "gslbd_state_dropped_total{reason=\"spoofed\"}", 10.0).await;
    wait_metric(
        &n3,
        "gslbd_state_dropped_total{reason=\"wrong-cluster\"}",
        5.0,
    )
    .await;
    // Nothing was believed: n1 never became a member, n2's own report still counts alone.
    let d = n3
        .decisions()
        .await
        .unwrap()
        .into_iter()
        .find_map(|(e, d)| (e == "api").then_some(d))
        .unwrap();
    assert_eq!(
        (d.healthy, d.source, d.healthy_reports, d.total_reports),
        (Some(true), Source::Global, 1, 1),
        "{d:?}"
    );
    wait_members(&n3, &["n2", "n3"]).await;

    // A forged record under n1's own KV key, claiming n2: a node reading the KV drops it too.
    let js = async_nats::jetstream::with_domain(rogue.clone(), "gslb");
    let health = js.get_key_value("gslb_c1_health").await.unwrap();
    let forged = codec::encode(&Message::Report(ReportRecord {
        cluster: "c1",
        node: "n2",
        endpoint: "api",
        incarnation: now_ms(),
        seq: 99,
        sent_unix_ms: now_ms(),
        state: ReportState::Unhealthy,
    }));
    health.put("n1.api", forged).await.unwrap();
    let (late, mut events) =
        Handle::start_with_events(NodeOptions::new(s.node("n1").config.clone(), "n1")).unwrap();
    gslb_state_tests::wait_for(SOON, "the late node's snapshot", || {
        let ev = events.try_recv().ok();
        async move { matches!(ev, Some(gslb_state_nats::Event::SnapshotLoaded { .. })).then_some(()) }
    })
    .await
    .unwrap();
    wait_metric(&late, "gslbd_state_dropped_total{reason=\"spoofed\"}", 1.0).await;
    wait_decision(&late, "api", true, Source::Global).await;
    for n in [n2, n3, late] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_peer_cannot_grow_a_node_past_its_bounds() {
    // The server lets payloads of up to 2 MB through, so the node's own 1 MiB bound is what
    // stops the 1.5 MB ones.
    let server =
        NatsServer::single(ServerOpts::default().extra_config("max_payload: 2MB")).unwrap();
    let yaml = |node: &str| {
        format!(
            "cluster:\n  id: \"c1\"\nnode:\n  id: \"{node}\"\nstate:\n  heartbeatInterval: \"200ms\"\n  heartbeatTTL: \"2s\"\n\
             nats:\n  servers: [\"{}\"]\n  jetStream:\n    domain: \"gslb\"\n",
            server.url()
        )
    };
    let limits = Limits {
        max_members: 16,
        max_endpoints: 64,
        max_reports_per_member: 20,
        ..Limits::default()
    };
    let n1 = Handle::start(NodeOptions {
        limits: limits.clone(),
        ..NodeOptions::new(parse(&yaml("n1")), "n1")
    })
    .unwrap();
    let n2 = Handle::start(NodeOptions::new(parse(&yaml("n2")), "n2")).unwrap();
    wait_members(&n1, &["n1", "n2"]).await;
    n2.set_health("api", Some(true)).unwrap();
    wait_decision(&n1, "api", true, Source::Global).await;

    let hostile = async_nats::connect(server.url()).await.unwrap();
    // Oversized payloads: dropped unread by the node; past the server's bound the server (and
    // the client) refuse them outright.
    let big = Bytes::from(vec![b'G'; 1_500_000]);
    for _ in 0..5 {
        hostile
            .publish("gslb.c1.hb.big", big.clone())
            .await
            .unwrap();
    }
    assert!(
        hostile
            .publish("gslb.c1.hb.huge", Bytes::from(vec![0u8; 3_000_000]))
            .await
            .is_err(),
        "past the server's max_payload"
    );
    // One node announcing more endpoints than allowed (200 > 20), and more distinct endpoints
    // overall than the node keeps (200 > 64).
    let names: Vec<String> = (0..200).map(|i| format!("ep{i}")).collect();
    let greedy = forge("c1", "greedy", &names, true);
    hostile
        .publish("gslb.c1.hb.greedy", greedy.heartbeat)
        .await
        .unwrap();
    hostile
        .publish("gslb.c1.health.greedy", greedy.batch.unwrap())
        .await
        .unwrap();
    for (i, chunk) in names.chunks(20).enumerate() {
        let id = format!("fake{i}");
        let forged = forge("c1", &id, chunk, true);
        hostile
            .publish(format!("gslb.c1.hb.{id}"), forged.heartbeat)
            .await
            .unwrap();
        hostile
            .publish(format!("gslb.c1.health.{id}"), forged.batch.unwrap())
            .await
            .unwrap();
    }
    // Then a flood of made-up node ids.
    for i in 0..500 {
        let id = format!("fake{i}");
        hostile
            .publish(
                format!("gslb.c1.hb.{id}"),
                forge("c1", &id, &[], true).heartbeat,
            )
            .await
            .unwrap();
    }
    hostile.flush().await.unwrap();

    wait_metric(&n1, "gslbd_state_dropped_total{reason=\"too-large\"}", 5.0).await;
    wait_metric(
        &n1,
        "gslbd_state_dropped_total{reason=\"member-limit\"}",
        1.0,
    )
    .await;
    wait_metric(
        &n1,
        "gslbd_state_dropped_total{reason=\"report-limit\"}",
        1.0,
    )
    .await;
    wait_metric(
        &n1,
        "gslbd_state_dropped_total{reason=\"endpoint-limit\"}",
        1.0,
    )
    .await;

    // Memory stays within the bounds: members, reports per member, endpoints.
    let members = n1.members().await.unwrap();
    println!(
        "after the flood: {} members, {} endpoints, most reports held for one member: {}",
        members.len(),
        n1.decisions().await.unwrap().len(),
        members.iter().map(|m| m.reports).max().unwrap()
    );
    assert!(members.len() <= limits.max_members + 1, "{}", members.len());
    assert!(
        members
            .iter()
            .all(|m| m.local || m.reports <= limits.max_reports_per_member)
    );
    assert!(n1.decisions().await.unwrap().len() <= limits.max_endpoints);

    // And the node keeps answering and deciding: n2 (a member before the flood) is heard.
    for _ in 0..10 {
        let t = Instant::now();
        n1.stats().await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
    n2.set_health("api", Some(false)).unwrap();
    wait_decision(&n1, "api", false, Source::Global).await;
    assert!(n1.is_connected());
    for n in [n1, n2] {
        n.shutdown().await;
    }
}
