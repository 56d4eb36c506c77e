//! What a driver hands to the core.

use bytes::Bytes;

use crate::names::Bucket;

/// Whether the driver can reach NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Connectivity {
    /// Connected: publishes and KV writes go out.
    Connected,
    /// Not connected: the core keeps deciding and holds its own changes until reconnected.
    Disconnected,
}

/// A KV read, as reported by [`Input::KvReadDone`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvRead {
    /// The start-up snapshot's first part ([`Output::ReadSnapshot`](crate::Output::ReadSnapshot)):
    /// the members buckets. Until the snapshot is done, membership records are judged by
    /// their sender timestamps; after it, records read from the KV only tell what a member
    /// has published (freshness is live heartbeats').
    Snapshot,
    /// The start-up snapshot's reports in one region's health bucket
    /// ([`Output::ReadSnapshotReports`](crate::Output::ReadSnapshotReports)).
    SnapshotReports {
        /// The region.
        region: String,
    },
    /// Anti-entropy: the whole members bucket ([`Output::ReadMembers`](crate::Output::ReadMembers)).
    Members,
    /// A re-sync of one member's reports ([`Output::Resync`](crate::Output::Resync)).
    Reports {
        /// The member.
        node: String,
    },
}

/// One input to [`Node::handle`](crate::Node::handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// This node's own observation of an endpoint: `Some(true)` up, `Some(false)` down,
    /// `None` withdrawn (no opinion any more).
    LocalHealth {
        /// Endpoint name, 1 to 255 bytes of UTF-8.
        endpoint: String,
        /// The observation.
        healthy: Option<bool>,
    },
    /// A message received on a subject under `gslb.<cluster>.` (heartbeats, report batches).
    Received {
        /// The subject it arrived on.
        subject: String,
        /// Its payload.
        payload: Bytes,
    },
    /// The connection to NATS came up or went down.
    Connectivity(Connectivity),
    /// An entry read from a KV bucket: at start-up (snapshot), for a requested re-sync, or for
    /// anti-entropy. Deleted or purged keys are not handed in.
    KvEntry {
        /// The bucket it was read from.
        bucket: Bucket,
        /// Its key.
        key: String,
        /// Its value.
        value: Bytes,
    },
    /// A KV read asked for by an output finished, or the start-up snapshot did. Hand it in
    /// even when the read failed part-way (`complete: false`): the core asks again later for
    /// what is still missing.
    KvReadDone {
        /// Which read.
        read: KvRead,
        /// Whether every matching entry was handed in.
        complete: bool,
    },
    /// A KV write of ours was acknowledged ([`Output::KvPut`](crate::Output::KvPut) with its
    /// `seq`): the report is durable, and heartbeats may say so.
    KvPutOk {
        /// The bucket written to.
        bucket: Bucket,
        /// The key written.
        key: String,
        /// The `seq` of the write.
        seq: u64,
        /// The KV revision the write was stored at.
        revision: u64,
    },
    /// A KV write of ours failed; the core retries it later.
    KvPutFailed {
        /// The bucket written to.
        bucket: Bucket,
        /// The key written.
        key: String,
        /// The `seq` of the write (`Output::KvPut`'s): a failure that comes back after a
        /// newer write of the same key was handed out is told from that one's.
        seq: u64,
    },
    /// Messages on our subscription were lost before they were read (a slow consumer). The
    /// core reads the members bucket at its next maintenance tick and re-syncs every member
    /// that published reports it missed.
    MessagesLost {
        /// How many the driver knows were lost (a lower bound is fine).
        count: u64,
    },
    /// A version of the desired configuration (YAML) from config sync.
    ConfigEntry {
        /// Its version (the KV revision); versions only move forward.
        version: u64,
        /// The YAML text.
        yaml: Bytes,
    },
    /// How applying [`Output::ApplyConfig`](crate::Output::ApplyConfig) `version` went (only
    /// with [`NodeConfig::confirm_apply`](crate::NodeConfig::confirm_apply)): committed when
    /// `Ok` within `config.applyTimeout`, else rolled back whole
    /// ([`Output::ConfigFailed`](crate::Output::ConfigFailed)).
    ConfigApplied {
        /// The version.
        version: u64,
        /// `Err` with the reason when the driver could not apply it.
        result: Result<(), String>,
    },
    /// This node leaves the cluster (a graceful shutdown): it announces it on its heartbeat
    /// subject and in its membership record, so peers drop it at once, and deletes its report
    /// keys. Keep carrying out outputs until [`Node::poll_output`](crate::Node::poll_output)
    /// returns `None` (connected), then stop.
    Leave,
}
