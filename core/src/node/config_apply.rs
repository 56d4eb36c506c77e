//! Pushed configurations (config sync): versions only move forward; a valid version's `state.*`
//! is put in force at once, and the version is committed when the driver confirms it applied
//! the rest within `config.applyTimeout` — otherwise it is rolled back whole.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, StateSettings};
use crate::output::Output;
use crate::time::Instant;

use super::Node;

/// A version being applied.
#[derive(Debug)]
struct Pending {
    version: u64,
    config: Arc<Config>,
    deadline: Instant,
    /// The `state.*` in force before it, restored if it fails.
    previous_state: StateSettings,
}

/// Where config sync stands.
#[derive(Debug)]
pub(super) struct ConfigApply {
    /// The version in force (0 = the node's own file) and its configuration.
    committed: (u64, Option<Arc<Config>>),
    pending: Option<Pending>,
    /// The newest valid version that arrived while another was being applied.
    queued: Option<(u64, Arc<Config>)>,
    timeout: Duration,
    confirm: bool,
}

impl ConfigApply {
    pub(super) fn new(timeout: Duration, confirm: bool) -> Self {
        ConfigApply {
            committed: (0, None),
            pending: None,
            queued: None,
            timeout,
            confirm,
        }
    }

    pub(super) fn committed_version(&self) -> u64 {
        self.committed.0
    }

    /// When the version being applied runs out of time.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    /// The newest version known: committed, being applied, or waiting.
    fn newest_version(&self) -> u64 {
        let pending = self.pending.as_ref().map_or(0, |p| p.version);
        let queued = self.queued.as_ref().map_or(0, |q| q.0);
        self.committed.0.max(pending).max(queued)
    }
}

impl Node {
    pub(super) fn on_config_entry(&mut self, version: u64, yaml: &[u8]) {
        let newest = self.config.newest_version();
        if version <= newest {
            self.stats.config_ignored += 1;
            self.push(Output::ConfigIgnored {
                version,
                current: newest,
            });
            return;
        }
        let config = match Config::from_yaml_bytes(yaml) {
            Ok(c) if c.cluster_id == self.names.cluster_id() => c,
            Ok(c) => {
                let error = format!(
                    "cluster.id is {:?}, this node belongs to {:?}",
                    c.cluster_id,
                    self.names.cluster_id()
                );
                self.reject_config(version, error);
                return;
            }
            Err(e) => {
                self.reject_config(version, e.to_string());
                return;
            }
        };
        let config = Arc::new(config);
        if self.config.pending.is_some() {
            self.config.queued = Some((version, config));
        } else {
            self.start_apply(version, config);
        }
    }

    fn reject_config(&mut self, version: u64, error: String) {
        self.stats.config_rejected += 1;
        self.push(Output::ConfigRejected { version, error });
    }

    /// Puts `config`'s `state.*` in force and hands the rest to the driver.
    fn start_apply(&mut self, version: u64, config: Arc<Config>) {
        let previous_state = self.state.clone();
        self.apply_state(config.state.clone());
        self.push(Output::ApplyConfig {
            version,
            config: config.clone(),
        });
        if self.config.confirm {
            self.config.pending = Some(Pending {
                version,
                config,
                deadline: self.now + self.config.timeout,
                previous_state,
            });
        } else {
            self.commit_config(version, config);
        }
    }

    fn commit_config(&mut self, version: u64, config: Arc<Config>) {
        self.config.committed = (version, Some(config));
        self.stats.config_applied += 1;
        self.push(Output::ConfigCommitted { version });
    }

    pub(super) fn on_config_applied(&mut self, version: u64, result: Result<(), String>) {
        if self.config.pending.as_ref().map(|p| p.version) != Some(version) {
            return;
        }
        let pending = self.config.pending.take().expect("checked above");
        match result {
            Ok(()) => self.commit_config(pending.version, pending.config),
            Err(error) => self.fail_config(pending, error),
        }
        self.next_queued_config();
    }

    /// Runs out the version being applied if its time is up.
    pub(super) fn config_timeout(&mut self) {
        let Some(deadline) = self.config.deadline() else {
            return;
        };
        if self.now < deadline {
            return;
        }
        let pending = self.config.pending.take().expect("a deadline is pending's");
        let error = format!(
            "not applied within config.applyTimeout ({})",
            humantime::format_duration(self.config.timeout)
        );
        self.fail_config(pending, error);
        self.next_queued_config();
    }

    /// Rolls `pending` back whole: the `state.*` in force before it returns, and the driver
    /// restores the committed version's endpoints.
    fn fail_config(&mut self, pending: Pending, error: String) {
        self.apply_state(pending.previous_state);
        self.stats.config_failed += 1;
        let restore = self.config.committed.1.clone();
        self.push(Output::ConfigFailed {
            version: pending.version,
            error,
            restore,
        });
    }

    fn next_queued_config(&mut self) {
        if let Some((version, config)) = self.config.queued.take() {
            self.start_apply(version, config);
        }
    }
}
