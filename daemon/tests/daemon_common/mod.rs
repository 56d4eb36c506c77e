//! Shared by the daemon's end-to-end tests (`daemon_*`, `security_daemon`): the real
//! `gslb-state` binary run as child processes against real `nats-server`s, driven through its
//! CLI, its HTTP API, its metrics and its logs. Built on the `gslb-state-tests` harness (its
//! servers, HTTP client, metrics reader and wait helpers).
//!
//! * [`bin`] is the binary cargo built for these tests (`CARGO_BIN_EXE_gslb-state`), or
//!   `GSLB_STATE_BIN`.
//! * [`Daemon`] is one `gslb-state run` child: its stderr goes to a log file in the test's temp
//!   dir, its admin API listens on a port it picked itself (`admin.listen: 127.0.0.1:0`, read
//!   back from the `gslb-state running` log line, so no port can be stolen between picking and
//!   binding), and it is SIGKILLed on drop. When a test fails, every daemon prints its log tail.
//! * Every wait polls with a deadline ([`Daemon::wait`], `gslb_state_tests::wait`); nothing
//!   sleeps to synchronise.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use gslb_state_tests::{DaemonProcess, http, metric_value, wait_for_blocking};

/// The cluster id of every test.
pub const CLUSTER: &str = "e2e";
/// The config bucket (the guide's).
pub const CONFIG_BUCKET: &str = "PLEIADES_CFG";
/// The config subject prefix (the guide's).
pub const CONFIG_PREFIX: &str = "pleiades.cfg";
/// Deadline for what should happen within a few heartbeats or a start-up.
pub const SOON: Duration = Duration::from_secs(15);
/// Timeout of one HTTP request to a daemon.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// The `gslb-state` binary to test: `GSLB_STATE_BIN` if set (to test another build, e.g. a
/// release binary in CI), otherwise the one cargo built from the sources under test for this
/// crate's integration tests (`CARGO_BIN_EXE_gslb-state`).
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(
        || match std::env::var_os("GSLB_STATE_BIN").filter(|p| !p.is_empty()) {
            Some(p) => {
                let p = PathBuf::from(p);
                assert!(p.is_file(), "GSLB_STATE_BIN={} is not a file", p.display());
                p
            }
            None => PathBuf::from(env!("CARGO_BIN_EXE_gslb-state")),
        },
    )
}

/// Runs `gslb-state ARGS` to completion (for `check-config` and `config ...`).
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run gslb-state {args:?}: {e}"))
}

/// `run_cli` that must succeed; returns stdout.
pub fn run_cli_ok(args: &[&str]) -> String {
    let out = run_cli(args);
    assert!(
        out.status.success(),
        "gslb-state {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------------------------

/// A daemon's configuration file, rendered as the guide's YAML.
#[derive(Clone, Debug)]
pub struct Yaml {
    /// `node.id`; `None` leaves the `node` section out (a cluster-wide desired config).
    pub node: Option<String>,
    /// `state.healthPolicy`.
    pub policy: String,
    /// `state.quorumMinPercent`.
    pub quorum: u32,
    /// `state.heartbeatInterval`.
    pub interval: String,
    /// `state.heartbeatTTL`.
    pub ttl: String,
    /// `state.enableConfigSync` (and the guide's `config` section).
    pub config_sync: bool,
    /// `nats.servers`.
    pub servers: Vec<String>,
    /// `admin.listen`; `None` leaves the `admin` section out.
    pub admin_listen: Option<String>,
    /// The `endpoints:` list items, already indented by two spaces (`  - name: ...`).
    pub endpoints: Vec<String>,
}

impl Yaml {
    /// Node `node` of cluster [`CLUSTER`] on `servers`: prefer-local, 250 ms / 1 s, config sync
    /// on, admin API on a port of its own choosing.
    pub fn node(node: &str, servers: &[String]) -> Yaml {
        Yaml {
            node: Some(node.to_owned()),
            policy: "prefer-local".into(),
            quorum: 51,
            interval: "250ms".into(),
            ttl: "1s".into(),
            config_sync: true,
            servers: servers.to_vec(),
            admin_listen: Some("127.0.0.1:0".into()),
            endpoints: Vec::new(),
        }
    }

    /// The cluster-wide part of this file (no `node` nor `admin` section): what an operator
    /// pushes with `gslb-state config push`.
    pub fn desired(&self) -> Yaml {
        Yaml {
            node: None,
            admin_listen: None,
            ..self.clone()
        }
    }

    /// Sets the policy.
    pub fn policy(mut self, policy: &str) -> Yaml {
        self.policy = policy.into();
        self
    }

    /// Sets the threshold.
    pub fn quorum(mut self, q: u32) -> Yaml {
        self.quorum = q;
        self
    }

    /// Sets the heartbeat interval and TTL.
    pub fn timing(mut self, interval: &str, ttl: &str) -> Yaml {
        self.interval = interval.into();
        self.ttl = ttl.into();
        self
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        let mut s = format!("cluster:\n  id: \"{CLUSTER}\"\n");
        if let Some(node) = &self.node {
            s += &format!("node:\n  id: \"{node}\"\n  region: \"r-{node}\"\n");
        }
        s += &format!(
            "state:\n  healthPolicy: \"{}\"\n  quorumMinPercent: {}\n  heartbeatInterval: \"{}\"\n  heartbeatTTL: \"{}\"\n  enableConfigSync: {}\n",
            self.policy, self.quorum, self.interval, self.ttl, self.config_sync
        );
        let servers: Vec<String> = self.servers.iter().map(|u| format!("\"{u}\"")).collect();
        s += &format!(
            "nats:\n  servers: [{}]\n  pingInterval: \"500ms\"\n  connectTimeout: \"1s\"\n  jetStream:\n    domain: \"gslb\"\n",
            servers.join(", ")
        );
        if self.config_sync {
            s += &format!(
                "config:\n  mode: \"jetstream\"\n  stream: \"PLEIADES.cfg\"\n  subjectPrefix: \"{CONFIG_PREFIX}\"\n  kvBucket: \"{CONFIG_BUCKET}\"\n  applyTimeout: \"5s\"\n"
            );
        }
        if let Some(listen) = &self.admin_listen {
            s += &format!("admin:\n  listen: \"{listen}\"\n");
        }
        if !self.endpoints.is_empty() {
            s += "endpoints:\n";
            for e in &self.endpoints {
                s += e;
                if !e.ends_with('\n') {
                    s.push('\n');
                }
            }
        }
        s
    }

    /// Writes the YAML to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.render())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Daemons
// ---------------------------------------------------------------------------------------------

/// A temp dir for one test's configs and logs; kept when `GSLB_KEEP_DAEMON_DIRS=1`.
pub struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    /// A new temp dir.
    pub fn new() -> TestDir {
        TestDir(Some(
            tempfile::Builder::new()
                .prefix("gslb-daemon-test.")
                .tempdir()
                .expect("temp dir"),
        ))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("present until drop").path()
    }

    /// A file in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep = std::env::var_os("GSLB_KEEP_DAEMON_DIRS").is_some_and(|v| v == "1");
        if (keep || std::thread::panicking())
            && let Some(dir) = self.0.take()
        {
            eprintln!("kept daemon test dir: {}", dir.keep().display());
        }
    }
}

/// One `gslb-state run` child process (the harness's [`DaemonProcess`]) with the tests'
/// conveniences: waits that fail with its log tail, requests that must succeed. SIGKILLed on
/// drop; its log tail is printed when the test is failing.
pub struct Daemon {
    /// A name for messages (the node id).
    pub name: String,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
    process: DaemonProcess,
}

impl Daemon {
    /// Writes `yaml` to `<dir>/<node>.yaml` and starts `gslb-state run` on it (text logs).
    pub fn start(dir: &TestDir, yaml: &Yaml) -> Daemon {
        Daemon::start_with(dir, yaml, &[])
    }

    /// [`Daemon::start`] with extra global arguments (e.g. `--log-format json`). Each start of
    /// the same node logs to a new file (`<node>.log`, `<node>.2.log`, ...).
    pub fn start_with(dir: &TestDir, yaml: &Yaml, args: &[&str]) -> Daemon {
        let name = yaml.node.clone().expect("a daemon needs node.id");
        let config = yaml.write(&dir.file(&format!("{name}.yaml")));
        Daemon::start_file(dir, &name, &config, args, &[])
    }

    /// Starts `gslb-state ARGS run --config CONFIG` on a file written by the caller, with
    /// extra environment variables; `name` names its log file and messages.
    pub fn start_file(
        dir: &TestDir,
        name: &str,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let process = DaemonProcess::spawn(bin(), name, config, args, env, dir.path())
            .unwrap_or_else(|e| panic!("cannot start gslb-state: {e}"));
        Daemon {
            name: name.to_owned(),
            config: config.to_owned(),
            log: process.log.clone(),
            process,
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }

    /// Whether the log has a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log_text().contains(needle)
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the log contains `needle` (and fails early if the process exits).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Duration {
        let what = format!("{}: log line containing {needle:?}", self.name);
        self.wait(timeout, &what, |d| d.logged(needle))
    }

    /// Waits until the log has `n` lines containing `needle`.
    pub fn wait_log_count(&mut self, needle: &str, n: usize, timeout: Duration) -> Duration {
        let what = format!("{}: {n} log lines containing {needle:?}", self.name);
        self.wait(timeout, &what, |d| d.log_lines(needle).len() >= n)
    }

    /// Polls `cond` until it holds (as `gslb_state_tests::wait_until_blocking` does); fails
    /// with the log tail on timeout or if the process exits meanwhile.
    pub fn wait(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Daemon) -> bool,
    ) -> Duration {
        let waited = wait_for_blocking(timeout, what, || {
            if cond(self) {
                return Some(Ok(()));
            }
            self.try_exit().map(Err)
        });
        match waited {
            Ok((Ok(()), took)) => took,
            Ok((Err(status), _)) => panic!(
                "{}: exited ({status}) while waiting for: {what}\n--- log tail ---\n{}",
                self.name,
                self.log_tail(40)
            ),
            Err(e) => panic!("{e}\n--- {} log tail ---\n{}", self.name, self.log_tail(40)),
        }
    }

    /// The admin API port, read from the `gslb-state running ... listen=127.0.0.1:PORT` log
    /// line (text or JSON) once the daemon has bound it.
    pub fn port(&mut self) -> u16 {
        if let Some(p) = self.process.port() {
            return p;
        }
        self.wait(SOON, "the `gslb-state running` log line", |d| {
            d.process.port().is_some()
        });
        self.process.port().expect("waited for")
    }

    /// Waits until the daemon serves its API and is connected to NATS.
    pub fn wait_ready(&mut self) -> &mut Daemon {
        let name = self.name.clone();
        self.port();
        self.wait(SOON, &format!("{name}: /healthz nats_connected"), |d| {
            d.try_json("/healthz")
                .is_some_and(|v| v["nats_connected"] == true)
        });
        self
    }

    /// `METHOD path` with `body`; the status and the body.
    pub fn request(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
        let port = self.port();
        http::request(port, method, path, body, HTTP_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "{}: {method} {path}: {e}\n--- log tail ---\n{}",
                self.name,
                self.log_tail(30)
            )
        })
    }

    /// `GET path` parsed as JSON, `None` on any failure.
    pub fn try_json(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = http::get(self.process.port()?, path, HTTP_TIMEOUT).ok()?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn json(&mut self, path: &str) -> serde_json::Value {
        let (status, body) = self.request("GET", path, "");
        assert_eq!(status, 200, "{}: GET {path}: {body}", self.name);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: GET {path}: not JSON ({e}): {body}", self.name))
    }

    /// `PUT /v1/health/{endpoint}` `{"healthy": healthy}`; must answer 204.
    pub fn put_health(&mut self, endpoint: &str, healthy: bool) {
        let (status, body) = self.request(
            "PUT",
            &format!("/v1/health/{endpoint}"),
            &format!("{{\"healthy\": {healthy}}}"),
        );
        assert_eq!(status, 204, "{}: PUT health {endpoint}: {body}", self.name);
    }

    /// `DELETE /v1/health/{endpoint}`; must answer 204.
    pub fn delete_health(&mut self, endpoint: &str) {
        let (status, body) = self.request("DELETE", &format!("/v1/health/{endpoint}"), "");
        assert_eq!(
            status, 204,
            "{}: DELETE health {endpoint}: {body}",
            self.name
        );
    }

    /// The decision for `endpoint` from `GET /v1/decisions` (`None` if absent or on failure).
    pub fn decision(&self, endpoint: &str) -> Option<serde_json::Value> {
        let v = self.try_json("/v1/decisions")?;
        v["decisions"].get(endpoint).cloned()
    }

    /// The policy `GET /v1/decisions` says is in force.
    pub fn policy(&mut self) -> String {
        self.json("/v1/decisions")["policy"]
            .as_str()
            .expect("policy is a string")
            .to_owned()
    }

    /// `active_members` from `GET /v1/members` (`None` on failure).
    pub fn active_members(&self) -> Option<u64> {
        self.try_json("/v1/members")?["active_members"].as_u64()
    }

    /// `GET /metrics`.
    pub fn metrics(&mut self) -> String {
        let (status, body) = self.request("GET", "/metrics", "");
        assert_eq!(status, 200, "{}: GET /metrics: {body}", self.name);
        body
    }

    /// The value of one series of `/metrics`, written as in the exposition, e.g.
    /// `gslbd_state_nats_published_total{type="heartbeat"}`; `None` if absent.
    pub fn metric(&mut self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// `GET /metrics` and one series of it; `None` on failure or when absent.
    pub fn try_metric(&self, series: &str) -> Option<f64> {
        let (status, text) = http::get(self.process.port()?, "/metrics", HTTP_TIMEOUT).ok()?;
        if status != 200 {
            return None;
        }
        metric_value(&text, series)
    }

    /// Waits until the series `series` of `/metrics` is at least `n`; returns its value.
    pub fn wait_metric_at_least(&mut self, series: &str, n: f64) -> f64 {
        let mut value = None;
        let what = format!("{}: {series} >= {n}", self.name);
        self.wait(SOON, &what, |d| {
            value = d.try_metric(series).filter(|v| *v >= n);
            value.is_some()
        });
        value.expect("waited for")
    }

    /// Waits until `endpoint`'s decision satisfies `cond`; returns it.
    pub fn wait_decision(
        &mut self,
        endpoint: &str,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut found = None;
        let label = format!("{}: decision for {endpoint}: {what}", self.name);
        self.wait(timeout, &label, |d| {
            found = d.decision(endpoint).filter(|v| cond(v));
            found.is_some()
        });
        found.expect("waited for")
    }

    /// Waits until `active_members` is `n`; returns how long it took.
    pub fn wait_members(&mut self, n: u64, timeout: Duration) -> Duration {
        let what = format!("{}: active_members == {n}", self.name);
        self.wait(timeout, &what, |d| d.active_members() == Some(n))
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(SOON);
    }

    /// The ids of the members `GET /v1/members` lists as active, sorted (`None` on failure).
    pub fn active_ids(&self) -> Option<Vec<String>> {
        let v = self.try_json("/v1/members")?;
        let mut ids: Vec<String> = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["active"] == true)
            .filter_map(|m| m["node"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        Some(ids)
    }

    /// The member `node` as `GET /v1/members` lists it.
    pub fn member(&self, node: &str) -> Option<serde_json::Value> {
        let v = self.try_json("/v1/members")?;
        v["members"]
            .as_array()?
            .iter()
            .find(|m| m["node"] == node)
            .cloned()
    }

    /// Sends SIGHUP (reconnect with the certificate files as they are now).
    pub fn sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Sends SIGSTOP: the daemon freezes (no heartbeats, no API) until [`Daemon::cont`].
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Sends SIGCONT.
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.process.pid();
        self.process
            .signal(sig)
            .unwrap_or_else(|e| panic!("kill({pid:?}, {sig}) failed: {e}"));
    }

    /// The exit status if the process has exited (reaped once, remembered).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.process.try_exit()
    }

    /// Waits for the process to exit; returns its status and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let what = format!("{} to exit after the signal", self.name);
        wait_for_blocking(timeout, &what, || self.try_exit()).unwrap_or_else(|e| {
            panic!("{e}\n--- {} log tail ---\n{}", self.name, self.log_tail(30))
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- gslb-state {} log tail ({}) ---\n{}\n--- end of {} log ---",
                self.name,
                self.log.display(),
                self.log_tail(40),
                self.name
            );
        }
    }
}

/// Starts `nodes` daemons from `yamls` and waits until each serves its API, is connected, and
/// sees all of them active.
pub fn start_all(dir: &TestDir, yamls: &[Yaml]) -> Vec<Daemon> {
    let mut daemons: Vec<Daemon> = yamls.iter().map(|y| Daemon::start(dir, y)).collect();
    let n = daemons.len() as u64;
    for d in &mut daemons {
        d.wait_ready();
    }
    for d in &mut daemons {
        d.wait_members(n, SOON);
    }
    daemons
}

/// A decision JSON's fields, for messages.
pub fn show(v: &serde_json::Value) -> String {
    v.to_string()
}

/// Runs `python3 SCRIPT ARGS` and returns stdout; a missing `python3` is a test failure
/// with a clear message, never a skip.
pub fn python3(script: &Path, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}): this test needs Python 3 on PATH to play a non-Rust \
                 NATS client; install it (e.g. apt-get install python3)"
            )
        });
    assert!(
        out.status.success(),
        "python3 {} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Path of a file in `daemon/tests/data/`.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The environment that runs a program with its wall clock `offset` away from the real one
/// (libfaketime, e.g. `"-1h"`), its monotonic clock untouched. Panics with the fix when
/// libfaketime is not installed (`scripts/test` installs Debian's `faketime`).
pub fn faketime_env(offset: &str) -> Vec<(&'static str, String)> {
    // `scripts/ensure-faketime` finds (or installs) it and `scripts/test` exports it.
    const CANDIDATES: [&str; 2] = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ];
    let lib = std::env::var("FAKETIME_LIB")
        .ok()
        .or_else(|| {
            CANDIDATES
                .iter()
                .find(|p| Path::new(p).is_file())
                .map(|p| (*p).to_owned())
        })
        .unwrap_or_else(|| {
            panic!("libfaketime not found: run scripts/ensure-faketime (it installs Debian's faketime) or set FAKETIME_LIB")
        });
    vec![
        ("LD_PRELOAD", lib),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_NO_CACHE", "1".to_owned()),
    ]
}
