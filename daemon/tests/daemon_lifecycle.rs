//! The daemon's life: SIGTERM is a graceful leave and drains cleanly (exit 0, `gslb-state
//! stopped`, within seconds), and the others drop the node at once; `--log-format json` writes
//! one JSON object per line; a restarted daemon resumes from the KV snapshot at once.
//!
//! Run by `cargo test -p gslb-state-daemon --test daemon_lifecycle`, against the `gslb-state`
//! binary cargo builds for this crate (`daemon_common::bin`; `GSLB_STATE_BIN` picks another).

mod daemon_common;

use std::time::{Duration, Instant};

use daemon_common::{Daemon, SOON, TestDir, Yaml, start_all};
use gslb_state_tests::{NatsServer, ServerOpts, metric_value};
use serde_json::Value;

const EP: &str = "www.example.com";

#[test]
fn sigterm_drains_cleanly_and_the_others_drop_the_node_at_once() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let interval = Duration::from_millis(250);
    let ttl = Duration::from_millis(1500);
    let yaml = |node: &str| Yaml::node(node, &servers).timing("250ms", "1500ms");
    let mut ds = start_all(&dir, &[yaml("a"), yaml("b")]);
    // c logs JSON.
    let mut c = Daemon::start_with(&dir, &yaml("c"), &["--log-format", "json"]);
    c.wait_ready();
    for d in ds.iter_mut().chain([&mut c]) {
        d.wait_members(3, SOON);
    }
    c.put_health(EP, true);
    for d in ds.iter_mut() {
        d.wait_decision(EP, "c's report: up", SOON, |v| {
            v["healthy"] == true && v["total_reports"] == 1
        });
    }

    let sent = Instant::now();
    c.sigterm();
    let (status, took) = c.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(took < Duration::from_secs(4), "drained in {took:?}");

    // The others drop c at once: it announced that it leaves (well before its TTL).
    for d in ds.iter_mut() {
        d.wait_members(2, SOON);
    }
    let gone_after = sent.elapsed();
    assert!(
        gone_after < ttl - interval,
        "c left the others' view after {gone_after:?}, no sooner than its TTL ({ttl:?}) would have"
    );
    for d in ds.iter_mut() {
        // Its report no longer counts.
        d.wait_decision(EP, "no counted report", SOON, |v| {
            v["total_reports"] == 0 && v["healthy"].is_null()
        });
        let down = d.log_lines("member down");
        assert!(
            down.iter()
                .any(|l| l.contains("member=c") && l.contains("left")),
            "{}: {down:?}",
            d.name
        );
    }

    // The JSON log: every line is one JSON object, with the drain in order at the end.
    let text = c.log_text();
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n--- log ---\n{text}"));
        assert!(v.is_object(), "{line}");
        for field in ["timestamp", "level", "message"] {
            assert!(v.get(field).is_some(), "no {field:?} in {line}");
        }
        messages.push(v["message"].as_str().unwrap_or_default().to_owned());
    }
    let at = |m: &str| {
        messages
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("no {m:?} message in the JSON log:\n{text}"))
    };
    assert!(at("gslb-state running") < at("SIGTERM: draining"), "{text}");
    assert!(
        at("SIGTERM: draining") < at("gslb-state driver stopped"),
        "{text}"
    );
    assert_eq!(
        messages.last().map(String::as_str),
        Some("gslb-state stopped"),
        "{text}"
    );
    // Structured fields stay fields, not text.
    let running: Value = serde_json::from_str(
        text.lines()
            .find(|l| l.contains("\"gslb-state running\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(running["node"], "c", "{running}");
    assert_eq!(running["cluster"], "e2e", "{running}");

    // a and b, still running, drain the same way.
    for d in ds.iter_mut() {
        d.sigterm();
        let (status, took) = d.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{}: {status}", d.name);
        assert!(took < Duration::from_secs(4), "{}: {took:?}", d.name);
        assert!(
            d.log_text().trim_end().ends_with("gslb-state stopped"),
            "{}",
            d.log_tail(5)
        );
    }
}

/// With a heartbeat interval of 5 minutes, the others publish exactly one heartbeat each (when
/// they connect) during this whole test, so whatever the restarted daemon knows about them
/// within seconds of starting can only come from the KV snapshot. Its metrics prove it: it has
/// received no heartbeat and no health message when it already decides with their reports.
#[test]
fn a_restarted_daemon_resumes_from_the_kv_snapshot() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let yaml = |node: &str| {
        let mut y = Yaml::node(node, &servers).timing("5m", "15m");
        y.config_sync = false;
        y
    };
    // Start one by one, each once the previous one's membership record is in the KV (with
    // heartbeats this rare, the snapshot is how a newcomer learns about the others).
    let mut nodes: Vec<Daemon> = Vec::new();
    for (i, node) in ["a", "b", "c"].into_iter().enumerate() {
        let mut d = Daemon::start(&dir, &yaml(node));
        d.wait_ready();
        d.wait_log("health snapshot loaded", SOON);
        d.wait(SOON, "its membership record written", |d| {
            kv_puts(d, "gslb_e2e_members") >= 1.0
        });
        d.wait_members(i as u64 + 1, SOON);
        nodes.push(d);
    }
    for d in &mut nodes {
        d.wait_members(3, SOON);
    }
    let mut c = nodes.pop().unwrap();
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();

    c.sigterm();
    let (status, _) = c.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
    drop(c);

    // While c is down: a says up, b says down.
    a.put_health(EP, true);
    b.put_health(EP, false);
    for d in [&mut a, &mut b] {
        d.wait_decision(EP, "both reports", SOON, |v| v["total_reports"] == 2);
        d.wait(SOON, "its report written to the KV", |d| {
            kv_puts(d, "gslb_e2e_health") >= 1.0
        });
    }

    // c again, with no observation of its own for the endpoint.
    let started = Instant::now();
    let mut c = Daemon::start(&dir, &yaml("c"));
    c.wait_ready();
    let v = c.wait_decision(EP, "a's and b's reports", SOON, |v| v["total_reports"] == 2);
    let knew_after = started.elapsed();
    // prefer-local without a local view: the quorum of the others, 1 of 2 < 51 %.
    assert_eq!(v["healthy"], false, "{v}");
    assert_eq!(v["source"], "global", "{v}");
    assert_eq!(v["healthy_reports"], 1, "{v}");
    assert_eq!(v["local"], Value::Null, "{v}");
    assert!(
        knew_after < Duration::from_secs(10),
        "took {knew_after:?} (the next heartbeat is 5 minutes away)"
    );
    // No live message contributed: everything came from the KV.
    let text = c.metrics();
    for kind in ["heartbeat", "health"] {
        let series = format!("gslbd_state_nats_received_total{{type=\"{kind}\"}}");
        let n = metric_value(&text, &series).unwrap_or(0.0);
        assert_eq!(n, 0.0, "{series} = {n}: c heard a live message\n{text}");
    }
    assert!(
        metric_value(
            &text,
            "gslbd_state_kv_get_total{bucket=\"gslb_e2e_health\",result=\"ok\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    let m = c.json("/v1/members");
    assert_eq!(m["active_members"], 3, "{m}");
    let loaded = c.log_lines("health snapshot loaded");
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert!(
        loaded[0].contains("members=3") && loaded[0].contains("endpoints=1"),
        "{loaded:?}"
    );

    // a and b had dropped c when it left; its new incarnation is up again (from its connect
    // heartbeat).
    let incarnation = m["members"][0]["incarnation"]
        .as_u64()
        .expect("incarnation");
    for d in [&mut a, &mut b] {
        assert!(
            d.log_lines("member down")
                .iter()
                .any(|l| l.contains("member=c") && l.contains("left")),
            "{}",
            d.name
        );
        d.wait_members(3, SOON);
        let seen = d.member("c").expect("c is a member");
        assert_eq!(seen["incarnation"].as_u64(), Some(incarnation), "{seen}");
        assert_eq!(seen["left"], false, "{seen}");
    }
}

/// `gslbd_state_kv_put_total{bucket,result="ok"}` of `d` (0 when absent or unreachable).
fn kv_puts(d: &Daemon, bucket: &str) -> f64 {
    d.try_metric(&format!(
        "gslbd_state_kv_put_total{{bucket=\"{bucket}\",result=\"ok\"}}"
    ))
    .unwrap_or(0.0)
}

/// NATS gone for good: SIGTERM still ends the daemon promptly and cleanly (the drain of
/// pending writes and of the connection is bounded).
#[test]
fn sigterm_while_nats_is_down_still_exits_cleanly_and_promptly() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let mut a = Daemon::start(&dir, &Yaml::node("a", &servers));
    a.wait_ready();
    a.wait_log("health snapshot loaded", SOON);
    nats.kill().unwrap();
    a.wait(SOON, "disconnected", |d| {
        d.try_json("/healthz")
            .is_some_and(|v| v["nats_connected"] == false)
    });
    // A change that cannot be published nor written while NATS is down.
    a.put_health(EP, true);
    a.wait_decision(EP, "decided locally", SOON, |v| v["healthy"] == true);
    a.sigterm();
    let (status, took) = a.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(a.log_text().trim_end().ends_with("gslb-state stopped"));
    // Bounded by design: 3 s for pending KV writes, then the flush and the drain of the
    // connection (3 s each at most). Measured: 3.0 s.
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
}
