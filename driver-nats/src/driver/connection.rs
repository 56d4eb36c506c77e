//! The connection: NATS events and a direct look at the connection state (events can be
//! dropped) tell the core whether NATS is reachable; server errors are recognised as
//! permission denials; the TLS files are watched, and the client reconnects when they change.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_nats::Event as NatsEvent;
use gslb_state_core::config::Config;
use gslb_state_core::{Connectivity, Input};

use super::Driver;
use crate::handle::Event;

/// How often the connection state is checked directly (events can be dropped).
pub(super) const STATE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often the TLS files are checked for rotation.
pub(super) const TLS_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Modification times of the `nats.tls.*` files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct TlsStamp(Vec<Option<SystemTime>>);

impl TlsStamp {
    /// The files of `config` as they are now.
    pub(super) fn of(config: &Config) -> TlsStamp {
        let Some(tls) = &config.nats.tls else {
            return TlsStamp::default();
        };
        TlsStamp(
            [&tls.ca_file, &tls.cert_file, &tls.key_file]
                .into_iter()
                .map(|p| {
                    p.as_ref()
                        .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                })
                .collect(),
        )
    }
}

impl Driver {
    /// Tells the core (and the handle, and the metrics) that NATS is reachable or not. The
    /// first connection starts opening the buckets and config sync.
    fn set_connected(&mut self, connected: bool) {
        if self.node.is_connected() == connected {
            return;
        }
        let now = self.now();
        if connected {
            tracing::info!(node = self.node.node_id(), "connected to NATS");
            self.shared.connect_errors.clear();
            self.node
                .handle(now, Input::Connectivity(Connectivity::Connected));
            let _ = self.shared.events.send(Event::Connected);
            if !self.setup_started {
                self.setup_started = true;
                self.start_setup();
            }
        } else {
            tracing::warn!(
                node = self.node.node_id(),
                "disconnected from NATS; deciding with what is known"
            );
            self.node
                .handle(now, Input::Connectivity(Connectivity::Disconnected));
            let _ = self.shared.events.send(Event::Disconnected);
        }
        self.shared.connected.store(connected, Ordering::Relaxed);
        self.metrics.connected.set(i64::from(connected));
    }

    pub(super) fn on_nats_event(&mut self, event: NatsEvent) {
        match event {
            NatsEvent::Connected => self.set_connected(true),
            NatsEvent::Disconnected => self.set_connected(false),
            NatsEvent::ClientError(e) => {
                // Only the error kind; the full reason per server is logged as "NATS connect
                // error" by `connect::ConnectErrors`.
                tracing::debug!(node = self.node.node_id(), error = %e, "NATS client error");
            }
            NatsEvent::ServerError(e) => self.on_server_error(&e.to_string()),
            NatsEvent::SlowConsumer(_) => {
                // One event per dropped message (itself through a lossy channel): a lower bound.
                self.metrics
                    .dropped
                    .get_or_create(&crate::metrics::ReasonLabel {
                        reason: "slow-consumer",
                    })
                    .inc();
                tracing::warn!(
                    node = self.node.node_id(),
                    "NATS slow consumer: messages were dropped; members that published meanwhile are re-synced from the KV"
                );
                let now = self.now();
                self.node.handle(now, Input::MessagesLost { count: 1 });
            }
            other => tracing::debug!(event = %other, "NATS event"),
        }
    }

    /// A server error: a permission denial is counted by operation and logged once per
    /// subject now and then; anything else is logged.
    fn on_server_error(&mut self, text: &str) {
        let Some((operation, subject)) = crate::security::permission_violation(text) else {
            tracing::error!(node = self.node.node_id(), error = %text, "NATS server error");
            return;
        };
        self.metrics
            .permission_denied
            .get_or_create(&crate::metrics::OperationLabel { operation })
            .inc();
        if self.denials.should_log(&subject) {
            tracing::error!(
                node = self.node.node_id(),
                operation,
                subject = %subject,
                "NATS permission denied: the server refused to let this node {operation} on {subject:?}; check its permissions (SECURITY.md)"
            );
        }
    }

    /// The connection state as it is (events can be dropped), and the core's drop counters
    /// into the metrics.
    pub(super) fn check_state(&mut self) {
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        self.set_connected(connected);
        self.metrics.sync_stats(self.node.stats());
    }

    /// Reconnects (new TLS handshake with the files as they are now), without losing state.
    pub(super) fn reconnect(&self, why: &'static str) {
        tracing::info!(
            node = self.node.node_id(),
            why,
            "reconnecting to NATS to pick up new certificates"
        );
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.force_reconnect().await {
                tracing::warn!(error = %e, "forced reconnect failed; the client keeps retrying");
            }
        });
    }

    /// Reconnects when a TLS file changed since the last look.
    pub(super) fn check_tls_files(&mut self) {
        let stamp = TlsStamp::of(&self.config);
        if stamp != self.tls_stamp {
            self.tls_stamp = stamp;
            self.reconnect("TLS files changed");
        }
    }
}
