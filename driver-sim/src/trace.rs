//! What a run leaves behind: every decision change, membership change and fault, in the order
//! they happened, and the renderings of it (JSON lines, a readable timeline).

use std::fmt::Write as _;

use gslb_state_core::Decision;

use crate::scenario::{NS_PER_MS, fmt_time};

/// One line of the trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A node's decision on an endpoint changed.
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

/// A decision in an operator's words: `unhealthy (global: 1 of 3 reports healthy)`.
pub fn explain(d: &Decision) -> String {
    let local = match d.local {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "none",
    };
    format!(
        "{} ({}: {} of {} reports healthy; local observation: {})",
        verdict_word(d.healthy),
        d.source,
        d.healthy_reports,
        d.total_reports,
        local
    )
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
                    let _ = writeln!(
                        out,
                        "{{\"t_ms\":{},\"node\":{},\"endpoint\":{},\"healthy\":{},\"source\":\"{}\",\"healthy_reports\":{},\"total_reports\":{}}}",
                        t_ns / NS_PER_MS,
                        json_str(&self.nodes[*node as usize]),
                        json_str(endpoint),
                        json_verdict(d.healthy),
                        d.source,
                        d.healthy_reports,
                        d.total_reports
                    );
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
                        explain(decision)
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
