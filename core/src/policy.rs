//! The decision rule: one pure function from a policy, the local observation and the counted
//! reports to a verdict with its explanation ([`decide`]), and one for holds ([`hold_step`]).
//! Every decision of the project is made here.

use std::fmt;
use std::time::Duration;

use crate::time::Instant;

/// How local and global health are merged (`state.healthPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Policy {
    /// The local observation when there is one; otherwise the quorum verdict of the other
    /// members; otherwise unknown. The default.
    #[default]
    PreferLocal,
    /// The local observation only; the global view is ignored.
    LocalOnly,
    /// Healthy when at least one counted report (local included) is healthy.
    GlobalAnyHealthy,
    /// Healthy when `healthy * 100 >= quorumMinPercent * total` over the counted reports
    /// (local included).
    GlobalQuorum,
}

impl Policy {
    /// Every policy, in the guide's order.
    pub const ALL: [Policy; 4] = [
        Policy::PreferLocal,
        Policy::LocalOnly,
        Policy::GlobalAnyHealthy,
        Policy::GlobalQuorum,
    ];

    /// The name used in YAML and in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::PreferLocal => "prefer-local",
            Policy::LocalOnly => "local-only",
            Policy::GlobalAnyHealthy => "global-any-healthy",
            Policy::GlobalQuorum => "global-quorum",
        }
    }

    /// Parses the YAML name of a policy.
    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// This node's own observation (prefer-local with an observation, or local-only).
    Local,
    /// The reports of other active members (with ours, under the global policies).
    Global,
    /// A global policy, but no other active member reports the endpoint: our observation alone.
    FallbackLocal,
    /// Nobody's observation is available.
    Unknown,
}

impl Source {
    /// The name used in JSON and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Global => "global",
            Source::FallbackLocal => "fallback-local",
            Source::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the counted reports are weighed under the quorum rule (`state.quorumScope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum QuorumScope {
    /// Every counted report is one vote (the guide's rule). The default.
    #[default]
    Members,
    /// The counted reports are grouped by their reporter's region (`node.region`; the empty
    /// region is a region): a region votes healthy when `healthy * 100 >= q * total` inside it,
    /// and the verdict is healthy when `healthy_regions * 100 >= q * reporting_regions`. One
    /// region with many nodes cannot outvote the others.
    Regions,
}

impl QuorumScope {
    /// Every scope.
    pub const ALL: [QuorumScope; 2] = [QuorumScope::Members, QuorumScope::Regions];

    /// The name used in YAML and in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            QuorumScope::Members => "members",
            QuorumScope::Regions => "regions",
        }
    }

    /// Parses the YAML name of a scope.
    pub fn from_name(name: &str) -> Option<QuorumScope> {
        QuorumScope::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for QuorumScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings the rule needs: `state.healthPolicy`, `state.quorumMinPercent` and
/// `state.quorumScope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    /// `state.healthPolicy`.
    pub policy: Policy,
    /// `state.quorumMinPercent`, in 1..=100.
    pub quorum_min_percent: u8,
    /// `state.quorumScope`.
    pub scope: QuorumScope,
}

impl Rule {
    /// The rule of `state.*`.
    pub fn of(state: &crate::config::StateSettings) -> Rule {
        Rule {
            policy: state.policy,
            quorum_min_percent: state.quorum_min_percent,
            scope: state.quorum_scope,
        }
    }
}

/// Reports of *other* active members on one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteCounts {
    /// Active members (not us) whose newest report says healthy.
    pub healthy: u32,
    /// Active members (not us) with a report (healthy or not).
    pub total: u32,
}

/// Region votes on one endpoint over every counted report (active members, this node
/// included), each region judged by the threshold inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionCounts {
    /// Regions whose counted reports meet the threshold.
    pub healthy: u32,
    /// Regions with at least one counted report.
    pub total: u32,
}

/// A verdict change that waits for its hold (`state.holdUp` / `state.holdDown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pending {
    /// The verdict that takes effect.
    pub healthy: bool,
    /// When it takes effect (on this node's monotonic clock), unless the underlying verdict
    /// changes again before.
    pub at: Instant,
}

/// A verdict and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// `Some(true)` up, `Some(false)` down, `None` unknown. While a change is pending, the
    /// verdict held.
    pub healthy: Option<bool>,
    /// Where the verdict came from (the rule's current source, also while a change is pending).
    pub source: Source,
    /// Counted reports that say healthy: active members, this node included.
    pub healthy_reports: u32,
    /// Counted reports: active members, this node included, that report the endpoint.
    pub total_reports: u32,
    /// Regions whose counted reports meet `quorumMinPercent` (this node's included), whatever
    /// the scope: under `members` scope for information only.
    pub healthy_regions: u32,
    /// Regions with a counted report (this node's included), whatever the scope.
    pub total_regions: u32,
    /// This node's own observation.
    pub local: Option<bool>,
    /// A change of verdict waiting for its hold to elapse; `None` when none is.
    pub pending: Option<Pending>,
}

impl Decision {
    /// The decision about an endpoint nobody reports.
    pub const UNKNOWN: Decision = Decision {
        healthy: None,
        source: Source::Unknown,
        healthy_reports: 0,
        total_reports: 0,
        healthy_regions: 0,
        total_regions: 0,
        local: None,
        pending: None,
    };
}

/// The guide's threshold, integer-exact: `healthy * 100 >= q * total`.
pub const fn quorum_met(healthy: u32, total: u32, quorum_min_percent: u8) -> bool {
    healthy as u64 * 100 >= quorum_min_percent as u64 * total as u64
}

/// Decides one endpoint (before holds: the returned decision has no `pending`).
///
/// `remote` are the other active members' reports; `regions` the region votes over every
/// counted report, this node's included. Under `regions` scope the quorum is over the region
/// votes; whenever the quorum is asked for, the counted reports are either all of them
/// (global-quorum) or the other members' with no local observation (prefer-local), so the
/// same votes serve both.
pub fn decide(
    rule: Rule,
    local: Option<bool>,
    remote: RemoteCounts,
    regions: RegionCounts,
) -> Decision {
    let q = rule.quorum_min_percent;
    let healthy_reports = remote.healthy + u32::from(local == Some(true));
    let total_reports = remote.total + u32::from(local.is_some());
    let quorum = |healthy: u32, total: u32| match rule.scope {
        QuorumScope::Members => quorum_met(healthy, total, q),
        QuorumScope::Regions => quorum_met(regions.healthy, regions.total, q),
    };
    let (healthy, source) = match (rule.policy, local) {
        (Policy::LocalOnly | Policy::PreferLocal, Some(seen)) => (Some(seen), Source::Local),
        (Policy::LocalOnly, None) => (None, Source::Unknown),
        (Policy::PreferLocal, None) if remote.total > 0 => {
            (Some(quorum(remote.healthy, remote.total)), Source::Global)
        }
        (Policy::PreferLocal, None) => (None, Source::Unknown),
        // Global policies: nobody else reports it, so our own observation is all there is.
        (Policy::GlobalAnyHealthy | Policy::GlobalQuorum, _) if remote.total == 0 => match local {
            Some(seen) => (Some(seen), Source::FallbackLocal),
            None => (None, Source::Unknown),
        },
        (Policy::GlobalAnyHealthy, _) => (Some(healthy_reports > 0), Source::Global),
        (Policy::GlobalQuorum, _) => (Some(quorum(healthy_reports, total_reports)), Source::Global),
    };
    Decision {
        healthy,
        source,
        healthy_reports,
        total_reports,
        healthy_regions: regions.healthy,
        total_regions: regions.total,
        local,
        pending: None,
    }
}

/// Hold times (`state.holdUp`, `state.holdDown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Holds {
    /// How long an unhealthy-to-healthy change must hold before it takes effect.
    pub up: Duration,
    /// How long a healthy-to-unhealthy change must hold before it takes effect.
    pub down: Duration,
}

impl Holds {
    /// No hold: every change takes effect at once.
    pub const NONE: Holds = Holds {
        up: Duration::ZERO,
        down: Duration::ZERO,
    };

    /// The hold of a change to `healthy`.
    pub const fn of(self, healthy: bool) -> Duration {
        if healthy { self.up } else { self.down }
    }

    /// Whether every change takes effect at once.
    pub fn is_none(self) -> bool {
        self.up.is_zero() && self.down.is_zero()
    }
}

/// The hold rule, one step: the verdict `shown` until now, the instant `since` a change to the
/// other verdict started to be pending (if one is), and the rule's verdict `now`. Returns the
/// verdict shown from now on and, if a change is still pending, since when.
///
/// A change between healthy and unhealthy takes effect once the rule's verdict has been the
/// new one for its hold without interruption (`now >= since + hold`); a change from or to
/// unknown takes effect at once; a rule verdict back to the shown one cancels the pending
/// change.
pub fn hold_step(
    holds: Holds,
    shown: Option<bool>,
    since: Option<Instant>,
    rule_verdict: Option<bool>,
    now: Instant,
) -> (Option<bool>, Option<Instant>) {
    match (shown, rule_verdict) {
        (Some(old), Some(new)) if old != new => {
            let since = since.unwrap_or(now);
            if now >= since + holds.of(new) {
                (Some(new), None)
            } else {
                (Some(old), Some(since))
            }
        }
        _ => (rule_verdict, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(healthy: u32, total: u32) -> RemoteCounts {
        RemoteCounts { healthy, total }
    }

    /// [`decide`] under `members` scope (region votes play no part).
    fn members(policy: Policy, q: u8, local: Option<bool>, remote: RemoteCounts) -> Decision {
        let rule = Rule {
            policy,
            quorum_min_percent: q,
            scope: QuorumScope::Members,
        };
        decide(rule, local, remote, RegionCounts::default())
    }

    fn regions(
        policy: Policy,
        q: u8,
        local: Option<bool>,
        remote: RemoteCounts,
        votes: (u32, u32),
    ) -> Decision {
        let rule = Rule {
            policy,
            quorum_min_percent: q,
            scope: QuorumScope::Regions,
        };
        let votes = RegionCounts {
            healthy: votes.0,
            total: votes.1,
        };
        decide(rule, local, remote, votes)
    }

    #[test]
    fn threshold_is_integer_exact() {
        assert!(quorum_met(51, 100, 51));
        assert!(!quorum_met(50, 100, 51));
        assert!(quorum_met(1, 2, 50));
        assert!(!quorum_met(1, 2, 51));
        assert!(quorum_met(2, 3, 66));
        assert!(!quorum_met(2, 3, 67));
        assert!(quorum_met(u32::MAX, u32::MAX, 100), "no overflow");
    }

    #[test]
    fn prefer_local_is_the_default_and_local_wins() {
        assert_eq!(Policy::default(), Policy::PreferLocal);
        let d = members(Policy::PreferLocal, 51, Some(false), remote(9, 9));
        assert_eq!((d.healthy, d.source), (Some(false), Source::Local));
        assert_eq!((d.healthy_reports, d.total_reports), (9, 10));
        let d = members(Policy::PreferLocal, 51, None, remote(1, 2));
        assert_eq!((d.healthy, d.source), (Some(false), Source::Global));
        let d = members(Policy::PreferLocal, 50, None, remote(1, 2));
        assert_eq!((d.healthy, d.source), (Some(true), Source::Global));
        let d = members(Policy::PreferLocal, 50, None, remote(0, 0));
        assert_eq!((d.healthy, d.source), (None, Source::Unknown));
    }

    #[test]
    fn zero_members_falls_back_to_local() {
        for p in [Policy::GlobalQuorum, Policy::GlobalAnyHealthy] {
            let d = members(p, 51, Some(true), remote(0, 0));
            assert_eq!((d.healthy, d.source), (Some(true), Source::FallbackLocal));
            let d = members(p, 51, None, remote(0, 0));
            assert_eq!((d.healthy, d.source), (None, Source::Unknown));
        }
    }

    #[test]
    fn global_policies_count_the_local_report() {
        let d = members(Policy::GlobalQuorum, 51, Some(true), remote(0, 1));
        assert_eq!(
            (d.healthy, d.healthy_reports, d.total_reports),
            (Some(false), 1, 2)
        );
        let d = members(Policy::GlobalQuorum, 50, Some(true), remote(0, 1));
        assert_eq!(d.healthy, Some(true));
        let d = members(Policy::GlobalAnyHealthy, 100, Some(false), remote(1, 5));
        assert_eq!((d.healthy, d.source), (Some(true), Source::Global));
        let d = members(Policy::LocalOnly, 51, None, remote(5, 5));
        assert_eq!((d.healthy, d.source), (None, Source::Unknown));
    }

    #[test]
    fn region_scope_counts_region_votes() {
        // 5 reports, 3 healthy (60%), but in 1 healthy region of 3 (33%).
        let d = regions(Policy::GlobalQuorum, 51, Some(true), remote(2, 4), (1, 3));
        assert_eq!((d.healthy, d.source), (Some(false), Source::Global));
        assert_eq!((d.healthy_reports, d.total_reports), (3, 5));
        assert_eq!((d.healthy_regions, d.total_regions), (1, 3));
        let d = members(Policy::GlobalQuorum, 51, Some(true), remote(2, 4));
        assert_eq!(d.healthy, Some(true), "the same reports by member");
        // Prefer-local without an observation: the others, by region.
        let d = regions(Policy::PreferLocal, 50, None, remote(1, 3), (1, 2));
        assert_eq!((d.healthy, d.source), (Some(true), Source::Global));
        // The fallback and any-healthy are as before.
        let d = regions(Policy::GlobalQuorum, 51, Some(false), remote(0, 0), (0, 1));
        assert_eq!((d.healthy, d.source), (Some(false), Source::FallbackLocal));
        let d = regions(
            Policy::GlobalAnyHealthy,
            100,
            Some(false),
            remote(1, 5),
            (0, 2),
        );
        assert_eq!((d.healthy, d.source), (Some(true), Source::Global));
    }

    #[test]
    fn holds_damp_changes_between_healthy_and_unhealthy_only() {
        let holds = Holds {
            up: Duration::from_secs(10),
            down: Duration::from_secs(3),
        };
        let t = |s: u64| Instant::from_millis(s * 1000);
        // From and to unknown: at once.
        assert_eq!(
            hold_step(holds, None, None, Some(true), t(0)),
            (Some(true), None)
        );
        assert_eq!(hold_step(holds, Some(true), None, None, t(0)), (None, None));
        // Healthy to unhealthy: pending for holdDown, then in effect.
        assert_eq!(
            hold_step(holds, Some(true), None, Some(false), t(5)),
            (Some(true), Some(t(5)))
        );
        assert_eq!(
            hold_step(holds, Some(true), Some(t(5)), Some(false), t(7)),
            (Some(true), Some(t(5)))
        );
        assert_eq!(
            hold_step(holds, Some(true), Some(t(5)), Some(false), t(8)),
            (Some(false), None)
        );
        // Interrupted: the pending change is dropped.
        assert_eq!(
            hold_step(holds, Some(true), Some(t(5)), Some(true), t(7)),
            (Some(true), None)
        );
        // No hold: at once.
        assert_eq!(
            hold_step(Holds::NONE, Some(false), None, Some(true), t(1)),
            (Some(true), None)
        );
    }

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Policy::from_name("global"), None);
        for s in QuorumScope::ALL {
            assert_eq!(QuorumScope::from_name(s.as_str()), Some(s));
        }
        assert_eq!(QuorumScope::from_name("region"), None);
    }
}
