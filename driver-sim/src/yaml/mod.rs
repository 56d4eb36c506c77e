//! The scenario file: YAML in, a validated [`Scenario`] out, or an error that names the key
//! and the line.
//!
//! The `state:` block means exactly what it means in a gslbd configuration file: it is
//! handed to [`gslb_state_core::Config::from_yaml`], so defaults, ranges and messages are the
//! core's own.
//!
//! Parsing goes in three steps: serde reads the file into its raw model (`raw.rs`), every
//! value with its line; [`parse`] then checks and converts the top-level keys, the nodes and
//! the network, and hands each entry of `events:` to `events.rs` and of `expect:` to
//! `expect.rs`.

mod events;
mod expect;
mod raw;

use gslb_state_core::Config;
use gslb_state_core::names::check_id;
use serde_saphyr::Spanned;

use crate::scenario::{
    Event, LinkOverride, LinkParams, NS_PER_MS, NetworkSpec, NodeSpec, RegionLatency, Scenario,
};

use raw::{RawNetwork, RawNode, RawRegionLatency, RawScenario, RawState, line_of};

/// Largest scenario file accepted, in bytes.
pub const MAX_SCENARIO_BYTES: usize = 4 * 1024 * 1024;
/// Most nodes in one scenario.
pub const MAX_NODES: usize = 1000;
/// Longest simulated duration accepted.
pub const MAX_DURATION_NS: u64 = gslb_state_core::config::MAX_DURATION.as_nanos() as u64;

/// Why a scenario was refused: the key, like `events[3].partition`, the line and what is
/// wrong (the same shape as a configuration problem).
pub type ScenarioError = gslb_state_core::config::ConfigProblem;

/// A refusal of the value at `key` (on `line`, when known).
fn err(key: impl Into<String>, line: Option<u64>, message: impl Into<String>) -> ScenarioError {
    ScenarioError {
        key: key.into(),
        line,
        message: message.into(),
    }
}

/// A parsed scenario with the free text of its file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioFile {
    /// `name:`, if given.
    pub name: Option<String>,
    /// `description:`, if given.
    pub description: Option<String>,
    /// The scenario.
    pub scenario: Scenario,
}

/// Parses and validates a scenario.
pub fn parse(text: &str) -> Result<ScenarioFile, ScenarioError> {
    if text.len() > MAX_SCENARIO_BYTES {
        return Err(err(
            "",
            None,
            format!("file is larger than {MAX_SCENARIO_BYTES} bytes"),
        ));
    }
    if text.trim().is_empty() {
        return Err(err("", None, "the file is empty"));
    }
    let raw = parse_raw(text)?;
    build(raw)
}

fn parse_raw(text: &str) -> Result<RawScenario, ScenarioError> {
    gslb_state_core::config::read_yaml(text, MAX_SCENARIO_BYTES)
        .map_err(|p| err(p.key, p.line, p.message))
}

/// A duration like `10s`, `500ms` or `1m 30s`, in nanoseconds.
pub fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let d = gslb_state_core::config::parse_duration(text)?;
    // At most a week, well within u64 nanoseconds.
    Ok(d.as_nanos() as u64)
}

/// A signed duration like `-20s`, in milliseconds.
fn parse_offset_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (sign, rest) = match t.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let ns = parse_duration_ns(rest)
        .map_err(|_| format!("expected an offset like \"-20s\" or \"150ms\", got {text:?}"))?;
    Ok(sign * (ns / NS_PER_MS) as i64)
}

/// Drift as a rate (0.001 = 1 ms per second) into parts per billion.
fn drift_ppb(key: &str, d: &Spanned<f64>) -> Result<i64, ScenarioError> {
    if !d.value.is_finite() || d.value.abs() > 0.5 {
        return Err(err(
            key,
            line_of(d),
            format!("must be a rate between -0.5 and 0.5, got {}", d.value),
        ));
    }
    Ok((d.value * 1e9).round() as i64)
}

fn probability(key: &str, p: &Option<Spanned<f64>>, default: f64) -> Result<f64, ScenarioError> {
    match p {
        None => Ok(default),
        Some(p) if (0.0..=1.0).contains(&p.value) => Ok(p.value),
        Some(p) => Err(err(
            key,
            line_of(p),
            format!("must be a probability between 0 and 1, got {}", p.value),
        )),
    }
}

fn duration_of(key: &str, d: &Option<Spanned<String>>, default: u64) -> Result<u64, ScenarioError> {
    match d {
        None => Ok(default),
        Some(d) => parse_duration_ns(&d.value).map_err(|m| err(key, line_of(d), m)),
    }
}

/// The link settings of a `network:` block or of one of its `links:`.
#[derive(Clone, Copy)]
struct Knobs<'a> {
    latency: &'a Option<Spanned<String>>,
    jitter: &'a Option<Spanned<String>>,
    loss: &'a Option<Spanned<f64>>,
    duplicate: &'a Option<Spanned<f64>>,
    reorder: &'a Option<Spanned<f64>>,
}

struct Builder {
    node_ids: Vec<String>,
    /// Each node's region, in node order (empty for a node without one).
    node_regions: Vec<String>,
}

impl Builder {
    fn node(&self, key: &str, id: &Spanned<String>) -> Result<usize, ScenarioError> {
        self.node_ids
            .iter()
            .position(|n| *n == id.value)
            .ok_or_else(|| {
                err(
                    key,
                    line_of(id),
                    format!(
                        "unknown node {:?}; the nodes are {}",
                        id.value,
                        self.node_ids.join(", ")
                    ),
                )
            })
    }

    fn node_str(&self, key: &str, id: &str, line: Option<u64>) -> Result<usize, ScenarioError> {
        self.node_ids.iter().position(|n| n == id).ok_or_else(|| {
            err(
                key,
                line,
                format!(
                    "unknown node {id:?}; the nodes are {}",
                    self.node_ids.join(", ")
                ),
            )
        })
    }

    /// The regions of the nodes, in the order their first node is listed.
    fn regions(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.node_regions {
            if !out.contains(&r.as_str()) {
                out.push(r);
            }
        }
        out
    }

    /// Region `name` checked: some node is in it. A node id in its place is refused as
    /// such, `node_hint` added.
    fn region<'a>(
        &self,
        key: &str,
        name: &'a str,
        line: Option<u64>,
        node_hint: &str,
    ) -> Result<&'a str, ScenarioError> {
        if self.node_regions.iter().any(|r| r == name) {
            return Ok(name);
        }
        let regions: Vec<String> = self
            .regions()
            .iter()
            .map(|r| {
                if r.is_empty() {
                    "\"\" (nodes without a region)".to_owned()
                } else {
                    (*r).to_owned()
                }
            })
            .collect();
        let what = if self.node_ids.iter().any(|n| n == name) {
            format!("{name:?} is a node, not a region{node_hint}")
        } else {
            format!("unknown region {name:?}: no node is in it")
        };
        Err(err(
            key,
            line,
            format!("{what}; the regions are {}", regions.join(", ")),
        ))
    }

    fn link(&self, key: &str, base: LinkParams, k: Knobs<'_>) -> Result<LinkParams, ScenarioError> {
        Ok(LinkParams {
            latency_ns: duration_of(&format!("{key}.latency"), k.latency, base.latency_ns)?,
            jitter_ns: duration_of(&format!("{key}.jitter"), k.jitter, base.jitter_ns)?,
            loss: probability(&format!("{key}.loss"), k.loss, base.loss)?,
            duplicate: probability(&format!("{key}.duplicate"), k.duplicate, base.duplicate)?,
            reorder: probability(&format!("{key}.reorder"), k.reorder, base.reorder)?,
        })
    }

    fn network(
        &self,
        key: &str,
        raw: &RawNetwork,
        base: &NetworkSpec,
    ) -> Result<NetworkSpec, ScenarioError> {
        let default = self.link(
            key,
            base.default,
            Knobs {
                latency: &raw.latency,
                jitter: &raw.jitter,
                loss: &raw.loss,
                duplicate: &raw.duplicate,
                reorder: &raw.reorder,
            },
        )?;
        let mut links = base.links.clone();
        for (i, l) in raw.links.iter().flatten().enumerate() {
            let lkey = format!("{key}.links[{i}]");
            let [a, b] = l.value.between.value.as_slice() else {
                return Err(err(
                    format!("{lkey}.between"),
                    line_of(&l.value.between),
                    "must name exactly two nodes, like [eu-1, ap-1]",
                ));
            };
            let line = line_of(&l.value.between);
            let a = self.node_str(&format!("{lkey}.between"), a, line)?;
            let b = self.node_str(&format!("{lkey}.between"), b, line)?;
            let params = self.link(
                &lkey,
                default,
                Knobs {
                    latency: &l.value.latency,
                    jitter: &l.value.jitter,
                    loss: &l.value.loss,
                    duplicate: &l.value.duplicate,
                    reorder: &l.value.reorder,
                },
            )?;
            links.push(LinkOverride::between(a, b, params));
        }
        let mut region_latency = base.region_latency.clone();
        if let Some(m) = &raw.region_latency {
            self.region_latency(&format!("{key}.regionLatency"), m, &mut region_latency)?;
        }
        Ok(NetworkSpec {
            default,
            links,
            region_latency,
        })
    }

    /// `regionLatency: {eu: {us: 40ms}}` set on top of `into` (pairs not named keep their
    /// delay; `0ms` removes one).
    fn region_latency(
        &self,
        key: &str,
        raw: &Spanned<RawRegionLatency>,
        into: &mut RegionLatency,
    ) -> Result<(), ScenarioError> {
        if into.regions().is_empty() {
            *into = RegionLatency::new(self.node_regions.iter().map(String::as_str));
        }
        // Each pair with the key and line it was named at; the map is read in key order,
        // so a pair named twice is reported at the later line.
        let mut seen: Vec<((usize, usize), String, Option<u64>)> = Vec::new();
        for (a, row) in &raw.value {
            let a = self.region(&format!("{key}.{a}"), a, line_of(row), "")?;
            for (b, delay) in &row.value {
                let dkey = format!("{key}.{a}.{b}");
                let b = self.region(&dkey, b, line_of(delay), "")?;
                let index = |r| {
                    into.region(r)
                        .expect("the matrix was made from the same nodes' regions")
                };
                let (ra, rb) = (index(a), index(b));
                let pair = (ra.min(rb), ra.max(rb));
                if let Some((_, other_key, other_line)) = seen.iter().find(|s| s.0 == pair) {
                    let (key, line) = if *other_line > line_of(delay) {
                        (other_key.clone(), *other_line)
                    } else {
                        (dkey, line_of(delay))
                    };
                    return Err(err(
                        key,
                        line,
                        format!(
                            "the latency between {a} and {b} is given twice (one entry counts \
                             both ways)"
                        ),
                    ));
                }
                seen.push((pair, dkey.clone(), line_of(delay)));
                let extra_ns =
                    parse_duration_ns(&delay.value).map_err(|m| err(&dkey, line_of(delay), m))?;
                into.set(ra, rb, extra_ns);
            }
        }
        Ok(())
    }
}

/// How a partition names its groups, for messages.
const PARTITION_FORMS: &str = "a partition lists node ids, like [[eu-1], [us-1, ap-1]], or \
    regions, like {regions: [[eu], [us, ap]]}, not both";

fn build(raw: RawScenario) -> Result<ScenarioFile, ScenarioError> {
    let seed = raw.seed.as_ref().map_or(1, |s| s.value);
    let duration_ns = duration_of("duration", &raw.duration, 60_000 * NS_PER_MS)?;
    if duration_ns == 0 {
        return Err(err(
            "duration",
            raw.duration.as_ref().and_then(line_of),
            "must be greater than zero",
        ));
    }
    let state = state_settings(raw.state.as_ref())?;

    let Some(raw_nodes) = raw.nodes else {
        return Err(err(
            "nodes",
            None,
            "required key is missing: list the node ids",
        ));
    };
    if raw_nodes.value.is_empty() || raw_nodes.value.len() > MAX_NODES {
        return Err(err(
            "nodes",
            line_of(&raw_nodes),
            format!("must list between 1 and {MAX_NODES} nodes"),
        ));
    }
    let mut nodes: Vec<NodeSpec> = Vec::new();
    for (i, n) in raw_nodes.value.iter().enumerate() {
        let key = format!("nodes[{i}]");
        let line = line_of(n);
        let spec = match &n.value {
            RawNode::Id(id) => NodeSpec {
                id: id.clone(),
                region: String::new(),
                start_ns: 0,
                clock_offset_ms: 0,
                drift_ppb: 0,
                monotonic_offset_ns: None,
            },
            RawNode::Full(m) => NodeSpec {
                id: m.id.value.clone(),
                region: m.region.clone().unwrap_or_default(),
                start_ns: match &m.start {
                    None => 0,
                    Some(t) => time_in(&format!("{key}.start"), t, duration_ns)?,
                },
                clock_offset_ms: match &m.clock_offset {
                    None => 0,
                    Some(o) => parse_offset_ms(&o.value)
                        .map_err(|e| err(format!("{key}.clockOffset"), line_of(o), e))?,
                },
                drift_ppb: match &m.drift {
                    None => 0,
                    Some(d) => drift_ppb(&format!("{key}.drift"), d)?,
                },
                monotonic_offset_ns: match &m.monotonic_offset {
                    None => None,
                    Some(o) => Some(
                        parse_duration_ns(&o.value)
                            .map_err(|e| err(format!("{key}.monotonicOffset"), line_of(o), e))?,
                    ),
                },
            },
        };
        if let Err(e) = check_id(&spec.id) {
            return Err(err(format!("{key}.id"), line, e.to_string()));
        }
        if spec.region.len() > 64 {
            return Err(err(format!("{key}.region"), line, "longer than 64 bytes"));
        }
        if nodes.iter().any(|o| o.id == spec.id) {
            return Err(err(key, line, format!("duplicate node {:?}", spec.id)));
        }
        nodes.push(spec);
    }
    let b = Builder {
        node_ids: nodes.iter().map(|n| n.id.clone()).collect(),
        node_regions: nodes.iter().map(|n| n.region.clone()).collect(),
    };
    let network = match &raw.network {
        None => NetworkSpec::default(),
        Some(n) => b.network("network", &n.value, &NetworkSpec::default())?,
    };

    let mut events = Vec::new();
    let mut net_now = network.clone();
    for (i, e) in raw.events.iter().flatten().enumerate() {
        let key = format!("events[{i}]");
        let line = line_of(e);
        let at_ns = at_of(&key, line, &e.value.at, duration_ns)?;
        let kind = events::event_kind(&b, &key, line, &e.value, &mut net_now)?;
        events.push(Event { at_ns, line, kind });
    }
    events.sort_by_key(|e| e.at_ns);
    events::check_lifecycle(&b, &nodes, &events)?;

    let mut expects = Vec::new();
    for (i, x) in raw.expect.iter().flatten().enumerate() {
        let key = format!("expect[{i}]");
        let line = line_of(x);
        let at_ns = at_of(&key, line, &x.value.at, duration_ns)?;
        expects.push(expect::expectation(&b, &key, line, at_ns, &x.value)?);
    }
    expects.sort_by_key(|x| x.at_ns);

    Ok(ScenarioFile {
        name: raw.name,
        description: raw.description,
        scenario: Scenario {
            seed,
            duration_ns,
            state,
            network,
            nodes,
            events,
            expects,
            compact_interval: gslb_state_core::Limits::default().compact_interval,
        },
    })
}

/// The `state:` block, validated by the core's own configuration parser.
fn state_settings(
    raw: Option<&Spanned<RawState>>,
) -> Result<gslb_state_core::StateSettings, ScenarioError> {
    let mut yaml = String::from("cluster: {id: sim}\nstate:\n");
    let mut lines: Vec<(&str, Option<u64>)> = Vec::new();
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    if let Some(raw) = raw {
        let s = &raw.value;
        if let Some(p) = &s.health_policy {
            yaml.push_str(&format!("  healthPolicy: {}\n", quote(&p.value)));
            lines.push(("state.healthPolicy", line_of(p)));
        }
        if let Some(q) = &s.quorum_min_percent {
            yaml.push_str(&format!("  quorumMinPercent: {}\n", q.value));
            lines.push(("state.quorumMinPercent", line_of(q)));
        }
        if let Some(d) = &s.heartbeat_interval {
            yaml.push_str(&format!("  heartbeatInterval: {}\n", quote(&d.value)));
            lines.push(("state.heartbeatInterval", line_of(d)));
        }
        if let Some(d) = &s.heartbeat_ttl {
            yaml.push_str(&format!("  heartbeatTTL: {}\n", quote(&d.value)));
            lines.push(("state.heartbeatTTL", line_of(d)));
        }
        if let Some(q) = &s.quorum_scope {
            yaml.push_str(&format!("  quorumScope: {}\n", quote(&q.value)));
            lines.push(("state.quorumScope", line_of(q)));
        }
        if let Some(d) = &s.hold_up {
            yaml.push_str(&format!("  holdUp: {}\n", quote(&d.value)));
            lines.push(("state.holdUp", line_of(d)));
        }
        if let Some(d) = &s.hold_down {
            yaml.push_str(&format!("  holdDown: {}\n", quote(&d.value)));
            lines.push(("state.holdDown", line_of(d)));
        }
    }
    if yaml.ends_with("state:\n") {
        yaml.push_str("  {}\n");
    }
    let block_line = raw.and_then(line_of);
    Config::from_yaml(&yaml).map(|c| c.state).map_err(|e| {
        let p = e.problems.into_iter().next();
        let (key, message) = p.map_or_else(
            || ("state".to_owned(), "invalid".to_owned()),
            |p| (p.key, p.message),
        );
        let line = lines
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, l)| *l)
            .or(block_line);
        err(key, line, message)
    })
}

fn at_of(
    key: &str,
    line: Option<u64>,
    at: &Option<Spanned<String>>,
    duration_ns: u64,
) -> Result<u64, ScenarioError> {
    let Some(at) = at else {
        return Err(err(format!("{key}.at"), line, "required key is missing"));
    };
    time_in(&format!("{key}.at"), at, duration_ns)
}

/// An instant of the scenario (`key` names it), at most its duration.
fn time_in(key: &str, at: &Spanned<String>, duration_ns: u64) -> Result<u64, ScenarioError> {
    let ns = parse_duration_ns(&at.value).map_err(|m| err(key, line_of(at), m))?;
    if ns > duration_ns {
        return Err(err(
            key,
            line_of(at),
            format!(
                "{} is after the end of the scenario ({})",
                at.value,
                crate::scenario::fmt_time(duration_ns)
            ),
        ));
    }
    Ok(ns)
}
