//! The `expect:` list: each entry into an [`Expect`], with what it checks validated.

use gslb_state_core::Source;

use crate::scenario::{Expect, ExpectChecks};

use super::raw::{RawExpect, line_of};
use super::{Builder, ScenarioError, err};

pub(super) fn expectation(
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
    let pending = match &x.pending {
        None => None,
        Some(p) => Some(match p.value.as_str() {
            "healthy" => Some(true),
            "unhealthy" => Some(false),
            "none" => None,
            other => {
                return Err(err(
                    format!("{key}.pending"),
                    line_of(p),
                    format!("expected healthy, unhealthy or none, got {other:?}"),
                ));
            }
        }),
    };
    let checks = ExpectChecks {
        endpoint: x.endpoint.as_ref().map(|e| e.value.clone()),
        healthy: x.healthy,
        source,
        healthy_reports: x.healthy_reports.as_ref().map(|v| v.value),
        total_reports: x.total_reports.as_ref().map(|v| v.value),
        healthy_regions: x.healthy_regions.as_ref().map(|v| v.value),
        total_regions: x.total_regions.as_ref().map(|v| v.value),
        pending,
        active_members,
    };
    let decision_checks = checks.healthy.is_some()
        || checks.source.is_some()
        || checks.healthy_reports.is_some()
        || checks.total_reports.is_some()
        || checks.healthy_regions.is_some()
        || checks.total_regions.is_some()
        || checks.pending.is_some();
    if decision_checks && checks.endpoint.is_none() {
        return Err(err(
            format!("{key}.endpoint"),
            line,
            "required when healthy, source, pending or report or region counts are expected",
        ));
    }
    if checks.endpoint.is_some() && !decision_checks {
        return Err(err(
            key,
            line,
            "expect at least one of healthy, source, healthyReports, totalReports, \
             healthyRegions, totalRegions, pending for the endpoint",
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
