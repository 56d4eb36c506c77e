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

#[test]
fn a_failed_expectation_is_explained_by_its_node_and_a_passing_run_is_not() {
    let out = sim(&["run", "tests/data/issue-scenario.yaml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "        saw web: unknown (unknown: 0 of 0 reports healthy; local observation: none)\n        explained by us-1 at 8.000s:\n          web: unknown (source unknown;"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("            rule: global-quorum: no reports (unknown)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "              us-1 (region \"\", this node): none, not counted: no report\n"
        ),
        "{stdout}"
    );
    // With --json the failure and its explanation go to stderr.
    let out = sim(&["run", "tests/data/issue-scenario.yaml", "--json"]);
    assert!(
        text(&out.stderr).contains("explained by us-1 at 8.000s:"),
        "{}",
        text(&out.stderr)
    );

    // A wrong expectation on the region example: the rule and the region votes say why.
    let region = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quorum-by-region.yaml"),
    )
    .unwrap()
    .replace(
        "{ at: 14s, node: eu-1, endpoint: api, healthy: false,",
        "{ at: 14s, node: eu-1, endpoint: api, healthy: true,",
    );
    let path = temp("wrong-region.yaml", &region);
    let out = sim(&["run", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("expectations: 9 held, 1 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "            rule: global-quorum by region: 1 of 3 regions healthy = 33% < 51% (ap: 0/1, eu: 4/4, us: 0/1)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("            regions: ap 0/1 unhealthy, eu 4/4 healthy, us 0/1 unhealthy\n"),
        "{stdout}"
    );

    let out = sim(&["run", "../examples/hold-down.yaml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("explained by"), "{stdout}");
}

#[test]
fn holds_and_region_counts_show_in_the_timeline_the_json_and_the_svg() {
    let svg = std::env::temp_dir().join(format!("gslb-sim-cli-holds-{}.svg", std::process::id()));
    let out = sim(&[
        "run",
        "../examples/hold-down.yaml",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("heartbeat every 1s, TTL 3s, holdUp 10s, holdDown 5s\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "ap-1  web: healthy (global: 1 of 3 reports healthy; local observation: healthy; pending: unhealthy at 15.014s)"
        ),
        "{stdout}"
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.contains(r#"fill="url(#pending-down)""#),
        "stripes while pending"
    );
    assert!(picture.contains("healthy held, unhealthy pending (holdDown)"));
    assert!(picture.contains("unhealthy pending, due at 15.014s"));
    let _ = std::fs::remove_file(svg);

    let out = sim(&["run", "../examples/hold-down.yaml", "--json"]);
    let stdout = text(&out.stdout);
    let pending: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["endpoint"] == "web")
        .collect();
    assert!(pending.iter().all(|v| v.get("pending").is_some()));
    assert!(pending.iter().any(|v| v["pending"]["healthy"] == false
        && v["pending"]["t_ms"] == 15_014
        && v["healthy"] == true));

    let out = sim(&["run", "../examples/quorum-by-region.yaml", "--json"]);
    let first = text(&out.stdout)
        .lines()
        .find(|l| l.contains("\"endpoint\""))
        .unwrap()
        .to_owned();
    assert!(
        first.ends_with(",\"healthy_regions\":1,\"total_regions\":1}"),
        "{first}"
    );
    assert!(!first.contains("pending"), "no holds: no pending field");
}
