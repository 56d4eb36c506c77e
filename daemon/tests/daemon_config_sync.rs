//! Config sync with the real binary: `gslb-state config push` (and a non-Rust client writing the
//! KV key directly) distributes a desired config; the daemons log `config snapshot loaded` at
//! start and `config event: cluster=<id> version=<n>` per version, apply `state.*` and
//! `endpoints` at run time, report settings that need a restart, reject invalid versions with a
//! clear error while the last good config stays in force, and apply each version once.
//!
//! Run by `cargo test -p gslb-state-daemon --test daemon_config_sync`, against the `gslb-state`
//! binary cargo builds for this crate (`daemon_common::bin`; `GSLB_STATE_BIN` picks another).

mod daemon_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use daemon_common::{
    CLUSTER, CONFIG_BUCKET, CONFIG_PREFIX, Daemon, SOON, TestDir, Yaml, data, python3, run_cli,
    run_cli_ok, start_all,
};
use gslb_state_tests::{NatsServer, ServerOpts};

const EP: &str = "www.example.com";

/// `gslb-state config push --config <node config> <desired>`; returns the version pushed.
fn push(dir: &TestDir, node_config: &std::path::Path, name: &str, desired: &str) -> u64 {
    let path = write(dir, name, desired);
    let out = run_cli_ok(&[
        "config",
        "push",
        "--config",
        node_config.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    pushed_version(&out)
}

/// `config push --no-validate`; returns the version pushed.
fn push_unchecked(dir: &TestDir, node_config: &std::path::Path, name: &str, text: &str) -> u64 {
    let path = write(dir, name, text);
    let out = run_cli_ok(&[
        "config",
        "push",
        "--no-validate",
        "--config",
        node_config.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    pushed_version(&out)
}

fn write(dir: &TestDir, name: &str, text: &str) -> PathBuf {
    let path = dir.file(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The `N` of `pushed cluster=e2e version=N`.
fn pushed_version(stdout: &str) -> u64 {
    let prefix = format!("pushed cluster={CLUSTER} version=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in {stdout:?}"))
}

/// The log line every daemon writes for a new version.
fn event_line(version: u64) -> String {
    format!("config event: cluster={CLUSTER} version={version}")
}

/// Waits until every daemon logged version `version` and runs `policy`.
fn wait_applied(ds: &mut [Daemon], version: u64, policy: &str) {
    for d in ds.iter_mut() {
        d.wait_log(&event_line(version), SOON);
        d.wait(SOON, &format!("config {version} applied"), |d| {
            d.logged(&format!(
                "config applied cluster={CLUSTER} version={version}"
            ))
        });
        let p = d.policy();
        assert_eq!(p, policy, "{}: policy after version {version}", d.name);
        let v = d.try_metric("gslbd_state_config_version");
        assert_eq!(
            v,
            Some(version as f64),
            "{}: gslbd_state_config_version",
            d.name
        );
    }
}

fn config_events(d: &Daemon, result: &str) -> f64 {
    d.try_metric(&format!(
        "gslbd_state_config_events_total{{result=\"{result}\"}}"
    ))
    .unwrap_or(0.0)
}

/// Waits until `d` decides [`EP`] `healthy` from `source` with these counts.
fn wait_ep(d: &mut Daemon, healthy: bool, source: &str, healthy_reports: u64, total: u64) {
    let what = format!("{healthy} from {source}, {healthy_reports}/{total}");
    d.wait_decision(EP, &what, SOON, |v| {
        v["healthy"] == healthy
            && v["source"] == source
            && v["healthy_reports"] == healthy_reports
            && v["total_reports"] == total
    });
}

/// Every run-time setting a push may change, one push at a time, each observed through what
/// the daemons do; then settings that need a restart, which are reported and not applied.
#[test]
fn pushed_state_and_endpoints_apply_at_run_time_and_per_node_settings_need_a_restart() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let base = Yaml::node("a", &servers)
        .policy("global-quorum")
        .timing("500ms", "4s");
    let yamls: Vec<Yaml> = ["a", "b", "c"]
        .iter()
        .map(|n| Yaml {
            node: Some((*n).to_owned()),
            ..base.clone()
        })
        .collect();
    let mut ds = start_all(&dir, &yamls);
    let a_config = ds[0].config.clone();
    for d in ds.iter_mut() {
        // The guide's wording; with nothing pushed yet the snapshot is empty.
        d.wait_log("config snapshot loaded", SOON);
        // The guide's illegal stream name is mapped, with a warning that says so.
        d.wait_log("PLEIADES_cfg", SOON);
        assert_eq!(d.policy(), "global-quorum");
    }
    // a says up, b and c say down: 1 of 3 healthy.
    ds[0].put_health(EP, true);
    ds[1].put_health(EP, false);
    ds[2].put_health(EP, false);
    for d in ds.iter_mut() {
        wait_ep(d, false, "global", 1, 3);
    }

    // Policy: global-any-healthy makes it up everywhere.
    let desired = base.desired().policy("global-any-healthy");
    let v1 = push(&dir, &a_config, "v1.yaml", &desired.render());
    wait_applied(&mut ds, v1, "global-any-healthy");
    for d in ds.iter_mut() {
        wait_ep(d, true, "global", 1, 3);
    }

    // Threshold: 1 of 3 is 33 %: up at 30, down at 34.
    let desired = desired.policy("global-quorum").quorum(30);
    let v2 = push(&dir, &a_config, "v2.yaml", &desired.render());
    wait_applied(&mut ds, v2, "global-quorum");
    for d in ds.iter_mut() {
        wait_ep(d, true, "global", 1, 3);
    }
    let desired = desired.quorum(34);
    let v3 = push(&dir, &a_config, "v3.yaml", &desired.render());
    wait_applied(&mut ds, v3, "global-quorum");
    for d in ds.iter_mut() {
        wait_ep(d, false, "global", 1, 3);
    }

    // Interval and TTL: 500ms/4s becomes 100ms/700ms.
    let hb = "gslbd_state_nats_published_total{type=\"heartbeat\"}";
    let desired = desired.timing("100ms", "700ms");
    let v4 = push(&dir, &a_config, "v4.yaml", &desired.render());
    wait_applied(&mut ds, v4, "global-quorum");
    for d in ds.iter_mut() {
        d.wait_members(3, SOON);
    }
    // Ten heartbeats take 1 s now; they would take 5 s at the old interval.
    let before = ds[0].try_metric(hb).expect("heartbeats published");
    let took = ds[0].wait(Duration::from_secs(4), "ten more heartbeats", |d| {
        d.try_metric(hb).is_some_and(|n| n >= before + 10.0)
    });
    assert!(took < Duration::from_millis(3500), "{took:?}");
    // A silent member leaves after the new TTL (700 ms), not the old one (4 s).
    ds[1].stop();
    let stopped = Instant::now();
    for i in [0, 2] {
        ds[i].wait_members(2, SOON);
    }
    let gone = stopped.elapsed();
    assert!(gone < Duration::from_millis(2500), "b left after {gone:?}");
    ds[1].cont();
    for d in ds.iter_mut() {
        d.wait_members(3, SOON);
    }

    // Endpoints: a probed endpoint appears with each node's own observation, and goes away.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut with_probe = desired.clone();
    with_probe.endpoints = vec![format!(
        "  - name: \"probed.example.com\"\n    probe: {{ tcp: \"{addr}\", interval: \"100ms\", timeout: \"90ms\", rise: 1, fall: 1 }}"
    )];
    let v5 = push(&dir, &a_config, "v5.yaml", &with_probe.render());
    wait_applied(&mut ds, v5, "global-quorum");
    for d in ds.iter_mut() {
        d.wait_decision("probed.example.com", "probed up by every node", SOON, |v| {
            v["local"] == true && v["healthy"] == true && v["total_reports"] == 3
        });
    }
    let v6 = push(&dir, &a_config, "v6.yaml", &desired.render());
    wait_applied(&mut ds, v6, "global-quorum");
    for d in ds.iter_mut() {
        d.wait_log("probe removed; observation withdrawn", SOON);
        d.wait_decision("probed.example.com", "withdrawn everywhere", SOON, |v| {
            v["local"].is_null() && v["total_reports"] == 0
        });
    }
    drop(listener);

    // Settings read from the local file at start: other NATS servers and another admin
    // address. Reported as needing a restart; the daemons keep their connection and port,
    // while the rest of the version (the policy) applies.
    let mut per_node = desired.policy("global-any-healthy");
    per_node.servers = vec!["nats://127.0.0.1:1".into()];
    per_node.admin_listen = Some("127.0.0.1:1".into());
    let v7 = push(&dir, &a_config, "v7.yaml", &per_node.render());
    wait_applied(&mut ds, v7, "global-any-healthy");
    for d in ds.iter_mut() {
        let warned = d.log_lines("need a restart");
        assert_eq!(warned.len(), 1, "{}: {warned:?}", d.name);
        assert!(
            warned[0].contains("nats") && warned[0].contains("admin.listen"),
            "{}: {warned:?}",
            d.name
        );
        // Still serving on the old port, still connected to the old server.
        let h = d.json("/healthz");
        assert_eq!(h["nats_connected"], true, "{}: {h}", d.name);
        wait_ep(d, true, "global", 1, 3);
    }
    // Nothing was ignored, nothing rejected, each version applied once.
    for d in &ds {
        assert_eq!(config_events(d, "applied"), 7.0, "{}", d.name);
        assert_eq!(config_events(d, "rejected"), 0.0, "{}", d.name);
        assert_eq!(config_events(d, "failed"), 0.0, "{}", d.name);
        assert_eq!(config_events(d, "ignored"), 0.0, "{}", d.name);
    }
    // The versions pushed are the KV revisions, in order.
    let versions = [v1, v2, v3, v4, v5, v6, v7];
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

/// Invalid YAML, an invalid config and another cluster's config are each rejected with a
/// clear error, counted, and the last good config stays in force; the CLI refuses to push them
/// unless told `--no-validate`; a later good version still applies.
#[test]
fn invalid_pushed_configs_are_rejected_and_the_last_good_one_stays() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let base = Yaml::node("a", &servers).policy("global-quorum");
    let yamls: Vec<Yaml> = ["a", "b"]
        .iter()
        .map(|n| Yaml {
            node: Some((*n).to_owned()),
            ..base.clone()
        })
        .collect();
    let mut ds = start_all(&dir, &yamls);
    let a_config = ds[0].config.clone();
    ds[0].put_health(EP, true);
    ds[1].put_health(EP, false);
    for d in ds.iter_mut() {
        d.wait_log("config snapshot loaded", SOON);
        wait_ep(d, false, "global", 1, 2);
    }
    let good = base.desired().policy("global-any-healthy");
    let v1 = push(&dir, &a_config, "good.yaml", &good.render());
    wait_applied(&mut ds, v1, "global-any-healthy");

    let broken_yaml =
        format!("cluster:\n  id: \"{CLUSTER}\"\nstate:\n  healthPolicy: [\"local-only\"\n");
    let out_of_range = good.clone().quorum(0).render();
    let other_cluster = good
        .render()
        .replace(&format!("id: \"{CLUSTER}\""), "id: \"someone-else\"");
    let bad = [
        ("broken.yaml", broken_yaml.as_str(), "line "),
        (
            "range.yaml",
            out_of_range.as_str(),
            "state.quorumMinPercent",
        ),
        ("other.yaml", other_cluster.as_str(), "cluster.id"),
    ];
    // The CLI validates before writing: each is refused, naming the problem.
    for (name, text, says) in bad {
        let path = write(&dir, name, text);
        let out = run_cli(&[
            "config",
            "push",
            "--config",
            a_config.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
    // Forced in, each is rejected by every daemon.
    let mut rejected = 0.0;
    for (name, text, says) in bad {
        let version = push_unchecked(&dir, &a_config, name, text);
        rejected += 1.0;
        for d in ds.iter_mut() {
            let line = format!("version={version}");
            d.wait(SOON, &format!("version {version} rejected"), |d| {
                d.log_lines("config rejected; the last good config stays in force")
                    .iter()
                    .any(|l| l.contains(&line) && l.contains(says))
            });
            assert_eq!(config_events(d, "rejected"), rejected, "{}", d.name);
            // Still the good one: policy, version and verdict.
            assert_eq!(d.policy(), "global-any-healthy", "{}", d.name);
            assert_eq!(
                d.try_metric("gslbd_state_config_version"),
                Some(v1 as f64),
                "{}",
                d.name
            );
            wait_ep(d, true, "global", 1, 2);
            // A rejected version is not a config event.
            assert!(!d.logged(&event_line(version)), "{}", d.name);
        }
    }

    // `config get` shows the newest version (the rejected one), `config history` all of them
    // with whether each is valid.
    let out = run_cli(&["config", "get", "--config", a_config.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("someone-else"));
    let history = run_cli_ok(&["config", "history", "--config", a_config.to_str().unwrap()]);
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{history}");
    assert!(rows[0].ends_with("\tyes"), "{history}");
    for row in &rows[1..] {
        assert!(row.contains("\tno: "), "{history}");
    }

    // A later good version still applies.
    let v5 = push(
        &dir,
        &a_config,
        "later.yaml",
        &good.clone().policy("local-only").render(),
    );
    wait_applied(&mut ds, v5, "local-only");
    ds[1].wait_decision(EP, "its own view", SOON, |v| {
        v["healthy"] == false && v["source"] == "local"
    });
    for d in &ds {
        assert_eq!(config_events(d, "applied"), 2.0, "{}", d.name);
        assert_eq!(config_events(d, "rejected"), 3.0, "{}", d.name);
    }
}

/// A client that is not the Rust one (Python's standard library speaking the raw NATS
/// protocol) writes the desired config straight into the KV bucket: a KV put is a publish on
/// `$KV.PLEIADES_CFG.<cluster>`, also with a JetStream domain. The daemons apply it. A nudge
/// on the event subject for a version already applied, and a restart, apply nothing twice.
#[test]
fn a_config_written_by_a_non_rust_client_is_applied_once() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let base = Yaml::node("a", &servers);
    let yamls: Vec<Yaml> = ["a", "b"]
        .iter()
        .map(|n| Yaml {
            node: Some((*n).to_owned()),
            ..base.clone()
        })
        .collect();
    let mut ds = start_all(&dir, &yamls);
    for d in ds.iter_mut() {
        d.wait_log("config snapshot loaded", SOON);
        assert_eq!(d.policy(), "prefer-local");
    }
    let script = data("nats_pub.py");
    let port = nats.client_port().to_string();
    let kv_subject = format!("$KV.{CONFIG_BUCKET}.{CLUSTER}");

    let desired = write(
        &dir,
        "py1.yaml",
        &base.desired().policy("global-any-healthy").render(),
    );
    let out = python3(
        &script,
        &["127.0.0.1", &port, &kv_subject, desired.to_str().unwrap()],
    );
    assert!(out.contains("published"), "{out}");
    let version = wait_event(&mut ds, 1);
    wait_applied(&mut ds, version, "global-any-healthy");

    // A nudge on the event subject for the version in force: read again, applied not again.
    let nudge = write(
        &dir,
        "nudge.json",
        &format!("{{\"cluster\":\"{CLUSTER}\",\"version\":{version}}}"),
    );
    python3(
        &script,
        &[
            "127.0.0.1",
            &port,
            &format!("{CONFIG_PREFIX}.{CLUSTER}"),
            nudge.to_str().unwrap(),
        ],
    );
    // Then a second version from Python; once it is in force, the nudge has long been handled.
    let desired = write(
        &dir,
        "py2.yaml",
        &base.desired().policy("local-only").render(),
    );
    python3(
        &script,
        &["127.0.0.1", &port, &kv_subject, desired.to_str().unwrap()],
    );
    let version2 = wait_event(&mut ds, 2);
    assert!(version2 > version);
    wait_applied(&mut ds, version2, "local-only");
    for d in ds.iter_mut() {
        for v in [version, version2] {
            assert_eq!(d.log_lines(&event_line(v)).len(), 1, "{}", d.name);
        }
        assert_eq!(config_events(d, "applied"), 2.0, "{}", d.name);
    }

    // A restart loads the version in force as its snapshot: no config event for it.
    let mut b = ds.pop().unwrap();
    b.sigterm();
    b.wait_exit(Duration::from_secs(10));
    drop(b);
    let mut b = Daemon::start(&dir, &yamls[1]);
    b.wait_ready();
    b.wait(SOON, "the snapshot applied", |d| {
        d.logged(&format!(
            "config applied cluster={CLUSTER} version={version2}"
        ))
    });
    let loaded = b.log_lines("config snapshot loaded");
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert!(
        loaded[0].contains(&format!("version={version2}")),
        "{loaded:?}"
    );
    assert!(!b.logged("config event:"), "{}", b.log_tail(20));
    assert_eq!(b.policy(), "local-only");
    assert_eq!(config_events(&b, "applied"), 1.0);
}

/// Waits until every daemon has logged `n` config events; returns the version of the last.
fn wait_event(ds: &mut [Daemon], n: usize) -> u64 {
    let prefix = format!("config event: cluster={CLUSTER} version=");
    let mut version = 0;
    for d in ds.iter_mut() {
        d.wait_log_count(&prefix, n, SOON);
        let lines = d.log_lines(&prefix);
        let v: u64 = lines[n - 1]
            .split(&prefix)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad line {:?}", lines[n - 1]));
        version = v;
    }
    version
}

/// Versions only move forward. A version can only look older when the key's revisions start
/// again, i.e. the bucket was deleted and created anew: the daemons then ignore the new
/// history's versions until one is newer than the version in force, and say so once per
/// version (`config version ignored`, `gslbd_state_config_events_total{result="ignored"}`),
/// keeping the config in force. Equal versions (a nudge or the watchdog re-reading the version
/// in force) are dropped before the core, silently; the tests above show each version applied
/// once.
#[test]
fn a_version_older_than_the_one_in_force_is_ignored_and_said_so() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let base = Yaml::node("a", &servers);
    let yamls: Vec<Yaml> = ["a", "b"]
        .iter()
        .map(|n| Yaml {
            node: Some((*n).to_owned()),
            ..base.clone()
        })
        .collect();
    let mut ds = start_all(&dir, &yamls);
    let a_config = ds[0].config.clone();
    for d in ds.iter_mut() {
        d.wait_log("config snapshot loaded", SOON);
    }
    let desired = base.desired();
    let v1 = push(
        &dir,
        &a_config,
        "v1.yaml",
        &desired.clone().policy("global-quorum").render(),
    );
    let v2 = push(
        &dir,
        &a_config,
        "v2.yaml",
        &desired.clone().policy("global-any-healthy").render(),
    );
    assert_eq!((v1, v2), (1, 2));
    wait_applied(&mut ds, v2, "global-any-healthy");

    // The bucket goes away and comes back empty: its revisions start again at 1.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::with_domain(client, "gslb");
        js.delete_key_value(CONFIG_BUCKET).await.unwrap();
    });
    let old = push(
        &dir,
        &a_config,
        "old.yaml",
        &desired.clone().policy("local-only").render(),
    );
    assert_eq!(old, 1);
    for d in ds.iter_mut() {
        d.wait(SOON, "version 1 ignored", |d| {
            d.log_lines("config version ignored")
                .iter()
                .any(|l| l.contains("version=1") && l.contains("current=2"))
        });
        assert_eq!(config_events(d, "ignored"), 1.0, "{}", d.name);
        assert_eq!(d.policy(), "global-any-healthy", "{}", d.name);
        assert_eq!(d.try_metric("gslbd_state_config_version"), Some(2.0));
    }
    // Revision 2 of the new history equals the version in force: dropped. Revision 3 is newer:
    // applied, and by then nothing was reported twice.
    push(
        &dir,
        &a_config,
        "equal.yaml",
        &desired.clone().policy("local-only").render(),
    );
    let v3 = push(
        &dir,
        &a_config,
        "v3.yaml",
        &desired.clone().policy("global-quorum").render(),
    );
    assert_eq!(v3, 3);
    wait_applied(&mut ds, v3, "global-quorum");
    for d in &ds {
        assert_eq!(d.log_lines("config version ignored").len(), 1, "{}", d.name);
        assert_eq!(config_events(d, "ignored"), 1.0, "{}", d.name);
        assert_eq!(config_events(d, "applied"), 3.0, "{}", d.name);
    }
}

/// `config.applyTimeout` is real: a version whose apply does not finish in time (here its
/// probes start, then the rest hangs: the daemon's test hook) is rolled back whole on that
/// node — the core's `state.*` and the probes alike — and counted `failed` only, never
/// `applied`; a node that applies it in time keeps it.
#[test]
fn a_version_not_applied_within_apply_timeout_is_rolled_back_whole() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let base = Yaml::node("a", &servers)
        .policy("global-quorum")
        .timing("500ms", "4s");
    let a_config = base.write(&dir.file("a.yaml"));
    // a's apply hangs longer than its applyTimeout (5 s).
    let mut a = Daemon::start_file(
        &dir,
        "a",
        &a_config,
        &[],
        &[("GSLB_STATE_TEST_APPLY_DELAY_MS", "8000")],
    );
    let b_yaml = Yaml {
        node: Some("b".into()),
        ..base.clone()
    };
    let mut b = Daemon::start(&dir, &b_yaml);
    for d in [&mut a, &mut b] {
        d.wait_ready();
        d.wait_members(2, SOON);
        d.wait_log("config snapshot loaded", SOON);
    }
    // a says down, b up: 1 of 2 healthy, under the 51 % of global-quorum.
    a.put_health(EP, false);
    b.put_health(EP, true);
    for d in [&mut a, &mut b] {
        wait_ep(d, false, "global", 1, 2);
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut desired = base.desired().policy("global-any-healthy");
    desired.endpoints = vec![format!(
        "  - name: \"probed.example.com\"\n    probe: {{ tcp: \"{addr}\", interval: \"100ms\", timeout: \"90ms\", rise: 1, fall: 1 }}"
    )];
    let v = push(&dir, &a_config, "v.yaml", &desired.render());

    // b applies it in time.
    wait_applied(std::slice::from_mut(&mut b), v, "global-any-healthy");
    wait_ep(&mut b, true, "global", 1, 2);
    assert_eq!(config_events(&b, "applied"), 1.0);

    // a: its state is in force while it applies (at once), and its probe starts...
    a.wait_log(&event_line(v), SOON);
    wait_ep(&mut a, true, "global", 1, 2);
    a.wait_decision("probed.example.com", "probed by a", SOON, |v| {
        v["local"] == true
    });
    // ... then the timeout runs out and all of it is rolled back.
    a.wait_log("config apply failed", SOON);
    assert!(
        a.log_lines("config apply failed")
            .iter()
            .any(|l| l.contains("applyTimeout") && l.contains(&format!("version={v}"))),
        "{}",
        a.log_tail(10)
    );
    wait_ep(&mut a, false, "global", 1, 2);
    assert_eq!(a.policy(), "global-quorum");
    a.wait_log("probe removed; observation withdrawn", SOON);
    a.wait_decision(
        "probed.example.com",
        "a's observation withdrawn",
        SOON,
        |v| v["local"].is_null(),
    );
    assert_eq!(config_events(&a, "failed"), 1.0);
    assert_eq!(config_events(&a, "applied"), 0.0, "both applied and failed");
    assert!(!a.logged(&format!("config applied cluster={CLUSTER} version={v}")));
    assert_ne!(
        a.try_metric("gslbd_state_config_version"),
        Some(v as f64),
        "the failed version is not the one in force"
    );
    drop(listener);
}
