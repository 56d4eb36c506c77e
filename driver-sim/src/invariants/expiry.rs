//! Expiry bounds and count freshness: members are dropped neither before their TTL ran out
//! nor long after they fell silent.

use gslb_state_core::DownReason;

use crate::scenario::{Scenario, fmt_time};
use crate::trace::Record;
use crate::world::Outcome;

use super::{members_at, silence_bound_ns};

/// See the module docs.
pub fn expiry_bounds(s: &Scenario, o: &Outcome) -> Result<(), String> {
    let ttl = s.state.heartbeat_ttl.as_nanos() as u64;
    let bound = silence_bound_ns(s);
    for d in &o.downs {
        if d.reason != DownReason::Expired {
            continue;
        }
        if let Some(h) = d.last_heartbeat_ns
            && d.t_ns < h + ttl
        {
            return Err(format!(
                "at {}: {} dropped {} as expired, but its last heartbeat arrived at {}, less than TTL ({}) before",
                fmt_time(d.t_ns),
                s.nodes[d.observer as usize].id,
                d.member,
                fmt_time(h),
                humantime::format_duration(s.state.heartbeat_ttl)
            ));
        }
    }
    for crash in &o.lives {
        let Some(t_c) = crash.stopped_ns else {
            continue;
        };
        let deadline = t_c + bound;
        if deadline > s.duration_ns {
            continue;
        }
        let back = o
            .lives
            .iter()
            .any(|l| l.node == crash.node && l.started_ns > t_c && l.started_ns <= deadline);
        if back {
            continue;
        }
        let member = &s.nodes[crash.node as usize].id;
        for obs in &o.lives {
            let covers = obs.node != crash.node
                && obs.started_ns <= t_c
                && obs.stopped_ns.is_none_or(|t| t > deadline);
            if !covers {
                continue;
            }
            if let Some(active) = members_at(o, obs.node, deadline)
                && active.contains(member)
            {
                return Err(format!(
                    "{member} {} at {}, but {} still counted it at {} (TTL + interval + largest delay later)",
                    if crash.left { "left" } else { "crashed" },
                    fmt_time(t_c),
                    s.nodes[obs.node as usize].id,
                    fmt_time(deadline)
                ));
            }
        }
    }
    Ok(())
}

/// See the module docs: every instant at which an observer counts a member lies within
/// `TTL + interval + largest delay` after a heartbeat of that member was sent.
pub fn count_freshness(s: &Scenario, o: &Outcome) -> Result<(), String> {
    let bound = silence_bound_ns(s);
    let end = s.duration_ns + 1;
    let mut sends = o.heartbeats_sent.clone();
    for list in &mut sends {
        list.sort_unstable();
    }
    for observer in 0..s.nodes.len() as u32 {
        let lives: Vec<_> = o.lives.iter().filter(|l| l.node == observer).collect();
        let records: Vec<(u64, &Vec<String>)> = o
            .trace
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Members { t_ns, node, active } if *node == observer => {
                    Some((*t_ns, active))
                }
                _ => None,
            })
            .collect();
        for (i, &(from, active)) in records.iter().enumerate() {
            // Counted from this record to the next one, or until this life of the observer
            // stopped, or to the end of the run.
            let stop = lives
                .iter()
                .rev()
                .find(|l| l.started_ns <= from)
                .and_then(|l| l.stopped_ns)
                .unwrap_or(end);
            let next = records.get(i + 1).map_or(end, |r| r.0);
            let to = stop.min(next).min(end);
            for member in active {
                let Some(m) = s.node_index(member) else {
                    continue;
                };
                if m == observer as usize {
                    continue;
                }
                if let Some(t) = first_unheard(&sends[m], from, to, bound) {
                    let last = sends[m][..sends[m].partition_point(|&x| x <= t)]
                        .last()
                        .map_or("never".to_owned(), |&x| format!("last at {}", fmt_time(x)));
                    return Err(format!(
                        "at {}: {} counts {member}, but {member} sent no heartbeat within TTL + \
                         interval + largest delay ({}) before ({last})",
                        fmt_time(t),
                        s.nodes[observer as usize].id,
                        fmt_time(bound)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The first instant in `[from, to)` with no time of `sends` (sorted) in `[t - bound, t]`.
fn first_unheard(sends: &[u64], from: u64, to: u64, bound: u64) -> Option<u64> {
    let mut t = from;
    while t < to {
        let i = sends.partition_point(|&x| x <= t);
        let Some(&last) = sends[..i].last() else {
            return Some(t);
        };
        if last + bound < t {
            return Some(t);
        }
        // Covered until `last + bound`; a later heartbeat may cover what follows.
        t = last + bound + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::first_unheard;

    #[test]
    fn coverage_gaps_are_found_where_they_begin() {
        let sends = [10, 20, 50];
        assert_eq!(first_unheard(&sends, 10, 36, 15), None);
        assert_eq!(
            first_unheard(&sends, 5, 40, 15),
            Some(5),
            "before any heartbeat"
        );
        assert_eq!(first_unheard(&sends, 10, 60, 15), Some(36), "20 + 15 + 1");
        assert_eq!(first_unheard(&sends, 50, 66, 15), None);
        assert_eq!(first_unheard(&sends, 50, 67, 15), Some(66));
        assert_eq!(first_unheard(&sends, 30, 30, 15), None, "an empty span");
    }
}
