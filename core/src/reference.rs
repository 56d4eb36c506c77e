//! The reference model: plain, obviously-correct code that recomputes every decision from
//! scratch, from the same inputs as a [`Node`](crate::Node). Tests and the fuzzer drive both
//! and compare every decision after every step.
//!
//! Nothing here is incremental or bounded, and nothing is shared with the engine but the codec,
//! the name layout and the config parser (each tested on its own). It is slow on purpose.
//!
//! Holds need a memory of the past: the model keeps, per endpoint, the verdict in force and
//! since when a change of it is pending, and after every input recomputes every endpoint's
//! verdict from scratch and applies the hold rule to it. (Having no bounds, it never refuses a
//! region: tests keep under [`MAX_REGIONS`](crate::MAX_REGIONS).)

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{self, Message, ReportState};
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
    /// The snapshot: being read (membership records are kept to be judged at its end).
    snapshot_reading: bool,
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
            own_record_ms: 0,
        }
    }

    /// The node asked for the start-up snapshot ([`Output::ReadSnapshot`](crate::Output)):
    /// when to read is the protocol's timing, which the model follows; what the read means is
    /// modelled.
    pub fn snapshot_requested(&mut self) {
        self.snapshot_reading = true;
        self.own_record_ms = 0;
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
                        self.member_record(
                            rec.node,
                            rec.incarnation,
                            rec.hb_seq,
                            rec.sent_unix_ms,
                            left,
                            rec.region,
                        );
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
                if self.snapshot_reading {
                    self.finish_snapshot(*complete);
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

    /// A membership record: during the snapshot, kept to be judged at its end; after it, only
    /// a newer incarnation (or a leave) is news.
    fn member_record(
        &mut self,
        node: &str,
        incarnation: u64,
        hb_seq: u64,
        sent_ms: u64,
        left: bool,
        region: &str,
    ) {
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
                    region: region.to_owned(),
                });
            }
        } else if left {
            self.leave(node, incarnation, false);
        }
    }

    /// The snapshot read ended (complete or not, the records read are judged).
    fn finish_snapshot(&mut self, _complete: bool) {
        self.snapshot_reading = false;
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
