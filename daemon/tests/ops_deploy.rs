//! The files of `deploy/` against the real binary: the Grafana dashboard parses and every
//! metric its queries read is one a running daemon exports (read from its `/metrics`), as is
//! every metric of the alert rules; the guide's metrics are all on the dashboard; the systemd
//! unit has the hardening and the commands the README describes (and passes `systemd-analyze
//! verify` where that tool exists); the example production config passes `gslb-state
//! check-config` and `gslb-state permissions`.
//!
//! Run by `cargo test -p gslb-state-daemon --test ops_deploy`.

mod daemon_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_common::{CLUSTER, Daemon, SOON, TestDir, Yaml, bin, run_cli, run_cli_ok};
use gslb_state_tests::{NatsServer, ServerOpts};
use serde_json::Value;

/// The guide's metrics (and the decisions by source), as sample names.
const GUIDE_METRICS: [&str; 11] = [
    "gslbd_state_nats_connected",
    "gslbd_state_active_members",
    "gslbd_state_nats_published_total",
    "gslbd_state_nats_received_total",
    "gslbd_state_kv_put_total",
    "gslbd_state_kv_get_total",
    "gslbd_state_decision_changes_total",
    "gslbd_state_dropped_total",
    "gslbd_state_config_version",
    "gslbd_state_config_events_total",
    "gslbd_state_decisions",
];

/// What the alert rules must watch.
const ALERTED_METRICS: [&str; 7] = [
    "gslbd_state_nats_connected",
    "gslbd_state_active_members",
    "gslbd_state_kv_put_total",
    "gslbd_state_config_events_total",
    "gslbd_state_permission_denied_total",
    "gslbd_state_decisions",
    "gslbd_state_messages_lost_total",
];

/// Series Prometheus makes itself, not the daemon.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

/// A file of `deploy/`.
fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// PromQL
// ---------------------------------------------------------------------------------------------

/// Words of PromQL that are not metric names when not followed by `(`.
const KEYWORDS: [&str; 12] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
];

/// Keywords whose parenthesised list holds label names.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// `expr` without what holds no metric name: string literals, label matchers `{...}` and
/// ranges `[...]`, each replaced by a blank.
fn strip_matchers(expr: &str) -> String {
    let mut out = String::new();
    let (mut braces, mut brackets) = (0u32, 0u32);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            _ if braces == 0 && brackets == 0 => out.push(c),
            _ => {}
        }
        if !out.ends_with(' ') && (braces > 0 || brackets > 0 || quote.is_some()) {
            out.push(' ');
        }
    }
    out
}

/// The metric names a PromQL expression (or a Grafana `label_values(...)` query) reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let text = strip_matchers(expr);
    let chars: Vec<char> = text.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '$' {
            // A number, a duration (`15m`), or a Grafana variable.
            i += 1;
            while i < chars.len() && (ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !ident_start(c) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && ident_char(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next].is_whitespace() {
            next += 1;
        }
        // A call, or an aggregation with its grouping first (`sum by (x) (...)`).
        let word_after: String = chars[next..]
            .iter()
            .take_while(|c| ident_char(**c))
            .collect();
        let call = chars.get(next) == Some(&'(') || word_after == "by" || word_after == "without";
        if call && LABEL_LISTS.contains(&word.as_str()) {
            // Skip the label list.
            i = next;
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
        } else if word == "label_values" && call {
            // Grafana: label_values(METRIC, label): the label is not a metric.
            let args: String = chars[next + 1..].iter().collect();
            let metric = args.split(',').next().unwrap_or("");
            names.extend(metric_names(metric));
            break;
        } else if !call && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            names.insert(word);
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            "sum by (instance, type) (rate(gslbd_state_nats_published_total{instance=~\"$instance\"}[$__rate_interval]))"
        ),
        ["gslbd_state_nats_published_total"]
    );
    assert_eq!(
        names(
            "(increase(a_total{result=\"x}\"}[15m]) > 0) or (a_total unless on(job) group_left(x) b offset 15m) < 6"
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names("label_values(gslbd_state_nats_connected, instance)"),
        ["gslbd_state_nats_connected"]
    );
    assert_eq!(names("up{job=\"gslb-state\"} == 0"), ["up"]);
}

/// Every `expr` of the alert rules file (one line, or a `>-` / `|` block), with its alert.
fn rule_exprs(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_owned();
        }
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest.starts_with('>') || rest.starts_with('|') {
                let indent = line.len() - trimmed.len();
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let l = lines[i + 1];
                    let more = l.len() - l.trim_start().len() > indent || l.trim().is_empty();
                    if !more {
                        break;
                    }
                    block.push(l.trim());
                    i += 1;
                }
                out.push((alert.clone(), block.join(" ")));
            } else {
                out.push((alert.clone(), rest.to_owned()));
            }
        }
        i += 1;
    }
    out
}

/// Every PromQL query of the dashboard: panel targets (rows included) and variable queries.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match (k.as_str(), val) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    ("query", Value::Object(q)) if q["query"].is_string() => {
                        out.push(q["query"].as_str().unwrap_or_default().to_owned())
                    }
                    _ => dashboard_exprs(val, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

/// User and password of the daemons of [`exported_names`].
const USER: (&str, &str) = ("ops", "ops-secret");

/// Publishes `payload` on `subject` through the raw NATS protocol as [`USER`], and waits for
/// the server's PONG (so it has processed the PUB).
fn nats_publish(port: u16, subject: &str, payload: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats-server");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO"), "{line}");
    write!(
        s,
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{}\",\"pass\":\"{}\"}}\r\nPUB {subject} {}\r\n",
        USER.0,
        USER.1,
        payload.len()
    )
    .unwrap();
    s.write_all(payload).unwrap();
    s.write_all(b"\r\nPING\r\n").unwrap();
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .expect("a reply from nats-server");
        assert!(!line.starts_with("-ERR") && !line.is_empty(), "{line}");
        if line.starts_with("PONG") {
            return;
        }
    }
}

/// The sample names two running daemons export, from their `/metrics` text: each family of
/// the `# TYPE` lines, with `_total` for counters (OpenMetrics). A family appears with its
/// first sample, so the daemons are made to do everything the dashboard and the alerts watch:
/// heartbeats and a health report (published, received, KV writes), a write the server refuses
/// (permission denied), a config push (a config event, a config read), a message that is not
/// gslb-state's (dropped).
fn exported_names() -> BTreeSet<String> {
    let dir = TestDir::new();
    let nats = NatsServer::single(ServerOpts::default().extra_config(format!(
        "authorization {{ users = [ {{ user: \"{}\", password: \"{}\", \
         permissions: {{ publish: {{ deny: [\"$KV.gslb_{CLUSTER}_health.ops-a.>\"] }} }} }} ] }}\n",
        USER.0, USER.1
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let env = [("GSLB_USER", USER.0), ("GSLB_PASSWORD", USER.1)];
    let auth = "nats:\n  auth:\n    userEnv: \"GSLB_USER\"\n    passwordEnv: \"GSLB_PASSWORD\"\n";
    let mut ds: Vec<Daemon> = ["ops-a", "ops-b"]
        .iter()
        .map(|node| {
            let yaml = Yaml::node(node, &[nats.url()]);
            let path = dir.file(&format!("{node}.yaml"));
            std::fs::write(&path, yaml.render().replacen("nats:\n", auth, 1)).unwrap();
            Daemon::start_file(&dir, node, &path, &[], &env)
        })
        .collect();
    for d in &mut ds {
        d.wait_ready();
        d.wait_members(2, SOON);
    }
    ds[0].put_health("web", true);
    let desired = dir.file("desired.yaml");
    Yaml::node("ops-a", &[nats.url()]).desired().write(&desired);
    let push = Command::new(bin())
        .args(["config", "push", "--config"])
        .arg(&ds[0].config)
        .arg(&desired)
        .envs(env)
        .output()
        .expect("run gslb-state config push");
    assert!(
        push.status.success(),
        "config push: {}",
        String::from_utf8_lossy(&push.stderr)
    );
    nats_publish(
        nats.client_port(),
        &format!("gslb.{CLUSTER}.hb.nobody"),
        b"not a gslb-state message",
    );
    for (i, series) in [
        (0, "gslbd_state_nats_published_total{type=\"health\"}"),
        (1, "gslbd_state_nats_received_total{type=\"health\"}"),
        (
            0,
            "gslbd_state_kv_put_total{bucket=\"gslb_e2e_members\",result=\"ok\"}",
        ),
        (
            0,
            "gslbd_state_permission_denied_total{operation=\"publish\"}",
        ),
        (0, "gslbd_state_config_events_total{result=\"applied\"}"),
        (
            0,
            "gslbd_state_kv_get_total{bucket=\"PLEIADES_CFG\",result=\"ok\"}",
        ),
        (0, "gslbd_state_dropped_total{reason=\"not-ours\"}"),
    ] {
        ds[i].wait_metric_at_least(series, 1.0);
    }
    let mut names = BTreeSet::new();
    for d in &mut ds {
        let text = d.metrics();
        names.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| {
                    let (name, kind) = l.split_once(' ')?;
                    Some(if kind.trim() == "counter" {
                        format!("{name}_total")
                    } else {
                        name.to_owned()
                    })
                }),
        );
    }
    names
}

#[test]
fn every_metric_of_the_dashboard_and_the_alert_rules_is_exported_by_the_daemon() {
    let exported = exported_names();

    // The dashboard.
    let path = deploy("grafana/gslb-state.json");
    let dashboard: Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus", "{ds}");
    let ds_uid = format!("${{{}}}", ds["name"].as_str().expect("its name"));
    let mut panels = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut ids = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {p}"
        );
        assert_eq!(p["datasource"]["type"], "prometheus", "{}", p["title"]);
        assert_eq!(p["datasource"]["uid"], ds_uid.as_str(), "{}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}: no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], ds_uid.as_str(), "{}", p["title"]);
        }
    }
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let on_dashboard = check_names(&exprs, &exported, "the dashboard");
    for m in GUIDE_METRICS {
        assert!(
            on_dashboard.contains(m),
            "{m} is on no panel of the dashboard"
        );
    }

    // The alert rules.
    let rules_text = read(&deploy("prometheus/gslb-state.rules.yml"));
    let rules = rule_exprs(&rules_text);
    let alerts = rules_text
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(alerts >= ALERTED_METRICS.len(), "{alerts} alerts");
    assert_eq!(rules.len(), alerts, "an expr per alert: {rules:?}");
    for (alert, expr) in &rules {
        assert!(
            !metric_names(expr).is_empty(),
            "{alert}: no metric in {expr:?}"
        );
    }
    let exprs: Vec<String> = rules.into_iter().map(|(_, e)| e).collect();
    let alerted = check_names(&exprs, &exported, "the alert rules");
    for m in ALERTED_METRICS {
        assert!(alerted.contains(m), "no alert rule watches {m}");
    }
}

/// Asserts every metric name of `exprs` is exported (or made by Prometheus); returns them all.
fn check_names(exprs: &[String], exported: &BTreeSet<String>, what: &str) -> BTreeSet<String> {
    assert!(!exprs.is_empty(), "no queries in {what}");
    let mut all = BTreeSet::new();
    for e in exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{what}: no metric in {e:?}");
        for n in names {
            assert!(
                exported.contains(&n) || PROMETHEUS_SERIES.contains(&n.as_str()),
                "{what}: {n} (in {e:?}) is not exported by the daemon; it exports {exported:?}"
            );
            all.insert(n);
        }
    }
    all
}

// ---------------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------------

/// `[Section]` → key → every value given (in order), of a unit file.
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut units: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line:?}"));
        units
            .entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    units
}

#[test]
fn the_systemd_unit_is_hardened_and_runs_the_documented_commands() {
    let path = deploy("systemd/gslb-state.service");
    let text = read(&path);
    let unit = parse_unit(&text);
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        match service.get(key).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("[Service] {key}: expected once, got {other:?}"),
        }
    };
    for (key, want) in [
        ("User", "gslb"),
        ("Group", "gslb"),
        (
            "ExecStart",
            "/usr/local/bin/gslb-state run --config /etc/gslb/config.yaml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("ReadOnlyPaths", "/etc/gslb"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
    ] {
        assert_eq!(one(key), want, "[Service] {key}");
    }
    assert!(
        !service.contains_key("DynamicUser") || one("DynamicUser") == "no",
        "the unit runs as the documented user gslb"
    );
    let nofile: u64 = one("LimitNOFILE").parse().expect("LimitNOFILE is a number");
    assert!(nofile >= 4096, "LimitNOFILE={nofile}");
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
    // The documented user is created by the instructions in the unit's header.
    assert!(
        text.contains("useradd --system") && text.contains(" gslb\n"),
        "the unit documents how to create the gslb user"
    );

    // systemd's own check, where systemd is installed (the commands pointed at this build).
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not found: `systemd-analyze verify` not run");
        return;
    };
    assert!(out.status.success(), "systemd-analyze --version failed");
    let dir = TestDir::new();
    let copy = dir.file("gslb-state.service");
    let bin = bin().to_str().expect("a UTF-8 binary path");
    std::fs::write(&copy, text.replace("/usr/local/bin/gslb-state", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("gslb-state.service"),
        "systemd-analyze verify {} ({}):\n{}{stderr}",
        copy.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// The example production config
// ---------------------------------------------------------------------------------------------

#[test]
fn the_example_production_config_passes_check_config_and_yields_least_privilege() {
    let path = deploy("config.yaml");
    let file = path.to_str().expect("UTF-8 path");
    let out = run_cli_ok(&["check-config", file]);
    assert!(
        out.contains("valid: cluster=prod-global node=eu-1 ") && out.contains("configSync=true"),
        "{out}"
    );

    // mTLS and region-local storage, every file where the unit lets the daemon read it.
    let text = read(&path);
    for key in [
        "caFile:",
        "certFile:",
        "keyFile:",
        "regions:",
        "inboxPrefix:",
    ] {
        assert!(text.contains(key), "deploy/config.yaml has no {key}");
    }
    let files: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_lowercase()))
        .filter(|l| l.contains("File:"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert_eq!(files.len(), 3, "the three TLS files: {files:?}");
    for file in files {
        assert!(
            file.starts_with("/etc/gslb/"),
            "{file}: outside the unit's ReadOnlyPaths=/etc/gslb"
        );
    }

    // Its permissions: its own inbox (no warning), its region's buckets for writing, every
    // region's for reading.
    let out = run_cli(&["permissions", "--config", file]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    for entry in [
        "\"$KV.gslb_prod-global_members_eu.eu-1\"",
        "\"$KV.gslb_prod-global_health_eu.eu-1.>\"",
        "\"$JS.API.DIRECT.GET.KV_gslb_prod-global_health_us\"",
        "\"$JS.API.DIRECT.GET.KV_gslb_prod-global_health_ap\"",
        "\"_INBOX_eu-1.>\"",
    ] {
        assert!(stdout.contains(entry), "no {entry} in:\n{stdout}");
    }
}
