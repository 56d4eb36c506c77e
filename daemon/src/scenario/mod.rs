//! `gslb-state scenario FILE.yaml`: a `gslb-sim` scenario played for real — nats-server
//! processes and one `gslb-state` daemon per node on loopback, the events replayed in real
//! time, every expectation checked against the daemons' HTTP API — so that the simulator and
//! the system are held to each other: the same file, the same report, the same verdicts.
//!
//! How each event is played:
//!
//! | event | for real |
//! | --- | --- |
//! | `node/endpoint/healthy` | `PUT` (or `DELETE`) `/v1/health/{endpoint}` on the node's daemon; replayed after a restart, as its probes would see it again |
//! | `crash` | SIGKILL |
//! | `leave` | SIGTERM (a graceful leave), and the process is waited for |
//! | `restart` | a new process with the same node id (and, with `clockOffset`, its wall clock stepped) |
//! | `broker: down` / `up` | every nats-server SIGKILLed / restarted with its store |
//! | `isolate` / `rejoin` | the TCP proxy between the daemon and its server resets and refuses / passes |
//! | `partition` / `heal` | with partitions in the file, each node has its own server in one JetStream cluster whose routes go through proxies; the routes between groups are cut / pass |
//! | node `clockOffset`, `drift`, `clock`, restart `clockOffset` | libfaketime (Debian's `faketime`) with a timestamp file the runner rewrites, so a running daemon's wall clock changes too |
//! | node `start` | the daemon starts at that time |
//! | `network` (the section and events) | ignored: they describe the simulator's network; real loopback is what it is |
//! | node `monotonicOffset` | ignored: a real process's monotonic clock starts where it starts |
//!
//! Timing: an expectation holds when the daemon shows what it expects at some point within
//! [`TOLERANCE`] of its instant (real scheduling needs that slack, the same for every file).
//! Exit status: 0 every expectation held, 1 one failed, 2 the file is invalid or cannot be
//! played (with the reason).

mod explain;
mod node;
mod play;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use gslb_state_sim::report;
use gslb_state_sim::yaml::{self, ScenarioFile};

pub use play::Outcome;

/// An expectation holds when it is seen at some point within this much of its instant.
pub const TOLERANCE: Duration = Duration::from_millis(200);

/// Plays the scenario file at `path`; prints the report (and JSON lines with `json`).
pub fn run(path: &Path, json: bool) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gslb-state scenario: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let file = match yaml::parse(&text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gslb-state scenario: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let outcome = match play::play(&file) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gslb-state scenario: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    print_report(&file, &outcome, json)
}

/// Prints what happened and the expectations' verdicts, as `gslb-sim run` does.
fn print_report(file: &ScenarioFile, outcome: &Outcome, json: bool) -> ExitCode {
    if json {
        for line in &outcome.json_lines {
            println!("{line}");
        }
    } else {
        print!("{}", report::header(file));
        for line in &outcome.log {
            println!("{line}");
        }
        for note in &outcome.notes {
            println!("note: {note}");
        }
    }
    if report::print_expectations_explained(file, &outcome.expects, &outcome.explanations, json) > 0
    {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
