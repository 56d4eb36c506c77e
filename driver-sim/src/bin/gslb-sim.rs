//! `gslb-sim`: what-if simulations of a gslb-state cluster.
//!
//! ```text
//! gslb-sim demo [--json] [--svg FILE]
//! gslb-sim run SCENARIO.yaml [--json] [--svg FILE]
//! gslb-sim check [--seeds N] [--first-seed S] [--nodes N] [--endpoints N]
//! gslb-sim bench [--nodes N] [--endpoints N] [--duration 1h]
//! ```
//!
//! Exit codes: 0 when every expectation (or invariant) holds, 1 when one fails, 2 for an
//! invalid scenario or command line.

use std::process::ExitCode;
use std::time::Duration;

use gslb_state_sim::invariants::{self, CheckConfig};
use gslb_state_sim::scenario::fmt_time;
use gslb_state_sim::world::{Outcome, RunOptions};
use gslb_state_sim::yaml::{self, ScenarioFile};
use gslb_state_sim::{bench, svg};

const USAGE: &str = "\
gslb-sim: what-if simulations of a gslb-state cluster

usage:
  gslb-sim demo [--json] [--svg FILE]
      a built-in three-region scenario, printed as a timeline
  gslb-sim run SCENARIO.yaml [--json] [--svg FILE]
      run a scenario; exit 0 when every expectation holds, 1 when one fails,
      2 when the scenario is invalid
  gslb-sim check [--seeds N] [--first-seed S] [--nodes N] [--endpoints N]
                 [--trace-dir DIR] [--keep-going]
      random fault schedules over many seeds, checking the invariants; on a
      failure, --trace-dir writes the timelines of the failing seed (runs A,
      B and S);
      --keep-going checks every seed and counts the failures per invariant
  gslb-sim bench [--nodes N] [--endpoints N] [--duration D]
      time a large simulation (default 100 nodes, 1000 endpoints, 1h)

options:
  --json        one JSON object per line per decision change and membership change
  --svg FILE    draw the timeline as SVG
";

/// The built-in demo scenario.
const DEMO: &str = include_str!("../demo.yaml");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => cmd_run("demo", DEMO, &args[1..]),
        Some("run") => {
            let Some(path) = args.get(1).filter(|a| !a.starts_with("--")) else {
                return usage_error("run needs a scenario file");
            };
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("gslb-sim: cannot read {path}: {e}");
                    return ExitCode::from(2);
                }
            };
            cmd_run(path, &text, &args[2..])
        }
        Some("check") => cmd_check(&args[1..]),
        Some("bench") => cmd_bench(&args[1..]),
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("a command is required"),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("gslb-sim: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// Parsed `--flag value` options.
struct Flags {
    json: bool,
    svg: Option<String>,
    values: Vec<(String, String)>,
}

fn parse_flags(args: &[String], with_values: &[&str]) -> Result<Flags, String> {
    let mut flags = Flags {
        json: false,
        svg: None,
        values: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => flags.json = true,
            "--keep-going" => flags.values.push(("--keep-going".into(), "true".into())),
            "--svg" => {
                flags.svg = Some(it.next().ok_or("--svg needs a file name")?.clone());
            }
            f if with_values.contains(&f) => {
                let v = it.next().ok_or_else(|| format!("{f} needs a value"))?;
                flags.values.push((f.to_owned(), v.clone()));
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(flags)
}

impl Flags {
    fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.values.iter().rev().find(|(k, _)| k == name) {
            None => Ok(default),
            Some((_, v)) => v
                .parse()
                .map_err(|_| format!("{name}: expected a whole number, got {v:?}")),
        }
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn cmd_run(path: &str, text: &str, args: &[String]) -> ExitCode {
    let flags = match parse_flags(args, &[]) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let file = match yaml::parse(text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gslb-sim: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = gslb_state_sim::run(&file.scenario, RunOptions::default());
    if flags.json {
        print!("{}", outcome.trace.to_json_lines());
    } else {
        print_header(&file);
        print!("{}", outcome.trace.to_timeline());
    }
    if let Some(svg_path) = &flags.svg {
        let title = file.name.clone().unwrap_or_else(|| path.to_owned());
        let picture = svg::render(&file.scenario, &outcome, &title);
        if let Err(e) = std::fs::write(svg_path, picture) {
            eprintln!("gslb-sim: cannot write {svg_path}: {e}");
            return ExitCode::from(2);
        }
    }
    report_expectations(&file, &outcome, flags.json)
}

fn print_header(file: &ScenarioFile) {
    let s = &file.scenario;
    if let Some(name) = &file.name {
        println!("{name}");
    }
    if let Some(d) = &file.description {
        for line in d.lines() {
            println!("  {line}");
        }
    }
    println!(
        "seed {}, {} simulated, {} nodes, policy {} (quorumMinPercent {}), heartbeat every {}, TTL {}",
        s.seed,
        fmt_time(s.duration_ns),
        s.nodes.len(),
        s.state.policy,
        s.state.quorum_min_percent,
        humantime::format_duration(s.state.heartbeat_interval),
        humantime::format_duration(s.state.heartbeat_ttl),
    );
    println!();
}

/// Prints every expectation's verdict (failures on stderr when `--json` keeps stdout clean).
fn report_expectations(file: &ScenarioFile, outcome: &Outcome, json: bool) -> ExitCode {
    let s = &file.scenario;
    let mut failed = 0;
    let mut lines = Vec::new();
    for x in &outcome.expects {
        let e = &s.expects[x.index];
        let at = format!(
            "{}at {} {}",
            e.line.map(|l| format!("line {l}: ")).unwrap_or_default(),
            fmt_time(e.at_ns),
            s.nodes[e.node].id
        );
        if x.ok {
            lines.push(format!("  ok    {at}: {}", x.seen));
        } else {
            failed += 1;
            lines.push(format!("  FAIL  {at}: {}\n        saw {}", x.why, x.seen));
        }
    }
    if !outcome.expects.is_empty() {
        let summary = format!(
            "expectations: {} held, {failed} failed",
            outcome.expects.len() - failed
        );
        if json {
            for l in lines.iter().filter(|l| l.contains("FAIL")) {
                eprintln!("{l}");
            }
            eprintln!("{summary}");
        } else {
            println!("\nexpectations:");
            for l in &lines {
                println!("{l}");
            }
            println!("{summary}");
        }
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_check(args: &[String]) -> ExitCode {
    let flags = match parse_flags(
        args,
        &[
            "--seeds",
            "--first-seed",
            "--nodes",
            "--endpoints",
            "--trace-dir",
        ],
    ) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let config = match (|| -> Result<CheckConfig, String> {
        Ok(CheckConfig {
            first_seed: flags.number("--first-seed", 1)?,
            seeds: flags.number("--seeds", 100)?,
            nodes: flags.number("--nodes", 5)? as usize,
            endpoints: flags.number("--endpoints", 3)? as usize,
        })
    })() {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if !(2..=64).contains(&config.nodes) || !(1..=100).contains(&config.endpoints) {
        return usage_error("--nodes must be 2..=64 and --endpoints 1..=100");
    }
    let started = std::time::Instant::now();
    let keep_going = flags
        .values
        .iter()
        .any(|(k, v)| k == "--keep-going" && v == "true");
    let report = invariants::check_many(&config, keep_going);
    if keep_going && !report.violations.is_empty() {
        let mut by_invariant: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
        for v in &report.violations {
            by_invariant.entry(v.invariant).or_default().push(v.seed);
        }
        for (invariant, seeds) in &by_invariant {
            let list: Vec<String> = seeds.iter().take(20).map(u64::to_string).collect();
            eprintln!(
                "{invariant}: {} of {} seeds fail (first: {})",
                seeds.len(),
                report.seeds_run,
                list.join(", ")
            );
        }
    }
    match &report.violation {
        None => {
            println!(
                "gslb-sim check: {} seeds ({}..={}), {} nodes, {} endpoints: every invariant held \
                 ({} runs, {} simulated, {} deliveries, {:.1}s)",
                report.seeds_run,
                config.first_seed,
                config.first_seed + config.seeds.saturating_sub(1),
                config.nodes,
                config.endpoints,
                report.runs,
                fmt_time(report.simulated_ns),
                report.deliveries,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Some(v) => {
            eprintln!(
                "gslb-sim check: invariant {:?} failed on seed {}",
                v.invariant, v.seed
            );
            eprintln!("{}", v.detail);
            eprintln!(
                "replay: {}",
                invariants::replay_command(v.seed, config.nodes, config.endpoints)
            );
            if let Some(dir) = flags.text("--trace-dir") {
                let timelines = invariants::timelines_of(v.seed, config.nodes, config.endpoints);
                let dir = std::path::Path::new(dir);
                let written = std::fs::create_dir_all(dir).and_then(|()| {
                    timelines
                        .into_iter()
                        .try_for_each(|(name, text)| std::fs::write(dir.join(name), text))
                });
                match written {
                    Ok(()) => eprintln!("timelines written to {}", dir.display()),
                    Err(e) => eprintln!("cannot write timelines to {}: {e}", dir.display()),
                }
            }
            ExitCode::from(1)
        }
    }
}

fn cmd_bench(args: &[String]) -> ExitCode {
    let flags = match parse_flags(args, &["--nodes", "--endpoints", "--duration"]) {
        Ok(f) => f,
        Err(e) => return usage_error(&e),
    };
    let parsed = (|| -> Result<(usize, usize, Duration), String> {
        let nodes = flags.number("--nodes", 100)? as usize;
        let endpoints = flags.number("--endpoints", 1000)? as usize;
        let duration = match flags.text("--duration") {
            None => Duration::from_secs(3600),
            Some(d) => Duration::from_nanos(yaml::parse_duration_ns(d)?),
        };
        Ok((nodes, endpoints, duration))
    })();
    let (nodes, endpoints, duration) = match parsed {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    if !(2..=1000).contains(&nodes) || !(1..=100_000).contains(&endpoints) {
        return usage_error("--nodes must be 2..=1000 and --endpoints 1..=100000");
    }
    let r = bench::run(nodes, endpoints, duration);
    let cpu = r
        .cpu
        .map(|c| format!(" ({:.2}s CPU)", c.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "gslb-sim bench: {nodes} nodes x {endpoints} endpoints x {} simulated, heartbeat 1s: \
         {:.2}s wall{cpu}, {} deliveries ({:.0} ns each), {} events, {} decision changes",
        humantime::format_duration(duration),
        r.wall.as_secs_f64(),
        r.deliveries,
        r.wall.as_nanos() as f64 / r.deliveries.max(1) as f64,
        r.events,
        r.decisions
    );
    ExitCode::SUCCESS
}
