//! The daemon's HTTP API (`admin.listen`).
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/decisions` | every endpoint: `healthy` (true/false/null), `source`, `healthy_reports`, `total_reports`, `local` |
//! | `GET /v1/decisions/{endpoint}` | one endpoint (404 if unknown) |
//! | `GET /v1/members` | every member: active or not, region, incarnation, last heard, reports, clock offset |
//! | `PUT /v1/health/{endpoint}` | `{"healthy": true\|false}`: this node's observation, for external checkers |
//! | `DELETE /v1/health/{endpoint}` | withdraw this node's observation |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | 200 while the driver runs, with the NATS connection state |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gslb_state_core::names::check_endpoint_name;
use gslb_state_core::{Decision, MemberInfo};
use serde::{Deserialize, Serialize};

use gslb_state_nats::Handle;

/// One decision as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionJson {
    /// `true` up, `false` down, `null` unknown.
    pub healthy: Option<bool>,
    /// `local`, `global`, `fallback-local` or `unknown`.
    pub source: String,
    /// Counted reports that say healthy (this node included).
    pub healthy_reports: u32,
    /// Counted reports (this node included).
    pub total_reports: u32,
    /// This node's own observation.
    pub local: Option<bool>,
}

impl From<&Decision> for DecisionJson {
    fn from(d: &Decision) -> Self {
        DecisionJson {
            healthy: d.healthy,
            source: d.source.as_str().to_owned(),
            healthy_reports: d.healthy_reports,
            total_reports: d.total_reports,
            local: d.local,
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
        Ok(all) => axum::Json(DecisionsJson {
            node: s.node.node_id().to_owned(),
            policy: s.node.policy().0.to_string(),
            decisions: all.iter().map(|(e, d)| (e.clone(), d.into())).collect(),
        })
        .into_response(),
        Err(_) => stopped(),
    }
}

async fn decision(State(s): State<AppState>, Path(endpoint): Path<String>) -> Response {
    match s.node.decision(&endpoint) {
        Some(d) => axum::Json(DecisionJson::from(&d)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("unknown endpoint {endpoint:?}"),
        ),
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

async fn healthz(State(s): State<AppState>) -> Response {
    axum::Json(serde_json::json!({
        "status": "ok",
        "node": s.node.node_id(),
        "nats_connected": s.node.is_connected(),
    }))
    .into_response()
}
