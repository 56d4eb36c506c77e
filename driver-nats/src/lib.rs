//! # gslb-state-nats
//!
//! Binds [`gslb_state_core`] to NATS JetStream with async-nats: heartbeats and health changes on
//! core subjects under `gslb.<cluster>.`, reports and membership records in per-cluster KV
//! buckets, a snapshot at start-up, re-syncs of one member when a heartbeat shows a gap,
//! anti-entropy, reconnects, TLS and mTLS, and Prometheus metrics with the operator guide's names.
//!
//! The driver owns a tokio runtime on its own thread (async-nats needs tokio), so the embedding
//! program may use any runtime, or none: [`Handle`] talks to it through runtime-neutral channels.
//!
//! ```no_run
//! use gslb_state_core::Config;
//! use gslb_state_nats::{Event, Handle, NodeOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_yaml(&std::fs::read_to_string("/etc/gslb/config.yaml")?)?;
//! let node = Handle::start(NodeOptions::new(config, "eu-1"))?;
//!
//! // Local health in, from the daemon's own probes.
//! node.set_health("www.example.com", Some(true))?;
//!
//! // Decisions out: a cheap lookup for every DNS answer...
//! if let Some(d) = node.decision("www.example.com") {
//!     println!("{:?} because {} ({}/{} healthy)", d.healthy, d.source, d.healthy_reports, d.total_reports);
//! }
//! // ...and a stream of changes.
//! let mut events = node.subscribe();
//! while let Ok(event) = events.recv().await {
//!     if let Event::Decision { endpoint, decision } = event {
//!         println!("{endpoint} is now {:?}", decision.healthy);
//!     }
//! }
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod clock;
pub mod config_sync;
mod connect;
pub mod daemon;
mod driver;
mod handle;
pub mod http;
mod kv;
pub mod metrics;
pub mod probe;
pub mod security;

pub use connect::ConnectSetupError;
pub use handle::{ConfigState, EVENT_BUFFER, Event, Handle, NodeOptions, StartError, Stopped};
pub use metrics::Metrics;

/// Opens the JetStream context `config` names (with its domain), for tools such as
/// `gslb-state config push`.
pub fn jetstream_context(
    client: &async_nats::Client,
    config: &gslb_state_core::Config,
) -> async_nats::jetstream::Context {
    driver::jetstream_context(client, config)
}

/// Creates what the nodes of `config`'s cluster use, when absent: the members and health
/// buckets and, with config sync on, the config bucket and its event stream. For
/// `gslb-state bootstrap`, run once with administrator credentials where nodes are not allowed
/// to create them (SECURITY.md). Returns the names, in that order.
pub async fn bootstrap(
    client: &async_nats::Client,
    config: &gslb_state_core::Config,
) -> Result<Vec<String>, String> {
    let js = jetstream_context(client, config);
    let names = gslb_state_core::Names::new(&config.cluster_id);
    let mut made = Vec::new();
    for bucket in [
        gslb_state_core::Bucket::Members,
        gslb_state_core::Bucket::Health,
    ] {
        let name = names.bucket(bucket);
        kv::ensure_bucket(&js, name)
            .await
            .map_err(|e| format!("KV bucket {name}: {e}"))?;
        made.push(name.to_owned());
    }
    if config.state.enable_config_sync
        && let Some(settings) = &config.config_sync
    {
        config_sync::open_bucket(&js, settings)
            .await
            .map_err(|e| format!("config.kvBucket {}: {e}", settings.kv_bucket))?;
        made.push(settings.kv_bucket.clone());
        config_sync::open_event_stream(&js, settings)
            .await
            .map_err(|e| format!("config.stream {}: {e}", settings.stream_name()))?;
        made.push(settings.stream_name());
    }
    Ok(made)
}

/// Connects a plain client with `config`'s servers, TLS and credentials (for tools); fails
/// with the last connection error when no server answers within a few tries.
pub async fn connect(
    config: &gslb_state_core::Config,
    name: &str,
) -> Result<async_nats::Client, String> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let errors = std::sync::Arc::new(connect::ConnectErrors::default());
    let options = connect::options(&config.nats, name, tx, errors.clone())
        .await
        .map_err(|e| e.to_string())?;
    let client = options
        .connect(config.nats.servers.clone())
        .await
        .map_err(|e| e.to_string())?;
    // The options keep retrying in the background; a tool should give up instead.
    let patience = (config.nats.connect_timeout * 3).max(std::time::Duration::from_secs(5))
        * u32::try_from(config.nats.servers.len().max(1)).unwrap_or(u32::MAX);
    let deadline = tokio::time::Instant::now() + patience;
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            let why = errors.last().unwrap_or_else(|| "no answer".to_owned());
            return Err(format!(
                "cannot reach any of nats.servers {:?} within {patience:?}: {why}",
                config.nats.servers
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(client)
}
