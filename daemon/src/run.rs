//! `gslb-state run`: the daemon an operator runs. It reads the guide's configuration file,
//! starts the driver, runs the built-in probes, serves the HTTP API and metrics, applies config
//! sync versions, and drains on SIGTERM.

use std::path::Path;
use std::sync::Arc;

use gslb_state_core::config::Config;
use gslb_state_nats::{Handle, NodeOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::config_file::{host_name, load_config, restart_only_changes};
use crate::probe::Probes;

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
    let app = crate::http::router(node.clone());
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
                let result = apply_desired(&config, &desired, &mut probes, state.applying).await;
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
