//! The reference model: plain, obviously-correct code that recomputes every decision from
//! scratch, from the same inputs as a [`Node`](crate::Node). Tests and the fuzzer drive both
//! and compare every decision after every step.
//!
//! Nothing here is incremental or bounded, and nothing is shared with the engine but the codec,
//! the name layout and the config parser (each tested on its own). It is slow on purpose.
//!
//! The start-up snapshot is read in two parts: the members buckets, then (once those were read
//! in full) the reports of every region the node asks for: each member's compacted snapshot
//! (its chunks, taken only when they are exactly the ones its newest record names), the report
//! keys written since, and whole the members without one. The model keeps the records until
//! the last region's report read is over, as the node does, and restates which reads the node
//! must ask for ([`Reference::snapshot_reports_plan`]).
//!
//! Holds need a memory of the past: the model keeps, per endpoint, the verdict in force and
//! since when a change of it is pending, and after every input recomputes every endpoint's
//! verdict from scratch and applies the hold rule to it. (Having no bounds, it never refuses a
//! region: tests keep under [`MAX_REGIONS`](crate::MAX_REGIONS).)

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{self, MemberRecord, Message, ReportChunk, ReportState, SnapshotRef};
use crate::config::{Config, StateSettings};
use crate::input::{Input, KvRead};
use crate::names::{Bucket, Names, SubjectKind, check_endpoint_name};
use crate::node::NodeConfig;
use crate::policy::{Decision, Pending, Policy, QuorumScope, Source};
use crate::time::{Instant, Now, WallTime};

/// What the model remembers of one remote node.
#[derive(Debug, Default, Clone)]
struct Remote {
    /// The region of its first heartbeat in this incarnation.
    region: String,
    incarnation: u64,
    /// The highest incarnation known to be an earlier life than the current one.
    retired: u64,
    /// It announced that it left (this incarnation).
    left: bool,
    /// The incarnation came from a report batch or a KV record outside the snapshot, and no
    /// heartbeat of it was heard: until this instant (a TTL later, ns), a running life, which
    /// a live message of another incarnation does not replace (a late heartbeat of the life it
    /// replaced).
    tentative_until: Option<i128>,
    /// Highest heartbeat sequence seen in this incarnation.
    hb_seq: u64,
    /// `hb_seq` came from a snapshot record (its live heartbeat still counts once).
    hb_from_record: bool,
    /// Latest time a heartbeat of this incarnation was heard (or sent, for snapshot records),
    /// in nanoseconds on the node's clock; negative when before the clock's origin.
    last_heard: Option<i128>,
    /// The newest membership record of the snapshot being read.
    snapshot_record: Option<Record>,
    /// Newest (sequence, state) per endpoint in this incarnation.
    reports: BTreeMap<String, (u64, ReportState)>,
}

/// A membership record read in the snapshot.
#[derive(Debug, Clone)]
struct Record {
    hb_seq: u64,
    sent_ms: u64,
    left: bool,
    region: String,
    /// The latest report sequence the record says was published.
    report_seq: u64,
    /// The compacted snapshot of its reports the record names.
    snapshot: Option<SnapshotRef>,
}

/// What the node must ask for in one region's report read of the start-up snapshot
/// ([`Output::ReadSnapshotReports`](crate::Output::ReadSnapshotReports)), as sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportsPlan {
    /// The chunk keys of every compacted snapshot to read.
    pub chunks: BTreeSet<String>,
    /// Key filters, each with the KV revision to read from (0: every matching key).
    pub key_filters: BTreeSet<(String, u64)>,
}

/// More members than this in one region (this node counted), and the region's report keys are
/// read with one filter instead of one per member (the node's `MAX_MEMBER_READS`).
const MAX_MEMBER_READS: usize = 32;

/// The chunks of one member's compacted snapshot the report read takes.
#[derive(Debug, Clone)]
struct ChunkWait {
    incarnation: u64,
    generation: u64,
    chunks: u32,
    /// The indices already taken (each is taken once).
    seen: BTreeSet<u32>,
}

/// The snapshot's second part: the report reads, per region.
#[derive(Debug, Clone, Default)]
struct ReportsRead {
    /// What each region's read must be.
    plans: BTreeMap<String, ReportsPlan>,
    /// The regions whose read is not over.
    pending: BTreeSet<String>,
    /// Per member, the compacted snapshot its newest record named.
    chunks: BTreeMap<String, ChunkWait>,
    /// This node's own region's read failed: the snapshot is not loaded.
    own_failed: bool,
}

/// A pushed configuration being applied.
#[derive(Debug, Clone)]
struct PendingConfig {
    version: u64,
    deadline: Instant,
    previous: StateSettings,
}

/// The verdict in force for one endpoint, and since when a change of it is pending.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    shown: Option<bool>,
    pending_since: Option<Instant>,
}

/// The reference model of one node.
#[derive(Debug, Clone)]
pub struct Reference {
    names: Names,
    node_id: String,
    region: String,
    state: StateSettings,
    now: Instant,
    wall: WallTime,
    local: BTreeMap<String, bool>,
    remotes: BTreeMap<String, Remote>,
    /// The verdict in force per endpoint (holds).
    held: BTreeMap<String, Held>,
    config_version: u64,
    config_pending: Option<PendingConfig>,
    config_queued: Option<(u64, StateSettings)>,
    apply_timeout: std::time::Duration,
    confirm_apply: bool,
    /// The snapshot: being read (membership records are kept to be judged at its end), both
    /// parts.
    snapshot_reading: bool,
    /// The snapshot's second part, once its first was read in full.
    reports_read: Option<ReportsRead>,
    /// Whether each member's reports are in its own region's health bucket.
    region_buckets: bool,
    /// The snapshot was read in full.
    snapshot_loaded: bool,
    /// The timestamp of our own record (an earlier life) in the snapshot being read.
    own_record_ms: u64,
}

impl Reference {
    /// A model of the node `config` describes.
    pub fn new(config: &NodeConfig, now: Now) -> Self {
        Reference {
            names: Names::new(&config.cluster_id),
            node_id: config.node_id.clone(),
            region: config.region.clone(),
            state: config.state.clone(),
            now: now.mono,
            wall: now.wall,
            local: BTreeMap::new(),
            remotes: BTreeMap::new(),
            held: BTreeMap::new(),
            config_version: 0,
            config_pending: None,
            config_queued: None,
            apply_timeout: config.apply_timeout,
            confirm_apply: config.confirm_apply,
            snapshot_reading: false,
            reports_read: None,
            region_buckets: config.region_buckets,
            snapshot_loaded: false,
            own_record_ms: 0,
        }
    }

    /// The node asked for the start-up snapshot ([`Output::ReadSnapshot`](crate::Output)):
    /// when to read is the protocol's timing, which the model follows; what the read means is
    /// modelled.
    pub fn snapshot_requested(&mut self) {
        self.snapshot_reading = true;
        self.reports_read = None;
        self.own_record_ms = 0;
    }

    /// Whether the start-up snapshot is loaded ([`Node::snapshot_loaded`](crate::Node)): both
    /// its parts were read, the members buckets and this node's own region's reports in full.
    pub fn snapshot_loaded(&self) -> bool {
        self.snapshot_loaded
    }

    /// The report read the node must ask for in `region` now that the members buckets were
    /// read (`None` when no such read is due: the first part is not over, or the region has
    /// no read, or it is over).
    pub fn snapshot_reports_plan(&self, region: &str) -> Option<&ReportsPlan> {
        let read = self.reports_read.as_ref()?;
        if !read.pending.contains(region) {
            return None;
        }
        read.plans.get(region)
    }

    /// The compacted snapshots whose chunks the report read takes now: per member, its
    /// incarnation, the generation and the number of chunks.
    pub fn snapshot_chunks_expected(&self) -> Vec<(String, u64, u64, u32)> {
        self.reports_read
            .iter()
            .flat_map(|r| &r.chunks)
            .map(|(node, w)| (node.clone(), w.incarnation, w.generation, w.chunks))
            .collect()
    }

    /// The regions whose report read is still out.
    pub fn snapshot_reports_pending(&self) -> Vec<String> {
        self.reports_read
            .as_ref()
            .map(|r| r.pending.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs the timers due at `now` (a pushed configuration's apply deadline).
    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        if let Some(p) = &self.config_pending
            && self.now >= p.deadline
        {
            let p = self.config_pending.take().expect("checked above");
            self.set_state(p.previous);
            self.next_queued_config();
        }
        self.settle();
    }

    /// The hold a change to `healthy` must last.
    fn hold_of(&self, healthy: bool) -> std::time::Duration {
        if healthy {
            self.state.hold_up
        } else {
            self.state.hold_down
        }
    }

    /// Moves the clocks to `now`. A pending change whose hold has run out by now takes effect
    /// first: the verdict it waited for lasted until now, whatever happens now.
    fn advance(&mut self, now: Now) {
        self.now = now.mono;
        self.wall = now.wall;
        let holds = (self.hold_of(true), self.hold_of(false));
        for h in self.held.values_mut() {
            if let (Some(shown), Some(since)) = (h.shown, h.pending_since) {
                let hold = if shown { holds.1 } else { holds.0 };
                if since + hold <= self.now {
                    h.shown = Some(!shown);
                    h.pending_since = None;
                }
            }
        }
    }

    /// After an input: every endpoint's verdict recomputed from scratch, and the hold rule
    /// applied to it. A change between healthy and unhealthy starts pending (or takes effect,
    /// when it has been pending for its hold); a change from or to unknown, or with no hold,
    /// takes effect at once; a verdict back to the one in force ends the pending change.
    fn settle(&mut self) {
        let mut endpoints = self.endpoints();
        endpoints.extend(self.held.keys().cloned());
        for ep in endpoints {
            let verdict = self.rule_decision(&ep).healthy;
            let now = self.now;
            let hold_up = self.hold_of(true);
            let hold_down = self.hold_of(false);
            let h = self.held.entry(ep).or_default();
            match (h.shown, verdict) {
                (Some(old), Some(new)) if old != new => {
                    let since = h.pending_since.unwrap_or(now);
                    let hold = if new { hold_up } else { hold_down };
                    if since + hold <= now {
                        h.shown = Some(new);
                        h.pending_since = None;
                    } else {
                        h.pending_since = Some(since);
                    }
                }
                _ => {
                    h.shown = verdict;
                    h.pending_since = None;
                }
            }
        }
    }

    /// Hands in one input.
    pub fn handle(&mut self, now: Now, input: &Input) {
        self.advance(now);
        self.input(input);
        self.settle();
    }

    fn input(&mut self, input: &Input) {
        match input {
            Input::LocalHealth { endpoint, healthy } => {
                if check_endpoint_name(endpoint).is_ok() {
                    match healthy {
                        Some(h) => self.local.insert(endpoint.clone(), *h),
                        None => self.local.remove(endpoint),
                    };
                }
            }
            Input::Received { subject, payload } => {
                let Ok((kind, claimed)) = self.names.parse_subject(subject) else {
                    return;
                };
                let Ok(msg) = codec::decode(payload) else {
                    return;
                };
                if msg.cluster() != self.names.cluster_id() || msg.node() != claimed {
                    return;
                }
                let now = self.now_ns();
                match (kind, msg) {
                    (SubjectKind::Heartbeat, Message::Heartbeat(hb)) => {
                        self.heartbeat(hb.node, hb.incarnation, hb.seq, Some(now), true, hb.region);
                    }
                    (SubjectKind::Heartbeat, Message::Leave(rec)) => {
                        self.leave(rec.node, rec.incarnation, true);
                    }
                    (SubjectKind::Health, Message::Reports(b)) => {
                        // Even an empty batch tells of a newer incarnation.
                        if self.remote(b.node, b.incarnation, false).is_none() {
                            return;
                        }
                        for item in &b.items {
                            self.report(b.node, b.incarnation, item.endpoint, item.seq, item.state);
                        }
                    }
                    _ => {}
                }
            }
            Input::KvEntry { bucket, key, value } => {
                let Ok(msg) = codec::decode(value) else {
                    return;
                };
                if msg.cluster() != self.names.cluster_id() {
                    return;
                }
                match (bucket, msg) {
                    (Bucket::Members, Message::Member(rec) | Message::Leave(rec)) => {
                        if self.names.parse_member_key(key).ok().as_deref() != Some(rec.node) {
                            return;
                        }
                        let left = matches!(msg_kind(value), Some(5));
                        self.member_record(&rec, left);
                    }
                    (Bucket::Health, Message::Report(rec)) => {
                        let Ok((node, endpoint)) = self.names.parse_report_key(key) else {
                            return;
                        };
                        if node == rec.node && endpoint == rec.endpoint {
                            self.report(
                                rec.node,
                                rec.incarnation,
                                rec.endpoint,
                                rec.seq,
                                rec.state,
                            );
                        }
                    }
                    (Bucket::Health, Message::Chunk(chunk)) => self.chunk(key, &chunk),
                    _ => {}
                }
            }
            Input::ConfigEntry { version, yaml } => {
                let newest = self
                    .config_version
                    .max(self.config_pending.as_ref().map_or(0, |p| p.version))
                    .max(self.config_queued.as_ref().map_or(0, |q| q.0));
                if *version <= newest {
                    return;
                }
                if let Ok(c) = Config::from_yaml_bytes(yaml)
                    && c.cluster_id == self.names.cluster_id()
                {
                    if self.config_pending.is_some() {
                        self.config_queued = Some((*version, c.state));
                    } else {
                        self.start_config(*version, c.state);
                    }
                }
            }
            Input::ConfigApplied { version, result } => {
                if self.config_pending.as_ref().map(|p| p.version) == Some(*version) {
                    let p = self.config_pending.take().expect("checked above");
                    match result {
                        Ok(()) => self.config_version = p.version,
                        Err(_) => self.set_state(p.previous),
                    }
                    self.next_queued_config();
                }
            }
            Input::KvReadDone {
                read: KvRead::Snapshot,
                complete,
            } => {
                // The members buckets: read in full, the reports are read next; otherwise the
                // snapshot ends (and is asked for again).
                if self.snapshot_reading && self.reports_read.is_none() {
                    if *complete {
                        self.start_reports_read();
                    } else {
                        self.finish_snapshot(false);
                    }
                }
            }
            Input::KvReadDone {
                read: KvRead::SnapshotReports { region },
                complete,
            } => {
                // One region's reports: the snapshot ends with the last of them, loaded unless
                // this node's own region's read failed (another region's failure only leaves
                // its members to be re-synced, which the model does not need to follow).
                let own = self.bucket_region(&self.region);
                if self.snapshot_reading
                    && let Some(read) = &mut self.reports_read
                    && read.pending.remove(region)
                {
                    if !complete && *region == own {
                        read.own_failed = true;
                    }
                    if read.pending.is_empty() {
                        let loaded = !read.own_failed;
                        self.finish_snapshot(loaded);
                    }
                }
            }
            Input::Connectivity(_)
            | Input::KvReadDone { .. }
            | Input::KvPutOk { .. }
            | Input::KvPutFailed { .. }
            | Input::MessagesLost { .. }
            | Input::Leave => {}
        }
    }

    fn now_ns(&self) -> i128 {
        i128::from(self.now.as_nanos())
    }

    fn start_config(&mut self, version: u64, state: StateSettings) {
        let previous = self.state.clone();
        self.set_state(state);
        if self.confirm_apply {
            self.config_pending = Some(PendingConfig {
                version,
                deadline: self.now + self.apply_timeout,
                previous,
            });
        } else {
            self.config_version = version;
        }
    }

    fn next_queued_config(&mut self) {
        if let Some((version, state)) = self.config_queued.take() {
            self.start_config(version, state);
        }
    }

    fn set_state(&mut self, state: StateSettings) {
        let keep = self.state.enable_config_sync;
        self.state = StateSettings {
            enable_config_sync: keep,
            ..state
        };
    }

    /// The health bucket of the members of `region`.
    fn bucket_region(&self, region: &str) -> String {
        if self.region_buckets {
            region.to_owned()
        } else {
            String::new()
        }
    }

    /// The members buckets were read in full: which reports to read where, in the health
    /// bucket of each member's region. Each member whose newest record (not a leave, nor of a
    /// member known to have left) names a compacted snapshot of the incarnation the model
    /// knows it at is read from its chunks and, when the record says it changed reports after
    /// the snapshot, its report keys written after the snapshot's revision; every other member
    /// with a record, and this node itself, whole. With more than [`MAX_MEMBER_READS`] reads
    /// of keys in a region, every report key of the region written since the oldest of their
    /// revisions is read instead.
    fn start_reports_read(&mut self) {
        let mut read = ReportsRead::default();
        let own = self.bucket_region(&self.region);
        read.plans
            .entry(own)
            .or_default()
            .key_filters
            .insert((self.names.report_key_filter(&self.node_id), 0));
        for (id, r) in &self.remotes {
            let Some(rec) = &r.snapshot_record else {
                continue;
            };
            if rec.left || r.left {
                continue;
            }
            let plan = read
                .plans
                .entry(self.bucket_region(&rec.region))
                .or_default();
            let filter = self.names.report_key_filter(id);
            match rec.snapshot.filter(|s| s.incarnation == r.incarnation) {
                Some(s) => {
                    for i in 0..s.chunks {
                        plan.chunks
                            .insert(self.names.chunk_key(id, s.generation, i));
                    }
                    // The keys written since, if the record says reports changed after it.
                    if rec.report_seq > s.seq {
                        plan.key_filters
                            .insert((filter, s.revision.saturating_add(1)));
                    }
                    read.chunks.insert(
                        id.clone(),
                        ChunkWait {
                            incarnation: s.incarnation,
                            generation: s.generation,
                            chunks: s.chunks,
                            seen: BTreeSet::new(),
                        },
                    );
                }
                None => {
                    plan.key_filters.insert((filter, 0));
                }
            }
        }
        for plan in read.plans.values_mut() {
            if plan.key_filters.len() > MAX_MEMBER_READS {
                let from = plan.key_filters.iter().map(|(_, from)| *from).min();
                plan.key_filters =
                    BTreeSet::from([(Names::REPORTS_FILTER.to_owned(), from.unwrap_or(0))]);
            }
        }
        read.pending = read.plans.keys().cloned().collect();
        self.reports_read = Some(read);
    }

    /// A chunk under `key`: its reports count when it is one of the chunks the report read
    /// takes (the compacted snapshot the member's record named: same incarnation and
    /// generation, under the key of its slot and index, of as many chunks, not taken before),
    /// and the member is still at that incarnation.
    fn chunk(&mut self, key: &str, chunk: &ReportChunk<'_>) {
        let Ok((node, slot, index)) = self.names.parse_chunk_key(key) else {
            return;
        };
        if node != chunk.node {
            return;
        }
        let Some(wait) = self
            .reports_read
            .as_mut()
            .and_then(|r| r.chunks.get_mut(&node))
        else {
            return;
        };
        // Reports that do not unpack are not read (the core drops the chunk).
        let mut buf = Vec::new();
        let Ok(items) = codec::unpack_chunk_items(chunk, &mut buf) else {
            return;
        };
        let wanted = wait.incarnation == chunk.incarnation
            && wait.generation == chunk.generation
            && chunk.generation % 2 == slot
            && chunk.index == index
            && wait.chunks == chunk.chunks
            && wait.seen.insert(index);
        if !wanted
            || self
                .remotes
                .get(&node)
                .is_none_or(|r| r.incarnation != chunk.incarnation)
        {
            return;
        }
        for item in &items {
            self.report(
                &node,
                chunk.incarnation,
                item.endpoint,
                item.seq,
                item.state,
            );
        }
    }

    /// A membership record: during the snapshot, kept to be judged at its end; after it, only
    /// a newer incarnation (or a leave) is news.
    /// (`left`: it says the member left.)
    fn member_record(&mut self, rec: &MemberRecord<'_>, left: bool) {
        let (node, incarnation, hb_seq, sent_ms) =
            (rec.node, rec.incarnation, rec.hb_seq, rec.sent_unix_ms);
        if self.snapshot_reading && node == self.node_id {
            self.own_record_ms = self.own_record_ms.max(sent_ms);
        }
        let reading = self.snapshot_reading;
        let Some(r) = self.remote(node, incarnation, false) else {
            return;
        };
        if reading {
            let newer = r
                .snapshot_record
                .as_ref()
                .is_none_or(|old| left || (!old.left && hb_seq > old.hb_seq));
            if newer {
                r.snapshot_record = Some(Record {
                    hb_seq,
                    sent_ms,
                    left,
                    region: rec.region.to_owned(),
                    report_seq: rec.report_seq,
                    snapshot: rec.snapshot,
                });
            }
        } else if left {
            self.leave(node, incarnation, false);
        }
    }

    /// The snapshot read ended (complete or not, the records read are judged).
    fn finish_snapshot(&mut self, complete: bool) {
        self.snapshot_reading = false;
        self.reports_read = None;
        self.snapshot_loaded |= complete;
        let now_ms = self.wall.as_unix_ms().max(self.own_record_ms);
        let ttl_ms = self.state.heartbeat_ttl.as_millis();
        let now = self.now_ns();
        let judged: Vec<(String, u64, Record)> = self
            .remotes
            .iter_mut()
            .filter_map(|(id, r)| {
                r.snapshot_record
                    .take()
                    .map(|rec| (id.clone(), r.incarnation, rec))
            })
            .collect();
        for (node, incarnation, rec) in judged {
            let Record {
                hb_seq,
                sent_ms,
                left,
                region,
                report_seq: _,
                snapshot: _,
            } = rec;
            if self.remotes[&node].left {
                continue;
            }
            if left {
                self.leave(&node, incarnation, false);
                continue;
            }
            let age_ms = now_ms.saturating_sub(sent_ms);
            if u128::from(age_ms) <= ttl_ms {
                let heard = now - i128::from(age_ms) * 1_000_000;
                self.heartbeat(&node, incarnation, hb_seq, Some(heard), false, &region);
            }
        }
    }

    /// The remote `node` at `incarnation`, or `None` if that incarnation is outdated: a live
    /// message of another incarnation is a later life when the current one is no longer
    /// active (unless the current one is tentative: a running life not yet heard); otherwise
    /// only a larger incarnation than every earlier life is.
    fn remote(&mut self, node: &str, incarnation: u64, live: bool) -> Option<&mut Remote> {
        if node == self.node_id {
            return None;
        }
        let active = self.remotes.get(node).is_some_and(|r| self.is_active(r));
        let reading = self.snapshot_reading;
        let now = self.now_ns();
        let ttl = i128::try_from(self.state.heartbeat_ttl.as_nanos()).unwrap_or(i128::MAX);
        let r = self.remotes.entry(node.to_owned()).or_default();
        if incarnation != r.incarnation {
            // Only a running process speaks live; a newer life is news however it comes.
            let tentative = r.tentative_until.is_some_and(|until| now < until);
            let switch = (live && !active && !tentative)
                || (incarnation > r.incarnation && incarnation > r.retired);
            if !switch {
                return None;
            }
            let retired = r.retired.max(r.incarnation);
            *r = Remote {
                incarnation,
                retired,
                tentative_until: (!live && !reading).then(|| now.saturating_add(ttl)),
                ..Remote::default()
            };
        }
        Some(r)
    }

    fn leave(&mut self, node: &str, incarnation: u64, live: bool) {
        if let Some(r) = self.remote(node, incarnation, live) {
            r.left = true;
            r.last_heard = None;
            r.reports.clear();
        }
    }

    fn heartbeat(
        &mut self,
        node: &str,
        incarnation: u64,
        seq: u64,
        heard: Option<i128>,
        live: bool,
        region: &str,
    ) {
        let Some(r) = self.remote(node, incarnation, live) else {
            return;
        };
        if r.left {
            return;
        }
        // A record too old to vouch (`heard == None`) changes nothing but the incarnation.
        let Some(at) = heard else {
            return;
        };
        if seq > r.hb_seq || (live && seq == r.hb_seq && r.hb_from_record) {
            if r.hb_seq == 0 {
                // A member's region is that of its first heartbeat in its incarnation.
                r.region = region.to_owned();
            }
            r.hb_seq = seq;
            r.hb_from_record = !live;
            r.tentative_until = None;
            r.last_heard = Some(r.last_heard.map_or(at, |t| t.max(at)));
        }
    }

    fn report(
        &mut self,
        node: &str,
        incarnation: u64,
        endpoint: &str,
        seq: u64,
        state: ReportState,
    ) {
        let Some(r) = self.remote(node, incarnation, false) else {
            return;
        };
        if r.left {
            return;
        }
        let newer = r.reports.get(endpoint).is_none_or(|&(old, _)| seq > old);
        if newer {
            r.reports.insert(endpoint.to_owned(), (seq, state));
        }
    }

    fn is_active(&self, r: &Remote) -> bool {
        let ttl = i128::try_from(self.state.heartbeat_ttl.as_nanos()).unwrap_or(i128::MAX);
        r.last_heard.is_some_and(|t| self.now_ns() - t <= ttl)
    }

    /// Active members, the local node included, sorted.
    pub fn active_members(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .remotes
            .iter()
            .filter(|(_, r)| self.is_active(r))
            .map(|(id, _)| id.clone())
            .chain(std::iter::once(self.node_id.clone()))
            .collect();
        ids.sort();
        ids
    }

    /// Every endpoint the model has heard of.
    pub fn endpoints(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.local.keys().cloned().collect();
        for r in self.remotes.values() {
            out.extend(r.reports.keys().cloned());
        }
        out
    }

    /// The decision for `endpoint`: the rule's, with the verdict in force under holds.
    pub fn decision(&self, endpoint: &str) -> Decision {
        let mut d = self.rule_decision(endpoint);
        let held = self.held.get(endpoint).copied().unwrap_or_default();
        d.healthy = held.shown;
        if let (Some(shown), Some(since)) = (held.shown, held.pending_since) {
            d.pending = Some(Pending {
                healthy: !shown,
                at: since + self.hold_of(!shown),
            });
        }
        d
    }

    /// The rule's decision for `endpoint` now, before holds, computed from scratch with the
    /// guide's words.
    fn rule_decision(&self, endpoint: &str) -> Decision {
        let local = self.local.get(endpoint).copied();
        // "Only reports from active members within heartbeatTTL are counted."
        let mut others_healthy = 0u32;
        let mut others_total = 0u32;
        // Every counted report (ours included) by its reporter's region: (healthy, total).
        let mut by_region: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        for r in self.remotes.values() {
            if !self.is_active(r) {
                continue;
            }
            let healthy = match r.reports.get(endpoint) {
                Some((_, ReportState::Healthy)) => true,
                Some((_, ReportState::Unhealthy)) => false,
                Some((_, ReportState::Withdrawn)) | None => continue,
            };
            others_total += 1;
            others_healthy += u32::from(healthy);
            let region = by_region.entry(&r.region).or_default();
            region.0 += u32::from(healthy);
            region.1 += 1;
        }
        if let Some(healthy) = local {
            let region = by_region.entry(&self.region).or_default();
            region.0 += u32::from(healthy);
            region.1 += 1;
        }
        let healthy_reports = others_healthy + u32::from(local == Some(true));
        let total_reports = others_total + u32::from(local.is_some());
        let q = u64::from(self.state.quorum_min_percent);
        // "healthy*100/total >= quorumMinPercent"
        let quorum = |h: u32, t: u32| (u64::from(h) * 100 / u64::from(t)) >= q;
        // A region votes healthy when its own reports meet the threshold.
        let total_regions = by_region.len() as u32;
        let healthy_regions = by_region.values().filter(|(h, t)| quorum(*h, *t)).count() as u32;
        // Under `regions` scope the quorum is over the region votes (whose reports are the
        // counted ones: ours included under global-quorum, and under prefer-local only when we
        // have no observation, so the other members' alone).
        let scoped = |h: u32, t: u32| match self.state.quorum_scope {
            QuorumScope::Members => quorum(h, t),
            QuorumScope::Regions => quorum(healthy_regions, total_regions),
        };
        let (healthy, source) = match self.state.policy {
            Policy::LocalOnly => match local {
                Some(l) => (Some(l), Source::Local),
                None => (None, Source::Unknown),
            },
            Policy::PreferLocal => match local {
                Some(l) => (Some(l), Source::Local),
                None if others_total > 0 => {
                    (Some(scoped(others_healthy, others_total)), Source::Global)
                }
                None => (None, Source::Unknown),
            },
            Policy::GlobalAnyHealthy | Policy::GlobalQuorum if others_total == 0 => match local {
                Some(l) => (Some(l), Source::FallbackLocal),
                None => (None, Source::Unknown),
            },
            Policy::GlobalAnyHealthy => (Some(healthy_reports >= 1), Source::Global),
            Policy::GlobalQuorum => (Some(scoped(healthy_reports, total_reports)), Source::Global),
        };
        Decision {
            healthy,
            source,
            healthy_reports,
            total_reports,
            healthy_regions,
            total_regions,
            local,
            pending: None,
        }
    }
}

/// The kind byte of an encoded message (the envelope's fourth byte).
fn msg_kind(bytes: &[u8]) -> Option<u8> {
    bytes.get(3).copied()
}
