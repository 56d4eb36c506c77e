//! What a [`Node`](super::Node) is started with: its identity, `state.*` and bounds.

use std::time::Duration;

use crate::config::{Config, DEFAULT_APPLY_TIMEOUT, StateSettings};

/// The largest [`Limits::max_members`] a node accepts: the members of one region, and this
/// node, are counted in 16 bits.
pub const MAX_MEMBERS_LIMIT: usize = u16::MAX as usize - 1;

/// Bounds on what a node holds. Past a bound the input is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most remote members remembered, at most [`MAX_MEMBERS_LIMIT`].
    pub max_members: usize,
    /// Most distinct endpoints known.
    pub max_endpoints: usize,
    /// Most reports held per remote member.
    pub max_reports_per_member: usize,
    /// Most outputs waiting in the queue (decisions, publishes and KV writes are generated
    /// lazily and do not count).
    pub max_queued_outputs: usize,
    /// Members inactive for this many TTLs, and at least [`FORGET_AFTER_MIN`], are forgotten
    /// with their reports; 0 = never (a full member table still makes room by forgetting the
    /// member silent the longest).
    pub forget_after_ttls: u32,
    /// How long the KV writes of changed reports trail their publish: the live fan-out of a
    /// change (or of a burst of them) goes out before the durable writes compete with it for
    /// the servers, and a report that changes again meanwhile is written once. Heartbeats
    /// tell peers what is durable, so a peer never trusts a KV read that lacks a write still
    /// waiting here.
    /// 0 writes at once.
    pub kv_write_delay: Duration,
    /// The least time between two compactions of this node's reports into a compacted
    /// snapshot (and after start before the first). A compaction also waits for changes to
    /// half as many reports as it would write, so its bytes per change stay bounded.
    pub compact_interval: Duration,
}

/// [`Limits::compact_interval`] by default.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(30);

/// [`Limits::kv_write_delay`] by default.
pub const KV_WRITE_DELAY: Duration = Duration::from_millis(20);

/// Members are never forgotten sooner than this after they fell silent: a member that is only
/// partitioned away keeps its reports for when it returns.
pub const FORGET_AFTER_MIN: Duration = Duration::from_secs(600);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 1024,
            max_endpoints: 1_000_000,
            max_reports_per_member: 250_000,
            max_queued_outputs: 65_536,
            forget_after_ttls: 10,
            kv_write_delay: KV_WRITE_DELAY,
            compact_interval: COMPACT_INTERVAL,
        }
    }
}

/// Everything a [`Node`](super::Node) needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `cluster.id`.
    pub cluster_id: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// This node's region (may be empty).
    pub region: String,
    /// The lowest incarnation to take. The node takes its wall clock at start in ms, or this
    /// if larger, and raises it above any record of an earlier life of its own that it reads
    /// (so incarnations never go backwards, whatever the wall clock did). 0 for a driver that
    /// keeps nothing across restarts.
    pub min_incarnation: u64,
    /// `state.*`.
    pub state: StateSettings,
    /// `config.applyTimeout`: how long applying a pushed configuration may take.
    pub apply_timeout: Duration,
    /// Whether the driver confirms each pushed configuration with
    /// [`Input::ConfigApplied`](crate::Input::ConfigApplied) (it applies endpoints and probes
    /// of its own). When false, a valid version is committed as soon as its `state.*` is in
    /// force.
    pub confirm_apply: bool,
    /// Whether each member's records and reports are in its own region's buckets
    /// (`nats.jetStream.regions` is set): then the snapshot's report reads go to the bucket
    /// of each member's region, else all to the one bucket (region "").
    pub region_buckets: bool,
    /// Bounds.
    pub limits: Limits,
}

impl NodeConfig {
    /// A node config from a parsed configuration file.
    pub fn from_config(config: &Config, node_id: &str) -> Self {
        NodeConfig {
            cluster_id: config.cluster_id.clone(),
            node_id: node_id.to_owned(),
            region: config.region.clone(),
            min_incarnation: 0,
            state: config.state.clone(),
            apply_timeout: config
                .config_sync
                .as_ref()
                .map_or(DEFAULT_APPLY_TIMEOUT, |c| c.apply_timeout),
            confirm_apply: false,
            region_buckets: !config.nats.jetstream_regions.is_empty(),
            limits: Limits::default(),
        }
    }
}

/// Why a [`NodeConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfigError(pub String);

impl std::fmt::Display for NodeConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NodeConfigError {}
