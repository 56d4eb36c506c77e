//! The daemon's HTTP API (`admin.listen`).
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/decisions` | every endpoint: `healthy` (true/false/null), `source`, `healthy_reports`, `total_reports`, `healthy_regions`, `total_regions`, `local`, `pending` |
//! | `GET /v1/decisions/{endpoint}` | one endpoint (404 if unknown); `?explain=true` adds `explanation`: every member's part, the region votes, the rule in words |
//! | `GET /v1/members` | every member: active or not, region, incarnation, last heard, reports, clock offset |
//! | `PUT /v1/health/{endpoint}` | `{"healthy": true\|false}`: this node's observation, for external checkers |
//! | `DELETE /v1/health/{endpoint}` | withdraw this node's observation |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | 200 while the driver runs, with the NATS connection state; `status` is `loading` until the health snapshot is read, then `ok` |
//! | `GET /` | the status page ([`crate::status_page`]) |
//! | `GET /v1/status` | a summary: node, policy, NATS, snapshot, config version, counts by verdict, members |
//! | `GET /v1/status/decisions` | one page of decisions, by name: `?offset=&limit=&filter=&verdict=`, with the number matching |

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gslb_state_core::names::check_endpoint_name;
use gslb_state_core::{
    Decision, Explanation, Instant, MemberInfo, MemberPart, Pending, RegionVote,
};
use serde::{Deserialize, Serialize};

use gslb_state_nats::Handle;

/// Whole milliseconds of `d` (saturating).
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One decision as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionJson {
    /// `true` up, `false` down, `null` unknown. While a change is pending, the verdict held.
    pub healthy: Option<bool>,
    /// `local`, `global`, `fallback-local` or `unknown`.
    pub source: String,
    /// Counted reports that say healthy (this node included).
    pub healthy_reports: u32,
    /// Counted reports (this node included).
    pub total_reports: u32,
    /// Regions whose counted reports meet `quorumMinPercent` (whatever `state.quorumScope`).
    pub healthy_regions: u32,
    /// Regions with a counted report.
    pub total_regions: u32,
    /// This node's own observation.
    pub local: Option<bool>,
    /// A change of verdict waiting for `state.holdUp`/`holdDown`; `null` when none is.
    pub pending: Option<PendingJson>,
}

/// A pending change of verdict as JSON.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingJson {
    /// The verdict that takes effect.
    pub healthy: bool,
    /// Milliseconds from now until it does (unless the rule's verdict changes back first).
    pub in_ms: u64,
}

impl PendingJson {
    /// `p` seen at `now` (the node's clock).
    pub fn of(p: &Pending, now: Instant) -> PendingJson {
        PendingJson {
            healthy: p.healthy,
            in_ms: ms(p.at.saturating_since(now)),
        }
    }
}

impl DecisionJson {
    /// `d` seen at `now` (the node's clock, [`Handle::now`]): a pending change's instant
    /// becomes the time left.
    pub fn of(d: &Decision, now: Instant) -> DecisionJson {
        DecisionJson {
            healthy: d.healthy,
            source: d.source.as_str().to_owned(),
            healthy_reports: d.healthy_reports,
            total_reports: d.total_reports,
            healthy_regions: d.healthy_regions,
            total_regions: d.total_regions,
            local: d.local,
            pending: d.pending.as_ref().map(|p| PendingJson::of(p, now)),
        }
    }
}

/// `GET /v1/decisions/{endpoint}?explain=true`: the decision, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExplainedDecisionJson {
    /// The decision (the same fields as without `explain`).
    #[serde(flatten)]
    pub decision: DecisionJson,
    /// Why.
    pub explanation: ExplanationJson,
}

/// An endpoint's decision explained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExplanationJson {
    /// The rule in force.
    pub rule: RuleJson,
    /// The hold times in force.
    pub holds: HoldsJson,
    /// What the rule says now, before holds (differs from `healthy` only while a change is
    /// pending).
    pub rule_verdict: Option<bool>,
    /// The rule applied, in words (`global-quorum: 3 of 5 healthy = 60% >= 51%`).
    pub summary: String,
    /// Every remembered member, this node first, then the others by id.
    pub members: Vec<MemberPartJson>,
    /// Every region with a counted report, by name, with its vote (what the rule weighs under
    /// `quorumScope: regions`; for information under `members`).
    pub regions: Vec<RegionVoteJson>,
    /// The pending change, with the hold it waits for; `null` when none is.
    pub pending: Option<ExplainedPendingJson>,
}

/// `state.healthPolicy`, `state.quorumMinPercent`, `state.quorumScope`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleJson {
    /// The policy.
    pub policy: String,
    /// The threshold.
    pub quorum_min_percent: u8,
    /// `members` or `regions`.
    pub scope: String,
}

/// `state.holdUp`, `state.holdDown` in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct HoldsJson {
    /// `state.holdUp`.
    pub up_ms: u64,
    /// `state.holdDown`.
    pub down_ms: u64,
}

/// A pending change explained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExplainedPendingJson {
    /// The verdict that takes effect.
    pub healthy: bool,
    /// Milliseconds from now until it does.
    pub in_ms: u64,
    /// The hold it waits for: `holdUp` or `holdDown`.
    pub hold: String,
    /// That hold, in milliseconds.
    pub hold_ms: u64,
}

/// One member's part in a decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberPartJson {
    /// Node id.
    pub node: String,
    /// Its region.
    pub region: String,
    /// This node.
    pub local: bool,
    /// Active (counted in decisions); this node always is.
    pub active: bool,
    /// Its incarnation.
    pub incarnation: u64,
    /// What it said: `healthy`, `unhealthy`, `withdrawn` or `none`.
    pub said: String,
    /// The sequence of that report, if one is held.
    pub seq: Option<u64>,
    /// Whether its report is in the counts.
    pub counted: bool,
    /// Its part: `vote`, `local-verdict`, `fallback-local`, `not-used`, `inactive`, `left`,
    /// `no-report` or `withdrawn`.
    pub part: String,
    /// The part in words (`counted`, `not counted: inactive (no heartbeat within the TTL)`).
    pub why: String,
    /// Milliseconds since its latest heartbeat (`null` for this node and a member never heard).
    pub age_ms: Option<u64>,
}

impl From<&MemberPart> for MemberPartJson {
    fn from(m: &MemberPart) -> Self {
        MemberPartJson {
            node: m.node.clone(),
            region: m.region.clone(),
            local: m.local,
            active: m.active,
            incarnation: m.incarnation,
            said: m.said.as_str().to_owned(),
            seq: m.seq,
            counted: m.counted,
            part: m.part.as_str().to_owned(),
            why: m.part.describe().to_owned(),
            age_ms: m.age.map(ms),
        }
    }
}

/// One region's vote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegionVoteJson {
    /// The region (possibly empty).
    pub region: String,
    /// Counted reports in it that say healthy.
    pub healthy: u32,
    /// Counted reports in it.
    pub total: u32,
    /// Whether they meet the threshold.
    pub healthy_vote: bool,
}

impl From<&RegionVote> for RegionVoteJson {
    fn from(r: &RegionVote) -> Self {
        RegionVoteJson {
            region: r.region.clone(),
            healthy: r.healthy,
            total: r.total,
            healthy_vote: r.healthy_vote,
        }
    }
}

impl From<&Explanation> for ExplainedDecisionJson {
    fn from(x: &Explanation) -> Self {
        let pending = x.decision.pending.as_ref().map(|p| {
            let (hold, hold_ms) = if p.healthy {
                ("holdUp", ms(x.holds.up))
            } else {
                ("holdDown", ms(x.holds.down))
            };
            ExplainedPendingJson {
                healthy: p.healthy,
                in_ms: ms(p.at.saturating_since(x.now)),
                hold: hold.to_owned(),
                hold_ms,
            }
        });
        ExplainedDecisionJson {
            decision: DecisionJson::of(&x.decision, x.now),
            explanation: ExplanationJson {
                rule: RuleJson {
                    policy: x.rule.policy.as_str().to_owned(),
                    quorum_min_percent: x.rule.quorum_min_percent,
                    scope: x.rule.scope.as_str().to_owned(),
                },
                holds: HoldsJson {
                    up_ms: ms(x.holds.up),
                    down_ms: ms(x.holds.down),
                },
                rule_verdict: x.rule_verdict,
                summary: x.summary.clone(),
                members: x.members.iter().map(MemberPartJson::from).collect(),
                regions: x.regions.iter().map(RegionVoteJson::from).collect(),
                pending,
            },
        }
    }
}

/// `GET /v1/decisions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionsJson {
    /// This node.
    pub node: String,
    /// Policy in force.
    pub policy: String,
    /// Endpoint → decision.
    pub decisions: BTreeMap<String, DecisionJson>,
}

/// One member as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberJson {
    /// Node id.
    pub node: String,
    /// Region.
    pub region: String,
    /// Incarnation.
    pub incarnation: u64,
    /// Counted in decisions.
    pub active: bool,
    /// This node.
    pub local: bool,
    /// It announced that it left (a graceful shutdown).
    pub left: bool,
    /// Milliseconds since its last heartbeat (null for this node).
    pub last_heard_ms_ago: Option<u64>,
    /// Reports held.
    pub reports: usize,
    /// Our wall clock minus its, in ms (includes transit).
    pub clock_offset_ms: i64,
}

impl From<&MemberInfo> for MemberJson {
    fn from(m: &MemberInfo) -> Self {
        MemberJson {
            node: m.node.clone(),
            region: m.region.clone(),
            incarnation: m.incarnation,
            active: m.active,
            local: m.local,
            left: m.left,
            last_heard_ms_ago: m.last_heard_ago.map(|d| d.as_millis() as u64),
            reports: m.reports,
            clock_offset_ms: m.clock_offset_ms,
        }
    }
}

/// `GET /v1/members`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembersJson {
    /// Active members, this node included.
    pub active_members: usize,
    /// Every member, this node first.
    pub members: Vec<MemberJson>,
}

/// `PUT /v1/health/{endpoint}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    /// The observation.
    pub healthy: bool,
}

#[derive(Clone)]
struct AppState {
    node: Arc<Handle>,
}

/// The API router for `node`: every answer comes from the node itself.
pub fn router(node: Arc<Handle>) -> Router {
    Router::new()
        .route("/", get(crate::status_page::page))
        .route("/v1/status", get(status))
        .route("/v1/status/decisions", get(decision_page))
        .route("/v1/decisions", get(decisions))
        .route("/v1/decisions/{endpoint}", get(decision))
        .route("/v1/members", get(members))
        .route(
            "/v1/health/{endpoint}",
            axum::routing::put(put_health).delete(delete_health),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { node })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

fn stopped() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping")
}

async fn decisions(State(s): State<AppState>) -> Response {
    match s.node.decisions().await {
        Ok(all) => {
            let now = s.node.now();
            axum::Json(DecisionsJson {
                node: s.node.node_id().to_owned(),
                policy: s.node.policy().0.to_string(),
                decisions: all
                    .iter()
                    .map(|(e, d)| (e.clone(), DecisionJson::of(d, now)))
                    .collect(),
            })
            .into_response()
        }
        Err(_) => stopped(),
    }
}

fn unknown_endpoint(endpoint: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("unknown endpoint {endpoint:?}"),
    )
}

/// `?explain=true|false` (also `1`/`0`, `yes`/`no`; absent is false).
fn explain_wanted(query: &HashMap<String, String>) -> Result<bool, String> {
    match query.get("explain").map(String::as_str) {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes" | "") => Ok(true),
        Some(other) => Err(format!("explain: expected true or false, got {other:?}")),
    }
}

async fn decision(
    State(s): State<AppState>,
    Path(endpoint): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match explain_wanted(&query) {
        Err(e) => error(StatusCode::BAD_REQUEST, e),
        Ok(false) => match s.node.decision(&endpoint) {
            Some(d) => axum::Json(DecisionJson::of(&d, s.node.now())).into_response(),
            None => unknown_endpoint(&endpoint),
        },
        Ok(true) => match s.node.explain(&endpoint).await {
            Ok(Some(x)) => axum::Json(ExplainedDecisionJson::from(&x)).into_response(),
            Ok(None) => unknown_endpoint(&endpoint),
            Err(_) => stopped(),
        },
    }
}

async fn members(State(s): State<AppState>) -> Response {
    match s.node.members().await {
        Ok(all) => axum::Json(MembersJson {
            active_members: all.iter().filter(|m| m.active).count(),
            members: all.iter().map(MemberJson::from).collect(),
        })
        .into_response(),
        Err(_) => stopped(),
    }
}

async fn put_health(
    State(s): State<AppState>,
    Path(endpoint): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = check_endpoint_name(&endpoint) {
        return error(StatusCode::BAD_REQUEST, format!("endpoint name: {e}"));
    }
    let body: HealthBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"healthy\": true|false}}: {e}"),
            );
        }
    };
    match s.node.set_health(&endpoint, Some(body.healthy)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => stopped(),
    }
}

async fn delete_health(State(s): State<AppState>, Path(endpoint): Path<String>) -> Response {
    if let Err(e) = check_endpoint_name(&endpoint) {
        return error(StatusCode::BAD_REQUEST, format!("endpoint name: {e}"));
    }
    match s.node.set_health(&endpoint, None) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => stopped(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.node.metrics().encode(),
    )
        .into_response()
}

/// `loading` until the node has read its health snapshot, then `ok`.
fn node_status(node: &Handle) -> &'static str {
    if node.snapshot_loaded() {
        "ok"
    } else {
        "loading"
    }
}

/// Always 200 (the process is alive and answers, from what it has, even while loading): a
/// liveness probe must not restart a node that is still reading a large snapshot. `status`
/// is `loading` until the health snapshot is read in full (NATS unreachable since the start,
/// or a large snapshot still being read), then `ok`; `snapshot_loaded` says the same.
async fn healthz(State(s): State<AppState>) -> Response {
    axum::Json(serde_json::json!({
        "status": node_status(&s.node),
        "node": s.node.node_id(),
        "nats_connected": s.node.is_connected(),
        "snapshot_loaded": s.node.snapshot_loaded(),
    }))
    .into_response()
}

/// How many endpoints have each verdict.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerdictCounts {
    /// Decided healthy.
    pub up: usize,
    /// Decided unhealthy.
    pub down: usize,
    /// Undecided (`healthy: null`).
    pub unknown: usize,
    /// With a change of verdict pending (counted in its held verdict as well).
    pub pending: usize,
}

impl VerdictCounts {
    fn add(&mut self, d: &Decision) {
        match d.healthy {
            Some(true) => self.up += 1,
            Some(false) => self.down += 1,
            None => self.unknown += 1,
        }
        if d.pending.is_some() {
            self.pending += 1;
        }
    }
}

/// `GET /v1/status`: what an operator looks at first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusJson {
    /// This node.
    pub node: String,
    /// This node's region.
    pub region: String,
    /// `loading` until the health snapshot is read, then `ok` (as `/healthz`).
    pub status: String,
    /// The health snapshot was read in full.
    pub snapshot_loaded: bool,
    /// Connected to NATS now.
    pub nats_connected: bool,
    /// Why the latest connection attempt failed, while not connected.
    pub last_connect_error: Option<String>,
    /// The policy in force.
    pub policy: String,
    /// `quorumMinPercent` in force.
    pub quorum_min_percent: u8,
    /// The config sync version in force (0: none; the node's own file).
    pub config_version: u64,
    /// A pushed version is being applied.
    pub config_applying: bool,
    /// Endpoints known.
    pub endpoints: usize,
    /// How many have each verdict.
    pub verdicts: VerdictCounts,
    /// Active members, this node included.
    pub active_members: usize,
    /// Every member, this node first.
    pub members: Vec<MemberJson>,
}

async fn status(State(s): State<AppState>) -> Response {
    let (Ok(members), Ok(all)) = (s.node.members().await, s.node.decisions().await) else {
        return stopped();
    };
    let mut verdicts = VerdictCounts::default();
    for (_, d) in &all {
        verdicts.add(d);
    }
    let (policy, quorum_min_percent) = s.node.policy();
    let (config_version, config_applying) = {
        let state = s.node.config_state();
        let state = state.borrow();
        (state.version, state.applying)
    };
    let connected = s.node.is_connected();
    axum::Json(StatusJson {
        node: s.node.node_id().to_owned(),
        region: members
            .iter()
            .find(|m| m.local)
            .map(|m| m.region.clone())
            .unwrap_or_default(),
        status: node_status(&s.node).to_owned(),
        snapshot_loaded: s.node.snapshot_loaded(),
        nats_connected: connected,
        last_connect_error: if connected {
            None
        } else {
            s.node.last_connect_error()
        },
        policy: policy.to_string(),
        quorum_min_percent,
        config_version,
        config_applying,
        endpoints: all.len(),
        verdicts,
        active_members: members.iter().filter(|m| m.active).count(),
        members: members.iter().map(MemberJson::from).collect(),
    })
    .into_response()
}

/// Rows of a decision page when `limit` is not given.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// Most rows of a decision page.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// `GET /v1/status/decisions` query.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Rows to skip (of those matching, by name).
    pub offset: Option<usize>,
    /// Rows wanted: [`DEFAULT_PAGE_LIMIT`] by default, at most [`MAX_PAGE_LIMIT`].
    pub limit: Option<usize>,
    /// Only endpoints whose name contains this (ASCII case ignored).
    pub filter: Option<String>,
    /// Only `up`, `down`, `unknown` or `pending` endpoints (`all` or empty: every one).
    pub verdict: Option<String>,
}

/// Which verdicts a page keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictFilter {
    /// Every endpoint.
    All,
    /// `healthy: true`.
    Up,
    /// `healthy: false`.
    Down,
    /// `healthy: null`.
    Unknown,
    /// A change of verdict pending.
    Pending,
}

impl VerdictFilter {
    /// Parses `all` (or empty), `up`, `down`, `unknown`, `pending`.
    pub fn parse(s: &str) -> Result<VerdictFilter, String> {
        Ok(match s {
            "" | "all" => VerdictFilter::All,
            "up" => VerdictFilter::Up,
            "down" => VerdictFilter::Down,
            "unknown" => VerdictFilter::Unknown,
            "pending" => VerdictFilter::Pending,
            other => {
                return Err(format!(
                    "verdict: expected all, up, down, unknown or pending, got {other:?}"
                ));
            }
        })
    }

    /// Whether `d` is kept.
    pub fn keeps(self, d: &Decision) -> bool {
        match self {
            VerdictFilter::All => true,
            VerdictFilter::Up => d.healthy == Some(true),
            VerdictFilter::Down => d.healthy == Some(false),
            VerdictFilter::Unknown => d.healthy.is_none(),
            VerdictFilter::Pending => d.pending.is_some(),
        }
    }
}

/// One row of a decision page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointDecisionJson {
    /// The endpoint.
    pub endpoint: String,
    /// Its decision (the fields of `GET /v1/decisions`).
    #[serde(flatten)]
    pub decision: DecisionJson,
}

/// `GET /v1/status/decisions`: one page of decisions, by endpoint name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionPageJson {
    /// This node.
    pub node: String,
    /// The policy in force.
    pub policy: String,
    /// Endpoints known.
    pub total: usize,
    /// Endpoints matching `filter` and `verdict`.
    pub matching: usize,
    /// The offset of the first row, among those matching.
    pub offset: usize,
    /// The limit applied.
    pub limit: usize,
    /// How many endpoints have each verdict (all of them, whatever the filter).
    pub verdicts: VerdictCounts,
    /// The rows, by name.
    pub decisions: Vec<EndpointDecisionJson>,
}

/// Whether `hay` contains `needle`, ASCII case ignored.
fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The page `[offset, offset + limit)` of the decisions in `all` that `filter` (a name
/// substring, ASCII case ignored) and `verdict` keep, by name; the number matching; the counts
/// by verdict of all. Only the rows up to the page's end are sorted, so a page of 100 among
/// 100,000 endpoints costs one pass and a partial selection.
pub fn page_of<'a>(
    all: &'a [(String, Decision)],
    filter: &str,
    verdict: VerdictFilter,
    offset: usize,
    limit: usize,
) -> (Vec<&'a (String, Decision)>, usize, VerdictCounts) {
    let mut counts = VerdictCounts::default();
    let mut matching: Vec<&(String, Decision)> = Vec::new();
    for entry in all {
        counts.add(&entry.1);
        if verdict.keeps(&entry.1) && contains_ignore_ascii_case(&entry.0, filter) {
            matching.push(entry);
        }
    }
    let n = matching.len();
    let end = offset.saturating_add(limit).min(n);
    if offset >= end {
        return (Vec::new(), n, counts);
    }
    if end < n {
        matching.select_nth_unstable_by(end - 1, |a, b| a.0.cmp(&b.0));
        matching.truncate(end);
    }
    matching.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    matching.drain(..offset);
    (matching, n, counts)
}

async fn decision_page(
    State(s): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected ?offset=N&limit=N&filter=TEXT&verdict=all|up|down|unknown|pending: {}",
                    e.body_text()
                ),
            );
        }
    };
    let verdict = match VerdictFilter::parse(query.verdict.as_deref().unwrap_or("")) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let offset = query.offset.unwrap_or(0);
    let limit = query
        .limit
        .unwrap_or(DEFAULT_PAGE_LIMIT)
        .clamp(1, MAX_PAGE_LIMIT);
    let Ok(all) = s.node.decisions().await else {
        return stopped();
    };
    let now = s.node.now();
    let filter = query.filter.as_deref().unwrap_or("");
    let (rows, matching, verdicts) = page_of(&all, filter, verdict, offset, limit);
    axum::Json(DecisionPageJson {
        node: s.node.node_id().to_owned(),
        policy: s.node.policy().0.to_string(),
        total: all.len(),
        matching,
        offset,
        limit,
        verdicts,
        decisions: rows
            .into_iter()
            .map(|(e, d)| EndpointDecisionJson {
                endpoint: e.clone(),
                decision: DecisionJson::of(d, now),
            })
            .collect(),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` endpoints `ep-00000` … in a scrambled order: every 3rd down, every 7th unknown.
    fn decisions(n: usize) -> Vec<(String, Decision)> {
        (0..n)
            .map(|i| (i * 7919) % n)
            .map(|i| {
                let healthy = if i % 7 == 0 { None } else { Some(i % 3 != 0) };
                (
                    format!("ep-{i:05}"),
                    Decision {
                        healthy,
                        ..Decision::UNKNOWN
                    },
                )
            })
            .collect()
    }

    fn names(rows: &[&(String, Decision)]) -> Vec<String> {
        rows.iter().map(|(e, _)| e.clone()).collect()
    }

    #[test]
    fn a_page_is_sorted_filtered_and_counted() {
        let all = decisions(100_000);
        let started = std::time::Instant::now();
        let (rows, matching, counts) = page_of(&all, "", VerdictFilter::All, 200, 100);
        eprintln!(
            "one page of 100 among 100,000 endpoints: {:?}",
            started.elapsed()
        );
        assert_eq!(matching, 100_000);
        assert_eq!(counts.up + counts.down + counts.unknown, 100_000);
        assert_eq!(counts.unknown, 100_000usize.div_ceil(7));
        let want: Vec<String> = (200..300).map(|i| format!("ep-{i:05}")).collect();
        assert_eq!(names(&rows), want);

        // Down only, by name substring (case ignored), the second page.
        let (rows, matching, _) = page_of(&all, "EP-00", VerdictFilter::Down, 5, 5);
        let want: Vec<usize> = (0..1000).filter(|i| i % 7 != 0 && i % 3 == 0).collect();
        assert_eq!(matching, want.len());
        let want: Vec<String> = want[5..10].iter().map(|i| format!("ep-{i:05}")).collect();
        assert_eq!(names(&rows), want);

        // Past the end: nothing, but the count.
        let (rows, matching, _) = page_of(&all, "ep-0000", VerdictFilter::All, 10, 100);
        assert!(rows.is_empty());
        assert_eq!(matching, 10);
        let (rows, matching, _) = page_of(&all, "no such", VerdictFilter::All, 0, 100);
        assert!(rows.is_empty() && matching == 0);
    }

    #[test]
    fn verdict_filters_parse_and_reject_the_rest() {
        assert_eq!(VerdictFilter::parse("").unwrap(), VerdictFilter::All);
        assert_eq!(VerdictFilter::parse("down").unwrap(), VerdictFilter::Down);
        assert!(VerdictFilter::parse("DOWN").is_err());
        assert!(contains_ignore_ascii_case("WWW.Example.com", "example"));
        assert!(!contains_ignore_ascii_case("ab", "abc"));
    }
}
