//! The NATS driver against one real nats-server: convergence, metrics, a node that cannot reach
//! NATS at start, a node killed and restarted, the only server down and back, and the handle
//! under smol and from a plain thread.

mod driver_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use driver_common::*;
use gslb_state_core::codec::{Heartbeat, Message, encode};
use gslb_state_core::{DownReason, Source};
use gslb_state_nats::Event;
use gslb_state_tests::{NatsServer, ServerOpts, wait_until, wait_until_blocking};

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_converge_a_flip_reaches_every_other_and_metrics_count_it() {
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    let urls = vec![server.url()];
    let n1 = start(&urls, "prefer-local", "n1");
    let n2 = start(&urls, "prefer-local", "n2");
    n1.set_health("api", Some(true)).unwrap();
    n2.set_health("web", Some(true)).unwrap();
    // n3 starts once n1's report is in the KV, so its snapshot reads something.
    wait_until(SOON, "n1's report in the KV", || async {
        metric(
            &n1,
            "gslbd_state_kv_put_total{bucket=\"gslb_c1_health\",result=\"ok\"}",
        )
        .is_some_and(|v| v >= 1.0)
    })
    .await
    .unwrap();
    let n3 = start(&urls, "prefer-local", "n3");
    let mut n3_events = n3.subscribe();
    n3.set_health("web", Some(false)).unwrap();
    wait_members_all(&[&n1, &n2, &n3], &["n1", "n2", "n3"], SOON).await;

    // n3's start-up snapshot held n1's report on "api" (and n3's own "web").
    let loaded = tokio::time::timeout(SOON, async {
        loop {
            if let Event::SnapshotLoaded { endpoints, .. } = n3_events.recv().await.unwrap() {
                break endpoints;
            }
        }
    })
    .await
    .expect("n3 loads its snapshot");
    assert!(loaded >= 2, "endpoints after n3's snapshot: {loaded}");

    // Only n1 observes "api": the others decide it from n1's report.
    wait_decision_all(&[&n2, &n3], "api", Some(true), Source::Global, SOON).await;
    assert_global(&n2, "api", true, 1, 1).await;
    // "web" is observed by n2 (up) and n3 (down): n1 counts both, 1 of 2 healthy < 51 %.
    wait_decision(&n1, "web", Some(false), Source::Global, SOON).await;
    assert_global(&n1, "web", false, 1, 2).await;
    assert_eq!(n2.decision("web").unwrap().source, Source::Local);

    // A flip at n1 reaches every other node.
    let flipped = Instant::now();
    n1.set_health("api", Some(false)).unwrap();
    let took = wait_decision_all(&[&n2, &n3], "api", Some(false), Source::Global, SOON).await;
    report("single server: flip at n1 decided at n2 and n3", took);
    assert_eq!(n1.decision("api").unwrap().source, Source::Local);
    assert!(
        flipped.elapsed() < Duration::from_secs(2),
        "a flip is one broker hop, not a TTL"
    );

    // Inputs that are not ours are dropped and counted by reason.
    let raw = async_nats::connect(server.url()).await.unwrap();
    raw.publish("gslb.c1.hb.n9", Bytes::from_static(b"not a gslb message"))
        .await
        .unwrap();
    let spoofed = encode(&Message::Heartbeat(Heartbeat {
        cluster: CLUSTER,
        node: "n2",
        region: "",
        incarnation: 1,
        seq: 1,
        sent_unix_ms: 1,
        report_seq: 0,
        kv_seq: 0,
    }));
    raw.publish("gslb.c1.hb.n9", spoofed).await.unwrap();
    raw.flush().await.unwrap();
    for series in [
        "gslbd_state_dropped_total{reason=\"not-ours\"}",
        "gslbd_state_dropped_total{reason=\"spoofed\"}",
    ] {
        wait_until(SOON, series, || async { metric(&n1, series) == Some(1.0) })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", n1.metrics().encode()));
    }

    // The flip's durable write trails its publish (kv_write_delay): await its ack.
    let flip_written = "gslbd_state_kv_put_total{bucket=\"gslb_c1_health\",result=\"ok\"}";
    wait_until(SOON, flip_written, || async {
        metric(&n1, flip_written).is_some_and(|v| v >= 2.0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", n1.metrics().encode()));

    // The guide's metric names, with values that show the traffic above.
    let text = n1.metrics().encode();
    let at_least = |series: &str, min: f64| {
        let v = metric(&n1, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= min, "{series} = {v}, want >= {min}\n{text}");
    };
    at_least("gslbd_state_nats_connected", 1.0);
    assert_eq!(metric(&n1, "gslbd_state_active_members"), Some(3.0));
    at_least("gslbd_state_nats_published_total{type=\"heartbeat\"}", 2.0);
    at_least("gslbd_state_nats_published_total{type=\"health\"}", 2.0);
    at_least("gslbd_state_nats_received_total{type=\"heartbeat\"}", 2.0);
    at_least("gslbd_state_nats_received_total{type=\"health\"}", 1.0);
    at_least(
        "gslbd_state_kv_put_total{bucket=\"gslb_c1_members\",result=\"ok\"}",
        1.0,
    );
    at_least(
        "gslbd_state_kv_put_total{bucket=\"gslb_c1_health\",result=\"ok\"}",
        2.0,
    );
    at_least("gslbd_state_decision_changes_total", 3.0);
    let n3_get = "gslbd_state_kv_get_total{bucket=\"gslb_c1_health\",result=\"ok\"}";
    assert!(
        metric(&n3, n3_get).is_some_and(|v| v >= 1.0),
        "n3 read n1's report in its snapshot\n{}",
        n3.metrics().encode()
    );
    for node in [n1, n2, n3] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_at_start_decides_at_once_and_connects_in_the_background() {
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    server.kill().unwrap();
    let urls = vec![server.url()];

    let started = Instant::now();
    let n1 = start(&urls, "prefer-local", "n1");
    let start_took = started.elapsed();
    assert!(
        start_took < Duration::from_millis(500),
        "start must not wait for NATS: {start_took:?}"
    );
    n1.set_health("api", Some(false)).unwrap();
    let took = wait_decision(&n1, "api", Some(false), Source::Local, SOON).await;
    report("unreachable at start: first local decision", took);
    assert!(!n1.is_connected());
    assert_eq!(metric(&n1, "gslbd_state_nats_connected"), Some(0.0));
    wait_until(SOON, "a connect error that says why", || async {
        n1.last_connect_error()
            .is_some_and(|e| e.contains(&server.url()) && e.contains("refused"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", n1.last_connect_error()));

    let restarted = Instant::now();
    server.restart().unwrap();
    let took = wait_connected(&n1, SOON).await;
    report(
        "unreachable at start: connected after the server came up",
        restarted.elapsed().min(took),
    );
    assert_eq!(n1.last_connect_error(), None);
    // What n1 decided while alone reaches a node that starts now.
    let n2 = start(&urls, "prefer-local", "n2");
    wait_decision(&n2, "api", Some(false), Source::Global, SOON).await;
    wait_members_all(&[&n1, &n2], &["n1", "n2"], SOON).await;
    n1.shutdown().await;
    n2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_leaves_every_quorum_after_the_ttl_and_rejoins_after_a_restart() {
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    let urls = vec![server.url()];
    let ids = ["n1", "n2", "n3", "n4"];
    let mut nodes: Vec<_> = ids
        .iter()
        .map(|id| start(&urls, "global-quorum", id))
        .collect();
    // "web": n1, n2 up; n3, n4 down: 2 of 4 = 50 % < 51 %: down everywhere.
    for (node, up) in nodes.iter().zip([true, true, false, false]) {
        node.set_health("web", Some(up)).unwrap();
    }
    let all: Vec<_> = nodes.iter().collect();
    wait_members_all(&all, &ids, SOON).await;
    for node in &all {
        wait_until(SOON, "every report counted", || async {
            current(node, "web")
                .await
                .is_some_and(|d| d.healthy == Some(false) && d.total_reports == 4)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", node.decision("web")));
    }

    // n4 dies (its driver stops without a word to anyone): after the TTL, 2 of 3 = 67 %.
    let mut events = nodes[0].subscribe();
    let n4 = nodes.pop().unwrap();
    n4.shutdown_quietly().await;
    let killed = Instant::now();
    let left = &nodes[..];
    let took = wait_decision_all(
        &left.iter().collect::<Vec<_>>(),
        "web",
        Some(true),
        Source::Global,
        SOON,
    )
    .await;
    report("node killed: left the quorum after", took);
    assert!(
        took >= TTL - INTERVAL - Duration::from_millis(100),
        "left after {took:?}: too early for a TTL of {TTL:?}"
    );
    assert_global(&nodes[0], "web", true, 2, 3).await;
    let down = loop {
        match events.recv().await.unwrap() {
            Event::MemberDown { node, reason } if node == "n4" => break reason,
            _ => {}
        }
    };
    assert_eq!(down, DownReason::Expired);
    assert!(killed.elapsed() < SOON);

    // n4 restarts (a new incarnation) and reports again: back in every quorum.
    let n4 = start(&urls, "global-quorum", "n4");
    n4.set_health("web", Some(false)).unwrap();
    nodes.push(n4);
    let all: Vec<_> = nodes.iter().collect();
    wait_decision_all(&all[..3], "web", Some(false), Source::Global, SOON).await;
    wait_members_all(&all, &ids, SOON).await;
    assert_global(&nodes[0], "web", false, 2, 4).await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_only_server_down_falls_back_to_local_and_recovers_everything_when_back() {
    let _serial = serial().await;
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    let urls = vec![server.url()];
    let ids = ["n1", "n2", "n3"];
    let nodes: Vec<_> = ids
        .iter()
        .map(|id| start(&urls, "global-quorum", id))
        .collect();
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    // "web": 1 of 3 healthy: down everywhere.
    n1.set_health("web", Some(true)).unwrap();
    n2.set_health("web", Some(false)).unwrap();
    n3.set_health("web", Some(false)).unwrap();
    wait_members_all(&[n1, n2, n3], &ids, SOON).await;
    wait_decision_all(&[n1, n2, n3], "web", Some(false), Source::Global, SOON).await;

    server.kill().unwrap();
    let killed = Instant::now();
    // Remote members expire: each node decides from its own observation.
    wait_decision(n1, "web", Some(true), Source::FallbackLocal, SOON).await;
    report("all servers down: local fallback after", killed.elapsed());
    wait_decision(n2, "web", Some(false), Source::FallbackLocal, SOON).await;
    for node in [n1, n2, n3] {
        assert_eq!(active_members(node).await, [node.node_id()]);
        assert!(!node.is_connected());
    }
    // Changes made while NATS is away.
    n2.set_health("web", Some(true)).unwrap();
    n3.set_health("new", Some(true)).unwrap();
    wait_decision(n2, "web", Some(true), Source::FallbackLocal, SOON).await;

    let restarted = Instant::now();
    server.restart().unwrap();
    // Nothing lost: 2 of 3 healthy now, and "new" is known everywhere.
    wait_members_all(&[n1, n2, n3], &ids, SLOW).await;
    wait_decision_all(&[n1, n2, n3], "web", Some(true), Source::Global, SOON).await;
    wait_decision_all(&[n1, n2], "new", Some(true), Source::Global, SOON).await;
    report("all servers back: full recovery after", restarted.elapsed());
    assert_global(n1, "web", true, 2, 3).await;
    // And the KV holds it: a node that starts now learns it from its snapshot.
    let n4 = start(&urls, "global-quorum", "n4");
    wait_decision(&n4, "new", Some(true), Source::Global, SOON).await;
    n4.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// The handle needs no tokio: one node lives inside `smol::block_on`, another on a plain
/// thread with no async runtime at all.
#[test]
fn the_handle_works_under_smol_and_from_a_plain_thread() {
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    let urls = vec![server.url()];
    let smol_urls = urls.clone();
    let under_smol = std::thread::spawn(move || {
        smol::block_on(async {
            let n1 = start(&smol_urls, "prefer-local", "n1");
            let mut events = n1.subscribe();
            n1.set_health("a", Some(true)).unwrap();
            let mut saw_local = false;
            let mut saw_n2 = false;
            let mut saw_b = false;
            let deadline = Instant::now() + SOON;
            while !(saw_local && saw_n2 && saw_b) {
                let event = smol::future::or(async { Some(events.recv().await) }, async {
                    smol::Timer::at(deadline).await;
                    None
                })
                .await;
                let Some(event) = event else {
                    panic!("events under smol: local {saw_local}, n2 up {saw_n2}, b {saw_b}");
                };
                match event.unwrap() {
                    Event::Decision { endpoint, decision } if endpoint == "a" => {
                        saw_local = decision.source == Source::Local;
                    }
                    Event::Decision { endpoint, decision } if endpoint == "b" => {
                        saw_b = decision.source == Source::Global && decision.healthy == Some(true);
                    }
                    Event::MemberUp { node, .. } if node == "n2" => saw_n2 = true,
                    _ => {}
                }
            }
            let decisions = n1.decisions().await.unwrap();
            assert!(decisions.iter().any(|(e, _)| e == "b"), "{decisions:?}");
            // Stay up until n2 has seen "a".
            smol::Timer::after(Duration::from_secs(2)).await;
            n1.shutdown().await;
        })
    });
    // No runtime on this thread: only blocking calls.
    let n2 = start(&urls, "prefer-local", "n2");
    n2.set_health("b", Some(true)).unwrap();
    wait_until_blocking(SOON, "n2 to learn \"a\" from n1", || {
        n2.decision("a")
            .is_some_and(|d| d.healthy == Some(true) && d.source == Source::Global)
    })
    .unwrap();
    under_smol.join().expect("the smol node");
    drop(n2);
}

/// `NodeOptions::on_decision` is called for every `Event::Decision`, on the driver's thread,
/// with the decision already in force (`Handle::decision` returns it) and before the event is
/// sent; endpoints whose verdict and source did not change are not passed to it.
#[tokio::test(flavor = "multi_thread")]
async fn the_decision_listener_sees_every_decision_event_in_force_and_before_it() {
    use gslb_state_core::Decision;
    use gslb_state_nats::{DecisionListener, Handle, NodeOptions};
    use std::sync::{Arc, Mutex};

    let server = NatsServer::single(ServerOpts::default()).unwrap();
    let urls = vec![server.url()];
    let heard: Arc<Mutex<Vec<(String, Decision, String)>>> = Arc::default();
    let n1 = {
        let heard = heard.clone();
        Handle::start(NodeOptions {
            on_decision: Some(DecisionListener::new(move |endpoint, decision| {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                heard
                    .lock()
                    .unwrap()
                    .push((endpoint.to_owned(), *decision, thread));
            })),
            ..NodeOptions::new(config(&urls, "global-any-healthy", ""), "n1")
        })
        .unwrap()
    };
    let mut events = n1.subscribe();
    let n2 = start(&urls, "global-any-healthy", "n2");
    wait_members_all(&[&n1, &n2], &["n1", "n2"], SOON).await;

    // A local change, one from a peer, then the peer's withdrawal: each an event at n1.
    n1.set_health("web", Some(false)).unwrap();
    n2.set_health("api", Some(true)).unwrap();
    wait_decision(&n1, "api", Some(true), Source::Global, SOON).await;
    n2.set_health("api", None).unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(SOON, async {
        while seen.len() < 3 {
            if let Event::Decision { endpoint, decision } = events.recv().await.unwrap() {
                // The listener ran before the event was sent: it has this one already.
                let heard = heard.lock().unwrap();
                let (e, d, _) = heard
                    .get(seen.len())
                    .unwrap_or_else(|| panic!("event {endpoint} before the listener: {heard:?}"));
                assert_eq!((e, d), (&endpoint, &decision));
                seen.push(endpoint);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("3 decision events; saw {seen:?}"));
    assert_eq!(seen, ["web", "api", "api"]);
    // In force when it was called: what the handle returns now is the last one passed.
    let heard = heard.lock().unwrap().clone();
    assert_eq!(n1.decision("api"), Some(heard[2].1));
    assert_eq!(heard[1].1.healthy, Some(true));
    assert_ne!(heard[2].1.source, Source::Global, "{heard:?}");
    assert!(
        heard.iter().all(|(_, _, t)| t == "gslb-state-n1"),
        "called on the driver's thread: {heard:?}"
    );
    for node in [n1, n2] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_spawned_on_the_callers_runtime_share_state_and_leave_when_dropped() {
    use gslb_state_nats::{DecisionListener, Handle, NodeOptions};
    use std::sync::{Arc, Mutex};

    let server = NatsServer::single(ServerOpts::default()).unwrap();
    let urls = vec![server.url()];
    let threads: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = {
        let threads = threads.clone();
        DecisionListener::new(move |_, _| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            threads.lock().unwrap().push(name);
        })
    };
    let (n1, mut events) = Handle::spawn(NodeOptions {
        on_decision: Some(listener),
        ..NodeOptions::new(config(&urls, "global-any-healthy", ""), "n1")
    })
    .await
    .unwrap();
    let (n2, _) = Handle::spawn(NodeOptions::new(
        config(&urls, "global-any-healthy", ""),
        "n2",
    ))
    .await
    .unwrap();
    // A node on its own thread joins them: both kinds interoperate.
    let n3 = start(&urls, "global-any-healthy", "n3");
    wait_members_all(&[&n1, &n2, &n3], &["n1", "n2", "n3"], SOON).await;

    n2.set_health("api", Some(true)).unwrap();
    wait_decision(&n1, "api", Some(true), Source::Global, SOON).await;
    wait_decision(&n3, "api", Some(true), Source::Global, SOON).await;
    let threads = threads.lock().unwrap().clone();
    assert!(!threads.is_empty());
    assert!(
        threads.iter().all(|t| !t.starts_with("gslb-state-")),
        "the listener runs on the caller's runtime, not a driver thread: {threads:?}"
    );

    // Dropping a spawned handle returns at once and the node still leaves gracefully.
    drop(n2);
    tokio::time::timeout(SOON, async {
        loop {
            if let Ok(Event::MemberDown { node, reason }) = events.recv().await
                && node == "n2"
            {
                assert_eq!(reason, DownReason::Left);
                break;
            }
        }
    })
    .await
    .expect("n1 sees n2 leave");
    wait_decision(&n1, "api", None, Source::Unknown, SOON).await;
    for node in [n1, n3] {
        node.shutdown().await;
    }
}
