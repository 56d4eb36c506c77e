//! One scenario, two worlds: every file in `examples/` passes both `gslb-sim run` (the
//! simulation, here through its library) and `gslb-state scenario` (real daemons and
//! nats-servers on loopback, in real time); on the simulator tests' scenario files (one holds
//! an expectation that fails on purpose, to test the report) both worlds give the same verdict
//! on every expectation. A few files play at once, to keep the real side within
//! a few minutes of CI time.
//!
//! `cargo test -p gslb-state-daemon --test scenario_agreement -- --nocapture` prints both
//! reports of every file.

mod daemon_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use gslb_state_sim::world::RunOptions;
use gslb_state_sim::yaml;

/// Files played at once on the real side.
const AT_ONCE: usize = 4;

/// (file, whether every expectation must hold).
fn scenario_files() -> Vec<(PathBuf, bool)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["examples", "driver-sim/tests/data"] {
        let mut in_dir: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        in_dir.sort();
        files.extend(in_dir.into_iter().map(|p| (p, dir == "examples")));
    }
    files
}

/// The simulated verdicts: (expectation index, held).
fn simulated(path: &Path) -> Vec<(usize, bool)> {
    let text = std::fs::read_to_string(path).unwrap();
    let file = yaml::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let outcome = gslb_state_sim::run(&file.scenario, RunOptions::default());
    outcome.expects.iter().map(|x| (x.index, x.ok)).collect()
}

/// The real verdicts from `gslb-state scenario --json` (one JSON line per expectation, in
/// order), its exit status and its whole output for messages.
fn played(path: &Path) -> (Vec<bool>, Option<i32>, String) {
    let out = Command::new(daemon_common::bin())
        .arg("scenario")
        .arg(path)
        .arg("--json")
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run gslb-state scenario: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let verdicts = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("ok").is_some())
        .map(|v| v["ok"] == true)
        .collect();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (verdicts, out.status.code(), text)
}

#[test]
fn every_scenario_file_passes_in_the_simulation_and_on_real_daemons() {
    let files = scenario_files();
    assert!(files.len() >= 7, "found {files:?}");
    let failures = Mutex::new(Vec::<String>::new());
    // Longest first, `AT_ONCE` workers taking the next file as they finish: the real side
    // takes about the sum of the durations over `AT_ONCE`.
    let mut queue: Vec<(PathBuf, bool, u64)> = files
        .into_iter()
        .map(|(path, must_hold)| {
            let text = std::fs::read_to_string(&path).unwrap();
            let file = yaml::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let duration_ns = file.scenario.duration_ns;
            (path, must_hold, duration_ns)
        })
        .collect();
    queue.sort_by_key(|(_, _, d)| std::cmp::Reverse(*d));
    let queue = Mutex::new(queue.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..AT_ONCE {
            scope.spawn(|| {
                loop {
                    let Some((path, must_hold, _)) = queue.lock().unwrap().next() else {
                        break;
                    };
                    check_file(&path, must_hold, &failures);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Plays `path` in both worlds; what disagrees goes to `failures`.
fn check_file(path: &Path, must_hold: bool, failures: &Mutex<Vec<String>>) {
    let sim = simulated(path);
    let (real, status, text) = played(path);
    let name = path.display().to_string();
    println!("=== {name}: exit {status:?}\n{text}");
    let mut problems = Vec::new();
    let all_hold = sim.iter().all(|(_, ok)| *ok);
    if must_hold && !all_hold {
        problems.push("an expectation fails in the simulation".to_owned());
    }
    let want_status = if all_hold { 0 } else { 1 };
    if status != Some(want_status) {
        problems.push(format!(
            "gslb-state scenario exited {status:?}, expected {want_status}"
        ));
    }
    let sim_verdicts: Vec<bool> = sim.iter().map(|(_, ok)| *ok).collect();
    if real != sim_verdicts {
        problems.push(format!(
            "verdicts differ: simulated {sim_verdicts:?}, real {real:?}"
        ));
    }
    if !problems.is_empty() {
        failures
            .lock()
            .unwrap()
            .push(format!("{name}: {}\n{text}", problems.join("; ")));
    }
}
