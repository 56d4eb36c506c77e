//! # gslb-state-core
//!
//! The sans-IO state machine of gslb-state: GSLB nodes share their endpoint health and
//! membership over NATS, and each node decides every endpoint with a global view under the
//! operator's policy (`prefer-local`, `local-only`, `global-any-healthy`, `global-quorum`).
//!
//! The core does no I/O, reads no clock, draws no random numbers and spawns nothing. A driver
//! owns time and I/O: it hands inputs in with the current time, runs timers when asked, and
//! carries out the outputs. The production driver binds it to NATS; the simulation binds many
//! of them to a simulated network, so the simulation tests exactly the code that runs in
//! production.
//!
//! ## The drive loop
//!
//! ```
//! use gslb_state_core::{Config, Connectivity, Input, Instant, KvRead, Node, NodeConfig, Now, Output, WallTime};
//! use std::time::Duration;
//!
//! let config = Config::from_yaml("cluster: {id: prod-global}\nstate: {healthPolicy: global-quorum}\n")?;
//! // The driver's clocks: monotonic nanoseconds since it started, and the wall clock.
//! let mut now = Now::new(Instant::from_millis(0), WallTime::from_unix_ms(1_700_000_000_000));
//! let mut node = Node::new(NodeConfig::from_config(&config, "eu-1"), now)?;
//!
//! node.handle(now, Input::Connectivity(Connectivity::Connected));
//! node.handle(now, Input::LocalHealth { endpoint: "web".into(), healthy: Some(true) });
//! loop {
//!     // 1. Carry out every output.
//!     while let Some(out) = node.poll_output() {
//!         match out {
//!             Output::Publish { subject, payload, .. } => { /* nats.publish(subject, payload) */ }
//!             Output::KvPut { bucket, key, value, .. } => { /* kv(bucket).put(key, value) */ }
//!             Output::ReadSnapshot => {
//!                 // Read both buckets, hand in every entry as Input::KvEntry, then:
//!                 node.handle(now, Input::KvReadDone { read: KvRead::Snapshot, complete: true });
//!             }
//!             Output::Decision { endpoint, decision } => {
//!                 println!("{endpoint}: {:?} ({})", decision.healthy, decision.source);
//!             }
//!             _ => { /* resyncs, membership changes, config: see `Output` */ }
//!         }
//!     }
//!     // 2. Sleep until the next timer or the next input, whichever comes first.
//!     let wake = node.poll_timeout();
//!     # if wake > Instant::from_millis(25_000) { break; }
//!     now = Now::new(wake, WallTime::from_unix_ms(1_700_000_000_000 + wake.as_millis()));
//!     // (Inputs that arrive meanwhile go to `node.handle(now, input)`.)
//!     node.handle_timeout(now);
//! }
//! assert_eq!(node.decision("web").unwrap().healthy, Some(true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Semantics
//!
//! * A remote member is **active** while its latest heartbeat arrived at most `heartbeatTTL`
//!   ago on this node's monotonic clock (or, known only from the start-up snapshot, until TTL
//!   after its record was sent); the local node is always a member.
//! * The core runs the whole protocol: when to read the snapshot, when to re-sync a member,
//!   what to do after messages were lost, which incarnation to take, leaving, and committing
//!   or rolling back a pushed configuration. A driver carries out reads, writes and publishes.
//! * For each (member, endpoint) only the newest report counts, ordered by
//!   (incarnation, sequence), never by timestamp; duplicates and reordering change nothing.
//! * Reports count only while their member is active.
//! * The threshold is integer-exact: `healthy * 100 >= quorumMinPercent * total`.
//! * See [`policy::decide`] for the four policies, and [`Decision`] for the explanation
//!   every verdict carries.
//! * Beyond the guide, all off by default: `state.quorumScope: regions` weighs the counted
//!   reports by region ([`QuorumScope`]); `state.holdUp` / `state.holdDown` damp verdict
//!   changes between healthy and unhealthy ([`policy::hold_step`]; a pending change is
//!   [`Decision::pending`], its deadline a core timer, [`TimerReason::Hold`]); and
//!   [`Node::explain`] tells every member's part in one endpoint's decision.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod compaction;
pub mod config;
pub mod explain;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod hold;
pub mod input;
mod membership;
pub mod names;
pub mod node;
pub mod output;
mod own;
pub mod policy;
#[cfg(feature = "reference")]
pub mod reference;
mod regions;
mod report_sync;
pub mod stats;
pub mod time;
mod view;

pub use config::{Config, ConfigError, StateSettings};
pub use explain::{Explanation, MemberPart, Part, RegionVote, Said};
pub use input::{Connectivity, Input, KvRead};
pub use names::{Bucket, Names};
pub use node::{
    KV_WRITE_DELAY, Limits, MAX_KV_WRITE_DELAY, MemberInfo, Node, NodeConfig, NodeConfigError,
    TimerReason,
};
pub use output::{DownReason, Output};
pub use policy::{Decision, Holds, Pending, Policy, QuorumScope, Rule, Source};
pub use regions::MAX_REGIONS;
pub use stats::{DropReason, MessageKind, Stats};
pub use time::{Instant, Now, WallTime};
