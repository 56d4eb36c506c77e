//! `gslb-state run`: the daemon an operator runs. It reads the guide's configuration file,
//! starts the driver, runs the built-in probes, serves the HTTP API and metrics, applies config
//! sync versions, and drains on SIGTERM.

use std::path::Path;
use std::sync::{Arc, RwLock};

use gslb_state_core::config::{Config, ConfigError, DEFAULT_ADMIN_LISTEN, NatsSettings};
use tokio::signal::unix::{SignalKind, signal};

use crate::handle::{Event, Handle, NodeOptions};
use crate::probe::Probes;

/// Reads and validates a configuration file; errors name the file, the line and the key.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    Config::from_yaml(&text).map_err(|e| describe_config_error(path, &e))
}

/// One line per problem: `FILE: line N: key: message`.
pub fn describe_config_error(path: &Path, e: &ConfigError) -> String {
    e.problems
        .iter()
        .map(|p| format!("{}: {p}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
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
    // Subscribed before the driver starts: the config snapshot can be applied by the core
    // before a later `subscribe` would be in place, and its endpoints and policy name would
    // then never be applied here.
    let (node, mut events) = Handle::start_with_events(options).map_err(|e| e.to_string())?;
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
    let mut applied_version = 0u64;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: draining"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: draining"); break; }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reconnecting with the certificate files as they are now");
                node.reload_tls();
            }
            event = events.recv() => {
                let desired = match event {
                    Ok(Event::ConfigApplied { version, config: desired, .. }) => Some((version, desired)),
                    Ok(_) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // A storm of decision events pushed ours out: catch up on the config.
                        tracing::warn!(missed = n, "event subscriber fell behind");
                        node.applied_config()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if let Some((version, desired)) = desired.filter(|(v, _)| *v > applied_version) {
                    applied_version = version;
                    let result = apply_desired(&config, &desired, &mut probes, &policy).await;
                    let _ = node.config_applied(version, result);
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

/// Applies the run-time part of a pushed configuration within `config.applyTimeout`.
async fn apply_desired(
    running: &Config,
    desired: &Config,
    probes: &mut Probes,
    policy: &RwLock<String>,
) -> Result<(), String> {
    let timeout = running
        .config_sync
        .as_ref()
        .map(|c| c.apply_timeout)
        .unwrap_or(gslb_state_core::config::DEFAULT_APPLY_TIMEOUT);
    let restart = restart_only_changes(running, desired);
    if !restart.is_empty() {
        tracing::warn!(
            keys = ?restart,
            "the pushed config changes settings that need a restart: they are read from this \
             node's own config file at start-up, so change them there and restart; the running \
             values stay in force"
        );
    }
    let apply = async {
        probes.apply(&desired.endpoints);
        if let Ok(mut p) = policy.write() {
            *p = desired.state.policy.to_string();
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
