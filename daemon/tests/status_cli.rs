//! `gslb-state status` against real daemons and a real nats-server: the summary table and its
//! exit codes (0 well, 1 the daemon cannot be asked, 2 NATS disconnected, snapshot loading or
//! fewer active members than `--min-members`), `--config` for the default URL, `--watch`; and
//! `/healthz` saying `loading` until the node's health snapshot is read, then `ok`.
//!
//! Run by `cargo test -p gslb-state-daemon --test status_cli`. Every wait polls with a
//! deadline; nothing sleeps to synchronise.

mod daemon_common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use daemon_common::{Daemon, SOON, TestDir, Yaml, bin, run_cli, start_all};
use gslb_state_tests::{NatsServer, ServerOpts};
use serde_json::Value;

/// `gslb-state status ARGS`: exit code, stdout, stderr.
fn status(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["status"];
    all.extend_from_slice(args);
    let Output {
        status,
        stdout,
        stderr,
    } = run_cli(&all);
    (
        status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The value of `key` in the summary lines of a report (`node       a (region r-a)`).
fn field<'a>(report: &'a str, key: &str) -> Option<&'a str> {
    report.lines().find_map(|l| {
        l.strip_prefix(key)
            .filter(|rest| rest.starts_with(' '))
            .map(str::trim)
    })
}

#[test]
fn status_prints_the_summary_and_exits_by_the_nodes_health() {
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    let dir = TestDir::new();
    let servers = [nats.url()];
    let mut daemons = start_all(
        &dir,
        &[Yaml::node("a", &servers), Yaml::node("b", &servers)],
    );
    let a = &mut daemons[0];
    a.put_health("www.example.com", true);
    a.put_health("db.example.com", false);
    a.wait_decision("db.example.com", "down", SOON, |d| d["healthy"] == false);
    let url = format!("http://127.0.0.1:{}", a.port());

    // All well: exit 0, the summary, both members, the endpoint that is down.
    let (code, out, err) = status(&["--url", &url, "--min-members", "2"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(field(&out, "node"), Some("a (region r-a)"), "{out}");
    assert_eq!(field(&out, "api"), Some(url.as_str()), "{out}");
    assert_eq!(field(&out, "status"), Some("ok"), "{out}");
    assert_eq!(field(&out, "NATS"), Some("connected"), "{out}");
    assert_eq!(field(&out, "snapshot"), Some("loaded"), "{out}");
    assert_eq!(field(&out, "policy"), Some("prefer-local"), "{out}");
    assert_eq!(field(&out, "config"), Some("the node's own file"), "{out}");
    assert_eq!(field(&out, "members"), Some("2 active of 2"), "{out}");
    assert_eq!(
        field(&out, "endpoints"),
        Some("2: 1 up, 1 down, 0 unknown, 0 pending"),
        "{out}"
    );
    let member = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no member row {name}:\n{out}"))
            .to_owned()
    };
    assert!(member("a").contains("(this node)"), "{out}");
    let b_row = member("b");
    assert!(
        b_row.contains("r-b") && b_row.contains(" yes ") && b_row.contains(" ago"),
        "{b_row}"
    );
    assert!(out.contains("\nDOWN (1 of 1)\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("db.example.com ") && l.ends_with(" down")),
        "{out}"
    );
    assert!(out.ends_with("\nOK\n"), "{out}");

    // Fewer active members than asked for: exit 2, and why.
    let (code, out, _) = status(&["--url", &url, "--min-members", "3"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.ends_with("DEGRADED: 2 active members, fewer than --min-members 3\n"),
        "{out}"
    );

    // The default URL comes from --config's admin.listen.
    let config = dir.file("a-listen.yaml");
    Yaml {
        admin_listen: Some(format!("127.0.0.1:{}", a.port())),
        ..Yaml::node("a", &servers)
    }
    .write(&config);
    let (code, out, err) = status(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(field(&out, "api"), Some(url.as_str()), "{out}");

    // Nobody there: exit 1, with the reason on stdout's report.
    let (code, out, _) = status(&["--url", "http://127.0.0.1:1"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("error: GET http://127.0.0.1:1/v1/status"),
        "{out}"
    );
    let (code, _, err) = status(&["--url", "ftp://127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("expected http:// or https://"), "{err}");

    // --watch: a report every second until interrupted.
    let mut watch = Command::new(bin())
        .args(["status", "--watch", "--url", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gslb-state status --watch");
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut reports = Vec::new();
    while reports.len() < 3 {
        let left = SOON.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if line == "OK" => reports.push(started.elapsed()),
            Ok(_) => {}
            Err(_) => panic!("--watch printed {} reports in {SOON:?}", reports.len()),
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    // Three reports a second apart (the first at once): not much less than 2 s in all.
    assert!(
        reports[2] >= Duration::from_millis(1500),
        "--watch reported at {reports:?}"
    );

    // NATS gone: exit 2, and the report says so.
    nats.kill().expect("kill nats-server");
    a.wait(SOON, "a: /healthz nats_connected false", |d| {
        d.try_json("/healthz")
            .is_some_and(|v| v["nats_connected"] == false)
    });
    let (code, out, _) = status(&["--url", &url]);
    assert_eq!(code, 2, "{out}");
    assert!(
        field(&out, "NATS").is_some_and(|v| v.starts_with("DISCONNECTED")),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("DEGRADED: NATS disconnected")),
        "{out}"
    );
}

/// `GET /healthz`: status code and JSON.
fn healthz(d: &mut Daemon) -> (u16, Value) {
    let (code, body) = d.request("GET", "/healthz", "");
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz: {e}: {body}"));
    (code, v)
}

#[test]
fn healthz_says_loading_until_the_snapshot_is_read_then_ok() {
    // A server that is not there when the daemon starts: its snapshot cannot be read.
    let nats = NatsServer::single(ServerOpts::default()).expect("nats-server");
    nats.kill().expect("kill nats-server");
    let dir = TestDir::new();
    let mut a = Daemon::start(&dir, &Yaml::node("a", &[nats.url()]));
    a.port();

    let (code, v) = healthz(&mut a);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "loading", "{v}");
    assert_eq!(v["snapshot_loaded"], false, "{v}");
    assert_eq!(v["nats_connected"], false, "{v}");
    let url = format!("http://127.0.0.1:{}", a.port());
    let (code, out, _) = status(&["--url", &url]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(field(&out, "snapshot"), Some("LOADING"), "{out}");
    assert!(
        out.contains("the health snapshot is still loading"),
        "{out}"
    );

    // The server comes up: the snapshot is read, and /healthz says ok, still 200.
    nats.restart().expect("restart nats-server");
    let mut seen = Vec::new();
    a.wait(SOON, "a: /healthz status ok", |d| {
        let v = d.try_json("/healthz");
        let status = v.as_ref().map(|v| v["status"].clone()).unwrap_or_default();
        seen.push(status.clone());
        status == "ok"
    });
    assert!(
        seen[..seen.len() - 1].iter().all(|s| s == "loading"),
        "/healthz said {seen:?}"
    );
    let (code, v) = healthz(&mut a);
    assert_eq!(
        (code, v["snapshot_loaded"].clone()),
        (200, Value::Bool(true)),
        "{v}"
    );
    assert!(a.logged("health snapshot loaded"));
    let (code, out, _) = status(&["--url", &url, "--min-members", "1"]);
    assert_eq!(code, 0, "{out}");
}
