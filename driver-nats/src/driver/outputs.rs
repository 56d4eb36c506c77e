//! Carrying out the core's outputs: publishes on core NATS, KV writes and deletes through the
//! writer, the reads the core asks for, and decisions, membership and config changes to the
//! handle (shared map, events, config state) with their logs and metrics.

use std::time::Duration;

use gslb_state_core::Output;

use super::Driver;
use crate::handle::{ConfigState, Event};
use crate::kv::WriteOp;
use crate::metrics::Metrics;

/// A publish that cannot be queued within this is counted as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(200);
/// Capacity of the changed-decision buffer kept between passes.
const DECIDED_KEPT: usize = 4096;

impl Driver {
    /// Carries out every output of the core.
    pub(super) async fn carry_out(&mut self) {
        // Decision events are handed out together at the end, after one lock of the shared
        // map for every changed decision (no allocation for an endpoint already in it: a
        // snapshot changes millions).
        let mut decided = std::mem::take(&mut self.decided);
        let mut published = false;
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Publish {
                    subject,
                    payload,
                    kind,
                } => {
                    let ok = matches!(
                        tokio::time::timeout(
                            PUBLISH_TIMEOUT,
                            self.client.publish(subject, payload)
                        )
                        .await,
                        Ok(Ok(()))
                    );
                    if ok && kind == gslb_state_core::MessageKind::Health {
                        crate::hops::stamp(crate::hops::Hop::Published, self.node.node_id());
                    }
                    if ok {
                        published = true;
                        Metrics::count(&self.metrics.published, kind);
                    } else {
                        // Peers see the gap in the next heartbeat and re-sync from the KV.
                        tracing::warn!(kind = kind.as_str(), "publish failed or timed out");
                    }
                }
                Output::KvPut {
                    bucket,
                    key,
                    value,
                    seq,
                    ..
                } => {
                    let _ = self.writes.send((bucket, key, WriteOp::Put(value, seq)));
                }
                Output::KvDelete { bucket, key } => {
                    let _ = self.writes.send((bucket, key, WriteOp::Delete));
                }
                Output::Resync {
                    node,
                    region,
                    key_filter,
                } => {
                    self.metrics.resyncs.inc();
                    self.spawn_resync(node, region, key_filter);
                }
                Output::ReadMembers => self.spawn_read_members(),
                Output::ReadSnapshot => self.spawn_read_snapshot(),
                Output::ReadSnapshotReports {
                    region,
                    chunks,
                    key_filters,
                } => self.spawn_read_snapshot_reports(region, chunks, key_filters),
                Output::IncarnationRaised { from, to } => {
                    tracing::warn!(
                        node = self.node.node_id(),
                        from,
                        to,
                        "the KV holds a record of an earlier life of this node with a larger incarnation (the wall clock is behind the one it had then): taking a larger incarnation"
                    );
                }
                Output::Decision { endpoint, decision } => {
                    self.metrics.decision_changes.inc();
                    tracing::debug!(
                        endpoint = %endpoint,
                        healthy = ?decision.healthy,
                        source = %decision.source,
                        healthy_reports = decision.healthy_reports,
                        total_reports = decision.total_reports,
                        "decision changed"
                    );
                    decided.push((endpoint, decision));
                }
                Output::MemberUp {
                    node,
                    region,
                    incarnation,
                } => {
                    tracing::info!(member = %node, region = %region, incarnation, "member up");
                    let _ = self.shared.events.send(Event::MemberUp { node, region });
                }
                Output::MemberDown { node, reason } => {
                    tracing::info!(member = %node, reason = reason.as_str(), "member down");
                    let _ = self.shared.events.send(Event::MemberDown { node, reason });
                }
                Output::ApplyConfig { version, config } => {
                    let snapshot = self.snapshot_config_version == Some(version);
                    if snapshot {
                        tracing::info!(cluster = %self.config.cluster_id, version, "config snapshot loaded");
                    } else {
                        tracing::info!(
                            "config event: cluster={} version={}",
                            self.config.cluster_id,
                            version
                        );
                    }
                    self.shared.config_state.send_replace(ConfigState {
                        version,
                        config: Some(config.clone()),
                        applying: true,
                        snapshot,
                    });
                    let _ = self.shared.events.send(Event::ConfigApply {
                        version,
                        config,
                        snapshot,
                    });
                }
                Output::ConfigCommitted { version } => {
                    self.metrics.count_config("applied");
                    self.metrics
                        .config_version
                        .set(i64::try_from(version).unwrap_or(i64::MAX));
                    tracing::info!(cluster = %self.config.cluster_id, version, "config applied");
                    self.shared.config_state.send_modify(|s| s.applying = false);
                    let _ = self.shared.events.send(Event::ConfigCommitted { version });
                }
                Output::ConfigFailed {
                    version,
                    error,
                    restore,
                } => {
                    self.metrics.count_config("failed");
                    tracing::error!(cluster = %self.config.cluster_id, version, error = %error, "config apply failed; rolled back to the version in force before it");
                    self.shared.config_state.send_replace(ConfigState {
                        version: self.node.config_version(),
                        config: restore.clone(),
                        applying: false,
                        snapshot: false,
                    });
                    let _ = self.shared.events.send(Event::ConfigFailed {
                        version,
                        error,
                        restore,
                    });
                }
                Output::ConfigRejected { version, error } => {
                    self.metrics.count_config("rejected");
                    if self.snapshot_config_version == Some(version) {
                        tracing::error!(cluster = %self.config.cluster_id, version, error = %error, "config snapshot rejected; the node's own file stays in force");
                    } else {
                        tracing::error!(cluster = %self.config.cluster_id, version, error = %error, "config rejected; the last good config stays in force");
                    }
                    let _ = self
                        .shared
                        .events
                        .send(Event::ConfigRejected { version, error });
                }
                Output::ConfigIgnored { version, current } => {
                    self.metrics.count_config("ignored");
                    tracing::warn!(cluster = %self.config.cluster_id, version, current, "config version ignored: not newer than the one in force");
                }
            }
        }
        // What was published leaves now: the connection's task (on this thread) writes it to
        // the socket before the decisions below are handed out, not after.
        if published {
            tokio::task::yield_now().await;
        }
        // Every decision whose verdict or counts changed, into the shared map (an endpoint not in
        // it was never decided: unknown), and its source into `gslbd_state_decisions`.
        let endpoints = self.node.endpoint_count();
        if let Some((n, endpoint, decision)) = self.node.poll_updated_indexed()
            && let Ok(mut table) = self.shared.decisions.write()
        {
            table.reserve(endpoints);
            let mut next = Some((n, endpoint, decision));
            while let Some((n, endpoint, decision)) = next {
                let old = table.set(n, endpoint, decision);
                self.metrics
                    .decision_source_moved(old.map(|d| d.source), decision.source);
                next = self.node.poll_updated_indexed();
            }
        }
        if !decided.is_empty() {
            crate::hops::stamp(crate::hops::Hop::Decided, self.node.node_id());
        }
        for (endpoint, decision) in decided.drain(..) {
            if let Some(listener) = &self.shared.on_decision {
                listener.call(&endpoint, &decision);
            }
            let _ = self
                .shared
                .events
                .send(Event::Decision { endpoint, decision });
        }
        // Room for the next burst, but not a snapshot's worth kept for ever.
        decided.shrink_to(DECIDED_KEPT);
        self.decided = decided;
        // The policy in force (config sync may change it, a rollback restore it).
        let policy = self.node.policy();
        if policy != self.policy {
            self.policy = policy;
            if let Ok(mut p) = self.shared.policy.write() {
                *p = policy;
            }
        }
        self.metrics
            .active_members
            .set(self.node.active_members() as i64);
        self.metrics
            .endpoints
            .set(self.node.endpoint_count() as i64);
        self.metrics.sync_decisions(self.node.endpoint_count());
        self.announce_snapshot_loaded();
    }
}
