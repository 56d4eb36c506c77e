//! Clock invariance: constant wall-clock offsets change no decision outside the windows in
//! which sender timestamps are used (with holds: no verdict of the rule).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use gslb_state_core::Source;
use gslb_state_core::policy::Rule;

use crate::scenario::{Scenario, fmt_time};
use crate::trace::{Record, rule_verdict};
use crate::world::Outcome;

/// A decision as this invariant compares it: verdict and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    healthy: Option<bool>,
    source: Source,
}

/// From `t_ns` on, a node decides an endpoint `verdict`, or does not run (`None`).
#[derive(Debug, Clone, Copy)]
struct Change {
    t_ns: u64,
    verdict: Option<Verdict>,
}

/// Per node and endpoint: its changes in time order, with a reset at every start and crash.
type Timeline = Vec<Change>;

/// With `rule` (a scenario with holds), the verdict compared is the rule's, recomputed from
/// each record's counts: a hold keeps a verdict for as long as the rule's verdict keeps
/// turning, so a difference inside a snapshot window could otherwise outlast it; the holds
/// invariant checks separately that each run's verdicts follow its rule's.
fn timelines(o: &Outcome, rule: Option<Rule>) -> BTreeMap<(u32, String), Timeline> {
    let mut endpoints: BTreeSet<String> = BTreeSet::new();
    for r in &o.trace.records {
        if let Record::Decision { endpoint, .. } = r {
            endpoints.insert(endpoint.clone());
        }
    }
    let mut out: BTreeMap<(u32, String), Timeline> = BTreeMap::new();
    // Lives first, so that a start sorts before the decisions of its instant.
    for l in &o.lives {
        for e in &endpoints {
            let tl = out.entry((l.node, e.clone())).or_default();
            tl.push(Change {
                t_ns: l.started_ns,
                verdict: Some(Verdict {
                    healthy: None,
                    source: Source::Unknown,
                }),
            });
            if let Some(c) = l.stopped_ns {
                tl.push(Change {
                    t_ns: c,
                    verdict: None,
                });
            }
        }
    }
    for r in &o.trace.records {
        if let Record::Decision {
            t_ns,
            node,
            endpoint,
            decision,
        } = r
        {
            out.entry((*node, endpoint.clone()))
                .or_default()
                .push(Change {
                    t_ns: *t_ns,
                    verdict: Some(Verdict {
                        healthy: match rule {
                            Some(rule) => rule_verdict(rule, decision),
                            None => decision.healthy,
                        },
                        source: decision.source,
                    }),
                });
        }
    }
    for tl in out.values_mut() {
        tl.sort_by_key(|c| c.t_ns);
    }
    out
}

/// The verdict in force at `t`: `None` before the first change or while not running.
fn value_at(tl: &Timeline, t: u64) -> Option<Verdict> {
    let i = tl.partition_point(|c| c.t_ns <= t);
    if i == 0 { None } else { tl[i - 1].verdict }
}

fn fmt_value(v: Option<Verdict>) -> String {
    match v {
        None => "not running".into(),
        Some(Verdict { healthy, source }) => format!(
            "{} ({source})",
            match healthy {
                Some(true) => "healthy",
                Some(false) => "unhealthy",
                None => "unknown",
            }
        ),
    }
}

/// See the module docs.
pub fn clock_invariance(s: &Scenario, a: &Outcome, b: &Outcome) -> Result<(), String> {
    // The snapshot's records stand for heartbeats that may still be in flight for one delay.
    let window = s.state.heartbeat_ttl.as_nanos() as u64 + s.max_delay_ns();
    let mut windows: BTreeMap<u32, Vec<RangeInclusive<u64>>> = BTreeMap::new();
    for l in a.lives.iter().chain(&b.lives) {
        if let Some(t) = l.snapshot_ns {
            windows.entry(l.node).or_default().push(t..=t + window);
        }
    }
    let rule = (!s.state.holds().is_none()).then(|| Rule::of(&s.state));
    let ta = timelines(a, rule);
    let tb = timelines(b, rule);
    let keys: BTreeSet<&(u32, String)> = ta.keys().chain(tb.keys()).collect();
    let empty = Timeline::new();
    for key in keys {
        let (x, y) = (ta.get(key).unwrap_or(&empty), tb.get(key).unwrap_or(&empty));
        let w = windows.get(&key.0).map(Vec::as_slice).unwrap_or(&[]);
        let excluded = |t: u64| w.iter().any(|window| window.contains(&t));
        let points = x
            .iter()
            .chain(y)
            .map(|c| c.t_ns)
            .chain(w.iter().map(|window| window.end() + 1));
        for t in points {
            if excluded(t) || t > s.duration_ns {
                continue;
            }
            let (va, vb) = (value_at(x, t), value_at(y, t));
            if va != vb {
                return Err(format!(
                    "at {}: {} decides {} {} with exact clocks but {} with offsets",
                    fmt_time(t),
                    s.nodes[key.0 as usize].id,
                    key.1,
                    fmt_value(va),
                    fmt_value(vb)
                ));
            }
        }
    }
    Ok(())
}
