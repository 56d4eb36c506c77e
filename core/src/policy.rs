//! The decision rule: one pure function from a policy, the local observation and the counted
//! remote reports to a verdict with its explanation. Every decision of the project is made here.

use std::fmt;

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

/// Reports of *other* active members on one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemoteCounts {
    /// Active members (not us) whose newest report says healthy.
    pub healthy: u32,
    /// Active members (not us) with a report (healthy or not).
    pub total: u32,
}

/// A verdict and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// `Some(true)` up, `Some(false)` down, `None` unknown.
    pub healthy: Option<bool>,
    /// Where the verdict came from.
    pub source: Source,
    /// Counted reports that say healthy: active members, this node included.
    pub healthy_reports: u32,
    /// Counted reports: active members, this node included, that report the endpoint.
    pub total_reports: u32,
    /// This node's own observation.
    pub local: Option<bool>,
}

/// The guide's threshold, integer-exact: `healthy * 100 >= q * total`.
pub const fn quorum_met(healthy: u32, total: u32, quorum_min_percent: u8) -> bool {
    healthy as u64 * 100 >= quorum_min_percent as u64 * total as u64
}

/// Decides one endpoint.
pub fn decide(
    policy: Policy,
    quorum_min_percent: u8,
    local: Option<bool>,
    remote: RemoteCounts,
) -> Decision {
    let healthy_reports = remote.healthy + u32::from(local == Some(true));
    let total_reports = remote.total + u32::from(local.is_some());
    let (healthy, source) = match (policy, local) {
        (Policy::LocalOnly | Policy::PreferLocal, Some(seen)) => (Some(seen), Source::Local),
        (Policy::LocalOnly, None) => (None, Source::Unknown),
        (Policy::PreferLocal, None) if remote.total > 0 => (
            Some(quorum_met(remote.healthy, remote.total, quorum_min_percent)),
            Source::Global,
        ),
        (Policy::PreferLocal, None) => (None, Source::Unknown),
        // Global policies: nobody else reports it, so our own observation is all there is.
        (Policy::GlobalAnyHealthy | Policy::GlobalQuorum, _) if remote.total == 0 => match local {
            Some(seen) => (Some(seen), Source::FallbackLocal),
            None => (None, Source::Unknown),
        },
        (Policy::GlobalAnyHealthy, _) => (Some(healthy_reports > 0), Source::Global),
        (Policy::GlobalQuorum, _) => (
            Some(quorum_met(
                healthy_reports,
                total_reports,
                quorum_min_percent,
            )),
            Source::Global,
        ),
    };
    Decision {
        healthy,
        source,
        healthy_reports,
        total_reports,
        local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(healthy: u32, total: u32) -> RemoteCounts {
        RemoteCounts { healthy, total }
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
        let d = decide(Policy::PreferLocal, 51, Some(false), remote(9, 9));
        assert_eq!((d.healthy, d.source), (Some(false), Source::Local));
        assert_eq!((d.healthy_reports, d.total_reports), (9, 10));
        let d = decide(Policy::PreferLocal, 51, None, remote(1, 2));
        assert_eq!((d.healthy, d.source), (Some(false), Source::Global));
        let d = decide(Policy::PreferLocal, 50, None, remote(1, 2));
        assert_eq!((d.healthy, d.source), (Some(true), Source::Global));
        let d = decide(Policy::PreferLocal, 50, None, remote(0, 0));
        assert_eq!((d.healthy, d.source), (None, Source::Unknown));
    }

    #[test]
    fn zero_members_falls_back_to_local() {
        for p in [Policy::GlobalQuorum, Policy::GlobalAnyHealthy] {
            let d = decide(p, 51, Some(true), remote(0, 0));
            assert_eq!((d.healthy, d.source), (Some(true), Source::FallbackLocal));
            let d = decide(p, 51, None, remote(0, 0));
            assert_eq!((d.healthy, d.source), (None, Source::Unknown));
        }
    }

    #[test]
    fn global_policies_count_the_local_report() {
        let d = decide(Policy::GlobalQuorum, 51, Some(true), remote(0, 1));
        assert_eq!(
            (d.healthy, d.healthy_reports, d.total_reports),
            (Some(false), 1, 2)
        );
        let d = decide(Policy::GlobalQuorum, 50, Some(true), remote(0, 1));
        assert_eq!(d.healthy, Some(true));
        let d = decide(Policy::GlobalAnyHealthy, 100, Some(false), remote(1, 5));
        assert_eq!((d.healthy, d.source), (Some(true), Source::Global));
        let d = decide(Policy::LocalOnly, 51, None, remote(5, 5));
        assert_eq!((d.healthy, d.source), (None, Source::Unknown));
    }

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Policy::from_name("global"), None);
    }
}
