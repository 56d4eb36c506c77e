//! Scenario events taking effect: observations, partitions, the broker, isolation, crashes,
//! leaves and restarts, clock changes and network changes. Each is recorded in the trace.

use std::collections::BTreeMap;

use gslb_state_core::Input;

use crate::scenario::EventKind;
use crate::trace::FaultKind;

use super::World;

impl World<'_> {
    /// Node `n`'s id.
    fn name(&self, n: usize) -> &str {
        &self.nodes[n].id
    }

    /// Observations at one instant reach each node together, as a driver hands in every
    /// probe result it has before it polls: `events[i..]` up to the first event that is not an
    /// observation at the same instant.
    fn observe_batch(&mut self, i: usize) {
        let events = &self.scenario.events;
        let at = events[i].at_ns;
        let end = (i..events.len())
            .find(|&j| {
                events[j].at_ns != at || !matches!(events[j].kind, EventKind::Observe { .. })
            })
            .unwrap_or(events.len());
        self.observed_until = end;
        let mut per_node: BTreeMap<usize, Vec<Input>> = BTreeMap::new();
        for j in i..end {
            let EventKind::Observe {
                node,
                endpoint,
                healthy,
            } = &self.scenario.events[j].kind
            else {
                continue;
            };
            let (node, healthy) = (*node, *healthy);
            if !self.options.quiet {
                let text = format!(
                    "{} sees {endpoint} {}",
                    self.name(node),
                    match healthy {
                        Some(true) => "up",
                        Some(false) => "down",
                        None => "no more (withdrawn)",
                    }
                );
                self.fault(FaultKind::Observe, Some(node), text);
            }
            match healthy {
                Some(h) => self.nodes[node].observations.insert(endpoint.clone(), h),
                None => self.nodes[node].observations.remove(endpoint),
            };
            per_node.entry(node).or_default().push(Input::LocalHealth {
                endpoint: endpoint.clone(),
                healthy,
            });
        }
        for (node, inputs) in per_node {
            if self.nodes[node].core.is_some() {
                self.feed(node, inputs);
            }
        }
    }

    /// Node `n` starts after time 0 (it joins a running cluster).
    pub(super) fn start_late(&mut self, n: usize) {
        let text = format!("{} starts", self.name(n));
        self.fault(FaultKind::Start, Some(n), text);
        self.start(n);
        self.sync_connectivity();
    }

    /// Scenario event `i` takes effect (with the observations of its instant, for the first
    /// of them), and every running node is told whether it reaches the broker.
    pub(super) fn apply_scenario_event(&mut self, i: usize) {
        if i < self.observed_until {
            return;
        }
        let kind = self.scenario.events[i].kind.clone();
        match kind {
            EventKind::Observe { .. } => self.observe_batch(i),
            EventKind::Partition { groups } => {
                let names: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let ids: Vec<&str> = g.iter().map(|&n| self.name(n)).collect();
                        format!("[{}]", ids.join(", "))
                    })
                    .collect();
                self.net.partition(&groups);
                self.fault(
                    FaultKind::Partition,
                    None,
                    format!("partition {}", names.join(" | ")),
                );
            }
            EventKind::Heal => {
                self.net.heal();
                self.fault(FaultKind::Heal, None, "partition healed".into());
            }
            EventKind::Crash(n) => {
                if self.nodes[n].core.is_some() {
                    self.stop(n, false);
                    let text = format!("{} crashes", self.name(n));
                    self.fault(FaultKind::Crash, Some(n), text);
                }
            }
            EventKind::Leave(n) => {
                if self.nodes[n].core.is_some() {
                    let how = if self.nodes[n].told_connected {
                        "announces it and stops"
                    } else {
                        "cannot announce it (not connected) and stops"
                    };
                    let text = format!("{} leaves gracefully: {how}", self.name(n));
                    self.fault(FaultKind::Leave, Some(n), text);
                    self.leave(n);
                }
            }
            EventKind::Restart {
                node: n,
                clock_offset_ms,
            } => {
                if self.nodes[n].core.is_none() {
                    let mut text = format!("{} restarts", self.name(n));
                    if let Some(offset_ms) = clock_offset_ms {
                        let before = self.nodes[n].wall_clock.offset_at_ms(self.now_ns);
                        self.nodes[n].wall_clock.step_to(self.now_ns, offset_ms);
                        text.push_str(&format!(
                            ", its wall clock stepped from offset {before} ms to {offset_ms} ms"
                        ));
                    }
                    self.fault(FaultKind::Restart, Some(n), text);
                    self.start(n);
                }
            }
            EventKind::Broker(up) => {
                self.net.set_broker(up);
                let (kind, text) = if up {
                    (FaultKind::BrokerUp, "broker up")
                } else {
                    (FaultKind::BrokerDown, "broker down")
                };
                self.fault(kind, None, text.into());
            }
            EventKind::Isolate(n) => {
                self.net.set_isolated(n, true);
                let text = format!("{} cut off from the broker", self.name(n));
                self.fault(FaultKind::Isolate, Some(n), text);
            }
            EventKind::Rejoin(n) => {
                self.net.set_isolated(n, false);
                let text = format!("{} reconnects to the broker", self.name(n));
                self.fault(FaultKind::Rejoin, Some(n), text);
            }
            EventKind::Clock {
                node,
                offset_ms,
                drift_ppb,
            } => {
                self.nodes[node]
                    .wall_clock
                    .set(self.now_ns, offset_ms, drift_ppb);
                let offset = self.nodes[node].wall_clock.offset_at_ms(self.now_ns);
                let text = format!(
                    "{} clock offset {offset} ms, drift {} ppm",
                    self.name(node),
                    drift_ppb as f64 / 1000.0
                );
                self.fault(FaultKind::Clock, Some(node), text);
            }
            EventKind::Network(spec) => {
                let d = spec.default;
                let mut text = format!(
                    "network latency {} ms, jitter {} ms, loss {}, duplicate {}, reorder {}",
                    d.latency_ns as f64 / 1e6,
                    d.jitter_ns as f64 / 1e6,
                    d.loss,
                    d.duplicate,
                    d.reorder
                );
                if !spec.region_latency.regions().is_empty() {
                    text.push_str(&format!(", region latency {}", spec.region_latency));
                }
                self.net.set_spec(spec);
                self.kv_delay_ns = self.net.spec().default.latency_ns;
                self.fault(FaultKind::Network, None, text);
            }
        }
        self.sync_connectivity();
    }
}
