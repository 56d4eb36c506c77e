//! The operator's view through a real Prometheus: Debian's `prometheus` server scrapes two real
//! `gslb-state` daemons (on a real nats-server) every 250 ms, with the alert rules of
//! `deploy/prometheus/gslb-state.rules.yml` loaded, and the test reads everything back through
//! Prometheus's HTTP API: both targets up, the guide's metrics with their types and labels, values
//! that move when a health is flipped through the daemons' API (published and received messages,
//! decisions by source), and the alert rules evaluating without errors on the real series.
//!
//! The server is `PROMETHEUS_BIN` (`scripts/test` exports it), else what
//! `scripts/ensure-prometheus prometheus` prints (it installs Debian's `prometheus` package when
//! missing); a test without one fails, it never skips. It listens on a free loopback port and
//! keeps its storage in the test's temp dir. Every wait polls with a deadline.
//!
//! Run by `cargo test -p gslb-state-daemon --test ops_prometheus`.

mod daemon_common;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use daemon_common::{Daemon, TestDir, Yaml, start_all};
use gslb_state_tests::{NatsServer, ServerOpts, http, wait_for_blocking};
use serde_json::Value;

/// Deadline for what Prometheus should see within a few scrapes (start-up included).
const PROM_SOON: Duration = Duration::from_secs(30);
/// Scrape and rule evaluation interval.
const SCRAPE_INTERVAL: &str = "250ms";
/// Timeout of one request to Prometheus's API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The guide's metrics with their Prometheus types and the labels each must carry (the
/// `_total` suffix is the counter samples'; the metadata names the family without it).
const GUIDE_METRICS: [(&str, &str, &[&str]); 7] = [
    ("gslbd_state_nats_connected", "gauge", &[]),
    ("gslbd_state_active_members", "gauge", &[]),
    ("gslbd_state_nats_published_total", "counter", &["type"]),
    ("gslbd_state_nats_received_total", "counter", &["type"]),
    ("gslbd_state_kv_put_total", "counter", &["bucket", "result"]),
    ("gslbd_state_kv_get_total", "counter", &["bucket", "result"]),
    ("gslbd_state_decisions", "gauge", &["source"]),
];

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("daemon/ is in the workspace")
        .to_owned()
}

/// The `prometheus` server binary: `PROMETHEUS_BIN`, else `scripts/ensure-prometheus
/// prometheus` (which installs Debian's package when missing).
fn prometheus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "PROMETHEUS_BIN={} is not a file", p.display());
        return p;
    }
    let script = repo_root().join("scripts/ensure-prometheus");
    let out = Command::new(&script)
        .arg("prometheus")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && !path.is_empty(),
        "no Prometheus server: set PROMETHEUS_BIN, or install Debian's package \
         (apt-get install prometheus); {} failed ({})",
        script.display(),
        out.status
    );
    PathBuf::from(path)
}

/// `s` percent-encoded for a URL query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `prometheus` server child process, killed on drop (its log tail printed when the test
/// fails).
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    /// Starts a server scraping `targets` (loopback admin ports) as job `gslb-state`, with
    /// `rules` loaded, and waits until it is ready. A port taken between picking and binding is
    /// picked again.
    fn start(dir: &TestDir, targets: &[u16], rules: &Path) -> Prometheus {
        let bin = prometheus_bin();
        let targets: Vec<String> = targets
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let config = dir.file("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n  \
                 evaluation_interval: {SCRAPE_INTERVAL}\nrule_files: [\"{}\"]\nscrape_configs:\n  \
                 - job_name: gslb-state\n    metrics_path: /metrics\n    static_configs:\n      \
                 - targets: [{}]\n",
                rules.display(),
                targets.join(", ")
            ),
        )
        .expect("write prometheus.yml");
        for attempt in 1..=3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let log = dir.file(&format!("prometheus.{attempt}.log"));
            let out = File::create(&log).expect("prometheus log file");
            let mut command = Command::new(&bin);
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.file(&format!("prometheus-data.{attempt}")).display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log file"))
                .stderr(out);
            gslb_state_tests::die_with_parent(&mut command);
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut p = Prometheus { child, port, log };
            let ready = wait_for_blocking(PROM_SOON, "prometheus /-/ready", || {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Some(Err(status));
                }
                let ok = http::get(port, "/-/ready", HTTP_TIMEOUT).is_ok_and(|(s, _)| s == 200);
                ok.then_some(Ok(()))
            });
            match ready {
                Ok((Ok(()), _)) => return p,
                Ok((Err(status), _)) if p.log_text().contains("address already in use") => {
                    eprintln!("prometheus: port {port} taken ({status}); picking another");
                }
                Ok((Err(status), _)) => {
                    panic!("prometheus exited ({status}):\n{}", p.log_tail(30))
                }
                Err(e) => panic!("{e}\n--- prometheus log tail ---\n{}", p.log_tail(30)),
            }
        }
        panic!("prometheus: no free port in 3 attempts")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `GET path` on the API: its `data` when the status is `success`, `None` otherwise.
    fn api(&self, path: &str) -> Option<Value> {
        let (status, body) = http::get(self.port, path, HTTP_TIMEOUT).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["status"] == "success").then(|| v["data"].clone())
    }

    /// The instant vector `promql` evaluates to now: (labels, value) per series.
    fn query(&self, promql: &str) -> Option<Vec<(Value, f64)>> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)))?;
        data["result"]
            .as_array()?
            .iter()
            .map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?)))
            .collect()
    }

    /// The value of the one series `promql` evaluates to (`None` when it has none).
    fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql)?.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }

    /// Polls `f` until it yields a value; fails with the log tail after [`PROM_SOON`].
    fn wait<T>(&self, what: &str, mut f: impl FnMut(&Prometheus) -> Option<T>) -> T {
        wait_for_blocking(PROM_SOON, what, || f(self))
            .map(|(v, _)| v)
            .unwrap_or_else(|e| panic!("{e}\n--- prometheus log tail ---\n{}", self.log_tail(30)))
    }

    /// Waits until `promql` has exactly one series, of value `want`.
    fn wait_value(&self, promql: &str, want: f64) {
        let mut last = None;
        let what = format!("prometheus: {promql} == {want}");
        wait_for_blocking(PROM_SOON, &what, || {
            last = self.query(promql);
            matches!(last.as_deref(), Some([(_, v)]) if *v == want).then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}; last result: {last:?}\n--- prometheus log tail ---\n{}",
                self.log_tail(30)
            )
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- prometheus log tail ({}) ---\n{}",
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

/// `instance` label of a daemon's target.
fn instance(d: &mut Daemon) -> String {
    format!("127.0.0.1:{}", d.port())
}

/// `gslbd_state_decisions{source=...}` of `instance` as Prometheus has it.
fn decisions(source: &str, instance: &str) -> String {
    format!("gslbd_state_decisions{{source=\"{source}\",instance=\"{instance}\"}}")
}

#[test]
fn a_real_prometheus_scrapes_two_daemons_and_sees_the_guides_metrics_move() {
    let server = NatsServer::single(ServerOpts::default()).unwrap_or_else(|e| panic!("{e}"));
    let dir = TestDir::new();
    // a decides prefer-local, b global-quorum: between them every decision source occurs.
    let yamls = [
        Yaml::node("ops-a", &[server.url()]),
        Yaml::node("ops-b", &[server.url()]).policy("global-quorum"),
    ];
    let mut ds = start_all(&dir, &yamls);
    let (a, b) = (instance(&mut ds[0]), instance(&mut ds[1]));
    let ports = [ds[0].port(), ds[1].port()];
    let rules = repo_root().join("deploy/prometheus/gslb-state.rules.yml");
    let prom = Prometheus::start(&dir, &ports, &rules);

    // Both targets are up, scraped without error.
    prom.wait("both targets up", |p| {
        let targets = p.api("/api/v1/targets?state=active")?;
        let active = targets["activeTargets"].as_array()?;
        let up = active
            .iter()
            .filter(|t| t["health"] == "up" && t["lastError"] == "")
            .count();
        (active.len() == 2 && up == 2).then_some(())
    });
    prom.wait_value("count(up{job=\"gslb-state\"} == 1)", 2.0);

    // The guide's metrics, typed as the guide means them, for both targets.
    let metadata = prom.wait("metadata of every guide metric on both targets", |p| {
        let m = p.api("/api/v1/targets/metadata?match_target=%7Bjob%3D%22gslb-state%22%7D")?;
        let entries = m.as_array()?.clone();
        let complete = GUIDE_METRICS.iter().all(|(name, _, _)| {
            let family = name.trim_end_matches("_total");
            [&a, &b].iter().all(|inst| {
                entries
                    .iter()
                    .any(|e| e["metric"] == family && e["target"]["instance"] == inst.as_str())
            })
        });
        complete.then_some(entries)
    });
    for (name, kind, _) in GUIDE_METRICS {
        let family = name.trim_end_matches("_total");
        for e in metadata.iter().filter(|e| e["metric"] == family) {
            assert_eq!(
                e["type"], kind,
                "{name} on {}: {e}",
                e["target"]["instance"]
            );
        }
    }

    // Connected, two active members each, and the labels of the labelled metrics.
    for inst in [&a, &b] {
        prom.wait_value(
            &format!("gslbd_state_nats_connected{{instance=\"{inst}\"}}"),
            1.0,
        );
        prom.wait_value(
            &format!("gslbd_state_active_members{{instance=\"{inst}\"}}"),
            2.0,
        );
        prom.wait_value(
            &format!(
                "count(gslbd_state_nats_published_total{{instance=\"{inst}\",type=\"heartbeat\"}} > 0)"
            ),
            1.0,
        );
        prom.wait_value(
            &format!(
                "count(gslbd_state_kv_put_total{{instance=\"{inst}\",bucket=\"gslb_e2e_members\",result=\"ok\"}} > 0)"
            ),
            1.0,
        );
    }
    for (name, _, labels) in GUIDE_METRICS {
        let series = prom.wait(&format!("{name} series"), |p| {
            p.query(name).filter(|r| !r.is_empty())
        });
        for (metric, _) in &series {
            for label in labels {
                assert!(
                    metric[*label].as_str().is_some_and(|v| !v.is_empty()),
                    "{name}: series without label {label}: {metric}"
                );
            }
        }
    }
    // Every source is exported from the start, at 0 with no endpoint known.
    for inst in [&a, &b] {
        for source in ["local", "global", "fallback-local", "unknown"] {
            prom.wait_value(&decisions(source, inst), 0.0);
        }
    }

    // A health flip on a: a publishes a health batch, b receives it; a decides `web` on its own
    // observation (local), b on a's report (global).
    let published = |p: &Prometheus| {
        p.value(&format!(
            "sum(gslbd_state_nats_published_total{{instance=\"{a}\",type=\"health\"}}) or vector(0)"
        ))
    };
    let received = |p: &Prometheus| {
        p.value(&format!(
            "sum(gslbd_state_nats_received_total{{instance=\"{b}\",type=\"health\"}}) or vector(0)"
        ))
    };
    let (published_before, received_before) = (
        prom.wait("published", published),
        prom.wait("received", received),
    );
    ds[0].put_health("web", false);
    prom.wait("a's published_total{type=health} grows", |p| {
        published(p).filter(|v| *v > published_before)
    });
    prom.wait("b's received_total{type=health} grows", |p| {
        received(p).filter(|v| *v > received_before)
    });
    prom.wait_value(&decisions("local", &a), 1.0);
    prom.wait_value(&decisions("global", &b), 1.0);

    // An endpoint only b observes: b decides it on its own observation under its global policy
    // (fallback-local), a on b's report (global).
    ds[1].put_health("solo", true);
    prom.wait_value(&decisions("fallback-local", &b), 1.0);
    prom.wait_value(&decisions("global", &a), 1.0);

    // a withdraws its observation of `web`: nobody reports it any more, so it is unknown on
    // both, and the gauges it left go back down.
    ds[0].delete_health("web");
    for (inst, counts) in [(&a, [0.0, 1.0, 0.0, 1.0]), (&b, [0.0, 0.0, 1.0, 1.0])] {
        for (source, n) in ["local", "global", "fallback-local", "unknown"]
            .into_iter()
            .zip(counts)
        {
            prom.wait_value(&decisions(source, inst), n);
        }
    }

    // The alert rules load and evaluate on the real series without error; with 2 members of
    // the 6 the rules expect, GslbStateMembersBelowExpected is pending on both nodes.
    prom.wait("every alert rule evaluated without error", |p| {
        let groups = p.api("/api/v1/rules")?;
        let rules: Vec<Value> = groups["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let ok = rules.len() >= 9
            && rules
                .iter()
                .all(|r| r["health"] == "ok" && r["lastError"].as_str().unwrap_or("").is_empty());
        ok.then_some(())
    });
    prom.wait_value(
        "count(ALERTS{alertname=\"GslbStateMembersBelowExpected\",alertstate=\"pending\"})",
        2.0,
    );
    assert_eq!(
        prom.query("ALERTS{alertname=\"GslbStateNatsDisconnected\"}"),
        Some(vec![]),
        "both daemons are connected: no NatsDisconnected alert"
    );
}
