//! What a run leaves behind: every decision change, membership change and fault, in the order
//! they happened, and the renderings of it (JSON lines, a readable timeline).

use std::fmt::Write as _;

use gslb_state_core::Decision;
use gslb_state_core::policy::{RegionCounts, RemoteCounts, Rule, decide};

use crate::scenario::{NS_PER_MS, fmt_time};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A node's decision on an endpoint changed: its verdict or source (the core's
    /// [`gslb_state_core::Output::Decision`]), or, when the scenario has holds, its pending
    /// change or the rule's verdict behind it (seen with [`gslb_state_core::Node::poll_updated`]).
    /// A pending change's instant (`decision.pending.at`) is in simulated time here, like
    /// `t_ns`, not on the node's monotonic clock.
    Decision {
        /// When.
        t_ns: u64,
        /// Node index.
        node: u32,
        /// The endpoint.
        endpoint: String,
        /// The new decision.
        decision: Decision,
    },
    /// A node's active membership changed (or it started).
    Members {
        /// When.
        t_ns: u64,
        /// Node index.
        node: u32,
        /// Active members, sorted, the node itself included.
        active: Vec<String>,
    },
    /// A scenario event took effect.
    Fault {
        /// When.
        t_ns: u64,
        /// What kind (`partition`, `crash`, ...).
        kind: FaultKind,
        /// The node it concerns, for node faults.
        node: Option<u32>,
        /// A readable description.
        text: String,
    },
    /// Something worth knowing about the simulation itself.
    Note {
        /// When.
        t_ns: u64,
        /// The node it concerns.
        node: u32,
        /// What.
        text: String,
    },
}

/// Kinds of scenario events, for shading and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A partition began.
    Partition,
    /// Partitions ended.
    Heal,
    /// A node started after time 0 (joined a running cluster).
    Start,
    /// A node crashed.
    Crash,
    /// A node left gracefully.
    Leave,
    /// A node restarted.
    Restart,
    /// The broker went down.
    BrokerDown,
    /// The broker came back.
    BrokerUp,
    /// A node was cut off from the broker.
    Isolate,
    /// A node reconnected.
    Rejoin,
    /// A node's clock was set.
    Clock,
    /// Network parameters changed.
    Network,
    /// A local observation.
    Observe,
}

impl Record {
    /// When it happened.
    pub fn t_ns(&self) -> u64 {
        match self {
            Record::Decision { t_ns, .. }
            | Record::Members { t_ns, .. }
            | Record::Fault { t_ns, .. }
            | Record::Note { t_ns, .. } => *t_ns,
        }
    }
}

/// A whole run's trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Node ids, by index.
    pub nodes: Vec<String>,
    /// The records, in order.
    pub records: Vec<Record>,
    /// The quorum is by region (`state.quorumScope: regions`): renderings show the region
    /// counts.
    pub regions: bool,
    /// The scenario has holds (`state.holdUp` / `state.holdDown`): renderings show pending
    /// changes.
    pub holds: bool,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn json_verdict(healthy: Option<bool>) -> &'static str {
    match healthy {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    }
}

fn verdict_word(healthy: Option<bool>) -> &'static str {
    match healthy {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "unknown",
    }
}

/// What `rule` says about an endpoint from the counts of decision `d` (its current ones, also
/// while a change is pending): the verdict before holds, recomputed outside the core.
pub fn rule_verdict(rule: Rule, d: &Decision) -> Option<bool> {
    let mine = u32::from(d.local.is_some());
    let remote = RemoteCounts {
        healthy: d
            .healthy_reports
            .saturating_sub(u32::from(d.local == Some(true))),
        total: d.total_reports.saturating_sub(mine),
    };
    let regions = RegionCounts {
        healthy: d.healthy_regions,
        total: d.total_regions,
    };
    decide(rule, d.local, remote, regions).healthy
}

/// A decision in an operator's words: `unhealthy (global: 1 of 3 reports healthy; local
/// observation: none)`, and `; pending: healthy` while a change waits for its hold.
pub fn explain(d: &Decision) -> String {
    describe(d, false, false)
}

/// [`explain`] with the region counts: `unhealthy (global: 4 of 6 reports healthy, 1 of 3
/// regions healthy; local observation: healthy)`.
pub fn explain_with_regions(d: &Decision) -> String {
    describe(d, true, false)
}

/// A decision as a trace shows it: with the region counts when `regions`, and the instant
/// a pending change takes effect (in simulated time, as trace records keep it).
fn describe(d: &Decision, regions: bool, pending_at: bool) -> String {
    let local = match d.local {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "none",
    };
    let mut out = format!(
        "{} ({}: {} of {} reports healthy",
        verdict_word(d.healthy),
        d.source,
        d.healthy_reports,
        d.total_reports,
    );
    if regions {
        let _ = write!(
            out,
            ", {} of {} regions healthy",
            d.healthy_regions, d.total_regions
        );
    }
    let _ = write!(out, "; local observation: {local}");
    if let Some(p) = d.pending {
        let _ = write!(out, "; pending: {}", verdict_word(Some(p.healthy)));
        if pending_at {
            let _ = write!(out, " at {}", fmt_time(p.at.as_nanos()));
        }
    }
    out.push(')');
    out
}

impl Trace {
    /// One JSON object per line for each decision change and each membership change, as
    /// `gslb-sim run --json` prints them. Byte-identical for the same scenario and seed.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for r in &self.records {
            match r {
                Record::Decision {
                    t_ns,
                    node,
                    endpoint,
                    decision: d,
                } => {
                    let _ = write!(
                        out,
                        "{{\"t_ms\":{},\"node\":{},\"endpoint\":{},\"healthy\":{},\"source\":\"{}\",\"healthy_reports\":{},\"total_reports\":{}",
                        t_ns / NS_PER_MS,
                        json_str(&self.nodes[*node as usize]),
                        json_str(endpoint),
                        json_verdict(d.healthy),
                        d.source,
                        d.healthy_reports,
                        d.total_reports
                    );
                    if self.regions {
                        let _ = write!(
                            out,
                            ",\"healthy_regions\":{},\"total_regions\":{}",
                            d.healthy_regions, d.total_regions
                        );
                    }
                    if self.holds {
                        match d.pending {
                            None => out.push_str(",\"pending\":null"),
                            Some(p) => {
                                let _ = write!(
                                    out,
                                    ",\"pending\":{{\"healthy\":{},\"t_ms\":{}}}",
                                    p.healthy,
                                    p.at.as_nanos() / NS_PER_MS
                                );
                            }
                        }
                    }
                    out.push_str("}\n");
                }
                Record::Members { t_ns, node, active } => {
                    let list: Vec<String> = active.iter().map(|m| json_str(m)).collect();
                    let _ = writeln!(
                        out,
                        "{{\"t_ms\":{},\"node\":{},\"active_members\":[{}]}}",
                        t_ns / NS_PER_MS,
                        json_str(&self.nodes[*node as usize]),
                        list.join(",")
                    );
                }
                Record::Fault { .. } | Record::Note { .. } => {}
            }
        }
        out
    }

    /// A readable timeline: faults, decision changes and membership changes.
    pub fn to_timeline(&self) -> String {
        let width = self.nodes.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
        let mut out = String::new();
        for r in &self.records {
            let t = fmt_time(r.t_ns());
            match r {
                Record::Decision {
                    node,
                    endpoint,
                    decision,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "{t:>9}  {:width$}  {endpoint}: {}",
                        self.nodes[*node as usize],
                        describe(decision, self.regions, true)
                    );
                }
                Record::Members { node, active, .. } => {
                    let _ = writeln!(
                        out,
                        "{t:>9}  {:width$}  members: {}",
                        self.nodes[*node as usize],
                        active.join(", ")
                    );
                }
                Record::Fault { kind, text, .. } => {
                    if *kind == FaultKind::Observe {
                        let _ = writeln!(out, "{t:>9}  {:width$}  probe: {text}", "");
                    } else {
                        let _ = writeln!(out, "{t:>9}  ---- {text} ----");
                    }
                }
                Record::Note { node, text, .. } => {
                    let _ = writeln!(
                        out,
                        "{t:>9}  {:width$}  note: {text}",
                        self.nodes[*node as usize]
                    );
                }
            }
        }
        out
    }

    /// Every decision change of `node` on `endpoint`: (time, verdict, source).
    pub fn decisions_of(&self, node: u32, endpoint: &str) -> Vec<(u64, Decision)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Decision {
                    t_ns,
                    node: n,
                    endpoint: e,
                    decision,
                } if *n == node && e == endpoint => Some((*t_ns, *decision)),
                _ => None,
            })
            .collect()
    }
}
