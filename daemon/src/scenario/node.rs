//! One scenario node played for real: its configuration file, its daemon process (one per
//! life), its wall clock through libfaketime, and what its probes see.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gslb_state_sim::clock::Clock;
use gslb_state_sim::scenario::{NS_PER_MS, NodeSpec};
use gslb_state_tests::DaemonProcess;

/// How long a (re)started daemon may take to serve its API.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// One node: what survives its crashes, and its running process.
pub(super) struct Node {
    pub(super) id: String,
    config: PathBuf,
    /// The wall clock the scenario gives it (offset and drift from true time).
    clock: Clock,
    /// libfaketime's timestamp file, when the node's clock is ever off.
    faketime: Option<PathBuf>,
    /// When (scenario time) the running process started: libfaketime's drift counts from it.
    started_ns: u64,
    /// What its probes see now.
    pub(super) observations: BTreeMap<String, bool>,
    pub(super) process: Option<DaemonProcess>,
}

impl Node {
    /// A node of `spec`, configured by the file at `config`; `faketime` when its clock is ever
    /// anything but exact.
    pub(super) fn new(spec: &NodeSpec, config: PathBuf, faketime: Option<PathBuf>) -> Node {
        Node {
            id: spec.id.clone(),
            config,
            clock: Clock::new(spec.clock_offset_ms, spec.drift_ppb),
            faketime,
            started_ns: 0,
            observations: BTreeMap::new(),
            process: None,
        }
    }

    /// Whether its daemon runs.
    pub(super) fn running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.try_exit().is_none())
    }

    /// Its admin port while it runs.
    pub(super) fn port(&mut self) -> Option<u16> {
        if !self.running() {
            return None;
        }
        self.process.as_mut().and_then(|p| p.port())
    }

    /// Starts its daemon at scenario time `t_ns` and waits until it serves its API; then
    /// tells it what its probes see.
    pub(super) fn start(
        &mut self,
        bin: &Path,
        log_dir: &Path,
        faketime_lib: Option<&str>,
        t_ns: u64,
    ) -> Result<(), String> {
        self.started_ns = t_ns;
        let mut env: Vec<(&str, String)> = Vec::new();
        if let Some(file) = &self.faketime {
            let lib = faketime_lib.ok_or("libfaketime is needed for this node's clock")?;
            self.write_clock(t_ns)?;
            env.push(("LD_PRELOAD", lib.to_owned()));
            env.push(("FAKETIME_TIMESTAMP_FILE", file.display().to_string()));
            env.push(("FAKETIME_NO_CACHE", "1".to_owned()));
            env.push(("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let process = DaemonProcess::spawn(bin, &self.id, &self.config, &[], &env, log_dir)
            .map_err(|e| format!("{}: cannot start gslb-state: {e}", self.id))?;
        self.process = Some(process);
        let waited = gslb_state_tests::wait_for_blocking(
            START_TIMEOUT,
            &format!("{} to serve its API", self.id),
            &mut || self.port(),
        );
        if let Err(e) = waited {
            let tail = self
                .process
                .as_ref()
                .map(|p| p.log_tail(20))
                .unwrap_or_default();
            return Err(format!("{e}\n--- {} log tail ---\n{tail}", self.id));
        }
        let observations: Vec<(String, bool)> = self
            .observations
            .iter()
            .map(|(e, h)| (e.clone(), *h))
            .collect();
        for (endpoint, healthy) in observations {
            self.tell(&endpoint, Some(healthy));
        }
        Ok(())
    }

    /// Its probe sees `endpoint` so (remembered across restarts); told to the daemon if it
    /// runs.
    pub(super) fn observe(&mut self, endpoint: &str, healthy: Option<bool>) {
        match healthy {
            Some(h) => self.observations.insert(endpoint.to_owned(), h),
            None => self.observations.remove(endpoint),
        };
        if self.running() {
            self.tell(endpoint, healthy);
        }
    }

    fn tell(&mut self, endpoint: &str, healthy: Option<bool>) {
        let Some(p) = self.process.as_mut() else {
            return;
        };
        let path = format!("/v1/health/{endpoint}");
        let result = match healthy {
            Some(h) => p.request("PUT", &path, &format!("{{\"healthy\": {h}}}")),
            None => p.request("DELETE", &path, ""),
        };
        if !matches!(result, Ok((204, _))) {
            eprintln!(
                "gslb-state scenario: {}: telling {endpoint} = {healthy:?}: {result:?}",
                self.id
            );
        }
    }

    /// SIGKILL.
    pub(super) fn crash(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.kill();
        }
    }

    /// SIGTERM (a graceful leave), waiting for the process to end.
    pub(super) fn leave(&mut self) {
        let Some(p) = self.process.as_mut() else {
            return;
        };
        let _ = p.signal(libc::SIGTERM);
        let _ = gslb_state_tests::wait_until_blocking(
            Duration::from_secs(10),
            "the daemon to leave",
            &mut || p.try_exit().is_some(),
        );
        p.kill();
    }

    /// From scenario time `t_ns` on, its wall clock is `offset_ms` (or the current offset)
    /// from true time, drifting `drift_ppb`; a running daemon's clock changes at once.
    pub(super) fn set_clock(
        &mut self,
        t_ns: u64,
        offset_ms: Option<i64>,
        drift_ppb: i64,
    ) -> Result<(), String> {
        self.clock.set(t_ns, offset_ms, drift_ppb);
        self.write_clock(t_ns)
    }

    /// Steps its wall clock to `offset_ms` from true time at `t_ns`, keeping its drift (a
    /// restart with its clock stepped).
    pub(super) fn step_clock(&mut self, t_ns: u64, offset_ms: i64) {
        self.clock.step_to(t_ns, offset_ms);
    }

    /// Writes libfaketime's spec so that the daemon's wall clock follows the scenario's from
    /// `t_ns` on: libfaketime gives `true + offset + (t − process start) × (rate − 1)`.
    fn write_clock(&self, t_ns: u64) -> Result<(), String> {
        let Some(file) = &self.faketime else {
            return Ok(());
        };
        let rate = 1.0 + self.clock.drift_ppb() as f64 / 1e9;
        let since_start_s = (t_ns.saturating_sub(self.started_ns) / NS_PER_MS) as f64 / 1000.0;
        let offset_s = self.clock.offset_at_ms(t_ns) as f64 / 1000.0 - since_start_s * (rate - 1.0);
        let spec = if rate == 1.0 {
            format!("{offset_s:+.3}s")
        } else {
            format!("{offset_s:+.3}s x{rate:.9}")
        };
        std::fs::write(file, format!("{spec}\n"))
            .map_err(|e| format!("{}: cannot write {}: {e}", self.id, file.display()))
    }
}
