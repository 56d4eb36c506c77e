//! [`Node::explain`]: every member's part in one endpoint's decision.

use std::time::Duration;

use crate::codec::ReportState;
use crate::explain::{Explanation, MemberPart, Part, RegionVote, Said, summary};
use crate::membership::heard_ns;
use crate::policy::{Policy, quorum_met};

use super::Node;

fn said(state: ReportState) -> Said {
    match state {
        ReportState::Healthy => Said::Healthy,
        ReportState::Unhealthy => Said::Unhealthy,
        ReportState::Withdrawn => Said::Withdrawn,
    }
}

impl Node {
    /// Why `endpoint` is decided as it is: every remembered member's part (node, region,
    /// active, its report, counted or why not, how old, incarnation), the region votes, the
    /// pending change, and the rule in words. `None` for an endpoint this node never heard of.
    /// It walks every member: meant for an operator's question, not for every decision.
    pub fn explain(&self, endpoint: &str) -> Option<Explanation> {
        let id = self.view.id_of(endpoint)?;
        let decision = self.view.decision(id);
        let rule = self.view.rule();
        let local = self.view.local(id);
        let others_total = decision.total_reports - u32::from(local.is_some());
        let local_decides = matches!(
            (rule.policy, local),
            (Policy::LocalOnly, _) | (Policy::PreferLocal, Some(_))
        );

        let own = self.own.reports.get(&id).map(|r| r.report);
        let (local_said, local_seq) = match (local, own) {
            (Some(h), own) => {
                let state = ReportState::from_observation(Some(h));
                (
                    said(state),
                    own.filter(|r| r.state() == state).map(|r| r.seq()),
                )
            }
            (None, Some(r)) if r.state() == ReportState::Withdrawn => {
                (Said::Withdrawn, Some(r.seq()))
            }
            (None, _) => (Said::Nothing, None),
        };
        let local_part = match local {
            None if local_said == Said::Withdrawn => Part::Withdrawn,
            None => Part::NoReport,
            Some(_) if local_decides => Part::LocalVerdict,
            Some(_) if others_total == 0 => Part::Fallback,
            Some(_) => Part::Vote,
        };
        let mut members = vec![MemberPart {
            node: self.node_id.clone(),
            region: self.region.clone(),
            local: true,
            active: true,
            incarnation: self.incarnation,
            said: local_said,
            seq: local_seq,
            counted: local_part.counted(),
            part: local_part,
            age: None,
        }];

        let now = heard_ns(self.now);
        let mut remote: Vec<MemberPart> = self
            .members
            .iter()
            .map(|m| {
                let report = m.reports.get(&id).copied();
                let active = m.active_until.is_some();
                let part = match report.map(|r| r.state()) {
                    _ if m.left => Part::Left,
                    _ if !active => Part::Inactive,
                    None => Part::NoReport,
                    Some(ReportState::Withdrawn) => Part::Withdrawn,
                    Some(_) if local_decides => Part::NotUsed,
                    Some(_) => Part::Vote,
                };
                MemberPart {
                    node: m.id.to_string(),
                    region: m.region.to_string(),
                    local: false,
                    active,
                    incarnation: m.incarnation,
                    said: report.map_or(Said::Nothing, |r| said(r.state())),
                    seq: report.map(|r| r.seq()),
                    counted: part.counted(),
                    part,
                    age: m.last_heard.map(|t| {
                        Duration::from_nanos(u64::try_from((now - t).max(0)).unwrap_or(u64::MAX))
                    }),
                }
            })
            .collect();
        remote.sort_by(|a, b| a.node.cmp(&b.node));
        members.extend(remote);

        let q = rule.quorum_min_percent;
        let mut regions: Vec<RegionVote> = self
            .view
            .region_tallies(id)
            .map(|(name, t)| RegionVote {
                region: name.to_owned(),
                healthy: t.healthy(),
                total: t.total(),
                healthy_vote: quorum_met(t.healthy(), t.total(), q),
            })
            .collect();
        regions.sort_by(|a, b| a.region.cmp(&b.region));

        Some(Explanation {
            endpoint: endpoint.to_owned(),
            now: self.now,
            summary: summary(rule, &decision, others_total, &regions),
            decision,
            rule_verdict: self.view.rule_verdict(id),
            rule,
            holds: self.view.holds(),
            members,
            regions,
        })
    }
}
