//! Per-node isolation on a real nats-server: mTLS with `verify_and_map`, each node's user
//! holding exactly `gslb_state_nats::security::node_permissions` (what SECURITY.md documents
//! and `gslb-state permissions` prints), the buckets made by an administrator
//! (`gslb_state_nats::bootstrap`).
//!
//! * nodes do all their work under those permissions, config sync included, and the server
//!   refuses them nothing;
//! * a client holding node n1's certificate cannot publish as n2, write n2's keys, read or
//!   write cluster d1, read other nodes' replies, use the unnamed consumer API, or delete a
//!   bucket; each refusal comes back at once as a permissions violation;
//! * a node whose user lacks its KV permissions keeps exchanging heartbeats and health on the
//!   subjects and deciding; the refusals are counted within seconds.

mod security_common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::push};
use futures::StreamExt;
use gslb_state_core::Source;
use gslb_state_tests::wait_until;
use security_common::*;

/// Pushes `yaml` as cluster `cluster`'s desired config, as `gslb-state config push` does.
async fn push_config(admin: &async_nats::Client, cluster: &str, yaml: &str) -> u64 {
    let js = jetstream::with_domain(admin.clone(), "gslb");
    let store = js.get_key_value(CONFIG_BUCKET).await.unwrap();
    let version = store.put(cluster, yaml.to_owned().into()).await.unwrap();
    admin
        .publish(format!("{CONFIG_PREFIX}.{cluster}"), "{}".into())
        .await
        .unwrap();
    version
}

fn desired(cluster: &str, policy: &str) -> String {
    format!(
        "cluster:\n  id: \"{cluster}\"\nstate:\n  healthPolicy: \"{policy}\"\n  heartbeatInterval: \"200ms\"\n  heartbeatTTL: \"1s\"\n"
    )
}

async fn wait_decision(node: &gslb_state_nats::Handle, ep: &str, healthy: bool, source: Source) {
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

async fn wait_config_version(node: &gslb_state_nats::Handle, version: u64) {
    let what = format!("{} to apply config version {version}", node.node_id());
    wait_until(SOON, &what, || async {
        node.applied_config().is_some_and(|(v, _)| v == version)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; applied: {:?}", node.applied_config().map(|c| c.0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_work_under_least_privilege() {
    let s = SecureServer::start(&[("c1", "n1"), ("c1", "n2"), ("d1", "z1")], "", |n| {
        n.permissions()
    });
    s.bootstrap().await;
    let admin = s.admin_client().await;
    let v1 = push_config(&admin, "c1", &desired("c1", "prefer-local")).await;

    let n1 = s.node("n1").start();
    let z1 = s.node("z1").start();
    n1.set_health("api", Some(true)).unwrap();
    z1.set_health("api", Some(false)).unwrap();
    // n1's report is in the KV before n2 starts: n2's snapshot must read it.
    let health = jetstream::with_domain(admin.clone(), "gslb")
        .get_key_value("gslb_c1_health")
        .await
        .unwrap();
    wait_until(SOON, "n1's report in the KV", || async {
        health.get("n1.api").await.ok().flatten().is_some()
    })
    .await
    .unwrap();
    let (n2, mut n2_events) = gslb_state_nats::Handle::start_with_events(
        gslb_state_nats::NodeOptions::new(s.node("n2").config.clone(), "n2"),
    )
    .unwrap();
    let (endpoints, _) = gslb_state_tests::wait_for(SOON, "n2's health snapshot", || {
        let ev = n2_events.try_recv().ok();
        async move {
            match ev {
                Some(gslb_state_nats::Event::SnapshotLoaded { endpoints, .. }) => Some(endpoints),
                _ => None,
            }
        }
    })
    .await
    .unwrap();
    assert!(endpoints >= 1, "the snapshot read n1's report");
    wait_members(&n1, &["n1", "n2"]).await;
    wait_members(&n2, &["n1", "n2"]).await;
    wait_decision(&n2, "api", true, Source::Global).await;
    // Cluster d1 is on the same server and hears nothing of c1, nor c1 of it.
    wait_members(&z1, &["z1"]).await;
    assert_eq!(z1.decision("api").unwrap().source, Source::Local);

    // Config sync under the permissions: the snapshot, then a new version.
    wait_config_version(&n1, v1).await;
    wait_config_version(&n2, v1).await;
    let v2 = push_config(&admin, "c1", &desired("c1", "global-quorum")).await;
    wait_config_version(&n1, v2).await;
    wait_config_version(&n2, v2).await;
    assert!(z1.applied_config().is_none(), "d1 has no desired config");

    // A member restarts and re-syncs: KV reads and writes keep working.
    n1.set_health("web", Some(false)).unwrap();
    wait_decision(&n2, "web", false, Source::Global).await;

    for n in [&n1, &n2, &z1] {
        assert_eq!(
            metric(
                n,
                "gslbd_state_permission_denied_total{operation=\"publish\"}"
            ) + metric(
                n,
                "gslbd_state_permission_denied_total{operation=\"subscribe\"}"
            ),
            0.0,
            "{} was refused something:\n{}",
            n.node_id(),
            n.metrics().encode()
        );
    }
    // The second write trails its publish by `kv_write_delay`.
    wait_until(SOON, "n1's second KV write acknowledged", || async {
        metric(
            &n1,
            "gslbd_state_kv_put_total{bucket=\"gslb_c1_health\",result=\"ok\"}",
        ) >= 2.0
    })
    .await
    .unwrap();
    assert_eq!(s.logged_violations(), Vec::<String>::new());
    for n in [n1, n2, z1] {
        n.shutdown().await;
    }
}

/// Runs `f` and checks that it fails, that the server reported a permissions violation
/// naming `subject_part` on `errors`, and that the violation came within a second.
async fn refused<T: std::fmt::Debug, E: std::fmt::Debug>(
    errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    subject_part: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) {
    let (result, (violation, reported_after)) = tokio::join!(f, wait_denied(errors, subject_part));
    assert!(
        result.is_err(),
        "{subject_part}: should fail, got {result:?}"
    );
    println!("refused, reported after {reported_after:?}: {violation}");
    // The request itself only times out (1 s here); the violation comes at once.
    assert!(
        reported_after < Duration::from_millis(800),
        "{subject_part}: reported after {reported_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cannot_speak_for_another_nor_touch_another_cluster() {
    let s = SecureServer::start(&[("c1", "n1"), ("c1", "n2"), ("d1", "z1")], "", |n| {
        n.permissions()
    });
    s.bootstrap().await;
    let admin = s.admin_client().await;
    push_config(&admin, "c1", &desired("c1", "prefer-local")).await;
    push_config(&admin, "d1", &desired("d1", "prefer-local")).await;
    let z1 = s.node("z1").start();
    z1.set_health("api", Some(true)).unwrap();
    let admin_js = jetstream::with_domain(admin.clone(), "gslb");
    let c1_health = admin_js.get_key_value("gslb_c1_health").await.unwrap();
    c1_health.put("n2.api", "genuine".into()).await.unwrap();
    let mut watch_all = admin.subscribe("gslb.>").await.unwrap();
    admin.flush().await.unwrap();

    let (rogue, mut errors) = s.client_of("n1").await;
    let mut js = jetstream::with_domain(rogue.clone(), "gslb");
    js.set_timeout(Duration::from_secs(1));

    // Publishing as n2 is refused; only n1's own subject gets through.
    let start = Instant::now();
    rogue
        .publish("gslb.c1.hb.n2", "forged".into())
        .await
        .unwrap();
    rogue.publish("gslb.c1.hb.n1", "own".into()).await.unwrap();
    let (violation, _) = wait_denied(&mut errors, "gslb.c1.hb.n2").await;
    println!(
        "publish as n2 refused in {:?}: {violation}",
        start.elapsed()
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    let delivered = loop {
        let m = tokio::time::timeout(SOON, watch_all.next())
            .await
            .unwrap()
            .unwrap();
        if m.payload.as_ref() == b"own" || m.payload.as_ref() == b"forged" {
            break m;
        }
    };
    assert_eq!(delivered.subject.as_str(), "gslb.c1.hb.n1");
    // ...nor as a node of the other cluster.
    rogue
        .publish("gslb.d1.hb.z1", "forged".into())
        .await
        .unwrap();
    wait_denied(&mut errors, "gslb.d1.hb.z1").await;

    // n1's own keys are writable, n2's and cluster d1's are not.
    let store = js.get_key_value("gslb_c1_health").await.unwrap();
    store.put("n1.api", "mine".into()).await.unwrap();
    refused(&mut errors, "$KV.gslb_c1_health.n2.api", async {
        store.put("n2.api", "forged".into()).await
    })
    .await;
    assert_eq!(
        c1_health.get("n2.api").await.unwrap().unwrap().as_ref(),
        b"genuine"
    );
    refused(&mut errors, "$KV.gslb_c1_members.n2", async {
        js.get_key_value("gslb_c1_members")
            .await
            .unwrap()
            .put("n2", "forged".into())
            .await
    })
    .await;

    // Cluster d1 can be neither opened, read, written nor listened to.
    refused(&mut errors, "STREAM.INFO.KV_gslb_d1_health", async {
        js.get_key_value("gslb_d1_health").await.map(|_| ())
    })
    .await;
    refused(&mut errors, "$KV.gslb_d1_health.n1", async {
        rogue
            .request("$JS.gslb.API.$KV.gslb_d1_health.n1.api", "forged".into())
            .await
    })
    .await;
    let d1_stream = admin_js.get_stream("KV_gslb_d1_health").await.unwrap();
    refused(&mut errors, "CONSUMER.CREATE.KV_gslb_d1_health", async {
        js.create_consumer_on_stream(
            push::OrderedConfig {
                name: Some("snoop".into()),
                deliver_subject: rogue.new_inbox(),
                filter_subject: "$KV.gslb_d1_health.>".into(),
                ..Default::default()
            },
            "KV_gslb_d1_health",
        )
        .await
        .map(|_| ())
    })
    .await;
    // Nor read by direct get, which is how nodes read their own cluster's buckets.
    let scan = r#"{"seq":1,"batch":10,"next_by_subj":"$KV.gslb_d1_health.>"}"#;
    refused(&mut errors, "DIRECT.GET.KV_gslb_d1_health", async {
        rogue
            .request("$JS.gslb.API.DIRECT.GET.KV_gslb_d1_health", scan.into())
            .await
    })
    .await;
    let mut d1_sub = rogue.subscribe("gslb.d1.>").await.unwrap();
    wait_denied(&mut errors, "gslb.d1.>").await;
    // Another cluster's config key, by direct get; n1's own is readable.
    refused(
        &mut errors,
        "DIRECT.GET.KV_PLEIADES_CFG.$KV.PLEIADES_CFG.d1",
        async {
            rogue
                .request(
                    "$JS.gslb.API.DIRECT.GET.KV_PLEIADES_CFG.$KV.PLEIADES_CFG.d1",
                    "".into(),
                )
                .await
        },
    )
    .await;
    let own = rogue
        .request(
            "$JS.gslb.API.DIRECT.GET.KV_PLEIADES_CFG.$KV.PLEIADES_CFG.c1",
            "".into(),
        )
        .await
        .unwrap();
    assert!(own.payload.starts_with(b"cluster:"), "{own:?}");

    // The consumer API (which the plain KV watch uses) is not granted: refused. Reading its own
    // cluster's buckets by direct get works: the first entry of a scan of c1's reports.
    refused(&mut errors, "CONSUMER.CREATE.KV_gslb_c1_health", async {
        store.watch_all().await.map(|_| ())
    })
    .await;
    let first = rogue
        .request(
            "$JS.gslb.API.DIRECT.GET.KV_gslb_c1_health",
            r#"{"seq":1,"next_by_subj":"$KV.gslb_c1_health.>"}"#.into(),
        )
        .await
        .expect("reading its own cluster is allowed");
    let subject = first.headers.as_ref().and_then(|h| h.get("Nats-Subject"));
    assert!(
        subject.is_some_and(|s| s.as_str().starts_with("$KV.gslb_c1_health.n")),
        "{first:?}"
    );

    // Other nodes' replies, and the shared inbox, cannot be listened to.
    let _n2_inbox = rogue.subscribe("_INBOX_n2.>").await.unwrap();
    wait_denied(&mut errors, "_INBOX_n2.>").await;
    let _any_inbox = rogue.subscribe("_INBOX.>").await.unwrap();
    wait_denied(&mut errors, "_INBOX.>").await;

    // Nor can a node delete or create a bucket.
    refused(&mut errors, "STREAM.DELETE.KV_gslb_c1_health", async {
        js.delete_stream("KV_gslb_c1_health").await.map(|_| ())
    })
    .await;
    refused(&mut errors, "STREAM.CREATE.KV_rogue", async {
        js.create_stream(jetstream::stream::Config {
            name: "KV_rogue".into(),
            subjects: vec!["$KV.rogue.>".into()],
            ..Default::default()
        })
        .await
        .map(|_| ())
    })
    .await;
    assert!(admin_js.get_stream("KV_gslb_c1_health").await.is_ok());

    // Meanwhile z1 kept publishing on d1: none of it reached the rogue.
    assert!(d1_stream.get_info().await.unwrap().state.messages >= 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), d1_sub.next())
            .await
            .is_err()
            || !z1.is_connected(),
        "a refused subscription delivers nothing"
    );
    z1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_refused_its_kv_keeps_deciding_and_counts_the_refusals() {
    // n1 may use its subjects but nothing of JetStream.
    let s = SecureServer::start(&[("c1", "n1"), ("c1", "n2")], "", |n| {
        let mut p = n.permissions();
        if n.node == "n1" {
            p.publish.retain(|s| !s.starts_with('$'));
        }
        p
    });
    s.bootstrap().await;
    let started = Instant::now();
    let n1 = s.node("n1").start();
    let n2 = s.node("n2").start();
    wait_members(&n1, &["n1", "n2"]).await;
    wait_members(&n2, &["n1", "n2"]).await;
    // (Changes made before a peer listens reach it only through the KV, which n1 cannot
    // write: a late joiner learns n1's reports from its next change.)
    n1.set_health("api", Some(true)).unwrap();
    n2.set_health("web", Some(false)).unwrap();
    wait_decision(&n2, "api", true, Source::Global).await;
    wait_decision(&n1, "web", false, Source::Global).await;

    // The refusals were counted within a few seconds of the start...
    let (first, _) = gslb_state_tests::wait_for(SOON, "n1 to count a refused publish", || async {
        let denied = metric(
            &n1,
            "gslbd_state_permission_denied_total{operation=\"publish\"}",
        );
        (denied >= 1.0).then(|| started.elapsed())
    })
    .await
    .unwrap();
    println!("first refusal counted {first:?} after the start");
    assert!(first < Duration::from_secs(5), "{first:?}");
    // ...and the node's loop never waits on them: it answers at once and keeps deciding.
    for _ in 0..20 {
        let t = Instant::now();
        n1.members().await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
    n2.set_health("web", Some(true)).unwrap();
    wait_decision(&n1, "web", true, Source::Global).await;
    n1.set_health("api", Some(false)).unwrap();
    wait_decision(&n2, "api", false, Source::Global).await;
    assert_eq!(
        metric(
            &n2,
            "gslbd_state_permission_denied_total{operation=\"publish\"}"
        ),
        0.0
    );
    for n in [n1, n2] {
        n.shutdown().await;
    }
}
