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
//! | `gslbd_state_stale_reads_total` | KV reads not trusted: they lacked a report the member said was durable (a lagging replica); read again |
//! | `gslbd_state_messages_lost_total` | messages lost before they were read (a slow consumer): each loss makes the node re-read the members bucket and re-sync who it missed |
//! | `gslbd_state_config_events_total{result}` | config versions `applied`, `rejected`, `ignored`, `failed` |
//! | `gslbd_state_config_version` | config version in force |
//! | `gslbd_state_permission_denied_total{operation}` | the server refused a `publish` or `subscribe` (see SECURITY.md) |
//! | `gslbd_state_decisions{source}` | endpoints whose decision in force has that source (`local`, `global`, `fallback-local`, `unknown`) |

use std::sync::atomic::{AtomicU64, Ordering};

use gslb_state_core::{DropReason, MessageKind, Source, Stats};
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

/// `source` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// A decision's source: `local`, `global`, `fallback-local` or `unknown`.
    pub source: &'static str,
}

/// The sources of `gslbd_state_decisions`, in the order of `Metrics::decisions_by_source`.
const SOURCES: [Source; 4] = [
    Source::Local,
    Source::Global,
    Source::FallbackLocal,
    Source::Unknown,
];

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
    /// `gslbd_state_stale_reads_total` (the core's [`Stats::stale_reads`]).
    pub stale_reads: Counter,
    /// `gslbd_state_messages_lost_total` (the core's [`Stats::messages_lost`]).
    pub messages_lost: Counter,
    /// `gslbd_state_config_events_total{result}`.
    pub config_events: Family<ResultLabel, Counter>,
    /// `gslbd_state_config_version`.
    pub config_version: Gauge,
    /// `gslbd_state_permission_denied_total{operation}`.
    pub permission_denied: Family<OperationLabel, Counter>,
    /// `gslbd_state_decisions{source}`: endpoints whose decision in force has that source, kept
    /// current by the driver as decisions change.
    pub decisions: Family<SourceLabel, Gauge>,
    /// The series of `decisions`, one per source of [`SOURCES`], created up front (every
    /// source is exported from the start, and a move touches no map).
    decisions_by_source: [Gauge; SOURCES.len()],
    /// Last core drop counts seen, to turn totals into increments.
    dropped_seen: [AtomicU64; DropReason::ALL.len()],
    /// Last core `stale_reads` and `messages_lost` seen.
    stale_reads_seen: AtomicU64,
    messages_lost_seen: AtomicU64,
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
        let stale_reads = Counter::default();
        let messages_lost = Counter::default();
        let config_events = Family::default();
        let config_version = Gauge::default();
        let permission_denied = Family::default();
        let decisions = Family::<SourceLabel, Gauge>::default();
        let decisions_by_source = SOURCES.map(|s| {
            decisions
                .get_or_create(&SourceLabel { source: s.as_str() })
                .clone()
        });
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
            "gslbd_state_stale_reads",
            "KV reads not trusted because they lacked a report the member said was durable (a lagging replica)",
            stale_reads.clone(),
        );
        registry.register(
            "gslbd_state_messages_lost",
            "Messages lost before they were read (a slow consumer)",
            messages_lost.clone(),
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
        registry.register(
            "gslbd_state_decisions",
            "Endpoints whose decision in force has this source (local, global, fallback-local, unknown)",
            decisions.clone(),
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
            stale_reads,
            messages_lost,
            config_events,
            config_version,
            permission_denied,
            decisions,
            decisions_by_source,
            dropped_seen: std::array::from_fn(|_| AtomicU64::new(0)),
            stale_reads_seen: AtomicU64::new(0),
            messages_lost_seen: AtomicU64::new(0),
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

    /// The `gslbd_state_decisions` series of `source`.
    fn decisions_of(&self, source: Source) -> &Gauge {
        let i = match source {
            Source::Local => 0,
            Source::Global => 1,
            Source::FallbackLocal => 2,
            Source::Unknown => 3,
        };
        &self.decisions_by_source[i]
    }

    /// One endpoint's decision in force now has source `to`, where it had `from` (`None`: the
    /// endpoint was not decided before). Unknown is not counted here: [`Metrics::sync_decisions`]
    /// sets it from the number of endpoints.
    pub(crate) fn decision_source_moved(&self, from: Option<Source>, to: Source) {
        if from == Some(to) {
            return;
        }
        if let Some(from) = from.filter(|s| *s != Source::Unknown) {
            self.decisions_of(from).dec();
        }
        if to != Source::Unknown {
            self.decisions_of(to).inc();
        }
    }

    /// Sets `gslbd_state_decisions{source="unknown"}`: the `endpoints` known that no other
    /// source accounts for.
    pub(crate) fn sync_decisions(&self, endpoints: usize) {
        let known: i64 = SOURCES[..3]
            .iter()
            .map(|s| self.decisions_of(*s).get())
            .sum();
        let endpoints = i64::try_from(endpoints).unwrap_or(i64::MAX);
        self.decisions_of(Source::Unknown)
            .set(endpoints.saturating_sub(known).max(0));
    }

    /// Brings the counters kept by the core (drops, stale reads, messages lost) up to its
    /// totals.
    pub(crate) fn sync_stats(&self, stats: &Stats) {
        if let Some(n) = increment(&self.stale_reads_seen, stats.stale_reads) {
            self.stale_reads.inc_by(n);
        }
        if let Some(n) = increment(&self.messages_lost_seen, stats.messages_lost) {
            self.messages_lost.inc_by(n);
        }
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            // A reason's series appears with its first drop.
            if let Some(n) = increment(&self.dropped_seen[i], stats.dropped(reason)) {
                self.dropped
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc_by(n);
            }
        }
    }
}

/// How far the core's `total` moved past the total last `seen` (which becomes `total`).
fn increment(seen: &AtomicU64, total: u64) -> Option<u64> {
    let before = seen.swap(total, Ordering::Relaxed);
    (total > before).then(|| total - before)
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

    #[test]
    fn the_cores_totals_become_counter_increments() {
        let m = Metrics::new();
        let mut stats = Stats::default();
        (stats.stale_reads, stats.messages_lost) = (2, 5);
        m.sync_stats(&stats);
        m.sync_stats(&stats);
        stats.messages_lost = 7;
        m.sync_stats(&stats);
        let text = m.encode();
        for line in [
            "gslbd_state_stale_reads_total 2",
            "gslbd_state_messages_lost_total 7",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn decisions_by_source_follow_moves_and_unknown_is_the_rest() {
        let m = Metrics::new();
        let series = |source: &str| format!("gslbd_state_decisions{{source=\"{source}\"}} ");
        let value = |m: &Metrics, source: &str| -> i64 {
            let text = m.encode();
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&series(source)).map(str::to_owned));
            line.unwrap_or_else(|| panic!("no {source} series in\n{text}"))
                .parse()
                .unwrap()
        };
        // Every source is exported from the start.
        for s in ["local", "global", "fallback-local", "unknown"] {
            assert_eq!(value(&m, s), 0);
        }
        // Three endpoints: one local, one fallback-local, one known but never decided.
        m.decision_source_moved(None, Source::Local);
        m.decision_source_moved(None, Source::FallbackLocal);
        m.sync_decisions(3);
        assert_eq!(
            ["local", "global", "fallback-local", "unknown"].map(|s| value(&m, s)),
            [1, 0, 1, 1]
        );
        // fallback-local -> global, local -> unknown, global -> global (counts only).
        m.decision_source_moved(Some(Source::FallbackLocal), Source::Global);
        m.decision_source_moved(Some(Source::Local), Source::Unknown);
        m.decision_source_moved(Some(Source::Global), Source::Global);
        m.sync_decisions(3);
        assert_eq!(
            ["local", "global", "fallback-local", "unknown"].map(|s| value(&m, s)),
            [0, 1, 0, 2]
        );
    }
}
