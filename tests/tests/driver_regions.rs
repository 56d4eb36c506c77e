//! Region-local durable state on a real server (`nats.jetStream.regions` set): each region's
//! nodes write their records to their region's buckets; a node reads the regions it lists at
//! start-up, and re-syncs a member of any other region from that region's bucket when it first
//! hears it. (Without the list every node shares one pair of buckets: the other tests.) (On one
//! server no NATS cluster is named like a region, so the buckets are placed by the server; the
//! super-cluster tests place them in their regions.)

mod driver_common;

use driver_common::*;
use gslb_state_core::{Config, Source};
use gslb_state_nats::{Event, Handle};
use gslb_state_tests::{NatsServer, ServerOpts, wait_until};

/// The test config of a node in `region` that lists `regions`.
fn regional(url: &str, region: &str, regions: &[&str]) -> Config {
    let mut text = yaml(&[url.to_owned()], "global-any-healthy", "");
    let listed: Vec<String> = regions.iter().map(|r| format!("\"{r}\"")).collect();
    text = text.replace(
        "    domain: \"gslb\"\n",
        &format!(
            "    domain: \"gslb\"\n    regions: [{}]\n",
            listed.join(", ")
        ),
    );
    text.push_str(&format!("node:\n  region: \"{region}\"\n"));
    Config::from_yaml(&text).unwrap_or_else(|e| panic!("test config:\n{text}\n{e}"))
}

/// Starts `id` and returns it with the number of endpoints its start-up snapshot held.
async fn start_counting_snapshot(config: Config, id: &str) -> (Handle, usize) {
    let node = start_with(config, id);
    let mut events = node.subscribe();
    let loaded = tokio::time::timeout(SOON, async {
        loop {
            if let Event::SnapshotLoaded { endpoints, .. } = events.recv().await.unwrap() {
                break endpoints;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id} loads its snapshot"));
    (node, loaded)
}

/// Waits until `node` has written `n` reports to bucket `bucket`.
async fn wait_written(node: &Handle, bucket: &str, n: f64) {
    let series = format!("gslbd_state_kv_put_total{{bucket=\"{bucket}\",result=\"ok\"}}");
    wait_until(
        SOON,
        &format!("{} to write to {bucket}", node.node_id()),
        || async { metric(node, &series).is_some_and(|v| v >= n) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_region_writes_its_own_buckets_and_a_starting_node_reads_the_listed_ones() {
    let server = NatsServer::single(ServerOpts::default()).unwrap();
    let url = server.url();
    let both = ["eu", "us"];
    let eu = start_with(regional(&url, "eu", &both), "eu-1");
    let us = start_with(regional(&url, "us", &both), "us-1");
    eu.set_health("eu-only", Some(true)).unwrap();
    us.set_health("us-only", Some(false)).unwrap();
    // Each writes its records to its region's buckets, and nothing to the region-less ones.
    wait_written(&eu, "gslb_c1_health_eu", 1.0).await;
    wait_written(&us, "gslb_c1_health_us", 1.0).await;
    for node in [&eu, &us] {
        for legacy in ["gslb_c1_health", "gslb_c1_members"] {
            let series = format!("gslbd_state_kv_put_total{{bucket=\"{legacy}\",result=\"ok\"}}");
            assert_eq!(
                metric(node, &series),
                None,
                "{} wrote to {legacy}",
                node.node_id()
            );
        }
    }
    wait_decision(&eu, "us-only", Some(false), Source::Global, SOON).await;
    wait_decision(&us, "eu-only", Some(true), Source::Global, SOON).await;

    // A node of eu that lists both regions has both regions' reports in its snapshot.
    let (late, endpoints) = start_counting_snapshot(regional(&url, "eu", &both), "eu-2").await;
    assert_eq!(
        endpoints, 2,
        "eu-2's snapshot holds eu-only (its region) and us-only (the other listed region)"
    );
    let read = "gslbd_state_kv_get_total{bucket=\"gslb_c1_health_us\",result=\"ok\"}";
    assert!(
        metric(&late, read).is_some_and(|v| v >= 1.0),
        "eu-2 read us's health bucket"
    );

    // A node of eu that lists no other region reads only its own at start-up…
    let (alone, endpoints) = start_counting_snapshot(regional(&url, "eu", &["eu"]), "eu-3").await;
    assert_eq!(
        endpoints, 1,
        "eu-3's snapshot holds its region's eu-only alone"
    );
    // …and re-syncs us-1 from us's bucket when it hears us-1 (its region is in the heartbeat).
    wait_decision(&alone, "us-only", Some(false), Source::Global, SOON).await;
    assert!(
        metric(&alone, read).is_some_and(|v| v >= 1.0),
        "eu-3 re-synced us-1 from us's health bucket"
    );
    let d = alone.decision("us-only").unwrap();
    assert_eq!((d.healthy_reports, d.total_reports), (0, 1));
    for node in [&eu, &us, &late, &alone] {
        node.shutdown().await;
    }
}
