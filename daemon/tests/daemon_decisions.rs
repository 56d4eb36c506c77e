//! Decisions beyond the guide, through the real binary's HTTP API: region-scoped quorum
//! (`state.quorumScope: regions`, `healthy_regions`/`total_regions`), hysteresis
//! (`state.holdDown`: the verdict held while a change is `pending`, then the change), the
//! explanation of `GET /v1/decisions/{endpoint}?explain=true` (every member's part, the region
//! votes, the rule in words), and config sync changing the scope and the holds at run time.
//!
//! Run by `cargo test -p gslb-state-daemon --test daemon_decisions`, against the `gslb-state`
//! binary cargo builds for this crate (`daemon_common::bin`; `GSLB_STATE_BIN` picks another).
//! Every wait polls with a deadline; nothing sleeps to synchronise.

mod daemon_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use daemon_common::{CLUSTER, Daemon, SOON, TestDir, Yaml, run_cli_ok};
use gslb_state_tests::{NatsServer, ServerOpts};
use serde_json::{Value, json};

/// Heartbeat interval and TTL of every test: a TTL of 12 intervals rides out a busy machine.
const INTERVAL: &str = "250ms";
const TTL: &str = "3s";
const TTL_MS: u64 = 3_000;

/// `yaml`'s file with `node.region: region` (instead of the common `r-<node>`) and `extra`
/// lines (indented by two) added to its `state` section.
fn render(yaml: &Yaml, region: Option<&str>, extra: &str) -> String {
    let mut text = yaml.render();
    if let (Some(node), Some(region)) = (&yaml.node, region) {
        let from = format!("  region: \"r-{node}\"\n");
        assert!(text.contains(&from), "no {from:?} in:\n{text}");
        text = text.replacen(&from, &format!("  region: \"{region}\"\n"), 1);
    }
    let anchor = format!("  enableConfigSync: {}\n", yaml.config_sync);
    assert!(text.contains(&anchor), "no {anchor:?} in:\n{text}");
    text.replacen(&anchor, &format!("{anchor}{extra}"), 1)
}

/// The `state` lines of a scope and a hold down.
fn state_extra(scope: &str, hold_down: &str) -> String {
    format!("  quorumScope: \"{scope}\"\n  holdDown: \"{hold_down}\"\n")
}

/// Starts one daemon per `(node, region)` with `base`'s settings and `extra` state lines, and
/// waits until each serves its API, is connected, and sees all of them active.
fn start(dir: &TestDir, base: &Yaml, nodes: &[(&str, &str)], extra: &str) -> Vec<Daemon> {
    let mut ds: Vec<Daemon> = nodes
        .iter()
        .map(|(node, region)| {
            let yaml = Yaml {
                node: Some((*node).to_owned()),
                ..base.clone()
            };
            let path = dir.file(&format!("{node}.yaml"));
            std::fs::write(&path, render(&yaml, Some(region), extra)).unwrap();
            Daemon::start_file(dir, node, &path, &[], &[])
        })
        .collect();
    for d in &mut ds {
        d.wait_ready();
    }
    for d in &mut ds {
        d.wait_members(nodes.len() as u64, SOON);
    }
    ds
}

/// `GET /v1/decisions/{endpoint}` (with `?explain=true` when `explain`), `None` on failure.
fn one(d: &Daemon, endpoint: &str, explain: bool) -> Option<Value> {
    let query = if explain { "?explain=true" } else { "" };
    d.try_json(&format!("/v1/decisions/{endpoint}{query}"))
}

/// Waits until `GET /v1/decisions/{endpoint}` (explained when `explain`) satisfies `cond`.
fn wait_one(
    d: &mut Daemon,
    endpoint: &str,
    explain: bool,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let mut found = None;
    let label = format!("{}: {endpoint}: {what}", d.name);
    d.wait(SOON, &label, |d| {
        found = one(d, endpoint, explain).filter(|v| cond(v));
        found.is_some()
    });
    found.expect("waited for")
}

/// A decision's verdict and counts: `(healthy, healthy_reports, total_reports,
/// healthy_regions, total_regions)`.
fn counts(v: &Value) -> (Value, Value, Value, Value, Value) {
    (
        v["healthy"].clone(),
        v["healthy_reports"].clone(),
        v["total_reports"].clone(),
        v["healthy_regions"].clone(),
        v["total_regions"].clone(),
    )
}

/// Waits until every daemon decides `endpoint` as `want` ([`counts`]) with nothing pending.
fn wait_all(ds: &mut [Daemon], endpoint: &str, want: (bool, u64, u64, u64, u64)) {
    let (healthy, hr, tr, hg, tg) = want;
    let want = (json!(healthy), json!(hr), json!(tr), json!(hg), json!(tg));
    for d in ds.iter_mut() {
        let what = format!("(healthy, reports, regions) = {want:?}, nothing pending");
        wait_one(d, endpoint, false, &what, |v| {
            counts(v) == want && v["pending"].is_null()
        });
    }
}

/// The explanation's members by node id.
fn members(x: &Value) -> BTreeMap<String, Value> {
    x["explanation"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {x}"))
        .iter()
        .map(|m| (m["node"].as_str().unwrap().to_owned(), m.clone()))
        .collect()
}

/// The order of the explanation's members.
fn member_order(x: &Value) -> Vec<String> {
    x["explanation"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts one member's part: what it said, whether counted, its part and why.
fn assert_part(x: &Value, node: &str, said: &str, part: &str, why: &str) {
    let m = &members(x)[node];
    assert_eq!(m["said"], said, "{node}'s report in {x}");
    assert_eq!(m["part"], part, "{node}'s part in {x}");
    assert_eq!(m["why"], why, "{node}'s why in {x}");
    let counted = !why.starts_with("not counted");
    assert_eq!(m["counted"], counted, "{node} counted in {x}");
}

/// `gslb-state config push` of `text`; returns the version pushed.
fn push(dir: &TestDir, node_config: &std::path::Path, name: &str, text: &str) -> u64 {
    let path = dir.file(name);
    std::fs::write(&path, text).unwrap();
    let out = run_cli_ok(&[
        "config",
        "push",
        "--config",
        node_config.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let prefix = format!("pushed cluster={CLUSTER} version=");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in {out:?}"))
}

/// Waits until every daemon committed config `version`.
fn wait_committed(ds: &mut [Daemon], version: u64) {
    for d in ds.iter_mut() {
        d.wait_log(
            &format!("config applied cluster={CLUSTER} version={version}"),
            SOON,
        );
    }
}

/// Region-scoped quorum on 3 daemons in 2 regions: the verdict weighs regions, not members;
/// the decisions carry the region counts (one endpoint and the list alike); the explanation
/// names every member's part, the region votes and the rule in words, follows a member that
/// stops (inactive, not counted, its age past the TTL); unknown endpoints are 404 and a bad
/// `explain` is 400.
#[test]
fn region_scoped_quorum_weighs_regions_and_the_explanation_says_who_counts() {
    const EP: &str = "www.example.com";
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let base = Yaml::node("a", &[nats.url()])
        .policy("global-quorum")
        .quorum(51)
        .timing(INTERVAL, TTL);
    let nodes = [("a", "eu"), ("b", "eu"), ("c", "us")];
    let mut ds = start(&dir, &base, &nodes, "  quorumScope: \"regions\"\n");

    // Counted per member, 2 of 3 = 66% >= 51% would be healthy. By region: eu 2/2 votes
    // healthy, us 0/1 does not: 1 of 2 regions = 50% < 51%.
    ds[0].put_health(EP, true);
    ds[1].put_health(EP, true);
    ds[2].put_health(EP, false);
    wait_all(&mut ds, EP, (false, 2, 3, 1, 2));
    for d in ds.iter_mut() {
        let v = one(d, EP, false).expect("decided");
        assert_eq!(v["source"], "global", "{}: {v}", d.name);
        // The list carries the same fields.
        let listed = d.decision(EP).expect("listed");
        assert_eq!(counts(&listed), counts(&v), "{}: {listed}", d.name);
        assert!(listed["pending"].is_null(), "{}: {listed}", d.name);
    }

    let x = ds[0].json(&format!("/v1/decisions/{EP}?explain=true"));
    assert_eq!(
        counts(&x),
        (json!(false), json!(2), json!(3), json!(1), json!(2)),
        "the decision's fields come with the explanation: {x}"
    );
    assert_eq!(x["local"], true, "{x}");
    let e = &x["explanation"];
    assert_eq!(
        e["rule"],
        json!({"policy": "global-quorum", "quorum_min_percent": 51, "scope": "regions"})
    );
    assert_eq!(e["holds"], json!({"up_ms": 0, "down_ms": 0}));
    assert_eq!(e["rule_verdict"], false);
    assert!(e["pending"].is_null(), "{x}");
    assert_eq!(
        e["summary"],
        "global-quorum by region: 1 of 2 regions healthy = 50% < 51% (eu: 2/2, us: 0/1)"
    );
    assert_eq!(
        e["regions"],
        json!([
            {"region": "eu", "healthy": 2, "total": 2, "healthy_vote": true},
            {"region": "us", "healthy": 0, "total": 1, "healthy_vote": false},
        ])
    );
    assert_eq!(member_order(&x), ["a", "b", "c"], "this node first: {x}");
    let ms = members(&x);
    for (node, region, local) in [("a", "eu", true), ("b", "eu", false), ("c", "us", false)] {
        let m = &ms[node];
        assert_eq!(m["region"], region, "{m}");
        assert_eq!(m["local"], local, "{m}");
        assert_eq!(m["active"], true, "{m}");
        assert!(m["incarnation"].as_u64().is_some_and(|i| i > 0), "{m}");
        assert!(
            m["seq"].as_u64().is_some(),
            "a held report has a sequence: {m}"
        );
        if local {
            assert!(m["age_ms"].is_null(), "{m}");
        } else {
            let age = m["age_ms"].as_u64().expect("a heard member has an age");
            assert!(
                age < TTL_MS,
                "an active member was heard within the TTL: {m}"
            );
        }
    }
    assert_part(&x, "a", "healthy", "vote", "counted");
    assert_part(&x, "b", "healthy", "vote", "counted");
    assert_part(&x, "c", "unhealthy", "vote", "counted");

    // Unknown endpoints: 404 with a JSON error, explained or not; a bad `explain`: 400.
    for path in [
        "/v1/decisions/nowhere.example.com",
        "/v1/decisions/nowhere.example.com?explain=true",
    ] {
        let (status, body) = ds[0].request("GET", path, "");
        assert_eq!(status, 404, "GET {path}: {body}");
        let v: Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown endpoint") && e.contains("nowhere")),
            "GET {path}: {body}"
        );
    }
    let (status, body) = ds[0].request("GET", &format!("/v1/decisions/{EP}?explain=maybe"), "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("explain"), "{body}");
    // `explain=false` is the plain decision.
    let plain = ds[0].json(&format!("/v1/decisions/{EP}?explain=false"));
    assert!(plain.get("explanation").is_none(), "{plain}");

    // us recovers: both regions vote healthy.
    ds[2].put_health(EP, true);
    wait_all(&mut ds, EP, (true, 3, 3, 2, 2));
    let x = ds[2].json(&format!("/v1/decisions/{EP}?explain=true"));
    assert_eq!(member_order(&x), ["c", "a", "b"], "this node first: {x}");
    assert_eq!(
        x["explanation"]["summary"],
        "global-quorum by region: 2 of 2 regions healthy = 100% >= 51% (eu: 2/2, us: 1/1)"
    );

    // b freezes: after the TTL it is inactive on a and c, its report no longer counted; eu is
    // a's alone.
    ds[1].stop();
    let x = wait_one(&mut ds[0], EP, true, "b inactive", |x| {
        members(x)["b"]["active"] == false
    });
    assert_part(
        &x,
        "b",
        "healthy",
        "inactive",
        "not counted: inactive (no heartbeat within the TTL)",
    );
    let age = members(&x)["b"]["age_ms"].as_u64().expect("b was heard");
    assert!(age >= TTL_MS, "inactive after the TTL: {x}");
    assert_eq!(
        counts(&x),
        (json!(true), json!(2), json!(2), json!(2), json!(2)),
        "{x}"
    );
    assert_eq!(
        x["explanation"]["regions"][0],
        json!({"region": "eu", "healthy": 1, "total": 1, "healthy_vote": true}),
        "{x}"
    );
    ds[1].cont();
}

/// `state.holdDown`: a change to unhealthy is `pending` (the healthy verdict held, the rule's
/// verdict and the hold explained) on every daemon, and takes effect after the hold and not
/// before. Then config sync at run time: a longer hold is in force at once (a new pending
/// change waits about an hour); a push that removes the hold and switches to region scope
/// re-decides every endpoint at once — the pending change takes effect, and an endpoint the
/// member count called healthy becomes unhealthy by region.
#[test]
fn a_held_change_is_pending_then_takes_effect_and_pushed_holds_and_scope_apply_at_once() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let base = Yaml::node("a", &[nats.url()])
        .policy("global-quorum")
        .quorum(51)
        .timing(INTERVAL, TTL);
    let nodes = [("a", "eu"), ("b", "eu"), ("c", "us")];
    const HOLD_MS: u64 = 4_000;
    let mut ds = start(&dir, &base, &nodes, &state_extra("members", "4s"));
    let a_config = ds[0].config.clone();

    // e1: a and c say healthy (b has no report of it).
    let e1 = "e1.example.com";
    ds[0].put_health(e1, true);
    ds[2].put_health(e1, true);
    wait_all(&mut ds, e1, (true, 2, 2, 2, 2));
    // c says unhealthy: 1 of 2 = 50% < 51%, a change to unhealthy, held for holdDown.
    ds[2].put_health(e1, false);
    let mut seen = Vec::new();
    for d in ds.iter_mut() {
        // Explained, so that what is checked is one consistent answer while it is pending.
        let x = wait_one(d, e1, true, "a pending change", |x| !x["pending"].is_null());
        let at = Instant::now();
        assert_eq!(
            counts(&x),
            (json!(true), json!(1), json!(2), json!(1), json!(2)),
            "{}: the verdict held, the counts current: {x}",
            d.name
        );
        assert_eq!(x["source"], "global", "{}: {x}", d.name);
        let in_ms = x["pending"]["in_ms"].as_u64().expect("in_ms");
        assert_eq!(x["pending"]["healthy"], false, "{}: {x}", d.name);
        assert!(in_ms > 0 && in_ms <= HOLD_MS, "{}: {x}", d.name);
        let e = &x["explanation"];
        assert_eq!(e["rule_verdict"], false, "{}: {x}", d.name);
        assert_eq!(e["holds"], json!({"up_ms": 0, "down_ms": HOLD_MS}));
        assert_eq!(
            e["pending"],
            json!({"healthy": false, "in_ms": in_ms, "hold": "holdDown", "hold_ms": HOLD_MS}),
            "{}",
            d.name
        );
        assert_eq!(e["summary"], "global-quorum: 1 of 2 healthy = 50% < 51%");
        assert_eq!(
            e["rule"],
            json!({"policy": "global-quorum", "quorum_min_percent": 51, "scope": "members"})
        );
        assert_eq!(
            e["regions"],
            json!([
                {"region": "eu", "healthy": 1, "total": 1, "healthy_vote": true},
                {"region": "us", "healthy": 0, "total": 1, "healthy_vote": false},
            ])
        );
        assert_part(&x, "a", "healthy", "vote", "counted");
        assert_part(&x, "c", "unhealthy", "vote", "counted");
        assert_part(&x, "b", "none", "no-report", "not counted: no report");
        assert!(members(&x)["b"]["seq"].is_null(), "{x}");
        // The cached decision (the plain form) shows the same pending change.
        let plain = one(d, e1, false).expect("decided");
        if plain["healthy"] == true {
            assert_eq!(plain["pending"]["healthy"], false, "{}: {plain}", d.name);
            assert!(
                plain["pending"]["in_ms"]
                    .as_u64()
                    .is_some_and(|ms| ms <= in_ms)
            );
        }
        seen.push((at, in_ms));
    }
    // After the hold, and not before: the change was due `in_ms` after the answer was made,
    // which was before it was received.
    for (d, (at, in_ms)) in ds.iter_mut().zip(seen) {
        wait_all(std::slice::from_mut(d), e1, (false, 1, 2, 1, 2));
        let after = at.elapsed();
        assert!(
            after + Duration::from_millis(300) >= Duration::from_millis(in_ms),
            "{}: unhealthy {after:?} after the pending change was seen due in {in_ms} ms",
            d.name
        );
    }

    // Config sync: a hold of an hour is in force at once.
    let desired = Yaml::node("a", &[nats.url()])
        .policy("global-quorum")
        .quorum(51)
        .timing(INTERVAL, TTL)
        .desired();
    let v1 = push(
        &dir,
        &a_config,
        "hour.yaml",
        &render(&desired, None, &state_extra("members", "1h")),
    );
    wait_committed(&mut ds, v1);
    for d in ds.iter_mut() {
        let x = one(d, e1, true).expect("explained");
        assert_eq!(
            x["explanation"]["holds"],
            json!({"up_ms": 0, "down_ms": 3_600_000}),
            "{}",
            d.name
        );
    }
    // e2 as e1 was: a and c say healthy, then c unhealthy, held for an hour.
    let e2 = "e2.example.com";
    ds[0].put_health(e2, true);
    ds[2].put_health(e2, true);
    wait_all(&mut ds, e2, (true, 2, 2, 2, 2));
    // e3: everyone reports, c unhealthy: 2 of 3 members (healthy), 1 of 2 regions.
    let e3 = "e3.example.com";
    ds[0].put_health(e3, true);
    ds[1].put_health(e3, true);
    ds[2].put_health(e3, false);
    wait_all(&mut ds, e3, (true, 2, 3, 1, 2));
    ds[2].put_health(e2, false);
    for d in ds.iter_mut() {
        let v = wait_one(d, e2, false, "pending for about an hour", |v| {
            v["pending"]["healthy"] == false
        });
        assert_eq!(v["healthy"], true, "{}: held: {v}", d.name);
        let in_ms = v["pending"]["in_ms"].as_u64().expect("in_ms");
        assert!(
            in_ms > 3_600_000 - 60_000 && in_ms <= 3_600_000,
            "{}: {v}",
            d.name
        );
    }

    // No hold, region scope: every endpoint re-decided at once (well within the hour).
    let pushed = Instant::now();
    let v2 = push(
        &dir,
        &a_config,
        "regions.yaml",
        &render(&desired, None, &state_extra("regions", "0s")),
    );
    wait_committed(&mut ds, v2);
    // e2's pending change takes effect; e3: eu 2/2 votes healthy, us 0/1 not: 50% < 51%.
    wait_all(&mut ds, e2, (false, 1, 2, 1, 2));
    wait_all(&mut ds, e3, (false, 2, 3, 1, 2));
    wait_all(&mut ds, e1, (false, 1, 2, 1, 2));
    assert!(pushed.elapsed() < Duration::from_secs(60));
    for d in ds.iter_mut() {
        let x = one(d, e3, true).expect("explained");
        let e = &x["explanation"];
        assert_eq!(e["rule"]["scope"], "regions", "{}: {x}", d.name);
        assert_eq!(e["holds"], json!({"up_ms": 0, "down_ms": 0}), "{}", d.name);
        assert_eq!(
            e["summary"],
            "global-quorum by region: 1 of 2 regions healthy = 50% < 51% (eu: 2/2, us: 0/1)",
            "{}",
            d.name
        );
        assert!(e["pending"].is_null() && x["pending"].is_null(), "{x}");
    }
}
