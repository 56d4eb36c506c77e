//! The NATS driver against a real 3-server JetStream cluster with replicated buckets: the
//! connected server SIGKILLed, the stream leader SIGKILLed, every server down and back, and a
//! SIGSTOPped (hung) server. Each test prints the gaps it measures (`MEASURED ...`).
//!
//! The tests take [`driver_common::serial`]: three servers and several nodes per test are
//! enough load for the machine, and failover timings mean little when tests compete for CPU.

mod driver_common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use driver_common::*;
use gslb_state_core::codec::{Message, decode};
use gslb_state_core::{Names, Source};
use gslb_state_nats::Handle;
use gslb_state_tests::{NatsCluster, ServerOpts, wait_for, wait_until};

const HEALTH_STREAM: &str = "KV_gslb_c1_health";
const MEMBERS_STREAM: &str = "KV_gslb_c1_members";

fn cluster() -> NatsCluster {
    NatsCluster::start(3, ServerOpts::default()).expect("a 3-server cluster")
}

/// Starts `ids` against `cluster` and waits until they all see each other.
async fn nodes(cluster: &NatsCluster, policy: &str, ids: &[&str]) -> Vec<Handle> {
    let nodes: Vec<Handle> = ids
        .iter()
        .map(|id| start(&cluster.urls(), policy, id))
        .collect();
    wait_members_all(&nodes.iter().collect::<Vec<_>>(), ids, SOON).await;
    nodes
}

async fn shutdown(nodes: Vec<Handle>) {
    for node in nodes {
        node.shutdown().await;
    }
}

/// A plain client of the cluster, with short timeouts.
async fn raw_client(cluster: &NatsCluster) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .ping_interval(Duration::from_millis(500))
        .connection_timeout(Duration::from_millis(500))
        .request_timeout(Some(Duration::from_secs(1)))
        .connect(cluster.urls())
        .await
        .expect("a raw client")
}

/// The report state stored in the health bucket under `node`'s key for `endpoint`, if any.
async fn stored_report(
    js: &jetstream::Context,
    node: &str,
    endpoint: &str,
) -> Option<Option<bool>> {
    let kv = js.get_key_value("gslb_c1_health").await.ok()?;
    let key = Names::new(CLUSTER).report_key(node, endpoint);
    let value = kv.get(key).await.ok()??;
    match decode(&value).ok()? {
        Message::Report(r) => Some(r.state.observation()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_gets_replicated_buckets_and_three_nodes_converge() {
    let _serial = serial().await;
    let cluster = cluster();
    let nodes = nodes(&cluster, "prefer-local", &["n1", "n2", "n3"]).await;
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    n1.set_health("api", Some(true)).unwrap();
    wait_decision_all(&[n2, n3], "api", Some(true), Source::Global, SOON).await;
    n1.set_health("api", Some(false)).unwrap();
    let took = wait_decision_all(&[n2, n3], "api", Some(false), Source::Global, SOON).await;
    report("cluster: flip at n1 decided at n2 and n3", took);

    // The driver created both buckets with three replicas, all current.
    let js = jetstream::with_domain(raw_client(&cluster).await, "gslb");
    for stream in [HEALTH_STREAM, MEMBERS_STREAM] {
        wait_until(
            SOON,
            &format!("{stream} with 3 current replicas"),
            || async {
                let Ok(mut s) = js.get_stream(stream).await else {
                    return false;
                };
                let Ok(info) = s.info().await else {
                    return false;
                };
                let replicas = info.cluster.as_ref().map(|c| {
                    c.replicas
                        .iter()
                        .filter(|r| r.current && !r.offline)
                        .count()
                });
                info.config.num_replicas == 3 && replicas == Some(2)
            },
        )
        .await
        .unwrap();
    }
    wait_until(SOON, "n1's report stored", || async {
        stored_report(&js, "n1", "api").await == Some(Some(false))
    })
    .await
    .unwrap();
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connected_server_killed_the_node_reconnects_to_another_and_keeps_deciding() {
    let _serial = serial().await;
    let cluster = cluster();
    let nodes = nodes(&cluster, "prefer-local", &["n1", "n2", "n3"]).await;
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    n1.set_health("api", Some(true)).unwrap();
    wait_decision_all(&[n2, n3], "api", Some(true), Source::Global, SOON).await;
    let (s, _) = wait_for(SOON, "n1's server", || async {
        connected_server(&cluster, "n1")
    })
    .await
    .unwrap();

    cluster.server(s).kill().unwrap();
    let killed = Instant::now();
    n1.set_health("api", Some(false)).unwrap();
    wait_decision_all(&[n2, n3], "api", Some(false), Source::Global, SLOW).await;
    report(
        "connected server SIGKILLed: flip at its node decided at the others",
        since(killed),
    );
    let (other, took) = wait_for(SOON, "n1 on another server", || async {
        connected_server(&cluster, "n1")
    })
    .await
    .unwrap();
    assert_ne!(other, s);
    report(
        "connected server SIGKILLed: node reconnected (as seen in /connz)",
        took,
    );
    assert!(n1.is_connected());

    // And it keeps going: the next flip is one hop again.
    n1.set_health("api", Some(true)).unwrap();
    let took = wait_decision_all(&[n2, n3], "api", Some(true), Source::Global, SOON).await;
    report("connected server SIGKILLed: next flip", took);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_leader_killed_health_keeps_flowing_and_the_kv_resyncs() {
    let _serial = serial().await;
    let cluster = cluster();
    let nodes = nodes(&cluster, "prefer-local", &["n1", "n2", "n3"]).await;
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    let endpoints: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for e in &endpoints {
        n1.set_health(e, Some(true)).unwrap();
    }
    for e in &endpoints {
        wait_decision_all(&[n2, n3], e, Some(true), Source::Global, SOON).await;
    }
    let js = jetstream::with_domain(raw_client(&cluster).await, "gslb");
    for e in &endpoints {
        wait_until(SOON, "n1's reports stored", || async {
            stored_report(&js, "n1", e).await == Some(Some(true))
        })
        .await
        .unwrap();
    }
    let errors_series = "gslbd_state_kv_put_total{bucket=\"gslb_c1_health\",result=\"error\"}";
    let errors_before = metric(n1, errors_series).unwrap_or(0.0);

    let leader = cluster
        .wait_stream_leader(HEALTH_STREAM, SOON)
        .expect("a leader");
    cluster.server(leader).kill().unwrap();
    let killed = Instant::now();
    for e in &endpoints {
        n1.set_health(e, Some(false)).unwrap();
    }
    // The fast path does not wait for JetStream's election.
    for e in &endpoints {
        wait_decision_all(&[n2, n3], e, Some(false), Source::Global, SLOW).await;
    }
    let health_gap = since(killed);
    report(
        "stream leader SIGKILLed: flips at n1 decided at the others",
        health_gap,
    );

    // The KV comes back with a new leader, and holds the flips made meanwhile.
    let new_leader = cluster
        .wait_stream_leader(HEALTH_STREAM, SLOW)
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    report("stream leader SIGKILLed: new leader after", since(killed));
    for e in &endpoints {
        wait_until(SLOW, "the flips stored in the KV", || async {
            stored_report(&js, "n1", e).await == Some(Some(false))
        })
        .await
        .unwrap();
    }
    report(
        "stream leader SIGKILLed: KV re-synced (all flips stored) after",
        since(killed),
    );
    let errors = metric(n1, errors_series).unwrap_or(0.0) - errors_before;
    println!("MEASURED stream leader SIGKILLed: failed KV writes retried: {errors}");
    assert!(
        health_gap < Duration::from_secs(3),
        "health must not wait for the KV: {health_gap:?}"
    );
    // A node that was not there learns the flips from the KV snapshot.
    let n4 = start(&cluster.urls(), "prefer-local", "n4");
    for e in &endpoints {
        wait_decision(&n4, e, Some(false), Source::Global, SOON).await;
    }
    n4.shutdown().await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_server_down_falls_back_to_local_and_every_server_back_recovers_everything() {
    let _serial = serial().await;
    let cluster = cluster();
    let ids = ["n1", "n2", "n3"];
    let nodes = nodes(&cluster, "global-quorum", &ids).await;
    let [n1, n2, n3] = [&nodes[0], &nodes[1], &nodes[2]];
    n1.set_health("web", Some(true)).unwrap();
    n2.set_health("web", Some(false)).unwrap();
    n3.set_health("web", Some(false)).unwrap();
    wait_decision_all(&[n1, n2, n3], "web", Some(false), Source::Global, SOON).await;

    for s in cluster.servers() {
        s.kill().unwrap();
    }
    let killed = Instant::now();
    wait_decision(n1, "web", Some(true), Source::FallbackLocal, SOON).await;
    report("every server down: local fallback after", since(killed));
    for node in [n1, n2, n3] {
        // Each client notices the dead connection on its own schedule: wait for it.
        wait_members(node, &[node.node_id()], SOON).await;
        assert!(!node.is_connected());
        assert_eq!(metric(node, "gslbd_state_nats_connected"), Some(0.0));
        assert_eq!(metric(node, "gslbd_state_active_members"), Some(1.0));
    }
    // Changes while everything is down.
    n2.set_health("web", Some(true)).unwrap();
    n3.set_health("new", Some(true)).unwrap();
    wait_decision(n2, "web", Some(true), Source::FallbackLocal, SOON).await;

    let restarted = Instant::now();
    // All at once (a JetStream cluster with every server down needs its quorum back before
    // any one is ready), and from this thread: a server dies with the thread that started it.
    cluster.restart_stopped().expect("restart every server");
    report("every server back: cluster ready after", since(restarted));
    wait_members_all(&[n1, n2, n3], &ids, SLOW).await;
    wait_decision_all(&[n1, n2, n3], "web", Some(true), Source::Global, SLOW).await;
    wait_decision_all(&[n1, n2], "new", Some(true), Source::Global, SLOW).await;
    report(
        "every server back: decisions global again after",
        since(restarted),
    );
    assert_global(n1, "web", true, 2, 3).await;
    // The KV has everything: a new node learns it from its snapshot.
    let n4 = start(&cluster.urls(), "global-quorum", "n4");
    wait_decision(&n4, "new", Some(true), Source::Global, SLOW).await;
    report(
        "every server back: a new node learned the outage's changes after",
        since(restarted),
    );
    n4.shutdown().await;
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigstopped_server_is_noticed_within_seconds() {
    let _serial = serial().await;
    let cluster = cluster();
    let ids = ["n1", "n2", "n3"];
    let nodes = nodes(&cluster, "prefer-local", &ids).await;
    let servers: Vec<usize> = {
        let mut found = Vec::new();
        for id in ids {
            let (s, _) = wait_for(SOON, "a node's server", || async {
                connected_server(&cluster, id)
            })
            .await
            .unwrap();
            found.push(s);
        }
        found
    };
    let n1 = &nodes[0];
    n1.set_health("api", Some(true)).unwrap();
    wait_decision_all(
        &[&nodes[1], &nodes[2]],
        "api",
        Some(true),
        Source::Global,
        SOON,
    )
    .await;
    // Prefer an observer on another server, so the gap is n1's alone.
    let observer = (1..3).find(|&i| servers[i] != servers[0]).unwrap_or(1);
    let hung = servers[0];

    cluster.server(hung).stop().unwrap();
    let stopped = Instant::now();
    n1.set_health("api", Some(false)).unwrap();
    wait_decision(&nodes[observer], "api", Some(false), Source::Global, SLOW).await;
    let gap = since(stopped);
    report(
        "server SIGSTOPped: flip at its node decided at another node",
        gap,
    );
    let (other, took) = wait_for(SOON, "n1 on another server", || async {
        connected_server(&cluster, "n1").filter(|&s| s != hung)
    })
    .await
    .unwrap();
    assert_ne!(other, hung);
    report(
        "server SIGSTOPped: node connected elsewhere (as seen in /connz)",
        stopped.elapsed().min(gap + took),
    );
    // Three 500 ms pings, a 500 ms connect timeout, and a re-sync at most.
    assert!(
        gap < Duration::from_secs(6),
        "a hung server must be noticed within seconds: {gap:?}"
    );

    cluster.server(hung).cont().unwrap();
    n1.set_health("api", Some(true)).unwrap();
    wait_decision_all(
        &[&nodes[1], &nodes[2]],
        "api",
        Some(true),
        Source::Global,
        SOON,
    )
    .await;
    wait_members_all(&nodes.iter().collect::<Vec<_>>(), &ids, SOON).await;
    shutdown(nodes).await;
}
