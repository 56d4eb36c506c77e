//! Prometheus metrics with the operator guide's names.
//!
//! | metric | meaning |
//! | --- | --- |
//! | `gslbd_state_nats_connected` | 1 when connected to NATS |
//! | `gslbd_state_active_members` | active members, this node included |
//! | `gslbd_state_nats_published_total{type}` | messages published (`heartbeat`, `health`) |
//! | `gslbd_state_nats_received_total{type}` | messages received (`heartbeat`, `health`) |
//! | `gslbd_state_kv_put_total{bucket,result}` | KV writes by bucket and `ok`/`error` |
//! | `gslbd_state_kv_get_total{bucket,result}` | KV entries read by bucket and `ok`/`error` |
//! | `gslbd_state_decision_changes_total` | decision changes |
//! | `gslbd_state_dropped_total{reason}` | inputs dropped, by reason |
//! | `gslbd_state_endpoints` | endpoints known |
//! | `gslbd_state_resyncs_total` | re-syncs of one member's reports from the KV |
//! | `gslbd_state_config_events_total{result}` | config versions `applied`, `rejected`, `ignored`, `failed` |
//! | `gslbd_state_config_version` | config version in force |
//! | `gslbd_state_permission_denied_total{operation}` | the server refused a `publish` or `subscribe` (see SECURITY.md) |

use std::sync::atomic::{AtomicU64, Ordering};

use gslb_state_core::{DropReason, MessageKind, Stats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `type` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Message type.
    pub r#type: &'static str,
}

/// `bucket` and `result` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BucketResult {
    /// Bucket name.
    pub bucket: String,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// What happened.
    pub result: &'static str,
}

/// `operation` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// `publish` or `subscribe`.
    pub operation: &'static str,
}

/// Every metric of one node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `gslbd_state_nats_connected`.
    pub connected: Gauge,
    /// `gslbd_state_active_members`.
    pub active_members: Gauge,
    /// `gslbd_state_nats_published_total{type}`.
    pub published: Family<TypeLabel, Counter>,
    /// `gslbd_state_nats_received_total{type}`.
    pub received: Family<TypeLabel, Counter>,
    /// `gslbd_state_kv_put_total{bucket,result}`.
    pub kv_put: Family<BucketResult, Counter>,
    /// `gslbd_state_kv_get_total{bucket,result}`.
    pub kv_get: Family<BucketResult, Counter>,
    /// `gslbd_state_decision_changes_total`.
    pub decision_changes: Counter,
    /// `gslbd_state_dropped_total{reason}`.
    pub dropped: Family<ReasonLabel, Counter>,
    /// `gslbd_state_endpoints`.
    pub endpoints: Gauge,
    /// `gslbd_state_resyncs_total`.
    pub resyncs: Counter,
    /// `gslbd_state_config_events_total{result}`.
    pub config_events: Family<ResultLabel, Counter>,
    /// `gslbd_state_config_version`.
    pub config_version: Gauge,
    /// `gslbd_state_permission_denied_total{operation}`.
    pub permission_denied: Family<OperationLabel, Counter>,
    /// Last core drop counts seen, to turn totals into increments.
    dropped_seen: [AtomicU64; DropReason::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connected = Gauge::default();
        let active_members = Gauge::default();
        let published = Family::default();
        let received = Family::default();
        let kv_put = Family::default();
        let kv_get = Family::default();
        let decision_changes = Counter::default();
        let dropped = Family::default();
        let endpoints = Gauge::default();
        let resyncs = Counter::default();
        let config_events = Family::default();
        let config_version = Gauge::default();
        let permission_denied = Family::default();
        registry.register(
            "gslbd_state_nats_connected",
            "1 when connected to NATS",
            connected.clone(),
        );
        registry.register(
            "gslbd_state_active_members",
            "Active members, this node included",
            active_members.clone(),
        );
        registry.register(
            "gslbd_state_nats_published",
            "Messages published to NATS, by type",
            published.clone(),
        );
        registry.register(
            "gslbd_state_nats_received",
            "Messages received from NATS, by type",
            received.clone(),
        );
        registry.register(
            "gslbd_state_kv_put",
            "KV writes, by bucket and result",
            kv_put.clone(),
        );
        registry.register(
            "gslbd_state_kv_get",
            "KV entries read, by bucket and result",
            kv_get.clone(),
        );
        registry.register(
            "gslbd_state_decision_changes",
            "Decision changes (verdict or source)",
            decision_changes.clone(),
        );
        registry.register(
            "gslbd_state_dropped",
            "Inputs dropped, by reason",
            dropped.clone(),
        );
        registry.register(
            "gslbd_state_endpoints",
            "Endpoints known",
            endpoints.clone(),
        );
        registry.register(
            "gslbd_state_resyncs",
            "Re-syncs of one member's reports from the KV",
            resyncs.clone(),
        );
        registry.register(
            "gslbd_state_config_events",
            "Config versions by result (applied, rejected, ignored, failed)",
            config_events.clone(),
        );
        registry.register(
            "gslbd_state_config_version",
            "Config version in force (KV revision)",
            config_version.clone(),
        );
        registry.register(
            "gslbd_state_permission_denied",
            "Operations the NATS server refused for lack of permission, by operation",
            permission_denied.clone(),
        );
        Metrics {
            registry,
            connected,
            active_members,
            published,
            received,
            kv_put,
            kv_get,
            decision_changes,
            dropped,
            endpoints,
            resyncs,
            config_events,
            config_version,
            permission_denied,
            dropped_seen: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The metrics as Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a message by type.
    pub(crate) fn count(family: &Family<TypeLabel, Counter>, kind: MessageKind) {
        family
            .get_or_create(&TypeLabel {
                r#type: kind.as_str(),
            })
            .inc();
    }

    /// Counts a KV operation.
    pub(crate) fn count_kv(family: &Family<BucketResult, Counter>, bucket: &str, ok: bool) {
        family
            .get_or_create(&BucketResult {
                bucket: bucket.to_owned(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Counts a config event.
    pub(crate) fn count_config(&self, result: &'static str) {
        self.config_events
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Brings the drop counters up to the core's totals.
    pub(crate) fn sync_drops(&self, stats: &Stats) {
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            let total = stats.dropped(reason);
            let seen = self.dropped_seen[i].swap(total, Ordering::Relaxed);
            if total > seen {
                self.dropped
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc_by(total - seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_guides() {
        let m = Metrics::new();
        m.connected.set(1);
        Metrics::count(&m.published, MessageKind::Heartbeat);
        Metrics::count(&m.received, MessageKind::Health);
        Metrics::count_kv(&m.kv_put, "gslb_c_health", true);
        Metrics::count_kv(&m.kv_get, "gslb_c_members", false);
        let text = m.encode();
        for line in [
            "gslbd_state_nats_connected 1",
            "gslbd_state_active_members 0",
            "gslbd_state_nats_published_total{type=\"heartbeat\"} 1",
            "gslbd_state_nats_received_total{type=\"health\"} 1",
            "gslbd_state_kv_put_total{bucket=\"gslb_c_health\",result=\"ok\"} 1",
            "gslbd_state_kv_get_total{bucket=\"gslb_c_members\",result=\"error\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
