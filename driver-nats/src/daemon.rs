//! `gslb-state run`: the daemon an operator runs. It reads the guide's configuration file,
//! starts the driver, runs the built-in probes, serves the HTTP API and metrics, applies config
//! sync versions, and drains on SIGTERM.

use std::path::Path;
use std::sync::{Arc, RwLock};

use gslb_state_core::config::{Config, ConfigError, DEFAULT_ADMIN_LISTEN, NatsSettings};
use tokio::signal::unix::{SignalKind, signal};

use crate::handle::{Handle, NodeOptions};
use crate::probe::Probes;

/// Reads and validates a configuration file; errors name the file, the line and the key.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    Config::from_yaml(&text).map_err(|e| describe_config_error(path, &e))
}

/// Most problems `check-config` lists one per line before saying how many more there are.
pub const MAX_PROBLEM_LINES: usize = 50;

/// One line per problem: `FILE: line N: key: message` (at most [`MAX_PROBLEM_LINES`], then
/// `FILE: and M more problems`).
pub fn describe_config_error(path: &Path, e: &ConfigError) -> String {
    let mut lines: Vec<String> = e
        .problems
        .iter()
        .take(MAX_PROBLEM_LINES)
        .map(|p| format!("{}: {p}", path.display()))
        .collect();
    let more = e.problems.len().saturating_sub(MAX_PROBLEM_LINES);
    if more > 0 {
        lines.push(format!("{}: and {more} more problems", path.display()));
    }
    lines.join("\n")
}

/// This host's name, as the default `node.id`.
pub fn host_name() -> String {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "gslb-node".to_owned());
    let mut end = name.len().min(gslb_state_core::names::MAX_ID_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// Which settings of a pushed configuration take effect at run time, and which need a restart.
///
/// At run time: `state.healthPolicy`, `state.quorumMinPercent`, `state.heartbeatInterval`,
/// `state.heartbeatTTL` (applied by the core) and `endpoints` (probes started and stopped here).
/// Per node, read from the local file at start: `node.*`, `nats.*`, `config.*`, `admin.*`,
/// `state.enableConfigSync`. A pushed value for those that differs from the running one is
/// reported and otherwise ignored.
pub fn restart_only_changes(running: &Config, desired: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if desired.node_id.is_some() && desired.node_id != running.node_id {
        out.push("node.id");
    }
    if !desired.region.is_empty() && desired.region != running.region {
        out.push("node.region");
    }
    if desired.nats != NatsSettings::default() && desired.nats != running.nats {
        out.push("nats");
    }
    if desired.config_sync.is_some() && desired.config_sync != running.config_sync {
        out.push("config");
    }
    if desired.admin_listen != DEFAULT_ADMIN_LISTEN && desired.admin_listen != running.admin_listen
    {
        out.push("admin.listen");
    }
    if desired.state.enable_config_sync != running.state.enable_config_sync
        && desired.config_sync.is_some()
    {
        out.push("state.enableConfigSync");
    }
    out
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<(), String> {
    let config = load_config(config_path)?;
    let node_id = config.node_id.clone().unwrap_or_else(host_name);
    let options = NodeOptions {
        node_id: node_id.clone(),
        ..NodeOptions::new(config.clone(), &node_id)
    };
    let listener = tokio::net::TcpListener::bind(&config.admin_listen)
        .await
        .map_err(|e| {
            format!(
                "admin.listen: cannot listen on {}: {e}",
                config.admin_listen
            )
        })?;
    // The address actually bound: `admin.listen` may ask for port 0 (any free port).
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.admin_listen.clone());
    let node = Handle::start(NodeOptions {
        confirm_config: true,
        ..options
    })
    .map_err(|e| e.to_string())?;
    // The configuration config sync wants in force: a watch channel keeps the latest state, so
    // nothing that happened before this line, or while the daemon was busy, is lost.
    let mut config_state = node.config_state();
    config_state.mark_changed();
    let node = Arc::new(node);
    let policy = Arc::new(RwLock::new(config.state.policy.to_string()));
    let mut probes = Probes::new(node.clone());
    probes.apply(&config.endpoints);
    tracing::info!(
        node = %node_id,
        cluster = %config.cluster_id,
        listen = %listen,
        endpoints = config.endpoints.len(),
        probes = probes.len(),
        "gslb-state running"
    );
    let app = crate::http::router(node.clone(), policy.clone());
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reconnecting with the certificate files as they are now");
                node.reload_tls();
            }
            changed = config_state.changed() => {
                if changed.is_err() {
                    break;
                }
                let state = config_state.borrow_and_update().clone();
                // `None`: nothing from config sync, or rolled back to the node's own file.
                let desired = state.config.clone().unwrap_or_else(|| Arc::new(config.clone()));
                let result = apply_desired(&config, &desired, &mut probes, &policy, state.applying).await;
                if state.applying {
                    let _ = node.config_applied(state.version, result);
                } else if let Err(e) = result {
                    tracing::error!(version = state.version, error = %e, "restoring the endpoints of the config in force failed");
                }
            }
        }
    }
    probes.stop();
    let _ = stop_http.send(());
    let _ = server.await;
    node.shutdown().await;
    drop(probes);
    drop(node);
    tracing::info!("gslb-state stopped");
    Ok(())
}

/// For tests of the failure path: applying a pushed version (not a restore) waits this many
/// milliseconds after starting its probes, so that `config.applyTimeout` runs out part-way.
pub const APPLY_DELAY_ENV: &str = "GSLB_STATE_TEST_APPLY_DELAY_MS";

/// Applies the run-time part of a configuration: a pushed version being applied (`applying`,
/// within `config.applyTimeout`), or the version in force again after a rollback.
async fn apply_desired(
    running: &Config,
    desired: &Config,
    probes: &mut Probes,
    policy: &RwLock<String>,
    applying: bool,
) -> Result<(), String> {
    let timeout = running
        .config_sync
        .as_ref()
        .map(|c| c.apply_timeout)
        .unwrap_or(gslb_state_core::config::DEFAULT_APPLY_TIMEOUT);
    let restart = restart_only_changes(running, desired);
    if applying && !restart.is_empty() {
        tracing::warn!(
            keys = ?restart,
            "the pushed config changes settings that need a restart: they are read from this \
             node's own config file at start-up, so change them there and restart; the running \
             values stay in force"
        );
    }
    let delay_ms = std::env::var(APPLY_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| applying);
    let apply = async {
        probes.apply(&desired.endpoints);
        if let Ok(mut p) = policy.write() {
            *p = desired.state.policy.to_string();
        }
        if let Some(ms) = delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        tokio::task::yield_now().await;
        Ok(())
    };
    tokio::time::timeout(timeout, apply)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "not applied within config.applyTimeout ({timeout:?})"
            ))
        })
}
