//! # gslb-state-daemon
//!
//! The `gslb-state` binary an operator runs: it reads the guide's configuration file
//! ([`config_file`]), runs a node through the `gslb-state-nats` library with the built-in
//! probes ([`probe`]), serves the HTTP API and metrics ([`http`]), applies what config sync
//! wants in force and drains on SIGTERM ([`run`]); the operator's tools ([`tools`]); the
//! status page served at `GET /` ([`status_page`]) and `gslb-state status` ([`status_cli`]);
//! and [`scenario`], which plays a `gslb-sim` scenario file on real daemons and nats-servers.

#![warn(missing_docs)]

pub mod config_file;
pub mod http;
pub mod probe;
pub mod run;
pub mod scenario;
pub mod status_cli;
pub mod status_page;
pub mod tools;
