//! # gslb-state-nats
//!
//! The library an embedding GSLB daemon links: binds [`gslb_state_core`] to NATS JetStream with
//! async-nats. It carries out what the core decides — heartbeats and health changes on core
//! subjects under `gslb.<cluster>.`, reports and membership records in per-cluster KV buckets,
//! the reads the core asks for (snapshot, re-syncs, anti-entropy) — and handles reconnects,
//! TLS and mTLS, credentials, config sync (the watching side, and [`ConfigStore`] for the
//! writing side), permission denials, and Prometheus metrics with the operator guide's names.
//! No HTTP server, no CLI: those are the `gslb-state` daemon's (crate `gslb-state-daemon`).
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
pub mod config_store;
mod config_sync;
mod connect;
mod driver;
mod error;
mod handle;
pub mod hops;
mod kv;
pub mod metrics;
mod retry;
pub mod security;

pub use config_store::{ConfigStore, ConfigStoreError, ConfigVersion};
pub use error::{ConnectError, ConnectSetupError, StartError, StoreError};
pub use handle::{
    ConfigState, DecisionListener, EVENT_BUFFER, Event, Handle, NodeOptions, Stopped,
};
pub use metrics::Metrics;

/// Creates what the nodes of `config`'s cluster use, when absent: the members and health
/// buckets of every region of [`Config::storage_regions`](gslb_state_core::Config::storage_regions) (each placed in the NATS cluster named like its
/// region, where there is one) and, with config sync on, the config bucket and its event
/// stream. For
/// `gslb-state bootstrap`, run once with administrator credentials where nodes are not allowed
/// to create them (SECURITY.md). Returns the names, in that order.
pub async fn bootstrap(
    client: &async_nats::Client,
    config: &gslb_state_core::Config,
) -> Result<Vec<String>, StoreError> {
    let js = connect::jetstream_context(client, config);
    let names = gslb_state_core::Names::new(&config.cluster_id);
    let mut made = Vec::new();
    for region in config.storage_regions() {
        for bucket in [
            gslb_state_core::Bucket::Members,
            gslb_state_core::Bucket::Health,
        ] {
            let name = names.region_bucket(bucket, &region);
            kv::ensure_bucket(&js, &name, &region)
                .await
                .map_err(|e| StoreError::new(format!("KV bucket {name}"), "creating", e))?;
            made.push(name);
        }
    }
    if config.state.enable_config_sync
        && let Some(settings) = &config.config_sync
    {
        config_store::open_bucket(&js, settings).await?;
        made.push(settings.kv_bucket.clone());
        config_store::open_event_stream(&js, settings).await?;
        made.push(settings.stream_name());
    }
    Ok(made)
}

/// Connects a plain client with `config`'s servers, TLS and credentials (for tools such as
/// `gslb-state config push`); fails with the last connection error when no server answers
/// within a few tries.
pub async fn connect(
    config: &gslb_state_core::Config,
    name: &str,
) -> Result<async_nats::Client, ConnectError> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let errors = std::sync::Arc::new(connect::ConnectErrors::default());
    let options = connect::options(&config.nats, name, tx, errors.clone())
        .await
        .map_err(ConnectError::Setup)?;
    let client = options
        .connect(config.nats.servers.clone())
        .await
        .map_err(ConnectError::Client)?;
    // The options keep retrying in the background; a tool should give up instead.
    let patience = (config.nats.connect_timeout * 3).max(std::time::Duration::from_secs(5))
        * u32::try_from(config.nats.servers.len().max(1)).unwrap_or(u32::MAX);
    let deadline = tokio::time::Instant::now() + patience;
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return Err(ConnectError::Unreachable {
                servers: config.nats.servers.clone(),
                waited: patience,
                last_error: errors.last().unwrap_or_else(|| "no answer".to_owned()),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(client)
}
