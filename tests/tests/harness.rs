//! Proves the nats-server harness against real processes: single server, 3-node JetStream cluster
//! with an R3 KV bucket in domain "gslb", stream-leader failover, SIGSTOP/SIGCONT, restart with
//! the same store, mTLS, and readiness failures that carry the server log.

mod driver_common;

use std::time::{Duration, Instant};

use driver_common::crosses;

use async_nats::jetstream::{self, kv};
use async_nats::{ConnectOptions, connection::State};
use bytes::Bytes;
use futures::StreamExt;
use gslb_state_tests::{
    DEFAULT_DOMAIN, HarnessError, MIN_VERSION, NatsCluster, NatsServer, ServerOpts, TestPki, http,
    nats_server_version, wait_for, wait_until, wait_until_blocking,
};

const SECOND: Duration = Duration::from_secs(1);

async fn connect(urls: Vec<String>) -> async_nats::Client {
    ConnectOptions::new()
        .ping_interval(Duration::from_secs(2))
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(urls)
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn single_server_pub_sub() {
    assert!(nats_server_version().unwrap() >= MIN_VERSION);
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    assert!(server.is_running());
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    let conf = std::fs::read_to_string(server.config_path()).unwrap();
    assert!(conf.contains("domain: \"gslb\""), "{conf}");
    assert!(
        !conf.contains("cluster {"),
        "a single server has no cluster block"
    );

    let client = connect(vec![server.url()]).await;
    let mut sub = client.subscribe("gslb.test.ping").await.unwrap();
    client.flush().await.unwrap();
    client
        .publish("gslb.test.ping", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let msg = tokio::time::timeout(5 * SECOND, sub.next())
        .await
        .expect("message within 5 s")
        .expect("subscription open");
    assert_eq!(msg.payload.as_ref(), b"hello");
    assert_eq!(client.connection_state(), State::Connected);

    // The JetStream domain is really "gslb": the account info answers through it.
    let js = jetstream::with_domain(client.clone(), DEFAULT_DOMAIN);
    js.query_account()
        .await
        .expect("JetStream through domain gslb");
    let wrong = jetstream::with_domain(client.clone(), "nope");
    let err = tokio::time::timeout(5 * SECOND, wrong.query_account()).await;
    assert!(!matches!(err, Ok(Ok(_))), "unknown domain must not answer");

    // The monitor port is the one the harness reports.
    let varz = server.monitor_json("/varz").unwrap();
    assert_eq!(varz["server_name"], "n1");
    assert_eq!(varz["port"], server.client_port());

    // Graceful shutdown (SIGTERM) ends the process; the log says why.
    server.terminate(5 * SECOND).unwrap();
    assert!(!server.is_running());
    assert!(
        server.log_tail(20).contains("Server Exiting"),
        "{}",
        server.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_r3_kv_survives_leader_kill() {
    let started = Instant::now();
    let cluster = NatsCluster::start(3, ServerOpts::default()).unwrap();
    println!("3-node cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.len(), 3);
    let meta = cluster.wait_meta_leader(10 * SECOND).unwrap();
    println!("meta leader: {}", cluster.server(meta).name());
    for s in cluster.servers() {
        // Every server's own view names the same meta leader.
        assert_eq!(
            s.meta_leader_name().unwrap().as_deref(),
            Some(cluster.server(meta).name())
        );
    }
    for s in cluster.servers() {
        let routes = s.monitor_json("/routez").unwrap();
        assert!(
            routes["num_routes"].as_u64().unwrap() >= 2,
            "{} has routes to both peers: {routes}",
            s.name()
        );
    }

    let client = connect(cluster.urls()).await;
    let js = jetstream::with_domain(client.clone(), DEFAULT_DOMAIN);
    let kv = js
        .create_key_value(kv::Config {
            bucket: "hx".into(),
            history: 5,
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    // A put at once after the bucket's creation can be answered "stream not found" (seen
    // once in CI, 2026-12-03: the stream's assignment not yet applied where the put landed);
    // the first put is awaited, not assumed.
    wait_for(10 * SECOND, "the first KV put into the new bucket", || {
        let kv = kv.clone();
        async move {
            kv.put("node1.ep1", Bytes::from_static(b"up"))
                .await
                .map_err(|e| println!("first put: {e}"))
                .ok()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        kv.get("node1.ep1").await.unwrap().as_deref(),
        Some(&b"up"[..])
    );

    // The harness and the client agree on who leads the bucket's stream.
    let info = kv.stream.get_info().await.unwrap();
    let cl = info.cluster.expect("clustered stream");
    assert_eq!(cl.replicas.len(), 2, "R3: a leader and two followers");
    let leader = cluster.wait_stream_leader("KV_hx", 10 * SECOND).unwrap();
    assert_eq!(Some(cluster.server(leader).name()), cl.leader.as_deref());
    assert_eq!(cluster.kv_leader("hx"), Some(leader));

    // Kill the leader; await the first KV put that succeeds again.
    cluster.server(leader).kill().unwrap();
    assert!(!cluster.server(leader).is_running());
    let killed_at = Instant::now();
    let mut attempt = 0u32;
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (rev, gap) = wait_for(30 * SECOND, "a KV put after the leader was killed", || {
        attempt += 1;
        let kv = kv.clone();
        let errors = errors.clone();
        async move {
            let put = kv.put("node1.ep2", Bytes::from(format!("after-{attempt}")));
            let res = tokio::time::timeout(SECOND, put).await;
            let err = match res {
                Ok(Ok(rev)) => return Some(rev),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 1 s".to_string(),
            };
            let mut errors = errors.lock().unwrap();
            if !errors.contains(&err) {
                errors.push(err);
            }
            None
        }
    })
    .await
    .unwrap();
    println!(
        "KV puts resumed {gap:?} after SIGKILL of stream leader {} ({attempt} attempts, revision {rev}); \
         errors meanwhile: {:?}",
        cluster.server(leader).name(),
        errors.lock().unwrap()
    );
    let new_leader = cluster.wait_stream_leader("KV_hx", 10 * SECOND).unwrap();
    assert_ne!(new_leader, leader, "a new leader was elected");
    println!(
        "new stream leader: {} (known {:?} after the kill)",
        cluster.server(new_leader).name(),
        killed_at.elapsed()
    );
    // Old data is still there and further puts work.
    assert_eq!(
        kv.get("node1.ep1").await.unwrap().as_deref(),
        Some(&b"up"[..])
    );
    let last = kv.put("node1.ep3", Bytes::from_static(b"x")).await.unwrap();
    assert!(last > rev);

    // The killed server comes back on the same ports and catches up.
    let old = cluster.server(leader);
    let url_before = old.url();
    old.restart().unwrap();
    assert_eq!(old.url(), url_before);
    wait_until_blocking(15 * SECOND, "the restarted server to catch up", || {
        old.monitor_json("/jsz?accounts=true&streams=true")
            .ok()
            .and_then(|v| {
                v.pointer("/account_details/0/stream_detail/0/state/last_seq")
                    .and_then(|s| s.as_u64())
            })
            == Some(last)
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstop_and_sigcont() {
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    // Client A keeps the default 60 s ping, so it does not give up on the hung server and its
    // subscription survives; client B pings every 500 ms to measure how long a hang takes to see.
    let a = async_nats::connect(server.url()).await.unwrap();
    let b = ConnectOptions::new()
        .ping_interval(Duration::from_millis(500))
        .connection_timeout(SECOND)
        .connect(server.url())
        .await
        .unwrap();
    let mut sub = a.subscribe("gslb.test.hang").await.unwrap();
    a.flush().await.unwrap();

    server.stop().unwrap();
    let stopped = Instant::now();
    assert!(server.is_stopped() && server.is_running());
    // A hung server accepts TCP but answers nothing: neither the monitor nor the client path.
    assert!(
        http::get(
            server.monitor_port(),
            "/healthz",
            Duration::from_millis(300)
        )
        .is_err()
    );
    a.publish("gslb.test.hang", Bytes::from_static(b"during-stop"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "nothing is delivered while the server is stopped"
    );
    wait_until(10 * SECOND, "client B to notice the hang", || {
        let state = b.connection_state();
        async move { state != State::Connected }
    })
    .await
    .unwrap();
    println!(
        "hung server noticed by a 500 ms-ping client after {:?}",
        stopped.elapsed()
    );
    assert_eq!(a.connection_state(), State::Connected, "60 s ping: not yet");

    server.cont().unwrap();
    let resumed = Instant::now();
    assert!(!server.is_stopped());
    let msg = tokio::time::timeout(5 * SECOND, sub.next())
        .await
        .expect("delivered after SIGCONT")
        .unwrap();
    assert_eq!(msg.payload.as_ref(), b"during-stop");
    let took = wait_until(10 * SECOND, "client B to reconnect", || {
        let state = b.connection_state();
        async move { state == State::Connected }
    })
    .await
    .unwrap();
    println!("client B reconnected {took:?} after SIGCONT");
    assert!(resumed.elapsed() < 10 * SECOND);
    server.wait_ready(5 * SECOND).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_data() {
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    // Events arrive through a callback; keep it tiny (async-nats drops events when its own small
    // channel is full) and treat connection_state() as the truth.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = ConnectOptions::new()
        .ping_interval(2 * SECOND)
        .connection_timeout(2 * SECOND)
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ev);
            }
        })
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::with_domain(client.clone(), DEFAULT_DOMAIN);
    let kv = js
        .create_key_value(kv::Config {
            bucket: "persist".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let rev = kv.put("k", Bytes::from_static(b"kept")).await.unwrap();
    let pid = server.pid().unwrap();

    server.kill().unwrap();
    assert!(!server.is_running() && server.pid().is_none());
    wait_until(5 * SECOND, "the client to notice the kill", || {
        let state = client.connection_state();
        async move { state != State::Connected }
    })
    .await
    .unwrap();

    let restarted = Instant::now();
    server.restart().unwrap();
    assert_ne!(server.pid(), Some(pid));
    wait_until(10 * SECOND, "the client to reconnect", || {
        let state = client.connection_state();
        async move { state == State::Connected }
    })
    .await
    .unwrap();
    println!(
        "restart ready and client reconnected {:?} after restart() began",
        restarted.elapsed()
    );
    let entry = kv
        .entry("k")
        .await
        .unwrap()
        .expect("entry survives restart");
    assert_eq!(entry.value.as_ref(), b"kept");
    assert_eq!(entry.revision, rev);

    // The watchdog number: the stream's last sequence, asked from the server. `kv.status()`
    // returns the info cached when the handle was made.
    let last = kv.stream.get_info().await.unwrap().state.last_sequence;
    assert_eq!(last, rev);
    let cached = kv.status().await.unwrap().info.state.last_sequence;
    println!("stream last_sequence {last}; kv.status() says {cached} (cached)");

    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(ev.to_string());
    }
    println!("events: {seen:?}");
    assert!(seen.iter().any(|e| e == "disconnected"), "{seen:?}");
    assert!(seen.iter().any(|e| e == "connected"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_requires_a_client_certificate() {
    // async-nats builds rustls with ring only; installing the provider explicitly keeps this test
    // working if aws-lc-rs ever enters the build too (rustls panics when it cannot pick one).
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();

    let pki = TestPki::new().unwrap();
    let server_cert = pki.server_cert("server").unwrap();
    let node1 = pki.client_cert("node1").unwrap();
    let opts = ServerOpts::default().extra_config(pki.server_tls_block(&server_cert, true, ""));
    let server = NatsServer::single(opts).unwrap();

    // A client with a certificate of the CA connects and talks.
    let client = ConnectOptions::new()
        .add_root_certificates(pki.ca_file().to_path_buf())
        .add_client_certificate(node1.cert.clone(), node1.key.clone())
        .require_tls(true)
        .connection_timeout(2 * SECOND)
        .connect(server.url())
        .await
        .expect("mTLS connect with a valid client certificate");
    let mut sub = client.subscribe("gslb.tls.x").await.unwrap();
    client.flush().await.unwrap();
    client.publish("gslb.tls.x", "ok".into()).await.unwrap();
    let msg = tokio::time::timeout(5 * SECOND, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload.as_ref(), b"ok");
    let connz = server.monitor_json("/connz?auth=true").unwrap();
    assert_eq!(connz["num_connections"], 1);

    // Without a client certificate the server refuses the handshake.
    let err = ConnectOptions::new()
        .add_root_certificates(pki.ca_file().to_path_buf())
        .require_tls(true)
        .connection_timeout(2 * SECOND)
        .connect(server.url())
        .await
        .expect_err("no client certificate must be refused");
    println!("connect without client cert: {err} ({:?})", err.kind());

    // A certificate from another CA is refused too.
    let other = TestPki::new().unwrap();
    let stranger = other.client_cert("node1").unwrap();
    let err = ConnectOptions::new()
        .add_root_certificates(pki.ca_file().to_path_buf())
        .add_client_certificate(stranger.cert, stranger.key)
        .require_tls(true)
        .connection_timeout(2 * SECOND)
        .connect(server.url())
        .await
        .expect_err("a certificate of another CA must be refused");
    println!("connect with a foreign CA's cert: {err} ({:?})", err.kind());

    // A client that does not trust the server's CA refuses the server.
    let err = ConnectOptions::new()
        .add_root_certificates(other.ca_file().to_path_buf())
        .add_client_certificate(node1.cert.clone(), node1.key.clone())
        .require_tls(true)
        .connection_timeout(2 * SECOND)
        .connect(server.url())
        .await
        .expect_err("an untrusted server must be refused");
    println!("connect trusting another CA: {err} ({:?})", err.kind());
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_failure_carries_the_log_tail() {
    let opts = ServerOpts::default()
        .extra_config("this is { not valid")
        .ready_timeout(10 * SECOND);
    let started = Instant::now();
    let err = NatsServer::single(opts).expect_err("a broken config cannot become ready");
    assert!(
        started.elapsed() < 5 * SECOND,
        "fails as soon as the process exits"
    );
    let HarnessError::NotReady { log_tail, .. } = &err else {
        panic!("expected NotReady, got {err}");
    };
    assert!(!log_tail.trim().is_empty(), "{err}");
    assert!(err.to_string().contains("log tail"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_until_reports_a_timeout() {
    let err = wait_until(Duration::from_millis(50), "never", || async { false })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HarnessError::Timeout { what, waited } if what == "never" && *waited >= Duration::from_millis(50)),
        "{err}"
    );
    // An attempt that hangs is cut off at the deadline.
    let started = Instant::now();
    let err = wait_until(Duration::from_millis(100), "hang", || {
        std::future::pending::<bool>()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, HarnessError::Timeout { .. }));
    assert!(started.elapsed() < SECOND);
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_verify_and_map_limits_a_node_to_its_subjects() {
    let _ = async_nats::rustls::crypto::ring::default_provider().install_default();
    let pki = TestPki::new().unwrap();
    let server_cert = pki.server_cert("server").unwrap();
    let node1 = pki.client_cert("node1").unwrap();
    let intruder = pki.client_cert("intruder").unwrap();
    // The certificate subject ("CN=node1") is the user name; permissions hang off the user.
    let auth = format!(
        r#"authorization {{
  users = [
    {{ user: "{}", permissions: {{
        publish: {{ allow: ["gslb.c1.hb.node1", "_INBOX_node1.>"] }}
        subscribe: {{ allow: ["gslb.c1.>", "_INBOX_node1.>"] }}
    }} }}
  ]
}}"#,
        node1.subject
    );
    let opts = ServerOpts::default()
        .extra_config(pki.server_tls_block(&server_cert, true, "verify_and_map: true"))
        .extra_config(auth);
    let server = NatsServer::single(opts).unwrap();

    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = ConnectOptions::new()
        .add_root_certificates(pki.ca_file().to_path_buf())
        .add_client_certificate(node1.cert.clone(), node1.key.clone())
        .require_tls(true)
        .custom_inbox_prefix("_INBOX_node1")
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ev);
            }
        })
        .connect(server.url())
        .await
        .expect("node1 maps to a user");
    let mut sub = client.subscribe("gslb.c1.hb.>").await.unwrap();
    client.flush().await.unwrap();
    client
        .publish("gslb.c1.hb.node2", "forged".into())
        .await
        .unwrap();
    client
        .publish("gslb.c1.hb.node1", "mine".into())
        .await
        .unwrap();
    let msg = tokio::time::timeout(5 * SECOND, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        msg.subject.as_str(),
        "gslb.c1.hb.node1",
        "the forged one is dropped"
    );
    let (err, _) = wait_for(5 * SECOND, "a permissions violation event", || {
        let ev = events.try_recv().ok();
        async move {
            match ev {
                Some(async_nats::Event::ServerError(e)) => Some(e.to_string()),
                _ => None,
            }
        }
    })
    .await
    .unwrap();
    println!("publish outside the permissions: ServerError({err})");
    assert!(
        err.to_lowercase().contains("permissions violation"),
        "{err}"
    );

    // A valid certificate whose subject maps to no user is refused.
    let err = ConnectOptions::new()
        .add_root_certificates(pki.ca_file().to_path_buf())
        .add_client_certificate(intruder.cert, intruder.key)
        .require_tls(true)
        .connection_timeout(2 * SECOND)
        .connect(server.url())
        .await
        .expect_err("an unmapped certificate must be refused");
    println!("unmapped certificate: {err} ({:?})", err.kind());
}

/// A cluster whose routes run through proxies forms, and a partition of its routes splits it
/// while every server stays up.
#[test]
fn route_proxies_form_a_cluster_and_partition_it() {
    let (cluster, routes) =
        gslb_state_tests::NatsCluster::start_with_route_proxies(3, ServerOpts::default())
            .unwrap_or_else(|e| panic!("{e}"));
    let routez = |i: usize| -> usize {
        let v = cluster.server(i).monitor_json("/routez").unwrap();
        v["num_routes"].as_u64().unwrap_or(0) as usize
    };
    // Ready (`/healthz`) does not wait for every route: await n1's two.
    gslb_state_tests::wait_until_blocking(Duration::from_secs(10), "n1's routes", &mut || {
        routez(0) >= 2
    })
    .unwrap_or_else(|e| panic!("{e}: {} routes", routez(0)));
    routes.partition(&[vec![0, 1], vec![2]]);
    gslb_state_tests::wait_until_blocking(Duration::from_secs(10), "n3 alone", &mut || {
        routez(2) == 0
    })
    .unwrap();
    routes.heal();
    gslb_state_tests::wait_until_blocking(Duration::from_secs(20), "n3 back", &mut || {
        routez(2) >= 2
    })
    .unwrap();
}

/// One message from `from` to `to` (interest already known there): how long it took.
async fn one_way(
    from: &async_nats::Client,
    sub: &mut async_nats::Subscriber,
    subject: &str,
) -> Duration {
    let sent = Instant::now();
    from.publish(subject.to_string(), "t".into()).await.unwrap();
    tokio::time::timeout(5 * SECOND, sub.next())
        .await
        .expect("delivered")
        .unwrap();
    sent.elapsed()
}

/// A super-cluster of three regions (two servers in eu) forms through its gateway proxies;
/// servers are named, tagged and clustered by region; a delay applies one way; a region cut
/// stays cut (no gateway URL the servers gossip bypasses the proxies) while traffic inside
/// every region flows; healing re-forms it; a region stopped and resumed, and one killed and
/// restarted with its store, join again.
#[tokio::test(flavor = "multi_thread")]
async fn super_cluster_forms_cuts_delays_heals_and_restarts_regions() {
    let started = Instant::now();
    let sc = gslb_state_tests::NatsSuperCluster::start(
        &[("eu", 2), ("us", 1), ("ap", 1)],
        ServerOpts::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!("super-cluster formed in {:?}", started.elapsed());
    assert!(
        sc.missing_gateways().is_empty(),
        "{:?}",
        sc.missing_gateways()
    );
    let leader = sc.wait_meta_leader(10 * SECOND).unwrap();
    println!("meta leader: {leader} in {:?}", sc.region_of(&leader));
    assert_eq!(sc.region_names(), ["eu", "us", "ap"]);
    assert_eq!(sc.region("eu").len(), 2);
    for s in sc.servers() {
        let region = sc.region_of(s.name()).unwrap();
        let varz = s.monitor_json("/varz").unwrap();
        assert_eq!(varz["cluster"]["name"], region, "{}", s.name());
        assert_eq!(varz["gateway"]["name"], region, "{}", s.name());
        assert!(
            varz["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == &format!("region:{region}"))),
            "{}: {varz}",
            s.name()
        );
        assert!(s.name().starts_with(&format!("{region}-")));
    }
    assert_eq!(sc.inbound_gateways("eu", "us"), 2, "one per eu server");
    assert_eq!(sc.inbound_gateways("us", "eu"), 1);

    let client = |url: String| async move { connect(vec![url]).await };
    let eu1 = client(sc.region("eu").server(0).url()).await;
    let eu2 = client(sc.region("eu").server(1).url()).await;
    let us = client(sc.urls("us")[0].clone()).await;
    let ap = client(sc.urls("ap")[0].clone()).await;
    crosses(&us, &eu2, "t.us.eu", 10 * SECOND).await.unwrap();
    crosses(&eu1, &ap, "t.eu.ap", 10 * SECOND).await.unwrap();

    // One way: us -> eu delayed, eu -> us not.
    let mut at_eu = eu2.subscribe("t.delay.eu").await.unwrap();
    let mut at_us = us.subscribe("t.delay.us").await.unwrap();
    eu2.flush().await.unwrap();
    us.flush().await.unwrap();
    crosses(&us, &eu2, "t.delay.warm", 10 * SECOND)
        .await
        .unwrap();
    crosses(&eu2, &us, "t.delay.warm2", 10 * SECOND)
        .await
        .unwrap();
    let delay = Duration::from_millis(300);
    sc.set_delay("us", "eu", delay);
    // Interest on the delayed link may be held too: wait until a message crosses at all.
    crosses(&us, &eu2, "t.delay.settle", 10 * SECOND)
        .await
        .unwrap();
    let slow = one_way(&us, &mut at_eu, "t.delay.eu").await;
    let fast = one_way(&eu2, &mut at_us, "t.delay.us").await;
    println!("one-way delay us->eu: {slow:?}, eu->us: {fast:?}");
    assert!(slow >= delay, "us -> eu is delayed: {slow:?}");
    assert!(fast < delay, "eu -> us is not: {fast:?}");
    sc.set_delay("us", "eu", Duration::ZERO);

    // eu cut off: its gateways go at once and stay gone, nothing crosses, inside flows.
    sc.cut("eu", gslb_state_tests::LinkMode::Reset);
    sc.wait_isolated("eu", 5 * SECOND).unwrap();
    let mut at_eu = eu2.subscribe("t.cut").await.unwrap();
    eu2.flush().await.unwrap();
    crosses(&eu1, &eu2, "t.inside.eu", 5 * SECOND)
        .await
        .unwrap();
    crosses(&us, &ap, "t.inside.rest", 5 * SECOND)
        .await
        .unwrap();
    // For 3 s (the servers redial every second, through any gateway URL they learnt): still
    // cut, and nothing from us arrives in eu.
    let held = Instant::now();
    while held.elapsed() < 3 * SECOND {
        us.publish("t.cut", "leak?".into()).await.unwrap();
        assert!(sc.is_isolated("eu"), "a gateway to eu came back while cut");
        let leaked = tokio::time::timeout(Duration::from_millis(100), at_eu.next()).await;
        assert!(leaked.is_err(), "a message crossed the cut");
    }
    assert_eq!(sc.proxied_connections("us", "eu"), 0);

    sc.heal();
    let took = sc.wait_formed(20 * SECOND).unwrap();
    println!("re-formed {took:?} after healing");
    crosses(&us, &eu2, "t.healed", 10 * SECOND).await.unwrap();

    // us hung and resumed: its servers answer again and the super-cluster is whole.
    sc.stop_region("us").unwrap();
    assert!(sc.region("us").server(0).is_stopped());
    sc.cont_region("us").unwrap();
    assert!(!sc.region("us").server(0).is_stopped());
    sc.wait_formed(20 * SECOND).unwrap();

    // ap killed: the others are formed among themselves; restarted with its store, it joins.
    sc.kill_region("ap").unwrap();
    assert!(!sc.region("ap").server(0).is_running());
    sc.wait_formed(10 * SECOND).unwrap();
    let restarted = Instant::now();
    sc.restart_region("ap").unwrap();
    sc.wait_formed(20 * SECOND).unwrap();
    println!("ap restarted and joined in {:?}", restarted.elapsed());
    assert_eq!(sc.inbound_gateways("ap", "eu"), 1);
    crosses(&ap, &eu1, "t.back", 10 * SECOND).await.unwrap();
}
