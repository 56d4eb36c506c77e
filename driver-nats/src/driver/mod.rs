//! The driver task: binds one core [`Node`] to NATS. It owns time and I/O and nothing else;
//! every decision is made in the core.
//!
//! The loop ([`run`]) waits for whichever comes first — a command from the [`Handle`], a
//! message on the cluster's subjects, a NATS connection event, the end of a KV read or write,
//! a config version, the core's next timer — hands it to the core, then carries out every
//! output (`outputs`). `reads` opens the buckets and carries out the reads the core asks
//! for; `connection` follows the connection and the TLS files.
//!
//! [`Handle`]: crate::Handle

mod connection;
mod outputs;
mod reads;

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use futures::{FutureExt, StreamExt};
use gslb_state_core::config::Config;
use gslb_state_core::{Bucket, Input, KvRead, MessageKind, Node, NodeConfig, Now};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config_sync::ConfigUpdate;
use crate::error::StartError;
use crate::handle::{Command, Ready, Shared};
use crate::kv::{self, ReadEntry, Stores, WriteDone, WriteOp};
use crate::metrics::Metrics;

/// Most messages handled between two passes over the outputs.
const MAX_MESSAGES_PER_TURN: usize = 1024;
/// How long a shutdown may spend flushing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Messages in flight from background tasks to the driver loop (KV entries come in batches of
/// up to [`kv::READ_BATCH`]).
const READ_CHANNEL: usize = 64;
/// Config versions in flight from config sync to the driver loop.
const CONFIG_CHANNEL: usize = 16;
/// Most KV entries handled between two passes over the outputs.
const MAX_ENTRIES_PER_TURN: usize = 16 * kv::READ_BATCH;

/// What the background reads report to the driver loop.
pub(crate) enum ReadEvent {
    /// Entries read from a bucket.
    Entries {
        bucket: Bucket,
        entries: Vec<ReadEntry>,
    },
    /// A read finished.
    Done { read: KvRead, complete: bool },
}

/// The driver's state: the core, the clocks, the connection and the channels to its tasks.
struct Driver {
    node: Node,
    clock: Clock,
    client: Client,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    config: Config,
    writes: mpsc::UnboundedSender<(Bucket, String, WriteOp)>,
    stores: watch::Receiver<Option<Stores>>,
    stores_tx: Arc<watch::Sender<Option<Stores>>>,
    /// Other regions' buckets, opened when first read.
    foreign: kv::ForeignStores,
    reads_tx: mpsc::Sender<ReadEvent>,
    config_tx: mpsc::Sender<ConfigUpdate>,
    /// The buckets are being opened (from the first connection on).
    setup_started: bool,
    /// `health snapshot loaded` was logged.
    snapshot_logged: bool,
    /// Changed decisions of one [`Driver::carry_out`], handed out at its end (kept between
    /// calls so that a burst, a snapshot's 100,000 endpoints, does not grow a new one).
    decided: Vec<(String, gslb_state_core::Decision)>,
    /// Config version loaded at start-up (later ones are logged as config events).
    snapshot_config_version: Option<u64>,
    /// The policy last published to the handle.
    policy: (gslb_state_core::Policy, u8),
    /// Modification times of the TLS files, to notice certificate rotation.
    tls_stamp: connection::TlsStamp,
    /// Permission denials already logged (each is counted regardless).
    denials: crate::security::DenialLog,
}

/// A driver not yet running: what [`run`] takes.
pub(crate) struct Start {
    pub(crate) config: Config,
    pub(crate) node_config: NodeConfig,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) shared: Arc<Shared>,
}

/// Runs the driver until a shutdown command (or the handle is dropped). Reports on `ready`
/// whether it started.
pub(crate) async fn run(start: Start, ready: Ready) {
    let Start {
        config,
        node_config,
        mut commands,
        shared,
    } = start;
    let clock = shared.clock;
    let node = match Node::new(node_config, clock.now()) {
        Ok(node) => node,
        Err(e) => {
            ready.send(Err(StartError::Config(e)));
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
            ready.send(Err(StartError::Credentials(e)));
            return;
        }
    };
    let client = match options.connect(config.nats.servers.clone()).await {
        Ok(c) => c,
        Err(e) => {
            ready.send(Err(StartError::Connect(e)));
            return;
        }
    };
    let mut subscription = match client.subscribe(node.names().subscription()).await {
        Ok(s) => s,
        Err(e) => {
            ready.send(Err(StartError::Subscribe(e)));
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
    let (reads_tx, mut reads_rx) = mpsc::channel(READ_CHANNEL);
    let (config_tx, mut config_rx) = mpsc::channel(CONFIG_CHANNEL);
    tracing::info!(
        node = node.node_id(),
        cluster = config.cluster_id.as_str(),
        servers = ?config.nats.servers,
        policy = %config.state.policy,
        "gslb-state driver started; deciding locally until NATS is reached"
    );
    let mut d = Driver {
        policy: node.policy(),
        node,
        clock,
        client,
        shared,
        metrics,
        writes,
        stores: stores_rx,
        stores_tx: Arc::new(stores_tx),
        foreign: kv::ForeignStores::default(),
        reads_tx,
        config_tx,
        setup_started: false,
        snapshot_logged: false,
        decided: Vec::new(),
        snapshot_config_version: None,
        tls_stamp: connection::TlsStamp::of(&config),
        denials: Default::default(),
        config,
    };
    ready.send(Ok(()));

    let mut tls_check = tokio::time::interval(connection::TLS_CHECK_INTERVAL);
    tls_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state_check = tokio::time::interval(connection::STATE_CHECK_INTERVAL);
    state_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = loop {
        d.carry_out().await;
        let wake = d.clock.to_tokio(d.node.poll_timeout());
        tokio::select! {
            command = commands.recv() => match command {
                None => break None,
                Some(Command::Shutdown { done, leave }) => break Some((done, leave)),
                Some(command) => {
                    // Every command already queued goes in before the outputs are carried
                    // out: a burst of set_health calls leaves as a few report batches instead
                    // of one message per change (and one turn of every receiver's loop each).
                    d.on_command(command);
                    let mut shutdown = None;
                    for _ in 0..MAX_MESSAGES_PER_TURN {
                        match commands.try_recv() {
                            Ok(Command::Shutdown { done, leave }) => {
                                shutdown = Some((done, leave));
                                break;
                            }
                            Ok(command) => d.on_command(command),
                            Err(_) => break,
                        }
                    }
                    if shutdown.is_some() {
                        break shutdown;
                    }
                }
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
            Some(event) = nats_events.recv() => d.on_nats_event(event),
            Some(read) = reads_rx.recv() => {
                let mut entries = d.on_read(read);
                for _ in 0..MAX_MESSAGES_PER_TURN {
                    if entries >= MAX_ENTRIES_PER_TURN {
                        break;
                    }
                    match reads_rx.try_recv() {
                        Ok(read) => entries += d.on_read(read),
                        Err(_) => break,
                    }
                }
            }
            Some(update) = config_rx.recv() => d.on_config_update(update),
            Some(done) = done_rx.recv() => {
                let now = d.now();
                d.on_write_done(now, done);
                for _ in 0..MAX_MESSAGES_PER_TURN {
                    match done_rx.try_recv() {
                        Ok(done) => d.on_write_done(now, done),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = d.now();
                d.node.handle_timeout(now);
            }
            _ = state_check.tick() => d.check_state(),
            _ = tls_check.tick() => d.check_tls_files(),
        }
    };
    // Leave (unless asked not to): announce it, peers drop us at once, and delete our report
    // keys; then drain: hand out what is pending, let the writer finish, flush the connection.
    // A handle dropped without a word leaves too.
    if shutdown.as_ref().is_none_or(|(_, leave)| *leave) {
        let now = d.now();
        d.node.handle(now, Input::Leave);
    }
    d.carry_out().await;
    drop(d.writes);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, d.client.flush()).await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, d.client.drain()).await;
    tracing::info!(node = d.node.node_id(), "gslb-state driver stopped");
    if let Some((done, _)) = shutdown {
        let _ = done.send(());
    }
}

impl Driver {
    fn now(&self) -> Now {
        self.clock.now()
    }

    fn on_command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::SetHealth { endpoint, healthy } => {
                crate::hops::stamp(crate::hops::Hop::Command, self.node.node_id());
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
            Command::Explain { endpoint, reply } => {
                // Up to now first (due holds and timers run, as they would have at their
                // instant): the explanation's `now`, ages and pending deadline are current.
                self.node.handle_timeout(now);
                let _ = reply.send(self.node.explain(&endpoint));
            }
            Command::Members(reply) => {
                let _ = reply.send(self.node.members());
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.node.stats().clone());
            }
            Command::ConfigApplied { version, result } => {
                self.node
                    .handle(now, Input::ConfigApplied { version, result });
            }
            Command::Reconnect => self.reconnect("requested"),
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn on_message(&mut self, message: async_nats::Message) {
        let subject: &str = &message.subject;
        match self.node.names().parse_subject_ref(subject) {
            Ok((gslb_state_core::names::SubjectKind::Heartbeat, _)) => {
                Metrics::count(&self.metrics.received, MessageKind::Heartbeat)
            }
            Ok((gslb_state_core::names::SubjectKind::Health, _)) => {
                crate::hops::stamp(crate::hops::Hop::Received, self.node.node_id());
                Metrics::count(&self.metrics.received, MessageKind::Health)
            }
            // Not a subject of ours: the core drops and counts it.
            Err(_) => {}
        }
        let now = self.now();
        self.node.handle_received(now, subject, &message.payload);
    }

    /// A KV write ended: acknowledged (the report is durable) or failed (retried later).
    fn on_write_done(&mut self, now: Now, done: WriteDone) {
        let input = if done.ok {
            Input::KvPutOk {
                bucket: done.bucket,
                key: done.key,
                seq: done.seq,
                revision: done.revision,
            }
        } else {
            Input::KvPutFailed {
                bucket: done.bucket,
                key: done.key,
                seq: done.seq,
            }
        };
        self.node.handle(now, input);
    }

    /// Hands what a read reported to the core; returns how many KV entries it held.
    fn on_read(&mut self, read: ReadEvent) -> usize {
        let now = self.now();
        match read {
            ReadEvent::Entries { bucket, entries } => {
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
                n
            }
            ReadEvent::Done { read, complete } => {
                self.node.handle(now, Input::KvReadDone { read, complete });
                0
            }
        }
    }

    /// Once the core has loaded the health snapshot and its decisions are in the handle's
    /// table (called at the end of [`Driver::carry_out`]): marks the handle loaded, logs it
    /// and sends [`crate::Event::SnapshotLoaded`], once. An embedder that waits for it reads
    /// the snapshot's decisions, not the ones before it.
    fn announce_snapshot_loaded(&mut self) {
        if self.snapshot_logged || !self.node.snapshot_loaded() {
            return;
        }
        self.snapshot_logged = true;
        self.shared
            .snapshot_loaded
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(
            node = self.node.node_id(),
            members = self.node.active_members(),
            endpoints = self.node.endpoint_count(),
            "health snapshot loaded"
        );
        let _ = self.shared.events.send(crate::Event::SnapshotLoaded {
            active_members: self.node.active_members(),
            endpoints: self.node.endpoint_count(),
        });
    }

    /// A config version from config sync, to the core.
    fn on_config_update(&mut self, update: ConfigUpdate) {
        if update.snapshot {
            self.snapshot_config_version = Some(update.version);
        }
        let now = self.now();
        self.node.handle(
            now,
            Input::ConfigEntry {
                version: update.version,
                yaml: update.yaml,
            },
        );
    }
}
