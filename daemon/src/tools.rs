//! The operator's tools: `check-config`, `config push|get|history`, `permissions` and
//! `bootstrap`. Errors are one line per problem, naming the file and the key.

use std::path::{Path, PathBuf};

use gslb_state_core::Config;
use gslb_state_nats::{ConfigStore, ConfigStoreError};

use crate::config_file::{describe_config_error, host_name, load_config};

/// `gslb-state config ...`.
#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate DESIRED and write it as the cluster's new desired configuration.
    Push {
        /// This node's configuration file (NATS servers, TLS, config.kvBucket, cluster.id).
        #[arg(long, default_value = "/etc/gslb/config.yaml")]
        config: PathBuf,
        /// The desired configuration (YAML).
        desired: PathBuf,
        /// Write it even if it does not validate (to test that nodes reject it).
        #[arg(long)]
        no_validate: bool,
    },
    /// Print the cluster's desired configuration (the version goes to stderr).
    Get {
        /// This node's configuration file.
        #[arg(long, default_value = "/etc/gslb/config.yaml")]
        config: PathBuf,
    },
    /// List the versions kept of the cluster's desired configuration.
    History {
        /// This node's configuration file.
        #[arg(long, default_value = "/etc/gslb/config.yaml")]
        config: PathBuf,
    },
}

/// `gslb-state check-config FILE`: validates the file and prints what it says.
pub fn check_config(path: &Path) -> Result<(), String> {
    let c = load_config(path)?;
    let node = c
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{} (host name)", host_name()));
    println!(
        "{}: valid: cluster={} node={} policy={} quorumMinPercent={} heartbeatInterval={:?} heartbeatTTL={:?} endpoints={} configSync={} quorumScope={} holdUp={} holdDown={}",
        path.display(),
        c.cluster_id,
        node,
        c.state.policy,
        c.state.quorum_min_percent,
        c.state.heartbeat_interval,
        c.state.heartbeat_ttl,
        c.endpoints.len(),
        c.state.enable_config_sync,
        c.state.quorum_scope,
        humantime::format_duration(c.state.hold_up)
            .to_string()
            .replace(' ', ""),
        humantime::format_duration(c.state.hold_down)
            .to_string()
            .replace(' ', ""),
    );
    if let Some(cs) = &c.config_sync
        && cs.stream_name_was_mapped()
    {
        println!(
            "{}: note: config.stream {:?} is not a legal NATS stream name; {:?} is used",
            path.display(),
            cs.stream,
            cs.stream_name()
        );
    }
    Ok(())
}

/// `gslb-state bootstrap`: creates the cluster's buckets (and stream) when absent.
pub async fn bootstrap(path: &Path) -> Result<(), String> {
    let config = load_config(path)?;
    let client = gslb_state_nats::connect(&config, "gslb-state bootstrap")
        .await
        .map_err(|e| e.to_string())?;
    for name in gslb_state_nats::bootstrap(&client, &config)
        .await
        .map_err(|e| e.to_string())?
    {
        println!("ready: {name}");
    }
    Ok(())
}

/// `gslb-state permissions`: prints the nats-server permissions a node needs.
pub fn permissions(path: &Path, node: Option<String>) -> Result<(), String> {
    let config = load_config(path)?;
    let node = node
        .or_else(|| config.node_id.clone())
        .unwrap_or_else(host_name);
    let p = gslb_state_nats::security::node_permissions(&config, &node);
    if config.nats.inbox_prefix == gslb_state_core::config::DEFAULT_INBOX_PREFIX {
        eprintln!(
            "warning: {}: nats.inboxPrefix is the shared default {:?}: every node given these \
             permissions could read every other's replies; set it to \"_INBOX_{}\"",
            path.display(),
            config.nats.inbox_prefix,
            gslb_state_core::names::encode_token(&node)
        );
    }
    println!(
        "# nats-server permissions of node {node:?} of cluster {:?}\npermissions: {}",
        config.cluster_id,
        p.to_conf(0)
    );
    Ok(())
}

/// `gslb-state config push|get|history`.
pub async fn config_command(command: ConfigCommand) -> Result<(), String> {
    let (ConfigCommand::Push { config, .. }
    | ConfigCommand::Get { config }
    | ConfigCommand::History { config }) = &command;
    let config = config.clone();
    let local = load_config(&config)?;
    if local.config_sync.is_none() {
        return Err(format!(
            "{}: {}",
            config.display(),
            ConfigStoreError::NotConfigured
        ));
    }
    let client = gslb_state_nats::connect(&local, "gslb-state config")
        .await
        .map_err(|e| e.to_string())?;
    let store = ConfigStore::open(&client, &local)
        .await
        .map_err(|e| e.to_string())?;
    match command {
        ConfigCommand::Push {
            desired,
            no_validate,
            ..
        } => {
            let text = std::fs::read(&desired)
                .map_err(|e| format!("{}: cannot read: {e}", desired.display()))?;
            if !no_validate {
                let parsed = Config::from_yaml_bytes(&text)
                    .map_err(|e| describe_config_error(&desired, &e))?;
                if parsed.cluster_id != local.cluster_id {
                    return Err(format!(
                        "{}: cluster.id is {:?} but {} belongs to {:?}",
                        desired.display(),
                        parsed.cluster_id,
                        config.display(),
                        local.cluster_id
                    ));
                }
            }
            let version = store.push(text.into()).await.map_err(|e| e.to_string())?;
            println!("pushed cluster={} version={version}", local.cluster_id);
            Ok(())
        }
        ConfigCommand::Get { .. } => match store.latest().await.map_err(|e| e.to_string())? {
            Some((version, yaml)) => {
                eprintln!("cluster={} version={version}", local.cluster_id);
                print!("{}", String::from_utf8_lossy(&yaml));
                Ok(())
            }
            None => Err(format!(
                "no desired config for cluster {:?} yet",
                local.cluster_id
            )),
        },
        ConfigCommand::History { .. } => {
            let history = store.history().await.map_err(|e| e.to_string())?;
            println!("version\tcreated\tbytes\tvalid");
            for v in &history {
                let valid = if v.deleted {
                    "deleted".to_owned()
                } else {
                    match Config::from_yaml_bytes(&v.yaml) {
                        Ok(c) if c.cluster_id == local.cluster_id => "yes".to_owned(),
                        Ok(c) => format!("no: cluster.id is {:?}", c.cluster_id),
                        Err(e) => format!("no: {e}"),
                    }
                };
                let created =
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.created_unix_ms);
                println!(
                    "{}\t{}\t{}\t{valid}",
                    v.version,
                    humantime::format_rfc3339_millis(created),
                    v.yaml.len()
                );
            }
            if history.is_empty() {
                println!("(none)");
            }
            Ok(())
        }
    }
}
