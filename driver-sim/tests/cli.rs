//! The `gslb-sim` binary as an operator runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gslb-sim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("gslb-sim runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gslb-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn demo_prints_a_readable_timeline_and_holds() {
    let out = sim(&["demo"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("three regions"), "{stdout}");
    assert!(
        stdout.contains("---- partition [eu-1] | [us-1, ap-1] ----"),
        "{stdout}"
    );
    assert!(stdout.contains("---- us-1 crashes ----"), "{stdout}");
    assert!(
        stdout.contains("api: unhealthy (global: 1 of 2 reports healthy"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expectations: 9 held, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn every_example_holds() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = sim(&["run", path.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}{}",
            path.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 4, "one example per policy at least, found {ran}");
}

#[test]
fn a_failed_expectation_exits_1_and_says_what_was_seen_and_why() {
    let out = sim(&["run", "tests/data/issue-scenario.yaml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  line 22: at 8.000s us-1: expected healthy: false, saw null; expected source: global, saw unknown"),
        "{stdout}"
    );
    assert!(
        stdout.contains("saw web: unknown (unknown: 0 of 0 reports healthy"),
        "{stdout}"
    );
}

#[test]
fn an_invalid_scenario_exits_2_naming_the_key_and_line() {
    let path = temp(
        "bad.yaml",
        "seed: 1\nnodes: [a, b]\nevents:\n  - { at: 1s, partition: [[a], [c]] }\n",
    );
    let out = sim(&["run", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 4: events[0].partition: unknown node \"c\""),
        "{stderr}"
    );
    let out = sim(&["run", "/nonexistent.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sim(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage: gslb-sim <COMMAND>"));
    let out = sim(&["run"]);
    assert_eq!(out.status.code(), Some(2), "a scenario file is required");
    let out = sim(&["run", "../examples/leave.yaml", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_command_has_help() {
    for command in [
        &["--help"][..],
        &["help"],
        &["demo", "--help"],
        &["run", "--help"],
        &["check", "--help"],
        &["bench", "--help"],
    ] {
        let out = sim(command);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command:?}: {}",
            text(&out.stderr)
        );
        assert!(stdout.contains("Usage: gslb-sim"), "{command:?}: {stdout}");
    }
    let out = sim(&["check", "--help"]);
    let stdout = text(&out.stdout);
    for flag in [
        "--seeds",
        "--first-seed",
        "--nodes",
        "--endpoints",
        "--trace-dir",
        "--keep-going",
    ] {
        assert!(stdout.contains(flag), "{flag}: {stdout}");
    }
    let out = sim(&[]);
    assert_eq!(out.status.code(), Some(2), "a command is required");
    assert!(text(&out.stderr).contains("Usage: gslb-sim <COMMAND>"));
}

#[test]
fn json_output_is_one_object_per_line_and_svg_is_written() {
    let svg = std::env::temp_dir().join(format!("gslb-sim-cli-{}.svg", std::process::id()));
    let out = sim(&[
        "run",
        "../examples/global-quorum.yaml",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().count() > 20);
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["t_ms"].is_u64() && v["node"].is_string(), "{line}");
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg"), "{}", &picture[..40]);
    assert!(picture.contains("partition") && picture.contains("broker down"));
    assert!(picture.contains("not running"));
    assert!(picture.trim_end().ends_with("</svg>"));
    let _ = std::fs::remove_file(svg);
}

#[test]
fn check_runs_seeds_and_reports_success() {
    let out = sim(&["check", "--seeds", "3", "--first-seed", "1"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("3 seeds (1..=3), 5 nodes, 3 endpoints: every invariant held"),
        "{stdout}"
    );
    let out = sim(&["check", "--nodes", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--nodes"));
    let out = sim(&["bench", "--duration", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}
