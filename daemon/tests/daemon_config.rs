//! `gslb-state check-config` and `gslb-state run` on bad configuration files: both exit non-zero
//! with an error naming the file, the line and the key; and the guide's example passes
//! `check-config` unedited, reporting how its illegal stream name is mapped.
//!
//! Run by `cargo test -p gslb-state-daemon --test daemon_config`, against the `gslb-state`
//! binary cargo builds for this crate (`daemon_common::bin`; `GSLB_STATE_BIN` picks another).

mod daemon_common;

use std::time::Duration;

use daemon_common::{TestDir, bin, data, run_cli};

/// A valid file the cases below break one line of (line numbers matter: keep it as is).
const VALID: &str = "\
cluster:
  id: \"prod-global\"
state:
  healthPolicy: \"global-quorum\"
  quorumMinPercent: 51
  heartbeatInterval: \"1s\"
  heartbeatTTL: \"3s\"
nats:
  servers: [\"nats://127.0.0.1:1\"]
";

struct Case {
    what: &'static str,
    yaml: String,
    key: &'static str,
    line: Option<u64>,
    /// Also in the message.
    says: &'static str,
}

fn cases() -> Vec<Case> {
    let with = |from: &str, to: &str| {
        assert!(VALID.contains(from), "{from:?}");
        VALID.replacen(from, to, 1)
    };
    vec![
        Case {
            what: "unknown key",
            yaml: with(
                "  quorumMinPercent: 51\n",
                "  quorumMinPercent: 51\n  quorumPercent: 60\n",
            ),
            key: "state.quorumPercent",
            line: Some(6),
            says: "unknown field",
        },
        Case {
            what: "unknown key in nats.tls (a typo of caFile)",
            yaml: format!("{VALID}  tls:\n    cafile: \"/etc/gslb/pki/ca.crt\"\n"),
            key: "nats.tls.cafile",
            line: Some(11),
            says: "unknown field",
        },
        Case {
            what: "quorumMinPercent above 100",
            yaml: with("quorumMinPercent: 51", "quorumMinPercent: 101"),
            key: "state.quorumMinPercent",
            line: Some(5),
            says: "between 1 and 100",
        },
        Case {
            what: "quorumMinPercent of 0",
            yaml: with("quorumMinPercent: 51", "quorumMinPercent: 0"),
            key: "state.quorumMinPercent",
            line: Some(5),
            says: "between 1 and 100",
        },
        Case {
            what: "heartbeatTTL equal to heartbeatInterval",
            yaml: with("heartbeatTTL: \"3s\"", "heartbeatTTL: \"1s\""),
            key: "state.heartbeatTTL",
            line: Some(7),
            says: "greater than state.heartbeatInterval",
        },
        Case {
            what: "heartbeatTTL below heartbeatInterval",
            yaml: with("heartbeatTTL: \"3s\"", "heartbeatTTL: \"500ms\""),
            key: "state.heartbeatTTL",
            line: Some(7),
            says: "greater than state.heartbeatInterval",
        },
        Case {
            what: "unknown policy",
            yaml: with("\"global-quorum\"", "\"majority\""),
            key: "state.healthPolicy",
            line: Some(4),
            says: "unknown policy",
        },
        Case {
            what: "cluster.id left empty",
            yaml: with("  id: \"prod-global\"\n", "  id:\n"),
            key: "cluster.id",
            line: Some(2),
            says: "required key is missing",
        },
        Case {
            what: "cluster.id commented out",
            yaml: with("  id: \"prod-global\"\n", "  # id: \"prod-global\"\n"),
            key: "cluster.id",
            line: Some(1),
            says: "required key is missing",
        },
        Case {
            // No line exists to point at; the message says what is missing instead.
            what: "no cluster section at all",
            yaml: with("cluster:\n  id: \"prod-global\"\n", ""),
            key: "cluster.id",
            line: None,
            says: "no cluster section",
        },
        Case {
            what: "unknown quorumScope",
            yaml: with(
                "  quorumMinPercent: 51\n",
                "  quorumMinPercent: 51\n  quorumScope: \"datacenters\"\n",
            ),
            key: "state.quorumScope",
            line: Some(6),
            says: "unknown scope \"datacenters\"; expected one of members, regions",
        },
        Case {
            what: "negative holdDown",
            yaml: format!(
                "{}  holdDown: \"-5s\"\n{}",
                &VALID[..VALID.find("nats:").unwrap()],
                &VALID[VALID.find("nats:").unwrap()..]
            ),
            key: "state.holdDown",
            line: Some(8),
            says: "must not be negative",
        },
        Case {
            what: "malformed holdUp",
            yaml: with(
                "  heartbeatInterval: \"1s\"\n",
                "  holdUp: \"soon\"\n  heartbeatInterval: \"1s\"\n",
            ),
            key: "state.holdUp",
            line: Some(6),
            says: "expected a duration",
        },
        Case {
            what: "holdUp longer than a week",
            yaml: with(
                "  heartbeatInterval: \"1s\"\n",
                "  holdUp: \"8d\"\n  heartbeatInterval: \"1s\"\n",
            ),
            key: "state.holdUp",
            line: Some(6),
            says: "longer than a week",
        },
        Case {
            what: "broken YAML: unclosed flow sequence",
            yaml: with(
                "[\"nats://127.0.0.1:1\"]",
                "[\"nats://127.0.0.1:1\"\n  tls: {}",
            ),
            key: "",
            line: Some(10),
            says: "",
        },
        Case {
            what: "broken YAML: bad indentation",
            yaml: with("  quorumMinPercent: 51\n", " quorumMinPercent: 51\n"),
            key: "",
            line: Some(5),
            says: "",
        },
        Case {
            what: "broken YAML: a tab for indentation",
            yaml: with("  quorumMinPercent: 51\n", "\tquorumMinPercent: 51\n"),
            key: "",
            line: Some(5),
            says: "",
        },
    ]
}

/// Every case: `check-config` and `run` both exit 1, and stderr names the file, the line and
/// the key (`error: FILE: line N: KEY: message`).
#[test]
fn bad_config_files_are_refused_naming_the_key_and_the_line() {
    let dir = TestDir::new();
    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let path = dir.file(&format!("case{i}.yaml"));
        std::fs::write(&path, &case.yaml).unwrap();
        let file = path.to_str().unwrap();
        // What the first error line must start with.
        let mut want = format!("{file}: ");
        if let Some(line) = case.line {
            want += &format!("line {line}: ");
        }
        want += case.key;
        for (args, json) in [
            (vec!["check-config", file], false),
            (vec!["run", "--config", file], false),
            (vec!["--log-format", "json", "run", "--config", file], true),
        ] {
            let start = std::time::Instant::now();
            let out = run_cli(&args);
            let took = start.elapsed();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // Text: `error: FILE: line N: KEY: ...`; JSON: one object per line, the error as
            // the message of an ERROR event.
            let first = if json {
                let events: Vec<Option<serde_json::Value>> = stderr
                    .lines()
                    .map(|l| serde_json::from_str(l).ok())
                    .collect();
                let all_json = !events.is_empty() && events.iter().all(Option::is_some);
                events
                    .into_iter()
                    .flatten()
                    .find(|v| v["level"] == "ERROR")
                    .filter(|_| all_json)
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            } else {
                stderr
                    .lines()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or("")
                    .to_owned()
            };
            let ok = out.status.code() == Some(1)
                && first.starts_with(&want)
                && first.contains(case.says)
                && !stdout.contains("valid:")
                // `run` refuses before connecting to anything.
                && took < Duration::from_secs(5);
            if !ok {
                failures.push(format!(
                    "{} ({args:?}): exit {:?} after {took:?}\n  want an error starting {want:?} containing {:?}\n  stderr: {stderr}  stdout: {stdout}\n  file:\n{}",
                    case.what,
                    out.status.code(),
                    case.says,
                    case.yaml
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every problem of a file is reported at once, one line each, in file order.
#[test]
fn every_problem_is_reported_in_file_order() {
    let dir = TestDir::new();
    let path = dir.file("many.yaml");
    std::fs::write(
        &path,
        "cluster:\n  id: \"c\"\nstate:\n  healthPolicy: \"sometimes\"\n  quorumMinPercent: 0\n  heartbeatInterval: \"2s\"\n  heartbeatTTL: \"1s\"\n",
    )
    .unwrap();
    let out = run_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let file = path.display().to_string();
    let expect = [
        ("line 4: state.healthPolicy", "unknown policy"),
        ("line 5: state.quorumMinPercent", "between 1 and 100"),
        ("line 7: state.heartbeatTTL", "greater than"),
    ];
    assert_eq!(lines.len(), expect.len(), "{stderr}");
    for (line, (at, says)) in lines.iter().zip(expect) {
        assert!(line.contains(&format!("{file}: {at}")), "{line}");
        assert!(line.contains(says), "{line}");
    }
}

/// The guide's example (`spec/config.example.yaml`, copied verbatim into `daemon/tests/data/`) passes
/// `check-config` as written, and the checker reports how `config.stream: "PLEIADES.cfg"`
/// (illegal in NATS) is mapped.
#[test]
fn the_guides_example_passes_check_config_unedited() {
    let example = data("config.example.yaml");
    // The copy must stay the guide's text: the core crate's copy is the reference in the repo.
    let core_copy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/data/config.example.yaml");
    assert_eq!(
        std::fs::read_to_string(&example).unwrap(),
        std::fs::read_to_string(&core_copy).unwrap(),
        "daemon/tests/data/config.example.yaml differs from core/tests/data/config.example.yaml"
    );
    let out = run_cli(&["check-config", example.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    for want in [
        "valid:",
        "cluster=prod-global",
        "policy=prefer-local",
        "quorumMinPercent=51",
        "heartbeatInterval=10s",
        "heartbeatTTL=30s",
        "configSync=true",
        // Beyond the guide, off by default.
        "quorumScope=members holdUp=0s holdDown=0s",
        "config.stream \"PLEIADES.cfg\" is not a legal NATS stream name; \"PLEIADES_cfg\" is used",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(stderr.trim().is_empty(), "{stderr}");
}

/// The settings beyond the guide (`state.quorumScope`, `state.holdUp`, `state.holdDown`) are
/// read and reported by `check-config`.
#[test]
fn scope_and_holds_are_reported_by_check_config() {
    let dir = TestDir::new();
    let path = dir.file("beyond.yaml");
    let yaml = VALID.replacen(
        "  heartbeatTTL: \"3s\"\n",
        "  heartbeatTTL: \"3s\"\n  quorumScope: \"regions\"\n  holdUp: \"30s\"\n  holdDown: \"1m 30s\"\n",
        1,
    );
    std::fs::write(&path, yaml).unwrap();
    let out = run_cli(&["check-config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("quorumScope=regions holdUp=30s holdDown=1m30s"),
        "{stdout}"
    );
}

/// A missing file is an error naming it, for both commands.
#[test]
fn a_missing_file_is_named() {
    let dir = TestDir::new();
    let path = dir.file("absent.yaml");
    let file = path.to_str().unwrap();
    for args in [vec!["check-config", file], vec!["run", "--config", file]] {
        let out = run_cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("error: {file}: cannot read")),
            "{args:?}: {stderr}"
        );
    }
    assert!(bin().is_file());
}

/// An admin address already in use stops `run` at once, naming `admin.listen`.
#[test]
fn an_admin_address_in_use_is_an_error_naming_admin_listen() {
    let dir = TestDir::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let path = dir.file("busy.yaml");
    std::fs::write(&path, format!("{VALID}admin:\n  listen: \"{addr}\"\n")).unwrap();
    let file = path.to_str().unwrap();
    let out = run_cli(&["check-config", file]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run_cli(&["run", "--config", file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("error: admin.listen: cannot listen on {addr}")),
        "{stderr}"
    );
}
