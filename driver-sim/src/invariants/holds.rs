//! Holds: a decision changes between healthy and unhealthy only once the rule's verdict has
//! held the new value, without interruption, for the hold (`state.holdUp` / `state.holdDown`),
//! and then at once; and a change from or to unknown, or any change without a hold, is
//! immediate. Checked on the trace alone, with the rule's verdict recomputed from each
//! recorded decision's counts ([`crate::trace::rule_verdict`]), not taken from the core.
//!
//! With holds, the world records every decision whose verdict, source, rule verdict or
//! pending change differs from the one it last recorded, after every input (the core applies
//! the hold rule once per input), so the trace holds every change of the rule's verdict, of
//! the verdict shown and of the pending change, per node life, with pending instants in
//! simulated time. Precisely, per node life and endpoint, with `r` the rule's verdict and
//! `r_since` when it last changed:
//!
//! * a change of the verdict shown from `a` to `b` (both known) happens when `r` has been `b`
//!   since `r_since` and the time is exactly `r_since + hold(b)` (so not earlier: the rule
//!   said `b` without interruption for the hold; and not later), or, with `hold(b) = 0`, as
//!   `r` turns `b`;
//! * a change from or to unknown shows what `r` says at once;
//! * after every record: when the verdict shown and `r` are both known and differ, `hold(r)`
//!   is not zero and the change to `r` is pending, due at `r_since + hold(r)`; otherwise the
//!   verdict shown is `r` and nothing is pending;
//! * a pending change still pending after its instant (at the node's next record, or when
//!   the life or the run ends) is overdue.
//!
//! Without holds the world records verdict and source changes only, and every one of them
//! must show the rule's verdict with nothing pending.

use std::collections::BTreeMap;

use gslb_state_core::policy::{Holds, Pending, Rule};

use crate::scenario::{Scenario, fmt_time};
use crate::trace::{Record, rule_verdict};
use crate::world::Outcome;

/// `s` with its `state:` as a scenario file gives it with every key written out, those beyond
/// the guide included (`quorumScope`, `holdUp`, `holdDown`, at their defaults for most
/// seeds): read back through the scenario reader ([`crate::yaml::parse`]) and the core's
/// configuration parser, which must give the very same settings, so a run of it must give a
/// byte-identical trace.
pub fn with_explicit_state(s: &Scenario) -> Result<Scenario, String> {
    let st = &s.state;
    let d = |d| humantime::format_duration(d).to_string();
    let text = format!(
        "nodes: [n]\nstate:\n  healthPolicy: {}\n  quorumMinPercent: {}\n  heartbeatInterval: {}\n  heartbeatTTL: {}\n  quorumScope: {}\n  holdUp: {}\n  holdDown: {}\n",
        st.policy,
        st.quorum_min_percent,
        d(st.heartbeat_interval),
        d(st.heartbeat_ttl),
        st.quorum_scope,
        d(st.hold_up),
        d(st.hold_down),
    );
    let file = crate::yaml::parse(&text).map_err(|e| format!("{e}, reading:\n{text}"))?;
    let mut out = s.clone();
    out.state = file.scenario.state;
    Ok(out)
}

/// Two runs' traces, byte for byte (JSON lines and timeline): where they first differ.
pub fn identical_traces(a: &Outcome, b: &Outcome) -> Result<(), String> {
    for (what, x, y) in [
        (
            "JSON line",
            a.trace.to_json_lines(),
            b.trace.to_json_lines(),
        ),
        (
            "timeline line",
            a.trace.to_timeline(),
            b.trace.to_timeline(),
        ),
    ] {
        if x != y {
            let mut xs = x.lines();
            let mut ys = y.lines();
            let mut n = 1;
            loop {
                match (xs.next(), ys.next()) {
                    (Some(l), Some(m)) if l == m => n += 1,
                    (l, m) => {
                        return Err(format!(
                            "first at {what} {n}:\n  {}\n  {}",
                            l.unwrap_or("(end)"),
                            m.unwrap_or("(end)")
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn word(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "unknown",
    }
}

fn hold_name(to: bool) -> &'static str {
    if to { "holdUp" } else { "holdDown" }
}

/// What one node shows about one endpoint in one life, as the records so far say.
#[derive(Debug, Clone, Copy)]
struct State {
    /// The verdict shown (held).
    shown: Option<bool>,
    /// The rule's verdict, and since when it has been that without interruption.
    rule: Option<bool>,
    rule_since: u64,
    /// The pending change (its instant in simulated time).
    pending: Option<Pending>,
}

/// See the module docs.
pub fn holds_respected(s: &Scenario, o: &Outcome) -> Result<(), String> {
    let rule = Rule::of(&s.state);
    let holds = s.state.holds();
    // Per node: its lives, (start, end) in time order.
    let mut lives: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for l in &o.lives {
        lives
            .entry(l.node)
            .or_default()
            .push((l.started_ns, l.stopped_ns.unwrap_or(s.duration_ns)));
    }
    // Per (node, endpoint): the life the state is of, and the state.
    let mut states: BTreeMap<(u32, &str), (usize, State)> = BTreeMap::new();
    for r in &o.trace.records {
        let Record::Decision {
            t_ns,
            node,
            endpoint,
            decision: d,
        } = r
        else {
            continue;
        };
        let t = *t_ns;
        let who = |what: String| {
            format!(
                "at {}: {} on {endpoint}: {what}",
                fmt_time(t),
                s.nodes[*node as usize].id
            )
        };
        let node_lives = lives.get(node).map(Vec::as_slice).unwrap_or(&[]);
        let Some(life) = node_lives.iter().rposition(|&(start, _)| start <= t) else {
            return Err(who("a decision while the node never ran".into()));
        };
        let entry = states
            .entry((*node, endpoint.as_str()))
            .or_insert((life, fresh(node_lives[life].0)));
        if entry.0 != life {
            // The previous life's pending change died with it; was it due before?
            overdue(&entry.1, node_lives[entry.0].1)
                .map_err(|e| format!("{} on {endpoint}: {e}", s.nodes[*node as usize].id))?;
            *entry = (life, fresh(node_lives[life].0));
        }
        let before = entry.1;
        let after = step(
            holds,
            before,
            t,
            rule_verdict(rule, d),
            d.healthy,
            d.pending,
        )
        .map_err(who)?;
        entry.1 = after;
    }
    for (&(node, endpoint), &(life, state)) in &states {
        let end = lives[&node][life].1;
        overdue(&state, end)
            .map_err(|e| format!("{} on {endpoint}: {e}", s.nodes[node as usize].id))?;
    }
    Ok(())
}

/// A node's state at the start of a life: unknown, nothing pending.
fn fresh(start: u64) -> State {
    State {
        shown: None,
        rule: None,
        rule_since: start,
        pending: None,
    }
}

/// A pending change must take effect at its instant: one still pending when the node's
/// next record came, or its life ended, after that instant is overdue.
fn overdue(state: &State, until: u64) -> Result<(), String> {
    match state.pending {
        Some(p) if p.at.as_nanos() < until => Err(format!(
            "a change to {} was due at {} but had not taken effect by {}",
            word(Some(p.healthy)),
            fmt_time(p.at.as_nanos()),
            fmt_time(until)
        )),
        _ => Ok(()),
    }
}

/// One record at `t`: the rule's verdict recomputed from its counts, the verdict shown and
/// the pending change. Returns the state after it, or what is wrong.
fn step(
    holds: Holds,
    before: State,
    t: u64,
    rule: Option<bool>,
    shown: Option<bool>,
    pending: Option<Pending>,
) -> Result<State, String> {
    overdue(&before, t)?;
    // A change of the verdict shown.
    if shown != before.shown {
        match (before.shown, shown) {
            (Some(old), Some(new)) => {
                let hold = holds.of(new).as_nanos() as u64;
                if hold == 0 {
                    if rule != Some(new) {
                        return Err(format!(
                            "changed from {} to {} (no {}) but the rule says {}",
                            word(Some(old)),
                            word(Some(new)),
                            hold_name(new),
                            word(rule)
                        ));
                    }
                } else {
                    // The rule's verdict before this record (what it said until now).
                    if before.rule != Some(new) {
                        return Err(format!(
                            "changed from {} to {} while the rule said {}",
                            word(Some(old)),
                            word(Some(new)),
                            word(before.rule)
                        ));
                    }
                    let due = before.rule_since + hold;
                    if t != due {
                        return Err(format!(
                            "changed from {} to {} at {}, but the rule has said {} since {} \
                             and {} is {}: due at {}",
                            word(Some(old)),
                            word(Some(new)),
                            fmt_time(t),
                            word(Some(new)),
                            fmt_time(before.rule_since),
                            hold_name(new),
                            humantime::format_duration(holds.of(new)),
                            fmt_time(due)
                        ));
                    }
                }
            }
            // From or to unknown: at once, to what the rule says.
            _ => {
                if shown != rule {
                    return Err(format!(
                        "changed from {} to {} but the rule says {}: a change from or to \
                         unknown is immediate",
                        word(before.shown),
                        word(shown),
                        word(rule)
                    ));
                }
            }
        }
    }
    // The state after the record.
    let rule_since = if rule != before.rule {
        t
    } else {
        before.rule_since
    };
    match (shown, rule) {
        (Some(held), Some(now)) if held != now => {
            let hold = holds.of(now).as_nanos() as u64;
            if hold == 0 {
                return Err(format!(
                    "shows {} but the rule says {} and there is no {}",
                    word(shown),
                    word(rule),
                    hold_name(now)
                ));
            }
            let Some(p) = pending else {
                return Err(format!(
                    "shows {} while the rule says {}, with no change pending",
                    word(shown),
                    word(rule)
                ));
            };
            let at = p.at.as_nanos();
            if p.healthy != now || at != rule_since + hold {
                return Err(format!(
                    "the rule has said {} since {} ({} {}), but the change pending is to {} \
                     at {}",
                    word(rule),
                    fmt_time(rule_since),
                    hold_name(now),
                    humantime::format_duration(holds.of(now)),
                    word(Some(p.healthy)),
                    fmt_time(at)
                ));
            }
        }
        _ => {
            if shown != rule {
                return Err(format!(
                    "shows {} but the rule says {}: a change from or to unknown is immediate",
                    word(shown),
                    word(rule)
                ));
            }
            if let Some(p) = pending {
                return Err(format!(
                    "shows {} as the rule says, yet a change to {} is pending",
                    word(shown),
                    word(Some(p.healthy))
                ));
            }
        }
    }
    Ok(State {
        shown,
        rule,
        rule_since,
        pending,
    })
}
