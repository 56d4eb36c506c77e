//! Carrying out a core's outputs as the NATS driver does (publishes fan out over the
//! simulated network, KV writes and reads go to the simulated KV store), delivering what
//! arrives, and re-arming each node's timer from its core's `poll_timeout`.

use std::rc::Rc;

use bytes::Bytes;
use gslb_state_core::codec::{self, Message};
use gslb_state_core::{Bucket, Input, MessageKind, Output};

use crate::net::MAX_COPIES;
use crate::scenario::NS_PER_MS;
use crate::trace::Record;

use super::{DownEvent, Ev, FEED_CHUNK, Flight, KvRead, World};

impl World<'_> {
    pub(super) fn deliver(&mut self, flight: Rc<Flight>, idx: usize) {
        if let Some(&(t, _, _)) = flight.arrivals.get(idx + 1) {
            self.schedule(
                t,
                0,
                Ev::Deliver {
                    flight: flight.clone(),
                    idx: idx as u32 + 1,
                },
            );
        }
        self.deliver_one(&flight, idx);
    }

    /// Hands arrival `idx` of `flight` to its receiver, if the path is still open: the
    /// message, or for a lost one the news that a message was lost.
    pub(super) fn deliver_one(&mut self, flight: &Flight, idx: usize) {
        let (_, to, life) = flight.arrivals[idx];
        let to = to as usize;
        let from = flight.from as usize;
        if self.nodes[to].life != life
            || self.nodes[to].core.is_none()
            || !self.net.path_open(from, to)
        {
            return;
        }
        if flight.lost {
            self.out.losses_told += 1;
            self.feed(to, vec![Input::MessagesLost { count: 1 }]);
            return;
        }
        if let Some((inc, seq)) = flight.heartbeat {
            let heard = &mut self.nodes[to].heard[from];
            if heard.is_none_or(|(i, s, _)| (inc, seq) > (i, s)) {
                *heard = Some((inc, seq, self.now));
            }
        }
        self.out.deliveries += 1;
        let now = self.now_of(to);
        if let Some(core) = self.nodes[to].core.as_mut() {
            core.handle_received(now, &flight.subject, &flight.payload);
            self.drain(to);
        }
    }

    /// Hands `inputs` to node `n`, draining its outputs every [`FEED_CHUNK`] inputs.
    pub(super) fn feed(&mut self, n: usize, inputs: Vec<Input>) {
        for chunk in inputs.chunks(FEED_CHUNK) {
            let now = self.now_of(n);
            let Some(core) = self.nodes[n].core.as_mut() else {
                return;
            };
            for input in chunk {
                core.handle(now, input.clone());
            }
            self.drain(n);
        }
    }

    /// Carries out every output of node `n`, then re-arms its timer.
    pub(super) fn drain(&mut self, n: usize) {
        let mut membership_changed = false;
        loop {
            let mut outs = std::mem::take(&mut self.outputs);
            let Some(core) = self.nodes[n].core.as_mut() else {
                return;
            };
            while let Some(o) = core.poll_output() {
                outs.push(o);
            }
            if outs.is_empty() {
                self.outputs = outs;
                break;
            }
            let mut feedback = Vec::new();
            for o in outs.drain(..) {
                membership_changed |= self.carry_out(n, o, &mut feedback);
            }
            self.outputs = outs;
            if !feedback.is_empty() {
                let now = self.now_of(n);
                let core = self.nodes[n].core.as_mut().expect("checked above");
                for input in feedback {
                    core.handle(now, input);
                }
            }
        }
        if membership_changed && !self.opts.quiet {
            let active = self.nodes[n]
                .core
                .as_ref()
                .map(|c| c.active_member_ids())
                .unwrap_or_default();
            let t_ns = self.now;
            self.record(Record::Members {
                t_ns,
                node: n as u32,
                active,
            });
        }
        self.arm_timer(n);
    }

    /// Schedules node `n`'s timer for when its core wants to be called back, converted from
    /// its monotonic clock to simulated time.
    fn arm_timer(&mut self, n: usize) {
        let node = &self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        let t = node.sim_time_of(core.poll_timeout()).max(self.now);
        let node = &mut self.nodes[n];
        if node.timer_at.is_none_or(|at| t < at) {
            node.timer_at = Some(t);
            let life = node.life;
            self.schedule(
                t,
                0,
                Ev::Timer {
                    node: n as u32,
                    life,
                },
            );
        }
    }

    /// Carries out one output, pushing what it hands back (KV write results) to `feedback`;
    /// returns true if membership changed.
    fn carry_out(&mut self, n: usize, out: Output, feedback: &mut Vec<Input>) -> bool {
        match out {
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
                seq,
                ..
            } => {
                if self.net.kv_reachable(n) {
                    self.kv.put(bucket, key.clone(), value);
                    feedback.push(Input::KvPutOk { bucket, key, seq });
                } else {
                    feedback.push(Input::KvPutFailed { bucket, key });
                }
                false
            }
            Output::KvDelete { bucket, key } => {
                if self.net.kv_reachable(n) {
                    self.kv.delete(bucket, &key);
                }
                false
            }
            Output::Resync { node, key_filter } => {
                let read = KvRead::Resync {
                    node,
                    filter: key_filter,
                };
                self.schedule_read(n, read);
                false
            }
            Output::ReadSnapshot => {
                self.schedule_read(n, KvRead::Snapshot);
                false
            }
            Output::ReadMembers => {
                self.schedule_read(n, KvRead::Members);
                false
            }
            Output::Decision { endpoint, decision } => {
                if !self.opts.quiet {
                    let t_ns = self.now;
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
                if self.opts.track_expiry {
                    let last_heartbeat_ns = self
                        .scenario
                        .node_index(&node)
                        .and_then(|m| self.nodes[n].heard[m])
                        .map(|(_, _, t)| t);
                    self.out.downs.push(DownEvent {
                        t_ns: self.now,
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
                self.out.lives[idx].incarnation = to;
                if !self.opts.quiet {
                    let t_ns = self.now;
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
    fn schedule_read(&mut self, n: usize, read: KvRead) {
        let t = self.now + self.kv_delay_ns;
        let life = self.nodes[n].life;
        self.schedule(
            t,
            0,
            Ev::KvRead {
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
        node.published += 1;
        let (life, msg) = (node.life, node.published);
        let heartbeat = if self.opts.track_expiry && kind == MessageKind::Heartbeat {
            self.out.heartbeats_sent[n].push(self.now);
            match codec::decode(&payload) {
                Ok(Message::Heartbeat(hb)) => Some((hb.incarnation, hb.seq)),
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
            let fate = self
                .net
                .delays(self.scenario.seed, n, life, msg, to, &mut delays);
            let last = &mut self.link_last[n * self.nodes.len() + to];
            if fate.lost {
                // Noticed in order with what did arrive; it moves nothing after it.
                let at = (self.now + delays[0]).max(*last);
                losses.push((at, to as u32, self.nodes[to].life));
                continue;
            }
            for (c, d) in delays[..fate.copies].iter().enumerate() {
                let mut at = self.now + d;
                if c == 0 && !fate.held_back {
                    // One publisher's messages arrive in order (NATS keeps per-connection
                    // order); only a held-back message lets later ones overtake it.
                    at = at.max(*last);
                    *last = at;
                }
                arrivals.push((at, to as u32, self.nodes[to].life));
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
        let first = flight.arrivals[0].0;
        let flight = Rc::new(flight);
        self.schedule(first, 0, Ev::Deliver { flight, idx: 0 });
    }

    pub(super) fn kv_read(&mut self, n: usize, read: KvRead) {
        if self.nodes[n].core.is_none() {
            return;
        }
        let reachable = self.net.kv_reachable(n);
        let mut inputs = Vec::new();
        match read {
            KvRead::Snapshot if !reachable => {
                // The core asks again at a later maintenance tick.
                inputs.push(Input::KvReadDone {
                    read: gslb_state_core::KvRead::Snapshot,
                    complete: false,
                });
            }
            KvRead::Snapshot => {
                let idx = self.nodes[n].life_index;
                self.out.lives[idx].snapshot_ns = Some(self.now);
                for bucket in [Bucket::Members, Bucket::Health] {
                    for (key, value) in self.kv.read(bucket, ">") {
                        if self.opts.track_expiry && bucket == Bucket::Members {
                            self.heard_in_snapshot(n, &value);
                        }
                        inputs.push(Input::KvEntry { bucket, key, value });
                    }
                }
                inputs.push(Input::KvReadDone {
                    read: gslb_state_core::KvRead::Snapshot,
                    complete: true,
                });
            }
            KvRead::Members => {
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
                    read: gslb_state_core::KvRead::Members,
                    complete: reachable,
                });
            }
            KvRead::Resync { node, filter } => {
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
                    read: gslb_state_core::KvRead::Reports { node },
                    complete: reachable,
                });
            }
        }
        self.feed(n, inputs);
    }

    /// A membership record read in the start-up snapshot vouches for its heartbeat as if it
    /// had arrived when it was sent (by the sender's clock, as the design says): track it so.
    fn heard_in_snapshot(&mut self, n: usize, value: &Bytes) {
        let Ok(Message::Member(rec)) = codec::decode(value) else {
            return;
        };
        let Some(m) = self.scenario.node_index(rec.node) else {
            return;
        };
        let age_ms = self.nodes[n]
            .clock
            .wall_ms(self.now)
            .saturating_sub(rec.sent_unix_ms);
        let at = self.now.saturating_sub(age_ms * NS_PER_MS);
        let heard = &mut self.nodes[n].heard[m];
        if heard.is_none_or(|(i, s, _)| (rec.incarnation, rec.hb_seq) > (i, s)) {
            *heard = Some((rec.incarnation, rec.hb_seq, at));
        }
    }
}
