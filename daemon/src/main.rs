//! `gslb-state`: the daemon, its config checker, and the config sync and NATS setup tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gslb_state_daemon::tools::{self, ConfigCommand};

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
    /// Play a gslb-sim scenario file on real daemons and nats-servers (on loopback), in real
    /// time, and check its expectations: exit 0 all held, 1 one failed, 2 invalid or not
    /// playable.
    Scenario {
        /// The scenario file.
        file: PathBuf,
        /// JSON lines (events played, expectation verdicts) on stdout; the summary on stderr.
        #[arg(long)]
        json: bool,
    },
    /// Show a running daemon's status (node, NATS, members, verdicts) from its HTTP API.
    ///
    /// The summary (node, NATS, snapshot, policy, config version, counts by verdict), the
    /// members and the endpoints that are down, as tables. Exit 0 all well, 1 the daemon could
    /// not be asked, 2 NATS disconnected, snapshot still loading, or fewer active members than
    /// --min-members.
    Status(gslb_state_daemon::status_cli::StatusArgs),
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
    if let Command::Scenario { file, json } = &cli.command {
        // Blocking work (processes, real time, HTTP polls): no runtime needed.
        return gslb_state_daemon::scenario::run(file, *json);
    }
    if let Command::Status(args) = &cli.command {
        // Its own exit codes (2: degraded), and its own small runtime.
        return gslb_state_daemon::status_cli::main(args);
    }
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
            Command::Run { config } => gslb_state_daemon::run::run(&config).await,
            Command::CheckConfig { file } => tools::check_config(&file),
            Command::Config(c) => tools::config_command(c).await,
            Command::Bootstrap { config } => tools::bootstrap(&config).await,
            Command::Permissions { config, node } => tools::permissions(&config, node),
            Command::Scenario { .. } => unreachable!("played above"),
            Command::Status(_) => unreachable!("run above"),
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
