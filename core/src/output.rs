//! What the core hands back to its driver.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::Config;
use crate::names::Bucket;
use crate::policy::Decision;
use crate::stats::MessageKind;

/// Why a member left the active set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DownReason {
    /// No heartbeat for longer than the TTL.
    Expired,
    /// It restarted (a newer incarnation appeared); it is back once its new heartbeat arrives.
    Restarted,
    /// A new, shorter TTL made its last heartbeat too old.
    TtlChanged,
    /// It announced that it leaves (a graceful shutdown).
    Left,
}

impl DownReason {
    /// The name used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DownReason::Expired => "expired",
            DownReason::Restarted => "restarted",
            DownReason::TtlChanged => "ttl-changed",
            DownReason::Left => "left",
        }
    }
}

/// One output of [`Node::poll_output`](crate::Node::poll_output).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Publish `payload` on `subject` (core NATS, fire and forget).
    Publish {
        /// The subject.
        subject: String,
        /// The encoded message.
        payload: Bytes,
        /// What it is, for metrics.
        kind: MessageKind,
    },
    /// Write `value` under `key` in `bucket`. Hand in
    /// [`Input::KvPutOk`](crate::Input::KvPutOk) with `seq` when it is acknowledged, or
    /// [`Input::KvPutFailed`](crate::Input::KvPutFailed) when it failed.
    KvPut {
        /// The bucket.
        bucket: Bucket,
        /// The key.
        key: String,
        /// The encoded record.
        value: Bytes,
        /// What it is, for metrics.
        kind: MessageKind,
        /// The report sequence written (0 for membership records; the compaction's generation
        /// for a snapshot chunk), to echo in `KvPutOk`.
        seq: u64,
    },
    /// Delete `key` from `bucket` (a leftover of an earlier incarnation of this node).
    KvDelete {
        /// The bucket.
        bucket: Bucket,
        /// The key.
        key: String,
    },
    /// Read the start-up snapshot's first part: every entry of the members bucket (of every
    /// region of `nats.jetStream.regions`: this node's streamed, each other read whole or not
    /// at all); hand each in as [`Input::KvEntry`](crate::Input::KvEntry), then
    /// [`Input::KvReadDone`](crate::Input::KvReadDone) with
    /// [`KvRead::Snapshot`](crate::input::KvRead::Snapshot) (`complete: false` if this node's
    /// region failed part-way: the core asks again). The core then asks for the reports with
    /// [`Output::ReadSnapshotReports`]. Asked for once connected, until one read completes.
    ReadSnapshot,
    /// Read the start-up snapshot's reports in region `region`'s health bucket: the values
    /// under `chunks` (by direct get; a missing key is skipped), and for each
    /// `(key_filter, from_revision)` of `key_filters` every live key matching the filter whose
    /// newest value was written at or after KV revision `from_revision` (0 or 1: every
    /// matching key). Hand each entry in as [`Input::KvEntry`](crate::Input::KvEntry) (in any
    /// order), then [`Input::KvReadDone`](crate::Input::KvReadDone) with
    /// [`KvRead::SnapshotReports`](crate::input::KvRead::SnapshotReports) for `region`.
    ReadSnapshotReports {
        /// The region whose health bucket to read ("" without `nats.jetStream.regions`).
        region: String,
        /// Keys of compacted-snapshot chunks.
        chunks: Vec<String>,
        /// Report key filters (`<node>.*`, or [`Names::REPORTS_FILTER`](crate::Names::REPORTS_FILTER)
        /// for every node), each with the revision to read from: a member's report keys
        /// written since its compacted snapshot, or all of them without one.
        key_filters: Vec<(String, u64)>,
    },
    /// Read every entry of the health bucket whose key matches `key_filter` (the report keys
    /// of `node`), hand each in as [`Input::KvEntry`](crate::Input::KvEntry), then hand in
    /// [`Input::KvReadDone`](crate::Input::KvReadDone) with
    /// [`KvRead::Reports`](crate::input::KvRead::Reports).
    Resync {
        /// The member whose reports to re-read.
        node: String,
        /// Its region (as its heartbeat said): its reports are in that region's health
        /// bucket ([`Names::region_bucket`](crate::Names::region_bucket)).
        region: String,
        /// KV key filter, `<node>.*`.
        key_filter: String,
    },
    /// Anti-entropy: read the whole members bucket, hand in each entry, then
    /// [`Input::KvReadDone`](crate::Input::KvReadDone) with
    /// [`KvRead::Members`](crate::input::KvRead::Members).
    ReadMembers,
    /// The decision for `endpoint` changed (verdict or source).
    Decision {
        /// The endpoint.
        endpoint: String,
        /// The new decision and why.
        decision: Decision,
    },
    /// A member became active.
    MemberUp {
        /// Its node id.
        node: String,
        /// Its region.
        region: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A member stopped being active.
    MemberDown {
        /// Its node id.
        node: String,
        /// Why.
        reason: DownReason,
    },
    /// This node took a larger incarnation than the one it started with: the KV holds a
    /// record of an earlier life of its own with an incarnation at least as large (its wall
    /// clock is behind the one it had then). Peers see a restart.
    IncarnationRaised {
        /// The incarnation it started with.
        from: u64,
        /// The one it took.
        to: u64,
    },
    /// A new configuration version was accepted; its `state` settings are already in force in
    /// the core. The driver applies the rest (endpoints, probes) and, with
    /// [`NodeConfig::confirm_apply`](crate::NodeConfig::confirm_apply), confirms with
    /// [`Input::ConfigApplied`](crate::Input::ConfigApplied) within `config.applyTimeout`.
    ApplyConfig {
        /// The version (KV revision).
        version: u64,
        /// The validated configuration.
        config: Arc<Config>,
    },
    /// A configuration version was applied in full and is the one in force.
    ConfigCommitted {
        /// The version.
        version: u64,
    },
    /// Applying a configuration version failed or ran out of time: it was rolled back whole.
    /// The core's `state.*` is back as before it; the driver restores the endpoints of
    /// `restore` (or of its own file when `None`).
    ConfigFailed {
        /// The version.
        version: u64,
        /// Why.
        error: String,
        /// The configuration in force again (`None`: the node's own file).
        restore: Option<Arc<Config>>,
    },
    /// A configuration version was refused; the last good one stays in force.
    ConfigRejected {
        /// The version.
        version: u64,
        /// What is wrong with it.
        error: String,
    },
    /// A configuration version was ignored because it is not newer than the newest known.
    ConfigIgnored {
        /// The version received.
        version: u64,
        /// The newest version known: in force, being applied, or waiting to be.
        current: u64,
    },
}
