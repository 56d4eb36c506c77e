//! The driver task: binds one core [`Node`] to NATS. It owns time and I/O and nothing else;
//! every decision is made in the core.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, Event as NatsEvent};
use futures::{FutureExt, StreamExt};
use gslb_state_core::config::Config;
use gslb_state_core::names::encode_token;
use gslb_state_core::{Bucket, Connectivity, Input, KvRead, MessageKind, Node, NodeConfig, Output};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config_sync::{self, ConfigUpdate};
use crate::handle::{Command, ConfigState, Event, Shared};
use crate::kv::{self, ReadEntry, Stores, WriteDone, WriteOp};
use crate::metrics::Metrics;

/// Most messages handled between two passes over the outputs.
const MAX_MESSAGES_PER_TURN: usize = 1024;
/// How often the connection state is checked directly (events can be dropped).
const STATE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// A publish that cannot be queued within this is counted as failed.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a shutdown may spend flushing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Messages in flight from background tasks to the driver loop (KV entries come in batches of
/// up to [`kv::READ_BATCH`]).
const READ_CHANNEL: usize = 64;
/// Most KV entries handled between two passes over the outputs.
const MAX_ENTRIES_PER_TURN: usize = 16 * kv::READ_BATCH;

/// What background tasks report to the driver loop.
pub(crate) enum Internal {
    /// Buckets are open; the snapshot is next.
    StoresReady,
    /// Entries read from a bucket.
    Entries {
        bucket: Bucket,
        entries: Vec<ReadEntry>,
    },
    /// A read finished.
    ReadDone { read: KvRead, complete: bool },
    /// A config version from config sync.
    Config(ConfigUpdate),
}

struct Driver {
    node: Node,
    clock: Clock,
    client: Client,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    cluster_id: String,
    config: Config,
    writes: mpsc::UnboundedSender<(Bucket, String, WriteOp)>,
    stores: watch::Receiver<Option<Stores>>,
    internal_tx: mpsc::Sender<Internal>,
    /// The buckets are being opened (from the first connection on).
    setup_started: bool,
    /// `health snapshot loaded` was logged.
    snapshot_logged: bool,
    /// Config version loaded at start-up (events after it are logged as config events).
    snapshot_config_version: Option<u64>,
    /// Modification times of the TLS files, to notice certificate rotation.
    tls_stamp: Vec<Option<std::time::SystemTime>>,
    /// Permission denials already logged (each is counted regardless).
    denials: crate::security::DenialLog,
}

/// How long a snapshot read waits for the buckets to be opened before it reports itself
/// incomplete (the core asks again at its next maintenance tick).
const STORES_WAIT: Duration = Duration::from_secs(10);

/// How often the TLS files are checked for rotation.
const TLS_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Modification times of `nats.tls.*` files.
fn tls_stamp(config: &Config) -> Vec<Option<std::time::SystemTime>> {
    let Some(tls) = &config.nats.tls else {
        return Vec::new();
    };
    [&tls.ca_file, &tls.cert_file, &tls.key_file]
        .into_iter()
        .map(|p| {
            p.as_ref()
                .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        })
        .collect()
}

/// Runs the driver until a shutdown command (or the handle is dropped).
pub(crate) async fn run(
    config: Config,
    node_config: NodeConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let clock = Clock::start();
    let node = match Node::new(node_config, clock.now()) {
        Ok(node) => node,
        Err(e) => {
            let _ = ready.send(Err(format!("invalid configuration: {e}")));
            return;
        }
    };
    let (nats_events_tx, mut nats_events) = mpsc::unbounded_channel();
    let client_name = format!("gslb-state {}", node.node_id());
    let options = match crate::connect::options(
        &config.nats,
        &client_name,
        nats_events_tx,
        shared.connect_errors.clone(),
    )
    .await
    {
        Ok(o) => o,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let client = match options.connect(config.nats.servers.clone()).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("nats.servers: {e}")));
            return;
        }
    };
    let mut subscription = match client.subscribe(node.names().subscription()).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot subscribe: {e}")));
            return;
        }
    };
    let (writes, write_rx) = mpsc::unbounded_channel();
    let (stores_tx, stores_rx) = watch::channel(None);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<WriteDone>();
    let metrics = shared.metrics.clone();
    let writer = tokio::spawn(kv::run_writer(
        write_rx,
        stores_rx.clone(),
        done_tx,
        metrics.clone(),
    ));
    let (internal_tx, mut internal_rx) = mpsc::channel(READ_CHANNEL);
    tracing::info!(
        node = node.node_id(),
        cluster = config.cluster_id.as_str(),
        servers = ?config.nats.servers,
        policy = %config.state.policy,
        "gslb-state driver started; deciding locally until NATS is reached"
    );
    let mut d = Driver {
        cluster_id: config.cluster_id.clone(),
        node,
        clock,
        client,
        shared,
        metrics,
        writes,
        stores: stores_rx,
        internal_tx,
        setup_started: false,
        snapshot_logged: false,
        snapshot_config_version: None,
        tls_stamp: Vec::new(),
        denials: Default::default(),
        config,
    };
    d.tls_stamp = tls_stamp(&d.config);
    let _ = ready.send(Ok(()));
    let _ = stores_tx; // kept alive below through `setup`
    let stores_tx = Arc::new(stores_tx);

    let mut tls_check = tokio::time::interval(TLS_CHECK_INTERVAL);
    tls_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state_check = tokio::time::interval(STATE_CHECK_INTERVAL);
    state_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown_done = loop {
        d.carry_out().await;
        let wake = d.clock.to_tokio(d.node.poll_timeout());
        tokio::select! {
            command = commands.recv() => match command {
                None => break None,
                Some(Command::Shutdown { done, leave }) => break Some((done, leave)),
                Some(command) => d.on_command(command),
            },
            Some(message) = subscription.next() => {
                d.on_message(message);
                for _ in 0..MAX_MESSAGES_PER_TURN {
                    match subscription.next().now_or_never() {
                        Some(Some(message)) => d.on_message(message),
                        _ => break,
                    }
                }
            }
            Some(event) = nats_events.recv() => d.on_nats_event(event, &stores_tx),
            Some(internal) = internal_rx.recv() => {
                let mut entries = d.on_internal(internal);
                for _ in 0..MAX_MESSAGES_PER_TURN {
                    if entries >= MAX_ENTRIES_PER_TURN {
                        break;
                    }
                    match internal_rx.try_recv() {
                        Ok(internal) => entries += d.on_internal(internal),
                        Err(_) => break,
                    }
                }
            }
            Some(done) = done_rx.recv() => {
                let now = d.clock.now();
                d.on_write_done(now, done);
                for _ in 0..MAX_MESSAGES_PER_TURN {
                    match done_rx.try_recv() {
                        Ok(done) => d.on_write_done(now, done),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(wake) => {
                let now = d.clock.now();
                d.node.handle_timeout(now);
            }
            _ = state_check.tick() => d.check_state(&stores_tx),
            _ = tls_check.tick() => d.check_tls_files(),
        }
    };
    // Leave: announce it (peers drop us at once) and delete our report keys, then drain: hand
    // out what is pending, let the writer finish, flush the connection.
    // (The handle dropped without a word leaves too.)
    if shutdown_done.as_ref().is_none_or(|(_, leave)| *leave) {
        let now = d.now();
        d.node.handle(now, Input::Leave);
    }
    d.carry_out().await;
    drop(d.writes);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, d.client.flush()).await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, d.client.drain()).await;
    tracing::info!(node = d.node.node_id(), "gslb-state driver stopped");
    if let Some((done, _)) = shutdown_done {
        let _ = done.send(());
    }
}

async fn sleep_until(at: tokio::time::Instant) {
    tokio::time::sleep_until(at).await
}

impl Driver {
    fn now(&self) -> gslb_state_core::Now {
        self.clock.now()
    }

    /// A KV write ended: acknowledged (the report is durable) or failed (retried later).
    fn on_write_done(&mut self, now: gslb_state_core::Now, done: WriteDone) {
        let input = if done.ok {
            Input::KvPutOk {
                bucket: done.bucket,
                key: done.key,
                seq: done.seq,
            }
        } else {
            Input::KvPutFailed {
                bucket: done.bucket,
                key: done.key,
            }
        };
        self.node.handle(now, input);
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::SetHealth { endpoint, healthy } => {
                let now = self.now();
                self.node
                    .handle(now, Input::LocalHealth { endpoint, healthy });
            }
            Command::Decisions(reply) => {
                let all = self
                    .node
                    .decisions()
                    .map(|(e, d)| (e.to_owned(), d))
                    .collect();
                let _ = reply.send(all);
            }
            Command::Members(reply) => {
                let _ = reply.send(self.node.members());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.node.stats().clone());
            }
            Command::ConfigApplied { version, result } => {
                let now = self.now();
                self.node
                    .handle(now, Input::ConfigApplied { version, result });
            }
            Command::Reconnect => self.reconnect("requested"),
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    /// Reconnects (new TLS handshake with the files as they are now), without losing state.
    fn reconnect(&self, why: &'static str) {
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
    fn check_tls_files(&mut self) {
        let stamp = tls_stamp(&self.config);
        if stamp != self.tls_stamp {
            self.tls_stamp = stamp;
            self.reconnect("TLS files changed");
        }
    }

    fn on_message(&mut self, message: async_nats::Message) {
        let subject: &str = &message.subject;
        match self.node.names().parse_subject_ref(subject) {
            Ok((gslb_state_core::names::SubjectKind::Heartbeat, _)) => {
                Metrics::count(&self.metrics.received, MessageKind::Heartbeat)
            }
            Ok((gslb_state_core::names::SubjectKind::Health, _)) => {
                Metrics::count(&self.metrics.received, MessageKind::Health)
            }
            // Not a subject of ours: the core drops and counts it.
            Err(_) => {}
        }
        let now = self.now();
        self.node.handle_received(now, subject, &message.payload);
    }

    fn set_connected(&mut self, connected: bool, stores_tx: &Arc<watch::Sender<Option<Stores>>>) {
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
                self.start_setup(stores_tx.clone());
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

    fn on_nats_event(&mut self, event: NatsEvent, stores_tx: &Arc<watch::Sender<Option<Stores>>>) {
        match event {
            NatsEvent::Connected => self.set_connected(true, stores_tx),
            NatsEvent::Disconnected => self.set_connected(false, stores_tx),
            NatsEvent::ClientError(e) => {
                // Only the error kind; the full reason per server is logged as "NATS connect
                // error" by `connect::ConnectErrors`.
                tracing::debug!(node = self.node.node_id(), error = %e, "NATS client error");
            }
            NatsEvent::ServerError(e) => {
                let text = e.to_string();
                match crate::security::permission_violation(&text) {
                    Some((operation, subject)) => {
                        self.metrics
                            .permission_denied
                            .get_or_create(&crate::metrics::OperationLabel { operation })
                            .inc();
                        if !self.denials.should_log(&subject) {
                            return;
                        }
                        tracing::error!(
                            node = self.node.node_id(),
                            operation,
                            subject = %subject,
                            "NATS permission denied: the server refused to let this node {operation} on {subject:?}; check its permissions (SECURITY.md)"
                        );
                    }
                    None => {
                        tracing::error!(node = self.node.node_id(), error = %text, "NATS server error")
                    }
                }
            }
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

    fn check_state(&mut self, stores_tx: &Arc<watch::Sender<Option<Stores>>>) {
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        self.set_connected(connected, stores_tx);
        self.metrics.sync_drops(self.node.stats());
    }

    /// Opens (or creates) the buckets; retried until it succeeds. Reads wait for them.
    fn start_setup(&mut self, stores_tx: Arc<watch::Sender<Option<Stores>>>) {
        let js = jetstream_context(&self.client, &self.config);
        let names = self.node.names().clone();
        let internal = self.internal_tx.clone();
        let node_id = self.node.node_id().to_owned();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            let stores = loop {
                let members = kv::ensure_bucket(&js, names.bucket(Bucket::Members)).await;
                let health = kv::ensure_bucket(&js, names.bucket(Bucket::Health)).await;
                match (members, health) {
                    (Ok(members), Ok(health)) => break Stores { members, health },
                    (m, h) => {
                        for (bucket, e) in [(Bucket::Members, m.err()), (Bucket::Health, h.err())] {
                            if let Some(e) = e {
                                tracing::error!(node = %node_id, bucket = names.bucket(bucket), error = %e, retry_in = ?delay, "KV bucket creation error");
                            }
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            };
            let _ = stores_tx.send(Some(stores));
            let _ = internal.send(Internal::StoresReady).await;
        });
        if self.config.state.enable_config_sync
            && let Some(settings) = self.config.config_sync.clone()
        {
            let js = jetstream_context(&self.client, &self.config);
            tokio::spawn(config_sync::run(
                self.client.clone(),
                js,
                settings,
                encode_token(&self.cluster_id),
                self.internal_tx.clone(),
                self.metrics.clone(),
            ));
        }
    }

    /// Hands `internal` to the core; returns how many KV entries it held.
    fn on_internal(&mut self, internal: Internal) -> usize {
        let now = self.now();
        match internal {
            Internal::StoresReady => {}
            Internal::Entries { bucket, entries } => {
                let n = entries.len();
                for entry in entries {
                    self.node.handle(
                        now,
                        Input::KvEntry {
                            bucket,
                            key: entry.key,
                            value: entry.value,
                        },
                    );
                }
                return n;
            }
            Internal::ReadDone { read, complete } => {
                self.node.handle(now, Input::KvReadDone { read, complete });
                if self.node.snapshot_loaded() && !self.snapshot_logged {
                    self.snapshot_logged = true;
                    tracing::info!(
                        node = self.node.node_id(),
                        members = self.node.active_members(),
                        endpoints = self.node.endpoint_count(),
                        "health snapshot loaded"
                    );
                    let _ = self.shared.events.send(Event::SnapshotLoaded {
                        active_members: self.node.active_members(),
                        endpoints: self.node.endpoint_count(),
                    });
                }
            }
            Internal::Config(update) => {
                if update.snapshot {
                    self.snapshot_config_version = Some(update.version);
                }
                self.node.handle(
                    now,
                    Input::ConfigEntry {
                        version: update.version,
                        yaml: update.yaml,
                    },
                );
            }
        }
        0
    }

    /// Carries out every output of the core.
    async fn carry_out(&mut self) {
        // Decision events are handed out together at the end, after one lock of the shared
        // map for every changed decision (no allocation for an endpoint already in it: a
        // snapshot changes millions).
        let mut decided: Vec<(String, gslb_state_core::Decision)> = Vec::new();
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
                    if ok {
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
                Output::Resync { node, key_filter } => {
                    self.metrics.resyncs.inc();
                    self.spawn_resync(node, key_filter);
                }
                Output::ReadMembers => self.spawn_read_members(),
                Output::ReadSnapshot => self.spawn_read_snapshot(),
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
                        tracing::info!(cluster = %self.cluster_id, version, "config snapshot loaded");
                    } else {
                        tracing::info!(
                            "config event: cluster={} version={}",
                            self.cluster_id,
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
                    tracing::info!(cluster = %self.cluster_id, version, "config applied");
                    self.shared.config_state.send_modify(|s| s.applying = false);
                    let _ = self.shared.events.send(Event::ConfigCommitted { version });
                }
                Output::ConfigFailed {
                    version,
                    error,
                    restore,
                } => {
                    self.metrics.count_config("failed");
                    tracing::error!(cluster = %self.cluster_id, version, error = %error, "config apply failed; rolled back to the version in force before it");
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
                        tracing::error!(cluster = %self.cluster_id, version, error = %error, "config snapshot rejected; the node's own file stays in force");
                    } else {
                        tracing::error!(cluster = %self.cluster_id, version, error = %error, "config rejected; the last good config stays in force");
                    }
                    let _ = self
                        .shared
                        .events
                        .send(Event::ConfigRejected { version, error });
                }
                Output::ConfigIgnored { version, current } => {
                    self.metrics.count_config("ignored");
                    tracing::warn!(cluster = %self.cluster_id, version, current, "config version ignored: not newer than the one in force");
                }
            }
        }
        // Every decision whose verdict or counts changed, into the shared map.
        if let Some((endpoint, decision)) = self.node.poll_updated()
            && let Ok(mut map) = self.shared.decisions.write()
        {
            let mut next = Some((endpoint, decision));
            while let Some((endpoint, decision)) = next {
                match map.get_mut(endpoint) {
                    Some(d) => *d = decision,
                    None => {
                        map.insert(endpoint.to_owned(), decision);
                    }
                }
                next = self.node.poll_updated();
            }
        }
        if !decided.is_empty() {
            for (endpoint, decision) in decided {
                let _ = self
                    .shared
                    .events
                    .send(Event::Decision { endpoint, decision });
            }
        }
        self.metrics
            .active_members
            .set(self.node.active_members() as i64);
        self.metrics
            .endpoints
            .set(self.node.endpoint_count() as i64);
    }

    fn spawn_resync(&self, node: String, key_filter: String) {
        let Some(stores) = self.stores.borrow().clone() else {
            // Not open yet: the snapshot will bring everything; say we are done so the core
            // asks again later if still needed.
            let internal = self.internal_tx.clone();
            tokio::spawn(async move {
                let _ = internal
                    .send(Internal::ReadDone {
                        read: KvRead::Reports { node },
                        complete: false,
                    })
                    .await;
            });
            return;
        };
        let client = self.client.clone();
        let internal = self.internal_tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let complete = read_into(
                &client,
                &stores.health,
                Bucket::Health,
                &key_filter,
                &internal,
                &metrics,
            )
            .await;
            let _ = internal
                .send(Internal::ReadDone {
                    read: KvRead::Reports { node },
                    complete,
                })
                .await;
        });
    }

    /// Reads the start-up snapshot once the buckets are open (waiting a while for them);
    /// reports an incomplete read otherwise, and the core asks again.
    fn spawn_read_snapshot(&self) {
        let mut stores = self.stores.clone();
        let client = self.client.clone();
        let internal = self.internal_tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let ready = tokio::time::timeout(STORES_WAIT, async {
                stores
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|r| r.clone())
            })
            .await
            .ok()
            .flatten();
            match ready {
                Some(stores) => {
                    read_buckets(&client, &stores, &internal, &metrics, KvRead::Snapshot).await
                }
                None => {
                    let _ = internal
                        .send(Internal::ReadDone {
                            read: KvRead::Snapshot,
                            complete: false,
                        })
                        .await;
                }
            }
        });
    }

    fn spawn_read_members(&self) {
        let Some(stores) = self.stores.borrow().clone() else {
            return;
        };
        let client = self.client.clone();
        let internal = self.internal_tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let complete = read_into(
                &client,
                &stores.members,
                Bucket::Members,
                ">",
                &internal,
                &metrics,
            )
            .await;
            let _ = internal
                .send(Internal::ReadDone {
                    read: KvRead::Members,
                    complete,
                })
                .await;
        });
    }
}

/// The JetStream context of `config` (with its domain, if any).
///
/// KV writes wait for their ack as long as requests do (async-nats's own default is 5 s): a
/// write lost with a hung server fails, is retried and its report republished that much sooner.
pub(crate) fn jetstream_context(client: &Client, config: &Config) -> jetstream::Context {
    let mut js = match &config.nats.jetstream_domain {
        Some(domain) => jetstream::with_domain(client.clone(), domain),
        None => jetstream::new(client.clone()),
    };
    js.set_timeout(crate::connect::request_timeout(&config.nats));
    js
}

/// Reads both buckets whole (members first) and reports the end as `read`.
async fn read_buckets(
    client: &Client,
    stores: &Stores,
    internal: &mpsc::Sender<Internal>,
    metrics: &Metrics,
    read: KvRead,
) {
    let members = read_into(
        client,
        &stores.members,
        Bucket::Members,
        ">",
        internal,
        metrics,
    )
    .await;
    let health = read_into(
        client,
        &stores.health,
        Bucket::Health,
        ">",
        internal,
        metrics,
    )
    .await;
    let _ = internal
        .send(Internal::ReadDone {
            read,
            complete: members && health,
        })
        .await;
}

/// Reads every entry of `store` matching `key_filter` into the driver loop; true when the read
/// completed.
async fn read_into(
    client: &Client,
    store: &async_nats::jetstream::kv::Store,
    bucket: Bucket,
    key_filter: &str,
    internal: &mpsc::Sender<Internal>,
    metrics: &Metrics,
) -> bool {
    let (tx, mut rx) = mpsc::channel::<Vec<ReadEntry>>(2);
    let forward = async {
        let mut n = 0u64;
        while let Some(entries) = rx.recv().await {
            n += entries.len() as u64;
            if internal
                .send(Internal::Entries { bucket, entries })
                .await
                .is_err()
            {
                break;
            }
        }
        n
    };
    let read = async {
        let result = kv::read_prefix(client, store, key_filter, &tx).await;
        drop(tx);
        result
    };
    let (result, forwarded) = tokio::join!(read, forward);
    if forwarded > 0 {
        metrics
            .kv_get
            .get_or_create(&crate::metrics::BucketResult {
                bucket: store.name.clone(),
                result: "ok",
            })
            .inc_by(forwarded);
    }
    match result {
        Ok(_) => true,
        Err(e) => {
            Metrics::count_kv(&metrics.kv_get, &store.name, false);
            tracing::warn!(bucket = %store.name, filter = key_filter, error = %e, "KV read failed; will be retried");
            false
        }
    }
}
