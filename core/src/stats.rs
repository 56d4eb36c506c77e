//! Counters the core keeps about itself: messages in and out, and every dropped input by reason.

use crate::codec::DecodeError;

/// The kind of a message, for per-type counters (`gslbd_state_nats_*_total{type}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A heartbeat.
    Heartbeat,
    /// A batch of health reports.
    Health,
    /// A membership record (KV).
    Member,
    /// A single health report (KV).
    Report,
    /// A node's announcement that it leaves (subject and KV).
    Leave,
    /// A chunk of a node's compacted snapshot of its reports (KV).
    Chunk,
}

impl MessageKind {
    /// Every kind.
    pub const ALL: [MessageKind; 6] = [
        MessageKind::Heartbeat,
        MessageKind::Health,
        MessageKind::Member,
        MessageKind::Report,
        MessageKind::Leave,
        MessageKind::Chunk,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::Health => "health",
            MessageKind::Member => "member",
            MessageKind::Report => "report",
            MessageKind::Leave => "leave",
            MessageKind::Chunk => "chunk",
        }
    }
}

/// Why an input was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Larger than the payload bound.
    TooLarge,
    /// Not a gslb-state message (bad magic or too short).
    NotOurs,
    /// Written by a format version this build does not read.
    UnsupportedVersion,
    /// Undecodable body, unknown kind, or a message of the wrong kind for its subject or bucket.
    Malformed,
    /// Decoded, but breaks a bound or rule of the format.
    Invalid,
    /// A subject or KV key outside this cluster's layout.
    BadName,
    /// The message names another cluster.
    WrongCluster,
    /// The message claims a node (or endpoint) other than the one its subject or key names.
    Spoofed,
    /// From an older incarnation than the one known.
    StaleIncarnation,
    /// Not newer than what is known (a duplicate or a late, reordered delivery).
    Duplicate,
    /// Another process uses this node's id with a different incarnation.
    DuplicateNodeId,
    /// The member bound is reached.
    MemberLimit,
    /// The endpoint bound is reached.
    EndpointLimit,
    /// The per-member report bound is reached.
    ReportLimit,
    /// A local observation with an invalid endpoint name.
    BadEndpointName,
    /// The output queue is full.
    OutputQueueFull,
    /// From a member that announced it left (this incarnation): a late or repeated message.
    LeftMember,
    /// A heartbeat that would make a member of one more region active while
    /// [`MAX_REGIONS`](crate::MAX_REGIONS) regions are held.
    RegionLimit,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 18] = [
        DropReason::TooLarge,
        DropReason::NotOurs,
        DropReason::UnsupportedVersion,
        DropReason::Malformed,
        DropReason::Invalid,
        DropReason::BadName,
        DropReason::WrongCluster,
        DropReason::Spoofed,
        DropReason::StaleIncarnation,
        DropReason::Duplicate,
        DropReason::DuplicateNodeId,
        DropReason::MemberLimit,
        DropReason::EndpointLimit,
        DropReason::ReportLimit,
        DropReason::BadEndpointName,
        DropReason::OutputQueueFull,
        DropReason::LeftMember,
        DropReason::RegionLimit,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLarge => "too-large",
            DropReason::NotOurs => "not-ours",
            DropReason::UnsupportedVersion => "unsupported-version",
            DropReason::Malformed => "malformed",
            DropReason::Invalid => "invalid",
            DropReason::BadName => "bad-name",
            DropReason::WrongCluster => "wrong-cluster",
            DropReason::Spoofed => "spoofed",
            DropReason::StaleIncarnation => "stale-incarnation",
            DropReason::Duplicate => "duplicate",
            DropReason::DuplicateNodeId => "duplicate-node-id",
            DropReason::MemberLimit => "member-limit",
            DropReason::EndpointLimit => "endpoint-limit",
            DropReason::ReportLimit => "report-limit",
            DropReason::BadEndpointName => "bad-endpoint-name",
            DropReason::OutputQueueFull => "output-queue-full",
            DropReason::LeftMember => "left-member",
            DropReason::RegionLimit => "region-limit",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl From<DecodeError> for DropReason {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooLarge => DropReason::TooLarge,
            DecodeError::BadMagic => DropReason::NotOurs,
            DecodeError::UnsupportedVersion(_) => DropReason::UnsupportedVersion,
            DecodeError::UnknownKind(_) | DecodeError::Malformed => DropReason::Malformed,
            DecodeError::Invalid(_) => DropReason::Invalid,
        }
    }
}

/// Counters of one node. All are totals since the node was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    received: [u64; MessageKind::ALL.len()],
    published: [u64; MessageKind::ALL.len()],
    dropped: [u64; DropReason::ALL.len()],
    /// Decision changes handed out.
    pub decisions_changed: u64,
    /// Re-syncs of one member's reports requested.
    pub resyncs_requested: u64,
    /// Reads of a member's reports (a re-sync or the start-up snapshot) that completed but
    /// lacked the newest report the member said was durable (served by a lagging replica):
    /// not trusted, read again.
    pub stale_reads: u64,
    /// Health reports (items of batches and KV entries) applied.
    pub reports_applied: u64,
    /// Config versions applied (committed: applied in full within `config.applyTimeout`).
    pub config_applied: u64,
    /// Config versions that failed to apply in time and were rolled back.
    pub config_failed: u64,
    /// Messages the driver reported lost before they were read (a slow consumer).
    pub messages_lost: u64,
    /// Times this node raised its incarnation above a record of an earlier life of its own
    /// (its wall clock was behind the one it had before the restart).
    pub incarnation_raises: u64,
    /// Config versions rejected as invalid.
    pub config_rejected: u64,
    /// Config versions ignored as not newer.
    pub config_ignored: u64,
}

impl Stats {
    /// Messages of `kind` accepted (decoded and from a valid sender).
    pub fn received(&self, kind: MessageKind) -> u64 {
        self.received[kind as usize]
    }

    /// Messages of `kind` handed out for publishing or KV writing.
    pub fn published(&self, kind: MessageKind) -> u64 {
        self.published[kind as usize]
    }

    /// Inputs dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Inputs dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    pub(crate) fn count_received(&mut self, kind: MessageKind) {
        self.received[kind as usize] += 1;
    }

    pub(crate) fn count_published(&mut self, kind: MessageKind) {
        self.published[kind as usize] += 1;
    }
}
