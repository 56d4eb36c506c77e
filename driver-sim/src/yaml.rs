//! The scenario file: YAML in, a validated [`Scenario`] out, or an error that names the key
//! and the line.
//!
//! The `state:` block means exactly what it means in a gslbd configuration file: it is
//! handed to [`gslb_state_core::Config::from_yaml`], so defaults, ranges and messages are the
//! core's own.

use std::fmt;

use gslb_state_core::names::check_id;
use gslb_state_core::{Config, Source};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::scenario::{
    Event, EventKind, Expect, ExpectChecks, LinkParams, NS_PER_MS, NetworkSpec, NodeSpec, Scenario,
};

/// Largest scenario file accepted, in bytes.
pub const MAX_SCENARIO_BYTES: usize = 4 * 1024 * 1024;
/// Most nodes in one scenario.
pub const MAX_NODES: usize = 1000;
/// Longest simulated duration accepted.
pub const MAX_DURATION_NS: u64 = gslb_state_core::config::MAX_DURATION.as_nanos() as u64;

/// Why a scenario was refused: the key, like `events[3].partition`, the line and what is
/// wrong (the same shape as a configuration problem).
pub type ScenarioError = gslb_state_core::config::ConfigProblem;

fn err(key: impl Into<String>, line: Option<u64>, message: impl Into<String>) -> ScenarioError {
    ScenarioError {
        key: key.into(),
        line,
        message: message.into(),
    }
}

type S<T> = Spanned<T>;

fn line_of<T>(s: &S<T>) -> Option<u64> {
    Some(s.referenced.line())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    /// Free text, shown by `gslb-sim run`.
    name: Option<String>,
    description: Option<String>,
    seed: Option<S<u64>>,
    duration: Option<S<String>>,
    state: Option<S<RawState>>,
    network: Option<S<RawNetwork>>,
    nodes: Option<S<Vec<S<RawNode>>>>,
    events: Option<Vec<S<RawEvent>>>,
    expect: Option<Vec<S<RawExpect>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawState {
    health_policy: Option<S<String>>,
    quorum_min_percent: Option<S<i64>>,
    heartbeat_interval: Option<S<String>>,
    #[serde(rename = "heartbeatTTL")]
    heartbeat_ttl: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    latency: Option<S<String>>,
    jitter: Option<S<String>>,
    loss: Option<S<f64>>,
    duplicate: Option<S<f64>>,
    reorder: Option<S<f64>>,
    links: Option<Vec<S<RawLink>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    between: S<Vec<String>>,
    latency: Option<S<String>>,
    jitter: Option<S<String>>,
    loss: Option<S<f64>>,
    duplicate: Option<S<f64>>,
    reorder: Option<S<f64>>,
}

/// A node: a plain id, or a map with its clock.
enum RawNode {
    Id(String),
    Full(Box<RawNodeMap>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNodeMap {
    id: S<String>,
    region: Option<String>,
    start: Option<S<String>>,
    clock_offset: Option<S<String>>,
    drift: Option<S<f64>>,
    monotonic_offset: Option<S<String>>,
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id, or a map like {id: ap-1, clockOffset: -20s}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNode, E> {
                Ok(RawNode::Id(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawNode, E> {
                Ok(RawNode::Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawNode, E> {
                Ok(RawNode::Id(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawNode, A::Error> {
                RawNodeMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|m| RawNode::Full(Box::new(m)))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Some(None)` for an explicit `null`, `None` when the key is absent.
fn explicit_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: Option<S<String>>,
    node: Option<S<String>>,
    endpoint: Option<S<String>>,
    #[serde(default, deserialize_with = "explicit_null")]
    healthy: Option<Option<bool>>,
    partition: Option<S<Vec<Vec<String>>>>,
    heal: Option<S<bool>>,
    crash: Option<S<String>>,
    leave: Option<S<String>>,
    restart: Option<S<RawRestart>>,
    broker: Option<S<String>>,
    isolate: Option<S<String>>,
    rejoin: Option<S<String>>,
    clock: Option<S<RawClock>>,
    network: Option<S<RawNetwork>>,
}

/// A restart: a plain node id, or a map with the wall clock it restarts with.
enum RawRestart {
    Id(String),
    Full(RawRestartMap),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRestartMap {
    node: S<String>,
    clock_offset: Option<S<String>>,
}

impl<'de> Deserialize<'de> for RawRestart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRestart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id, or a map like {node: us-1, clockOffset: -1h}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRestart, E> {
                Ok(RawRestart::Id(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRestart, E> {
                Ok(RawRestart::Id(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRestart, E> {
                Ok(RawRestart::Id(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRestart, A::Error> {
                RawRestartMap::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawRestart::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    node: S<String>,
    offset: Option<S<String>>,
    drift: Option<S<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    at: Option<S<String>>,
    node: Option<S<String>>,
    endpoint: Option<S<String>>,
    #[serde(default, deserialize_with = "explicit_null")]
    healthy: Option<Option<bool>>,
    source: Option<S<String>>,
    #[serde(alias = "healthyReports")]
    healthy_reports: Option<S<u32>>,
    #[serde(alias = "totalReports")]
    total_reports: Option<S<u32>>,
    #[serde(alias = "activeMembers")]
    active_members: Option<S<Vec<String>>>,
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
fn drift_ppb(key: &str, d: &S<f64>) -> Result<i64, ScenarioError> {
    if !d.value.is_finite() || d.value.abs() > 0.5 {
        return Err(err(
            key,
            line_of(d),
            format!("must be a rate between -0.5 and 0.5, got {}", d.value),
        ));
    }
    Ok((d.value * 1e9).round() as i64)
}

fn probability(key: &str, p: &Option<S<f64>>, default: f64) -> Result<f64, ScenarioError> {
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

fn duration_of(key: &str, d: &Option<S<String>>, default: u64) -> Result<u64, ScenarioError> {
    match d {
        None => Ok(default),
        Some(d) => parse_duration_ns(&d.value).map_err(|m| err(key, line_of(d), m)),
    }
}

/// The link settings of a `network:` block or of one of its `links:`.
#[derive(Clone, Copy)]
struct Knobs<'a> {
    latency: &'a Option<S<String>>,
    jitter: &'a Option<S<String>>,
    loss: &'a Option<S<f64>>,
    duplicate: &'a Option<S<f64>>,
    reorder: &'a Option<S<f64>>,
}

struct Builder {
    node_ids: Vec<String>,
}

impl Builder {
    fn node(&self, key: &str, id: &S<String>) -> Result<usize, ScenarioError> {
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
            links.push(((a.min(b), a.max(b)), params));
        }
        Ok(NetworkSpec { default, links })
    }
}

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
        let kind = event_kind(&b, &key, line, &e.value, &mut net_now)?;
        events.push(Event { at_ns, line, kind });
    }
    events.sort_by_key(|e| e.at_ns);
    check_lifecycle(&b, &nodes, &events)?;

    let mut expects = Vec::new();
    for (i, x) in raw.expect.iter().flatten().enumerate() {
        let key = format!("expect[{i}]");
        let line = line_of(x);
        let at_ns = at_of(&key, line, &x.value.at, duration_ns)?;
        expects.push(expectation(&b, &key, line, at_ns, &x.value)?);
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
        },
    })
}

/// The `state:` block, validated by the core's own configuration parser.
fn state_settings(
    raw: Option<&S<RawState>>,
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
    at: &Option<S<String>>,
    duration_ns: u64,
) -> Result<u64, ScenarioError> {
    let Some(at) = at else {
        return Err(err(format!("{key}.at"), line, "required key is missing"));
    };
    time_in(&format!("{key}.at"), at, duration_ns)
}

/// An instant of the scenario (`key` names it), at most its duration.
fn time_in(key: &str, at: &S<String>, duration_ns: u64) -> Result<u64, ScenarioError> {
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

fn event_kind(
    b: &Builder,
    key: &str,
    line: Option<u64>,
    e: &RawEvent,
    net_now: &mut NetworkSpec,
) -> Result<EventKind, ScenarioError> {
    let mut kinds: Vec<&str> = Vec::new();
    if e.endpoint.is_some() || e.healthy.is_some() || e.node.is_some() {
        kinds.push("node/endpoint/healthy");
    }
    for (present, name) in [
        (e.partition.is_some(), "partition"),
        (e.heal.is_some(), "heal"),
        (e.crash.is_some(), "crash"),
        (e.leave.is_some(), "leave"),
        (e.restart.is_some(), "restart"),
        (e.broker.is_some(), "broker"),
        (e.isolate.is_some(), "isolate"),
        (e.rejoin.is_some(), "rejoin"),
        (e.clock.is_some(), "clock"),
        (e.network.is_some(), "network"),
    ] {
        if present {
            kinds.push(name);
        }
    }
    const ONE_OF: &str = "an event needs exactly one of: node+endpoint+healthy (an observation), \
        partition, heal, crash, leave, restart, broker, isolate, rejoin, clock, network";
    match kinds.as_slice() {
        [] => return Err(err(key, line, ONE_OF)),
        [_] => {}
        more => {
            return Err(err(
                key,
                line,
                format!("{ONE_OF}; this one has {}", more.join(" and ")),
            ));
        }
    }
    if kinds[0] == "node/endpoint/healthy" {
        let node = e
            .node
            .as_ref()
            .ok_or_else(|| err(format!("{key}.node"), line, "required for an observation"))?;
        let endpoint = e.endpoint.as_ref().ok_or_else(|| {
            err(
                format!("{key}.endpoint"),
                line,
                "required for an observation",
            )
        })?;
        let Some(healthy) = e.healthy else {
            return Err(err(
                format!("{key}.healthy"),
                line,
                "required for an observation: true, false, or null (withdrawn)",
            ));
        };
        gslb_state_core::names::check_endpoint_name(&endpoint.value)
            .map_err(|m| err(format!("{key}.endpoint"), line_of(endpoint), m.to_string()))?;
        return Ok(EventKind::Observe {
            node: b.node(&format!("{key}.node"), node)?,
            endpoint: endpoint.value.clone(),
            healthy,
        });
    }
    if let Some(p) = &e.partition {
        let pkey = format!("{key}.partition");
        let mut groups = Vec::new();
        let mut seen = Vec::new();
        for g in &p.value {
            let mut group = Vec::new();
            for id in g {
                let n = b.node_str(&pkey, id, line_of(p))?;
                if seen.contains(&n) {
                    return Err(err(
                        pkey,
                        line_of(p),
                        format!("node {id:?} is in more than one group"),
                    ));
                }
                seen.push(n);
                group.push(n);
            }
            if !group.is_empty() {
                groups.push(group);
            }
        }
        if groups.is_empty() {
            return Err(err(
                pkey,
                line_of(p),
                "list at least one group, like [[eu-1], [us-1, ap-1]]",
            ));
        }
        return Ok(EventKind::Partition { groups });
    }
    if let Some(h) = &e.heal {
        if !h.value {
            return Err(err(
                format!("{key}.heal"),
                line_of(h),
                "only `heal: true` means something",
            ));
        }
        return Ok(EventKind::Heal);
    }
    if let Some(n) = &e.crash {
        return Ok(EventKind::Crash(b.node(&format!("{key}.crash"), n)?));
    }
    if let Some(n) = &e.leave {
        return Ok(EventKind::Leave(b.node(&format!("{key}.leave"), n)?));
    }
    if let Some(r) = &e.restart {
        let rkey = format!("{key}.restart");
        return match &r.value {
            RawRestart::Id(id) => Ok(EventKind::Restart {
                node: b.node_str(&rkey, id, line_of(r))?,
                clock_offset_ms: None,
            }),
            RawRestart::Full(m) => Ok(EventKind::Restart {
                node: b.node(&format!("{rkey}.node"), &m.node)?,
                clock_offset_ms: match &m.clock_offset {
                    None => None,
                    Some(o) => Some(
                        parse_offset_ms(&o.value)
                            .map_err(|e| err(format!("{rkey}.clockOffset"), line_of(o), e))?,
                    ),
                },
            }),
        };
    }
    if let Some(n) = &e.isolate {
        return Ok(EventKind::Isolate(b.node(&format!("{key}.isolate"), n)?));
    }
    if let Some(n) = &e.rejoin {
        return Ok(EventKind::Rejoin(b.node(&format!("{key}.rejoin"), n)?));
    }
    if let Some(s) = &e.broker {
        return match s.value.as_str() {
            "up" => Ok(EventKind::Broker(true)),
            "down" => Ok(EventKind::Broker(false)),
            other => Err(err(
                format!("{key}.broker"),
                line_of(s),
                format!("expected up or down, got {other:?}"),
            )),
        };
    }
    if let Some(c) = &e.clock {
        let ckey = format!("{key}.clock");
        let node = b.node(&format!("{ckey}.node"), &c.value.node)?;
        let offset_ms = match &c.value.offset {
            None => None,
            Some(o) => Some(
                parse_offset_ms(&o.value)
                    .map_err(|m| err(format!("{ckey}.offset"), line_of(o), m))?,
            ),
        };
        let drift_ppb = match &c.value.drift {
            None => 0,
            Some(d) => drift_ppb(&format!("{ckey}.drift"), d)?,
        };
        return Ok(EventKind::Clock {
            node,
            offset_ms,
            drift_ppb,
        });
    }
    if let Some(n) = &e.network {
        let spec = b.network(&format!("{key}.network"), &n.value, net_now)?;
        *net_now = spec.clone();
        return Ok(EventKind::Network(spec));
    }
    Err(err(key, line, ONE_OF))
}

/// Crash or leave only a running node, restart only one that crashed or left (a node that
/// has not started yet is neither).
fn check_lifecycle(b: &Builder, nodes: &[NodeSpec], events: &[Event]) -> Result<(), ScenarioError> {
    let mut up: Vec<bool> = nodes.iter().map(|n| n.start_ns == 0).collect();
    let mut started = up.clone();
    // Node starts come before the events of their instant.
    let mut starts: Vec<(u64, usize)> = (0..nodes.len())
        .filter(|&n| nodes[n].start_ns > 0)
        .map(|n| (nodes[n].start_ns, n))
        .collect();
    starts.sort_unstable();
    let mut next_start = 0;
    for e in events {
        while let Some(&(t, n)) = starts.get(next_start)
            && t <= e.at_ns
        {
            up[n] = true;
            started[n] = true;
            next_start += 1;
        }
        let (stop, n) = match e.kind {
            EventKind::Crash(n) => (Some("crash"), n),
            EventKind::Leave(n) => (Some("leave"), n),
            EventKind::Restart { node, .. } => (None, node),
            _ => continue,
        };
        if !started[n] {
            return Err(err(
                "events",
                e.line,
                format!(
                    "{}: {} has not started yet at this time (it starts at {})",
                    stop.unwrap_or("restart"),
                    b.node_ids[n],
                    crate::scenario::fmt_time(nodes[n].start_ns)
                ),
            ));
        }
        match stop {
            Some(what) if !up[n] => {
                return Err(err(
                    "events",
                    e.line,
                    format!("{what}: {} is already down at this time", b.node_ids[n]),
                ));
            }
            None if up[n] => {
                return Err(err(
                    "events",
                    e.line,
                    format!(
                        "restart: {} is running at this time (crash it or let it leave first)",
                        b.node_ids[n]
                    ),
                ));
            }
            _ => up[n] = stop.is_none(),
        }
    }
    Ok(())
}

fn expectation(
    b: &Builder,
    key: &str,
    line: Option<u64>,
    at_ns: u64,
    x: &RawExpect,
) -> Result<Expect, ScenarioError> {
    let node = x
        .node
        .as_ref()
        .ok_or_else(|| err(format!("{key}.node"), line, "required key is missing"))?;
    let node = b.node(&format!("{key}.node"), node)?;
    let source = match &x.source {
        None => None,
        Some(s) => Some(match s.value.as_str() {
            "local" => Source::Local,
            "global" => Source::Global,
            "fallback-local" => Source::FallbackLocal,
            "unknown" => Source::Unknown,
            other => {
                return Err(err(
                    format!("{key}.source"),
                    line_of(s),
                    format!("expected local, global, fallback-local or unknown, got {other:?}"),
                ));
            }
        }),
    };
    let active_members = match &x.active_members {
        None => None,
        Some(m) => {
            let mut ids = Vec::new();
            for id in &m.value {
                b.node_str(&format!("{key}.activeMembers"), id, line_of(m))?;
                ids.push(id.clone());
            }
            ids.sort();
            ids.dedup();
            Some(ids)
        }
    };
    let checks = ExpectChecks {
        endpoint: x.endpoint.as_ref().map(|e| e.value.clone()),
        healthy: x.healthy,
        source,
        healthy_reports: x.healthy_reports.as_ref().map(|v| v.value),
        total_reports: x.total_reports.as_ref().map(|v| v.value),
        active_members,
    };
    let decision_checks = checks.healthy.is_some()
        || checks.source.is_some()
        || checks.healthy_reports.is_some()
        || checks.total_reports.is_some();
    if decision_checks && checks.endpoint.is_none() {
        return Err(err(
            format!("{key}.endpoint"),
            line,
            "required when healthy, source or report counts are expected",
        ));
    }
    if checks.endpoint.is_some() && !decision_checks {
        return Err(err(
            key,
            line,
            "expect at least one of healthy, source, healthyReports, totalReports for the endpoint",
        ));
    }
    if !decision_checks && checks.active_members.is_none() {
        return Err(err(
            key,
            line,
            "nothing to check: give endpoint with healthy/source, or activeMembers",
        ));
    }
    Ok(Expect {
        at_ns,
        line,
        node,
        checks,
    })
}
