//! The `events:` list: each entry into an [`EventKind`], and the node lifecycle it implies
//! checked (a crash or leave only of a running node, a restart only of a stopped one).

use crate::scenario::{Event, EventKind, NetworkSpec, NodeSpec};

use super::raw::{RawEvent, RawPartition, RawRestart, line_of};
use super::{Builder, PARTITION_FORMS, ScenarioError, drift_ppb, err, parse_offset_ms};

pub(super) fn event_kind(
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
        let groups = match &p.value {
            RawPartition::Nodes(groups) => node_groups(b, &pkey, line_of(p), groups)?,
            RawPartition::Regions(r) => region_groups(
                b,
                &format!("{pkey}.regions"),
                line_of(&r.regions),
                &r.regions.value,
            )?,
        };
        if groups.is_empty() {
            return Err(err(
                pkey,
                line_of(p),
                "list at least one group, like [[eu-1], [us-1, ap-1]] or {regions: [[eu], [us, ap]]}",
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

/// `partition: [[eu-1], [us-1, ap-1]]`: each node in one group at most; empty groups are
/// left out.
fn node_groups(
    b: &Builder,
    key: &str,
    line: Option<u64>,
    raw: &[Vec<String>],
) -> Result<Vec<Vec<usize>>, ScenarioError> {
    let mut groups = Vec::new();
    let mut seen = Vec::new();
    for g in raw {
        let mut group = Vec::new();
        for id in g {
            let n = match b.node_str(key, id, line) {
                Ok(n) => n,
                // A region where a node belongs: say how to partition by region.
                Err(e) if b.node_regions.contains(id) => {
                    return Err(err(
                        e.key,
                        e.line,
                        format!("{}; {id:?} is a region: {PARTITION_FORMS}", e.message),
                    ));
                }
                Err(e) => return Err(e),
            };
            if seen.contains(&n) {
                return Err(err(
                    key,
                    line,
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
    Ok(groups)
}

/// `partition: {regions: [[eu], [us, ap]]}` into groups of nodes: a region's nodes in the
/// order they are listed, a group's regions in its order. Each region in one group at most;
/// empty groups are left out. As with node ids, the nodes of regions in no group form one
/// more group together.
fn region_groups(
    b: &Builder,
    key: &str,
    line: Option<u64>,
    raw: &[Vec<String>],
) -> Result<Vec<Vec<usize>>, ScenarioError> {
    let mut groups = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for g in raw {
        let mut group = Vec::new();
        for name in g {
            let region = b.region(key, name, line, &format!(": {PARTITION_FORMS}"))?;
            if seen.contains(&region) {
                return Err(err(
                    key,
                    line,
                    format!("region {region:?} is in more than one group"),
                ));
            }
            seen.push(region);
            group.extend(
                b.node_regions
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| *r == region)
                    .map(|(n, _)| n),
            );
        }
        if !group.is_empty() {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// Crash or leave only a running node, restart only one that crashed or left (a node that
/// has not started yet is neither).
pub(super) fn check_lifecycle(
    b: &Builder,
    nodes: &[NodeSpec],
    events: &[Event],
) -> Result<(), ScenarioError> {
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
