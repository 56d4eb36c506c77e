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
}

impl DownReason {
    /// The name used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DownReason::Expired => "expired",
            DownReason::Restarted => "restarted",
            DownReason::TtlChanged => "ttl-changed",
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
        /// The report sequence written (0 for membership records), to echo in `KvPutOk`.
        seq: u64,
    },
    /// Delete `key` from `bucket` (a leftover of an earlier incarnation of this node).
    KvDelete {
        /// The bucket.
        bucket: Bucket,
        /// The key.
        key: String,
    },
    /// Read every entry of the health bucket whose key matches `key_filter` (the reports of
    /// `node`), hand each in as [`Input::KvEntry`](crate::Input::KvEntry), then hand in
    /// [`Input::KvReadDone`](crate::Input::KvReadDone) with
    /// [`KvRead::Reports`](crate::input::KvRead::Reports).
    Resync {
        /// The member whose reports to re-read.
        node: String,
        /// KV key filter, `<node>.>`.
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
    /// A new configuration version was accepted; its `state` settings are already in force in
    /// the core. The driver applies the rest (endpoints, probes) within `config.applyTimeout`.
    ApplyConfig {
        /// The version (KV revision).
        version: u64,
        /// The validated configuration.
        config: Arc<Config>,
    },
    /// A configuration version was refused; the last good one stays in force.
    ConfigRejected {
        /// The version.
        version: u64,
        /// What is wrong with it.
        error: String,
    },
    /// A configuration version was ignored because it is not newer than the one in force.
    ConfigIgnored {
        /// The version received.
        version: u64,
        /// The version in force.
        current: u64,
    },
}
