//! Judging expectations and printing the report of a run, shared by `gslb-sim run` and by
//! `gslb-state scenario` (which plays the same file on real daemons), so both worlds are held
//! to the same words.

use std::collections::BTreeMap;

use gslb_state_core::Decision;
use gslb_state_core::policy::QuorumScope;

use crate::scenario::{ExpectChecks, fmt_time};
use crate::world::ExpectOutcome;
use crate::yaml::ScenarioFile;

fn fmt_verdict(h: Option<bool>) -> &'static str {
    match h {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    }
}

fn fmt_pending(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "none",
    }
}

/// What a node shows, judged against `checks`: its decision for the checked endpoint (`None`
/// when it does not know the endpoint: unknown, no reports) and its active members, sorted.
/// Returns (held, what was seen, what was wrong), in the report's words.
pub fn evaluate(
    checks: &ExpectChecks,
    decision: Option<&Decision>,
    active: &[String],
) -> (bool, String, String) {
    let mut seen = Vec::new();
    let mut why = Vec::new();
    if let Some(endpoint) = &checks.endpoint {
        let d = decision.copied().unwrap_or(Decision::UNKNOWN);
        let (healthy, source, healthy_reports, total_reports) =
            (d.healthy, d.source, d.healthy_reports, d.total_reports);
        let regions = checks.healthy_regions.is_some() || checks.total_regions.is_some();
        seen.push(if regions {
            format!("{endpoint}: {}", crate::trace::explain_with_regions(&d))
        } else {
            format!("{endpoint}: {}", crate::trace::explain(&d))
        });
        if let Some(h) = checks.healthy
            && h != healthy
        {
            why.push(format!(
                "expected healthy: {}, saw {}",
                fmt_verdict(h),
                fmt_verdict(healthy)
            ));
        }
        if let Some(s) = checks.source
            && s != source
        {
            why.push(format!("expected source: {s}, saw {source}"));
        }
        if let Some(h) = checks.healthy_reports
            && h != healthy_reports
        {
            why.push(format!(
                "expected healthyReports: {h}, saw {healthy_reports}"
            ));
        }
        if let Some(t) = checks.total_reports
            && t != total_reports
        {
            why.push(format!("expected totalReports: {t}, saw {total_reports}"));
        }
        if let Some(h) = checks.healthy_regions
            && h != d.healthy_regions
        {
            why.push(format!(
                "expected healthyRegions: {h}, saw {}",
                d.healthy_regions
            ));
        }
        if let Some(t) = checks.total_regions
            && t != d.total_regions
        {
            why.push(format!(
                "expected totalRegions: {t}, saw {}",
                d.total_regions
            ));
        }
        let pending = d.pending.map(|p| p.healthy);
        if let Some(p) = checks.pending
            && p != pending
        {
            why.push(format!(
                "expected pending: {}, saw {}",
                fmt_pending(p),
                fmt_pending(pending)
            ));
        }
    }
    if let Some(expected) = &checks.active_members {
        seen.push(format!("active members: [{}]", active.join(", ")));
        if expected.as_slice() != active {
            why.push(format!(
                "expected activeMembers: [{}], saw [{}]",
                expected.join(", "),
                active.join(", ")
            ));
        }
    }
    (why.is_empty(), seen.join("; "), why.join("; "))
}

/// The header of a report: the scenario's name, description and settings.
pub fn header(file: &ScenarioFile) -> String {
    let s = &file.scenario;
    let mut out = String::new();
    if let Some(name) = &file.name {
        out.push_str(name);
        out.push('\n');
    }
    if let Some(d) = &file.description {
        for line in d.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    // Beyond the guide, and only when set: the same line as ever otherwise.
    let scope = match s.state.quorum_scope {
        QuorumScope::Members => String::new(),
        scope => format!(", quorumScope {scope}"),
    };
    let holds = if s.state.holds().is_none() {
        String::new()
    } else {
        format!(
            ", holdUp {}, holdDown {}",
            humantime::format_duration(s.state.hold_up),
            humantime::format_duration(s.state.hold_down)
        )
    };
    out.push_str(&format!(
        "seed {}, {} simulated, {} nodes, policy {} (quorumMinPercent {}{scope}), heartbeat every {}, TTL {}{holds}\n\n",
        s.seed,
        fmt_time(s.duration_ns),
        s.nodes.len(),
        s.state.policy,
        s.state.quorum_min_percent,
        humantime::format_duration(s.state.heartbeat_interval),
        humantime::format_duration(s.state.heartbeat_ttl),
    ));
    out
}

/// Every expectation's verdict, one line each (failures with what was seen), in the
/// scenario's order. Returns the lines, the summary line and how many failed.
pub fn expectations(
    file: &ScenarioFile,
    outcomes: &[ExpectOutcome],
) -> (Vec<String>, String, usize) {
    expectations_explained(file, outcomes, &BTreeMap::new())
}

/// [`expectations`], with the node's explanation of its decision (the text of
/// [`gslb_state_core::Explanation`], as [`crate::world::Outcome::explanations`] keeps it, by
/// expectation index) indented under each failure that has one.
pub fn expectations_explained(
    file: &ScenarioFile,
    outcomes: &[ExpectOutcome],
    explanations: &BTreeMap<usize, String>,
) -> (Vec<String>, String, usize) {
    let s = &file.scenario;
    let mut failed = 0;
    let mut lines = Vec::new();
    for x in outcomes {
        let e = &s.expects[x.index];
        let at = format!(
            "{}at {} {}",
            e.line.map(|l| format!("line {l}: ")).unwrap_or_default(),
            fmt_time(e.at_ns),
            s.nodes[e.node].id
        );
        if x.ok {
            lines.push(format!("  ok    {at}: {}", x.seen));
        } else {
            failed += 1;
            let mut line = format!("  FAIL  {at}: {}\n        saw {}", x.why, x.seen);
            if let Some(text) = explanations.get(&x.index) {
                line.push_str(&format!(
                    "\n        explained by {} at {}:",
                    s.nodes[e.node].id,
                    fmt_time(e.at_ns)
                ));
                for l in text.lines() {
                    line.push_str(&format!("\n          {l}"));
                }
            }
            lines.push(line);
        }
    }
    let summary = format!(
        "expectations: {} held, {failed} failed",
        outcomes.len() - failed
    );
    (lines, summary, failed)
}

/// Prints the expectations (to stdout; only failures and the summary to stderr when `json`
/// keeps stdout for JSON lines); returns how many failed.
pub fn print_expectations(file: &ScenarioFile, outcomes: &[ExpectOutcome], json: bool) -> usize {
    print_expectations_explained(file, outcomes, &BTreeMap::new(), json)
}

/// [`print_expectations`], with the explanations of [`expectations_explained`] under the
/// failures.
pub fn print_expectations_explained(
    file: &ScenarioFile,
    outcomes: &[ExpectOutcome],
    explanations: &BTreeMap<usize, String>,
    json: bool,
) -> usize {
    if outcomes.is_empty() {
        return 0;
    }
    let (lines, summary, failed) = expectations_explained(file, outcomes, explanations);
    if json {
        for l in lines.iter().filter(|l| l.contains("FAIL")) {
            eprintln!("{l}");
        }
        eprintln!("{summary}");
    } else {
        println!("\nexpectations:");
        for l in &lines {
            println!("{l}");
        }
        println!("{summary}");
    }
    failed
}

#[cfg(test)]
mod tests {
    use gslb_state_core::policy::Pending;
    use gslb_state_core::{Instant, Source};

    use super::*;

    #[test]
    fn region_counts_and_pending_changes_are_judged_and_shown() {
        let d = Decision {
            healthy: Some(true),
            source: Source::Global,
            healthy_reports: 4,
            total_reports: 6,
            healthy_regions: 1,
            total_regions: 3,
            local: Some(true),
            pending: Some(Pending {
                healthy: false,
                at: Instant::from_millis(5),
            }),
        };
        let checks = ExpectChecks {
            endpoint: Some("api".into()),
            healthy_regions: Some(2),
            total_regions: Some(3),
            pending: Some(None),
            ..ExpectChecks::default()
        };
        let (ok, seen, why) = evaluate(&checks, Some(&d), &[]);
        assert!(!ok);
        assert_eq!(
            seen,
            "api: healthy (global: 4 of 6 reports healthy, 1 of 3 regions healthy; local \
             observation: healthy; pending: unhealthy)"
        );
        assert_eq!(
            why,
            "expected healthyRegions: 2, saw 1; expected pending: none, saw unhealthy"
        );
        let checks = ExpectChecks {
            endpoint: Some("api".into()),
            healthy_regions: Some(1),
            pending: Some(Some(false)),
            ..ExpectChecks::default()
        };
        assert!(evaluate(&checks, Some(&d), &[]).0);
        // An endpoint the node never heard of: no pending change, no regions.
        let (ok, _, why) = evaluate(&checks, None, &[]);
        assert!(!ok);
        assert_eq!(
            why,
            "expected healthyRegions: 1, saw 0; expected pending: unhealthy, saw none"
        );
    }
}
