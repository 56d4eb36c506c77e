//! The compacted snapshot on a real 3-server cluster (R3 buckets): a node compacts its reports
//! into chunks that its membership record names; a node started later loads them and the
//! report keys written since, and decides exactly as a full read would; a chunk lost from the
//! bucket is read around (the member is re-synced from its report keys).

mod driver_common;

use std::time::Duration;

use driver_common::*;
use gslb_state_core::codec::{Message, decode};
use gslb_state_core::node::Limits;
use gslb_state_core::{Bucket, MessageKind, Names};
use gslb_state_nats::{Handle, NodeOptions};
use gslb_state_tests::{DEFAULT_DOMAIN, NatsCluster, ServerOpts, wait_until};

const ENDPOINTS: usize = 3000;
const LONG: Duration = Duration::from_secs(30);

fn start_compacting(urls: &[String], id: &str) -> Handle {
    let mut options = NodeOptions::new(config(urls, "prefer-local", ""), id);
    options.limits = Limits {
        compact_interval: Duration::from_millis(500),
        ..Limits::default()
    };
    Handle::start(options).expect("the node starts")
}

/// The compacted snapshot `node`'s membership record names, as (generation, chunks).
async fn named_snapshot(js: &async_nats::jetstream::Context, node: &str) -> Option<(u64, u32)> {
    let names = Names::new(CLUSTER);
    let members = js.get_key_value(names.bucket(Bucket::Members)).await.ok()?;
    let value = members.get(names.member_key(node)).await.ok()??;
    match decode(&value).ok()? {
        Message::Member(rec) => rec.snapshot.map(|s| (s.generation, s.chunks)),
        _ => None,
    }
}

/// Waits until `node` decides every endpoint `i` as `want(i)`.
async fn wait_all(node: &Handle, want: impl Fn(usize) -> bool) {
    let wrong = || {
        (0..ENDPOINTS)
            .filter(|&i| node.decision(&endpoint(i)).and_then(|d| d.healthy) != Some(want(i)))
            .count()
    };
    wait_until(LONG, "every decision as w reports", || async {
        wrong() == 0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {} wrong", wrong()));
}

/// The revision the compacted snapshot `node`'s record names was taken at.
async fn named_revision(js: &async_nats::jetstream::Context, node: &str) -> u64 {
    let names = Names::new(CLUSTER);
    let members = js
        .get_key_value(names.bucket(Bucket::Members))
        .await
        .unwrap();
    let value = members.get(names.member_key(node)).await.unwrap().unwrap();
    match decode(&value) {
        Ok(Message::Member(rec)) => rec.snapshot.unwrap().revision,
        other => panic!("{other:?}"),
    }
}

/// How many of `node`'s report keys were last written after `revision`.
async fn keys_since(js: &async_nats::jetstream::Context, node: &str, revision: u64) -> u64 {
    let names = Names::new(CLUSTER);
    let health = js
        .get_key_value(names.bucket(Bucket::Health))
        .await
        .unwrap();
    let mut n = 0;
    for i in 0..ENDPOINTS {
        let key = names.report_key(node, &endpoint(i));
        let entry = health.entry(key).await.unwrap().unwrap();
        n += u64::from(entry.revision > revision);
    }
    n
}

/// The `report_seq` of `node`'s membership record (0 without one).
async fn record_report_seq(js: &async_nats::jetstream::Context, node: &str) -> u64 {
    let names = Names::new(CLUSTER);
    let Ok(members) = js.get_key_value(names.bucket(Bucket::Members)).await else {
        return 0;
    };
    match members.get(names.member_key(node)).await {
        Ok(Some(value)) => match decode(&value) {
            Ok(Message::Member(rec)) => rec.report_seq,
            _ => 0,
        },
        _ => 0,
    }
}

fn endpoint(i: usize) -> String {
    format!("svc-{i:05}.example.net")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_node_loads_the_chunks_and_the_keys_written_since_and_reads_around_a_lost_chunk() {
    let cluster = NatsCluster::start(3, ServerOpts::default()).unwrap();
    let urls = cluster.urls();
    let client = async_nats::connect(urls.as_slice()).await.unwrap();
    let js = async_nats::jetstream::with_domain(client, DEFAULT_DOMAIN);

    let w = start_compacting(&urls, "w");
    for i in 0..ENDPOINTS {
        w.set_health(&endpoint(i), Some(!i.is_multiple_of(3)))
            .unwrap();
    }
    wait_until(LONG, "w's record names a compacted snapshot", || async {
        named_snapshot(&js, "w").await.is_some()
    })
    .await
    .unwrap();
    let (generation, chunks) = named_snapshot(&js, "w").await.unwrap();
    let revision = named_revision(&js, "w").await;
    // Changes after the compaction are read from their report keys.
    for i in 0..100 {
        w.set_health(&endpoint(i), Some(i.is_multiple_of(3)))
            .unwrap();
    }
    let durable = "gslbd_state_kv_put_total{bucket=\"gslb_c1_health\",result=\"ok\"}";
    wait_until(LONG, "w's changes written", || async {
        metric(&w, durable).is_some_and(|v| v >= (ENDPOINTS + 100) as f64 + f64::from(chunks))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", w.metrics().encode()));
    // A node starting now reads from w's record that w changed reports since.
    wait_until(LONG, "w's record says so", || async {
        record_report_seq(&js, "w").await >= (ENDPOINTS + 100) as u64
    })
    .await
    .unwrap();
    // The next compaction waits for half as many changes: the record still names the same.
    assert_eq!(named_snapshot(&js, "w").await, Some((generation, chunks)));

    let want = |i: usize| {
        if i < 100 {
            i.is_multiple_of(3)
        } else {
            !i.is_multiple_of(3)
        }
    };
    let r = start(&urls, "global-any-healthy", "r");
    wait_until(LONG, "r's snapshot loaded", || async {
        r.snapshot_loaded()
    })
    .await
    .unwrap();
    // Loaded means the snapshot's decisions are in force: none from before it is read.
    let wrong_at_load = (0..ENDPOINTS)
        .filter(|&i| r.decision(&endpoint(i)).and_then(|d| d.healthy) != Some(want(i)))
        .count();
    assert_eq!(wrong_at_load, 0, "decisions not in force when loaded");
    let stats = r.stats().await.unwrap();
    assert_eq!(
        stats.received(MessageKind::Chunk),
        u64::from(chunks),
        "r read w's chunks: {stats:?}"
    );
    // Every report from a chunk, the 100 later changes from their keys (before or after the
    // chunk that holds their earlier state), nothing else.
    let applied = stats.reports_applied;
    assert!(
        (ENDPOINTS as u64..=(ENDPOINTS + 100) as u64).contains(&applied),
        "{stats:?}"
    );
    // Exactly w's report keys written after the revision its record names (the 100 changes,
    // and the first writes still out when the compaction began), not every key.
    let keys = stats.received(MessageKind::Report);
    assert_eq!(keys, keys_since(&js, "w", revision).await, "{stats:?}");
    assert!(keys >= 100 && keys < (ENDPOINTS + 100) as u64, "{stats:?}");
    assert_eq!(stats.stale_reads, 0, "{stats:?}");
    assert_eq!(stats.resyncs_requested, 0, "{stats:?}");
    wait_all(&r, want).await;
    r.shutdown().await;

    // A chunk lost from the bucket: the reader does not trust its read of w, and re-reads
    // w's report keys when w next announces.
    let names = Names::new(CLUSTER);
    let health = js
        .get_key_value(names.bucket(Bucket::Health))
        .await
        .unwrap();
    health
        .purge(names.chunk_key("w", generation, 0))
        .await
        .unwrap();
    let r2 = start(&urls, "global-any-healthy", "r2");
    wait_until(LONG, "r2 re-synced w", || async {
        r2.stats().await.is_ok_and(|s| s.resyncs_requested >= 1)
    })
    .await
    .unwrap();
    wait_all(&r2, want).await;
    let stats = r2.stats().await.unwrap();
    assert_eq!(
        stats.received(MessageKind::Chunk),
        u64::from(chunks) - 1,
        "{stats:?}"
    );
    r2.shutdown().await;
    w.shutdown().await;
}
