//! `gslb-sim`: what-if simulations of a gslb-state cluster.
//!
//! ```text
//! gslb-sim demo [--json] [--svg FILE]
//! gslb-sim run SCENARIO.yaml [--json] [--svg FILE]
//! gslb-sim check [--seeds N] [--first-seed S] [--nodes N] [--endpoints N] [--trace-dir DIR] [--keep-going]
//! gslb-sim bench [--nodes N] [--endpoints N] [--duration 1h]
//! ```
//!
//! Exit codes: 0 when every expectation (or invariant) holds, 1 when one fails, 2 for an
//! invalid scenario or command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gslb_state_sim::invariants::{self, CheckConfig};
use gslb_state_sim::scenario::fmt_time;
use gslb_state_sim::world::{Outcome, RunOptions};
use gslb_state_sim::yaml::{self, ScenarioFile};
use gslb_state_sim::{bench, svg};

/// The built-in demo scenario.
const DEMO: &str = include_str!("../demo.yaml");

/// What-if simulations of a gslb-state cluster: many real cores over a simulated NATS, with
/// faults, from a seed.
#[derive(Parser)]
#[command(
    name = "gslb-sim",
    args_override_self = true,
    after_help = "Exit codes: 0 when every expectation (or invariant) holds, 1 when one fails, \
                  2 for an invalid scenario or command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A built-in three-region scenario, printed as a timeline.
    Demo(OutputArgs),
    /// Run a scenario and check its expectations.
    ///
    /// Exit 0 when every expectation holds, 1 when one fails (printed with the decision seen
    /// and why), 2 when the scenario is invalid (the error names the key and the line).
    Run {
        /// The scenario file (YAML; see driver-sim/README.md for the format).
        #[arg(value_name = "SCENARIO.yaml")]
        scenario: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Random fault schedules over many seeds, checking the invariants.
    ///
    /// A failure prints the scenario, what broke, and the one command that replays it; exit
    /// 0 when every invariant held on every seed, 1 otherwise.
    Check(CheckArgs),
    /// Time a large simulation (100 nodes, 1000 endpoints, 1 h by default).
    Bench(BenchArgs),
}

/// How `demo` and `run` show a run.
#[derive(Args)]
struct OutputArgs {
    /// Print one JSON object per line per decision change and membership change (expectation
    /// failures then go to stderr).
    #[arg(long)]
    json: bool,
    /// Also draw the timeline as SVG into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// How many seeds to check.
    #[arg(long, value_name = "N", default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 1)]
    first_seed: u64,
    /// Nodes per scenario (2 to 64).
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(2..=64))]
    nodes: u64,
    /// Endpoints per scenario (1 to 100).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    endpoints: u64,
    /// On a failure, write the timelines of the failing seed (runs A, B and S) into DIR.
    #[arg(long, value_name = "DIR")]
    trace_dir: Option<PathBuf>,
    /// Check every seed, and count the failures per invariant.
    #[arg(long)]
    keep_going: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Nodes (2 to 1000).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(2..=1000))]
    nodes: u64,
    /// Endpoints (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    endpoints: u64,
    /// Simulated time, like `1h` or `90s`.
    #[arg(long, value_name = "D", default_value = "1h", value_parser = parse_duration)]
    duration: Duration,
}

/// A duration in the scenario files' format.
fn parse_duration(text: &str) -> Result<Duration, String> {
    yaml::parse_duration_ns(text).map(Duration::from_nanos)
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo(output) => cmd_run(Path::new("demo"), DEMO, &output),
        Command::Run { scenario, output } => {
            let text = match std::fs::read_to_string(&scenario) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("gslb-sim: cannot read {}: {e}", scenario.display());
                    return ExitCode::from(2);
                }
            };
            cmd_run(&scenario, &text, &output)
        }
        Command::Check(args) => cmd_check(&args),
        Command::Bench(args) => cmd_bench(&args),
    }
}

fn cmd_run(path: &Path, text: &str, output: &OutputArgs) -> ExitCode {
    let file = match yaml::parse(text) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gslb-sim: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let outcome = gslb_state_sim::run(&file.scenario, RunOptions::default());
    if output.json {
        print!("{}", outcome.trace.to_json_lines());
    } else {
        print_header(&file);
        print!("{}", outcome.trace.to_timeline());
    }
    if let Some(svg_path) = &output.svg {
        let title = file
            .name
            .clone()
            .unwrap_or_else(|| path.display().to_string());
        let picture = svg::render(&file.scenario, &outcome, &title);
        if let Err(e) = std::fs::write(svg_path, picture) {
            eprintln!("gslb-sim: cannot write {}: {e}", svg_path.display());
            return ExitCode::from(2);
        }
    }
    report_expectations(&file, &outcome, output.json)
}

fn print_header(file: &ScenarioFile) {
    print!("{}", gslb_state_sim::report::header(file));
}

/// Prints every expectation's verdict (failures on stderr when `--json` keeps stdout clean).
fn report_expectations(file: &ScenarioFile, outcome: &Outcome, json: bool) -> ExitCode {
    let failed = gslb_state_sim::report::print_expectations_explained(
        file,
        &outcome.expects,
        &outcome.explanations,
        json,
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_check(args: &CheckArgs) -> ExitCode {
    let config = CheckConfig {
        first_seed: args.first_seed,
        seeds: args.seeds,
        nodes: args.nodes as usize,
        endpoints: args.endpoints as usize,
    };
    let started = std::time::Instant::now();
    let report = invariants::check_many(&config, args.keep_going);
    if args.keep_going && !report.violations.is_empty() {
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
                 ({} runs, {} simulated, {} deliveries, {} snapshot chunks written, {} read, \
                 {:.1}s)",
                report.seeds_run,
                config.first_seed,
                config.first_seed + config.seeds.saturating_sub(1),
                config.nodes,
                config.endpoints,
                report.runs,
                fmt_time(report.simulated_ns),
                report.deliveries,
                report.chunk_writes,
                report.chunks_read,
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
            if let Some(dir) = &args.trace_dir {
                let timelines = invariants::timelines_of(v.seed, config.nodes, config.endpoints);
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

fn cmd_bench(args: &BenchArgs) -> ExitCode {
    let (nodes, endpoints, duration) =
        (args.nodes as usize, args.endpoints as usize, args.duration);
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
