//! [`Node`]: one GSLB node's state machine. Inputs come in through [`Node::handle`] and
//! [`Node::handle_timeout`], outputs go out through [`Node::poll_output`], and
//! [`Node::poll_timeout`] says when to call back.
//!
//! The whole synchronisation protocol lives here, so that every driver runs the same one:
//! when the start-up snapshot is read and when it is read again, which incarnation this node
//! takes, when a member's reports are re-read, what happens after messages were lost, when a
//! member expires, leaving, and applying a pushed configuration. The submodules hold the
//! halves: `receive` what comes in, `send` what goes out, `config_apply` pushed
//! configurations.

mod config_apply;
mod explain;
mod receive;
mod send;
mod settings;
mod snapshot_read;

use std::collections::VecDeque;
use std::time::Duration;

use crate::compaction::Compaction;
use crate::config::StateSettings;
use crate::input::{Connectivity, Input};
use crate::membership::{MemberIdx, Members};
use crate::names::{Names, check_id};
use crate::output::{DownReason, Output};
use crate::own::Own;
use crate::policy::{Decision, Policy, Rule};
use crate::stats::{DropReason, Stats};
use crate::time::{Instant, Now, WallTime};
use crate::view::View;

use config_apply::ConfigApply;
pub use settings::{
    FORGET_AFTER_MIN, KV_WRITE_DELAY, Limits, MAX_MEMBERS_LIMIT, NodeConfig, NodeConfigError,
};

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
    /// Whether it announced that it left (this incarnation).
    pub left: bool,
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
    /// Retries of failed KV writes, refreshes, snapshot retries, anti-entropy, forgetting
    /// long-gone members.
    Maintenance,
    /// A pushed configuration's `config.applyTimeout` runs out.
    ConfigApply,
    /// A pending verdict change's hold (`state.holdUp` / `state.holdDown`) elapses.
    Hold,
    /// Changed reports are due to be written to the KV ([`Limits::kv_write_delay`]).
    KvWrite,
}

impl TimerReason {
    /// A short name for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            TimerReason::Heartbeat => "heartbeat",
            TimerReason::MemberExpiry => "member expiry",
            TimerReason::Maintenance => "maintenance",
            TimerReason::ConfigApply => "config apply timeout",
            TimerReason::Hold => "hold",
            TimerReason::KvWrite => "kv write",
        }
    }
}

/// Where the start-up snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Snapshot {
    /// Not read yet (or the last read was incomplete): asked for once connected.
    Wanted,
    /// [`Output::ReadSnapshot`] is out; [`KvRead::Snapshot`](crate::KvRead::Snapshot) ends it.
    Reading,
    /// Read in full.
    Done,
}

/// Whether this node is leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// A member.
    No,
    /// Asked to leave; the announcement goes out once connected.
    Announce,
    /// Announced; its report keys are being deleted.
    Left,
}

/// Our wall clock minus a sender's timestamp, in ms, saturating: the timestamp is outside input
/// and may be anything.
fn clock_offset_ms(ours: WallTime, sent_unix_ms: u64) -> i64 {
    let diff = i128::from(ours.as_unix_ms()) - i128::from(sent_unix_ms);
    i64::try_from(diff).unwrap_or(if diff < 0 { i64::MIN } else { i64::MAX })
}

/// The longest [`Limits::kv_write_delay`] accepted.
pub const MAX_KV_WRITE_DELAY: Duration = Duration::from_secs(1);

/// Anti-entropy (a read of the members bucket) runs every this many maintenance ticks.
const ANTI_ENTROPY_EVERY_TICKS: u64 = 30;

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
    /// When the changed reports waiting in `own.to_put` are written (set when the first of
    /// them is found waiting; [`Limits::kv_write_delay`]).
    puts_due: Option<Instant>,
    next_maintenance: Instant,
    maintenance_ticks: u64,
    queue: VecDeque<Output>,
    stats: Stats,
    snapshot: Snapshot,
    /// The timestamp of our own record (an earlier life) in the snapshot being read, ms.
    own_record_ms: u64,
    /// Messages were lost: read the members bucket at the next maintenance tick.
    anti_entropy_due: bool,
    leaving: Leaving,
    config: ConfigApply,
    /// This node's compacted snapshot of its reports.
    compaction: Compaction,
    /// The chunk writes of the compaction in flight, handed out with the report writes.
    chunk_puts: VecDeque<Output>,
    /// Chunk keys to delete after leaving (after the report keys).
    chunk_deletes: Vec<String>,
    /// Whether members' records and reports are in their own region's buckets.
    region_buckets: bool,
    /// The start-up snapshot's report reads (its second part).
    snapshot_reads: snapshot_read::SnapshotReads,
}

impl Node {
    /// A node that starts deciding at `now`, disconnected, with no members but itself. Its
    /// incarnation is its wall clock in ms (or `min_incarnation`, if larger) until a record of
    /// an earlier life of its own says otherwise.
    pub fn new(config: NodeConfig, now: Now) -> Result<Node, NodeConfigError> {
        check_id(&config.cluster_id).map_err(|e| NodeConfigError(format!("cluster id: {e}")))?;
        check_id(&config.node_id).map_err(|e| NodeConfigError(format!("node id: {e}")))?;
        if config.region.len() > crate::codec::MAX_REGION_BYTES {
            return Err(NodeConfigError(format!(
                "region: longer than {} bytes",
                crate::codec::MAX_REGION_BYTES
            )));
        }
        config.state.validate().map_err(NodeConfigError)?;
        if config.limits.kv_write_delay > MAX_KV_WRITE_DELAY {
            return Err(NodeConfigError(format!(
                "limits.kv_write_delay: at most {MAX_KV_WRITE_DELAY:?}"
            )));
        }
        if config.limits.max_members > MAX_MEMBERS_LIMIT {
            return Err(NodeConfigError(format!(
                "limits.max_members: at most {MAX_MEMBERS_LIMIT}"
            )));
        }
        let limits = config.limits;
        let incarnation = now.wall.as_unix_ms().max(config.min_incarnation).max(1);
        let view = View::new(
            Rule::of(&config.state),
            config.state.holds(),
            &config.region,
            limits.max_endpoints,
        );
        Ok(Node {
            names: Names::new(&config.cluster_id),
            node_id: config.node_id,
            region: config.region,
            incarnation,
            view,
            members: Members::new(limits.max_members, limits.max_reports_per_member),
            config: ConfigApply::new(config.apply_timeout, config.confirm_apply),
            state: config.state,
            limits,
            now: now.mono,
            wall: now.wall,
            own: Own::default(),
            connected: false,
            hb_seq: 0,
            heartbeat_due: false,
            next_heartbeat: now.mono,
            puts_due: None,
            next_maintenance: now.mono,
            maintenance_ticks: 0,
            queue: VecDeque::new(),
            stats: Stats::default(),
            snapshot: Snapshot::Wanted,
            own_record_ms: 0,
            anti_entropy_due: false,
            leaving: Leaving::No,
            compaction: Compaction::new(now.mono),
            chunk_puts: VecDeque::new(),
            chunk_deletes: Vec::new(),
            region_buckets: config.region_buckets,
            snapshot_reads: snapshot_read::SnapshotReads::default(),
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

    /// This node's region.
    pub fn region(&self) -> &str {
        &self.region
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

    /// Whether the start-up snapshot has been read in full.
    pub fn snapshot_loaded(&self) -> bool {
        self.snapshot == Snapshot::Done
    }

    /// Whether this node was asked to leave ([`Input::Leave`]).
    pub fn is_leaving(&self) -> bool {
        self.leaving != Leaving::No
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
            left: self.leaving != Leaving::No,
            last_heard_ago: None,
            reports: self.own.reports.len(),
            clock_offset_ms: 0,
        }];
        let now = crate::membership::heard_ns(self.now);
        let mut remote: Vec<MemberInfo> = self
            .members
            .iter()
            .map(|m| MemberInfo {
                node: m.id.to_string(),
                region: m.region.to_string(),
                incarnation: m.incarnation,
                active: m.active_until.is_some(),
                local: false,
                left: m.left,
                last_heard_ago: m.last_heard.map(|t| {
                    Duration::from_nanos(u64::try_from((now - t).max(0)).unwrap_or(u64::MAX))
                }),
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

    /// The configuration version in force, committed (0 = none received through config sync).
    pub fn config_version(&self) -> u64 {
        self.config.committed_version()
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
            Input::KvPutOk {
                bucket,
                key,
                seq,
                revision,
            } => self.on_kv_put_ok(bucket, &key, seq, revision),
            Input::KvPutFailed { bucket, key, seq } => self.on_kv_put_failed(bucket, &key, seq),
            Input::MessagesLost { count } => {
                self.stats.messages_lost = self.stats.messages_lost.saturating_add(count);
                self.anti_entropy_due = true;
            }
            Input::ConfigEntry { version, yaml } => self.on_config_entry(version, &yaml),
            Input::ConfigApplied { version, result } => self.on_config_applied(version, result),
            Input::Leave => self.on_leave(),
        }
        self.finish();
    }

    /// Hands in a message received on `subject`: the same as [`Input::Received`], without
    /// copying the subject or the payload (for drivers that fan one message out to many nodes).
    pub fn handle_received(&mut self, now: Now, subject: &str, payload: &[u8]) {
        self.advance(now);
        self.on_received(subject, payload);
        self.finish();
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
        self.config_timeout();
        self.finish();
    }

    /// When [`Node::handle_timeout`] should next be called. There is always a next heartbeat,
    /// so there is always an answer.
    pub fn poll_timeout(&self) -> Instant {
        self.poll_timeout_reason().0
    }

    /// When [`Node::handle_timeout`] should next be called, and why.
    pub fn poll_timeout_reason(&self) -> (Instant, TimerReason) {
        let mut next = (self.next_heartbeat, TimerReason::Heartbeat);
        if self.next_maintenance < next.0 {
            next = (self.next_maintenance, TimerReason::Maintenance);
        }
        if let Some(t) = self.members.next_expiry()
            && t < next.0
        {
            next = (t, TimerReason::MemberExpiry);
        }
        if let Some(t) = self.config.deadline()
            && t < next.0
        {
            next = (t, TimerReason::ConfigApply);
        }
        if let Some(t) = self.view.next_hold()
            && t < next.0
        {
            next = (t, TimerReason::Hold);
        }
        if let Some(t) = self.puts_due
            && t < next.0
            && t > self.now
            && self.puts_allowed()
            && !self.own.to_put.is_empty()
        {
            next = (t, TimerReason::KvWrite);
        }
        next
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
        match self.leaving {
            Leaving::No => self.poll_send(),
            Leaving::Announce => {
                self.announce_leave();
                self.queue.pop_front()
            }
            Leaving::Left => self.poll_delete(),
        }
    }

    /// The next endpoint whose decision changed in any way (its counts included) since it was
    /// last handed out here, with that decision. [`Output::Decision`] tells verdict and source
    /// changes; this is for a driver that keeps a copy of every decision current, counts and
    /// all. At most one entry per endpoint is waiting.
    pub fn poll_updated(&mut self) -> Option<(&str, Decision)> {
        let (_, name, decision) = self.poll_updated_indexed()?;
        Some((name, decision))
    }

    /// [`Node::poll_updated`] with the endpoint's number in this node: dense from 0 and the
    /// same for the node's life, so a driver can keep its copy in a vector by number (no hash
    /// of the name per change: a snapshot load changes millions).
    pub fn poll_updated_indexed(&mut self) -> Option<(usize, &str, Decision)> {
        let id = self.view.poll_updated()?;
        Some((id as usize, self.view.name(id), self.view.decision(id)))
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
        // Pending changes due now held until now: they take effect before what happens now.
        self.view.fire_holds(self.now);
        while let Some(idx) = self.members.pop_expired(self.now, &mut self.view) {
            self.member_down(idx, DownReason::Expired);
        }
    }

    /// Ends a state-changing call: every endpoint it touched is decided (holds included) at
    /// the call's instant, and the timer queues are made exact.
    fn finish(&mut self) {
        self.view.settle(self.now);
        self.view.refresh_front();
        self.members.refresh_front();
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

    fn on_connectivity(&mut self, c: Connectivity) {
        match c {
            Connectivity::Connected => {
                self.connected = true;
                // Announce ourselves at once; pending changes go out before the heartbeat.
                self.heartbeat_due = true;
                if !self.own.failed_puts.is_empty() {
                    self.next_maintenance = self.now;
                }
                self.request_snapshot();
            }
            Connectivity::Disconnected => self.connected = false,
        }
    }

    /// Asks for the start-up snapshot if it is still wanted, NATS is reachable and this node
    /// is not leaving.
    fn request_snapshot(&mut self) {
        if self.connected && self.snapshot == Snapshot::Wanted && self.leaving == Leaving::No {
            self.snapshot = Snapshot::Reading;
            self.own_record_ms = 0;
            self.snapshot_reads = snapshot_read::SnapshotReads::default();
            self.push(Output::ReadSnapshot);
        }
    }

    /// Puts new `state.*` settings in force: policy, threshold and scope re-decide every
    /// endpoint, new holds re-judge every pending change (a shortened one that is due takes
    /// effect at once), a new TTL re-judges every member, a new interval takes effect at the
    /// next heartbeat.
    fn apply_state(&mut self, state: StateSettings) {
        // Holds first: the rule's new verdicts are judged under the new holds.
        self.view.set_holds(state.holds());
        self.view.set_rule(Rule::of(&state));
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
            let (up, down, refused) =
                self.members
                    .set_ttl(self.state.heartbeat_ttl, self.now, &mut self.view);
            for _ in 0..refused {
                self.stats.drop(DropReason::RegionLimit);
            }
            for idx in up {
                self.member_up(idx);
            }
            for idx in down {
                self.member_down(idx, DownReason::TtlChanged);
            }
        }
    }
}
