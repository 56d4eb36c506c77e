//! `gslb-state`: the daemon, its config checker, and the config sync tool.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use gslb_state_core::Config;
use gslb_state_core::names::encode_token;
use gslb_state_nats::config_sync;
use gslb_state_nats::daemon::{describe_config_error, host_name, load_config};

/// Health and membership state sync for GSLB nodes over NATS JetStream.
#[derive(Parser)]
#[command(name = "gslb-state", version)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The configuration file (the guide's YAML).
        #[arg(long, default_value = "/etc/gslb/config.yaml")]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 valid, 1 invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Read or write the desired configuration distributed by config sync.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create the cluster's KV buckets (and, with config sync, the config bucket and event
    /// stream) when absent; run once with administrator credentials (SECURITY.md).
    Bootstrap {
        /// A configuration file of the cluster, with administrator credentials.
        #[arg(long, default_value = "/etc/gslb/config.yaml")]
        config: PathBuf,
    },
    /// Print the nats-server permissions a node needs, and no more (SECURITY.md).
    Permissions {
        /// The node's configuration file.
        #[arg(long, default_value = "/etc/gslb/config.yaml")]
        config: PathBuf,
        /// The node id, when the file has no `node.id` (default: the host name).
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
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

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    init_logs(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => gslb_state_nats::daemon::run(&config).await,
            Command::CheckConfig { file } => check_config(&file),
            Command::Config(c) => config_command(c).await,
            Command::Bootstrap { config } => bootstrap(&config).await,
            Command::Permissions { config, node } => permissions(&config, node),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match log_format {
                LogFormat::Text => eprintln!("error: {e}"),
                // Keep stderr one JSON object per line for log shippers: one event per problem.
                LogFormat::Json => {
                    for line in e.lines() {
                        tracing::error!("{line}");
                    }
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> Result<(), String> {
    let c = load_config(path)?;
    let node = c
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{} (host name)", host_name()));
    println!(
        "{}: valid: cluster={} node={} policy={} quorumMinPercent={} heartbeatInterval={:?} heartbeatTTL={:?} endpoints={} configSync={}",
        path.display(),
        c.cluster_id,
        node,
        c.state.policy,
        c.state.quorum_min_percent,
        c.state.heartbeat_interval,
        c.state.heartbeat_ttl,
        c.endpoints.len(),
        c.state.enable_config_sync,
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

async fn bootstrap(path: &Path) -> Result<(), String> {
    let config = load_config(path)?;
    let client = gslb_state_nats::connect(&config, "gslb-state bootstrap").await?;
    for name in gslb_state_nats::bootstrap(&client, &config).await? {
        println!("ready: {name}");
    }
    Ok(())
}

fn permissions(path: &Path, node: Option<String>) -> Result<(), String> {
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

async fn config_command(command: ConfigCommand) -> Result<(), String> {
    let (ConfigCommand::Push { config, .. }
    | ConfigCommand::Get { config }
    | ConfigCommand::History { config }) = &command;
    let config = config.clone();
    let local = load_config(&config)?;
    let settings = local.config_sync.clone().ok_or_else(|| {
        format!(
            "{}: config: the config section (config.kvBucket, ...) is needed for config sync",
            config.display()
        )
    })?;
    let key = encode_token(&local.cluster_id);
    let client = gslb_state_nats::connect(&local, "gslb-state config").await?;
    let js = gslb_state_nats::jetstream_context(&client, &local);
    let store = config_sync::open_bucket(&js, &settings)
        .await
        .map_err(|e| format!("config.kvBucket {}: {e}", settings.kv_bucket))?;
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
            let version = store
                .put(&key, text.into())
                .await
                .map_err(|e| format!("writing the desired config: {e}"))?;
            // Tell the nodes at once (and record the event); they would find it anyway.
            let event =
                serde_json::json!({ "cluster": local.cluster_id, "version": version }).to_string();
            let subject = format!("{}.{}", settings.subject_prefix, key);
            if config_sync::open_event_stream(&js, &settings).await.is_ok() {
                if let Ok(ack) = js.publish(subject.clone(), event.clone().into()).await {
                    let _ = ack.await;
                }
            } else {
                let _ = client.publish(subject, event.into()).await;
            }
            let _ = client.flush().await;
            println!("pushed cluster={} version={version}", local.cluster_id);
            Ok(())
        }
        ConfigCommand::Get { .. } => match config_sync::latest(&store, &key).await? {
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
            let mut history = store
                .history(&key)
                .await
                .map_err(|e| format!("reading the history: {e}"))?;
            println!("version\tcreated\tbytes\tvalid");
            let mut any = false;
            while let Some(entry) = history.next().await {
                let entry = entry.map_err(|e| format!("reading the history: {e}"))?;
                any = true;
                let valid = match entry.operation {
                    async_nats::jetstream::kv::Operation::Put => {
                        match Config::from_yaml_bytes(&entry.value) {
                            Ok(c) if c.cluster_id == local.cluster_id => "yes".to_owned(),
                            Ok(c) => format!("no: cluster.id is {:?}", c.cluster_id),
                            Err(e) => format!("no: {e}"),
                        }
                    }
                    op => format!("{op:?}"),
                };
                println!(
                    "{}\t{}\t{}\t{valid}",
                    entry.revision,
                    entry.created,
                    entry.value.len()
                );
            }
            if !any {
                println!("(none)");
            }
            Ok(())
        }
    }
}
