//! A daemon's explanation (`GET /v1/decisions/{endpoint}?explain=true`) read back into the
//! core's [`Explanation`], so that a failed expectation is explained in the same words as
//! `gslb-sim run` explains it.

use std::time::Duration;

use gslb_state_core::{
    Explanation, Holds, Instant, MemberPart, Part, Pending, Policy, QuorumScope, RegionVote, Rule,
    Said,
};
use serde_json::Value;

/// How long fetching an explanation may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The explanation of `endpoint` by the daemon on `port`, as text; `None` when it does not
/// answer or does not know the endpoint.
pub(super) fn fetch(port: u16, endpoint: &str) -> Option<String> {
    let path = format!("/v1/decisions/{endpoint}?explain=true");
    let (status, body) = gslb_state_tests::http::get(port, &path, TIMEOUT).ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(of_json(endpoint, &v)?.to_string())
}

fn ms(v: &Value) -> Option<Duration> {
    v.as_u64().map(Duration::from_millis)
}

fn u32_of(v: &Value) -> Option<u32> {
    u32::try_from(v.as_u64()?).ok()
}

fn said(name: &str) -> Option<Said> {
    [
        Said::Healthy,
        Said::Unhealthy,
        Said::Withdrawn,
        Said::Nothing,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
}

fn part(name: &str) -> Option<Part> {
    [
        Part::Vote,
        Part::LocalVerdict,
        Part::Fallback,
        Part::NotUsed,
        Part::Inactive,
        Part::Left,
        Part::NoReport,
        Part::Withdrawn,
    ]
    .into_iter()
    .find(|p| p.as_str() == name)
}

/// The decision with its explanation, from the daemon's JSON. Times are relative: the
/// explanation's `now` is taken as zero.
fn of_json(endpoint: &str, v: &Value) -> Option<Explanation> {
    let x = &v["explanation"];
    let now = Instant::from_nanos(0);
    let mut decision = super::play::decision_of(v)?;
    decision.pending = x["pending"]["healthy"].as_bool().map(|healthy| Pending {
        healthy,
        at: now + ms(&x["pending"]["in_ms"]).unwrap_or_default(),
    });
    let rule = Rule {
        policy: Policy::from_name(x["rule"]["policy"].as_str()?)?,
        quorum_min_percent: u8::try_from(x["rule"]["quorum_min_percent"].as_u64()?).ok()?,
        scope: QuorumScope::from_name(x["rule"]["scope"].as_str()?)?,
    };
    let holds = Holds {
        up: ms(&x["holds"]["up_ms"])?,
        down: ms(&x["holds"]["down_ms"])?,
    };
    let members = x["members"]
        .as_array()?
        .iter()
        .map(|m| {
            let part = part(m["part"].as_str()?)?;
            Some(MemberPart {
                node: m["node"].as_str()?.to_owned(),
                region: m["region"].as_str()?.to_owned(),
                local: m["local"].as_bool()?,
                active: m["active"].as_bool()?,
                incarnation: m["incarnation"].as_u64()?,
                said: said(m["said"].as_str()?)?,
                seq: m["seq"].as_u64(),
                counted: part.counted(),
                part,
                age: ms(&m["age_ms"]),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let regions = x["regions"]
        .as_array()?
        .iter()
        .map(|r| {
            Some(RegionVote {
                region: r["region"].as_str()?.to_owned(),
                healthy: u32_of(&r["healthy"])?,
                total: u32_of(&r["total"])?,
                healthy_vote: r["healthy_vote"].as_bool()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Explanation {
        endpoint: endpoint.to_owned(),
        now,
        decision,
        rule_verdict: x["rule_verdict"].as_bool(),
        rule,
        holds,
        members,
        regions,
        summary: x["summary"].as_str()?.to_owned(),
    })
}
