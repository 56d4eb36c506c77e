//! The reference model: plain, obviously-correct code that recomputes every decision from
//! scratch, from the same inputs as a [`Node`](crate::Node). Tests and the fuzzer drive both
//! and compare every decision after every step.
//!
//! Nothing here is incremental or bounded, and nothing is shared with the engine but the codec,
//! the name layout and the config parser (each tested on its own). It is slow on purpose.

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{self, Message, ReportState};
use crate::config::{Config, StateSettings};
use crate::input::{Input, KvRead};
use crate::names::{Bucket, Names, SubjectKind, check_endpoint_name};
use crate::node::NodeConfig;
use crate::policy::{Decision, Policy, Source};
use crate::time::{Instant, Now, WallTime};

/// What the model remembers of one remote node.
#[derive(Debug, Default, Clone)]
struct Remote {
    incarnation: u64,
    /// Highest heartbeat sequence seen in this incarnation.
    hb_seq: u64,
    /// `hb_seq` came from a snapshot record (its live heartbeat still counts once).
    hb_from_record: bool,
    /// Latest time a heartbeat of this incarnation was heard (or sent, for snapshot records).
    last_heard: Option<Instant>,
    /// Newest (sequence, state) per endpoint in this incarnation.
    reports: BTreeMap<String, (u64, ReportState)>,
}

/// The reference model of one node.
#[derive(Debug, Clone)]
pub struct Reference {
    names: Names,
    node_id: String,
    state: StateSettings,
    now: Instant,
    wall: WallTime,
    local: BTreeMap<String, bool>,
    remotes: BTreeMap<String, Remote>,
    config_version: u64,
    /// The start-up snapshot was read: membership records no longer vouch for liveness.
    snapshot_done: bool,
}

impl Reference {
    /// A model of the node `config` describes.
    pub fn new(config: &NodeConfig, now: Now) -> Self {
        Reference {
            names: Names::new(&config.cluster_id),
            node_id: config.node_id.clone(),
            state: config.state.clone(),
            now: now.mono,
            wall: now.wall,
            local: BTreeMap::new(),
            remotes: BTreeMap::new(),
            config_version: 0,
            snapshot_done: false,
        }
    }

    /// Advances time without an input.
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now.mono;
        self.wall = now.wall;
    }

    /// Hands in one input.
    pub fn handle(&mut self, now: Now, input: &Input) {
        self.handle_timeout(now);
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
                match (kind, msg) {
                    (SubjectKind::Heartbeat, Message::Heartbeat(hb)) => {
                        self.heartbeat(hb.node, hb.incarnation, hb.seq, Some(self.now));
                    }
                    (SubjectKind::Health, Message::Reports(b)) => {
                        // Even an empty batch tells of a newer incarnation.
                        if self.remote(b.node, b.incarnation).is_none() {
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
                    (Bucket::Members, Message::Member(rec)) => {
                        if self.names.parse_member_key(key).ok().as_deref() != Some(rec.node) {
                            return;
                        }
                        if self.snapshot_done {
                            // Anti-entropy: only a newer incarnation is news.
                            self.remote(rec.node, rec.incarnation);
                            return;
                        }
                        let age = self.wall.age_of(WallTime::from_unix_ms(rec.sent_unix_ms));
                        let heard = (age <= self.state.heartbeat_ttl).then(|| {
                            Instant::from_nanos(
                                self.now.as_nanos().saturating_sub(age.as_nanos() as u64),
                            )
                        });
                        self.heartbeat(rec.node, rec.incarnation, rec.hb_seq, heard);
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
                if *version <= self.config_version {
                    return;
                }
                if let Ok(c) = Config::from_yaml_bytes(yaml)
                    && c.cluster_id == self.names.cluster_id()
                {
                    self.config_version = *version;
                    let keep = self.state.enable_config_sync;
                    self.state = StateSettings {
                        enable_config_sync: keep,
                        ..c.state
                    };
                }
            }
            Input::KvReadDone {
                read: KvRead::Snapshot,
                ..
            } => self.snapshot_done = true,
            Input::Connectivity(_)
            | Input::KvReadDone { .. }
            | Input::KvPutOk { .. }
            | Input::KvPutFailed { .. } => {}
        }
    }

    /// The remote `node` at `incarnation`, or `None` if that incarnation is outdated.
    fn remote(&mut self, node: &str, incarnation: u64) -> Option<&mut Remote> {
        if node == self.node_id {
            return None;
        }
        let r = self.remotes.entry(node.to_owned()).or_default();
        if incarnation < r.incarnation {
            return None;
        }
        if incarnation > r.incarnation {
            *r = Remote {
                incarnation,
                ..Remote::default()
            };
        }
        Some(r)
    }

    fn heartbeat(&mut self, node: &str, incarnation: u64, seq: u64, heard: Option<Instant>) {
        let now = self.now;
        let Some(r) = self.remote(node, incarnation) else {
            return;
        };
        // A record too old to vouch (`heard == None`) changes nothing but the incarnation.
        let Some(at) = heard else {
            return;
        };
        let live = at == now;
        if seq > r.hb_seq || (live && seq == r.hb_seq && r.hb_from_record) {
            r.hb_seq = seq;
            r.hb_from_record = !live;
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
        let Some(r) = self.remote(node, incarnation) else {
            return;
        };
        let newer = r.reports.get(endpoint).is_none_or(|&(old, _)| seq > old);
        if newer {
            r.reports.insert(endpoint.to_owned(), (seq, state));
        }
    }

    fn is_active(&self, r: &Remote) -> bool {
        r.last_heard
            .is_some_and(|t| self.now.saturating_since(t) <= self.state.heartbeat_ttl)
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

    /// The decision for `endpoint`, computed from scratch with the guide's words.
    pub fn decision(&self, endpoint: &str) -> Decision {
        let local = self.local.get(endpoint).copied();
        // "Only reports from active members within heartbeatTTL are counted."
        let mut others_healthy = 0u32;
        let mut others_total = 0u32;
        for r in self.remotes.values() {
            if !self.is_active(r) {
                continue;
            }
            match r.reports.get(endpoint) {
                Some((_, ReportState::Healthy)) => {
                    others_healthy += 1;
                    others_total += 1;
                }
                Some((_, ReportState::Unhealthy)) => others_total += 1,
                Some((_, ReportState::Withdrawn)) | None => {}
            }
        }
        let healthy_reports = others_healthy + u32::from(local == Some(true));
        let total_reports = others_total + u32::from(local.is_some());
        let q = u64::from(self.state.quorum_min_percent);
        // "healthy*100/total >= quorumMinPercent"
        let quorum = |h: u32, t: u32| (u64::from(h) * 100 / u64::from(t)) >= q;
        let (healthy, source) = match self.state.policy {
            Policy::LocalOnly => match local {
                Some(l) => (Some(l), Source::Local),
                None => (None, Source::Unknown),
            },
            Policy::PreferLocal => match local {
                Some(l) => (Some(l), Source::Local),
                None if others_total > 0 => {
                    (Some(quorum(others_healthy, others_total)), Source::Global)
                }
                None => (None, Source::Unknown),
            },
            Policy::GlobalAnyHealthy | Policy::GlobalQuorum if others_total == 0 => match local {
                Some(l) => (Some(l), Source::FallbackLocal),
                None => (None, Source::Unknown),
            },
            Policy::GlobalAnyHealthy => (Some(healthy_reports >= 1), Source::Global),
            Policy::GlobalQuorum => (Some(quorum(healthy_reports, total_reports)), Source::Global),
        };
        Decision {
            healthy,
            source,
            healthy_reports,
            total_reports,
            local,
        }
    }
}
