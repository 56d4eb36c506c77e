//! Restarts and leaving, with real `gslb-state` daemons on a real nats-server:
//!
//! * a node that starts after another died counts the dead one no longer than TTL after its
//!   last heartbeat was sent (its monotonic clock starts at 0; the snapshot's sender
//!   timestamps, not the reader's start, bound the dead member's life);
//! * a node restarted with its wall clock an hour behind (libfaketime) is counted again by
//!   every peer at once: it reads its own record, takes a larger incarnation than its earlier
//!   life, and its reports count again;
//! * SIGTERM is a graceful leave: peers drop the node at once, its record says it left, and a
//!   node that starts later does not count it.
//!
//! Run by `cargo test -p gslb-state-daemon --test daemon_restart`, against the `gslb-state`
//! binary cargo builds for this crate (`daemon_common::bin`; `GSLB_STATE_BIN` picks another).

mod daemon_common;

use std::time::{Duration, Instant};

use daemon_common::{Daemon, SOON, TestDir, Yaml, faketime_env, start_all};
use gslb_state_tests::{NatsServer, ServerOpts};

const EP: &str = "www.example.com";

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_node_started_after_a_death_drops_the_dead_member_ttl_after_its_last_heartbeat() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let ttl = Duration::from_secs(10);
    let yaml = |node: &str| Yaml::node(node, &servers).timing("1s", "10s");
    let mut ds = start_all(&dir, &[yaml("a"), yaml("b"), yaml("c")]);
    let mut c = ds.pop().expect("c");
    // c's last heartbeat left at most one interval before the kill.
    c.kill();
    let killed = Instant::now();
    // The scenario of the report: a fourth node starts 6 s after the kill.
    std::thread::sleep(Duration::from_secs(6));
    let mut d = Daemon::start(&dir, &yaml("d"));
    d.wait_ready();
    // d reads c's record in the snapshot (6 s old, younger than the TTL): c counts for now.
    let seen_c = d.wait(SOON, "d counts a, b and c from the snapshot", |d| {
        d.active_ids()
            .is_some_and(|ids| ids.iter().any(|i| i == "c") && ids.len() == 4)
    });
    assert!(
        killed.elapsed() < ttl,
        "d counted c only {:?} after the kill (setup too slow: {seen_c:?})",
        killed.elapsed()
    );
    // ... but no longer than TTL after c's last heartbeat was sent, although d started only
    // 6 s ago (before the fix: until TTL after *d* started, 16 s after the kill).
    let deadline = ttl + Duration::from_millis(2_500);
    d.wait(
        deadline.saturating_sub(killed.elapsed()),
        "d drops c",
        |d| d.active_ids() == Some(ids(&["a", "b", "d"])),
    );
    let dropped_after = killed.elapsed();
    assert!(
        dropped_after <= deadline,
        "d dropped c {dropped_after:?} after the kill"
    );
    assert!(
        dropped_after >= ttl - Duration::from_secs(1) - Duration::from_millis(200),
        "d dropped c {dropped_after:?} after the kill: before its TTL could run out"
    );
    // The others heard c live: each drops it TTL after its last heartbeat *arrived*, on its
    // own timer, within the same bound.
    for x in ds.iter_mut() {
        x.wait(
            deadline.saturating_sub(killed.elapsed()) + Duration::from_millis(500),
            "drops c",
            |x| x.active_ids() == Some(ids(&["a", "b", "d"])),
        );
    }
}

#[test]
fn a_node_restarted_with_its_clock_an_hour_behind_is_counted_again_at_once() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let ttl = Duration::from_secs(5);
    let yaml = |node: &str| {
        Yaml::node(node, &servers)
            .timing("1s", "5s")
            .policy("global-quorum")
    };
    let mut ds = start_all(&dir, &[yaml("a"), yaml("b"), yaml("c")]);
    let before = ds[2].member("c").expect("c lists itself")["incarnation"]
        .as_u64()
        .expect("incarnation");
    ds[2].put_health(EP, false);
    for x in ds.iter_mut().take(2) {
        x.put_health(EP, true);
    }
    ds[0].wait_decision(EP, "2 of 3 healthy", SOON, |v| {
        v["healthy_reports"] == 2 && v["total_reports"] == 3
    });

    // c dies and comes back at once with its wall clock an hour behind: a wall-clock
    // incarnation lower than its previous one.
    let mut c = ds.pop().expect("c");
    c.kill();
    let config = c.config.clone();
    drop(c);
    let env = faketime_env("-1h");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let restarted = Instant::now();
    let mut c = Daemon::start_file(&dir, "c", &config, &[], &env);
    c.wait_ready();
    // The new life sees the endpoint up (the earlier one saw it down): only its own report
    // can make it 3 of 3.
    c.put_health(EP, true);
    // Every peer counts c again, with its new report, well within TTL + interval (+ slack for
    // process start-up): c took an incarnation above its earlier life's.
    for x in ds.iter_mut() {
        x.wait_decision(EP, "c's new report counts", ttl + SOON, |v| {
            v["healthy_reports"] == 3 && v["total_reports"] == 3
        });
    }
    let counted_after = restarted.elapsed();
    assert!(
        counted_after < ttl + Duration::from_secs(1) + Duration::from_secs(3),
        "counted again {counted_after:?} after the restart"
    );
    let after = c.member("c").expect("c lists itself")["incarnation"]
        .as_u64()
        .expect("incarnation");
    // Its wall clock (an hour behind) would have given a lower one; it took the one above
    // its earlier life's, read from its own membership record.
    assert_eq!(
        after,
        before + 1,
        "incarnation went from {before} to {after}"
    );
    assert!(
        c.logged("taking a larger incarnation"),
        "c did not say why its incarnation moved"
    );
    for x in ds.iter_mut() {
        let m = x.member("c").expect("c is a member");
        assert_eq!(m["active"], true, "{}: {m}", x.name);
        assert_eq!(m["incarnation"].as_u64(), Some(after), "{}: {m}", x.name);
    }
}

#[test]
fn sigterm_is_a_graceful_leave_that_peers_see_at_once() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    // A long TTL: expiry could not explain a quick drop.
    let yaml = |node: &str| Yaml::node(node, &servers).timing("1s", "30s");
    let mut ds = start_all(&dir, &[yaml("a"), yaml("b"), yaml("c")]);
    let mut c = ds.pop().expect("c");
    c.put_health(EP, true);
    for x in ds.iter_mut() {
        x.wait_decision(EP, "c's report", SOON, |v| v["total_reports"] == 1);
    }
    let sent = Instant::now();
    c.sigterm();
    for x in ds.iter_mut() {
        x.wait_members(2, SOON);
    }
    let gone_after = sent.elapsed();
    assert!(
        gone_after < Duration::from_secs(3),
        "peers dropped c {gone_after:?} after SIGTERM"
    );
    let (status, _) = c.wait_exit(SOON);
    assert_eq!(status.code(), Some(0), "exit status {status}");
    for x in ds.iter_mut() {
        x.wait_decision(EP, "no counted report", SOON, |v| v["total_reports"] == 0);
        let down = x.log_lines("member down");
        assert!(
            down.iter()
                .any(|l| l.contains("member=c") && l.contains("left")),
            "{}: {down:?}",
            x.name
        );
        let m = x.member("c").expect("c is remembered");
        assert_eq!(
            (m["active"].clone(), m["left"].clone()),
            (false.into(), true.into())
        );
    }
    // Its record says it left: a node that starts now does not count it, although the record
    // is seconds old and the TTL 30 s.
    let mut d = Daemon::start(&dir, &yaml("d"));
    d.wait_ready();
    d.wait_members(3, SOON);
    d.wait_log("health snapshot loaded", SOON);
    assert_eq!(d.active_ids(), Some(ids(&["a", "b", "d"])));
    let m = d.member("c").expect("d knows c from its record");
    assert_eq!(m["left"], true, "{m}");
}
