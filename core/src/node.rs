//! [`Node`]: one GSLB node's state machine. Inputs come in through [`Node::handle`] and
//! [`Node::handle_timeout`], outputs go out through [`Node::poll_output`], and
//! [`Node::poll_timeout`] says when to call back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::codec::{
    self, Heartbeat, MAX_BATCH_ITEMS, MAX_PAYLOAD_BYTES, MAX_REGION_BYTES, MemberRecord, Message,
    ReportBatch, ReportItem, ReportRecord, ReportState,
};
use crate::config::{Config, StateSettings};
use crate::input::{Connectivity, Input, KvRead};
use crate::membership::{MemberIdx, Members, PackedReport, ReportOutcome};
use crate::names::{Bucket, Names, SubjectKind, check_endpoint_name, check_id};
use crate::output::{DownReason, Output};
use crate::policy::{Decision, Policy};
use crate::stats::{DropReason, MessageKind, Stats};
use crate::time::{Instant, Now, WallTime};
use crate::view::{EndpointId, View};

/// Bounds on what a node holds. Past a bound the input is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most remote members remembered.
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members: 1024,
            max_endpoints: 1_000_000,
            max_reports_per_member: 250_000,
            max_queued_outputs: 65_536,
            forget_after_ttls: 10,
        }
    }
}

/// Everything a [`Node`] needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `cluster.id`.
    pub cluster_id: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// This node's region (may be empty).
    pub region: String,
    /// Larger on every restart of this node (for example the wall clock in ms at start).
    pub incarnation: u64,
    /// `state.*`.
    pub state: StateSettings,
    /// Bounds.
    pub limits: Limits,
}

impl NodeConfig {
    /// A node config from a parsed configuration file.
    pub fn from_config(config: &Config, node_id: &str, incarnation: u64) -> Self {
        NodeConfig {
            cluster_id: config.cluster_id.clone(),
            node_id: node_id.to_owned(),
            region: config.region.clone(),
            incarnation,
            state: config.state.clone(),
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

/// A member as reported by [`Node::members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Node id.
    pub node: String,
    /// Region.
    pub region: String,
    /// Incarnation.
    pub incarnation: u64,
    /// Whether it is active (counted). The local node always is.
    pub active: bool,
    /// Whether this is the local node.
    pub local: bool,
    /// How long ago its latest heartbeat arrived (`None` for the local node or never heard).
    pub last_heard_ago: Option<Duration>,
    /// Reports held (withdrawn ones included).
    pub reports: usize,
    /// Our wall clock minus its wall clock at its latest heartbeat, in ms (includes transit).
    pub clock_offset_ms: i64,
}

/// Which timer [`Node::poll_timeout`] is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerReason {
    /// The next heartbeat.
    Heartbeat,
    /// A member's TTL runs out.
    MemberExpiry,
    /// Retries of failed KV writes, forgetting long-gone members, anti-entropy.
    Maintenance,
}

impl TimerReason {
    /// A short name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            TimerReason::Heartbeat => "heartbeat",
            TimerReason::MemberExpiry => "member expiry",
            TimerReason::Maintenance => "maintenance",
        }
    }
}

/// Our wall clock minus a sender's timestamp, in ms, saturating: the timestamp is outside input
/// and may be anything.
fn clock_offset_ms(ours: WallTime, sent_unix_ms: u64) -> i64 {
    let diff = i128::from(ours.as_unix_ms()) - i128::from(sent_unix_ms);
    i64::try_from(diff).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX })
}

/// Members are never forgotten sooner than this after they fell silent: a member that is only
/// partitioned away keeps its reports for when it returns.
pub const FORGET_AFTER_MIN: Duration = Duration::from_secs(600);

/// Anti-entropy (a read of the members bucket) runs every this many maintenance ticks.
const ANTI_ENTROPY_EVERY_TICKS: u64 = 30;

/// This node's own reports and what remains to be sent of them.
#[derive(Debug, Default)]
struct Own {
    /// Latest report per endpoint, withdrawn ones included (they keep their sequence).
    reports: FxHashMap<EndpointId, OwnReport>,
    /// Sequence of the latest change.
    report_seq: u64,
    /// Every change up to this sequence has been handed out for publishing.
    published_seq: u64,
    /// Changed since the last publish.
    to_publish: Vec<EndpointId>,
    /// Changed since the last KV write.
    to_put: VecDeque<EndpointId>,
    /// KV writes that failed, retried on the next maintenance tick.
    failed_puts: Vec<EndpointId>,
    /// Sequences of current reports whose KV write is not acknowledged yet.
    unacked: std::collections::BTreeSet<u64>,
}

impl Own {
    /// Every change up to this sequence is stored in the KV.
    fn kv_seq(&self) -> u64 {
        self.unacked
            .first()
            .map_or(self.report_seq, |first| first - 1)
    }
}

#[derive(Debug, Clone, Copy)]
struct OwnReport {
    report: PackedReport,
    publish_pending: bool,
    put_pending: bool,
    put_failed: bool,
}

/// One GSLB node's health and membership state machine.
///
/// See the [crate documentation](crate) for the drive loop.
#[derive(Debug)]
pub struct Node {
    names: Names,
    node_id: String,
    region: String,
    incarnation: u64,
    state: StateSettings,
    limits: Limits,
    now: Instant,
    wall: WallTime,
    view: View,
    members: Members,
    own: Own,
    connected: bool,
    hb_seq: u64,
    heartbeat_due: bool,
    next_heartbeat: Instant,
    next_maintenance: Instant,
    maintenance_ticks: u64,
    queue: VecDeque<Output>,
    stats: Stats,
    config_version: u64,
    /// The start-up snapshot has been read (membership records no longer vouch for liveness).
    snapshot_done: bool,
}

impl Node {
    /// A node that starts deciding at `now`, disconnected, with no members but itself.
    pub fn new(config: NodeConfig, now: Now) -> Result<Node, NodeConfigError> {
        check_id(&config.cluster_id).map_err(|e| NodeConfigError(format!("cluster id: {e}")))?;
        check_id(&config.node_id).map_err(|e| NodeConfigError(format!("node id: {e}")))?;
        if config.region.len() > MAX_REGION_BYTES {
            return Err(NodeConfigError(format!(
                "region: longer than {MAX_REGION_BYTES} bytes"
            )));
        }
        config.state.validate().map_err(NodeConfigError)?;
        let limits = config.limits;
        Ok(Node {
            names: Names::new(&config.cluster_id),
            node_id: config.node_id,
            region: config.region,
            incarnation: config.incarnation,
            view: View::new(
                config.state.policy,
                config.state.quorum_min_percent,
                limits.max_endpoints,
            ),
            members: Members::new(limits.max_members, limits.max_reports_per_member),
            state: config.state,
            limits,
            now: now.mono,
            wall: now.wall,
            own: Own::default(),
            connected: false,
            hb_seq: 0,
            heartbeat_due: false,
            next_heartbeat: now.mono,
            next_maintenance: now.mono,
            maintenance_ticks: 0,
            queue: VecDeque::new(),
            stats: Stats::default(),
            config_version: 0,
            snapshot_done: false,
        })
    }

    // ---- getters ----

    /// The names (subjects, buckets, keys) of this node's cluster.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The `state.*` settings in force.
    pub fn state_settings(&self) -> &StateSettings {
        &self.state
    }

    /// The policy and threshold in force.
    pub fn policy(&self) -> (Policy, u8) {
        self.view.policy()
    }

    /// Whether the driver last reported NATS as reachable.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The decision in force for `endpoint`, if the endpoint is known.
    pub fn decision(&self, endpoint: &str) -> Option<Decision> {
        self.view.id_of(endpoint).map(|id| self.view.decision(id))
    }

    /// Every known endpoint with its decision, in first-seen order.
    pub fn decisions(&self) -> impl Iterator<Item = (&str, Decision)> + '_ {
        self.view.iter()
    }

    /// Number of known endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.view.len()
    }

    /// Active members, the local node included (`gslbd_state_active_members`).
    pub fn active_members(&self) -> usize {
        self.members.active_count() + 1
    }

    /// Ids of the active members, the local node included, sorted.
    pub fn active_member_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.active_until.is_some())
            .map(|m| m.id.to_string())
            .chain(std::iter::once(self.node_id.clone()))
            .collect();
        ids.sort();
        ids
    }

    /// Every remembered member, the local node first.
    pub fn members(&self) -> Vec<MemberInfo> {
        let mut out = vec![MemberInfo {
            node: self.node_id.clone(),
            region: self.region.clone(),
            incarnation: self.incarnation,
            active: true,
            local: true,
            last_heard_ago: None,
            reports: self.own.reports.len(),
            clock_offset_ms: 0,
        }];
        let mut remote: Vec<MemberInfo> = self
            .members
            .iter()
            .map(|m| MemberInfo {
                node: m.id.to_string(),
                region: m.region.to_string(),
                incarnation: m.incarnation,
                active: m.active_until.is_some(),
                local: false,
                last_heard_ago: m.last_heard.map(|t| self.now.saturating_since(t)),
                reports: m.reports.len(),
                clock_offset_ms: m.clock_offset_ms,
            })
            .collect();
        remote.sort_by(|a, b| a.node.cmp(&b.node));
        out.extend(remote);
        out
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration version in force (0 = none received through config sync).
    pub fn config_version(&self) -> u64 {
        self.config_version
    }

    // ---- inputs ----

    /// Hands in one input at `now`.
    pub fn handle(&mut self, now: Now, input: Input) {
        self.advance(now);
        match input {
            Input::LocalHealth { endpoint, healthy } => self.on_local_health(&endpoint, healthy),
            Input::Received { subject, payload } => self.on_received(&subject, &payload),
            Input::Connectivity(c) => self.on_connectivity(c),
            Input::KvEntry { bucket, key, value } => self.on_kv_entry(bucket, &key, &value),
            Input::KvReadDone { read, complete } => self.on_kv_read_done(read, complete),
            Input::KvPutOk { bucket, key, seq } => self.on_kv_put_ok(bucket, &key, seq),
            Input::KvPutFailed { bucket, key } => self.on_kv_put_failed(bucket, &key),
            Input::ConfigEntry { version, yaml } => self.on_config_entry(version, &yaml),
        }
        self.members.refresh_front();
    }

    /// Hands in a message received on `subject`: the same as [`Input::Received`], without
    /// copying the subject or the payload (for drivers that fan one message out to many nodes).
    pub fn handle_received(&mut self, now: Now, subject: &str, payload: &[u8]) {
        self.advance(now);
        self.on_received(subject, payload);
        self.members.refresh_front();
    }

    /// Runs the timers due at `now`. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        let now = self.now;
        if now >= self.next_heartbeat {
            self.heartbeat_due = true;
            self.next_heartbeat = self.next_heartbeat + self.state.heartbeat_interval;
            if self.next_heartbeat <= now {
                self.next_heartbeat = now + self.state.heartbeat_interval;
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.state.heartbeat_interval;
            self.maintenance();
        }
        self.members.refresh_front();
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.poll_timeout_reason().map(|(t, _)| t)
    }

    /// When [`Node::handle_timeout`] should next be called, and why.
    pub fn poll_timeout_reason(&self) -> Option<(Instant, TimerReason)> {
        let mut next = (self.next_heartbeat, TimerReason::Heartbeat);
        if self.next_maintenance < next.0 {
            next = (self.next_maintenance, TimerReason::Maintenance);
        }
        if let Some(t) = self.members.next_expiry()
            && t < next.0
        {
            next = (t, TimerReason::MemberExpiry);
        }
        Some(next)
    }

    /// The next output, or `None` when there is nothing to do until the next input or timeout.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(out) = self.queue.pop_front() {
            return Some(out);
        }
        if let Some((id, decision)) = self.view.poll_changed() {
            self.stats.decisions_changed += 1;
            return Some(Output::Decision {
                endpoint: self.view.name(id).to_owned(),
                decision,
            });
        }
        if !self.connected {
            return None;
        }
        if !self.own.to_publish.is_empty() {
            self.flush_reports();
            return self.queue.pop_front();
        }
        if self.heartbeat_due {
            self.heartbeat_due = false;
            self.emit_heartbeat();
            return self.queue.pop_front();
        }
        while let Some(ep) = self.own.to_put.pop_front() {
            if let Some(out) = self.report_put(ep) {
                return Some(out);
            }
        }
        None
    }

    // ---- time ----

    fn advance(&mut self, now: Now) {
        debug_assert!(
            now.mono >= self.now,
            "time moved backwards: {:?} < {:?}",
            now.mono,
            self.now
        );
        self.now = self.now.max(now.mono);
        self.wall = now.wall;
        while let Some(idx) = self.members.pop_expired(self.now, &mut self.view) {
            self.member_down(idx, DownReason::Expired);
        }
    }

    fn ttl(&self) -> Duration {
        self.state.heartbeat_ttl
    }

    fn push(&mut self, out: Output) {
        if self.queue.len() >= self.limits.max_queued_outputs {
            self.stats.drop(DropReason::OutputQueueFull);
            return;
        }
        self.queue.push_back(out);
    }

    fn member_down(&mut self, idx: MemberIdx, reason: DownReason) {
        let node = self.members.get(idx).id.to_string();
        self.push(Output::MemberDown { node, reason });
    }

    fn member_up(&mut self, idx: MemberIdx) {
        let m = self.members.get(idx);
        let out = Output::MemberUp {
            node: m.id.to_string(),
            region: m.region.to_string(),
            incarnation: m.incarnation,
        };
        self.push(out);
    }

    // ---- local observations and what we send ----

    fn on_local_health(&mut self, endpoint: &str, healthy: Option<bool>) {
        if check_endpoint_name(endpoint).is_err() {
            self.stats.drop(DropReason::BadEndpointName);
            return;
        }
        let Some(id) = self.view.intern(endpoint) else {
            self.stats.drop(DropReason::EndpointLimit);
            return;
        };
        let state = ReportState::from_observation(healthy);
        match self.own.reports.get(&id) {
            Some(r) if r.report.state() == state => return,
            None if healthy.is_none() => return,
            _ => {}
        }
        self.own.report_seq += 1;
        if let Some(old) = self.own.reports.get(&id) {
            self.own.unacked.remove(&old.report.seq());
        }
        self.own.unacked.insert(self.own.report_seq);
        let report = PackedReport::new(self.own.report_seq, state);
        let entry = self.own.reports.entry(id).or_insert(OwnReport {
            report,
            publish_pending: false,
            put_pending: false,
            put_failed: false,
        });
        entry.report = report;
        if !entry.publish_pending {
            entry.publish_pending = true;
            self.own.to_publish.push(id);
        }
        if !entry.put_pending {
            entry.put_pending = true;
            self.own.to_put.push_back(id);
        }
        self.view.set_local(id, healthy);
    }

    /// Turns every pending change into report batches on the queue, oldest first.
    fn flush_reports(&mut self) {
        let mut pending = std::mem::take(&mut self.own.to_publish);
        pending.sort_unstable_by_key(|id| self.own.reports[id].report.seq());
        let mut start = 0;
        while start < pending.len() {
            let end = self.batch_end(&pending, start);
            let chunk = &pending[start..end];
            let last_seq = self.own.reports[&chunk[chunk.len() - 1]].report.seq();
            let first_seq = self.own.published_seq + 1;
            self.publish_batch(chunk, first_seq, last_seq);
            self.own.published_seq = last_seq;
            start = end;
        }
        for id in &pending {
            if let Some(r) = self.own.reports.get_mut(id) {
                r.publish_pending = false;
            }
        }
    }

    /// The end of the batch that starts at `ids[start]`: at most [`MAX_BATCH_ITEMS`] reports
    /// and half of [`MAX_PAYLOAD_BYTES`], and at least one report.
    fn batch_end(&self, ids: &[EndpointId], start: usize) -> usize {
        let mut end = start;
        let mut bytes = 128;
        while end < ids.len() && end - start < MAX_BATCH_ITEMS {
            let size = codec::item_size_bound(self.view.name(ids[end]).len());
            if bytes + size > MAX_PAYLOAD_BYTES / 2 {
                break;
            }
            bytes += size;
            end += 1;
        }
        end
    }

    /// Publishes the reports of `ids`, claiming `first_seq..=last_seq` (`first_seq` 0 = no
    /// claim, `last_seq` is then the highest sequence in the batch).
    fn publish_batch(&mut self, ids: &[EndpointId], first_seq: u64, last_seq: u64) {
        let items: Vec<ReportItem<'_>> = ids
            .iter()
            .map(|id| {
                let r = self.own.reports[id].report;
                ReportItem {
                    endpoint: self.view.name(*id),
                    seq: r.seq(),
                    state: r.state(),
                }
            })
            .collect();
        let payload = codec::encode(&Message::Reports(ReportBatch {
            cluster: self.names.cluster_id(),
            node: &self.node_id,
            incarnation: self.incarnation,
            sent_unix_ms: self.wall.as_unix_ms(),
            first_seq,
            last_seq,
            items,
        }));
        let subject = self.names.subject(SubjectKind::Health, &self.node_id);
        self.stats.count_published(MessageKind::Health);
        self.push(Output::Publish {
            subject,
            payload,
            kind: MessageKind::Health,
        });
    }

    fn emit_heartbeat(&mut self) {
        self.hb_seq += 1;
        let payload = codec::encode(&Message::Heartbeat(Heartbeat {
            cluster: self.names.cluster_id(),
            node: &self.node_id,
            region: &self.region,
            incarnation: self.incarnation,
            seq: self.hb_seq,
            sent_unix_ms: self.wall.as_unix_ms(),
            report_seq: self.own.published_seq,
            kv_seq: self.own.kv_seq().min(self.own.published_seq),
        }));
        let subject = self.names.subject(SubjectKind::Heartbeat, &self.node_id);
        self.stats.count_published(MessageKind::Heartbeat);
        self.push(Output::Publish {
            subject,
            payload,
            kind: MessageKind::Heartbeat,
        });
        let value = codec::encode(&Message::Member(MemberRecord {
            cluster: self.names.cluster_id(),
            node: &self.node_id,
            region: &self.region,
            incarnation: self.incarnation,
            hb_seq: self.hb_seq,
            sent_unix_ms: self.wall.as_unix_ms(),
            report_seq: self.own.published_seq,
            kv_seq: self.own.kv_seq().min(self.own.published_seq),
        }));
        self.stats.count_published(MessageKind::Member);
        self.push(Output::KvPut {
            bucket: Bucket::Members,
            key: self.names.member_key(&self.node_id),
            value,
            kind: MessageKind::Member,
            seq: 0,
        });
    }

    fn report_put(&mut self, id: EndpointId) -> Option<Output> {
        let r = self.own.reports.get_mut(&id)?;
        r.put_pending = false;
        let report = r.report;
        let endpoint = self.view.name(id);
        let value = codec::encode(&Message::Report(ReportRecord {
            cluster: self.names.cluster_id(),
            node: &self.node_id,
            endpoint,
            incarnation: self.incarnation,
            seq: report.seq(),
            sent_unix_ms: self.wall.as_unix_ms(),
            state: report.state(),
        }));
        let key = self.names.report_key(&self.node_id, endpoint);
        self.stats.count_published(MessageKind::Report);
        Some(Output::KvPut {
            bucket: Bucket::Health,
            key,
            value,
            kind: MessageKind::Report,
            seq: report.seq(),
        })
    }

    fn on_kv_put_ok(&mut self, bucket: Bucket, key: &str, seq: u64) {
        if bucket != Bucket::Health {
            return;
        }
        let Some(id) = self.own_endpoint_of_key(key) else {
            return;
        };
        // Only the write of the current report makes it durable; an older one is superseded.
        if self
            .own
            .reports
            .get(&id)
            .is_some_and(|r| r.report.seq() == seq)
        {
            self.own.unacked.remove(&seq);
        }
    }

    /// The endpoint of one of our own health-bucket keys.
    fn own_endpoint_of_key(&self, key: &str) -> Option<EndpointId> {
        let (node, endpoint) = self.names.parse_report_key(key).ok()?;
        if node != self.node_id {
            return None;
        }
        self.view.id_of(&endpoint)
    }

    fn on_kv_put_failed(&mut self, bucket: Bucket, key: &str) {
        // A failed membership record is rewritten with the next heartbeat anyway.
        if bucket != Bucket::Health {
            return;
        }
        let Some(id) = self.own_endpoint_of_key(key) else {
            return;
        };
        if let Some(r) = self.own.reports.get_mut(&id)
            && !r.put_failed
        {
            r.put_failed = true;
            self.own.failed_puts.push(id);
        }
    }

    fn maintenance(&mut self) {
        // Retry failed KV writes, and republish those reports: a peer that missed the
        // publish could not have read them from the KV either.
        if self.connected && !self.own.failed_puts.is_empty() {
            let failed = std::mem::take(&mut self.own.failed_puts);
            let mut start = 0;
            while start < failed.len() {
                let end = self.batch_end(&failed, start);
                let chunk = &failed[start..end];
                // A repair claims no range (first_seq 0); its items must still lie within
                // last_seq, or receivers refuse the batch.
                let last_seq = chunk
                    .iter()
                    .map(|id| self.own.reports[id].report.seq())
                    .max()
                    .unwrap_or(0);
                self.publish_batch(chunk, 0, last_seq);
                start = end;
            }
            for id in failed {
                let r = self
                    .own
                    .reports
                    .get_mut(&id)
                    .expect("own reports are never removed");
                r.put_failed = false;
                if !r.put_pending {
                    r.put_pending = true;
                    self.own.to_put.push_back(id);
                }
            }
        }
        if self.limits.forget_after_ttls > 0 {
            let forget_after = (self.ttl() * self.limits.forget_after_ttls).max(FORGET_AFTER_MIN);
            self.members.forget_inactive(self.now, forget_after);
        }
        self.maintenance_ticks += 1;
        if self.connected
            && self
                .maintenance_ticks
                .is_multiple_of(ANTI_ENTROPY_EVERY_TICKS)
        {
            self.push(Output::ReadMembers);
        }
    }

    fn on_connectivity(&mut self, c: Connectivity) {
        match c {
            Connectivity::Connected => {
                self.connected = true;
                // Announce ourselves at once; pending changes go out before the heartbeat.
                self.heartbeat_due = true;
                if !self.own.failed_puts.is_empty() {
                    self.next_maintenance = self.now;
                }
            }
            Connectivity::Disconnected => self.connected = false,
        }
    }

    // ---- what we receive ----

    fn on_received(&mut self, subject: &str, payload: &[u8]) {
        let Ok((kind, claimed)) = self.names.parse_subject_ref(subject) else {
            self.stats.drop(DropReason::BadName);
            return;
        };
        let msg = match codec::decode(payload) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.drop(e.into());
                return;
            }
        };
        if msg.cluster() != self.names.cluster_id() {
            self.stats.drop(DropReason::WrongCluster);
            return;
        }
        if msg.node() != claimed {
            self.stats.drop(DropReason::Spoofed);
            return;
        }
        match (kind, msg) {
            (SubjectKind::Heartbeat, Message::Heartbeat(hb)) => {
                let offset = clock_offset_ms(self.wall, hb.sent_unix_ms);
                self.on_heartbeat(&hb, self.now, offset);
            }
            (SubjectKind::Health, Message::Reports(batch)) => self.on_batch(&batch),
            _ => self.stats.drop(DropReason::Malformed),
        }
    }

    /// The member `node` at incarnation `incarnation`: created if new, reset if `incarnation`
    /// is newer. `None` (and counted) if the message is stale, from ourselves, or over a bound.
    fn member_for(&mut self, node: &str, incarnation: u64) -> Option<MemberIdx> {
        if node == self.node_id {
            if incarnation != self.incarnation {
                self.stats.drop(DropReason::DuplicateNodeId);
            }
            return None;
        }
        let Some(idx) = self.members.find_or_insert(node, self.now) else {
            self.stats.drop(DropReason::MemberLimit);
            return None;
        };
        let known = self.members.get(idx).incarnation;
        if incarnation < known {
            self.stats.drop(DropReason::StaleIncarnation);
            return None;
        }
        if incarnation > known
            && self
                .members
                .reset_incarnation(idx, incarnation, self.now, &mut self.view)
        {
            self.member_down(idx, DownReason::Restarted);
        }
        Some(idx)
    }

    /// A heartbeat, live (`heard_at = now`) or from a snapshot (`heard_at` = when it was sent).
    fn on_heartbeat(&mut self, hb: &Heartbeat<'_>, heard_at: Instant, clock_offset_ms: i64) {
        if let Some(idx) = self.member_for(hb.node, hb.incarnation) {
            self.heartbeat_of(idx, hb, heard_at, clock_offset_ms);
        }
    }

    /// A heartbeat of member `idx` (already checked to be of its incarnation).
    fn heartbeat_of(
        &mut self,
        idx: MemberIdx,
        hb: &Heartbeat<'_>,
        heard_at: Instant,
        clock_offset_ms: i64,
    ) {
        let live = heard_at == self.now;
        let m = self.members.get_mut(idx);
        // The heartbeat a snapshot record stood for still refreshes the member when it arrives
        // live: freshness is judged on our clock; the record only bridges until then.
        let refresh = live && hb.seq == m.hb_seq && m.hb_from_record;
        if hb.seq <= m.hb_seq && !refresh {
            self.stats.drop(DropReason::Duplicate);
            return;
        }
        if m.hb_seq == 0 {
            // The region is fixed for an incarnation: take it from its first heartbeat.
            m.region = hb.region.into();
        }
        m.hb_seq = hb.seq;
        m.hb_from_record = !live;
        m.clock_offset_ms = clock_offset_ms;
        self.stats.count_received(MessageKind::Heartbeat);
        if self
            .members
            .mark_heard(idx, heard_at, self.state.heartbeat_ttl, &mut self.view)
        {
            self.member_up(idx);
        }
        self.announce(idx, hb.report_seq, hb.kv_seq);
    }

    /// `idx` says its latest report is `report_seq`, and every report up to `kv_seq` is in the
    /// KV: re-sync it if we miss some that the KV holds.
    fn announce(&mut self, idx: MemberIdx, report_seq: u64, kv_seq: u64) {
        let now = self.now;
        let retry_after = self.ttl();
        let snapshot_done = self.snapshot_done;
        let m = self.members.get_mut(idx);
        m.announced_seq = m.announced_seq.max(report_seq);
        m.kv_seq = m.kv_seq.max(kv_seq);
        // While the snapshot is read, it brings every report anyway. Reports not yet in the KV
        // are left to the fast path until the KV has them.
        if m.announced_seq <= m.synced_seq || m.kv_seq <= m.synced_seq || !snapshot_done {
            return;
        }
        if m.resync_since
            .is_some_and(|since| now.saturating_since(since) < retry_after)
        {
            return;
        }
        m.resync_since = Some(now);
        m.resync_kv_seq = m.kv_seq;
        let node = m.id.to_string();
        let key_filter = self.names.report_key_filter(&node);
        self.stats.resyncs_requested += 1;
        self.push(Output::Resync { node, key_filter });
    }

    fn on_batch(&mut self, batch: &ReportBatch<'_>) {
        let Some(idx) = self.member_for(batch.node, batch.incarnation) else {
            return;
        };
        self.stats.count_received(MessageKind::Health);
        for item in &batch.items {
            self.apply_report(idx, item.endpoint, item.seq, item.state);
        }
        let m = self.members.get_mut(idx);
        if batch.first_seq >= 1 && batch.first_seq <= m.synced_seq + 1 {
            m.synced_seq = m.synced_seq.max(batch.last_seq);
            if m.synced_seq >= m.announced_seq {
                // Caught up on the fast path: a re-sync in flight is no longer waited for.
                m.resync_since = None;
            }
        }
    }

    fn apply_report(&mut self, idx: MemberIdx, endpoint: &str, seq: u64, state: ReportState) {
        let Some(ep) = self.view.intern(endpoint) else {
            self.stats.drop(DropReason::EndpointLimit);
            return;
        };
        match self
            .members
            .apply_report(idx, ep, seq, state, &mut self.view)
        {
            ReportOutcome::Applied => self.stats.reports_applied += 1,
            ReportOutcome::NotNewer => self.stats.drop(DropReason::Duplicate),
            ReportOutcome::Full => self.stats.drop(DropReason::ReportLimit),
        }
    }

    fn on_kv_entry(&mut self, bucket: Bucket, key: &str, value: &[u8]) {
        let msg = match codec::decode(value) {
            Ok(msg) => msg,
            Err(e) => {
                self.stats.drop(e.into());
                return;
            }
        };
        if msg.cluster() != self.names.cluster_id() {
            self.stats.drop(DropReason::WrongCluster);
            return;
        }
        match (bucket, msg) {
            (Bucket::Members, Message::Member(rec)) => {
                let Ok(node) = self.names.parse_member_key(key) else {
                    self.stats.drop(DropReason::BadName);
                    return;
                };
                if node != rec.node {
                    self.stats.drop(DropReason::Spoofed);
                    return;
                }
                self.stats.count_received(MessageKind::Member);
                if rec.node == self.node_id && rec.incarnation < self.incarnation {
                    // Our own record from an earlier life (a restart within its TTL): not
                    // another process with our id.
                    return;
                }
                self.on_member_record(&rec);
            }
            (Bucket::Health, Message::Report(rec)) => {
                let Ok((node, endpoint)) = self.names.parse_report_key(key) else {
                    self.stats.drop(DropReason::BadName);
                    return;
                };
                if node != rec.node || endpoint != rec.endpoint {
                    self.stats.drop(DropReason::Spoofed);
                    return;
                }
                self.stats.count_received(MessageKind::Report);
                if node == self.node_id && rec.incarnation < self.incarnation {
                    // A leftover of an earlier life of ours: clean it up.
                    self.push(Output::KvDelete {
                        bucket: Bucket::Health,
                        key: key.to_owned(),
                    });
                    return;
                }
                if let Some(idx) = self.member_for(rec.node, rec.incarnation) {
                    self.apply_report(idx, rec.endpoint, rec.seq, rec.state);
                }
            }
            _ => self.stats.drop(DropReason::Malformed),
        }
    }

    /// A membership record read from the KV. During the start-up snapshot its age on our wall
    /// clock decides whether the member is still active, and for how long. After it (anti-entropy)
    /// it only tells what the member has published: liveness is for live heartbeats alone, so no
    /// sender clock ever judges freshness outside the snapshot.
    fn on_member_record(&mut self, rec: &MemberRecord<'_>) {
        let age = self.wall.age_of(WallTime::from_unix_ms(rec.sent_unix_ms));
        let Some(idx) = self.member_for(rec.node, rec.incarnation) else {
            return;
        };
        if !self.snapshot_done {
            // The snapshot reads members first: what a record says is durable is in the health
            // bucket by the time that is read.
            let m = self.members.get_mut(idx);
            m.snapshot_kv_seq = m.snapshot_kv_seq.max(rec.kv_seq);
        }
        if !self.snapshot_done && age <= self.ttl() {
            let hb = Heartbeat {
                cluster: rec.cluster,
                node: rec.node,
                region: rec.region,
                incarnation: rec.incarnation,
                seq: rec.hb_seq,
                sent_unix_ms: rec.sent_unix_ms,
                report_seq: rec.report_seq,
                kv_seq: rec.kv_seq,
            };
            let offset = clock_offset_ms(self.wall, rec.sent_unix_ms);
            let heard_at = Instant::from_nanos(
                self.now
                    .as_nanos()
                    .saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX)),
            );
            self.heartbeat_of(idx, &hb, heard_at, offset);
        } else {
            // Too old to vouch for the member (or read after the snapshot): it only tells what
            // the member has published. Its heartbeat sequence is not taken, so the live
            // heartbeat it stood for still counts when it arrives.
            self.announce(idx, rec.report_seq, rec.kv_seq);
        }
    }

    fn on_kv_read_done(&mut self, read: KvRead, complete: bool) {
        // A complete read holds every report that was durable when it began: up to the
        // `kv_seq` its members said before it. Reports not yet durable then are not trusted
        // to be there; they come on the fast path or in a later re-sync.
        match &read {
            KvRead::Snapshot => {
                self.snapshot_done = true;
                for idx in self.members.indices() {
                    let m = self.members.get_mut(idx);
                    if complete {
                        m.synced_seq = m.synced_seq.max(m.snapshot_kv_seq);
                    }
                    m.resync_since = None;
                }
            }
            KvRead::Members => {}
            KvRead::Reports { node } => {
                if let Some(idx) = self.members.find(node) {
                    let m = self.members.get_mut(idx);
                    if complete {
                        m.synced_seq = m.synced_seq.max(m.resync_kv_seq);
                        m.resync_since = None;
                    }
                }
            }
        }
    }

    // ---- configuration ----

    fn on_config_entry(&mut self, version: u64, yaml: &[u8]) {
        if version <= self.config_version {
            self.stats.config_ignored += 1;
            let current = self.config_version;
            self.push(Output::ConfigIgnored { version, current });
            return;
        }
        let config = match Config::from_yaml_bytes(yaml) {
            Ok(c) if c.cluster_id == self.names.cluster_id() => c,
            Ok(c) => {
                self.reject_config(
                    version,
                    format!(
                        "cluster.id is {:?}, this node belongs to {:?}",
                        c.cluster_id,
                        self.names.cluster_id()
                    ),
                );
                return;
            }
            Err(e) => {
                self.reject_config(version, e.to_string());
                return;
            }
        };
        self.config_version = version;
        self.stats.config_applied += 1;
        self.apply_state(config.state.clone());
        self.push(Output::ApplyConfig {
            version,
            config: Arc::new(config),
        });
    }

    fn reject_config(&mut self, version: u64, error: String) {
        self.stats.config_rejected += 1;
        self.push(Output::ConfigRejected { version, error });
    }

    /// Puts new `state.*` settings in force: policy and threshold re-decide every endpoint, a
    /// new TTL re-judges every member, a new interval takes effect at the next heartbeat.
    fn apply_state(&mut self, state: StateSettings) {
        self.view.set_policy(state.policy, state.quorum_min_percent);
        let ttl_changed = state.heartbeat_ttl != self.state.heartbeat_ttl;
        if state.heartbeat_interval != self.state.heartbeat_interval {
            self.next_heartbeat = self.next_heartbeat.min(self.now + state.heartbeat_interval);
            self.next_maintenance = self
                .next_maintenance
                .min(self.now + state.heartbeat_interval);
        }
        // `enableConfigSync` needs a restart; keep the running value.
        let enable_config_sync = self.state.enable_config_sync;
        self.state = StateSettings {
            enable_config_sync,
            ..state
        };
        if ttl_changed {
            let (up, down) =
                self.members
                    .set_ttl(self.state.heartbeat_ttl, self.now, &mut self.view);
            for idx in up {
                self.member_up(idx);
            }
            for idx in down {
                self.member_down(idx, DownReason::TtlChanged);
            }
        }
    }
}
