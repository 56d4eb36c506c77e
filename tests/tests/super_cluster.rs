//! The NATS driver on a real super-cluster: three regions (`eu`, `us`, `ap`), each a JetStream
//! cluster of its own, joined by gateways that run through proxies the tests cut, blackhole
//! and heal ([`NatsSuperCluster`]). Each node connects to its own region's servers only, has
//! `node.region` set to it, and stores its records in its region's buckets
//! (`nats.jetStream.regions: [eu, us, ap]`). The `nats_*` tests pin down, with plain async-nats clients,
//! what NATS itself does in a cut region (what the driver can count on there); they fail if a
//! nats-server release behaves otherwise. Each test prints what it measures (`MEASURED ...`).
//!
//! The tests take [`driver_common::serial`]: nine servers and a dozen nodes are enough load for
//! a 2-core machine, and the TTL-based timings mean little when tests compete for CPU.

mod driver_common;

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream::Placement};
use futures::StreamExt;

use driver_common::{crosses, current, report, serial};
use gslb_state_core::{Config, Source};
use gslb_state_nats::{Handle, NodeOptions};
use gslb_state_tests::{LinkMode, NatsSuperCluster, ServerOpts, wait_for, wait_until};

/// Heartbeat interval of every node here.
const INTERVAL: Duration = Duration::from_millis(250);
/// Heartbeat TTL of every node here.
const TTL: Duration = Duration::from_millis(1500);
/// Deadline for what should happen within a few heartbeats.
const SOON: Duration = Duration::from_secs(10);
/// Deadline for what waits on reconnects, JetStream elections or restarts.
const SLOW: Duration = Duration::from_secs(30);
/// Deadline for a JetStream meta leader without quorum to step down.
const STEP_DOWN: Duration = Duration::from_secs(45);

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
/// Servers per region: three, as the guide recommends (and R3 streams need). Nine servers
/// start in about 5 s on a 2-core machine, no slower than three: the JetStream meta election
/// across gateways is what takes the time.
const SERVERS: usize = 3;

/// The four policies, each with the cluster id its group of nodes uses.
const POLICIES: [(&str, &str); 4] = [
    ("pl", "prefer-local"),
    ("lo", "local-only"),
    ("ga", "global-any-healthy"),
    ("gq", "global-quorum"),
];

fn super_cluster() -> NatsSuperCluster {
    let regions: Vec<(&str, usize)> = REGIONS.iter().map(|r| (*r, SERVERS)).collect();
    NatsSuperCluster::start(&regions, ServerOpts::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The config of node `id` in `region`, member of `cluster`, connected to `servers`.
fn config(cluster: &str, id: &str, region: &str, policy: &str, servers: &[String]) -> Config {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "cluster:\n  id: \"{cluster}\"\n\
         node:\n  id: \"{id}\"\n  region: \"{region}\"\n\
         state:\n  healthPolicy: \"{policy}\"\n  quorumMinPercent: 51\n  \
         heartbeatInterval: \"{}ms\"\n  heartbeatTTL: \"{}ms\"\n\
         nats:\n  servers: [{}]\n  pingInterval: \"500ms\"\n  connectTimeout: \"500ms\"\n  \
         jetStream:\n    domain: \"gslb\"\n    regions: [eu, us, ap]\n",
        INTERVAL.as_millis(),
        TTL.as_millis(),
        servers.join(", ")
    );
    Config::from_yaml(&text).unwrap_or_else(|e| panic!("test config:\n{text}\n{e}"))
}

/// A node of the test: its handle, region and policy.
struct Node {
    handle: Handle,
    region: &'static str,
    policy: &'static str,
}

/// Starts one node per region under `policy` in cluster `cluster`, each on its region's
/// servers; named `<region>-<cluster>`.
fn start_group(sc: &NatsSuperCluster, cluster: &str, policy: &'static str) -> Vec<Node> {
    REGIONS
        .iter()
        .map(|&region| {
            let id = format!("{region}-{cluster}");
            let handle = Handle::start(NodeOptions::new(
                config(cluster, &id, region, policy, &sc.urls(region)),
                &id,
            ))
            .expect("the node starts");
            Node {
                handle,
                region,
                policy,
            }
        })
        .collect()
}

/// Active members `node` counts, itself included, sorted.
async fn members(node: &Handle) -> Vec<String> {
    let mut m: Vec<String> = node
        .members()
        .await
        .expect("driver running")
        .into_iter()
        .filter(|m| m.active)
        .map(|m| m.node)
        .collect();
    m.sort();
    m
}

/// The ids of the nodes of `group` in `regions`, sorted.
fn ids_in(group: &[Node], regions: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = group
        .iter()
        .filter(|n| regions.contains(&n.region))
        .map(|n| n.handle.node_id().to_string())
        .collect();
    ids.sort();
    ids
}

/// What each node observes: `eu` sees `api` and `db` up; `us` and `ap` see `api` down (or, with
/// `us_flipped`, `us` sees it up) and do not probe `db`.
fn observation(region: &str, endpoint: &str, us_flipped: bool) -> Option<bool> {
    match (region, endpoint) {
        ("eu", _) => Some(true),
        ("us", "api") => Some(us_flipped),
        ("ap", "api") => Some(false),
        _ => None,
    }
}

fn observe(groups: &[Vec<Node>], us_flipped: bool) {
    for node in groups.iter().flatten() {
        for endpoint in ["api", "db"] {
            if let Some(seen) = observation(node.region, endpoint, us_flipped) {
                node.handle.set_health(endpoint, Some(seen)).unwrap();
            }
        }
    }
}

/// What a node in `region` decides for `endpoint` when it sees the nodes of `visible` (its
/// own region included): the README's rule, worked out from the observations it can count.
/// `(healthy, source, healthy_reports, total_reports)`.
fn expected(
    policy: &str,
    region: &str,
    endpoint: &str,
    visible: &[&str],
    us_flipped: bool,
) -> (Option<bool>, Source, u32, u32) {
    let local = observation(region, endpoint, us_flipped);
    let remote: Vec<bool> = visible
        .iter()
        .filter(|r| **r != region)
        .filter_map(|r| observation(r, endpoint, us_flipped))
        .collect();
    let remote_healthy = remote.iter().filter(|h| **h).count() as u32;
    let remote_total = remote.len() as u32;
    let healthy = remote_healthy + u32::from(local == Some(true));
    let total = remote_total + u32::from(local.is_some());
    let quorum = |h: u32, t: u32| h * 100 >= 51 * t;
    let (verdict, source) = match (policy, local) {
        ("prefer-local" | "local-only", Some(seen)) => (Some(seen), Source::Local),
        ("local-only", None) => (None, Source::Unknown),
        ("prefer-local", None) if remote_total > 0 => {
            (Some(quorum(remote_healthy, remote_total)), Source::Global)
        }
        ("prefer-local", None) => (None, Source::Unknown),
        (_, _) if remote_total == 0 => match local {
            Some(seen) => (Some(seen), Source::FallbackLocal),
            None => (None, Source::Unknown),
        },
        ("global-any-healthy", _) => (Some(healthy > 0), Source::Global),
        ("global-quorum", _) => (Some(quorum(healthy, total)), Source::Global),
        _ => unreachable!("policy {policy}"),
    };
    (verdict, source, healthy, total)
}

/// The regions a node in `region` hears when `cut` (if any) is cut off from the others.
fn visible_from(region: &str, cut: Option<&str>) -> Vec<&'static str> {
    REGIONS
        .iter()
        .copied()
        .filter(|r| match cut {
            None => true,
            Some(c) => (*r == c) == (region == c),
        })
        .collect()
}

/// What is still not as expected, over every node: its members and both endpoints' decisions.
async fn mismatches(groups: &[Vec<Node>], cut: Option<&str>, us_flipped: bool) -> Vec<String> {
    let mut wrong = Vec::new();
    for group in groups {
        for node in group {
            let visible = visible_from(node.region, cut);
            let want = ids_in(group, &visible);
            let got = members(&node.handle).await;
            if got != want {
                wrong.push(format!(
                    "{} counts members {got:?}, not {want:?}",
                    node.handle.node_id()
                ));
            }
            for endpoint in ["api", "db"] {
                let want = expected(node.policy, node.region, endpoint, &visible, us_flipped);
                let got = current(&node.handle, endpoint)
                    .await
                    .map_or((None, Source::Unknown, 0, 0), |d| {
                        (d.healthy, d.source, d.healthy_reports, d.total_reports)
                    });
                if got != want {
                    wrong.push(format!(
                        "{} ({}) decides {endpoint} {got:?}, not {want:?}",
                        node.handle.node_id(),
                        node.policy
                    ));
                }
            }
        }
    }
    wrong
}

/// Waits until every node is as expected; returns how long it took.
async fn converge(
    groups: &[Vec<Node>],
    cut: Option<&str>,
    us_flipped: bool,
    timeout: Duration,
    what: &str,
) -> Duration {
    let last = std::sync::Mutex::new(Vec::new());
    let waited = wait_until(timeout, what, || {
        let last = &last;
        async move {
            let wrong = mismatches(groups, cut, us_flipped).await;
            let done = wrong.is_empty();
            *last.lock().unwrap() = wrong;
            done
        }
    })
    .await;
    match waited {
        Ok(took) => took,
        Err(e) => panic!("{e}; still wrong:\n  {}", last.lock().unwrap().join("\n  ")),
    }
}

async fn shutdown(groups: Vec<Vec<Node>>) {
    for node in groups.into_iter().flatten() {
        node.handle.shutdown().await;
    }
}

/// Whether every node counts every member of its group.
async fn all_count_everyone(groups: &[Vec<Node>]) -> bool {
    for group in groups {
        let all = ids_in(group, &REGIONS);
        for node in group {
            if members(&node.handle).await != all {
                return false;
            }
        }
    }
    true
}

/// A health change crosses regions; then `eu` is cut off (reset, then blackholed) under every
/// policy at once: each side counts only the members it still hears once their TTL has run
/// out, decides on their reports alone, and after healing everyone counts everyone again
/// within TTL + interval of the gateways being back; a change made on one side during the cut
/// reaches the other too.
#[tokio::test(flavor = "multi_thread")]
async fn each_side_of_a_region_cut_decides_on_what_it_sees_under_every_policy() {
    let _serial = serial().await;
    let started = Instant::now();
    let sc = super_cluster();
    report("super-cluster 3x3 formed", started.elapsed());
    let groups: Vec<Vec<Node>> = POLICIES
        .iter()
        .map(|(cluster, policy)| start_group(&sc, cluster, policy))
        .collect();
    observe(&groups, false);
    let took = converge(
        &groups,
        None,
        false,
        SLOW,
        "every node to count every region",
    )
    .await;
    report("12 nodes in 3 regions converged", took);

    // A flip in each region is decided in the two others, across the gateways.
    let gq = &groups[3];
    for (i, flip) in gq.iter().enumerate() {
        let before = observation(flip.region, "api", false);
        flip.handle
            .set_health("api", Some(!before.unwrap_or(false)))
            .unwrap();
        // eu's is the one healthy report of three: eu's flip leaves none, another's makes two.
        let want_healthy = if flip.region == "eu" { 0 } else { 2 };
        let others: Vec<&Handle> = gq
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| &n.handle)
            .collect();
        let what = format!("the others to count {}'s flip", flip.handle.node_id());
        let took = wait_until(SOON, &what, || async {
            let mut counted = true;
            for node in &others {
                counted &= current(node, "api")
                    .await
                    .is_some_and(|d| (d.healthy_reports, d.total_reports) == (want_healthy, 3));
            }
            counted
        })
        .await
        .unwrap();
        report(
            &format!("flip in {} decided in the other regions", flip.region),
            took,
        );
        flip.handle.set_health("api", before).unwrap();
        converge(&groups, None, false, SOON, "the flip back everywhere").await;
    }

    for mode in [LinkMode::Reset, LinkMode::Blackhole] {
        sc.cut("eu", mode);
        let cut = Instant::now();
        // Nobody stops counting a member of the other side before its TTL has run out (its
        // last heartbeat came at most an interval, plus scheduling, before the cut).
        let (_, first_expiry) = wait_for(SOON, "a member across the cut to expire", || async {
            (!all_count_everyone(&groups).await).then_some(())
        })
        .await
        .unwrap();
        assert!(
            first_expiry >= TTL - 2 * INTERVAL,
            "{mode:?}: a member across the cut stopped counting {first_expiry:?} after it, before its TTL ({TTL:?})"
        );
        // us changes its mind during the cut, in every group.
        for node in groups.iter().flatten().filter(|n| n.region == "us") {
            node.handle.set_health("api", Some(true)).unwrap();
        }
        converge(&groups, Some("eu"), true, SOON, "each side to decide alone").await;
        report(
            &format!("{mode:?} cut: first member expired after"),
            first_expiry,
        );
        report(
            &format!("{mode:?} cut: each side decided alone after"),
            cut.elapsed(),
        );
        if mode == LinkMode::Blackhole {
            // The servers notice the silent gateways (pings) and drop them.
            let took = sc.wait_isolated("eu", SOON).unwrap();
            report(
                "Blackhole cut: servers dropped eu's gateways after",
                cut.elapsed().max(took),
            );
        }

        sc.heal();
        let healed = Instant::now();
        let formed = sc.wait_formed(SLOW).unwrap();
        report(
            &format!("{mode:?} cut: super-cluster formed again after"),
            formed,
        );
        let back = wait_until(TTL + INTERVAL, "everyone to count everyone again", || {
            all_count_everyone(&groups)
        })
        .await
        .unwrap_or_else(|e| {
            panic!("{mode:?}: {e}, within TTL + interval of the gateways being back")
        });
        report(
            &format!("{mode:?} cut: every member counted again after healing"),
            formed + back,
        );
        // The change made in us during the cut reaches eu: from us's region's bucket when eu
        // re-syncs us (its heartbeat shows the report eu missed), a JetStream read.
        converge(
            &groups,
            None,
            true,
            SLOW,
            "everyone to decide on every report again",
        )
        .await;
        report(
            &format!("{mode:?} cut: every decision converged after healing"),
            healed.elapsed(),
        );
        observe(&groups, false);
        converge(&groups, None, false, SOON, "the flip back everywhere").await;
    }
    shutdown(groups).await;
}

/// A gateway blackholed between two regions, `us` and `ap`, while both still reach `eu`: the
/// servers drop it once their pings go unanswered, `us` and `ap` stop counting each other after
/// the TTL (gateways do not relay: nothing goes `us` → `eu` → `ap`) while `eu` counts both, and
/// after healing all count all again. Then every server of `us` is killed: `us`'s node decides
/// alone, the others stop counting it; the servers restarted with their stores, it is back and
/// what it saw meanwhile reaches the others.
#[tokio::test(flavor = "multi_thread")]
async fn a_blackholed_gateway_is_noticed_and_healed_and_a_region_killed_and_restarted_rejoins() {
    let _serial = serial().await;
    let sc = super_cluster();
    let group = start_group(&sc, "gw", "global-quorum");
    let [eu, us, ap] = [&group[0].handle, &group[1].handle, &group[2].handle];
    eu.set_health("api", Some(false)).unwrap();
    us.set_health("api", Some(true)).unwrap();
    ap.set_health("api", Some(true)).unwrap();
    let ids = ids_in(&group, &REGIONS);
    let everyone = ids.iter().map(String::as_str).collect::<Vec<_>>();
    for node in [eu, us, ap] {
        wait_members(node, &everyone, SLOW).await;
        wait_counts(node, "api", (Some(true), 2, 3), SOON).await;
    }

    // One gateway blackholed.
    sc.set_link("us", "ap", LinkMode::Blackhole);
    let cut = Instant::now();
    wait_members(us, &[eu.node_id(), us.node_id()], SOON).await;
    wait_members(ap, &[eu.node_id(), ap.node_id()], SOON).await;
    report(
        "us-ap blackholed: us and ap stopped counting each other after",
        cut.elapsed(),
    );
    assert!(
        cut.elapsed() >= TTL - 2 * INTERVAL,
        "not before the TTL: {:?}",
        cut.elapsed()
    );
    // 1 of 2 healthy (50% < 51%) on either side of the dead gateway; eu hears all three.
    wait_counts(us, "api", (Some(false), 1, 2), SOON).await;
    wait_counts(ap, "api", (Some(false), 1, 2), SOON).await;
    assert_eq!(members(eu).await, ids, "eu still counts everyone");
    wait_counts(eu, "api", (Some(true), 2, 3), SOON).await;
    let (_, took) = wait_for(SOON, "the servers to drop the us-ap gateway", || async {
        (sc.inbound_gateways("us", "ap") == 0 && sc.inbound_gateways("ap", "us") == 0).then_some(())
    })
    .await
    .unwrap();
    report(
        "us-ap blackholed: servers dropped the gateway after",
        cut.elapsed().max(took),
    );
    assert_eq!(
        sc.inbound_gateways("eu", "us"),
        SERVERS,
        "eu's gateways stay"
    );
    assert_eq!(
        sc.inbound_gateways("ap", "eu"),
        SERVERS,
        "eu's gateways stay"
    );

    sc.heal();
    let healed = Instant::now();
    sc.wait_formed(SLOW).unwrap();
    for node in [eu, us, ap] {
        wait_members(node, &everyone, SOON).await;
        wait_counts(node, "api", (Some(true), 2, 3), SOON).await;
    }
    report(
        "us-ap healed: everyone counts everyone after",
        healed.elapsed(),
    );

    // Every server of us killed.
    sc.kill_region("us").unwrap();
    let killed = Instant::now();
    wait_members(us, &[us.node_id()], SOON).await;
    wait_members(eu, &[eu.node_id(), ap.node_id()], SOON).await;
    wait_members(ap, &[eu.node_id(), ap.node_id()], SOON).await;
    report(
        "us killed: its node alone and the others without it after",
        killed.elapsed(),
    );
    assert!(!us.is_connected());
    wait_counts(us, "api", (Some(true), 1, 1), SOON).await;
    assert_eq!(
        us.decision("api").map(|d| d.source),
        Some(Source::FallbackLocal)
    );
    wait_counts(eu, "api", (Some(false), 1, 2), SOON).await;
    // What us sees while its region is down reaches the others once it is back.
    us.set_health("api", Some(false)).unwrap();

    // From this thread: a server dies with the thread that started it.
    let restarted = Instant::now();
    sc.restart_region("us").unwrap();
    report("us restarted: servers ready after", restarted.elapsed());
    for node in [eu, us, ap] {
        wait_members(node, &everyone, SLOW).await;
        wait_counts(node, "api", (Some(false), 1, 3), SLOW).await;
    }
    report(
        "us restarted: its node counted again and its change decided after",
        restarted.elapsed(),
    );
    assert!(us.is_connected());
    sc.wait_formed(SLOW).unwrap();
    for node in group {
        node.handle.shutdown().await;
    }
}

/// The `gslbd_state_kv_put_total` of `node` for `bucket` that succeeded.
fn puts_ok(node: &Handle, bucket: &str) -> f64 {
    let series = format!("gslbd_state_kv_put_total{{bucket=\"{bucket}\",result=\"ok\"}}");
    driver_common::metric(node, &series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_region_keeps_writing_and_starting_from_its_own_state_and_loses_nothing() {
    let _serial = serial().await;
    let sc = super_cluster();
    let group = start_group(&sc, "rl", "prefer-local");
    let [eu, us, ap] = [&group[0].handle, &group[1].handle, &group[2].handle];
    let everyone: Vec<String> = ids_in(&group, &REGIONS);
    let everyone: Vec<&str> = everyone.iter().map(String::as_str).collect();
    eu.set_health("before", Some(true)).unwrap();
    for node in [eu, us, ap] {
        wait_members(node, &everyone, SLOW).await;
    }
    wait_counts(us, "before", (Some(true), 1, 1), SOON).await;
    // Each region's records are in its own bucket, placed in its own cluster.
    let admin = raw_client(sc.urls("us")).await;
    let js = jetstream::with_domain(admin.clone(), "gslb");
    for region in REGIONS {
        // Each node creates its region's buckets when it first connects.
        let name = format!("gslb_rl_health_{region}");
        let (store, _) = wait_for(SOON, &format!("{name} created"), || async {
            js.get_key_value(&name).await.ok()
        })
        .await
        .unwrap();
        assert_eq!(
            placed_in(&store).await.as_deref(),
            Some(region),
            "{region}'s bucket"
        );
    }

    // eu cut off: its node writes what it sees to its region's bucket all the same.
    sc.cut("eu", LinkMode::Reset);
    sc.wait_isolated("eu", SOON).unwrap();
    let written = puts_ok(eu, "gslb_rl_health_eu");
    eu.set_health("during", Some(false)).unwrap();
    let cut = Instant::now();
    wait_until(SOON, "eu's write inside the cut region", || async {
        puts_ok(eu, "gslb_rl_health_eu") > written
    })
    .await
    .unwrap();
    report(
        "eu cut: a write to eu's bucket acknowledged after",
        cut.elapsed(),
    );
    wait_members(eu, &[eu.node_id()], SOON).await;

    // A node started inside the cut region reads its region's state (the other regions'
    // buckets are out of reach: skipped) and decides from it.
    let started = Instant::now();
    let id = "eu-2-rl";
    let late = Handle::start(NodeOptions::new(
        config("rl", id, "eu", "prefer-local", &sc.urls("eu")),
        id,
    ))
    .expect("the node starts");
    let mut events = late.subscribe();
    let endpoints = tokio::time::timeout(SLOW, async {
        loop {
            if let gslb_state_nats::Event::SnapshotLoaded { endpoints, .. } =
                events.recv().await.unwrap()
            {
                break endpoints;
            }
        }
    })
    .await
    .expect("eu-2 loads its snapshot inside the cut region");
    report(
        "eu cut: a node started there loaded its snapshot after",
        started.elapsed(),
    );
    assert_eq!(endpoints, 2, "eu-2's snapshot holds eu-1's two reports");
    wait_counts(&late, "during", (Some(false), 0, 1), SOON).await;
    late.set_health("late", Some(true)).unwrap();
    wait_until(SOON, "eu-2's write inside the cut region", || async {
        puts_ok(&late, "gslb_rl_health_eu") >= 1.0
    })
    .await
    .unwrap();

    // Healed: what eu wrote during the cut reaches the others (live traffic of the cut was
    // lost; they re-read it from eu's bucket), within TTL + interval of the gateways being
    // back, plus a read.
    sc.heal();
    let healed = Instant::now();
    sc.wait_formed(SLOW).unwrap();
    let all: Vec<&str> = everyone.iter().copied().chain([id]).collect();
    for node in [us, ap] {
        wait_members(node, &all, SLOW).await;
        wait_counts(node, "during", (Some(false), 0, 1), SLOW).await;
        wait_counts(node, "late", (Some(true), 1, 1), SLOW).await;
    }
    report(
        "eu healed: everything written during the cut decided everywhere after",
        healed.elapsed(),
    );
    late.shutdown().await;
    for node in group {
        node.handle.shutdown().await;
    }
}

/// Waits until `node` counts exactly `ids` (sorted or not) as active members.
async fn wait_members(node: &Handle, ids: &[&str], timeout: Duration) {
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    let what = format!("{} to count members {want:?}", node.node_id());
    if let Err(e) = wait_until(timeout, &what, || async { members(node).await == want }).await {
        panic!("{e}; members: {:?}", members(node).await);
    }
}

/// Waits until `node` decides `endpoint` as `(healthy, healthy_reports, total_reports)`.
async fn wait_counts(
    node: &Handle,
    endpoint: &str,
    want: (Option<bool>, u32, u32),
    timeout: Duration,
) {
    let what = format!("{} to decide {endpoint} as {want:?}", node.node_id());
    let got = || async {
        current(node, endpoint)
            .await
            .map(|d| (d.healthy, d.healthy_reports, d.total_reports))
    };
    if let Err(e) = wait_until(timeout, &what, || async { got().await == Some(want) }).await {
        panic!("{e}; decision: {:?}", current(node, endpoint).await);
    }
}

// ---------------------------------------------------------------------------------------------
// What NATS itself does in a cut region (async-nats, the way the driver uses JetStream)
// ---------------------------------------------------------------------------------------------

/// A plain client of `urls` with short timeouts: a JetStream request gives up after 2 s.
async fn raw_client(urls: Vec<String>) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .ping_interval(Duration::from_millis(500))
        .connection_timeout(Duration::from_millis(500))
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(urls)
        .await
        .expect("a raw client")
}

/// A KV bucket placed in `region`'s cluster with `replicas`, as the driver creates its own.
fn placed(bucket: &str, region: &str, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        num_replicas: replicas,
        placement: Some(Placement {
            cluster: Some(region.to_string()),
            tags: Vec::new(),
        }),
        ..Default::default()
    }
}

/// What `f` gives, or its error, or that it gave no answer within 3 s.
async fn within_3s<T, E: std::fmt::Display>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(3), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 3 s".to_string()),
    }
}

/// The error of `f` (or that it gave no answer within 3 s); `None` if it succeeded.
async fn failure<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Option<String> {
    within_3s(f).await.err()
}

/// Awaits `f()` until it succeeds; returns what it gave and how long it took, or panics with
/// its last error.
async fn until_ok<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> (T, Duration) {
    let last = std::sync::Mutex::new(String::new());
    let waited = wait_for(timeout, what, || {
        let (fut, last) = (f(), &last);
        async move {
            within_3s(fut)
                .await
                .map_err(|e| *last.lock().unwrap() = e)
                .ok()
        }
    })
    .await;
    waited.unwrap_or_else(|e| panic!("{e}; last error: {}", last.lock().unwrap()))
}

/// The keys of `store` (an ordered consumer underneath, which the JetStream meta leader
/// creates).
async fn keys(store: &kv::Store) -> Result<usize, String> {
    let keys = store.keys().await.map_err(|e| e.to_string())?;
    Ok(keys.collect::<Vec<_>>().await.len())
}

/// The region a stream was placed in.
async fn placed_in(store: &kv::Store) -> Option<String> {
    let mut stream = store.stream.clone();
    stream.info().await.ok()?.cluster.as_ref()?.name.clone()
}

/// Measured on nats-server 2.15 with async-nats 0.51, three regions of three servers, `eu` cut
/// off (reset, then blackholed). Inside the cut region: puts to its own streams (R1 and R3)
/// work, direct gets work, a watch made before the cut keeps delivering; but nothing that needs
/// the JetStream meta leader works: no bucket is created, and no consumer either (a new watch,
/// `keys()`, an ordered consumer: the driver's KV reads), since the meta group's quorum is on
/// the other side. A bucket of another region cannot be written. The other side creates
/// buckets and consumers. After healing, core subjects, puts across and new consumers flow
/// again (times printed).
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_cut_region_writes_and_direct_gets_its_own_streams_but_creates_no_consumer() {
    let _serial = serial().await;
    let sc = super_cluster();
    let eu = raw_client(sc.urls("eu")).await;
    let us = raw_client(sc.urls("us")).await;
    let (jeu, jus) = (
        jetstream::with_domain(eu.clone(), "gslb"),
        jetstream::with_domain(us.clone(), "gslb"),
    );
    // Right after start the meta layer may still be settling: create until it takes.
    let create = |js: &jetstream::Context, config: kv::Config| {
        let js = js.clone();
        async move {
            until_ok(SLOW, &format!("bucket {} created", config.bucket), || {
                js.create_key_value(config.clone())
            })
            .await
            .0
        }
    };
    let eu_r1 = create(&jeu, placed("eu_r1", "eu", 1)).await;
    let eu_r3 = create(&jeu, placed("eu_r3", "eu", 3)).await;
    let us_r3 = create(&jus, placed("us_r3", "us", 3)).await;
    let us_r3_from_eu = jeu.get_key_value("us_r3").await.unwrap();
    for (store, region) in [(&eu_r1, "eu"), (&eu_r3, "eu"), (&us_r3, "us")] {
        assert_eq!(
            placed_in(store).await.as_deref(),
            Some(region),
            "{}",
            store.name
        );
        store.put("k", "v0".into()).await.unwrap();
    }

    for (phase, mode) in [LinkMode::Reset, LinkMode::Blackhole]
        .into_iter()
        .enumerate()
    {
        let mut watch = eu_r3.watch_all().await.unwrap();
        sc.cut("eu", mode);
        let cut = Instant::now();
        sc.wait_isolated("eu", SOON).unwrap();
        report(
            &format!("nats {mode:?}: eu's gateways gone after"),
            cut.elapsed(),
        );

        // Inside eu: its own streams take puts, R1 and R3, and answer direct gets.
        let value = format!("cut-{phase}");
        for store in [&eu_r1, &eu_r3] {
            until_ok(SOON, "a put in the cut region", || {
                store.put("k", value.clone().into())
            })
            .await;
            let got = store.get("k").await.unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value.as_bytes()),
                "direct get in {}",
                store.name
            );
        }
        // A watch made before the cut keeps delivering.
        let entry = tokio::time::timeout(SOON, async {
            loop {
                let entry = watch
                    .next()
                    .await
                    .expect("watch open")
                    .expect("watch entry");
                if entry.value.as_ref() == value.as_bytes() {
                    break entry;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{mode:?}: the watch made before the cut delivers the put"));
        assert_eq!(entry.key, "k");
        // Nothing that needs the meta leader: no bucket, no consumer.
        let new_bucket = placed(&format!("eu_new{phase}"), "eu", 1);
        let e = failure(jeu.create_key_value(new_bucket)).await;
        assert!(
            e.is_some(),
            "{mode:?}: a bucket was created in the cut region"
        );
        let e = failure(eu_r3.watch_all()).await;
        assert!(
            e.is_some(),
            "{mode:?}: a watch was created in the cut region"
        );
        println!(
            "nats {mode:?}: a new watch in the cut region: {}",
            e.unwrap()
        );
        assert!(
            failure(keys(&eu_r1)).await.is_some(),
            "{mode:?}: keys() in the cut region"
        );
        // Another region's stream is out of reach.
        let e = failure(us_r3_from_eu.put("k", "from-eu".into())).await;
        println!("nats {mode:?}: a put from eu to us's stream: {e:?}");
        assert!(
            e.is_some(),
            "{mode:?}: eu wrote to us's stream across the cut"
        );
        // The other side has the meta quorum: buckets and consumers are created there.
        until_ok(SLOW, "us to create a bucket", || {
            jus.create_key_value(placed(&format!("us_new{phase}"), "us", 1))
        })
        .await;
        until_ok(SLOW, "us to read its keys", || keys(&us_r3)).await;
        report(
            &format!("nats {mode:?}: us creates buckets and consumers after"),
            cut.elapsed(),
        );

        sc.heal();
        let healed = Instant::now();
        let took = crosses(&us, &eu, &format!("probe.{phase}"), SLOW)
            .await
            .unwrap();
        report(
            &format!("nats {mode:?}: healed, core subject us->eu flows after"),
            took,
        );
        until_ok(SLOW, "a put from eu to us's stream", || {
            us_r3_from_eu.put("k", "from-eu".into())
        })
        .await;
        report(
            &format!("nats {mode:?}: healed, KV put eu->us works after"),
            healed.elapsed(),
        );
        until_ok(SLOW, "a consumer on eu's stream", || keys(&eu_r3)).await;
        report(
            &format!("nats {mode:?}: healed, consumers in eu created after"),
            healed.elapsed(),
        );
        sc.wait_formed(SLOW).unwrap();
        // What eu wrote during the cut is there for everyone.
        let seen = jus
            .get_key_value("eu_r3")
            .await
            .unwrap()
            .get("k")
            .await
            .unwrap();
        assert_eq!(seen.as_deref(), Some(value.as_bytes()));
    }
}

/// Measured likewise with two regions of one server: cut apart, neither side can create a
/// stream (no quorum of the meta group anywhere) and, once the old meta leader has stepped
/// down (10–20 s), neither has a meta leader; each still puts to its own region's stream.
/// Healing brings a meta leader back.
#[tokio::test(flavor = "multi_thread")]
async fn nats_two_regions_cut_apart_have_no_meta_leader_but_keep_writing_their_own_streams() {
    let _serial = serial().await;
    let sc = NatsSuperCluster::start(&[("eu", 1), ("us", 1)], ServerOpts::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let leader = sc.wait_meta_leader(SLOW).unwrap();
    let mut js = Vec::new();
    let mut own = Vec::new();
    for region in ["eu", "us"] {
        let context = jetstream::with_domain(raw_client(sc.urls(region)).await, "gslb");
        let (store, _) = until_ok(SLOW, "a bucket created", || {
            context.create_key_value(placed(&format!("{region}_r1"), region, 1))
        })
        .await;
        store.put("k", "v0".into()).await.unwrap();
        js.push(context);
        own.push(store);
    }

    sc.cut("eu", LinkMode::Reset);
    let cut = Instant::now();
    for ((js, store), region) in js.iter().zip(&own).zip(["eu", "us"]) {
        until_ok(SOON, "a put to the region's own stream", || {
            store.put("k", "cut".into())
        })
        .await;
        let e = failure(js.create_key_value(placed(&format!("{region}_new"), region, 1))).await;
        assert!(
            e.is_some(),
            "{region} created a stream with the meta group split in two"
        );
    }
    // The old leader steps down once it has missed its quorum for a while (10–20 s measured).
    let (_, took) = wait_for(STEP_DOWN, "no meta leader on either side", || async {
        sc.meta_leader(None).is_none().then_some(())
    })
    .await
    .unwrap();
    report(
        &format!("nats two regions cut: meta leader {leader} stepped down after"),
        took,
    );
    // Neither side elects another (an election would take 4–9 s).
    for ((js, store), region) in js.iter().zip(&own).zip(["eu", "us"]) {
        until_ok(SOON, "a put to the region's own stream", || {
            store.put("k", "still cut".into())
        })
        .await;
        let e = failure(js.create_key_value(placed(&format!("{region}_new"), region, 1))).await;
        assert!(e.is_some(), "{region} created a stream with no meta leader");
    }
    assert_eq!(
        sc.meta_leader(None),
        None,
        "a meta leader {:?} after the cut",
        cut.elapsed()
    );

    sc.heal();
    let healed = Instant::now();
    let leader = sc.wait_meta_leader(SLOW).unwrap();
    report(
        &format!("nats two regions healed: meta leader {leader} after"),
        healed.elapsed(),
    );
    until_ok(SLOW, "a stream created again", || {
        js[1].create_key_value(placed("us_new", "us", 1))
    })
    .await;
}
