//! # gslb-state-sim
//!
//! A deterministic discrete-event simulation of gslb-state: many real
//! [`gslb_state_core::Node`]s over a simulated NATS (subject fan-out with per-link latency,
//! jitter, loss, duplication and reordering; a KV store with revisions; a broker that goes down
//! and up), with partitions, isolated nodes, crashes and restarts, and skewed, drifting clocks.
//! The same scenario and seed give a byte-identical trace.
//!
//! ```
//! use gslb_state_sim::{run, RunOptions, yaml};
//!
//! let file = yaml::parse("
//! seed: 7
//! duration: 10s
//! state: { healthPolicy: global-quorum, heartbeatInterval: 1s, heartbeatTTL: 3s }
//! nodes: [eu-1, us-1]
//! events:
//!   - { at: 0s, node: eu-1, endpoint: web, healthy: true }
//! expect:
//!   - { at: 5s, node: us-1, endpoint: web, healthy: true, source: global }
//! ")?;
//! let outcome = run(&file.scenario, RunOptions::default());
//! assert!(outcome.expects.iter().all(|x| x.ok));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`scenario`] (the model), [`yaml`] (the file format), [`world`] (the event loop),
//! [`net`], [`kv`] and [`clock`] (what is simulated), [`trace`] (what a run leaves),
//! [`schedule`] (random fault schedules), [`invariants`] (what `gslb-sim check` checks),
//! [`svg`] (the picture).

// Unsafe code only where a system call needs it (`getrusage` in `bench`), each with a SAFETY
// comment.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod clock;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod invariants;
pub mod kv;
pub mod net;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod schedule;
pub mod svg;
pub mod trace;
pub mod world;
pub mod yaml;

pub use scenario::Scenario;
pub use trace::Trace;
pub use world::{Outcome, RunOptions, run};
