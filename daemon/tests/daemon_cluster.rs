//! Three `gslb-state` daemons on a 3-server NATS JetStream cluster, each attached to a different
//! server: a health flip through the HTTP API of one is seen on the others, a DELETE withdraws
//! it, and the API (`/v1/decisions`, `/v1/members`, `/healthz`) and `/metrics` say what the
//! guide says they should.
//!
//! Run by `cargo test -p gslb-state-daemon --test daemon_cluster`, against the `gslb-state`
//! binary cargo builds for this crate (`daemon_common::bin`; `GSLB_STATE_BIN` picks another).

mod daemon_common;

use daemon_common::{Daemon, SOON, TestDir, Yaml};
use gslb_state_tests::{NatsCluster, ServerOpts, metric_value};
use serde_json::Value;

const EP: &str = "www.example.com";

/// The fields of a decision, checked together so a failure shows the whole thing.
fn fields(v: &Value) -> (Value, String, u64, u64, Value) {
    (
        v["healthy"].clone(),
        v["source"].as_str().unwrap_or("?").to_owned(),
        v["healthy_reports"].as_u64().unwrap_or(u64::MAX),
        v["total_reports"].as_u64().unwrap_or(u64::MAX),
        v["local"].clone(),
    )
}

fn expect(
    healthy: Option<bool>,
    source: &str,
    healthy_reports: u64,
    total: u64,
    local: Option<bool>,
) -> (Value, String, u64, u64, Value) {
    (
        healthy.map_or(Value::Null, Value::Bool),
        source.to_owned(),
        healthy_reports,
        total,
        local.map_or(Value::Null, Value::Bool),
    )
}

/// Waits until `d`'s decision for [`EP`] has exactly these fields.
fn wait_fields(d: &mut Daemon, want: (Value, String, u64, u64, Value)) {
    let what = format!("{want:?}");
    d.wait_decision(EP, &what, SOON, |v| fields(v) == want);
}

#[test]
fn an_http_flip_on_one_daemon_is_seen_on_the_others_and_delete_withdraws_it() {
    let nats = NatsCluster::start(3, ServerOpts::default()).expect("3-server NATS cluster");
    let dir = TestDir::new();
    let urls = nats.urls();
    // Each daemon knows only "its" server: the flip has to cross the cluster's routes.
    let yaml = |node: &str, i: usize| {
        let mut y = Yaml::node(node, &urls[i..=i]);
        y.config_sync = false;
        y
    };
    let mut a = Daemon::start(&dir, &yaml("a", 0));
    let mut b = Daemon::start(&dir, &yaml("b", 1));
    a.wait_ready();
    b.wait_ready();
    a.wait_members(2, SOON);
    b.wait_members(2, SOON);

    // /healthz: `loading` until the health snapshot is read (the cluster's JetStream may still
    // be electing its meta leader), then `ok`.
    a.wait(SOON, "a: /healthz ok", |d| {
        d.try_json("/healthz").is_some_and(|v| v["status"] == "ok")
    });
    let h = a.json("/healthz");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["snapshot_loaded"], true, "{h}");
    assert_eq!(h["node"], "a", "{h}");
    assert_eq!(h["nats_connected"], true, "{h}");

    // An external checker on a says the endpoint is up; c is not even running yet.
    a.put_health(EP, true);
    wait_fields(&mut a, expect(Some(true), "local", 1, 1, Some(true)));
    wait_fields(&mut b, expect(Some(true), "global", 1, 1, None));

    // c starts later, once a's report is in the KV: it learns it from the snapshot.
    a.wait_metric_at_least(
        "gslbd_state_kv_put_total{bucket=\"gslb_e2e_health\",result=\"ok\"}",
        1.0,
    );
    let mut c = Daemon::start(&dir, &yaml("c", 2));
    c.wait_ready();
    c.wait_log("health snapshot loaded", SOON);
    wait_fields(&mut c, expect(Some(true), "global", 1, 1, None));
    // The snapshot read a's report and a's and b's membership records.
    c.wait_metric_at_least(
        "gslbd_state_kv_get_total{bucket=\"gslb_e2e_health\",result=\"ok\"}",
        1.0,
    );
    c.wait_metric_at_least(
        "gslbd_state_kv_get_total{bucket=\"gslb_e2e_members\",result=\"ok\"}",
        2.0,
    );
    for d in [&mut a, &mut b, &mut c] {
        d.wait_members(3, SOON);
    }

    // The flip: down on a, seen down on b and c.
    a.put_health(EP, false);
    wait_fields(&mut a, expect(Some(false), "local", 0, 1, Some(false)));
    wait_fields(&mut b, expect(Some(false), "global", 0, 1, None));
    wait_fields(&mut c, expect(Some(false), "global", 0, 1, None));

    // b says up: c (no local view, prefer-local) takes the quorum of a and b: 1 of 2 is below
    // 51 %, so down; b decides from its own view.
    b.put_health(EP, true);
    wait_fields(&mut b, expect(Some(true), "local", 1, 2, Some(true)));
    wait_fields(&mut c, expect(Some(false), "global", 1, 2, None));
    wait_fields(&mut a, expect(Some(false), "local", 1, 2, Some(false)));

    // DELETE withdraws a's observation: a now follows the others (b's up), c counts b only.
    a.delete_health(EP);
    wait_fields(&mut a, expect(Some(true), "global", 1, 1, None));
    wait_fields(&mut c, expect(Some(true), "global", 1, 1, None));
    // ... and b's too: nobody reports the endpoint any more.
    b.delete_health(EP);
    for d in [&mut a, &mut b, &mut c] {
        wait_fields(d, expect(None, "unknown", 0, 0, None));
    }

    // One endpoint: GET /v1/decisions/{endpoint}; unknown ones are 404.
    let (status, body) = c.request("GET", &format!("/v1/decisions/{EP}"), "");
    assert_eq!(status, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(fields(&one), expect(None, "unknown", 0, 0, None), "{one}");
    let (status, body) = c.request("GET", "/v1/decisions/nope.example.com", "");
    assert_eq!(status, 404, "{body}");
    // A bad body or a bad endpoint name is a 400 that says why.
    let (status, body) = a.request("PUT", &format!("/v1/health/{EP}"), "{\"up\": true}");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("healthy"), "{body}");
    let long = "x".repeat(300);
    let (status, body) = a.request("PUT", &format!("/v1/health/{long}"), "{\"healthy\": true}");
    assert_eq!(status, 400, "{body}");

    // /v1/decisions names the node and the policy.
    let all = b.json("/v1/decisions");
    assert_eq!(all["node"], "b", "{all}");
    assert_eq!(all["policy"], "prefer-local", "{all}");

    // /v1/members: three active members, this node first and marked local.
    let m = c.json("/v1/members");
    assert_eq!(m["active_members"], 3, "{m}");
    let members = m["members"].as_array().expect("members is a list");
    let ids: Vec<&str> = members
        .iter()
        .map(|x| x["node"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c", "a", "b"], "{m}");
    assert_eq!(members[0]["local"], true, "{m}");
    assert_eq!(members[0]["last_heard_ms_ago"], Value::Null, "{m}");
    for x in &members[1..] {
        assert_eq!(x["local"], false, "{m}");
        assert_eq!(x["active"], true, "{m}");
        let node = x["node"].as_str().unwrap();
        assert_eq!(x["region"], format!("r-{node}"), "{m}");
        assert!(x["incarnation"].as_u64().unwrap() > 0, "{m}");
        // Heard within the TTL (1 s).
        assert!(x["last_heard_ms_ago"].as_u64().unwrap() <= 1000, "{m}");
        // a and b each reported the endpoint (a withdrawn report is still held).
        assert_eq!(x["reports"], 1, "{m}");
    }

    // /metrics, with the guide's names. Counters are awaited: this test can be quicker
    // than a few heartbeats.
    for (series, n) in [
        ("gslbd_state_nats_published_total{type=\"heartbeat\"}", 2.0),
        ("gslbd_state_nats_received_total{type=\"heartbeat\"}", 4.0),
        ("gslbd_state_nats_received_total{type=\"health\"}", 4.0),
        (
            "gslbd_state_kv_put_total{bucket=\"gslb_e2e_members\",result=\"ok\"}",
            2.0,
        ),
    ] {
        c.wait_metric_at_least(series, n);
    }
    // a's three changes are three publishes, and at least two writes: the first, and the
    // last (a change superseded within `kv_write_delay` is written once, as the later one).
    for (series, n) in [
        ("gslbd_state_nats_published_total{type=\"health\"}", 3.0),
        (
            "gslbd_state_kv_put_total{bucket=\"gslb_e2e_health\",result=\"ok\"}",
            2.0,
        ),
    ] {
        a.wait_metric_at_least(series, n);
    }
    let text = c.metrics();
    assert_eq!(
        metric_value(&text, "gslbd_state_nats_connected"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "gslbd_state_active_members"),
        Some(3.0),
        "{text}"
    );
    for name in [
        "# TYPE gslbd_state_nats_connected gauge",
        "# TYPE gslbd_state_active_members gauge",
        "# TYPE gslbd_state_nats_published counter",
        "# TYPE gslbd_state_nats_received counter",
        "# TYPE gslbd_state_kv_put counter",
        "# TYPE gslbd_state_kv_get counter",
    ] {
        assert!(text.contains(name), "no {name:?} in:\n{text}");
    }
}
