//! Explanations ([`Node::explain`](crate::Node::explain)): every member's part in one
//! endpoint's decision, the region votes, the pending change, and the rule in words, for an
//! operator asking "why is this endpoint down, and who says so?".
//!
//! Plain data with public fields (a driver maps it to JSON as it likes), and a [`Display`]
//! that prints it readably.
//!
//! [`Display`]: fmt::Display

use std::fmt;
use std::time::Duration;

use crate::policy::{Decision, Holds, Policy, QuorumScope, Rule};
use crate::time::Instant;

/// One endpoint's decision, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The endpoint.
    pub endpoint: String,
    /// When it was explained, on this node's monotonic clock.
    pub now: Instant,
    /// The decision in force.
    pub decision: Decision,
    /// What the rule says now, before holds (differs from `decision.healthy` only while a
    /// change is pending).
    pub rule_verdict: Option<bool>,
    /// The rule in force (policy, threshold, scope).
    pub rule: Rule,
    /// The hold times in force.
    pub holds: Holds,
    /// Every remembered member, this node first, then the others by id.
    pub members: Vec<MemberPart>,
    /// Every region with a counted report (this node's included), by name, with its vote:
    /// what the rule weighs under `regions` scope, for information under `members`.
    pub regions: Vec<RegionVote>,
    /// The rule applied, in words: `global-quorum: 3 of 5 healthy = 60% >= 51%`.
    pub summary: String,
}

/// What a member said about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Said {
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// It withdrew its report (it no longer has an opinion).
    Withdrawn,
    /// Nothing known.
    Nothing,
}

impl Said {
    /// The name used in JSON and text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Said::Healthy => "healthy",
            Said::Unhealthy => "unhealthy",
            Said::Withdrawn => "withdrawn",
            Said::Nothing => "none",
        }
    }
}

impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member's part in the decision: counted or why not, and how it was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Counted, and weighed by the rule with the other counted reports.
    Vote,
    /// This node's observation, which is the verdict (`local-only`, or `prefer-local` with an
    /// observation).
    LocalVerdict,
    /// This node's observation, the verdict because no other active member reports the
    /// endpoint (`fallback-local`).
    Fallback,
    /// Counted, but the policy decides on this node's observation alone (`local-only`, or
    /// `prefer-local` with an observation): a hint.
    NotUsed,
    /// Not counted: no heartbeat within the TTL.
    Inactive,
    /// Not counted: it left the cluster.
    Left,
    /// Not counted: it has no report of the endpoint.
    NoReport,
    /// Not counted: it withdrew its report.
    Withdrawn,
}

impl Part {
    /// Whether the report is in the decision's counts (`healthy_reports`, `total_reports`).
    pub const fn counted(self) -> bool {
        matches!(
            self,
            Part::Vote | Part::LocalVerdict | Part::Fallback | Part::NotUsed
        )
    }

    /// A short name for JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Part::Vote => "vote",
            Part::LocalVerdict => "local-verdict",
            Part::Fallback => "fallback-local",
            Part::NotUsed => "not-used",
            Part::Inactive => "inactive",
            Part::Left => "left",
            Part::NoReport => "no-report",
            Part::Withdrawn => "withdrawn",
        }
    }

    /// In words, for text.
    pub const fn describe(self) -> &'static str {
        match self {
            Part::Vote => "counted",
            Part::LocalVerdict => "counted; the local observation is the verdict",
            Part::Fallback => "counted; the verdict, as no other active member reports it",
            Part::NotUsed => "counted; not used, the policy decides on the local observation",
            Part::Inactive => "not counted: inactive (no heartbeat within the TTL)",
            Part::Left => "not counted: it left",
            Part::NoReport => "not counted: no report",
            Part::Withdrawn => "not counted: report withdrawn",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One member's part in an endpoint's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPart {
    /// Node id.
    pub node: String,
    /// Its region (the empty region is a region).
    pub region: String,
    /// Whether this is the local node.
    pub local: bool,
    /// Whether it is active (the local node always is).
    pub active: bool,
    /// Its incarnation.
    pub incarnation: u64,
    /// What it said about the endpoint (its newest report held here).
    pub said: Said,
    /// The sequence of that report, if one is held.
    pub seq: Option<u64>,
    /// Whether the report is in the decision's counts; the same as `part.counted()`.
    pub counted: bool,
    /// Its part in the decision, or why it has none.
    pub part: Part,
    /// How old its report is known to be on our clock: the time since its latest heartbeat,
    /// which vouches for its whole current report set (the core keeps no time per report).
    /// `None` for this node (its observation is the current one) and for a member never heard.
    pub age: Option<Duration>,
}

/// One region's vote on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionVote {
    /// The region (possibly empty).
    pub region: String,
    /// Counted reports in it that say healthy.
    pub healthy: u32,
    /// Counted reports in it.
    pub total: u32,
    /// Whether they meet the threshold (`healthy * 100 >= q * total`).
    pub healthy_vote: bool,
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "healthy",
        Some(false) => "unhealthy",
        None => "unknown",
    }
}

/// `h of t healthy = p% >= q%` (or `< q%`).
fn threshold(h: u32, t: u32, q: u8, what: &str) -> String {
    let percent = u64::from(h) * 100 / u64::from(t.max(1));
    let op = if crate::policy::quorum_met(h, t, q) {
        ">="
    } else {
        "<"
    };
    format!("{h} of {t} {what}healthy = {percent}% {op} {q}%")
}

/// `d` to whole milliseconds, as times are shown.
fn whole_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn region_name(name: &str) -> &str {
    if name.is_empty() { "\"\"" } else { name }
}

/// The region votes as `eu: 2/2, us: 1/2`.
fn region_list(regions: &[RegionVote]) -> String {
    regions
        .iter()
        .map(|r| format!("{}: {}/{}", region_name(&r.region), r.healthy, r.total))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rule applied to `d`, in words (`others_total`: counted reports of other members).
pub(crate) fn summary(
    rule: Rule,
    d: &Decision,
    others_total: u32,
    regions: &[RegionVote],
) -> String {
    let q = rule.quorum_min_percent;
    let policy = rule.policy;
    let quorum = |h: u32, t: u32| match rule.scope {
        QuorumScope::Members => threshold(h, t, q, ""),
        QuorumScope::Regions => format!(
            "{} ({})",
            threshold(d.healthy_regions, d.total_regions, q, "regions "),
            region_list(regions)
        ),
    };
    let by_region = if rule.scope == QuorumScope::Regions {
        " by region"
    } else {
        ""
    };
    match (policy, d.local) {
        (Policy::LocalOnly | Policy::PreferLocal, Some(seen)) => {
            format!("{policy}: local observation ({})", verdict(Some(seen)))
        }
        (Policy::LocalOnly, None) => format!("{policy}: no local observation (unknown)"),
        (Policy::PreferLocal, None) if others_total > 0 => format!(
            "{policy}: no local observation; other members{by_region}: {}",
            quorum(d.healthy_reports, d.total_reports)
        ),
        (Policy::PreferLocal, None) => format!("{policy}: no observation from anyone (unknown)"),
        (_, Some(seen)) if others_total == 0 => format!(
            "{policy}: no other active member reports it; local observation (fallback-local: {})",
            verdict(Some(seen))
        ),
        (_, None) if others_total == 0 => format!("{policy}: no reports (unknown)"),
        (Policy::GlobalAnyHealthy, _) => format!(
            "{policy}: {} of {} healthy ({})",
            d.healthy_reports,
            d.total_reports,
            if d.healthy_reports > 0 {
                "at least one is"
            } else {
                "none is"
            }
        ),
        (Policy::GlobalQuorum, _) => format!(
            "{policy}{by_region}: {}",
            quorum(d.healthy_reports, d.total_reports)
        ),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.decision;
        writeln!(
            f,
            "{}: {} (source {}; {} of {} reports healthy; {} of {} regions healthy)",
            self.endpoint,
            verdict(d.healthy),
            d.source,
            d.healthy_reports,
            d.total_reports,
            d.healthy_regions,
            d.total_regions
        )?;
        writeln!(f, "  rule: {}", self.summary)?;
        if let Some(p) = d.pending {
            let (key, hold) = if p.healthy {
                ("holdUp", self.holds.up)
            } else {
                ("holdDown", self.holds.down)
            };
            writeln!(
                f,
                "  pending: the rule says {}; {} is held until that has lasted {key} {} (in {})",
                verdict(Some(p.healthy)),
                verdict(d.healthy),
                humantime::format_duration(hold),
                humantime::format_duration(whole_ms(p.at.saturating_since(self.now)))
            )?;
        }
        if self.rule.scope == QuorumScope::Regions {
            let votes: Vec<String> = self
                .regions
                .iter()
                .map(|r| {
                    format!(
                        "{} {}/{} {}",
                        region_name(&r.region),
                        r.healthy,
                        r.total,
                        verdict(Some(r.healthy_vote))
                    )
                })
                .collect();
            writeln!(f, "  regions: {}", votes.join(", "))?;
        }
        writeln!(f, "  members:")?;
        for m in &self.members {
            write!(f, "    {} (region {}", m.node, region_name(&m.region))?;
            if m.local {
                write!(f, ", this node")?;
            } else {
                write!(f, ", incarnation {}", m.incarnation)?;
            }
            write!(f, "): {}, {}", m.said, m.part)?;
            if let Some(age) = m.age {
                let ms = Duration::from_millis(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
                write!(f, ", heard {} ago", humantime::format_duration(ms))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
