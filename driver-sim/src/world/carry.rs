//! Carrying out a core's outputs as the NATS driver does, delivering what arrives, and
//! re-arming each node's timer from its core's `poll_timeout`.
//!
//! | output | what the simulation does |
//! | --- | --- |
//! | `Publish` | fans out to every other running node (the NATS driver connects with `no_echo`), each copy delayed, lost, duplicated or reordered per link (in order per link otherwise, as NATS keeps a publisher's order); dropped on arrival if the path closed meanwhile; a copy the link's `loss` drops is told to its receiver as `MessagesLost { count: 1 }` when it would have arrived (a NATS slow consumer) |
//! | `KvPut`, `KvDelete` | applied to the KV store at once if the node reaches it, each write taking the store's next revision; for a put `KvPutOk` is handed back with that revision (a snapshot chunk's too, `kind: Chunk`, `seq` its generation), else `KvPutFailed` (a failed delete is dropped) |
//! | `ReadSnapshot` | after one link latency: every entry of the members bucket, then `KvReadDone(Snapshot, complete: true)`; `complete: false` alone if the node does not reach the KV store then |
//! | `ReadSnapshotReports` | after one link latency, from the one health bucket whatever `region` (no region buckets, `region` is ""): the value of each key of `chunks` that holds one, and for each `(filter, from_revision)` of `key_filters` every key matching `filter` (`<node>.*` or `*.*`: report keys, never a chunk's) whose value was stored at or after revision `from_revision` (0 or 1: all), each key once (in key order), then `KvReadDone(SnapshotReports { region }, complete: true)`; `complete: false` alone if the node does not reach the KV store then. When the node's snapshot is loaded by it, its view of every other member's reports is compared with the health bucket's report keys (see [`crate::invariants::snapshot`]) |
//! | `Resync`, `ReadMembers` | after one link latency, the matching entries are handed in (a re-sync's filter `<node>.*` matches the member's report keys, not its chunks), then `KvReadDone` (`complete: false` and no entries if the node does not reach the KV store then) |
//! | `Decision`, `MemberUp`, `MemberDown` | recorded in the trace (with holds, every decision whose verdict, source, pending change or rule verdict changed is recorded after each input, from `Node::poll_updated`, and a `Decision` output only if not recorded yet) |
//! | `IncarnationRaised` | noted in the trace; the life's incarnation is updated |
//! | `ApplyConfig`, `ConfigCommitted`, `ConfigFailed`, `ConfigRejected`, `ConfigIgnored` | nothing (no config sync is simulated) |

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use gslb_state_core::codec::{self, Message};
use gslb_state_core::{Bucket, Input, KvRead, MessageKind, Output};

use crate::invariants::snapshot as snapshot_check;
use crate::net::MAX_COPIES;
use crate::scenario::{NS_PER_MS, fmt_time};
use crate::trace::Record;

use super::lives::Recorded;
use super::queue::{Phase, SimEvent};
use super::{DownEvent, World};

/// Inputs handed to one node before its outputs are drained, at most.
const MAX_INPUTS_PER_DRAIN: usize = 1024;

/// A message on its way to its receivers, with their arrival times in order.
#[derive(Debug)]
pub(super) struct Flight {
    /// The sender's node index.
    pub(super) from: u32,
    pub(super) subject: String,
    pub(super) payload: Bytes,
    /// The heartbeat it carries, when heartbeats are tracked
    /// ([`super::RunOptions::track_expiry`]).
    pub(super) heartbeat: Option<HeartbeatId>,
    /// The copies of this flight were lost on the way: each "arrival" tells its receiver
    /// that a message was lost ([`gslb_state_core::Input::MessagesLost`]).
    pub(super) lost: bool,
    /// Where and when each copy arrives, sorted.
    pub(super) arrivals: Vec<Arrival>,
}

/// One copy of a [`Flight`] reaching one receiver.
///
/// Sorted by time first (then receiver and life, which only makes the order total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Arrival {
    /// When it arrives.
    pub(super) at_ns: u64,
    /// The receiver's node index.
    pub(super) to: u32,
    /// The receiver's life when the message was sent: a copy for an earlier life is dropped.
    pub(super) life: u32,
}

/// A heartbeat's place in its sender's sequence, ordered by incarnation, then sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct HeartbeatId {
    /// The sender's incarnation.
    pub(super) incarnation: u64,
    /// The heartbeat's sequence number in that incarnation.
    pub(super) seq: u64,
}

/// The newest heartbeat a node has accepted from another, and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeardHeartbeat {
    /// Which heartbeat.
    pub(super) id: HeartbeatId,
    /// When it arrived; for one first learned from a membership record of the start-up
    /// snapshot, when it was sent, by the sender's clock.
    pub(super) at_ns: u64,
}

impl HeardHeartbeat {
    /// Keeps in `slot` whichever of it and `id` (arrived at `at_ns`) is newer.
    fn keep_newest(slot: &mut Option<HeardHeartbeat>, id: HeartbeatId, at_ns: u64) {
        if slot.is_none_or(|heard| id > heard.id) {
            *slot = Some(HeardHeartbeat { id, at_ns });
        }
    }
}

/// A KV read a core asked for, carried out after one link latency.
#[derive(Debug)]
pub(super) enum KvReadRequest {
    /// The start-up snapshot's first part: the members bucket whole (`Output::ReadSnapshot`).
    Snapshot,
    /// The start-up snapshot's reports (`Output::ReadSnapshotReports`).
    SnapshotReports {
        /// The region asked for (echoed back; the one health bucket is read whatever it is).
        region: String,
        /// Keys of compacted-snapshot chunks, read by direct get.
        chunks: Vec<String>,
        /// Key filters, each with the revision from which on its keys are read.
        key_filters: Vec<(String, u64)>,
    },
    /// One member's reports (`Output::Resync`).
    Resync {
        /// The member whose reports are read.
        node: String,
        /// The KV key filter of its reports.
        filter: String,
    },
    /// The members bucket (`Output::ReadMembers`).
    Members,
}

impl World<'_> {
    /// Arrival `arrival` of `flight` takes place, and the next one is scheduled.
    pub(super) fn deliver(&mut self, flight: Rc<Flight>, arrival: usize) {
        if let Some(next) = flight.arrivals.get(arrival + 1) {
            self.schedule(
                next.at_ns,
                Phase::Event,
                SimEvent::Deliver {
                    flight: flight.clone(),
                    arrival: arrival as u32 + 1,
                },
            );
        }
        self.deliver_one(&flight, arrival);
    }

    /// Hands arrival `arrival` of `flight` to its receiver, if the path is still open: the
    /// message, or for a lost one the news that a message was lost.
    pub(super) fn deliver_one(&mut self, flight: &Flight, arrival: usize) {
        let Arrival { to, life, .. } = flight.arrivals[arrival];
        let to = to as usize;
        let from = flight.from as usize;
        if self.nodes[to].life != life
            || self.nodes[to].core.is_none()
            || !self.net.path_open(from, to)
        {
            return;
        }
        if flight.lost {
            self.outcome.losses_told += 1;
            self.feed(to, vec![Input::MessagesLost { count: 1 }]);
            return;
        }
        if let Some(id) = flight.heartbeat {
            HeardHeartbeat::keep_newest(&mut self.nodes[to].heard[from], id, self.now_ns);
        }
        self.outcome.deliveries += 1;
        let now = self.now_of(to);
        if let Some(core) = self.nodes[to].core.as_mut() {
            core.handle_received(now, &flight.subject, &flight.payload);
            self.drain(to);
        }
    }

    /// Node `node`'s timer fires, if it is still armed for now in life `life` (a later arm
    /// or a restart leaves a stale timer event behind).
    pub(super) fn fire_timer(&mut self, node: u32, life: u32) {
        let n = node as usize;
        if self.nodes[n].life != life || self.nodes[n].timer_at_ns != Some(self.now_ns) {
            return;
        }
        self.nodes[n].timer_at_ns = None;
        let now = self.now_of(n);
        if let Some(core) = self.nodes[n].core.as_mut() {
            core.handle_timeout(now);
            self.drain(n);
        }
    }

    /// Hands `inputs` to node `n`, draining its outputs every [`MAX_INPUTS_PER_DRAIN`]
    /// inputs.
    pub(super) fn feed(&mut self, n: usize, inputs: Vec<Input>) {
        for chunk in inputs.chunks(MAX_INPUTS_PER_DRAIN) {
            let now = self.now_of(n);
            let Some(core) = self.nodes[n].core.as_mut() else {
                return;
            };
            if self.holds.is_some() {
                // Holds see the verdict in force after each input: so does the trace.
                for input in chunk {
                    let Some(core) = self.nodes[n].core.as_mut() else {
                        return;
                    };
                    core.handle(now, input.clone());
                    self.record_updates(n);
                }
            } else {
                for input in chunk {
                    core.handle(now, input.clone());
                }
            }
            self.drain(n);
        }
    }

    /// Carries out every output of node `n`, then re-arms its timer.
    pub(super) fn drain(&mut self, n: usize) {
        let mut membership_changed = false;
        // The decisions after the input just handled, before its outputs.
        self.record_updates(n);
        loop {
            let mut outputs = std::mem::take(&mut self.outputs);
            let Some(core) = self.nodes[n].core.as_mut() else {
                return;
            };
            while let Some(output) = core.poll_output() {
                outputs.push(output);
            }
            if outputs.is_empty() {
                self.outputs = outputs;
                break;
            }
            let mut feedback = Vec::new();
            for output in outputs.drain(..) {
                membership_changed |= self.carry_out(n, output, &mut feedback);
            }
            self.outputs = outputs;
            if !feedback.is_empty() {
                let now = self.now_of(n);
                for input in feedback {
                    let core = self.nodes[n].core.as_mut().expect("checked above");
                    core.handle(now, input);
                    self.record_updates(n);
                }
            }
        }
        if membership_changed && !self.options.quiet {
            let active = self.nodes[n]
                .core
                .as_ref()
                .map(|c| c.active_member_ids())
                .unwrap_or_default();
            let t_ns = self.now_ns;
            self.record(Record::Members {
                t_ns,
                node: n as u32,
                active,
            });
        }
        self.arm_timer(n);
    }

    /// When the scenario has holds: records every decision of node `n` whose verdict,
    /// source, pending change or rule verdict (recomputed from its counts) differs from the
    /// one last recorded, so that the trace shows when each change started to be pending,
    /// was called off, and what the rule said meanwhile
    /// ([`gslb_state_core::Output::Decision`] tells only verdict and source changes, and only
    /// once a batch of inputs is handled). Called after every input.
    fn record_updates(&mut self, n: usize) {
        let Some(rule) = self.holds else {
            return;
        };
        let t_ns = self.now_ns;
        let mut records = Vec::new();
        let node = &mut self.nodes[n];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let mut updated = Vec::new();
        while let Some((endpoint, d)) = core.poll_updated() {
            updated.push((endpoint.to_owned(), d));
        }
        for (endpoint, d) in updated {
            let d = node.in_sim_time(d);
            let seen = Recorded::of(rule, &d);
            if node.recorded.get(&endpoint) != Some(&seen) {
                node.recorded.insert(endpoint.clone(), seen);
                records.push(Record::Decision {
                    t_ns,
                    node: n as u32,
                    endpoint,
                    decision: d,
                });
            }
        }
        for r in records {
            self.record(r);
        }
    }

    /// Schedules node `n`'s timer for when its core wants to be called back, converted from
    /// its monotonic clock to simulated time.
    fn arm_timer(&mut self, n: usize) {
        let node = &self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        let t = node.sim_time_of(core.poll_timeout()).max(self.now_ns);
        let node = &mut self.nodes[n];
        if node.timer_at_ns.is_none_or(|at| t < at) {
            node.timer_at_ns = Some(t);
            let life = node.life;
            self.schedule(
                t,
                Phase::Event,
                SimEvent::Timer {
                    node: n as u32,
                    life,
                },
            );
        }
    }

    /// Carries out one output, pushing what it hands back (KV write results) to `feedback`;
    /// returns true if membership changed.
    fn carry_out(&mut self, n: usize, output: Output, feedback: &mut Vec<Input>) -> bool {
        match output {
            Output::Publish {
                subject,
                payload,
                kind,
            } => {
                self.publish(n, subject, payload, kind);
                false
            }
            Output::KvPut {
                bucket,
                key,
                value,
                kind,
                seq,
            } => {
                let chunk = kind == MessageKind::Chunk;
                if self.net.kv_reachable(n) {
                    let revision = self.kv.put(bucket, key.clone(), value);
                    self.outcome.chunk_writes += u64::from(chunk);
                    feedback.push(Input::KvPutOk {
                        bucket,
                        key,
                        seq,
                        revision,
                    });
                } else {
                    self.outcome.chunk_writes_failed += u64::from(chunk);
                    feedback.push(Input::KvPutFailed { bucket, key, seq });
                }
                false
            }
            Output::KvDelete { bucket, key } => {
                if self.net.kv_reachable(n) {
                    self.kv.delete(bucket, &key);
                }
                false
            }
            Output::Resync {
                node, key_filter, ..
            } => {
                let read = KvReadRequest::Resync {
                    node,
                    filter: key_filter,
                };
                self.schedule_read(n, read);
                false
            }
            Output::ReadSnapshot => {
                self.schedule_read(n, KvReadRequest::Snapshot);
                false
            }
            Output::ReadSnapshotReports {
                region,
                chunks,
                key_filters,
            } => {
                let read = KvReadRequest::SnapshotReports {
                    region,
                    chunks,
                    key_filters,
                };
                self.schedule_read(n, read);
                false
            }
            Output::ReadMembers => {
                self.schedule_read(n, KvReadRequest::Members);
                false
            }
            Output::Decision { endpoint, decision } => {
                if !self.options.quiet {
                    let t_ns = self.now_ns;
                    let decision = self.nodes[n].in_sim_time(decision);
                    if let Some(rule) = self.holds {
                        // Recorded already as the input that made it was handled.
                        let seen = Recorded::of(rule, &decision);
                        if self.nodes[n].recorded.get(&endpoint) == Some(&seen) {
                            return false;
                        }
                        self.nodes[n].recorded.insert(endpoint.clone(), seen);
                    }
                    self.record(Record::Decision {
                        t_ns,
                        node: n as u32,
                        endpoint,
                        decision,
                    });
                }
                false
            }
            Output::MemberUp { .. } => true,
            Output::MemberDown { node, reason } => {
                if self.options.track_expiry {
                    let last_heartbeat_ns = self
                        .scenario
                        .node_index(&node)
                        .and_then(|m| self.nodes[n].heard[m])
                        .map(|heard| heard.at_ns);
                    self.outcome.downs.push(DownEvent {
                        t_ns: self.now_ns,
                        observer: n as u32,
                        member: node,
                        reason,
                        last_heartbeat_ns,
                    });
                }
                true
            }
            Output::IncarnationRaised { from, to } => {
                let idx = self.nodes[n].life_index;
                self.outcome.lives[idx].incarnation = to;
                if !self.options.quiet {
                    let t_ns = self.now_ns;
                    self.record(Record::Note {
                        t_ns,
                        node: n as u32,
                        text: format!(
                            "incarnation raised from {from} to {to}: the KV holds a record of an \
                             earlier life ahead of its wall clock"
                        ),
                    });
                }
                false
            }
            Output::ApplyConfig { .. }
            | Output::ConfigCommitted { .. }
            | Output::ConfigFailed { .. }
            | Output::ConfigRejected { .. }
            | Output::ConfigIgnored { .. } => false,
        }
    }

    /// Reads the KV for node `n` after one link latency.
    fn schedule_read(&mut self, n: usize, read: KvReadRequest) {
        let t = self.now_ns + self.kv_delay_ns;
        let life = self.nodes[n].life;
        self.schedule(
            t,
            Phase::Event,
            SimEvent::KvRead {
                node: n as u32,
                life,
                read,
            },
        );
    }

    /// Fans a publish out to every other running node whose path is open. Copies the link's
    /// `loss` drops go out as a second flight that tells each receiver of its loss when the
    /// copy would have arrived.
    fn publish(&mut self, n: usize, subject: String, payload: Bytes, kind: MessageKind) {
        if !self.net.connected(n) {
            return;
        }
        let node = &mut self.nodes[n];
        node.messages_published += 1;
        let (life, message_number) = (node.life, node.messages_published);
        let heartbeat = if self.options.track_expiry && kind == MessageKind::Heartbeat {
            self.outcome.heartbeats_sent[n].push(self.now_ns);
            match codec::decode(&payload) {
                Ok(Message::Heartbeat(hb)) => Some(HeartbeatId {
                    incarnation: hb.incarnation,
                    seq: hb.seq,
                }),
                _ => None,
            }
        } else {
            None
        };
        let mut arrivals = Vec::with_capacity(self.nodes.len());
        let mut losses = Vec::new();
        let mut delays = [0u64; MAX_COPIES];
        for to in 0..self.nodes.len() {
            // The NATS driver connects with `no_echo`: a node does not hear itself.
            if to == n || self.nodes[to].core.is_none() || !self.net.path_open(n, to) {
                continue;
            }
            let fate =
                self.net
                    .delays(self.scenario.seed, n, life, message_number, to, &mut delays);
            let last_ns = &mut self.link_last_arrival_ns[n * self.nodes.len() + to];
            let receiver = Arrival {
                at_ns: 0,
                to: to as u32,
                life: self.nodes[to].life,
            };
            if fate.lost {
                // Noticed in order with what did arrive; it moves nothing after it.
                let at_ns = (self.now_ns + delays[0]).max(*last_ns);
                losses.push(Arrival { at_ns, ..receiver });
                continue;
            }
            for (copy, delay) in delays[..fate.copies].iter().enumerate() {
                let mut at_ns = self.now_ns + delay;
                if copy == 0 && !fate.held_back {
                    // One publisher's messages arrive in order (NATS keeps per-connection
                    // order); only a held-back message lets later ones overtake it.
                    at_ns = at_ns.max(*last_ns);
                    *last_ns = at_ns;
                }
                arrivals.push(Arrival { at_ns, ..receiver });
            }
        }
        if !losses.is_empty() {
            self.fly(Flight {
                from: n as u32,
                subject: String::new(),
                payload: Bytes::new(),
                heartbeat: None,
                lost: true,
                arrivals: losses,
            });
        }
        self.fly(Flight {
            from: n as u32,
            subject,
            payload,
            heartbeat,
            lost: false,
            arrivals,
        });
    }

    /// Schedules the first arrival of `flight` (arrivals in any order; none is fine).
    fn fly(&mut self, mut flight: Flight) {
        if flight.arrivals.is_empty() {
            return;
        }
        flight.arrivals.sort_unstable();
        let first_ns = flight.arrivals[0].at_ns;
        let flight = Rc::new(flight);
        self.schedule(
            first_ns,
            Phase::Event,
            SimEvent::Deliver { flight, arrival: 0 },
        );
    }

    /// Carries out a KV read for node `n` and hands in what it read.
    pub(super) fn kv_read(&mut self, n: usize, read: KvReadRequest) {
        if self.nodes[n].core.is_none() {
            return;
        }
        let reachable = self.net.kv_reachable(n);
        let mut inputs = Vec::new();
        // The health bucket's report keys as a full per-key read gives them, to hold the
        // view the snapshot leaves against ([`snapshot_check`]).
        let mut per_key = None;
        match read {
            KvReadRequest::Snapshot if !reachable => {
                // The core asks again at a later maintenance tick.
                inputs.push(Input::KvReadDone {
                    read: KvRead::Snapshot,
                    complete: false,
                });
            }
            KvReadRequest::Snapshot => {
                let idx = self.nodes[n].life_index;
                self.outcome.lives[idx].snapshot_ns = Some(self.now_ns);
                self.nodes[n].snapshot_kv_seqs.clear();
                for (key, value) in self.kv.read(Bucket::Members, ">") {
                    if let Ok(gslb_state_core::codec::Message::Member(rec)) =
                        gslb_state_core::codec::decode(&value)
                    {
                        self.nodes[n]
                            .snapshot_kv_seqs
                            .insert((rec.node.to_owned(), rec.incarnation), rec.kv_seq);
                    }
                    if self.options.track_expiry {
                        self.heard_in_snapshot(n, &value);
                    }
                    inputs.push(Input::KvEntry {
                        bucket: Bucket::Members,
                        key,
                        value,
                    });
                }
                inputs.push(Input::KvReadDone {
                    read: KvRead::Snapshot,
                    complete: true,
                });
            }
            KvReadRequest::SnapshotReports {
                region,
                chunks,
                key_filters,
            } => {
                if reachable {
                    let entries = self.snapshot_reports(&chunks, &key_filters);
                    for (key, value) in entries {
                        inputs.push(Input::KvEntry {
                            bucket: Bucket::Health,
                            key,
                            value,
                        });
                    }
                    let core = self.nodes[n].core.as_ref().expect("checked above");
                    if !self.options.quiet && !core.snapshot_loaded() {
                        // What the core promises: every report its members' records said
                        // was durable when they were read.
                        let durable = &self.nodes[n].snapshot_kv_seqs;
                        let mut reports =
                            snapshot_check::per_key_reports(&self.kv, &self.nodes[n].id);
                        reports.retain(|r| {
                            durable
                                .get(&(r.node.clone(), r.incarnation))
                                .is_some_and(|&kv_seq| r.seq <= kv_seq)
                        });
                        per_key = Some(reports);
                    }
                }
                inputs.push(Input::KvReadDone {
                    read: KvRead::SnapshotReports { region },
                    complete: reachable,
                });
            }
            KvReadRequest::Members => {
                if reachable {
                    for (key, value) in self.kv.read(Bucket::Members, ">") {
                        inputs.push(Input::KvEntry {
                            bucket: Bucket::Members,
                            key,
                            value,
                        });
                    }
                }
                inputs.push(Input::KvReadDone {
                    read: KvRead::Members,
                    complete: reachable,
                });
            }
            KvReadRequest::Resync { node, filter } => {
                if reachable {
                    for (key, value) in self.kv.read(Bucket::Health, &filter) {
                        inputs.push(Input::KvEntry {
                            bucket: Bucket::Health,
                            key,
                            value,
                        });
                    }
                }
                inputs.push(Input::KvReadDone {
                    read: KvRead::Reports { node },
                    complete: reachable,
                });
            }
        }
        self.feed(n, inputs);
        if let Some(per_key) = per_key
            && let Some(core) = self.nodes[n].core.as_ref()
            && core.snapshot_loaded()
        {
            let t_ns = self.now_ns;
            let id = &self.nodes[n].id;
            for m in snapshot_check::view_mismatches(core, &per_key) {
                let text = format!("at {}: {id} after its snapshot: {m}", fmt_time(t_ns));
                self.outcome.snapshot_mismatches.push(text);
            }
        }
    }

    /// What [`Output::ReadSnapshotReports`] reads from the health bucket: the value under
    /// each of `chunks` that holds one, and for each `(filter, from_revision)` of
    /// `key_filters` every key matching `filter` stored at or after revision
    /// `from_revision`; each key once, in key order.
    fn snapshot_reports(
        &mut self,
        chunks: &[String],
        key_filters: &[(String, u64)],
    ) -> Vec<(String, Bytes)> {
        let mut found: BTreeMap<&str, &Bytes> = BTreeMap::new();
        for key in chunks {
            if let Some(v) = self.kv.get(Bucket::Health, key) {
                found.insert(key, &v.value);
                self.outcome.chunks_read += 1;
            }
        }
        for (filter, from) in key_filters {
            for (key, v) in self.kv.entries(Bucket::Health, filter) {
                if v.revision >= *from {
                    found.insert(key, &v.value);
                }
            }
        }
        found
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }

    /// A membership record read in the start-up snapshot vouches for its heartbeat as if it
    /// had arrived when it was sent (by the sender's clock, as the design says): track it so.
    fn heard_in_snapshot(&mut self, n: usize, value: &Bytes) {
        let Ok(Message::Member(record)) = codec::decode(value) else {
            return;
        };
        let Some(m) = self.scenario.node_index(record.node) else {
            return;
        };
        let age_ms = self.nodes[n]
            .wall_clock
            .wall_ms(self.now_ns)
            .saturating_sub(record.sent_unix_ms);
        let sent_ns = self.now_ns.saturating_sub(age_ms * NS_PER_MS);
        let id = HeartbeatId {
            incarnation: record.incarnation,
            seq: record.hb_seq,
        };
        HeardHeartbeat::keep_newest(&mut self.nodes[n].heard[m], id, sent_ns);
    }
}
