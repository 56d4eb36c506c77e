//! [`Handle`]: what an embedding daemon holds. The driver runs on its own thread with its own
//! current-thread tokio runtime (the drive loop and the NATS connection's task share it;
//! [`Handle::start`]), or as a task of the embedder's tokio runtime ([`Handle::spawn`]); the
//! handle talks to it through runtime-neutral channels, so the caller may use tokio, smol, or
//! no async runtime at all.

use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use gslb_state_core::config::Config;
use gslb_state_core::{
    Decision, DownReason, Explanation, Instant, Limits, MemberInfo, NodeConfig, Policy, Stats,
};

use crate::clock::Clock;
use crate::error::StartError;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::Metrics;

/// How many events a slow subscriber may fall behind before it misses some
/// ([`broadcast::error::RecvError::Lagged`]).
pub const EVENT_BUFFER: usize = 65_536;

/// What to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The configuration (the guide's YAML, parsed).
    pub config: Config,
    /// This node's id (`node.id`, or the host name).
    pub node_id: String,
    /// Bounds of the core.
    pub limits: Limits,
    /// Whether the embedder applies pushed configurations itself (endpoints, probes) and
    /// confirms each with [`Handle::config_applied`] within `config.applyTimeout`
    /// ([`Event::ConfigApply`]). When false (the default), a valid version is in force as soon
    /// as its `state.*` is.
    pub confirm_config: bool,
    /// Called by the driver (on its thread, or its task's) for every [`Event::Decision`], the
    /// moment the decision is in force ([`Handle::decision`] returns it) and before the event
    /// is sent: an embedder that keeps its own answer table updates it here without a thread
    /// hop. It must return quickly (the driver waits for it).
    pub on_decision: Option<DecisionListener>,
}

/// A function the driver calls with every changed decision ([`NodeOptions::on_decision`]).
#[derive(Clone)]
pub struct DecisionListener(Arc<ListenerFn>);

/// The function inside a [`DecisionListener`].
type ListenerFn = dyn Fn(&str, &Decision) + Send + Sync;

impl DecisionListener {
    /// Wraps `f`; it is called with the endpoint and its new decision.
    pub fn new(f: impl Fn(&str, &Decision) + Send + Sync + 'static) -> Self {
        DecisionListener(Arc::new(f))
    }

    /// Calls the function.
    pub(crate) fn call(&self, endpoint: &str, decision: &Decision) {
        (self.0)(endpoint, decision)
    }
}

impl std::fmt::Debug for DecisionListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecisionListener(..)")
    }
}

impl NodeOptions {
    /// Options for `config`, with `node.id` from the file or else `default_node_id`.
    pub fn new(config: Config, default_node_id: &str) -> Self {
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| default_node_id.to_owned());
        NodeOptions {
            config,
            node_id,
            limits: Limits::default(),
            confirm_config: false,
            on_decision: None,
        }
    }
}

/// Something that happened, for subscribers ([`Handle::subscribe`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The verdict or the source of `endpoint`'s decision changed (a pending change appearing
    /// or ending, or counts alone, are no event: [`Handle::decision`] has them).
    Decision {
        /// The endpoint.
        endpoint: String,
        /// The decision and why.
        decision: Decision,
    },
    /// A member became active.
    MemberUp {
        /// Node id.
        node: String,
        /// Region.
        region: String,
    },
    /// A member stopped being active.
    MemberDown {
        /// Node id.
        node: String,
        /// Why.
        reason: DownReason,
    },
    /// The health snapshot was read from the KV at start-up (logged as `health snapshot
    /// loaded`): the members and reports stored there are in the view, and the decisions
    /// they make are in force (sent after their [`Event::Decision`]s).
    SnapshotLoaded {
        /// Active members, this node included.
        active_members: usize,
        /// Endpoints known.
        endpoints: usize,
    },
    /// Connected to NATS.
    Connected,
    /// Lost the connection to NATS.
    Disconnected,
    /// A new configuration version was accepted (config sync); its `state` settings are in
    /// force. With [`NodeOptions::confirm_config`], apply the rest and report with
    /// [`Handle::config_applied`] within `config.applyTimeout`.
    ConfigApply {
        /// KV revision.
        version: u64,
        /// The configuration.
        config: Arc<Config>,
        /// Whether it is the snapshot loaded at start-up.
        snapshot: bool,
    },
    /// A configuration version is in force, applied in full.
    ConfigCommitted {
        /// KV revision.
        version: u64,
    },
    /// Applying a configuration version failed or ran out of time; it was rolled back whole:
    /// restore the endpoints of `restore` (or of the node's own file when `None`).
    ConfigFailed {
        /// KV revision.
        version: u64,
        /// Why.
        error: String,
        /// The configuration in force again.
        restore: Option<Arc<Config>>,
    },
    /// A configuration version was refused; the last good one stays in force.
    ConfigRejected {
        /// KV revision.
        version: u64,
        /// Why.
        error: String,
    },
}

/// The configuration config sync wants in force ([`Handle::config_state`]): what an embedder
/// that applies endpoints and probes itself follows. Its history is one-way: a version being
/// applied, then the same version committed or the previous one restored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigState {
    /// The version (0: none from config sync; the node's own file is in force).
    pub version: u64,
    /// Its configuration (`None`: the node's own file).
    pub config: Option<Arc<Config>>,
    /// Being applied: confirm with [`Handle::config_applied`] (with
    /// [`NodeOptions::confirm_config`]); false once committed, or after a rollback.
    pub applying: bool,
    /// Whether it is the snapshot loaded at start-up.
    pub snapshot: bool,
}

/// The driver stopped; the call could not be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the gslb-state driver has stopped")
    }
}

impl std::error::Error for Stopped {}

pub(crate) enum Command {
    SetHealth {
        endpoint: String,
        healthy: Option<bool>,
    },
    Decisions(oneshot::Sender<Vec<(String, Decision)>>),
    Explain {
        endpoint: String,
        reply: oneshot::Sender<Option<Explanation>>,
    },
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Stats(oneshot::Sender<Stats>),
    ConfigApplied {
        version: u64,
        result: Result<(), String>,
    },
    Reconnect,
    Shutdown {
        done: oneshot::Sender<()>,
        /// Announce that the node leaves (peers drop it at once).
        leave: bool,
    },
}

/// State shared between the handle and the driver thread.
pub(crate) struct Shared {
    /// The driver's monotonic clock (the core's [`Instant`]s are on it).
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: broadcast::Sender<Event>,
    /// Every decision the core handed out.
    pub(crate) decisions: RwLock<DecisionTable>,
    pub(crate) connected: std::sync::atomic::AtomicBool,
    pub(crate) connect_errors: Arc<crate::connect::ConnectErrors>,
    /// What config sync wants in force.
    pub(crate) config_state: tokio::sync::watch::Sender<ConfigState>,
    /// The policy and threshold in force.
    pub(crate) policy: RwLock<(Policy, u8)>,
    /// The health snapshot was read in full ([`Event::SnapshotLoaded`]); never reset.
    pub(crate) snapshot_loaded: std::sync::atomic::AtomicBool,
    /// [`NodeOptions::on_decision`].
    pub(crate) on_decision: Option<DecisionListener>,
}

/// A running node: give it local health, read and subscribe to its decisions.
///
/// Dropping the handle shuts the driver down and waits for its thread (started with
/// [`Handle::start`]; a spawned driver drains on its runtime unwaited). See
/// [`Handle::shutdown`] to wait for the drain without dropping.
pub struct Handle {
    node_id: String,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    runner: Runner,
}

/// Where the driver runs.
enum Runner {
    /// Its own thread ([`Handle::start`]; `None` until it is started), joined on drop.
    Thread(Option<JoinHandle<()>>),
    /// A task of the embedder's runtime ([`Handle::spawn`]).
    Task,
}

/// What [`Handle::start_with_events`] and [`Handle::spawn`] share: the handle (its driver to run
/// where `runner` says), the driver not yet running, and the first subscription.
fn prepare(
    options: NodeOptions,
    runner: Runner,
) -> (Handle, crate::driver::Start, broadcast::Receiver<Event>) {
    let node_config = NodeConfig {
        limits: options.limits.clone(),
        confirm_apply: options.confirm_config,
        ..NodeConfig::from_config(&options.config, &options.node_id)
    };
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, first_subscriber) = broadcast::channel(EVENT_BUFFER);
    let shared = Arc::new(Shared {
        clock: Clock::start(),
        metrics: Arc::new(Metrics::new()),
        events,
        decisions: RwLock::new(DecisionTable::default()),
        connected: std::sync::atomic::AtomicBool::new(false),
        connect_errors: Arc::default(),
        config_state: tokio::sync::watch::Sender::new(ConfigState::default()),
        policy: RwLock::new((
            options.config.state.policy,
            options.config.state.quorum_min_percent,
        )),
        snapshot_loaded: std::sync::atomic::AtomicBool::new(false),
        on_decision: options.on_decision.clone(),
    });
    let driver = crate::driver::Start {
        config: options.config,
        node_config,
        commands: command_rx,
        shared: shared.clone(),
    };
    let handle = Handle {
        node_id: options.node_id,
        commands,
        shared,
        runner,
    };
    (handle, driver, first_subscriber)
}

/// Tells the starter whether the driver started (once).
pub(crate) struct Ready(Box<dyn FnOnce(Result<(), StartError>) + Send>);

impl Ready {
    fn new(f: impl FnOnce(Result<(), StartError>) + Send + 'static) -> Self {
        Ready(Box::new(f))
    }

    /// Reports the start's result.
    pub(crate) fn send(self, result: Result<(), StartError>) {
        (self.0)(result)
    }
}

impl Handle {
    /// Validates `options` and starts the driver on its own thread. Returns at once: decisions
    /// are local until NATS is reached, which happens in the background.
    pub fn start(options: NodeOptions) -> Result<Handle, StartError> {
        Handle::start_with_events(options).map(|(handle, _)| handle)
    }

    /// [`Handle::start`], with a subscription to the events that exists before the driver
    /// starts, so none is missed: a [`Handle::subscribe`] after `start` returns can miss what
    /// the driver does at once (connecting, and the config snapshot's [`Event::ConfigApply`]
    /// on a busy machine).
    pub fn start_with_events(
        options: NodeOptions,
    ) -> Result<(Handle, broadcast::Receiver<Event>), StartError> {
        let (mut handle, driver, first_subscriber) = prepare(options, Runner::Thread(None));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ready = Ready::new(move |result| {
            let _ = ready_tx.send(result);
        });
        let thread = std::thread::Builder::new()
            .name(format!("gslb-state-{}", handle.node_id))
            .spawn(move || {
                // One thread for the drive loop and the NATS connection's task: a message
                // goes from the socket to the core, and a publish from the core to the socket,
                // without a wake-up of another thread (see the README's propagation figures).
                let built = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match built {
                    Ok(runtime) => runtime.block_on(crate::driver::run(driver, ready)),
                    Err(e) => ready.send(Err(StartError::Runtime(e))),
                }
            })
            .map_err(StartError::Runtime)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {
                handle.runner = Runner::Thread(Some(thread));
                Ok((handle, first_subscriber))
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StartError::Runtime(std::io::Error::other(
                    "the driver thread ended during start-up",
                )))
            }
        }
    }

    /// [`Handle::start_with_events`], but the driver is a task of the calling tokio runtime
    /// instead of a thread and runtime of its own: for an embedder that already runs tokio
    /// and runs many nodes, or wants no extra thread. Its NATS connection's tasks run on the
    /// same runtime. Dropping the handle asks the driver to leave and stop without waiting
    /// for it (the runtime must keep running for the drain; [`Handle::shutdown`] waits).
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn spawn(
        options: NodeOptions,
    ) -> Result<(Handle, broadcast::Receiver<Event>), StartError> {
        let (handle, driver, first_subscriber) = prepare(options, Runner::Task);
        let (ready_tx, ready_rx) = oneshot::channel();
        let ready = Ready::new(move |result| {
            let _ = ready_tx.send(result);
        });
        tokio::spawn(crate::driver::run(driver, ready));
        match ready_rx.await {
            Ok(Ok(())) => Ok((handle, first_subscriber)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartError::Runtime(std::io::Error::other(
                "the driver task ended during start-up",
            ))),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's observation of `endpoint`: `Some(true)` up, `Some(false)` down, `None`
    /// withdrawn. Never blocks.
    pub fn set_health(&self, endpoint: &str, healthy: Option<bool>) -> Result<(), Stopped> {
        crate::hops::stamp(crate::hops::Hop::SetHealth, &self.node_id);
        self.commands
            .send(Command::SetHealth {
                endpoint: endpoint.to_owned(),
                healthy,
            })
            .map_err(|_| Stopped)
    }

    /// The decision in force for `endpoint`, with its current counts and its pending change
    /// (`state.holdUp`/`holdDown`; updated after every change the driver hands in, a pending
    /// change appearing, moving or ending included); a shared-map lookup, cheap enough for
    /// every DNS answer. `pending.at` is on [`Handle::now`]'s clock.
    pub fn decision(&self, endpoint: &str) -> Option<Decision> {
        self.shared
            .decisions
            .read()
            .ok()
            .and_then(|d| d.get(endpoint))
    }

    /// Every endpoint with its decision and current counts, asked of the core.
    pub async fn decisions(&self) -> Result<Vec<(String, Decision)>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Decisions(tx))
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Why `endpoint` is decided as it is ([`Explanation`]): every member's part (region,
    /// activity, its report, counted or why not, age), the region votes, the rule and holds in
    /// force, a pending change, and the rule in words. Asked of the core, brought up to the
    /// current instant first: `explanation.now` is [`Handle::now`] at the time of the call, so
    /// `pending.at - now` is the time left. `Ok(None)` for an endpoint the node never heard of.
    pub async fn explain(&self, endpoint: &str) -> Result<Option<Explanation>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Explain {
                endpoint: endpoint.to_owned(),
                reply,
            })
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The current instant on the node's monotonic clock, the clock of the core's
    /// [`Instant`]s: a [`Decision`]'s `pending.at` takes effect in
    /// `at.saturating_since(handle.now())`.
    pub fn now(&self) -> Instant {
        self.shared.clock.now().mono
    }

    /// Every member, this node first.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Members(tx))
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The core's counters.
    pub async fn stats(&self) -> Result<Stats, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Reports how applying config `version` ([`Event::ConfigApply`]) went (with
    /// [`NodeOptions::confirm_config`]): `Ok` within `config.applyTimeout` commits it
    /// (`gslbd_state_config_events_total{result="applied"}`); an error, or no report in time,
    /// rolls it back whole ([`Event::ConfigFailed`], `result="failed"`).
    pub fn config_applied(&self, version: u64, result: Result<(), String>) -> Result<(), Stopped> {
        self.commands
            .send(Command::ConfigApplied { version, result })
            .map_err(|_| Stopped)
    }

    /// Reconnects to NATS now, re-reading the TLS certificate and key files (certificate
    /// rotation). The driver also does this by itself when the files change.
    pub fn reload_tls(&self) {
        let _ = self.commands.send(Command::Reconnect);
    }

    /// The config version in force from config sync (committed), and the config.
    pub fn applied_config(&self) -> Option<(u64, Arc<Config>)> {
        let state = self.shared.config_state.borrow();
        if state.applying {
            return None;
        }
        state.config.clone().map(|c| (state.version, c))
    }

    /// What config sync wants in force, as a `watch` channel: the latest state is never lost
    /// to a slow reader (unlike [`Handle::subscribe`]'s events).
    pub fn config_state(&self) -> tokio::sync::watch::Receiver<ConfigState> {
        self.shared.config_state.subscribe()
    }

    /// The policy and `quorumMinPercent` in force (config sync may change them).
    pub fn policy(&self) -> (Policy, u8) {
        self.shared
            .policy
            .read()
            .map(|p| *p)
            .unwrap_or_else(|e| *e.into_inner())
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Whether the client is connected to NATS right now.
    pub fn is_connected(&self) -> bool {
        self.shared
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the health snapshot has been read from the KV in full and its decisions are in
    /// force ([`Handle::decision`] returns them; [`Event::SnapshotLoaded`], logged as `health
    /// snapshot loaded`). Until then the node decides on what it has heard live only, and
    /// writes nothing of its own to the KV; once true it stays true.
    pub fn snapshot_loaded(&self) -> bool {
        self.shared
            .snapshot_loaded
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why the latest attempt to connect failed, in full (for example
    /// `nats://10.0.0.1:4222: IO error: received fatal alert: CertificateRequired`), since the
    /// last successful connection; `None` while connected or before the first failure. Each
    /// failure is also logged (`NATS connect error`).
    pub fn last_connect_error(&self) -> Option<String> {
        self.shared.connect_errors.last()
    }

    /// Leaves the cluster and stops the driver: the node announces that it leaves (peers drop
    /// it at once), deletes its report keys, flushes pending publishes and KV writes (bounded
    /// by a few seconds), then closes the connection. Later calls on the handle return
    /// [`Stopped`]. Dropping the handle does the same.
    pub async fn shutdown(&self) {
        self.stop(true).await;
    }

    /// Stops the driver like [`Handle::shutdown`], but without announcing that the node
    /// leaves: peers keep counting it, with its reports, until its TTL runs out. For a restart
    /// that is back within the TTL (an in-place upgrade), so that no quorum changes meanwhile;
    /// the new process then replaces this incarnation.
    pub async fn shutdown_quietly(&self) {
        self.stop(false).await;
    }

    async fn stop(&self, leave: bool) {
        let (done, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { done, leave })
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let (done, _rx) = oneshot::channel();
        match &mut self.runner {
            Runner::Thread(thread) => {
                if let Some(thread) = thread.take() {
                    let _ = self.commands.send(Command::Shutdown { done, leave: true });
                    let _ = thread.join();
                }
            }
            Runner::Task => {
                let _ = self.commands.send(Command::Shutdown { done, leave: true });
            }
        }
    }
}

/// The driver's copy of every decision, by the core's endpoint number
/// ([`Node::poll_updated_indexed`](gslb_state_core::Node::poll_updated_indexed)): a change
/// is a vector write; a lookup by name hashes the name once.
#[derive(Debug, Default)]
pub(crate) struct DecisionTable {
    numbers: rustc_hash::FxHashMap<String, usize>,
    decisions: Vec<Option<Decision>>,
}

impl DecisionTable {
    /// The decision for `endpoint`, if it was ever handed out.
    pub(crate) fn get(&self, endpoint: &str) -> Option<Decision> {
        let n = *self.numbers.get(endpoint)?;
        self.decisions.get(n).copied().flatten()
    }

    /// Makes room for endpoint numbers below `endpoints` in one step (a snapshot's burst of new
    /// endpoints would otherwise grow the map and the vector by doubling).
    pub(crate) fn reserve(&mut self, endpoints: usize) {
        self.numbers
            .reserve(endpoints.saturating_sub(self.numbers.len()));
        self.decisions
            .reserve(endpoints.saturating_sub(self.decisions.len()));
    }

    /// Sets endpoint number `n` (named `endpoint`) to `decision`; returns the one it replaces.
    pub(crate) fn set(&mut self, n: usize, endpoint: &str, decision: Decision) -> Option<Decision> {
        if n >= self.decisions.len() {
            self.decisions.resize(n + 1, None);
        }
        let old = self.decisions[n].replace(decision);
        if old.is_none() {
            self.numbers.insert(endpoint.to_owned(), n);
        }
        old
    }
}
